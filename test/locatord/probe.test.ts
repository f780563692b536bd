// Liveness: a registration not refreshed for 80% of its TTL gets a session-MACed PROBE at its
// registered address; the terminal's PROBE_ACK extends it like a refresh. Sweeps are run by hand
// under an injected clock.
import t from 'tap';
import { UdpClient } from '../../src/net/client.js';
import { FakeClock, pushClient, startServer, Terminal } from './fixtures/helpers.js';

t.test('probe near expiry; PROBE_ACK extends the registration', async (t) => {
  const clock = new FakeClock();
  const { loc, dest, keys } = await startServer(t, { now: clock.now, limits: { minTtlS: 30, defaultTtlS: 30, probeAtPercent: 80 } });
  const { client, pushes, next: nextPush } = await pushClient(t);
  const term = await Terminal.open(t, keys, dest, { client, nowS: Math.floor(clock.ms / 1000) });
  await term.expect(t, 'REGISTER_ACK', term.request('REGISTER', { ticket: term.creds.ticket, timeMs: clock.ms }));
  const id = term.locatorId.toString('hex');
  const expiresAt = loc.table.tickToMs(loc.table.get(id)!.expTick);

  clock.advance(23_000);
  t.same(loc.sweep(), { expired: 0, probes: 0 }, 'not yet at 80%');
  clock.advance(1_200);
  const next = nextPush();
  t.same(loc.sweep(), { expired: 0, probes: 1 }, 'probed at 80% of the TTL');
  const probe = await next;
  t.equal(probe.msg.name, 'PROBE');
  t.ok(term.session.accept(probe), 'the probe is MACed in the session');
  t.same(loc.sweep(), { expired: 0, probes: 0 }, 'one probe per period');

  // The agent's answer: a session-MACed PROBE_ACK of its own; no reply comes back.
  term.client.send(dest, term.session.encode('PROBE_ACK', probe.msg.rid, {}));
  // Anything after it from the same socket is handled after it.
  await term.expect(t, 'QUERY_STATUS_RESULT', term.request('QUERY_STATUS', { ids: [term.locatorId] }));
  const rec = loc.table.get(id)!;
  t.ok(loc.table.tickToMs(rec.expTick) > expiresAt, 'expiry extended');
  t.equal(rec.probed, false);
  t.equal(loc.metrics.get('probe_acks_total'), 1);
  t.equal(loc.metrics.get('probes_sent_total'), 1);

  clock.advance(20_000);
  t.ok(loc.table.get(id), 'alive past its original expiry');
  t.equal(pushes.length, 1);
});

t.test('no answer: the registration expires; probes per sweep are bounded', async (t) => {
  const clock = new FakeClock();
  const { loc, dest, keys } = await startServer(t, { now: clock.now, limits: { minTtlS: 30, defaultTtlS: 30, maxProbesPerSweep: 3 } });
  const nowS = Math.floor(clock.ms / 1000);
  const client = await UdpClient.open({ bind: { host: '127.0.0.1', port: 0 }, onPush: () => {} });
  t.teardown(() => client.close());
  const terms = await Promise.all(Array.from({ length: 5 }, () => Terminal.open(t, keys, dest, { client, nowS })));
  for (const x of terms) await x.expect(t, 'REGISTER_ACK', x.request('REGISTER', { ticket: x.creds.ticket, timeMs: clock.ms }));
  clock.advance(25_000);
  t.same(loc.sweep(), { expired: 0, probes: 3 });
  t.same(loc.sweep(), { expired: 0, probes: 0 }, 'the rest wait for the next second');
  clock.advance(1_000);
  t.same(loc.sweep(), { expired: 0, probes: 2 });
  clock.advance(4_200);
  t.same(loc.sweep(), { expired: 5, probes: 0 });
  t.equal(loc.table.size, 0);
  t.equal(loc.metrics.get('expiries_total'), 5);
});
