// The committed test vectors (test/vectors/*.json), checked three ways: by devloc's own codec
// (decode to the stated meaning, re-encode byte for byte, MACs verify), by an independent CBOR
// implementation (cbor2, in its deterministic CDE mode) and by independent crypto
// (@noble/curves for Ed25519/X25519; node:crypto primitives called directly for HMAC, HKDF and
// ChaCha20-Poly1305 with the parameters the vector files document).
import { DEFAULT_SERVICE_IDS } from '../../src/wire/constants.js';
import { MAX_REFLECT_RESULT } from '../../src/agent/netmode.js';
import { COOKIE_BYTES } from '../../src/authd/cookie.js';
import { createDecipheriv, createHmac, createSecretKey, hkdfSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ed25519, x25519 } from '@noble/curves/ed25519.js';
import { cdeDecodeOptions, decode as cbor2Decode, encode as cbor2Encode, Tag } from 'cbor2';
import t from 'tap';
import { formatAddress, type Address } from '../../src/wire/addr.js';
import { buildAuthRequestWith, openAuthGrant, openAuthRequest, proofInput } from '../../src/wire/auth.js';
import { authGrantFields, authInnerFields, catalog, MessageType, specOf, type MessageName } from '../../src/wire/catalog.js';
import { decodeStrict, encodeCbor, type CborValue } from '../../src/wire/cbor.js';
import { decodeDatagram, EncodedBody, encodeDatagram, type Message } from '../../src/wire/envelope.js';
import { ErrorCode } from '../../src/wire/errors.js';
import { privateKeyObject, publicKeyObject } from '../../src/wire/keys.js';
import type { Field, FieldType } from '../../src/wire/schema.js';
import { SessionMacs } from '../../src/wire/hmac-sha256.js';
import { deriveSessionKeys, rawKey, sealDatagram, verifyDatagram } from '../../src/wire/session.js';
import { issueTicket, peekTicket, TicketVerifier } from '../../src/wire/ticket.js';
import { buildVectors, vectorPath } from '../vectors/generate.js';

/** The servers' JavaScript MAC, checked against the vectors below. */
const vectorMacs = new SessionMacs(4);

/** The type of `t` inside a subtest. */
type TapT = Parameters<Parameters<typeof t.test>[0]>[0];
type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type Obj = { [k: string]: Json };

const read = (name: 'messages' | 'ticket' | 'auth'): string => readFileSync(vectorPath(name), 'utf8');
const files = { messages: read('messages'), ticket: read('ticket'), auth: read('auth') };

interface SessionKeysJson { sid: string; aud: string; terminalToServer: string; serverToTerminal: string }
interface Vector { name: MessageName; hex: string; meaning: Obj; note: string; session?: 'locatord' | 'matchd'; macKey?: 'terminalToServer' | 'serverToTerminal' }
const messages = JSON.parse(files.messages) as {
  sessionKeys: Record<'locatord' | 'matchd', SessionKeysJson>;
  sessionDerivation: { terminalCnf: { secret: string; public: string }; services: Record<'locatord' | 'matchd', { secret: string; public: string }> };
  vectors: Vector[];
};
const ticketJson = JSON.parse(files.ticket) as {
  authd: { kid: string; signSeed: string; signPublic: string };
  terminal: { cnfSecret: string; cnfPublic: string };
  verifyAt: number;
  claims: { iss: string; sub: string; aud: string; exp: number; iat: number; cti: string; cnf: { kty: number; crv: number; x: string } };
  protectedHex: string;
  unprotected: { kid: string };
  payloadHex: string;
  sigStructureHex: string;
  signature: string;
  hex: string;
};
const authJson = JSON.parse(files.auth) as {
  inputs: {
    rid: string; deviceId: string; device: { signSeed: string; signPublic: string };
    authd: { kid: string; sealSecret: string; sealPublic: string; signPublic: string };
    ephemeral: { secret: string; public: string }; cnf: { secret: string; public: string };
    nonce: string; timeMs: number; audiences: string[];
  };
  derived: { sealKeys: { request: string; response: string }; proofInputHex: string; inner: Obj; innerHex: string; requestAad: string; responseNonce: string };
  request: { hex: string; meaning: Obj };
  grant: { meaning: Obj; cborHex: string };
  response: { hex: string; meaning: Obj };
};

const unhex = (h: string): Buffer => Buffer.from(h, 'hex');
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

// ---------------------------------------------------------------------------------------------
// Decoded (typed) values to the vectors' JSON form, driven by the catalog schema.

function valueToJson(type: FieldType, v: unknown): Json {
  switch (type.t) {
    case 'uint':
    case 'bool':
    case 'tstr':
      return v as Json;
    case 'bstr':
      return hex(v as Uint8Array);
    case 'addr':
      return formatAddress(v as Address);
    case 'array':
      return (v as unknown[]).map((x) => valueToJson(type.of, x));
    case 'struct':
      return fieldsToJson(type.fields, v as Record<string, unknown>);
    case 'props':
      return { ...(v as Obj) };
  }
}

function fieldsToJson(fields: readonly Field[], obj: Record<string, unknown>): Obj {
  const out: Obj = {};
  for (const f of fields) if (obj[f.name] !== undefined) out[f.name] = valueToJson(f.type, obj[f.name]);
  // Anything the schema does not know would be a decoder bug: keep it visible.
  for (const k of Object.keys(obj)) if (!fields.some((f) => f.name === k)) out[`?${k}`] = String(obj[k]);
  return out;
}

function messageToJson(msg: Message): Obj {
  const spec = catalog[msg.type];
  const out: Obj = { name: msg.name, type: msg.type, rid: hex(msg.rid), body: fieldsToJson(spec.fields, msg.body as Record<string, unknown>) };
  return out;
}

// ---------------------------------------------------------------------------------------------
// cbor2 values versus decodeStrict values.

/** A comparable rendering of a CBOR value; throws on anything outside plain CBOR. */
function plain(v: unknown, path = '$'): Json {
  if (v instanceof Tag) throw new Error(`${path}: tag ${String(v.tag)}`);
  if (typeof v === 'bigint') throw new Error(`${path}: bigint ${v}`);
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v)) throw new Error(`${path}: not a safe integer: ${v}`);
    return v;
  }
  if (typeof v === 'string' || typeof v === 'boolean' || v === null) return v;
  if (v instanceof Uint8Array) {
    if (v.constructor !== Uint8Array && v.constructor !== Buffer) throw new Error(`${path}: typed array ${v.constructor.name}`);
    return { bstr: hex(v) };
  }
  if (Array.isArray(v)) return v.map((x, i) => plain(x, `${path}[${i}]`));
  if (v instanceof Map) {
    return { map: [...v.entries()].map(([k, x]) => [plain(k, `${path}.key`), plain(x, `${path}.${String(k)}`)]) };
  }
  throw new Error(`${path}: unexpected ${Object.prototype.toString.call(v)}`);
}

/** Strict, deterministic (CDE: preferred heads, sorted keys, no indefinite lengths) and plain. */
const cbor2Options = {
  ...cdeDecodeOptions,
  preferMap: true,
  rejectDuplicateKeys: true,
  rejectFloats: true,
  rejectUndefined: true,
  rejectSimple: true,
  rejectBigInts: true,
};

/** cbor2's encoder writes a Buffer as an object: hand it plain Uint8Arrays. */
function forCbor2(v: unknown): unknown {
  if (v instanceof Uint8Array) return new Uint8Array(v);
  if (Array.isArray(v)) return v.map(forCbor2);
  if (v instanceof Map) return new Map([...v.entries()].map(([k, x]) => [k, forCbor2(x)]));
  return v;
}

function checkWithCbor2(t: TapT, bytes: Uint8Array, what: string): unknown {
  let value: unknown;
  t.doesNotThrow(() => {
    value = cbor2Decode(bytes, cbor2Options);
  }, `${what}: cbor2 decodes it in CDE mode`);
  const ours = decodeStrict(bytes, { maxDepth: 8, maxItems: 600 });
  t.ok(ours.ok, `${what}: decodeStrict accepts it`);
  if (ours.ok) t.same(plain(value), plain(ours.value), `${what}: same structure as decodeStrict, no tags`);
  t.equal(hex(cbor2Encode(forCbor2(value), { cde: true })), hex(bytes), `${what}: cbor2's deterministic encoding is identical`);
  return value;
}

// ---------------------------------------------------------------------------------------------

t.test('committed vectors are exactly what generate.ts writes', async (t) => {
  const v = buildVectors();
  t.equal(files.messages, v.messages, 'messages.json up to date (npx tsx test/vectors/generate.ts)');
  t.equal(files.ticket, v.ticket, 'ticket.json up to date');
  t.equal(files.auth, v.auth, 'auth.json up to date');
  t.equal(buildVectors().messages, v.messages, 'generation is deterministic');
});

t.test('every catalog message has a vector, and only those', async (t) => {
  const names = new Set(messages.vectors.map((v) => v.name));
  for (const spec of Object.values(catalog)) t.ok(names.has(spec.name), `vector for ${spec.name}`);
  for (const n of names) t.ok(n in MessageType, `${n} is in the catalog`);
  t.ok(messages.vectors.some((v) => v.name === 'ERROR' && v.session), 'a session-MACed ERROR');
  t.ok(messages.vectors.some((v) => v.name === 'ERROR' && !v.session), 'an unauthenticated ERROR');
});

t.test('values the page states are the code\'s: REFLECT padding, cookie length, a missing group', async (t) => {
  const reflect = messages.vectors.find((v) => v.name === 'REFLECT')!;
  t.equal(unhex(reflect.hex).length, MAX_REFLECT_RESULT, 'the REFLECT example is padded to the largest REFLECT_RESULT');
  t.equal(MAX_REFLECT_RESULT, 80, 'which is the 80 bytes devloc-protocol(7) states');
  const page = readFileSync(new URL('../../man/devloc-protocol.7', import.meta.url), 'utf8');
  t.match(page, /pads every REFLECT to\s+80\s+bytes/, 'the page says 80');
  t.match(page, /16-byte cookie/, 'the page says 16-byte cookies');
  const cookie = messages.vectors.find((v) => v.name === 'ERROR' && v.meaning['body'] && (v.meaning['body'] as Obj)['cookie'] !== undefined)!;
  t.equal(unhex((cookie.meaning['body'] as Obj)['cookie'] as string).length, COOKIE_BYTES, 'the cookie example is COOKIE_BYTES long');
  t.equal(COOKIE_BYTES, 16);
  t.notOk(messages.vectors.some((v) => v.name === 'ERROR' && (v.meaning['body'] as Obj)['code'] === ErrorCode.NOT_FOUND && /group/.test(v.note)), 'no example answers a missing group with NOT_FOUND (the server says FORBIDDEN: test/locatord/groups.test.ts)');
});

const keyObjects = (s: SessionKeysJson) => ({ terminalToServer: createSecretKey(unhex(s.terminalToServer)), serverToTerminal: createSecretKey(unhex(s.serverToTerminal)) });

t.test('message vectors', async (t) => {
  for (const [i, v] of messages.vectors.entries()) {
    t.test(`${i} ${v.name}`, async (t) => {
      const bytes = unhex(v.hex);
      const spec = specOf(MessageType[v.name])!;
      const d = decodeDatagram(bytes);
      if (!d.ok) {
        t.fail(`decodes: ${d.reason}`);
        return;
      }
      const msg = d.msg;
      t.equal(msg.name, v.name);
      const { auth: authMeaning, ...rest } = v.meaning;
      t.same(messageToJson(msg), rest, 'decoded message equals its meaning');
      t.strictSame(Object.keys(rest.body as Obj).sort(), Object.keys(messageToJson(msg).body as Obj).sort(), 'no field more, none less');

      // Re-encode from the decoded message.
      let again = encodeDatagram(msg.name, msg.rid, msg.body as never, msg.auth);
      // A body encoded once (a push fanned out to its watchers) gives the same bytes.
      t.equal(hex(encodeDatagram(msg.name, msg.rid, EncodedBody.of(msg.name, msg.body as never), msg.auth)), hex(again), 'same bytes from an EncodedBody');
      if (v.session) {
        t.ok(msg.auth, 'carries session auth');
        t.equal(spec.auth === 'session' || spec.name === 'ERROR', true, 'type allows session auth');
        const keys = keyObjects(messages.sessionKeys[v.session]);
        const expected = spec.direction === 'terminal->server' ? 'terminalToServer' : 'serverToTerminal';
        t.equal(v.macKey, expected, 'macKey follows the catalog direction');
        const key = keys[expected];
        const other = keys[expected === 'terminalToServer' ? 'serverToTerminal' : 'terminalToServer'];
        t.same(authMeaning, { sid: hex(msg.auth!.sid), seq: msg.auth!.seq, mac: hex(bytes.subarray(bytes.length - 16)) }, 'auth meaning');
        t.equal(hex(msg.auth!.sid), messages.sessionKeys[v.session].sid, 'sid is the session of the vector');
        t.ok(verifyDatagram(key, bytes), 'MAC verifies with verifyDatagram');
        // The servers' JavaScript MAC (hmac-sha256.ts) against the same vectors: interoperates.
        const raw = unhex(messages.sessionKeys[v.session][expected]);
        t.ok(verifyDatagram(raw, bytes, vectorMacs), 'MAC verifies with SessionMacs');
        t.equal(hex(sealDatagram(raw, Buffer.from(bytes), vectorMacs).subarray(bytes.length - 16)), hex(bytes.subarray(bytes.length - 16)), 'SessionMacs seals the same MAC');
        t.notOk(verifyDatagram(other, bytes), 'MAC does not verify with the other direction key');
        const independent = createHmac('sha256', unhex(messages.sessionKeys[v.session][expected])).update(bytes.subarray(0, bytes.length - 16)).digest().subarray(0, 16);
        t.equal(hex(independent), hex(bytes.subarray(bytes.length - 16)), 'MAC = HMAC-SHA-256(key, all but the last 16 bytes)[0..16]');
        t.equal(hex(again.subarray(again.length - 16)), '00'.repeat(16), 'encodeDatagram leaves a zero MAC slot');
        again = sealDatagram(key, again);
      } else {
        t.equal(authMeaning, undefined, 'no auth in the meaning');
        t.equal(msg.auth, undefined, 'no session auth decoded');
      }
      t.equal(hex(again), v.hex, 're-encoded byte for byte');

      // Independent CBOR: plain, deterministic, same structure, envelope as the meaning says.
      const value = checkWithCbor2(t, bytes, v.name) as unknown[];
      t.ok(Array.isArray(value) && value.length === (v.session ? 5 : 4), 'envelope array of 4 (5 with auth)');
      t.equal(value[0], 1, 'version 1');
      t.equal(value[1], MessageType[v.name], 'type');
      t.equal(hex(value[2] as Uint8Array), v.meaning['rid'], 'rid');
      const body = value[3] as Map<number, unknown>;
      t.ok(body instanceof Map, 'body is a map');
      const wantKeys = spec.fields.filter((f) => (v.meaning['body'] as Obj)[f.name] !== undefined).map((f) => f.key);
      t.strictSame([...body.keys()], wantKeys, 'body keys: the catalog keys of the meaning, ascending');
      if (v.session) {
        const a = value[4] as unknown[];
        t.equal(hex(a[0] as Uint8Array), messages.sessionKeys[v.session].sid, 'auth[0] is the sid');
        t.equal(a[1], (authMeaning as Obj)['seq'], 'auth[1] is seq');
        t.equal((a[2] as Uint8Array).length, 16, 'auth[2] is a 16-byte MAC');
      }
      t.ok(bytes.length <= 1200, 'fits in 1200 bytes');
    });
  }
});

t.test('session keys follow from the documented derivation (noble X25519)', async (t) => {
  const cnf = messages.sessionDerivation.terminalCnf;
  t.equal(hex(x25519.getPublicKey(unhex(cnf.secret))), cnf.public, 'cnf public half');
  t.equal(cnf.public, ticketJson.terminal.cnfPublic, 'same cnf key as the ticket');
  for (const service of ['locatord', 'matchd'] as const) {
    const svc = messages.sessionDerivation.services[service];
    const s = messages.sessionKeys[service];
    t.equal(hex(x25519.getPublicKey(unhex(svc.secret))), svc.public, `${service} public half`);
    const shared = x25519.getSharedSecret(unhex(svc.secret), unhex(cnf.public));
    t.equal(hex(shared), hex(x25519.getSharedSecret(unhex(cnf.secret), unhex(svc.public))), 'both sides agree');
    const okm = Buffer.from(hkdfSync('sha256', shared, unhex(s.sid), `devloc-session-v1 ${s.aud}`, 64));
    t.equal(hex(okm.subarray(0, 32)), s.terminalToServer, `${service} terminalToServer`);
    t.equal(hex(okm.subarray(32)), s.serverToTerminal, `${service} serverToTerminal`);
    // And devloc's own derivation, from the terminal's side.
    const own = deriveSessionKeys(privateKeyObject('X25519', { secret: unhex(cnf.secret), public: unhex(cnf.public) }), unhex(svc.public), unhex(s.sid), s.aud)!;
    t.equal(hex(rawKey(own.terminalToServer)), s.terminalToServer, 'deriveSessionKeys (terminal side) agrees');
    t.equal(hex(rawKey(own.serverToTerminal)), s.serverToTerminal);
  }
  t.not(messages.sessionKeys.locatord.terminalToServer, messages.sessionKeys.matchd.terminalToServer, 'each service its own keys');
});

t.test('ticket vector', async (t) => {
  const ticket = unhex(ticketJson.hex);
  t.equal(hex(ed25519.getPublicKey(unhex(ticketJson.authd.signSeed))), ticketJson.authd.signPublic, 'signPublic from the seed (noble)');

  // Independent structure: untagged COSE_Sign1 [protected, {4: kid}, payload, signature].
  const v = checkWithCbor2(t, ticket, 'ticket') as unknown[];
  t.equal(v.length, 4);
  t.equal(hex(v[0] as Uint8Array), ticketJson.protectedHex);
  t.same(plain(cbor2Decode(unhex(ticketJson.protectedHex), cbor2Options)), { map: [[1, -8]] }, 'protected = {1: -8} (alg EdDSA)');
  t.same(plain(v[1]), { map: [[4, { bstr: ticketJson.unprotected.kid }]] }, 'unprotected = {4: kid}');
  t.equal(hex(v[2] as Uint8Array), ticketJson.payloadHex);
  t.equal(hex(v[3] as Uint8Array), ticketJson.signature);

  const claims = checkWithCbor2(t, unhex(ticketJson.payloadHex), 'claims') as Map<number, unknown>;
  const c = ticketJson.claims;
  t.same(plain(claims), {
    map: [
      [1, c.iss], [2, c.sub], [3, c.aud], [4, c.exp], [6, c.iat], [7, { bstr: c.cti }],
      [8, { map: [[1, { map: [[1, c.cnf.kty], [-1, c.cnf.crv], [-2, { bstr: c.cnf.x }]] }]] }],
    ],
  }, 'claims map matches the JSON claims (CWT keys)');

  // Sig_structure built independently, signature checked with an independent Ed25519.
  const sigStructure = cbor2Encode(['Signature1', new Uint8Array(unhex(ticketJson.protectedHex)), new Uint8Array(0), new Uint8Array(unhex(ticketJson.payloadHex))]);
  t.equal(hex(sigStructure), ticketJson.sigStructureHex, 'Sig_structure');
  t.ok(ed25519.verify(unhex(ticketJson.signature), sigStructure, unhex(ticketJson.authd.signPublic)), 'noble ed25519 verifies the signature');
  const tampered = Buffer.from(sigStructure);
  tampered[tampered.length - 1]! ^= 1;
  t.notOk(ed25519.verify(unhex(ticketJson.signature), tampered, unhex(ticketJson.authd.signPublic)), 'and refuses a changed payload');

  // devloc's verifier and issuer agree.
  const verifier = new TicketVerifier({
    keys: new Map([[ticketJson.authd.kid, publicKeyObject('Ed25519', unhex(ticketJson.authd.signPublic))]]),
    audience: c.aud, now: () => ticketJson.verifyAt,
  });
  const r = verifier.verify(ticket);
  t.ok(r.ok, 'TicketVerifier accepts it');
  if (r.ok) {
    t.equal(r.kid, ticketJson.authd.kid);
    t.same(
      { iss: r.claims.iss, sub: hex(r.claims.locatorId), aud: r.claims.aud, exp: r.claims.exp, iat: r.claims.iat, cti: hex(r.claims.cti), x: hex(r.claims.cnf) },
      { iss: c.iss, sub: c.sub, aud: c.aud, exp: c.exp, iat: c.iat, cti: c.cti, x: c.cnf.x },
    );
  }
  const peek = peekTicket(ticket);
  t.ok(typeof peek !== 'string' && peek.kid === ticketJson.authd.kid, 'peekTicket reads it');
  const seed = unhex(ticketJson.authd.signSeed);
  const reissued = issueTicket(
    { locatorId: unhex(c.sub), aud: c.aud, iat: c.iat, exp: c.exp, cti: unhex(c.cti), cnf: unhex(c.cnf.x) },
    unhex(ticketJson.authd.kid),
    privateKeyObject('Ed25519', { secret: seed, public: unhex(ticketJson.authd.signPublic) }),
  );
  t.equal(hex(reissued), ticketJson.hex, 'issueTicket reproduces it');

  const register = messages.vectors.find((x) => x.name === 'REGISTER')!;
  t.equal((register.meaning['body'] as Obj)['ticket'], ticketJson.hex, 'the REGISTER vector carries this ticket');
  t.equal(c.cti, messages.sessionKeys.locatord.sid, 'its cti is the locatord session ID');
});

t.test('auth exchange vector', async (t) => {
  const a = authJson;
  const i = a.inputs;
  const rid = unhex(i.rid);
  t.equal(hex(ed25519.getPublicKey(unhex(i.device.signSeed))), i.device.signPublic, 'device public (noble)');
  t.equal(hex(x25519.getPublicKey(unhex(i.authd.sealSecret))), i.authd.sealPublic, 'authd seal public (noble)');
  t.equal(hex(x25519.getPublicKey(unhex(i.ephemeral.secret))), i.ephemeral.public, 'ephemeral public (noble)');
  t.equal(hex(x25519.getPublicKey(unhex(i.cnf.secret))), i.cnf.public, 'cnf public (noble)');
  t.equal(i.authd.signPublic, ticketJson.authd.signPublic, 'same authd as ticket.json');

  // Seal keys, derived independently.
  const shared = x25519.getSharedSecret(unhex(i.ephemeral.secret), unhex(i.authd.sealPublic));
  const okm = Buffer.from(hkdfSync('sha256', shared, Buffer.concat([unhex(i.ephemeral.public), unhex(i.authd.sealPublic)]), 'devloc-auth-v1', 64));
  t.equal(hex(okm.subarray(0, 32)), a.derived.sealKeys.request, 'request seal key');
  t.equal(hex(okm.subarray(32)), a.derived.sealKeys.response, 'response seal key');

  // The request datagram.
  const req = unhex(a.request.hex);
  t.equal(req.length, 1200, 'AUTH_REQUEST is exactly 1200 bytes');
  const d = decodeDatagram(req);
  t.ok(d.ok && d.msg.name === 'AUTH_REQUEST', 'decodes');
  if (!d.ok || d.msg.name !== 'AUTH_REQUEST') return;
  t.same(messageToJson(d.msg), a.request.meaning, 'request meaning');
  t.equal(hex(encodeDatagram('AUTH_REQUEST', d.msg.rid, d.msg.body)), a.request.hex, 're-encoded byte for byte');
  checkWithCbor2(t, req, 'AUTH_REQUEST');
  t.equal(a.derived.requestAad, hex(Buffer.concat([rid, unhex(i.authd.kid), unhex(i.ephemeral.public)])), 'aad = rid || kid || ephemeral');
  t.ok((d.msg.body.padding ?? new Uint8Array(0)).every((b) => b === 0), 'padding is zeros');

  // Open the sealed inner part independently (ChaCha20-Poly1305, 12 zero bytes of nonce).
  const open = (key: string, sealed: Uint8Array, aad: Uint8Array, nonce: Uint8Array = Buffer.alloc(12)): Buffer => {
    const c = createDecipheriv('chacha20-poly1305', unhex(key), nonce, { authTagLength: 16 });
    c.setAAD(aad, { plaintextLength: sealed.length - 16 });
    c.setAuthTag(sealed.subarray(sealed.length - 16));
    return Buffer.concat([c.update(sealed.subarray(0, sealed.length - 16)), c.final()]);
  };
  const innerPlain = open(a.derived.sealKeys.request, d.msg.body.sealed, unhex(a.derived.requestAad));
  t.equal(hex(innerPlain), a.derived.innerHex, 'inner plaintext');
  const inner = checkWithCbor2(t, innerPlain, 'AuthInner') as Map<number, unknown>;
  t.same(plain(inner), {
    map: [
      [1, i.deviceId], [2, i.timeMs], [3, { bstr: i.nonce }], [4, i.audiences], [5, { bstr: i.cnf.public }],
      [6, { bstr: a.derived.inner['signature'] as string }],
    ],
  }, 'AuthInner fields');

  // The proof: CBOR ["devloc-auth-v1", authd seal pub, E.pub, deviceId, timeMs, nonce, audiences, cnf].
  const proof = cbor2Encode([
    'devloc-auth-v1', new Uint8Array(unhex(i.authd.sealPublic)), new Uint8Array(unhex(i.ephemeral.public)), i.deviceId, i.timeMs,
    new Uint8Array(unhex(i.nonce)), i.audiences, new Uint8Array(unhex(i.cnf.public)),
  ]);
  t.equal(hex(proof), a.derived.proofInputHex, 'proof input (cbor2)');
  t.equal(hex(proofInput(unhex(i.authd.sealPublic), unhex(i.ephemeral.public), {
    deviceId: i.deviceId, timeMs: i.timeMs, nonce: unhex(i.nonce), audiences: i.audiences, cnf: unhex(i.cnf.public),
  })), a.derived.proofInputHex, 'proof input (devloc)');
  t.ok(ed25519.verify(unhex(a.derived.inner['signature'] as string), proof, unhex(i.device.signPublic)), 'device signature verifies (noble)');

  // devloc's authd side opens it.
  const authdSecret = privateKeyObject('X25519', { secret: unhex(i.authd.sealSecret), public: unhex(i.authd.sealPublic) });
  const opened = openAuthRequest(d.msg.rid, d.msg.body, authdSecret, (id) =>
    id === i.deviceId ? { ok: true, key: publicKeyObject('Ed25519', unhex(i.device.signPublic)) } : { ok: false, code: ErrorCode.UNKNOWN_DEVICE, reason: 'unknown' });
  t.ok(opened.ok, 'openAuthRequest accepts it');
  if (!opened.ok) return;
  t.equal(hex(opened.keys.request), a.derived.sealKeys.request);
  t.equal(hex(opened.keys.response), a.derived.sealKeys.response);
  t.same(fieldsToJson(authInnerFields, opened.inner as unknown as Record<string, unknown>), a.derived.inner, 'opened inner = derived.inner');

  // The deterministic builder reproduces the request.
  const rebuilt = buildAuthRequestWith(
    {
      rid, deviceId: i.deviceId, deviceKey: privateKeyObject('Ed25519', { secret: unhex(i.device.signSeed), public: unhex(i.device.signPublic) }),
      authdKid: unhex(i.authd.kid), authdSealPublic: unhex(i.authd.sealPublic), audiences: i.audiences, cnf: unhex(i.cnf.public), timeMs: i.timeMs,
    },
    { secret: unhex(i.ephemeral.secret), public: unhex(i.ephemeral.public) },
    unhex(i.nonce),
  );
  t.equal(hex(rebuilt.datagram), a.request.hex, 'buildAuthRequestWith reproduces the request');
  t.equal(hex(rebuilt.nonce), i.nonce);

  // The response.
  const resp = unhex(a.response.hex);
  const rd = decodeDatagram(resp);
  t.ok(rd.ok && rd.msg.name === 'AUTH_RESPONSE', 'response decodes');
  if (!rd.ok || rd.msg.name !== 'AUTH_RESPONSE') return;
  t.same(messageToJson(rd.msg), a.response.meaning, 'response meaning');
  t.equal(hex(rd.msg.rid), i.rid, 'response carries the request ID');
  t.ok(resp.length <= req.length, 'response no larger than the request (anti-amplification)');
  checkWithCbor2(t, resp, 'AUTH_RESPONSE');
  // The response is nonce(12) || ciphertext || tag; the request's nonce is 16 bytes (as the page says).
  t.equal(hex(rd.msg.body.sealed.subarray(0, 12)), a.derived.responseNonce, 'the response starts with its 12-byte seal nonce');
  t.equal(unhex(i.nonce).length, 16, 'the request nonce is 16 bytes');
  const grantPlain = open(a.derived.sealKeys.response, rd.msg.body.sealed.subarray(12), rid, rd.msg.body.sealed.subarray(0, 12));
  t.equal(hex(grantPlain), a.grant.cborHex, 'grant plaintext (independent open, aad = rid)');
  checkWithCbor2(t, grantPlain, 'AuthGrant');
  const g = openAuthGrant(rebuilt.keys, rid, rd.msg.body.sealed, unhex(i.nonce));
  t.ok(g.ok, 'openAuthGrant opens it');
  if (g.ok) t.same(fieldsToJson(authGrantFields, g.grant as unknown as Record<string, unknown>), a.grant.meaning, 'grant meaning');
  const grantTickets = (a.grant.meaning['tickets'] as Obj[]);
  t.equal(grantTickets[0]!['ticket'], ticketJson.hex, 'locatord ticket is ticket.json');
  for (const gt of grantTickets) {
    // The grant names the service by its service ID; the vectors' session keys are per daemon.
    const aud = (['locatord', 'matchd'] as const).find((d) => messages.sessionKeys[d].aud === gt['aud'])!;
    t.equal(gt['aud'], DEFAULT_SERVICE_IDS[aud], `${aud}: the service ID is the default one (DEFAULT_SERVICE_IDS)`);
    const p = peekTicket(unhex(gt['ticket'] as string));
    t.ok(typeof p !== 'string' && hex(p.claims.cti) === messages.sessionKeys[aud].sid, `${aud} ticket cti is its session ID`);
    t.equal(gt['serviceKey'], messages.sessionDerivation.services[aud].public, `${aud} serviceKey`);
    const pub = ed25519.getPublicKey(unhex(ticketJson.authd.signSeed));
    const sign1 = cbor2Decode(unhex(gt['ticket'] as string), cbor2Options) as Uint8Array[];
    const sig = cbor2Encode(['Signature1', new Uint8Array(sign1[0]!), new Uint8Array(0), new Uint8Array(sign1[2]!)]);
    t.ok(ed25519.verify(new Uint8Array(sign1[3]!), sig, pub), `${aud} ticket signature (noble)`);
  }
  // A key pair unrelated to the request cannot open the grant.
  const wrong = openAuthGrant({ request: okm.subarray(32), response: okm.subarray(0, 32) }, rid, rd.msg.body.sealed, unhex(i.nonce));
  t.notOk(wrong.ok, 'the request key does not open the response');
});

// ---------------------------------------------------------------------------------------------
// Negative variants: each vector edited in one place must be refused with the right code, and
// the refusal must carry what the server needs to answer (rid, type, session auth).

type Env = CborValue[];
function variant(name: MessageName, edit: (env: Env, body: Map<number | string, CborValue>) => void, which = 0): Buffer {
  const v = messages.vectors.filter((x) => x.name === name)[which]!;
  const d = decodeStrict(unhex(v.hex));
  if (!d.ok) throw new Error('vector does not decode');
  const env = d.value as Env;
  edit(env, env[3] as Map<number | string, CborValue>);
  return encodeCbor(env);
}

t.test('negative variants of the vectors: envelope', async (t) => {
  const refused = (bytes: Uint8Array, code: number, what: string) => {
    const d = decodeDatagram(bytes);
    t.equal(d.ok ? 'ok' : d.code, code, what);
    return d.ok ? undefined : d;
  };
  const ridOf = (name: MessageName) => messages.vectors.find((x) => x.name === name)!.meaning['rid'];
  const v2 = refused(variant('REGISTER', (e) => (e[0] = 2)), ErrorCode.UNSUPPORTED_VERSION, 'version 2');
  t.equal(v2?.rid ? hex(v2.rid) : null, ridOf('REGISTER'), 'UNSUPPORTED_VERSION names the rid');
  refused(variant('REGISTER', (e) => (e[0] = 0)), ErrorCode.UNSUPPORTED_VERSION, 'version 0');
  const unk = refused(variant('REGISTER', (e) => (e[1] = 0x7e)), ErrorCode.UNKNOWN_TYPE, 'type 0x7e');
  t.equal(unk?.rid ? hex(unk.rid) : null, ridOf('REGISTER'), 'UNKNOWN_TYPE names the rid');
  refused(variant('REGISTER', (e) => (e[1] = '16')), ErrorCode.UNKNOWN_TYPE, 'type as text');
  refused(variant('REGISTER', (e) => (e[1] = -16)), ErrorCode.UNKNOWN_TYPE, 'negative type');
  refused(variant('REGISTER', (e) => (e[2] = (e[2] as Uint8Array).subarray(0, 7))), ErrorCode.MALFORMED, 'rid of 7 bytes');
  refused(variant('REGISTER', (e) => (e[2] = 'rid')), ErrorCode.MALFORMED, 'rid as text');
  refused(variant('REFLECT', (e) => e.pop()), ErrorCode.MALFORMED, 'envelope of 3 items');
  refused(variant('REGISTER', (e) => e.push(0)), ErrorCode.MALFORMED, 'envelope of 6 items');
  refused(encodeCbor(new Map([[1, 1]])), ErrorCode.MALFORMED, 'a map, not an array');
  const noAuth = refused(variant('REGISTER', (e) => e.pop()), ErrorCode.BAD_MESSAGE, 'REGISTER without session auth');
  t.equal(noAuth?.type, MessageType.REGISTER, 'refusal names the type');
  refused(variant('REFLECT', (e) => e.push([new Uint8Array(16), 1, new Uint8Array(16)])), ErrorCode.BAD_MESSAGE, 'REFLECT with session auth');
  refused(variant('AUTH_REQUEST', (e) => e.splice(3, 1, new Map([[1, new Uint8Array(4)]]), [new Uint8Array(16), 1, new Uint8Array(16)])), ErrorCode.BAD_MESSAGE, 'AUTH_REQUEST with session auth');
  const authEdits: [string, (a: CborValue[]) => void][] = [
    ['sid of 15 bytes', (a) => (a[0] = (a[0] as Uint8Array).subarray(1))],
    ['mac of 15 bytes', (a) => (a[2] = (a[2] as Uint8Array).subarray(1))],
    ['negative seq', (a) => (a[1] = -1)],
    ['seq as text', (a) => (a[1] = '1')],
    ['4 items', (a) => a.push(0)],
    ['sid as text', (a) => (a[0] = 'x'.repeat(16))],
  ];
  for (const [what, edit] of authEdits) {
    refused(variant('QUERY_ADDR', (e) => edit(e[4] as CborValue[])), ErrorCode.BAD_MESSAGE, `auth: ${what}`);
  }
  refused(variant('QUERY_ADDR', (e) => (e[4] = new Map())), ErrorCode.BAD_MESSAGE, 'auth as a map');
  const bodyArr = refused(variant('QUERY_ADDR', (e) => (e[3] = [])), ErrorCode.BAD_MESSAGE, 'body as an array');
  t.same(bodyArr?.auth ? { sid: hex(bodyArr.auth.sid), seq: bodyArr.auth.seq } : null, { sid: messages.sessionKeys.locatord.sid, seq: 4 }, 'a refused session message carries its auth (so the ERROR can be MACed)');
  // Too large: the AUTH_REQUEST with one more byte of padding.
  refused(variant('AUTH_REQUEST', (_e, b) => b.set(15, new Uint8Array((b.get(15) as Uint8Array).length + 1))), ErrorCode.TOO_LARGE, '1201 bytes');
  // ERROR may carry session auth (its vector does) or not.
  t.ok(decodeDatagram(variant('ERROR', (e) => e.pop(), 1)).ok, 'ERROR without auth');
});

t.test('negative variants of the vectors: body schema', async (t) => {
  const bad = (name: MessageName, edit: (b: Map<number | string, CborValue>) => void, what: string, which = 0) => {
    const d = decodeDatagram(variant(name, (_e, b) => edit(b), which));
    t.equal(d.ok ? 'ok' : d.code, ErrorCode.BAD_MESSAGE, `${name}: ${what}`);
  };
  const good = (name: MessageName, edit: (b: Map<number | string, CborValue>) => void, what: string) => {
    const d = decodeDatagram(variant(name, (_e, b) => edit(b)));
    t.ok(d.ok, `${name}: ${what} accepted${d.ok ? '' : ` (${d.reason})`}`);
  };
  bad('REGISTER', (b) => b.delete(2), 'required timeMs missing');
  bad('REGISTER', (b) => b.set(2, -1), 'negative uint');
  bad('REGISTER', (b) => b.set(2, '1'), 'uint as text');
  bad('REGISTER', (b) => b.set(4, 7), 'netMode 7 (> 6)');
  good('REGISTER', (b) => b.set(4, 6), 'netMode 6');
  bad('REGISTER', (b) => b.set(5, 'x'.repeat(33)), 'nickname of 33 bytes');
  good('REGISTER', (b) => b.set(5, 'x'.repeat(32)), 'nickname of 32 bytes');
  bad('REGISTER', (b) => b.set(5, 'ë'.repeat(17)), 'nickname of 17 characters but 34 bytes');
  bad('REGISTER', (b) => b.set(5, new Uint8Array(3)), 'nickname as bytes');
  bad('REGISTER', (b) => b.set(3, Array.from({ length: 5 }, () => [new Uint8Array(4), 1])), '5 localAddrs (max 4)');
  bad('REGISTER', (b) => b.set(3, [[new Uint8Array(5), 1]]), 'address of 5 bytes');
  bad('REGISTER', (b) => b.set(3, [[new Uint8Array(4), 65536]]), 'port 65536');
  bad('REGISTER', (b) => b.set(3, [[new Uint8Array(4), -1]]), 'port -1');
  bad('REGISTER', (b) => b.set(3, [[new Uint8Array(4)]]), 'address without port');
  bad('REGISTER', (b) => b.set(3, [['1.2.3.4', 80]]), 'address as text');
  bad('REGISTER', (b) => b.set(9, [new Uint8Array(15)]), 'locator ID of 15 bytes');
  bad('REGISTER', (b) => b.set(9, [new Uint8Array(17)]), 'locator ID of 17 bytes');
  bad('REGISTER', (b) => b.set(8, 2), 'visibility 2');
  bad('REGISTER', (b) => b.set(10, [new Map([[2, 'code']])]), 'joinGroups entry without groupId');
  bad('REGISTER', (b) => b.set(10, [[new Uint8Array(16)]]), 'joinGroups entry not a map');
  bad('REGISTER', (b) => b.set(7, new Map([['__proto__', 1]])), 'community key __proto__');
  bad('REGISTER', (b) => b.set(7, new Map([['', 1]])), 'community key empty');
  bad('REGISTER', (b) => b.set(7, new Map([['k'.repeat(33), 1]])), 'community key of 33 bytes');
  bad('REGISTER', (b) => b.set(7, new Map([[1, 1]])), 'community key an int');
  bad('REGISTER', (b) => b.set(7, new Map([['k', [1]]])), 'community value an array');
  bad('REGISTER', (b) => b.set(7, new Map([['k', null]])), 'community value null');
  bad('REGISTER', (b) => b.set(7, new Map([['k', 'v'.repeat(65)]])), 'community text of 65 bytes');
  bad('REGISTER', (b) => b.set(7, new Map(Array.from({ length: 17 }, (_, i) => [`k${i}`, i]))), '17 community properties');
  bad('REGISTER', (b) => b.set(1, new Uint8Array(601)), 'ticket of 601 bytes');
  good('REGISTER', (b) => b.set(99, 'from the future'), 'an unknown key (ignored)');
  good('REGISTER', (b) => b.set('x', 1), 'an unknown text key (ignored)');
  bad('QUERY_ADDR', (b) => b.set(1, Array.from({ length: 65 }, () => new Uint8Array(16))), '65 IDs (max 64)');
  bad('QUERY_ADDR_RESULT', (b) => b.set(1, [new Map<number, CborValue>([[1, new Uint8Array(16)], [2, 1]])]), 'online as 1, not true');
  bad('REFLECT_RESULT', (b) => b.set(4, new Uint8Array(3)), 'otherIp of 3 bytes');
  bad('REFLECT_RESULT', (b) => b.set(3, 65536), 'otherPort 65536');
  bad('MATCH_SUBMIT', (b) => b.set(10, 3601), 'maxWaitS 3601');
  bad('MATCH_SUBMIT', (b) => b.set(8, [new Map<number, CborValue>([[1, 'a'], [2, 3]])]), 'requirement op 3');
  bad('ERROR', (b) => b.set(1, 'NOT_FOUND'), 'code as text');
  bad('ERROR', (b) => b.set(2, 'm'.repeat(121)), 'message of 121 bytes', 1);
  // A decoded unknown key never reaches the typed body.
  const d = decodeDatagram(variant('GROUP_JOIN', (_e, b) => b.set(9, 'x')));
  t.same(d.ok ? Object.keys(d.msg.body).sort() : null, ['groupId', 'nonce', 'proof'], 'unknown keys dropped');
});
