// A small SVG line chart for the bench results (no dependency): one or more panels stacked
// over a shared x axis, each with its own y axis (linear or log), an optional right-hand axis
// that relabels the left one (e.g. req/s as "x echo"), horizontal guide lines, and a legend.
// Pure: a spec in, a string out. Every series is one <polyline> with a data-series attribute
// and one <circle> per point, so the chart can be checked without a browser.

export interface Series {
  name: string;
  points: [number, number][];
  color?: string;
  dashed?: boolean;
}

export interface Guide {
  y: number;
  label: string;
}

export interface Panel {
  yLabel: string;
  series: Series[];
  /** Logarithmic y axis (all values must be > 0; others are dropped). */
  yLog?: boolean;
  /** Start the linear y axis at 0 (default true). */
  yFromZero?: boolean;
  /** A right-hand axis: the left values divided by `divisor`, labelled `label`. */
  rightAxis?: { label: string; divisor: number };
  guides?: Guide[];
}

export interface ChartSpec {
  title: string;
  /** Lines under the title, separated by \n. */
  subtitle?: string;
  xLabel: string;
  /** Start the x axis at 0 (default true). */
  xFromZero?: boolean;
  panels: Panel[];
  width?: number;
  panelHeight?: number;
}

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b'];

/** Escape text for SVG content and attribute values. */
export function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** Round tick values (1, 2, 5 x 10^k) covering [min, max], about `count` of them. */
export function niceTicks(min: number, max: number, count = 5): number[] {
  if (!Number.isFinite(min) || !Number.isFinite(max)) return [0, 1];
  if (max < min) [min, max] = [max, min];
  if (max === min) {
    if (max === 0) return [0, 1];
    const pad = Math.abs(max) * 0.1;
    min -= pad;
    max += pad;
  }
  const raw = (max - min) / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  // The tolerance keeps 0.6000000000000001 / 3 a step of 0.2, not 0.5.
  const step = (norm <= 1 + 1e-9 ? 1 : norm <= 2 + 1e-9 ? 2 : norm <= 5 + 1e-9 ? 5 : 10) * mag;
  const first = Math.floor(min / step + 1e-9) * step;
  const last = Math.ceil(max / step - 1e-9) * step;
  const ticks: number[] = [];
  for (let v = first, i = 0; v <= last + step / 2 && i < 100; v += step, i++) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

/** Ticks of a log axis covering [min, max] (> 0): powers of ten, with 2 and 5 when few decades. */
export function logTicks(min: number, max: number): number[] {
  if (!(min > 0) || !(max > 0)) return [1, 10];
  const lo = Math.floor(Math.log10(Math.min(min, max)) + 1e-9);
  let hi = Math.ceil(Math.log10(Math.max(min, max)) - 1e-9);
  if (hi === lo) hi = lo + 1;
  const multipliers = hi - lo <= 3 ? [1, 2, 5] : [1];
  const ticks: number[] = [];
  for (let e = lo; e <= hi; e++) {
    for (const m of multipliers) {
      const v = Number((m * 10 ** e).toPrecision(12));
      if (e === hi && m > 1) continue;
      ticks.push(v);
    }
  }
  return ticks;
}

/** A tick label: 12,000 -> "12k", 0.25 -> "0.25". */
export function tickLabel(v: number): string {
  const a = Math.abs(v);
  if (a >= 1e6) return `${+(v / 1e6).toPrecision(3)}M`;
  if (a >= 1000) return `${+(v / 1e3).toPrecision(3)}k`;
  if (a === 0) return '0';
  return `${+v.toPrecision(3)}`;
}

/** Breaks `line` after a comma or space so that no piece is longer than `max` characters. */
export function wrapLine(line: string, max: number): string[] {
  const out: string[] = [];
  let rest = line;
  while (rest.length > max) {
    const cut = Math.max(rest.lastIndexOf(',', max - 1), rest.lastIndexOf(' ', max - 1));
    const at = cut > 0 ? cut + 1 : max;
    out.push(rest.slice(0, at).trimEnd());
    rest = rest.slice(at).trimStart();
  }
  out.push(rest);
  return out;
}

const fmt = (n: number): string => (Math.round(n * 10) / 10).toString();

export function renderChart(spec: ChartSpec): string {
  const width = spec.width ?? 760;
  const panelHeight = spec.panelHeight ?? 240;
  const left = 78;
  const right = spec.panels.some((p) => p.rightAxis) ? 78 : 24;
  // ~6 px per character at 11 px: wrap long lines (a --mix list) instead of running off the edge.
  const subtitleLines = spec.subtitle ? spec.subtitle.split('\n').flatMap((l) => wrapLine(l, Math.floor((width - 20) / 6.2))) : [];
  const top = 44 + subtitleLines.length * 16;
  const gap = 56;
  const legendRow = 20;
  const plotW = width - left - right;
  const legendRows = spec.panels.map((p) => Math.ceil(p.series.length / 3));
  const height = top + spec.panels.reduce((a, _p, i) => a + panelHeight + legendRows[i]! * legendRow + gap, 0) + 10;

  const allX = spec.panels.flatMap((p) => p.series.flatMap((s) => s.points.map(([x]) => x))).filter(Number.isFinite);
  const xMinData = allX.length ? Math.min(...allX) : 0;
  const xMaxData = allX.length ? Math.max(...allX) : 1;
  const xTicks = niceTicks(spec.xFromZero === false ? xMinData : Math.min(0, xMinData), xMaxData, 6);
  const x0 = xTicks[0]!;
  const x1 = xTicks[xTicks.length - 1]!;
  const sx = (x: number): number => left + ((x - x0) / (x1 - x0 || 1)) * plotW;

  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`);
  out.push(`<text class="title" x="${width / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${esc(spec.title)}</text>`);
  subtitleLines.forEach((line, i) => out.push(`<text class="subtitle" x="${width / 2}" y="${42 + i * 16}" text-anchor="middle" fill="#555" font-size="11">${esc(line)}</text>`));

  let y = top;
  spec.panels.forEach((panel, pi) => {
    const pTop = y;
    const pBottom = y + panelHeight;
    const isLog = panel.yLog === true;
    const values = panel.series.flatMap((s) => s.points.map(([, v]) => v)).concat((panel.guides ?? []).map((g) => g.y)).filter((v) => Number.isFinite(v) && (!isLog || v > 0));
    let yTicks: number[];
    if (isLog) yTicks = logTicks(values.length ? Math.min(...values) : 1, values.length ? Math.max(...values) : 10);
    else yTicks = niceTicks(panel.yFromZero === false && values.length ? Math.min(...values) : Math.min(0, ...values), values.length ? Math.max(...values) : 1, 5);
    const y0 = yTicks[0]!;
    const y1 = yTicks[yTicks.length - 1]!;
    const sy = isLog
      ? (v: number): number => pBottom - ((Math.log10(v) - Math.log10(y0)) / (Math.log10(y1) - Math.log10(y0) || 1)) * panelHeight
      : (v: number): number => pBottom - ((v - y0) / (y1 - y0 || 1)) * panelHeight;

    out.push(`<g class="panel" data-panel="${pi}">`);
    // Grid and y ticks.
    for (const t of yTicks) {
      const ty = fmt(sy(t));
      out.push(`<line x1="${left}" y1="${ty}" x2="${left + plotW}" y2="${ty}" stroke="#e5e5e5"/>`);
      out.push(`<text class="ytick" x="${left - 6}" y="${ty}" text-anchor="end" dominant-baseline="middle">${esc(tickLabel(t))}</text>`);
      if (panel.rightAxis) {
        out.push(`<text class="ytick-right" x="${left + plotW + 6}" y="${ty}" dominant-baseline="middle" fill="#555">${esc(tickLabel(t / panel.rightAxis.divisor))}</text>`);
      }
    }
    for (const t of xTicks) {
      const tx = fmt(sx(t));
      out.push(`<line x1="${tx}" y1="${pTop}" x2="${tx}" y2="${pBottom}" stroke="#f0f0f0"/>`);
      out.push(`<text class="xtick" x="${tx}" y="${pBottom + 16}" text-anchor="middle">${esc(tickLabel(t))}</text>`);
    }
    // Axes.
    out.push(`<line class="axis" x1="${left}" y1="${pBottom}" x2="${left + plotW}" y2="${pBottom}" stroke="#000"/>`);
    out.push(`<line class="axis" x1="${left}" y1="${pTop}" x2="${left}" y2="${pBottom}" stroke="#000"/>`);
    if (panel.rightAxis) out.push(`<line class="axis" x1="${left + plotW}" y1="${pTop}" x2="${left + plotW}" y2="${pBottom}" stroke="#000"/>`);
    const midY = (pTop + pBottom) / 2;
    out.push(`<text class="ylabel" x="16" y="${midY}" text-anchor="middle" transform="rotate(-90 16 ${midY})">${esc(panel.yLabel + (isLog ? ' (log scale)' : ''))}</text>`);
    if (panel.rightAxis) {
      const rx = width - 14;
      out.push(`<text class="ylabel-right" x="${rx}" y="${midY}" text-anchor="middle" transform="rotate(90 ${rx} ${midY})">${esc(panel.rightAxis.label)}</text>`);
    }
    out.push(`<text class="xlabel" x="${left + plotW / 2}" y="${pBottom + 34}" text-anchor="middle">${esc(spec.xLabel)}</text>`);
    // Guides.
    for (const g of panel.guides ?? []) {
      if (!Number.isFinite(g.y) || (isLog && g.y <= 0) || g.y < y0 || g.y > y1) continue;
      const gy = fmt(sy(g.y));
      out.push(`<line class="guide" x1="${left}" y1="${gy}" x2="${left + plotW}" y2="${gy}" stroke="#888" stroke-dasharray="2 3"/>`);
      out.push(`<text class="guide-label" x="${left + 6}" y="${fmt(sy(g.y) - 5)}" fill="#555">${esc(g.label)}</text>`);
    }
    // Series.
    panel.series.forEach((s, si) => {
      const color = s.color ?? PALETTE[si % PALETTE.length]!;
      const pts = s.points.filter(([px, py]) => Number.isFinite(px) && Number.isFinite(py) && (!isLog || py > 0));
      const coords = pts.map(([px, py]) => `${fmt(sx(px))},${fmt(sy(py))}`).join(' ');
      out.push(`<polyline class="series" data-series="${esc(s.name)}" fill="none" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''} points="${coords}"/>`);
      for (const [px, py] of pts) out.push(`<circle class="point" data-series="${esc(s.name)}" cx="${fmt(sx(px))}" cy="${fmt(sy(py))}" r="3" fill="${color}"/>`);
    });
    // Legend, three entries per row under the x label.
    panel.series.forEach((s, si) => {
      const color = s.color ?? PALETTE[si % PALETTE.length]!;
      const lx = left + (si % 3) * (plotW / 3);
      const ly = pBottom + 52 + Math.floor(si / 3) * legendRow;
      out.push(`<line class="legend" x1="${lx}" y1="${ly}" x2="${lx + 22}" y2="${ly}" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`);
      out.push(`<text class="legend-label" x="${lx + 28}" y="${ly}" dominant-baseline="middle">${esc(s.name)}</text>`);
    });
    out.push('</g>');
    y = pBottom + legendRows[pi]! * legendRow + gap;
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
