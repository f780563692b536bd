// Per-source token buckets, bounded in number (LRU): a flood from many spoofed sources evicts
// old buckets instead of growing memory. Sources are keyed by IP (not port), so a terminal
// cannot multiply its budget by opening sockets.
import { LRUCache } from 'lru-cache';

export interface RateLimitOptions {
  /** Sustained requests per second per source. 0 disables limiting. */
  ratePerS: number;
  /** Burst size. */
  burst: number;
  /** Most sources tracked at once. */
  maxSources?: number;
  /** Milliseconds clock; injected in tests. */
  now?: () => number;
}

interface Bucket {
  tokens: number;
  at: number;
}

export class RateLimiter {
  private readonly buckets: LRUCache<string, Bucket>;
  private readonly now: () => number;
  constructor(private opts: RateLimitOptions) {
    this.buckets = new LRUCache({ max: opts.maxSources ?? 65_536 });
    this.now = opts.now ?? Date.now;
  }

  setRate(ratePerS: number, burst: number): void {
    this.opts = { ...this.opts, ratePerS, burst };
  }

  /** Take `cost` tokens for `source`; false when the source is over its limit. */
  take(source: string, cost = 1): boolean {
    if (this.opts.ratePerS <= 0) return true;
    const now = this.now();
    let b = this.buckets.get(source);
    if (!b) {
      b = { tokens: this.opts.burst, at: now };
      this.buckets.set(source, b);
    } else {
      b.tokens = Math.min(this.opts.burst, b.tokens + ((now - b.at) / 1000) * this.opts.ratePerS);
      b.at = now;
    }
    if (b.tokens < cost) return false;
    b.tokens -= cost;
    return true;
  }

  /** Milliseconds until `cost` tokens are available for `source`. */
  retryAfterMs(source: string, cost = 1): number {
    const b = this.buckets.get(source);
    if (!b || this.opts.ratePerS <= 0) return 0;
    return Math.max(0, Math.ceil(((cost - b.tokens) / this.opts.ratePerS) * 1000));
  }

  get size(): number {
    return this.buckets.size;
  }
}
