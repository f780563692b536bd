// Generates the tables of contrib/wireshark/devloc.lua (message types, body field names, error
// codes, protocol constants) from src/wire/, so the dissector never drifts from the catalog.
//
//   npx tsx tools/gen-dissector-table.ts           rewrite the block between the markers
//   npx tsx tools/gen-dissector-table.ts --check   exit 1 if the file is out of date
//
// test/ops/dissector.test.ts runs the same check, so a catalog change without a regenerated
// dissector fails the tests.
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { catalog, MessageType } from '../src/wire/catalog.js';
import type { MessageSpec } from '../src/wire/catalog.js';
import {
  DEFAULT_PORTS,
  MAC_BYTES,
  MAX_DATAGRAM,
  MAX_DEPTH,
  MAX_ITEMS,
  PROTOCOL_VERSION,
  REQUEST_ID_BYTES,
  SESSION_ID_BYTES,
} from '../src/wire/constants.js';
import { ErrorCode } from '../src/wire/errors.js';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const dissectorPath = path.join(root, 'contrib/wireshark/devloc.lua');

export const BEGIN = '-- BEGIN GENERATED TABLES';
export const END = '-- END GENERATED TABLES';

/**
 * The reflector's alternate port (RFC 5780 "other port"): locatord's default is the reflector
 * port + 2, i.e. 4704, leaving 4703 to matchd. Not in DEFAULT_PORTS, so named here.
 */
export const REFLECTOR_ALT_PORT = 4704;

const hex2 = (n: number): string => `0x${n.toString(16).padStart(2, '0')}`;
const luaString = (s: string): string => JSON.stringify(s); // ASCII names only: JSON quoting is valid Lua

/** The message types of the catalog, in code order. */
export function catalogEntries(): [number, MessageSpec][] {
  return Object.entries(catalog)
    .map(([code, spec]) => [Number(code), spec] as [number, MessageSpec])
    .sort((a, b) => a[0] - b[0]);
}

/** The generated Lua block, markers included. */
export function renderGenerated(): string {
  const out: string[] = [];
  out.push(`${BEGIN} by tools/gen-dissector-table.ts from src/wire/{catalog,errors,constants}.ts.`);
  out.push('-- Do not edit by hand: run `npx tsx tools/gen-dissector-table.ts`.');
  out.push('local message_types = {');
  for (const [code, spec] of catalogEntries()) out.push(`  [${hex2(code)}] = ${luaString(spec.name)},`);
  out.push('}');
  out.push('-- How each message is authenticated: "none", "sealed" or "session" (envelope item 5).');
  out.push('local message_auth = {');
  for (const [code, spec] of catalogEntries()) out.push(`  [${hex2(code)}] = ${luaString(spec.auth)},`);
  out.push('}');
  out.push('-- Top-level body keys of each message: key -> field name.');
  out.push('local body_fields = {');
  for (const [code, spec] of catalogEntries()) {
    const fields = spec.fields.map((f) => `[${f.key}] = ${luaString(f.name)}`).join(', ');
    out.push(`  [${hex2(code)}] = { ${fields}${fields ? ' ' : ''}},`);
  }
  out.push('}');
  out.push('local error_codes = {');
  for (const [name, code] of Object.entries(ErrorCode).sort((a, b) => a[1] - b[1])) out.push(`  [${code}] = ${luaString(name)},`);
  out.push('}');
  out.push(`local ERROR_TYPE = ${hex2(MessageType.ERROR)}`);
  out.push('local PROTOCOL_VERSION = ' + PROTOCOL_VERSION);
  out.push('local REQUEST_ID_BYTES = ' + REQUEST_ID_BYTES);
  out.push('local SESSION_ID_BYTES = ' + SESSION_ID_BYTES);
  out.push('local MAC_BYTES = ' + MAC_BYTES);
  out.push('local MAX_DATAGRAM = ' + MAX_DATAGRAM);
  out.push('local MAX_DEPTH = ' + MAX_DEPTH);
  out.push('local MAX_ITEMS = ' + MAX_ITEMS);
  out.push('-- Default UDP ports (DEFAULT_PORTS, plus the reflector\'s alternate port).');
  out.push('local default_ports = {');
  for (const [service, port] of Object.entries({ ...DEFAULT_PORTS, 'reflector-alt': REFLECTOR_ALT_PORT })) {
    out.push(`  [${port}] = ${luaString(service)},`);
  }
  out.push('}');
  out.push(END);
  return out.join('\n');
}

/** Replace the block between the markers of `lua` with `generated`. */
export function spliceGenerated(lua: string, generated: string): string {
  const begin = lua.indexOf(BEGIN);
  const endAt = lua.indexOf(END);
  if (begin < 0 || endAt < begin) throw new Error(`markers "${BEGIN}" / "${END}" not found`);
  return lua.slice(0, begin) + generated + lua.slice(endAt + END.length);
}

/** The block currently in the dissector, markers included. */
export function currentGenerated(lua: string): string {
  const begin = lua.indexOf(BEGIN);
  const endAt = lua.indexOf(END);
  if (begin < 0 || endAt < begin) return '';
  return lua.slice(begin, endAt + END.length);
}

function run(argv: string[]): number {
  const lua = readFileSync(dissectorPath, 'utf8');
  const next = spliceGenerated(lua, renderGenerated());
  if (argv.includes('--check')) {
    if (next !== lua) {
      process.stderr.write(`${path.relative(root, dissectorPath)} is out of date: run npx tsx tools/gen-dissector-table.ts\n`);
      return 1;
    }
    return 0;
  }
  if (next !== lua) writeFileSync(dissectorPath, next);
  process.stdout.write(`${path.relative(root, dissectorPath)}: ${next === lua ? 'up to date' : 'updated'}\n`);
  return 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  process.exitCode = run(process.argv.slice(2));
}
