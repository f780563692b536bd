// Key material and key files: known-answer tests against RFC 8032 / RFC 7748 and @noble/curves,
// key file round trips, refusals (mismatched public half, bad encodings), and public printing.
import { ed25519, x25519 as nobleX25519 } from '@noble/curves/ed25519.js';
import t from 'tap';
import type { KeyFile } from '../../src/wire/keys.js';
import {
  ed25519Sign, ed25519Verify, generatePair, isDeviceId, isServiceId, keyFileToJson, newAuthdKey, newDeviceKey, newKid, newServiceKey,
  parseKeyFile, parsePublicKeyFile, privateKeyObject, publicFromSecret, publicKeyObject, publicOf, publicToJson, rawPublicKey, x25519,
} from '../../src/wire/keys.js';

const h = (s: string): Buffer => Buffer.from(s, 'hex');
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const b64 = (b: Uint8Array): string => Buffer.from(b).toString('base64url');

// RFC 8032 §7.1 TEST 1 and TEST 2.
const T1 = {
  seed: '9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60',
  pub: 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a',
  msg: '',
  sig: 'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b',
};
const T2 = {
  seed: '4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb',
  pub: '3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c',
  msg: '72',
  sig: '92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00',
};
// RFC 7748 §6.1.
const X = {
  alicePriv: '77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a',
  alicePub: '8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a',
  bobPriv: '5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb',
  bobPub: 'de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f',
  shared: '4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742',
};

t.test('Ed25519 known answers (RFC 8032) and noble agreement', async (t) => {
  for (const v of [T1, T2]) {
    const key = privateKeyObject('Ed25519', { secret: h(v.seed), public: h(v.pub) });
    const sig = ed25519Sign(key, h(v.msg));
    t.equal(hex(sig), v.sig, 'signature = RFC 8032');
    t.ok(ed25519Verify(publicKeyObject('Ed25519', h(v.pub)), h(v.msg), sig), 'verifies');
    t.ok(ed25519.verify(sig, h(v.msg), h(v.pub)), 'noble verifies it');
    const other = Buffer.from(h(v.msg + '00'));
    t.notOk(ed25519Verify(publicKeyObject('Ed25519', h(v.pub)), other, sig), 'other message refused');
  }
  const pub = publicKeyObject('Ed25519', h(T1.pub));
  t.equal(ed25519Verify(pub, h(''), h(T1.sig).subarray(0, 63)), false, '63-byte signature: false');
  t.equal(ed25519Verify(pub, h(''), Buffer.concat([h(T1.sig), h('00')])), false, '65-byte signature: false');
  // S + L (the group order) is the same point but not canonical: strict verification refuses.
  const L = (1n << 252n) + 27742317777372353535851937790883648493n;
  const sig = h(T1.sig);
  const s = BigInt('0x' + Buffer.from(sig.subarray(32)).reverse().toString('hex')) + L;
  const sBytes = Buffer.from(s.toString(16).padStart(64, '0'), 'hex').reverse();
  t.equal(ed25519Verify(pub, h(''), Buffer.concat([sig.subarray(0, 32), sBytes])), false, 'non-canonical S refused (no malleability)');
});

t.test('X25519 known answer (RFC 7748) and low-order / malformed peers', async (t) => {
  const alice = privateKeyObject('X25519', { secret: h(X.alicePriv), public: h(X.alicePub) });
  const bob = privateKeyObject('X25519', { secret: h(X.bobPriv), public: h(X.bobPub) });
  t.equal(hex(x25519(alice, h(X.bobPub))!), X.shared, 'Alice side');
  t.equal(hex(x25519(bob, h(X.alicePub))!), X.shared, 'Bob side');
  t.equal(hex(nobleX25519.getSharedSecret(h(X.alicePriv), h(X.bobPub))), X.shared, 'noble agrees');
  t.equal(x25519(alice, new Uint8Array(32)), null, 'all-zero peer key (low order): null');
  t.equal(x25519(alice, h('0100000000000000000000000000000000000000000000000000000000000000')), null, 'point of order 1: null');
  t.equal(x25519(alice, new Uint8Array(31)), null, '31 bytes: null, no throw');
  t.equal(x25519(alice, new Uint8Array(33)), null, '33 bytes: null, no throw');
});

t.test('generatePair: raw 32-byte halves that belong together', async (t) => {
  const e = generatePair('ed25519');
  t.equal(e.secret.length, 32);
  t.equal(e.public.length, 32);
  t.equal(hex(ed25519.getPublicKey(e.secret)), hex(e.public), 'ed25519 public matches secret (noble)');
  const x = generatePair('x25519');
  t.equal(hex(nobleX25519.getPublicKey(x.secret)), hex(x.public), 'x25519 public matches secret (noble)');
  t.not(hex(generatePair('ed25519').secret), hex(e.secret), 'fresh each time');
  t.match(newKid(), /^[0-9a-f]{8}$/);
});

t.test('keys from raw bytes (DER, no JWK): known answers and refusals', async (t) => {
  t.equal(hex(publicFromSecret('ed25519', h(T1.seed))), T1.pub, 'RFC 8032 TEST 1 public key');
  t.equal(hex(publicFromSecret('x25519', h(X.alicePriv))), X.alicePub, 'RFC 7748 alice public key');
  const k = privateKeyObject('Ed25519', { secret: h(T1.seed), public: h(T1.pub) });
  t.equal(hex(ed25519Sign(k, h(T1.msg))), T1.sig, 'signs as RFC 8032 says');
  t.equal(hex(rawPublicKey(k)), T1.pub, 'rawPublicKey of a private key');
  t.equal(hex(rawPublicKey(publicKeyObject('Ed25519', h(T1.pub)))), T1.pub, 'rawPublicKey of a public key');
  t.equal(publicKeyObject('X25519', h(X.alicePriv)).asymmetricKeyType, 'x25519');
  t.equal(publicKeyObject('Ed25519', h(T1.pub)).asymmetricKeyType, 'ed25519');
  const unaligned = Buffer.concat([Buffer.from([0]), h(T1.seed)]).subarray(1);
  t.equal(hex(publicFromSecret('ed25519', unaligned)), T1.pub, 'a view at an odd offset');
  for (const n of [0, 31, 33]) {
    t.throws(() => publicKeyObject('Ed25519', new Uint8Array(n)), TypeError, `public key of ${n} bytes refused`);
    t.throws(() => privateKeyObject('X25519', { secret: Buffer.alloc(n), public: Buffer.alloc(32) }), TypeError, `secret of ${n} bytes refused`);
  }
});

t.test('new key files', async (t) => {
  const a = newAuthdKey();
  t.equal(a.kind, 'authd');
  if (a.kind === 'authd') t.match(a.kid, /^[0-9a-f]{8}$/);
  t.match(a.created ?? '', /^\d{4}-\d\d-\d\dT/);
  const s = newServiceKey('locatord');
  t.same(s.kind === 'service' ? s.service : null, 'locatord');
  t.throws(() => newServiceKey('Locatord'), TypeError, 'uppercase service ID refused');
  t.throws(() => newServiceKey('-x'), TypeError, 'leading dash refused');
  const d = newDeviceKey();
  t.match(d.kind === 'device' ? d.deviceId : '', /^D[0-9A-F]{16}$/, 'generated device ID');
  t.same((k => (k.kind === 'device' ? k.deviceId : null))(newDeviceKey('DEV-1')), 'DEV-1');
  t.throws(() => newDeviceKey('has space'), TypeError);
  t.throws(() => newDeviceKey('x'.repeat(65)), TypeError, '65 characters refused');
});

t.test('ID syntax', async (t) => {
  t.ok(isDeviceId('x'.repeat(64)));
  t.notOk(isDeviceId('x'.repeat(65)));
  t.notOk(isDeviceId(''));
  t.ok(isDeviceId('A.b_c:d-9'));
  t.notOk(isDeviceId('a/b'));
  t.notOk(isDeviceId('Zoë'));
  t.ok(isServiceId('a'));
  t.ok(isServiceId('a'.repeat(64)));
  t.notOk(isServiceId('a'.repeat(65)));
  t.notOk(isServiceId('.a'));
  t.ok(isServiceId('0match.d-1'));
  t.notOk(isServiceId('a_b'));
  t.notOk(isServiceId('A'));
});

const fixed = (): KeyFile[] => [
  { kind: 'authd', kid: '7a1e0001', sign: { secret: h(T1.seed), public: h(T1.pub) }, seal: { secret: h(X.bobPriv), public: h(X.bobPub) }, created: '2026-01-01T00:00:00.000Z' },
  { kind: 'service', service: 'locatord', seal: { secret: h(X.alicePriv), public: h(X.alicePub) } },
  { kind: 'device', deviceId: 'DEVLOC-TEST-0001', sign: { secret: h(T2.seed), public: h(T2.pub) } },
];

t.test('key files: serialize and parse back', async (t) => {
  for (const k of [...fixed(), newAuthdKey(), newServiceKey('matchd'), newDeviceKey()]) {
    const text = keyFileToJson(k);
    t.ok(text.endsWith('\n'), `${k.kind}: newline-terminated`);
    const o = JSON.parse(text) as Record<string, unknown>;
    for (const f of ['sign', 'seal'] as const) {
      if (f in k) {
        const pair = (k as Record<string, unknown>)[f] as { secret: Buffer; public: Buffer };
        t.same(o[f], { public: b64(pair.public), secret: b64(pair.secret) }, `${k.kind}.${f}: raw 32 bytes in base64url`);
      }
    }
    const p = parseKeyFile(text);
    t.ok(p.ok, `${k.kind}: parses`);
    if (p.ok) t.same(p.value, k, `${k.kind}: same key back`);
  }
  const [authd] = fixed();
  t.same(JSON.parse(keyFileToJson(authd!)), {
    kind: 'authd', kid: '7a1e0001', created: '2026-01-01T00:00:00.000Z',
    sign: { public: b64(h(T1.pub)), secret: b64(h(T1.seed)) },
    seal: { public: b64(h(X.bobPub)), secret: b64(h(X.bobPriv)) },
  }, 'documented layout');
});

t.test('key files: refusals', async (t) => {
  const [authd, service, device] = fixed().map((k) => JSON.parse(keyFileToJson(k)) as Record<string, Record<string, string> | string>);
  const edit = (o: Record<string, unknown>, f: (c: Record<string, any>) => void): string => {
    const c = JSON.parse(JSON.stringify(o)) as Record<string, any>;
    f(c);
    return JSON.stringify(c);
  };
  const refused = (text: string, pattern: RegExp, what: string): void => {
    const r = parseKeyFile(text);
    t.notOk(r.ok, `${what}: refused`);
    if (!r.ok) t.match(r.error, pattern, `${what}: says why`);
  };
  refused(edit(authd!, (c) => (c['sign'].public = b64(h(T2.pub)))), /sign\.public does not match/, 'authd sign public of another key');
  refused(edit(authd!, (c) => (c['seal'].public = b64(h(X.alicePub)))), /seal\.public does not match/, 'authd seal public of another key');
  refused(edit(service!, (c) => (c['seal'].public = b64(h(X.bobPub)))), /seal\.public does not match/, 'service seal mismatch');
  refused(edit(device!, (c) => (c['sign'].public = b64(h(T1.pub)))), /sign\.public does not match/, 'device sign mismatch');
  refused(edit(device!, (c) => (c['sign'].secret = b64(h(T1.seed)))), /sign\.public does not match/, 'device secret swapped');
  refused(edit(device!, (c) => (c['sign'].secret = b64(h(T2.seed).subarray(0, 31)))), /sign\.secret is not 32 bytes/, '31-byte secret');
  refused(edit(device!, (c) => (c['sign'].public = Buffer.from(h(T2.pub)).toString('base64'))), /not 32 bytes of base64url/, 'padded standard base64');
  refused(edit(device!, (c) => delete c['sign'].secret), /sign\.secret missing/, 'secret missing');
  refused(edit(device!, (c) => delete c['sign']), /sign missing/, 'pair missing');
  refused(edit(authd!, (c) => (c['kid'] = 'XYZ')), /kid must be hex/, 'kid not hex');
  refused(edit(service!, (c) => (c['service'] = 'Bad Service')), /service ID invalid/, 'service ID');
  refused(edit(device!, (c) => (c['deviceId'] = 'a b')), /deviceId invalid/, 'device ID');
  refused(edit(device!, (c) => (c['kind'] = 'device-public')), /unknown kind/, 'public kind is not a private key file');
  refused('not json', /./, 'not JSON');
  refused('null', /./, 'null');
  refused('[]', /unknown kind/, 'array');
});

t.test('public halves: printing and parsing', async (t) => {
  for (const k of fixed()) {
    const pub = publicOf(k);
    const text = publicToJson(pub);
    t.notMatch(text, /secret/, `${k.kind}: no "secret" in the public file`);
    for (const pair of ['sign', 'seal'] as const) {
      if (pair in k) t.notMatch(text, b64((k as unknown as Record<string, { secret: Buffer }>)[pair]!.secret), `${k.kind}: no ${pair} secret bytes`);
    }
    const o = JSON.parse(text) as Record<string, string>;
    t.equal(o['kind'], `${k.kind}-public`);
    if (k.kind === 'authd') t.same(o, { kind: 'authd-public', kid: k.kid, sign: b64(k.sign.public), seal: b64(k.seal.public) });
    if (k.kind === 'service') t.same(o, { kind: 'service-public', service: k.service, seal: b64(k.seal.public) });
    if (k.kind === 'device') t.same(o, { kind: 'device-public', deviceId: k.deviceId, sign: b64(k.sign.public) });
    const back = parsePublicKeyFile(text);
    t.ok(back.ok);
    if (back.ok) t.same(back.value, pub, `${k.kind}: public file parses back`);
    // A private key file is also accepted where a public one is expected; only the public half is kept.
    const fromPrivate = parsePublicKeyFile(keyFileToJson(k));
    t.ok(fromPrivate.ok);
    if (fromPrivate.ok) t.same(fromPrivate.value, pub, `${k.kind}: public half of a private file`);
  }
  const bad = parsePublicKeyFile(JSON.stringify({ kind: 'device-public', deviceId: 'D', sign: 'AAAA' }));
  t.notOk(bad.ok, 'short key refused');
  t.notOk(parsePublicKeyFile(JSON.stringify({ kind: 'alien' })).ok, 'unknown kind refused');
  const pubOf = (o: Record<string, unknown>) => parsePublicKeyFile(JSON.stringify(o));
  const x = b64(h(T1.pub));
  t.notOk(pubOf({ kind: 'authd-public', kid: 'XYZ', sign: x, seal: x }).ok, 'public file: kid not hex refused');
  t.notOk(pubOf({ kind: 'service-public', service: 'Bad Service', seal: x }).ok, 'public file: bad service ID refused');
  t.notOk(pubOf({ kind: 'device-public', deviceId: 'a b', sign: x }).ok, 'public file: bad device ID refused');
  t.notOk(parsePublicKeyFile('{').ok, 'bad JSON refused');
});
