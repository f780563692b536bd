// Issue 19 against the real programs (spawned through tsx), up to their exit: --version on every
// program, unknown flags in one line with a suggestion (exit 2), config errors that name the
// file line and the key, --check-config's resource checks, metrics-allow-remote, and `devloc
// devices` / `enroll` on a state directory they may not read.
import t from 'tap';
import { chmodSync, chownSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { AuthDb } from '../../src/authd/db.js';
import { keyFileToJson, newAuthdKey, newDeviceKey, publicOf, publicToJson } from '../../src/wire/keys.js';
import { holdUdp, keys, run } from './ops-helpers.js';

const pkgVersion = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

t.test('--version on every program: "devloc-<prog> <version>", exit 0', async (t) => {
  for (const [entry, prog] of [
    ['cli/devloc.ts', 'devloc'], ['authd/main.ts', 'devloc-authd'], ['locatord/main.ts', 'devloc-locatord'],
    ['matchd/main.ts', 'devloc-matchd'], ['agent/main.ts', 'devloc-agent'],
  ] as const) {
    const r = await run(entry, ['--version']);
    t.same(r, { code: 0, stdout: `${prog} ${pkgVersion}\n`, stderr: '' }, prog);
  }
});

t.test('unknown or misspelt flags: exit 2, one line naming the flag and the closest option', async (t) => {
  const r = await run('locatord/main.ts', ['--max-tll', '30']);
  t.same(r, { code: 2, stdout: '', stderr: 'devloc-locatord: unknown option --max-tll (did you mean --max-ttl?)\n' });
  const c = await run('matchd/main.ts', ['--maxParty=3']);
  t.same(c, { code: 2, stdout: '', stderr: 'devloc-matchd: unknown option --maxParty (did you mean --max-party?)\n' }, 'camelCase is not an option');
  const bad = await run('authd/main.ts', ['--log-level', 'loud']);
  t.equal(bad.code, 2);
  t.equal(bad.stderr.split('\n').filter(Boolean).length, 1, 'a bad choice is one line too');
  t.match(bad.stderr, /^devloc-authd: configuration error: --log-level: must be one of debug, info, warn, error \(got "loud"\)/);
  const cli = await run('cli/devloc.ts', ['devices', '--state-dri', '/nonexistent']);
  t.same(cli, { code: 2, stdout: '', stderr: 'devloc: unknown option --state-dri (did you mean --state-dir?)\n' }, 'devloc subcommands too');
});

t.test('config file: wrong case or spacing, localhost, prototype names, metrics-listen beyond loopback', async (t) => {
  const dir = t.testdir();
  const k = keys(dir, 'match');
  const conf = path.join(dir, 'matchd.conf');
  const base = `service-key = ${k.serviceKey}\ntrust = ${k.trust}\n`;
  const check = async (extra: string, args: string[] = []) => {
    writeFileSync(conf, base + extra);
    return run('matchd/main.ts', ['--config', conf, '--check-config', '--port', '0', ...args]);
  };
  t.same(await check('Max-Party = 4\n'), { code: 2, stdout: '', stderr: `devloc-matchd: configuration error: ${conf}:3: "Max-Party" is not a key; keys are lower case with '-' (did you mean "max-party"?)\n` });
  t.match(await check('max party = 4\n'), { code: 2, stderr: `${conf}:3: "max party" is not a key` });
  t.same(await check('# x\nlisten = localhost\n'), { code: 2, stdout: '', stderr: `devloc-matchd: configuration error: ${conf}:4: listen: "localhost" is not an IP address\n` });
  t.same(await check('constructor = 1\n'), { code: 2, stdout: '', stderr: `devloc-matchd: configuration error: ${conf}:3: unknown key "constructor"\n` }, 'no crash');
  t.match(await check('metrics-listen = 0.0.0.0:0\n'), { code: 2, stderr: /metrics-listen: 0\.0\.0\.0:0 is not a loopback address; set metrics-allow-remote = yes/ });
  t.match(await check('metrics-listen = 0.0.0.0:0\nmetrics-allow-remote = yes\nlisten = 127.0.0.1\n'), { code: 0, stdout: /configuration OK/ });
});

t.test('listen that is not an IP address: the same words from every daemon, before its keys are read', async (t) => {
  for (const daemon of ['authd', 'locatord', 'matchd']) {
    const r = await run(`${daemon}/main.ts`, ['--check-config', '--listen', 'localhost']);
    t.same(r, { code: 2, stdout: '', stderr: `devloc-${daemon}: configuration error: listen: "localhost" is not an IP address\n` }, daemon);
  }
  const k = keys(t.testdir());
  const alt = await run('locatord/main.ts', ['--check-config', '--listen', '127.0.0.1', '--reflector-alt-ip', 'alt.example', '--service-key', k.serviceKey, '--trust', k.trust]);
  t.same(alt, { code: 2, stdout: '', stderr: 'devloc-locatord: configuration error: reflector-alt-ip: "alt.example" is not an IP address\n' });
  const none = await run('locatord/main.ts', ['--check-config']);
  t.same(none, { code: 2, stdout: '', stderr: 'devloc-locatord: configuration error: service-key is required (devloc keygen service)\n' }, 'locatord and matchd: one check of the service key and trust files');
});

t.test('--check-config: state dir, control socket directory and ports, each named', async (t) => {
  const dir = t.testdir();
  const k = keys(dir);
  const held = await holdUdp();
  t.teardown(() => held.close());
  const file = path.join(dir, 'a-file');
  writeFileSync(file, '');
  const r = await run('locatord/main.ts', [
    '--check-config', '--listen', '127.0.0.1', '--port', '0', '--reflector-port', String(held.port), '--reflector-alt-port', '0',
    '--service-key', k.serviceKey, '--trust', k.trust,
  ], { DEVLOC_LOCATORD_STATE_DIR: path.join(file, 'state') });
  t.equal(r.code, 2);
  t.match(r.stderr, `devloc-locatord: configuration error: --state-dir ${path.join(file, 'state')} (set at environment DEVLOC_LOCATORD_STATE_DIR): ${file} is not a directory`);
  t.match(r.stderr, `devloc-locatord: configuration error: --reflector-port ${held.port}: UDP 127.0.0.1:${held.port} in use`);
  t.notMatch(r.stdout, /configuration OK/);

  const ok = await run('locatord/main.ts', [
    '--check-config', '--listen', '127.0.0.1', '--port', '0', '--reflector-port', '0', '--reflector-alt-port', '0',
    '--service-key', k.serviceKey, '--trust', k.trust, '--state-dir', path.join(dir, 'new', 'state'),
  ]);
  t.same(ok, { code: 0, stdout: 'devloc-locatord: configuration OK\n', stderr: '' }, 'a state dir that can be created is fine');

  // --reflector-port -1 runs no reflector: its alternate port is not checked either.
  const off = await run('locatord/main.ts', [
    '--check-config', '--listen', '127.0.0.1', '--port', '0', '--reflector-port', '-1', '--reflector-alt-port', String(held.port),
    '--service-key', k.serviceKey, '--trust', k.trust, '--state-dir', path.join(dir, 'new', 'state'),
  ]);
  t.same(off, { code: 0, stdout: 'devloc-locatord: configuration OK\n', stderr: '' }, 'no reflector: its alternate port in use is no problem');
});

// Permission checks need a user that is not root (root may read anything): nobody.
const asNobody = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : undefined;

t.test('devloc devices / enroll on a state dir they may not read: permission denied and the path', { skip: asNobody ? false : 'needs root to switch to nobody' }, async (t) => {
  const dir = t.testdir();
  chmodSync(dir, 0o755);
  const closed = path.join(dir, 'closed');
  mkdirSync(closed, { mode: 0o700 });
  AuthDb.open(closed, { create: true }).close();
  const home = path.join(dir, 'home'); // tsx writes its cache in TMPDIR
  mkdirSync(home);
  chownSync(home, asNobody!.uid, asNobody!.gid);
  const env = { HOME: home, TMPDIR: home, PATH: process.env['PATH'] ?? '/usr/bin:/bin' };
  const r = await run('cli/devloc.ts', ['devices', '--state-dir', closed], env, asNobody!, false);
  t.same(r, { code: 1, stdout: '', stderr: `devloc devices: permission denied: ${closed} (run as the user devloc-authd runs as, e.g. sudo -u devloc, or pass --state-dir)\n` });
  const list = path.join(dir, 'devices.jsonl');
  writeFileSync(list, '');
  chmodSync(list, 0o644);
  const e = await run('cli/devloc.ts', ['enroll', '--state-dir', closed, list], env, asNobody!, false);
  t.match(e, { code: 1, stderr: `devloc enroll: permission denied: ${closed}` });
  t.notMatch(e.stderr, /unable to open database file/);

  const open = path.join(dir, 'open');
  mkdirSync(open, { mode: 0o755 });
  AuthDb.open(open, { create: true }).close();
  chmodSync(AuthDb.fileIn(open), 0o600);
  const f = await run('cli/devloc.ts', ['devices', '--state-dir', open], env, asNobody!, false);
  t.same(f, { code: 1, stdout: '', stderr: `devloc devices: permission denied: ${AuthDb.fileIn(open)} (run as the user devloc-authd runs as, e.g. sudo -u devloc, or pass --state-dir)\n` }, 'the database file itself');
});

t.test('devloc-agent as nobody: a control socket it cannot create is named, by --check-config and at start', { skip: asNobody ? false : 'needs root to switch to nobody' }, async (t) => {
  const dir = t.testdir();
  chmodSync(dir, 0o755);
  const home = path.join(dir, 'home');
  mkdirSync(home);
  chownSync(home, asNobody!.uid, asNobody!.gid);
  const closed = path.join(dir, 'closed');
  mkdirSync(closed, { mode: 0o755 });
  const device = newDeviceKey();
  const authd = newAuthdKey();
  const identity = path.join(dir, 'device.key');
  writeFileSync(identity, keyFileToJson(device), { mode: 0o400 });
  chownSync(identity, asNobody!.uid, asNobody!.gid);
  const authdPub = path.join(dir, 'authd.pub');
  writeFileSync(authdPub, publicToJson(publicOf(authd)));
  const socket = path.join(closed, 'sub', 'agent.sock');
  // authd: a loopback port nothing answers on (the agent never gets that far).
  const args = ['--identity', identity, '--authd-key', authdPub, '--authd', '127.0.0.1:9', '--control-socket', socket, '--state-dir', home];
  const env = { HOME: home, TMPDIR: home, PATH: process.env['PATH'] ?? '/usr/bin:/bin' };
  const check = await run('agent/main.ts', [...args, '--check-config'], env, asNobody!, false);
  t.same(check, { code: 2, stdout: '', stderr: `devloc-agent: configuration error: --control-socket ${socket}: cannot create ${path.join(closed, 'sub')}: ${closed} is not writable\n` });
  const start = await run('agent/main.ts', args, env, asNobody!, false);
  t.equal(start.code, 1);
  t.equal(start.stderr, `devloc-agent: cannot start: --control-socket ${socket}: mkdir ${path.join(closed, 'sub')}: permission denied; change --control-socket or the ownership/mode of ${path.join(closed, 'sub')}\n`);
});
