// Relayed channels behind real NATs (issue 17 items 3 and 6): real coturn relays on the public
// segment of the namespace lab (test/punch/lab.ts), registered with `devloc relay add`, the
// production peer policy of contrib/coturn/turnserver.conf (private ranges denied; the lab's
// 198.51.100.0/24 is TEST-NET-2, which it allows), devloc-agent daemons behind the NATs.
//
// - symmetric <-> symmetric: a relayed channel; every message once and in order; a capture on
//   the relay's interface holds none of the plaintext (the relay sees only ciphertext); status
//   and the agent's metrics (devloc_agent_relayed_channels, _bytes, relay_allocated; after the
//   upgrade below, relay_upgrades) count it.
// - a cone pair (two port-restricted NATs) with relays granted: direct, never relayed.
// - an attacker's allocation: a private address behind the relay is refused by the relay, and
//   a terminal it was not introduced to never receives what it relays.
// - symmetric <-> port-restricted starts relayed; once the port-restricted NAT is relaxed to a
//   full cone, the background punching finds the direct path, both ends move to it, and no
//   message of a continuous stream is lost, duplicated or reordered by the move. The stream is
//   received by `devloc connect` at both ends (line chat, text and --json), which print the
//   upgrade as devloc(1) says; the relays see only ciphertext.
// - 10% random loss on sym2's router (nftables numgen): the connect succeeds at the first try, the
//   relayed channel delivers in order, never twice, and reports every missing message as loss;
//   the relay sees only ciphertext.
// - the relay SIGKILLed mid-channel: the open channel moves to the second relay by itself (the
//   peer punches the new relayed address), and every message sent before, during and after the
//   outage arrives once and in order, and captures on both relays hold none of it in clear;
//   the second relay SIGKILLed too: RELAY_LOST, "no relay left", at both ends.
// - The attacker's case carries no channel (its own bytes, in clear by its choice): nothing to
//   capture there. The UDP-blocked terminal (TCP, TLS) is test/punch/relay-tcp.test.ts, expired
//   credentials under a channel test/turn/relay-manager.test.ts, each with its own capture.
import path from 'node:path';
import t from 'tap';
import type { AgentStatus } from '../../src/agent/agent.js';
import type { ConnectResult } from '../../src/agent/channel-control.js';
import { formatStatus } from '../../src/cli/commands/agentctl.js';
import { mintTurnCredentials } from '../../src/wire/turn-credentials.js';
import { haveNetns, Lab, PUBLIC_NET } from '../agent/netns.js';
import type { AgentProc } from '../agent/stack.js';
import { eventually } from '../agent/stack.js';
import { devlocAsync, devlocChild } from '../cli/fixtures/cli.js';
import { needs } from '../ops/tools.js';
import { haveCoturn } from '../turn/coturn.js';
import type { Recv } from './lab.js';
import { addRelay, capture, channelOf, natHost, readyWithRelays, receiveAll, renewLease, routerOf } from './lab.js';

const missing = haveNetns();
if (missing && process.env['CI']) t.fail(`cannot run: ${missing}`);
const skip = missing && !process.env['CI'] ? missing : needs('turnserver', haveCoturn).skip;

// Two relays lost one after the other are found by the channels' keepalives (about a minute each).
t.setTimeout(900_000);

t.test('relayed channels behind real NATs', { skip, timeout: 900_000 }, async (t) => {
  const lab = new Lab(t);
  const relayIps = [`${PUBLIC_NET}.20`, `${PUBLIC_NET}.21`];
  const relayNs = relayIps.map((ip, i) => lab.host(`rl${i}`, ip));
  const sym1 = natHost(lab, 's1', `${PUBLIC_NET}.13`, 3, 'symmetric');
  const sym2 = natHost(lab, 's2', `${PUBLIC_NET}.14`, 4, 'symmetric');
  const alice = natHost(lab, 'al', `${PUBLIC_NET}.11`, 1, 'eim');
  const bob = natHost(lab, 'bo', `${PUBLIC_NET}.12`, 2, 'eim');
  const pr = natHost(lab, 'pr', `${PUBLIC_NET}.15`, 5, 'eim');
  const sy = natHost(lab, 'sy', `${PUBLIC_NET}.16`, 6, 'symmetric');
  const relays = await Promise.all(relayNs.map((ns, i) => lab.relay(ns, relayIps[i]!)));
  const s = await lab.stack({ reflectorAltIp: `${PUBLIC_NET}.2` });
  const st = s;
  relays.forEach((r, i) => addRelay(st, `r${i + 1}`, r));
  // sym1 and sy serve their metrics (inside their namespaces: scraped from there).
  const metricsArgs = ['--metrics-listen', '127.0.0.1:0'];
  const [x1, x2, a, b, p, y] = await Promise.all([
    st.agent('sym1', metricsArgs, { netns: sym1 }), st.agent('sym2', [], { netns: sym2 }),
    st.agent('alice', [], { netns: alice }), st.agent('bob', [], { netns: bob }),
    st.agent('pr', [], { netns: pr }), st.agent('sy', metricsArgs, { netns: sy }),
  ]);
  /** The value of metric `name` at agent `q` (namespace `ns`), scraped from its metrics endpoint. */
  const metric = async (q: AgentProc, ns: string, name: string): Promise<number> => {
    const l = await q.waitFor((x) => x['msg'] === 'metrics endpoint', 30_000, `${q.name}'s metrics endpoint`);
    const text = lab.exec(ns, process.execPath, ['-e', `fetch('http://${String(l['listen'])}/metrics').then((r) => r.text()).then((x) => process.stdout.write(x))`]);
    const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
    if (!m) throw new Error(`no ${name} in the metrics of ${q.name}`);
    return Number(m[1]);
  };
  const ready = (q: AgentProc, mode: string) => readyWithRelays(q, mode, 2);
  const [s1, s2, sa, sb, sp, sy1] = await Promise.all([
    ready(x1, 'symmetric'), ready(x2, 'symmetric'), ready(a, 'port-restricted'), ready(b, 'port-restricted'), ready(p, 'port-restricted'), ready(y, 'symmetric'),
  ]);
  const modeKnown = (asker: AgentProc, target: AgentStatus, mode: string) => eventually(async () => {
    const r = (await asker.control('lookup', { targets: [target.locatorId] })) as { netMode?: string }[];
    return r[0]?.netMode === mode;
  }, 30_000, `locatord has ${target.locatorId}'s mode`);

  await t.test('a cone pair stays direct, never relayed', async (t) => {
    await modeKnown(a, sb, 'port-restricted');
    const r = (await a.control('connect', { peer: sb.locatorId })) as ConnectResult;
    t.equal(r.path?.kind, 'public', `direct path ${r.path?.addr}`);
    for (let i = 1; i <= 20; i++) await a.control('channel.send', { channel: r.channel, text: `c${i}` });
    const got = await receiveAll(b, r.channel, 20);
    t.same(got.texts, Array.from({ length: 20 }, (_, i) => `c${i + 1}`));
    const [ea, eb] = [channelOf(await a.status(), r.channel)!, channelOf(await b.status(), r.channel)!];
    t.equal(ea.path?.kind, 'public', 'alice still direct');
    t.not(eb.path?.kind, 'relay', 'bob never on the relay');
    t.equal(ea.stats.relayedBytes + eb.stats.relayedBytes, 0, 'not one byte through a relay');
    t.equal((await a.status()).relayCounters.relayedChannels, 0);
    t.equal((await b.status()).relayCounters.relayedChannels, 0);
    await a.control('channel.close', { channel: r.channel });
  });

  let symChannel = '';
  await t.test('symmetric to symmetric: relayed, every message once and in order, only ciphertext at the relay', async (t) => {
    await modeKnown(x1, s2, 'symmetric');
    const pcap = await capture(relayNs[0]!, 'eth0', path.join(st.dir, 'relay0.pcap'));
    const r = (await x1.control('connect', { peer: s2.locatorId })) as ConnectResult;
    symChannel = r.channel;
    t.equal(r.path?.kind, 'relay', `relayed path ${r.path?.addr}`);
    const atX2 = await eventually(async () => {
      const c = channelOf(await x2.status(), r.channel);
      return c?.state === 'open' ? c : null;
    }, 30_000, 'sym2 has the channel open');
    t.equal(atX2.path?.kind, 'relay');
    t.equal(atX2.path?.addr.split(':')[0], relayIps[0], "sym2 sends to sym1's relayed address");
    const marker = 'PLAINTEXT-MARKER-';
    const sent = Array.from({ length: 100 }, (_, i) => `${marker}${i + 1}`);
    for (const m of sent) await x1.control('channel.send', { channel: r.channel, text: m });
    for (let i = 1; i <= 10; i++) await x2.control('channel.send', { channel: r.channel, text: `${marker}back${i}` });
    const got = await receiveAll(x2, r.channel, 100);
    t.same(got.texts, sent, 'all 100, once each, in order');
    t.equal(got.lost, 0);
    const back = await receiveAll(x1, r.channel, 10);
    t.same(back.texts, Array.from({ length: 10 }, (_, i) => `${marker}back${i + 1}`), 'and the other way');
    const bytes = await pcap.stop(110 * 60);
    t.ok(bytes.length > 110 * 60, `the relay's interface carried the channel (${bytes.length} bytes captured)`);
    t.equal(bytes.indexOf(marker), -1, 'no plaintext in anything the relay saw');
    const st1 = await x1.status();
    t.equal(st1.relayAllocation?.relay, 'r1', 'sym1 allocated on the first relay');
    t.equal(st1.relayAllocation?.permitted, 1, 'one permission: the introduced peer');
    t.ok(st1.relayCounters.relayedChannels >= 1 && st1.relayCounters.relayedBytes > 100 * 40, 'relayed channels and bytes counted');
    t.match(formatStatus(st1), /relay allocation:\s+r1 udp \S+: relayed 198\.51\.100\.20:\d+/, 'devloc status shows the allocation');
    t.ok(await metric(x1, sym1, 'devloc_agent_relayed_channels') >= 1, 'the metrics count the relayed channel');
    t.ok(await metric(x1, sym1, 'devloc_agent_relayed_bytes') > 100 * 40, 'and the relayed bytes');
    t.equal(await metric(x1, sym1, 'devloc_agent_relay_allocated'), 1, 'and the allocation');
    // devloc connect on top: the path is shown as relayed, and --json prints a summary.
    const cli = await devlocAsync(['connect', s2.locatorId!, '--ping', '3', '--interval', '100', '--json', '--socket', x1.socket]);
    t.equal(cli.status, 0, cli.stderr);
    const lines = cli.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    t.match(lines[0], { channel: r.channel, path: { kind: 'relay' } });
    t.match(lines.at(-1), { summary: { pings: 3, answered: 3, lostPct: 0, path: { kind: 'relay' } } }, 'a summary line closes --ping --json');
  });

  await t.test('10% random loss on the path: a relayed channel delivers in order, never twice, reports the rest as loss; only ciphertext at the relay', { timeout: 240_000 }, async (t) => {
    // Every UDP datagram through sym2's router, either way, dropped with probability 1/10
    // (nftables numgen: no tc netem here). Before the connect: the introduction, the punching
    // through the relay and the data all cross it.
    const router = routerOf(lab, 's2');
    lab.nft(router, 'table inet lossy {\n  chain drop10 { type filter hook forward priority -5; policy accept; meta l4proto udp numgen random mod 100 < 10 drop; }\n}\n');
    t.teardown(() => lab.exec(router, 'nft', ['delete', 'table', 'inet', 'lossy']));
    const pcap = await capture(relayNs[0]!, 'eth0', path.join(st.dir, 'relay0-loss.pcap'));
    // The connect crosses the lossy router too, and must succeed at once: every lost PUNCH,
    // PUNCH_ACK, INTRO or TURN request is tried again within the punch timeout (a lost round trip
    // of the initiator's PUNCH through its relay once failed 1 connect in 3).
    const r = (await x1.control('connect', { peer: s2.locatorId, reuse: false })) as ConnectResult;
    t.equal(r.path?.kind, 'relay', `relayed path ${r.path?.addr}`);
    await eventually(async () => channelOf(await x2.status(), r.channel)?.state === 'open', 60_000, 'sym2 has the channel open');
    const marker = 'LOSSY-PLAINTEXT-';
    const total = 200;
    for (let i = 1; i <= total; i++) await x1.control('channel.send', { channel: r.channel, text: `${marker}${i}` });
    // Then one more at a time until one arrives: a gap is reported when a later message
    // comes, so the stream's last message must be seen for every loss to be counted.
    let last = total;
    await eventually(async () => {
      await x1.control('channel.send', { channel: r.channel, text: `${marker}${++last}` });
      const c = channelOf(await x2.status(), r.channel);
      return c !== undefined && c.stats.received + c.stats.lost >= last;
    }, 60_000, 'the end of the stream at sym2');
    const texts: string[] = [];
    let lost = 0;
    await eventually(async () => {
      const x = (await x2.control('channel.recv', { channel: r.channel, waitMs: 500 })) as Recv;
      lost += x.lost;
      texts.push(...x.messages.map((m) => m.text));
      return texts.length + lost >= last;
    }, 60_000, 'everything delivered or reported lost');
    const ns = texts.map((x) => Number(x.slice(marker.length)));
    t.ok(ns.every((v, i) => i === 0 || v > ns[i - 1]!), 'delivered in order, none twice');
    t.ok(ns.every((v) => Number.isInteger(v) && v >= 1 && v <= last), 'only what was sent');
    t.equal(texts.length + lost, last, `${texts.length} delivered + ${lost} reported lost = ${last} sent`);
    t.ok(lost > 0 && texts.length >= total / 2, `the loss was real and bounded (${lost} of ${last})`);
    const bytes = await pcap.stop(texts.length * 60);
    t.ok(bytes.length > texts.length * 60, `the relay carried the channel (${bytes.length} bytes captured)`);
    t.equal(bytes.indexOf(marker), -1, 'no plaintext in anything the relay saw');
    await x1.control('channel.close', { channel: r.channel });
  });

  await t.test("an attacker's allocation reaches neither a private address nor a terminal it was not introduced to", { timeout: 120_000 }, async (t) => {
    const creds = mintTurnCredentials(relays[0]!.secret, s1.locatorId!, Math.floor(Date.now() / 1000) + 600);
    // bob's router counts what arrives at it from the relay (new flows end at its firewall).
    lab.nft(routerOf(lab, 'bo'), `table inet watch {\n  chain in { type filter hook input priority -10; policy accept; ip saddr ${relayIps[0]} meta l4proto udp counter; }\n  chain forw { type filter hook forward priority -10; policy accept; ip saddr ${relayIps[0]} meta l4proto udp counter; }\n}\n`);
    const script = [
      "import { TurnClient } from './src/agent/turn/client.ts';",
      `const c = new TurnClient({ server: { host: '${relays[0]!.host}', port: ${relays[0]!.port}, transport: 'udp' }, credentials: ${JSON.stringify(creds)} });`,
      "c.on('error', () => {});",
      'await c.allocate();',
      "const priv = await c.permit([{ ip: '10.77.2.2', port: 1 }]).then(() => 'permitted', (e) => e.code);",
      `const pub = await c.permit([{ ip: '${sb.observed!.split(':')[0]}', port: 1 }]).then(() => 'permitted', (e) => e.code);`,
      `for (let i = 0; i < 5; i++) c.send({ ip: '${sb.observed!.split(':')[0]}', port: ${sb.observed!.split(':')[1]} }, Buffer.from('850118700000', 'hex'));`,
      'await new Promise((r) => setTimeout(r, 500));',
      'await c.close();',
      'console.log(JSON.stringify({ priv, pub }));',
    ].join('\n');
    const out = lab.exec(sym1, process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script]);
    const r = JSON.parse(out.trim().split('\n').at(-1)!) as { priv: string; pub: string };
    t.equal(r.priv, 'TURN_FORBIDDEN', 'the relay refuses a private address');
    t.equal(r.pub, 'permitted', 'a public address is permitted by the relay (it cannot know introductions)');
    const counts = [...lab.exec(routerOf(lab, 'bo'), 'nft', ['list', 'table', 'inet', 'watch']).matchAll(/counter packets (\d+)/g)].map((m) => Number(m[1]));
    t.ok(counts[0]! >= 1, `the datagrams reached bob's router (${counts[0]})`);
    t.equal(counts[1], 0, 'but none was forwarded to bob: he never punched that relay');
    t.equal((await b.status()).channels.filter((c) => c.state !== 'closed').length, 0, 'bob has no channel from it');
  });

  await t.test('starts relayed, moves to direct when the NAT is relaxed, without losing or duplicating a message; devloc connect shows the upgrade; only ciphertext at the relays', async (t) => {
    await modeKnown(y, sp, 'port-restricted');
    // Both relays: sy allocates on whichever of its grant answers first.
    const pcaps = await Promise.all(relayNs.map((ns, i) => capture(ns, 'eth0', path.join(st.dir, `relay${i}-upgrade.pcap`))));
    t.teardown(() => pcaps.forEach((c) => c.abort()));
    const r = (await y.control('connect', { peer: sp.locatorId })) as ConnectResult;
    t.equal(r.path?.kind, 'relay', 'symmetric to port-restricted: relayed at once');
    await eventually(async () => channelOf(await p.status(), r.channel)?.state === 'open', 30_000, 'pr open');
    // devloc connect at both ends, on this channel (reused, whichever side opened it), as line
    // chats: each prints what it receives and the path changes it sees, sy's as text, pr's as
    // JSON. They are the receivers of the stream below: what they print is what is checked.
    const cliY = devlocChild(['connect', sp.locatorId!, '--socket', y.socket]);
    const cliP = devlocChild(['connect', sy1.locatorId!, '--json', '--socket', p.socket]);
    t.teardown(() => {
      cliY.kill();
      cliP.kill();
    });
    /** The complete lines a CLI printed so far. */
    const linesOf = (out: string): string[] => out.slice(0, out.lastIndexOf('\n') + 1).split('\n').filter(Boolean);
    const textLines = (): string[] => linesOf(cliY.stdout());
    const jsonLines = (): Record<string, unknown>[] => linesOf(cliP.stdout()).map((l) => JSON.parse(l) as Record<string, unknown>);
    await eventually(async () => textLines().length >= 1 && jsonLines().length >= 1, 60_000, 'both devloc connect attached');
    t.match(textLines()[0], new RegExp(`^connected to .*: channel ${r.channel}, relayed path `), "sy's devloc connect took the relayed channel");
    t.match(jsonLines()[0], { channel: r.channel, role: 'responder', path: { kind: 'relay' } }, "and so did pr's");
    // A stream in both directions while the NAT changes under it.
    const marker = 'UPGRADE-PLAINTEXT-';
    let n = 0;
    let m = 0;
    let stop = false;
    const stream = (async () => {
      while (!stop) {
        await y.control('channel.send', { channel: r.channel, text: `${marker}u${++n}` });
        await p.control('channel.send', { channel: r.channel, text: `${marker}d${++m}` });
        await new Promise((res) => setTimeout(res, 20));
      }
    })();
    /** Upstream (sy to pr) as pr's devloc connect --json printed it; downstream as sy's printed it (`< text`). */
    const upTexts = (): string[] => jsonLines().filter((l) => typeof l['text'] === 'string').map((l) => l['text'] as string);
    const downTexts = (): string[] => textLines().filter((l) => l.startsWith('< ')).map((l) => l.slice(2));
    await eventually(async () => upTexts().length >= 5 && downTexts().length >= 5, 30_000, 'the stream through the relay');
    // Relax pr's NAT to a full cone: every inbound UDP datagram goes to the host.
    lab.nft(routerOf(lab, 'pr'), 'table ip cone {\n  chain pre { type nat hook prerouting priority dstnat; policy accept; iifname "wan" meta l4proto udp dnat to 10.77.5.2; }\n}\n');
    await eventually(async () => {
      const [cy, cp] = [channelOf(await y.status(), r.channel), channelOf(await p.status(), r.channel)];
      return cy?.path && cy.path.kind !== 'relay' && cp?.path && cp.path.kind !== 'relay';
    }, 90_000, 'both ends on a direct path');
    const movedAt = n;
    await eventually(async () => n >= movedAt + 20, 30_000, 'more of the stream on the direct path');
    stop = true;
    await stream;
    await eventually(async () => upTexts().length >= n && downTexts().length >= m, 30_000, 'the rest of the stream at both devloc connect');
    t.same(upTexts(), Array.from({ length: n }, (_, i) => `${marker}u${i + 1}`), `all ${n} upstream messages once, in order`);
    t.same(downTexts(), Array.from({ length: m }, (_, i) => `${marker}d${i + 1}`), `all ${m} downstream messages once, in order`);
    t.notOk(textLines().some((l) => /^\(\d+ messages? lost\)$/.test(l)) || jsonLines().some((l) => 'lost' in l), 'no loss reported');
    // The upgrade as devloc(1) says it is printed: a line in text, {"path", "previous"} in JSON.
    t.ok(textLines().some((l) => /^path upgraded: relay \S+ -> direct \S+ \(.+\)$/.test(l)), `sy's devloc connect printed the upgrade: ${JSON.stringify(textLines().filter((l) => l.startsWith('path ')))}`);
    const change = jsonLines().find((l) => 'previous' in l) as { path?: { kind: string; addr: string }; previous?: { kind: string } } | undefined;
    t.equal(change?.previous?.kind, 'relay', `pr's devloc connect --json printed the change from the relay: ${JSON.stringify(change)}`);
    t.ok(change?.path && change.path.kind !== 'relay', 'to a direct path');
    const ey = channelOf(await y.status(), r.channel)!;
    t.ok(ey.stats.upgrades >= 1, 'an upgrade counted');
    t.ok((await y.status()).relayCounters.upgrades >= 1, 'and in the agent counters');
    t.ok(await metric(y, sy, 'devloc_agent_relay_upgrades') >= 1, 'and in its metrics');
    const allocatedOn = ['r1', 'r2'].indexOf((await y.status()).relayAllocation?.relay ?? '');
    t.ok(allocatedOn >= 0, 'sy has its allocation on one of the relays');
    // End sy's input: its devloc connect closes the channel, and pr's ends with it.
    cliY.end();
    const ry = await cliY.done;
    t.equal(ry.status, 0, ry.stderr);
    await eventually(async () => jsonLines().some((l) => 'closed' in l), 30_000, "pr's devloc connect saw the close");
    cliP.end();
    const rp = await cliP.done;
    t.equal(rp.status, 0, rp.stderr);
    const bytes = await Promise.all(pcaps.map((c, i) => c.stop(i === allocatedOn ? ey.stats.relayedBytes : 0)));
    t.ok(bytes[allocatedOn]!.length >= ey.stats.relayedBytes, `the relay carried the channel before the upgrade (${bytes[allocatedOn]!.length} bytes captured, ${ey.stats.relayedBytes} relayed)`);
    t.ok(bytes.every((b) => b.indexOf(marker) === -1), 'no plaintext in anything either relay saw');
  });

  await t.test('the relay SIGKILLed mid-channel: the channel moves to the second relay, nothing lost or duplicated, only ciphertext at either relay; then none is left', async (t) => {
    // Captured on both relays' interfaces (the first one's goes on after its coturn died: what
    // was sent into the dead relay is captured too).
    const pcaps = await Promise.all(relayNs.map((ns, i) => capture(ns, 'eth0', path.join(st.dir, `relay${i}-kill.pcap`))));
    t.teardown(() => pcaps.forEach((c) => c.abort()));
    // devloc connect --ping closed the earlier channel: a new one, relayed through r1.
    const r = (await x1.control('connect', { peer: s2.locatorId })) as ConnectResult;
    symChannel = r.channel;
    t.equal(r.path?.kind, 'relay');
    t.equal((await x1.status()).relayAllocation?.relay, 'r1');
    await eventually(async () => channelOf(await x2.status(), symChannel)?.state === 'open', 30_000, 'sym2 has it open');
    const marker = 'KILL-PLAINTEXT-';
    const up: string[] = [];
    const down: string[] = [];
    const send = async (k: number): Promise<void> => {
      for (let i = 0; i < k; i++) {
        const u = `${marker}u${up.length + 1}`;
        const d = `${marker}d${down.length + 1}`;
        up.push(u);
        down.push(d);
        await x1.control('channel.send', { channel: symChannel, text: u });
        await x2.control('channel.send', { channel: symChannel, text: d });
      }
    };
    await send(10);
    const pid = relays[0]!.pid();
    t.ok(pid, 'the relay runs');
    process.kill(pid!, 'SIGKILL');
    // Into the dead relay (neither end knows yet): kept, and sent again after the move.
    await send(10);
    const moved = await eventually(async () => {
      await renewLease(x1, symChannel);
      const c = channelOf(await x1.status(), symChannel);
      if (c && c.state !== 'open') throw new Error(`the channel closed instead of moving: ${c.reason}`);
      return c && c.stats.relayMoves >= 1 && c.path?.kind === 'relay' ? c : null;
    }, 180_000, 'the channel moved to the second relay');
    t.equal(moved.state, 'open', 'still open: moved, not closed');
    t.equal((await x1.status()).relayAllocation?.relay, 'r2', 'allocated on the second relay');
    const atX2 = await eventually(async () => {
      await renewLease(x1, symChannel);
      const c = channelOf(await x2.status(), symChannel);
      if (c && c.state !== 'open') throw new Error(`sym2 closed instead of moving: ${c.reason}`);
      return c?.path?.addr.startsWith(`${relayIps[1]}:`) ? c : null;
    }, 60_000, "sym2 sends to sym1's relayed address on the second relay");
    t.equal(atX2.path?.kind, 'relay');
    await send(10);
    const [gotUp, gotDown] = await Promise.all([receiveAll(x2, symChannel, up.length), receiveAll(x1, symChannel, down.length)]);
    t.same(gotUp.texts, up, `all ${up.length} messages once and in order across the move`);
    t.same(gotDown.texts, down, 'and the other way');
    t.equal(gotUp.lost + gotDown.lost, 0, 'no loss reported');
    // 20 messages each way through r1 (10 of them into the dead relay), 10 through r2 at least.
    const bytes = await Promise.all(pcaps.map((c, i) => c.stop((i === 0 ? 40 : 20) * 60)));
    bytes.forEach((b, i) => t.ok(b.length >= (i === 0 ? 40 : 20) * 60, `relay r${i + 1}'s interface carried the channel (${b.length} bytes captured)`));
    t.ok(bytes.every((b) => b.indexOf(marker) === -1), 'no plaintext in anything either relay saw');
    // The second relay dies too: no relay is left, and both ends say so.
    process.kill(relays[1]!.pid()!, 'SIGKILL');
    const closed = await eventually(async () => {
      await renewLease(x1, symChannel);
      const c = channelOf(await x1.status(), symChannel);
      return c && c.state !== 'open' ? c : null;
    }, 180_000, 'the channel reports the lost relay');
    t.match(closed.reason, /^RELAY_LOST: relay r2 lost .*no relay left/, closed.reason ?? '');
    const endX2 = await eventually(async () => {
      const c = channelOf(await x2.status(), symChannel);
      return c && c.state !== 'open' ? c : null;
    }, 180_000, 'sym2 too');
    t.match(endX2.reason, /^RELAY_LOST: /);
  });
});

