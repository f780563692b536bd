// The embedded partner-search index: a restore's bulk `load` (append, sort once) gives the same
// index as one `set` per record, and `set` keeps working on it afterwards.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { MemorySearchIndex } from '../../src/locatord/search-index.js';

const looking = (mediaId: string) => ({ extra: { mediaId, presence: { lookingForPartner: true } } });

t.test('load equals one set per record, in any order', async (t) => {
  const records: [string, ReturnType<typeof looking> | { extra: { mediaId: string } }][] = [];
  for (let i = 0; i < 3000; i++) {
    const id = randomBytes(16).toString('hex');
    // Three media IDs, and some records with a media ID but not looking for a partner.
    records.push([id, i % 7 === 0 ? { extra: { mediaId: 'game' } } : looking(['game', 'chess', 'go'][i % 3]!)]);
  }
  records.push(records[5]!, records[6]!);
  const one = new MemorySearchIndex();
  for (const [id, p] of records) one.set(id, p);
  const bulk = new MemorySearchIndex();
  bulk.load(records);
  t.equal(bulk.size, one.size);
  for (const media of ['game', 'chess', 'go', 'none']) {
    const all = one.page(media, '', 10_000);
    t.same(bulk.page(media, '', 10_000), all, `${media}: same IDs in the same (sorted) order`);
    t.same(all, [...all].sort(), `${media}: sorted`);
    if (all.length > 10) t.same(bulk.page(media, all[9]!, 5), all.slice(10, 15), `${media}: pages from any point`);
  }
  const [id] = bulk.page('chess', '', 1);
  bulk.set(id!, undefined);
  t.notOk(bulk.page('chess', '', 10_000).includes(id!), 'a later set still drops from a loaded list');
});
