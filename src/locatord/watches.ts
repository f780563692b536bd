// Subscriptions of the embedded store (store/types.ts WatchBackend): watcher -> (target, last
// view told) and target -> watchers. Soft state like the registrations, and like them in the
// snapshot across a clean restart (snapshot.ts: lists() / restore()); a watcher also learns
// from WATCH_ACK `watching` (0 after a crash) to watch again.
// Bounded: at most MAX_WATCHES targets per watcher, and a watcher's list is dropped when its
// registration is gone (expiry, eviction, UNREGISTER), so the structure never outgrows the table.
//
// Compact (issue 18: 1M terminals each watched by 50 is 50M pairs): no object per pair. Each
// terminal named in a subscription is interned once as a slot number; per slot, a list of what
// it watches (target slots, and each one's last view as a 52-bit code) and a list of who watches
// it (watcher slots), both in ListArena blocks (a few large typed arrays per size class, so no
// allocation per list and no heap fragmentation). A pair costs 4 + 8 + 4 bytes plus the blocks'
// power-of-two slack; the per-slot cost (its ID string, map entry, 16 B of handles and lengths)
// is shared by its ~50 pairs (README "Presence at scale", devloc bench --only presence). A slot
// is recycled when its terminal neither watches nor is watched.
import type { WatchBackend } from './store/types.js';

/** A view as a number: '' (offline) is 0; others a 52-bit hash + 1 (a collision only hides one change, as an equal view would). */
export function viewCode(view: string): number {
  if (view === '') return 0;
  let h1 = 0x811c9dc5;
  let h2 = 0x01000193;
  for (let i = 0; i < view.length; i++) {
    const c = view.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 0x01000193);
    h2 = Math.imul(h2 ^ c, 0x5bd1e995) ^ (h2 >>> 15);
  }
  return 1 + (h1 >>> 12) * 0x1_0000_0000 + (h2 >>> 0);
}

/**
 * `targets` each once, with the view given beside its first mention: what WatchBackend.add and
 * restore take (a WATCH may name an ID twice, a snapshot file is input; either would otherwise
 * count one ID twice toward MAX_WATCHES). The arrays themselves when nothing repeats.
 */
export function distinctTargets<V>(targets: readonly string[], views: readonly V[]): { targets: readonly string[]; views: readonly V[] } {
  const firstAt = new Map<string, number>();
  targets.forEach((t, i) => {
    if (!firstAt.has(t)) firstAt.set(t, i);
  });
  if (firstAt.size === targets.length) return { targets, views };
  return { targets: [...firstAt.keys()], views: [...firstAt.values()].map((i) => views[i]!) };
}

/** Smallest list capacity (class 0); class c holds 4 << c entries. */
const MIN_CAP_LOG2 = 2;

/**
 * Variable-length lists of slot numbers (and, `withViews`, a view code beside each) in a few
 * large typed arrays, one per size class (4, 8, 16, ... entries): a list is a block of its class,
 * found by a handle (block * 32 + class). Freed blocks are reused by their class; no per-list
 * allocation, so nothing fragments the process heap (whole-process RSS is the measure).
 */
class ListArena {
  private readonly ids: Int32Array[] = [];
  private readonly views: Float64Array[] = [];
  private readonly used: number[] = [];
  private readonly free: number[][] = [];

  constructor(private readonly withViews: boolean) {}

  static classFor(n: number): number {
    let c = 0;
    while (4 << c < n) c++;
    return c;
  }

  capacity(h: number): number {
    return 1 << ((h & 31) + MIN_CAP_LOG2);
  }

  offset(h: number): number {
    return Math.floor(h / 32) * this.capacity(h);
  }

  idsOf(h: number): Int32Array {
    return this.ids[h & 31]!;
  }

  viewsOf(h: number): Float64Array {
    return this.views[h & 31]!;
  }

  alloc(cls: number): number {
    const block = this.free[cls]?.pop();
    if (block !== undefined) return block * 32 + cls;
    const size = 4 << cls;
    const b = this.used[cls] ?? 0;
    let ids = this.ids[cls];
    if (!ids || (b + 1) * size > ids.length) {
      const blocks = Math.max(64, b * 2);
      const a = new Int32Array(blocks * size);
      if (ids) a.set(ids);
      this.ids[cls] = ids = a;
      if (this.withViews) {
        const v = new Float64Array(blocks * size);
        const old = this.views[cls];
        if (old) v.set(old);
        this.views[cls] = v;
      }
      this.free[cls] ??= [];
    }
    this.used[cls] = b + 1;
    return b * 32 + cls;
  }

  release(h: number): void {
    this.free[h & 31]!.push(Math.floor(h / 32));
  }

  /** A handle of capacity >= `need` holding the first `len` entries of `h` (h released); -1 = none. */
  grow(h: number, len: number, need: number): number {
    const nh = this.alloc(ListArena.classFor(need));
    if (h >= 0 && len > 0) {
      const from = this.offset(h);
      const to = this.offset(nh);
      this.idsOf(nh).set(this.idsOf(h).subarray(from, from + len), to);
      if (this.withViews) this.viewsOf(nh).set(this.viewsOf(h).subarray(from, from + len), to);
    }
    if (h >= 0) this.release(h);
    return nh;
  }
}

export class MemoryWatches implements WatchBackend {
  private readonly slots = new Map<string, number>();
  private hexes: (string | undefined)[] = [];
  private readonly freeSlots: number[] = [];
  /** Per slot: the list of targets it watches with their view codes (handle, -1 = none) and its length. */
  private readonly out = new ListArena(true);
  private outH = new Int32Array(0);
  private outN = new Int32Array(0);
  /** Per slot: the list of its watchers (handle, -1 = none) and its length. */
  private readonly in = new ListArena(false);
  private inH = new Int32Array(0);
  private inN = new Int32Array(0);
  private pairs = 0;

  private slotOf(hex: string): number | undefined {
    return this.slots.get(hex);
  }

  private intern(hex: string): number {
    let s = this.slots.get(hex);
    if (s !== undefined) return s;
    s = this.freeSlots.pop() ?? this.hexes.length;
    if (s >= this.outH.length) {
      const cap = Math.max(1024, this.outH.length * 2);
      const grow = (a: Int32Array, fill: number) => {
        const b = new Int32Array(cap).fill(fill);
        b.set(a);
        return b;
      };
      this.outH = grow(this.outH, -1);
      this.inH = grow(this.inH, -1);
      this.outN = grow(this.outN, 0);
      this.inN = grow(this.inN, 0);
    }
    this.slots.set(hex, s);
    this.hexes[s] = hex;
    return s;
  }

  /** Give the slot back once its terminal neither watches nor is watched. */
  private release(s: number): void {
    if (this.outN[s] !== 0 || this.inN[s] !== 0) return;
    if (this.outH[s]! >= 0) this.out.release(this.outH[s]!);
    if (this.inH[s]! >= 0) this.in.release(this.inH[s]!);
    this.outH[s] = -1;
    this.inH[s] = -1;
    this.slots.delete(this.hexes[s]!);
    this.hexes[s] = undefined;
    this.freeSlots.push(s);
  }

  /** Index of `slot` in watcher `w`'s list, or -1. */
  private indexOut(w: number, slot: number): number {
    const h = this.outH[w]!;
    if (h < 0) return -1;
    const ids = this.out.idsOf(h);
    const off = this.out.offset(h);
    const n = this.outN[w]!;
    for (let i = 0; i < n; i++) if (ids[off + i] === slot) return i;
    return -1;
  }

  private addWatcherOf(t: number, w: number): void {
    const n = this.inN[t]!;
    let h = this.inH[t]!;
    if (h < 0 || n === this.in.capacity(h)) this.inH[t] = h = this.in.grow(h, n, n + 1);
    this.in.idsOf(h)[this.in.offset(h) + n] = w;
    this.inN[t] = n + 1;
  }

  private removeWatcherOf(t: number, w: number): void {
    const h = this.inH[t]!;
    if (h < 0) return;
    const ids = this.in.idsOf(h);
    const off = this.in.offset(h);
    const n = this.inN[t]!;
    for (let i = 0; i < n; i++) {
      if (ids[off + i] !== w) continue;
      ids[off + i] = ids[off + n - 1]!;
      this.inN[t] = n - 1;
      if (n - 1 === 0) {
        this.in.release(h);
        this.inH[t] = -1;
      }
      return;
    }
  }

  add(watcherHex: string, targets: readonly string[], views: readonly string[], max: number): number | undefined {
    return this.addCodes(watcherHex, targets, views.map(viewCode), max);
  }

  private addCodes(watcherHex: string, targets: readonly string[], codes: readonly number[], max: number): number | undefined {
    const ws = this.slotOf(watcherHex);
    const have = ws === undefined ? 0 : this.outN[ws]!;
    // The targets not watched yet (distinct: WatchBackend.add), before anything changes: a refusal changes nothing.
    const fresh: number[] = [];
    targets.forEach((t, i) => {
      const ts = this.slotOf(t);
      if (ws !== undefined && ts !== undefined && this.indexOut(ws, ts) >= 0) return;
      fresh.push(i);
    });
    const n = have + fresh.length;
    if (n > max) return undefined;
    if (fresh.length === 0) return n;
    const w = ws ?? this.intern(watcherHex);
    let h = this.outH[w]!;
    if (h < 0 || n > this.out.capacity(h)) this.outH[w] = h = this.out.grow(h, have, n);
    let k = this.out.offset(h) + have;
    for (const i of fresh) {
      const t = this.intern(targets[i]!);
      // Interning may not move the arena; the list's arrays are read after it.
      this.out.idsOf(h)[k] = t;
      this.out.viewsOf(h)[k] = codes[i] ?? 0;
      k++;
      this.addWatcherOf(t, w);
    }
    this.outN[w] = n;
    this.pairs += fresh.length;
    return n;
  }

  remove(watcherHex: string, targets: readonly string[] | 'all'): number {
    const w = this.slotOf(watcherHex);
    if (w === undefined || this.outN[w] === 0) return 0;
    const h = this.outH[w]!;
    const ids = this.out.idsOf(h);
    const vs = this.out.viewsOf(h);
    const off = this.out.offset(h);
    let n = this.outN[w]!;
    const gone: number[] = [];
    const drop = (i: number): void => {
      gone.push(ids[off + i]!);
      ids[off + i] = ids[off + n - 1]!;
      vs[off + i] = vs[off + n - 1]!;
      n--;
    };
    if (targets === 'all') {
      while (n > 0) drop(n - 1);
    } else {
      for (const hex of targets) {
        const t = this.slotOf(hex);
        if (t === undefined) continue;
        for (let i = 0; i < n; i++) {
          if (ids[off + i] === t) {
            drop(i);
            break;
          }
        }
      }
    }
    this.outN[w] = n;
    this.pairs -= gone.length;
    if (n === 0) {
      this.out.release(h);
      this.outH[w] = -1;
    }
    for (const t of gone) {
      this.removeWatcherOf(t, w);
      if (t !== w) this.release(t);
    }
    this.release(w);
    return n;
  }

  count(watcherHex: string): number {
    const w = this.slotOf(watcherHex);
    return w === undefined ? 0 : this.outN[w]!;
  }

  watchersOf(targetHex: string): string[] {
    const t = this.slotOf(targetHex);
    if (t === undefined) return [];
    const n = this.inN[t]!;
    const out = new Array<string>(n);
    if (n === 0) return out;
    const h = this.inH[t]!;
    const ids = this.in.idsOf(h);
    const off = this.in.offset(h);
    for (let i = 0; i < n; i++) out[i] = this.hexes[ids[off + i]!]!;
    return out;
  }

  /** Whether anyone watches `targetHex` (no allocation: the expiry hook asks for every record). */
  isWatched(targetHex: string): boolean {
    const t = this.slotOf(targetHex);
    return t !== undefined && this.inN[t]! > 0;
  }

  swapView(watcherHex: string, targetHex: string, view: string): boolean {
    const w = this.slotOf(watcherHex);
    const t = this.slotOf(targetHex);
    if (w === undefined || t === undefined) return false;
    const i = this.indexOut(w, t);
    if (i < 0) return false;
    const h = this.outH[w]!;
    const vs = this.out.viewsOf(h);
    const k = this.out.offset(h) + i;
    const code = viewCode(view);
    if (vs[k] === code) return false;
    vs[k] = code;
    return true;
  }

  /** Subscriptions held (pairs), for the metrics. */
  get size(): number {
    return this.pairs;
  }

  /** Every watcher's list with its view codes (the snapshot). */
  *lists(): Generator<{ watcher: string; targets: string[]; views: number[] }> {
    for (const [hex, w] of this.slots) {
      const n = this.outN[w]!;
      if (n === 0) continue;
      const h = this.outH[w]!;
      const ids = this.out.idsOf(h);
      const vs = this.out.viewsOf(h);
      const off = this.out.offset(h);
      const targets = new Array<string>(n);
      const views = new Array<number>(n);
      for (let i = 0; i < n; i++) {
        targets[i] = this.hexes[ids[off + i]!]!;
        views[i] = vs[off + i]!;
      }
      yield { watcher: hex, targets, views };
    }
  }

  /** Put back a list saved by lists() (view codes as saved); false when it does not fit `max`. */
  restore(watcher: string, targets: readonly string[], views: readonly number[], max: number): boolean {
    const d = distinctTargets(targets, views);
    return this.addCodes(watcher, d.targets, d.views.map((v) => (Number.isSafeInteger(v) && v >= 0 ? v : 0)), max) !== undefined;
  }
}
