// A REFRESH in a session whose registration a newer session took over (docs/SECURITY.md,
// "Cloned identities"): from another address it is a second terminal with the same identity
// (IDENTITY_CONFLICT, counted, logged); from the very address and port the newer registration
// is bound to it is the same terminal, whose older session's REFRESH was still in flight when it
// registered again (a ticket renewal), and is stale, not a conflict.
import t from 'tap';
import { ErrorCode } from '../../src/wire/errors.js';
import { errorCodeOf, forEachStore, presenceOf, Terminal } from './fixtures/helpers.js';

const conflictLogged = (lines: string[]): boolean => lines.some((l) => (JSON.parse(l) as Record<string, unknown>)['msg'] === 'identity conflict');

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
