// `devloc bench` for real, short: the echo baseline and 20 simulated terminals (real enrolled
// identities, real crypto) against a throwaway authd + locatord + matchd, two paced steps of
// 1.5 s at a modest rate with every kind of request in the mix. Checks what the results say,
// not how fast: every kind answered, percentiles ordered, no error replies, ratios to the
// same-run echo, the CSV the same rows as the JSON, the SVG well-formed with its series.
// Also: --help, and bad arguments refused with a clear message before anything starts.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import t from 'tap';
import { KINDS } from '../../bench/mix.js';
import type { TerminalsReport } from '../../bench/terminals.js';
import { root } from '../helpers/daemon.js';
import { needs } from '../ops/tools.js';
import { parseTags, seriesPoints } from './svgparse.js';

const devloc = path.join(root, 'src/cli/devloc.ts');

// Under tap's per-file timeout (300 s, package.json): a bench that hangs is killed here and the test fails with its
// stderr (the phase it was in), instead of tap's bare timeout leaving the processes behind.
function run(args: string[], timeoutMs = 90_000): Promise<{ status: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['--import', 'tsx', devloc, ...args], { cwd: root, env: { ...process.env, COLUMNS: '100' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
    p.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, out, err });
    });
  });
}

t.test('devloc bench --help describes the flags, and they are all in devloc(1)', async (t) => {
  const h = await run(['bench', '--help']);
  t.equal(h.status, 0, 'exits 0');
  const flags = [...new Set([...h.out.matchAll(/^ {2,6}(?:-\w, )?(--[a-z][a-z0-9-]*)/gm)].map((m) => m[1]!))];
  for (const f of ['--terminals', '--mix', '--rate', '--sweep', '--svg', '--doc-chart', '--seconds', '--only', '--json', '--csv', '--list', '--authd', '--identities']) t.ok(flags.includes(f), `--help lists ${f}`);
  const mandoc = spawnSync('mandoc', ['-T', 'ascii', path.join(root, 'man/devloc.1')], { encoding: 'utf8', env: { ...process.env, MANWIDTH: '200' } });
  // Required in CI (.ci/run installs it); a skipped assertion, not a pass, elsewhere.
  if (!t.ok(!mandoc.error, 'mandoc renders devloc.1', needs('mandoc', !mandoc.error)) || mandoc.error) return;
  const text = mandoc.stdout.replace(/.\x08/g, '');
  const section = text.split(/^ {3}devloc bench$/m)[1]?.split(/^ {3}\S/m)[0] ?? '';
  t.not(section, '', 'devloc.1 has a "devloc bench" subsection');
  const missing = flags.filter((f) => !['--help', '--version'].includes(f) && !new RegExp(`(?<![\\w-])${f}(?![\\w-])`).test(section));
  t.same(missing, [], 'every flag of devloc bench --help is described in its subsection');
});

t.test('bad arguments exit 2 with a clear message, before anything runs', async (t) => {
  const cases: [string[], RegExp][] = [
    [['--terminals', '0'], /--terminals: a whole number from 2/],
    [['--rate', '-1'], /--rate: requests per second above 0/],
    [['--mix', 'refresh=1,teleport=2'], /--mix: unknown kind "teleport"/],
    [['--sweep', '100,fast'], /--sweep: "fast" is not a rate/],
    [['--rate', '100', '--sweep', '200'], /give one of them/],
    [['--only', 'nosuch'], /--only: unknown section\(s\) nosuch/],
    [['--identities', 'x'], /go with --authd/],
  ];
  const results = await Promise.all(cases.map(([args]) => run(['bench', ...args])));
  cases.forEach(([args, re], i) => {
    const r = results[i]!;
    t.equal(r.status, 2, `${args.join(' ')}: exit 2`);
    t.match(r.err, re, `${args.join(' ')}: says why`);
    t.notMatch(r.err, /bench: baseline/, `${args.join(' ')}: nothing ran`);
  });
});

t.test('a short real run: 20 terminals, every kind, two paced steps', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'devloc-bench-test-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const mix = KINDS.map((k) => `${k}=1`).join(',');
  const r = await run(['bench', '--only', 'terminals', '--terminals', '20', '--seconds', '1.5', '--sweep', '150,300', '--mix', mix,
    '--out', dir, '--svg', path.join(dir, 'chart.svg'), '--json', path.join(dir, 'copy.json'), '--timeout', '3000']);
  t.equal(r.status, 0, `exits 0${r.status === 0 ? '' : `: ${r.err.slice(-2000)}`}`);
  t.notMatch(r.err, /\x1b\[/, 'stderr is not a terminal: no escape codes');
  t.match(r.err, /bench: terminals step 1\/2: offered 150 req\/s: .*limit: /, 'a plain line per step, with its limit');
  t.match(r.err, /bench: terminals step 2\/2: offered 300 req\/s/);

  const report = JSON.parse(readFileSync(path.join(dir, 'terminals.json'), 'utf8')) as TerminalsReport;
  t.equal(report.target, 'self-started');
  t.equal(report.terminals, 20);
  t.equal(report.steps.length, 2);
  t.ok(report.echoBaselinePerS! > 0, 'the same-run echo baseline is in the report');
  t.same(report.setup.kinds.map((k) => [k.kind, k.answered === k.sent, k.lost]), [
    ['auth', true, 0], ['register', true, 0], ['match-submit', true, 0], ['match-cancel', true, 0], ['group-create', true, 0], ['group-join', true, 0],
  ].filter(([k]) => report.setup.kinds.some((x) => x.kind === k)), 'setup: every terminal authenticated, registered, opened matchd');
  t.equal(report.setup.kinds.find((k) => k.kind === 'auth')?.answered, 20, '20 terminals authenticated');
  for (const st of report.steps) {
    t.equal(st.mode, 'paced');
    t.same(st.kinds.map((k) => k.kind), [...KINDS], `step ${st.step}: every kind`);
    t.equal(st.errorReplies, 0, `step ${st.step}: no error replies at a modest rate`);
    t.same(st.errors, {}, `step ${st.step}: no error codes`);
    t.equal(st.generator.badReplies, 0, `step ${st.step}: every answer passed the session MAC`);
    const all = [{ kind: 'all', ...st }, ...st.kinds];
    for (const k of all) {
      const l = k.latency;
      t.ok(k.answered > 0, `step ${st.step} ${k.kind}: answered ${k.answered}`);
      t.ok(l.p50Ms > 0 && l.p50Ms <= l.p90Ms && l.p90Ms <= l.p99Ms && l.p99Ms <= l.maxMs, `step ${st.step} ${k.kind}: p50 <= p90 <= p99 <= max (${l.p50Ms}, ${l.p90Ms}, ${l.p99Ms}, ${l.maxMs})`);
      t.ok(Math.abs(k.ratioToEcho! - k.achievedPerS / report.echoBaselinePerS!) < 0.001, `step ${st.step} ${k.kind}: ratio to echo`);
    }
    t.equal(st.answered + st.lost, st.sent, `step ${st.step}: every request answered or lost`);
    t.equal(st.kinds.reduce((a, k) => a + k.sent, 0), st.sent, `step ${st.step}: kinds add up`);
    t.ok(st.matchResults.matched > 0, `step ${st.step}: matchd pushed matches (${st.matchResults.matched})`);
    t.type(st.bottleneck, 'string');
  }
  t.equal(report.steps[0]!.offeredPerS, 150);
  t.ok(report.steps[0]!.kinds.every((k) => Math.abs(k.offeredPerS! - 15) < 0.01), 'each kind offered its share');

  // CSV: the same rows as the JSON.
  const csv = readFileSync(path.join(dir, 'terminals.csv'), 'utf8').trim().split('\n').map((l) => l.split(','));
  const head = csv.shift()!;
  t.same(head.slice(0, 8), ['step', 'mode', 'offered_per_s', 'kind', 'sent', 'answered', 'achieved_per_s', 'ratio_to_echo']);
  t.equal(csv.length, report.steps.length * (KINDS.length + 1), 'a row per step and kind, and a total');
  const col = (name: string): number => head.indexOf(name);
  for (const st of report.steps) {
    for (const k of [...st.kinds, { ...st, kind: 'all' }]) {
      const row = csv.find((c) => c[col('step')] === String(st.step) && c[col('kind')] === k.kind);
      if (!t.ok(row, `CSV row for step ${st.step} ${k.kind}`)) continue;
      t.same([Number(row![col('sent')]), Number(row![col('answered')]), Number(row![col('achieved_per_s')]), Number(row![col('p50_ms')]), Number(row![col('p99_ms')]), Number(row![col('lost')])],
        [k.sent, k.answered, k.achievedPerS, k.latency.p50Ms, k.latency.p99Ms, k.lost], `CSV step ${st.step} ${k.kind} matches the JSON`);
    }
  }

  // The summary: baseline first, terminal rows with their ratio to it.
  const latest = JSON.parse(readFileSync(path.join(dir, 'latest.json'), 'utf8')) as { results: { section: string; value: number; ratioToEcho?: number }[]; echoBaselinePerS: number; terminals?: unknown };
  t.same(readFileSync(path.join(dir, 'copy.json'), 'utf8'), readFileSync(path.join(dir, 'latest.json'), 'utf8'), '--json writes the same summary');
  t.equal(latest.results[0]!.section, 'baseline');
  t.equal(latest.echoBaselinePerS, latest.results[0]!.value);
  const rows = latest.results.filter((x) => x.section === 'terminals');
  t.equal(rows.length, 2, 'a summary row per step');
  t.ok(rows.every((x) => x.ratioToEcho !== undefined && Math.abs(x.ratioToEcho - x.value / latest.echoBaselinePerS) < 1e-9), 'with the ratio to echo');
  t.ok(latest.terminals, 'the full terminals report is in latest.json too');

  // The chart.
  const svg = readFileSync(path.join(dir, 'chart.svg'), 'utf8');
  const parsed = parseTags(svg);
  t.ok(parsed.ok, parsed.error ?? 'the SVG is well-formed');
  for (const label of ['offered load (req/s)', 'answered (req/s)', 'latency (ms) (log scale)', 'x echo baseline']) t.ok(svg.includes(`>${label}<`), `axis label "${label}"`);
  const series = seriesPoints(svg);
  t.same([...series.keys()], ['achieved throughput', 'offered (ideal)', 'p50', 'p99'], 'one polyline per series');
  for (const [name, pts] of series) t.equal(pts.length, 2, `${name}: a point per step`);
});
