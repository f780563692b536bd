// Address-validation cookies (as DTLS HelloVerifyRequest and IKEv2 COOKIE): when authd is busy
// it answers an AUTH_REQUEST with ERROR COOKIE_REQUIRED carrying
//
//   cookie = HMAC-SHA-256(secret[epoch], "devloc-cookie-v1" || ip(16) || port(2) || epoch(8))[0..16)
//
// and serves only requests that bring a valid cookie back. A spoofed source never sees its
// cookie, so it cannot make authd do public-key work (X25519, Ed25519, signing): checking a
// cookie costs two HMACs and no state. The secret is random, kept in memory only, and replaced
// every rotation period (epoch = floor(now / rotation)); the current and the previous secret are
// accepted, so a cookie lives between one and two periods. A restart simply invalidates them.
// The workers of one `devloc-authd --workers N` must accept each other's cookies (a terminal's
// next request may reach another worker): there the secrets are derived from one random master
// the primary gives every worker, secret[epoch] = HMAC-SHA-256(master, LABEL || epoch(8)).
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Address } from '../wire/addr.js';
import { ipToBytes } from '../wire/addr.js';

export const COOKIE_BYTES = 16;
export const DEFAULT_COOKIE_ROTATION_MS = 60_000;
const LABEL = Buffer.from('devloc-cookie-v1');

export interface CookieJarOptions {
  /** ms clock */
  now?: () => number;
  rotationMs?: number;
  random?: (n: number) => Buffer;
  /** Derive the secrets from this (32 random bytes shared by the workers) instead of drawing them. */
  master?: Buffer;
}

export class CookieJar {
  private readonly now: () => number;
  private readonly rotationMs: number;
  private readonly random: (n: number) => Buffer;
  private readonly master: Buffer | undefined;
  /** epoch -> secret; at most the current and the previous epoch. */
  private readonly secrets = new Map<number, Buffer>();

  constructor(o: CookieJarOptions = {}) {
    this.now = o.now ?? Date.now;
    this.rotationMs = o.rotationMs ?? DEFAULT_COOKIE_ROTATION_MS;
    this.random = o.random ?? randomBytes;
    this.master = o.master;
  }

  private epoch(): number {
    return Math.floor(this.now() / this.rotationMs);
  }

  private secret(epoch: number, create: boolean): Buffer | undefined {
    let s = this.secrets.get(epoch);
    if (!s && create) {
      s = this.master ? this.derived(epoch) : this.random(32);
      this.secrets.set(epoch, s);
      for (const e of this.secrets.keys()) if (e < epoch - 1) this.secrets.delete(e);
    }
    return s;
  }

  private derived(epoch: number): Buffer {
    const e = Buffer.alloc(8);
    e.writeBigUInt64BE(BigInt(epoch));
    return createHmac('sha256', this.master!).update(LABEL).update(e).digest();
  }

  private mac(secret: Buffer, from: Address, epoch: number): Buffer {
    const ip = ipToBytes(from.ip) ?? Buffer.from(from.ip);
    const tail = Buffer.alloc(10);
    tail.writeUInt16BE(from.port, 0);
    tail.writeBigUInt64BE(BigInt(epoch), 2);
    // IPv4 is written as IPv4-mapped IPv6, so both forms of one address give one cookie.
    const ip16 = ip.length === 4 ? Buffer.concat([Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]), ip]) : Buffer.from(ip);
    return createHmac('sha256', secret).update(LABEL).update(ip16).update(tail).digest().subarray(0, COOKIE_BYTES);
  }

  /** A cookie for `from`, valid for this epoch and the next. */
  mint(from: Address): Buffer {
    const e = this.epoch();
    return this.mac(this.secret(e, true)!, from, e);
  }

  /** Whether `cookie` was minted for `from` in this epoch or the previous one. */
  check(cookie: Uint8Array, from: Address): boolean {
    if (cookie.length !== COOKIE_BYTES) return false;
    const e = this.epoch();
    for (const epoch of [e, e - 1]) {
      // With a master every worker knows every epoch's secret, minted here or not.
      const s = this.secret(epoch, this.master !== undefined);
      if (s && timingSafeEqual(this.mac(s, from, epoch), cookie)) return true;
    }
    return false;
  }
}

/**
 * Requests per second over the last second, across all sources: a sliding window made of two
 * fixed one-second buckets (the previous one weighted by how much of it is still in the window).
 */
export class LoadMeter {
  private bucket = 0;
  private current = 0;
  private previous = 0;

  constructor(private readonly now: () => number = Date.now, private readonly windowMs = 1000) {}

  private roll(): number {
    const t = this.now();
    const b = Math.floor(t / this.windowMs);
    if (b !== this.bucket) {
      this.previous = b === this.bucket + 1 ? this.current : 0;
      this.current = 0;
      this.bucket = b;
    }
    return t;
  }

  hit(): void {
    this.roll();
    this.current++;
  }

  /** Estimated requests per second. */
  rate(): number {
    const t = this.roll();
    const into = (t % this.windowMs) / this.windowMs;
    return ((this.previous * (1 - into) + this.current) * 1000) / this.windowMs;
  }
}
