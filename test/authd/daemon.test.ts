// The real devloc-authd process (spawned through tsx): happy path over UDP, SIGHUP rotation via
// the config file, restart keeping the database and the locator IDs, --check-config.
import t from 'tap';
import { spawn } from 'node:child_process';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { AuthDb } from '../../src/authd/db.js';
import { checkConfig } from '../../src/authd/main.js';
import { checkCommon } from '../../src/common/daemon.js';
import { keyFileToJson, newServiceKey } from '../../src/wire/keys.js';
import { root, startDaemon } from '../helpers/daemon.js';
import { authenticate, client, fixture, verifierFor, writeAuthdKey } from './fixtures/helpers.js';

t.test('devloc-authd: serve, rotate on SIGHUP, restart', async (t) => {
  const f = fixture(t, 2);
  const conf = path.join(f.dir, 'authd.conf');
  writeFileSync(conf, `# test\nlisten = 127.0.0.1\nport = 0\nkey = ${f.authdKeyFile}\nstate-dir = ${f.stateDir}\ncookie-threshold = -1\n`);
  const start = () => startDaemon('authd/main.ts', ['--config', conf], { DEVLOC_AUTHD_RATE: '0' });
  const d1 = await start();
  t.teardown(() => d1.stop('SIGKILL'));
  const port = Number(d1.listening['port']);
  t.ok(port > 0, `listening on ${port}`);
  t.equal(d1.lines.find((l) => l['msg'] === 'listening'), d1.listening);
  const c = await client(t);
  const [dev0, dev1] = [f.devices[0]!, f.devices[1]!];
  const a1 = await authenticate(c, port, { device: dev0, authd: f.authdKey });
  const a2 = await authenticate(c, port, { device: dev0, authd: f.authdKey });
  const b1 = await authenticate(c, port, { device: dev1, authd: f.authdKey });
  t.ok(a1.ok && a2.ok && b1.ok, 'three authentications');
  if (!a1.ok || !a2.ok || !b1.ok) return;
  const v = verifierFor('locator', f.authdKey).verify(a1.grant.tickets[0]!.ticket);
  t.ok(v.ok, 'ticket verifies');
  t.same(Buffer.from(a1.grant.locatorId), Buffer.from(a2.grant.locatorId), 'stable locator ID');
  t.not(Buffer.from(a1.grant.locatorId).toString('hex'), Buffer.from(b1.grant.locatorId).toString('hex'), 'distinct per device');

  // Rotation: a new key listed first, SIGHUP.
  const { file: newFile, key: fresh } = writeAuthdKey(f.dir, 'authd-2.key');
  writeFileSync(conf, `listen = 127.0.0.1\nport = 0\nkey = ${newFile}, ${f.authdKeyFile}\nstate-dir = ${f.stateDir}\ncookie-threshold = -1\n`);
  d1.proc.kill('SIGHUP');
  await d1.waitFor((l) => l['msg'] === 'reloaded');
  t.ok(d1.lines.some((l) => l['msg'] === 'keys loaded' && l['signingKid'] === fresh.kid), 'new key signs');
  const r = await authenticate(c, port, { device: dev0, authd: f.authdKey });
  t.ok(r.ok, 'request sealed to the old key still served');
  if (!r.ok) return;
  const both = verifierFor('locator', f.authdKey, fresh);
  const vNew = both.verify(r.grant.tickets[0]!.ticket);
  t.equal(vNew.ok && vNew.kid, fresh.kid, 'new ticket carries the new kid');
  t.ok(both.verify(a1.grant.tickets[0]!.ticket).ok, 'old ticket still verifies at a verifier trusting both');

  // Revocation while running, through another connection to the database.
  const admin = AuthDb.open(f.stateDir);
  admin.setRevoked(dev1.deviceId, true);
  admin.close();
  const rev = await authenticate(c, port, { device: dev1, authd: fresh });
  t.equal(rev.ok ? 'ok' : rev.code, 17, 'REVOKED');

  t.equal(await d1.stop(), 0, 'SIGTERM: clean exit');
  t.ok(d1.lines.some((l) => l['msg'] === 'stopped'));

  // Restart: same database (revocation kept), same locator IDs, new port.
  const d2 = await start();
  t.teardown(() => d2.stop('SIGKILL'));
  const port2 = Number(d2.listening['port']);
  const a3 = await authenticate(c, port2, { device: dev0, authd: fresh });
  t.ok(a3.ok, 'served after restart');
  if (a3.ok) t.same(Buffer.from(a3.grant.locatorId), Buffer.from(a1.grant.locatorId), 'locator ID survives the restart');
  const rev2 = await authenticate(c, port2, { device: dev1, authd: fresh });
  t.equal(rev2.ok ? 'ok' : rev2.code, 17, 'still revoked');
  t.equal(await d2.stop(), 0);
});

t.test('--check-config', async (t) => {
  const f = fixture(t, 0);
  const run = (args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> => new Promise((resolve) => {
    const p = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'src/authd/main.ts'), ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    p.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    p.once('close', (status) => resolve({ status, stdout, stderr }));
  });
  const [ok, bad] = await Promise.all([
    // --port 0: --check-config binds the port, and the default may be held on a shared machine.
    run(['--check-config', '--key', f.authdKeyFile, '--state-dir', f.stateDir, '--port', '0']),
    run(['--check-config', '--key', path.join(f.dir, 'missing.key'), '--state-dir', f.stateDir]),
  ]);
  t.equal(ok.status, 0, ok.stderr);
  t.match(ok.stdout, /configuration OK/);
  t.equal(bad.status, 2);
  t.match(bad.stderr, /missing\.key: cannot read/);
  // The rest of the checks in process.
  const base = { listen: '0.0.0.0', key: [f.authdKeyFile], 'state-dir': f.stateDir, 'metrics-listen': '' };
  t.equal(checkConfig(base), null);
  // listen and metrics-listen: checked for every daemon before its own checks (checkCommon).
  t.equal(checkCommon(base), null);
  t.match(checkCommon({ ...base, listen: 'localhost' }), /^listen: "localhost" is not an IP address$/);
  t.match(checkCommon({ ...base, 'metrics-listen': 'localhost:9' }), /metrics-listen/);
  t.match(checkConfig({ ...base, key: [] }), /at least one authd key/);
  t.match(checkConfig({ ...base, key: [f.authdKeyFile, f.authdKeyFile] }), /already loaded/);
  writeFileSync(path.join(f.dir, 'svc.key'), keyFileToJson(newServiceKey('locator')), { mode: 0o600 });
  t.match(checkConfig({ ...base, key: [path.join(f.dir, 'svc.key')] }), /not an authd key/);
  mkdirSync(f.stateDir, { recursive: true });
  writeFileSync(path.join(f.stateDir, 'authd-locator.secret'), 'short\n', { mode: 0o600 });
  t.match(checkConfig(base), /locator\.secret: not a 32-byte/);
  // The locator secret is a secret file: mode checked like the keys (keys.ts keyFileProblem).
  writeFileSync(path.join(f.stateDir, 'authd-locator.secret'), `${Buffer.alloc(32, 7).toString('base64url')}\n`);
  chmodSync(path.join(f.stateDir, 'authd-locator.secret'), 0o644);
  t.match(checkConfig(base), /locator secret .*authd-locator\.secret has mode 0644/);
  chmodSync(path.join(f.stateDir, 'authd-locator.secret'), 0o600);
  t.equal(checkConfig(base), null, 'accepted at 0600');
});
