// `devloc match` end to end: real devloc-authd, devloc-locatord and devloc-matchd processes,
// two devloc-agent processes, and the devloc(1) CLI talking to them over their control sockets.
// Two terminals with the same media ID are matched and each learns the other's locator ID,
// nickname, network mode and address, and who hosts; status, cancel, no match at the deadline.
import t from 'tap';
import { spawn } from 'node:child_process';
import path from 'node:path';
import type { MatchResult } from '../../src/agent/match.js';
import { root } from '../helpers/daemon.js';
import type { AgentProc } from '../agent/stack.js';
import { eventually, stack } from '../agent/stack.js';

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** devloc(1) through tsx, asynchronously (two of them must wait at the same time). */
function devloc(args: string[], timeoutMs = 60_000): Promise<Run> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'src/cli/devloc.ts'), ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    p.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

const ready = async (a: AgentProc): Promise<boolean> => {
  const s = await a.status();
  return s.registered && s.netMode === 'open';
};

t.test('devloc match with two devloc-agent processes', async (t) => {
  const s = await stack(t, { matchd: true });
  const [a, b] = await Promise.all([s.agent('alice', ['--nickname', 'alice']), s.agent('bob', ['--nickname', 'bob', '--no-save-partners'])]);
  await eventually(async () => (await ready(a)) && (await ready(b)), 20_000, 'both registered and classified');
  const sa = await a.status();
  const sb = await b.status();

  // Both wait for partners at the same time: alice human-readable, bob JSON.
  const [ha, jb] = await Promise.all([
    devloc(['match', 'submit', '--media', 'chess', '--wait', '30', '--attr', 'level=12', '--socket', a.socket]),
    devloc(['match', 'submit', '--media', 'chess', '--wait', '30', '--prefer', 'level 10..14', '--json', '--socket', b.socket]),
  ]);
  t.equal(ha.status, 0, `alice: exit 0 ${ha.stderr}`);
  t.equal(jb.status, 0, `bob: exit 0 ${jb.stderr}`);
  const rb = JSON.parse(jb.stdout) as MatchResult;
  t.equal(rb.state, 'matched');
  const aliceSeen = rb.members!.find((m) => !m.self)!;
  t.equal(aliceSeen.id, sa.locatorId, "bob learns alice's locator ID");
  t.equal(aliceSeen.nickname, 'alice', 'nickname');
  t.equal(aliceSeen.netMode, 'open', 'network mode');
  t.equal(aliceSeen.addr, sa.observed, 'address (as locatord sees it)');
  t.ok(rb.host === 0 || rb.host === 1, 'host index');
  t.match(ha.stdout, /^matched: chess, 2 members, host: /m, 'alice: headline');
  t.match(ha.stdout, new RegExp(`^[ *]\\d\\s+${sb.locatorId}\\s+bob\\s+open\\s+${sb.observed!.replace(/\./g, '\\.')}\\s+(lan|-)\\s+(host|-)$`, 'm'), "alice: bob's row (PATH: lan to the host, same IP; - on the host)");
  t.match(ha.stdout, new RegExp(`^[ *]\\d\\s+${sa.locatorId}\\s+alice\\s+open\\s+\\S+\\s+(lan|-)\\s+(host, )?you$`, 'm'), 'alice: her own row');
  const hostRow = ha.stdout.split('\n').find((l) => l.startsWith('*'));
  t.ok(hostRow?.includes(rb.hostId!), 'the host row (marked *) is the host bob was told of');

  // The partner is remembered under its nickname (issue 18): by alice; bob opted out.
  await eventually(async () => ((await a.control('peers.list', {})) as { name: string; id: string }[]).some((e) => e.name === 'bob' && e.id === sb.locatorId), 20_000, "bob in alice's address book");
  t.same(await b.control('peers.list', {}), [], "bob's address book stays empty (--no-save-partners)");

  const st = await devloc(['match', 'status', '--socket', a.socket]);
  t.equal(st.status, 0, st.stderr);
  t.match(st.stdout, /^matched: chess/m, 'status: the newest request');

  // --no-wait, status while waiting, cancel by ID.
  const nw = await devloc(['match', 'submit', '--media', 'go', '--no-wait', '--wait', '60', '--socket', a.socket]);
  t.equal(nw.status, 0, nw.stderr);
  const id = nw.stdout.trim().split('\n').pop()!;
  t.match(id, /^[0-9a-f]{16}$/, 'prints the match ID');
  const w = await devloc(['match', 'status', id, '--json', '--socket', a.socket]);
  t.equal((JSON.parse(w.stdout) as MatchResult).state, 'waiting', 'waiting');
  const c = await devloc(['match', 'cancel', id, '--socket', a.socket]);
  t.equal(c.status, 0, c.stderr);
  t.match(c.stdout, `cancelled: go [match ${id}]`);

  // Nobody else: no match at the deadline, exit 1.
  const nm = await devloc(['match', 'submit', '--media', 'go', '--wait', '2', '--socket', b.socket]);
  t.equal(nm.status, 1, 'no match: exit 1');
  t.match(nm.stdout, /^no match: go/m);

  // Usage errors: exit 2, nothing sent.
  const bad = await devloc(['match', 'submit', '--media', 'go', '--require', 'level 20..10', '--socket', b.socket]);
  t.equal(bad.status, 2, 'bad requirement: exit 2');
  t.match(bad.stderr, /lower bound is above/);
  t.equal((await devloc(['match', 'status', 'nothex', '--socket', b.socket])).status, 2, 'bad match ID: exit 2');
  const unknown = await devloc(['match', 'status', '0123456789abcdef', '--socket', b.socket]);
  t.equal(unknown.status, 1, 'unknown match ID: exit 1');
  t.match(unknown.stderr, /NOT_FOUND/);

  t.ok(a.lines.some((l) => l['msg'] === 'match result' && l['state'] === 'matched'), "alice's agent logs the result");
  t.equal(await a.stop('SIGTERM'), 0, 'alice stops cleanly');
  t.equal(await b.stop('SIGTERM'), 0, 'bob stops cleanly');
});
