// Hole punching figures: for each NAT pairing, the time from `connect` to the first data
// acknowledged by the peer (connect + one ping over the new channel, through the agents' control
// sockets), median and 90th percentile over N tries, and the success rate. Real NATs in network
// namespaces (test/punch/lab.ts); needs root and nft.
//
//   npx tsx test/punch/bench.ts [--tries 20]     prints a table, writes bench-results/punch.json
//
// Every try is cold: the routers' UDP connection tracking times out after 4 s (assured) / 2 s,
// the agents refresh their registration every ~2 s (which keeps their locatord mapping), and
// consecutive tries are 5 s apart, so each try punches through NATs that have forgotten the last
// one. Pairings run in parallel, each with its own agents.
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { ConnectResult } from '../../src/agent/channel-control.js';
import { ControlError } from '../../src/agent/control-client.js';
import { root } from '../helpers/daemon.js';
import { haveNetns, Lab, PUBLIC_NET } from '../agent/netns.js';
import type { AgentProc, Stack, Teardown } from '../agent/stack.js';
import { eventually, stack } from '../agent/stack.js';
import { natHost, plainMasqueradeHost, routerOf, sharedNat } from './lab.js';

const triesArg = process.argv.indexOf('--tries');
const TRIES = triesArg > 0 ? Number(process.argv[triesArg + 1]) : 20;
const GAP_MS = 5000;

interface Pairing {
  name: string;
  /** What the connectivity matrix predicts. */
  expect: 'direct' | 'refused';
  a: AgentProc;
  b: AgentProc;
}

interface Result {
  pairing: string;
  expect: string;
  modes: string;
  tries: number;
  ok: number;
  refused: number;
  failed: number;
  medianMs: number | null;
  p90Ms: number | null;
  medianPunchMs: number | null;
  path: string;
  lastError: string | null;
}

const quantile = (xs: number[], q: number): number | null => {
  if (xs.length === 0) return null;
  const s = [...xs].sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
};

async function run(p: Pairing): Promise<Result> {
  const sa = await p.a.status();
  const sb = await p.b.status();
  const times: number[] = [];
  const punch: number[] = [];
  let refused = 0;
  let failed = 0;
  let lastError: string | null = null;
  let pathKind = '-';
  for (let i = 0; i < TRIES; i++) {
    const t0 = performance.now();
    try {
      const r = (await p.a.control('connect', { peer: sb.locatorId, reuse: false })) as ConnectResult;
      const ping = (await p.a.control('channel.ping', { channel: r.channel, timeoutMs: 2000 })) as { rttMs: number | null };
      const t1 = performance.now();
      if (ping.rttMs !== null) {
        times.push(t1 - t0);
        if (r.punchMs !== null) punch.push(r.punchMs);
        pathKind = r.path?.kind ?? '-';
      } else failed++;
      await p.a.control('channel.close', { channel: r.channel });
    } catch (err) {
      lastError = err instanceof ControlError ? `${err.code}: ${err.message}` : (err as Error).message;
      if (err instanceof ControlError && err.code === 'NO_DIRECT_PATH') {
        refused++;
        times.push(performance.now() - t0);
      } else failed++;
    }
    await new Promise((r) => setTimeout(r, GAP_MS));
  }
  const round = (x: number | null): number | null => (x === null ? null : Math.round(x * 10) / 10);
  return {
    pairing: p.name, expect: p.expect, modes: `${sa.netMode} / ${sb.netMode}`, tries: TRIES,
    ok: p.expect === 'direct' ? times.length : 0, refused, failed,
    medianMs: round(quantile(times, 0.5)), p90Ms: round(quantile(times, 0.9)), medianPunchMs: round(quantile(punch, 0.5)),
    path: pathKind, lastError,
  };
}

async function main(): Promise<void> {
  const missing = haveNetns();
  if (missing) throw new Error(`cannot run: ${missing}`);
  const cleanups: (() => unknown)[] = [];
  const t: Teardown = { teardown: (fn) => void cleanups.push(fn) };
  let s: Stack | undefined;
  try {
    const lab = new Lab(t, async () => { await s?.stopAll(); });
    const n = (i: number): string => `${PUBLIC_NET}.${i}`;
    const hosts = {
      e1: natHost(lab, 'e1', n(11), 1, 'eim'), e2: natHost(lab, 'e2', n(12), 2, 'eim'),
      c1: natHost(lab, 'c1', n(13), 3, 'full-cone'), e3: natHost(lab, 'e3', n(14), 4, 'eim'),
      o1: lab.host('o1', n(20)), e4: natHost(lab, 'e4', n(15), 5, 'eim'),
      y1: natHost(lab, 'y1', n(16), 6, 'symmetric'), c2: natHost(lab, 'c2', n(17), 7, 'full-cone'),
      y2: natHost(lab, 'y2', n(18), 8, 'symmetric'), e5: natHost(lab, 'e5', n(19), 9, 'eim'),
      y3: natHost(lab, 'y3', n(21), 10, 'symmetric'), y4: natHost(lab, 'y4', n(22), 11, 'symmetric'),
      // Plain masquerade, no router firewall, one ISP hop to the public segment (issue 17).
      m1: plainMasqueradeHost(lab, 'm1', n(24), 13, n(124), 2), m2: plainMasqueradeHost(lab, 'm2', n(25), 14, n(125), 2),
    };
    const [l1, l2] = sharedNat(lab, 'ln', n(23), 12, ['l1', 'l2']) as [string, string];
    for (const r of ['e1', 'e2', 'c1', 'e3', 'e4', 'y1', 'c2', 'y2', 'e5', 'y3', 'y4', 'ln']) {
      lab.exec(routerOf(lab, r), 'sysctl', ['-qw', 'net.netfilter.nf_conntrack_udp_timeout=2', 'net.netfilter.nf_conntrack_udp_timeout_stream=4']);
    }
    s = await stack(t, { netns: lab.pub, listen: n(1), reflectorAltIp: n(2) });
    const st = s;
    const names = [...Object.keys(hosts), 'l1', 'l2'];
    const nsOf: Record<string, string> = { ...hosts, l1, l2 };
    // A few at a time: each starts through tsx, which takes seconds of CPU.
    const agents: Record<string, AgentProc> = {};
    for (let i = 0; i < names.length; i += 4) {
      await Promise.all(names.slice(i, i + 4).map(async (k) => void (agents[k] = await st.agent(k, [], { netns: nsOf[k]! }))));
    }
    await Promise.all(Object.values(agents).map((a) => eventually(async () => {
      const x = await a.status();
      return x.registered && x.netMode !== 'unknown';
    }, 60_000, `${a.name} classified`)));
    // locatord must have the classified modes before the introductions.
    await new Promise((r) => setTimeout(r, 4000));
    const A = (k: string): AgentProc => agents[k]!;
    const pairings: Pairing[] = [
      { name: 'port-restricted <-> port-restricted (two EIM NATs)', expect: 'direct', a: A('e1'), b: A('e2') },
      { name: 'port-restricted <-> port-restricted (masquerade, no firewall)', expect: 'direct', a: A('m1'), b: A('m2') },
      { name: 'same NAT (LAN path)', expect: 'direct', a: A('l1'), b: A('l2') },
      { name: 'full-cone <-> port-restricted', expect: 'direct', a: A('c1'), b: A('e3') },
      { name: 'open <-> port-restricted', expect: 'direct', a: A('o1'), b: A('e4') },
      { name: 'symmetric <-> full-cone', expect: 'direct', a: A('y1'), b: A('c2') },
      { name: 'symmetric <-> port-restricted', expect: 'refused', a: A('y2'), b: A('e5') },
      { name: 'symmetric <-> symmetric', expect: 'refused', a: A('y3'), b: A('y4') },
    ];
    const started = Date.now();
    const results = await Promise.all(pairings.map(run));
    const rows = [['pairing', 'modes', 'expected', 'success', 'median ms', 'p90 ms', 'punch ms (agent)', 'path', 'last error']];
    for (const r of results) {
      rows.push([
        r.pairing, r.modes, r.expect,
        r.expect === 'direct' ? `${r.ok}/${r.tries}` : `refused ${r.refused}/${r.tries}`,
        String(r.medianMs ?? '-'), String(r.p90Ms ?? '-'), String(r.medianPunchMs ?? '-'), r.path, r.lastError ?? '',
      ]);
    }
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
    for (const r of rows) process.stdout.write(`${r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()}\n`);
    process.stdout.write(`(${TRIES} tries per pairing, ${GAP_MS / 1000} s apart, pairings in parallel; ${Math.round((Date.now() - started) / 1000)} s)\n`);
    const dir = path.join(root, 'bench-results');
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, 'punch.json'), JSON.stringify({ at: new Date().toISOString(), tries: TRIES, gapMs: GAP_MS, results }, null, 2) + '\n');
  } finally {
    for (const fn of cleanups.reverse()) await fn();
  }
}

main().catch((err: Error) => {
  process.stderr.write(`${err.stack ?? err.message}\n`);
  process.exit(1);
});
