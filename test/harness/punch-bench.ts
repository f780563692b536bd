// Hole punching figures: for each NAT pairing, the time from `connect` to the first data
// acknowledged by the peer (connect + one ping over the new channel, through the agents' control
// sockets), median and 90th percentile over N tries, and the success rate. Real NATs in network
// namespaces (test/punch/lab.ts); needs root and nft.
//
//   npx tsx test/harness/punch-bench.ts [--tries 20]     prints a table, writes bench-results/punch.json
//   npx tsx test/harness/punch-bench.ts --relays [--tries 10]
//       relayed vs direct (README "Relays"): two port-restricted NATs (direct; `--relay never`)
//       and two symmetric NATs (relayed at once through a real coturn on the public segment):
//       connect to first data acknowledged, ping RTT, and throughput (1000-byte messages sent
//       through the agents' control sockets, 8 at a time, until all arrived or were reported
//       lost), with the relayed/direct ratios of the same run; writes bench-results/relays.json.
//       Skipped, with one line, without root, ip netns, nft or turnserver.
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
import type { AgentProc, Teardown } from '../agent/stack.js';
import { eventually, withTeardown } from '../agent/stack.js';
import { haveCoturn } from '../turn/coturn.js';
import type { Recv } from '../punch/lab.js';
import { addRelay, channelOf, natHost, plainMasqueradeHost, routerOf, sharedNat } from '../punch/lab.js';

const triesArg = process.argv.indexOf('--tries');
const RELAYS = process.argv.includes('--relays');
const TRIES = triesArg > 0 ? Number(process.argv[triesArg + 1]) : RELAYS ? 10 : 20;
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

/** To one decimal (the tables' precision). */
const round = (x: number | null): number | null => (x === null ? null : Math.round(x * 10) / 10);

/** What a failed try reports: the control error's code, or the message. */
const errorText = (err: unknown): string => (err instanceof ControlError ? `${err.code}: ${err.message}` : (err as Error).message);

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
      lastError = errorText(err);
      if (err instanceof ControlError && err.code === 'NO_DIRECT_PATH') {
        refused++;
        times.push(performance.now() - t0);
      } else failed++;
    }
    await new Promise((r) => setTimeout(r, GAP_MS));
  }
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
  await withTeardown(async (t) => {
    const lab = new Lab(t);
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
    const s = await lab.stack({ reflectorAltIp: n(2) });
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
  });
}

interface PathResult {
  path: string;
  tries: number;
  ok: number;
  firstDataMedianMs: number | null;
  firstDataP90Ms: number | null;
  rttMedianMs: number | null;
  messagesPerS: number | null;
  lostPct: number | null;
  lastError: string | null;
}

/** Throughput: `count` messages of `size` bytes from a to b, `window` control requests at a time, until all arrived or were reported lost. */
async function throughput(a: AgentProc, b: AgentProc, channel: string, count = 1000, size = 1000, window = 8): Promise<{ perS: number; lost: number }> {
  const payload = Buffer.alloc(size, 0x61).toString('base64');
  let got = 0;
  let lost = 0;
  let sent = 0;
  const t0 = performance.now();
  const sender = (async () => {
    await Promise.all(Array.from({ length: window }, async () => {
      while (sent < count) {
        sent++;
        await a.control('channel.send', { channel, data: payload });
      }
    }));
  })();
  await eventually(async () => {
    const x = (await b.control('channel.recv', { channel, waitMs: 1000 })) as Recv;
    got += x.messages.length;
    lost += x.lost;
    return got + lost >= count || (sent >= count && x.messages.length === 0 && x.lost === 0 && got > 0);
  }, 120_000, 'the burst at the receiver');
  await sender;
  const seconds = (performance.now() - t0) / 1000;
  return { perS: got / seconds, lost: count - got };
}

async function runPath(label: string, a: AgentProc, b: AgentProc, peer: string): Promise<PathResult> {
  const first: number[] = [];
  const rtts: number[] = [];
  const rates: number[] = [];
  let lost = 0;
  let total = 0;
  let lastError: string | null = null;
  let kind = '-';
  for (let i = 0; i < TRIES; i++) {
    try {
      const t0 = performance.now();
      const r = (await a.control('connect', { peer, reuse: false })) as ConnectResult;
      const ping = (await a.control('channel.ping', { channel: r.channel, timeoutMs: 2000 })) as { rttMs: number | null };
      if (ping.rttMs === null) throw new Error('first ping unanswered');
      first.push(performance.now() - t0);
      kind = r.path?.kind ?? '-';
      for (let k = 0; k < 10; k++) {
        const p = (await a.control('channel.ping', { channel: r.channel, timeoutMs: 2000 })) as { rttMs: number | null };
        if (p.rttMs !== null) rtts.push(p.rttMs);
      }
      await eventually(async () => channelOf(await b.status(), r.channel)?.state === 'open', 30_000, 'the peer has it open');
      const tp = await throughput(a, b, r.channel);
      rates.push(tp.perS);
      lost += tp.lost;
      total += 1000;
      await a.control('channel.close', { channel: r.channel });
    } catch (err) {
      lastError = errorText(err);
    }
  }
  const rate = quantile(rates, 0.5);
  return {
    path: `${label} (${kind})`, tries: TRIES, ok: first.length,
    firstDataMedianMs: round(quantile(first, 0.5)), firstDataP90Ms: round(quantile(first, 0.9)), rttMedianMs: round(quantile(rtts, 0.5)),
    messagesPerS: round(rate), lostPct: total ? round((100 * lost) / total) : null, lastError,
  };
}

/** `--relays`: relayed vs direct on the same kind of pairing (see the top of the file). */
async function relays(): Promise<void> {
  const missing = haveNetns() ?? (haveCoturn ? null : 'needs turnserver (Debian package coturn)');
  if (missing) {
    process.stdout.write(`relays bench skipped: ${missing}\n`);
    return;
  }
  await withTeardown(async (t) => {
    const lab = new Lab(t);
    const n = (i: number): string => `${PUBLIC_NET}.${i}`;
    const hosts = { d1: natHost(lab, 'd1', n(11), 1, 'eim'), d2: natHost(lab, 'd2', n(12), 2, 'eim'), r1: natHost(lab, 'r1', n(13), 3, 'symmetric'), r2: natHost(lab, 'r2', n(14), 4, 'symmetric') };
    const relay = await lab.relay(lab.host('rl', n(20)), n(20));
    const s = await lab.stack({ reflectorAltIp: n(2) });
    const st = s;
    addRelay(st, 'r1', relay);
    const agents: Record<string, AgentProc> = {};
    for (const [k, ns] of Object.entries(hosts)) agents[k] = await st.agent(k, k === 'd1' ? ['--relay', 'never'] : [], { netns: ns });
    // authd picks a new relay up within a second: one that authenticated before gets it on SIGHUP.
    await Promise.all(Object.values(agents).map((a) => eventually(async () => {
      const x = await a.status();
      if (x.registered && x.relays.length === 0) a.proc.kill('SIGHUP');
      return x.registered && x.netMode !== 'unknown' && x.relays.length > 0;
    }, 90_000, `${a.name} classified with the relay`)));
    await new Promise((r) => setTimeout(r, 4000));
    const peer = async (k: string): Promise<string> => (await agents[k]!.status()).locatorId!;
    // One after the other: the two paths must not share the CPU while measured.
    const direct = await runPath('direct', agents['d1']!, agents['d2']!, await peer('d2'));
    const relayed = await runPath('relayed', agents['r1']!, agents['r2']!, await peer('r2'));
    const ratio = (x: number | null, y: number | null): string => (x === null || y === null || y === 0 ? '-' : (x / y).toFixed(2));
    const rows = [['path', 'ok', 'connect->first data median ms', 'p90 ms', 'rtt median ms', 'messages/s (1000 B)', 'lost %', 'last error']];
    for (const r of [direct, relayed]) {
      rows.push([r.path, `${r.ok}/${r.tries}`, String(r.firstDataMedianMs ?? '-'), String(r.firstDataP90Ms ?? '-'), String(r.rttMedianMs ?? '-'), String(r.messagesPerS ?? '-'), String(r.lostPct ?? '-'), r.lastError ?? '']);
    }
    rows.push(['relayed / direct', '', ratio(relayed.firstDataMedianMs, direct.firstDataMedianMs), ratio(relayed.firstDataP90Ms, direct.firstDataP90Ms), ratio(relayed.rttMedianMs, direct.rttMedianMs), ratio(relayed.messagesPerS, direct.messagesPerS), '', '']);
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
    for (const r of rows) process.stdout.write(`${r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()}\n`);
    process.stdout.write(`(${TRIES} tries per path, one path after the other; throughput through the control sockets, 8 requests in flight)\n`);
    const dir = path.join(root, 'bench-results');
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, 'relays.json'), JSON.stringify({ at: new Date().toISOString(), tries: TRIES, results: [direct, relayed] }, null, 2) + '\n');
  });
}

(RELAYS ? relays() : main()).catch((err: Error) => {
  process.stderr.write(`${err.stack ?? err.message}\n`);
  process.exit(1);
});
