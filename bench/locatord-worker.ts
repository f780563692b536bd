// Child process of bench.ts (child_process.fork), driven over IPC:
//   - load generator: opens N sessions of its own (tickets made here), then sends MACed
//     REGISTER / REFRESH / QUERY_ADDR flat out with a window of outstanding requests, to locatord
//     or to the echo baseline, and reports how many were answered (tickets name the socket's
//     address, as authd's do, so locatord validates it when the session opens; an ADDR_CHALLENGE,
//     from an instance that did not open the session, is answered and the request sent again);
//   - echo: a bare node:dgram echo server (the baseline: same sockets, same datagrams, no work),
//     or one that also spends a fixed amount of pure CPU on each datagram (`workUs`: what the
//     machine's UDP path costs a server that works as long as a daemon would);
//   - table: the in-process table at 1M entries, for memory per terminal and sweep time;
//   - terminals: whole-process memory per terminal with its session (restore path)
//     (run with --expose-gc);
//   - presence (presence.ts): the same sessions WATCH each other's IDs, send PRESENCE_SETs (flat
//     out or paced) whose status text is the send time, and acknowledge the PRESENCE pushes they
//     get, recording change-to-push latency (one monotonic clock for every process on the host);
//   - watches: the subscription structure alone at 1M terminals, whole-process RSS per subscription;
//   - ceiling (presence.ts): what one push needs at minimum from a bare node:dgram process, one
//     datagram of the push's size out and one of the ack's size in per notification, against an
//     'echo' peer answering each with `replyBytes`; counted per CPU-second of this process.
//   - search (search.ts): REGISTERs carrying a presence record (a media ID, every k-th terminal
//     looking for a partner), then SEARCHes flat out from random points of the index.
import dgram from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { monitorEventLoopDelay } from 'node:perf_hooks';
// MAX_CHALLENGES: the client's bound on challenges answered per request, here before it counts as refused.
import { addrProof, MAX_CHALLENGES } from '../src/net/client.js';
import { ClientSession } from '../src/net/clientsession.js';
import type { Address } from '../src/wire/addr.js';
import type { Bodies, MessageName, PresenceRecord, Requirement } from '../src/wire/catalog.js';
import { decodeDatagram } from '../src/wire/envelope.js';
import { generatePair, privateKeyObject } from '../src/wire/keys.js';
import { issueTicket } from '../src/wire/ticket.js';
import { RegistrationTable, TICK_MS } from '../src/locatord/table.js';
import { saveSnapshot } from '../src/locatord/snapshot.js';
import { newServerSession, ServerSessions } from '../src/net/sessions.js';
import { AddressValidation } from '../src/net/routability.js';
import { TicketVerifier } from '../src/wire/ticket.js';
import { MemoryWatches } from '../src/locatord/watches.js';
import { MAX_QUERY_IDS } from '../src/wire/catalog.js';
import { Pacer } from './pacer.js';
import type { HistogramJSON } from './stats.js';
import { Histogram } from './stats.js';
import { MAX_RETRANSMIT } from '../src/wire/constants.js';

/** Milliseconds on a clock every process of this host shares (the status text of a change carries it). */
const sharedNowMs = (): number => performance.timeOrigin + performance.now();

export type WorkerCommand =
  | { cmd: 'setup'; target: Address; kid: string; authdSign: { public: string; secret: string }; servicePublic: string; audience: string; sessions: number }
  | { cmd: 'register'; window: number; presence?: { mediaId: string; lookingEvery: number } }
  | { cmd: 'search'; mediaId: string; seconds: number; window: number; requirements: Requirement[] }
  | {
    cmd: 'run'; kind: 'REFRESH' | 'QUERY_ADDR'; target?: Address; seconds: number; window: number; idsPerQuery: number;
    /** QUERY_ADDR asks for terminals 0..registered-1 of buildTerminals (restoredLocatorId), at random, instead of this worker's own. */
    registered?: number;
    /** REFRESH only the first this many of the adopted terminals, in turn (default: all of them). */
    adoptedInTurn?: number;
  }
  /**
   * REFRESH `count` terminals of a snapshot of `registered` (buildTerminals) from now on, in turn,
   * instead of this worker's own sessions: this is generator `worker` of `workers` (LoadGenerator.adopt).
   */
  | { cmd: 'adopt'; registered: number; worker: number; workers: number; count: number; window: number }
  /** An echo server; with `workUs`, it also spends that much pure CPU (no memory) on each datagram before answering. */
  | { cmd: 'echo'; replyBytes?: number; workUs?: number }
  | { cmd: 'ceiling'; target: Address; bytes: number; window: number; seconds: number }
  | { cmd: 'table'; entries: number; nickname: boolean }
  | { cmd: 'terminals'; entries: number }
  | { cmd: 'snapshot'; entries: number; stateDir: string }
  | { cmd: 'watch'; lists: { watcher: number; targets: string[] }[]; window: number }
  | { cmd: 'listen' }
  /** Changes sent `ms` or more after the first one received from now on also go into `steadyLatency` (the first second of a paced run is its warm-up). */
  | { cmd: 'steadyAfter'; ms: number }
  | { cmd: 'change'; changers: number[]; ratePerS: number; seconds: number; window: number; count?: number }
  | { cmd: 'received' }
  | { cmd: 'watches'; terminals: number; perWatcher: number }
  | { cmd: 'exit' };

/** What a watcher process received since its last 'received' (presence.ts). */
export interface ReceivedPushes {
  /** Distinct PRESENCE pushes (retransmissions not counted). */
  pushes: number;
  copies: number;
  /** Change-to-push latency histogram (stats.ts Histogram JSON). */
  latency: ReturnType<Histogram['toJSON']>;
  /** The same, of the changes sent `ms` or more after the first (WorkerCommand 'steadyAfter'). */
  steadyLatency: ReturnType<Histogram['toJSON']>;
  /** Absolute time (ms, shared clock) the last push arrived. */
  lastAtMs: number;
  /** Size of the last PRESENCE received and of its PRESENCE_ACK (0 when none). */
  pushBytes: number;
  ackBytes: number;
  /** Per 250 ms of send time (shared clock, ms): pushes and their worst latency, to see where a tail comes from. */
  timeline: [atMs: number, pushes: number, maxMs: number][];
}

/** The ceiling run: notifications (one send + one receive each) and this process's CPU for them. */
export interface CeilingResult {
  ops: number;
  ms: number;
  cpuS: number;
}

export interface RunResult {
  answered: number;
  /** Of the answered, how many were ERRORs (a refusal costs the daemon less than the work). */
  errors: number;
  lost: number;
  /** Requests sent again after a second without an answer (adopt only: timed runs count them lost). */
  resent?: number;
  ms: number;
  /**
   * Paced runs: how long the sending took (the offered window, ms; `ms` also counts the wait for
   * the last answers), and how late the latest request went out (ms): a generator that cannot
   * keep up shows here, not as a lower offered rate.
   */
  sendMs?: number;
  maxLateMs?: number;
  /** Send to answer of each answered request (stats.ts Histogram JSON; lost ones are not in it). */
  latency: HistogramJSON;
}

interface Terminal {
  locatorId: Buffer;
  ticket: Buffer;
  session: ClientSession;
}

const send = (m: unknown): void => {
  process.send!(m);
};

/** Where the request ID sits in an envelope: after 0x84/0x85, version 1, the type (1 or 2 bytes), 0x48. */
function ridCounter(b: Buffer): number {
  const off = b[2] === 0x18 ? 4 : 3;
  return b.length >= off + 9 ? b.readUInt32BE(off + 5) : -1;
}


/** Whether an envelope is an ERROR (type 0x7f: 0x18 0x7f after 0x84/0x85 and version 1). */
const isError = (b: Buffer): boolean => b[2] === 0x18 && b[3] === 0x7f;

class LoadGenerator {
  readonly terminals: Terminal[] = [];
  private readonly socket = dgram.createSocket('udp4');
  private readonly prefix = randomBytes(4);
  private counter = 0;
  private target: Address = { ip: '127.0.0.1', port: 0 };

  async setup(c: Extract<WorkerCommand, { cmd: 'setup' }>): Promise<void> {
    this.target = c.target;
    await new Promise<void>((r) => this.socket.bind(0, '127.0.0.1', r));
    this.socket.setRecvBufferSize(8 << 20);
    this.socket.setSendBufferSize(8 << 20);
    const signer = privateKeyObject('Ed25519', { public: Buffer.from(c.authdSign.public, 'base64url'), secret: Buffer.from(c.authdSign.secret, 'base64url') });
    const now = Math.floor(Date.now() / 1000);
    const addr = { ip: '127.0.0.1', port: this.socket.address().port };
    for (let i = 0; i < c.sessions; i++) {
      const cnf = generatePair('x25519');
      const locatorId = randomBytes(16);
      const ticket = issueTicket({ locatorId, aud: c.audience, iat: now, exp: now + 3600, cti: randomBytes(16), cnf: cnf.public, addr }, Buffer.from(c.kid, 'hex'), signer);
      const session = ClientSession.fromGrant({ aud: c.audience, ticket, serviceKey: Buffer.from(c.servicePublic, 'base64url'), exp: now + 3600 }, privateKeyObject('X25519', cnf))!;
      this.terminals.push({ locatorId, ticket, session });
    }
  }

  private rid(): { rid: Buffer; n: number } {
    const n = (this.counter = (this.counter + 1) >>> 0);
    const rid = Buffer.allocUnsafe(8);
    this.prefix.copy(rid, 0);
    rid.writeUInt32BE(n, 4);
    return { rid, n };
  }

  /**
   * Keep `window` requests outstanding until `next` returns null (or `seconds` pass); a request
   * unanswered for a second is sent again, the same bytes, up to `resends` times (then counted
   * lost and replaced). With `verify`, every answer must be MACed in its request's session (else
   * it counts as an error): the answers to sessions whose keys were not derived here (adopt).
   * Timed runs resend nothing (a loss is a figure); adopt, untimed, must not call a datagram the
   * loaded kernel dropped (a full receive buffer) a failure of locatord's restore.
   */
  private drive(to: Address, window: number, seconds: number, next: () => { name: MessageName; body: Bodies[MessageName]; session: ClientSession } | null, verify = false, resends = 0): Promise<RunResult> {
    return new Promise((resolve) => {
      /**
       * The requests awaiting an answer, by request counter: when last sent, and what (sent again
       * after an ADDR_CHALLENGE, up to MAX_CHALLENGES times, or after a second, up to `resends`).
       */
      const inflight = new Map<number, { at: number; bytes: Buffer; session: ClientSession; challenges: number; resent: number }>();
      let answered = 0;
      let errors = 0;
      let lost = 0;
      let resent = 0;
      let done = false;
      const latency = new Histogram();
      const started = Date.now();
      const fire = (): void => {
        if (done) return;
        const req = next();
        if (!req) {
          if (inflight.size === 0) finish();
          return;
        }
        const { rid, n } = this.rid();
        const bytes = req.session.encode(req.name, rid, req.body as never);
        inflight.set(n, { at: performance.now(), bytes, session: req.session, challenges: 0, resent: 0 });
        this.socket.send(bytes, to.port, to.ip);
      };
      const onMessage = (b: Buffer): void => {
        const n = ridCounter(b);
        const s = inflight.get(n);
        if (!s) return;
        // A challenge not MACed in the session, or one too many (the proofs do not take), is an
        // error answer, not a cue to send again: a session with wrong keys must not pass. (With
        // --workers, a resend can reach another worker before it learns of the proof: challenged
        // again, legitimately.)
        let refused = isError(b);
        if (b[2] === 0x0a) {
          const d = decodeDatagram(b);
          if (d.ok && d.msg.name === 'ADDR_CHALLENGE') {
            if (s.challenges < MAX_CHALLENGES && s.session.accept({ msg: d.msg, raw: b, from: to })) {
              s.challenges++;
              this.socket.send(addrProof(d.msg), to.port, to.ip);
              this.socket.send(s.bytes, to.port, to.ip);
              return;
            }
            refused = true;
          }
        } else if (verify && !refused) {
          const d = decodeDatagram(b);
          refused = !d.ok || !s.session.accept({ msg: d.msg, raw: b, from: to });
        }
        inflight.delete(n);
        latency.record(performance.now() - s.at);
        answered++;
        if (refused) errors++;
        fire();
      };
      const sweep = setInterval(() => {
        const now = performance.now();
        for (const [n, s] of inflight) {
          if (now - s.at < 1000) continue;
          if (s.resent < resends) {
            // The same bytes, request ID and sequence: locatord answers a retransmission from
            // its response cache (or challenges it again), it does not execute it twice.
            s.resent++;
            resent++;
            s.at = now;
            this.socket.send(s.bytes, to.port, to.ip);
            continue;
          }
          inflight.delete(n);
          lost++;
          fire();
        }
      }, 100);
      const stop = seconds > 0 ? setTimeout(() => finish(), seconds * 1000) : undefined;
      const finish = (): void => {
        if (done) return;
        done = true;
        clearInterval(sweep);
        if (stop) clearTimeout(stop);
        this.socket.off('message', onMessage);
        resolve({ answered, errors, lost, ...(resends > 0 ? { resent } : {}), ms: Date.now() - started, latency: latency.toJSON() });
      };
      this.socket.on('message', onMessage);
      for (let i = 0; i < window; i++) fire();
    });
  }

  /**
   * REGISTER every terminal once (each opens a session: signature check + X25519 at locatord);
   * with `presence`, each under its media ID, every `lookingEvery`-th looking for a partner
   * (wanting a level 0..9).
   */
  async register(window: number, presence?: { mediaId: string; lookingEvery: number }): Promise<RunResult> {
    let i = 0;
    const pending = [...this.terminals];
    const record = (k: number): PresenceRecord | undefined =>
      presence && { mediaId: presence.mediaId, lookingForPartner: k % presence.lookingEvery === 0, wants: { level: k % 10 } };
    return this.drive(this.target, window, 0, () => {
      const k = i++;
      const t = pending[k];
      if (!t) return null;
      const p = record(k);
      return { name: 'REGISTER', body: { ticket: t.ticket, timeMs: Date.now(), ...(p ? { presence: p } : {}) }, session: t.session };
    });
  }

  /** SEARCHes flat out, round-robin over our sessions, each from a random point of the index (`after`). */
  async search(c: Extract<WorkerCommand, { cmd: 'search' }>): Promise<RunResult> {
    let i = 0;
    const ts = this.terminals;
    return this.drive(this.target, c.window, c.seconds, () => ({
      name: 'SEARCH', body: { mediaId: c.mediaId, requirements: c.requirements, after: randomBytes(16) }, session: ts[i++ % ts.length]!.session,
    }));
  }

  /** WATCH: terminal `watcher` of this process watches `targets` (hex), MAX_QUERY_IDS a request. */
  async watch(c: Extract<WorkerCommand, { cmd: 'watch' }>): Promise<RunResult> {
    const reqs: { session: ClientSession; ids: Buffer[] }[] = [];
    for (const l of c.lists) {
      for (let i = 0; i < l.targets.length; i += MAX_QUERY_IDS) {
        reqs.push({ session: this.terminals[l.watcher]!.session, ids: l.targets.slice(i, i + MAX_QUERY_IDS).map((h) => Buffer.from(h, 'hex')) });
      }
    }
    let i = 0;
    return this.drive(this.target, c.window, 0, () => {
      const r = reqs[i++];
      return r ? { name: 'WATCH', body: { ids: r.ids }, session: r.session } : null;
    });
  }

  /** PRESENCE_SETs from `changers`, flat out (`ratePerS` 0: `window` outstanding) or paced; the status is the send time. */
  async change(c: Extract<WorkerCommand, { cmd: 'change' }>): Promise<RunResult> {
    let i = 0;
    const next = (): { name: MessageName; body: Bodies[MessageName]; session: ClientSession } | null => {
      if (c.count !== undefined && i >= c.count) return null;
      const t = this.terminals[c.changers[i++ % c.changers.length]!]!;
      return { name: 'PRESENCE_SET', body: { presence: { status: sharedNowMs().toFixed(3) } }, session: t.session };
    };
    if (c.ratePerS <= 0) return this.drive(this.target, c.window, c.seconds, next);
    // Paced (open loop): what is due goes out, answered or not; the answers are only counted.
    const start = Date.now();
    const pacer = new Pacer(c.ratePerS, start, start + c.seconds * 1000);
    let answered = 0;
    let errors = 0;
    const onMessage = (b: Buffer): void => {
      answered++;
      if (isError(b)) errors++;
    };
    this.socket.on('message', onMessage);
    let sent = 0;
    while (sent < pacer.total) {
      const due = pacer.take(Date.now()).count;
      for (let k = 0; k < due; k++) {
        const req = next()!;
        const { rid } = this.rid();
        this.socket.send(req.session.encode(req.name, rid, req.body as never), this.target.port, this.target.ip);
      }
      sent += due;
      await new Promise((r) => setTimeout(r, 1));
    }
    const sendMs = Date.now() - start;
    await new Promise((r) => setTimeout(r, 500));
    this.socket.off('message', onMessage);
    return { answered, errors, lost: Math.max(0, sent - answered), ms: Date.now() - start, sendMs, maxLateMs: Math.round(pacer.maxLateMs), latency: new Histogram().toJSON() };
  }

  private pushes = LoadGenerator.noPushes();

  private static noPushes(): { seen: Set<string>; copies: number; latency: Histogram; steady: Histogram; lastAtMs: number; pushBytes: number; ackBytes: number; timeline: Map<number, [number, number, number]> } {
    return { seen: new Set(), copies: 0, latency: new Histogram(), steady: new Histogram(), lastAtMs: 0, pushBytes: 0, ackBytes: 0, timeline: new Map() };
  }

  /** See WorkerCommand 'steadyAfter': how long after the first change, and from when (set by the first one). */
  private steadyAfterMs = Infinity;
  private steadyFromMs: number | undefined;

  steadyAfter(ms: number): void {
    this.steadyAfterMs = ms;
    this.steadyFromMs = undefined;
  }

  /** Acknowledge every PRESENCE pushed to one of our sessions; count it and its latency. */
  listen(): void {
    const bySid = new Map(this.terminals.map((t) => [t.session.sid.toString('hex'), t.session]));
    this.socket.on('message', (b: Buffer) => {
      if (b[2] !== 0x18 || b[3] !== 0x2a) return; // type PRESENCE (0x2a) only: a cheap peek before decoding
      const d = decodeDatagram(b);
      if (!d.ok || d.msg.name !== 'PRESENCE' || !d.msg.auth) return;
      const session = bySid.get(Buffer.from(d.msg.auth.sid).toString('hex'));
      if (!session) return;
      const body = d.msg.body as Bodies['PRESENCE'];
      const ack = session.encode('PRESENCE_ACK', d.msg.rid, { id: body.id });
      this.socket.send(ack, this.target.port, this.target.ip);
      const p = this.pushes;
      p.copies++;
      p.pushBytes = b.length;
      p.ackBytes = ack.length;
      const key = Buffer.from(d.msg.rid).toString('hex');
      if (p.seen.has(key)) return;
      p.seen.add(key);
      const now = sharedNowMs();
      p.lastAtMs = now;
      const sentAt = Number(body.presence?.status);
      if (!Number.isFinite(sentAt)) return;
      const ms = Math.max(0, now - sentAt);
      p.latency.record(ms);
      this.steadyFromMs ??= sentAt + this.steadyAfterMs;
      if (sentAt >= this.steadyFromMs) p.steady.record(ms);
      const slot = Math.floor(sentAt / 250) * 250;
      const line = p.timeline.get(slot);
      if (line) {
        line[1]++;
        if (ms > line[2]) line[2] = ms;
      } else p.timeline.set(slot, [slot, 1, ms]);
    });
  }

  /** What was received since the last call. */
  received(): ReceivedPushes {
    const p = this.pushes;
    this.pushes = LoadGenerator.noPushes();
    return { pushes: p.seen.size, copies: p.copies, latency: p.latency.toJSON(), steadyLatency: p.steady.toJSON(), lastAtMs: p.lastAtMs, pushBytes: p.pushBytes, ackBytes: p.ackBytes, timeline: [...p.timeline.values()] };
  }

  /** Restored terminals this generator REFRESHes in turn (adopt), instead of its own. */
  private restored: ClientSession[] = [];

  /**
   * Take over `count` terminals of a snapshot of `registered` (buildTerminals) for REFRESH. The
   * terminals are visited with a stride prime to the table's size, generator `worker` of
   * `workers` taking every `workers`-th, so that one generator's terminals are rows far apart in
   * locatord's tables, as 1M terminals refreshing in turn would be, not a few thousand that stay
   * in the caches. Each is REFRESHed once here, untimed: the first REFRESH from this socket's
   * address is challenged (ADDR_CHALLENGE, answered by drive) and moves the registration here;
   * every answer must verify under the session's keys (else it counts as an error). A REFRESH
   * unanswered for a second is sent again (ADOPT_RESENDS): under load the kernel drops
   * datagrams, and a drop is not a terminal the restore lost.
   */
  async adopt(c: Extract<WorkerCommand, { cmd: 'adopt' }>): Promise<RunResult> {
    const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));
    if (gcd(RESTORED_STRIDE, c.registered) !== 1) throw new Error(`adopt: ${c.registered} terminals share a factor with the stride ${RESTORED_STRIDE}`);
    if (c.count < 1 || c.worker + (c.count - 1) * c.workers >= c.registered) throw new Error(`adopt: ${c.count} x ${c.workers} terminals of ${c.registered}`);
    const exp = Math.floor(Date.now() / 1000) + 3600;
    // Only the keys and the sequence are used: the grant is never sent.
    const grant = { aud: RESTORED_AUDIENCE, ticket: Buffer.alloc(0), serviceKey: Buffer.alloc(32), exp };
    this.restored = [];
    for (let k = 0; k < c.count; k++) {
      const i = ((c.worker + k * c.workers) * RESTORED_STRIDE) % c.registered;
      const { sid, ...keys } = restoredSession(i);
      this.restored.push(ClientSession.fromKeys(grant, sid, keys, RESTORED_SENT_SEQ));
    }
    let k = 0;
    return this.drive(this.target, c.window, 0, () => {
      const session = this.restored[k++];
      return session ? { name: 'REFRESH', body: {}, session } : null;
    }, true, ADOPT_RESENDS);
  }

  async run(c: Extract<WorkerCommand, { cmd: 'run' }>): Promise<RunResult> {
    let i = 0;
    let r = 0;
    const ts = this.terminals;
    const restored = c.adoptedInTurn !== undefined ? this.restored.slice(0, c.adoptedInTurn) : this.restored;
    const registered = c.registered;
    return this.drive(c.target ?? this.target, c.window, c.seconds, () => {
      const t = ts[i++ % ts.length]!;
      if (c.kind === 'REFRESH') return { name: 'REFRESH', body: {}, session: restored.length ? restored[r++ % restored.length]! : t.session };
      const ids: Buffer[] = [];
      for (let k = 1; k <= c.idsPerQuery; k++) {
        ids.push(registered ? restoredLocatorId(Math.floor(Math.random() * registered)) : ts[(i * 7 + k) % ts.length]!.locatorId);
      }
      return { name: 'QUERY_ADDR', body: { ids }, session: t.session };
    });
  }
}

async function echo(replyBytes?: number, workUs = 0): Promise<void> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  s.setRecvBufferSize(8 << 20);
  const reply = replyBytes === undefined ? undefined : Buffer.alloc(replyBytes, 0x5a);
  if (workUs > 0) {
    const rounds = Math.max(1, Math.round(workUs * spinRoundsPerUs()));
    s.on('message', (m, r) => {
      spinSink ^= spin(rounds);
      s.send(reply ?? m, r.port, r.address);
    });
  } else s.on('message', (m, r) => s.send(reply ?? m, r.port, r.address));
  send({ port: s.address().port });
}

/** Pure CPU work, no memory: `rounds` steps of xorshift32 (its result kept, so it is not optimised away). */
function spin(rounds: number): number {
  let x = 0x2545f491;
  for (let i = 0; i < rounds; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
  }
  return x;
}
let spinSink = 0;

/** spin() rounds per microsecond of this process's CPU, measured over ~200 ms (after a warm-up). */
function spinRoundsPerUs(): number {
  spinSink ^= spin(1e6);
  const rounds = 1e6;
  let done = 0;
  const c0 = process.cpuUsage();
  let used = 0;
  while (used < 200_000) {
    spinSink ^= spin(rounds);
    done += rounds;
    const c = process.cpuUsage(c0);
    used = c.user + c.system;
  }
  return done / used;
}

/**
 * The least a push costs its sender on this machine: per notification one datagram of `bytes`
 * out (send(bytes, port, ip, callback), the call locatord makes: one socket for every watcher)
 * and its ack in, `window` outstanding; a lost one is sent again when the window would stall.
 * Nothing decoded, MACed or remembered.
 */
async function ceiling(c: Extract<WorkerCommand, { cmd: 'ceiling' }>): Promise<CeilingResult> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  s.setRecvBufferSize(8 << 20);
  const out = Buffer.alloc(c.bytes, 0xa5);
  const afterSend = (): void => {};
  const push = (): void => {
    s.send(out, c.target.port, c.target.ip, afterSend);
  };
  let ops = 0;
  let last = ops;
  let stop = false;
  s.on('message', () => {
    ops++;
    if (!stop) push();
  });
  const cpu0 = process.cpuUsage();
  const t0 = Date.now();
  for (let i = 0; i < c.window; i++) push();
  // Loss on a busy loopback: top the window up when nothing came back for a while.
  const refill = setInterval(() => {
    if (ops === last) for (let i = 0; i < c.window; i++) push();
    last = ops;
  }, 200);
  await new Promise((r) => setTimeout(r, c.seconds * 1000));
  stop = true;
  clearInterval(refill);
  const cpu = process.cpuUsage(cpu0);
  const ms = Date.now() - t0;
  s.close();
  return { ops, ms, cpuS: (cpu.user + cpu.system) / 1e6 };
}

const gc = (): void => {
  const g = (globalThis as { gc?: () => void }).gc;
  for (let i = 0; i < 4; i++) g?.();
};

/** Memory per registered terminal and sweep times, at `entries` records. */
function table(entries: number, nickname: boolean): Record<string, number> {
  let clock = Date.now();
  const t = new RegistrationTable({ maxEntries: entries, now: () => clock });
  gc();
  const before = process.memoryUsage();
  for (let i = 0; i < entries; i++) {
    // Locator ID in hex (in the daemon the same string as the session's), IPv4 source, port.
    const key = randomBytes(16).toString('hex');
    // Half the table on a 90 s TTL, half on 1200 s: the sweep at 91 s frees the first half.
    t.set(key, {
      addr: { ip: `${10 + (i >>> 24)}.${(i >>> 16) & 255}.${(i >>> 8) & 255}.${i & 255}`, port: 1024 + (i % 60000) }, session: undefined, seq: 1,
      regTick: t.nowTick(), expTick: t.expiryTick((i % 2 ? 90 : 1200) * 1000), netMode: 4, nickname: nickname ? `player-${i}` : undefined,
    });
  }
  gc();
  const after = process.memoryUsage();
  const time = (f: () => unknown): number => {
    const started = process.hrtime.bigint();
    f();
    return Number(process.hrtime.bigint() - started) / 1e6;
  };
  clock += 1000 + TICK_MS;
  const idleMs = time(() => t.sweep(1000, Infinity));
  clock += 90_000;
  let expired = 0;
  const expireMs = time(() => (expired = t.sweep(1000, Infinity).expired));
  const perExpiredUs = (expireMs * 1000) / Math.max(1, expired);
  return {
    entries,
    // The records are typed arrays (ArrayBuffers, outside the V8 heap): counted with the heap.
    heapBytesPerEntry: Math.round((after.heapUsed + after.arrayBuffers - before.heapUsed - before.arrayBuffers) / entries),
    rssBytesPerEntry: Math.round((after.rss - before.rss) / entries),
    sweepIdleMs: Math.round(idleMs * 100) / 100,
    sweepExpireHalfMs: Math.round(expireMs),
    expired,
    sweepUsPerExpired: Math.round(perExpiredUs * 100) / 100,
    // Steady state: a full table of 90 s registrations turns over entries/90 per second.
    steadySweepMsPerS: Math.round(((entries / 90) * perExpiredUs) / 10) / 100,
  };
}

/** 32-bit finalizer of MurmurHash3: spreads consecutive numbers over all bits. */
function fmix32(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/**
 * Locator ID of terminal `i` of buildTerminals: a function of `i`, so that a load generator can
 * query terminals of a snapshot it did not build (scale1m.ts) without the IDs crossing over IPC;
 * as evenly spread as random IDs, which the daemon's indexes expect.
 */
export function restoredLocatorId(i: number): Buffer {
  return bytesOfIndex(i, 16, 0x9e3779b9);
}

/** `n` bytes (a multiple of 4) that are a function of `i` and `salt`: fmix32 of consecutive numbers. */
function bytesOfIndex(i: number, n: number, salt: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  const words = n / 4;
  for (let k = 0; k < words; k++) b.writeUInt32BE(fmix32(Math.imul(i, words) + k + salt), k * 4);
  return b;
}

/** Bytes of restoredSession: the session ID (16), then the terminal-to-server and server-to-terminal keys (32 each). */
const RESTORED_SESSION_BYTES = 80;
/** The last sequence number each side of a restored session has used (buildTerminals takes 1..3 in its window). */
export const RESTORED_SENT_SEQ = 3;
/** The audience of a restored session (locatord's service ID in the bench). */
const RESTORED_AUDIENCE = 'locator';
/**
 * adopt's step through the restored terminals: prime to the table's size, so that consecutive
 * terminals of a generator are rows far apart in the table (buildTerminals fills it in order).
 */
const RESTORED_STRIDE = 7919;
/**
 * How often adopt sends an unanswered REFRESH again (a second apart) before calling it lost: as
 * many as an honest client retransmits (MAX_RETRANSMIT), so a restore that truly lost terminals
 * still fails within seconds.
 */
const ADOPT_RESENDS = MAX_RETRANSMIT;

/**
 * Session ID and keys of terminal `i` of buildTerminals: a function of `i`, like its locator ID,
 * so that a load generator can REFRESH restored terminals (scale1m.ts) without keys crossing over
 * IPC. Predictable keys: a bench's, never a daemon's.
 */
export function restoredSession(i: number): { sid: Buffer; terminalToServer: Buffer; serverToTerminal: Buffer } {
  const b = bytesOfIndex(i, RESTORED_SESSION_BYTES, 0x7f4a7c15);
  return { sid: b.subarray(0, 16), terminalToServer: b.subarray(16, 48), serverToTerminal: b.subarray(48, 80) };
}

/**
 * `entries` registered terminals with their sessions, each built as a restore builds it
 * (newServerSession from raw bytes, ServerSessions.restore, a Registration in the table), with a
 * few sequence numbers taken in its replay window: no ticket or X25519 per terminal. With
 * `validation`, each one's address proven for its session too (every terminal active: what a day
 * of REFRESHes leaves).
 */
function buildTerminals(entries: number, validation?: AddressValidation): { table: RegistrationTable; sessions: ServerSessions; nowMs: number } {
  const nowMs = Date.now();
  const t = new RegistrationTable({ maxEntries: entries + 1, now: () => nowMs });
  const verifier = new TicketVerifier({ keys: new Map(), audience: RESTORED_AUDIENCE });
  const sessions = new ServerSessions({ verifier, serviceSecret: undefined as never, maxSessions: entries + 1, now: () => nowMs });
  const exp = Math.floor(nowMs / 1000) + 3600;
  const ip = (i: number): string => `${10 + (i >>> 24)}.${(i >>> 16) & 255}.${(i >>> 8) & 255}.${i & 255}`;
  for (let i = 0; i < entries; i++) {
    const s = newServerSession({ ...restoredSession(i), locatorId: restoredLocatorId(i), aud: RESTORED_AUDIENCE, exp });
    for (let q = 1; q <= RESTORED_SENT_SEQ; q++) s.window.accept(q);
    s.txSeq = RESTORED_SENT_SEQ;
    const held = sessions.restore(s);
    const addr = { ip: ip(i), port: 1024 + (i % 60000) };
    t.set(s.locatorHex, { addr, session: held, seq: 3, regTick: t.nowTick(), expTick: t.expiryTick(3_600_000), netMode: 4 });
    if (held) validation?.accept(held, addr);
  }
  return { table: t, sessions, nowMs };
}

/**
 * Write the snapshot of `entries` terminals (buildTerminals) into `stateDir` as locatord's stop
 * does, timing it: wall and CPU time, the longest slice between yields (saveSnapshot's own
 * figure) and the event loop's longest delay meanwhile (perf_hooks.monitorEventLoopDelay).
 */
async function snapshot(entries: number, stateDir: string): Promise<Record<string, number>> {
  const { table, sessions, nowMs } = buildTerminals(entries);
  gc();
  const rssBefore = process.memoryUsage().rss;
  const delay = monitorEventLoopDelay({ resolution: 1 });
  delay.enable();
  const r = await saveSnapshot(stateDir, sessions, table, nowMs, new MemoryWatches());
  delay.disable();
  if (r.records !== entries || r.sessions !== entries) throw new Error(`snapshot: wrote ${r.records} records, ${r.sessions} sessions`);
  return {
    entries, bytes: r.bytes, writeMs: r.durationMs, writeCpuMs: r.cpuMs, maxSliceMs: r.maxSliceMs, maxSliceCpuMs: r.maxSliceCpuMs, slices: r.slices,
    loopDelayMaxMs: Math.round(delay.max / 1e5) / 10, rssMiB: Math.round(rssBefore / 1048576),
  };
}

/**
 * Whole-process memory per registered terminal with its session, at `entries` terminals
 * (buildTerminals): RSS, V8 heap and ArrayBuffers (native) are read after full GCs, the
 * process's own baseline subtracted.
 */
function terminals(entries: number): Record<string, number> {
  gc();
  const before = process.memoryUsage();
  // The proven addresses are the session's too (net/routability.ts): counted, all terminals active.
  const validation = new AddressValidation();
  const { table: t, sessions } = buildTerminals(entries, validation);
  gc();
  const after = process.memoryUsage();
  const per = (k: 'rss' | 'heapUsed' | 'arrayBuffers' | 'external'): number => Math.round((after[k] - before[k]) / entries);
  // Read after the measurement, so that neither is garbage before it.
  if (t.size !== entries || sessions.size !== entries || validation.stats.proofs !== 0) throw new Error('terminals: lost entries');
  return { entries, rssBytesPerTerminal: per('rss'), heapBytesPerTerminal: per('heapUsed'), arrayBufferBytesPerTerminal: per('arrayBuffers'), externalBytesPerTerminal: per('external') };
}

/**
 * The subscription structure alone (store/embedded.ts's MemoryWatches): `terminals` watchers
 * each watching `perWatcher` random others (so each is watched by `perWatcher` on average).
 * Whole-process RSS and heap before and after, and the fan-out lookup of one terminal.
 */
function watches(terminals: number, perWatcher: number): Record<string, number> {
  // IDs as the daemon has them (hex of 16 random bytes), made before the measurement: they are
  // the registrations' keys, counted in the table's figures, not here.
  const ids: string[] = [];
  for (let i = 0; i < terminals; i++) ids.push(randomBytes(16).toString('hex'));
  const views = Array.from({ length: perWatcher }, () => '');
  gc();
  const before = process.memoryUsage();
  const w = new MemoryWatches();
  const started = process.hrtime.bigint();
  let seed = 12345;
  const rand = (): number => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % terminals;
  const list: string[] = [];
  for (let i = 0; i < terminals; i++) {
    list.length = 0;
    for (let k = 0; k < perWatcher; k++) list.push(ids[rand()]!);
    w.add(ids[i]!, list, views, Infinity);
  }
  const buildMs = Number(process.hrtime.bigint() - started) / 1e6;
  gc();
  const after = process.memoryUsage();
  const subscriptions = w.size;
  // Fan-out lookup: the watchers of 10k terminals, each with its view swapped.
  const t0 = process.hrtime.bigint();
  let told = 0;
  for (let i = 0; i < 10_000; i++) {
    const target = ids[i]!;
    for (const watcher of w.watchersOf(target)) if (w.swapView(watcher, target, `v${i}`)) told++;
  }
  const lookupNsPerPush = Number(process.hrtime.bigint() - t0) / Math.max(1, told);
  return {
    terminals, subscriptions, buildMs: Math.round(buildMs),
    rssBytesPerSubscription: Math.round(((after.rss - before.rss) / subscriptions) * 10) / 10,
    heapBytesPerSubscription: Math.round((((after.heapUsed + after.arrayBuffers) - (before.heapUsed + before.arrayBuffers)) / subscriptions) * 10) / 10,
    rssMiB: Math.round(after.rss / 1048576),
    lookupNsPerPush: Math.round(lookupNsPerPush),
  };
}

let gen: LoadGenerator | undefined;
process.on('message', (m: WorkerCommand) => {
  void (async () => {
    switch (m.cmd) {
      case 'setup':
        gen = new LoadGenerator();
        await gen.setup(m);
        send({ ready: gen.terminals.length, ids: gen.terminals.map((t) => t.locatorId.toString('hex')) });
        break;
      case 'register':
        send(await gen!.register(m.window, m.presence));
        break;
      case 'search':
        send(await gen!.search(m));
        break;
      case 'run':
        send(await gen!.run(m));
        break;
      case 'adopt':
        send(await gen!.adopt(m));
        break;
      case 'echo':
        await echo(m.replyBytes, m.workUs);
        break;
      case 'ceiling':
        send(await ceiling(m));
        break;
      case 'table':
        send(table(m.entries, m.nickname));
        break;
      case 'terminals':
        send(terminals(m.entries));
        break;
      case 'snapshot':
        send(await snapshot(m.entries, m.stateDir));
        break;
      case 'watches':
        send(watches(m.terminals, m.perWatcher));
        break;
      case 'watch':
        send(await gen!.watch(m));
        break;
      case 'change':
        send(await gen!.change(m));
        break;
      case 'listen':
        gen!.listen();
        send({ listening: true });
        break;
      case 'steadyAfter':
        gen!.steadyAfter(m.ms);
        send({ ok: true });
        break;
      case 'received':
        send(gen!.received());
        break;
      case 'exit':
        process.exit(0);
    }
  })().catch((err: Error) => {
    send({ error: err.message });
  });
});
