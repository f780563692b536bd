// Latency histogram for the load generators: fixed memory whatever the sample count, mergeable
// across worker processes (toJSON / fromJSON over IPC), percentiles within 1%. And the median the
// sections take over their rounds.
//
// Values are recorded in milliseconds; internally in log-spaced buckets of 1% width from 1 µs
// (bucket k holds values up to 1.01^k µs), so p50/p90/p99 come back as a bucket's upper bound:
// never below the true value, at most 1% above it. min, max and mean are exact.

const GROWTH = 1.01;
const LOG_GROWTH = Math.log(GROWTH);
/** 1 µs .. ~10^5 s. */
const BUCKETS = 2600;

/** The median (the mean of the two middle values for an even count); NaN for none. */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export interface HistogramJSON {
  counts: [number, number][];
  count: number;
  sum: number;
  min: number;
  max: number;
}

export interface LatencySummary {
  count: number;
  meanMs: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
}

export class Histogram {
  private readonly counts = new Float64Array(BUCKETS);
  count = 0;
  sum = 0;
  min = Infinity;
  max = 0;

  /** Record one value in milliseconds (negative and NaN values are ignored). */
  record(ms: number): void {
    if (!(ms >= 0)) return;
    const us = ms * 1000;
    const k = us <= 1 ? 0 : Math.min(BUCKETS - 1, Math.ceil(Math.log(us) / LOG_GROWTH - 1e-9));
    this.counts[k]!++;
    this.count++;
    this.sum += ms;
    if (ms < this.min) this.min = ms;
    if (ms > this.max) this.max = ms;
  }

  /** Value at quantile q (0..1), ms: the upper bound of the bucket holding it, capped at max. */
  quantile(q: number): number {
    if (this.count === 0) return 0;
    if (q <= 0) return this.min;
    const rank = Math.max(1, Math.ceil(q * this.count));
    let seen = 0;
    for (let k = 0; k < BUCKETS; k++) {
      seen += this.counts[k]!;
      if (seen >= rank) return Math.min(this.max, Math.max(this.min, GROWTH ** k / 1000));
    }
    return this.max;
  }

  merge(other: Histogram): this {
    for (let k = 0; k < BUCKETS; k++) this.counts[k]! += other.counts[k]!;
    this.count += other.count;
    this.sum += other.sum;
    this.min = Math.min(this.min, other.min);
    this.max = Math.max(this.max, other.max);
    return this;
  }

  summary(): LatencySummary {
    return {
      count: this.count,
      meanMs: this.count ? this.sum / this.count : 0,
      p50Ms: this.quantile(0.5),
      p90Ms: this.quantile(0.9),
      p99Ms: this.quantile(0.99),
      maxMs: this.count ? this.max : 0,
    };
  }

  toJSON(): HistogramJSON {
    const counts: [number, number][] = [];
    for (let k = 0; k < BUCKETS; k++) if (this.counts[k]) counts.push([k, this.counts[k]!]);
    return { counts, count: this.count, sum: this.sum, min: this.min === Infinity ? 0 : this.min, max: this.max };
  }

  static fromJSON(j: HistogramJSON): Histogram {
    const h = new Histogram();
    for (const [k, n] of j.counts) if (k >= 0 && k < BUCKETS) h.counts[k] = n;
    h.count = j.count;
    h.sum = j.sum;
    h.min = j.count ? j.min : Infinity;
    h.max = j.max;
    return h;
  }
}
