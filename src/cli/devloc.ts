#!/usr/bin/env node
// devloc(1): the admin and inspection CLI. Each subcommand lives in src/cli/commands/ as a
// yargs CommandModule; this file only assembles them.
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { commands } from './commands/index.js';

export async function run(argv: string[]): Promise<void> {
  let y = yargs(argv)
    .scriptName('devloc')
    .usage('devloc <command> [options]\n\nAdminister and inspect a devloc deployment; talk to the local devloc-agent.')
    .demandCommand(1, 'name a command (devloc --help lists them)')
    .strict()
    .recommendCommands()
    .help()
    .alias('h', 'help')
    .version(false)
    .wrap(Math.min(100, process.stdout.columns || 100))
    .fail((msg, err, yy) => {
      if (err) throw err;
      process.stderr.write(`${yy.help() && ''}devloc: ${msg}\n(devloc --help for usage)\n`);
      process.exit(2);
    });
  for (const c of commands) y = y.command(c);
  await y.parseAsync();
}

run(hideBin(process.argv)).catch((err: Error) => {
  process.stderr.write(`devloc: ${err.message}\n`);
  process.exit(1);
});
