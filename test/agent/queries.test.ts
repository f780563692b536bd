// The locator queries (src/agent/queries.ts) against a fake server answering pages: the one
// paging loop of lookup, online and group members, and its one stop rule — a complete listing,
// an empty page with a next cursor, a cursor that does not advance, the end of the IDs asked
// for, and the page limit — so no server answer can keep the agent asking. In process, no
// sockets, no clock.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import type { ClientSession } from '../../src/net/clientsession.js';
import { ServerError } from '../../src/agent/errors.js';
import { formatId } from '../../src/agent/ids.js';
import type { Page, QueryHost } from '../../src/agent/queries.js';
import { collectPages, LocatorQueries, MAX_MEMBER_PAGES } from '../../src/agent/queries.js';
import { ErrorCode } from '../../src/wire/errors.js';

/** A fake server: `answer(cursor)` gives the page; every cursor asked for is recorded. */
function pages<T>(answer: (cursor: number) => Page<T>): { fetch: (c: number | undefined) => Promise<Page<T>>; asked: (number | undefined)[] } {
  const asked: (number | undefined)[] = [];
  return { asked, fetch: async (c) => (asked.push(c), answer(c ?? 0)) };
}

/** A well-behaved server over `items`: `per` a page, nextCursor while more remain. */
const honest = <T>(items: T[], per: number) => (c: number): Page<T> => {
  const next = c + per;
  return next < items.length ? { items: items.slice(c, next), nextCursor: next } : { items: items.slice(c) };
};

t.test('collectPages: a well-behaved server, page by page, in order', async (t) => {
  const items = Array.from({ length: 10 }, (_, i) => i);
  const s = pages(honest(items, 3));
  t.same(await collectPages(s.fetch, { maxPages: 100 }), { items, pages: 4, complete: true });
  t.same(s.asked, [undefined, 3, 6, 9], 'the first page without a cursor, then each nextCursor');
  const one = pages(honest(items, 64));
  t.same(await collectPages(one.fetch, { maxPages: 1 }), { items, pages: 1, complete: true }, 'one page: no limit reached');
});

t.test('collectPages: an empty page with a next cursor stops the listing', async (t) => {
  const s = pages((c) => (c === 0 ? { items: ['a', 'b'], nextCursor: 2 } : { items: [], nextCursor: c + 1 }));
  t.same(await collectPages(s.fetch, { maxPages: 1000 }), { items: ['a', 'b'], pages: 2, complete: false });
  t.same(s.asked, [undefined, 2], 'asked once more, not again');
  const first = pages<string>(() => ({ items: [], nextCursor: 5 }));
  t.same(await collectPages(first.fetch, { maxPages: 1000 }), { items: [], pages: 1, complete: false }, 'also as the first page');
});

t.test('collectPages: a cursor that does not advance stops the listing', async (t) => {
  const same = pages((c) => ({ items: [c], nextCursor: c === 0 ? 4 : 4 }));
  t.same(await collectPages(same.fetch, { maxPages: 1000 }), { items: [0, 4], pages: 2, complete: false });
  t.same(same.asked, [undefined, 4], 'the same cursor again: stop');
  const back = pages((c) => ({ items: [c], nextCursor: c === 0 ? 5 : 2 }));
  t.same((await collectPages(back.fetch, { maxPages: 1000 })).pages, 2, 'a cursor going back: stop');
  const zero = pages((c) => ({ items: [c], nextCursor: 0 }));
  t.same(await collectPages(zero.fetch, { maxPages: 1000 }), { items: [0], pages: 1, complete: false }, 'nextCursor 0 on the first page: stop');
});

t.test('collectPages: the page limit and the end of the IDs bound the requests', async (t) => {
  const endless = pages((c) => ({ items: [c], nextCursor: c + 1 }));
  const r = await collectPages(endless.fetch, { maxPages: 7 });
  t.same(r, { items: [0, 1, 2, 3, 4, 5, 6], pages: 7, complete: false });
  t.equal(endless.asked.length, 7, 'exactly maxPages requests');
  const beyond = pages((c) => ({ items: [c], nextCursor: c + 1 }));
  t.same(await collectPages(beyond.fetch, { maxPages: 100, end: 3 }), { items: [0, 1, 2], pages: 3, complete: false }, 'a cursor at the end of the IDs: stop');
});

// ---------------------------------------------------------------------------------------------
// The queries through a fake host: `call` answers like a locatord with `per` entries a page.

interface Fake {
  host: QueryHost;
  requests: { name: string; body: Record<string, unknown> }[];
  lost: boolean[];
}

function fakeHost(answer: (name: string, body: Record<string, unknown>, n: number) => unknown): Fake {
  const requests: Fake['requests'] = [];
  const lost: boolean[] = [];
  const session = {} as ClientSession;
  const host: QueryHost = {
    ready: async () => session,
    call: (async (_s: ClientSession, name: string, body: Record<string, unknown>) => {
      requests.push({ name, body });
      return { name, body: answer(name, body, requests.length) };
    }) as unknown as QueryHost['call'],
    sessionLost: (needTicket) => lost.push(needTicket),
  };
  return { host, requests, lost };
}

const ids = (n: number): Buffer[] => Array.from({ length: n }, () => randomBytes(16));

t.test('lookup and online: pages of one batch, in request order; an unanswered ID is offline', async (t) => {
  const peers = ids(5);
  const f = fakeHost((name, body) => {
    const asked = body['ids'] as Uint8Array[];
    const c = (body['cursor'] as number | undefined) ?? 0;
    const next = Math.min(c + 2, asked.length);
    const more = next < asked.length ? { nextCursor: next } : {};
    if (name === 'QUERY_ADDR') {
      return { entries: asked.slice(c, next).map((id) => ({ id, online: true, addr: { ip: '192.0.2.1', port: 7 }, netMode: 1 })), ...more };
    }
    return { online: asked.slice(c, next).map((_, i) => (c + i) % 2 === 0), ...more };
  });
  const q = new LocatorQueries(f.host, undefined);
  const found = await q.lookup(peers);
  t.same(found.map((e) => e.id), peers.map(formatId), 'in request order');
  t.ok(found.every((e) => e.online && e.addr === '192.0.2.1:7'));
  t.same(f.requests.map((r) => r.body['cursor']), [undefined, 2, 4], 'three pages');
  f.requests.length = 0;
  t.same((await q.online(peers)).map((e) => e.online), [true, false, true, false, true]);
  t.same(f.requests.map((r) => r.body['cursor']), [undefined, 2, 4]);

  // A server stuck on one cursor: asked twice, the rest reported offline.
  const stuck = fakeHost(() => ({ online: [true], nextCursor: 1 }));
  const r = await new LocatorQueries(stuck.host, undefined).online(peers);
  t.same(r.map((e) => e.online), [true, true, false, false, false]);
  t.equal(stuck.requests.length, 2, 'bounded: the cursor did not advance');
});

t.test('groupMembers: every page, and a server that misbehaves cannot keep the agent asking', async (t) => {
  const members = ids(150).map((id, i) => ({ id, online: i % 3 === 0 }));
  const honestGroup = fakeHost((_n, body) => {
    const page = honest(members, 64)((body['cursor'] as number | undefined) ?? 0);
    return { members: page.items, total: members.length, name: 'g', ...(page.nextCursor !== undefined ? { nextCursor: page.nextCursor } : {}) };
  });
  const q = new LocatorQueries(honestGroup.host, undefined);
  const g = await q.groupMembers(randomBytes(16));
  t.equal(g.members.length, 150);
  t.equal(g.total, 150);
  t.equal(g.name, 'g');
  t.same(g.members.map((m) => m.id), members.map((m) => formatId(m.id)), 'in order');
  t.equal(honestGroup.requests.length, 3);

  const empty = fakeHost((_n, body) => ({ members: (body['cursor'] ?? 0) === 0 ? members.slice(0, 2) : [], total: 150, nextCursor: 64 }));
  t.equal((await new LocatorQueries(empty.host, undefined).groupMembers(randomBytes(16))).members.length, 2);
  t.equal(empty.requests.length, 2, 'an empty page with a next cursor: stop');

  const endless = fakeHost((_n, body) => {
    const c = (body['cursor'] as number | undefined) ?? 0;
    return { members: [members[0]!], total: 1, nextCursor: c + 1 };
  });
  await new LocatorQueries(endless.host, undefined).groupMembers(randomBytes(16));
  t.equal(endless.requests.length, MAX_MEMBER_PAGES, 'an endless listing stops at the page limit');
});

t.test('a lost session: re-register once and retry; a second loss is an error', async (t) => {
  let n = 0;
  const f = fakeHost(() => {
    n++;
    if (n === 1) throw new ServerError('GROUP_LEAVE', ErrorCode.NO_SESSION, undefined, undefined, undefined);
    return {};
  });
  const q = new LocatorQueries(f.host, undefined);
  const group = randomBytes(16);
  t.same(await q.groupLeave(group), { groupId: formatId(group) });
  t.same(f.lost, [false], 'NO_SESSION: register again with the same ticket');
  t.equal(f.requests.length, 2, 'asked again after the loss');
  const bad = fakeHost(() => {
    throw new ServerError('GROUP_LEAVE', ErrorCode.TICKET_EXPIRED, 'old', undefined, undefined);
  });
  await t.rejects(new LocatorQueries(bad.host, undefined).groupLeave(randomBytes(16)), { name: 'AgentError', code: 'TICKET_EXPIRED' });
  t.same(bad.lost, [true], 'a ticket problem: a new ticket, once');
  t.equal(bad.requests.length, 2);
});
