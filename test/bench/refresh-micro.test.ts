// bench/refresh-micro.ts, small: it runs, every REFRESH reaches the handler from a validated
// address (it throws otherwise), and it reports one figure per round. No timing asserted.
import t from 'tap';
import { runRefreshMicro } from '../../bench/refresh-micro.js';

t.test('runRefreshMicro: REFRESH through receive(), the address check alone, its normalise and pack', async (t) => {
  const r = await runRefreshMicro(300, 3, 20, 10_000);
  t.equal(r.refreshes, 300);
  t.equal(r.rounds.length, 3, 'one figure per round');
  t.ok(r.rounds.every((x) => x.length === 3 && x.every(Number.isFinite)), 'finite figures');
  t.ok(r.rounds.some((x) => x[0] === r.usPerRefresh), 'the median round is one of them');
  t.equal(r.normalisePackShare, Math.round((r.nsPerNormalisePack / (r.usPerRefresh * 1000)) * 10_000) / 10_000);
});
