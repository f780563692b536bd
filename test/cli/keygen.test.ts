// devloc keygen, run as a process: key files are 0600, never overwritten without --force, and
// their public halves (printed on generation and by `keygen public`) match the private files.
import { chmodSync, existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import type { Test } from 'tap';
import { keyFileToJson, newDeviceKey, parseKeyFile, parsePublicKeyFile, publicOf, publicToJson } from '../../src/wire/keys.js';
import { devloc, devlocAsync, scratch } from './fixtures/cli.js';

const mode = (file: string): number => statSync(file).mode & 0o777;

function checkGenerated(t: Test, file: string, stdout: string, kind: string): void {
  t.equal(mode(file), 0o600, `${kind}: file mode 0600`);
  const priv = parseKeyFile(readFileSync(file, 'utf8'));
  if (!t.ok(priv.ok, `${kind}: the file parses`) || !priv.ok) return;
  t.equal(priv.value.kind, kind);
  const lines = stdout.trim().split('\n');
  t.equal(lines.length, 1, `${kind}: one line on stdout`);
  const pub = parsePublicKeyFile(lines[0]!);
  if (!t.ok(pub.ok, `${kind}: stdout parses as a public key file`) || !pub.ok) return;
  t.same(pub.value, publicOf(priv.value), `${kind}: stdout is the file's public half`);
  t.notMatch(lines[0]!, /secret/, `${kind}: no secret on stdout`);
}


t.test('authd, service and device keys: 0600 files, public half on stdout', async (t) => {
  const dir = scratch(t);
  const file = (name: string): string => path.join(dir, name);
  // Independent runs, overlapped.
  const [authd, withKid, svc, dev, anon] = await Promise.all([
    devlocAsync(['keygen', 'authd', '--out', file('authd.key')]),
    devlocAsync(['keygen', 'authd', '--kid', '0a0b0c0d', '-o', file('authd2.key')]),
    devlocAsync(['keygen', 'service', '--id', 'locatord', '--out', file('locatord.key')]),
    devlocAsync(['keygen', 'device', '--id', 'CONSOLE-0001', '--out', file('device.key')]),
    devlocAsync(['keygen', 'device', '--out', file('anon.key')]),
  ]);
  for (const r of [authd, withKid, svc, dev, anon]) t.equal(r!.status, 0, r!.stderr);
  checkGenerated(t, file('authd.key'), authd!.stdout, 'authd');
  t.match(authd!.stderr, /wrote authd key/);
  checkGenerated(t, file('authd2.key'), withKid!.stdout, 'authd');
  t.match(readFileSync(file('authd2.key'), 'utf8'), /"kid": "0a0b0c0d"/);
  checkGenerated(t, file('locatord.key'), svc!.stdout, 'service');
  t.match(svc!.stdout, /"service":"locatord"/);
  checkGenerated(t, file('device.key'), dev!.stdout, 'device');
  t.match(dev!.stdout, /"deviceId":"CONSOLE-0001"/);
  checkGenerated(t, file('anon.key'), anon!.stdout, 'device');
  t.match(anon!.stdout, /"deviceId":"D[0-9A-F]{16}"/, 'a random device ID by default');
});

t.test('the file name in the "wrote" line is escaped (a name with ESC does not reach the terminal raw)', async (t) => {
  const name = path.join(scratch(t), 'k\u001b[2Jx.key');
  const r = await devlocAsync(['keygen', 'device', '--out', name]);
  t.equal(r.status, 0, r.stderr);
  t.ok(existsSync(name), 'written under the name given');
  t.equal(r.stderr, `wrote device key ${name.replace('\u001b', '\\x1b')} (mode 0600)\n`);
});

t.test('an existing file is never overwritten without --force', async (t) => {
  const dir = scratch(t);
  const file = path.join(dir, 'authd.key');
  t.equal(devloc(['keygen', 'authd', '--out', file]).status, 0);
  const before = readFileSync(file, 'utf8');
  const r = devloc(['keygen', 'authd', '--out', file]);
  t.equal(r.status, 1, 'exit 1');
  t.match(r.stderr, /exists.*--force/);
  t.equal(r.stdout, '', 'nothing printed on stdout');
  t.equal(readFileSync(file, 'utf8'), before, 'the key is untouched');

  // --force replaces it, and the replacement is 0600 even if the old file was not.
  chmodSync(file, 0o644);
  const f = devloc(['keygen', 'authd', '--out', file, '--force']);
  t.equal(f.status, 0, f.stderr);
  t.not(readFileSync(file, 'utf8'), before, 'replaced');
  t.equal(mode(file), 0o600, 'mode 0600 after --force');

  const other = path.join(dir, 'notes.txt');
  writeFileSync(other, 'not a key\n');
  t.equal(devloc(['keygen', 'device', '--out', other]).status, 1, 'any existing file is protected');
  t.equal(readFileSync(other, 'utf8'), 'not a key\n');
});

t.test('keygen public / --public print one JSON line that matches the private file', async (t) => {
  const dir = scratch(t);
  const file = path.join(dir, 'svc.key');
  t.equal(devloc(['keygen', 'service', '--id', 'matchd', '--out', file]).status, 0);
  const priv = parseKeyFile(readFileSync(file, 'utf8'));
  if (!priv.ok) throw new Error(priv.error);
  const expected = publicToJson(publicOf(priv.value));

  const a = devloc(['keygen', 'public', file]);
  t.equal(a.status, 0, a.stderr);
  t.equal(a.stdout, expected + '\n', 'keygen public FILE');
  const b = devloc(['keygen', '--public', file]);
  t.equal(b.status, 0, b.stderr);
  t.equal(b.stdout, a.stdout, 'keygen --public FILE says the same');
  const parsed = parsePublicKeyFile(a.stdout);
  t.ok(parsed.ok && parsed.value.kind === 'service-public', 'parses with parsePublicKeyFile');

  // The public file itself gives the same line back.
  const pubFile = path.join(dir, 'svc.pub');
  writeFileSync(pubFile, a.stdout);
  t.equal(devloc(['keygen', 'public', pubFile]).stdout, a.stdout, 'public of a public file is itself');
  t.equal(devloc(['keygen', 'public', '/dev/stdin'], { input: readFileSync(file) }).stdout, a.stdout, '/dev/stdin reads standard input');
});

t.test('unreadable and malformed key files are errors with a reason (exit 1)', async (t) => {
  const dir = scratch(t);
  const garbage = path.join(dir, 'garbage.key');
  writeFileSync(garbage, '{"kind": "authd", "kid": "zz"}');
  const notJson = path.join(dir, 'text.key');
  writeFileSync(notJson, 'hello');
  // A private file whose public half does not match its secret.
  const o = JSON.parse(keyFileToJson(newDeviceKey())) as { sign: { public: string } };
  o.sign.public = Buffer.alloc(32, 7).toString('base64url');
  const mismatch = path.join(dir, 'mismatch.key');
  writeFileSync(mismatch, JSON.stringify(o));

  const cases: [string, string[], RegExp][] = [
    ['a missing file', ['keygen', 'public', path.join(dir, 'nope.key')], /cannot read key file .*nope\.key: ENOENT/],
    ['a bad kid', ['keygen', 'public', garbage], /garbage\.key is not a devloc key file: kid must be hex/],
    ['not JSON', ['keygen', '--public', notJson], /text\.key is not a devloc key file/],
    ['a public half that does not match', ['keygen', 'public', mismatch], /sign\.public does not match sign\.secret/],
    ['a file that cannot be created', ['keygen', 'authd', '--out', path.join(dir, 'no/such/dir/authd.key')], /cannot create .*ENOENT/],
  ];
  const results = await Promise.all(cases.map(([, args]) => devlocAsync(args)));
  cases.forEach(([what, , err], i) => {
    t.equal(results[i]!.status, 1, `${what}: exit 1`);
    t.match(results[i]!.stderr, err, `${what}: says why`);
    t.equal(results[i]!.stdout, '', `${what}: nothing on stdout`);
  });
});

t.test('usage errors exit 2', async (t) => {
  const dir = scratch(t);
  const cases: [string[], RegExp][] = [
    [['keygen'], /name what to generate/],
    [['keygen', 'authd'], /--out FILE is required/],
    [['keygen', 'service', '--out', path.join(dir, 's.key')], /needs --id/],
    [['keygen', 'service', '--id', 'Bad_ID', '--out', path.join(dir, 's.key')], /bad service ID/],
    [['keygen', 'device', '--id', 'has space', '--out', path.join(dir, 'd.key')], /bad device ID/],
    [['keygen', 'authd', '--kid', 'xyz', '--out', path.join(dir, 'a.key')], /--kid/],
    [['keygen', 'rsa', '--out', path.join(dir, 'r.key')], /Invalid values|Choices/],
    [['keygen', 'public'], /name the key file/],
    [['keygen', 'device', '--public', 'x'], /--public cannot be combined/],
    [['keygen', 'authd', '--out', path.join(dir, 'a.key'), '--bogus'], /^devloc: unknown option --bogus\n$/],
  ];
  const results = await Promise.all(cases.map(([args]) => devlocAsync(args)));
  cases.forEach(([args, err], i) => {
    t.equal(results[i]!.status, 2, `${args.join(' ')}: exit 2`);
    t.match(results[i]!.stderr, err, `${args.join(' ')}: says why`);
  });
  t.same(readdirSync(dir), [], 'no file was created');
});
