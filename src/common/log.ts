// Log lines on stdout: JSON (one object per line, for journald and jq; the default) or text (one
// human line per event: `time level msg key=value ...`, for a terminal). Refusals of untrusted
// input are logged through `refusal`, which keeps one line per (event) per interval and counts
// the rest, so a flood cannot turn into a disk-filling log storm.

import { escapeControls, hasControls, safeJson } from './escape.js';

export type Level = 'debug' | 'info' | 'warn' | 'error';
const order: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };
export const levels = Object.keys(order) as Level[];

export type LogFormat = 'json' | 'text';
export const logFormats: readonly LogFormat[] = ['json', 'text'];

// Control characters (C0, DEL, C1, line separators, bidi controls): a logged value from the
// network must not be able to start a fake line or move the terminal's cursor (escape.ts).
function quote(s: string): string {
  return `"${escapeControls(s.replace(/\\/g, '\\\\').replace(/"/g, '\\"'))}"`;
}

/** One value of a text line: bare when unambiguous, else double-quoted with escapes. */
export function textValue(v: unknown): string {
  if (typeof v === 'string') return v === '' || /[\s"=\\]/.test(v) || hasControls(v) ? quote(v) : v;
  // Numbers, booleans, arrays, objects: their JSON (which escapes control characters itself).
  let s: string;
  try {
    s = safeJson(JSON.stringify(v) ?? String(v));
  } catch {
    s = String(v);
  }
  return /\s/.test(s) ? quote(s) : s;
}

/** A text log line: `time level msg key=value ...` (msg quoted only when it holds '=' or '"'). */
export function textLine(fields: Record<string, unknown>): string {
  const { ts, level, msg, ...rest } = fields;
  const m = String(msg ?? '');
  const parts = [String(ts), String(level), m === '' || /[="\\]/.test(m) ? quote(m) : escapeControls(m)];
  for (const [k, v] of Object.entries(rest)) if (v !== undefined) parts.push(`${escapeControls(k)}=${textValue(v)}`);
  return parts.join(' ');
}

export interface LoggerOptions {
  level?: Level;
  format?: LogFormat;
  service: string;
  /** Fields added to the first line written (the version, so every log starts with it). */
  firstLine?: Record<string, unknown>;
  /** Fields on every line (e.g. the worker index of a --workers process). */
  every?: Record<string, unknown>;
  write?: (line: string) => void;
  now?: () => number;
  /** Suppression interval for repeated refusals, ms. */
  refusalIntervalMs?: number;
}

export class Logger {
  level: Level;
  format: LogFormat;
  readonly service: string;
  private firstLine: Record<string, unknown> | undefined;
  private readonly every: Record<string, unknown> | undefined;
  private readonly write: (line: string) => void;
  private readonly now: () => number;
  private readonly refusalIntervalMs: number;
  private readonly lastRefusal = new Map<string, { at: number; suppressed: number }>();

  constructor(opts: LoggerOptions) {
    this.level = opts.level ?? 'info';
    this.format = opts.format ?? 'json';
    this.firstLine = opts.firstLine;
    this.every = opts.every;
    this.service = opts.service;
    this.write = opts.write ?? ((line) => process.stdout.write(line + '\n'));
    this.now = opts.now ?? Date.now;
    this.refusalIntervalMs = opts.refusalIntervalMs ?? 1000;
  }

  log(level: Level, msg: string, fields: Record<string, unknown> = {}): void {
    if (order[level] < order[this.level]) return;
    const first = this.firstLine;
    this.firstLine = undefined;
    const line = { ts: new Date(this.now()).toISOString(), level, svc: this.service, msg, ...this.every, ...first, ...fields };
    this.write(this.format === 'text' ? textLine(line) : safeJson(JSON.stringify(line)));
  }
  debug(msg: string, f?: Record<string, unknown>): void { this.log('debug', msg, f); }
  info(msg: string, f?: Record<string, unknown>): void { this.log('info', msg, f); }
  warn(msg: string, f?: Record<string, unknown>): void { this.log('warn', msg, f); }
  error(msg: string, f?: Record<string, unknown>): void { this.log('error', msg, f); }

  /** Log a refused datagram: at most one line per `event` per interval, with a suppressed count. */
  refusal(event: string, fields: Record<string, unknown>): void {
    const now = this.now();
    const last = this.lastRefusal.get(event);
    if (last && now - last.at < this.refusalIntervalMs) {
      last.suppressed++;
      return;
    }
    const suppressed = last?.suppressed ?? 0;
    if (this.lastRefusal.size > 1000) this.lastRefusal.clear();
    this.lastRefusal.set(event, { at: now, suppressed: 0 });
    this.log('warn', 'refused', { event, ...fields, ...(suppressed ? { suppressedSinceLast: suppressed } : {}) });
  }
}
