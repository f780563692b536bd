// `devloc bench --only search` at a small scale, so the section cannot rot: terminals registered
// with presence records through a real locatord child, then SEARCHes from two searcher processes.
// Checks what the results say, not how fast: every terminal registered, searches answered and
// measured per locatord CPU-second; and that the section is listed.
import t from 'tap';
import { SECTION_NAMES } from '../../bench/index.js';
import { benchSearch, searchRows } from '../../bench/search.js';

t.test('the search section is listed', async (t) => {
  t.ok(SECTION_NAMES.includes('search'));
});

t.test('benchSearch, small: registrations, searches per second and per CPU-second', async (t) => {
  const r = await benchSearch({ terminals: 2000, lookingEvery: 10, seconds: 1, searchers: 4, loaders: 2 });
  // A REGISTER unanswered for a second is not retried (the bench's load generator): on a loaded
  // machine some are lost, and the figures say how many were online.
  t.ok(r.registered > 0 && r.registered <= 2000, `terminals registered (${r.registered})`);
  t.equal(r.looking, 200);
  t.ok(r.searches > 0 && r.searchesPerS > 0 && r.searchesPerCpuS > 0, `searches answered (${r.searches})`);
  const rows = await searchRows({ terminals: 300, seconds: 1, searchers: 2, loaders: 1 });
  t.same(rows.map((x) => x.unit), ['req/s', 'req/CPU-s']);
  t.ok(rows.every((x) => x.section === 'search' && Number.isFinite(x.value) && x.value > 0));
});
