// The confirmable push (src/net/push.ts) on a fake clock: when each copy goes out, the backoff,
// giving up after MAX_RETRANSMIT, the ack (by key and request ID) stopping it, abandon and skip
// from the copy builder, promises, bounds, defer and close.
import t from 'tap';
import type { PendingPush, PushCopy, PushOutcome, PusherOptions } from '../../src/net/push.js';
import { Pusher } from '../../src/net/push.js';
import { MAX_RETRANSMIT } from '../../src/wire/constants.js';
import { FakeTimers } from './fixtures/net.js';

const to = { ip: '127.0.0.1', port: 9 };

function world(o: Partial<PusherOptions<string>> = {}) {
  const timers = new FakeTimers();
  const sent: { at: number; text: string }[] = [];
  const copies: { at: number; n: number; skipped: string | undefined }[] = [];
  const ended: { at: number; key: string; outcome: PushOutcome; copies: number }[] = [];
  let rids = 0;
  const pusher = new Pusher<string>({
    send: (bytes) => sent.push({ at: timers.now, text: bytes.toString() }),
    random: () => 0,
    newRid: () => Buffer.alloc(8, ++rids),
    timers,
    onCopy: (_p, n, skipped) => copies.push({ at: timers.now, n, skipped }),
    onEnd: (p, outcome) => ended.push({ at: timers.now, key: p.key, outcome, copies: p.copies }),
    ...o,
  });
  /** A push whose copies say which copy they are and with which request ID. */
  const start = (key: string, target = 'T', build?: (rid: Buffer, n: number) => PushCopy | Promise<PushCopy>) =>
    pusher.push({ key, target, data: `data of ${key}`, build: build ?? ((rid, n) => ({ bytes: Buffer.from(`${key} ${rid.toString('hex')} #${n}`), to })) });
  return { timers, sent, copies, ended, pusher, start };
}

t.test('schedule: copies at 0, t, 3t, 7t, 15t, given up at 31t (t uniform in [T, 1.5T])', async (t) => {
  for (const [random, T, first] of [[0, 1000, 1000], [0.5, 1000, 1250], [1, 1000, 1500], [0, 500, 500]] as const) {
    const { timers, sent, ended, pusher, start } = world({ random: () => random, initialTimeoutMs: T });
    t.equal(start('a'), null);
    t.same(sent.map((s) => s.at), [0], 'the first copy at once');
    timers.advance(100_000);
    t.same(sent.map((s) => s.at), [0, first, 3 * first, 7 * first, 15 * first], `random ${random}, T ${T}: ${MAX_RETRANSMIT} retransmissions, doubling`);
    t.same(ended, [{ at: 31 * first, key: 'a', outcome: { abandoned: 'no acknowledgement' }, copies: 5 }], 'abandoned when the last copy\'s timeout ends');
    t.equal(pusher.size, 0);
    t.equal(timers.pending, 0, 'no timer left');
  }
  const { pusher } = world({ initialTimeoutMs: 1000 });
  t.equal(pusher.lifetimeMs, 46_500, 'longest life: 1.5T (2^5 - 1)');
});

t.test('every copy is built anew with the same request ID', async (t) => {
  const { timers, sent, pusher, start } = world();
  start('a');
  timers.advance(3000);
  t.same(sent.map((s) => s.text), ['a 0101010101010101 #1', 'a 0101010101010101 #2', 'a 0101010101010101 #3']);
  t.equal(pusher.get('a')!.data, 'data of a');
  start('b');
  t.equal(sent.at(-1)!.text, 'b 0202020202020202 #1', 'another push, another request ID');
});

t.test('maxRetransmit 0: one copy, abandoned after its timeout', async (t) => {
  const { timers, sent, ended, start } = world({ maxRetransmit: 0 });
  start('a');
  timers.advance(10_000);
  t.same(sent.map((s) => s.at), [0]);
  t.same(ended.map((e) => [e.at, e.outcome]), [[1000, { abandoned: 'no acknowledgement' }]]);
});

t.test('an ack with the push\'s request ID stops it; another request ID or a refused check does not', async (t) => {
  const { timers, sent, ended, pusher, start } = world();
  start('a');
  timers.advance(1000);
  t.equal(sent.length, 2);
  const rid = pusher.get('a')!.rid;
  t.notOk(pusher.ack('a', 'ack', Buffer.alloc(8, 9)), 'wrong request ID');
  t.notOk(pusher.ack('a', 'ack', rid, (p: PendingPush<string>) => p.data === 'someone else'), 'refused by the caller\'s check');
  t.notOk(pusher.ack('nope', 'ack', rid), 'unknown key');
  t.ok(pusher.isPending('a'));
  t.ok(pusher.ack('a', 'ack', rid, (p) => p.data === 'data of a'));
  t.same(ended, [{ at: 1000, key: 'a', outcome: { acked: 'ack' }, copies: 2 }]);
  t.equal(timers.pending, 1, 'its timer is kept (not a clearTimeout per ack)');
  timers.advance(100_000);
  t.equal(sent.length, 2, 'no copy after the ack');
  t.equal(timers.pending, 0, 'the kept timer fired once, found nothing and set no other');
  t.notOk(pusher.ack('a', 'ack', rid), 'a second ack ends nothing');
  t.equal(ended.length, 1);
  // Without a request ID (a poll that returned the result): by key alone.
  start('b');
  t.ok(pusher.ack('b', 'poll'));
  t.same(ended[1]!.outcome, { acked: 'poll' });
});

t.test('the builder abandons (target gone) or skips a copy (it still counts)', async (t) => {
  const { timers, sent, copies, ended, start } = world();
  let gone = false;
  let noSession = false;
  start('a', 'T', (_rid, n) => (gone ? { abandon: 'target gone' } : noSession ? { skip: 'no session' } : { bytes: Buffer.from(`#${n}`), to }));
  noSession = true;
  timers.advance(1000);
  t.same(copies.at(-1), { at: 1000, n: 2, skipped: 'no session' }, 'copy 2 skipped');
  t.equal(sent.length, 1);
  noSession = false;
  timers.advance(2000);
  t.same(sent.map((s) => [s.at, s.text]), [[0, '#1'], [3000, '#3']], 'the schedule goes on: copy 3 at 3t');
  gone = true;
  timers.advance(4000);
  t.same(ended, [{ at: 7000, key: 'a', outcome: { abandoned: 'target gone' }, copies: 3 }]);
  t.equal(timers.pending, 0);
  // A builder that throws abandons its push, with the error for the log.
  start('b', 'T', () => {
    throw new Error('boom');
  });
  t.match(ended.at(-1), { key: 'b', outcome: { abandoned: 'error', error: { message: 'boom' } }, copies: 0 });
});

t.test('a builder answering with a promise: sent when it resolves; abandoned when it rejects; an ack meanwhile wins', async (t) => {
  const { timers, sent, ended, pusher, start } = world();
  let resolveCopy!: (c: PushCopy) => void;
  start('a', 'T', () => new Promise<PushCopy>((r) => { resolveCopy = r; }));
  t.equal(sent.length, 0, 'nothing before the lookup answers');
  timers.advance(10);
  resolveCopy({ bytes: Buffer.from('x'), to });
  await Promise.resolve();
  t.same(sent.map((s) => s.at), [10]);
  t.same(timers.dueTimes(), [1010], 'the next copy timed from the send');
  timers.advance(1000);
  t.ok(pusher.ack('a', 'ack', pusher.get('a')!.rid), 'acknowledged while copy 2 is being made');
  resolveCopy({ bytes: Buffer.from('late'), to });
  await Promise.resolve();
  t.equal(sent.length, 1, 'the late copy is not sent');
  t.equal(timers.pending, 0);
  start('b', 'T', () => Promise.reject(new Error('store down')));
  await new Promise((r) => setImmediate(r));
  t.match(ended.at(-1), { key: 'b', outcome: { abandoned: 'error', error: { message: 'store down' } } });
  t.equal(pusher.size, 0);
});

t.test('bounds: in all and per target; a duplicate key is refused', async (t) => {
  const { pusher, start } = world({ maxPending: 3, maxPendingPerTarget: 2 });
  t.equal(start('a1', 'A'), null);
  t.equal(start('a2', 'A'), null);
  t.notOk(pusher.hasRoom('A'));
  t.equal(start('a3', 'A'), 'full', 'third to one target');
  t.ok(pusher.hasRoom('B'));
  t.equal(start('a1', 'B'), 'duplicate');
  t.equal(start('b1', 'B'), null);
  t.notOk(pusher.hasRoom('C'), 'three in all');
  t.equal(start('c1', 'C'), 'full');
  pusher.ack('a1', 'ack');
  t.ok(pusher.hasRoom('A') && pusher.hasRoom('C'), 'an ack makes room');
  t.equal(pusher.size, 2);
});

t.test('defer: the first copy waits for it, and is not sent if acknowledged before', async (t) => {
  const deferred: (() => void)[] = [];
  const { timers, sent, pusher, start } = world({ defer: (fn) => deferred.push(fn) });
  start('a');
  start('b');
  t.equal(sent.length, 0);
  t.ok(pusher.isPending('a'), 'pending at once: a poll may end it');
  pusher.ack('b', 'poll');
  for (const fn of deferred) fn();
  t.same(sent.map((s) => s.text.split(' ')[0]), ['a']);
  timers.advance(1000);
  t.equal(sent.length, 2);
});

t.test('close: every push stops without being reported; later pushes are refused', async (t) => {
  const { timers, sent, ended, pusher, start } = world();
  start('a');
  start('b', 'U');
  pusher.close();
  t.equal(pusher.size, 0);
  t.equal(timers.pending, 0);
  timers.advance(100_000);
  t.equal(sent.length, 2);
  t.same(ended, []);
  t.equal(start('c'), 'closed');
});

t.test('one timer for all the pushes, each copy still at its own time; an ack takes a push out', async (t) => {
  let r = 0;
  const { timers, sent, pusher, start } = world({ random: () => (r++ % 3) / 2 });
  for (let i = 0; i < 30; i++) start(`k${i}`, `T${i}`);
  t.equal(timers.pending, 1, 'one timer, not one per push');
  t.same(timers.dueTimes(), [1000], 'set for the earliest');
  for (let i = 1; i < 30; i += 2) pusher.ack(`k${i}`, 'ack');
  timers.advance(100_000);
  const firsts = new Map<string, number[]>();
  for (const s of sent) {
    const key = s.text.split(' ')[0]!;
    firsts.set(key, [...(firsts.get(key) ?? []), s.at]);
  }
  for (let i = 0; i < 30; i++) {
    const first = [1000, 1250, 1500][i % 3]!;
    t.same(firsts.get(`k${i}`), i % 2 ? [0] : [0, first, 3 * first, 7 * first, 15 * first], `k${i}: ${i % 2 ? 'acknowledged' : 'its own schedule'}`);
  }
  t.equal(pusher.size, 0);
  t.equal(timers.pending, 0, 'no timer once nothing waits');
});

t.test('pushes acked before the next comes (below saturation): one timer for all, not one set and cleared per push', async (t) => {
  const { timers, sent, ended, pusher, start } = world();
  let set = 0;
  let cleared = 0;
  const setTimeout = timers.setTimeout.bind(timers);
  const clearTimeout = timers.clearTimeout.bind(timers);
  timers.setTimeout = (fn, ms) => (set++, setTimeout(fn, ms));
  timers.clearTimeout = (h) => (cleared++, clearTimeout(h));
  for (let i = 0; i < 50; i++) {
    start(`k${i}`);
    t.ok(pusher.ack(`k${i}`, 'ack', pusher.get(`k${i}`)!.rid));
    timers.advance(2);
  }
  t.equal(set, 1, 'one timer set for the 50 pushes');
  t.equal(cleared, 0, 'and never cleared');
  timers.advance(100_000);
  t.equal(sent.length, 50, 'one copy each: none after its ack');
  t.equal(ended.length, 50);
  t.equal(timers.pending, 0, 'nothing left once the emptied buckets are past');
  t.equal(set, 1, 'emptied buckets wake nobody');
  start('late');
  timers.advance(1000);
  t.equal(sent.at(-1)!.text.split(' ')[0], 'late', 'a push after the pause still gets its timer');
  t.equal(sent.filter((s) => s.text.startsWith('late')).length, 2, 'first copy and its retransmission');
  pusher.close();
  t.equal(timers.pending, 0, 'close leaves no timer');
});

t.test('on the real timers (due times rounded up to 10 ms), a copy is never made before its time', async (t) => {
  const sent: number[] = [];
  const t0 = performance.now();
  const pusher = new Pusher<string>({ send: () => sent.push(performance.now() - t0), initialTimeoutMs: 20, random: () => 0, maxRetransmit: 1 });
  const ended = new Promise<void>((resolve) => {
    pusher.push({ key: 'a', target: 'T', data: '', build: () => ({ bytes: Buffer.from('x'), to }) });
    const poll = setInterval(() => {
      if (pusher.size === 0) {
        clearInterval(poll);
        resolve();
      }
    }, 5);
  });
  await ended;
  t.equal(sent.length, 2, 'the first copy and one retransmission, then given up');
  t.ok(sent[1]! >= 20, 'the retransmission not before its time');
});
