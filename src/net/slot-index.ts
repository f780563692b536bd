// The two pieces both slot tables are made of (the registration table, src/locatord/table.ts, and
// the session table, src/net/sessions.ts): records are slots of parallel typed arrays, found by a
// raw ID through an open-addressing index and evicted least recently used through an intrusive
// recency list. Neither allocates per operation (issue 16: no per-record object for the GC).
// Here, in src/net, so that both may import it (it imports only node built-ins).
import { randomBytes } from 'node:crypto';

/** No slot (an index miss, a list end). */
export const NIL = -1;

/**
 * Seeded hash of the `n` bytes at `at` of `b` (murmur3's mixing over little-endian 32-bit
 * words): with a random seed per table, whoever chooses the keys cannot aim them at one run.
 */
export function seededHash(seed: number, b: Uint8Array, at: number, n: number): number {
  let h = seed;
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = at + i;
    let k = b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24);
    k = Math.imul(k, 0xcc9e2d51);
    k = Math.imul((k << 15) | (k >>> 17), 0x1b873593);
    h ^= k;
    h = (Math.imul((h << 13) | (h >>> 19), 5) + 0xe6546b64) | 0;
  }
  if (i < n) {
    let k = 0;
    for (let s = 0; i < n; i++, s += 8) k |= b[at + i]! << s;
    k = Math.imul(k, 0xcc9e2d51);
    k = Math.imul((k << 15) | (k >>> 17), 0x1b873593);
    h ^= k;
  }
  h ^= n;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

/**
 * An open-addressing index from a fixed-width raw key to a slot: linear probing, load <= 1/2,
 * deletion by backward shift (no tombstones), a hash keyed per index (a random seed: whoever
 * chooses the IDs cannot aim them at one run). The keys are not copied: slot `s`'s key is the
 * `width` bytes at `s * stride` of the caller's store (a column of keys, or rows that begin with
 * one), passed to each call (the store grows, so it is not kept here). Entries are slot + 1, 0
 * for empty.
 */
export class SlotIndex {
  private table: Int32Array;
  private mask: number;
  private readonly seed = randomBytes(4).readInt32LE(0);

  /** `width` key bytes per slot, `stride` bytes from one slot's key to the next's; room for `slots` slots. */
  constructor(readonly width: number, slots: number, readonly stride = width) {
    this.table = new Int32Array(indexLength(slots));
    this.mask = this.table.length - 1;
  }

  /**
   * Make room for `slots` slots. True when the index was reallocated: it is empty then, and the
   * caller puts its keys back (only it knows which slots are indexed).
   */
  reserve(slots: number): boolean {
    const n = indexLength(slots);
    if (n <= this.table.length) return false;
    this.table = new Int32Array(n);
    this.mask = n - 1;
    return true;
  }

  /** Seeded hash of the key at `at` of `b` (seededHash). */
  hash(b: Uint8Array, at: number): number {
    return seededHash(this.seed, b, at, this.width);
  }

  /** Is slot `slot`'s key in `store` the key at `at` of `key`? */
  private same(store: Uint8Array, slot: number, key: Uint8Array, at: number): boolean {
    const n = this.width;
    const o = slot * this.stride;
    for (let i = 0; i < n; i++) if (store[o + i] !== key[at + i]) return false;
    return true;
  }

  /** The slot whose key (in `store`) equals the `width` bytes at `at` of `key`, or NIL. */
  find(store: Uint8Array, key: Uint8Array, at: number): number {
    const t = this.table;
    const mask = this.mask;
    for (let i = this.hash(key, at) & mask; ; i = (i + 1) & mask) {
      const e = t[i]!;
      if (e === 0) return NIL;
      if (this.same(store, e - 1, key, at)) return e - 1;
    }
  }

  /**
   * Point the entry of the key at `at` of `store` at `slot`: added, or replacing the slot of
   * that key (another slot holding the same key: a per-key list whose head moves).
   */
  put(store: Uint8Array, at: number, slot: number): void {
    const t = this.table;
    const mask = this.mask;
    for (let i = this.hash(store, at) & mask; ; i = (i + 1) & mask) {
      const e = t[i]!;
      if (e === 0 || this.same(store, e - 1, store, at)) {
        t[i] = slot + 1;
        return;
      }
    }
  }

  /** Remove the entry of the key at `at` of `store` (a no-op when absent), shifting back its run. */
  delete(store: Uint8Array, at: number): void {
    const t = this.table;
    const mask = this.mask;
    let i = this.hash(store, at) & mask;
    for (; ; i = (i + 1) & mask) {
      const e = t[i]!;
      if (e === 0) return;
      if (this.same(store, e - 1, store, at)) break;
    }
    // Later members of the run move back over the hole when their home is not in (hole, j].
    for (let j = (i + 1) & mask; ; j = (j + 1) & mask) {
      const e = t[j]!;
      if (e === 0) break;
      const home = this.hash(store, (e - 1) * this.stride) & mask;
      if (((j - home) & mask) >= ((j - i) & mask)) {
        t[i] = e;
        i = j;
      }
    }
    t[i] = 0;
  }
}

/** Index length for `slots` slots: a power of two, at least twice `slots` (load <= 1/2). */
function indexLength(slots: number): number {
  let n = 16;
  while (n < 2 * slots) n *= 2;
  return n;
}

/**
 * An intrusive doubly linked list of slots, most recent at `head`, least at `tail` (the next to
 * evict). `prev` and `next` are per-slot arrays the caller may read. Free slots (not in the list)
 * are chained through `next` too: `release` and `takeFree`.
 */
export class RecencyList {
  prev: Int32Array;
  next: Int32Array;
  head = NIL;
  tail = NIL;
  /** The free list's first slot, NIL when empty. */
  private freeHead = NIL;

  constructor(slots: number) {
    this.prev = new Int32Array(slots).fill(NIL);
    this.next = new Int32Array(slots).fill(NIL);
  }

  /** Room for `slots` slots (the new ones linked nowhere: NIL). */
  grow(slots: number): void {
    const old = this.prev.length;
    if (slots <= old) return;
    const p = new Int32Array(slots);
    p.set(this.prev);
    p.fill(NIL, old);
    const n = new Int32Array(slots);
    n.set(this.next);
    n.fill(NIL, old);
    this.prev = p;
    this.next = n;
  }

  /** Link `s` (not in the list) as the most recent. */
  linkHead(s: number): void {
    this.prev[s] = NIL;
    this.next[s] = this.head;
    if (this.head !== NIL) this.prev[this.head] = s;
    else this.tail = s;
    this.head = s;
  }

  /** Take `s` out of the list (its own links are left as they were). */
  unlink(s: number): void {
    const p = this.prev[s]!;
    const n = this.next[s]!;
    if (p !== NIL) this.next[p] = n;
    else this.head = n;
    if (n !== NIL) this.prev[n] = p;
    else this.tail = p;
  }

  /** Put `s` (not in the list) on the free list, to be taken first. */
  release(s: number): void {
    this.next[s] = this.freeHead;
    this.freeHead = s;
  }

  /** A slot taken off the free list (the last one released), or NIL when there is none. */
  takeFree(): number {
    const s = this.freeHead;
    if (s !== NIL) this.freeHead = this.next[s]!;
    return s;
  }

  /** Make `s` (in the list) the most recent. */
  touch(s: number): void {
    if (s === this.head) return;
    this.unlink(s);
    this.linkHead(s);
  }

  /** Empty the free list (a bulk fill then `release`s the slots left free). */
  dropFree(): void {
    this.freeHead = NIL;
  }
}

/**
 * Copy fields of slots [from, to) between rows (`rowBytes` apart in `rows`) and columns (one per
 * field, `bytes[f]` per slot, the field at byte `at[f]` of a row): out to the columns (a snapshot
 * write) or in to the rows (a restore). Both slot tables keep rows in memory and columns on disk.
 */
export function moveFields(rows: Uint8Array, rowBytes: number, columns: readonly Uint8Array[], at: readonly number[], bytes: readonly number[], from: number, to: number, out: boolean): void {
  for (let f = 0; f < columns.length; f++) {
    const col = columns[f]!;
    const a = at[f]!;
    const n = bytes[f]!;
    if (out) for (let s = from; s < to; s++) copyBytes(rows, s * rowBytes + a, col, s * n, n);
    else for (let s = from; s < to; s++) copyBytes(col, s * n, rows, s * rowBytes + a, n);
  }
}

/** Copy `n` bytes (a field: a few, so a loop and no view or native call per field). */
function copyBytes(from: Uint8Array, at: number, to: Uint8Array, toAt: number, n: number): void {
  for (let i = 0; i < n; i++) to[toAt + i] = from[at + i]!;
}
