// Truncated, oversized, deeply nested, over-long and type-confused datagrams at each real daemon
// (authd, locatord, its NAT reflector, matchd), built from a valid datagram of that daemon. Each
// asserts the wire code (or silence, for oversize datagrams and responses), that the answer is
// no larger than the datagram, the refusal's log line, and afterwards that nothing changed and
// the daemon still serves.
import t from 'tap';
import { UdpClient } from '../../src/net/client.js';
import { buildAuthRequest } from '../../src/wire/auth.js';
import { MatchState, MessageType } from '../../src/wire/catalog.js';
import type { CborValue } from '../../src/wire/cbor.js';
import { encodeCbor } from '../../src/wire/cbor.js';
import { MAX_DATAGRAM } from '../../src/wire/constants.js';
import { encodeDatagram } from '../../src/wire/envelope.js';
import { errorName, ErrorCode } from '../../src/wire/errors.js';
import { generatePair, privateKeyObject } from '../../src/wire/keys.js';
import type { Daemon } from './fixtures/stack.js';
import { adversarialStack, codeOf, decoded, expectMsg, LOCATOR, RawSocket } from './fixtures/stack.js';

const s = await adversarialStack(t);
const victim = await s.terminal('victim');
const observer = await s.terminal('observer');
expectMsg(await victim.register({ nickname: 'victim' }), 'REGISTER_ACK');
expectMsg(await observer.register({ nickname: 'observer' }), 'REGISTER_ACK');
const victimMatch = expectMsg(await victim.submit({ mediaId: 'malformed-game' }), 'MATCH_SUBMIT_ACK');
const attacker = await RawSocket.open(t, '127.0.0.4');

const rid = (): Buffer => UdpClient.newRequestId();
const pad = (n: number): [number, Buffer] => [15, Buffer.alloc(n)];
/** An envelope with any items at all (the attacker's encoder). */
const env = (...items: CborValue[]): Buffer => encodeCbor(items);
const nested = (depth: number): CborValue => (depth === 0 ? 1 : [nested(depth - 1)]);

/** A valid datagram of each target (what the mangled ones start from). */
function validFor(target: 'authd' | 'locatord' | 'reflector' | 'matchd'): Buffer {
  switch (target) {
    case 'authd': {
      const device = s.enroll('malformed');
      return buildAuthRequest({
        rid: rid(), deviceId: device.deviceId, deviceKey: privateKeyObject('Ed25519', device.sign), authdKid: Buffer.from(s.authdKey.kid, 'hex'),
        authdSealPublic: s.authdKey.seal.public, audiences: [LOCATOR], cnf: generatePair('x25519').public, timeMs: Date.now(),
      }).datagram;
    }
    case 'locatord':
      return victim.encode('REFRESH', { ttlS: 600 }).bytes;
    case 'matchd':
      return victim.encode('MATCH_STATUS', { matchId: victimMatch.matchId }).bytes;
    case 'reflector':
      return encodeDatagram('REFLECT', rid(), { padding: Buffer.alloc(60) });
  }
}

interface Case {
  what: string;
  bytes: Buffer;
  /** Expected ERROR code, or null: no answer at all. */
  code: ErrorCode | null;
  /** Log line expected: by wire code name (default) or by event. */
  event?: string;
}

function cases(target: 'authd' | 'locatord' | 'reflector' | 'matchd'): Case[] {
  const valid = validFor(target);
  const type = target === 'authd' ? MessageType.AUTH_REQUEST : target === 'locatord' ? MessageType.REFRESH : target === 'matchd' ? MessageType.MATCH_STATUS : MessageType.REFLECT;
  // AUTH_REQUEST is exactly MAX_DATAGRAM bytes: one of the right shape but short, to append to.
  const shortAuth = encodeDatagram('AUTH_REQUEST', rid(), { authdKey: Buffer.alloc(8), ephemeral: Buffer.alloc(32), sealed: Buffer.alloc(200) });
  // A message some other daemon serves.
  const foreign = target === 'authd'
    ? victim.encode('REGISTER', { timeMs: Date.now(), nickname: 'x'.repeat(30) }).bytes
    : encodeDatagram('AUTH_REQUEST', rid(), { authdKey: Buffer.alloc(8), ephemeral: Buffer.alloc(32), sealed: Buffer.alloc(100) });
  // A body whose fields have the wrong CBOR types.
  const confusedBody = target === 'authd'
    ? new Map<number, CborValue>([[1, 'kid as text'], [2, 12345], [3, [1, 2, 3]], pad(60)])
    : target === 'locatord' ? new Map<number, CborValue>([[1, 'ttl as text'], [2, -1], [3, 'addrs'], pad(60)])
      : target === 'matchd' ? new Map<number, CborValue>([[1, 'matchId as text'], pad(60)])
        : new Map<number, CborValue>([[1, 'change as text'], pad(60)]);
  const sessionTail: CborValue[] = target === 'locatord' || target === 'matchd' ? [[victim.sessions.locator.sid, 999, Buffer.alloc(16)]] : [];
  const confusedAuth: CborValue[] = target === 'locatord' || target === 'matchd'
    ? [['sid as text', 'seq', 'mac']]
    : [[Buffer.alloc(16), 1, Buffer.alloc(16)]]; // session auth on a message that takes none
  return [
    { what: 'truncated to half', bytes: valid.subarray(0, Math.floor(valid.length / 2)), code: ErrorCode.MALFORMED },
    { what: 'truncated by one byte', bytes: valid.subarray(0, valid.length - 1), code: ErrorCode.MALFORMED },
    { what: 'trailing garbage', bytes: Buffer.concat([valid.length + 3 <= MAX_DATAGRAM ? valid : shortAuth, Buffer.from([0, 0, 0])]), code: ErrorCode.MALFORMED },
    { what: 'oversized (1300 B)', bytes: Buffer.concat([valid, Buffer.alloc(1300 - valid.length)]), code: null, event: 'drop:oversize' },
    { what: 'nested 12 deep', bytes: env(1, type, rid(), new Map<number, CborValue>([[1, nested(12)], pad(60)]), ...sessionTail), code: ErrorCode.TOO_LARGE },
    { what: '700 items', bytes: env(1, type, rid(), new Map<number, CborValue>([[1, Array.from({ length: 700 }, () => 0)]]), ...sessionTail), code: ErrorCode.TOO_LARGE },
    // A session message of a session the daemon knows has its MAC checked before its body
    // (devloc-protocol(7) "Order of checks"): the zero MAC is BAD_MAC. matchd does not know the
    // victim's locatord session, so only the body can be checked there.
    { what: 'fields of the wrong types', bytes: env(1, type, rid(), confusedBody, ...sessionTail), code: target === 'locatord' ? ErrorCode.BAD_MAC : ErrorCode.BAD_MESSAGE },
    { what: 'body an array, not a map', bytes: env(1, type, rid(), [1, 2, 3, Buffer.alloc(60)], ...sessionTail), code: target === 'locatord' ? ErrorCode.BAD_MAC : ErrorCode.BAD_MESSAGE },
    { what: 'malformed session auth', bytes: env(1, type, rid(), new Map<number, CborValue>([pad(60)]), ...confusedAuth), code: ErrorCode.BAD_MESSAGE },
    { what: 'type as text', bytes: env(1, 'REFRESH', rid(), new Map<number, CborValue>([pad(60)])), code: ErrorCode.UNKNOWN_TYPE },
    { what: 'version as text', bytes: env('1', type, rid(), new Map<number, CborValue>([pad(60)])), code: ErrorCode.UNSUPPORTED_VERSION },
    { what: 'request ID of 7 bytes', bytes: env(1, type, Buffer.alloc(7), new Map<number, CborValue>([pad(60)])), code: ErrorCode.MALFORMED },
    { what: 'a message another daemon serves', bytes: foreign, code: ErrorCode.UNKNOWN_TYPE },
    // Responses are never answered, whatever is wrong with them (no ERROR ping-pong).
    { what: 'a response (ERROR)', bytes: encodeDatagram('ERROR', rid(), { code: ErrorCode.INTERNAL, message: 'x'.repeat(60) }), code: null, event: 'ERROR' },
  ];
}

const state: Record<Daemon, (string | [string, Record<string, string>])[]> = {
  authd: ['auth_ok_total', 'signatures_total', 'replay_cache_entries'],
  locatord: ['registrations_total', 'refreshes_total', 'sessions_opened_total', 'sessions', 'registrations', ['reflections_total', {}]],
  matchd: ['match_submits_total', 'match_waiting', 'sessions', ['match_cancels_total', {}]],
};

for (const target of ['authd', 'locatord', 'reflector', 'matchd'] as const) {
  t.test(`${target}: mangled datagrams`, async (t) => {
    const daemon: Daemon = target === 'reflector' ? 'locatord' : target;
    const before = await s.metrics(daemon, state[daemon]);
    const seen = expectMsg(await observer.request('QUERY_ADDR', { ids: [victim.locatorId] }), 'QUERY_ADDR_RESULT');
    const oversize = await s.metric(daemon, 'dropped_total', { reason: 'oversize' });
    const unanswered = await s.metric(daemon, 'dropped_total', { reason: 'response-not-answered' });
    for (const c of cases(target)) {
      const got = await attacker.exchange(s.addr[target], c.bytes);
      if (c.code === null) {
        t.equal(got.length, 0, `${c.what}: no answer`);
      } else {
        t.equal(got.length, 1, `${c.what}: one answer`);
        if (got[0]) {
          t.equal(codeOf(decoded(got[0])), c.code, `${c.what}: ${errorName(c.code)}`);
          t.ok(got[0].length <= c.bytes.length, `${c.what}: answer ${got[0].length} B <= ${c.bytes.length} B`);
        }
        t.ok(s.refusals(daemon, { code: errorName(c.code) }).length > 0, `${c.what}: logged`);
      }
    }
    t.equal(await s.metric(daemon, 'dropped_total', { reason: 'oversize' }), oversize + 1, 'the oversize datagram counted');
    t.ok(s.refusals(daemon, { event: 'drop:oversize' }).length > 0, 'and logged');
    t.equal(await s.metric(daemon, 'dropped_total', { reason: 'response-not-answered' }), unanswered + 1, 'the response counted, not answered');
    t.same(await s.metrics(daemon, state[daemon]), before, 'nothing changed');
    t.equal(s.procs[daemon].proc.exitCode, null, 'still running');
    // And still serving the legitimate terminals.
    t.same(expectMsg(await observer.request('QUERY_ADDR', { ids: [victim.locatorId] }), 'QUERY_ADDR_RESULT'), seen, 'the victim is where it was');
    t.equal(expectMsg(await victim.request('MATCH_STATUS', { matchId: victimMatch.matchId }), 'MATCH_STATUS_RESULT').state, MatchState.WAITING);
    if (target === 'reflector') {
      const r = await attacker.exchange(s.addr.reflector, validFor('reflector'));
      t.equal(decoded(r[0]!).name, 'REFLECT_RESULT', 'reflector answers a valid REFLECT');
    }
  });
}

// Last: every refusal the daemons' handlers answered above is one devloc-protocol(7) lists.
t.test('every handler refusal answered is listed in devloc-protocol(7)', async (t) => {
  t.same(await s.undocumentedRefusals(), []);
});
