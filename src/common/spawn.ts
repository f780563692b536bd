// Start one of our entry points (a daemon) as a child process, follow its JSON log and wait until
// it listens: the one helper behind `devloc demo`, the bench (bench/) and the tests
// (test/helpers/daemon.ts). Daemons log one JSON object per line on stdout; the first after
// binding is {"msg":"listening", ...ports}.
//
// The entry point comes from the same tree as this module: dist/<rel>.js when running compiled
// (the installed package, or build/src/ for `npm run bench`), src/<rel>.ts through tsx when
// running from the sources (the tests), so a daemon always runs the same code as its parent.
//
// Its output either comes to us through a pipe (the tests: every line is kept, stderr too) or
// goes straight to a log file (the demo and the bench: the daemon keeps logging if we die, and
// a busy daemon costs us nothing); the file is then read only while someone waits for a line.
import type { ChildProcess, StdioOptions } from 'node:child_process';
import { spawn } from 'node:child_process';
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import path from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { fileURLToPath } from 'node:url';

export type LogLine = Record<string, unknown>;

export interface EntryPoint {
  /** The file node runs. */
  file: string;
  /** node flags it needs before the file: tsx's loader from the sources, else none. */
  execArgv: string[];
}

/** How to start `rel` ("locatord/main", "cli/devloc") of the tree this module was loaded from, or an absolute .js/.ts file. */
export function entryPoint(rel: string): EntryPoint {
  const here = fileURLToPath(import.meta.url);
  const file = path.isAbsolute(rel) ? rel : path.resolve(path.dirname(here), '..', `${rel}${here.endsWith('.ts') ? '.ts' : '.js'}`);
  return { file, execArgv: file.endsWith('.ts') ? ['--import', import.meta.resolve('tsx')] : [] };
}

/** Preloaded with --import: stop when our stdin (a pipe from the parent) closes, i.e. the parent died. */
const WATCHDOG = `data:text/javascript,${encodeURIComponent(
  'process.stdin.on("end",()=>process.kill(process.pid,"SIGTERM"));process.stdin.on("error",()=>{});process.stdin.resume();',
)}`;

/** How often a log file is read while someone waits for a line. */
const POLL_MS = 50;

export interface SpawnOptions {
  /** Entry point of our tree ("authd/main") or an absolute file, see entryPoint(). */
  entry: string;
  args?: string[];
  /** Added to our environment. */
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Name in errors (default: devloc-<daemon> from the entry, or the file's name). */
  name?: string;
  /** Append stdout and stderr to this file instead of piping them to us. */
  logFile?: string;
  /**
   * The child stops itself (SIGTERM) when its stdin, a pipe from us, closes: we died (default
   * true). Without it a test or bench killed from outside (a closed pipe, a signal its `finally`
   * never sees) left its daemons running, reparented to init.
   */
  watchdog?: boolean;
  /** Its own process group, so a terminal's Ctrl-C reaches only us. */
  detached?: boolean;
  /** Default timeout of waitFor(), the wait for "listening" included (ms). */
  timeoutMs?: number;
  /** Start node through this command, which must exec it in place (e.g. ip netns exec NS). */
  prefix?: string[];
}

export interface RunningDaemon {
  name: string;
  proc: ChildProcess;
  /** Every log line read so far, parsed (a line that is not JSON: {msg: "non-json", text}). */
  lines: LogLine[];
  /** The "listening" line (startDaemon), or {} until then. */
  listening: LogLine;
  /** stderr so far (pipe mode; with a log file, stderr is in the file). */
  stderr: string[];
  logFile?: string;
  /** Resolves with the exit code (null when a signal ended it). */
  exited: Promise<number | null>;
  /** The first line matching `pred`, already read or to come; rejects when the child exits first or at the timeout. */
  waitFor(pred: (l: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  /** Send `signal` (SIGTERM) and wait for the exit; SIGKILL after `killAfterMs` if given. */
  stop(signal?: NodeJS.Signals, killAfterMs?: number): Promise<number | null>;
}

/** Start the child and return at once (see startDaemon to also wait for "listening"). */
export function spawnDaemon(o: SpawnOptions): RunningDaemon {
  const e = entryPoint(o.entry);
  const name = o.name ?? (path.isAbsolute(o.entry) ? path.basename(o.entry) : `devloc-${o.entry.split('/')[0]}`);
  const timeoutMs = o.timeoutMs ?? 30_000;
  const fd = o.logFile !== undefined ? openSync(o.logFile, 'a') : undefined;
  const start = o.logFile !== undefined ? statSync(o.logFile).size : 0;
  const watchdog = o.watchdog ?? true;
  const stdio: StdioOptions = [watchdog ? 'pipe' : 'ignore', fd ?? 'pipe', fd ?? 'pipe'];
  const argv = [process.execPath, ...(watchdog ? ['--import', WATCHDOG] : []), ...e.execArgv, e.file, ...(o.args ?? [])];
  const [cmd, ...rest] = [...(o.prefix ?? []), ...argv] as [string, ...string[]];
  const proc = spawn(cmd, rest, {
    stdio, detached: o.detached ?? false, ...(o.cwd ? { cwd: o.cwd } : {}), env: { ...process.env, ...o.env },
  });
  if (fd !== undefined) closeSync(fd);

  const lines: LogLine[] = [];
  const stderr: string[] = [];
  const waiters: { pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void; reject: (e: Error) => void }[] = [];
  let buf = '';
  let ended: string | undefined; // why no more lines will come
  const take = (chunk: string): void => {
    buf += chunk;
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const text = buf.slice(0, i);
      buf = buf.slice(i + 1);
      let line: LogLine;
      try {
        const v = JSON.parse(text) as unknown;
        line = v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as LogLine) : { msg: 'non-json', text };
      } catch {
        line = { msg: 'non-json', text };
      }
      lines.push(line);
      for (const w of [...waiters]) if (w.pred(line)) w.resolve(line);
    }
  };

  // Log file: read what was appended since the last read, only while someone waits.
  let offset = start;
  const chunk = Buffer.alloc(o.logFile !== undefined ? 64 * 1024 : 0);
  const decoder = new StringDecoder('utf8');
  let poll: NodeJS.Timeout | undefined;
  const readLog = (): void => {
    if (o.logFile === undefined) return;
    let rfd: number;
    try {
      rfd = openSync(o.logFile, 'r');
    } catch {
      return; // removed with its directory after a stop: nothing more to read
    }
    try {
      for (let n; (n = readSync(rfd, chunk, 0, chunk.length, offset)) > 0;) {
        offset += n;
        take(decoder.write(chunk.subarray(0, n)));
      }
    } finally {
      closeSync(rfd);
    }
  };
  const schedule = (): void => {
    if (o.logFile === undefined) return;
    if (waiters.length && !poll) poll = setInterval(readLog, POLL_MS);
    if (!waiters.length && poll) {
      clearInterval(poll);
      poll = undefined;
    }
  };
  const tail = (): string => {
    if (o.logFile === undefined) return `stderr: ${stderr.join('').trim() || '(empty)'}`;
    return `log ${o.logFile}:\n${lines.slice(-5).map((l) => (l['msg'] === 'non-json' ? String(l['text']) : JSON.stringify(l))).join('\n')}`;
  };

  let exitCode: number | null = null;
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve((exitCode = code))));
  const end = (why: string): void => {
    if (ended !== undefined) return;
    if (waiters.length) readLog(); // the last lines, for a waiter (a long log nobody waits on stays unread)
    ended = why;
    for (const w of [...waiters]) w.reject(new Error(`${name} ${why} (${tail()})`));
  };
  if (fd === undefined) {
    proc.stdout!.setEncoding('utf8').on('data', take);
    proc.stderr!.setEncoding('utf8').on('data', (c: string) => stderr.push(c));
    // 'close' comes after the last output: a line logged just before exiting is not lost.
    proc.once('close', (code, signal) => end(`exited (${code ?? signal})`));
  } else {
    proc.once('exit', (code, signal) => end(`exited (${code ?? signal})`));
  }
  proc.once('error', (err) => end(`could not run: ${err.message}`));
  // A watchdog pipe broken by the child's exit must not crash us.
  proc.stdin?.on('error', () => {});

  const waitFor = (pred: (l: LogLine) => boolean, ms = timeoutMs): Promise<LogLine> => {
    readLog();
    const seen = lines.find(pred);
    if (seen) return Promise.resolve(seen);
    if (ended !== undefined) return Promise.reject(new Error(`${name} ${ended} (${tail()})`));
    return new Promise((resolve, reject) => {
      const settle = (): void => {
        clearTimeout(timer);
        const i = waiters.indexOf(w);
        if (i >= 0) waiters.splice(i, 1);
        schedule();
      };
      const w = {
        pred,
        resolve: (l: LogLine) => (settle(), resolve(l)),
        reject: (err: Error) => (settle(), reject(err)),
      };
      const timer = setTimeout(() => w.reject(new Error(`${name}: no such log line within ${ms} ms (${tail()})`)), ms);
      waiters.push(w);
      schedule();
    });
  };

  const d: RunningDaemon = {
    name, proc, lines, listening: {}, stderr, exited, waitFor,
    ...(o.logFile !== undefined ? { logFile: o.logFile } : {}),
    stop: async (signal: NodeJS.Signals = 'SIGTERM', killAfterMs?: number) => {
      if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
      if (proc.pid === undefined) return null; // never started ('error'): no exit to wait for
      proc.kill(signal);
      const timer = killAfterMs !== undefined ? setTimeout(() => proc.kill('SIGKILL'), killAfterMs) : undefined;
      await exited;
      clearTimeout(timer);
      return exitCode;
    },
  };
  return d;
}

/** The first line a daemon logs after binding its sockets (with its ports). */
export const isListening = (l: LogLine): boolean => l['msg'] === 'listening';

/** Start the child and resolve once it logs "listening"; if it does not, it is killed and this rejects. */
export async function startDaemon(o: SpawnOptions): Promise<RunningDaemon> {
  const d = spawnDaemon(o);
  try {
    d.listening = await d.waitFor(isListening);
    return d;
  } catch (err) {
    await d.stop('SIGKILL');
    throw err;
  }
}
