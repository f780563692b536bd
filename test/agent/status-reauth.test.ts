// Issue 19, item 7, against in-process fakes: what `devloc status` shows while authd does not
// answer (attempts and a last error from the first timeout, never a retry time in the past),
// and re-authentication on demand (SIGHUP, a missing ticket) that keeps the registration up.
import dgram from 'node:dgram';
import t from 'tap';
import type { Test } from 'tap';
import type { AgentOptions } from '../../src/agent/agent.js';
import { Agent } from '../../src/agent/agent.js';
import { loadAuthdKey, loadDeviceIdentity } from '../../src/agent/identity.js';
import type { AgentStatus } from '../../src/agent/types.js';
import { formatStatus } from '../../src/cli/commands/agentctl.js';
import { decodeDatagram } from '../../src/wire/envelope.js';
import type { Address } from '../../src/wire/addr.js';
import { fakeAuthd, fakeLocatord, fixture, until } from './fakes.js';

/** A UDP socket that reads AUTH_REQUESTs and never answers: authd unreachable, without ICMP. */
async function silentAuthd(t: Test): Promise<{ addr: Address; rids: string[]; onRequest?: () => void }> {
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((res) => sock.bind(0, '127.0.0.1', res));
  t.teardown(() => new Promise<void>((res) => sock.close(() => res())));
  const out: { addr: Address; rids: string[]; onRequest?: () => void } = { addr: { ip: '127.0.0.1', port: sock.address().port }, rids: [] };
  sock.on('message', (raw: Buffer) => {
    const d = decodeDatagram(raw);
    if (!d.ok || d.msg.name !== 'AUTH_REQUEST') return;
    out.rids.push(Buffer.from(d.msg.rid).toString('hex'));
    out.onRequest?.();
  });
  return out;
}

async function agentWith(
  t: Test, extra: Partial<AgentOptions>, authd?: Awaited<ReturnType<typeof fakeAuthd>>, onLog?: (line: Record<string, unknown>) => void,
): Promise<{ agent: Agent; logs: Record<string, unknown>[] }> {
  const fx = fixture(authd);
  const id = loadDeviceIdentity(fx.identityPath);
  // A real authd key file is needed even when authd is silent.
  const keyAuthd = authd ?? (await fakeAuthd());
  if (!authd) t.teardown(() => keyAuthd.close());
  if (!authd) {
    const f2 = fixture(keyAuthd);
    t.teardown(() => f2.cleanup());
    fx.authdKeyPath = f2.authdKeyPath;
  }
  const key = loadAuthdKey(fx.authdKeyPath);
  if (!id.ok || !key.ok) throw new Error('fixture unreadable');
  const logs: Record<string, unknown>[] = [];
  const agent = new Agent({
    identity: id.value, authd: keyAuthd.addr, authdKey: key.value, reflector: null,
    retransmitMs: 100, backoffMinMs: 50, backoffMaxMs: 400, interfacePollMs: 200,
    log: (level, msg, fields) => {
      logs.push({ level, msg, ...fields });
      onLog?.({ level, msg, ...fields });
    },
    ...extra,
  });
  t.teardown(async () => {
    await agent.stop({ unregister: false });
    fx.cleanup();
  });
  return { agent, logs };
}

t.test('authd unreachable: attempts and the last error from the first timeout', async (t) => {
  const silent = await silentAuthd(t);
  // The status is read when the first timeout is logged, so a slow machine cannot move it on.
  let first: AgentStatus | undefined;
  const { agent, logs } = await agentWith(t, { authd: silent.addr }, undefined, (l) => {
    if (l['msg'] === 'no answer yet, retransmitting') first ??= agent.status();
  });
  await agent.start();
  // The first timeout: the first retransmission.
  await until(() => first !== undefined, 20_000, 'a problem at the first timeout');
  const s = first!;
  t.equal(s.state, 'authenticating', 'still authenticating');
  t.equal(s.counters.failures, 0, 'the step has not failed yet');
  t.match(s.lastError, { step: 'auth', error: `no answer from authd 127.0.0.1:${silent.addr.port} yet` }, 'last error names authd and its address');
  t.ok(s.attempt && s.attempt.sent >= 2, `attempts counted (${s.attempt?.sent})`);
  t.match(s.attempt, { step: 'auth', to: `127.0.0.1:${silent.addr.port}` });
  t.equal(s.retryAt, null, 'no retry time while the attempt is under way');
  t.ok(logs.some((l) => l['msg'] === 'no answer yet, retransmitting' && l['step'] === 'auth'), 'logged at the first timeout');
  const text = formatStatus({ ...s, channels: [] });
  t.match(text, /in progress: +auth to 127\.0\.0\.1:\d+: \d+ sent since/, 'devloc status shows the attempts');
  t.match(text, /last error: +no answer from authd/, 'and the last error');

  // The whole schedule runs out, the step fails; once the retry starts, the retry time is gone.
  await until(() => agent.status().counters.failures >= 1, 30_000, 'the step to fail');
  const failedRid = silent.rids.at(-1);
  let retrying: AgentStatus | undefined;
  silent.onRequest = () => {
    if (silent.rids.at(-1) !== failedRid) retrying ??= agent.status();
  };
  await until(() => retrying !== undefined, 30_000, 'the retry to send');
  const r = retrying!;
  t.equal(r.retryAt, null, 'retry at is gone once the retry is under way');
  t.equal(r.attempt?.sent, 1, 'the new attempt counts from 1');
  t.doesNotThrow(() => formatStatus({ ...r, channels: [] }));
});

t.test('reauthenticate: a new grant, the registration kept and renewed with it', async (t) => {
  const authd = await fakeAuthd();
  const loc = await fakeLocatord(authd, { refreshS: 30, ttlS: 60 });
  authd.locatordAddr = loc.addr;
  t.teardown(async () => {
    await loc.close();
    await authd.close();
  });
  const { agent, logs } = await agentWith(t, { reflector: null }, authd);
  await agent.start();
  await until(() => agent.isRegistered, 10_000, 'registered');
  const auths = authd.requests;
  const registers = loc.counts['REGISTER'] ?? 0;
  const states: string[] = [];
  agent.on('state', (s) => states.push(s));
  t.equal(await agent.reauthenticate('test', 10_000), true, 'authd granted again');
  t.ok(authd.requests > auths, 'authd asked again');
  await until(() => (loc.counts['REGISTER'] ?? 0) > registers, 10_000, 'registered with the new ticket');
  t.ok(agent.isRegistered, 'registered throughout');
  t.notOk(states.includes('authenticating'), `never fell back to authenticating (${states.join(',')})`);
  t.ok(logs.some((l) => l['msg'] === 'authenticating again' && l['reason'] === 'test'), 'logged with the reason');

  // authd unreachable: the current ticket is kept, the answer is false.
  authd.refuseNext = { code: 7, count: 100 };
  t.equal(await agent.reauthenticate('test again', 5_000), false, 'no new grant');
  t.ok(agent.isRegistered, 'still registered with the old ticket');
});

t.test('reauthenticate on a stopped agent resolves false', async (t) => {
  const { agent } = await agentWith(t, {});
  t.equal(await agent.reauthenticate('x', 1000), false);
});
