// A clean restart in-process, on both stores: every field of a registration survives a
// stop/start (embedded: the snapshot, and the sessions with it; redis: Redis keeps both),
// registrations expired in between are dropped, the snapshot file is used once, a corrupt one
// is set aside.
import t from 'tap';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { SNAPSHOT_FILE } from '../../src/locatord/snapshot.js';
import { NetMode, Visibility } from '../../src/wire/constants.js';
import { EmbeddedStore } from '../../src/locatord/store/embedded.js';
import type { Presence } from '../../src/locatord/store/types.js';
import { FakeClock, forEachStore, presenceOf, startServer, Terminal } from './fixtures/helpers.js';

t.test('restart: registrations and sessions survive a clean stop (embedded: the snapshot; redis: Redis keeps them)', (t) => forEachStore(t, async (t, s) => {
  const clock = new FakeClock();
  const stateDir = t.testdir();
  const first = await s.start(t, { now: clock.now, stateDir, snapshot: true });
  const nowS = Math.floor(clock.ms / 1000);
  const a = await Terminal.open(t, first.keys, first.dest, { nowS });
  const b = await Terminal.open(t, first.keys, first.dest, { nowS });
  await a.expect(t, 'REGISTER_ACK', a.request('REGISTER', {
    ticket: a.creds.ticket, timeMs: clock.ms, ttlS: 600, netMode: NetMode.SYMMETRIC, nickname: 'ann', mediaId: 'm',
    localAddrs: [{ ip: 'fe80::1', port: 9 }], community: { x: true }, visibility: Visibility.GROUPS_AND_ALLOWED, allow: [b.locatorId],
  }));
  await b.expect(t, 'REGISTER_ACK', b.request('REGISTER', { ticket: b.creds.ticket, timeMs: clock.ms, ttlS: 30 }));
  const idA = a.locatorId.toString('hex');
  const fields = (p: Presence): Partial<Presence> => ({ addr: p.addr, nickname: p.nickname, extra: p.extra, netMode: p.netMode, visibility: p.visibility, seq: p.seq, sidHex: p.sidHex });
  const before = (await presenceOf(first.loc, idA))!;
  await first.loc.stop();
  const file = path.join(stateDir, SNAPSHOT_FILE);
  if (s.kind === 'embedded') {
    t.equal(statSync(file).mode & 0o777, 0o600);
    t.notMatch(readFileSync(file, 'utf8'), /"secret"/);
  } else t.equal(existsSync(file), false, 'no snapshot: Redis keeps the state');

  clock.advance(60_000);
  const second = await s.start(t, { now: clock.now, stateDir, snapshot: true, keys: first.keys });
  t.equal(existsSync(file), false, 'deleted once in use');
  const after = (await presenceOf(second.loc, idA))!;
  t.same(fields(after), fields(before));
  t.equal(after.expMs, before.expMs, 'same absolute expiry');
  t.equal(await presenceOf(second.loc, b.locatorId), undefined, 'b expired while down: dropped');
  if (second.loc.store instanceof EmbeddedStore) {
    t.equal(second.loc.sessions.size, 2, 'both sessions back (tickets still valid)');
    const rec = second.loc.store.table.get(idA)!;
    // Held sessions are handles on a slot, made per lookup: the one held now, not the same object.
    t.ok(second.loc.sessions.live(rec.session!), 'record linked to its restored session');
  }
  // The session answers the terminal (restored, or loaded from Redis), and the allow-list still lets b see a.
  a.dest = second.dest;
  b.dest = second.dest;
  await a.expect(t, 'REFRESH_ACK', a.request('REFRESH', {}));
  const q = await b.expect(t, 'QUERY_STATUS_RESULT', b.request('QUERY_STATUS', { ids: [a.locatorId] }));
  t.same(q.body.online, [true]);
}));

t.test('a corrupt snapshot is set aside; the daemon starts empty', async (t) => {
  const stateDir = t.testdir();
  writeFileSync(path.join(stateDir, SNAPSHOT_FILE), '{"v":1,"kind":"devloc-locatord-snapshot"}\n{"t":"s", broken\n');
  const { loc, logLines } = await startServer(t, { stateDir, snapshot: true });
  t.equal((loc.store as EmbeddedStore).table.size, 0);
  t.ok(existsSync(path.join(stateDir, `${SNAPSHOT_FILE}.corrupt`)));
  t.ok(logLines.some((l) => l.includes('snapshot unusable')));
});

t.test('the snapshot writer reads the clock once per 256 slots of work, whatever each call does', async (t) => {
  const { Slicer } = await import('../../src/locatord/snapshot.js');
  // A slice of 0 ms: whenever the clock is read, it is time to yield.
  const s = new Slicer(0);
  let readAt: number[] = [];
  for (let i = 1; i <= 512; i++) if (s.due()) readAt.push(i);
  t.same(readAt, [256, 512], 'one slot per call: every 256th call');
  readAt = [];
  for (let i = 1; i <= 3; i++) if (s.due(256)) readAt.push(i);
  t.same(readAt, [1, 2, 3], '256 slots per call (the row-to-column copies): every call');
  readAt = [];
  for (let i = 1; i <= 4; i++) if (s.due(100)) readAt.push(i);
  t.same(readAt, [3], 'in between: once 256 have been done');
});
