// The matching engine under a fake clock: filters both ways, oldest first, closest candidates,
// widening, party sizes, host selection by network mode, deadlines, cancels, replacement, limits.
import t from 'tap';
import type { EngineOptions, MatchRequest, SubmitInput } from '../../src/matchd/engine.js';
import { MatchEngine } from '../../src/matchd/engine.js';
import { MatchState } from '../../src/wire/catalog.js';
import type { Requirement } from '../../src/wire/catalog.js';
import { NetMode } from '../../src/wire/constants.js';
import { MatchPath, RelayVia } from '../../src/wire/connectivity.js';
import { ErrorCode } from '../../src/wire/errors.js';

const T0 = 1_800_000_000_000;

function setup(opts: Partial<EngineOptions> = {}) {
  let now = T0;
  let ids = 0;
  let locs = 0;
  const finished: MatchRequest<string>[] = [];
  const engine = new MatchEngine<string>({
    now: () => now,
    newId: () => {
      const b = Buffer.alloc(8);
      b.writeUInt32BE(++ids, 4);
      return b;
    },
    onFinished: (r) => finished.push(r as MatchRequest<string>),
    widenIntervalMs: 5000,
    widenStep: 1,
    preferredDropMs: 30_000,
    ...opts,
  });
  const newLocator = (): Buffer => {
    const b = Buffer.alloc(16);
    b.writeUInt32BE(++locs, 12);
    return b;
  };
  const submit = (name: string, over: Partial<SubmitInput<string>> = {}): MatchRequest<string> =>
    engine.submit({ locatorId: newLocator(), mediaId: 'chess', minParty: 2, maxParty: 2, netMode: NetMode.OPEN, maxWaitS: 60, contact: name, ...over });
  const advance = (ms: number): void => {
    now += ms;
  };
  const names = (r: MatchRequest<string>): string[] => (r.party?.members ?? []).map((m) => m.contact);
  const hostOf = (r: MatchRequest<string>): string => r.party!.members[r.party!.host]!.contact;
  return { engine, submit, advance, finished, names, hostOf, newLocator };
}

const eq = (attr: string, value: string, mandatory = true): Requirement => ({ attr, op: 0, value, mandatory });
const range = (attr: string, min: number, max: number, mandatory = true): Requirement => ({ attr, op: 1, min, max, mandatory });
const member = (attr: string, set: string[], mandatory = true): Requirement => ({ attr, op: 2, set, mandatory });
/** Two sides that never match among themselves: side a wants side b and vice versa. */
const sideA = { attrs: { side: 'a' }, requirements: [eq('side', 'b')] };
const sideB = (attrs: Record<string, string | number | boolean> = {}, reqs: Requirement[] = []) => ({
  attrs: { side: 'b', ...attrs }, requirements: [eq('side', 'a'), ...reqs],
});

t.test('requirements must hold both ways', async (t) => {
  const { engine, submit } = setup();
  const a = submit('a', { attrs: { region: 'us', level: 5 }, requirements: [eq('region', 'eu')] });
  const b = submit('b', { attrs: { region: 'eu', level: 5 }, requirements: [eq('region', 'eu')] });
  t.equal(a.state, MatchState.WAITING, 'a wants eu and b is eu, but b does not accept a (us)');
  t.equal(b.state, MatchState.WAITING);
  const c = submit('c', { attrs: { region: 'eu', level: 50 }, requirements: [range('level', 40, 60)] });
  t.equal(c.state, MatchState.WAITING, 'c is eu (b would accept) but b has level 5, outside c\'s range');
  const d = submit('d', { attrs: { region: 'eu', lang: 'fr', level: 7 }, requirements: [member('lang', ['en', 'fr']), range('level', 0, 10)] });
  t.equal(d.state, MatchState.WAITING, 'd: b has no lang attribute, so the set requirement fails');
  const e = submit('e', { attrs: { region: 'eu', level: 5, lang: 'en' }, requirements: [eq('region', 'eu')] });
  t.equal(e.state, MatchState.MATCHED, 'e fits b and d (and rejects a, c rejects e); b, the oldest, is matched first');
  t.same(e.party!.members.map((m) => m.contact).sort(), ['b', 'e']);
  t.equal(a.state, MatchState.WAITING);
  t.equal(engine.waiting, 3);
});

t.test('media ID and appType separate pools; numbers compare as text for equality', async (t) => {
  const { submit } = setup();
  const a = submit('a', { mediaId: 'chess', attrs: { level: 3 } });
  const b = submit('b', { mediaId: 'go' });
  t.equal(b.state, MatchState.WAITING, 'other media ID');
  const c = submit('c', { mediaId: 'chess', appType: 'chat' });
  t.equal(c.state, MatchState.WAITING, 'other appType');
  const d = submit('d', { mediaId: 'chess', requirements: [eq('level', '3')] });
  t.equal(d.state, MatchState.MATCHED);
  t.equal(a.state, MatchState.MATCHED);
});

t.test('oldest waiting request is served first', async (t) => {
  const { submit, names } = setup();
  const w1 = submit('w1', sideA);
  const w2 = submit('w2', sideA);
  const d = submit('d', sideB());
  t.same(names(d), ['w1', 'd'], 'the older of two equal candidates gets the newcomer');
  t.equal(w1.state, MatchState.MATCHED);
  t.equal(w2.state, MatchState.WAITING);
});

t.test('the closest candidate is preferred (once preferred requirements stop filtering)', async (t) => {
  const { submit, advance, engine, names } = setup({ widenStep: 0, preferredDropMs: 10_000 });
  const a = submit('a', { attrs: { side: 'a' }, requirements: [eq('side', 'b'), range('level', 9, 11, false)] });
  submit('far', sideB({ level: 14 }));
  submit('near', sideB({ level: 12 }));
  t.equal(engine.waiting, 3, 'a prefers level 9..11: nobody qualifies yet');
  advance(9_999);
  engine.tick();
  t.equal(a.state, MatchState.WAITING);
  advance(1);
  engine.tick();
  t.equal(a.state, MatchState.MATCHED, 'preferred requirement dropped after 10 s');
  t.same(names(a), ['a', 'near'], 'closer level wins over the older candidate');
});

t.test('preferred numeric ranges widen step by step; mandatory ones never', async (t) => {
  const { submit, advance, engine } = setup({ widenStep: 2, widenIntervalMs: 5000, preferredDropMs: 60_000 });
  const a = submit('a', { attrs: { side: 'a' }, requirements: [eq('side', 'b'), range('level', 10, 10, false)] });
  const m = submit('m', { attrs: { side: 'a' }, requirements: [eq('side', 'c'), range('level', 10, 10, true)] });
  submit('b', sideB({ level: 14 }));
  submit('c', { attrs: { side: 'c', level: 11 }, requirements: [eq('side', 'a')] });
  const steps: [number, number][] = [];
  for (let s = 0; s < 60; s++) {
    engine.tick();
    steps.push([s, a.state]);
    if (a.state !== MatchState.WAITING) break;
    advance(1000);
  }
  // Widening: 0..4 s exact, 5..9 s +-2 (8..12), 10 s +-4 (6..14): level 14 fits at 10 s.
  t.same(steps.filter(([, st]) => st === MatchState.MATCHED).map(([s]) => s), [10], 'matched exactly when the range reached 14');
  t.equal(a.party!.members.length, 2);
  for (let s = 10; s < 59; s++) {
    advance(1000);
    engine.tick();
  }
  t.equal(m.state, MatchState.WAITING, 'mandatory level 10..10 never accepts level 11');
});

t.test('party sizes: everyone\'s min and max hold; greedy skips a member that needs more', async (t) => {
  const { submit, names } = setup();
  const a = submit('a', { minParty: 3, maxParty: 3 });
  const b = submit('b', { minParty: 3, maxParty: 3 });
  t.equal(a.state, MatchState.WAITING, 'two of three');
  const c = submit('c', { minParty: 2, maxParty: 4 });
  t.equal(c.state, MatchState.MATCHED);
  t.same(names(a).sort(), ['a', 'b', 'c']);
  t.equal(b.party, a.party, 'one party object shared by all members');
  const { submit: s2, names: n2 } = setup();
  const x = s2('x', { minParty: 2, maxParty: 4 });
  s2('y', { minParty: 4, maxParty: 4, attrs: { side: 'y' }, requirements: [eq('side', 'none')] });
  const z = s2('z', { minParty: 2, maxParty: 2 });
  t.same(n2(z), ['x', 'z'], 'y could not be satisfied; x and z pair up');
  t.equal(x.state, MatchState.MATCHED);
});

t.test('connectivity: two symmetric NATs need an open host; alone they time out', async (t) => {
  const { submit, engine, advance, hostOf, names, finished } = setup();
  const a = submit('a', { netMode: NetMode.SYMMETRIC, minParty: 2, maxParty: 4, maxWaitS: 30 });
  const b = submit('b', { netMode: NetMode.SYMMETRIC, minParty: 2, maxParty: 4, maxWaitS: 30 });
  t.equal(a.state, MatchState.WAITING, 'symmetric <-> symmetric cannot connect');
  advance(10_000);
  engine.tick();
  t.equal(engine.waiting, 2);
  const h = submit('h', { netMode: NetMode.OPEN, minParty: 2, maxParty: 4 });
  t.equal(h.state, MatchState.MATCHED);
  t.same(names(a).sort(), ['a', 'b', 'h'], 'the open terminal is matched in');
  t.equal(hostOf(a), 'h', 'as host');
  t.equal(b.party, a.party);
  t.equal(finished.length, 3);

  const s = setup();
  const p = s.submit('p', { netMode: NetMode.SYMMETRIC, maxWaitS: 30 });
  const q = s.submit('q', { netMode: NetMode.SYMMETRIC, maxWaitS: 30 });
  s.advance(29_999);
  s.engine.tick();
  t.equal(p.state, MatchState.WAITING);
  s.advance(1);
  s.engine.tick();
  t.equal(p.state, MatchState.NO_MATCH, 'no reachable host appeared: no match at the deadline');
  t.equal(q.state, MatchState.NO_MATCH);
  t.same(s.finished.map((r) => r.contact), ['p', 'q'], 'both reported');
  t.equal(s.engine.waiting, 0);
});

t.test('connectivity: pairs by the matrix; host choice', async (t) => {
  const cases: [number, number, boolean][] = [
    [NetMode.PORT_RESTRICTED, NetMode.SYMMETRIC, false],
    [NetMode.RESTRICTED, NetMode.SYMMETRIC, true],
    [NetMode.FULL_CONE, NetMode.SYMMETRIC, true],
    [NetMode.PORT_RESTRICTED, NetMode.PORT_RESTRICTED, true],
    [NetMode.UNKNOWN, NetMode.SYMMETRIC, false],
    [NetMode.UNKNOWN, NetMode.OPEN, true],
  ];
  for (const [x, y, ok] of cases) {
    const { submit } = setup();
    submit('x', { netMode: x });
    const b = submit('y', { netMode: y });
    t.equal(b.state === MatchState.MATCHED, ok, `${x} with ${y}: ${ok ? 'matched' : 'not matched'}`);
  }
  // Host: the most reachable member.
  const { submit, hostOf } = setup();
  submit('pr', { netMode: NetMode.PORT_RESTRICTED, minParty: 3, maxParty: 3 });
  submit('r', { netMode: NetMode.RESTRICTED, minParty: 3, maxParty: 3 });
  const fc = submit('fc', { netMode: NetMode.FULL_CONE, minParty: 3, maxParty: 3 });
  t.equal(hostOf(fc), 'fc');
  // With room for two only, a symmetric anchor takes the open candidate and the other waits.
  const s = setup();
  const a = s.submit('a', { netMode: NetMode.SYMMETRIC });
  const b = s.submit('b', { netMode: NetMode.SYMMETRIC });
  s.submit('o', { netMode: NetMode.OPEN });
  t.same(s.names(a), ['a', 'o']);
  t.equal(b.state, MatchState.WAITING);
  // Two symmetric + port-restricted + restricted: restricted hosts everyone (it reaches all three).
  const u = setup();
  u.submit('s1', { netMode: NetMode.SYMMETRIC, minParty: 4, maxParty: 4 });
  u.submit('s2', { netMode: NetMode.SYMMETRIC, minParty: 4, maxParty: 4 });
  u.submit('pr', { netMode: NetMode.PORT_RESTRICTED, minParty: 4, maxParty: 4 });
  const r = u.submit('r', { netMode: NetMode.RESTRICTED, minParty: 4, maxParty: 4 });
  t.equal(r.state, MatchState.MATCHED);
  t.equal(u.hostOf(r), 'r');
});

t.test('udp-blocked terminals are refused, unless they reach a relay over TCP or TLS', async (t) => {
  const { submit } = setup();
  t.throws(() => submit('x', { netMode: NetMode.UDP_BLOCKED }), { name: 'DevlocError', code: ErrorCode.FORBIDDEN });
  t.throws(() => submit('x', { netMode: NetMode.UDP_BLOCKED, relay: RelayVia.UDP }), { name: 'DevlocError', code: ErrorCode.FORBIDDEN }, 'a relay over UDP is no use without UDP');
  t.equal(submit('y', { netMode: NetMode.UDP_BLOCKED, relay: RelayVia.TLS }).state, MatchState.WAITING, 'TLS: accepted');
});

t.test('cancel before the match: never matched; after: answers matched with the party', async (t) => {
  const { submit, engine } = setup();
  const a = submit('a');
  const c = engine.cancel(a.idHex, a.locatorHex)!;
  t.equal(c.state, MatchState.CANCELLED);
  const b = submit('b');
  t.equal(b.state, MatchState.WAITING, 'the cancelled request is not a candidate');
  t.equal(engine.cancel(a.idHex, a.locatorHex)!.state, MatchState.CANCELLED, 'idempotent');
  t.equal(engine.cancel(a.idHex, b.locatorHex), undefined, 'another terminal cannot see it');
  const d = submit('d');
  t.equal(d.state, MatchState.MATCHED);
  const late = engine.cancel(b.idHex, b.locatorHex)!;
  t.equal(late.state, MatchState.MATCHED, 'the cancel lost the race');
  t.same(late.party!.members.map((m) => m.contact), ['b', 'd']);
  t.equal(d.state, MatchState.MATCHED, 'the partner keeps its match');
});

t.test('a second submit replaces the first; a terminal is never matched with itself', async (t) => {
  const { submit, engine, newLocator, finished } = setup();
  const me = newLocator();
  const first = submit('first', { locatorId: me });
  const second = submit('second', { locatorId: me });
  t.equal(first.state, MatchState.CANCELLED, 'replaced, not matched with its successor');
  t.equal(second.state, MatchState.WAITING);
  t.equal(engine.waiting, 1);
  t.equal(engine.stats.replaced, 1);
  const other = submit('other');
  t.same(other.party!.members.map((m) => m.contact), ['second', 'other']);
  t.equal(first.party, null);
  t.notOk(finished.includes(first), 'a replaced request is not reported as a result');
});

t.test('an expired request is never matched, even before the tick ends it', async (t) => {
  const { submit, advance, engine } = setup();
  const a = submit('a', { maxWaitS: 10 });
  advance(10_000);
  const b = submit('b');
  t.equal(b.state, MatchState.WAITING);
  engine.tick();
  t.equal(a.state, MatchState.NO_MATCH);
  t.equal(b.state, MatchState.WAITING);
});

t.test('limits: FULL per media ID and in total; a replacement fits', async (t) => {
  const { submit, newLocator } = setup({ maxWaitingPerMedia: 2, maxWaiting: 3 });
  const me = newLocator();
  submit('a', { locatorId: me, ...sideA });
  submit('b', sideA);
  t.throws(() => submit('c', sideA), { name: 'DevlocError', code: ErrorCode.FULL });
  t.doesNotThrow(() => submit('a2', { locatorId: me, ...sideA }), 'replacing my own request needs no room');
  submit('g', { mediaId: 'go', ...sideA });
  t.throws(() => submit('h', { mediaId: 'othello', ...sideA }), { name: 'DevlocError', code: ErrorCode.FULL }, 'total');
});

t.test('bad requests are refused with BAD_MESSAGE', async (t) => {
  const { submit } = setup({ maxParty: 8 });
  const bad = { name: 'DevlocError', code: ErrorCode.BAD_MESSAGE };
  t.throws(() => submit('x', { minParty: 1 }), bad);
  t.throws(() => submit('x', { minParty: 3, maxParty: 2 }), bad);
  t.throws(() => submit('x', { minParty: 9, maxParty: 9 }), bad);
  t.throws(() => submit('x', { requirements: [{ attr: 'a', op: 0 }] }), bad);
  t.throws(() => submit('x', { requirements: [{ attr: 'a', op: 1, min: 5, max: 1 }] }), bad);
  t.throws(() => submit('x', { requirements: [{ attr: 'a', op: 2, set: [] }] }), bad);
  const r = submit('ok', { minParty: 2, maxParty: 64, maxWaitS: 99_999 });
  t.equal(r.maxParty, 8, 'maxParty clamped');
  t.equal(r.deadlineMs - r.submittedAtMs, 600_000, 'wait clamped to maxWaitMs');
  const s = submit('session-bound', { notAfterMs: T0 + 5000 });
  t.equal(s.deadlineMs, T0 + 5000, 'a request never outlives its session');
});

t.test('ended requests are kept for the retention time, then forgotten', async (t) => {
  const { submit, engine, advance } = setup({ retentionMs: 60_000 });
  const a = submit('a');
  submit('b');
  t.equal(engine.find(a.idHex, a.locatorHex), a);
  advance(59_999);
  engine.tick();
  t.ok(engine.find(a.idHex, a.locatorHex));
  advance(1);
  engine.tick();
  t.equal(engine.find(a.idHex, a.locatorHex), undefined);
  t.equal(engine.retained, 0);
});

t.test('tolerance triggers beyond the per-tick budget carry over, oldest first', async (t) => {
  const { submit, engine, advance } = setup({ maxTriggersPerTick: 1, widenIntervalMs: 1000, widenStep: 1, preferredDropMs: 60_000 });
  const a1 = submit('a1', { attrs: { side: 'a' }, requirements: [eq('side', 'b'), range('level', 10, 10, false)] });
  const a2 = submit('a2', { attrs: { side: 'a' }, requirements: [eq('side', 'b'), range('level', 10, 10, false)] });
  submit('b1', sideB({ level: 11 }));
  submit('b2', sideB({ level: 11 }));
  advance(1000);
  engine.tick();
  t.equal(a1.state, MatchState.MATCHED, 'oldest trigger first');
  t.equal(a2.state, MatchState.WAITING);
  t.equal(engine.deferredTriggers, 1);
  engine.tick();
  t.equal(a2.state, MatchState.MATCHED, 'carried over to the next tick');
});

t.test('index buckets: numbers, booleans, sets of one; oldest first across buckets', async (t) => {
  const { submit, names } = setup();
  const w1 = submit('w1', { requirements: [eq('level', '3')], attrs: { k: 'x' } });
  const w2 = submit('w2', { requirements: [member('ranked', ['true'])], attrs: { k: 'x' } });
  const w3 = submit('w3', { attrs: { k: 'x' }, requirements: [eq('k', 'y')] });
  t.equal(w1.state + w2.state + w3.state, 0, 'all waiting (w3 wants k=y, the others have k=x)');
  const d = submit('d', { attrs: { level: 3, ranked: true, k: 'y' }, requirements: [eq('k', 'x')] });
  t.same(names(d), ['w1', 'd'], 'w1 (bucket level=3) is older than w2 (bucket ranked=true) and w3 (k=y)');
  const e = submit('e', { attrs: { level: 4, ranked: true, k: 'y' }, requirements: [eq('k', 'x')] });
  t.same(names(e), ['w2', 'e'], 'number 4 is not "3"; boolean true is "true"');
  t.equal(w3.state, MatchState.WAITING, 'w3 would accept d and e, but they require k=x');
});

// ---- relays (issue 17) -------------------------------------------------------------------------

const { DIRECT, RELAY } = MatchPath;
const ALL = RelayVia.UDP | RelayVia.TCP | RelayVia.TLS;

t.test('relays: two symmetric terminals are matched, relayed, when both can relay; refused with noPath when not', async (t) => {
  const { submit, engine, advance } = setup();
  const a = submit('a', { netMode: NetMode.SYMMETRIC, relay: ALL });
  const b = submit('b', { netMode: NetMode.SYMMETRIC, relay: RelayVia.UDP });
  t.equal(b.state, MatchState.MATCHED, 'matched at once, no open host needed');
  t.same(a.party!.paths.filter((p) => p !== 0), [RELAY], 'the other member is relayed to the host');
  t.equal(a.party!.host, 0, 'equals: the earliest hosts');
  t.same(a.party!.paths, [0, RELAY]);

  const s = setup();
  const p = s.submit('p', { netMode: NetMode.SYMMETRIC, maxWaitS: 30 });
  const q = s.submit('q', { netMode: NetMode.SYMMETRIC, maxWaitS: 30, relay: 0 });
  const x = s.submit('x', { netMode: NetMode.PORT_RESTRICTED, maxWaitS: 30, mediaId: 'go' });
  t.equal(q.state, MatchState.WAITING, 'no relay on either side: no path');
  s.advance(30_000);
  s.engine.tick();
  t.equal(p.state, MatchState.NO_MATCH);
  t.ok(p.noPath && q.noPath, 'both told why: a partner was waiting but could not be reached');
  t.equal(x.state, MatchState.NO_MATCH);
  t.notOk(x.noPath, 'alone in its media: no partner, not a path problem');
  advance(0);
  t.equal(engine.waiting, 0);
});

t.test('relays: one side with a relay is enough when the other sends UDP', async (t) => {
  const { submit } = setup();
  const a = submit('a', { netMode: NetMode.SYMMETRIC });
  const b = submit('b', { netMode: NetMode.PORT_RESTRICTED, relay: RelayVia.TCP });
  t.equal(b.state, MatchState.MATCHED);
  t.same(a.party!.paths, [RELAY, 0], 'the port-restricted one hosts (more reachable), the symmetric one is relayed');
  // A udp-blocked terminal needs a partner that sends UDP, or one with a relay too.
  const s = setup();
  const blocked = s.submit('blocked', { netMode: NetMode.UDP_BLOCKED, relay: RelayVia.TCP });
  const o = s.submit('o', { netMode: NetMode.OPEN });
  t.equal(o.state, MatchState.MATCHED, 'udp-blocked with a TCP relay meets an open terminal');
  t.equal(s.hostOf(blocked), 'o', 'the open terminal hosts: equal relayed count, more reachable');
  t.same(blocked.party!.paths, [RELAY, 0]);
});

t.test('relays: host preference: direct to everyone first, then fewest relayed, then most reachable', async (t) => {
  /** A party of four: each member's name, mode and relay mask; returns the last request. */
  const four = (members: [string, number, number][]): { last: MatchRequest<string>; hostOf: (r: MatchRequest<string>) => string } => {
    const s = setup();
    let last: MatchRequest<string> | undefined;
    for (const [name, netMode, relay] of members) last = s.submit(name, { netMode, minParty: 4, maxParty: 4, relay });
    return { last: last!, hostOf: s.hostOf };
  };
  const { SYMMETRIC: S, PORT_RESTRICTED: P, RESTRICTED: R, UDP_BLOCKED: B } = NetMode;
  // s1, s2 symmetric with relays, pr port-restricted, r restricted: r reaches all three directly
  // and hosts with nobody relayed, although a party around a relay could be formed too.
  const u = four([['s1', S, ALL], ['s2', S, ALL], ['pr', P, ALL], ['r', R, ALL]]);
  const r = u.last;
  t.equal(r.state, MatchState.MATCHED);
  t.equal(u.hostOf(r), 'r', 'everyone reaches r directly');
  t.notOk(r.party!.paths.includes(RELAY), 'nobody relayed');

  // No one reaches anyone directly: s1, s2, s3 symmetric, pr port-restricted, all with relays.
  // Every host has the three others relayed; on a tie the most reachable hosts: pr.
  const v = four([['s1', S, ALL], ['s2', S, ALL], ['s3', S, ALL], ['pr', P, ALL]]);
  const pr = v.last;
  t.equal(pr.state, MatchState.MATCHED);
  t.equal(v.hostOf(pr), 'pr', 'tie on relayed members: the most reachable hosts');

  // b udp-blocked (TCP relay), s1 symmetric (relay), s2 symmetric (no relay), r restricted: host
  // r has only b relayed (it reaches s1 and s2 directly); host s1 or s2 would have the other
  // symmetric one and b relayed, host b all three. Fewest relayed: r.
  const w = four([['b', B, RelayVia.TCP], ['s1', S, ALL], ['s2', S, 0], ['r', R, 0]]);
  const rr = w.last;
  t.equal(rr.state, MatchState.MATCHED);
  t.equal(w.hostOf(rr), 'r');
  t.same(rr.party!.members.map((m, i) => [m.contact, rr.party!.paths[i]]), [['b', RELAY], ['s1', DIRECT], ['s2', DIRECT], ['r', 0]]);
});

t.test('relays: a direct partner is preferred to a relayed one for a party of the same size', async (t) => {
  // The anchor accepts level 10 exactly at first; both candidates (level 12) become acceptable
  // at the same tolerance step, so they compete in one party build: the relayed one is older and
  // fits as well, the direct one is taken.
  const { submit, engine, advance, names } = setup();
  const anchor = submit('anchor', { netMode: NetMode.SYMMETRIC, relay: ALL, attrs: { side: 'a' }, requirements: [eq('side', 'b'), range('level', 10, 10, false)] });
  submit('rel', { netMode: NetMode.SYMMETRIC, relay: ALL, attrs: { side: 'b', level: 12 }, requirements: [eq('side', 'a')] });
  submit('dir', { netMode: NetMode.OPEN, attrs: { side: 'b', level: 12 }, requirements: [eq('side', 'a')] });
  t.equal(anchor.state, MatchState.WAITING, 'level 12 is outside 10..10');
  advance(10_000);
  engine.tick();
  t.equal(anchor.state, MatchState.MATCHED);
  t.same(names(anchor), ['anchor', 'dir'], 'the direct partner, although the relayed one waited longer');
  t.same(anchor.party!.paths, [DIRECT, 0]);
});

t.test('relays: a shared observed IP (natKey) labels a direct path LAN, and adds no path', async (t) => {
  const { submit } = setup();
  const a = submit('a', { netMode: NetMode.PORT_RESTRICTED, natKey: '192.0.2.7' });
  submit('b', { netMode: NetMode.RESTRICTED, natKey: '192.0.2.7' });
  t.same(a.party!.paths, [MatchPath.LAN, 0], 'b hosts (more reachable), a reaches it on the LAN');
  const s = setup();
  s.submit('c', { netMode: NetMode.SYMMETRIC, natKey: '192.0.2.7' });
  t.equal(s.submit('d', { netMode: NetMode.SYMMETRIC, natKey: '192.0.2.7' }).state, MatchState.WAITING, 'a carrier-grade NAT shares one IP among networks: no path');
  const u = setup();
  const e = u.submit('e', { netMode: NetMode.SYMMETRIC, natKey: '192.0.2.7', relay: ALL });
  u.submit('f', { netMode: NetMode.SYMMETRIC, natKey: '192.0.2.7' });
  t.same(e.party!.paths, [0, RELAY], 'relayed, not LAN');
});
