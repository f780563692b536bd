// A virtual clock for a whole process: Date.now, performance.now and the global timers run on
// virtual time, which jumps from one due timer to the next, while sockets stay real. Between two
// timers the process's pending I/O (loopback datagrams, their answers) is let through for a few
// event-loop turns of real time, so an exchange on 127.0.0.1 completes "instantly" in virtual
// time. Used by the agent's 24-hour run (agent-day.ts): a day of refreshes, ticket renewals and
// sweeps in well under a minute of real time. Not for src/: a bench harness only.

interface VirtualTimer {
  id: number;
  dueMs: number;
  /** Order among timers due at the same time: the order they were set, as Node does. */
  seq: number;
  /** The delay it was set with (refresh() starts it again from now). */
  delayMs: number;
  intervalMs: number | undefined;
  fn: (...args: unknown[]) => void;
  args: unknown[];
  ref: boolean;
}

export interface VirtualClock {
  /** Virtual milliseconds since the epoch (started at the real time of install). */
  now(): number;
  /**
   * Run timers in due order until virtual time reaches `targetMs` (absolute). `settleTurns`
   * event-loop turns of real time are given to I/O after each timer (default 4).
   */
  runUntil(targetMs: number, settleTurns?: number): Promise<void>;
  /** Timers fired so far, and how many are pending. */
  readonly fired: number;
  readonly pending: number;
  /** Errors thrown by timer callbacks (kept, not rethrown: a bench reports them). */
  readonly errors: Error[];
  /** Put the real functions back. */
  uninstall(): void;
}

/** Replace the global clock and timers of this process with virtual ones. */
export function installVirtualClock(): VirtualClock {
  const real = {
    setTimeout: globalThis.setTimeout, clearTimeout: globalThis.clearTimeout,
    setInterval: globalThis.setInterval, clearInterval: globalThis.clearInterval,
    setImmediate: globalThis.setImmediate, dateNow: Date.now, perfNow: performance.now.bind(performance),
  };
  const perfOffset = real.dateNow() - real.perfNow();
  let nowMs = real.dateNow();
  let nextId = 1;
  let seq = 0;
  let fired = 0;
  const errors: Error[] = [];
  const timers = new Map<number, VirtualTimer>();

  // The object Node's timers return, enough of it for code that calls unref()/refresh()/hasRef().
  class Handle {
    constructor(readonly id: number) {}
    ref(): this {
      const t = timers.get(this.id);
      if (t) t.ref = true;
      return this;
    }
    unref(): this {
      const t = timers.get(this.id);
      if (t) t.ref = false;
      return this;
    }
    hasRef(): boolean {
      return timers.get(this.id)?.ref ?? false;
    }
    refresh(): this {
      const t = timers.get(this.id);
      if (t) {
        t.dueMs = nowMs + t.delayMs;
        t.seq = seq++;
      }
      return this;
    }
    close(): this {
      timers.delete(this.id);
      return this;
    }
    [Symbol.toPrimitive](): number {
      return this.id;
    }
  }
  const schedule = (fn: (...a: unknown[]) => void, ms: unknown, args: unknown[], repeat: boolean): Handle => {
    const delay = Math.max(1, Number(ms) || 0);
    const id = nextId++;
    timers.set(id, { id, dueMs: nowMs + delay, seq: seq++, delayMs: delay, intervalMs: repeat ? delay : undefined, fn, args, ref: true });
    return new Handle(id);
  };
  const clear = (h: unknown): void => {
    if (h instanceof Handle) timers.delete(h.id);
    else if (typeof h === 'number') timers.delete(h);
  };
  const g = globalThis as unknown as Record<string, unknown>;
  g['setTimeout'] = (fn: (...a: unknown[]) => void, ms?: unknown, ...args: unknown[]) => schedule(fn, ms, args, false);
  g['setInterval'] = (fn: (...a: unknown[]) => void, ms?: unknown, ...args: unknown[]) => schedule(fn, ms, args, true);
  g['clearTimeout'] = clear;
  g['clearInterval'] = clear;
  Date.now = () => nowMs;
  performance.now = () => nowMs - perfOffset;

  const settle = async (turns: number): Promise<void> => {
    for (let i = 0; i < turns; i++) await new Promise<void>((r) => real.setImmediate(r));
  };
  const earliest = (): VirtualTimer | undefined => {
    let best: VirtualTimer | undefined;
    for (const t of timers.values()) if (!best || t.dueMs < best.dueMs || (t.dueMs === best.dueMs && t.seq < best.seq)) best = t;
    return best;
  };

  return {
    now: () => nowMs,
    get fired() {
      return fired;
    },
    get pending() {
      return timers.size;
    },
    errors,
    async runUntil(targetMs, settleTurns = 4) {
      for (;;) {
        await settle(settleTurns);
        const t = earliest();
        if (!t || t.dueMs > targetMs) {
          nowMs = Math.max(nowMs, targetMs);
          return;
        }
        nowMs = Math.max(nowMs, t.dueMs);
        if (t.intervalMs !== undefined) {
          t.dueMs = nowMs + t.intervalMs;
          t.seq = seq++;
        } else timers.delete(t.id);
        fired++;
        try {
          t.fn(...t.args);
        } catch (err) {
          errors.push(err as Error);
        }
      }
    },
    uninstall() {
      g['setTimeout'] = real.setTimeout;
      g['setInterval'] = real.setInterval;
      g['clearTimeout'] = real.clearTimeout;
      g['clearInterval'] = real.clearInterval;
      Date.now = real.dateNow;
      performance.now = real.perfNow;
    },
  };
}
