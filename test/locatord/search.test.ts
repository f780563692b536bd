// Partner search (issue 18 item 3): SEARCH / SEARCH_RESULT against a real locatord on both
// stores. Found: online terminals with the media ID asked, looking for a partner, whose wants
// satisfy every requirement, and that the searcher may see; answered as QUERY_STATUS would
// answer of them. Paged in locator ID order; charged; bad requirements refused with a code.
import { createHash } from 'node:crypto';
import t from 'tap';
import type { Test } from 'tap';
import type { PresenceEntry, PresenceRecord } from '../../src/wire/catalog.js';
import { MAX_SEARCH_SCAN } from '../../src/wire/catalog.js';
import { ErrorCode } from '../../src/wire/errors.js';
import type { TestKeys } from './fixtures/helpers.js';
import type { StoreFixture } from './fixtures/helpers.js';
import { errorCodeOf, FakeClock, forEachStore, onRedisStore, pool, Terminal } from './fixtures/helpers.js';
import { Logger } from '../../src/common/log.js';
import { locatordControl } from '../../src/locatord/control.js';
import type { SharedStore } from '../../src/locatord/store/shared.js';
import type { Address } from '../../src/wire/addr.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const level = (min: number, max: number) => [{ attr: 'level', op: 1, min, max, mandatory: true }];

/** Every entry SEARCH answers, following `next` to the end (and how many pages it took). */
async function searchAll(t: Test, who: Terminal, body: { mediaId: string; requirements?: ReturnType<typeof level> }): Promise<{ entries: PresenceEntry[]; pages: number }> {
  const entries: PresenceEntry[] = [];
  let after: Uint8Array | undefined;
  for (let pages = 1; ; pages++) {
    const r = await who.expect(t, 'SEARCH_RESULT', who.request('SEARCH', after ? { ...body, after } : body));
    entries.push(...r.body.entries);
    if (!r.body.next) return { entries, pages };
    t.ok(pages < 100, 'paging ends');
    after = r.body.next;
  }
}

async function registered(t: Test, keys: TestKeys, dest: Address, body: { nickname?: string; visibility?: number; allow?: Buffer[]; presence?: PresenceRecord }): Promise<Terminal> {
  const x = await Terminal.open(t, keys, dest);
  await x.expect(t, 'REGISTER_ACK', x.register(body));
  return x;
}

t.test('search: media ID, looking for a partner, requirements on wants, visibility; what QUERY_STATUS tells', (t) => forEachStore(t, async (t, s) => {
  const { dest, keys } = await s.start(t);
  const looking = (mediaId: string, lvl: number): PresenceRecord => ({ mediaId, lookingForPartner: true, wants: { level: lvl } });
  const me = await registered(t, keys, dest, { presence: looking('chess', 3) });
  const ann = await registered(t, keys, dest, { nickname: 'ann', presence: { ...looking('chess', 3), status: 'up for a game' } });
  await registered(t, keys, dest, { presence: looking('chess', 9) }); // wants another level
  await registered(t, keys, dest, { presence: { mediaId: 'chess', wants: { level: 3 } } }); // not looking
  await registered(t, keys, dest, { presence: looking('go', 3) }); // another medium
  await registered(t, keys, dest, { visibility: 1, presence: looking('chess', 3) }); // hidden from me
  const friend = await registered(t, keys, dest, { visibility: 1, allow: [me.locatorId], nickname: 'fay', presence: looking('chess', 4) });

  const { entries } = await searchAll(t, me, { mediaId: 'chess', requirements: level(2, 4) });
  const want = [ann, friend].map((x) => hex(x.locatorId)).sort();
  t.same(entries.map((e) => hex(e.id)), want, 'ann and the friend that allows me, in ID order; not me, not the hidden one');
  const q = await me.expect(t, 'QUERY_STATUS_RESULT', me.request('QUERY_STATUS', { ids: entries.map((e) => e.id), presence: true }));
  t.same(entries.map((e) => e.presence), q.body.presence, 'the presence records QUERY_STATUS answers');
  t.same(entries.find((e) => hex(e.id) === hex(ann.locatorId)), { id: ann.locatorId, online: true, nickname: 'ann', presence: { ...looking('chess', 3), status: 'up for a game' } });
  t.same((await searchAll(t, me, { mediaId: 'chess' })).entries.length, 3, 'no requirements: every visible one looking (levels 3, 9 and 4)');
  t.same((await searchAll(t, me, { mediaId: 'backgammon' })).entries, [], 'a media ID nobody uses');

  // Not looking any more, or gone: not found.
  await ann.expect(t, 'PRESENCE_SET_ACK', ann.request('PRESENCE_SET', { presence: { mediaId: 'chess', status: 'busy' } }));
  await friend.expect(t, 'UNREGISTER_ACK', friend.request('UNREGISTER', {}));
  t.same((await searchAll(t, me, { mediaId: 'chess', requirements: level(2, 4) })).entries, [], 'neither is found');
  // Looking again, under another medium: found there only.
  await ann.expect(t, 'PRESENCE_SET_ACK', ann.request('PRESENCE_SET', { presence: looking('go', 2) }));
  const go = (await searchAll(t, me, { mediaId: 'go', requirements: level(2, 4) })).entries;
  t.equal(go.length, 2, 'go: ann (level 2) and the other (level 3)');
  t.ok(go.some((e) => hex(e.id) === hex(ann.locatorId)), 'ann among them');
  t.same((await searchAll(t, me, { mediaId: 'chess', requirements: level(2, 2) })).entries, [], 'and not under chess');
}));

t.test('search: a REFRESH keeps a terminal found (with or without new LAN addresses); a PRESENCE_SET that stops looking removes it', (t) => forEachStore(t, async (t, s) => {
  // The embedded store skips the index on a REFRESH that keeps the record's extra (the same
  // object): what it finds must not change with that, nor miss a change that comes another way.
  const { dest, keys } = await s.start(t);
  const me = await registered(t, keys, dest, {});
  const x = await registered(t, keys, dest, { presence: { mediaId: 'chess', lookingForPartner: true } });
  const found = async (): Promise<string[]> => (await searchAll(t, me, { mediaId: 'chess' })).entries.map((e) => hex(e.id));
  t.same(await found(), [hex(x.locatorId)]);
  await x.expect(t, 'REFRESH_ACK', x.request('REFRESH', {}));
  t.same(await found(), [hex(x.locatorId)], 'after a REFRESH');
  await x.expect(t, 'REFRESH_ACK', x.request('REFRESH', { localAddrs: [{ ip: '192.168.1.7', port: 4000 }] }));
  t.same(await found(), [hex(x.locatorId)], 'after a REFRESH with LAN addresses (a new extra)');
  await x.expect(t, 'PRESENCE_SET_ACK', x.request('PRESENCE_SET', { presence: { mediaId: 'chess', lookingForPartner: false } }));
  t.same(await found(), [], 'no longer looking: gone');
  await x.expect(t, 'REFRESH_ACK', x.request('REFRESH', {}));
  t.same(await found(), [], 'and a REFRESH does not bring it back');
  await x.expect(t, 'PRESENCE_SET_ACK', x.request('PRESENCE_SET', { presence: { mediaId: 'chess', lookingForPartner: true } }));
  await x.expect(t, 'REFRESH_ACK', x.request('REFRESH', {}));
  t.same(await found(), [hex(x.locatorId)], 'looking again, then a REFRESH: found');
}));

t.test('search: paged in ID order, every candidate once, each page one datagram', (t) => forEachStore(t, async (t, s) => {
  const { dest, keys } = await s.start(t);
  const me = await registered(t, keys, dest, {});
  // Large records (8 wanted attributes, a long status): few fit a page.
  const wants = Object.fromEntries(Array.from({ length: 8 }, (_, i) => [`attribute${i}`, 'v'.repeat(60)]));
  const n = MAX_SEARCH_SCAN + 6;
  const all = await pool(Array.from({ length: n }, (_, i) => i), 8, () =>
    registered(t, keys, dest, { nickname: 'n'.repeat(32), presence: { mediaId: 'chess', lookingForPartner: true, wants, status: 's'.repeat(64) } }));
  const { entries, pages } = await searchAll(t, me, { mediaId: 'chess' });
  const ids = entries.map((e) => hex(e.id));
  t.same(ids, all.map((x) => hex(x.locatorId)).sort(), 'every candidate exactly once, in ID order');
  t.ok(pages > 2, `${pages} pages`);
  // Past the scan bound with few results: a page may be empty, and says where to go on.
  const few = await me.expect(t, 'SEARCH_RESULT', me.request('SEARCH', { mediaId: 'chess', requirements: [{ attr: 'attribute0', op: 0, value: 'nothing' }] }));
  t.same(few.body.entries, [], 'none of the first 64 matches');
  t.ok(few.body.next, 'but candidates remain');
  const rest = await me.expect(t, 'SEARCH_RESULT', me.request('SEARCH', { mediaId: 'chess', requirements: [{ attr: 'attribute0', op: 0, value: 'nothing' }], after: few.body.next! }));
  t.same(rest.body, { entries: [] }, 'the last 6: none, and the end');
}));

const LOOKING_CHESS: PresenceRecord = { mediaId: 'chess', lookingForPartner: true };

/** On an injected clock: `me` (registered 300 s) and `x` (30 s, looking for a partner at chess), found by `me`; then 31 s pass. */
async function xExpires(t: Test, s: StoreFixture): Promise<{ clock: FakeClock; loc: Awaited<ReturnType<StoreFixture['start']>>['loc']; me: Terminal; x: Terminal }> {
  const clock = new FakeClock();
  const { loc, dest, keys } = await s.start(t, { now: clock.now, limits: { minTtlS: 30, defaultTtlS: 30 } });
  const nowS = Math.floor(clock.ms / 1000);
  const me = await Terminal.open(t, keys, dest, { nowS });
  await me.expect(t, 'REGISTER_ACK', me.request('REGISTER', { ticket: me.creds.ticket, timeMs: clock.ms, ttlS: 300 }));
  const x = await Terminal.open(t, keys, dest, { nowS });
  await x.expect(t, 'REGISTER_ACK', x.request('REGISTER', { ticket: x.creds.ticket, timeMs: clock.ms, presence: LOOKING_CHESS }));
  t.equal((await searchAll(t, me, { mediaId: 'chess' })).entries.length, 1, 'found while registered');
  clock.advance(31_000);
  return { clock, loc, me, x };
}

t.test('search: expired registrations are not found, and leave the index (injected clock)', (t) => forEachStore(t, async (t, s) => {
  const { loc, me } = await xExpires(t, s);
  t.same((await searchAll(t, me, { mediaId: 'chess' })).entries, [], 'expired: not found');
  for (const end = Date.now() + 10_000; (await loc.store.search.page('chess', '', 10)).length > 0 && Date.now() < end;) await new Promise((r) => setTimeout(r, 20));
  t.same(await loc.store.search.page('chess', '', 10), [], 'and no longer indexed');
}));

t.test('search index on Redis: a kicked terminal leaves it at once, expired ones by the sweep, without any SEARCH (bounded memory)', (t) => onRedisStore(t, 'redis store', async (t, s) => {
  const clock = new FakeClock();
  const { loc, dest, keys } = await s.start(t, { now: clock.now, limits: { minTtlS: 30, defaultTtlS: 30 } });
  const redis = (loc.store as SharedStore).redis;
  const nowS = Math.floor(clock.ms / 1000);
  const register = async (mediaId: string, ttlS: number): Promise<Terminal> => {
    const x = await Terminal.open(t, keys, dest, { nowS });
    await x.expect(t, 'REGISTER_ACK', x.request('REGISTER', { ticket: x.creds.ticket, timeMs: clock.ms, ttlS, presence: { mediaId, lookingForPartner: true } }));
    return x;
  };
  const chess = await pool(Array.from({ length: 40 }, (_, i) => i), 8, () => register('chess', 30));
  const stays = await register('go', 300);
  const indexed = async (mediaId: string): Promise<string[]> => loc.store.search.page(mediaId, '', 1000);
  t.equal((await indexed('chess')).length, 40, 'indexed');
  const mediaSet = async (): Promise<number> => ((await redis.client.call(['SCARD', 'dl:sm'])) as number);
  t.equal(await mediaSet(), 2, 'two media IDs in dl:sm');

  const kicked = hex(chess[0]!.locatorId);
  await locatordControl(loc, new Logger({ service: 'locatord', write: () => undefined })).commands['kick']!({ target: kicked });
  t.notOk((await indexed('chess')).includes(kicked), 'kicked: out of the index at once');

  clock.advance(31_000);
  // Nobody searches nor registers again under chess: the sweeps alone empty its index.
  for (const end = Date.now() + 60_000; (await indexed('chess')).length > 0 && Date.now() < end;) {
    await loc.sweep();
    await new Promise((r) => setTimeout(r, 20));
  }
  t.same(await indexed('chess'), [], 'expired: no longer indexed');
  t.same(await redis.client.call(['EXISTS', 'dl:sl:{' + createHash('sha256').update('chess').digest('hex').slice(0, 32) + '}']), 0, 'its keys are gone from Redis');
  for (const end = Date.now() + 60_000; (await mediaSet()) > 1 && Date.now() < end;) {
    await loc.sweep();
    await new Promise((r) => setTimeout(r, 20));
  }
  t.equal(await mediaSet(), 1, 'and its media hash left dl:sm');
  t.same(await indexed('go'), [hex(stays.locatorId)], 'the live one stays indexed');
  t.ok(loc.metrics.get('search_index_trimmed_total') >= 39, 'trimmed entries counted');
  const me = await register('go', 300);
  t.same((await searchAll(t, me, { mediaId: 'chess' })).entries, [], 'and SEARCH finds none of them');
}));

t.test('search abuse: oversize or invalid requirements, rate limit', (t) => forEachStore(t, async (t, s) => {
  const { loc, dest, keys, logLines } = await s.start(t, { limits: { queryRatePerS: 1, queryBurst: 6, querySourceRatePerS: 0 } });
  const me = await registered(t, keys, dest, {});
  const many = Array.from({ length: 17 }, (_, i) => ({ attr: `a${i}`, op: 0, value: 'x' }));
  t.equal(errorCodeOf(await me.request('SEARCH', { mediaId: 'chess', requirements: many })), ErrorCode.BAD_MESSAGE, '17 requirements: BAD_MESSAGE');
  t.equal(errorCodeOf(await me.request('SEARCH', { mediaId: 'c'.repeat(65) })), ErrorCode.BAD_MESSAGE, 'media ID over 64 bytes: BAD_MESSAGE');
  t.equal(errorCodeOf(await me.request('SEARCH', { mediaId: 'chess', requirements: [{ attr: 'x'.repeat(33), op: 0, value: 'x' }] })), ErrorCode.BAD_MESSAGE, 'attribute name over 32 bytes');
  t.equal(errorCodeOf(await me.request('SEARCH', { mediaId: 'chess', requirements: [{ attr: 'level', op: 1, min: 5, max: 2 }] })), ErrorCode.BAD_MESSAGE, 'min > max: BAD_MESSAGE');
  t.equal(errorCodeOf(await me.request('SEARCH', { mediaId: 'chess', requirements: [{ attr: 'level', op: 2, set: [] }] })), ErrorCode.BAD_MESSAGE, 'op 2 without a set');
  t.equal(errorCodeOf(await me.request('SEARCH', { mediaId: 'chess', requirements: [{ attr: 'level', op: 0 }] })), ErrorCode.BAD_MESSAGE, 'op 0 without a value');
  t.ok(logLines.some((l) => l.includes('search-bad-requirements')), 'refusals logged');
  t.ok(loc.metrics.get('queries_total', { type: 'SEARCH', result: 'bad-requirements' }) >= 3, 'and counted');
  // Budget of 6 IDs, each SEARCH costs at least one: the seventh within a second is refused.
  let limited = 0;
  for (let i = 0; i < 12 && limited === 0; i++) if (errorCodeOf(await me.request('SEARCH', { mediaId: 'chess' })) === ErrorCode.RATE_LIMITED) limited++;
  t.equal(limited, 1, 'RATE_LIMITED once the lookup budget is spent');
  t.ok(loc.metrics.get('queries_total', { type: 'SEARCH', result: 'rate-limited' }) >= 1);
}));

t.test('search after a restart: the index is rebuilt from the snapshot (embedded) or kept in Redis', (t) => forEachStore(t, async (t, s) => {
  const stateDir = t.testdir();
  const first = await s.start(t, { stateDir, snapshot: true });
  const x = await registered(t, first.keys, first.dest, { presence: { mediaId: 'chess', lookingForPartner: true } });
  await first.loc.stop();
  const second = await s.start(t, { stateDir, snapshot: true, keys: first.keys });
  const me = await registered(t, first.keys, second.dest, {});
  t.same((await searchAll(t, me, { mediaId: 'chess' })).entries.map((e) => hex(e.id)), [hex(x.locatorId)], 'found after the restart');
}));

t.test('search: an entry found stale is not lost when its terminal starts looking again meanwhile (injected clock)', (t) => onRedisStore(t, 'redis store', async (t, s) => {
  // On Redis a SEARCH reads the candidates' records, then drops the entries found stale, while
  // other requests run. Here the terminal registers again, looking, between the read and the
  // drop (the drop is held until its REGISTER_ACK): it must still be found afterwards, not only
  // after its next REFRESH.
  const { clock, loc, me, x } = await xExpires(t, s); // x's record has expired; its index entry is still there (a stale hint)

  const search = loc.store.search;
  const drop = search.drop.bind(search);
  let held = 0;
  search.drop = async (mediaId: string, idHex: string): Promise<void> => {
    held++;
    await x.expect(t, 'REGISTER_ACK', x.request('REGISTER', { ticket: x.creds.ticket, timeMs: clock.ms, presence: LOOKING_CHESS }));
    return drop(mediaId, idHex);
  };
  t.same((await searchAll(t, me, { mediaId: 'chess' })).entries, [], 'expired: not found, and its entry is dropped');
  for (const end = Date.now() + 30_000; held === 0 && Date.now() < end;) await new Promise((r) => setTimeout(r, 20));
  t.equal(held, 1, 'the drop ran (after the terminal registered again)');
  search.drop = drop;
  const xHex = hex(x.locatorId);
  let found = false;
  for (const end = Date.now() + 30_000; !found && Date.now() < end;) {
    found = (await searchAll(t, me, { mediaId: 'chess' })).entries.some((e) => hex(e.id) === xHex);
    if (!found) await new Promise((r) => setTimeout(r, 50));
  }
  t.ok(found, 'registered again, looking: found without waiting for its REFRESH');
}));
