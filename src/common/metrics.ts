// Counters, gauges and a latency histogram, rendered in the Prometheus text format (0.0.4).
// Small on purpose: a Map lookup per increment on the hot path, no labels parsing. Hot callers
// take a `series()` handle once, so that the label key is not rebuilt for every increment, or a
// `seriesBy()` lookup when one label varies per request (`seriesByPair()` when two do). Metrics
// keeps every handle it made, so a caller never needs a cache of its own (one Metrics per daemon,
// or per test).

type LabelSet = Record<string, string>;

const labelUnsafe = /["\\\n]/g;

function labelPair(k: string, v: unknown): string {
  return `${k}="${String(v).replace(labelUnsafe, '_')}"`;
}

function labelKey(labels: LabelSet | undefined): string {
  if (!labels) return '';
  const keys = Object.keys(labels);
  // One label (the common case): nothing to sort.
  if (keys.length === 1) return labelPair(keys[0]!, labels[keys[0]!]);
  keys.sort();
  return keys.map((k) => labelPair(k, labels[k])).join(',');
}

/** One counter series (a name and a label set) with its key computed once. */
export interface CounterSeries {
  inc(by?: number): void;
}

/** The series of one counter that differ only in one label: the handle for that label's value. */
export type SeriesByLabel = (value: string) => CounterSeries;

/** The series of one counter told apart by two labels: the handle for their values. */
export type SeriesByPair = (first: string, second: string) => CounterSeries;

interface Family {
  help: string;
  type: 'counter' | 'gauge' | 'histogram';
  values: Map<string, number>;
  buckets?: number[];
  /** Histograms: observations per bucket (not cumulative; the last slot is above every bucket). */
  bucketCounts?: Float64Array;
  count?: number;
  sum?: number;
  collect?: () => number;
  /** Gauges: constant label pairs, rendered. */
  gaugeLabels?: string;
  /** Counters: the handles series() made, by label key (created with the first). */
  handles?: Map<string, CounterSeries>;
  /** Counters: the lookups seriesBy() made, by varying label (and fixed labels' key). */
  byLabel?: Map<string, SeriesByLabel>;
  /** Counters: the lookups seriesByPair() made, by their first label, then their second. */
  byPair?: Map<string, Map<string, SeriesByPair>>;
}

export const latencyBucketsS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5];

export class Metrics {
  private readonly families = new Map<string, Family>();
  constructor(readonly prefix = 'devloc') {}

  private family(name: string, type: Family['type'], help: string): Family {
    let f = this.families.get(name);
    if (!f) {
      f = { help, type, values: new Map() };
      this.families.set(name, f);
    }
    return f;
  }

  /** Declare a counter (so it renders as 0 before the first increment). */
  counter(name: string, help: string): void {
    this.family(name, 'counter', help);
  }

  inc(name: string, labels?: LabelSet, by = 1): void {
    const f = this.family(name, 'counter', name);
    const k = labelKey(labels);
    f.values.set(k, (f.values.get(k) ?? 0) + by);
  }

  /**
   * A handle on one series of counter `name`, for increments on a hot path; the same handle for
   * the same series every time. Taking it builds the label key: take it once, not per increment.
   */
  series(name: string, labels?: LabelSet): CounterSeries {
    const f = this.family(name, 'counter', name);
    const k = labelKey(labels);
    const handles = (f.handles ??= new Map());
    let h = handles.get(k);
    if (!h) {
      const values = f.values;
      h = { inc: (by = 1) => void values.set(k, (values.get(k) ?? 0) + by) };
      handles.set(k, h);
    }
    return h;
  }

  /**
   * Counter `name`'s series told apart by `label` alone (the others `fixed`), for a hot path whose
   * label value varies per call (a message name, an outcome): a Map lookup by the value, its
   * handle made on first use. The same lookup for the same arguments every time; without `fixed`
   * it costs two Map lookups to get, with it a label key too (take it once then).
   */
  seriesBy(name: string, label: string, fixed?: LabelSet): SeriesByLabel {
    const f = this.family(name, 'counter', name);
    const key = fixed ? `${label}{${labelKey(fixed)}}` : label;
    const lookups = (f.byLabel ??= new Map());
    let lookup = lookups.get(key);
    if (!lookup) {
      const byValue = new Map<string, CounterSeries>();
      lookup = (value) => {
        let h = byValue.get(value);
        if (!h) byValue.set(value, (h = this.series(name, { ...fixed, [label]: value })));
        return h;
      };
      lookups.set(key, lookup);
    }
    return lookup;
  }

  /**
   * Counter `name`'s series told apart by two labels, both varying per call (a query's type and
   * its outcome): two Map lookups by the values, no label key built per increment (building one
   * from an object was ~5% of a QUERY_ADDR's CPU). The same lookup for the same labels every time.
   */
  seriesByPair(name: string, first: string, second: string): SeriesByPair {
    const f = this.family(name, 'counter', name);
    const byFirstLabel = (f.byPair ??= new Map());
    let pairs = byFirstLabel.get(first);
    if (!pairs) byFirstLabel.set(first, (pairs = new Map()));
    let lookup = pairs.get(second);
    if (!lookup) {
      const byFirst = new Map<string, Map<string, CounterSeries>>();
      lookup = (a, b) => {
        let bySecond = byFirst.get(a);
        if (!bySecond) byFirst.set(a, (bySecond = new Map()));
        let h = bySecond.get(b);
        if (!h) bySecond.set(b, (h = this.series(name, { [first]: a, [second]: b })));
        return h;
      };
      pairs.set(second, lookup);
    }
    return lookup;
  }

  get(name: string, labels?: LabelSet): number {
    return this.families.get(name)?.values.get(labelKey(labels)) ?? 0;
  }

  /** Sum of a counter over all label sets. */
  total(name: string): number {
    let s = 0;
    for (const v of this.families.get(name)?.values.values() ?? []) s += v;
    return s;
  }

  /** A gauge read at scrape time (optionally with constant labels, e.g. build_info{version}). */
  gauge(name: string, help: string, collect: () => number, labels?: LabelSet): void {
    const f = this.family(name, 'gauge', help);
    f.collect = collect;
    f.gaugeLabels = labelKey(labels);
  }

  observe(name: string, help: string, seconds: number): void {
    const f = this.family(name, 'histogram', help);
    if (!f.bucketCounts) {
      f.buckets ??= latencyBucketsS;
      f.bucketCounts = new Float64Array(f.buckets.length + 1);
      f.count = 0;
      f.sum = 0;
    }
    // One slot per observation; render() accumulates (an observation per request is hot).
    const buckets = f.buckets!;
    let i = 0;
    while (i < buckets.length && !(seconds <= buckets[i]!)) i++;
    f.bucketCounts[i] = f.bucketCounts[i]! + 1;
    f.count = f.count! + 1;
    f.sum = f.sum! + seconds;
  }

  render(): string {
    const lines: string[] = [];
    for (const [name, f] of this.families) {
      const full = `${this.prefix}_${name}`;
      lines.push(`# HELP ${full} ${f.help}`, `# TYPE ${full} ${f.type}`);
      if (f.type === 'gauge') {
        lines.push(`${full}${f.gaugeLabels ? `{${f.gaugeLabels}}` : ''} ${f.collect ? f.collect() : 0}`);
      } else if (f.type === 'histogram') {
        let cumulative = 0;
        (f.buckets ?? []).forEach((b, i) => {
          cumulative += f.bucketCounts?.[i] ?? 0;
          lines.push(`${full}_bucket{le="${b}"} ${cumulative}`);
        });
        lines.push(`${full}_bucket{le="+Inf"} ${f.count ?? 0}`);
        lines.push(`${full}_sum ${f.sum ?? 0}`, `${full}_count ${f.count ?? 0}`);
      } else if (f.values.size === 0) {
        lines.push(`${full} 0`);
      } else {
        for (const [k, v] of f.values) lines.push(k ? `${full}{${k}} ${v}` : `${full} ${v}`);
      }
    }
    return lines.join('\n') + '\n';
  }

  /**
   * Serve /metrics on host:port (meant for loopback). Resolves with the bound port. `exposition`
   * replaces this registry's own text (the primary of `--workers` serves every worker's).
   */
  async serve(host: string, port: number, exposition: () => string | Promise<string> = () => this.render()): Promise<{ port: number; close: () => Promise<void> }> {
    // node:http only when a daemon serves metrics: it costs devloc-agent ~2 MiB of RSS otherwise.
    const http = await import('node:http');
    const server = http.createServer((req, res) => {
      // Path only: scrapers may add a query string.
      if ((req.url ?? '').split('?')[0] !== '/metrics') {
        res.writeHead(404).end('not found: try /metrics\n');
        return;
      }
      Promise.resolve(exposition()).then(
        (text) => res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(text),
        (err: Error) => res.writeHead(500).end(`cannot collect metrics: ${err.message}\n`),
      );
    });
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        const addr = server.address();
        resolve({
          port: typeof addr === 'object' && addr ? addr.port : port,
          close: () => new Promise<void>((r) => server.close(() => r())),
        });
      });
    });
  }
}

/**
 * Several expositions of this registry's format as one: each part's samples get its labels
 * (e.g. `worker="2"`), each family keeps one HELP and TYPE and its samples together, as the text
 * format requires. Used by the primary of `--workers`, which alone binds the metrics port.
 */
export function mergeExpositions(parts: { labels: LabelSet; text: string }[]): string {
  const families = new Map<string, { meta: string[]; samples: string[] }>();
  for (const { labels, text } of parts) {
    const extra = labelKey(labels);
    let current: { meta: string[]; samples: string[] } | undefined;
    for (const line of text.split('\n')) {
      if (!line) continue;
      const meta = /^# (HELP|TYPE) (\S+)/.exec(line);
      if (meta) {
        const name = meta[2]!;
        current = families.get(name);
        if (!current) families.set(name, (current = { meta: [], samples: [] }));
        if (current.meta.length < 2 && !current.meta.some((m) => m.startsWith(`# ${meta[1]} `))) current.meta.push(line);
        continue;
      }
      if (!current || !extra) {
        current?.samples.push(line);
        continue;
      }
      // name{a="b"} v  ->  name{a="b",worker="1"} v;  name v  ->  name{worker="1"} v
      const brace = line.indexOf('{');
      const space = line.indexOf(' ');
      current.samples.push(brace >= 0 && brace < space
        ? `${line.slice(0, line.indexOf('}'))},${extra}${line.slice(line.indexOf('}'))}`
        : `${line.slice(0, space)}{${extra}}${line.slice(space)}`);
    }
  }
  const out: string[] = [];
  for (const f of families.values()) out.push(...f.meta, ...f.samples);
  return out.join('\n') + '\n';
}
