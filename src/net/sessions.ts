// Server side of session authentication (locatord, matchd). A session is opened by the first
// session-MACed message that carries a ticket: the ticket is verified (once per process, see
// TicketVerifier), the session keys are derived from the ticket's cnf key and our static key,
// and the MAC of that very datagram proves the sender holds the cnf secret. Later messages name
// the session by ID (the ticket's cti) and cost one HMAC. Sessions end when their ticket expires.
import type { KeyObject } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { Address } from '../wire/addr.js';
import type { Bodies, MessageName } from '../wire/catalog.js';
import type { EncodedBody, Message, SessionAuth } from '../wire/envelope.js';
import { encodeDatagram } from '../wire/envelope.js';
import { ErrorCode } from '../wire/errors.js';
import type { SessionKeys } from '../wire/session.js';
import { deriveSessionKeys, rawKey, ReplayWindow, sealDatagram, slabAlloc, verifyDatagram } from '../wire/session.js';
import type { TicketVerifier } from '../wire/ticket.js';

/**
 * A server session. Held as a SessionRecord (made by `newServerSession`; see there for the
 * layout); tests may pass plain objects of this shape.
 */
export interface ServerSession {
  sid: Buffer;
  sidHex: string;
  locatorId: Buffer;
  locatorHex: string;
  aud: string;
  /** Ticket expiry, seconds since the epoch. */
  exp: number;
  keys: SessionKeys;
  window: ReplayWindow;
  /** Last sequence number we sent in this session. */
  txSeq: number;
}

const KEY_BYTES = 32;

/**
 * The record of a server session (a million per locatord: issue 16). Layout: the session's bytes
 * in ONE buffer, a view into a slab of session bytes (slabAlloc: no ArrayBuffer, no KeyObject of
 * its own; each view costs ~100 B of V8 heap, so there is one, not four):
 *   sid (the ticket's cti) | locator ID | terminal-to-server key (32) | server-to-terminal key (32);
 * `sid`, `locatorId` and `keys` are views made when asked for (short-lived, young-generation
 * garbage). The hex IDs are the keys of the session LRU and of the registration table (the same
 * string); the replay window is three number fields (a 64-bit bitmap, see ReplayWindow). A new
 * per-session field is declared here with its initial value in the constructor, so that every
 * session keeps the one hidden class.
 */
export class SessionRecord implements ServerSession {
  /** sid | locatorId | terminalToServer | serverToTerminal. */
  private readonly bytes: Buffer;
  private readonly sidBytes: number;
  readonly sidHex: string;
  readonly locatorHex: string;
  readonly aud: string;
  exp: number;
  window: ReplayWindow;
  txSeq: number;
  /** The kid of the ticket that opened it (locatord drops sessions of distrusted kids: SIGHUP). */
  kid?: string;

  constructor(f: {
    sid: Uint8Array; locatorId: Uint8Array; aud: string; exp: number; terminalToServer: Uint8Array; serverToTerminal: Uint8Array;
    window?: ReplayWindow | undefined; txSeq?: number | undefined; sidHex?: string | undefined; locatorHex?: string | undefined;
  }) {
    const n = f.sid.length;
    const l = f.locatorId.length;
    const bytes = slabAlloc(n + l + 2 * KEY_BYTES);
    bytes.set(f.sid, 0);
    bytes.set(f.locatorId, n);
    bytes.set(f.terminalToServer.subarray(0, KEY_BYTES), n + l);
    bytes.set(f.serverToTerminal.subarray(0, KEY_BYTES), n + l + KEY_BYTES);
    this.bytes = bytes;
    this.sidBytes = n;
    this.sidHex = f.sidHex ?? bytes.toString('hex', 0, n);
    this.locatorHex = f.locatorHex ?? bytes.toString('hex', n, n + l);
    this.aud = f.aud;
    this.exp = f.exp;
    this.window = f.window ?? new ReplayWindow();
    this.txSeq = f.txSeq ?? 0;
  }

  get sid(): Buffer {
    return this.bytes.subarray(0, this.sidBytes);
  }

  get locatorId(): Buffer {
    return this.bytes.subarray(this.sidBytes, this.bytes.length - 2 * KEY_BYTES);
  }

  /** Copy both keys (terminal-to-server, then server-to-terminal) into `to` at `at`, without a view per key (snapshots). */
  copyKeys(to: Uint8Array, at: number): void {
    this.bytes.copy(to, at, this.bytes.length - 2 * KEY_BYTES);
  }

  get keys(): SessionKeys {
    const k = this.bytes.length - 2 * KEY_BYTES;
    return { terminalToServer: this.bytes.subarray(k, k + KEY_BYTES), serverToTerminal: this.bytes.subarray(k + KEY_BYTES) };
  }
}

/** The one constructor of session records (see SessionRecord): copies what it keeps. */
export function newServerSession(f: ConstructorParameters<typeof SessionRecord>[0]): ServerSession {
  return new SessionRecord(f);
}

/** What a replay window says of a sequence number (ReplayWindow.check). */
export type WindowVerdict = 'ok' | 'replay' | 'old';

/**
 * What the shared window says: as WindowVerdict, or 'elsewhere' when the number was taken for a
 * datagram from this same source: a retransmission that reached another instance (or worker)
 * than the first copy; that instance answers it (response cache), this one drops it.
 */
export type ClaimVerdict = WindowVerdict | 'elsewhere';

/**
 * A replay window every instance serving the same sessions shares (locatord --store redis,
 * store/redis.ts): `claim` checks and takes a sequence number in one atomic step, so that of
 * several instances (or workers) receiving one datagram at most one executes it; it remembers
 * the source (`ip|port`) it was taken for. `release` gives it back when the answer was "try
 * again" (TRY_LATER, RATE_LIMITED). Both reject when the store is unavailable.
 */
export interface SharedReplayWindow {
  claim(session: WindowOwner, seq: number, ttlMs: number, source: string): Promise<ClaimVerdict>;
  release(session: WindowOwner, seq: number): Promise<void>;
}

/** The session a shared window belongs to (its terminal's ID places it beside its presence record). */
export type WindowOwner = Pick<ServerSession, 'sidHex' | 'locatorHex'>;

export type AuthOutcome =
  | { ok: true; session: ServerSession; fresh: boolean }
  | { ok: false; code: ErrorCode; reason: string };

export interface ServerSessionsOptions {
  verifier: TicketVerifier;
  /** Our static X25519 secret (the service key). */
  serviceSecret: KeyObject;
  maxSessions?: number;
  /**
   * Most sessions held per locator ID (default MAX_SESSIONS_PER_ID): a device opening more (one
   * per ticket it gets) loses its own oldest, never another terminal's to the LRU bound.
   */
  maxSessionsPerId?: number;
  /** Milliseconds clock. */
  now?: () => number;
  /**
   * How far a ticket-carrying message's timeMs may be from our clock. Bounds the replay of an
   * old session-opening message after we lost our sessions (restart), ms.
   */
  freshnessMs?: number;
  /**
   * Sessions opened by another instance sharing a store (locatord --store redis): looked up
   * when a message names a session we do not hold. Rejects when the store is unavailable.
   */
  remote?: (sidHex: string) => Promise<ServerSession | undefined>;
  /** The replay window shared with the other instances (see SharedReplayWindow). */
  sharedWindow?: SharedReplayWindow;
}

/** Sessions per locator ID: a terminal holds one per service per ticket, two while it renews. */
export const MAX_SESSIONS_PER_ID = 8;

export class ServerSessions {
  private readonly sessions: LRUCache<string, ServerSession>;
  /**
   * locator ID (hex) -> its sessions' IDs, oldest first: the one ID itself (the common case, no
   * collection per terminal), or an array of them.
   */
  private readonly byLocator = new Map<string, string | string[]>();
  /**
   * Keys derived for session-opening messages whose MAC has not verified (yet). Tickets cross
   * the wire in clear inside REGISTER, so anyone who saw one can send opening messages with a
   * garbage MAC: without this, each would cost an X25519 before the MAC check fails. The keys
   * are a function of (service key, cnf, cti, aud), so remembering them is safe.
   */
  private readonly pendingKeys = new LRUCache<string, SessionKeys>({ max: 10_000 });
  private readonly now: () => number;
  private readonly freshnessMs: number;
  /** Sessions opened (ticket accepted and MAC verified). */
  opened = 0;
  /** Lookups of `remote` in progress, so concurrent datagrams of one session share one. */
  private readonly fetching = new Map<string, Promise<boolean>>();
  /** X25519 key agreements performed (a metric tests read). */
  keyDerivations = 0;

  constructor(private readonly opts: ServerSessionsOptions) {
    this.sessions = new LRUCache({
      max: opts.maxSessions ?? 2_000_000, ttlAutopurge: false,
      dispose: (session, sidHex) => this.forgetOfLocator(session.locatorHex, sidHex),
    });
    this.now = opts.now ?? Date.now;
    this.freshnessMs = opts.freshnessMs ?? 120_000;
  }

  get verifier(): TicketVerifier {
    return this.opts.verifier;
  }

  get size(): number {
    return this.sessions.size;
  }

  get(sidHex: string): ServerSession | undefined {
    const s = this.sessions.get(sidHex);
    if (s && s.exp * 1000 + this.opts.verifier.clockSkewS * 1000 < this.now()) {
      this.sessions.delete(sidHex);
      return undefined;
    }
    return s;
  }

  get hasRemote(): boolean {
    return this.opts.remote !== undefined;
  }

  /**
   * Load a session another instance opened (see `remote`); true when it is now held. Its send
   * sequence starts from the clock (microseconds), above what the other instance sent: the
   * terminal's replay window refuses server sequence numbers below its highest one.
   */
  fetch(sidHex: string): Promise<boolean> {
    const remote = this.opts.remote;
    if (!remote) return Promise.resolve(false);
    let p = this.fetching.get(sidHex);
    if (!p) {
      p = remote(sidHex).then((s) => {
        if (!s || this.sessions.has(sidHex)) return this.sessions.has(sidHex);
        s.txSeq = Math.max(s.txSeq, this.now() * 1000);
        this.restore(s);
        return this.get(sidHex) !== undefined;
      }).finally(() => this.fetching.delete(sidHex));
      this.fetching.set(sidHex, p);
    }
    return p;
  }

  /** Verify the MAC of a session message, opening the session from its ticket if needed. */
  authenticate(msg: Message, raw: Uint8Array): AuthOutcome {
    if (!msg.auth) return { ok: false, code: ErrorCode.BAD_MESSAGE, reason: 'no session auth' };
    return this.authenticateParts(msg.auth, msg.body as { ticket?: Uint8Array; timeMs?: number }, raw);
  }

  /**
   * The MAC check of a session datagram whose body did not decode (the documented order checks
   * the MAC before the body): only a known session can be checked, as opening one needs the
   * body's ticket, so an unknown one answers NO_SESSION.
   */
  authenticateKnown(auth: SessionAuth, raw: Uint8Array): AuthOutcome {
    return this.authenticateParts(auth, {}, raw);
  }

  private authenticateParts(auth: SessionAuth, body: { ticket?: Uint8Array; timeMs?: number }, raw: Uint8Array): AuthOutcome {
    const sid = Buffer.from(auth.sid.buffer, auth.sid.byteOffset, auth.sid.length);
    const sidHex = sid.toString('hex');
    let session = this.get(sidHex);
    let fresh = false;
    if (!session) {
      if (!body.ticket) return { ok: false, code: ErrorCode.NO_SESSION, reason: 'unknown session: register again with the ticket' };
      const v = this.opts.verifier.verify(body.ticket);
      if (!v.ok) return v;
      if (!v.claims.cti.equals(sid)) return { ok: false, code: ErrorCode.BAD_TICKET, reason: 'session ID must equal the ticket cti' };
      if (body.timeMs === undefined || Math.abs(body.timeMs - this.now()) > this.freshnessMs) {
        return { ok: false, code: ErrorCode.CLOCK_SKEW, reason: 'session-opening message too old or too far ahead' };
      }
      const keyId = `${sidHex}/${v.claims.cnf.toString('hex')}/${v.claims.aud}`;
      let keys = this.pendingKeys.get(keyId) ?? null;
      if (!keys) {
        this.keyDerivations++;
        keys = deriveSessionKeys(this.opts.serviceSecret, v.claims.cnf, v.claims.cti, v.claims.aud);
        if (!keys) return { ok: false, code: ErrorCode.BAD_TICKET, reason: 'cnf key unusable' };
        this.pendingKeys.set(keyId, keys);
      }
      session = newServerSession({
        sid, sidHex, locatorId: v.claims.locatorId, aud: v.claims.aud, exp: v.claims.exp,
        terminalToServer: rawKey(keys.terminalToServer), serverToTerminal: rawKey(keys.serverToTerminal),
      });
      fresh = true;
    }
    if (!verifyDatagram(session.keys.terminalToServer, raw)) return { ok: false, code: ErrorCode.BAD_MAC, reason: 'MAC does not verify' };
    // Shared sessions: a gap in the terminal's sequence means it talked to another instance
    // meanwhile, whose replies carried higher sequence numbers than ours; continue above them.
    if (this.opts.remote && !fresh && auth.seq > session.window.highestSeen + 1) session.txSeq = Math.max(session.txSeq, this.now() * 1000);
    return { ok: true, session, fresh };
  }

  /**
   * Take `seq` in the shared replay window (after the local window said 'ok'); undefined when
   * there is none (one instance: the local window is the whole truth).
   */
  claim(session: ServerSession, seq: number, from: Address): Promise<ClaimVerdict> | undefined {
    const w = this.opts.sharedWindow;
    if (!w) return undefined;
    // Kept as long as the session can be used, then Redis frees it.
    return w.claim(session, seq, Math.max(1, session.exp * 1000 + this.opts.verifier.clockSkewS * 1000 - this.now()), `${from.ip}|${from.port}`);
  }

  /** Give back a claimed `seq` (its message was answered "try again"); no-op without a shared window. */
  release(session: ServerSession, seq: number): Promise<void> {
    return this.opts.sharedWindow?.release(session, seq) ?? Promise.resolve();
  }

  /** Keep a freshly opened session (after its first message passed every check). */
  commit(session: ServerSession): void {
    const ttl = Math.max(1, session.exp * 1000 + this.opts.verifier.clockSkewS * 1000 - this.now());
    // Shared sessions send from a clock-based sequence (see fetch), whichever instance opened them.
    if (this.opts.remote) session.txSeq = Math.max(session.txSeq, this.now() * 1000);
    this.hold(session, ttl);
    this.opened++;
  }

  private forgetOfLocator(locatorHex: string, sidHex: string): void {
    const ids = this.byLocator.get(locatorHex);
    if (ids === undefined) return;
    if (typeof ids === 'string') {
      if (ids === sidHex) this.byLocator.delete(locatorHex);
      return;
    }
    const i = ids.indexOf(sidHex);
    if (i >= 0) ids.splice(i, 1);
    if (ids.length === 1) this.byLocator.set(locatorHex, ids[0]!);
    else if (ids.length === 0) this.byLocator.delete(locatorHex);
  }

  /** Keep `session`; beyond the per-ID cap, its locator ID's oldest session goes. */
  private hold(session: ServerSession, ttl: number): void {
    const { sidHex, locatorHex } = session;
    this.sessions.set(sidHex, session, { ttl });
    const ids = this.byLocator.get(locatorHex);
    if (ids === undefined || ids === sidHex) {
      this.byLocator.set(locatorHex, sidHex);
      return;
    }
    const list = typeof ids === 'string' ? [ids] : ids.filter((x) => x !== sidHex);
    list.push(sidHex);
    this.byLocator.set(locatorHex, list);
    const cap = this.opts.maxSessionsPerId ?? MAX_SESSIONS_PER_ID;
    // Deleting from the LRU disposes of the session, which takes it out of `list`.
    while (list.length > cap) this.sessions.delete(list[0]!);
  }

  /** Encode and MAC a message to the terminal of `session`. */
  encode<N extends MessageName>(session: ServerSession, name: N, rid: Uint8Array, body: Bodies[N] | EncodedBody<N>): Buffer {
    session.txSeq++;
    return sealDatagram(session.keys.serverToTerminal, encodeDatagram(name, rid, body, { sid: session.sid, seq: session.txSeq }));
  }

  /** Drop sessions of tickets whose signing key is no longer trusted, or by predicate. */
  dropWhere(pred: (s: ServerSession) => boolean): number {
    let n = 0;
    for (const [k, s] of this.sessions.entries()) {
      if (pred(s)) {
        this.sessions.delete(k);
        n++;
      }
    }
    return n;
  }

  /**
   * `s` is held (not ended, evicted or replaced), without touching its recency: one map lookup,
   * where iterating the LRU costs a lookup per entry anyway (snapshots).
   */
  holds(s: ServerSession): boolean {
    const ids = this.byLocator.get(s.locatorHex);
    return ids === s.sidHex || (Array.isArray(ids) && ids.includes(s.sidHex));
  }

  /** The IDs of the sessions held, by a plain map walk (snapshots: `get` the few it needs). */
  *ids(): IterableIterator<string> {
    for (const ids of this.byLocator.values()) {
      if (typeof ids === 'string') yield ids;
      // A copy: the caller's `get` may drop an expired session, which edits this array.
      else yield* [...ids];
    }
  }

  *all(): IterableIterator<ServerSession> {
    for (const s of this.sessions.values()) yield s;
  }

  /** Restore a session from a snapshot (locatord restart), keeping its replay window. */
  restore(s: ServerSession): void {
    const ttl = s.exp * 1000 + this.opts.verifier.clockSkewS * 1000 - this.now();
    if (ttl > 0) this.hold(s, ttl);
  }
}
