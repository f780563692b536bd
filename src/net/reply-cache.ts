// The response cache of devloc-protocol(7) ("Response cache"): the answer a server sent to each
// request, kept for the exchange lifetime so that a retransmission is answered again instead of
// executed again.
//
// Why not an lru-cache keyed by a string: the string (session ID in hex, "/", request ID) was
// built, hashed and compared for every datagram, and the LRU's bookkeeping and its clock reads
// came on top: ~13% of locatord's JavaScript per REFRESH in a CPU profile (bench/refresh-micro.ts).
// Here the key is the raw bytes the datagram carries (session ID, request ID), hashed once per
// lookup and once per answer (seeded: whoever picks request IDs cannot aim them at one chain),
// and nothing is allocated per request for it. Every answer lives the same time, so the oldest is
// the first to expire and no recency is needed: the entries are a ring in the order they were
// added, the oldest overwritten when the ring is full, found through hash chains that keep each
// entry's hash (no key hashed again to unlink one).
import { createHash, randomBytes } from 'node:crypto';
import { MAC_BYTES, REQUEST_ID_BYTES, SESSION_ID_BYTES } from '../wire/constants.js';
import { NIL, seededHash } from './slot-index.js';

/** Key bytes per entry: a kind byte (1: session message, 0: none), the session ID (zeros when none), the request ID. */
const KEY_BYTES = 1 + SESSION_ID_BYTES + REQUEST_ID_BYTES;

/**
 * Unauthenticated requests up to this size are remembered by a copy of their bytes rather than a
 * SHA-256 of them: a copy is much cheaper than a hash, and no larger than the answer kept with it
 * would be (unauthenticated answers never exceed the request). Larger ones keep a 16-byte hash.
 */
const DIGEST_COPY_MAX_BYTES = 256;

function requestDigest(raw: Uint8Array): Buffer {
  return raw.length <= DIGEST_COPY_MAX_BYTES ? Buffer.from(raw) : createHash('sha256').update(raw).digest().subarray(0, 16);
}

/**
 * Answers by (session ID, request ID), or request ID alone for requests outside a session, for
 * `lifetimeMs` each, at most `capacity` of them (beyond, the oldest are forgotten first). Times
 * are the caller's (`now`, in ms, never decreasing), so a test can fake them. An entry is named
 * by its index (find) until the next remember(), which may overwrite it.
 */
export class ReplyCache {
  // Per entry, in typed arrays allocated once at `capacity` and never filled: their pages become
  // resident only as the ring reaches them, and no resize ever copies the entries while a
  // datagram waits.
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
  private readonly fromPort: Uint16Array;
  private readonly resentCount: Uint8Array;
  /** A session message's MAC tag: it identifies the request's exact bytes (the MAC verified). */
  private readonly tags: Uint8Array;
  // Per entry on V8's heap (a pointer each), also allocated at capacity.
  /** What was sent (null: nothing, e.g. dropped as amplifying). */
  private readonly replies: (Buffer | null)[];
  private readonly fromIp: string[];
  /** Outside a session: the request's bytes or their hash (requestDigest); undefined for a session message. */
  private readonly digests: (Buffer | undefined)[];
  /** The next entry to write: entries after it (then from 0) were written earliest. */
  private head = 0;
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
    this.fromPort = new Uint16Array(capacity);
    this.resentCount = new Uint8Array(capacity);
    this.tags = new Uint8Array(capacity * MAC_BYTES);
    this.replies = new Array<Buffer | null>(capacity).fill(null);
    this.fromIp = new Array<string>(capacity).fill('');
    this.digests = new Array<Buffer | undefined>(capacity).fill(undefined);
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
    const digest = this.digests[i];
    if (digest !== undefined) return raw.length <= DIGEST_COPY_MAX_BYTES ? digest.equals(raw) : digest.equals(requestDigest(raw));
    if (raw.length < MAC_BYTES) return false;
    const tags = this.tags;
    const o = i * MAC_BYTES;
    const t = raw.length - MAC_BYTES;
    let diff = 0;
    for (let k = 0; k < MAC_BYTES; k++) diff |= tags[o + k]! ^ raw[t + k]!;
    return diff === 0;
  }

  /** Whether entry `i`'s request came from `ip`:`port` (compared as given: no address string built per datagram). */
  sameSource(i: number, ip: string, port: number): boolean {
    return this.fromIp[i] === ip && this.fromPort[i] === port;
  }

  /** What entry `i` sent (null: nothing). */
  reply(i: number): Buffer | null {
    return this.replies[i]!;
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
    const i = this.head;
    if (this.used[i] === 1) this.clear(i);
    this.keys.set(this.scratch, i * KEY_BYTES);
    this.link(i, h);
    this.used[i] = 1;
    this.at[i] = now;
    this.fromIp[i] = ip;
    this.fromPort[i] = port;
    this.resentCount[i] = 0;
    this.replies[i] = reply;
    if (sid) {
      this.digests[i] = undefined;
      const tags = this.tags;
      const o = i * MAC_BYTES;
      const t = raw.length - MAC_BYTES;
      for (let k = 0; k < MAC_BYTES; k++) tags[o + k] = raw[t + k]!;
    } else this.digests[i] = requestDigest(raw);
    this.live++;
    this.head = i + 1 === this.capacity ? 0 : i + 1;
  }

  /**
   * Forget the entries expired at `now`, so that their answers are garbage even on a server that
   * receives nothing more. The ring is in the order entries were added: this stops at the first
   * that has not expired (one added late by a slow handler may wait for the next purge). Returns
   * how many were forgotten.
   */
  purge(now: number): number {
    let n = 0;
    for (let k = 0, i = this.head; k < this.capacity && this.live > 0; k++, i = i + 1 === this.capacity ? 0 : i + 1) {
      if (this.used[i] === 0) continue;
      if (now - this.at[i]! < this.lifetimeMs) break;
      this.clear(i);
      n++;
    }
    return n;
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
    this.replies[i] = null;
    this.digests[i] = undefined;
    this.fromIp[i] = '';
    this.live--;
  }
}
