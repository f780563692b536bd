// An lru-cache whose entries expire on an injected clock, with the sweep lru-cache lacks:
// lru-cache drops an expired entry only when that entry is read again or evicted, so a key that
// is never asked for again (a renewed ticket, a session whose ticket expired) stays until `max`
// newer ones push it out. `tidy()`, called where the owner adds or reads entries, drops every
// expired one at most once per `purgeEveryMs`: no timer, bounded work per interval.
// One place for the ticket verdicts (ticket.ts), the pending session keys (net/sessions.ts) and
// the ended sessions (net/ended.ts).
import { LRUCache } from 'lru-cache';

/** Expired entries are dropped at most this often by default (ms). */
export const EXPIRED_PURGE_INTERVAL_MS = 60_000;

export class ExpiringCache<K extends {}, V extends {}> extends LRUCache<K, V> {
  /** When (nowMs) expired entries are next dropped. */
  private nextPurgeMs = 0;

  constructor(
    max: number,
    private readonly nowMs: () => number,
    private readonly purgeEveryMs = EXPIRED_PURGE_INTERVAL_MS,
  ) {
    // ttlResolution 0: expiry follows the injected clock, not a cached reading of it.
    super({ max, ttlAutopurge: false, ttlResolution: 0, perf: { now: nowMs } });
  }

  /**
   * Drop the expired entries, unless that was done less than `purgeEveryMs` ago. `now`: the
   * clock's reading if the caller has one (an owner of several caches on one clock reads it once).
   */
  tidy(now = this.nowMs()): void {
    if (now < this.nextPurgeMs) return;
    this.nextPurgeMs = now + this.purgeEveryMs;
    this.purgeStale();
  }
}
