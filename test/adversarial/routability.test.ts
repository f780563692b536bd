// Session answers and bindings do not follow a forged source (issue 15, item 3): a valid MAC
// proves the keys, not the address. An enrolled attacker, holding its own session keys, sends
// its MACed requests with a victim's source address (on loopback: from the victim's socket) to
// the real locatord and matchd processes. Every byte that reaches the victim is counted against
// what was sent "from" it: at most one small ADDR_CHALLENGE per request, never the answer; and
// no binding moves there. Before the fix: QUERY_ADDR x8.4, GROUP_MEMBERS x16.8, the attacker's
// locator ID bound to the victim, the attacker's match request answered at the victim, an
// INTRODUCE handing the victim's address to a peer, and (item 6) a third party's address in the
// partners' MATCH_RESULT. And the cost: none on the common path (a terminal that registers from
// the address it authenticated from), one round trip for a terminal whose address changed.
import t from 'tap';
import { UdpClient } from '../../src/net/client.js';
import { MatchState } from '../../src/wire/catalog.js';
import { decodeDatagram } from '../../src/wire/envelope.js';
import { adversarialStack, expectMsg, RawSocket } from './fixtures/stack.js';

/** An ADDR_CHALLENGE is about 80 bytes: "one small datagram". */
const SMALL = 100;

const s = await adversarialStack(t);
const attacker = await s.terminal('attacker');
expectMsg(await attacker.register({ nickname: 'attacker' }), 'REGISTER_ACK');
// Rich terminals make answers large: the most the schema allows in each entry.
const rich = await Promise.all([0, 1, 2].map((i) => s.terminal(`rich${i}`)));
const group = expectMsg(await attacker.request('GROUP_CREATE', { name: 'amplifier' }), 'GROUP_CREATE_ACK');
for (const [i, x] of rich.entries()) {
  expectMsg(await x.register({
    nickname: `n${i}`.padEnd(32, 'x'), mediaId: `m${i}`.padEnd(64, 'y'), localAddrs: [1, 2, 3, 4].map((k) => ({ ip: `2001:db8::${k}`, port: 40000 + k })),
    joinGroups: [{ groupId: group.groupId }],
  }), 'REGISTER_ACK');
}

/** Names of what a datagram is (decoded; a daemon's answers always decode). */
const names = (got: Buffer[]): string[] => got.map((g) => {
  const d = decodeDatagram(g);
  return d.ok ? d.msg.name : 'undecodable';
});

t.test('QUERY_ADDR and GROUP_MEMBERS from a forged source: the victim gets one small challenge, not the answer', async (t) => {
  // The same requests from the attacker's own (validated) address get the large answers.
  const q = attacker.encode('QUERY_ADDR', { ids: rich.map((x) => x.locatorId) });
  const honest = await attacker.send('QUERY_ADDR', q);
  t.ok(honest.raw.length > 3 * q.bytes.length, `from its own address: ${honest.raw.length} B for ${q.bytes.length} B`);
  const victim = await RawSocket.open(t, '127.0.0.60');
  let bytesIn = 0;
  let bytesOut = 0;
  const kinds = new Set<string>();
  for (const [name, body] of [['QUERY_ADDR', { ids: rich.map((x) => x.locatorId) }], ['GROUP_MEMBERS', { groupId: group.groupId }]] as const) {
    for (let i = 0; i < 5; i++) {
      const d = attacker.encode(name, body as never);
      const got = await victim.exchange(s.addr.locatord, d.bytes);
      bytesIn += d.bytes.length;
      bytesOut += got.reduce((n, g) => n + g.length, 0);
      for (const k of names(got)) kinds.add(k);
      t.ok(got.length <= 1 && got.every((g) => g.length <= SMALL), `${name} #${i}: ${got.length} datagram(s), ${got.map((g) => g.length).join('+') || 0} B to the victim for ${d.bytes.length} B`);
    }
  }
  t.same([...kinds].filter((k) => k !== 'ADDR_CHALLENGE'), [], `the victim got only ADDR_CHALLENGEs (${[...kinds].join(', ')})`);
  t.ok(bytesOut <= bytesIn, `victim: ${bytesOut} B out for ${bytesIn} B in: x${(bytesOut / bytesIn).toFixed(2)}`);
  t.ok(await s.metric('locatord', 'addr_challenges_total') >= 1, 'challenges counted');
});

t.test('REGISTER and REFRESH from a forged source do not move the binding', async (t) => {
  const victim = await RawSocket.open(t, '127.0.0.61');
  const observer = rich[0]!;
  const before = expectMsg(await observer.request('QUERY_ADDR', { ids: [attacker.locatorId] }), 'QUERY_ADDR_RESULT').entries[0]!;
  t.same(before.addr, attacker.address, 'bound to the attacker\'s own address');
  let bytesIn = 0;
  let bytesOut = 0;
  for (const [name, body] of [
    ['REGISTER', { ticket: attacker.tickets.locator.ticket, timeMs: Date.now(), nickname: 'attacker' }],
    ['REFRESH', {}],
  ] as const) {
    const d = attacker.encode(name, body as never);
    const got = await victim.exchange(s.addr.locatord, d.bytes);
    bytesIn += d.bytes.length;
    bytesOut += got.reduce((n, g) => n + g.length, 0);
    t.ok(got.length <= 1 && got.every((g) => g.length <= SMALL), `${name}: ${got.length} datagram(s) to the victim (${names(got).join(', ')})`);
  }
  const after = expectMsg(await observer.request('QUERY_ADDR', { ids: [attacker.locatorId] }), 'QUERY_ADDR_RESULT').entries[0]!;
  t.same(after.addr, attacker.address, 'still bound to the attacker\'s own address, not the victim\'s');
  t.ok(bytesOut <= SMALL * 2, `victim: ${bytesOut} B for ${bytesIn} B`);
  // The attacker itself, from its own address, still refreshes normally.
  expectMsg(await attacker.request('REFRESH', {}), 'REFRESH_ACK');
});

t.test('a refusal from a forged source is no larger than the request either: the victim gets a challenge in its place', async (t) => {
  const victim = await RawSocket.open(t, '127.0.0.64');
  // The members of a group that does not exist: FORBIDDEN with its message, MACed, larger than
  // the request (sent to the victim as it was until 2026-12-07: 82 B for 68 B).
  const body = { groupId: Buffer.alloc(16, 0xee) };
  const honest = await attacker.send('GROUP_MEMBERS', attacker.encode('GROUP_MEMBERS', body));
  const d = attacker.encode('GROUP_MEMBERS', body);
  t.ok(honest.raw.length > d.bytes.length, `from its own address: ${honest.raw.length} B for ${d.bytes.length} B (${honest.msg.name})`);
  const got = await victim.exchange(s.addr.locatord, d.bytes);
  t.same(names(got), ['ADDR_CHALLENGE'], 'the victim gets one ADDR_CHALLENGE, not the refusal');
  t.ok(got.every((g) => g.length <= SMALL), `${got.map((g) => g.length).join('+')} B for ${d.bytes.length} B`);
});

t.test('MATCH_SUBMIT from a forged source is not executed', async (t) => {
  const victim = await RawSocket.open(t, '127.0.0.62');
  const submitsBefore = await s.metric('matchd', 'match_submits_total');
  const d = attacker.encode('MATCH_SUBMIT', {
    ticket: attacker.tickets.match.ticket, timeMs: Date.now(), mediaId: 'forged', minParty: 2, maxParty: 2, netMode: 1, maxWaitS: 60,
  });
  const got = await victim.exchange(s.addr.matchd, d.bytes);
  t.same(names(got), ['ADDR_CHALLENGE'], 'the victim gets one ADDR_CHALLENGE');
  t.ok(got.every((g) => g.length <= SMALL), `${got.map((g) => g.length).join('+')} B for ${d.bytes.length} B`);
  t.equal(await s.metric('matchd', 'match_submits_total'), submitsBefore, 'no match request made with the victim\'s address');
  // From its own address, the same terminal's submit goes through (challenge answered by its client).
  expectMsg(await attacker.submit({ mediaId: 'honest' }), 'MATCH_SUBMIT_ACK');
  t.equal(await s.metric('matchd', 'match_submits_total'), submitsBefore + 1, 'the honest submit counted');
});

t.test('a forged ADDR_PROOF validates nothing', async (t) => {
  const victim = await RawSocket.open(t, '127.0.0.63');
  const { encodeDatagram } = await import('../../src/wire/envelope.js');
  const proof = encodeDatagram('ADDR_PROOF', Buffer.alloc(8, 1), { sid: attacker.sessions.locator.sid, token: Buffer.alloc(16, 7) });
  const got = await victim.exchange(s.addr.locatord, proof);
  t.same(got, [], 'never answered');
  const q = attacker.encode('QUERY_ADDR', { ids: rich.map((x) => x.locatorId) });
  t.same(names(await victim.exchange(s.addr.locatord, q.bytes)).filter((n) => n !== 'ADDR_CHALLENGE'), [], 'the victim is still unvalidated');
  t.ok(await s.metric('locatord', 'addr_proofs_total', { result: 'bad' }) >= 1, 'counted');
});

t.test('the common path costs no round trip: a terminal registering from the address it authenticated from is not challenged', async (t) => {
  const honest = await s.terminal('honest');
  expectMsg(await honest.register({ nickname: 'honest' }), 'REGISTER_ACK');
  expectMsg(await honest.request('QUERY_ADDR', { ids: rich.map((x) => x.locatorId) }), 'QUERY_ADDR_RESULT');
  expectMsg(await honest.submit({ mediaId: 'common-path', minParty: 2, maxParty: 2 }), 'MATCH_SUBMIT_ACK');
  t.equal(honest.client.stats.challenges, 0, 'no ADDR_CHALLENGE: the ticket names the address authd sent it to');
});

t.test('a terminal whose address changed is challenged once, then its binding moves there', async (t) => {
  const mover = await s.terminal('mover');
  expectMsg(await mover.register({ nickname: 'mover' }), 'REGISTER_ACK');
  // The same session from a new socket (a NAT rebinding): its own client answers the challenge.
  const moved = await UdpClient.open({ bind: { host: '127.0.0.1', port: 0 }, policy: { initialTimeoutMs: 300, maxRetransmit: 3, deadlineMs: 8000 } });
  t.teardown(() => moved.close());
  const refresh = async (): Promise<void> => {
    const d = mover.encode('REFRESH', {});
    const r = await moved.request(s.addr.locatord, d.bytes, d.rid, { accept: (x) => mover.sessions.locator.accept(x) });
    expectMsg(r, 'REFRESH_ACK');
  };
  await refresh();
  t.equal(moved.stats.challenges, 1, 'one challenge from the new address');
  const bound = expectMsg(await rich[1]!.request('QUERY_ADDR', { ids: [mover.locatorId] }), 'QUERY_ADDR_RESULT').entries[0]!;
  t.same(bound.addr, { ip: '127.0.0.1', port: moved.localPort }, 'bound to the new, validated address');
  await refresh();
  t.equal(moved.stats.challenges, 1, 'a validated address stays validated for the session');
});

t.test('INTRODUCE from a forged source is not executed: the peer is never handed the victim\'s address', async (t) => {
  const victim = await RawSocket.open(t, '127.0.0.64');
  const before = await s.metric('locatord', 'introductions_total', { result: 'ok' });
  const d = attacker.encode('INTRODUCE', { target: rich[2]!.locatorId });
  const got = await victim.exchange(s.addr.locatord, d.bytes);
  t.same(names(got), ['ADDR_CHALLENGE'], 'the victim gets one ADDR_CHALLENGE, no INTRODUCE_ACK');
  t.ok(got.every((g) => g.length <= SMALL), `${got.map((g) => g.length).join('+')} B for ${d.bytes.length} B`);
  t.equal(await s.metric('locatord', 'introductions_total', { result: 'ok' }), before, 'no introduction made');
  t.ok(await s.metric('locatord', 'introductions_total', { result: 'unvalidated' }) >= 1, 'counted as unvalidated');
});

t.test('MATCH_RESULT carries validated addresses only: a forged-source MATCH_SUBMIT puts no third party in the partners\' results (item 6)', async (t) => {
  const victim = await RawSocket.open(t, '127.0.0.65');
  const partners = await Promise.all([0, 1].map((i) => s.terminal(`partner${i}`)));
  const media = { mediaId: 'item6', minParty: 3, maxParty: 3, maxWaitS: 600 };
  const ids = [];
  for (const p of partners) ids.push(expectMsg(await p.submit(media), 'MATCH_SUBMIT_ACK').matchId);
  // The attacker's submit, from the victim's address: before the fix, the party formed at once
  // with the victim's address as the attacker's, and each partner was told to contact it.
  const forged = attacker.encode('MATCH_SUBMIT', { ticket: attacker.tickets.match.ticket, timeMs: Date.now(), netMode: 1, ...media });
  const got = await victim.exchange(s.addr.matchd, forged.bytes);
  t.same(names(got), ['ADDR_CHALLENGE'], 'the victim gets one ADDR_CHALLENGE');
  const waiting = expectMsg(await partners[0]!.request('MATCH_STATUS', { matchId: ids[0]! }), 'MATCH_STATUS_RESULT');
  t.equal(waiting.state, MatchState.WAITING, 'no party formed with the victim\'s address');
  // The same submit from the attacker's own address (its client proves it): the party forms, and
  // every address in it is one its member proved.
  expectMsg(await attacker.submit(media), 'MATCH_SUBMIT_ACK');
  const allowed = new Set([...partners, attacker].map((x) => `${x.address.ip}|${x.address.port}`));
  for (const [i, p] of partners.entries()) {
    let r = expectMsg(await p.request('MATCH_STATUS', { matchId: ids[i]! }), 'MATCH_STATUS_RESULT');
    for (let k = 0; k < 300 && r.state === MatchState.WAITING; k++) {
      await new Promise((res) => setTimeout(res, 100));
      r = expectMsg(await p.request('MATCH_STATUS', { matchId: ids[i]! }), 'MATCH_STATUS_RESULT');
    }
    t.equal(r.state, MatchState.MATCHED, `partner ${i} matched`);
    const addrs = (r.members ?? []).map((m) => `${m.addr.ip}|${m.addr.port}`);
    t.equal(addrs.length, 3, `partner ${i}: three members`);
    t.same(addrs.filter((a) => !allowed.has(a)), [], `partner ${i}: only validated addresses (${addrs.join(', ')})`);
    t.notOk(addrs.some((a) => a.startsWith('127.0.0.65|')), `partner ${i}: not the victim's`);
  }
  // (the ERRORs answer the exchange's sentinels)
  t.same(names(victim.received).filter((n) => n !== 'ERROR'), ['ADDR_CHALLENGE'], 'so far the victim got the one challenge, no MATCH_SUBMIT_ACK, no MATCH_RESULT');
});

// Last: every refusal the daemons' handlers answered above is one devloc-protocol(7) lists.
t.test('every handler refusal answered is listed in devloc-protocol(7)', async (t) => {
  t.same(await s.undocumentedRefusals(), []);
});
