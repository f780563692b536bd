// Issue 19, item 7, against real daemon processes: a match service registered with authd after
// the agents started is picked up on SIGHUP and when `match submit` finds no ticket for it; an
// agent that cannot start because its control socket is in use has sent nothing.
import dgram from 'node:dgram';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { AuthDb } from '../../src/authd/db.js';
import { decodeDatagram } from '../../src/wire/envelope.js';
import { keyFileToJson, newServiceKey } from '../../src/wire/keys.js';
import { eventually, spawnNode, stack } from './stack.js';
import { DAEMON_START_TIMEOUT_MS } from '../helpers/daemon.js';

t.test('a match service added later: picked up on SIGHUP and on a missing ticket', async (t) => {
  const s = await stack(t);
  const [hup, submitter] = await Promise.all([s.agent('hup'), s.agent('submitter')]);
  for (const a of [hup, submitter]) await eventually(async () => (await a.status()).registered, 30_000, `${a.name} registered`);
  // Before: no ticket for "match" (authd skips services it does not know).
  // (Asked of `hup`: a missing ticket re-authenticates at most every 10 s, `submitter` must not
  // have used that up.)
  await t.rejects(hup.control('match.submit', { mediaId: 'chess', maxWaitS: 30 }), /no ticket for "match"/, 'no match service yet');
  t.ok(hup.lines.some((l) => l['msg'] === 'authenticating again'), 'it asked authd again before saying so');

  // Register matchd with authd now, as `devloc service add` would.
  const matchKey = newServiceKey('match');
  const matchKeyFile = path.join(s.dir, 'match.key');
  writeFileSync(matchKeyFile, keyFileToJson(matchKey), { mode: 0o600 });
  const matchd = spawnNode('matchd/main.ts', ['--listen', '127.0.0.1', '--port', '0', '--service-key', matchKeyFile, '--trust', s.authdPubFile, '--rate', '0']);
  t.teardown(() => matchd.stop('SIGKILL'));
  const ml = await matchd.waitFor((l) => l['msg'] === 'listening', DAEMON_START_TIMEOUT_MS, 'matchd listening');
  if (matchKey.kind !== 'service') throw new Error('unreachable');
  const db = AuthDb.open(path.join(s.dir, 'authd-state'));
  db.putService({ serviceId: 'match', sealKey: matchKey.seal.public, addr: `127.0.0.1:${Number(ml['port'])}` }, false);
  db.close();

  // SIGHUP: the agent authenticates again and gets a ticket for "match"; it stays registered.
  const authenticated = (l: Record<string, unknown>): boolean => l['msg'] === 'authenticated' && Array.isArray(l['audiences']) && (l['audiences'] as string[]).includes('match');
  hup.proc.kill('SIGHUP');
  await hup.waitFor((l) => l['msg'] === 'authenticating again' && l['reason'] === 'SIGHUP', 30_000, 're-authentication on SIGHUP');
  await hup.waitFor(authenticated, 30_000, 'a grant with "match"');
  t.ok((await hup.status()).registered, 'still registered');
  const r = (await hup.control('match.submit', { mediaId: 'chess', maxWaitS: 30 })) as { state?: string; matchId?: string };
  t.equal(r.state, 'waiting', 'match submit works after SIGHUP');

  // No SIGHUP: match submit finds no ticket, authenticates again, and goes through.
  const r2 = (await submitter.control('match.submit', { mediaId: 'go', maxWaitS: 30 })) as { state?: string };
  t.equal(r2.state, 'waiting', 'match submit works without a restart');
  t.ok(submitter.lines.some((l) => l['msg'] === 'authenticating again' && /no ticket for "match"/.test(String(l['reason']))), 'the agent said why it authenticated again');
  t.ok(submitter.lines.some(authenticated), 'and got a ticket for "match"');
});

t.test('control socket in use: the agent exits without sending anything', async (t) => {
  const s = await stack(t);
  const first = await s.agent('first');
  // A silent "authd" that records every datagram the second agent might send.
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((res) => sock.bind(0, '127.0.0.1', res));
  t.teardown(() => new Promise<void>((res) => sock.close(() => res())));
  const got: string[] = [];
  sock.on('message', (raw: Buffer) => {
    const d = decodeDatagram(raw);
    got.push(d.ok ? d.msg.name : raw.toString('hex'));
  });
  const device = s.device('second');
  const second = spawnNode('agent/main.ts', [
    '--identity', device.identityPath, '--authd', `127.0.0.1:${sock.address().port}`, '--authd-key', s.authdPubFile,
    '--control-socket', first.socket, '--state-dir', path.join(s.dir, 'second-state'), '--reflector', 'off',
  ]);
  t.teardown(() => second.stop('SIGKILL'));
  const code = await second.exited;
  t.not(code, 0, `exits with an error (${code})`);
  t.match([...second.stderr, ...second.lines.map((l) => JSON.stringify(l))].join('\n'), /in use/, 'and says the control socket is in use');
  // Datagrams on loopback are queued in order: once a marker sent now arrives, anything the agent
  // had sent would have arrived before it.
  const marker = dgram.createSocket('udp4');
  await new Promise<void>((res) => marker.send(Buffer.from('marker'), sock.address().port, '127.0.0.1', () => res()));
  marker.close();
  await eventually(async () => got.length > 0, 10_000, 'the marker');
  t.same(got, [Buffer.from('marker').toString('hex')], 'no AUTH_REQUEST (nor anything else) before the marker');
  t.ok((await first.status()).state, 'the first agent still answers');
});
