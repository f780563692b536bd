// The response cache of devloc-protocol(7) ("Response cache"): the answer a server sent to each
// request, kept for the exchange lifetime so that a retransmission is answered again instead of
// executed again.
//
// Why not an lru-cache keyed by a string: the string (session ID in hex, "/", request ID) was
// built, hashed and compared for every datagram, and the LRU's bookkeeping and its clock reads
// came on top: ~13% of locatord's JavaScript per REFRESH in a CPU profile (bench/refresh-micro.ts).
// Here the key is the raw bytes the datagram carries (session ID, request ID), hashed once per
// lookup and once per answer (seeded: whoever picks request IDs cannot aim them at one chain).
// Every answer lives the same time, so the oldest is the first to expire and no recency is needed:
// the entries are a ring in the order they were added, the oldest overwritten when the ring is
// full, found through hash chains that keep each entry's hash (no key hashed again to unlink one).
// The answers' bytes are copied into a byte ring beside it, in the same order, and the source's
// IPv4 address is kept packed: a full cache holds no object per answer for the GC to mark (the
// Buffers it kept before were pretenured by V8, 100,000 of them live in old space).
import { createHash, randomBytes } from 'node:crypto';
import { packIp } from '../wire/addr.js';
import { MAC_BYTES, MAX_DATAGRAM, REQUEST_ID_BYTES, SESSION_ID_BYTES } from '../wire/constants.js';
import { NIL, seededHash } from './slot-index.js';

/** Key bytes per entry: a kind byte (1: session message, 0: none), the session ID (zeros when none), the request ID. */
const KEY_BYTES = 1 + SESSION_ID_BYTES + REQUEST_ID_BYTES;

/**
 * Bytes of the byte ring per entry of capacity: answers and digests average less (a REFRESH_ACK
 * and its tag ~100 B); a run of larger ones forgets the oldest answers sooner, never more than
 * `capacity` are kept.
 */
const RING_BYTES_PER_ENTRY = 256;

/**
 * Unauthenticated requests up to this size are remembered by a copy of their bytes rather than a
 * SHA-256 of them: a copy is much cheaper than a hash, and no larger than the answer kept with it
 * would be (unauthenticated answers never exceed the request). Larger ones keep a 16-byte hash.
 */
const DIGEST_COPY_MAX_BYTES = 256;
/** Bytes of the hash kept for a larger request. */
const DIGEST_HASH_BYTES = 16;

/**
 * Answers by (session ID, request ID), or request ID alone for requests outside a session, for
 * `lifetimeMs` each, at most `capacity` of them (beyond, the oldest are forgotten first). Times
 * are the caller's (`now`, in ms, never decreasing), so a test can fake them. An entry is named
 * by its index (find) until the next remember(), which may overwrite it.
 */
export class ReplyCache {
  // Allocated once at `capacity` and never filled: pages become resident only as the rings reach
  // them, and no resize ever copies the entries while a datagram waits.
  private readonly keys: Uint8Array;
  /** Hash chains: per bucket its first entry + 1, per entry the next + 1 (0: none) and its key's hash. */
  private readonly buckets: Int32Array;
  private readonly chain: Int32Array;
  private readonly hashes: Int32Array;
  private readonly seed = randomBytes(4).readInt32LE(0);
  /** 1 while the entry holds an answer. */
  private readonly used: Uint8Array;
  /** When the answer was remembered (ms). */
  private readonly at: Float64Array;
  /** The request's source: IPv4 packed (packIp), else the text in `ip6` ('' for IPv4). */
  private readonly ip4: Int32Array;
  private readonly ip6: string[];
  private readonly fromPort: Uint16Array;
  private readonly resentCount: Uint8Array;
  /**
   * Where the entry's bytes are in `bytes`: the answer (`replyLength` bytes; -1: nothing was
   * sent), then what identifies the request (|`digestLength`| bytes): its MAC tag in a session,
   * else a copy of it or, above DIGEST_COPY_MAX_BYTES, its hash (then `digestLength` is negative,
   * so that a short request is never compared with a long one's hash).
   */
  private readonly offset: Int32Array;
  private readonly replyLength: Int32Array;
  private readonly digestLength: Int16Array;
  private readonly bytes: Uint8Array;
  /** Where the next entry's bytes go. */
  private bytesHead = 0;
  /**
   * The ring: `span` entries from `tail` (the oldest written) to `head` (the next to write),
   * holes (forgotten entries) included; every live entry is among them.
   */
  private head = 0;
  private tail = 0;
  private span = 0;
  private live = 0;
  /** The key of the datagram asked about (find, remember), assembled here: no allocation per call. */
  private readonly scratch = new Uint8Array(KEY_BYTES);

  constructor(readonly capacity: number, readonly lifetimeMs: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError('capacity must be a positive integer');
    let buckets = 16;
    while (buckets < capacity) buckets *= 2;
    this.buckets = new Int32Array(buckets);
    this.chain = new Int32Array(capacity);
    this.hashes = new Int32Array(capacity);
    this.keys = new Uint8Array(capacity * KEY_BYTES);
    this.used = new Uint8Array(capacity);
    this.at = new Float64Array(capacity);
    this.ip4 = new Int32Array(capacity);
    this.ip6 = new Array<string>(capacity).fill('');
    this.fromPort = new Uint16Array(capacity);
    this.resentCount = new Uint8Array(capacity);
    this.offset = new Int32Array(capacity);
    this.replyLength = new Int32Array(capacity);
    this.digestLength = new Int16Array(capacity);
    // Room for at least one answer as large as a datagram may be, with its digest.
    this.bytes = new Uint8Array(Math.max(capacity * RING_BYTES_PER_ENTRY, MAX_DATAGRAM + DIGEST_COPY_MAX_BYTES));
  }

  /** Size of the byte ring the answers and digests share. */
  get ringBytes(): number {
    return this.bytes.length;
  }

  /** Entries held (expired ones included until purged or overwritten). */
  get size(): number {
    return this.live;
  }

  /** The entry of this request that has not expired at `now`, or NIL. `sid` undefined: a request outside a session. */
  find(sid: Uint8Array | undefined, rid: Uint8Array, now: number): number {
    const i = this.lookup(this.keyOf(sid, rid));
    return i === NIL || now - this.at[i]! >= this.lifetimeMs ? NIL : i;
  }

  /**
   * Whether `raw` from `ip`:`port` is a retransmission of entry `i`'s request: the same source,
   * the same bytes (for a session message, the same MAC tag).
   */
  isRetransmission(i: number, raw: Uint8Array, ip: string, port: number): boolean {
    if (!this.sameSource(i, ip, port)) return false;
    const o = this.offset[i]! + Math.max(0, this.replyLength[i]!);
    const stored = this.digestLength[i]!;
    const n = Math.abs(stored);
    const b = this.bytes;
    let from: Uint8Array = raw;
    let at = 0;
    if (this.keys[i * KEY_BYTES] === 1) {
      // A session message: its MAC tag, the last bytes of the datagram.
      if (raw.length < MAC_BYTES) return false;
      at = raw.length - MAC_BYTES;
    } else if ((stored < 0) !== (raw.length > DIGEST_COPY_MAX_BYTES)) return false;
    else if (stored < 0) from = hashOf(raw);
    if (from.length - at !== n) return false;
    let diff = 0;
    for (let k = 0; k < n; k++) diff |= b[o + k]! ^ from[at + k]!;
    return diff === 0;
  }

  /** Whether entry `i`'s request came from `ip`:`port` (compared without building an address string). */
  sameSource(i: number, ip: string, port: number): boolean {
    if (this.fromPort[i] !== port) return false;
    const six = this.ip6[i]!;
    return six === '' ? packIp(ip) === this.ip4[i] : six === ip;
  }

  /** A copy of what entry `i` sent (null: nothing): the ring's bytes may be overwritten while a send is queued. */
  reply(i: number): Buffer | null {
    const n = this.replyLength[i]!;
    if (n < 0) return null;
    const o = this.offset[i]!;
    return Buffer.from(this.bytes.subarray(o, o + n));
  }

  /** Bytes of what entry `i` sent (-1: nothing), without copying it. */
  replyBytes(i: number): number {
    return this.replyLength[i]!;
  }

  /** Times entry `i`'s answer was sent again. */
  resent(i: number): number {
    return this.resentCount[i]!;
  }

  /** Count one more resend of entry `i`'s answer. */
  countResend(i: number): void {
    if (this.resentCount[i]! < 255) this.resentCount[i]!++;
  }

  /**
   * Remember `reply` (null: nothing was sent) as the answer to `raw` from `ip`:`port`, by `sid`
   * (undefined outside a session: then a copy or hash of `raw` identifies it; in a session its
   * MAC tag) and `rid`. An entry of the same key is replaced; when full, the oldest is forgotten.
   */
  remember(sid: Uint8Array | undefined, rid: Uint8Array, raw: Uint8Array, ip: string, port: number, reply: Buffer | null, now: number): void {
    const h = this.keyOf(sid, rid);
    const old = this.lookup(h);
    if (old !== NIL) this.clear(old);
    if (this.span === this.capacity) {
      // Full: the oldest entry's place is the one written now.
      if (this.used[this.tail] === 1) this.clear(this.tail);
      this.tail = this.next(this.tail);
      this.span--;
    }
    const i = this.head;
    // What identifies the request, and where the bytes go.
    let digest: Uint8Array = raw;
    let digestAt = 0;
    if (sid) digestAt = raw.length - MAC_BYTES;
    else if (raw.length > DIGEST_COPY_MAX_BYTES) digest = hashOf(raw);
    const digestLength = digest.length - digestAt;
    const replyLength = reply ? reply.length : 0;
    const o = this.room(replyLength + digestLength);
    if (reply) this.bytes.set(reply, o);
    for (let k = 0; k < digestLength; k++) this.bytes[o + replyLength + k] = digest[digestAt + k]!;
    this.offset[i] = o;
    this.replyLength[i] = reply ? replyLength : -1;
    this.digestLength[i] = digest === raw ? digestLength : -digestLength;
    this.keys.set(this.scratch, i * KEY_BYTES);
    this.link(i, h);
    this.used[i] = 1;
    this.at[i] = now;
    const packed = packIp(ip);
    if (typeof packed === 'number') {
      this.ip4[i] = packed;
      this.ip6[i] = '';
    } else this.ip6[i] = ip;
    this.fromPort[i] = port;
    this.resentCount[i] = 0;
    this.live++;
    this.head = this.next(i);
    this.span++;
  }

  /**
   * Forget the entries expired at `now`. The ring is in the order entries were added: this stops
   * at the first that has not expired (one added late by a slow handler may wait for the next
   * purge). Returns how many were forgotten.
   */
  purge(now: number): number {
    let n = 0;
    for (let t = this.oldest(); t !== NIL && now - this.at[t]! >= this.lifetimeMs; t = this.oldest()) {
      this.clear(t);
      n++;
    }
    return n;
  }

  /**
   * The offset of `n` free bytes in the byte ring, at its head (or at 0 when the end is too near):
   * the oldest entries whose bytes are in the way are forgotten. Entries' bytes are in the ring
   * in the order the entries were added, so those in the way are always the oldest live ones.
   */
  private room(n: number): number {
    let start = this.bytesHead;
    const wrapped = start + n > this.bytes.length;
    if (wrapped) start = 0;
    for (let t = this.oldest(); t !== NIL; t = this.oldest()) {
      const o = this.offset[t]!;
      // In the way: bytes in [start, start + n), or, when the head wrapped, anywhere after the
      // old head (they are older than anything at the ring's start).
      const end = o + Math.max(0, this.replyLength[t]!) + Math.abs(this.digestLength[t]!);
      const inTheWay = (o < start + n && end > start) || (wrapped && o >= this.bytesHead);
      if (!inTheWay) break;
      this.clear(t);
    }
    this.bytesHead = start + n;
    return start;
  }

  /** The oldest live entry, or NIL when none (the holes before it leave the ring). */
  private oldest(): number {
    while (this.span > 0 && this.used[this.tail] === 0) {
      this.tail = this.next(this.tail);
      this.span--;
    }
    return this.span > 0 ? this.tail : NIL;
  }

  private next(i: number): number {
    return i + 1 === this.capacity ? 0 : i + 1;
  }
  /** The key of (sid, rid) into the scratch key; returns its hash. */
  private keyOf(sid: Uint8Array | undefined, rid: Uint8Array): number {
    const k = this.scratch;
    if (sid) {
      k[0] = 1;
      for (let j = 0; j < SESSION_ID_BYTES; j++) k[1 + j] = sid[j]!;
    } else {
      k[0] = 0;
      k.fill(0, 1, 1 + SESSION_ID_BYTES);
    }
    for (let j = 0; j < REQUEST_ID_BYTES; j++) k[1 + SESSION_ID_BYTES + j] = rid[j]!;
    return seededHash(this.seed, k, 0, KEY_BYTES);
  }

  /** The entry holding the scratch key (whose hash is `h`), or NIL. */
  private lookup(h: number): number {
    const keys = this.keys;
    const k = this.scratch;
    next: for (let e = this.buckets[h & (this.buckets.length - 1)]!; e !== 0; e = this.chain[e - 1]!) {
      const i = e - 1;
      if (this.hashes[i] !== h) continue;
      const o = i * KEY_BYTES;
      for (let j = 0; j < KEY_BYTES; j++) if (keys[o + j] !== k[j]) continue next;
      return i;
    }
    return NIL;
  }

  /** Put entry `i`, its key's hash `h`, at the head of its bucket's chain. */
  private link(i: number, h: number): void {
    const b = h & (this.buckets.length - 1);
    this.hashes[i] = h;
    this.chain[i] = this.buckets[b]!;
    this.buckets[b] = i + 1;
  }

  /** Take entry `i` out of its bucket's chain. */
  private unlink(i: number): void {
    const b = this.hashes[i]! & (this.buckets.length - 1);
    let e = this.buckets[b]!;
    if (e === i + 1) {
      this.buckets[b] = this.chain[i]!;
      return;
    }
    while (this.chain[e - 1] !== i + 1) e = this.chain[e - 1]!;
    this.chain[e - 1] = this.chain[i]!;
  }

  /** Empty entry `i` (a hole in the ring until written again). */
  private clear(i: number): void {
    this.unlink(i);
    this.used[i] = 0;
    this.ip6[i] = '';
    this.live--;
  }
}

/** The first DIGEST_HASH_BYTES of SHA-256(raw): what identifies a request above DIGEST_COPY_MAX_BYTES. */
function hashOf(raw: Uint8Array): Buffer {
  return createHash('sha256').update(raw).digest().subarray(0, DIGEST_HASH_BYTES);
}
