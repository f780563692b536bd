// matchd end to end over real UDP on loopback (in-process daemon, fake clock for matchd's time
// and its retransmission timers): submit with the ticket, pushes and their acknowledgement,
// polling, cancel races, deadlines, replacement and retransmitted submits, retransmitted pushes,
// restart -> NO_SESSION. "Nothing was pushed" is read from matchd's counters, which are exact at
// once, never from a wait for datagrams that do not come.
import t from 'tap';
import type { Test } from 'tap';
import { MatchState } from '../../src/wire/catalog.js';
import { NetMode } from '../../src/wire/constants.js';
import { ErrorCode } from '../../src/wire/errors.js';
import { UdpClient } from '../../src/net/client.js';
import type { Matchd } from '../../src/matchd/server.js';
import { fakeClock, fixture, hexOf, matchd, Terminal, until } from './helpers.js';
import { CheckedMetrics } from '../helpers/refusals.js';

async function world(t: Test, o: Parameters<typeof matchd>[1] = {}) {
  const fx = fixture();
  const clock = fakeClock();
  // Every refusal a handler answers must be one devloc-protocol(7) lists (test/helpers/refusals.ts).
  const m = await matchd(fx, { now: clock.now, timers: clock.timers, metrics: new CheckedMetrics((why) => t.fail(why)), ...o });
  const terminals: Terminal[] = [];
  t.teardown(async () => {
    for (const x of terminals) await x.close();
    await m.stop();
  });
  const terminal = async (): Promise<Terminal> => {
    const x = await Terminal.open(fx, { ip: '127.0.0.1', port: m.port }, clock.now);
    terminals.push(x);
    return x;
  };
  return { fx, clock, m, terminal };
}

/** Two terminals matched with each other that do not acknowledge their MATCH_RESULT (one copy each so far). */
async function unackedMatch(t: Test, o: Parameters<typeof matchd>[1]) {
  const { m, clock, terminal } = await world(t, o);
  const sends = (): number => m.metrics.get('match_push_sends_total');
  const a = await terminal();
  const b = await terminal();
  a.autoAck = false;
  b.autoAck = false;
  const ka = await a.submitOk();
  const kb = await b.submitOk();
  await a.waitResult(ka.matchId);
  await b.waitResult(kb.matchId);
  t.equal(sends(), 2, 'one copy each');
  return { m, clock, sends, a, b, ka, kb };
}

t.test('two terminals: results pushed to observed addresses, acknowledged', async (t) => {
  const { m, clock, terminal } = await world(t);
  const a = await terminal();
  const b = await terminal();
  const ackA = await a.submitOk({ nickname: 'alice', netMode: NetMode.PORT_RESTRICTED, attrs: { level: 3 } });
  t.equal(ackA.matchId.length, 8, 'matchId: 8 bytes');
  // matchd's clock, not the wall clock: on a loaded machine seconds pass between the two.
  t.ok(ackA.deadlineS >= Math.floor(clock.now() / 1000) + 59, 'deadline about maxWaitS ahead');
  const ackB = await b.submitOk({ nickname: 'bob', netMode: NetMode.OPEN });
  const ra = await a.waitResult(ackA.matchId);
  const rb = await b.waitResult(ackB.matchId);
  t.equal(ra.state, MatchState.MATCHED);
  t.equal(rb.state, MatchState.MATCHED);
  t.same(ra.members, rb.members, 'both see the same party');
  t.equal(ra.host, rb.host);
  const members = ra.members!;
  t.same(members.map((x) => hexOf(x.id)), [a.locatorHex, b.locatorHex]);
  t.same(members.map((x) => x.nickname), ['alice', 'bob']);
  t.same(members.map((x) => x.netMode), [NetMode.PORT_RESTRICTED, NetMode.OPEN]);
  t.same(members.map((x) => x.addr), [a.address, b.address], 'observed addresses');
  t.equal(ra.host, 1, 'the open terminal hosts');
  await until(() => m.delivery.pendingCount === 0, 5000, 'acks');
  t.equal(m.metrics.total('match_push_acked_total'), 2);
  t.equal(m.metrics.get('match_formed_total'), 1);
  t.equal(m.metrics.get('match_submits_total'), 2);
  // Poll: the same result; unknown and foreign matchIds are NOT_FOUND.
  const st = await a.request('MATCH_STATUS', { matchId: ackA.matchId });
  t.equal(st.msg.name, 'MATCH_STATUS_RESULT');
  if (st.msg.name === 'MATCH_STATUS_RESULT') t.same(st.msg.body.members, members);
  const foreign = await a.request('MATCH_STATUS', { matchId: ackB.matchId });
  t.equal(foreign.msg.name === 'ERROR' && foreign.msg.body.code, ErrorCode.NOT_FOUND, "another terminal's request is not visible");
  // The terminal moves (new NAT mapping): its next datagram comes from another port, and results
  // show the current address.
  const moved = await UdpClient.open({ bind: { host: '127.0.0.1', port: 0 }, policy: { initialTimeoutMs: 150 } });
  t.teardown(() => moved.close());
  const rid = UdpClient.newRequestId();
  const r = await moved.request({ ip: '127.0.0.1', port: m.port }, b.cs.encode('MATCH_STATUS', rid, { matchId: ackB.matchId }), rid, { accept: (x) => b.cs.accept(x) });
  t.equal(r.msg.name, 'MATCH_STATUS_RESULT');
  const st2 = await a.request('MATCH_STATUS', { matchId: ackA.matchId });
  if (st2.msg.name === 'MATCH_STATUS_RESULT') t.same(st2.msg.body.members![1]!.addr, { ip: '127.0.0.1', port: moved.localPort }, 'current address of the partner');
});

t.test('two symmetric NATs and one open terminal: the open one hosts', async (t) => {
  const { m, terminal } = await world(t);
  const s1 = await terminal();
  const s2 = await terminal();
  const o = await terminal();
  const k1 = await s1.submitOk({ netMode: NetMode.SYMMETRIC, minParty: 2, maxParty: 4 });
  const k2 = await s2.submitOk({ netMode: NetMode.SYMMETRIC, minParty: 2, maxParty: 4 });
  // A party is formed (and its pushes started) inside the submit's handler, before its ack.
  t.equal(m.engine.waiting, 2, 'symmetric pair alone: no match');
  t.equal(m.metrics.total('match_pushes_total'), 0, 'nothing pushed');
  const k3 = await o.submitOk({ netMode: NetMode.OPEN, minParty: 2, maxParty: 4 });
  const results = await Promise.all([s1.waitResult(k1.matchId), s2.waitResult(k2.matchId), o.waitResult(k3.matchId)]);
  for (const r of results) {
    t.equal(r.state, MatchState.MATCHED);
    t.equal(r.members!.length, 3);
    t.equal(hexOf(r.members![r.host!]!.id), o.locatorHex, 'host is the open terminal');
  }
});

t.test('deadline: explicit no-match result pushed', async (t) => {
  const { m, clock, terminal } = await world(t);
  const a = await terminal();
  const b = await terminal();
  const ka = await a.submitOk({ netMode: NetMode.SYMMETRIC, maxWaitS: 5 });
  const kb = await b.submitOk({ netMode: NetMode.SYMMETRIC, maxWaitS: 5 });
  clock.advance(4_999);
  m.tick();
  t.equal(m.metrics.total('match_pushes_total'), 0, 'nothing pushed before the deadline');
  clock.advance(1);
  m.tick();
  const [ra, rb] = await Promise.all([a.waitResult(ka.matchId), b.waitResult(kb.matchId)]);
  t.equal(ra.state, MatchState.NO_MATCH);
  t.equal(rb.state, MatchState.NO_MATCH);
  t.equal(ra.members, undefined, 'no members');
  t.equal(ra.host, undefined, 'no host');
  t.equal(m.metrics.get('match_no_match_total'), 2);
  await until(() => m.delivery.pendingCount === 0, 5000, 'acks');
});

t.test('cancel races', async (t) => {
  const { m, terminal } = await world(t);
  const a = await terminal();
  const b = await terminal();
  const c = await terminal();
  // Cancel first: the request is never matched.
  const ka = await a.submitOk();
  const cancel = await a.request('MATCH_CANCEL', { matchId: ka.matchId });
  t.equal(cancel.msg.name, 'MATCH_CANCEL_ACK');
  if (cancel.msg.name === 'MATCH_CANCEL_ACK') {
    t.equal(cancel.msg.body.state, MatchState.CANCELLED);
    t.equal(cancel.msg.body.members, undefined);
  }
  const kb = await b.submitOk();
  t.equal(m.engine.waiting, 1, 'b does not get the cancelled a');
  t.equal(m.metrics.total('match_pushes_total'), 0, 'nothing pushed');
  const st = await a.request('MATCH_STATUS', { matchId: ka.matchId });
  t.equal(st.msg.name === 'MATCH_STATUS_RESULT' && st.msg.body.state, MatchState.CANCELLED);
  // Match first, cancel in flight: c's push is lost (no ack), c cancels; the cancel answers
  // matched with the party, and counts as delivery.
  c.autoAck = false;
  const kc = await c.submitOk();
  const late = await c.request('MATCH_CANCEL', { matchId: kc.matchId });
  t.equal(late.msg.name, 'MATCH_CANCEL_ACK');
  if (late.msg.name === 'MATCH_CANCEL_ACK') {
    t.equal(late.msg.body.state, MatchState.MATCHED, 'the match won');
    t.same(late.msg.body.members!.map((x) => hexOf(x.id)), [b.locatorHex, c.locatorHex], 'with the party');
    t.type(late.msg.body.host, 'number');
  }
  const rb = await b.waitResult(kb.matchId);
  t.equal(rb.state, MatchState.MATCHED, 'the partner keeps its match');
  t.notOk(m.delivery.isPending(hexOf(kc.matchId)), 'the cancel reply delivered the result');
  t.equal(m.metrics.get('match_push_acked_total', { how: 'cancel' }), 1);
});

t.test('duplicate submits: a second replaces the first; a retransmission is not executed twice', async (t) => {
  const { m, terminal } = await world(t);
  const a = await terminal();
  const body = { mediaId: 'chess', minParty: 2, maxParty: 2, netMode: NetMode.OPEN, maxWaitS: 60, ticket: a.ticket, timeMs: a.now() };
  const rid = UdpClient.newRequestId();
  const bytes = a.cs.encode('MATCH_SUBMIT', rid, body);
  const dest = { ip: '127.0.0.1', port: m.port };
  const first = await a.client.request(dest, bytes, rid, { accept: (x) => a.cs.accept(x) });
  // The very same datagram again (a retransmission whose answer was lost): same answer, from the
  // response cache (it repeats the MACed reply, so the session's replay window would refuse it;
  // the agent matches it by request ID).
  const again = await a.client.request(dest, bytes, rid, { accept: () => true });
  t.equal(first.msg.name, 'MATCH_SUBMIT_ACK');
  t.same(again.raw, first.raw, 'identical reply');
  t.equal(m.metrics.get('match_submits_total'), 1, 'executed once');
  t.equal(m.metrics.get('retransmissions_answered_total'), 1);
  t.equal(m.engine.waiting, 1);
  a.needTicket = false;
  const second = await a.submitOk({ mediaId: 'go' });
  t.equal(m.engine.waiting, 1, 'replaced, not added');
  t.equal(m.metrics.get('match_replaced_total'), 1);
  if (first.msg.name === 'MATCH_SUBMIT_ACK') {
    const st = await a.request('MATCH_STATUS', { matchId: first.msg.body.matchId });
    t.equal(st.msg.name === 'MATCH_STATUS_RESULT' && st.msg.body.state, MatchState.CANCELLED, 'the first is cancelled');
  }
  const b = await terminal();
  await b.submitOk({ mediaId: 'chess' });
  t.equal(m.metrics.total('match_pushes_total'), 0, 'nobody matches the replaced request');
  const c = await terminal();
  const kc = await c.submitOk({ mediaId: 'go' });
  const rc = await c.waitResult(kc.matchId);
  t.same(rc.members!.map((x) => hexOf(x.id)), [a.locatorHex, c.locatorHex], 'the replacement is matched');
  t.equal((await a.waitResult(second.matchId)).state, MatchState.MATCHED);
});

t.test('pushes are retransmitted on their schedule until acknowledged, then abandoned after the last copy', async (t) => {
  // random 0: the first timeout is exactly T, so copies go at 0, T and 3T, and the push ends at 7T.
  const { m, clock, sends, a, b, ka, kb } = await unackedMatch(t, { push: { initialTimeoutMs: 1000, maxRetransmit: 2 }, random: () => 0 });
  clock.advance(999);
  t.equal(sends(), 2, 'no retransmission before T');
  clock.advance(1);
  t.equal(sends(), 4, 'the first retransmissions at T exactly, not at the next tick');
  await until(() => a.pushes.length === 2 && b.pushes.length === 2, 5000, 'first retransmission');
  t.equal(a.pushes[0]!.rid, a.pushes[1]!.rid, 'same rid on every copy');
  // An ack with another request ID does not end a push (the MATCH_STATUS after it, from the same
  // socket, is answered once matchd has handled it).
  a.client.send(a.dest, a.cs.encode('MATCH_RESULT_ACK', UdpClient.newRequestId(), { matchId: ka.matchId }));
  const foreign = await a.request('MATCH_STATUS', { matchId: kb.matchId });
  t.equal(foreign.msg.name === 'ERROR' && foreign.msg.body.code, ErrorCode.NOT_FOUND);
  t.ok(m.delivery.isPending(hexOf(ka.matchId)), 'an ack with a wrong request ID is ignored');
  // b acknowledges the copy it has now; a keeps silent.
  b.client.send(b.dest, b.cs.encode('MATCH_RESULT_ACK', Buffer.from(b.pushes[1]!.rid, 'hex'), { matchId: kb.matchId }));
  await until(() => !m.delivery.isPending(hexOf(kb.matchId)), 5000, 'ack of b');
  clock.advance(1999);
  t.equal(sends(), 4);
  clock.advance(1);
  t.equal(sends(), 5, 'the second retransmission at 3T, to a only');
  await until(() => a.pushes.length === 3, 5000, 'second retransmission');
  clock.advance(3999);
  t.equal(m.delivery.pendingCount, 1, 'still waiting for the last copy\'s ack');
  clock.advance(1);
  t.equal(m.delivery.pendingCount, 0, 'abandoned at 7T');
  clock.advance(60_000);
  t.equal(sends(), 5, 'at most maxRetransmit retransmissions; nothing after the ack');
  t.equal(clock.timers.pending, 0, 'no timer left');
  t.equal(m.metrics.get('match_push_abandoned_total'), 1);
  t.equal(m.metrics.get('match_push_retransmissions_total'), 3);
  // The result can still be polled.
  const st = await a.request('MATCH_STATUS', { matchId: ka.matchId });
  t.equal(st.msg.name === 'MATCH_STATUS_RESULT' && st.msg.body.state, MatchState.MATCHED);
});

t.test('default push timing: the first MATCH_RESULT retransmission within 1 to 1.5 s of the first copy (issue 15: 1.59 s was seen)', async (t) => {
  // No `push` options: matchd's defaults (--push-timeout 1000). The draw at its top (random just
  // under 1) puts the first resend at 1.5 s, the latest the spec allows; not one tick later.
  for (const [draw, at] of [[0, 1000], [0.9999999, 1500]] as const) {
    const { clock, sends } = await unackedMatch(t, { random: () => draw });
    clock.advance(at - 1);
    t.equal(sends(), 2, `draw ${draw}: nothing before ${at} ms`);
    clock.advance(1);
    t.equal(sends(), 4, `draw ${draw}: the first retransmissions at ${at} ms`);
  }
});

t.test('refusals: FULL, BAD_MESSAGE, FORBIDDEN, no ticket', async (t) => {
  const { terminal } = await world(t, { engine: { maxWaitingPerMedia: 1 } });
  const a = await terminal();
  const b = await terminal();
  const noTicket = await (async () => {
    a.needTicket = false;
    const r = await a.submit();
    return r;
  })();
  t.equal(noTicket.msg.name === 'ERROR' && noTicket.msg.body.code, ErrorCode.NO_SESSION, 'first submit without the ticket');
  t.ok(a.needTicket);
  await a.submitOk({ attrs: { side: 'a' }, requirements: [{ attr: 'side', op: 0, value: 'b', mandatory: true }] });
  const full = await b.submit({ attrs: { side: 'a' } });
  t.equal(full.msg.name === 'ERROR' && full.msg.body.code, ErrorCode.FULL);
  const blocked = await b.submit({ netMode: NetMode.UDP_BLOCKED, mediaId: 'go' });
  t.equal(blocked.msg.name === 'ERROR' && blocked.msg.body.code, ErrorCode.FORBIDDEN);
  const bad = await b.submit({ minParty: 5, maxParty: 3, mediaId: 'go' });
  t.equal(bad.msg.name === 'ERROR' && bad.msg.body.code, ErrorCode.BAD_MESSAGE);
});

t.test('a restarted matchd answers NO_SESSION; the terminal submits again with its ticket', async (t) => {
  const fx = fixture();
  let m: Matchd = await matchd(fx);
  const port = m.port;
  const a = await Terminal.open(fx, { ip: '127.0.0.1', port });
  t.teardown(async () => {
    await a.close();
    await m.stop();
  });
  const k = await a.submitOk();
  await m.stop();
  m = await matchd(fx, { port });
  const st = await a.request('MATCH_STATUS', { matchId: k.matchId });
  t.equal(st.msg.name, 'ERROR');
  if (st.msg.name === 'ERROR') {
    t.equal(st.msg.body.code, ErrorCode.NO_SESSION, 'session unknown after restart');
    t.equal(st.msg.auth, undefined, 'unauthenticated (the new process has no session keys yet)');
  }
  t.ok(a.needTicket, 'the terminal now sends its ticket with the next submit');
  const k2 = await a.submitOk();
  t.not(hexOf(k2.matchId), hexOf(k.matchId), 'a new request');
  t.equal(m.engine.waiting, 1);
});
