// One direct datagram channel to a peer terminal (devloc-agent(8), PEER CONNECTIONS): hole
// punching to the peer's candidate addresses, keepalive on the path that answered, and
// authenticated, encrypted, numbered application datagrams (key schedule: src/wire/peer.ts).
//
// Punching. Both ends send PUNCH (MACed with the channel's punch key, carrying their ephemeral
// X25519 key) to the candidate addresses of the other. A candidate is an address someone claimed
// (locatord's introduction, a PUNCH's source), not one known to receive: until it answers, it
// gets at most MAX_UNANSWERED_PUNCHES (2) PUNCHes — one when it becomes a candidate, one
// "triggered" when a PUNCH arrives from it (the peer's PUNCH opened our NAT for it) — so that
// whoever holds the channel key cannot make us flood a third party (return routability,
// devloc-protocol(7) ADDRESS VALIDATION). Answered candidates are punched every 25 ms for
// 100 ms, every 100 ms up to a second, then every 250 ms, as before. A channel has at most
// MAX_CANDIDATES candidates; a PUNCH from a further address gets its PUNCH_ACK only.
// A PUNCH is answered with PUNCH_ACK to its source address (one datagram for one). A PUNCH_ACK to one of our PUNCHes (matched by its
// request ID, which only we and the peer know: the proof that the address receives) confirms a path: the address it came from; so
// does, while still punching, an authenticated DATA (the peer's end is open). An
// authenticated PUNCH from an address that is no candidate makes it one ("peer-reflexive": the
// peer's NAT picked a new port for us, e.g. a symmetric NAT facing a restricted one). LAN
// candidates outrank peer-reflexive ones, which outrank the public address; for a second after
// the first path is confirmed, better unconfirmed candidates are still tried, and the channel
// moves to the best one that answers ('path' event). Then a PUNCH every 15 s (±10%) keeps the
// NAT bindings alive; after 2.5 keepalive periods without any datagram from the peer, every
// candidate is punched again, and the channel closes if none answers within the punch timeout.
//
// Data. DATA carries a message number n (1, 2, 3, ... per direction) and the ChaCha20
// ciphertext of the payload; the envelope's sequence number is the cipher nonce and goes through
// a replay window (src/wire/session.ts). Messages are delivered in order: a gap in n is reported
// as loss ('loss' event), a message older than one already delivered is dropped (it was counted
// as lost). A DATA with `ack` is acknowledged by DATA_ACK; an empty payload with `ack` is a ping
// (answered, not delivered). Nothing that fails the MAC, the replay window or the channel's keys
// is accepted: a third party can neither inject, replay nor read.
//
// Relayed path (issue 17; devloc-agent(8), RELAYED CHANNELS). A candidate is reached either on
// the agent's socket or through the agent's TURN allocation (relay.ts): the initiator that
// allocated tells the peer its relayed address in the introduction; the peer punches that
// address from its own socket (a 'relay' candidate), and the initiator answers through the
// relay to wherever the relay saw the PUNCH come from (a 'relay' candidate reached via the
// relay). The datagrams are the same sealed ones: the relay sees only ciphertext. Relay
// candidates rank below every direct one. When the matrix allows a direct path they are probed
// only after `relayAfterMs` of direct punching; when it rules one out, at once. While the path
// is relayed, the direct candidates keep being punched in the background, one PUNCH each every
// `backgroundPunchMs` (the return-routability bound per round), and the channel moves to the
// first one that answers. The move never loses or reorders a message: the last thing sent on
// the relay is a ping, and what is sent meanwhile waits (bounded) until that ping is answered
// or `fenceMs` passed, then goes on the direct path; n stays one sequence.
//
// Re-introductions: moving to another relay (the relay died, or the allocation's credentials
// expired) and address changes (the agent re-registered from a new address; devloc-agent(8),
// ADDRESS CHANGES) are one mechanism. The end that moved is told by the peer manager: its relay
// is gone (relayMoving: nothing is sent or punched while it allocates elsewhere), or its address
// changed (reestablish with a grace: it punches every candidate again at once while it registers
// again). The manager then sends an INTRODUCE naming this channel (`resumes`) with the new
// addresses (a new relayed address when the path went through our relay), which the peer gets as
// INTRO field 10, and calls reestablish() with the addresses of the answer; the peer's end gets
// reestablish() with the addresses of that INTRO. Both then punch again like a silent channel,
// and the first path that answers (the old one, if it still does) carries the channel on. A peer
// whose path was the other end's relayed address waits `relayMoveWaitMs` beyond the punch
// timeout for that INTRO before it reports RELAY_LOST. Nothing of the channel API is lost or
// duplicated by a move: each end keeps the messages it sent that the peer has not acknowledged
// (the `rx` of every PUNCH_ACK, a DATA_ACK; at most MAX_RETAINED, in a ring), holds what is sent
// during the move, and once the new path answers sends again, in order and with their numbers n,
// those above the peer's `rx`; the receiver drops any copy it already had (n not above its last).
// Only messages pushed out of the MAX_RETAINED bound are lost, and they are reported as loss.
import type { KeyObject } from 'node:crypto';
import { randomBytes } from 'node:crypto';
import type { Address } from '../wire/addr.js';
import { formatAddress, normaliseIp } from '../wire/addr.js';
import type { Bodies, MessageName } from '../wire/catalog.js';
import { MAX_CHANNEL_PAYLOAD, PEER_KEEPALIVE_S, REQUEST_ID_BYTES } from '../wire/constants.js';
import type { Message } from '../wire/envelope.js';
import { encodeDatagram } from '../wire/envelope.js';
import { generatePair, privateKeyObject } from '../wire/keys.js';
import type { ChannelRole, DataKeys, PunchKeys } from '../wire/peer.js';
import { channelCipher, deriveDataKeys, derivePunchKeys } from '../wire/peer.js';
import { ReplayWindow, sealDatagram, verifyDatagram } from '../wire/session.js';
import type { AgentLog } from './errors.js';
import { SafeEmitter } from './emitter.js';
import { AgentError } from './errors.js';
import type { TurnTransport } from './turn/client.js';

/** Where a candidate address comes from; the order is the preference. */
export type CandidateKind = 'lan' | 'peer-reflexive' | 'public' | 'relay';
const PRIORITY: Record<CandidateKind, number> = { lan: 3, 'peer-reflexive': 2, public: 1, relay: 0 };
/** How a datagram to a candidate leaves: the agent's socket, or through its TURN allocation. */
export type Via = 'socket' | 'relay';

export interface PathInfo {
  addr: string;
  kind: CandidateKind;
  /** Round trip of the PUNCH that confirmed it (or of the last keepalive), ms. */
  rttMs: number | null;
  /** Relayed paths only: how this end reaches the relay (through its own allocation: the allocation's transport; to the peer's relayed address: udp). */
  transport?: TurnTransport;
}

export type ChannelState = 'punching' | 'open' | 'failed' | 'closed';

export interface ChannelStats {
  /** DATA sent (pings included) and delivered to the application. */
  sent: number;
  received: number;
  /** Messages missing from the sequence (gaps), and late ones dropped. */
  lost: number;
  late: number;
  /** Datagrams for this channel refused: bad MAC, replay, no keys yet, bad key. */
  refused: number;
  punchesSent: number;
  punchAcks: number;
  /** Bytes of this channel's datagrams that went through a relay (both ways). */
  relayedBytes: number;
  /** Moves from a relayed path to a direct one. */
  upgrades: number;
  /** Moves from a lost (or expired) relay to another relayed path. */
  relayMoves: number;
}

export interface ChannelSummary {
  channel: string;
  peer: string;
  names: string[];
  nickname?: string;
  role: ChannelRole;
  state: ChannelState;
  path: PathInfo | null;
  /** Why it failed or closed. */
  reason: string | null;
  candidates: string[];
  startedAt: string;
  openedAt: string | null;
  /** ms from start to the first confirmed path. */
  punchMs: number | null;
  stats: ChannelStats;
}

export interface ChannelEvents {
  open: [path: PathInfo];
  /** The path changed (a better candidate answered); null: lost, punching again. */
  path: [path: PathInfo | null];
  message: [data: Buffer, info: { n: number }];
  loss: [info: { missing: number; first: number; last: number; total: number }];
  close: [reason: string];
  /** An exception thrown by a listener of another event (caught and logged; the channel goes on). */
  error: [err: Error];
}

export interface ChannelTiming {
  /** Give up punching after this long, ms (default 10000). */
  punchTimeoutMs: number;
  /** Keepalive period once open, ms (default PEER_KEEPALIVE_S). */
  keepaliveMs: number;
  /** After the first path, keep trying better candidates this long, ms (default 1000). */
  upgradeWindowMs: number;
  /** Direct punching alone this long before relay candidates are tried, when the matrix allows a direct path, ms (default 3000). */
  relayAfterMs: number;
  /** While relayed: one PUNCH to each direct candidate this often, ms (default 5000). */
  backgroundPunchMs: number;
  /** On the move from the relay to a direct path: longest wait for the relay to drain, ms (default 2000). */
  fenceMs: number;
  /** On a path to the peer's relayed address gone silent: wait this long beyond punchTimeoutMs for the peer to move the channel to another relay, ms (default two keepalive periods). */
  relayMoveWaitMs: number;
}

export const defaultChannelTiming: ChannelTiming = {
  punchTimeoutMs: 10_000, keepaliveMs: PEER_KEEPALIVE_S * 1000, upgradeWindowMs: 1000, relayAfterMs: 3000, backgroundPunchMs: 5000, fenceMs: 2000,
  relayMoveWaitMs: 2 * PEER_KEEPALIVE_S * 1000,
};

export interface ChannelInit {
  id: Buffer;
  role: ChannelRole;
  peer: Buffer;
  names: string[];
  nickname?: string;
  channelKey: Buffer;
  candidates: { addr: Address; kind: CandidateKind; via?: Via }[];
  send: (to: Address, bytes: Buffer, via: Via) => void;
  /** Whether the matrix allows a direct path (false: relay candidates are probed at once). */
  directPossible?: boolean;
  /** Forced relaying: datagrams that did not come through our relay are refused (only relay candidates). */
  relayOnly?: boolean;
  /**
   * Called when a channel on a path through our relay lost it (silence): the reason to report
   * (relay.ts), or null when the manager moves the channel to another relay (relayMoving).
   */
  relayLost?: (why: string) => string | null;
  /** How the agent's allocation reaches its relay (PathInfo.transport of a path through it). */
  relayTransport?: () => TurnTransport | null;
  timing?: Partial<ChannelTiming>;
  now?: () => number;
  random?: () => number;
  log?: AgentLog;
}

interface Candidate {
  addr: Address;
  key: string;
  kind: CandidateKind;
  via: Via;
  confirmed: boolean;
  /** Last PUNCH sent because one arrived from there (at most one per TRIGGER_GAP_MS). */
  triggeredAt: number;
  /** PUNCHes sent while it had not answered (bounded by MAX_UNANSWERED_PUNCHES). */
  unanswered: number;
  /** Whether the triggered PUNCH of an unanswered candidate was spent. */
  triggered: boolean;
  /** Answered once (a PUNCH_ACK to our PUNCH, or DATA): it proved it receives. */
  answered: boolean;
  /** Last unanswered probe of a relayed address (see mayProbe). */
  probedAt: number;
}

const TRIGGER_GAP_MS = 20;
/** PUNCHes to a candidate that never answered: its first probe and one triggered check. */
export const MAX_UNANSWERED_PUNCHES = 2;
/**
 * PUNCHes to a relay candidate that has not answered (the peer's relayed address from the
 * introduction, or the peer's address through our relay), and their spacing: a lost round trip
 * is tried again within the punch timeout (6 round trips lost in a row at 10% loss: 5e-5).
 */
export const MAX_UNANSWERED_RELAY_PUNCHES = 6;
export const RELAY_PROBE_GAP_MS = 500;
/** Candidate addresses per channel (LAN, public and peer-reflexive together). */
export const MAX_CANDIDATES = 8;

const addrKey = (a: Address, via: Via = 'socket'): string => `${via === 'relay' ? 'relay|' : ''}${normaliseIp(a.ip)}|${a.port}`;
/** Messages held while the relay drains on a move to a direct path (more are sent at once). */
const MAX_FENCE_QUEUE = 1024;
/** Messages kept until the peer acknowledges them (sent again after a move: another relay, an address change). */
export const MAX_RETAINED = 1024;
const iso = (ms: number | undefined): string | null => (ms === undefined ? null : new Date(ms).toISOString());
/** Largest number of PUNCH request IDs remembered (answers to older ones are still liveness). */
const MAX_PENDING_PUNCHES = 256;

interface RetainedMessage { n: number; payload: Buffer; ack: boolean }

/**
 * The messages kept until the peer acknowledges them, in order of n: a ring of `capacity`
 * (a push at the bound overwrites the oldest in O(1); an array's shift() there was O(n) per send).
 */
class Retained {
  private readonly ring: (RetainedMessage | undefined)[];
  private head = 0;
  private size = 0;

  constructor(private readonly capacity: number) {
    this.ring = new Array<RetainedMessage | undefined>(capacity);
  }

  push(m: RetainedMessage): void {
    if (this.size === this.capacity) {
      this.ring[this.head] = m;
      this.head = (this.head + 1) % this.capacity;
    } else {
      this.ring[(this.head + this.size) % this.capacity] = m;
      this.size++;
    }
  }

  /** Forget the messages numbered `n` or less (the oldest first). */
  dropUpTo(n: number): void {
    while (this.size > 0 && this.ring[this.head]!.n <= n) {
      this.ring[this.head] = undefined;
      this.head = (this.head + 1) % this.capacity;
      this.size--;
    }
  }

  /** The messages numbered above `n`, oldest first. */
  above(n: number): RetainedMessage[] {
    const out: RetainedMessage[] = [];
    for (let i = 0; i < this.size; i++) {
      const m = this.ring[(this.head + i) % this.capacity]!;
      if (m.n > n) out.push(m);
    }
    return out;
  }
}

export class Channel extends SafeEmitter<ChannelEvents> {
  readonly id: Buffer;
  readonly idHex: string;
  readonly role: ChannelRole;
  readonly peer: Buffer;
  readonly peerHex: string;
  readonly names: string[];
  readonly nickname: string | undefined;
  readonly stats: ChannelStats = { sent: 0, received: 0, lost: 0, late: 0, refused: 0, punchesSent: 0, punchAcks: 0, relayedBytes: 0, upgrades: 0, relayMoves: 0 };

  private _state: ChannelState = 'punching';
  private _path: (PathInfo & { address: Address; via: Via }) | null = null;
  private readonly directPossible: boolean;
  private readonly relayOnly: boolean;
  private readonly relayTransport: (() => TurnTransport | null) | undefined;
  private readonly relayLost: ((why: string) => string | null) | undefined;
  /**
   * A move (see the top of the file): 'waiting' while the manager allocates and introduces again
   * (our relay is gone), 'punching' while the new path is searched. Sends are held meanwhile.
   */
  private moving: 'no' | 'waiting' | 'punching' = 'no';
  /** What we sent that the peer has not acknowledged (see the top of the file). */
  private readonly retained = new Retained(MAX_RETAINED);
  /** The highest message number the peer says it received (PUNCH_ACK rx). */
  private peerRx = 0;
  /** Messages waiting for the relay to drain (see the top of the file). */
  private fence: { rid: string; queue: Buffer[]; timer: ReturnType<typeof setTimeout> } | undefined;
  private reason: string | null = null;
  private readonly timing: ChannelTiming;
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly log: AgentLog;
  private readonly sendOut: (to: Address, bytes: Buffer, via: Via) => void;
  private readonly candidates: Candidate[] = [];

  private readonly ephSecret: KeyObject;
  private readonly ephPublic: Buffer;
  private peerEph: Buffer | undefined;
  private readonly channelKey: Buffer;
  private readonly punchTx: KeyObject;
  private readonly punchRx: KeyObject;
  private dataTx: { enc: Buffer; mac: KeyObject } | undefined;
  private dataRx: { enc: Buffer; mac: KeyObject } | undefined;

  private txSeq = 0;
  private txN = 0;
  private rxN = 0;
  private readonly window = new ReplayWindow();
  private readonly punches = new Map<string, { to: Address; via: Via; at: number }>();
  private readonly pings = new Map<string, { at: number; resolve: (rtt: number | null) => void; timer: ReturnType<typeof setTimeout> }>();

  private readonly startedAt: number;
  private openedAt: number | undefined;
  private punchStartedAt: number;
  private upgradeUntil = 0;
  private lastRx = 0;
  private punchTimer: ReturnType<typeof setTimeout> | undefined;
  private keepTimer: ReturnType<typeof setTimeout> | undefined;
  private repunching = false;
  /** Until then a re-establishing channel does not give up (its re-introduction waits for the agent to register again). */
  private moveGraceUntil = 0;
  /** The move under way replaces a relayed address (counted in stats.relayMoves when it ends). */
  private relayMove = false;

  constructor(init: ChannelInit) {
    // Events fire inside the socket's 'message' handler and timers: a listener that throws (e.g.
    // `send()` answering a message on a channel that is not open) must not unwind into them.
    super(init.log ?? (() => {}));
    this.id = init.id;
    this.idHex = init.id.toString('hex');
    this.role = init.role;
    this.peer = init.peer;
    this.peerHex = init.peer.toString('hex');
    this.names = init.names;
    this.nickname = init.nickname;
    this.timing = { ...defaultChannelTiming, ...init.timing };
    this.now = init.now ?? Date.now;
    this.random = init.random ?? Math.random;
    this.log = init.log ?? (() => {});
    this.sendOut = init.send;
    this.directPossible = init.directPossible ?? true;
    this.relayOnly = init.relayOnly ?? false;
    this.relayLost = init.relayLost;
    this.relayTransport = init.relayTransport;
    this.channelKey = init.channelKey;
    // Bounded (MAX_CANDIDATES): the public and relayed addresses first, then as many LAN addresses as fit.
    const initial = [...init.candidates.filter((c) => c.kind !== 'lan'), ...init.candidates.filter((c) => c.kind === 'lan')];
    for (const c of initial.slice(0, MAX_CANDIDATES)) this.addCandidate(c.addr, c.kind, c.via ?? 'socket');
    const eph = generatePair('x25519');
    this.ephSecret = privateKeyObject('X25519', eph);
    this.ephPublic = eph.public;
    const pk: PunchKeys = derivePunchKeys(init.channelKey, init.id);
    this.punchTx = this.role === 'initiator' ? pk.initiatorToResponder : pk.responderToInitiator;
    this.punchRx = this.role === 'initiator' ? pk.responderToInitiator : pk.initiatorToResponder;
    this.startedAt = this.now();
    this.punchStartedAt = this.startedAt;
  }

  get state(): ChannelState {
    return this._state;
  }

  get path(): PathInfo | null {
    if (!this._path) return null;
    const { address: _a, via, ...p } = this._path;
    if (p.kind !== 'relay') return p;
    const transport = via === 'relay' ? this.relayTransport?.() : 'udp';
    return transport ? { ...p, transport } : p;
  }

  /** Send `bytes` to `to` the way `via` says, counting what crosses a relay. */
  private sendRaw(to: Address, bytes: Buffer, via: Via = 'socket'): void {
    if (via === 'relay' || this.candidates.find((c) => c.key === addrKey(to, via))?.kind === 'relay') this.stats.relayedBytes += bytes.length;
    this.sendOut(to, bytes, via);
  }

  get isOpen(): boolean {
    return this._state === 'open';
  }

  /** Why the channel failed or closed (null while alive). */
  get closeReason(): string | null {
    return this.reason;
  }

  summary(): ChannelSummary {
    return {
      channel: this.idHex, peer: this.peerHex, names: this.names, ...(this.nickname !== undefined ? { nickname: this.nickname } : {}),
      role: this.role, state: this._state, path: this.path, reason: this.reason,
      candidates: this.candidates.map((c) => `${formatAddress(c.addr)} (${c.kind}${c.confirmed ? ', answered' : ''})`),
      startedAt: iso(this.startedAt)!, openedAt: iso(this.openedAt), punchMs: this.openedAt === undefined ? null : this.openedAt - this.startedAt,
      stats: { ...this.stats },
    };
  }

  /** Start punching (the manager calls it once the channel is registered for incoming datagrams). */
  start(): void {
    this.log('debug', 'punching', { channel: this.idHex, peer: this.peerHex, candidates: this.candidates.map((c) => formatAddress(c.addr)) });
    this.punchRound();
  }

  /** Resolves with the path once open; rejects with AgentError('PUNCH_FAILED') if it fails or closes first. */
  waitOpen(): Promise<PathInfo> {
    if (this._state === 'open') return Promise.resolve(this.path!);
    if (this._state !== 'punching') return Promise.reject(new AgentError('PUNCH_FAILED', this.reason ?? 'channel closed'));
    return new Promise((resolve, reject) => {
      const onOpen = (p: PathInfo): void => {
        this.off('close', onClose);
        resolve(p);
      };
      const onClose = (reason: string): void => {
        this.off('open', onOpen);
        reject(new AgentError('PUNCH_FAILED', reason));
      };
      this.once('open', onOpen);
      this.once('close', onClose);
    });
  }

  // ------------------------------------------------------------------ sending

  private encode<N extends MessageName>(name: N, rid: Uint8Array, body: Bodies[N], key: KeyObject): Buffer {
    this.txSeq++;
    return sealDatagram(key, encodeDatagram(name, rid, body, { sid: this.id, seq: this.txSeq }));
  }

  private sendPunch(to: Address, via: Via, close = false): void {
    const rid = randomBytes(REQUEST_ID_BYTES);
    if (!close) {
      this.punches.set(rid.toString('hex'), { to, via, at: this.now() });
      if (this.punches.size > MAX_PENDING_PUNCHES) this.punches.delete(this.punches.keys().next().value!);
    }
    this.stats.punchesSent++;
    this.sendRaw(to, this.encode('PUNCH', rid, close ? { eph: this.ephPublic, close: true } : { eph: this.ephPublic }, this.punchTx), via);
  }

  private requireOpen(): { enc: Buffer; mac: KeyObject; to: Address; via: Via } {
    if (this._state !== 'open' || !this._path || !this.dataTx) {
      throw new AgentError('CHANNEL_NOT_OPEN', `channel ${this.idHex} is ${this._state}${this.reason ? ` (${this.reason})` : ''}`);
    }
    return { ...this.dataTx, to: this._path.address, via: this._path.via };
  }

  private sealData(n: number, payload: Uint8Array, ack: boolean, rid: Buffer): Buffer {
    const { enc, mac } = this.dataTx!;
    const seq = this.txSeq + 1;
    const body: Bodies['DATA'] = { n, payload: channelCipher(enc, seq, payload) };
    if (ack) body.ack = true;
    return this.encode('DATA', rid, body, mac);
  }

  private sendData(payload: Uint8Array, ack: boolean, rid: Buffer): number {
    const { to, via } = this.requireOpen();
    this.txN++;
    this.stats.sent++;
    this.retained.push({ n: this.txN, payload: Buffer.from(payload), ack });
    // During a move: held (retained), sent once the new path answers (afterMove).
    if (this.moving !== 'no') return this.txN;
    const dg = this.sealData(this.txN, payload, ack, rid);
    if (this.fence) {
      this.fence.queue.push(dg);
      if (this.fence.queue.length >= MAX_FENCE_QUEUE) this.flushFence('queue full');
    } else this.sendRaw(to, dg, via);
    return this.txN;
  }

  /**
   * Leaving the relay for a direct path: a ping goes last on the relay, and what is sent until
   * its answer (or fenceMs) waits, so that nothing sent later on the faster path overtakes it.
   */
  private startFence(): void {
    if (this.fence || !this._path || !this.dataTx) return;
    const rid = randomBytes(REQUEST_ID_BYTES);
    this.sendData(new Uint8Array(0), true, rid);
    this.fence = { rid: rid.toString('hex'), queue: [], timer: setTimeout(() => this.flushFence('timeout'), this.timing.fenceMs) };
  }

  private flushFence(why: string): void {
    const f = this.fence;
    if (!f) return;
    this.fence = undefined;
    clearTimeout(f.timer);
    this.log('debug', 'relay drained: sending on the direct path', { channel: this.idHex, held: f.queue.length, why });
    if (!this._path) return;
    for (const dg of f.queue) this.sendRaw(this._path.address, dg, this._path.via);
  }

  /** Send one datagram to the peer; returns its message number. Throws AgentError when not open or too large. */
  send(data: Uint8Array | string): number {
    const bytes = typeof data === 'string' ? Buffer.from(data) : data;
    if (bytes.length === 0) throw new AgentError('BAD_REQUEST', 'empty message (an empty payload is a ping: use ping())');
    if (bytes.length > MAX_CHANNEL_PAYLOAD) throw new AgentError('TOO_LARGE', `message of ${bytes.length} bytes exceeds ${MAX_CHANNEL_PAYLOAD}`);
    return this.sendData(bytes, false, randomBytes(REQUEST_ID_BYTES));
  }

  /** Round trip of a ping over the data path, ms (0.1 ms resolution); null when no answer came within `timeoutMs`. */
  ping(timeoutMs = 2000): Promise<number | null> {
    const rid = randomBytes(REQUEST_ID_BYTES);
    const at = performance.now();
    this.sendData(new Uint8Array(0), true, rid);
    return new Promise((resolve) => {
      const key = rid.toString('hex');
      const timer = setTimeout(() => {
        this.pings.delete(key);
        resolve(null);
      }, timeoutMs);
      this.pings.set(key, { at, resolve, timer });
    });
  }

  /**
   * The channel is re-introduced (see the top of the file): our address changed, the peer's did
   * (its INTRO naming this channel), or our relay was replaced (after relayMoving). Add
   * `candidates`, punch every candidate again now, and hold what is sent until a path answers.
   * `replaceRelay` drops the relayed candidates the move made useless first: 'ours' (through our
   * old allocation) or 'peer' (the peer's old relayed address). Only for an open channel; the
   * punch timeout starts again, and does not end before `graceMs` from now.
   */
  reestablish(candidates: { addr: Address; kind: CandidateKind; via?: Via }[], why: string, o: { graceMs?: number; replaceRelay?: 'ours' | 'peer' } = {}): void {
    if (this._state === 'punching') {
      // Not open yet (a peer that cannot send UDP re-introduced itself): more candidates only.
      for (const c of candidates) if (!this.relayOnly || c.via === 'relay') this.admit(c.addr, c.kind, c.via ?? 'socket');
      this.log('info', 'peer channel: candidates from a re-introduction', { channel: this.idHex, why });
      return;
    }
    if (this._state !== 'open') return;
    if (o.replaceRelay === 'ours') this.dropCandidates((c) => c.via === 'relay');
    else if (o.replaceRelay === 'peer') this.dropCandidates((c) => c.kind === 'relay' && c.via === 'socket');
    if (o.replaceRelay) this.relayMove = true;
    for (const c of candidates) {
      const via = c.via ?? 'socket';
      // Forced relaying answers only what comes through our relay.
      if (this.relayOnly && via !== 'relay') continue;
      this.admit(c.addr, c.kind, via);
    }
    const now = this.now();
    this.moveGraceUntil = Math.max(this.moveGraceUntil, now + (o.graceMs ?? 0));
    if (this.moving === 'no') {
      this.log('info', 'peer channel re-establishing', { channel: this.idHex, why });
      this.emit('path', null);
    } else if (this.moving === 'waiting') {
      this.log('info', 'peer channel: new relayed address sent to the peer, punching again', { channel: this.idHex, why });
    }
    this.moving = 'punching';
    this.repunching = true;
    this.punchStartedAt = now;
    if (this.punchTimer) clearTimeout(this.punchTimer);
    this.punchRound();
  }

  /** The agent's relay allocation is gone: a channel whose path went through it closes with `reason`. */
  relayGone(reason: string): void {
    if (this._path?.via !== 'relay') return;
    this.finish(this._state === 'open' ? 'closed' : 'failed', reason);
  }

  /** The peer's address this open channel reaches through our relay (null: its path is not through our relay). */
  get relayPeer(): Address | null {
    return this._state === 'open' && this._path?.via === 'relay' ? this._path.address : null;
  }

  /** Our relay under the path is gone and the manager moves the channel (see the top of the file): hold what is sent. */
  relayMoving(why: string): void {
    if (this.relayPeer === null || this.moving === 'waiting') return;
    this.moving = 'waiting';
    this.relayMove = true;
    if (this.punchTimer) clearTimeout(this.punchTimer);
    this.punchTimer = undefined;
    this.log('warn', 'peer channel moving to another relay', { channel: this.idHex, why });
    this.emit('path', null);
  }

  private dropCandidates(drop: (c: Candidate) => boolean): void {
    for (let i = this.candidates.length - 1; i >= 0; i--) if (drop(this.candidates[i]!)) this.candidates.splice(i, 1);
  }

  /** A path answered after a move: send again what the peer has not had, in order. */
  private afterMove(): void {
    if (this.moving !== 'punching' || this.repunching || !this._path || !this.dataTx) return;
    this.moving = 'no';
    this.moveGraceUntil = 0;
    if (this.relayMove) this.stats.relayMoves++;
    this.relayMove = false;
    const again = this.retained.above(this.peerRx);
    this.log('info', 'peer channel moved', { channel: this.idHex, path: this._path.addr, kind: this._path.kind, resent: again.length });
    for (const m of again) this.sendRaw(this._path.address, this.sealData(m.n, m.payload, m.ack, randomBytes(REQUEST_ID_BYTES)), this._path.via);
  }

  /** The peer received every message up to `n`: forget them. */
  private acknowledged(n: number): void {
    if (n > this.peerRx) this.peerRx = n;
    this.retained.dropUpTo(n);
  }

  /** Close: tell the peer (when open) and stop. */
  close(reason = 'closed'): void {
    if (this._state === 'closed' || this._state === 'failed') return;
    this.flushFence('closing');
    if (this._state === 'open' && this._path) {
      // Two copies: a lost one would leave the peer keeping the channel alive for nothing.
      this.sendPunch(this._path.address, this._path.via, true);
      this.sendPunch(this._path.address, this._path.via, true);
    }
    this.finish(this._state === 'open' ? 'closed' : 'failed', reason);
  }

  private finish(state: 'closed' | 'failed', reason: string): void {
    if (this.punchTimer) clearTimeout(this.punchTimer);
    if (this.keepTimer) clearTimeout(this.keepTimer);
    this.punchTimer = this.keepTimer = undefined;
    if (this.fence) clearTimeout(this.fence.timer);
    this.fence = undefined;
    for (const p of this.pings.values()) {
      clearTimeout(p.timer);
      p.resolve(null);
    }
    this.pings.clear();
    this._state = state;
    this.reason = reason;
    this.log('info', state === 'failed' ? 'peer channel failed' : 'peer channel closed', { channel: this.idHex, peer: this.peerHex, reason });
    this.emit('close', reason);
  }

  // ------------------------------------------------------------------ punching and keepalive

  /** Whether another PUNCH may go to `c` (see MAX_UNANSWERED_PUNCHES); counts it if so. */
  private mayProbe(c: Candidate, triggered: boolean): boolean {
    if (c.answered) return true;
    if (c.kind === 'relay' && !triggered) {
      // The peer's relayed address forwards nothing until the peer's permission for us is in
      // place, which it creates only after the introduction: our first PUNCH may arrive before.
      // The peer reached through our relay has only the triggered PUNCH its first one earned
      // and one more, and a lost PUNCH or PUNCH_ACK (10% loss: 1 in 5 round trips) left the
      // channel open at the peer and failed here, although the peer showed it was there. So
      // both get a few more, spaced (MAX_UNANSWERED_RELAY_PUNCHES, RELAY_PROBE_GAP_MS apart):
      // our relay forwards only to the introduced peer's IP, and the peer's relayed address is
      // a relay's, so no third party gets more than those few.
      const now = this.now();
      if (c.unanswered >= MAX_UNANSWERED_RELAY_PUNCHES || now - c.probedAt < RELAY_PROBE_GAP_MS) return false;
      c.probedAt = now;
      c.unanswered++;
      return true;
    }
    if (c.unanswered >= MAX_UNANSWERED_PUNCHES) return false;
    if (triggered ? c.triggered : c.unanswered - (c.triggered ? 1 : 0) >= 1) return false;
    if (triggered) c.triggered = true;
    c.unanswered++;
    return true;
  }

  /**
   * A re-introduced candidate, within MAX_CANDIDATES (return routability: a channel probes a
   * bounded set): when full, a new address replaces the least preferred one that is not the path.
   */
  private admit(addr: Address, kind: CandidateKind, via: Via): void {
    if (this.candidates.length >= MAX_CANDIDATES && !this.candidates.some((x) => x.key === addrKey(addr, via))) {
      const drop = this.candidates.findLastIndex((x) => !this._path || x.key !== addrKey(this._path.address, this._path.via));
      if (drop < 0) return;
      this.candidates.splice(drop, 1);
    }
    this.addCandidate(addr, kind, via);
  }

  private addCandidate(addr: Address, kind: CandidateKind, via: Via): Candidate {
    const key = addrKey(addr, via);
    let c = this.candidates.find((x) => x.key === key);
    if (!c) {
      c = { addr, key, kind, via, confirmed: false, triggeredAt: -Infinity, unanswered: 0, triggered: false, answered: false, probedAt: -Infinity };
      this.candidates.push(c);
      this.candidates.sort((a, b) => PRIORITY[b.kind] - PRIORITY[a.kind]);
    } else if (PRIORITY[kind] > PRIORITY[c.kind]) c.kind = kind;
    return c;
  }

  private punchRound(): void {
    this.punchTimer = undefined;
    if (this._state === 'closed' || this._state === 'failed') return;
    const now = this.now();
    const searching = this._state === 'punching' || this.repunching;
    // A path to the peer's relayed address gone silent: the peer may be moving the channel to
    // another relay (its INTRO comes after its own silence detection and a new allocation).
    const peerRelay = this._path?.kind === 'relay' && this._path.via === 'socket' && this.moving === 'no';
    const limit = this.timing.punchTimeoutMs + (this._state === 'open' && peerRelay ? this.timing.relayMoveWaitMs : 0);
    // Our address changed: the re-introduction waits for the agent to register again first.
    if (searching && now - this.punchStartedAt >= limit && now >= this.moveGraceUntil) {
      const n = this.candidates.length;
      const why = `no answer from the peer at ${n} candidate address${n === 1 ? '' : 'es'} within ${Math.round(limit / 1000)} s`;
      if (this._state === 'punching') this.finish('failed', why);
      else if (this._path?.kind === 'relay') {
        const r = this._path.via === 'relay' && this.relayLost ? this.relayLost(why) : `the relay at ${this._path.addr} stopped answering (${why})`;
        // null: the manager moves the channel to another relay (relayMoving was called).
        if (r !== null) this.finish('closed', `RELAY_LOST: ${r}`);
      } else this.finish('closed', `peer unreachable: ${why}`);
      return;
    }
    if (!searching && now >= this.upgradeUntil) {
      if (this._path?.kind === 'relay') this.backgroundPunch();
      return;
    }
    const best = this._path ? PRIORITY[this._path.kind] : -1;
    // Relay candidates wait while a direct path may still answer (the matrix allows one).
    const relayNow = !this.directPossible || now - this.startedAt >= this.timing.relayAfterMs;
    for (const c of this.candidates) {
      if (c.kind === 'relay' && !relayNow) continue;
      if ((searching ? !c.confirmed || this.repunching : !c.confirmed && PRIORITY[c.kind] > best) && this.mayProbe(c, false)) this.sendPunch(c.addr, c.via);
    }
    const elapsed = now - this.punchStartedAt;
    this.punchTimer = setTimeout(() => this.punchRound(), elapsed < 100 ? 25 : elapsed < 1000 ? 100 : 250);
  }

  /**
   * While relayed: one PUNCH to each direct candidate per round (its unanswered count starts
   * again each round, so a third party gets at most one datagram per backgroundPunchMs).
   */
  private backgroundPunch(): void {
    for (const c of this.candidates) {
      if (c.kind === 'relay' || c.confirmed) continue;
      c.unanswered = 0;
      c.triggered = false;
      if (this.mayProbe(c, false)) this.sendPunch(c.addr, c.via);
    }
    this.punchTimer = setTimeout(() => this.punchRound(), this.timing.backgroundPunchMs);
  }

  private confirm(addr: Address, kind: CandidateKind, via: Via, rttMs: number | null): void {
    const c = this.addCandidate(addr, kind, via);
    c.confirmed = true;
    c.answered = true;
    const now = this.now();
    const better = !this._path || PRIORITY[c.kind] > PRIORITY[this._path.kind] || this.repunching;
    if (this._path && this._path.address && addrKey(this._path.address, this._path.via) === c.key) {
      this._path.rttMs = rttMs;
      if (this.repunching) {
        this.repunching = false;
        if (this.moving === 'punching') this.emit('path', this.path);
      }
      this.afterMove();
      return;
    }
    // A PUNCH_ACK always carries the peer's key, so data keys exist by now; be sure anyway.
    if (!better || !this.dataTx) return;
    const upgrade = this._state === 'open' && this._path?.kind === 'relay' && c.kind !== 'relay';
    if (upgrade) {
      this.stats.upgrades++;
      // After a move between relays the old relay is gone: nothing in it to wait for.
      if (this.moving === 'no') this.startFence();
      this.log('info', 'peer channel upgraded from the relay to a direct path', { channel: this.idHex, path: formatAddress(c.addr), kind: c.kind });
    }
    this._path = { address: c.addr, addr: formatAddress(c.addr), kind: c.kind, rttMs, via: c.via };
    this.repunching = false;
    if (this._state === 'punching') {
      this._state = 'open';
      this.openedAt = now;
      this.upgradeUntil = now + this.timing.upgradeWindowMs;
      this.log('info', 'peer channel open', { channel: this.idHex, peer: this.peerHex, path: this._path.addr, kind: c.kind, punchMs: now - this.startedAt });
      this.scheduleKeepalive();
      this.emit('open', this.path!);
    } else {
      this.log('info', 'peer channel path changed', { channel: this.idHex, path: this._path.addr, kind: c.kind });
    }
    this.afterMove();
    this.emit('path', this.path);
  }

  private scheduleKeepalive(): void {
    if (this.keepTimer) clearTimeout(this.keepTimer);
    const delay = Math.round(this.timing.keepaliveMs * (0.9 + 0.2 * this.random()));
    this.keepTimer = setTimeout(() => this.keepalive(), delay);
  }

  private keepalive(): void {
    this.keepTimer = undefined;
    if (this._state !== 'open' || !this._path) return;
    if (this.moving === 'waiting') {
      // The manager is allocating and introducing again: it ends with reestablish or relayGone.
      this.scheduleKeepalive();
      return;
    }
    const now = this.now();
    if (!this.repunching && now - this.lastRx > this.timing.keepaliveMs * 2.5) {
      // Silent too long: NAT binding lost or the peer moved. Punch every candidate again, keeping
      // the old path for sending meanwhile.
      this.repunching = true;
      this.punchStartedAt = now;
      this.log('warn', 'peer channel silent, punching again', { channel: this.idHex, silentMs: now - this.lastRx });
      this.emit('path', null);
      if (!this.punchTimer) this.punchRound();
    } else if (!this.repunching) {
      this.sendPunch(this._path.address, this._path.via);
    }
    this.scheduleKeepalive();
  }

  // ------------------------------------------------------------------ receiving

  private learnPeerEph(eph: Uint8Array): boolean {
    if (this.peerEph) return this.peerEph.equals(eph);
    const peerEph = Buffer.from(eph);
    const [ephI, ephR] = this.role === 'initiator' ? [this.ephPublic, peerEph] : [peerEph, this.ephPublic];
    const keys: DataKeys | null = deriveDataKeys(this.ephSecret, peerEph, this.channelKey, this.id, ephI, ephR);
    if (!keys) return false;
    this.peerEph = peerEph;
    this.dataTx = this.role === 'initiator' ? keys.initiatorToResponder : keys.responderToInitiator;
    this.dataRx = this.role === 'initiator' ? keys.responderToInitiator : keys.initiatorToResponder;
    return true;
  }

  private refuse(why: string, from: Address): void {
    this.stats.refused++;
    this.log('debug', 'peer datagram refused', { channel: this.idHex, from: formatAddress(from), why });
  }

  /** A datagram whose session ID is this channel's (the manager dispatches by it). */
  receive(msg: Message, raw: Buffer, from: Address, via: Via = 'socket'): void {
    if (this._state === 'closed' || this._state === 'failed' || !msg.auth) return;
    const fromKey = addrKey(from, via);
    if (this.relayOnly && via !== 'relay') {
      this.refuse('not through the relay (relaying is forced)', from);
      return;
    }
    const data = msg.name === 'DATA' || msg.name === 'DATA_ACK';
    const key = data ? this.dataRx?.mac : msg.name === 'PUNCH' || msg.name === 'PUNCH_ACK' ? this.punchRx : undefined;
    if (!key) {
      this.refuse(data ? 'data before the key exchange' : `not a peer message: ${msg.name}`, from);
      return;
    }
    if (!verifyDatagram(key, raw)) {
      this.refuse('bad MAC', from);
      return;
    }
    const w = this.window.check(msg.auth.seq);
    if (w !== 'ok') {
      this.refuse(w === 'old' ? 'sequence left of the replay window' : 'replayed', from);
      return;
    }
    if ((msg.name === 'PUNCH' || msg.name === 'PUNCH_ACK') && !this.learnPeerEph(msg.body.eph)) {
      this.refuse('unusable or changed ephemeral key', from);
      return;
    }
    this.window.accept(msg.auth.seq);
    this.lastRx = this.now();
    const fromKind = this.candidates.find((c) => c.key === fromKey)?.kind;
    if (via === 'relay' || fromKind === 'relay') this.stats.relayedBytes += raw.length;
    /** What an address we did not list is: reached through the relay, or peer-reflexive. */
    const newKind: CandidateKind = via === 'relay' ? 'relay' : 'peer-reflexive';
    switch (msg.name) {
      case 'PUNCH': {
        if (msg.body.close) {
          this.sendRaw(from, this.encode('PUNCH_ACK', msg.rid, { eph: this.ephPublic, observed: from, rx: this.rxN }, this.punchTx), via);
          this.finish(this._state === 'open' ? 'closed' : 'failed', 'peer closed the channel');
          return;
        }
        this.sendRaw(from, this.encode('PUNCH_ACK', msg.rid, { eph: this.ephPublic, observed: from, rx: this.rxN }, this.punchTx), via);
        // Its PUNCH got here, so our NAT now lets that address in: punch back at once rather
        // than at the next round (a "triggered check"), and learn the address if it is new.
        // A new address becomes a candidate only while there is room: a PUNCH from any other
        // source gets its PUNCH_ACK and nothing more.
        const known = this.candidates.find((c) => c.key === fromKey)
          ?? (this.candidates.length < MAX_CANDIDATES ? this.addCandidate(from, newKind, via) : undefined);
        const searching = this._state === 'punching' || this.repunching || this.now() < this.upgradeUntil || this._path?.kind === 'relay';
        if (known && !known.confirmed && searching && this.now() - known.triggeredAt >= TRIGGER_GAP_MS && this.mayProbe(known, true)) {
          known.triggeredAt = this.now();
          this.sendPunch(from, via);
        }
        return;
      }
      case 'PUNCH_ACK': {
        this.stats.punchAcks++;
        if (msg.body.rx !== undefined) this.acknowledged(msg.body.rx);
        const ridHex = Buffer.from(msg.rid).toString('hex');
        const p = this.punches.get(ridHex);
        if (!p) return; // an answer to a PUNCH long gone: liveness only
        this.punches.delete(ridHex);
        const sameAsSent = addrKey(p.to, p.via) === fromKey;
        const kind = sameAsSent ? fromKind ?? newKind : newKind;
        this.confirm(from, kind, via, this.now() - p.at);
        return;
      }
      case 'DATA': {
        if (this._state === 'punching') {
          // Only the peer holds the data keys, and it sends DATA only once its end is open: the
          // address this came from answers. Open on it (our PUNCH_ACK may still be on its way),
          // so that a listener answering the message can send.
          this.confirm(from, fromKind ?? newKind, via, null);
        }
        const plain = channelCipher(this.dataRx!.enc, msg.auth.seq, msg.body.payload);
        const n = msg.body.n;
        if (msg.body.ack) this.sendRaw(from, this.encode('DATA_ACK', msg.rid, { n }, this.dataTx!.mac), via);
        if (n <= this.rxN) {
          this.stats.late++;
          return;
        }
        if (n > this.rxN + 1) {
          const missing = n - this.rxN - 1;
          this.stats.lost += missing;
          this.emit('loss', { missing, first: this.rxN + 1, last: n - 1, total: this.stats.lost });
        }
        this.rxN = n;
        if (plain.length === 0) return; // a ping
        this.stats.received++;
        this.emit('message', plain, { n });
        return;
      }
      case 'DATA_ACK': {
        // Anything before n that the peer missed, it would drop as late: forget it too.
        this.acknowledged(msg.body.n);
        const ridHex = Buffer.from(msg.rid).toString('hex');
        if (this.fence?.rid === ridHex) this.flushFence('the relay drained');
        const p = this.pings.get(ridHex);
        if (!p) return;
        this.pings.delete(ridHex);
        clearTimeout(p.timer);
        p.resolve(Math.round((performance.now() - p.at) * 10) / 10);
        return;
      }
      default:
        return;
    }
  }
}
