// Address validation of session messages (net/routability.ts, devloc-protocol(7) ADDRESS
// VALIDATION) through DatagramServer, on a fake clock: a session opened from the address its
// ticket names needs no challenge; elsewhere an answer larger than the request becomes one small
// MACed ADDR_CHALLENGE, whose token, echoed from that address within two 30-s slots, validates
// it; the challenged datagram is then executable again (its number not spent, here or in a
// shared window).
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { AddressValidation, shareValidations, TOKEN_SLOT_MS } from '../../src/net/routability.js';
import { nextTurns, workerPipe } from '../helpers/worker-pipe.js';
import { HeldSession, MAX_VALIDATED_PER_SESSION, newServerSession, ServerSessions } from '../../src/net/sessions.js';
import type { ServerSession } from '../../src/net/sessions.js';
import { TicketVerifier } from '../../src/wire/ticket.js';
import type { SessionSlots } from '../../src/net/sessions.js';
import type { Handlers } from '../../src/net/server.js';
import { encodeDatagram } from '../../src/wire/envelope.js';
import { ErrorCode } from '../../src/wire/errors.js';
import { rawKey } from '../../src/wire/session.js';
import { encodeClaims, parseClaims } from '../../src/wire/ticket-parse.js';
import { encodeCbor } from '../../src/wire/cbor.js';
import { A, B, decoded, harness, rid, sessionWorld } from './fixtures/net.js';

const handlers = (calls: { n: number }): Handlers => ({
  REGISTER: (ctx) => ctx.reply('REGISTER_ACK', { observed: ctx.from, ttlS: 90, refreshS: 25, locatorId: ctx.session!.locatorId }),
  REFRESH: (ctx) => {
    calls.n++;
    return ctx.reply('REFRESH_ACK', { observed: ctx.from, ttlS: 90, refreshS: 25, locatorId: ctx.session!.locatorId });
  },
});

t.test('the ticket addr claim: encoded, parsed, and a malformed one refused', async (t) => {
  const base = { locatorId: Buffer.alloc(16, 1), aud: 'locator', iat: 1, exp: 2, cti: Buffer.alloc(16, 2), cnf: Buffer.alloc(32, 3) };
  const c = parseClaims(encodeClaims({ ...base, addr: { ip: '2001:db8::7', port: 4800 } }));
  t.same(typeof c !== 'string' && c.addr, { ip: '2001:db8::7', port: 4800 });
  const none = parseClaims(encodeClaims(base));
  t.equal(typeof none !== 'string' && none.addr, undefined, 'optional');
  const m = new Map<number, unknown>([...(parseCbor(encodeClaims(base)))]);
  m.set(-65537, [Buffer.alloc(5), 1]);
  t.equal(parseClaims(encodeCbor(m as never)), 'addr must be [ip, port]');
});

function parseCbor(b: Buffer): Map<number, unknown> {
  // The claims map back, to alter one entry.
  const c = parseClaims(b);
  if (typeof c === 'string') throw new Error(c);
  return new Map<number, unknown>([[1, c.iss], [2, c.locatorId.toString('hex')], [3, c.aud], [4, c.exp], [6, c.iat], [7, c.cti], [8, new Map([[1, new Map<number, unknown>([[1, 1], [-1, 4], [-2, c.cnf]])]])]]);
}

t.test('opened from the address the ticket names: no challenge, answers as before', async (t) => {
  const w = sessionWorld(undefined, { ticketAddr: A });
  const calls = { n: 0 };
  const h = harness({ handlers: handlers(calls), sessions: w.sessions, clock: w.clock, addressValidation: new AddressValidation({ now: () => w.clock.ms }) });
  const cs = w.client();
  await h.server.receive(cs.encode('REGISTER', rid(1), { ticket: w.ticket, timeMs: w.clock.ms }), A);
  await h.server.receive(cs.encode('REFRESH', rid(2), {}), A);
  t.same(h.socket.sent.map((s) => decoded(s.bytes).name), ['REGISTER_ACK', 'REFRESH_ACK']);
  t.equal(h.metrics.get('addr_challenges_total'), 0);
});

t.test('elsewhere: one small challenge instead of a larger answer; its proof validates; the same datagram then executes', async (t) => {
  const released: number[] = [];
  const w = sessionWorld(undefined, {
    ticketAddr: A,
    sharedWindow: { claim: () => Promise.resolve('ok'), release: (_s, seq) => (released.push(seq), Promise.resolve()) },
  });
  const calls = { n: 0 };
  const h = harness({ handlers: handlers(calls), sessions: w.sessions, clock: w.clock, addressValidation: new AddressValidation({ now: () => w.clock.ms }) });
  const cs = w.client();
  await h.server.receive(cs.encode('REGISTER', rid(1), { ticket: w.ticket, timeMs: w.clock.ms }), A);
  // The same session from B (a NAT rebinding, or a forged source).
  const refresh = cs.encode('REFRESH', rid(2), {});
  await h.server.receive(refresh, B);
  const ch = h.socket.sent[1]!;
  const m = decoded(ch.bytes);
  t.equal(m.name, 'ADDR_CHALLENGE');
  t.same({ ip: ch.ip, port: ch.port }, B);
  // One small datagram: 67 B, more than this 49-B REFRESH (the smallest session request), and
  // never more than one per 500 ms for the session and address.
  t.ok(ch.bytes.length <= 67, `${ch.bytes.length} B for ${refresh.length} B`);
  t.ok(m.auth && cs.accept({ msg: m, raw: ch.bytes, from: B }), 'MACed in the session');
  t.equal(calls.n, 1, 'executed (a query-like answer), the answer withheld');
  t.equal(released.length, 1, 'the shared window got the number back');
  // Within 500 ms another request from B gets nothing at all.
  await h.server.receive(cs.encode('REFRESH', rid(3), {}), B);
  t.equal(h.socket.sent.length, 2, 'at most one challenge per 500 ms');
  // The token from another address, or after two slots, validates nothing.
  const token = m.name === 'ADDR_CHALLENGE' ? m.body.token : Buffer.alloc(16);
  const proof = encodeDatagram('ADDR_PROOF', rid(4), { sid: w.cti, token });
  await h.server.receive(proof, { ip: B.ip, port: B.port + 1 });
  t.equal(h.metrics.get('addr_proofs_total', { result: 'bad' }), 1, 'wrong address');
  // From B, in the next slot: accepted, never answered.
  w.clock.ms += TOKEN_SLOT_MS;
  await h.server.receive(proof, B);
  t.equal(h.metrics.get('addr_proofs_total', { result: 'ok' }), 1);
  t.equal(h.socket.sent.length, 2, 'ADDR_PROOF is never answered');
  // The challenged datagram, sent again: executed and answered.
  await h.server.receive(refresh, B);
  t.equal(decoded(h.socket.sent[2]!.bytes).name, 'REFRESH_ACK');
  // A proof two slots late is refused.
  const w2 = sessionWorld(undefined, { ticketAddr: A });
  const h2 = harness({ handlers: handlers(calls), sessions: w2.sessions, clock: w2.clock, addressValidation: new AddressValidation({ now: () => w2.clock.ms }) });
  const cs2 = w2.client();
  await h2.server.receive(cs2.encode('REGISTER', rid(1), { ticket: w2.ticket, timeMs: w2.clock.ms }), A);
  await h2.server.receive(cs2.encode('REFRESH', rid(2), {}), B);
  const m2 = decoded(h2.socket.sent[1]!.bytes);
  w2.clock.ms += 2 * TOKEN_SLOT_MS;
  await h2.server.receive(encodeDatagram('ADDR_PROOF', rid(5), { sid: w2.cti, token: m2.name === 'ADDR_CHALLENGE' ? m2.body.token : Buffer.alloc(16) }), B);
  t.equal(h2.metrics.get('addr_proofs_total', { result: 'bad' }), 1, 'expired token');
});

t.test('elsewhere: a refusal by the handler larger than the request is a challenge too; one that fits is sent MACed', async (t) => {
  const w = sessionWorld(undefined, { ticketAddr: A });
  const calls = { n: 0 };
  // QUERY_STATUS refused with a long message (a MACed ERROR larger than the request), GROUP_LEAVE with none (smaller).
  const refusing: Handlers = {
    ...handlers(calls),
    QUERY_STATUS: () => ({ error: ErrorCode.NOT_FOUND, message: 'not registered: send REGISTER, then ask again about these IDs' }),
    GROUP_LEAVE: () => ({ error: ErrorCode.FORBIDDEN }),
  };
  const h = harness({ handlers: refusing, sessions: w.sessions, clock: w.clock, addressValidation: new AddressValidation({ now: () => w.clock.ms }) });
  const cs = w.client();
  await h.server.receive(cs.encode('REGISTER', rid(1), { ticket: w.ticket, timeMs: w.clock.ms }), A);
  const query = cs.encode('QUERY_STATUS', rid(2), { ids: [Buffer.alloc(16, 9)] });
  await h.server.receive(query, B);
  const ch = h.socket.sent[1]!;
  t.equal(decoded(ch.bytes).name, 'ADDR_CHALLENGE', 'the refusal is withheld: a challenge instead');
  t.same({ ip: ch.ip, port: ch.port }, B);
  t.ok(h.socket.sent.every((x) => x.ip !== B.ip || x.port !== B.port || x.bytes.length <= query.length || decoded(x.bytes).name === 'ADDR_CHALLENGE'), 'nothing larger than the request to B but the challenge');
  // From A (validated: the ticket's address), the same refusal is sent, MACed, whatever its size.
  await h.server.receive(cs.encode('QUERY_STATUS', rid(3), { ids: [Buffer.alloc(16, 9)] }), A);
  const fromA = decoded(h.socket.sent[2]!.bytes);
  t.match(fromA, { name: 'ERROR', body: { code: ErrorCode.NOT_FOUND } });
  t.ok(fromA.auth && h.socket.sent[2]!.bytes.length > query.length, 'MACed, larger than the request');
  // A refusal no larger than its request goes to B as it is, MACed.
  w.clock.ms += 1000;
  const leave = cs.encode('GROUP_LEAVE', rid(4), { groupId: Buffer.alloc(16, 5) });
  await h.server.receive(leave, B);
  const last = h.socket.sent[h.socket.sent.length - 1]!;
  const m = decoded(last.bytes);
  t.match(m, { name: 'ERROR', body: { code: ErrorCode.FORBIDDEN } });
  t.ok(m.auth && last.bytes.length <= leave.length, `MACed, ${last.bytes.length} B for ${leave.length} B`);
});

t.test('--workers: an address validated at one worker is validated at another (shareValidations, one message per turn)', async (t) => {
  const w = sessionWorld(undefined, { ticketAddr: A });
  const calls = { n: 0 };
  const one = new AddressValidation({ now: () => w.clock.ms });
  const other = new AddressValidation({ now: () => w.clock.ms });
  // Worker one's channel and worker two's, joined directly: the primary forwards messages as they come.
  const { a, b, sent } = workerPipe();
  shareValidations(one, a);
  shareValidations(other, b);
  // Worker two has its own sessions: those opened at worker one it reads from the shared store
  // (here, worker one's, as Redis would hand them over), so what it knows of their addresses
  // came over the channel.
  const shared = (sidHex: string): Promise<ServerSession | undefined> => {
    const s = w.sessions.get(sidHex);
    return Promise.resolve(s && newServerSession({
      sid: s.sid, sidHex: s.sidHex, locatorId: s.locatorId, aud: s.aud, exp: s.exp,
      terminalToServer: rawKey(s.keys.terminalToServer), serverToTerminal: rawKey(s.keys.serverToTerminal),
    }));
  };
  const h1 = harness({ handlers: handlers(calls), sessions: w.sessions, clock: w.clock, addressValidation: one });
  const h2 = harness({ handlers: handlers(calls), sessions: w.instance({ remote: shared }), clock: w.clock, addressValidation: other });
  const cs = w.client();
  const ticket2 = w.issue({ cti: randomBytes(16) });
  const cs2 = w.client(ticket2);
  // Two sessions open at worker one from their tickets' address in one turn: validated there,
  // and passed on in one message once the turn ends.
  await Promise.all([
    h1.server.receive(cs.encode('REGISTER', rid(1), { ticket: w.ticket, timeMs: w.clock.ms }), A),
    h1.server.receive(cs2.encode('REGISTER', rid(1), { ticket: ticket2, timeMs: w.clock.ms }), A),
  ]);
  t.equal(sent.length, 0, 'nothing sent within the turn');
  await nextTurns();
  t.equal(sent.length, 1, 'one message for the turn');
  const m = sent[0] as { k: string; b: [string, string][] };
  t.equal(m.k, 'addr-validated');
  t.same(m.b.map(([sid]) => sid), [cs.sid.toString('hex'), cs2.sid.toString('hex')], 'both sessions in it');
  t.equal(new Set(m.b.map(([, addr]) => addr)).size, 1, 'the same address for both');
  // Their next requests reach worker two: answered, not challenged.
  await h2.server.receive(cs.encode('REFRESH', rid(2), {}), A);
  await h2.server.receive(cs2.encode('REFRESH', rid(2), {}), A);
  t.same(h2.socket.sent.map((s) => decoded(s.bytes).name), ['REFRESH_ACK', 'REFRESH_ACK']);
  // From another address it is still challenged at either.
  await h2.server.receive(cs.encode('REFRESH', rid(3), {}), B);
  t.equal(decoded(h2.socket.sent.at(-1)!.bytes).name, 'ADDR_CHALLENGE');
});

// The store of validated addresses: per held session, in its slot's row (no LRU of its own).
/**
 * A stand-in for the session table: the slots' generations (which `reuse` moves on, as the table
 * does when a slot takes another session, zeroing its addresses) and their address rows.
 */
const slots = (n: number): { gen: (slot: number) => number; reuse: (slot: number) => void; addrs: Float64Array; addrsAt: (slot: number) => number } => {
  const gens = new Uint32Array(n);
  const addrs = new Float64Array(n * MAX_VALIDATED_PER_SESSION);
  const addrsAt = (slot: number): number => slot * MAX_VALIDATED_PER_SESSION;
  return {
    gen: (slot) => gens[slot]!, addrs, addrsAt,
    reuse: (slot) => {
      gens[slot]!++;
      addrs.fill(0, addrsAt(slot), addrsAt(slot) + MAX_VALIDATED_PER_SESSION);
    },
  };
};
const held = (t: ReturnType<typeof slots>, slot: number): HeldSession => new HeldSession(t as unknown as SessionSlots, slot, t.gen(slot), slot.toString(16).padStart(32, '0'));

t.test('validated addresses: the newest 4 per session, IPv4 and IPv6, a reused slot starts empty', async (t) => {
  const v = new AddressValidation();
  const tb = slots(8);
  const s = held(tb, 3);
  const at = (i: number) => ({ ip: `192.0.2.${i}`, port: 4000 + i });
  for (let i = 1; i <= 4; i++) v.accept(s, at(i));
  t.ok([1, 2, 3, 4].every((i) => v.isValidated(s, at(i))), 'four kept');
  v.accept(s, at(1)); // validated again: now the newest
  v.accept(s, at(5));
  t.notOk(v.isValidated(s, at(2)), 'the oldest went when a fifth came');
  t.ok([1, 3, 4, 5].every((i) => v.isValidated(s, at(i))), 'the re-validated one stayed');
  t.notOk(v.isValidated(s, { ip: '192.0.2.1', port: 4002 }), 'the port counts');
  t.ok(v.isValidated(s, { ip: '::ffff:192.0.2.5', port: 4005 }), 'an IPv4-mapped source is its IPv4 address');
  v.accept(s, { ip: '2001:db8::1', port: 9 });
  t.ok(v.isValidated(s, { ip: '2001:db8:0::1', port: 9 }), 'IPv6, normalised');
  t.notOk(v.isValidated(held(tb, 2), at(5)), 'another slot has none');
  // The session ends; a new one takes the slot.
  tb.reuse(3);
  t.notOk(v.isValidated(s, at(5)), 'an ended session is not validated anywhere');
  const next = held(tb, 3);
  t.notOk(v.isValidated(next, at(5)) || v.isValidated(next, { ip: '2001:db8::1', port: 9 }), "the slot's next session inherits nothing");
});

t.test('validated addresses live in the session table: a slot that takes another session starts with none', async (t) => {
  const nowMs = 1_800_000_000_000;
  const sessions = new ServerSessions({
    verifier: new TicketVerifier({ keys: new Map(), audience: 'locator', now: () => Math.floor(nowMs / 1000) }),
    serviceSecret: undefined as never, now: () => nowMs, maxSessions: 2,
  });
  const make = (i: number): ServerSession => newServerSession({
    sid: Buffer.alloc(16, i), locatorId: Buffer.alloc(16, 100 + i), aud: 'locator', exp: Math.floor(nowMs / 1000) + 3600,
    terminalToServer: Buffer.alloc(32, i), serverToTerminal: Buffer.alloc(32, 50 + i),
  });
  const v = new AddressValidation();
  const from = { ip: '192.0.2.7', port: 7 };
  const a = sessions.restore(make(1))!;
  v.accept(a, from);
  t.ok(v.isValidated(sessions.get(a.sidHex)!, from), 'validated, read through another handle of the session');
  const again = sessions.restore(make(1))!; // the same ID opened again: a new session in the slot
  t.notOk(v.isValidated(again, from), 'a session opened again starts with none');
  v.accept(again, from);
  sessions.restore(make(2));
  const third = sessions.restore(make(3)) as HeldSession; // the table holds 2: the least recently used (1) goes
  t.equal(sessions.get(again.sidHex), undefined);
  t.equal(third.slot, (again as HeldSession).slot, 'the third session took the first one\'s slot');
  t.notOk(v.isValidated(third, from), "a slot's next session inherits nothing");
});

t.test('validated addresses: a snapshot restored into the same table inherits none', async (t) => {
  const nowMs = 1_800_000_000_000;
  const sessions = new ServerSessions({
    verifier: new TicketVerifier({ keys: new Map(), audience: 'locator', now: () => Math.floor(nowMs / 1000) }),
    serviceSecret: undefined as never, now: () => nowMs,
  });
  const v = new AddressValidation();
  const held: ServerSession[] = [];
  for (let i = 1; i <= 4; i++) {
    const s = sessions.restore(newServerSession({
      sid: Buffer.alloc(16, i), locatorId: Buffer.alloc(16, 100 + i), aud: 'locator', exp: Math.floor(nowMs / 1000) + 3600,
      terminalToServer: Buffer.alloc(32, i), serverToTerminal: Buffer.alloc(32, 50 + i),
    }))!;
    v.accept(s, { ip: '192.0.2.9', port: i });
    v.accept(s, { ip: '2001:db8::9', port: i });
    held.push(s);
  }
  const c = sessions.columns();
  sessions.copyColumns(c, 0, c.n);
  t.equal(sessions.dropWhere(() => true), 4);
  t.ok(sessions.restoreColumns(c), 'restored in bulk into the same slots');
  for (let i = 1; i <= 4; i++) {
    const s = sessions.get(held[i - 1]!.sidHex)!;
    t.notOk(v.isValidated(s, { ip: '192.0.2.9', port: i }) || v.isValidated(s, { ip: '2001:db8::9', port: i }), `session ${i}: proven again after a restore`);
  }
});

t.test('validated addresses are kept for every held session, however many (no LRU bound below the session table)', async (t) => {
  // A string-keyed LRU capped at 500k sessions used to hold them: past that many active sessions
  // every request of the least recent ones was challenged again.
  const n = 600_000;
  const v = new AddressValidation();
  const tb = slots(n);
  for (let i = 0; i < n; i++) v.accept(held(tb, i), { ip: '198.51.100.7', port: 1 + (i % 60_000) });
  let missing = 0;
  for (let i = 0; i < n; i++) if (!v.isValidated(held(tb, i), { ip: '198.51.100.7', port: 1 + (i % 60_000) })) missing++;
  t.equal(missing, 0, `all ${n} sessions still validated`);
});

t.test('a session not held (yet): remembered by ID, moved beside its slot once held', async (t) => {
  const v = new AddressValidation();
  const tb = slots(4);
  const s = held(tb, 1);
  const finder = new Map<string, HeldSession>();
  v.attach({ get: (id) => finder.get(id) });
  v.acceptKey(s.sidHex, '203.0.113.9|77'); // another worker validated it before this one held it
  t.ok(v.isValidated(s, { ip: '203.0.113.9', port: 77 }), 'validated through the ID');
  tb.reuse(1); // the slot moves on; the address was moved into the old generation's place
  finder.set(s.sidHex, held(tb, 1));
  v.acceptKey(s.sidHex, '203.0.113.9|78');
  t.ok(v.isValidated(held(tb, 1), { ip: '203.0.113.9', port: 78 }), 'held: recorded beside its slot');
});
