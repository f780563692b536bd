// Control characters from the wire never reach the terminal raw: escape.ts (shared with the
// text log formatter) and the real `devloc decode` on crafted datagrams (issue 15, low items).
import t from 'tap';
import { escapeControls, safeJson, safeText } from '../../src/common/escape.js';
import { textValue } from '../../src/common/log.js';
import { encodeCbor } from '../../src/wire/cbor.js';
import { parseAddress } from '../../src/wire/addr.js';
import { encodeDatagram } from '../../src/wire/envelope.js';
import { encodeClaims, PROTECTED } from '../../src/wire/ticket-parse.js';
import { formatLookup, formatMembers, formatStatus } from '../../src/cli/commands/agentctl.js';
import { formatPresence } from '../../src/cli/commands/presence.js';
import type { PresenceStatus } from '../../src/agent/types.js';
import { devloc, jsonLines } from './fixtures/cli.js';

// Everything the brief names: C0 (ESC, BEL, CR, NUL), DEL, C1 (CSI, NEL), U+2028/2029, bidi.
const HOSTILE = '\u001b[2J\u0007\r\u0000\u007f\u009b\u0085\u2028\u2029\u202e\u2066';
// A raw control character of any of those kinds (the newline is checked separately).
const RAW = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;

t.test('escapeControls: \\xNN for C0/DEL/C1, \\u{NNNN} for separators and bidi', async (t) => {
  t.equal(escapeControls('a\u001b[31mb'), 'a\\x1b[31mb');
  t.equal(escapeControls('\u007f\u0085\u009b'), '\\x7f\\x85\\x9b');
  t.equal(escapeControls('x\ny\r\tz'), 'x\\ny\\r\\tz');
  t.equal(escapeControls('\u2028\u2029\u202a\u202e\u2066\u2069'), '\\u{2028}\\u{2029}\\u{202a}\\u{202e}\\u{2066}\\u{2069}');
  t.equal(escapeControls('Zoë 日本 ok'), 'Zoë 日本 ok', 'printable Unicode is left alone');
  t.equal(safeText('line1\nline2\u001b'), 'line1\nline2\\x1b', 'safeText keeps our newlines');
  const j = JSON.stringify({ n: HOSTILE });
  t.notOk(RAW.test(safeJson(j)), 'safeJson leaves no raw control');
  t.same(JSON.parse(safeJson(j)), { n: HOSTILE }, 'and parses back to the same value');
  // The text log formatter uses the same function.
  t.equal(textValue('\u001b[31mred'), '"\\x1b[31mred"');
  t.equal(textValue('a\u202eb'), '"a\\u{202e}b"');
});

t.test('devloc status/lookup/group members text: hostile nicknames and group names escaped', async (t) => {
  const nick = `e${HOSTILE}\nfake line`.slice(0, 32);
  const lookup = formatLookup([{ target: 'x', names: [], id: 'ab'.repeat(16), online: true, addr: '192.0.2.1:1', netMode: 'open', nickname: nick } as never]);
  t.notOk(RAW.test(lookup), 'lookup: no raw control');
  t.equal(lookup.split('\n').length, 2, 'lookup: a nickname cannot add a line');
  const members = formatMembers({ groupId: 'g', name: `grp${HOSTILE}\nx`, total: 1, members: [{ id: 'ab'.repeat(16), online: true, addr: null, netMode: null, nickname: nick, names: [] }] } as never);
  t.notOk(RAW.test(members), 'group members: no raw control');
  t.equal(members.split('\n').length, 3, 'group members: head, header row, one member');
});

t.test('devloc decode: hostile ticket iss/aud and nicknames, text and JSON', async (t) => {
  // A ticket whose issuer and audience carry terminal escapes (the signature is not checked: no key).
  const payload = encodeClaims({ locatorId: Buffer.alloc(16, 1), aud: `aud${HOSTILE}\nx`, iat: 1, exp: 2, cti: Buffer.alloc(16, 2), cnf: Buffer.alloc(32, 3) }, `iss${HOSTILE}\nfake`);
  const ticket = encodeCbor([PROTECTED, new Map([[4, Buffer.from('7a1e0001', 'hex')]]), payload, Buffer.alloc(64)]).toString('hex');
  // A GROUP_MEMBERS_RESULT (as from a hostile locatord) with a hostile group name and nickname.
  const members = encodeDatagram('GROUP_MEMBERS_RESULT', Buffer.alloc(8, 9), {
    members: [{ id: Buffer.alloc(16, 4), online: true, addr: parseAddress('198.51.100.23:40000'), nickname: `n${HOSTILE}\nz`.slice(0, 32), netMode: 1 }],
    total: 1,
    name: `g${HOSTILE}\nfake line`,
  } as never, { sid: Buffer.alloc(16, 2), seq: 1 }).toString('hex');

  let r = devloc(['decode', ticket, members]);
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /iss iss\\x1b\[2J/, 'the issuer is shown escaped');
  t.match(r.stdout, /GROUP_MEMBERS_RESULT/, 'the result is decoded');
  t.notOk(RAW.test(r.stdout), 'text: no raw control byte on stdout');
  t.notMatch(r.stdout, /^fake/m, 'no value starts a line of its own');

  r = devloc(['decode', '--json', ticket, members]);
  t.equal(r.status, 0, r.stderr);
  t.notOk(RAW.test(r.stdout), 'JSON: no raw control byte on stdout');
  const [a, b] = jsonLines(r.stdout);
  t.match(JSON.stringify(a), /\\u001b\[2J/, 'the JSON still carries the exact value');
  t.ok(b, 'two JSON objects');
});

t.test('formatStatus escapes agent-supplied values', async (t) => {
  const s = formatStatus({ state: 'registered', registered: true, locatorId: null, observed: null, netMode: 'open', netModeReason: `r${HOSTILE}`, localPort: null, authd: 'a', locatord: null, reflector: null, registeredAt: null, lastRefreshAt: null, nextRefreshAt: null, expiresAt: null, ticketExpiresAt: null, ticketRenewAt: null, counters: { authentications: 0, registrations: 0, refreshes: 0, probesAnswered: 0, failures: 0, addressChanges: 0 } } as never);
  t.notOk(RAW.test(s));
});

t.test('devloc watch text: a peer\'s nickname, media ID or wants cannot start a line of their own', async (t) => {
  const line = formatPresence({
    id: '00112233445566778899aabbccddeeff', names: [], online: true, nickname: `n\nonline  bob (ffff)${HOSTILE}`,
    presence: { mediaId: `m\n${HOSTILE}`, lookingForPartner: true, wants: { [`k\n${HOSTILE}`]: `v\n` } },
  } as PresenceStatus);
  t.notOk(line.includes('\n'), 'one line');
  t.notOk(RAW.test(line), 'no raw control character');
  t.match(line, /^online {3}n\\nonline {2}bob \(ffff\)\\x1b\[2J/, 'the nickname shown escaped, on the line of its own terminal');
});
