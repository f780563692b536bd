// Field schemas: one declarative description per message body, used to validate decoded CBOR,
// to check a typed body before it is sent (the agent's local BAD_REQUEST checks: the same
// bounds, in the same words, from one validator), to encode typed bodies deterministically
// (straight into the CBOR encoder's output), and to print field names (decode tool, man page,
// dissector). Unknown keys are ignored on decode so newer peers can add optional fields, and by
// the check likewise.
import type { Address } from './addr.js';
import { bytesToIp, ipToBytes } from './addr.js';
import type { CborMap, CborValue } from './cbor.js';
import { cborOut, compareKeys } from './cbor.js';

export type FieldType =
  | { t: 'uint'; max?: number }
  | { t: 'bool' }
  | { t: 'tstr'; max: number }
  | { t: 'bstr'; min?: number; max: number }
  | { t: 'addr' }
  | { t: 'array'; of: FieldType; max: number }
  | { t: 'struct'; fields: readonly Field[] }
  /** Service-defined properties: text keys to text/int/bool scalars. */
  | { t: 'props'; max: number };

export interface Field {
  readonly key: number;
  readonly name: string;
  readonly type: FieldType;
  readonly required?: boolean;
  readonly doc: string;
}

export type Props = Record<string, string | number | boolean>;

/**
 * The TypeScript type of a value of field type `T`: what `decodeFields` produces and
 * `encodeBody` / `writeFields` take. Applied to field specs declared `as const`
 * (src/wire/catalog.ts), so the message types are computed from the catalog and cannot drift
 * from it.
 */
export type ValueOf<T extends FieldType> =
  T extends { t: 'uint' } ? number
  : T extends { t: 'bool' } ? boolean
  : T extends { t: 'tstr' } ? string
  : T extends { t: 'bstr' } ? Uint8Array
  : T extends { t: 'addr' } ? Address
  : T extends { t: 'array'; of: infer E extends FieldType } ? ValueOf<E>[]
  : T extends { t: 'struct'; fields: infer F extends readonly Field[] } ? BodyOf<F>
  : T extends { t: 'props' } ? Props
  : never;

type Flatten<T> = T extends infer O ? { [K in keyof O]: O[K] } : never;

/**
 * The object a field list describes: each field under its name, optional unless `required: true`.
 * A list without fields is `Record<string, never>`. Field names must be literal types (specs
 * declared `as const`): a list typed only as `Field[]` gives `never`, so a spec that lost its
 * literal types fails to compile instead of typing every body as an index signature.
 */
export type BodyOf<F extends readonly Field[]> =
  F extends readonly [] ? Record<string, never>
  : string extends F[number]['name'] ? never
  : Flatten<
    { -readonly [E in F[number] as E extends { required: true } ? E['name'] : never]: ValueOf<E['type']> }
    & { -readonly [E in F[number] as E extends { required: true } ? never : E['name']]?: ValueOf<E['type']> }
  >;
const PROP_KEY_MAX = 32;
const PROP_TEXT_MAX = 64;

export type SchemaResult<T> = { ok: true; value: T } | { ok: false; reason: string };

/**
 * Where a value to validate comes from: `cbor`, a decoded CBOR item (a struct is a map keyed by
 * field key, an address [ip bytes, port]); `js`, a typed body as encodeBody takes it (a struct is
 * a plain object keyed by field name, an address {ip, port} with a literal IP). Every bound is
 * checked in one place, `validate`, for both: a JS value is accepted exactly when its encoding
 * would decode.
 */
type Form = 'cbor' | 'js';

type Refusal = { ok: false; reason: string };

/** A refusal at `path` ('' : the value itself, the reason without a prefix). */
function refuse(path: string, why: string): Refusal {
  return { ok: false, reason: path === '' ? why : `${path}: ${why}` };
}

/** The path of field or property `name` of the value at `path`. */
function member(path: string, name: string): string {
  return path === '' ? name : `${path}.${name}`;
}

/**
 * The path of the value at `key` of `parent`: a field or property name, an array index, or
 * undefined for `parent` itself. validate takes the two apart and joins them only to refuse or
 * to descend into a container, so that a valid leaf field costs no string (decode runs per
 * datagram).
 */
function at(parent: string, key: string | number | undefined): string {
  return key === undefined ? parent : typeof key === 'number' ? `${parent}[${key}]` : member(parent, key);
}

/** A struct or props value in JS form: a plain object (a Map, an array or a class instance is none: encode reads only own keys). */
function plainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null) return false;
  const proto = Object.getPrototypeOf(v) as unknown;
  return proto === Object.prototype || proto === null;
}

/** The reason a props entry is refused, or undefined; the key is a map key (text or int) or an own key. */
function propRefusal(k: unknown, x: unknown, path: string): Refusal | undefined {
  if (typeof k !== 'string' || k.length === 0 || Buffer.byteLength(k) > PROP_KEY_MAX) {
    return refuse(path, `property names are text of 1..${PROP_KEY_MAX} bytes`);
  }
  if (k === '__proto__') return refuse(path, 'reserved property name');
  // Decoded integers are always safe ones; a JS number must be one to be encoded at all.
  if (typeof x === 'string' ? Buffer.byteLength(x) > PROP_TEXT_MAX : typeof x !== 'boolean' && !(typeof x === 'number' && Number.isSafeInteger(x))) {
    return refuse(member(path, k), `value must be text (<= ${PROP_TEXT_MAX} B), int or bool`);
  }
  return undefined;
}

/**
 * Validate `v`, the value at `key` of `parent` (see `at`), against `type`; the value as decode
 * gives it (form cbor) or the checked copy (form js).
 */
function validate(type: FieldType, v: unknown, parent: string, key: string | number | undefined, form: Form): SchemaResult<unknown> {
  switch (type.t) {
    case 'uint':
      // Decoded integers are always safe ones; a JS number must be one to be encoded at all.
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) return refuse(at(parent, key), 'expected uint');
      if (type.max !== undefined && v > type.max) return refuse(at(parent, key), `> ${type.max}`);
      return { ok: true, value: v };
    case 'bool':
      if (typeof v !== 'boolean') return refuse(at(parent, key), 'expected bool');
      return { ok: true, value: v };
    case 'tstr':
      if (typeof v !== 'string') return refuse(at(parent, key), 'expected text');
      if (Buffer.byteLength(v) > type.max) return refuse(at(parent, key), `text longer than ${type.max} bytes`);
      return { ok: true, value: v };
    case 'bstr':
      if (!(v instanceof Uint8Array)) return refuse(at(parent, key), 'expected bytes');
      if (v.length > type.max || v.length < (type.min ?? 0)) {
        return refuse(at(parent, key), `byte length ${v.length} outside ${type.min ?? 0}..${type.max}`);
      }
      // Decoded from a Buffer, the bytes are one already (a Buffer's subarray): no second view.
      return { ok: true, value: form === 'cbor' && !Buffer.isBuffer(v) ? Buffer.from(v.buffer, v.byteOffset, v.length) : v };
    case 'addr': {
      let ip: string | null;
      let port: unknown;
      if (form === 'cbor') {
        if (!Array.isArray(v) || v.length !== 2) return refuse(at(parent, key), 'expected [ip, port]');
        ip = v[0] instanceof Uint8Array ? bytesToIp(v[0]) : null;
        port = v[1];
        if (!ip) return refuse(at(parent, key), 'ip must be 4 or 16 bytes');
      } else {
        if (!plainObject(v)) return refuse(at(parent, key), 'expected an address {ip, port}');
        ip = typeof v['ip'] === 'string' && ipToBytes(v['ip']) ? v['ip'] : null;
        port = v['port'];
        if (!ip) return refuse(at(parent, key), 'ip must be a literal IPv4 or IPv6 address');
      }
      if (typeof port !== 'number' || !Number.isInteger(port) || port < 0 || port > 65535) return refuse(at(parent, key), 'bad port');
      return { ok: true, value: { ip, port } satisfies Address };
    }
    case 'array': {
      if (!Array.isArray(v)) return refuse(at(parent, key), 'expected array');
      if (v.length > type.max) return refuse(at(parent, key), `more than ${type.max} elements`);
      const path = at(parent, key);
      const out: unknown[] = [];
      for (let i = 0; i < v.length; i++) {
        const r = validate(type.of, v[i], path, i, form);
        if (!r.ok) return r;
        out.push(r.value);
      }
      return { ok: true, value: out };
    }
    case 'struct':
      return validateFields(type.fields, v, at(parent, key), form);
    case 'props': {
      let entries: Iterable<[unknown, unknown]>;
      let size: number;
      if (form === 'cbor') {
        if (!(v instanceof Map)) return refuse(at(parent, key), 'expected map');
        entries = v;
        size = v.size;
      } else {
        if (!plainObject(v)) return refuse(at(parent, key), 'expected an object');
        entries = Object.entries(v);
        size = Object.keys(v).length;
      }
      if (size > type.max) return refuse(at(parent, key), `more than ${type.max} properties`);
      const path = at(parent, key);
      const out: Props = {};
      for (const [k, x] of entries) {
        const bad = propRefusal(k, x, path);
        if (bad) return bad;
        out[k as string] = x as string | number | boolean;
      }
      return { ok: true, value: out };
    }
  }
}

/** Validate a struct value (a decoded map, or a plain object) against `fields`; an object keyed by field name. */
function validateFields(fields: readonly Field[], v: unknown, path: string, form: Form): SchemaResult<Record<string, unknown>> {
  if (form === 'cbor' ? !(v instanceof Map) : !plainObject(v)) return refuse(path, form === 'cbor' ? 'expected map' : 'expected an object');
  const out: Record<string, unknown> = {};
  for (const f of fields) {
    // As writeFields reads a JS body: an undefined field is an absent one.
    const x = form === 'cbor' ? (v as CborMap).get(f.key) : (v as Record<string, unknown>)[f.name];
    if (x === undefined) {
      if (f.required) return { ok: false, reason: `${member(path, f.name)} (key ${f.key}) missing` };
      continue;
    }
    const r = validate(f.type, x, path, f.name, form);
    if (!r.ok) return r;
    out[f.name] = r.value;
  }
  return { ok: true, value: out };
}

/** Validate a decoded map against `fields`; returns an object keyed by field name. */
export function decodeFields(fields: readonly Field[], map: CborMap, path = 'body'): SchemaResult<Record<string, unknown>> {
  return validateFields(fields, map, path, 'cbor');
}

/**
 * Check a typed body (what encodeBody takes) against `fields` without encoding it: the bounds
 * decode applies, in the same words, so a value is accepted exactly when its encoding would
 * decode (a value encode cannot write at all, such as a fraction for a uint, is refused too).
 * Keys `fields` does not name are ignored, as decode ignores unknown keys. Never throws. The
 * reason starts with `path` and the field's name ('' : with the name alone); the value is the
 * body's fields the list names.
 */
export function checkFields(fields: readonly Field[], obj: unknown, path = 'body'): SchemaResult<Record<string, unknown>> {
  return validateFields(fields, obj, path, 'js');
}

/** checkFields for one value of field type `type` (a JS value as encodeBody takes it). */
export function checkValue(type: FieldType, v: unknown, path = 'value'): SchemaResult<unknown> {
  return validate(type, v, path, undefined, 'js');
}

/**
 * The fields of `fields` named in `names`, in the list's order: the part of a message a caller
 * supplies, to check with checkFields (the rest it fills in itself). Throws on a name the list
 * does not have (a programming error).
 */
export function pickFields(fields: readonly Field[], names: readonly string[]): readonly Field[] {
  for (const n of names) if (!fields.some((f) => f.name === n)) throw new TypeError(`no field ${n}`);
  return fields.filter((f) => names.includes(f.name));
}

/** Field lists sorted by key, computed once per list (schemas are static; encoding is per reply). */
const sortedByKey = new WeakMap<readonly Field[], readonly Field[]>();

function fieldsByKey(fields: readonly Field[]): readonly Field[] {
  let sorted = sortedByKey.get(fields);
  if (!sorted) {
    sorted = [...fields].sort((a, b) => a.key - b.key);
    sortedByKey.set(fields, sorted);
  }
  return sorted;
}

/** Write a value of field type `type` (cborOut). */
function writeValue(type: FieldType, v: unknown): void {
  switch (type.t) {
    case 'uint':
    case 'bool':
    case 'tstr':
    case 'bstr':
      cborOut.value(v as CborValue);
      return;
    case 'addr': {
      const a = v as Address;
      const ip = ipToBytes(a.ip);
      if (!ip) throw new TypeError(`not an IP address: ${a.ip}`);
      cborOut.head(4, 2);
      cborOut.value(ip);
      cborOut.value(a.port);
      return;
    }
    case 'array': {
      const xs = v as unknown[];
      cborOut.head(4, xs.length);
      for (const x of xs) writeValue(type.of, x);
      return;
    }
    case 'struct':
      writeFields(type.fields, v as Record<string, unknown>);
      return;
    case 'props': {
      const p = v as Props;
      const keys = Object.keys(p).sort(compareKeys);
      cborOut.head(5, keys.length);
      for (const k of keys) {
        cborOut.value(k);
        cborOut.value(p[k]!);
      }
      return;
    }
  }
}

/**
 * Write an object as a CBOR map of `fields` (cborOut), keys in deterministic order, absent fields
 * omitted; straight into the encoder's output, no Map built per body (it was most of the
 * allocation of a push's or a reply's encoding).
 */
export function writeFields(fields: readonly Field[], obj: Record<string, unknown>): void {
  const sorted = fieldsByKey(fields);
  let n = 0;
  for (const f of sorted) {
    if (obj[f.name] !== undefined) n++;
    else if (f.required) throw new TypeError(`required field ${f.name} missing`);
  }
  cborOut.head(5, n);
  for (const f of sorted) {
    const v = obj[f.name];
    if (v === undefined) continue;
    cborOut.head(0, f.key);
    writeValue(f.type, v);
  }
}

/**
 * The CBOR bytes of an object as a map of `fields` (writeFields). Throws TypeError only on a
 * programming error (a value that does not fit the schema), never on anything received.
 */
export function encodeBody(fields: readonly Field[], obj: Record<string, unknown>): Buffer {
  cborOut.start();
  writeFields(fields, obj);
  return cborOut.take();
}

/** The length of encodeBody(fields, obj), with no Buffer made: paged answers size each entry. */
export function encodedBodySize(fields: readonly Field[], obj: Record<string, unknown>): number {
  cborOut.start();
  writeFields(fields, obj);
  return cborOut.written();
}

/** Human description of a field type, for the man page and `devloc decode --schema`. */
export function describeType(type: FieldType): string {
  switch (type.t) {
    case 'uint':
      return type.max !== undefined ? `uint (<= ${type.max})` : 'uint';
    case 'bool':
      return 'bool';
    case 'tstr':
      return `tstr (<= ${type.max} B)`;
    case 'bstr':
      return type.min === type.max ? `bstr (${type.max} B)` : `bstr (${type.min ?? 0}..${type.max} B)`;
    case 'addr':
      return 'addr';
    case 'array':
      return `[* ${describeType(type.of)}] (<= ${type.max})`;
    case 'struct':
      return `{${type.fields.map((f) => `${f.key}:${f.name}`).join(', ')}}`;
    case 'props':
      return `props (<= ${type.max})`;
  }
}
