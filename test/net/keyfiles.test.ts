// The same file checks (mode and owner) for every secret or trust file (issue 15, low): the
// --trust files and service key of locatord/matchd, authd's keys, the agent's identity; authd.db
// created 0600. Real files; owner cases with chown (the tests run as root) and runuser.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { loadDeviceIdentity } from '../../src/agent/identity.js';
import { AuthDb } from '../../src/authd/db.js';
import { loadKeyRing } from '../../src/authd/keyring.js';
import { readServiceKey, readTrust } from '../../src/net/trust.js';
import { keyFileProblem, keyFileToJson, newAuthdKey, newDeviceKey, newServiceKey, publicOf, publicToJson } from '../../src/wire/keys.js';
import { root } from '../helpers/daemon.js';

const isRoot = process.getuid?.() === 0;
const NOBODY = 65534;

function write(dir: string, name: string, text: string, mode: number, uid?: number): string {
  const p = path.join(dir, name);
  writeFileSync(p, text, { mode });
  chmodSync(p, mode);
  if (uid !== undefined) chownSync(p, uid, 0);
  return p;
}

t.test('keyFileProblem: one rule, with the file, its mode and the fix', async (t) => {
  t.equal(keyFileProblem('/k', 'service key', { mode: 0o100600, uid: 0 }, 'secret', 0), null);
  t.equal(keyFileProblem('/k', 'service key', { mode: 0o100400, uid: 1000 }, 'secret', 1000), null, 'own file');
  t.match(keyFileProblem('/k', 'service key', { mode: 0o100640, uid: 0 }, 'secret', 0), /service key \/k has mode 0640: .*\(run: chmod 0400 \/k\)/);
  t.match(keyFileProblem('/k', 'service key', { mode: 0o100604, uid: 0 }, 'secret', 0), /mode 0604/);
  t.equal(keyFileProblem('/t', 'trust file', { mode: 0o100644, uid: 0 }, 'trust', 1000), null, 'a trust file may be world-readable, root-owned');
  t.match(keyFileProblem('/t', 'trust file', { mode: 0o100664, uid: 0 }, 'trust', 0), /mode 0664: it must not be writable by group or others \(run: chmod go-w \/t\)/);
  t.match(keyFileProblem('/t', 'trust file', { mode: 0o100644, uid: 1001 }, 'trust', 1000), /owned by uid 1001, not by root or this user \(uid 1000\).*chown 1000 \/t/);
  t.match(keyFileProblem('/k', 'identity file', { mode: 0o100600, uid: 1001 }, 'secret', 0), /owned by uid 1001/, 'root refuses a file another user owns');
});

t.test('locatord/matchd: --trust and --service-key files', async (t) => {
  const dir = t.testdir({});
  const authd = newAuthdKey();
  const pub = publicToJson(publicOf(authd));
  t.equal(readTrust([write(dir, 'ok.pub', pub, 0o644)]).size, 1, 'trust 0644 accepted');
  t.throws(() => readTrust([write(dir, 'ww.pub', pub, 0o666)]), /trust file .*ww\.pub has mode 0666: .*chmod go-w/, 'world-writable trust file refused');
  t.throws(() => readTrust([write(dir, 'gw.pub', pub, 0o664)]), /mode 0664/, 'group-writable trust file refused');

  const svc = keyFileToJson(newServiceKey('locator'));
  t.equal(readServiceKey(write(dir, 'ok.key', svc, 0o600)).service, 'locator', 'service key 0600 accepted');
  t.throws(() => readServiceKey(write(dir, 'wr.key', svc, 0o644)), /service key .*wr\.key has mode 0644: a secret key .*chmod 0400 .*wr\.key/, 'world-readable service key refused');
  t.throws(() => readServiceKey(write(dir, 'gr.key', svc, 0o640)), /mode 0640/, 'group-readable service key refused');

  if (isRoot) {
    t.throws(() => readTrust([write(dir, 'nb.pub', pub, 0o644, NOBODY)]), /owned by uid 65534/, 'trust file owned by another user refused');
    t.throws(() => readServiceKey(write(dir, 'nb.key', svc, 0o600, NOBODY)), /owned by uid 65534/, 'service key owned by another user refused');
  }
});

t.test('authd: key files refused (not only warned about) when group/world-readable or foreign', async (t) => {
  const dir = t.testdir({});
  const k = keyFileToJson(newAuthdKey());
  t.equal(loadKeyRing([write(dir, 'a.key', k, 0o600)]).kids.length, 1);
  t.throws(() => loadKeyRing([write(dir, 'b.key', k, 0o644)]), /authd key .*b\.key has mode 0644: .*chmod 0400/);
  if (isRoot) t.throws(() => loadKeyRing([write(dir, 'c.key', k, 0o600, NOBODY)]), /owned by uid 65534/);
});

t.test('authd.db is created 0600 whatever the umask', async (t) => {
  const dir = t.testdir({});
  const old = process.umask(0o022);
  try {
    const db = AuthDb.open(path.join(dir, 'state'));
    db.close();
  } finally {
    process.umask(old);
  }
  t.equal(statSync(path.join(dir, 'state', 'authd.db')).mode & 0o777, 0o600);
});

t.test('agent identity: owned by another user refused; as nobody, a root-owned trust file is fine and another user\'s is not', { skip: !isRoot && 'needs root (chown, runuser)' }, async (t) => {
  const dir = t.testdir({});
  chmodSync(dir, 0o755);
  const dev = keyFileToJson(newDeviceKey('OWNER-TEST-1'));
  const r = loadDeviceIdentity(write(dir, 'id.key', dev, 0o600, NOBODY));
  t.notOk(r.ok, 'root does not load an identity nobody owns');
  if (!r.ok) t.match(r.error, /identity file .*id\.key is owned by uid 65534/);

  // The same check run as nobody: root's file accepted, a file of uid 1 (daemon) refused.
  const pub = publicToJson(publicOf(newAuthdKey()));
  const rootOwned = write(dir, 'root.pub', pub, 0o644, 0);
  const otherOwned = write(dir, 'daemon.pub', pub, 0o644, 1);
  const script = `import { readTrust } from ${JSON.stringify(path.join(root, 'src/net/trust.ts'))};
for (const f of process.argv.slice(1)) { try { readTrust([f]); console.log('ok ' + f); } catch (e) { console.log('refused ' + e.message); } }`;
  const run = spawnSync('runuser', ['-u', 'nobody', '--', process.execPath, '--import', 'tsx', '--input-type=module', '-e', script, rootOwned, otherOwned], { cwd: root, encoding: 'utf8', timeout: 120_000 });
  t.equal(run.status, 0, run.stderr);
  t.match(run.stdout, new RegExp(`ok ${rootOwned}`), 'nobody reads a root-owned trust file');
  t.match(run.stdout, /refused .*daemon\.pub is owned by uid 1, not by root or this user \(uid 65534\)/, 'nobody refuses a trust file uid 1 owns');
});
