// locatord at 1M registered terminals against the same at 10k (issue 16 items 2 and 7;
// `devloc bench --only scale1m`, README "Throughput at 1M registered").
//
// The registered terminals come from a snapshot: a bench worker builds them as a restore does
// (locatord-worker.ts buildTerminals: no ticket or X25519 per terminal) and writes the file once
// per size; each measurement then copies it into the state directory of a fresh locatord child
// (startBenchLocatord), which restores it at start. Two load-generator processes open their own
// sessions with tickets (REGISTER), then send REFRESHes and QUERY_ADDRs flat out (`window`
// outstanding each). Both reach the whole table, not a cached corner of it: the QUERY_ADDRs name
// restored terminals at random, and the REFRESHes come from `refreshTerminals` restored
// terminals in turn, spread over the table (their session IDs and keys are a function of their
// index, locatord-worker.ts restoredSession; each proves the generator's address first, untimed,
// and must be accepted). Until 2026-12-06 the REFRESHes came from the generators' own 1,000
// sessions, which stayed in the caches and in the session MACs' pad cache. Each kind is first sent untimed for `warmupSeconds`,
// so that the measured seconds are not the daemon's JIT compiling its handlers (a fresh child
// each time). The sizes alternate within each round (10k, 1M, then
// 1M, 10k, ...), so a change in the machine's load hits both.
//
// Per measurement: answers per locatord CPU-second (the figure that holds on a shared machine)
// and per second (the 1M / 10k figure is the ratio of the two sizes' medians over the rounds:
// one 3-second measurement of the same code moves by up to +-15% here, so a ratio of two of them,
// a round's, kept beside it, moves by more than the 5% the target allows); the load generators'
// send-to-answer latency (p99, max); the daemon's GC pauses while loaded (a PerformanceObserver preloaded into it: locatord.ts GC_LOGGER); its RSS and
// restore time. Targets: throughput at 1M within 5% of 10k, GC pauses p99 < 10 ms and max
// latency < 50 ms at 1M.
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import os, { tmpdir } from 'node:os';
import path from 'node:path';
import { processTree, treeCpuS } from './cpu.js';
import { rssOf } from './measured-process.js';
import type { GcPause } from './locatord.js';
import { forkWorker, perS, readGcPauses, startBenchLocatord, warmUp } from './locatord.js';
import type { RunResult, WorkerCommand } from './locatord-worker.js';
import { Histogram, median } from './stats.js';
import type { BenchResult } from './types.js';

const SNAPSHOT_FILE = 'locatord.snapshot';

export interface Scale1mOptions {
  /** The large and the small table (default 1,000,000 and 10,000). */
  large?: number;
  small?: number;
  /** Rounds, each measuring both sizes (default 5). */
  rounds?: number;
  /** Seconds per load run (REFRESH, then QUERY_ADDR). */
  seconds?: number;
  /** Untimed seconds of each kind before the measured runs (default 1). */
  warmupSeconds?: number;
  /** Sessions each of the two load generators opens (they send the QUERY_ADDRs). */
  sessionsPerWorker?: number;
  /**
   * Restored terminals REFRESHed in turn, over both generators (default 100,000; at most the
   * table's size): far more than the caches hold, as a table of 1M refreshing would be.
   */
  refreshTerminals?: number;
  window?: number;
  idsPerQuery?: number;
  /** Profile each locatord child's CPU into this directory (node --cpu-prof; it then stops by SIGTERM, writing its snapshot). */
  cpuProfDir?: string;
}

/** What the GC did while the daemon was loaded. */
export interface GcFigures {
  pauses: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** V8's kind of the longest (1 minor, 2 major, 4 incremental marking, 8 weak callbacks). */
  maxKind: number;
  /** Share of the loaded wall time spent in pauses. */
  share: number;
}

export interface KindFigures {
  perCpuS: number;
  perS: number;
  lost: number;
  /** Answered with an ERROR (none expected). */
  errors: number;
  latencyP99Ms: number;
  latencyMaxMs: number;
}

export interface Scale1mMeasurement {
  registered: number;
  /** Restored terminals the REFRESHes came from, in turn. */
  refreshTerminals: number;
  refresh: KindFigures;
  /**
   * At the large size: REFRESH again from only as many of the restored terminals as refresh at
   * the small size (the same active set in a larger table), which tells the table's size from the
   * number of terminals refreshing; null at the small size.
   */
  refreshSameActive: KindFigures | null;
  query: KindFigures;
  /** Over all runs. */
  gc: GcFigures;
  /**
   * GC pauses the preloaded observer logged since the child started (start-up and restore
   * included): that it works, whatever the load let through the measured runs.
   */
  gcPausesSinceStart: number;
  /** VmRSS after the runs. */
  rssBytes: number;
  restoreMs: number;
  restoreCpuMs: number;
  loadAverage: number;
}

export interface Scale1mResult {
  large: number;
  small: number;
  seconds: number;
  idsPerQuery: number;
  /** In the order measured: each round's two measurements side by side (roundPairs reads them in pairs). */
  runs: Scale1mMeasurement[];
}

const round = (x: number, digits = 0): number => Math.round(x * 10 ** digits) / 10 ** digits;

export function gcFigures(pauses: GcPause[], wallMs: number): GcFigures {
  const h = new Histogram();
  let longest: GcPause | undefined;
  for (const p of pauses) {
    h.record(p.ms);
    if (!longest || p.ms > longest.ms) longest = p;
  }
  return { pauses: h.count, p50Ms: round(h.quantile(0.5), 2), p99Ms: round(h.quantile(0.99), 2), maxMs: round(h.count ? h.max : 0, 2), maxKind: longest?.kind ?? 0, share: wallMs > 0 ? round(h.sum / wallMs, 4) : 0 };
}

/** Write the snapshot of `entries` terminals into `dir` (a worker of its own: at 1M it holds ~1 GB meanwhile). */
async function writeSnapshot(entries: number, dir: string): Promise<void> {
  const worker = forkWorker(['--expose-gc', '--max-old-space-size=8192']);
  try {
    await worker.ask({ cmd: 'snapshot', entries, stateDir: dir });
  } finally {
    worker.proc.kill('SIGKILL');
  }
}

/**
 * One locatord child restored from `snapshotDir`, loaded by two generators: REFRESH, then (when
 * `sameActiveAs` is less than the terminals refreshing) REFRESH from only that many, then QUERY_ADDR.
 */
async function measure(registered: number, snapshotDir: string, o: Required<Omit<Scale1mOptions, 'large' | 'small' | 'rounds' | 'cpuProfDir'>> & Pick<Scale1mOptions, 'cpuProfDir'>, sameActiveAs: number): Promise<Scale1mMeasurement> {
  const generators = 2;
  // Whole per generator: what is used is what is reported.
  const perGenerator = Math.floor(Math.min(o.refreshTerminals, registered) / generators);
  if (perGenerator < 1) throw new Error(`scale1m: refreshTerminals ${o.refreshTerminals}: at least one per generator`);
  const refreshing = perGenerator * generators;
  const gcLogFile = path.join(snapshotDir, `gc-${process.pid}-${Date.now()}.log`);
  const { dir, loc, setup } = await startBenchLocatord(['--max-entries', String(registered + 10_000)], {
    // A loaded 2-core machine takes a while to restore 1M.
    timeoutMs: 600_000,
    gcLogFile,
    ...(o.cpuProfDir ? { cpuProfDir: o.cpuProfDir } : {}),
    beforeStart: async (stateDir) => {
      copyFileSync(path.join(snapshotDir, SNAPSHOT_FILE), path.join(stateDir, SNAPSHOT_FILE));
    },
  });
  const gens = Array.from({ length: generators }, () => forkWorker());
  try {
    const restored = await loc.waitFor((l) => l['msg'] === 'snapshot restored');
    if (restored['records'] !== registered) throw new Error(`restored ${String(restored['records'])} of ${registered}`);
    await Promise.all(gens.map((g) => g.ask(setup(o.sessionsPerWorker))));
    const all = (m: WorkerCommand): Promise<RunResult[]> => Promise.all(gens.map((g) => g.ask<RunResult>(m)));
    await all({ cmd: 'register', window: o.window });
    // The REFRESHes come from restored terminals spread over the whole table, each proving this
    // address once first (untimed); all must be accepted, or the figures would count refusals.
    const adopted = await Promise.all(gens.map((g, w) => g.ask<RunResult>({ cmd: 'adopt', registered, worker: w, workers: gens.length, count: perGenerator, window: o.window })));
    const refused = adopted.reduce((a, r) => a + r.errors + r.lost, 0);
    const resent = adopted.reduce((a, r) => a + (r.resent ?? 0), 0);
    if (refused > 0) throw new Error(`scale1m: ${refused} of the first REFRESHes of ${refreshing} restored terminals refused or lost (${resent} sent again after a second without an answer)`);
    await warmUp(all, { window: o.window, idsPerQuery: o.idsPerQuery, registered }, o.warmupSeconds);
    const tree = processTree(loc.proc.pid!);
    let loadedFrom = 0;
    let loadedMs = 0;
    const run = async (kind: 'REFRESH' | 'QUERY_ADDR', adoptedInTurn?: number): Promise<KindFigures> => {
      const c0 = treeCpuS(tree);
      const from = Date.now();
      loadedFrom ||= from;
      const rs = await all({ cmd: 'run', kind, seconds: o.seconds, window: o.window, idsPerQuery: o.idsPerQuery, registered, ...(adoptedInTurn !== undefined ? { adoptedInTurn } : {}) });
      loadedMs += Date.now() - from;
      const c1 = treeCpuS(tree);
      const answered = rs.reduce((a, r) => a + r.answered, 0);
      const latency = rs.reduce((h, r) => h.merge(Histogram.fromJSON(r.latency)), new Histogram());
      return {
        perCpuS: c0 !== null && c1 !== null && c1 > c0 ? Math.round(answered / (c1 - c0)) : 0,
        perS: perS(rs), lost: rs.reduce((a, r) => a + r.lost, 0), errors: rs.reduce((a, r) => a + r.errors, 0),
        latencyP99Ms: round(latency.quantile(0.99), 2), latencyMaxMs: round(latency.count ? latency.max : 0, 2),
      };
    };
    const refresh = await run('REFRESH');
    const samePerGenerator = Math.floor(Math.min(sameActiveAs, o.refreshTerminals) / generators);
    const refreshSameActive = samePerGenerator >= 1 && samePerGenerator < perGenerator ? await run('REFRESH', samePerGenerator) : null;
    const query = await run('QUERY_ADDR');
    const loadedTo = Date.now();
    const rssBytes = rssOf(loc.proc.pid!);
    // The logger writes every 100 ms.
    await new Promise((r) => setTimeout(r, 300));
    const logged = readGcPauses(gcLogFile);
    const pauses = logged.filter((p) => p.atMs >= loadedFrom && p.atMs <= loadedTo);
    return {
      registered, refreshTerminals: refreshing, refresh, refreshSameActive, query, gc: gcFigures(pauses, loadedMs), gcPausesSinceStart: logged.length, rssBytes,
      restoreMs: Number(restored['durationMs']), restoreCpuMs: Number(restored['cpuMs']),
      loadAverage: round(os.loadavg()[0]!, 1),
    };
  } finally {
    for (const g of gens) g.proc.kill('SIGKILL');
    if (o.cpuProfDir) await loc.stop('SIGTERM', 60_000);
    else loc.proc.kill('SIGKILL');
    await loc.exited;
    rmSync(dir, { recursive: true, force: true });
    rmSync(gcLogFile, { force: true });
  }
}

export async function benchScale1m(opts: Scale1mOptions = {}, log: (line: string) => void = () => {}): Promise<Scale1mResult> {
  const large = opts.large ?? 1_000_000;
  const small = opts.small ?? 10_000;
  const rounds = opts.rounds ?? 5;
  const o = {
    seconds: opts.seconds ?? 3, warmupSeconds: opts.warmupSeconds ?? 1, sessionsPerWorker: opts.sessionsPerWorker ?? 500, refreshTerminals: opts.refreshTerminals ?? 100_000, window: opts.window ?? 64, idsPerQuery: opts.idsPerQuery ?? 1,
    ...(opts.cpuProfDir ? { cpuProfDir: opts.cpuProfDir } : {}),
  };
  const root = mkdtempSync(path.join(tmpdir(), 'scale1m-bench-'));
  try {
    const dirs = new Map<number, string>();
    for (const n of [small, large]) {
      const d = mkdtempSync(path.join(root, `${n}-`));
      log(`scale1m: building the snapshot of ${n} terminals`);
      await writeSnapshot(n, d);
      dirs.set(n, d);
    }
    const runs: Scale1mMeasurement[] = [];
    for (let r = 0; r < rounds; r++) {
      for (const n of r % 2 === 0 ? [small, large] : [large, small]) {
        log(`scale1m: round ${r + 1}/${rounds}, ${n} registered`);
        runs.push(await measure(n, dirs.get(n)!, o, small));
      }
    }
    return { large, small, seconds: o.seconds, idsPerQuery: o.idsPerQuery, runs };
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

/** Each round's two measurements, side by side in `runs` in either order; a round missing one is left out. */
export function roundPairs(r: Scale1mResult): { large: Scale1mMeasurement; small: Scale1mMeasurement }[] {
  const out: { large: Scale1mMeasurement; small: Scale1mMeasurement }[] = [];
  for (let i = 0; i + 1 < r.runs.length; i += 2) {
    const pair = [r.runs[i]!, r.runs[i + 1]!];
    const large = pair.find((m) => m.registered === r.large);
    const small = pair.find((m) => m.registered === r.small);
    if (large && small) out.push({ large, small });
  }
  return out;
}

/**
 * Per round, large / small per CPU-second of what `pick` reads (the large table's figure first,
 * the small one's second). A round whose large measurement has no such figure (no same-active
 * run) is left out.
 */
export function roundRatios(r: Scale1mResult, pick: (m: Scale1mMeasurement, side: 'large' | 'small') => number | undefined): number[] {
  return roundPairs(r).flatMap(({ large, small }) => {
    const a = pick(large, 'large');
    const b = pick(small, 'small');
    return a === undefined ? [] : [a > 0 && b !== undefined && b > 0 ? round(a / b, 3) : 0];
  });
}

/** Per round, the whole-process RSS per terminal between the two sizes. */
export const roundRssBytesPerTerminal = (r: Scale1mResult): number[] =>
  roundPairs(r).map(({ large, small }) => Math.round((large.rssBytes - small.rssBytes) / (r.large - r.small)));

/** The section's rows: medians over the rounds, every measurement in `extra`. */
export function scale1mRows(r: Scale1mResult): BenchResult[] {
  const s = 'scale1m';
  const at = (n: number): Scale1mMeasurement[] => r.runs.filter((m) => m.registered === n);
  const rows: BenchResult[] = [];
  const perCpuS = (n: number, k: 'refresh' | 'query'): number => median(at(n).map((m) => m[k].perCpuS));
  for (const n of [r.small, r.large]) {
    const ms = at(n);
    rows.push({ section: s, name: `REFRESH per locatord CPU-second, ${n} registered`, value: perCpuS(n, 'refresh'), unit: 'req/CPU-s', extra: { each: ms.map((m) => m.refresh) } });
    rows.push({ section: s, name: `QUERY_ADDR (${r.idsPerQuery} ID) per locatord CPU-second, ${n} registered`, value: perCpuS(n, 'query'), unit: 'req/CPU-s', extra: { each: ms.map((m) => m.query) } });
  }
  // The ratio of the rows above; each round's own ratio (two measurements side by side) in `extra`.
  const ofMedians = (k: 'refresh' | 'query'): number => {
    const l = perCpuS(r.large, k);
    const sm = perCpuS(r.small, k);
    return l > 0 && sm > 0 ? round(l / sm, 3) : 0;
  };
  rows.push({ section: s, name: `REFRESH per CPU-second, ${r.large} / ${r.small} registered, medians (target >= 0.95)`, value: ofMedians('refresh'), unit: 'x', extra: { rounds: roundRatios(r, (m) => m.refresh.perCpuS) } });
  // The same number of terminals refreshing in both tables: what the table's size costs alone.
  const sameActive = at(r.large).flatMap((m) => (m.refreshSameActive ? [m.refreshSameActive.perCpuS] : []));
  if (sameActive.length > 0) {
    const sm = perCpuS(r.small, 'refresh');
    const active = at(r.small)[0]?.refreshTerminals ?? r.small;
    rows.push({
      section: s, name: `REFRESH per CPU-second with ${active} terminals refreshing in both, ${r.large} / ${r.small} registered, medians`,
      value: sm > 0 ? round(median(sameActive) / sm, 3) : 0, unit: 'x',
      extra: {
        rounds: roundRatios(r, (m, side) => (side === 'large' ? m.refreshSameActive?.perCpuS : m.refresh.perCpuS)),
        perCpuS: sameActive,
        terminalsRefreshing: active,
        // In the same 1M process, one run after the other: all the REFRESHing terminals / only as many as at the small size.
        activeSetRatios: at(r.large).flatMap((m) => (m.refreshSameActive && m.refreshSameActive.perCpuS > 0 ? [round(m.refresh.perCpuS / m.refreshSameActive.perCpuS, 3)] : [])),
      },
    });
  }
  rows.push({ section: s, name: `QUERY_ADDR per CPU-second, ${r.large} / ${r.small} registered, medians (target >= 0.95)`, value: ofMedians('query'), unit: 'x', extra: { rounds: roundRatios(r, (m) => m.query.perCpuS) } });
  // GC and latency at both sizes: on a shared machine the small table shows what the machine
  // alone does to them.
  for (const n of [r.large, r.small]) {
    const ms = at(n);
    const kinds = ms.flatMap((m) => (m.refreshSameActive ? [m.refresh, m.refreshSameActive, m.query] : [m.refresh, m.query]));
    const target = (t: string): string => (n === r.large ? ` (target ${t})` : '');
    rows.push({ section: s, name: `GC pause p99 at ${n} registered, flat out${target('< 10 ms')}`, value: Math.max(...ms.map((m) => m.gc.p99Ms)), unit: 'ms', extra: { maxMs: Math.max(...ms.map((m) => m.gc.maxMs)), each: ms.map((m) => m.gc) } });
    rows.push({
      section: s, name: `max request latency at ${n} registered, flat out${target('< 50 ms')}`, value: Math.max(...kinds.map((k) => k.latencyMaxMs)), unit: 'ms',
      extra: { p99Ms: Math.max(...kinds.map((k) => k.latencyP99Ms)), lost: kinds.reduce((a, k) => a + k.lost, 0), each: kinds.map((k) => k.latencyMaxMs) },
    });
  }
  const rss = roundRssBytesPerTerminal(r);
  rows.push({ section: s, name: `process RSS per terminal, ${r.large} vs ${r.small} registered, loaded`, value: median(rss), unit: 'B', extra: { rounds: rss } });
  rows.push({ section: s, name: `restore of ${r.large} in devloc-locatord`, value: median(at(r.large).map((m) => m.restoreMs)), unit: 'ms', extra: { cpuMs: at(r.large).map((m) => m.restoreCpuMs), loadAverage: r.runs.map((m) => m.loadAverage) } });
  return rows;
}

// `node build/bench/scale1m.js` (ENTRIES, SMALL, ROUNDS, SECONDS, REFRESH_TERMINALS, CPU_PROF_DIR): print the figures as JSON.
if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop()!)) {
  const env = (k: string, d: number): number => Number(process.env[k] ?? d);
  benchScale1m({ large: env('ENTRIES', 1_000_000), small: env('SMALL', 10_000), rounds: env('ROUNDS', 3), seconds: env('SECONDS', 3), refreshTerminals: env('REFRESH_TERMINALS', 100_000), ...(process.env['CPU_PROF_DIR'] ? { cpuProfDir: process.env['CPU_PROF_DIR'] } : {}) }, (l) => process.stderr.write(`${l}\n`))
    .then((r) => process.stdout.write(`${JSON.stringify({ result: r, rows: scale1mRows(r) }, null, 2)}\n`), (e: Error) => {
      process.stderr.write(`${e.stack}\n`);
      process.exit(1);
    });
}
