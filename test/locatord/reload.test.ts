// SIGHUP in-process (Locatord.reload), on both stores: with an authd key no longer trusted, the
// sessions it vouched for end and their registrations are removed (devloc-locatord(8), SIGNALS):
// the terminals are not found any more, their next request is NO_SESSION, new tickets of the old
// key are refused, tickets of the new key work. New limits apply at once.
import t from 'tap';
import { ErrorCode } from '../../src/wire/errors.js';
import { publicKeyObject } from '../../src/wire/keys.js';
import { errorCodeOf, forEachStore, makeKeys, openLimits, presenceOf, Terminal } from './fixtures/helpers.js';
import type { TestKeys } from './fixtures/helpers.js';

t.test('trusted keys reloaded: sessions and registrations of the old key end', (t) => forEachStore(t, async (t, s) => {
  const { loc, dest, keys, logLines } = await s.start(t);
  const a = await Terminal.open(t, keys, dest);
  const b = await Terminal.open(t, keys, dest);
  await a.expect(t, 'REGISTER_ACK', a.register({ nickname: 'a' }));
  await b.expect(t, 'REGISTER_ACK', b.register({ nickname: 'b' }));
  const newKeys: TestKeys = { ...makeKeys(), service: keys.service };
  await loc.reload({ trustedKeys: new Map([[newKeys.kid, publicKeyObject('Ed25519', newKeys.authd.public)]]) });
  const line = logLines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l['msg'] === 'trusted keys reloaded');
  t.equal(line?.['sessionsDropped'], 2);
  t.equal(line?.['registrationsRemoved'], 2, 'what the old key vouched for is not served any more');
  t.equal(await presenceOf(loc, a.locatorId), undefined, 'a: not registered any more');
  t.equal(await presenceOf(loc, b.locatorId), undefined, 'b: not registered any more');
  t.equal(errorCodeOf(await a.request('REFRESH', {})), ErrorCode.NO_SESSION, 'old session gone');
  const c = await Terminal.open(t, newKeys, dest);
  await c.expect(t, 'REGISTER_ACK', c.register());
  const q = await c.expect(t, 'QUERY_STATUS_RESULT', c.request('QUERY_STATUS', { ids: [a.locatorId, b.locatorId, c.locatorId] }));
  t.same(q.body.online, [false, false, true]);
  const old = await Terminal.open(t, keys, dest);
  t.equal(errorCodeOf(await old.register()), ErrorCode.BAD_TICKET, 'old key refused');
}));

t.test('limits reloaded: the new TTL bounds apply to the next REGISTER', (t) => forEachStore(t, async (t, s) => {
  const { loc, dest, keys } = await s.start(t, { limits: { minTtlS: 30, defaultTtlS: 60, maxTtlS: 600 } });
  const a = await Terminal.open(t, keys, dest);
  t.equal((await a.expect(t, 'REGISTER_ACK', a.register({ ttlS: 500 }))).body.ttlS, 500);
  await loc.reload({ limits: { ...openLimits, minTtlS: 30, defaultTtlS: 60, maxTtlS: 120 } });
  t.equal((await a.expect(t, 'REGISTER_ACK', a.register({ ttlS: 500 }))).body.ttlS, 120, 'lowered to the new max-ttl');
}));
