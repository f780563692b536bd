// A REFRESH, PROBE_ACK, PRESENCE_SET or UNREGISTER in a session whose registration a newer session took
// over (docs/SECURITY.md, "Cloned identities"; handlers/standing.ts, the one rule of the four):
// from another address it is a second terminal with the same identity (IDENTITY_CONFLICT,
// counted, logged); from the very address and port the newer registration is bound to it is the
// same terminal, whose older session's message was still in flight when it registered again (a
// ticket renewal), and is stale, not a conflict.
import t from 'tap';
import type { Test } from 'tap';
import { UdpClient } from '../../src/net/client.js';
import type { Locatord } from '../../src/locatord/server.js';
import { ErrorCode } from '../../src/wire/errors.js';
import type { StoreFixture } from './fixtures/helpers.js';
import { errorCodeOf, forEachStore, presenceOf, Terminal } from './fixtures/helpers.js';

const conflictLogged = (lines: string[]): boolean => lines.some((l) => (JSON.parse(l) as Record<string, unknown>)['msg'] === 'identity conflict');

/**
 * A PROBE_ACK is never answered: wait (at most 10 s) until the count it moves says its handler
 * ran (on Redis the handlers of one socket run concurrently), so what did not happen can be said.
 */
async function counted(loc: Locatord, name: string, labels?: Record<string, string>): Promise<number> {
  for (const end = Date.now() + 10_000; loc.metrics.get(name, labels) === 0 && Date.now() < end;) await new Promise((r) => setTimeout(r, 5));
  return loc.metrics.get(name, labels);
}

/** An older session of one locator ID and a newer one registered since, from the older one's socket or one of its own. */
async function displaced(t: Test, s: StoreFixture, sameSocket: boolean) {
  const server = await s.start(t);
  const nowS = Math.floor(Date.now() / 1000);
  const older = await Terminal.open(t, server.keys, server.dest, { nowS, exp: nowS + 3600 });
  await older.expect(t, 'REGISTER_ACK', older.register({ presence: { status: 'older' } }));
  const newer = await Terminal.open(t, server.keys, server.dest, { nowS, exp: nowS + 7200, locatorId: older.locatorId, ...(sameSocket ? { client: older.client } : {}) });
  await newer.expect(t, 'REGISTER_ACK', newer.register({ presence: { status: 'newer' } }));
  return { ...server, older, newer };
}

t.test('the same socket registered a newer session: its older session\'s late REFRESH is stale, not a conflict', (t) => forEachStore(t, async (t, s) => {
  const { loc, dest, keys, logLines } = await s.start(t);
  const nowS = Math.floor(Date.now() / 1000);
  const older = await Terminal.open(t, keys, dest, { nowS, exp: nowS + 3600 });
  await older.expect(t, 'REGISTER_ACK', older.register());
  // Sent before the terminal renewed its ticket, delivered after it registered with the new one.
  const inFlight = older.encode('REFRESH', {});
  const newer = await Terminal.open(t, keys, dest, { nowS, exp: nowS + 7200, locatorId: older.locatorId, client: older.client });
  await newer.expect(t, 'REGISTER_ACK', newer.register());

  const late = await older.expect(t, 'REFRESH_ACK', older.send(inFlight));
  t.same(late.body.observed, older.address, 'acknowledged with the record as it stands');
  const rec = (await presenceOf(loc, older.locatorId))!;
  t.equal(rec.sidHex, newer.session.sid.toString('hex'), 'the newer session keeps the registration');
  t.same(rec.addr, newer.address);
  t.equal(loc.metrics.get('identity_conflicts_total'), 0, 'no conflict counted');
  t.equal(loc.metrics.get('stale_updates_total', { type: 'REFRESH' }), 1, 'counted as a stale update');
  t.notOk(conflictLogged(logLines), 'no "identity conflict" logged');
  // The older session was not ended: its next message is answered, and still changes nothing.
  await older.expect(t, 'REFRESH_ACK', older.request('REFRESH', {}));
  t.equal((await presenceOf(loc, older.locatorId))!.sidHex, newer.session.sid.toString('hex'));
  await newer.expect(t, 'REFRESH_ACK', newer.request('REFRESH', {}));
  t.equal(loc.metrics.get('refreshes_total'), 1, 'only the newer session\'s REFRESH renewed the record');
}));

t.test('another terminal (same IP, another port) registered with the identity: the older session gets IDENTITY_CONFLICT', (t) => forEachStore(t, async (t, s) => {
  const { loc, dest, keys, logLines } = await s.start(t);
  const nowS = Math.floor(Date.now() / 1000);
  const original = await Terminal.open(t, keys, dest, { nowS, exp: nowS + 3600 });
  await original.expect(t, 'REGISTER_ACK', original.register());
  const clone = await Terminal.open(t, keys, dest, { nowS, exp: nowS + 7200, locatorId: original.locatorId });
  await clone.expect(t, 'REGISTER_ACK', clone.register());

  t.equal(errorCodeOf(await original.request('REFRESH', {})), ErrorCode.IDENTITY_CONFLICT);
  t.equal(loc.metrics.get('identity_conflicts_total'), 1, 'counted');
  t.ok(conflictLogged(logLines), '"identity conflict" logged');
  t.same((await presenceOf(loc, original.locatorId))!.addr, clone.address, 'the newer registration stays');
  // The session is ended: every later message in it is refused the same way.
  t.equal(errorCodeOf(await original.request('REFRESH', {})), ErrorCode.IDENTITY_CONFLICT);
}));

// The same rule for the messages that are not REFRESH: a clone that only sets its presence, or
// only answers probes, is reported too (before, both were stale whatever the address).

t.test('PRESENCE_SET of a displaced session: from another address a conflict, from the newer registration\'s socket stale', (t) => forEachStore(t, async (t, s) => {
  await t.test('another address', async (t) => {
    const { loc, older, newer, logLines } = await displaced(t, s, false);
    t.equal(errorCodeOf(await older.request('PRESENCE_SET', { presence: { status: 'clone' } })), ErrorCode.IDENTITY_CONFLICT);
    t.equal(loc.metrics.get('identity_conflicts_total'), 1, 'counted');
    t.ok(conflictLogged(logLines), '"identity conflict" logged');
    const rec = (await presenceOf(loc, older.locatorId))!;
    t.equal(rec.sidHex, newer.session.sid.toString('hex'), 'the newer registration stays');
    t.equal(rec.extra?.presence?.status, 'newer', 'its presence record unchanged');
    t.equal(loc.metrics.get('presence_sets_total', { result: 'stale' }), 0, 'a conflict, not a stale set');
    t.equal(errorCodeOf(await older.request('REFRESH', {})), ErrorCode.IDENTITY_CONFLICT, 'the session is ended');
  });
  await t.test('the newer registration\'s socket', async (t) => {
    const { loc, older, newer, logLines } = await displaced(t, s, true);
    await older.expect(t, 'PRESENCE_SET_ACK', older.request('PRESENCE_SET', { presence: { status: 'late' } }));
    t.equal(loc.metrics.get('presence_sets_total', { result: 'stale' }), 1, 'counted as stale');
    t.equal((await presenceOf(loc, older.locatorId))!.extra?.presence?.status, 'newer', 'nothing changed');
    t.equal(loc.metrics.get('identity_conflicts_total'), 0, 'no conflict counted');
    t.notOk(conflictLogged(logLines), 'no "identity conflict" logged');
    await older.expect(t, 'REFRESH_ACK', older.request('REFRESH', {}));
    t.equal((await presenceOf(loc, older.locatorId))!.sidHex, newer.session.sid.toString('hex'), 'the session goes on, changing nothing');
  });
  await t.test('an address not validated for the older session', async (t) => {
    const { loc, older, logLines } = await displaced(t, s, false);
    const elsewhere = await UdpClient.open({ bind: { host: '127.0.0.1', port: 0 }, policy: { initialTimeoutMs: 300, deadlineMs: 10_000 } });
    t.teardown(() => elsewhere.close());
    // The address proves nothing (anyone on the path could have re-sent the datagram from there): stale.
    await older.expect(t, 'PRESENCE_SET_ACK', older.send(older.encode('PRESENCE_SET', { presence: { status: 'moved' } }), elsewhere));
    t.equal(loc.metrics.get('presence_sets_total', { result: 'stale' }), 1, 'counted as stale');
    t.equal(loc.metrics.get('identity_conflicts_total'), 0, 'no conflict counted');
    t.notOk(conflictLogged(logLines), 'no "identity conflict" logged');
  });
}));

t.test('PROBE_ACK of a displaced session: from another address a conflict, from the newer registration\'s socket stale; never answered', (t) => forEachStore(t, async (t, s) => {
  await t.test('another address', async (t) => {
    const { loc, dest, older, newer, logLines } = await displaced(t, s, false);
    older.client.send(dest, older.session.encode('PROBE_ACK', UdpClient.newRequestId(), {}));
    t.equal(await counted(loc, 'identity_conflicts_total'), 1, 'counted');
    t.ok(conflictLogged(logLines), '"identity conflict" logged');
    const rec = (await presenceOf(loc, older.locatorId))!;
    t.equal(rec.sidHex, newer.session.sid.toString('hex'), 'the newer registration stays');
    t.same(rec.addr, newer.address);
    t.equal(loc.metrics.get('probe_acks_total'), 0, 'nothing extended');
    // Ended like a REFRESH's: the session's next request is refused; the PROBE_ACK itself got no answer.
    t.equal(errorCodeOf(await older.request('REFRESH', {})), ErrorCode.IDENTITY_CONFLICT, 'the session is ended');
    t.equal(loc.metrics.get('requests_total', { type: 'PROBE_ACK', result: 'IDENTITY_CONFLICT' }), 0, 'the PROBE_ACK was not refused on the wire');
  });
  await t.test('the newer registration\'s socket', async (t) => {
    const { loc, dest, older, newer, logLines } = await displaced(t, s, true);
    older.client.send(dest, older.session.encode('PROBE_ACK', UdpClient.newRequestId(), {}));
    t.equal(await counted(loc, 'stale_updates_total', { type: 'PROBE_ACK' }), 1, 'counted as a stale update');
    t.equal(loc.metrics.get('identity_conflicts_total'), 0, 'no conflict counted');
    t.notOk(conflictLogged(logLines), 'no "identity conflict" logged');
    t.equal(loc.metrics.get('probe_acks_total'), 0, 'nothing extended');
    await older.expect(t, 'REFRESH_ACK', older.request('REFRESH', {}));
    t.equal((await presenceOf(loc, older.locatorId))!.sidHex, newer.session.sid.toString('hex'), 'the session goes on, changing nothing');
  });
}));

t.test('UNREGISTER of a displaced session: from another address a conflict, from the newer registration\'s socket stale; the registration stays either way', (t) => forEachStore(t, async (t, s) => {
  await t.test('another address', async (t) => {
    const { loc, older, newer, logLines } = await displaced(t, s, false);
    t.equal(errorCodeOf(await older.request('UNREGISTER', {})), ErrorCode.IDENTITY_CONFLICT);
    t.equal(loc.metrics.get('identity_conflicts_total'), 1, 'counted');
    t.ok(conflictLogged(logLines), '"identity conflict" logged');
    const rec = (await presenceOf(loc, older.locatorId))!;
    t.equal(rec?.sidHex, newer.session.sid.toString('hex'), 'the newer registration stays');
    t.equal(loc.metrics.get('unregistrations_total'), 0, 'nothing removed');
    t.equal(errorCodeOf(await older.request('REFRESH', {})), ErrorCode.IDENTITY_CONFLICT, 'the session is ended');
  });
  await t.test('the newer registration\'s socket', async (t) => {
    const { loc, older, newer, logLines } = await displaced(t, s, true);
    await older.expect(t, 'UNREGISTER_ACK', older.request('UNREGISTER', {}));
    t.equal((await presenceOf(loc, older.locatorId))?.sidHex, newer.session.sid.toString('hex'), 'the newer registration stays');
    t.equal(loc.metrics.get('unregistrations_total'), 0, 'nothing removed');
    t.equal(loc.metrics.get('identity_conflicts_total'), 0, 'no conflict counted');
    t.notOk(conflictLogged(logLines), 'no "identity conflict" logged');
    // The newer session's own UNREGISTER does remove it.
    await newer.expect(t, 'UNREGISTER_ACK', newer.request('UNREGISTER', {}));
    t.equal(await presenceOf(loc, older.locatorId), undefined, 'removed by its own session');
  });
}));
