// Several devloc-locatord processes sharing one real redis-server: register through one, find
// through another; Redis down gives TRY_LATER (with retryAfterMs) and a log line, and after a
// Redis restart (no persistence: everything gone) the terminal re-registers and is served again
// without restarting the daemons. Also --workers 2 on one port.
import t from 'tap';
import { daemonAddress, redisLocatord } from './fixtures/locatord.js';
import path from 'node:path';
import type { Test } from 'tap';
import type { RunningDaemon } from '../helpers/daemon.js';
import { ErrorCode } from '../../src/wire/errors.js';
import type { TestKeys } from '../locatord/fixtures/helpers.js';
import { errorCodeOf, makeKeys, Terminal } from '../locatord/fixtures/helpers.js';
import type { TestRedis } from './fixtures/redis-server.js';
import { hasRedis } from './fixtures/redis-server.js';
import { needs } from '../ops/tools.js';
import { startRedis } from './fixtures/redis-server.js';
import { metricValue, scrapeMetrics } from '../helpers/metrics.js';
import { RedisClient } from '../../src/locatord/store/redis-client.js';
import { UdpClient } from '../../src/net/client.js';

/** The suite starts its own redis-server (and redis-cli for the Cluster): skipped, saying so, without them. */
const noRedis = needs('redis-server and redis-cli', hasRedis()).skip; // required in CI

// --redis-timeout-ms generous: under load a reply can take over 300 ms, and locatord then answers
// TRY_LATER, which these tests would read as a failure (seen: a REGISTER refused "replay window:
// redis no reply within 300 ms" at load 10). A Redis that is stopped is seen at once (the
// connection drops), whatever the timeout.
const REDIS_TIMEOUT_MS = 3000;
const locatord = (t: Test, keys: TestKeys, redis: TestRedis, extra: string[] = []): Promise<RunningDaemon> =>
  redisLocatord(t, keys, redis.url, { redisTimeoutMs: REDIS_TIMEOUT_MS, extra });

const dest = daemonAddress;

t.test('register through one instance, query through another', { skip: noRedis }, async (t) => {
  const redis = await startRedis(t);
  const keys = makeKeys();
  const [a, b] = await Promise.all([locatord(t, keys, redis), locatord(t, keys, redis)]);
  const alice = await Terminal.open(t, keys, dest(a));
  const bob = await Terminal.open(t, keys, dest(a));
  await alice.expect(t, 'REGISTER_ACK', alice.register({ nickname: 'alice' }));
  await bob.expect(t, 'REGISTER_ACK', bob.register({ visibility: 1 }));
  // Group IDs are drawn by locatord (issue 15): bob creates the group his REGISTER could not.
  const groupId = (await bob.expect(t, 'GROUP_CREATE_ACK', bob.request('GROUP_CREATE', { name: 'g' }))).body.groupId;
  // Alice now talks to B: her session (opened on A) is loaded from Redis.
  alice.dest = dest(b);
  const q = await alice.expect(t, 'QUERY_ADDR_RESULT', alice.request('QUERY_ADDR', { ids: [alice.locatorId, bob.locatorId] }));
  t.equal(q.body.entries[0]?.online, true);
  t.same(q.body.entries[0]?.addr, alice.address);
  t.equal(q.body.entries[0]?.nickname, 'alice');
  t.equal(q.body.entries[1]?.online, false, 'visibility 1 hides bob from a non-member');
  // Refresh through B, then the address as A sees it.
  await alice.expect(t, 'REFRESH_ACK', alice.request('REFRESH', {}));
  await alice.expect(t, 'GROUP_JOIN_ACK', alice.request('GROUP_JOIN', { groupId }));
  bob.dest = dest(b);
  const m = await bob.expect(t, 'GROUP_MEMBERS_RESULT', bob.request('GROUP_MEMBERS', { groupId }));
  t.equal(m.body.total, 2);
  t.ok(m.body.members.every((e) => e.online));
  alice.dest = dest(a);
  const s = await alice.expect(t, 'QUERY_STATUS_RESULT', alice.request('QUERY_STATUS', { ids: [bob.locatorId] }));
  t.same(s.body.online, [true], 'group members see each other, through A too');
  await alice.expect(t, 'UNREGISTER_ACK', alice.request('UNREGISTER', {}));
  bob.dest = dest(a);
  const gone = await bob.expect(t, 'QUERY_STATUS_RESULT', bob.request('QUERY_STATUS', { ids: [alice.locatorId] }));
  t.same(gone.body.online, [false]);
});

t.test('a REFRESH is one Redis command: the shared window claim and the presence write in one script', { skip: noRedis }, async (t) => {
  const redis = await startRedis(t);
  const keys = makeKeys();
  const a = await locatord(t, keys, redis);
  const alice = await Terminal.open(t, keys, dest(a));
  await alice.expect(t, 'REGISTER_ACK', alice.register({}));
  await alice.expect(t, 'REFRESH_ACK', alice.request('REFRESH', {}));
  const raw = new RedisClient({ nodes: [{ host: '127.0.0.1', port: redis.port }] });
  t.teardown(() => raw.close());
  const scripts = async (): Promise<number> => {
    const info = String(await raw.call(['INFO', 'commandstats']));
    return [...info.matchAll(/cmdstat_(?:evalsha|eval):calls=(\d+)/g)].reduce((n, m) => n + Number(m[1]), 0);
  };
  const before = await scripts();
  const n = 10;
  for (let i = 0; i < n; i++) await alice.expect(t, 'REFRESH_ACK', alice.request('REFRESH', {}));
  // Before issue 16's change, two: the claim (before the handler), then the compare-and-set.
  t.equal(await scripts() - before, n, `${n} REFRESHes, ${n} scripts`);
});

t.test("a first REGISTER from its ticket's address is one script: the shared window claim and the presence write", { skip: noRedis }, async (t) => {
  const redis = await startRedis(t);
  const keys = makeKeys();
  const a = await locatord(t, keys, redis);
  const raw = new RedisClient({ nodes: [{ host: '127.0.0.1', port: redis.port }] });
  t.teardown(() => raw.close());
  const scripts = async (): Promise<number> => {
    const info = String(await raw.call(['INFO', 'commandstats']));
    return [...info.matchAll(/cmdstat_(?:evalsha|eval):calls=(\d+)/g)].reduce((n, m) => n + Number(m[1]), 0);
  };
  const n = 5;
  // One more, first: its script reaches Redis as EVALSHA, then EVAL (NOSCRIPT: not loaded yet).
  const clients = await Promise.all(Array.from({ length: n + 1 }, () => UdpClient.open({ bind: { host: '127.0.0.1', port: 0 }, policy: { initialTimeoutMs: 300, deadlineMs: 10_000 } })));
  t.teardown(() => clients.forEach((c) => c.close()));
  const terms = await Promise.all(clients.map((client) => Terminal.open(t, keys, dest(a), { client, addr: { ip: '127.0.0.1', port: client.localPort } })));
  const first = terms.pop()!;
  await first.expect(t, 'REGISTER_ACK', first.register({}));
  const before = await scripts();
  for (const x of terms) await x.expect(t, 'REGISTER_ACK', x.register({}));
  // Until 2026-12-07, two: the claim (before the handler), then the compare-and-set.
  t.equal(await scripts() - before, n, `${n} first REGISTERs, ${n} scripts`);
  const q = await terms[0]!.expect(t, 'QUERY_STATUS_RESULT', terms[0]!.request('QUERY_STATUS', { ids: terms.map((x) => x.locatorId) }));
  t.same(q.body.online, terms.map(() => true), 'all registered');
});

t.test('redis down: TRY_LATER and a log line; redis restarted: re-register and served again', { skip: noRedis }, async (t) => {
  const redis = await startRedis(t);
  const keys = makeKeys();
  const a = await locatord(t, keys, redis, ['--metrics-listen', '127.0.0.1:0']);
  const term = await Terminal.open(t, keys, dest(a));
  await term.expect(t, 'REGISTER_ACK', term.register());
  const metricsAt = (await a.waitFor((l) => l['msg'] === 'metrics endpoint'))['listen'] as string;
  await redis.stop();
  const r = await term.request('REFRESH', {});
  t.equal(errorCodeOf(r), ErrorCode.TRY_LATER);
  t.ok(r.msg.name === 'ERROR' && (r.msg.body.retryAfterMs ?? 0) > 0, 'retryAfterMs on the wire');
  // A REGISTER asks the shared refusal list first: that lookup fails, and so does the REGISTER.
  const rr = await term.register();
  t.equal(errorCodeOf(rr), ErrorCode.TRY_LATER, 'REGISTER: TRY_LATER');
  t.ok(rr.msg.name === 'ERROR' && (rr.msg.body.retryAfterMs ?? 0) > 0, 'with retryAfterMs');
  t.notOk(a.lines.some((l) => l['msg'] === 'handler failed'), 'an unavailable Redis is not a handler bug');
  // A QUERY_ADDR's claim in the shared replay window (taken before its handler) fails too:
  // answered and counted as the handlers' store failures are, the client's words not on the wire.
  const errorsBefore = metricValue(await scrapeMetrics(metricsAt), 'redis_errors_total', { kind: 'unavailable' });
  const qa = await term.request('QUERY_ADDR', { ids: [term.locatorId] });
  t.equal(errorCodeOf(qa), ErrorCode.TRY_LATER, 'QUERY_ADDR: TRY_LATER');
  t.ok(qa.msg.name === 'ERROR' && (qa.msg.body.message === undefined || qa.msg.body.message === 'store unavailable, try later'), `its message: ${qa.msg.name === 'ERROR' ? qa.msg.body.message : ''}`);
  t.ok(metricValue(await scrapeMetrics(metricsAt), 'redis_errors_total', { kind: 'unavailable' }) > errorsBefore, 'counted in redis_errors_total');
  await a.waitFor((l) => l['msg'] === 'redis connection lost');
  await redis.start();
  await a.waitFor((l) => l['msg'] === 'redis connection restored');
  // Redis came back empty: the registration is gone; the terminal registers again.
  const nf = await term.request('REFRESH', {});
  t.equal(errorCodeOf(nf), ErrorCode.NOT_FOUND);
  await term.expect(t, 'REGISTER_ACK', term.register());
  const q = await term.expect(t, 'QUERY_STATUS_RESULT', term.request('QUERY_STATUS', { ids: [term.locatorId] }));
  t.same(q.body.online, [true], 'served again, no daemon restart');
  // A fresh instance that never saw the session finds it in Redis.
  const b = await locatord(t, keys, redis);
  term.dest = dest(b);
  await term.expect(t, 'REFRESH_ACK', term.request('REFRESH', {}));
});

t.test('--workers 2 serve one port on the shared store', { skip: noRedis }, async (t) => {
  const redis = await startRedis(t);
  const keys = makeKeys();
  const socketPath = path.join(t.testdir(), 'control.sock');
  const a = await locatord(t, keys, redis, ['--workers', '2', '--control-socket', socketPath]);
  // A control socket asked for is not served with --workers: a warning says so.
  const warned = await a.waitFor((l) => l['msg'] === 'control socket not served');
  t.equal(warned['path'], socketPath, 'the warning names the socket');
  const terms = await Promise.all(Array.from({ length: 8 }, () => Terminal.open(t, keys, dest(a))));
  for (const x of terms) await x.expect(t, 'REGISTER_ACK', x.register());
  const q = await terms[0]!.expect(t, 'QUERY_STATUS_RESULT', terms[0]!.request('QUERY_STATUS', { ids: terms.map((x) => x.locatorId) }));
  t.same(q.body.online, terms.map(() => true));
  await a.waitFor((l) => l['msg'] === 'workers started');
});

t.test('--workers 2 --metrics-listen: the primary alone binds the port and serves every worker', { skip: noRedis }, async (t) => {
  const redis = await startRedis(t);
  const keys = makeKeys();
  const a = await locatord(t, keys, redis, ['--workers', '2', '--metrics-listen', '127.0.0.1:0']);
  const endpoint = await a.waitFor((l) => l['msg'] === 'metrics endpoint');
  const listen = String(endpoint['listen']);
  const term = await Terminal.open(t, keys, dest(a));
  await term.expect(t, 'REGISTER_ACK', term.register());
  // Until both workers have started they may be missing from a scrape: wait for both labels.
  let text = '';
  for (let i = 0; i < 600 && !(/worker="0"/.test(text) && /worker="1"/.test(text)); i++) {
    text = await scrapeMetrics(listen);
    if (!(/worker="0"/.test(text) && /worker="1"/.test(text))) await new Promise((r) => setTimeout(r, 100));
  }
  t.match(text, /worker="0"/, 'worker 0 series');
  t.match(text, /worker="1"/, 'worker 1 series');
  // One HELP per family although three processes rendered it.
  const helps = text.split('\n').filter((l) => l.startsWith('# HELP devloc_requests_total '));
  t.equal(helps.length, 1, 'one HELP line per family');
  // The REGISTER was answered by one of the workers and is counted under its label.
  const served = [...text.matchAll(/^devloc_requests_total\{[^}]*worker="\d"[^}]*\} (\d+)/gm)].reduce((s, m) => s + Number(m[1]), 0);
  t.ok(served >= 1, `the workers' requests are in the scrape (${served})`);
  t.notOk(a.lines.some((l) => l['msg'] === 'worker exited, starting another'), 'no worker died fighting over the port');
});
