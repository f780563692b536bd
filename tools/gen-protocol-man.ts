// Generates the parts of man/devloc-protocol.7 that restate code, so the page cannot drift from
// it: the message sections and field tables (src/wire/catalog.ts), the sealed structures, the
// error codes, network modes and visibility values (with the meanings written beside them in
// src/wire/errors.ts and constants.ts), the constants table, and the examples
// (test/vectors/*.json, each decoded into annotated diagnostic notation).
//
//   npx tsx tools/gen-protocol-man.ts           rewrite the generated blocks in place
//   npx tsx tools/gen-protocol-man.ts --check   exit 1 if the page is stale
//
// The page is hand-written prose around blocks delimited by
//   .\" BEGIN GENERATED <name> ... .\" END GENERATED <name>
// test/unit/protocol-doc.test.ts runs the --check comparison.
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { authGrantFields, authInnerFields, catalog, MAX_QUERY_IDS, responseTypeOf } from '../src/wire/catalog.js';
import type { MessageSpec, MessageType, RefusalSpec } from '../src/wire/catalog.js';
import { decodeStrict } from '../src/wire/cbor.js';
import * as constants from '../src/wire/constants.js';
import { DEFAULT_PORTS, DEFAULT_SERVICE_IDS, NetMode, netModeNames, Visibility } from '../src/wire/constants.js';
import { ErrorCode } from '../src/wire/errors.js';
import type { Field, FieldType } from '../src/wire/schema.js';
import { envelopeDiag } from '../src/cli/diag.js';

// tools/ from the sources, build/tools/ compiled (tsconfig.tools.json).
const root = fileURLToPath(new URL(import.meta.url.endsWith('.ts') ? '../' : '../../', import.meta.url));
export const manPath = `${root}man/devloc-protocol.7`;

// ---------------------------------------------------------------------------------------------
// roff helpers.

/** Text for a text line: backslashes escaped, no leading control character. */
export function text(s: string): string {
  const t = s.replace(/\\/g, '\\e');
  return /^[.']/.test(t) ? `\\&${t}` : t;
}

/**
 * Running text as text lines: one sentence per line, lines of at most 80 bytes (mandoc -T lint
 * asks for both), abbreviations kept from ending a sentence.
 */
export function prose(s: string): string[] {
  const escaped = s
    .replace(/\\/g, '\\e')
    .replace(/\b(e\.g|i\.e)\.(?= )/g, '$1.\\&')
    // mandoc reads other characters as \[uXXXX] and counts the line so: write them so.
    .replace(/[^\x00-\x7f]/gu, (c) => `\\[u${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}]`);
  const out: string[] = [];
  for (const sentence of escaped.split(/(?<=[.!?])\s+/)) {
    let line = '';
    for (const word of sentence.split(/\s+/).filter(Boolean)) {
      const next = line ? `${line} ${word}` : word;
      if (line && next.length > 80) {
        out.push(line);
        line = word;
      } else line = next;
    }
    if (line) out.push(line);
  }
  return out.map((l) => (/^[.']/.test(l) ? `\\&${l}` : l));
}

/** One quoted macro argument (quoting also keeps mdoc from reading words as macros). */
export function arg(s: string): string {
  return `"${s.replace(/\\/g, '\\e').replace(/"/g, '\\(dq')}"`;
}

const hexType = (t: number): string => `0x${t.toString(16).padStart(2, '0')}`;

// ---------------------------------------------------------------------------------------------
// Doc comments of enumerations and constants, read from the source beside the values.

/**
 * `/** text *\/` comments preceding `NAME: value,` members or `export const NAME` lines. A
 * comment applies to every declaration after it up to the next blank line or comment.
 */
export function docComments(source: string): Map<string, string> {
  const out = new Map<string, string>();
  let pending: string | undefined;
  const lines = source.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line.startsWith('/**')) {
      let body = line;
      while (!body.includes('*/') && i + 1 < lines.length) body += ' ' + lines[++i]!.trim();
      pending = body
        .replace(/^\/\*\*/, '')
        .replace(/\*\/.*$/, '')
        .replace(/\s\*\s/g, ' ')
        .replace(/\s+/g, ' ')
        .replace(/`([^`]*)`/g, '$1')
        .trim();
      continue;
    }
    if (line === '' || line.startsWith('//')) {
      pending = undefined;
      continue;
    }
    // A comment covers the declarations right below it; any other line ends its reach.
    const m = /^(?:export const )?([A-Z][A-Z0-9_]*)\s*[:=]/.exec(line);
    if (m && pending !== undefined) out.set(m[1]!, pending);
    else pending = undefined;
  }
  return out;
}

const sourceDocs = (file: string): Map<string, string> => docComments(readFileSync(`${root}src/wire/${file}`, 'utf8'));

// ---------------------------------------------------------------------------------------------
// Field tables.

/** Compact type text for the tables (see TYPES in the page). */
export function typeText(type: FieldType): string {
  switch (type.t) {
    case 'uint':
      return type.max !== undefined ? `uint <= ${type.max}` : 'uint';
    case 'bool':
      return 'bool';
    case 'tstr':
      return `tstr <= ${type.max} B`;
    case 'bstr':
      return type.min === type.max ? `bstr ${type.max} B` : type.min ? `bstr ${type.min}..${type.max} B` : `bstr <= ${type.max} B`;
    case 'addr':
      return 'addr';
    case 'array':
      return `array <= ${type.max} of ${typeText(type.of)}`;
    case 'struct':
      return 'map';
    case 'props':
      return `props <= ${type.max}`;
  }
}

interface Row {
  key: string;
  name: string;
  type: string;
  required: boolean;
  doc: string;
}

/** Rows for `fields`, nested maps flattened below their field as key.key and name[].name. */
export function fieldRows(fields: readonly Field[], keyPrefix = '', namePrefix = ''): Row[] {
  const rows: Row[] = [];
  for (const f of [...fields].sort((a, b) => a.key - b.key)) {
    rows.push({ key: `${keyPrefix}${f.key}`, name: `${namePrefix}${f.name}`, type: typeText(f.type), required: f.required === true, doc: f.doc });
    const inner = f.type.t === 'struct' ? f.type : f.type.t === 'array' && f.type.of.t === 'struct' ? f.type.of : undefined;
    if (inner) rows.push(...fieldRows(inner.fields, `${keyPrefix}${f.key}.`, `${namePrefix}${f.name}${f.type.t === 'array' ? '[]' : ''}.`));
  }
  return rows;
}

/**
 * The fields of a body, one entry each: key, name, (type, required or optional), then the
 * meaning below. (A five-column table leaves the meaning a dozen columns on an 80-column
 * terminal; this reads at any width.)
 */
function fieldTable(fields: readonly Field[]): string[] {
  if (fields.length === 0) return ['.Pp', 'The body is the empty map', '.Pq Li a0 .'];
  const out = ['.Bl -tag -width Ds'];
  for (const r of fieldRows(fields)) {
    out.push(`.It Li ${r.key} ${r.name} Pq ${r.type}, ${r.required ? 'required' : 'optional'}`);
    out.push(...prose(r.doc.charAt(0).toUpperCase() + r.doc.slice(1) + (/[.!?]$/.test(r.doc) ? '' : '.')));
  }
  out.push('.El');
  return out;
}

const DIRECTION_TEXT: Record<string, string> = {
  'terminal->authd': 'terminal to authd',
  'authd->terminal': 'authd to terminal',
  'terminal->server': 'terminal to server',
  'server->terminal': 'server to terminal',
  'terminal->terminal': 'terminal to terminal (either end of a peer channel)',
  'authd->server': 'authd to a registered service (locatord, matchd)',
  'server->authd': 'service to authd',
};
const AUTH_TEXT: Record<string, string> = {
  none: 'none (unauthenticated; see ANTI-AMPLIFICATION)',
  sealed: 'sealed to authd\'s key (see AUTHENTICATION)',
  // AUTH_RESPONSE: sealed back to the terminal's one-shot key, not to authd's.
  'sealed authd->terminal': 'sealed under responseKey, from the request\'s one-shot key (see AUTH_RESPONSE under AUTHENTICATION)',
  session: 'session MAC in the envelope (see SESSIONS)',
};
const PEER_AUTH_TEXT = 'channel MAC in the envelope, the channel ID in the session ID slot (see PEER CHANNELS)';

function serviceText(spec: MessageSpec): string {
  if (spec.direction === 'authd->server') return "sent from authd's port to the address each service is registered with";
  if (spec.direction === 'server->authd') return "sent to authd's port";
  if (spec.service === 'any') return 'any server (answers a refused request)';
  if (spec.service === 'peer') return "none: sent to the peer's candidate addresses (see PEER CHANNELS)";
  return `${spec.service} (UDP port ${DEFAULT_PORTS[spec.service]} by default)`;
}

function roleText(spec: MessageSpec, type: number): string {
  if (spec.name === 'ERROR') return `${hexType(type)}, the answer to any refused request.`;
  const resp = responseTypeOf(type as MessageType);
  if (resp !== undefined) {
    const r = catalog[resp];
    if (spec.direction === 'terminal->terminal') return `${hexType(type)}, a request. Answered by the peer with ${r.name} (${hexType(resp)}); peers never send ERROR.`;
    const who = spec.direction === 'server->terminal' ? ' Sent by the server; the terminal answers' : spec.direction === 'authd->server' ? ' Sent by authd; the service answers' : ' Answered by';
    return `${hexType(type)}, a request.${who} ${r.name} (${hexType(resp)}) or ERROR.`;
  }
  const req = catalog[(type - 1) as MessageType];
  return `${hexType(type)}, the answer to ${req.name} (${hexType(type - 1)}).`;
}

export function messagesBlock(): string[] {
  const out: string[] = [];
  const types = Object.keys(catalog).map(Number).sort((a, b) => a - b);
  for (const type of types) {
    const spec = catalog[type as MessageType];
    out.push(`.Ss ${arg(`${spec.name} (${hexType(type)})`)}`);
    out.push(...prose(spec.doc));
    out.push('.Bl -tag -width "Authentication" -compact');
    out.push('.It Type', ...prose(roleText(spec, type)));
    out.push('.It Direction', ...prose(DIRECTION_TEXT[spec.direction] ?? spec.direction));
    out.push('.It Service', ...prose(serviceText(spec)));
    out.push('.It Authentication', ...prose(spec.name === 'ERROR' ? 'session MAC when the refused request had a valid one, else none' : spec.service === 'peer' ? PEER_AUTH_TEXT : spec.name === 'REVOKE' ? "Ed25519 signature of authd's signing key in the body (see REVOCATION)" : spec.name === 'REVOKE_ACK' ? 'none; it carries the REVOKE request ID, which only the recipient saw' : (AUTH_TEXT[`${spec.auth} ${spec.direction}`] ?? AUTH_TEXT[spec.auth])!));
    if (spec.refusals) out.push('.It Refusals', ...refusalsText(spec.refusals));
    out.push('.El');
    out.push(...fieldTable(spec.fields));
  }
  return out;
}

/** A request's own refusals (MessageSpec.refusals): a list of "CODE: when", or that it has none. */
function refusalsText(refusals: readonly RefusalSpec[]): string[] {
  if (refusals.length === 0) return prose('none of its own (see the start of MESSAGES)');
  return ['.Bl -dash -compact', ...refusals.flatMap((r) => ['.It', ...prose(`${r.code}: ${r.when}.`)]), '.El'];
}

export function sealedBlock(): string[] {
  const grant = authGrantFields.find((f) => f.name === 'tickets')!;
  return [
    '.Ss AuthInner',
    'The plaintext sealed in AUTH_REQUEST',
    '.Li sealed .',
    ...fieldTable(authInnerFields),
    '.Ss AuthGrant',
    'The plaintext sealed in AUTH_RESPONSE',
    '.Li sealed ;',
    `one TicketGrant per audience granted (at most ${grant.type.t === 'array' ? grant.type.max : ''}).`,
    ...fieldTable(authGrantFields),
  ];
}

function enumTable(values: Record<string, number>, docs: Map<string, string>, fallback: Record<string, string>, label: (name: string) => string): string[] {
  const out = ['.Bl -column "PORT_RESTRICTED" "Value" "Meaning"', '.It Em Name Ta Em Value Ta Em Meaning'];
  for (const [name, value] of Object.entries(values).sort((a, b) => a[1] - b[1])) {
    const doc = docs.get(name) ?? fallback[name];
    if (doc === undefined) throw new Error(`no doc comment for ${name}: add /** ... */ beside it`);
    out.push(`.It Dv ${label(name)} Ta ${value} Ta ${arg(doc)}`);
  }
  out.push('.El');
  return out;
}

export function errorsBlock(): string[] {
  const docs = sourceDocs('errors.ts');
  const out = ['.Bl -column "UNSUPPORTED_VERSION" "Code" "Meaning"', '.It Em Name Ta Em Code Ta Em Meaning'];
  for (const [name, code] of Object.entries(ErrorCode).sort((a, b) => a[1] - b[1])) {
    const doc = docs.get(name);
    if (doc === undefined) throw new Error(`no doc comment for ErrorCode.${name} in src/wire/errors.ts`);
    out.push(`.It Dv ${name} Ta ${code} Ta ${arg(doc)}`);
  }
  out.push('.El');
  return out;
}

export function netModesBlock(): string[] {
  const docs = sourceDocs('constants.ts');
  return [
    ...enumTable(NetMode, docs, { UNKNOWN: 'Not classified (yet).' }, (n) => n),
    '.Pp',
    ...prose(`Names as printed: ${Object.entries(NetMode).map(([, v]) => `${v} ${netModeNames[v]}`).join(', ')}.`),
  ];
}

export function visibilityBlock(): string[] {
  return enumTable(Visibility, sourceDocs('constants.ts'), {}, (n) => n);
}

/** Constants a peer must agree on, with the reason written beside each in constants.ts. */
export function constantsBlock(): string[] {
  const docs = sourceDocs('constants.ts');
  const names = [
    'PROTOCOL_VERSION', 'MAX_DATAGRAM', 'AUTH_REQUEST_SIZE', 'REQUEST_ID_BYTES', 'SESSION_ID_BYTES', 'MAC_BYTES',
    'LOCATOR_ID_BYTES', 'MAX_DEPTH', 'MAX_ITEMS', 'REPLAY_WINDOW', 'DEFAULT_CLOCK_SKEW_S', 'DEFAULT_TICKET_LIFETIME_S',
    'DEFAULT_RETRANSMIT_TIMEOUT_MS', 'RETRANSMIT_RANDOM_FACTOR', 'MAX_RETRANSMIT', 'EXCHANGE_LIFETIME_MS',
    'NAT_REFRESH_S', 'OPEN_REFRESH_S', 'TTL_PER_REFRESH', 'CHANNEL_ID_BYTES', 'SEALED_CHANNEL_KEY_BYTES', 'MAX_CHANNEL_PAYLOAD',
    'PEER_KEEPALIVE_S',
  ] as const;
  const out = ['.Bl -tag -width Ds'];
  const entry = (name: string, value: string, doc: string): void => void out.push(`.It Dv ${name} No = ${value}`, ...prose(doc));
  for (const n of names) {
    const doc = docs.get(n);
    if (doc === undefined) throw new Error(`no doc comment for ${n} in src/wire/constants.ts`);
    entry(n, String(constants[n]), doc);
  }
  entry('MAX_QUERY_IDS', String(MAX_QUERY_IDS), 'Largest batch of locator IDs in one QUERY_ADDR or QUERY_STATUS.');
  entry('DEFAULT_PORTS', Object.entries(DEFAULT_PORTS).map(([k, v]) => `${k} ${v}`).join(', '), 'Default UDP ports of the servers.');
  entry('DEFAULT_SERVICE_IDS', Object.entries(DEFAULT_SERVICE_IDS).map(([k, v]) => `${k} "${v}"`).join(', '),
    'Default service IDs (ticket audiences) of the session services; see Service IDs under AUTHENTICATION.');
  out.push('.El');
  return out;
}

// ---------------------------------------------------------------------------------------------
// Examples, from the test vectors.

interface PeerChannelVector {
  channelId: string;
  channelKey: string;
  initiatorEph: { secret: string; public: string };
  responderEph: { secret: string; public: string };
  punchKeys: { initiatorToResponder: string; responderToInitiator: string };
  dataKeys: Record<'initiatorToResponder' | 'responderToInitiator', { enc: string; mac: string }>;
}

interface MessageVector {
  name: string;
  hex: string;
  note: string;
  session?: string;
  macKey?: string;
}

function readVectors<T>(file: string): T {
  const path = `${root}test/vectors/${file}`;
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as T;
  } catch (err) {
    throw new Error(`cannot read ${path} (the examples come from the test vectors): ${(err as Error).message}`);
  }
}

/** Hex in lines of 32 bytes; a long run of trailing zero bytes is described, not printed. */
function hexLines(h: string): string[] {
  let body = h;
  let zeros = 0;
  const m = /(?:00){64,}$/.exec(h);
  if (m) {
    body = h.slice(0, m.index);
    zeros = m[0].length / 2;
  }
  const lines: string[] = [];
  for (let i = 0; i < body.length; i += 64) lines.push(body.slice(i, i + 64));
  if (zeros) lines.push(`(then ${zeros} zero bytes)`);
  return lines;
}

function literal(lines: string[]): string[] {
  return ['.Bd -literal -offset indent', ...lines.map(text), '.Ed'];
}

export function examplesBlock(): string[] {
  const messages = readVectors<{
    sessionKeys: Record<string, { sid: string; aud: string; terminalToServer: string; serverToTerminal: string }>;
    sessionDerivation: { terminalCnf: { secret: string; public: string }; services: Record<string, { secret: string; public: string }> };
    peerChannel: PeerChannelVector;
    vectors: MessageVector[];
  }>('messages.json');
  const ticket = readVectors<{ authd: { kid: string; signSeed: string; signPublic: string }; hex: string; protectedHex: string; payloadHex: string; sigStructureHex: string; signature: string; verifyAt: number; claims: { aud: string } }>('ticket.json');
  const auth = readVectors<{ inputs: Record<string, unknown> & { rid: string; deviceId: string; nonce: string; timeMs: number; audiences: string[]; device: { signSeed: string; signPublic: string }; authd: { kid: string; sealSecret: string; sealPublic: string }; ephemeral: { secret: string; public: string }; cnf: { secret: string; public: string } }; derived: { sealKeys: { request: string; response: string }; proofInputHex: string; innerHex: string; requestAad: string } }>('auth.json');
  const out: string[] = [];
  out.push('.Ss Keys used by the examples');
  out.push(...prose('All secrets below are published test keys (RFC 8032 and RFC 7748 test vectors and counting bytes); never deploy them.'));
  const kv = (name: string, value: string): string[] => [`${name}:`, `  ${value}`];
  out.push(...literal([
    `authd kid: ${ticket.authd.kid}`,
    ...kv('authd signing seed (Ed25519)', ticket.authd.signSeed),
    ...kv('authd signing public key', ticket.authd.signPublic),
    ...kv('authd sealing secret (X25519)', auth.inputs.authd.sealSecret),
    ...kv('authd sealing public key', auth.inputs.authd.sealPublic),
    `device ID: ${auth.inputs.deviceId}`,
    ...kv('device signing seed (Ed25519)', auth.inputs.device.signSeed),
    ...kv('device signing public key', auth.inputs.device.signPublic),
    ...kv('terminal cnf secret (X25519)', messages.sessionDerivation.terminalCnf.secret),
    ...kv('terminal cnf public key', messages.sessionDerivation.terminalCnf.public),
    ...Object.entries(messages.sessionDerivation.services).flatMap(([s, k]) => [
      ...kv(`${s} service secret (X25519)`, k.secret),
      ...kv(`${s} service public key`, k.public),
    ]),
  ]));
  // A peer channel's keys go one way each: initiator to responder (i2r) and back (r2i), not t2s/s2t.
  const isPeer = (aud: string): boolean => aud.startsWith('peer-');
  const services = Object.values(messages.sessionKeys).filter((k) => !isPeer(k.aud));
  out.push(...prose('Session keys (see SESSIONS): session ID, audience, terminal-to-server (t2s) and server-to-terminal (s2t) key:'));
  out.push(...literal(services.flatMap((k) => [`sid ${k.sid}  aud ${k.aud}`, `  t2s ${k.terminalToServer}`, `  s2t ${k.serverToTerminal}`])));
  const pc = messages.peerChannel;
  out.push(...prose('The peer channel of the INTRODUCE_ACK, INTRO, PUNCH, PUNCH_ACK, DATA and DATA_ACK examples (see PEER CHANNELS): the initiator sent INTRODUCE, the responder sends the examples. Its channel ID and key K (the key sealed in INTRODUCE_ACK and INTRO), both one-shot keys of the punch, the punch MAC keys and the data keys, each one way: initiator to responder (i2r) or responder to initiator (r2i):'));
  out.push(...literal([
    `channel ID ${pc.channelId}`,
    ...kv('K (channel key)', pc.channelKey),
    ...kv('initiator one-shot secret (X25519)', pc.initiatorEph.secret),
    ...kv('initiator one-shot public key', pc.initiatorEph.public),
    ...kv('responder one-shot secret (X25519)', pc.responderEph.secret),
    ...kv('responder one-shot public key', pc.responderEph.public),
    ...kv('punch MAC key i2r', pc.punchKeys.initiatorToResponder),
    ...kv('punch MAC key r2i', pc.punchKeys.responderToInitiator),
    ...kv('data encryption key i2r', pc.dataKeys.initiatorToResponder.enc),
    ...kv('data MAC key i2r', pc.dataKeys.initiatorToResponder.mac),
    ...kv('data encryption key r2i', pc.dataKeys.responderToInitiator.enc),
    ...kv('data MAC key r2i', pc.dataKeys.responderToInitiator.mac),
  ]));

  out.push('.Ss The authentication exchange');
  out.push(...prose(`Request ID ${auth.inputs.rid}, nonce ${auth.inputs.nonce}, timeMs ${auth.inputs.timeMs}, audiences ${auth.inputs.audiences.join(' and ')}; one-shot key E:`));
  out.push(...literal([`E secret ${auth.inputs.ephemeral.secret}`, `E public ${auth.inputs.ephemeral.public}`]));
  out.push(...prose('Seal keys (request, response), the AAD of the request and the signed proof input:'));
  out.push(...literal([
    `request  ${auth.derived.sealKeys.request}`, `response ${auth.derived.sealKeys.response}`,
    'AAD (requestId || kid || E.public):', ...hexLines(auth.derived.requestAad), 'proof input:', ...hexLines(auth.derived.proofInputHex),
  ]));
  out.push(...prose('The AuthInner plaintext:'));
  out.push(...literal(hexLines(auth.derived.innerHex)));

  out.push('.Ss A ticket');
  out.push(...prose(`The locatord ticket that REGISTER below carries, valid at ${ticket.verifyAt} for audience ${ticket.claims.aud}. Protected header, payload (the claims), Sig_structure and signature, then the whole COSE_Sign1:`));
  out.push(...literal([
    `protected ${ticket.protectedHex}`, 'payload:', ...hexLines(ticket.payloadHex), 'Sig_structure:', ...hexLines(ticket.sigStructureHex),
    'signature:', ...hexLines(ticket.signature), 'ticket:', ...hexLines(ticket.hex),
  ]));

  const count = new Map<string, number>();
  for (const v of messages.vectors) {
    const n = (count.get(v.name) ?? 0) + 1;
    count.set(v.name, n);
    const bytes = Buffer.from(v.hex, 'hex');
    const d = decodeStrict(bytes);
    if (!d.ok) throw new Error(`vector ${v.name} does not decode: ${d.reason}`);
    out.push(`.Ss ${arg(`${v.name} example${n > 1 ? ` ${n}` : ''}`)}`);
    const peer = v.session !== undefined && isPeer(messages.sessionKeys[v.session]?.aud ?? '');
    const way = v.macKey === 'terminalToServer' ? (peer ? 'i2r' : 't2s') : peer ? 'r2i' : 's2t';
    const mac = v.session ? ` MAC key: ${peer ? (v.session === 'peerData' ? 'data MAC key' : 'punch MAC key') : `${v.session} session key`} ${way}.` : '';
    out.push(...prose(`${v.note} ${bytes.length} bytes.${mac}`));
    out.push(...literal(hexLines(v.hex)));
    out.push(...literal(envelopeDiag(d.value, { width: 72 }).split('\n')));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Assembly.

export function generatedBlocks(): Map<string, string[]> {
  return new Map([
    ['messages', messagesBlock()],
    ['sealed', sealedBlock()],
    ['errors', errorsBlock()],
    ['netmodes', netModesBlock()],
    ['visibility', visibilityBlock()],
    ['constants', constantsBlock()],
    ['examples', examplesBlock()],
  ]);
}

/** The page with every generated block replaced; throws if a block's markers are missing. */
export function applyBlocks(page: string, blocks: Map<string, string[]>): string {
  let out = page;
  for (const [name, lines] of blocks) {
    const begin = `.\\" BEGIN GENERATED ${name}`;
    const end = `.\\" END GENERATED ${name}`;
    const i = out.indexOf(begin);
    const j = out.indexOf(end);
    if (i < 0 || j < i) throw new Error(`man page lacks the markers of generated block "${name}"`);
    const head = out.slice(0, i) + begin + ' (npx tsx tools/gen-protocol-man.ts; do not edit by hand)\n';
    out = head + lines.join('\n') + '\n' + out.slice(j);
  }
  return out;
}

/** What the page should be, given what it is now. */
export function regenerate(page: string): string {
  // The BEGIN line carries a note after the name; normalise it before applying.
  return applyBlocks(page.replace(/^(\.\\" BEGIN GENERATED \w+).*$/gm, '$1'), generatedBlocks());
}

function main(): void {
  const page = readFileSync(manPath, 'utf8');
  const next = regenerate(page);
  if (process.argv.includes('--check')) {
    if (next !== page) {
      process.stderr.write(`${manPath} is stale: run npx tsx tools/gen-protocol-man.ts\n`);
      process.exitCode = 1;
    }
    return;
  }
  if (next !== page) writeFileSync(manPath, next);
  process.stdout.write(`${next === page ? 'unchanged' : 'wrote'} ${manPath}\n`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) main();
