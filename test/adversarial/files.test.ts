// Issue 15, low items, against the real programs up to their exit: a daemon refuses to start on a
// trust file others may write (whoever can write it could make the daemon accept their tickets)
// or a secret key others may read, with one line naming the file, its mode and the fix; the agent
// refuses an identity file another user owns. The rules themselves are unit-tested in
// test/net/keyfiles.test.ts; this shows the daemons apply them at start.
import t from 'tap';
import { chmodSync, chownSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { keyFileToJson, newDeviceKey } from '../../src/wire/keys.js';
import { keys, run } from '../common/ops-helpers.js';

const isRoot = process.getuid?.() === 0;

for (const [entry, prog, service] of [['locatord/main.ts', 'devloc-locatord', 'locator'], ['matchd/main.ts', 'devloc-matchd', 'match']] as const) {
  t.test(`${prog}: a world-writable --trust file or a world-readable --service-key: refused at start`, async (t) => {
    const dir = t.testdir();
    const k = keys(dir, service);
    const args = ['--listen', '127.0.0.1', '--port', '0', '--service-key', k.serviceKey, '--trust', k.trust, '--check-config'];
    t.equal((await run(entry, args)).code, 0, 'the same files with safe modes: accepted');
    chmodSync(k.trust, 0o666);
    const ww = await run(entry, args);
    t.not(ww.code, 0, 'world-writable trust file: does not start');
    t.match(ww.stderr, new RegExp(`${prog}: .*trust file .*authd\\.pub has mode 0666: .*chmod go-w`), 'one line naming the file, its mode and the fix');
    chmodSync(k.trust, 0o644);
    chmodSync(k.serviceKey, 0o644);
    const wr = await run(entry, args);
    t.not(wr.code, 0, 'world-readable service key: does not start');
    t.match(wr.stderr, new RegExp(`${prog}: .*service key .*${service}\\.key has mode 0644: a secret key .*chmod 0400`), 'one line naming the file, its mode and the fix');
  });
}

t.test('devloc-agent: an identity file owned by another user is refused', { skip: !isRoot && 'needs root (chown)' }, async (t) => {
  const dir = t.testdir();
  chmodSync(dir, 0o755);
  const id = path.join(dir, 'device.key');
  writeFileSync(id, keyFileToJson(newDeviceKey('FILES-TEST-1')), { mode: 0o600 });
  chownSync(id, 65534, 65534);
  const r = await run('agent/main.ts', ['--identity', id, '--authd', '127.0.0.1:9', '--authd-key', id, '--state-dir', path.join(dir, 'state')]);
  t.not(r.code, 0, 'does not start');
  t.match(r.stderr, /identity file .*device\.key is owned by uid 65534/, 'says whose file it is');
});
