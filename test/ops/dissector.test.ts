// The Wireshark dissector (contrib/wireshark/devloc.lua): its tables match the catalog, and
// tshark names every message type of a pcap written here, marks malformed datagrams as such
// and survives mutated ones.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import t from 'tap';
import { catalog } from '../../src/wire/catalog.js';
import { DEFAULT_PORTS } from '../../src/wire/constants.js';
import { decodeDatagram, encodeDatagram } from '../../src/wire/envelope.js';
import { ErrorCode } from '../../src/wire/errors.js';
import { currentGenerated, dissectorPath, REFLECTOR_ALT_PORT, renderGenerated } from '../../tools/gen-dissector-table.js';
import type { UdpPacket } from './pcap.js';
import { pcapFile, sampleDatagram, SERVER_IP, TERMINAL } from './pcap.js';
import { has, needs, root } from './tools.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

t.test('generated tables are up to date with src/wire', async (t) => {
  const lua = readFileSync(dissectorPath, 'utf8');
  t.equal(currentGenerated(lua), renderGenerated(), 'run `npx tsx tools/gen-dissector-table.ts` after changing the catalog, error codes or constants');
  for (const spec of Object.values(catalog)) t.match(lua, `= "${spec.name}",`, `${spec.name} is in the Lua table`);
  // The alternate reflector port is locatord's option default, not a wire constant.
  const { locatordSpec } = await import('../../src/locatord/options.js');
  t.equal(locatordSpec['reflector-alt-port']?.default, REFLECTOR_ALT_PORT, 'REFLECTOR_ALT_PORT is locatord\'s reflector-alt-port default');
});

const tsharkFound = has('tshark');

/** Run tshark with the dissector on `pcap`; returns exit status, stdout lines split on tabs. */
function tshark(pcap: string, fields: string[], extra: string[] = []): { status: number | null; rows: string[][]; stderr: string } {
  const r = spawnSync(
    'tshark',
    ['-n', '-X', `lua_script:${dissectorPath}`, '-r', pcap, ...extra, '-T', 'fields', '-E', 'separator=/t', '-E', 'occurrence=a', '-E', 'aggregator=|',
      ...fields.flatMap((f) => ['-e', f])],
    { encoding: 'utf8', cwd: root, timeout: 60_000 },
  );
  const rows = r.stdout.split('\n').filter((l) => l !== '').map((l) => l.split('\t'));
  // tshark warns on stderr when run as root ("could be dangerous"): noise, not a failure.
  return { status: r.status, rows, stderr: r.stderr };
}

t.test('tshark dissects every message type', needs('tshark', tsharkFound), async (t) => {
  t.ok(tsharkFound, 'tshark is installed');
  const dir = mkdtempSync(path.join(tmpdir(), 'devloc-dissector-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));

  type Expect = { name: string; rid: string; seq?: number; error?: string };
  const packets: UdpPacket[] = [];
  const expects: Expect[] = [];
  const push = (p: UdpPacket, e: Expect): void => {
    const d = decodeDatagram(p.payload);
    t.ok(d.ok, `sample ${e.name} is a valid datagram${d.ok ? '' : `: ${d.reason}`}`);
    packets.push(p);
    expects.push(e);
  };
  const specs = Object.values(catalog);
  specs.forEach((spec, i) => {
    const p = sampleDatagram(spec.name, i);
    const d = decodeDatagram(p.payload);
    push(p, {
      name: spec.name,
      rid: d.ok ? hex(d.msg.rid) : '?',
      ...(d.ok && d.msg.auth ? { seq: d.msg.auth.seq } : {}),
      ...(spec.name === 'ERROR' ? { error: 'TOO_LARGE' } : {}),
    });
  });
  // The reflector's alternate port is registered too.
  const reflect = sampleDatagram('REFLECT', 100, REFLECTOR_ALT_PORT);
  const reflectDecoded = decodeDatagram(reflect.payload);
  push(reflect, { name: 'REFLECT', rid: reflectDecoded.ok ? hex(reflectDecoded.msg.rid) : '?' });
  // Every error code by name, one of them session-MACed (an ERROR answering a session request).
  let n = 200;
  for (const [name, code] of Object.entries(ErrorCode)) {
    const rid = Buffer.alloc(8, n & 0xff);
    const auth = code === ErrorCode.REPLAY ? { sid: Buffer.alloc(16, 7), seq: 2 ** 40 } : undefined;
    const payload = encodeDatagram('ERROR', rid, { code }, auth);
    push({ src: { ip: SERVER_IP, port: DEFAULT_PORTS.authd }, dst: TERMINAL, payload }, {
      name: 'ERROR', rid: hex(rid), error: name, ...(auth ? { seq: auth.seq } : {}),
    });
    n++;
  }

  const file = path.join(dir, 'all.pcap');
  writeFileSync(file, pcapFile(packets));
  const r = tshark(file, ['frame.number', 'devloc.type_name', 'devloc.rid', 'devloc.seq', 'devloc.error_name', '_ws.col.Info', '_ws.expert.message', 'cbor']);
  t.equal(r.status, 0, `tshark exits 0${r.status === 0 ? '' : `: ${r.stderr}`}`);
  t.equal(r.rows.length, expects.length, 'one line per packet');
  r.rows.forEach((row, i) => {
    const e = expects[i]!;
    const [frame, typeName, rid, seq, errorName, info, expertMsg, cbor] = row;
    t.equal(frame, String(i + 1));
    t.equal(typeName, e.name, `frame ${i + 1} is ${e.name}`);
    t.equal(rid?.replace(/:/g, ''), e.rid, `frame ${i + 1} request ID`);
    t.equal(seq, e.seq === undefined ? '' : String(e.seq), `frame ${i + 1} sequence number`);
    t.equal(errorName, e.error ?? '', `frame ${i + 1} error name`);
    t.ok(info?.startsWith(`DEVLOC ${e.name} rid=${e.rid}`), `frame ${i + 1} info column: ${info}`);
    t.equal(expertMsg, '', `frame ${i + 1} has no expert info`);
    t.not(cbor, '', `frame ${i + 1} body handed to the CBOR dissector`);
  });

  // devloc decode reads the same capture and names the same messages.
  if (t.ok(existsSync(path.join(root, 'src/cli/commands/decode.ts')), 'src/cli/commands/decode.ts exists')) {
    const d = spawnSync(process.execPath, ['--import', 'tsx', path.join(root, 'src/cli/devloc.ts'), 'decode', '--pcap', file, '--port', String(REFLECTOR_ALT_PORT), '--json'], {
      cwd: root, encoding: 'utf8', timeout: 60_000,
    });
    t.equal(d.status, 0, `devloc decode --pcap exits 0${d.status === 0 ? '' : `: ${d.stderr}`}`);
    const names = d.stdout.split('\n').filter(Boolean).map((l) => (JSON.parse(l) as { name?: string }).name);
    t.same(names, expects.map((e) => e.name), 'devloc decode names every datagram as tshark does');
  }
});

t.test('malformed datagrams are marked and do not stop tshark', needs('tshark', tsharkFound), async (t) => {
  t.ok(tsharkFound, 'tshark is installed');
  const dir = mkdtempSync(path.join(tmpdir(), 'devloc-dissector-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));

  const valid = sampleDatagram('REGISTER', 3).payload;
  const to = (payload: Uint8Array, port: number = DEFAULT_PORTS.locatord): UdpPacket => ({ src: TERMINAL, dst: { ip: SERVER_IP, port }, payload });
  const cases: [string, Uint8Array][] = [
    ['not CBOR', Buffer.from('ffffffffff', 'hex')],
    ['not an array', Buffer.from('a0', 'hex')],
    ['three items', Buffer.from('83010248', 'hex')],
    ['truncated', valid.subarray(0, Math.floor(valid.length / 2))],
    ['short request ID', Buffer.from('84011044000000' + '00a0', 'hex')],
    ['body not a map', Buffer.from('8401104800000000000000008100', 'hex')],
    ['auth not [sid, seq, mac]', Buffer.from('850110480000000000000000a08100', 'hex')],
    ['trailing bytes', Buffer.concat([valid, Buffer.from([0])])],
    ['indefinite-length body', Buffer.from('840110480000000000000000bfff', 'hex')],
    ['deep nesting', Buffer.from('84011048000000000000000081' + '81'.repeat(20) + '00', 'hex')],
    ['huge length', Buffer.from('8401104800000000000000005bffffffffffffffff', 'hex')],
    ['64-bit version', Buffer.from('841bffffffffffffffff10480000000000000000a0', 'hex')],
    ['64-bit type', Buffer.from('84011bffffffffffffffff480000000000000000a0', 'hex')],
  ];
  // Deterministic mutations of valid datagrams: must never raise a Lua error.
  let seed = 12345;
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const specs = Object.values(catalog);
  const mutants: Uint8Array[] = [];
  for (let i = 0; i < 300; i++) {
    const base = Buffer.from(sampleDatagram(specs[rand(specs.length)]!.name, i).payload);
    if (i % 3 === 0) mutants.push(base.subarray(0, 1 + rand(base.length - 1)));
    else {
      for (let k = 0; k <= rand(3); k++) base[rand(base.length)] = rand(256);
      mutants.push(base);
    }
  }
  const packets = [...cases.map(([, b]) => to(b)), to(valid), ...mutants.map((b) => to(b)), to(valid)];
  const file = path.join(dir, 'malformed.pcap');
  writeFileSync(file, pcapFile(packets));
  const r = tshark(file, ['frame.number', 'devloc.type_name', '_ws.expert.message', '_ws.col.Protocol']);
  t.equal(r.status, 0, `tshark exits 0${r.status === 0 ? '' : `: ${r.stderr}`}`);
  t.equal(r.rows.length, packets.length, 'one line per packet: tshark read the whole file');
  cases.forEach(([what], i) => {
    const row = r.rows[i]!;
    t.match(row[2] ?? '', /Malformed devloc datagram/, `${what}: marked malformed (${row[2]})`);
  });
  const after = r.rows[cases.length]!;
  t.equal(after[1], 'REGISTER', 'a valid datagram after malformed ones is dissected');
  t.equal(after[2], '', 'and carries no expert info');
  t.equal(r.rows.at(-1)?.[1], 'REGISTER', 'and after 300 mutated ones too');
  for (const row of r.rows) {
    t.notMatch(row[2] ?? '', /Lua Error/, `frame ${row[0]}: no Lua error`);
    t.equal(row[3], 'DEVLOC', `frame ${row[0]}: dissected as devloc`);
  }
});

t.test('unknown types and missing session auth are flagged, not malformed', needs('tshark', tsharkFound), async (t) => {
  t.ok(tsharkFound, 'tshark is installed');
  const dir = mkdtempSync(path.join(tmpdir(), 'devloc-dissector-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const to = (hexBytes: string): UdpPacket => ({ src: TERMINAL, dst: { ip: SERVER_IP, port: DEFAULT_PORTS.locatord }, payload: Buffer.from(hexBytes, 'hex') });
  // [1, 0x7e, rid, {}] and [1, REGISTER, rid, {2: 5}] (no auth array).
  const file = path.join(dir, 'flags.pcap');
  // ERROR with code 2^32 (beyond every table and uint32 field).
  writeFileSync(file, pcapFile([to('8401187e480102030405060708a0'), to('840110480102030405060708a10205'), to('8401187f480102030405060708a1011b0000000100000000')]));
  const r = tshark(file, ['devloc.type_name', '_ws.expert.message', '_ws.col.Info']);
  t.equal(r.status, 0, 'tshark exits 0');
  t.equal(r.rows[0]?.[0], 'UNKNOWN_0x7e', 'unknown type named by its code');
  t.match(r.rows[0]?.[1] ?? '', /not in the catalog/, 'and flagged');
  t.notMatch(r.rows[0]?.[1] ?? '', /Malformed/, 'but not malformed');
  t.equal(r.rows[1]?.[0], 'REGISTER');
  t.match(r.rows[1]?.[1] ?? '', /REGISTER requires session authentication/, 'missing auth flagged');
  t.match(r.rows[1]?.[2] ?? '', /^DEVLOC REGISTER rid=0102030405060708$/, 'info column');
  t.match(r.rows[2]?.[2] ?? '', /^DEVLOC ERROR rid=0102030405060708 code=UNKNOWN_ERROR_4294967296$/, 'unknown error code named by number');
  t.equal(r.rows[2]?.[1], '', 'without expert info');
});

t.test('peer traffic on ephemeral ports is named by the heuristic; other UDP is not claimed', needs('tshark', tsharkFound), async (t) => {
  t.ok(tsharkFound, 'tshark is installed');
  const dir = mkdtempSync(path.join(tmpdir(), 'devloc-dissector-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // Two terminals talking directly, each on an ephemeral port no dissector registers. The ports
  // are fixed so that a run never lands on a port some other Wireshark dissector owns.
  const a = { ip: '198.51.100.20', port: 50417 };
  const b = { ip: '192.0.2.33', port: 61873 };
  const peer = (name: 'PUNCH' | 'PUNCH_ACK' | 'DATA' | 'DATA_ACK', i: number, from = a, to = b): UdpPacket => ({ src: from, dst: to, payload: sampleDatagram(name, i).payload });
  const notDevloc: [string, Uint8Array][] = [
    // A DNS query for example.com (id 0x1234, RD).
    ['DNS query', Buffer.from('123401000001000000000000076578616d706c6503636f6d0000010001', 'hex')],
    ['random bytes', Buffer.from('5f3a9c0e4471b2d8e6a1003f7c9b58ee21', 'hex')],
    // Looks like a devloc envelope at first, then is not one.
    ['version 2', Buffer.from(sampleDatagram('PUNCH', 9).payload).fill(0x02, 1, 2)],
    ['type not in the catalog', Buffer.from('8401187e480102030405060708a0', 'hex')],
    ['type not in its shortest form', Buffer.from('84011802480102030405060708a0', 'hex')],
    ['PUNCH without session part', Buffer.from('840118704801020304050607' + '08a0', 'hex')],
    ['truncated PUNCH', sampleDatagram('PUNCH', 10).payload.subarray(0, 30)],
    ['trailing byte', Buffer.concat([sampleDatagram('DATA', 11).payload, Buffer.from([0])])],
  ];
  const packets: UdpPacket[] = [
    peer('PUNCH', 1), peer('PUNCH_ACK', 2, b, a), peer('DATA', 3), peer('DATA_ACK', 4, b, a),
    ...notDevloc.map(([, payload]) => ({ src: a, dst: b, payload })),
    peer('DATA', 5, b, a),
  ];
  const file = path.join(dir, 'peer.pcap');
  writeFileSync(file, pcapFile(packets));
  const r = tshark(file, ['frame.number', 'devloc.type_name', '_ws.col.Protocol', '_ws.expert.message', 'udp.srcport']);
  t.equal(r.status, 0, `tshark exits 0${r.status === 0 ? '' : `: ${r.stderr}`}`);
  t.equal(r.rows.length, packets.length, 'one line per packet');
  const named = (i: number, name: string): void => {
    const row = r.rows[i]!;
    t.equal(row[1], name, `frame ${i + 1} is ${name} without Decode As`);
    t.equal(row[2], 'DEVLOC', `frame ${i + 1} protocol column`);
    t.equal(row[3], '', `frame ${i + 1} has no expert info`);
  };
  ['PUNCH', 'PUNCH_ACK', 'DATA', 'DATA_ACK'].forEach((name, i) => named(i, name));
  notDevloc.forEach(([what], k) => {
    const row = r.rows[4 + k]!;
    t.equal(row[1], '', `${what}: not named as devloc`);
    t.not(row[2], 'DEVLOC', `${what}: not claimed (protocol ${row[2]})`);
  });
  named(packets.length - 1, 'DATA');
});
