// INTRO retransmission (the Introductions class of src/locatord/handlers/introduce.ts over the
// confirmable push, src/net/push.ts) on a fake clock: copies at 0, t, 3t, 7t, 15t for T = 500 ms,
// the ack that stops it (the target's session, the INTRO's request ID), abandon when the target
// registered anew or the store fails, the per-target bound. The wire side (MACs, real sockets)
// is test/punch/introduce.test.ts.
import t from 'tap';
import { Logger } from '../../src/common/log.js';
import { Metrics } from '../../src/common/metrics.js';
import type { IntroductionsOptions } from '../../src/locatord/handlers/introduce.js';
import { Introductions } from '../../src/locatord/handlers/introduce.js';
import type { ServerSession, ServerSessions } from '../../src/net/sessions.js';
import type { Address } from '../../src/wire/addr.js';
import type { Introduction } from '../../src/wire/catalog.js';
import { ErrorCode } from '../../src/wire/errors.js';
import { FakeTimers } from '../net/fixtures/net.js';

const session = (name: string): ServerSession => ({ sidHex: `sid-${name}`, locatorHex: name } as unknown as ServerSession);

function world(o: Partial<IntroductionsOptions> = {}) {
  const timers = new FakeTimers();
  const target = session('bob');
  const live = new Map<string, ServerSession>([[target.sidHex, target]]);
  const registered = new Map<string, { session: ServerSession; address: Address }>([['bob', { session: target, address: { ip: '192.0.2.1', port: 4000 } }]]);
  const sent: { at: number; rid: string; sid: string; to: Address }[] = [];
  const logs: Record<string, unknown>[] = [];
  // Stand-ins: the sessions "MAC" a copy by naming its session and request ID.
  const sessions = {
    get: (sid: string) => live.get(sid),
    live: (s: ServerSession) => live.get(s.sidHex) === s,
    encode: (s: ServerSession, _name: string, rid: Buffer) => Buffer.from(JSON.stringify({ sid: s.sidHex, rid: rid.toString('hex') })),
  } as unknown as ServerSessions;
  const metrics = new Metrics();
  const intros = new Introductions({
    target: (hex: string, s: ServerSession) => {
      const rec = registered.get(hex);
      return rec && rec.session === s ? rec.address : undefined;
    },
    sessions, metrics, timers, random: () => 0,
    send: (bytes, to) => {
      const x = JSON.parse(bytes.toString()) as { sid: string; rid: string };
      sent.push({ at: timers.now, ...x, to });
    },
    logger: new Logger({ service: 'locatord', write: (l) => logs.push(JSON.parse(l) as Record<string, unknown>) }),
    ...o,
  });
  let n = 0;
  const body = (): Introduction => ({ channelId: Buffer.alloc(16, ++n) } as unknown as Introduction);
  return { timers, target, live, registered, sent, logs, metrics, intros, body };
}

t.test('INTRO copies at 0, 500, 1500, 3500 and 7500 ms; given up at 15.5 s with a log line', async (t) => {
  const { timers, target, sent, logs, metrics, intros, body } = world();
  intros.push('bob', target, body());
  timers.advance(60_000);
  t.same(sent.map((s) => s.at), [0, 500, 1500, 3500, 7500]);
  t.equal(new Set(sent.map((s) => s.rid)).size, 1, 'one request ID for every copy');
  t.same(sent[0]!.to, { ip: '192.0.2.1', port: 4000 });
  t.equal(intros.size, 0);
  t.equal(metrics.get('intro_pushes_total'), 5);
  t.equal(metrics.get('intro_abandoned_total', { reason: 'no acknowledgement' }), 1);
  t.match(logs, [{ msg: 'introduction not acknowledged', target: 'bob', reason: 'no acknowledgement', copies: 5 }]);
});

t.test('each copy goes to the address registered at that moment', async (t) => {
  const { timers, target, registered, sent, intros, body } = world();
  intros.push('bob', target, body());
  registered.set('bob', { session: target, address: { ip: '192.0.2.1', port: 4444 } });
  timers.advance(500);
  t.same(sent.map((s) => s.to.port), [4000, 4444]);
});

t.test("only the target's session, with the INTRO's request ID, ends the push", async (t) => {
  const { timers, target, sent, metrics, intros, body } = world();
  const b = body();
  intros.push('bob', target, b);
  timers.advance(500);
  const rid = Buffer.from(sent[0]!.rid, 'hex');
  t.notOk(intros.ack(session('mallory'), b.channelId, rid), 'another session');
  t.notOk(intros.ack(target, b.channelId, Buffer.alloc(8)), 'another request ID');
  t.notOk(intros.ack(target, Buffer.alloc(16, 99), rid), 'another channel');
  t.equal(intros.size, 1);
  t.ok(intros.ack(target, b.channelId, rid));
  t.equal(intros.size, 0);
  t.equal(metrics.get('intro_acks_total'), 1);
  t.equal(timers.pending, 1, 'the pusher keeps its one timer (net/push.ts: not cleared per ack)');
  timers.advance(60_000);
  t.equal(sent.length, 2, 'no copy after the ack');
  t.equal(timers.pending, 0, 'no retransmission left: the timer fired on an empty bucket and set no other');
});

t.test('abandoned when the target registered anew, its session ended, or the store fails', async (t) => {
  {
    const { timers, target, registered, sent, metrics, intros, body } = world();
    intros.push('bob', target, body());
    registered.set('bob', { session: session('bob-again'), address: { ip: '192.0.2.1', port: 4000 } });
    timers.advance(500);
    t.equal(sent.length, 1);
    t.equal(metrics.get('intro_abandoned_total', { reason: 'target gone' }), 1, 'registered in another session');
  }
  {
    const { timers, target, live, sent, metrics, intros, body } = world();
    intros.push('bob', target, body());
    live.clear();
    timers.advance(500);
    t.equal(sent.length, 1);
    t.equal(metrics.get('intro_abandoned_total', { reason: 'target gone' }), 1, 'session gone');
  }
  {
    const { target, sent, metrics, intros, body } = world({ target: () => Promise.reject(new Error('redis down')) });
    intros.push('bob', target, body());
    await new Promise((r) => setImmediate(r));
    t.equal(sent.length, 0);
    t.equal(metrics.get('intro_abandoned_total', { reason: 'store unavailable' }), 1, 'store mode: the lookup failed');
    t.equal(intros.size, 0);
  }
});

t.test('at most 8 pending per target (TRY_LATER), room again after an ack', async (t) => {
  const { target, sent, intros, body } = world({ targetRatePerS: 1000, targetBurst: 1000 });
  const bodies: Introduction[] = [];
  for (let i = 0; i < 8; i++) {
    t.equal(intros.admit('bob'), null);
    const b = body();
    bodies.push(b);
    intros.push('bob', target, b);
  }
  t.match(intros.admit('bob'), { error: ErrorCode.TRY_LATER });
  t.equal(intros.admit('carol'), null, 'another target is not affected');
  t.ok(intros.ack(target, bodies[0]!.channelId, Buffer.from(sent[0]!.rid, 'hex')));
  t.equal(intros.admit('bob'), null);
  intros.close();
  t.equal(intros.size, 0);
});
