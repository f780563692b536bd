// Tickets and proofs an attacker can make or steal, against the real daemons: a locator ID hijack
// with the victim's (captured) ticket, forged, expired, wrong-audience and unknown-kid tickets
// naming the victim's locator ID, a cancel of someone else's match request, and forged authd
// proofs. Each asserts the wire code, that nothing changed (metrics, and the victim as a
// legitimate terminal sees it), and the refusal's log line.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { UdpClient } from '../../src/net/client.js';
import { ClientSession } from '../../src/net/clientsession.js';
import { buildAuthRequest } from '../../src/wire/auth.js';
import { MatchState } from '../../src/wire/catalog.js';
import { AUTH_REQUEST_SIZE } from '../../src/wire/constants.js';
import { errorName, ErrorCode } from '../../src/wire/errors.js';
import { generatePair, privateKeyObject } from '../../src/wire/keys.js';
import type { ForgeOptions } from './fixtures/stack.js';
import { adversarialStack, codeOf, decoded, expectMsg, LOCATOR, MATCH, RawSocket } from './fixtures/stack.js';

const s = await adversarialStack(t);
const victim = await s.terminal('victim');
const observer = await s.terminal('observer');
expectMsg(await victim.register({ nickname: 'victim' }), 'REGISTER_ACK');
expectMsg(await observer.register({ nickname: 'observer' }), 'REGISTER_ACK');
const victimMatch = expectMsg(await victim.submit({ mediaId: 'tickets-game' }), 'MATCH_SUBMIT_ACK');
const attacker = await RawSocket.open(t, '127.0.0.3');

type Names = (string | [string, Record<string, string>])[];
const locatordState: Names = ['registrations_total', 'refreshes_total', 'sessions_opened_total', 'sessions', 'registrations'];
const matchdState: Names = ['match_submits_total', 'match_replaced_total', 'match_waiting', 'sessions', ['match_cancels_total', {}]];

const seenByObserver = async (): Promise<unknown> =>
  expectMsg(await observer.request('QUERY_ADDR', { ids: [victim.locatorId] }), 'QUERY_ADDR_RESULT').entries[0];
const victimMatchState = async (): Promise<number> =>
  expectMsg(await victim.request('MATCH_STATUS', { matchId: victimMatch.matchId }), 'MATCH_STATUS_RESULT').state;

/** Send a session-opening message of `session` (ticket inside) from the attacker; its one answer. */
async function open(session: ClientSession, ticket: Buffer, service: 'locator' | 'match'): Promise<{ code: number; bytes: number; request: number }> {
  const rid = UdpClient.newRequestId();
  const bytes = service === 'locator'
    ? session.encode('REGISTER', rid, { ticket, timeMs: Date.now(), nickname: 'mallory' })
    : session.encode('MATCH_SUBMIT', rid, { ticket, timeMs: Date.now(), mediaId: 'tickets-game', minParty: 3, maxParty: 3, netMode: 1, maxWaitS: 600 });
  const got = await attacker.exchange(service === 'locator' ? s.addr.locatord : s.addr.matchd, bytes);
  if (got.length !== 1) throw new Error(`expected one answer, got ${got.length}`);
  return { code: codeOf(decoded(got[0]!)), bytes: got[0]!.length, request: bytes.length };
}

t.test('hijack: the victim\'s captured ticket with the attacker\'s own cnf key opens no session (BAD_MAC)', async (t) => {
  const seen = await seenByObserver();
  const lb = await s.metrics('locatord', locatordState);
  const mb = await s.metrics('matchd', matchdState);
  const mallory = generatePair('x25519');
  for (const service of ['locator', 'match'] as const) {
    const grant = victim.tickets[service];
    // The ticket crosses the wire in clear in REGISTER/MATCH_SUBMIT: the attacker has it, not the cnf secret.
    const stolen = ClientSession.fromGrant(grant, privateKeyObject('X25519', mallory))!;
    const r = await open(stolen, Buffer.from(grant.ticket), service);
    t.equal(r.code, ErrorCode.BAD_MAC, `${service}: BAD_MAC`);
    t.ok(r.bytes <= r.request, `${service}: refusal no larger than the request`);
  }
  // The victim's own session ID under a MAC key of the attacker's (no ticket): BAD_MAC too.
  const own = s.forgeTicket({ aud: LOCATOR });
  const rid = UdpClient.newRequestId();
  const forged = own.session.encode('REFRESH', rid, {});
  forged.set(victim.sessions.locator.sid, forged.indexOf(own.session.sid));
  const r = await attacker.exchange(s.addr.locatord, forged);
  t.equal(codeOf(decoded(r[0]!)), ErrorCode.BAD_MAC, 'REFRESH naming the victim\'s session: BAD_MAC');
  t.same(await s.metrics('locatord', locatordState), lb, 'locatord: no session opened, nothing registered');
  t.same(await s.metrics('matchd', matchdState), mb, 'matchd: no session opened, nothing submitted');
  t.same(await seenByObserver(), seen, 'the victim\'s binding did not move');
  t.equal(await victimMatchState(), MatchState.WAITING, 'the victim\'s match request is untouched');
  t.ok(s.refusals('locatord', { code: 'BAD_MAC' }).length > 0 && s.refusals('matchd', { code: 'BAD_MAC' }).length > 0, 'refusals logged');
  // The victim's own next message still works: the forgeries moved no replay window.
  expectMsg(await victim.request('REFRESH', {}), 'REFRESH_ACK');
});

t.test('forged, expired, wrong-audience and unknown-kid tickets naming the victim\'s locator ID', async (t) => {
  const now = Math.floor(Date.now() / 1000);
  const cases: [string, Omit<ForgeOptions, 'aud'>, ErrorCode][] = [
    ['forged signature (trusted kid, other key)', { signer: generatePair('ed25519') }, ErrorCode.BAD_TICKET],
    ['unknown kid', { kid: randomBytes(8).toString('hex'), signer: generatePair('ed25519') }, ErrorCode.BAD_TICKET],
    ['unknown kid, signed by the real key', { kid: randomBytes(8).toString('hex') }, ErrorCode.BAD_TICKET],
    ['expired', { iat: now - 7200, exp: now - 3600 }, ErrorCode.TICKET_EXPIRED],
  ];
  for (const service of ['locator', 'match'] as const) {
    const aud = service === 'locator' ? LOCATOR : MATCH;
    const daemon = service === 'locator' ? 'locatord' : 'matchd';
    const state = service === 'locator' ? locatordState : matchdState;
    const before = await s.metrics(daemon, state);
    const seen = await seenByObserver();
    const all: [string, ForgeOptions, ErrorCode][] = [
      ...cases.map(([w, o, c]): [string, ForgeOptions, ErrorCode] => [w, { ...o, aud }, c]),
      // A genuine ticket of the authd key, for the other service.
      ['wrong audience', { aud: service === 'locator' ? MATCH : LOCATOR }, ErrorCode.WRONG_AUDIENCE],
    ];
    for (const [what, o, code] of all) {
      const f = s.forgeTicket({ ...o, locatorId: victim.locatorId });
      // The session keys are computed for the service attacked, whatever the ticket says.
      const session = ClientSession.fromGrant({ aud, ticket: f.ticket, serviceKey: s.serviceKeys[service].seal.public, exp: now + 600 }, privateKeyObject('X25519', f.cnf))!;
      const r = await open(session, f.ticket, service);
      t.equal(r.code, code, `${daemon}, ${what}: ${errorName(code)}`);
      t.ok(r.bytes <= r.request, `${daemon}, ${what}: refusal no larger than the request`);
      t.ok(s.refusals(daemon, { code: errorName(code) }).length > 0, `${daemon}, ${what}: logged`);
    }
    t.same(await s.metrics(daemon, state), before, `${daemon}: no session opened, nothing changed`);
    t.same(await seenByObserver(), seen, `${daemon}: the victim's binding did not move`);
  }
  t.equal(await victimMatchState(), MatchState.WAITING, 'the victim\'s match request is untouched');
});

t.test('another terminal cannot see or cancel the victim\'s match request (NOT_FOUND)', async (t) => {
  const mallory = await s.terminal('mallory');
  expectMsg(await mallory.submit({ mediaId: 'other-game' }), 'MATCH_SUBMIT_ACK');
  const before = await s.metrics('matchd', matchdState);
  t.equal(codeOf(await mallory.request('MATCH_CANCEL', { matchId: victimMatch.matchId })), ErrorCode.NOT_FOUND, 'cancel: NOT_FOUND');
  t.equal(codeOf(await mallory.request('MATCH_STATUS', { matchId: victimMatch.matchId })), ErrorCode.NOT_FOUND, 'status: NOT_FOUND');
  t.same(await s.metrics('matchd', matchdState), before, 'nothing cancelled');
  t.equal(await victimMatchState(), MatchState.WAITING, 'the victim\'s request still waits');
  t.ok(s.refusals('matchd', { event: 'MATCH_CANCEL:NOT_FOUND' }).length > 0, 'logged');
});

t.test('authd: unknown authd kid, forged device proof, stale and future timestamps change nothing', async (t) => {
  const device = s.enroll('proofs');
  const names: Names = ['auth_ok_total', 'signatures_total', 'replay_cache_entries', ['tickets_issued_total', {}]];
  const before = await s.metrics('authd', names);
  const build = (o: { kid?: string; signWith?: ReturnType<typeof generatePair>; timeMs?: number }): { rid: Buffer; datagram: Buffer } => {
    const rid = UdpClient.newRequestId();
    const b = buildAuthRequest({
      rid, deviceId: device.deviceId, deviceKey: privateKeyObject('Ed25519', o.signWith ?? device.sign),
      authdKid: Buffer.from(o.kid ?? s.authdKey.kid, 'hex'), authdSealPublic: s.authdKey.seal.public,
      audiences: [LOCATOR, MATCH], cnf: generatePair('x25519').public, timeMs: o.timeMs ?? Date.now(),
    });
    return { rid, datagram: b.datagram };
  };
  const cases: [string, { rid: Buffer; datagram: Buffer }, ErrorCode][] = [
    ['unknown authd kid', build({ kid: randomBytes(8).toString('hex') }), ErrorCode.BAD_PROOF],
    ['device proof signed by another key', build({ signWith: generatePair('ed25519') }), ErrorCode.BAD_PROOF],
    ['timestamp an hour old', build({ timeMs: Date.now() - 3_600_000 }), ErrorCode.CLOCK_SKEW],
    ['timestamp an hour ahead', build({ timeMs: Date.now() + 3_600_000 }), ErrorCode.CLOCK_SKEW],
  ];
  for (const [what, req, code] of cases) {
    t.equal(req.datagram.length, AUTH_REQUEST_SIZE);
    const got = await attacker.exchange(s.addr.authd, req.datagram);
    t.equal(got.length, 1, `${what}: one answer`);
    t.equal(codeOf(decoded(got[0]!)), code, `${what}: ${errorName(code)}`);
    t.ok(got[0]!.length < req.datagram.length, `${what}: smaller than the request`);
    t.ok(s.refusals('authd', { code: errorName(code) }).length > 0, `${what}: logged`);
  }
  t.same(await s.metrics('authd', names), before, 'no ticket, no signature, no replay-cache entry');
});

// Last: every refusal the daemons' handlers answered above is one devloc-protocol(7) lists.
t.test('every handler refusal answered is listed in devloc-protocol(7)', async (t) => {
  t.same(await s.undocumentedRefusals(), []);
});
