// Sealing for the authentication exchange (an ECIES: X25519 + HKDF-SHA-256 +
// ChaCha20-Poly1305). The terminal makes a one-shot X25519 key, agrees a secret with authd's
// static sealing key and derives two keys: one seals the request (so the device ID never
// crosses the wire in clear), the other seals the response (so only that terminal can read its
// grant). The request key is used once (the ephemeral key is fresh), so the request uses a zero
// nonce; the response carries a random 12-byte nonce in front of the ciphertext, because authd
// could seal twice under one response key (a replayed request after it lost its replay cache),
// and a repeated ChaCha20-Poly1305 nonce would leak both plaintexts and the MAC key.
import type { KeyObject } from 'node:crypto';
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { hkdf } from './hkdf.js';
import { x25519 } from './keys.js';

const AUTH_INFO = Buffer.from('devloc-auth-v1');

const TAG = 16;
const ZERO_NONCE = Buffer.alloc(12);

export interface SealKeys {
  request: Buffer;
  response: Buffer;
}

/** Derive both keys from X25519(own secret, peer public); null when the peer key is invalid. */
export function deriveSealKeys(own: KeyObject, peerPublic: Uint8Array, ephemeralPublic: Uint8Array, authdPublic: Uint8Array): SealKeys | null {
  const shared = x25519(own, peerPublic);
  if (!shared) return null;
  const salt = Buffer.concat([ephemeralPublic, authdPublic]);
  const okm = hkdf(shared, salt, AUTH_INFO, 64);
  return { request: okm.subarray(0, 32), response: okm.subarray(32, 64) };
}

export const NONCE_BYTES = 12;

export function sealBytes(key: Buffer, plaintext: Uint8Array, aad: Uint8Array, nonce: Uint8Array = ZERO_NONCE): Buffer {
  const c = createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: TAG });
  c.setAAD(aad, { plaintextLength: plaintext.length });
  return Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()]);
}

/** Open sealed bytes; null when the tag does not verify (never throws). */
export function openBytes(key: Buffer, sealed: Uint8Array, aad: Uint8Array, nonce: Uint8Array = ZERO_NONCE): Buffer | null {
  if (sealed.length < TAG || nonce.length !== NONCE_BYTES) return null;
  try {
    const d = createDecipheriv('chacha20-poly1305', key, nonce, { authTagLength: TAG });
    d.setAAD(aad, { plaintextLength: sealed.length - TAG });
    d.setAuthTag(sealed.subarray(sealed.length - TAG));
    return Buffer.concat([d.update(sealed.subarray(0, sealed.length - TAG)), d.final()]);
  } catch {
    return null;
  }
}
