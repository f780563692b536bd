// `devloc bench --only presence` at a small scale, so the section cannot rot: the subscription
// memory figure from a real build of the structure, and pushes through a real locatord child
// (watchers acknowledging, latencies from the status text). Checks what the results say, not
// how fast: every subscription built, pushes delivered and acknowledged, percentiles ordered,
// each fan-out round measured, the ceiling measured; and that the section is listed.
import t from 'tap';
import { SECTION_NAMES } from '../../bench/index.js';
import { benchPresence, presenceRows } from '../../bench/presence.js';
import { runPresenceMicro } from '../../bench/presence-micro.js';

t.test('the presence section is listed', async (t) => {
  t.ok(SECTION_NAMES.includes('presence'));
});

t.test('benchPresence, small: memory, pushes, latency and fan-out figures', async (t) => {
  const r = await benchPresence({ terminals: 2000, perWatcher: 10, watchers: 20, seconds: 1, latencyRates: [100, 50], fanOutRounds: 2 });
  t.ok(r.memory.subscriptions > 2000 * 9 && r.memory.subscriptions <= 2000 * 10, `about 10 a terminal (${r.memory.subscriptions})`);
  // The heap figure is the structure's (it is live when measured). RSS at this scale (20k
  // subscriptions, ~1 MB) is page-granular and moves with what V8 commits and gives back around
  // the full GCs: 37-183 B in six idle runs, and <= 0 once in a loaded CI run. It is a figure at
  // 1M, not here: only that it is reported.
  t.ok(r.memory.heapBytesPerSubscription > 0, `heap measured (${r.memory.heapBytesPerSubscription} B per subscription)`);
  t.ok(Number.isFinite(r.memory.rssBytesPerSubscription), `RSS reported (${r.memory.rssBytesPerSubscription} B per subscription)`);
  t.same(r.latency.map((x) => x.offered), [50, 100], 'one latency run per offered rate, ascending');
  r.latency.forEach((x, i) => {
    const run = r.runs.paced[i]!;
    t.ok(x.pushes > 0, `${x.offered}/s: paced changes pushed`);
    // Served is per second of the offered window, not of it plus the wait for the last answers
    // (which made 10k/s served in full read 9,089/s).
    t.ok(run.sendMs !== undefined && run.sendMs >= 900 && run.sendMs < run.ms, `${x.offered}/s: the sending took the offered second (${run.sendMs} ms), the run more (${run.ms} ms)`);
    t.equal(x.changesPerS, Math.round((run.answered * 1000) / run.sendMs!), `${x.offered}/s: served = answered per second of the offered window`);
    const l = x.summary;
    t.ok(l.count > 0 && l.p50Ms <= l.p99Ms && l.p99Ms <= l.maxMs, `${x.offered}/s: latency percentiles ordered`);
    t.ok(x.maxMsAfterFirstS <= l.maxMs, `${x.offered}/s: the worst after the first second is within the worst`);
    // A 1 s run: the changes after its first second are few or none, and a subset of all.
    t.ok(x.steady.count <= l.count && (x.steady.count === 0 || x.steady.maxMs <= l.maxMs), `${x.offered}/s: the steady-state figures count a subset of the changes (${x.steady.count} of ${l.count})`);
    // /proc counts in 10 ms ticks: a few changes may cost a process none of them.
    t.ok([x.usPerChange.locatord, x.usPerChange.changers, x.usPerChange.watchers].every((u) => Number.isFinite(u) && u >= 0), `${x.offered}/s: CPU per change of locatord and of the load generator`);
  });
  t.equal(r.throughput.fanOut, 10);
  t.ok(r.throughput.pushes > 0 && r.throughput.pushesPerCpuS > 0, 'flat-out changes pushed, per CPU-second');
  t.ok(r.throughput.copies >= r.throughput.pushes, 'copies count retransmissions too');
  t.ok(r.ceiling.pushBytes > 0 && r.ceiling.ackBytes > 0, 'the ceiling sends datagrams of the push\'s and the ack\'s sizes');
  t.ok(r.ceiling.opsPerCpuS > 0 && r.ceiling.ratio > 0, 'the ceiling per CPU-second, locatord as a ratio of it');
  t.equal(r.fanOut.toLastPush.count, 2, 'each fan-out round measured');
  t.ok(r.fanOut.complete >= 1, 'a change reached all 20 watchers');
});

t.test('presenceRows: the rows of the section', async (t) => {
  // 2 s runs: the second one counts apart (the changes sent after the first).
  const rows = await presenceRows({ terminals: 500, perWatcher: 4, watchers: 8, seconds: 2, latencyRates: [50, 20], fanOutRounds: 1 });
  t.same(rows.map((r) => r.unit), ['B', 'pushes/s', 'pushes/CPU-s', 'pushes/CPU-s', 'x', 'changes/s', 'changes', 'changes/s', 'changes', 'ms']);
  t.same(rows.filter((r) => r.unit === 'changes/s').map((r) => (r.extra as { offered: number }).offered), [20, 50], 'a latency row per offered rate');
  t.ok(rows.every((r) => r.section === 'presence' && Number.isFinite(r.value)));
  const steady = rows.filter((r) => r.unit === 'changes');
  t.same(steady.map((r) => r.name), ['change -> push, 20 changes/s, after the first second', 'change -> push, 50 changes/s, after the first second']);
  rows.forEach((r, i) => {
    if (r.unit !== 'changes') return;
    const whole = rows[i - 1]!;
    // About the second half of the run's changes (pacing: not exactly).
    const total = whole.latency?.count ?? 0;
    t.ok(r.value > 0 && r.value < total && r.latency?.count === r.value, `${r.name}: ${r.value} of ${total} changes`);
    t.ok((r.latency?.maxMs ?? Infinity) <= (whole.latency?.maxMs ?? 0), `${r.name}: within the whole run's worst`);
  });
});

t.test('runPresenceMicro: an in-process locatord, every change pushed and its ack taken', async (t) => {
  // It throws when a change is not pushed or a push is left unacknowledged.
  const r = await runPresenceMicro(300, 2, 20);
  t.equal(r.changes, 300);
  t.equal(r.rounds.length, 2, 'one figure per round');
  t.ok(r.rounds.every((x) => Number.isFinite(x)) && r.rounds.includes(r.usPerChange), 'the median round is one of them');
});
