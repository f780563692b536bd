// devloc-agent processes against real devloc-authd and devloc-locatord processes on loopback:
// two terminals find each other by locator ID and by nickname, see each other online and then
// offline when one stops; the control API and the devloc(1) commands; locatord restarts (clean
// and killed) are recovered from with no help.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import type { LookupEntry } from '../../src/agent/agent.js';
import { root } from '../helpers/daemon.js';
import type { AgentProc } from './stack.js';
import { eventually, stack } from './stack.js';

function devloc(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(root, 'src/cli/devloc.ts'), ...args], { cwd: root, encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const registered = async (a: AgentProc): Promise<boolean> => (await a.status()).registered;

t.test('two agents find each other, by ID and by nickname; offline after one stops', async (t) => {
  const s = await stack(t);
  const [a, b] = await Promise.all([s.agent('alice', ['--nickname', 'alice']), s.agent('bob', ['--nickname', 'bob'])]);
  await eventually(async () => (await registered(a)) && (await registered(b)), 20_000, 'both registered');
  const sa = await a.status();
  const sb = await b.status();
  t.match(sa.locatorId, /^[0-9a-f]{32}$/, 'locator ID');
  t.not(sa.locatorId, sb.locatorId);
  t.equal(sb.observed, `127.0.0.1:${sb.localPort}`, 'observed address is the agent socket');
  t.equal(sb.locatord, s.locatordAddr, 'locatord address from the grant');
  await eventually(async () => (await b.status()).netMode === 'open', 10_000, 'classified open on loopback');

  // By locator ID.
  const byId = (await a.control('lookup', { targets: [sb.locatorId] })) as LookupEntry[];
  t.equal(byId[0]!.online, true);
  t.equal(byId[0]!.addr, sb.observed, "bob's address as locatord has it");
  t.equal(byId[0]!.nickname, 'bob');
  // By nickname, through the address book.
  await a.control('peers.add', { name: 'bob', id: sb.locatorId });
  const byNick = (await a.control('lookup', { targets: ['bob'] })) as LookupEntry[];
  t.equal(byNick[0]!.id, sb.locatorId);
  t.equal(byNick[0]!.addr, sb.observed);
  t.same(await a.control('online', { targets: ['bob', sa.locatorId] }), [
    { target: 'bob', id: sb.locatorId, online: true, names: ['bob'] },
    { target: sa.locatorId, id: sa.locatorId, online: true, names: [] },
  ]);
  await t.rejects(a.control('lookup', { targets: ['carol'] }), { code: 'UNKNOWN_TARGET' });

  // devloc(1), human and JSON output.
  const look = devloc(['lookup', 'bob', '--socket', a.socket]);
  t.equal(look.status, 0, look.stderr);
  t.match(look.stdout, new RegExp(`bob\\s+${sb.locatorId}\\s+yes\\s+127\\.0\\.0\\.1:${sb.localPort}`));
  const st = devloc(['status', '--socket', b.socket]);
  t.equal(st.status, 0, st.stderr);
  t.match(st.stdout, /state:\s+registered/);
  t.match(st.stdout, new RegExp(`locator ID:\\s+${sb.locatorId}`));
  t.match(st.stdout, /network mode:\s+open/);
  t.match(st.stdout, /next refresh:\s+\S+ \(in \d+ s\)/);
  t.match(st.stdout, /ticket expires:\s+\S+/);
  const stj = JSON.parse(devloc(['status', '--json', '--socket', b.socket]).stdout) as { locatorId: string | null };
  t.equal(stj.locatorId, sb.locatorId);
  const on = devloc(['online', sb.locatorId!, 'nobody-here', '--socket', a.socket]);
  t.equal(on.status, 2, 'unknown nickname is a usage error');
  t.match(on.stderr, /nobody-here/);
  const list = devloc(['peers', 'list', '--socket', a.socket]);
  t.match(list.stdout, new RegExp(`bob\\s+${sb.locatorId}\\s+peer`));
  t.equal(devloc(['peers', 'add', 'bad name', sb.locatorId!, '--socket', a.socket]).status, 2, 'bad nickname');
  const none = devloc(['status', '--socket', path.join(s.dir, 'nope.sock')]);
  t.equal(none.status, 1);
  t.match(none.stderr, /not running/);

  // Groups, by ID and by a saved name.
  const g = JSON.parse(devloc(['group', 'create', 'friends', '--save', 'friends', '--json', '--socket', a.socket]).stdout) as { groupId: string };
  t.match(g.groupId, /^[0-9a-f]{32}$/);
  t.equal(devloc(['group', 'join', g.groupId, '--socket', b.socket]).status, 0);
  const members = devloc(['group', 'members', 'friends', '--socket', a.socket]);
  t.equal(members.status, 0, members.stderr);
  t.match(members.stdout, /"friends": 2 members/);
  t.match(members.stdout, new RegExp(`${sb.locatorId}\\s+yes\\s+127\\.0\\.0\\.1:${sb.localPort}\\s+open\\s+bob\\s+bob`));
  t.equal(devloc(['group', 'leave', g.groupId, '--socket', b.socket]).status, 0);

  // bob stops: unregisters, so alice sees him offline at once (not after the TTL).
  t.equal(await b.stop('SIGTERM'), 0, 'clean exit');
  t.ok(b.lines.some((l) => l['msg'] === 'unregistered'), 'unregistered on SIGTERM');
  const off = (await a.control('online', { targets: ['bob'] })) as { online: boolean }[];
  t.equal(off[0]!.online, false, 'offline after stop');

  // The device ID never appears in what the agents print.
  for (const p of [a, b]) {
    const out = p.raw.join('') + p.stderr.join('');
    t.notOk(out.includes(p.device.deviceId), `${p.name}: device ID not in its output`);
    t.notOk(out.includes(p.device.key.sign.secret.toString('base64url')), `${p.name}: key not in its output`);
  }
});

t.test('locatord restart (SIGTERM, then SIGKILL): agents recover by themselves', async (t) => {
  const s = await stack(t);
  const [a, c] = await Promise.all([s.agent('ann'), s.agent('cid')]);
  await eventually(async () => (await registered(a)) && (await registered(c)), 20_000, 'registered');
  const cid = (await c.status()).locatorId!;

  // Clean restart: locatord keeps sessions and registrations in its snapshot.
  await s.restartLocatord('SIGTERM');
  const after1 = Date.now();
  await eventually(async () => {
    const st = await c.status();
    return st.registered && st.lastRefreshAt !== null && Date.parse(st.lastRefreshAt) > after1;
  }, 20_000, 'refresh after the clean restart');
  const on1 = (await a.control('online', { targets: [cid] })) as { online: boolean }[];
  t.equal(on1[0]!.online, true, 'online after SIGTERM restart');

  // Killed: nothing survives, the agents meet NO_SESSION and register again with their ticket.
  const regsBefore = (await c.status()).counters.registrations;
  const authsBefore = (await c.status()).counters.authentications;
  await s.restartLocatord('SIGKILL');
  await eventually(async () => (await c.status()).counters.registrations > regsBefore, 20_000, 're-registration after SIGKILL');
  const on2 = await eventually(async () => {
    const r = (await a.control('online', { targets: [cid] })) as { online: boolean }[];
    return r[0]!.online ? r : null;
  }, 20_000, 'online after the SIGKILL restart');
  t.equal(on2[0]!.online, true, 'online after SIGKILL restart');
  t.equal((await c.status()).counters.authentications, authsBefore, 'same ticket: no new authentication needed');
  // Usually a refresh reaches the new locatord and gets NO_SESSION; on a slow machine the restart
  // may outlast the retransmissions and the refresh fails with no answer instead. Either way the
  // agent registered again by itself.
  const failed = c.lines.filter((l) => l['msg'] === 'step failed, retrying').map((l) => String(l['err']));
  t.ok(failed.some((e) => /NO_SESSION|NOT_FOUND|no answer/.test(e)), `saw the server had lost it: ${failed.join('; ')}`);
});
