// The library API of peer channels, with real devloc-authd and devloc-locatord processes on
// 127.0.0.1 and two in-process Agents (what `devloc demo` does): agent.connect(name) -> Channel,
// the 'channel' event on the reachable side, messages both ways, ping, close; and a terminal
// that did not opt in to introductions is not reachable.
import t from 'tap';
import type { Test } from 'tap';
import { Agent } from '../../src/agent/agent.js';
import type { Channel } from '../../src/agent/channel.js';
import { loadAuthdKey, loadDeviceIdentity } from '../../src/agent/identity.js';
import { parseAddress } from '../../src/wire/addr.js';
import type { Stack } from '../agent/stack.js';
import { eventually, stack } from '../agent/stack.js';

async function agent(t: Test, s: Stack, name: string, reachable: boolean): Promise<Agent> {
  const d = s.device(name);
  const identity = loadDeviceIdentity(d.identityPath);
  const authdKey = loadAuthdKey(s.authdPubFile);
  if (!identity.ok || !authdKey.ok) throw new Error('test keys');
  const a = new Agent({
    identity: identity.value, authd: parseAddress(s.authdAddr)!, authdKey: authdKey.value, bind: { host: '127.0.0.1', port: 0 },
    reflector: parseAddress(`127.0.0.1:${s.ports.reflector}`)!, nickname: name, retransmitMs: 200, backoffMinMs: 100, backoffMaxMs: 1000, reachable,
  });
  await a.start();
  t.teardown(() => a.stop());
  await eventually(async () => a.isRegistered && a.status().netModeReason !== null, 20_000, `${name} registered`);
  return a;
}

t.test('agent.connect: a channel to a reachable peer, messages both ways', async (t) => {
  const s = await stack(t);
  const [alice, bob, carol] = await Promise.all([agent(t, s, 'alice', false), agent(t, s, 'bob', true), agent(t, s, 'carol', false)]);
  const incoming = new Promise<Channel>((resolve) => bob.once('channel', resolve));
  const ch = await alice.connect(bob.locatorIdHex!);
  t.equal(ch.state, 'open');
  t.equal(ch.role, 'initiator');
  t.equal(ch.path?.addr, `127.0.0.1:${bob.localPort}`, "the path is bob's socket");
  const atBob = await incoming;
  t.equal(atBob.id.toString('hex'), ch.id.toString('hex'), 'bob got the same channel');
  t.equal(atBob.nickname, 'alice', "with alice's registered nickname");
  await atBob.waitOpen();
  const fromAlice = new Promise<string>((r) => atBob.once('message', (m) => r(m.toString())));
  ch.send('hello bob');
  t.equal(await fromAlice, 'hello bob');
  const fromBob = new Promise<string>((r) => ch.once('message', (m) => r(m.toString())));
  atBob.send(Buffer.from('hello alice'));
  t.equal(await fromBob, 'hello alice');
  const rtt = await ch.ping();
  t.ok(rtt !== null, `ping ${rtt} ms`);
  t.throws(() => ch.send(Buffer.alloc(1025)), { code: 'TOO_LARGE' });
  t.equal((await alice.connect(bob.locatorIdHex!)).idHex, ch.idHex, 'connect again reuses the open channel');
  const st = alice.status();
  t.equal(st.channels[0]?.state, 'open', 'status lists it');
  const closed = new Promise<string>((r) => atBob.once('close', r));
  ch.close();
  t.equal(await closed, 'peer closed the channel');
  t.equal(alice.status().channels[0]?.state, 'closed');

  // carol did not opt in: nobody is introduced to her, and the answer is the offline one.
  const err = await alice.connect(carol.locatorIdHex!).then(() => null, (e: Error & { code?: string }) => e);
  t.equal(err?.code, 'PEER_UNAVAILABLE');
  t.match(err?.message, /offline, unknown, not visible to you or not accepting introductions/);
  t.same(carol.status().channels, [], 'carol heard nothing');
  // The other way round works: alice is not reachable, but she may connect, and carol too.
  const c2 = await carol.connect(bob.locatorIdHex!);
  t.equal(c2.state, 'open');
  c2.close();
});
