// The authentication exchange against an in-process authd on real UDP (127.0.0.1, port 0):
// the grant, the tickets, locator IDs, and every refusal with its code on the wire.
import t from 'tap';
import { createHmac, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { AuthDb } from '../../src/authd/db.js';
import { LocatorIds } from '../../src/authd/locator.js';
import { UdpClient } from '../../src/net/client.js';
import { buildAuthRequestWith } from '../../src/wire/auth.js';
import { AUTH_REQUEST_SIZE } from '../../src/wire/constants.js';
import { decodeDatagram, encodeDatagram } from '../../src/wire/envelope.js';
import { ErrorCode } from '../../src/wire/errors.js';
import { generatePair, newDeviceKey, privateKeyObject } from '../../src/wire/keys.js';
import type { DeviceKeyFile } from './fixtures/helpers.js';
import { authenticate, buildRequest, client, fixture, inProcess, rawExchange, send, verifierFor } from './fixtures/helpers.js';

t.test('happy path: grant opens, tickets verify, locator IDs stable and distinct', async (t) => {
  const f = fixture(t);
  const a = await inProcess(t, f, { cookieThreshold: -1 });
  const c = await client(t);
  const [d0, d1] = f.devices as [DeviceKeyFile, DeviceKeyFile];
  const r1 = await authenticate(c, a.port, { device: d0, authd: f.authdKey, audiences: ['locator', 'matchd'] });
  t.ok(r1.ok, 'granted');
  if (!r1.ok) return;
  t.ok(r1.reply.raw.length <= AUTH_REQUEST_SIZE, `reply (${r1.reply.raw.length} B) no larger than the request`);
  t.same(r1.grant.tickets.map((x) => x.aud), ['locator', 'matchd']);
  const loc = r1.grant.tickets[0]!;
  t.ok(Buffer.from(loc.serviceKey).equals(f.locator.seal.public), 'grant carries the service key');
  t.same(loc.addr, { ip: '127.0.0.1', port: 4701 }, 'and its address');
  t.equal(r1.grant.tickets[1]!.addr, undefined, 'no address when none is registered');
  const v = verifierFor('locator', f.authdKey).verify(loc.ticket);
  t.ok(v.ok, 'ticket verifies for its audience');
  if (v.ok) {
    t.equal(v.kid, f.authdKey.kid);
    t.ok(v.claims.locatorId.equals(Buffer.from(r1.grant.locatorId)), 'sub = locator ID');
    t.equal(v.claims.exp - v.claims.iat, 3600, 'default lifetime');
    t.ok(Math.abs(v.claims.iat - Date.now() / 1000) < 5, 'iat is now');
    t.equal(v.claims.cti.length, 16);
    t.equal(loc.exp, v.claims.exp);
  }
  t.equal(verifierFor('matchd', f.authdKey).verify(loc.ticket).ok, false, 'not valid for another audience');
  const m = verifierFor('matchd', f.authdKey).verify(r1.grant.tickets[1]!.ticket);
  t.ok(m.ok);
  if (m.ok && v.ok) t.not(m.claims.cti.toString('hex'), v.claims.cti.toString('hex'), 'cti differs per ticket');

  const r2 = await authenticate(c, a.port, { device: d0, authd: f.authdKey });
  const r3 = await authenticate(c, a.port, { device: d1, authd: f.authdKey });
  t.ok(r2.ok && r3.ok);
  if (!r2.ok || !r3.ok) return;
  t.same(Buffer.from(r2.grant.locatorId), Buffer.from(r1.grant.locatorId), 'same device, same locator ID');
  t.not(Buffer.from(r3.grant.locatorId).toString('hex'), Buffer.from(r1.grant.locatorId).toString('hex'), 'other device, other locator ID');
  const secret = Buffer.from(readFileSync(LocatorIds.fileIn(f.stateDir), 'utf8').trim(), 'base64url');
  const expected = createHmac('sha256', secret).update(d0.deviceId).digest().subarray(0, 16);
  t.ok(expected.equals(Buffer.from(r1.grant.locatorId)), 'locator ID = HMAC-SHA-256(secret, deviceId)[0..16)');
  t.equal(a.metrics.get('auth_ok_total'), 3);
  t.equal(a.metrics.get('signatures_total'), 4, 'one signature per ticket');
  t.equal(a.metrics.get('tickets_issued_total', { aud: 'locator' }), 3);
  t.match(a.metrics.render(), /devloc_authd_db_bytes \d+/);
});

t.test('authd.db\'s change stamp is read once per authentication, and a relay added meanwhile is in the next grant', async (t) => {
  const f = fixture(t, 1);
  const a = await inProcess(t, f, { cookieThreshold: -1, pushRevocations: false });
  const c = await client(t);
  const d = f.devices[0]!;
  let stamps = 0;
  let versions = 0;
  const changeStamp = a.db.changeStamp.bind(a.db);
  const dataVersion = a.db.dataVersion.bind(a.db);
  a.db.changeStamp = () => (stamps++, changeStamp());
  a.db.dataVersion = () => (versions++, dataVersion());
  const first = await authenticate(c, a.port, { device: d, authd: f.authdKey, audiences: ['locator', 'matchd'] });
  t.ok(first.ok && first.grant.tickets.length === 2 && first.grant.relays === undefined, 'two tickets, no relay yet');
  t.equal(stamps, 1, 'one reading for the device row, both service rows and the relay list');
  t.equal(versions, 0, 'no second reading for the relay list');
  const secret = path.join(f.dir, 'relay.secret');
  writeFileSync(secret, 'abcdefghijklmnopq\n', { mode: 0o400 });
  const admin = AuthDb.open(f.stateDir); // another connection, as devloc relay add would be
  admin.putRelay({ relayId: 'r1', udp: '192.0.2.7:3478', secretFile: secret }, false);
  admin.close();
  const next = await authenticate(c, a.port, { device: d, authd: f.authdKey, audiences: ['locator'] });
  t.ok(next.ok);
  if (next.ok) t.same(next.grant.relays?.map((r) => r.name), ['r1'], 'the relay is in the very next grant');
  t.equal(stamps, 3, 'one for the request, one more as the changed relay list is re-read');
});

t.test('audiences: unknown ones skipped, none valid is NOT_FOUND, none asked is the locator ID alone', async (t) => {
  const f = fixture(t, 1);
  const a = await inProcess(t, f, { cookieThreshold: -1 });
  const c = await client(t);
  const d = f.devices[0]!;
  const some = await authenticate(c, a.port, { device: d, authd: f.authdKey, audiences: ['nope', 'locator', 'locator'] });
  t.ok(some.ok);
  if (some.ok) t.same(some.grant.tickets.map((x) => x.aud), ['locator'], 'unknown skipped, duplicate once');
  const none = await authenticate(c, a.port, { device: d, authd: f.authdKey, audiences: ['nope'] });
  t.same(none.ok ? 'ok' : none.code, ErrorCode.NOT_FOUND);
  const empty = await authenticate(c, a.port, { device: d, authd: f.authdKey, audiences: [] });
  t.ok(empty.ok && empty.grant.tickets.length === 0 && empty.grant.locatorId.length === 16, 'locator ID, no tickets');
  // Four services with 64-character IDs: four tickets do not fit one reply; the grant carries
  // those that fit and stays within the request size.
  const db = AuthDb.open(f.stateDir);
  const long = [0, 1, 2, 3].map((i) => `${'s'.repeat(63)}${i}`);
  for (const id of long) db.putService({ serviceId: id, sealKey: generatePair('x25519').public, addr: '[2001:db8::1]:4701' }, false);
  db.close();
  const big = await authenticate(c, a.port, { device: d, authd: f.authdKey, audiences: long });
  t.ok(big.ok);
  if (big.ok) {
    t.ok(big.grant.tickets.length >= 1 && big.grant.tickets.length < 4, `${big.grant.tickets.length} of 4 tickets fit`);
    t.same(big.grant.tickets.map((x) => x.aud), long.slice(0, big.grant.tickets.length), 'in request order');
    t.ok(big.reply.raw.length <= AUTH_REQUEST_SIZE);
  }
});

t.test('refusals carry their code', async (t) => {
  const f = fixture(t, 2);
  const a = await inProcess(t, f, { cookieThreshold: -1 });
  const c = await client(t);
  const d = f.devices[0]!;
  const code = (r: Awaited<ReturnType<typeof authenticate>>): number | string => (r.ok ? 'granted' : r.code);

  t.test('malformed: not CBOR', async (t) => {
    const reply = await rawExchange(a.port, randomBytes(1200).fill(0xff, 0, 1));
    t.ok(reply);
    const dec = decodeDatagram(reply!);
    t.ok(dec.ok && dec.msg.name === 'ERROR' && dec.msg.body.code === ErrorCode.MALFORMED);
  });

  t.test('short request: BAD_MESSAGE, and the answer is smaller still', async (t) => {
    const rid = UdpClient.newRequestId();
    const bytes = encodeDatagram('AUTH_REQUEST', rid, { authdKey: Buffer.from(f.authdKey.kid, 'hex'), ephemeral: randomBytes(32), sealed: randomBytes(200) });
    t.ok(bytes.length < AUTH_REQUEST_SIZE);
    const reply = await c.request({ ip: '127.0.0.1', port: a.port }, bytes, rid);
    t.equal(reply.msg.name, 'ERROR');
    if (reply.msg.name === 'ERROR') t.equal(reply.msg.body.code, ErrorCode.BAD_MESSAGE);
    t.ok(reply.raw.length <= bytes.length);
  });

  t.test('full size but sealed garbage: BAD_PROOF', async (t) => {
    const good = buildRequest({ device: d, authd: f.authdKey });
    const dec = decodeDatagram(good.datagram);
    if (!dec.ok || dec.msg.name !== 'AUTH_REQUEST') throw new Error('unreachable');
    const body = { ...dec.msg.body, sealed: randomBytes(dec.msg.body.sealed.length) };
    const bytes = encodeDatagram('AUTH_REQUEST', good.rid, body);
    t.equal(bytes.length, AUTH_REQUEST_SIZE);
    const r = await send(c, a.port, { ...good, datagram: bytes });
    t.equal(code(r), ErrorCode.BAD_PROOF);
  });

  t.test('unknown authd kid: BAD_PROOF', async (t) => {
    const r = await authenticate(c, a.port, { device: d, authd: { kid: 'deadbeef', seal: f.authdKey.seal } });
    t.equal(code(r), ErrorCode.BAD_PROOF);
  });

  t.test('unknown device: BAD_PROOF, word for word as a wrong key (no enrollment oracle)', async (t) => {
    const stranger = newDeviceKey('NOT-ENROLLED') as DeviceKeyFile;
    const unknown = await authenticate(c, a.port, { device: stranger, authd: f.authdKey });
    const wrong = await authenticate(c, a.port, { device: d, authd: f.authdKey, signWith: privateKeyObject('Ed25519', generatePair('ed25519')) });
    t.equal(code(unknown), ErrorCode.BAD_PROOF);
    t.same(!unknown.ok && unknown.message, !wrong.ok && wrong.message, 'same message');
    t.ok(a.lines.some((l) => l['event'] === 'auth:UNKNOWN_DEVICE'), 'the log says what it was');
  });

  t.test('wrong device key: BAD_PROOF', async (t) => {
    const other = privateKeyObject('Ed25519', generatePair('ed25519'));
    t.equal(code(await authenticate(c, a.port, { device: d, authd: f.authdKey, signWith: other })), ErrorCode.BAD_PROOF);
  });

  t.test('revoked: REVOKED at the next request, only to the key holder; unrevoke restores', async (t) => {
    const victim = f.devices[1]!;
    t.ok((await authenticate(c, a.port, { device: victim, authd: f.authdKey })).ok);
    const admin = AuthDb.open(f.stateDir); // another connection, as devloc revoke would be
    t.equal(admin.setRevoked(victim.deviceId, true), 'changed');
    t.equal(code(await authenticate(c, a.port, { device: victim, authd: f.authdKey })), ErrorCode.REVOKED);
    const other = privateKeyObject('Ed25519', generatePair('ed25519'));
    t.equal(code(await authenticate(c, a.port, { device: victim, authd: f.authdKey, signWith: other })), ErrorCode.BAD_PROOF, 'a forger does not learn the device is revoked');
    t.equal(admin.setRevoked(victim.deviceId, false), 'changed');
    admin.close();
    t.ok((await authenticate(c, a.port, { device: victim, authd: f.authdKey })).ok);
    t.ok(a.lines.some((l) => l['event'] === 'auth:REVOKED' && l['deviceId'] === victim.deviceId), 'logged with the device ID');
  });

  t.test('clock skew ahead and behind: CLOCK_SKEW', async (t) => {
    t.equal(code(await authenticate(c, a.port, { device: d, authd: f.authdKey, timeMs: Date.now() + 301_000 })), ErrorCode.CLOCK_SKEW);
    t.equal(code(await authenticate(c, a.port, { device: d, authd: f.authdKey, timeMs: Date.now() - 301_000 })), ErrorCode.CLOCK_SKEW);
    t.ok((await authenticate(c, a.port, { device: d, authd: f.authdKey, timeMs: Date.now() - 250_000 })).ok, 'within the skew');
  });

  t.test('replays', async (t) => {
    const req = buildRequest({ device: d, authd: f.authdKey });
    const first = await send(c, a.port, req);
    t.ok(first.ok);
    // The same datagram again from the same source: a retransmission, answered from the cache.
    const again = await send(c, a.port, req);
    t.ok(again.ok, 'retransmission answered');
    if (first.ok && again.ok) t.ok(first.reply.raw.equals(again.reply.raw), 'with the same bytes');
    // The same datagram from another source: REPLAY, no grant.
    const granted = a.metrics.get('auth_ok_total');
    const signed = a.metrics.get('signatures_total');
    const c2 = await client(t);
    const stolen = await c2.request({ ip: '127.0.0.1', port: a.port }, req.datagram, req.rid);
    t.equal(stolen.msg.name, 'ERROR');
    if (stolen.msg.name === 'ERROR') t.equal(stolen.msg.body.code, ErrorCode.REPLAY);
    t.equal(a.metrics.get('auth_ok_total'), granted, 'no second grant');
    t.equal(a.metrics.get('signatures_total'), signed, 'no ticket signed for the replay');
    // The same (device, nonce) under a new request ID: REPLAY from authd's replay cache.
    const eph = generatePair('x25519');
    const nonce = randomBytes(16);
    const mk = () => {
      const rid = UdpClient.newRequestId();
      const b = buildAuthRequestWith({
        rid, deviceId: d.deviceId, deviceKey: privateKeyObject('Ed25519', d.sign), authdKid: Buffer.from(f.authdKey.kid, 'hex'),
        authdSealPublic: f.authdKey.seal.public, audiences: ['locator'], cnf: generatePair('x25519').public, timeMs: Date.now(),
      }, eph, nonce);
      return { rid, datagram: b.datagram, keys: b.keys, nonce: b.nonce, cnf: eph };
    };
    t.ok((await send(c, a.port, mk())).ok);
    t.equal(code(await send(c, a.port, mk())), ErrorCode.REPLAY);
  });

  t.test('overloaded: TRY_LATER at --max-rate', async (t) => {
    a.reload({ maxRate: 0.001 }); // a budget of one request, refilled in 1000 s
    t.teardown(() => a.reload({ maxRate: 0 }));
    const results = [];
    for (let i = 0; i < 3; i++) results.push(code(await authenticate(c, a.port, { device: d, authd: f.authdKey })));
    t.same(results, ['granted', ErrorCode.TRY_LATER, ErrorCode.TRY_LATER]);
  });

  t.test('every refusal was logged with its code', async (t) => {
    const events = new Set(a.lines.filter((l) => l['msg'] === 'refused').map((l) => String(l['code'])));
    for (const c of ['MALFORMED', 'BAD_MESSAGE', 'BAD_PROOF', 'REVOKED', 'CLOCK_SKEW', 'REPLAY', 'TRY_LATER']) t.ok(events.has(c), c);
    t.ok(a.metrics.get('auth_failed_total', { code: 'CLOCK_SKEW' }) >= 2);
  });
});

t.test('rate limited per source: RATE_LIMITED before any work', async (t) => {
  const f = fixture(t, 1);
  const a = await inProcess(t, f, { cookieThreshold: -1, ratePerS: 0.01, burst: 2 });
  const c = await client(t);
  const d = f.devices[0]!;
  t.ok((await authenticate(c, a.port, { device: d, authd: f.authdKey })).ok);
  t.ok((await authenticate(c, a.port, { device: d, authd: f.authdKey })).ok);
  const reply = await rawExchange(a.port, buildRequest({ device: d, authd: f.authdKey }).datagram);
  t.ok(reply, 'answered');
  const dec = decodeDatagram(reply!);
  t.ok(dec.ok && dec.msg.name === 'ERROR' && dec.msg.body.code === ErrorCode.RATE_LIMITED && (dec.msg.body.retryAfterMs ?? 0) > 0, 'RATE_LIMITED with a delay');
  t.equal(a.metrics.get('signatures_total'), 2, 'no signature for the refused one');
});
