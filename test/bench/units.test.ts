// Pure parts of `devloc bench`: the open-loop pacer (fake clock), the latency histogram's
// percentiles, --mix and --sweep parsing, the kind picker, the bottleneck sentence and the
// progress line. The real run is in terminals.test.ts.
import t from 'tap';
import { DEFAULT_MIX, formatMix, KINDS, kindPicker, normaliseMix, parseMix, parseSweep, planSweep } from '../../bench/mix.js';
import { Pacer } from '../../bench/pacer.js';
import { progressLine } from '../../bench/progress.js';
import { Histogram } from '../../bench/stats.js';
import { diagnose } from '../../bench/terminals.js';

t.test('pacer: request k is due at start + k / rate, late ones are counted', async (t) => {
  const p = new Pacer(1000, 100, 1100); // 1000/s for 1 s: 1000 requests, one per ms
  t.equal(p.total, 1000, 'a step offers rate x seconds');
  t.same(p.take(99), { count: 0, lateMs: 0 }, 'nothing before the start');
  t.equal(p.take(100).count, 1, 'request 0 is due at the start');
  t.equal(p.take(100).count, 0, 'not handed out twice');
  let onTime = 0;
  for (let ms = 101; ms <= 110; ms++) onTime += p.take(ms + 0.5).count;
  t.equal(onTime, 10, 'requests 1..10, one per ms');
  t.equal(p.sent, 11);
  t.equal(p.late, 0, 'on time');
  // The generator stalls for 50 ms: the 50 requests due meanwhile go out at once, late.
  const burst = p.take(160.5);
  t.equal(burst.count, 50);
  t.ok(burst.lateMs > 40 && burst.lateMs <= 50, `first of the burst ~49 ms late (${burst.lateMs})`);
  t.equal(p.late, 45, 'those more than 5 ms late are counted');
  t.ok(p.maxLateMs >= 49);
  t.equal(p.take(5000).count, 1000 - 61, 'never more than the step offers, even long after its end');
  t.equal(p.sent, 1000);
  t.throws(() => new Pacer(0, 0, 1000), RangeError, 'a rate of 0 is refused');
  const slow = new Pacer(3, 0, 1000);
  t.equal(slow.total, 3, 'at 3/s for 1 s: due at 0, 333, 667');
  t.equal(slow.take(1000).count, 3);
});

t.test('histogram: percentiles within 1%, ordered, mergeable', async (t) => {
  const h = new Histogram();
  for (let i = 1; i <= 1000; i++) h.record(i / 10); // 0.1 .. 100 ms
  const s = h.summary();
  t.equal(s.count, 1000);
  const near = (got: number, want: number): boolean => got >= want && got <= want * 1.0101;
  t.ok(near(s.p50Ms, 50), `p50 ${s.p50Ms} ~ 50`);
  t.ok(near(s.p90Ms, 90), `p90 ${s.p90Ms} ~ 90`);
  t.ok(near(s.p99Ms, 99), `p99 ${s.p99Ms} ~ 99`);
  t.equal(s.maxMs, 100);
  t.ok(s.p50Ms <= s.p90Ms && s.p90Ms <= s.p99Ms && s.p99Ms <= s.maxMs, 'ordered');
  const a = new Histogram();
  const b = new Histogram();
  for (let i = 1; i <= 500; i++) a.record(i / 10);
  for (let i = 501; i <= 1000; i++) b.record(i / 10);
  const m = Histogram.fromJSON(JSON.parse(JSON.stringify(a.toJSON()))).merge(Histogram.fromJSON(JSON.parse(JSON.stringify(b.toJSON()))));
  t.same(m.summary(), s, 'merging two halves through JSON gives the same summary');
  const one = new Histogram();
  one.record(3);
  t.same([one.quantile(0.5), one.quantile(0.99), one.summary().maxMs], [3, 3, 3], 'a single value is every percentile');
  t.equal(new Histogram().summary().p99Ms, 0, 'empty: zeros');
});

t.test('--mix: kinds, aliases, errors', async (t) => {
  const m = parseMix('refresh=3,query=2');
  t.ok(m.ok);
  if (!m.ok) return;
  t.equal(m.value.refresh, 3);
  t.equal(m.value['query-addr'], 1, 'an alias splits its weight');
  t.equal(m.value['query-status'], 1);
  t.equal(m.value.auth, 0, 'unnamed kinds get nothing');
  t.equal(formatMix(m.value), 'refresh=60%,query-addr=20%,query-status=20%');
  const bad = parseMix('refresh=1,teleport=2');
  t.notOk(bad.ok);
  if (!bad.ok) t.match(bad.error, /unknown kind "teleport"/);
  t.notOk(parseMix('refresh').ok, 'a weight is required');
  t.notOk(parseMix('refresh=0').ok, 'all zero is refused');
  t.notOk(parseMix('refresh=-1').ok, 'negative weights are refused');
  t.notOk(parseMix('').ok);
  const d = normaliseMix(DEFAULT_MIX);
  t.ok(Math.abs(KINDS.reduce((a, k) => a + d[k], 0) - 1) < 1e-9, 'the default mix sums to 100%');
  t.ok(KINDS.every((k) => d[k] > 0), 'the default mix sends every kind');
});

t.test('kind picker follows the shares and never picks a kind without one', async (t) => {
  const m = parseMix('auth=1,refresh=3');
  if (!m.ok) throw new Error(m.error);
  const pick = kindPicker(m.value);
  const counts = new Map<string, number>();
  for (let i = 0; i < 1000; i++) {
    const k = KINDS[pick(i / 1000)]!;
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  t.same(Object.fromEntries(counts), { auth: 250, refresh: 750 }, 'uniform inputs give the shares exactly');
  t.equal(KINDS[pick(0.999999)], 'refresh');
});

t.test('--sweep and --rate', async (t) => {
  t.same(parseSweep('max,1000,50%'), { ok: true, value: [{ kind: 'max' }, { kind: 'rate', perS: 1000 }, { kind: 'percent', percent: 50 }] });
  for (const bad of ['', '-1', '0', 'fast', '0%', '10,,x']) t.notOk(parseSweep(bad).ok, `"${bad}" refused`);
  t.same(planSweep([{ kind: 'percent', percent: 50 }]), [{ kind: 'max' }, { kind: 'percent', percent: 50 }], 'a share needs a flat-out step first');
  t.same(planSweep([{ kind: 'rate', perS: 5 }]), [{ kind: 'rate', perS: 5 }], 'absolute rates need none');
  t.same(planSweep([{ kind: 'max' }, { kind: 'percent', percent: 50 }]).length, 2);
});

t.test('bottleneck sentence', async (t) => {
  const base = { paced: true, offeredPerS: 1000, achievedPerS: 1000, lost: 0, sent: 1000, eventLoopBusy: [0.2, 0.2], lateShare: 0, machineBusy: 0.3, cores: 2 };
  t.match(diagnose({ ...base, processes: { locatord: 0.3, 'generator 1': 0.1 } }), /^none: the offered load was served/);
  t.match(diagnose({ ...base, processes: { locatord: 0.97, 'generator 1': 0.1 }, machineBusy: 0.6 }), /^locatord: its event loop used 0.97/);
  t.match(diagnose({ ...base, eventLoopBusy: [0.95, 0.5], processes: { locatord: 0.97 } }), /^load generator/, 'a saturated generator comes first');
  t.match(diagnose({ ...base, processes: { locatord: 0.5, 'generator 1': 0.4 }, machineBusy: 0.98 }), /^CPU: .*other processes 1\.0/, 'other processes are counted');
  t.match(diagnose({ ...base, lost: 100, processes: { locatord: 0.2 } }), /10% lost with CPU to spare/);
  t.match(diagnose({ ...base, lateShare: 0.2, processes: { locatord: 0.2 } }), /20% of requests went out more than 5 ms late/);
  t.match(diagnose({ ...base, paced: false, offeredPerS: null, lateShare: null, processes: { locatord: 0.5 } }), /window of outstanding requests/);
  t.match(diagnose({ ...base, machineBusy: null, processes: {} }), /^none/, 'works without /proc');
});

t.test('progress line has no escape codes', async (t) => {
  const l = progressLine({ label: 'step 1/2', fraction: 0.5, sent: 1234, answered: 1200, lost: 3, errors: 0 }, 10);
  t.equal(l, '[#####.....]  50% step 1/2  sent 1,234  answered 1,200  lost 3  errors 0');
  t.notMatch(l, /\x1b/);
  t.match(progressLine({ label: 'x', fraction: 7, sent: 0, answered: 0, lost: 0, errors: 0 }, 4), /^\[####\] 100%/, 'clamped');
});

t.test('--identities: a directory of *.key files or one key file per line', async (t) => {
  const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const path = await import('node:path');
  const { keyFileToJson, newDeviceKey, newServiceKey } = await import('../../src/wire/keys.js');
  const { loadIdentities } = await import('../../bench/terminals.js');
  const dir = mkdtempSync(path.join(tmpdir(), 'bench-ids-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const keys = [newDeviceKey('DEV-A'), newDeviceKey('DEV-B'), newDeviceKey('DEV-C')];
  keys.forEach((k, i) => writeFileSync(path.join(dir, `d${i}.key`), keyFileToJson(k)));
  writeFileSync(path.join(dir, 'notes.txt'), 'not a key');
  t.same(loadIdentities(dir, 2).map((x) => [x.index, x.deviceId]), [[0, 'DEV-A'], [1, 'DEV-B']], 'the first n *.key files, in name order');
  const lines = path.join(dir, 'ids.jsonl');
  writeFileSync(lines, keys.map((k) => JSON.stringify(JSON.parse(keyFileToJson(k)))).join('\n') + '\n\n');
  const got = loadIdentities(lines, 3);
  t.same(got.map((x) => x.deviceId), ['DEV-A', 'DEV-B', 'DEV-C']);
  t.equal(Buffer.from(got[0]!.signSecret, 'base64url').length, 32, 'the secret key travels to the load generator');
  t.throws(() => loadIdentities(lines, 4), /3 device identities, 4 terminals asked for/);
  writeFileSync(path.join(dir, 'svc.jsonl'), JSON.stringify(JSON.parse(keyFileToJson(newServiceKey('locator')))) + '\n');
  t.throws(() => loadIdentities(path.join(dir, 'svc.jsonl'), 1), /kind "service", not "device"/);
});
