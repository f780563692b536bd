// Confirmable pushes: a server sends a terminal a message it did not ask for and retransmits it
// until the terminal acknowledges it (devloc-protocol(7), RELIABILITY, "Pushes"). INTRO
// (locatord), MATCH_RESULT (matchd) and every later push go through one `Pusher`.
//
// - One random request ID per push; every copy carries it but is built anew when it is due
//   (`build`): MACed with a new session sequence number, so the terminal's replay window accepts
//   each copy and the terminal answers each, and sent to the terminal's address as known then.
// - `build` may instead say `skip` (this copy cannot be made now, e.g. the terminal has no
//   session; it still counts against the schedule) or `abandon` (the target is gone: stop now).
//   It may answer with a promise (a store lookup); a rejected promise abandons the push.
// - Schedule: the retransmitting client's (`retransmitPlan`, client.ts): copies at 0, t, 3t, 7t
//   and 15t for a first timeout t uniform in [T, 1.5T] (one random draw per push), then the push
//   is abandoned 31t after the first copy if still unacknowledged. A copy whose `build` answers
//   with a promise is sent when it resolves; the next one is timed from then.
// - The acknowledgement names the push by its key (channel ID, matchId, ...) and, when it comes
//   from the wire, must carry the push's request ID (the ack is the push's response). The caller
//   may add its own check (e.g. only the target's session may end its push).
// - Bounded: at most `maxPending` pushes in all and `maxPendingPerTarget` per target; `push`
//   refuses beyond, and callers check `hasRoom` first to answer with a wire code.
// - One timer for all the pushes, not one per push: each waiting push is filed under its due
//   time, rounded up to `tickMs` (10 ms on the real clock, exact on injected timers), and the
//   one timer is set for the earliest; an ack takes the push out of its bucket in O(1).
// - Timers are injected (client.ts `Timers`, with their clock): unit tests run the schedule on a fake clock.
// - Metrics and logs stay with the caller (each push kind keeps its own names): `onCopy` and
//   `onEnd` report every copy and how each push ended.
import { randomFillSync } from 'node:crypto';
import type { Address } from '../wire/addr.js';
import { DEFAULT_RETRANSMIT_TIMEOUT_MS, MAX_RETRANSMIT, REQUEST_ID_BYTES, RETRANSMIT_RANDOM_FACTOR } from '../wire/constants.js';
import type { Timers } from './client.js';
import { unrefTimers } from './client.js';
import type { Timed } from './heap.js';
import { TimerHeap } from './heap.js';

/** What to do with the copy that is due: send these bytes there, skip it, or give up. */
export type PushCopy = { bytes: Buffer; to: Address } | { skip: string } | { abandon: string; error?: Error };

/** How a push ended: acknowledged (and how: 'ack', 'poll', ...) or abandoned (and why). */
export type PushOutcome = { acked: string } | { abandoned: string; error?: Error };

/** A push waiting for its acknowledgement. */
export interface PendingPush<D> {
  readonly key: string;
  /** Whom it goes to (for the per-target bound), e.g. a locator ID in hex. */
  readonly target: string;
  readonly rid: Buffer;
  /** The caller's own data about the push (the session, the request, ...). */
  readonly data: D;
  /** Copies made so far (sent or skipped). */
  readonly copies: number;
}

export interface PushSpec<D> {
  key: string;
  target: string;
  data: D;
  /**
   * Make copy `n` (1 = first) with request ID `rid`: MAC it anew, resolve the current address.
   * `data` is the spec's (so that one function can build every push: no closure per push).
   */
  build: (rid: Buffer, n: number, data: D) => PushCopy | Promise<PushCopy>;
}

export interface PusherOptions<D> {
  send: (bytes: Buffer, to: Address) => void;
  /** T: the first retransmission after a time uniform in [T, 1.5T] (default DEFAULT_RETRANSMIT_TIMEOUT_MS). */
  initialTimeoutMs?: number;
  /** Retransmissions after the first copy (default MAX_RETRANSMIT). */
  maxRetransmit?: number;
  /** Most pushes pending in all, and per target. */
  maxPending?: number;
  maxPendingPerTarget?: number;
  random?: () => number;
  newRid?: () => Buffer;
  timers?: Timers;
  /** Due times are rounded up to this (default 10 ms on the real timers, 1 on injected ones). */
  tickMs?: number;
  /** When given, the first copy is made through it (e.g. setImmediate: after the current reply). */
  defer?: (fn: () => void) => void;
  /** Each copy made: `skipped` says why it was not sent. */
  onCopy?: (p: PendingPush<D>, n: number, skipped?: string) => void;
  /** Each push that ended by an ack or was abandoned (not those dropped by `close`). */
  onEnd?: (p: PendingPush<D>, outcome: PushOutcome) => void;
}

interface Entry<D> extends PendingPush<D> {
  copies: number;
  build: PushSpec<D>['build'];
  /**
   * The first timeout t (drawn once): copy k (0-based) goes at t (2^k - 1) after the first, and
   * the push is given up at t (2^(maxRetransmit+1) - 1), each rounded (client.ts retransmitPlan's
   * schedule, computed when due instead of kept in arrays per push).
   */
  firstTimeoutMs: number;
  /** While waiting for its next copy: the bucket it is filed in, and where. */
  bucket: Bucket<D> | undefined;
  pos: number;
}

/** The pushes due at one time (a multiple of tickMs), filed in the heap of due times. */
interface Bucket<D> extends Timed {
  entries: Entry<D>[];
}

/**
 * Random request IDs cut from one fill of RID_POOL_IDS (8 KiB, Node's own pool size): a
 * randomBytes() call per push cost about as much as the push's HMAC (the call, not the
 * randomness), and a fill per 32 IDs was still 2.6% of locatord's time pushing presence. A
 * pending push keeps its pool alive: at most the IDs made during one push lifetime (~47 s) are
 * held, 8 bytes each, whatever the pool size; a lone push pending holds 8 KiB.
 */
const RID_POOL_IDS = 1024;
let ridPool = Buffer.alloc(0);
let ridUsed = 0;

export function pooledRid(): Buffer {
  if (ridUsed + REQUEST_ID_BYTES > ridPool.length) {
    ridPool = randomFillSync(Buffer.allocUnsafeSlow(RID_POOL_IDS * REQUEST_ID_BYTES));
    ridUsed = 0;
  }
  const rid = ridPool.subarray(ridUsed, ridUsed + REQUEST_ID_BYTES);
  ridUsed += REQUEST_ID_BYTES;
  return rid;
}

export type PushRefusal = 'closed' | 'full' | 'duplicate';

export class Pusher<D = undefined> {
  private readonly pending = new Map<string, Entry<D>>();
  private readonly perTarget = new Map<string, number>();
  private readonly initialTimeoutMs: number;
  private readonly maxRetransmit: number;
  private readonly maxPending: number;
  private readonly maxPendingPerTarget: number;
  private readonly random: () => number;
  private readonly newRid: () => Buffer;
  private readonly timers: Timers;
  private readonly now: () => number;
  private readonly tickMs: number;
  /** Waiting pushes by due time (a multiple of tickMs), those times in a heap, and the one timer. */
  private readonly buckets = new Map<number, Bucket<D>>();
  private readonly dueTimes = new TimerHeap<Bucket<D>>();
  private timer: unknown;
  private timerAt = Infinity;
  private closed = false;

  constructor(private readonly o: PusherOptions<D>) {
    this.initialTimeoutMs = o.initialTimeoutMs ?? DEFAULT_RETRANSMIT_TIMEOUT_MS;
    this.maxRetransmit = o.maxRetransmit ?? MAX_RETRANSMIT;
    this.maxPending = o.maxPending ?? 100_000;
    this.maxPendingPerTarget = o.maxPendingPerTarget ?? 16;
    this.random = o.random ?? Math.random;
    this.newRid = o.newRid ?? pooledRid;
    this.timers = o.timers ?? unrefTimers;
    const timers = this.timers;
    this.now = timers.nowMs ? () => timers.nowMs!() : () => performance.now();
    this.tickMs = o.tickMs ?? (o.timers ? 1 : 10);
  }

  /** Pushes pending. */
  get size(): number {
    return this.pending.size;
  }

  /** Longest a push stays pending: the whole schedule at its upper random bound. */
  get lifetimeMs(): number {
    return Math.ceil(this.initialTimeoutMs * RETRANSMIT_RANDOM_FACTOR * (2 ** (this.maxRetransmit + 1) - 1));
  }

  /** Whether one more push to `target` is within the bounds. */
  hasRoom(target: string): boolean {
    return this.pending.size < this.maxPending && (this.perTarget.get(target) ?? 0) < this.maxPendingPerTarget;
  }

  isPending(key: string): boolean {
    return this.pending.has(key);
  }

  get(key: string): PendingPush<D> | undefined {
    return this.pending.get(key);
  }

  /** Start a push: the first copy now (or through `defer`), then until acknowledged. */
  push(spec: PushSpec<D>): PushRefusal | null {
    if (this.closed) return 'closed';
    if (this.pending.has(spec.key)) return 'duplicate';
    if (!this.hasRoom(spec.target)) return 'full';
    const e: Entry<D> = {
      key: spec.key, target: spec.target, data: spec.data, build: spec.build, rid: this.newRid(), copies: 0,
      firstTimeoutMs: this.initialTimeoutMs * (1 + this.random() * (RETRANSMIT_RANDOM_FACTOR - 1)), bucket: undefined, pos: 0,
    };
    this.pending.set(e.key, e);
    this.perTarget.set(e.target, (this.perTarget.get(e.target) ?? 0) + 1);
    if (this.o.defer) this.o.defer(() => this.due(e));
    else this.due(e);
    return null;
  }

  /**
   * The terminal has what `key` pushes: end the push. `rid`, for an ack from the wire, must be
   * the push's request ID; `accept` may refuse it (e.g. not the target's session). False when
   * nothing pending was ended.
   */
  ack(key: string, how: string, rid?: Uint8Array, accept?: (p: PendingPush<D>) => boolean): boolean {
    const e = this.pending.get(key);
    if (!e) return false;
    if (rid !== undefined && !e.rid.equals(rid)) return false;
    if (accept && !accept(e)) return false;
    this.end(e, { acked: how });
    return true;
  }

  /** Stop every push, without reporting them as ended. */
  close(): void {
    this.closed = true;
    for (const e of [...this.pending.values()]) this.end(e);
    this.idle();
  }

  /** File `e` to be due in `ms`, and set the timer if it is now the earliest. */
  private schedule(e: Entry<D>, ms: number): void {
    const at = Math.ceil((this.now() + ms) / this.tickMs) * this.tickMs;
    let b = this.buckets.get(at);
    if (!b) {
      this.buckets.set(at, (b = { eventAtMs: at, seq: 0, heapIndex: -1, entries: [] }));
      this.dueTimes.push(b);
    }
    e.bucket = b;
    e.pos = b.entries.push(e) - 1;
    if (at < this.timerAt) this.arm();
  }

  private unschedule(e: Entry<D>): void {
    const b = e.bucket?.entries;
    if (!b) return;
    e.bucket = undefined;
    const last = b.pop()!;
    if (last !== e) {
      b[e.pos] = last;
      last.pos = e.pos;
    }
  }

  /** The timer for the earliest bucket (none when nothing waits). */
  private arm(): void {
    if (this.timer !== undefined) this.timers.clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = Infinity;
    // Buckets emptied by acks wake nobody: dropped here rather than fired.
    for (let b = this.dueTimes.peek(); b && b.entries.length === 0; b = this.dueTimes.peek()) {
      this.dueTimes.pop();
      this.buckets.delete(b.eventAtMs);
    }
    const at = this.dueTimes.peek()?.eventAtMs;
    if (at === undefined) return;
    this.timerAt = at;
    this.timer = this.timers.setTimeout(() => this.fire(), Math.max(0, at - this.now()));
  }

  /** Every bucket due by now: its pushes make their next copies. */
  private fire(): void {
    this.timer = undefined;
    // No timer is set while the due buckets are worked through (schedule() would set one): once after.
    this.timerAt = -Infinity;
    const now = this.now();
    while ((this.dueTimes.peek()?.eventAtMs ?? Infinity) <= now) {
      const b = this.dueTimes.pop()!;
      this.buckets.delete(b.eventAtMs);
      // Detached first: a copy made below may end (unschedule) another push of this bucket.
      for (const e of b.entries) e.bucket = undefined;
      for (const e of b.entries) this.due(e);
    }
    this.arm();
  }

  /**
   * Nothing waits any more and the pusher is closed: no timer, no empty buckets left behind. While
   * open, an emptied pusher keeps its timer: it fires once, finds its buckets empty and sets no
   * other. Clearing it whenever the last push was acknowledged made a setTimeout and a
   * clearTimeout per push whenever pushes are acked faster than they come (most of the time
   * below saturation), 4% of locatord's JavaScript per change (bench/presence-micro.ts).
   */
  private idle(): void {
    if (this.pending.size > 0 || !this.closed) return;
    if (this.timer !== undefined) this.timers.clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = Infinity;
    this.buckets.clear();
    this.dueTimes.clear();
  }

  /** The next copy (or the end of the last one's wait) is due. */
  private due(e: Entry<D>): void {
    if (this.pending.get(e.key) !== e) return;
    if (e.copies > this.maxRetransmit) {
      this.end(e, { abandoned: 'no acknowledgement' });
      return;
    }
    let c: PushCopy | Promise<PushCopy>;
    try {
      c = e.build(e.rid, e.copies + 1, e.data);
    } catch (err) {
      c = { abandon: 'error', error: err as Error };
    }
    // The reason is a fixed word (callers count by it); the error goes along for the log.
    if (c instanceof Promise) c.then((x) => this.made(e, x), (err: Error) => this.made(e, { abandon: 'error', error: err }));
    else this.made(e, c);
  }

  private made(e: Entry<D>, c: PushCopy): void {
    // Acknowledged, abandoned or closed while the copy was being made.
    if (this.pending.get(e.key) !== e) return;
    if ('abandon' in c) {
      this.end(e, c.error ? { abandoned: c.abandon, error: c.error } : { abandoned: c.abandon });
      return;
    }
    e.copies++;
    if ('bytes' in c) {
      this.o.send(c.bytes, c.to);
      this.o.onCopy?.(e, e.copies);
    } else this.o.onCopy?.(e, e.copies, c.skip);
    // A hook may have ended the push.
    if (this.pending.get(e.key) !== e) return;
    // The wait after copy n (1-based): from its send time to the next copy's (or the give-up).
    const t = e.firstTimeoutMs;
    this.schedule(e, Math.round(t * (2 ** e.copies - 1)) - Math.round(t * (2 ** (e.copies - 1) - 1)));
  }

  private end(e: Entry<D>, outcome?: PushOutcome): void {
    this.unschedule(e);
    this.pending.delete(e.key);
    const n = (this.perTarget.get(e.target) ?? 1) - 1;
    if (n > 0) this.perTarget.set(e.target, n);
    else this.perTarget.delete(e.target);
    this.idle();
    if (outcome) this.o.onEnd?.(e, outcome);
  }
}
