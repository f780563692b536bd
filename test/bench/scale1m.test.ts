// `devloc bench --only scale1m` at a small scale, so the section cannot rot: locatord children
// restored from snapshots of 3,000 and 1,000 terminals, loaded flat out by two generators.
// Checks what the results say, not how fast: every snapshot restored whole, both kinds answered
// and counted per locatord CPU-second, GC pauses logged by the preloaded observer, one row per
// figure; and that the section is listed.
import t from 'tap';
import { SECTION_NAMES } from '../../bench/index.js';
import { restoredLocatorId, restoredSession } from '../../bench/locatord-worker.js';
import { benchScale1m, gcFigures, roundRatios, roundRssBytesPerTerminal, scale1mRows } from '../../bench/scale1m.js';
import type { Scale1mMeasurement, Scale1mResult } from '../../bench/scale1m.js';

t.test('the scale1m section is listed', async (t) => {
  t.ok(SECTION_NAMES.includes('scale1m'));
});

t.test('restoredLocatorId: a function of the index, 16 distinct bytes each', async (t) => {
  t.same(restoredLocatorId(7), restoredLocatorId(7));
  const ids = new Set(Array.from({ length: 10_000 }, (_, i) => restoredLocatorId(i).toString('hex')));
  t.equal(ids.size, 10_000);
  t.equal(restoredLocatorId(0).length, 16);
});

t.test('restoredSession: a function of the index, distinct session IDs and keys', async (t) => {
  t.same(restoredSession(9), restoredSession(9));
  const a = restoredSession(1);
  t.same([a.sid.length, a.terminalToServer.length, a.serverToTerminal.length], [16, 32, 32]);
  t.not(a.terminalToServer.toString('hex'), a.serverToTerminal.toString('hex'));
  const parts = new Set<string>();
  for (let i = 0; i < 5000; i++) for (const b of Object.values(restoredSession(i))) parts.add(b.toString('hex'));
  t.equal(parts.size, 15_000);
});

t.test('gcFigures: p99, longest and its kind, share of the wall time', async (t) => {
  const g = gcFigures([{ atMs: 1, ms: 2, kind: 1 }, { atMs: 2, ms: 30, kind: 2 }], 1000);
  t.equal(g.pauses, 2);
  t.equal(g.maxMs, 30);
  t.equal(g.maxKind, 2);
  t.equal(g.share, 0.032);
  t.equal(gcFigures([], 1000).maxMs, 0);
});

t.test('benchScale1m, small: both sizes restored, loaded and measured', async (t) => {
  // 2,000 restored terminals REFRESHed: all 1,000 of the small table, two thirds of the large.
  // Each proved the generator's address and was accepted first, its answers MACed under its
  // server-to-terminal key (benchScale1m throws otherwise: a restored session whose keys the
  // generators got wrong is not answered, or its answers do not verify: both checked).
  const r = await benchScale1m({ large: 3000, small: 1000, rounds: 1, seconds: 0.5, warmupSeconds: 0.2, sessionsPerWorker: 50, refreshTerminals: 2000, window: 8 });
  t.same(r.runs.map((m) => m.registered), [1000, 3000]);
  t.same(r.runs.map((m) => m.refreshTerminals), [1000, 2000]);
  for (const m of r.runs) {
    t.equal(m.refresh.errors + m.query.errors, 0, `no request refused at ${m.registered}`);
    t.ok(m.refresh.perS > 0 && m.refresh.perCpuS > 0, `REFRESH answered at ${m.registered}`);
    t.ok(m.query.perS > 0 && m.query.perCpuS > 0, `QUERY_ADDR answered at ${m.registered}`);
    t.ok(m.refresh.latencyMaxMs > 0 && m.refresh.latencyP99Ms <= m.refresh.latencyMaxMs);
    // The observer preloaded into the daemon logs its pauses. Counted since the child started: its
    // start-up and the restore allocate the same whatever the machine's load, while how many
    // requests (and scavenges) fit in the half-second runs does not (none did under load in CI).
    t.ok(m.gcPausesSinceStart > 0, `GC pauses logged at ${m.registered} (${m.gcPausesSinceStart} since the start, ${m.gc.pauses} under load)`);
    t.ok(m.gc.pauses <= m.gcPausesSinceStart);
    t.ok(m.rssBytes > 0);
  }
  t.same(roundRatios(r, (m) => m.refresh.perCpuS).length, 1);
  // At the large size, REFRESH again from as many terminals as refresh at the small one (1,000).
  const [small, large] = r.runs;
  t.equal(small!.refreshSameActive, null, 'not at the small size');
  t.ok(large!.refreshSameActive && large!.refreshSameActive.perCpuS > 0 && large!.refreshSameActive.errors === 0, 'answered at the large size, none refused');
  const rows = scale1mRows(r);
  const same = rows.find((x) => x.name === 'REFRESH per CPU-second with 1000 terminals refreshing in both, 3000 / 1000 registered, medians');
  const sameRatio = Math.round((large!.refreshSameActive!.perCpuS / small!.refresh.perCpuS) * 1000) / 1000;
  t.equal(same?.value, sameRatio, 'its row: one round, its ratio');
  t.same(same?.extra?.['rounds'], [sameRatio]);
  t.equal(same?.extra?.['terminalsRefreshing'], 1000, 'the number refreshing, for the table\'s text');
  t.ok(rows.every((x) => x.section === 'scale1m' && Number.isFinite(x.value)));
  const ratio = rows.find((x) => x.name.startsWith('REFRESH per CPU-second, 3000 / 1000'))!;
  const perCpuS = (n: number): number => r.runs.find((m) => m.registered === n)!.refresh.perCpuS;
  t.equal(ratio.value, Math.round((perCpuS(3000) / perCpuS(1000)) * 1000) / 1000, 'the ratio of the sizes\' medians (one round: its two figures)');
});

t.test('roundRatios: each round\'s large / small, whichever was measured first', async (t) => {
  const m = (registered: number, refresh: number, sameActive?: number): Scale1mMeasurement => ({
    registered,
    refresh: { perCpuS: refresh },
    refreshSameActive: sameActive === undefined ? null : { perCpuS: sameActive },
  }) as unknown as Scale1mMeasurement;
  // Round 1: small then large; round 2: large then small (the order alternates).
  const r = { large: 100, small: 10, runs: [m(10, 200), m(100, 190, 180), m(100, 150), m(10, 100)] } as unknown as Scale1mResult;
  t.same(roundRatios(r, (x) => x.refresh.perCpuS), [0.95, 1.5]);
  t.same(roundRatios(r, (x, side) => (side === 'large' ? x.refreshSameActive?.perCpuS : x.refresh.perCpuS)), [0.9], 'a round without the figure is left out');
  t.same(roundRatios(r, (x) => (x.registered === 10 ? 0 : 5)), [0, 0], 'a zero figure gives 0, not Infinity');
});

t.test('roundRssBytesPerTerminal: each round\'s RSS difference over the terminals between the sizes', async (t) => {
  const m = (registered: number, rssBytes: number): Scale1mMeasurement => ({ registered, rssBytes }) as unknown as Scale1mMeasurement;
  const r = { large: 100, small: 10, runs: [m(10, 5000), m(100, 41000), m(100, 50000), m(10, 14000), m(10, 1)] } as unknown as Scale1mResult;
  t.same(roundRssBytesPerTerminal(r), [400, 400], 'either order; an unpaired last measurement is left out');
});
