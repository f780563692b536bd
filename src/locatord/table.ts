// The registration table (the patent's user database 242): locator ID -> observed address,
// registration time and expiry, plus what the terminal reported about itself. Soft state bounded
// by `maxEntries` (least recently refreshed evicted beyond it), with expiry kept in each record
// and checked on every read, so an expired registration is never returned even before a sweep
// frees it.
//
// Layout (issue 16: a million terminals, no per-terminal object the GC must walk): records are
// SLOTS, numbered rows of one buffer that grows by doubling up to `maxEntries`. A row is 64 bytes
// with every field a lookup reads side by side, so that finding a random terminal among a million
// reads one or two cache lines instead of one per field (a column per field was ~9 random lines,
// and made a QUERY_ADDR ~1.5 us dearer at 1M than at 10k: README "Throughput at 1M registered"):
//   bytes 0-15   the locator ID, raw (the index's key: no hex string is kept)
//   u32 word 4   bits: port | netMode << 16 | visibility << 19 | probed | scheduled | reachable | IPv6 | in use | session
//   i32 word 5   ip: IPv4 (an IPv6 address is text in the `v6` map, flagged in `bits`)
//   i32 words 6, 7   expTick, regTick: times as ticks of TICK_MS since the table's base time
//   f64 at byte 32   seq: the highest sequence number applied (exact for any safe integer)
//   u32 word 10  gen: bumped when a slot is freed or replaced (a Registration view of it is then "removed")
//   i32 word 11  bucket: the sweep-schedule bucket the slot is filed in
//   bytes 48-63  the record's session ID, raw, so that the record still names it once it ended
// and beside the rows, arrays that lookups do not read:
//   prev, next   the recency list (a RecencyList, src/net/slot-index.ts: doubly linked, most
//            recent at its head); `next` also links the free list
//   sessionSlots, sessionGens   the record's session, held by the process's ServerSessions: its
//            slot and generation there (a handle is made when asked for: no object per record)
// plus maps by slot for the rare fields (nickname, LAN addresses, media ID, community,
// allow-list, presence, a session that is not a held one) that only some records have. The index is
// a SlotIndex (src/net/slot-index.ts: open addressing with linear probing, load <= 1/2, deletion
// by backward shift, no tombstones) on a seeded hash of the raw ID; an absent ID costs a probe of the short run at its hash, and IDs
// are not chosen by whoever queries them (authd derives them), so runs stay short.
//
// Sweeps never scan the table. Each record sits in one per-second bucket of a schedule (a list of
// slots), at or before the time it next needs attention (its probe time, else its expiry). A
// renewal leaves it where it is; when its bucket comes up, a record not due yet is moved to the
// bucket of its new time. So a sweep touches only the records due (or renewed since they were
// filed), and each live record is looked at about once per TTL, whatever its refresh rate. An
// entry whose slot has been freed, reused or filed elsewhere since is void (checked by the slot's
// `in use`, `scheduled` and `bucket`).
import type { Address } from '../wire/addr.js';
import { packIp, unpackIp } from '../wire/addr.js';
import { LOCATOR_ID_BYTES, SESSION_ID_BYTES } from '../wire/constants.js';
import type { Props } from '../wire/schema.js';
import type { ServerSession, SessionSlots } from '../net/sessions.js';
import { HeldSession, keptSession } from '../net/sessions.js';
import { moveFields, NIL, RecencyList, SlotIndex } from '../net/slot-index.js';

/** Time resolution of registration times and expiries: expiry happens up to this much late. */
export const TICK_MS = 100;

const PORT_MASK = 0xffff;
const NETMODE_SHIFT = 16;
const NETMODE_MASK = 0x7;
const VISIBILITY_SHIFT = 19;
const PROBED_BIT = 1 << 20;
const SCHEDULED_BIT = 1 << 21;
/** The terminal accepts introductions (REGISTER reachable). */
const REACHABLE_BIT = 1 << 23;
/** The address is IPv6 (its text is in the table's `v6` map). */
const IPV6_BIT = 1 << 24;
/** The slot holds a record. */
const IN_USE_BIT = 1 << 25;
/** The record has a session (in sessionSlots/sessionGens and sids, or in otherSessions). */
const SESSION_BIT = 1 << 26;
/** Schedule resolution: one bucket per second. */
const TICKS_PER_BUCKET = 1000 / TICK_MS;
/** Bytes of a record's row (see the top), and the same in u32 and in f64 elements. */
const ROW_BYTES = 64;
const ROW_WORDS = ROW_BYTES / 4;
const ROW_F64 = ROW_BYTES / 8;
/** u32 words of a locator ID (a row's first). */
const ID_WORDS = LOCATOR_ID_BYTES / 4;
/** Where each field is in a row: its u32/i32 word, f64 element or byte (see the top). */
const BITS = 4;
const IP = 5;
const EXP = 6;
const REG = 7;
const SEQ = 4;
const GEN = 10;
const BUCKET = 11;
const SID_AT = 48;
const INT32_MAX = 0x7fffffff;
const INT32_MIN = -0x80000000;

/** Fields a terminal rarely sets; allocated only when one is present. */
export interface RegistrationExtra {
  localAddrs?: Address[];
  mediaId?: string;
  community?: Props;
  /** Locator IDs (hex) that may always see this terminal. */
  allow?: string[];
  /** Rich presence beside the media ID (REGISTER / PRESENCE_SET `presence`). */
  presence?: RichPresence;
}

/** The presence record's fields other than the media ID (kept in `mediaId`). */
export interface RichPresence {
  lookingForPartner?: boolean;
  wants?: Props;
  status?: string;
}

/** What a record is made of (`RegistrationTable.set`); the rare fields are optional. */
export interface RegistrationFields {
  /** Observed (public) address; or `ip` already packed (packIp) with `port`, as a restore has it. */
  addr?: Address;
  ip?: number | string;
  port?: number;
  session: ServerSession | undefined;
  seq: number;
  regTick: number;
  expTick: number;
  netMode?: number;
  visibility?: number;
  reachable?: boolean;
  nickname?: string | undefined;
  extra?: RegistrationExtra | undefined;
}

/**
 * A view of one record (a slot of the table), made when asked for: short-lived, never stored
 * per terminal. Once its record is deleted, evicted, expired or replaced it is `removed`, and
 * reading its fields is meaningless (the slot may hold another terminal by then).
 */
export class Registration {
  constructor(private readonly t: RegistrationTable, readonly slot: number, private readonly gen: number) {}

  /** No longer in the table (deleted, evicted, expired and freed, or replaced). */
  get removed(): boolean {
    return this.t.u32[this.slot * ROW_WORDS + GEN] !== this.gen;
  }

  /** The locator ID in hex. */
  get key(): string {
    return this.t.keyOf(this.slot);
  }

  /** Observed (public) IP: IPv4 packed into an int, IPv6 as text. */
  get ip(): number | string {
    return this.t.ipOf(this.slot);
  }

  get port(): number {
    return this.t.portOf(this.slot);
  }

  get address(): Address {
    return this.t.addressOf(this.slot);
  }

  setAddress(a: Address): void {
    this.t.setAddress(this.slot, a);
  }

  get netMode(): number {
    return this.t.netModeOf(this.slot);
  }

  set netMode(m: number) {
    const b = this.t.u32;
    const i = this.slot * ROW_WORDS + BITS;
    b[i] = (b[i]! & ~(NETMODE_MASK << NETMODE_SHIFT)) | ((m & NETMODE_MASK) << NETMODE_SHIFT);
  }

  get visibility(): number {
    return this.t.visibilityOf(this.slot);
  }

  set visibility(v: number) {
    const b = this.t.u32;
    const i = this.slot * ROW_WORDS + BITS;
    b[i] = (b[i]! & ~(1 << VISIBILITY_SHIFT)) | ((v & 1) << VISIBILITY_SHIFT);
  }

  /** The terminal opted in to introductions (INTRO) with REGISTER `reachable`. */
  get reachable(): boolean {
    return this.t.reachableOf(this.slot);
  }

  set reachable(r: boolean) {
    this.t.setBit(this.slot, REACHABLE_BIT, r);
  }

  /** A liveness probe was sent since the last refresh. */
  get probed(): boolean {
    return (this.t.u32[this.slot * ROW_WORDS + BITS]! & PROBED_BIT) !== 0;
  }

  set probed(p: boolean) {
    this.t.setBit(this.slot, PROBED_BIT, p);
  }

  /** Registration time (the patent's field 404): last authenticated REGISTER/REFRESH/PROBE_ACK, ticks. */
  get regTick(): number {
    return this.t.i32[this.slot * ROW_WORDS + REG]!;
  }

  set regTick(v: number) {
    this.t.i32[this.slot * ROW_WORDS + REG] = clampTick(v);
  }

  /** Expiry, ticks: the record is dead from this tick on. */
  get expTick(): number {
    return this.t.i32[this.slot * ROW_WORDS + EXP]!;
  }

  set expTick(v: number) {
    this.t.i32[this.slot * ROW_WORDS + EXP] = clampTick(v);
  }

  /** Highest sequence number of `session` applied to this record (handlers/standing.ts compares). */
  get seq(): number {
    return this.t.f64[this.slot * ROW_F64 + SEQ]!;
  }

  set seq(v: number) {
    this.t.f64[this.slot * ROW_F64 + SEQ] = v;
  }

  /**
   * The session that registered (a handle made now); undefined after a restore whose session had
   * expired. It names its session (sidHex, locatorHex) also after that session ended.
   */
  get session(): ServerSession | undefined {
    return this.t.sessionOf(this.slot);
  }

  set session(s: ServerSession | undefined) {
    this.t.setSession(this.slot, s);
  }

  get nickname(): string | undefined {
    return this.t.nicknames.get(this.slot);
  }

  set nickname(n: string | undefined) {
    setOrDelete(this.t.nicknames, this.slot, n);
  }

  get extra(): RegistrationExtra | undefined {
    return this.t.extras.get(this.slot);
  }

  set extra(x: RegistrationExtra | undefined) {
    setOrDelete(this.t.extras, this.slot, x);
  }

  /** Granted TTL in ticks (registration time to expiry). */
  get ttlTicks(): number {
    return this.expTick - this.regTick;
  }
}

function clampTick(v: number): number {
  return v > INT32_MAX ? INT32_MAX : v < INT32_MIN ? INT32_MIN : v;
}

function setOrDelete<V>(m: Map<number, V>, slot: number, v: V | undefined): void {
  if (v === undefined) m.delete(slot);
  else m.set(slot, v);
}

export interface TableOptions {
  /** Most registrations held; the least recently refreshed is evicted beyond it. */
  maxEntries: number;
  /** Milliseconds clock (injected in tests). */
  now?: () => number;
  /** Told how many records expired (read or swept). */
  onExpired?: (n: number) => void;
  /** Told of each live record evicted because the table was full. */
  onEvicted?: () => void;
  /** Told the key of each record that went offline by itself (expired or evicted; not deleted). */
  onGone?: (key: string) => void;
  /** Probe a record not renewed for this % of its TTL (0 = never); settable later. */
  probeAtPercent?: number;
  /** Slots allocated at first (grown up to maxEntries: see `grownCapacity`). */
  initialCapacity?: number;
}

export interface SweepOutcome {
  expired: number;
  /** Records to probe now (already marked probed); a session is needed to send one. */
  probes: Registration[];
}

/** A growable list of slots: one schedule bucket. */
class SlotList {
  a = new Int32Array(8);
  /** Entries before `head` are processed (a sweep out of budget resumes here). */
  head = 0;
  n = 0;

  push(slot: number): void {
    if (this.n === this.a.length) {
      const b = new Int32Array(this.a.length * 2);
      b.set(this.a);
      this.a = b;
    }
    this.a[this.n++] = slot;
  }
}

const NONE = NIL;

/** The table: typed arrays by slot, an open-addressing index on the raw IDs, a recency list. */
export class RegistrationTable {
  readonly now: () => number;
  /** Ticks count from here (the table's creation, whole seconds). */
  readonly baseMs: number;
  /** Records that expired (found expired on read or by a sweep). */
  expired = 0;
  /** Live records evicted because the table was full. */
  evicted = 0;
  probeAtPercent: number;
  readonly max: number;

  // The rows (see the top of the file): views of one buffer, read by Registration too.
  u32: Uint32Array;
  i32: Int32Array;
  f64: Float64Array;
  /** The rows as bytes: the index's key store, and where IDs are read in hex. */
  private rowBytes: Buffer;
  /** Recency (most recently refreshed at its head); its `next` also links the free list. */
  private readonly recency: RecencyList;
  /** The record's held session: slot and generation in `sessionTable` (NIL: see otherSessions). */
  sessionSlots: Int32Array;
  sessionGens: Uint32Array;
  /** The table of held sessions (one ServerSessions per process), learnt from the first stored. */
  private sessionTable: SessionSlots | undefined;
  /** A record's session that is no held one of `sessionTable` (rare: a copy, a test's object). */
  private readonly otherSessions = new Map<number, ServerSession>();
  readonly nicknames = new Map<number, string>();
  readonly extras = new Map<number, RegistrationExtra>();
  private readonly v6 = new Map<number, string>();
  /** Slots ever used: slots at or beyond are free and were never linked. */
  private highWater = 0;
  private count = 0;
  /** Raw locator ID -> slot. */
  private readonly index: SlotIndex;
  /** A locator ID parsed from hex, as words (also the scratch of lookups). */
  private readonly keyWords = new Uint32Array(ID_WORDS);
  private readonly keyBytes = Buffer.from(this.keyWords.buffer, this.keyWords.byteOffset, LOCATOR_ID_BYTES);

  private readonly onExpired: (n: number) => void;
  private readonly onEvicted: () => void;
  private readonly onGone: ((key: string) => void) | undefined;
  /** Bucket (second since baseMs) -> slots filed there. */
  private readonly schedule = new Map<number, SlotList>();
  /** Buckets up to this one have been processed. */
  private sweptBucket: number;

  constructor(opts: TableOptions) {
    this.now = opts.now ?? Date.now;
    this.baseMs = Math.floor(this.now() / 1000) * 1000;
    this.onExpired = opts.onExpired ?? (() => {});
    this.onEvicted = opts.onEvicted ?? (() => {});
    this.onGone = opts.onGone;
    this.probeAtPercent = opts.probeAtPercent ?? 0;
    this.max = Math.max(1, Math.floor(opts.maxEntries));
    this.sweptBucket = this.bucketOf(this.nowTick()) - 1;
    const cap = Math.min(this.max, Math.max(1, opts.initialCapacity ?? 1024));
    this.u32 = new Uint32Array(cap * ROW_WORDS);
    this.i32 = new Int32Array(this.u32.buffer);
    this.f64 = new Float64Array(this.u32.buffer);
    this.rowBytes = Buffer.from(this.u32.buffer);
    this.recency = new RecencyList(cap);
    this.sessionSlots = new Int32Array(cap);
    this.sessionGens = new Uint32Array(cap);
    this.index = new SlotIndex(LOCATOR_ID_BYTES, cap, ROW_BYTES);
  }

  private countExpired(n: number): void {
    if (n === 0) return;
    this.expired += n;
    this.onExpired(n);
  }

  get size(): number {
    return this.count;
  }

  /** Slots allocated (the typed arrays' length). */
  get capacity(): number {
    return this.sessionSlots.length;
  }

  /** Current time in ticks (floor). */
  nowTick(): number {
    return Math.floor((this.now() - this.baseMs) / TICK_MS);
  }

  /** Ticks at which a TTL starting now ends (rounded up: never early). */
  expiryTick(ttlMs: number): number {
    return Math.ceil((this.now() + ttlMs - this.baseMs) / TICK_MS);
  }

  tickToMs(tick: number): number {
    return this.baseMs + tick * TICK_MS;
  }

  msToTick(ms: number): number {
    return Math.ceil((ms - this.baseMs) / TICK_MS);
  }

  // --- keys and the index ---

  /** Parse a locator ID (hex) into keyWords; false if it is not one (then no record has it). */
  private parseKey(idHex: string): boolean {
    return idHex.length === 2 * LOCATOR_ID_BYTES && this.keyBytes.write(idHex, 0, LOCATOR_ID_BYTES, 'hex') === LOCATOR_ID_BYTES;
  }

  /** Copy a raw locator ID into keyWords; false if it is not LOCATOR_ID_BYTES long. */
  private rawKey(b: Uint8Array, at: number, len: number): boolean {
    if (len !== LOCATOR_ID_BYTES || at < 0 || at + len > b.length) return false;
    // Byte by byte rather than set(subarray): no view made per key (each REFRESH, each restored record).
    const key = this.keyBytes;
    for (let i = 0; i < LOCATOR_ID_BYTES; i++) key[i] = b[at + i]!;
    return true;
  }

  /** The slot holding keyWords' ID (expired or not), or NONE. */
  private lookup(): number {
    return this.index.find(this.rowBytes, this.keyBytes, 0);
  }

  /** The locator ID of a slot, in hex. */
  keyOf(slot: number): string {
    const o = slot * ROW_BYTES;
    return this.rowBytes.toString('hex', o, o + LOCATOR_ID_BYTES);
  }

  /** Copy the raw locator ID of a slot into `to` at `at`. */
  copyId(slot: number, to: Uint8Array, at: number): void {
    this.rowBytes.copy(to, at, slot * ROW_BYTES, slot * ROW_BYTES + LOCATOR_ID_BYTES);
  }

  // --- slots ---

  /**
   * Double the arrays (up to max). Doubling, not a smaller factor (issue 16 measured process RSS,
   * not array sizes): the unused part of the last doubling is zero pages the process has not
   * touched, resident only once written; growing by a quarter (both slot tables) measured 384-414
   * B of RSS per terminal at 1M against 322-328 B (more copies and freed arrays left in the
   * malloc heap, and the sessions' indexes, sized by capacity, doubled past 2^20 slots).
   */
  private grow(): void {
    const cap = this.capacity;
    const n = Math.min(this.max, cap * 2);
    const ext = <T extends Int32Array | Uint32Array>(a: T, per = 1): T => {
      const b = new (a.constructor as new (n: number) => T)(n * per);
      b.set(a);
      return b;
    };
    this.u32 = ext(this.u32, ROW_WORDS);
    this.i32 = new Int32Array(this.u32.buffer);
    this.f64 = new Float64Array(this.u32.buffer);
    this.rowBytes = Buffer.from(this.u32.buffer);
    this.sessionSlots = ext(this.sessionSlots);
    this.sessionGens = ext(this.sessionGens);
    this.recency.grow(n);
    if (this.index.reserve(n)) {
      for (let s = 0; s < this.highWater; s++) if (this.u32[s * ROW_WORDS + BITS]! & IN_USE_BIT) this.index.put(this.rowBytes, s * ROW_BYTES, s);
    }
  }

  /** A free slot (the table is not full). */
  private allocate(): number {
    const s = this.recency.takeFree();
    if (s !== NONE) return s;
    if (this.highWater === this.capacity) this.grow();
    return this.highWater++;
  }

  /** Free a slot: out of the index and the recency list, its references dropped, its views void. */
  private free(s: number): void {
    this.index.delete(this.rowBytes, s * ROW_BYTES);
    this.recency.unlink(s);
    this.u32[s * ROW_WORDS + BITS] = 0;
    this.u32[s * ROW_WORDS + GEN] = (this.u32[s * ROW_WORDS + GEN]! + 1) >>> 0;
    this.otherSessions.delete(s);
    this.nicknames.delete(s);
    this.extras.delete(s);
    this.v6.delete(s);
    this.recency.release(s);
    this.count--;
  }

  /** Make room for one more record: evict the least recently refreshed. */
  private evictOne(): void {
    const s = this.recency.tail;
    const key = this.onGone ? this.keyOf(s) : '';
    const wasExpired = this.nowTick() >= this.i32[s * ROW_WORDS + EXP]!;
    this.free(s);
    this.onGone?.(key);
    if (wasExpired) this.countExpired(1);
    else {
      this.evicted++;
      this.onEvicted();
    }
  }

  /**
   * The live record's slot for a locator ID (hex), or -1 (NONE); its recency is untouched. An
   * expired one is freed on the way, as a sweep would.
   */
  find(idHex: string): number {
    return this.parseKey(idHex) ? this.findKey(idHex) : NONE;
  }

  /**
   * `find` for the locator ID of `known` (`idHex` is its hex): read raw from the session table
   * when `known` is a live held session of it, no hex parsed (each REFRESH).
   */
  findOf(idHex: string, known: ServerSession | undefined): number {
    if (!(known instanceof HeldSession) || !known.live || known.locatorHex !== idHex) return this.find(idHex);
    return this.rawKey(known.table.rows, known.table.locAt(known.slot), LOCATOR_ID_BYTES) ? this.findKey(idHex) : NONE;
  }

  /** The slot of the ID in keyWords (whose hex is `idHex`), as `find`. */
  private findKey(idHex: string): number {
    const s = this.lookup();
    if (s === NONE || this.nowTick() < this.i32[s * ROW_WORDS + EXP]!) return s;
    this.free(s);
    this.countExpired(1);
    this.onGone?.(idHex);
    return NONE;
  }

  /** Like `find`, and marks the record most recently refreshed (last to be evicted). */
  findTouch(idHex: string): number {
    const s = this.find(idHex);
    if (s !== NONE) this.recency.touch(s);
    return s;
  }

  /** Mark slot `s`'s record most recently refreshed, as `touch` does: for a caller that found it already. */
  touchSlot(s: number): void {
    this.recency.touch(s);
  }

  /** A view of a slot's record. */
  view(slot: number): Registration {
    return new Registration(this, slot, this.u32[slot * ROW_WORDS + GEN]!);
  }

  /** The live record for a locator ID (hex), without touching its recency. */
  get(idHex: string): Registration | undefined {
    const s = this.find(idHex);
    return s === NONE ? undefined : this.view(s);
  }

  /** Like `get`, and marks the record most recently refreshed (last to be evicted). */
  touch(idHex: string): Registration | undefined {
    const s = this.findTouch(idHex);
    return s === NONE ? undefined : this.view(s);
  }

  /**
   * Store a record under a locator ID (hex), most recently refreshed, replacing any record of that
   * ID (whose views become removed); evicts the least recently refreshed when full. Throws for a
   * key that is not a locator ID (a caller's bug: IDs come from decoded fixed-length fields).
   */
  set(idHex: string, f: RegistrationFields): Registration {
    if (!this.parseKey(idHex)) throw new Error(`registration table: ${JSON.stringify(idHex)} is not a locator ID`);
    return this.view(this.put(f));
  }

  /** `set` from the raw ID bytes `b[at, at + len)` (a snapshot restore); undefined if not a locator ID. */
  setRaw(b: Uint8Array, at: number, len: number, f: RegistrationFields): number | undefined {
    if (!this.rawKey(b, at, len)) return undefined;
    return this.put(f);
  }

  /** Store keyWords' record; its slot. */
  private put(f: RegistrationFields): number {
    let s = this.lookup();
    if (s !== NONE) {
      this.recency.unlink(s);
      this.nicknames.delete(s);
      this.extras.delete(s);
      this.v6.delete(s);
      this.u32[s * ROW_WORDS + GEN] = (this.u32[s * ROW_WORDS + GEN]! + 1) >>> 0;
      this.u32[s * ROW_WORDS + BITS] = IN_USE_BIT;
    } else {
      if (this.count >= this.max) this.evictOne();
      s = this.allocate();
      this.u32.set(this.keyWords, s * ROW_WORDS);
      this.u32[s * ROW_WORDS + BITS] = IN_USE_BIT;
      this.index.put(this.rowBytes, s * ROW_BYTES, s);
      this.count++;
    }
    this.recency.linkHead(s);
    if (f.addr) this.setAddress(s, f.addr);
    else this.setPacked(s, f.ip ?? 0, f.port ?? 0);
    const b = this.u32[s * ROW_WORDS + BITS]!;
    this.u32[s * ROW_WORDS + BITS] = b | ((f.netMode ?? 0) & NETMODE_MASK) << NETMODE_SHIFT | ((f.visibility ?? 0) & 1) << VISIBILITY_SHIFT | (f.reachable ? REACHABLE_BIT : 0);
    this.setSession(s, f.session);
    this.f64[s * ROW_F64 + SEQ] = f.seq;
    this.i32[s * ROW_WORDS + REG] = clampTick(f.regTick);
    this.i32[s * ROW_WORDS + EXP] = clampTick(f.expTick);
    if (f.nickname !== undefined) this.nicknames.set(s, f.nickname);
    if (f.extra !== undefined) this.extras.set(s, f.extra);
    this.file(s);
    return s;
  }

  delete(idHex: string): boolean {
    if (!this.parseKey(idHex)) return false;
    const s = this.lookup();
    if (s === NONE) return false;
    this.free(s);
    return true;
  }

  /** Observed IP of a slot: IPv4 packed into an int, IPv6 as text. */
  ipOf(s: number): number | string {
    return this.u32[s * ROW_WORDS + BITS]! & IPV6_BIT ? this.v6.get(s)! : this.i32[s * ROW_WORDS + IP]!;
  }

  addressOf(s: number): Address {
    return { ip: unpackIp(this.ipOf(s)), port: this.u32[s * ROW_WORDS + BITS]! & PORT_MASK };
  }

  setAddress(s: number, a: Address): void {
    this.setPacked(s, packIp(a.ip), a.port);
  }

  private setPacked(s: number, ip: number | string, port: number): void {
    let b = (this.u32[s * ROW_WORDS + BITS]! & ~PORT_MASK) | (port & PORT_MASK);
    if (typeof ip === 'string') {
      this.v6.set(s, ip);
      b |= IPV6_BIT;
    } else {
      this.i32[s * ROW_WORDS + IP] = ip;
      if (b & IPV6_BIT) this.v6.delete(s);
      b &= ~IPV6_BIT;
    }
    this.u32[s * ROW_WORDS + BITS] = b;
  }

  /**
   * The session of slot `s`'s record, undefined when none: for a held one, a handle made now
   * (live, or once its session ended, naming it by the record's copy of its IDs).
   */
  sessionOf(s: number): ServerSession | undefined {
    if (!(this.u32[s * ROW_WORDS + BITS]! & SESSION_BIT)) return undefined;
    const at = this.sessionSlots[s]!;
    if (at === NONE) return this.otherSessions.get(s);
    const t = this.sessionTable!;
    const gen = this.sessionGens[s]!;
    return t.holds(at, gen) ? new HeldSession(t, at, gen) : new HeldSession(t, at, gen, this.sessionIdHex(s), this.keyOf(s));
  }

  /**
   * `sessionIdHex`, from `known`'s handle when it is the record's own live held session (the
   * handle keeps the hex it made: a REFRESH compares the two, one conversion instead of two).
   */
  sessionIdHexOf(s: number, known: ServerSession | undefined): string {
    return known instanceof HeldSession && this.boundTo(s, known) && known.live ? known.sidHex : this.sessionIdHex(s);
  }

  /** Whether slot `s`'s record is bound to the held session `session` (its slot and generation in the same table). */
  private boundTo(s: number, session: HeldSession): boolean {
    return (this.u32[s * ROW_WORDS + BITS]! & SESSION_BIT) !== 0 && this.sessionSlots[s] === session.slot && this.sessionGens[s] === session.gen && this.sessionTable === session.table;
  }

  /** The ID (hex) of the session of slot `s`'s record, '' when none: read from the record, no handle made. */
  sessionIdHex(s: number): string {
    if (!(this.u32[s * ROW_WORDS + BITS]! & SESSION_BIT)) return '';
    // A session that is no held one is rare (none in service): the map tells, not the array of
    // session slots, so that a lookup reads the record's row alone.
    const other = this.otherSessions.size === 0 ? undefined : this.otherSessions.get(s);
    if (other) return other.sidHex;
    const o = s * ROW_BYTES + SID_AT;
    return this.rowBytes.toString('hex', o, o + SESSION_ID_BYTES);
  }

  /**
   * Bind slot `s`'s record to `session`: a live held session of this record's locator ID as its
   * slot, generation and ID (numbers: issue 16, no object per record), anything else as the
   * object itself (rare). Rebinding the session it has already (each REFRESH) writes nothing.
   */
  setSession(s: number, session: ServerSession | undefined): void {
    const bits = this.u32[s * ROW_WORDS + BITS]!;
    if (session instanceof HeldSession) {
      const t = session.table;
      if (this.boundTo(s, session)) return;
      this.otherSessions.delete(s);
      if (t.holds(session.slot, session.gen) && (this.sessionTable ??= t) === t && t.locatorIs(session.slot, this.rowBytes, s * ROW_BYTES)) {
        this.sessionSlots[s] = session.slot;
        this.sessionGens[s] = session.gen;
        t.copySid(session.slot, this.rowBytes, s * ROW_BYTES + SID_AT);
        this.u32[s * ROW_WORDS + BITS] = bits | SESSION_BIT;
        return;
      }
    } else this.otherSessions.delete(s);
    this.sessionSlots[s] = NONE;
    if (session === undefined) {
      this.u32[s * ROW_WORDS + BITS] = bits & ~SESSION_BIT;
      return;
    }
    this.otherSessions.set(s, keptSession(session));
    this.u32[s * ROW_WORDS + BITS] = bits | SESSION_BIT;
  }

  portOf(s: number): number {
    return this.u32[s * ROW_WORDS + BITS]! & PORT_MASK;
  }

  netModeOf(s: number): number {
    return (this.u32[s * ROW_WORDS + BITS]! >>> NETMODE_SHIFT) & NETMODE_MASK;
  }

  visibilityOf(s: number): number {
    return (this.u32[s * ROW_WORDS + BITS]! >>> VISIBILITY_SHIFT) & 1;
  }

  reachableOf(s: number): boolean {
    return (this.u32[s * ROW_WORDS + BITS]! & REACHABLE_BIT) !== 0;
  }

  /** Is slot `s`'s locator ID `id` (raw bytes)? */
  idIs(s: number, id: Uint8Array): boolean {
    if (!this.rawKey(id, 0, id.length)) return false;
    const k = this.keyWords;
    const w = this.u32;
    const o = s * ROW_WORDS;
    return w[o] === k[0] && w[o + 1] === k[1] && w[o + 2] === k[2] && w[o + 3] === k[3];
  }

  setBit(s: number, bit: number, on: boolean): void {
    const i = s * ROW_WORDS + BITS;
    this.u32[i] = on ? this.u32[i]! | bit : this.u32[i]! & ~bit;
  }

  /** Extend a record from now by `ttlMs` (registration time := now) and clear its probe flag. */
  renew(rec: Registration | number, ttlMs: number): void {
    const s = typeof rec === 'number' ? rec : rec.slot;
    this.i32[s * ROW_WORDS + REG] = clampTick(this.nowTick());
    this.i32[s * ROW_WORDS + EXP] = clampTick(this.expiryTick(ttlMs));
    this.u32[s * ROW_WORDS + BITS] = this.u32[s * ROW_WORDS + BITS]! & ~PROBED_BIT;
    this.file(s);
  }

  private bucketOf(tick: number): number {
    return Math.floor(tick / TICKS_PER_BUCKET);
  }

  /** When a record next needs attention: its probe time, or its expiry once probed. */
  nextCheckTick(rec: Registration | number): number {
    const s = typeof rec === 'number' ? rec : rec.slot;
    const pct = this.probeAtPercent;
    const reg = this.i32[s * ROW_WORDS + REG]!;
    if (pct > 0 && (this.u32[s * ROW_WORDS + BITS]! & (PROBED_BIT | SESSION_BIT)) === SESSION_BIT) return reg + Math.floor(((this.i32[s * ROW_WORDS + EXP]! - reg) * pct) / 100);
    return this.i32[s * ROW_WORDS + EXP]!;
  }

  /**
   * Put a slot in the bucket of its next check (never one already swept). A slot filed already
   * stays where it is when that bucket comes no later (it is refiled from there); when its next
   * check moved earlier (renewed with a shorter TTL), it is filed again in the earlier bucket,
   * else its probe would come after its expiry.
   */
  private file(s: number, atLeast = this.sweptBucket + 1): void {
    const b = Math.max(atLeast, this.bucketOf(this.nextCheckTick(s)));
    if (this.u32[s * ROW_WORDS + BITS]! & SCHEDULED_BIT && this.i32[s * ROW_WORDS + BUCKET]! <= b) return;
    let list = this.schedule.get(b);
    if (!list) this.schedule.set(b, (list = new SlotList()));
    list.push(s);
    this.i32[s * ROW_WORDS + BUCKET] = b;
    this.u32[s * ROW_WORDS + BITS] = this.u32[s * ROW_WORDS + BITS]! | SCHEDULED_BIT;
  }

  /** Every slot holding a record, also expired ones not freed yet (snapshots, revocation). O(capacity). */
  *slots(): IterableIterator<number> {
    for (let s = 0; s < this.highWater; s++) if (this.u32[s * ROW_WORDS + BITS]! & IN_USE_BIT) yield s;
  }

  /** Every record, also expired ones not freed yet (key revocation, nickname search). O(capacity). */
  *entries(): IterableIterator<[string, Registration]> {
    for (const s of this.slots()) yield [this.keyOf(s), this.view(s)];
  }

  /** Every record not removed, also expired ones not freed yet. */
  *records(): IterableIterator<Registration> {
    for (const s of this.slots()) yield this.view(s);
  }

  /** Slots at and beyond this one were never used (a loop over `bits` may stop here). */
  get usedSlots(): number {
    return this.highWater;
  }

  /** Does slot `s` hold a record? */
  inUse(s: number): boolean {
    return (this.u32[s * ROW_WORDS + BITS]! & IN_USE_BIT) !== 0;
  }

  /** Free expired records (those whose bucket has come up); returns how many. */
  purgeStale(): number {
    return this.sweep(0, Infinity).expired;
  }

  /**
   * Process the buckets that have come up: free expired records, and pick up to `maxProbes`
   * records due for a probe (marked probed and filed again at their expiry). Due probes beyond
   * the bound wait for the next sweep. Cost: the records filed in those buckets, not the table,
   * and at most `maxWork` of them per call, so a mass expiry (everyone registered in the same
   * second, then gone) is freed over several sweeps instead of stalling one; reads never see
   * an expired record meanwhile.
   */
  sweep(maxProbes: number, maxWork = 50_000): SweepOutcome {
    const nowTick = this.nowTick();
    const upTo = this.bucketOf(nowTick);
    const probes: Registration[] = [];
    const dead: number[] = [];
    let work = 0;
    buckets: for (let b = this.sweptBucket + 1; b <= upTo; b++) {
      const list = this.schedule.get(b);
      this.sweptBucket = b;
      if (!list) continue;
      this.schedule.delete(b);
      for (let i = list.head; i < list.n; i++) {
        if (work++ >= maxWork) {
          // Out of budget: the rest of this bucket is processed first next time.
          list.head = i;
          this.schedule.set(b, list);
          this.sweptBucket = b - 1;
          break buckets;
        }
        const s = list.a[i]!;
        const bits = this.u32[s * ROW_WORDS + BITS]!;
        // Freed (deleted, evicted, expired) or filed again elsewhere since: this entry is void.
        if (!(bits & IN_USE_BIT) || !(bits & SCHEDULED_BIT) || this.i32[s * ROW_WORDS + BUCKET] !== b) continue;
        if (nowTick >= this.i32[s * ROW_WORDS + EXP]!) {
          // Unscheduled: a second entry of the slot in this bucket is void.
          this.u32[s * ROW_WORDS + BITS] = bits & ~SCHEDULED_BIT;
          dead.push(s);
          continue;
        }
        this.u32[s * ROW_WORDS + BITS] = bits & ~SCHEDULED_BIT;
        if (!(bits & PROBED_BIT) && probes.length < maxProbes && this.nextCheckTick(s) <= nowTick) {
          this.u32[s * ROW_WORDS + BITS] = this.u32[s * ROW_WORDS + BITS]! | PROBED_BIT;
          probes.push(this.view(s));
        }
        // Filed again at its next check: its expiry if just probed, its new times if renewed,
        // the next sweep if a due probe did not fit in this one.
        this.file(s, upTo + 1);
      }
    }
    for (const s of dead) {
      const key = this.onGone ? this.keyOf(s) : '';
      this.free(s);
      this.onGone?.(key);
    }
    this.countExpired(dead.length);
    return { expired: dead.length, probes };
  }

  /** Entries filed in the schedule (for tests and the bench: about one per live record). */
  get scheduledCount(): number {
    let n = 0;
    for (const l of this.schedule.values()) n += l.n - l.head;
    return n;
  }

  clear(): void {
    for (const s of [...this.slots()]) this.free(s);
    this.schedule.clear();
  }

  /**
   * Columns for the table's slots [0, n), n one past the last slot holding a record (snapshot
   * write: the file keeps a column per field), allocated and empty: `copyColumns` fills them, in
   * slices of slots. `bits` is this file's layout (see the top): a snapshot keeps it, so a change
   * to it bumps SNAPSHOT_VERSION (snapshot.ts). The rare fields are read per slot (`ipOf` for
   * IPv6, `nicknames`, `extras`).
   */
  columns(): RegistrationColumns {
    let n = this.highWater;
    while (n > 0 && !(this.u32[(n - 1) * ROW_WORDS + BITS]! & IN_USE_BIT)) n--;
    return {
      n, baseMs: this.baseMs, tickMs: TICK_MS, ids: new Uint8Array(n * LOCATOR_ID_BYTES), ips: new Uint8Array(n * 4), bits: new Uint8Array(n * 4),
      regTicks: new Uint8Array(n * 4), expTicks: new Uint8Array(n * 4), seqs: new Uint8Array(n * 8),
    };
  }

  /** Copy the fields of slots [from, to) from their rows into `c`'s columns (from `columns`: the bytes as they are). */
  copyColumns(c: RegistrationColumns, from: number, to: number): void {
    this.moveFields(c, from, to, true);
  }

  /** The fields of slots [from, to) between their rows and `c`'s columns: out to the columns (snapshot write) or in (restore). */
  private moveFields(c: RegistrationColumns, from: number, to: number, out: boolean): void {
    moveFields(this.rowBytes, ROW_BYTES, [c.ids, c.ips, c.bits, c.regTicks, c.expTicks, c.seqs], COLUMN_AT, COLUMN_BYTES, from, to, out);
  }

  /** What a slot's `bits` word from `columns` says: 0 free, 1 an IPv4 record, 2 an IPv6 one, -1 not a word this table writes. */
  static slotKind(bits: number): number {
    if (!(bits & IN_USE_BIT)) return bits === 0 ? 0 : -1;
    if (bits & ~SNAPSHOT_BITS) return -1;
    return bits & IPV6_BIT ? 2 : 1;
  }

  /** The fields a slot's `bits` word from `columns` holds (a restore one by one: `setRaw`). */
  static fieldsOfBits(bits: number): { port: number; netMode: number; visibility: number; reachable: boolean } {
    return { port: bits & PORT_MASK, netMode: (bits >>> NETMODE_SHIFT) & NETMODE_MASK, visibility: (bits >>> VISIBILITY_SHIFT) & 1, reachable: (bits & REACHABLE_BIT) !== 0 };
  }

  /**
   * Snapshot restore in bulk: the columns of `c` (checked by the caller: `slotKind`, and an IPv6
   * text in `rare` for exactly the IPv6 records) copied into this table, which was never used,
   * at the same slot numbers; then the index, recency list and schedule are rebuilt by a walk of
   * the slots (the highest slot the most recent). A record expired by now, or whose ID an earlier
   * slot holds, is left out. Each record's session is `sessionAt(slot)`. Returns how many were
   * left out as expired, or -1 (nothing done) when the table was used already, has room for
   * fewer than `c.n` slots or counts time in other ticks: then the caller `setRaw`s one by one.
   */
  fill(c: RegistrationColumns, sessionAt: (slot: number) => ServerSession | undefined, rare: ReadonlyMap<number, SlotRareFields>): number {
    const n = c.n;
    if (this.highWater !== 0 || n > this.max || c.tickMs !== TICK_MS) return -1;
    while (this.capacity < n) this.grow();
    this.moveFields(c, 0, n, false);
    // Both base times are whole seconds: the shift is a whole number of ticks.
    const delta = Math.round((c.baseMs - this.baseMs) / TICK_MS);
    const nowTick = this.nowTick();
    this.highWater = n;
    let expired = 0;
    for (let s = 0; s < n; s++) {
      const b = this.u32[s * ROW_WORDS + BITS]!;
      const exp = clampTick(this.i32[s * ROW_WORDS + EXP]! + delta);
      if (!(b & IN_USE_BIT) || nowTick >= exp || this.index.find(this.rowBytes, this.rowBytes, s * ROW_BYTES) !== NONE) {
        if (b & IN_USE_BIT && nowTick >= exp) expired++;
        this.u32[s * ROW_WORDS + BITS] = 0;
        continue;
      }
      this.i32[s * ROW_WORDS + EXP] = exp;
      this.i32[s * ROW_WORDS + REG] = clampTick(this.i32[s * ROW_WORDS + REG]! + delta);
      // The session is bound below from the file's session column, not from a copied bit.
      this.u32[s * ROW_WORDS + BITS] = b & ~(PROBED_BIT | SCHEDULED_BIT | SESSION_BIT);
      this.index.put(this.rowBytes, s * ROW_BYTES, s);
      this.recency.linkHead(s);
      this.count++;
      this.setSession(s, sessionAt(s));
      const r = rare.get(s);
      if (r) {
        if (r.ip !== undefined) this.v6.set(s, r.ip);
        if (r.nickname !== undefined) this.nicknames.set(s, r.nickname);
        if (r.extra !== undefined) this.extras.set(s, r.extra);
      }
      this.file(s);
    }
    for (let s = n - 1; s >= 0; s--) if (!(this.u32[s * ROW_WORDS + BITS]! & IN_USE_BIT)) this.recency.release(s);
    return expired;
  }
}

/** Where each of RegistrationColumns' columns (ids, ips, bits, regTicks, expTicks, seqs) is in a row, and its bytes. */
const COLUMN_AT = [0, IP * 4, BITS * 4, REG * 4, EXP * 4, SEQ * 8];
const COLUMN_BYTES = [LOCATOR_ID_BYTES, 4, 4, 4, 4, 8];


/** Bits a record's `bits` word may have in a snapshot (RegistrationTable.slotKind). */
const SNAPSHOT_BITS = PORT_MASK | (NETMODE_MASK << NETMODE_SHIFT) | (1 << VISIBILITY_SHIFT) | PROBED_BIT | SCHEDULED_BIT | REACHABLE_BIT | IPV6_BIT | IN_USE_BIT | SESSION_BIT;

/**
 * The table's per-slot arrays as bytes (RegistrationTable.columns and fill), in the host's byte
 * order: locator ID 16 B, then per slot i32 ip, u32 bits, i32 regTicks and expTicks (ticks of
 * `tickMs` since `baseMs`), f64 seq.
 */
export interface RegistrationColumns {
  n: number;
  baseMs: number;
  tickMs: number;
  ids: Uint8Array;
  ips: Uint8Array;
  bits: Uint8Array;
  regTicks: Uint8Array;
  expTicks: Uint8Array;
  seqs: Uint8Array;
}

/** A restored record's rare fields (RegistrationTable.fill): its IPv6 address, nickname, extra. */
export interface SlotRareFields {
  ip?: string | undefined;
  nickname?: string | undefined;
  extra?: RegistrationExtra | undefined;
}
