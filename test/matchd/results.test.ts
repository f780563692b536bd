// Result messages: the largest party's result fits one datagram (and one more member would
// not), the MATCH_CANCEL_ACK extension (members, host) round-trips, the heap orders events.
import t from 'tap';
import { MAX_PARTY_LIMIT } from '../../src/matchd/engine.js';
import { TimerHeap } from '../../src/net/heap.js';
import type { MatchMember } from '../../src/wire/catalog.js';
import { MAX_DATAGRAM } from '../../src/wire/constants.js';
import { decodeDatagram, encodeDatagram } from '../../src/wire/envelope.js';

const worstMembers = (n: number): MatchMember[] =>
  Array.from({ length: n }, (_, i) => ({
    id: Buffer.alloc(16, i), nickname: 'é'.repeat(16), netMode: 5, addr: { ip: `ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff${i % 10}`, port: 65535 }, path: 3,
  }));
const auth = { sid: Buffer.alloc(16, 1), seq: 2 ** 53 - 1 };

t.test('the largest party fits one datagram, one more member would not', async (t) => {
  for (const name of ['MATCH_RESULT', 'MATCH_STATUS_RESULT', 'MATCH_CANCEL_ACK'] as const) {
    const fits = encodeDatagram(name, Buffer.alloc(8), { matchId: Buffer.alloc(8), state: 1, members: worstMembers(MAX_PARTY_LIMIT), host: 15 }, auth);
    t.ok(fits.length <= MAX_DATAGRAM, `${name} with ${MAX_PARTY_LIMIT} members: ${fits.length} B`);
    const over = encodeDatagram(name, Buffer.alloc(8), { matchId: Buffer.alloc(8), state: 1, members: worstMembers(MAX_PARTY_LIMIT + 1), host: 15 }, auth);
    t.ok(over.length > MAX_DATAGRAM, `${MAX_PARTY_LIMIT + 1} members would not fit: ${over.length} B`);
  }
});

t.test('MATCH_CANCEL_ACK carries the party when the cancel lost the race', async (t) => {
  const members = worstMembers(2);
  const d = encodeDatagram('MATCH_CANCEL_ACK', Buffer.alloc(8, 7), { matchId: Buffer.alloc(8, 9), state: 1, members, host: 1 }, auth);
  const r = decodeDatagram(d);
  t.ok(r.ok);
  if (r.ok && r.msg.name === 'MATCH_CANCEL_ACK') {
    t.equal(r.msg.body.state, 1);
    t.same(r.msg.body.members!.map((m) => m.addr), members.map((m) => m.addr));
    t.equal(r.msg.body.host, 1);
  }
  const plain = decodeDatagram(encodeDatagram('MATCH_CANCEL_ACK', Buffer.alloc(8), { matchId: Buffer.alloc(8), state: 3 }, auth));
  t.ok(plain.ok && plain.msg.name === 'MATCH_CANCEL_ACK' && plain.msg.body.members === undefined, 'without a party: as before');
});

t.test('timer heap: time order, ties by submission order, removal', async (t) => {
  const h = new TimerHeap<{ eventAtMs: number; seq: number; heapIndex: number; name: string }>();
  const items = [5, 3, 9, 3, 1, 7, 3].map((at, i) => ({ eventAtMs: at, seq: i, heapIndex: -1, name: `${at}/${i}` }));
  for (const x of items) h.push(x);
  h.remove(items[2]!);
  h.remove(items[2]!);
  t.equal(items[2]!.heapIndex, -1);
  const out: string[] = [];
  for (let x = h.pop(); x; x = h.pop()) out.push(x.name);
  t.same(out, ['1/4', '3/1', '3/3', '3/6', '5/0', '7/5']);
  t.equal(h.size, 0);
});
