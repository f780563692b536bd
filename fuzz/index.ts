// `npm run fuzz -- --seconds N [--seed S] [--only target,...]`: mutation fuzzing of every
// decoder of untrusted input and of the datagram server (see fuzz.ts, targets.ts). Prints
// executions, execs/s and crashes per target; writes crashing inputs to fuzz-crashes/ as hex;
// exits 1 on any crash. `--replay FILE.hex --only TARGET` reruns one saved input.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { replayInput, runFuzz } from './fuzz.js';

interface Args {
  seconds: number;
  seed?: number;
  only?: string[];
  replay?: string;
  crashDir: string;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { seconds: 10, crashDir: 'fuzz-crashes' };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!;
    const v = (): string => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${k} needs a value`);
      return x;
    };
    if (k === '--seconds') a.seconds = Number(v());
    else if (k === '--seed') a.seed = Number(v());
    else if (k === '--only') a.only = v().split(',').map((s) => s.trim()).filter(Boolean);
    else if (k === '--replay') a.replay = v();
    else if (k === '--crash-dir') a.crashDir = v();
    else if (k === '-h' || k === '--help') {
      process.stdout.write('usage: npm run fuzz -- [--seconds N] [--seed S] [--only target,...] [--crash-dir DIR] [--replay FILE.hex]\n');
      process.exit(0);
    } else throw new Error(`unknown argument ${k}`);
  }
  if (!Number.isFinite(a.seconds) || a.seconds <= 0) throw new Error('--seconds must be a positive number');
  if (a.seed !== undefined && !Number.isSafeInteger(a.seed)) throw new Error('--seed must be an integer');
  return a;
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  if (args.replay) {
    const target = args.only?.[0] ?? path.basename(args.replay).replace(/-[0-9a-f]{12}\.hex$/, '');
    const input = Buffer.from(readFileSync(args.replay, 'utf8').trim(), 'hex');
    try {
      const outcome = await replayInput(target, input, args.seed);
      process.stdout.write(`${target}: no crash (outcome ${outcome})\n`);
      return 0;
    } catch (err) {
      process.stdout.write(`${target}: ${(err as Error).stack ?? String(err)}\n`);
      return 1;
    }
  }
  const report = await runFuzz({
    seconds: args.seconds, crashDir: args.crashDir, log: (l) => process.stdout.write(l + '\n'),
    ...(args.seed !== undefined ? { seed: args.seed } : {}), ...(args.only ? { only: args.only } : {}),
  });
  const rows = report.targets.map((t) => [t.name, String(t.executions), t.execsPerS.toFixed(0), String(t.outcomes), String(t.corpus), String(t.crashes)]);
  const head = ['target', 'execs', 'execs/s', 'outcomes', 'corpus', 'crashes'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  process.stdout.write(`devloc fuzz: seed ${report.seed}, seeds from ${report.seeds}, ${report.seconds.toFixed(1)} s\n`);
  process.stdout.write(line(head) + '\n' + rows.map(line).join('\n') + '\n');
  process.stdout.write(`total: ${report.executions} executions, ${report.execsPerS.toFixed(0)} execs/s, ${report.crashes.length} distinct crash(es)\n`);
  for (const s of report.skipped) process.stdout.write(`skipped ${s.name}: ${s.reason}\n`);
  for (const c of report.crashes) process.stdout.write(`CRASH ${c.target} x${c.count}: ${c.message}${c.file ? ` -> ${c.file}` : ''}\n`);
  return report.crashes.length > 0 ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    process.stderr.write(`fuzz: ${err.message}\n`);
    process.exit(2);
  },
);
