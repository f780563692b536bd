// A fake TurnClock for the TURN client and the relay manager (test/turn/client.test.ts,
// test/turn/relay-manager.test.ts): timers run only when advance() reaches them.
import type { TurnClock } from '../../src/agent/turn/client.js';

export class FakeClock implements TurnClock {
  t = 0;
  private seq = 0;
  private timers = new Map<number, { at: number; fn: () => void }>();
  /** `epoch`: what now() answers before any advance (Unix ms). */
  constructor(private readonly epoch: number) {}
  now(): number {
    return this.epoch + this.t;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = ++this.seq;
    this.timers.set(id, { at: this.t + ms, fn });
    return id;
  }
  clearTimeout(h: unknown): void {
    this.timers.delete(h as number);
  }
  /** Timers set and not yet run or cleared. */
  get pending(): number {
    return this.timers.size;
  }
  /** Run every timer due up to now + ms, in time order, letting promises settle in between. */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      await flush();
      let next: [number, { at: number; fn: () => void }] | undefined;
      for (const e of this.timers) if (e[1].at <= end && (!next || e[1].at < next[1].at)) next = e;
      if (!next) break;
      this.timers.delete(next[0]);
      this.t = next[1].at;
      next[1].fn();
    }
    this.t = end;
    await flush();
  }
}

export const flush = async (): Promise<void> => {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
};
