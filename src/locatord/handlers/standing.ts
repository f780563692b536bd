// Whether a message of a session may change the registration of its locator ID: the one rule of
// REFRESH, PROBE_ACK, PRESENCE_SET and UNREGISTER (REGISTER rebinds), and what
// an identity conflict does (docs/SECURITY.md, "Cloned identities").
import type { RequestContext } from '../../net/server.js';
import type { ServerSession } from '../../net/sessions.js';
import { formatAddress, sameAddress } from '../../wire/addr.js';
import { ErrorCode } from '../../wire/errors.js';
import type { LocatorContext } from '../context.js';
import type { Presence } from '../store/types.js';

/** Older than what the record reflects: another session's (only REGISTER rebinds), or not newer. */
const isStale = (p: Presence, s: ServerSession, seq: number): boolean => p.sidHex !== s.sidHex || seq <= p.seq;

/**
 * What a message of `ctx.session` (sequence number `seq`) is to `p`, the registration of its
 * locator ID: `current` (it may change it), `stale` (it changes nothing) or `conflict`.
 * Another session registered this locator ID since ours did, and ours still speaks: two terminals
 * hold one identity (a copied identity file), and the newer one keeps it. Unless ours speaks
 * from the very address and port the record is bound to: that is the socket that registered the
 * newer session, the same terminal (a ticket renewal, a step the agent abandoned), with a message
 * of its older session still in flight; stale, like an older session's REGISTER. Or from an
 * address not validated for our session (a PROBE_ACK or PRESENCE_SET; a REFRESH from there is
 * challenged first): the address tells nothing, so nothing is declared; stale too.
 */
export function standingOf(p: Presence, seq: number, ctx: Pick<RequestContext, 'session' | 'from' | 'addressValidated'>): 'current' | 'stale' | 'conflict' {
  const s = ctx.session!;
  if (p.sidHex !== s.sidHex && ctx.addressValidated !== false && !sameAddress(p.addr, ctx.from)) return 'conflict';
  return isStale(p, s, seq) ? 'stale' : 'current';
}

/**
 * Two terminals with one identity (issue 19): the older session is told IDENTITY_CONFLICT, now
 * (the refusal returned, for a request) and for every later message in it, so its agent stops
 * re-registering instead of taking the locator ID back; both addresses are logged and counted.
 */
export function identityConflict(c: LocatorContext, ctx: Pick<RequestContext, 'session' | 'from' | 'msg'>, newer: Presence): { error: ErrorCode; message: string } {
  const s = ctx.session!;
  c.metrics.inc('identity_conflicts_total');
  c.logger.warn('identity conflict', {
    locatorId: s.locatorHex, type: ctx.msg.name, older: formatAddress(ctx.from), newer: formatAddress(newer.addr), olderSession: s.sidHex, newerSession: newer.sidHex,
  });
  const reason = { code: ErrorCode.IDENTITY_CONFLICT, message: 'another terminal registered with this identity since' };
  c.ended.end(s.sidHex, reason, (s.exp + c.sessions.verifier.clockSkewS) * 1000);
  return { error: reason.code, message: reason.message };
}
