// The shared slot index and recency list (src/net/slot-index.ts, used by the registration table
// and the session table) on their own: random operations against a Map / array model, with keys
// that share a home (clusters) deleted from the middle of their run. Seeded: a failure prints
// the seed that replays it (the index's own hash seed is random: clusters are built by search).
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { NIL, RecencyList, SlotIndex } from '../../src/net/slot-index.js';
import { Rng } from '../../fuzz/rng.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/**
 * A store of `width`-byte keys by slot with its index, grown by doubling like the tables do: a
 * slot's key begins its row of `stride` bytes (the registration table's rows are 64 bytes), the
 * rest of the row other bytes (random: the index must compare the key alone).
 */
class Store {
  bytes: Uint8Array;
  readonly index: SlotIndex;
  readonly model = new Map<string, number>();
  private free: number[] = [];

  constructor(readonly width: number, public cap: number, readonly stride = width) {
    this.bytes = randomBytes(cap * stride);
    this.index = new SlotIndex(width, cap, stride);
    for (let s = cap - 1; s >= 0; s--) this.free.push(s);
  }

  add(key: Uint8Array): number {
    if (this.free.length === 0) {
      const cap = this.cap * 2;
      const b = randomBytes(cap * this.stride);
      b.set(this.bytes);
      this.bytes = b;
      for (let s = cap - 1; s >= this.cap; s--) this.free.push(s);
      this.cap = cap;
      if (this.index.reserve(cap)) for (const s of this.model.values()) this.index.put(this.bytes, s * this.stride, s);
    }
    const s = this.free.pop()!;
    this.bytes.set(key, s * this.stride);
    this.index.put(this.bytes, s * this.stride, s);
    this.model.set(hex(key), s);
    return s;
  }

  remove(key: Uint8Array): void {
    const s = this.model.get(hex(key))!;
    this.index.delete(this.bytes, s * this.stride);
    this.bytes.fill(0xee, s * this.stride, s * this.stride + this.width);
    this.model.delete(hex(key));
    this.free.push(s);
  }

  find(key: Uint8Array): number {
    return this.index.find(this.bytes, key, 0);
  }
}

for (const [width, stride] of [[16, 16], [3, 3], [16, 64], [3, 7]] as const) {
  t.test(`random operations against a Map (width ${width}, stride ${stride})`, async (t) => {
    for (let round = 0; round < 20; round++) {
      const seed = (Date.now() + round * 7919) >>> 0;
      const rng = new Rng(seed);
      const rand = (): number => rng.float();
      const int = (n: number): number => Math.floor(rand() * n);
      const store = new Store(width, 1, stride);
      const pool: Uint8Array[] = Array.from({ length: 40 }, () => randomBytes(width));
      // Keys equal but for their last byte.
      for (let i = 0; i < 8; i++) pool.push(Uint8Array.from([...pool[0]!.subarray(0, width - 1), i]));
      let bad = '';
      for (let op = 0; op < 2000 && !bad; op++) {
        const key = pool[int(pool.length)]!;
        const k = hex(key);
        const r = int(3);
        if (r === 0 && !store.model.has(k)) store.add(key);
        else if (r === 1 && store.model.has(k)) store.remove(key);
        for (const q of pool) {
          const want = store.model.get(hex(q)) ?? NIL;
          const got = store.find(q);
          if (got !== want) {
            bad = `seed ${seed}, op ${op}: find(${hex(q)}) = ${got}, model ${want}`;
            break;
          }
        }
      }
      t.equal(bad, '', `seed ${seed}`);
    }
  });
}

for (const stride of [16, 64]) t.test(`deletion inside clusters keeps every other key findable (stride ${stride})`, async (t) => {
  // 8 slots: an index of 16 entries; keys found by search to share a home or sit next to one.
  const width = 16;
  const store = new Store(width, 8, stride);
  const home = (k: Uint8Array): number => store.index.hash(k, 0) & 15;
  const keys: Uint8Array[] = [];
  const want = [5, 5, 5, 6, 5, 15, 15, 0];
  for (const h of want) {
    let k: Uint8Array;
    do k = randomBytes(width);
    while (home(k) !== h);
    keys.push(k);
  }
  for (let trial = 0; trial < 50; trial++) {
    const order = [...keys.keys()].sort(() => Math.random() - 0.5);
    for (const i of order) store.add(keys[i]!);
    t.equal(store.cap, 8, 'no growth');
    // Delete in a random order, checking all the rest after each deletion.
    const del = [...keys.keys()].sort(() => Math.random() - 0.5);
    for (let d = 0; d < del.length; d++) {
      store.remove(keys[del[d]!]!);
      for (let j = 0; j < keys.length; j++) {
        const k = keys[j]!;
        const gone = del.slice(0, d + 1).includes(j);
        const got = store.find(k);
        if (gone ? got !== NIL : got !== store.model.get(hex(k))) {
          t.fail(`trial ${trial}: after deleting ${del.slice(0, d + 1).join(',')}, key ${j} (home ${want[j]}) found at ${got}`);
          return;
        }
      }
    }
  }
  t.pass('all found');
});

t.test('put of a key already indexed moves its entry to the new slot', async (t) => {
  const width = 4;
  const idx = new SlotIndex(width, 4);
  const store = new Uint8Array(4 * width);
  store.set([1, 2, 3, 4], 0);
  store.set([1, 2, 3, 4], 2 * width);
  idx.put(store, 0, 0);
  t.equal(idx.find(store, Uint8Array.of(1, 2, 3, 4), 0), 0);
  idx.put(store, 2 * width, 2);
  t.equal(idx.find(store, Uint8Array.of(1, 2, 3, 4), 0), 2);
  idx.delete(store, 2 * width);
  t.equal(idx.find(store, Uint8Array.of(1, 2, 3, 4), 0), NIL);
  idx.delete(store, 2 * width);
  t.equal(idx.find(store, Uint8Array.of(1, 2, 3, 4), 0), NIL, 'deleting an absent key is a no-op');
});

t.test('recency list against an array model', async (t) => {
  const seed = Date.now() >>> 0;
  const rng = new Rng(seed);
  const rand = (): number => rng.float();
  const int = (n: number): number => Math.floor(rand() * n);
  const list = new RecencyList(2);
  let cap = 2;
  const model: number[] = []; // most recent first
  const walk = (): number[] => {
    const out: number[] = [];
    for (let s = list.head; s !== NIL && out.length <= cap; s = list.next[s]!) out.push(s);
    return out;
  };
  const back = (): number[] => {
    const out: number[] = [];
    for (let s = list.tail; s !== NIL && out.length <= cap; s = list.prev[s]!) out.unshift(s);
    return out;
  };
  for (let op = 0; op < 3000; op++) {
    const s = int(40);
    if (s >= cap) {
      cap = Math.max(cap * 2, s + 1);
      list.grow(cap);
    }
    const at = model.indexOf(s);
    const r = int(3);
    if (at < 0) {
      list.linkHead(s);
      model.unshift(s);
    } else if (r === 0) {
      list.unlink(s);
      model.splice(at, 1);
    } else {
      list.touch(s);
      model.splice(at, 1);
      model.unshift(s);
    }
    const fwd = walk();
    if (fwd.join() !== model.join() || back().join() !== model.join()) {
      t.fail(`seed ${seed}, op ${op}: list ${fwd.join()} / ${back().join()}, model ${model.join()}`);
      return;
    }
  }
  t.equal(list.head, model[0] ?? NIL);
  t.equal(list.tail, model[model.length - 1] ?? NIL);
});
