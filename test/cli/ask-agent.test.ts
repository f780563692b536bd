// askAgent (src/cli/util.ts): the one way devloc's terminal commands (status, lookup, connect,
// match, watch, presence, ...) ask the local agent, and how its refusals become exit statuses
// (devloc(1) EXIT STATUS): what the user typed is a usage error (2), anything else a failure (1).
import t from 'tap';
import type { Test } from 'tap';
import net from 'node:net';
import path from 'node:path';
import { askAgent, CliError, UsageError } from '../../src/cli/util.js';
import { devlocAsync, scratch } from './fixtures/cli.js';

// Sockets go in scratch(t) (mkdtemp, short), not t.testdir(): a Unix socket's path must fit
// sun_path (107 bytes), and t.testdir()'s names itself after the test (libuv cut such a path short,
// leaving a socket file behind under a name that failed the next run with EADDRINUSE).

/** A control socket answering every request with `error`, or when error is null with `result(cmd)` (default `{ cmd }`). */
async function fakeAgent(t: Test, answer: (cmd: string) => { code: string; message: string } | null, result: (cmd: string) => unknown = (cmd) => ({ cmd })): Promise<string> {
  const sock = path.join(scratch(t), 'agent.sock');
  const server = net.createServer((c) => {
    c.setEncoding('utf8');
    let buf = '';
    c.on('data', (chunk: string) => {
      buf += chunk;
      const i = buf.indexOf('\n');
      if (i < 0) return;
      const req = JSON.parse(buf.slice(0, i)) as { id: number; cmd: string };
      const error = answer(req.cmd);
      c.end(`${JSON.stringify(error ? { id: req.id, ok: false, error } : { id: req.id, ok: true, result: result(req.cmd) })}\n`);
    });
  });
  await new Promise<void>((resolve) => server.listen(sock, resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return sock;
}

t.test('refusals of what was typed are usage errors; the rest fail the command', async (t) => {
  const codes: Record<string, { code: string; message: string }> = {
    'bad-request': { code: 'BAD_REQUEST', message: 'targets: expected a list' },
    'unknown-target': { code: 'UNKNOWN_TARGET', message: '"carol" is neither an ID (32 hex digits) nor a name in the address book' },
    'bad-target': { code: 'BAD_TARGET', message: 'not a locator ID' },
    'bad-entry': { code: 'ADDRESS_BOOK', message: 'bad name "x y"' },
    'book-unreadable': { code: 'ADDRESS_BOOK', message: 'cannot write the address book' },
    'not-found': { code: 'NOT_FOUND', message: 'no such peer online' },
  };
  const sock = await fakeAgent(t, (cmd) => codes[cmd] ?? null);
  t.same(await askAgent(sock, 'status'), { cmd: 'status' }, 'a result is returned as it is');
  for (const cmd of ['bad-request', 'unknown-target', 'bad-target', 'bad-entry']) {
    await t.rejects(askAgent(sock, cmd), new UsageError(codes[cmd]!.message), `${codes[cmd]!.code}: usage (exit 2), the agent's words`);
  }
  await t.rejects(askAgent(sock, 'book-unreadable'), new CliError('ADDRESS_BOOK: cannot write the address book'), 'an address book the agent cannot use: a failure (exit 1)');
  await t.rejects(askAgent(sock, 'not-found'), new CliError('NOT_FOUND: no such peer online'), 'a failure, with the code');
});

t.test('no agent on the socket, or none answering in time: a failure, in plain words', async (t) => {
  const dir = scratch(t);
  const missing = path.join(dir, 'none.sock');
  await t.rejects(askAgent(missing, 'status'), { name: 'CliError', message: `devloc-agent is not running (no control socket at ${missing})` });
  const sock = path.join(dir, 'silent.sock');
  const held: net.Socket[] = [];
  const server = net.createServer((c) => void held.push(c));
  await new Promise<void>((resolve) => server.listen(sock, resolve));
  t.teardown(() => {
    for (const c of held) c.destroy();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  await t.rejects(askAgent(sock, 'status', {}, 200), { name: 'CliError', message: `no answer from devloc-agent on ${sock} within 200 ms` });
});

t.test('what the agent answers is printed escaped: allow list with a hostile entry, and an empty list prints nothing', async (t) => {
  // A real agent only keeps locator IDs on the list; the command must not rely on it (devloc(1)
  // output never carries a control character raw, whatever answered).
  let allow = ['00112233445566778899aabbccddeeff', 'x\u001b[2J\u009b31m\u202ey'];
  const sock = await fakeAgent(t, () => null, () => ({ allow }));
  const listed = await devlocAsync(['allow', 'list', '--socket', sock]);
  t.equal(listed.status, 0, listed.stderr);
  t.equal(listed.stdout, '00112233445566778899aabbccddeeff\nx\\x1b[2J\\x9b31m\\u{202e}y\n', 'one ID a line, the hostile one escaped');
  const json = await devlocAsync(['allow', 'list', '--json', '--socket', sock]);
  t.notMatch(json.stdout, /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202a-\u202e]/, 'JSON: no raw control character');
  t.same(JSON.parse(json.stdout), { allow }, 'and the same list when parsed');
  allow = [];
  const empty = await devlocAsync(['allow', 'list', '--socket', sock]);
  t.equal(empty.status, 0, empty.stderr);
  t.equal(empty.stdout, '', 'an empty list: no line at all');
});
