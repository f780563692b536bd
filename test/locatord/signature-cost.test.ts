// Public-key work is per session, not per packet: 1000 terminals refreshing 10 times each cost
// at most 1000 ticket signature verifications (one per ticket), everything else is one HMAC.
import t from 'tap';
import { UdpClient } from '../../src/net/client.js';
import { forEachStore, pool, Terminal } from './fixtures/helpers.js';

const TERMINALS = 1000;
const REFRESHES = 10;

t.test(`${TERMINALS} terminals x ${REFRESHES} refreshes: at most ${TERMINALS} signature checks`, (t) => forEachStore(t, async (t, s) => {
  const { loc, dest, keys } = await s.start(t, { maxEntries: 2 * TERMINALS });
  // A few sockets shared by many terminals (a terminal is its session, not its socket).
  const clients = await Promise.all(Array.from({ length: 8 }, () => UdpClient.open({ bind: { host: '127.0.0.1', port: 0 }, policy: { initialTimeoutMs: 1000, deadlineMs: 30_000 } })));
  t.teardown(() => Promise.all(clients.map((c) => c.close())));
  const terms = await Promise.all(Array.from({ length: TERMINALS }, (_, i) => Terminal.open(t, keys, dest, { client: clients[i % clients.length]! })));
  const registered = await pool(terms, 64, (x) => x.register());
  t.equal(registered.filter((r) => r.msg.name === 'REGISTER_ACK').length, TERMINALS, 'all registered');
  for (let round = 0; round < REFRESHES; round++) {
    const refreshed = await pool(terms, 64, (x) => x.request('REFRESH', {}));
    const ok = refreshed.filter((r) => r.msg.name === 'REFRESH_ACK').length;
    if (ok !== TERMINALS) t.fail(`round ${round}: ${ok} refreshed`);
  }
  t.equal(loc.metrics.get('refreshes_total'), TERMINALS * REFRESHES);
  t.ok(loc.verifier.signatureChecks <= TERMINALS, `signature checks: ${loc.verifier.signatureChecks}`);
  const held = await loc.store.getPresences(terms.map((x) => x.locatorId.toString('hex')));
  t.equal(held.filter(Boolean).length, TERMINALS, 'all held by the store');
}));
