// Locator ID enumeration against the real locatord: a burst of QUERY_STATUS / QUERY_ADDR for
// random IDs from one terminal and one source is cut by the lookup budgets (RATE_LIMITED with a
// retry delay, counted in IDs, per terminal and per source IP), the refusals look the same
// whether the ID asked about is registered or not, and a refused lookup counts nothing. Within
// the budget, a terminal hidden from the asker answers exactly like an unknown ID.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import type { Reply } from '../../src/net/client.js';
import { Visibility } from '../../src/wire/constants.js';
import { ErrorCode } from '../../src/wire/errors.js';
import { adversarialStack, codeOf, expectMsg } from './fixtures/stack.js';

const PER_TERMINAL_BURST = 64;
const PER_SOURCE_BURST = 128;
const s = await adversarialStack(t, {
  locatordArgs: ['--query-rate', '1', '--query-burst', String(PER_TERMINAL_BURST), '--query-source-rate', '1', '--query-source-burst', String(PER_SOURCE_BURST)],
});
const victim = await s.terminal('victim');
const hidden = await s.terminal('hidden');
expectMsg(await victim.register({ nickname: 'victim' }), 'REGISTER_ACK');
expectMsg(await hidden.register({ nickname: 'hidden', visibility: Visibility.GROUPS_AND_ALLOWED }), 'REGISTER_ACK');
// The enumerator works from its own address, so the budgets are its own.
const mallory = await s.terminal('mallory', { bind: '127.0.0.5' });
expectMsg(await mallory.register(), 'REGISTER_ACK');

const message = (r: Reply): string | undefined => (r.msg.name === 'ERROR' ? r.msg.body.message : undefined);

t.test('a burst of single-ID lookups: the budget, then RATE_LIMITED that reveals nothing', async (t) => {
  // Within the budget: random IDs and the hidden terminal answer "offline", identically.
  let answered = 0;
  for (let i = 0; i < PER_TERMINAL_BURST; i++) {
    const id = i === 10 ? hidden.locatorId : randomBytes(16);
    const r = await mallory.request('QUERY_ADDR', { ids: [id] });
    const e = expectMsg(r, 'QUERY_ADDR_RESULT').entries[0]!;
    t.same(Object.keys(e).sort(), ['id', 'online'], `lookup ${i}: a bare entry`);
    if (e.online) t.fail(`lookup ${i} found something`);
    answered++;
  }
  t.equal(answered, PER_TERMINAL_BURST, 'the burst is served');
  const before = await s.metrics('locatord', [['query_ids_total', {}], ['queries_total', { result: 'ok' }]]);
  // Beyond it: refused. A refill of one ID per second lets a few through on a slow machine.
  const refused: Reply[] = [];
  let through = 0;
  for (let i = 0; i < 30; i++) {
    const r = await mallory.request(i % 2 ? 'QUERY_STATUS' : 'QUERY_ADDR', { ids: [randomBytes(16)] });
    if (codeOf(r) === ErrorCode.RATE_LIMITED) refused.push(r);
    else through++;
  }
  t.ok(refused.length >= 20, `${refused.length} of 30 refused (${through} refilled)`);
  for (const r of refused) {
    if (r.msg.name !== 'ERROR' || !(r.msg.body.retryAfterMs! > 0)) t.fail('RATE_LIMITED without a retry delay');
  }
  // The victim's real, visible ID while limited: the same refusal as for a random ID.
  const forVictim = await mallory.request('QUERY_ADDR', { ids: [victim.locatorId] });
  const forRandom = await mallory.request('QUERY_ADDR', { ids: [randomBytes(16)] });
  t.equal(codeOf(forVictim), ErrorCode.RATE_LIMITED, 'the victim\'s ID: RATE_LIMITED');
  t.equal(codeOf(forRandom), ErrorCode.RATE_LIMITED);
  t.equal(message(forVictim), message(forRandom), 'same refusal text');
  t.notOk(forVictim.raw.includes(Buffer.from(victim.locatorId)), 'the refusal does not even echo the ID');
  const statusVictim = await mallory.request('QUERY_STATUS', { ids: [victim.locatorId, hidden.locatorId] });
  t.equal(codeOf(statusVictim), ErrorCode.RATE_LIMITED, 'QUERY_STATUS of the victim: RATE_LIMITED');
  const after = await s.metrics('locatord', [['query_ids_total', {}], ['queries_total', { result: 'ok' }]]);
  t.ok(after['query_ids_total{}']! - before['query_ids_total{}']! <= through, 'refused lookups count no IDs');
  t.ok(await s.metric('locatord', 'queries_total', { result: 'rate-limited' }) >= 20, 'counted as rate-limited');
  t.ok(s.refusals('locatord', { code: 'RATE_LIMITED' }).some((l) => String(l['event']).startsWith('QUERY_')), 'logged');
});

t.test('a second session of the same terminal, from another address, shares its budget', async (t) => {
  const again = await s.terminal('mallory-2', { bind: '127.0.0.6', device: mallory.device });
  t.ok(again.locatorId.equals(mallory.locatorId), 'same device, same locator ID');
  expectMsg(await again.register(), 'REGISTER_ACK');
  const r = await again.request('QUERY_STATUS', { ids: Array.from({ length: 8 }, () => randomBytes(16)) });
  t.equal(codeOf(r), ErrorCode.RATE_LIMITED, 'still limited: the budget is per terminal');
  t.match(message(r), /terminal/);
});

t.test('more enrolled devices (Sybils) from the same address share the per-source budget', async (t) => {
  // mallory spent about PER_TERMINAL_BURST of the address's PER_SOURCE_BURST.
  const sybil = await s.terminal('sybil', { bind: '127.0.0.5' });
  expectMsg(await sybil.register(), 'REGISTER_ACK');
  let answered = 0;
  let bySource: Reply | undefined;
  for (let i = 0; i < PER_SOURCE_BURST && !bySource; i++) {
    const r = await sybil.request('QUERY_STATUS', { ids: [randomBytes(16)] });
    if (codeOf(r) === ErrorCode.RATE_LIMITED) bySource = r;
    else answered++;
  }
  t.ok(bySource, 'refused before the sybil\'s own per-terminal budget would be');
  t.match(bySource ? message(bySource) : '', /address/, 'by the per-source budget');
  t.ok(answered < PER_TERMINAL_BURST, `${answered} answered`);
});

// Last: every refusal the daemons' handlers answered above is one devloc-protocol(7) lists.
t.test('every handler refusal answered is listed in devloc-protocol(7)', async (t) => {
  t.same(await s.undocumentedRefusals(), []);
});
