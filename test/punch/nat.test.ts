// Peer channels behind real NATs, no mocks: network namespaces, nftables masquerade with a
// home-router firewall (lab.ts), devloc-authd and devloc-locatord (with its reflector) on the
// public segment, devloc-agent daemons on hosts behind the NATs, driven through their control
// sockets like `devloc connect` does.
//
// - Two agents behind two separate endpoint-independent NATs open a direct channel: the path is
//   the peer's NAT address, the data crosses the public segment between the two NATs, and
//   locatord sees no more datagrams than its usual registration traffic. Messages arrive in
//   order, or with their loss flagged (15% loss added on one side).
// - Two agents behind one NAT take the LAN path; a third host on that LAN injects forged
//   datagrams into the channel: refused, never delivered.
// - Two agents behind symmetric NATs: refused at once with the matrix's reason, nothing punched.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import t from 'tap';
import type { AgentStatus, LookupEntry } from '../../src/agent/agent.js';
import type { ConnectResult } from '../../src/agent/channel-control.js';
import { ControlError } from '../../src/agent/control-client.js';
import { formatStatus } from '../../src/cli/commands/agentctl.js';
import { encodeDatagram } from '../../src/wire/envelope.js';
import { generatePair } from '../../src/wire/keys.js';
import { derivePunchKeys } from '../../src/wire/peer.js';
import { sealDatagram } from '../../src/wire/session.js';
import { root } from '../helpers/daemon.js';
import { haveNetns, Lab, PUBLIC_NET } from '../agent/netns.js';
import type { AgentProc } from '../agent/stack.js';
import { eventually } from '../agent/stack.js';
import type { Recv } from './lab.js';
import { bridgeCounter, channelOf, natHost, serverCounter, sharedNat } from './lab.js';

const missing = haveNetns();
if (missing && process.env['CI']) t.fail(`cannot run: ${missing}`);
const skip = missing && !process.env['CI'] ? missing : false;

/** Run devloc(1) (through tsx) with `args`; resolves with its exit status and output. */
function devloc(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'src/cli/devloc.ts'), ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.setEncoding('utf8').on('data', (x: string) => (stdout += x));
    p.stderr.setEncoding('utf8').on('data', (x: string) => (stderr += x));
    p.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

t.test('peer channels behind real NATs', { skip }, async (t) => {
  const lab = new Lab(t);
  const pubA = `${PUBLIC_NET}.11`;
  const pubB = `${PUBLIC_NET}.12`;
  const alice = natHost(lab, 'al', pubA, 1, 'eim');
  const bob = natHost(lab, 'bo', pubB, 2, 'eim');
  const sym1 = natHost(lab, 's1', `${PUBLIC_NET}.13`, 3, 'symmetric');
  const sym2 = natHost(lab, 's2', `${PUBLIC_NET}.14`, 4, 'symmetric');
  const [lan1, lan2, mallory] = sharedNat(lab, 'ln', `${PUBLIC_NET}.15`, 5, ['lan1', 'lan2', 'mal']) as [string, string, string];
  const s = await lab.stack({ reflectorAltIp: `${PUBLIC_NET}.2`, locatordArgs: ['--metrics-listen', '127.0.0.1:9479'] });
  const direct = bridgeCounter(lab, 'direct', pubA, pubB);
  const symDirect = bridgeCounter(lab, 'symdirect', `${PUBLIC_NET}.13`, `${PUBLIC_NET}.14`);
  const toLocatord = serverCounter(lab, s.ports.locatord);
  const st = s;
  const [a, b, x1, x2, l1, l2] = await Promise.all([
    st.agent('alice', [], { netns: alice }), st.agent('bob', [], { netns: bob }),
    st.agent('sym1', [], { netns: sym1 }), st.agent('sym2', [], { netns: sym2 }),
    st.agent('lan1', [], { netns: lan1 }), st.agent('lan2', [], { netns: lan2 }),
  ]);
  const classified = (p: AgentProc, mode: string) => eventually(async () => {
    const x = await p.status();
    return x.registered && x.netMode === mode ? x : null;
  }, 40_000, `${p.name} registered as ${mode}`);
  const [sa, sb, s1, s2, sl1, sl2] = await Promise.all([
    classified(a, 'port-restricted'), classified(b, 'port-restricted'), classified(x1, 'symmetric'), classified(x2, 'symmetric'),
    classified(l1, 'port-restricted'), classified(l2, 'port-restricted'),
  ]);
  /** locatord knows `target`'s classified mode (its REFRESH after classification arrived). */
  const modeKnown = (asker: AgentProc, target: AgentStatus, mode: string) => eventually(async () => {
    const r = (await asker.control('lookup', { targets: [target.locatorId] })) as LookupEntry[];
    return r[0]?.netMode === mode;
  }, 20_000, `locatord has ${target.locatorId}'s mode`);

  await t.test('two endpoint-independent NATs: a direct path, data never through locatord', async (t) => {
    await modeKnown(a, sb, 'port-restricted');
    const r = (await a.control('connect', { peer: sb.locatorId })) as ConnectResult;
    t.equal(r.role, 'initiator');
    t.equal(r.path?.kind, 'public', `path ${r.path?.addr}`);
    t.equal(r.path?.addr, sb.observed, "the path is bob's NAT mapping, the address locatord saw");
    const atB = await eventually(async () => {
      const c = channelOf(await b.status(), r.channel);
      return c?.state === 'open' ? c : null;
    }, 10_000, 'bob has the channel open');
    t.equal(atB.role, 'responder');
    t.equal(atB.path?.addr, sa.observed, "bob's path is alice's NAT mapping");

    // In order when nothing is lost.
    const locBefore = toLocatord();
    const directBefore = direct();
    for (let i = 1; i <= 50; i++) await a.control('channel.send', { channel: r.channel, text: `m${i}` });
    const got: number[] = [];
    await eventually(async () => {
      const x = (await b.control('channel.recv', { channel: r.channel, waitMs: 1000 })) as Recv;
      t.equal(x.lost, 0, 'nothing lost on a clean link');
      got.push(...x.messages.map((m) => Number(m.text.slice(1))));
      return got.length >= 50;
    }, 15_000, '50 messages at bob');
    t.same(got, Array.from({ length: 50 }, (_, i) => i + 1), 'all 50, in order');

    // 15% of UDP lost at bob: what arrives is in order, and everything else is flagged as lost.
    const dropped = lab.lossy(bob, 15);
    for (let i = 51; i <= 250; i++) await a.control('channel.send', { channel: r.channel, text: `m${i}` });
    await new Promise((res) => setTimeout(res, 300));
    const droppedAtBob = dropped();
    lab.exec(bob, 'nft', ['delete', 'table', 'inet', 'loss']);
    const after: number[] = [];
    let lost = 0;
    for (;;) {
      const x = (await b.control('channel.recv', { channel: r.channel, waitMs: 300 })) as Recv;
      lost += x.lost;
      after.push(...x.messages.map((m) => Number(m.text.slice(1))));
      if (x.messages.length === 0) break;
    }
    // Numbers past the last one received cannot be known lost yet: one more message settles it.
    await a.control('channel.send', { channel: r.channel, text: 'm251' });
    const last = await eventually(async () => {
      const x = (await b.control('channel.recv', { channel: r.channel, waitMs: 1000 })) as Recv;
      lost += x.lost;
      after.push(...x.messages.map((m) => Number(m.text.slice(1))));
      return after.includes(251) ? x : null;
    }, 10_000, 'the settling message');
    t.equal(last.state, 'open');
    t.ok(after.every((n, i) => i === 0 || n > after[i - 1]!), 'strictly increasing: never out of order');
    t.equal(after.length + lost, 201, `every message arrived or was flagged lost (${after.length} arrived, ${lost} lost)`);
    t.ok(lost > 0 && droppedAtBob > 0, `the link dropped ${droppedAtBob} datagrams`);

    const viaDirect = direct() - directBefore;
    const viaLocatord = toLocatord() - locBefore;
    t.ok(viaDirect >= 50 + after.length, `${viaDirect} datagrams went NAT to NAT`);
    t.ok(toLocatord() > 6, `the counter sees locatord's traffic (${toLocatord()} datagrams since the agents started)`);
    t.ok(viaLocatord < 60, `locatord received ${viaLocatord} datagrams meanwhile (registration refreshes), not the ${50 + 201} messages`);
    const metrics = lab.exec(lab.pub, 'curl', ['-s', 'http://127.0.0.1:9479/metrics']);
    t.match(metrics, /introductions_total\{result="ok"\} 1\b/, 'one introduction');
    t.match(metrics, /intro_acks_total 1\b/, 'acknowledged by bob');

    // devloc(1) on top: pings over the same channel (reused), then it closes it.
    const cli = await devloc(['connect', sb.locatorId!, '--ping', '3', '--interval', '100', '--socket', a.socket]);
    t.equal(cli.status, 0, `devloc connect --ping exits 0 ${cli.stderr}`);
    t.match(cli.stdout, new RegExp(`connected to ${sb.locatorId}: channel ${r.channel}, direct path ${sb.observed!.replace(/\./g, '\\.')} \\(public`));
    t.match(cli.stdout, /ping 3: rtt [\d.]+ ms via/);
    t.match(cli.stdout, /3 pings, 3 answered, 0% lost/);
    const closedAtB = await eventually(async () => {
      const c = channelOf(await b.status(), r.channel);
      return c?.state === 'closed' ? c : null;
    }, 10_000, 'bob sees the channel closed');
    t.equal(closedAtB.reason, 'peer closed the channel');
  });

  await t.test('behind one NAT: the LAN path; a third party on the LAN cannot inject', async (t) => {
    t.equal(sl1.observed!.split(':')[0], sl2.observed!.split(':')[0], 'same public IP');
    const r = (await l1.control('connect', { peer: sl2.locatorId })) as ConnectResult;
    t.equal(r.path?.kind, 'lan');
    t.equal(r.path?.addr, `10.77.5.3:${sl2.localPort}`);
    const atL2 = await eventually(async () => {
      const c = channelOf(await l2.status(), r.channel);
      return c?.state === 'open' && c.path?.kind === 'lan' ? c : null;
    }, 10_000, 'lan2 on the LAN path');
    t.equal(atL2.path?.addr, `10.77.5.2:${sl1.localPort}`);

    // mallory (10.77.5.4) knows the channel ID (it is on the wire) but not its keys.
    const id = Buffer.from(r.channel, 'hex');
    const key = derivePunchKeys(randomBytes(32), id).initiatorToResponder;
    const forged = [
      sealDatagram(key, encodeDatagram('DATA', randomBytes(8), { n: 1000, payload: Buffer.from('forged') }, { sid: id, seq: 1_000_000 })),
      sealDatagram(key, encodeDatagram('PUNCH', randomBytes(8), { eph: generatePair('x25519').public }, { sid: id, seq: 1_000_001 })),
      sealDatagram(key, encodeDatagram('PUNCH', randomBytes(8), { eph: generatePair('x25519').public, close: true }, { sid: id, seq: 1_000_002 })),
    ];
    const script = `const s=require('node:dgram').createSocket('udp4');const d=${JSON.stringify(forged.map((f) => f.toString('hex')))};` +
      `let n=0;for(const h of d)s.send(Buffer.from(h,'hex'),${sl2.localPort},'10.77.5.3',()=>{if(++n===d.length)s.close()});`;
    lab.exec(mallory, process.execPath, ['-e', script]);
    const refused = await eventually(async () => {
      const c = channelOf(await l2.status(), r.channel);
      return c && c.stats.refused >= forged.length ? c : null;
    }, 10_000, 'lan2 refused the forged datagrams');
    t.equal(refused.state, 'open', 'a forged close closes nothing');
    t.equal(refused.path?.addr, `10.77.5.2:${sl1.localPort}`, 'the path did not move');
    await l1.control('channel.send', { channel: r.channel, text: 'genuine' });
    const x = await eventually(async () => {
      const m = (await l2.control('channel.recv', { channel: r.channel, waitMs: 1000 })) as Recv;
      return m.messages.length ? m : null;
    }, 10_000, 'the genuine message');
    t.same(x.messages.map((m) => m.text), ['genuine'], 'only the genuine message was delivered');
    await l1.control('channel.close', { channel: r.channel });
  });

  await t.test('symmetric to symmetric: refused at once with the reason, nothing punched', async (t) => {
    await modeKnown(x1, s2, 'symmetric');
    const err = await x1.control('connect', { peer: s2.locatorId }).then(() => null, (e: unknown) => e as ControlError);
    t.ok(err instanceof ControlError, 'connect fails');
    t.equal(err?.code, 'NO_DIRECT_PATH');
    t.match(err?.message, /symmetric NAT and the peer behind a symmetric NAT: both NATs pick a new port for each destination/);
    const st1 = await x1.status();
    const failed = st1.channels.find((c) => c.state === 'failed' && c.peer === s2.locatorId);
    t.ok(failed, 'the failure is in status');
    t.match(formatStatus(st1), /peer channel:\s+to \S+: failed: no direct path: this terminal is behind a symmetric NAT/, 'devloc status shows it');
    const atX2 = await eventually(async () => (await x2.status()).channels.find((c) => c.peer === s1.locatorId), 10_000, 'sym2 heard of it');
    t.equal(atX2.state, 'failed', 'the introduced side gives up too');
    t.equal(atX2.stats.punchesSent, 0);
    t.equal(symDirect(), 0, 'not one datagram between the two NATs');
  });
});
