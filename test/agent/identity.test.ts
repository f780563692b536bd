// The device identity file: read only, refused with a clear message when missing, unreadable,
// malformed or writable by others, and never quoted (device ID, key) in any message.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { loadAuthdKey, loadDeviceIdentity, parseAuthdKey } from '../../src/agent/identity.js';
import { keyFileToJson, newAuthdKey, newDeviceKey, newServiceKey, publicOf, publicToJson } from '../../src/wire/keys.js';
import { root } from '../helpers/daemon.js';

const device = newDeviceKey('SECRET-DEVICE-0042');
if (device.kind !== 'device') throw new Error('unreachable');
const secret = device.sign.secret.toString('base64url');

function write(dir: string, name: string, text: string, mode: number): string {
  const p = path.join(dir, name);
  writeFileSync(p, text, { mode });
  chmodSync(p, mode);
  return p;
}

t.test('library: accepted and refused identity files', async (t) => {
  const dir = t.testdir({});
  const good = write(dir, 'good.key', keyFileToJson(device), 0o600);
  const before = readFileSync(good);
  const mtime = statSync(good).mtimeMs;
  const ok = loadDeviceIdentity(good);
  t.ok(ok.ok, 'mode 0600 accepted');
  if (ok.ok) t.equal(ok.value.deviceId, device.deviceId);
  t.ok(loadDeviceIdentity(write(dir, 'r.key', keyFileToJson(device), 0o400)).ok, 'mode 0400 accepted');
  t.same(readFileSync(good), before, 'file unchanged');
  t.equal(statSync(good).mtimeMs, mtime, 'never written');

  const refusals: [string, string, RegExp][] = [
    ['missing', path.join(dir, 'nope.key'), /does not exist/],
    ['a directory', (mkdirSync(path.join(dir, 'd.key')), path.join(dir, 'd.key')), /not a regular file/],
    ['mode 0666', write(dir, 'w.key', keyFileToJson(device), 0o666), /mode 0666: a secret key must not be readable or writable by group or others \(run: chmod 0400 .*w\.key\)/],
    ['mode 0620', write(dir, 'gw.key', keyFileToJson(device), 0o620), /mode 0620/],
    ['mode 0644', write(dir, 'wr.key', keyFileToJson(device), 0o644), /mode 0644: a secret key must not be readable/],
    ['mode 0640 (group-readable)', write(dir, 'g.key', keyFileToJson(device), 0o640), /mode 0640/],
    ['not JSON', write(dir, 'j.key', `{"kind":"device","deviceId":"${device.deviceId}","sign":{"secret":"${secret}"`, 0o600), /malformed: not JSON/],
    ['wrong kind', write(dir, 's.key', keyFileToJson(newServiceKey('locator')), 0o600), /kind "service", not "device"/],
    ['bad key', write(dir, 'b.key', keyFileToJson(device).replace(device.sign.public.toString('base64url'), 'AAAA'), 0o600), /malformed/],
    ['public half only', write(dir, 'p.key', publicToJson(publicOf(device)), 0o600), /malformed/],
  ];
  for (const [what, p, re] of refusals) {
    const r = loadDeviceIdentity(p);
    t.notOk(r.ok, `${what} refused`);
    if (!r.ok) {
      t.match(r.error, re, `${what}: ${r.error}`);
      t.notOk(r.error.includes(device.deviceId) || r.error.includes(secret), `${what}: message names neither ID nor key`);
    }
  }
});

t.test('authd public key', async (t) => {
  const k = newAuthdKey();
  if (k.kind !== 'authd') throw new Error('unreachable');
  const pub = parseAuthdKey(publicToJson(publicOf(k)));
  t.ok(pub.ok);
  if (pub.ok) t.same(pub.value.seal, k.seal.public);
  t.ok(parseAuthdKey(keyFileToJson(k)).ok, 'the private file also gives the public half');
  t.match(parseAuthdKey(publicToJson(publicOf(newServiceKey('x'))) ), { ok: false, error: /not "authd-public"/ });
  t.match(parseAuthdKey('nope'), { ok: false, error: /not JSON/ });
  const dir = t.testdir({});
  t.match(loadAuthdKey(write(dir, 'a.pub', publicToJson(publicOf(k)), 0o666)), { ok: false, error: /must not be writable/ });
  t.ok(loadAuthdKey(write(dir, 'b.pub', publicToJson(publicOf(k)), 0o644)).ok, 'a public key may be world-readable');
});

function agentRun(args: string[], asNobody = false): { status: number | null; out: string } {
  const node = [process.execPath, '--import', 'tsx', path.join(root, 'src/agent/main.ts'), ...args];
  // As nobody, without tap's process-info hook (tap puts it back into NODE_OPTIONS of every
  // child; as nobody it could not write its record into root's .tap directory).
  const argv = asNobody ? ['env', '-u', 'NODE_OPTIONS', ...node] : node;
  const r = spawnSync(argv[0]!, argv.slice(1), { cwd: root, encoding: 'utf8', timeout: 30_000, ...(asNobody ? { uid: 65534, gid: 65534 } : {}) });
  return { status: r.status, out: r.stdout + r.stderr };
}

t.test('daemon: refuses to start, exit status 2, message names the problem not the secret', async (t) => {
  const dir = t.testdir({});
  const k = newAuthdKey();
  const authdKey = write(dir, 'authd.pub', publicToJson(publicOf(k)), 0o644);
  const base = ['--authd', '127.0.0.1:9', '--authd-key', authdKey, '--control-socket', path.join(dir, 'a.sock'), '--state-dir', dir];
  const cases: [string, string, RegExp][] = [
    ['missing', path.join(dir, 'missing.key'), /identity file .*missing\.key does not exist/],
    ['malformed', write(dir, 'm.key', `{"deviceId":"${device.deviceId}", "sign": "${secret}"`, 0o600), /malformed: not JSON/],
    ['mode 0666', write(dir, 'w.key', keyFileToJson(device), 0o666), /mode 0666/],
  ];
  for (const [what, file, re] of cases) {
    const r = agentRun(['--identity', file, ...base]);
    t.equal(r.status, 2, `${what}: exit status 2`);
    t.match(r.out, re, `${what}: ${r.out.trim()}`);
    t.notOk(r.out.includes(device.deviceId) || r.out.includes(secret), `${what}: output names neither ID nor key`);
  }
  // Unreadable: root reads anything, so run as nobody against a root-owned 0600 file.
  if (process.getuid?.() === 0) {
    chmodSync(dir, 0o755);
    const r = agentRun(['--identity', write(dir, 'root.key', keyFileToJson(device), 0o600), ...base, '--check-config'], true);
    t.equal(r.status, 2, 'unreadable: exit status 2');
    t.match(r.out, /is not readable \(permission denied\)/, `unreadable: ${r.out.trim()}`);
  }
  const good = write(dir, 'good.key', keyFileToJson(device), 0o600);
  const ok = agentRun(['--identity', good, ...base, '--check-config']);
  t.equal(ok.status, 0, ok.out);
  t.match(ok.out, /configuration OK/);
  t.notOk(ok.out.includes(device.deviceId));
  const noAuthd = agentRun(['--identity', good, '--authd-key', authdKey, '--check-config']);
  t.equal(noAuthd.status, 2);
  t.match(noAuthd.out, /--authd is required/);
  const env = spawnSync(process.execPath, ['--import', 'tsx', path.join(root, 'src/agent/main.ts'), '--check-config'], {
    cwd: root, encoding: 'utf8', timeout: 30_000,
    env: { ...process.env, DEVLOC_AGENT_IDENTITY: good, DEVLOC_AGENT_AUTHD: '127.0.0.1:9', DEVLOC_AGENT_AUTHD_KEY: authdKey },
  });
  t.equal(env.status, 0, `DEVLOC_AGENT_* variables: ${env.stderr}`);
});
