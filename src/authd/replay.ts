// Replay cache for AUTH_REQUESTs: the (device ID, nonce) pairs of verified requests, each kept
// until its timeMs leaves the clock-skew window (after that the request is refused as
// CLOCK_SKEW anyway). Bounded: at most `max` entries (LRU). If the bound forces out an entry
// that has not expired yet, its replay could no longer be recognised, so the cache remembers the
// newest timeMs it ever had to forget and from then on serves only requests younger than that
// (older ones get TRY_LATER): under a flood big enough to overflow the cache, some honest
// requests may have to be retried, but no replay is ever served.
import { LRUCache } from 'lru-cache';

export type ReplayVerdict = 'fresh' | 'replay' | 'saturated';

interface Entry {
  timeMs: number;
  expiresAt: number;
}

export class ReplayCache {
  private readonly entries: LRUCache<string, Entry>;
  /** Requests with timeMs at or below this are not served (see above). */
  private floorTimeMs = -Infinity;
  /** Unexpired entries forced out by the bound (a metric). */
  evictedEarly = 0;

  constructor(max: number, private readonly now: () => number = Date.now) {
    this.entries = new LRUCache<string, Entry>({
      max,
      dispose: (v, _k, reason) => {
        if (reason === 'evict' && v.expiresAt > this.now()) {
          this.evictedEarly++;
          if (v.timeMs > this.floorTimeMs) this.floorTimeMs = v.timeMs;
        }
      },
    });
  }

  get size(): number {
    return this.entries.size;
  }

  /**
   * Check and remember one verified request. `expiresAt` (ms, our clock) is when a replay of it
   * would be refused for its timestamp anyway.
   */
  check(deviceId: string, nonce: Uint8Array, timeMs: number, expiresAt: number): ReplayVerdict {
    const key = `${Buffer.from(nonce).toString('base64')}${deviceId}`;
    const old = this.entries.get(key);
    if (old && old.expiresAt > this.now()) return 'replay';
    if (timeMs <= this.floorTimeMs) return 'saturated';
    this.entries.set(key, { timeMs, expiresAt });
    return 'fresh';
  }
}
