// Field schemas: one declarative description per message body, used to validate decoded CBOR,
// to encode typed bodies deterministically (straight into the CBOR encoder's output), and to
// print field names (decode tool, man page, dissector). Unknown keys are ignored on decode so
// newer peers can add optional fields.
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

function decodeValue(type: FieldType, v: CborValue, path: string): SchemaResult<unknown> {
  switch (type.t) {
    case 'uint':
      if (typeof v !== 'number' || v < 0) return { ok: false, reason: `${path}: expected uint` };
      if (type.max !== undefined && v > type.max) return { ok: false, reason: `${path}: > ${type.max}` };
      return { ok: true, value: v };
    case 'bool':
      if (typeof v !== 'boolean') return { ok: false, reason: `${path}: expected bool` };
      return { ok: true, value: v };
    case 'tstr':
      if (typeof v !== 'string') return { ok: false, reason: `${path}: expected text` };
      if (Buffer.byteLength(v) > type.max) return { ok: false, reason: `${path}: text longer than ${type.max} bytes` };
      return { ok: true, value: v };
    case 'bstr':
      if (!(v instanceof Uint8Array)) return { ok: false, reason: `${path}: expected bytes` };
      if (v.length > type.max || v.length < (type.min ?? 0)) {
        return { ok: false, reason: `${path}: byte length ${v.length} outside ${type.min ?? 0}..${type.max}` };
      }
      return { ok: true, value: Buffer.from(v.buffer, v.byteOffset, v.length) };
    case 'addr': {
      if (!Array.isArray(v) || v.length !== 2) return { ok: false, reason: `${path}: expected [ip, port]` };
      const [ip, port] = v;
      const text = ip instanceof Uint8Array ? bytesToIp(ip) : null;
      if (!text) return { ok: false, reason: `${path}: ip must be 4 or 16 bytes` };
      if (typeof port !== 'number' || port < 0 || port > 65535) return { ok: false, reason: `${path}: bad port` };
      return { ok: true, value: { ip: text, port } satisfies Address };
    }
    case 'array': {
      if (!Array.isArray(v)) return { ok: false, reason: `${path}: expected array` };
      if (v.length > type.max) return { ok: false, reason: `${path}: more than ${type.max} elements` };
      const out: unknown[] = [];
      for (let i = 0; i < v.length; i++) {
        const r = decodeValue(type.of, v[i]!, `${path}[${i}]`);
        if (!r.ok) return r;
        out.push(r.value);
      }
      return { ok: true, value: out };
    }
    case 'struct': {
      if (!(v instanceof Map)) return { ok: false, reason: `${path}: expected map` };
      return decodeFields(type.fields, v, path);
    }
    case 'props': {
      if (!(v instanceof Map)) return { ok: false, reason: `${path}: expected map` };
      if (v.size > type.max) return { ok: false, reason: `${path}: more than ${type.max} properties` };
      const out: Props = {};
      for (const [k, x] of v) {
        if (typeof k !== 'string' || k.length === 0 || Buffer.byteLength(k) > PROP_KEY_MAX) {
          return { ok: false, reason: `${path}: property names are text of 1..${PROP_KEY_MAX} bytes` };
        }
        if (k === '__proto__') return { ok: false, reason: `${path}: reserved property name` };
        if (typeof x === 'string' ? Buffer.byteLength(x) > PROP_TEXT_MAX : typeof x !== 'number' && typeof x !== 'boolean') {
          return { ok: false, reason: `${path}.${k}: value must be text (<= ${PROP_TEXT_MAX} B), int or bool` };
        }
        out[k] = x as string | number | boolean;
      }
      return { ok: true, value: out };
    }
  }
}

/** Validate a decoded map against `fields`; returns an object keyed by field name. */
export function decodeFields(fields: readonly Field[], map: CborMap, path = 'body'): SchemaResult<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  for (const f of fields) {
    const v = map.get(f.key);
    if (v === undefined) {
      if (f.required) return { ok: false, reason: `${path}.${f.name} (key ${f.key}) missing` };
      continue;
    }
    const r = decodeValue(f.type, v, `${path}.${f.name}`);
    if (!r.ok) return r;
    out[f.name] = r.value;
  }
  return { ok: true, value: out };
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
