// How the agent bench measures a process's memory (issue 20), the one way it measures every
// process it compares: bare Node, the embedded library and the devloc-agent daemon. The parent
// reads VmRSS from /proc/<pid>/status a settling time after the process said it was ready; the
// measured process reads nothing of its own and writes nothing through a stream.
// Why from outside: a process that reports its own RSS must first open something to report it
// on, and `process.stdout` (a net.Socket or tty.WriteStream with the stream machinery behind it)
// added 1.5-1.8 MiB to bare `node -e`, the baseline, making every "over bare Node" figure look
// that much better than it was.
//
// Bare Node and the library's host are both `node -e` scripts built here, with no node flag, in
// either module system: a CommonJS one (`require()` of dist/agent.cjs) against bare CommonJS
// `node -e`, and an ES module one (`import()` of dist/agent.js) against bare
// `node --input-type=module -e`: an ES module host has already paid for Node's ES module loader,
// a CommonJS host has not and need not. The host does what an embedding program must (load an
// identity, create and start an Agent) and nothing else: the bench's CPU and wire instruments
// live in agent-child.ts, which is not measured for RSS.
//
// A measured child says it is ready with one fs.writeSync on fd 3 (READY_FD, an inherited pipe;
// node:fs is loaded by Node's bootstrap, so this loads no module): bare Node at once, the host on
// its agent's first `registered`. The daemon cannot be changed for the bench: its readiness is
// its own `registered` log line. All three go on running while /proc is read.
import { readFileSync } from 'node:fs';
import type { ChildProcess, StdioOptions } from 'node:child_process';

/** The inherited pipe a measured child signals readiness on. */
export const READY_FD = 3;
const READY_LINE = 'ready\n';

/** The module system of a measured `node -e` script (the host program's). */
export type ModuleSystem = 'commonjs' | 'module';

/** What the library's host needs to start an agent (the files the bench wrote). */
export interface LibraryHostSettings {
  /** The library: dist/agent.cjs for a CommonJS host, dist/agent.js for an ES module one. */
  library: string;
  identity: string;
  authd: string;
  authdKey: string;
}

/**
 * Environment of every measured child, the daemon included: ours without NODE_OPTIONS, whose
 * preloads (a test runner's, a profiler's) would be measured as if they were the library's.
 */
export function measuredEnv(): NodeJS.ProcessEnv {
  return { ...process.env, NODE_OPTIONS: undefined };
}

/** stdio of a measured child: nothing on 0, 1 and 2 piped (errors only), 3 readiness. */
export const MEASURED_STDIO: StdioOptions = ['ignore', 'pipe', 'pipe', 'pipe'];

const importFs = (system: ModuleSystem): string =>
  system === 'commonjs' ? `const { writeSync } = require('node:fs');` : `import { writeSync } from 'node:fs';`;
const signalReady = `writeSync(${READY_FD}, ${JSON.stringify(READY_LINE)});`;
const inputType = (system: ModuleSystem): string[] => (system === 'module' ? ['--input-type=module'] : []);

/**
 * Bare Node.js, the comparison: `node -e` that says it is ready and then waits (a timer keeps its
 * event loop alive, as the agent's do) until the parent, having measured it, kills it.
 */
export function bareNodeArgs(system: ModuleSystem): string[] {
  return [...inputType(system), '-e', `${importFs(system)} ${signalReady} setTimeout(() => {}, 2 ** 31 - 1);`];
}

/**
 * The embedding host: the bare script's first line, then the library loaded as such a host
 * loads it, an agent started from the settings (argv[1], JSON), ready on `registered`.
 * `loader` goes before `-e` (`--import tsx` when the library is the tree's TypeScript).
 */
export function libraryHostArgs(system: ModuleSystem, settings: LibraryHostSettings, loader: readonly string[] = []): string[] {
  const load = system === 'commonjs' ? 'require(s.library)' : 'await import(s.library)';
  const script = [
    importFs(system),
    'const s = JSON.parse(process.argv[1]);',
    `const { Agent, loadDeviceIdentity, loadAuthdKey, parseAddress } = ${load};`,
    'const id = loadDeviceIdentity(s.identity);',
    'const key = loadAuthdKey(s.authdKey);',
    'if (!id.ok || !key.ok) throw new Error(id.error ?? key.error);',
    'const agent = new Agent({ identity: id.value, authd: parseAddress(s.authd), authdKey: key.value, reflector: null });',
    'let ready = false;',
    `const registered = () => { if (!ready) { ready = true; ${signalReady} } };`,
    "agent.once('registered', registered);",
    'agent.start().then(() => { if (agent.isRegistered) registered(); }, (e) => { console.error(e); process.exit(1); });',
  ].join('\n');
  return [...loader, ...inputType(system), '-e', script, JSON.stringify(settings)];
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
 * agent bench. Rejects if the process has exited by then (no VmRSS).
 */
export async function rssAfter(pid: number, ready: Promise<unknown>, settleMs: number): Promise<number> {
  await ready;
  await sleep(settleMs);
  const rss = rssOf(pid);
  if (rss === 0) throw new Error(`bench: no VmRSS for process ${pid} (exited, or no /proc)`);
  return rss;
}

/** Resolves when a child spawned with MEASURED_STDIO signals readiness on READY_FD. */
export function readySignal(proc: ChildProcess): Promise<void> {
  const pipe = proc.stdio[READY_FD] as NodeJS.ReadableStream | null | undefined;
  if (!pipe) return Promise.reject(new Error('bench: measured child without a readiness pipe'));
  // A reset when the child is killed after its measurement is no failure; a child that dies
  // before it is ready is reported by its exit.
  (pipe as NodeJS.EventEmitter).on('error', () => {});
  let err = '';
  proc.stderr?.setEncoding('utf8').on('data', (d: string) => (err += d));
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
    proc.once('exit', (code) => reject(new Error(`bench: measured child exited ${code} before it was ready: ${err.trim()}`)));
  });
}

/** The measurement of a child spawned with MEASURED_STDIO: its RSS `settleMs` after it is ready. */
export function measureChild(proc: ChildProcess, settleMs: number): Promise<number> {
  return rssAfter(proc.pid!, readySignal(proc), settleMs);
}
