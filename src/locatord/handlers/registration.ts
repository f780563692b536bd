// REGISTER, REFRESH, UNREGISTER and PROBE_ACK: the messages that bind a locator ID to an address.
//
// Every one arrives session-MACed (DatagramServer has verified the MAC and the replay window),
// and the session was opened by a ticket for exactly `session.locatorId`: a locator ID is only
// ever bound by a message authenticated for it. The bound address is the packet's observed
// source, never a claimed one, and only an address validated for the session (it echoed an
// ADDR_CHALLENGE: net/routability.ts); from any other the handlers answer NEEDS_VALIDATION and
// the server challenges it instead, so a forged source never becomes a binding. Within a session the binding follows the highest sequence number:
// the replay window lets seq 4 in after seq 5 (it is not a replay), but it then changes nothing.
//
// Every change of a presence record is one updatePresence: the staleness check and the write
// are atomic, also across instances sharing Redis (store/redis.ts, compare-and-set), so a
// REFRESH handled by one instance cannot overwrite a newer REGISTER handled by another at the
// same moment. On the embedded store all of it runs synchronously (store/maybe.ts).
import { NEEDS_VALIDATION } from '../../net/routability.js';
import type { HandlerResult, RequestContext } from '../../net/server.js';
import type { Bodies } from '../../wire/catalog.js';
import { ErrorCode } from '../../wire/errors.js';
import { peekTicket } from '../../wire/ticket.js';
import { sameAddress } from '../../wire/addr.js';
import type { LocatorContext } from '../context.js';
import { grantTtl } from '../context.js';
import { limitedJoins } from './groups.js';
import type { KeyedSession } from '../snapshot.js';
import type { RegistrationExtra } from '../table.js';
import type { MaybePromise } from '../store/maybe.js';
import { both, then } from '../store/maybe.js';
import type { Presence } from '../store/types.js';
import { identityConflict, standingOf } from './standing.js';
import { notifyWatchers, withPresence } from './watch.js';

type Ack = Bodies['REGISTER_ACK'];

function extraOf(b: Bodies['REGISTER']): RegistrationExtra | undefined {
  const x: RegistrationExtra = {};
  if (b.localAddrs && b.localAddrs.length > 0) x.localAddrs = b.localAddrs;
  if (b.mediaId !== undefined) x.mediaId = b.mediaId;
  if (b.community && Object.keys(b.community).length > 0) x.community = b.community;
  if (b.allow && b.allow.length > 0) x.allow = b.allow.map((id) => Buffer.from(id).toString('hex'));
  // The presence record's media ID, when it has one, is the media ID.
  if (b.presence) return withPresence(x, { ...b.presence, ...(b.presence.mediaId === undefined && b.mediaId !== undefined ? { mediaId: b.mediaId } : {}) });
  return Object.keys(x).length > 0 ? x : undefined;
}

const ttlSOf = (p: Presence): number => Math.round((p.expMs - p.regMs) / 1000);

/** The acknowledgement describing a record as it now stands. */
function ackOf(c: LocatorContext, p: Presence, locatorId: Buffer): Ack {
  const { ttlS, refreshS } = grantTtl(c.limits, ttlSOf(p), p.netMode);
  return { observed: p.addr, ttlS, refreshS, locatorId };
}

/**
 * `p` moved to `from` and extended by the TTL asked for (or the one it had), with the network
 * mode and extra fields given (default: its own), and its ack.
 */
function renewed(
  c: LocatorContext, p: Presence, from: RequestContext['from'], seq: number, requestedTtlS: number | undefined, locatorId: Buffer,
  netMode = p.netMode, extra = p.extra,
): { next: Presence; ack: Ack } {
  const g = grantTtl(c.limits, requestedTtlS ?? ttlSOf(p), netMode);
  const now = c.now();
  const next: Presence = { ...p, addr: from, seq, netMode, extra, regMs: now, expMs: now + g.ttlS * 1000 };
  return { next, ack: { observed: from, ttlS: g.ttlS, refreshS: g.refreshS, locatorId } };
}

// A revoked terminal (issue 19) never gets here: the gate of net/ended.ts answered it, from the
// sessions ended here or, with --store redis, from the shared refusal list, which it asks for
// every REGISTER (locatord/server.ts sharedRefusals).
export function register(c: LocatorContext, ctx: RequestContext<'REGISTER'>): MaybePromise<HandlerResult> {
  const s = ctx.session! as KeyedSession;
  const seq = ctx.msg.auth!.seq;
  const b = ctx.msg.body;
  if (ctx.freshSession) {
    c.metrics.inc('sessions_opened_total');
    // Remember which authd key vouched for the session: SIGHUP drops sessions of untrusted keys.
    const peek = b.ticket ? peekTicket(b.ticket) : undefined;
    if (peek && typeof peek !== 'string') s.kid = peek.kid;
  }
  // Shared with the other instances and workers (Redis), in the same pipeline as the presence
  // read. Before the address check: the ADDR_PROOF answering our challenge may reach another
  // worker of this port (or another instance), which needs the session to check it; so the
  // challenge goes out once the session is stored. On every REGISTER, not only the
  // session-opening one: Redis may have lost it (restart) while this instance kept it, and
  // REGISTER is what a terminal sends after NOT_FOUND.
  const saved = c.store.shareSession(s);
  if (ctx.addressValidated === false) return then(saved, () => NEEDS_VALIDATION);
  // Same session, not newer than what the record reflects: an older packet that arrived late. Or
  // an older session's (its ticket expires before the record's session's): a REGISTER withheld
  // and delivered later must not rebind the ID away from the terminal's newer session (issue 15).
  // The record's session is compared by its ticket expiry: always held on the embedded store;
  // with Redis, fetched from the shared sessions first when another instance opened it
  // (unknownSession below), so the check holds across instances.
  const olderSession = (rec: Presence): boolean => rec.sidHex !== s.sidHex && (c.sessions.get(rec.sidHex)?.exp ?? -Infinity) > s.exp;
  const stale = (rec: Presence | undefined): rec is Presence => rec !== undefined && ((rec.sidHex === s.sidHex && seq <= rec.seq) || olderSession(rec));
  const staleAck = (rec: Presence): HandlerResult => {
    c.metrics.inc('stale_updates_total', { type: 'REGISTER' });
    return ctx.reply('REGISTER_ACK', ackOf(c, rec, s.locatorId));
  };
  // Redis: the record may name a session another instance opened, which olderSession can only
  // compare once it is fetched from the shared sessions (one read, when the session changed).
  // Asked once per REGISTER: a session that cannot be fetched compares as gone.
  const unknownSession = (rec: Presence | undefined): string | undefined =>
    c.store.kind === 'redis' && rec && rec.sidHex !== s.sidHex && !c.sessions.get(rec.sidHex) ? rec.sidHex : undefined;
  const bind = (fetched = false): MaybePromise<HandlerResult> => {
    const netMode = b.netMode ?? 0;
    const g = grantTtl(c.limits, b.ttlS, netMode);
    const now = c.now();
    // A REGISTER rebinds the record to its session, also one newer than the record's.
    const p: Presence = {
      addr: ctx.from, netMode, visibility: b.visibility ?? 0, sidHex: s.sidHex, seq, regMs: now, expMs: now + g.ttlS * 1000,
      nickname: b.nickname, extra: extraOf(b), ...(b.reachable === true ? { reachable: true } : {}),
    };
    // The decision's result: the newer record (stale), the ID of a session to fetch first (nothing
    // written: the compare-and-set decides again once it is held), or undefined (bound).
    const written = c.store.updatePresence<Presence | string | undefined>(s.locatorHex, (rec) => {
      const unknown = fetched ? undefined : unknownSession(rec);
      if (unknown) return { result: unknown };
      return stale(rec) ? { result: rec } : { result: undefined, put: p };
    }, s, ctx.claim);
    return then(both(written, saved), ([older]) => {
      if (typeof older === 'string') return c.sessions.fetch(older).then(() => bind(true), () => bind(true));
      if (older) return staleAck(older);
      c.metrics.inc('registrations_total');
      // Online, or a new nickname / presence record: watchers whose view changed are told.
      notifyWatchers(c, s.locatorHex);
      return ctx.reply('REGISTER_ACK', { observed: ctx.from, ttlS: g.ttlS, refreshS: g.refreshS, locatorId: s.locatorId });
    });
  };
  // The joins' stale check reads the record first, its session fetched when unknown (bind() need
  // not ask again).
  const record = (): MaybePromise<Presence | undefined> =>
    then(c.store.getPresence(s.locatorHex), (rec) => {
      const unknown = unknownSession(rec);
      return unknown ? c.sessions.fetch(unknown).then(() => rec, () => rec) : rec;
    });
  const joins = b.joinGroups;
  if (!joins || joins.length === 0) return bind();
  // Durable part first, all or nothing: a refused join registers nothing; an outdated REGISTER
  // is caught before the joins.
  return then(both(record(), saved), ([rec]) => {
    if (stale(rec)) return staleAck(rec);
    // The shared window's claim (--store redis) alone before the joins, which are writes.
    return then(ctx.claim?.ensure(), () =>
      then(limitedJoins(c, s, ctx.from, joins, (reqs) => c.store.groups.joinAll(s.locatorId, reqs)), (n) => (typeof n === 'number' ? bind(true) : n)));
  });
}

type RefreshOutcome = { kind: 'none' } | { kind: 'stale'; ack: Ack } | { kind: 'renewed'; ack: Ack } | { kind: 'conflict'; newer: Presence };

export function refresh(c: LocatorContext, ctx: RequestContext<'REFRESH'>): MaybePromise<HandlerResult> {
  if (ctx.addressValidated === false) return NEEDS_VALIDATION;
  const s = ctx.session!;
  const seq = ctx.msg.auth!.seq;
  const b = ctx.msg.body;
  const out = c.store.updatePresence<RefreshOutcome>(s.locatorHex, (cur) => {
    // Expired, evicted or unregistered: only a REGISTER may create a record (it carries
    // visibility and the rest, which a REFRESH does not restate).
    if (!cur) return { result: { kind: 'none' } };
    const standing = standingOf(cur, seq, ctx);
    if (standing === 'conflict') return { result: { kind: 'conflict', newer: cur } };
    if (standing === 'stale') return { result: { kind: 'stale', ack: ackOf(c, cur, s.locatorId) } };
    let extra = cur.extra;
    if (b.localAddrs) {
      const x = { ...extra };
      if (b.localAddrs.length > 0) x.localAddrs = b.localAddrs;
      else delete x.localAddrs;
      extra = Object.keys(x).length > 0 ? x : undefined;
    }
    const r = renewed(c, cur, ctx.from, seq, b.ttlS, s.locatorId, b.netMode ?? cur.netMode, extra);
    return { result: { kind: 'renewed', ack: r.ack }, put: r.next };
  }, s, ctx.claim);
  return then(out, (o): HandlerResult => {
    if (o.kind === 'none') return { error: ErrorCode.NOT_FOUND, message: 'not registered: send REGISTER' };
    if (o.kind === 'conflict') return identityConflict(c, ctx, o.newer);
    c.metrics.inc(o.kind === 'stale' ? 'stale_updates_total' : 'refreshes_total', o.kind === 'stale' ? { type: 'REFRESH' } : undefined);
    return ctx.reply('REFRESH_ACK', o.ack);
  });
}

type UnregisterOutcome = { kind: 'removed' } | { kind: 'unchanged' } | { kind: 'conflict'; newer: Presence };

export function unregister(c: LocatorContext, ctx: RequestContext<'UNREGISTER'>): MaybePromise<HandlerResult> {
  const s = ctx.session!;
  const seq = ctx.msg.auth!.seq;
  const removed = c.store.updatePresence<UnregisterOutcome>(s.locatorHex, (rec) => {
    if (!rec) return { result: { kind: 'unchanged' } };
    const standing = standingOf(rec, seq, ctx);
    if (standing === 'conflict') return { result: { kind: 'conflict', newer: rec } };
    return standing === 'stale' ? { result: { kind: 'unchanged' } } : { result: { kind: 'removed' }, remove: true };
  }, s);
  return then(removed, (r): MaybePromise<HandlerResult> => {
    if (r.kind === 'conflict') return identityConflict(c, ctx, r.newer);
    // Nothing registered, or stale (an older message of this session, or of a displaced one from
    // the newer registration's own socket): acknowledged, the registration left as it is.
    if (r.kind === 'unchanged') return ctx.reply('UNREGISTER_ACK', {});
    c.metrics.inc('unregistrations_total');
    notifyWatchers(c, s.locatorHex);
    // Its own subscriptions end with its registration (a terminal watches again after REGISTER).
    return then(c.store.watches.remove(s.locatorHex, 'all'), () => ctx.reply('UNREGISTER_ACK', {}));
  });
}

/** What a PROBE_ACK did; an identity conflict carries the newer registration (the rare case allocates). */
type ProbeAckOutcome = 'none' | 'stale' | 'extended' | { conflict: Presence };

/** The terminal's answer to a PROBE: alive at this address, extended like a REFRESH. No reply. */
export function probeAck(c: LocatorContext, ctx: RequestContext<'PROBE_ACK'>): MaybePromise<HandlerResult> {
  // Only from a validated address, or from the one bound (validated when it was bound, maybe by
  // an instance or a process before this one): elsewhere the binding stays (a REFRESH moves it).
  const s = ctx.session!;
  const seq = ctx.msg.auth!.seq;
  const unvalidated = ctx.addressValidated === false;
  const done = c.store.updatePresence<ProbeAckOutcome>(s.locatorHex, (rec) => {
    if (!rec) return { result: 'none' };
    const standing = standingOf(rec, seq, ctx);
    if (standing === 'conflict') return { result: { conflict: rec } };
    if (standing === 'stale') return { result: 'stale' };
    if (unvalidated && !sameAddress(rec.addr, ctx.from)) return { result: 'none' };
    return { result: 'extended', put: renewed(c, rec, ctx.from, seq, undefined, s.locatorId).next };
  }, s, ctx.claim);
  return then(done, (o) => {
    if (o === 'extended') c.metrics.inc('probe_acks_total');
    else if (o === 'stale') c.metrics.inc('stale_updates_total', { type: 'PROBE_ACK' });
    // A response is never answered, a conflicting one neither: its session is ended, so the
    // terminal's next request in it is refused IDENTITY_CONFLICT.
    else if (o !== 'none') identityConflict(c, ctx, o.conflict);
    return null;
  });
}
