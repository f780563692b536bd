// The STUN/TURN codec against RFC 5769's test vectors (typed in from the RFC), round trips
// (fast-check), strictness on malformed input, and ChannelData framing.
import t from 'tap';
import fc from 'fast-check';
import {
  Attr, decodeChannelData, decodeStun, encodeChannelData, encodeStun, longTermKey, Method, streamFrameLength, verifyIntegrity,
  type StunMessage, type StunClass,
} from '../../src/agent/turn/codec.js';
import { mintTurnCredentials, parseTurnUsername } from '../../src/wire/turn-credentials.js';
import { ErrorCode } from '../../src/wire/errors.js';
import { bytesToIp } from '../../src/wire/addr.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

// RFC 5769 §2.1 Sample Request (short-term credential; padding bytes are 0x20).
const sampleRequest = hex(`
  00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
  80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
  00 24 00 04 6e 00 01 ff
  80 29 00 08 93 2f f9 b1 51 26 3b 36
  00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
  00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
  80 28 00 04 e5 7a 3b cf`);
// §2.2 Sample IPv4 Response.
const sampleV4 = hex(`
  01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
  80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
  00 20 00 08 00 01 a1 47 e1 12 a6 43
  00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
  80 28 00 04 c0 7d 4c 96`);
// §2.3 Sample IPv6 Response.
const sampleV6 = hex(`
  01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
  80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
  00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
  00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
  80 28 00 04 c8 fb 0b 4c`);
// §2.4 Sample Request with Long-Term Authentication.
const sampleLongTerm = hex(`
  00 01 00 60 21 12 a4 42 78 ad 34 33 c6 ad 72 c0 29 da 41 2e
  00 06 00 12 e3 83 9e e3 83 88 e3 83 aa e3 83 83 e3 82 af e3 82 b9 00 00
  00 15 00 1c 66 2f 2f 34 39 39 6b 39 35 34 64 36 4f 4c 33 34 6f 4c 39 46 53 54 76 79 36 34 73 41
  00 14 00 0b 65 78 61 6d 70 6c 65 2e 6f 72 67 00
  00 08 00 14 f6 70 24 65 6d d6 4a 3e 02 b8 e0 71 2e 85 c9 a2 8c a8 96 66`);

const shortTermKey = Buffer.from('VOkJxbRl1RmTxUk/WvJxBt', 'utf8');

t.test('RFC 5769 2.1 sample request', async (t) => {
  const r = decodeStun(sampleRequest);
  if (!r.ok) {
    t.fail(r.reason);
    return;
  }
  t.equal(r.msg.method, Method.Binding);
  t.equal(r.msg.cls, 'request');
  t.equal(r.msg.tid.toString('hex'), 'b7e7a701bc34d686fa87dfae');
  t.equal(r.msg.attrs.software, 'STUN test client');
  t.equal(r.msg.attrs.username, 'evtj:h6vY');
  t.ok(r.msg.fingerprint, 'fingerprint verified');
  t.same(r.msg.unknownRequired, [0x0024], 'PRIORITY is unknown and comprehension-required');
  t.same(r.msg.attrs.unknown?.map((a) => a.type), [0x0024, 0x8029]);
  t.ok(verifyIntegrity(r.msg, shortTermKey), 'MESSAGE-INTEGRITY verifies with the password');
  t.notOk(verifyIntegrity(r.msg, Buffer.from('wrong')), 'and not with another');
});

t.test('RFC 5769 2.2 sample IPv4 response', async (t) => {
  const r = decodeStun(sampleV4);
  if (!r.ok) {
    t.fail(r.reason);
    return;
  }
  t.equal(r.msg.cls, 'success');
  t.equal(r.msg.attrs.software, 'test vector');
  t.same(r.msg.attrs.xorMappedAddress, { ip: '192.0.2.1', port: 32853 });
  t.ok(r.msg.fingerprint);
  t.ok(verifyIntegrity(r.msg, shortTermKey));
});

t.test('RFC 5769 2.3 sample IPv6 response', async (t) => {
  const r = decodeStun(sampleV6);
  if (!r.ok) {
    t.fail(r.reason);
    return;
  }
  t.same(r.msg.attrs.xorMappedAddress, { ip: '2001:db8:1234:5678:11:2233:4455:6677', port: 32853 });
  t.ok(verifyIntegrity(r.msg, shortTermKey));
});

t.test('RFC 5769 2.4 long-term authentication', async (t) => {
  const r = decodeStun(sampleLongTerm);
  if (!r.ok) {
    t.fail(r.reason);
    return;
  }
  const username = '\u30de\u30c8\u30ea\u30c3\u30af\u30b9';
  t.equal(r.msg.attrs.username, username);
  t.equal(r.msg.attrs.nonce, 'f//499k954d6OL34oL9FSTvy64sA');
  t.equal(r.msg.attrs.realm, 'example.org');
  t.notOk(r.msg.fingerprint);
  // The RFC's password after SASLprep is "TheMatrIX".
  t.ok(verifyIntegrity(r.msg, longTermKey(username, 'example.org', 'TheMatrIX')));
  t.notOk(verifyIntegrity(r.msg, longTermKey(username, 'example.org', 'TheMatrix')));
});

t.test('our encoder reproduces the IPv4 response byte for byte except padding', async (t) => {
  // RFC 5769 pads with 0x20; we pad with zeros, so only the integrity/fingerprint values differ.
  const tid = hex('b7e7a701bc34d686fa87dfae');
  const enc = encodeStun({ method: Method.Binding, cls: 'success', tid, attrs: { software: 'test vector', xorMappedAddress: { ip: '192.0.2.1', port: 32853 } } },
    { integrityKey: shortTermKey, fingerprint: true });
  t.equal(enc.length, sampleV4.length);
  t.same(enc.subarray(0, 20), sampleV4.subarray(0, 20), 'header');
  t.same(enc.subarray(36, 48), sampleV4.subarray(36, 48), 'XOR-MAPPED-ADDRESS');
  const r = decodeStun(enc);
  t.ok(r.ok && r.msg.fingerprint && verifyIntegrity(r.msg, shortTermKey));
  const v6 = encodeStun({ method: Method.Binding, cls: 'success', tid, attrs: { xorMappedAddress: { ip: '2001:db8:1234:5678:11:2233:4455:6677', port: 32853 } } });
  t.same(v6.subarray(20, 44), sampleV6.subarray(36, 60), 'XOR-MAPPED-ADDRESS (IPv6) matches the RFC');
  const mapped = decodeStun(encodeStun({ method: Method.Binding, cls: 'success', tid, attrs: { xorMappedAddress: { ip: '::ffff:192.0.2.1', port: 1 } } }));
  t.ok(mapped.ok && mapped.msg.raw[25] === 2 && mapped.msg.attrs.xorMappedAddress?.ip === '::ffff:c000:201', 'an IPv4-mapped IPv6 address keeps its family');
});

const arbAddr = fc.oneof(
  fc.tuple(fc.ipV4(), fc.integer({ min: 0, max: 65535 })).map(([ip, port]) => ({ ip, port })),
  fc.tuple(fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.integer({ min: 0, max: 65535 })).map(([b, port]) => {
    return { ip: bytesToIp(b)!, port };
  }),
);
const text = (max: number): fc.Arbitrary<string> => fc.string({ unit: 'grapheme', maxLength: max / 8 });
const arbMsg: fc.Arbitrary<StunMessage> = fc.record({
  method: fc.constantFrom(Method.Binding, Method.Allocate, Method.Refresh, Method.Send, Method.Data, Method.CreatePermission, Method.ChannelBind, 0xfff),
  cls: fc.constantFrom<StunClass>('request', 'indication', 'success', 'error'),
  tid: fc.uint8Array({ minLength: 12, maxLength: 12 }).map((b) => Buffer.from(b)),
  attrs: fc.record({
    username: text(512), realm: text(763), nonce: text(763), software: text(763),
    errorCode: fc.record({ code: fc.integer({ min: 300, max: 699 }), reason: text(400) }),
    lifetime: fc.nat({ max: 0xffffffff }),
    requestedTransport: fc.integer({ min: 0, max: 255 }),
    channelNumber: fc.integer({ min: 0x4000, max: 0x4fff }),
    data: fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)),
    dontFragment: fc.constant(true),
    xorMappedAddress: arbAddr, xorRelayedAddress: arbAddr,
    xorPeerAddresses: fc.array(arbAddr, { minLength: 1, maxLength: 4 }),
  }, { requiredKeys: [] }),
});

t.test('decode(encode(m)) = m, with and without integrity and fingerprint', async (t) => {
  fc.assert(fc.property(arbMsg, fc.boolean(), fc.boolean(), fc.boolean(), (m, mi, mi256, fp) => {
    const key = Buffer.from('k');
    const enc = encodeStun(m, { ...(mi ? { integrityKey: key } : {}), ...(mi256 ? { integritySha256Key: key } : {}), fingerprint: fp });
    const r = decodeStun(enc);
    if (!r.ok) throw new Error(r.reason);
    const { method, cls, tid, attrs } = r.msg;
    t.same({ method, cls, tid, attrs }, m);
    if (r.msg.fingerprint !== fp) throw new Error('fingerprint');
    if ((mi || mi256) !== verifyIntegrity(r.msg, key)) throw new Error('integrity');
    if ((mi || mi256) && verifyIntegrity(r.msg, Buffer.from('x'))) throw new Error('integrity with a wrong key');
    if (!encodeStun(r.msg, { ...(mi ? { integrityKey: key } : {}), ...(mi256 ? { integritySha256Key: key } : {}), fingerprint: fp }).equals(enc)) throw new Error('re-encoding differs');
  }), { numRuns: 300 });
});

t.test('bad input never throws and is refused with a code', async (t) => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 200 }), fc.boolean(), (b, stream) => {
    for (const r of [decodeStun(b), decodeChannelData(b, stream)]) {
      if (!r.ok && !(r.code === ErrorCode.MALFORMED || r.code === ErrorCode.TOO_LARGE)) throw new Error(`code ${r.code}`);
    }
    streamFrameLength(b);
  }), { numRuns: 2000 });
  // Mutations of a valid message: flip one byte anywhere.
  fc.assert(fc.property(fc.nat({ max: sampleV4.length - 1 }), fc.integer({ min: 1, max: 255 }), (i, x) => {
    const b = Buffer.from(sampleV4);
    b[i] = b[i]! ^ x;
    const r = decodeStun(b);
    // A flip inside the integrity value survives decoding (checking needs the key) but not verification.
    if (r.ok && verifyIntegrity(r.msg, shortTermKey)) throw new Error(`flip at ${i} went unnoticed`);
  }), { numRuns: 1000 });
});

t.test('strictness', async (t) => {
  const tid = Buffer.alloc(12, 7);
  const base = encodeStun({ method: Method.Allocate, cls: 'request', tid, attrs: { lifetime: 600 } });
  const refuse = (b: Buffer, why: RegExp, code: number = ErrorCode.MALFORMED): void => {
    const r = decodeStun(b);
    t.notOk(r.ok, `refused: ${why}`);
    if (!r.ok) {
      t.equal(r.code, code);
      t.match(r.reason, why);
    }
  };
  refuse(Buffer.concat([base, Buffer.alloc(4)]), /trailing/);
  refuse(base.subarray(0, base.length - 4), /truncated/);
  const noCookie = Buffer.from(base);
  noCookie[4] = 0;
  refuse(noCookie, /magic cookie/);
  const topBits = Buffer.from(base);
  topBits[0] = 0x40;
  refuse(topBits, /top two bits/);
  refuse(base.subarray(0, 10), /shorter/);
  refuse(Buffer.alloc(70000), /exceeds/, ErrorCode.TOO_LARGE);
  const withMi = encodeStun({ method: Method.Allocate, cls: 'request', tid, attrs: {} }, { integrityKey: Buffer.from('k') });
  const after = Buffer.concat([withMi, hex('000d0004 00000258')]);
  after.writeUInt16BE(after.length - 20, 2);
  refuse(after, /after MESSAGE-INTEGRITY/);
  const dup = Buffer.concat([base, hex('000d0004 00000258')]);
  dup.writeUInt16BE(dup.length - 20, 2);
  refuse(dup, /duplicate/);
  const fp = encodeStun({ method: Method.Binding, cls: 'request', tid, attrs: {} }, { fingerprint: true });
  fp[fp.length - 1] = fp[fp.length - 1]! ^ 1;
  refuse(fp, /FINGERPRINT/);
  const badAddr = encodeStun({ method: Method.Allocate, cls: 'success', tid, attrs: { xorRelayedAddress: { ip: '10.0.0.1', port: 1 } } });
  badAddr[25] = 2; // IPv6 family with 8 bytes
  refuse(badAddr, /family/);
  const badCh = encodeStun({ method: Method.ChannelBind, cls: 'request', tid, attrs: { channelNumber: 0x4000 } });
  badCh.writeUInt16BE(0x3fff, 24);
  refuse(badCh, /channel/);
  const badErr = encodeStun({ method: Method.Allocate, cls: 'error', tid, attrs: { errorCode: { code: 401, reason: 'x' } } });
  badErr[26] = 7;
  refuse(badErr, /outside 300/);
  const badUtf = encodeStun({ method: Method.Allocate, cls: 'error', tid, attrs: { realm: 'ab' } });
  badUtf[24] = 0xff;
  refuse(badUtf, /UTF-8/);
  const many = Buffer.concat([base.subarray(0, 20), ...Array.from({ length: 65 }, (_, i) => hex((0x9001 + i).toString(16) + '0000'))]);
  many.writeUInt16BE(many.length - 20, 2);
  refuse(many, /more than 64/, ErrorCode.TOO_LARGE);
  const overrun = Buffer.concat([base.subarray(0, 20), hex('80010008 00000000')]);
  overrun.writeUInt16BE(8, 2);
  refuse(overrun, /runs past/);
  t.equal(Attr.FINGERPRINT, 0x8028);
});

t.test('ChannelData framing', async (t) => {
  const d = Buffer.from('hello');
  const udp = encodeChannelData(0x4001, d, false);
  const tcp = encodeChannelData(0x4001, d, true);
  t.equal(udp.length, 9);
  t.equal(tcp.length, 12, 'padded to 4 over a stream');
  for (const [b, stream] of [[udp, false], [tcp, false], [tcp, true]] as const) {
    const r = decodeChannelData(b, stream);
    t.ok(r.ok && r.frame.channel === 0x4001 && r.frame.data.equals(d));
  }
  t.notOk(decodeChannelData(udp, true).ok, 'a stream requires the padding');
  t.notOk(decodeChannelData(Buffer.concat([tcp, Buffer.alloc(4)]), false).ok, 'trailing bytes');
  t.notOk(decodeChannelData(hex('3fff0000'), false).ok, 'channel below 0x4000');
  t.notOk(decodeChannelData(hex('40010010 00'), false).ok, 'truncated');
  t.equal(streamFrameLength(tcp), 12);
  t.equal(streamFrameLength(sampleV4), sampleV4.length);
  t.equal(streamFrameLength(tcp.subarray(0, 3)), 0);
  t.equal(streamFrameLength(hex('80000000')), -1);
  fc.assert(fc.property(fc.integer({ min: 0x4000, max: 0x4fff }), fc.uint8Array({ maxLength: 600 }), fc.boolean(), (ch, data, stream) => {
    const r = decodeChannelData(encodeChannelData(ch, data, stream), stream);
    if (!r.ok || r.frame.channel !== ch || !r.frame.data.equals(Buffer.from(data))) throw new Error('round trip');
  }));
});

t.test('shared-secret credentials (coturn REST API)', async (t) => {
  const c = mintTurnCredentials('s3cret', '00112233445566778899aabbccddeeff', 1_800_000_000);
  t.equal(c.username, '1800000000:00112233445566778899aabbccddeeff');
  // base64(HMAC-SHA1("s3cret", username)), computed independently with openssl.
  t.equal(c.password, 'XRVkDafS1U4bDlfDNAldEfBbxAQ=');
  t.same(parseTurnUsername(c.username), { expiresAtSec: 1_800_000_000, locatorIdHex: '00112233445566778899aabbccddeeff' });
  t.equal(parseTurnUsername('alice'), null);
  t.throws(() => mintTurnCredentials('s', 'XYZ', 1));
});
