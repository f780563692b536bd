// authd's own keys. Each key file (kind "authd") holds an Ed25519 signing pair and an X25519
// sealing pair under one kid. The first file listed signs new tickets; every listed key opens
// requests sealed to it, so terminals may use any published authd public key while a rotation
// is rolled out. (Services trust a set of authd public keys, so tickets signed with a key that
// is still listed there stay valid after authd has moved on.)
import type { KeyObject } from 'node:crypto';
import { readCheckedKeyFile } from '../net/trust.js';
import { parseKeyFile, privateKeyObject } from '../wire/keys.js';

export interface AuthdKey {
  kid: string;
  kidBytes: Buffer;
  file: string;
  signKey: KeyObject;
  signPublic: Buffer;
  sealSecret: KeyObject;
  sealPublic: Buffer;
}

export class KeyRing {
  readonly byKid: Map<string, AuthdKey>;
  /** Human-readable problems that do not stop loading (permissions). */
  readonly warnings: string[];

  constructor(readonly keys: AuthdKey[], warnings: string[] = []) {
    if (keys.length === 0) throw new Error('no authd key: give at least one --key file (devloc keygen authd makes one)');
    this.byKid = new Map(keys.map((k) => [k.kid, k]));
    this.warnings = warnings;
  }

  /** The key that signs new tickets: the first listed. */
  get signer(): AuthdKey {
    return this.keys[0]!;
  }

  get kids(): string[] {
    return this.keys.map((k) => k.kid);
  }
}

/** Read and check one authd key file. Throws Error naming the file. */
export function loadAuthdKey(file: string, text?: string): AuthdKey {
  let body = text;
  if (body === undefined) {
    try {
      body = readCheckedKeyFile(file, 'authd key', 'secret'); // mode and owner: keys.ts keyFileProblem
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // The mode/owner refusal already names the file and the fix: pass it on as it is.
      throw new Error(code ? `key ${file}: cannot read (${code})` : (err as Error).message);
    }
  }
  const parsed = parseKeyFile(body);
  if (!parsed.ok) throw new Error(`key ${file}: ${parsed.error}`);
  const k = parsed.value;
  if (k.kind !== 'authd') throw new Error(`key ${file}: a ${k.kind} key, not an authd key (devloc keygen authd)`);
  // The kid travels as bytes (AUTH_REQUEST authdKey, the ticket's COSE kid): whole bytes only.
  if (k.kid.length % 2 !== 0) throw new Error(`key ${file}: kid ${k.kid} must have an even number of hex digits`);
  return {
    kid: k.kid,
    kidBytes: Buffer.from(k.kid, 'hex'),
    file,
    signKey: privateKeyObject('Ed25519', k.sign),
    signPublic: k.sign.public,
    sealSecret: privateKeyObject('X25519', k.seal),
    sealPublic: k.seal.public,
  };
}

/** Load every key file, in order. Throws on any unreadable, wrong-kind or duplicate key. */
export function loadKeyRing(files: string[]): KeyRing {
  const keys: AuthdKey[] = [];
  const warnings: string[] = [];
  for (const file of files) {
    const k = loadAuthdKey(file);
    const dup = keys.find((x) => x.kid === k.kid);
    if (dup) throw new Error(`key ${file}: kid ${k.kid} already loaded from ${dup.file}`);
    keys.push(k);
  }
  return new KeyRing(keys, warnings);
}
