// Session authentication for the high-volume path.
//
// Keys: the terminal's ticket carries its X25519 public key (cnf). Terminal and service each
// compute X25519(own secret, other's public) — the terminal with its cnf secret and the service's
// static public key (delivered by authd in the grant), the service with its static secret and the
// cnf key from the verified ticket — and derive
//   HKDF-SHA-256(ikm = shared, salt = cti, info = "devloc-session-v1 " || aud, 64 bytes)
//   = terminalToServer key (32) || serverToTerminal key (32).
// Only the holder of the cnf secret and the service can compute them: that is the proof of
// possession, and a stolen ticket opens nothing. One ECDH per session; every later datagram
// costs one HMAC.
//
// MAC: HMAC-SHA-256(direction key, datagram minus its last 16 bytes), truncated to 16 bytes,
// placed in those last 16 bytes (the envelope's auth [sid, seq, mac]).
import type { KeyObject } from 'node:crypto';
import { createHmac, createSecretKey, hkdfSync, timingSafeEqual } from 'node:crypto';
import { MAC_BYTES, REPLAY_WINDOW } from './constants.js';
import { x25519 } from './keys.js';

export interface SessionKeys {
  terminalToServer: KeyObject;
  serverToTerminal: KeyObject;
}

export function deriveSessionKeys(ownSecret: KeyObject, peerPublic: Uint8Array, cti: Uint8Array, aud: string): SessionKeys | null {
  const shared = x25519(ownSecret, peerPublic);
  if (!shared) return null;
  const okm = Buffer.from(hkdfSync('sha256', shared, cti, `devloc-session-v1 ${aud}`, 64));
  return { terminalToServer: createSecretKey(okm.subarray(0, 32)), serverToTerminal: createSecretKey(okm.subarray(32)) };
}

function tagOf(key: KeyObject, datagram: Uint8Array): Buffer {
  return createHmac('sha256', key).update(datagram.subarray(0, datagram.length - MAC_BYTES)).digest().subarray(0, MAC_BYTES);
}

/** Write the MAC into the last 16 bytes of an encoded datagram (in place) and return it. */
export function sealDatagram(key: KeyObject, datagram: Buffer): Buffer {
  tagOf(key, datagram).copy(datagram, datagram.length - MAC_BYTES);
  return datagram;
}

/** Constant-time check of the trailing MAC. */
export function verifyDatagram(key: KeyObject, datagram: Uint8Array): boolean {
  if (datagram.length < MAC_BYTES) return false;
  return timingSafeEqual(tagOf(key, datagram), datagram.subarray(datagram.length - MAC_BYTES));
}

/**
 * Anti-replay window over 64-bit sequence numbers (DTLS-style sliding window of 64).
 * `check` is pure; call `accept` only after the MAC verified, so forged packets never move it.
 * Implementation: slot seq % 64 remembers the last sequence number accepted there; inside the
 * window slots are distinct, so a slot holding `seq` means seen.
 */
export class ReplayWindow {
  private highest = -1;
  private readonly slots = new Float64Array(REPLAY_WINDOW).fill(-1);

  /** 'ok', 'replay' (already seen) or 'old' (left of the window). */
  check(seq: number): 'ok' | 'replay' | 'old' {
    if (seq > this.highest) return 'ok';
    if (seq + REPLAY_WINDOW <= this.highest) return 'old';
    return this.slots[seq % REPLAY_WINDOW] === seq ? 'replay' : 'ok';
  }

  accept(seq: number): void {
    // Left of the window: its slot may hold a newer accepted seq, which must stay remembered.
    if (seq + REPLAY_WINDOW <= this.highest) return;
    this.slots[seq % REPLAY_WINDOW] = seq;
    if (seq > this.highest) this.highest = seq;
  }

  get highestSeen(): number {
    return this.highest;
  }

  /** State for snapshots: highest and the seen set within the window. */
  toJSON(): { highest: number; seen: number[] } {
    return { highest: this.highest, seen: Array.from(this.slots).filter((s) => s >= 0 && s + REPLAY_WINDOW > this.highest) };
  }

  static fromJSON(o: { highest: number; seen: number[] }): ReplayWindow {
    const w = new ReplayWindow();
    for (const s of o.seen) w.accept(s);
    if (o.highest > w.highest) w.highest = o.highest;
    return w;
  }
}
