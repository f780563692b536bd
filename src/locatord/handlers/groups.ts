// GROUP_CREATE, GROUP_JOIN, GROUP_LEAVE, GROUP_MEMBERS (the patent's second embodiment). The
// group database answers "who is in group G"; the registration table answers where each member
// is. Members see each other whatever their visibility: sharing a group is what visibility 1
// allows.
//
// Closed groups (issue 15): the join code never travels. GROUP_CREATE brings the group's code key
// sealed under the session; GROUP_JOIN and REGISTER's joinGroups a proof bound to the session,
// the group and a nonce (src/wire/groupcode.ts), checked against the stored key. A proof that
// does not verify counts against the terminal and the group (JOIN_FAILURE_LIMITS); over either
// limit, joins are refused with RATE_LIMITED before any proof is checked. Group IDs are drawn by
// the store; nothing creates a group under an ID a terminal names.
import type { HandlerResult, Refusal, RequestContext } from '../../net/server.js';
import type { ServerSession } from '../../net/sessions.js';
import type { MemberEntry } from '../../wire/catalog.js';
import { DevlocError, ErrorCode } from '../../wire/errors.js';
import { openCodeKey, verifyJoinProof } from '../../wire/groupcode.js';
import type { LocatorContext } from '../context.js';
import { chargeLookups } from '../context.js';
import type { JoinRequest } from '../groups.js';
import { JOIN_FAILURE_LIMITS } from '../groups.js';
import { encodedSize, entryFields, envelopeSize, fillPage } from '../paging.js';
import type { MaybePromise } from '../store/maybe.js';
import { all, isPromise, then } from '../store/maybe.js';

/** A join as GROUP_JOIN and REGISTER's joinGroups carry it. */
export interface WireJoin {
  groupId: Uint8Array;
  nonce?: Uint8Array | undefined;
  proof?: Uint8Array | undefined;
}

/** `run()`, with `handle` for what it throws now or rejects with later. */
function onError<T>(run: () => MaybePromise<T>, handle: (err: unknown) => MaybePromise<T>): MaybePromise<T> {
  let out: MaybePromise<T>;
  try {
    out = run();
  } catch (err) {
    return handle(err);
  }
  return isPromise(out) ? out.catch(handle) : out;
}

/**
 * Run the joins `joins` of terminal `s` through `run` (the store's join or joinAll), within the
 * failed-proof limits: refused with RATE_LIMITED when the terminal or one of the groups is over
 * its limit; a proof that does not verify is counted (terminal and group) and logged.
 */
export function limitedJoins<T>(
  c: LocatorContext, s: ServerSession, from: RequestContext['from'], joins: readonly WireJoin[],
  run: (reqs: JoinRequest[]) => MaybePromise<T>,
): MaybePromise<T | Refusal> {
  const L = JOIN_FAILURE_LIMITS;
  const gids = joins.map((j) => Buffer.from(j.groupId));
  return then(all(gids.map((g) => c.store.groups.joinFailures(g, s.locatorId))), (counts): MaybePromise<T | Refusal> => {
    const over = counts.findIndex((f) => f.terminal >= L.perTerminal || f.group >= L.perGroup);
    if (over >= 0) {
      const f = counts[over]!;
      c.metrics.inc('group_join_refusals_total', { reason: 'limit' });
      c.logger.refusal('join-limit', { locator: s.locatorHex, group: gids[over]!.toString('hex'), terminalFailures: f.terminal, groupFailures: f.group, from: `${from.ip}:${from.port}` });
      // Until the window of the count over its limit ends (of both, when both are).
      const retryAfterMs = Math.max(1, f.terminal >= L.perTerminal ? f.terminalLeftMs : 0, f.group >= L.perGroup ? f.groupLeftMs : 0);
      return { error: ErrorCode.RATE_LIMITED, message: 'too many failed join attempts', retryAfterMs };
    }
    const failed: Buffer[] = [];
    const reqs = joins.map((j, i): JoinRequest => {
      const gid = gids[i]!;
      const { nonce, proof } = j;
      if (!nonce || !proof) return { groupId: gid };
      return {
        groupId: gid,
        proof: (key) => {
          const ok = verifyJoinProof(key, s.keys, s.sid, gid, nonce, proof);
          if (!ok) failed.push(gid);
          return ok;
        },
      };
    });
    return onError<T | Refusal>(() => run(reqs), (err) => {
      if (!(err instanceof DevlocError) || err.code !== ErrorCode.FORBIDDEN || failed.length === 0) throw err;
      c.metrics.inc('group_join_refusals_total', { reason: 'proof' });
      c.logger.refusal('join-proof', { locator: s.locatorHex, groups: failed.map((g) => g.toString('hex')), from: `${from.ip}:${from.port}` });
      return then(all(failed.map((g) => c.store.groups.noteJoinFailure(g, s.locatorId))), () => {
        throw err;
      });
    });
  });
}

const MEMBER_FIELDS = entryFields('GROUP_MEMBERS_RESULT');
/** The schema bounds a page to 64 members. */
const MAX_PAGE_MEMBERS = 64;

export function groupCreate(c: LocatorContext, ctx: RequestContext<'GROUP_CREATE'>): MaybePromise<HandlerResult> {
  const { name, nonce, sealedCodeKey } = ctx.msg.body;
  let codeKey: Buffer | undefined;
  if (nonce !== undefined || sealedCodeKey !== undefined) {
    codeKey = nonce && sealedCodeKey ? openCodeKey(ctx.session!.keys, nonce, sealedCodeKey) ?? undefined : undefined;
    if (!codeKey) {
      c.logger.refusal('group-create-seal', { locator: ctx.session!.locatorHex });
      return { error: ErrorCode.BAD_MESSAGE, message: 'sealedCodeKey does not open under this session (or nonce missing)' };
    }
  }
  return then(c.store.groups.create(ctx.session!.locatorId, name, codeKey), (groupId) => {
    c.metrics.inc('group_changes_total', { op: 'create' });
    return ctx.reply('GROUP_CREATE_ACK', { groupId });
  });
}

export function groupJoin(c: LocatorContext, ctx: RequestContext<'GROUP_JOIN'>): MaybePromise<HandlerResult> {
  const s = ctx.session!;
  const b = ctx.msg.body;
  const joined = limitedJoins(c, s, ctx.from, [b], ([r]) => c.store.groups.join(Buffer.from(b.groupId), s.locatorId, r!.proof));
  return then(joined, (j) => {
    if (typeof j !== 'boolean') return j;
    if (j) c.metrics.inc('group_changes_total', { op: 'join' });
    return ctx.reply('GROUP_JOIN_ACK', { groupId: b.groupId });
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
