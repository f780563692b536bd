// Small helpers shared by devloc(1) subcommands: exit-status conventions and input parsing.
//
// Exit status (every devloc subcommand): 0 done, 1 the work failed (unreadable or malformed
// file, file exists, ...), 2 usage error (bad arguments). yargs' own argument errors already
// exit 2 through devloc.ts; a handler reports the ones it finds by throwing UsageError and the
// others by throwing CliError, and `runHandler` turns both into a message and a status.
import { readFileSync } from 'node:fs';
import type { KeyFile, KeyFileRole, PublicKeyFile } from '../wire/keys.js';
import { readCheckedKeyFile } from '../net/trust.js';
import { parseKeyFile, parsePublicKeyFile } from '../wire/keys.js';
import { escapeControls, safeJson, safeText } from '../common/escape.js';
import { ControlError, controlRequest } from '../agent/control-client.js';

/** Bad arguments: exit status 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** The command could not do its work: exit status 1. */
export class CliError extends Error {
  override readonly name = 'CliError';
}

export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

/**
 * One request to the local devloc-agent over its control socket. Its refusals of what the user
 * typed (a malformed request, a peer name or ID it cannot use, a bad address-book entry) are
 * usage errors; an agent that is not running or does not answer, and every other refusal, make
 * the command fail.
 */
export async function askAgent(socket: string, cmd: string, args: Record<string, unknown> = {}, timeoutMs = 30_000): Promise<unknown> {
  try {
    return await controlRequest(socket, cmd, args, timeoutMs);
  } catch (err) {
    if (err instanceof ControlError) {
      const usage = err.code === 'BAD_REQUEST' || err.code === 'UNKNOWN_TARGET' || err.code === 'BAD_TARGET' || (err.code === 'ADDRESS_BOOK' && /^bad /.test(err.message));
      if (usage) throw new UsageError(err.message);
      throw new CliError(err.code === 'NO_AGENT' || err.code === 'TIMEOUT' ? err.message : `${err.code}: ${err.message}`);
    }
    throw err;
  }
}

// Every text output goes through safeText and JSON through safeJson: no control character from a
// peer, the agent or a file reaches the terminal raw (cells are escaped whole, newlines included,
// by table()).

/**
 * Where every subcommand's output, messages and exit status go: stdout, stderr and
 * process.exitCode. Tests replace the members to run commands in their own process
 * (test/authd/enroll.test.ts).
 */
export const cliIo = {
  out: (s: string): void => void process.stdout.write(s),
  err: (s: string): void => void process.stderr.write(s),
  errIsTTY: (): boolean => process.stderr.isTTY === true,
  exit: (status: number): void => {
    process.exitCode = status;
  },
};

/** A line (or lines) of text, on stdout unless `write` says where. */
export const print = (s: string, write = cliIo.out): void => write(safeText(s.endsWith('\n') ? s : `${s}\n`));

/** JSON, indented or on one line (`compact`: one object per line, for a stream), on stdout unless `write` says where. */
export const printJson = (v: unknown, compact = false, write = cliIo.out): void => write(`${safeJson(JSON.stringify(v, null, compact ? 0 : 2))}\n`);

/** Columns padded to their widest cell. */
export function table(rows: string[][]): string {
  rows = rows.map((r) => r.map(escapeControls));
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd()).join('\n');
}

let stdoutPipeHandled = false;

/** Run a handler body, mapping UsageError/CliError to a stderr line and an exit status (cliIo). */
export async function runHandler(command: string, body: () => void | Promise<void>): Promise<void> {
  // `devloc decode ... | head` closes the pipe early: that is the reader's choice, not an error.
  // Once per process: tests run many commands in theirs.
  if (!stdoutPipeHandled) {
    stdoutPipeHandled = true;
    process.stdout.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
      throw err;
    });
  }
  try {
    await body();
  } catch (err) {
    if (err instanceof UsageError) {
      // Messages may quote the agent or the network: no control character raw (escape.ts).
      cliIo.err(`devloc ${command}: ${escapeControls(err.message)}\n(devloc ${command} --help for usage)\n`);
      cliIo.exit(EXIT_USAGE);
    } else if (err instanceof CliError) {
      cliIo.err(`devloc ${command}: ${escapeControls(err.message)}\n`);
      cliIo.exit(EXIT_FAILURE);
    } else {
      throw err;
    }
  }
}

/**
 * Parse hex bytes as people paste them: optional 0x prefix, whitespace and ':' separators
 * (tshark, xxd -p, Wireshark "copy as hex stream"). Null unless an even number of hex digits.
 */
export function parseHex(text: string): Buffer | null {
  let s = text.trim();
  if (/^0x/i.test(s)) s = s.slice(2);
  s = s.replace(/[\s:]/g, '');
  if (s.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(s)) return null;
  return Buffer.from(s, 'hex');
}

/**
 * Read a file as bytes; CliError with the reason when it cannot be read. /dev/stdin is read
 * from descriptor 0, which also works when stdin is a socket (opening /dev/stdin does not).
 * (yargs turns a lone "-" argument into an empty string, so "-" cannot name stdin.)
 */
export function readInput(path: string, what: string): Buffer {
  try {
    return readFileSync(path === '/dev/stdin' ? 0 : path);
  } catch (err) {
    throw new CliError(`cannot read ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

function checkedKeyFile(file: string, what: string, role: KeyFileRole): string {
  try {
    return readCheckedKeyFile(file, what, role);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new CliError(e.code ? `cannot read ${what} ${file}: ${e.code}` : e.message);
  }
}

export const hex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.length).toString('hex');

/** Seconds since the epoch as ISO 8601 UTC, without a fraction when there is none. */
export function isoSeconds(s: number): string {
  const d = new Date(s * 1000);
  return Number.isNaN(d.getTime()) ? `invalid date ${s}` : d.toISOString().replace('.000Z', 'Z');
}

/** Milliseconds since the epoch as ISO 8601 UTC. */
export function isoMillis(ms: number): string {
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? `invalid date ${ms}` : d.toISOString();
}

/**
 * Read a key file (src/wire/keys.ts format), private or public. A private file is checked as one
 * (each public half must match its secret); only a file of a *-public kind is read as public.
 */
export function readKeyFile(file: string, what = 'key file', role?: KeyFileRole): { key: KeyFile; public?: undefined } | { key?: undefined; public: PublicKeyFile } {
  // With a role, the file's mode and owner are checked first (keys.ts keyFileProblem), as the
  // daemons check theirs.
  const text = role ? checkedKeyFile(file, what, role) : readInput(file, what).toString('utf8');
  if (/"kind"\s*:\s*"[a-z]+-public"/.test(text)) {
    const pub = parsePublicKeyFile(text);
    if (!pub.ok) throw new CliError(`${file} is not a devloc key file: ${pub.error}`);
    return { public: pub.value };
  }
  const priv = parseKeyFile(text);
  if (!priv.ok) throw new CliError(`${file} is not a devloc key file: ${priv.error}`);
  return { key: priv.value };
}
