// GROUP_CREATE, GROUP_JOIN, GROUP_LEAVE, GROUP_MEMBERS (the patent's second embodiment). The
// group database answers "who is in group G"; the registration table answers where each member
// is. Members see each other whatever their visibility: sharing a group is what visibility 1
// allows.
import type { HandlerResult, RequestContext } from '../../net/server.js';
import type { MemberEntry } from '../../wire/catalog.js';
import { ErrorCode } from '../../wire/errors.js';
import type { LocatorContext } from '../context.js';
import { chargeLookups } from '../context.js';
import { encodedSize, entryFields, envelopeSize, fillPage } from '../paging.js';
import type { MaybePromise } from '../store/maybe.js';
import { all, then } from '../store/maybe.js';

const MEMBER_FIELDS = entryFields('GROUP_MEMBERS_RESULT');
/** The schema bounds a page to 64 members. */
const MAX_PAGE_MEMBERS = 64;

export function groupCreate(c: LocatorContext, ctx: RequestContext<'GROUP_CREATE'>): MaybePromise<HandlerResult> {
  const { name, joinCode } = ctx.msg.body;
  return then(c.store.groups.create(ctx.session!.locatorId, name, joinCode), (groupId) => {
    c.metrics.inc('group_changes_total', { op: 'create' });
    return ctx.reply('GROUP_CREATE_ACK', { groupId });
  });
}

export function groupJoin(c: LocatorContext, ctx: RequestContext<'GROUP_JOIN'>): MaybePromise<HandlerResult> {
  const { groupId, joinCode } = ctx.msg.body;
  return then(c.store.groups.join(Buffer.from(groupId), ctx.session!.locatorId, joinCode), (joined) => {
    if (joined) c.metrics.inc('group_changes_total', { op: 'join' });
    return ctx.reply('GROUP_JOIN_ACK', { groupId });
  });
}

export function groupLeave(c: LocatorContext, ctx: RequestContext<'GROUP_LEAVE'>): MaybePromise<HandlerResult> {
  return then(c.store.groups.leave(Buffer.from(ctx.msg.body.groupId), ctx.session!.locatorId), (left) => {
    if (left) c.metrics.inc('group_changes_total', { op: 'leave' });
    return ctx.reply('GROUP_LEAVE_ACK', {});
  });
}

export function groupMembers(c: LocatorContext, ctx: RequestContext<'GROUP_MEMBERS'>): MaybePromise<HandlerResult> {
  const asker = ctx.session!;
  const groupId = Buffer.from(ctx.msg.body.groupId);
  const cursor = ctx.msg.body.cursor ?? 0;
  const g = c.store.groups;
  const read = all<unknown>([g.isMember(groupId, asker.locatorId), g.get(groupId), g.members(groupId, cursor, MAX_PAGE_MEMBERS)]);
  return then(read, (r) => {
    const [member, info, ids] = r as [boolean, Awaited<ReturnType<typeof g.get>>, Buffer[]];
    // Non-members learn nothing, not even whether the group exists.
    if (!member || !info) return { error: ErrorCode.FORBIDDEN, message: 'not a member of this group' };
    return then(c.store.getPresences(ids.map((id) => id.toString('hex'))), (recs) => {
      const base = envelopeSize('GROUP_MEMBERS_RESULT', { members: [], nextCursor: Number.MAX_SAFE_INTEGER, total: Number.MAX_SAFE_INTEGER, name: info.name });
      const page = fillPage(0, ids.length, base, (i): MemberEntry => {
        const id = ids[i]!;
        const p = recs[i];
        if (!p) return { id, online: false };
        const e: MemberEntry = { id, online: true, addr: p.addr };
        if (p.nickname !== undefined) e.nickname = p.nickname;
        e.netMode = p.netMode;
        return e;
      }, (e) => encodedSize(MEMBER_FIELDS, e));
      const refused = chargeLookups(c, ctx.from.ip, asker.locatorHex, page.entries.length);
      if (refused) return refused;
      const next = cursor + page.entries.length;
      const body = { members: page.entries, total: info.members, name: info.name };
      return ctx.reply('GROUP_MEMBERS_RESULT', next < info.members ? { ...body, nextCursor: next } : body);
    });
  });
}
