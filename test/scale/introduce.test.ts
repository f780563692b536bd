// INTRODUCE with --store redis (store/handlers.ts introduceHere) against a real redis-server:
// two terminals registered with `reachable` through one instance are introduced (INTRODUCE_ACK
// to the asker, INTRO pushed to the peer over its session, both open the same channel key, the
// push ends on INTRO_ACK); a peer whose session lives on another instance, or that is not
// reachable, gets NOT_FOUND (devloc-locatord(8), SEVERAL INSTANCES).
import t from 'tap';
import type { Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startDaemon } from '../helpers/daemon.js';
import type { RunningDaemon } from '../helpers/daemon.js';
import type { Reply } from '../../src/net/client.js';
import { UdpClient } from '../../src/net/client.js';
import type { Address } from '../../src/wire/addr.js';
import type { MessageOf } from '../../src/wire/envelope.js';
import { ErrorCode } from '../../src/wire/errors.js';
import { openChannelKey } from '../../src/wire/peer.js';
import type { TestKeys } from '../locatord/fixtures/helpers.js';
import { errorCodeOf, makeKeys, Terminal, writeKeyFiles } from '../locatord/fixtures/helpers.js';
import type { TestRedis } from './fixtures/redis-server.js';
import { startRedis } from './fixtures/redis-server.js';

async function locatord(t: Test, keys: TestKeys, redis: TestRedis): Promise<RunningDaemon> {
  const dir = mkdtempSync(path.join(tmpdir(), 'locatord-scale-intro-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const files = writeKeyFiles(dir, keys);
  const d = await startDaemon('locatord/main.ts', [
    '--listen', '127.0.0.1', '--port', '0', '--reflector-port', '-1', '--state-dir', dir,
    '--service-key', files.serviceKey, '--trust', files.trust, '--rate', '0', '--query-rate', '0', '--query-source-rate', '0',
    '--store', 'redis', '--redis-url', redis.url,
  ]);
  t.teardown(() => d.stop());
  return d;
}

const dest = (d: RunningDaemon): Address => ({ ip: '127.0.0.1', port: d.listening['port'] as number });

/** A terminal whose socket collects server pushes. */
async function terminal(t: Test, keys: TestKeys, to: Address): Promise<{ term: Terminal; next: () => Promise<Reply> }> {
  const pushes: Reply[] = [];
  const waiting: ((r: Reply) => void)[] = [];
  const client = await UdpClient.open({
    bind: { host: '127.0.0.1', port: 0 }, policy: { initialTimeoutMs: 300 },
    onPush: (r) => {
      pushes.push(r);
      waiting.shift()?.(r);
    },
  });
  t.teardown(() => client.close());
  const term = await Terminal.open(t, keys, to, { client });
  const next = (): Promise<Reply> => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no push')), 5000);
    waiting.push((r) => {
      clearTimeout(timer);
      resolve(r);
    });
  });
  return { term, next };
}

t.test('redis mode: two reachable terminals on one instance are introduced; other instance or not reachable: NOT_FOUND', async (t) => {
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

  const intro = b.next();
  const ack = await a.term.expect(t, 'INTRODUCE_ACK', a.term.request('INTRODUCE', { target: b.term.locatorId }));
  const push = await intro;
  t.equal(push.msg.name, 'INTRO', 'the target got INTRO');
  t.ok(b.term.session.accept(push), "INTRO is MACed in the target's session");
  const toB = (push.msg as MessageOf<'INTRO'>).body;
  const toA = ack.body;
  t.same(toA.channelId, toB.channelId, 'one channel');
  t.same(toA.peer, b.term.locatorId);
  t.same(toA.addr, b.term.address, "asker gets the target's address as stored in Redis");
  t.same(toA.localAddrs, [{ ip: '10.2.0.2', port: 4000 }]);
  t.equal(toA.netMode, 2);
  t.equal(toA.nickname, 'bob');
  t.same(toB.peer, a.term.locatorId);
  t.same(toB.addr, a.term.address);
  t.equal(toB.netMode, 4, "the asker's registered network mode");
  t.equal(toB.nickname, 'alice');
  const keyA = openChannelKey(a.term.session.keys, toA.channelId, toA.peer, toA.sealedKey);
  const keyB = openChannelKey(b.term.session.keys, toB.channelId, toB.peer, toB.sealedKey);
  t.ok(keyA && keyB && keyA.equals(keyB), 'both open the same channel key');
  b.term.client.send(dest(one), b.term.session.encode('INTRO_ACK', push.msg.rid, { channelId: toB.channelId }));

  const elsewhere = await a.term.request('INTRODUCE', { target: c.term.locatorId });
  t.equal(errorCodeOf(elsewhere), ErrorCode.NOT_FOUND, "peer's session on another instance: NOT_FOUND");
  const closed = await a.term.request('INTRODUCE', { target: d.term.locatorId });
  t.equal(errorCodeOf(closed), ErrorCode.NOT_FOUND, 'not reachable: NOT_FOUND');
  const self = await a.term.request('INTRODUCE', { target: a.term.locatorId });
  t.equal(errorCodeOf(self), ErrorCode.BAD_MESSAGE);
});
