// PresencePushes (handlers/watch.ts) on a fake clock, without sockets: where each PRESENCE copy
// goes. The fan-out has just read the watcher's record, so the first copy goes to the address
// it gives (no second lookup per push: README "Presence at scale"); every retransmission asks
// the store again, so a watcher that moved meanwhile gets the later copies at its new address.
import { createHash } from 'node:crypto';
import t from 'tap';
import { Logger } from '../../src/common/log.js';
import { Metrics } from '../../src/common/metrics.js';
import type { ServerSession, ServerSessions } from '../../src/net/sessions.js';
import { PresencePushes, viewOf } from '../../src/locatord/handlers/watch.js';
import type { Address } from '../../src/wire/addr.js';
import { FakeTimers } from '../net/fixtures/net.js';

const watcherHex = 'aa'.repeat(16);
const session = { sidHex: 'bb'.repeat(16), locatorHex: watcherHex } as unknown as ServerSession;
const target = new Uint8Array(16).fill(0xcc);

function world() {
  const timers = new FakeTimers();
  let current: Address = { ip: '127.0.0.1', port: 1000 };
  const lookups: number[] = [];
  const sent: { at: number; to: Address }[] = [];
  const sessions = {
    get: (sidHex: string) => (sidHex === session.sidHex ? session : undefined),
    live: (s: ServerSession) => s === session,
    encode: () => Buffer.from('PRESENCE'),
  } as unknown as ServerSessions;
  const pushes = new PresencePushes({
    target: () => {
      lookups.push(timers.now);
      return current;
    },
    sessions,
    send: (_bytes, to) => sent.push({ at: timers.now, to }),
    metrics: new Metrics(),
    logger: new Logger({ service: 'test', write: () => {} }),
    initialTimeoutMs: 1000,
    timers,
  });
  return { timers, lookups, sent, pushes, move: (a: Address) => (current = a) };
}

t.test('the first copy goes where the fan-out read the watcher to be; retransmissions look it up', async (t) => {
  const { timers, lookups, sent, pushes, move } = world();
  const read = { ip: '127.0.0.1', port: 2000 };
  pushes.push(watcherHex, session, { id: target, online: true }, { firstTo: read });
  t.same(sent.map((s) => s.to), [read], 'first copy at once, to the address given');
  t.same(lookups, [], 'no lookup for the first copy');
  move({ ip: '127.0.0.1', port: 3000 });
  timers.advance(1500);
  t.equal(sent.length, 2, 'one retransmission after the first timeout');
  t.same(sent[1]!.to, { ip: '127.0.0.1', port: 3000 }, 'the retransmission goes where the store says now');
  t.equal(lookups.length, 1, 'looked up for the retransmission');
  pushes.close();
});

t.test('without an address from the fan-out, the first copy looks it up (as before)', async (t) => {
  const { lookups, sent, pushes } = world();
  pushes.push(watcherHex, session, { id: target, online: true });
  t.same(sent.map((s) => s.to), [{ ip: '127.0.0.1', port: 1000 }]);
  t.same(lookups, [0]);
  pushes.close();
});

t.test('viewOf: the same 12 characters as before it hashed in JavaScript (views kept in Redis stay comparable)', async (t) => {
  const old = (nickname: unknown, presence: unknown): string =>
    createHash('sha256').update(JSON.stringify([nickname ?? null, presence ?? null])).digest('base64').slice(0, 12);
  const id = new Uint8Array(16).fill(1);
  t.equal(viewOf({ id, online: false }), '', 'offline');
  t.equal(viewOf({ id, online: true }), old(undefined, undefined));
  t.equal(viewOf({ id, online: true, nickname: 'Ünïcode ✓' }), old('Ünïcode ✓', undefined));
  const presence = { mediaId: 'game-42', lookingForPartner: true, wants: { level: 3, mode: 'co-op' }, status: 'x'.repeat(120) };
  t.equal(viewOf({ id, online: true, nickname: 'n', presence }), old('n', presence), 'a record longer than a block');
  t.not(viewOf({ id, online: true, nickname: 'n', presence }), viewOf({ id, online: true, nickname: 'n', presence: { ...presence, status: 'y' } }));
});
