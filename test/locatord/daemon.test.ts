// devloc-locatord as a real process: groups survive SIGKILL (SQLite), soft state survives a
// SIGTERM restart (snapshot: sessions keep working, replays stay refused), SIGHUP reloads the
// trusted authd keys, --check-config validates the key files (in-process).
import t from 'tap';
import type { Test } from 'tap';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { startDaemon } from '../helpers/daemon.js';
import { runDaemon } from '../../src/common/daemon.js';
import { locatordDaemon } from '../../src/locatord/main.js';
import type { RunningDaemon } from '../helpers/daemon.js';
import { ErrorCode } from '../../src/wire/errors.js';
import { SNAPSHOT_FILE } from '../../src/locatord/snapshot.js';
import { errorCodeOf, makeKeys, Terminal, writeKeyFiles } from './fixtures/helpers.js';
import type { TestKeys } from './fixtures/helpers.js';

async function start(t: Test, dir: string, files: { serviceKey: string; trust: string }): Promise<RunningDaemon> {
  const d = await startDaemon('locatord/main.ts', [
    '--listen', '127.0.0.1', '--port', '0', '--reflector-port', '0', '--reflector-alt-port', '0',
    '--service-key', files.serviceKey, '--trust', files.trust, '--state-dir', path.join(dir, 'state'), '--rate', '0',
  ]);
  t.teardown(() => d.stop('SIGKILL'));
  return d;
}

const portOf = (d: RunningDaemon): { ip: string; port: number } => ({ ip: '127.0.0.1', port: Number(d.listening['port']) });

t.test('listening line, then groups survive SIGKILL', async (t) => {
  const dir = t.testdir();
  const keys: TestKeys = makeKeys();
  const files = writeKeyFiles(dir, keys);
  const d1 = await start(t, dir, files);
  t.equal(d1.lines[0]!['msg'], 'listening', 'first line');
  t.ok(Number(d1.listening['reflectorPort']) > 0 && Number(d1.listening['reflectorAltPort']) > 0);
  const owner = await Terminal.open(t, keys, portOf(d1));
  const member = await Terminal.open(t, keys, portOf(d1));
  await owner.expect(t, 'REGISTER_ACK', owner.register());
  await member.expect(t, 'REGISTER_ACK', member.register());
  const groupId = (await owner.expect(t, 'GROUP_CREATE_ACK', owner.request('GROUP_CREATE', { name: 'durable', ...owner.closedBy('k') }))).body.groupId;
  await member.expect(t, 'GROUP_JOIN_ACK', member.request('GROUP_JOIN', { groupId, ...member.proofFor(groupId, 'k') }));
  d1.proc.kill('SIGKILL');
  await new Promise((r) => d1.proc.once('exit', r));
  t.equal(existsSync(path.join(dir, 'state', SNAPSHOT_FILE)), false, 'no snapshot after SIGKILL');

  const d2 = await start(t, dir, files);
  // Sessions were soft state: the old one is unknown now, the terminal registers again.
  owner.dest = portOf(d2);
  t.equal(errorCodeOf(await owner.request('REFRESH', {})), ErrorCode.NO_SESSION);
  const again = await Terminal.open(t, keys, portOf(d2), { locatorId: owner.locatorId });
  await again.expect(t, 'REGISTER_ACK', again.register());
  const list = await again.expect(t, 'GROUP_MEMBERS_RESULT', again.request('GROUP_MEMBERS', { groupId }));
  t.equal(list.body.total, 2, 'both members survived');
  t.equal(list.body.name, 'durable');
  t.same(list.body.members.map((m) => m.online), [true, false], 'member not re-registered: offline');
  const stranger = await Terminal.open(t, keys, portOf(d2));
  await stranger.expect(t, 'REGISTER_ACK', stranger.register());
  t.equal(errorCodeOf(await stranger.request('GROUP_JOIN', { groupId, ...stranger.proofFor(groupId, 'x') })), ErrorCode.FORBIDDEN, 'join code survived too');
});

t.test('SIGTERM writes a snapshot; the restart restores sessions and registrations', async (t) => {
  const dir = t.testdir();
  const keys = makeKeys();
  const files = writeKeyFiles(dir, keys);
  const d1 = await start(t, dir, files);
  const a = await Terminal.open(t, keys, portOf(d1));
  const b = await Terminal.open(t, keys, portOf(d1));
  const regA = await a.expect(t, 'REGISTER_ACK', a.register({ nickname: 'alice', ttlS: 600 }));
  await b.expect(t, 'REGISTER_ACK', b.register());
  const captured = a.encode('REFRESH', {});
  await a.expect(t, 'REFRESH_ACK', a.send(captured));
  t.equal(await d1.stop('SIGTERM'), 0, 'clean exit');
  const snap = path.join(dir, 'state', SNAPSHOT_FILE);
  t.equal(statSync(snap).mode & 0o777, 0o600, 'snapshot is 0600');

  const d2 = await start(t, dir, files);
  const restored = await d2.waitFor((l) => l['msg'] === 'snapshot restored');
  t.equal(restored['sessions'], 2);
  t.equal(restored['records'], 2);
  t.equal(existsSync(snap), false, 'snapshot used once, then deleted');
  a.dest = portOf(d2);
  b.dest = portOf(d2);
  // The old session goes on: no NO_SESSION, no new ticket, sequence numbers continue.
  const ref = await a.expect(t, 'REFRESH_ACK', a.request('REFRESH', {}));
  t.same(ref.body.observed, regA.body.observed);
  t.equal(ref.body.ttlS, 600, 'TTL kept');
  // The replay window came back too: the captured REFRESH is refused (no reply cache now).
  const replay = await a.client.request(a.dest, captured.bytes, captured.rid, { accept: () => true });
  t.equal(errorCodeOf(replay), ErrorCode.REPLAY);
  const q = await b.expect(t, 'QUERY_ADDR_RESULT', b.request('QUERY_ADDR', { ids: [a.locatorId] }));
  t.equal(q.body.entries[0]!.online, true);
  t.equal(q.body.entries[0]!.nickname, 'alice');
  t.same(q.body.entries[0]!.addr, a.address);

  // SIGHUP with the trust file now holding another authd key: sessions of the old one end.
  const newKeys: TestKeys = { ...makeKeys(), service: keys.service };
  const rotated = writeKeyFiles(path.join(dir, 'rotated'), newKeys);
  writeFileSync(files.trust, readFileSync(rotated.trust));
  d2.proc.kill('SIGHUP');
  const reloaded = await d2.waitFor((l) => l['msg'] === 'trusted keys reloaded');
  t.equal(reloaded['sessionsDropped'], 2);
  t.equal(reloaded['registrationsRemoved'], 2, 'what the old key vouched for is not served any more');
  t.equal(errorCodeOf(await a.request('REFRESH', {})), ErrorCode.NO_SESSION, 'old session gone');
  const c = await Terminal.open(t, newKeys, portOf(d2));
  await c.expect(t, 'REGISTER_ACK', c.register());
  const old = await Terminal.open(t, keys, portOf(d2));
  t.equal(errorCodeOf(await old.register()), ErrorCode.BAD_TICKET, 'old key refused');
});

t.test('--check-config validates the key files and the settings from every source', async (t) => {
  const dir = t.testdir();
  const files = writeKeyFiles(dir, makeKeys());
  const run = async (args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ status: number; out: string }> => {
    const out: string[] = [];
    const write = { out: process.stdout.write, err: process.stderr.write };
    process.stdout.write = process.stderr.write = ((s: string) => out.push(s) > 0) as typeof process.stdout.write;
    try {
      // Any free ports: --check-config binds them, and the defaults may be held on a shared machine.
      const ports = ['--port', '0', '--reflector-port', '0', '--reflector-alt-port', '0'];
      return { status: await runDaemon(locatordDaemon, ['--check-config', ...ports, ...args], env), out: out.join('') };
    } finally {
      process.stdout.write = write.out;
      process.stderr.write = write.err;
    }
  };
  const good = await run(['--service-key', files.serviceKey, '--trust', files.trust]);
  t.equal(good.status, 0, good.out);
  const swapped = await run(['--service-key', files.trust, '--trust', files.serviceKey]);
  t.equal(swapped.status, 2);
  t.match(swapped.out, /service-key/);
  const env = await run([], { DEVLOC_LOCATORD_SERVICE_KEY: files.serviceKey, DEVLOC_LOCATORD_TRUST: files.trust, DEVLOC_LOCATORD_MIN_TTL: '100', DEVLOC_LOCATORD_DEFAULT_TTL: '50' });
  t.equal(env.status, 2, 'TTL order checked (settings from the environment)');
  t.match(env.out, /min-ttl <= default-ttl/);
  const typo = await run(['--service-key', files.serviceKey, '--trust', files.trust], { DEVLOC_LOCATORD_MAX_ENTRYS: '5' });
  t.equal(typo.status, 2, 'unknown key refused');
  const wildcard = await run(['--service-key', files.serviceKey, '--trust', files.trust, '--reflector-alt-ip', '127.0.0.2']);
  t.equal(wildcard.status, 2, 'an alternate reflector address needs a specific listen address');
  t.match(wildcard.out, /reflector-alt-ip/);
  t.equal((await run(['--service-key', files.serviceKey, '--trust', files.trust, '--listen', '127.0.0.1', '--reflector-alt-ip', '127.0.0.2'])).status, 0);
  const plainCa = await run(['--service-key', files.serviceKey, '--trust', files.trust, '--store', 'redis', '--redis-url', 'redis://127.0.0.1:6379', '--redis-tls-ca', files.trust]);
  t.equal(plainCa.status, 2, 'a CA file with a plain redis:// URL is refused, not ignored');
  t.match(plainCa.out, /redis-tls-ca needs a rediss:/);
  t.equal((await run(['--service-key', files.serviceKey, '--trust', files.trust, '--store', 'redis', '--redis-url', 'rediss://127.0.0.1:6379', '--redis-tls-ca', files.trust])).status, 0);
});
