// Registration over real UDP on loopback: the observed source is what gets bound, and nothing
// but a MAC-verified, newer message of the terminal's own session moves it.
import t from 'tap';
import dgram from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Test } from 'tap';
import { execFileSync } from 'node:child_process';
import { UdpClient } from '../../src/net/client.js';
import { EmbeddedStore } from '../../src/locatord/store/embedded.js';
import { SNAPSHOT_FILE } from '../../src/locatord/snapshot.js';
import { NAT_REFRESH_S, NetMode, OPEN_REFRESH_S } from '../../src/wire/constants.js';
import { encodeCbor } from '../../src/wire/cbor.js';
import { decodeDatagram } from '../../src/wire/envelope.js';
import { ErrorCode } from '../../src/wire/errors.js';
import { generatePair } from '../../src/wire/keys.js';
import { credentials, errorCodeOf, FakeClock, forEachStore, locatorIdOf, presenceOf, Terminal } from './fixtures/helpers.js';

const openClient = async (t: Test): Promise<UdpClient> => {
  const c = await UdpClient.open({ bind: { host: '127.0.0.1', port: 0 }, policy: { initialTimeoutMs: 300, deadlineMs: 10_000 } });
  t.teardown(() => c.close());
  return c;
};

t.test('REGISTER binds the observed source and stores what the terminal reports', (t) => forEachStore(t, async (t, s) => {
  const { loc, dest, keys } = await s.start(t);
  const term = await Terminal.open(t, keys, dest);
  const ack = await term.expect(t, 'REGISTER_ACK', term.register({
    netMode: NetMode.PORT_RESTRICTED, nickname: 'alice', mediaId: 'game-7', community: { lobby: 'eu', level: 3 },
    localAddrs: [{ ip: '192.168.1.20', port: 5000 }], ttlS: 120,
    // Claimed addresses are stored as LAN hints only; the binding is the packet's source.
  }));
  t.same(ack.body.observed, term.address, 'observed = packet source');
  t.equal(ack.body.ttlS, 120);
  t.equal(ack.body.refreshS, NAT_REFRESH_S);
  t.ok(Buffer.from(ack.body.locatorId).equals(term.locatorId));
  const rec = (await presenceOf(loc, term.locatorId))!;
  t.same(rec.addr, term.address);
  t.equal(rec.nickname, 'alice');
  t.equal(rec.netMode, NetMode.PORT_RESTRICTED);
  t.same(rec.extra, { localAddrs: [{ ip: '192.168.1.20', port: 5000 }], mediaId: 'game-7', community: { lobby: 'eu', level: 3 } });
  t.equal(loc.metrics.get('registrations_total'), 1);
  t.equal(loc.metrics.get('sessions_opened_total'), 1);
}));

t.test('TTL is clamped; refresh interval follows the network mode', (t) => forEachStore(t, async (t, s) => {
  const { dest, keys } = await s.start(t, { limits: { minTtlS: 30, defaultTtlS: 90, maxTtlS: 1200 } });
  const a = await Terminal.open(t, keys, dest);
  const low = await a.expect(t, 'REGISTER_ACK', a.register({ ttlS: 1 }));
  t.equal(low.body.ttlS, 30, 'raised to min-ttl');
  t.equal(low.body.refreshS, 8, 'TTL covers 3.5 refresh intervals');
  const b = await Terminal.open(t, keys, dest);
  const open = await b.expect(t, 'REGISTER_ACK', b.register({ ttlS: 99_999, netMode: NetMode.OPEN }));
  t.equal(open.body.ttlS, 1200, 'lowered to max-ttl');
  t.equal(open.body.refreshS, OPEN_REFRESH_S);
  const c = await Terminal.open(t, keys, dest);
  const def = await c.expect(t, 'REGISTER_ACK', c.register({}));
  t.equal(def.body.ttlS, 90);
  t.equal(def.body.refreshS, NAT_REFRESH_S, 'unknown mode is treated as NAT');
  t.ok(def.body.ttlS >= 3.5 * def.body.refreshS);
}));

t.test('REFRESH re-learns the source address; UNREGISTER removes the record', (t) => forEachStore(t, async (t, s) => {
  const { loc, dest, keys } = await s.start(t);
  const term = await Terminal.open(t, keys, dest);
  await term.expect(t, 'REGISTER_ACK', term.register());
  const other = await openClient(t);
  const moved = await term.expect(t, 'REFRESH_ACK', term.send(term.encode('REFRESH', {}), other));
  t.same(moved.body.observed, { ip: '127.0.0.1', port: other.localPort }, 'NAT rebinding followed');
  t.same((await presenceOf(loc, term.locatorId))!.addr, { ip: '127.0.0.1', port: other.localPort });
  await term.expect(t, 'UNREGISTER_ACK', term.request('UNREGISTER', {}));
  t.equal(await presenceOf(loc, term.locatorId), undefined);
  const r = await term.request('REFRESH', {});
  t.equal(errorCodeOf(r), ErrorCode.NOT_FOUND, 'a REFRESH cannot resurrect a registration');
}));

t.test('captured REGISTER/REFRESH replayed from the same or another source changes nothing', (t) => forEachStore(t, async (t, s) => {
  const clock = new FakeClock();
  const { loc, dest, keys } = await s.start(t, { now: clock.now });
  const term = await Terminal.open(t, keys, dest, { nowS: Math.floor(clock.ms / 1000) });
  const id = term.locatorId.toString('hex');
  const reg = term.encode('REGISTER', { ticket: term.creds.ticket, timeMs: clock.ms });
  await term.expect(t, 'REGISTER_ACK', term.send(reg));
  clock.advance(5_000);
  const ref = term.encode('REFRESH', {});
  await term.expect(t, 'REFRESH_ACK', term.send(ref));
  const before = (await presenceOf(loc, id))!;
  const registrations = loc.metrics.get('registrations_total');
  const refreshes = loc.metrics.get('refreshes_total');
  clock.advance(5_000);

  // Same source: answered from the response cache, not executed again.
  for (const captured of [reg, ref]) {
    const again = await term.client.request(dest, captured.bytes, captured.rid, { accept: () => true });
    t.not(again.msg.name, 'ERROR', 'retransmission answered');
  }
  // Another source (the attacker's): refused, binding untouched.
  const attacker = await openClient(t);
  for (const captured of [reg, ref]) {
    const r = await attacker.request(dest, captured.bytes, captured.rid, { accept: () => true });
    t.equal(errorCodeOf(r), ErrorCode.REPLAY);
  }
  const after = (await presenceOf(loc, id))!;
  t.same(after.addr, term.address, 'still bound to the terminal');
  t.equal(after.regMs, before.regMs, 'registration time unchanged');
  t.equal(after.expMs, before.expMs, 'expiry not extended');
  t.equal(loc.metrics.get('registrations_total'), registrations);
  t.equal(loc.metrics.get('refreshes_total'), refreshes);
}));

t.test('a spoofed source with a bad MAC never moves a binding', (t) => forEachStore(t, async (t, s) => {
  const { loc, dest, keys } = await s.start(t);
  const term = await Terminal.open(t, keys, dest);
  await term.expect(t, 'REGISTER_ACK', term.register());
  const attacker = await openClient(t);
  // A genuine datagram with one bit flipped, and a forged one with a huge sequence number.
  const flipped = term.encode('REFRESH', {});
  flipped.bytes[flipped.bytes.length - 1]! ^= 1;
  const r1 = await attacker.request(dest, flipped.bytes, flipped.rid, { accept: () => true });
  t.equal(errorCodeOf(r1), ErrorCode.BAD_MAC);
  const forger = credentials(keys);
  const forged = (() => {
    const rid = UdpClient.newRequestId();
    const bytes = forger.session.encode('REFRESH', rid, {});
    // Put the victim's session ID in: same length, so the rest of the bytes stay valid CBOR.
    const sid = term.session.sid;
    bytes.set(sid, bytes.indexOf(forger.session.sid));
    return { rid, bytes };
  })();
  const r2 = await attacker.request(dest, forged.bytes, forged.rid, { accept: () => true });
  t.equal(errorCodeOf(r2), ErrorCode.BAD_MAC);
  t.same((await presenceOf(loc, term.locatorId))!.addr, term.address);
  // The terminal's own next sequence number still works: the window was not moved by forgeries.
  await term.expect(t, 'REFRESH_ACK', term.request('REFRESH', {}));
}));

t.test('seq 5 from address B, then seq 4 from address A: the binding stays at B', (t) => forEachStore(t, async (t, s) => {
  const { loc, dest, keys } = await s.start(t);
  const term = await Terminal.open(t, keys, dest);
  await term.expect(t, 'REGISTER_ACK', term.register()); // seq 1
  await term.expect(t, 'REFRESH_ACK', term.request('REFRESH', {})); // seq 2
  await term.expect(t, 'REFRESH_ACK', term.request('REFRESH', {})); // seq 3
  const a = await openClient(t);
  const b = await openClient(t);
  const seq4 = term.encode('REFRESH', {});
  const seq5 = term.encode('REFRESH', {});
  t.equal(decodeDatagram(seq5.bytes).ok && (decodeDatagram(seq5.bytes) as { msg: { auth: { seq: number } } }).msg.auth.seq, 5);
  const atB = await term.expect(t, 'REFRESH_ACK', term.send(seq5, b));
  t.same(atB.body.observed, { ip: '127.0.0.1', port: b.localPort });
  const late = await term.expect(t, 'REFRESH_ACK', term.send(seq4, a));
  t.same(late.body.observed, { ip: '127.0.0.1', port: b.localPort }, 'the late seq 4 is acknowledged with the current binding');
  t.same((await presenceOf(loc, term.locatorId))!.addr, { ip: '127.0.0.1', port: b.localPort });
  t.equal(loc.metrics.get('stale_updates_total', { type: 'REFRESH' }), 1);
}));

t.test('tickets for another audience, expired, or from an untrusted kid are refused with their code', (t) => forEachStore(t, async (t, s) => {
  const { loc, dest, keys } = await s.start(t);
  const now = Math.floor(Date.now() / 1000);
  const cases: [string, Parameters<typeof Terminal.open>[3], number][] = [
    ['other audience', { aud: 'matchd' }, ErrorCode.WRONG_AUDIENCE],
    ['expired', { iat: now - 7200, exp: now - 3600 }, ErrorCode.TICKET_EXPIRED],
    ['untrusted kid', { kid: 'deadbeef', signer: generatePair('ed25519') }, ErrorCode.BAD_TICKET],
    ['trusted kid, wrong signing key', { signer: generatePair('ed25519') }, ErrorCode.BAD_TICKET],
  ];
  const tried: Buffer[] = [];
  for (const [what, o, code] of cases) {
    const term = await Terminal.open(t, keys, dest, o);
    tried.push(term.locatorId);
    const r = await term.register();
    t.equal(errorCodeOf(r), code, what);
    t.ok(r.raw.length <= term.encode('REGISTER', { ticket: term.creds.ticket, timeMs: Date.now() }).bytes.length, `${what}: refusal not larger than the request`);
  }
  const noTicket = await Terminal.open(t, keys, dest);
  t.equal(errorCodeOf(await noTicket.request('REFRESH', {})), ErrorCode.NO_SESSION, 'unknown session without ticket');
  tried.push(noTicket.locatorId);
  t.same(await loc.store.getPresences(tried.map((id) => id.toString('hex'))), tried.map(() => undefined), 'nothing registered');
}));

t.test('unauthenticated datagrams get at most one small error, never larger than themselves', (t) => forEachStore(t, async (t, s) => {
  const { dest, keys } = await s.start(t);
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  t.teardown(() => sock.close());
  const got: Buffer[] = [];
  sock.on('message', (m) => got.push(m));
  const arrived = (pred: (m: Buffer) => boolean): Promise<void> => new Promise((resolve) => {
    const check = (): void => {
      if (!got.some(pred)) return;
      sock.off('message', check);
      resolve();
    };
    sock.on('message', check);
    check();
  });
  const term = await Terminal.open(t, keys, dest);
  const probes: Buffer[] = [
    Buffer.from([0x00]),
    Buffer.from([0x84, 0x01, 0x10]),
    randomBytes(12),
    randomBytes(40),
    randomBytes(300),
    Buffer.alloc(1300),
    // Well-formed envelope of a session-only message, without auth.
    encodeCbor([1, 0x12, Buffer.alloc(8), new Map()]),
    // A session message naming an unknown session, no ticket: NO_SESSION, trimmed to fit.
    credentials(keys).session.encode('REFRESH', Buffer.alloc(8, 2), {}),
    // REGISTER of an unknown session with garbage where the ticket goes.
    credentials(keys).session.encode('REGISTER', Buffer.alloc(8, 1), { ticket: randomBytes(100), timeMs: Date.now() }),
  ];
  const replies: Buffer[][] = [];
  for (const p of probes) {
    const start = got.length;
    sock.send(p, dest.port, dest.ip);
    // A sentinel from the same socket: the server answers in order, so anything the probe caused
    // has arrived before the sentinel's answer.
    // (A REFRESH of an unknown session: NO_SESSION, through the same store lookup as probe 7,
    // so it cannot overtake it; a REGISTER from this never-validated socket would get one
    // ADDR_CHALLENGE per 500 ms only.)
    const sentinelRid = randomBytes(8);
    const sentinel = { rid: sentinelRid, bytes: credentials(keys).session.encode('REFRESH', sentinelRid, {}) };
    sock.send(sentinel.bytes, dest.port, dest.ip);
    await arrived((m) => m.includes(sentinel.rid));
    replies.push(got.slice(start).filter((m) => !m.includes(sentinel.rid)));
  }
  probes.forEach((p, i) => {
    const r = replies[i]!;
    t.ok(r.length <= 1, `probe ${i} (${p.length} B): at most one reply (got ${r.length})`);
    for (const x of r) {
      t.ok(x.length <= p.length, `probe ${i}: reply ${x.length} B <= request ${p.length} B`);
      const d = decodeDatagram(x);
      t.ok(d.ok && d.msg.name === 'ERROR', `probe ${i}: the reply is an ERROR`);
    }
  });
}));

t.test('no device ID ever reaches locatord', (t) => forEachStore(t, async (t, s) => {
  const { loc, dest, keys, stateDir } = await s.start(t);
  const deviceId = 'SN-ACME-0042-7F3A';
  const locatorSecret = randomBytes(32);
  const term = await Terminal.open(t, keys, dest, { locatorId: locatorIdOf(deviceId, locatorSecret) });
  t.notOk(term.creds.ticket.includes(Buffer.from(deviceId)), 'the ticket carries only the locator ID');
  await term.expect(t, 'REGISTER_ACK', term.register({ nickname: 'bob', mediaId: 'm1' }));
  const id = term.locatorId.toString('hex');
  t.notMatch(JSON.stringify(await presenceOf(loc, id)), deviceId);
  const session = [...loc.sessions.all()][0]!;
  t.notMatch(JSON.stringify({ ...session, keys: undefined, window: undefined }), deviceId);
  const redis = await s.redis();
  if (loc.store instanceof EmbeddedStore) {
    await loc.stop({ snapshot: true });
    // The snapshot is binary: IDs are raw bytes, text fields UTF-8.
    const snap = readFileSync(path.join(stateDir, SNAPSHOT_FILE));
    t.ok(snap.includes(term.locatorId), 'the snapshot names the terminal by locator ID');
    t.ok(snap.includes(Buffer.from('bob')), 'and holds its fields');
    for (const form of [Buffer.from(deviceId), Buffer.from(Buffer.from(deviceId).toString('hex')), Buffer.from(Buffer.from(deviceId).toString('base64url'))]) {
      t.notOk(snap.includes(form), 'and never its device ID');
    }
  } else if (redis) {
    // Everything Redis holds, keys and values (redis-cli escapes binary bytes).
    const cli = (...args: string[]): string => execFileSync('redis-cli', ['-p', String(redis.port), '--no-raw', ...args], { encoding: 'utf8' });
    const keysHeld = cli('--scan').split('\n').filter(Boolean);
    t.ok(keysHeld.some((k) => k.includes(id)), 'Redis names the terminal by locator ID');
    const dump = keysHeld.map((k) => k + cli('DUMP', k)).join('\n');
    t.notMatch(dump, deviceId, 'and never by device ID');
    t.notMatch(dump, Buffer.from(deviceId).toString('hex'));
  }
}));
