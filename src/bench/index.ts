// `npm run bench [-- --seconds N] [--only name,...] [--json FILE] [--csv FILE] [--list]`
//
// Runs the sections below in order, the echo baseline always first, and prints one table in
// which every throughput is also given as a ratio of that baseline (measured in the same run,
// on the same machine: the ratio is what carries over to other machines). Results go to
// bench-results/latest.json and latest.csv (and --json / --csv if given).
//
// A section is { name, doc, run(ctx) => rows }. Adding one is one entry in `sections`.
import { accessSync, constants, mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runBaseline } from './baseline.js';
import { runCodec } from './codec.js';
import { runTransport } from './transport.js';
import type { BenchContext, BenchResult, Section } from './types.js';
import { isThroughput } from './types.js';

/** `cmd` is an executable somewhere on the PATH. */
function onPath(cmd: string): boolean {
  return (process.env['PATH'] ?? '').split(path.delimiter).some((d) => {
    try {
      accessSync(path.join(d || '.', cmd), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

const sections: Section[] = [
  { name: 'baseline', doc: 'bare node:dgram echo server in a child process, 2 load-generator processes flat out', run: runBaseline },
  { name: 'transport', doc: 'DatagramServer with sessions and no-op handlers: unauthenticated and session requests', run: runTransport },
  {
    name: 'server-cpu',
    doc: 'DatagramServer.receive() in-process with a stub socket, per CPU second (no syscalls; steady under machine load)',
    run: async (ctx) => {
      const { runServerMicro } = await import('./server-micro.js');
      const r = await runServerMicro(ctx.seconds);
      return [
        { section: 'server-cpu', name: 'receive() REFLECT 64 B, no socket', value: r.reflectPerS, unit: 'req/CPU-s' },
        { section: 'server-cpu', name: 'receive() session REFRESH, no socket', value: r.refreshPerS, unit: 'req/CPU-s' },
      ];
    },
  },
  { name: 'codec', doc: 'encode/decode per message type, tickets, session MAC, X25519, auth open, Ed25519 node:crypto vs @noble/curves', run: runCodec },
  {
    name: 'authd',
    doc: 'devloc-authd: full auth exchanges/s on loopback; enrollment import records/s (100k records)',
    run: async (ctx) => {
      const { benchAuthd } = await import('../authd/bench.js');
      const r = await benchAuthd({ seconds: ctx.seconds, enrollRecords: 100_000 });
      return [
        { section: 'authd', name: `AUTH_REQUEST -> grant (${r.concurrency} outstanding)`, value: r.authPerS, unit: 'req/s', latency: { p50Ms: r.authLatencyP50Ms, p99Ms: r.authLatencyP99Ms }, extra: { failures: r.authFailures } },
        { section: 'authd', name: `enroll import (${r.enrollRecords} records)`, value: r.enrollRecordsPerS, unit: 'records/s' },
        { section: 'authd', name: 're-enroll, nothing changed', value: r.reenrollRecordsPerS, unit: 'records/s' },
      ];
    },
  },
  {
    name: 'locatord',
    doc: 'devloc-locatord child process: first registrations, refreshes, queries; table memory and sweep (200k entries)',
    run: async (ctx) => {
      const { benchLocatordThroughput, benchTable } = await import('../locatord/bench.js');
      const r = await benchLocatordThroughput({ seconds: ctx.seconds, sessionsPerWorker: 500 });
      const tb = await benchTable(200_000);
      const s = 'locatord';
      return [
        { section: s, name: 'REGISTER opening a session (ticket + X25519)', value: r.firstRegistrationsPerS, unit: 'req/s' },
        { section: s, name: 'REFRESH', value: r.refreshPerS, unit: 'req/s', extra: { ownEchoRatio: r.refreshRatio, lost: r.lost } },
        { section: s, name: `QUERY_ADDR (${r.idsPerQuery} IDs)`, value: r.queryPerS, unit: 'req/s', extra: { idsPerS: r.queryIdsPerS, ownEchoRatio: r.queryRatio } },
        { section: s, name: `table heap per terminal (${tb.entries} entries)`, value: tb.heapBytesPerEntry, unit: 'B' },
        { section: s, name: 'expiry sweep, half the table at once', value: tb.sweepExpireHalfMs, unit: 'ms', extra: { expired: tb.expired, usPerExpired: tb.sweepUsPerExpired } },
      ];
    },
  },
  {
    name: 'scale',
    doc: '1 instance embedded vs 1 and 2 instances on Redis: refresh/s and query/s (x echo), --seconds/3 each; Redis memory per registered terminal (skipped without redis-server)',
    run: async (ctx) => {
      const s = 'scale';
      // Optional dependency: the section says it was skipped rather than failing the run.
      if (!onPath('redis-server')) {
        ctx.log('scale: redis-server not on PATH, skipped');
        return [{ section: s, name: 'skipped: redis-server not on PATH', value: 0, unit: 'skipped' }];
      }
      const { benchScale } = await import('../locatord/scale-bench.js');
      // Three daemons, each measured twice: a third of --seconds per measurement (at least 1 s),
      // and fewer sessions and registrations than the locatord section, to stay ~20 s at --seconds 3.
      const r = await benchScale({ seconds: Math.max(1, ctx.seconds / 3), sessionsPerWorker: 250, redisEntries: 20_000 });
      const rows: BenchResult[] = [];
      for (const [label, x] of [['1 embedded', r.embedded], ['1 on Redis', r.redis1], ['2 on Redis', r.redis2]] as const) {
        rows.push({ section: s, name: `REFRESH, ${label}`, value: x.refreshPerS, unit: 'req/s', extra: { ownEchoRatio: x.refreshRatio, lost: x.lost } });
        rows.push({ section: s, name: `QUERY_ADDR (${r.idsPerQuery} IDs), ${label}`, value: x.queryPerS, unit: 'req/s', extra: { ownEchoRatio: x.queryRatio } });
      }
      rows.push({ section: s, name: `Redis memory per terminal (${r.redisEntries} entries)`, value: r.redisBytesPerTerminal, unit: 'B', extra: { presenceValueBytes: r.presenceValueBytes } });
      return rows;
    },
  },
  {
    name: 'matchd',
    doc: 'matching engine in-process: matches/s with 20k waiting, memory per request, steady-state latency',
    run: async (ctx) => {
      const { benchMatchd } = await import('../matchd/bench.js');
      const r = await benchMatchd({ waiting: 20_000, matches: 5_000, steadySeconds: ctx.seconds });
      const s = 'matchd';
      return [
        { section: s, name: `matches formed (${r.waiting} waiting)`, value: r.matchesPerS, unit: 'ops/s' },
        { section: s, name: 'submits while filling the pool', value: r.fillSubmitsPerS, unit: 'ops/s' },
        { section: s, name: 'heap per waiting request', value: r.bytesPerWaitingRequest, unit: 'B' },
        {
          section: s, name: `submit -> result at ${r.steady.ratePerS}/s per side`, value: r.steady.matched / Math.max(1e-9, r.steady.seconds), unit: 'ops/s',
          latency: { p50Ms: r.steady.latencyP50Ms, p99Ms: r.steady.latencyP99Ms, maxMs: r.steady.latencyMaxMs }, extra: { matchedOnSubmit: r.steady.matchedOnSubmit },
        },
      ];
    },
  },
];

interface Args {
  seconds: number;
  only?: string[];
  json?: string;
  csv?: string;
  list: boolean;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { seconds: 3, list: false };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!;
    const v = (): string => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${k} needs a value`);
      return x;
    };
    if (k === '--seconds') a.seconds = Number(v());
    else if (k === '--only') a.only = v().split(',').map((s) => s.trim()).filter(Boolean);
    else if (k === '--json') a.json = v();
    else if (k === '--csv') a.csv = v();
    else if (k === '--list') a.list = true;
    else if (k === '-h' || k === '--help') {
      process.stdout.write('usage: npm run bench -- [--seconds N] [--only section,...] [--json FILE] [--csv FILE] [--list]\n');
      process.exit(0);
    } else throw new Error(`unknown argument ${k}`);
  }
  if (!Number.isFinite(a.seconds) || a.seconds <= 0) throw new Error('--seconds must be a positive number');
  const unknown = (a.only ?? []).filter((n) => !sections.some((s) => s.name === n));
  if (unknown.length) throw new Error(`unknown section(s) ${unknown.join(', ')}; known: ${sections.map((s) => s.name).join(', ')}`);
  return a;
}

export interface Row extends BenchResult {
  /** value / echo baseline, for throughputs. */
  ratioToEcho?: number;
}

function fmt(v: number | undefined): string {
  if (v === undefined || !Number.isFinite(v)) return '';
  if (Math.abs(v) >= 100) return Math.round(v).toLocaleString('en-US');
  if (Math.abs(v) >= 1) return v.toFixed(2);
  return v.toPrecision(2);
}

function table(rows: Row[]): string {
  const head = ['section', 'benchmark', 'value', 'unit', 'x echo', 'p50 ms', 'p99 ms'];
  const cells = rows.map((r) => [r.section, r.name, fmt(r.value), r.unit, r.ratioToEcho !== undefined ? fmt(r.ratioToEcho) : '', fmt(r.latency?.p50Ms), fmt(r.latency?.p99Ms)]);
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: string[]): string => c.map((x, i) => (i < 2 || i === 3 ? x.padEnd(widths[i]!) : x.padStart(widths[i]!))).join('  ').trimEnd();
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.map(line)].join('\n');
}

function csv(rows: Row[]): string {
  const q = (s: string): string => (/[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s);
  const head = 'section,benchmark,value,unit,ratio_to_echo,p50_ms,p90_ms,p99_ms,max_ms';
  return [head, ...rows.map((r) => [r.section, r.name, r.value, r.unit, r.ratioToEcho ?? '', r.latency?.p50Ms ?? '', r.latency?.p90Ms ?? '', r.latency?.p99Ms ?? '', r.latency?.maxMs ?? ''].map((x) => q(String(x))).join(','))].join('\n') + '\n';
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  if (args.list) {
    for (const s of sections) process.stdout.write(`${s.name.padEnd(10)} ${s.doc}\n`);
    return 0;
  }
  const chosen = sections.filter((s) => s.name === 'baseline' || !args.only || args.only.includes(s.name));
  const ctx: BenchContext = { seconds: args.seconds, log: (l) => process.stderr.write(`bench: ${l}\n`) };
  const rows: Row[] = [];
  const failed: { section: string; error: string }[] = [];
  const started = Date.now();
  let echo: number | undefined;
  for (const s of chosen) {
    const t0 = performance.now();
    ctx.log(`${s.name} ...`);
    try {
      const got = await s.run(ctx);
      if (s.name === 'baseline') echo = got[0]?.value;
      for (const r of got) rows.push({ ...r, ...(echo && isThroughput(r.unit) ? { ratioToEcho: r.value / echo } : {}) });
      ctx.log(`${s.name} done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    } catch (err) {
      failed.push({ section: s.name, error: (err as Error).stack ?? String(err) });
      ctx.log(`${s.name} FAILED: ${(err as Error).message}`);
    }
  }
  const cpus = os.cpus();
  const report = {
    date: new Date(started).toISOString(),
    durationS: (Date.now() - started) / 1000,
    node: process.version,
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    cpus: `${cpus.length} x ${cpus[0]?.model ?? 'unknown'}`,
    secondsPerSection: args.seconds,
    echoBaselinePerS: echo,
    results: rows,
    failed,
  };
  process.stdout.write(`devloc bench: ${report.cpus}, node ${report.node}, --seconds ${args.seconds}\n\n${table(rows)}\n`);
  if (failed.length) process.stdout.write(`\nfailed sections: ${failed.map((f) => f.section).join(', ')}\n`);
  const outDir = 'bench-results';
  mkdirSync(outDir, { recursive: true });
  const json = JSON.stringify(report, null, 2) + '\n';
  writeFileSync(path.join(outDir, 'latest.json'), json);
  writeFileSync(path.join(outDir, 'latest.csv'), csv(rows));
  if (args.json) writeFileSync(args.json, json);
  if (args.csv) writeFileSync(args.csv, csv(rows));
  process.stdout.write(`\nwrote ${path.join(outDir, 'latest.json')} and latest.csv${args.json ? `, ${args.json}` : ''}${args.csv ? `, ${args.csv}` : ''} (${report.durationS.toFixed(0)} s)\n`);
  return failed.length ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    process.stderr.write(`bench: ${err.message}\n`);
    process.exit(2);
  },
);
