// `devloc bench --only presence` at a small scale, so the section cannot rot: the subscription
// memory figure from a real build of the structure, and pushes through a real locatord child
// (watchers acknowledging, latencies from the status text). Checks what the results say, not
// how fast: every subscription built, pushes delivered and acknowledged, percentiles ordered,
// each fan-out round measured, the ceiling measured; and that the section is listed.
import t from 'tap';
import { SECTION_NAMES } from '../../bench/index.js';
import { benchPresence, presenceRows } from '../../bench/presence.js';

t.test('the presence section is listed', async (t) => {
  t.ok(SECTION_NAMES.includes('presence'));
});

t.test('benchPresence, small: memory, pushes, latency and fan-out figures', async (t) => {
  const r = await benchPresence({ terminals: 2000, perWatcher: 10, watchers: 20, seconds: 1, latencyRate: 100, fanOutRounds: 2 });
  t.ok(r.memory.subscriptions > 2000 * 9 && r.memory.subscriptions <= 2000 * 10, `about 10 a terminal (${r.memory.subscriptions})`);
  t.ok(r.memory.rssBytesPerSubscription > 0 && r.memory.heapBytesPerSubscription > 0, 'memory measured');
  t.ok(r.latency.pushes > 0, 'paced changes pushed');
  const l = r.latency.summary;
  t.ok(l.count > 0 && l.p50Ms <= l.p99Ms && l.p99Ms <= l.maxMs, 'latency percentiles ordered');
  t.equal(r.throughput.fanOut, 10);
  t.ok(r.throughput.pushes > 0 && r.throughput.pushesPerCpuS > 0, 'flat-out changes pushed, per CPU-second');
  t.ok(r.throughput.copies >= r.throughput.pushes, 'copies count retransmissions too');
  t.ok(r.ceiling.pushBytes > 0 && r.ceiling.ackBytes > 0, 'the ceiling sends datagrams of the push\'s and the ack\'s sizes');
  t.ok(r.ceiling.opsPerCpuS > 0 && r.ceiling.ratio > 0, 'the ceiling per CPU-second, locatord as a ratio of it');
  t.equal(r.fanOut.toLastPush.count, 2, 'each fan-out round measured');
  t.ok(r.fanOut.complete >= 1, 'a change reached all 20 watchers');
});

t.test('presenceRows: the rows of the section', async (t) => {
  const rows = await presenceRows({ terminals: 500, perWatcher: 4, watchers: 8, seconds: 1, latencyRate: 50, fanOutRounds: 1 });
  t.same(rows.map((r) => r.unit), ['B', 'pushes/s', 'pushes/CPU-s', 'pushes/CPU-s', 'x', 'changes/s', 'ms']);
  t.ok(rows.every((r) => r.section === 'presence' && Number.isFinite(r.value)));
});
