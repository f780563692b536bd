// Real NATs for the peer-connection tests, built on test/agent/netns.ts (same address plan:
// 198.51.100.0/24 public segment, 10.77.x.0/24 behind NATs; nothing routes anywhere else).
//
// Each NAT router here also has the firewall every home router has: new connections arriving
// on its WAN side for the router itself are dropped (nftables `ct state new drop` on input;
// nothing unsolicited is forwarded anyway, as there is no port forwarding). Without it, a
// datagram of the peer's that reaches the router before our own PUNCH went out is delivered
// locally, gets a conntrack entry, and that entry makes masquerade pick another port for our
// PUNCH (the tuple is taken): Linux masquerade without a firewall turns into a port-changing NAT
// for whichever side is slower, and two of them can only punch if the first datagrams cross in
// flight. With the firewall the early datagram leaves no trace (conntrack entries of dropped
// packets are never confirmed), as on real routers (OpenWrt's wan zone rejects input).
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { AgentStatus } from '../../src/agent/agent.js';
import type { ChannelSummary } from '../../src/agent/channel.js';
import type { Lab } from '../agent/netns.js';
import { PUBLIC_NET } from '../agent/netns.js';
import type { AgentProc, Stack } from '../agent/stack.js';
import { eventually } from '../agent/stack.js';
import { devloc } from '../cli/fixtures/cli.js';
import type { Coturn } from '../turn/coturn.js';

/** What the control command channel.recv answers. */
export interface Recv {
  messages: { n: number; text: string }[];
  lost: number;
  state: string;
  reason?: string;
}

/** Receive at `p` on `channel` until `count` messages came; returns their texts and the loss reported. */
export async function receiveAll(p: AgentProc, channel: string, count: number, ms = 60_000): Promise<{ texts: string[]; lost: number }> {
  const texts: string[] = [];
  let lost = 0;
  await eventually(async () => {
    const x = (await p.control('channel.recv', { channel, waitMs: 1000 })) as Recv;
    lost += x.lost;
    texts.push(...x.messages.map((m) => m.text));
    return texts.length >= count;
  }, ms, `${count} messages at ${p.name}`);
  return { texts, lost };
}

/**
 * Renew the lease of a channel the test opened with `connect` (devloc-agent(8)): without a
 * channel command naming it for a minute the agent closes it ("control client went away"), and
 * a test that only reads status meanwhile (a relay's loss takes about that long to find) loses it.
 */
export async function renewLease(p: AgentProc, channel: string): Promise<void> {
  await p.control('channel.recv', { channel, max: 0 });
}

/**
 * Capture on `dev` in namespace `ns` (null: the test's own namespace) into a pcap (`filter`: a
 * capture filter, default UDP); stop() resolves with the file's bytes, abort() (a teardown's)
 * ends a capture a failed test left running.
 * dumpcap itself (tshark's capture child, installed with it), not tshark: tshark can exit before
 * its dumpcap has flushed the file, and the test then read a file of a few packets.
 */
export async function capture(ns: string | null, dev: string, file: string, filter = 'udp'): Promise<{ stop: (minBytes?: number) => Promise<Buffer>; abort: () => void }> {
  const dumpcap = ['dumpcap', '-i', dev, '-f', filter, '-P', '-w', file, '-q'];
  const [cmd, ...args] = ns === null ? dumpcap : ['ip', 'netns', 'exec', ns, ...dumpcap];
  const p = spawn(cmd!, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  await new Promise<void>((resolve, reject) => {
    p.stderr!.setEncoding('utf8').on('data', (c: string) => {
      err += c;
      if (/Capturing on/.test(err)) resolve();
    });
    p.once('exit', () => reject(new Error(`dumpcap exited: ${err}`)));
  });
  const exited = new Promise<void>((resolve) => p.once('exit', () => resolve()));
  return {
    stop: async (minBytes = 0) => {
      // dumpcap reads the kernel's buffer in batches and stops at SIGINT without the rest: on a
      // loaded machine it had read nothing yet. Wait until the file holds what was sent.
      const deadline = Date.now() + 30_000;
      while (Date.now() < deadline && (existsSync(file) ? statSync(file).size : 0) < minBytes) await new Promise((r) => setTimeout(r, 200));
      p.kill('SIGINT');
      await exited;
      return readFileSync(file);
    },
    /** For a teardown: end the capture if a failed test never stopped it (a no-op after stop()). */
    abort: () => {
      if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    },
  };
}

/**
 * Wait until agent `q` is registered in mode `mode` with `relays` relays in its grant. authd
 * picks a new relay up within a second: an agent that authenticated before has fewer in its
 * grant, and authenticates again on SIGHUP (sent at most every 3 s).
 */
export function readyWithRelays(q: AgentProc, mode: string, relays: number, ms = 90_000): Promise<AgentStatus> {
  let hupAt = 0;
  return eventually(async () => {
    const x = await q.status();
    if (x.registered && x.relays.length < relays && Date.now() - hupAt > 3000) {
      hupAt = Date.now();
      q.proc.kill('SIGHUP');
    }
    return x.registered && x.netMode === mode && x.relays.length === relays ? x : null;
  }, ms, `${q.name} registered as ${mode} with ${relays} relay${relays === 1 ? '' : 's'}`);
}

/** The channel `id` in an agent's status. */
export const channelOf = (st: AgentStatus, id: string): ChannelSummary | undefined => st.channels.find((c) => c.channel === id);

export type NatKind = 'eim' | 'symmetric' | 'full-cone';

/** The router namespace of a NAT made by `lab.behindNat(short, ...)` or `sharedNat`. */
export const routerOf = (lab: Lab, short: string): string => lab.ns(`${short}r`);

/** Drop new connections from the WAN side to the router (see above). */
export function firewall(lab: Lab, router: string): void {
  lab.nft(router, [
    'table inet fw {',
    '  chain input { type filter hook input priority 0; policy accept; iifname "wan" ct state new drop; }',
    '}', '',
  ].join('\n'));
}

/** A host behind its own firewalled NAT; returns the host's namespace. */
export function natHost(lab: Lab, short: string, outside: string, lan: number, kind: NatKind): string {
  const host = lab.behindNat(short, outside, lan, kind);
  firewall(lab, routerOf(lab, short));
  return host;
}

/**
 * `count` hosts on one LAN (a bridge in the router) behind one firewalled NAT doing plain
 * masquerade (no hairpinning): 10.77.`lan`.2, .3, ... Returns their namespaces.
 */
export function sharedNat(lab: Lab, short: string, outside: string, lan: number, names: string[]): string[] {
  const router = lab.add(`${short}r`);
  lab.attach(router, 'wan', outside);
  lab.ip(router, ['link', 'add', 'lan', 'type', 'bridge']);
  lab.ip(router, ['addr', 'add', `10.77.${lan}.1/24`, 'dev', 'lan']);
  lab.ip(router, ['link', 'set', 'lan', 'up']);
  lab.exec(router, 'sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
  const hosts = names.map((name, i) => {
    const host = lab.add(name);
    const port = `${short}p${i}`;
    lab.ip(router, ['link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', host]);
    lab.ip(router, ['link', 'set', port, 'master', 'lan']);
    lab.ip(router, ['link', 'set', port, 'up']);
    lab.ip(host, ['addr', 'add', `10.77.${lan}.${i + 2}/24`, 'dev', 'eth0']);
    lab.ip(host, ['link', 'set', 'eth0', 'up']);
    lab.ip(host, ['route', 'add', 'default', 'via', `10.77.${lan}.1`]);
    return host;
  });
  lab.nft(router, `table ip nat {\n  chain post {\n    type nat hook postrouting priority srcnat; policy accept;\n    oifname "wan" masquerade\n  }\n}\n`);
  firewall(lab, router);
  return hosts;
}

/**
 * Count UDP datagrams crossing the public bridge between two public addresses (either way):
 * traffic that went terminal to terminal, not through locatord. Returns a reader.
 */
export function bridgeCounter(lab: Lab, name: string, a: string, b: string): () => number {
  lab.nft(lab.pub, [
    `table bridge ${name} {`,
    '  chain cnt { type filter hook forward priority 0; policy accept;',
    `    ip saddr ${a} ip daddr ${b} meta l4proto udp counter`,
    `    ip saddr ${b} ip daddr ${a} meta l4proto udp counter`,
    '  }',
    '}', '',
  ].join('\n'));
  return () => {
    const out = lab.exec(lab.pub, 'nft', ['list', 'table', 'bridge', name]);
    return [...out.matchAll(/counter packets (\d+)/g)].reduce((s, m) => s + Number(m[1]), 0);
  };
}

/** Count UDP datagrams delivered to the servers' address (locatord, authd, reflector) in the public namespace. */
export function serverCounter(lab: Lab, port: number): () => number {
  lab.nft(lab.pub, [
    'table inet servers {',
    `  chain in { type filter hook input priority 0; policy accept; ip daddr ${PUBLIC_NET}.1 udp dport ${port} counter; }`,
    '}', '',
  ].join('\n'));
  return () => {
    const out = lab.exec(lab.pub, 'nft', ['list', 'table', 'inet', 'servers']);
    return Number(/counter packets (\d+)/.exec(out)?.[1] ?? 0);
  };
}

/**
 * A host behind a NAT doing plain masquerade with NO firewall on the router (the pair of issue
 * 17: an early PUNCH of the peer's is delivered to the router itself and its conntrack entry
 * takes the tuple our PUNCH needs), one ISP hop away from the public segment (`isp`: that
 * router's address there). The router's UDP conntrack timeouts are `conntrackS` (default 3 s)
 * so that repeated attempts start from no state: `conntrackTo` says when they do.
 */
export function plainMasqueradeHost(lab: Lab, short: string, outside: string, lan: number, isp: string, conntrackS = 3): string {
  const host = lab.behindNat(short, outside, lan, 'eim', { isp });
  for (const k of ['nf_conntrack_udp_timeout', 'nf_conntrack_udp_timeout_stream']) lab.exec(routerOf(lab, short), 'sysctl', ['-qw', `net.netfilter.${k}=${conntrackS}`]);
  return host;
}

/** Conntrack entries of `router` that involve address `ip` (/proc/net/nf_conntrack lines). */
export function conntrackTo(lab: Lab, router: string, ip: string): string[] {
  const out = lab.exec(router, 'cat', ['/proc/net/nf_conntrack']);
  return out.split('\n').filter((l) => l.includes(`=${ip} `));
}

/** Register `relay` with the stack's authd as `name` (`devloc relay add`, its secret in a 0400 file). */
export function addRelay(st: Stack, name: string, relay: Coturn): void {
  const secretFile = path.join(st.dir, `${name}.secret`);
  writeFileSync(secretFile, `${relay.secret}\n`, { mode: 0o600 });
  chmodSync(secretFile, 0o400);
  const add = devloc(['relay', 'add', name, '--state-dir', path.join(st.dir, 'authd-state'), '--udp', `${relay.host}:${relay.port}`, '--secret-file', secretFile]);
  if (add.status !== 0) throw new Error(add.stderr);
}
