// Keys of a peer channel (devloc-protocol(7), PEER CHANNELS; docs/SECURITY.md, "Peer channels").
//
// 1. Introduction. locatord draws a channel ID (16 random bytes) and a channel key K (32) and
//    gives K to each of the two terminals sealed under that terminal's own locatord session:
//      sealKey = HKDF-SHA-256(ikm = t2s || s2t session keys, salt = channelId, info = "devloc-intro-v1", 32)
//      sealedKey = ChaCha20-Poly1305(sealKey, nonce = 12 zero bytes, aad = channelId || peer locator ID, K)
//    The session keys are known only to that terminal and locatord, so an eavesdropper on either
//    session learns nothing of K; a seal key is used for one plaintext only (one per channel ID
//    and session), hence the fixed nonce. The aad binds K to the channel and to the peer named.
// 2. Punching. PUNCH and PUNCH_ACK are MACed (the session MAC of src/wire/session.ts) with
//      HKDF-SHA-256(ikm = K, salt = channelId, info = "devloc-punch-v1", 64)
//        = initiator-to-responder key (32) || responder-to-initiator key (32),
//    and each carries its sender's ephemeral X25519 public key for the channel.
// 3. Data. Once both ephemeral keys are known:
//      HKDF-SHA-256(ikm = X25519(own ephemeral, peer ephemeral), salt = K,
//                   info = "devloc-peer-data-v1" || channelId || initiator eph || responder eph, 128)
//        = i2r encryption (32) || i2r MAC (32) || r2i encryption (32) || r2i MAC (32).
//    DATA payloads are ChaCha20 (RFC 8439, block counter 0) under the direction's encryption key
//    with the 12-byte nonce 0x00000000 || seq (64-bit big-endian: the envelope sequence number,
//    never repeated in a direction), then the whole datagram is MACed with the direction's MAC
//    key (encrypt-then-MAC). Without the ephemeral secrets, K alone opens no data: a passive
//    observer that later obtains locatord's session keys (or K) cannot read a channel.
import type { KeyObject } from 'node:crypto';
import { createCipheriv, createSecretKey } from 'node:crypto';
import { CHANNEL_ID_BYTES, SEALED_CHANNEL_KEY_BYTES } from './constants.js';
import { hkdf } from './hkdf.js';
import { x25519 } from './keys.js';
import { openBytes, sealBytes } from './seal.js';
import type { SessionKeys } from './session.js';
import { rawKey } from './session.js';

export const CHANNEL_KEY_BYTES = 32;

const INTRO_INFO = Buffer.from('devloc-intro-v1');
const PUNCH_INFO = Buffer.from('devloc-punch-v1');

/** Which end of a channel: the terminal that sent INTRODUCE, or the one that got INTRO. */
export type ChannelRole = 'initiator' | 'responder';

/** The key that seals a channel key for the terminal of `session` (see above). */
export function introSealKey(session: SessionKeys, channelId: Uint8Array): Buffer {
  const ikm = Buffer.concat([rawKey(session.terminalToServer), rawKey(session.serverToTerminal)]);
  return hkdf(ikm, channelId, INTRO_INFO, 32);
}

function introAad(channelId: Uint8Array, peer: Uint8Array): Buffer {
  return Buffer.concat([channelId, peer]);
}

/** Seal channel key `key` for the terminal of `session`; `peer` is the other terminal's locator ID. */
export function sealChannelKey(session: SessionKeys, channelId: Uint8Array, peer: Uint8Array, key: Uint8Array): Buffer {
  if (key.length !== CHANNEL_KEY_BYTES || channelId.length !== CHANNEL_ID_BYTES) throw new TypeError('channel key is 32 bytes, channel ID 16');
  return sealBytes(introSealKey(session, channelId), key, introAad(channelId, peer));
}

/** Open a sealed channel key; null when it was not sealed under `session` for this channel and peer. */
export function openChannelKey(session: SessionKeys, channelId: Uint8Array, peer: Uint8Array, sealed: Uint8Array): Buffer | null {
  if (sealed.length !== SEALED_CHANNEL_KEY_BYTES || channelId.length !== CHANNEL_ID_BYTES) return null;
  const key = openBytes(introSealKey(session, channelId), sealed, introAad(channelId, peer));
  return key && key.length === CHANNEL_KEY_BYTES ? key : null;
}

/** MAC keys of PUNCH / PUNCH_ACK, per direction. */
export interface PunchKeys {
  initiatorToResponder: KeyObject;
  responderToInitiator: KeyObject;
}

export function derivePunchKeys(channelKey: Uint8Array, channelId: Uint8Array): PunchKeys {
  const okm = hkdf(channelKey, channelId, PUNCH_INFO, 64);
  return { initiatorToResponder: createSecretKey(okm.subarray(0, 32)), responderToInitiator: createSecretKey(okm.subarray(32)) };
}

/** Keys of DATA / DATA_ACK, per direction: ChaCha20 key and MAC key. */
export interface DataKeys {
  initiatorToResponder: { enc: Buffer; mac: KeyObject };
  responderToInitiator: { enc: Buffer; mac: KeyObject };
}

/**
 * Derive the data keys from our ephemeral secret and the peer's ephemeral public key. Both ends
 * get the same keys (the public keys enter in initiator, responder order). Null when the peer's
 * key is unusable (a low-order point gives an all-zero secret).
 */
export function deriveDataKeys(
  ownSecret: KeyObject, peerPublic: Uint8Array, channelKey: Uint8Array, channelId: Uint8Array,
  initiatorEph: Uint8Array, responderEph: Uint8Array,
): DataKeys | null {
  const shared = x25519(ownSecret, peerPublic);
  if (!shared) return null;
  const info = Buffer.concat([Buffer.from('devloc-peer-data-v1'), channelId, initiatorEph, responderEph]);
  const okm = hkdf(shared, channelKey, info, 128);
  return {
    initiatorToResponder: { enc: okm.subarray(0, 32), mac: createSecretKey(okm.subarray(32, 64)) },
    responderToInitiator: { enc: okm.subarray(64, 96), mac: createSecretKey(okm.subarray(96, 128)) },
  };
}

/** The 16-byte IV node's "chacha20" takes: 32-bit block counter (0, little-endian) || 96-bit nonce (0 || seq). */
function chachaIv(seq: number): Buffer {
  const iv = Buffer.alloc(16);
  iv.writeBigUInt64BE(BigInt(seq), 8);
  return iv;
}

/** ChaCha20 keystream XOR: encrypts and decrypts. `seq` must never repeat under one key. */
export function channelCipher(key: Buffer, seq: number, data: Uint8Array): Buffer {
  const c = createCipheriv('chacha20', key, chachaIv(seq));
  return Buffer.concat([c.update(data), c.final()]);
}
