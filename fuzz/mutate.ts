// Mutations of byte strings: blind ones (bit flips, byte inserts and deletes, splices) and
// CBOR-aware ones that keep most of the structure so the input gets past the first checks
// (a head's length changed, an item nested deeper, a map key duplicated, an item swapped for
// a tricky one: a tag, a float, an indefinite length, a huge integer).
import type { Rng } from './rng.js';
import { encodeHead, scanItems } from './cborscan.js';

export type Mutator = (input: Buffer, rng: Rng, other: () => Buffer) => Buffer;

const INTERESTING_BYTES = [0x00, 0x01, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1f, 0x20, 0x3f, 0x40, 0x5f, 0x60, 0x7f, 0x80, 0x81, 0x9f, 0xa0, 0xa1, 0xbf, 0xc0, 0xd8, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa, 0xfb, 0xff];
const INTERESTING_ARGS = [0, 1, 7, 8, 15, 16, 17, 23, 24, 31, 32, 63, 64, 65, 127, 128, 255, 256, 599, 600, 601, 1199, 1200, 1201, 65535, 65536, 2 ** 31 - 1, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 2, 2 ** 53 - 1, 2 ** 53, 2 ** 64 - 1];

/** Items that a strict decoder must refuse or treat carefully. */
const TRICKY_ITEMS: readonly Buffer[] = [
  'f7', 'f8ff', 'f93c00', 'fa3f800000', 'fb3ff0000000000000', 'c0617a', 'd8186141', 'c249010000000000000000',
  '9fff', 'bfff', '5f4161ff', '7f6161ff', '9f01ff', 'bf0101ff', '1bffffffffffffffff', '3bffffffffffffffff',
  '1b0020000000000000', '3b001fffffffffffff', '1b001fffffffffffff', '6000', '62c328', '63efbbbf', '4100', '80', 'a0',
  'a1010a', 'a201010101', 'a2616101616102', '818181818181818181818181', '1c', 'fc', '5b0000000100000000', '9b0000000100000000',
  '7bffffffffffffffff', 'a14100f6', 'a18001', 'f6', 'f4', 'f5', '00', '20', '3818',
].map((h) => Buffer.from(h, 'hex'));

function clampLen(b: Buffer, max: number): Buffer {
  return b.length > max ? b.subarray(0, max) : b;
}

export const byteMutators: Record<string, Mutator> = {
  bitFlip(input, rng) {
    if (input.length === 0) return Buffer.from([rng.u32() & 0xff]);
    const out = Buffer.from(input);
    const n = 1 + rng.int(4);
    for (let i = 0; i < n; i++) {
      const at = rng.int(out.length);
      out[at] = out[at]! ^ (1 << rng.int(8));
    }
    return out;
  },
  setByte(input, rng) {
    if (input.length === 0) return Buffer.from([rng.pick(INTERESTING_BYTES)]);
    const out = Buffer.from(input);
    out[rng.int(out.length)] = rng.chance(0.5) ? rng.pick(INTERESTING_BYTES) : rng.u32() & 0xff;
    return out;
  },
  insertBytes(input, rng) {
    const at = rng.int(input.length + 1);
    const ins = rng.chance(0.5) ? rng.bytes(1 + rng.smallLength(16)) : Buffer.alloc(1 + rng.smallLength(64), rng.pick(INTERESTING_BYTES));
    return Buffer.concat([input.subarray(0, at), ins, input.subarray(at)]);
  },
  deleteBytes(input, rng) {
    if (input.length === 0) return input;
    const at = rng.int(input.length);
    const n = 1 + rng.smallLength(Math.min(32, input.length - at - 1));
    return Buffer.concat([input.subarray(0, at), input.subarray(at + n)]);
  },
  duplicateRange(input, rng) {
    if (input.length === 0) return input;
    const at = rng.int(input.length);
    const n = 1 + rng.smallLength(Math.min(64, input.length - at - 1));
    const to = rng.int(input.length + 1);
    return Buffer.concat([input.subarray(0, to), input.subarray(at, at + n), input.subarray(to)]);
  },
  truncate(input, rng) {
    return input.subarray(0, rng.int(input.length + 1));
  },
  splice(input, rng, other) {
    const o = other();
    const a = rng.int(input.length + 1);
    const b = rng.int(o.length + 1);
    return Buffer.concat([input.subarray(0, a), o.subarray(b)]);
  },
  random(_input, rng) {
    return rng.bytes(rng.smallLength(1300));
  },
};

export const cborMutators: Record<string, Mutator> = {
  /** Change one head's argument (a length, a count or a value), sometimes in a longer form. */
  changeHead(input, rng) {
    const items = scanItems(input);
    if (items.length === 0) return byteMutators['setByte']!(input, rng, () => input);
    const it = rng.pick(items);
    if (it.argument < 0) return input;
    const choices = [it.argument + 1, Math.max(0, it.argument - 1), rng.pick(INTERESTING_ARGS), it.argument * 2, 0];
    const arg = rng.pick(choices);
    const width = rng.chance(0.2) ? rng.pick([1, 2, 4, 8] as const) : undefined;
    const safeWidth = width !== undefined && arg >= 2 ** (8 * width) ? undefined : width;
    const head = encodeHead(it.major, Math.min(arg, 2 ** 64 - 1), safeWidth);
    return Buffer.concat([input.subarray(0, it.start), head, input.subarray(it.start + it.headLength)]);
  },
  /** Change an item's major type, keeping its argument. */
  changeMajor(input, rng) {
    const items = scanItems(input);
    if (items.length === 0) return input;
    const it = rng.pick(items);
    const out = Buffer.from(input);
    out[it.start] = (rng.int(8) << 5) | (out[it.start]! & 0x1f);
    return out;
  },
  /** Wrap an item in arrays or maps, to reach the depth limit. */
  nestDeeper(input, rng) {
    const items = scanItems(input);
    if (items.length === 0) return input;
    const it = rng.pick(items);
    const levels = 1 + rng.int(rng.chance(0.3) ? 12 : 3);
    let wrapped = input.subarray(it.start, it.end);
    for (let i = 0; i < levels; i++) {
      wrapped = rng.chance(0.7) ? Buffer.concat([Buffer.from([0x81]), wrapped]) : Buffer.concat([Buffer.from([0xa1, 0x00]), wrapped]);
    }
    return Buffer.concat([input.subarray(0, it.start), wrapped, input.subarray(it.end)]);
  },
  /** Duplicate one entry of a map (same key twice), fixing the map's count. */
  duplicateKey(input, rng) {
    const items = scanItems(input);
    const maps = items.filter((i) => i.major === 5 && i.argument > 0 && i.argument < 1000);
    if (maps.length === 0) return input;
    const m = rng.pick(maps);
    const key = items.find((i) => i.start === m.start + m.headLength && i.depth === m.depth + 1);
    if (!key) return input;
    const value = items.find((i) => i.start === key.end && i.depth === m.depth + 1);
    if (!value) return input;
    const pair = input.subarray(key.start, value.end);
    const head = encodeHead(5, m.argument + 1);
    return Buffer.concat([input.subarray(0, m.start), head, input.subarray(m.start + m.headLength, value.end), pair, input.subarray(value.end)]);
  },
  /** Replace an item with a tricky one (tag, float, undefined, indefinite, huge int...). */
  replaceTricky(input, rng) {
    const items = scanItems(input);
    if (items.length === 0) return rng.pick(TRICKY_ITEMS);
    const it = rng.pick(items);
    return Buffer.concat([input.subarray(0, it.start), rng.pick(TRICKY_ITEMS), input.subarray(it.end)]);
  },
  /** Replace an item with an item of another input (structure-preserving splice). */
  swapItem(input, rng, other) {
    const items = scanItems(input);
    const o = other();
    const oItems = scanItems(o);
    if (items.length === 0 || oItems.length === 0) return input;
    const it = rng.pick(items);
    const donor = rng.pick(oItems);
    return Buffer.concat([input.subarray(0, it.start), o.subarray(donor.start, donor.end), input.subarray(it.end)]);
  },
  /** Remove an item (the parent's count now lies). */
  dropItem(input, rng) {
    const items = scanItems(input);
    if (items.length < 2) return input;
    const it = rng.pick(items.slice(1));
    return Buffer.concat([input.subarray(0, it.start), input.subarray(it.end)]);
  },
  /** Append an item inside an array or map, fixing the count (extra or unknown fields). */
  addEntry(input, rng) {
    const items = scanItems(input);
    const containers = items.filter((i) => (i.major === 4 || i.major === 5) && i.argument >= 0 && i.argument < 1000);
    if (containers.length === 0) return input;
    const c = rng.pick(containers);
    const extra = c.major === 4 ? rng.pick(TRICKY_ITEMS) : Buffer.concat([encodeHead(0, rng.pick([0, 1, 2, 3, 15, 16, 99, 255])), rng.pick(TRICKY_ITEMS)]);
    const head = encodeHead(c.major, c.argument + 1);
    return Buffer.concat([input.subarray(0, c.start), head, input.subarray(c.start + c.headLength, c.end), extra, input.subarray(c.end)]);
  },
};

const allMutators: [string, Mutator][] = [...Object.entries(byteMutators), ...Object.entries(cborMutators)];

/** Apply 1..3 random mutations; the result is at most `maxLength` bytes. */
export function mutate(input: Buffer, rng: Rng, other: () => Buffer, maxLength = 1400): Buffer {
  let out = input;
  const n = 1 + (rng.chance(0.7) ? 0 : rng.int(3));
  for (let i = 0; i < n; i++) {
    // CBOR-aware mutations half of the time: they keep inputs deep enough to be interesting.
    const [, m] = rng.chance(0.5) ? rng.pick(Object.entries(cborMutators)) : rng.pick(allMutators);
    out = clampLen(m(out, rng, other), maxLength);
  }
  return out;
}
