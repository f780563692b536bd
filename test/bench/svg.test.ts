// The bench chart (bench/svg.ts): ticks, and a chart whose series, points, labels and
// markup can be checked without a browser.
import t from 'tap';
import { esc, logTicks, niceTicks, renderChart, tickLabel, wrapLine } from '../../bench/svg.js';
import { parseTags, seriesPoints } from './svgparse.js';

t.test('nice ticks', async (t) => {
  t.same(niceTicks(0, 10, 5), [0, 2, 4, 6, 8, 10]);
  t.same(niceTicks(0, 9400, 5), [0, 2000, 4000, 6000, 8000, 10000]);
  t.same(niceTicks(0.3, 0.9, 3), [0.2, 0.4, 0.6, 0.8, 1]);
  t.same(niceTicks(5, 5), [4.4, 4.6, 4.8, 5, 5.2, 5.4, 5.6], 'a flat range is widened');
  t.same(niceTicks(0, 0), [0, 1]);
  t.same(logTicks(0.3, 40), [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100]);
  t.same(logTicks(0.01, 1000), [0.01, 0.1, 1, 10, 100, 1000], 'many decades: powers of ten only');
  t.same([tickLabel(12000), tickLabel(1500), tickLabel(0.25), tickLabel(0), tickLabel(2_500_000)], ['12k', '1.5k', '0.25', '0', '2.5M']);
  t.equal(esc('a<b & "c"'), 'a&lt;b &amp; &quot;c&quot;');
});

t.test('a two-panel chart: axes, labels, one polyline per series with every point', async (t) => {
  const svg = renderChart({
    title: 'T <1>', subtitle: 'sub', xLabel: 'offered load (req/s)',
    panels: [
      {
        yLabel: 'answered (req/s)', rightAxis: { label: 'x echo', divisor: 50_000 }, guides: [{ y: 9000, label: 'flat out' }],
        series: [{ name: 'achieved', points: [[1000, 990], [2000, 1980], [4000, 3000]] }, { name: 'ideal', points: [[1000, 1000], [2000, 2000], [4000, 4000]], dashed: true }],
      },
      { yLabel: 'latency (ms)', yLog: true, series: [{ name: 'p50', points: [[1000, 0.4], [2000, 0.5], [4000, 20]] }, { name: 'p99', points: [[1000, 2], [2000, 0], [4000, 80]] }] },
    ],
  });
  const parsed = parseTags(svg);
  t.ok(parsed.ok, parsed.error ?? 'well-formed');
  for (const label of ['offered load (req/s)', 'answered (req/s)', 'latency (ms) (log scale)', 'x echo', 'flat out', 'T &lt;1&gt;']) t.ok(svg.includes(`>${label}<`), `label ${label}`);
  const s = seriesPoints(svg);
  t.same([...s.keys()], ['achieved', 'ideal', 'p50', 'p99']);
  t.equal(s.get('achieved')!.length, 3);
  t.equal(s.get('p99')!.length, 2, 'a 0 cannot be drawn on a log axis: dropped');
  t.equal((svg.match(/<circle class="point" data-series="achieved"/g) ?? []).length, 3, 'a marker per point');
  // Higher values are drawn higher (smaller y), on both the linear and the log panel.
  const a = s.get('achieved')!;
  t.ok(a[0]![0] < a[1]![0] && a[1]![0] < a[2]![0], 'x grows left to right');
  t.ok(a[0]![1] > a[1]![1] && a[1]![1] > a[2]![1], 'y grows upwards');
  const p50 = s.get('p50')!;
  t.ok(p50[0]![1] > p50[2]![1], 'log panel: 20 ms above 0.4 ms');
  t.ok(p50[2]![1] < s.get('achieved')![0]![1] + 10_000 && p50[0]![1] > a[0]![1], 'the second panel is below the first');
  t.match(svg, /class="ytick-right"[^>]*>0\.08</, 'right axis relabels 4000 req/s as 0.08 x echo');
});

t.test('empty series do not break the chart', async (t) => {
  const svg = renderChart({ title: 'empty', xLabel: 'x', panels: [{ yLabel: 'y', series: [{ name: 'none', points: [] }] }] });
  t.ok(parseTags(svg).ok);
  t.same(seriesPoints(svg).get('none'), []);
});

t.test('long subtitle lines wrap at commas or spaces, never mid-word when avoidable', async (t) => {
  const mix = 'mix auth=2%,register=4%,refresh=40%,query-addr=16%,query-status=10%,group-create=2%';
  const lines = wrapLine(mix, 40);
  t.ok(lines.length > 1, 'wrapped');
  t.ok(lines.every((l) => l.length <= 40), 'every piece fits');
  t.equal(lines.join(' ').replace(/ /g, ''), mix.replace(/ /g, ''), 'nothing lost');
  t.same(wrapLine('short', 40), ['short']);
  t.same(wrapLine('abcdefghij', 4), ['abcd', 'efgh', 'ij'], 'a word longer than the line is cut');
  const svg = renderChart({ title: 'x', subtitle: mix.repeat(3), xLabel: 'offered', panels: [] as never });
  t.ok((svg.match(/class="subtitle"/g) ?? []).length >= 3, 'several subtitle lines in the SVG');
});
