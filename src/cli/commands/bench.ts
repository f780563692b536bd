// `devloc bench` from a clone (`npm run bench`): its flags (checked and run by bench/cli.ts;
// the benchmark sections are in bench/, beside src/, not in the installed package). The
// "terminals" section, N simulated terminals with real identities and crypto against a whole
// deployment (bench/terminals.ts), takes most of the flags below.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Argv, CommandModule } from 'yargs';
import { CliError, runHandler } from '../util.js';

/** The parsed flags, as bench/cli.ts receives them. */
export interface BenchArgs {
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

export const DOC_CHART = 'docs/bench-terminals.svg';

/**
 * bench/cli.ts of the tree we run from: bench/ beside src/ (through tsx), or build/bench/ beside
 * build/src/ (`npm run bench` compiles both with tsconfig.tools.json). dist/ has no bench.
 */
function benchModule(): string {
  const here = fileURLToPath(import.meta.url);
  return path.resolve(path.dirname(here), '../../../bench', here.endsWith('.ts') ? 'cli.ts' : 'cli.js');
}

async function bench(a: BenchArgs): Promise<void> {
  const file = benchModule();
  if (!existsSync(file)) {
    throw new CliError('the benchmarks are not part of the installed package: they run from a clone of the devloc repository, ' +
      'with `npm ci` then `npm run bench -- [options]` (the same options)');
  }
  const { runBenchCommand } = (await import(pathToFileURL(file).href)) as { runBenchCommand(a: BenchArgs): Promise<void> };
  await runBenchCommand(a);
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
