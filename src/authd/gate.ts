// The per-device checks of an AUTH_REQUEST whose proof verified (server.ts steps 7-9): the
// device's own budget (--device-rate), the clock (--clock-skew), the replay cache, and the
// cloned-identity watch. Their state is per device, and a device's requests may reach any worker
// of `devloc-authd --workers N` (the kernel spreads one socket's datagrams over them), so that
// state must be one: in one process it is a `DeviceGate` in that process; with workers it is a
// `DeviceGate` in the primary, which every worker asks through the workers' channel
// (src/common/workers.ts: `RemoteGate`, after the public-key work, so the primary does no crypto). Budgets and replays
// hold across workers exactly as in one process. The questions a worker has after one turn of its
// event loop (the datagrams it read at one wake-up) go in one message (the channel's `batch`),
// answered by one: a message per request cost each side a pipe write, a wake-up of the other process and a JSON parse, which
// under load was more CPU than the request's Ed25519 signature (bench/authd.ts).
//
// A request retransmitted by its terminal (same request ID, same source) to another worker than
// the one that answered it first is not in that worker's response cache: with workers the gate
// tells such a copy ('duplicate': same device, nonce, request ID and source address) from a
// replay, and it is answered again (new tickets, sealed to the same requester, sent to the same
// address, as the response cache would) instead of REPLAY. A copy from any other address is a
// REPLAY, as in one process.
import type { GateQuestion, GateVerdict, WorkerChannel } from '../common/workers.js';
import { toPrimary } from '../common/workers.js';
import { RateLimiter } from '../net/ratelimit.js';
import { ErrorCode } from '../wire/errors.js';
import { IdentityConflicts } from './conflicts.js';
import { ReplayCache } from './replay.js';

export interface GateQuery {
  deviceId: string;
  /** The request's nonce, hex. */
  nonce: string;
  timeMs: number;
  /** The request ID, hex (tells a retransmission from a replay, with workers). */
  rid: string;
  /** The source, as text (the cloned-identity watch). */
  from: string;
}

// Its shape is part of the workers' messages (src/common/workers.ts), which cross the channel.
export type { GateVerdict };

export interface Gate {
  admit(q: GateQuery): GateVerdict | Promise<GateVerdict>;
  /** Replay-cache entries (a metric; unknown for a remote gate). */
  readonly replayEntries: number;
  readonly replayEvictedEarly: number;
}

export interface GatePolicy {
  clockSkewS: number;
  deviceRatePerMin: number;
}

export interface DeviceGateOptions {
  replayCacheMax?: number;
  /** ms clock; when given, also the budgets' clock (tests). */
  now?: () => number;
  /** Answer a copy of an admitted request (same request ID) instead of REPLAY (workers). */
  serveDuplicates?: boolean;
}

export class DeviceGate implements Gate {
  readonly replay: ReplayCache;
  private readonly conflicts: IdentityConflicts;
  private deviceLimiter: RateLimiter | undefined;
  private readonly now: () => number;
  private readonly injectedClock: boolean;
  private policy: GatePolicy;

  constructor(policy: GatePolicy, private readonly o: DeviceGateOptions = {}) {
    this.injectedClock = o.now !== undefined;
    this.now = o.now ?? Date.now;
    this.replay = new ReplayCache(o.replayCacheMax ?? 1_000_000, this.now);
    this.conflicts = new IdentityConflicts(this.now);
    this.policy = policy;
    this.setPolicy(policy);
  }

  get replayEntries(): number {
    return this.replay.size;
  }

  get replayEvictedEarly(): number {
    return this.replay.evictedEarly;
  }

  setPolicy(p: GatePolicy): void {
    this.policy = p;
    const clock = this.injectedClock ? { now: this.now } : {};
    if (p.deviceRatePerMin <= 0) this.deviceLimiter = undefined;
    else if (this.deviceLimiter) this.deviceLimiter.setRate(p.deviceRatePerMin / 60, p.deviceRatePerMin);
    else this.deviceLimiter = new RateLimiter({ ratePerS: p.deviceRatePerMin / 60, burst: p.deviceRatePerMin, maxSources: 1_000_000, ...clock });
  }

  admit(q: GateQuery): GateVerdict {
    const { deviceId } = q;
    const tag = this.o.serveDuplicates ? `${q.rid}@${q.from}` : undefined;
    const nonce = Buffer.from(q.nonce, 'hex');
    // A copy of a request admitted already (see above): answered again, charged nothing.
    if (tag !== undefined && this.replay.isCopy(deviceId, nonce, tag)) return { ok: true };
    // 7. The device's own budget: one device cannot spend --max-rate or the replay cache of others.
    if (this.deviceLimiter && !this.deviceLimiter.take(deviceId)) {
      const retryAfterMs = Math.max(1000, this.deviceLimiter.retryAfterMs(deviceId));
      return { ok: false, code: ErrorCode.RATE_LIMITED, message: 'too many authentications of this device', retryAfterMs, logReason: 'device over --device-rate' };
    }
    // 8. Clock.
    const now = this.now();
    const skewMs = this.policy.clockSkewS * 1000;
    const drift = q.timeMs - now;
    if (Math.abs(drift) > skewMs) {
      return { ok: false, code: ErrorCode.CLOCK_SKEW, message: `timeMs is ${Math.round(Math.abs(drift) / 1000)} s ${drift > 0 ? 'ahead of' : 'behind'} authd's clock (allowed ${this.policy.clockSkewS} s)` };
    }
    // 9. Replay.
    const verdict = this.replay.check(deviceId, nonce, q.timeMs, q.timeMs + skewMs + 1000, tag);
    if (verdict === 'replay') return { ok: false, code: ErrorCode.REPLAY, message: 'request already served' };
    if (verdict === 'saturated') return { ok: false, code: ErrorCode.TRY_LATER, message: 'too many recent requests of this device: send a new request' };
    // A cloned identity: the device flipping between two addresses (counted, logged, served).
    const conflict = verdict === 'duplicate' ? null : this.conflicts.note(deviceId, q.from);
    return conflict ? { ok: true, conflict } : { ok: true };
  }
}

// ---- across the cluster channel ---------------------------------------------------------------

/** In the primary: answer a worker's batch of gate questions. */
export function serveGate(gate: DeviceGate, from: WorkerChannel, b: GateQuestion[]): void {
  const a = b.map(([id, deviceId, nonce, timeMs, rid, from]): [number, GateVerdict] => [id, gate.admit({ deviceId, nonce, timeMs, rid, from })]);
  from.send({ k: 'gate-answer', a });
}

/** How long a worker waits for the primary before answering TRY_LATER (it is never expected). */
const REMOTE_TIMEOUT_MS = 5000;

const UNAVAILABLE: GateVerdict = { ok: false, code: ErrorCode.TRY_LATER, message: 'authd primary process unavailable', retryAfterMs: 1000 };

/** In a worker: the primary's gate. */
export class RemoteGate implements Gate {
  private nextId = 1;
  private readonly waiting = new Map<number, (v: GateVerdict) => void>();
  readonly replayEntries = 0;
  readonly replayEvictedEarly = 0;

  constructor(private readonly channel: WorkerChannel = toPrimary()) {
    channel.on('gate-answer', (m) => {
      for (const [id, v] of m.a) this.settle(id, v);
    });
  }

  admit(q: GateQuery): Promise<GateVerdict> {
    const id = this.nextId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.settle(id, UNAVAILABLE), REMOTE_TIMEOUT_MS);
      timer.unref();
      this.waiting.set(id, (v) => {
        clearTimeout(timer);
        resolve(v);
      });
      // The questions of one event-loop turn go in one message (the channel's batch).
      this.channel.batch('gate-ask', [id, q.deviceId, q.nonce, q.timeMs, q.rid, q.from], (unsent) => {
        for (const [u] of unsent) this.settle(u, UNAVAILABLE);
      });
    });
  }

  private settle(id: number, v: GateVerdict): void {
    const resolve = this.waiting.get(id);
    if (!resolve) return;
    this.waiting.delete(id);
    resolve(v);
  }
}
