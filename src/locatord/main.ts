#!/usr/bin/env node
// devloc-locatord(8): the locator server. Terminals register the address locatord observes them
// at (with the ticket authd gave them), refresh it, and ask where other terminals are; groups
// are kept durably; a NAT reflector helps agents classify their NAT.
import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import type { Config } from '../common/config.js';
import { list } from '../common/config.js';
import type { DaemonDefinition } from '../common/daemon.js';
import { main } from '../common/daemon.js';
import { checkConfig, checkLimits, limitsFromConfig, locatordSpec, optionsFromConfig, readTrust } from './options.js';
import { startLocatord } from './server.js';

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
    const locatord = await startLocatord(optionsFromConfig(config), logger, metrics);
    return {
      stop: () => locatord.stop(),
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

function isEntry(): boolean {
  const arg = process.argv[1];
  if (!arg) return false;
  try {
    return import.meta.url === pathToFileURL(realpathSync(arg)).href;
  } catch {
    return false;
  }
}

if (isEntry()) main(locatordDaemon);
