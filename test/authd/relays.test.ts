// Relay credentials in grants (authd side), on an in-memory database: what goes
// into a grant, that a bad secret file leaves the relay out (logged once) without failing
// anything, that rotation and database changes are picked up, and the secret file's checks.
import t from 'tap';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createHmac } from 'node:crypto';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { AuthDb } from '../../src/authd/db.js';
import { MAX_RELAYS_PER_GRANT, parseRelaySecrets, readRelaySecret, RelayIssuer } from '../../src/authd/relays.js';
import { Logger } from '../../src/common/log.js';
import { Metrics } from '../../src/common/metrics.js';

const dir = mkdtempSync(path.join(tmpdir(), 'devloc-relays-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

function secretFile(name: string, text: string, mode = 0o400): string {
  const f = path.join(dir, name);
  rmSync(f, { force: true });
  writeFileSync(f, text, { mode: 0o600 });
  chmodSync(f, mode);
  return f;
}

function setup(): { db: AuthDb; issuer: RelayIssuer; lines: Record<string, unknown>[] } {
  const db = AuthDb.memory();
  const lines: Record<string, unknown>[] = [];
  const logger = new Logger({ service: 'authd', write: (l: string) => lines.push(JSON.parse(l) as Record<string, unknown>) });
  const issuer = new RelayIssuer(db, logger, new Metrics());
  return { db, issuer, lines };
}

const hmac = (secret: string, user: string): string => createHmac('sha1', secret).update(user).digest('base64');
const LOC = '00112233445566778899aabbccddeeff';

t.test('secret file format', async (t) => {
  t.same(parseRelaySecrets('# new first\nabcdefghijklmnop1\n\nabcdefghijklmnop2\n'), { ok: true, secrets: ['abcdefghijklmnop1', 'abcdefghijklmnop2'] });
  t.match(parseRelaySecrets('# only a comment\n'), { ok: false, error: /no secret/ });
  t.match(parseRelaySecrets('short\n'), { ok: false, error: /shorter than 16/ });
  const loose = secretFile('loose', 'abcdefghijklmnopq\n', 0o644);
  t.throws(() => readRelaySecret(loose), /mode 0644.*chmod 0400/);
  t.equal(readRelaySecret(secretFile('ok', 'abcdefghijklmnopq\n')), 'abcdefghijklmnopq');
});

t.test('no relays: no entries', async (t) => {
  const { issuer } = setup();
  t.same(issuer.grantsFor(LOC, 1000), []);
});

t.test('a registered relay gets credentials coturn accepts, expiring with the tickets', async (t) => {
  const { db, issuer } = setup();
  const secret = 'first-secret-0123456789';
  db.putRelay({ relayId: 'eu1', udp: '192.0.2.7:3478', tls: '192.0.2.7:5349', tlsName: 'turn.example.net', secretFile: secretFile('eu1', `${secret}\nold-secret-0123456789\n`) }, false);
  const [g] = issuer.grantsFor(LOC, 1_900_000_000);
  t.ok(g);
  t.equal(g!.name, 'eu1');
  t.same(g!.udp, { ip: '192.0.2.7', port: 3478 });
  t.same(g!.tls, { ip: '192.0.2.7', port: 5349 });
  t.notOk(g!.tcp);
  t.equal(g!.tlsName, 'turn.example.net');
  t.equal(g!.username, `1900000000:${LOC}`);
  t.equal(g!.password, hmac(secret, g!.username), 'HMAC-SHA1 under the first secret of the file');
  t.equal(g!.exp, 1_900_000_000);
});

t.test('at most two relays per grant', async (t) => {
  const { db, issuer } = setup();
  const f = secretFile('many', 'abcdefghijklmnopq\n');
  for (const id of ['a', 'b', 'c']) db.putRelay({ relayId: id, udp: '192.0.2.1:3478', secretFile: f }, false);
  t.equal(issuer.grantsFor(LOC, 1).length, MAX_RELAYS_PER_GRANT);
});

t.test('an unusable secret file leaves the relay out, logged once, and back when fixed', async (t) => {
  const { db, issuer, lines } = setup();
  const f = secretFile('bad', 'abcdefghijklmnopq\n', 0o644);
  db.putRelay({ relayId: 'bad', udp: '192.0.2.1:3478', secretFile: f }, false);
  db.putRelay({ relayId: 'good', udp: '192.0.2.2:3478', secretFile: secretFile('good', 'abcdefghijklmnopq\n') }, false);
  issuer.reload();
  t.same(issuer.grantsFor(LOC, 1).map((g) => g.name), ['good']);
  issuer.reload();
  const errors = lines.filter((l) => l['msg'] === 'relay left out of grants');
  t.equal(errors.length, 1, 'logged once, not at every reload');
  t.match(errors[0], { relay: 'bad', err: /mode 0644/ });
  chmodSync(f, 0o400);
  issuer.reload();
  t.same(issuer.grantsFor(LOC, 1).map((g) => g.name), ['bad', 'good']);
  t.ok(lines.some((l) => l['msg'] === 'relay back in grants' && l['relay'] === 'bad'));
});

t.test('rotation: reload takes the new first secret of the file', async (t) => {
  const { db, issuer } = setup();
  const f = secretFile('rot', 'old-secret-0123456789\n');
  db.putRelay({ relayId: 'r', udp: '192.0.2.1:3478', secretFile: f }, false);
  const before = issuer.grantsFor(LOC, 5)[0]!;
  t.equal(before.password, hmac('old-secret-0123456789', before.username));
  secretFile('rot', 'new-secret-0123456789\nold-secret-0123456789\n');
  t.equal(issuer.grantsFor(LOC, 5)[0]!.password, before.password, 'the file alone changes nothing until reload');
  issuer.reload();
  t.equal(issuer.grantsFor(LOC, 5)[0]!.password, hmac('new-secret-0123456789', before.username));
});

t.test('another connection registering a relay is in the next grant', async (t) => {
  const state = path.join(dir, 'state');
  const served = AuthDb.open(state);
  const lines: Record<string, unknown>[] = [];
  const issuer = new RelayIssuer(served, new Logger({ service: 'authd', write: (l: string) => lines.push(JSON.parse(l) as Record<string, unknown>) }), new Metrics());
  t.teardown(() => served.close());
  t.same(issuer.grantsFor(LOC, 1), []);
  const admin = AuthDb.open(state);
  t.equal(admin.putRelay({ relayId: 'late', tcp: '192.0.2.9:3478', secretFile: secretFile('late', 'abcdefghijklmnopq\n') }, false), 'added');
  admin.close();
  // The very next grant has it (the demo adds a relay and re-authenticates at once).
  t.same(issuer.grantsFor(LOC, 1).map((g) => g.name), ['late']);
  t.ok(lines.some((l) => l['msg'] === 'relays in grants'));
});

t.test('putRelay: unchanged, conflict, replace', async (t) => {
  const db = AuthDb.memory();
  const spec = { relayId: 'x', udp: '192.0.2.1:3478', secretFile: '/etc/devloc/x.secret' };
  t.equal(db.putRelay(spec, false), 'added');
  t.equal(db.putRelay(spec, false), 'unchanged');
  t.equal(db.putRelay({ ...spec, udp: '192.0.2.2:3478' }, false), 'conflict');
  t.equal(db.putRelay({ ...spec, udp: '192.0.2.2:3478' }, true), 'replaced');
  t.equal(db.listRelays()[0]!.udp, '192.0.2.2:3478');
  t.ok(db.removeRelay('x'));
  t.notOk(db.removeRelay('x'));
});
