// checkFields / checkValue (src/wire/schema.ts): a typed body checked against its field list
// without encoding it. Every field type kind at its bound and one past it, the reason naming the
// path; the words are decode's (one rule, one place); and, over the catalog's own field lists, a
// body is accepted exactly when its encoding decodes (seeded, so a failure reproduces).
import fc from 'fast-check';
import t from 'tap';
import { authGrantFields, authInnerFields, catalog, MessageType, presenceRecordFields } from '../../src/wire/catalog.js';
import type { CborMap } from '../../src/wire/cbor.js';
import { decodeStrict } from '../../src/wire/cbor.js';
import type { Field, FieldType } from '../../src/wire/schema.js';
import { checkFields, checkValue, decodeFields, encodeBody, pickFields } from '../../src/wire/schema.js';

const reason = (r: { ok: boolean; reason?: string }): string => (r.ok ? 'accepted' : r.reason!);
const check = (type: FieldType, v: unknown): string => reason(checkValue(type, v, 'x'));

t.test('uint: 0..max, whole and safe', async (t) => {
  const u = { t: 'uint', max: 5 } as const;
  t.equal(check(u, 5), 'accepted', 'at max');
  t.equal(check(u, 0), 'accepted', '0');
  t.equal(check(u, 6), 'x: > 5', 'past max');
  for (const v of [-1, 1.5, Number.NaN, Infinity, '1', null, true]) t.equal(check(u, v), 'x: expected uint', `refused: ${String(v)}`);
  t.equal(check({ t: 'uint' }, Number.MAX_SAFE_INTEGER), 'accepted', 'no max: the largest safe integer');
  t.equal(check({ t: 'uint' }, Number.MAX_SAFE_INTEGER + 1), 'x: expected uint', 'beyond it (encode cannot write it)');
});

t.test('bool', async (t) => {
  t.equal(check({ t: 'bool' }, false), 'accepted');
  t.equal(check({ t: 'bool' }, 0), 'x: expected bool');
});

t.test('tstr: bytes of UTF-8, not characters', async (t) => {
  const s = { t: 'tstr', max: 4 } as const;
  t.equal(check(s, 'éé'), 'accepted', '4 bytes');
  t.equal(check(s, 'ééx'), 'x: text longer than 4 bytes', '5 bytes, 3 characters');
  t.equal(check(s, 4), 'x: expected text');
});

t.test('bstr: min..max bytes', async (t) => {
  const b = { t: 'bstr', min: 2, max: 4 } as const;
  t.equal(check(b, new Uint8Array(2)), 'accepted', 'at min');
  t.equal(check(b, Buffer.alloc(4)), 'accepted', 'at max (a Buffer)');
  t.equal(check(b, new Uint8Array(1)), 'x: byte length 1 outside 2..4');
  t.equal(check(b, new Uint8Array(5)), 'x: byte length 5 outside 2..4');
  t.equal(check(b, [1, 2]), 'x: expected bytes');
});

t.test('addr: a literal IP and a port 0..65535', async (t) => {
  const a = { t: 'addr' } as const;
  t.equal(check(a, { ip: '192.0.2.1', port: 65535 }), 'accepted');
  t.equal(check(a, { ip: '2001:db8::1', port: 0 }), 'accepted');
  t.equal(check(a, { ip: '192.0.2.1', port: 65536 }), 'x: bad port');
  t.equal(check(a, { ip: '192.0.2.1', port: 1.5 }), 'x: bad port');
  t.equal(check(a, { ip: 'host.example', port: 1 }), 'x: ip must be a literal IPv4 or IPv6 address');
  t.equal(check(a, { ip: new Uint8Array(4), port: 1 }), 'x: ip must be a literal IPv4 or IPv6 address');
  t.equal(check(a, [new Uint8Array(4), 1]), 'x: expected an address {ip, port}', 'the decoded form is not a typed body');
});

t.test('array: at most max elements, each of its type', async (t) => {
  const a = { t: 'array', of: { t: 'tstr', max: 1 }, max: 2 } as const;
  t.equal(check(a, ['a', 'b']), 'accepted');
  t.equal(check(a, ['a', 'b', 'c']), 'x: more than 2 elements');
  t.equal(check(a, ['a', 'bc']), 'x[1]: text longer than 1 bytes');
  t.equal(check(a, 'ab'), 'x: expected array', 'a string is no array (encode would write its characters)');
});

t.test('struct: required fields, nested paths, unknown keys ignored', async (t) => {
  const inner = [{ key: 1, name: 'n', type: { t: 'uint', max: 1 }, doc: '' }] as const satisfies readonly Field[];
  const fields = [
    { key: 1, name: 'a', type: { t: 'tstr', max: 2 }, required: true, doc: '' },
    { key: 2, name: 's', type: { t: 'struct', fields: inner }, doc: '' },
  ] as const satisfies readonly Field[];
  t.same(checkFields(fields, { a: 'ok', s: { n: 1 }, extra: new Map() }), { ok: true, value: { a: 'ok', s: { n: 1 } } }, 'the value: the named fields');
  t.equal(reason(checkFields(fields, { s: { n: 1 } })), 'body.a (key 1) missing', 'path defaults to body');
  t.equal(reason(checkFields(fields, { a: undefined })), 'body.a (key 1) missing', 'undefined is absent, as encode reads it');
  t.equal(reason(checkFields(fields, { a: 'ok', s: { n: 2 } }, 'options')), 'options.s.n: > 1');
  t.equal(reason(checkFields(fields, { a: 'abc' }, '')), 'a: text longer than 2 bytes', 'path "": the field name alone');
  t.equal(reason(checkFields(fields, Object.assign(Object.create(null) as object, { a: 'ok' }))), 'accepted', 'a null-prototype object');
  for (const v of [null, 'a', [], new Map([[1, 'ok']]), new Date()]) {
    t.equal(reason(checkFields(fields, v)), 'body: expected an object', `refused: ${Object.prototype.toString.call(v)}`);
  }
});

t.test('props: count, names, values; __proto__ reserved', async (t) => {
  const p = { t: 'props', max: 2 } as const;
  t.equal(check(p, { ['k'.repeat(32)]: 'v'.repeat(64), n: -3 }), 'accepted', 'a 32-byte name, a 64-byte value, a negative int');
  t.equal(check(p, { a: 1, b: true, c: 'x' }), 'x: more than 2 properties');
  t.equal(check(p, { ['k'.repeat(33)]: 1 }), 'x: property names are text of 1..32 bytes');
  t.equal(check(p, { '': 1 }), 'x: property names are text of 1..32 bytes');
  t.equal(check(p, JSON.parse('{"__proto__": 1}')), 'x: reserved property name');
  t.equal(check(p, { k: 'v'.repeat(65) }), 'x.k: value must be text (<= 64 B), int or bool');
  for (const v of [1.5, null, {}, [1], Number.MAX_SAFE_INTEGER + 1]) t.equal(check(p, { k: v }), 'x.k: value must be text (<= 64 B), int or bool', `refused: ${JSON.stringify(v)}`);
  t.equal(check(p, new Map([['k', 1]])), 'x: expected an object', 'a Map (encode would write it empty)');
});

t.test('the same words as decode: one rule, one place', async (t) => {
  const fields = pickFields(catalog[MessageType.MATCH_SUBMIT].fields, ['mediaId', 'minParty', 'attrs']);
  const cases: [Record<string, unknown>, CborMap][] = [
    [{ mediaId: 'm'.repeat(65) }, new Map([[3, 'm'.repeat(65)]])],
    [{ mediaId: 'm', minParty: 65 }, new Map<number, string | number>([[3, 'm'], [5, 65]])],
    [{ mediaId: 'm', attrs: { k: 'v'.repeat(65) } }, new Map<number, string | CborMap>([[3, 'm'], [7, new Map([['k', 'v'.repeat(65)]])]])],
  ];
  for (const [body, map] of cases) t.equal(reason(checkFields(fields, body)), reason(decodeFields(fields, map)), reason(decodeFields(fields, map)));
  t.throws(() => pickFields(fields, ['nope']), TypeError, 'pickFields: an unknown name is a programming error');
});

// ---------------------------------------------------------------------------------------------
// The property: over every field list of the catalog, checkFields accepts a body exactly when
// encodeBody writes it and decodeFields takes the bytes back, and refuses it in decode's words
// when the encoding is written but refused. The values sit at, just past or off the bounds.
// Struct, props and array values are always objects and arrays: for another value encode writes
// what the check refuses (an empty map, a string's characters), the check being the stricter.

const MAX = Number.MAX_SAFE_INTEGER;
const textOf = (bytes: number): string => 'é'.repeat(bytes >> 1) + 'x'.repeat(bytes & 1);

function nearOf(type: FieldType): fc.Arbitrary<unknown> {
  switch (type.t) {
    case 'uint': {
      const max = type.max ?? MAX;
      return fc.oneof(fc.constantFrom(0, max, max + 1, -1, 0.5, 'x', true), fc.integer({ min: 0, max }));
    }
    case 'bool':
      return fc.constantFrom(true, false, 0, 'true', null);
    case 'tstr':
      return fc.oneof(fc.constantFrom(textOf(type.max), textOf(type.max + 1), '', 7, new Uint8Array(1)), fc.string({ maxLength: type.max }));
    case 'bstr':
      return fc.constantFrom(...[type.min ?? 0, type.max, type.max + 1, (type.min ?? 1) - 1].filter((n) => n >= 0).map((n) => new Uint8Array(n)), 'bytes');
    case 'addr':
      return fc.constantFrom({ ip: '192.0.2.1', port: 65535 }, { ip: '2001:db8::2', port: 0 }, { ip: '192.0.2.1', port: 65536 }, { ip: '192.0.2.1', port: -1 }, { ip: 'host.example', port: 1 }, 'addr');
    case 'array':
      return fc.oneof(
        fc.array(nearOf(type.of), { maxLength: Math.min(type.max, 3) }),
        fc.tuple(nearOf(type.of), fc.constantFrom(type.max, type.max + 1)).map(([x, n]) => new Array<unknown>(n).fill(x)),
      );
    case 'struct':
      return bodyOf(type.fields);
    case 'props':
      return fc.oneof(
        fc.dictionary(
          fc.constantFrom('a', 'b', 'k'.repeat(32), 'k'.repeat(33), ''),
          fc.constantFrom('v', textOf(64), textOf(65), -5, MAX, 0.5, true, null),
          { maxKeys: 3 },
        ),
        fc.constantFrom(type.max, type.max + 1).map((n) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`p${i}`, i]))),
        fc.constant(JSON.parse('{"__proto__": "x"}') as unknown),
      );
  }
}

/** Bodies of a field list: any field may be missing (required ones too), plus an unknown key now and then. */
function bodyOf(fields: readonly Field[]): fc.Arbitrary<Record<string, unknown>> {
  const shape: Record<string, fc.Arbitrary<unknown>> = { unknownKey: fc.constant('ignored') };
  for (const f of fields) shape[f.name] = nearOf(f.type);
  return fc.record(shape, { requiredKeys: [] });
}

/** The reason decode gives for the encoding of `body`: 'accepted', a reason, or 'not encoded'. */
function roundTrip(fields: readonly Field[], body: Record<string, unknown>): string {
  let bytes: Buffer;
  try {
    bytes = encodeBody(fields, body);
  } catch {
    return 'not encoded';
  }
  const d = decodeStrict(bytes, { maxDepth: 64, maxItems: 1_000_000 });
  if (!d.ok || !(d.value instanceof Map)) return `not CBOR of a map: ${d.ok ? typeof d.value : d.reason}`;
  return reason(decodeFields(fields, d.value));
}

t.test('checkFields accepts exactly what encode-then-decode accepts, for the catalog\'s field lists', async (t) => {
  const lists: [string, readonly Field[]][] = [
    ...Object.values(catalog).map((s): [string, readonly Field[]] => [s.name, s.fields]),
    ['AuthInner', authInnerFields], ['AuthGrant', authGrantFields], ['presence record', presenceRecordFields],
  ];
  let accepted = 0;
  let refused = 0;
  for (const [name, fields] of lists) {
    fc.assert(
      fc.property(bodyOf(fields), (body) => {
        const checked = reason(checkFields(fields, body));
        const decoded = roundTrip(fields, body);
        if (checked === 'accepted') accepted++;
        else refused++;
        // Refused both ways; where the bytes were written, decode refuses in the same words.
        return decoded === 'not encoded' ? checked !== 'accepted' : checked === decoded;
      }),
      { seed: 20260301, numRuns: 25 },
    );
    t.pass(name);
  }
  t.ok(accepted > 100 && refused > 100, `both outcomes are exercised (${accepted} accepted, ${refused} refused)`);
});
