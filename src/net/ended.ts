// Sessions a service has ended before their tickets expire (devloc ctl kick, revocation,
// identity conflicts): every later message in such a session is answered with the reason's
// error code, MACed in the session (so only the terminal holding the session keys can be told,
// and a forger cannot make a terminal believe it was kicked). The session itself stays in
// ServerSessions until its ticket expires: its keys are what authenticates the answer.
//
// Two kinds of entries, both bounded by count and kept until the tickets concerned expire:
//   - one session (by session ID);
//   - every session of a locator ID (revocation: authd issues it no new ticket, and the ones it
//     has are refused until the last one expires).
//
// `acceptRevoke` is the REVOKE handler's common part for locatord and matchd.
import type { Logger } from '../common/log.js';
import { formatAddress } from '../wire/addr.js';
import type { ErrorCode } from '../wire/errors.js';
import { errorName } from '../wire/errors.js';
import { LRUCache } from 'lru-cache';
import { ExpiringCache } from '../wire/expiring-cache.js';
import { verifyRevoke } from '../wire/revoke.js';
import type { TicketVerifier } from '../wire/ticket.js';
import type { Handlers, HandlerResult, Refusal, RequestContext } from './server.js';
import type { ServerSession } from './sessions.js';

export interface EndReason {
  code: ErrorCode;
  message: string;
}

export class EndedSessions {
  // Both dropped when their tickets expire (tidy(): where the list is written and read), so the
  // list is empty again once every ended session's ticket is gone, and reason() does no lookup.
  private readonly bySession: ExpiringCache<string, EndReason>;
  private readonly byLocator: ExpiringCache<string, EndReason>;

  constructor(max = 100_000, private readonly now: () => number = Date.now) {
    this.bySession = new ExpiringCache(max, now);
    this.byLocator = new ExpiringCache(max, now);
  }

  get size(): number {
    return this.bySession.size + this.byLocator.size;
  }

  /** End one session until `untilMs` (its ticket's expiry). */
  end(sidHex: string, reason: EndReason, untilMs: number): void {
    const now = this.now();
    this.bySession.tidy(now);
    const ttl = Math.max(1, untilMs - now);
    this.bySession.set(sidHex, reason, { ttl });
  }

  /** End every session of `locatorHex`, also those opened later, until `untilMs` (a longer entry stays). */
  endLocator(locatorHex: string, reason: EndReason, untilMs: number): void {
    const now = this.now();
    this.byLocator.tidy(now);
    const ttl = Math.max(1, untilMs - now);
    const left = this.byLocator.getRemainingTTL(locatorHex);
    if (left > ttl) return;
    this.byLocator.set(locatorHex, reason, { ttl });
  }

  /** Why `session` has ended, or undefined while it is live. */
  reason(session: Pick<ServerSession, 'sidHex' | 'locatorHex'>): EndReason | undefined {
    // Asked for every session message: no lookup in a list that is empty (the usual case).
    if (this.bySession.size + this.byLocator.size === 0) return undefined;
    // Both lists run on this.now: one reading for both.
    const now = this.now();
    this.bySession.tidy(now);
    this.byLocator.tidy(now);
    return (this.bySession.size > 0 ? this.bySession.get(session.sidHex) : undefined) ?? (this.byLocator.size > 0 ? this.byLocator.get(session.locatorHex) : undefined);
  }

  check(session: ServerSession | undefined): Refusal | null {
    if (!session) return null;
    const r = this.reason(session);
    return r ? { error: r.code, message: r.message } : null;
  }
}

/**
 * A refusal list shared by several instances (locatord --store redis): a REVOKE reaches one
 * instance, which writes it there; the others learn it by asking, at most once per `intervalMs`
 * per terminal, before running one of its messages. A lookup that fails lets the message run
 * (the registration itself is already gone everywhere). The messages named in `everyTime`
 * (locatord: REGISTER, so that a revoked terminal cannot register again anywhere) ask every
 * time and do not run when the lookup fails (the handler fails with the lookup's error, which
 * locatord's store-failure guard, outside this gate, answers TRY_LATER): this is the one place
 * that asks for them (until 2026-12-07 the REGISTER handler asked again after this gate,
 * two reads of the same key per first REGISTER).
 */
export interface SharedRefusals {
  lookup(locatorHex: string): Promise<(EndReason & { untilMs: number }) | undefined>;
  intervalMs: number;
  now: () => number;
  everyTime?: ReadonlySet<string>;
}

/** Terminals whose shared refusal was looked up recently (bounded: at most one lookup each per interval). */
const SHARED_CHECKED_MAX = 262_144;

/** `handlers`, each answering an ended session's message with its reason instead of running. */
export function gateHandlers(handlers: Handlers, ended: EndedSessions, shared?: SharedRefusals): Handlers {
  const checkedAt = shared ? new LRUCache<string, number>({ max: SHARED_CHECKED_MAX }) : undefined;
  const out: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(handlers)) {
    const h = fn as (ctx: RequestContext) => HandlerResult | Promise<HandlerResult>;
    const everyTime = shared?.everyTime?.has(name) === true;
    out[name] = (ctx: RequestContext) => {
      const ended1 = ended.check(ctx.session);
      if (ended1) return ended1;
      const s = ctx.session;
      if (!shared || !checkedAt || !s) return h(ctx);
      const t = shared.now();
      const last = checkedAt.get(s.locatorHex);
      if (!everyTime && last !== undefined && t - last < shared.intervalMs) return h(ctx);
      checkedAt.set(s.locatorHex, t);
      return shared.lookup(s.locatorHex).then(
        (r) => {
          if (!r) return h(ctx);
          ended.endLocator(s.locatorHex, { code: r.code, message: r.message }, r.untilMs);
          return { error: r.code, message: r.message };
        },
        (err: unknown) => (everyTime ? Promise.reject(err) : h(ctx)),
      );
    };
  }
  return out as Handlers;
}

/**
 * A REVOKE from authd: checked against the trusted authd keys (the ones tickets are checked
 * with) and the clock, then every session of the terminal ends here until its tickets expire.
 * The caller removes what else it holds (registration, match request) and acknowledges.
 */
export function acceptRevoke(
  ctx: RequestContext<'REVOKE'>, verifier: TicketVerifier, ended: EndedSessions, logger: Logger, nowMs: number,
): Refusal | { locatorHex: string; reason: EndReason; untilMs: number } {
  const b = ctx.msg.body;
  const skewMs = verifier.clockSkewS * 1000;
  const v = verifyRevoke(ctx.msg.rid, b, verifier.keys, nowMs, skewMs);
  if (!v.ok) {
    logger.refusal(`revoke:${errorName(v.code)}`, { from: formatAddress(ctx.from), code: errorName(v.code), reason: v.reason });
    return { error: v.code, message: v.reason };
  }
  const locatorHex = Buffer.from(b.locatorId).toString('hex');
  const reason: EndReason = { code: b.code as ErrorCode, message: 'device revoked' };
  const untilMs = b.untilS * 1000 + skewMs;
  ended.endLocator(locatorHex, reason, untilMs);
  return { locatorHex, reason, untilMs };
}

/**
 * A session in a control answer (locatord's and matchd's `sessions` and `show`); given `ended`,
 * also why it ended: the error name its messages are answered with (KICKED, REVOKED), null while live.
 */
export function sessionView(s: ServerSession, ended?: EndedSessions): Record<string, unknown> {
  const view: Record<string, unknown> = { sid: s.sidHex, locatorId: s.locatorHex, aud: s.aud, ticketExpiresAt: new Date(s.exp * 1000).toISOString() };
  if (ended) {
    const why = ended.reason(s);
    view['ended'] = why ? errorName(why.code) : null;
  }
  return view;
}
