// JSON log lines on stdout (one object per line, for journald and jq). Refusals of untrusted
// input are logged through `refusal`, which keeps one line per (event) per interval and counts
// the rest, so a flood cannot turn into a disk-filling log storm.

export type Level = 'debug' | 'info' | 'warn' | 'error';
const order: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };
export const levels = Object.keys(order) as Level[];

export interface LoggerOptions {
  level?: Level;
  service: string;
  write?: (line: string) => void;
  now?: () => number;
  /** Suppression interval for repeated refusals, ms. */
  refusalIntervalMs?: number;
}

export class Logger {
  level: Level;
  readonly service: string;
  private readonly write: (line: string) => void;
  private readonly now: () => number;
  private readonly refusalIntervalMs: number;
  private readonly lastRefusal = new Map<string, { at: number; suppressed: number }>();

  constructor(opts: LoggerOptions) {
    this.level = opts.level ?? 'info';
    this.service = opts.service;
    this.write = opts.write ?? ((line) => process.stdout.write(line + '\n'));
    this.now = opts.now ?? Date.now;
    this.refusalIntervalMs = opts.refusalIntervalMs ?? 1000;
  }

  log(level: Level, msg: string, fields: Record<string, unknown> = {}): void {
    if (order[level] < order[this.level]) return;
    this.write(JSON.stringify({ ts: new Date(this.now()).toISOString(), level, svc: this.service, msg, ...fields }));
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
