// devloc decode with keys, run as a process: session MACs (given or derived from a service key),
// ticket signatures (OK / BAD / not checked) and the sealed AUTH exchange.
import { chmodSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { keyFileToJson, newAuthdKey } from '../../src/wire/keys.js';
import { devloc, devlocAsync, jsonLines, scratch, vector, vectorKeyFiles, vectors } from './fixtures/cli.js';

const v = vectors();

t.test('session MACs: OK with the right key, BAD with another, derived from a service key', async (t) => {
  const keys = v.messages.sessionKeys['locatord']!;
  const req = vector(v, 'REFRESH');
  const resp = vector(v, 'REFRESH_ACK');
  let r = devloc(['decode', '--json', '--session-key', keys.terminalToServer, '--session-key', keys.serverToTerminal, req.hex, resp.hex]);
  t.equal(r.status, 0, r.stderr);
  let [a, b] = jsonLines(r.stdout);
  t.equal((a!['auth'] as { check: string }).check, 'ok', 'terminal-to-server MAC verifies');
  t.equal((b!['auth'] as { check: string }).check, 'ok', 'server-to-terminal MAC verifies');
  t.match((b!['auth'] as { note: string }).note, /--session-key #2/);
  t.same(b!['answers'], { index: 1, name: 'REFRESH' }, 'the answer is paired with its request');

  r = devloc(['decode', '--session-key', v.messages.sessionKeys['matchd']!.terminalToServer, req.hex]);
  t.match(r.stdout, /MAC BAD: does not verify with --session-key #1/);
  t.equal(r.status, 0, 'a BAD MAC is reported, not fatal');
  t.equal(devloc(['decode', '--strict', '--session-key', v.messages.sessionKeys['matchd']!.terminalToServer, req.hex]).status, 1, '--strict: exit 1');

  // A 64-byte key is both directions; a corrupted MAC is BAD.
  const tampered = req.hex.slice(0, -2) + ((parseInt(req.hex.slice(-2), 16) ^ 1).toString(16).padStart(2, '0'));
  r = devloc(['decode', '--json', '--session-key', keys.terminalToServer + keys.serverToTerminal, req.hex, tampered]);
  [a, b] = jsonLines(r.stdout);
  t.equal((a!['auth'] as { check: string }).check, 'ok');
  t.equal((b!['auth'] as { check: string }).check, 'bad', 'a flipped MAC bit is BAD');

  // With the locatord service key, the keys come from the ticket in REGISTER.
  const dir = scratch(t);
  const files = vectorKeyFiles(v, dir);
  const seq = ['REGISTER', 'REGISTER_ACK', 'REFRESH', 'REFRESH_ACK', 'UNREGISTER', 'QUERY_ADDR_RESULT'].map((n) => vector(v, n).hex);
  r = devloc(['decode', '--json', '--service-key', files.locatordService, ...seq]);
  t.equal(r.status, 0, r.stderr);
  for (const o of jsonLines(r.stdout)) {
    const auth = o['auth'] as { check: string; note: string };
    t.equal(auth.check, 'ok', `${String(o['name'])}: MAC verified with derived keys`);
    t.match(auth.note, /session keys derived from service key locator\b/);
  }
  // A service key is a secret: its mode is checked like the daemons check theirs.
  chmodSync(files.locatordService, 0o644);
  r = devloc(['decode', '--json', '--service-key', files.locatordService, ...seq]);
  t.not(r.status, 0, 'a group/world-readable service key is refused');
  t.match(r.stderr, /service key file .*locatord\.key has mode 0644: a secret key must not be readable/);
});

t.test('tickets: signature OK with the authd key, BAD with another, not checked without', async (t) => {
  const dir = scratch(t);
  const files = vectorKeyFiles(v, dir);
  const reg = vector(v, 'REGISTER').hex;
  const ticket = v.ticket.hex;
  // Another authd key with the same kid: its signatures are not the vector's.
  const other = path.join(dir, 'other.key');
  const otherKey = newAuthdKey();
  if (otherKey.kind === 'authd') otherKey.kid = v.ticket.authd.kid;
  writeFileSync(other, keyFileToJson(otherKey));
  // A flipped signature bit.
  const tampered = ticket.slice(0, -2) + ((parseInt(ticket.slice(-2), 16) ^ 0x80).toString(16).padStart(2, '0'));

  const [withKey, withPrivate, without, withOther, bad, strict] = await Promise.all([
    devlocAsync(['decode', '--authd-key', files.authdPublic, reg, ticket]),
    devlocAsync(['decode', '--authd-key', files.authdPrivate, ticket]),
    devlocAsync(['decode', ticket]),
    devlocAsync(['decode', '--json', '--authd-key', other, ticket]),
    devlocAsync(['decode', '--authd-key', files.authdPublic, tampered]),
    devlocAsync(['decode', '--strict', '--authd-key', files.authdPublic, tampered]),
  ]);
  t.equal(withKey!.status, 0, withKey!.stderr);
  const [a, b] = withKey!.stdout.split(/^(?=#\d)/m);
  t.match(a, /ticket \(body\.ticket\)[^]*signature OK: verified with authd key 7a1e0001/, 'REGISTER ticket: OK');
  t.match(b, new RegExp(`#2 {2}argument 2 {2}${ticket.length / 2} B\\n {2}ticket \\(ticket\\): COSE_Sign1 EdDSA, kid 7a1e0001`), 'a bare ticket is recognised');
  t.match(b, /signature OK/, 'bare ticket: OK');
  t.match(withPrivate!.stdout, /signature OK/, 'the private authd key file works too');
  t.match(without!.stdout, /signature not checked: no --authd-key given/);

  const tk = (jsonLines(withOther!.stdout)[0]!['tickets'] as { signature: string; signatureNote: string; claims: { aud: string; cti: string } }[])[0]!;
  t.equal(tk.signature, 'bad', 'another key with the same kid: BAD');
  t.match(tk.signatureNote, /does not verify with authd key 7a1e0001/);
  t.equal(tk.claims.aud, 'locator');
  t.equal(tk.claims.cti, '51d0000000000000000000000000000a');

  t.match(bad!.stdout, /signature BAD/, 'a flipped signature bit: BAD');
  t.equal(bad!.status, 0, 'reported, not fatal');
  t.equal(strict!.status, 1, '--strict: exit 1');
});

t.test('the sealed AUTH exchange opens with the private authd key or a seal key', async (t) => {
  const dir = scratch(t);
  const files = vectorKeyFiles(v, dir);
  const req = vector(v, 'AUTH_REQUEST').hex;
  const resp = vector(v, 'AUTH_RESPONSE').hex;
  const keys = v.auth.derived.sealKeys;
  const [both, publicOnly, responseKey, requestHalf] = await Promise.all([
    devlocAsync(['decode', '--json', '--authd-key', files.authdPrivate, req, resp]),
    devlocAsync(['decode', '--authd-key', files.authdPublic, req]),
    devlocAsync(['decode', '--seal-key', keys.response, resp]),
    devlocAsync(['decode', '--seal-key', keys.request + keys.response, req]),
  ]);
  t.equal(both!.status, 0, both!.stderr);
  const [a, b] = jsonLines(both!.stdout);
  const inner = a!['sealed'] as { opened: boolean; value: Record<string, unknown> };
  t.equal(inner.opened, true, 'AUTH_REQUEST opened');
  t.equal(inner.value['deviceId'], 'DEVLOC-TEST-0001');
  t.same(inner.value['audiences'], ['locator', 'match']);
  const grant = b!['sealed'] as { opened: boolean; note: string; value: { tickets: { aud: string }[] } };
  t.equal(grant.opened, true, 'AUTH_RESPONSE opened with the keys of its request');
  t.equal(grant.note, 'opened with the keys of the AUTH_REQUEST with this request ID', 'and its nonce is the request\'s');
  t.same(grant.value.tickets.map((x) => x.aud), ['locator', 'match']);
  const tickets = b!['tickets'] as { where: string; signature: string }[];
  t.same(tickets.map((x) => [x.where, x.signature]), [['grant.tickets[0].ticket', 'ok'], ['grant.tickets[1].ticket', 'ok']], 'granted tickets verified');

  t.match(publicOnly!.stdout, /sealed AuthInner: not opened: sealed: give the private authd key/, 'a public authd key opens nothing, and says so');

  t.match(responseKey!.stdout, /sealed AuthGrant: opened with --seal-key #1/, 'a response seal key alone opens the response');
  t.match(responseKey!.stdout, /2 \/tickets\/: \[/);
  t.match(responseKey!.stdout, /ticket \(grant\.tickets\[1\]\.ticket\)[^]*aud match\b/);
  t.match(requestHalf!.stdout, /sealed AuthInner: opened with --seal-key #1 \(request half\)/);
  t.match(requestHalf!.stdout, /1 \/deviceId\/: "DEVLOC-TEST-0001"/);
});
