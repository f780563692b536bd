// Closed groups against the real daemons (issue 15, item 4; docs/SECURITY.md "Closed groups"):
// - an eavesdropper on the creator's and a member's datagrams (what `devloc decode --pcap`
//   shows) learns no join code, and a captured proof opens nothing for another terminal;
// - guessing a 4-digit code from several enrolled terminals stops at the failed-proof limits
//   (per terminal, per group): RATE_LIMITED with a log line, even for the right code then;
// - a group emptied by its last member cannot be re-created by a REGISTER naming its ID.
// The group traffic goes through the agent's own code (LocatorQueries), as a terminal sends it.
import t from 'tap';
import { LocatorQueries } from '../../src/agent/queries.js';
import type { QueryHost } from '../../src/agent/queries.js';
import { ServerError } from '../../src/agent/errors.js';
import { parseId } from '../../src/agent/ids.js';
import { ErrorCode } from '../../src/wire/errors.js';
import { adversarialStack, codeOf, expectMsg } from './fixtures/stack.js';
import type { Terminal } from './fixtures/stack.js';

const s = await adversarialStack(t);

/** The agent's group queries over a fixture terminal's locatord session; every datagram sent is kept. */
function agentOf(term: Terminal, sent: Buffer[]): LocatorQueries {
  const host: QueryHost = {
    ready: async () => term.sessions.locator,
    call: async (_session, name, body, expect) => {
      const d = term.encode(name, body);
      sent.push(d.bytes);
      const r = await term.send(name, d);
      if (r.msg.name === 'ERROR') throw new ServerError(name, r.msg.body.code, r.msg.body.message, r.msg.body.retryAfterMs, undefined);
      if (r.msg.name !== expect) throw new Error(`expected ${expect}, got ${r.msg.name}`);
      return r.msg as never;
    },
    sessionLost: () => undefined,
  };
  return new LocatorQueries(host, undefined);
}

const CODE = '4711';

t.test('the join code never travels; a captured proof opens nothing for another terminal', async (t) => {
  const owner = await s.terminal('gc-owner');
  const member = await s.terminal('gc-member');
  const thief = await s.terminal('gc-thief');
  for (const x of [owner, member, thief]) expectMsg(await x.register(), 'REGISTER_ACK');
  const wire: Buffer[] = [];
  const { groupId } = await agentOf(owner, wire).groupCreate('crew', CODE);
  await agentOf(member, wire).groupJoin(groupId, CODE);
  t.ok(wire.length >= 2, 'GROUP_CREATE and GROUP_JOIN captured');
  for (const d of wire) t.equal(d.indexOf(Buffer.from(CODE, 'utf8')), -1, 'the code is not in the datagram');
  const gid = parseId(groupId)!;
  const members = expectMsg(await owner.request('GROUP_MEMBERS', { groupId: gid }), 'GROUP_MEMBERS_RESULT');
  t.equal(members.total, 2, 'the member joined with the code');

  // The thief copies the member's captured nonce and proof into a GROUP_JOIN of its own session.
  const { decodeDatagram } = await import('../../src/wire/envelope.js');
  const captured = decodeDatagram(wire[wire.length - 1]!);
  t.ok(captured.ok && captured.msg.name === 'GROUP_JOIN', 'the captured join decodes (what devloc decode shows)');
  const body = captured.ok && captured.msg.name === 'GROUP_JOIN' ? captured.msg.body : { groupId: gid };
  t.notOk('joinCode' in body, 'no code field on the wire');
  t.equal(codeOf(await thief.request('GROUP_JOIN', { ...body, groupId: gid })), ErrorCode.FORBIDDEN, 'replayed proof refused');
  t.equal(codeOf(await thief.request('GROUP_MEMBERS', { groupId: gid })), ErrorCode.FORBIDDEN, 'and the thief is no member');
});

t.test('guessing a 4-digit code stops at the per-terminal and per-group limits', async (t) => {
  const owner = await s.terminal('gg-owner');
  expectMsg(await owner.register(), 'REGISTER_ACK');
  const { groupId } = await agentOf(owner, []).groupCreate('guarded', CODE);
  const gid = parseId(groupId)!;
  const refusalsBefore = s.refusals('locatord', { event: 'join-limit' }).length;
  const codes = new Map<number, number>();
  const count = (c: number): void => void codes.set(c, (codes.get(c) ?? 0) + 1);
  // Five enrolled attackers, 8 guesses each from 0000 on; the right code is the 31st guess overall.
  const guesses = Array.from({ length: 40 }, (_, i) => (i === 30 ? CODE : String(1000 + i).padStart(4, '0')));
  let joined = false;
  for (let a = 0; a < 5; a++) {
    const attacker = await s.terminal(`gg-attacker-${a}`);
    expectMsg(await attacker.register(), 'REGISTER_ACK');
    const q = agentOf(attacker, []);
    for (const code of guesses.slice(a * 8, a * 8 + 8)) {
      try {
        await q.groupJoin(groupId, code);
        joined = true;
      } catch (err) {
        const name = (err as { code?: string }).code;
        count(name === 'RATE_LIMITED' ? ErrorCode.RATE_LIMITED : name === 'FORBIDDEN' ? ErrorCode.FORBIDDEN : -1);
      }
    }
    // The per-terminal limit: after 5 failures this attacker is refused before any check.
    const r = await attacker.request('GROUP_JOIN', { groupId: gid });
    t.ok(codeOf(r) === ErrorCode.RATE_LIMITED || codeOf(r) === ErrorCode.FORBIDDEN, `attacker ${a}: refused`);
  }
  t.notOk(joined, 'no attacker joined, the right code among the guesses');
  t.equal(codes.get(-1), undefined, 'every refusal is FORBIDDEN or RATE_LIMITED');
  t.equal(codes.get(ErrorCode.FORBIDDEN), 20, 'only 20 proofs checked in the window (the per-group limit)');
  t.equal(codes.get(ErrorCode.RATE_LIMITED), 20, 'the rest refused with RATE_LIMITED');
  t.ok(s.refusals('locatord', { event: 'join-limit' }).length > refusalsBefore, 'the limit is logged');
  const members = expectMsg(await owner.request('GROUP_MEMBERS', { groupId: gid }), 'GROUP_MEMBERS_RESULT');
  t.equal(members.total, 1, 'the group holds its owner only');
});

t.test('an emptied group cannot be re-created by a REGISTER naming its ID', async (t) => {
  const owner = await s.terminal('gr-owner');
  const attacker = await s.terminal('gr-attacker');
  expectMsg(await owner.register(), 'REGISTER_ACK');
  const { groupId } = await agentOf(owner, []).groupCreate('ephemeral', CODE);
  const gid = parseId(groupId)!;
  expectMsg(await owner.request('GROUP_LEAVE', { groupId: gid }), 'GROUP_LEAVE_ACK');
  const r = await attacker.register({ joinGroups: [{ groupId: gid }] });
  t.equal(codeOf(r), ErrorCode.NOT_FOUND, 'REGISTER naming the old ID: NOT_FOUND');
  expectMsg(await attacker.register(), 'REGISTER_ACK');
  t.equal(codeOf(await attacker.request('GROUP_MEMBERS', { groupId: gid })), ErrorCode.FORBIDDEN, 'the attacker owns no group of that ID');
  t.equal(codeOf(await attacker.request('GROUP_JOIN', { groupId: gid })), ErrorCode.NOT_FOUND, 'and nobody re-created it');
});

// Last: every refusal the daemons' handlers answered above is one devloc-protocol(7) lists.
t.test('every handler refusal answered is listed in devloc-protocol(7)', async (t) => {
  t.same(await s.undocumentedRefusals(), []);
});
