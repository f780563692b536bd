// Spawn a devloc daemon as a real process (through tsx, so tests need no build), wait until it
// logs "listening", and stop it at teardown. Daemons log one JSON object per line on stdout.
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export interface RunningDaemon {
  proc: ChildProcess;
  /** Every JSON log line so far, parsed. */
  lines: Record<string, unknown>[];
  /** The fields of the first "listening" line. */
  listening: Record<string, unknown>;
  stderr: string[];
  /** Resolves with the first line matching `pred` (already seen or future). */
  waitFor(pred: (l: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** SIGTERM and wait for exit; returns the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Start `src/<entry>` (e.g. "authd/main.ts") with args. */
export function startDaemon(entry: string, args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 15_000): Promise<RunningDaemon> {
  const proc = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'src', entry), ...args], {
    cwd: root,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: Record<string, unknown>[] = [];
  const stderr: string[] = [];
  const waiters: { pred: (l: Record<string, unknown>) => boolean; resolve: (l: Record<string, unknown>) => void }[] = [];
  let buf = '';
  proc.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    buf += chunk;
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const text = buf.slice(0, i);
      buf = buf.slice(i + 1);
      let line: Record<string, unknown>;
      try {
        line = JSON.parse(text) as Record<string, unknown>;
      } catch {
        line = { msg: 'non-json', text };
      }
      lines.push(line);
      for (const w of [...waiters]) if (w.pred(line)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(line);
      }
    }
  });
  proc.stderr!.setEncoding('utf8').on('data', (c: string) => stderr.push(c));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  const waitFor = (pred: (l: Record<string, unknown>) => boolean, ms = timeoutMs): Promise<Record<string, unknown>> => {
    const seen = lines.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timeout waiting in ${entry}; stderr: ${stderr.join('')}; last lines: ${JSON.stringify(lines.slice(-5))}`)), ms);
      waiters.push({ pred, resolve: (l) => { clearTimeout(timer); resolve(l); } });
      void exited.then((code) => { clearTimeout(timer); reject(new Error(`${entry} exited ${code}; stderr: ${stderr.join('')}`)); });
    });
  };
  return waitFor((l) => l['msg'] === 'listening').then((listening) => ({
    proc, lines, listening, stderr, waitFor,
    stop: async (signal: NodeJS.Signals = 'SIGTERM') => {
      if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
      proc.kill(signal);
      return exited;
    },
  }));
}
