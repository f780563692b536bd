// Matching through the agent (src/agent/match.ts) against real devloc-authd, devloc-locatord and
// devloc-matchd processes on loopback, with in-process Agent instances: two terminals with the
// same media ID learn each other (locator ID, nickname, network mode, address) and the host;
// cancel; no match at the deadline; matchd killed while a request waits; many agents at once,
// each with exactly one result.
import t from 'tap';
import type { Test } from 'tap';
import path from 'node:path';
import type { AgentOptions } from '../../src/agent/agent.js';
import { Agent } from '../../src/agent/agent.js';
import { loadAuthdKey, loadDeviceIdentity } from '../../src/agent/identity.js';
import type { MatchResult } from '../../src/agent/match.js';
import { Logger } from '../../src/common/log.js';
import { readServiceKey, readTrust } from '../../src/matchd/main.js';
import { startMatchd } from '../../src/matchd/server.js';
import { parseAddress } from '../../src/wire/addr.js';
import type { Stack } from './stack.js';
import { eventually, stack } from './stack.js';
import { trackUdpSockets } from '../helpers/sockets.js';

interface TestAgent {
  agent: Agent;
  name: string;
  results: MatchResult[];
}

async function startAgent(t: Test, s: Stack, name: string, o: Partial<AgentOptions> = {}): Promise<TestAgent> {
  const d = s.device(name);
  const identity = loadDeviceIdentity(d.identityPath);
  const key = loadAuthdKey(s.authdPubFile);
  if (!identity.ok || !key.ok) throw new Error('fixture');
  const agent = new Agent({
    identity: identity.value, authd: parseAddress(s.authdAddr)!, authdKey: key.value,
    reflector: { ip: '127.0.0.1', port: s.ports.reflector }, bind: { host: '127.0.0.1', port: 0 },
    retransmitMs: 200, backoffMinMs: 100, backoffMaxMs: 1000, interfacePollMs: 1000, nickname: name, ...o,
  });
  const results: MatchResult[] = [];
  agent.on('match', (r) => results.push(r));
  await agent.start();
  t.teardown(() => agent.stop());
  return { agent, name, results };
}

/** Registered and classified (a terminal of unknown mode counts as symmetric at matchd). */
async function settled(a: TestAgent): Promise<void> {
  await eventually(async () => a.agent.isRegistered && a.agent.status().netMode === 'open', 20_000, `${a.name} registered and classified`);
}

t.test('two agents with the same media ID are matched and learn each other', async (t) => {
  const s = await stack(t, { matchd: true });
  const [alice, bob] = await Promise.all([startAgent(t, s, 'alice'), startAgent(t, s, 'bob')]);
  await Promise.all([settled(alice), settled(bob)]);
  const sa = alice.agent.status();
  const sb = bob.agent.status();

  const first = await alice.agent.match.submit({ mediaId: 'chess', maxWaitS: 30 });
  t.equal(first.state, 'waiting', 'submitted, waiting');
  t.match(first.matchId, /^[0-9a-f]{16}$/);
  t.equal(first.matchd, s.matchdAddr, "matchd's address from the grant");
  const [ra, rb] = await Promise.all([
    alice.agent.match.wait(first.matchId, 20_000),
    bob.agent.match.submit({ mediaId: 'chess', maxWaitS: 30 }, { wait: true }),
  ]);
  for (const [who, r, me, other] of [['alice', ra, sa, sb], ['bob', rb, sb, sa]] as const) {
    t.equal(r.state, 'matched', `${who}: matched`);
    t.equal(r.members?.length, 2, `${who}: a party of two`);
    const mine = r.members!.find((m) => m.self)!;
    const theirs = r.members!.find((m) => !m.self)!;
    t.equal(mine.id, me.locatorId, `${who}: itself in the party`);
    t.equal(theirs.id, other.locatorId, `${who}: learns the other's locator ID`);
    t.equal(theirs.nickname, who === 'alice' ? 'bob' : 'alice', `${who}: and nickname`);
    t.equal(theirs.netMode, 'open', `${who}: and network mode`);
    t.equal(theirs.addr, other.observed, `${who}: and address: the one locatord sees (same socket)`);
    t.ok(r.host === 0 || r.host === 1, `${who}: a host index`);
    t.equal(r.hostId, r.members![r.host!]!.id, `${who}: hostId is members[host]`);
    t.equal(r.members!.filter((m) => m.host).length, 1, `${who}: one member marked host`);
  }
  t.equal(ra.hostId, rb.hostId, 'both agree on the host');
  t.not(ra.youHost, rb.youHost, 'exactly one of them hosts');
  t.equal(alice.results.length, 1, "alice: one 'match' event");
  t.equal(bob.results.length, 1, "bob: one 'match' event");
  // Status of an ended request: the result, from the agent's memory.
  const st = await alice.agent.match.status();
  t.equal(st.state, 'matched');
  t.equal(st.matchId, ra.matchId);
  await t.rejects(alice.agent.match.status('0000000000000000'), { code: 'NOT_FOUND' });
});

t.test('cancel, and no match at the deadline', async (t) => {
  const s = await stack(t, { matchd: true });
  const [carol, dave] = await Promise.all([startAgent(t, s, 'carol'), startAgent(t, s, 'dave')]);
  await Promise.all([settled(carol), settled(dave)]);

  const w = await carol.agent.match.submit({ mediaId: 'go', maxWaitS: 60 });
  const polled = await carol.agent.match.status(w.matchId);
  t.equal(polled.state, 'waiting', 'matchd says: waiting');
  const c = await carol.agent.match.cancel();
  t.equal(c.state, 'cancelled', 'cancelled');
  t.equal(c.matchId, w.matchId);
  t.equal((await carol.agent.match.cancel()).state, 'cancelled', 'cancelling again changes nothing');
  t.equal(carol.agent.match.waiting, 0);

  // dave waits alone: carol's withdrawn request is never matched; no match at the deadline.
  const r = await dave.agent.match.submit({ mediaId: 'go', maxWaitS: 2 }, { wait: true });
  t.equal(r.state, 'no-match', 'no match after 2 s');
  t.equal(r.members, undefined, 'no party');
  t.equal(dave.results.length, 1, 'one result');
  t.equal(carol.results.length, 1, 'carol: the cancel was her one result');

  // Requirements: mandatory ones that do not hold never match.
  const [e1, e2] = await Promise.all([
    carol.agent.match.submit({ mediaId: 'go', maxWaitS: 2, attrs: { level: 3 }, requirements: [{ attr: 'level', op: 1, min: 10, mandatory: true }] }, { wait: true }),
    dave.agent.match.submit({ mediaId: 'go', maxWaitS: 2, attrs: { level: 5 } }, { wait: true }),
  ]);
  t.equal(e1.state, 'no-match', 'mandatory requirement not met: no match');
  t.equal(e2.state, 'no-match');
  await t.rejects(carol.agent.match.submit({ mediaId: '', maxWaitS: 2 }), { code: 'BAD_REQUEST' }, 'empty media ID refused locally');
  await t.rejects(carol.agent.match.submit({ mediaId: 'go', minParty: 3, maxParty: 2 }), { code: 'BAD_REQUEST' });

  // Stopped while a request waits: it is withdrawn, and nothing of the agent stays open.
  const sockets = trackUdpSockets(t);
  const ending = await startAgent(t, s, 'eve');
  await settled(ending);
  const waiting = ending.agent.match.submit({ mediaId: 'go', maxWaitS: 60 }, { wait: true });
  await eventually(async () => ending.agent.match.waiting === 1, 10_000, 'eve waiting');
  await ending.agent.stop();
  t.equal((await waiting).state, 'cancelled', 'the waiting request ends when its agent stops');
  t.same(sockets.open(), [], `the ${sockets.opened} sockets eve's agent opened are closed when stop() resolves`);
});

t.test('no match ticket without a match service: a clear error', async (t) => {
  const s = await stack(t);
  const a = await startAgent(t, s, 'erin');
  await settled(a);
  await t.rejects(a.agent.match.submit({ mediaId: 'chess' }), { code: 'NO_MATCH_TICKET' });
});

t.test('matchd killed while a request waits: the agent submits again and is matched', async (t) => {
  const s = await stack(t, { matchd: true });
  const fast = { match: { pollMs: 300, graceMs: 200 } };
  const [f, g] = await Promise.all([startAgent(t, s, 'fay', fast), startAgent(t, s, 'gus', fast)]);
  await Promise.all([settled(f), settled(g)]);
  const first = await f.agent.match.submit({ mediaId: 'tetris', maxWaitS: 60 });
  await s.matchd!.stop('SIGKILL');
  // A new matchd on the same port, with the same key: it knows nothing of fay's session.
  const m = await startMatchd({
    host: '127.0.0.1', port: s.ports.matchd!, ...(() => {
      const k = readServiceKey(path.join(s.dir, 'match.key'));
      return { service: k.service, serviceSecret: k.secret };
    })(),
    trustedKeys: readTrust([s.authdPubFile]), tickMs: 50, rate: { ratePerS: 0, burst: 1 },
    logger: new Logger({ service: 'matchd', write: () => undefined }),
  });
  t.teardown(() => m.stop());
  await eventually(async () => (await f.agent.match.status()).previousIds?.includes(first.matchId) ?? false, 15_000, 'resubmitted under a new matchId');
  t.equal(m.engine.waiting, 1, 'the new matchd has the request');
  const r = await g.agent.match.submit({ mediaId: 'tetris', maxWaitS: 20 }, { wait: true });
  t.equal(r.state, 'matched', 'gus matched');
  const rf = await f.agent.match.wait(undefined, 10_000);
  t.equal(rf.state, 'matched', 'fay matched after the restart');
  t.same(rf.previousIds, [first.matchId], 'the old matchId is remembered');
  t.equal(rf.members?.find((x) => !x.self)?.nickname, 'gus');
});

t.test('many concurrent requests end to end: every agent gets exactly one result', async (t) => {
  const s = await stack(t, { matchd: true });
  const pairs = 12;
  const trios = 2;
  const agents = await Promise.all(Array.from({ length: pairs * 2 + trios * 3 }, (_, i) => startAgent(t, s, `t${i}`)));
  await Promise.all(agents.map(settled));
  const results = await Promise.all(agents.map((a, i) => a.agent.match.submit(
    i < pairs * 2 ? { mediaId: 'duel', maxWaitS: 30 } : { mediaId: 'trio', minParty: 3, maxParty: 3, maxWaitS: 30 },
    { wait: true },
  )));
  t.equal(results.filter((r) => r.state === 'matched').length, agents.length, 'everyone matched');
  t.same(agents.map((a) => a.results.length), agents.map(() => 1), "exactly one 'match' event each");
  // Parties are consistent: everyone in a party got the same party.
  const byId = new Map(agents.map((a, i) => [a.agent.locatorIdHex!, results[i]!]));
  const problems: string[] = [];
  let parties = 0;
  for (const [id, r] of byId) {
    const ids = r.members!.map((m) => m.id);
    if (!ids.includes(id)) problems.push(`${id} not in its own party`);
    if (ids[0] === id) parties++;
    for (const other of ids) {
      const o = byId.get(other);
      if (!o || o.members!.map((m) => m.id).join() !== ids.join() || o.hostId !== r.hostId) problems.push(`${other} disagrees with ${id}`);
    }
  }
  t.same(problems, [], 'every member of a party got the same party (members, order, host)');
  t.equal(parties, pairs + trios, `${pairs} pairs and ${trios} trios`);
  t.equal(results.slice(0, pairs * 2).every((r) => r.members!.length === 2 && r.mediaId === 'duel'), true, 'duels are pairs');
  t.equal(results.slice(pairs * 2).every((r) => r.members!.length === 3 && r.mediaId === 'trio'), true, 'trios are trios');
});
