// bench/transport.ts, short: both kinds of request are answered, not lost. The session REFRESHes
// were all lost for weeks (each answered with an ADDR_CHALLENGE the generator did not answer, the
// REFRESH_ACK being larger than the REFRESH) and the section reported 4 req/s. No timing asserted.
import t from 'tap';
import { runTransport } from '../../bench/transport.js';

t.test('runTransport: REFLECT and session REFRESH answered, none lost, no refusals', async (t) => {
  const rows = await runTransport({ seconds: 1, log: () => undefined });
  t.equal(rows.length, 2);
  for (const r of rows) {
    const extra = r.extra as { lost: number; errors: Record<string, number> };
    t.ok(r.value > 0, `${r.name}: ${r.value} req/s`);
    t.same(extra.errors, {}, `${r.name}: no refusals`);
    // Loopback with a 4 MiB receive buffer loses nothing in practice; a bound, not zero, so that
    // a machine starved for seconds does not fail it. Before the fix: 4 answered, 192 lost.
    t.ok(extra.lost < r.value / 10, `${r.name}: ${extra.lost} lost`);
  }
});
