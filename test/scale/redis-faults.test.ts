// devloc-locatord on a standalone Redis that fails (issue 14, devloc-locatord(8) "Redis
// failures"): a Redis that stops answering without closing the connection (SIGSTOP) is detected,
// requests get TRY_LATER meanwhile and are served again after SIGCONT; a Redis restart (with
// appendonly, so what was acknowledged is kept) likewise; rediss:// against a TLS-only
// redis-server with a self-signed certificate (--redis-tls-ca); an ACL user with a password,
// restricted to the deployment's keys and channels, and a wrong password refused.
import t from 'tap';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { RedisStore } from '../../src/locatord/store/redis.js';
import { parseRedisUrl, RedisUnavailable } from '../../src/locatord/store/redis-client.js';
import type { Reply } from '../../src/net/client.js';
import { ErrorCode } from '../../src/wire/errors.js';
import { errorCodeOf, makeKeys, Terminal } from '../locatord/fixtures/helpers.js';
import { daemonAddress, redisLocatord } from './fixtures/locatord.js';
import { hasRedis, startRedis } from './fixtures/redis-server.js';
import { hasOpenssl, startTlsRedis } from './fixtures/redis-tls.js';

const run = promisify(execFile);
const noRedis = hasRedis() ? false : 'redis-server / redis-cli not on the PATH';
const limits = { maxMembers: 8, maxGroupsPerTerminal: 4 };

// --redis-timeout-ms: long enough that a Redis slowed by a loaded machine is not taken for a hung
// one (300 ms was, elsewhere: a TRY_LATER where a test expected an answer), short enough that
// the SIGSTOP test's TRY_LATER comes well inside the terminal's 10 s deadline.
const REDIS_TIMEOUT_MS = 1500;

/** Polls `get` every 20 ms until it gives something; rejects after `ms`. */
function until<T>(get: () => T | undefined | Promise<T | undefined>, ms: number): Promise<T> {
  const deadline = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const check = async (): Promise<void> => {
      const v = await get();
      if (v !== undefined) return resolve(v);
      if (Date.now() > deadline) return reject(new Error(`nothing within ${ms} ms`));
      setTimeout(() => void check(), 20);
    };
    void check();
  });
}

/** REFRESH until one answer passes `pred` (each REFRESH waits for its answer). */
const refreshUntil = (term: Terminal, pred: (r: Reply) => boolean, ms = 30_000): Promise<Reply> =>
  until(async () => {
    const r = await term.request('REFRESH', {});
    return pred(r) ? r : undefined;
  }, ms);

t.test('a hung Redis (SIGSTOP) is detected: TRY_LATER, then served again after SIGCONT', { skip: noRedis }, async (t) => {
  const redis = await startRedis(t);
  const keys = makeKeys();
  const d = await redisLocatord(t, keys, redis.url, { redisTimeoutMs: REDIS_TIMEOUT_MS });
  const term = await Terminal.open(t, keys, daemonAddress(d));
  await term.expect(t, 'REGISTER_ACK', term.register({}));
  redis.proc.kill('SIGSTOP');
  t.teardown(() => { redis.proc.kill('SIGCONT'); });
  const stalled = await term.request('REFRESH', {});
  t.equal(errorCodeOf(stalled), ErrorCode.TRY_LATER, 'no reply from Redis: TRY_LATER');
  // The connection that stopped answering is closed (not left waiting), and said so.
  await d.waitFor((l) => l['msg'] === 'redis connection lost');
  t.equal(errorCodeOf(await term.request('REFRESH', {})), ErrorCode.TRY_LATER, 'still hung: TRY_LATER at once');
  redis.proc.kill('SIGCONT');
  await refreshUntil(term, (r) => r.msg.name === 'REFRESH_ACK');
  await d.waitFor((l) => l['msg'] === 'redis connection restored');
  const q = await term.expect(t, 'QUERY_STATUS_RESULT', term.request('QUERY_STATUS', { ids: [term.locatorId] }));
  t.same(q.body.online, [true], 'registration intact');
});

t.test('a Redis restart: TRY_LATER while down, then served; with appendonly the registration is kept', { skip: noRedis }, async (t) => {
  const redis = await startRedis(t, ['--appendonly', 'yes', '--appendfsync', 'always']);
  const keys = makeKeys();
  const d = await redisLocatord(t, keys, redis.url, { redisTimeoutMs: REDIS_TIMEOUT_MS });
  const term = await Terminal.open(t, keys, daemonAddress(d));
  await term.expect(t, 'REGISTER_ACK', term.register({ nickname: 'kept' }));
  await redis.stop();
  t.equal(errorCodeOf(await term.request('REFRESH', {})), ErrorCode.TRY_LATER, 'Redis down: TRY_LATER');
  await d.waitFor((l) => l['msg'] === 'redis connection lost');
  await redis.start();
  await refreshUntil(term, (r) => r.msg.name === 'REFRESH_ACK');
  const q = await term.expect(t, 'QUERY_ADDR_RESULT', term.request('QUERY_ADDR', { ids: [term.locatorId] }));
  t.equal(q.body.entries[0]?.nickname, 'kept', 'acknowledged registration kept across the restart');
});

t.test('rediss:// to a TLS-only Redis with a self-signed certificate', { skip: noRedis || (hasOpenssl() ? false : 'openssl not on the PATH') }, async (t) => {
  const redis = await startTlsRedis(t);
  const url = parseRedisUrl(redis.url);
  t.equal(url.tls, true);
  const untrusted = new RedisStore({ ...url, limits, timeoutMs: 500, sessionSealKey: randomBytes(32) });
  t.teardown(() => untrusted.close());
  await t.rejects(untrusted.getPresence('ab'), RedisUnavailable, 'certificate not trusted: unavailable');
  const store = new RedisStore({ ...url, tlsCa: redis.ca, limits, timeoutMs: 1000, sessionSealKey: randomBytes(32) });
  t.teardown(() => store.close());
  const now = Date.now();
  await store.putPresence('ab', { addr: { ip: '192.0.2.1', port: 9 }, netMode: 0, visibility: 0, sidHex: 'cd', seq: 1, regMs: now, expMs: now + 60_000 });
  t.equal((await store.getPresence('ab'))?.addr.port, 9, 'stored and read over TLS');
  // The daemon, with --redis-tls-ca: register and query through it.
  const keys = makeKeys();
  const d = await redisLocatord(t, keys, redis.url, { redisTimeoutMs: 1000, extra: ['--redis-tls-ca', redis.caFile] });
  const term = await Terminal.open(t, keys, daemonAddress(d));
  await term.expect(t, 'REGISTER_ACK', term.register({}));
  const q = await term.expect(t, 'QUERY_STATUS_RESULT', term.request('QUERY_STATUS', { ids: [term.locatorId] }));
  t.same(q.body.online, [true], 'locatord over rediss://');
});

t.test('an ACL user with a password, limited to the deployment\'s keys and channels', { skip: noRedis }, async (t) => {
  const redis = await startRedis(t);
  const cli = (...args: string[]): Promise<string> => run('redis-cli', ['-h', '127.0.0.1', '-p', String(redis.port), ...args]).then((r) => r.stdout.trim());
  t.equal(await cli('ACL', 'SETUSER', 'devloc', 'on', '>s3cret pass', 'resetkeys', '~dl:*', 'resetchannels', '&dl:*', '+@all', '-@dangerous', '+info'), 'OK');
  t.equal(await cli('ACL', 'SETUSER', 'default', 'off'), 'OK', 'no anonymous access');
  const base = `redis://devloc:${encodeURIComponent('s3cret pass')}@127.0.0.1:${redis.port}/0`;
  const store = new RedisStore({ ...parseRedisUrl(base), limits, timeoutMs: 1000, sessionSealKey: randomBytes(32) });
  t.teardown(() => store.close());
  const now = Date.now();
  await store.putPresence('ef', { addr: { ip: '192.0.2.2', port: 10 }, netMode: 0, visibility: 0, sidHex: 'cd', seq: 1, regMs: now, expMs: now + 60_000 });
  t.equal((await store.getPresence('ef'))?.addr.port, 10, 'authenticated as the ACL user');
  const wrong = new RedisStore({ ...parseRedisUrl(base.replace('s3cret', 'wrong')), limits, timeoutMs: 500, sessionSealKey: randomBytes(32) });
  t.teardown(() => wrong.close());
  await t.rejects(wrong.getPresence('ef'), RedisUnavailable, 'wrong password: unavailable');
  // The daemon as the ACL user (its relay subscription is on a dl: channel, allowed by &dl:*).
  const keys = makeKeys();
  const d = await redisLocatord(t, keys, base, { redisTimeoutMs: 1000 });
  const term = await Terminal.open(t, keys, daemonAddress(d));
  await term.expect(t, 'REGISTER_ACK', term.register({}));
  const q = await term.expect(t, 'QUERY_STATUS_RESULT', term.request('QUERY_STATUS', { ids: [term.locatorId] }));
  t.same(q.body.online, [true], 'locatord as the ACL user');
  t.match(await cli('--user', 'devloc', '--pass', 's3cret pass', '--no-auth-warning', 'PUBSUB', 'CHANNELS', 'dl:relay:*'), `dl:relay:${d.listening['instance'] as string}`, 'its relay channel subscribed');
});
