// REGISTER, REFRESH, UNREGISTER and PROBE_ACK: the messages that bind a locator ID to an address.
//
// Every one arrives session-MACed (DatagramServer has verified the MAC and the replay window),
// and the session was opened by a ticket for exactly `session.locatorId`: a locator ID is only
// ever bound by a message authenticated for it. The bound address is the packet's observed
// source, never a claimed one. Within a session the binding follows the highest sequence number:
// the replay window lets seq 4 in after seq 5 (it is not a replay), but it then changes nothing.
import type { HandlerResult, RequestContext } from '../../net/server.js';
import type { Address } from '../../wire/addr.js';
import type { Bodies } from '../../wire/catalog.js';
import { ErrorCode } from '../../wire/errors.js';
import { peekTicket } from '../../wire/ticket.js';
import type { LocatorContext } from '../context.js';
import { grantTtl } from '../context.js';
import type { KeyedSession } from '../snapshot.js';
import type { RegistrationExtra } from '../table.js';
import { Registration, TICK_MS } from '../table.js';

type Ack = Bodies['REGISTER_ACK'];

function extraOf(b: Bodies['REGISTER']): RegistrationExtra | undefined {
  const x: RegistrationExtra = {};
  if (b.localAddrs && b.localAddrs.length > 0) x.localAddrs = b.localAddrs;
  if (b.mediaId !== undefined) x.mediaId = b.mediaId;
  if (b.community && Object.keys(b.community).length > 0) x.community = b.community;
  if (b.allow && b.allow.length > 0) x.allow = b.allow.map((id) => Buffer.from(id).toString('hex'));
  return Object.keys(x).length > 0 ? x : undefined;
}

/** The acknowledgement describing a record as it now stands. */
function ackOf(c: LocatorContext, rec: Registration, locatorId: Buffer): Ack {
  const { ttlS, refreshS } = grantTtl(c.limits, Math.round((rec.ttlTicks * TICK_MS) / 1000), rec.netMode);
  return { observed: rec.address, ttlS, refreshS, locatorId };
}

/** Move a record to `from`, extend it by the TTL asked for (or the one it had) and acknowledge. */
function renewFrom(c: LocatorContext, rec: Registration, from: Address, seq: number, requestedTtlS: number | undefined, locatorId: Buffer): Ack {
  rec.setAddress(from);
  rec.seq = seq;
  const g = grantTtl(c.limits, requestedTtlS ?? Math.round((rec.ttlTicks * TICK_MS) / 1000), rec.netMode);
  c.table.renew(rec, g.ttlS * 1000);
  return { observed: from, ttlS: g.ttlS, refreshS: g.refreshS, locatorId };
}

export function register(c: LocatorContext, ctx: RequestContext<'REGISTER'>): HandlerResult {
  const s = ctx.session! as KeyedSession;
  const seq = ctx.msg.auth!.seq;
  const b = ctx.msg.body;
  if (ctx.freshSession) {
    c.metrics.inc('sessions_opened_total');
    // Remember which authd key vouched for the session: SIGHUP drops sessions of untrusted keys.
    const peek = b.ticket ? peekTicket(b.ticket) : undefined;
    if (peek && typeof peek !== 'string') s.kid = peek.kid;
  }
  let rec = c.table.touch(s.locatorHex);
  // Same session, not newer than what the record reflects: an older packet that arrived late.
  if (rec && rec.session?.sidHex === s.sidHex && seq <= rec.seq) {
    c.metrics.inc('stale_updates_total', { type: 'REGISTER' });
    return ctx.reply('REGISTER_ACK', ackOf(c, rec, s.locatorId));
  }
  // Durable part first, all or nothing: a refused join leaves the registration untouched.
  if (b.joinGroups && b.joinGroups.length > 0) c.groups.joinAll(s.locatorId, b.joinGroups);
  const netMode = b.netMode ?? 0;
  const g = grantTtl(c.limits, b.ttlS, netMode);
  if (rec) {
    // A REGISTER rebinds the record to its session, also one newer than the record's.
    rec.setAddress(ctx.from);
    rec.session = s;
    rec.seq = seq;
  } else {
    rec = new Registration(ctx.from, s, seq, 0, 0);
  }
  rec.netMode = netMode;
  rec.visibility = b.visibility ?? 0;
  rec.reachable = b.reachable === true;
  rec.nickname = b.nickname;
  rec.extra = extraOf(b);
  c.table.renew(rec, g.ttlS * 1000);
  if (rec.key === '') c.table.set(s.locatorHex, rec);
  c.metrics.inc('registrations_total');
  return ctx.reply('REGISTER_ACK', { observed: ctx.from, ttlS: g.ttlS, refreshS: g.refreshS, locatorId: s.locatorId });
}

export function refresh(c: LocatorContext, ctx: RequestContext<'REFRESH'>): HandlerResult {
  const s = ctx.session!;
  const seq = ctx.msg.auth!.seq;
  const rec = c.table.touch(s.locatorHex);
  // Expired, evicted or unregistered: only a REGISTER may create a record (it carries visibility
  // and the rest, which a REFRESH does not restate).
  if (!rec) return { error: ErrorCode.NOT_FOUND, message: 'not registered: send REGISTER' };
  if (rec.isStale(s, seq)) {
    c.metrics.inc('stale_updates_total', { type: 'REFRESH' });
    return ctx.reply('REFRESH_ACK', ackOf(c, rec, s.locatorId));
  }
  const b = ctx.msg.body;
  if (b.netMode !== undefined) rec.netMode = b.netMode;
  if (b.localAddrs) {
    const x = rec.extra ?? {};
    if (b.localAddrs.length > 0) x.localAddrs = b.localAddrs;
    else delete x.localAddrs;
    rec.extra = Object.keys(x).length > 0 ? x : undefined;
  }
  c.metrics.inc('refreshes_total');
  return ctx.reply('REFRESH_ACK', renewFrom(c, rec, ctx.from, seq, b.ttlS, s.locatorId));
}

export function unregister(c: LocatorContext, ctx: RequestContext<'UNREGISTER'>): HandlerResult {
  const s = ctx.session!;
  const rec = c.table.get(s.locatorHex);
  if (rec && !rec.isStale(s, ctx.msg.auth!.seq)) {
    c.table.delete(s.locatorHex);
    c.metrics.inc('unregistrations_total');
  }
  return ctx.reply('UNREGISTER_ACK', {});
}

/** The terminal's answer to a PROBE: alive at this address, extended like a REFRESH. No reply. */
export function probeAck(c: LocatorContext, ctx: RequestContext<'PROBE_ACK'>): HandlerResult {
  const s = ctx.session!;
  const seq = ctx.msg.auth!.seq;
  const rec = c.table.touch(s.locatorHex);
  if (rec && !rec.isStale(s, seq)) {
    renewFrom(c, rec, ctx.from, seq, undefined, s.locatorId);
    c.metrics.inc('probe_acks_total');
  }
  return null;
}
