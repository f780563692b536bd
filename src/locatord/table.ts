// The registration table (the patent's user database 242): locator ID -> observed address,
// registration time and expiry, plus what the terminal reported about itself. Soft state: an
// LRU bounded by `maxEntries` (lru-cache), with expiry kept in each record and checked on every
// read, so an expired registration is never returned even before a sweep frees it.
//
// Sweeps never scan the table (iterating lru-cache costs ~1.7 us per entry: seconds at 1M).
// Each record sits in exactly one per-second bucket of a schedule, at or before the time it next
// needs attention (its probe time, else its expiry). A renewal leaves it where it is; when its
// bucket comes up, a record not due yet is moved to the bucket of its new time. So a sweep
// touches only the records due (or renewed since they were filed), and each live record is
// looked at about once per TTL, whatever its refresh rate.
//
// Record layout (measured by `npm run bench`: ~180 B per terminal at 1M entries, key and
// lru-cache bookkeeping included): one small class instance per terminal whose fields V8 keeps
// as tagged small integers wherever possible —
//   - the IPv4 address as a signed 32-bit integer (IPv6 stays canonical text);
//   - port, network mode, visibility and the "probed" flag packed into one integer;
//   - times as integer ticks of TICK_MS since the table's base time (a double would be boxed:
//     a 16-byte heap number per field);
// and the rarely used fields (LAN addresses, media ID, community, allow-list) in a separate
// object that exists only when one of them is present. The key is the locator ID in hex, the
// same string the session holds, so in the daemon it costs nothing extra.
import { LRUCache } from 'lru-cache';
import type { Address } from '../wire/addr.js';
import type { Props } from '../wire/schema.js';
import type { ServerSession } from '../net/sessions.js';

/** Time resolution of registration times and expiries: expiry happens up to this much late. */
export const TICK_MS = 100;

const PORT_MASK = 0xffff;
const NETMODE_SHIFT = 16;
const NETMODE_MASK = 0x7;
const VISIBILITY_SHIFT = 19;
const PROBED_BIT = 1 << 20;
const SCHEDULED_BIT = 1 << 21;
const REMOVED_BIT = 1 << 22;
/** The terminal accepts introductions (REGISTER reachable). */
const REACHABLE_BIT = 1 << 23;
/** Schedule resolution: one bucket per second. */
const TICKS_PER_BUCKET = 1000 / TICK_MS;

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

/** IPv4 text to a signed 32-bit integer (a V8 small integer), anything else unchanged. */
export function packIp(ip: string): number | string {
  // Shorter than "0.0.0.0": not IPv4 (and a restore's placeholder costs no split).
  if (ip.length < 7) return ip;
  const parts = ip.split('.');
  if (parts.length !== 4) return ip;
  let n = 0;
  for (const p of parts) {
    const v = Number(p);
    if (!/^\d{1,3}$/.test(p) || v > 255) return ip;
    n = (n << 8) | v;
  }
  return n | 0;
}

export function unpackIp(ip: number | string): string {
  if (typeof ip === 'string') return ip;
  return `${(ip >>> 24) & 255}.${(ip >>> 16) & 255}.${(ip >>> 8) & 255}.${ip & 255}`;
}

export class Registration {
  /** The table key (locator ID in hex); '' until stored. */
  key: string;
  /** Observed (public) IP: IPv4 packed into an int, IPv6 as text. */
  ip: number | string;
  /** port | netMode << 16 | visibility << 19 | probed << 20 | scheduled << 21 | removed << 22 | reachable << 23. */
  bits: number;
  /** Registration time (the patent's field 404): last authenticated REGISTER/REFRESH/PROBE_ACK, ticks. */
  regTick: number;
  /** Expiry, ticks: the record is dead from this tick on. */
  expTick: number;
  /** Highest sequence number of `session` applied to this record (see `isStale`). */
  seq: number;
  /** The session that registered; undefined after a restore whose session had expired. */
  session: ServerSession | undefined;
  nickname: string | undefined;
  extra: RegistrationExtra | undefined;
  /**
   * The schedule bucket the record is filed in (valid while `scheduled`). A renewal to an
   * earlier check (a shorter TTL) files it again there; the entry left in the later bucket is
   * then void (its bucket is no longer the record's).
   */
  bucket: number;

  constructor(from: Address, session: ServerSession | undefined, seq: number, regTick: number, expTick: number) {
    this.key = '';
    this.ip = packIp(from.ip);
    this.bits = from.port & PORT_MASK;
    this.regTick = regTick;
    this.expTick = expTick;
    this.seq = seq;
    this.session = session;
    this.nickname = undefined;
    this.extra = undefined;
    this.bucket = 0;
  }

  get address(): Address {
    return { ip: unpackIp(this.ip), port: this.bits & PORT_MASK };
  }

  setAddress(a: Address): void {
    this.ip = packIp(a.ip);
    this.bits = (this.bits & ~PORT_MASK) | (a.port & PORT_MASK);
  }

  get netMode(): number {
    return (this.bits >>> NETMODE_SHIFT) & NETMODE_MASK;
  }

  set netMode(m: number) {
    this.bits = (this.bits & ~(NETMODE_MASK << NETMODE_SHIFT)) | ((m & NETMODE_MASK) << NETMODE_SHIFT);
  }

  get visibility(): number {
    return (this.bits >>> VISIBILITY_SHIFT) & 1;
  }

  set visibility(v: number) {
    this.bits = (this.bits & ~(1 << VISIBILITY_SHIFT)) | ((v & 1) << VISIBILITY_SHIFT);
  }

  /** The terminal opted in to introductions (INTRO) with REGISTER `reachable`. */
  get reachable(): boolean {
    return (this.bits & REACHABLE_BIT) !== 0;
  }

  set reachable(r: boolean) {
    this.bits = r ? this.bits | REACHABLE_BIT : this.bits & ~REACHABLE_BIT;
  }

  /** A liveness probe was sent since the last refresh. */
  get probed(): boolean {
    return (this.bits & PROBED_BIT) !== 0;
  }

  set probed(p: boolean) {
    this.bits = p ? this.bits | PROBED_BIT : this.bits & ~PROBED_BIT;
  }

  /** Filed in the table's schedule. */
  get scheduled(): boolean {
    return (this.bits & SCHEDULED_BIT) !== 0;
  }

  set scheduled(p: boolean) {
    this.bits = p ? this.bits | SCHEDULED_BIT : this.bits & ~SCHEDULED_BIT;
  }

  /** No longer in the table (deleted, evicted or replaced): its schedule entry is void. */
  get removed(): boolean {
    return (this.bits & REMOVED_BIT) !== 0;
  }

  markRemoved(): void {
    this.bits |= REMOVED_BIT;
  }

  /** Granted TTL in ticks (registration time to expiry). */
  get ttlTicks(): number {
    return this.expTick - this.regTick;
  }

  /**
   * Is a message of `session` with sequence number `seq` older than what this record already
   * reflects? The replay window accepts seq 4 after seq 5 (both unseen), but the binding must
   * follow the latest authenticated packet, so the older one changes nothing. A message of
   * another session is stale too, unless it is a REGISTER (which rebinds; see handlers).
   */
  isStale(session: ServerSession, seq: number): boolean {
    return this.session?.sidHex !== session.sidHex || seq <= this.seq;
  }
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
}

export interface SweepOutcome {
  expired: number;
  /** Records to probe now (already marked probed); a session is needed to send one. */
  probes: Registration[];
}

/** The table: lru-cache for the bound and the recency order, expiry checked on read. */
export class RegistrationTable {
  private readonly cache: LRUCache<string, Registration>;
  readonly now: () => number;
  /** Ticks count from here (the table's creation, whole seconds). */
  readonly baseMs: number;
  /** Records that expired (found expired on read or by a sweep). */
  expired = 0;
  /** Live records evicted because the table was full. */
  evicted = 0;

  private readonly onExpired: (n: number) => void;
  private readonly onEvicted: () => void;
  private readonly onGone: ((key: string) => void) | undefined;
  /** Bucket (second since baseMs) -> records filed there. */
  private readonly schedule = new Map<number, Registration[]>();
  /** Buckets up to this one have been processed. */
  private sweptBucket: number;
  probeAtPercent: number;

  constructor(opts: TableOptions) {
    this.now = opts.now ?? Date.now;
    this.baseMs = Math.floor(this.now() / 1000) * 1000;
    this.onExpired = opts.onExpired ?? (() => {});
    this.onEvicted = opts.onEvicted ?? (() => {});
    this.onGone = opts.onGone;
    this.probeAtPercent = opts.probeAtPercent ?? 0;
    this.sweptBucket = this.bucketOf(this.nowTick()) - 1;
    this.cache = new LRUCache<string, Registration>({
      max: opts.maxEntries,
      dispose: (rec, key, reason) => {
        rec.markRemoved();
        if (reason !== 'evict') return;
        this.onGone?.(key);
        if (this.nowTick() >= rec.expTick) this.countExpired(1);
        else {
          this.evicted++;
          this.onEvicted();
        }
      },
    });
  }

  private countExpired(n: number): void {
    if (n === 0) return;
    this.expired += n;
    this.onExpired(n);
  }

  get max(): number {
    return this.cache.max;
  }

  get size(): number {
    return this.cache.size;
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

  /** The live record for a locator ID (hex), without touching its recency. */
  get(idHex: string): Registration | undefined {
    const rec = this.cache.peek(idHex);
    if (!rec) return undefined;
    if (this.nowTick() >= rec.expTick) {
      this.cache.delete(idHex);
      this.countExpired(1);
      this.onGone?.(idHex);
      return undefined;
    }
    return rec;
  }

  /** Like `get`, and marks the record most recently refreshed (last to be evicted). */
  touch(idHex: string): Registration | undefined {
    const rec = this.cache.get(idHex);
    if (!rec || this.nowTick() < rec.expTick) return rec;
    this.cache.delete(idHex);
    this.countExpired(1);
    this.onGone?.(idHex);
    return undefined;
  }

  set(idHex: string, rec: Registration): void {
    rec.key = idHex;
    this.cache.set(idHex, rec);
    this.file(rec);
  }

  delete(idHex: string): boolean {
    return this.cache.delete(idHex);
  }

  /** Extend a record from now by `ttlMs` (registration time := now) and clear its probe flag. */
  renew(rec: Registration, ttlMs: number): void {
    rec.regTick = this.nowTick();
    rec.expTick = this.expiryTick(ttlMs);
    rec.probed = false;
    this.file(rec);
  }

  private bucketOf(tick: number): number {
    return Math.floor(tick / TICKS_PER_BUCKET);
  }

  /** When a record next needs attention: its probe time, or its expiry once probed. */
  nextCheckTick(rec: Registration): number {
    const pct = this.probeAtPercent;
    if (pct > 0 && !rec.probed && rec.session !== undefined) return rec.regTick + Math.floor((rec.ttlTicks * pct) / 100);
    return rec.expTick;
  }

  /**
   * Put a record in the bucket of its next check (never one already swept). A record filed
   * already stays where it is when that bucket comes no later (it is refiled from there); when
   * its next check moved earlier (renewed with a shorter TTL), it is filed again in the earlier
   * bucket, else its probe would come after its expiry.
   */
  private file(rec: Registration, atLeast = this.sweptBucket + 1): void {
    if (rec.key === '') return;
    const b = Math.max(atLeast, this.bucketOf(this.nextCheckTick(rec)));
    if (rec.scheduled && rec.bucket <= b) return;
    let list = this.schedule.get(b);
    if (!list) this.schedule.set(b, (list = []));
    list.push(rec);
    rec.bucket = b;
    rec.scheduled = true;
  }

  /** Every record, also expired ones not freed yet (snapshots, key revocation). O(entries), slow. */
  *entries(): IterableIterator<[string, Registration]> {
    for (const [k, v] of this.cache.entries()) yield [k, v];
  }

  /**
   * Every record not removed, also expired ones not freed yet, in the order of their next check
   * (the snapshot). Walks the sweep schedule, a map of arrays, where iterating the lru-cache
   * costs a hash lookup per entry (~2 us at 1M).
   */
  *records(): IterableIterator<Registration> {
    for (const [b, list] of this.schedule) {
      for (const rec of list) if (rec.bucket === b && rec.scheduled && !rec.removed) yield rec;
    }
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
    const dead: string[] = [];
    let work = 0;
    buckets: for (let b = this.sweptBucket + 1; b <= upTo; b++) {
      const list = this.schedule.get(b);
      this.sweptBucket = b;
      if (!list) continue;
      this.schedule.delete(b);
      for (let i = 0; i < list.length; i++) {
        if (work++ >= maxWork) {
          // Out of budget: the rest of this bucket is processed first next time.
          this.schedule.set(b, list.slice(i));
          this.sweptBucket = b - 1;
          break buckets;
        }
        const rec = list[i]!;
        // Filed again in an earlier bucket since (see `file`): this entry is void.
        if (rec.bucket !== b) continue;
        rec.scheduled = false;
        // Deleted, evicted or replaced since it was filed: nothing to do (no lookup needed).
        if (rec.removed) continue;
        if (nowTick >= rec.expTick) {
          dead.push(rec.key);
          continue;
        }
        if (!rec.probed && probes.length < maxProbes && this.nextCheckTick(rec) <= nowTick) {
          rec.probed = true;
          probes.push(rec);
        }
        // Filed again at its next check: its expiry if just probed, its new times if renewed,
        // the next sweep if a due probe did not fit in this one.
        this.file(rec, upTo + 1);
      }
    }
    for (const k of dead) {
      this.cache.delete(k);
      this.onGone?.(k);
    }
    this.countExpired(dead.length);
    return { expired: dead.length, probes };
  }

  /** Records filed in the schedule (for tests and the bench: about one per live record). */
  get scheduledCount(): number {
    let n = 0;
    for (const l of this.schedule.values()) n += l.length;
    return n;
  }

  clear(): void {
    this.cache.clear();
    this.schedule.clear();
  }
}
