// The snapshot in-process: every field of a registration and a session survives a stop/start,
// registrations expired in between are dropped, the file is used once, a corrupt one is set aside.
import t from 'tap';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { SNAPSHOT_FILE } from '../../src/locatord/snapshot.js';
import { NetMode, Visibility } from '../../src/wire/constants.js';
import { FakeClock, startServer, Terminal } from './fixtures/helpers.js';

t.test('stop writes, start restores (and deletes); expired registrations are dropped', async (t) => {
  const clock = new FakeClock();
  const stateDir = t.testdir();
  const first = await startServer(t, { now: clock.now, stateDir, snapshot: true });
  const nowS = Math.floor(clock.ms / 1000);
  const a = await Terminal.open(t, first.keys, first.dest, { nowS });
  const b = await Terminal.open(t, first.keys, first.dest, { nowS });
  await a.expect(t, 'REGISTER_ACK', a.request('REGISTER', {
    ticket: a.creds.ticket, timeMs: clock.ms, ttlS: 600, netMode: NetMode.SYMMETRIC, nickname: 'ann', mediaId: 'm',
    localAddrs: [{ ip: 'fe80::1', port: 9 }], community: { x: true }, visibility: Visibility.GROUPS_AND_ALLOWED, allow: [b.locatorId],
  }));
  await b.expect(t, 'REGISTER_ACK', b.request('REGISTER', { ticket: b.creds.ticket, timeMs: clock.ms, ttlS: 30 }));
  const idA = a.locatorId.toString('hex');
  const before = first.loc.table.get(idA)!;
  const expectedA = { address: before.address, nickname: before.nickname, extra: before.extra, netMode: before.netMode, visibility: before.visibility, seq: before.seq };
  const expiryA = first.loc.table.tickToMs(before.expTick);
  await first.loc.stop();
  const file = path.join(stateDir, SNAPSHOT_FILE);
  t.equal(statSync(file).mode & 0o777, 0o600);
  t.notMatch(readFileSync(file, 'utf8'), /"secret"/);

  clock.advance(60_000);
  const second = await startServer(t, { now: clock.now, stateDir, snapshot: true, keys: first.keys });
  t.equal(existsSync(file), false, 'deleted once in use');
  const after = second.loc.table.get(idA)!;
  t.same({ address: after.address, nickname: after.nickname, extra: after.extra, netMode: after.netMode, visibility: after.visibility, seq: after.seq }, expectedA);
  t.equal(second.loc.table.tickToMs(after.expTick), expiryA, 'same absolute expiry');
  t.equal(second.loc.table.get(b.locatorId.toString('hex')), undefined, 'b expired while down: dropped');
  t.equal(second.loc.sessions.size, 2, 'both sessions back (tickets still valid)');
  t.equal(after.session, second.loc.sessions.get(after.session!.sidHex), 'record linked to its restored session');
  // The restored session answers the terminal, and the allow-list still lets b see a.
  a.dest = second.dest;
  b.dest = second.dest;
  await a.expect(t, 'REFRESH_ACK', a.request('REFRESH', {}));
  const q = await b.expect(t, 'QUERY_STATUS_RESULT', b.request('QUERY_STATUS', { ids: [a.locatorId] }));
  t.same(q.body.online, [true]);
});

t.test('a corrupt snapshot is set aside; the daemon starts empty', async (t) => {
  const stateDir = t.testdir();
  writeFileSync(path.join(stateDir, SNAPSHOT_FILE), '{"v":1,"kind":"devloc-locatord-snapshot"}\n{"t":"s", broken\n');
  const { loc, logLines } = await startServer(t, { stateDir, snapshot: true });
  t.equal(loc.table.size, 0);
  t.ok(existsSync(path.join(stateDir, `${SNAPSHOT_FILE}.corrupt`)));
  t.ok(logLines.some((l) => l.includes('snapshot unusable')));
});
