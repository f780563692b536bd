// `devloc bench` (`npm run bench`): checks the flags (src/cli/commands/bench.ts declares them),
// before anything starts, then runs the benchmark sections (index.ts), the echo baseline first,
// every throughput also as a ratio of it; and the "terminals" section, N simulated terminals
// with real identities and crypto against a whole deployment (terminals.ts).
import path from 'node:path';
import type { BenchArgs } from '../src/cli/commands/bench.js';
import { DOC_CHART } from '../src/cli/commands/bench.js';
import { UsageError } from '../src/cli/util.js';

const intIn = (v: number, min: number, max: number): boolean => Number.isInteger(v) && v >= min && v <= max;

/** The `devloc bench` handler's work: exits the process with the bench's status when done. */
export async function runBenchCommand(a: BenchArgs): Promise<void> {
  const { listSections, runBench, SECTION_NAMES } = await import('./index.js');
  const { DEFAULT_MIX, DEFAULT_SWEEP, parseMix, parseSweep, planSweep } = await import('./mix.js');
  if (a.list) {
    process.stdout.write(listSections());
    return;
  }
  if (!(a.seconds > 0) || a.seconds > 3600) throw new UsageError('--seconds: a number of seconds above 0 (at most 3600)');
  const only = a.only?.split(',').map((s) => s.trim()).filter(Boolean);
  const unknown = (only ?? []).filter((n) => !SECTION_NAMES.includes(n));
  if (unknown.length) throw new UsageError(`--only: unknown section(s) ${unknown.join(', ')}; known: ${SECTION_NAMES.join(', ')}`);
  if (!intIn(a.terminals, 2, 100_000)) throw new UsageError('--terminals: a whole number from 2 to 100000 (terminals look each other up and are matched in pairs)');
  if (!intIn(a.workers, 1, 64)) throw new UsageError('--workers: a whole number from 1 to 64');
  if (!intIn(a.window, 1, 100_000)) throw new UsageError('--window: a whole number of requests, at least 1');
  if (!intIn(a.timeout, 10, 60_000)) throw new UsageError('--timeout: milliseconds, a whole number from 10 to 60000');
  if (a.rate !== undefined && !(a.rate > 0 && Number.isFinite(a.rate))) throw new UsageError('--rate: requests per second above 0 (omit it, or use --sweep max, for flat out)');
  if (a.rate !== undefined && a.sweep !== undefined) throw new UsageError('--rate and --sweep: give one of them (--rate R is --sweep R)');
  const mix = a.mix === undefined ? { ok: true as const, value: DEFAULT_MIX } : parseMix(a.mix);
  if (!mix.ok) throw new UsageError(`--mix: ${mix.error}`);
  const sweep = parseSweep(a.rate !== undefined ? String(a.rate) : a.sweep ?? DEFAULT_SWEEP);
  if (!sweep.ok) throw new UsageError(`--${a.rate !== undefined ? 'rate' : 'sweep'}: ${sweep.error}`);
  const externalFlags = [a['authd-key'], a.identities, a.locatord, a.matchd].some((x) => x !== undefined);
  if (externalFlags && a.authd === undefined) throw new UsageError('--authd-key, --identities, --locatord and --matchd go with --authd (a deployment to drive)');
  if (a.authd !== undefined && (!a['authd-key'] || !a.identities)) throw new UsageError('--authd needs --authd-key (authd\'s public key file) and --identities (enrolled device key files)');
  let external;
  if (a.authd !== undefined) {
    const { externalTarget } = await import('./terminals.js');
    try {
      external = externalTarget({
        authd: a.authd, authdKey: a['authd-key']!, identities: a.identities!, terminals: a.terminals,
        ...(a.locatord ? { locatord: a.locatord } : {}), ...(a.matchd ? { matchd: a.matchd } : {}),
      });
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
  }
  const code = await runBench({
    seconds: a.seconds, out: a.out,
    ...(only ? { only } : {}), ...(a.json ? { json: a.json } : {}), ...(a.csv ? { csv: a.csv } : {}),
    terminals: {
      terminals: a.terminals, workers: a.workers, mix: mix.value, steps: planSweep(sweep.value), window: a.window, timeoutMs: a.timeout,
      svg: a.svg ?? path.join(a.out, 'terminals.svg'), ...(a['doc-chart'] ? { docChart: DOC_CHART } : {}), ...(external ? { external } : {}),
    },
  });
  // Children were killed, but a stray handle must not keep a finished bench alive.
  process.exit(code);
}

