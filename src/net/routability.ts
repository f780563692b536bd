// Return routability of session addresses (devloc-protocol(7), ADDRESS VALIDATION; QUIC's
// address validation, RFC 9000 section 8, is the model). A valid session MAC proves the sender
// holds the session keys, not that it receives at the datagram's source address: whoever holds
// them can forge the source. So a server (locatord, matchd) keeps, per session, the addresses
// that proved they receive, and until an address has:
//   - it sends there nothing larger than the request, and at most one small ADDR_CHALLENGE per
//     request (and per CHALLENGE_GAP_MS for a session and address);
//   - no binding moves there (REGISTER, REFRESH, PROBE_ACK), and no INTRODUCE or MATCH_SUBMIT
//     uses it as the terminal's address: their handlers answer NEEDS_VALIDATION.
// The challenge replaces the answer: MACed in the session, with the request's ID, carrying
// token = HMAC-SHA-256(key, sid || slot || address)[0..16] (key random per process, slot = the
// 30-s period). The terminal echoes sid and token in ADDR_PROOF from the same address; the
// server recomputes the token for the current and the previous slot and the proof's source,
// and marks the address validated. The request was not executed (or its answer not sent) and
// its sequence number not spent, so the terminal sends the same datagram again.
import type { KeyObject } from 'node:crypto';
import { createHash, createHmac, diffieHellman, randomBytes, timingSafeEqual } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { Address } from '../wire/addr.js';
import { normaliseIp, packIp } from '../wire/addr.js';
import type { Bodies } from '../wire/catalog.js';
import { ErrorCode } from '../wire/errors.js';
import { publicKeyObject } from '../wire/keys.js';
import { peekTicket } from '../wire/ticket-parse.js';
import type { Refusal } from './server.js';
import type { ServerSession } from './sessions.js';
import { HeldSession } from './sessions.js';

/** Token validity: the slot it was made in and the next one (30 to 60 s). */
export const TOKEN_SLOT_MS = 30_000;
export const ADDR_TOKEN_BYTES = 16;
/** Addresses remembered as validated per session (the newest ones). */
export const MAX_VALIDATED_PER_SESSION = 4;
/** At most one ADDR_CHALLENGE per session and address in this time. */
export const CHALLENGE_GAP_MS = 500;

/**
 * What a handler returns when the request needs a validated address (a binding would move, or
 * the address would be used): the server sends ADDR_CHALLENGE instead of an ERROR. Compared by
 * identity.
 */
export const NEEDS_VALIDATION: Refusal = Object.freeze({ error: ErrorCode.TRY_LATER, message: 'address not validated for this session' }) as Refusal;

/**
 * The token key of every process holding `serviceSecret` (one X25519 with a fixed point, then an
 * HMAC): the workers of locatord --workers read one UDP socket, so a proof may reach another
 * worker than its challenge, which can then check it (and validates the address for itself).
 */
export function tokenKeyFrom(serviceSecret: KeyObject): Buffer {
  const point = publicKeyObject('X25519', createHash('sha256').update('devloc address token point').digest());
  return createHmac('sha256', diffieHellman({ privateKey: serviceSecret, publicKey: point })).update('devloc address token key').digest();
}

/** An address key: a normalised IP and a port as one string (the IPv6 lists, other workers, byId). */
const keyOf = (ip: string, port: number): string => `${ip}|${port}`;
const addrKey = (a: Address): string => keyOf(normaliseIp(a.ip), a.port);

export interface AddressValidationOptions {
  now?: () => number;
  /** Token key (tests); default random. */
  key?: Buffer;
  /** Sessions not held in a slot table whose validated addresses are remembered by ID (see `byId`). */
  maxUnheld?: number;
}

/** Sessions by ID, to resolve an acceptKey from another worker to a held session's slot. */
export interface SessionFinder {
  get(sidHex: string): ServerSession | undefined;
}

/** An IPv4 address and port as one exact number: ip * 2^16 + port + 1 (0 = none; < 2^49). */
const packV4 = (ip: number, port: number): number => (ip >>> 0) * 65_536 + port + 1;

/**
 * Validated addresses are kept beside the held session they belong to, by its slot in the
 * ServerSessions' table (HeldSession slot and generation): MAX_VALIDATED_PER_SESSION numbers per
 * slot for IPv4 (packV4, exact), a map for the rare IPv6 ones, and the slot's generation, so a
 * slot taken by another session starts with none. That is 36 B per slot, no object and no string
 * per session: a string-keyed LRU of arrays cost ~380 B of heap per active session and, capped
 * at 500k, made every REFRESH beyond that many active sessions a challenge round trip. Sessions
 * that are not held (a record being opened, an acceptKey from another worker for a session this
 * one does not hold) fall back to a small LRU by session ID.
 */
export class AddressValidation {
  private readonly key: Buffer;
  private readonly now: () => number;
  /** Per slot: the generation whose addresses `v4`/`v6` hold (+1; 0 = none). */
  private slotGen = new Uint32Array(0);
  /** Per slot, MAX_VALIDATED_PER_SESSION packed IPv4 addresses, oldest first (0 = empty). */
  private v4 = new Float64Array(0);
  /** IPv6 addresses (addrKey) validated for a slot, oldest first. */
  private readonly v6 = new Map<number, string[]>();
  /** Validated addresses of sessions not held in a slot, by session ID (bounded; evicted = challenged again). */
  private readonly byId: LRUCache<string, string[]>;
  private readonly lastChallenge = new LRUCache<string, number>({ max: 65_536 });
  private sessions: SessionFinder | undefined;
  /** Counters (the server exports them as metrics). */
  readonly stats = { challenges: 0, suppressed: 0, proofs: 0, badProofs: 0, openedValidated: 0 };
  /**
   * Told of every address validated here (session ID hex, address key): `locatord --workers`
   * passes it to the other workers (acceptKey), which read the same socket, so a proof that
   * reached one worker validates the address at all of them.
   */
  onAccepted: ((sidHex: string, addr: string) => void) | undefined;

  constructor(o: AddressValidationOptions = {}) {
    this.key = o.key ?? randomBytes(32);
    this.now = o.now ?? Date.now;
    this.byId = new LRUCache({ max: o.maxUnheld ?? 65_536 });
  }

  /** The sessions whose held ones acceptKey resolves to their slot (DatagramServer attaches its own). */
  attach(sessions: SessionFinder): void {
    this.sessions = sessions;
  }

  /** The index of `session`'s addresses in v4 (slot * MAX), made current for its generation; -1 when not held. */
  private slotOf(session: ServerSession, forWrite: boolean): number {
    if (!(session instanceof HeldSession) || !session.live) return -1;
    const slot = session.slot;
    const gen = (session.gen + 1) >>> 0 || 1;
    if (slot < this.slotGen.length && this.slotGen[slot] === gen) return slot;
    if (!forWrite) return -1;
    if (slot >= this.slotGen.length) {
      // As large as the session table (it grows by doubling up to --max-sessions), so no slack of our own.
      const n = Math.max(slot + 1, session.table.cap || Math.max(this.slotGen.length * 2, 1024));
      const g = new Uint32Array(n);
      g.set(this.slotGen);
      const a = new Float64Array(n * MAX_VALIDATED_PER_SESSION);
      a.set(this.v4);
      this.slotGen = g;
      this.v4 = a;
    }
    // A new session in the slot: the last one's addresses go.
    this.slotGen[slot] = gen;
    this.v4.fill(0, slot * MAX_VALIDATED_PER_SESSION, (slot + 1) * MAX_VALIDATED_PER_SESSION);
    this.v6.delete(slot);
    return slot;
  }

  isValidated(session: ServerSession, from: Address): boolean {
    const slot = this.slotOf(session, false);
    if (slot >= 0) {
      // Normalised and packed per datagram on purpose: ~32 ns of a REFRESH's ~15 us in locatord
      // (0.2%, bench/refresh-micro.ts), too little for a cache or a second path to be worth it.
      const ip = packIp(normaliseIp(from.ip));
      if (typeof ip === 'number') {
        const x = packV4(ip, from.port);
        const at = slot * MAX_VALIDATED_PER_SESSION;
        for (let i = 0; i < MAX_VALIDATED_PER_SESSION; i++) if (this.v4[at + i] === x) return true;
      } else if (this.v6.get(slot)?.includes(addrKey(from))) return true;
    }
    // Validated before it was held here (opened, or passed on by another worker): move it in.
    if (this.byId.size === 0) return false;
    const k = addrKey(from);
    const list = this.byId.get(session.sidHex);
    if (!list?.includes(k)) return false;
    if (slot >= 0 || this.slotOf(session, true) >= 0) {
      for (const a of list) this.recordKey(session, a);
      this.byId.delete(session.sidHex);
    }
    return true;
  }

  /**
   * Record normalised `ip` and `port` (`k`: their key, if the caller has it) for a held session
   * (the newest MAX_VALIDATED_PER_SESSION kept); false when not held.
   */
  private record(session: ServerSession, ip: string, port: number, k?: string): boolean {
    const slot = this.slotOf(session, true);
    if (slot < 0) return false;
    const packed = packIp(ip);
    if (typeof packed === 'number') {
      const x = packV4(packed, port);
      const at = slot * MAX_VALIDATED_PER_SESSION;
      // The entries are contiguous from `at`, oldest first. Take out x where it is (or the first
      // empty place, or when full and x is absent the oldest), close the gap, append x.
      let i = 0;
      while (i < MAX_VALIDATED_PER_SESSION && this.v4[at + i] !== 0 && this.v4[at + i] !== x) i++;
      if (i === MAX_VALIDATED_PER_SESSION) i = 0;
      this.v4.copyWithin(at + i, at + i + 1, at + MAX_VALIDATED_PER_SESSION);
      this.v4[at + MAX_VALIDATED_PER_SESSION - 1] = 0;
      let end = at;
      while (end < at + MAX_VALIDATED_PER_SESSION && this.v4[end] !== 0) end++;
      this.v4[end] = x;
    } else this.v6.set(slot, withNewest(this.v6.get(slot), k ?? keyOf(ip, port)));
    return true;
  }

  /** record() of an address key that arrived as one (byId, another worker). */
  private recordKey(session: ServerSession, k: string): boolean {
    const sep = k.lastIndexOf('|');
    return this.record(session, k.slice(0, sep), Number(k.slice(sep + 1)), k);
  }

  private token(sid: Uint8Array, from: Address, slot: number): Buffer {
    const h = createHmac('sha256', this.key);
    h.update(sid);
    const s = Buffer.alloc(8);
    s.writeBigUInt64BE(BigInt(slot));
    h.update(s);
    h.update(addrKey(from));
    return h.digest().subarray(0, ADDR_TOKEN_BYTES);
  }

  /** The ADDR_CHALLENGE body for `session` at `from`, or null when one went there just now. */
  challenge(session: ServerSession, from: Address): Bodies['ADDR_CHALLENGE'] | null {
    const now = this.now();
    const k = `${session.sidHex}/${addrKey(from)}`;
    const last = this.lastChallenge.get(k);
    if (last !== undefined && now - last < CHALLENGE_GAP_MS) {
      this.stats.suppressed++;
      return null;
    }
    this.lastChallenge.set(k, now);
    this.stats.challenges++;
    return { token: this.token(session.sid, from, Math.floor(now / TOKEN_SLOT_MS)) };
  }

  /**
   * Whether an ADDR_PROOF's token is the one made for its session ID and `from` (this slot or the
   * previous one). Needs no session: a worker checks it before it reads a session it does not
   * hold from the shared store, so a forged proof costs no store read.
   */
  tokenMatches(body: Bodies['ADDR_PROOF'], from: Address): boolean {
    const slot = Math.floor(this.now() / TOKEN_SLOT_MS);
    const given = Buffer.from(body.token);
    return given.length === ADDR_TOKEN_BYTES
      && (timingSafeEqual(this.token(body.sid, from, slot), given) || timingSafeEqual(this.token(body.sid, from, slot - 1), given));
  }

  /**
   * An ADDR_PROOF from `from` for `session` (undefined when no process holds it), its token
   * checked by the caller (tokenMatches, before any store read): true when the token matched and
   * the session is held; the address is then validated.
   */
  prove(session: ServerSession | undefined, tokenMatched: boolean, from: Address): boolean {
    if (!session || !tokenMatched) {
      this.stats.badProofs++;
      return false;
    }
    this.stats.proofs++;
    this.accept(session, from);
    return true;
  }

  /**
   * A session just opened by `ticket` (already verified by ServerSessions) from `from`: validated
   * at once when `from` is the address authd sent that ticket's grant to (its CLAIM_ADDR), since
   * only that address could read the grant; so the common path (same address for authd and the
   * service) costs no round trip. True when it was.
   */
  opened(session: ServerSession, ticket: Uint8Array | undefined, from: Address): boolean {
    const peek = ticket ? peekTicket(ticket) : undefined;
    const a = peek && typeof peek !== 'string' ? peek.claims.addr : undefined;
    if (!a || addrKey(a) !== addrKey(from)) return false;
    this.stats.openedValidated++;
    this.accept(session, from);
    return true;
  }

  /** Record `from` as validated for `session` (the newest MAX_VALIDATED_PER_SESSION kept). */
  accept(session: ServerSession, from: Address): void {
    const ip = normaliseIp(from.ip);
    const held = this.record(session, ip, from.port);
    // The key string only where addresses are kept as strings: unheld sessions, other workers.
    if (!held || this.onAccepted) {
      const k = keyOf(ip, from.port);
      if (!held) this.remember(session.sidHex, k);
      this.onAccepted?.(session.sidHex, k);
    }
  }

  /** Record an address (its addrKey) as validated for a session ID (hex), as another worker did. */
  acceptKey(sidHex: string, addr: string): void {
    const held = this.sessions?.get(sidHex);
    if (!held || !this.recordKey(held, addr)) this.remember(sidHex, addr);
  }

  private remember(sidHex: string, addr: string): void {
    this.byId.set(sidHex, withNewest(this.byId.get(sidHex), addr));
  }
}

/** `list` (address keys, oldest first) with `k` moved or added last, the newest MAX_VALIDATED_PER_SESSION kept. */
function withNewest(list: readonly string[] | undefined, k: string): string[] {
  const out = (list ?? []).filter((a) => a !== k);
  out.push(k);
  if (out.length > MAX_VALIDATED_PER_SESSION) out.shift();
  return out;
}
