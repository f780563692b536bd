// Transport addresses on the wire: CBOR array [ip bstr(4 or 16), port uint]. Pure conversion
// between text IPs and bytes; no sockets.

export interface Address {
  ip: string;
  port: number;
}

/**
 * IPv4 dotted quad to 4 bytes, or null. Leading zeros are refused (ambiguous octal). Each octet
 * must match /^(0|[1-9][0-9]{0,2})$/ and be <= 255; scanned by hand, as it runs per encoded
 * address (every REFLECT_RESULT, every observed address).
 */
function parseIPv4(text: string): Uint8Array | null {
  const out = new Uint8Array(4);
  let part = 0;
  let digits = 0;
  let n = 0;
  for (let i = 0; i <= text.length; i++) {
    const c = i < text.length ? text.charCodeAt(i) : 0x2e; // the end closes the last octet like a '.'
    if (c === 0x2e) {
      if (digits === 0 || part > 3 || n > 255) return null;
      out[part++] = n;
      digits = 0;
      n = 0;
    } else if (c >= 0x30 && c <= 0x39) {
      // A leading 0 may only stand alone; more than 3 digits never fit.
      if ((digits === 1 && n === 0) || digits === 3) return null;
      n = n * 10 + (c - 0x30);
      digits++;
    } else return null;
  }
  return part === 4 ? out : null;
}

/** IPv6 text (with :: and an optional embedded IPv4 tail; no zone) to 16 bytes, or null. */
function parseIPv6(text: string): Uint8Array | null {
  if (text.includes('%')) return null;
  let head = text;
  let tail4: Uint8Array | null = null;
  const lastColon = text.lastIndexOf(':');
  if (text.includes('.', lastColon)) {
    tail4 = parseIPv4(text.slice(lastColon + 1));
    if (!tail4) return null;
    head = text.slice(0, lastColon + 1) + '0:0';
  }
  const halves = head.split('::');
  if (halves.length > 2) return null;
  const toGroups = (s: string): number[] | null => {
    if (s === '') return [];
    const groups = s.split(':');
    const out: number[] = [];
    for (const g of groups) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
      out.push(parseInt(g, 16));
    }
    return out;
  };
  const left = toGroups(halves[0]!);
  const right = halves.length === 2 ? toGroups(halves[1]!) : [];
  if (!left || !right) return null;
  let groups: number[];
  if (halves.length === 2) {
    const missing = 8 - left.length - right.length;
    if (missing < 1) return null;
    groups = [...left, ...new Array<number>(missing).fill(0), ...right];
  } else {
    groups = left;
  }
  if (groups.length !== 8) return null;
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    out[2 * i] = g >> 8;
    out[2 * i + 1] = g & 0xff;
  });
  if (tail4) out.set(tail4, 12);
  return out;
}

/** Text IP to wire bytes; IPv4-mapped IPv6 (::ffff:a.b.c.d) becomes 4 bytes. Null if invalid. */
export function ipToBytes(text: string): Uint8Array | null {
  const v4 = parseIPv4(text);
  if (v4) return v4;
  const v6 = parseIPv6(text);
  if (!v6) return null;
  if (v6.subarray(0, 10).every((b) => b === 0) && v6[10] === 0xff && v6[11] === 0xff) {
    return v6.slice(12);
  }
  return v6;
}

/** Wire bytes to canonical text (RFC 5952 for IPv6). Null unless 4 or 16 bytes. */
export function bytesToIp(bytes: Uint8Array): string | null {
  if (bytes.length === 4) return `${bytes[0]!}.${bytes[1]!}.${bytes[2]!}.${bytes[3]!}`;
  if (bytes.length !== 16) return null;
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push((bytes[2 * i]! << 8) | bytes[2 * i + 1]!);
  // Longest run of >= 2 zero groups becomes "::" (first one on ties), per RFC 5952 §4.2.
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  const left = hex.slice(0, bestStart).join(':');
  const right = hex.slice(bestStart + bestLen).join(':');
  return `${left}::${right}`;
}

/** Normalise what node:dgram reports (it maps IPv4 into IPv6 on dual-stack sockets). */
export function normaliseIp(text: string): string {
  // Called per datagram. Without a colon only the IPv4 parse can succeed, and a dotted quad it
  // accepts (no leading zeros, octets <= 255) prints back as the very same text; anything it
  // refuses is returned unchanged below. So such text is already normal: skip the parse.
  if (!text.includes(':')) return text;
  const bytes = ipToBytes(text);
  return bytes ? bytesToIp(bytes)! : text;
}

/** One transport address, however node:dgram spelled the IP (IPv4 or IPv4-mapped IPv6). */
export function sameAddress(a: Address, b: Address): boolean {
  return a.port === b.port && normaliseIp(a.ip) === normaliseIp(b.ip);
}

export function formatAddress(a: Address): string {
  return a.ip.includes(':') ? `[${a.ip}]:${a.port}` : `${a.ip}:${a.port}`;
}

/** Parse "host:port" or "[v6]:port" with a literal IP. Null when invalid. */
export function parseAddress(text: string): Address | null {
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(text) ?? /^([^:]+):(\d{1,5})$/.exec(text);
  if (!m) return null;
  const port = Number(m[2]);
  const bytes = ipToBytes(m[1]!);
  if (!bytes || port > 65535) return null;
  return { ip: bytesToIp(bytes)!, port };
}

/** IPv4 text to a signed 32-bit integer (a V8 small integer), anything else unchanged. */
export function packIp(ip: string): number | string {
  // Per datagram (routability.ts checks the source of every session request): one pass over the
  // characters, no split array and no regular expression. Four groups of 1-3 digits, each <= 255.
  // Shorter than "0.0.0.0" or longer than "255.255.255.255": not IPv4.
  if (ip.length < 7 || ip.length > 15) return ip;
  let n = 0;
  let group = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < ip.length; i++) {
    const ch = ip.charCodeAt(i);
    if (ch === 46 /* . */) {
      if (digits === 0 || ++dots > 3) return ip;
      n = (n << 8) | group;
      group = 0;
      digits = 0;
    } else if (ch >= 48 && ch <= 57 && digits < 3) {
      group = group * 10 + (ch - 48);
      digits++;
      if (group > 255) return ip;
    } else return ip;
  }
  if (dots !== 3 || digits === 0) return ip;
  return ((n << 8) | group) | 0;
}

export function unpackIp(ip: number | string): string {
  if (typeof ip === 'string') return ip;
  return `${(ip >>> 24) & 255}.${(ip >>> 16) & 255}.${(ip >>> 8) & 255}.${ip & 255}`;
}
