// Classic libpcap files of devloc datagrams (Ethernet + IPv4 + UDP), for the dissector test and
// anything else that wants a capture (devloc decode reads the same format). Pure: no sockets.
import { catalog } from '../../src/wire/catalog.js';
import type { MessageName, MessageSpec } from '../../src/wire/catalog.js';
import { DEFAULT_PORTS, SESSION_ID_BYTES } from '../../src/wire/constants.js';
import { encodeDatagram } from '../../src/wire/envelope.js';
import type { Field, FieldType } from '../../src/wire/schema.js';

export interface UdpPacket {
  src: { ip: string; port: number };
  dst: { ip: string; port: number };
  payload: Uint8Array;
}

const LINKTYPE_ETHERNET = 1;

function ipv4Bytes(ip: string): number[] {
  const parts = ip.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) throw new Error(`not IPv4: ${ip}`);
  return parts;
}

function ipChecksum(header: Buffer): number {
  let sum = 0;
  for (let i = 0; i < header.length; i += 2) sum += header.readUInt16BE(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** One Ethernet frame carrying an IPv4/UDP datagram (UDP checksum 0: "not computed", legal on IPv4). */
export function ethernetUdpFrame(p: UdpPacket, ipId = 0): Buffer {
  const udpLen = 8 + p.payload.length;
  const ipLen = 20 + udpLen;
  const eth = Buffer.from([0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00]);
  const ip = Buffer.alloc(20);
  ip[0] = 0x45; // version 4, IHL 5
  ip.writeUInt16BE(ipLen, 2);
  ip.writeUInt16BE(ipId & 0xffff, 4);
  ip.writeUInt16BE(0x4000, 6); // don't fragment
  ip[8] = 64; // TTL
  ip[9] = 17; // UDP
  Buffer.from(ipv4Bytes(p.src.ip)).copy(ip, 12);
  Buffer.from(ipv4Bytes(p.dst.ip)).copy(ip, 16);
  ip.writeUInt16BE(ipChecksum(ip), 10);
  const udp = Buffer.alloc(8);
  udp.writeUInt16BE(p.src.port, 0);
  udp.writeUInt16BE(p.dst.port, 2);
  udp.writeUInt16BE(udpLen, 4);
  return Buffer.concat([eth, ip, udp, Buffer.from(p.payload)]);
}

/** A classic (microsecond, little-endian) pcap file, one frame per packet, 1 ms apart. */
export function pcapFile(packets: readonly UdpPacket[], startSeconds = 1_700_000_000): Buffer {
  const header = Buffer.alloc(24);
  header.writeUInt32LE(0xa1b2c3d4, 0);
  header.writeUInt16LE(2, 4);
  header.writeUInt16LE(4, 6);
  header.writeInt32LE(0, 8);
  header.writeUInt32LE(0, 12);
  header.writeUInt32LE(65535, 16);
  header.writeUInt32LE(LINKTYPE_ETHERNET, 20);
  const records = packets.map((p, i) => {
    const frame = ethernetUdpFrame(p, i + 1);
    const rec = Buffer.alloc(16);
    rec.writeUInt32LE(startSeconds + Math.floor(i / 1000), 0);
    rec.writeUInt32LE((i % 1000) * 1000, 4);
    rec.writeUInt32LE(frame.length, 8);
    rec.writeUInt32LE(frame.length, 12);
    return Buffer.concat([rec, frame]);
  });
  return Buffer.concat([header, ...records]);
}

/** A valid sample value of a field type (small, deterministic). */
export function sampleValue(type: FieldType, seed = 1): unknown {
  switch (type.t) {
    case 'uint':
      return Math.min(type.max ?? 5, 5);
    case 'bool':
      return true;
    case 'tstr':
      return 'demo'.slice(0, type.max);
    case 'bstr': {
      const len = type.min ?? Math.min(4, type.max);
      return Uint8Array.from({ length: len }, (_, i) => (seed + i) & 0xff);
    }
    case 'addr':
      return { ip: '192.0.2.7', port: 40000 + seed };
    case 'array':
      return [sampleValue(type.of, seed)];
    case 'struct':
      return sampleBody(type.fields, seed);
    case 'props':
      return { level: 3, region: 'eu' };
  }
}

/** A body with every field of the schema set to a sample value. */
export function sampleBody(fields: readonly Field[], seed = 1): Record<string, unknown> {
  const body: Record<string, unknown> = {};
  for (const f of fields) body[f.name] = sampleValue(f.type, seed + f.key);
  return body;
}

/** Which default port a message travels to (requests) or from (responses). */
export function portOf(spec: MessageSpec): number {
  switch (spec.service) {
    case 'authd':
      return DEFAULT_PORTS.authd;
    case 'locatord':
      return DEFAULT_PORTS.locatord;
    case 'reflector':
      return DEFAULT_PORTS.reflector;
    case 'matchd':
      return DEFAULT_PORTS.matchd;
    case 'any':
      return DEFAULT_PORTS.locatord;
    case 'peer':
      // Peer channels use whatever ports the terminals have; a devloc port lets the dissector see them.
      return DEFAULT_PORTS.locatord;
  }
}

export const TERMINAL = { ip: '198.51.100.20', port: 51000 };
export const SERVER_IP = '203.0.113.5';

/** One datagram of message `name` (every body field set), in its usual direction. */
export function sampleDatagram(name: MessageName, index: number, port?: number): UdpPacket {
  const spec = Object.values(catalog).find((s) => s.name === name)!;
  const rid = Uint8Array.from({ length: 8 }, (_, i) => (index * 8 + i) & 0xff);
  const auth = spec.auth === 'session' ? { sid: Uint8Array.from({ length: SESSION_ID_BYTES }, (_, i) => 0xa0 + i), seq: index + 1 } : undefined;
  // Bodies are built from the schema; the typed signature cannot follow a runtime name.
  const payload = encodeDatagram(name, rid, sampleBody(spec.fields, index) as never, auth);
  const server = { ip: SERVER_IP, port: port ?? portOf(spec) };
  const toServer = spec.direction === 'terminal->authd' || spec.direction === 'terminal->server';
  return toServer ? { src: TERMINAL, dst: server, payload } : { src: server, dst: TERMINAL, payload };
}
