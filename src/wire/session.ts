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
import { createHmac, timingSafeEqual } from 'node:crypto';
import { MAC_BYTES, REPLAY_WINDOW } from './constants.js';
import { hkdf } from './hkdf.js';
import { SessionMacs } from './hmac-sha256.js';
import { x25519 } from './keys.js';

/**
 * A session direction key: its 32 raw bytes (what deriveSessionKeys makes; a server holds a
 * million, and a KeyObject costs ~700 B of native memory each) or a KeyObject.
 */
export type SessionKey = Uint8Array | KeyObject;

export interface SessionKeys {
  terminalToServer: SessionKey;
  serverToTerminal: SessionKey;
}

/** The raw bytes of a session key (snapshots, the shared store, key derivations from it). */
export function rawKey(k: SessionKey): Buffer {
  if (k instanceof Uint8Array) return Buffer.from(k.buffer, k.byteOffset, k.byteLength);
  return k.export();
}

/** Bytes of one slab of long-lived session bytes (see slabAlloc). */
const SLAB_BYTES = 64 * 1024;
let slab = Buffer.alloc(0);
let slabUsed = 0;

/**
 * `n` bytes for state that lives as long as a session (its IDs and keys), cut from slabs kept
 * for that only: no ArrayBuffer per session (each costs ~200 B of native bookkeeping), and not
 * Node's shared pool either, where one long-lived view would keep alive an 8 KB pool slab full of
 * per-datagram garbage. Sessions opened together expire together, so their slab is freed (by the
 * GC, with its last view) about when they are.
 */
export function slabAlloc(n: number): Buffer {
  if (n > SLAB_BYTES / 8) return Buffer.alloc(n);
  if (slabUsed + n > slab.length) {
    slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
    slabUsed = 0;
  }
  const b = slab.subarray(slabUsed, slabUsed + n);
  // Aligned to 8 bytes, as Node's pool does.
  slabUsed += (n + 7) & ~7;
  return b;
}

/** A copy of `bytes` in a session slab (slabAlloc). */
export function pooledCopy(bytes: Uint8Array): Buffer {
  const b = slabAlloc(bytes.length);
  b.set(bytes);
  return b;
}

/** Both keys as copies of raw bytes in a session slab. */
export function sessionKeysFromBytes(t2s: Uint8Array, s2t: Uint8Array): { terminalToServer: Buffer; serverToTerminal: Buffer } {
  return { terminalToServer: pooledCopy(t2s), serverToTerminal: pooledCopy(s2t) };
}

export function deriveSessionKeys(ownSecret: KeyObject, peerPublic: Uint8Array, cti: Uint8Array, aud: string): SessionKeys | null {
  const shared = x25519(ownSecret, peerPublic);
  if (!shared) return null;
  const okm = hkdf(shared, cti, Buffer.from(`devloc-session-v1 ${aud}`), 64);
  return sessionKeysFromBytes(okm.subarray(0, 32), okm.subarray(32));
}

function tagOf(key: SessionKey, datagram: Uint8Array): Buffer {
  return createHmac('sha256', key).update(datagram.subarray(0, datagram.length - MAC_BYTES)).digest().subarray(0, MAC_BYTES);
}

/**
 * Write the MAC into the last 16 bytes of an encoded datagram (in place) and return it. With
 * `macs` (a server: a MAC per datagram) a raw 32-byte key goes through it (hmac-sha256.ts),
 * anything else through node:crypto; the bytes are the same. `keyAt`: where the 32-byte key
 * starts in `key`, when that is a server's bytes holding several (no view made per datagram).
 */
export function sealDatagram(key: SessionKey, datagram: Buffer, macs?: SessionMacs, keyAt = 0): Buffer {
  if (macs && SessionMacs.fits(key, keyAt)) macs.seal(key, datagram, keyAt);
  else tagOf(keyFrom(key, keyAt), datagram).copy(datagram, datagram.length - MAC_BYTES);
  return datagram;
}

/** Constant-time check of the trailing MAC (`macs` and `keyAt` as for sealDatagram). */
export function verifyDatagram(key: SessionKey, datagram: Uint8Array, macs?: SessionMacs, keyAt = 0): boolean {
  if (macs && SessionMacs.fits(key, keyAt)) return macs.verify(key, datagram, keyAt);
  if (datagram.length < MAC_BYTES) return false;
  return timingSafeEqual(tagOf(keyFrom(key, keyAt), datagram), datagram.subarray(datagram.length - MAC_BYTES));
}

/** The key at `keyAt` of `key` (raw session keys are 32 bytes; a key object is itself). */
function keyFrom(key: SessionKey, keyAt: number): SessionKey {
  return key instanceof Uint8Array && (keyAt !== 0 || key.length > 32) ? key.subarray(keyAt, keyAt + 32) : key;
}

/**
 * Anti-replay window over 64-bit sequence numbers (DTLS-style sliding window of 64,
 * devloc-protocol(7) "Sequence numbers and the replay window"): the highest number accepted, H,
 * and a 64-bit bitmap of which of H-63..H were accepted (bit d: H-d), kept in two 32-bit
 * integers so that a window costs three number fields and no buffer (one per session, a million
 * sessions per locatord). `check` is pure; call `accept` only after the MAC verified, so forged
 * packets never move it.
 */
export class ReplayWindow {
  private highest = -1;
  /** Bits 0..31 of the bitmap: H-0 .. H-31. */
  private lo = 0;
  /** Bits 32..63: H-32 .. H-63. */
  private hi = 0;

  /** 'ok', 'replay' (already seen) or 'old' (left of the window). */
  check(seq: number): 'ok' | 'replay' | 'old' {
    if (seq > this.highest) return 'ok';
    const d = this.highest - seq;
    if (d >= REPLAY_WINDOW) return 'old';
    return this.has(d) ? 'replay' : 'ok';
  }

  private has(d: number): boolean {
    return d < 32 ? ((this.lo >>> d) & 1) === 1 : ((this.hi >>> (d - 32)) & 1) === 1;
  }

  accept(seq: number): void {
    if (seq > this.highest) {
      // Slide: what was H-d becomes (H+shift)-d-shift.
      const shift = this.highest < 0 ? REPLAY_WINDOW : seq - this.highest;
      if (shift >= REPLAY_WINDOW) {
        this.lo = 0;
        this.hi = 0;
      } else if (shift >= 32) {
        this.hi = shift === 32 ? this.lo : this.lo << (shift - 32);
        this.lo = 0;
      } else {
        this.hi = (this.hi << shift) | (this.lo >>> (32 - shift));
        this.lo = this.lo << shift;
      }
      this.lo |= 1;
      this.highest = seq;
      return;
    }
    // Left of the window: nothing to remember (check says 'old' anyway).
    const d = this.highest - seq;
    if (d >= REPLAY_WINDOW) return;
    if (d < 32) this.lo |= 1 << d;
    else this.hi |= 1 << (d - 32);
  }

  get highestSeen(): number {
    return this.highest;
  }

  /** The bitmap's halves (binary snapshots: highest, lo, hi restore it with fromState). */
  get bitmapLo(): number {
    return this.lo;
  }

  get bitmapHi(): number {
    return this.hi;
  }

  /** A window from saved state (highestSeen, bitmapLo, bitmapHi); the caller checked the values. */
  static fromState(highest: number, lo: number, hi: number): ReplayWindow {
    return new ReplayWindow().setState(highest, lo, hi);
  }

  /**
   * Load saved state into this window (fromState; the server's session table keeps windows as
   * numbers in typed arrays and runs check/accept on one scratch window loaded from them).
   */
  setState(highest: number, lo: number, hi: number): this {
    if (highest >= 0) {
      this.highest = highest;
      this.lo = lo | 0;
      this.hi = hi | 0;
    } else {
      this.highest = -1;
      this.lo = 0;
      this.hi = 0;
    }
    return this;
  }

  /** State for snapshots: highest and the seen set within the window. */
  toJSON(): { highest: number; seen: number[] } {
    const seen: number[] = [];
    if (this.highest >= 0) for (let d = REPLAY_WINDOW - 1; d >= 0; d--) if (this.has(d)) seen.push(this.highest - d);
    return { highest: this.highest, seen };
  }

  static fromJSON(o: { highest: number; seen: number[] }): ReplayWindow {
    const w = new ReplayWindow();
    if (o.highest >= 0) w.accept(o.highest);
    for (const s of o.seen) w.accept(s);
    // A snapshot whose highest was not in its seen list: H itself is not marked seen then.
    if (!o.seen.includes(o.highest) && o.highest >= 0) w.lo &= ~1;
    return w;
  }
}
