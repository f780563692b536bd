// UdpClient and its retransmission schedule, on fake timers and a recording socket (exact),
// plus a loopback pass with real sockets for source matching.
import t from 'tap';
import type { Test } from 'tap';
import dgram from 'node:dgram';
import { defaultPolicy, retransmitPlan, retransmitSchedule, UdpClient } from '../../src/net/client.js';
import type { Reply } from '../../src/net/client.js';
import { DEFAULT_RETRANSMIT_TIMEOUT_MS, MAX_RETRANSMIT } from '../../src/wire/constants.js';
import { encodeDatagram } from '../../src/wire/envelope.js';
import { DevlocError, ErrorCode } from '../../src/wire/errors.js';
import { FakeTimers, RecordingSocket, rid, until } from './fixtures/net.js';

const T = 1000;
const policy = { initialTimeoutMs: T, maxRetransmit: 4, deadlineMs: 100_000 };

t.test('schedule: first timeout in [T, 1.5T], doubling, at most 4 retransmissions', async (t) => {
  t.equal(defaultPolicy.initialTimeoutMs, DEFAULT_RETRANSMIT_TIMEOUT_MS);
  t.equal(defaultPolicy.maxRetransmit, MAX_RETRANSMIT);
  t.equal(MAX_RETRANSMIT, 4);
  t.same(retransmitSchedule(policy, () => 0), [1000, 3000, 7000, 15000], 'random 0: T, 3T, 7T, 15T');
  t.same(retransmitSchedule(policy, () => 0.5), [1250, 3750, 8750, 18750], 'random 0.5: first 1.25T');
  for (const r of [0, 0.1, 0.37, 0.5, 0.9, 0.999999]) {
    const s = retransmitSchedule(policy, () => r);
    t.equal(s.length, 4, `r=${r}: four retransmissions`);
    t.ok(s[0]! >= T && s[0]! <= 1.5 * T, `r=${r}: first in [T, 1.5T]`);
    for (let i = 1; i < s.length; i++) {
      const gap = s[i]! - s[i - 1]!;
      const prev = i === 1 ? s[0]! : s[i - 1]! - s[i - 2]!;
      t.ok(Math.abs(gap - 2 * prev) <= 1, `r=${r}: interval ${i} doubles (${prev} -> ${gap})`);
    }
  }
  t.same(retransmitSchedule({ ...policy, maxRetransmit: 10, deadlineMs: 1e9 }, () => 0).length, 10, 'maxRetransmit is honoured');
  t.same(retransmitSchedule({ ...policy, maxRetransmit: 0 }, () => 0), [], 'no retransmission');
});

t.test('schedule: the deadline cuts retransmissions and the wait', async (t) => {
  t.same(retransmitSchedule({ ...policy, deadlineMs: 7000 }, () => 0), [1000, 3000], 'nothing at or after the deadline');
  const p = retransmitPlan({ ...policy, deadlineMs: 7000 }, () => 0);
  t.equal(p.giveUpAt, 7000, 'gives up at the deadline');
  const full = retransmitPlan(policy, () => 0);
  t.equal(full.giveUpAt, 31 * T, 'without a deadline: after the last timeout (31 T at random 0)');
  const upper = retransmitPlan(policy, () => 0.999999);
  t.ok(upper.giveUpAt <= 31 * 1.5 * T && upper.giveUpAt > 31 * 1.49 * T, 'at most 46.5 T');
  const d = retransmitPlan(defaultPolicy, () => 0.999999);
  t.ok(d.giveUpAt <= defaultPolicy.deadlineMs, 'default policy: never beyond its deadline');
});

function client(o: { random?: () => number; onPush?: (r: Reply) => void; policy?: Partial<typeof policy> } = {}) {
  const timers = new FakeTimers();
  const socket = new RecordingSocket();
  return UdpClient.open({ socket: socket.asSocket(), timers, random: o.random ?? (() => 0), policy: { ...policy, ...o.policy }, ...(o.onPush ? { onPush: o.onPush } : {}) })
    .then((c) => ({ c, timers, socket }));
}

const server = { ip: '198.51.100.10', port: 4701 };
// REFLECT / REFLECT_RESULT: an unauthenticated request and its answer.
const ack = (id: Buffer): Buffer => encodeDatagram('REFLECT_RESULT', id, { observed: { ip: '192.0.2.1', port: 1 }, from: { ip: '192.0.2.1', port: 1 } });
const ask = (id: Buffer): Buffer => encodeDatagram('REFLECT', id, {});
// A server push (a request type) in a session; the MAC slot is left zero (not checked here).
const push = (name: 'PROBE' | 'MATCH_RESULT', id: Buffer): Buffer =>
  name === 'PROBE'
    ? encodeDatagram('PROBE', id, {}, { sid: Buffer.alloc(16, 1), seq: 1 })
    : encodeDatagram('MATCH_RESULT', id, { matchId: Buffer.alloc(8), state: 2 }, { sid: Buffer.alloc(16, 1), seq: 2 });

t.test('retransmits on schedule, then rejects with TRY_LATER at the deadline', async (t) => {
  const { c, timers, socket } = await client({ random: () => 0.5 });
  const id = rid(1);
  const req = ask(id);
  const p = c.request(server, req, id);
  t.equal(socket.sent.length, 1, 'first send at once');
  timers.advance(1249);
  t.equal(socket.sent.length, 1, 'nothing before 1.25 T');
  timers.advance(1);
  t.equal(socket.sent.length, 2, 'first retransmission at 1.25 T');
  timers.advance(18750 - 1250);
  t.equal(socket.sent.length, 5, 'four retransmissions by 18.75 T');
  t.ok(socket.sent.every((s) => s.bytes.equals(req) && s.port === server.port && s.ip === server.ip), 'the same bytes each time');
  t.equal(c.stats.retransmitted, 4);
  timers.advance(38750 - 18750 - 1);
  t.equal(c.pendingCount, 1, 'still waiting for the last timeout');
  timers.advance(1);
  const err = await p.then(() => null, (e: unknown) => e);
  t.ok(err instanceof DevlocError, 'rejects with a DevlocError');
  t.equal((err as DevlocError).code, ErrorCode.TRY_LATER);
  t.equal(c.pendingCount, 0);
  t.equal(c.stats.timeouts, 1);
  t.equal(socket.sent.length, 5, 'never more than 1 + 4 sends');
  t.equal(timers.pending, 0, 'no timer left behind');
});

t.test('a short deadline wins over the schedule', async (t) => {
  const { c, timers, socket } = await client({ policy: { deadlineMs: 5000 } });
  const id = rid(2);
  const p = c.request(server, ask(id), id);
  timers.advance(4999);
  t.equal(socket.sent.length, 3, 'sends at 0, T, 3T');
  t.equal(c.pendingCount, 1);
  timers.advance(1);
  await t.rejects(p, { code: ErrorCode.TRY_LATER });
});

t.test('answers are matched by request ID and source; late, duplicate and forged ones ignored', async (t) => {
  const pushes: Reply[] = [];
  const { c, timers } = await client({ onPush: (r) => pushes.push(r) });
  const id = rid(3);
  let accepted = 0;
  const p = c.request(server, ask(id), id, {
    accept: (r) => r.msg.name === 'REFLECT_RESULT' && ++accepted > 0,
  });
  c.receive(ack(rid(99)), server);
  t.equal(c.stats.ignored, 1, 'other request ID ignored');
  c.receive(ack(id), { ip: '198.51.100.11', port: 4701 });
  t.equal(c.stats.ignored, 2, 'other source IP ignored');
  c.receive(ack(id), { ip: server.ip, port: 4702 });
  t.equal(c.stats.ignored, 3, 'other source port ignored');
  c.receive(encodeDatagram('ERROR', id, { code: ErrorCode.BAD_MAC }), server);
  t.equal(c.stats.ignored, 4, 'answer refused by accept() (forged) ignored');
  t.equal(c.pendingCount, 1, 'still waiting after the forgery');
  c.receive(Buffer.from('not cbor'), server);
  t.equal(c.stats.ignored, 5, 'garbage ignored');
  c.receive(Buffer.alloc(1300), server);
  t.equal(c.stats.ignored, 6, 'oversize ignored');
  c.receive(ack(id), server);
  const r = await p;
  t.equal(r.msg.name, 'REFLECT_RESULT');
  t.equal(accepted, 1);
  t.equal(timers.pending, 0, 'timers cleared on answer');
  c.receive(ack(id), server);
  t.equal(c.stats.ignored, 7, 'duplicate answer ignored');
  timers.advance(100_000);
  c.receive(ack(id), server);
  t.equal(c.stats.ignored, 8, 'late answer ignored');
  t.equal(c.stats.timeouts, 0, 'no timeout after the answer');
  t.equal(pushes.length, 0, 'responses never go to onPush');
});

t.test('anySource accepts an answer from another address', async (t) => {
  const { c } = await client();
  const id = rid(4);
  const p = c.request(server, ask(id), id, { anySource: true });
  c.receive(ack(id), { ip: '192.0.2.99', port: 9 });
  const r = await p;
  t.same(r.from, { ip: '192.0.2.99', port: 9 });
});

t.test('a destination written in another form still matches the normalised source', async (t) => {
  const { c } = await client();
  for (const [i, ip, seen] of [[5, '::ffff:127.0.0.1', '127.0.0.1'], [6, '2001:DB8:0:0::1', '2001:db8::1']] as const) {
    const id = rid(i);
    const p = c.request({ ip, port: 4701 }, ask(id), id);
    c.receive(ack(id), { ip: seen, port: 4701 });
    t.equal((await p).msg.name, 'REFLECT_RESULT', `${ip} answered from ${seen}`);
  }
});

t.test('pushes (requests from the server) go to onPush, even with a pending request ID', async (t) => {
  const pushes: Reply[] = [];
  const { c } = await client({ onPush: (r) => pushes.push(r) });
  const id = rid(7);
  const p = c.request(server, ask(id), id);
  c.receive(push('PROBE', id), server);
  t.equal(pushes.length, 1, 'a request type is a push, not an answer');
  t.equal(c.pendingCount, 1);
  c.receive(push('MATCH_RESULT', rid(8)), { ip: '192.0.2.1', port: 1 });
  t.equal(pushes.length, 2);
  t.equal(pushes[1]!.msg.name, 'MATCH_RESULT');
  c.receive(ack(id), server);
  await p;
});

t.test('no onPush: pushes are counted as ignored', async (t) => {
  const { c } = await client();
  c.receive(push('PROBE', rid(9)), server);
  t.equal(c.stats.ignored, 1);
});

t.test('an accept() that throws counts as a refusal, not a crash', async (t) => {
  const { c } = await client();
  const id = rid(10);
  let calls = 0;
  const p = c.request(server, ask(id), id, {
    accept: () => {
      if (++calls === 1) throw new Error('bug in a caller check');
      return true;
    },
  });
  t.doesNotThrow(() => c.receive(ack(id), server));
  t.equal(c.pendingCount, 1);
  c.receive(ack(id), server);
  await p;
});

t.test('a socket that refuses to send does not throw: the request times out', async (t) => {
  const { c, timers, socket } = await client();
  socket.send = () => {
    throw new Error('ERR_SOCKET_DGRAM_NOT_RUNNING');
  };
  const id = rid(11);
  let p: Promise<Reply> | undefined;
  t.doesNotThrow(() => {
    p = c.request(server, ask(id), id);
  });
  t.doesNotThrow(() => timers.advance(15_000), 'retransmissions do not throw either');
  timers.advance(100_000);
  await t.rejects(p!, { code: ErrorCode.TRY_LATER });
  t.equal(c.stats.sendErrors, 5);
  t.doesNotThrow(() => c.send(server, Buffer.from([1])), 'fire-and-forget send does not throw');
});

t.test('same request ID twice at once is refused; close() rejects what is pending', async (t) => {
  const { c } = await client();
  const id = rid(12);
  const p = c.request(server, ask(id), id);
  await t.rejects(c.request(server, ask(id), id), /already pending/);
  await c.close();
  await t.rejects(p, { code: ErrorCode.TRY_LATER });
  await c.close();
  t.pass('close() twice is harmless');
});

/** A UDP socket on an ephemeral loopback port. */
const bindLoopback = (): Promise<dgram.Socket> => new Promise((resolve) => {
  const s = dgram.createSocket('udp4');
  s.bind(0, '127.0.0.1', () => resolve(s));
});

/** Two loopback sockets, closed when the test ends. */
const twoLoopbackSockets = async (t: Test): Promise<[dgram.Socket, dgram.Socket]> => {
  const pair: [dgram.Socket, dgram.Socket] = [await bindLoopback(), await bindLoopback()];
  t.teardown(() => {
    for (const s of pair) s.close();
  });
  return pair;
};

t.test('loopback: answers from another socket are ignored, the right one resolves', async (t) => {
  const [real, impostor] = await twoLoopbackSockets(t);
  const c = await UdpClient.open({ bind: { host: '127.0.0.1', port: 0 }, policy: { initialTimeoutMs: 60_000, deadlineMs: 120_000 } });
  t.teardown(() => c.close());
  const id = UdpClient.newRequestId();
  const got = new Promise<void>((resolve) => real.once('message', () => resolve()));
  const p = c.request({ ip: '127.0.0.1', port: real.address().port }, ask(id), id);
  await got;
  const to = c.localPort;
  impostor.send(ack(id), to, '127.0.0.1');
  // Wait until the client has seen (and ignored) the impostor's answer.
  await until(() => c.stats.ignored >= 1, 'the impostor answer to be seen');
  t.equal(c.pendingCount, 1, 'the impostor did not answer the request');
  real.send(ack(id), to, '127.0.0.1');
  const r = await p;
  t.same(r.from, { ip: '127.0.0.1', port: real.address().port });
  t.equal(c.stats.sent, 1, 'no retransmission was needed');
});

t.test('detach(): the lent socket comes back open, without the client listening, its requests rejected', async (t) => {
  const [lent, peer] = await twoLoopbackSockets(t);
  const listeners = { message: lent.listenerCount('message'), error: lent.listenerCount('error') };
  const c = await UdpClient.open({ socket: lent, policy: { initialTimeoutMs: 60_000, deadlineMs: 120_000 } });
  t.equal(lent.listenerCount('message'), listeners.message + 1, 'the client reads the lent socket');
  const to = { ip: '127.0.0.1', port: peer.address().port };
  // One request answered through the client, one still pending at the detach.
  const id = UdpClient.newRequestId();
  peer.once('message', (_m, rinfo) => peer.send(ack(id), rinfo.port, rinfo.address));
  t.equal((await c.request(to, ask(id), id)).msg.name, 'REFLECT_RESULT');
  const pendingId = UdpClient.newRequestId();
  const pending = c.request(to, ask(pendingId), pendingId);
  t.equal(c.detach(), lent, 'detach gives the lent socket back');
  await t.rejects(pending, { code: ErrorCode.TRY_LATER }, 'what was pending is rejected');
  t.same({ message: lent.listenerCount('message'), error: lent.listenerCount('error') }, listeners, 'its listeners are off the socket');
  await t.rejects(c.request(to, ask(rid(3)), rid(3)), /closed or detached/, 'no request after the detach');
  // The owner reads the socket itself now; the client sees nothing more.
  const ignoredBefore = c.stats.ignored;
  const got = new Promise<Buffer>((resolve) => lent.once('message', (m) => resolve(m)));
  peer.send(ack(pendingId), lent.address().port, '127.0.0.1');
  t.same(await got, ack(pendingId), 'the socket is open and its owner receives');
  t.equal(c.stats.ignored, ignoredBefore, 'the detached client did not see the datagram');
  t.equal(c.detach(), lent, 'a second detach is harmless');
});

t.test('an address challenge starts the request\'s retransmissions afresh (at most 3 times): the copy sent with the proof may be met by a suppressed challenge', async (t) => {
  const { c, timers, socket } = await client({ random: () => 0.5 });
  const id = rid(40);
  const req = ask(id);
  const p = c.request(server, req, id);
  // A session-MACed challenge (the MAC is the caller's accept(), true here).
  const challenge = (seq: number): Buffer => encodeDatagram('ADDR_CHALLENGE', id, { token: Buffer.alloc(16, seq) }, { sid: Buffer.alloc(16, 1), seq });
  const requestsSent = (): number => socket.sent.filter((s) => s.bytes.equals(req)).length;
  // The schedule spent (sends at 0, 1.25, 3.75, 8.75 and 18.75 T), then the challenge.
  timers.advance(18_750);
  t.equal(requestsSent(), 5);
  c.receive(challenge(1), server);
  t.equal(socket.sent.length, 7, 'ADDR_PROOF and the request again, at once');
  t.equal(requestsSent(), 6);
  // That copy overtook the proof and got no answer. Without a fresh schedule the request would
  // now only wait for its give-up at 38.75 T, sending nothing more.
  timers.advance(1250);
  t.equal(requestsSent(), 7, 'a retransmission 1.25 T after the challenge');
  timers.advance(38_750 - 1250 - 1);
  t.equal(c.pendingCount, 1, 'still waiting a whole schedule after the challenge');
  c.receive(ack(id), server);
  t.equal((await p).msg.name, 'REFLECT_RESULT', 'answered');
  t.equal(timers.pending, 0, 'no timer left behind');

  // Bounded: a server that challenges every copy is not retried forever.
  const id2 = rid(41);
  const req2 = ask(id2);
  const p2 = c.request(server, req2, id2).then(() => 'answered', (e: DevlocError) => e.code);
  const challenge2 = (seq: number): Buffer => encodeDatagram('ADDR_CHALLENGE', id2, { token: Buffer.alloc(16, seq) }, { sid: Buffer.alloc(16, 1), seq });
  for (let i = 1; i <= 5; i++) {
    timers.advance(1000);
    c.receive(challenge2(10 + i), server);
  }
  // Now at 5 T: the third challenge (at 3 T) started the last schedule, which gives up at 3 + 38.75 T.
  timers.advance(3000 + 38_750 - 5000 - 1);
  t.equal(c.pendingCount, 1, 'the third challenge started the last schedule (at 3 T)...');
  timers.advance(1);
  t.equal(await p2, ErrorCode.TRY_LATER, '...and the fourth and fifth did not: given up at 3 T + 38.75 T');
});
