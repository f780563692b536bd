// Figures for issue 18 item 6 (README "Presence at scale"): subscriptions (WATCH) and their pushes.
//
// - Memory: the subscription structure alone (watches.ts MemoryWatches, what an embedded
//   locatord holds) in its own process: `terminals` watchers each watching `perWatcher` random
//   others, whole-process RSS delta / subscriptions (locatord-worker.ts `watches`).
// - Pushes: a real locatord child on loopback; one load process owns the terminals that change
//   (PRESENCE_SET, status = send time), another `watchers` watcher sessions that acknowledge every
//   PRESENCE (so nothing is retransmitted) and record change-to-push latency. Registrations are
//   real REGISTERs with tickets made in the load processes (a few thousand: the daemon's cost
//   per push does not depend on how many others are registered, its table is a hash map).
//     1. latency: every watcher watches one changer; each of `latencyRates` changes/s paced for
//        `seconds` (2k, 5k, 10k: where the knee is), with the CPU each process spent per change
//        (locatord's beside the load generator's: a generator that limits shows there);
//     2. throughput: each changer watched by `perWatcher` watchers; changes flat out; pushes
//        delivered per second and per CPU-second of locatord (/proc: its user + system time);
//     3. fan-out: one terminal watched by all `watchers`; `fanOutRounds` single changes, each
//        waited for; time to the last watcher's push, and locatord CPU per change.
import { rmSync } from 'node:fs';
import { processCpuS } from './cpu.js';
import type { Child } from './locatord.js';
import { forkWorker, startBenchLocatord } from './locatord.js';
import type { CeilingResult, ReceivedPushes, RunResult } from './locatord-worker.js';
import type { LatencySummary } from './stats.js';
import type { BenchResult } from './types.js';
import { Histogram } from './stats.js';

export interface PresenceBenchOptions {
  /** Memory: terminals, each watching `perWatcher` (default 1,000,000 x 50). */
  terminals?: number;
  perWatcher?: number;
  /** Watcher sessions of the push runs (also the fan-out: one terminal watched by all of them). */
  watchers?: number;
  /** Seconds per push run. */
  seconds?: number;
  /** Offered changes/s of the latency runs, one run each (default 2,000, 5,000, 10,000). */
  latencyRates?: number[];
  /** One offered rate only (the same as `latencyRates: [latencyRate]`). */
  latencyRate?: number;
  fanOutRounds?: number;
  /** Profile locatord (node --cpu-prof) into this directory; it is then stopped by SIGTERM to write it. */
  cpuProfDir?: string;
}

export interface PresenceBenchResult {
  memory: { terminals: number; subscriptions: number; rssBytesPerSubscription: number; heapBytesPerSubscription: number; buildMs: number; rssMiB: number; lookupNsPerPush: number };
  /**
   * One per offered rate, ascending. `changesPerS`: answered per second of the offered window;
   * `cores`: CPU of each process over the run in cores, `usPerChange` the same per change
   * answered (where the latency's queueing is, and whether the load generator limits);
   * `maxLateMs`: how late the changers sent their latest change (their own lag).
   */
  latency: LatencyRun[];
  throughput: { fanOut: number; changes: number; pushes: number; copies: number; pushesPerS: number; pushesPerCpuS: number; locatordCpuS: number; seconds: number };
  /** A bare node:dgram process doing one send of the push's size and one receive of the ack's per notification. */
  ceiling: { pushBytes: number; ackBytes: number; opsPerS: number; opsPerCpuS: number; cpuS: number; seconds: number; ratio: number };
  fanOut: { watchers: number; rounds: number; complete: number; toLastPush: LatencySummary; cpuMsPerChange: number };
  runs: { paced: RunResult[]; flat: RunResult };
}

export interface LatencyRun {
  offered: number;
  changesPerS: number;
  pushes: number;
  fanOut: number;
  summary: LatencySummary;
  /** The changes sent after the run's first second only (the first pays for warm-up: the young generation growing to the new rate, code not yet optimised for it). */
  steady: LatencySummary;
  cores: { locatord: number; changers: number; watchers: number };
  usPerChange: { locatord: number; changers: number; watchers: number };
  maxLateMs: number;
  /** The worst latency of a change sent after the run's first second (the first pays for warm-up: code not yet optimised, caches cold). */
  maxMsAfterFirstS: number;
}

/** The worst latency of the pushes whose change was sent more than `afterMs` after the first one's (timeline slots). */
function worstAfter(timeline: ReceivedPushes['timeline'], afterMs: number): number {
  const start = Math.min(...timeline.map((x) => x[0]));
  let worst = 0;
  for (const [at, , maxMs] of timeline) if (at >= start + afterMs && maxMs > worst) worst = maxMs;
  // Rounded down: never above the run's own maximum, which is the same latency unrounded.
  return Math.floor(worst * 10) / 10;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Subscription memory only (own child with --expose-gc). */
export async function benchWatchMemory(terminals: number, perWatcher: number): Promise<PresenceBenchResult['memory']> {
  const child = forkWorker(['--expose-gc', '--max-old-space-size=16384']);
  try {
    return await child.ask<PresenceBenchResult['memory']>({ cmd: 'watches', terminals, perWatcher });
  } finally {
    child.proc.kill('SIGKILL');
  }
}

/** Collect what `watchers` received until `until(total)` or `timeoutMs` of nothing new. */
async function collect(watchers: Child, until: (r: ReceivedPushes) => boolean, timeoutMs: number): Promise<ReceivedPushes & { histogram: Histogram; steady: Histogram }> {
  const sum = { pushes: 0, copies: 0, lastAtMs: 0, pushBytes: 0, ackBytes: 0, histogram: new Histogram(), steady: new Histogram(), timeline: [] as ReceivedPushes['timeline'] };
  let quietSince = Date.now();
  for (;;) {
    const r = await watchers.ask<ReceivedPushes>({ cmd: 'received' });
    if (r.pushes > 0) quietSince = Date.now();
    sum.pushes += r.pushes;
    sum.copies += r.copies;
    sum.lastAtMs = Math.max(sum.lastAtMs, r.lastAtMs);
    if (r.pushBytes > 0) Object.assign(sum, { pushBytes: r.pushBytes, ackBytes: r.ackBytes });
    sum.histogram.merge(Histogram.fromJSON(r.latency));
    sum.steady.merge(Histogram.fromJSON(r.steadyLatency));
    sum.timeline.push(...r.timeline);
    const view = { ...sum, latency: sum.histogram.toJSON(), steadyLatency: sum.steady.toJSON() };
    if (until(view) || Date.now() - quietSince > timeoutMs) return view;
    await sleep(20);
  }
}

/**
 * The ceiling of a push on this machine (locatord-worker.ts `ceiling`): a bare node:dgram process
 * sending datagrams of the push's size to a peer that answers each with one of the ack's size.
 */
async function pushCeiling(pushBytes: number, ackBytes: number, seconds: number): Promise<Omit<PresenceBenchResult['ceiling'], 'ratio'>> {
  const peer = forkWorker();
  const sender = forkWorker();
  try {
    const { port } = await peer.ask<{ port: number }>({ cmd: 'echo', replyBytes: ackBytes });
    const r = await sender.ask<CeilingResult>({ cmd: 'ceiling', target: { ip: '127.0.0.1', port }, bytes: pushBytes, window: 256, seconds });
    const cpuS = Math.max(1e-3, r.cpuS);
    return {
      pushBytes, ackBytes, opsPerS: Math.round((r.ops * 1000) / r.ms), opsPerCpuS: Math.round(r.ops / cpuS),
      cpuS: Math.round(cpuS * 100) / 100, seconds: Math.round(r.ms / 10) / 100,
    };
  } finally {
    peer.proc.kill('SIGKILL');
    sender.proc.kill('SIGKILL');
  }
}

export async function benchPresence(o: PresenceBenchOptions = {}): Promise<PresenceBenchResult> {
  const perWatcher = o.perWatcher ?? 50;
  const n = o.watchers ?? 1000;
  const seconds = o.seconds ?? 5;
  const rates = [...(o.latencyRates ?? (o.latencyRate !== undefined ? [o.latencyRate] : [2000, 5000, 10_000]))].sort((a, b) => a - b);
  const rounds = o.fanOutRounds ?? 20;
  const memory = await benchWatchMemory(o.terminals ?? 1_000_000, perWatcher);

  const { dir, loc, setup } = await startBenchLocatord([], o.cpuProfDir ? { cpuProfDir: o.cpuProfDir } : {});
  const changers = forkWorker();
  const watchers = forkWorker();
  try {
    // n changers plus the one watched by everybody; n watchers.
    const [c] = await Promise.all([changers.ask<{ ids: string[] }>(setup(n + 1)), watchers.ask(setup(n))]);
    await Promise.all([changers.ask({ cmd: 'register', window: 64 }), watchers.ask({ cmd: 'register', window: 64 })]);
    await watchers.ask({ cmd: 'listen' });
    const all = Array.from({ length: n }, (_, i) => i);

    // 1. Latency at each offered rate, each change pushed to one watcher.
    await watchers.ask<RunResult>({ cmd: 'watch', window: 64, lists: all.map((i) => ({ watcher: i, targets: [c.ids[i]!] })) });
    await watchers.ask({ cmd: 'received' }); // the WATCH answers carry the status; pushes start now
    const pids = [loc.proc.pid, changers.proc.pid, watchers.proc.pid];
    const latency: LatencyRun[] = [];
    const pacedRuns: RunResult[] = [];
    for (const rate of rates) {
      // Changes sent a second or more after the run's first are also counted apart (its steady state).
      await watchers.ask({ cmd: 'steadyAfter', ms: 1000 });
      const cpu0 = pids.map((p) => processCpuS(p) ?? 0);
      const paced = await changers.ask<RunResult>({ cmd: 'change', changers: all, ratePerS: rate, seconds, window: 0 });
      const cpu = pids.map((p, i) => (processCpuS(p) ?? 0) - cpu0[i]!);
      const lat = await collect(watchers, (r) => r.pushes >= paced.answered, 2000);
      const cores = cpu.map((x) => Math.round((x / Math.max(1e-3, paced.ms / 1000)) * 100) / 100);
      const us = cpu.map((x) => Math.round((x * 1e6) / Math.max(1, paced.answered)));
      pacedRuns.push(paced);
      latency.push({
        offered: rate, changesPerS: Math.round((paced.answered * 1000) / Math.max(1, paced.sendMs ?? paced.ms)), pushes: lat.pushes, fanOut: 1,
        summary: lat.histogram.summary(), steady: lat.steady.summary(), maxLateMs: paced.maxLateMs ?? 0, maxMsAfterFirstS: worstAfter(lat.timeline, 1000),
        cores: { locatord: cores[0]!, changers: cores[1]!, watchers: cores[2]! },
        usPerChange: { locatord: us[0]!, changers: us[1]!, watchers: us[2]! },
      });
    }

    // 2. Throughput: each changer watched by `perWatcher` (watcher i: changers i .. i + perWatcher - 1).
    const fan = Math.min(perWatcher, n);
    await watchers.ask<RunResult>({ cmd: 'watch', window: 64, lists: all.map((i) => ({ watcher: i, targets: Array.from({ length: fan - 1 }, (_, k) => c.ids[(i + 1 + k) % n]!) })) });
    const cpu0 = processCpuS(loc.proc.pid) ?? 0;
    const t0 = performance.timeOrigin + performance.now();
    const flat = await changers.ask<RunResult>({ cmd: 'change', changers: all, ratePerS: 0, seconds, window: 32 });
    const thr = await collect(watchers, () => false, 1000);
    const wallS = Math.max(1e-3, (thr.lastAtMs - t0) / 1000);
    const cpuS = Math.max(1e-3, (processCpuS(loc.proc.pid) ?? 0) - cpu0);
    const ceiling = await pushCeiling(thr.pushBytes, thr.ackBytes, seconds);

    // 3. Fan-out: one terminal watched by all n watchers; one change at a time.
    await watchers.ask<RunResult>({ cmd: 'watch', window: 64, lists: all.map((i) => ({ watcher: i, targets: [c.ids[n]!] })) });
    await collect(watchers, () => false, 300);
    const toLast = new Histogram();
    let complete = 0;
    const cpu1 = processCpuS(loc.proc.pid) ?? 0;
    for (let r = 0; r < rounds; r++) {
      await changers.ask<RunResult>({ cmd: 'change', changers: [n], ratePerS: 0, seconds: 0, window: 1, count: 1 });
      const got = await collect(watchers, (x) => x.pushes >= n, 3000);
      if (got.pushes >= n) complete++;
      toLast.record(got.histogram.summary().maxMs);
    }
    const fanCpuMs = (((processCpuS(loc.proc.pid) ?? 0) - cpu1) * 1000) / rounds;

    return {
      memory,
      runs: { paced: pacedRuns, flat },
      latency,
      throughput: {
        fanOut: fan, changes: flat.answered, pushes: thr.pushes, copies: thr.copies, seconds: Math.round(wallS * 100) / 100,
        pushesPerS: Math.round(thr.pushes / wallS), pushesPerCpuS: Math.round(thr.pushes / cpuS), locatordCpuS: Math.round(cpuS * 100) / 100,
      },
      ceiling: { ...ceiling, ratio: Math.round((thr.pushes / cpuS / ceiling.opsPerCpuS) * 1000) / 1000 },
      fanOut: { watchers: n, rounds, complete, toLastPush: toLast.summary(), cpuMsPerChange: Math.round(fanCpuMs * 10) / 10 },
    };
  } finally {
    for (const p of [changers.proc, watchers.proc]) p.kill('SIGKILL');
    if (o.cpuProfDir) await loc.stop('SIGTERM', 30_000);
    else loc.proc.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The rows of `devloc bench --only presence`. */
export async function presenceRows(o: PresenceBenchOptions = {}): Promise<BenchResult[]> {
  const r = await benchPresence(o);
  const s = 'presence';
  const m = r.memory;
  return [
    { section: s, name: `RSS per subscription (${m.terminals} terminals x ${Math.round(m.subscriptions / m.terminals)})`, value: m.rssBytesPerSubscription, unit: 'B', extra: { ...m } },
    { section: s, name: `PRESENCE delivered, fan-out ${r.throughput.fanOut}, acked`, value: r.throughput.pushesPerS, unit: 'pushes/s', extra: { ...r.throughput } },
    { section: s, name: `PRESENCE per locatord CPU-second, fan-out ${r.throughput.fanOut}`, value: r.throughput.pushesPerCpuS, unit: 'pushes/CPU-s', extra: { ceilingRatio: r.ceiling.ratio } },
    { section: s, name: `ceiling: bare node:dgram, ${r.ceiling.pushBytes} B out + ${r.ceiling.ackBytes} B in per push`, value: r.ceiling.opsPerCpuS, unit: 'pushes/CPU-s', extra: { ...r.ceiling } },
    { section: s, name: 'PRESENCE per locatord CPU-second / ceiling', value: r.ceiling.ratio, unit: 'x' },
    ...r.latency.flatMap((l): BenchResult[] => [
      {
        section: s, name: `change -> push, ${l.offered} changes/s offered (fan-out 1)`, value: l.changesPerS, unit: 'changes/s', latency: l.summary,
        extra: { offered: l.offered, pushes: l.pushes, cores: l.cores, usPerChange: l.usPerChange, maxLateMs: l.maxLateMs, maxMsAfterFirstS: l.maxMsAfterFirstS },
      },
      { section: s, name: `change -> push, ${l.offered} changes/s, after the first second`, value: l.steady.count, unit: 'changes', latency: l.steady },
    ]),
    { section: s, name: `one change to ${r.fanOut.watchers} watchers: locatord CPU`, value: r.fanOut.cpuMsPerChange, unit: 'ms', latency: r.fanOut.toLastPush, extra: { rounds: r.fanOut.rounds, complete: r.fanOut.complete } },
  ];
}
