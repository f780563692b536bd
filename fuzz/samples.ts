// A valid body for every message type, built from the catalog's field schemas: the fuzzer's
// seeds when there are no test vectors, the codec benchmark's inputs, and the fuzz server's
// replies. `full` fills every optional field (the larger, slower case).
import type { Bodies, MessageName } from '../src/wire/catalog.js';
import { catalog, MessageType } from '../src/wire/catalog.js';
import type { Field, FieldType } from '../src/wire/schema.js';

function sampleValue(t: FieldType, full: boolean, salt: number): unknown {
  switch (t.t) {
    case 'uint':
      return t.max !== undefined ? Math.min(t.max, 1 + (salt % Math.max(1, t.max))) : 1_767_225_600 + salt;
    case 'bool':
      return salt % 2 === 0;
    case 'tstr':
      return 'devloc-sample'.slice(0, Math.min(t.max, 13));
    case 'bstr': {
      const n = t.min ?? Math.min(t.max, 24);
      const b = Buffer.alloc(n);
      for (let i = 0; i < n; i++) b[i] = (i * 31 + salt) & 0xff;
      return b;
    }
    case 'addr':
      return salt % 2 === 0 ? { ip: '198.51.100.7', port: 4800 + (salt % 100) } : { ip: '2001:db8::7', port: 4800 + (salt % 100) };
    case 'array': {
      const n = Math.min(t.max, full ? 3 : 1);
      return Array.from({ length: n }, (_, i) => sampleValue(t.of, full, salt + i));
    }
    case 'struct':
      return sampleFields(t.fields, full, salt);
    case 'props':
      return full ? { game: 'chess', level: 3, ranked: true } : { game: 'chess' };
  }
}

function sampleFields(fields: readonly Field[], full: boolean, salt: number): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const f of fields) {
    if (!f.required && !full) continue;
    // Padding is there to reach an exact size; a sample does not need it.
    if (f.name === 'padding') continue;
    out[f.name] = sampleValue(f.type, full, salt + f.key);
  }
  return out;
}

/** A valid body of message `name` (minimal: required fields only; full: every field). */
export function sampleBody<N extends MessageName>(name: N, full = false, salt = 0): Bodies[N] {
  const spec = catalog[MessageType[name]];
  return sampleFields(spec.fields, full, salt) as unknown as Bodies[N];
}

export const messageNames = Object.keys(MessageType) as MessageName[];
