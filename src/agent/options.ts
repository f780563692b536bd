// The Agent's options, checked once, at construction (devloc-agent(3), Options): a host program
// written from the page alone gets a clear AgentError BAD_REQUEST naming the option for a value
// of the wrong shape, instead of an agent that starts and then retries forever (a REGISTER
// locatord refuses as BAD_MESSAGE) or a TypeError deep inside start(). IDs may be given as 16
// bytes or as their text form (32 hex digits, what locatorIdHex and groupCreate return); the
// checked options hold bytes only, and the bind address in one shape.
import { KeyObject } from 'node:crypto';
import type { Address } from '../wire/addr.js';
import { ipToBytes } from '../wire/addr.js';
import { authInnerFields, catalog, MAX_ALLOW, MAX_JOIN_GROUPS, MessageType } from '../wire/catalog.js';
import { checkFields, pickFields } from '../wire/schema.js';
import { AgentError, refuseUnknownKeys } from './errors.js';
import { parseId } from './ids.js';
import type { AgentOptions } from './types.js';

/**
 * The options REGISTER carries as they are given, and the AUTH_REQUEST audiences: checked
 * against the catalog's own fields (devloc-protocol(7)), the message naming the option.
 */
const WIRE_OPTIONS = [
  ...pickFields(catalog[MessageType.REGISTER].fields, ['nickname', 'mediaId', 'visibility', 'ttlS', 'reachable']),
  // Required in AuthInner, optional here: without it the agent asks for its default audiences.
  ...pickFields(authInnerFields, ['audiences']).map((f) => ({ ...f, required: false })),
];

/** Every option name (the compiler holds it to AgentOptions: none missing, none extra). */
const OPTION_KEYS = Object.keys({
  identity: true, authd: true, authdKey: true, audiences: true, locatord: true, match: true, reflector: true, bind: true,
  nickname: true, joinGroups: true, allow: true, mediaId: true, visibility: true, ttlS: true, maxRefreshS: true,
  interfacePollMs: true, retransmitMs: true, backoffMinMs: true, backoffMaxMs: true, reclassifyMs: true, renewFraction: true,
  peers: true, savePartners: true, log: true, now: true, random: true, interfaces: true, reachable: true, peer: true,
} satisfies Record<keyof AgentOptions, true>);

/** AgentOptions as the agent's modules use them: IDs as bytes, `bind` as {host, port}. */
export type CheckedOptions = Omit<AgentOptions, 'joinGroups' | 'allow' | 'bind'> & {
  joinGroups?: { groupId: Buffer; joinCode?: string }[];
  allow?: Buffer[];
  bind?: { host: string; port: number };
};

const bad = (option: string, why: string): AgentError => new AgentError('BAD_REQUEST', `options.${option}: ${why}`);

function describe(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (typeof v === 'string') return `the string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}...` : v)}`;
  if (v instanceof Uint8Array) return `${v.length} bytes`;
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'an object of another shape' : `a ${typeof v}`;
}

/** An {ip, port} with a literal IP (parseAddress gives one); `anyPort`: port 0 allowed. */
function checkAddress(option: string, v: unknown, anyPort = false): Address {
  const a = v as Partial<Address> | null;
  const shape = `an address {ip, port} with a literal IP (parseAddress('192.0.2.10:4700'))`;
  if (typeof v === 'string') throw bad(option, `expected ${shape}, got ${describe(v)}`);
  if (typeof a !== 'object' || a === null || typeof a.ip !== 'string' || typeof a.port !== 'number') throw bad(option, `expected ${shape}, got ${describe(v)}`);
  if (!ipToBytes(a.ip)) throw bad(option, `${JSON.stringify(a.ip)} is not a literal IPv4 or IPv6 address`);
  if (!Number.isInteger(a.port) || a.port < (anyPort ? 0 : 1) || a.port > 65535) throw bad(option, `port ${a.port} is not ${anyPort ? '0' : '1'} to 65535`);
  return { ip: a.ip, port: a.port };
}

/** A 16-byte ID given as bytes or as 32 hex digits. */
function checkId(option: string, v: unknown): Buffer {
  if (v instanceof Uint8Array) {
    if (v.length !== 16) throw bad(option, `an ID is 16 bytes, got ${v.length}`);
    return Buffer.from(v);
  }
  if (typeof v === 'string') {
    const id = parseId(v);
    if (id) return id;
  }
  throw bad(option, `expected an ID: 16 bytes (Uint8Array) or 32 hex digits, got ${describe(v)}`);
}

function checkNumber(o: AgentOptions, key: keyof AgentOptions, min: number, max = Number.MAX_SAFE_INTEGER, minIncluded = true): void {
  const v = o[key];
  if (v === undefined) return;
  if (typeof v !== 'number' || !Number.isFinite(v) || (minIncluded ? v < min : v <= min) || v > max) {
    throw bad(key, `expected a number ${minIncluded ? '>=' : '>'} ${min}${max < Number.MAX_SAFE_INTEGER ? ` and <= ${max}` : ''}, got ${describe(v)}${typeof v === 'number' ? ` ${v}` : ''}`);
  }
}

/**
 * Check the options of `new Agent(options)` and return them with IDs as bytes and `bind` as
 * {host, port}. Throws AgentError('BAD_REQUEST') naming the first option that is missing or
 * of the wrong shape.
 */
export function checkOptions(opts: AgentOptions): CheckedOptions {
  if (typeof opts !== 'object' || opts === null) throw new AgentError('BAD_REQUEST', 'options: expected an object {identity, authd, authdKey, ...}');
  refuseUnknownKeys(opts, OPTION_KEYS, 'options');
  const id = opts.identity as Partial<AgentOptions['identity']> | undefined;
  if (typeof id !== 'object' || id === null || typeof id.deviceId !== 'string' || !(id.key instanceof KeyObject) || id.key.type !== 'private') {
    throw bad('identity', `required: the value of parseDeviceIdentity(bytes) or loadDeviceIdentity(path) when ok, got ${describe(id)}`);
  }
  if (opts.authd === undefined) throw bad('authd', 'required: authd\'s address {ip, port} (parseAddress)');
  const authd = checkAddress('authd', opts.authd);
  const key = opts.authdKey as Partial<AgentOptions['authdKey']> | undefined;
  if (typeof key !== 'object' || key === null || !(key.kid instanceof Uint8Array) || !(key.seal instanceof Uint8Array) || key.seal.length === 0) {
    throw bad('authdKey', `required: the value of parseAuthdKey(text) or loadAuthdKey(path) when ok, got ${describe(key)}`);
  }
  const out: CheckedOptions = { ...(opts as Omit<AgentOptions, 'joinGroups' | 'allow' | 'bind'>), authd };
  if (opts.locatord !== undefined) out.locatord = checkAddress('locatord', opts.locatord);
  if (opts.reflector !== undefined && opts.reflector !== null) out.reflector = checkAddress('reflector', opts.reflector);
  if (opts.match !== undefined) {
    if (typeof opts.match !== 'object' || opts.match === null) throw bad('match', `expected an object {matchd, ...}, got ${describe(opts.match)}`);
    if (opts.match.matchd !== undefined) out.match = { ...opts.match, matchd: checkAddress('match.matchd', opts.match.matchd) };
  }
  if (opts.bind !== undefined) {
    // {host, port} (the socket's own terms) or an Address {ip, port} as parseAddress gives it.
    const b = opts.bind as { host?: unknown; ip?: unknown; port?: unknown } | null;
    if (typeof b !== 'object' || b === null || (b.host === undefined) === (b.ip === undefined)) {
      throw bad('bind', `expected {host, port} or {ip, port} with a literal IP, got ${describe(opts.bind)}`);
    }
    const a = checkAddress('bind', { ip: b.host ?? b.ip, port: b.port }, true);
    out.bind = { host: a.ip, port: a.port };
  }
  const wire = checkFields(WIRE_OPTIONS, Object.fromEntries(WIRE_OPTIONS.map((f) => [f.name, opts[f.name as keyof AgentOptions]])), 'options');
  if (!wire.ok) throw new AgentError('BAD_REQUEST', wire.reason);
  // Not a wire rule: a service ID is never empty (the first audience names locatord's).
  const emptyAudience = opts.audiences?.indexOf('') ?? -1;
  if (emptyAudience >= 0) throw bad(`audiences[${emptyAudience}]`, 'expected a service ID, got the empty string');
  if (opts.joinGroups !== undefined) {
    if (!Array.isArray(opts.joinGroups) || opts.joinGroups.length > MAX_JOIN_GROUPS) throw bad('joinGroups', `expected an array of at most ${MAX_JOIN_GROUPS} {groupId, joinCode?}`);
    out.joinGroups = opts.joinGroups.map((j, i) => {
      if (typeof j !== 'object' || j === null) throw bad(`joinGroups[${i}]`, `expected {groupId, joinCode?}, got ${describe(j)}`);
      const groupId = checkId(`joinGroups[${i}].groupId`, j.groupId);
      if (j.joinCode !== undefined && (typeof j.joinCode !== 'string' || j.joinCode === '')) throw bad(`joinGroups[${i}].joinCode`, 'expected non-empty text');
      return j.joinCode !== undefined ? { groupId, joinCode: j.joinCode } : { groupId };
    });
  }
  if (opts.allow !== undefined) {
    if (!Array.isArray(opts.allow) || opts.allow.length > MAX_ALLOW) throw bad('allow', `expected an array of at most ${MAX_ALLOW} locator IDs`);
    const seen = new Set<string>();
    out.allow = [];
    for (const [i, x] of opts.allow.entries()) {
      const b = checkId(`allow[${i}]`, x);
      if (!seen.has(b.toString('hex'))) out.allow.push(b);
      seen.add(b.toString('hex'));
    }
  }
  if (opts.savePartners !== undefined && typeof opts.savePartners !== 'boolean') throw bad('savePartners', `expected true or false, got ${describe(opts.savePartners)}`);
  checkNumber(opts, 'maxRefreshS', 0);
  checkNumber(opts, 'interfacePollMs', 0, Number.MAX_SAFE_INTEGER, false);
  checkNumber(opts, 'retransmitMs', 0, Number.MAX_SAFE_INTEGER, false);
  checkNumber(opts, 'backoffMinMs', 0, Number.MAX_SAFE_INTEGER, false);
  checkNumber(opts, 'backoffMaxMs', 0, Number.MAX_SAFE_INTEGER, false);
  checkNumber(opts, 'reclassifyMs', 0, Number.MAX_SAFE_INTEGER, false);
  checkNumber(opts, 'renewFraction', 0, 1, false);
  if ((opts.backoffMinMs ?? 1000) > (opts.backoffMaxMs ?? 60_000)) throw bad('backoffMinMs', 'must not exceed backoffMaxMs');
  const book = opts.peers as { resolve?: unknown; namesOf?: unknown } | undefined;
  if (book !== undefined && (typeof book !== 'object' || book === null || typeof book.resolve !== 'function' || typeof book.namesOf !== 'function')) {
    throw bad('peers', `expected an AddressBook (new AddressBook(path), then load()), got ${describe(book)}`);
  }
  for (const k of ['log', 'now', 'random'] as const) {
    if (opts[k] !== undefined && typeof opts[k] !== 'function') throw bad(k, `expected a function, got ${describe(opts[k])}`);
  }
  return out;
}
