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
  /** Milliseconds clock; injected in tests. Default: monotonic (performance.now). */
  now?: () => number;
}

interface Bucket {
  tokens: number;
  at: number;
}

export class RateLimiter {
  private readonly buckets: LRUCache<string, Bucket>;
  /** Buckets shared by every source (see takeShared): kept apart, so no flood of sources evicts them. */
  private readonly shared = new Map<string, Bucket>();
  private readonly now: () => number;
  constructor(private opts: RateLimitOptions) {
    this.buckets = new LRUCache({ max: opts.maxSources ?? 65_536 });
    // Monotonic: with the wall clock, a step back (NTP, an admin) would drain every bucket
    // (negative refill) and lock honest sources out for as long as the step.
    this.now = opts.now ?? (() => performance.now());
  }

  /** Tokens in `b` at `now` (refilled since it was last charged; time never runs backwards). */
  private level(b: Bucket, now: number): number {
    return Math.min(this.opts.burst, b.tokens + (Math.max(0, now - b.at) / 1000) * this.opts.ratePerS);
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
      b.tokens = this.level(b, now);
      b.at = now;
    }
    if (b.tokens < cost) return false;
    b.tokens -= cost;
    return true;
  }

  /**
   * Take one token from the bucket `key` shared by all sources, `factor` times the per-source
   * rate and burst (the server's budget for datagrams that prove nothing: a forged source can
   * drain it, but for everyone at once, never for one victim). False when it is empty.
   */
  takeShared(key: string, factor: number): boolean {
    if (this.opts.ratePerS <= 0) return true;
    const now = this.now();
    const burst = this.opts.burst * factor;
    let b = this.shared.get(key);
    if (!b) {
      b = { tokens: burst, at: now };
      this.shared.set(key, b);
    } else {
      b.tokens = Math.min(burst, b.tokens + (Math.max(0, now - b.at) / 1000) * this.opts.ratePerS * factor);
      b.at = now;
    }
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  /** Milliseconds until `cost` tokens are available for `source`. */
  retryAfterMs(source: string, cost = 1): number {
    const b = this.buckets.get(source);
    if (!b || this.opts.ratePerS <= 0) return 0;
    return Math.max(0, Math.ceil(((cost - this.level(b, this.now())) / this.opts.ratePerS) * 1000));
  }

  get size(): number {
    return this.buckets.size;
  }
}
