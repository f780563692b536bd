// Hostile nicknames and group names through the real stack (authd, locatord, two agents) and the
// real devloc(1): `lookup`, `group members` and `status` print no raw control character
// (issue 15, low). The other text paths are in cli/escape.test.ts (decode on crafted datagrams).
import t from 'tap';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { root } from '../helpers/daemon.js';
import { eventually, stack } from '../agent/stack.js';

function devloc(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(root, 'src/cli/devloc.ts'), ...args], { cwd: root, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

// ESC (clear screen), CSI, BEL, RLO (bidi), a line separator and a newline: 26 bytes in UTF-8.
const EVIL_NICK = 'm\u001b[2J\u009b31m\u0007\u202eab\u2028\nX';
const EVIL_GROUP = 'g\u001b]0;owned\u0007\u202e\u2066\nfake';
const RAW = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;

t.test('lookup and group members of a terminal with a hostile nickname and group name', async (t) => {
  const s = await stack(t);
  const [a, b] = await Promise.all([s.agent('mallory', ['--nickname', EVIL_NICK]), s.agent('bob', ['--nickname', 'bob'])]);
  await eventually(async () => (await a.status()).registered && (await b.status()).registered, 30_000, 'both registered');
  const ida = (await a.status()).locatorId!;

  const look = devloc(['lookup', ida, '--socket', b.socket]);
  t.equal(look.status, 0, look.stderr);
  t.match(look.stdout, /m\\x1b\[2J\\x9b31m\\x07\\u\{202e\}ab\\u\{2028\}\\nX/, 'the nickname is shown escaped');
  t.notOk(RAW.test(look.stdout), 'lookup: no raw control character on stdout');
  t.equal(look.stdout.trimEnd().split('\n').length, 2, 'header and one row: the newline did not add a line');
  const lj = devloc(['lookup', ida, '--json', '--socket', b.socket]);
  t.notOk(RAW.test(lj.stdout), 'lookup --json: no raw control character');
  t.equal((JSON.parse(lj.stdout) as { nickname: string }[])[0]!.nickname, EVIL_NICK, 'JSON keeps the exact value');

  const g = devloc(['group', 'create', EVIL_GROUP, '--json', '--socket', a.socket]);
  t.equal(g.status, 0, g.stderr);
  const gid = (JSON.parse(g.stdout) as { groupId: string }).groupId;
  t.equal(devloc(['group', 'join', gid, '--socket', b.socket]).status, 0);
  const m = devloc(['group', 'members', gid, '--socket', b.socket]);
  t.equal(m.status, 0, m.stderr);
  t.notOk(RAW.test(m.stdout), 'group members: no raw control character on stdout');
  t.notMatch(m.stdout, /^fake/m, 'the group name did not start a line');
  t.match(m.stdout, /g\\x1b\]0;owned\\x07/, 'the group name is shown escaped');

  const st = devloc(['status', '--socket', a.socket]);
  t.equal(st.status, 0, st.stderr);
  t.notOk(RAW.test(st.stdout), 'status: no raw control character');
});

t.test('search results: a hostile nickname and presence status text', async (t) => {
  const s = await stack(t);
  const [a, b] = await Promise.all([s.agent('mallory', ['--nickname', EVIL_NICK]), s.agent('bob', ['--nickname', 'bob'])]);
  await eventually(async () => (await a.status()).registered && (await b.status()).registered, 30_000, 'both registered');
  const set = devloc(['presence', 'set', '--media', 'chess', '--looking', '--status', 'st\u001b[2J\u202e\u2028\nfake', '--socket', a.socket]);
  t.equal(set.status, 0, set.stderr);
  let found = { status: null as number | null, stdout: '', stderr: '' };
  await eventually(async () => {
    found = devloc(['search', '--media', 'chess', '--socket', b.socket]);
    return found.status === 0 && found.stdout.includes('looking');
  }, 60_000, 'mallory found by the search');
  t.notOk(RAW.test(found.stdout), 'search: no raw control character on stdout');
  t.notMatch(found.stdout, /^fake/m, 'the status text did not start a line');
  t.match(found.stdout, /\\x1b\[2J/, 'shown escaped');
});
