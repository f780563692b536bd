// --workers N, the one mechanism of devloc-authd and devloc-locatord for using every core: the
// first process (the primary) forks N workers (node:cluster, same argv) that each run the daemon
// on the same UDP port (node:cluster shares the bound socket: the kernel hands each datagram to
// one of them). The primary serves nothing itself; it restarts a worker that dies, passes SIGHUP
// on, stops them all on SIGTERM, and may answer the workers' messages (`onMessage`): the state
// that must be one for all of them (authd's per-device budget and replay cache) lives there.
import cluster from 'node:cluster';
import type { Worker } from 'node:cluster';
import type { Running } from './daemon.js';
import type { Logger } from './log.js';

// The index lives in daemon.ts (its log lines carry it), which the agent's daemon shares.
export { workerIndex } from './daemon.js';

export interface WorkersOptions {
  /** Extra environment of every worker (e.g. a secret they must share). */
  env?: Record<string, string>;
  /** A message from a worker (process.send in the worker). */
  onMessage?: (worker: Worker, msg: unknown) => void;
  /** Called after SIGHUP was passed on (the primary's own part of a reload). */
  reload?: Running['reload'];
}

/**
 * How long to wait before restarting a worker that exited after `livedMs`: 1 s after a worker
 * that ran a while, doubling (to 60 s) while each replacement dies within 10 s, so a worker that
 * cannot start does not burn a core in a restart loop.
 */
export function workerRestartDelayMs(livedMs: number, previousDelayMs: number): number {
  if (livedMs >= 10_000 || previousDelayMs === 0) return 1000;
  return Math.min(previousDelayMs * 2, 60_000);
}

/** Fork `n` workers (same argv); restart one that dies unexpectedly; stop them all on stop. */
export function startWorkers(n: number, logger: Logger, o: WorkersOptions = {}): Promise<Running> {
  let stopping = false;
  const fork = (index: number, previousDelayMs: number): void => {
    const w = cluster.fork({ ...o.env, DEVLOC_WORKER_INDEX: String(index) });
    const startedAt = Date.now();
    if (o.onMessage) w.on('message', (msg: unknown) => o.onMessage!(w, msg));
    w.on('exit', (code, signal) => {
      if (stopping) return;
      const delayMs = workerRestartDelayMs(Date.now() - startedAt, previousDelayMs);
      logger.error('worker exited, starting another', { pid: w.process.pid, code, signal, inMs: delayMs });
      setTimeout(() => fork(index, delayMs), delayMs).unref();
    });
  };
  for (let i = 0; i < n; i++) fork(i, 0);
  logger.info('workers started', { workers: n });
  return Promise.resolve({
    async stop() {
      stopping = true;
      await Promise.all(Object.values(cluster.workers ?? {}).map((w) => new Promise<void>((resolve) => {
        if (!w || w.isDead()) return resolve();
        w.once('exit', () => resolve());
        w.process.kill('SIGTERM');
      })));
    },
    async reload(config) {
      await o.reload?.(config);
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGHUP');
    },
  });
}

/** Send `msg` to every live worker but `except`. */
export function broadcast(msg: unknown, except?: Worker): void {
  for (const w of Object.values(cluster.workers ?? {})) {
    if (w && w !== except && w.isConnected()) w.send(msg as never);
  }
}
