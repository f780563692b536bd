// Open-loop pacing for the load generators: request k of a step is due at start + k / rate,
// whatever happened to the requests before it (a closed loop would slow down with the server
// and hide its queueing). The generator calls `take(now)` from a ~1 ms timer and sends what is
// due; when its event loop falls behind, requests go out late and in bursts, and `lateMs` says
// by how much, so a generator that cannot keep up is visible in the results rather than
// silently offering less.

export interface PacerTake {
  /** Requests to send now. */
  count: number;
  /** How late the first of them is, ms (0 when on time). */
  lateMs: number;
}

export class Pacer {
  /** Requests handed out so far. */
  sent = 0;
  /** Requests handed out more than `lateThresholdMs` after they were due. */
  late = 0;
  maxLateMs = 0;

  constructor(
    readonly ratePerS: number,
    readonly startMs: number,
    /** Requests due after this are not handed out (the end of the step). */
    readonly endMs: number,
    readonly lateThresholdMs = 5,
  ) {
    if (!(ratePerS > 0)) throw new RangeError('rate must be above 0');
  }

  /** When request k (0-based) is due. */
  dueAt(k: number): number {
    return this.startMs + (k * 1000) / this.ratePerS;
  }

  /** Requests due by `now` (and before the end) not handed out yet. */
  take(now: number): PacerTake {
    const horizon = Math.min(now, this.endMs);
    // Request k is due when dueAt(k) <= horizon, i.e. k <= (horizon - start) * rate / 1000.
    const dueCount = horizon < this.startMs ? 0 : Math.floor(((horizon - this.startMs) * this.ratePerS) / 1000 + 1e-9) + 1;
    const total = Math.min(dueCount, this.total);
    const count = Math.max(0, total - this.sent);
    if (count === 0) return { count: 0, lateMs: 0 };
    const lateMs = Math.max(0, now - this.dueAt(this.sent));
    for (let k = this.sent; k < total; k++) {
      const l = now - this.dueAt(k);
      if (l > this.lateThresholdMs) this.late++;
      if (l > this.maxLateMs) this.maxLateMs = l;
    }
    this.sent = total;
    return { count, lateMs };
  }

  /** Requests due within [start, end): what the step offers. */
  get total(): number {
    return Math.ceil(((this.endMs - this.startMs) * this.ratePerS) / 1000 - 1e-9);
  }
}
