// Compact value encodings for the Redis store: a presence record is one CBOR array (IPs as 4
// or 16 bytes, the session ID as 16 bytes, times as integer ms), typically ~55 bytes; a session
// is another (~140 bytes, mostly the two 32-byte keys), sealed with ChaCha20-Poly1305 under a
// key derived from the service key (sessionSealKey): whoever reads Redis, its dump files or
// backups does not get the session keys, and whoever can write Redis cannot plant a session
// (the session ID is the additional data: a sealed value does not open under another ID).
// Decoding is strict and never throws: a value that does not decode or open is treated as
// absent (the terminal re-registers).
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import type { Address } from '../../wire/addr.js';
import { bytesToIp, ipToBytes } from '../../wire/addr.js';
import type { CborValue } from '../../wire/cbor.js';
import { decodeStrict, encodeCbor } from '../../wire/cbor.js';
import { KeyedHmac } from '../../wire/hmac-sha256.js';
import type { Props } from '../../wire/schema.js';
import type { RegistrationExtra, RichPresence } from '../table.js';
import type { Presence, StoredSession } from './types.js';

const VERSION = 1;
/** Sessions: version 2 = sealed (version 1 stored the keys in clear and is not read any more). */
const SESSION_VERSION = 2;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;

/** The 32-byte key sealing sessions in Redis, from the service key every instance shares. */
export function sessionSealKey(serviceSecret: KeyObject): Buffer {
  return deriveFromServiceKey(serviceSecret, 'devloc locatord redis session seal v1');
}

/**
 * The 32-byte key authenticating every other record in Redis (presence, groups, memberships),
 * from the service key: whoever can write Redis but lacks the key cannot forge or alter them.
 */
export function recordKey(serviceSecret: KeyObject): Buffer {
  return deriveFromServiceKey(serviceSecret, RECORD_KEY_LABEL);
}

/** The HKDF info string of recordKey (devloc-locatord(8), "Several instances"). */
export const RECORD_KEY_LABEL = 'devloc locatord redis records v1';

/** Bytes of a record tag (HMAC-SHA256 truncated). */
export const RECORD_TAG_BYTES = 16;

/** The message a tag covers, written here (grown on demand; tags are computed to completion). */
let tagInput = Buffer.allocUnsafe(512);

/**
 * The tag of a record: HMAC-SHA256(key, kind || 0x00 || for each part: 4-byte length || part),
 * first 16 bytes, written into `out` at `at`. `kind` and the parts name what the record is and
 * where it lives (the locator or group ID of its key), so a tagged value copied to another key
 * or kind does not verify there.
 */
function tagInto(mac: KeyedHmac, kind: string, parts: readonly (Uint8Array | string)[], out: Uint8Array, at: number): void {
  // Room for the most a text can take (3 bytes of UTF-8 per UTF-16 unit), so that each text is
  // measured once, by writing it (a per-packet path: the presence record's tag).
  let room = 3 * kind.length + 1;
  for (const part of parts) room += 4 + (typeof part === 'string' ? 3 * part.length : part.length);
  if (room > tagInput.length) tagInput = Buffer.allocUnsafe(Math.max(room, 2 * tagInput.length));
  const b = tagInput;
  let pos = b.write(kind, 0, 'utf8');
  b[pos++] = 0;
  for (const part of parts) {
    // The part after its 4-byte length, which is known once a text is written.
    let len: number;
    if (typeof part === 'string') len = b.write(part, pos + 4, 'utf8');
    else {
      b.set(part, pos + 4);
      len = part.length;
    }
    b.writeUInt32BE(len, pos);
    pos += 4 + len;
  }
  mac.digestInto(b, pos, out, at, RECORD_TAG_BYTES);
}

/**
 * The tag of a record (tagInto) under `mac`, the record key's HMAC (a KeyedHmac each store makes
 * once: its pads hashed once, no native object per tag as createHmac made, which was ~8% of a
 * REFRESH on Redis in its CPU profile), as a Buffer of its own.
 */
export function recordTag(mac: KeyedHmac, kind: string, ...parts: (Uint8Array | string)[]): Buffer {
  const tag = Buffer.allocUnsafe(RECORD_TAG_BYTES);
  tagInto(mac, kind, parts, tag, 0);
  return tag;
}

/** `value || tag` with the tag over (kind, parts..., value). */
export function tagRecord(mac: KeyedHmac, kind: string, value: Buffer, ...parts: (Uint8Array | string)[]): Buffer {
  const out = Buffer.allocUnsafe(value.length + RECORD_TAG_BYTES);
  value.copy(out, 0);
  parts.push(value);
  tagInto(mac, kind, parts, out, value.length);
  return out;
}

/** The value of a `tagRecord` output whose tag verifies; undefined otherwise (forged, altered, moved). */
export function openRecord(mac: KeyedHmac, kind: string, stored: Buffer, ...parts: (Uint8Array | string)[]): Buffer | undefined {
  if (stored.length < RECORD_TAG_BYTES) return undefined;
  const value = stored.subarray(0, stored.length - RECORD_TAG_BYTES);
  parts.push(value);
  return timingSafeEqual(recordTag(mac, kind, ...parts), stored.subarray(stored.length - RECORD_TAG_BYTES)) ? value : undefined;
}

/** A 32-byte key for `purpose`, from the service key file's X25519 secret (HKDF-SHA256). */
export function deriveFromServiceKey(serviceSecret: KeyObject, purpose: string): Buffer {
  const ikm = serviceSecret.export({ format: 'der', type: 'pkcs8' });
  return Buffer.from(hkdfSync('sha256', ikm, Buffer.alloc(0), purpose, 32));
}

function addrOut(a: Address): CborValue[] {
  return [ipToBytes(a.ip) ?? new Uint8Array(0), a.port];
}

function addrIn(v: CborValue | undefined): Address | null {
  if (!Array.isArray(v) || !(v[0] instanceof Uint8Array) || typeof v[1] !== 'number') return null;
  const ip = bytesToIp(v[0]);
  return ip ? { ip, port: v[1] } : null;
}

function extraOut(x: RegistrationExtra | undefined): CborValue {
  if (!x) return null;
  const m = new Map<number, CborValue>();
  if (x.localAddrs) m.set(0, x.localAddrs.map(addrOut));
  if (x.mediaId !== undefined) m.set(1, x.mediaId);
  if (x.community) m.set(2, propsOut(x.community));
  if (x.allow) m.set(3, x.allow.map((h) => Buffer.from(h, 'hex')));
  if (x.presence) {
    const r = new Map<number, CborValue>();
    if (x.presence.lookingForPartner !== undefined) r.set(1, x.presence.lookingForPartner);
    if (x.presence.wants) r.set(2, propsOut(x.presence.wants));
    if (x.presence.status !== undefined) r.set(3, x.presence.status);
    m.set(4, r);
  }
  return m;
}

function extraIn(v: CborValue | undefined): RegistrationExtra | undefined {
  if (!(v instanceof Map)) return undefined;
  const x: RegistrationExtra = {};
  const la = v.get(0);
  if (Array.isArray(la)) x.localAddrs = la.map(addrIn).filter((a): a is Address => a !== null);
  const media = v.get(1);
  if (typeof media === 'string') x.mediaId = media;
  const com = propsIn(v.get(2));
  if (com) x.community = com;
  const allow = v.get(3);
  if (Array.isArray(allow)) x.allow = allow.filter((a): a is Uint8Array => a instanceof Uint8Array).map((a) => Buffer.from(a).toString('hex'));
  const rich = v.get(4);
  if (rich instanceof Map) {
    const r: RichPresence = {};
    const lfp = rich.get(1);
    if (typeof lfp === 'boolean') r.lookingForPartner = lfp;
    const wants = propsIn(rich.get(2));
    if (wants) r.wants = wants;
    const status = rich.get(3);
    if (typeof status === 'string') r.status = status;
    x.presence = r;
  }
  return x;
}

function propsOut(p: Props): CborValue {
  return new Map(Object.entries(p));
}

function propsIn(v: CborValue | undefined): Props | undefined {
  if (!(v instanceof Map)) return undefined;
  const p: Props = {};
  for (const [k, val] of v) if (typeof k === 'string' && (typeof val === 'string' || typeof val === 'number' || typeof val === 'boolean')) p[k] = val;
  return p;
}

export function encodePresence(p: Presence): Buffer {
  return encodeCbor([
    VERSION, addrOut(p.addr), p.netMode | (p.visibility << 3) | (p.reachable ? 1 << 4 : 0), Buffer.from(p.sidHex, 'hex'), p.seq, p.regMs, p.expMs,
    p.nickname ?? null, extraOut(p.extra), p.inst ? Buffer.from(p.inst, 'hex') : null,
  ]);
}

export function decodePresence(b: Buffer): Presence | undefined {
  const d = decodeStrict(b);
  if (!d.ok || !Array.isArray(d.value)) return undefined;
  const [v, a, bits, sid, seq, regMs, expMs, nick, extra, inst] = d.value;
  const addr = addrIn(a);
  if (v !== VERSION || !addr || typeof bits !== 'number' || !(sid instanceof Uint8Array) || typeof seq !== 'number' || typeof regMs !== 'number' || typeof expMs !== 'number') return undefined;
  // Every field set (undefined when absent), in the order of the embedded store's records: one
  // object shape, so that a handler's `{ ...cur, ... }` copies it on V8's fast path (a shape per
  // combination of optional fields made it ~4.6% of a REFRESH on Redis, CPU profile 2026-12-05).
  return {
    addr, netMode: bits & 7, visibility: (bits >> 3) & 1, sidHex: Buffer.from(sid.buffer, sid.byteOffset, sid.length).toString('hex'), seq, regMs, expMs,
    nickname: typeof nick === 'string' ? nick : undefined, extra: extraIn(extra), reachable: bits & (1 << 4) ? true : undefined,
    inst: inst instanceof Uint8Array && inst.length > 0 ? Buffer.from(inst.buffer, inst.byteOffset, inst.length).toString('hex') : undefined,
  };
}

export function encodeSession(s: StoredSession, sealKey: Buffer): Buffer {
  const plain = encodeCbor([Buffer.from(s.locatorHex, 'hex'), s.aud, s.exp, s.kid ?? null, s.t2s, s.s2t]);
  const nonce = randomBytes(NONCE_BYTES);
  const c = createCipheriv('chacha20-poly1305', sealKey, nonce, { authTagLength: TAG_BYTES });
  c.setAAD(Buffer.from(s.sidHex, 'hex'), { plaintextLength: plain.length });
  const sealed = Buffer.concat([c.update(plain), c.final(), c.getAuthTag()]);
  plain.fill(0);
  return encodeCbor([SESSION_VERSION, nonce, sealed]);
}

export function decodeSession(sidHex: string, b: Buffer, sealKey: Buffer): StoredSession | undefined {
  const outer = decodeStrict(b);
  if (!outer.ok || !Array.isArray(outer.value)) return undefined;
  const [v, nonce, sealed] = outer.value;
  if (v !== SESSION_VERSION || !(nonce instanceof Uint8Array) || nonce.length !== NONCE_BYTES || !(sealed instanceof Uint8Array) || sealed.length < TAG_BYTES) return undefined;
  let plain: Buffer;
  try {
    const d = createDecipheriv('chacha20-poly1305', sealKey, nonce, { authTagLength: TAG_BYTES });
    d.setAAD(Buffer.from(sidHex, 'hex'), { plaintextLength: sealed.length - TAG_BYTES });
    d.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
    plain = Buffer.concat([d.update(sealed.subarray(0, sealed.length - TAG_BYTES)), d.final()]);
  } catch {
    return undefined; // another deployment's key, or tampered with
  }
  const inner = decodeStrict(plain);
  if (!inner.ok || !Array.isArray(inner.value)) return undefined;
  const [loc, aud, exp, kid, t2s, s2t] = inner.value;
  if (!(loc instanceof Uint8Array) || typeof aud !== 'string' || typeof exp !== 'number' || !(t2s instanceof Uint8Array) || !(s2t instanceof Uint8Array)) return undefined;
  return { sidHex, locatorHex: Buffer.from(loc).toString('hex'), aud, exp, ...(typeof kid === 'string' ? { kid } : {}), t2s: Buffer.from(t2s), s2t: Buffer.from(s2t) };
}
