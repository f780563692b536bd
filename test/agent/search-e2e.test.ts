// Partner search and the media ID at run time through devloc-agent processes against real
// devloc-authd and devloc-locatord processes (issue 18 item 4): `devloc search` finds an agent
// looking for a partner, `devloc media set` moves it to another medium (keeping the rest of its
// presence record), and a re-registration after a locatord kill keeps that record.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { PresenceStatus } from '../../src/agent/presence.js';
import { root } from '../helpers/daemon.js';
import type { Test } from 'tap';
import type { AgentProc, Stack } from './stack.js';
import { eventually, stack } from './stack.js';

const devloc = (args: string[]): { status: number | null; stdout: string; stderr: string } => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(root, 'src/cli/devloc.ts'), ...args], { cwd: root, encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
};

const found = (out: string): PresenceStatus[] => out.trim().split('\n').filter((l) => l.length > 0).map((l) => JSON.parse(l) as PresenceStatus);

t.test('devloc search finds a partner; devloc media set moves it; re-registration keeps the record', async (t) => {
  const s = await stack(t);
  const [a, b] = await Promise.all([s.agent('ann', ['--nickname', 'ann', '--media-id', 'chess']), s.agent('ben', ['--nickname', 'ben'])]);
  await eventually(async () => (await a.status()).registered && (await b.status()).registered, 20_000, 'registered');
  const ben = (await b.status()).locatorId!;

  t.equal(devloc(['presence', 'set', '--socket', b.socket, '--media', 'chess', '--looking', '--want', 'level=3']).status, 0);
  const r1 = devloc(['search', '--json', '--socket', a.socket, '--require', 'level 2..4']);
  t.equal(r1.status, 0, r1.stderr);
  t.match(found(r1.stdout), [{ id: ben, online: true, nickname: 'ben', presence: { mediaId: 'chess', lookingForPartner: true, wants: { level: 3 } } }], "ann's medium by default: ben");
  t.same(found(devloc(['search', '--json', '--socket', a.socket, '--require', 'level 5..9']).stdout), [], 'a requirement ben does not meet');
  const human = devloc(['search', '--socket', a.socket]);
  t.match(human.stdout, /online\s+ben .*chess\s+looking for level=3/, 'one line per terminal');

  t.equal(devloc(['media', 'set', '--socket', b.socket, 'go']).status, 0);
  t.same(found(devloc(['search', '--json', '--socket', a.socket]).stdout), [], 'ben left chess');
  t.match(found(devloc(['search', '--json', '--socket', a.socket, '--media', 'go']).stdout), [{ id: ben, presence: { mediaId: 'go', lookingForPartner: true, wants: { level: 3 } } }], 'found under go, still looking');

  // locatord killed: ben registers again with its record (REGISTER carries it), found again.
  const regsBefore = (await b.status()).counters.registrations;
  await s.restartLocatord('SIGKILL');
  await eventually(async () => (await b.status()).counters.registrations > regsBefore, 30_000, 'ben registered again');
  await eventually(async () => {
    const r = devloc(['search', '--json', '--socket', a.socket, '--media', 'go']);
    return r.status === 0 && found(r.stdout).some((x) => x.id === ben);
  }, 30_000, 'ben found again after the restart, with its record');

  const bad = devloc(['search', '--socket', a.socket, '--require', 'level 5..2']);
  t.equal(bad.status, 2, 'a requirement that cannot hold: usage error');
  t.equal(devloc(['media', 'set', '--socket', b.socket, 'x'.repeat(65)]).status, 2, 'media ID over 64 bytes');
});

t.test('--join-group: joined with the first REGISTER (closed group, code proven); a refused join registers anyway', async (t) => {
  const s = await stack(t);
  const a = await s.agent('ann', ['--nickname', 'ann']);
  await eventually(async () => (await a.status()).registered, 20_000, 'ann registered');
  const { groupId } = (await a.control('group.create', { name: 'club', joinCode: 'k1ng' })) as { groupId: string };
  const [c, d] = await Promise.all([
    s.agent('cal', ['--join-group', `${groupId}:k1ng`]),
    s.agent('dan', ['--join-group', `${groupId}:wrong`]),
  ]);
  await eventually(async () => (await c.status()).registered && (await d.status()).registered, 30_000, 'both registered');
  const cal = (await c.status()).locatorId!;
  const dan = (await d.status()).locatorId!;
  const members = (await a.control('group.members', { group: groupId })) as { members: { id: string }[] };
  const ids = members.members.map((m) => m.id);
  t.ok(ids.includes(cal), 'cal joined with its REGISTER');
  t.notOk(ids.includes(dan), 'dan (wrong code) did not join');
  t.ok(d.lines.some((l) => l['msg'] === 'join-group refused: registering without joining'), 'dan says why');
  t.ok(c.lines.some((l) => l['msg'] === 'joined groups'), 'cal logs the join');
});

/** ann (visibility groups) and ben, both registered; `seen`: whether ben sees ann online. */
async function hiddenPair(t: Test): Promise<{ s: Stack; a: AgentProc; b: AgentProc; ben: string; seen: () => Promise<boolean> }> {
  const s = await stack(t);
  const [a, b] = await Promise.all([s.agent('ann', ['--visibility', 'groups']), s.agent('ben', [])]);
  await eventually(async () => (await a.status()).registered && (await b.status()).registered, 20_000, 'registered');
  const ann = (await a.status()).locatorId!;
  const ben = (await b.status()).locatorId!;
  const seen = async (): Promise<boolean> => ((await b.control('online', { targets: [ann] })) as { online: boolean }[])[0]!.online;
  return { s, a, b, ben, seen };
}

t.test('devloc allow: a hidden terminal lets one other see it, at run time, and takes it back', async (t) => {
  const { a, b, ben, seen } = await hiddenPair(t);
  t.equal(await seen(), false, 'hidden from ben');
  const add = devloc(['allow', 'add', '--socket', a.socket, ben]);
  t.equal(add.status, 0, add.stderr);
  t.equal(add.stdout.trim(), ben, 'prints the list');
  await eventually(seen, 30_000, 'ben sees ann once she registered again');
  t.same(found(devloc(['allow', 'list', '--json', '--socket', a.socket]).stdout), [{ allow: [ben] }]);
  t.equal(devloc(['allow', 'rm', '--socket', a.socket, ben]).status, 0);
  await eventually(async () => !(await seen()), 30_000, 'hidden again');
  const unknown = devloc(['allow', 'add', '--socket', a.socket, 'nobody']);
  t.equal(unknown.status, 2, 'an unknown name: a usage error, as for lookup');
  t.match(unknown.stderr, /nobody/);
  t.same(found(devloc(['allow', 'list', '--json', '--socket', a.socket]).stdout), [{ allow: [] }], 'list unchanged');
});

t.test('devloc allow: the list survives an agent restart (allow.json in --state-dir), applied at the first REGISTER', async (t) => {
  const { s, a, b, ben, seen } = await hiddenPair(t);
  t.equal(devloc(['allow', 'add', '--socket', a.socket, ben]).status, 0);
  await eventually(seen, 30_000, 'ben sees ann');
  const file = path.join(s.dir, 'ann-state', 'allow.json');
  t.same(JSON.parse(readFileSync(file, 'utf8')), { version: 1, allow: [ben] }, 'kept in the state directory');

  // Restarted: its first REGISTER (which replaces the record) carries the list again.
  await a.stop();
  const a2 = await s.agent('ann', ['--visibility', 'groups'], { device: a.device });
  await eventually(async () => (await a2.status()).registered, 30_000, 'ann registered again');
  t.same(found(devloc(['allow', 'list', '--json', '--socket', a2.socket]).stdout), [{ allow: [ben] }], 'the list is back');
  t.equal(await seen(), true, 'ben still sees ann');

  // Taken back, then restarted: stays hidden.
  t.equal(devloc(['allow', 'rm', '--socket', a2.socket, ben]).status, 0);
  await eventually(async () => !(await seen()), 30_000, 'hidden again');
  await a2.stop();
  const a3 = await s.agent('ann', ['--visibility', 'groups'], { device: a.device });
  await eventually(async () => (await a3.status()).registered, 30_000, 'ann registered a third time');
  t.equal(await seen(), false, 'still hidden from ben');
  t.same(JSON.parse(readFileSync(file, 'utf8')), { version: 1, allow: [] });
});
