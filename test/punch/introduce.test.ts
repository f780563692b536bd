// The introduction handler (src/locatord/handlers/introduce.ts) in an in-process locatord, on
// both stores, with test terminals speaking through the real client stack: INTRODUCE answered with the peer's
// addresses and a sealed channel key, INTRO pushed to the peer at once and retransmitted until
// INTRO_ACK, both ends opening the same key, and the same NOT_FOUND for offline, unknown,
// invisible and unreachable peers.
import t from 'tap';
import type { Test } from 'tap';
import type { Reply } from '../../src/net/client.js';
import { NOT_INTRODUCED } from '../../src/locatord/handlers/introduce.js';
import type { MessageOf } from '../../src/wire/envelope.js';
import { ErrorCode } from '../../src/wire/errors.js';
import { openChannelKey } from '../../src/wire/peer.js';
import type { TestKeys } from '../locatord/fixtures/helpers.js';
import { errorCodeOf, forEachStore, presenceOf, pushClient, Terminal } from '../locatord/fixtures/helpers.js';
import type { Address } from '../../src/wire/addr.js';

/** A terminal whose socket collects server pushes. */
async function terminal(t: Test, keys: TestKeys, dest: Address): Promise<{ term: Terminal; pushes: Reply[]; next: () => Promise<Reply> }> {
  const { client, pushes, next } = await pushClient(t);
  const term = await Terminal.open(t, keys, dest, { client });
  return { term, pushes, next };
}

t.test('INTRODUCE: both ends told about each other at once, with one channel key only they can open', (t) => forEachStore(t, async (t, s) => {
  const { loc, dest, keys } = await s.start(t);
  const a = await terminal(t, keys, dest);
  const b = await terminal(t, keys, dest);
  const c = await terminal(t, keys, dest);
  await a.term.expect(t, 'REGISTER_ACK', a.term.register({ netMode: 4, nickname: 'alice', localAddrs: [{ ip: '10.1.0.2', port: a.term.address.port }] }));
  await b.term.expect(t, 'REGISTER_ACK', b.term.register({ netMode: 2, nickname: 'bob', reachable: true, localAddrs: [{ ip: '10.2.0.2', port: b.term.address.port }] }));
  await c.term.expect(t, 'REGISTER_ACK', c.term.register({ reachable: true }));
  t.equal((await presenceOf(loc, b.term.locatorId))!.reachable === true, true, 'REGISTER reachable is kept');
  t.equal((await presenceOf(loc, a.term.locatorId))!.reachable === true, false, 'absent means not reachable');

  const intro = b.next();
  const ack = await a.term.expect(t, 'INTRODUCE_ACK', a.term.request('INTRODUCE', { target: b.term.locatorId, netMode: 4 }));
  const push = await intro;
  t.equal(push.msg.name, 'INTRO', 'the target got INTRO');
  t.ok(b.term.session.accept(push), 'INTRO is MACed in the target\'s session');
  const toB = (push.msg as MessageOf<'INTRO'>).body;
  const toA = ack.body;
  t.same(toA.channelId, toB.channelId, 'one channel');
  t.same(toA.peer, b.term.locatorId);
  t.same(toA.addr, b.term.address, "asker gets the target's observed address");
  t.same(toA.localAddrs, [{ ip: '10.2.0.2', port: b.term.address.port }]);
  t.equal(toA.netMode, 2);
  t.equal(toA.nickname, 'bob');
  t.same(toA.observed, a.term.address, 'and its own as locatord sees it');
  t.same(toB.peer, a.term.locatorId);
  t.same(toB.addr, a.term.address, "target gets the asker's address: the INTRODUCE's source");
  t.same(toB.localAddrs, [{ ip: '10.1.0.2', port: a.term.address.port }], 'LAN addresses as registered');
  t.equal(toB.netMode, 4);
  t.equal(toB.nickname, 'alice');
  t.same(toB.observed, b.term.address);
  const keyA = openChannelKey(a.term.session.keys, toA.channelId, toA.peer, toA.sealedKey);
  const keyB = openChannelKey(b.term.session.keys, toB.channelId, toB.peer, toB.sealedKey);
  t.ok(keyA && keyB && keyA.equals(keyB), 'both open the same channel key');
  t.equal(openChannelKey(c.term.session.keys, toA.channelId, toA.peer, toA.sealedKey), null, 'a third terminal cannot open it');
  t.equal(openChannelKey(c.term.session.keys, toB.channelId, toB.peer, toB.sealedKey), null);
  t.not(Buffer.from(toA.sealedKey).toString('hex'), Buffer.from(toB.sealedKey).toString('hex'), 'sealed differently for each');

  // An INTRO_ACK from another session does not end the push; the target's does.
  a.term.client.send(dest, a.term.session.encode('INTRO_ACK', push.msg.rid, { channelId: toB.channelId }));
  await a.term.expect(t, 'QUERY_STATUS_RESULT', a.term.request('QUERY_STATUS', { ids: [] }));
  t.equal(loc.introductions.size, 1, 'still pending after a stranger acknowledged');
  b.term.client.send(dest, b.term.session.encode('INTRO_ACK', push.msg.rid, { channelId: toB.channelId }));
  await b.term.expect(t, 'QUERY_STATUS_RESULT', b.term.request('QUERY_STATUS', { ids: [] }));
  t.equal(loc.introductions.size, 0, 'acknowledged');
  t.equal(loc.metrics.get('intro_acks_total'), 1);
  t.equal(loc.metrics.get('introductions_total', { result: 'ok' }), 1);
}));

t.test('INTRO is retransmitted (each copy MACed anew, same request ID) until INTRO_ACK', (t) => forEachStore(t, async (t, s) => {
  const { loc, dest, keys } = await s.start(t);
  const a = await terminal(t, keys, dest);
  const b = await terminal(t, keys, dest);
  await a.term.expect(t, 'REGISTER_ACK', a.term.register());
  await b.term.expect(t, 'REGISTER_ACK', b.term.register({ reachable: true }));
  const first = b.next();
  await a.term.expect(t, 'INTRODUCE_ACK', a.term.request('INTRODUCE', { target: b.term.locatorId }));
  const one = await first;
  const two = await b.next();
  t.same(two.msg.rid, one.msg.rid, 'same request ID');
  t.not(two.msg.auth!.seq, one.msg.auth!.seq, 'new sequence number');
  t.ok(b.term.session.accept(one) && b.term.session.accept(two), 'both copies pass the replay window');
  b.term.client.send(dest, b.term.session.encode('INTRO_ACK', two.msg.rid, { channelId: (two.msg as MessageOf<'INTRO'>).body.channelId }));
  await b.term.expect(t, 'QUERY_STATUS_RESULT', b.term.request('QUERY_STATUS', { ids: [] }));
  // Acknowledged: nothing is left to retransmit (that no copy follows an ack is timed on a fake
  // clock in intro-push.test.ts); every copy sent before it arrives.
  t.equal(loc.introductions.size, 0, 'acknowledged');
  const sent = loc.metrics.get('intro_pushes_total');
  while (b.pushes.length < sent) await b.next();
  t.equal(b.pushes.length, sent, 'every copy sent arrived, and no other');
}));

t.test('offline, unknown, invisible and unreachable peers: the same NOT_FOUND; self and floods refused', (t) => forEachStore(t, async (t, s) => {
  const { loc, dest, keys } = await s.start(t);
  const a = await terminal(t, keys, dest);
  const hidden = await terminal(t, keys, dest);
  const closed = await terminal(t, keys, dest);
  const gone = await terminal(t, keys, dest);
  const open = await terminal(t, keys, dest);
  await a.term.expect(t, 'REGISTER_ACK', a.term.register());
  await hidden.term.expect(t, 'REGISTER_ACK', hidden.term.register({ reachable: true, visibility: 1 }));
  await closed.term.expect(t, 'REGISTER_ACK', closed.term.register({ reachable: false }));
  await gone.term.expect(t, 'REGISTER_ACK', gone.term.register({ reachable: true }));
  await gone.term.expect(t, 'UNREGISTER_ACK', gone.term.request('UNREGISTER', {}));
  const answers: string[] = [];
  for (const target of [hidden.term.locatorId, closed.term.locatorId, gone.term.locatorId, Buffer.alloc(16, 7)]) {
    const r = await a.term.request('INTRODUCE', { target });
    t.equal(errorCodeOf(r), ErrorCode.NOT_FOUND);
    answers.push(JSON.stringify(r.msg.body));
  }
  t.equal(new Set(answers).size, 1, 'one answer for every reason');
  t.match(answers[0], NOT_INTRODUCED);
  t.equal(hidden.pushes.length + closed.pushes.length, 0, 'no INTRO to a terminal that may not be reached');
  t.equal(errorCodeOf(await a.term.request('INTRODUCE', { target: a.term.locatorId })), ErrorCode.BAD_MESSAGE, 'not to itself');

  // A reachable peer that never acknowledges: at most 8 introductions wait on it.
  await open.term.expect(t, 'REGISTER_ACK', open.term.register({ reachable: true }));
  const codes: number[] = [];
  for (let i = 0; i < 9; i++) codes.push(errorCodeOf(await a.term.request('INTRODUCE', { target: open.term.locatorId })));
  t.same(codes.slice(0, 8), Array(8).fill(-1), 'eight introductions');
  t.equal(codes[8], ErrorCode.TRY_LATER, 'the ninth waits');
  t.equal(loc.metrics.get('introductions_total', { result: 'busy' }), 1);
}));
