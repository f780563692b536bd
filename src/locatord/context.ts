// What every locatord handler works on. One object, built by server.ts, so handlers are plain
// functions of (context, request) over the store (embedded or Redis: store/types.ts), and the
// tests can build a context without sockets.
import type { Logger } from '../common/log.js';
import type { Metrics } from '../common/metrics.js';
import type { EndedSessions } from '../net/ended.js';
import type { RateLimiter } from '../net/ratelimit.js';
import type { Refusal } from '../net/server.js';
import type { ServerSessions } from '../net/sessions.js';
import { NAT_REFRESH_S, NetMode, OPEN_REFRESH_S, TTL_PER_REFRESH } from '../wire/constants.js';
import { ErrorCode } from '../wire/errors.js';
import type { Introductions } from './handlers/introduce.js';
import type { PresencePushes } from './handlers/watch.js';
import type { LocatordLimits } from './options.js';
import type { ServedStore } from './store/types.js';

export interface LocatorContext {
  store: ServedStore;
  /** This instance's sessions (INTRODUCE finds the target's here, or loads it). */
  sessions: ServerSessions;
  /** INTRO pushes of this instance (handlers/introduce.ts). */
  introductions: Introductions;
  /** PRESENCE pushes of this instance (handlers/watch.ts). */
  presencePushes: PresencePushes;
  /** Sessions ended before their tickets expire (kick, revocation): net/ended.ts. */
  ended: EndedSessions;
  /** Milliseconds clock. */
  now: () => number;
  limits: LocatordLimits;
  metrics: Metrics;
  logger: Logger;
  /** Locator IDs looked up, per terminal (keyed by locator ID: more sessions buy nothing). */
  queryLimiter: RateLimiter;
  /** Locator IDs looked up, per source IP. */
  querySourceLimiter: RateLimiter;
}

/** TTL granted and refresh interval suggested, from what the terminal asked and reported. */
export function grantTtl(limits: LocatordLimits, requestedS: number | undefined, netMode: number): { ttlS: number; refreshS: number } {
  const ttlS = Math.min(limits.maxTtlS, Math.max(limits.minTtlS, requestedS ?? limits.defaultTtlS));
  // NAT'd (or unknown) terminals refresh often enough to keep their NAT binding open; open ones
  // only as the TTL needs. Either way the TTL covers TTL_PER_REFRESH intervals, so a few lost
  // refreshes do not make a live terminal look offline: a short TTL shortens the interval.
  const base = netMode === NetMode.OPEN ? OPEN_REFRESH_S : NAT_REFRESH_S;
  return { ttlS, refreshS: Math.max(1, Math.min(base, Math.floor(ttlS / TTL_PER_REFRESH))) };
}

/**
 * Charge `ids` lookups to the source IP and to the terminal; a refusal when either is over its
 * budget. Counting IDs (not requests) is what bounds status tracking and ID enumeration: one
 * QUERY_STATUS of 64 IDs costs as much as 64 of one ID.
 */
/** The two lookup budgets, which both stores' handlers charge. */
export type LookupLimits = Pick<LocatorContext, 'queryLimiter' | 'querySourceLimiter'>;

export function chargeLookups(ctx: LookupLimits, sourceIp: string, locatorHex: string, ids: number): Refusal | null {
  if (ids === 0) return null;
  if (!ctx.querySourceLimiter.take(sourceIp, ids)) {
    return { error: ErrorCode.RATE_LIMITED, message: 'too many lookups from this address', retryAfterMs: ctx.querySourceLimiter.retryAfterMs(sourceIp, ids) };
  }
  if (!ctx.queryLimiter.take(locatorHex, ids)) {
    return { error: ErrorCode.RATE_LIMITED, message: 'too many lookups by this terminal', retryAfterMs: ctx.queryLimiter.retryAfterMs(locatorHex, ids) };
  }
  return null;
}
