// Paged answers: as many entries as fit in one datagram (MAX_DATAGRAM), then a cursor. The size
// is summed entry by entry against a worst-case envelope (largest sequence number and cursor),
// so no page is ever encoded twice.
import type { Bodies, MessageName } from '../wire/catalog.js';
import { MessageType, specOf } from '../wire/catalog.js';
import { MAX_DATAGRAM, SESSION_ID_BYTES } from '../wire/constants.js';
import { encodeDatagram } from '../wire/envelope.js';
import type { Field } from '../wire/schema.js';
import { encodedBodySize } from '../wire/schema.js';

/** The fields of the struct entries in `name`'s first (array) field. */
export function entryFields(name: MessageName): readonly Field[] {
  const t = specOf(MessageType[name])!.fields[0]!.type;
  if (t.t !== 'array' || t.of.t !== 'struct') throw new TypeError(`${name}: first field is not an array of structs`);
  return t.of.fields;
}

export function encodedSize(fields: readonly Field[], entry: object): number {
  return encodedBodySize(fields, entry as Record<string, unknown>);
}

/**
 * Bytes of a session-MACed `name` whose entries array is empty, with every other field as
 * given (give `nextCursor` its largest value), under the largest sequence number. One more byte
 * covers the array header growing past 23 entries.
 */
export function envelopeSize<N extends MessageName>(name: N, emptyBody: Bodies[N]): number {
  const auth = { sid: new Uint8Array(SESSION_ID_BYTES), seq: Number.MAX_SAFE_INTEGER };
  return encodeDatagram(name, new Uint8Array(8), emptyBody, auth).length + 1;
}

/**
 * Take entries from `start` while they fit: `make(i)` builds entry i, `size(e)` its encoded size.
 * Returns the entries and the index to continue from (undefined when done). At least one entry is
 * taken when any remain (every entry type fits a datagram on its own), so paging always advances;
 * a page of one entry is therefore never measured (a lookup of one ID: most QUERY_ADDRs).
 */
export function fillPage<E>(start: number, end: number, baseSize: number, make: (i: number) => E, size: (e: E) => number, max = MAX_DATAGRAM): { entries: E[]; next: number | undefined } {
  const entries: E[] = [];
  let total = baseSize;
  let i = start;
  for (; i < end; i++) {
    const e = make(i);
    // The first entry is taken whatever its size: it is measured only when another may follow.
    if (entries.length > 0 || i + 1 < end) {
      const s = size(e);
      if (entries.length > 0 && total + s > max) break;
      total += s;
    }
    entries.push(e);
  }
  return { entries, next: i < end ? i : undefined };
}
