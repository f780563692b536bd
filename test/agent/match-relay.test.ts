// The agent's side of relay-aware matching (issue 17 item 5), without daemons: the relay
// capability a submit declares from the grant's relays, and how a result's paths are shown by
// `devloc match` (the human form; --json prints the MatchResult as is).
import t from 'tap';
import type { MatchResult } from '../../src/agent/match.js';
import { relayVia } from '../../src/agent/match.js';
import { formatMatch } from '../../src/cli/commands/match.js';
import type { RelayGrant } from '../../src/wire/catalog.js';
import { RelayVia } from '../../src/wire/connectivity.js';

const NOW = 1_800_000_000_000;
const grant = (over: Partial<RelayGrant>): RelayGrant => ({ name: 'r', username: 'u', password: 'p', exp: NOW / 1000 + 600, ...over });
const addr = { ip: '192.0.2.1', port: 3478 };

t.test('relayVia: transports of the unexpired relays of the grant', async (t) => {
  t.equal(relayVia([], NOW), 0, 'no relays: nothing declared');
  t.equal(relayVia([grant({ udp: addr })], NOW), RelayVia.UDP);
  t.equal(relayVia([grant({ udp: addr, tcp: addr }), grant({ tls: { ip: '192.0.2.2', port: 5349 } })], NOW), RelayVia.UDP | RelayVia.TCP | RelayVia.TLS, 'union over relays');
  t.equal(relayVia([grant({ tcp: addr, exp: NOW / 1000 })], NOW), 0, 'expired credentials do not count');
});

t.test('devloc match: a PATH column and our path to the host; noPath explained', async (t) => {
  const base = { mediaId: 'chess', minParty: 2, maxParty: 2, submittedAt: '2027-01-15T08:00:00.000Z', deadline: '2027-01-15T08:01:00.000Z', matchd: '127.0.0.1:7000', matchId: '00112233445566ff' };
  const m = (id: string, host: boolean, self: boolean, path?: 'lan' | 'direct' | 'relay' | 'host') => ({
    id, netMode: 'symmetric', addr: '192.0.2.9:4000', names: [], self, host, ...(path ? { path } : {}),
  });
  const matched: MatchResult = {
    ...base, state: 'matched', host: 0, hostId: 'a'.repeat(32), youHost: false, path: 'relay',
    members: [m('a'.repeat(32), true, false, 'host'), m('b'.repeat(32), false, true, 'relay')],
  };
  const text = formatMatch(matched);
  t.match(text, /you reach it through a relay/);
  t.match(text, /PATH/);
  t.match(text, /relay\s+you/);
  const old: MatchResult = { ...matched, members: [m('a'.repeat(32), true, false), m('b'.repeat(32), false, true)] };
  delete old.path;
  t.notMatch(formatMatch(old), /PATH|reach it/, 'an older matchd says no path: no column');
  const none: MatchResult = { ...base, state: 'no-match', noPath: true };
  t.match(formatMatch(none), /no path to it: not direct, and no relay either of you could use/);
  t.notMatch(formatMatch({ ...base, state: 'no-match' }), /no path/);
});
