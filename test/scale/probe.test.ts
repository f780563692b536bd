// Liveness probes with --store redis (scaled.ts probeSweep): the instance a terminal last spoke
// to probes it at 80% of its TTL (after checking the record in Redis), the PROBE_ACK extends the
// record in Redis; a terminal that moved to another instance is probed by that one only, at its
// own time. In-process locatords on a real redis-server, sweeps run by hand under a fake clock
// (Redis's own expiry runs on real time: the TTLs here are far longer than the test).
import t from 'tap';
import type { Test } from 'tap';
import type { ScaledLocatord } from '../../src/locatord/scaled.js';
import type { TestKeys } from '../locatord/fixtures/helpers.js';
import { FakeClock, makeKeys, pushClient, startServer, Terminal } from '../locatord/fixtures/helpers.js';
import type { TestRedis } from './fixtures/redis-server.js';
import { hasRedis, startRedis } from './fixtures/redis-server.js';
import { needs } from '../ops/tools.js';

/** The suite starts its own redis-server (and redis-cli for the Cluster): skipped, saying so, without them. */
const noRedis = needs('redis-server and redis-cli', hasRedis()).skip; // required in CI


async function instance(t: Test, redis: TestRedis, keys: TestKeys, clock: FakeClock): Promise<{ loc: ScaledLocatord; dest: { ip: string; port: number } }> {
  const { loc, dest } = await startServer(t, {
    keys, now: clock.now, limits: { minTtlS: 30, defaultTtlS: 30, probeAtPercent: 80 },
    store: { kind: 'redis', url: redis.url, timeoutMs: 2000, maxPending: 1000, prefix: 'dl:' },
  });
  return { loc: loc as ScaledLocatord, dest };
}


t.test('redis mode: probe near expiry; PROBE_ACK extends the record in Redis', { skip: noRedis }, async (t) => {
  const redis = await startRedis(t);
  const clock = new FakeClock();
  const keys = makeKeys();
  const { loc, dest } = await instance(t, redis, keys, clock);
  const { client, next, pushes } = await pushClient(t);
  const term = await Terminal.open(t, keys, dest, { client, nowS: Math.floor(clock.ms / 1000) });
  await term.expect(t, 'REGISTER_ACK', term.request('REGISTER', { ticket: term.creds.ticket, timeMs: clock.ms }));
  const id = term.locatorId.toString('hex');
  const expiresAt = (await loc.store.getPresence(id))!.expMs;

  clock.advance(23_000);
  t.same(await loc.probeSweep(), { expired: 0, probes: 0 }, 'not yet at 80%');
  clock.advance(1_200);
  const probed = next();
  t.same(await loc.probeSweep(), { expired: 0, probes: 1 }, 'probed at 80% of the TTL');
  const probe = await probed;
  t.equal(probe.msg.name, 'PROBE');
  t.ok(term.session.accept(probe), 'the probe is MACed in the session');
  t.same(await loc.probeSweep(), { expired: 0, probes: 0 }, 'one probe per period');

  term.client.send(dest, term.session.encode('PROBE_ACK', probe.msg.rid, {}));
  await term.expect(t, 'QUERY_STATUS_RESULT', term.request('QUERY_STATUS', { ids: [term.locatorId] }));
  const rec = await loc.store.getPresence(id);
  t.ok(rec && rec.expMs > expiresAt, 'expiry extended in Redis');
  t.equal(rec?.regMs, clock.ms, 'registration time: the PROBE_ACK');
  t.equal(loc.metrics.get('probe_acks_total'), 1);
  t.equal(loc.metrics.get('probes_sent_total'), 1);
  clock.advance(20_000);
  t.same(await loc.probeSweep(), { expired: 0, probes: 0 }, 'renewed: not due again yet');
  clock.advance(4_300);
  const again = next();
  t.same(await loc.probeSweep(), { expired: 0, probes: 1 }, 'due again 80% into the renewed TTL');
  t.equal((await again).msg.name, 'PROBE');
  t.equal(pushes.length, 2);
});

t.test('redis mode: a terminal refreshed through another instance is probed by that one only', { skip: noRedis }, async (t) => {
  const redis = await startRedis(t);
  const clock = new FakeClock();
  const keys = makeKeys();
  const [a, b] = [await instance(t, redis, keys, clock), await instance(t, redis, keys, clock)];
  const { client, next, pushes } = await pushClient(t);
  const term = await Terminal.open(t, keys, a.dest, { client, nowS: Math.floor(clock.ms / 1000) });
  await term.expect(t, 'REGISTER_ACK', term.request('REGISTER', { ticket: term.creds.ticket, timeMs: clock.ms }));
  clock.advance(10_000);
  term.dest = b.dest;
  await term.expect(t, 'REFRESH_ACK', term.request('REFRESH', {}));
  t.equal((await b.loc.store.getPresence(term.locatorId.toString('hex')))?.inst, b.loc.instanceId, 'the record names instance B');
  clock.advance(14_200);
  t.same(await a.loc.probeSweep(), { expired: 0, probes: 0 }, 'A: due by its schedule, but the record moved to B: no probe');
  t.same(await b.loc.probeSweep(), { expired: 0, probes: 0 }, 'B: not due yet (refreshed 14 s ago)');
  clock.advance(10_000);
  t.same(await a.loc.probeSweep(), { expired: 0, probes: 0 }, 'A forgot it');
  const probed = next();
  t.same(await b.loc.probeSweep(), { expired: 0, probes: 1 }, 'B probes at 80% after the refresh');
  const probe = await probed;
  t.same(probe.from, b.dest, 'from instance B');
  t.ok(term.session.accept(probe));
  t.same(pushes.map((p) => p.from), [b.dest], 'one probe in all, from B');
});
