// The snapshot file itself (snapshot.ts, version 3: the tables' columns): every field round-trips
// through a write and a restore (registrations with IPv6, nickname, rare fields, sessions with
// their keys, replay window and send sequence, a session no registration holds, watch lists),
// in bulk into empty tables and one by one into tables that cannot take the file's slots; the
// write yields to the event loop between slices; a malformed file (any truncation, flipped
// bytes, bad magic, version, trailing bytes, a registration naming another terminal's session)
// is refused with a code, never a throw, and restores nothing; files of earlier versions (1:
// JSON lines, 2: a record per terminal) are refused; the daemon sets a bad file aside and
// starts empty.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { decodeSnapshot, restoreSnapshot, saveSnapshot, SNAPSHOT_FILE } from '../../src/locatord/snapshot.js';
import type { KeyedSession } from '../../src/locatord/snapshot.js';
import { MemorySearchIndex } from '../../src/locatord/search-index.js';
import { EmbeddedStore } from '../../src/locatord/store/embedded.js';
import { RegistrationTable } from '../../src/locatord/table.js';
import { MemoryWatches } from '../../src/locatord/watches.js';
import { newServerSession, ServerSessions } from '../../src/net/sessions.js';
import { rawKey } from '../../src/wire/session.js';
import { TicketVerifier } from '../../src/wire/ticket.js';
import { startServer } from './fixtures/helpers.js';

const NOW = 1_800_000_000_000;

function world(nowMs = NOW): { table: RegistrationTable; sessions: ServerSessions; search: MemorySearchIndex; watches: MemoryWatches } {
  const now = (): number => nowMs;
  const verifier = new TicketVerifier({ keys: new Map(), audience: 'locator', now: () => Math.floor(nowMs / 1000) });
  return {
    table: new RegistrationTable({ maxEntries: 100_000, now }),
    sessions: new ServerSessions({ verifier, serviceSecret: undefined as never, now }),
    search: new MemorySearchIndex(),
    watches: new MemoryWatches(),
  };
}

function session(w: ReturnType<typeof world>, locatorId = randomBytes(16), kid?: string): KeyedSession {
  const keys = randomBytes(64);
  const s: KeyedSession = newServerSession({
    sid: randomBytes(16), locatorId, aud: 'locator', exp: Math.floor(NOW / 1000) + 3600,
    terminalToServer: keys.subarray(0, 32), serverToTerminal: keys.subarray(32),
  });
  if (kid !== undefined) s.kid = kid;
  // The held session (as a handler has it): a snapshot writes what the session table holds.
  return w.sessions.restore(s)! as KeyedSession;
}

/** `n` plain terminals, plus one with every field, a session without registration and a watch list. */
function populate(w: ReturnType<typeof world>, n: number): { rich: string; lone: KeyedSession; plain: string } {
  const rich = session(w, randomBytes(16), 'kid-1');
  for (const q of [1, 2, 40, 45, 70, 72]) rich.window.accept(q);
  rich.txSeq = 9;
  w.table.set(rich.locatorHex, {
    addr: { ip: '2001:db8::7', port: 4242 }, session: rich, seq: 72, regTick: w.table.nowTick(), expTick: w.table.expiryTick(600_000),
    netMode: 3, visibility: 1, reachable: true, nickname: 'zoë',
    extra: { mediaId: 'game', localAddrs: [{ ip: '192.168.1.2', port: 9 }], community: { x: true }, allow: ['00ff'], presence: { lookingForPartner: true, status: 'hi' } },
  });
  let plain = '';
  for (let i = 0; i < n; i++) {
    const s = session(w);
    s.window.accept(1);
    w.table.set(s.locatorHex, { addr: { ip: `10.0.${i >> 8}.${i & 255}`, port: 1000 + i }, session: s, seq: 1, regTick: w.table.nowTick(), expTick: w.table.expiryTick(300_000) });
    plain = s.locatorHex;
  }
  const lone = session(w);
  w.watches.add(rich.locatorHex, [plain], [''], 50);
  return { rich: rich.locatorHex, lone, plain };
}

t.test('every field round-trips through a write and a restore', async (t) => {
  const dir = t.testdir();
  const a = world();
  const { rich, lone, plain } = populate(a, 50);
  const written = await saveSnapshot(dir, a.sessions, a.table, NOW, a.watches);
  t.match(written, { sessions: 52, records: 51, watchLists: 1, skipped: 0 });
  t.equal(readFileSync(path.join(dir, SNAPSHOT_FILE)).subarray(0, 8).toString('latin1'), 'DEVLOCSN');

  const b = world(NOW + 60_000);
  const r = await restoreSnapshot(dir, b, NOW + 60_000);
  t.match(r, { ok: true, version: 3, savedMs: NOW, sessions: 52, records: 51, droppedExpired: 0, watchLists: 1 });
  const before = a.table.get(rich)!;
  const after = b.table.get(rich)!;
  t.same(after.address, { ip: '2001:db8::7', port: 4242 });
  t.same([after.netMode, after.visibility, after.reachable, after.nickname, after.seq], [3, 1, true, 'zoë', 72]);
  t.same(after.extra, before.extra);
  t.equal(b.table.tickToMs(after.expTick), a.table.tickToMs(before.expTick), 'same absolute expiry');
  t.equal(b.table.tickToMs(after.regTick), a.table.tickToMs(before.regTick));
  const s = after.session as KeyedSession;
  // Held sessions are handles on a slot, made per lookup: the one held now, not the same object.
  t.ok(b.sessions.live(s), 'record linked to its restored session');
  t.equal(s.kid, 'kid-1');
  t.equal(s.txSeq, 9);
  t.same(rawKey(s.keys.terminalToServer), rawKey(before.session!.keys.terminalToServer));
  t.same(rawKey(s.keys.serverToTerminal), rawKey(before.session!.keys.serverToTerminal));
  for (const q of [40, 45, 70, 72]) t.equal(s.window.check(q), 'replay', `seq ${q} stays refused`);
  t.equal(s.window.check(2), 'old', 'left of the window');
  t.equal(s.window.check(71), 'ok', 'an unseen one inside the window stays acceptable');
  t.equal(s.window.check(41), 'ok');
  t.equal(s.window.check(73), 'ok');
  t.same(b.table.get(plain)!.address, a.table.get(plain)!.address);
  t.ok(b.sessions.get(lone.sidHex), 'a session without registration is restored too');
  t.equal(b.watches.count(rich), 1, 'the watch list is back');
  t.same(b.search.page('game', '', 10), [rich], 'the search index is rebuilt');
});

t.test('registrations and sessions that expired while down are dropped', async (t) => {
  const dir = t.testdir();
  const a = world();
  populate(a, 5);
  await saveSnapshot(dir, a.sessions, a.table, NOW, a.watches);
  // 400 s later: the plain ones (300 s) expired, the rich one (600 s) did not; sessions last an hour.
  const b = world(NOW + 400_000);
  const r = await restoreSnapshot(dir, b, NOW + 400_000);
  t.match(r, { ok: true, records: 1, droppedExpired: 5, sessions: 7 });
});

t.test('the write yields to the event loop between slices', async (t) => {
  const dir = t.testdir();
  const a = world();
  populate(a, 3000);
  let ranMeanwhile = 0;
  const tick = (): void => {
    ranMeanwhile++;
    if (!done) setImmediate(tick);
  };
  let done = false;
  setImmediate(tick);
  const written = await saveSnapshot(dir, a.sessions, a.table, NOW, a.watches, { sliceMs: 0 });
  done = true;
  // With sliceMs 0, a slice per 256 slots of each table's copy out of its rows (24 here), beside
  // the ~34 of the column writes and the per-slot loops: 34 in all when the copies read the clock
  // only every 65,536 slots.
  t.ok(written.slices >= 34 + 2 * Math.ceil(3000 / 256), `written in ${written.slices} slices`);
  t.ok(ranMeanwhile > 5, 'other callbacks ran during the write');
  t.equal(written.records, 3001);
  // The registrations are copied out of their rows a slice of slots at a time: every record of
  // every slice comes back whole.
  const b = world(NOW + 1000);
  t.match(await restoreSnapshot(dir, b, NOW + 1000), { ok: true, records: 3001 });
  let differ = 0;
  for (const [key, r] of a.table.entries()) {
    const got = b.table.get(key);
    if (!got || got.address.ip !== r.address.ip || got.address.port !== r.address.port || got.seq !== r.seq || b.table.tickToMs(got.expTick) !== a.table.tickToMs(r.expTick) || got.session?.sidHex !== r.session?.sidHex) differ++;
  }
  t.equal(differ, 0, 'every record restored as written');
});

t.test('a malformed file is refused with a code, never a throw, and restores nothing', async (t) => {
  const dir = t.testdir();
  const a = world();
  populate(a, 3);
  await saveSnapshot(dir, a.sessions, a.table, NOW, a.watches);
  const good = readFileSync(path.join(dir, SNAPSHOT_FILE));
  t.match(decodeSnapshot(good), { ok: true, savedMs: NOW });
  for (let n = 0; n < good.length; n++) {
    const r = decodeSnapshot(good.subarray(0, n));
    if (r.ok) t.fail(`a truncation to ${n} bytes was accepted`);
  }
  t.pass('every truncation refused');
  let seed = 7;
  for (let i = 0; i < 2000; i++) {
    const bad = Buffer.from(good);
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    const at = seed % bad.length;
    bad[at] = bad[at]! ^ (1 + ((seed >>> 24) % 255));
    decodeSnapshot(bad); // must not throw; some flips (a key byte) are still a valid file
  }
  t.pass('flipped bytes never throw');
  t.match(decodeSnapshot(Buffer.from('NOTASNAPSHOT-----------------')), { ok: false, code: 'bad-magic' });
  const v4 = Buffer.from(good);
  v4.writeUInt32LE(4, 8);
  t.match(decodeSnapshot(v4), { ok: false, code: 'bad-version' });
  t.match(decodeSnapshot(Buffer.concat([good, Buffer.from([0])])), { ok: false, code: 'trailing-bytes' });
  t.match(decodeSnapshot(good.subarray(0, good.length - 20)), { ok: false, code: 'truncated' });

  writeFileSync(path.join(dir, SNAPSHOT_FILE), good.subarray(0, good.length - 1));
  const b = world();
  t.match(await restoreSnapshot(dir, b, NOW), { ok: false, code: 'truncated' });
  t.equal(b.table.size, 0, 'nothing restored from a bad file');
  t.equal(b.sessions.size, 0);
});

t.test('a snapshot of an earlier version (1: JSON lines, 2: a record per terminal) is refused as bad-version', async (t) => {
  const dir = t.testdir();
  const id = randomBytes(16).toString('hex');
  writeFileSync(path.join(dir, SNAPSHOT_FILE), `${JSON.stringify({ v: 1, kind: 'devloc-locatord-snapshot', savedMs: NOW })}\n${JSON.stringify({ t: 'r', id, ip: '198.51.100.7', port: 5000, netMode: 2, vis: 0, regMs: NOW, expMs: NOW + 600_000, seq: 4 })}\n`);
  const b = world();
  t.match(await restoreSnapshot(dir, b, NOW + 1000), { ok: false, code: 'bad-version', reason: /version 1/ });
  t.equal(b.table.size, 0);
  // A version 2 header followed by one of its records (the END record of an empty file).
  const v2 = Buffer.alloc(24 + 13);
  v2.write('DEVLOCSN', 0, 'latin1');
  v2.writeUInt32LE(2, 8);
  v2.writeDoubleLE(NOW, 16);
  v2[24] = 0xff;
  writeFileSync(path.join(dir, SNAPSHOT_FILE), v2);
  t.match(await restoreSnapshot(dir, b, NOW + 1000), { ok: false, code: 'bad-version', reason: /version 2: this locatord reads version 3 only/ });
});

t.test('a registration naming a session of another terminal is refused, and nothing restored', async (t) => {
  const dir = t.testdir();
  const a = world();
  const x = session(a);
  const y = session(a);
  // Registered under y's locator ID but holding x's session (no handler does this): written
  // without it, as a registration whose session is not its own.
  a.table.set(y.locatorHex, { addr: { ip: '10.0.0.1', port: 1 }, session: x, seq: 1, regTick: a.table.nowTick(), expTick: a.table.expiryTick(60_000) });
  await saveSnapshot(dir, a.sessions, a.table, NOW, a.watches);
  const b = world();
  t.match(await restoreSnapshot(dir, b, NOW), { ok: true, records: 1, sessions: 2 });
  t.equal(b.table.get(y.locatorHex)!.session, undefined, 'restored without a session that was not its own');
  // A file that links them anyway: the registration's session column patched to x's slot.
  const file = readFileSync(path.join(dir, SNAPSHOT_FILE));
  const refsEnd = file.length - 12 /* end */ - 4 /* no watch lists */ - 4 /* no rare fields */;
  t.equal(file.readInt32LE(refsEnd - 4), -1);
  const bad = Buffer.from(file);
  bad.writeInt32LE(0, refsEnd - 4);
  t.match(decodeSnapshot(bad), { ok: false, code: 'bad-record', reason: /not its session/ });
  writeFileSync(path.join(dir, SNAPSHOT_FILE), bad);
  const c = world();
  t.match(await restoreSnapshot(dir, c, NOW), { ok: false, code: 'bad-record' });
  t.equal(c.table.size + c.sessions.size, 0, 'nothing restored');
});

t.test('into tables that cannot take the file in bulk, the restore goes one by one with the same result', async (t) => {
  const dir = t.testdir();
  const a = world();
  const { rich, lone, plain } = populate(a, 20);
  await saveSnapshot(dir, a.sessions, a.table, NOW, a.watches);
  // Tables already in use (a session and a record held), so neither takes the slots as they are.
  const b = world(NOW + 60_000);
  const other = session(b);
  b.table.set(other.locatorHex, { addr: { ip: '10.9.9.9', port: 9 }, session: other, seq: 1, regTick: b.table.nowTick(), expTick: b.table.expiryTick(60_000) });
  const r = await restoreSnapshot(dir, b, NOW + 60_000);
  t.match(r, { ok: true, version: 3, sessions: 22, records: 21, droppedExpired: 0, watchLists: 1 });
  const after = b.table.get(rich)!;
  t.same([after.address, after.netMode, after.visibility, after.reachable, after.nickname, after.seq], [{ ip: '2001:db8::7', port: 4242 }, 3, 1, true, 'zoë', 72]);
  t.equal(b.table.tickToMs(after.expTick), a.table.tickToMs(a.table.get(rich)!.expTick), 'same absolute expiry');
  const s = after.session as KeyedSession;
  t.ok(b.sessions.live(s), 'record linked to its restored session');
  t.equal(s.kid, 'kid-1');
  t.equal(s.window.check(72), 'replay');
  t.same(b.table.get(plain)!.address, a.table.get(plain)!.address);
  t.ok(b.sessions.get(lone.sidHex));
  t.ok(b.table.get(other.locatorHex), 'what was there stays');
  t.same(b.search.page('game', '', 10), [rich]);
  // A table with room for fewer records than the file: the least recently registered go.
  const c = world(NOW + 60_000);
  const small = { ...c, table: new RegistrationTable({ maxEntries: 5, now: () => NOW + 60_000 }) };
  t.match(await restoreSnapshot(dir, small, NOW + 60_000), { ok: true, records: 5, sessions: 22 });
});

t.test('locatord sets a truncated binary snapshot aside and starts empty, with the code in its log line', async (t) => {
  const stateDir = t.testdir();
  const a = world();
  populate(a, 3);
  await saveSnapshot(stateDir, a.sessions, a.table, NOW, a.watches);
  const file = path.join(stateDir, SNAPSHOT_FILE);
  writeFileSync(file, readFileSync(file).subarray(0, 100));
  const { loc, logLines } = await startServer(t, { stateDir, snapshot: true });
  t.equal((loc.store as EmbeddedStore).table.size, 0);
  t.equal(loc.sessions.size, 0);
  t.ok(existsSync(`${file}.corrupt`), 'set aside');
  t.ok(logLines.some((l) => l.includes('snapshot unusable') && l.includes('"code":"truncated"')), 'logged with its code');
});
