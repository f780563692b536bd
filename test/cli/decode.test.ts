// devloc decode on hex arguments and files, run as a process: every wire vector decodes to
// its meaning (--json), the text form names fields, enumerations and addresses, and files of hex
// lines (or --raw) are read.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { devloc, jsonLines, scratch, vector, vectors } from './fixtures/cli.js';

const v = vectors();

t.test('every vector decodes (--json) to its meaning', async (t) => {
  const dir = scratch(t);
  const file = path.join(dir, 'all.hex');
  writeFileSync(file, ['# every message vector', ...v.messages.vectors.flatMap((x) => [`# ${x.name}`, x.hex])].join('\n') + '\n');
  const r = devloc(['decode', '--json', '--file', file]);
  t.equal(r.status, 0, r.stderr);
  const out = jsonLines(r.stdout);
  t.equal(out.length, v.messages.vectors.length, 'one JSON line per datagram');
  v.messages.vectors.forEach((vec, i) => {
    const o = out[i]!;
    const m = vec.meaning;
    t.equal(o['ok'], true, `${vec.name}: valid`);
    t.equal(o['name'], m.name, `${vec.name}: name`);
    t.equal(o['type'], m.type, `${vec.name}: type`);
    t.equal(o['rid'], m.rid, `${vec.name}: request ID`);
    t.same(o['body'], m.body, `${vec.name}: body, field by field`);
    t.equal(o['hex'], vec.hex, `${vec.name}: hex`);
    t.equal(o['line'], 3 + 2 * i, `${vec.name}: line number (comments skipped)`);
    if (m.auth) {
      const a = o['auth'] as Record<string, unknown>;
      t.same({ sid: a['sid'], seq: a['seq'], mac: a['mac'] }, m.auth, `${vec.name}: session ID, seq and MAC`);
      t.equal(a['check'], 'not-checked', `${vec.name}: MAC not checked without a key`);
    } else {
      t.notOk(o['auth'], `${vec.name}: no session part`);
    }
  });
});

t.test('text output: field names, enumerations, addresses, error names', async (t) => {
  const reg = vector(v, 'REGISTER');
  const err = vector(v, 'ERROR', 0);
  const refl = vector(v, 'REFLECT_RESULT');
  const ack = vector(v, 'REFRESH_ACK');
  const r = devloc(['decode', reg.hex, err.hex, refl.hex, ack.hex]);
  t.equal(r.status, 0, r.stderr);
  const [a, b, c, d] = r.stdout.split(/^(?=#\d)/m);
  t.match(a, /REGISTER \(0x10\)/);
  t.match(a, /rid 5eed000000000010/);
  t.match(a, /session 51d0000000000000000000000000000a {2}seq 1 {2}mac [0-9a-f]{32}/);
  t.match(a, /MAC not checked/);
  t.match(a, /1 \/ticket\/: h'8443a10127/);
  t.match(a, /2 \/timeMs\/: 1767225600123 \/2026-01-01T00:00:00\.123Z\//);
  t.match(a, /\[h'c0a80114', 4800\] \/192\.168\.1\.20:4800\//);
  t.match(a, /\/\[2001:db8::20\]:4800\//);
  t.match(a, /4 \/netMode\/: 4 \/port-restricted\//);
  t.match(a, /5 \/nickname\/: "Zoë"/);
  t.match(a, /7 \/community\/: \{[^}]*"elo": -1[^}]*"ranked": true[^}]*\}/, 'props keep text keys and negative ints');
  t.match(a, /8 \/visibility\/: 1 \/groups-and-allowed\//);
  t.match(a, /ticket \(body\.ticket\): COSE_Sign1 EdDSA, kid 7a1e0001/);
  t.match(a, /aud locator {2}sub \(locator ID\) 5ca1ab1e0123456789abcdef00c0ffee/);
  t.match(a, /signature not checked: no --authd-key given/);
  t.match(b, /ERROR \(0x7f\)/);
  t.match(b, /error RATE_LIMITED \(6\), retry after 2000 ms/);
  t.match(b, /1 \/code\/: 6 \/RATE_LIMITED\//);
  t.match(c, /4 \/otherIp\/: h'c0000202' \/192\.0\.2\.2\//);
  t.match(d, /\/\[2001:db8:85a3::8a2e:370:7334\]:4800\//);
});

t.test('files: hex lines with comments, and --raw', async (t) => {
  const dir = scratch(t);
  const lines = path.join(dir, 'lines.txt');
  const ack = vector(v, 'GROUP_JOIN_ACK').hex;
  writeFileSync(lines, `# capture notes\n\n${ack}\n  ${ack.toUpperCase().replace(/(..)/g, '$1 ')}  \n0x${ack}\nnot hex at all\n`);
  let r = devloc(['decode', '--file', lines]);
  t.equal(r.status, 1, 'a line that is not hex makes the input bad: exit 1');
  t.match(r.stderr, /lines\.txt line 6: not hex, skipped/);
  t.equal((r.stdout.match(/GROUP_JOIN_ACK \(0x33\)/g) ?? []).length, 3, 'three datagrams (spaces, case and 0x ignored)');
  t.match(r.stdout, /same bytes as #1 \(a retransmission or a duplicate\)/);
  t.match(r.stdout, /#1 {2}line 3 {2}/);

  const raw = path.join(dir, 'dgram.bin');
  writeFileSync(raw, Buffer.from(vector(v, 'MATCH_STATUS_RESULT').hex, 'hex'));
  r = devloc(['decode', '--raw', '--file', raw]);
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /MATCH_STATUS_RESULT \(0x63\)/);
  t.match(r.stdout, /2 \/state\/: 1 \/matched\//);
  t.match(r.stdout, /4 \/host\/: 1/);

  r = devloc(['decode', '--file', path.join(dir, 'missing.txt')]);
  t.equal(r.status, 1);
  t.match(r.stderr, /cannot read file .*missing\.txt: ENOENT/);
  r = devloc(['decode', '--authd-key', path.join(dir, 'missing.key'), ack]);
  t.equal(r.status, 1);
  t.match(r.stderr, /cannot read authd key file/);
  r = devloc(['decode', '--authd-key', lines, ack]);
  t.equal(r.status, 1);
  t.match(r.stderr, /not a devloc key file/);
});
