// The strict CBOR decoder's refusals (each with its error code) and the deterministic encoder's
// exact bytes, checked against literal RFC 8949 encodings and against cbor2's CDE encoder.
import { readFileSync } from 'node:fs';
import { encode as cbor2Encode } from 'cbor2';
import fc from 'fast-check';
import t from 'tap';
import type { CborMap, CborValue } from '../../src/wire/cbor.js';
import { canonical, compareKeys, decodeStrict, defaultDecodeLimits, encodeArrayAround, encodeCanonical, encodeCbor } from '../../src/wire/cbor.js';
import { MAX_DEPTH, MAX_ITEMS } from '../../src/wire/constants.js';
import { decodeDatagram } from '../../src/wire/envelope.js';
import { ErrorCode } from '../../src/wire/errors.js';
import { vectorPath } from '../vectors/generate.js';

/** The type of `t` inside a subtest. */
type TapT = Parameters<Parameters<typeof t.test>[0]>[0];
const h = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const vectors = (JSON.parse(readFileSync(vectorPath('messages'), 'utf8')) as { vectors: { name: string; hex: string }[] }).vectors;

/** decodeStrict must refuse `bytes` with `code`, and must not throw doing so. */
function refuses(t: TapT, bytes: Uint8Array, code: number, what: string): void {
  let r: ReturnType<typeof decodeStrict> | undefined;
  t.doesNotThrow(() => {
    r = decodeStrict(bytes);
  }, `${what}: no throw`);
  t.same(r && !r.ok ? r.code : r, code, `${what}: refused with code ${code}`);
}

function accepts(t: TapT, bytes: Uint8Array, value: CborValue, what: string): void {
  const r = decodeStrict(bytes);
  t.ok(r.ok, `${what}: accepted${r.ok ? '' : ` (${r.reason})`}`);
  if (r.ok) t.same(r.value, value, `${what}: value`);
}

t.test('limits are the protocol constants', async (t) => {
  t.same(defaultDecodeLimits, { maxDepth: MAX_DEPTH, maxItems: MAX_ITEMS });
  t.equal(MAX_DEPTH, 8);
  t.equal(MAX_ITEMS, 600);
});

t.test('indefinite lengths are refused', async (t) => {
  refuses(t, h('5f 41 00 ff'), ErrorCode.MALFORMED, 'indefinite bstr');
  refuses(t, h('7f 61 61 ff'), ErrorCode.MALFORMED, 'indefinite tstr');
  refuses(t, h('9f 01 ff'), ErrorCode.MALFORMED, 'indefinite array');
  refuses(t, h('9f ff'), ErrorCode.MALFORMED, 'empty indefinite array');
  refuses(t, h('bf 01 02 ff'), ErrorCode.MALFORMED, 'indefinite map');
  refuses(t, h('82 01 9f ff'), ErrorCode.MALFORMED, 'nested indefinite array');
  refuses(t, h('1f'), ErrorCode.MALFORMED, 'uint with info 31');
  refuses(t, h('3f'), ErrorCode.MALFORMED, 'negint with info 31');
  refuses(t, h('ff'), ErrorCode.MALFORMED, 'a lone break');
  refuses(t, h('81 ff'), ErrorCode.MALFORMED, 'break as an array element');
});

t.test('reserved additional information is refused', async (t) => {
  for (const b of ['1c', '1d', '1e', '3c', '5c', '7d', '9e', 'bc', 'dc']) refuses(t, h(b), ErrorCode.MALFORMED, `initial byte ${b}`);
});

t.test('tags are refused', async (t) => {
  refuses(t, h('c0 74 323032362d30312d30315430303a30303a30305a'), ErrorCode.MALFORMED, 'tag 0 (date string)');
  refuses(t, h('c1 1a 6955b900'), ErrorCode.MALFORMED, 'tag 1 (epoch)');
  refuses(t, h('c2 41 01'), ErrorCode.MALFORMED, 'tag 2 (bignum)');
  refuses(t, h('d8 18 41 00'), ErrorCode.MALFORMED, 'tag 24 (embedded CBOR)');
  refuses(t, h('d9 d9f7 00'), ErrorCode.MALFORMED, 'self-described CBOR 55799');
  refuses(t, h('d2 84 40 a0 40 40'), ErrorCode.MALFORMED, 'tag 18 (tagged COSE_Sign1)');
  refuses(t, h('82 01 c1 00'), ErrorCode.MALFORMED, 'a tag nested in an array');
  refuses(t, h('a1 01 c1 00'), ErrorCode.MALFORMED, 'a tag as a map value');
});

t.test('floats, undefined and other simple values are refused', async (t) => {
  refuses(t, h('f9 3c00'), ErrorCode.MALFORMED, 'half float 1.0');
  refuses(t, h('fa 3f800000'), ErrorCode.MALFORMED, 'single float 1.0');
  refuses(t, h('fb 3ff0000000000000'), ErrorCode.MALFORMED, 'double float 1.0');
  refuses(t, h('f9 7e00'), ErrorCode.MALFORMED, 'NaN');
  refuses(t, h('f7'), ErrorCode.MALFORMED, 'undefined');
  refuses(t, h('f0'), ErrorCode.MALFORMED, 'simple(16)');
  refuses(t, h('f8 20'), ErrorCode.MALFORMED, 'simple(32), two-byte form');
  refuses(t, h('f8 14'), ErrorCode.MALFORMED, 'false in the (invalid) two-byte form');
  refuses(t, h('82 01 f7'), ErrorCode.MALFORMED, 'undefined in an array');
  accepts(t, h('f4'), false, 'false');
  accepts(t, h('f5'), true, 'true');
  accepts(t, h('f6'), null, 'null');
});

t.test('map keys: duplicates and non int/text keys are refused', async (t) => {
  refuses(t, h('a2 01 00 01 01'), ErrorCode.MALFORMED, 'duplicate int key');
  refuses(t, h('a2 20 00 20 01'), ErrorCode.MALFORMED, 'duplicate negative key');
  refuses(t, h('a2 61 61 00 61 61 01'), ErrorCode.MALFORMED, 'duplicate text key');
  refuses(t, h('a3 01 00 02 00 01 00'), ErrorCode.MALFORMED, 'duplicate, not adjacent');
  refuses(t, h('81 a1 01 a2 05 00 05 00'), ErrorCode.MALFORMED, 'duplicate in a nested map');
  refuses(t, h('a2 18 01 00 01 00'), ErrorCode.MALFORMED, 'duplicate via a non-preferred head (18 01 = 01)');
  refuses(t, h('a1 41 00 00'), ErrorCode.MALFORMED, 'bstr key');
  refuses(t, h('a1 f5 00'), ErrorCode.MALFORMED, 'bool key');
  refuses(t, h('a1 f6 00'), ErrorCode.MALFORMED, 'null key');
  refuses(t, h('a1 80 00'), ErrorCode.MALFORMED, 'array key');
  refuses(t, h('a1 a0 00'), ErrorCode.MALFORMED, 'map key');
  // Same-looking keys of different types are different keys.
  accepts(t, h('a2 01 00 61 31 01'), new Map<number | string, CborValue>([[1, 0], ['1', 1]]), 'int 1 and text "1"');
  accepts(t, h('a2 01 00 20 01'), new Map<number | string, CborValue>([[1, 0], [-1, 1]]), '1 and -1');
});

t.test('trailing bytes are refused', async (t) => {
  refuses(t, h('00 00'), ErrorCode.MALFORMED, 'two items');
  refuses(t, h('80 00'), ErrorCode.MALFORMED, 'byte after an array');
  for (const v of vectors.slice(0, 4)) {
    refuses(t, Buffer.concat([h(v.hex), h('00')]), ErrorCode.MALFORMED, `${v.name} + 00`);
    const d = decodeDatagram(Buffer.concat([h(v.hex), h('f6')]));
    t.same(d.ok ? 'ok' : d.code, v.name === 'AUTH_REQUEST' ? ErrorCode.TOO_LARGE : ErrorCode.MALFORMED, `${v.name} + f6: decodeDatagram refuses`);
  }
});

t.test('truncation at every cut point of every vector is refused (MALFORMED)', async (t) => {
  let cuts = 0;
  let wrong = 0;
  for (const v of vectors) {
    const bytes = h(v.hex);
    for (let cut = 0; cut < bytes.length; cut++) {
      const part = bytes.subarray(0, cut);
      const r = decodeStrict(part);
      const d = decodeDatagram(part);
      cuts++;
      if (r.ok || r.code !== ErrorCode.MALFORMED || d.ok || d.code !== ErrorCode.MALFORMED) {
        wrong++;
        if (wrong < 5) t.fail(`${v.name} cut at ${cut}: ${JSON.stringify(r.ok ? 'accepted' : r.code)}`);
      }
    }
  }
  t.equal(wrong, 0, `all ${cuts} cuts refused with MALFORMED`);
  t.ok(cuts > 4000, 'many cuts tried');
});

t.test('truncated heads and lengths', async (t) => {
  for (const b of ['18', '19 00', '1a 00 00 00', '1b 00 00 00 00 00 00 00', '38', '58', '59 00', '78', '98', 'b8', '41', '45 00 00 00 00', '62 61', '82 01', 'a1 01', 'a2 01 01 02', '']) {
    refuses(t, h(b), ErrorCode.MALFORMED, `"${b}"`);
  }
  // Counts far beyond the bytes present are refused up front, without allocating.
  refuses(t, h('9a ffffffff 00'), ErrorCode.MALFORMED, 'array count 2^32-1');
  refuses(t, h('bb 001fffffffffffff 00'), ErrorCode.MALFORMED, 'map count 2^53-1');
  refuses(t, h('5b 001fffffffffffff 00'), ErrorCode.MALFORMED, 'bstr length 2^53-1');
  refuses(t, h('5b ffffffffffffffff 00'), ErrorCode.MALFORMED, 'bstr length 2^64-1');
});

t.test('nesting deeper than 8 is refused (TOO_LARGE)', async (t) => {
  const nest = (open: string, n: number, inner: string): Buffer => h(open.repeat(n) + inner);
  // Depth counts arrays and maps; the top level is depth 1.
  accepts(t, nest('81', 7, '80'), [[[[[[[[]]]]]]]], '8 nested arrays, the innermost empty');
  refuses(t, nest('81', 8, '80'), ErrorCode.TOO_LARGE, '9 nested arrays');
  accepts(t, nest('81', 7, '81 00'), [[[[[[[[0]]]]]]]], '8 arrays holding a scalar');
  refuses(t, nest('81', 8, '81 00'), ErrorCode.TOO_LARGE, '9 arrays holding a scalar');
  refuses(t, nest('a1 00', 8, 'a0'), ErrorCode.TOO_LARGE, '9 nested maps');
  t.ok(decodeStrict(nest('a1 00', 7, 'a0')).ok, '8 nested maps');
  refuses(t, nest('81 a1 00', 4, '80'), ErrorCode.TOO_LARGE, 'arrays and maps alternating, 9 deep');
  t.ok(decodeStrict(nest('81 a1 00', 4, '')).ok === false, 'an unfinished nest is refused too');
  refuses(t, nest('81', 1000, '00'), ErrorCode.TOO_LARGE, '1000 deep: refused, no stack overflow');
  const custom = decodeStrict(h('81 81 00'), { maxDepth: 2, maxItems: 600 });
  t.ok(custom.ok, 'maxDepth 2: two levels');
  const over = decodeStrict(h('81 81 81 00'), { maxDepth: 2, maxItems: 600 });
  t.same(over.ok ? 'ok' : over.code, ErrorCode.TOO_LARGE, 'maxDepth 2: three levels refused');
});

t.test('more than 600 items is refused (TOO_LARGE)', async (t) => {
  const arr = (n: number): Buffer => Buffer.concat([h('99'), Buffer.from([n >> 8, n & 0xff]), Buffer.alloc(n)]);
  // The array itself is an item: 599 elements + 1 = 600 items.
  const ok = decodeStrict(arr(599));
  t.ok(ok.ok && Array.isArray(ok.value) && ok.value.length === 599, '600 items accepted');
  refuses(t, arr(600), ErrorCode.TOO_LARGE, '601 items');
  // Map keys are items: a map of 300 pairs is 601 items.
  const map = (n: number): Buffer => {
    const parts = [h('b9'), Buffer.from([n >> 8, n & 0xff])];
    for (let i = 0; i < n; i++) parts.push(Buffer.from(encodeCbor(i)), h('f6'));
    return Buffer.concat(parts);
  };
  t.ok(decodeStrict(map(299)).ok, 'map of 299 pairs (599 items)');
  refuses(t, map(300), ErrorCode.TOO_LARGE, 'map of 300 pairs (601 items)');
  const tiny = decodeStrict(h('83 01 02 03'), { maxDepth: 8, maxItems: 3 });
  t.same(tiny.ok ? 'ok' : tiny.code, ErrorCode.TOO_LARGE, 'maxItems is a hard limit (4 items > 3)');
  t.ok(decodeStrict(h('82 01 02'), { maxDepth: 8, maxItems: 3 }).ok, 'exactly maxItems is fine');
});

t.test('invalid UTF-8 in text strings is refused', async (t) => {
  refuses(t, h('62 c3 28'), ErrorCode.MALFORMED, 'bad continuation');
  refuses(t, h('61 80'), ErrorCode.MALFORMED, 'lone continuation byte');
  refuses(t, h('62 c0 80'), ErrorCode.MALFORMED, 'overlong NUL');
  refuses(t, h('63 ed a0 80'), ErrorCode.MALFORMED, 'UTF-16 surrogate');
  refuses(t, h('64 f4 90 80 80'), ErrorCode.MALFORMED, 'beyond U+10FFFF');
  refuses(t, h('61 ff'), ErrorCode.MALFORMED, 'byte ff');
  refuses(t, h('62 e2 82'), ErrorCode.MALFORMED, 'truncated sequence');
  refuses(t, h('a1 62 c3 28 00'), ErrorCode.MALFORMED, 'invalid UTF-8 in a map key');
  accepts(t, h('64 5a 6f c3 ab'), 'Zoë', 'valid two-byte sequence');
  accepts(t, h('64 f0 9f 98 80'), '\u{1F600}', 'valid four-byte sequence');
  accepts(t, h('63 ef bb bf'), '\uFEFF', 'a BOM is text, kept');
  // The same bytes as a bstr are fine.
  accepts(t, h('42 c3 28'), h('c3 28'), 'bstr is not UTF-8 checked');
});

t.test('integers beyond ±(2^53-1) are refused', async (t) => {
  accepts(t, h('1b 001fffffffffffff'), Number.MAX_SAFE_INTEGER, '2^53-1');
  refuses(t, h('1b 0020000000000000'), ErrorCode.MALFORMED, '2^53');
  refuses(t, h('1b 0020000000000001'), ErrorCode.MALFORMED, '2^53+1');
  refuses(t, h('1b ffffffffffffffff'), ErrorCode.MALFORMED, '2^64-1');
  refuses(t, h('1b 8000000000000000'), ErrorCode.MALFORMED, '2^63');
  accepts(t, h('3b 001ffffffffffffe'), -Number.MAX_SAFE_INTEGER, '-(2^53-1)');
  refuses(t, h('3b 001fffffffffffff'), ErrorCode.MALFORMED, '-2^53');
  refuses(t, h('3b ffffffffffffffff'), ErrorCode.MALFORMED, '-2^64');
  accepts(t, h('1b 0000000100000000'), 2 ** 32, '2^32 in 8 bytes');
  accepts(t, h('1a ffffffff'), 2 ** 32 - 1, '2^32-1 in 4 bytes');
  accepts(t, h('3a ffffffff'), -(2 ** 32), '-2^32');
  accepts(t, h('39 ffff'), -65536, '-65536');
  accepts(t, h('38 ff'), -256, '-256');
  accepts(t, h('20'), -1, '-1');
});

t.test('decodeStrict never throws on short random inputs', async (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 40 }), (bytes) => {
      const r = decodeStrict(bytes);
      return r.ok || (typeof r.code === 'number' && typeof r.reason === 'string');
    }),
    { numRuns: 3000, seed: 8949 },
  );
  t.pass('no throw');
});

// ---------------------------------------------------------------------------------------------
// Encoder.

t.test('encodeArrayAround: the same bytes as encoding the whole array (a push from its pre-encoded body)', async (t) => {
  fc.assert(
    fc.property(
      fc.array(fc.oneof(fc.maxSafeNat(), fc.uint8Array({ maxLength: 300 }), fc.string()), { maxLength: 4 }),
      fc.oneof(fc.maxSafeNat(), fc.uint8Array({ maxLength: 300 }), fc.dictionary(fc.string({ maxLength: 4 }), fc.nat())),
      fc.array(fc.oneof(fc.maxSafeNat(), fc.tuple(fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.maxSafeNat(), fc.uint8Array({ minLength: 16, maxLength: 16 }))), { maxLength: 2 }),
      (before, middle, after) => {
        const mid: CborValue = typeof middle === 'object' && !(middle instanceof Uint8Array) ? new Map(Object.entries(middle)) : middle;
        const whole = encodeCbor([...before, mid, ...after] as CborValue[]);
        return encodeArrayAround(before, encodeCbor(mid), after as CborValue[]).equals(whole);
      },
    ),
    { numRuns: 2000, seed: 1818 },
  );
  t.pass('equal bytes');
});

t.test('shortest heads at every boundary (literal RFC 8949 bytes and cbor2)', async (t) => {
  const uints: [number, string][] = [
    [0, '00'], [23, '17'], [24, '1818'], [255, '18ff'], [256, '190100'], [65535, '19ffff'], [65536, '1a00010000'],
    [2 ** 32 - 1, '1affffffff'], [2 ** 32, '1b0000000100000000'], [2 ** 53 - 1, '1b001fffffffffffff'],
    [2 ** 31, '1a80000000'], [0x12345678, '1a12345678'], [0x123456789a, '1b000000123456789a'],
  ];
  for (const [n, want] of uints) {
    t.equal(hex(encodeCbor(n)), want, `uint ${n}`);
    t.equal(hex(cbor2Encode(n, { cde: true })), want, `cbor2 agrees on ${n}`);
    t.same(decodeStrict(encodeCbor(n)), { ok: true, value: n }, `${n} decodes back`);
  }
  const negs: [number, string][] = [
    [-1, '20'], [-24, '37'], [-25, '3818'], [-256, '38ff'], [-257, '390100'], [-65536, '39ffff'], [-65537, '3a00010000'],
    [-(2 ** 32), '3affffffff'], [-(2 ** 32) - 1, '3b0000000100000000'], [-(2 ** 53 - 1), '3b001ffffffffffffe'],
  ];
  for (const [n, want] of negs) {
    t.equal(hex(encodeCbor(n)), want, `negint ${n}`);
    t.equal(hex(cbor2Encode(n, { cde: true })), want, `cbor2 agrees on ${n}`);
    t.same(decodeStrict(encodeCbor(n)), { ok: true, value: n }, `${n} decodes back`);
  }
  // bstr heads; tstr heads are 0x20 higher, array heads 0x40 higher.
  const lengths: [number, string][] = [[0, '40'], [23, '57'], [24, '5818'], [255, '58ff'], [256, '590100'], [65535, '59ffff'], [65536, '5a00010000']];
  const shift = (head: string, by: number): string => (parseInt(head.slice(0, 2), 16) + by).toString(16) + head.slice(2);
  for (const [len, head] of lengths) {
    const b = encodeCbor(new Uint8Array(len));
    t.equal(hex(b.subarray(0, b.length - len)), head, `bstr length ${len}`);
    const s = encodeCbor('a'.repeat(len));
    t.equal(hex(s.subarray(0, s.length - len)), shift(head, 0x20), `tstr length ${len}`);
    const a = encodeCbor(new Array<number>(len).fill(0));
    t.equal(hex(a.subarray(0, a.length - len)), shift(head, 0x40), `array length ${len}`);
    t.equal(hex(b), hex(cbor2Encode(new Uint8Array(len), { cde: true })), `cbor2 agrees on bstr ${len}`);
    t.equal(hex(s), hex(cbor2Encode('a'.repeat(len), { cde: true })), `cbor2 agrees on tstr ${len}`);
  }
  const big = encodeCbor(new Uint8Array(65536));
  t.equal(big.length, 5 + 65536);
  const m = new Map<number, number>(Array.from({ length: 24 }, (_, i) => [i, 0]));
  t.equal(hex(encodeCbor(m).subarray(0, 2)), 'b818', 'map of 24 pairs: b8 18');
  t.equal(hex(encodeCbor('Zoë')), '645a6fc3ab', 'tstr length counts UTF-8 bytes');
  t.equal(hex(encodeCbor([false, true, null])), '83f4f5f6', 'simple values');
});

t.test('encoder refuses values outside the subset (TypeError)', async (t) => {
  for (const v of [2 ** 53, -(2 ** 53), 1.5, NaN, Infinity, -Infinity]) {
    t.throws(() => encodeCbor(v), TypeError, `number ${v}`);
  }
  t.throws(() => encodeCbor(undefined as unknown as CborValue), TypeError, 'undefined');
  t.throws(() => encodeCbor(1n as unknown as CborValue), TypeError, 'bigint');
  t.throws(() => encodeCbor({ a: 1 } as unknown as CborValue), TypeError, 'plain object');
  t.equal(hex(encodeCbor(-0)), '00', '-0 is 0');
});

const KEYS: (number | string)[] = [
  0, 1, 10, 23, 24, 100, 255, 256, 1000, 65535, 65536, 2 ** 32, -1, -2, -24, -25, -100, -256, -257, -1000, -(2 ** 32) - 1,
  '', 'a', 'b', 'z', 'aa', 'ab', 'ba', 'zz', 'aaa', 'A', 'Z', 'é', 'ë', 'ab\u0000', 'x'.repeat(23), 'x'.repeat(24), 'y'.repeat(24), 'x'.repeat(256),
];

t.test('key order: ints, then negative ints, then text; as cbor2 sorts them', async (t) => {
  const shuffled = [...KEYS].reverse();
  const map: CborMap = new Map(shuffled.map((k, i) => [k, i]));
  const ours = encodeCanonical(map);
  t.equal(hex(ours), hex(cbor2Encode(map, { cde: true })), 'encodeCanonical = cbor2 CDE');
  const order = [...(decodeStrict(ours) as { ok: true; value: CborMap }).value.keys()];
  t.same(order.slice(0, 12), [0, 1, 10, 23, 24, 100, 255, 256, 1000, 65535, 65536, 2 ** 32], 'uints ascending');
  t.same(order.slice(12, 21), [-1, -2, -24, -25, -100, -256, -257, -1000, -(2 ** 32) - 1], 'then negatives, -1 first');
  t.same(order.slice(21, 24), ['', 'A', 'Z'], 'then text: shorter first, then bytewise');
  t.equal(order.indexOf('z') < order.indexOf('aa'), true, '"z" before "aa" (length first)');
  t.ok(order.indexOf('ë') > order.indexOf('zz') && order.indexOf('ë') < order.indexOf('aaa'), '"ë" is 2 bytes (c3 ab): after "zz", before "aaa"');
  t.equal(order.indexOf('é') < order.indexOf('ë'), true, 'é (c3 a9) before ë (c3 ab)');
  // compareKeys is a total order agreeing with bytewise order of the encodings.
  for (const a of KEYS) {
    for (const b of KEYS) {
      const want = Buffer.compare(encodeCbor(a), encodeCbor(b));
      if (Math.sign(compareKeys(a, b)) !== want) t.fail(`compareKeys(${JSON.stringify(a)}, ${JSON.stringify(b)})`);
    }
  }
  t.pass('compareKeys agrees with bytewise order for every pair');
});

t.test('canonical() sorts nested maps; encodeCbor keeps insertion order', async (t) => {
  const inner = new Map<number | string, CborValue>([['b', 1], [2, 2], ['a', 3]]);
  const v: CborValue = [new Map<number | string, CborValue>([[3, inner], [1, [inner]]])];
  t.equal(hex(encodeCbor(new Map([[2, 0], [1, 0]]))), 'a202000100', 'encodeCbor: insertion order');
  t.equal(hex(encodeCanonical(v)), hex(cbor2Encode(v, { cde: true })), 'encodeCanonical sorts at every level');
  t.equal(hex(encodeCbor(canonical(v))), hex(encodeCanonical(v)));
  t.equal(hex(encodeCanonical(new Map([[2, 3], [1, 1]]))), 'a201010203');
});

t.test('random maps: encodeCanonical equals cbor2 CDE and decodes back', async (t) => {
  const key = fc.oneof(fc.integer({ min: -(2 ** 40), max: 2 ** 40 }), fc.string({ maxLength: 30, unit: 'grapheme' }));
  const scalar = fc.oneof(fc.maxSafeInteger(), fc.string({ maxLength: 10 }), fc.boolean(), fc.constant(null), fc.uint8Array({ maxLength: 10 }));
  fc.assert(
    fc.property(fc.uniqueArray(fc.tuple(key, scalar), { selector: ([k]) => (typeof k === 'number' ? `n${k}` : `s${k}`), maxLength: 30 }), (pairs) => {
      const map: CborMap = new Map(pairs);
      const ours = encodeCanonical(map);
      const theirs = Buffer.from(cbor2Encode(map, { cde: true }));
      const back = decodeStrict(ours, { maxDepth: 8, maxItems: 10_000 });
      return ours.equals(theirs) && back.ok && Buffer.from(encodeCanonical(back.value)).equals(ours);
    }),
    { numRuns: 200, seed: 4221 },
  );
  t.pass('agree');
});
