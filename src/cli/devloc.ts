#!/usr/bin/env node
// devloc(1): the admin and inspection CLI. Each subcommand lives in src/cli/commands/ as a
// yargs CommandModule; this file only assembles them.
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { commands } from './commands/index.js';
import { unknownArgumentLine } from '../common/suggest.js';
import { versionLine } from '../common/version.js';

export async function run(argv: string[]): Promise<void> {
  const before = argv.indexOf('--') < 0 ? argv : argv.slice(0, argv.indexOf('--'));
  if (before[0] === '--version' || (before.length === 1 && before[0] === 'version')) {
    process.stdout.write(`${versionLine('devloc')}\n`);
    return;
  }
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
      // The options of the command that failed, as its help lists them.
      const help = String((yy as unknown as { help: () => unknown }).help() ?? '');
      const known = [...new Set([...help.matchAll(/--([a-z][a-z0-9-]*)/g)].map((x) => x[1]!))];
      const line = unknownArgumentLine(msg ?? '', known);
      if (line) {
        process.stderr.write(`devloc: ${line}\n`);
        process.exit(2);
      }
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
