// Forking the bench's own modules as child processes, compiled (build/bench/*.js) or from
// source through tsx (bench/*.ts), with a request/response helper over IPC.
import type { ChildProcess } from 'node:child_process';
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const fromSource = import.meta.url.endsWith('.ts');

/**
 * DEVLOC_BENCH_CPU_PROF=DIR: every child (servers and load generators) writes a V8 CPU profile
 * into DIR (`node --cpu-prof`, which NODE_OPTIONS refuses). Children are then ended by closing
 * their IPC channel (they exit by themselves on it) rather than SIGKILL, or no profile is written.
 */
const cpuProfDir = process.env.DEVLOC_BENCH_CPU_PROF;

/** Path of a sibling module of bench/ (or build/bench/). */
export function sibling(name: string): string {
  return fileURLToPath(new URL(`./${name}${fromSource ? '.ts' : '.js'}`, import.meta.url));
}

export interface Child {
  proc: ChildProcess;
  /** Send a message and resolve with the next message from the child. */
  ask<T>(m: unknown): Promise<T>;
  /** The next message from the child. */
  next<T>(): Promise<T>;
  kill(): void;
}

/**
 * Fork bench/`name` (the one way the bench starts its own modules). `execArgv`: node flags
 * beyond tsx and the CPU profile (e.g. --expose-gc); `stdout` 'ignore' for a child whose output
 * must not mix with the bench's JSON.
 */
export function forkSibling(name: string, o: { execArgv?: readonly string[]; stdout?: 'inherit' | 'ignore' } = {}): Child {
  const execArgv = [...(fromSource ? ['--import', 'tsx'] : []), ...(cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${cpuProfDir}`] : []), ...(o.execArgv ?? [])];
  const proc = fork(sibling(name), [], { execArgv, stdio: ['ignore', o.stdout ?? 'inherit', 'inherit', 'ipc'] });
  const next = <T>(): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const onExit = (code: number | null, signal: string | null): void => reject(new Error(`${name} exited (${code ?? signal})`));
      proc.once('exit', onExit);
      proc.once('message', (m: unknown) => {
        proc.off('exit', onExit);
        const e = (m as { error?: string }).error;
        if (e) reject(new Error(`${name}: ${e}`));
        else resolve(m as T);
      });
    });
  return {
    proc,
    next,
    ask: <T>(m: unknown) => {
      const p = next<T>();
      proc.send(m as never);
      return p;
    },
    kill: () => {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      if (cpuProfDir && proc.connected) proc.disconnect();
      else proc.kill('SIGKILL');
    },
  };
}

/** Reply to the parent (the IPC channel exists: we were forked). */
export function toParent(m: unknown): void {
  process.send!(m as never);
}
