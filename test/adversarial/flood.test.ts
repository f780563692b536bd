// A spoofed-source flood at the real devloc-authd: sealed, genuinely valid AUTH_REQUESTs (from an
// enrolled device, fresh nonces: the most expensive thing to answer) from 64 sources across
// 127/8, none of which ever echoes a cookie. Above --cookie-threshold authd must answer them with
// COOKIE_REQUIRED (no public-key work, no ticket), a legitimate terminal must still get through
// by echoing its cookie, and authd's CPU time per flood datagram (from /proc/<pid>/stat, a ratio,
// not a wall-clock timing) must stay well below its CPU time per fully served request, which is
// the X25519 + Ed25519 verify + Ed25519 sign work the flood would otherwise cost.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { UdpClient } from '../../src/net/client.js';
import { buildAuthRequest } from '../../src/wire/auth.js';
import { decodeDatagram } from '../../src/wire/envelope.js';
import { ErrorCode } from '../../src/wire/errors.js';
import { generatePair, privateKeyObject } from '../../src/wire/keys.js';
import type { DeviceKeyFile } from './fixtures/stack.js';
import { adversarialStack, codeOf, decoded, LOCATOR, RawSocket } from './fixtures/stack.js';

// Low, so that the flood stays above it however slowly a loaded machine lets it run (at 50/s a
// one-second stall between two rounds let a round through uncookied).
const COOKIE_THRESHOLD = 2;
const SOURCES = 64;
// --device-rate 0: the reference authenticates one device hundreds of times; this test measures
// the flood's cost, not the per-device limit (authd-lockout.test.ts does).
const s = await adversarialStack(t, { authdArgs: ['--cookie-threshold', String(COOKIE_THRESHOLD), '--rate', '0', '--device-rate', '0'] });
const pid = s.procs.authd.proc.pid!;

/** authd's CPU time so far (user + system), in clock ticks. */
function cpuTicks(): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14 and 15)
}

const flooder = s.enroll('flooder');
function request(device: DeviceKeyFile, cookie?: Uint8Array): { rid: Buffer; datagram: Buffer } {
  const rid = UdpClient.newRequestId();
  const b = buildAuthRequest({
    rid, deviceId: device.deviceId, deviceKey: privateKeyObject('Ed25519', device.sign), authdKid: Buffer.from(s.authdKey.kid, 'hex'),
    authdSealPublic: s.authdKey.seal.public, audiences: [LOCATOR], cnf: generatePair('x25519').public, timeMs: Date.now(), ...(cookie ? { cookie } : {}),
  });
  return { rid, datagram: b.datagram };
}

const sources = await Promise.all(Array.from({ length: SOURCES }, (_, i) => RawSocket.open(t, `127.0.${1 + (i >> 5)}.${10 + (i & 31)}`)));
const cookies = new Map<RawSocket, Uint8Array>();

interface Tally { sent: number; answered: number; cookie: number; granted: number; other: number[] }
/** `rounds` rounds of one datagram per source (built beforehand), each round waited for. */
async function flood(batches: { rid: Buffer; datagram: Buffer }[][], tally: Tally): Promise<void> {
  for (const batch of batches) {
    const answers = await Promise.all(batch.map((req, i) => sources[i]!.ask(s.addr.authd, req.datagram, req.rid, 3000)));
    tally.sent += batch.length;
    answers.forEach((a, i) => {
      if (!a) return;
      tally.answered++;
      const d = decodeDatagram(a);
      if (d.ok && d.msg.name === 'AUTH_RESPONSE') tally.granted++;
      else if (d.ok && codeOf(d.msg) === ErrorCode.COOKIE_REQUIRED && d.msg.name === 'ERROR' && d.msg.body.cookie) {
        tally.cookie++;
        cookies.set(sources[i]!, d.msg.body.cookie);
      } else tally.other.push(d.ok ? codeOf(d.msg) : -2);
    });
  }
}
const build = (rounds: number, withCookie: boolean): { rid: Buffer; datagram: Buffer }[][] =>
  Array.from({ length: rounds }, () => sources.map((src) => request(flooder, withCookie ? cookies.get(src) : undefined)));
const tally = (): Tally => ({ sent: 0, answered: 0, cookie: 0, granted: 0, other: [] });

t.test('idle: no cookie needed', async (t) => {
  const legit = await RawSocket.open(t);
  const req = request(s.enroll('early'));
  const a = await legit.ask(s.addr.authd, req.datagram, req.rid);
  t.equal(a && decoded(a).name, 'AUTH_RESPONSE', 'served at once below the threshold');
  t.equal(await s.metric('authd', 'cookies_sent_total'), 0);
});

t.test('spoofed-source flood: cookie round trip engaged, no public-key work, CPU bounded', async (t) => {
  // Warm-up (JIT, and the load meter crossing the threshold).
  const warm = tally();
  await flood(build(4, false), warm);
  t.ok(warm.cookie > 0, `the flood engaged the cookie (${warm.cookie} of ${warm.sent})`);

  const floodBatches = build(32, false);
  const m0 = await s.metrics('authd', ['datagrams_received_total', 'signatures_total', 'auth_ok_total', 'cookies_sent_total']);
  const device = s.enroll('legit');
  const legit = await RawSocket.open(t);
  const first = request(device);
  const c0 = cpuTicks();
  const started = performance.now();
  const measured = tally();
  await flood(floodBatches.slice(0, 15), measured);
  // Meanwhile a legitimate terminal: refused with a cookie, served when it echoes it. Sent right
  // behind a round of the flood (flood() sends its round before its first await), so authd's
  // load meter is above the threshold when it arrives however the machine is loaded.
  const [, r1] = await Promise.all([flood(floodBatches.slice(15, 16), measured), legit.ask(s.addr.authd, first.datagram, first.rid)]);
  const m1 = r1 ? decoded(r1) : null;
  t.equal(codeOf(m1), ErrorCode.COOKIE_REQUIRED, 'legitimate terminal: COOKIE_REQUIRED');
  const cookie = m1?.name === 'ERROR' ? m1.body.cookie : undefined;
  t.equal(cookie?.length, 16, 'with a cookie');
  t.ok(r1 && r1.length < first.datagram.length, 'the ERROR is smaller than the request');
  const second = request(device, cookie);
  const r2 = await legit.ask(s.addr.authd, second.datagram, second.rid);
  t.equal(r2 && decoded(r2).name, 'AUTH_RESPONSE', 'served once it echoes the cookie, flood or not');
  await flood(floodBatches.slice(16), measured);
  const c1 = cpuTicks();
  const floodSeconds = (performance.now() - started) / 1000;
  const m2 = await s.metrics('authd', ['datagrams_received_total', 'signatures_total', 'auth_ok_total', 'cookies_sent_total']);

  t.ok(measured.answered >= measured.sent * 0.98, `${measured.answered} of ${measured.sent} answered`);
  t.same(measured.other, [], 'no other answer');
  // The meter lets at most about threshold + 1 requests a second through uncookied (more only in
  // the second after a stall, when the estimate starts from nothing): 2,048 flood datagrams over
  // the run's seconds, so nearly all of them are cookied; a meter that stopped engaging grants
  // hundreds.
  const uncookiedBound = (Math.ceil(floodSeconds) + 1) * (COOKIE_THRESHOLD + 1);
  t.ok(measured.granted <= uncookiedBound, `${measured.cookie} COOKIE_REQUIRED, ${measured.granted} granted (at most ${uncookiedBound} in ${floodSeconds.toFixed(1)} s)`);
  t.equal(measured.cookie + measured.granted, measured.answered, 'every answer a cookie or a grant');
  const floodGrants = m2['auth_ok_total']! - m0['auth_ok_total']! - 1; // the legitimate one
  t.equal(floodGrants, measured.granted, 'grants only as answered');
  t.equal(m2['signatures_total']! - m0['signatures_total']!, measured.granted + 1, 'a signature only per grant');
  t.ok(m2['cookies_sent_total']! - m0['cookies_sent_total']! >= measured.cookie + 1, 'cookies_sent_total counts them');
  t.ok(s.refusals('authd', { code: 'COOKIE_REQUIRED' }).length > 0, 'logged (one line per second at most)');
  t.ok(s.refusals('authd', { code: 'COOKIE_REQUIRED' }).length < 20, 'and not one line per datagram');
  const floodDatagrams = m2['datagrams_received_total']! - m0['datagrams_received_total']!;
  const floodCpu = (c1 - c0) / floodDatagrams;

  // Reference: the same requests, each echoing its source's cookie, so every one is served.
  t.equal(cookies.size, SOURCES, 'every source holds a cookie from the flood');
  const fullBatches = build(12, true);
  const n0 = await s.metric('authd', 'datagrams_received_total');
  const d0 = cpuTicks();
  const full = tally();
  await flood(fullBatches, full);
  const d1 = cpuTicks();
  const fullDatagrams = (await s.metric('authd', 'datagrams_received_total')) - n0;
  t.ok(full.granted >= full.sent * 0.98, `reference: ${full.granted} of ${full.sent} served in full`);
  const fullCpu = (d1 - d0) / fullDatagrams;
  t.comment(`authd CPU per datagram: flood ${(floodCpu * 10).toFixed(3)} ms (${c1 - c0} ticks / ${floodDatagrams}), full ${(fullCpu * 10).toFixed(3)} ms (${d1 - d0} ticks / ${fullDatagrams}); ratio ${(floodCpu / fullCpu).toFixed(2)}`);
  t.ok(d1 - d0 >= 10, 'the reference is long enough to measure (10 ticks or more)');
  t.ok(floodCpu < 0.5 * fullCpu, `a flood datagram costs less than half a served request (ratio ${(floodCpu / fullCpu).toFixed(2)})`);
});

// Last: every refusal the daemons' handlers answered above is one devloc-protocol(7) lists.
t.test('every handler refusal answered is listed in devloc-protocol(7)', async (t) => {
  t.same(await s.undocumentedRefusals(), []);
});
