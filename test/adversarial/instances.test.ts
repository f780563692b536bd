// Several locatord instances (issue 15, item 5) against real daemons on one real redis-server:
// a captured session datagram replayed to another instance, or to the other worker of
// `--workers 2`, is refused with REPLAY and executes nothing (the replay window is shared in
// Redis); records forged or altered in Redis by someone who can write it but lacks the service
// key (presence: unhide a terminal, hijack its address, seq 2^53-1; groups: join a closed group,
// open it) are ignored, counted (redis_records_rejected_total) and logged.
import { Redis } from 'ioredis';
import dgram from 'node:dgram';
import t from 'tap';
import type { Test } from 'tap';
import { addrProof, UdpClient } from '../../src/net/client.js';
import type { Reply } from '../../src/net/client.js';
import { decodePresence, encodePresence, RECORD_TAG_BYTES } from '../../src/locatord/store/codec.js';
import { decodeDatagram } from '../../src/wire/envelope.js';
import { ErrorCode } from '../../src/wire/errors.js';
import type { RunningDaemon } from '../helpers/daemon.js';
import type { TestKeys } from '../locatord/fixtures/helpers.js';
import { errorCodeOf, makeKeys, Terminal } from '../locatord/fixtures/helpers.js';
import { needs } from '../ops/tools.js';
import { daemonAddress as dest, redisLocatord } from '../scale/fixtures/locatord.js';
import type { TestRedis } from '../scale/fixtures/redis-server.js';
import { hasRedis, startRedis } from '../scale/fixtures/redis-server.js';
import { metricValue, scrapeMetrics } from '../helpers/metrics.js';

const noRedis = needs('redis-server and redis-cli', hasRedis()).skip; // required in CI

const locatord = (t: Test, keys: TestKeys, redis: TestRedis, extra: string[] = []): Promise<RunningDaemon> =>
  redisLocatord(t, keys, redis.url, { redisTimeoutMs: 2000, extra: ['--metrics-listen', '127.0.0.1:0', ...extra] });

async function metric(d: RunningDaemon, name: string, labels: Record<string, string> = {}): Promise<number> {
  const line = await d.waitFor((l) => l['msg'] === 'metrics endpoint');
  return metricValue(await scrapeMetrics(line['listen'] as string), name, labels);
}

/** Send captured bytes from a fresh socket (another source port) and return the answer, whatever it is. */
async function replayFromElsewhere(t: Test, to: ReturnType<typeof dest>, d: { rid: Buffer; bytes: Buffer }): Promise<Reply> {
  const c = await UdpClient.open({ bind: { host: '127.0.0.1', port: 0 }, policy: { initialTimeoutMs: 300, deadlineMs: 10_000 } });
  try {
    return await c.request(to, d.bytes, d.rid, { accept: () => true });
  } finally {
    c.close();
  }
}

const replayEvents = (d: RunningDaemon, reason: string): unknown[] =>
  d.lines.filter((l) => l['msg'] === 'refused' && l['event'] === 'GROUP_JOIN:REPLAY' && String(l['reason']).includes(reason));

/** An open group of `owner`'s, `alice` joined it with `captured` and left again. */
async function joinedAndLeft(t: Test, owner: Terminal, alice: Terminal): Promise<{ groupId: Buffer; captured: { rid: Buffer; bytes: Buffer } }> {
  await owner.expect(t, 'REGISTER_ACK', owner.register());
  await alice.expect(t, 'REGISTER_ACK', alice.register());
  const created = await owner.expect(t, 'GROUP_CREATE_ACK', owner.request('GROUP_CREATE', { name: 'open' }));
  const groupId = Buffer.from(created.body.groupId);
  const captured = alice.encode('GROUP_JOIN', { groupId });
  await alice.expect(t, 'GROUP_JOIN_ACK', alice.send(captured));
  await alice.expect(t, 'GROUP_LEAVE_ACK', alice.request('GROUP_LEAVE', { groupId }));
  return { groupId, captured };
}

async function members(t: Test, owner: Terminal, groupId: Buffer): Promise<string[]> {
  const m = await owner.expect(t, 'GROUP_MEMBERS_RESULT', owner.request('GROUP_MEMBERS', { groupId }));
  return m.body.members.map((e) => Buffer.from(e.id).toString('hex'));
}

t.test('a GROUP_JOIN captured at one instance and replayed to another: REPLAY, not joined', { skip: noRedis }, async (t) => {
  const redis = await startRedis(t);
  const keys = makeKeys();
  const [a, b] = await Promise.all([locatord(t, keys, redis), locatord(t, keys, redis)]);
  const owner = await Terminal.open(t, keys, dest(a));
  const alice = await Terminal.open(t, keys, dest(a));
  const { groupId, captured } = await joinedAndLeft(t, owner, alice);
  const r = await replayFromElsewhere(t, dest(b), captured);
  t.equal(errorCodeOf(r), ErrorCode.REPLAY, `instance B: REPLAY (got ${r.msg.name} ${JSON.stringify(r.msg.body)})`);
  t.ok(r.raw.length <= captured.bytes.length, 'the refusal is no larger than the request');
  t.same(await members(t, owner, groupId), [owner.locatorId.toString('hex')], 'alice is not back in the group');
  t.ok(replayEvents(b, 'shared window').length > 0, 'refusal logged at B');
  // An honest retransmission (the same bytes from the same source) that reaches B after A took
  // the number is neither executed nor refused at B: A answers it (its response cache).
  const refresh = alice.encode('REFRESH', {});
  await alice.expect(t, 'REFRESH_ACK', alice.send(refresh));
  alice.client.send(dest(b), refresh.bytes);
  const deadline = Date.now() + 30_000;
  while ((await metric(b, 'dropped_total', { reason: 'in-flight-elsewhere' })) < 1) {
    if (Date.now() > deadline) throw new Error('B never dropped the retransmission');
    await new Promise((r) => setTimeout(r, 50));
  }
  t.equal(await metric(b, 'refreshes_total'), 0, 'B executed no REFRESH');
  // Honest traffic of the same session through B still passes: the shared window only refuses
  // numbers already taken.
  alice.dest = dest(b);
  await alice.expect(t, 'GROUP_JOIN_ACK', alice.request('GROUP_JOIN', { groupId }));
  await alice.expect(t, 'REFRESH_ACK', alice.request('REFRESH', {}));
});

t.test('--workers 2: a replay from another source port reaching the other worker is refused', { skip: noRedis }, async (t) => {
  const redis = await startRedis(t);
  const keys = makeKeys();
  const d = await redisLocatord(t, keys, redis.url, { redisTimeoutMs: 2000, extra: ['--workers', '2'] });
  // Both workers listening (each logs its own line).
  const deadline = Date.now() + 60_000;
  while (d.lines.filter((l) => l['msg'] === 'listening').length < 2) {
    if (Date.now() > deadline) throw new Error('the second worker never listened');
    await new Promise((r) => setTimeout(r, 50));
  }
  const owner = await Terminal.open(t, keys, dest(d));
  const alice = await Terminal.open(t, keys, dest(d));
  const { groupId, captured } = await joinedAndLeft(t, owner, alice);
  // The kernel hands each datagram to one worker or the other; keep replaying (each from a new
  // port) until both have refused one: the worker that executed the original recognises it in
  // its response cache, the other only through the shared window.
  let sent = 0;
  for (; sent < 400; sent++) {
    if (replayEvents(d, 'shared window').length > 0 && replayEvents(d, 'another source').length > 0) break;
    const r = await replayFromElsewhere(t, dest(d), captured);
    if (errorCodeOf(r) !== ErrorCode.REPLAY) {
      t.fail(`replay ${sent + 1} executed: ${r.msg.name} ${JSON.stringify(r.msg.body)}`);
      break;
    }
  }
  t.ok(replayEvents(d, 'shared window').length > 0, `a replay reached the worker that had not seen the datagram (${sent} sent), refused there`);
  t.same(await members(t, owner, groupId), [owner.locatorId.toString('hex')], 'alice is not back in the group');
});

t.test('records forged or altered in Redis are ignored, counted and logged', { skip: noRedis }, async (t) => {
  const redis = await startRedis(t);
  const keys = makeKeys();
  const a = await locatord(t, keys, redis);
  const writer = new Redis({ host: '127.0.0.1', port: redis.port, lazyConnect: false });
  t.teardown(() => writer.disconnect());
  const pkey = (id: Buffer): string => `dl:p:{${id.toString('hex')}}`;
  const victim = await Terminal.open(t, keys, dest(a));
  const friend = await Terminal.open(t, keys, dest(a));
  const stranger = await Terminal.open(t, keys, dest(a));
  await friend.expect(t, 'REGISTER_ACK', friend.register());
  await stranger.expect(t, 'REGISTER_ACK', stranger.register({ nickname: 'stranger' }));
  await victim.expect(t, 'REGISTER_ACK', victim.register({ visibility: 1, allow: [friend.locatorId], nickname: 'victim' }));
  const look = async (who: Terminal, id: Buffer): Promise<{ online: boolean; addr?: unknown }> => {
    const q = await who.expect(t, 'QUERY_ADDR_RESULT', who.request('QUERY_ADDR', { ids: [id] }));
    return q.body.entries[0]!;
  };
  t.same((await look(friend, victim.locatorId)).addr, victim.address, 'the friend sees the victim');
  t.equal((await look(stranger, victim.locatorId)).online, false, 'hidden from a stranger');

  const attackerAddr = { ip: '127.0.0.2', port: 9 };
  await t.test('presence altered: unhidden, moved, seq 2^53-1 (old tag kept)', async (t) => {
    const stored = (await writer.getBuffer(pkey(victim.locatorId)))!;
    const p = decodePresence(stored.subarray(0, stored.length - RECORD_TAG_BYTES))!;
    t.ok(p, 'the stored value is the codec record followed by its tag');
    const forged = encodePresence({ ...p, visibility: 0, addr: attackerAddr, seq: Number.MAX_SAFE_INTEGER, nickname: 'hijacked' });
    await writer.set(pkey(victim.locatorId), Buffer.concat([forged, stored.subarray(stored.length - RECORD_TAG_BYTES)]), 'PX', 60_000);
    const seen = await look(stranger, victim.locatorId);
    t.equal(seen.online, false, 'not unhidden for the stranger');
    t.notSame((await look(friend, victim.locatorId)).addr, attackerAddr, 'the friend is not sent to the attacker');
    // The victim's own updates are not ignored: its record is absent, it registers again and is
    // found where it is.
    const r = await victim.request('REFRESH', {});
    t.equal(errorCodeOf(r), ErrorCode.NOT_FOUND, 'REFRESH: the forged record counts as absent');
    await victim.expect(t, 'REGISTER_ACK', victim.register({ visibility: 1, allow: [friend.locatorId], nickname: 'victim' }));
    t.same((await look(friend, victim.locatorId)).addr, victim.address, 'found at its own address again');
  });

  await t.test("presence copied from another terminal's genuine record", async (t) => {
    const genuine = (await writer.getBuffer(pkey(stranger.locatorId)))!;
    await writer.set(pkey(victim.locatorId), genuine, 'PX', 60_000);
    const seen = await look(friend, victim.locatorId);
    t.notSame(seen.addr, stranger.address, 'not served under another ID');
    t.equal(seen.online, false);
  });

  await t.test('presence planted for an ID that never registered', async (t) => {
    const ghost = Buffer.alloc(16, 0x42);
    const now = Date.now();
    const forged = encodePresence({ addr: attackerAddr, netMode: 0, visibility: 0, sidHex: '00'.repeat(16), seq: 1, regMs: now, expMs: now + 60_000 });
    await writer.set(pkey(ghost), Buffer.concat([forged, Buffer.alloc(RECORD_TAG_BYTES)]), 'PX', 60_000);
    t.equal((await look(stranger, ghost)).online, false, 'not online');
  });

  await t.test('groups: a planted membership in a closed group, a closed group opened', async (t) => {
    await victim.expect(t, 'REGISTER_ACK', victim.register({ visibility: 1, allow: [friend.locatorId], nickname: 'victim' }));
    const created = await victim.expect(t, 'GROUP_CREATE_ACK', victim.request('GROUP_CREATE', { name: 'closed', ...victim.closedBy('secret-code') }));
    const gid = Buffer.from(created.body.groupId);
    const g = gid.toString('hex');
    // The stranger "joins" by a direct write: in the group's member set and in its own groups.
    await writer.zadd(`dl:gm:{${g}}`, 99, stranger.locatorId);
    await writer.sadd(`dl:tg:{${stranger.locatorId.toString('hex')}}`, gid);
    const m = await stranger.request('GROUP_MEMBERS', { groupId: gid });
    t.equal(errorCodeOf(m), ErrorCode.FORBIDDEN, 'the stranger is not a member');
    t.same(await members(t, victim, gid), [victim.locatorId.toString('hex')], 'the planted member is not listed');
    t.equal((await look(stranger, victim.locatorId)).online, false, 'a planted membership does not unhide a member');
    // The join code removed from the group's metadata: the group does not verify any more.
    await writer.hdel(`dl:g:{${g}}`, 'key');
    const j = await stranger.request('GROUP_JOIN', { groupId: gid });
    t.not(j.msg.name, 'GROUP_JOIN_ACK', `not joined (${j.msg.name} ${JSON.stringify(j.msg.body)})`);
  });

  t.ok(await metric(a, 'redis_records_rejected_total', { kind: 'presence' }) >= 3, 'forged presence records counted');
  t.ok(await metric(a, 'redis_records_rejected_total', { kind: 'member' }) >= 1, 'planted member counted');
  t.ok(await metric(a, 'redis_records_rejected_total', { kind: 'membership' }) >= 1, 'planted membership counted');
  t.ok(await metric(a, 'redis_records_rejected_total', { kind: 'group' }) >= 1, 'altered group counted');
  t.ok(a.lines.some((l) => l['msg'] === 'refused' && l['event'] === 'redis-record-rejected'), 'logged');
});

t.test('a withheld REGISTER of an older session, delivered to another instance, cannot rebind the ID', { skip: noRedis }, async (t) => {
  // The embedded case is adversarial/sessions.test.ts. Here the newer session is opened at B, so
  // A does not hold it: A must fetch it from the shared sessions to see that it is the newer one
  // (before, A compared against nothing and rebound the ID to the older session's address).
  const redis = await startRedis(t);
  const keys = makeKeys();
  const [a, b] = await Promise.all([locatord(t, keys, redis), locatord(t, keys, redis)]);
  const nowS = Math.floor(Date.now() / 1000);
  const older = await Terminal.open(t, keys, dest(a), { exp: nowS + 600 });
  await older.expect(t, 'REGISTER_ACK', older.register());
  const withheld = older.encode('REGISTER', { ticket: older.creds.ticket, timeMs: Date.now() });
  const newer = await Terminal.open(t, keys, dest(b), { locatorId: older.locatorId, exp: nowS + 1200 });
  const acked = await newer.expect(t, 'REGISTER_ACK', newer.register());
  // The withheld datagram arrives at A now, from the older session's own socket.
  await older.send(withheld);
  const refresh = await newer.expect(t, 'REFRESH_ACK', newer.request('REFRESH', {}));
  t.same(refresh.body.observed, acked.body.observed, 'the newer session\'s REFRESH is not stale');
  const asker = await Terminal.open(t, keys, dest(a));
  await asker.expect(t, 'REGISTER_ACK', asker.register());
  const q = await asker.expect(t, 'QUERY_ADDR_RESULT', asker.request('QUERY_ADDR', { ids: [older.locatorId] }));
  t.same(q.body.entries[0]?.addr, acked.body.observed, 'the ID points at the newer session\'s address');
  t.equal(await metric(a, 'stale_updates_total', { type: 'REGISTER' }), 1, 'A counted the withheld REGISTER as stale');
});

t.test('an ADDR_PROOF reaching another instance than its challenge validates the address there', { skip: noRedis }, async (t) => {
  // What --workers relies on (one UDP port, any worker may read the proof): the instance given
  // the proof does not hold the session, checks the token (no store read for a wrong one),
  // reads the session REGISTER stored before it challenged, and validates the address. Before,
  // it looked only at the sessions it held: the proof was "bad", and the terminal's REGISTER was
  // challenged again by whichever worker read it (a --workers test failed one run in three).
  const redis = await startRedis(t);
  const keys = makeKeys();
  const [a, b] = await Promise.all([locatord(t, keys, redis), locatord(t, keys, redis)]);
  const term = await Terminal.open(t, keys, dest(a));
  const sock = dgram.createSocket('udp4');
  t.teardown(() => sock.close());
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  const next = (): Promise<Buffer> => new Promise((r) => sock.once('message', (m: Buffer) => r(m)));
  const register = term.encode('REGISTER', { ticket: term.creds.ticket, timeMs: Date.now() });
  const challenged = next();
  sock.send(register.bytes, dest(a).port, dest(a).ip);
  const c = decodeDatagram(await challenged);
  if (!c.ok || c.msg.name !== 'ADDR_CHALLENGE') throw new Error(`expected ADDR_CHALLENGE from A, got ${c.ok ? c.msg.name : c.reason}`);
  sock.send(addrProof(c.msg), dest(b).port, dest(b).ip);
  for (let i = 0; i < 300 && (await metric(b, 'addr_proofs_total', { result: 'ok' })) < 1; i++) await new Promise((r) => setTimeout(r, 100));
  t.equal(await metric(b, 'addr_proofs_total', { result: 'ok' }), 1, 'B took the proof');
  const answered = next();
  sock.send(register.bytes, dest(b).port, dest(b).ip);
  const r = decodeDatagram(await answered);
  t.equal(r.ok && r.msg.name, 'REGISTER_ACK', 'the REGISTER at B is served, not challenged again');
  t.equal(await metric(b, 'addr_proofs_total', { result: 'bad' }), 0, 'no bad proof at B');
});
