// The patent's trigger: the terminal's address changes (a new address from the connection
// server) and it registers the new one with nobody asking. Two ways it changes, in network
// namespaces: the agent's own interface is re-addressed (seen by polling the interfaces), and
// the NAT in front of it gets a new public address (seen as a different observed address in a
// REFRESH_ACK). Each time, another terminal looking it up finds the new address within seconds.
import t from 'tap';
import type { LookupEntry } from '../../src/agent/agent.js';
import { haveNetns, Lab, PUBLIC_NET, sh } from './netns.js';
import type { AgentProc } from './stack.js';
import { eventually } from './stack.js';

// Skipped only on a developer machine without root or nft; in CI (root, nftables) a missing
// tool is a failure, as in test/ops.
const missing = haveNetns();
if (missing && process.env['CI']) t.fail(`cannot run: ${missing}`);
const skip = missing && !process.env['CI'] ? missing : false;

async function addressOf(watcher: AgentProc, id: string): Promise<string | undefined> {
  const r = (await watcher.control('lookup', { targets: [id] })) as LookupEntry[];
  return r[0]!.online ? r[0]!.addr : undefined;
}

t.test('re-registers by itself when its address changes', { skip }, async (t) => {
  const lab = new Lab(t);
  const mover = lab.host('mover', `${PUBLIC_NET}.30`);
  const watch = lab.host('watch', `${PUBLIC_NET}.21`);
  const natted = lab.behindNat('nat', `${PUBLIC_NET}.14`, 4, 'eim');
  const s = await lab.stack();
  const [m, w, n] = await Promise.all([
    s.agent('mover', [], { netns: mover }),
    s.agent('watch', [], { netns: watch }),
    s.agent('natted', [], { netns: natted }),
  ]);
  const reg = async (p: AgentProc) => ((await p.status()).registered ? p.status() : null);
  const [sm, , sn] = await Promise.all([eventually(() => reg(m), 20_000, 'mover'), eventually(() => reg(w), 20_000, 'watcher'), eventually(() => reg(n), 20_000, 'natted')]);
  const port = sm.localPort!;
  t.equal(await addressOf(w, sm.locatorId!), `${PUBLIC_NET}.30:${port}`, 'first address');

  // 1. The interface gets a new address; the old one goes away.
  // One `ip -batch`, so the two steps are microseconds apart; still, an interface poll can fall
  // between them on a loaded machine and see no address at all (two changes, not one).
  sh('ip', ['-n', mover, '-batch', '-'], `addr flush dev eth0\naddr add ${PUBLIC_NET}.31/24 dev eth0\n`);
  const moved = await eventually(async () => ((await addressOf(w, sm.locatorId!)) === `${PUBLIC_NET}.31:${port}` ? true : null), 30_000, 'new address at locatord');
  t.ok(moved, 'the watcher finds the new address');
  const after = await eventually(async () => {
    const x = await m.status();
    return x.registered && x.observed === `${PUBLIC_NET}.31:${port}` ? x : null;
  }, 30_000, 'mover registered at the new address');
  t.ok(after.counters.addressChanges >= 1, 'treated as an address change');
  t.ok(after.counters.authentications >= 2, 'the whole sequence again: authenticated...');
  t.ok(after.counters.registrations >= 2, '...and registered');
  t.ok(m.lines.some((l) => l['msg'] === 'local addresses changed'), 'logged the change');

  // 2. The NAT's public address changes: only locatord can tell (a different observed address).
  t.match(sn.observed, new RegExp(`^${PUBLIC_NET}\\.14:`));
  const natRouter = lab.ns('natr');
  lab.ip(natRouter, ['addr', 'flush', 'dev', 'wan']);
  lab.ip(natRouter, ['addr', 'add', `${PUBLIC_NET}.15/24`, 'dev', 'wan']);
  const renat = await eventually(async () => {
    const a = await addressOf(w, sn.locatorId!);
    return a?.startsWith(`${PUBLIC_NET}.15:`) ? a : null;
  }, 30_000, 'NAT address change registered');
  t.match(renat, new RegExp(`^${PUBLIC_NET}\\.15:\\d+$`), 'the watcher finds the new public address');
  await eventually(async () => (await n.status()).counters.addressChanges >= 1, 30_000, 'treated as an address change');
  t.ok(n.lines.some((l) => l['msg'] === 'observed address changed'), 'noticed through the ACK');
  const sn2 = await eventually(async () => {
    const x = await n.status();
    return x.registered && x.netMode === 'port-restricted' ? x : null;
  }, 30_000, 'classified again');
  t.equal(sn2.observed, renat);
});
