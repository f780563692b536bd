// The terminal's device identity (the patent's "device ID hold unit"): a key file of kind
// "device" (src/wire/keys.ts) written at manufacture. The agent only ever reads it, refuses a
// file anyone but its owner could replace, and keeps the device ID and key out of every message
// it prints: error texts here never quote the file's content.
import type { KeyObject } from 'node:crypto';
import { constants, openSync, closeSync, fstatSync, readFileSync } from 'node:fs';
import type { KeyFileRole, PublicKeyFile } from '../wire/keys.js';
import { FORBIDDEN_MODE, keyFileProblem, parseKeyFile, parsePublicKeyFile, privateKeyObject } from '../wire/keys.js';

export interface DeviceIdentity {
  /** Factory device ID. Sent only inside the sealed AUTH_REQUEST; never logged. */
  readonly deviceId: string;
  /** Ed25519 device key. */
  readonly key: KeyObject;
}

export type Loaded<T> = { ok: true; value: T } | { ok: false; error: string };

/**
 * Mode bits that make a device identity file unacceptable: any bit for group or others (the key
 * would leak, or someone else could substitute their own identity). keys.ts's FORBIDDEN_MODE.
 */
export const IDENTITY_FORBIDDEN_MODE = FORBIDDEN_MODE.secret;

/** Open, check (keys.ts's keyFileProblem: mode and owner) and read a key file. */
function readChecked(path: string, what: string, role: KeyFileRole): Loaded<string> {
  let fd: number;
  try {
    // O_RDONLY: the file is never opened for writing. O_NOFOLLOW is not used: packaging often
    // links /etc/devloc/device.key to a read-only partition.
    fd = openSync(path, constants.O_RDONLY);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why = e.code === 'ENOENT' ? 'does not exist' : e.code === 'EACCES' ? 'is not readable (permission denied)' : `cannot be opened (${e.code ?? e.message})`;
    return { ok: false, error: `${what} ${path} ${why}` };
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) return { ok: false, error: `${what} ${path} is not a regular file` };
    const problem = keyFileProblem(path, what, st, role);
    if (problem !== null) return { ok: false, error: problem };
    if (st.size > 64 * 1024) return { ok: false, error: `${what} ${path} is too large to be a key file` };
    return { ok: true, value: readFileSync(fd, 'utf8') };
  } catch (err) {
    return { ok: false, error: `${what} ${path} cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})` };
  } finally {
    closeSync(fd);
  }
}

/** JSON.parse's messages quote the input: never let one reach a log line. */
function jsonOk(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

/** Read and check the device identity file. Error texts never contain the file's content. */
export function loadDeviceIdentity(path: string): Loaded<DeviceIdentity> {
  const text = readChecked(path, 'identity file', 'secret');
  if (!text.ok) return text;
  return parseDeviceIdentity(text.value, `identity file ${path}`);
}

/**
 * A device identity held by the host program (a console's secure storage): the bytes of a key
 * file of kind "device" (`devloc keygen`). A Buffer given is zeroed once the key is taken from it
 * (the KeyObject holds the secret). Error texts never contain the content.
 */
export function parseDeviceIdentity(bytes: Buffer | string, where = 'identity'): Loaded<DeviceIdentity> {
  const text = typeof bytes === 'string' ? bytes : bytes.toString('utf8');
  if (!jsonOk(text)) return { ok: false, error: `${where} is malformed: not JSON` };
  const parsed = parseKeyFile(text);
  if (!parsed.ok) return { ok: false, error: `${where} is malformed: ${parsed.error}` };
  const k = parsed.value;
  if (k.kind !== 'device') return { ok: false, error: `${where} is a key of kind "${k.kind}", not "device"` };
  const key = privateKeyObject('Ed25519', k.sign);
  // The raw secret is no longer needed: the KeyObject holds it.
  k.sign.secret.fill(0);
  if (typeof bytes !== 'string') bytes.fill(0);
  return { ok: true, value: { deviceId: k.deviceId, key } };
}

/** The authd public key the agent seals to: key ID and X25519 sealing key. */
export interface AuthdPublicKey {
  kid: Buffer;
  seal: Buffer;
}

export function parseAuthdKey(text: string, where = 'authd key'): Loaded<AuthdPublicKey> {
  if (!jsonOk(text)) return { ok: false, error: `${where} is malformed: not JSON` };
  const p = parsePublicKeyFile(text);
  if (!p.ok) return { ok: false, error: `${where} is malformed: ${p.error}` };
  const v: PublicKeyFile = p.value;
  if (v.kind !== 'authd-public') return { ok: false, error: `${where} is of kind "${v.kind}", not "authd-public"` };
  if (!/^(?:[0-9a-f]{2}){1,16}$/.test(v.kid)) return { ok: false, error: `${where}: kid must be hex` };
  return { ok: true, value: { kid: Buffer.from(v.kid, 'hex'), seal: v.seal } };
}

/** Read the authd public key file (`devloc keygen --public` output, or the authd key itself). */
export function loadAuthdKey(path: string): Loaded<AuthdPublicKey> {
  // A public key may be world-readable; it must still not be replaceable by others.
  const text = readChecked(path, 'authd key file', 'trust');
  if (!text.ok) return text;
  return parseAuthdKey(text.value, `authd key file ${path}`);
}
