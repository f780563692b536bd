// src/common/spawn.ts, the one "spawn a daemon and wait until it listens" of the demo, the bench
// and the tests, against a stand-in daemon (fixtures/fake-daemon.ts): its output piped to us or
// appended to a log file (an old "listening" line already there is not taken), a line split
// mid-character, an exit before listening reported with stderr or the log's last lines, the
// stdin watchdog (on by default: a parent killed from outside leaves no daemon behind), and a
// log file removed before the exit is noticed.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { entryPoint, isListening, spawnDaemon, startDaemon } from '../../src/common/spawn.js';

const fake = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'fake-daemon.ts');

t.test('entry points come from the tree of spawn.ts: the sources through tsx here', async (t) => {
  const e = entryPoint('locatord/main');
  t.equal(e.file, path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/locatord/main.ts'));
  t.equal(e.execArgv[0], '--import');
  t.match(e.execArgv[1], /tsx/);
  t.same(entryPoint('/opt/x/main.js'), { file: '/opt/x/main.js', execArgv: [] }, 'an absolute .js file runs as is');
});

t.test('piped: resolves at "listening" with its fields, follows later lines, stop waits for the exit', async (t) => {
  const d = await startDaemon({ entry: fake, args: ['listen'] });
  t.teardown(() => d.stop('SIGKILL'));
  t.same(d.listening, { msg: 'listening', port: 4242, 'é': 'ü' }, 'a line split in the middle of a character is whole');
  t.equal(d.lines[0], d.listening, 'first line');
  await d.waitFor((l) => l['msg'] === 'ready');
  t.equal(await d.stop(), 0, 'exit code after SIGTERM');
  t.same(d.lines.map((l) => l['msg']), ['listening', 'ready', 'stopping'], 'every line kept, the last one before exiting too');
  t.equal(await d.stop(), 0, 'stopping again: the same code');
});

t.test('an exit before listening rejects with the code and stderr, and leaves nothing running', async (t) => {
  await t.rejects(startDaemon({ entry: fake, args: ['die'], name: 'fake' }), /fake exited \(3\) \(stderr: boom: cannot bind\)/);
  const d = spawnDaemon({ entry: fake, args: ['die'] });
  await d.exited;
  t.same(d.lines, [{ msg: 'non-json', text: 'starting, not JSON' }], 'a line that is not JSON is kept as text');
  await t.rejects(d.waitFor(isListening), /exited \(3\)/, 'waiting after the exit rejects at once');
});

t.test('a command that cannot start rejects, and stop() does not wait for an exit that never comes', async (t) => {
  await t.rejects(startDaemon({ entry: fake, args: ['listen'], prefix: ['/nonexistent/devloc-wrapper'], name: 'fake' }), /fake could not run: .*ENOENT/);
});

t.test('log file: appended to, the old content ignored, read while someone waits', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'devloc-spawn-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const log = path.join(dir, 'fake.log');
  writeFileSync(log, JSON.stringify({ msg: 'listening', port: 1 }) + '\n');
  const d = await startDaemon({ entry: fake, args: ['listen'], logFile: log, watchdog: true });
  t.equal(d.listening['port'], 4242, 'the line of this run, not of the last');
  t.equal(d.stderr.length, 0);
  // The watchdog: our end of its stdin closes (as when we die) and it stops itself.
  d.proc.stdin!.end();
  await d.waitFor((l) => l['msg'] === 'stopping');
  t.equal(await d.exited, 0);
  t.match(readFileSync(log, 'utf8'), /"port":1}\n.*"listening".*\n.*"ready".*\n.*"stopping"/s, 'the file has both runs');

  const died = path.join(dir, 'died.log');
  await t.rejects(startDaemon({ entry: fake, args: ['die'], logFile: died, name: 'fake' }), /fake exited \(3\) \(log .*died\.log:\nstarting, not JSON\nboom: cannot bind/);
});

t.test('a parent killed with SIGKILL leaves no daemon running: the watchdog is on by default', async (t) => {
  const parent = spawn(process.execPath, [...entryPoint(fake).execArgv, path.join(path.dirname(fake), 'spawning-parent.ts')], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => parent.kill('SIGKILL'));
  const [first] = (await once(parent.stdout!, 'data')) as [Buffer];
  const pid = Number(first.toString().trim());
  t.ok(pid > 0, 'the daemon started');
  // Gone, or a zombie its new parent has not reaped yet.
  const alive = (): boolean => {
    try {
      return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
    } catch {
      return false;
    }
  };
  t.ok(alive(), 'running while its parent lives');
  parent.kill('SIGKILL');
  // Its stdin closes with the parent; it stops itself (SIGTERM). A guard, not a measurement.
  const deadline = Date.now() + 60_000;
  while (alive() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  const left = alive();
  if (left) process.kill(pid, 'SIGKILL');
  t.notOk(left, 'gone after its parent was killed');
});

t.test('a log file removed before the exit is noticed: the waiter is told, nothing throws', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'devloc-spawn-'));
  const d = await startDaemon({ entry: fake, args: ['listen'], logFile: path.join(dir, 'fake.log') });
  const waiting = d.waitFor((l) => l['msg'] === 'never logged');
  d.proc.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true }); // before the exit event can run
  await t.rejects(waiting, /exited \(SIGKILL\)/);
});

t.test('waitFor gives up at its timeout, naming the last lines', async (t) => {
  const d = await startDaemon({ entry: fake, args: ['listen'] });
  t.teardown(() => d.stop('SIGKILL'));
  await t.rejects(d.waitFor((l) => l['msg'] === 'never logged', 50), /no such log line within 50 ms/);
});
