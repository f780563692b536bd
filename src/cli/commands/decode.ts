// devloc decode: show what devloc datagrams say, for people reading captures and logs.
//
//   devloc decode HEX...                       datagrams (or bare tickets) as hex arguments
//   devloc decode --file F [--raw]             one hex datagram per line (/dev/stdin works), or one raw datagram
//   devloc decode --pcap F [--port N]...       UDP on the devloc ports in a classic pcap file
//   keys: --authd-key FILE (ticket signatures; a private authd key also opens AUTH_REQUEST and
//         its AUTH_RESPONSE), --session-key HEX, --service-key FILE (session MACs),
//         --seal-key HEX (open AUTH_REQUEST/AUTH_RESPONSE)
//
// Exit status: 0 when the input was read, whatever the datagrams hold (each undecodable one is
// reported with its error code); 1 when an input or key file cannot be read or is malformed
// (what could be read is still decoded), or with --strict when any datagram is undecodable or a
// MAC or ticket signature is BAD; 2 for usage errors.
import type { Argv, CommandModule } from 'yargs';
import { formatAddress } from '../../wire/addr.js';
import { DEFAULT_PORTS } from '../../wire/constants.js';
import { errorName } from '../../wire/errors.js';
import { privateKeyObject, publicKeyObject } from '../../wire/keys.js';
import type { InspectKeys, Report, TicketReport } from '../inspect.js';
import { Inspector, noKeys, secretKey } from '../inspect.js';
import { formatPcapTime, parsePcap } from '../pcap.js';
import { CliError, cliIo, isoSeconds, parseHex, print, printJson, readInput, readKeyFile, runHandler, UsageError } from '../util.js';
import { escapeControls, safeJson } from '../../common/escape.js';

interface DecodeArgs {
  hex?: string[];
  file?: string;
  raw: boolean;
  pcap?: string;
  port?: number | number[];
  'any-port': boolean;
  json: boolean;
  'authd-key'?: string | string[];
  'session-key'?: string | string[];
  'service-key'?: string | string[];
  'seal-key'?: string | string[];
  strict: boolean;
}

/** Where a datagram came from, printed before it and merged into its JSON object. */
interface Origin {
  arg?: number;
  line?: number;
  packet?: number;
  time?: string;
  src?: string;
  dst?: string;
}

// ---------------------------------------------------------------------------------------------
// Keys.

/** A repeatable option: yargs gives a scalar when it appears once, an array when repeated. */
const many = <T>(v: T | T[] | undefined): T[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);

export function loadKeys(a: Pick<DecodeArgs, 'authd-key' | 'session-key' | 'service-key' | 'seal-key'>): InspectKeys {
  const keys = noKeys();
  for (const file of many(a['authd-key'])) {
    const k = readKeyFile(file, 'authd key file');
    if (k.key?.kind === 'authd') {
      keys.authd.push({ kid: k.key.kid, signPublic: publicKeyObject('Ed25519', k.key.sign.public), seal: k.key.seal, label: file });
    } else if (k.public?.kind === 'authd-public') {
      keys.authd.push({ kid: k.public.kid, signPublic: publicKeyObject('Ed25519', k.public.sign), label: file });
    } else {
      throw new CliError(`${file} is a ${(k.key ?? k.public)!.kind} key, not an authd key`);
    }
  }
  for (const file of many(a['service-key'])) {
    const k = readKeyFile(file, 'service key file', 'secret');
    if (k.key?.kind !== 'service') throw new CliError(`${file} is a ${(k.key ?? k.public)!.kind} key; --service-key takes a private service key`);
    keys.services.push({ service: k.key.service, secret: privateKeyObject('X25519', k.key.seal), label: `service key ${k.key.service}` });
  }
  many(a['session-key']).forEach((text, i) => {
    const b = parseHex(text);
    const n = i + 1;
    if (b?.length === 32) keys.session.push({ key: secretKey(b), label: `--session-key #${n}` });
    else if (b?.length === 64) {
      keys.session.push({ key: secretKey(b.subarray(0, 32)), label: `--session-key #${n} (first half)` });
      keys.session.push({ key: secretKey(b.subarray(32)), label: `--session-key #${n} (second half)` });
    } else throw new UsageError(`--session-key #${n} must be 32 bytes of hex (or 64: terminal-to-server || server-to-terminal)`);
  });
  many(a['seal-key']).forEach((text, i) => {
    const b = parseHex(text);
    if (b?.length !== 32 && b?.length !== 64) throw new UsageError(`--seal-key #${i + 1} must be 32 bytes of hex (or 64: request || response)`);
    keys.seal.push({ key: b, label: `--seal-key #${i + 1}` });
  });
  return keys;
}

// ---------------------------------------------------------------------------------------------
// Text output.

const CHECK_TEXT = { ok: 'OK', bad: 'BAD', 'not-checked': 'not checked' } as const;

function originText(o: Origin): string {
  if (o.packet !== undefined) return `packet ${o.packet}  ${o.time}  ${o.src} -> ${o.dst}`;
  if (o.line !== undefined) return `line ${o.line}`;
  return `argument ${o.arg}`;
}

function ticketText(t: TicketReport, indent: string): string[] {
  if (!t.ok || !t.claims) return [`${indent}ticket (${t.where}): does not parse: ${escapeControls(String(t.error))}`];
  const c = t.claims;
  return [
    `${indent}ticket (${t.where}): COSE_Sign1 EdDSA, kid ${t.kid}`,
    `${indent}  iss ${escapeControls(c.iss)}  aud ${escapeControls(c.aud)}  sub (locator ID) ${c.sub}`,
    `${indent}  iat ${c.iat} (${isoSeconds(c.iat)})  exp ${c.exp} (${isoSeconds(c.exp)})  ${t.validity}`,
    `${indent}  cti (session ID) ${c.cti}`,
    `${indent}  cnf (terminal X25519 key) ${c.cnf}`,
    ...(c.addr ? [`${indent}  addr (where authd sent it) ${c.addr}`] : []),
    `${indent}  signature ${CHECK_TEXT[t.signature]}: ${t.signatureNote}`,
  ];
}

export function reportText(r: Report, origin: Origin): string {
  const out: string[] = [`#${r.index}  ${originText(origin)}  ${r.length} B`];
  if (r.kind === 'ticket') {
    out.push(...ticketText(r.tickets[0]!, '  '));
    return out.join('\n');
  }
  if (r.type !== undefined) {
    const t = `0x${r.type.toString(16).padStart(2, '0')}`;
    // What this datagram carries (an ERROR is MACed or not), not only what its type allows.
    const auth = r.auth ? 'session MAC' : r.authentication === 'sealed' ? 'sealed' : 'unauthenticated';
    const what = r.name ? `${r.name} (${t})  ${r.direction}, ${r.service}, ${auth}` : `unknown type ${r.type} (${t})`;
    out.push(`  ${what}  version ${r.version ?? '?'}${r.rid ? `  rid ${r.rid}` : ''}`);
  } else if (r.rid) {
    out.push(`  rid ${r.rid}`);
  }
  if (r.duplicateOf !== undefined) out.push(`  same bytes as #${r.duplicateOf} (a retransmission or a duplicate)`);
  if (r.answers) out.push(`  answers #${r.answers.index} ${r.answers.name}${r.answers.afterMs !== undefined ? ` (${r.answers.afterMs} ms later)` : ''}`);
  if (r.error) {
    out.push(`  ${r.diag ? 'invalid' : 'undecodable'}: ${r.error.name} (${r.error.code}): ${escapeControls(r.error.reason)}`);
    if (r.diag) out.push(`  ${r.diag}`);
    else out.push(`  hex ${r.hex}`);
    return out.join('\n');
  }
  if (r.auth) {
    out.push(`  session ${r.auth.sid}  seq ${r.auth.seq}  mac ${r.auth.mac}`);
    out.push(`  MAC ${CHECK_TEXT[r.auth.check]}: ${r.auth.note}`);
  }
  if (r.name === 'ERROR' && r.body && typeof r.body === 'object' && !Array.isArray(r.body)) {
    const b = r.body as Record<string, unknown>;
    const code = b['code'] as number;
    const parts = [`  error ${errorName(code)} (${code})`];
    if (b['retryAfterMs'] !== undefined) parts.push(`retry after ${String(b['retryAfterMs'])} ms`);
    if (b['message'] !== undefined) parts.push(JSON.stringify(b['message']));
    if (b['cookie'] !== undefined) parts.push(`cookie ${String(b['cookie'])}`);
    out.push(parts.join(', '));
  }
  out.push(`  ${r.diag}`);
  if (r.sealed) {
    out.push(`  sealed ${r.sealed.what}: ${r.sealed.opened ? '' : 'not opened: '}${r.sealed.note}`);
    if (r.sealed.diag) out.push(`    ${r.sealed.diag}`);
  }
  for (const t of r.tickets) out.push(...ticketText(t, '  '));
  return out.join('\n');
}

function reportJson(r: Report, origin: Origin): string {
  const o: Record<string, unknown> = { ...origin, ...r };
  delete o['diag'];
  if (r.sealed) o['sealed'] = { ...r.sealed, diag: undefined };
  if (r.error && r.diag) o['diag'] = r.diag;
  return JSON.stringify(o);
}

// ---------------------------------------------------------------------------------------------
// The command.

function failed(r: Report): boolean {
  return !r.ok || r.auth?.check === 'bad' || r.tickets.some((t) => t.signature === 'bad' || !t.ok);
}

function decode(a: DecodeArgs): void {
  const sources = [a.hex?.length ? 'HEX' : '', a.file !== undefined ? '--file' : '', a.pcap !== undefined ? '--pcap' : ''].filter(Boolean);
  if (sources.length === 0) throw new UsageError('give datagrams as hex arguments, --file F or --pcap F');
  if (sources.length > 1) throw new UsageError(`give one input: ${sources.join(' or ')}`);
  if (a.raw && a.file === undefined) throw new UsageError('--raw goes with --file');
  if ((many(a.port).length || a['any-port']) && a.pcap === undefined) throw new UsageError('--port and --any-port go with --pcap');
  for (const p of many(a.port)) if (!Number.isInteger(p) || p < 1 || p > 65535) throw new UsageError(`--port ${p} is not a port number`);

  // Hex arguments are checked before anything is printed: a typo is a usage error.
  const args = (a.hex ?? []).map((h, i) => {
    const b = parseHex(h);
    if (!b) throw new UsageError(`argument ${i + 1} is not hex: ${h.length > 40 ? `${h.slice(0, 40)}...` : h}`);
    return b;
  });
  const keys = loadKeys(a);
  const inspector = new Inspector(keys);
  const width = process.stdout.isTTY ? Math.max(60, Math.min(process.stdout.columns || 100, 160)) : 100;
  let index = 0;
  let anyFailed = false;
  let inputError = false;
  const emit = (bytes: Buffer, origin: Origin, time?: number): void => {
    const r = inspector.inspect(bytes, { index: ++index, width, ...(time !== undefined ? { time } : {}) });
    if (failed(r)) anyFailed = true;
    // Strings from the datagram never reach the terminal raw: text through print (escape.ts), JSON
    // with safeJson's \uNNNN (print's \xNN would not parse back).
    if (a.json) cliIo.out(`${safeJson(reportJson(r, origin))}\n`);
    else print(`${reportText(r, origin)}\n\n`);
  };
  const warn = (msg: string): void => {
    inputError = true;
    // File names and arguments are quoted: escaped like everything else printed.
    cliIo.err(`devloc decode: ${escapeControls(msg)}\n`);
  };

  if (a.hex?.length) {
    args.forEach((b, i) => emit(b, { arg: i + 1 }));
  } else if (a.file !== undefined) {
    const data = readInput(a.file, 'file');
    if (a.raw) emit(data, { line: 1 });
    else {
      data.toString('utf8').split(/\r?\n/).forEach((line, i) => {
        const s = line.trim();
        if (s === '' || s.startsWith('#')) return;
        const b = parseHex(s);
        if (!b) warn(`${a.file} line ${i + 1}: not hex, skipped`);
        else emit(b, { line: i + 1 });
      });
    }
  } else {
    const file = a.pcap!;
    const parsed = parsePcap(readInput(file, 'capture'));
    if (!parsed.ok) throw new CliError(`${file}: ${parsed.error}`);
    const ports = new Set<number>([...Object.values(DEFAULT_PORTS), ...many(a.port)]);
    const ns = parsed.header.nanoseconds;
    const stats = { packets: parsed.records.length, datagrams: 0, other: 0, notices: 0 };
    for (const rec of parsed.records) {
      const time = formatPcapTime(rec.seconds, rec.fraction, ns);
      if ('skip' in rec.udp) {
        // Only what could hide devloc traffic is worth a line: fragments and cut payloads.
        if (/fragment|truncated|not captured/.test(rec.udp.skip)) {
          stats.notices++;
          const line = { packet: rec.index, time, skipped: rec.udp.skip };
          if (a.json) printJson(line, true);
          else print(`packet ${rec.index}  ${time}  skipped: ${rec.udp.skip}\n\n`);
        } else stats.other++;
        continue;
      }
      const u = rec.udp;
      if (!a['any-port'] && !ports.has(u.src.port) && !ports.has(u.dst.port)) {
        stats.other++;
        continue;
      }
      stats.datagrams++;
      emit(u.payload, { packet: rec.index, time, src: formatAddress(u.src), dst: formatAddress(u.dst) }, rec.seconds + rec.fraction / (ns ? 1e9 : 1e6));
    }
    const summary = `${file}: ${stats.packets} packets, ${stats.datagrams} devloc datagrams` +
      `${stats.notices ? `, ${stats.notices} fragments or truncated` : ''}, ${stats.other} other packets` +
      `${a['any-port'] ? '' : ` (ports ${[...ports].sort((x, y) => x - y).join(', ')}; --port adds more)`}`;
    print(summary, a.json ? cliIo.err : cliIo.out);
    if (parsed.error) warn(`${file}: ${parsed.error}`);
  }
  if (inputError || (a.strict && anyFailed)) process.exitCode = 1;
}

export const decodeCommand: CommandModule<object, DecodeArgs> = {
  command: 'decode [hex..]',
  describe: 'decode devloc datagrams (hex, a file of hex lines, or a pcap): envelope, body, tickets, MACs',
  builder: (y: Argv<object>) =>
    y
      .usage(
        'devloc decode HEX...\n' +
          'devloc decode --file FILE [--raw]\n' +
          'devloc decode --pcap FILE [--port N]...\n\n' +
          'Prints each datagram: envelope (type, request ID, session ID/seq/MAC), the body in CBOR\n' +
          'diagnostic notation with field names, tickets with their claims, and refusals with their\n' +
          'error code. Keys let it check ticket signatures and MACs and open the sealed AUTH exchange.\n' +
          'Exit status: 0 input read (undecodable datagrams are reported, not fatal), 1 unreadable or\n' +
          'malformed input or key file (or, with --strict, anything undecodable or BAD), 2 usage error.',
      )
      .positional('hex', { type: 'string', array: true, describe: 'datagrams (or bare tickets) as hex; spaces, colons and 0x are ignored' })
      .option('file', { alias: 'f', type: 'string', describe: 'file of hex datagrams, one per line (# starts a comment; /dev/stdin reads standard input)' })
      .option('raw', { type: 'boolean', default: false, describe: 'with --file: the file is one raw binary datagram' })
      .option('pcap', { type: 'string', describe: 'classic libpcap capture (Ethernet, raw IP, Linux SLL/SLL2, loopback; IPv4/IPv6)' })
      .option('port', { type: 'number', describe: `with --pcap: also decode UDP on this port (defaults: ${Object.values(DEFAULT_PORTS).join(', ')}); repeatable` })
      .option('any-port', { type: 'boolean', default: false, describe: 'with --pcap: decode every UDP payload' })
      .option('json', { type: 'boolean', default: false, describe: 'one JSON object per datagram (bytes as hex, addresses as ip:port)' })
      .option('authd-key', { type: 'string', describe: 'authd key file (public or private) to check ticket signatures; a private one also opens the AUTH exchange; repeatable' })
      .option('session-key', { type: 'string', describe: 'session key (32 bytes hex, either direction; 64: both) to check MACs; repeatable' })
      .option('service-key', { type: 'string', describe: 'private service key file: derive session keys from tickets seen and check MACs; repeatable' })
      .option('seal-key', { type: 'string', describe: 'seal key (32 bytes hex, or 64: request || response) to open AUTH_REQUEST / AUTH_RESPONSE; repeatable' })
      .option('strict', { type: 'boolean', default: false, describe: 'exit 1 if any datagram is undecodable or any MAC/signature is BAD' }) as unknown as Argv<DecodeArgs>,
  handler: (argv) => runHandler('decode', () => decode(argv)),
};
