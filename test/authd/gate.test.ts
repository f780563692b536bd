// The per-device gate of authd (src/authd/gate.ts) on a fake clock, and the cookie master that
// lets the workers of one authd accept each other's cookies (cookie.ts).
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { CookieJar } from '../../src/authd/cookie.js';
import type { GateQuery } from '../../src/authd/gate.js';
import { DeviceGate, RemoteGate, serveGate } from '../../src/authd/gate.js';
import { WorkerChannel } from '../../src/common/workers.js';
import { ErrorCode } from '../../src/wire/errors.js';

const query = (now: number, o: Partial<GateQuery> = {}): GateQuery => ({
  deviceId: 'DEV-1', nonce: randomBytes(16).toString('hex'), timeMs: now, rid: randomBytes(8).toString('hex'), from: '192.0.2.1:4000', ...o,
});

t.test('DeviceGate: budget, clock, replay; copies from the same source only with serveDuplicates', async (t) => {
  let now = 1_000_000;
  const policy = { clockSkewS: 300, deviceRatePerMin: 3 };
  const gate = new DeviceGate(policy, { now: () => now, serveDuplicates: true });
  const q = query(now);
  t.same(gate.admit(q), { ok: true });
  t.same(gate.admit(q), { ok: true }, 'a retransmission (same rid, same source) is admitted again');
  t.same(gate.admit({ ...q }), { ok: true }, '... and does not spend the budget');
  t.match(gate.admit({ ...q, from: '192.0.2.9:4000' }), { ok: false, code: ErrorCode.REPLAY }, 'the same request from another source is a replay');
  t.match(gate.admit({ ...q, rid: randomBytes(8).toString('hex') }), { ok: false, code: ErrorCode.REPLAY }, 'under another request ID too');
  // The two replays above spent two of the three tokens (budget before replay, as in one process).
  t.match(gate.admit(query(now)), { ok: false, code: ErrorCode.RATE_LIMITED }, 'budget of 3 spent');
  t.match(gate.admit(query(now, { deviceId: 'DEV-2', timeMs: now - 301_000 })), { ok: false, code: ErrorCode.CLOCK_SKEW });
  now += 60_000;
  t.same(gate.admit(query(now)), { ok: true }, 'refilled after a minute');
  // Past the skew window the pair is forgotten, and its time is refused anyway.
  now += 302_000;
  t.match(gate.admit(q), { ok: false, code: ErrorCode.CLOCK_SKEW }, 'an old copy is refused for its time');

  const strict = new DeviceGate(policy, { now: () => now });
  const s = query(now);
  t.same(strict.admit(s), { ok: true });
  t.match(strict.admit(s), { ok: false, code: ErrorCode.REPLAY }, 'one process: the response cache answers copies; the gate refuses them');
});

t.test('DeviceGate: a clone flipping back is reported', async (t) => {
  let now = 1_000_000;
  const gate = new DeviceGate({ clockSkewS: 300, deviceRatePerMin: 0 }, { now: () => now });
  t.same(gate.admit(query(now, { from: 'A' })), { ok: true });
  now += 1000;
  t.same(gate.admit(query(now, { from: 'B' })), { ok: true });
  now += 1000;
  t.match(gate.admit(query(now, { from: 'A' })), { ok: true, conflict: { other: 'B', log: true } });
});

t.test('RemoteGate asks the primary over the channel and gets its verdicts', async (t) => {
  const gate = new DeviceGate({ clockSkewS: 300, deviceRatePerMin: 1 });
  // A fake cluster pipe: the worker side is a process-like emitter, the primary side a worker-like one.
  let sent = 0;
  const workerSide = Object.assign(new EventEmitter(), {
    send: (m: unknown): boolean => {
      sent++;
      setImmediate(() => primarySide.emit('message', m));
      return true;
    },
  });
  const primarySide = Object.assign(new EventEmitter(), {
    isConnected: () => true,
    send: (m: unknown): boolean => {
      setImmediate(() => workerSide.emit('message', m));
      return true;
    },
  });
  const primary = new WorkerChannel(primarySide);
  let asked = 0;
  primary.on('gate-ask', (m) => {
    asked++;
    serveGate(gate, primary, m.b);
  });
  const remote = new RemoteGate(new WorkerChannel(workerSide));
  const now = Date.now();
  const [a, b] = await Promise.all([remote.admit(query(now)), remote.admit(query(now))]);
  t.same(a, { ok: true });
  t.match(b, { ok: false, code: ErrorCode.RATE_LIMITED }, 'one budget for both questions');
  t.equal(sent, 1, 'the questions of one event-loop turn go in one message');
  t.equal(asked, 1, 'the primary takes it as a gate question');
  const [c] = await Promise.all([remote.admit(query(now + 1))]);
  t.match(c, { ok: false, code: ErrorCode.RATE_LIMITED });
  t.equal(sent, 2, 'a later turn sends its own');
});

t.test('RemoteGate: a closed channel answers TRY_LATER at once', async (t) => {
  const closed = Object.assign(new EventEmitter(), { connected: false, send: (): boolean => true });
  const remote = new RemoteGate(new WorkerChannel(closed));
  t.match(await remote.admit(query(Date.now())), { ok: false, code: ErrorCode.TRY_LATER });
});

t.test('CookieJar with a master: jars sharing it accept each other\'s cookies', async (t) => {
  let now = 1_000_000;
  const master = randomBytes(32);
  const a = new CookieJar({ now: () => now, master });
  const b = new CookieJar({ now: () => now, master });
  const from = { ip: '192.0.2.1', port: 4000 };
  const c = a.mint(from);
  t.ok(b.check(c, from), 'another worker accepts it');
  t.notOk(b.check(c, { ...from, port: 4001 }), 'still bound to the address');
  now += 60_000;
  t.ok(b.check(c, from), 'in the next period too, though b never minted in the first');
  now += 60_000;
  t.notOk(b.check(c, from), 'expired after two periods');
  t.notOk(new CookieJar({ now: () => now, master: randomBytes(32) }).check(a.mint(from), from), 'another master (a restart) does not accept it');
});
