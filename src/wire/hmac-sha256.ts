// The session MAC of devloc-protocol(7) (HMAC-SHA-256 truncated to 16 bytes) computed in
// JavaScript, for a server that checks and makes one per datagram.
//
// Why not node:crypto's createHmac: each call makes a native Hmac object, freed later through
// a weak handle that the scavenger processes in its pause. In the presence bench at 10k
// changes/s (4 MACs per change) that was about half of every ~4 ms scavenge of locatord
// (`--trace-gc-nvp`: heap.external_weak_global_handles 1.9-2.5 ms of 3.6-4.1 ms), on top of
// the ~2 us of the call. Here nothing is allocated per MAC, and the two padded-key blocks a
// key starts with are hashed once and kept (`entries` keys, direct-mapped): a MAC of a
// datagram under 56 bytes is then three SHA-256 blocks instead of five.
//
// The result is the same bytes as createHmac('sha256', key).update(data).digest() cut to 16
// (test/unit/hmac-sha256.test.ts checks both against each other on every length it tries).
// `sha256` is the plain hash, for the same reason: locatord hashes a view of every presence
// change (handlers/watch.ts viewOf). `KeyedHmac` is the same HMAC under one fixed key of any
// length, whole or cut: locatord's tags of its Redis records and relay messages.

const K = new Int32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);
const IV = new Int32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
const BLOCK = 64;
/** Bytes of a key this cache takes (session keys are 32: HKDF output, devloc-protocol(7)). */
const KEY_BYTES = 32;
/** Bytes of the MAC on the wire. */
export const TAG_BYTES = 16;

/** The message schedule, shared: compress() runs to completion, never re-entered. */
const W = new Int32Array(64);

/**
 * One SHA-256 compression of the 64 bytes of `b` at `off` into the state `h` at `ho`.
 *
 * The rounds are written out eight at a time, the eight working variables renamed from one round
 * to the next instead of moved (FIPS 180-4's h = g, g = f, ... is a rotation of names): after
 * eight rounds every name is back in its place. Against the loop of one round per iteration
 * that moved seven values a round, a MAC of a 95-byte datagram (three blocks, pads cached) takes
 * 0.92-0.94 of the CPU time (both in one process, 50k MACs each in turn, median of 60 turns,
 * three runs).
 */
function compress(h: Int32Array, ho: number, b: Uint8Array, off: number): void {
  for (let i = 0; i < 16; i++) {
    const j = off + i * 4;
    W[i] = (b[j]! << 24) | (b[j + 1]! << 16) | (b[j + 2]! << 8) | b[j + 3]!;
  }
  for (let i = 16; i < 64; i++) {
    const w15 = W[i - 15]!;
    const w2 = W[i - 2]!;
    const s0 = ((w15 >>> 7) | (w15 << 25)) ^ ((w15 >>> 18) | (w15 << 14)) ^ (w15 >>> 3);
    const s1 = ((w2 >>> 17) | (w2 << 15)) ^ ((w2 >>> 19) | (w2 << 13)) ^ (w2 >>> 10);
    W[i] = (W[i - 16]! + s0 + W[i - 7]! + s1) | 0;
  }
  let a = h[ho]!, bb = h[ho + 1]!, c = h[ho + 2]!, d = h[ho + 3]!;
  let e = h[ho + 4]!, f = h[ho + 5]!, g = h[ho + 6]!, hh = h[ho + 7]!;
  let t1 = 0;
  for (let i = 0; i < 64; i += 8) {
    // Round i + r: T1 = h + S1(e) + Ch(e, f, g) + K + W; d += T1 (the new e); h = T1 + S0(a) + Maj(a, b, c) (the new a).
    t1 = (hh + (((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7))) + ((e & f) ^ (~e & g)) + K[i]! + W[i]!) | 0;
    d = (d + t1) | 0;
    hh = (t1 + (((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10))) + ((a & bb) ^ (a & c) ^ (bb & c))) | 0;
    t1 = (g + (((d >>> 6) | (d << 26)) ^ ((d >>> 11) | (d << 21)) ^ ((d >>> 25) | (d << 7))) + ((d & e) ^ (~d & f)) + K[i + 1]! + W[i + 1]!) | 0;
    c = (c + t1) | 0;
    g = (t1 + (((hh >>> 2) | (hh << 30)) ^ ((hh >>> 13) | (hh << 19)) ^ ((hh >>> 22) | (hh << 10))) + ((hh & a) ^ (hh & bb) ^ (a & bb))) | 0;
    t1 = (f + (((c >>> 6) | (c << 26)) ^ ((c >>> 11) | (c << 21)) ^ ((c >>> 25) | (c << 7))) + ((c & d) ^ (~c & e)) + K[i + 2]! + W[i + 2]!) | 0;
    bb = (bb + t1) | 0;
    f = (t1 + (((g >>> 2) | (g << 30)) ^ ((g >>> 13) | (g << 19)) ^ ((g >>> 22) | (g << 10))) + ((g & hh) ^ (g & a) ^ (hh & a))) | 0;
    t1 = (e + (((bb >>> 6) | (bb << 26)) ^ ((bb >>> 11) | (bb << 21)) ^ ((bb >>> 25) | (bb << 7))) + ((bb & c) ^ (~bb & d)) + K[i + 3]! + W[i + 3]!) | 0;
    a = (a + t1) | 0;
    e = (t1 + (((f >>> 2) | (f << 30)) ^ ((f >>> 13) | (f << 19)) ^ ((f >>> 22) | (f << 10))) + ((f & g) ^ (f & hh) ^ (g & hh))) | 0;
    t1 = (d + (((a >>> 6) | (a << 26)) ^ ((a >>> 11) | (a << 21)) ^ ((a >>> 25) | (a << 7))) + ((a & bb) ^ (~a & c)) + K[i + 4]! + W[i + 4]!) | 0;
    hh = (hh + t1) | 0;
    d = (t1 + (((e >>> 2) | (e << 30)) ^ ((e >>> 13) | (e << 19)) ^ ((e >>> 22) | (e << 10))) + ((e & f) ^ (e & g) ^ (f & g))) | 0;
    t1 = (c + (((hh >>> 6) | (hh << 26)) ^ ((hh >>> 11) | (hh << 21)) ^ ((hh >>> 25) | (hh << 7))) + ((hh & a) ^ (~hh & bb)) + K[i + 5]! + W[i + 5]!) | 0;
    g = (g + t1) | 0;
    c = (t1 + (((d >>> 2) | (d << 30)) ^ ((d >>> 13) | (d << 19)) ^ ((d >>> 22) | (d << 10))) + ((d & e) ^ (d & f) ^ (e & f))) | 0;
    t1 = (bb + (((g >>> 6) | (g << 26)) ^ ((g >>> 11) | (g << 21)) ^ ((g >>> 25) | (g << 7))) + ((g & hh) ^ (~g & a)) + K[i + 6]! + W[i + 6]!) | 0;
    f = (f + t1) | 0;
    bb = (t1 + (((c >>> 2) | (c << 30)) ^ ((c >>> 13) | (c << 19)) ^ ((c >>> 22) | (c << 10))) + ((c & d) ^ (c & e) ^ (d & e))) | 0;
    t1 = (a + (((f >>> 6) | (f << 26)) ^ ((f >>> 11) | (f << 21)) ^ ((f >>> 25) | (f << 7))) + ((f & g) ^ (~f & hh)) + K[i + 7]! + W[i + 7]!) | 0;
    e = (e + t1) | 0;
    a = (t1 + (((bb >>> 2) | (bb << 30)) ^ ((bb >>> 13) | (bb << 19)) ^ ((bb >>> 22) | (bb << 10))) + ((bb & c) ^ (bb & d) ^ (c & d))) | 0;
  }
  h[ho] = (h[ho]! + a) | 0;
  h[ho + 1] = (h[ho + 1]! + bb) | 0;
  h[ho + 2] = (h[ho + 2]! + c) | 0;
  h[ho + 3] = (h[ho + 3]! + d) | 0;
  h[ho + 4] = (h[ho + 4]! + e) | 0;
  h[ho + 5] = (h[ho + 5]! + f) | 0;
  h[ho + 6] = (h[ho + 6]! + g) | 0;
  h[ho + 7] = (h[ho + 7]! + hh) | 0;
}

/** A message's length in bits (`totalBytes` bytes; 64-bit big-endian) into the 8 bytes before `t[last]`. */
function putLength(t: Uint8Array, last: number, totalBytes: number): void {
  const bits = totalBytes * 8;
  const hi = Math.floor(bits / 0x100000000);
  t[last - 8] = hi >>> 24;
  t[last - 7] = hi >>> 16;
  t[last - 6] = hi >>> 8;
  t[last - 5] = hi;
  t[last - 4] = bits >>> 24;
  t[last - 3] = bits >>> 16;
  t[last - 2] = bits >>> 8;
  t[last - 1] = bits;
}

/**
 * The end of a message into the state `h`: data[off, end) (less than a block), 0x80, zeros and
 * the message's length (`totalBytes`, the blocks hashed before included), in one or two blocks
 * of `t` (2 x 64 bytes, scratch: whatever an earlier message left in it is overwritten or not
 * hashed).
 */
function finish(h: Int32Array, data: Uint8Array, off: number, end: number, totalBytes: number, t: Uint8Array): void {
  const rest = end - off;
  for (let i = 0; i < rest; i++) t[i] = data[off + i]!;
  t[rest] = 0x80;
  const last = rest < BLOCK - 8 ? BLOCK : 2 * BLOCK;
  // Only the padding between the 0x80 and the length must be zero (the bytes before are this
  // message's, those after the length are not hashed): no clearing of all 128 bytes per call.
  for (let i = rest + 1; i < last - 8; i++) t[i] = 0;
  putLength(t, last, totalBytes);
  compress(h, 0, t, 0);
  if (last > BLOCK) compress(h, 0, t, BLOCK);
}

/** The first `words` words of `h`, big-endian, into `out` at `at`. */
function putWords(h: Int32Array, words: number, out: Uint8Array, at: number): void {
  for (let i = 0; i < words; i++) {
    const w = h[i]!;
    out[at + i * 4] = w >>> 24;
    out[at + i * 4 + 1] = w >>> 16;
    out[at + i * 4 + 2] = w >>> 8;
    out[at + i * 4 + 3] = w;
  }
}

/** sha256's state and last blocks: it runs to completion, never re-entered (as compress). */
const SHA_H = new Int32Array(8);
const SHA_TAIL = new Uint8Array(2 * BLOCK);

/**
 * SHA-256 of `data` into `out` (32 bytes), as createHash('sha256') computes it, with no native
 * object per hash and nothing allocated.
 */
export function sha256<T extends Uint8Array>(data: Uint8Array, out: T): T {
  const h = SHA_H;
  h.set(IV);
  let off = 0;
  for (; data.length - off >= BLOCK; off += BLOCK) compress(h, 0, data, off);
  finish(h, data, off, data.length, data.length, SHA_TAIL);
  putWords(h, 8, out, 0);
  return out;
}

/**
 * HMAC's two padded-key blocks (RFC 2104: the key, `keyLength` <= 64 bytes at `at` of `key`,
 * zero-padded to a block, XOR 0x36 and 0x5c) hashed from the IV: the inner state into
 * pads[po, po + 8), the outer into pads[po + 8, po + 16). `block` (>= 64 bytes) is scratch.
 */
function hashPads(key: Uint8Array, at: number, keyLength: number, pads: Int32Array, po: number, block: Uint8Array): void {
  for (let i = 0; i < 8; i++) {
    pads[po + i] = IV[i]!;
    pads[po + 8 + i] = IV[i]!;
  }
  for (let i = 0; i < BLOCK; i++) block[i] = (i < keyLength ? key[at + i]! : 0) ^ 0x36;
  compress(pads, po, block, 0);
  for (let i = 0; i < BLOCK; i++) block[i] = (i < keyLength ? key[at + i]! : 0) ^ 0x5c;
  compress(pads, po + 8, block, 0);
}

/**
 * The outer hash's last block: room for the inner digest (32 bytes, written per MAC), then its
 * padding, the same for every MAC (the message is the opad block and the digest, 96 bytes), so
 * written once here.
 */
function outerBlock(): Uint8Array {
  const b = new Uint8Array(BLOCK);
  b[32] = 0x80;
  putLength(b, BLOCK, BLOCK + 32);
  return b;
}

/**
 * HMAC-SHA-256 of data[0, length) from hashed pads (hashPads at `po` of `pads`): the digest's
 * 8 words in `h`. `tail` (128 bytes) is scratch; `outer` is an outerBlock(), its first 32 bytes
 * overwritten.
 */
function macFromPads(pads: Int32Array, po: number, data: Uint8Array, length: number, h: Int32Array, tail: Uint8Array, outer: Uint8Array): void {
  // Inner hash: from the ipad block's state, the message (its length counts the ipad block).
  for (let i = 0; i < 8; i++) h[i] = pads[po + i]!;
  let off = 0;
  for (; length - off >= BLOCK; off += BLOCK) compress(h, 0, data, off);
  finish(h, data, off, length, BLOCK + length, tail);
  // Outer hash: from the opad block's state, the inner digest written straight into its block.
  putWords(h, 8, outer, 0);
  for (let i = 0; i < 8; i++) h[i] = pads[po + 8 + i]!;
  compress(h, 0, outer, 0);
}

/**
 * HMAC-SHA-256 under one fixed key (of any length), its padded-key blocks hashed once: for a
 * key used for every MAC a process makes (locatord's record key for Redis records and relay
 * messages), with no native object per MAC. Not re-entrant: every method runs to completion.
 */
export class KeyedHmac {
  private readonly pads = new Int32Array(16);
  private readonly h = new Int32Array(8);
  private readonly tail = new Uint8Array(2 * BLOCK);
  private readonly outer = outerBlock();

  constructor(key: Uint8Array) {
    // RFC 2104: a key longer than a block is replaced by its hash.
    const k = key.length > BLOCK ? sha256(key, new Uint8Array(32)) : key;
    hashPads(k, 0, k.length, this.pads, 0, this.tail);
  }

  /** The first `bytes` (a multiple of 4, <= 32) bytes of HMAC-SHA-256(key, data[0, length)) into `out` at `at`. */
  digestInto(data: Uint8Array, length: number, out: Uint8Array, at: number, bytes = 32): void {
    if (bytes % 4 !== 0 || bytes < 0 || bytes > 32) throw new RangeError('bytes must be a multiple of 4, at most 32');
    macFromPads(this.pads, 0, data, length, this.h, this.tail, this.outer);
    putWords(this.h, bytes >>> 2, out, at);
  }
}

/** Most bytes HKDF-SHA-256 can give (RFC 5869: 255 blocks of the hash's length). */
export const HKDF_MAX_BYTES = 255 * 32;

/** Throws the RangeError of an HKDF-SHA-256 output length outside 1..255 blocks (RFC 5869), for both implementations (hkdf.ts). */
export function checkHkdfLength(length: number): void {
  if (!Number.isInteger(length) || length < 1 || length > HKDF_MAX_BYTES) throw new RangeError(`HKDF length must be 1..${HKDF_MAX_BYTES}, not ${length}`);
}

/** hkdfSha256's state (it runs to completion, never re-entered): the salt's pads, then the PRK's. */
const HKDF_PADS = new Int32Array(32);
const HKDF_H = new Int32Array(8);
const HKDF_TAIL = new Uint8Array(2 * BLOCK);
const HKDF_OUTER = outerBlock();
const HKDF_PRK = new Uint8Array(32);
/** T(i-1) | info | i, for an info of up to 222 bytes (a longer one gets its own). */
const HKDF_MSG = new Uint8Array(256);

/**
 * HKDF-SHA-256 (RFC 5869): `length` bytes from `ikm` with `salt` and `info`, the same bytes as
 * node:crypto's hkdfSync('sha256', ikm, salt, info, length) (test/unit/hmac-sha256.test.ts
 * checks both on many lengths). In JavaScript because hkdfSync makes native key objects per
 * call: in a CPU profile of first REGISTERs it took 7.5% of locatord's thread, for the ~10
 * SHA-256 blocks the session keys' derivation is. Nothing is allocated but the result (and an
 * info longer than 222 bytes).
 */
export function hkdfSha256(ikm: Uint8Array, salt: Uint8Array, info: Uint8Array, length: number): Buffer {
  checkHkdfLength(length);
  // Extract: PRK = HMAC(salt, IKM). An empty salt is a key of zeros, as HMAC pads any key; one
  // longer than a block is replaced by its hash (RFC 2104).
  const key = salt.length > BLOCK ? sha256(salt, new Uint8Array(32)) : salt;
  hashPads(key, 0, key.length, HKDF_PADS, 0, HKDF_TAIL);
  macFromPads(HKDF_PADS, 0, ikm, ikm.length, HKDF_H, HKDF_TAIL, HKDF_OUTER);
  putWords(HKDF_H, 8, HKDF_PRK, 0);
  hashPads(HKDF_PRK, 0, 32, HKDF_PADS, 16, HKDF_TAIL);
  // Expand: T(i) = HMAC(PRK, T(i-1) | info | i), T(0) empty; T(i-1) is kept in msg[0, 32).
  const msg = 32 + info.length + 1 <= HKDF_MSG.length ? HKDF_MSG : new Uint8Array(32 + info.length + 1);
  msg.set(info, 32);
  // Its own memory (Buffer.alloc never cuts from Node's shared pool): keys may live long.
  const out = Buffer.alloc(length);
  for (let i = 1, at = 0; at < length; i++, at += 32) {
    msg[32 + info.length] = i;
    if (i === 1) macFromPads(HKDF_PADS, 16, msg.subarray(32), info.length + 1, HKDF_H, HKDF_TAIL, HKDF_OUTER);
    else macFromPads(HKDF_PADS, 16, msg, 32 + info.length + 1, HKDF_H, HKDF_TAIL, HKDF_OUTER);
    putWords(HKDF_H, 8, msg, 0);
    out.set(length - at >= 32 ? msg.subarray(0, 32) : msg.subarray(0, length - at), at);
  }
  // The PRK, its pads and the last block would let anyone who reads this process's memory later
  // derive the same keys: gone before returning (hkdfSync cleansed its own).
  HKDF_PRK.fill(0);
  HKDF_PADS.fill(0);
  HKDF_H.fill(0);
  HKDF_TAIL.fill(0);
  HKDF_OUTER.fill(0, 0, 32);
  msg.fill(0, 0, 32);
  return out;
}

/**
 * HMAC-SHA-256 under 32-byte keys, truncated to 16 bytes, with the hashed pads of up to
 * `entries` keys kept (a power of two; slot = the key's first bytes, which are uniformly random
 * for HKDF output; a key of another slot's owner evicts it). Memory: 96 bytes per entry,
 * allocated at construction. Not re-entrant across awaits: every method runs to completion.
 */
export class SessionMacs {
  private readonly mask: number;
  /** Per entry: the key it holds (32 bytes). */
  private readonly keys: Uint8Array;
  /** Per entry: inner state after the ipad block (8 words), then outer state after the opad block (8 words). */
  private readonly pads: Int32Array;
  private readonly used: Uint8Array;
  /** The running state of the MAC being computed. */
  private readonly h = new Int32Array(8);
  /** The last one or two blocks of a message, padded. */
  private readonly tail = new Uint8Array(2 * BLOCK);
  /** The outer hash's block: the inner hash's digest, padded. */
  private readonly outer = outerBlock();
  /** Pads computed (a key not cached): a hit rate for whoever sizes `entries`. */
  misses = 0;

  constructor(entries = 4096) {
    if (!Number.isInteger(entries) || entries < 1 || (entries & (entries - 1)) !== 0) throw new RangeError('entries must be a power of two');
    this.mask = entries - 1;
    this.keys = new Uint8Array(entries * KEY_BYTES);
    this.pads = new Int32Array(entries * 16);
    this.used = new Uint8Array(entries);
  }

  /** Whether `key` holds, from `at`, a key this class computes MACs under: 32 raw bytes (else use node:crypto). */
  static fits(key: unknown, at = 0): key is Uint8Array {
    return key instanceof Uint8Array && at >= 0 && key.length >= at + KEY_BYTES;
  }

  /** The offset in `pads` of `key`'s hashed pads, computed now if not cached. */
  private padsOf(key: Uint8Array, at: number): number {
    const slot = (key[at]! | (key[at + 1]! << 8) | (key[at + 2]! << 16)) & this.mask;
    const ko = slot * KEY_BYTES;
    const po = slot * 16;
    const keys = this.keys;
    if (this.used[slot] === 1) {
      // Every byte compared, no early exit: the time taken says nothing about how much of
      // another session's key the one asked for shares.
      let diff = 0;
      for (let i = 0; i < KEY_BYTES; i++) diff |= keys[ko + i]! ^ key[at + i]!;
      if (diff === 0) return po;
    }
    this.misses++;
    hashPads(key, at, KEY_BYTES, this.pads, po, this.tail);
    for (let i = 0; i < KEY_BYTES; i++) keys[ko + i] = key[at + i]!;
    this.used[slot] = 1;
    return po;
  }

  /** The first 4 words of HMAC-SHA-256(key, data[0, length)) in this.h[0..3]. */
  private compute(key: Uint8Array, at: number, data: Uint8Array, length: number): void {
    macFromPads(this.pads, this.padsOf(key, at), data, length, this.h, this.tail, this.outer);
  }

  /** Write the MAC of `datagram` (all of it but its last 16 bytes) into those 16 bytes. */
  seal(key: Uint8Array, datagram: Uint8Array, keyAt = 0): void {
    const end = datagram.length - TAG_BYTES;
    this.compute(key, keyAt, datagram, end);
    putWords(this.h, 4, datagram, end);
  }

  /** Whether the last 16 bytes of `datagram` are the MAC of the rest (every byte compared: no early exit). */
  verify(key: Uint8Array, datagram: Uint8Array, keyAt = 0): boolean {
    if (datagram.length < TAG_BYTES) return false;
    const end = datagram.length - TAG_BYTES;
    this.compute(key, keyAt, datagram, end);
    const h = this.h;
    let diff = 0;
    for (let i = 0; i < 4; i++) {
      const j = end + i * 4;
      diff |= h[i]! ^ ((datagram[j]! << 24) | (datagram[j + 1]! << 16) | (datagram[j + 2]! << 8) | datagram[j + 3]!);
    }
    return diff === 0;
  }
}
