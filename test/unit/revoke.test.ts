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

t.test('gateHandlers: the shared refusal list is asked at most once per interval per terminal', async (t) => {
  const { gateHandlers } = await import('../../src/net/ended.js');
  let now = 1_000_000;
  const ended = new EndedSessions(100, () => now);
  const asked: string[] = [];
  let revoked = false;
  const shared = {
    intervalMs: 2000,
    now: () => now,
    lookup: async (hex: string) => {
      asked.push(hex);
      return revoked ? { code: ErrorCode.REVOKED, message: 'device revoked', untilMs: now + 60_000 } : undefined;
    },
  };
  let ran = 0;
  const handlers = gateHandlers({ QUERY_ADDR: () => { ran++; return null; } } as never, ended, shared) as unknown as Record<string, (ctx: unknown) => unknown>;
  const ctx = { session: { sidHex: 's1', locatorHex: 'aa' } };
  await handlers['QUERY_ADDR']!(ctx);
  t.same(asked, ['aa'], 'asked on the first message');
  t.equal(ran, 1, 'and run');
  revoked = true;
  await handlers['QUERY_ADDR']!(ctx);
  t.same(asked, ['aa'], 'not asked again within the interval');
  t.equal(ran, 2);
  now += 2000;
  const r = await handlers['QUERY_ADDR']!(ctx);
  t.same(asked, ['aa', 'aa'], 'asked again after the interval');
  t.match(r, { error: ErrorCode.REVOKED }, 'the revocation found there refuses the message');
  t.equal(ran, 2, 'not run');
  t.match(handlers['QUERY_ADDR']!(ctx), { error: ErrorCode.REVOKED }, 'and every later one, without asking (ended locally now)');
  t.same(asked, ['aa', 'aa']);
});

t.test('gateHandlers: a message of everyTime (REGISTER) asks each time, once, and fails with the lookup', async (t) => {
  const { gateHandlers } = await import('../../src/net/ended.js');
  const now = 1_000_000;
  const ended = new EndedSessions(100, () => now);
  const asked: string[] = [];
  let revoked = false;
  let down = false;
  const shared = {
    intervalMs: 2000,
    now: () => now,
    everyTime: new Set(['REGISTER']),
    lookup: async (hex: string) => {
      asked.push(hex);
      if (down) throw new Error('redis: no reply');
      return revoked ? { code: ErrorCode.REVOKED, message: 'device revoked', untilMs: now + 60_000 } : undefined;
    },
  };
  let ran = 0;
  const run = (): null => {
    ran++;
    return null;
  };
  const handlers = gateHandlers({ REGISTER: run, QUERY_ADDR: run } as never, ended, shared) as unknown as Record<string, (ctx: unknown) => unknown>;
  const ctx = { session: { sidHex: 's1', locatorHex: 'aa' } };
  await handlers['QUERY_ADDR']!(ctx);
  t.same(asked, ['aa'], 'the first message asks');
  await handlers['REGISTER']!(ctx);
  t.same(asked, ['aa', 'aa'], 'a REGISTER within the interval asks again');
  t.equal(ran, 2, 'both ran');
  await handlers['QUERY_ADDR']!(ctx);
  t.same(asked, ['aa', 'aa'], 'other messages still ask once per interval');
  down = true;
  await t.rejects(Promise.resolve(handlers['REGISTER']!(ctx)), /no reply/, "a REGISTER whose lookup failed fails (the server answers the store's error)");
  t.equal(ran, 3, 'and did not run');
  const mapped = gateHandlers({ REGISTER: run } as never, ended, { ...shared, failed: () => ({ error: ErrorCode.TRY_LATER, message: 'store unavailable', retryAfterMs: 50 }) }) as unknown as Record<string, (ctx: unknown) => unknown>;
  t.match(await mapped['REGISTER']!(ctx), { error: ErrorCode.TRY_LATER, retryAfterMs: 50 }, 'or is answered what `failed` makes of the error (locatord: TRY_LATER)');
  t.equal(ran, 3, 'and did not run');
  down = false;
  revoked = true;
  t.match(await handlers['REGISTER']!(ctx), { error: ErrorCode.REVOKED }, 'a revoked terminal cannot register again');
  t.equal(ran, 3);
});
