// README's performance table is generated from one bench run (tools/gen-perf-table.ts, issue 16
// item 7): fail when it is not what docs/bench-run.json gives, and check the generator itself on
// a made-up run (rows it finds, sections that did not run or were skipped).
import { readFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import type { Run } from '../../tools/gen-perf-table.js';
import { BEGIN, END, perfTable, withTable } from '../../tools/gen-perf-table.js';
import { root } from '../helpers/daemon.js';

t.test('README.md carries the table of docs/bench-run.json', async (t) => {
  const run = JSON.parse(readFileSync(path.join(root, 'docs/bench-run.json'), 'utf8')) as Run;
  const readme = readFileSync(path.join(root, 'README.md'), 'utf8');
  t.equal(withTable(readme, perfTable(run)), readme, 'run: npx tsx tools/gen-perf-table.ts');
  t.equal(run.failed?.length ?? 0, 0, 'no section of the run failed');
});

t.test('the generator: figures from the run, ratios to its echo, sections absent or skipped said so', async (t) => {
  const run: Run = {
    date: '2026-12-06T10:00:00.000Z', node: 'v20.20.2', cpus: '2 x CPU', secondsPerSection: 3, durationS: 600, echoBaselinePerS: 50_000,
    results: [
      { section: 'baseline', name: 'udp echo (49 B, 2 workers x 32)', value: 50_000, unit: 'req/s', latency: { p50Ms: 0.5, p99Ms: 4 }, ratioToEcho: 1 },
      { section: 'locatord', name: 'REFRESH', value: 25_000, unit: 'req/s', ratioToEcho: 0.5 },
      { section: 'locatord', name: 'REFRESH: locatord CPU per datagram / echo server CPU per datagram', value: 1.96, unit: 'x', extra: { refreshPerCpuS: 41_234 } },
      { section: 'redis', name: 'skipped: redis-server not on PATH', value: 0, unit: 'skipped' },
    ],
  };
  const table = perfTable(run, { partialRun: true });
  t.ok(table.startsWith(BEGIN) && table.endsWith(END), 'between its markers');
  t.match(table, /\| bare node:dgram echo[^|]*\| 50,000 req\/s \(p50 0\.50 ms, p99 4\.00 ms\) \| 1\.000 \|/);
  t.match(table, /\| locatord REFRESH[^|]*\| 25,000 req\/s; 41,234 per locatord CPU-second; locatord CPU per datagram \*\*1\.96 x\*\*[^|]*\| 0\.500 \| re-REGISTER 26\.6k\/s/);
  t.match(table, /\| locatord on Redis[^|]*\| not measured in this run \(skipped: redis-server not on PATH\) \|/);
  t.match(table, /\| authd, one process \| not in this run \|/);
  t.match(table, /2026-12-06 \(2 x CPU, Node 20\.20\.2, 3 s per figure, 10 min in all/);
  t.throws(() => withTable('no markers here', table), /no .* block/);
  // A full run's section that ran without a line's row: a row renamed in bench/ is an error.
  t.throws(() => perfTable(run), /section locatord ran, but not the row\(s\) of "locatord QUERY_ADDR/);
  const renamed: Run = { ...run, results: run.results.map((r) => (r.name === 'REFRESH' ? { ...r, name: 'REFRESH flat out' } : r)) };
  t.throws(() => perfTable(renamed, {}), /section locatord ran, but not the row\(s\) of "locatord REFRESH/);
});

t.test('the scale1m line: the ratio at the same number of terminals refreshing, when the run has it', async (t) => {
  const row = (name: string, value: number, unit = 'req/CPU-s'): Run['results'][number] => ({ section: 'scale1m', name, value, unit });
  const rows = [
    row('REFRESH per locatord CPU-second, 1000000 registered', 43_000),
    row('QUERY_ADDR (1 ID) per locatord CPU-second, 1000000 registered', 46_000),
    row('REFRESH per CPU-second, 1000000 / 10000 registered, medians (target >= 0.95)', 0.93, 'x'),
    row('QUERY_ADDR per CPU-second, 1000000 / 10000 registered, medians (target >= 0.95)', 0.97, 'x'),
    row('GC pause p99 at 1000000 registered, flat out (target < 10 ms)', 2.5, 'ms'),
    row('max request latency at 1000000 registered, flat out (target < 50 ms)', 17.2, 'ms'),
  ];
  const run: Run = { date: '2026-12-06T15:00:00.000Z', node: 'v20.20.2', cpus: '2 x CPU', secondsPerSection: 3, durationS: 600, echoBaselinePerS: 50_000, results: rows };
  t.match(perfTable(run, { partialRun: true }), /REFRESH 43,000\/CPU-s, \*\*0\.93\*\* of 10,000 \(target >= 0\.95\); QUERY_ADDR/, 'an older run: without it');
  const withSame: Run = { ...run, results: [...rows, row('REFRESH per CPU-second with 10000 terminals refreshing in both, 1000000 / 10000 registered, medians', 0.98, 'x')] };
  t.match(perfTable(withSame, { partialRun: true }), /\*\*0\.93\*\* of 10,000 \(target >= 0\.95\) \(0\.98 with 10,000 of them refreshing, as many as at 10,000\); QUERY_ADDR/, 'a run before the row carried the number: read from its name');
  // Since the row carries the number in extra, that is what the text says (the name is only a fallback).
  const carried = { ...row('REFRESH per CPU-second with 10000 terminals refreshing in both, 1000000 / 10000 registered, medians', 0.98, 'x'), extra: { terminalsRefreshing: 12_000 } };
  t.match(perfTable({ ...run, results: [...rows, carried] }, { partialRun: true }), /\(0\.98 with 12,000 of them refreshing, as many as at 10,000\)/);
});
