// Cloned identities at authd (issue 19, item 3): a device flipping back to the address it left
// minutes ago is counted and logged with both addresses; a device that moves is not. Unit tests
// on a fake clock, then two real sockets authenticating one device against an in-process authd.
import t from 'tap';
import { CONFLICT_WINDOW_MS, IdentityConflicts } from '../../src/authd/conflicts.js';
import { authenticate, client, fixture, inProcess } from './fixtures/helpers.js';

t.test('a move is not a conflict; a flip back within the window is, logged once a minute', async (t) => {
  let now = 0;
  const c = new IdentityConflicts(() => now);
  t.equal(c.note('D', 'A'), null, 'first sight');
  now += 1000;
  t.equal(c.note('D', 'A'), null, 'same address again');
  now += 1000;
  t.equal(c.note('D', 'B'), null, 'moved to B');
  now += 30_000;
  t.same(c.note('D', 'A'), { other: 'B', log: true }, 'back to A within the window: B is contested');
  now += 30_000;
  t.same(c.note('D', 'B'), { other: 'A', log: false }, 'and again: counted, not logged within a minute');
  now += 60_000;
  t.same(c.note('D', 'A'), { other: 'B', log: true }, 'logged again after a minute');
  t.equal(c.note('E', 'X'), null, 'another device has its own record');
});

t.test('a return after the window is a move, not a conflict', async (t) => {
  let now = 0;
  const c = new IdentityConflicts(() => now);
  c.note('D', 'A');
  now += 1000;
  c.note('D', 'B');
  now += CONFLICT_WINDOW_MS + 1;
  t.equal(c.note('D', 'A'), null);
});

t.test('authd: one device authenticating from two sockets in turn is counted and logged', async (t) => {
  const f = fixture(t, 1);
  const a = await inProcess(t, f, { cookieThreshold: -1 });
  const [one, two] = [await client(t), await client(t)];
  const o = { device: f.devices[0]!, authd: { kid: f.authdKey.kid, seal: { public: f.authdKey.seal.public } } };
  for (const c of [one, two, one]) t.match(await authenticate(c, a.port, o), { ok: true });
  t.equal(a.metrics.get('identity_conflicts_total'), 1, 'one flip back counted');
  const line = a.lines.find((l) => l['msg'] === 'device identity in use at two addresses');
  t.ok(line, 'logged');
  t.equal(line?.['deviceId'], f.devices[0]!.deviceId);
  t.same(line?.['addrs'], [`127.0.0.1:${two.localPort}`, `127.0.0.1:${one.localPort}`], 'both addresses, the contested one first');
});
