// Partner search across instances (issue 18 item 3, leftover): two devloc-locatord processes
// sharing one real redis-server. A terminal registered through A is found by a searcher at B,
// under the same visibility rules as on one instance (public; hidden but on the allow list;
// hidden but in a shared group; hidden from everyone else), and leaves the results, seen from B,
// once it unregisters through A or changes its presence through A.
import t from 'tap';
import type { Test } from 'tap';
import type { PresenceRecord } from '../../src/wire/catalog.js';
import type { TestKeys } from '../locatord/fixtures/helpers.js';
import { makeKeys, Terminal } from '../locatord/fixtures/helpers.js';
import type { Address } from '../../src/wire/addr.js';
import { needs } from '../ops/tools.js';
import { daemonAddress, redisLocatord } from './fixtures/locatord.js';
import { hasRedis, startRedis } from './fixtures/redis-server.js';

const noRedis = needs('redis-server and redis-cli', hasRedis()).skip; // required in CI

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const looking = (level: number): PresenceRecord => ({ mediaId: 'chess', lookingForPartner: true, wants: { level } });

async function registered(t: Test, keys: TestKeys, dest: Address, body: { visibility?: number; allow?: Buffer[]; presence?: PresenceRecord; nickname?: string }): Promise<Terminal> {
  const x = await Terminal.open(t, keys, dest);
  await x.expect(t, 'REGISTER_ACK', x.register(body));
  return x;
}

/** The IDs a SEARCH for chess answers `who` (every page), sorted. */
async function found(t: Test, who: Terminal): Promise<string[]> {
  const ids: string[] = [];
  let after: Uint8Array | undefined;
  for (let pages = 0; pages < 20; pages++) {
    const r = await who.expect(t, 'SEARCH_RESULT', who.request('SEARCH', after ? { mediaId: 'chess', after } : { mediaId: 'chess' }));
    ids.push(...r.body.entries.map((e) => hex(e.id)));
    if (!r.body.next) break;
    after = r.body.next;
  }
  return ids.sort();
}

t.test('SEARCH at B finds terminals registered at A, as visibility allows', { skip: noRedis }, async (t) => {
  const redis = await startRedis(t);
  const keys = makeKeys();
  const [a, b] = await Promise.all([0, 1].map(() => redisLocatord(t, keys, redis.url, { redisTimeoutMs: 2000 })));
  const atA = daemonAddress(a!);
  const atB = daemonAddress(b!);

  // Searchers at B: `me` (allowed by one, in a group with another), `stranger` (nothing).
  const me = await registered(t, keys, atB, {});
  const stranger = await registered(t, keys, atB, {});
  // At A: public, hidden with me on its allow list, hidden in a group I join (through B), hidden.
  const ann = await registered(t, keys, atA, { nickname: 'ann', presence: { ...looking(3), status: 'up for a game' } });
  const fay = await registered(t, keys, atA, { visibility: 1, allow: [me.locatorId], presence: looking(4) });
  const gus = await registered(t, keys, atA, { visibility: 1, presence: looking(5) });
  const groupId = (await gus.expect(t, 'GROUP_CREATE_ACK', gus.request('GROUP_CREATE', { name: 'club' }))).body.groupId;
  await me.expect(t, 'GROUP_JOIN_ACK', me.request('GROUP_JOIN', { groupId }));
  await registered(t, keys, atA, { visibility: 1, presence: looking(6) }); // hidden from both
  await registered(t, keys, atA, { presence: { mediaId: 'chess', wants: { level: 3 } } }); // not looking

  t.same(await found(t, me), [ann, fay, gus].map((x) => hex(x.locatorId)).sort(), 'me at B: the public one, the one allowing me, my group-mate');
  t.same(await found(t, stranger), [hex(ann.locatorId)], 'a stranger at B: the public one only');
  const r = await me.expect(t, 'SEARCH_RESULT', me.request('SEARCH', { mediaId: 'chess', requirements: [{ attr: 'level', op: 1, min: 3, max: 3 }] }));
  t.same(r.body.entries, [{ id: ann.locatorId, online: true, nickname: 'ann', presence: { ...looking(3), status: 'up for a game' } }], 'answered with what QUERY_STATUS tells');

  // Changes through A are seen at B at once: not looking any more, unregistered.
  await ann.expect(t, 'PRESENCE_SET_ACK', ann.request('PRESENCE_SET', { presence: { mediaId: 'chess', status: 'busy' } }));
  await fay.expect(t, 'UNREGISTER_ACK', fay.request('UNREGISTER', {}));
  t.same(await found(t, me), [hex(gus.locatorId)], 'only the group-mate is left');
  t.same(await found(t, stranger), [], 'and the stranger finds nobody');
  // A searcher at A sees the same (one index in Redis).
  me.dest = atA;
  t.same(await found(t, me), [hex(gus.locatorId)], 'the same through A');
});
