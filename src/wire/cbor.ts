// Strict CBOR (RFC 8949) for untrusted datagrams, and deterministic encoding.
//
// Both directions are our own (~200 lines), not cbor-x: measured here, cbor-x decodes leniently
// (indefinite lengths, duplicate map keys, its record extension, every tag) and encodes integers
// of 2^32 and above as float64, while a daemon must refuse the former without ever throwing and
// sequence numbers need the latter as plain uint64. The encoder emits RFC 8949 §4.2.1
// deterministic bytes (shortest heads, sorted keys); test/vectors check them against cbor2.
import { ErrorCode } from './errors.js';

/** A decoded CBOR value: the subset devloc uses. Integers are JS numbers (safe range only). */
export type CborValue =
  | number
  | string
  | boolean
  | null
  | Uint8Array
  | CborValue[]
  | CborMap;
export type CborMap = Map<number | string, CborValue>;

export interface DecodeLimits {
  /** Deepest nesting of arrays/maps; the top level is depth 1. */
  maxDepth: number;
  /** Total data items in the datagram: bounds work and memory before anything is allocated. */
  maxItems: number;
}

export const defaultDecodeLimits: DecodeLimits = { maxDepth: 8, maxItems: 600 };

export type DecodeResult<T> =
  | { ok: true; value: T }
  | { ok: false; code: ErrorCode; reason: string };

class Malformed {
  constructor(
    readonly code: ErrorCode,
    readonly reason: string,
  ) {}
}

// ignoreBOM: a leading U+FEFF is text like any other; the default would silently drop it.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Decode exactly one CBOR data item that fills `bytes`. Never throws.
 * Refuses: indefinite lengths, tags, floats, `undefined`, reserved simple values, duplicate or
 * non-int/tstr map keys, integers outside ±(2^53-1), invalid UTF-8, trailing bytes, nesting
 * deeper than `maxDepth`, more than `maxItems` items.
 */
export function decodeStrict(
  bytes: Uint8Array,
  limits: DecodeLimits = defaultDecodeLimits,
): DecodeResult<CborValue> {
  const state = { pos: 0, items: 0 };
  try {
    const value = readItem(bytes, state, 1, limits);
    if (state.pos !== bytes.length) {
      return { ok: false, code: ErrorCode.MALFORMED, reason: 'trailing bytes after CBOR item' };
    }
    return { ok: true, value };
  } catch (err) {
    if (err instanceof Malformed) return { ok: false, code: err.code, reason: err.reason };
    /* c8 ignore next 2 */
    return { ok: false, code: ErrorCode.MALFORMED, reason: `decoder fault: ${String(err)}` };
  }
}

function fail(reason: string, code: ErrorCode = ErrorCode.MALFORMED): never {
  throw new Malformed(code, reason);
}

function readArgument(bytes: Uint8Array, state: { pos: number }, info: number): number {
  if (info < 24) return info;
  const start = state.pos;
  switch (info) {
    case 24:
      if (start + 1 > bytes.length) fail('truncated');
      state.pos += 1;
      return bytes[start]!;
    case 25:
      if (start + 2 > bytes.length) fail('truncated');
      state.pos += 2;
      return (bytes[start]! << 8) | bytes[start + 1]!;
    case 26:
      if (start + 4 > bytes.length) fail('truncated');
      state.pos += 4;
      return (
        ((bytes[start]! << 24) >>> 0) +
        ((bytes[start + 1]! << 16) | (bytes[start + 2]! << 8) | bytes[start + 3]!)
      );
    case 27: {
      if (start + 8 > bytes.length) fail('truncated');
      state.pos += 8;
      const high =
        ((bytes[start]! << 24) >>> 0) +
        ((bytes[start + 1]! << 16) | (bytes[start + 2]! << 8) | bytes[start + 3]!);
      const low =
        ((bytes[start + 4]! << 24) >>> 0) +
        ((bytes[start + 5]! << 16) | (bytes[start + 6]! << 8) | bytes[start + 7]!);
      if (high > 0x1fffff) fail('integer beyond 2^53-1');
      return high * 0x100000000 + low;
    }
    case 31:
      return fail('indefinite length not allowed');
    default:
      return fail('reserved additional information');
  }
}

function readItem(
  bytes: Uint8Array,
  state: { pos: number; items: number },
  depth: number,
  limits: DecodeLimits,
): CborValue {
  if (state.pos >= bytes.length) fail('truncated');
  if (++state.items > limits.maxItems) fail('too many data items', ErrorCode.TOO_LARGE);
  const initial = bytes[state.pos++]!;
  const major = initial >> 5;
  const info = initial & 0x1f;
  switch (major) {
    case 0:
      return readArgument(bytes, state, info);
    case 1: {
      const n = readArgument(bytes, state, info);
      if (n >= Number.MAX_SAFE_INTEGER) fail('integer beyond -(2^53-1)');
      return -1 - n;
    }
    case 2:
    case 3: {
      const length = readArgument(bytes, state, info);
      if (state.pos + length > bytes.length) fail('truncated string');
      const slice = bytes.subarray(state.pos, state.pos + length);
      state.pos += length;
      if (major === 2) return slice;
      try {
        return utf8.decode(slice);
      } catch {
        return fail('invalid UTF-8 in text string');
      }
    }
    case 4: {
      const count = readArgument(bytes, state, info);
      if (depth > limits.maxDepth) fail('nesting too deep', ErrorCode.TOO_LARGE);
      // Each element takes at least one byte: a count beyond the bytes left is a lie.
      if (count > bytes.length - state.pos) fail('truncated array');
      const out: CborValue[] = [];
      for (let i = 0; i < count; i++) out.push(readItem(bytes, state, depth + 1, limits));
      return out;
    }
    case 5: {
      const count = readArgument(bytes, state, info);
      if (depth > limits.maxDepth) fail('nesting too deep', ErrorCode.TOO_LARGE);
      if (count * 2 > bytes.length - state.pos) fail('truncated map');
      const out: CborMap = new Map();
      for (let i = 0; i < count; i++) {
        const key = readItem(bytes, state, depth + 1, limits);
        if (typeof key !== 'number' && typeof key !== 'string') fail('map key must be int or text');
        if (out.has(key)) fail('duplicate map key');
        out.set(key, readItem(bytes, state, depth + 1, limits));
      }
      return out;
    }
    case 6:
      return fail('tags not allowed');
    default: {
      // major 7: only false, true, null
      if (info === 20) return false;
      if (info === 21) return true;
      if (info === 22) return null;
      if (info >= 25 && info <= 27) return fail('floating point not allowed');
      return fail('simple value not allowed');
    }
  }
}

/** Compare two map keys in RFC 8949 §4.2.1 order (bytewise order of their encodings). */
export function compareKeys(a: number | string, b: number | string): number {
  const ta = typeof a === 'number' ? (a >= 0 ? 0 : 1) : 2;
  const tb = typeof b === 'number' ? (b >= 0 ? 0 : 1) : 2;
  if (ta !== tb) return ta - tb;
  if (ta === 0) return (a as number) - (b as number);
  if (ta === 1) return (b as number) - (a as number);
  const ea = Buffer.from(a as string, 'utf8');
  const eb = Buffer.from(b as string, 'utf8');
  // A shorter string has a smaller (or equal-prefix smaller) header, so length decides first.
  if (ea.length !== eb.length) return ea.length - eb.length;
  return Buffer.compare(ea, eb);
}

/** Rebuild `value` with every map's keys in deterministic order. */
export function canonical(value: CborValue): CborValue {
  if (value instanceof Map) {
    const keys = [...value.keys()].sort(compareKeys);
    const out: CborMap = new Map();
    for (const k of keys) out.set(k, canonical(value.get(k)!));
    return out;
  }
  if (Array.isArray(value)) return value.map(canonical);
  return value;
}

/**
 * Encoder output: bytes are written into one reused scratch buffer (grown on demand) and copied
 * out once per encode, rather than pushed one by one onto a number[] (which allocated a lot per
 * datagram). Encoding is synchronous and not re-entrant, so one scratch buffer is enough.
 */
let scratch = Buffer.allocUnsafe(2048);
let pos = 0;

function reserve(n: number): void {
  if (pos + n <= scratch.length) return;
  const bigger = Buffer.allocUnsafe(Math.max(scratch.length * 2, pos + n));
  scratch.copy(bigger, 0, 0, pos);
  scratch = bigger;
}

function writeHead(major: number, n: number): void {
  const m = major << 5;
  reserve(9);
  if (n < 24) scratch[pos++] = m | n;
  else if (n < 0x100) {
    scratch[pos++] = m | 24;
    scratch[pos++] = n;
  } else if (n < 0x10000) {
    scratch[pos++] = m | 25;
    scratch[pos++] = n >> 8;
    scratch[pos++] = n & 0xff;
  } else if (n < 0x100000000) {
    scratch[pos++] = m | 26;
    scratch.writeUInt32BE(n, pos);
    pos += 4;
  } else {
    scratch[pos++] = m | 27;
    scratch.writeUInt32BE(Math.floor(n / 0x100000000), pos);
    scratch.writeUInt32BE(n >>> 0, pos + 4);
    pos += 8;
  }
}

function writeBytes(b: Uint8Array): void {
  writeHead(2, b.length);
  reserve(b.length);
  scratch.set(b, pos);
  pos += b.length;
}

function writeValue(value: CborValue): void {
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) throw new TypeError(`not a safe integer: ${value}`);
    if (value >= 0) writeHead(0, value);
    else writeHead(1, -1 - value);
  } else if (typeof value === 'string') {
    const n = Buffer.byteLength(value);
    writeHead(3, n);
    reserve(n);
    pos += scratch.write(value, pos, 'utf8');
  } else if (value instanceof Uint8Array) {
    writeBytes(value);
  } else if (Array.isArray(value)) {
    writeHead(4, value.length);
    for (const v of value) writeValue(v);
  } else if (value instanceof Map) {
    writeHead(5, value.size);
    for (const [k, v] of value) {
      writeValue(k);
      writeValue(v);
    }
  } else {
    reserve(1);
    if (value === false) scratch[pos++] = 0xf4;
    else if (value === true) scratch[pos++] = 0xf5;
    else if (value === null) scratch[pos++] = 0xf6;
    else throw new TypeError(`cannot encode ${typeof value}`);
  }
}

/**
 * CBOR bytes of `value`, with maps in insertion order: callers build maps with sorted keys
 * (the schema does), or use `encodeCanonical`. Throws TypeError only on a programming error
 * (a value outside the subset), never on anything received.
 */
export function encodeCbor(value: CborValue): Buffer {
  pos = 0;
  writeValue(value);
  // A copy: the scratch buffer is overwritten by the next encode.
  return Buffer.from(scratch.subarray(0, pos));
}

/**
 * CBOR bytes of an array of `before`, then `encoded` (one item already encoded), then `after`:
 * written in one pass, copied out once. The tests build datagrams around raw bodies with it;
 * encodeDatagram writes its envelope through cborOut itself.
 */
export function encodeArrayAround(before: readonly CborValue[], encoded: Uint8Array, after: readonly CborValue[]): Buffer {
  pos = 0;
  writeHead(4, before.length + 1 + after.length);
  for (const v of before) writeValue(v);
  cborOut.raw(encoded);
  for (const v of after) writeValue(v);
  return cborOut.take();
}

/**
 * The encoder's output for writers that walk their own structure (schema.ts writes a message
 * body field by field, with no Map built per body): `start`, the items, then `take` the bytes
 * (a copy). Synchronous and not re-entrant, as encodeCbor: nothing may encode in between.
 */
export const cborOut = {
  start(): void {
    pos = 0;
  },
  /** A major type's head: an unsigned int (major 0), an array (4) or map (5) of `n` items. */
  head: writeHead,
  /** Any value of the subset (as encodeCbor writes it; TypeError outside it). */
  value: writeValue,
  /** Bytes already encoded, as they are. */
  raw(b: Uint8Array): void {
    reserve(b.length);
    scratch.set(b, pos);
    pos += b.length;
  },
  take(): Buffer {
    return Buffer.from(scratch.subarray(0, pos));
  },
  /** Bytes written since `start`, not copied out: what a size needs (paging measures every entry). */
  written(): number {
    return pos;
  },
};

/** Deterministic encoding of any value: sorts every map's keys first. */
export function encodeCanonical(value: CborValue): Buffer {
  return encodeCbor(canonical(value));
}
