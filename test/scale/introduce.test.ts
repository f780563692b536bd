// INTRODUCE across locatord instances sharing a real redis-server (handlers/introduce.ts; the
// introduction on one instance is tested on both stores in test/punch/introduce.test.ts): a
// peer that last spoke to another instance is introduced through that instance
// (store/relay.ts: the INTRO leaves from where the peer's NAT mapping points);
// a peer not reachable, or whose instance is gone, gets NOT_FOUND; forged relay requests are
// refused (devloc-locatord(8), SEVERAL INSTANCES).
import t from 'tap';
import { daemonAddress, redisLocatord } from './fixtures/locatord.js';
import type { Test } from 'tap';
import path from 'node:path';
import type { RunningDaemon } from '../helpers/daemon.js';
import type { Reply } from '../../src/net/client.js';
import type { Address } from '../../src/wire/addr.js';
import type { MessageOf } from '../../src/wire/envelope.js';
import { ErrorCode } from '../../src/wire/errors.js';
import { openChannelKey } from '../../src/wire/peer.js';
import type { TestKeys } from '../locatord/fixtures/helpers.js';
import { errorCodeOf, makeKeys, pushClient, Terminal } from '../locatord/fixtures/helpers.js';
import type { TestRedis } from './fixtures/redis-server.js';
import { hasRedis } from './fixtures/redis-server.js';
import { needs } from '../ops/tools.js';
import { startRedis } from './fixtures/redis-server.js';
import { RedisClient } from '../../src/locatord/store/redis-client.js';

/** The suite starts its own redis-server (and redis-cli for the Cluster): skipped, saying so, without them. */
const noRedis = needs('redis-server and redis-cli', hasRedis()).skip; // required in CI

const locatord = (t: Test, keys: TestKeys, redis: TestRedis): Promise<RunningDaemon> => redisLocatord(t, keys, redis.url, { redisTimeoutMs: 3000 });

const dest = daemonAddress;

/** A terminal whose socket collects server pushes. */
async function terminal(t: Test, keys: TestKeys, to: Address): Promise<{ term: Terminal; next: () => Promise<Reply> }> {
  const { client, next } = await pushClient(t);
  const term = await Terminal.open(t, keys, to, { client });
  return { term, next };
}

t.test('redis mode: introductions relayed across instances; not reachable or instance gone: NOT_FOUND', { skip: noRedis }, async (t) => {
  const redis = await startRedis(t);
  const keys = makeKeys();
  const [one, two] = await Promise.all([locatord(t, keys, redis), locatord(t, keys, redis)]);
  const a = await terminal(t, keys, dest(one));
  const b = await terminal(t, keys, dest(one));
  const c = await terminal(t, keys, dest(two));
  const d = await terminal(t, keys, dest(one));
  await a.term.expect(t, 'REGISTER_ACK', a.term.register({ netMode: 4, nickname: 'alice', reachable: true }));
  await b.term.expect(t, 'REGISTER_ACK', b.term.register({ netMode: 2, nickname: 'bob', reachable: true, localAddrs: [{ ip: '10.2.0.2', port: 4000 }] }));
  await c.term.expect(t, 'REGISTER_ACK', c.term.register({ reachable: true }));
  await d.term.expect(t, 'REGISTER_ACK', d.term.register({}));

  // c registered through instance two: instance one relays the INTRO to it.
  const introC = c.next();
  const ackC = await a.term.expect(t, 'INTRODUCE_ACK', a.term.request('INTRODUCE', { target: c.term.locatorId }));
  const pushC = await introC;
  t.equal(pushC.msg.name, 'INTRO', 'relayed: the target got INTRO');
  t.same(pushC.from, dest(two), 'from the instance the target talks to');
  t.ok(c.term.session.accept(pushC), "MACed in the target's session by its instance");
  const toC = (pushC.msg as MessageOf<'INTRO'>).body;
  t.same(toC.channelId, ackC.body.channelId);
  t.same(toC.peer, a.term.locatorId);
  t.same(toC.addr, a.term.address);
  t.same(ackC.body.addr, c.term.address);
  const kA = openChannelKey(a.term.session.keys, ackC.body.channelId, ackC.body.peer, ackC.body.sealedKey);
  const kC = openChannelKey(c.term.session.keys, toC.channelId, toC.peer, toC.sealedKey);
  t.ok(kA && kC && kA.equals(kC), 'both open the same channel key (sealed by instance one)');
  c.term.client.send(dest(two), c.term.session.encode('INTRO_ACK', pushC.msg.rid, { channelId: toC.channelId }));
  // And the other way round: b (instance one) introduced to c's request on instance two.
  const introB = b.next();
  await c.term.expect(t, 'INTRODUCE_ACK', c.term.request('INTRODUCE', { target: b.term.locatorId }));
  t.same((await introB).from, dest(one), 'relayed to instance one');

  // A forged relay request (not MACed with the deployment's key) is refused and logged.
  const inst = one.listening['instance'] as string;
  const raw = new RedisClient({ nodes: [{ host: '127.0.0.1', port: redis.port }] });
  t.teardown(() => raw.close());
  t.equal(await raw.publish(`dl:relay:${inst}`, Buffer.alloc(80, 1)), 1, 'delivered to instance one');
  await one.waitFor((l) => l['event'] === 'relay-refused' && l['reason'] === 'bad tag');

  const closed = await a.term.request('INTRODUCE', { target: d.term.locatorId });
  t.equal(errorCodeOf(closed), ErrorCode.NOT_FOUND, 'not reachable: NOT_FOUND');
  const self = await a.term.request('INTRODUCE', { target: a.term.locatorId });
  t.equal(errorCodeOf(self), ErrorCode.BAD_MESSAGE);

  // Instance two stops: c's record still names it, nobody answers the relay: NOT_FOUND.
  await two.stop();
  const orphan = await a.term.request('INTRODUCE', { target: c.term.locatorId });
  t.equal(errorCodeOf(orphan), ErrorCode.NOT_FOUND, "target's instance gone: NOT_FOUND");
});
