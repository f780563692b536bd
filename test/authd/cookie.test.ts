// Address-validation cookies, the load meter and the replay cache.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { CookieJar, LoadMeter } from '../../src/authd/cookie.js';
import { ReplayCache } from '../../src/authd/replay.js';
import { AUTH_REQUEST_SIZE } from '../../src/wire/constants.js';
import { ErrorCode } from '../../src/wire/errors.js';
import { authenticate, client, fixture, inProcess } from './fixtures/helpers.js';

t.test('CookieJar: bound to ip and port, valid for one to two rotation periods', async (t) => {
  let now = 1_000_000;
  const jar = new CookieJar({ now: () => now, rotationMs: 60_000 });
  const a = { ip: '192.0.2.1', port: 4000 };
  const c = jar.mint(a);
  t.equal(c.length, 16);
  t.ok(jar.check(c, a));
  t.notOk(jar.check(c, { ...a, port: 4001 }), 'other port');
  t.notOk(jar.check(c, { ...a, ip: '192.0.2.2' }), 'other ip');
  t.ok(jar.check(c, { ...a, ip: '::ffff:192.0.2.1' }), 'IPv4-mapped form of the same address');
  t.notOk(jar.check(randomBytes(16), a), 'forged');
  t.notOk(jar.check(c.subarray(0, 8), a), 'truncated');
  now += 60_000;
  t.ok(jar.check(c, a), 'still valid in the next period');
  now += 60_000;
  t.notOk(jar.check(c, a), 'expired after two periods');
  t.not(jar.mint(a).toString('hex'), c.toString('hex'), 'new secret, new cookie');
  t.notOk(new CookieJar({ now: () => now }).check(jar.mint(a), a), 'another process (a restart) does not know the secret');
});

t.test('LoadMeter: requests per second over a sliding second', async (t) => {
  let now = 10_000;
  const m = new LoadMeter(() => now);
  for (let i = 0; i < 50; i++) m.hit();
  t.equal(m.rate(), 50);
  now += 1500; // half of the previous second still counts
  t.equal(m.rate(), 25);
  now += 1000;
  t.equal(m.rate(), 0);
});

t.test('ReplayCache: replays refused until expiry; per-device overflow never lets a replay through nor touches another device', async (t) => {
  let now = 0;
  const r = new ReplayCache(8, () => now, 2);
  const n = (i: number): Buffer => Buffer.alloc(16, i);
  t.equal(r.check('A', n(1), 0, 100), 'fresh');
  t.equal(r.check('A', n(1), 0, 100), 'replay');
  t.equal(r.check('B', n(1), 0, 100), 'fresh', 'same nonce, other device');
  now = 101;
  t.equal(r.check('A', n(1), 0, 200), 'fresh', 'after expiry (its timestamp would be refused anyway)');
  // One device overflows its own entries with requests dated far ahead.
  now = 150;
  t.equal(r.check('C', n(2), 440, 800), 'fresh');
  t.equal(r.check('C', n(3), 445, 800), 'fresh');
  t.equal(r.check('C', n(4), 446, 800), 'fresh', 'its oldest entry is forgotten');
  t.ok(r.evictedEarly >= 1);
  t.equal(r.check('C', n(2), 440, 800), 'saturated', 'the forgotten one cannot be replayed');
  t.equal(r.check('C', n(5), 300, 800), 'saturated', 'nor anything of that device as old');
  t.equal(r.check('C', n(6), 447, 800), 'fresh', 'newer requests of it still served');
  t.equal(r.check('B', n(7), 150, 400), 'fresh', 'another device is not affected');
  t.equal(r.check('D', n(7), 150, 400), 'fresh', 'nor a new one');
  // Device records forced out of the cache leave their floor in a hashed slot: still no replay.
  for (let i = 0; i < 10; i++) r.check(`X${i}`, n(8), 150, 800);
  t.equal(r.check('C', n(3), 445, 800), 'saturated', 'a device forced out of the cache cannot have its requests replayed');
});

t.test('cookie round trip over UDP', async (t) => {
  const f = fixture(t, 1);
  let offsetMs = 0;
  const a = await inProcess(t, f, { cookieThreshold: 0, now: () => Date.now() + offsetMs });
  const c = await client(t);
  const d = f.devices[0]!;
  const first = await authenticate(c, a.port, { device: d, authd: f.authdKey });
  t.notOk(first.ok);
  if (first.ok) return;
  t.equal(first.code, ErrorCode.COOKIE_REQUIRED, 'threshold 0: cookie always required');
  t.equal(first.cookie?.length, 16, 'with a cookie');
  t.ok(first.reply.raw.length < AUTH_REQUEST_SIZE, `ERROR (${first.reply.raw.length} B) smaller than the request`);
  t.equal(a.metrics.get('signatures_total'), 0);
  const second = await authenticate(c, a.port, { device: d, authd: f.authdKey, cookie: first.cookie! });
  t.ok(second.ok, 'served with the cookie');

  const forged = await authenticate(c, a.port, { device: d, authd: f.authdKey, cookie: randomBytes(16) });
  t.equal(forged.ok ? 'granted' : forged.code, ErrorCode.COOKIE_REQUIRED, 'forged cookie refused');
  const c2 = await client(t);
  const elsewhere = await authenticate(c2, a.port, { device: d, authd: f.authdKey, cookie: first.cookie! });
  t.equal(elsewhere.ok ? 'granted' : elsewhere.code, ErrorCode.COOKIE_REQUIRED, "another source's cookie refused");

  offsetMs = 150_000; // two rotation periods later
  const expired = await authenticate(c, a.port, { device: d, authd: f.authdKey, cookie: first.cookie!, timeMs: Date.now() + offsetMs });
  t.equal(expired.ok ? 'granted' : expired.code, ErrorCode.COOKIE_REQUIRED, 'expired cookie refused');
  if (!expired.ok) {
    const fresh = await authenticate(c, a.port, { device: d, authd: f.authdKey, cookie: expired.cookie!, timeMs: Date.now() + offsetMs });
    t.ok(fresh.ok, 'the new cookie works');
  }
  t.equal(a.metrics.get('signatures_total'), 2, 'public-key work only for requests with a valid cookie');
  t.ok(a.lines.some((l) => l['code'] === 'COOKIE_REQUIRED'), 'logged');
});

t.test('cookie required only above the load threshold', async (t) => {
  const f = fixture(t, 1);
  const fixed = Date.now();
  const a = await inProcess(t, f, { cookieThreshold: 3, now: () => fixed });
  const c = await client(t);
  const d = f.devices[0]!;
  const codes: (number | string)[] = [];
  for (let i = 0; i < 5; i++) {
    const r = await authenticate(c, a.port, { device: d, authd: f.authdKey, timeMs: fixed });
    codes.push(r.ok ? 'ok' : r.code);
  }
  t.same(codes, ['ok', 'ok', 'ok', ErrorCode.COOKIE_REQUIRED, ErrorCode.COOKIE_REQUIRED]);
});
