// Replays against the real daemons: a captured AUTH_REQUEST, REGISTER, REFRESH, QUERY_ADDR,
// QUERY_STATUS and MATCH_SUBMIT sent again from the same source (a retransmission: the cached
// answer, byte for byte, nothing executed twice) and from another source (REPLAY, no larger than
// the request). Each case asserts the wire code, that no state changed (metrics, and what a
// legitimate terminal sees), and the refusal's log line.
import t from 'tap';
import { UdpClient } from '../../src/net/client.js';
import { buildAuthRequest } from '../../src/wire/auth.js';
import { MatchState } from '../../src/wire/catalog.js';
import { ErrorCode } from '../../src/wire/errors.js';
import { generatePair, privateKeyObject } from '../../src/wire/keys.js';
import { adversarialStack, codeOf, decoded, expectMsg, LOCATOR, RawSocket } from './fixtures/stack.js';

const s = await adversarialStack(t);
const victim = await s.terminal('victim');
const observer = await s.terminal('observer');
expectMsg(await victim.register({ nickname: 'victim' }), 'REGISTER_ACK');
expectMsg(await observer.register({ nickname: 'observer' }), 'REGISTER_ACK');
const attacker = await RawSocket.open(t, '127.0.0.2');

/** What a legitimate terminal sees of the victim. */
const seenByObserver = async (): Promise<unknown> =>
  expectMsg(await observer.request('QUERY_ADDR', { ids: [victim.locatorId] }), 'QUERY_ADDR_RESULT').entries[0];

type Names = (string | [string, Record<string, string>])[];
/** Counters and gauges a REGISTER/REFRESH executed again would move. */
const bindingState: Names = ['registrations_total', 'refreshes_total', 'sessions_opened_total', 'sessions', 'registrations', ['requests_total', { result: 'ok' }]];
/** ... and a lookup executed again. */
const lookupState: Names = [...bindingState, ['query_ids_total', {}], ['queries_total', {}]];

t.test('AUTH_REQUEST replayed: same source gets the cached grant, another source REPLAY; no second grant', async (t) => {
  const device = s.enroll('auth-replay');
  const client = await UdpClient.open({ bind: { host: '127.0.0.1', port: 0 }, policy: { initialTimeoutMs: 300, maxRetransmit: 2 } });
  t.teardown(() => client.close());
  const rid = UdpClient.newRequestId();
  const built = buildAuthRequest({
    rid, deviceId: device.deviceId, deviceKey: privateKeyObject('Ed25519', device.sign), authdKid: Buffer.from(s.authdKey.kid, 'hex'),
    authdSealPublic: s.authdKey.seal.public, audiences: [LOCATOR], cnf: generatePair('x25519').public, timeMs: Date.now(),
  });
  const first = await client.request(s.addr.authd, built.datagram, rid);
  expectMsg(first, 'AUTH_RESPONSE');
  const names: Names = ['auth_ok_total', 'signatures_total', 'replay_cache_entries', ['tickets_issued_total', {}]];
  const before = await s.metrics('authd', names);
  const again = await client.request(s.addr.authd, built.datagram, rid);
  t.ok(again.raw.equals(first.raw), 'same source: the cached answer, byte for byte');
  const stolen = await attacker.exchange(s.addr.authd, built.datagram);
  t.equal(stolen.length, 1, 'another source: one answer');
  t.equal(codeOf(decoded(stolen[0]!)), ErrorCode.REPLAY, 'REPLAY');
  t.ok(stolen[0]!.length <= built.datagram.length, 'no larger than the request');
  t.same(await s.metrics('authd', names), before, 'no grant, signature or replay-cache entry added');
  t.equal(await s.metric('authd', 'retransmissions_answered_total'), 1);
  t.ok(s.refusals('authd', { code: 'REPLAY' }).length > 0, 'refusal logged');
});

t.test('REGISTER and REFRESH replayed from the same source and from another', async (t) => {
  for (const name of ['REGISTER', 'REFRESH'] as const) {
    const captured = name === 'REGISTER'
      ? victim.encode('REGISTER', { ticket: victim.tickets.locator.ticket, timeMs: Date.now(), nickname: 'victim' })
      : victim.encode('REFRESH', {});
    const first = await victim.send(name, captured);
    t.equal(first.msg.name, `${name}_ACK`, `${name}: accepted`);
    const seen = await seenByObserver();
    const before = await s.metrics('locatord', bindingState);
    // Same source: the response cache answers with the very bytes sent before.
    const again = await victim.client.request(s.addr.locatord, captured.bytes, captured.rid, { accept: () => true });
    t.ok(again.raw.equals(first.raw), `${name} same source: cached answer, byte for byte`);
    // Another source: REPLAY, and the binding does not move to the attacker.
    const stolen = await attacker.exchange(s.addr.locatord, captured.bytes);
    t.equal(stolen.length, 1, `${name} other source: one answer`);
    t.equal(codeOf(decoded(stolen[0]!)), ErrorCode.REPLAY, `${name} other source: REPLAY`);
    t.ok(stolen[0]!.length <= captured.bytes.length, `${name}: refusal no larger than the request`);
    const after = await s.metrics('locatord', bindingState);
    t.same(after, before, `${name}: nothing executed again`);
    t.same(await seenByObserver(), seen, `${name}: the victim is still where it was`);
    t.ok(s.refusals('locatord', { event: `${name}:REPLAY` }).length > 0, `${name}: refusal logged`);
  }
});

t.test('QUERY_ADDR and QUERY_STATUS replayed: no lookup executed or charged again, no data to another source', async (t) => {
  for (const name of ['QUERY_ADDR', 'QUERY_STATUS'] as const) {
    const captured = victim.encode(name, { ids: [observer.locatorId, victim.locatorId] });
    const first = await victim.send(name, captured);
    t.equal(first.msg.name, `${name}_RESULT`);
    const before = await s.metrics('locatord', lookupState);
    const again = await victim.client.request(s.addr.locatord, captured.bytes, captured.rid, { accept: () => true });
    t.ok(again.raw.equals(first.raw), `${name} same source: cached answer`);
    const stolen = await attacker.exchange(s.addr.locatord, captured.bytes);
    t.equal(stolen.length, 1);
    const m = decoded(stolen[0]!);
    t.equal(codeOf(m), ErrorCode.REPLAY, `${name} other source: REPLAY`);
    t.notOk(stolen[0]!.includes(victim.locatorId), `${name}: the refusal reveals nothing about the IDs`);
    t.ok(stolen[0]!.length <= captured.bytes.length);
    t.same(await s.metrics('locatord', lookupState), before, `${name}: no lookup counted`);
    t.ok(s.refusals('locatord', { event: `${name}:REPLAY` }).length > 0, `${name}: refusal logged`);
  }
});

t.test('MATCH_SUBMIT replayed: the waiting request is neither replaced nor duplicated', async (t) => {
  const captured = victim.encode('MATCH_SUBMIT', {
    ticket: victim.tickets.match.ticket, timeMs: Date.now(), mediaId: 'replay-game', minParty: 3, maxParty: 3, netMode: 1, maxWaitS: 600,
  });
  const first = await victim.send('MATCH_SUBMIT', captured);
  const ack = expectMsg(first, 'MATCH_SUBMIT_ACK');
  const names = ['match_submits_total', 'match_replaced_total', 'match_waiting', 'sessions'];
  const before = await s.metrics('matchd', names);
  const again = await victim.client.request(s.addr.matchd, captured.bytes, captured.rid, { accept: () => true });
  t.ok(again.raw.equals(first.raw), 'same source: cached answer');
  const stolen = await attacker.exchange(s.addr.matchd, captured.bytes);
  t.equal(stolen.length, 1);
  t.equal(codeOf(decoded(stolen[0]!)), ErrorCode.REPLAY, 'other source: REPLAY');
  t.ok(stolen[0]!.length <= captured.bytes.length);
  t.same(await s.metrics('matchd', names), before, 'no submit executed again');
  const st = expectMsg(await victim.request('MATCH_STATUS', { matchId: ack.matchId }), 'MATCH_STATUS_RESULT');
  t.equal(st.state, MatchState.WAITING, 'the original request still waits');
  t.ok(s.refusals('matchd', { event: 'MATCH_SUBMIT:REPLAY' }).length > 0, 'refusal logged');
});

// Last: every refusal the daemons' handlers answered above is one devloc-protocol(7) lists.
t.test('every handler refusal answered is listed in devloc-protocol(7)', async (t) => {
  t.same(await s.undocumentedRefusals(), []);
});
