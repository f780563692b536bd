// Two port-restricted terminals behind two plain Linux masquerade routers with NO input
// firewall (issue 17, item 4): direct in at least 19 of 20 attempts. Real NATs in network
// namespaces (lab.ts), each one ISP hop away from the public segment as on the internet, real
// authd, locatord and devloc-agent daemons driven through their control sockets.
//
// Without the opening datagrams (punch.ts: TTL-limited, before the first PUNCH), whichever end
// punched first had its PUNCH delivered to the other router itself; that conntrack entry made
// masquerade send the other end's PUNCH from another port, dropped by the first NAT's filter:
// PUNCH_FAILED unless the first PUNCHes crossed in flight. Each attempt starts from no conntrack
// state between the two NATs (short UDP timeouts on the routers, waited for), so the 20 attempts
// are 20 first meetings. The count is over attempts; nothing here measures time.
import t from 'tap';
import type { AgentStatus, LookupEntry } from '../../src/agent/agent.js';
import type { ConnectResult } from '../../src/agent/channel-control.js';
import { haveNetns, Lab, PUBLIC_NET } from '../agent/netns.js';
import type { AgentProc } from '../agent/stack.js';
import { eventually } from '../agent/stack.js';
import { conntrackTo, plainMasqueradeHost, routerOf } from './lab.js';

const missing = haveNetns();
if (missing && process.env['CI']) t.fail(`cannot run: ${missing}`);
const skip = missing && !process.env['CI'] ? missing : false;

const ATTEMPTS = 20;
// 20 connects, each after the routers forgot the last (a few seconds): ~90 s alone, more on a
// busy machine, and ~10 s per attempt that fails; above the suite's 300 s per file.
t.setTimeout(900_000);

t.test('plain masquerade, no router firewall: direct in >= 95% of attempts', { skip, timeout: 900_000 }, async (t) => {
  const lab = new Lab(t);
  const pubA = `${PUBLIC_NET}.21`;
  const pubB = `${PUBLIC_NET}.22`;
  const alice = plainMasqueradeHost(lab, 'ma', pubA, 21, `${PUBLIC_NET}.121`);
  const bob = plainMasqueradeHost(lab, 'mb', pubB, 22, `${PUBLIC_NET}.122`);
  const s = await lab.stack({ reflectorAltIp: `${PUBLIC_NET}.2` });
  const st = s;
  const [a, b] = await Promise.all([st.agent('alice', [], { netns: alice }), st.agent('bob', [], { netns: bob })]);
  const classified = (p: AgentProc) => eventually(async () => {
    const x = await p.status();
    return x.registered && x.netMode === 'port-restricted' ? x : null;
  }, 60_000, `${p.name} registered as port-restricted`);
  const [sa, sb] = await Promise.all([classified(a), classified(b)]);
  t.equal(sa.observed, `${pubA}:${sa.localPort}`, 'masquerade kept the port');
  await eventually(async () => {
    const r = (await a.control('lookup', { targets: [sb.locatorId] })) as LookupEntry[];
    return r[0]?.netMode === 'port-restricted';
  }, 30_000, "locatord has bob's mode");

  const [ra, rb] = [routerOf(lab, 'ma'), routerOf(lab, 'mb')];
  const noState = () => eventually(async () => conntrackTo(lab, ra, pubB).length === 0 && conntrackTo(lab, rb, pubA).length === 0, 60_000, 'no conntrack state between the NATs');
  const outcomes: string[] = [];
  for (let i = 1; i <= ATTEMPTS; i++) {
    await noState();
    const r = await a.control('connect', { peer: sb.locatorId }).then((x) => x as ConnectResult, (e: unknown) => e as Error);
    if (r instanceof Error) {
      outcomes.push(`${i}: ${r.message}`);
      continue;
    }
    outcomes.push(`${i}: ${r.path?.kind} ${r.path?.addr}`);
    t.equal(r.path?.addr, sb.observed, `attempt ${i}: the path is bob's registered address`);
    await a.control('channel.close', { channel: r.channel });
    await eventually(async () => {
      const c = (await b.status()).channels.find((x) => x.channel === r.channel);
      return c === undefined || (c.state !== 'open' && c.state !== 'punching');
    }, 30_000, `attempt ${i}: bob's end closed`);
  }
  const direct = outcomes.filter((o) => / public /.test(o)).length;
  t.ok(direct >= 19, `${direct} of ${ATTEMPTS} attempts direct:\n${outcomes.join('\n')}`);
  // What the registrations say is still what the NATs use (a failed punch can move a mapping).
  const check = async (p: AgentProc, before: AgentStatus, pub: string) => {
    const now = await p.status();
    t.ok(now.registered, `${p.name} still registered`);
    t.equal(now.observed, `${pub}:${now.localPort}`, `${p.name}'s registered address is its socket's port at its NAT`);
    return before;
  };
  await check(a, sa, pubA);
  await check(b, sb, pubB);
});
