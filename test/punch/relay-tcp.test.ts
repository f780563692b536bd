// Relayed channels for a terminal whose network lets no UDP through but to the devloc services
// (issue 17 item 2 and its test list: "a terminal whose router drops all UDP except to the
// relay's TCP/TLS port"). The protocol is UDP-only, so the services (authd, locatord and its
// reflector) stay reachable over UDP; the router drops every other UDP datagram from its LAN, to
// peers and to the relay's UDP port alike. A real coturn with TLS on the lab's public segment,
// registered with its UDP, TCP and TLS addresses (`devloc relay add --udp --tcp --tls`).
//
// - UDP blocked: the agent's allocation over UDP gets no answer, it falls back to TCP (the UDP
//   attempt is seen dropped at the router), the channel to a symmetric peer is relayed over TCP,
//   every message arrives once and in order both ways, and captures on the relay's interface
//   (its TCP port, and UDP) hold none of the plaintext; devloc status and devloc connect show "tcp".
// - UDP and the relay's TCP port blocked: the same over TLS (the self-signed certificate of the
//   lab's relay is trusted through NODE_EXTRA_CA_CERTS, as an operator's CA would be).
// - matching (issue 17 item 5): the terminal whose allocation needed TCP submits as udp-blocked
//   with a TCP/TLS relay; paired with a port-restricted terminal (a direct pair by their
//   classifications) it is matched with its path to the host = relay.
// - the knowledge lasts while the situation does: bt's NAT is renumbered with UDP still blocked,
//   bt checks again at once (a new allocation, UDP first, then TCP from the new address) and a
//   peer's channel toward it still opens through its relay; renumbered again with UDP let
//   through, the check allocates over UDP and bt is no longer submitted as udp-blocked.
import { chmodSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Test } from 'tap';
import t from 'tap';
import type { ConnectResult } from '../../src/agent/channel-control.js';
import type { ChannelSummary } from '../../src/agent/channel.js';
import type { MatchResult } from '../../src/agent/match.js';
import { controlRequest } from '../../src/agent/control-client.js';
import { formatStatus } from '../../src/cli/commands/agentctl.js';
import { haveNetns, Lab, PUBLIC_NET } from '../agent/netns.js';
import type { AgentProc } from '../agent/stack.js';
import { eventually } from '../agent/stack.js';
import { devloc, devlocAsync } from '../cli/fixtures/cli.js';
import { needs } from '../ops/tools.js';
import { haveCoturn } from '../turn/coturn.js';
import { capture, channelOf, natHost, readyWithRelays, receiveAll, routerOf } from './lab.js';

const missing = haveNetns();
if (missing && process.env['CI']) t.fail(`cannot run: ${missing}`);
const skip = missing && !process.env['CI'] ? missing : needs('turnserver', haveCoturn).skip;

/** Generous: the UDP attempt alone takes 7.75 s, TLS after TCP 15.5 s, and CI keeps both cores busy. */
const CONNECT_TIMEOUT_MS = 120_000;

t.test('relayed channels over TCP and TLS when UDP is blocked', { skip }, async (t) => {
  const lab = new Lab(t);
  const relayIp = `${PUBLIC_NET}.20`;
  const relayNs = lab.host('rl0', relayIp);
  const services = `{ ${PUBLIC_NET}.1, ${PUBLIC_NET}.2 }`;
  /** A port-restricted NAT whose router forwards UDP to the services only (and, with `tcpBlocked`, no TCP to the relay's TCP port). */
  const blockedHost = (short: string, outside: string, lan: number, tcpBlocked: boolean): string => {
    const host = natHost(lab, short, outside, lan, 'eim');
    lab.nft(routerOf(lab, short), [
      'table inet udpblock {',
      '  chain blockudp { type filter hook forward priority 0; policy accept;',
      `    iifname "lan" ip daddr ${relayIp} meta l4proto udp counter drop`,
      ...(tcpBlocked ? [`    iifname "lan" ip daddr ${relayIp} tcp dport 3478 counter drop`] : []),
      `    iifname "lan" meta l4proto udp ip daddr != ${services} drop`,
      '  }',
      '}', '',
    ].join('\n'));
    return host;
  };
  /** Packets the router dropped on the way to the relay: [UDP, TCP to its TCP port]. */
  const droppedToRelay = (short: string): number[] =>
    [...lab.exec(routerOf(lab, short), 'nft', ['list', 'table', 'inet', 'udpblock']).matchAll(/counter packets (\d+)/g)].map((m) => Number(m[1]));
  const tcpOnly = blockedHost('bt', `${PUBLIC_NET}.17`, 7, false);
  const tlsOnly = blockedHost('bs', `${PUBLIC_NET}.18`, 8, true);
  const peerNs = natHost(lab, 'sy', `${PUBLIC_NET}.16`, 6, 'symmetric');
  const prNs = natHost(lab, 'pr', `${PUBLIC_NET}.15`, 5, 'eim');
  const r = await lab.relay(relayNs, relayIp, { tls: true });
  const s = await lab.stack({ reflectorAltIp: `${PUBLIC_NET}.2`, matchd: true });
  const st = s;
  const secretFile = path.join(st.dir, 'relay.secret');
  writeFileSync(secretFile, `${r.secret}\n`, { mode: 0o600 });
  chmodSync(secretFile, 0o400);
  const add = devloc(['relay', 'add', 'r1', '--state-dir', path.join(st.dir, 'authd-state'), '--udp', `${relayIp}:${r.port}`, '--tcp', `${relayIp}:${r.port}`,
    '--tls', `${relayIp}:${r.tlsPort!}`, '--secret-file', secretFile]);
  if (add.status !== 0) throw new Error(add.stderr);
  const caFile = path.join(st.dir, 'relay-ca.pem');
  writeFileSync(caFile, r.cert!);
  const env = { NODE_EXTRA_CA_CERTS: caFile };
  const [bt, bs, sy, pr] = await Promise.all([
    // A refresh every 2 s: bt notices its NAT's renumbering (the last subtest) soon.
    st.agent('bt', ['--max-refresh-s', '2'], { netns: tcpOnly, env }), st.agent('bs', [], { netns: tlsOnly, env }), st.agent('sy', [], { netns: peerNs }), st.agent('pr', [], { netns: prNs }),
  ]);
  const [sbt, , ssy, spr] = await Promise.all([
    readyWithRelays(bt, 'port-restricted', 1), readyWithRelays(bs, 'port-restricted', 1), readyWithRelays(sy, 'symmetric', 1), readyWithRelays(pr, 'port-restricted', 1),
  ]);
  const modeKnown = (asker: AgentProc) => eventually(async () => {
    const x = (await asker.control('lookup', { targets: [ssy.locatorId] })) as { netMode?: string }[];
    return x[0]?.netMode === 'symmetric';
  }, 30_000, `locatord has ${ssy.locatorId}'s mode`);
  const connect = (p: AgentProc): Promise<ConnectResult> => controlRequest(p.socket, 'connect', { peer: ssy.locatorId }, CONNECT_TIMEOUT_MS) as Promise<ConnectResult>;

  /** A relayed channel from `p` to sy: every message once and in order both ways; returns the channel. */
  const exchange = async (t: Test, p: AgentProc, transport: 'tcp' | 'tls', count: number): Promise<string> => {
    await modeKnown(p);
    // The two legs apart: this end's TCP/TLS connection to the relay's port, and the peer's UDP.
    const relayPort = transport === 'tcp' ? r.port : r.tlsPort!;
    const pcapStream = await capture(relayNs, 'eth0', path.join(st.dir, `relay-${transport}.pcap`), `tcp port ${relayPort}`);
    const pcapUdp = await capture(relayNs, 'eth0', path.join(st.dir, `relay-${transport}-udp.pcap`), 'udp');
    t.teardown(() => [pcapStream, pcapUdp].forEach((c) => c.abort()));
    const c = await connect(p);
    t.equal(c.path?.kind, 'relay', `relayed path ${c.path?.addr}`);
    t.equal(c.path?.transport, transport, `this end reaches the relay over ${transport}`);
    const atPeer = await eventually(async () => {
      const x = channelOf(await sy.status(), c.channel);
      return x?.state === 'open' ? x : null;
    }, 60_000, 'sy has the channel open');
    t.equal(atPeer.path?.kind, 'relay');
    t.equal(atPeer.path?.addr.split(':')[0], relayIp, "sy sends to the relayed address");
    t.equal(atPeer.path?.transport, 'udp', 'sy reaches it over UDP');
    const marker = `PLAINTEXT-${transport.toUpperCase()}-`;
    const sent = Array.from({ length: count }, (_, i) => `${marker}${i + 1}`);
    for (const m of sent) await p.control('channel.send', { channel: c.channel, text: m });
    const back = Array.from({ length: 10 }, (_, i) => `${marker}back${i + 1}`);
    for (const m of back) await sy.control('channel.send', { channel: c.channel, text: m });
    const got = await receiveAll(sy, c.channel, count);
    t.same(got.texts, sent, `all ${count}, once each, in order`);
    t.equal(got.lost, 0);
    const gotBack = await receiveAll(p, c.channel, 10);
    t.same(gotBack.texts, back, 'and the other way');
    t.equal(gotBack.lost, 0);
    const [stream, udp] = await Promise.all([pcapStream.stop((count + 10) * 60), pcapUdp.stop((count + 10) * 60)]);
    t.ok(stream.length >= (count + 10) * 60, `the relay's ${transport} port carried this end's leg (${stream.length} bytes captured)`);
    t.ok(udp.length >= (count + 10) * 60, `its UDP the peer's leg (${udp.length} bytes captured)`);
    t.equal(stream.indexOf(marker), -1, `no plaintext in anything the relay saw over ${transport}`);
    t.equal(udp.indexOf(marker), -1, 'nor over UDP');
    const ps = await p.status();
    t.equal(ps.relayAllocation?.transport, transport, `the allocation is over ${transport}`);
    t.equal(ps.relayCounters.relayedChannelsByTransport[transport], 1, `counted as relayed over ${transport}`);
    t.match(formatStatus(ps), new RegExp(`relay allocation:\\s+r1 ${transport} ${relayIp.replace(/\./g, '\\.')}:\\d+: relayed`), 'devloc status shows the transport');
    return c.channel;
  };

  /** sy opens a channel toward bt (a new one): relayed, open at both ends. */
  const openTowardBt = async (t: Test): Promise<{ c: ConnectResult; atBt: ChannelSummary }> => {
    const c = (await controlRequest(sy.socket, 'connect', { peer: sbt.locatorId, reuse: false }, CONNECT_TIMEOUT_MS).catch((e: Error) => {
      // What the relay and sy saw, for the failure's report.
      t.comment(r.log().slice(-6000));
      for (const l of sy.lines.slice(-40)) t.comment(JSON.stringify(l));
      throw e;
    })) as ConnectResult;
    t.equal(c.path?.kind, 'relay', `relayed path ${c.path?.addr}`);
    const atBt = await eventually(async () => {
      const x = channelOf(await bt.status(), c.channel);
      return x?.state === 'open' ? x : null;
    }, 60_000, 'bt has the channel open');
    return { c, atBt };
  };

  await t.test('UDP blocked: allocated over TCP after the UDP attempt, relayed channel over TCP', async (t) => {
    const channel = await exchange(t, bt, 'tcp', 100);
    t.ok(droppedToRelay('bt')[0]! >= 1, `the UDP allocation attempt was dropped at the router (${droppedToRelay('bt')[0]} datagrams)`);
    // devloc connect on top (the open channel is reused): the path line names the transport.
    const cli = await devlocAsync(['connect', ssy.locatorId!, '--ping', '2', '--interval', '100', '--socket', bt.socket]);
    t.equal(cli.status, 0, cli.stderr);
    const lines = cli.stdout.trim().split('\n');
    t.match(lines[0], new RegExp(`channel ${channel}, relayed path \\S+ \\(relay over tcp, rtt`), 'the path line names the transport');
    t.match(lines[1], /^ping 1: rtt \S+ ms via relay \S+ \(relay over tcp\)$/, 'and so do the pings');
  });

  await t.test('a channel the peer opens toward the UDP-blocked terminal: it answers through its relay', async (t) => {
    // bt learnt above that UDP does not reach the relay: on sy's INTRO it re-introduces the
    // channel with its relayed address (INTRODUCE resumes), which sy punches over UDP.
    const { c, atBt } = await openTowardBt(t);
    t.equal(atBt.role, 'responder', 'opened by the peer');
    t.equal(atBt.path?.transport, 'tcp', 'bt answers through its relay, over TCP');
    const sent = Array.from({ length: 20 }, (_, i) => `to-bt-${i + 1}`);
    for (const m of sent) await sy.control('channel.send', { channel: c.channel, text: m });
    const back = Array.from({ length: 20 }, (_, i) => `from-bt-${i + 1}`);
    for (const m of back) await bt.control('channel.send', { channel: c.channel, text: m });
    const got = await receiveAll(bt, c.channel, 20);
    t.same(got.texts, sent, 'all 20, once each, in order');
    const gotBack = await receiveAll(sy, c.channel, 20);
    t.same(gotBack.texts, back, 'and the other way');
    await sy.control('channel.close', { channel: c.channel });
  });

  await t.test('UDP and the relay\'s TCP port blocked: relayed channel over TLS', async (t) => {
    await exchange(t, bs, 'tls', 50);
    const [udp, tcp] = droppedToRelay('bs');
    t.ok(udp! >= 1 && tcp! >= 1, `UDP (${udp}) and TCP (${tcp}) to the relay were tried and dropped first`);
  });

  await t.test('matching: the terminal that needed TCP is submitted udp-blocked and matched through its relay', async (t) => {
    // bt and pr are both port-restricted by classification (a direct pair); what bt's allocation
    // learnt (no UDP to the relay) makes it udp-blocked at matchd, reachable through the relay only.
    const submit = (p: AgentProc) => controlRequest(p.socket, 'match.submit', { mediaId: 'udp-blocked', maxWaitS: 60, wait: true }, 90_000) as Promise<MatchResult>;
    const [rb, rp] = await Promise.all([submit(bt), submit(pr)]);
    t.equal(rb.state, 'matched', rb.reason ?? '');
    t.equal(rp.state, 'matched');
    t.equal(rb.hostId, spr.locatorId, 'pr, which sends UDP, hosts');
    t.equal(rb.path, 'relay', 'bt reaches the host through the relay');
    t.equal(rb.members!.find((m) => m.self)!.netMode, 'udp-blocked', 'declared udp-blocked');
    t.equal(rp.members!.find((m) => m.id === sbt.locatorId)!.path, 'relay', "and so it is in the host's result");
  });

  await t.test('UDP blocked is known while it lasts: re-checked when the address changes', async (t) => {
    const router = routerOf(lab, 'bt');
    const renumber = (from: string, to: string): void => {
      lab.exec(router, 'sysctl', ['-qw', 'net.ipv4.conf.wan.promote_secondaries=1']);
      lab.ip(router, ['addr', 'add', `${to}/24`, 'dev', 'wan']);
      lab.ip(router, ['addr', 'del', `${from}/24`, 'dev', 'wan']);
    };
    const rechecks = (): number => bt.lines.filter((l) => l['msg'] === 'address changed: checking again whether UDP reaches the relay').length;
    /** bt's allocation made from `ip` (the relay sees it there), over `transport`. */
    const allocatedFrom = (ip: string, transport: string) => eventually(async () => {
      const a = (await bt.status()).relayAllocation;
      return a?.mapped?.startsWith(`${ip}:`) && a.transport === transport ? a : null;
    }, CONNECT_TIMEOUT_MS, `bt allocated from ${ip} over ${transport}`).catch(async (e: Error) => {
      t.comment(JSON.stringify((await bt.status()).relayAllocation));
      for (const l of bt.lines) if (/relay|address|regist/i.test(String(l['msg']))) t.comment(JSON.stringify(l));
      throw e;
    });
    const RENUMBERED = `${PUBLIC_NET}.27`;
    renumber(`${PUBLIC_NET}.17`, RENUMBERED);
    await allocatedFrom(RENUMBERED, 'tcp');
    const first = rechecks();
    t.ok(first >= 1, 'the address change made bt check again');
    // Still UDP-blocked: a peer's channel toward it opens through its relay, as before.
    const { c, atBt } = await openTowardBt(t);
    t.equal(atBt.path?.transport, 'tcp', 'bt answers through its relay, over TCP, from its new address');
    await sy.control('channel.send', { channel: c.channel, text: 'after-renumbering' });
    t.same((await receiveAll(bt, c.channel, 1)).texts, ['after-renumbering']);
    await sy.control('channel.close', { channel: c.channel });
    // The network changes: UDP goes through, and the address changes with it.
    lab.exec(router, 'nft', ['delete', 'table', 'inet', 'udpblock']);
    const OPEN = `${PUBLIC_NET}.28`;
    renumber(RENUMBERED, OPEN);
    await allocatedFrom(OPEN, 'udp');
    t.ok(rechecks() > first, 'checked again');
    const submit = (p: AgentProc) => controlRequest(p.socket, 'match.submit', { mediaId: 'udp-open-again', maxWaitS: 60, wait: true }, 90_000) as Promise<MatchResult>;
    const [rb] = await Promise.all([submit(bt), submit(pr)]);
    t.equal(rb.state, 'matched', rb.reason ?? '');
    t.not(rb.members!.find((m) => m.self)!.netMode, 'udp-blocked', 'no longer submitted as udp-blocked');
  });
});
