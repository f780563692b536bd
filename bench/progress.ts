// Progress of a bench step on stderr: a bar redrawn in place when stderr is a terminal, nothing
// but one plain line per finished step otherwise (no escape codes in logs and pipes).

export interface ProgressState {
  label: string;
  /** 0..1 of the step's time. */
  fraction: number;
  sent: number;
  answered: number;
  lost: number;
  errors: number;
}

/** The bar line, without escape codes (pure, for tests). */
export function progressLine(s: ProgressState, width = 24): string {
  const f = Math.min(1, Math.max(0, s.fraction));
  const filled = Math.round(f * width);
  const bar = `${'#'.repeat(filled)}${'.'.repeat(width - filled)}`;
  return `[${bar}] ${String(Math.round(f * 100)).padStart(3)}% ${s.label}  sent ${s.sent.toLocaleString('en-US')}  answered ${s.answered.toLocaleString('en-US')}  lost ${s.lost.toLocaleString('en-US')}  errors ${s.errors.toLocaleString('en-US')}`;
}

export class Progress {
  private shown = false;

  constructor(private readonly stream: NodeJS.WriteStream = process.stderr) {}

  get interactive(): boolean {
    return this.stream.isTTY === true;
  }

  update(s: ProgressState): void {
    if (!this.interactive) return;
    const columns = this.stream.columns || 100;
    this.stream.write(`\r${progressLine(s).slice(0, columns - 1)}\x1b[K`);
    this.shown = true;
  }

  /** End the bar (if any) and print a plain line. */
  line(text: string): void {
    if (this.shown) this.stream.write('\r\x1b[K');
    this.shown = false;
    this.stream.write(`${text}\n`);
  }
}
