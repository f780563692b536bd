// devloc ctl DAEMON COMMAND [TARGET]: ask a running devloc-authd, -locatord or -matchd over its
// control socket (src/common/control.ts; devloc-ctl(8)), as knotc or unbound-control do.
// Text by default, --json for scripts (the daemon's result, verbatim).
// Exit status: 0 done; 1 the daemon answered with an error (NOT_FOUND, FAILED, ...); 2 bad
// arguments (also an unknown command or argument the daemon refused); 3 the daemon could not be
// reached (not running, no permission on the socket, no answer).
import type { Argv, CommandModule } from 'yargs';
import { ControlError, controlRequest } from '../../agent/control-client.js';
import { defaultControlSocket } from '../../common/control.js';
import { escapeControls } from '../../common/escape.js';
import { CliError, cliIo, print, printJson, runHandler, UsageError } from '../util.js';

export const CTL_DAEMONS = ['authd', 'locatord', 'matchd'] as const;
export const CTL_COMMANDS = ['status', 'show', 'sessions', 'kick', 'reload'] as const;
export const EXIT_UNREACHABLE = 3;

interface CtlArgs {
  daemon: (typeof CTL_DAEMONS)[number];
  command: (typeof CTL_COMMANDS)[number];
  target?: string;
  socket?: string;
  json: boolean;
  limit?: number;
  timeout: number;
}

/** Nested values as indented `key: value` lines. */
export function formatResult(v: unknown, indent = ''): string {
  if (v === null || v === undefined) return `${indent}-`;
  if (typeof v !== 'object') return `${indent}${String(v)}`;
  const lines: string[] = [];
  const entries: [string, unknown][] = Array.isArray(v) ? v.map((x, i) => [String(i + 1), x]) : Object.entries(v);
  if (entries.length === 0) return `${indent}${Array.isArray(v) ? '(none)' : '-'}`;
  const width = Math.max(...entries.map(([k]) => k.length));
  for (const [k, x] of entries) {
    const simple = x === null || typeof x !== 'object' || (Array.isArray(x) && x.every((y) => y === null || typeof y !== 'object'));
    if (simple) lines.push(`${indent}${`${k}:`.padEnd(width + 2)}${Array.isArray(x) ? (x.length ? x.join(', ') : '(none)') : x === null ? '-' : String(x)}`);
    else lines.push(`${indent}${k}:`, formatResult(x, `${indent}  `));
  }
  return lines.join('\n');
}

export const ctlCommand: CommandModule<object, CtlArgs> = {
  command: 'ctl <daemon> <command> [target]',
  describe: 'control a running devloc-authd, -locatord or -matchd: status, show, sessions, kick, reload',
  builder: (y: Argv) =>
    y
      .positional('daemon', { choices: CTL_DAEMONS, describe: 'which daemon' })
      .positional('command', { choices: CTL_COMMANDS, describe: 'what to ask' })
      .positional('target', { type: 'string', describe: 'show, kick: a locator ID (locatord on its embedded store also a nickname; authd, show only: a device ID)' })
      .option('socket', { type: 'string', describe: 'the daemon\'s control socket (default $DEVLOC_<DAEMON>_CONTROL_SOCKET, else /run/devloc/<daemon>/control.sock)' })
      .option('json', { type: 'boolean', default: false, describe: 'print the result as JSON' })
      .option('limit', { type: 'number', describe: 'sessions: list at most this many (default 100)' })
      .option('timeout', { type: 'number', default: 10, describe: 'seconds to wait for the answer' })
      .example('devloc ctl locatord status', 'uptime, counts and rates of the local locatord')
      .example('devloc ctl locatord kick 3f9a...', 'end that terminal\'s registration and sessions') as unknown as Argv<CtlArgs>,
  handler: async (a) => {
    await runHandler('ctl', async () => {
      const needsTarget = a.command === 'show' || a.command === 'kick';
      if (needsTarget && !a.target) throw new UsageError(`${a.command} needs a target: ${a.daemon === 'authd' ? 'a device ID' : a.daemon === 'matchd' ? 'a locator ID' : 'a locator ID (or, on the embedded store, a nickname)'}`);
      if (!needsTarget && a.target !== undefined) throw new UsageError(`${a.command} takes no target (got ${JSON.stringify(a.target)})`);
      const args: Record<string, unknown> = {};
      if (a.target !== undefined) args['target'] = a.target;
      if (a.limit !== undefined) {
        if (a.command !== 'sessions') throw new UsageError('--limit applies to sessions only');
        if (!Number.isSafeInteger(a.limit) || a.limit < 1) throw new UsageError('--limit must be a whole number >= 1');
        args['limit'] = a.limit;
      }
      const socket = a.socket ?? process.env[`DEVLOC_${a.daemon.toUpperCase()}_CONTROL_SOCKET`] ?? defaultControlSocket(a.daemon);
      let result: unknown;
      try {
        result = await controlRequest(socket, a.command, args, Math.max(1, a.timeout) * 1000, `devloc-${a.daemon}`);
      } catch (err) {
        if (!(err instanceof ControlError)) throw err;
        if (err.code === 'NO_AGENT' || err.code === 'TIMEOUT' || err.code === 'BAD_RESPONSE') {
          cliIo.err(`devloc ctl: ${escapeControls(err.message)}\n`);
          cliIo.exit(EXIT_UNREACHABLE);
          return;
        }
        if (err.code === 'BAD_REQUEST' || err.code === 'UNKNOWN_COMMAND' || err.code === 'TOO_LARGE') throw new UsageError(`${err.code}: ${err.message}`);
        throw new CliError(`${err.code}: ${err.message}`);
      }
      if (a.json) printJson(result);
      else print(formatResult(result));
    });
  },
};
