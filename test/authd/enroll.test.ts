// Enrollment and the admin commands: validation with line numbers, all-or-nothing, idempotence,
// --replace, CSV, the CLI as a process, and SIGKILL in the middle of a large import.
import t from 'tap';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, openSync, readFileSync, statSync, writeFileSync, writeSync } from 'node:fs';
import path from 'node:path';
import { AuthDb } from '../../src/authd/db.js';
import { enrollFile, parsePublicKey, splitCsv } from '../../src/authd/enroll.js';
import { parseKeyFile } from '../../src/wire/keys.js';
import yargs from 'yargs';
import { authdCommands } from '../../src/cli/commands/devices.js';
import { cliIo as io } from '../../src/cli/util.js';
import { root } from '../helpers/daemon.js';
import { tmpDir } from './fixtures/helpers.js';

const key = (): string => randomBytes(32).toString('base64url');
const rec = (id: string, k = key(), extra: Record<string, string> = {}): string => JSON.stringify({ deviceId: id, publicKey: k, ...extra });

/** The same commands in this process (fast): output and exit status captured. */
async function run(args: string[], env: Record<string, string> = {}): Promise<{ status: number; stdout: string; stderr: string }> {
  const saved = { ...io };
  const savedEnv = { ...process.env };
  const r = { status: 0, stdout: '', stderr: '' };
  io.out = (s) => void (r.stdout += s);
  io.err = (s) => void (r.stderr += s);
  io.exit = (status) => void (r.status = status);
  Object.assign(process.env, env);
  try {
    let y = yargs(args).scriptName('devloc').strict().exitProcess(false).fail((msg, err) => {
      if (err) throw err;
      r.stderr += `${msg}\n`;
      r.status = 2;
    });
    for (const c of authdCommands) y = y.command(c);
    await y.parseAsync();
  } finally {
    Object.assign(io, saved);
    for (const k of Object.keys(env)) if (savedEnv[k] === undefined) delete process.env[k];
    Object.assign(process.env, savedEnv);
  }
  return r;
}

t.test('parsing helpers', async (t) => {
  const k = randomBytes(32);
  t.ok(parsePublicKey(k.toString('base64url'))?.equals(k));
  t.ok(parsePublicKey(`${k.toString('base64url')}=`)?.equals(k), 'one padding character tolerated');
  t.equal(parsePublicKey(k.subarray(0, 31).toString('base64url')), null, '31 bytes');
  const s = k.toString('base64url');
  t.equal(parsePublicKey(`${s.slice(0, 42)}B`), null, 'non-canonical last character');
  t.same(splitCsv('a,"b,""c""",d'), ['a', 'b,"c"', 'd']);
  t.same(splitCsv(' a , b ,'), ['a', 'b', '']);
});

t.test('bad lines: each reported with its number, nothing imported', async (t) => {
  const dir = tmpDir(t);
  const db = AuthDb.open(path.join(dir, 'state'));
  t.teardown(() => db.close());
  const file = path.join(dir, 'list.jsonl');
  const dupKey = key();
  writeFileSync(file, [
    rec('GOOD-1'),                                     // 1
    '',                                                // 2 (blank: ignored)
    '{"deviceId":"BAD KEY","publicKey":"x"}',          // 3
    rec('GOOD-2', key().slice(0, 40)),                 // 4
    'not json',                                        // 5
    rec('GOOD-3', dupKey),                             // 6
    rec('GOOD-3', dupKey),                             // 7 duplicate
    JSON.stringify({ deviceId: 'X', publicKey: key(), colour: 'red' }), // 8
    rec('GOOD-4', key(), { model: 'm'.repeat(65) }),   // 9
    rec('GOOD-5'),                                     // 10
  ].join('\n'));
  const errors: [number, string][] = [];
  const r = enrollFile(db, file, { onError: (line, reason) => errors.push([line, reason]) });
  t.notOk(r.ok);
  t.same(errors.map((e) => e[0]), [3, 4, 5, 7, 8, 9], 'every bad line, by number');
  t.match(errors[0]![1], /deviceId/);
  t.match(errors[1]![1], /publicKey/);
  t.match(errors[2]![1], /JSON/);
  t.match(errors[3]![1], /duplicate device ID GOOD-3 \(first on line 6\)/);
  t.match(errors[4]![1], /unknown field "colour"/);
  t.match(errors[5]![1], /model/);
  t.equal(db.countDevices().devices, 0, 'nothing imported');
  t.equal(db.lastEnrollment(), undefined);
});

t.test('devloc enroll: a hostile line is reported with no control character raw', async (t) => {
  const dir = tmpDir(t);
  // ESC (recolour), C1 CSI, BEL, RLO: JSON.parse quotes the line in its error, raw.
  const file = path.join(dir, 'list\u001b[2J.jsonl');
  writeFileSync(file, `{"deviceId": \u001b[31mRED\u009b1m\u0007\u202e}\n`);
  const r = await run(['enroll', file, '--state-dir', path.join(dir, 'state')]);
  t.equal(r.status, 1);
  t.match(r.stderr, /:1: not valid JSON/);
  t.notMatch(r.stderr, /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/, 'nothing raw (escapeControls)');
  t.match(r.stderr, /\\x1b\[31mRED/, 'the escape shown as \\x1b');
  t.match(r.stderr, /1 bad line in .*: nothing imported/);
});

t.test('idempotent re-import, metadata updates, --replace, CSV', async (t) => {
  const dir = tmpDir(t);
  const db = AuthDb.open(path.join(dir, 'state'));
  t.teardown(() => db.close());
  const keys = [key(), key(), key()];
  const jsonl = path.join(dir, 'a.jsonl');
  writeFileSync(jsonl, `${rec('A', keys[0], { model: 'M1' })}\r\n${rec('B', keys[1])}\n${rec('C', keys[2], { region: 'eu' })}`);
  const first = enrollFile(db, jsonl);
  t.match(first, { ok: true, records: 3, added: 3, unchanged: 0, format: 'jsonl' });
  t.match(enrollFile(db, jsonl), { ok: true, added: 0, unchanged: 3 }, 'same file again: no change');
  const csv = path.join(dir, 'b.csv');
  writeFileSync(csv, `\ufeffdeviceId,publicKey,model,region\nA,${keys[0]},M2,\nB,${key()},,\nD,${key()},"Model, ""D""",us\n`);
  const errors: [number, string][] = [];
  const conflict = enrollFile(db, csv, { onError: (l, r) => errors.push([l, r]) });
  t.notOk(conflict.ok);
  t.same(errors.map((e) => e[0]), [3]);
  t.match(errors[0]![1], /different public key/);
  t.equal(db.getDevice('A')!.model, 'M1', 'the good lines were not applied either');
  t.notOk(db.getDevice('D'));
  const replaced = enrollFile(db, csv, { replace: true });
  t.match(replaced, { ok: true, format: 'csv', records: 3, added: 1, updated: 1, replaced: 1, unchanged: 0 });
  t.equal(db.getDevice('A')!.model, 'M2');
  t.equal(db.getDevice('D')!.model, 'Model, "D"');
  t.equal(db.countDevices().devices, 4);
  const dry = enrollFile(db, jsonl, { dryRun: true, replace: true });
  t.match(dry, { ok: true, dryRun: true, updated: 1, replaced: 1, unchanged: 1 });
  t.equal(db.getDevice('A')!.model, 'M2', 'dry run changed nothing');
  const badHeader = path.join(dir, 'c.csv');
  writeFileSync(badHeader, `id,key\nA,${keys[0]}\n`);
  const he: number[] = [];
  t.notOk(enrollFile(db, badHeader, { onError: (l) => he.push(l) }).ok);
  t.same(he, [1], 'a bad header is reported once, on line 1');
});

t.test('the CLI: device new, enroll, devices, revoke, service', async (t) => {
  const dir = tmpDir(t);
  const state = path.join(dir, 'state');
  const env = { DEVLOC_AUTHD_STATE_DIR: state };
  const idFile = path.join(dir, 'dev.json');
  const made = await run(['device', 'new', '--out', idFile, '--id', 'SN-1', '--model', 'X1', '--region', 'eu']);
  t.equal(made.status, 0, made.stderr);
  const record = JSON.parse(made.stdout) as Record<string, string>;
  t.same(Object.keys(record), ['deviceId', 'publicKey', 'model', 'region']);
  const idKey = parseKeyFile(readFileSync(idFile, 'utf8'));
  t.ok(idKey.ok && idKey.value.kind === 'device' && idKey.value.sign.public.toString('base64url') === record['publicKey'], 'record matches the identity file');
  t.equal(statSync(idFile).mode & 0o777, 0o600);
  const again = (await run(['device', 'new', '--out', idFile]));
  t.equal(again.status, 1);
  t.match(again.stderr, /refusing to overwrite/);
  const badId = await run(['device', 'new', '--out', path.join(dir, 'x.json'), '--id', 'bad id']);
  t.equal(badId.status, 2);
  t.equal(badId.stderr, 'devloc device new: --id "bad id" is not a device ID (1-64 of A-Z a-z 0-9 . _ : -)\n(devloc device new --help for usage)\n', 'a usage error as every devloc command says it (runHandler)');
  t.notOk(existsSync(path.join(dir, 'x.json')), 'nothing written');

  const list = path.join(dir, 'list.jsonl');
  writeFileSync(list, `${made.stdout}${rec('SN-2')}\n`);
  const e = (await run(['enroll', list], env));
  t.equal(e.status, 0, e.stderr);
  t.match(e.stdout, /2 records: 2 added, 0 unchanged, 0 updated, 0 replaced/);
  t.match((await run(['enroll', list], env)).stdout, /0 added, 2 unchanged/);
  const bad = path.join(dir, 'bad.jsonl');
  writeFileSync(bad, `${rec('SN-3')}\n{"deviceId":"SN-4"}\n${rec('SN 5')}\n`);
  const eb = await run(['enroll', bad, '--state-dir', state]);
  t.equal(eb.status, 1);
  t.match(eb.stderr, new RegExp(`${bad}:2: publicKey missing`));
  t.match(eb.stderr, new RegExp(`${bad}:3: deviceId`));
  t.match(eb.stderr, /2 bad lines .* nothing imported/);

  t.match((await run(['devices'], env)).stdout, /^2 devices \(0 revoked\)/);
  t.equal((await run(['revoke', 'SN-2'], env)).status, 0);
  const count = JSON.parse((await run(['devices', '--json'], env)).stdout) as { devices: number; revoked: number };
  t.same([count.devices, count.revoked], [2, 1]);
  const rows = (await run(['devices', 'list', '--json', '--limit', '1'], env)).stdout.trim().split('\n');
  t.equal(rows.length, 1);
  t.match(JSON.parse(rows[0]!), { deviceId: 'SN-1', model: 'X1', region: 'eu', revoked: false });
  t.match(JSON.parse((await run(['devices', 'show', 'SN-2', '--json'], env)).stdout), { deviceId: 'SN-2', revoked: true });
  t.equal((await run(['devices', 'show', 'NOPE'], env)).status, 1);
  const unknown = (await run(['revoke', 'NOPE'], env));
  t.equal(unknown.status, 1);
  t.match(unknown.stderr, /unknown device: NOPE/);
  t.match((await run(['unrevoke', 'SN-2'], env)).stdout, /SN-2: no longer revoked/);

  const svc = JSON.stringify({ kind: 'service-public', service: 'locator', seal: key() });
  t.match((await run(['service', 'add', '--key', svc, '--addr', '192.0.2.7:4701'], env)).stdout, /service locator: added/);
  t.match((await run(['service', 'add', '--id', 'locator', '--key', svc, '--addr', '192.0.2.7:4701'], env)).stdout, /unchanged/);
  const other = JSON.stringify({ kind: 'service-public', service: 'locator', seal: key() });
  t.equal((await run(['service', 'add', '--key', other], env)).status, 1, 'another key needs --replace');
  t.equal((await run(['service', 'add', '--id', 'matchd', '--key', svc], env)).status, 2, 'key names another service');
  t.match(JSON.parse((await run(['service', 'list', '--json'], env)).stdout), { serviceId: 'locator', addr: '192.0.2.7:4701' });
  t.equal((await run(['service', 'rm', 'locator'], env)).status, 0);
  t.equal((await run(['service', 'rm', 'locator'], env)).status, 1);
  t.match((await run(['service', 'rm', 'locator'], env)).stderr, /no service locator/);

  const secretFile = path.join(dir, 'relay.secret');
  writeFileSync(secretFile, 'a-shared-secret-of-32-characters\n', { mode: 0o400 });
  const added = await run(['relay', 'add', 'turn1', '--udp', '192.0.2.9:3478', '--secret-file', secretFile], env);
  t.match(added, { status: 0, stdout: /relay turn1: added/ }, added.stderr);
  t.match(JSON.parse((await run(['relay', 'list', '--json'], env)).stdout), { relay: 'turn1', udp: '192.0.2.9:3478', tcp: null, secretFile });
  t.match((await run(['relay', 'list'], env)).stdout, /RELAY +UDP +TCP +TLS +SECRET FILE +UPDATED\nturn1 +192\.0\.2\.9:3478 +- +- /);
  t.match((await run(['relay', 'rm', 'turn1'], env)).stdout, /relay turn1: removed/);
  const relayGone = await run(['relay', 'rm', 'turn1'], env);
  t.equal(relayGone.status, 1);
  t.match(relayGone.stderr, /no relay turn1/);
  t.equal((await run(['devices'], { DEVLOC_AUTHD_STATE_DIR: path.join(dir, 'none') })).status, 1, 'no database: an error, not a new empty one');
  t.notOk(existsSync(path.join(dir, 'none')));
});

t.test('a damaged database: SQLite\'s error is the command\'s failure (exit 1, its message, no stack)', async (t) => {
  // Opens fine (the header and schema pages are intact), then a query reads a page overwritten
  // with junk: the SqliteError comes out of the command's body, past openDb's own catch, and
  // devices.ts's handle() is what makes it a failure line instead of a crash with a stack.
  const state = path.join(tmpDir(t), 'state');
  const db = AuthDb.open(state, { create: true });
  for (let i = 0; i < 3000; i++) db.addDevice({ deviceId: `SN-${i}`, publicKey: randomBytes(32), model: 'M' });
  db.close();
  const file = AuthDb.fileIn(state);
  const size = statSync(file).size;
  const fd = openSync(file, 'r+');
  try {
    for (let page = 3; page * 4096 < size; page += 2) writeSync(fd, Buffer.alloc(4096, 0xa5), 0, 4096, page * 4096);
  } finally {
    closeSync(fd);
  }
  const r = await run(['devices'], { DEVLOC_AUTHD_STATE_DIR: state });
  t.equal(r.status, 1);
  t.equal(r.stderr, 'devloc devices: database disk image is malformed\n', 'one line, the command named, no stack');
});

t.test('SIGKILL during a large enroll leaves all or nothing of that file', async (t) => {
  const dir = tmpDir(t);
  const state = path.join(dir, 'state');
  const small = path.join(dir, 'small.jsonl');
  writeFileSync(small, `${rec('KEEP-1')}\n${rec('KEEP-2')}\n`);
  t.equal((await run(['enroll', small, '--state-dir', state])).status, 0);
  const n = 200_000;
  const keys = randomBytes(32 * n);
  const lines: string[] = [];
  for (let i = 0; i < n; i++) lines.push(`{"deviceId":"BULK-${i}","publicKey":"${keys.subarray(i * 32, i * 32 + 32).toString('base64url')}"}\n`);
  const big = path.join(dir, 'big.jsonl');
  writeFileSync(big, lines.join(''));
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'test/authd/fixtures/cli-entry.ts'), 'enroll', big, '--state-dir', state, '--progress'], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.once('exit', (code, signal) => r({ code, signal })));
  let stderr = '';
  let killedAt = -1;
  await new Promise<void>((resolve) => {
    child.stderr!.setEncoding('utf8').on('data', (s: string) => {
      stderr += s;
      const m = /(\d+) records/.exec(s);
      if (killedAt < 0 && m && Number(m[1]) >= 30_000 && Number(m[1]) < n) {
        killedAt = Number(m[1]);
        child.kill('SIGKILL');
        resolve();
      }
    });
    void exited.then(() => resolve());
  });
  const how = await exited;
  const db = AuthDb.open(state);
  t.teardown(() => db.close());
  const count = db.countDevices().devices;
  if (killedAt > 0) {
    t.equal(how.signal, 'SIGKILL', `killed after ${killedAt} of ${n} records`);
    t.equal(count, 2, 'nothing of the interrupted file; the earlier import intact');
  } else {
    t.comment(`the import finished before it could be killed: ${stderr.slice(-200)}`);
    t.equal(count, n + 2, 'everything');
  }
  t.ok(db.getDevice('KEEP-1'));
  t.equal(db.db.pragma('integrity_check', { simple: true }), 'ok');
  // And the file imports completely afterwards.
  db.close();
  const done = await run(['enroll', big, '--state-dir', state]);
  t.equal(done.status, 0, done.stderr);
  const db2 = AuthDb.open(state);
  t.equal(db2.countDevices().devices, n + 2);
  db2.close();
});
