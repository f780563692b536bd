// Issue 19 against running daemons: the version in the first log line and in
// devloc_build_info, an OS error at start that names the option (the reflector port when only
// --port was given), the shared reload report (applied / needs a restart) from locatord and
// matchd, and --log-format text.
import t from 'tap';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { root, startDaemon } from '../helpers/daemon.js';
import { holdUdp, keys, run } from './ops-helpers.js';
import { scrapeMetrics } from '../helpers/metrics.js';

const pkgVersion = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

t.test('locatord: an in-use reflector port is named as the option to change', async (t) => {
  const dir = t.testdir();
  const k = keys(dir);
  const held = await holdUdp();
  t.teardown(() => held.close());
  const r = await run('locatord/main.ts', [
    '--listen', '127.0.0.1', '--port', '0', '--reflector-port', String(held.port), '--reflector-alt-port', '0',
    '--service-key', k.serviceKey, '--trust', k.trust, '--state-dir', path.join(dir, 'state'),
  ]);
  t.equal(r.code, 1);
  t.equal(r.stderr, `devloc-locatord: cannot start: --reflector-port ${held.port}: 127.0.0.1:${held.port} is in use; choose another --reflector-port or stop what holds it\n`);
  const failed = r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l['msg'] === 'failed to start');
  t.match(failed, { err: /^--reflector-port /, code: 'EADDRINUSE', option: 'reflector-port' }, 'the log line: the text, the code and the option');
});

t.test('locatord: version in the first line and build_info; SIGHUP reports applied and needs-restart; text logs', async (t) => {
  const dir = t.testdir();
  const k = keys(dir);
  const conf = path.join(dir, 'locatord.conf');
  const base = [
    'listen = 127.0.0.1', 'port = 0', 'reflector-port = -1', `service-key = ${k.serviceKey}`, `trust = ${k.trust}`,
    `state-dir = ${path.join(dir, 'state')}`, 'metrics-listen = 127.0.0.1:0',
  ].join('\n');
  writeFileSync(conf, `${base}\nmax-ttl = 3600\n`);
  const d = await startDaemon('locatord/main.ts', ['--config', conf]);
  t.teardown(() => d.stop('SIGKILL'));
  t.equal(d.lines[0]!['msg'], 'listening', 'still the first line');
  t.equal(d.lines[0]!['version'], pkgVersion, 'carrying the version');
  const metricsLine = await d.waitFor((l) => l['msg'] === 'metrics endpoint');
  const port = Number(String(metricsLine['listen']).split(':').pop());
  t.match(await scrapeMetrics(port), new RegExp(`^devloc_build_info\\{version="${pkgVersion.replace(/\./g, '\\.')}"\\} 1$`, 'm'));

  writeFileSync(conf, `${base.replace('metrics-listen = 127.0.0.1:0', 'metrics-listen = 127.0.0.1:1')}\nmax-ttl = 600\nlog-format = text\n`);
  d.proc.kill('SIGHUP');
  // The reload line is the first in the new format: text, parsed by the helper as non-JSON.
  const line = await d.waitFor((l) => l['msg'] === 'non-json' && / info reloaded /.test(String(l['text'])));
  t.match(String(line['text']), /^\d{4}-\d\d-\d\dT[\d:.]+Z info reloaded svc=locatord applied=\["log-format","max-ttl"\] needsRestart=\["metrics-listen"\]$/);
});

t.test('matchd: the same reload words; --log-format text from the environment', async (t) => {
  const dir = t.testdir();
  const k = keys(dir, 'match');
  const conf = path.join(dir, 'matchd.conf');
  const base = `listen = 127.0.0.1\nservice-key = ${k.serviceKey}\ntrust = ${k.trust}\n`;
  writeFileSync(conf, `${base}port = 0\nmax-party = 4\n`);
  const d = await startDaemon('matchd/main.ts', ['--config', conf]);
  t.teardown(() => d.stop('SIGKILL'));
  writeFileSync(conf, `${base}port = 1\nmax-party = 3\n`);
  d.proc.kill('SIGHUP');
  const r = await d.waitFor((l) => l['msg'] === 'reloaded');
  t.same({ applied: r['applied'], needsRestart: r['needsRestart'] }, { applied: ['max-party'], needsRestart: ['port'] });
  d.proc.kill('SIGHUP');
  const again = await d.waitFor((l) => l['msg'] === 'reloaded' && l !== r);
  t.same({ applied: again['applied'], needsRestart: again['needsRestart'] }, { applied: [], needsRestart: ['port'] }, 'a change not applied is reported again');

  // Text from the start: the helper waits for a JSON "listening" line, so read stdout here.
  const p = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'src/matchd/main.ts'), '--config', conf, '--port', '0'], {
    cwd: root, env: { ...process.env, DEVLOC_MATCHD_LOG_FORMAT: 'text' }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => void p.kill('SIGKILL'));
  const first = await new Promise<string>((resolve, reject) => {
    let buf = '';
    p.stdout.setEncoding('utf8').on('data', (c: string) => {
      buf += c;
      if (buf.includes('\n')) resolve(buf.slice(0, buf.indexOf('\n')));
    });
    p.once('exit', (code) => reject(new Error(`matchd exited ${code}`)));
  });
  t.match(first, new RegExp(`^\\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z info listening svc=matchd version=${pkgVersion.replace(/\./g, '\\.')} .*port=\\d+`));
});
