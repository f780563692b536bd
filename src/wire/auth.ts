// The authentication exchange, both halves, without sockets or clocks.
//
// Terminal -> authd, AUTH_REQUEST: {authdKey: kid, ephemeral: E.pub, sealed: Seal_req(AuthInner), cookie?, padding}
//   AuthInner = {deviceId, timeMs, nonce, audiences, cnf, signature}
//   signature = Ed25519(device key, CBOR ["devloc-auth-v1", authd seal pub, E.pub, deviceId, timeMs, nonce, audiences, cnf])
//   Seal_req AAD = requestId || kid || E.pub
// authd -> terminal, AUTH_RESPONSE: {sealed: nonce(12) || Seal_resp(AuthGrant)}, AAD = requestId.
// The signature binds the proof to this authd and this ephemeral key, so a captured request is
// useless to anyone who lacks E's secret: its answer is sealed to E. authd also refuses a
// (device, nonce) pair seen before within the clock-skew window.
import type { KeyObject } from 'node:crypto';
import { randomBytes } from 'node:crypto';
import { randomDraw } from './random-pool.js';
import type { AuthGrant, AuthInner } from './catalog.js';
import { authGrantFields, authInnerFields } from './catalog.js';
import type { CborValue } from './cbor.js';
import { decodeStrict, encodeCbor } from './cbor.js';
import { AUTH_REQUEST_SIZE } from './constants.js';
import { encodeDatagram } from './envelope.js';
import { ErrorCode } from './errors.js';
import type { RawPair } from './keys.js';
import { ed25519Sign, ed25519Verify, generatePair, privateKeyObject, rawPublicKey } from './keys.js';
import { decodeFields, encodeBody } from './schema.js';
import type { SealKeys } from './seal.js';
import { deriveSealKeys, NONCE_BYTES, openBytes, sealBytes } from './seal.js';

export function proofInput(authdSealPublic: Uint8Array, ephemeral: Uint8Array, inner: Omit<AuthInner, 'signature'>): Buffer {
  return encodeCbor([
    'devloc-auth-v1', authdSealPublic, ephemeral, inner.deviceId, inner.timeMs, inner.nonce,
    inner.audiences as CborValue[], inner.cnf,
  ]);
}

const ridAad = (rid: Uint8Array, kid: Uint8Array, eph: Uint8Array): Buffer => Buffer.concat([rid, kid, eph]);

export interface AuthRequestInput {
  rid: Uint8Array;
  deviceId: string;
  deviceKey: KeyObject;
  authdKid: Uint8Array;
  authdSealPublic: Uint8Array;
  audiences: string[];
  /** Terminal's session X25519 public key, to be bound into every ticket. */
  cnf: Uint8Array;
  timeMs: number;
  cookie?: Uint8Array;
}

export interface BuiltAuthRequest {
  datagram: Buffer;
  keys: SealKeys;
  nonce: Buffer;
}

/** Terminal side: build the padded AUTH_REQUEST datagram. */
export function buildAuthRequest(i: AuthRequestInput): BuiltAuthRequest {
  return buildAuthRequestWith(i, generatePair('x25519'), randomBytes(16));
}

/**
 * Deterministic core of `buildAuthRequest`: the one-shot X25519 pair and the 16-byte nonce are
 * inputs (test vectors). Everything else is deterministic (Ed25519 signatures are).
 * Throws RangeError when the request cannot be padded to exactly AUTH_REQUEST_SIZE bytes.
 */
export function buildAuthRequestWith(i: AuthRequestInput, eph: RawPair, nonceBytes: Uint8Array): BuiltAuthRequest {
  const keys = deriveSealKeys(privateKeyObject('X25519', eph), i.authdSealPublic, eph.public, i.authdSealPublic);
  if (!keys) throw new Error('authd sealing key is invalid');
  const nonce = Buffer.from(nonceBytes);
  const unsigned = { deviceId: i.deviceId, timeMs: i.timeMs, nonce, audiences: i.audiences, cnf: i.cnf };
  const signature = ed25519Sign(i.deviceKey, proofInput(i.authdSealPublic, eph.public, unsigned));
  const inner = encodeBody(authInnerFields, { ...unsigned, signature });
  const sealed = sealBytes(keys.request, inner, ridAad(i.rid, i.authdKid, eph.public));
  const body = { authdKey: i.authdKid, ephemeral: eph.public, sealed, ...(i.cookie ? { cookie: i.cookie } : {}) };
  const bare = encodeDatagram('AUTH_REQUEST', i.rid, body);
  // Pad to exactly AUTH_REQUEST_SIZE. The padding field costs a key byte plus a bstr head of 1
  // (length < 24), 2 (< 256) or 3 bytes, so solve for its length. (The body map's head does not
  // grow: it has at most 5 entries.) Three room sizes have no solution: 1, 26 (23 B of padding
  // make 25, 24 B make 27) and 259; those, and a request already too large, are refused rather
  // than sent at the wrong size. (Schema-valid inputs leave hundreds of bytes of room.)
  const room = AUTH_REQUEST_SIZE - bare.length;
  const padLength = room - 2 < 24 ? room - 2 : room - 3 < 256 ? room - 3 : room - 4;
  const datagram = padLength >= 0
    ? encodeDatagram('AUTH_REQUEST', i.rid, { ...body, padding: Buffer.alloc(padLength) })
    : bare;
  if (datagram.length !== AUTH_REQUEST_SIZE) {
    throw new RangeError(`AUTH_REQUEST of ${bare.length} B unpadded cannot be padded to ${AUTH_REQUEST_SIZE} B`);
  }
  return { datagram, keys, nonce };
}

/** authd's sealing public key, derived once per KeyObject (not per request). */
const sealPublics = new WeakMap<KeyObject, Buffer>();
function sealPublicOf(secret: KeyObject): Buffer {
  let pub = sealPublics.get(secret);
  if (!pub) {
    pub = rawPublicKey(secret);
    sealPublics.set(secret, pub);
  }
  return pub;
}

export type OpenedAuthRequest =
  | { ok: true; inner: AuthInner; keys: SealKeys }
  | { ok: false; code: ErrorCode; reason: string };

/**
 * authd side: open and check the sealed request. `deviceKeyOf` returns the device's Ed25519
 * public key (or a refusal), so the signature is checked against the enrolled key.
 */
export function openAuthRequest(
  rid: Uint8Array,
  body: { authdKey: Uint8Array; ephemeral: Uint8Array; sealed: Uint8Array },
  authdSealSecret: KeyObject,
  deviceKeyOf: (deviceId: string) => { ok: true; key: KeyObject } | { ok: false; code: ErrorCode; reason: string },
): OpenedAuthRequest {
  const authdSealPublic = sealPublicOf(authdSealSecret);
  const keys = deriveSealKeys(authdSealSecret, body.ephemeral, body.ephemeral, authdSealPublic);
  if (!keys) return { ok: false, code: ErrorCode.BAD_PROOF, reason: 'invalid ephemeral key' };
  const plain = openBytes(keys.request, body.sealed, ridAad(rid, body.authdKey, body.ephemeral));
  if (!plain) return { ok: false, code: ErrorCode.BAD_PROOF, reason: 'sealed request does not open' };
  const decoded = decodeStrict(plain);
  if (!decoded.ok || !(decoded.value instanceof Map)) return { ok: false, code: ErrorCode.MALFORMED, reason: 'sealed request is not a CBOR map' };
  const fields = decodeFields(authInnerFields, decoded.value, 'inner');
  if (!fields.ok) return { ok: false, code: ErrorCode.BAD_MESSAGE, reason: fields.reason };
  const inner = fields.value as unknown as AuthInner;
  const device = deviceKeyOf(inner.deviceId);
  if (!device.ok) return device;
  if (!ed25519Verify(device.key, proofInput(authdSealPublic, body.ephemeral, inner), inner.signature)) {
    return { ok: false, code: ErrorCode.BAD_PROOF, reason: 'device signature does not verify' };
  }
  return { ok: true, inner, keys };
}

/** authd side: nonce(12) || ChaCha20-Poly1305(response key, nonce, grant, AAD = request ID). */
export function sealAuthGrant(keys: SealKeys, rid: Uint8Array, grant: AuthGrant, nonce: Uint8Array = randomDraw(NONCE_BYTES)): Buffer {
  const plain = encodeBody(authGrantFields, grant as unknown as Record<string, unknown>);
  return Buffer.concat([nonce, sealBytes(keys.response, plain, rid, nonce)]);
}

/** Terminal side: open the AUTH_RESPONSE with the keys kept from the request. */
export function openAuthGrant(keys: SealKeys, rid: Uint8Array, sealed: Uint8Array, nonce: Uint8Array): { ok: true; grant: AuthGrant } | { ok: false; reason: string } {
  const plain = openBytes(keys.response, sealed.subarray(NONCE_BYTES), rid, sealed.subarray(0, NONCE_BYTES));
  if (!plain) return { ok: false, reason: 'response does not open with our key' };
  const d = decodeStrict(plain);
  if (!d.ok || !(d.value instanceof Map)) return { ok: false, reason: 'grant is not a CBOR map' };
  const f = decodeFields(authGrantFields, d.value, 'grant');
  if (!f.ok) return { ok: false, reason: f.reason };
  const grant = f.value as unknown as AuthGrant;
  if (!Buffer.from(grant.nonce).equals(Buffer.from(nonce))) return { ok: false, reason: 'grant answers another request' };
  return { ok: true, grant };
}
