// Queries: paging across datagrams, visibility ("not allowed" is "offline", byte for byte),
// expiry under an injected clock, and rate limits that count IDs, per source and per terminal.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import type { Reply } from '../../src/net/client.js';
import type { MessageOf } from '../../src/wire/envelope.js';
import { entryFields, encodedSize } from '../../src/locatord/paging.js';
import type { AddrEntry } from '../../src/wire/catalog.js';
import { MAX_DATAGRAM, Visibility } from '../../src/wire/constants.js';
import { ErrorCode } from '../../src/wire/errors.js';
import { errorCodeOf, FakeClock, forEachStore, Terminal } from './fixtures/helpers.js';
import type { LocatorContext } from '../../src/locatord/context.js';
import { visibleRecords } from '../../src/locatord/handlers/query.js';
import type { Presence } from '../../src/locatord/store/types.js';
import type { ServerSession } from '../../src/net/sessions.js';

const addrEntryBytes = (e: AddrEntry): number => encodedSize(entryFields('QUERY_ADDR_RESULT'), e);

t.test('QUERY_ADDR pages across several datagrams, each within 1200 bytes', (t) => forEachStore(t, async (t, s) => {
  const { dest, keys } = await s.start(t);
  const asker = await Terminal.open(t, keys, dest);
  await asker.expect(t, 'REGISTER_ACK', asker.register());
  // 40 terminals with the largest entries the schema allows, 24 unknown IDs among them.
  const targets = await Promise.all(Array.from({ length: 40 }, () => Terminal.open(t, keys, dest)));
  for (const [i, x] of targets.entries()) {
    await x.expect(t, 'REGISTER_ACK', x.register({
      nickname: `n${i}`.padEnd(32, 'x'), mediaId: `m${i}`.padEnd(64, 'y'),
      localAddrs: [1, 2, 3, 4].map((k) => ({ ip: `2001:db8::${k}`, port: 40000 + k })), netMode: 4,
    }));
  }
  // Five registered then three unknown, repeated: 40 + 24 = 64 IDs.
  const queue = targets.map((x) => x.locatorId);
  const ids = Array.from({ length: 64 }, (_, i) => (i % 8 < 5 ? queue.shift()! : randomBytes(16)));
  const seen: AddrEntry[] = [];
  let cursor: number | undefined = 0;
  let pages = 0;
  while (cursor !== undefined) {
    const r: Reply = await asker.request('QUERY_ADDR', { ids, cursor });
    t.ok(r.raw.length <= MAX_DATAGRAM, `page ${pages}: ${r.raw.length} B`);
    const m: MessageOf<'QUERY_ADDR_RESULT'> = await asker.expect(t, 'QUERY_ADDR_RESULT', Promise.resolve(r));
    t.ok(m.body.entries.length > 0, 'every page advances');
    seen.push(...m.body.entries);
    cursor = m.body.nextCursor;
    if (cursor !== undefined) t.equal(cursor, seen.length, 'cursor = next index');
    pages++;
  }
  t.ok(pages >= 3, `${pages} pages`);
  t.equal(seen.length, 64);
  seen.forEach((e, i) => {
    if (!Buffer.from(e.id).equals(ids[i]!)) t.fail(`entry ${i} out of order`);
    const target = targets.find((x) => x.locatorId.equals(ids[i]!));
    if (target) {
      if (!e.online || e.addr?.port !== target.address.port || e.localAddrs?.length !== 4) t.fail(`entry ${i}: ${JSON.stringify(e)}`);
    } else if (e.online || Object.keys(e).length !== 2) t.fail(`entry ${i} should be a bare offline entry`);
  });
  t.equal(seen.filter((e) => e.online).length, 40);
}));

t.test('QUERY_STATUS answers 64 IDs in one datagram', (t) => forEachStore(t, async (t, s) => {
  const { dest, keys } = await s.start(t);
  const a = await Terminal.open(t, keys, dest);
  const b = await Terminal.open(t, keys, dest);
  await a.expect(t, 'REGISTER_ACK', a.register());
  await b.expect(t, 'REGISTER_ACK', b.register());
  const ids = Array.from({ length: 64 }, (_, i) => (i === 0 ? a.locatorId : i === 63 ? b.locatorId : randomBytes(16)));
  const m = await a.expect(t, 'QUERY_STATUS_RESULT', a.request('QUERY_STATUS', { ids }));
  t.equal(m.body.online.length, 64);
  t.equal(m.body.nextCursor, undefined);
  t.same(m.body.online.map((x, i) => (x ? i : -1)).filter((i) => i >= 0), [0, 63]);
}));

t.test('visibility 1: self, allow-list and group members see it; others see exactly "offline"', (t) => forEachStore(t, async (t, s) => {
  const { dest, keys } = await s.start(t);
  const [target, allowed, member, stranger] = await Promise.all([0, 1, 2, 3].map(() => Terminal.open(t, keys, dest)));
  for (const x of [allowed!, member!, stranger!]) await x.expect(t, 'REGISTER_ACK', x.register());
  const created = await member!.expect(t, 'GROUP_CREATE_ACK', member!.request('GROUP_CREATE', { name: 'team' }));
  await target!.expect(t, 'REGISTER_ACK', target!.register({
    visibility: Visibility.GROUPS_AND_ALLOWED, allow: [allowed!.locatorId], nickname: 'hidden', joinGroups: [{ groupId: created.body.groupId }],
  }));
  const entryFor = async (asker: Terminal): Promise<AddrEntry> =>
    (await asker.expect(t, 'QUERY_ADDR_RESULT', asker.request('QUERY_ADDR', { ids: [target!.locatorId] }))).body.entries[0]!;
  const statusFor = async (asker: Terminal): Promise<boolean> =>
    (await asker.expect(t, 'QUERY_STATUS_RESULT', asker.request('QUERY_STATUS', { ids: [target!.locatorId] }))).body.online[0]!;
  for (const [who, x] of [['itself', target!], ['allow-listed', allowed!], ['group member', member!]] as const) {
    const e = await entryFor(x);
    t.equal(e.online, true, `${who} sees it online`);
    t.equal(e.nickname, 'hidden');
    t.equal(await statusFor(x), true);
  }
  const hidden = await entryFor(stranger!);
  t.equal(await statusFor(stranger!), false, 'stranger: status offline');
  // The same ID once really offline.
  await target!.expect(t, 'UNREGISTER_ACK', target!.request('UNREGISTER', {}));
  const offline = await entryFor(stranger!);
  const offlineForMember = await entryFor(member!);
  t.same(hidden, offline);
  t.equal(addrEntryBytes(hidden), addrEntryBytes(offline));
  t.ok(Buffer.compare(Buffer.from(JSON.stringify(hidden)), Buffer.from(JSON.stringify(offlineForMember))) === 0, 'not allowed == offline == unknown');
  t.same(Object.keys(hidden).sort(), ['id', 'online']);
}));

t.test('a hidden online terminal and an unknown ID cost the same store work (no timing oracle)', async (t) => {
  // visibleRecords over a stub store that counts its calls: 64 hidden online IDs and 64 unknown
  // IDs must make the same calls, so a QUERY_STATUS cannot time one against the other.
  const calls: string[] = [];
  const hidden = new Map<string, Presence>();
  const asker = { locatorHex: randomBytes(16).toString('hex'), locatorId: randomBytes(16) } as unknown as ServerSession;
  const store = {
    getPresences: (hexes: string[]) => { calls.push(`getPresences:${hexes.length}`); return hexes.map((h) => hidden.get(h)); },
    groups: { shareGroup: () => { calls.push('shareGroup'); return false; } },
  };
  const c = { store } as unknown as LocatorContext;
  const hiddenIds = Array.from({ length: 64 }, () => randomBytes(16));
  for (const id of hiddenIds) hidden.set(id.toString('hex'), { visibility: Visibility.GROUPS_AND_ALLOWED, extra: { allow: [] } } as unknown as Presence);
  const seenHidden = await visibleRecords(c, hiddenIds, asker);
  const hiddenCalls = calls.splice(0);
  const seenUnknown = await visibleRecords(c, Array.from({ length: 64 }, () => randomBytes(16)), asker);
  const unknownCalls = calls.splice(0);
  t.same(seenHidden, seenUnknown, 'both answer nothing visible');
  t.same(unknownCalls, hiddenCalls, 'the same store calls, in the same number');
  t.equal(hiddenCalls.filter((x) => x === 'shareGroup').length, 64);
});

t.test('expired registrations answer offline (injected clock)', (t) => forEachStore(t, async (t, s) => {
  const clock = new FakeClock();
  const { dest, keys } = await s.start(t, { now: clock.now, limits: { minTtlS: 30, defaultTtlS: 30 } });
  const nowS = Math.floor(clock.ms / 1000);
  const a = await Terminal.open(t, keys, dest, { nowS });
  const b = await Terminal.open(t, keys, dest, { nowS });
  await a.expect(t, 'REGISTER_ACK', a.request('REGISTER', { ticket: a.creds.ticket, timeMs: clock.ms }));
  await b.expect(t, 'REGISTER_ACK', b.request('REGISTER', { ticket: b.creds.ticket, timeMs: clock.ms, ttlS: 300 }));
  const ask = async (): Promise<boolean[]> => (await a.expect(t, 'QUERY_STATUS_RESULT', a.request('QUERY_STATUS', { ids: [a.locatorId, b.locatorId] }))).body.online;
  t.same(await ask(), [true, true]);
  clock.advance(29_000);
  t.same(await ask(), [true, true]);
  clock.advance(1_100);
  t.same(await ask(), [false, true], 'a expired at 30 s, b has 300 s');
  const r = await a.request('REFRESH', {});
  t.equal(errorCodeOf(r), ErrorCode.NOT_FOUND, 'refresh after expiry: register again');
}));

t.test('query floods and ID enumeration are limited per source, counting IDs', (t) => forEachStore(t, async (t, s) => {
  const { loc, dest, keys } = await s.start(t, { limits: { querySourceRatePerS: 1, querySourceBurst: 100, queryRatePerS: 0 } });
  const a = await Terminal.open(t, keys, dest);
  await a.expect(t, 'REGISTER_ACK', a.register());
  const ids = Array.from({ length: 64 }, () => randomBytes(16));
  await a.expect(t, 'QUERY_STATUS_RESULT', a.request('QUERY_STATUS', { ids }));
  const second = await a.request('QUERY_STATUS', { ids });
  t.equal(errorCodeOf(second), ErrorCode.RATE_LIMITED, 'two requests, but 128 IDs > burst of 100');
  if (second.msg.name === 'ERROR') t.ok((second.msg.body.retryAfterMs ?? 0) > 0, 'with a retry delay');
  // Single-ID queries: the rest of the budget, then refusals.
  // The budget refills at 1 ID/s of real time: a slow (busy) machine earns one more per second
  // the loop takes, which the bounds allow for (the limit is the point, not the machine's speed).
  let answered = 0;
  let limited = 0;
  const started = performance.now();
  for (let i = 0; i < 60; i++) {
    const r = await a.request('QUERY_ADDR', { ids: [randomBytes(16)] });
    if (r.msg.name === 'QUERY_ADDR_RESULT') answered++;
    else if (errorCodeOf(r) === ErrorCode.RATE_LIMITED) limited++;
  }
  const refilled = Math.ceil((performance.now() - started) / 1000);
  t.ok(answered <= 37 + refilled, `flood: ${answered} answered (budget ~36 left, + ${refilled} refilled)`);
  t.ok(limited >= 23 - refilled, `flood: ${limited} refused`);
  // Another terminal from the same address shares the source budget.
  const b = await Terminal.open(t, keys, dest);
  await b.expect(t, 'REGISTER_ACK', b.register());
  t.equal(errorCodeOf(await b.request('QUERY_STATUS', { ids })), ErrorCode.RATE_LIMITED, 'per source, not per terminal');
  t.ok(loc.metrics.get('queries_total', { type: 'QUERY_STATUS', result: 'rate-limited' }) >= 2);
}));

t.test('per-terminal budget: more sessions or sockets buy nothing', (t) => forEachStore(t, async (t, s) => {
  const { dest, keys } = await s.start(t, { limits: { queryRatePerS: 1, queryBurst: 64, querySourceRatePerS: 0 } });
  const a = await Terminal.open(t, keys, dest);
  await a.expect(t, 'REGISTER_ACK', a.register());
  const ids = Array.from({ length: 64 }, () => randomBytes(16));
  await a.expect(t, 'QUERY_STATUS_RESULT', a.request('QUERY_STATUS', { ids }));
  t.equal(errorCodeOf(await a.request('QUERY_STATUS', { ids })), ErrorCode.RATE_LIMITED);
  // Same terminal (locator ID), second ticket and socket: same budget.
  const a2 = await Terminal.open(t, keys, dest, { locatorId: a.locatorId });
  await a2.expect(t, 'REGISTER_ACK', a2.register());
  t.equal(errorCodeOf(await a2.request('QUERY_STATUS', { ids })), ErrorCode.RATE_LIMITED);
  // A different terminal has its own.
  const b = await Terminal.open(t, keys, dest);
  await b.expect(t, 'REGISTER_ACK', b.register());
  await b.expect(t, 'QUERY_STATUS_RESULT', b.request('QUERY_STATUS', { ids }));
}));

t.test('datagram flood from one source is cut before the handler (charged once the MAC verified)', (t) => forEachStore(t, async (t, s) => {
  const { loc, keys, dest } = await s.start(t, { limits: { ratePerS: 1, burst: 5 } });
  const a = await Terminal.open(t, keys, dest);
  // Fed straight into the server (no socket needed): 20 REGISTERs from one source at once.
  const from = { ip: '127.0.0.9', port: 40000 };
  for (let i = 0; i < 20; i++) await loc.server.receive(a.encode('REGISTER', { ticket: a.creds.ticket, timeMs: Date.now() }).bytes, from);
  // Handled: executed, or (this source never proved it receives) answered with ADDR_CHALLENGE.
  const executed = loc.metrics.get('requests_total', { type: 'REGISTER', result: 'ok' }) + loc.metrics.get('requests_total', { type: 'REGISTER', result: 'ADDR_CHALLENGE' });
  t.ok(executed >= 5 && executed <= 6, `${executed} handled`);
  const limited = loc.metrics.get('refused_total', { code: 'RATE_LIMITED' }) + loc.metrics.get('dropped_total', { reason: 'rate-limited' });
  t.ok(limited >= 14, 'the rest refused (RATE_LIMITED answers bounded by their own bucket) or dropped');
  t.equal(loc.verifier.signatureChecks, 1);
}));
