// devloc decode --pcap: the classic-pcap reader (src/cli/pcap.ts) on every link type, byte
// order and timestamp precision it claims, its refusals of damaged input, and the command on
// captures built here (Ethernet + IPv4, Linux SLL2 + IPv6), cross-checked with Wireshark's
// text2pcap and tshark when they are installed.
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import type { FrameToWrite } from '../../src/cli/pcap.js';
import { buildUdpPacket, formatPcapTime, frameFor, LinkType, parsePcap, writePcap } from '../../src/cli/pcap.js';
import { needs } from '../ops/tools.js';
import { devloc, jsonLines, scratch, vector, vectors } from './fixtures/cli.js';

const v = vectors();
const REGISTER = Buffer.from(vector(v, 'REGISTER').hex, 'hex');
const REGISTER_ACK = Buffer.from(vector(v, 'REGISTER_ACK').hex, 'hex');
const QUERY_ADDR = Buffer.from(vector(v, 'QUERY_ADDR').hex, 'hex');
const QUERY_ADDR_RESULT = Buffer.from(vector(v, 'QUERY_ADDR_RESULT').hex, 'hex');
const REFLECT = Buffer.from(vector(v, 'REFLECT').hex, 'hex');

const term4 = { ip: '198.51.100.7', port: 50123 };
const loc4 = { ip: '198.51.100.10', port: 4701 };
const term6 = { ip: '2001:db8::7', port: 50123 };
const loc6 = { ip: '2001:db8::10', port: 4701 };

t.test('reader: every link type, both byte orders, µs and ns', async (t) => {
  const links = [LinkType.NULL, LinkType.ETHERNET, LinkType.RAW, LinkType.LINUX_SLL, LinkType.LINUX_SLL2];
  for (const link of links) {
    for (const littleEndian of [true, false]) {
      for (const nanoseconds of [false, true]) {
        const frames: FrameToWrite[] = [
          { seconds: 1767225600, fraction: 123, frame: frameFor(link, buildUdpPacket(term4, loc4, REGISTER)) },
          { seconds: 1767225601, fraction: 7, frame: frameFor(link, buildUdpPacket(loc6, term6, REGISTER_ACK)) },
        ];
        const p = parsePcap(writePcap(link, frames, { littleEndian, nanoseconds }));
        const what = `link ${link} ${littleEndian ? 'LE' : 'BE'} ${nanoseconds ? 'ns' : 'µs'}`;
        if (!t.ok(p.ok, what) || !p.ok) continue;
        t.equal(p.header.linkType, link, `${what}: link type`);
        t.equal(p.header.nanoseconds, nanoseconds, `${what}: precision`);
        t.notOk(p.error, `${what}: no error`);
        t.same(p.records.map((r) => [r.index, r.seconds, r.fraction]), [[1, 1767225600, 123], [2, 1767225601, 7]], `${what}: records`);
        t.same(p.records[0]!.udp, { src: term4, dst: loc4, payload: REGISTER }, `${what}: IPv4 UDP`);
        t.same(p.records[1]!.udp, { src: loc6, dst: term6, payload: REGISTER_ACK }, `${what}: IPv6 UDP`);
      }
    }
  }
  t.equal(formatPcapTime(1767225600, 123, false), '2026-01-01T00:00:00.000123Z');
  t.equal(formatPcapTime(1767225600, 123, true), '2026-01-01T00:00:00.000000123Z');
});

t.test('reader: VLAN tags, IPv6 extension headers, non-UDP, fragments, cut payloads', async (t) => {
  const eth = frameFor(LinkType.ETHERNET, buildUdpPacket(term4, loc4, REFLECT));
  // 802.1Q tag between the MAC addresses and the ethertype.
  const tagged = Buffer.concat([eth.subarray(0, 12), Buffer.from('81000064', 'hex'), eth.subarray(12)]);
  // An IPv6 hop-by-hop header (8 bytes of padding options) before UDP.
  const ip6 = buildUdpPacket(term6, loc6, REFLECT);
  const hbh = Buffer.concat([ip6.subarray(0, 40), Buffer.from([17, 0, 1, 4, 0, 0, 0, 0]), ip6.subarray(40)]);
  hbh[6] = 0;
  hbh.writeUInt16BE(ip6.length - 40 + 8, 4);
  // TCP, an IPv4 fragment, ARP, and a capture cut short by the snaplen.
  const tcp = buildUdpPacket(term4, loc4, REFLECT);
  tcp[9] = 6;
  const frag = buildUdpPacket(term4, loc4, REFLECT);
  frag.writeUInt16BE(0x2000, 6);
  const arp = Buffer.concat([eth.subarray(0, 12), Buffer.from('0806', 'hex'), Buffer.alloc(28)]);
  const full = frameFor(LinkType.ETHERNET, buildUdpPacket(term4, loc4, REGISTER));
  const frames: FrameToWrite[] = [tagged, frameFor(LinkType.ETHERNET, hbh), frameFor(LinkType.ETHERNET, tcp), frameFor(LinkType.ETHERNET, frag), arp]
    .map((frame, i) => ({ seconds: 1, fraction: i, frame }));
  frames.push({ seconds: 2, fraction: 0, frame: full.subarray(0, 100), originalLength: full.length });
  const p = parsePcap(writePcap(LinkType.ETHERNET, frames));
  if (!p.ok) throw new Error(p.error);
  const u = p.records.map((r) => r.udp);
  t.same(u[0], { src: term4, dst: loc4, payload: REFLECT }, 'through an 802.1Q tag');
  t.same(u[1], { src: term6, dst: loc6, payload: REFLECT }, 'past a hop-by-hop header');
  t.same(u[2], { skip: 'not UDP (IP protocol 6)' });
  t.match(u[3], { skip: /IPv4 fragment 198\.51\.100\.7 -> 198\.51\.100\.10/ });
  t.same(u[4], { skip: 'not IP (ethertype 0x0806)' });
  t.match(u[5], { skip: new RegExp(`payload truncated \\(58 of ${REGISTER.length} bytes captured\\)`) });
});

t.test('reader: damaged files are refused or cut, never thrown', async (t) => {
  const good = writePcap(LinkType.RAW, [
    { seconds: 1, fraction: 0, frame: buildUdpPacket(term4, loc4, REFLECT) },
    { seconds: 2, fraction: 0, frame: buildUdpPacket(term4, loc4, REFLECT) },
  ]);
  t.match(parsePcap(Buffer.alloc(10)), { ok: false, error: /shorter than the 24-byte header/ });
  t.match(parsePcap(Buffer.alloc(24)), { ok: false, error: /not a pcap file \(magic 00000000\)/ });
  t.match(parsePcap(Buffer.concat([Buffer.from('0a0d0d0a', 'hex'), Buffer.alloc(40)])), { ok: false, error: /pcapng is not supported/ });
  const cut = parsePcap(good.subarray(0, good.length - 10));
  t.ok(cut.ok && cut.records.length === 1 && /packet 2: captured length \d+ runs past the end/.test(cut.error ?? ''), 'a cut file keeps the packets before the cut');
  const header = parsePcap(good.subarray(0, 24 + 16 + 20 + 8 + REFLECT.length + 5));
  t.ok(header.ok && header.records.length === 1 && /truncated record header/.test(header.error ?? ''), 'a cut record header');
  const badFraction = Buffer.from(good);
  badFraction.writeUInt32LE(1_000_000, 24 + 4);
  t.match(parsePcap(badFraction), { ok: true, records: [], error: /fraction 1000000 out of range/ });
  // Random bytes after a valid header: no exception, whatever comes out.
  for (let i = 0; i < 200; i++) {
    const junk = Buffer.concat([good.subarray(0, 24), Buffer.from(Array.from({ length: 64 + i }, (_, j) => (j * 7919 + i * 31) & 0xff))]);
    for (const link of [0, 1, 101, 113, 276, 42]) junk.writeUInt32LE(link, 20), parsePcap(junk);
  }
  t.pass('no throw on junk');
});

t.test('decode --pcap: Ethernet + IPv4, text output with addresses and times', async (t) => {
  const dir = scratch(t);
  const dns = { ip: '198.51.100.53', port: 53 };
  const file = path.join(dir, 'eth4.pcap');
  const eth = (src: typeof term4, dst: typeof term4, payload: Buffer): Buffer => frameFor(LinkType.ETHERNET, buildUdpPacket(src, dst, payload));
  writeFileSync(file, writePcap(LinkType.ETHERNET, [
    { seconds: 1767225600, fraction: 100, frame: eth(term4, loc4, REGISTER) },
    { seconds: 1767225600, fraction: 2600, frame: eth(term4, dns, Buffer.from('not devloc')) },
    { seconds: 1767225600, fraction: 1600, frame: eth(loc4, term4, REGISTER_ACK) },
    { seconds: 1767225601, fraction: 0, frame: eth(term4, { ip: '198.51.100.10', port: 4702 }, REFLECT) },
  ]));
  const r = devloc(['decode', '--pcap', file]);
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, new RegExp(`#1 {2}packet 1 {2}2026-01-01T00:00:00\\.000100Z {2}198\\.51\\.100\\.7:50123 -> 198\\.51\\.100\\.10:4701 {2}${REGISTER.length} B\\n {2}REGISTER \\(0x10\\)`));
  t.match(r.stdout, new RegExp(`#2 {2}packet 3 {2}2026-01-01T00:00:00\\.001600Z {2}198\\.51\\.100\\.10:4701 -> 198\\.51\\.100\\.7:50123 {2}${REGISTER_ACK.length} B\\n {2}REGISTER_ACK`));
  t.match(r.stdout, /answers #1 REGISTER \(1\.5 ms later\)/);
  t.match(r.stdout, new RegExp(`#3 {2}packet 4 .* -> 198\\.51\\.100\\.10:4702 {2}${REFLECT.length} B\\n {2}REFLECT \\(0x50\\)`));
  t.notMatch(r.stdout, /not devloc|:53/, 'the DNS packet is not decoded');
  t.match(r.stdout, /eth4\.pcap: 4 packets, 3 devloc datagrams, 1 other packets \(ports 4700, 4701, 4702, 4703; --port adds more\)/);
});

t.test('decode --pcap: Linux SLL2 + IPv6, big-endian, nanoseconds, --json, --port', async (t) => {
  const dir = scratch(t);
  const file = path.join(dir, 'sll2.pcap');
  const odd = { ip: '2001:db8::99', port: 9999 };
  const sll2 = (src: typeof term6, dst: typeof term6, payload: Buffer): Buffer => frameFor(LinkType.LINUX_SLL2, buildUdpPacket(src, dst, payload));
  writeFileSync(file, writePcap(LinkType.LINUX_SLL2, [
    { seconds: 1767225600, fraction: 5, frame: sll2(term6, loc6, QUERY_ADDR) },
    { seconds: 1767225600, fraction: 250_000_005, frame: sll2(loc6, term6, QUERY_ADDR_RESULT) },
    { seconds: 1767225602, fraction: 0, frame: sll2(term6, odd, REFLECT) },
  ], { littleEndian: false, nanoseconds: true }));
  let r = devloc(['decode', '--json', '--pcap', file]);
  t.equal(r.status, 0, r.stderr);
  let out = jsonLines(r.stdout);
  t.equal(out.length, 2, 'port 9999 is not a devloc port');
  t.match(out[0], { packet: 1, time: '2026-01-01T00:00:00.000000005Z', src: '[2001:db8::7]:50123', dst: '[2001:db8::10]:4701', name: 'QUERY_ADDR', ok: true });
  t.match(out[1], { packet: 2, time: '2026-01-01T00:00:00.250000005Z', src: '[2001:db8::10]:4701', dst: '[2001:db8::7]:50123', name: 'QUERY_ADDR_RESULT', answers: { index: 1, name: 'QUERY_ADDR', afterMs: 250 } });
  t.same(out[1]!['body'], vector(v, 'QUERY_ADDR_RESULT').meaning.body, 'body as in the vector');
  t.match(r.stderr, /3 packets, 2 devloc datagrams, 1 other packets/, 'the summary goes to stderr with --json');

  r = devloc(['decode', '--json', '--pcap', file, '--port', '9999']);
  out = jsonLines(r.stdout);
  t.equal(out.length, 3, '--port adds a port');
  t.match(out[2], { packet: 3, dst: '[2001:db8::99]:9999', name: 'REFLECT' });
  t.equal(jsonLines(devloc(['decode', '--json', '--any-port', '--pcap', file]).stdout).length, 3, '--any-port');
});

t.test('decode --pcap: fragments are reported; damaged files exit 1', async (t) => {
  const dir = scratch(t);
  const frag = buildUdpPacket(term4, loc4, REFLECT);
  frag.writeUInt16BE(0x2000, 6);
  const file = path.join(dir, 'frag.pcap');
  const good = writePcap(LinkType.RAW, [
    { seconds: 10, fraction: 0, frame: frag },
    { seconds: 11, fraction: 0, frame: buildUdpPacket(term4, loc4, REFLECT) },
  ]);
  writeFileSync(file, good);
  let r = devloc(['decode', '--pcap', file]);
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /packet 1 {2}1970-01-01T00:00:10\.000000Z {2}skipped: IPv4 fragment 198\.51\.100\.7 -> 198\.51\.100\.10 \(not reassembled\)/);
  t.match(r.stdout, /2 packets, 1 devloc datagrams, 1 fragments or truncated, 0 other packets/);

  const cut = path.join(dir, 'cut.pcap');
  writeFileSync(cut, good.subarray(0, good.length - 3));
  r = devloc(['decode', '--pcap', cut]);
  t.equal(r.status, 1, 'a cut file: exit 1');
  t.match(r.stderr, /cut\.pcap: packet 2: captured length \d+ runs past the end of the file/);
  t.match(r.stdout, /packet 1 .*skipped/, 'what came before the cut is shown');

  const ng = path.join(dir, 'capture.pcapng');
  writeFileSync(ng, Buffer.concat([Buffer.from('0a0d0d0a', 'hex'), Buffer.alloc(60)]));
  r = devloc(['decode', '--pcap', ng]);
  t.equal(r.status, 1);
  t.match(r.stderr, /pcapng is not supported: convert with "editcap -F pcap/);
  r = devloc(['decode', '--pcap', path.join(dir, 'missing.pcap')]);
  t.equal(r.status, 1);
  t.match(r.stderr, /cannot read capture .*missing\.pcap: ENOENT/);
});

const has = (tool: string): boolean => !spawnSync(tool, ['-v'], { encoding: 'utf8' }).error;

t.test('cross-check with Wireshark: text2pcap captures decode, tshark reads ours', needs('text2pcap and tshark', has('text2pcap') && has('tshark')), async (t) => {
  const dir = scratch(t);
  const hexdump = path.join(dir, 'payload.txt');
  const lines: string[] = [];
  for (let i = 0; i < QUERY_ADDR.length; i += 16) lines.push(`${i.toString(16).padStart(6, '0')} ${[...QUERY_ADDR.subarray(i, i + 16)].map((b) => b.toString(16).padStart(2, '0')).join(' ')}`);
  writeFileSync(hexdump, lines.join('\n') + '\n');
  for (const [flag, ips, src] of [['-4', '192.0.2.7,198.51.100.10', '192.0.2.7:50123'], ['-6', '2001:db8::7,2001:db8::10', '[2001:db8::7]:50123']] as const) {
    const out = path.join(dir, `t2p${flag}.pcap`);
    const g = spawnSync('text2pcap', ['-F', 'pcap', flag, ips, '-u', '50123,4701', hexdump, out], { encoding: 'utf8' });
    t.equal(g.status, 0, `text2pcap ${flag}: ${g.stderr}`);
    const o = jsonLines(devloc(['decode', '--json', '--pcap', out]).stdout);
    t.match(o, [{ src, name: 'QUERY_ADDR', ok: true }], `text2pcap ${flag} capture decodes`);
  }

  // And the other way: tshark reads what writePcap writes (SLL2, big-endian, nanoseconds).
  const ours = path.join(dir, 'ours.pcap');
  writeFileSync(ours, writePcap(LinkType.LINUX_SLL2, [
    { seconds: 1767225600, fraction: 123456789, frame: frameFor(LinkType.LINUX_SLL2, buildUdpPacket(term6, loc6, QUERY_ADDR)) },
  ], { littleEndian: false, nanoseconds: true }));
  const ts = spawnSync('tshark', ['-r', ours, '-T', 'fields', '-e', 'frame.time_epoch', '-e', 'ipv6.src', '-e', 'udp.dstport', '-e', 'udp.length', '-e', 'udp.checksum.status'], {
    encoding: 'utf8', env: { ...process.env, HOME: dir },
  });
  t.equal(ts.status, 0, ts.stderr);
  t.match(ts.stdout.trim(), new RegExp(`^1767225600\\.123456789\\s+2001:db8::7\\s+4701\\s+${QUERY_ADDR.length + 8}`), 'tshark sees the same packet');
});
