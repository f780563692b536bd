// A lenient walk over (possibly invalid) CBOR that records where each data item starts and
// ends, so mutations can act on items instead of bytes: change a head's argument, nest an
// item deeper, duplicate a map entry, swap items between inputs. It never throws; a walk that
// meets garbage simply stops, keeping the items found so far.

export interface ItemSpan {
  /** Offset of the initial byte. */
  start: number;
  /** Length of the head (initial byte plus argument bytes). */
  headLength: number;
  /** Offset just past the whole item (content and children included). */
  end: number;
  major: number;
  /** The head's argument (value, length or count); -1 for indefinite or unknown. */
  argument: number;
  /** Nesting depth (top level 0). */
  depth: number;
}

function readHead(b: Uint8Array, pos: number): { major: number; info: number; argument: number; headLength: number } | null {
  if (pos >= b.length) return null;
  const ib = b[pos]!;
  const major = ib >> 5;
  const info = ib & 0x1f;
  if (info < 24) return { major, info, argument: info, headLength: 1 };
  const sizes: Record<number, number> = { 24: 1, 25: 2, 26: 4, 27: 8 };
  const n = sizes[info];
  if (n === undefined) return info === 31 ? { major, info, argument: -1, headLength: 1 } : null;
  if (pos + 1 + n > b.length) return null;
  let v = 0;
  for (let i = 0; i < n; i++) v = v * 256 + b[pos + 1 + i]!;
  return { major, info, argument: v, headLength: 1 + n };
}

/** Every item found, in document order (parents before children). */
export function scanItems(bytes: Uint8Array, maxItems = 2000): ItemSpan[] {
  const out: ItemSpan[] = [];
  const walk = (pos: number, depth: number): number | null => {
    if (out.length >= maxItems || depth > 64) return null;
    const h = readHead(bytes, pos);
    if (!h) return null;
    const span: ItemSpan = { start: pos, headLength: h.headLength, end: pos + h.headLength, major: h.major, argument: h.argument, depth };
    out.push(span);
    let p = pos + h.headLength;
    if (h.argument < 0) {
      // Indefinite: children until a break byte.
      while (p < bytes.length && bytes[p] !== 0xff) {
        const q = walk(p, depth + 1);
        if (q === null) return null;
        p = q;
      }
      if (p >= bytes.length) return null;
      span.end = p + 1;
      return span.end;
    }
    switch (h.major) {
      case 2:
      case 3:
        if (p + h.argument > bytes.length) return null;
        span.end = p + h.argument;
        return span.end;
      case 4:
      case 5: {
        const children = h.major === 4 ? h.argument : h.argument * 2;
        if (children > bytes.length) return null;
        for (let i = 0; i < children; i++) {
          const q = walk(p, depth + 1);
          if (q === null) return null;
          p = q;
        }
        span.end = p;
        return p;
      }
      case 6: {
        const q = walk(p, depth + 1);
        if (q === null) return null;
        span.end = q;
        return q;
      }
      default:
        return p;
    }
  };
  let pos = 0;
  while (pos < bytes.length && out.length < maxItems) {
    const q = walk(pos, 0);
    if (q === null || q <= pos) break;
    pos = q;
  }
  return out;
}

/** Encode a head with `argument`, in the shortest form or a forced width (non-canonical). */
export function encodeHead(major: number, argument: number, width?: 0 | 1 | 2 | 4 | 8): Buffer {
  const m = major << 5;
  const w = width ?? (argument < 24 ? 0 : argument < 0x100 ? 1 : argument < 0x10000 ? 2 : argument < 0x100000000 ? 4 : 8);
  if (w === 0) return Buffer.from([m | Math.min(argument, 23)]);
  const info = { 1: 24, 2: 25, 4: 26, 8: 27 }[w];
  const out = Buffer.alloc(1 + w);
  out[0] = m | info;
  let v = argument;
  for (let i = w; i >= 1; i--) {
    out[i] = v % 256;
    v = Math.floor(v / 256);
  }
  return out;
}
