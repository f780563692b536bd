// Request/response over UDP with retransmission (CoAP-style: first timeout uniform in
// [T, 1.5T], doubling, at most 4 retransmissions, and an overall deadline). Answers are matched by
// request ID and by a caller check (e.g. the session MAC); late, duplicate and forged answers
// are ignored. Datagrams that answer nothing (server pushes such as PROBE) go to `onPush`.
// An ADDR_CHALLENGE in place of an answer (devloc-protocol(7), ADDRESS VALIDATION) is handled
// here, for every caller: if the caller's check accepts it (the session MAC), its token is echoed
// in ADDR_PROOF to the server, the request sent again at once and its retransmission schedule
// started afresh (MAX_CHALLENGES times at most).
// Imports only node:dgram and the wire codec: the agent stays tiny.
import dgram from 'node:dgram';
import { randomBytes } from 'node:crypto';
import type { Address } from '../wire/addr.js';
import { normaliseIp } from '../wire/addr.js';
import { DEFAULT_RETRANSMIT_TIMEOUT_MS, MAX_DATAGRAM, MAX_RETRANSMIT, REQUEST_ID_BYTES, RETRANSMIT_RANDOM_FACTOR } from '../wire/constants.js';
import type { Message, MessageOf } from '../wire/envelope.js';
import { decodeDatagram, encodeDatagram } from '../wire/envelope.js';
import { DevlocError, ErrorCode } from '../wire/errors.js';
import { literalLookup } from './lookup.js';

export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  /** The clock these timers run on, in ms (push.ts schedules by it; default performance.now). */
  nowMs?(): number;
}
/** node's own timers (the default of every Timers option but the Pusher's): a pending one keeps the process alive. */
export const nodeTimers: Timers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};
/**
 * node's timers unref'd, on performance.now (the Pusher's default, push.ts): a daemon's pushes
 * still waiting for their acks never keep it from exiting.
 */
export const unrefTimers: Timers = {
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms);
    t.unref();
    return t;
  },
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
  nowMs: () => performance.now(),
};

export interface RetransmitPolicy {
  /** T: first timeout is uniform in [T, 1.5T]. */
  initialTimeoutMs: number;
  maxRetransmit: number;
  /** Give up after this long whatever the schedule says. */
  deadlineMs: number;
}

export const defaultPolicy: RetransmitPolicy = {
  initialTimeoutMs: DEFAULT_RETRANSMIT_TIMEOUT_MS,
  maxRetransmit: MAX_RETRANSMIT,
  deadlineMs: 45_000,
};

/** The send times (ms after the first send) of a request's retransmissions. Pure, for tests. */
export function retransmitSchedule(policy: RetransmitPolicy, random: () => number): number[] {
  return retransmitPlan(policy, random).retransmitAt;
}

export interface RetransmitPlan {
  /** Send times (ms after the first send) of the retransmissions. */
  retransmitAt: number[];
  /** When to give up (ms after the first send). */
  giveUpAt: number;
}

/**
 * The whole schedule of one request from a single random draw: retransmissions at T', 3T',
 * 7T', ... (T' uniform in [T, 1.5T], doubling), and giving up when the last transmission's own
 * timeout ends (T' * (2^(n+1) - 1) after n retransmissions), or at the deadline if sooner.
 */
export function retransmitPlan(policy: RetransmitPolicy, random: () => number): RetransmitPlan {
  let timeout = policy.initialTimeoutMs * (1 + random() * (RETRANSMIT_RANDOM_FACTOR - 1));
  let at = 0;
  const out: number[] = [];
  for (let i = 0; i < policy.maxRetransmit; i++) {
    at += timeout;
    if (at >= policy.deadlineMs) break;
    out.push(Math.round(at));
    timeout *= 2;
  }
  // After the loop `at + timeout` is the end of the last transmission's wait.
  return { retransmitAt: out, giveUpAt: Math.round(Math.min(policy.deadlineMs, at + timeout)) };
}

export interface Reply {
  msg: Message;
  raw: Buffer;
  from: Address;
}

export interface ClientOptions {
  socket?: dgram.Socket;
  /** Bind here when no socket is given (default: an ephemeral port on all IPv4 addresses). */
  bind?: { host: string; port: number };
  policy?: Partial<RetransmitPolicy>;
  timers?: Timers;
  random?: () => number;
  /** Datagrams that answer no pending request (server-initiated messages). */
  onPush?: (reply: Reply) => void;
}

interface Pending {
  to: Address;
  /** The request's bytes (sent again after an address challenge). */
  datagram: Buffer;
  /** `to.ip` in the form received addresses have (normaliseIp), for source matching. */
  toIp: string;
  anySource: boolean;
  accept: (r: Reply) => boolean;
  resolve: (r: Reply) => void;
  reject: (e: Error) => void;
  timers: unknown[];
  /** Arm the retransmission schedule afresh (the previous timers cleared). */
  rearm: () => void;
  /** Address challenges answered for this request (each restarts its schedule, at most MAX_CHALLENGES). */
  challenges: number;
}

/**
 * Challenges one request answers with a fresh retransmission schedule. A challenge whose MAC
 * verifies says the server is there and did not execute the request; the copy sent with the
 * proof may overtake it and be met by a suppressed challenge (one per 500 ms), so the later
 * retransmissions must still be to come. Bounded: a server that challenges forever is not
 * retried forever.
 */
export const MAX_CHALLENGES = 3;

/**
 * The ADDR_PROOF that answers an ADDR_CHALLENGE whose MAC the caller has verified in its session
 * (devloc-protocol(7), ADDRESS VALIDATION): sent from the challenged socket to the challenger.
 */
export function addrProof(challenge: MessageOf<'ADDR_CHALLENGE'>): Buffer {
  return encodeDatagram('ADDR_PROOF', randomBytes(REQUEST_ID_BYTES), { sid: challenge.auth!.sid, token: challenge.body.token });
}

export class UdpClient {
  readonly socket: dgram.Socket;
  private readonly pending = new Map<string, Pending>();
  private readonly timers: Timers;
  private readonly random: () => number;
  private closed = false;
  private closing: Promise<void> | undefined;
  policy: RetransmitPolicy;
  onPush: ((reply: Reply) => void) | undefined;
  /** Counters: sends including retransmissions, answers ignored, sends the socket refused. */
  stats = { sent: 0, retransmitted: 0, ignored: 0, timeouts: 0, sendErrors: 0, challenges: 0 };

  private constructor(socket: dgram.Socket, opts: ClientOptions) {
    this.socket = socket;
    this.timers = opts.timers ?? nodeTimers;
    this.random = opts.random ?? Math.random;
    this.policy = { ...defaultPolicy, ...opts.policy };
    this.onPush = opts.onPush;
    socket.on('message', this.onMessage);
    socket.on('error', this.onError);
  }

  private readonly onMessage = (raw: Buffer, rinfo: dgram.RemoteInfo): void => {
    this.receive(raw, { ip: normaliseIp(rinfo.address), port: rinfo.port });
  };

  // A send that fails asynchronously (no route, ICMP error) must not crash the process: the
  // request simply goes unanswered and is retransmitted or times out.
  private readonly onError = (): void => {
    this.stats.sendErrors++;
  };

  static async open(opts: ClientOptions = {}): Promise<UdpClient> {
    let socket = opts.socket;
    if (!socket) {
      const host = opts.bind?.host ?? '0.0.0.0';
      socket = dgram.createSocket({ type: host.includes(':') ? 'udp6' : 'udp4', lookup: literalLookup });
      await new Promise<void>((resolve, reject) => {
        socket!.once('error', reject);
        socket!.bind(opts.bind?.port ?? 0, host, () => {
          socket!.off('error', reject);
          resolve();
        });
      });
    }
    return new UdpClient(socket, opts);
  }

  get localPort(): number {
    return this.socket.address().port;
  }

  static newRequestId(): Buffer {
    return randomBytes(REQUEST_ID_BYTES);
  }

  /** Feed one received datagram (called by the socket; exposed for tests). */
  receive(raw: Buffer, from: Address): void {
    if (raw.length > MAX_DATAGRAM) {
      this.stats.ignored++;
      return;
    }
    const dec = decodeDatagram(raw);
    if (!dec.ok) {
      this.stats.ignored++;
      return;
    }
    const reply: Reply = { msg: dec.msg, raw, from };
    const key = Buffer.from(dec.msg.rid).toString('hex');
    const p = this.pending.get(key);
    const isResponse = dec.msg.type % 2 === 1;
    if (p && dec.msg.name === 'ADDR_CHALLENGE' && dec.msg.auth && (p.anySource || (p.toIp === from.ip && p.to.port === from.port)) && safeAccept(p, reply)) {
      // Our address is not validated for the session yet: prove it receives, then ask again
      // (the request was not executed, its sequence number not spent).
      this.stats.challenges++;
      this.send(from, addrProof(dec.msg));
      this.send(p.to, p.datagram);
      if (p.challenges++ < MAX_CHALLENGES) p.rearm();
      return;
    }
    if (p && isResponse && (p.anySource || (p.toIp === from.ip && p.to.port === from.port)) && safeAccept(p, reply)) {
      this.finish(key, p);
      p.resolve(reply);
      return;
    }
    if (!isResponse && this.onPush) {
      this.onPush(reply);
      return;
    }
    this.stats.ignored++;
  }

  private finish(key: string, p: Pending): void {
    for (const t of p.timers) this.timers.clearTimeout(t);
    this.pending.delete(key);
  }

  /**
   * Send `datagram` (whose request ID is `rid`) to `to` and resolve with the first answer that
   * `accept` approves. Rejects with DevlocError(TRY_LATER) when the schedule is exhausted.
   */
  request(to: Address, datagram: Buffer, rid: Uint8Array, o: {
    accept?: (r: Reply) => boolean; anySource?: boolean; policy?: Partial<RetransmitPolicy>;
    /** Called at each retransmission (n = 1 for the first, i.e. at the first timeout); must not throw. */
    onRetransmit?: (n: number) => void;
  } = {}): Promise<Reply> {
    if (this.closed) return Promise.reject(new ClientClosed('client closed or detached'));
    const key = Buffer.from(rid).toString('hex');
    if (this.pending.has(key)) return Promise.reject(new Error('request ID already pending'));
    const policy = { ...this.policy, ...o.policy };
    return new Promise<Reply>((resolve, reject) => {
      let retransmissions = 0;
      const p: Pending = {
        to, datagram, toIp: normaliseIp(to.ip), anySource: o.anySource ?? false, accept: o.accept ?? (() => true), resolve, reject, timers: [], challenges: 0,
        rearm: () => {
          for (const t of p.timers) this.timers.clearTimeout(t);
          p.timers = [];
          const plan = retransmitPlan(policy, this.random);
          for (const at of plan.retransmitAt) {
            p.timers.push(this.timers.setTimeout(() => {
              this.stats.retransmitted++;
              this.send(to, datagram);
              o.onRetransmit?.(++retransmissions);
            }, at));
          }
          p.timers.push(this.timers.setTimeout(() => {
            this.finish(key, p);
            this.stats.timeouts++;
            reject(new DevlocError(ErrorCode.TRY_LATER, `no answer from ${to.ip}:${to.port}`));
          }, plan.giveUpAt));
        },
      };
      this.pending.set(key, p);
      this.send(to, datagram);
      p.rearm();
    });
  }

  /** Fire and forget (acknowledgements, probes). Never throws: a failed send counts in stats. */
  send(to: Address, datagram: Buffer): void {
    this.stats.sent++;
    try {
      this.socket.send(datagram, to.port, to.ip, (err) => {
        if (err) this.stats.sendErrors++;
      });
    } catch {
      // Closed socket or invalid address: like a lost datagram.
      this.stats.sendErrors++;
    }
  }

  get pendingCount(): number {
    return this.pending.size;
  }

  /** Close the socket; every caller, the first or a later one, resolves once it is closed. */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    if (this.closed) return Promise.resolve(); // detached: the socket is its lender's
    this.end('client closed');
    this.closing = new Promise((resolve) => this.socket.close(() => resolve()));
    return this.closing;
  }

  /**
   * Give the socket back open, as it was lent (`ClientOptions.socket`): this client's listeners
   * come off it and its pending requests are rejected. For a caller that needs the request
   * machinery only for a while, e.g. the bench's generator, which opens its session through
   * `request` and then reads the socket itself without decoding every datagram twice.
   */
  detach(): dgram.Socket {
    if (this.closed) return this.socket;
    this.end('client detached');
    this.socket.off('message', this.onMessage);
    this.socket.off('error', this.onError);
    return this.socket;
  }

  /** No more requests: the pending ones are rejected (a closing socket keeps the listeners, so a late error stays caught). */
  private end(why: string): void {
    this.closed = true;
    for (const [key, p] of this.pending) {
      this.finish(key, p);
      p.reject(new ClientClosed(why));
    }
  }
}

/**
 * A request ended by its own side (close or detach), not by the server's silence: what a
 * caller reports as "stopped", never as "no answer". TRY_LATER, like any request refused here.
 */
export class ClientClosed extends DevlocError {
  constructor(why: string) {
    super(ErrorCode.TRY_LATER, why);
  }
}

/** A caller's check that throws counts as a refusal (it runs inside a socket event). */
function safeAccept(p: Pending, reply: Reply): boolean {
  try {
    return p.accept(reply);
  } catch {
    return false;
  }
}
