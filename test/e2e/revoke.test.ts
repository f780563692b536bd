// Revocation now (issue 19, item 2), with the real daemons: `devloc revoke` writes authd.db;
// authd notices, pushes a signed REVOKE to every registered service until each acknowledges;
// locatord and matchd end the terminal's sessions and registration, and refuse it; the agent
// shows REVOKED. With --store redis and two locatord instances: the terminal registered
// through instance B, authd tells instance A (the registered address), and B refuses it too
// (the record and the refusal are in Redis).
import path from 'node:path';
import t from 'tap';
import { eventually, spawnNode, stack } from '../agent/stack.js';
import { run } from '../common/ops-helpers.js';
import { hasRedis, startRedis } from '../scale/fixtures/redis-server.js';

const ctl = (args: string[]) => run('cli/devloc.ts', ['ctl', ...args]);
const revoke = (stateDir: string, deviceId: string) => run('cli/devloc.ts', ['revoke', deviceId, '--state-dir', stateDir]);

t.test('embedded store: revoke takes the terminal off locatord and matchd', async (t) => {
  const s = await stack(t, { matchd: true });
  const alice = await s.agent('alice', ['--locatord', s.locatordAddr, '--matchd', s.matchdAddr!]);
  const st = await eventually(async () => {
    const x = await alice.status();
    return x.registered ? x : undefined;
  }, 30_000, 'alice registered');
  await s.locatord.waitFor((l) => l['msg'] === 'control socket', 20_000, 'locatord control socket');
  const r = await revoke(path.join(s.dir, 'authd-state'), alice.device.deviceId);
  t.equal(r.code, 0, r.stderr);
  await s.authd.waitFor((l) => l['msg'] === 'revocation delivered' && l['service'] === 'locator', 30_000, 'locatord acknowledged');
  await s.authd.waitFor((l) => l['msg'] === 'revocation delivered' && l['service'] === 'match', 30_000, 'matchd acknowledged');
  await s.locatord.waitFor((l) => l['msg'] === 'revoked' && l['locatorId'] === st.locatorId, 10_000, 'locatord revoked line');
  await s.matchd!.waitFor((l) => l['msg'] === 'revoked' && l['locatorId'] === st.locatorId, 10_000, 'matchd revoked line');
  const show = await ctl(['locatord', 'show', st.locatorId!, '--socket', s.ctl.locatord, '--json']);
  t.equal(show.code, 0, show.stderr);
  const o = JSON.parse(show.stdout) as { online: boolean; sessions: { ended: string | null }[] };
  t.equal(o.online, false, 'no longer registered');
  t.ok(o.sessions.length > 0 && o.sessions.every((x) => x.ended === 'REVOKED'), 'its sessions ended with REVOKED');
  const told = await eventually(async () => {
    const x = await alice.status();
    return x.lastError && /REVOKED/.test(x.lastError.error) ? x : undefined;
  }, 30_000, 'alice told REVOKED');
  t.equal(told.registered, false);
  t.match(told.lastError!.error, /REVOKED/);
});

t.test('redis store, two instances: the other instance refuses the terminal too', { skip: hasRedis() ? false : 'redis-server not on the PATH' }, async (t) => {
  const redis = await startRedis(t);
  const storeArgs = ['--store', 'redis', '--redis-url', redis.url, '--redis-timeout-ms', '2000'];
  const s = await stack(t, { locatordArgs: storeArgs });
  // Instance B: same service key and Redis, its own port; authd knows only instance A's address.
  const b = spawnNode('locatord/main.ts', [
    '--control-socket', path.join(s.dir, 'locatord-b.ctl'), '--listen', '127.0.0.1', '--port', '0', '--service-key', path.join(s.dir, 'locator.key'),
    '--trust', s.authdPubFile, '--state-dir', path.join(s.dir, 'locatord-b-state'), '--reflector-port', '-1', '--min-ttl', '4', '--default-ttl', '8',
    '--rate', '0', '--query-rate', '0', '--query-source-rate', '0', '--sweep-interval', '200', ...storeArgs,
  ]);
  t.teardown(() => b.stop('SIGKILL'));
  const bl = await b.waitFor((l) => l['msg'] === 'listening', 20_000, 'locatord B listening');
  const bAddr = `127.0.0.1:${Number(bl['port'])}`;
  const alice = await s.agent('alice', ['--locatord', bAddr]);
  const st = await eventually(async () => {
    const x = await alice.status();
    return x.registered ? x : undefined;
  }, 30_000, 'alice registered through B');
  t.equal(st.locatord, bAddr, 'alice talks to instance B');
  const r = await revoke(path.join(s.dir, 'authd-state'), alice.device.deviceId);
  t.equal(r.code, 0, r.stderr);
  await s.authd.waitFor((l) => l['msg'] === 'revocation delivered' && l['service'] === 'locator', 30_000, 'instance A acknowledged');
  await s.locatord.waitFor((l) => l['msg'] === 'revoked' && l['locatorId'] === st.locatorId, 10_000, 'instance A revoked line');
  // Offline everywhere at once: the record is gone from Redis, B finds nothing.
  const show = await ctl(['locatord', 'show', st.locatorId!, '--socket', path.join(s.dir, 'locatord-b.ctl'), '--json']);
  t.not(show.code === 0 && JSON.parse(show.stdout).online, true, 'B does not show it online');
  // B refuses the terminal when it registers again (its REFRESH finds no record).
  const told = await eventually(async () => {
    const x = await alice.status();
    return x.lastError && /REVOKED/.test(x.lastError.error) ? x : undefined;
  }, 60_000, 'alice told REVOKED by instance B');
  t.match(told.lastError!.error, /REVOKED/);
  t.equal(told.registered, false);
});
