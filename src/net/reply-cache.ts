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
/** Entries allocated at first (the arrays double up to the cache's capacity). */
const INITIAL_ENTRIES = 1024;

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
  private cap = 0;
  private keys = new Uint8Array(0);
  /** Hash chains: the first entry of each bucket, each entry's next and its key's hash. */
  private buckets = new Int32Array(0);
  private chain = new Int32Array(0);
  private hashes = new Int32Array(0);
  private readonly seed = randomBytes(4).readInt32LE(0);
  /** When the entry was added (ms); NaN: the entry is empty. */
  private at = new Float64Array(0);
  private fromPort = new Uint16Array(0);
  private resentCount = new Uint8Array(0);
  /** A session message's MAC tag: it identifies the request's exact bytes (the MAC verified). */
  private tags = new Uint8Array(0);
  /** What was sent (null: nothing, e.g. dropped as amplifying). */
  private replies: (Buffer | null)[] = [];
  private fromIp: string[] = [];
  /** Outside a session: the request's bytes or their hash (requestDigest); undefined for a session message. */
  private digests: (Buffer | undefined)[] = [];
  /** The next entry to write: entries after it (then from 0) were written earliest. */
  private head = 0;
  private live = 0;
  /** The key of the datagram asked about (find, remember), assembled here: no allocation per call. */
  private readonly scratch = new Uint8Array(KEY_BYTES);

  constructor(readonly capacity: number, readonly lifetimeMs: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError('capacity must be a positive integer');
    this.grow(Math.min(INITIAL_ENTRIES, capacity));
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
    if (!Number.isNaN(this.at[this.head]!) && this.cap < this.capacity) this.grow(Math.min(this.cap * 2, this.capacity));
    const i = this.head;
    if (!Number.isNaN(this.at[i]!)) this.clear(i);
    this.keys.set(this.scratch, i * KEY_BYTES);
    this.link(i, h);
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
    this.head = i + 1 === this.cap ? 0 : i + 1;
  }

  /**
   * Forget the entries expired at `now`, so that their answers are garbage even on a server that
   * receives nothing more. The ring is in the order entries were added: this stops at the first
   * that has not expired (one added late by a slow handler may wait for the next purge). Returns
   * how many were forgotten.
   */
  purge(now: number): number {
    let n = 0;
    for (let k = 0, i = this.head; k < this.cap && this.live > 0; k++, i = i + 1 === this.cap ? 0 : i + 1) {
      const at = this.at[i]!;
      if (Number.isNaN(at)) continue;
      if (now - at < this.lifetimeMs) break;
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
    next: for (let i = this.buckets[h & (this.buckets.length - 1)]!; i !== NIL; i = this.chain[i]!) {
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
    this.buckets[b] = i;
  }

  /** Take entry `i` out of its bucket's chain. */
  private unlink(i: number): void {
    const b = this.hashes[i]! & (this.buckets.length - 1);
    let p = this.buckets[b]!;
    if (p === i) {
      this.buckets[b] = this.chain[i]!;
      return;
    }
    while (this.chain[p] !== i) p = this.chain[p]!;
    this.chain[p] = this.chain[i]!;
  }

  /** Empty entry `i` (a hole in the ring until written again). */
  private clear(i: number): void {
    this.unlink(i);
    this.at[i] = NaN;
    this.replies[i] = null;
    this.digests[i] = undefined;
    this.fromIp[i] = '';
    this.live--;
  }

  /** Room for `cap` entries: the ring laid out again oldest first, holes dropped, the chains rebuilt. */
  private grow(cap: number): void {
    const { cap: oldCap, head, keys, at, fromPort, resentCount, tags, replies, fromIp, digests, hashes } = this;
    this.cap = cap;
    this.keys = new Uint8Array(cap * KEY_BYTES);
    this.at = new Float64Array(cap).fill(NaN);
    this.fromPort = new Uint16Array(cap);
    this.resentCount = new Uint8Array(cap);
    this.tags = new Uint8Array(cap * MAC_BYTES);
    this.replies = new Array<Buffer | null>(cap).fill(null);
    this.fromIp = new Array<string>(cap).fill('');
    this.digests = new Array<Buffer | undefined>(cap).fill(undefined);
    let buckets = 16;
    while (buckets < cap) buckets *= 2;
    this.buckets = new Int32Array(buckets).fill(NIL);
    this.chain = new Int32Array(cap);
    this.hashes = new Int32Array(cap);
    let n = 0;
    for (let k = 0; k < oldCap; k++) {
      const i = (head + k) % oldCap;
      if (Number.isNaN(at[i]!)) continue;
      this.keys.set(keys.subarray(i * KEY_BYTES, (i + 1) * KEY_BYTES), n * KEY_BYTES);
      this.link(n, hashes[i]!);
      this.at[n] = at[i]!;
      this.fromPort[n] = fromPort[i]!;
      this.resentCount[n] = resentCount[i]!;
      this.tags.set(tags.subarray(i * MAC_BYTES, (i + 1) * MAC_BYTES), n * MAC_BYTES);
      this.replies[n] = replies[i]!;
      this.fromIp[n] = fromIp[i]!;
      this.digests[n] = digests[i];
      n++;
    }
    this.live = n;
    this.head = n % cap;
  }
}
