#!/usr/bin/env node
// devloc(1): the admin and inspection CLI. Each subcommand lives in src/cli/commands/ as a
// yargs CommandModule; this file only assembles them (program.ts is the program around them).
import { commands } from './commands/index.js';
import { cliMain } from './program.js';

export const SUMMARY = 'Administer and inspect a devloc deployment; talk to the local devloc-agent.';

cliMain(commands, SUMMARY);
