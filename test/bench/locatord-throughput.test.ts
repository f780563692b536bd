// `benchLocatordThroughput` (the locatord section of `devloc bench`) at a small scale, so that it
// cannot rot: a locatord child and echo servers, the bare one and one that spins a fixed CPU time
// per datagram, driven by two generators; QUERY_ADDR of 4 IDs and of 1. Checks what the results say, not how fast.
import t from 'tap';
import { benchLocatordThroughput } from '../../bench/locatord.js';

t.test('benchLocatordThroughput, small: locatord, the bare echo and an echo that works, each answered and counted per CPU-second', async (t) => {
  const r = await benchLocatordThroughput({ seconds: 0.5, warmupSeconds: 0.2, sessionsPerWorker: 20, window: 8, idsPerQuery: 4, echoWorkUs: [4], moreQueryIds: [1], rounds: 2 });
  t.ok(r.refreshPerS > 0 && r.refreshPerCpuS > 0, 'REFRESH answered and counted per locatord CPU-second');
  t.ok(r.queryPerS > 0 && r.queryPerCpuS > 0, 'QUERY_ADDR answered and counted');
  t.ok(r.echoRefreshPerCpuS > 0 && r.refreshCpuXEcho > 0, 'the bare echo counted, the ratio made');
  t.equal(r.echoWithWork.length, 1, 'one row per amount of work asked for');
  const [w] = r.echoWithWork;
  t.equal(w!.workUs, 4);
  // Its ratio is a measurement (no bound asserted: under load the bare echo's own cost varies more than 4 us).
  t.ok(w!.cpuXEcho > 0, `the working echo counted per CPU-second (${w!.cpuXEcho} x the bare one)`);
  t.ok(Number.isFinite(w!.ioUs), 'its UDP part is reported');
  t.same(r.queriesByIds.map((q) => q.ids), [1], 'QUERY_ADDR of 1 ID measured besides the 4-ID phase');
  t.ok(r.queriesByIds[0]!.perCpuS > 0 && r.queriesByIds[0]!.echoPerCpuS > 0 && r.queriesByIds[0]!.cpuXEcho > 0, 'against locatord and the echo, the ratio made');
  // Two rounds of each pair (locatord, echo; then echo, locatord): a ratio per round, and the
  // reported one is of the medians (of two: their means), not of one round.
  for (const [what, each] of [['REFRESH', r.refreshCpuXEchoRounds], ['QUERY_ADDR', r.queryCpuXEchoRounds], ['QUERY_ADDR of 1 ID', r.queriesByIds[0]!.cpuXEchoRounds]] as const) {
    t.equal(each.length, 2, `${what}: one ratio per round`);
    t.ok(each.every((x) => x > 0), `${what}: each round measured both`);
  }
  t.equal(r.refreshCpuXEcho, Math.round((r.echoRefreshPerCpuS / r.refreshPerCpuS) * 100) / 100, 'the ratio of the medians');
  t.equal(r.lost, 0, 'nothing lost');
});
