// CBOR diagnostic notation (RFC 8949 §8, with the RFC 8610 Appendix G extensions: comments
// /.../ and whitespace inside h'...') annotated from the message catalog: every map key is
// followed by its field name, addresses by their text form, enumerations by their names and
// timestamps by their date. Used by `devloc decode` and for the examples in devloc-protocol(7).
//
//   {1 /observed/: [h'cb007107', 61234] /203.0.113.7:61234/, 2 /ttlS/: 90, ...}
//
// Values that do not fit the schema are printed plainly (the decoder reports why they are
// refused); keys the schema does not know are marked /unknown key/.
import { bytesToIp, formatAddress } from '../wire/addr.js';
import { MatchState, specOf } from '../wire/catalog.js';
import type { CborValue } from '../wire/cbor.js';
import { netModeNames, Visibility } from '../wire/constants.js';
import { errorName } from '../wire/errors.js';
import type { Field, FieldType } from '../wire/schema.js';
import { hex, isoMillis, isoSeconds } from './util.js';

interface Atom {
  t: 'atom';
  text: string;
  /** Hex of a byte string, so a long one can wrap. */
  bytes?: string;
}
type Doc = Atom | { t: 'group'; open: string; close: string; items: Item[] };
interface Item {
  key?: string;
  doc: Doc;
  comment?: string;
}

const lower = (o: Record<string, number>): Record<number, string> =>
  Object.fromEntries(Object.entries(o).map(([k, v]) => [v, k.toLowerCase().replace(/_/g, '-')]));
const visibilityNames = lower(Visibility);
const matchStateNames = lower(MatchState);
const requirementOps: Record<number, string> = { 0: 'equal', 1: 'range', 2: 'member of set' };

/** Names for the values of enumerated fields, keyed by field name (names are catalog-wide). */
function uintComment(field: string | undefined, v: number): string | undefined {
  switch (field) {
    case 'netMode':
      return netModeNames[v] ?? 'unknown mode';
    case 'visibility':
      return visibilityNames[v] ?? 'unknown visibility';
    case 'state':
      return matchStateNames[v] ?? 'unknown state';
    case 'op':
      return requirementOps[v] ?? 'unknown op';
    case 'code':
      return errorName(v);
    case 'timeMs':
      return isoMillis(v);
    case 'exp':
    case 'iat':
    case 'deadlineS':
      return isoSeconds(v);
    case 'change': {
      const parts = [v & 1 ? 'other port' : '', v & 2 ? 'other address' : ''].filter(Boolean);
      return parts.length ? parts.join(' + ') : 'same address and port';
    }
    default:
      return undefined;
  }
}

function atomOf(v: CborValue): Atom {
  if (v instanceof Uint8Array) {
    const h = hex(v);
    // Zero padding (up to 1000 bytes in an AUTH_REQUEST) says nothing byte by byte.
    if (v.length > 16 && v.every((b) => b === 0)) return { t: 'atom', text: `h'00…00' /${v.length} zero bytes/` };
    return { t: 'atom', text: `h'${h}'`, bytes: h };
  }
  if (typeof v === 'string') return { t: 'atom', text: JSON.stringify(v) };
  if (v === null) return { t: 'atom', text: 'null' };
  return { t: 'atom', text: String(v) };
}

/** A value without schema: plain diagnostic notation. */
function plain(v: CborValue): Doc {
  if (Array.isArray(v)) return { t: 'group', open: '[', close: ']', items: v.map((x) => ({ doc: plain(x) })) };
  if (v instanceof Map) {
    return { t: 'group', open: '{', close: '}', items: [...v].map(([k, x]) => ({ key: atomOf(k).text, doc: plain(x) })) };
  }
  return atomOf(v);
}

/** A value of a known field type; `name` is the field's name (for enumerations and dates). */
function typed(type: FieldType, v: CborValue, name?: string): { doc: Doc; comment?: string } {
  switch (type.t) {
    case 'uint': {
      const c = typeof v === 'number' ? uintComment(name, v) : undefined;
      return c === undefined ? { doc: plain(v) } : { doc: plain(v), comment: c };
    }
    case 'bstr':
      if (name === 'otherIp' && v instanceof Uint8Array) {
        const ip = bytesToIp(v);
        if (ip) return { doc: plain(v), comment: ip };
      }
      return { doc: plain(v) };
    case 'addr': {
      if (Array.isArray(v) && v.length === 2 && v[0] instanceof Uint8Array && typeof v[1] === 'number') {
        const ip = bytesToIp(v[0]);
        if (ip) return { doc: plain(v), comment: formatAddress({ ip, port: v[1] }) };
      }
      return { doc: plain(v) };
    }
    case 'array':
      if (!Array.isArray(v)) return { doc: plain(v) };
      return {
        doc: {
          t: 'group', open: '[', close: ']',
          items: v.map((x) => {
            const r = typed(type.of, x, name);
            return r.comment === undefined ? { doc: r.doc } : { doc: r.doc, comment: r.comment };
          }),
        },
      };
    case 'struct':
      return v instanceof Map ? { doc: fieldsDoc(type.fields, v) } : { doc: plain(v) };
    default:
      return { doc: plain(v) };
  }
}

function fieldsDoc(fields: readonly Field[], m: Map<number | string, CborValue>): Doc {
  const byKey = new Map(fields.map((f) => [f.key, f]));
  const items: Item[] = [];
  for (const [k, v] of m) {
    const f = typeof k === 'number' ? byKey.get(k) : undefined;
    if (!f) {
      items.push({ key: `${atomOf(k).text} /unknown key/`, doc: plain(v) });
      continue;
    }
    const r = typed(f.type, v, f.name);
    items.push(r.comment === undefined ? { key: `${k} /${f.name}/`, doc: r.doc } : { key: `${k} /${f.name}/`, doc: r.doc, comment: r.comment });
  }
  return { t: 'group', open: '{', close: '}', items };
}

function flat(d: Doc): string {
  if (d.t === 'atom') return d.text;
  return d.open + d.items.map((i) => (i.key ? `${i.key}: ` : '') + flat(i.doc) + (i.comment ? ` /${i.comment}/` : '')).join(', ') + d.close;
}

/**
 * Lay `d` out within `width` columns: a group that fits stays on one line, otherwise one item
 * per line indented by two; long byte strings wrap inside h'...'. `col` is where `d` starts.
 */
function layout(d: Doc, indent: number, col: number, width: number): string[] {
  const one = flat(d);
  if (col + one.length <= width) return [one];
  if (d.t === 'atom') {
    if (d.bytes === undefined) return [one];
    // Whole 4-byte groups per line, at least 8 bytes.
    const perLine = Math.max(16, Math.floor((width - indent - 4) / 8) * 8);
    const lines: string[] = [];
    const first = Math.max(16, Math.floor((width - col - 2) / 8) * 8);
    lines.push(`h'${d.bytes.slice(0, first)}`);
    for (let i = first; i < d.bytes.length; i += perLine) lines.push(' '.repeat(indent + 2) + d.bytes.slice(i, i + perLine));
    lines[lines.length - 1] += "'";
    return lines;
  }
  const out = [d.open];
  const inner = indent + 2;
  d.items.forEach((item, i) => {
    const sep = i < d.items.length - 1 ? ',' : '';
    const prefix = item.key ? `${item.key}: ` : '';
    const suffix = (item.comment ? ` /${item.comment}/` : '') + sep;
    const lines = layout(item.doc, inner, inner + prefix.length, width - suffix.length);
    lines[0] = ' '.repeat(inner) + prefix + lines[0];
    lines[lines.length - 1] += suffix;
    out.push(...lines);
  });
  out.push(' '.repeat(indent) + d.close);
  return out;
}

export interface DiagOptions {
  /** Columns available (default 100). */
  width?: number;
  /** Indentation of every line after the first. */
  indent?: number;
}

function render(d: Doc, o: DiagOptions = {}): string {
  const indent = o.indent ?? 0;
  return layout(d, indent, indent, o.width ?? 100).join('\n');
}

/** A message body (or any map described by `fields`) in annotated diagnostic notation. */
export function fieldsDiag(fields: readonly Field[], value: CborValue, o?: DiagOptions): string {
  return render(value instanceof Map ? fieldsDoc(fields, value) : plain(value), o);
}

/** Any CBOR value in plain diagnostic notation. */
export function plainDiag(value: CborValue, o?: DiagOptions): string {
  return render(plain(value), o);
}

/**
 * A whole datagram (the envelope array) in annotated diagnostic notation. Falls back to plain
 * notation for whatever is not a recognisable envelope.
 */
export function envelopeDiag(value: CborValue, o?: DiagOptions): string {
  if (!Array.isArray(value) || value.length < 4 || value.length > 5) return plainDiag(value, o);
  const [version, type, rid, body, auth] = value;
  const spec = typeof type === 'number' ? specOf(type) : undefined;
  const items: Item[] = [
    { doc: plain(version!), comment: 'version' },
    { doc: plain(type!), comment: spec ? spec.name : 'unknown type' },
    { doc: plain(rid!), comment: 'request ID' },
    { doc: spec && body instanceof Map ? fieldsDoc(spec.fields, body) : plain(body!) },
  ];
  if (auth !== undefined) {
    if (Array.isArray(auth) && auth.length === 3) {
      items.push({
        doc: {
          t: 'group', open: '[', close: ']',
          items: [
            { doc: plain(auth[0]!), comment: 'session ID' },
            { doc: plain(auth[1]!), comment: 'seq' },
            { doc: plain(auth[2]!), comment: 'MAC' },
          ],
        },
      });
    } else {
      items.push({ doc: plain(auth) });
    }
  }
  return render({ t: 'group', open: '[', close: ']', items }, o);
}
