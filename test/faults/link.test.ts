// Faults on a real link: devloc-agent processes reach devloc-authd, -locatord and -matchd only
// through tools/impair.ts proxies that duplicate 30%, hold back 30% (reordering), delay every
// copy by 5-40 ms and lose 5% of datagrams, both ways. (Random loss in the kernel, with nftables
// in a network namespace, is test/agent/nat.test.ts.) Authentication, registration, queries of
// other agents' addresses, a group and a match all complete, and nothing is executed twice:
//
//   - for every message type, the number of distinct datagrams the proxy delivered to a daemon
//     equals the number of requests the daemon executed (requests_total{type}, counted once per
//     handler run); every other copy (our duplicates and the agents' retransmissions) is
//     accounted for as answered from the reply cache, dropped while in flight or, for an
//     acknowledgement (never cached), dropped as a response's copy, and none was refused as a replay;
//   - authd granted one authentication per agent; the group exists once (on disk too) with each
//     member once; matchd formed each party once, no player is in two parties, each agent got
//     exactly one result.
import t from 'tap';
import type { GroupMembers, LookupEntry } from '../../src/agent/agent.js';
import type { AgentStatus } from '../../src/agent/agent.js';
import type { MatchResult } from '../../src/agent/match.js';
import { eventually } from '../agent/stack.js';
import type { DaemonName, FaultAgent } from './world.js';
import { DAEMONS, settled, world } from './world.js';

// Decisions are per flow (one per agent and proxy) in arrival order, so the first decision of
// each of authd's four flows — the one applied to each agent's AUTH_REQUEST, and on the way back
// to its grant — is fixed by the seed: with this one, one AUTH_REQUEST is duplicated, one held
// back and one lost, and grants are duplicated and held back too (see tools/impair.ts).
const SEED = 20261129;

t.test('duplication, reordering, delay and loss between agents and daemons', async (t) => {
  const w = await world(t, { seed: SEED, dup: 0.3, reorder: 0.3, delayMs: [5, 40], loss: 0.05 });
  const names = ['ann', 'bob', 'cat', 'dan'];
  const agents = await Promise.all(names.map((n) => w.agent(n)));
  const [ann, bob, cat, dan] = agents as [FaultAgent, FaultAgent, FaultAgent, FaultAgent];
  const statuses = await Promise.all(agents.map((a) => eventually(async () => {
    const s = await a.status();
    return settled(s) ? s : null;
  }, 40_000, `${a.name} registered and classified`)));
  const idOf = new Map(agents.map((a, i) => [a.name, statuses[i]!.locatorId!]));
  for (const [i, s] of statuses.entries()) {
    t.match(s.locatorId, /^[0-9a-f]{32}$/, `${names[i]}: authenticated (locator ID)`);
    t.match(s.observed, /^127\.0\.0\.1:\d+$/, `${names[i]}: registered (as seen through the proxy)`);
  }

  // Groups: each agent creates one, joins the other three, then leaves one and joins it again.
  const groupIds = await Promise.all(agents.map(async (a) => (await a.control<{ groupId: string }>('group.create', { name: `g-${a.name}` })).groupId));
  const ownerOf = new Map(groupIds.map((g, i) => [g, agents[i]!.name]));
  await Promise.all(agents.map((a, i) => Promise.all(groupIds.filter((_, j) => j !== i).map((g) => a.control('group.join', { group: g })))));
  const next = (i: number): string => groupIds[(i + 1) % groupIds.length]!;
  await Promise.all(agents.map((a, i) => a.control('group.leave', { group: next(i) })));
  await Promise.all(agents.map((a, i) => a.control('group.join', { group: next(i) })));
  for (const [i, g] of groupIds.entries()) {
    const members = await agents[(i + 2) % agents.length]!.control<GroupMembers>('group.members', { group: g });
    t.equal(members.total, 4, `${ownerOf.get(g)}'s group: four members`);
    t.same(members.members.map((m) => m.id).sort(), [...idOf.values()].sort(), 'each agent once');
  }
  const disk = w.groupsOnDisk();
  t.equal(disk.groups.size, 4, 'four groups on disk: each GROUP_CREATE made one');
  for (const [g, owner] of ownerOf) {
    t.same(disk.groups.get(g), { owner: idOf.get(owner), name: `g-${owner}` }, `${owner}'s group, once`);
    t.same([...disk.members.get(g) ?? []].sort(), [...idOf.values()].sort(), 'four member rows');
  }

  // Queries of each other's address, a few rounds.
  for (let round = 0; round < 3; round++) {
    await Promise.all(agents.map(async (a, i) => {
      const others = agents.filter((b) => b !== a);
      const found = await a.control<LookupEntry[]>('lookup', { targets: others.map((b) => idOf.get(b.name)!) });
      for (const [j, e] of found.entries()) {
        const other = others[j]!;
        const st = statuses[agents.indexOf(other)]!;
        if (round === 0) {
          t.equal(e.online, true, `${names[i]} sees ${other.name} online`);
          t.equal(e.addr, st.observed, `${names[i]} gets ${other.name}'s registered address`);
          t.equal(e.nickname, other.name);
        } else if (!e.online || e.addr !== st.observed) t.fail(`round ${round}: ${names[i]} -> ${other.name}: ${JSON.stringify(e)}`);
      }
    }));
  }

  // Matches: four players in parties of two, then all four in one party.
  // A submit that fails says why, from both ends (CI once saw one NO_ANSWER here, under load).
  const explained = async <T>(a: (typeof agents)[number], p: Promise<T>): Promise<T> => {
    try {
      return await p;
    } catch (err) {
      try {
        const m = await w.metrics('matchd');
        const mine = (l: Record<string, unknown>): boolean => /MATCH|ADDR_|challenge|proof/i.test(JSON.stringify(l));
        t.comment(`${a.name}: ${(err as Error).message}; matchd ${JSON.stringify(m.samples.filter((x) => /dropped_total|addr_challenges_total|addr_proofs_total/.test(x.name)))}`);
        for (const l of a.lines.filter(mine).slice(-30)) t.comment(`${a.name}: ${JSON.stringify(l)}`);
        for (const l of w.procs.matchd.lines.filter((x) => x['msg'] === 'refused' || x['level'] === 'warn').slice(-30)) t.comment(`matchd: ${JSON.stringify(l)}`);
      } catch (why) {
        t.comment(`diagnostics failed: ${(why as Error).message}`);
      }
      throw err;
    }
  };
  const results = await Promise.all(agents.map((a) => explained(a, a.control<MatchResult>('match.submit', {
    mediaId: 'faults-chess', minParty: 2, maxParty: 2, maxWaitS: 40, wait: true,
  }, 60_000))));
  const partyOf = new Map<string, string[]>();
  for (const [i, r] of results.entries()) {
    t.equal(r.state, 'matched', `${names[i]}: matched`);
    t.equal(r.members?.length, 2, `${names[i]}: a party of two`);
    const self = r.members?.find((m) => m.self);
    t.equal(self?.id, idOf.get(names[i]!), `${names[i]}: itself in it`);
    partyOf.set(names[i]!, (r.members ?? []).map((m) => m.id).sort());
  }
  for (const [name, party] of partyOf) {
    const partner = [...idOf].find(([n, id]) => n !== name && party.includes(id))?.[0];
    t.ok(partner, `${name} has a partner`);
    t.same(partyOf.get(partner!), party, `${name} and ${partner} agree on the party`);
  }
  const inParties = [...partyOf.values()].flat();
  t.equal(new Set(inParties).size, 4, 'every player in a party');
  t.equal(inParties.length, 8, 'no player in two parties');
  const quad = await Promise.all(agents.map((a) => explained(a, a.control<MatchResult>('match.submit', {
    mediaId: 'faults-bridge', minParty: 4, maxParty: 4, maxWaitS: 40, wait: true,
  }, 60_000))));
  for (const [i, r] of quad.entries()) {
    t.equal(r.state, 'matched', `${names[i]}: in the party of four`);
    t.same(r.members?.map((m) => m.id).sort(), [...idOf.values()].sort(), `${names[i]}: with everyone, once each`);
  }
  t.equal(new Set(quad.map((r) => r.hostId)).size, 1, 'one host for the party');
  for (const [i, a] of agents.entries()) {
    const newest = await a.control<MatchResult>('match.status', {});
    t.equal(newest.matchId, quad[i]!.matchId, `${a.name}: its newest request is the second one`);
    t.equal(newest.previousIds, undefined, `${a.name}: never resubmitted`);
    const first = await a.control<MatchResult>('match.status', { matchId: results[i]!.matchId });
    t.same(first.members?.map((m) => m.id).sort(), partyOf.get(a.name), `${a.name}: the first result unchanged`);
  }

  // A few refreshes through the faulty link.
  const before = await Promise.all(agents.map(async (a) => (await a.status()).counters.refreshes));
  await Promise.all(agents.map((a, i) => eventually(async () => (await a.status()).counters.refreshes >= before[i]! + 2, 30_000, `${a.name} refreshes`)));
  const finalStatus: AgentStatus[] = await Promise.all(agents.map((a) => a.status()));
  for (const [i, s] of finalStatus.entries()) {
    t.equal(s.counters.authentications, 1, `${names[i]}: authenticated once`);
    t.equal(s.counters.registrations, 1, `${names[i]}: registered once (refreshes kept it)`);
    t.equal(s.locatorId, statuses[i]!.locatorId);
  }

  // Quiet: stop the agents (they unregister), let the proxies drain, then count.
  await Promise.all(agents.map((a) => a.stop('SIGTERM')));
  await eventually(async () => DAEMONS.every((d) => {
    const s = w.proxies[d].stats();
    return s.held === 0 && s.pending === 0;
  }), 10_000, 'proxies drained');
  const balanced = async (d: DaemonName): Promise<boolean> => {
    const m = await w.metrics(d);
    return Object.entries(w.requests[d].counts()).every(([type, n]) => type === 'ADDR_PROOF'
      || m.sum('requests_total', { type }) - m.sum('requests_total', { type, result: 'ADDR_CHALLENGE' }) === n);
  };
  await eventually(async () => (await Promise.all(DAEMONS.map(balanced))).every(Boolean), 10_000, 'daemons done with what was delivered').catch(() => undefined);

  for (const d of DAEMONS) {
    const m = await w.metrics(d);
    const log = w.requests[d];
    const p = w.proxies[d].stats();
    let distinct = 0;
    let copies = 0;
    // Through the proxies a daemon sees another address than authd did: each session's first
    // request is challenged (ADDR_CHALLENGE, counted as its result, the request executed when
    // sent again) and proved (ADDR_PROOF: never answered, each copy checked).
    let challenged = 0;
    for (const [type, n] of Object.entries(log.counts())) {
      if (type === 'ADDR_PROOF') {
        t.equal(m.sum('addr_proofs_total'), log.copies.get(type), `${d}: every ADDR_PROOF copy checked`);
        continue;
      }
      const c = m.sum('requests_total', { type, result: 'ADDR_CHALLENGE' });
      challenged += c;
      // Never executed twice. One may not be executed at all: challenged, and then replaced by
      // the agent's next request (a new request ID) before its proof went through (loaded CI).
      const executed = m.sum('requests_total', { type }) - c;
      t.ok(executed <= n && executed >= n - c, `${d}: ${type}: ${n} distinct requests delivered, ${executed} executed (${log.copies.get(type)} copies, ${c} challenged)`);
      distinct += n;
      copies += log.copies.get(type)!;
    }
    t.ok(p.duplicated.up > 0 && p.reordered.up > 0 && p.delayed.up > 0 && copies > distinct, `${d}: the proxy duplicated (${p.duplicated.up}), held back (${p.reordered.up}) and delayed requests`);
    t.ok(p.duplicated.down > 0 && p.reordered.down > 0, `${d}: and answers (${p.duplicated.down} duplicated, ${p.reordered.down} held back)`);
    const fromCache = m.sum('retransmissions_answered_total');
    const inFlight = m.sum('dropped_total', { reason: 'in-flight' });
    // Copies of acknowledgements (responses: never cached) are stopped by the replay window.
    const responseCopies = m.sum('dropped_total', { reason: 'response-copy' });
    t.ok(fromCache > 0, `${d}: ${fromCache} copies answered from the reply cache`);
    t.equal(m.sum('refused_total', { code: 'REPLAY' }), 0, `${d}: no copy refused as a replay`);
    // Every extra copy is answered from the cache, dropped in flight or challenged. Not exactly
    // equal: a challenge does not spend the request, so under duplication and reordering a
    // challenged first copy and a duplicate of it may both end in the counts of one delivery
    // (seen: 35 counted for 34 extra copies). Executions are exact (per type, above).
    const accounted = fromCache + inFlight + responseCopies + challenged;
    t.ok(copies - distinct >= fromCache + inFlight + responseCopies && copies - distinct <= accounted,
      `${d}: every extra copy (${copies - distinct}) answered from the cache (${fromCache}), dropped in flight (${inFlight}) or as a response's copy (${responseCopies}), or challenged (${challenged})`);
  }
  const extra = (d: DaemonName, types: string[]): number =>
    types.reduce((n, type) => n + (w.requests[d].copies.get(type) ?? 0) - (w.requests[d].distinct.get(type)?.size ?? 0), 0);
  t.ok(extra('authd', ['AUTH_REQUEST']) > 0, `authd got ${extra('authd', ['AUTH_REQUEST'])} extra copies of AUTH_REQUESTs`);
  const changing = ['REGISTER', 'GROUP_CREATE', 'GROUP_JOIN', 'GROUP_LEAVE'];
  t.ok(extra('locatord', changing) > 0, `locatord got ${extra('locatord', changing)} extra copies of requests that change state`);
  const authd = await w.metrics('authd');
  t.equal(authd.sum('auth_ok_total'), 4, 'authd granted one authentication per agent');
  t.equal(authd.sum('requests_total', { type: 'AUTH_REQUEST' }), 4, 'and executed four AUTH_REQUESTs');
  const locatord = await w.metrics('locatord');
  t.same([locatord.sum('group_changes_total', { op: 'create' }), locatord.sum('group_changes_total', { op: 'join' }), locatord.sum('group_changes_total', { op: 'leave' })],
    [4, 16, 4], 'locatord committed 4 creates, 16 joins and 4 leaves: one per request');
  t.equal(locatord.sum('sessions_opened_total'), 4, 'one session per agent');
  const matchd = await w.metrics('matchd');
  t.equal(matchd.sum('match_submits_total'), 8, 'matchd accepted eight submits');
  t.equal(matchd.sum('match_replaced_total'), 0, 'none replaced by a duplicate');
  t.equal(matchd.sum('match_formed_total'), 3, 'three parties formed');
  t.equal(matchd.sum('match_matched_total'), 8, 'eight requests ended matched');
  const loss = DAEMONS.reduce((n, d) => n + w.proxies[d].stats().dropped.up + w.proxies[d].stats().dropped.down, 0);
  t.ok(loss > 0, `${loss} datagrams lost on the way`);
  t.same(await w.undocumentedRefusals(), [], 'every refusal the daemons answered is one devloc-protocol(7) lists');
});
