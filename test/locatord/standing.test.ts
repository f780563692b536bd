// The one rule of REFRESH, PRESENCE_SET, PROBE_ACK and UNREGISTER (handlers/standing.ts), on its
// own: a message may change the registration only when it is of the record's session and newer
// than what the record reflects; of a displaced session it is a conflict from a validated address
// other than the record's, stale from the record's own socket or an unvalidated address. The
// handlers' use of it runs against the real daemon in identity-conflict.test.ts.
import t from 'tap';
import { standingOf } from '../../src/locatord/handlers/standing.js';
import type { ServerSession } from '../../src/net/sessions.js';
import type { Presence } from '../../src/locatord/store/types.js';

const session = (sidHex: string): ServerSession => ({ sidHex }) as unknown as ServerSession;
const record: Presence = { addr: { ip: '198.51.100.7', port: 4000 }, netMode: 0, visibility: 0, sidHex: 'aa', seq: 5, regMs: 0, expMs: 60_000 };
const from = (ip: string, port: number, addressValidated = true) => ({ from: { ip, port }, addressValidated });

t.test('the record\'s own session: newer sequence numbers only', async (t) => {
  const ctx = { session: session('aa'), ...from('203.0.113.9', 1) };
  t.equal(standingOf(record, 6, ctx), 'current', 'a higher sequence number');
  t.equal(standingOf(record, 5, ctx), 'stale', 'the same one');
  t.equal(standingOf(record, 4, ctx), 'stale', 'a lower one (the replay window lets it through, the binding must not go back)');
});

t.test('a displaced session: conflict unless from the record\'s socket or an unvalidated address', async (t) => {
  const older = session('bb');
  t.equal(standingOf(record, 100, { session: older, ...from('203.0.113.9', 1) }), 'conflict', 'another validated address');
  t.equal(standingOf(record, 100, { session: older, ...from('198.51.100.7', 4001) }), 'conflict', 'the same IP, another port (another NAT mapping)');
  t.equal(standingOf(record, 100, { session: older, ...from('198.51.100.7', 4000) }), 'stale', 'the very socket of the newer registration');
  t.equal(standingOf(record, 100, { session: older, ...from('::ffff:198.51.100.7', 4000) }), 'stale', 'that socket written as IPv4-mapped IPv6');
  t.equal(standingOf(record, 100, { session: older, ...from('203.0.113.9', 1, false) }), 'stale', 'an address not validated for the session proves nothing');
});
