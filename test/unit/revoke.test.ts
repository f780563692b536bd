// REVOKE signing and checking (src/wire/revoke.ts) and the ended-session table (net/ended.ts),
// on a fake clock: a good REVOKE verifies; an unknown kid, a bad signature, a moved request ID,
// a timeMs beyond the skew or a code other than REVOKED is refused with its code.
import t from 'tap';
import { EndedSessions } from '../../src/net/ended.js';
import { EXPIRED_PURGE_INTERVAL_MS as ENDED_PURGE_INTERVAL_MS } from '../../src/wire/expiring-cache.js';
import { ErrorCode } from '../../src/wire/errors.js';
import { newAuthdKey, privateKeyObject, publicKeyObject } from '../../src/wire/keys.js';
import { signRevoke, verifyRevoke } from '../../src/wire/revoke.js';

const k = newAuthdKey();
if (k.kind !== 'authd') throw new Error('keygen');
const key = privateKeyObject('Ed25519', k.sign);
const trusted = new Map([[k.kid, publicKeyObject('Ed25519', k.sign.public)]]);
const rid = Buffer.alloc(8, 1);
const now = 1_800_000_000_000;
const fields = { locatorId: Buffer.alloc(16, 7), code: ErrorCode.REVOKED, untilS: now / 1000 + 600, timeMs: now };

t.test('verifyRevoke', async (t) => {
  const body = signRevoke(rid, fields, k.kid, key);
  t.same(verifyRevoke(rid, body, trusted, now, 300_000), { ok: true });
  t.match(verifyRevoke(Buffer.alloc(8, 2), body, trusted, now, 300_000), { ok: false, code: ErrorCode.BAD_PROOF }, 'another request ID');
  t.match(verifyRevoke(rid, { ...body, untilS: body.untilS + 1 }, trusted, now, 300_000), { ok: false, code: ErrorCode.BAD_PROOF }, 'a changed field');
  t.match(verifyRevoke(rid, body, new Map(), now, 300_000), { ok: false, code: ErrorCode.BAD_PROOF }, 'untrusted kid');
  t.match(verifyRevoke(rid, body, trusted, now + 300_001, 300_000), { ok: false, code: ErrorCode.CLOCK_SKEW }, 'too old');
  const kicked = signRevoke(rid, { ...fields, code: ErrorCode.INTERNAL }, k.kid, key);
  t.match(verifyRevoke(rid, kicked, trusted, now, 300_000), { ok: false, code: ErrorCode.BAD_MESSAGE }, 'only REVOKED may be pushed');
});

t.test('EndedSessions', async (t) => {
  let clock = 1000;
  const e = new EndedSessions(10, () => clock);
  const s1 = { sidHex: 'a1', locatorHex: 'l1' };
  const s2 = { sidHex: 'a2', locatorHex: 'l2' };
  e.end(s1.sidHex, { code: ErrorCode.KICKED, message: 'kicked' }, 2000);
  t.equal(e.reason(s1)?.code, ErrorCode.KICKED);
  t.equal(e.reason(s2), undefined);
  e.endLocator('l2', { code: ErrorCode.REVOKED, message: 'revoked' }, 5000);
  t.equal(e.reason(s2)?.code, ErrorCode.REVOKED, 'every session of the locator');
  t.equal(e.reason({ sidHex: 'new', locatorHex: 'l2' })?.code, ErrorCode.REVOKED, 'also one opened later');
  clock = 2500;
  t.equal(e.reason(s1), undefined, 'a kick lasts until the ticket expires');
  t.equal(e.reason(s2)?.code, ErrorCode.REVOKED);
  clock = 5001;
  t.equal(e.reason(s2), undefined, 'the revocation ends with the last ticket');
});

t.test('EndedSessions: entries whose tickets expired leave the list (at most a purge interval later)', async (t) => {
  let clock = 1_000_000;
  const e = new EndedSessions(1000, () => clock);
  // Two days of hourly kicks and revocations, each for a ticket of an hour, never asked about again.
  for (let h = 0; h < 48; h++) {
    e.end(`s${h}`, { code: ErrorCode.KICKED, message: 'kicked' }, clock + 3_600_000);
    e.endLocator(`l${h}`, { code: ErrorCode.REVOKED, message: 'revoked' }, clock + 3_600_000);
    clock += 3_600_000;
  }
  t.ok(e.size <= 4, `only the last hour's entries are left (${e.size}; 96 before the purge)`);
  clock += ENDED_PURGE_INTERVAL_MS + 3_600_000;
  t.equal(e.reason({ sidHex: 'x', locatorHex: 'y' }), undefined);
  t.equal(e.size, 0, 'and none once every ticket expired: the list is empty again');
});

/** A gate over `names` (each counts its runs) with a shared refusal list on a fake clock: what it asked, and switches for revoked / down. */
async function sharedGate(names: string[], everyTime?: string[]) {
  const { gateHandlers } = await import('../../src/net/ended.js');
  const f = { now: 1_000_000, asked: [] as string[], revoked: false, down: false, ran: 0 };
  const ended = new EndedSessions(100, () => f.now);
  const shared = {
    intervalMs: 2000,
    now: () => f.now,
    ...(everyTime ? { everyTime: new Set(everyTime) } : {}),
    lookup: async (hex: string) => {
      f.asked.push(hex);
      if (f.down) throw new Error('redis: no reply');
      return f.revoked ? { code: ErrorCode.REVOKED, message: 'device revoked', untilMs: f.now + 60_000 } : undefined;
    },
  };
  const run = (): null => {
    f.ran++;
    return null;
  };
  const handlers = gateHandlers(Object.fromEntries(names.map((n) => [n, run])) as never, ended, shared) as unknown as Record<string, (ctx: unknown) => unknown>;
  return { f, handlers, ctx: { session: { sidHex: 's1', locatorHex: 'aa' } } };
}

t.test('gateHandlers: the shared refusal list is asked at most once per interval per terminal', async (t) => {
  const { f, handlers, ctx } = await sharedGate(['QUERY_ADDR']);
  await handlers['QUERY_ADDR']!(ctx);
  t.same(f.asked, ['aa'], 'asked on the first message');
  t.equal(f.ran, 1, 'and run');
  f.revoked = true;
  await handlers['QUERY_ADDR']!(ctx);
  t.same(f.asked, ['aa'], 'not asked again within the interval');
  t.equal(f.ran, 2);
  f.now += 2000;
  const r = await handlers['QUERY_ADDR']!(ctx);
  t.same(f.asked, ['aa', 'aa'], 'asked again after the interval');
  t.match(r, { error: ErrorCode.REVOKED }, 'the revocation found there refuses the message');
  t.equal(f.ran, 2, 'not run');
  t.match(handlers['QUERY_ADDR']!(ctx), { error: ErrorCode.REVOKED }, 'and every later one, without asking (ended locally now)');
  t.same(f.asked, ['aa', 'aa']);
});

t.test('gateHandlers: a message of everyTime (REGISTER) asks each time, once, and fails with the lookup', async (t) => {
  const { f, handlers, ctx } = await sharedGate(['REGISTER', 'QUERY_ADDR'], ['REGISTER']);
  await handlers['QUERY_ADDR']!(ctx);
  t.same(f.asked, ['aa'], 'the first message asks');
  await handlers['REGISTER']!(ctx);
  t.same(f.asked, ['aa', 'aa'], 'a REGISTER within the interval asks again');
  t.equal(f.ran, 2, 'both ran');
  await handlers['QUERY_ADDR']!(ctx);
  t.same(f.asked, ['aa', 'aa'], 'other messages still ask once per interval');
  t.equal(f.ran, 3, 'and run');
  f.down = true;
  await t.rejects(Promise.resolve(handlers['REGISTER']!(ctx)), /no reply/, "a REGISTER whose lookup failed fails with the lookup's error (locatord's store-failure guard answers it)");
  t.equal(f.ran, 3, 'and did not run');
  f.now += 2000;
  await handlers['QUERY_ADDR']!(ctx);
  t.equal(f.ran, 4, 'another message whose lookup failed runs');
  f.down = false;
  f.revoked = true;
  t.match(await handlers['REGISTER']!(ctx), { error: ErrorCode.REVOKED }, 'a revoked terminal cannot register again');
  t.equal(f.ran, 4);
});

t.test("locatorHandlers: a store failure in the gate's own lookup is answered TRY_LATER, as one in a handler", async (t) => {
  const { locatorHandlers } = await import('../../src/locatord/handlers/index.js');
  const { RedisUnavailable } = await import('../../src/locatord/store/redis-url.js');
  const counted: unknown[] = [];
  const logged: string[] = [];
  const c = { metrics: { inc: (...a: unknown[]) => counted.push(a) }, logger: { refusal: (what: string) => logged.push(what) } };
  let gated: string[] = [];
  const handlers = locatorHandlers(c as never, (h) => {
    gated = Object.keys(h);
    // What gateHandlers does with REGISTER when Redis cannot say: it fails with the lookup's error.
    return { ...h, REGISTER: () => Promise.reject(new RedisUnavailable('redis: not connected', 20)), QUERY_ADDR: () => Promise.reject(new Error('a bug')) };
  }) as unknown as Record<string, (ctx: unknown) => unknown>;
  t.ok(gated.includes('REGISTER') && gated.includes('REVOKE') && gated.includes('PRESENCE_ACK'), 'the gate sees every handler');
  t.same(Object.keys(handlers).sort(), gated.sort(), 'and the guard every gated one');
  t.match(await handlers['REGISTER']!({}), { error: ErrorCode.TRY_LATER, retryAfterMs: 50 }, 'TRY_LATER, retry after at least 50 ms');
  t.same(logged, ['redis-error'], 'a log line');
  t.match(counted, [['redis_errors_total', { kind: 'unavailable' }]], 'a count');
  await t.rejects(Promise.resolve(handlers['QUERY_ADDR']!({})), /a bug/, 'any other error still fails the handler (the server logs it)');
});
