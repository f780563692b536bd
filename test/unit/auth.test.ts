// The authentication exchange without sockets: AUTH_REQUEST is always exactly 1200 bytes,
// authd opens only what was sealed to it and signed by the enrolled device key, and the terminal
// accepts only the grant that answers its own request.
import type { KeyObject } from 'node:crypto';
import t from 'tap';
import type { AuthGrant } from '../../src/wire/catalog.js';
import { authInnerFields } from '../../src/wire/catalog.js';
import type { AuthRequestInput } from '../../src/wire/auth.js';
import { buildAuthRequest, buildAuthRequestWith, openAuthGrant, openAuthRequest, proofInput, sealAuthGrant } from '../../src/wire/auth.js';
import { decodeStrict, encodeCbor } from '../../src/wire/cbor.js';
import { AUTH_REQUEST_SIZE, MAX_DATAGRAM } from '../../src/wire/constants.js';
import { decodeDatagram, encodeDatagram } from '../../src/wire/envelope.js';
import { ErrorCode } from '../../src/wire/errors.js';
import { ed25519Sign, generatePair, privateKeyObject, publicKeyObject } from '../../src/wire/keys.js';
import { encodeBody } from '../../src/wire/schema.js';
import { sealBytes } from '../../src/wire/seal.js';
import { issueTicket } from '../../src/wire/ticket.js';
import { AUTHD_SEAL_SECRET, AUTHD_SIGN_SEED, DEVICE_SIGN_SEED, EPHEMERAL_SECRET, pairFromSecret } from '../vectors/generate.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

const device = pairFromSecret('Ed25519', DEVICE_SIGN_SEED);
const deviceKey = privateKeyObject('Ed25519', device);
const devicePublic = publicKeyObject('Ed25519', device.public);
const authdSeal = pairFromSecret('X25519', AUTHD_SEAL_SECRET);
const authdSealSecret = privateKeyObject('X25519', authdSeal);
const otherAuthd = generatePair('x25519');
const eph = pairFromSecret('X25519', EPHEMERAL_SECRET);
const cnf = generatePair('x25519').public;
const KID = Buffer.from('7a1e0001', 'hex');
const RID = Buffer.from('0102030405060708', 'hex');
const NONCE = Buffer.alloc(16, 0x6e);

const input = (over: Partial<AuthRequestInput> = {}): AuthRequestInput => ({
  rid: RID, deviceId: 'DEV-1', deviceKey, authdKid: KID, authdSealPublic: authdSeal.public,
  audiences: ['locatord', 'matchd'], cnf, timeMs: 1_767_225_600_123, ...over,
});

type Lookup = Parameters<typeof openAuthRequest>[3];
const enrolled = (keys: Record<string, KeyObject>): Lookup => (id) =>
  keys[id] ? { ok: true, key: keys[id]! } : { ok: false, code: ErrorCode.UNKNOWN_DEVICE, reason: `unknown device ${id}` };

function requestBody(dg: Uint8Array) {
  const d = decodeDatagram(dg);
  if (!d.ok || d.msg.name !== 'AUTH_REQUEST') throw new Error(`not an AUTH_REQUEST: ${d.ok ? d.msg.name : d.reason}`);
  return { rid: d.msg.rid, body: d.msg.body };
}

t.test('AUTH_REQUEST is exactly 1200 bytes for short and long IDs and audience lists', async (t) => {
  const audienceSets = [[], ['l'], ['locatord'], ['locatord', 'matchd'], ['a'.repeat(64)], Array.from({ length: 4 }, (_, i) => `${i}`.repeat(64))];
  const deviceIds = ['D', 'DEV-1', 'x'.repeat(23), 'x'.repeat(24), 'D' + '0'.repeat(40), 'x'.repeat(63), 'x'.repeat(64)];
  let n = 0;
  const paddings = new Set<number>();
  for (const audiences of audienceSets) {
    for (const deviceId of deviceIds) {
      for (const cookie of [undefined, new Uint8Array(16), new Uint8Array(64)]) {
        const built = buildAuthRequest(input({ deviceId, audiences, ...(cookie ? { cookie } : {}) }));
        n++;
        if (built.datagram.length !== AUTH_REQUEST_SIZE) t.fail(`${deviceId.length}/${audiences.length}: ${built.datagram.length} B`);
        const { rid, body } = requestBody(built.datagram);
        paddings.add(body.padding?.length ?? -1);
        if (cookie) t.equal(hex(body.cookie ?? new Uint8Array()), hex(cookie), 'cookie carried');
        const opened = openAuthRequest(rid, body, authdSealSecret, enrolled({ [deviceId]: devicePublic }));
        if (!opened.ok) t.fail(`does not open: ${opened.reason}`);
        else if (opened.inner.deviceId !== deviceId || opened.inner.audiences.join() !== audiences.join()) t.fail('inner differs');
      }
    }
  }
  t.equal(AUTH_REQUEST_SIZE, MAX_DATAGRAM);
  t.pass(`${n} requests, all 1200 bytes, all open`);
  // Valid requests are at most ~620 B unpadded, so their padding always has a 3-byte head; the
  // sweep below covers the other head sizes.
  t.ok([...paddings].every((p) => p >= 256), 'padding of valid requests: 256 B or more');
});

t.test('padding: every size is 1200 bytes or a RangeError, never a hang or a wrong size', async (t) => {
  // Device IDs far beyond the schema move the unpadded size through every value, including the
  // three that no single padding field can fill (1, 26 and 259 bytes of room) and sizes beyond
  // 1200. (Before buildAuthRequestWith solved for the length, room 26 looped forever and room 1
  // returned 1201 bytes.)
  const outcomes: (number | 'range')[] = [];
  for (let len = 1; len <= 1100; len++) {
    try {
      const built = buildAuthRequestWith(input({ deviceId: 'x'.repeat(len), audiences: [] }), eph, NONCE);
      if (built.datagram.length !== AUTH_REQUEST_SIZE) t.fail(`len ${len}: ${built.datagram.length} B`);
      const v = decodeStrict(built.datagram, { maxDepth: 8, maxItems: 600 });
      const body = v.ok ? ((v.value as unknown[])[3] as Map<number, Uint8Array>) : null;
      outcomes.push(body?.get(15)?.length ?? -1);
    } catch (err) {
      if (!(err instanceof RangeError)) t.fail(`len ${len}: ${String(err)}`);
      outcomes.push('range');
    }
  }
  const firstTooBig = outcomes.findIndex((o, i) => o === 'range' && outcomes.slice(i).every((x) => x === 'range'));
  t.ok(firstTooBig > 0, 'long enough IDs no longer fit');
  const gaps = outcomes.slice(0, firstTooBig).flatMap((o, i) => (o === 'range' ? [i] : []));
  // Each gap sits between padding 24 (2-byte head) and 23 (1-byte head), 256 and 255, or an empty
  // padding field and none at all (-1: the unpadded request is exactly 1200 bytes).
  const arounds = gaps.map((i) => JSON.stringify([outcomes[i - 1], outcomes[i + 1]]));
  t.same(arounds.sort(), ['[0,-1]', '[24,23]', '[256,255]'], 'exactly the three unfillable sizes');
  t.ok(outcomes.includes(23) && outcomes.includes(24) && outcomes.includes(255) && outcomes.includes(256), 'all three head sizes used');
});

t.test('the deterministic builder: same inputs, same bytes; buildAuthRequest is fresh each time', async (t) => {
  const a = buildAuthRequestWith(input(), eph, NONCE);
  const b = buildAuthRequestWith(input(), eph, NONCE);
  t.equal(hex(a.datagram), hex(b.datagram));
  t.equal(hex(a.nonce), hex(NONCE));
  const r1 = buildAuthRequest(input());
  const r2 = buildAuthRequest(input());
  t.not(hex(r1.nonce), hex(r2.nonce), 'fresh nonce');
  t.not(hex(requestBody(r1.datagram).body.ephemeral), hex(requestBody(r2.datagram).body.ephemeral), 'fresh ephemeral key');
  t.throws(() => buildAuthRequest(input({ authdSealPublic: new Uint8Array(32) })), 'a low-order authd key is refused');
});

t.test('openAuthRequest: accepts the genuine request', async (t) => {
  const built = buildAuthRequestWith(input(), eph, NONCE);
  const { rid, body } = requestBody(built.datagram);
  const seen: string[] = [];
  const opened = openAuthRequest(rid, body, authdSealSecret, (id) => {
    seen.push(id);
    return { ok: true, key: devicePublic };
  });
  t.same(seen, ['DEV-1'], 'looks the device up by its ID, once');
  t.ok(opened.ok);
  if (!opened.ok) return;
  t.equal(hex(opened.keys.request), hex(built.keys.request), 'both sides derive the same request key');
  t.equal(hex(opened.keys.response), hex(built.keys.response), 'and response key');
  t.same(
    { ...opened.inner, nonce: hex(opened.inner.nonce), cnf: hex(opened.inner.cnf), signature: opened.inner.signature.length },
    { deviceId: 'DEV-1', timeMs: 1_767_225_600_123, nonce: hex(NONCE), audiences: ['locatord', 'matchd'], cnf: hex(cnf), signature: 64 },
  );
});

t.test('openAuthRequest: refusals', async (t) => {
  const built = buildAuthRequestWith(input(), eph, NONCE);
  const { rid, body } = requestBody(built.datagram);
  const lookup = enrolled({ 'DEV-1': devicePublic });
  const code = (r: ReturnType<typeof openAuthRequest>): number | 'ok' => (r.ok ? 'ok' : r.code);

  t.equal(code(openAuthRequest(rid, body, privateKeyObject('X25519', otherAuthd), lookup)), ErrorCode.BAD_PROOF, 'another authd key cannot open it');
  for (const i of [0, 1, Math.floor(body.sealed.length / 2), body.sealed.length - 17, body.sealed.length - 1]) {
    const sealed = Buffer.from(body.sealed);
    sealed[i]! ^= 0x01;
    t.equal(code(openAuthRequest(rid, { ...body, sealed }, authdSealSecret, lookup)), ErrorCode.BAD_PROOF, `sealed byte ${i} flipped`);
  }
  t.equal(code(openAuthRequest(rid, { ...body, sealed: body.sealed.subarray(0, 15) }, authdSealSecret, lookup)), ErrorCode.BAD_PROOF, 'shorter than a tag');
  t.equal(code(openAuthRequest(Buffer.from('0102030405060709', 'hex'), body, authdSealSecret, lookup)), ErrorCode.BAD_PROOF, 'another request ID (AAD)');
  t.equal(code(openAuthRequest(rid, { ...body, authdKey: Buffer.from('7a1e0002', 'hex') }, authdSealSecret, lookup)), ErrorCode.BAD_PROOF, 'another kid (AAD)');
  const otherEph = generatePair('x25519').public;
  t.equal(code(openAuthRequest(rid, { ...body, ephemeral: otherEph }, authdSealSecret, lookup)), ErrorCode.BAD_PROOF, 'another ephemeral key');
  t.equal(code(openAuthRequest(rid, { ...body, ephemeral: new Uint8Array(32) }, authdSealSecret, lookup)), ErrorCode.BAD_PROOF, 'low-order ephemeral key');

  // Unknown or revoked device: the lookup's refusal is passed through.
  const unknown = openAuthRequest(rid, body, authdSealSecret, enrolled({}));
  t.equal(code(unknown), ErrorCode.UNKNOWN_DEVICE, 'unknown device');
  t.match(unknown.ok ? '' : unknown.reason, /DEV-1/);
  t.equal(code(openAuthRequest(rid, body, authdSealSecret, () => ({ ok: false, code: ErrorCode.REVOKED, reason: 'revoked' }))), ErrorCode.REVOKED, 'revoked device');

  // Enrolled under another key: the signature does not verify.
  const stranger = publicKeyObject('Ed25519', generatePair('ed25519').public);
  const wrongKey = openAuthRequest(rid, body, authdSealSecret, enrolled({ 'DEV-1': stranger }));
  t.equal(code(wrongKey), ErrorCode.BAD_PROOF, 'signature by another key');
  t.match(wrongKey.ok ? '' : wrongKey.reason, /signature/);
});

t.test('openAuthRequest: a correctly sealed inner part with a bad signature or content', async (t) => {
  const lookup = enrolled({ 'DEV-1': devicePublic });
  const aad = Buffer.concat([RID, KID, eph.public]);
  const unsigned = { deviceId: 'DEV-1', timeMs: 1_767_225_600_123, nonce: NONCE, audiences: ['locatord'], cnf };
  const goodSig = ed25519Sign(deviceKey, proofInput(authdSeal.public, eph.public, unsigned));
  const open = (inner: Uint8Array) => {
    const sealed = sealBytes(buildAuthRequestWith(input(), eph, NONCE).keys.request, inner, aad);
    return openAuthRequest(RID, { authdKey: KID, ephemeral: eph.public, sealed }, authdSealSecret, lookup);
  };
  const innerOf = (o: Record<string, unknown>): Buffer => encodeBody(authInnerFields, o);
  const code = (r: ReturnType<typeof openAuthRequest>): number | 'ok' => (r.ok ? 'ok' : r.code);
  t.equal(code(open(innerOf({ ...unsigned, signature: goodSig }))), 'ok', 'control: hand-built inner with a good signature opens');
  const flipped = Buffer.from(goodSig);
  flipped[10]! ^= 0x40;
  t.equal(code(open(innerOf({ ...unsigned, signature: flipped }))), ErrorCode.BAD_PROOF, 'signature bit flipped');
  t.equal(code(open(innerOf({ ...unsigned, timeMs: unsigned.timeMs + 1, signature: goodSig }))), ErrorCode.BAD_PROOF, 'signed another time');
  t.equal(code(open(innerOf({ ...unsigned, audiences: ['locatord', 'matchd'], signature: goodSig }))), ErrorCode.BAD_PROOF, 'audiences changed after signing');
  t.equal(code(open(innerOf({ ...unsigned, cnf: generatePair('x25519').public, signature: goodSig }))), ErrorCode.BAD_PROOF, 'cnf changed after signing');
  // Signed for another authd sealing key: the proof binds the authd.
  const forOther = ed25519Sign(deviceKey, proofInput(otherAuthd.public, eph.public, unsigned));
  t.equal(code(open(innerOf({ ...unsigned, signature: forOther }))), ErrorCode.BAD_PROOF, 'signature made for another authd');
  const forOtherEph = ed25519Sign(deviceKey, proofInput(authdSeal.public, generatePair('x25519').public, unsigned));
  t.equal(code(open(innerOf({ ...unsigned, signature: forOtherEph }))), ErrorCode.BAD_PROOF, 'signature made for another ephemeral key');
  t.equal(code(open(innerOf({ ...unsigned, nonce: NONCE.subarray(0, 15), signature: goodSig }))), ErrorCode.BAD_MESSAGE, 'nonce of 15 bytes');
  t.equal(code(open(encodeCbor([1, 2]))), ErrorCode.MALFORMED, 'inner is not a map');
  t.equal(code(open(Buffer.from('ff', 'hex'))), ErrorCode.MALFORMED, 'inner is not CBOR');
});

const grantFor = (nonce: Uint8Array, n = 2): AuthGrant => {
  const signKey = privateKeyObject('Ed25519', pairFromSecret('Ed25519', AUTHD_SIGN_SEED));
  const auds = ['locatord', 'matchd', 'svc-three', 'svc-four'].slice(0, n);
  return {
    locatorId: Buffer.alloc(16, 0x5c),
    nonce,
    tickets: auds.map((aud, i) => ({
      aud,
      ticket: issueTicket({ locatorId: Buffer.alloc(16, 0x5c), aud, iat: 1_767_225_600, exp: 1_767_229_200, cti: Buffer.alloc(16, i), cnf }, KID, signKey),
      serviceKey: Buffer.alloc(32, 0x20 + i),
      exp: 1_767_229_200,
      ...(i === 0 ? { addr: { ip: '198.51.100.10', port: 4701 } } : {}),
    })),
  };
};

t.test('openAuthGrant: opens only its own answer', async (t) => {
  const built = buildAuthRequestWith(input(), eph, NONCE);
  const grant = grantFor(NONCE);
  const sealed = sealAuthGrant(built.keys, RID, grant);
  const dg = encodeDatagram('AUTH_RESPONSE', RID, { sealed });
  t.ok(dg.length <= built.datagram.length, 'response no larger than the request');
  const d = decodeDatagram(dg);
  t.ok(d.ok, 'response decodes');
  const g = openAuthGrant(built.keys, RID, sealed, NONCE);
  t.ok(g.ok, 'opens');
  if (g.ok) {
    t.equal(hex(g.grant.locatorId), hex(grant.locatorId));
    t.same(g.grant.tickets.map((x) => [x.aud, hex(x.ticket), hex(x.serviceKey), x.exp, x.addr ?? null]), grant.tickets.map((x) => [x.aud, hex(x.ticket), hex(x.serviceKey), x.exp, x.addr ?? null]));
  }
  const otherNonce = Buffer.alloc(16, 0x6f);
  const wrongNonce = openAuthGrant(built.keys, RID, sealed, otherNonce);
  t.notOk(wrongNonce.ok, 'another nonce: refused');
  t.match(wrongNonce.ok ? '' : wrongNonce.reason, /another request/);
  // A grant echoing another nonce, sealed with the right key, is refused the same way.
  const replayed = sealAuthGrant(built.keys, RID, grantFor(otherNonce));
  t.notOk(openAuthGrant(built.keys, RID, replayed, NONCE).ok, 'grant for another nonce');
  const other = buildAuthRequest(input());
  t.notOk(openAuthGrant(other.keys, RID, sealed, NONCE).ok, 'keys of another request');
  t.notOk(openAuthGrant(built.keys, Buffer.alloc(8), sealed, NONCE).ok, 'another request ID');
  t.notOk(openAuthGrant({ request: built.keys.response, response: built.keys.request }, RID, sealed, NONCE).ok, 'the request key');
  for (const i of [0, sealed.length >> 1, sealed.length - 1]) {
    const s = Buffer.from(sealed);
    s[i]! ^= 0x80;
    t.notOk(openAuthGrant(built.keys, RID, s, NONCE).ok, `sealed byte ${i} flipped`);
  }
  t.notOk(openAuthGrant(built.keys, RID, new Uint8Array(10), NONCE).ok, 'too short');
  const N12 = Buffer.alloc(12, 7);
  const notMap = Buffer.concat([N12, sealBytes(built.keys.response, encodeCbor([1]), RID, N12)]);
  t.match((r => (r.ok ? '' : r.reason))(openAuthGrant(built.keys, RID, notMap, NONCE)), /not a CBOR map/);
  const missing = Buffer.concat([N12, sealBytes(built.keys.response, encodeCbor(new Map([[3, NONCE]])), RID, N12)]);
  t.match((r => (r.ok ? '' : r.reason))(openAuthGrant(built.keys, RID, missing, NONCE)), /missing/);
});

t.test('grant size: the audiences a terminal asks for fit in one datagram', async (t) => {
  const built = buildAuthRequestWith(input(), eph, NONCE);
  for (const n of [1, 2, 3]) {
    const dg = encodeDatagram('AUTH_RESPONSE', RID, { sealed: sealAuthGrant(built.keys, RID, grantFor(NONCE, n)) });
    const d = decodeDatagram(dg);
    t.ok(d.ok && dg.length <= AUTH_REQUEST_SIZE, `${n} ticket(s): ${dg.length} B, decodes`);
  }
});

t.test('grant size: 4 tickets (the schema maximum of audiences) exceed one AUTH_RESPONSE, which refuses them whole', async (t) => {
  // Each grant entry is ~270 B (ticket ~215 B) and AUTH_RESPONSE.sealed is at most 1100 B: a
  // grant of 4 cannot be sent. authd sends the tickets that fit and names the rest
  // (test/authd/exchange.test.ts, "four tickets do not fit one reply").
  const built = buildAuthRequestWith(input(), eph, NONCE);
  const dg = encodeDatagram('AUTH_RESPONSE', RID, { sealed: sealAuthGrant(built.keys, RID, grantFor(NONCE, 4)) });
  const d = decodeDatagram(dg);
  t.notOk(d.ok, `4 tickets: ${dg.length} B, refused by the decoder`);
  t.equal(d.ok ? 0 : d.code, ErrorCode.BAD_MESSAGE);
});
