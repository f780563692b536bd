// The store contract on both backends (embedded and Redis), Redis URLs and slot hashing, and the
// Redis client's failure behaviour (fail fast, bounded, a hung Redis detected), against a real
// redis-server started here.
import { codeKeyOf } from '../../src/wire/groupcode.js';
import t from 'tap';
import type { Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { DeferredClaim, ServerSessions } from '../../src/net/sessions.js';
import type { SharedReplayWindow } from '../../src/net/sessions.js';
import { GroupStore, JOIN_FAILURE_LIMITS } from '../../src/locatord/groups.js';
import { RegistrationTable } from '../../src/locatord/table.js';
import { EmbeddedStore } from '../../src/locatord/store/embedded.js';
import { RedisStore } from '../../src/locatord/store/redis.js';
import { keySlot, parseRedisUrl, RedisClient, RedisUnavailable } from '../../src/locatord/store/redis-client.js';
import type { LocatorStore, Presence, PresenceChange } from '../../src/locatord/store/types.js';
import { TicketVerifier } from '../../src/wire/ticket.js';
import { generatePair, privateKeyObject } from '../../src/wire/keys.js';
import { startRedis } from './fixtures/redis-server.js';
import { hasRedis } from './fixtures/redis-server.js';
import { needs } from '../ops/tools.js';

/** The suite starts its own redis-server (and redis-cli for the Cluster): skipped, saying so, without them. */
const noRedis = needs('redis-server and redis-cli', hasRedis()).skip; // required in CI

const limits = { maxMembers: 3, maxGroupsPerTerminal: 2 };

t.test('cluster key slots follow hash tags (one terminal, one slot)', async (t) => {
  t.equal(keySlot('123456789'), 0x31c3 % 16384); // CRC16/XMODEM check value
  t.equal(keySlot('dl:p:{abcd}'), keySlot('dl:tg:{abcd}'));
  t.equal(keySlot('dl:p:{abcd}'), keySlot('abcd'));
  t.same(parseRedisUrl('redis://:pw@10.0.0.1:7000/2'), { nodes: [{ host: '10.0.0.1', port: 7000 }], db: 2, cluster: false, tls: false, password: 'pw' });
  t.same(parseRedisUrl('rediss://devloc:p%40ss@redis.example:6380/1'), { nodes: [{ host: 'redis.example', port: 6380 }], db: 1, cluster: false, tls: true, password: 'p@ss', username: 'devloc' }, 'TLS, ACL user');
  t.equal(parseRedisUrl('redis://a:7000,redis://b:7001').nodes.length, 2);
  t.equal(parseRedisUrl('redis://a:7000,redis://b:7001').cluster, true, 'several seeds: Cluster');
  t.same(parseRedisUrl('redis+cluster://u:p@10.0.0.1:7000,10.0.0.2:7001'), {
    nodes: [{ host: '10.0.0.1', port: 7000 }, { host: '10.0.0.2', port: 7001 }], db: 0, cluster: true, tls: false, password: 'p', username: 'u',
  });
  t.same(parseRedisUrl('rediss+cluster://10.0.0.1:7000,10.0.0.2').nodes[1], { host: '10.0.0.2', port: 6379 });
  t.equal(parseRedisUrl('rediss+cluster://10.0.0.1:7000').tls, true);
  t.equal(parseRedisUrl('redis+cluster://10.0.0.1:7000').cluster, true, 'one seed, Cluster by scheme');
  t.throws(() => parseRedisUrl('redis+cluster://10.0.0.1:7000/3'), /only database 0/);
  t.throws(() => parseRedisUrl('http://10.0.0.1'), /scheme/);
  t.throws(() => parseRedisUrl('redis://a:1,redis+cluster://b:2'), /mix/);
  t.throws(() => parseRedisUrl('redis://a:1,rediss://b:2'), /mix/, 'TLS for all nodes or none');
});

async function contract(t: Test, store: LocatorStore): Promise<void> {
  const id = randomBytes(16).toString('hex');
  const now = Date.now();
  const p: Presence = {
    addr: { ip: '203.0.113.7', port: 4000 }, netMode: 2, visibility: 1, sidHex: randomBytes(16).toString('hex'), seq: 5, regMs: now, expMs: now + 60_000,
    nickname: 'kitchen', extra: { localAddrs: [{ ip: '10.0.0.2', port: 4000 }, { ip: '2001:db8::1', port: 5 }], mediaId: 'cam', community: { a: 1, b: 'x', c: true }, allow: [randomBytes(16).toString('hex')] },
  };
  await store.putPresence(id, p);
  const got = await store.getPresence(id);
  t.same(got?.addr, p.addr);
  t.equal(got?.seq, 5);
  t.equal(got?.netMode, 2);
  t.equal(got?.visibility, 1);
  t.equal(got?.nickname, 'kitchen');
  t.same(got?.extra, p.extra);
  t.ok(Math.abs(got!.expMs - p.expMs) <= 100, 'expiry kept (embedded: 100 ms ticks)');
  const many = await store.getPresences([id, randomBytes(16).toString('hex')]);
  t.ok(many[0]);
  t.equal(many[1], undefined);
  t.equal(await store.deletePresence(id), true);
  t.equal(await store.getPresence(id), undefined);

}

async function groupContract(t: Test, store: LocatorStore): Promise<void> {
  const [a, b, c, d] = [0, 1, 2, 3].map(() => randomBytes(16));
  const key = codeKeyOf('secret');
  const right = (k: Buffer): boolean => k.equals(key);
  const g = await store.groups.create(a!, 'team', key);
  await t.rejects(async () => store.groups.join(g, b!), { code: 48 }, 'closed group without proof');
  await t.rejects(async () => store.groups.join(g, b!, () => false), /wrong join code/);
  t.equal(await store.groups.join(g, b!, right), true);
  t.equal(await store.groups.join(g, b!, right), false, 'idempotent');
  t.equal(await store.groups.join(g, c!, right), true);
  await t.rejects(async () => store.groups.join(g, d!, right), /members already/);
  t.same((await store.groups.members(g, 0, 10)).map((x) => x.toString('hex')), [a, b, c].map((x) => x!.toString('hex')), 'join order');
  t.same((await store.groups.members(g, 1, 1)).map((x) => x.toString('hex')), [b!.toString('hex')]);
  const info = await store.groups.get(g);
  t.equal(info?.name, 'team');
  t.equal(info?.closed, true);
  t.equal(info?.members, 3);
  t.equal(await store.groups.shareGroup(a!, c!), true);
  t.equal(await store.groups.shareGroup(a!, d!), false);
  t.equal(await store.groups.isMember(g, d!), false);
  const unknown = randomBytes(16);
  await t.rejects(async () => store.groups.joinAll(d!, [{ groupId: unknown }]), { code: 49 }, 'joinAll creates no group');
  t.equal(await store.groups.get(unknown), undefined);
  // All or nothing: an open group first, then a refused one (unknown; closed with a wrong proof).
  const open = await store.groups.create(a!, 'open');
  await t.rejects(async () => store.groups.joinAll(d!, [{ groupId: open }, { groupId: unknown }]), { code: 49 });
  await t.rejects(async () => store.groups.joinAll(d!, [{ groupId: open }, { groupId: g, proof: () => false }]), /wrong join code/);
  t.equal(await store.groups.isMember(open, d!), false, 'a refused joinAll joins none of its groups');
  t.equal(await store.groups.joinAll(d!, [{ groupId: open }]), 1);
  await store.groups.leave(open, d!);
  await store.groups.leave(open, a!);
  // Failed join proofs are counted per terminal and per group, in a window.
  t.same(await store.groups.joinFailures(g, d!), { terminal: 0, group: 0, terminalLeftMs: 0, groupLeftMs: 0 });
  // The terminal's count reaches its limit, the group's stays under its own: the time left is
  // given of the count at its limit (the one a refusal names), 0 or the time left of the other.
  for (let i = 0; i < JOIN_FAILURE_LIMITS.perTerminal; i++) await store.groups.noteJoinFailure(g, d!);
  const atLimit = await store.groups.joinFailures(g, d!);
  const n = JOIN_FAILURE_LIMITS.perTerminal;
  t.match(atLimit, { terminal: n, group: n });
  const inWindow = (ms: number): boolean => ms > 0 && ms <= JOIN_FAILURE_LIMITS.windowMs;
  t.ok(inWindow(atLimit.terminalLeftMs), 'the time left of the window of the count at its limit');
  t.ok(atLimit.groupLeftMs === 0 || inWindow(atLimit.groupLeftMs), 'under its limit: 0 or the time left');
  const other = await store.groups.joinFailures(g, a!);
  t.match(other, { terminal: 0, group: n, terminalLeftMs: 0 }, 'another terminal: the group count only');
  t.equal(await store.groups.leave(g, b!), true);
  t.equal(await store.groups.leave(g, b!), false);
  for (const x of [a, c]) await store.groups.leave(g, x!);
  t.equal(await store.groups.get(g), undefined, 'an emptied group is deleted');
}

t.test('embedded backend', async (t) => {
  const pair = generatePair('x25519');
  const sessions = new ServerSessions({ verifier: new TicketVerifier({ keys: new Map(), audience: 'locator' }), serviceSecret: privateKeyObject('X25519', pair) });
  const groups = new GroupStore(':memory:', limits);
  const store = new EmbeddedStore(new RegistrationTable({ maxEntries: 100 }), sessions, groups);
  await contract(t, store);
  await groupContract(t, store);
  groups.close();
});

t.test('embedded backend: updatePresence renews the record it read in place, or decides by ID when change removed or replaced it, or it expired meanwhile', async (t) => {
  let now = Date.now();
  const gone: string[] = [];
  const table = new RegistrationTable({ maxEntries: 2, now: () => now, onGone: (k) => gone.push(k) });
  const sessions = new ServerSessions({ verifier: new TicketVerifier({ keys: new Map(), audience: 'locator' }), serviceSecret: privateKeyObject('X25519', generatePair('x25519')) });
  const groups = new GroupStore(':memory:', limits);
  t.teardown(() => groups.close());
  const store = new EmbeddedStore(table, sessions, groups);
  const [a, b, c] = [0, 1, 2].map(() => randomBytes(16).toString('hex')) as [string, string, string];
  const at = (seq: number, ip: string): Presence => ({ addr: { ip, port: 4000 + seq }, netMode: 1, visibility: 0, sidHex: '', seq, regMs: now, expMs: now + 10_000, nickname: `n${seq}`, extra: undefined });
  const renew = (seq: number, ip: string, before?: () => void) => (cur: Presence | undefined): PresenceChange<number | undefined> => {
    before?.();
    return { result: cur?.seq, put: at(seq, ip) };
  };
  const check = (id: string, seq: number, ip: string, what: string): void => {
    const p = store.getPresence(id);
    t.same(p && [p.seq, p.addr, p.nickname], [seq, { ip, port: 4000 + seq }, `n${seq}`], what);
  };

  store.putPresence(a, at(1, '192.0.2.1'));
  store.putPresence(b, at(1, '192.0.2.2'));
  const slot = table.find(a);
  t.equal(store.updatePresence(a, renew(2, '2001:db8::2')), 1);
  check(a, 2, '2001:db8::2', 'renewed (IPv4 to IPv6)');
  t.equal(table.find(a), slot, 'in the same slot');
  store.putPresence(c, at(1, '192.0.2.3'));
  t.ok(store.getPresence(a) && !store.getPresence(b), 'the renewed record was marked most recently refreshed: the other one was evicted');

  t.equal(store.updatePresence(a, renew(3, '192.0.2.9', () => store.deletePresence(a))), 2);
  check(a, 3, '192.0.2.9', 'removed by change: stored anew');

  t.equal(store.updatePresence(a, renew(5, '192.0.2.5', () => store.putPresence(a, at(4, '192.0.2.4')))), 3);
  check(a, 5, '192.0.2.5', 'replaced by change: the put is written over the replacement');

  gone.length = 0;
  t.equal(store.updatePresence(a, renew(6, '192.0.2.6', () => (now += 20_000))), 5);
  t.same(gone, [a], 'expired while change ran: freed and told, as a lookup by ID does');
  check(a, 6, '192.0.2.6', 'then stored anew');
  t.equal(table.expired, 1);
});

t.test('redis backend', { skip: noRedis }, async (t) => {
  const redis = await startRedis(t);
  const sealKey = randomBytes(32);
  const store = new RedisStore({ ...parseRedisUrl(redis.url), limits, timeoutMs: 1000, maxPending: 1000, sessionSealKey: sealKey });
  t.teardown(() => store.close());
  await contract(t, store);
  await groupContract(t, store);
  t.ok((await store.usedMemory()) > 0);
});

t.test('redis backend: sessions are sealed at rest and bound to their ID', { skip: noRedis }, async (t) => {
  const redis = await startRedis(t);
  const sealKey = randomBytes(32);
  const store = new RedisStore({ ...parseRedisUrl(redis.url), limits, timeoutMs: 1000, maxPending: 1000, sessionSealKey: sealKey });
  const other = new RedisStore({ ...parseRedisUrl(redis.url), limits, timeoutMs: 1000, maxPending: 1000, sessionSealKey: randomBytes(32) });
  t.teardown(() => { void store.close(); void other.close(); });
  const [sid, sid2] = [randomBytes(16).toString('hex'), randomBytes(16).toString('hex')];
  const s = { sidHex: sid, locatorHex: randomBytes(16).toString('hex'), aud: 'locator', exp: Math.floor(Date.now() / 1000) + 60, kid: 'ab', t2s: randomBytes(32), s2t: randomBytes(32) };
  await store.saveSession(s);
  const back = await store.loadSession(sid);
  t.equal(back?.kid, 'ab');
  t.same(back?.t2s, s.t2s);
  t.same(back?.s2t, s.s2t);
  const raw = await store.client.call(['GET', `dl:s:{${sid}}`], `dl:s:{${sid}}`) as Buffer;
  t.equal(raw.indexOf(s.t2s), -1, 'no session key in clear in Redis');
  t.equal(raw.indexOf(s.s2t), -1);
  t.equal(raw.indexOf(Buffer.from(s.locatorHex, 'hex')), -1, 'nor the locator ID');
  t.equal(await other.loadSession(sid), undefined, 'another service key cannot open it');
  // Someone who can write Redis copies a sealed session under another ID: it does not open.
  await store.client.call(['SET', `dl:s:{${sid2}}`, raw], `dl:s:{${sid2}}`);
  t.equal(await store.loadSession(sid2), undefined, 'bound to its session ID');
  const flipped = Buffer.from(raw);
  flipped[flipped.length - 1]! ^= 1;
  await store.client.call(['SET', `dl:s:{${sid}}`, flipped], `dl:s:{${sid}}`);
  t.equal(await store.loadSession(sid), undefined, 'tampered: refused');
});

t.test('redis backend: the shared replay window is ReplayWindow, one atomic step per claim', { skip: noRedis }, async (t) => {
  const redis = await startRedis(t);
  const url = parseRedisUrl(redis.url);
  const sealKey = randomBytes(32);
  const a = new RedisStore({ ...url, limits, timeoutMs: 1000, maxPending: 1000, sessionSealKey: sealKey });
  const b = new RedisStore({ ...url, limits, timeoutMs: 1000, maxPending: 1000, sessionSealKey: sealKey });
  t.teardown(() => { void a.close(); void b.close(); });
  const sid = { sidHex: randomBytes(16).toString('hex'), locatorHex: randomBytes(16).toString('hex') };
  const src = '192.0.2.1|4000';
  t.equal(await a.claimSeq(sid, 5, 60_000, src), 'ok', 'new');
  t.equal(await b.claimSeq(sid, 5, 60_000, '192.0.2.9|1'), 'replay', 'taken: another instance, another source');
  t.equal(await b.claimSeq(sid, 5, 60_000, src), 'elsewhere', 'taken for this source: a retransmission elsewhere');
  t.equal(await b.claimSeq(sid, 3, 60_000, src), 'ok', 'below the highest, inside the window, not seen');
  t.equal(await a.claimSeq(sid, 3, 60_000, src), 'elsewhere');
  t.equal(await a.claimSeq(sid, 70, 60_000, src), 'ok');
  t.equal(await b.claimSeq(sid, 6, 60_000, src), 'old', 'left of the window (70 - 64)');
  t.equal(await b.claimSeq(sid, 7, 60_000, src), 'ok', "the window's left edge");
  const big = Number.MAX_SAFE_INTEGER;
  t.equal(await a.claimSeq(sid, big, 60_000, src), 'ok', '2^53-1 is exact');
  t.equal(await b.claimSeq(sid, big, 60_000, src), 'elsewhere');
  t.equal(await b.claimSeq(sid, big - 1, 60_000, src), 'ok');
  t.equal(await b.claimSeq(sid, big - 64, 60_000, src), 'old');
  // "Try again" gives the number back: it can be taken again (by any instance).
  await a.releaseSeq(sid, big - 1);
  t.equal(await a.claimSeq(sid, big - 1, 60_000, '192.0.2.9|1'), 'ok', 'released, taken again');
  // Concurrent claims of one number by two instances: exactly one wins.
  const sid2 = { sidHex: randomBytes(16).toString('hex'), locatorHex: sid.locatorHex };
  const both = await Promise.all([a.claimSeq(sid2, 1, 60_000, '192.0.2.1|1'), b.claimSeq(sid2, 1, 60_000, '192.0.2.2|2')]);
  t.same(both.filter((v) => v === 'ok').length, 1, 'one of two concurrent claims wins');
  const k = `dl:rb:{${sid.locatorHex}}${sid.sidHex.slice(0, 16)}`;
  const ttl = (await a.client.call(['PTTL', k], k)) as number;
  t.ok(ttl > 0 && ttl <= 60_000, 'the window expires with the session');
  t.equal(await a.client.call(['EXISTS', `dl:rb:{${sid2.locatorHex}}${sid2.sidHex.slice(0, 16)}`]), 1, "each session its own window, in its terminal's slot");
  // Compact (issue 16): the highest number and a 1-byte fingerprint per slot, whatever was taken.
  t.equal(await a.client.call(['STRLEN', k], k), 8 + 64, 'one 72-byte string per window');
  // A window that slid by less than its width keeps what it still covers and forgets the rest.
  const sid3 = { sidHex: randomBytes(16).toString('hex'), locatorHex: sid.locatorHex };
  for (let seq = 1; seq <= 64; seq++) t.equal(await a.claimSeq(sid3, seq, 60_000, src), 'ok');
  t.equal(await b.claimSeq(sid3, 100, 60_000, src), 'ok', 'slides by 36');
  t.equal(await b.claimSeq(sid3, 37, 60_000, src), 'elsewhere', '37..64 still in the window, taken');
  t.equal(await b.claimSeq(sid3, 64, 60_000, '192.0.2.9|1'), 'replay');
  t.equal(await b.claimSeq(sid3, 36, 60_000, src), 'old');
  for (const seq of [65, 80, 99]) t.equal(await b.claimSeq(sid3, seq, 60_000, src), 'ok', `${seq}: passed over by the slide, never taken`);
  t.equal(await a.claimSeq(sid3, 99, 60_000, src), 'elsewhere');
  t.equal(await b.claimSeq(sid3, 100 + 64, 60_000, src), 'ok', 'a slide of the whole width');
  t.equal(await b.claimSeq(sid3, 101, 60_000, src), 'ok', 'forgets everything before');
});

t.test("redis backend: a REFRESH's claim folded into the presence compare-and-set: one script, refusals write nothing", { skip: noRedis }, async (t) => {
  const redis = await startRedis(t);
  const url = parseRedisUrl(redis.url);
  const sealKey = randomBytes(32);
  const a = new RedisStore({ ...url, limits, timeoutMs: 1000, maxPending: 1000, sessionSealKey: sealKey, presenceCacheEntries: 100 });
  const b = new RedisStore({ ...url, limits, timeoutMs: 1000, maxPending: 1000, sessionSealKey: sealKey, presenceCacheEntries: 100 });
  t.teardown(() => { void a.close(); void b.close(); });
  const owner = { sidHex: randomBytes(16).toString('hex'), locatorHex: randomBytes(16).toString('hex') };
  const src = '192.0.2.1|4000';
  const window: SharedReplayWindow = { claim: (s, seq, ttl, from) => a.claimSeq(s, seq, ttl, from), release: (s, seq) => a.releaseSeq(s, seq) };
  const claimOf = (seq: number, from = src): DeferredClaim => new DeferredClaim(owner, seq, 60_000, from, window);
  const now = Date.now();
  const id = owner.locatorHex;
  await a.putPresence(id, { addr: { ip: '192.0.2.1', port: 4000 }, netMode: 0, visibility: 0, sidHex: owner.sidHex, seq: 1, regMs: now, expMs: now + 60_000 });
  const renew = (cur: Presence | undefined): PresenceChange<number> => (cur ? { result: cur.seq + 1, put: { ...cur, seq: cur.seq + 1 } } : { result: -1 });
  const calls = async (): Promise<Record<string, number>> => {
    const info = String(await a.client.call(['INFO', 'commandstats']));
    return Object.fromEntries([...info.matchAll(/cmdstat_(\w+):calls=(\d+)/g)].map((m) => [m[1]!, Number(m[2])]));
  };
  const c1 = claimOf(2);
  t.equal(await a.updatePresence(id, renew, undefined, c1), 2, 'written');
  t.equal(c1.state, 'taken');
  t.equal(await b.claimSeq(owner, 2, 60_000, '192.0.2.9|1'), 'replay', 'the number is taken in the shared window');
  // Once the script is cached in Redis: one EVALSHA (the commands a script runs are counted too,
  // under their own names: GET, SET, SETRANGE).
  await a.client.call(['CONFIG', 'RESETSTAT']);
  const c0 = claimOf(3);
  t.equal(await a.updatePresence(id, renew, undefined, c0), 3);
  const counted = await calls();
  t.equal(counted['evalsha'], 1, 'one script: the claim and the compare-and-set');
  t.notOk(counted['eval'], 'cached');

  const c2 = claimOf(2, '192.0.2.9|1');
  await t.rejects(a.updatePresence(id, renew, undefined, c2), { name: 'ClaimRefused', verdict: 'replay' }, 'taken: refused');
  t.same([c2.state, c2.verdict], ['refused', 'replay']);
  t.equal((await a.getPresence(id))?.seq, 3, 'nothing written');
  const c3 = claimOf(2);
  await t.rejects(a.updatePresence(id, renew, undefined, c3), { name: 'ClaimRefused' });
  t.equal(c3.verdict, 'elsewhere', 'taken for this source');
  await a.claimSeq(owner, 80, 60_000, src);
  const c4 = claimOf(3);
  await t.rejects(a.updatePresence(id, renew, undefined, c4), { name: 'ClaimRefused' });
  t.equal(c4.verdict, 'old', 'left of the window');
  t.equal((await a.getPresence(id))?.seq, 3, 'still nothing written');

  // Nothing to write: the claim is taken alone, before the result.
  const c5 = claimOf(81);
  t.equal(await a.updatePresence(id, (cur) => ({ result: cur?.seq ?? -1 }), undefined, c5), 3);
  t.equal(c5.state, 'taken');
  t.equal(await b.claimSeq(owner, 81, 60_000, src), 'elsewhere', 'taken');

  // Another instance wrote since a's guess: the script takes the number and finds another value;
  // the compare-and-set is retried alone (a second claim of the same number would be refused).
  await b.putPresence(id, { addr: { ip: '192.0.2.1', port: 4000 }, netMode: 0, visibility: 0, sidHex: owner.sidHex, seq: 10, regMs: now, expMs: now + 60_000 });
  const c6 = claimOf(82);
  t.equal(await a.updatePresence(id, renew, undefined, c6), 11, "decided again on b's record, written");
  t.equal(c6.state, 'taken');
  t.equal((await b.getPresence(id))?.seq, 11);
  t.equal(await b.claimSeq(owner, 82, 60_000, src), 'elsewhere', 'taken once');

  // Redis fails while the script is asked: the claim is left unsettled (the caller gives it back).
  await redis.stop();
  const c7 = claimOf(83);
  await t.rejects(a.updatePresence(id, renew, undefined, c7), { name: 'RedisUnavailable' });
  t.equal(c7.state, 'unsettled');
});

t.test('redis backend: a replay window of the layout of before (2-byte fingerprints) keeps refusing what it took', { skip: noRedis }, async (t) => {
  const redis = await startRedis(t);
  const url = parseRedisUrl(redis.url);
  const a = new RedisStore({ ...url, limits, timeoutMs: 1000, maxPending: 1000, sessionSealKey: randomBytes(32) });
  t.teardown(() => { void a.close(); });
  const sid = { sidHex: randomBytes(16).toString('hex'), locatorHex: randomBytes(16).toString('hex') };
  const src = '192.0.2.1|4000';
  // What an instance of before wrote: highest 10, 5 and 10 taken from src (its 16-bit fingerprint).
  const fnv = (x: string): number => { let h = 0x811c9dc5; for (let i = 0; i < x.length; i++) h = Math.imul(h ^ x.charCodeAt(i), 0x01000193); return ((h >>> 16) ^ h) & 0xffff || 1; };
  const old = Buffer.alloc(8 + 2 * 64);
  old.writeDoubleBE(10, 0);
  for (const seq of [5, 10]) old.writeUInt16BE(fnv(src), 8 + 2 * (seq % 64));
  const kOld = `dl:rs:{${sid.locatorHex}}${sid.sidHex.slice(0, 16)}`;
  const k = `dl:rb:{${sid.locatorHex}}${sid.sidHex.slice(0, 16)}`;
  await a.client.call(['SET', kOld, old, 'PX', 60_000], kOld);
  t.equal(await a.claimSeq(sid, 5, 60_000, '192.0.2.9|1'), 'replay', 'taken before the upgrade: refused');
  t.equal(await a.claimSeq(sid, 10, 60_000, src), 'elsewhere', 'its source is still recognised');
  t.equal(await a.client.call(['EXISTS', k], k), 0, 'nothing written by a refusal');
  t.equal(await a.claimSeq(sid, 7, 60_000, src), 'ok', 'a number not taken');
  t.equal(await a.client.call(['STRLEN', k], k), 8 + 64, 'the new layout written by the first claim');
  const ttl = (await a.client.call(['PTTL', k], k)) as number;
  t.ok(ttl > 0 && ttl <= 60_000, "with the old window's expiry");
  t.equal(await a.claimSeq(sid, 5, 60_000, src), 'elsewhere', 'what it held survives the conversion');
  t.equal(await a.claimSeq(sid, 4, 60_000, src), 'ok');
  t.equal(await a.claimSeq(sid, 4, 60_000, src), 'elsewhere', 'the new window is the one used from then on');
  const sid2 = { sidHex: randomBytes(16).toString('hex'), locatorHex: sid.locatorHex };
  const kOld2 = `dl:rs:{${sid2.locatorHex}}${sid2.sidHex.slice(0, 16)}`;
  await a.client.call(['SET', kOld2, old, 'PX', 60_000], kOld2);
  await a.releaseSeq(sid2, 5);
  t.equal(await a.client.call(['STRLEN', `dl:rb:{${sid2.locatorHex}}${sid2.sidHex.slice(0, 16)}`]), 8 + 64, 'a release converts too');
  t.equal(await a.claimSeq(sid2, 5, 60_000, '192.0.2.9|1'), 'ok', 'released, taken again');
  t.equal(await a.claimSeq(sid2, 10, 60_000, '192.0.2.9|1'), 'replay', 'the rest kept');
});

t.test('redis backend: updatePresence is a compare-and-set (a concurrent newer write wins)', { skip: noRedis }, async (t) => {
  const redis = await startRedis(t);
  const url = parseRedisUrl(redis.url);
  const sealKey = randomBytes(32); // one deployment: records one instance writes verify at the other
  const a = new RedisStore({ ...url, limits, timeoutMs: 1000, maxPending: 1000, sessionSealKey: sealKey, instanceId: 'aaaaaaaaaaaaaaaa' });
  const b = new RedisStore({ ...url, limits, timeoutMs: 1000, maxPending: 1000, sessionSealKey: sealKey, instanceId: 'bbbbbbbbbbbbbbbb' });
  t.teardown(() => { void a.close(); void b.close(); });
  const id = randomBytes(16).toString('hex');
  const sid = randomBytes(16).toString('hex');
  const now = Date.now();
  const at = (seq: number, port: number): Presence => ({ addr: { ip: '198.51.100.1', port }, netMode: 0, visibility: 0, sidHex: sid, seq, regMs: now, expMs: now + 60_000 });
  await a.putPresence(id, at(1, 1000));
  // Instance A reads seq 1 and decides to store seq 2; instance B stores seq 12 after A's read
  // and before A's write (two instances serving one terminal at once). A's write must not undo
  // B's: its compare-and-set fails, A decides again on B's record and finds its update stale.
  const evalOrig = a.client.eval.bind(a.client);
  let interfered = false;
  a.client.eval = async (...args: Parameters<typeof evalOrig>) => {
    if (!interfered) {
      interfered = true;
      await b.putPresence(id, at(12, 3000));
    }
    return evalOrig(...args);
  };
  const seen: (number | undefined)[] = [];
  const r = await a.updatePresence(id, (cur) => {
    seen.push(cur?.seq);
    return cur && cur.seq >= 2 ? { result: 'stale' } : { result: 'stored', put: at(2, 2000) };
  });
  a.client.eval = evalOrig;
  t.same(seen, [1, 12], 'conflict detected, decision taken again on the newer record');
  t.equal(r, 'stale');
  const final = await a.getPresence(id);
  t.equal(final?.seq, 12, "B's newer record stands");
  t.equal(final?.addr.port, 3000);
  t.equal(final?.inst, 'bbbbbbbbbbbbbbbb', 'records name their writer');
  t.equal(a.casConflicts, 1);
  // Delete only what was read.
  t.equal(await a.updatePresence(id, (cur) => (cur ? { result: true, remove: true } : { result: false })), true);
  t.equal(await a.getPresence(id), undefined);
  // EVALSHA after the script cache is flushed (a Redis restart): NOSCRIPT, then EVAL.
  await a.client.call(['SCRIPT', 'FLUSH']);
  t.equal(await a.updatePresence(id, () => ({ result: 'ok', put: at(20, 4000) })), 'ok');
  t.equal((await b.getPresence(id))?.seq, 20);
});

t.test('redis backend: an update on the remembered value skips the GET, and a stale one decides again on what Redis holds', { skip: noRedis }, async (t) => {
  const redis = await startRedis(t);
  const url = parseRedisUrl(redis.url);
  const sealKey = randomBytes(32);
  const a = new RedisStore({ ...url, limits, timeoutMs: 1000, maxPending: 1000, sessionSealKey: sealKey, instanceId: 'aaaaaaaaaaaaaaaa', presenceCacheEntries: 2 });
  const b = new RedisStore({ ...url, limits, timeoutMs: 1000, maxPending: 1000, sessionSealKey: sealKey, instanceId: 'bbbbbbbbbbbbbbbb' });
  t.teardown(() => { void a.close(); void b.close(); });
  // GETs A sends (Redis's commandstats would also count the scripts' own GETs).
  let getsSent = 0;
  const callOrig = a.client.call.bind(a.client);
  a.client.call = (args, key) => {
    if (args[0] === 'GET') getsSent++;
    return callOrig(args, key);
  };
  const gets = async (): Promise<number> => getsSent;
  const id = randomBytes(16).toString('hex');
  const sid = randomBytes(16).toString('hex');
  const now = Date.now();
  const at = (seq: number, port: number): Presence => ({ addr: { ip: '198.51.100.1', port }, netMode: 0, visibility: 0, sidHex: sid, seq, regMs: now, expMs: now + 60_000 });
  const renew = (seq: number, port: number) => (cur: Presence | undefined): PresenceChange<number | undefined> =>
    (cur && cur.seq >= seq ? { result: cur.seq } : { result: cur?.seq, put: at(seq, port) });
  await a.putPresence(id, at(1, 1000));
  const g0 = await gets();
  t.equal(await a.updatePresence(id, renew(2, 1000)), 1, 'decided on the value it wrote');
  t.equal(await a.updatePresence(id, renew(3, 1000)), 2);
  t.equal(await gets(), g0, 'no GET: the script was sent with the remembered value');
  // Another instance writes meanwhile: A's guess is stale, the script answers with B's record.
  await b.putPresence(id, at(12, 3000));
  const seen: (number | undefined)[] = [];
  t.equal(await a.updatePresence(id, (cur) => { seen.push(cur?.seq); return renew(4, 1000)(cur); }), 12);
  t.same(seen, [3, 12], 'decided again on the current record');
  t.equal(a.casConflicts, 0, 'a stale guess is not a conflict');
  t.equal((await b.getPresence(id))?.seq, 12, "B's newer record stands");
  t.equal(await gets(), g0, 'the script answered with the current record: no GET either');
  // Nothing to write on a guess (here: B's record, remembered from that answer): checked with a GET.
  t.equal(await a.updatePresence(id, renew(5, 1000)), 12);
  t.equal(await gets(), g0 + 1, 'one GET');
  // The record expired or was deleted elsewhere: decided on absence.
  await b.deletePresence(id);
  t.equal(await a.updatePresence(id, renew(13, 1000)), undefined, 'the guess found gone');
  t.equal((await b.getPresence(id))?.seq, 13);
  // Bounded: the oldest remembered leaves first.
  for (let i = 0; i < 3; i++) await a.putPresence(randomBytes(16).toString('hex'), at(1, 1000));
  const g1 = await gets();
  await a.updatePresence(id, renew(14, 1000));
  t.equal(await gets(), g1 + 1, 'forgotten beyond presenceCacheEntries: read first');
});

t.test('redis backend: a remembered value is one this instance wrote or verified; an altered record is never decided on', { skip: noRedis }, async (t) => {
  const redis = await startRedis(t);
  const url = parseRedisUrl(redis.url);
  const rejected: string[] = [];
  const a = new RedisStore({ ...url, limits, timeoutMs: 1000, maxPending: 1000, sessionSealKey: randomBytes(32), presenceCacheEntries: 8, onRejected: (kind) => rejected.push(kind) });
  t.teardown(() => { void a.close(); });
  const id = randomBytes(16).toString('hex');
  const now = Date.now();
  await a.putPresence(id, { addr: { ip: '198.51.100.1', port: 1000 }, netMode: 0, visibility: 0, sidHex: randomBytes(16).toString('hex'), seq: 1, regMs: now, expMs: now + 60_000 });
  // Its tag altered in Redis: the value still decodes, the tag no longer verifies.
  const k = a.presenceKey(id);
  const v = (await a.client.call(['GET', k], k)) as Buffer;
  v.writeUInt8(v.readUInt8(v.length - 1) ^ 1, v.length - 1);
  await a.client.call(['SET', k, v, 'PX', 60_000], k);
  const seen: (number | undefined)[] = [];
  const look = (cur: Presence | undefined): PresenceChange<number> => { seen.push(cur?.seq); return { result: 0 }; };
  await a.updatePresence(id, look);
  t.same(seen, [1, undefined], 'the guess (its own write), then what Redis holds: absent, for it does not verify');
  await a.updatePresence(id, look);
  t.same(seen, [1, undefined, undefined], 'not remembered: read and refused again');
  t.same(rejected, ['presence', 'presence'], 'reported each time');
});

t.test('client: fails fast when down, bounded in flight, a hung Redis is detected and the connection replaced, recovers', { skip: noRedis }, async (t) => {
  const redis = await startRedis(t);
  const states: string[] = [];
  const stateSeen = (s: string): Promise<void> => new Promise((resolve) => {
    const check = (): void => (states.includes(s) ? resolve() : void setTimeout(check, 10));
    check();
  });
  const c = new RedisClient({ nodes: [{ host: '127.0.0.1', port: redis.port }], timeoutMs: 400, hangMs: 800, maxPending: 50, onState: (s) => states.push(s) });
  t.teardown(() => c.close());
  t.same(await c.call(['PING']), Buffer.from('PONG'));
  // Stalled Redis (SIGSTOP, the connection stays open): commands time out; beyond maxPending
  // they fail at once; the connection that stopped answering is closed (hangMs).
  redis.proc.kill('SIGSTOP');
  t.teardown(() => { redis.proc.kill('SIGCONT'); });
  const calls = Array.from({ length: 80 }, (_, i) => c.call(['SET', `k${i}`, 'v']).then(() => 'ok', (e: Error) => e));
  t.equal(c.pending, 50, 'in flight bounded');
  const results = await Promise.all(calls);
  t.ok(results.every((r) => r instanceof RedisUnavailable), 'all failed with RedisUnavailable');
  t.ok(results.slice(50).every((r) => /queue full/.test((r as Error).message)), 'beyond maxPending: at once');
  await stateSeen('down');
  t.ok(states.includes('down'), 'the hung connection was closed (hangMs), not left waiting');
  await t.rejects(c.call(['PING']), RedisUnavailable, 'while it is hung: fails (no offline queue)');
  redis.proc.kill('SIGCONT');
  // Up again after that down (not the first up), and the commands of the hung connection all
  // settled (a busy machine may report them later than the reconnect).
  await new Promise<void>((resolve) => {
    const check = (): void => (states.lastIndexOf('up') > states.lastIndexOf('down') && c.pending === 0 ? resolve() : void setTimeout(check, 10));
    check();
  });
  t.same(await c.call(['PING']), Buffer.from('PONG'), 'recovered');
  // Down: fail fast, then reconnect by itself.
  await redis.stop();
  await t.rejects(c.call(['PING']), RedisUnavailable);
  const ups = states.filter((s) => s === 'up').length;
  await redis.start();
  await new Promise<void>((resolve) => {
    const check = (): void => (states.filter((s) => s === 'up').length > ups ? resolve() : void setTimeout(check, 10));
    check();
  });
  t.same(await c.call(['PING']), Buffer.from('PONG'), 'reconnected after a restart');
  t.equal(c.pending, 0, 'nothing left in flight');
});
