// Property tests of the registration table's slot store (table.ts: typed arrays by slot, an
// open-addressing index on the raw IDs with backward-shift deletion, a free list, a recency list,
// the sweep schedule by slot) against a Map model, under random operations on a fake clock: every
// lookup, the size, the eviction order and expiry must agree with the model. Seeded: a failure
// prints the seed that replays it.
import t from 'tap';
import type { Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { RegistrationTable, TICK_MS } from '../../src/locatord/table.js';
import { FakeClock } from './fixtures/helpers.js';
import { Rng } from '../../fuzz/rng.js';

interface ModelRecord {
  expTick: number;
  seq: number;
  port: number;
}

function run(t: Test, seed: number, o: { max: number; ids: number; ops: number; probeAtPercent: number }): void {
  const rng = new Rng(seed);
  const rand = (): number => rng.float();
  const int = (n: number): number => Math.floor(rand() * n);
  const clock = new FakeClock(1_700_000_000_000 + int(1000));
  const gone: string[] = [];
  const table = new RegistrationTable({ maxEntries: o.max, now: clock.now, initialCapacity: 2, probeAtPercent: o.probeAtPercent, onGone: (k) => gone.push(k) });
  // Map order is the recency order: least recently set or touched first.
  const model = new Map<string, ModelRecord>();
  const pool = Array.from({ length: o.ids }, () => randomBytes(16).toString('hex'));
  // IDs equal but for one byte: neighbours in any hash that ignored part of the key.
  // (pool[0] itself may end in one of those bytes: the pool holds each ID once, the refill counts them.)
  for (let i = 0; i < 8; i++) {
    const id = pool[0]!.slice(0, 30) + i.toString(16).padStart(2, '0');
    if (!pool.includes(id)) pool.push(id);
  }
  const live = (r: ModelRecord | undefined): boolean => r !== undefined && table.nowTick() < r.expTick;
  const fail = (what: string): void => {
    t.fail(`seed ${seed}: ${what}`);
    throw new Error('stop');
  };
  try {
    for (let op = 0; op < o.ops; op++) {
      const id = pool[int(pool.length)]!;
      const k = int(100);
      if (k < 35) {
        // set (a REGISTER): a new record, or the ID's record replaced.
        const ttlMs = (1 + int(30)) * 1000;
        const rec = { expTick: table.expiryTick(ttlMs), seq: int(1e6), port: int(65536) };
        if (!model.has(id) && model.size >= o.max) {
          const [victim] = model.keys();
          model.delete(victim!);
        }
        model.delete(id);
        model.set(id, rec);
        const v = table.set(id, { addr: { ip: '192.0.2.1', port: rec.port }, session: undefined, seq: rec.seq, regTick: table.nowTick(), expTick: rec.expTick });
        if (v.key !== id) fail(`set returned a view of ${v.key}, not ${id}`);
      } else if (k < 55) {
        const r = model.get(id);
        const v = table.get(id);
        if (live(r) !== (v !== undefined)) fail(`get ${id}: model ${live(r) ? 'live' : 'absent'}, table ${v ? 'live' : 'absent'}`);
        if (r && !live(r)) model.delete(id);
        if (v && (v.seq !== r!.seq || v.port !== r!.port || v.expTick !== r!.expTick || v.key !== id)) fail(`get ${id}: fields differ`);
      } else if (k < 65) {
        const r = model.get(id);
        const v = table.touch(id);
        if (live(r) !== (v !== undefined)) fail(`touch ${id}: model and table differ`);
        if (r) {
          model.delete(id);
          if (live(r)) model.set(id, r);
        }
        if (v) {
          // A refresh: renewed from now.
          const ttlMs = (1 + int(30)) * 1000;
          table.renew(v, ttlMs);
          r!.expTick = table.expiryTick(ttlMs);
        }
      } else if (k < 75) {
        const had = model.delete(id);
        if (table.delete(id) !== had) fail(`delete ${id}: table and model differ`);
      } else if (k < 90) {
        clock.advance(int(3000));
      } else {
        const before = table.size;
        const { expired, probes } = table.sweep(int(4), Infinity);
        const now = table.nowTick();
        // Freed: every record expired, except those that expired within the current second
        // (filed in the next bucket when this second's bucket was swept; reads never see them).
        const held = new Set([...table.entries()].map(([key]) => key));
        for (const [mid, r] of [...model]) {
          if (r.expTick > now) continue;
          if (!held.has(mid)) model.delete(mid);
          else if (Math.floor(r.expTick / 10) < Math.floor(now / 10)) fail(`sweep left ${mid}, expired at ${r.expTick}, now ${now}`);
        }
        if (before - expired !== table.size) fail('sweep: size and expired count differ');
        for (const p of probes) if (p.removed || !live(model.get(p.key))) fail(`sweep probed ${p.key}, not live`);
      }
      if (table.size !== model.size) fail(`op ${op} (${k}): table holds ${table.size}, model ${model.size}`);
    }
    // Every record the model holds is in the table, and nothing else.
    const keys = [...table.entries()].map(([k]) => k).sort();
    t.same(keys, [...model.keys()].sort(), `seed ${seed}: same IDs at the end`);
    t.ok(table.scheduledCount >= [...model.values()].filter(live).length, `seed ${seed}: every live record is scheduled`);
    // Everything expires and a sweep frees it all: the index and the free list end empty and reusable.
    clock.advance(31_000 + TICK_MS);
    table.sweep(0, Infinity);
    t.equal(table.size, 0, `seed ${seed}: all expired and freed`);
    for (const id of pool) if (table.get(id)) fail(`${id} found in an empty table`);
    for (const id of pool.slice(0, o.max)) table.set(id, { addr: { ip: '2001:db8::1', port: 1 }, session: undefined, seq: 1, regTick: table.nowTick(), expTick: table.expiryTick(1000) });
    t.equal(table.size, Math.min(o.max, pool.length), `seed ${seed}: refilled after emptying`);
    t.ok(pool.slice(0, o.max).every((id) => table.get(id)?.address.ip === '2001:db8::1'), `seed ${seed}: refilled records found`);
  } catch (err) {
    if ((err as Error).message !== 'stop') throw err;
  }
}

t.test('insert/delete/lookup/expiry agree with a Map, table larger than the IDs', async (t) => {
  for (let i = 0; i < 6; i++) run(t, 0x5eed + i, { max: 1000, ids: 300, ops: 20_000, probeAtPercent: 0 });
});

t.test('the same with the bound reached: evictions in recency order, slots reused', async (t) => {
  for (let i = 0; i < 6; i++) run(t, 0xbead + i, { max: 50, ids: 120, ops: 20_000, probeAtPercent: 80 });
});

t.test('a view of a freed and reused slot reads as removed', async (t) => {
  const clock = new FakeClock();
  const table = new RegistrationTable({ maxEntries: 1, now: clock.now });
  const a = randomBytes(16).toString('hex');
  const b = randomBytes(16).toString('hex');
  const va = table.set(a, { addr: { ip: '192.0.2.1', port: 1 }, session: undefined, seq: 1, regTick: 0, expTick: table.expiryTick(60_000) });
  const vb = table.set(b, { addr: { ip: '192.0.2.2', port: 2 }, session: undefined, seq: 1, regTick: 0, expTick: table.expiryTick(60_000) });
  t.equal(va.slot, vb.slot, 'the one slot reused');
  t.ok(va.removed, 'the evicted record\'s view is void');
  t.notOk(vb.removed);
  t.equal(table.get(a), undefined);
  t.equal(vb.key, b);
});

t.test('keys that are not locator IDs: never found, refused by set', async (t) => {
  const table = new RegistrationTable({ maxEntries: 10, now: new FakeClock().now });
  for (const k of ['', 'a', 'zz'.repeat(16), '0'.repeat(31), '0'.repeat(34)]) {
    t.equal(table.get(k), undefined);
    t.equal(table.delete(k), false);
    t.throws(() => table.set(k, { addr: { ip: '192.0.2.1', port: 1 }, session: undefined, seq: 1, regTick: 0, expTick: 100 }));
  }
  t.equal(table.setRaw(Buffer.alloc(15), 0, 15, { ip: 1, port: 1, session: undefined, seq: 1, regTick: 0, expTick: 100 }), undefined);
  t.equal(table.size, 0);
});
