// The trusted authd keys of a service (locatord, matchd): the files named by --trust, read into
// kid -> Ed25519 public key for the TicketVerifier; and the service's own key file.
import type { KeyObject } from 'node:crypto';
import { closeSync, constants, fstatSync, openSync, readFileSync } from 'node:fs';
import type { KeyFileRole } from '../wire/keys.js';
import { keyFileProblem, parseKeyFile, parsePublicKeyFile, privateKeyObject, publicKeyObject } from '../wire/keys.js';

/**
 * Read a key file after checking the file actually opened (fstat, no race with a rename): mode
 * and owner by keys.ts's keyFileProblem, the same rule the agent applies. Throws Error naming the
 * file, its mode or owner and the fix. Used for --trust, --service-key and authd's --key.
 */
export function readCheckedKeyFile(file: string, what: string, role: KeyFileRole): string {
  const fd = openSync(file, constants.O_RDONLY);
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new Error(`${what} ${file} is not a regular file`);
    const problem = keyFileProblem(file, what, st, role);
    if (problem !== null) throw new Error(problem);
    if (st.size > 64 * 1024) throw new Error(`${what} ${file} is too large to be a key file`);
    return readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
}

/** Read the trusted authd keys: kid -> Ed25519 public key. Throws with the file named. */
export function readTrust(files: string[], read: (p: string) => string = (p) => readCheckedKeyFile(p, 'trust file', 'trust')): Map<string, KeyObject> {
  const keys = new Map<string, KeyObject>();
  for (const f of files) {
    let text: string;
    try {
      text = read(f);
    } catch (err) {
      throw new Error(`trust: cannot read ${f}: ${(err as Error).message}`);
    }
    const p = parsePublicKeyFile(text);
    if (!p.ok) throw new Error(`trust: ${f}: ${p.error}`);
    if (p.value.kind !== 'authd-public') throw new Error(`trust: ${f}: not an authd key (kind ${p.value.kind})`);
    keys.set(p.value.kid, publicKeyObject('Ed25519', p.value.sign));
  }
  return keys;
}

/** Null when a service daemon's key and trust files (locatord, matchd) can be used; else what is wrong, naming the option. */
export function checkServiceKeys(serviceKeyFile: string, trustFiles: string[]): string | null {
  if (!serviceKeyFile) return 'service-key is required (devloc keygen service)';
  if (trustFiles.length === 0) return 'trust is required (at least one authd public key file)';
  try {
    readServiceKey(serviceKeyFile);
    readTrust(trustFiles);
  } catch (err) {
    return (err as Error).message;
  }
  return null;
}

/** Read a service key file: our X25519 secret and our service ID (the ticket audience). Throws with the file named. */
export function readServiceKey(file: string, read: (p: string) => string = (p) => readCheckedKeyFile(p, 'service key', 'secret')): { secret: KeyObject; service: string } {
  let text: string;
  try {
    text = read(file);
  } catch (err) {
    throw new Error(`service-key: cannot read ${file}: ${(err as Error).message}`);
  }
  const k = parseKeyFile(text);
  if (!k.ok) throw new Error(`service-key: ${file}: ${k.error}`);
  if (k.value.kind !== 'service') throw new Error(`service-key: ${file}: kind must be "service" (got ${k.value.kind})`);
  return { secret: privateKeyObject('X25519', k.value.seal), service: k.value.service };
}
