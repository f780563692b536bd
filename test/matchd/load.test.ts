// Many terminals at once over real UDP on loopback: 200 terminals submit concurrently (real
// sockets, matchd's own tick timer); every one gets exactly one result, parties are consistent,
// nothing that could have been matched is left over, and every push is acknowledged.
import t from 'tap';
import { canConnectDirect } from '../../src/matchd/connectivity.js';
import { MatchState } from '../../src/wire/catalog.js';
import { NetMode } from '../../src/wire/constants.js';
import { fixture, hexOf, matchd, Terminal, until } from './helpers.js';

const N = 200;
const MEDIA = 4;

t.test(`${N} concurrent terminals each get exactly one result`, async (t) => {
  const fx = fixture();
  // Real time plus an offset the test moves forward to reach the deadlines at once, whatever
  // the machine's load (no timing assumptions).
  let offset = 0;
  const now = (): number => Date.now() + offset;
  const m = await matchd(fx, { tickMs: 50, now, receiveBufferBytes: 4 << 20 });
  const terminals = await Promise.all(Array.from({ length: N }, () => Terminal.open(fx, { ip: '127.0.0.1', port: m.port }, now)));
  t.teardown(async () => {
    await Promise.all(terminals.map((x) => x.close()));
    await m.stop();
  });
  // Four media IDs, parties of 2..4, a mix of network modes (no udp-blocked).
  const modes = [NetMode.OPEN, NetMode.FULL_CONE, NetMode.RESTRICTED, NetMode.PORT_RESTRICTED, NetMode.SYMMETRIC];
  const modeOf = (i: number): number => modes[i % modes.length]!;
  const acks = await Promise.all(terminals.map((x, i) => x.submitOk({
    mediaId: `game-${i % MEDIA}`, minParty: 2, maxParty: 4, netMode: modeOf(i), maxWaitS: 600, nickname: `p${i}`,
  })));
  // Everything is submitted: what could be matched is. Let the rest reach their deadline.
  await until(() => m.delivery.pendingCount === 0, 20_000, 'pushes of the matched acknowledged');
  const left = m.engine.waiting;
  offset += 601_000;
  const results = await Promise.all(terminals.map((x, i) => x.waitResult(acks[i]!.matchId, 20_000)));
  await until(() => m.delivery.pendingCount === 0, 20_000, 'all pushes acknowledged');

  const index = new Map(terminals.map((x, i) => [x.locatorHex, i]));
  let bad = 0;
  const leftover: number[][] = Array.from({ length: MEDIA }, () => []);
  for (const [i, x] of terminals.entries()) {
    const r = results[i]!;
    if (x.results.size !== 1) bad++;
    if (r.state === MatchState.NO_MATCH) {
      if (r.members !== undefined) bad++;
      leftover[i % MEDIA]!.push(i);
      continue;
    }
    if (r.state !== MatchState.MATCHED) bad++;
    const ids = r.members!.map((mm) => hexOf(mm.id));
    if (!ids.includes(x.locatorHex) || new Set(ids).size !== ids.length || ids.length > 4) bad++;
    for (const id of ids) {
      const j = index.get(id)!;
      // Every member's own result lists the same party, within one media ID.
      if (JSON.stringify(results[j]!.members) !== JSON.stringify(r.members) || j % MEDIA !== i % MEDIA) bad++;
    }
  }
  t.equal(bad, 0, 'one result each, consistent parties within one media ID');
  t.equal(leftover.flat().length, left, 'the requests still waiting got "no match"');
  // Nothing matchable was left: no two left-over terminals of a media ID reach each other.
  let matchable = 0;
  for (const group of leftover) {
    for (const a of group) for (const b of group) if (a < b && canConnectDirect(modeOf(a), modeOf(b))) matchable++;
  }
  t.equal(matchable, 0, `left over (${left}) only what no party could connect`);
  t.ok(left < N / 4, 'most terminals matched');
  t.equal(m.engine.waiting, 0);
  t.equal(m.metrics.get('match_matched_total') + m.metrics.get('match_no_match_total'), N);
  t.equal(m.metrics.total('match_push_acked_total'), N, 'every push acknowledged');
  t.equal(m.metrics.get('match_push_abandoned_total'), 0);
  t.equal(m.metrics.get('match_submits_total'), N);
});
