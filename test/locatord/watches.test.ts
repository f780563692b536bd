// The embedded subscription structure (watches.ts MemoryWatches, compact: interned slots and
// typed arrays) against a plain model of maps and sets, over random operations; bounds; and
// lists()/restore() (the snapshot) giving back the same lists and views. Its add() takes distinct
// targets (WatchBackend.add); the WATCH handler and restore() make them so with distinctTargets.
import t from 'tap';
import { distinctTargets, MemoryWatches, viewCode } from '../../src/locatord/watches.js';

class Model {
  readonly by = new Map<string, Map<string, string>>();
  add(w: string, ts: readonly string[], vs: readonly string[], max: number): number | undefined {
    const mine = this.by.get(w) ?? new Map<string, string>();
    const fresh = [...new Set(ts)].filter((x) => !mine.has(x));
    if (mine.size + fresh.length > max) return undefined;
    ts.forEach((x, i) => {
      if (!mine.has(x)) mine.set(x, vs[i] ?? '');
    });
    if (mine.size > 0) this.by.set(w, mine);
    return mine.size;
  }
  remove(w: string, ts: readonly string[] | 'all'): number {
    const mine = this.by.get(w);
    if (!mine) return 0;
    for (const x of ts === 'all' ? [...mine.keys()] : ts) mine.delete(x);
    if (mine.size === 0) this.by.delete(w);
    return mine.size;
  }
  watchersOf(x: string): string[] {
    return [...this.by].filter(([, m]) => m.has(x)).map(([w]) => w).sort();
  }
  swap(w: string, x: string, v: string): boolean {
    const m = this.by.get(w);
    if (!m?.has(x) || m.get(x) === v) return false;
    m.set(x, v);
    return true;
  }
  get size(): number {
    let n = 0;
    for (const m of this.by.values()) n += m.size;
    return n;
  }
}

t.test('random operations: same answers as the plain model', async (t) => {
  let seed = 7;
  const rnd = (n: number): number => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % n;
  const ids = Array.from({ length: 40 }, (_, i) => i.toString(16).padStart(32, '0'));
  const w = new MemoryWatches();
  const m = new Model();
  let mismatches = 0;
  for (let step = 0; step < 20_000; step++) {
    const a = ids[rnd(ids.length)]!;
    const op = rnd(10);
    if (op < 4) {
      const ts = Array.from({ length: 1 + rnd(6) }, () => ids[rnd(ids.length)]!);
      const vs = ts.map(() => (rnd(3) === 0 ? '' : `v${rnd(4)}`));
      const d = distinctTargets(ts, vs);
      if (w.add(a, d.targets, d.views, 12) !== m.add(a, ts, vs, 12)) mismatches++;
    } else if (op < 6) {
      const ts = rnd(5) === 0 ? 'all' : Array.from({ length: 1 + rnd(3) }, () => ids[rnd(ids.length)]!);
      if (w.remove(a, ts) !== m.remove(a, ts)) mismatches++;
    } else if (op < 9) {
      const x = ids[rnd(ids.length)]!;
      const v = rnd(3) === 0 ? '' : `v${rnd(4)}`;
      if (w.swapView(a, x, v) !== m.swap(a, x, v)) mismatches++;
    } else {
      if (w.watchersOf(a).sort().join() !== m.watchersOf(a).join()) mismatches++;
      if (w.isWatched(a) !== m.watchersOf(a).length > 0) mismatches++;
      if (w.count(a) !== (m.by.get(a)?.size ?? 0)) mismatches++;
    }
    if (w.size !== m.size) mismatches++;
  }
  t.equal(mismatches, 0, 'no answer differs');
  t.ok(w.size > 0, 'the run ends with subscriptions held');
  // Everything removed: every slot freed, nothing watched.
  for (const id of ids) w.remove(id, 'all');
  t.equal(w.size, 0);
  t.same(ids.filter((id) => w.isWatched(id) || w.count(id) > 0), []);
  t.same([...w.lists()], []);
});

t.test('bounds and duplicates: a refused add changes nothing; watching again costs no room', async (t) => {
  const w = new MemoryWatches();
  const d = distinctTargets(['b1', 'b2', 'b2'], ['', 'x', 'y']);
  t.same(d, { targets: ['b1', 'b2'], views: ['', 'x'] }, 'an ID named twice is kept once, with its first view');
  const plain = ['b1', 'b2'];
  t.equal(distinctTargets(plain, ['', '']).targets, plain, 'nothing repeated: the same array, no copy');
  t.equal(w.add('aa', d.targets, d.views, 2), 2, 'a duplicate in one request counts once');
  t.equal(w.add('aa', ['b3'], [''], 2), undefined, 'beyond the bound: refused');
  t.equal(w.count('aa'), 2);
  t.same(w.watchersOf('b3'), [], 'the refused target is not watched');
  t.equal(w.add('aa', ['b1'], ['other'], 2), 2, 'already watched: no room needed, view kept');
  t.equal(w.swapView('aa', 'b1', ''), false, 'its view is still offline');
  t.equal(w.swapView('aa', 'b2', 'x'), false, 'same view: nothing to push');
  t.equal(w.swapView('aa', 'b2', 'y'), true, 'changed');
  t.equal(w.swapView('zz', 'b2', 'y'), false, 'not a watcher');
});

t.test('lists() and restore() give back the same lists and views (the snapshot)', async (t) => {
  const w = new MemoryWatches();
  w.add('w1', ['t1', 't2', 't3'], ['', 'a', 'b'], 256);
  w.add('w2', ['t1'], ['c'], 256);
  w.add('t1', ['w1'], [''], 256);
  const saved = JSON.parse(JSON.stringify([...w.lists()])) as { watcher: string; targets: string[]; views: number[] }[];
  t.same(saved.find((l) => l.watcher === 'w1')?.views, [0, viewCode('a'), viewCode('b')]);
  const back = new MemoryWatches();
  for (const l of saved) t.ok(back.restore(l.watcher, l.targets, l.views, 256));
  t.equal(back.size, 5);
  t.same(back.watchersOf('t1').sort(), ['w1', 'w2']);
  t.equal(back.swapView('w1', 't2', 'a'), false, 'the view told before the restart is kept: no push for nothing');
  t.equal(back.swapView('w2', 't1', 'd'), true);
  t.notOk(back.restore('w3', ['t1', 't2'], [0, 0], 1), 'a list beyond the bound is not restored');
  // A snapshot file is input: an ID listed twice is one watch, not two toward the bound.
  t.ok(back.restore('w4', ['t1', 't1'], [0, 0], 1), 'a list naming one ID twice fits a bound of 1');
  t.equal(back.count('w4'), 1);
  t.equal(back.count('w3'), 0);
  t.not(viewCode('a'), viewCode('b'));
  t.equal(viewCode(''), 0);
  t.ok(Number.isSafeInteger(viewCode('zzzzzzzzzzzz')) && viewCode('zzzzzzzzzzzz') > 0);
});
