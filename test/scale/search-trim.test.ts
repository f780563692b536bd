// The partner-search index in Redis (RedisSearch, src/locatord/store/redis.ts) against a real
// redis-server: trimming expired entries (the trim of index() and the sweep's trim()) must not
// take out an entry that a re-registration renewed between the listing of the expired entries
// and their removal. The re-registration is run deterministically in that window: a client
// wrapper runs it when the listing step answers (the old two-step code listed with
// ZRANGEBYSCORE and removed with ZREM after it; one script leaves no window).
import t from 'tap';
import type { Test } from 'tap';
import type { Presence } from '../../src/locatord/store/types.js';
import { RedisSearch } from '../../src/locatord/store/redis.js';
import { RedisClient } from '../../src/locatord/store/redis-client.js';
import { parseRedisUrl } from '../../src/locatord/store/redis-url.js';
import { needs } from '../ops/tools.js';
import { startCluster } from './fixtures/redis-cluster.js';
import { hasRedis, startRedis } from './fixtures/redis-server.js';

const noRedis = needs('redis-server and redis-cli', hasRedis()).skip; // required in CI

const ID = 'aa'.repeat(16);
const OTHER = 'bb'.repeat(16);

const looking = (expMs: number): Presence => ({
  addr: { ip: '198.51.100.7', port: 4000 }, netMode: 0, visibility: 0, sidHex: '00'.repeat(8), seq: 1, regMs: 0, expMs,
  extra: { mediaId: 'chess', presence: { lookingForPartner: true } },
});

/**
 * `search` at time 2000 over a client that, when the step listing expired entries answers (a
 * ZRANGEBYSCORE, or a script), first lets ID re-register (expiry 10,000) through `plain`.
 */
async function setup(t: Test): Promise<{ search: RedisSearch; plain: RedisSearch; fired: () => boolean }> {
  const redis = await startRedis(t);
  const client = new RedisClient({ nodes: [{ host: '127.0.0.1', port: redis.port }], timeoutMs: 30_000 });
  t.teardown(() => client.close());
  const plain = new RedisSearch(client, 'dl:', () => 0);
  // ID registered, its record expiring at 1000: expired for `search`, whose clock reads 2000.
  await plain.index(ID, undefined, looking(1000));
  let fired = false;
  const reRegister = async (): Promise<void> => {
    if (fired) return;
    fired = true;
    await plain.index(ID, looking(1000), looking(10_000));
  };
  const hooked = new Proxy(client, {
    get(target, prop, receiver) {
      if (prop === 'call') {
        return async (args: readonly unknown[], key?: string) => {
          const r = await target.call(args as Parameters<RedisClient['call']>[0], key);
          if (args[0] === 'ZRANGEBYSCORE') await reRegister();
          return r;
        };
      }
      if (prop === 'eval') {
        return async (...a: Parameters<RedisClient['eval']>) => {
          const r = await target.eval(...a);
          await reRegister();
          return r;
        };
      }
      return Reflect.get(target, prop, receiver) as unknown;
    },
  });
  return { search: new RedisSearch(hooked, 'dl:', () => 2000), plain, fired: () => fired };
}

t.test("the sweep's trim does not take out an entry renewed while it trims", { skip: noRedis }, async (t) => {
  const { search, fired } = await setup(t);
  await search.trim(16, 32);
  t.ok(fired(), 'the re-registration ran between listing and removal');
  t.same(await search.page('chess', '', 10), [ID], 'the renewed entry is still found');
});

t.test("index()'s trim does not take out an entry renewed while it trims", { skip: noRedis }, async (t) => {
  const { search, fired } = await setup(t);
  await search.index(OTHER, undefined, looking(5000));
  t.ok(fired(), 'the re-registration ran between listing and removal');
  t.same(await search.page('chess', '', 10), [ID, OTHER], 'the renewed entry is still found, beside the new one');
});

t.test('on a Cluster: the trim script runs with both keys of a media ID on their one node', { skip: noRedis }, async (t) => {
  const cluster = await startCluster(t);
  const client = new RedisClient({ ...parseRedisUrl(cluster.url), timeoutMs: 30_000 });
  t.teardown(() => client.close());
  let now = 0;
  const search = new RedisSearch(client, 'dl:', () => now);
  const media = Array.from({ length: 12 }, (_, i) => `game ${i}`);
  const entry = (mediaId: string, expMs: number): Presence => ({ ...looking(expMs), extra: { mediaId, presence: { lookingForPartner: true } } });
  await Promise.all(media.map((m) => search.index(ID, undefined, entry(m, 1000))));
  now = 2000;
  // Each index() trims its media ID's index: OTHER stays, ID (expired) goes.
  await Promise.all(media.map((m) => search.index(OTHER, undefined, entry(m, 5000))));
  t.same(await Promise.all(media.map((m) => search.page(m, '', 10))), media.map(() => [OTHER]), 'expired entries trimmed on every node');
  now = 6000;
  let removed = 0;
  for (let i = 0; i < 20; i++) removed += await search.trim(16, 32);
  t.equal(removed, media.length, "the sweep's trim removed the rest");
  t.same(await Promise.all(media.map((m) => search.page(m, '', 10))), media.map(() => []), 'every index empty');
});
