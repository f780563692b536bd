// The devloc(1) program around a list of subcommands: --version, strict flags, the one-line
// unknown-option error with a suggestion, exit 2 on usage errors. devloc.ts runs it with every
// command; terminal.ts with the terminal-side ones only (the agent distribution, issue 20).
import yargs from 'yargs';
import type { CommandModule } from 'yargs';
import { escapeControls } from '../common/escape.js';
import { unknownArgumentLine } from '../common/suggest.js';
import { versionLine } from '../common/version.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function runCli(argv: string[], commands: readonly CommandModule<any, any>[], summary: string): Promise<void> {
  const before = argv.indexOf('--') < 0 ? argv : argv.slice(0, argv.indexOf('--'));
  if (before[0] === '--version' || (before.length === 1 && before[0] === 'version')) {
    process.stdout.write(`${versionLine('devloc')}\n`);
    return;
  }
  let y = yargs(argv)
    .scriptName('devloc')
    .usage(`devloc <command> [options]\n\n${summary}`)
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
      // yargs quotes what was typed (a pasted argument may carry an escape sequence): escaped.
      if (line) {
        process.stderr.write(`devloc: ${escapeControls(line)}\n`);
        process.exit(2);
      }
      process.stderr.write(`${yy.help() && ''}devloc: ${escapeControls(msg ?? '')}\n(devloc --help for usage)\n`);
      process.exit(2);
    });
  for (const c of commands) y = y.command(c);
  await y.parseAsync();
}

/** Entry helper: run with process.argv, exit 1 on an unexpected error. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function cliMain(commands: readonly CommandModule<any, any>[], summary: string): void {
  runCli(process.argv.slice(2), commands, summary).catch((err: Error) => {
    process.stderr.write(`devloc: ${escapeControls(err.message)}\n`);
    process.exit(1);
  });
}
