// A small reader for classic libpcap files, down to UDP payloads. No dependency: devloc decode
// only needs UDP over IPv4/IPv6 on a handful of link types.
//
// File: 24-byte header (magic a1b2c3d4 = microsecond or a1b23c4d = nanosecond timestamps, in
// the writer's byte order; version; thiszone; sigfigs; snaplen; link type), then records of a
// 16-byte header (seconds, fraction, captured length, original length) and the captured bytes.
// Link types: 0 BSD loopback/null, 1 Ethernet (with 802.1Q/802.1ad tags), 101 raw IP (and 228/229
// raw IPv4/IPv6), 113 Linux cooked (SLL), 276 Linux cooked v2 (SLL2).
// Every read is bounds-checked; a damaged packet is reported as skipped, never thrown. A damaged
// file header or record header ends the file with an error (nothing after it can be trusted).
import type { Address } from '../wire/addr.js';
import { bytesToIp, formatAddress, ipToBytes } from '../wire/addr.js';

export const LinkType = { NULL: 0, ETHERNET: 1, RAW: 101, LINUX_SLL: 113, IPV4: 228, IPV6: 229, LINUX_SLL2: 276 } as const;

export interface PcapHeader {
  littleEndian: boolean;
  nanoseconds: boolean;
  versionMajor: number;
  versionMinor: number;
  snaplen: number;
  linkType: number;
}

export interface UdpDatagram {
  src: Address;
  dst: Address;
  payload: Buffer;
}

export interface PcapRecord {
  /** 1-based packet number, as Wireshark counts. */
  index: number;
  seconds: number;
  /** Microseconds or nanoseconds, per the header. */
  fraction: number;
  capturedLength: number;
  originalLength: number;
  /** The UDP datagram, or why there is none. */
  udp: UdpDatagram | { skip: string };
}

export type PcapParse =
  | { ok: true; header: PcapHeader; records: PcapRecord[]; error?: string }
  | { ok: false; error: string };

const MAGIC_US = 0xa1b2c3d4;
const MAGIC_NS = 0xa1b23c4d;
const PCAPNG_MAGIC = 0x0a0d0d0a;
const ETHERTYPE_IPV4 = 0x0800;
const ETHERTYPE_IPV6 = 0x86dd;
const VLAN_TAGS = new Set([0x8100, 0x88a8, 0x9100]);
const IPPROTO_UDP = 17;
/** IPv6 extension headers walked over to find UDP (hop-by-hop, routing, destination options). */
const IPV6_EXTENSIONS = new Set([0, 43, 60]);
const IPV6_FRAGMENT = 44;

/** Parse a whole pcap file. Never throws. */
export function parsePcap(file: Buffer): PcapParse {
  if (file.length < 24) return { ok: false, error: `not a pcap file: ${file.length} bytes is shorter than the 24-byte header` };
  const be = file.readUInt32BE(0);
  const le = file.readUInt32LE(0);
  let littleEndian: boolean;
  let nanoseconds: boolean;
  if (le === MAGIC_US || le === MAGIC_NS) {
    littleEndian = true;
    nanoseconds = le === MAGIC_NS;
  } else if (be === MAGIC_US || be === MAGIC_NS) {
    littleEndian = false;
    nanoseconds = be === MAGIC_NS;
  } else if (be === PCAPNG_MAGIC) {
    return { ok: false, error: 'pcapng is not supported: convert with "editcap -F pcap in.pcapng out.pcap" or capture with "tcpdump -w"' };
  } else {
    return { ok: false, error: `not a pcap file (magic ${file.subarray(0, 4).toString('hex')})` };
  }
  const u16 = (o: number): number => (littleEndian ? file.readUInt16LE(o) : file.readUInt16BE(o));
  const u32 = (o: number): number => (littleEndian ? file.readUInt32LE(o) : file.readUInt32BE(o));
  const header: PcapHeader = {
    littleEndian, nanoseconds, versionMajor: u16(4), versionMinor: u16(6), snaplen: u32(16),
    // The upper bits may carry FCS information (draft-ietf-opsawg-pcap); the type is the low 16.
    linkType: u32(20) & 0xffff,
  };
  const records: PcapRecord[] = [];
  let pos = 24;
  let index = 0;
  const fractionMax = nanoseconds ? 1_000_000_000 : 1_000_000;
  while (pos < file.length) {
    index++;
    if (pos + 16 > file.length) return { ok: true, header, records, error: `packet ${index}: truncated record header (file cut short?)` };
    const seconds = u32(pos);
    const fraction = u32(pos + 4);
    const capturedLength = u32(pos + 8);
    const originalLength = u32(pos + 12);
    if (fraction >= fractionMax) return { ok: true, header, records, error: `packet ${index}: timestamp fraction ${fraction} out of range (corrupt file?)` };
    if (capturedLength > 262_144 || pos + 16 + capturedLength > file.length) {
      return { ok: true, header, records, error: `packet ${index}: captured length ${capturedLength} runs past the end of the file` };
    }
    const frame = file.subarray(pos + 16, pos + 16 + capturedLength);
    pos += 16 + capturedLength;
    const udp = udpOfFrame(header.linkType, frame);
    records.push({ index, seconds, fraction, capturedLength, originalLength, udp });
  }
  return { ok: true, header, records };
}

/** The UDP datagram in a link-layer frame, or why there is none. */
export function udpOfFrame(linkType: number, frame: Buffer): UdpDatagram | { skip: string } {
  switch (linkType) {
    case LinkType.NULL: {
      // 4-byte address family in the capturing host's byte order (2 = AF_INET; AF_INET6 is
      // 10, 24, 28 or 30 depending on the OS), so go by the IP version nibble instead.
      if (frame.length < 4) return { skip: 'truncated loopback header' };
      return udpOfIp(frame.subarray(4));
    }
    case LinkType.ETHERNET: {
      let off = 12;
      if (frame.length < 14) return { skip: 'truncated Ethernet header' };
      let ethertype = frame.readUInt16BE(off);
      while (VLAN_TAGS.has(ethertype)) {
        off += 4;
        if (frame.length < off + 2) return { skip: 'truncated VLAN tag' };
        ethertype = frame.readUInt16BE(off);
      }
      return udpOfEthertype(ethertype, frame.subarray(off + 2));
    }
    case LinkType.RAW:
    case LinkType.IPV4:
    case LinkType.IPV6:
      return udpOfIp(frame);
    case LinkType.LINUX_SLL:
      if (frame.length < 16) return { skip: 'truncated Linux cooked header' };
      return udpOfEthertype(frame.readUInt16BE(14), frame.subarray(16));
    case LinkType.LINUX_SLL2:
      if (frame.length < 20) return { skip: 'truncated Linux cooked v2 header' };
      return udpOfEthertype(frame.readUInt16BE(0), frame.subarray(20));
    default:
      return { skip: `link type ${linkType} not supported` };
  }
}

function udpOfEthertype(ethertype: number, packet: Buffer): UdpDatagram | { skip: string } {
  if (ethertype === ETHERTYPE_IPV4 || ethertype === ETHERTYPE_IPV6) return udpOfIp(packet);
  return { skip: `not IP (ethertype 0x${ethertype.toString(16).padStart(4, '0')})` };
}

/** UDP inside an IPv4 or IPv6 packet (by the version nibble). */
export function udpOfIp(packet: Buffer): UdpDatagram | { skip: string } {
  if (packet.length < 1) return { skip: 'empty IP packet' };
  const version = packet[0]! >> 4;
  if (version === 4) return udpOfIpv4(packet);
  if (version === 6) return udpOfIpv6(packet);
  return { skip: `not IPv4 or IPv6 (version ${version})` };
}

function udpOfIpv4(p: Buffer): UdpDatagram | { skip: string } {
  if (p.length < 20) return { skip: 'truncated IPv4 header' };
  const ihl = (p[0]! & 0x0f) * 4;
  if (ihl < 20 || p.length < ihl) return { skip: 'bad IPv4 header length' };
  const totalLength = p.readUInt16BE(2);
  const flagsFragment = p.readUInt16BE(6);
  const src = bytesToIp(p.subarray(12, 16))!;
  const dst = bytesToIp(p.subarray(16, 20))!;
  if (p[9] !== IPPROTO_UDP) return { skip: `not UDP (IP protocol ${p[9]})` };
  // devloc never sends fragments (datagrams <= 1200 B); a fragment is reported, not reassembled.
  if ((flagsFragment & 0x2000) !== 0 || (flagsFragment & 0x1fff) !== 0) return { skip: `IPv4 fragment ${src} -> ${dst} (not reassembled)` };
  const end = Math.min(p.length, totalLength >= ihl ? totalLength : p.length);
  return udpOf(p.subarray(ihl, end), src, dst);
}

function udpOfIpv6(p: Buffer): UdpDatagram | { skip: string } {
  if (p.length < 40) return { skip: 'truncated IPv6 header' };
  const payloadLength = p.readUInt16BE(4);
  let next = p[6]!;
  const src = bytesToIp(p.subarray(8, 24))!;
  const dst = bytesToIp(p.subarray(24, 40))!;
  let off = 40;
  const end = payloadLength === 0 ? p.length : Math.min(p.length, 40 + payloadLength);
  for (let hops = 0; IPV6_EXTENSIONS.has(next); hops++) {
    if (hops > 8 || off + 8 > end) return { skip: 'truncated IPv6 extension headers' };
    const len = (p[off + 1]! + 1) * 8;
    next = p[off]!;
    off += len;
  }
  if (next === IPV6_FRAGMENT) return { skip: `IPv6 fragment ${src} -> ${dst} (not reassembled)` };
  if (next !== IPPROTO_UDP) return { skip: `not UDP (IPv6 next header ${next})` };
  if (off > end) return { skip: 'truncated IPv6 extension headers' };
  return udpOf(p.subarray(off, end), src, dst);
}

function udpOf(u: Buffer, srcIp: string, dstIp: string): UdpDatagram | { skip: string } {
  if (u.length < 8) return { skip: 'truncated UDP header' };
  const length = u.readUInt16BE(4);
  if (length < 8) return { skip: `bad UDP length ${length}` };
  const src = { ip: srcIp, port: u.readUInt16BE(0) };
  const dst = { ip: dstIp, port: u.readUInt16BE(2) };
  // A capture cut at the snaplen holds fewer bytes than the UDP length says.
  if (length > u.length) return { skip: `UDP ${formatAddress(src)} -> ${formatAddress(dst)}: payload truncated (${u.length - 8} of ${length - 8} bytes captured)` };
  return { src, dst, payload: u.subarray(8, length) };
}

/** Timestamp of a record as ISO 8601 UTC with 6 (µs) or 9 (ns) fractional digits. */
export function formatPcapTime(seconds: number, fraction: number, nanoseconds: boolean): string {
  const base = new Date(seconds * 1000).toISOString().slice(0, 19);
  return `${base}.${String(fraction).padStart(nanoseconds ? 9 : 6, '0')}Z`;
}

// ---------------------------------------------------------------------------------------------
// Writing, for tests and fixtures: the same format, so a round trip proves the reader.

export interface FrameToWrite {
  seconds: number;
  fraction: number;
  frame: Buffer;
  /** Original length when the frame was cut (defaults to the frame's length). */
  originalLength?: number;
}

export function writePcap(linkType: number, frames: FrameToWrite[], o: { littleEndian?: boolean; nanoseconds?: boolean; snaplen?: number } = {}): Buffer {
  const le = o.littleEndian ?? true;
  const h = Buffer.alloc(24);
  const w32 = (b: Buffer, v: number, off: number): void => void (le ? b.writeUInt32LE(v, off) : b.writeUInt32BE(v, off));
  const w16 = (b: Buffer, v: number, off: number): void => void (le ? b.writeUInt16LE(v, off) : b.writeUInt16BE(v, off));
  w32(h, o.nanoseconds ? MAGIC_NS : MAGIC_US, 0);
  w16(h, 2, 4);
  w16(h, 4, 6);
  w32(h, o.snaplen ?? 262_144, 16);
  w32(h, linkType, 20);
  const parts: Buffer[] = [h];
  for (const f of frames) {
    const r = Buffer.alloc(16);
    w32(r, f.seconds, 0);
    w32(r, f.fraction, 4);
    w32(r, f.frame.length, 8);
    w32(r, f.originalLength ?? f.frame.length, 12);
    parts.push(r, f.frame);
  }
  return Buffer.concat(parts);
}

/** Internet checksum (RFC 1071) over `chunks`. */
function inetChecksum(chunks: Buffer[]): number {
  let sum = 0;
  for (const c of chunks) {
    for (let i = 0; i < c.length; i += 2) sum += (c[i]! << 8) | (i + 1 < c.length ? c[i + 1]! : 0);
  }
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** An IPv4 or IPv6 packet carrying one UDP datagram (valid checksums, no options). */
export function buildUdpPacket(src: Address, dst: Address, payload: Uint8Array): Buffer {
  const udp = Buffer.alloc(8 + payload.length);
  udp.writeUInt16BE(src.port, 0);
  udp.writeUInt16BE(dst.port, 2);
  udp.writeUInt16BE(udp.length, 4);
  Buffer.from(payload).copy(udp, 8);
  const v6 = src.ip.includes(':');
  const s = ipBytes(src.ip);
  const d = ipBytes(dst.ip);
  if (!v6) {
    const ip = Buffer.alloc(20);
    ip[0] = 0x45;
    ip.writeUInt16BE(20 + udp.length, 2);
    ip.writeUInt16BE(0x4000, 6); // DF
    ip[8] = 64;
    ip[9] = IPPROTO_UDP;
    s.copy(ip, 12);
    d.copy(ip, 16);
    ip.writeUInt16BE(inetChecksum([ip]), 10);
    const pseudo = Buffer.concat([s, d, Buffer.from([0, IPPROTO_UDP]), Buffer.from([udp.length >> 8, udp.length & 0xff])]);
    udp.writeUInt16BE(inetChecksum([pseudo, udp]) || 0xffff, 6);
    return Buffer.concat([ip, udp]);
  }
  const ip = Buffer.alloc(40);
  ip[0] = 0x60;
  ip.writeUInt16BE(udp.length, 4);
  ip[6] = IPPROTO_UDP;
  ip[7] = 64;
  s.copy(ip, 8);
  d.copy(ip, 24);
  const len = Buffer.alloc(4);
  len.writeUInt32BE(udp.length);
  const pseudo = Buffer.concat([s, d, len, Buffer.from([0, 0, 0, IPPROTO_UDP])]);
  udp.writeUInt16BE(inetChecksum([pseudo, udp]) || 0xffff, 6);
  return Buffer.concat([ip, udp]);
}

function ipBytes(text: string): Buffer {
  const b = ipToBytes(text);
  if (!b) throw new TypeError(`not an IP address: ${text}`);
  // Keep the family asked for: an IPv6 text stays 16 bytes even when it is IPv4-mapped.
  if (text.includes(':') && b.length === 4) return Buffer.concat([Buffer.from('00000000000000000000ffff', 'hex'), Buffer.from(b)]);
  return Buffer.from(b);
}

/** Link-layer framing around an IP packet, for writing test captures. */
export function frameFor(linkType: number, ipPacket: Buffer): Buffer {
  const v6 = ipPacket[0]! >> 4 === 6;
  const ethertype = v6 ? ETHERTYPE_IPV6 : ETHERTYPE_IPV4;
  switch (linkType) {
    case LinkType.NULL: {
      const h = Buffer.alloc(4);
      h.writeUInt32LE(v6 ? 10 : 2);
      return Buffer.concat([h, ipPacket]);
    }
    case LinkType.ETHERNET: {
      const h = Buffer.alloc(14);
      Buffer.from('020000000002020000000001', 'hex').copy(h, 0);
      h.writeUInt16BE(ethertype, 12);
      return Buffer.concat([h, ipPacket]);
    }
    case LinkType.RAW:
    case LinkType.IPV4:
    case LinkType.IPV6:
      return ipPacket;
    case LinkType.LINUX_SLL: {
      const h = Buffer.alloc(16);
      h.writeUInt16BE(0, 0); // to us
      h.writeUInt16BE(1, 2); // ARPHRD_ETHER
      h.writeUInt16BE(6, 4);
      Buffer.from('020000000001', 'hex').copy(h, 6);
      h.writeUInt16BE(ethertype, 14);
      return Buffer.concat([h, ipPacket]);
    }
    case LinkType.LINUX_SLL2: {
      const h = Buffer.alloc(20);
      h.writeUInt16BE(ethertype, 0);
      h.writeUInt32BE(2, 4); // interface index
      h.writeUInt16BE(1, 8); // ARPHRD_ETHER
      h[10] = 4; // outgoing
      h[11] = 6;
      Buffer.from('020000000001', 'hex').copy(h, 12);
      return Buffer.concat([h, ipPacket]);
    }
    default:
      throw new TypeError(`cannot frame for link type ${linkType}`);
  }
}
