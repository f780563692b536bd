// devloc-authd --workers 2 (a real daemon: a primary and two worker processes on one UDP port):
// authentications succeed whichever worker takes each datagram (cookies minted by one are
// accepted by the other), a revocation committed by another process takes effect in every
// worker, and the per-device budget and the replay cache hold across workers (they live in the
// primary: src/authd/gate.ts). Each worker's log lines carry its index, which is how the test
// knows that both served.
import t from 'tap';
import type { Test } from 'tap';
import { AuthDb } from '../../src/authd/db.js';
import { ErrorCode } from '../../src/wire/errors.js';
import type { RunningDaemon } from '../helpers/daemon.js';
import { startDaemon } from '../helpers/daemon.js';
import type { AuthAttempt, AuthOutcome, AuthOptions, Fixture } from './fixtures/helpers.js';
import { buildRequest, client, fixture, send } from './fixtures/helpers.js';

/** One authentication as a terminal makes it: a fresh socket (a new source), the cookie round trip. */
async function authenticateFresh(t: Test, port: number, o: AuthOptions): Promise<AuthOutcome> {
  const c = await client(t);
  try {
    const first = await send(c, port, buildRequest(o));
    if (first.ok || first.code !== ErrorCode.COOKIE_REQUIRED || !first.cookie) return first;
    return await send(c, port, buildRequest({ ...o, cookie: first.cookie }));
  } finally {
    await c.close();
  }
}

const servedBy = (d: RunningDaemon, deviceId: string): Set<unknown> =>
  new Set(d.lines.filter((l) => (l['msg'] === 'authenticated' || l['msg'] === 'refused') && l['deviceId'] === deviceId).map((l) => l['worker']));

async function startWorkers(t: Test, f: Fixture, extra: string[] = []): Promise<{ d: RunningDaemon; port: number }> {
  const d = await startDaemon('authd/main.ts', [
    '--listen', '127.0.0.1', '--port', '0', '--key', f.authdKeyFile, '--state-dir', f.stateDir, '--workers', '2',
    '--rate', '0', '--log-level', 'debug', ...extra,
  ]);
  t.teardown(() => d.stop('SIGKILL'));
  // Both workers bound (the first "listening" line is one of them).
  await d.waitFor(() => new Set(d.lines.filter((l) => l['msg'] === 'listening').map((l) => l['worker'])).size === 2);
  return { d, port: Number(d.listening['port']) };
}

/** Authenticate `device` (each time from a new source) until both workers have answered it; every answer must be `want`. */
async function untilBothWorkers(t: Test, d: RunningDaemon, port: number, f: Fixture, device: number, want: 'ok' | number): Promise<void> {
  const dev = f.devices[device]!;
  let rounds = 0;
  // The kernel gives each datagram to one worker; concurrent requests spread them. Generous cap.
  while (servedBy(d, dev.deviceId).size < 2 && rounds < 100) {
    rounds++;
    const outcomes = await Promise.all(Array.from({ length: 4 }, () => authenticateFresh(t, port, { device: dev, authd: f.authdKey })));
    for (const r of outcomes) {
      if ((r.ok ? 'ok' : r.code) !== want) {
        t.fail(`device ${device}: ${r.ok ? 'granted' : `refused ${r.code} ${r.message ?? ''}`}, wanted ${want}`);
        return;
      }
    }
  }
  t.same([...servedBy(d, dev.deviceId)].sort(), [0, 1], `both workers answered device ${device} (${rounds} rounds of 4)`);
}

t.test('authd --workers 2: cookies, grants and revocation in every worker', async (t) => {
  const f = fixture(t, 3);
  const { d, port } = await startWorkers(t, f, ['--device-rate', '0']);
  t.ok(d.lines.some((l) => l['msg'] === 'workers started' && l['workers'] === 2), 'the primary forked two workers');
  // The default --cookie-threshold 0: every authentication is a cookie round trip, whose two
  // datagrams the kernel may give to different workers.
  await untilBothWorkers(t, d, port, f, 0, 'ok');

  // Revoked by another process: every worker refuses it at its next request.
  const admin = AuthDb.open(f.stateDir);
  admin.setRevoked(f.devices[1]!.deviceId, true);
  admin.close();
  await untilBothWorkers(t, d, port, f, 1, ErrorCode.REVOKED);
  // and the others are still served.
  const other = await authenticateFresh(t, port, { device: f.devices[2]!, authd: f.authdKey });
  t.ok(other.ok, 'another device still authenticates');
  t.equal(await d.stop(), 0, 'SIGTERM stops the primary and its workers');
});

t.test('authd --workers 2: one per-device budget and one replay cache', async (t) => {
  const f = fixture(t, 2);
  const { d, port } = await startWorkers(t, f, ['--device-rate', '2']);
  const dev = f.devices[0]!;
  const started = Date.now();
  // 16 authentications of one device at once, each from its own source: whichever workers take
  // them, the device's budget (burst 2) is spent once.
  const outcomes = await Promise.all(Array.from({ length: 16 }, () => authenticateFresh(t, port, { device: dev, authd: f.authdKey })));
  const granted = outcomes.filter((r) => r.ok).length;
  const limited = outcomes.filter((r) => !r.ok && r.code === ErrorCode.RATE_LIMITED).length;
  // 2 a minute refill while this runs: allow for the tokens earned meanwhile on a slow machine.
  const earned = Math.floor(((Date.now() - started) / 60_000) * 2);
  t.ok(granted >= 2 && granted <= 2 + earned, `${granted} granted (budget 2, ${earned} earned meanwhile)`);
  t.equal(granted + limited, 16, 'the others RATE_LIMITED');
  t.comment(`answered by workers ${[...servedBy(d, dev.deviceId)].join(', ')}`);

  // Replay: one request (with a valid cookie) sent from two sources. Whichever worker takes the
  // copy, it is refused; a retransmission from the first source is answered.
  const dev1 = f.devices[1]!;
  const c1 = await client(t);
  const c2 = await client(t);
  const first = await send(c1, port, buildRequest({ device: dev1, authd: f.authdKey }));
  t.equal(first.ok ? 'ok' : first.code, ErrorCode.COOKIE_REQUIRED);
  if (first.ok || !first.cookie) return;
  const attempt: AuthAttempt = buildRequest({ device: dev1, authd: f.authdKey, cookie: first.cookie });
  const a = await send(c1, port, attempt);
  t.ok(a.ok, 'granted');
  for (let i = 0; i < 6; i++) {
    const again = await send(c1, port, attempt);
    t.ok(again.ok, `the same request from the same source (a retransmission) is answered (${i})`);
  }
  // From another source: a worker that saw the request ID refuses it at once (the transport's
  // replay check); the other wants a cookie for the new source, and the same sealed request
  // (same rid, nonce and proof; the cookie is outside the seal) brought back with it is a
  // replay for the primary's cache. Either way: never a grant.
  let replayed = Buffer.from(attempt.datagram);
  let cookie = Buffer.from(first.cookie);
  let refused = 0;
  for (let i = 0; i < 40 && refused < 8; i++) {
    const r = await send(c2, port, { ...attempt, datagram: replayed });
    if (!r.ok && r.code === ErrorCode.COOKIE_REQUIRED && r.cookie) {
      const at = replayed.indexOf(cookie);
      t.ok(at > 0, 'cookie found in the request');
      replayed = Buffer.from(replayed);
      Buffer.from(r.cookie).copy(replayed, at);
      cookie = Buffer.from(r.cookie);
      continue;
    }
    t.equal(r.ok ? 'ok' : r.code, ErrorCode.REPLAY, `the copy from another source is refused (${i})`);
    refused++;
  }
  t.equal(refused, 8, 'eight copies refused');
  t.comment(`answered by workers ${[...servedBy(d, dev1.deviceId)].join(', ')}`);
});
