// Peer connections (devloc-agent(8), PEER CONNECTIONS): introductions through locatord and the
// channels they lead to (channel.ts does the punching and the data).
//
// - connect(peer): INTRODUCE on the locatord session; the answer names the peer's observed and
//   LAN addresses and network mode and carries the channel key sealed under our session. The
//   peer gets INTRO at the same moment (if it registered `reachable`), so both punch at once.
// - INTRO pushed by locatord (MACed in our session, retransmitted until INTRO_ACK): acknowledged
//   for every copy; the first one opens a responder channel and emits it to the application.
// - Before punching, the connectivity matrix (src/wire/connectivity.ts) decides: two terminals
//   behind the same NAT (same observed IP) try each other's LAN addresses first, whatever their
//   modes; otherwise a pair the matrix marks impossible (symmetric to symmetric, symmetric to
//   port-restricted, UDP blocked) is not tried, and the reason is reported at once ('NO_DIRECT_PATH'
//   from connect(), and in status). A pair with an unclassified side is tried.
// - Opening the own NAT first: a PUNCH that reaches the peer's NAT before the peer's own
//   mapping toward us exists is, on a router without an input firewall (plain Linux masquerade),
//   delivered to the router itself; its conntrack entry takes the tuple the peer's PUNCH needs,
//   and masquerade sends that one from another port, which our NAT's filter drops: the pair
//   never connects (issue 17: 2 of 12). So each end first sends empty datagrams with a TTL of
//   OPEN_TTL to the peer's public address (they open its NAT's mapping toward the peer and die at
//   the next router), and its first PUNCH OPEN_DELAY_MS later, when both NATs are open.
//   Only toward a peer whose NAT can be spoilt that way (restricted, port-restricted or not
//   classified), and not for LAN paths (same NAT).
// - Every channel's datagrams travel on the agent's one UDP socket: the NAT mapping locatord saw
//   (the address the peer is told) is the one the peer's packets must reach. Peer datagrams
//   (types 0x70-0x73) are recognised by their first bytes and dispatched by channel ID.
// - Relayed path (relay.ts, channel.ts; devloc-agent(8), RELAYED CHANNELS): with relays in the
//   grant, connect() allocates (once per agent) before INTRODUCE when this terminal's own mode
//   can be half of a pair the matrix rules out (symmetric, port-restricted, udp-blocked,
//   unknown) or when relaying is forced, and sends its relayed address in the INTRODUCE; the
//   allocation permits the introduced peer's observed IP only. The peer, told the address in
//   INTRO, punches it like any candidate (at once when the matrix rules a direct path out,
//   after a bounded direct attempt otherwise). A pair the matrix rules out is then not refused
//   but relayed. An initiator that did not allocate and whose punching fails (or that learns
//   the pair is ruled out) allocates and asks for a second introduction, with its relayed
//   address, once.
// - Re-introductions, one mechanism for two causes (channel.ts, "Re-introductions"):
//   * relay lost (the TURN client failed, or a channel through it went silent) or its
//     credentials expired: while the grant has another usable relay (or fresh credentials for
//     the same one), the open channels through it are not closed but moved (moveRelayed): one new
//     allocation, the peer's IP permitted on it. With no relay left they close with RELAY_LOST
//     saying so;
//   * our address changed (devloc-agent(8), ADDRESS CHANGES): the agent re-registers from the
//     new address; every open channel punches again at once (its old path may still answer),
//     and an allocation under a path is replaced (it belongs to the old 5-tuple).
//   Then (reintroduce) per channel an INTRODUCE naming it (`resumes`), with our addresses and the
//   new relayed address when its path went through our relay; the peer gets it as INTRO field 10
//   and adds the addresses to that channel (only if it has it, with that peer; resumed), and
//   both punch them; the channel's keys authenticate whatever path answers.
//   A third use: a terminal whose UDP reaches only the services (RelayManager.udpBlocked)
//   answers a peer's INTRO through its allocation: it permits the peer, punches nothing on its
//   socket, and re-introduces the channel, still punching, with its relayed address at once.
import type dgram from 'node:dgram';
import type { Address } from '../wire/addr.js';
import { formatAddress, normaliseIp } from '../wire/addr.js';
import type { Bodies, Introduction } from '../wire/catalog.js';
import { MessageType } from '../wire/catalog.js';
import { noDirectPathReason } from '../wire/connectivity.js';
import { NetMode } from '../wire/constants.js';
import type { MessageOf } from '../wire/envelope.js';
import { decodeDatagram } from '../wire/envelope.js';
import { openChannelKey } from '../wire/peer.js';
import type { ClientSession } from '../net/clientsession.js';
import type { Reply } from '../net/client.js';
import type { AgentLog } from './errors.js';
import { AgentError } from './errors.js';
import type { CandidateKind, ChannelSummary, ChannelTiming, Via } from './channel.js';
import { Channel } from './channel.js';
import { formatId } from './ids.js';
import type { RelayManager } from './relay.js';
import type { TurnTransport } from './turn/client.js';

/** What the manager needs from its agent (closures over the agent's private state). */
export interface PeerHost {
  /** Send on the agent's UDP socket. */
  send(to: Address, bytes: Buffer): void;
  /** locatord's address (INTROs come only from there). */
  locatord(): Address | undefined;
  /** The locatord sessions a push may be MACed in: the confirmed one and the newest. */
  sessions(): ClientSession[];
  /**
   * INTRODUCE on the current session (re-registering once on NO_SESSION), and the session it was
   * answered on: the channel key is sealed under that one, which may no longer be among
   * sessions() by the time the answer is read (a re-registration confirmed meanwhile).
   */
  introduce(body: Bodies['INTRODUCE']): Promise<{ ack: MessageOf<'INTRODUCE_ACK'>; session: ClientSession }>;
  resolve(target: string | Uint8Array): Buffer;
  names(id: Uint8Array): string[];
  /** Our network mode as reported to locatord, and our LAN addresses with our port. */
  netMode(): number;
  localAddrs(): Address[];
  /** Whether we accept introductions (REGISTER reachable). */
  reachable(): boolean;
  /** A channel a peer opened to us. */
  incoming(channel: Channel): void;
  /** The agent's TURN allocation (absent: no relayed path). */
  relay?: RelayManager;
  log: AgentLog;
  now: () => number;
  random: () => number;
}

/** When connect() uses a relay: 'auto' (see the top of the file), 'always' (forced: relay candidates only), 'never'. */
export type RelayPolicy = 'auto' | 'always' | 'never';

export interface PeerOptions extends Partial<ChannelTiming> {
  /** Closed and failed channels kept for status (default 16). */
  keepRecent?: number;
  /**
   * TTL of the opening datagrams sent to the peer's public address before the first PUNCH
   * (default OPEN_TTL; 0: none, punch at once). See "Opening the own NAT first" above.
   */
  openTtl?: number;
  /** How long after the opening datagrams the first PUNCH leaves, ms (default OPEN_DELAY_MS). */
  openDelayMs?: number;
  /** Relayed channels (default 'auto'). */
  relay?: RelayPolicy;
}

/** Agent-wide counters of relayed channels (status, metrics). */
export interface RelayChannelCounters {
  /** Channels whose path was a relay at some point. */
  relayedChannels: number;
  /** The same by how this end reached the relay when the channel was first relayed. */
  relayedChannelsByTransport: Record<TurnTransport, number>;
  /** Bytes of channel datagrams through a relay, both ways (closed and open channels). */
  relayedBytes: number;
  /** Channels moved from a relay to a direct path. */
  upgrades: number;
}

/** TTL of the opening datagrams: enough to pass the NAT in front of the host (hop 1), not the next router. */
export const OPEN_TTL = 2;
/**
 * Wait between the opening datagrams and the first PUNCH. Both ends start when locatord's
 * INTRODUCE_ACK and INTRO arrive, sent at the same moment: the peer must have opened its own NAT
 * before our first PUNCH reaches it, so this bounds the skew between the two ends it tolerates.
 */
export const OPEN_DELAY_MS = 500;
/**
 * How long a channel whose own end moved keeps punching before its re-introduction must have
 * come: the agent authenticates, classifies and registers again first (INTRODUCE waits up to
 * 10 s for that), then the introduction itself.
 */
export const REINTRODUCE_GRACE_MS = 30_000;
/** The TTL the socket goes back to after the opening datagrams (Linux's default). */
const DEFAULT_TTL = 64;

export interface PathPlan {
  candidates: { addr: Address; kind: CandidateKind; via?: Via }[];
  /** Same observed IP: both behind one NAT (LAN addresses first). */
  sameNat: boolean;
  /** Why no direct path can work (the matrix), or null. */
  problem: string | null;
}

/**
 * Candidate addresses of the peer, and whether to try at all. Pure. Same NAT: the peer's LAN
 * addresses, then its public address (works if the NAT hairpins). Otherwise its public address,
 * unless both modes are known and the matrix rules a direct path out.
 */
export function planPath(
  own: { observed: Address; netMode: number; family?: SocketFamily | undefined },
  peer: { addr: Address; localAddrs?: Address[]; netMode: number },
): PathPlan {
  const sameNat = normaliseIp(own.observed.ip) === normaliseIp(peer.addr.ip);
  const all: PathPlan['candidates'] = [];
  if (sameNat) for (const a of peer.localAddrs ?? []) all.push({ addr: a, kind: 'lan' });
  all.push({ addr: peer.addr, kind: 'public' });
  // An address our socket cannot send to would only fail locally and hold one of the channel's
  // MAX_CANDIDATES places: skipped (devloc-protocol(7), PEER CHANNELS).
  const candidates = all.filter((c) => sendable(c.addr, own.family));
  const known = own.netMode !== NetMode.UNKNOWN && peer.netMode !== NetMode.UNKNOWN;
  const problem = candidates.length === 0
    ? `no address of the peer is of the socket's family (${own.family})`
    : sameNat || !known ? null : noDirectPathReason(own.netMode, peer.netMode);
  return { candidates, sameNat, problem };
}

/** The family of the agent's socket; an IPv6 socket is taken as dual-stack (it reaches both). */
export type SocketFamily = 'IPv4' | 'IPv6';

/** Whether a socket of `family` can send to `a` (unknown family: assumed it can). */
function sendable(a: Address, family: SocketFamily | undefined): boolean {
  return family !== 'IPv4' || !normaliseIp(a.ip).includes(':');
}

/** Own modes that can be half of a pair the matrix rules out: allocate before introducing. */
const RISKY_MODES = new Set<number>([NetMode.SYMMETRIC, NetMode.PORT_RESTRICTED, NetMode.UDP_BLOCKED, NetMode.UNKNOWN]);

/** The plan with the peer's relayed address (from its introduction) as the last candidate. */
function withRelayed(plan: PathPlan, relayed: Address | undefined, family: SocketFamily | undefined): PathPlan {
  return relayed && sendable(relayed, family) ? { ...plan, candidates: [...plan.candidates, { addr: relayed, kind: 'relay' }] } : plan;
}

/** Peer message types: their envelopes start 85 01 18 <type>. */
function isPeerDatagram(raw: Buffer): boolean {
  return raw.length > 4 && raw[0] === 0x85 && raw[1] === 0x01 && raw[2] === 0x18 && raw[3]! >= MessageType.PUNCH && raw[3]! <= MessageType.DATA_ACK;
}

/** Remembered channel IDs of introductions already handled (a retransmitted INTRO is only acknowledged). */
const MAX_SEEN_INTROS = 256;

export class PeerManager {
  private readonly channels = new Map<string, Channel>();
  private readonly recent: ChannelSummary[] = [];
  private readonly seenIntros = new Set<string>();
  /**
   * Channels we were introduced to and do not hold yet (INTRODUCE_ACK read, the relay's
   * permission under way), with the re-introduction (`resumes`) the peer sent meanwhile: a
   * UDP-blocked peer re-introduces itself at once, and its INTRO can overtake our permission.
   */
  private readonly opening = new Map<string, Introduction | null>();
  private readonly keepRecent: number;
  private socket: dgram.Socket | undefined;
  private readonly listener = (raw: Buffer, rinfo: dgram.RemoteInfo): void => {
    // The socket's 'message' event: whatever a datagram or a channel does, nothing throws out.
    try {
      this.receive(raw, { ip: normaliseIp(rinfo.address), port: rinfo.port });
    } catch (err) {
      this.stats.failed++;
      this.host.log('error', 'peer datagram handling failed; dropped', { err: (err as Error).message });
    }
  };
  /** Datagrams dropped before reaching a channel; opening datagrams sent. */
  readonly stats = { introductions: 0, unknownChannel: 0, malformed: 0, failed: 0, openers: 0 };
  private readonly relayCounters = { relayedChannels: 0, closedBytes: 0, upgrades: 0, byTransport: { udp: 0, tcp: 0, tls: 0 } };
  readonly relayPolicy: RelayPolicy;

  constructor(private readonly host: PeerHost, private readonly o: PeerOptions = {}) {
    this.keepRecent = o.keepRecent ?? 16;
    this.relayPolicy = o.relay ?? 'auto';
    if (host.relay) {
      host.relay.onData = (from, bytes) => {
        try {
          this.receive(bytes, { ip: normaliseIp(from.ip), port: from.port }, 'relay');
        } catch (err) {
          this.stats.failed++;
          this.host.log('error', 'relayed peer datagram handling failed; dropped', { err: (err as Error).message });
        }
      };
      host.relay.onLost = (reason) => {
        if (!this.moveRelayed(reason)) for (const c of [...this.channels.values()]) c.relayGone(`RELAY_LOST: ${reason}`);
      };
    }
  }

  /** Relayed channels, bytes and upgrades since the agent started. */
  relayCountersNow(): RelayChannelCounters {
    let bytes = this.relayCounters.closedBytes;
    let upgrades = this.relayCounters.upgrades;
    for (const c of this.channels.values()) {
      bytes += c.stats.relayedBytes;
      upgrades += c.stats.upgrades;
    }
    return { relayedChannels: this.relayCounters.relayedChannels, relayedChannelsByTransport: { ...this.relayCounters.byTransport }, relayedBytes: bytes, upgrades };
  }

  /** Listen for peer datagrams on the agent's socket (called when the agent starts). */
  attach(socket: dgram.Socket): void {
    this.detach();
    this.socket = socket;
    socket.on('message', this.listener);
  }

  detach(): void {
    this.socket?.off('message', this.listener);
    this.socket = undefined;
  }

  /** The paths to the peer `intro` names, from our side (and its relayed address last, with `relayed`). */
  private planFor(intro: Introduction, relayed = false): PathPlan {
    const family = this.socketFamily();
    const plan = planPath({ observed: intro.observed, netMode: this.host.netMode(), family }, intro);
    return relayed ? withRelayed(plan, intro.relayed, family) : plan;
  }

  /** The family of the attached socket (undefined: none, or not bound). */
  private socketFamily(): SocketFamily | undefined {
    try {
      const f = this.socket?.address().family as unknown;
      return f === 'IPv4' || f === 4 ? 'IPv4' : f === 'IPv6' || f === 6 ? 'IPv6' : undefined;
    } catch {
      return undefined;
    }
  }

  /** Open channels and the last closed or failed ones (newest first). */
  list(): ChannelSummary[] {
    return [...[...this.channels.values()].map((c) => c.summary()), ...this.recent];
  }

  get(idHex: string): Channel | undefined {
    return this.channels.get(idHex);
  }

  /** A live (open or punching) channel to `peer`, if any. */
  channelTo(peer: Uint8Array): Channel | undefined {
    const hex = formatId(peer);
    for (const c of this.channels.values()) if (c.peerHex === hex) return c;
    return undefined;
  }

  /** Our address changed (the agent re-registered from a new one): every open channel is re-introduced. */
  addressChanged(why: string): void {
    const open = [...this.channels.values()].filter((c) => c.isOpen);
    if (open.length === 0) return;
    // An allocation belongs to the 5-tuple it was made from: the relay no longer knows us.
    const relay = open.some((c) => c.relayPeer !== null) ? this.host.relay : undefined;
    relay?.drop(why);
    for (const ch of open) ch.reestablish([], why, { graceMs: REINTRODUCE_GRACE_MS });
    void this.reintroduce(open, why, relay, false);
  }

  /** INTRO with `resumes`: the peer re-introduced an open channel (it moved); the new addresses go to that channel. */
  private resumed(intro: Introduction): void {
    const ch = this.channels.get(formatId(intro.resumes!));
    const early = formatId(intro.resumes!);
    if (!ch && this.opening.has(early)) {
      // Ours, not open yet: applied once it is (introduceAndOpen).
      this.opening.set(early, intro);
      return;
    }
    // A channel still punching too: a peer that cannot send UDP re-introduces itself at once.
    if (!ch || (ch.state !== 'open' && ch.state !== 'punching') || ch.peerHex !== formatId(intro.peer)) {
      this.host.log('warn', 're-introduction for no open channel with that peer: ignored', { channel: formatId(intro.resumes!), peer: formatId(intro.peer) });
      return;
    }
    this.host.log('info', 're-introduced by locatord: the peer moved', { channel: ch.idHex, peer: ch.peerHex, addr: formatAddress(intro.addr), ...(intro.relayed ? { relayed: formatAddress(intro.relayed) } : {}) });
    // Our relay forwards only from permitted IPs: the peer's new one, if it reaches us there.
    if (ch.relayPeer !== null && this.host.relay) {
      void this.host.relay.permit(intro.addr).catch((err: Error) => this.host.log('warn', 'relay permission for the moved peer failed', { channel: ch.idHex, err: err.message }));
    }
    const plan = this.planFor(intro, true);
    ch.reestablish(plan.candidates, 'the peer moved', intro.relayed ? { replaceRelay: 'peer' } : {});
  }

  closeAll(reason: string): void {
    for (const c of [...this.channels.values()]) c.close(reason);
  }

  /** Feed one datagram of the socket (or of the relay); only peer messages are looked at. */
  receive(raw: Buffer, from: Address, via: Via = 'socket'): void {
    if (!isPeerDatagram(raw)) return;
    const d = decodeDatagram(raw);
    if (!d.ok || !d.msg.auth) {
      this.stats.malformed++;
      return;
    }
    const ch = this.channels.get(Buffer.from(d.msg.auth.sid).toString('hex'));
    if (!ch) {
      this.stats.unknownChannel++;
      return;
    }
    ch.receive(d.msg, raw, from, via);
  }

  private remember(summary: ChannelSummary): void {
    this.recent.unshift(summary);
    if (this.recent.length > this.keepRecent) this.recent.length = this.keepRecent;
  }

  private seen(idHex: string): void {
    this.seenIntros.add(idHex);
    if (this.seenIntros.size > MAX_SEEN_INTROS) this.seenIntros.delete(this.seenIntros.values().next().value!);
  }

  /** Record a channel that was never tried (the matrix ruled it out). */
  private refused(intro: Introduction, role: Channel['role'], plan: PathPlan): void {
    const now = new Date(this.host.now()).toISOString();
    const peer = formatId(intro.peer);
    this.remember({
      channel: formatId(intro.channelId), peer, names: this.host.names(intro.peer), ...(intro.nickname !== undefined ? { nickname: intro.nickname } : {}),
      role, state: 'failed', path: null, reason: `no direct path: ${plan.problem}`, candidates: plan.candidates.map((c) => `${formatAddress(c.addr)} (${c.kind})`),
      startedAt: now, openedAt: null, punchMs: null,
      stats: { sent: 0, received: 0, lost: 0, late: 0, refused: 0, punchesSent: 0, punchAcks: 0, relayedBytes: 0, upgrades: 0, relayMoves: 0 },
    });
    this.host.log('info', 'no direct path to peer: not punching', { peer, channel: formatId(intro.channelId), reason: plan.problem });
  }

  /**
   * Opening datagrams (empty UDP payloads, OPEN_TTL) to the peer's public candidates: they create
   * our NAT's mapping toward the peer and die at the next router. Returns whether any left.
   * The socket's TTL is lowered for them only and restored when the last one is sent (a
   * datagram of ours sent in between dies the same way and is retransmitted like a lost one).
   */
  private sendOpeners(plan: PathPlan, peerMode: number): boolean {
    const ttl = this.o.openTtl ?? OPEN_TTL;
    const socket = this.socket;
    // Only a NAT that filters and maps endpoint-independently (or an unclassified one) can be
    // spoilt by an early PUNCH: a full cone forwards it to the peer, an open peer has no NAT, and
    // a symmetric NAT punches toward us from a new port anyway.
    const filtering = peerMode === NetMode.RESTRICTED || peerMode === NetMode.PORT_RESTRICTED || peerMode === NetMode.UNKNOWN;
    const targets = plan.sameNat || !filtering ? [] : plan.candidates.filter((c) => c.kind === 'public');
    if (ttl <= 0 || !socket || targets.length === 0) return false;
    let left = targets.length * 2;
    const restore = (): void => {
      if (--left > 0) return;
      try {
        socket.setTTL(DEFAULT_TTL);
      } catch {
        /* socket closed meanwhile */
      }
    };
    try {
      socket.setTTL(ttl);
      // Two copies each: a loss on our own LAN would cost the whole head start.
      for (const c of targets) for (let i = 0; i < 2; i++) socket.send(Buffer.alloc(0), c.addr.port, c.addr.ip, restore);
      this.stats.openers += targets.length * 2;
      return true;
    } catch (err) {
      this.host.log('debug', 'opening datagrams not sent', { err: (err as Error).message });
      try {
        socket.setTTL(DEFAULT_TTL);
      } catch {
        /* socket closed */
      }
      return false;
    }
  }

  private open(intro: Introduction, key: Buffer, role: Channel['role'], plan: PathPlan, relayOnly = false): Channel {
    const id = Buffer.from(intro.channelId);
    const ch = new Channel({
      id, role, peer: Buffer.from(intro.peer), names: this.host.names(intro.peer), ...(intro.nickname !== undefined ? { nickname: intro.nickname } : {}),
      channelKey: key, candidates: plan.candidates, directPossible: plan.problem === null, relayOnly,
      send: (to, bytes, via) => {
        if (via === 'relay') this.host.relay?.send(to, bytes);
        else this.host.send(to, bytes);
      },
      // One channel found the relay silent: all channels through it move (or, with no relay
      // left, the others are told at once and this one closes with the reason).
      ...(this.host.relay ? {
        relayLost: (why: string) => {
          const reason = this.host.relay!.lost(why);
          if (this.moveRelayed(reason)) return null;
          for (const c of [...this.channels.values()]) if (c.idHex !== id.toString('hex')) c.relayGone(`RELAY_LOST: ${reason}`);
          return reason;
        },
        relayTransport: () => this.host.relay!.transport,
      } : {}),
      timing: this.o, now: this.host.now, random: this.host.random, log: this.host.log,
    });
    this.channels.set(ch.idHex, ch);
    let startTimer: ReturnType<typeof setTimeout> | undefined;
    let relayed = false;
    ch.on('path', (p) => {
      if (p?.kind === 'relay' && !relayed) {
        relayed = true;
        this.relayCounters.relayedChannels++;
        this.relayCounters.byTransport[p.transport ?? 'udp']++;
      }
    });
    ch.once('close', () => {
      if (startTimer) clearTimeout(startTimer);
      this.channels.delete(ch.idHex);
      this.relayCounters.closedBytes += ch.stats.relayedBytes;
      this.relayCounters.upgrades += ch.stats.upgrades;
      this.remember(ch.summary());
    });
    // Our NAT first, then the PUNCHes: a PUNCH of ours must not reach the peer's NAT before the
    // peer's own mapping toward us exists (see the top of this file). Meanwhile the channel
    // already answers the peer's PUNCHes (our mapping is open, so they get through).
    if (!relayOnly && this.sendOpeners(plan, intro.netMode)) {
      startTimer = setTimeout(() => {
        startTimer = undefined;
        if (this.channels.get(ch.idHex) === ch) ch.start();
      }, this.o.openDelayMs ?? OPEN_DELAY_MS);
    } else {
      ch.start();
    }
    return ch;
  }

  private unseal(intro: Introduction, answeredOn?: ClientSession): Buffer | null {
    for (const s of answeredOn ? [answeredOn, ...this.host.sessions()] : this.host.sessions()) {
      const key = openChannelKey(s.keys, intro.channelId, intro.peer, intro.sealedKey);
      if (key) return key;
    }
    return null;
  }

  /**
   * Our allocation is gone (`reason`, from RelayManager.lost): move every open channel through it
   * to a new allocation. False (nothing done) when no relay is left to move to.
   */
  private moveRelayed(reason: string): boolean {
    const relay = this.host.relay;
    if (!relay || relay.remaining === 0) return false;
    const moving = [...this.channels.values()].filter((c) => c.relayPeer !== null);
    for (const c of moving) c.relayMoving(reason);
    if (moving.length) void this.reintroduce(moving, reason, relay, true);
    return true;
  }

  /**
   * Re-introduce `channels` to their peers (INTRODUCE `resumes`, see the top of the file), with
   * a new allocation on `relay` for those whose path went through ours. `relayLost`: the channels
   * wait for it (relayMoving) and close with RELAY_LOST when it fails; otherwise (an address
   * change) a channel that could not be re-introduced keeps punching its known candidates.
   */
  private async reintroduce(channels: Channel[], why: string, relay: RelayManager | undefined, relayLost: boolean, peerAddr?: Address): Promise<void> {
    let relayed: Address | undefined;
    if (relay) {
      try {
        relayed = await relay.ensure();
      } catch (err) {
        const reason = relayLost ? `RELAY_LOST: ${why}; no other relay could be allocated` : `RELAY_LOST: our address changed and no relay could be allocated anew`;
        for (const c of channels) c.relayGone(`${reason} (${(err as Error).message})`);
        if (relayLost) return;
      }
    }
    await Promise.all(channels.map(async (c) => {
      // The peer's address through our relay (null: the path did not go through it; a channel
      // still punching: the introduced address).
      const peer = c.relayPeer ?? (c.state === 'punching' ? peerAddr ?? null : null);
      const viaRelay = relayed !== undefined && peer !== null;
      try {
        if (c.state !== 'open' && c.state !== 'punching') return; // closed meanwhile
        if (viaRelay) await relay!.permit(peer);
        const local = this.host.localAddrs();
        const { ack: m } = await this.host.introduce({
          target: c.peer, netMode: this.host.netMode(), ...(local.length ? { localAddrs: local } : {}), ...(viaRelay && relayed ? { relayed } : {}), resumes: c.id,
        });
        const intro = m.body;
        if (!Buffer.from(intro.peer).equals(c.peer)) throw new AgentError('BAD_INTRODUCTION', 'locatord introduced another terminal than the one asked for');
        this.seen(formatId(intro.channelId));
        // The peer's observed IP changed meanwhile: permit where it is now too.
        if (viaRelay && normaliseIp(intro.addr.ip) !== normaliseIp(peer.ip)) await relay!.permit(intro.addr);
        c.reestablish(this.planFor(intro).candidates, why, viaRelay ? { replaceRelay: 'ours' } : {});
      } catch (err) {
        if (relayLost) c.relayGone(`RELAY_LOST: ${why}; the move to another relay failed (${(err as Error).message})`);
        // The channel keeps punching its known candidates until its timeout.
        else this.host.log('warn', 'peer channel not re-introduced', { channel: c.idHex, err: (err as Error).message });
      }
    }));
  }

  /** Server pushes on the agent's socket: true when it was an INTRO (handled here). */
  onPush(r: Reply): boolean {
    if (r.msg.name !== 'INTRO') return false;
    const locatord = this.host.locatord();
    if (!locatord || normaliseIp(r.from.ip) !== normaliseIp(locatord.ip) || r.from.port !== locatord.port) return true;
    const session = this.host.sessions().find((s) => s.accept(r));
    if (!session) return true;
    const intro = r.msg.body;
    const idHex = formatId(intro.channelId);
    // Acknowledge every copy: locatord retransmits until it hears one.
    const ack = (): void => this.host.send(r.from, session.encode('INTRO_ACK', r.msg.rid, { channelId: intro.channelId }));
    if (this.seenIntros.has(idHex) || this.channels.has(idHex)) {
      ack();
      return true;
    }
    if (intro.resumes) {
      // The peer re-introduced an open channel (it moved): only that channel, only from that
      // peer (locatord names the authenticated asker); this introduction opens nothing.
      this.seen(idHex);
      ack();
      this.resumed(intro);
      return true;
    }
    if (!this.host.reachable()) {
      this.host.log('warn', 'introduction while not reachable: ignored', { channel: idHex });
      return true;
    }
    const key = openChannelKey(session.keys, intro.channelId, intro.peer, intro.sealedKey);
    if (!key) {
      this.host.log('warn', 'introduction with a channel key that does not open: ignored', { channel: idHex });
      return true;
    }
    this.seen(idHex);
    this.stats.introductions++;
    ack();
    const plan = this.planFor(intro, true);
    if (plan.problem && !plan.candidates.some((c) => c.kind === 'relay')) {
      this.refused(intro, 'responder', plan);
      return true;
    }
    this.host.log('info', 'introduced by locatord', { peer: formatId(intro.peer), channel: idHex, sameNat: plan.sameNat });
    const relay = this.host.relay;
    if (relay?.udpBlocked) {
      // Our UDP reaches only the services (the allocation needed TCP/TLS): nothing we send on
      // the socket gets out, so the peer must find us at our relayed address. Open on no
      // candidate (we answer what comes through the relay) and re-introduce the channel.
      const ch = this.open(intro, key, 'responder', { ...plan, candidates: [] }, true);
      this.host.incoming(ch);
      void this.reintroduce([ch], 'UDP blocked: the peer must reach us through our relay', relay, false, intro.addr);
      return true;
    }
    this.host.incoming(this.open(intro, key, 'responder', plan));
    return true;
  }

  /**
   * A channel to `target` (locator ID or address-book name), open: resolves once a path answered.
   * A live channel to the same peer is reused (whichever side opened it). Rejects with AgentError:
   * PEER_UNAVAILABLE, NO_DIRECT_PATH, PUNCH_FAILED, or an error of the locatord request.
   */
  async connect(target: string | Uint8Array, o: { reuse?: boolean; relay?: RelayPolicy } = {}): Promise<Channel> {
    const id = this.host.resolve(target);
    const existing = o.reuse === false ? undefined : this.channelTo(id);
    if (existing) {
      await existing.waitOpen();
      return existing;
    }
    const policy = o.relay ?? this.relayPolicy;
    const relay = policy !== 'never' && this.host.relay?.available ? this.host.relay : undefined;
    if (policy === 'always' && !relay) throw new AgentError('RELAY_UNAVAILABLE', 'relaying is forced but authd granted no relay');
    const eager = relay !== undefined && (policy === 'always' || RISKY_MODES.has(this.host.netMode()));
    try {
      return await this.introduceAndOpen(id, eager ? relay : undefined, policy === 'always');
    } catch (err) {
      // The relay died under the allocation (found by the permission): once more, on the next one.
      if (eager && err instanceof AgentError && err.code === 'RELAY_UNAVAILABLE' && relay.remaining > 0) {
        this.host.log('warn', 'relay lost while introducing: trying the next relay', { peer: formatId(id), why: err.message });
        return this.introduceAndOpen(id, relay, policy === 'always');
      }
      // Direct only, and it cannot or did not work: once more, relayed.
      if (!relay || eager || !(err instanceof AgentError) || (err.code !== 'NO_DIRECT_PATH' && err.code !== 'PUNCH_FAILED')) throw err;
      this.host.log('info', 'no direct path to the peer: introducing again with a relayed address', { peer: formatId(id), why: err.message });
      return this.introduceAndOpen(id, relay, false);
    }
  }

  /** One INTRODUCE (with our relayed address when `relay` is given) and the channel it leads to, open. */
  private async introduceAndOpen(id: Buffer, relay: RelayManager | undefined, forced: boolean): Promise<Channel> {
    const local = this.host.localAddrs();
    const relayed = relay ? await relay.ensure() : undefined;
    let m: MessageOf<'INTRODUCE_ACK'>;
    let session: ClientSession;
    try {
      ({ ack: m, session } = await this.host.introduce({ target: id, netMode: this.host.netMode(), ...(local.length ? { localAddrs: local } : {}), ...(relayed ? { relayed } : {}) }));
    } catch (err) {
      if (err instanceof AgentError && err.code === 'NOT_FOUND') throw new AgentError('PEER_UNAVAILABLE', err.message);
      throw err;
    }
    const intro = m.body;
    if (!Buffer.from(intro.peer).equals(id)) throw new AgentError('BAD_INTRODUCTION', 'locatord introduced another terminal than the one asked for');
    const key = this.unseal(intro, session);
    if (!key) throw new AgentError('BAD_INTRODUCTION', 'the channel key from locatord does not open');
    const idHex = formatId(intro.channelId);
    this.seen(idHex);
    const plan = this.planFor(intro);
    if (plan.problem && !relay) {
      this.refused(intro, 'initiator', plan);
      throw new AgentError('NO_DIRECT_PATH', `no direct path: ${plan.problem}`);
    }
    let ch: Channel;
    this.opening.set(idHex, null);
    try {
      // The relay forwards to us only from the introduced peer's public IP.
      if (relay) await relay.permit(intro.addr);
      ch = this.open(intro, key, 'initiator', forced ? { ...plan, candidates: [] } : plan, forced);
    } finally {
      const early = this.opening.get(idHex);
      this.opening.delete(idHex);
      if (early) this.resumed(early);
    }
    await ch.waitOpen();
    return ch;
  }
}
