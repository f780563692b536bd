// Agents as reflectors (issue 15, item 1): an enrolled terminal asks locatord to introduce it to
// a real devloc-agent process (reachable, the default) and names victim addresses, first as its
// LAN addresses in the INTRODUCE, then as the sources of valid PUNCHes (it holds the channel
// key). Every byte that reaches a victim is counted until the agent gives up punching (its log
// line), and compared with what the attacker sent: a victim that never answered gets at most
// MAX_UNANSWERED_PUNCHES small datagrams beside the one PUNCH_ACK per PUNCH it "sent", and at
// most MAX_CANDIDATES addresses are punched at all. Before the fix each LAN victim got 49
// PUNCHes (x156) and each PUNCH source was punched until the timeout (x42).
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { encodeDatagram } from '../../src/wire/envelope.js';
import { generatePair, keyFileToJson } from '../../src/wire/keys.js';
import { derivePunchKeys, openChannelKey } from '../../src/wire/peer.js';
import { sealDatagram } from '../../src/wire/session.js';
import { FAST_AGENT, eventually, spawnNode } from '../agent/stack.js';
import { controlRequest } from '../../src/agent/control-client.js';
import type { AgentStatus } from '../../src/agent/agent.js';
import { adversarialStack, expectMsg, RawSocket } from './fixtures/stack.js';
import { DAEMON_START_TIMEOUT_MS } from '../helpers/daemon.js';

// As in src/agent/channel.ts (restated, not imported: the test must run against a tree without them).
const MAX_UNANSWERED_PUNCHES = 2;
const MAX_CANDIDATES = 8;

const s = await adversarialStack(t);

// The target: a default devloc-agent process.
const device = s.enroll('target');
const identity = path.join(s.dir, 'target.key');
writeFileSync(identity, keyFileToJson(device), { mode: 0o600 });
const socketPath = path.join(s.dir, 'target.sock');
const agent = spawnNode('agent/main.ts', [
  '--identity', identity, '--authd', `127.0.0.1:${s.addr.authd.port}`, '--authd-key', path.join(s.dir, 'authd.pub'),
  '--control-socket', socketPath, '--state-dir', path.join(s.dir, 'target-state'), ...FAST_AGENT,
  '--reflector', `127.0.0.1:${s.addr.reflector.port}`,
]);
t.teardown(() => agent.stop('SIGKILL'));
await agent.waitFor((l) => l['msg'] === 'listening', DAEMON_START_TIMEOUT_MS, 'agent listening');
const status = await eventually(async () => {
  const st = (await controlRequest(socketPath, 'status', {}, 20_000)) as AgentStatus;
  return st.locatorId && st.registered && st.localPort ? st : undefined;
}, 30_000, 'agent registered');
const targetId = Buffer.from(status.locatorId!, 'hex');

const attacker = await s.terminal('attacker');
expectMsg(await attacker.register({ nickname: 'attacker' }), 'REGISTER_ACK');

/** Victim sockets: every byte they receive is counted. */
async function victims(n: number, firstIp: number): Promise<{ sock: RawSocket; bytes: () => number; datagrams: () => number }[]> {
  return Promise.all(Array.from({ length: n }, async (_, i) => {
    const sock = await RawSocket.open(t, `127.0.0.${firstIp + i}`);
    return { sock, bytes: () => sock.received.reduce((k, m) => k + m.length, 0), datagrams: () => sock.received.length };
  }));
}

t.test('INTRODUCE naming victims as LAN addresses, PUNCHes forged from more victims', async (t) => {
  const lan = await victims(4, 90);
  const introduce = attacker.encode('INTRODUCE', { target: targetId, netMode: 1, localAddrs: lan.map((v) => v.sock.address) });
  const ack = expectMsg(await attacker.send('INTRODUCE', introduce), 'INTRODUCE_ACK');
  const channelId = Buffer.from(ack.channelId);
  const channelKey = openChannelKey(attacker.sessions.locator.keys, channelId, targetId, ack.sealedKey);
  t.ok(channelKey, 'the attacker holds the channel key');
  // Valid PUNCHes (initiator to responder), each from another victim's address (on loopback the
  // attacker "forges" a source by sending from the victim's socket), three from each.
  const punchKey = derivePunchKeys(channelKey!, channelId).initiatorToResponder;
  const eph = generatePair('x25519').public;
  const sources = await victims(MAX_CANDIDATES + 6, 110);
  let seq = 0;
  let punchBytesIn = 0;
  const punchesPerSource = 3;
  for (let round = 0; round < punchesPerSource; round++) {
    for (const v of sources) {
      const dg = sealDatagram(punchKey, encodeDatagram('PUNCH', randomBytes(8), { eph }, { sid: channelId, seq: ++seq }));
      punchBytesIn += dg.length;
      v.sock.send({ ip: '127.0.0.1', port: status.localPort! }, dg);
    }
  }
  // Nothing answers the agent's PUNCHes: it gives up at its punch timeout, and logs it.
  await agent.waitFor((l) => l['msg'] === 'peer channel failed' && l['channel'] === channelId.toString('hex'), 60_000, 'the channel to fail');

  const lanOut = lan.map((v) => v.bytes());
  const lanMost = Math.max(...lanOut);
  t.ok(lan.every((v) => v.datagrams() <= MAX_UNANSWERED_PUNCHES), `LAN victims got ${lan.map((v) => v.datagrams()).join(', ')} datagrams (at most ${MAX_UNANSWERED_PUNCHES} each)`);
  t.ok(lanMost <= 2 * introduce.bytes.length,
    `LAN victims: ${lanOut.join(', ')} B each for a ${introduce.bytes.length} B INTRODUCE: x${(lanOut.reduce((a, b) => a + b, 0) / introduce.bytes.length).toFixed(2)} in all`);

  const srcOut = sources.map((v) => v.bytes());
  const punched = sources.filter((v) => v.datagrams() > punchesPerSource).length;
  t.ok(sources.every((v) => v.datagrams() <= punchesPerSource + MAX_UNANSWERED_PUNCHES),
    `PUNCH sources got ${sources.map((v) => v.datagrams()).join(', ')} datagrams for ${punchesPerSource} PUNCHes each`);
  t.ok(punched <= MAX_CANDIDATES, `${punched} of ${sources.length} sources punched (at most ${MAX_CANDIDATES} candidates)`);
  const ratio = srcOut.reduce((a, b) => a + b, 0) / punchBytesIn;
  t.ok(ratio <= 2, `PUNCH sources: ${srcOut.reduce((a, b) => a + b, 0)} B out for ${punchBytesIn} B of PUNCHes in: x${ratio.toFixed(2)}`);
  t.equal(agent.proc.exitCode, null, 'the agent still runs');
});

t.test('an asker from another observed IP: its claimed LAN addresses are not passed on, nor the target\'s (item 1)', async (t) => {
  // Behind another NAT (another observed IP) LAN addresses cannot be reached: locatord passes them
  // on only between terminals with the same observed IP, so the agent is never handed these.
  const far = await s.terminal('far-attacker', { bind: '127.0.0.7' });
  expectMsg(await far.register({ nickname: 'far' }), 'REGISTER_ACK');
  const lan = await victims(4, 130);
  const ack = expectMsg(await far.request('INTRODUCE', { target: targetId, netMode: 1, localAddrs: lan.map((v) => v.sock.address) }), 'INTRODUCE_ACK');
  t.equal(ack.localAddrs, undefined, 'the target\'s LAN addresses are not given to a stranger behind another IP');
  const channelId = Buffer.from(ack.channelId);
  await agent.waitFor((l) => l['msg'] === 'peer channel failed' && l['channel'] === channelId.toString('hex'), 60_000, 'the channel to fail');
  // A second line of defence: the agent too tries LAN addresses only of a peer seen at its own IP.
  t.same(lan.map((v) => v.datagrams()), [0, 0, 0, 0], 'no claimed LAN address was punched');
});

// Last: every refusal the daemons' handlers answered above is one devloc-protocol(7) lists.
t.test('every handler refusal answered is listed in devloc-protocol(7)', async (t) => {
  t.same(await s.undocumentedRefusals(), []);
});
