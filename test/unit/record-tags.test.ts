// The tags of locatord's Redis records (src/locatord/store/codec.ts), computed with the
// JavaScript HMAC: the same bytes as the documented formula through node:crypto, so records and
// relay messages written by an instance of an earlier version still verify, and a value moved to
// another kind or key, or altered, does not.
import { createHmac, randomBytes } from 'node:crypto';
import t from 'tap';
import { openRecord, RECORD_TAG_BYTES, recordTag, tagRecord } from '../../src/locatord/store/codec.js';
import { KeyedHmac } from '../../src/wire/hmac-sha256.js';

/** HMAC-SHA256(key, kind || 0x00 || for each part: 4-byte big-endian length || part), first 16 bytes. */
function reference(key: Buffer, kind: string, ...parts: (Uint8Array | string)[]): Buffer {
  const h = createHmac('sha256', key).update(kind).update(Buffer.from([0]));
  for (const part of parts) {
    const b = typeof part === 'string' ? Buffer.from(part, 'utf8') : Buffer.from(part);
    const len = Buffer.alloc(4);
    len.writeUInt32BE(b.length);
    h.update(len).update(b);
  }
  return h.digest().subarray(0, RECORD_TAG_BYTES);
}

t.test('recordTag is the documented HMAC, for parts of every shape (bytes, text, empty, long)', async (t) => {
  const key = randomBytes(32);
  const cases: [string, (Uint8Array | string)[]][] = [
    ['presence', [randomBytes(16), randomBytes(70)]],
    ['group', [randomBytes(16), randomBytes(16), 'héllo, group', Buffer.alloc(0), randomBytes(32), '1700000000000']],
    ['watch', []],
    ['member', [randomBytes(16), randomBytes(16)]],
    ['x'.repeat(300), [randomBytes(2000), 'ü'.repeat(400)]],
  ];
  for (const [kind, parts] of cases) t.same(recordTag(new KeyedHmac(key), kind, ...parts), reference(key, kind, ...parts), `${kind.slice(0, 12)}: ${parts.length} parts`);
});

t.test('texts of every UTF-8 width (3 bytes a unit at most, lone surrogates, pairs), growing the scratch, an empty text last', async (t) => {
  const key = randomBytes(32);
  const mac = new KeyedHmac(key);
  const cases: [string, (Uint8Array | string)[]][] = [
    ['group', ['\u20ac'.repeat(700), randomBytes(3), '\ud800x\udfff', '\u{1f600}'.repeat(300), '']],
    ['group', ['\u20ac'.repeat(3000), '']],
    ['\u00fc', ['a', '\u00e9t\u00e9', randomBytes(0)]],
  ];
  for (const [kind, parts] of cases) t.same(recordTag(mac, kind, ...parts), reference(key, kind, ...parts), `${parts.length} parts`);
});

t.test('tagRecord appends that tag; openRecord gives the value back only where it was tagged', async (t) => {
  const key = randomBytes(32);
  const mac = new KeyedHmac(key);
  const id = randomBytes(16);
  const value = randomBytes(60);
  const stored = tagRecord(mac, 'presence', value, id);
  t.same(stored, Buffer.concat([value, reference(key, 'presence', id, value)]));
  t.same(openRecord(mac, 'presence', stored, id), value);
  t.equal(openRecord(mac, 'watch', stored, id), undefined, 'another kind');
  t.equal(openRecord(mac, 'presence', stored, randomBytes(16)), undefined, 'another key in Redis');
  t.equal(openRecord(new KeyedHmac(randomBytes(32)), 'presence', stored, id), undefined, 'another deployment');
  t.equal(openRecord(mac, 'presence', stored.subarray(0, 10), id), undefined, 'cut');
  for (const at of [0, 30, stored.length - 1]) {
    const altered = Buffer.from(stored);
    altered[at]! ^= 0x01;
    t.equal(openRecord(mac, 'presence', altered, id), undefined, `a bit flipped at ${at}`);
  }
});

t.test('KeyedHmac: each under its own key (a neighbouring key, another MAC)', async (t) => {
  const a = randomBytes(32);
  const b = Buffer.from(a);
  b[0]! ^= 1;
  const data = randomBytes(40);
  const out = Buffer.alloc(32);
  new KeyedHmac(b).digestInto(data, data.length, out, 0);
  t.same(out, createHmac('sha256', b).update(data).digest());
});
