// How the agent bench measures a process's memory (issue 20), the one way it measures every
// process it compares: bare `node -e`, the embedded library and the devloc-agent daemon. The
// parent reads VmRSS from /proc/<pid>/status a settling time after the process said it was
// ready; the measured process reads nothing of its own and writes nothing through a stream.
// Why from outside: a process that reports its own RSS must first open something to report it
// on, and `process.stdout` (a net.Socket or tty.WriteStream with the stream machinery behind it)
// added 1.5-1.8 MiB to bare `node -e`, the baseline, making every "over bare Node" figure look
// that much better than it was.
//
// A measured child says it is ready with one fs.writeSync on fd 3 (READY_FD, an inherited pipe;
// node:fs is loaded by Node's bootstrap, so this loads no module), and a child that has more to
// do after the measurement (report its CPU figures on stdout) first blocks in fs.readSync on the
// same fd until the parent has read /proc (waitUntilMeasured): nothing it does afterwards is
// counted. The daemon cannot be changed for the bench: its readiness is its own `registered`
// log line, and it goes on running while /proc is read, as bare Node and the library do.
import { readFileSync, readSync, writeSync } from 'node:fs';
import type { ChildProcess, StdioOptions } from 'node:child_process';

/** The inherited pipe a measured child signals readiness on and waits on. */
export const READY_FD = 3;
const READY_LINE = 'ready\n';
const MEASURED_BYTE = 'm';

/**
 * Flags of every measured Node child the bench starts itself (bare and library alike): the
 * library child runs a full GC before and after its CPU window, and bare Node gets the same flag
 * so that nothing but the code loaded differs between them.
 */
export const MEASURED_NODE_FLAGS: readonly string[] = ['--expose-gc'];

/**
 * Environment of every measured child, the daemon included: ours without NODE_OPTIONS, whose
 * preloads (a test runner's, a profiler's) would be measured as if they were the library's.
 */
export function measuredEnv(): NodeJS.ProcessEnv {
  return { ...process.env, NODE_OPTIONS: undefined };
}

/** stdio of a measured child: fd 0 settings (or nothing), 1 and 2 results and errors, 3 readiness. */
export function measuredStdio(settingsOnStdin: boolean): StdioOptions {
  return [settingsOnStdin ? 'pipe' : 'ignore', 'pipe', 'pipe', 'pipe'];
}

/** JavaScript (CommonJS, as `node -e` runs it) that says the process is ready to be measured. */
export const SIGNAL_READY_SOURCE = `require('node:fs').writeSync(${READY_FD}, ${JSON.stringify(READY_LINE)})`;

/**
 * The bare Node.js the library and the daemon are compared with: `node -e` that says it is ready
 * and then waits (a timer keeps its event loop alive, as the agent's do) until the parent,
 * having measured it, kills it.
 */
export function bareNodeArgs(): string[] {
  return [...MEASURED_NODE_FLAGS, '-e', `${SIGNAL_READY_SOURCE}; setTimeout(() => {}, 2 ** 31 - 1);`];
}

/** In a measured child (ESM): say it is ready; the parent measures it a settling time later. */
export function signalReady(): void {
  writeSync(READY_FD, READY_LINE);
}

/** In a measured child: block until the parent has read its RSS (returns at once if it has). */
export function waitUntilMeasured(): void {
  const one = Buffer.alloc(1);
  if (readSync(READY_FD, one, 0, 1, null) === 0) throw new Error('the bench parent closed the readiness pipe before measuring');
}

/** VmRSS of a process, from /proc (bytes; 0 where there is no /proc or no such process). */
export function rssOf(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * RSS of `pid`, read from /proc `settleMs` after `ready` resolves: the one measurement of the
 * agent bench. Rejects if the process exits before (VmRSS gone).
 */
export async function rssAfter(pid: number, ready: Promise<unknown>, settleMs: number): Promise<number> {
  await ready;
  await sleep(settleMs);
  const rss = rssOf(pid);
  if (rss === 0) throw new Error(`bench: no VmRSS for process ${pid} (exited, or no /proc)`);
  return rss;
}

/** Resolves when a child spawned with measuredStdio() signals readiness on READY_FD. */
export function readySignal(proc: ChildProcess): Promise<void> {
  const pipe = proc.stdio[READY_FD] as NodeJS.ReadableStream | null | undefined;
  if (!pipe) return Promise.reject(new Error('bench: measured child without a readiness pipe'));
  // A reset when the child is killed after its measurement (bare Node is) is no failure; a child
  // that dies before it is ready is reported by its exit.
  (pipe as NodeJS.EventEmitter).on('error', () => {});
  return new Promise((resolve, reject) => {
    let got = '';
    const onData = (d: Buffer): void => {
      got += d.toString('latin1');
      if (got.includes(READY_LINE)) {
        pipe.off('data', onData);
        resolve();
      }
    };
    pipe.on('data', onData);
    proc.once('exit', (code) => reject(new Error(`bench: measured child exited ${code} before it was ready`)));
  });
}

/**
 * The whole measurement of a child spawned with measuredStdio(): wait for its readiness, let it
 * settle, read its RSS, then let it go on (waitUntilMeasured() in the child returns).
 */
export async function measureChild(proc: ChildProcess, settleMs: number): Promise<number> {
  const rss = await rssAfter(proc.pid!, readySignal(proc), settleMs);
  (proc.stdio[READY_FD] as NodeJS.WritableStream).write(MEASURED_BYTE);
  return rss;
}
