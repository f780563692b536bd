// udpPortShared (src/common/preflight.ts). coturn binds its port with SO_REUSEPORT, so a second
// turnserver on a port another one holds (two demos, or two tests, started at once) shares it
// instead of failing to start; `devloc demo` and the tests' startCoturn then move to a free port.
import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { udpPortShared } from '../../src/common/preflight.js';
import { haveCoturn, startCoturn } from '../turn/coturn.js';
import { holdUdp } from './ops-helpers.js';

t.test('udpPortShared: a socket of this process, of nobody, of another process', async (t) => {
  const { port, close } = await holdUdp();
  t.equal(udpPortShared(port, process.pid), false, 'only this process holds it');
  t.equal(udpPortShared(port, process.ppid), true, "another process's view: held by someone else");
  await close();
  t.equal(udpPortShared(port, process.ppid), false, 'nobody holds it');
});

t.test('udpPortShared: a dual-stack IPv6 socket on the port receives IPv4 too; one on ::1 alone does not', async (t) => {
  const bindV6 = (address: string): Promise<{ port: number; close: () => Promise<void> } | null> => holdUdp(address).catch(() => null);
  const wild = await bindV6('::');
  if (!wild) {
    t.comment('no IPv6 on this host');
    return;
  }
  const port = wild.port;
  t.equal(udpPortShared(port, process.pid), false, 'only this process holds it');
  t.equal(udpPortShared(port, process.ppid), true, "another process's view: [::] holds it for IPv4 too");
  await wild.close();
  const loop6 = await bindV6('::1');
  if (!loop6) {
    t.comment('no ::1 on this host');
    return;
  }
  t.equal(udpPortShared(loop6.port, process.ppid), false, '[::1] does not receive what is sent to 127.0.0.1');
  await loop6.close();
});

t.test('udpPortShared: a second turnserver on the port of a first one', { skip: haveCoturn ? false : 'turnserver (coturn) is not installed' }, async (t) => {
  const first = await startCoturn();
  t.teardown(() => first.stop());
  const pid = first.pid()!;
  t.equal(udpPortShared(first.port, pid), false, 'one turnserver: alone on its port');
  const dir = mkdtempSync(path.join(tmpdir(), 'devloc-demo-relay-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const conf = path.join(dir, 'turnserver.conf');
  writeFileSync(conf, [
    `listening-ip=127.0.0.1`, `listening-port=${first.port}`, 'relay-ip=127.0.0.1', 'no-tls', 'no-dtls', 'no-tcp', 'no-cli', 'no-auth',
    `pidfile=${path.join(dir, 'turnserver.pid')}`, `userdb=${path.join(dir, 'turndb')}`, 'log-file=stdout', 'simple-log',
  ].join('\n') + '\n');
  const second = spawn('turnserver', ['-c', conf], { stdio: 'ignore' });
  const exited = new Promise<void>((resolve) => second.once('exit', () => resolve()));
  t.teardown(async () => {
    second.kill('SIGTERM');
    await exited;
  });
  // It binds a moment after it starts: wait for the sharing, not a fixed time.
  const deadline = Date.now() + 20_000;
  while (!udpPortShared(first.port, pid) && Date.now() < deadline && second.exitCode === null) await new Promise((r) => setTimeout(r, 50));
  t.equal(second.exitCode, null, 'the second turnserver started (it did not refuse the port)');
  t.equal(udpPortShared(first.port, pid), true, "the first one's port is shared now");
  t.equal(udpPortShared(first.port, second.pid!), true, 'and from the second one\'s side');
});
