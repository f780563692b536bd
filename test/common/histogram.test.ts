// The bench's latency histogram (bench/stats.ts): percentiles within 1% (never below the
// true value), exact min/max/mean, and merging across workers through JSON.
import t from 'tap';
import { Histogram } from '../../bench/stats.js';

t.test('percentiles of 1..1000 ms', async (t) => {
  const h = new Histogram();
  for (let v = 1; v <= 1000; v++) h.record(v);
  const s = h.summary();
  t.equal(s.count, 1000);
  t.equal(s.maxMs, 1000);
  t.equal(s.meanMs, 500.5);
  for (const [q, exact] of [[0.5, 500], [0.9, 900], [0.99, 990], [1, 1000]] as const) {
    const got = h.quantile(q);
    t.ok(got >= exact && got <= exact * 1.01, `q${q}: ${got} within 1% above ${exact}`);
  }
  t.equal(h.quantile(0), 1, 'q0 is the minimum');
});

t.test('sub-millisecond and tiny values; garbage ignored', async (t) => {
  const h = new Histogram();
  for (const v of [0, 0.0005, 0.05, 0.05, 0.05, NaN, -1]) h.record(v);
  t.equal(h.count, 5, 'NaN and negatives are not recorded');
  t.equal(h.quantile(0.5), 0.05);
  t.equal(new Histogram().summary().p99Ms, 0, 'empty: zeros');
});

t.test('merge and JSON round trip give the same summary as one histogram', async (t) => {
  const all = new Histogram();
  const parts = [new Histogram(), new Histogram()];
  for (let i = 0; i < 5000; i++) {
    const v = ((i * 7919) % 10007) / 97;
    all.record(v);
    parts[i % 2]!.record(v);
  }
  const merged = Histogram.fromJSON(JSON.parse(JSON.stringify(parts[0]!.toJSON())) as ReturnType<Histogram['toJSON']>)
    .merge(Histogram.fromJSON(JSON.parse(JSON.stringify(parts[1]!.toJSON())) as ReturnType<Histogram['toJSON']>));
  const { meanMs: m1, ...a } = merged.summary();
  const { meanMs: m2, ...b } = all.summary();
  t.same(a, b);
  t.ok(Math.abs(m1 - m2) < 1e-9, 'same mean (up to float summation order)');
});
