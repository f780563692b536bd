// The agent's TURN client (RFC 8656) for a coturn relay: one allocation per client, relaying UDP
// (REQUESTED-TRANSPORT 17) with client-to-relay over UDP, TCP or TLS (RFC 6062 TCP relaying is
// not used). Node built-ins only; the codec is ./codec.ts.
//
// What it does, in the order of a channel's life:
//   allocate()      Allocate with the long-term credential mechanism: an unauthenticated request,
//                   401 with REALM and NONCE, the request again with USERNAME/REALM/NONCE and
//                   MESSAGE-INTEGRITY; a 438 Stale Nonce is retried once with the new nonce;
//                   a 437 from a new client transport address (three in all).
//                   Refresh runs by itself before the allocation expires.
//   permit(peers)   CreatePermission for exactly the peer IPs it is given (never anything else),
//                   refreshed every PERMISSION_REFRESH_MS (< the 5 min permission lifetime).
//   bindChannel(p)  ChannelBind, refreshed every CHANNEL_REFRESH_MS (< the 10 min binding life).
//   send(p, bytes)  ChannelData once the channel is bound, a Send indication before (fallback).
//   'data' events   from ChannelData on a bound channel or Data indications from permitted IPs.
//   close()         Refresh with LIFETIME 0, then the link is closed.
//
// Untrusted input: everything the relay sends goes through the strict codec; responses must
// match an outstanding transaction and, when the request was authenticated and the response is a
// success, carry a valid MESSAGE-INTEGRITY (an error response without one is accepted, as it can
// only make a request fail, which an on-path attacker could do by dropping it anyway). Every
// drop is counted in `stats` and reported through the optional `log` callback; nothing a relay
// sends can throw out of a socket handler, and listener exceptions are contained too. Buffers are
// bounded: a stream frame by the STUN maximum, transactions by MAX_PENDING, permissions and
// channels by their maxima, and the socket's write queue by maxWriteQueueBytes.
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import type { ConnectionOptions } from 'node:tls';
import type { Address } from '../../wire/addr.js';
import { ipToBytes } from '../../wire/addr.js';
import type { DecodedStun, StunAttributes } from './codec.js';
import {
  decodeChannelData, decodeStun, encodeChannelData, encodeStun, longTermKey, MAX_CHANNEL, MAX_STUN_BYTES, Method, MIN_CHANNEL,
  streamFrameLength, TRANSPORT_UDP, verifyIntegrity,
} from './codec.js';
import type { TurnCredentials } from '../../wire/turn-credentials.js';
import { parseTurnUsername } from '../../wire/turn-credentials.js';
import { literalLookup } from '../../net/lookup.js';

// --- constants (each overridable through TurnClientOptions where it makes sense) ---------------

/** RFC 8489 §6.2.1: initial retransmission timeout over UDP. */
export const DEFAULT_RTO_MS = 500;
/** RFC 8489 §6.2.1: Rc, the number of requests sent over UDP before giving up. */
export const DEFAULT_RC = 7;
/** RFC 8489 §6.2.1: Rm, the final wait after the last request is Rm * RTO. */
export const DEFAULT_RM = 16;
/** RFC 8489 §6.2.2: Ti over TCP/TLS, 39.5 s (the UDP schedule's total with the defaults). */
export const DEFAULT_TCP_TIMEOUT_MS = 39_500;
/** RFC 8656 §9: permissions last 300 s; refreshed a minute before. */
export const PERMISSION_REFRESH_MS = 240_000;
/** RFC 8656 §11: channel bindings last 600 s; refreshed a minute before. */
export const CHANNEL_REFRESH_MS = 540_000;
/** Refresh the allocation this long before it expires (half the lifetime when that is shorter). */
export const ALLOCATION_REFRESH_MARGIN_MS = 60_000;
/** Outstanding transactions at once: the client never needs more than a handful. */
export const MAX_PENDING = 16;
/** Peer IPs permitted at once (a terminal talks to a few partners, not hundreds). */
export const MAX_PERMISSIONS = 64;
/** Channels at once (0x4000..0x4fff allows 4096; a terminal needs far fewer). */
export const MAX_CHANNELS = 64;
/** Bytes queued on a TCP/TLS socket beyond which datagrams are dropped rather than buffered. */
export const DEFAULT_MAX_WRITE_QUEUE_BYTES = 256 * 1024;
/** RFC 8656 §7.3: client transport addresses to try an Allocate from when the relay answers 437. */
export const ALLOCATE_ADDRESSES = 3;
/** close(): how long to wait for the answer to Refresh(LIFETIME 0) before closing anyway. */
export const DEFAULT_CLOSE_TIMEOUT_MS = 2_000;
/** The largest datagram that can be relayed (UDP payload limit; ChannelData length field). */
export const MAX_RELAYED_DATAGRAM = 65_507;

// --- errors ------------------------------------------------------------------------------------

/** Stable error codes of the TURN client (never renamed; only added). */
export const TurnErrorCode = {
  /** No response to a request within the retransmission schedule (UDP) or Ti (TCP/TLS). */
  TIMEOUT: 'TURN_TIMEOUT',
  /** 401 to an authenticated request: the relay refuses these credentials. */
  UNAUTHORIZED: 'TURN_UNAUTHORIZED',
  /** 401 and the shared-secret username's expiry has passed: fetch new credentials. */
  CREDENTIALS_EXPIRED: 'TURN_CREDENTIALS_EXPIRED',
  /** 438 again after retrying with the relay's new nonce. */
  STALE_NONCE: 'TURN_STALE_NONCE',
  /** 403: the relay forbids this (e.g. a peer address denied by its policy). */
  FORBIDDEN: 'TURN_FORBIDDEN',
  /** 437: the relay has no such allocation (expired, or another one exists for this 5-tuple). */
  ALLOCATION_MISMATCH: 'TURN_ALLOCATION_MISMATCH',
  /** 441: credentials differ from those the allocation was made with. */
  WRONG_CREDENTIALS: 'TURN_WRONG_CREDENTIALS',
  /** 442: the relay does not relay UDP. */
  UNSUPPORTED_TRANSPORT: 'TURN_UNSUPPORTED_TRANSPORT',
  /** 443: peer address family not supported by this allocation. */
  PEER_ADDRESS_FAMILY: 'TURN_PEER_ADDRESS_FAMILY',
  /** 486: the user's allocation quota is reached. */
  QUOTA: 'TURN_QUOTA',
  /** 508: the relay is out of capacity. */
  CAPACITY: 'TURN_CAPACITY',
  /** Any other error response (the STUN code is in `stunCode`). */
  SERVER_ERROR: 'TURN_SERVER_ERROR',
  /** A response the client cannot use (missing attribute, unknown comprehension-required attribute). */
  BAD_RESPONSE: 'TURN_BAD_RESPONSE',
  /** The TCP/TLS connection failed or closed, or the stream stopped being STUN/TURN. */
  CONNECTION: 'TURN_CONNECTION',
  /** The client is closed. */
  CLOSED: 'TURN_CLOSED',
  /** The operation needs an allocation first (or allocate() was called twice). */
  NOT_ALLOCATED: 'TURN_NOT_ALLOCATED',
  /** send() to a peer with neither a bound channel nor a permission. */
  NO_PERMISSION: 'TURN_NO_PERMISSION',
  /** send() of a datagram too large to relay. */
  TOO_LARGE: 'TURN_TOO_LARGE',
  /** Too many outstanding transactions, permissions or channels, or the write queue is full. */
  BUSY: 'TURN_BUSY',
  /** An argument the caller should never pass (not an IP address, ...). */
  BAD_ARGUMENT: 'TURN_BAD_ARGUMENT',
} as const;
export type TurnErrorCode = (typeof TurnErrorCode)[keyof typeof TurnErrorCode];

export class TurnError extends Error {
  override readonly name = 'TurnError';
  constructor(
    readonly code: TurnErrorCode,
    message: string,
    /** The STUN error code when the relay answered with one. */
    readonly stunCode?: number,
  ) {
    super(message);
  }
}

function errorFromResponse(code: number, reason: string): TurnError {
  // coturn pads some reason phrases with NULs inside the attribute's length: not text.
  const text = `relay answered ${code} ${reason.replace(/\0+$/, '')}`;
  const c: TurnErrorCode =
    code === 401 ? TurnErrorCode.UNAUTHORIZED
    : code === 403 ? TurnErrorCode.FORBIDDEN
    : code === 437 ? TurnErrorCode.ALLOCATION_MISMATCH
    : code === 438 ? TurnErrorCode.STALE_NONCE
    : code === 441 ? TurnErrorCode.WRONG_CREDENTIALS
    : code === 442 ? TurnErrorCode.UNSUPPORTED_TRANSPORT
    : code === 443 ? TurnErrorCode.PEER_ADDRESS_FAMILY
    : code === 486 ? TurnErrorCode.QUOTA
    : code === 508 ? TurnErrorCode.CAPACITY
    : TurnErrorCode.SERVER_ERROR;
  return new TurnError(c, text, code);
}

// --- options -----------------------------------------------------------------------------------

export type TurnTransport = 'udp' | 'tcp' | 'tls';

export interface TurnServer {
  /** IP address or host name of the relay. */
  host: string;
  port: number;
  transport: TurnTransport;
  /** TLS only: CA to trust (default: the system's), SNI name (default: host), verification (default on). */
  tls?: { ca?: string | Buffer; servername?: string; rejectUnauthorized?: boolean };
}

export interface TurnClock {
  /** Unix time in ms (used to tell expired credentials). */
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}
/** A TurnClock of node's own timers over `now` (RelayManager's: the agent's clock). */
export const nodeTurnClock = (now: () => number): TurnClock => ({
  now,
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
});

/** The client's side of the connection to the relay. Real sockets by default; tests inject one. */
export interface TurnLink {
  /** True over TCP/TLS: no retransmissions, padded ChannelData, framed stream. */
  readonly reliable: boolean;
  /** False when the datagram was dropped (write queue full). Never throws. */
  send(bytes: Buffer): boolean;
  close(): void;
}
export interface LinkHandlers {
  /** One STUN message or ChannelData frame (whole, as received). */
  packet(bytes: Buffer): void;
  /** The link is gone (TCP/TLS closed or broke). */
  closed(err: TurnError): void;
  /** A refusal: what was dropped and why, for stats and logs. */
  drop(reason: string): void;
}
/** `connectTimeoutMs`: how long a TCP/TLS connection (handshake included) may take before it fails. */
export type LinkFactory = (server: TurnServer, handlers: LinkHandlers, o?: { connectTimeoutMs?: number }) => Promise<TurnLink>;

export interface TurnClientOptions {
  server: TurnServer;
  /** Fixed credentials, or a function asked before each authenticated request (so they can be renewed). */
  credentials: TurnCredentials | (() => TurnCredentials);
  /** LIFETIME to request in Allocate and Refresh, seconds (default: let the relay choose, 600 s). */
  lifetimeSec?: number;
  /** SOFTWARE attribute (default none: it tells an observer what runs here). */
  software?: string;
  clock?: TurnClock;
  rtoMs?: number;
  rc?: number;
  rm?: number;
  tcpTimeoutMs?: number;
  closeTimeoutMs?: number;
  maxWriteQueueBytes?: number;
  /** Refusals and state changes, one structured line each (the agent's logger plugs in here). */
  log?: (msg: string, fields: Record<string, unknown>) => void;
  /** Transport factory (tests); default: real UDP/TCP/TLS sockets. */
  link?: LinkFactory;
  /** Transaction IDs (tests); default crypto random. */
  randomTid?: () => Buffer;
}

export interface TurnAllocation {
  relayed: Address;
  /** The client's address as the relay sees it (server-reflexive), when the relay says. */
  mapped?: Address;
  lifetimeSec: number;
}

export type TurnSendResult = { ok: true; via: 'channel' | 'indication' } | { ok: false; code: TurnErrorCode };

export interface TurnStats {
  requestsSent: number;
  retransmissions: number;
  responses: number;
  refreshes: number;
  permissionRefreshes: number;
  channelRefreshes: number;
  dataIn: number;
  dataOut: number;
  bytesIn: number;
  bytesOut: number;
  /** Dropped input or output by reason (see `log`). */
  dropped: Record<string, number>;
  /** Exceptions thrown by event listeners (contained: they never reach the socket handlers). */
  listenerErrors: number;
}

export interface TurnClientEvents {
  allocated: [TurnAllocation];
  refreshed: [{ lifetimeSec: number; tid: string }];
  permitted: [{ ips: string[] }];
  channel: [{ peer: Address; channel: number }];
  data: [Address, Buffer, 'channel' | 'indication'];
  error: [TurnError];
  closed: [TurnError | undefined];
}

type State = 'new' | 'allocating' | 'allocated' | 'closing' | 'closed';

interface Pending {
  method: number;
  bytes: Buffer;
  key: Buffer | undefined;
  timer: unknown;
  resolve(msg: DecodedStun): void;
  reject(err: TurnError): void;
}

interface ChannelState {
  peer: Address;
  channel: number;
  bound: boolean;
}

const peerKey = (a: Address): string => `${a.ip}|${a.port}`;

// --- the client --------------------------------------------------------------------------------

export class TurnClient extends EventEmitter<TurnClientEvents> {
  readonly stats: TurnStats = {
    requestsSent: 0, retransmissions: 0, responses: 0, refreshes: 0, permissionRefreshes: 0, channelRefreshes: 0,
    dataIn: 0, dataOut: 0, bytesIn: 0, bytesOut: 0, dropped: {}, listenerErrors: 0,
  };
  private state: State = 'new';
  private link: TurnLink | undefined;
  private readonly clock: TurnClock;
  private readonly pending = new Map<string, Pending>();
  private realm: string | undefined;
  private nonce: string | undefined;
  private allocation: TurnAllocation | undefined;
  private refreshTimer: unknown;
  private permissionTimer: unknown;
  private channelTimer: unknown;
  /** Peer IPs we hold (or are creating) permissions for. */
  private readonly permissions = new Set<string>();
  private readonly channelsByPeer = new Map<string, ChannelState>();
  private readonly channelsByNumber = new Map<number, ChannelState>();
  private nextChannel = MIN_CHANNEL;

  constructor(private readonly opts: TurnClientOptions) {
    super();
    this.clock = opts.clock ?? nodeTurnClock(Date.now);
  }

  get relayedAddress(): Address | undefined {
    return this.allocation?.relayed;
  }
  get mappedAddress(): Address | undefined {
    return this.allocation?.mapped;
  }
  get isAllocated(): boolean {
    return this.state === 'allocated';
  }
  /** Peer IPs currently permitted (as told through permit() or bindChannel()). */
  get permittedIps(): string[] {
    return [...this.permissions];
  }
  channelOf(peer: Address): number | undefined {
    const c = this.channelsByPeer.get(peerKey(peer));
    return c?.bound ? c.channel : undefined;
  }

  /** Open the link to the relay (a new client transport address each time). */
  private async connect(): Promise<void> {
    const factory = this.opts.link ?? defaultLink;
    this.link = await factory(this.opts.server, {
      packet: (b) => this.onPacket(b),
      closed: (err) => this.onLinkClosed(err),
      drop: (reason) => this.drop(reason),
    }, { connectTimeoutMs: this.opts.tcpTimeoutMs ?? DEFAULT_TCP_TIMEOUT_MS });
    if (this.state !== 'allocating') throw new TurnError(TurnErrorCode.CLOSED, 'closed while connecting');
  }

  /**
   * Connect to the relay and allocate a relayed UDP address. A 437 (Allocation Mismatch: the
   * relay still holds state for this 5-tuple, e.g. of a client that had the same local port just
   * before, or behind the same NAT mapping) is retried from a new client transport address (a
   * new socket or connection), up to ALLOCATE_ADDRESSES in all (RFC 8656 section 7.3).
   */
  async allocate(): Promise<TurnAllocation> {
    if (this.state !== 'new') throw new TurnError(this.state === 'closed' || this.state === 'closing' ? TurnErrorCode.CLOSED : TurnErrorCode.NOT_ALLOCATED, `allocate() in state ${this.state}`);
    this.state = 'allocating';
    try {
      const attrs: StunAttributes = { requestedTransport: TRANSPORT_UDP };
      if (this.opts.lifetimeSec !== undefined) attrs.lifetime = this.opts.lifetimeSec;
      let res: DecodedStun | undefined;
      for (let address = 1; !res; address++) {
        await this.connect();
        try {
          res = await this.transact(Method.Allocate, attrs);
        } catch (err) {
          const e = asTurnError(err);
          if (e.code !== TurnErrorCode.ALLOCATION_MISMATCH || address >= ALLOCATE_ADDRESSES || this.state !== 'allocating') throw e;
          this.log('turn allocation mismatch: allocating again from another local address', { message: e.message, attempt: address });
          // The relay's realm and nonce belong to the old 5-tuple's state: the new one starts unauthenticated.
          this.closeLink();
          this.link = undefined;
          this.realm = undefined;
          this.nonce = undefined;
        }
      }
      const relayed = res.attrs.xorRelayedAddress;
      const lifetime = res.attrs.lifetime;
      if (!relayed || lifetime === undefined) throw new TurnError(TurnErrorCode.BAD_RESPONSE, 'Allocate success without XOR-RELAYED-ADDRESS or LIFETIME');
      if (this.state !== 'allocating') throw new TurnError(TurnErrorCode.CLOSED, 'closed while allocating');
      this.allocation = { relayed, lifetimeSec: lifetime, ...(res.attrs.xorMappedAddress ? { mapped: res.attrs.xorMappedAddress } : {}) };
      this.state = 'allocated';
      this.scheduleRefresh(lifetime);
      this.log('turn allocated', { relayed: `${relayed.ip}:${relayed.port}`, lifetimeSec: lifetime, transport: this.opts.server.transport });
      this.safeEmit('allocated', { ...this.allocation });
      return { ...this.allocation };
    } catch (err) {
      const e = asTurnError(err);
      if ((this.state as State) !== 'closed') this.shutdown(e);
      else {
        // close() came while the link was connecting: shutdown() had no link to close then, and
        // the one the factory returned would keep its socket (and the process) alive for good.
        this.closeLink();
      }
      throw e;
    }
  }

  /** Permit exactly these peers' IPs (ports are ignored by TURN permissions) and keep the permissions refreshed. */
  async permit(peers: Address[]): Promise<void> {
    this.requireAllocated();
    const ips = [...new Set(peers.map((p) => p.ip))];
    if (ips.length === 0) return;
    for (const ip of ips) if (!isIpText(ip)) throw new TurnError(TurnErrorCode.BAD_ARGUMENT, `not an IP address: ${ip}`);
    const fresh = ips.filter((ip) => !this.permissions.has(ip));
    if (this.permissions.size + fresh.length > MAX_PERMISSIONS) throw new TurnError(TurnErrorCode.BUSY, `more than ${MAX_PERMISSIONS} permitted peers`);
    await this.transact(Method.CreatePermission, { xorPeerAddresses: ips.map((ip) => ({ ip, port: 0 })) });
    for (const ip of ips) this.permissions.add(ip);
    this.ensurePermissionTimer();
    this.safeEmit('permitted', { ips });
  }

  /** Stop refreshing the permission of this IP (it lapses at the relay within 5 min) and unbind nothing. */
  forget(ip: string): void {
    this.permissions.delete(ip);
  }

  /** Bind a channel to `peer` (which also permits its IP); resolves with the channel number. */
  async bindChannel(peer: Address): Promise<number> {
    this.requireAllocated();
    if (!isIpText(peer.ip) || !Number.isInteger(peer.port) || peer.port < 1 || peer.port > 0xffff) throw new TurnError(TurnErrorCode.BAD_ARGUMENT, `not an IP address and port: ${peer.ip}:${peer.port}`);
    const key = peerKey(peer);
    let ch = this.channelsByPeer.get(key);
    if (!ch) {
      if (this.channelsByPeer.size >= MAX_CHANNELS) throw new TurnError(TurnErrorCode.BUSY, `more than ${MAX_CHANNELS} channels`);
      if (!this.permissions.has(peer.ip) && this.permissions.size >= MAX_PERMISSIONS) throw new TurnError(TurnErrorCode.BUSY, `more than ${MAX_PERMISSIONS} permitted peers`);
      ch = { peer: { ip: peer.ip, port: peer.port }, channel: this.freeChannel(), bound: false };
      this.channelsByPeer.set(key, ch);
      this.channelsByNumber.set(ch.channel, ch);
    }
    try {
      await this.transact(Method.ChannelBind, { channelNumber: ch.channel, xorPeerAddresses: [ch.peer] });
    } catch (err) {
      if (!ch.bound) {
        this.channelsByPeer.delete(key);
        this.channelsByNumber.delete(ch.channel);
      }
      throw err;
    }
    // A channel binding installs a permission for the IP; keep it refreshed like the others.
    this.permissions.add(peer.ip);
    this.ensurePermissionTimer();
    const first = !ch.bound;
    ch.bound = true;
    this.ensureChannelTimer();
    if (first) this.safeEmit('channel', { peer: ch.peer, channel: ch.channel });
    return ch.channel;
  }

  /** Relay one datagram to `peer`: ChannelData on a bound channel, else a Send indication if its IP is permitted. Never throws. */
  send(peer: Address, data: Uint8Array): TurnSendResult {
    if (this.state !== 'allocated' || !this.link) return this.sendFailed(this.state === 'closed' || this.state === 'closing' ? TurnErrorCode.CLOSED : TurnErrorCode.NOT_ALLOCATED);
    if (data.length > MAX_RELAYED_DATAGRAM) return this.sendFailed(TurnErrorCode.TOO_LARGE);
    const ch = this.channelsByPeer.get(peerKey(peer));
    let bytes: Buffer;
    let via: 'channel' | 'indication';
    if (ch?.bound) {
      bytes = encodeChannelData(ch.channel, data, this.link.reliable);
      via = 'channel';
    } else if (this.permissions.has(peer.ip)) {
      try {
        bytes = encodeStun({ method: Method.Send, cls: 'indication', tid: this.tid(), attrs: { xorPeerAddresses: [peer], data: Buffer.from(data.buffer, data.byteOffset, data.byteLength) } });
      } catch {
        return this.sendFailed(TurnErrorCode.BAD_ARGUMENT);
      }
      via = 'indication';
    } else return this.sendFailed(TurnErrorCode.NO_PERMISSION);
    if (!this.link.send(bytes)) return this.sendFailed(TurnErrorCode.BUSY);
    this.stats.dataOut++;
    this.stats.bytesOut += data.length;
    return { ok: true, via };
  }

  /** Release the allocation (Refresh with LIFETIME 0, waited for at most closeTimeoutMs) and close the link. */
  async close(): Promise<void> {
    if (this.state === 'closed' || this.state === 'closing') return;
    const wasAllocated = this.state === 'allocated';
    this.state = 'closing';
    this.clearTimers();
    if (wasAllocated && this.link) {
      const done = this.transact(Method.Refresh, { lifetime: 0 }).then(() => undefined, () => undefined);
      let timer: unknown;
      const limit = new Promise<void>((resolve) => {
        timer = this.clock.setTimeout(resolve, this.opts.closeTimeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS);
      });
      await Promise.race([done, limit]);
      this.clock.clearTimeout(timer);
    }
    this.shutdown(undefined);
  }

  // --- transactions ------------------------------------------------------------------------------

  private credentials(): TurnCredentials {
    const c = this.opts.credentials;
    return typeof c === 'function' ? c() : c;
  }

  /**
   * One request with the long-term mechanism: answers 401 (first challenge) and 438 (once) by
   * resending with the relay's realm and nonce. Resolves with the success response.
   */
  private async transact(method: number, attrs: StunAttributes): Promise<DecodedStun> {
    let challenged = this.realm !== undefined;
    let staleRetried = false;
    for (;;) {
      const creds = this.realm !== undefined ? this.credentials() : undefined;
      const key = creds && this.realm !== undefined ? longTermKey(creds.username, this.realm, creds.password) : undefined;
      const auth: StunAttributes = creds && this.realm !== undefined && this.nonce !== undefined ? { username: creds.username, realm: this.realm, nonce: this.nonce } : {};
      const res = await this.exchange(method, { ...attrs, ...auth }, key);
      if (res.cls === 'success') {
        if (res.unknownRequired.length) throw new TurnError(TurnErrorCode.BAD_RESPONSE, `response with unknown comprehension-required attributes ${res.unknownRequired.join(',')}`);
        return res;
      }
      const err = res.attrs.errorCode;
      if (!err) throw new TurnError(TurnErrorCode.BAD_RESPONSE, 'error response without ERROR-CODE');
      if (err.code === 401 && !challenged && res.attrs.realm !== undefined && res.attrs.nonce !== undefined) {
        challenged = true;
        this.realm = res.attrs.realm;
        this.nonce = res.attrs.nonce;
        continue;
      }
      if (err.code === 438 && !staleRetried && res.attrs.nonce !== undefined) {
        staleRetried = true;
        this.nonce = res.attrs.nonce;
        if (res.attrs.realm !== undefined) this.realm = res.attrs.realm;
        this.log('turn stale nonce', { method });
        continue;
      }
      if (err.code === 401 && creds) {
        const parsed = parseTurnUsername(creds.username);
        if (parsed && parsed.expiresAtSec * 1000 <= this.clock.now()) {
          throw new TurnError(TurnErrorCode.CREDENTIALS_EXPIRED, `relay refused credentials that expired at ${new Date(parsed.expiresAtSec * 1000).toISOString()}`, 401);
        }
      }
      throw errorFromResponse(err.code, err.reason);
    }
  }

  /** Send one request (retransmitted over UDP) and resolve with its response (success or error). */
  private exchange(method: number, attrs: StunAttributes, key: Buffer | undefined): Promise<DecodedStun> {
    const link = this.link;
    if (!link || this.state === 'closed') return Promise.reject(new TurnError(TurnErrorCode.CLOSED, 'client closed'));
    if (this.pending.size >= MAX_PENDING) return Promise.reject(new TurnError(TurnErrorCode.BUSY, `more than ${MAX_PENDING} outstanding requests`));
    const tid = this.tid();
    let bytes: Buffer;
    try {
      bytes = encodeStun({ method, cls: 'request', tid, attrs: { ...(this.opts.software ? { software: this.opts.software } : {}), ...attrs } }, { ...(key ? { integrityKey: key } : {}), fingerprint: true });
    } catch (err) {
      return Promise.reject(new TurnError(TurnErrorCode.BAD_ARGUMENT, String(err)));
    }
    const id = tid.toString('hex');
    return new Promise<DecodedStun>((resolve, reject) => {
      const p: Pending = {
        method, bytes, key, timer: undefined,
        resolve: (m) => { this.finish(id); resolve(m); },
        reject: (e) => { this.finish(id); reject(e); },
      };
      this.pending.set(id, p);
      this.stats.requestsSent++;
      link.send(bytes);
      if (link.reliable) {
        p.timer = this.clock.setTimeout(() => p.reject(new TurnError(TurnErrorCode.TIMEOUT, `no response to method 0x${method.toString(16)} within ${this.opts.tcpTimeoutMs ?? DEFAULT_TCP_TIMEOUT_MS} ms`)), this.opts.tcpTimeoutMs ?? DEFAULT_TCP_TIMEOUT_MS);
        return;
      }
      // RFC 8489 §6.2.1: RTO, 2 RTO, 4 RTO, ... between Rc sends, then Rm * RTO for the last.
      const rto = this.opts.rtoMs ?? DEFAULT_RTO_MS;
      const rc = this.opts.rc ?? DEFAULT_RC;
      const rm = this.opts.rm ?? DEFAULT_RM;
      let sent = 1;
      let wait = rto;
      const tick = (): void => {
        if (!this.pending.has(id)) return;
        if (sent >= rc) {
          p.reject(new TurnError(TurnErrorCode.TIMEOUT, `no response to method 0x${method.toString(16)} after ${rc} requests`));
          return;
        }
        sent++;
        this.stats.retransmissions++;
        this.link?.send(bytes);
        wait *= 2;
        p.timer = this.clock.setTimeout(tick, sent >= rc ? rm * rto : wait);
      };
      p.timer = this.clock.setTimeout(tick, rc <= 1 ? rm * rto : wait);
    });
  }

  private finish(id: string): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.clock.clearTimeout(p.timer);
    this.pending.delete(id);
  }

  private tid(): Buffer {
    return this.opts.randomTid ? this.opts.randomTid() : randomBytes(12);
  }

  // --- refreshes --------------------------------------------------------------------------------

  private scheduleRefresh(lifetimeSec: number): void {
    this.clock.clearTimeout(this.refreshTimer);
    const lifetimeMs = lifetimeSec * 1000;
    const at = Math.max(lifetimeMs - Math.min(ALLOCATION_REFRESH_MARGIN_MS, lifetimeMs / 2), 0);
    const expiresAt = this.clock.now() + lifetimeMs;
    this.refreshTimer = this.clock.setTimeout(() => void this.refresh(expiresAt), at);
  }

  private async refresh(expiresAt: number): Promise<void> {
    if (this.state !== 'allocated') return;
    try {
      const res = await this.transact(Method.Refresh, this.opts.lifetimeSec !== undefined ? { lifetime: this.opts.lifetimeSec } : {});
      if (this.state !== 'allocated') return;
      const lifetime = res.attrs.lifetime;
      if (lifetime === undefined || lifetime === 0) throw new TurnError(TurnErrorCode.BAD_RESPONSE, 'Refresh success without a LIFETIME');
      this.stats.refreshes++;
      if (this.allocation) this.allocation = { ...this.allocation, lifetimeSec: lifetime };
      this.scheduleRefresh(lifetime);
      this.safeEmit('refreshed', { lifetimeSec: lifetime, tid: res.tid.toString('hex') });
    } catch (err) {
      if (this.state !== 'allocated') return;
      const e = asTurnError(err);
      const left = expiresAt - this.clock.now();
      // A lost exchange may still be retried while the allocation lives; a refusal ends it.
      if ((e.code === TurnErrorCode.TIMEOUT || e.code === TurnErrorCode.BUSY) && left > 2_000) {
        this.log('turn refresh retry', { code: e.code, leftMs: left });
        this.refreshTimer = this.clock.setTimeout(() => void this.refresh(expiresAt), Math.min(5_000, left / 2));
        return;
      }
      this.shutdown(e);
    }
  }

  private ensurePermissionTimer(): void {
    if (this.permissionTimer !== undefined) return;
    const tick = async (): Promise<void> => {
      this.permissionTimer = undefined;
      if (this.state !== 'allocated' || this.permissions.size === 0) return;
      this.permissionTimer = this.clock.setTimeout(() => void tick(), PERMISSION_REFRESH_MS);
      try {
        await this.transact(Method.CreatePermission, { xorPeerAddresses: [...this.permissions].map((ip) => ({ ip, port: 0 })) });
        this.stats.permissionRefreshes++;
      } catch (err) {
        this.reportError(asTurnError(err), 'permission refresh failed');
      }
    };
    this.permissionTimer = this.clock.setTimeout(() => void tick(), PERMISSION_REFRESH_MS);
  }

  private ensureChannelTimer(): void {
    if (this.channelTimer !== undefined) return;
    const tick = async (): Promise<void> => {
      this.channelTimer = undefined;
      if (this.state !== 'allocated' || this.channelsByNumber.size === 0) return;
      this.channelTimer = this.clock.setTimeout(() => void tick(), CHANNEL_REFRESH_MS);
      for (const ch of [...this.channelsByNumber.values()]) {
        try {
          await this.transact(Method.ChannelBind, { channelNumber: ch.channel, xorPeerAddresses: [ch.peer] });
          this.stats.channelRefreshes++;
        } catch (err) {
          this.reportError(asTurnError(err), 'channel refresh failed');
        }
      }
    };
    this.channelTimer = this.clock.setTimeout(() => void tick(), CHANNEL_REFRESH_MS);
  }

  private freeChannel(): number {
    for (let i = 0; i <= MAX_CHANNEL - MIN_CHANNEL; i++) {
      const n = MIN_CHANNEL + ((this.nextChannel - MIN_CHANNEL + i) % (MAX_CHANNEL - MIN_CHANNEL + 1));
      if (!this.channelsByNumber.has(n)) {
        this.nextChannel = n + 1 > MAX_CHANNEL ? MIN_CHANNEL : n + 1;
        return n;
      }
    }
    throw new TurnError(TurnErrorCode.BUSY, 'no free channel number');
  }

  // --- input -------------------------------------------------------------------------------------

  private onPacket(bytes: Buffer): void {
    try {
      this.handlePacket(bytes);
    } catch (err) {
      // Unreachable by design; a bug here must not take the agent down.
      this.drop(`handler fault: ${String(err)}`);
    }
  }

  private handlePacket(bytes: Buffer): void {
    if (this.state === 'closed') return this.drop('after close');
    const first = bytes[0] ?? 0xff;
    if (first >= 0x40 && first <= 0x4f) {
      const r = decodeChannelData(bytes, this.link?.reliable ?? false);
      if (!r.ok) return this.drop(`bad ChannelData: ${r.reason}`);
      const ch = this.channelsByNumber.get(r.frame.channel);
      if (!ch || !ch.bound) return this.drop('ChannelData on an unbound channel');
      return this.deliver(ch.peer, r.frame.data, 'channel');
    }
    const r = decodeStun(bytes);
    if (!r.ok) return this.drop(`bad STUN: ${r.reason}`);
    const m = r.msg;
    if (m.cls === 'success' || m.cls === 'error') {
      const p = this.pending.get(m.tid.toString('hex'));
      if (!p || p.method !== m.method) return this.drop('response to no outstanding request');
      if (p.key && m.integrityAt !== undefined && !verifyIntegrity(m, p.key)) return this.drop('response with a wrong MESSAGE-INTEGRITY');
      if (p.key && m.cls === 'success' && m.integrityAt === undefined) return this.drop('unauthenticated success response to an authenticated request');
      this.stats.responses++;
      p.resolve(m);
      return;
    }
    if (m.cls === 'indication' && m.method === Method.Data) {
      if (this.state !== 'allocated') return this.drop('Data indication before allocation');
      const peer = m.attrs.xorPeerAddresses?.[0];
      const data = m.attrs.data;
      if (!peer || !data || m.attrs.xorPeerAddresses!.length !== 1) return this.drop('Data indication without one XOR-PEER-ADDRESS and DATA');
      if (!this.permissions.has(peer.ip)) return this.drop('Data indication from a peer not permitted');
      return this.deliver(peer, data, 'indication');
    }
    return this.drop(`unexpected STUN ${m.cls} 0x${m.method.toString(16)}`);
  }

  private deliver(peer: Address, data: Buffer, via: 'channel' | 'indication'): void {
    this.stats.dataIn++;
    this.stats.bytesIn += data.length;
    this.safeEmit('data', peer, data, via);
  }

  private onLinkClosed(err: TurnError): void {
    if (this.state === 'closed') return;
    if (this.state === 'closing') return this.shutdown(undefined);
    this.shutdown(err);
  }

  // --- plumbing ----------------------------------------------------------------------------------

  private requireAllocated(): void {
    if (this.state === 'closed' || this.state === 'closing') throw new TurnError(TurnErrorCode.CLOSED, 'client closed');
    if (this.state !== 'allocated') throw new TurnError(TurnErrorCode.NOT_ALLOCATED, 'no allocation yet');
  }

  private sendFailed(code: TurnErrorCode): TurnSendResult {
    this.stats.dropped[`send:${code}`] = (this.stats.dropped[`send:${code}`] ?? 0) + 1;
    return { ok: false, code };
  }

  private drop(reason: string): void {
    // Counted by the reason's stable prefix (before a colon), logged in full.
    const key = reason.split(':')[0]!;
    this.stats.dropped[key] = (this.stats.dropped[key] ?? 0) + 1;
    this.log('turn refusal', { reason });
  }

  private reportError(err: TurnError, what: string): void {
    this.log(what, { code: err.code, message: err.message });
    if (err.code === TurnErrorCode.ALLOCATION_MISMATCH) return this.shutdown(err);
    this.safeEmit('error', err);
  }

  private clearTimers(): void {
    this.clock.clearTimeout(this.refreshTimer);
    this.clock.clearTimeout(this.permissionTimer);
    this.clock.clearTimeout(this.channelTimer);
    this.refreshTimer = this.permissionTimer = this.channelTimer = undefined;
  }

  /** Final state: every timer stopped, every request failed, the link closed, 'closed' emitted once. */
  private shutdown(err: TurnError | undefined): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.clearTimers();
    for (const p of [...this.pending.values()]) p.reject(new TurnError(TurnErrorCode.CLOSED, 'client closed'));
    this.closeLink();
    if (err) {
      this.log('turn closed', { code: err.code, message: err.message });
      this.safeEmit('error', err);
    }
    this.safeEmit('closed', err);
  }

  /** Close the link, if any; a link closed already or a broken socket has nothing left to do. */
  private closeLink(): void {
    try {
      this.link?.close();
    } catch {
      // closing twice or a broken socket
    }
  }

  private log(msg: string, fields: Record<string, unknown>): void {
    try {
      this.opts.log?.(msg, fields);
    } catch {
      this.stats.listenerErrors++;
    }
  }

  /** emit() that never throws into a socket handler: no 'error' listener is not a crash, a throwing listener is counted. */
  private safeEmit<K extends keyof TurnClientEvents>(event: K, ...args: TurnClientEvents[K]): void {
    if (event === 'error' && this.listenerCount('error') === 0) return;
    try {
      (this.emit as (e: string, ...a: unknown[]) => boolean)(event, ...args);
    } catch {
      this.stats.listenerErrors++;
    }
  }
}

function asTurnError(err: unknown): TurnError {
  return err instanceof TurnError ? err : new TurnError(TurnErrorCode.CONNECTION, String(err instanceof Error ? err.message : err));
}

// --- real links -----------------------------------------------------------------------------------
// node:net, node:tls and node:dns are imported when a link needs them, not with this module:
// an idle agent never opens a relay link, and loading them costs it RSS (issue 20).

/** An IP address in text, as the codec can encode it (wire/addr.ts; no DNS name, no scope). */
function isIpText(text: string): boolean {
  return ipToBytes(text) !== null;
}

async function resolveHost(host: string): Promise<string> {
  if (isIpText(host)) return host;
  try {
    const { lookup } = await import('node:dns/promises');
    return (await lookup(host)).address;
  } catch (err) {
    throw new TurnError(TurnErrorCode.CONNECTION, `cannot resolve relay ${host}: ${String(err)}`);
  }
}

function tlsOptions(server: TurnServer, ip: string): ConnectionOptions {
  const o: ConnectionOptions = { host: ip, port: server.port, rejectUnauthorized: server.tls?.rejectUnauthorized ?? true };
  // SNI carries a name, never an IP literal (RFC 6066 §3).
  const name = server.tls?.servername ?? (isIpText(server.host) ? undefined : server.host);
  if (name !== undefined) o.servername = name;
  if (server.tls?.ca !== undefined) o.ca = server.tls.ca;
  return o;
}

/** The default link: a connected UDP socket, or a TCP/TLS stream framed per RFC 8656 §12. */
export const defaultLink: LinkFactory = async (server, h, o = {}) => {
  const ip = await resolveHost(server.host);
  if (server.transport === 'udp') {
    const sock = dgram.createSocket({ type: ip.includes(':') ? 'udp6' : 'udp4', lookup: literalLookup });
    await new Promise<void>((resolve, reject) => {
      sock.once('error', (e) => reject(new TurnError(TurnErrorCode.CONNECTION, `UDP socket: ${e.message}`)));
      sock.connect(server.port, ip, () => resolve());
    });
    // On a connected socket the kernel already drops datagrams from anyone but the relay.
    sock.on('message', (b) => h.packet(b));
    // ICMP unreachable and the like: the retransmission schedule decides, not one error.
    sock.on('error', (e) => h.drop(`socket error: ${e.message}`));
    let open = true;
    return {
      reliable: false,
      send(bytes) {
        if (!open) return false;
        try {
          sock.send(bytes, (e) => {
            if (e) h.drop(`send error: ${e.message}`);
          });
        } catch (e) {
          h.drop(`send error: ${String(e)}`);
          return false;
        }
        return true;
      },
      close() {
        if (!open) return;
        open = false;
        sock.close();
      },
    };
  }
  const net = await import('node:net');
  const tls = server.transport === 'tls' ? await import('node:tls') : undefined;
  const stream: Socket = await new Promise((resolve, reject) => {
    const s: Socket =
      tls
        ? tls.connect(tlsOptions(server, ip), () => done())
        : net.connect({ host: ip, port: server.port }, () => done());
    // A firewall that drops the SYN leaves connect() waiting for the kernel's retries (minutes):
    // the caller's bound ends it, so that the next transport or relay is tried in time.
    const limit = o.connectTimeoutMs ?? DEFAULT_TCP_TIMEOUT_MS;
    const timer = setTimeout(() => fail(new Error(`no connection within ${limit} ms`)), limit);
    const fail = (e: Error): void => {
      clearTimeout(timer);
      s.destroy();
      reject(new TurnError(TurnErrorCode.CONNECTION, `${server.transport.toUpperCase()} connection to ${ip}:${server.port}: ${e.message}`));
    };
    const done = (): void => {
      clearTimeout(timer);
      s.off('error', fail);
      resolve(s);
    };
    s.once('error', fail);
  });
  stream.setNoDelay(true);
  const maxQueue = DEFAULT_MAX_WRITE_QUEUE_BYTES;
  let buf: Buffer = Buffer.alloc(0);
  let open = true;
  const broken = (why: string): void => {
    if (!open) return;
    open = false;
    stream.destroy();
    h.closed(new TurnError(TurnErrorCode.CONNECTION, why));
  };
  stream.on('data', (chunk: Buffer) => {
    if (!open) return;
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
    for (;;) {
      const n = streamFrameLength(buf);
      if (n < 0) return broken('relay stream is not STUN/TURN framing');
      if (n === 0 || buf.length < n) break;
      const frame = buf.subarray(0, n);
      buf = buf.subarray(n);
      h.packet(frame);
      if (!open) return;
    }
    // A frame is never larger than a STUN message (ChannelData is shorter), so neither is the buffer.
    if (buf.length > MAX_STUN_BYTES) broken('relay stream frame beyond the STUN maximum');
  });
  stream.on('error', (e) => broken(`${server.transport.toUpperCase()} error: ${e.message}`));
  stream.on('close', () => broken(`${server.transport.toUpperCase()} connection closed by the relay`));
  return {
    reliable: true,
    send(bytes) {
      if (!open) return false;
      if (stream.writableLength + bytes.length > maxQueue) {
        h.drop('write queue full');
        return false;
      }
      try {
        stream.write(bytes);
      } catch (e) {
        h.drop(`send error: ${String(e)}`);
        return false;
      }
      return true;
    },
    close() {
      if (!open) return;
      open = false;
      stream.end();
      stream.destroy();
    },
  };
};
