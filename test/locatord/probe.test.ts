// Liveness: a registration not refreshed for 80% of its TTL gets a session-MACed PROBE at its
// registered address; the terminal's PROBE_ACK extends it like a refresh. Sweeps are run by hand
// under an injected clock, on both stores. On Redis the instance a terminal last spoke to
// probes it (after checking the record in Redis), and a terminal that moved to another instance
// is probed by that one only, at its own time (Redis's own expiry runs on real time: the TTLs
// here are far longer than the test).
import t from 'tap';
import { UdpClient } from '../../src/net/client.js';
import { TICK_MS } from '../../src/locatord/table.js';
import type { SharedStore } from '../../src/locatord/store/shared.js';
import { FakeClock, forEachStore, onRedisStore, presenceOf, pushClient, Terminal } from './fixtures/helpers.js';

t.test('probe near expiry; PROBE_ACK extends the registration', (t) => forEachStore(t, async (t, s) => {
  const clock = new FakeClock();
  const { loc, dest, keys } = await s.start(t, { now: clock.now, limits: { minTtlS: 30, defaultTtlS: 30, probeAtPercent: 80 } });
  const { client, pushes, next: nextPush } = await pushClient(t);
  const term = await Terminal.open(t, keys, dest, { client, nowS: Math.floor(clock.ms / 1000) });
  await term.expect(t, 'REGISTER_ACK', term.request('REGISTER', { ticket: term.creds.ticket, timeMs: clock.ms }));
  const expiresAt = (await presenceOf(loc, term.locatorId))!.expMs;

  clock.advance(23_000);
  t.same(await loc.sweep(), { expired: 0, probes: 0 }, 'not yet at 80%');
  clock.advance(1_200);
  const next = nextPush();
  t.same(await loc.sweep(), { expired: 0, probes: 1 }, 'probed at 80% of the TTL');
  const probe = await next;
  t.equal(probe.msg.name, 'PROBE');
  t.ok(term.session.accept(probe), 'the probe is MACed in the session');
  t.same(await loc.sweep(), { expired: 0, probes: 0 }, 'one probe per period');

  // The agent's answer: a session-MACed PROBE_ACK of its own; no reply comes back.
  term.client.send(dest, term.session.encode('PROBE_ACK', probe.msg.rid, {}));
  // Anything after it from the same socket is handled after it (embedded); on Redis the two
  // handlers run concurrently (PROBE_ACK takes two round trips), so wait for its count.
  await term.expect(t, 'QUERY_STATUS_RESULT', term.request('QUERY_STATUS', { ids: [term.locatorId] }));
  for (const end = Date.now() + 10_000; loc.metrics.get('probe_acks_total') !== 1 && Date.now() < end;) await new Promise((r) => setTimeout(r, 5));
  const rec = (await presenceOf(loc, term.locatorId))!;
  t.ok(rec.expMs > expiresAt, 'expiry extended');
  // The embedded table keeps times in ticks of TICK_MS; Redis keeps milliseconds.
  if (s.kind === 'redis') t.equal(rec.regMs, clock.ms, 'registration time: the PROBE_ACK');
  else t.ok(Math.abs(rec.regMs - clock.ms) <= TICK_MS, 'registration time: the PROBE_ACK (to the tick)');
  t.equal(loc.metrics.get('probe_acks_total'), 1);
  t.equal(loc.metrics.get('probes_sent_total'), 1);

  clock.advance(20_000);
  t.ok(await presenceOf(loc, term.locatorId), 'alive past its original expiry');
  t.same(await loc.sweep(), { expired: 0, probes: 0 }, 'renewed: not due again yet');
  t.equal(pushes.length, 1);
  clock.advance(4_300);
  const again = nextPush();
  t.same(await loc.sweep(), { expired: 0, probes: 1 }, 'due again 80% into the renewed TTL');
  t.equal((await again).msg.name, 'PROBE');
  t.equal(pushes.length, 2);
}));

t.test('a re-REGISTER with a shorter TTL is probed at 80% of the new TTL (issue 18)', (t) => forEachStore(t, async (t, s) => {
  const clock = new FakeClock();
  const { loc, dest, keys } = await s.start(t, { now: clock.now, limits: { minTtlS: 30, defaultTtlS: 30, maxTtlS: 600, probeAtPercent: 80 } });
  const { client, next: nextPush } = await pushClient(t);
  const term = await Terminal.open(t, keys, dest, { client, nowS: Math.floor(clock.ms / 1000) });
  await term.expect(t, 'REGISTER_ACK', term.request('REGISTER', { ticket: term.creds.ticket, timeMs: clock.ms, ttlS: 600 }));
  t.same(await loc.sweep(), { expired: 0, probes: 0 });
  const ack = await term.expect(t, 'REGISTER_ACK', term.request('REGISTER', { timeMs: clock.ms, ttlS: 30 }));
  t.equal(ack.body.ttlS, 30, 'the record now has the shorter TTL');
  clock.advance(24_200);
  const next = nextPush();
  t.same(await loc.sweep(), { expired: 0, probes: 1 }, 'probed before the new expiry, not at the old TTL\'s probe time');
  t.equal((await next).msg.name, 'PROBE');
}));

t.test('no answer: the registration expires; probes per sweep are bounded', (t) => forEachStore(t, async (t, s) => {
  const clock = new FakeClock();
  const { loc, dest, keys } = await s.start(t, { now: clock.now, limits: { minTtlS: 30, defaultTtlS: 30, maxProbesPerSweep: 3 } });
  const nowS = Math.floor(clock.ms / 1000);
  const client = await UdpClient.open({ bind: { host: '127.0.0.1', port: 0 }, onPush: () => {} });
  t.teardown(() => client.close());
  const terms = await Promise.all(Array.from({ length: 5 }, () => Terminal.open(t, keys, dest, { client, nowS })));
  for (const x of terms) await x.expect(t, 'REGISTER_ACK', x.request('REGISTER', { ticket: x.creds.ticket, timeMs: clock.ms }));
  clock.advance(25_000);
  t.same(await loc.sweep(), { expired: 0, probes: 3 });
  t.same(await loc.sweep(), { expired: 0, probes: 0 }, 'the rest wait for the next second');
  clock.advance(1_000);
  t.same(await loc.sweep(), { expired: 0, probes: 2 });
  clock.advance(4_200);
  t.same(await loc.sweep(), { expired: 5, probes: 0 });
  t.same(await loc.store.getPresences(terms.map((x) => x.locatorId.toString('hex'))), terms.map(() => undefined), 'all expired');
  if (s.kind === 'embedded') t.equal(loc.metrics.get('expiries_total'), 5);
}));

onRedisStore(t, 'redis: a terminal refreshed through another instance is probed by that one only', async (t, s) => {
  const clock = new FakeClock();
  const o = { now: clock.now, limits: { minTtlS: 30, defaultTtlS: 30, probeAtPercent: 80 } };
  const a = await s.start(t, o);
  const b = await s.start(t, { ...o, keys: a.keys });
  const { client, next, pushes } = await pushClient(t);
  const term = await Terminal.open(t, a.keys, a.dest, { client, nowS: Math.floor(clock.ms / 1000) });
  await term.expect(t, 'REGISTER_ACK', term.request('REGISTER', { ticket: term.creds.ticket, timeMs: clock.ms }));
  clock.advance(10_000);
  term.dest = b.dest;
  await term.expect(t, 'REFRESH_ACK', term.request('REFRESH', {}));
  t.equal((await presenceOf(b.loc, term.locatorId))?.inst, (b.loc.store as SharedStore).instanceId, 'the record names instance B');
  clock.advance(14_200);
  t.same(await a.loc.sweep(), { expired: 0, probes: 0 }, 'A: due by its schedule, but the record moved to B: no probe');
  t.same(await b.loc.sweep(), { expired: 0, probes: 0 }, 'B: not due yet (refreshed 14 s ago)');
  clock.advance(10_000);
  t.same(await a.loc.sweep(), { expired: 0, probes: 0 }, 'A forgot it');
  const probed = next();
  t.same(await b.loc.sweep(), { expired: 0, probes: 1 }, 'B probes at 80% after the refresh');
  const probe = await probed;
  t.same(probe.from, b.dest, 'from instance B');
  t.ok(term.session.accept(probe));
  t.same(pushes.map((p) => p.from), [b.dest], 'one probe in all, from B');
});
