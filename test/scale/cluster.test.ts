// The Redis store on a real 3-master Redis Cluster started here (fixtures/redis-cluster.ts; the
// failover with replicas is in failover.test.ts):
// keys land on the node of their hash-tag slot, no command crosses slots, the compare-and-set
// script runs on every node (NOSCRIPT, then EVAL), ASK and MOVED are followed while a slot
// migrates, and two devloc-locatord processes given `redis+cluster://` serve one table (register
// through one, query through the other, groups, a relayed introduction), also across a slot
// migration they were not told about.
import { codeKeyOf } from '../../src/wire/groupcode.js';
import t from 'tap';
import { daemonAddress, redisLocatord } from './fixtures/locatord.js';
import type { Test } from 'tap';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { RedisStore } from '../../src/locatord/store/redis.js';
import type { Cluster } from 'ioredis';
import { keySlot, parseRedisUrl } from '../../src/locatord/store/redis-client.js';
import type { Presence } from '../../src/locatord/store/types.js';
import type { MessageOf } from '../../src/wire/envelope.js';
import type { RunningDaemon } from '../helpers/daemon.js';
import type { TestKeys } from '../locatord/fixtures/helpers.js';
import { makeKeys, pushClient, Terminal } from '../locatord/fixtures/helpers.js';
import type { TestCluster } from './fixtures/redis-cluster.js';
import { startCluster } from './fixtures/redis-cluster.js';
import { hasRedis } from './fixtures/redis-server.js';
import { needs } from '../ops/tools.js';

/** The suite starts its own redis-server (and redis-cli for the Cluster): skipped, saying so, without them. */
const noRedis = needs('redis-server and redis-cli', hasRedis()).skip; // required in CI


const limits = { maxMembers: 8, maxGroupsPerTerminal: 4 };

const presence = (seq: number, port: number): Presence => {
  const now = Date.now();
  return { addr: { ip: '203.0.113.9', port }, netMode: 1, visibility: 0, sidHex: 'ab'.repeat(16), seq, regMs: now, expMs: now + 60_000 };
};

/** A locator ID (hex) whose keys hash to `slot`. */
function idInSlot(slot: number): string {
  for (;;) {
    const id = randomBytes(16).toString('hex');
    if (keySlot(id) === slot) return id;
  }
}

t.test('store on a Cluster: slots, no cross-slot command, ASK and MOVED during a migration', { skip: noRedis }, async (t) => {
  const cluster = await startCluster(t);
  const store = new RedisStore({ ...parseRedisUrl(cluster.url), limits, timeoutMs: 2000, maxPending: 10_000, sessionSealKey: randomBytes(32), instanceId: '0102030405060708' });
  t.teardown(() => store.close());
  t.equal(store.client.cluster, true, 'redis+cluster:// with one seed is Cluster mode');

  // Presence on every node; a query of them all (one GET per key, pipelined per node).
  const ids = Array.from({ length: 60 }, () => randomBytes(16).toString('hex'));
  await Promise.all(ids.map((id, i) => store.putPresence(id, presence(1, 1000 + i))));
  const owners = new Set(await Promise.all(ids.map((id) => cluster.ownerOf(keySlot(id)))));
  t.equal(owners.size, 3, 'the keys are spread over the three masters');
  const got = await store.getPresences(ids);
  t.same(got.map((p) => p?.addr.port), ids.map((_, i) => 1000 + i), 'every record read back');
  // Each key is where its slot says, and Redis agrees on the slot of our hash tags.
  for (const id of ids.slice(0, 6)) {
    const key = store.presenceKey(id);
    t.equal(Number(await cluster.cli(cluster.ports[0]!, 'CLUSTER', 'KEYSLOT', key)), keySlot(key), `slot of ${key}`);
    t.equal(await cluster.cli(await cluster.ownerOf(keySlot(key)), 'EXISTS', key), '1', 'stored on the owner of its slot');
  }
  // Compare-and-set on every node (the script is loaded per node on first use).
  for (const id of ids.slice(0, 12)) {
    t.equal(await store.updatePresence(id, (cur) => ({ result: cur?.seq, put: { ...cur!, seq: 2 } })), 1);
  }
  t.same((await store.getPresences(ids.slice(0, 12))).map((p) => p?.seq), ids.slice(0, 12).map(() => 2));
  // The compare-and-sets of one turn, on a Cluster: each sent alone, even six of one slot (a
  // batch of a slot being migrated would be refused whole), each answered.
  const oneSlot = Array.from({ length: 6 }, () => idInSlot(keySlot(ids[12]!)));
  await Promise.all(oneSlot.map((id, i) => store.putPresence(id, presence(1, 2000 + i))));
  const sentBefore = store.client.batchesSent;
  t.same(await Promise.all(oneSlot.map((id) => store.updatePresence(id, (cur) => ({ result: cur?.seq, put: { ...cur!, seq: 2 } })))), oneSlot.map(() => 1));
  t.equal(store.client.batchesSent, sentBefore, 'no batch on a Cluster');
  // Groups: metadata, members and per-terminal sets live in different slots; every call is one slot.
  const [a, b] = [randomBytes(16), randomBytes(16)];
  const g = await store.groups.create(a, 'crew', codeKeyOf('pw'));
  t.equal(await store.groups.join(g, b, (k) => k.equals(codeKeyOf('pw'))), true);
  t.equal(await store.groups.shareGroup(a, b), true);
  t.same((await store.groups.members(g, 0, 10)).map((x) => x.toString('hex')), [a, b].map((x) => x.toString('hex')));
  t.equal((await store.groups.get(g))?.members, 2);
  const sid = randomBytes(16).toString('hex');
  await store.saveSession({ sidHex: sid, locatorHex: a.toString('hex'), aud: 'locator', exp: Math.floor(Date.now() / 1000) + 60, t2s: randomBytes(32), s2t: randomBytes(32) });
  t.equal((await store.loadSession(sid))?.locatorHex, a.toString('hex'));

  // Migrate the slot of ids[0] to another master.
  const slot = keySlot(ids[0]!);
  const from = await cluster.ownerOf(slot);
  const to = cluster.ports.find((p) => p !== from)!;
  await cluster.beginMigration(slot, to);
  const fresh = idInSlot(slot);
  await store.putPresence(fresh, presence(1, 7000));
  t.not(await cluster.cli(from, 'EXISTS', store.presenceKey(fresh)), '1', 'a new key of a migrating slot: not on the source (ASK, followed)');
  t.equal((await store.getPresence(fresh))?.addr.port, 7000, 'read back through ASK');
  t.equal((await store.getPresence(ids[0]!))?.addr.port, 1000, 'a key not moved yet: still served by the source');
  await cluster.finishMigration(slot, to);
  t.equal(await cluster.ownerOf(slot), to);
  t.equal((await store.getPresence(ids[0]!))?.addr.port, 1000, 'after the move: MOVED, followed');
  t.equal(await store.updatePresence(ids[0]!, (cur) => ({ result: cur?.seq, put: { ...cur!, seq: 3 } })), 2, 'compare-and-set on the new owner (NOSCRIPT there, then EVAL)');
  const nodeOf = (): string | undefined => (store.client.raw as Cluster).slots[slot]?.[0];
  for (let i = 0; i < 100 && nodeOf() !== `127.0.0.1:${to}`; i++) await new Promise((r) => setTimeout(r, 50));
  t.equal(nodeOf(), `127.0.0.1:${to}`, 'slot map updated');
  t.equal((await store.getPresence(fresh))?.addr.port, 7000);
});

const locatord = (t: Test, keys: TestKeys, cluster: TestCluster): Promise<RunningDaemon> => redisLocatord(t, keys, cluster.url, { redisTimeoutMs: 1000 });

const dest = daemonAddress;

t.test('two locatord processes on the Cluster: one table, groups, a relayed introduction, a slot moved under them', { skip: noRedis }, async (t) => {
  const cluster = await startCluster(t);
  const keys = makeKeys();
  const [one, two] = await Promise.all([locatord(t, keys, cluster), locatord(t, keys, cluster)]);
  t.equal(one.listening['cluster'], true);
  const { client: bobClient, next: nextPush } = await pushClient(t);
  const alice = await Terminal.open(t, keys, dest(one));
  const bob = await Terminal.open(t, keys, dest(two), { client: bobClient });
  await alice.expect(t, 'REGISTER_ACK', alice.register({ nickname: 'alice' }));
  // Group IDs are drawn by locatord (issue 15): the group exists before bob's REGISTER joins it.
  const group = (await alice.expect(t, 'GROUP_CREATE_ACK', alice.request('GROUP_CREATE', { name: 'crew' }))).body.groupId;
  await bob.expect(t, 'REGISTER_ACK', bob.register({ visibility: 1, reachable: true, joinGroups: [{ groupId: group }] }));
  // Through the other instance each.
  alice.dest = dest(two);
  const q = await alice.expect(t, 'QUERY_ADDR_RESULT', alice.request('QUERY_ADDR', { ids: [alice.locatorId, bob.locatorId] }));
  t.same(q.body.entries.map((e) => e.online), [true, true], 'both found (bob visible to a fellow member)');
  t.equal(q.body.entries[0]?.nickname, 'alice');
  const m = await alice.expect(t, 'GROUP_MEMBERS_RESULT', alice.request('GROUP_MEMBERS', { groupId: group }));
  t.equal(m.body.total, 2);
  // Alice asks instance one for bob, whose session and flow are on instance two: relayed.
  alice.dest = dest(one);
  const intro = nextPush();
  const ack = await alice.expect(t, 'INTRODUCE_ACK', alice.request('INTRODUCE', { target: bob.locatorId }));
  const push = await intro;
  t.equal(push.msg.name, 'INTRO');
  t.same(push.from, dest(two), 'INTRO came from the instance bob talks to');
  t.ok(bob.session.accept(push), "MACed in bob's session");
  t.same((push.msg as MessageOf<'INTRO'>).body.channelId, ack.body.channelId);

  // Move the slot of alice's presence to another master; the daemons' slot maps are now stale.
  const slot = keySlot(alice.locatorId.toString('hex'));
  const from = await cluster.ownerOf(slot);
  await cluster.finishMigration(slot, cluster.ports.find((p) => p !== from)!);
  bob.dest = dest(one);
  const after = await bob.expect(t, 'QUERY_STATUS_RESULT', bob.request('QUERY_STATUS', { ids: [alice.locatorId] }));
  t.same(after.body.online, [true], 'found after the migration (MOVED followed by the daemon)');
  await alice.expect(t, 'REFRESH_ACK', alice.request('REFRESH', {}));
  alice.dest = dest(two);
  await alice.expect(t, 'REFRESH_ACK', alice.request('REFRESH', {}));
  await alice.expect(t, 'UNREGISTER_ACK', alice.request('UNREGISTER', {}));
  const gone = await bob.expect(t, 'QUERY_STATUS_RESULT', bob.request('QUERY_STATUS', { ids: [alice.locatorId] }));
  t.same(gone.body.online, [false]);
});
