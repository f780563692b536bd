// The JavaScript session MAC (src/wire/hmac-sha256.ts) against node:crypto's HMAC-SHA-256 on
// every datagram length around the block boundaries, with the pad cache hit, missed and evicted;
// its HKDF against node:crypto's hkdfSync.
import { createHash, createHmac, hkdfSync, randomBytes } from 'node:crypto';
import fc from 'fast-check';
import t from 'tap';
import { HKDF_MAX_BYTES, hkdfSha256, KeyedHmac, SessionMacs, sha256, TAG_BYTES } from '../../src/wire/hmac-sha256.js';

const reference = (key: Uint8Array, datagram: Uint8Array): Buffer =>
  createHmac('sha256', key).update(datagram.subarray(0, datagram.length - TAG_BYTES)).digest().subarray(0, TAG_BYTES);

t.test('seal writes what createHmac computes, for every length from 16 to 300 bytes', async (t) => {
  const macs = new SessionMacs(4);
  const key = randomBytes(32);
  let bad = 0;
  for (let n = TAG_BYTES; n <= 300; n++) {
    const d = randomBytes(n);
    macs.seal(key, d);
    if (!d.subarray(n - TAG_BYTES).equals(reference(key, d))) bad++;
    if (!macs.verify(key, d)) bad++;
  }
  t.equal(bad, 0);
  // One key: its pads were hashed once.
  t.equal(macs.misses, 1);
});

t.test('a large datagram (many blocks)', async (t) => {
  const macs = new SessionMacs();
  const key = randomBytes(32);
  const d = randomBytes(1400);
  macs.seal(key, d);
  t.ok(d.subarray(1400 - TAG_BYTES).equals(reference(key, d)));
});

t.test('verify refuses a flipped bit anywhere, a wrong key, a datagram shorter than a MAC', async (t) => {
  const macs = new SessionMacs(2);
  const key = randomBytes(32);
  const d = randomBytes(90);
  macs.seal(key, d);
  let accepted = 0;
  for (let bit = 0; bit < d.length * 8; bit++) {
    d[bit >> 3]! ^= 1 << (bit & 7);
    if (macs.verify(key, d)) accepted++;
    d[bit >> 3]! ^= 1 << (bit & 7);
  }
  t.equal(accepted, 0, 'no flipped bit verifies');
  t.ok(macs.verify(key, d));
  const other = Buffer.from(key);
  other[31]! ^= 1;
  t.notOk(macs.verify(other, d), 'another key (same cache slot) does not verify');
  t.notOk(macs.verify(key, d.subarray(0, 15)));
});

t.test('keys sharing a slot evict each other and still give the right MAC', async (t) => {
  // One entry: every key shares it.
  const macs = new SessionMacs(1);
  const keys = [randomBytes(32), randomBytes(32), randomBytes(32)];
  const d = randomBytes(60);
  for (let round = 0; round < 3; round++) {
    for (const k of keys) {
      const c = Buffer.from(d);
      macs.seal(k, c);
      t.ok(c.subarray(60 - TAG_BYTES).equals(reference(k, c)));
    }
  }
  t.equal(macs.misses, 9, 'each change of key hashed its pads again');
});

t.test('random keys, lengths and cache sizes match createHmac (fast-check, fixed seed)', async (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.uint8Array({ minLength: TAG_BYTES, maxLength: 600 }), fc.integer({ min: 0, max: 6 }), (key, bytes, log2) => {
      const macs = new SessionMacs(1 << log2);
      const d = Buffer.from(bytes);
      macs.seal(key, d);
      return d.subarray(d.length - TAG_BYTES).equals(reference(key, d)) && macs.verify(key, d);
    }),
    { seed: 1618, numRuns: 400 },
  );
  t.pass();
});

t.test('entries must be a power of two; only 32-byte keys fit', async (t) => {
  t.throws(() => new SessionMacs(3), RangeError);
  t.throws(() => new SessionMacs(0), RangeError);
  t.ok(SessionMacs.fits(randomBytes(32)));
  t.notOk(SessionMacs.fits(randomBytes(16)));
  t.notOk(SessionMacs.fits('x'.repeat(32)));
  t.ok(SessionMacs.fits(randomBytes(64), 32), 'a key at an offset of bytes holding several');
  t.notOk(SessionMacs.fits(randomBytes(64), 33), 'not past the end');
  t.notOk(SessionMacs.fits(randomBytes(64), -1));
});

t.test('a key read at an offset of a larger array (a table of keys) MACs as the key alone', async (t) => {
  const macs = new SessionMacs(8);
  const table = randomBytes(32 * 5);
  let bad = 0;
  for (const at of [0, 32, 64, 96, 128, 7]) {
    const key = table.subarray(at, at + 32);
    for (const n of [49, 69, 92, 300]) {
      const d = randomBytes(n);
      macs.seal(table, d, at);
      if (!d.subarray(n - TAG_BYTES).equals(reference(key, d))) bad++;
      if (!macs.verify(table, d, at) || !macs.verify(key, d)) bad++;
      // The neighbouring key never verifies it.
      if (macs.verify(table, d, at === 128 ? 96 : at + 32)) bad++;
    }
  }
  t.equal(bad, 0);
});

t.test('sha256 is createHash(\'sha256\'): every length from 0 to 300 bytes, and large inputs', async (t) => {
  let bad = 0;
  const lengths = [...Array.from({ length: 301 }, (_, n) => n), 1000, 4096, 65_537];
  for (const n of lengths) {
    const d = randomBytes(n);
    if (!Buffer.from(sha256(d, new Uint8Array(32))).equals(createHash('sha256').update(d).digest())) bad++;
  }
  t.equal(bad, 0, `${lengths.length} lengths`);
  // Into a Buffer (what viewOf passes), and back to back (its scratch state is reset each time).
  const a = sha256(Buffer.from('devloc'), Buffer.alloc(32));
  const b = sha256(Buffer.from('devloc'), Buffer.alloc(32));
  t.ok(a.equals(createHash('sha256').update('devloc').digest()) && a.equals(b));
});

t.test('KeyedHmac: what createHmac computes, for keys of 0-100 bytes (longer than a block: hashed) and messages of 0-300', async (t) => {
  let bad = 0;
  let cases = 0;
  for (const keyLength of [0, 1, 16, 31, 32, 33, 55, 63, 64, 65, 100]) {
    const key = randomBytes(keyLength);
    const mac = new KeyedHmac(key);
    for (let n = 0; n <= 300; n += n < 140 ? 1 : 7) {
      const data = randomBytes(n + 5);
      const want = createHmac('sha256', key).update(data.subarray(0, n)).digest();
      const whole = Buffer.alloc(40, 0xee);
      mac.digestInto(data, n, whole, 4);
      const cut = Buffer.alloc(16);
      mac.digestInto(data, n, cut, 0, 16);
      if (!whole.subarray(4, 36).equals(want) || whole[3] !== 0xee || whole[36] !== 0xee || !cut.equals(want.subarray(0, 16))) bad++;
      cases++;
    }
  }
  t.equal(bad, 0, `${cases} cases, none differs (nothing written outside the asked bytes)`);
  t.throws(() => new KeyedHmac(Buffer.alloc(32)).digestInto(Buffer.alloc(1), 1, Buffer.alloc(32), 0, 10), RangeError, 'a length that is not whole words');
});

t.test('one object, lengths near the block boundaries in an order that leaves bytes behind: each MAC as createHmac computes it', async (t) => {
  // The tail scratch is only partly rewritten per MAC (only the padding between 0x80 and the
  // length is zeroed): a longer or shorter message before must not show through. Lengths of data
  // MACed; each visited after a longer and after a shorter one.
  const near = [0, 1, 54, 55, 56, 57, 63, 64, 65, 118, 119, 120, 121, 127, 128, 129];
  const order = [...near, ...[...near].reverse(), ...near.flatMap((n, i) => [n, near[near.length - 1 - i]!])];
  const key = randomBytes(32);
  const macs = new SessionMacs(4);
  const keyed = new KeyedHmac(key);
  let bad = 0;
  let cases = 0;
  for (const [i, n] of order.entries()) {
    const data = randomBytes(n + TAG_BYTES);
    const want = createHmac('sha256', key).update(data.subarray(0, n)).digest();
    macs.seal(key, data);
    if (!data.subarray(n).equals(want.subarray(0, TAG_BYTES)) || !macs.verify(key, data)) bad++;
    // KeyedHmac: every truncation it allows, into a buffer whose other bytes must stay.
    const bytes = (i % 9) * 4;
    const out = Buffer.alloc(40, 0xee);
    keyed.digestInto(data, n, out, 3, bytes);
    if (!out.subarray(3, 3 + bytes).equals(want.subarray(0, bytes)) || out.subarray(0, 3).some((b) => b !== 0xee) || out.subarray(3 + bytes).some((b) => b !== 0xee)) bad++;
    // sha256 shares the same padding code (and its own scratch).
    if (!Buffer.from(sha256(data.subarray(0, n), new Uint8Array(32))).equals(createHash('sha256').update(data.subarray(0, n)).digest())) bad++;
    cases++;
  }
  t.equal(bad, 0, `${cases} MACs and hashes, none differs`);
});

t.test("hkdfSha256 is hkdfSync('sha256'): every output length to 300, salts (empty, longer than a block) and infos of every size", async (t) => {
  const reference = (ikm: Uint8Array, salt: Uint8Array, info: Uint8Array, n: number): Buffer => Buffer.from(hkdfSync('sha256', ikm, salt, info, n));
  let bad = 0;
  let runs = 0;
  const check = (ikm: Uint8Array, salt: Uint8Array, info: Uint8Array, n: number): void => {
    runs++;
    if (!hkdfSha256(ikm, salt, info, n).equals(reference(ikm, salt, info, n))) bad++;
  };
  const ikm = randomBytes(32);
  const salt = randomBytes(16);
  const info = Buffer.from('devloc-session-v1 locator');
  for (let n = 1; n <= 300; n++) check(ikm, salt, info, n);
  // Salt (the extract's key) and IKM across the block size; info across the expand's one-, two-
  // and three-block messages and past the 222 bytes of the shared buffer.
  for (const sl of [0, 1, 32, 63, 64, 65, 100, 200]) for (const il of [0, 1, 55, 56, 64, 119, 120, 300]) check(randomBytes(il), randomBytes(sl), info, 64);
  for (const fl of [0, 1, 22, 23, 54, 55, 86, 87, 150, 222, 223, 224, 400]) check(ikm, salt, randomBytes(fl), 96);
  check(ikm, salt, info, HKDF_MAX_BYTES);
  t.equal(bad, 0, `${runs} derivations, each the same bytes`);
  // Calls interleaved with other lengths leave nothing behind that changes the next.
  const a = hkdfSha256(ikm, salt, info, 64);
  hkdfSha256(randomBytes(100), randomBytes(100), randomBytes(300), 200);
  t.ok(hkdfSha256(ikm, salt, info, 64).equals(a), 'the same inputs, the same bytes, after a call with others');
  t.throws(() => hkdfSha256(ikm, salt, info, 0), RangeError);
  t.throws(() => hkdfSha256(ikm, salt, info, HKDF_MAX_BYTES + 1), RangeError);
  t.throws(() => hkdfSha256(ikm, salt, info, 1.5), RangeError);
});

t.test('hkdfSha256 gives RFC 5869 test case 1 (the standard devloc-protocol(7) names, not only node:crypto)', async (t) => {
  const ikm = Buffer.alloc(22, 0x0b);
  const salt = Buffer.from('000102030405060708090a0b0c', 'hex');
  const info = Buffer.from('f0f1f2f3f4f5f6f7f8f9', 'hex');
  const okm = '3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865';
  t.equal(hkdfSha256(ikm, salt, info, 42).toString('hex'), okm);
});
