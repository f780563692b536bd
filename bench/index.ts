// The benchmark sections of `devloc bench` (`npm run bench`; src/cli/commands/bench.ts parses
// the flags and calls `runBench`).
//
// Runs the sections in order, the echo baseline always first, and prints one table in which
// every throughput is also given as a ratio of that baseline (measured in the same run, on the
// same machine: the ratio is what carries over to other machines). Results go to
// <out>/latest.json and latest.csv (and --json / --csv if given); the terminals section also
// writes <out>/terminals.json, terminals.csv and an SVG chart.
//
// A section is { name, doc, run(ctx) => rows }. Adding one is one entry in `sections`.
import { spawnSync } from 'node:child_process';
import { accessSync, constants, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runBaseline } from './baseline.js';
import { runCodec } from './codec.js';
import type { ServerFigures } from './authd.js';
import type { Mix, SweepStep } from './mix.js';
import type { Progress } from './progress.js';
import type { ExternalTarget, TerminalsReport } from './terminals.js';
import { runTransport } from './transport.js';
import type { BenchContext, BenchResult, Section } from './types.js';
import { isThroughput } from './types.js';


/** `cmd` is an executable somewhere on the PATH. */
/** A measured authentication server's row extras (authd's and the crypto floor's, under the same names). */
function serverExtra(f: ServerFigures): Record<string, number> {
  return { failures: f.failures, ceilingRatio: f.ceilingRatio, cpuUsPerAuth: f.cpuUsPerAuth, cpuCeilingRatio: f.cpuCeilingRatio, generatorCpuUs: f.generatorCpuUsPerAuth, othersCpuUs: f.othersCpuUsPerAuth, machineBusy: f.machineBusy };
}

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

/** A section that needs Redis: without redis-server it says it was skipped rather than failing the run. */
function needsRedis(x: Section): Section {
  return {
    ...x,
    run: async (ctx) => {
      if (onPath('redis-server')) return x.run(ctx);
      ctx.log(`${x.name}: redis-server not on PATH, skipped`);
      return [{ section: x.name, name: 'skipped: redis-server not on PATH', value: 0, unit: 'skipped' }];
    },
  };
}

/** Options of the terminals section (devloc bench --terminals, --mix, --rate, --sweep, ...). */
export interface TerminalsSectionOptions {
  terminals: number;
  workers: number;
  mix: Mix;
  steps: SweepStep[];
  window: number;
  timeoutMs: number;
  /** Made by the command from --authd, --authd-key, --identities (loaded then, to fail early). */
  external?: ExternalTarget;
  svg: string;
  /** Also write the chart here (docs/bench-terminals.svg with --doc-chart). */
  docChart?: string;
  progress?: Progress;
}

export interface BenchOptions {
  seconds: number;
  only?: string[];
  /** Directory of latest.json/csv and terminals.json/csv. */
  out: string;
  json?: string;
  csv?: string;
  terminals: TerminalsSectionOptions;
}

/** The sections; `t` configures the terminals section. */
export function sections(t?: TerminalsSectionOptions, out = 'bench-results', onReport?: (r: TerminalsReport) => void): Section[] {
  return [
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
      doc: 'devloc-authd: full auth exchanges/s on loopback, in-process and --workers <cores> beside the crypto ceiling and the crypto floor (a server doing only the ceiling\'s crypto per datagram); CPU per forged AUTH_REQUEST below --cookie-threshold; enrollment import records/s (100k records)',
      run: async (ctx) => {
        const { benchAuthd, benchForgedAuth } = await import('./authd.js');
        const r = await benchAuthd({ seconds: ctx.seconds, enrollRecords: 100_000 });
        const f = await benchForgedAuth({ seconds: ctx.seconds, ceiling: r.ceiling });
        return [
          { section: 'authd', name: `AUTH_REQUEST -> grant (${r.concurrency} outstanding)`, value: r.authPerS, unit: 'req/s', latency: { p50Ms: r.authLatencyP50Ms, p99Ms: r.authLatencyP99Ms }, extra: { failures: r.authFailures } },
          ...(r.spawned ? [{
            section: 'authd', name: `AUTH_REQUEST -> grant, devloc-authd --workers ${r.workers}`, value: r.spawned.perS, unit: 'req/s',
            extra: { ...serverExtra(r.spawned), ceilingPerS: r.ceiling.perS, cryptoUsPerAuth: r.ceiling.cryptoUs, primaryCpuUsPerAuth: r.spawned.primaryCpuUsPerAuth, floorShare: r.floorShare },
          }] : []),
          ...(r.floor ? [{
            section: 'authd', name: `crypto floor, ${r.workers} workers: only the ceiling's crypto per datagram`, value: r.floor.perS, unit: 'req/s', extra: serverExtra(r.floor),
          }] : []),
          { section: 'authd', name: `crypto ceiling (${r.ceiling.cores} cores: Ed25519 verify + X25519 + sign)`, value: r.ceiling.perS, unit: 'auth/s', extra: { verifyUs: r.ceiling.verifyUs, x25519Us: r.ceiling.x25519Us, signUs: r.ceiling.signUs } },
          {
            section: 'authd', name: `forged AUTH_REQUEST (unknown device) at ${f.ratePerS}/s below --cookie-threshold: authd CPU per datagram`, value: f.cpuUsPerForged, unit: 'us',
            extra: { coreShare: f.coreShare, cryptoUs: f.cryptoUsPerForged, cryptoRatio: f.cryptoRatio, withCookieUs: f.cookieCpuUsPerForged, sent: f.sent, answered: f.answered },
          },
          { section: 'authd', name: `enroll import (${r.enrollRecords} records)`, value: r.enrollRecordsPerS, unit: 'records/s' },
          { section: 'authd', name: 're-enroll, nothing changed', value: r.reenrollRecordsPerS, unit: 'records/s' },
        ];
      },
    },
    {
      name: 'locatord',
      doc: 'devloc-locatord child process: first registrations, refreshes, queries (4 IDs, and 1 ID for CPU per datagram), CPU per datagram against the echo server (3 rounds alternating the two, ratio of the medians) and against echo servers spinning 6 and 12 us per datagram; table memory and sweep; process memory per terminal with its session (200k entries)',
      run: async (ctx) => {
        const { benchLocatordThroughput, benchTable, benchTerminalsMemory } = await import('./locatord.js');
        const r = await benchLocatordThroughput({ seconds: ctx.seconds, sessionsPerWorker: 500, echoWorkUs: [6, 12], moreQueryIds: [1], rounds: 3 });
        const tb = await benchTable(200_000);
        const mem = await benchTerminalsMemory(200_000);
        const s = 'locatord';
        return [
          { section: s, name: 'REGISTER opening a session (ticket + X25519)', value: r.firstRegistrationsPerS, unit: 'req/s' },
          { section: s, name: 'REFRESH', value: r.refreshPerS, unit: 'req/s', extra: { ownEchoRatio: r.refreshRatio, lost: r.lost } },
          { section: s, name: `QUERY_ADDR (${r.idsPerQuery} IDs)`, value: r.queryPerS, unit: 'req/s', extra: { idsPerS: r.queryIdsPerS, ownEchoRatio: r.queryRatio } },
          { section: s, name: 'REFRESH: locatord CPU per datagram / echo server CPU per datagram', value: r.refreshCpuXEcho, unit: 'x', extra: { refreshPerCpuS: r.refreshPerCpuS, echoPerCpuS: r.echoRefreshPerCpuS, rounds: r.refreshCpuXEchoRounds } },
          { section: s, name: `QUERY_ADDR (${r.idsPerQuery} IDs): locatord CPU per datagram / echo server CPU per datagram`, value: r.queryCpuXEcho, unit: 'x', extra: { queryPerCpuS: r.queryPerCpuS, echoPerCpuS: r.echoQueryPerCpuS, rounds: r.queryCpuXEchoRounds } },
          ...r.queriesByIds.map((q) => ({
            section: s, name: `QUERY_ADDR (${q.ids} ID${q.ids === 1 ? '' : 's'}): locatord CPU per datagram / echo server CPU per datagram`, value: q.cpuXEcho, unit: 'x',
            extra: { queryPerCpuS: q.perCpuS, echoPerCpuS: q.echoPerCpuS, rounds: q.cpuXEchoRounds },
          })),
          ...r.echoWithWork.map((e) => ({
            section: s, name: `echo server that also spins ${e.workUs} us of CPU per datagram: CPU per datagram / bare echo's`, value: e.cpuXEcho, unit: 'x',
            extra: { ioUsPerDatagram: e.ioUs, bareEchoUsPerDatagram: r.echoRefreshPerCpuS > 0 ? Math.round(1e8 / r.echoRefreshPerCpuS) / 100 : 0 },
          })),
          { section: s, name: `table heap per terminal (${tb.entries} entries)`, value: tb.heapBytesPerEntry, unit: 'B' },
          {
            section: s, name: `process RSS per terminal with its session and proven address (${mem.entries} entries)`, value: mem.rssBytesPerTerminal, unit: 'B',
            extra: { heap: mem.heapBytesPerTerminal, arrayBuffers: mem.arrayBufferBytesPerTerminal },
          },
          { section: s, name: 'expiry sweep, half the table at once', value: tb.sweepExpireHalfMs, unit: 'ms', extra: { expired: tb.expired, usPerExpired: tb.sweepUsPerExpired } },
        ];
      },
    },
    {
      name: 'snapshot',
      doc: 'restart of devloc-locatord with 1M registered terminals (built without ticket operations): snapshot write (wall, CPU, longest event-loop block), restore in a real daemon, its peak RSS',
      run: async () => {
        const { benchSnapshot } = await import('./snapshot.js');
        const r = await benchSnapshot(1_000_000);
        const s = 'snapshot';
        const extra = { entries: r.entries, bytes: r.bytes, loadAverage: r.loadAverage };
        return [
          { section: s, name: `snapshot write (${r.entries} terminals)`, value: r.writeMs, unit: 'ms', extra: { ...extra, cpuMs: r.writeCpuMs, daemonMs: r.daemonWriteMs, daemonCpuMs: r.daemonWriteCpuMs } },
          { section: s, name: 'longest event-loop block during the write', value: r.maxSliceMs, unit: 'ms', extra: { cpuMs: r.maxSliceCpuMs, loopDelayMaxMs: r.loopDelayMaxMs, daemonMs: r.daemonMaxSliceMs, daemonCpuMs: r.daemonMaxSliceCpuMs } },
          { section: s, name: `restore in devloc-locatord (${r.entries} terminals)`, value: r.restoreMs, unit: 'ms', extra: { cpuMs: r.restoreCpuMs } },
          { section: s, name: 'devloc-locatord peak RSS once restored', value: r.peakRssMiB, unit: 'MiB' },
        ];
      },
    },
    {
      name: 'scale1m',
      doc: 'devloc-locatord restored with 1M registered terminals (a snapshot built without ticket operations) against 10k, interleaved, 5 rounds: REFRESH (100k restored terminals in turn; at 1M also 10k of them, as many as at 10k) and QUERY_ADDR (1 ID, random restored terminals) per locatord CPU-second, GC pauses and max latency under flat-out load, RSS per terminal',
      run: async (ctx) => {
        const { benchScale1m, scale1mRows } = await import('./scale1m.js');
        return scale1mRows(await benchScale1m({ seconds: ctx.seconds }, ctx.log));
      },
    },
    needsRedis({
      name: 'scale',
      doc: '1 instance embedded vs 1 and 2 instances on Redis: refresh/s and query/s (x echo), --seconds/3 each; Redis memory per registered terminal (skipped without redis-server)',
      run: async (ctx) => {
        const s = 'scale';
        const { benchScale } = await import('./scale.js');
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
    }),
    needsRedis({
      name: 'redis',
      doc: 'the Redis store (issue 16 item 5): REFRESH and QUERY_ADDR per locatord CPU-second, one process embedded and one on Redis in the same run; Redis memory per terminal at 100k terminals (presence, sealed session, full replay window; skipped without redis-server)',
      run: async (ctx) => {
        const s = 'redis';
        const { benchRedisStore } = await import('./scale.js');
        const r = await benchRedisStore({ seconds: Math.max(1, ctx.seconds / 2), sessionsPerWorker: 500, entries: 100_000 });
        const rows: BenchResult[] = [];
        for (const [label, x] of [['embedded', r.embedded], ['on Redis', r.redis]] as const) {
          rows.push({ section: s, name: `REFRESH per locatord CPU-second, ${label}`, value: x.refreshPerCpuS, unit: 'req/CPU-s', extra: { refreshPerS: x.refreshPerS, lost: x.lost } });
          rows.push({ section: s, name: `QUERY_ADDR per locatord CPU-second, ${label}`, value: x.queryPerCpuS, unit: 'req/CPU-s', extra: { queryPerS: x.queryPerS } });
        }
        rows.push({ section: s, name: 'REFRESH per CPU-second, Redis / embedded', value: r.refreshPerCpuRatio, unit: 'x' });
        const m = r.memory;
        rows.push({ section: s, name: `Redis memory per terminal: presence record (${r.entries} terminals)`, value: m.bytes, unit: 'B', extra: { valueBytes: m.valueBytes } });
        rows.push({ section: s, name: 'Redis memory per terminal: presence + session + full replay window', value: m.terminalBytes, unit: 'B', extra: { sessionBytes: m.sessionBytes, windowBytes: m.windowBytes, windowTerminals: m.windowTerminals } });
        return rows;
      },
    }),
    needsRedis({
      name: 'register',
      doc: 'first REGISTERs (ticket + X25519) at devloc-locatord --workers <cores> on Redis beside the crypto ceiling (Ed25519 verify + X25519; skipped without redis-server)',
      run: async (ctx) => {
        const s = 'register';
        const { benchFirstRegister } = await import('./scale.js');
        const r = await benchFirstRegister({ sessionsPerWorker: Math.max(1000, Math.round(ctx.seconds * 1000)) });
        return [
          {
            section: s, name: `REGISTER opening a session, devloc-locatord --workers ${r.workers} --store redis`, value: r.registrationsPerS, unit: 'req/s',
            extra: {
              ceilingPerS: r.ceilingPerS, ceilingRatio: r.ceilingRatio, cpuUsPerRegistration: r.cpuUsPerRegistration, cryptoUsPerRegistration: r.cryptoUsPerRegistration,
              cpuCeilingRatio: r.cpuCeilingRatio, generatorCpuUs: r.generatorCpuUsPerRegistration, othersCpuUs: r.othersCpuUsPerRegistration, machineBusy: r.machineBusy, lost: r.lost,
            },
          },
        ];
      },
    }),
    {
      name: 'presence',
      doc: 'WATCH subscriptions (issue 18): whole-process RSS per subscription at 1M terminals x 50; PRESENCE pushes/s and per locatord CPU-s at fan-out 50, and as a ratio of the ceiling (bare node:dgram: one send + one receive per push); change -> push latency at 2k, 5k and 10k changes/s offered, with the CPU per change of locatord and of the load generator; one terminal watched by 1,000',
      run: async (ctx) => {
        const { presenceRows } = await import('./presence.js');
        return presenceRows({ seconds: ctx.seconds });
      },
    },
    {
      name: 'search',
      doc: 'partner search (issue 18): SEARCH requests/s and per locatord CPU-s with 100k online terminals, 10% looking for a partner, searched from random points',
      run: async (ctx) => {
        const { searchRows } = await import('./search.js');
        return searchRows({ seconds: ctx.seconds });
      },
    },
    {
      name: 'matchd',
      doc: 'matching engine in-process: matches/s with 20k waiting, memory per request, steady-state latency',
      run: async (ctx) => {
        const { benchMatchd } = await import('./matchd.js');
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
    {
      name: 'agent',
      doc: 'devloc-agent: idle RSS of bare node -e, the embedded library (CommonJS and ES module hosts) and the daemon, read from /proc; start to registered; CPU and wire bytes per idle hour (NAT, open); heap growth over 24 h of refreshes; 4x --seconds per run (min 10 s)',
      run: async (ctx) => {
        const { benchAgent } = await import('./agent.js');
        const r = await benchAgent({ seconds: Math.max(10, 4 * ctx.seconds) });
        const s = 'agent';
        return [
          { section: s, name: 'bare node -e RSS', value: r.bareRssMiB, unit: 'MiB' },
          { section: s, name: 'idle RSS, library in a CommonJS host (Node.js included)', value: r.idleRssMiB, unit: 'MiB', extra: { heapMiB: r.idleHeapMiB, runtime: r.runtime, aboveBareMiB: r.libraryAboveBareMiB } },
          { section: s, name: 'idle RSS over bare Node, library (CommonJS host, agent.cjs)', value: r.libraryAboveBareMiB, unit: 'MiB' },
          { section: s, name: 'bare node --input-type=module -e RSS', value: r.bareModuleRssMiB, unit: 'MiB' },
          { section: s, name: 'idle RSS over bare ES module Node, library (ES module host, agent.js)', value: r.libraryModuleAboveBareMiB, unit: 'MiB', extra: { rssMiB: r.libraryModuleRssMiB } },
          { section: s, name: 'idle RSS over bare Node, devloc-agent', value: r.daemonAboveBareMiB, unit: 'MiB', extra: { rssMiB: r.daemonRssMiB } },
          { section: s, name: 'start -> registered, library', value: r.libraryStartToRegisteredMs, unit: 'ms' },
          { section: s, name: 'start -> registered, devloc-agent', value: r.daemonStartToRegisteredMs, unit: 'ms' },
          { section: s, name: `wire bytes per idle hour behind a NAT (${r.defaultRefreshS} s)`, value: r.bytesPerHourNat, unit: 'B', extra: { bytesPerRefresh: r.bytesPerRefresh } },
          { section: s, name: `wire bytes per idle hour, open address (${r.openRefreshS} s)`, value: r.bytesPerHourOpen, unit: 'B' },
          { section: s, name: 'heap growth over 24 virtual hours (agent + servers)', value: r.heapGrowth24hKiB, unit: 'KiB', extra: { heapAfterGcMiB: r.heapAfterGcMiB, secondDayKiB: r.secondDayGrowthKiB, refreshes: r.day.refreshes, authentications: r.day.authentications } },
          { section: s, name: 'heap growth over the second virtual day, not compiled code (agent + servers)', value: r.secondDayGrowthKiB.nonCode, unit: 'KiB', extra: { codeKiB: r.secondDayGrowthKiB.code, arrayBuffersKiB: r.secondDayGrowthKiB.arrayBuffers } },
          { section: s, name: `heap growth over virtual day ${r.day.hours / 24} (agent + servers, JIT on)`, value: r.lastDayGrowthKiB.heap, unit: 'KiB', extra: { codeKiB: r.lastDayGrowthKiB.code, nonCodeKiB: r.lastDayGrowthKiB.nonCode, arrayBuffersKiB: r.lastDayGrowthKiB.arrayBuffers } },
          { section: s, name: 'heap growth over the second virtual day, interpreter only: the program\'s data (agent + servers)', value: r.dataSecondDayGrowthKiB.heap, unit: 'KiB', extra: { arrayBuffersKiB: r.dataSecondDayGrowthKiB.arrayBuffers } },
          { section: s, name: 'CPU per refresh', value: r.cpuMsPerRefresh, unit: 'ms', extra: { refreshes: r.busy.refreshes } },
          { section: s, name: `CPU per hour at the ${r.defaultRefreshS} s refresh`, value: r.cpuSecondsPerHour, unit: 'CPU-s', extra: { idleCpuSecondsPerHour: r.idleCpuSecondsPerHour } },
          { section: s, name: `CPU per hour at the ${r.openRefreshS} s refresh (open address)`, value: r.cpuSecondsPerHourOpen, unit: 'CPU-s' },
        ];
      },
    },
    {
      name: 'relays',
      doc: 'relayed vs direct peer channels in the namespace lab (real NATs, real coturn): connect to first data, RTT, throughput, ratios (needs root, ip, nft, turnserver and a clone: runs test/harness/punch-bench.ts --relays)',
      run: async (ctx) => {
        const s = 'relays';
        const script = path.resolve('test/harness/punch-bench.ts');
        const tool = ['ip', 'nft', 'turnserver'].find((c) => !onPath(c));
        const missing = process.getuid?.() !== 0 ? 'needs root (network namespaces)'
          : tool ? `${tool} not on PATH` : existsSync(script) ? null : 'needs a clone (test/harness/punch-bench.ts)';
        if (missing) {
          ctx.log(`relays: skipped: ${missing}`);
          return [{ section: s, name: `skipped: ${missing}`, value: 0, unit: 'skipped' }];
        }
        // The lab is test code (namespaces, coturn, agents through tsx): run it as a child and read its JSON.
        const r = spawnSync(process.execPath, ['--import', 'tsx', script, '--relays', '--tries', '5'], { stdio: ['ignore', 'inherit', 'inherit'] });
        if (r.status !== 0) throw new Error(`relays: test/harness/punch-bench.ts --relays exited with ${r.status}`);
        const j = JSON.parse(readFileSync(path.resolve('bench-results/relays.json'), 'utf8')) as { results: { path: string; firstDataMedianMs: number | null; rttMedianMs: number | null; messagesPerS: number | null; lostPct: number | null }[] };
        return j.results.flatMap((x) => [
          { section: s, name: `${x.path}: connect -> first data, median`, value: x.firstDataMedianMs ?? NaN, unit: 'ms' },
          { section: s, name: `${x.path}: ping RTT, median`, value: x.rttMedianMs ?? NaN, unit: 'ms' },
          { section: s, name: `${x.path}: 1000-byte messages through the control sockets`, value: x.messagesPerS ?? NaN, unit: 'msg/s', extra: { lostPct: x.lostPct } },
        ]);
      },
    },
    {
      name: 'terminals',
      doc: 'N simulated terminals (real identities and crypto) against authd + locatord + matchd: auth, register, refresh, query, group and match traffic, swept from flat out to overload',
      run: async (ctx) => {
        if (!t) throw new Error('terminals: no options');
        const { runTerminals, terminalsChart, terminalsCsv, terminalsRows, terminalsTable } = await import('./terminals.js');
        const report = await runTerminals({
          terminals: t.terminals, workers: t.workers, mix: t.mix, steps: t.steps, seconds: ctx.seconds, window: t.window, timeoutMs: t.timeoutMs,
          ...(t.external ? { external: t.external } : {}), ...(ctx.echoPerS ? { echoPerS: ctx.echoPerS } : {}), log: ctx.log, ...(t.progress ? { progress: t.progress } : {}),
        });
        process.stdout.write(`\nterminals: ${report.terminals} terminals, mix ${report.mix}\n${terminalsTable(report)}\n\n`);
        mkdirSync(out, { recursive: true });
        writeFileSync(path.join(out, 'terminals.json'), JSON.stringify(report, null, 2) + '\n');
        writeFileSync(path.join(out, 'terminals.csv'), terminalsCsv(report));
        const cpus = os.cpus();
        const svg = terminalsChart(report, { host: `${cpus.length} x ${cpus[0]?.model.trim() ?? 'CPU'}, node ${process.version}` });
        for (const f of [t.svg, ...(t.docChart ? [t.docChart] : [])]) {
          mkdirSync(path.dirname(path.resolve(f)), { recursive: true });
          writeFileSync(f, svg);
        }
        ctx.log(`terminals: wrote ${path.join(out, 'terminals.json')}, terminals.csv, ${t.svg}${t.docChart ? ` and ${t.docChart}` : ''}`);
        onReport?.(report);
        return terminalsRows(report);
      },
    },
  ];
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

export const SECTION_NAMES = sections().map((s) => s.name);

/** `--list`: one line per section. */
export function listSections(): string {
  return sections().map((s) => `${s.name.padEnd(10)} ${s.doc}\n`).join('');
}

/** Run the chosen sections (the baseline always first); the exit status: 0, or 1 when a section failed. */
export async function runBench(args: BenchOptions): Promise<number> {
  let terminalsReport: TerminalsReport | undefined;
  const chosen = sections(args.terminals, args.out, (r) => (terminalsReport = r)).filter((s) => s.name === 'baseline' || !args.only || args.only.includes(s.name));
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
      if (s.name === 'baseline') {
        echo = got[0]?.value;
        if (echo) ctx.echoPerS = echo;
      }
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
    ...(terminalsReport ? { terminals: terminalsReport } : {}),
  };
  process.stdout.write(`devloc bench: ${report.cpus}, node ${report.node}, --seconds ${args.seconds}\n\n${table(rows)}\n`);
  if (failed.length) process.stdout.write(`\nfailed sections: ${failed.map((f) => f.section).join(', ')}\n`);
  const outDir = args.out;
  mkdirSync(outDir, { recursive: true });
  const json = JSON.stringify(report, null, 2) + '\n';
  writeFileSync(path.join(outDir, 'latest.json'), json);
  writeFileSync(path.join(outDir, 'latest.csv'), csv(rows));
  if (args.json) writeFileSync(args.json, json);
  if (args.csv) writeFileSync(args.csv, csv(rows));
  process.stdout.write(`\nwrote ${path.join(outDir, 'latest.json')} and latest.csv${args.json ? `, ${args.json}` : ''}${args.csv ? `, ${args.csv}` : ''} (${report.durationS.toFixed(0)} s)\n`);
  return failed.length ? 1 : 0;
}
