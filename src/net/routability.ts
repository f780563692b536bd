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
import type { WorkerChannel } from '../common/workers.js';
import type { Address } from '../wire/addr.js';
import { normaliseIp, packIp } from '../wire/addr.js';
import type { Bodies } from '../wire/catalog.js';
import { ErrorCode } from '../wire/errors.js';
import { publicKeyObject } from '../wire/keys.js';
import { peekTicket } from '../wire/ticket-parse.js';
import type { Refusal } from './server.js';
import type { ServerSession } from './sessions.js';
import { HeldSession, MAX_VALIDATED_PER_SESSION } from './sessions.js';

/** Token validity: the slot it was made in and the next one (30 to 60 s). */
export const TOKEN_SLOT_MS = 30_000;
export const ADDR_TOKEN_BYTES = 16;
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
 * Validated addresses are kept in the held session's own row of the ServerSessions' table
 * (HeldSession: `table.addrs` at `table.addrsAt(slot)`): MAX_VALIDATED_PER_SESSION numbers for
 * IPv4 (packV4, exact), which the table zeroes when the slot takes another session, and a map by
 * slot for the rare IPv6 ones, with the generation they belong to. So checking a datagram's
 * source reads the line its session's row is in, no other (a REFRESH at 1M read two more random
 * lines when they were arrays of their own), and there is no object and no string per session: a
 * string-keyed LRU of arrays cost ~380 B of heap per active session and, capped at 500k, made
 * every REFRESH beyond that many active sessions a challenge round trip. Sessions that are not
 * held (a record being opened, an acceptKey from another worker for a session this one does not
 * hold) fall back to a small LRU by session ID.
 */
export class AddressValidation {
  private readonly key: Buffer;
  private readonly now: () => number;
  /** IPv6 addresses (addrKey) validated for a slot's session of generation `gen`, oldest first. */
  private readonly v6 = new Map<number, { gen: number; list: string[] }>();
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

  /** `session` when it is a live held session (its addresses are in its row), else undefined. */
  private heldOf(session: ServerSession): HeldSession | undefined {
    return session instanceof HeldSession && session.live ? session : undefined;
  }

  /** The IPv6 addresses validated for held `s` (its slot's, if of its generation). */
  private v6Of(s: HeldSession): string[] | undefined {
    const e = this.v6.get(s.slot);
    return e && e.gen === s.gen ? e.list : undefined;
  }

  isValidated(session: ServerSession, from: Address): boolean {
    const held = this.heldOf(session);
    if (held) {
      // Normalised and packed per datagram on purpose: ~32 ns of a REFRESH's ~15 us in locatord
      // (0.2%, bench/refresh-micro.ts), too little for a cache or a second path to be worth it.
      const ip = packIp(normaliseIp(from.ip));
      if (typeof ip === 'number') {
        const x = packV4(ip, from.port);
        const v4 = held.table.addrs;
        const at = held.table.addrsAt(held.slot);
        for (let i = 0; i < MAX_VALIDATED_PER_SESSION; i++) if (v4[at + i] === x) return true;
      } else if (this.v6Of(held)?.includes(addrKey(from))) return true;
    }
    // Validated before it was held here (opened, or passed on by another worker): move it in.
    if (this.byId.size === 0) return false;
    const k = addrKey(from);
    const list = this.byId.get(session.sidHex);
    if (!list?.includes(k)) return false;
    if (held) {
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
    const held = this.heldOf(session);
    if (!held) return false;
    const packed = packIp(ip);
    if (typeof packed === 'number') {
      // An earlier session's IPv6 ones in this slot go (they would only wait for the next IPv6).
      if (this.v6.get(held.slot)?.gen !== held.gen) this.v6.delete(held.slot);
      const x = packV4(packed, port);
      const v4 = held.table.addrs;
      const at = held.table.addrsAt(held.slot);
      // The entries are contiguous from `at`, oldest first. Take out x where it is (or the first
      // empty place, or when full and x is absent the oldest), close the gap, append x.
      let i = 0;
      while (i < MAX_VALIDATED_PER_SESSION && v4[at + i] !== 0 && v4[at + i] !== x) i++;
      if (i === MAX_VALIDATED_PER_SESSION) i = 0;
      v4.copyWithin(at + i, at + i + 1, at + MAX_VALIDATED_PER_SESSION);
      v4[at + MAX_VALIDATED_PER_SESSION - 1] = 0;
      let end = at;
      while (end < at + MAX_VALIDATED_PER_SESSION && v4[end] !== 0) end++;
      v4[end] = x;
    } else this.v6.set(held.slot, { gen: held.gen, list: withNewest(this.v6Of(held), k ?? keyOf(ip, port)) });
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

/**
 * `locatord --workers`: pass the addresses `v` validates to the other workers and take theirs,
 * over the worker's channel to the primary, which forwards each message to the others. The
 * addresses of one event-loop turn leave in one message at its end (the channel's batch): a
 * message per address cost the sender a pipe write each, 4-6% of a worker's CPU in a profile of
 * first REGISTERs (the load of bench --only register). A request that reaches another worker before the message
 * is challenged there once, as when a message per address raced the datagram. A batch that
 * cannot be sent (the primary is gone: the workers are stopping) is dropped: the others challenge.
 */
export function shareValidations(v: AddressValidation, primary: WorkerChannel): void {
  v.onAccepted = (sidHex, addr) => primary.batch('addr-validated', [sidHex, addr], () => undefined);
  primary.on('addr-validated', (m) => {
    for (const [sidHex, addr] of m.b) v.acceptKey(sidHex, addr);
  });
}

/** `list` (address keys, oldest first) with `k` moved or added last, the newest MAX_VALIDATED_PER_SESSION kept. */
function withNewest(list: readonly string[] | undefined, k: string): string[] {
  const out = (list ?? []).filter((a) => a !== k);
  out.push(k);
  if (out.length > MAX_VALIDATED_PER_SESSION) out.shift();
  return out;
}
