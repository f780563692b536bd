// locatord's handlers over the asynchronous store (store/types.ts): the same rules as
// handlers/registration.ts, query.ts and groups.ts (read those for the why), with every state
// access awaited, so they run on the Redis backend (several instances sharing the state) and on
// the embedded one alike. Store failures (Redis down, slow, or our queue to it full) answer
// TRY_LATER with retryAfterMs, are logged (flood-safe) and counted in redis_errors_total.
import { randomBytes } from 'node:crypto';
import type { Logger } from '../../common/log.js';
import type { Metrics } from '../../common/metrics.js';
import type { Handlers, HandlerResult, Refusal, RequestContext } from '../../net/server.js';
import type { RateLimiter } from '../../net/ratelimit.js';
import type { ServerSession, ServerSessions } from '../../net/sessions.js';
import type { Address } from '../../wire/addr.js';
import type { AddrEntry, Bodies, MemberEntry } from '../../wire/catalog.js';
import { REQUEST_ID_BYTES, Visibility } from '../../wire/constants.js';
import { decodeDatagram, encodeDatagram } from '../../wire/envelope.js';
import { ErrorCode } from '../../wire/errors.js';
import { peekTicket } from '../../wire/ticket.js';
import type { Introductions } from '../handlers/introduce.js';
import { introAck, introduction, NOT_INTRODUCED } from '../handlers/introduce.js';
import { chargeLookups, grantTtl } from '../context.js';
import { chargeQueryPage } from '../handlers/query.js';
import type { LocatordLimits } from '../options.js';
import { encodedSize, entryFields, envelopeSize, fillPage } from '../paging.js';
import type { KeyedSession } from '../snapshot.js';
import type { RegistrationExtra } from '../table.js';
import { fromStoredSession, toStoredSession } from './embedded.js';
import type { IntroRelay, RelayResult } from './relay.js';
import { RedisReplyError as RespServerError, RedisUnavailable } from './redis-client.js';
import type { LocatorStore, Presence } from './types.js';

export interface StoreContext {
  store: LocatorStore;
  /** This instance's sessions and INTRO pushes: INTRODUCE is answered only with both (introduceHere). */
  sessions?: ServerSessions;
  introductions?: Introductions;
  /** Redis mode: this instance's ID (Presence.inst) and the relay to the others (introductions). */
  instanceId?: string;
  relay?: IntroRelay;
  /** Told of every presence record this instance stored or removed (its probe schedule). */
  onPresence?: (idHex: string, p: Presence | undefined, session: ServerSession) => void;
  limits: LocatordLimits;
  metrics: Metrics;
  logger: Logger;
  queryLimiter: RateLimiter;
  querySourceLimiter: RateLimiter;
  /** Milliseconds clock (default Date.now). */
  now?: () => number;
}

type Ack = Bodies['REGISTER_ACK'];

const ADDR_ENTRY_FIELDS = entryFields('QUERY_ADDR_RESULT');
const ADDR_BASE = envelopeSize('QUERY_ADDR_RESULT', { entries: [], nextCursor: Number.MAX_SAFE_INTEGER });
const STATUS_BASE = envelopeSize('QUERY_STATUS_RESULT', { online: [], nextCursor: Number.MAX_SAFE_INTEGER });
const MEMBER_FIELDS = entryFields('GROUP_MEMBERS_RESULT');
const MAX_PAGE_MEMBERS = 64;

function extraOf(b: Bodies['REGISTER']): RegistrationExtra | undefined {
  const x: RegistrationExtra = {};
  if (b.localAddrs && b.localAddrs.length > 0) x.localAddrs = b.localAddrs;
  if (b.mediaId !== undefined) x.mediaId = b.mediaId;
  if (b.community && Object.keys(b.community).length > 0) x.community = b.community;
  if (b.allow && b.allow.length > 0) x.allow = b.allow.map((id) => Buffer.from(id).toString('hex'));
  return Object.keys(x).length > 0 ? x : undefined;
}

const ttlSOf = (p: Presence): number => Math.round((p.expMs - p.regMs) / 1000);

function ackOf(c: StoreContext, p: Presence, locatorId: Buffer): Ack {
  const { ttlS, refreshS } = grantTtl(c.limits, ttlSOf(p), p.netMode);
  return { observed: p.addr, ttlS, refreshS, locatorId };
}

const isStale = (p: Presence, s: ServerSession, seq: number): boolean => p.sidHex !== s.sidHex || seq <= p.seq;

const clock = (c: StoreContext): number => (c.now ?? Date.now)();

/** `p` renewed from `from` at `seq` (registration time := now), and its ack. */
function renewed(c: StoreContext, p: Presence, from: RequestContext['from'], seq: number, requestedTtlS: number | undefined, locatorId: Buffer): { next: Presence; ack: Ack } {
  const g = grantTtl(c.limits, requestedTtlS ?? ttlSOf(p), p.netMode);
  const now = clock(c);
  const next: Presence = { ...p, addr: from, seq, regMs: now, expMs: now + g.ttlS * 1000 };
  return { next, ack: { observed: from, ttlS: g.ttlS, refreshS: g.refreshS, locatorId } };
}

// Every change of a presence record is one updatePresence: the staleness check and the write
// are atomic across instances (store/redis.ts, compare-and-set), so a REFRESH handled by one
// instance cannot overwrite a newer REGISTER handled by another at the same moment.

export async function register(c: StoreContext, ctx: RequestContext<'REGISTER'>): Promise<HandlerResult> {
  const s = ctx.session! as KeyedSession;
  const seq = ctx.msg.auth!.seq;
  const b = ctx.msg.body;
  if (ctx.freshSession) {
    c.metrics.inc('sessions_opened_total');
    const peek = b.ticket ? peekTicket(b.ticket) : undefined;
    if (peek && typeof peek !== 'string') s.kid = peek.kid;
  }
  const stale = (rec: Presence | undefined): rec is Presence => rec !== undefined && rec.sidHex === s.sidHex && seq <= rec.seq;
  const staleAck = (rec: Presence): HandlerResult => {
    c.metrics.inc('stale_updates_total', { type: 'REGISTER' });
    return ctx.reply('REGISTER_ACK', ackOf(c, rec, s.locatorId));
  };
  // Shared with the other instances, in the same pipeline as the presence read. On every
  // REGISTER, not only the session-opening one: Redis may have lost it (restart) while this
  // instance kept it, and REGISTER is what a terminal sends after NOT_FOUND.
  const saved = c.store.saveSession(toStoredSession(s));
  if (b.joinGroups && b.joinGroups.length > 0) {
    // Joins come first (a refused join registers nothing), so an outdated REGISTER is caught before them.
    const [rec] = await Promise.all([c.store.getPresence(s.locatorHex), saved]);
    if (stale(rec)) return staleAck(rec);
    await c.store.groups.joinAll(s.locatorId, b.joinGroups);
  }
  const netMode = b.netMode ?? 0;
  const g = grantTtl(c.limits, b.ttlS, netMode);
  const now = clock(c);
  const p: Presence = {
    addr: ctx.from, netMode, visibility: b.visibility ?? 0, sidHex: s.sidHex, seq, regMs: now, expMs: now + g.ttlS * 1000,
    nickname: b.nickname, extra: extraOf(b), ...(b.reachable === true ? { reachable: true } : {}),
  };
  const [older] = await Promise.all([
    c.store.updatePresence(s.locatorHex, (rec) => (stale(rec) ? { result: rec } : { result: undefined, put: p })),
    saved,
  ]);
  if (older) return staleAck(older);
  c.onPresence?.(s.locatorHex, p, s);
  c.metrics.inc('registrations_total');
  return ctx.reply('REGISTER_ACK', { observed: ctx.from, ttlS: g.ttlS, refreshS: g.refreshS, locatorId: s.locatorId });
}

export async function refresh(c: StoreContext, ctx: RequestContext<'REFRESH'>): Promise<HandlerResult> {
  const s = ctx.session!;
  const seq = ctx.msg.auth!.seq;
  const b = ctx.msg.body;
  type Outcome = { kind: 'none' } | { kind: 'stale'; ack: Ack } | { kind: 'renewed'; ack: Ack; next: Presence };
  const out = await c.store.updatePresence<Outcome>(s.locatorHex, (cur) => {
    if (!cur) return { result: { kind: 'none' } };
    if (isStale(cur, s, seq)) return { result: { kind: 'stale', ack: ackOf(c, cur, s.locatorId) } };
    const rec = { ...cur };
    if (b.netMode !== undefined) rec.netMode = b.netMode;
    if (b.localAddrs) {
      const x = { ...rec.extra };
      if (b.localAddrs.length > 0) x.localAddrs = b.localAddrs;
      else delete x.localAddrs;
      rec.extra = Object.keys(x).length > 0 ? x : undefined;
    }
    const r = renewed(c, rec, ctx.from, seq, b.ttlS, s.locatorId);
    return { result: { kind: 'renewed', ack: r.ack, next: r.next }, put: r.next };
  });
  if (out.kind === 'none') return { error: ErrorCode.NOT_FOUND, message: 'not registered: send REGISTER' };
  if (out.kind === 'stale') {
    c.metrics.inc('stale_updates_total', { type: 'REFRESH' });
    return ctx.reply('REFRESH_ACK', out.ack);
  }
  c.onPresence?.(s.locatorHex, out.next, s);
  c.metrics.inc('refreshes_total');
  return ctx.reply('REFRESH_ACK', out.ack);
}

export async function unregister(c: StoreContext, ctx: RequestContext<'UNREGISTER'>): Promise<HandlerResult> {
  const s = ctx.session!;
  const seq = ctx.msg.auth!.seq;
  const removed = await c.store.updatePresence(s.locatorHex, (rec) => (rec && !isStale(rec, s, seq) ? { result: true, remove: true } : { result: false }));
  if (removed) {
    c.onPresence?.(s.locatorHex, undefined, s);
    c.metrics.inc('unregistrations_total');
  }
  return ctx.reply('UNREGISTER_ACK', {});
}

export async function probeAck(c: StoreContext, ctx: RequestContext<'PROBE_ACK'>): Promise<HandlerResult> {
  const s = ctx.session!;
  const seq = ctx.msg.auth!.seq;
  const next = await c.store.updatePresence(s.locatorHex, (rec) => {
    if (!rec || isStale(rec, s, seq)) return { result: undefined };
    const r = renewed(c, rec, ctx.from, seq, undefined, s.locatorId);
    return { result: r.next, put: r.next };
  });
  if (next) {
    c.onPresence?.(s.locatorHex, next, s);
    c.metrics.inc('probe_acks_total');
  }
  return null;
}

const hexOf = (id: Uint8Array): string => Buffer.from(id.buffer, id.byteOffset, id.length).toString('hex');

/** The records of `ids` (one MGET) that `asker` may see; shared-group checks only where needed. */
async function visibleRecords(c: StoreContext, ids: readonly Uint8Array[], asker: ServerSession): Promise<(Presence | undefined)[]> {
  const hexes = ids.map(hexOf);
  const recs = await c.store.getPresences(hexes);
  return Promise.all(recs.map(async (p, i) => {
    if (!p || p.visibility === Visibility.ANYONE) return p;
    const hex = hexes[i]!;
    if (hex === asker.locatorHex || p.extra?.allow?.includes(asker.locatorHex)) return p;
    return (await c.store.groups.shareGroup(Buffer.from(hex, 'hex'), asker.locatorId)) ? p : undefined;
  }));
}

function addrEntry(id: Uint8Array, p: Presence | undefined): AddrEntry {
  if (!p) return { id, online: false };
  const e: AddrEntry = { id, online: true, addr: p.addr };
  if (p.extra?.localAddrs) e.localAddrs = p.extra.localAddrs;
  e.netMode = p.netMode;
  if (p.nickname !== undefined) e.nickname = p.nickname;
  if (p.extra?.mediaId !== undefined) e.mediaId = p.extra.mediaId;
  return e;
}


export async function queryAddr(c: StoreContext, ctx: RequestContext<'QUERY_ADDR'>): Promise<HandlerResult> {
  const asker = ctx.session!;
  const { ids, cursor = 0 } = ctx.msg.body;
  const from = Math.min(cursor, ids.length);
  const recs = await visibleRecords(c, ids.slice(from), asker);
  const page = fillPage(from, ids.length, ADDR_BASE, (i) => addrEntry(ids[i]!, recs[i - from]), (e) => encodedSize(ADDR_ENTRY_FIELDS, e));
  const refused = chargeQueryPage(c, 'QUERY_ADDR', ctx.from.ip, asker, page.entries.map((e) => e.online));
  if (refused) return refused;
  return ctx.reply('QUERY_ADDR_RESULT', page.next === undefined ? { entries: page.entries } : { entries: page.entries, nextCursor: page.next });
}

export async function queryStatus(c: StoreContext, ctx: RequestContext<'QUERY_STATUS'>): Promise<HandlerResult> {
  const asker = ctx.session!;
  const { ids, cursor = 0 } = ctx.msg.body;
  const from = Math.min(cursor, ids.length);
  const recs = await visibleRecords(c, ids.slice(from), asker);
  const page = fillPage(from, ids.length, STATUS_BASE, (i) => recs[i - from] !== undefined, () => 1);
  const refused = chargeQueryPage(c, 'QUERY_STATUS', ctx.from.ip, asker, page.entries);
  if (refused) return refused;
  return ctx.reply('QUERY_STATUS_RESULT', page.next === undefined ? { online: page.entries } : { online: page.entries, nextCursor: page.next });
}

export async function groupCreate(c: StoreContext, ctx: RequestContext<'GROUP_CREATE'>): Promise<HandlerResult> {
  const { name, joinCode } = ctx.msg.body;
  const groupId = await c.store.groups.create(ctx.session!.locatorId, name, joinCode);
  c.metrics.inc('group_changes_total', { op: 'create' });
  return ctx.reply('GROUP_CREATE_ACK', { groupId });
}

export async function groupJoin(c: StoreContext, ctx: RequestContext<'GROUP_JOIN'>): Promise<HandlerResult> {
  const { groupId, joinCode } = ctx.msg.body;
  if (await c.store.groups.join(Buffer.from(groupId), ctx.session!.locatorId, joinCode)) c.metrics.inc('group_changes_total', { op: 'join' });
  return ctx.reply('GROUP_JOIN_ACK', { groupId });
}

export async function groupLeave(c: StoreContext, ctx: RequestContext<'GROUP_LEAVE'>): Promise<HandlerResult> {
  if (await c.store.groups.leave(Buffer.from(ctx.msg.body.groupId), ctx.session!.locatorId)) c.metrics.inc('group_changes_total', { op: 'leave' });
  return ctx.reply('GROUP_LEAVE_ACK', {});
}

export async function groupMembers(c: StoreContext, ctx: RequestContext<'GROUP_MEMBERS'>): Promise<HandlerResult> {
  const asker = ctx.session!;
  const groupId = Buffer.from(ctx.msg.body.groupId);
  const cursor = ctx.msg.body.cursor ?? 0;
  const [member, info, ids] = await Promise.all([
    c.store.groups.isMember(groupId, asker.locatorId), c.store.groups.get(groupId), c.store.groups.members(groupId, cursor, MAX_PAGE_MEMBERS),
  ]);
  if (!member || !info) return { error: ErrorCode.FORBIDDEN, message: 'not a member of this group' };
  const recs = await c.store.getPresences(ids.map((id) => id.toString('hex')));
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
}

/**
 * INTRODUCE over the store (handlers/introduce.ts for the rules). The INTRO push goes out over
 * the target's session from the instance the target last spoke to (Presence.inst): when that is
 * this instance, it pushes; otherwise this instance seals the target's half with the target's
 * session keys from Redis and asks the owner, through the relay (store/relay.ts), to push it,
 * answering the asker once the owner agreed (devloc-locatord(8), SEVERAL INSTANCES).
 */
export async function introduceHere(c: StoreContext, ctx: RequestContext<'INTRODUCE'>): Promise<HandlerResult> {
  const sessions = c.sessions!;
  const intros = c.introductions!;
  const asker = ctx.session!;
  const b = ctx.msg.body;
  const target = Buffer.from(b.target);
  const targetHex = target.toString('hex');
  const result = (r: string): void => c.metrics.inc('introductions_total', { result: r });
  if (targetHex === asker.locatorHex) {
    result('self');
    return { error: ErrorCode.BAD_MESSAGE, message: 'cannot introduce a terminal to itself' };
  }
  const limited = chargeLookups(c, ctx.from.ip, asker.locatorHex, 1);
  if (limited) {
    result('rate-limited');
    return limited;
  }
  const notFound = (why: string): Refusal => {
    result(why);
    return { error: ErrorCode.NOT_FOUND, message: NOT_INTRODUCED };
  };
  const [[rec], askerRec] = await Promise.all([visibleRecords(c, [target], asker), c.store.getPresence(asker.locatorHex)]);
  if (!rec || !rec.reachable) return notFound('not-found');
  const elsewhere = rec.inst !== undefined && rec.inst !== c.instanceId && c.relay !== undefined;
  let targetSession: ServerSession | undefined;
  if (elsewhere) {
    const stored = await c.store.loadSession(rec.sidHex);
    targetSession = stored ? fromStoredSession(stored) : undefined;
  } else {
    if (!sessions.get(rec.sidHex)) await sessions.fetch(rec.sidHex);
    targetSession = sessions.get(rec.sidHex);
  }
  if (!targetSession || targetSession.locatorHex !== targetHex) return notFound('not-found');
  if (!elsewhere) {
    const busy = intros.admit(targetHex);
    if (busy) {
      result('busy');
      return busy;
    }
  }
  const { toTarget, toAsker } = introduction({
    asker, askerFrom: ctx.from, askerLocalAddrs: b.localAddrs ?? askerRec?.extra?.localAddrs, askerNetMode: b.netMode ?? askerRec?.netMode ?? 0,
    askerNickname: askerRec?.nickname, target, targetSession, targetAddr: rec.addr, targetLocalAddrs: rec.extra?.localAddrs,
    targetNetMode: rec.netMode, targetNickname: rec.nickname,
  });
  if (elsewhere) {
    // The owner MACs it in the target's session: sent here with auth naming the session, no MAC.
    const intro = encodeDatagram('INTRO', randomBytes(REQUEST_ID_BYTES), toTarget, { sid: targetSession.sid, seq: 0 });
    const r = await c.relay!.request(rec.inst!, targetHex, intro);
    if (r === 'busy') {
      result('busy');
      return { error: ErrorCode.TRY_LATER, message: 'too many introductions in progress', retryAfterMs: 1000 };
    }
    if (r !== 'ok') return notFound('not-found-elsewhere');
    result('ok-relayed');
    return ctx.reply('INTRODUCE_ACK', toAsker);
  }
  intros.push(targetHex, targetSession, toTarget);
  result('ok');
  return ctx.reply('INTRODUCE_ACK', toAsker);
}

/**
 * The relay's `deliver` (store/relay.ts): push an INTRO another instance built for a target
 * whose session this instance serves (loaded from Redis if need be).
 */
export function deliverRelayed(sessions: ServerSessions, intros: Introductions): (targetHex: string, intro: Buffer) => Promise<RelayResult> {
  return async (targetHex, bytes) => {
    const d = decodeDatagram(bytes);
    if (!d.ok || d.msg.name !== 'INTRO' || !d.msg.auth) return 'gone';
    const sidHex = Buffer.from(d.msg.auth.sid).toString('hex');
    if (!sessions.get(sidHex)) await sessions.fetch(sidHex);
    const session = sessions.get(sidHex);
    if (!session || session.locatorHex !== targetHex) return 'gone';
    if (intros.admit(targetHex)) return 'busy';
    intros.push(targetHex, session, d.msg.body);
    return 'ok';
  };
}

/** For Introductions' `target` in store mode: where to send the next INTRO copy, if anywhere. */
export function storeIntroTarget(store: LocatorStore): (targetHex: string, session: ServerSession) => Promise<Address | undefined> {
  return async (targetHex, session) => {
    const p = await store.getPresence(targetHex);
    return p && p.sidHex === session.sidHex ? p.addr : undefined;
  };
}

/** A store failure as a refusal: TRY_LATER (retry after), a log line, a count. */
export function storeFailure(c: StoreContext, err: unknown): Refusal | null {
  if (err instanceof RedisUnavailable || err instanceof RespServerError) {
    c.metrics.inc('redis_errors_total', { kind: err instanceof RedisUnavailable ? 'unavailable' : 'reply' });
    c.logger.refusal('redis-error', { err: err.message });
    return { error: ErrorCode.TRY_LATER, message: 'store unavailable, try later', retryAfterMs: err instanceof RedisUnavailable ? Math.max(50, err.retryAfterMs) : 1000 };
  }
  return null;
}

/** Every handler, over the store, with store failures turned into TRY_LATER. */
export function storeHandlers(c: StoreContext): Handlers {
  const guard = <N extends keyof Handlers>(fn: (c: StoreContext, ctx: RequestContext<N & string>) => Promise<HandlerResult>) =>
    async (ctx: RequestContext<N & string>): Promise<HandlerResult> => {
      try {
        return await fn(c, ctx);
      } catch (err) {
        const r = storeFailure(c, err);
        if (r) return r;
        throw err;
      }
    };
  return {
    REGISTER: guard(register),
    REFRESH: guard(refresh),
    UNREGISTER: guard(unregister),
    PROBE_ACK: guard(probeAck),
    QUERY_ADDR: guard(queryAddr),
    QUERY_STATUS: guard(queryStatus),
    GROUP_CREATE: guard(groupCreate),
    GROUP_JOIN: guard(groupJoin),
    GROUP_LEAVE: guard(groupLeave),
    GROUP_MEMBERS: guard(groupMembers),
    ...(c.sessions && c.introductions ? {
      INTRODUCE: guard(introduceHere),
      INTRO_ACK: (ctx: RequestContext<'INTRO_ACK'>) => introAck(c.introductions!, ctx),
    } : {}),
  } as Handlers;
}
