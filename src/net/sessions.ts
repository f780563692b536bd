// Server side of session authentication (locatord, matchd). A session is opened by the first
// session-MACed message that carries a ticket: the ticket is verified (once per process, see
// TicketVerifier), the session keys are derived from the ticket's cnf key and our static key,
// and the MAC of that very datagram proves the sender holds the cnf secret. Later messages name
// the session by ID (the ticket's cti) and cost one HMAC. Sessions end when their ticket expires.
import type { KeyObject } from 'node:crypto';
import { ExpiringCache } from '../wire/expiring-cache.js';
import type { Address } from '../wire/addr.js';
import type { Bodies, MessageName } from '../wire/catalog.js';
import type { EncodedBody, Message, SessionAuth } from '../wire/envelope.js';
import { encodeDatagram } from '../wire/envelope.js';
import { ErrorCode } from '../wire/errors.js';
import type { SessionKeys } from '../wire/session.js';
import { LOCATOR_ID_BYTES, SESSION_ID_BYTES } from '../wire/constants.js';
import { SessionMacs } from '../wire/hmac-sha256.js';
import { deriveSessionKeys, rawKey, ReplayWindow, sealDatagram, slabAlloc, verifyDatagram } from '../wire/session.js';
import type { TicketVerifier } from '../wire/ticket.js';
import { moveFields, NIL, RecencyList, SlotIndex } from './slot-index.js';

/**
 * A server session: a HeldSession (a slot of a ServerSessions), a SessionRecord (not held; made
 * by `newServerSession`), or in tests a plain object of this shape.
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
  window: SessionWindow;
  /** Last sequence number we sent in this session. */
  txSeq: number;
}

const KEY_BYTES = 32;
/**
 * Keys whose hashed HMAC pads the sessions' MACs keep (SessionMacs): 16,384 keys, 1.5 MiB, the
 * sessions of a few thousand terminals exchanging datagrams now; beyond that a MAC costs two
 * SHA-256 blocks more (bench/mac-cache.ts measures it).
 */
export const SESSION_MAC_CACHE_KEYS = 16_384;

/**
 * The record of a server session not held by a ServerSessions (held ones are slots of its
 * SlotTable, handed out as HeldSession): one being opened, one read from a snapshot or the shared
 * store, a copy made by `all()`. Layout: the session's bytes
 * in ONE buffer, a view into a slab of session bytes (slabAlloc: no ArrayBuffer, no KeyObject of
 * its own; each view costs ~100 B of V8 heap, so there is one, not four):
 *   sid (the ticket's cti) | locator ID | terminal-to-server key (32) | server-to-terminal key (32);
 * `sid`, `locatorId` and `keys` are views made when asked for (short-lived, young-generation
 * garbage); the replay window is three number fields (a 64-bit bitmap, see ReplayWindow). A new
 * per-session field is declared here with its initial value in the constructor, so that every
 * session keeps the one hidden class.
 */
export class SessionRecord implements ServerSession, MacKeys {
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

  /** See MacKeys. */
  macKeys(): Uint8Array {
    return this.bytes;
  }

  macKeysAt(): number {
    return this.bytes.length - 2 * KEY_BYTES;
  }
}

/**
 * Where a session's keys are for a MAC, without a view made per datagram (`keys` makes a copy,
 * two subarrays and an object: 3% of locatord's CPU pushing presence went to those and their
 * GC, README "Presence at scale", sixth pass): the terminal-to-server
 * key at `macKeysAt()` of `macKeys()`, the server-to-terminal key the next 32 bytes. Read both
 * in the same turn (a held session's may move from its slot to its copy in between).
 */
interface MacKeys {
  macKeys(): Uint8Array;
  macKeysAt(): number;
}

/** Our own session records and handles have their keys as bytes (MacKeys); any other session object only `keys`. */
function hasMacKeys(s: ServerSession): s is ServerSession & MacKeys {
  return s instanceof HeldSession || s instanceof SessionRecord;
}

/** The one constructor of session records (see SessionRecord): copies what it keeps. */
export function newServerSession(f: ConstructorParameters<typeof SessionRecord>[0]): ServerSession {
  return new SessionRecord(f);
}

/** What a server session's replay window must do (ReplayWindow, or a held session's slot). */
export type SessionWindow = Pick<ReplayWindow, 'check' | 'accept' | 'highestSeen' | 'bitmapLo' | 'bitmapHi'>;

/** Raw bytes of the IDs a held session has (SESSION_ID_BYTES, LOCATOR_ID_BYTES): fixed-width slots. */
const SID_BYTES = SESSION_ID_BYTES;
const LOC_BYTES = LOCATOR_ID_BYTES;
/** Slots allocated at first (the arrays double up to maxSessions). */
const INITIAL_SLOTS = 1024;
/** One window every held session's check/accept loads its slot's numbers into (single-threaded). */
const scratchWindow = new ReplayWindow();

/** Addresses a session's row keeps as validated for it, the newest ones (src/net/routability.ts). */
export const MAX_VALIDATED_PER_SESSION = 4;
/** Bytes of a session's row (see SlotTable), and the same in i32 and in f64 elements. */
const ROW_BYTES = 152 + 8 * MAX_VALIDATED_PER_SESSION;
const ROW_I32 = ROW_BYTES / 4;
const ROW_F64 = ROW_BYTES / 8;
/**
 * Most sessions a table may hold (--max-sessions): its rows are one Buffer, which Node caps at
 * 2^32 bytes (23.3M rows of 184), rounded down.
 */
export const MAX_SESSIONS_LIMIT = 20_000_000;
/** Where each field is in a row: its byte, f64 element or i32 word (see SlotTable). */
const SID_AT = 0;
const LOC_AT = 16;
const KEYS_AT = 32;
const EXP = 12;
const TX_SEQ = 13;
const HIGH = 14;
const ADDRS = 19;
const LO = 30;
const HI = 31;
const AUD = 32;
const KID = 33;
const GEN = 34;
const LOC_PREV = 35;
const LOC_NEXT = 36;
/** The snapshot's columns (SessionColumns), in its order: where each is in a row, and its bytes. */
const COLUMN_AT = [SID_AT, LOC_AT, KEYS_AT, EXP * 8, TX_SEQ * 8, HIGH * 8, LO * 4, HI * 4, AUD * 4, KID * 4];
const COLUMN_BYTES = [SID_BYTES, LOC_BYTES, 2 * KEY_BYTES, 8, 8, 8, 4, 4, 4, 4];

/**
 * The sessions of a ServerSessions, as rows of one buffer indexed by slot (issue 16: no
 * per-session object for the GC to walk, no hex string, no lru-cache entry). A row is 184 bytes
 * with every field side by side, so that a datagram of a random session among a million reads
 * two or three neighbouring cache lines of one page instead of one line per field (a column per
 * field was ~10 random lines, ~2 us more per REFRESH at 1M than at 10k: README "Throughput at
 * 1M registered"):
 *   bytes 0-15     the raw session ID (the index's key)
 *   bytes 16-31    the raw locator ID
 *   bytes 32-95    both keys, terminal-to-server first
 *   f64 12, 13     ticket expiry (s), send sequence
 *   f64 14, i32 30, 31   the replay window: highest, the two 32-bit halves of the bitmap
 *   i32 32, 33     interned audience and kid, plus one (0: the slot is free; no kid)
 *   u32 34         generation: bumped when the slot is freed or overwritten, so a HeldSession of
 *                  an ended session is stale
 *   i32 35, 36     the list of its locator ID's sessions, oldest first (prev, next), plus one
 *                  (0: NIL)
 *   f64 19-22      the IPv4 addresses validated for the session (routability.ts: packed, 0 for
 *                  none), so that checking a datagram's source reads no other line
 * Every field that names a string or a slot is stored plus one, so that a row of zeros is a free
 * slot: the rows a doubling adds are not written (nor made resident) until used.
 * Beside the rows, the recency list (intrusive, doubly linked: eviction of the least recently
 * used when full; free slots are chained through its `next`). Two SlotIndexes
 * (src/net/slot-index.ts) find a slot by raw session ID and the oldest session of a locator ID.
 */
class SlotTable {
  cap = 0;
  size = 0;
  /** The rows, and the same memory as f64, i32 and u32 elements. */
  rows: Buffer = Buffer.alloc(0);
  private f64 = new Float64Array(0);
  private i32 = new Int32Array(0);
  private u32 = new Uint32Array(0);
  /** The rows from the locator ID on: the locator index's store (its keys `ROW_BYTES` apart). */
  private locs: Uint8Array = this.rows;
  /** Recency list: prev towards the most recent (head), next towards the least (tail); free list through next. */
  readonly recency = new RecencyList(0);
  /** Raw session ID -> slot. */
  private readonly sidIndex = new SlotIndex(SID_BYTES, 0, ROW_BYTES);
  /** Raw locator ID -> the slot of its oldest session. */
  private readonly locIndex = new SlotIndex(LOC_BYTES, 0, ROW_BYTES);
  readonly strings: string[] = [];
  private readonly stringIds = new Map<string, number>();

  constructor(readonly max: number) {
    this.grow(Math.min(INITIAL_SLOTS, Math.max(1, max)));
  }

  intern(x: string): number {
    let i = this.stringIds.get(x);
    if (i === undefined) {
      i = this.strings.length;
      this.strings.push(x);
      this.stringIds.set(x, i);
    }
    return i;
  }

  /** Where slot `slot`'s session ID, locator ID and keys begin in `rows`. */
  sidAt(slot: number): number {
    return slot * ROW_BYTES + SID_AT;
  }

  locAt(slot: number): number {
    return slot * ROW_BYTES + LOC_AT;
  }

  keysAt(slot: number): number {
    return slot * ROW_BYTES + KEYS_AT;
  }

  /**
   * The rows as f64 elements, where `addrsAt(slot)` begins the MAX_VALIDATED_PER_SESSION addresses
   * validated for the slot's session (routability.ts; zeroed when the slot takes a session). A
   * new array when the table grows: read it per use.
   */
  get addrs(): Float64Array {
    return this.f64;
  }

  addrsAt(slot: number): number {
    return slot * ROW_F64 + ADDRS;
  }

  /** Whether the slot holds a session. */
  used(slot: number): boolean {
    return this.i32[slot * ROW_I32 + AUD] !== 0;
  }

  /** The audience's index in `strings` (NIL for a free slot). */
  aud(slot: number): number {
    return this.i32[slot * ROW_I32 + AUD]! - 1;
  }

  /** The kid's index in `strings`, NIL when none. */
  kid(slot: number): number {
    return this.i32[slot * ROW_I32 + KID]! - 1;
  }

  setKid(slot: number, kid: number): void {
    this.i32[slot * ROW_I32 + KID] = kid + 1;
  }

  gen(slot: number): number {
    return this.u32[slot * ROW_I32 + GEN]!;
  }

  private bumpGen(slot: number): void {
    const g = slot * ROW_I32 + GEN;
    this.u32[g] = (this.u32[g]! + 1) >>> 0;
  }

  exp(slot: number): number {
    return this.f64[slot * ROW_F64 + EXP]!;
  }

  setExp(slot: number, exp: number): void {
    this.f64[slot * ROW_F64 + EXP] = exp;
  }

  txSeq(slot: number): number {
    return this.f64[slot * ROW_F64 + TX_SEQ]!;
  }

  setTxSeq(slot: number, seq: number): void {
    this.f64[slot * ROW_F64 + TX_SEQ] = seq;
  }

  /** The slot's replay window, loaded into `w`. */
  loadWindow(slot: number, w: ReplayWindow): ReplayWindow {
    const i = slot * ROW_I32;
    return w.setState(this.f64[slot * ROW_F64 + HIGH]!, this.i32[i + LO]!, this.i32[i + HI]!);
  }

  storeWindow(slot: number, w: Pick<ReplayWindow, 'highestSeen' | 'bitmapLo' | 'bitmapHi'>): void {
    const i = slot * ROW_I32;
    this.f64[slot * ROW_F64 + HIGH] = w.highestSeen;
    this.i32[i + LO] = w.bitmapLo;
    this.i32[i + HI] = w.bitmapHi;
  }

  private locPrev(slot: number): number {
    return this.i32[slot * ROW_I32 + LOC_PREV]! - 1;
  }

  private locNext(slot: number): number {
    return this.i32[slot * ROW_I32 + LOC_NEXT]! - 1;
  }

  private setLocPrev(slot: number, prev: number): void {
    this.i32[slot * ROW_I32 + LOC_PREV] = prev + 1;
  }

  private setLocNext(slot: number, next: number): void {
    this.i32[slot * ROW_I32 + LOC_NEXT] = next + 1;
  }

  private grow(cap: number): void {
    const old = this.cap;
    const rows = Buffer.alloc(cap * ROW_BYTES);
    this.rows.copy(rows);
    this.rows = rows;
    this.f64 = new Float64Array(rows.buffer, rows.byteOffset, cap * ROW_F64);
    this.i32 = new Int32Array(rows.buffer, rows.byteOffset, cap * ROW_I32);
    this.u32 = new Uint32Array(rows.buffer, rows.byteOffset, cap * ROW_I32);
    this.locs = rows.subarray(LOC_AT);
    this.recency.grow(cap);
    // The new slots join the free list, lowest first.
    for (let i = cap - 1; i >= old; i--) this.recency.release(i);
    this.cap = cap;
    const sidMoved = this.sidIndex.reserve(cap);
    const locMoved = this.locIndex.reserve(cap);
    for (let s = 0; s < old; s++) {
      if (!this.used(s)) continue;
      if (sidMoved) this.sidIndex.put(this.rows, this.sidAt(s), s);
      if (locMoved && this.locPrev(s) === NIL) this.locIndex.put(this.locs, s * ROW_BYTES, s);
    }
  }

  findSid(sid: Uint8Array): number {
    return sid.length === SID_BYTES ? this.sidIndex.find(this.rows, sid, 0) : NIL;
  }

  /** The oldest session of a locator ID, or NIL. */
  firstOfLocator(loc: Uint8Array, at = 0): number {
    return loc.length >= at + LOC_BYTES ? this.locIndex.find(this.locs, loc, at) : NIL;
  }

  private unlinkLocator(slot: number): void {
    const p = this.locPrev(slot);
    const n = this.locNext(slot);
    if (p !== NIL) this.setLocNext(p, n);
    else {
      // It was its locator ID's oldest: the next one heads the list, or the ID leaves the index.
      if (n !== NIL) this.locIndex.put(this.locs, slot * ROW_BYTES, n);
      else this.locIndex.delete(this.locs, slot * ROW_BYTES);
    }
    if (n !== NIL) this.setLocPrev(n, p);
    this.setLocPrev(slot, NIL);
    this.setLocNext(slot, NIL);
  }

  /** Append `slot` (its locator ID written) as its locator ID's newest session; the count of them. */
  private linkLocator(slot: number): number {
    const first = this.locIndex.find(this.locs, this.rows, this.locAt(slot));
    this.setLocNext(slot, NIL);
    if (first === NIL) {
      this.setLocPrev(slot, NIL);
      this.locIndex.put(this.locs, slot * ROW_BYTES, slot);
      return 1;
    }
    let last = first;
    let count = 2;
    while (this.locNext(last) !== NIL) {
      last = this.locNext(last);
      count++;
    }
    this.setLocNext(last, slot);
    this.setLocPrev(slot, last);
    return count;
  }

  /** Does `slot` still hold the session of generation `gen` (not ended, evicted or replaced)? */
  holds(slot: number, gen: number): boolean {
    return this.gen(slot) === gen;
  }

  /** Copy the raw session ID of `slot` into `to` at `at`. */
  copySid(slot: number, to: Uint8Array, at: number): void {
    this.rows.copy(to, at, this.sidAt(slot), this.sidAt(slot) + SID_BYTES);
  }

  /** Is the locator ID of `slot` the LOC_BYTES at `at` of `b`? */
  locatorIs(slot: number, b: Uint8Array, at: number): boolean {
    const o = this.locAt(slot);
    const rows = this.rows;
    for (let i = 0; i < LOC_BYTES; i++) if (rows[o + i] !== b[at + i]) return false;
    return true;
  }

  /** Free `slot`: out of the indexes and lists; its handles become stale. */
  remove(slot: number): void {
    this.recency.unlink(slot);
    this.unlinkLocator(slot);
    this.sidIndex.delete(this.rows, this.sidAt(slot));
    this.free(slot);
    this.recency.prev[slot] = NIL;
    this.recency.release(slot);
    this.size--;
  }

  /** Mark `slot` free: no audience or kid, its keys zeroed, its handles stale. */
  private free(slot: number): void {
    const i = slot * ROW_I32;
    this.i32[i + AUD] = 0;
    this.i32[i + KID] = 0;
    this.bumpGen(slot);
    this.rows.fill(0, this.keysAt(slot), this.keysAt(slot) + 2 * KEY_BYTES);
    this.clearAddrs(slot);
  }

  /** The slot's validated addresses forgotten (it takes another session, or none). */
  private clearAddrs(slot: number): void {
    this.f64.fill(0, this.addrsAt(slot), this.addrsAt(slot) + MAX_VALIDATED_PER_SESSION);
  }

  /**
   * Hold `s` (copied), as the most recently used and its locator ID's newest session, replacing
   * a session of the same ID; when full, the least recently used goes first. Beyond `perIdCap`
   * sessions of its locator ID, that ID's oldest go. The slot, or NIL when `s` has IDs of
   * another size than the protocol's (only a damaged snapshot or a test could make one).
   */
  put(s: ServerSession, perIdCap: number): number {
    const sid = s.sid;
    const loc = s.locatorId;
    if (sid.length !== SID_BYTES || loc.length !== LOC_BYTES) return NIL;
    let slot = this.findSid(sid);
    if (slot !== NIL) {
      this.recency.unlink(slot);
      this.unlinkLocator(slot);
      this.bumpGen(slot);
    } else {
      if (this.size >= this.max && this.recency.tail !== NIL) this.remove(this.recency.tail);
      slot = this.recency.takeFree();
      if (slot === NIL) {
        this.grow(Math.min(this.max, this.cap * 2));
        slot = this.recency.takeFree();
      }
      this.rows.set(sid, this.sidAt(slot));
      this.sidIndex.put(this.rows, this.sidAt(slot), slot);
      this.size++;
    }
    this.rows.set(loc, this.locAt(slot));
    this.clearAddrs(slot);
    copySessionKeys(s, this.rows, this.keysAt(slot));
    this.setExp(slot, s.exp);
    this.setTxSeq(slot, s.txSeq);
    this.storeWindow(slot, s.window);
    this.i32[slot * ROW_I32 + AUD] = this.intern(s.aud) + 1;
    const kid = (s as { kid?: string }).kid;
    this.setKid(slot, kid === undefined ? NIL : this.intern(kid));
    this.recency.linkHead(slot);
    let count = this.linkLocator(slot);
    while (count > perIdCap) {
      this.remove(this.firstOfLocator(loc));
      count--;
    }
    return slot;
  }

  /**
   * The snapshot's columns (SessionColumns) of slots [0, n), where n is one past the last slot
   * holding a session: allocated here, filled by `copyColumns` (the writer copies in slices,
   * yielding between them, as it does the registration table's rows).
   */
  columns(): SessionColumns {
    let n = this.cap;
    while (n > 0 && !this.used(n - 1)) n--;
    const [sid, loc, keys, exp, txSeq, high, lo, hi, aud, kid] = COLUMN_BYTES.map((b) => new Uint8Array(n * b)) as [Uint8Array, Uint8Array, Uint8Array, Uint8Array, Uint8Array, Uint8Array, Uint8Array, Uint8Array, Uint8Array, Uint8Array];
    return { n, sid, loc, keys, exp, txSeq, high, lo, hi, aud, kid, strings: this.strings };
  }

  /** Copy slots [from, to) from their rows into `c`'s columns (from `columns`), audience and kid as the file has them (-1: none). */
  copyColumns(c: SessionColumns, from: number, to: number): void {
    moveFields(this.rows, ROW_BYTES, columnsOf(c), COLUMN_AT, COLUMN_BYTES, from, to, true);
    const aud = new Int32Array(c.aud.buffer, c.aud.byteOffset, c.n);
    const kid = new Int32Array(c.kid.buffer, c.kid.byteOffset, c.n);
    for (let s = from; s < to; s++) {
      aud[s]!--;
      kid[s]!--;
    }
  }

  /**
   * Snapshot restore in bulk: the columns of `c` (slots [0, c.n) of a table, as `columns` and
   * `copyColumns` gave them) copied into this table's rows, which hold no session, at the same
   * slot numbers; then the indexes and lists are rebuilt by a walk of the slots. A session `drop`
   * says is over, or whose ID an earlier slot holds, is left out; beyond `perIdCap` of a locator
   * ID its oldest go, as `put` does. False (nothing done) when this table holds sessions or has
   * room for fewer than `c.n` slots: the caller puts them one by one.
   */
  fill(c: SessionColumns, drop: (exp: number) => boolean, perIdCap: number): boolean {
    const n = c.n;
    if (this.size !== 0 || n > this.max) return false;
    if (this.cap < n) this.grow(n);
    moveFields(this.rows, ROW_BYTES, columnsOf(c), COLUMN_AT, COLUMN_BYTES, 0, n, false);
    const strings = c.strings.map((s) => this.intern(s));
    const i32 = this.i32;
    for (let s = 0; s < n; s++) {
      // The file's audience and kid (-1: none), made the row's (see SlotTable).
      const i = s * ROW_I32;
      const aud = i32[i + AUD]!;
      const kid = i32[i + KID]!;
      i32[i + AUD] = 0;
      i32[i + KID] = 0;
      if (aud === NIL) continue;
      // Handles of whatever this slot held before are stale, and its validated addresses are not
      // this session's (a free slot's are zero already: cleared here whatever held it).
      this.bumpGen(s);
      this.clearAddrs(s);
      this.setLocPrev(s, NIL);
      this.setLocNext(s, NIL);
      if (drop(this.exp(s)) || this.sidIndex.find(this.rows, this.rows, this.sidAt(s)) !== NIL) {
        this.free(s);
        continue;
      }
      i32[i + AUD] = strings[aud]! + 1;
      this.setKid(s, kid === NIL ? NIL : strings[kid]!);
      this.sidIndex.put(this.rows, this.sidAt(s), s);
      this.size++;
      this.recency.linkHead(s);
      for (let count = this.linkLocator(s); count > perIdCap; count--) this.remove(this.firstOfLocator(this.rows, this.locAt(s)));
    }
    // The free list again: every slot holding nothing, lowest first.
    this.recency.dropFree();
    for (let s = this.cap - 1; s >= 0; s--) if (!this.used(s)) this.recency.release(s);
    return true;
  }
}

/** `c`'s columns in the snapshot's order (COLUMN_AT). */
function columnsOf(c: SessionColumns): Uint8Array[] {
  return [c.sid, c.loc, c.keys, c.exp, c.txSeq, c.high, c.lo, c.hi, c.aud, c.kid];
}

/**
 * The table of a ServerSessions' held sessions, as seen by whatever keeps a held session as
 * numbers instead of a handle (a registration record, src/locatord/table.ts: no object per
 * terminal): `HeldSession.table`, `slot` and `gen` say where a session is, `holds` whether it
 * still is, and `new HeldSession(table, slot, gen, sidHex, locatorHex)` makes a handle again.
 */
export type SessionSlots = SlotTable;

/** `s`, able to name its session after it ended (HeldSession.keepIds; other sessions always can). */
export function keptSession<S extends ServerSession | undefined>(s: S): S {
  if (s instanceof HeldSession) s.keepIds();
  return s;
}

/**
 * A session held by a ServerSessions: a handle on its slot (made per lookup; compare with
 * `sameSession`, not ===). Writes (txSeq, kid, the window) go to the slot. Once the session ends
 * (expired, evicted, dropped, replaced) the handle is stale: the window refuses, writes go
 * nowhere, and the keys are those it had read before (a reply to a request in progress is still
 * MACed), else reading them throws (callers check `ServerSessions.live` before MACing with an old
 * handle). Its IDs are those of its slot, or once ended those it was given or had read.
 */
export class HeldSession implements ServerSession, MacKeys {
  private hex: string | undefined;
  private locHex: string | undefined;
  /**
   * The keys, copied when first read (so a request in progress can answer after its session
   * ended). A small Uint8Array: on V8's heap, no ArrayBuffer of its own.
   */
  private keyCopy: Uint8Array | undefined;
  private tx = 0;

  constructor(private readonly t: SessionSlots, readonly slot: number, readonly gen: number, sidHex?: string, locatorHex?: string) {
    this.hex = sidHex;
    this.locHex = locatorHex;
  }

  /** The table it is a slot of. */
  get table(): SessionSlots {
    return this.t;
  }

  /**
   * Read both IDs now (they are cached), so this handle can still name its session after it
   * ended: for whatever keeps a handle beyond the request (a registration record). A stale handle
   * cannot read its slot, and one made by a per-datagram lookup has not read its IDs yet.
   */
  keepIds(): this {
    if (this.live) {
      void this.sidHex;
      void this.locatorHex;
    }
    return this;
  }

  /** Whether the slot still holds this session. */
  get live(): boolean {
    return this.t.gen(this.slot) === this.gen;
  }

  private stale(what: string): Error {
    return new Error(`session ${this.hex ?? '?'} no longer held: cannot read its ${what}`);
  }

  get sid(): Buffer {
    return this.idBytes(this.t.sidAt(this.slot), SID_BYTES, this.hex, 'ID');
  }

  get sidHex(): string {
    return (this.hex ??= this.idHex(this.t.sidAt(this.slot), SID_BYTES, 'ID'));
  }

  get locatorId(): Buffer {
    return this.idBytes(this.t.locAt(this.slot), LOC_BYTES, this.locHex, 'locator ID');
  }

  get locatorHex(): string {
    return (this.locHex ??= this.idHex(this.t.locAt(this.slot), LOC_BYTES, 'locator ID'));
  }

  /** The `width` bytes at `at` of this slot's row; once ended, from its hex if read before. */
  private idBytes(at: number, width: number, hex: string | undefined, what: string): Buffer {
    if (this.live) return this.t.rows.subarray(at, at + width);
    if (hex !== undefined) return Buffer.from(hex, 'hex');
    throw this.stale(what);
  }

  /** The `width` bytes at `at` of this slot's row in hex (the getters cache it: it outlives the slot). */
  private idHex(at: number, width: number, what: string): string {
    if (!this.live) throw this.stale(what);
    return this.t.rows.toString('hex', at, at + width);
  }

  get aud(): string {
    return this.t.strings[this.live ? this.t.aud(this.slot) : 0] ?? '';
  }

  get kid(): string | undefined {
    const k = this.live ? this.t.kid(this.slot) : NIL;
    return k === NIL ? undefined : this.t.strings[k];
  }

  set kid(v: string | undefined) {
    if (this.live) this.t.setKid(this.slot, v === undefined ? NIL : this.t.intern(v));
  }

  get exp(): number {
    return this.live ? this.t.exp(this.slot) : 0;
  }

  set exp(v: number) {
    if (this.live) this.t.setExp(this.slot, v);
  }

  get txSeq(): number {
    return this.live ? this.t.txSeq(this.slot) : this.tx;
  }

  set txSeq(v: number) {
    this.tx = v;
    if (this.live) this.t.setTxSeq(this.slot, v);
  }

  get keys(): SessionKeys {
    const k = this.keepKeys();
    return { terminalToServer: Buffer.from(k.subarray(0, KEY_BYTES)), serverToTerminal: Buffer.from(k.subarray(KEY_BYTES)) };
  }

  /** Copy the keys now, unless copied before (see keyCopy): both, terminal-to-server first. */
  keepKeys(): Uint8Array {
    if (!this.keyCopy) {
      if (!this.live) throw this.stale('keys');
      const k = new Uint8Array(2 * KEY_BYTES);
      const from = this.t.rows;
      const at = this.t.keysAt(this.slot);
      for (let i = 0; i < 2 * KEY_BYTES; i++) k[i] = from[at + i]!;
      this.keyCopy = k;
      this.tx = this.t.txSeq(this.slot);
    }
    return this.keyCopy;
  }

  /**
   * See MacKeys: the copy when there is one, else the slot's own bytes (no copy: a push MACed
   * by a handle looked up for it, checked live just before).
   */
  macKeys(): Uint8Array {
    if (this.keyCopy) return this.keyCopy;
    if (!this.live) throw this.stale('keys');
    return this.t.rows;
  }

  macKeysAt(): number {
    return this.keyCopy ? 0 : this.t.keysAt(this.slot);
  }

  /** Copy both keys into `to` at `at` (snapshots, restore). */
  copyKeys(to: Uint8Array, at: number): void {
    if (this.keyCopy) to.set(this.keyCopy, at);
    else if (this.live) this.t.rows.copy(to, at, this.t.keysAt(this.slot), this.t.keysAt(this.slot) + 2 * KEY_BYTES);
    else throw this.stale('keys');
  }

  get window(): SessionWindow {
    return new SlotWindow(this.t, this.slot, this.gen);
  }
}

/** The replay window of a held session: its slot's numbers, through the one scratch ReplayWindow. */
class SlotWindow implements SessionWindow {
  constructor(private readonly t: SlotTable, private readonly slot: number, private readonly gen: number) {}

  private load(): ReplayWindow | undefined {
    if (this.t.gen(this.slot) !== this.gen) return undefined;
    return this.t.loadWindow(this.slot, scratchWindow);
  }

  /** An ended session accepts nothing more: 'replay'. */
  check(seq: number): WindowVerdict {
    return this.load()?.check(seq) ?? 'replay';
  }

  accept(seq: number): void {
    const w = this.load();
    if (!w) return;
    w.accept(seq);
    this.t.storeWindow(this.slot, w);
  }

  get highestSeen(): number {
    return this.load()?.highestSeen ?? -1;
  }

  get bitmapLo(): number {
    return this.load()?.bitmapLo ?? 0;
  }

  get bitmapHi(): number {
    return this.load()?.bitmapHi ?? 0;
  }
}

/**
 * Copy both keys of `s` (terminal-to-server, then server-to-terminal: 2 * KEY_BYTES) into `to`
 * at `at`: straight from its bytes for our own records, through `keys` for any other.
 */
export function copySessionKeys(s: ServerSession, to: Uint8Array, at: number): void {
  if (s instanceof SessionRecord || s instanceof HeldSession) {
    s.copyKeys(to, at);
    return;
  }
  const k = s.keys;
  to.set(rawKey(k.terminalToServer).subarray(0, KEY_BYTES), at);
  to.set(rawKey(k.serverToTerminal).subarray(0, KEY_BYTES), at + KEY_BYTES);
}

/** The same session: one held session (its slot and generation), or the same object. */
export function sameSession(a: ServerSession | undefined, b: ServerSession | undefined): boolean {
  if (a === b) return true;
  return a instanceof HeldSession && b instanceof HeldSession && a.slot === b.slot && a.gen === b.gen;
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

/**
 * A shared-window claim the server left to its handler (DatagramServerOptions.claimInHandler):
 * a store that writes beside the window folds it into its own write (locatord on Redis: a REFRESH
 * is then one Redis script, the claim and the presence compare-and-set, instead of two), or takes
 * it alone before doing anything else the request asks (`take`). The server takes it if the
 * handler answered without doing so, and answers as it would have had it claimed first: a
 * refused claim is a REPLAY (or a dropped copy), whatever the handler decided.
 *
 * `state`: pending (not asked yet), taken, refused (`verdict` says why), or unsettled (asked, and
 * the store failed: it may or may not have been taken; a "try again" answer gives it back).
 */
export class DeferredClaim {
  state: 'pending' | 'taken' | 'refused' | 'unsettled' = 'pending';
  verdict: ClaimVerdict | undefined;

  constructor(
    readonly owner: WindowOwner,
    readonly seq: number,
    /** How long the window is kept (the session's remaining life), ms. */
    readonly ttlMs: number,
    /** The datagram's source, `ip|port`. */
    readonly source: string,
    private readonly window: SharedReplayWindow,
  ) {}

  /** Ask the store's command that folded the claim in; call `settle` with its verdict. */
  asking(): void {
    this.state = 'unsettled';
  }

  /** The verdict of the command that took the claim (folded or alone). */
  settle(verdict: ClaimVerdict): void {
    this.verdict = verdict;
    this.state = verdict === 'ok' ? 'taken' : 'refused';
  }

  /**
   * Take it alone (nothing to fold it into); rejects, unsettled, when the store fails. Once
   * settled, its verdict; unsettled, it rejects (whether it was taken is unknown).
   */
  take(): Promise<ClaimVerdict> {
    if (this.state === 'taken' || this.state === 'refused') return Promise.resolve(this.verdict!);
    if (this.state === 'unsettled') return Promise.reject(new Error('shared replay window: claim unsettled'));
    this.asking();
    return this.window.claim(this.owner, this.seq, this.ttlMs, this.source).then((v) => {
      this.settle(v);
      return v;
    });
  }

  /** Take it alone if nobody did; throws ClaimRefused unless it is ours. */
  async ensure(): Promise<void> {
    const v = await this.take();
    if (v !== 'ok') throw new ClaimRefused(v);
  }
}

/** Thrown by a store when a DeferredClaim it was given is refused; the server answers as for a refused claim. */
export class ClaimRefused extends Error {
  override readonly name = 'ClaimRefused';
  constructor(readonly verdict: Exclude<ClaimVerdict, 'ok'>) {
    super(`shared replay window: ${verdict}`);
  }
}

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
  /**
   * Wall-clock microseconds, the floor of a shared session's send sequence (see `encode`).
   * Default `wallClockUs`; tests inject one.
   */
  clockUs?: () => number;
}

/**
 * Wall-clock time in whole microseconds: the process's high-resolution clock anchored to the
 * wall clock at start (performance.timeOrigin), never below Date.now(). Millisecond resolution is
 * not enough for shared sessions: two instances answering one terminal within the same
 * millisecond took the same sequence number, and the terminal refused the second as a REPLAY of
 * the first (every retransmission too, answered from the response cache: no answer for 10 s).
 */
export function wallClockUs(): number {
  return Math.max(Date.now() * 1000, Math.floor((performance.timeOrigin + performance.now()) * 1000));
}

/** Sessions per locator ID: a terminal holds one per service per ticket, two while it renews. */
export const MAX_SESSIONS_PER_ID = 8;

export class ServerSessions {
  /** The sessions held (see SlotTable): bounded by maxSessions, least recently used evicted. */
  private readonly table: SlotTable;
  private readonly perIdCap: number;
  /**
   * Keys derived for session-opening messages whose MAC has not verified (yet). Tickets cross
   * the wire in clear inside REGISTER, so anyone who saw one can send opening messages with a
   * garbage MAC: without this, each would cost an X25519 before the MAC check fails. The keys
   * are a function of (service key, cnf, cti, aud), so remembering them is safe. Each is kept
   * until its ticket expires (then the ticket is refused before its keys are looked for).
   */
  private readonly pendingKeys: ExpiringCache<string, SessionKeys>;
  private readonly now: () => number;
  private readonly clockUs: () => number;
  private readonly freshnessMs: number;
  /**
   * The session MACs of every datagram in and out, with the hashed pads of the keys used lately
   * (wire/hmac-sha256.ts: no native object per MAC for the scavenger to free). SESSION_MAC_CACHE_KEYS.
   */
  private readonly macs = new SessionMacs(SESSION_MAC_CACHE_KEYS);
  /** Sessions opened (ticket accepted and MAC verified). */
  opened = 0;
  /** Lookups of `remote` in progress, so concurrent datagrams of one session share one. */
  private readonly fetching = new Map<string, Promise<boolean>>();
  /** X25519 key agreements performed (a metric tests read). */
  keyDerivations = 0;

  constructor(private readonly opts: ServerSessionsOptions) {
    this.table = new SlotTable(Math.min(MAX_SESSIONS_LIMIT, Math.max(1, opts.maxSessions ?? 2_000_000)));
    this.perIdCap = Math.max(1, opts.maxSessionsPerId ?? MAX_SESSIONS_PER_ID);
    this.now = opts.now ?? Date.now;
    this.clockUs = opts.clockUs ?? wallClockUs;
    this.freshnessMs = opts.freshnessMs ?? 120_000;
    this.pendingKeys = new ExpiringCache(10_000, this.now);
  }

  /** Session keys remembered for opening messages (expired ones included until the next purge). */
  get pendingKeyCount(): number {
    return this.pendingKeys.size;
  }

  get verifier(): TicketVerifier {
    return this.opts.verifier;
  }

  get size(): number {
    return this.table.size;
  }

  /** The held session with this raw ID (most recently used now), undefined when none or expired (then dropped). */
  private lookup(sid: Uint8Array, sidHex?: string): HeldSession | undefined {
    const t = this.table;
    const slot = t.findSid(sid);
    return slot !== NIL && this.use(slot) ? new HeldSession(t, slot, t.gen(slot), sidHex) : undefined;
  }

  /** A held slot about to be used: false when its session expired (then dropped), else it is now the most recently used. */
  private use(slot: number): boolean {
    if (this.expired(slot)) {
      this.table.remove(slot);
      return false;
    }
    this.table.recency.touch(slot);
    return true;
  }

  private expired(slot: number): boolean {
    return this.table.exp(slot) * 1000 + this.opts.verifier.clockSkewS * 1000 < this.now();
  }

  get(sidHex: string): ServerSession | undefined {
    if (sidHex.length !== 2 * SESSION_ID_BYTES) return undefined;
    return this.lookup(Buffer.from(sidHex, 'hex'), sidHex);
  }

  /**
   * `s` is the session held under its ID now (not ended, expired, evicted or replaced): what
   * `get(s.sidHex) === s` meant when sessions were objects.
   */
  live(s: ServerSession): boolean {
    // A handle of the slot's generation is the session its ID indexes (replacing or freeing a
    // slot bumps its generation), so no lookup by ID is needed: only the expiry and the touch.
    return s instanceof HeldSession && s.live && this.use(s.slot);
  }

  get hasRemote(): boolean {
    return this.opts.remote !== undefined;
  }

  /** Load a session another instance opened (see `remote`); true when it is now held. */
  fetch(sidHex: string): Promise<boolean> {
    const remote = this.opts.remote;
    if (!remote) return Promise.resolve(false);
    let p = this.fetching.get(sidHex);
    if (!p) {
      const has = (): boolean => this.table.findSid(Buffer.from(sidHex, 'hex')) !== NIL;
      p = remote(sidHex).then((s) => {
        if (!s || has()) return has();
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
    let session: ServerSession | undefined = this.lookup(auth.sid);
    let fresh = false;
    if (!session) {
      if (!body.ticket) return { ok: false, code: ErrorCode.NO_SESSION, reason: 'unknown session: register again with the ticket' };
      const sid = Buffer.from(auth.sid.buffer, auth.sid.byteOffset, auth.sid.length);
      const v = this.opts.verifier.verify(body.ticket);
      if (!v.ok) return v;
      if (!v.claims.cti.equals(sid)) return { ok: false, code: ErrorCode.BAD_TICKET, reason: 'session ID must equal the ticket cti' };
      if (body.timeMs === undefined || Math.abs(body.timeMs - this.now()) > this.freshnessMs) {
        return { ok: false, code: ErrorCode.CLOCK_SKEW, reason: 'session-opening message too old or too far ahead' };
      }
      const sidHex = sid.toString('hex');
      const keyId = `${sidHex}/${v.claims.cnf.toString('hex')}/${v.claims.aud}`;
      let keys = this.pendingKeys.get(keyId) ?? null;
      if (!keys) {
        this.keyDerivations++;
        keys = deriveSessionKeys(this.opts.serviceSecret, v.claims.cnf, v.claims.cti, v.claims.aud);
        if (!keys) return { ok: false, code: ErrorCode.BAD_TICKET, reason: 'cnf key unusable' };
        // Gone with their ticket (they stayed until 10,000 newer ones pushed them out: seen
        // growing the heap of the agent bench's virtual day, one entry per ticket).
        this.pendingKeys.tidy();
        this.pendingKeys.set(keyId, keys, { ttl: Math.max(1, (v.claims.exp + this.opts.verifier.clockSkewS) * 1000 - this.now()) });
      }
      session = newServerSession({
        sid, sidHex, locatorId: v.claims.locatorId, aud: v.claims.aud, exp: v.claims.exp,
        terminalToServer: rawKey(keys.terminalToServer), serverToTerminal: rawKey(keys.serverToTerminal),
      });
      fresh = true;
    }
    // A request's own handle keeps a copy of the keys (HeldSession.keepKeys): its answer is
    // MACed even if the session ends while the request waits (a store, the shared window).
    if (session instanceof HeldSession) session.keepKeys();
    const verified = hasMacKeys(session)
      ? verifyDatagram(session.macKeys(), raw, this.macs, session.macKeysAt())
      : verifyDatagram(session.keys.terminalToServer, raw, this.macs);
    if (!verified) return { ok: false, code: ErrorCode.BAD_MAC, reason: 'MAC does not verify' };
    return { ok: true, session, fresh };
  }

  /**
   * The claim of `seq` in the shared replay window (after the local window said 'ok'), not asked
   * yet: taken by the server before the handler, or by the handler's store (DeferredClaim);
   * undefined when there is no shared window (one instance: the local window is the whole truth).
   */
  claim(session: ServerSession, seq: number, from: Address): DeferredClaim | undefined {
    const w = this.opts.sharedWindow;
    if (!w) return undefined;
    // Kept as long as the session can be used, then Redis frees it. The owner's IDs are copied: a
    // held session's slot may be reused once the request has let go of it.
    const ttlMs = Math.max(1, session.exp * 1000 + this.opts.verifier.clockSkewS * 1000 - this.now());
    return new DeferredClaim({ sidHex: session.sidHex, locatorHex: session.locatorHex }, seq, ttlMs, `${from.ip}|${from.port}`, w);
  }

  /** Give back a claimed `seq` (its message was answered "try again"); no-op without a shared window. */
  release(session: ServerSession, seq: number): Promise<void> {
    return this.opts.sharedWindow?.release(session, seq) ?? Promise.resolve();
  }

  /**
   * Keep a freshly opened session (after its first message passed every check): the held
   * session, which the request goes on with (its window, its send sequence).
   */
  commit(session: ServerSession): ServerSession {
    this.opened++;
    return this.hold(session) ?? session;
  }

  /** Keep a copy of `session`; beyond the per-ID cap, its locator ID's oldest session goes. */
  private hold(session: ServerSession): HeldSession | undefined {
    const t = this.table;
    const slot = t.put(session, this.perIdCap);
    // The cap may have dropped the session itself (a cap of 1 never does: it is the newest).
    if (slot === NIL || !t.used(slot)) return undefined;
    return new HeldSession(t, slot, t.gen(slot), session.sidHex);
  }

  /**
   * Encode and MAC a message to the terminal of `session`. A shared session (several instances
   * or workers answer it, see `remote`) numbers each datagram from the wall clock in
   * microseconds (or one above its previous number): what another instance sent the terminal
   * before, it sent earlier, so with a lower number, and the terminal's replay window (which
   * refuses a number it took before, or 64 or more below its highest) takes ours. This holds while the instances'
   * clocks agree to better than the time from one instance's answer to the terminal's next
   * datagram reaching another (devloc-locatord(8), SEVERAL INSTANCES).
   */
  encode<N extends MessageName>(session: ServerSession, name: N, rid: Uint8Array, body: Bodies[N] | EncodedBody<N>): Buffer {
    session.txSeq = this.opts.remote ? Math.max(session.txSeq + 1, this.clockUs()) : session.txSeq + 1;
    const datagram = encodeDatagram(name, rid, body, { sid: session.sid, seq: session.txSeq });
    return hasMacKeys(session)
      ? sealDatagram(session.macKeys(), datagram, this.macs, session.macKeysAt() + KEY_BYTES)
      : sealDatagram(session.keys.serverToTerminal, datagram, this.macs);
  }

  /** Drop sessions of tickets whose signing key is no longer trusted, or by predicate. */
  dropWhere(pred: (s: ServerSession) => boolean): number {
    const t = this.table;
    let n = 0;
    for (let slot = 0; slot < t.cap; slot++) {
      if (!t.used(slot)) continue;
      if (pred(new HeldSession(t, slot, t.gen(slot)))) {
        t.remove(slot);
        n++;
      }
    }
    return n;
  }

  /**
   * `s` is held (not ended, evicted or replaced), without touching its recency (snapshots): a
   * held session's generation, or for another object, a session held under its ID.
   */
  holds(s: ServerSession): boolean {
    if (s instanceof HeldSession) return s.live;
    return this.table.findSid(s.sid) !== NIL;
  }

  /** The IDs of the sessions held, by a walk of the slots (snapshots: `get` the few it needs). */
  *ids(): IterableIterator<string> {
    const t = this.table;
    for (let slot = 0; slot < t.cap; slot++) {
      // The caller's `get` may drop an expired session: that frees its slot, moving no other.
      if (t.used(slot)) yield t.rows.toString('hex', t.sidAt(slot), t.sidAt(slot) + SID_BYTES);
    }
  }

  /**
   * A copy of each session held, most recently used first (control API views, tests): a copy
   * outlives its slot, and `restore` takes it back as it was.
   */
  *all(): IterableIterator<ServerSession> {
    const t = this.table;
    const slots: number[] = [];
    for (let slot = t.recency.head; slot !== NIL; slot = t.recency.next[slot]!) slots.push(slot);
    for (const slot of slots) {
      if (!t.used(slot)) continue;
      const k = t.keysAt(slot);
      const c: ServerSession & { kid?: string } = newServerSession({
        sid: t.rows.subarray(t.sidAt(slot), t.sidAt(slot) + SID_BYTES), locatorId: t.rows.subarray(t.locAt(slot), t.locAt(slot) + LOC_BYTES),
        aud: t.strings[t.aud(slot)]!, exp: t.exp(slot), txSeq: t.txSeq(slot),
        terminalToServer: t.rows.subarray(k, k + KEY_BYTES), serverToTerminal: t.rows.subarray(k + KEY_BYTES, k + 2 * KEY_BYTES),
        window: t.loadWindow(slot, new ReplayWindow()),
      });
      if (t.kid(slot) !== NIL) c.kid = t.strings[t.kid(slot)]!;
      yield c;
    }
  }

  /**
   * Restore a session from a snapshot (locatord restart), keeping its replay window: a copy is
   * held, returned (undefined when its ticket has expired).
   */
  restore(s: ServerSession): ServerSession | undefined {
    const ttl = s.exp * 1000 + this.opts.verifier.clockSkewS * 1000 - this.now();
    return ttl > 0 ? this.hold(s) : undefined;
  }

  /**
   * The session table's columns for a snapshot write (SessionColumns of slots [0, n), where n is
   * one past the last slot holding a session; a slot whose `aud` is NIL (-1) holds none):
   * allocated, filled by `copyColumns` in slices (the table keeps rows).
   */
  columns(): SessionColumns {
    return this.table.columns();
  }

  /** Copy slots [from, to) into `c` (from `columns`), as they are now. */
  copyColumns(c: SessionColumns, from: number, to: number): void {
    this.table.copyColumns(c, from, to);
  }

  /** The slot of `s` when it is held (a snapshot names a registration's session by it), else NIL (-1). */
  heldSlot(s: ServerSession): number {
    if (s instanceof HeldSession) return s.live ? s.slot : NIL;
    return this.table.findSid(s.sid);
  }

  /** A handle on the session of `slot` (restore: a registration's), undefined when it holds none. */
  heldAt(slot: number): ServerSession | undefined {
    const t = this.table;
    return slot >= 0 && slot < t.cap && t.used(slot) ? new HeldSession(t, slot, t.gen(slot)) : undefined;
  }

  /**
   * Snapshot restore in bulk (SlotTable.fill): the sessions of `c` held at their slot numbers,
   * those whose ticket expired meanwhile left out (as `restore` does). False when this holds
   * sessions already or has room for fewer slots: then `restore` them one by one.
   */
  restoreColumns(c: SessionColumns): boolean {
    const until = this.now() - this.opts.verifier.clockSkewS * 1000;
    return this.table.fill(c, (exp) => !(exp * 1000 > until), this.perIdCap);
  }
}

/**
 * The session table's per-slot arrays as bytes (ServerSessions.columns, SlotTable.fill), in the
 * host's byte order: sid 16 B, locator ID 16 B, keys 64 B, then per slot f64 exp, txSeq, high,
 * i32 lo, hi, aud and kid (indexes into `strings`, NIL = -1: for `aud`, a free slot).
 */
export interface SessionColumns {
  n: number;
  sid: Uint8Array;
  loc: Uint8Array;
  keys: Uint8Array;
  exp: Uint8Array;
  txSeq: Uint8Array;
  high: Uint8Array;
  lo: Uint8Array;
  hi: Uint8Array;
  aud: Uint8Array;
  kid: Uint8Array;
  strings: readonly string[];
}

