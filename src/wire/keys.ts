// Key material and key files. node:crypto's native Ed25519/X25519 are used rather than
// @noble/curves: measured here, native Ed25519 verifies ~10x faster than pure JS, and authd's
// throughput is bounded by it. (@noble/curves stays as the independent check in the tests.)
//
// Key files are JSON, written 0600. Every key is its raw 32 bytes in base64url:
//   authd:   {"kind":"authd","kid":HEX8,"sign":{"public","secret"},"seal":{"public","secret"}}
//   service: {"kind":"service","service":ID,"seal":{"public","secret"}}
//   device:  {"kind":"device","deviceId":ID,"sign":{"public","secret"}}
// The public halves ("devloc keygen --public") are the same objects without "secret" and with
// kind "authd-public" / "service-public" / "device-public".
import type { KeyObject } from 'node:crypto';
import { createPrivateKey, createPublicKey, diffieHellman, randomBytes, sign, verify } from 'node:crypto';

export interface RawPair {
  public: Buffer;
  secret: Buffer;
}

export type KeyFile =
  | { kind: 'authd'; kid: string; sign: RawPair; seal: RawPair; created?: string }
  | { kind: 'service'; service: string; seal: RawPair; created?: string }
  | { kind: 'device'; deviceId: string; sign: RawPair; created?: string };

export type PublicKeyFile =
  | { kind: 'authd-public'; kid: string; sign: Buffer; seal: Buffer }
  | { kind: 'service-public'; service: string; seal: Buffer }
  | { kind: 'device-public'; deviceId: string; sign: Buffer };

const b64 = (b: Buffer): string => b.toString('base64url');

// Keys are made from raw bytes, never by generateKeyPairSync, and no raw key is read back
// through a JWK export: `devloc bench` load generators deadlocked in uv_mutex_lock when GC ran a
// KeyGenJob's destructor while ExportJWKEdKey allocated (issue 16), and buildAuthRequest made
// such a pair on every authentication. Neither native path is used any more.
// - X25519 public key = X25519(secret, 9) (RFC 7748 section 6.1): one agreement with the base
//   point, no export at all.
// - Ed25519 public key (key files, tests): the last 32 bytes of the SPKI DER export (RFC 8410).
// - Imports use node's raw-key path (a JWK object, turned into EVP_PKEY_new_raw_*_key): on
//   Node 20 (OpenSSL 3.0) a PKCS#8 or SPKI DER import goes through OpenSSL's generic decoders
//   and costs 12-15x more (measured: ~2 ms vs ~0.15 ms private, ~0.4 ms vs ~0.03 ms public),
//   which authd and locatord would pay per request. An import only creates a new key (node's
//   initEDRaw); it neither generates nor exports one.
type Alg = 'ed25519' | 'x25519';
const CRV: Record<Alg, 'Ed25519' | 'X25519'> = { ed25519: 'Ed25519', x25519: 'X25519' };
const RAW_KEY_BYTES = 32;
const algOf = (alg: 'Ed25519' | 'X25519' | Alg): Alg => (alg === 'Ed25519' || alg === 'ed25519' ? 'ed25519' : 'x25519');

function raw32Bytes(raw: Uint8Array, what: string): Buffer {
  if (raw.length !== RAW_KEY_BYTES) throw new TypeError(`${what} must be ${RAW_KEY_BYTES} bytes, not ${raw.length}`);
  return Buffer.from(raw.buffer, raw.byteOffset, raw.length);
}

function privateFromRaw(alg: Alg, secret: Uint8Array): KeyObject {
  const d = raw32Bytes(secret, `${alg} secret key`).toString('base64url');
  // node derives the public half from d and ignores x, which must only be present.
  return createPrivateKey({ key: { kty: 'OKP', crv: CRV[alg], d, x: '' }, format: 'jwk' });
}

/** The X25519 base point u = 9, as a public key (for public = X25519(secret, 9)). */
let basePoint: KeyObject | undefined;

/** The raw 32-byte public key of a private or public Ed25519/X25519 KeyObject (SPKI DER export). */
export function rawPublicKey(key: KeyObject): Buffer {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  const spki = pub.export({ format: 'der', type: 'spki' });
  return spki.subarray(spki.length - RAW_KEY_BYTES);
}

/** The raw public key belonging to a raw 32-byte secret. */
export function publicFromSecret(alg: 'ed25519' | 'x25519', secret: Uint8Array): Buffer {
  const key = privateFromRaw(alg, secret);
  if (alg === 'ed25519') return rawPublicKey(key);
  basePoint ??= publicKeyObject('X25519', Buffer.from([9, ...new Array<number>(31).fill(0)]));
  return diffieHellman({ privateKey: key, publicKey: basePoint });
}

/** A fresh key pair: 32 random bytes and the public key computed from them. */
export function generatePair(alg: 'ed25519' | 'x25519'): RawPair {
  const secret = randomBytes(RAW_KEY_BYTES);
  return { secret, public: publicFromSecret(alg, secret) };
}

/** Private KeyObject from a raw pair (the public half is not used: it is derived from the secret). */
export function privateKeyObject(alg: 'Ed25519' | 'X25519', pair: RawPair): KeyObject {
  return privateFromRaw(algOf(alg), pair.secret);
}

/** Public KeyObject from 32 raw bytes; throws for any other length. */
export function publicKeyObject(alg: 'Ed25519' | 'X25519', raw: Uint8Array): KeyObject {
  const x = raw32Bytes(raw, `${alg} public key`).toString('base64url');
  return createPublicKey({ key: { kty: 'OKP', crv: CRV[algOf(alg)], x }, format: 'jwk' });
}

/** Ed25519 signature (node:crypto, RFC 8032). */
export function ed25519Sign(key: KeyObject, data: Uint8Array): Buffer {
  return sign(null, data, key);
}

/** Strict Ed25519 verification; false (never a throw) for malformed keys or signatures. */
export function ed25519Verify(key: KeyObject, data: Uint8Array, signature: Uint8Array): boolean {
  if (signature.length !== 64) return false;
  try {
    return verify(null, data, key, signature);
  } catch {
    return false;
  }
}

/** X25519 shared secret; null if the peer key is invalid (e.g. a low-order point gives zeros). */
export function x25519(privateKey: KeyObject, peerPublic: Uint8Array): Buffer | null {
  try {
    const shared = diffieHellman({ privateKey, publicKey: publicKeyObject('X25519', peerPublic) });
    return shared.every((b) => b === 0) ? null : shared;
  } catch {
    return null;
  }
}

export function newKid(): string {
  return randomBytes(4).toString('hex');
}

const DEVICE_ID_RE = /^[A-Za-z0-9._:-]{1,64}$/;
const SERVICE_ID_RE = /^[a-z0-9][a-z0-9.-]{0,63}$/;
export const isDeviceId = (s: string): boolean => DEVICE_ID_RE.test(s);
export const isServiceId = (s: string): boolean => SERVICE_ID_RE.test(s);

export function newAuthdKey(): KeyFile {
  return { kind: 'authd', kid: newKid(), sign: generatePair('ed25519'), seal: generatePair('x25519'), created: new Date().toISOString() };
}
export function newServiceKey(service: string): KeyFile {
  if (!isServiceId(service)) throw new TypeError(`bad service ID ${JSON.stringify(service)}: lowercase letters, digits, '.', '-'`);
  return { kind: 'service', service, seal: generatePair('x25519'), created: new Date().toISOString() };
}
export function newDeviceKey(deviceId?: string): KeyFile {
  const id = deviceId ?? `D${randomBytes(8).toString('hex').toUpperCase()}`;
  if (!isDeviceId(id)) throw new TypeError(`bad device ID ${JSON.stringify(id)}: 1-64 of A-Z a-z 0-9 . _ : -`);
  return { kind: 'device', deviceId: id, sign: generatePair('ed25519'), created: new Date().toISOString() };
}

const pairJson = (p: RawPair): object => ({ public: b64(p.public), secret: b64(p.secret) });

export function keyFileToJson(k: KeyFile): string {
  const o: Record<string, unknown> = { ...k };
  if ('sign' in k) o['sign'] = pairJson(k.sign);
  if ('seal' in k) o['seal'] = pairJson(k.seal);
  return JSON.stringify(o, null, 2) + '\n';
}

export function publicOf(k: KeyFile): PublicKeyFile {
  switch (k.kind) {
    case 'authd':
      return { kind: 'authd-public', kid: k.kid, sign: k.sign.public, seal: k.seal.public };
    case 'service':
      return { kind: 'service-public', service: k.service, seal: k.seal.public };
    case 'device':
      return { kind: 'device-public', deviceId: k.deviceId, sign: k.sign.public };
  }
}

export function publicToJson(p: PublicKeyFile): string {
  const o: Record<string, unknown> = { ...p };
  for (const f of ['sign', 'seal'] as const) if (f in p) o[f] = b64((p as unknown as Record<string, Buffer>)[f]!);
  return JSON.stringify(o);
}

export type ParseResult<T> = { ok: true; value: T } | { ok: false; error: string };

function raw32(v: unknown, what: string): Buffer {
  if (typeof v !== 'string') throw new Error(`${what} missing`);
  const b = Buffer.from(v, 'base64url');
  if (b.length !== 32 || b.toString('base64url') !== v) throw new Error(`${what} is not 32 bytes of base64url`);
  return b;
}
function pair(v: unknown, what: string): RawPair {
  if (typeof v !== 'object' || v === null) throw new Error(`${what} missing`);
  const o = v as Record<string, unknown>;
  return { public: raw32(o['public'], `${what}.public`), secret: raw32(o['secret'], `${what}.secret`) };
}

/** Parse a private key file; checks that each public half matches its secret. */
export function parseKeyFile(text: string): ParseResult<KeyFile> {
  try {
    const o = JSON.parse(text) as Record<string, unknown>;
    let k: KeyFile;
    if (o['kind'] === 'authd') {
      if (typeof o['kid'] !== 'string' || !/^[0-9a-f]{2,32}$/.test(o['kid'])) throw new Error('kid must be hex');
      k = { kind: 'authd', kid: o['kid'], sign: pair(o['sign'], 'sign'), seal: pair(o['seal'], 'seal') };
    } else if (o['kind'] === 'service') {
      if (typeof o['service'] !== 'string' || !isServiceId(o['service'])) throw new Error('service ID invalid');
      k = { kind: 'service', service: o['service'], seal: pair(o['seal'], 'seal') };
    } else if (o['kind'] === 'device') {
      if (typeof o['deviceId'] !== 'string' || !isDeviceId(o['deviceId'])) throw new Error('deviceId invalid');
      k = { kind: 'device', deviceId: o['deviceId'], sign: pair(o['sign'], 'sign') };
    } else {
      throw new Error(`unknown kind ${JSON.stringify(o['kind'])} (expected authd, service or device)`);
    }
    if (typeof o['created'] === 'string') k.created = o['created'];
    // A mismatched public half would make every signature fail far from here: check now.
    if ('sign' in k) {
      if (!publicFromSecret('ed25519', k.sign.secret).equals(k.sign.public)) throw new Error('sign.public does not match sign.secret');
    }
    if ('seal' in k) {
      if (!publicFromSecret('x25519', k.seal.secret).equals(k.seal.public)) throw new Error('seal.public does not match seal.secret');
    }
    return { ok: true, value: k };
  } catch (err) {
    return { ok: false, error: (err as Error).message };
  }
}

export function parsePublicKeyFile(text: string): ParseResult<PublicKeyFile> {
  try {
    const o = JSON.parse(text) as Record<string, unknown>;
    switch (o['kind']) {
      case 'authd-public':
      case 'authd':
        // Same identifier rules as parseKeyFile: a kid that is not hex never matches a ticket.
        if (typeof o['kid'] !== 'string' || !/^[0-9a-f]{2,32}$/.test(o['kid'])) throw new Error('kid must be hex');
        return {
          ok: true,
          value: {
            kind: 'authd-public', kid: o['kid'],
            sign: raw32(typeof o['sign'] === 'object' ? (o['sign'] as Record<string, unknown>)['public'] : o['sign'], 'sign'),
            seal: raw32(typeof o['seal'] === 'object' ? (o['seal'] as Record<string, unknown>)['public'] : o['seal'], 'seal'),
          },
        };
      case 'service-public':
      case 'service':
        if (typeof o['service'] !== 'string' || !isServiceId(o['service'])) throw new Error('service ID invalid');
        return {
          ok: true,
          value: { kind: 'service-public', service: o['service'], seal: raw32(typeof o['seal'] === 'object' ? (o['seal'] as Record<string, unknown>)['public'] : o['seal'], 'seal') },
        };
      case 'device-public':
      case 'device':
        if (typeof o['deviceId'] !== 'string' || !isDeviceId(o['deviceId'])) throw new Error('deviceId invalid');
        return {
          ok: true,
          value: { kind: 'device-public', deviceId: o['deviceId'], sign: raw32(typeof o['sign'] === 'object' ? (o['sign'] as Record<string, unknown>)['public'] : o['sign'], 'sign') },
        };
      default:
        throw new Error(`unknown kind ${JSON.stringify(o['kind'])}`);
    }
  } catch (err) {
    return { ok: false, error: (err as Error).message };
  }
}

// ---- file checks ------------------------------------------------------------------------------
// One rule for every key or trust file a devloc program reads (the callers stat the file they
// opened and pass the result here, so the check is the same everywhere and needs no node:fs):
//   secret (a private key: device identity, service key, authd key): no permission bit for
//     group or others (mode & 0o077), so nobody else can read or replace it;
//   trust (a public key trusted to sign tickets, or sealed to): not writable by group or others
//     (mode & 0o022), so nobody else can substitute their own key;
//   both: owned by root or by the user reading it. Another user who owns the file can chmod it
//     and rewrite it at will, whatever its mode says now.

export type KeyFileRole = 'secret' | 'trust';

/** Mode bits that make a file of each role unacceptable. */
export const FORBIDDEN_MODE: Readonly<Record<KeyFileRole, number>> = { secret: 0o077, trust: 0o022 };

/**
 * Null when `st` (from fstat of the opened file) is acceptable for a file of this role, else a
 * one-line reason naming the file, its mode or owner and the command that fixes it. `uid` is the
 * reading process's (process.getuid()); root's files are always acceptable owners.
 */
export function keyFileProblem(file: string, what: string, st: { mode: number; uid: number }, role: KeyFileRole, uid: number | undefined = process.getuid?.()): string | null {
  const mode = (st.mode & 0o7777).toString(8).padStart(4, '0');
  if (st.mode & FORBIDDEN_MODE[role]) {
    return role === 'secret'
      ? `${what} ${file} has mode ${mode}: a secret key must not be readable or writable by group or others (run: chmod 0400 ${file})`
      : `${what} ${file} has mode ${mode}: it must not be writable by group or others (run: chmod go-w ${file})`;
  }
  if (uid !== undefined && st.uid !== 0 && st.uid !== uid) {
    return `${what} ${file} is owned by uid ${st.uid}, not by root or this user (uid ${uid}): its owner could replace it (run: chown ${uid} ${file})`;
  }
  return null;
}
