#!/usr/bin/env node
// devloc-locatord(8): the locator server. Terminals register the address locatord observes them
// at (with the ticket authd gave them), refresh it, and ask where other terminals are; groups
// are kept durably; a NAT reflector helps agents classify their NAT.
import type { Config } from '../common/config.js';
import cluster from 'node:cluster';
import { list, num } from '../common/config.js';
import type { Logger } from '../common/log.js';
import type { Running } from '../common/daemon.js';
import type { DaemonDefinition } from '../common/daemon.js';
import { main } from '../common/daemon.js';
import { checkConfig, checkLimits, limitsFromConfig, locatordSpec, optionsFromConfig, readTrust } from './options.js';
import { startLocatord } from './server.js';
import { locatordControl } from './control.js';
import { isMainModule } from '../common/entry.js';

export { startLocatord } from './server.js';
export type { Locatord } from './server.js';
export type { LocatordLimits, LocatordOptions, RequiredOptions } from './options.js';
export { defaultLimits, withDefaults } from './options.js';

export const locatordDaemon: DaemonDefinition = {
  name: 'locatord',
  summary: 'Locator server: registers the observed address of authenticated terminals, answers address,\nstatus and group queries, and runs a NAT reflector.',
  spec: locatordSpec,
  check: checkConfig,
  async start(config, logger, metrics) {
    // --workers N: this process forks N workers that each run a locatord on the same UDP port
    // (node:cluster shares the bound socket; the state is in Redis, so any worker may answer).
    if (num(config, 'workers') > 1 && cluster.isPrimary) return startWorkers(num(config, 'workers'), logger);
    const locatord = await startLocatord(optionsFromConfig(config), logger, metrics);
    return {
      stop: () => locatord.stop(),
      // Workers (--workers) share the primary's argv: only a single process serves the control socket.
      ...(cluster.isWorker ? {} : { control: locatordControl(locatord, logger) }),
      reload(c: Config) {
        const limits = limitsFromConfig(c);
        const problem = checkLimits(limits);
        if (problem) throw new Error(problem);
        // Read every key file before changing anything: a bad file leaves the old set in force.
        const trustedKeys = readTrust(list(c, 'trust'));
        if (trustedKeys.size === 0) throw new Error('trust is empty');
        locatord.reload({ limits, trustedKeys });
      },
    };
  },
};

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
function startWorkers(n: number, logger: Logger): Promise<Running> {
  let stopping = false;
  const fork = (previousDelayMs: number): void => {
    const w = cluster.fork();
    const startedAt = Date.now();
    w.on('exit', (code, signal) => {
      if (stopping) return;
      const delayMs = workerRestartDelayMs(Date.now() - startedAt, previousDelayMs);
      logger.error('worker exited, starting another', { pid: w.process.pid, code, signal, inMs: delayMs });
      setTimeout(() => fork(delayMs), delayMs).unref();
    });
  };
  for (let i = 0; i < n; i++) fork(0);
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
    reload() {
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGHUP');
    },
  });
}

if (isMainModule(import.meta.url)) main(locatordDaemon);
