// A small, strict STUN/TURN codec (RFC 8489 STUN, RFC 8656 TURN, RFC 7983 demultiplexing). Pure:
// no sockets, no clock, no globals. Decoders of untrusted bytes return { ok: false, code, reason }
// and never throw; every length is bounded by the input it came in and by the limits below;
// trailing bytes, bad padding positions, attributes after MESSAGE-INTEGRITY other than those the
// RFC allows, duplicates, and malformed values of the attributes this codec knows are refused.
//
// Why our own codec rather than an npm package: the agent must have zero runtime dependencies
// (issue 20), and the maintained candidates either pull several (`stun`: binary-data, ip,
// debug, meow, ...) or are whole WebRTC stacks. This file plus node:crypto is all TURN needs.
//
// What the codec does not do: SASLprep (usernames here are `<expiry>:<hex>` ASCII, realms and
// passwords are ASCII by configuration), USERHASH, PASSWORD-ALGORITHMS negotiation (coturn 4.6
// speaks the RFC 5389 long-term mechanism: MD5 key, HMAC-SHA1 integrity), ALTERNATE-SERVER.
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { Address } from '../../wire/addr.js';
import { bytesToIp, ipToBytes } from '../../wire/addr.js';
import { ErrorCode } from '../../wire/errors.js';

/** RFC 8489 §5: fixed value in every STUN header, bytes 4..7. */
export const MAGIC_COOKIE = 0x2112a442;
export const HEADER_BYTES = 20;
export const TID_BYTES = 12;
/** The 16-bit length field bounds a message: 20 + 65532 (a multiple of 4). */
export const MAX_STUN_BYTES = HEADER_BYTES + 0xfffc;
/** More attributes than any TURN message needs; bounds the work of one decode. */
export const MAX_ATTRIBUTES = 64;
/** RFC 8489 §14.3, §14.9, §14.10, §14.14: USERNAME < 513 bytes, REALM/NONCE/SOFTWARE < 763 bytes. */
export const MAX_USERNAME_BYTES = 512;
export const MAX_TEXT_BYTES = 763;
/** RFC 8656 §12: channel numbers 0x4000 through 0x4FFF. */
export const MIN_CHANNEL = 0x4000;
export const MAX_CHANNEL = 0x4fff;
/** RFC 8489 §14.7: FINGERPRINT is CRC-32 of the message XOR this ("STUN"). */
const FINGERPRINT_XOR = 0x5354554e;
/** RFC 8656 §14.7: REQUESTED-TRANSPORT value for UDP relaying. */
export const TRANSPORT_UDP = 17;

export const Method = {
  Binding: 0x001,
  Allocate: 0x003,
  Refresh: 0x004,
  Send: 0x006,
  Data: 0x007,
  CreatePermission: 0x008,
  ChannelBind: 0x009,
} as const;

export type StunClass = 'request' | 'indication' | 'success' | 'error';
const CLASS_BITS: Record<StunClass, number> = { request: 0x000, indication: 0x010, success: 0x100, error: 0x110 };

export const Attr = {
  MAPPED_ADDRESS: 0x0001,
  USERNAME: 0x0006,
  MESSAGE_INTEGRITY: 0x0008,
  ERROR_CODE: 0x0009,
  UNKNOWN_ATTRIBUTES: 0x000a,
  CHANNEL_NUMBER: 0x000c,
  LIFETIME: 0x000d,
  XOR_PEER_ADDRESS: 0x0012,
  DATA: 0x0013,
  REALM: 0x0014,
  NONCE: 0x0015,
  XOR_RELAYED_ADDRESS: 0x0016,
  REQUESTED_TRANSPORT: 0x0019,
  DONT_FRAGMENT: 0x001a,
  MESSAGE_INTEGRITY_SHA256: 0x001c,
  XOR_MAPPED_ADDRESS: 0x0020,
  SOFTWARE: 0x8022,
  FINGERPRINT: 0x8028,
} as const;

export interface StunErrorCode {
  /** 300..699, e.g. 401, 438. */
  code: number;
  reason: string;
}

export interface RawAttribute {
  type: number;
  value: Buffer;
}

/** The attributes this codec understands, typed. Unknown ones are kept raw in `unknown`. */
export interface StunAttributes {
  username?: string;
  realm?: string;
  nonce?: string;
  software?: string;
  errorCode?: StunErrorCode;
  /** Seconds. */
  lifetime?: number;
  /** IP protocol number (17 = UDP). */
  requestedTransport?: number;
  channelNumber?: number;
  data?: Buffer;
  dontFragment?: boolean;
  xorMappedAddress?: Address;
  xorRelayedAddress?: Address;
  /** CreatePermission may carry several; other messages one. */
  xorPeerAddresses?: Address[];
  /** Attributes this codec does not interpret (kept in order; comprehension-required ones are < 0x8000). */
  unknown?: RawAttribute[];
}

export interface StunMessage {
  method: number;
  cls: StunClass;
  /** 12 bytes. */
  tid: Buffer;
  attrs: StunAttributes;
}

export interface DecodedStun extends StunMessage {
  /** The exact bytes decoded (views into the input). */
  raw: Buffer;
  /** Offset of the MESSAGE-INTEGRITY attribute header, if present. */
  integrityAt?: number;
  integritySha256At?: number;
  /** True when a FINGERPRINT was present (and it verified: a bad one is refused). */
  fingerprint: boolean;
  /** Types of unknown comprehension-required attributes (a response with any is a failed transaction). */
  unknownRequired: number[];
}

export type StunDecodeResult = { ok: true; msg: DecodedStun } | { ok: false; code: ErrorCode; reason: string };

const fail = (code: ErrorCode, reason: string): { ok: false; code: ErrorCode; reason: string } => ({ ok: false, code, reason });

const pad4 = (n: number): number => (n + 3) & ~3;
const utf8 = new TextDecoder('utf-8', { fatal: true });

// --- CRC-32 (IEEE 802.3, as zlib) --------------------------------------------------------

const CRC_TABLE = (() => {
  const t = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  return t;
})();

export function crc32(bytes: Uint8Array): number {
  let c = -1;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}

// --- message type ------------------------------------------------------------------------

/** RFC 8489 §5: the 12 method bits are interleaved with the 2 class bits (C1 at bit 8, C0 at bit 4). */
export function messageType(method: number, cls: StunClass): number {
  return ((method & 0xf80) << 2) | ((method & 0x070) << 1) | (method & 0x00f) | CLASS_BITS[cls];
}

function splitType(type: number): { method: number; cls: StunClass } {
  const method = ((type & 0x3e00) >> 2) | ((type & 0x00e0) >> 1) | (type & 0x000f);
  const c = type & 0x0110;
  const cls: StunClass = c === 0 ? 'request' : c === 0x010 ? 'indication' : c === 0x100 ? 'success' : 'error';
  return { method, cls };
}

// --- addresses -----------------------------------------------------------------------------

/** IP text to 4 or 16 bytes; an IPv6 text stays 16 bytes (ipToBytes folds ::ffff:a.b.c.d to 4, STUN keeps the family it was given). */
function ipBytes(text: string): Uint8Array | null {
  const b = ipToBytes(text);
  if (!b || b.length === 16 || !text.includes(':')) return b;
  const v6 = new Uint8Array(16);
  v6[10] = 0xff;
  v6[11] = 0xff;
  v6.set(b, 12);
  return v6;
}

function xorAddressValue(a: Address, tid: Buffer): Buffer | null {
  const ip = ipBytes(a.ip);
  if (!ip || !Number.isInteger(a.port) || a.port < 0 || a.port > 0xffff) return null;
  const out = Buffer.alloc(4 + ip.length);
  out[1] = ip.length === 4 ? 1 : 2;
  out.writeUInt16BE(a.port ^ (MAGIC_COOKIE >>> 16), 2);
  const mask = Buffer.alloc(16);
  mask.writeUInt32BE(MAGIC_COOKIE, 0);
  tid.copy(mask, 4);
  for (let i = 0; i < ip.length; i++) out[4 + i] = ip[i]! ^ mask[i]!;
  return out;
}

function decodeXorAddress(v: Buffer, tid: Buffer): Address | string {
  if (v.length !== 8 && v.length !== 20) return `address of ${v.length} bytes`;
  const family = v[1]!;
  if (v[0] !== 0) return 'address reserved byte not zero';
  if (!((family === 1 && v.length === 8) || (family === 2 && v.length === 20))) return `address family ${family} with ${v.length} bytes`;
  const port = v.readUInt16BE(2) ^ (MAGIC_COOKIE >>> 16);
  const mask = Buffer.alloc(16);
  mask.writeUInt32BE(MAGIC_COOKIE, 0);
  tid.copy(mask, 4);
  const ip = Buffer.alloc(v.length - 4);
  for (let i = 0; i < ip.length; i++) ip[i] = v[4 + i]! ^ mask[i]!;
  return { ip: bytesToIp(ip)!, port };
}

// --- encoding --------------------------------------------------------------------------------

export interface EncodeOptions {
  /** MESSAGE-INTEGRITY (HMAC-SHA1) with this key (long-term: md5(username:realm:password)). */
  integrityKey?: Buffer;
  /** MESSAGE-INTEGRITY-SHA256 with this key (after MESSAGE-INTEGRITY when both). */
  integritySha256Key?: Buffer;
  fingerprint?: boolean;
}

function textAttr(type: number, s: string, max: number): RawAttribute {
  const v = Buffer.from(s, 'utf8');
  if (v.length > max) throw new RangeError(`attribute 0x${type.toString(16)} longer than ${max} bytes`);
  return { type, value: v };
}

function u32Attr(type: number, n: number): RawAttribute {
  const v = Buffer.alloc(4);
  v.writeUInt32BE(n >>> 0, 0);
  return { type, value: v };
}

function addrAttr(type: number, a: Address, tid: Buffer): RawAttribute {
  const v = xorAddressValue(a, tid);
  if (!v) throw new RangeError(`not an IP address and port: ${a.ip}:${a.port}`);
  return { type, value: v };
}

/** The attributes of a message in the order the encoder writes them. Throws on values it cannot encode (programming errors). */
export function attributeList(m: StunMessage): RawAttribute[] {
  const a = m.attrs;
  const out: RawAttribute[] = [];
  if (a.software !== undefined) out.push(textAttr(Attr.SOFTWARE, a.software, MAX_TEXT_BYTES));
  if (a.requestedTransport !== undefined) {
    const v = Buffer.alloc(4);
    v[0] = a.requestedTransport;
    out.push({ type: Attr.REQUESTED_TRANSPORT, value: v });
  }
  if (a.dontFragment) out.push({ type: Attr.DONT_FRAGMENT, value: Buffer.alloc(0) });
  if (a.lifetime !== undefined) out.push(u32Attr(Attr.LIFETIME, a.lifetime));
  if (a.channelNumber !== undefined) {
    const v = Buffer.alloc(4);
    v.writeUInt16BE(a.channelNumber, 0);
    out.push({ type: Attr.CHANNEL_NUMBER, value: v });
  }
  for (const p of a.xorPeerAddresses ?? []) out.push(addrAttr(Attr.XOR_PEER_ADDRESS, p, m.tid));
  if (a.xorRelayedAddress) out.push(addrAttr(Attr.XOR_RELAYED_ADDRESS, a.xorRelayedAddress, m.tid));
  if (a.xorMappedAddress) out.push(addrAttr(Attr.XOR_MAPPED_ADDRESS, a.xorMappedAddress, m.tid));
  if (a.errorCode) {
    const r = Buffer.from(a.errorCode.reason, 'utf8');
    if (r.length > MAX_TEXT_BYTES) throw new RangeError('ERROR-CODE reason too long');
    const v = Buffer.alloc(4 + r.length);
    v[2] = Math.floor(a.errorCode.code / 100);
    v[3] = a.errorCode.code % 100;
    r.copy(v, 4);
    out.push({ type: Attr.ERROR_CODE, value: v });
  }
  if (a.data) out.push({ type: Attr.DATA, value: a.data });
  for (const u of a.unknown ?? []) out.push(u);
  if (a.username !== undefined) out.push(textAttr(Attr.USERNAME, a.username, MAX_USERNAME_BYTES));
  if (a.realm !== undefined) out.push(textAttr(Attr.REALM, a.realm, MAX_TEXT_BYTES));
  if (a.nonce !== undefined) out.push(textAttr(Attr.NONCE, a.nonce, MAX_TEXT_BYTES));
  return out;
}

/** Encode a STUN message. Throws RangeError only on values the caller should never pass (bad address, oversize text). */
export function encodeStun(m: StunMessage, opts: EncodeOptions = {}): Buffer {
  if (m.tid.length !== TID_BYTES) throw new RangeError('transaction ID must be 12 bytes');
  if (m.method < 0 || m.method > 0xfff) throw new RangeError('method out of range');
  const attrs = attributeList(m);
  let body = 0;
  for (const a of attrs) body += 4 + pad4(a.value.length);
  const total = HEADER_BYTES + body + (opts.integrityKey ? 24 : 0) + (opts.integritySha256Key ? 36 : 0) + (opts.fingerprint ? 8 : 0);
  if (total > MAX_STUN_BYTES) throw new RangeError(`STUN message of ${total} bytes`);
  const buf = Buffer.alloc(total);
  buf.writeUInt16BE(messageType(m.method, m.cls), 0);
  buf.writeUInt32BE(MAGIC_COOKIE, 4);
  m.tid.copy(buf, 8);
  let at = HEADER_BYTES;
  for (const a of attrs) {
    buf.writeUInt16BE(a.type, at);
    buf.writeUInt16BE(a.value.length, at + 2);
    a.value.copy(buf, at + 4);
    at += 4 + pad4(a.value.length);
  }
  // Integrity and fingerprint cover the message with its length field counting up to and
  // including the attribute being computed (RFC 8489 §14.5-14.7).
  const seal = (type: number, size: number, f: (covered: Buffer) => Buffer): void => {
    buf.writeUInt16BE(at + 4 + size - HEADER_BYTES, 2);
    const v = f(buf.subarray(0, at));
    buf.writeUInt16BE(type, at);
    buf.writeUInt16BE(size, at + 2);
    v.copy(buf, at + 4);
    at += 4 + size;
  };
  if (opts.integrityKey) seal(Attr.MESSAGE_INTEGRITY, 20, (c) => createHmac('sha1', opts.integrityKey!).update(c).digest());
  if (opts.integritySha256Key) seal(Attr.MESSAGE_INTEGRITY_SHA256, 32, (c) => createHmac('sha256', opts.integritySha256Key!).update(c).digest());
  if (opts.fingerprint) {
    seal(Attr.FINGERPRINT, 4, (c) => {
      const v = Buffer.alloc(4);
      v.writeUInt32BE((crc32(c) ^ FINGERPRINT_XOR) >>> 0, 0);
      return v;
    });
  }
  buf.writeUInt16BE(total - HEADER_BYTES, 2);
  return buf;
}

// --- decoding --------------------------------------------------------------------------------

/** RFC 7983: first byte 0..3 is STUN, 64..79 ChannelData. */
export function looksLikeStun(buf: Uint8Array): boolean {
  return buf.length >= HEADER_BYTES && buf[0]! < 4;
}
export function looksLikeChannelData(buf: Uint8Array): boolean {
  return buf.length >= 4 && buf[0]! >= 0x40 && buf[0]! <= 0x4f;
}

function decodeText(v: Buffer, max: number, what: string): string | { bad: string } {
  if (v.length > max) return { bad: `${what} longer than ${max} bytes` };
  try {
    return utf8.decode(v);
  } catch {
    return { bad: `${what} is not UTF-8` };
  }
}

/** Decode one STUN message occupying all of `input`. Verifies FINGERPRINT when present; MESSAGE-INTEGRITY is checked by `verifyIntegrity` (it needs the key). */
export function decodeStun(input: Uint8Array): StunDecodeResult {
  try {
    return decodeInner(Buffer.isBuffer(input) ? input : Buffer.from(input.buffer, input.byteOffset, input.byteLength));
  } catch (err) {
    // Unreachable by construction (every read is bounds-checked first); kept so a bug cannot crash a caller.
    return fail(ErrorCode.MALFORMED, `decoder fault: ${String(err)}`);
  }
}

function decodeInner(buf: Buffer): StunDecodeResult {
  if (buf.length < HEADER_BYTES) return fail(ErrorCode.MALFORMED, `${buf.length} bytes is shorter than a STUN header`);
  if (buf.length > MAX_STUN_BYTES) return fail(ErrorCode.TOO_LARGE, `${buf.length} bytes exceeds the STUN maximum`);
  const type = buf.readUInt16BE(0);
  if (type & 0xc000) return fail(ErrorCode.MALFORMED, 'top two bits of the message type are not zero');
  const length = buf.readUInt16BE(2);
  if (length % 4 !== 0) return fail(ErrorCode.MALFORMED, `message length ${length} not a multiple of 4`);
  if (buf.readUInt32BE(4) !== MAGIC_COOKIE) return fail(ErrorCode.MALFORMED, 'no magic cookie');
  if (HEADER_BYTES + length < buf.length) return fail(ErrorCode.MALFORMED, 'trailing bytes after the STUN message');
  if (HEADER_BYTES + length > buf.length) return fail(ErrorCode.MALFORMED, 'STUN message truncated');
  const { method, cls } = splitType(type);
  const tid = buf.subarray(8, 20);
  const attrs: StunAttributes = {};
  const msg: DecodedStun = { method, cls, tid, attrs, raw: buf, fingerprint: false, unknownRequired: [] };
  const seen = new Set<number>();
  let count = 0;
  let at = HEADER_BYTES;
  while (at < buf.length) {
    if (++count > MAX_ATTRIBUTES) return fail(ErrorCode.TOO_LARGE, `more than ${MAX_ATTRIBUTES} attributes`);
    if (buf.length - at < 4) return fail(ErrorCode.MALFORMED, 'truncated attribute header');
    const t = buf.readUInt16BE(at);
    const len = buf.readUInt16BE(at + 2);
    const end = at + 4 + pad4(len);
    if (end > buf.length) return fail(ErrorCode.MALFORMED, `attribute 0x${t.toString(16)} runs past the message`);
    const v = buf.subarray(at + 4, at + 4 + len);
    const name = `attribute 0x${t.toString(16)}`;
    // Only MESSAGE-INTEGRITY-SHA256 and FINGERPRINT may follow MESSAGE-INTEGRITY; only FINGERPRINT may follow MESSAGE-INTEGRITY-SHA256; nothing follows FINGERPRINT.
    if (msg.fingerprint) return fail(ErrorCode.MALFORMED, `${name} after FINGERPRINT`);
    if (msg.integritySha256At !== undefined && t !== Attr.FINGERPRINT) return fail(ErrorCode.MALFORMED, `${name} after MESSAGE-INTEGRITY-SHA256`);
    if (msg.integrityAt !== undefined && t !== Attr.FINGERPRINT && t !== Attr.MESSAGE_INTEGRITY_SHA256) return fail(ErrorCode.MALFORMED, `${name} after MESSAGE-INTEGRITY`);
    if (seen.has(t) && t !== Attr.XOR_PEER_ADDRESS) return fail(ErrorCode.MALFORMED, `duplicate ${name}`);
    seen.add(t);
    const bad = (why: string): StunDecodeResult => fail(ErrorCode.MALFORMED, `${name}: ${why}`);
    switch (t) {
      case Attr.USERNAME:
      case Attr.REALM:
      case Attr.NONCE:
      case Attr.SOFTWARE: {
        const s = decodeText(v, t === Attr.USERNAME ? MAX_USERNAME_BYTES : MAX_TEXT_BYTES, name);
        if (typeof s !== 'string') return fail(ErrorCode.MALFORMED, s.bad);
        if (t === Attr.USERNAME) attrs.username = s;
        else if (t === Attr.REALM) attrs.realm = s;
        else if (t === Attr.NONCE) attrs.nonce = s;
        else attrs.software = s;
        break;
      }
      case Attr.ERROR_CODE: {
        if (len < 4) return bad('shorter than 4 bytes');
        if (v[0] !== 0 || (v[1]! & 0xf8) !== 0) return bad('reserved bits set');
        const klass = v[2]! & 0x07;
        const number = v[3]!;
        if (klass < 3 || klass > 6 || number > 99) return bad(`code ${klass}${String(number).padStart(2, '0')} outside 300..699`);
        const reason = decodeText(v.subarray(4), MAX_TEXT_BYTES, 'ERROR-CODE reason');
        if (typeof reason !== 'string') return fail(ErrorCode.MALFORMED, reason.bad);
        attrs.errorCode = { code: klass * 100 + number, reason };
        break;
      }
      case Attr.LIFETIME:
        if (len !== 4) return bad('not 4 bytes');
        attrs.lifetime = v.readUInt32BE(0);
        break;
      case Attr.REQUESTED_TRANSPORT:
        if (len !== 4) return bad('not 4 bytes');
        attrs.requestedTransport = v[0]!;
        break;
      case Attr.CHANNEL_NUMBER: {
        if (len !== 4) return bad('not 4 bytes');
        const ch = v.readUInt16BE(0);
        if (ch < MIN_CHANNEL || ch > MAX_CHANNEL) return bad(`channel 0x${ch.toString(16)} outside 0x4000..0x4fff`);
        attrs.channelNumber = ch;
        break;
      }
      case Attr.DATA:
        attrs.data = v;
        break;
      case Attr.DONT_FRAGMENT:
        if (len !== 0) return bad('not empty');
        attrs.dontFragment = true;
        break;
      case Attr.XOR_PEER_ADDRESS:
      case Attr.XOR_RELAYED_ADDRESS:
      case Attr.XOR_MAPPED_ADDRESS: {
        const a = decodeXorAddress(v, tid);
        if (typeof a === 'string') return bad(a);
        if (t === Attr.XOR_PEER_ADDRESS) (attrs.xorPeerAddresses ??= []).push(a);
        else if (t === Attr.XOR_RELAYED_ADDRESS) attrs.xorRelayedAddress = a;
        else attrs.xorMappedAddress = a;
        break;
      }
      case Attr.MESSAGE_INTEGRITY:
        if (len !== 20) return bad('not 20 bytes');
        msg.integrityAt = at;
        break;
      case Attr.MESSAGE_INTEGRITY_SHA256:
        // RFC 8489 §14.6: 16 to 32 bytes, a multiple of 4 (truncation).
        if (len < 16 || len > 32 || len % 4 !== 0) return bad(`${len} bytes`);
        msg.integritySha256At = at;
        break;
      case Attr.FINGERPRINT: {
        if (len !== 4) return bad('not 4 bytes');
        const covered = Buffer.from(buf.subarray(0, at));
        covered.writeUInt16BE(at + 8 - HEADER_BYTES, 2);
        if (((crc32(covered) ^ FINGERPRINT_XOR) >>> 0) !== v.readUInt32BE(0)) return fail(ErrorCode.MALFORMED, 'FINGERPRINT does not match');
        msg.fingerprint = true;
        break;
      }
      default:
        (attrs.unknown ??= []).push({ type: t, value: v });
        if (t < 0x8000) msg.unknownRequired.push(t);
    }
    at = end;
  }
  return { ok: true, msg };
}

/**
 * Check MESSAGE-INTEGRITY (HMAC-SHA1) or, when present, MESSAGE-INTEGRITY-SHA256 of a decoded
 * message with `key`. False when absent or wrong; never throws.
 */
export function verifyIntegrity(msg: DecodedStun, key: Buffer): boolean {
  const check = (at: number, alg: 'sha1' | 'sha256'): boolean => {
    const len = msg.raw.readUInt16BE(at + 2);
    const covered = Buffer.from(msg.raw.subarray(0, at));
    covered.writeUInt16BE(at + 4 + len - HEADER_BYTES, 2);
    const mac = createHmac(alg, key).update(covered).digest().subarray(0, len);
    return timingSafeEqual(mac, msg.raw.subarray(at + 4, at + 4 + len));
  };
  if (msg.integritySha256At !== undefined) {
    if (!check(msg.integritySha256At, 'sha256')) return false;
  }
  if (msg.integrityAt !== undefined) return check(msg.integrityAt, 'sha1');
  return msg.integritySha256At !== undefined;
}

/** RFC 8489 §9.2.2: long-term key = MD5(username ":" realm ":" password) (no SASLprep here: ASCII). */
export function longTermKey(username: string, realm: string, password: string): Buffer {
  return createHash('md5').update(`${username}:${realm}:${password}`, 'utf8').digest();
}

// --- ChannelData (RFC 8656 §12) ---------------------------------------------------------------

export interface ChannelData {
  channel: number;
  data: Buffer;
}
export type ChannelDataResult = { ok: true; frame: ChannelData } | { ok: false; code: ErrorCode; reason: string };

/** Frame `data` for `channel`; over TCP/TLS (`stream`) padded to a multiple of 4 bytes. */
export function encodeChannelData(channel: number, data: Uint8Array, stream: boolean): Buffer {
  if (channel < MIN_CHANNEL || channel > MAX_CHANNEL) throw new RangeError('channel number outside 0x4000..0x4fff');
  if (data.length > 0xffff) throw new RangeError('ChannelData longer than 65535 bytes');
  const buf = Buffer.alloc(4 + (stream ? pad4(data.length) : data.length));
  buf.writeUInt16BE(channel, 0);
  buf.writeUInt16BE(data.length, 2);
  buf.set(data, 4);
  return buf;
}

/**
 * Decode one ChannelData message occupying all of `input`. Over UDP the padding may be absent
 * or present (RFC 8656 §12.5); over a stream it must be there. Nothing may follow it.
 */
export function decodeChannelData(input: Uint8Array, stream: boolean): ChannelDataResult {
  const buf = Buffer.isBuffer(input) ? input : Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  if (buf.length < 4) return fail(ErrorCode.MALFORMED, 'ChannelData shorter than its header');
  const channel = buf.readUInt16BE(0);
  if (channel < MIN_CHANNEL || channel > MAX_CHANNEL) return fail(ErrorCode.MALFORMED, `channel 0x${channel.toString(16)} outside 0x4000..0x4fff`);
  const len = buf.readUInt16BE(2);
  if (4 + len > buf.length) return fail(ErrorCode.MALFORMED, 'ChannelData truncated');
  const padded = 4 + pad4(len);
  if (stream ? buf.length !== padded : buf.length !== 4 + len && buf.length !== padded) return fail(ErrorCode.MALFORMED, 'trailing bytes after ChannelData');
  return { ok: true, frame: { channel, data: buf.subarray(4, 4 + len) } };
}

/**
 * Over TCP/TLS, how many bytes the frame starting at `buf` takes (RFC 8656 §12: STUN messages
 * and padded ChannelData share the stream), `0` when more bytes are needed to tell, or `-1` when
 * the stream cannot be STUN/TURN (the connection must be closed: there is no resynchronising).
 */
export function streamFrameLength(buf: Uint8Array): number {
  if (buf.length < 4) return 0;
  const first = buf[0]!;
  const len = (buf[2]! << 8) | buf[3]!;
  if (first < 4) return len % 4 === 0 ? HEADER_BYTES + len : -1;
  if (first >= 0x40 && first <= 0x4f) return 4 + pad4(len);
  return -1;
}
