// The registration table under a fake clock: expiry is exact to the tick and checked on every
// read, sweeps free memory, the LRU bound evicts the least recently refreshed, and the compact
// record round-trips addresses and packed fields.
import t from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import type { ServerSession } from '../../src/net/sessions.js';
import { newServerSession, sameSession, ServerSessions } from '../../src/net/sessions.js';
import { TicketVerifier } from '../../src/wire/ticket.js';
import type { Registration } from '../../src/locatord/table.js';
import { RegistrationTable, TICK_MS } from '../../src/locatord/table.js';
import { packIp, unpackIp } from '../../src/wire/addr.js';
import { FakeClock } from './fixtures/helpers.js';

const fakeSession = (hex = randomBytes(16).toString('hex')): ServerSession => ({ sidHex: hex }) as unknown as ServerSession;

/** A locator ID (hex) named by a test. */
const id = (name: string): string => createHash('sha256').update(name).digest('hex').slice(0, 32);

function add(table: RegistrationTable, name: string, ttlMs: number, port = 1000): Registration {
  return table.set(id(name), { addr: { ip: '198.51.100.7', port }, session: fakeSession(), seq: 1, regTick: table.nowTick(), expTick: table.expiryTick(ttlMs) });
}

/** The same record (views are made per call). */
const same = (a: Registration | undefined, b: Registration | undefined): boolean => a !== undefined && b !== undefined && a.slot === b.slot && !a.removed && !b.removed;

t.test('expired entries are never returned, even before a sweep', async (t) => {
  const clock = new FakeClock(1_700_000_000_123);
  let expiredSeen = 0;
  const table = new RegistrationTable({ maxEntries: 100, now: clock.now, onExpired: (n) => (expiredSeen += n) });
  const rec = add(table, 'a', 30_000);
  t.ok(same(table.get(id('a')), rec));
  t.equal(table.tickToMs(rec.regTick) <= clock.ms, true, 'registration time not in the future');
  clock.advance(30_000 - 1);
  t.ok(same(table.get(id('a')), rec), 'alive 1 ms before its TTL');
  clock.advance(TICK_MS);
  t.equal(table.get(id('a')), undefined, 'gone after its TTL (within one tick)');
  t.equal(table.size, 0, 'read of an expired entry frees it');
  t.equal(table.expired, 1);
  t.equal(expiredSeen, 1);
});

t.test('renew extends from now and clears the probe flag', async (t) => {
  const clock = new FakeClock();
  const table = new RegistrationTable({ maxEntries: 10, now: clock.now });
  const rec = add(table, 'a', 10_000);
  rec.probed = true;
  clock.advance(9_000);
  table.renew(rec, 10_000);
  t.equal(rec.probed, false);
  clock.advance(9_000);
  t.ok(table.get(id('a')), 'alive 18 s after registering: the renewal counted from 9 s');
  clock.advance(1_100);
  t.equal(table.get(id('a')), undefined);
});

t.test('purgeStale frees expired entries only', async (t) => {
  const clock = new FakeClock();
  const table = new RegistrationTable({ maxEntries: 1000, now: clock.now });
  for (let i = 0; i < 100; i++) add(table, `short${i}`, 5_000);
  for (let i = 0; i < 50; i++) add(table, `long${i}`, 60_000);
  t.equal(table.purgeStale(), 0);
  clock.advance(5_000 + TICK_MS);
  t.equal(table.purgeStale(), 100);
  t.equal(table.size, 50);
  t.ok(table.get(id('long0')));
});

t.test('sweep: probes due records, at most maxProbes each time', async (t) => {
  const clock = new FakeClock();
  const table = new RegistrationTable({ maxEntries: 1000, now: clock.now, probeAtPercent: 80 });
  for (let i = 0; i < 20; i++) add(table, `r${i}`, 10_000);
  clock.advance(7_000);
  t.same(table.sweep(5), { expired: 0, probes: [] }, 'nothing due at 70%');
  clock.advance(1_200);
  const first = table.sweep(5);
  t.equal(first.probes.length, 5);
  t.ok(first.probes.every((r) => r.probed));
  clock.advance(1_000);
  t.equal(table.sweep(100).probes.length, 15, 'the rest next time');
  t.equal(table.sweep(100).probes.length, 0, 'one probe per record');
  clock.advance(1_000 + TICK_MS);
  t.equal(table.sweep(100).expired, 20, 'unanswered: expired');
});

t.test('sweep touches only due records; renewed ones are refiled, not expired', async (t) => {
  const clock = new FakeClock();
  const table = new RegistrationTable({ maxEntries: 1000, now: clock.now });
  const recs = Array.from({ length: 100 }, (_, i) => add(table, `r${i}`, 30_000));
  t.equal(table.scheduledCount, 100, 'one schedule entry per record');
  for (let s = 0; s < 100; s++) {
    clock.advance(1_000);
    // Half refresh every 10 s, half never do.
    if (s % 10 === 0) for (let i = 0; i < 50; i++) table.renew(recs[i]!, 30_000);
    table.sweep(0);
    if (table.scheduledCount > table.size) t.fail(`second ${s}: ${table.scheduledCount} entries for ${table.size} records`);
  }
  t.equal(table.size, 50, 'the silent half expired and was freed');
  t.ok(recs.slice(0, 50).every((r) => same(table.get(r.key), r)), 'the refreshing half is still there');
  t.equal(table.scheduledCount, 50);
  table.delete(id('r0'));
  t.ok(recs[0]!.removed, 'deleted records are marked, their entry is void');
});

t.test('a renewal with a shorter TTL moves the probe earlier (issue 18)', async (t) => {
  // Started on a tick boundary and off one: ticks round the expiry up, so the checks below must
  // not depend on where in a tick the clock starts (the last one looked exactly at the renewed
  // record's expiry, where it has expired, whenever the start was a multiple of 100 ms: CI).
  for (const start of [1_700_000_000_000, 1_700_000_000_037]) {
    const clock = new FakeClock(start);
    const table = new RegistrationTable({ maxEntries: 10, now: clock.now, probeAtPercent: 80 });
    const rec = add(table, 'a', 600_000);
    table.sweep(10);
    table.renew(rec, 30_000);
    clock.advance(23_000);
    t.same(table.sweep(10).probes, [], 'not due at 23 s of 30');
    clock.advance(1_200);
    t.same(table.sweep(10).probes.map((r) => r.key), [rec.key], 'probed at 80% of the new, shorter TTL');
    t.equal(table.scheduledCount, 2, 'refiled at its expiry; the void entry at the old probe time waits for its bucket');
    table.renew(rec, 600_000);
    clock.advance(590_000); // past the renewed record's probe time (80%), before its expiry
    t.same(table.sweep(10).probes.map((r) => r.key), [rec.key], 'the void entry did not probe twice; the renewed record is probed once');
    t.equal(table.scheduledCount, 1);
  }
});

t.test('sweep work is bounded; the rest is freed by later sweeps', async (t) => {
  const clock = new FakeClock();
  const table = new RegistrationTable({ maxEntries: 1000, now: clock.now });
  for (let i = 0; i < 250; i++) add(table, `r${i}`, 5_000);
  clock.advance(6_000);
  t.equal(table.sweep(0, 100).expired, 100);
  t.equal(table.sweep(0, 100).expired, 100);
  t.equal(table.sweep(0, 100).expired, 50);
  t.equal(table.size, 0);
});

t.test('LRU bound evicts the least recently refreshed', async (t) => {
  const clock = new FakeClock();
  let evicted = 0;
  const table = new RegistrationTable({ maxEntries: 3, now: clock.now, onEvicted: () => evicted++ });
  add(table, 'a', 60_000);
  add(table, 'b', 60_000);
  add(table, 'c', 60_000);
  t.ok(table.touch(id('a')), 'a refreshed: now most recent');
  add(table, 'd', 60_000);
  t.equal(table.get(id('b')), undefined, 'b evicted');
  t.ok(table.get(id('a')));
  t.equal(evicted, 1);
  t.equal(table.evicted, 1);
});

t.test('compact record: addresses and packed fields round-trip', async (t) => {
  for (const ip of ['0.0.0.0', '255.255.255.255', '203.0.113.200', '10.0.0.1']) {
    t.equal(typeof packIp(ip), 'number', `${ip} packs into an integer`);
    t.equal(unpackIp(packIp(ip)), ip);
  }
  t.equal(packIp('2001:db8::1'), '2001:db8::1', 'IPv6 stays text');
  const table = new RegistrationTable({ maxEntries: 10, now: new FakeClock().now });
  const rec = table.set(id('a'), { addr: { ip: '192.0.2.1', port: 65535 }, session: undefined, seq: 7, regTick: 0, expTick: 100 });
  rec.netMode = 5;
  rec.visibility = 1;
  rec.probed = true;
  t.same(rec.address, { ip: '192.0.2.1', port: 65535 });
  t.equal(rec.netMode, 5);
  t.equal(rec.visibility, 1);
  t.equal(rec.probed, true);
  rec.setAddress({ ip: '2001:db8::2', port: 1 });
  rec.netMode = 2;
  t.same(rec.address, { ip: '2001:db8::2', port: 1 });
  t.equal(rec.netMode, 2);
  t.equal(rec.visibility, 1, 'other bits untouched');
  t.equal(rec.probed, true);
  rec.setAddress({ ip: '198.51.100.9', port: 2 });
  t.same(table.get(id('a'))!.address, { ip: '198.51.100.9', port: 2 }, 'back to IPv4');
  t.equal(rec.seq, 7);
});

t.test('a record still names its session after the session ended', async (t) => {
  // A session handle read no ID yet when it came from a restore (snapshot, another instance);
  // once its session ends it cannot read its slot. The record keeps the IDs readable, so the
  // store's Presence (sidHex) and the sweep (locatorHex) do not throw on such a record.
  const clock = new FakeClock(1_700_000_000_000);
  const verifier = new TicketVerifier({ keys: new Map(), audience: 'locator' });
  const sessions = new ServerSessions({ verifier, serviceSecret: undefined as never, now: () => clock.ms });
  const sidHex = randomBytes(16).toString('hex');
  const locatorHex = id('ended');
  const held = sessions.restore(newServerSession({
    sid: Buffer.from(sidHex, 'hex'), sidHex, locatorId: Buffer.from(locatorHex, 'hex'), locatorHex, aud: 'locator', exp: clock.ms / 1000 + 3600,
    terminalToServer: randomBytes(32), serverToTerminal: randomBytes(32), txSeq: 0,
  }));
  t.ok(held, 'held');
  const table = new RegistrationTable({ maxEntries: 10, now: clock.now });
  table.set(locatorHex, { addr: { ip: '198.51.100.7', port: 1000 }, session: held, seq: 1, regTick: table.nowTick(), expTick: table.expiryTick(60_000) });
  t.equal(sessions.dropWhere(() => true), 1, 'the session ended');
  const s = table.get(locatorHex)!.session!;
  t.equal(s.sidHex, sidHex, 'the record still names its session');
  t.equal(s.locatorHex, locatorHex, 'and its locator ID');
});

t.test('a record keeps a held session as its slot and generation, not as a handle', async (t) => {
  // Issue 16 (memory per terminal): no session object per record. A read makes a new handle on
  // the same session; once that session ended and its slot holds another, the record's handle is
  // not that other session and still names its own (its ID is copied in the record).
  const clock = new FakeClock(1_700_000_000_000);
  const verifier = new TicketVerifier({ keys: new Map(), audience: 'locator' });
  const sessions = new ServerSessions({ verifier, serviceSecret: undefined as never, now: () => clock.ms });
  const open = (locatorHex: string): ServerSession => {
    const sid = randomBytes(16);
    return sessions.restore(newServerSession({
      sid, locatorId: Buffer.from(locatorHex, 'hex'), aud: 'locator', exp: clock.ms / 1000 + 3600,
      terminalToServer: randomBytes(32), serverToTerminal: randomBytes(32), txSeq: 0,
    }))!;
  };
  const a = id('a');
  const first = open(a);
  const table = new RegistrationTable({ maxEntries: 10, now: clock.now, probeAtPercent: 50 });
  const rec = table.set(a, { addr: { ip: '198.51.100.7', port: 1000 }, session: first, seq: 1, regTick: table.nowTick(), expTick: table.expiryTick(60_000) });
  const read1 = rec.session!;
  const read2 = table.get(a)!.session!;
  t.not(read1, first, 'not the handle it was given');
  t.not(read1, read2, 'a handle made per read');
  t.ok(sameSession(read1, first) && sameSession(read2, first), 'the same session');
  t.ok(sessions.live(read1), 'live while its session is held');
  t.equal(read1.sidHex, first.sidHex);
  t.equal(table.sessionIdHex(rec.slot), first.sidHex, 'its ID read from the record');
  t.equal(table.nextCheckTick(rec), rec.regTick + Math.floor(rec.ttlTicks / 2), 'a record with a session is probed');
  t.equal(rec.seq, 1, 'the sequence number it was set with (handlers/standing.ts compares it)');

  rec.session = first;
  t.ok(sameSession(rec.session, first), 'rebinding the same session keeps it');

  // The session ends; another terminal's session takes its slot (the free list's first).
  t.equal(sessions.dropWhere((s) => s.sidHex === first.sidHex), 1);
  const other = open(id('b'));
  const ended = table.get(a)!.session!;
  t.notOk(sessions.live(ended), 'the ended session is not live');
  t.notOk(sameSession(ended, other), 'nor the session now in its slot');
  t.equal(ended.sidHex, first.sidHex, 'the record names its own session');
  t.equal(ended.locatorHex, a);
  t.not(table.sessionIdHex(rec.slot), other.sidHex, "not the session now in its slot: that one's updates are another session's");

  // A new session of the terminal rebinds the record.
  const second = open(a);
  rec.session = second;
  t.ok(sameSession(rec.session, second) && sessions.live(rec.session!), 'rebound to its new session');
  t.equal(table.sessionIdHex(rec.slot), second.sidHex);
  rec.session = undefined;
  t.equal(rec.session, undefined, 'unbound');
  t.equal(table.sessionIdHex(rec.slot), '');
  t.equal(table.nextCheckTick(rec), rec.expTick, 'no probe without a session');
});

t.test("findOf and sessionIdHexOf read the asking session's IDs only when it is the record's own", async (t) => {
  // A REFRESH finds its record by its session's raw locator ID and takes the record's session ID
  // from its handle (no hex parsed or made); any other session, or one that ended, reads the table.
  const clock = new FakeClock(1_700_000_000_000);
  const verifier = new TicketVerifier({ keys: new Map(), audience: 'locator' });
  const sessions = new ServerSessions({ verifier, serviceSecret: undefined as never, now: () => clock.ms });
  const open = (locatorHex: string): ServerSession => sessions.restore(newServerSession({
    sid: randomBytes(16), locatorId: Buffer.from(locatorHex, 'hex'), aud: 'locator', exp: clock.ms / 1000 + 3600,
    terminalToServer: randomBytes(32), serverToTerminal: randomBytes(32), txSeq: 0,
  }))!;
  const a = id('a');
  const b = id('b');
  const ofA = open(a);
  const ofB = open(b);
  const table = new RegistrationTable({ maxEntries: 10, now: clock.now });
  const addr = { ip: '198.51.100.7', port: 1000 };
  const recA = table.set(a, { addr, session: ofA, seq: 1, regTick: table.nowTick(), expTick: table.expiryTick(60_000) });
  const recB = table.set(b, { addr, session: ofB, seq: 1, regTick: table.nowTick(), expTick: table.expiryTick(60_000) });
  t.equal(table.findOf(a, ofA), recA.slot, "by the session's own locator ID");
  t.equal(table.findOf(a, ofB), recA.slot, "another terminal's session: by the ID asked for");
  t.equal(table.findOf(b, undefined), recB.slot);
  t.equal(table.findOf(id('c'), ofA), -1, 'an unknown ID');
  t.equal(table.sessionIdHexOf(recA.slot, ofA), ofA.sidHex);
  t.equal(table.sessionIdHexOf(recA.slot, ofB), ofA.sidHex, "another session: the record's own");
  // A's session ends and a new one takes its slot: the record still names the ended one.
  t.equal(sessions.dropWhere((s) => s.sidHex === ofA.sidHex), 1);
  const next = open(a);
  t.equal(table.sessionIdHexOf(recA.slot, next), ofA.sidHex, 'not the session now in its slot');
  t.equal(table.findOf(a, next), recA.slot);
});

t.test('a session not held for this record is kept as it is', async (t) => {
  // A plain record (not held), or a held session of another locator ID: the object itself.
  const clock = new FakeClock(1_700_000_000_000);
  const verifier = new TicketVerifier({ keys: new Map(), audience: 'locator' });
  const sessions = new ServerSessions({ verifier, serviceSecret: undefined as never, now: () => clock.ms });
  const table = new RegistrationTable({ maxEntries: 10, now: clock.now });
  const plain = fakeSession();
  const rec = table.set(id('a'), { addr: { ip: '198.51.100.7', port: 1000 }, session: plain, seq: 1, regTick: 0, expTick: 100 });
  t.equal(rec.session, plain);
  t.equal(table.sessionIdHex(rec.slot), plain.sidHex);
  const b = id('b');
  const ofB = sessions.restore(newServerSession({
    sid: randomBytes(16), locatorId: Buffer.from(b, 'hex'), aud: 'locator', exp: clock.ms / 1000 + 3600,
    terminalToServer: randomBytes(32), serverToTerminal: randomBytes(32), txSeq: 0,
  }))!;
  rec.session = ofB;
  t.equal(rec.session, ofB, "another locator ID's session: that handle");
  t.equal(sessions.dropWhere(() => true), 1);
  t.equal(rec.session!.locatorHex, b, 'naming its own locator ID after it ended');
  t.equal(table.sessionIdHex(rec.slot), ofB.sidHex);
});
