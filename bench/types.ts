// What a benchmark section is, for bench/index.ts (`devloc bench`). A section is a name and an async
// function returning result rows; index.ts runs the echo baseline first and shows every
// throughput also as a ratio of it. To add one (e.g. authd), append to `sections` in index.ts:
//   { name: 'authd', run: async (ctx) => rowsFrom(await benchAuthd({ seconds: ctx.seconds })) },
import type { LatencySummary } from './stats.js';

export interface BenchResult {
  section: string;
  name: string;
  /** Throughput (or another figure: see unit). */
  value: number;
  /** 'req/s' and 'ops/s' are throughputs (shown against the echo baseline); others are not. */
  unit: string;
  latency?: Partial<LatencySummary>;
  /** Anything else worth keeping in the JSON (loss counts, sizes, parameters). */
  extra?: Record<string, unknown>;
}

export interface BenchContext {
  /** Seconds per load measurement (--seconds); micro-benchmarks take a fraction of it. */
  seconds: number;
  /** Progress to stderr. */
  log(line: string): void;
  /** Requests/s of the echo baseline, once the baseline section has run. */
  echoPerS?: number;
}

export interface Section {
  name: string;
  /** One line saying what it measures (printed with --list). */
  doc: string;
  run(ctx: BenchContext): Promise<BenchResult[]>;
}

export const isThroughput = (unit: string): boolean => unit === 'req/s' || unit === 'ops/s' || unit.endsWith('/s');
