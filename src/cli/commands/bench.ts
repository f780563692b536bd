// devloc bench (`npm run bench`): the benchmark sections of src/bench, the echo baseline first,
// every throughput also as a ratio of it; and the "terminals" section, N simulated terminals
// with real identities and crypto against a whole deployment (src/bench/terminals.ts), whose
// flags are most of the ones below. Flags are checked here, before anything starts.
import path from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { runHandler, UsageError } from '../util.js';

interface BenchArgs {
  seconds: number;
  only?: string;
  list: boolean;
  out: string;
  json?: string;
  csv?: string;
  terminals: number;
  workers: number;
  mix?: string;
  rate?: number;
  sweep?: string;
  window: number;
  timeout: number;
  svg?: string;
  'doc-chart': boolean;
  authd?: string;
  'authd-key'?: string;
  identities?: string;
  locatord?: string;
  matchd?: string;
}

const DOC_CHART = 'docs/bench-terminals.svg';

const intIn = (v: number, min: number, max: number): boolean => Number.isInteger(v) && v >= min && v <= max;

async function bench(a: BenchArgs): Promise<void> {
  const { listSections, runBench, SECTION_NAMES } = await import('../../bench/index.js');
  const { DEFAULT_MIX, DEFAULT_SWEEP, parseMix, parseSweep, planSweep } = await import('../../bench/mix.js');
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
    const { externalTarget } = await import('../../bench/terminals.js');
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

export const benchCommand: CommandModule<object, BenchArgs> = {
  command: 'bench',
  describe: 'measure throughput and latency (npm run bench): echo baseline, transport, codec, daemons, and N simulated terminals',
  builder: (y) =>
    y
      .usage(`devloc bench [options]

Run the benchmark sections in order, the bare node:dgram echo baseline first; every throughput
is also shown as a ratio of that same-run echo. The "terminals" section starts a throwaway
authd + locatord + matchd on 127.0.0.1 (or drives --authd ...), enrolls --terminals device
identities, and has them authenticate, register, then send a --mix of requests, flat out and at
offered rates (--sweep, --rate); per step and kind: offered and answered req/s, x echo,
p50/p90/p99/max latency, losses, error replies by code, and which process was the limit.
Writes <out>/latest.json, latest.csv, terminals.json, terminals.csv and an SVG chart.`)
      .option('seconds', { type: 'number', default: 3, describe: 'seconds per measurement (per sweep step for terminals)' })
      .option('only', { type: 'string', describe: 'run only these sections, comma-separated (the baseline always runs); see --list' })
      .option('list', { type: 'boolean', default: false, describe: 'list the sections and exit' })
      .option('out', { type: 'string', default: 'bench-results', describe: 'directory of the result files' })
      .option('json', { type: 'string', describe: 'also write the summary JSON (latest.json) here' })
      .option('csv', { type: 'string', describe: 'also write the summary CSV (latest.csv) here' })
      .option('terminals', { type: 'number', default: 200, describe: 'simulated terminals, each with its own enrolled device identity' })
      .option('workers', { type: 'number', default: 2, describe: 'load-generator processes the terminals are spread over' })
      .option('mix', { type: 'string', describe: 'kind=weight,... of auth, register, refresh, query-addr, query-status, group-create, group-join, group-leave, group-members, match-submit (or query, group, match); default auth=2,register=4,refresh=40,query-addr=16,query-status=10,group-create=2,group-join=4,group-leave=2,group-members=10,match-submit=10' })
      .option('rate', { type: 'number', describe: 'one step at this offered load, requests/s in total (open loop, paced)' })
      .option('sweep', { type: 'string', describe: 'steps of offered load: req/s, N% of the flat-out figure, or max (flat out); default max,25%,50%,75%,100%,125%' })
      .option('window', { type: 'number', default: 32, describe: 'flat out: requests outstanding per load generator' })
      .option('timeout', { type: 'number', default: 1000, describe: 'a request unanswered after this many ms is lost (never retransmitted)' })
      .option('svg', { type: 'string', describe: 'chart of the terminals sweep (default <out>/terminals.svg)' })
      .option('doc-chart', { type: 'boolean', default: false, describe: `also write the chart to ${DOC_CHART} (the README's)` })
      .option('authd', { type: 'string', describe: 'drive this authd (ip:port) instead of a throwaway stack' })
      .option('authd-key', { type: 'string', describe: "with --authd: authd's public key file" })
      .option('identities', { type: 'string', describe: 'with --authd: enrolled device key files (a directory of *.key, or one key file JSON per line)' })
      .option('locatord', { type: 'string', describe: 'with --authd: locatord ip:port (default: from the grant)' })
      .option('matchd', { type: 'string', describe: 'with --authd: matchd ip:port (default: from the grant)' })
      .example('devloc bench', 'every section, terminals swept from flat out to 125% of it')
      .example('devloc bench --only terminals --terminals 1000 --sweep 2000,4000,8000', 'baseline and terminals only, three offered loads')
      .example('devloc bench --only terminals --rate 3000 --mix refresh=80,query=20', 'one paced step of a custom mix')
      .example('devloc bench --only terminals --doc-chart', `refresh ${DOC_CHART}`) as unknown as Argv<BenchArgs>,
  handler: (a) => runHandler('bench', () => bench(a)),
};
