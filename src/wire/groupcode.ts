// Join codes of closed groups never travel (issue 15; devloc-protocol(7), GROUP CODES;
// docs/SECURITY.md, "Closed groups").
//
//   codeKey  = HKDF-SHA-256(ikm = UTF-8 join code, salt = "devloc-group-code-v1", info = "", 32)
//
// locatord keeps only codeKey, per group: what it needs to check a proof (it is worth the code
// for joining, not more; the code itself cannot be read back from it except by guessing).
//
// GROUP_CREATE carries codeKey sealed under the creator's session, with a fresh 16-byte nonce:
//   sealKey       = HKDF-SHA-256(ikm = t2s || s2t session keys, salt = nonce, info = "devloc-group-create-v1", 32)
//   sealedCodeKey = ChaCha20-Poly1305(sealKey, nonce = 12 zero bytes, aad = nonce, codeKey)
// GROUP_JOIN (and REGISTER joinGroups) carry a proof bound to the session, the group and a fresh
// 16-byte nonce:
//   binding = HKDF-SHA-256(ikm = t2s || s2t session keys, salt = nonce, info = "devloc-group-join-v1", 32)
//   proof   = HMAC-SHA-256(codeKey, "devloc-group-join-v1" || session ID || group ID || nonce || binding)
// The binding is known only to the terminal and locatord: a captured proof lets nobody test
// guesses of the code offline, and it opens no other session or group.
import { createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';
import { openBytes, sealBytes } from './seal.js';
import type { SessionKeys } from './session.js';
import { rawKey } from './session.js';

export const CODE_KEY_BYTES = 32;
export const CODE_NONCE_BYTES = 16;
export const CODE_PROOF_BYTES = 32;
/** codeKey (32) + Poly1305 tag (16). */
export const SEALED_CODE_KEY_BYTES = 48;

const JOIN_LABEL = Buffer.from('devloc-group-join-v1');

/** The per-group verifier derived from a join code. */
export function codeKeyOf(joinCode: string): Buffer {
  return Buffer.from(hkdfSync('sha256', Buffer.from(joinCode, 'utf8'), 'devloc-group-code-v1', '', CODE_KEY_BYTES));
}

function sessionSecret(keys: SessionKeys, nonce: Uint8Array, info: string): Buffer {
  const ikm = Buffer.concat([rawKey(keys.terminalToServer), rawKey(keys.serverToTerminal)]);
  return Buffer.from(hkdfSync('sha256', ikm, nonce, info, 32));
}

/** GROUP_CREATE's closing fields: a fresh nonce and codeKey sealed under the session. */
export function sealCodeKey(keys: SessionKeys, joinCode: string, nonce: Uint8Array = randomBytes(CODE_NONCE_BYTES)): { nonce: Buffer; sealedCodeKey: Buffer } {
  const n = Buffer.from(nonce);
  return { nonce: n, sealedCodeKey: sealBytes(sessionSecret(keys, n, 'devloc-group-create-v1'), codeKeyOf(joinCode), n) };
}

/** codeKey from GROUP_CREATE; null when it was not sealed under this session with this nonce. */
export function openCodeKey(keys: SessionKeys, nonce: Uint8Array, sealed: Uint8Array): Buffer | null {
  if (nonce.length !== CODE_NONCE_BYTES || sealed.length !== SEALED_CODE_KEY_BYTES) return null;
  const k = openBytes(sessionSecret(keys, nonce, 'devloc-group-create-v1'), sealed, nonce);
  return k && k.length === CODE_KEY_BYTES ? k : null;
}

function proofWith(codeKey: Uint8Array, keys: SessionKeys, sid: Uint8Array, groupId: Uint8Array, nonce: Uint8Array): Buffer {
  const binding = sessionSecret(keys, nonce, 'devloc-group-join-v1');
  return createHmac('sha256', codeKey).update(JOIN_LABEL).update(sid).update(groupId).update(nonce).update(binding).digest();
}

/** A terminal's proof that it knows `joinCode`, for `groupId` in the session (`sid`, `keys`). */
export function joinProof(
  keys: SessionKeys, sid: Uint8Array, groupId: Uint8Array, joinCode: string, nonce: Uint8Array = randomBytes(CODE_NONCE_BYTES),
): { nonce: Buffer; proof: Buffer } {
  const n = Buffer.from(nonce);
  return { nonce: n, proof: proofWith(codeKeyOf(joinCode), keys, sid, groupId, n) };
}

/** locatord's check of a proof against the stored codeKey (constant time; never throws). */
export function verifyJoinProof(
  codeKey: Uint8Array, keys: SessionKeys, sid: Uint8Array, groupId: Uint8Array, nonce: Uint8Array, proof: Uint8Array,
): boolean {
  if (codeKey.length !== CODE_KEY_BYTES || nonce.length !== CODE_NONCE_BYTES || proof.length !== CODE_PROOF_BYTES) return false;
  return timingSafeEqual(proofWith(codeKey, keys, sid, groupId, nonce), proof);
}
