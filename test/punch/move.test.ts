// Issue 17 item 3, last sentence: an open channel survives its terminal's address change
// (devloc-agent(8), ADDRESS CHANGES). Real NATs in network namespaces (test/punch/lab.ts): the
// mover behind a firewalled NAT, its peer on the public segment. Mid-stream the NAT's public
// address changes (a second WAN address is added and the first removed, which also drops the
// router's conntrack entries of the old one): every later datagram of the mover leaves from a
// new public address. The mover notices at its next REFRESH, re-registers, re-introduces the
// channel (INTRODUCE with `resumes`, the field of moves between relays), the peer punches the new address, and both ends continue on
// it: the upstream stream (sent across the change) arrives complete, once and in order; the
// peer's path moves to the new address; the channel never closes; the downstream works again.
//
// The same with a relayed channel (two symmetric NATs, a real coturn): the mover's allocation
// belonged to its old address, so it allocates anew and re-introduces the channel with its new
// relayed address; the peer punches that one and both continue through the relay. Datagrams
// sent into the old allocation before anyone noticed are sent again once the new path answers
// (the PUNCH_ACK's `rx`, as after a move between relays): the whole stream arrives once and in
// order, nothing reported lost.
import t from 'tap';
import type { ConnectResult } from '../../src/agent/channel-control.js';
import { haveNetns, Lab, PUBLIC_NET } from '../agent/netns.js';
import type { AgentProc } from '../agent/stack.js';
import { eventually } from '../agent/stack.js';
import type { Recv } from './lab.js';
import { needs } from '../ops/tools.js';
import { haveCoturn } from '../turn/coturn.js';
import { addRelay, channelOf, natHost, readyWithRelays, routerOf } from './lab.js';

const missing = haveNetns();
if (missing && process.env['CI']) t.fail(`cannot run: ${missing}`);
const skip = missing && !process.env['CI'] ? missing : false;
const skipRelay = skip || needs('turnserver', haveCoturn).skip;

/** Send `u1`, `u2`, ... from `m` on `channel` every 20 ms until finished. */
function upstream(m: AgentProc, channel: string): { finish: (drain: () => Promise<void>) => Promise<{ after: number; n: number }> } {
  let n = 0;
  let stopped = false;
  const done = (async () => {
    while (!stopped) {
      await m.control('channel.send', { channel, text: `u${++n}` });
      await new Promise((res) => setTimeout(res, 20));
    }
  })();
  return {
    // 20 more after the move (draining meanwhile), then stop: `after` were sent before, `n` in all.
    finish: async (drain) => {
      const after = n;
      await eventually(async () => {
        await drain();
        return n >= after + 20;
      }, 30_000, 'more of the stream after the move');
      stopped = true;
      await done;
      return { after, n };
    },
  };
}

/**
 * Once 20 messages of the stream arrived (`drain` collects, `received` counts), move the NAT
 * `short`'s public address from `from` to `to`: the new one added (kept as primary once the old
 * goes), the old removed (masquerade forgets its mappings with it).
 */
async function renumberMidStream(lab: Lab, short: string, from: string, to: string, drain: () => Promise<void>, received: () => number): Promise<void> {
  await eventually(async () => {
    await drain();
    return received() >= 20;
  }, 30_000, 'the stream flows before the change');
  const router = routerOf(lab, short);
  lab.exec(router, 'sysctl', ['-qw', 'net.ipv4.conf.wan.promote_secondaries=1']);
  lab.ip(router, ['addr', 'add', `${to}/24`, 'dev', 'wan']);
  lab.ip(router, ['addr', 'del', `${from}/24`, 'dev', 'wan']);
}

t.test('an open channel re-establishes itself when its NAT changes address mid-stream', { skip }, async (t) => {
  const lab = new Lab(t);
  const OLD = `${PUBLIC_NET}.40`;
  const NEW = `${PUBLIC_NET}.42`;
  const moverNs = natHost(lab, 'mv', OLD, 7, 'eim');
  const peerNs = lab.host('pe', `${PUBLIC_NET}.41`);
  const s = await lab.stack({ reflectorAltIp: `${PUBLIC_NET}.2` });
  // A refresh every second: the change is noticed soon (the test waits for it either way).
  const [m, p] = await Promise.all([s.agent('mover', ['--max-refresh-s', '1'], { netns: moverNs }), s.agent('peer', [], { netns: peerNs })]);
  const [sm, sp] = await Promise.all([m, p].map((q) => eventually(async () => {
    const x = await q.status();
    return x.registered && x.netMode !== 'unknown' ? x : null;
  }, 60_000, `${q.name} registered and classified`)));
  t.match(sm!.observed, new RegExp(`^${OLD.replaceAll('.', '\\.')}:`));
  const r = (await m.control('connect', { peer: sp!.locatorId })) as ConnectResult;
  t.equal(r.path?.kind, 'public', `direct channel ${r.path?.addr}`);
  await eventually(async () => channelOf(await p.status(), r.channel)?.state === 'open', 30_000, 'the peer has the channel open');

  const up: string[] = [];
  const down: string[] = [];
  let lostUp = 0;
  let lostDown = 0;
  const notOpen: string[] = [];
  const drain = async (): Promise<void> => {
    const [u, d] = await Promise.all([
      p.control('channel.recv', { channel: r.channel, waitMs: 100 }) as Promise<Recv>,
      m.control('channel.recv', { channel: r.channel, waitMs: 100 }) as Promise<Recv>,
    ]);
    lostUp += u.lost;
    lostDown += d.lost;
    up.push(...u.messages.map((x) => x.text));
    down.push(...d.messages.map((x) => x.text));
    if (u.state !== 'open' || d.state !== 'open') notOpen.push(`${u.state}/${d.state} ${u.reason ?? d.reason ?? ''}`);
  };
  // The upstream: sent continuously, across the change of the NAT's public address.
  const stream = upstream(m, r.channel);
  await renumberMidStream(lab, 'mv', OLD, NEW, drain, () => up.length);

  const moved = await eventually(async () => {
    await drain();
    const c = channelOf(await p.status(), r.channel);
    return c?.path?.addr.startsWith(`${NEW}:`) ? c : null;
  }, 90_000, "the peer's path moved to the new address");
  t.equal(moved.state, 'open', 'the same channel, still open');
  t.ok((await m.status()).counters.addressChanges >= 1, 'the mover noticed the change');
  // Each end logs its part when it happens, not when the peer's path moved: the mover's datagrams
  // from the new address can reach the peer (which then follows them) before locatord's INTRO does,
  // as under load in CI.
  const logged = (q: AgentProc, msg: string, what: string): Promise<boolean> =>
    eventually(async () => q.lines.some((l) => l['msg'] === msg), 30_000, what);
  t.ok(await logged(m, 'peer channel moved', 'the mover re-established it'), 'the mover re-established it');
  t.ok(await logged(p, 're-introduced by locatord: the peer moved', 'the peer was re-introduced'), 'the peer was re-introduced');
  // More upstream after the move, then stop and collect the rest.
  const { after, n } = await stream.finish(drain);
  await eventually(async () => {
    await drain();
    return up.length >= n;
  }, 30_000, 'the rest of the stream');
  t.same(up, Array.from({ length: n }, (_, i) => `u${i + 1}`), `all ${n} upstream messages once, in order, across the change`);
  t.equal(lostUp, 0, 'no loss reported upstream');

  // Downstream on the new path: the peer sends to the new address.
  for (let i = 1; i <= 20; i++) await p.control('channel.send', { channel: r.channel, text: `d${i}` });
  await eventually(async () => {
    await drain();
    return down.length >= 20;
  }, 30_000, 'the downstream after the move');
  t.same(down, Array.from({ length: 20 }, (_, i) => `d${i + 1}`), 'all 20 downstream messages once, in order');
  t.equal(lostDown, 0);
  t.same(notOpen, [], 'the channel was open at both ends at every look');
  await m.control('channel.close', { channel: r.channel });
});

t.test('a relayed channel re-establishes itself through a new allocation when its NAT changes address', { skip: skipRelay }, async (t) => {
  const lab = new Lab(t);
  const OLD = `${PUBLIC_NET}.50`;
  const NEW = `${PUBLIC_NET}.52`;
  const RELAY = `${PUBLIC_NET}.20`;
  const moverNs = natHost(lab, 'ms', OLD, 7, 'symmetric');
  const peerNs = natHost(lab, 'ps', `${PUBLIC_NET}.51`, 8, 'symmetric');
  const relay = await lab.relay(lab.host('rl', RELAY), RELAY);
  const s = await lab.stack({ reflectorAltIp: `${PUBLIC_NET}.2` });
  addRelay(s, 'r1', relay);
  const [m, p] = await Promise.all([s.agent('mover', ['--max-refresh-s', '1'], { netns: moverNs }), s.agent('peer', [], { netns: peerNs })]);
  const [, sp] = await Promise.all([readyWithRelays(m, 'symmetric', 1), readyWithRelays(p, 'symmetric', 1)]);
  await eventually(async () => {
    const r = (await m.control('lookup', { targets: [sp.locatorId] })) as { netMode?: string }[];
    return r[0]?.netMode === 'symmetric';
  }, 30_000, "locatord has the peer's mode");
  const r = (await m.control('connect', { peer: sp.locatorId })) as ConnectResult;
  t.equal(r.path?.kind, 'relay', `relayed channel ${r.path?.addr}`);
  const before = await eventually(async () => {
    const c = channelOf(await p.status(), r.channel);
    return c?.state === 'open' ? c : null;
  }, 30_000, 'the peer has the channel open');
  const oldRelayed = before.path!.addr;

  const up: number[] = [];
  let lost = 0;
  const notOpen: string[] = [];
  const drain = async (): Promise<void> => {
    const [u, d] = await Promise.all([
      p.control('channel.recv', { channel: r.channel, waitMs: 100 }) as Promise<Recv>,
      m.status(),
    ]);
    lost += u.lost;
    up.push(...u.messages.map((x) => Number(x.text.slice(1))));
    const own = channelOf(d, r.channel);
    if (u.state !== 'open' || own?.state !== 'open') notOpen.push(`${u.state}/${own?.state} ${u.reason ?? own?.reason ?? ''}`);
  };
  const stream = upstream(m, r.channel);
  await renumberMidStream(lab, 'ms', OLD, NEW, drain, () => up.length);
  const moved = await eventually(async () => {
    await drain();
    const c = channelOf(await p.status(), r.channel);
    return c?.path && c.path.addr !== oldRelayed ? c : null;
  }, 90_000, "the peer's path moved to the mover's new relayed address");
  t.equal(moved.path?.kind, 'relay', `still relayed: ${moved.path?.addr}`);
  t.equal(moved.path?.addr.split(':')[0], RELAY, 'through the relay');
  const alloc = (await m.status()).relayAllocation;
  t.equal(alloc?.relayed, moved.path?.addr, "the mover's new allocation is what the peer sends to");
  t.match(alloc?.mapped ?? '', new RegExp(`^${NEW.replaceAll('.', '\\.')}:`), 'made from the new address');
  const { after, n } = await stream.finish(drain);
  await eventually(async () => {
    await drain();
    return up.at(-1) === n;
  }, 30_000, 'the end of the stream');
  t.ok(up.every((v, i) => i === 0 || v > up[i - 1]!), 'in order, none twice');
  t.equal(up.length + lost, n, `${up.length} delivered + ${lost} reported lost = ${n} sent`);
  t.same(up.filter((v) => v > after), Array.from({ length: n - after }, (_, i) => after + i + 1), 'everything sent after the move arrived');
  t.same(up, Array.from({ length: n }, (_, i) => i + 1), 'and what went into the old allocation too: sent again after the move (rx)');
  t.equal(lost, 0, 'nothing reported lost');
  t.same(notOpen, [], 'the channel was open at both ends at every look');
  for (let i = 1; i <= 10; i++) await p.control('channel.send', { channel: r.channel, text: `d${i}` });
  const down: string[] = [];
  await eventually(async () => {
    const x = (await m.control('channel.recv', { channel: r.channel, waitMs: 500 })) as Recv;
    down.push(...x.messages.map((y) => y.text));
    return down.length >= 10;
  }, 30_000, 'the downstream after the move');
  t.same(down, Array.from({ length: 10 }, (_, i) => `d${i + 1}`), 'and the other way');
  await m.control('channel.close', { channel: r.channel });
});
