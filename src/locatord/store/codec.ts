// Compact value encodings for the Redis store: a presence record is one CBOR array (IPs as 4
// or 16 bytes, the session ID as 16 bytes, times as integer ms), typically ~45 bytes; a session
// is another (~110 bytes, mostly the two 32-byte keys). Decoding is strict and never throws:
// a value that does not decode is treated as absent (the terminal re-registers).
import type { Address } from '../../wire/addr.js';
import { bytesToIp, ipToBytes } from '../../wire/addr.js';
import type { CborValue } from '../../wire/cbor.js';
import { decodeStrict, encodeCbor } from '../../wire/cbor.js';
import type { Props } from '../../wire/schema.js';
import type { RegistrationExtra } from '../table.js';
import type { Presence, StoredSession } from './types.js';

const VERSION = 1;

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
  if (x.community) m.set(2, new Map(Object.entries(x.community)));
  if (x.allow) m.set(3, x.allow.map((h) => Buffer.from(h, 'hex')));
  return m;
}

function extraIn(v: CborValue | undefined): RegistrationExtra | undefined {
  if (!(v instanceof Map)) return undefined;
  const x: RegistrationExtra = {};
  const la = v.get(0);
  if (Array.isArray(la)) x.localAddrs = la.map(addrIn).filter((a): a is Address => a !== null);
  const media = v.get(1);
  if (typeof media === 'string') x.mediaId = media;
  const com = v.get(2);
  if (com instanceof Map) {
    const p: Props = {};
    for (const [k, val] of com) if (typeof k === 'string' && (typeof val === 'string' || typeof val === 'number' || typeof val === 'boolean')) p[k] = val;
    x.community = p;
  }
  const allow = v.get(3);
  if (Array.isArray(allow)) x.allow = allow.filter((a): a is Uint8Array => a instanceof Uint8Array).map((a) => Buffer.from(a).toString('hex'));
  return x;
}

export function encodePresence(p: Presence): Buffer {
  return encodeCbor([
    VERSION, addrOut(p.addr), p.netMode | (p.visibility << 3) | (p.reachable ? 1 << 4 : 0), Buffer.from(p.sidHex, 'hex'), p.seq, p.regMs, p.expMs,
    p.nickname ?? null, extraOut(p.extra),
  ]);
}

export function decodePresence(b: Buffer): Presence | undefined {
  const d = decodeStrict(b);
  if (!d.ok || !Array.isArray(d.value)) return undefined;
  const [v, a, bits, sid, seq, regMs, expMs, nick, extra] = d.value;
  const addr = addrIn(a);
  if (v !== VERSION || !addr || typeof bits !== 'number' || !(sid instanceof Uint8Array) || typeof seq !== 'number' || typeof regMs !== 'number' || typeof expMs !== 'number') return undefined;
  const p: Presence = { addr, netMode: bits & 7, visibility: (bits >> 3) & 1, sidHex: Buffer.from(sid).toString('hex'), seq, regMs, expMs };
  if (bits & (1 << 4)) p.reachable = true;
  if (typeof nick === 'string') p.nickname = nick;
  const x = extraIn(extra);
  if (x) p.extra = x;
  return p;
}

export function encodeSession(s: StoredSession): Buffer {
  return encodeCbor([VERSION, Buffer.from(s.locatorHex, 'hex'), s.aud, s.exp, s.kid ?? null, s.t2s, s.s2t]);
}

export function decodeSession(sidHex: string, b: Buffer): StoredSession | undefined {
  const d = decodeStrict(b);
  if (!d.ok || !Array.isArray(d.value)) return undefined;
  const [v, loc, aud, exp, kid, t2s, s2t] = d.value;
  if (v !== VERSION || !(loc instanceof Uint8Array) || typeof aud !== 'string' || typeof exp !== 'number' || !(t2s instanceof Uint8Array) || !(s2t instanceof Uint8Array)) return undefined;
  return { sidHex, locatorHex: Buffer.from(loc).toString('hex'), aud, exp, ...(typeof kid === 'string' ? { kid } : {}), t2s: Buffer.from(t2s), s2t: Buffer.from(s2t) };
}
