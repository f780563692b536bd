// The trusted authd keys of a service (locatord, matchd): the files named by --trust, read into
// kid -> Ed25519 public key for the TicketVerifier; and the service's own key file.
import type { KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parseKeyFile, parsePublicKeyFile, privateKeyObject, publicKeyObject } from '../wire/keys.js';

/** Read the trusted authd keys: kid -> Ed25519 public key. Throws with the file named. */
export function readTrust(files: string[], read: (p: string) => string = (p) => readFileSync(p, 'utf8')): Map<string, KeyObject> {
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

/** Read a service key file: our X25519 secret and our service ID (the ticket audience). Throws with the file named. */
export function readServiceKey(file: string, read: (p: string) => string = (p) => readFileSync(p, 'utf8')): { secret: KeyObject; service: string } {
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
