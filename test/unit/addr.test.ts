// Addresses on the wire: text IP <-> 4/16 bytes, RFC 5952 output, "ip:port" parsing. The WHATWG
// URL host serializer (node's URL) is the independent reference for IPv6 text: it compresses
// the first longest run of two or more zero groups and prints lowercase hex without leading
// zeros, as RFC 5952 §4 does.
import { isIPv4, isIPv6 } from 'node:net';
import fc from 'fast-check';
import t from 'tap';
import { bytesToIp, formatAddress, ipToBytes, normaliseIp, parseAddress } from '../../src/wire/addr.js';

const hex = (b: Uint8Array | null): string | null => (b ? Buffer.from(b).toString('hex') : null);
const whatwg = (v6: string): string => new URL(`http://[${v6}]/`).hostname.slice(1, -1);

t.test('IPv4 text to bytes', async (t) => {
  const good: [string, string][] = [
    ['0.0.0.0', '00000000'], ['255.255.255.255', 'ffffffff'], ['192.168.1.20', 'c0a80114'], ['10.0.0.1', '0a000001'], ['1.2.3.4', '01020304'],
  ];
  for (const [text, bytes] of good) {
    t.equal(hex(ipToBytes(text)), bytes, text);
    t.equal(bytesToIp(Buffer.from(bytes, 'hex')), text, `${text} back`);
  }
  for (const bad of ['256.0.0.1', '1.2.3', '1.2.3.4.5', '01.2.3.4', '1.2.3.04', '00.0.0.0', '1.2.3.-4', '', ' 1.2.3.4', '1.2.3.4 ', '0x1.2.3.4', '1..2.3', '1.2.3.4.', '1e2.0.0.0', '1.2.3.256', '١.٢.٣.٤']) {
    t.equal(ipToBytes(bad), null, `refused: ${JSON.stringify(bad)}`);
  }
});

t.test('IPv6 text to bytes', async (t) => {
  const good: [string, string][] = [
    ['::', '00'.repeat(16)],
    ['::1', `${'00'.repeat(15)}01`],
    ['1::', `0001${'00'.repeat(14)}`],
    ['2001:db8::1', `20010db8${'00'.repeat(10)}0001`],
    ['2001:DB8::1', `20010db8${'00'.repeat(10)}0001`],
    ['1:2:3:4:5:6:7:8', '00010002000300040005000600070008'],
    ['1:2:3:4:5:6:7::', '00010002000300040005000600070000'],
    ['::2:3:4:5:6:7:8', '00000002000300040005000600070008'],
    ['fe80::1:2', `fe80${'00'.repeat(10)}00010002`],
    ['0000:0000:0000:0000:0000:0000:0000:0001', `${'00'.repeat(15)}01`],
    ['::1.2.3.4', `${'00'.repeat(12)}01020304`],
    ['64:ff9b::192.0.2.33', `0064ff9b${'00'.repeat(8)}c0000221`],
    ['1:2:3:4:5:6:1.2.3.4', '0001000200030004000500060102030' + '4'],
  ];
  for (const [text, bytes] of good) t.equal(hex(ipToBytes(text)), bytes, text);
  // IPv4-mapped addresses travel as 4 bytes (what node:dgram reports on dual-stack sockets).
  t.equal(hex(ipToBytes('::ffff:192.0.2.1')), 'c0000201', '::ffff:192.0.2.1 -> 4 bytes');
  t.equal(hex(ipToBytes('::ffff:c000:201')), 'c0000201', '::ffff:c000:201 -> 4 bytes');
  t.equal(hex(ipToBytes('::fffe:192.0.2.1')), `${'00'.repeat(10)}fffec0000201`, 'not mapped: stays 16');
  for (const bad of [
    ':::', '1:::2', '1::2::3', '12345::', 'g::', '1:2:3:4:5:6:7:8:9', '1:2:3:4:5:6::7:8', '1:2:3:4:5:6:7', ':1::', '1:', '::1:', ':',
    'fe80::1%eth0', '[::1]', '::1.2.3', '::1.2.3.4.5', '::256.1.1.1', '1:2:3:4:5:6:7:1.2.3.4', '::1.2.3.4:5', ' ::1', '::-1', '0x1::',
  ]) {
    t.equal(ipToBytes(bad), null, `refused: ${JSON.stringify(bad)}`);
  }
});

t.test('bytes to IPv6 text: RFC 5952', async (t) => {
  const cases: [string, string][] = [
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], // two runs of two: the first is compressed
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // a single zero group is not compressed
    ['2001:0db8:0000:0000:0000:0000:0000:0001', '2001:db8::1'], // leading zeros dropped
    ['2001:DB8::ABCD', '2001:db8::abcd'], // lowercase
    ['1:0:0:2:0:0:0:3', '1:0:0:2::3'], // the longest run wins
    ['0:0:0:0:0:0:0:1', '::1'],
    ['0:0:0:0:0:0:0:0', '::'],
    ['1:0:0:0:0:0:0:0', '1::'],
    ['0:0:1:0:0:0:0:0', '0:0:1::'],
    ['1:0:1:0:1:0:1:0', '1:0:1:0:1:0:1:0'],
  ];
  for (const [input, want] of cases) {
    t.equal(bytesToIp(ipToBytes(input)!), want, input);
    t.equal(whatwg(input), want, `${input}: the WHATWG serializer agrees`);
  }
  t.equal(bytesToIp(new Uint8Array(5)), null, '5 bytes');
  t.equal(bytesToIp(new Uint8Array(0)), null, '0 bytes');
  t.equal(bytesToIp(new Uint8Array(15)), null, '15 bytes');
});

t.test('random IPs: bytes -> text -> bytes, canonical text', async (t) => {
  // Bias towards zero groups so that compression is exercised.
  const group = fc.oneof(fc.constant(0), fc.constant(0), fc.integer({ min: 0, max: 0xffff }));
  fc.assert(
    fc.property(fc.array(group, { minLength: 8, maxLength: 8 }), (groups) => {
      const b = Buffer.alloc(16);
      groups.forEach((g, i) => b.writeUInt16BE(g, 2 * i));
      const text = bytesToIp(b)!;
      const back = ipToBytes(text)!;
      const mapped = b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff;
      return isIPv6(text) && whatwg(text) === text && hex(back) === (mapped ? hex(b.subarray(12)) : hex(b));
    }),
    { seed: 5952, numRuns: 2000 },
  );
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 4, maxLength: 4 }), (b) => {
      const text = bytesToIp(b)!;
      return isIPv4(text) && hex(ipToBytes(text)) === hex(b);
    }),
    { seed: 791, numRuns: 500 },
  );
  t.pass();
});

t.test('parseAddress / formatAddress', async (t) => {
  t.same(parseAddress('1.2.3.4:80'), { ip: '1.2.3.4', port: 80 });
  t.same(parseAddress('[2001:db8::1]:443'), { ip: '2001:db8::1', port: 443 });
  t.same(parseAddress('[2001:DB8:0:0::1]:443'), { ip: '2001:db8::1', port: 443 }, 'canonicalised');
  t.same(parseAddress('[::ffff:1.2.3.4]:5'), { ip: '1.2.3.4', port: 5 }, 'mapped becomes IPv4');
  t.same(parseAddress('1.2.3.4:65535'), { ip: '1.2.3.4', port: 65535 });
  for (const bad of ['1.2.3.4', '1.2.3.4:65536', '1.2.3.4:99999', '2001:db8::1:80', 'localhost:80', ':80', '1.2.3.4:', '1.2.3.4:-1', '[::1]', '[::1]:', '[::1]:123456', '1.2.3.4:80x', '[fe80::1%eth0]:80', '']) {
    t.equal(parseAddress(bad), null, `refused: ${JSON.stringify(bad)}`);
  }
  t.equal(formatAddress({ ip: '1.2.3.4', port: 80 }), '1.2.3.4:80');
  t.equal(formatAddress({ ip: '::1', port: 5 }), '[::1]:5');
  fc.assert(
    fc.property(fc.oneof(fc.uint8Array({ minLength: 4, maxLength: 4 }), fc.uint8Array({ minLength: 16, maxLength: 16 })), fc.integer({ min: 0, max: 65535 }), (b, port) => {
      const a = { ip: normaliseIp(bytesToIp(b)!), port };
      const p = parseAddress(formatAddress(a));
      return p !== null && p.ip === a.ip && p.port === port;
    }),
    { seed: 3986, numRuns: 500 },
  );
});

t.test('normaliseIp', async (t) => {
  t.equal(normaliseIp('::ffff:10.0.0.1'), '10.0.0.1', 'dual-stack mapped address');
  t.equal(normaliseIp('2001:DB8:0::1'), '2001:db8::1');
  t.equal(normaliseIp('10.0.0.1'), '10.0.0.1');
  t.equal(normaliseIp('not-an-ip'), 'not-an-ip', 'unparseable text unchanged');
});
