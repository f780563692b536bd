// The control socket: mode 0660, JSON lines in and out, answers in order, bounded lines, stale
// sockets replaced and live ones left alone.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { lstatSync, mkdirSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Agent } from '../../src/agent/agent.js';
import { ControlServer, MAX_CONTROL_LINE } from '../../src/agent/control.js';
import { controlRequest } from '../../src/agent/control-client.js';
import { loadAuthdKey, loadDeviceIdentity } from '../../src/agent/identity.js';
import { AddressBook } from '../../src/agent/peers.js';
import { fakeAuthd, fakeLocatord, fixture, until } from './fakes.js';

/** Write raw text to the socket; collect `n` answer lines. */
function converse(sock: string, text: string, n: number): Promise<Record<string, unknown>[]> {
  return new Promise((resolve, reject) => {
    const c = net.connect(sock);
    let buf = '';
    const out: Record<string, unknown>[] = [];
    c.setEncoding('utf8');
    c.on('connect', () => c.write(text));
    c.on('data', (d: string) => {
      buf += d;
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        out.push(JSON.parse(buf.slice(0, i)) as Record<string, unknown>);
        buf = buf.slice(i + 1);
        if (out.length === n) {
          c.destroy();
          resolve(out);
        }
      }
    });
    c.on('error', reject);
    c.on('close', () => resolve(out));
  });
}

t.test('control socket', async (t) => {
  const authd = await fakeAuthd();
  const loc = await fakeLocatord(authd, { refreshS: 1, ttlS: 5 });
  authd.locatordAddr = loc.addr;
  const fx = fixture(authd);
  const id = loadDeviceIdentity(fx.identityPath);
  const key = loadAuthdKey(fx.authdKeyPath);
  if (!id.ok || !key.ok) throw new Error('fixture');
  const peers = new AddressBook(path.join(fx.dir, 'state', 'peers.json'));
  const agent = new Agent({ identity: id.value, authd: authd.addr, authdKey: key.value, reflector: loc.reflector, retransmitMs: 100, peers });
  await agent.start();
  const sockPath = path.join(fx.dir, 'run', 'agent.sock');
  // A stale socket file (its agent was killed) is replaced.
  mkdirSync(path.dirname(sockPath), { recursive: true });
  spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(sockPath)}, () => process.kill(process.pid, 'SIGKILL'))`]);
  t.ok(lstatSync(sockPath).isSocket(), 'stale socket left behind');
  const server = await ControlServer.listen(sockPath, agent, peers);
  t.teardown(async () => {
    await server.close();
    await agent.stop();
    await loc.close();
    await authd.close();
    fx.cleanup();
  });
  const st = lstatSync(sockPath);
  t.ok(st.isSocket(), 'a socket');
  t.equal(st.mode & 0o777, 0o660, 'mode 0660');
  await t.rejects(ControlServer.listen(sockPath, agent, peers), /in use/, 'a live socket is left alone');
  const plain = path.join(fx.dir, 'plain');
  writeFileSync(plain, 'x');
  await t.rejects(ControlServer.listen(plain, agent, peers), /not a socket/, 'a file is not replaced');

  await until(() => agent.isRegistered, 5000, 'registered');
  const status = (await controlRequest(sockPath, 'status')) as { state: string; locatorId: string };
  t.equal(status.state, 'registered');
  t.equal(status.locatorId, agent.locatorIdHex);

  // Several requests in one write: answered in order, each with its id.
  const answers = await converse(sockPath, [
    JSON.stringify({ id: 'a', cmd: 'peers.add', args: { name: 'me', id: agent.locatorIdHex } }),
    JSON.stringify({ id: 'b', cmd: 'online', args: { targets: ['me'] } }),
    'not json',
    JSON.stringify({ id: 7, cmd: 'frobnicate' }),
    JSON.stringify({ id: 8, cmd: 'lookup', args: { targets: 'me' } }),
    JSON.stringify({ id: 9, cmd: 'peers.rm', args: { name: 'nobody' } }),
    JSON.stringify({ id: 10, cmd: 'group.create', args: { name: 'g', save: 'gg' } }),
    JSON.stringify({ id: 11, cmd: 'peers.list' }),
  ].join('\n') + '\n', 8);
  t.same(answers.map((a) => a['id']), ['a', 'b', undefined, 7, 8, 9, 10, 11], 'in order');
  t.same(answers[1], { id: 'b', ok: true, result: [{ target: 'me', id: agent.locatorIdHex, online: true, names: ['me'] }] });
  t.match(answers[2], { ok: false, error: { code: 'BAD_REQUEST' } });
  t.match(answers[3], { ok: false, error: { code: 'UNKNOWN_COMMAND' } });
  t.match(answers[4], { ok: false, error: { code: 'BAD_REQUEST' } });
  t.match(answers[5], { ok: false, error: { code: 'NOT_FOUND' } });
  t.match(answers[6], { ok: true, result: { saved: 'gg' } });
  t.same((answers[7]!['result'] as { name: string }[]).map((e) => e.name), ['gg', 'me']);

  const big = await converse(sockPath, 'x'.repeat(MAX_CONTROL_LINE + 10), 1);
  t.match(big[0], { ok: false, error: { code: 'TOO_LARGE' } }, 'over-long line refused');
  const bigLine = await converse(sockPath, JSON.stringify({ id: 1, cmd: 'status', args: { pad: 'x'.repeat(MAX_CONTROL_LINE) } }) + '\n', 1);
  t.match(bigLine[0], { ok: false, error: { code: 'TOO_LARGE' } }, 'also when its newline arrives with it (the daemons\' control socket\'s rule)');
});
