// Partner search (issue 18 item 3; README "Presence at scale"): SEARCH requests a locatord child
// answers per CPU-second, with `terminals` online terminals registered under one media ID, every
// `lookingEvery`-th looking for a partner (the index holds those). The terminals are real
// REGISTERs with tickets made in `loaders` load processes, which exit once registered (the
// registrations last an hour; `registered` says how many were answered: one unanswered for a
// second is not sent again); two searcher processes (as the echo baseline's two load
// generators) then send SEARCHes flat out, each from a random point of the index (`after`), with
// a requirement every candidate is examined against (level 3..6: 40% of them match). Each SEARCH
// examines 64 candidates (MAX_SEARCH_SCAN) and answers what fits one datagram.
import { rmSync } from 'node:fs';
import { processCpuS } from './cpu.js';
import { forkWorker, startBenchLocatord } from './locatord.js';
import type { RunResult } from './locatord-worker.js';
import type { BenchResult } from './types.js';

export interface SearchBenchOptions {
  /** Online terminals (default 100,000). */
  terminals?: number;
  /** Every n-th looks for a partner (default 10: 10%). */
  lookingEvery?: number;
  /** Seconds of searching. */
  seconds?: number;
  /** Sessions per searcher process. */
  searchers?: number;
  /** Processes making and registering the terminals. */
  loaders?: number;
}

export interface SearchBenchResult {
  terminals: number;
  looking: number;
  registered: number;
  registerSeconds: number;
  searches: number;
  lost: number;
  seconds: number;
  searchesPerS: number;
  searchesPerCpuS: number;
  locatordCpuS: number;
}

const MEDIA = 'bench-chess';

export async function benchSearch(o: SearchBenchOptions = {}): Promise<SearchBenchResult> {
  const n = o.terminals ?? 100_000;
  const every = o.lookingEvery ?? 10;
  const seconds = o.seconds ?? 5;
  const loaders = Math.max(1, o.loaders ?? 4);
  const searchers = o.searchers ?? 32;
  const { dir, loc, setup } = await startBenchLocatord(['--max-entries', String(n + 1000)]);
  const procs = [loc.proc];
  try {
    // Registered in slices, each slice's k-th terminal looking when (offset + k) % every == 0.
    const t0 = Date.now();
    const per = Math.ceil(n / loaders);
    const registered = await Promise.all(Array.from({ length: loaders }, async (_, w) => {
      const count = Math.min(per, n - w * per);
      if (count <= 0) return 0;
      const child = forkWorker();
      procs.push(child.proc);
      await child.ask(setup(count));
      const r = await child.ask<RunResult>({ cmd: 'register', window: 64, presence: { mediaId: MEDIA, lookingEvery: every } });
      child.proc.kill('SIGKILL');
      return r.answered;
    }));
    const registerSeconds = (Date.now() - t0) / 1000;

    const searching = [forkWorker(), forkWorker()];
    procs.push(...searching.map((c) => c.proc));
    await Promise.all(searching.map((c) => c.ask(setup(searchers))));
    await Promise.all(searching.map((c) => c.ask({ cmd: 'register', window: 64 })));
    const cpu0 = processCpuS(loc.proc.pid) ?? 0;
    const s0 = performance.now();
    const runs = await Promise.all(searching.map((c) => c.ask<RunResult>({
      cmd: 'search', mediaId: MEDIA, seconds, window: 32, requirements: [{ attr: 'level', op: 1, min: 3, max: 6, mandatory: true }],
    })));
    const wallS = Math.max(1e-3, (performance.now() - s0) / 1000);
    const cpuS = Math.max(1e-3, (processCpuS(loc.proc.pid) ?? 0) - cpu0);
    const searches = runs.reduce((a, r) => a + r.answered, 0);
    return {
      terminals: n, looking: Math.ceil(n / every), registered: registered.reduce((a, b) => a + b, 0), registerSeconds: Math.round(registerSeconds * 10) / 10,
      searches, lost: runs.reduce((a, r) => a + r.lost, 0), seconds: Math.round(wallS * 100) / 100,
      searchesPerS: Math.round(searches / wallS), searchesPerCpuS: Math.round(searches / cpuS), locatordCpuS: Math.round(cpuS * 100) / 100,
    };
  } finally {
    for (const p of procs) p.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The rows of `devloc bench --only search`. */
export async function searchRows(o: SearchBenchOptions = {}): Promise<BenchResult[]> {
  const r = await benchSearch(o);
  const s = 'search';
  // What was registered (a REGISTER unanswered for a second on a loaded machine is not sent again).
  const what = `${r.registered} online, ${Math.round(100 / (o.lookingEvery ?? 10))}% looking`;
  return [
    { section: s, name: `SEARCH answered (${what}), 64 candidates each`, value: r.searchesPerS, unit: 'req/s', extra: { ...r } },
    { section: s, name: `SEARCH per locatord CPU-second (${what})`, value: r.searchesPerCpuS, unit: 'req/CPU-s' },
  ];
}
