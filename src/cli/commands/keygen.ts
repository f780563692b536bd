// devloc keygen: create key files for authd, services and devices, and print public halves.
//
//   devloc keygen authd --out FILE [--kid HEX] [--force]
//   devloc keygen service --id ID --out FILE [--force]
//   devloc keygen device [--id ID] --out FILE [--force]
//   devloc keygen public FILE        (or: devloc keygen --public FILE)
//
// The file format is src/wire/keys.ts's. A new key file is created with O_EXCL and mode 0600, so
// an existing key is never overwritten by accident; --force replaces it through a fresh 0600
// file renamed over it. Generating a key also prints its public half (one JSON line) on stdout,
// so `devloc keygen authd --out authd.key > authd.pub` makes both files at once.
import { closeSync, constants, fchmodSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import type { KeyFile } from '../../wire/keys.js';
import { keyFileToJson, newAuthdKey, newDeviceKey, newServiceKey, publicOf, publicToJson } from '../../wire/keys.js';
import { CliError, cliIo, print, readKeyFile, runHandler, UsageError } from '../util.js';
import { escapeControls } from '../../common/escape.js';

const KINDS = ['authd', 'service', 'device', 'public'] as const;
type Kind = (typeof KINDS)[number];

interface KeygenArgs {
  kind?: Kind;
  file?: string;
  out?: string;
  id?: string;
  kid?: string;
  force: boolean;
  public?: string;
}

/**
 * Write `text` to `file` readable by its owner only. Without `force` the file must not exist
 * (O_EXCL); with it, a temporary 0600 file in the same directory is renamed over the target, so
 * an existing file's looser mode is not inherited and a crash leaves either the old or new key.
 */
export function writeSecretFile(file: string, text: string, force: boolean): void {
  const target = force ? path.join(path.dirname(file), `.${path.basename(file)}.${randomBytes(6).toString('hex')}.tmp`) : file;
  let fd: number;
  try {
    fd = openSync(target, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw new CliError(`${file} exists; not overwriting a key (--force replaces it)`);
    throw new CliError(`cannot create ${file}: ${code ?? (err as Error).message}`);
  }
  try {
    // The umask can only have removed bits; make the mode exactly 0600 whatever it was.
    fchmodSync(fd, 0o600);
    writeSync(fd, text);
  } catch (err) {
    closeSync(fd);
    unlinkSync(target);
    throw new CliError(`cannot write ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  closeSync(fd);
  if (force) {
    try {
      renameSync(target, file);
    } catch (err) {
      unlinkSync(target);
      throw new CliError(`cannot replace ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  }
}

/** The public half of a key file (private or already public), as one JSON line. */
export function publicLineOf(file: string): string {
  const k = readKeyFile(file);
  return publicToJson(k.key ? publicOf(k.key) : k.public);
}

function generate(a: KeygenArgs): KeyFile {
  try {
    switch (a.kind) {
      case 'authd': {
        const k = newAuthdKey();
        if (a.kid !== undefined && k.kind === 'authd') {
          if (!/^[0-9a-f]{2,32}$/.test(a.kid) || a.kid.length % 2 !== 0) throw new UsageError('--kid must be 1 to 16 bytes of lowercase hex');
          k.kid = a.kid;
        }
        return k;
      }
      case 'service':
        if (a.id === undefined) throw new UsageError('a service key needs --id SERVICE (e.g. locatord)');
        return newServiceKey(a.id);
      default:
        return newDeviceKey(a.id);
    }
  } catch (err) {
    // newServiceKey/newDeviceKey refuse malformed IDs with a TypeError: an argument error.
    if (err instanceof TypeError) throw new UsageError(err.message);
    throw err;
  }
}

function keygen(a: KeygenArgs): void {
  if (a.public !== undefined || a.kind === 'public') {
    if (a.kind !== undefined && a.kind !== 'public') throw new UsageError(`--public cannot be combined with ${a.kind}`);
    const file = a.public ?? a.file;
    if (a.public !== undefined && a.file !== undefined) throw new UsageError('name the key file once');
    if (file === undefined) throw new UsageError('name the key file: devloc keygen public FILE');
    if (a.out !== undefined || a.id !== undefined || a.kid !== undefined) throw new UsageError('--out, --id and --kid are for generating keys');
    print(publicLineOf(file));
    return;
  }
  if (a.kind === undefined) throw new UsageError('name what to generate: authd, service or device (or public FILE)');
  if (a.file !== undefined) throw new UsageError(`unexpected argument ${a.file} (the key file is given with --out)`);
  if (a.out === undefined) throw new UsageError('--out FILE is required');
  if (a.kind !== 'authd' && a.kid !== undefined) throw new UsageError('--kid is for authd keys');
  if (a.kind === 'authd' && a.id !== undefined) throw new UsageError('an authd key has no --id (its key ID is --kid)');
  const key = generate(a);
  writeSecretFile(a.out, keyFileToJson(key), a.force);
  cliIo.err(`wrote ${a.kind} key ${escapeControls(a.out)} (mode 0600)\n`);
  print(publicToJson(publicOf(key)));
}

export const keygenCommand: CommandModule<object, KeygenArgs> = {
  command: 'keygen [kind] [file]',
  describe: 'create an authd, service or device key file, or print a key file\'s public half',
  builder: (y: Argv<object>) =>
    y
      .usage(
        'devloc keygen authd --out FILE [--kid HEX] [--force]\n' +
          'devloc keygen service --id SERVICE --out FILE [--force]\n' +
          'devloc keygen device [--id DEVICE_ID] --out FILE [--force]\n' +
          'devloc keygen public FILE      (also: devloc keygen --public FILE)\n\n' +
          'Key files are JSON, mode 0600, never overwritten without --force. Generating a key prints\n' +
          'its public half as one JSON line on stdout. Exit status: 0 ok, 1 failure, 2 usage error.',
      )
      .positional('kind', { choices: KINDS, describe: 'what to generate, or "public" to print a public half' })
      .positional('file', { type: 'string', describe: 'key file (with "public")' })
      .option('out', { alias: 'o', type: 'string', describe: 'file to create (mode 0600)' })
      .option('id', { type: 'string', describe: 'service ID (service keys) or device ID (device keys; default random)' })
      .option('kid', { type: 'string', describe: 'authd key ID, hex (default: 4 random bytes)' })
      .option('force', { type: 'boolean', default: false, describe: 'replace an existing file' })
      .option('public', { type: 'string', describe: 'print the public half of this key file (private or public) and exit' }) as unknown as Argv<KeygenArgs>,
  handler: (argv) => runHandler('keygen', () => keygen(argv)),
};
