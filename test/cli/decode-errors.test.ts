// devloc decode on garbage and bad arguments, run as a process: an undecodable datagram is
// reported with its error code and reason (exit 0; 1 with --strict), a usage error exits 2.
import t from 'tap';
import { errorName } from '../../src/wire/errors.js';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { pcapFile } from '../ops/pcap.js';
import { devloc, devlocAsync, jsonLines, scratch, vector, vectors } from './fixtures/cli.js';

const v = vectors();

t.test('garbage is reported with its error code, never a crash', async (t) => {
  const rid = '48' + '00'.repeat(8);
  const cases: [string, number, RegExp][] = [
    ['deadbeef', 1, /tags not allowed/],
    ['ff', 1, /simple value not allowed/],
    ['8401', 1, /truncated/],
    ['0102', 1, /trailing bytes/],
    ['9f01ff', 1, /indefinite length/],
    ['fa3f800000', 1, /floating point/],
    ['a201010101', 1, /duplicate map key/],
    ['8101', 1, /envelope must be an array of 4 or 5 items/],
    ['8401024400000000a0', 1, /request ID must be 8 bytes/],
    [`840210${rid}a0`, 3, /version 2 not supported/],
    [`8401187e${rid}a0`, 4, /unknown message type 126/],
    [`840110${rid}a0`, 2, /REGISTER requires session auth/],
    [`84011851${rid}a10118ff`, 2, /observed: expected \[ip, port\]/],
    ['81'.repeat(9) + '00', 5, /nesting too deep/],
  ];
  const r = devloc(['decode', '--json', ...cases.map(([h]) => h)]);
  t.equal(r.status, 0, `undecodable datagrams are not fatal: ${r.stderr}`);
  const out = jsonLines(r.stdout);
  t.equal(out.length, cases.length);
  cases.forEach(([h, code, reason], i) => {
    const e = out[i]!['error'] as { code: number; name: string; reason: string };
    t.equal(out[i]!['ok'], false, `${h}: not ok`);
    t.equal(e.code, code, `${h}: code ${code}`);
    t.equal(e.name, errorName(code), `${h}: named ${errorName(code)}`);
    t.match(e.reason, reason, `${h}: reason`);
  });
  const big = 'a0'.repeat(1201);
  const tooLarge = jsonLines(devloc(['decode', '--json', big]).stdout)[0]!;
  t.equal((tooLarge['error'] as { name: string }).name, 'TOO_LARGE', 'over 1200 bytes: TOO_LARGE');

  const text = devloc(['decode', 'deadbeef', `840110${rid}a0`]);
  t.equal(text.status, 0);
  t.match(text.stdout, /undecodable: MALFORMED \(1\): tags not allowed\n {2}hex deadbeef/);
  t.match(text.stdout, /invalid: BAD_MESSAGE \(2\): REGISTER requires session auth\n {2}\[1 \/version\/, 16 \/REGISTER\/, h'0000000000000000' \/request ID\/, \{\}\]/);
  t.equal(devloc(['decode', '--strict', 'deadbeef']).status, 1, '--strict: undecodable is exit 1');
});

t.test('usage errors exit 2', async (t) => {
  const ack = vector(v, 'GROUP_JOIN_ACK').hex;
  const cases: [string[], RegExp][] = [
    [['decode'], /give datagrams as hex arguments/],
    [['decode', 'xyz'], /argument 1 is not hex: xyz/],
    [['decode', 'abc'], /argument 1 is not hex/],
    [['decode', '--raw', ack], /--raw goes with --file/],
    [['decode', '--port', '4704', ack], /--port and --any-port go with --pcap/],
    [['decode', '--file', 'x', ack], /give one input/],
    [['decode', '--session-key', 'abcd', ack], /--session-key #1 must be 32 bytes/],
    [['decode', '--seal-key', 'zz', ack], /--seal-key #1 must be 32 bytes/],
    [['decode', '--bogus', ack], /^devloc: unknown option --bogus\n$/],
  ];
  const results = await Promise.all(cases.map(([args]) => devlocAsync(args)));
  cases.forEach(([args, err], i) => {
    const r = results[i]!;
    t.equal(r.status, 2, `${args.join(' ')}: exit 2`);
    t.match(r.stderr, err, `${args.join(' ')}: says why`);
    t.equal(r.stdout, '', `${args.join(' ')}: prints nothing on stdout`);
  });
});

t.test('what the user typed or a file name is quoted escaped, never raw (an ESC sequence in a pasted argument or a file name)', async (t) => {
  const RAW = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/;
  const dir = scratch(t);
  const evilFile = path.join(dir, 'cap\u001b[2J.pcap');
  // A capture's header (test/ops/pcap.ts) and a record cut short: the summary line and a warning name the file.
  writeFileSync(evilFile, Buffer.concat([pcapFile([]), Buffer.alloc(10)]));
  const cases: [string[], number, RegExp][] = [
    [['decode', 'zz\u001b[31m'], 2, /argument 1 is not hex: zz\\x1b\[31m/],
    [['decode', '--bogus\u001b[31m', 'aa'], 2, /unknown option --bogus\\x1b\[31m/],
    [['decode', '--pcap', evilFile], 1, /cap\\x1b\[2J\.pcap: packet 1: truncated record header/],
  ];
  for (const [args, status, shown] of cases) {
    const r = await devlocAsync(args);
    t.equal(r.status, status, `${JSON.stringify(args)}: exit ${status}`);
    t.match(r.stderr, shown, 'shown escaped');
    t.notOk(RAW.test(r.stderr.replace(/\n/g, '')) || RAW.test(r.stdout.replace(/\n/g, '')), 'nothing raw on stderr or stdout');
  }
});
