// The network-mode decision table (devloc-agent(8), NETWORK MODE) and REFLECT padding.
import t from 'tap';
import type { LocalAddress } from '../../src/agent/interfaces.js';
import type { ReflectAnswer, ReflectorTests } from '../../src/agent/netmode.js';
import { decideNetMode, encodeReflect, MAX_REFLECT_RESULT } from '../../src/agent/netmode.js';
import { NetMode } from '../../src/wire/constants.js';
import { decodeDatagram, encodeDatagram } from '../../src/wire/envelope.js';

const local: LocalAddress[] = [
  { ip: '127.0.0.1', family: 'IPv4', internal: true, linkLocal: false },
  { ip: '10.0.0.5', family: 'IPv4', internal: false, linkLocal: false },
];
const ans = (ip: string, port: number, extra: Partial<ReflectAnswer> = {}): ReflectAnswer => ({
  observed: { ip, port }, source: { ip: '198.51.100.1', port: 4702 }, otherPort: 4704, ...extra,
});

t.test('decision table', async (t) => {
  const cases: [string, ReflectorTests, NetMode][] = [
    ['no answer', { t1: null }, NetMode.UDP_BLOCKED],
    ['observed is local', { t1: ans('10.0.0.5', 5000) }, NetMode.OPEN],
    ['no alternate port', { t1: ans('203.0.113.9', 5000, { otherPort: undefined as unknown as number }) }, NetMode.UNKNOWN],
    ['alternate port silent', { t1: ans('203.0.113.9', 5000), f2: false, m1: null }, NetMode.UNKNOWN],
    ['mapping differs by port', { t1: ans('203.0.113.9', 5000), f2: false, m1: ans('203.0.113.9', 5001) }, NetMode.SYMMETRIC],
    ['mapping differs by address', { t1: ans('203.0.113.9', 5000), f1: false, f2: false, m1: ans('203.0.113.9', 5000), m2: ans('203.0.113.9', 6000) }, NetMode.SYMMETRIC],
    ['change-address answer arrives', { t1: ans('203.0.113.9', 5000), f1: true, f2: true, m1: ans('203.0.113.9', 5000), m2: ans('203.0.113.9', 5000) }, NetMode.FULL_CONE],
    ['change-port only, alt address known', { t1: ans('203.0.113.9', 5000), f1: false, f2: true, m1: ans('203.0.113.9', 5000) }, NetMode.RESTRICTED],
    ['change-port, no alt address', { t1: ans('203.0.113.9', 5000), f2: true, m1: ans('203.0.113.9', 5000) }, NetMode.RESTRICTED],
    ['nothing from elsewhere', { t1: ans('203.0.113.9', 5000), f2: false, m1: ans('203.0.113.9', 5000) }, NetMode.PORT_RESTRICTED],
    ['port-preserving symmetric beats filtering', { t1: ans('203.0.113.9', 5000), f1: true, f2: true, m1: ans('203.0.113.9', 7000) }, NetMode.SYMMETRIC],
  ];
  for (const [name, tests, mode] of cases) {
    const c = decideNetMode(tests, local);
    t.equal(c.mode, mode, `${name}: ${c.reason}`);
  }
});

t.test('REFLECT is padded to at least the largest answer, and decodes', async (t) => {
  const rid = Buffer.alloc(8, 7);
  const biggest = encodeDatagram('REFLECT_RESULT', rid, {
    observed: { ip: '2001:db8:ffff:ffff:ffff:ffff:ffff:ffff', port: 65535 }, from: { ip: '2001:db8:ffff:ffff:ffff:ffff:ffff:fffe', port: 65535 },
    otherPort: 65535, otherIp: Buffer.alloc(16, 0xee),
  });
  t.ok(MAX_REFLECT_RESULT >= biggest.length, `bound ${MAX_REFLECT_RESULT} >= ${biggest.length}`);
  for (const change of [0, 1, 2, 3]) {
    const r = encodeReflect(rid, change);
    t.ok(r.length >= MAX_REFLECT_RESULT, `change=${change}: ${r.length} B`);
    t.ok(r.length <= MAX_REFLECT_RESULT + 2, 'not much larger than needed');
    const d = decodeDatagram(r);
    t.ok(d.ok && d.msg.name === 'REFLECT' && (d.msg.body.change ?? 0) === change);
  }
  t.ok(encodeReflect(rid, 0, 300).length >= 300, 'any minimum');
});
