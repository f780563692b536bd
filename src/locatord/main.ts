#!/usr/bin/env node
// devloc-locatord(8): the locator server. Terminals register the address locatord observes them
// at (with the ticket authd gave them), refresh it, and ask where other terminals are; groups
// are kept durably; a NAT reflector helps agents classify their NAT.
import type { Config } from '../common/config.js';
import cluster from 'node:cluster';
import { list, num } from '../common/config.js';
import type { DaemonDefinition } from '../common/daemon.js';
import { main } from '../common/daemon.js';
import { checkConfig, checkLimits, limitsFromConfig, locatordSpec, optionsFromConfig, readTrust } from './options.js';
import { startLocatord } from './server.js';
import { locatordControl } from './control.js';
import { isMainModule } from '../common/entry.js';
import { broadcast, startWorkers, toPrimary } from '../common/workers.js';
import { shareValidations } from '../net/routability.js';

export { startLocatord } from './server.js';
export type { Locatord } from './server.js';
export type { LocatordLimits, LocatordOptions, RequiredOptions } from './options.js';
export { defaultLimits, withDefaults } from './options.js';

export const locatordDaemon: DaemonDefinition = {
  derivesKeysPerRequest: true,
  name: 'locatord',
  summary: 'Locator server: registers the observed address of authenticated terminals, answers address,\nstatus and group queries, and runs a NAT reflector.',
  spec: locatordSpec,
  check: checkConfig,
  async start(config, logger, metrics) {
    // --workers N: this process forks N workers that each run a locatord on the same UDP port
    // (node:cluster shares the bound socket; the state is in Redis, so any worker may answer).
    // Addresses validated at one worker are passed to the others through the primary: the
    // workers read one socket, so a terminal's ADDR_PROOF and its next request may reach different
    // workers (each would challenge it again otherwise; shareValidations).
    if (num(config, 'workers') > 1 && cluster.isPrimary) {
      return startWorkers(num(config, 'workers'), logger, { listeners: { 'addr-validated': (m, from) => broadcast(m, from) } });
    }
    const locatord = await startLocatord(optionsFromConfig(config), logger, metrics);
    const routability = locatord.server.routability;
    if (cluster.isWorker && routability) shareValidations(routability, toPrimary());
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

if (isMainModule(import.meta.url)) main(locatordDaemon);
