// Match harvesting against the real daemons (issue 15, item 6; docs/SECURITY.md "Match
// harvesting"): a device camping a media ID was matched with every arrival and collected their
// locator IDs, addresses and nicknames, hidden terminals included. Now:
// - a terminal hidden at locatord (visibility 1, which the agent also sends with MATCH_SUBMIT)
//   is shown to its partners under a random alias, without nickname: its locator ID stays
//   unknown to them (and QUERY_ADDR of the alias finds nothing);
// - after a match the camper may not submit again for the cool-down (RATE_LIMITED, logged);
// - MATCH_SUBMITs of one terminal are rate-limited whatever their source (RATE_LIMITED, logged).
import t from 'tap';
import { MatchState } from '../../src/wire/catalog.js';
import type { Bodies } from '../../src/wire/catalog.js';
import { ErrorCode } from '../../src/wire/errors.js';
import { adversarialStack, codeOf, expectMsg } from './fixtures/stack.js';
import type { Terminal } from './fixtures/stack.js';

// Limits far above the test's duration, so a loaded machine cannot refill a token or end a cool-down.
const s = await adversarialStack(t, { matchdArgs: ['--match-cooldown', '3600', '--submit-interval', '3600'] });
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** Poll MATCH_STATUS until the request has ended (generous: the machine may be loaded). */
async function ended(term: Terminal, matchId: Uint8Array): Promise<Bodies['MATCH_STATUS_RESULT']> {
  for (const end = Date.now() + 30_000; Date.now() < end;) {
    const r = expectMsg(await term.request('MATCH_STATUS', { matchId }), 'MATCH_STATUS_RESULT');
    if (r.state !== MatchState.WAITING) return r;
    await new Promise((res) => setTimeout(res, 50));
  }
  throw new Error('request still waiting after 30 s');
}

t.test('a camper learns no hidden partner and is held off by the cool-down', async (t) => {
  const mediaId = 'harvest';
  const camper = await s.terminal('camper');
  expectMsg(await camper.register({ nickname: 'camper' }), 'REGISTER_ACK');
  const victims = await Promise.all([0, 1, 2, 3, 4].map((i) => s.terminal(`victim-${i}`)));
  for (const [i, v] of victims.entries()) expectMsg(await v.register({ nickname: `victim-${i}`, visibility: 1 }), 'REGISTER_ACK');
  const hidden = new Set(victims.map((v) => hex(v.locatorId)));
  const learned = new Set<string>();
  const nicknames = new Set<string>();
  const cooldownsBefore = s.refusals('matchd', { event: 'submit-cooldown' }).length;
  let parties = 0;
  let refusedWhileCooling = 0;
  for (const v of victims) {
    // The camper (re)submits as soon as a victim is about to arrive.
    const sub = await camper.submit({ mediaId, minParty: 2, maxParty: 2, nickname: 'camper' });
    if (codeOf(sub) === ErrorCode.RATE_LIMITED) {
      refusedWhileCooling++;
      t.ok(sub.msg.name === 'ERROR' && (sub.msg.body.retryAfterMs ?? 0) > 0, 'RATE_LIMITED says when to retry');
      // The victim still arrives (and is matched with another victim or waits).
      expectMsg(await v.submit({ mediaId, minParty: 2, maxParty: 2, nickname: 'v', visibility: 1 }), 'MATCH_SUBMIT_ACK');
      continue;
    }
    const mine = expectMsg(sub, 'MATCH_SUBMIT_ACK');
    const theirs = expectMsg(await v.submit({ mediaId, minParty: 2, maxParty: 2, nickname: 'v', visibility: 1 }), 'MATCH_SUBMIT_ACK');
    const r = await ended(camper, mine.matchId);
    t.equal(r.state, MatchState.MATCHED, 'matched with the arrival');
    parties++;
    for (const m of r.members ?? []) {
      if (hex(m.id) === hex(camper.locatorId)) continue;
      learned.add(hex(m.id));
      if (m.nickname !== undefined) nicknames.add(m.nickname);
      const q = expectMsg(await camper.request('QUERY_ADDR', { ids: [m.id] }), 'QUERY_ADDR_RESULT');
      t.equal(q.entries[0]?.online, false, 'the alias finds nothing at locatord');
    }
    // The victim sees itself by its own ID.
    const own = await ended(v, theirs.matchId);
    t.ok((own.members ?? []).some((m) => hex(m.id) === hex(v.locatorId)), 'the hidden member sees its own ID');
  }
  t.equal([...learned].filter((id) => hidden.has(id)).length, 0, 'no hidden victim\'s locator ID reached the camper');
  t.same([...nicknames], [], 'nor a nickname');
  t.equal(parties, 1, 'one party in the cool-down, not one per arrival');
  t.equal(refusedWhileCooling, victims.length - 1, 'each later submit refused');
  t.ok(s.refusals('matchd', { event: 'submit-cooldown' }).length > cooldownsBefore, 'the refusal is logged');
});

t.test('MATCH_SUBMITs of one terminal are rate-limited', async (t) => {
  const flooder = await s.terminal('flooder');
  const before = await s.metric('matchd', 'match_submit_refusals_total', { reason: 'rate' });
  const codes: number[] = [];
  for (let i = 0; i < 6; i++) codes.push(codeOf(await flooder.submit({ mediaId: `flood-${i}`, minParty: 3, maxParty: 3 })));
  t.same(codes.slice(0, 3), [-1, -1, -1], 'the burst is accepted');
  t.ok(codes.slice(3).every((c) => c === ErrorCode.RATE_LIMITED), 'then RATE_LIMITED');
  t.equal(await s.metric('matchd', 'match_submit_refusals_total', { reason: 'rate' }), before + 3, 'counted');
  t.ok(s.refusals('matchd', { event: 'submit-rate' }).length > 0, 'logged');
});

// Last: every refusal the daemons' handlers answered above is one devloc-protocol(7) lists.
t.test('every handler refusal answered is listed in devloc-protocol(7)', async (t) => {
  t.same(await s.undocumentedRefusals(), []);
});
