// devloc ctl against real daemons (issue 19, item 1): authd, locatord and matchd processes with
// their control sockets, an agent registered through them, and `devloc ctl` run as a process:
// status, show (by locator ID and by nickname), sessions, kick (the agent is told KICKED and
// shows it in its status), reload, --json, the exit statuses, and the socket's bounds.
import { statSync } from 'node:fs';
import net from 'node:net';
import t from 'tap';
import { eventually, stack } from '../agent/stack.js';
import { run } from './ops-helpers.js';

const ctl = (args: string[]) => run('cli/devloc.ts', ['ctl', ...args]);

/** Send raw bytes on a control socket; the first answer line. */
function raw(path: string, bytes: string): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const c = net.connect(path);
    let buf = '';
    c.setEncoding('utf8');
    c.on('connect', () => c.write(bytes));
    c.on('data', (d: string) => {
      buf += d;
      const i = buf.indexOf('\n');
      if (i >= 0) {
        c.destroy();
        resolve(JSON.parse(buf.slice(0, i)) as Record<string, unknown>);
      }
    });
    c.on('error', reject);
  });
}

t.test('devloc ctl over the three daemons', async (t) => {
  const s = await stack(t, { matchd: true });
  for (const p of [s.authd, s.locatord, s.matchd!]) await p.waitFor((l) => l['msg'] === 'control socket', 20_000, 'control socket');
  t.equal(statSync(s.ctl.locatord).mode & 0o777, 0o660, 'the socket is 0660');
  const alice = await s.agent('alice', ['--locatord', s.locatordAddr, '--nickname', 'alice-ctl', '--matchd', s.matchdAddr!]);
  const st = await eventually(async () => {
    const x = await alice.status();
    return x.registered ? x : undefined;
  }, 30_000, 'alice registered');
  const id = st.locatorId!;

  // status: version, uptime, counts, rates (text and JSON)
  const status = await ctl(['locatord', 'status', '--socket', s.ctl.locatord, '--json']);
  t.equal(status.code, 0, status.stderr);
  const so = JSON.parse(status.stdout) as Record<string, unknown>;
  t.match(so, { daemon: 'devloc-locatord', version: String, uptimeS: Number, store: 'embedded', sessions: Number, rates: { windowS: Number, perS: { requests: Number } } });
  t.ok((so['registrations'] as number) >= 1, 'counts the registration');
  const text = await ctl(['authd', 'status', '--socket', s.ctl.authd]);
  t.equal(text.code, 0, text.stderr);
  t.match(text.stdout, /^daemon: +devloc-authd$/m);
  t.match(text.stdout, /^devices: +1$/m);

  // show by locator ID and by nickname: record, session, groups
  const show = await ctl(['locatord', 'show', id, '--socket', s.ctl.locatord, '--json']);
  t.equal(show.code, 0, show.stderr);
  const sh = JSON.parse(show.stdout) as Record<string, unknown>;
  t.match(sh, { locatorId: id, online: true, presence: { nickname: 'alice-ctl', addr: st.observed }, groups: [] });
  t.equal((sh['sessions'] as unknown[]).length, 1, 'one session');
  const byNick = await ctl(['locatord', 'show', 'alice-ctl', '--socket', s.ctl.locatord, '--json']);
  t.equal(JSON.parse(byNick.stdout).locatorId, id, 'a nickname names the same terminal');
  const dev = await ctl(['authd', 'show', alice.device.deviceId, '--socket', s.ctl.authd, '--json']);
  t.match(JSON.parse(dev.stdout), { deviceId: alice.device.deviceId, locatorId: id, revoked: false });

  // sessions
  const sess = await ctl(['locatord', 'sessions', '--socket', s.ctl.locatord, '--json', '--limit', '5']);
  t.equal(sess.code, 0, sess.stderr);
  t.ok((JSON.parse(sess.stdout).sessions as { locatorId: string }[]).some((x) => x.locatorId === id), 'alice is listed');

  // errors and exit statuses: 1 the daemon refused, 2 usage, 3 unreachable
  const missing = await ctl(['locatord', 'show', '0'.repeat(32), '--socket', s.ctl.locatord]);
  t.equal(missing.code, 1, 'NOT_FOUND exits 1');
  t.match(missing.stderr, /NOT_FOUND/);
  const noTarget = await ctl(['locatord', 'kick', '--socket', s.ctl.locatord]);
  t.equal(noTarget.code, 2, 'kick without a target exits 2');
  const authdSessions = await ctl(['authd', 'sessions', '--socket', s.ctl.authd]);
  t.equal(authdSessions.code, 1);
  t.match(authdSessions.stderr, /NOT_SUPPORTED/);
  const nobody = await ctl(['matchd', 'status', '--socket', `${s.dir}/nobody.sock`]);
  t.equal(nobody.code, 3, 'no daemon exits 3');
  t.match(nobody.stderr, /devloc-matchd is not running/);
  const badCmd = await raw(s.ctl.locatord, '{"cmd":"shutdown"}\n');
  t.match(badCmd, { ok: false, error: { code: 'UNKNOWN_COMMAND' } });
  const notJson = await raw(s.ctl.locatord, 'status\n');
  t.match(notJson, { ok: false, error: { code: 'BAD_REQUEST' } });
  const big = await raw(s.ctl.locatord, `{"cmd":"status","args":{"x":"${'a'.repeat(10_000)}"}}\n`);
  t.match(big, { ok: false, error: { code: 'TOO_LARGE' } });
  await s.locatord.waitFor((l) => l['event'] === 'control:UNKNOWN_COMMAND', 10_000, 'a log line for the refusal');

  // reload: the per-option report
  const reload = await ctl(['matchd', 'reload', '--socket', s.ctl.matchd!, '--json']);
  t.equal(reload.code, 0, reload.stderr);
  t.same(JSON.parse(reload.stdout), { applied: [], needsRestart: [] });
  await s.matchd!.waitFor((l) => l['msg'] === 'reloaded', 10_000, 'reloaded line');

  // kick: registration and session removed, the agent told KICKED (status), then it comes back
  const kick = await ctl(['locatord', 'kick', 'alice-ctl', '--socket', s.ctl.locatord, '--json']);
  t.equal(kick.code, 0, kick.stderr);
  t.match(JSON.parse(kick.stdout), { locatorId: id, registrationRemoved: true, sessionsEnded: 1 });
  await s.locatord.waitFor((l) => l['msg'] === 'kicked', 10_000, 'kicked line');
  const told = await eventually(async () => {
    const x = await alice.status();
    return x.lastError && /KICKED/.test(x.lastError.error) ? x : undefined;
  }, 30_000, 'alice told KICKED');
  t.match(told.lastError!.error, /KICKED/);
  await alice.waitFor((l) => /KICKED/.test(String(l['err'] ?? '')), 10_000, 'alice logs KICKED');
  // A kick is not a revocation: the agent authenticates again and registers with a new session.
  const back = await eventually(async () => {
    const r = await ctl(['locatord', 'show', id, '--socket', s.ctl.locatord, '--json']);
    const o = r.code === 0 ? JSON.parse(r.stdout) : undefined;
    return o?.online && (o.sessions as { ended: unknown }[]).some((x) => x.ended === null) ? o as { sessions: { ended: unknown }[] } : undefined;
  }, 30_000, 'alice back with a new session');
  t.ok(back.sessions.some((x) => x.ended === 'KICKED'), 'the kicked session is shown ended with KICKED (by name)');
});
