// Batched scripts (redis-client.ts BatchedScript, RedisClient.evalBatched): the calls of one
// event-loop turn go to Redis as one script, each settling with its own reply or error; and
// through the Redis store, one turn's REFRESHes are one script, each decided on its own.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { DeferredClaim } from '../../src/net/sessions.js';
import type { SharedReplayWindow } from '../../src/net/sessions.js';
import { RedisStore } from '../../src/locatord/store/redis.js';
import { BATCH_MAX_CALLS, BatchedScript, parseRedisUrl, RedisClient, RedisReplyError } from '../../src/locatord/store/redis-client.js';
import type { RedisReply } from '../../src/locatord/store/redis-client.js';
import type { Presence, PresenceChange } from '../../src/locatord/store/types.js';
import { hasRedis, startRedis } from './fixtures/redis-server.js';
import { needs } from '../ops/tools.js';

const noRedis = needs('redis-server and redis-cli', hasRedis()).skip; // required in CI

/** Calls of each command Redis counted since the last CONFIG RESETSTAT. */
async function commandCalls(c: RedisClient): Promise<Record<string, number>> {
  const info = String(await c.call(['INFO', 'commandstats']));
  return Object.fromEntries([...info.matchAll(/cmdstat_(\w+):calls=(\d+)/g)].map((m) => [m[1]!, Number(m[2])]));
}

// Adds ARGV[1] to the number at KEYS[1] and answers the sum; a key holding text makes INCRBY raise.
const ADD = new BatchedScript("return redis.call('INCRBY', KEYS[1], ARGV[1])", 1, 1);
// Answers its argument as given: a bulk string, and in `many` one element of the array.
const ECHO = new BatchedScript('return ARGV[1]', 1, 1);
// Answers nil when its argument is "nil" (a Lua array cannot carry nil).
const MAYBE = new BatchedScript("if ARGV[1] == 'nil' then return nil end return 1", 1, 1);

t.test('evalBatched: one turn, one script; each call its own reply or error; alone, the script as written', { skip: noRedis }, async (t) => {
  const redis = await startRedis(t);
  const c = new RedisClient({ ...parseRedisUrl(redis.url), timeoutMs: 2000 });
  t.teardown(() => c.close());
  await c.ready();
  await c.call(['SET', 'text', 'not a number']);
  await c.call(['CONFIG', 'RESETSTAT']);

  // Five calls in one turn, one of them on a key whose INCRBY fails.
  const settled = await Promise.all([
    c.evalBatched(ADD, ['n1'], [5]), c.evalBatched(ADD, ['n1'], [7]), c.evalBatched(ADD, ['text'], [1]),
    c.evalBatched(ADD, ['n2'], [-3]), c.evalBatched(ECHO, ['x'], [Buffer.from([0, 255, 10])]),
  ].map((p) => p.then((v) => v, (e: Error) => e)));
  t.same(settled.slice(0, 2), [5, 12], 'in the order issued, each its own reply');
  t.ok(settled[2] instanceof RedisReplyError && /not an integer/.test((settled[2] as Error).message), `the failing call alone rejected: ${String(settled[2])}`);
  t.equal(settled[3], -3, 'the call after the failing one ran');
  t.same(settled[4], Buffer.from([0, 255, 10]), 'a call alone in its script: the script as written, bytes as given');
  // NOSCRIPT on the first use: EVAL of each, once; then the sha.
  let calls = await commandCalls(c);
  t.same([calls['evalsha'], calls['eval']], [2, 2], 'two scripts (ADD x 4 in one, ECHO alone), each tried by its sha and then sent whole');
  await c.call(['CONFIG', 'RESETSTAT']);
  t.same(await Promise.all([1, 2, 3].map((n) => c.evalBatched(ADD, ['n3'], [n]))), [1, 3, 6]);
  calls = await commandCalls(c);
  t.same([calls['evalsha'], calls['eval'] ?? 0], [1, 0], 'cached: one EVALSHA for the turn');
  t.same([c.batchesSent, c.batchedCalls], [2, 7], 'batches counted, with their calls');

  // Calls of separate turns are separate scripts.
  t.equal(await c.evalBatched(ADD, ['n4'], [1]), 1);
  t.equal(await c.evalBatched(ADD, ['n4'], [1]), 2);
  t.equal(c.batchesSent, 2, 'one call per turn: sent as written, not as a batch');

  // More calls in a turn than one script carries: split, every call answered.
  const many = await Promise.all(Array.from({ length: BATCH_MAX_CALLS * 2 + 1 }, () => c.evalBatched(ADD, ['n5'], [1])));
  t.same(many, Array.from({ length: many.length }, (_, i) => i + 1), 'in order across the split');
  t.equal(c.batchesSent, 4, `${many.length} calls: two full scripts, the last call alone`);

  // A call that answers nil is an error, alone or in a batch: its answer does not depend on the load.
  await t.rejects(c.evalBatched(MAYBE, ['m'], ['nil']), { name: 'RedisReplyError', message: /answered nil/ }, 'alone');
  const mixed = await Promise.all([c.evalBatched(MAYBE, ['m'], ['nil']), c.evalBatched(MAYBE, ['m'], ['x'])].map((p) => p.then((v) => v, (e: Error) => e.message)));
  t.match(mixed, [/answered nil/, 1], 'in a batch: the same error, the other call answered');
  t.throws(() => new BatchedScript('return 1', 0, 0), RangeError, 'a batched script takes at least one key per call');

  await t.rejects(c.evalBatched(ADD, ['a', 'b'], [1]), RedisReplyError, 'a call with the wrong number of keys is refused, nothing sent');
  await t.rejects(c.evalBatched(ADD, ['a'], []), RedisReplyError, 'or arguments');

  // A script counts in the client's bound as the calls it carries: beyond it, the turn's last
  // calls fail at once ("queue full"), the others are sent.
  const small = new RedisClient({ ...parseRedisUrl(redis.url), timeoutMs: 2000, maxPending: 5 });
  t.teardown(() => small.close());
  await small.ready();
  const bounded = await Promise.all(Array.from({ length: 8 }, () => small.evalBatched(ADD, ['n6'], [1]).then((v) => v, (e: Error) => e.message)));
  t.same(bounded.slice(0, 5), [1, 2, 3, 4, 5], 'five sent');
  t.ok(bounded.slice(5).every((m) => typeof m === 'string' && /queue full \(5 pending\)/.test(m)), `three refused: ${bounded.slice(5).join('; ')}`);
  t.equal(small.pending, 0, 'settled');

  // Redis gone: every call of the turn fails the same way (RedisUnavailable: TRY_LATER).
  await redis.stop();
  const down = await Promise.all([c.evalBatched(ADD, ['n1'], [1]), c.evalBatched(ADD, ['n1'], [1])].map((p) => p.then(() => 'ok', (e: Error) => e.name)));
  t.same(down, ['RedisUnavailable', 'RedisUnavailable']);
});

t.test("the store: one turn's REFRESHes (claim + compare-and-set) are one script, each decided on its own", { skip: noRedis }, async (t) => {
  const redis = await startRedis(t);
  const url = parseRedisUrl(redis.url);
  const sealKey = randomBytes(32);
  const a = new RedisStore({ ...url, limits: { maxMembers: 3, maxGroupsPerTerminal: 2 }, timeoutMs: 2000, maxPending: 1000, sessionSealKey: sealKey, presenceCacheEntries: 100 });
  t.teardown(() => { void a.close(); });
  const now = Date.now();
  const window: SharedReplayWindow = { claim: (s, seq, ttl, from) => a.claimSeq(s, seq, ttl, from), release: (s, seq) => a.releaseSeq(s, seq) };
  const terminals = Array.from({ length: 6 }, () => ({ sidHex: randomBytes(16).toString('hex'), locatorHex: randomBytes(16).toString('hex') }));
  for (const o of terminals) {
    await a.putPresence(o.locatorHex, { addr: { ip: '192.0.2.1', port: 4000 }, netMode: 0, visibility: 0, sidHex: o.sidHex, seq: 1, regMs: now, expMs: now + 60_000 });
  }
  const src = '192.0.2.1|4000';
  // Terminal 2's number 5 is already taken (another instance): its REFRESH is refused, the rest write.
  await a.claimSeq(terminals[2]!, 5, 60_000, '192.0.2.7|9');
  const renew = (cur: Presence | undefined): PresenceChange<number> => (cur ? { result: cur.seq + 1, put: { ...cur, seq: cur.seq + 1 } } : { result: -1 });
  const before = a.client.batchesSent;
  const claims = terminals.map((o) => new DeferredClaim(o, 5, 60_000, src, window));
  const results = await Promise.all(terminals.map((o, i) => a.updatePresence(o.locatorHex, renew, undefined, claims[i]).then((v): RedisReply | string => v, (e: Error) => e.name)));
  t.same(results, [2, 2, 'ClaimRefused', 2, 2, 2], 'each REFRESH its own answer');
  t.same(claims.map((c) => c.state), ['taken', 'taken', 'refused', 'taken', 'taken', 'taken']);
  t.equal(claims[2]!.verdict, 'replay');
  t.equal(a.client.batchesSent - before, 1, 'one script for the six');
  const seqs = await Promise.all(terminals.map(async (o) => (await a.getPresence(o.locatorHex))?.seq));
  t.same(seqs, [2, 2, 1, 2, 2, 2], 'written, except the refused one');
  // The numbers are taken: the same REFRESHes again are retransmissions now.
  const again = await Promise.all(terminals.map((o) => a.claimSeq(o, 5, 60_000, src)));
  t.same(again, ['elsewhere', 'elsewhere', 'replay', 'elsewhere', 'elsewhere', 'elsewhere']);
});
