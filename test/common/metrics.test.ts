// Metrics: Prometheus text format (0.0.4) line by line, and the /metrics endpoint.
import t from 'tap';
import { latencyBucketsS, mergeExpositions, Metrics } from '../../src/common/metrics.js';
import { workerRestartDelayMs } from '../../src/common/workers.js';
import { httpGet } from '../helpers/metrics.js';

const SAMPLE = /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"(,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*\})? -?[0-9.e+-]+$/;
const HELP = /^# HELP [a-zA-Z_:][a-zA-Z0-9_:]* .+$/;
const TYPE = /^# TYPE [a-zA-Z_:][a-zA-Z0-9_:]* (counter|gauge|histogram)$/;

function sampled(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const l of text.split('\n')) if (l && !l.startsWith('#')) {
    const i = l.lastIndexOf(' ');
    out.set(l.slice(0, i), Number(l.slice(i + 1)));
  }
  return out;
}

t.test('render: every line is a HELP, TYPE or sample line; values as counted', async (t) => {
  const m = new Metrics();
  m.counter('requests_total', 'Requests handled');
  m.counter('never_total', 'Declared, never incremented');
  m.inc('requests_total', { type: 'REGISTER', result: 'ok' });
  m.inc('requests_total', { result: 'ok', type: 'REGISTER' }, 2);
  m.inc('requests_total', { type: 'QUERY_ADDR', result: 'BAD_MAC' });
  m.inc('plain_total');
  m.inc('odd_total', { why: 'quote " backslash \\ newline \n end' });
  let sessions = 7;
  m.gauge('sessions', 'Open sessions', () => sessions);
  for (const s of [0.00005, 0.0003, 0.003, 0.2, 3]) m.observe('request_duration_seconds', 'Time to handle a request', s);
  const text = m.render();
  t.ok(text.endsWith('\n'), 'ends with a newline');
  const lines = text.trimEnd().split('\n');
  for (const l of lines) t.ok(HELP.test(l) || TYPE.test(l) || SAMPLE.test(l), `well-formed: ${l}`);
  t.ok(lines.includes('# TYPE devloc_requests_total counter'));
  t.ok(lines.includes('# HELP devloc_requests_total Requests handled'));
  const v = sampled(text);
  t.equal(v.get('devloc_requests_total{result="ok",type="REGISTER"}'), 3, 'label order does not split a series');
  t.equal(v.get('devloc_requests_total{result="BAD_MAC",type="QUERY_ADDR"}'), 1);
  t.equal(v.get('devloc_never_total'), 0, 'declared counters render as 0');
  t.equal(v.get('devloc_plain_total'), 1);
  t.equal(v.get('devloc_sessions'), 7);
  sessions = 9;
  t.equal(sampled(m.render()).get('devloc_sessions'), 9, 'gauges are read at scrape time');
  t.equal(m.get('requests_total', { type: 'REGISTER', result: 'ok' }), 3);
  t.equal(m.total('requests_total'), 4);
  t.equal(m.total('absent_total'), 0);
  // Histogram: cumulative buckets, +Inf = count, sum.
  let prev = 0;
  for (const b of latencyBucketsS) {
    const c = v.get(`devloc_request_duration_seconds_bucket{le="${b}"}`)!;
    t.ok(c >= prev, `bucket ${b} is cumulative`);
    prev = c;
  }
  t.equal(v.get('devloc_request_duration_seconds_bucket{le="0.0001"}'), 1);
  t.equal(v.get('devloc_request_duration_seconds_bucket{le="0.5"}'), 4);
  t.equal(v.get('devloc_request_duration_seconds_bucket{le="+Inf"}'), 5);
  t.equal(v.get('devloc_request_duration_seconds_count'), 5);
  t.ok(Math.abs(v.get('devloc_request_duration_seconds_sum')! - 3.20335) < 1e-9);
  t.ok(lines.includes('# TYPE devloc_request_duration_seconds histogram'));
  // Each family has exactly one HELP and one TYPE line.
  const types = lines.filter((l) => l.startsWith('# TYPE')).map((l) => l.split(' ')[2]);
  t.equal(new Set(types).size, types.length, 'one TYPE per family');
});

t.test('series handles are kept by Metrics: one per series, counting where inc() does', async (t) => {
  const m = new Metrics();
  m.counter('requests_total', 'Requests handled');
  const ok = m.series('requests_total', { type: 'REGISTER', result: 'ok' });
  t.equal(m.series('requests_total', { result: 'ok', type: 'REGISTER' }), ok, 'the same handle, whatever the label order');
  t.not(m.series('requests_total', { type: 'REFRESH', result: 'ok' }), ok, 'another series, another handle');
  const byType = m.seriesBy('requests_total', 'type', { result: 'ok' });
  t.equal(m.seriesBy('requests_total', 'type', { result: 'ok' }), byType, 'the same lookup for the same arguments');
  t.not(m.seriesBy('requests_total', 'type', { result: 'BAD_MAC' }), byType, 'other fixed labels, another lookup');
  t.not(m.seriesBy('requests_total', 'result'), byType, 'another varying label, another lookup');
  t.equal(byType('REGISTER'), ok, 'a lookup hands out the series handle');
  t.equal(byType('QUERY_ADDR'), byType('QUERY_ADDR'), 'made once per value');
  t.equal(m.render(), '# HELP devloc_requests_total Requests handled\n# TYPE devloc_requests_total counter\ndevloc_requests_total 0\n', 'taking handles renders nothing');

  ok.inc();
  byType('REGISTER').inc(2);
  m.seriesBy('requests_total', 'result')('ok').inc();
  byType('QUERY_ADDR').inc();
  const viaInc = new Metrics();
  viaInc.counter('requests_total', 'Requests handled');
  viaInc.inc('requests_total', { type: 'REGISTER', result: 'ok' }, 3);
  viaInc.inc('requests_total', { result: 'ok' });
  viaInc.inc('requests_total', { result: 'ok', type: 'QUERY_ADDR' });
  t.equal(m.render(), viaInc.render(), 'the exposition is what inc() would have made');
  t.equal(m.get('requests_total', { type: 'REGISTER', result: 'ok' }), 3);
});

t.test('serve(): GET /metrics on 127.0.0.1:0', async (t) => {
  const m = new Metrics('devloc');
  m.counter('datagrams_received_total', 'Datagrams received');
  m.inc('datagrams_received_total', undefined, 42);
  const s = await m.serve('127.0.0.1', 0);
  t.teardown(() => s.close());
  t.ok(s.port > 0, 'bound port reported');
  const r = await httpGet(s.port, '/metrics');
  t.equal(r.status, 200);
  t.match(r.type, /^text\/plain; version=0\.0\.4/);
  t.equal(r.body, m.render());
  t.match(r.body, /^devloc_datagrams_received_total 42$/m);
  t.equal((await httpGet(s.port, '/metrics?name[]=x')).status, 200, 'a query string is fine');
  const nf = await httpGet(s.port, '/');
  t.equal(nf.status, 404);
  t.match(nf.body, /metrics/);
});

t.test('serve() rejects when the port is taken', async (t) => {
  const a = await new Metrics().serve('127.0.0.1', 0);
  t.teardown(() => a.close());
  await t.rejects(new Metrics().serve('127.0.0.1', a.port), { code: 'EADDRINUSE' });
});

t.test('mergeExpositions: one HELP/TYPE per family, samples together, each part labelled', (t) => {
  const worker = (n: number): string => {
    const m = new Metrics();
    m.inc('requests_total', { type: 'REFRESH', result: 'ok' }, n);
    m.observe('latency_seconds', 'Latency', 0.001);
    m.gauge('build_info', 'Version', () => 1, { version: '1.0.0' });
    return m.render();
  };
  const text = mergeExpositions([{ labels: {}, text: worker(1) }, { labels: { worker: '1' }, text: worker(2) }, { labels: { worker: '2' }, text: worker(3) }]);
  const lines = text.trim().split('\n');
  for (const l of lines) t.ok(SAMPLE.test(l) || HELP.test(l) || TYPE.test(l), `valid line: ${l}`);
  t.equal(lines.filter((l) => l === '# TYPE devloc_requests_total counter').length, 1, 'one TYPE per family');
  const s = sampled(text);
  t.equal(s.get('devloc_requests_total{result="ok",type="REFRESH"}'), 1);
  t.equal(s.get('devloc_requests_total{result="ok",type="REFRESH",worker="1"}'), 2);
  t.equal(s.get('devloc_requests_total{result="ok",type="REFRESH",worker="2"}'), 3);
  t.equal(s.get('devloc_latency_seconds_count{worker="2"}'), 1, 'unlabelled samples get the label');
  t.equal(s.get('devloc_latency_seconds_bucket{le="0.001",worker="1"}'), 1);
  // A family's samples are contiguous (the text format requires it).
  const family = lines.map((l) => /^(?:# \w+ )?(devloc_[a-z_]+?)(?:_bucket|_sum|_count)?[{ ]/.exec(l)?.[1]);
  const seen = new Set<string>();
  let last: string | undefined;
  for (const f of family) {
    if (f !== last) {
      t.notOk(seen.has(f!), `family ${f} appears in one block`);
      seen.add(f!);
      last = f;
    }
  }
  t.end();
});

t.test('workerRestartDelayMs: 1 s after a worker that ran, doubling while replacements die at once', (t) => {
  t.equal(workerRestartDelayMs(5, 0), 1000, 'first restart after 1 s');
  t.equal(workerRestartDelayMs(500, 1000), 2000);
  t.equal(workerRestartDelayMs(500, 32_000), 60_000, 'capped');
  t.equal(workerRestartDelayMs(500, 60_000), 60_000);
  t.equal(workerRestartDelayMs(10_000, 60_000), 1000, 'a worker that ran 10 s resets the wait');
  t.end();
});

t.test('seriesByPair: two varying labels, the same series and exposition as inc()', async (t) => {
  const m = new Metrics();
  m.counter('queries_total', 'Queries answered');
  const byPair = m.seriesByPair('queries_total', 'type', 'result');
  t.equal(m.seriesByPair('queries_total', 'type', 'result'), byPair, 'the same lookup for the same labels');
  t.not(m.seriesByPair('queries_total', 'result', 'type'), byPair, 'labels in another order, another lookup');
  t.equal(byPair('QUERY_ADDR', 'ok'), m.series('queries_total', { result: 'ok', type: 'QUERY_ADDR' }), 'the handle series() gives');
  t.not(byPair('QUERY_ADDR', 'ok'), byPair('QUERY_ADDR', 'rate-limited'), 'the second value tells series apart');
  t.not(byPair('QUERY_ADDR', 'ok'), byPair('WATCH', 'ok'), 'the first value tells series apart');
  byPair('QUERY_ADDR', 'ok').inc();
  byPair('QUERY_ADDR', 'ok').inc(4);
  byPair('WATCH', 'rate-limited').inc();
  m.inc('queries_total', { type: 'WATCH', result: 'rate-limited' });
  const viaInc = new Metrics();
  viaInc.counter('queries_total', 'Queries answered');
  viaInc.inc('queries_total', { type: 'QUERY_ADDR', result: 'ok' }, 5);
  viaInc.inc('queries_total', { type: 'WATCH', result: 'rate-limited' }, 2);
  t.equal(m.render(), viaInc.render(), 'the exposition is what inc() would have made');
});
