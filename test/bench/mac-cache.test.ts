// bench/mac-cache.ts, small: a set of keys that fits the pad cache finds its pads, one ten times
// its size does not, and one miss is priced from the two. No timing asserted.
import t from 'tap';
import { runMacCache } from '../../bench/mac-cache.js';
import { SESSION_MAC_CACHE_KEYS } from '../../src/net/sessions.js';

t.test('runMacCache: misses counted per set of keys, the cost of one derived', async (t) => {
  const r = runMacCache({ entries: 1024, keySets: [64, 10_240], checksPerRound: 20_480, rounds: 3 });
  t.equal(r.entries, 1024);
  t.same(r.sets.map((s) => s.keys), [64, 10_240]);
  const [fits, over] = r.sets;
  // 64 keys in 1,024 direct-mapped slots: a few share a slot (each evicts the other, every time).
  t.ok(fits!.missShare < 0.2, `the small set mostly finds its pads (${fits!.missShare} missed)`);
  // Ten times the slots, visited in turn: a key's pads are evicted before it comes round again.
  t.ok(over!.missShare > 0.95, `the large set misses (${over!.missShare})`);
  t.ok(r.sets.every((s) => s.rounds.length === 3 && s.nsPerCheck > 0), 'a figure per round, per set');
  t.equal(r.nsPerMiss, over!.missShare > fits!.missShare ? Math.round((over!.nsPerCheck - fits!.nsPerCheck) / (over!.missShare - fits!.missShare)) : 0);
  t.equal(runMacCache({ keySets: [8], checksPerRound: 8, rounds: 1 }).entries, SESSION_MAC_CACHE_KEYS, 'locatord\'s size by default');
});
