// The Agent library against in-process fakes of authd and locatord: the automatic sequence and
// its recovery paths that a real server produces only under duress (cookies, rate limits, lost
// sessions, probes, ticket renewal).
import t from 'tap';
import type { Test } from 'tap';
import type { AgentOptions } from '../../src/agent/agent.js';
import { Agent } from '../../src/agent/agent.js';
import { loadAuthdKey, loadDeviceIdentity } from '../../src/agent/identity.js';
import { AddressBook } from '../../src/agent/peers.js';
import { randomBytes } from 'node:crypto';
import { encodeDatagram } from '../../src/wire/envelope.js';
import { ErrorCode } from '../../src/wire/errors.js';
import type { FakeAuthd, FakeLocatord, Fixture } from './fakes.js';
import { fakeAuthd, fakeLocatord, fixture, until } from './fakes.js';
import { trackUdpSockets } from '../helpers/sockets.js';

interface Env {
  authd: FakeAuthd;
  loc: FakeLocatord;
  fx: Fixture;
  logs: string[];
  make(extra?: Partial<AgentOptions>, fx?: Fixture): Agent;
}

async function env(t: Test, o: { ticketLifetimeS?: number; refreshS?: number } = {}): Promise<Env> {
  const authd = await fakeAuthd(o.ticketLifetimeS !== undefined ? { ticketLifetimeS: o.ticketLifetimeS } : {});
  const loc = await fakeLocatord(authd, { refreshS: o.refreshS ?? 1, ttlS: 5 });
  authd.locatordAddr = loc.addr;
  const fx = fixture(authd);
  const logs: string[] = [];
  const agents: Agent[] = [];
  t.teardown(async () => {
    for (const a of agents) await a.stop({ unregister: false });
    await loc.close();
    await authd.close();
    fx.cleanup();
  });
  return {
    authd, loc, fx, logs,
    make(extra = {}, f = fx) {
      const id = loadDeviceIdentity(f.identityPath);
      const key = loadAuthdKey(f.authdKeyPath);
      if (!id.ok || !key.ok) throw new Error('fixture unreadable');
      const a = new Agent({
        identity: id.value, authd: authd.addr, authdKey: key.value, reflector: loc.reflector,
        retransmitMs: 100, backoffMinMs: 50, backoffMaxMs: 400, interfacePollMs: 200,
        log: (level, msg, fields) => logs.push(JSON.stringify({ level, msg, ...fields })),
        ...extra,
      });
      agents.push(a);
      return a;
    },
  };
}

t.test('registers, refreshes at the granted interval, is classified open on loopback', async (t) => {
  const e = await env(t);
  const a = e.make();
  const states: string[] = [];
  a.on('state', (s) => states.push(s));
  await a.start();
  await until(() => a.isRegistered, 5000, 'registered');
  const locHex = e.authd.locatorIdOf(e.fx.device.deviceId).toString('hex');
  t.equal(a.locatorIdHex, locHex, 'locator ID from the grant');
  t.ok(e.loc.table.has(locHex), 'locatord has the registration');
  t.same(e.loc.table.get(locHex)!.addr, { ip: '127.0.0.1', port: a.localPort }, 'registered address is the socket');
  await until(() => (e.loc.counts['REFRESH'] ?? 0) >= 2, 5000, 'two refreshes');
  await until(() => a.status().netMode === 'open', 5000, 'classified');
  await until(() => e.loc.table.get(locHex)!.netMode === 1, 5000, 'mode reported to locatord');
  const s = a.status();
  t.equal(s.state, 'registered');
  t.equal(s.observed, `127.0.0.1:${a.localPort}`);
  t.ok(s.nextRefreshAt && s.ticketExpiresAt && s.ticketRenewAt, 'timers in status');
  t.ok(states.includes('authenticating') && states.includes('registered'), 'went through the states');
  t.notOk(e.logs.join('\n').includes(e.fx.device.deviceId), 'device ID never logged');
  await a.stop();
  t.notOk(e.loc.table.has(locHex), 'unregistered on stop');
  t.equal(a.state, 'stopped');
});

t.test('COOKIE_REQUIRED is answered with the cookie', async (t) => {
  const e = await env(t);
  e.authd.requireCookie = true;
  const a = e.make();
  await a.start();
  await until(() => a.isRegistered, 5000, 'registered');
  t.equal(e.authd.requests, 2, 'one refused, one with the cookie');
});

t.test('RATE_LIMITED waits retryAfterMs, then succeeds', async (t) => {
  const e = await env(t);
  e.authd.refuseNext = { code: ErrorCode.RATE_LIMITED, count: 1, retryAfterMs: 300 };
  const a = e.make();
  const problems: string[] = [];
  a.on('problem', (_s, err) => problems.push(err));
  const started = Date.now();
  await a.start();
  await until(() => a.isRegistered, 5000, 'registered');
  t.ok(Date.now() - started >= 300, 'waited at least retryAfterMs');
  t.match(problems[0], /RATE_LIMITED/);
});

t.test('NO_SESSION (server lost its sessions) leads to an immediate re-register', async (t) => {
  const e = await env(t);
  const a = e.make();
  await a.start();
  await until(() => a.isRegistered, 5000, 'registered');
  const regs = e.loc.counts['REGISTER'] ?? 0;
  e.loc.dropSessions();
  e.loc.table.clear();
  await until(() => (e.loc.counts['REGISTER'] ?? 0) > regs && a.isRegistered, 5000, 're-registered');
  t.equal(e.loc.table.size, 1, 'registered again');
});

t.test('unknown device: refused, retried slowly, nothing logged that names it', async (t) => {
  const e = await env(t);
  e.authd.devices.clear();
  const a = e.make();
  const problems: string[] = [];
  a.on('problem', (_s, err) => problems.push(err));
  await a.start();
  await until(() => problems.length > 0, 5000, 'refusal');
  t.match(problems[0], /UNKNOWN_DEVICE/);
  t.equal(a.state, 'retrying');
  t.ok(a.status().retryAt, 'retry scheduled');
  t.notOk(e.logs.join('\n').includes(e.fx.device.deviceId), 'device ID not in logs');
});

t.test('answers PROBE with PROBE_ACK, also a retransmitted PROBE', async (t) => {
  const e = await env(t, { refreshS: 30 });
  const a = e.make();
  await a.start();
  await until(() => a.isRegistered, 5000, 'registered');
  t.ok(await e.loc.probe(a.locatorIdHex!), 'PROBE_ACK received');
  t.equal(a.status().counters.probesAnswered, 1);
  t.ok(await e.loc.probe(a.locatorIdHex!), 'second probe answered');
  // A PROBE that does not verify (wrong MAC) is not answered.
  const sid = Buffer.from(e.loc.table.get(a.locatorIdHex!)!.sid, 'hex');
  const forged = encodeDatagram('PROBE', randomBytes(8), {}, { sid, seq: 1000 });
  randomBytes(16).copy(forged, forged.length - 16);
  const acks = e.loc.counts['PROBE_ACK'];
  e.loc.sendRaw(forged, { ip: '127.0.0.1', port: a.localPort! });
  t.ok(await e.loc.probe(a.locatorIdHex!), 'a later genuine probe is answered');
  t.equal(e.loc.counts['PROBE_ACK'], acks! + 1, 'only the genuine one');
  t.equal(a.status().counters.probesAnswered, 3);
});

t.test('ticket renewed before expiry and re-registered with the new ticket', async (t) => {
  const e = await env(t, { ticketLifetimeS: 3 });
  const a = e.make();
  await a.start();
  await until(() => a.isRegistered, 5000, 'registered');
  const auths = e.authd.requests;
  await until(() => e.authd.requests > auths && (e.loc.counts['REGISTER'] ?? 0) >= 2, 8000, 'renewal');
  t.ok(a.isRegistered, 'still registered');
  t.ok(a.status().counters.authentications >= 2);
});

t.test('authd unreachable at start: backs off and recovers by itself', async (t) => {
  const e = await env(t);
  e.authd.refuseNext = { code: ErrorCode.TRY_LATER, count: 3 };
  const a = e.make();
  const problems: string[] = [];
  a.on('problem', (step, err) => problems.push(`${step}: ${err}`));
  await a.start();
  await until(() => a.isRegistered, 8000, 'registered');
  // Exactly the three refusals; on a loaded machine a step may also time out once (a
  // retransmission schedule running out is a problem too), which is not what this test is about.
  const refusals = problems.filter((p) => p.startsWith('auth') && /TRY_LATER/.test(p));
  t.equal(refusals.length, 3, `three TRY_LATER refusals, then success (${problems.join('; ')})`);
  t.equal(e.authd.refuseNext?.count, 0, 'every refusal was spent');
});

t.test('lookup, online and groups by ID and by nickname', async (t) => {
  const e = await env(t);
  const fx2 = fixture(e.authd, 'two');
  const fx3 = fixture(e.authd, 'three');
  t.teardown(() => { fx2.cleanup(); fx3.cleanup(); });
  const book = new AddressBook(`${e.fx.dir}/peers.json`);
  const a = e.make({ peers: book });
  const b = e.make({ nickname: 'bob' }, fx2);
  await Promise.all([a.start(), b.start()]);
  await until(() => a.isRegistered && b.isRegistered, 5000, 'both registered');
  book.add('bob', b.locatorIdHex!);
  const absent = e.authd.locatorIdOf('nobody').toString('hex');
  const third = e.authd.locatorIdOf(fx3.device.deviceId).toString('hex');
  const r = await a.lookup(['bob', b.locatorIdHex!, absent, third]);
  t.equal(r.length, 4, 'paged answer joined');
  t.equal(r[0]!.online, true);
  t.equal(r[0]!.addr, `127.0.0.1:${b.localPort}`);
  t.equal(r[0]!.nickname, 'bob');
  t.same(r[0]!.names, ['bob']);
  t.equal(r[1]!.id, b.locatorIdHex);
  t.equal(r[2]!.online, false);
  const on = await a.online(['bob', absent]);
  t.same(on.map((x) => x.online), [true, false]);
  await t.rejects(a.lookup(['carol']), { code: 'UNKNOWN_TARGET' });
  const g = await a.groupCreate('friends');
  book.add('friends', g.groupId, 'group');
  await b.groupJoin(g.groupId);
  const m = await a.groupMembers('friends');
  t.equal(m.total, 2);
  t.equal(m.name, 'friends');
  t.ok(m.members.every((x) => x.online));
  await b.groupLeave(g.groupId);
  t.equal((await a.groupMembers('friends')).total, 1);
  await t.rejects(b.groupMembers(g.groupId), { code: 'FORBIDDEN' });
  await b.stop();
  const after = await a.online(['bob']);
  t.equal(after[0]!.online, false, 'offline after stop (unregistered)');
});

t.test('unreachable reflector: mode unknown, registration not held up', async (t) => {
  const e = await env(t);
  e.loc.reflectorSilent = true;
  const a = e.make({ reclassifyMs: 60_000 });
  await a.start();
  await until(() => a.isRegistered, 5000, 'registered');
  await until(() => e.loc.counts['REFLECT'] !== undefined && a.status().netModeReason !== null, 8000, 'classification done');
  t.equal(a.status().netMode, 'unknown', 'locatord answered, so not udp-blocked');
});

t.test('a slow classification holds up no REFRESH: the registration outlives it', async (t) => {
  // A silent reflector makes the classification run to its bound (classificationBoundMs: 24 T,
  // 9.6 s at T = 400 ms), longer than the registration's TTL (5 s; refresh every 1 s). The
  // REFRESHes must go at their interval meanwhile, not after the verdict: one that waited for it
  // found the registration expired.
  const e = await env(t);
  e.loc.reflectorSilent = true;
  const a = e.make({ reclassifyMs: 60_000, retransmitMs: 400 });
  let refreshesAtVerdict: number | undefined;
  a.on('netmode', () => (refreshesAtVerdict ??= e.loc.counts['REFRESH'] ?? 0));
  await a.start();
  await until(() => refreshesAtVerdict !== undefined, 20_000, 'the classification verdict');
  t.ok(refreshesAtVerdict! >= 1, `${refreshesAtVerdict} REFRESHes before the classification ended`);
  t.notOk(e.logs.some((l) => l.includes('registration expired without a refresh')), 'the registration never expired');
  t.equal(a.status().counters.registrations, 1, 'registered once');
});

t.test('stop() closes a classification in progress: no test socket or timer outlives it', async (t) => {
  // A silent reflector keeps the classification waiting for answers (up to its bound, 24 s at
  // T = 1 s: far longer than registering on loopback takes, even under load). stop() must end
  // it: a host that stops its agent and has nothing else to do exits then, not when the
  // abandoned tests time out.
  const e = await env(t);
  e.loc.reflectorSilent = true;
  const sockets = trackUdpSockets(t);
  const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  const timersBefore = timers();
  const a = e.make({ reclassifyMs: 60_000, retransmitMs: 1000 });
  await a.start();
  await until(() => a.isRegistered && sockets.opened >= 3, 10_000, 'registered, with the two test sockets open');
  const classifying = a.status();
  t.equal(classifying.netModeReason, null, 'still classifying: no verdict yet');
  await a.stop({ unregister: false });
  t.same(sockets.open(), [], `all ${sockets.opened} sockets the agent opened are closed when stop() resolves`);
  t.ok(timers() <= timersBefore, `no timer left behind (${timers()} active, ${timersBefore} before start)`);
  const after = a.status();
  t.same([after.netMode, after.netModeReason], [classifying.netMode, classifying.netModeReason], 'the abandoned tests made no verdict');
});

t.test('stop() ends a wait for authd: reauthenticate() resolves false, its timer goes', async (t) => {
  // The relay's fresh credentials and a service's missing ticket wait for a new grant with a
  // bound (reauthenticate(reason, timeoutMs)); an agent stopped meanwhile will never get one.
  // The wait must end with the stop, not keep the process alive until its bound.
  const e = await env(t);
  const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  const timersBefore = timers();
  const a = e.make({ reflector: null });
  await a.start();
  await until(() => a.isRegistered, 10_000, 'registered');
  e.authd.silent = true;
  const requests = e.authd.requests;
  let outcome: boolean | undefined;
  const waiting = a.reauthenticate('test', 60_000).then((ok) => (outcome = ok));
  await until(() => e.authd.requests > requests, 10_000, 'the new AUTH_REQUEST sent (authd does not answer)');
  t.equal(outcome, undefined, 'still waiting for authd');
  await a.stop({ unregister: false });
  t.equal(outcome, false, 'the wait ended with the stop: no grant');
  t.ok(timers() <= timersBefore, `no timer left behind (${timers()} active, ${timersBefore} before start)`);
  await waiting;
});

t.test('a query in flight when stop() is called: NOT_RUNNING, not NO_ANSWER', async (t) => {
  // devloc-agent(3): NO_ANSWER is a server's silence after every retransmission; an agent that
  // stops under a query ends it itself, which the caller must be able to tell apart.
  const e = await env(t);
  const a = e.make({ reflector: null, retransmitMs: 1000 });
  await a.start();
  await until(() => a.isRegistered, 10_000, 'registered');
  e.loc.unansweredQueries = true;
  const before = e.loc.counts['QUERY_ADDR'] ?? 0;
  const lookup = a.lookup([a.locatorIdHex!]).then(() => null, (err: Error & { code?: string }) => err);
  await until(() => (e.loc.counts['QUERY_ADDR'] ?? 0) > before, 10_000, 'the QUERY_ADDR sent (locatord does not answer)');
  await a.stop({ unregister: false });
  const err = await lookup;
  t.equal(err?.code, 'NOT_RUNNING', `rejected as stopped: ${err?.message}`);
  t.match(err?.message, /QUERY_ADDR: the agent stopped before an answer/);
});

t.test('stop() ends the waits of calls made before the agent could serve them: NOT_RUNNING at once, no timer left', async (t) => {
  // A lookup waits for the registration (10 s), a match submit for the network classification
  // (24 s at T = 1 s). An agent stopped meanwhile will serve neither: the calls must end with
  // the stop, and their waits' timers must not keep the process alive until their bounds.
  const e = await env(t);
  const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  const timersBefore = timers();
  const outcome = (p: Promise<unknown>): Promise<{ code?: string; message?: string } | null> => p.then(() => null, (err: Error & { code?: string }) => err);

  await t.test('a lookup waiting for the registration (authd does not answer)', async (t) => {
    e.authd.silent = true;
    const a = e.make({ reflector: null });
    await a.start();
    const requests = e.authd.requests;
    const lookup = outcome(a.lookup(['00'.repeat(16)]));
    await until(() => e.authd.requests > requests, 10_000, 'authenticating');
    await a.stop({ unregister: false });
    const err = await lookup;
    t.equal(err?.code, 'NOT_RUNNING', `rejected as stopped: ${err?.message}`);
    t.match(err?.message, /stopped before it registered/);
    t.ok(timers() <= timersBefore, `no timer left behind (${timers()} active, ${timersBefore} before)`);
    e.authd.silent = false;
  });

  await t.test('a match submit waiting for the classification (the reflector does not answer)', async (t) => {
    e.loc.reflectorSilent = true;
    const a = e.make({ retransmitMs: 1000, match: { matchd: e.loc.addr } });
    await a.start();
    await until(() => a.isRegistered, 10_000, 'registered, still classifying');
    const submit = outcome(a.match.submit({ mediaId: 'go' }));
    await a.stop({ unregister: false });
    const err = await submit;
    t.equal(err?.code, 'NOT_RUNNING', `rejected as stopped: ${err?.message}`);
    t.match(err?.message, /stopped before the submit was sent/);
    t.ok(timers() <= timersBefore, `no timer left behind (${timers()} active, ${timersBefore} before)`);
  });
});
