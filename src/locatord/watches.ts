// Subscriptions of the embedded store (store/types.ts WatchBackend): watcher -> (target, last
// view told) and target -> watchers. Soft state like the registrations, and like them in the
// snapshot across a clean restart (snapshot.ts: lists() / restore()); a watcher also learns
// from WATCH_ACK `watching` (0 after a crash) to watch again.
// Bounded: at most MAX_WATCHES targets per watcher, and a watcher's list is dropped when its
// registration is gone (expiry, eviction, UNREGISTER), so the structure never outgrows the table.
//
// Compact (issue 18: 1M terminals each watched by 50 is 50M pairs): no object per pair. Each
// terminal named in a subscription is interned once as a slot number; per slot, typed arrays
// hold what it watches (target slots, and each one's last view as a 52-bit code) and who watches
// it (watcher slots). A pair costs 4 + 8 + 4 bytes plus the arrays' growth slack; the per-slot
// overhead is shared by its ~50 pairs (README "Presence at scale", devloc bench --only presence).
// A slot is recycled when its terminal neither watches nor is watched.
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

const EMPTY_I32 = new Int32Array(0);
const EMPTY_F64 = new Float64Array(0);

/** The capacity to grow a list of `len` to for `need` entries: ~1.25x, so slack stays small. */
const grown = (len: number, need: number): number => Math.max(need, len + (len >> 1), 4);

export class MemoryWatches implements WatchBackend {
  private readonly slots = new Map<string, number>();
  private hexes: (string | undefined)[] = [];
  private readonly free: number[] = [];
  /** Per slot: the targets it watches (slots) and the view code of each, `nWatching` long. */
  private watching: Int32Array[] = [];
  private views: Float64Array[] = [];
  private nWatching = new Int32Array(0);
  /** Per slot: its watchers (slots), `nWatchers` long. */
  private watchers: Int32Array[] = [];
  private nWatchers = new Int32Array(0);
  private pairs = 0;

  private slotOf(hex: string): number | undefined {
    return this.slots.get(hex);
  }

  private intern(hex: string): number {
    let s = this.slots.get(hex);
    if (s !== undefined) return s;
    s = this.free.pop() ?? this.hexes.length;
    if (s >= this.nWatching.length) {
      const cap = Math.max(1024, this.nWatching.length * 2);
      const a = new Int32Array(cap);
      a.set(this.nWatching);
      this.nWatching = a;
      const b = new Int32Array(cap);
      b.set(this.nWatchers);
      this.nWatchers = b;
    }
    this.slots.set(hex, s);
    this.hexes[s] = hex;
    this.watching[s] = EMPTY_I32;
    this.views[s] = EMPTY_F64;
    this.watchers[s] = EMPTY_I32;
    return s;
  }

  /** Give the slot back once its terminal neither watches nor is watched. */
  private release(s: number): void {
    if (this.nWatching[s] !== 0 || this.nWatchers[s] !== 0) return;
    this.slots.delete(this.hexes[s]!);
    this.hexes[s] = undefined;
    this.watching[s] = EMPTY_I32;
    this.views[s] = EMPTY_F64;
    this.watchers[s] = EMPTY_I32;
    this.free.push(s);
  }

  private indexIn(list: Int32Array, len: number, slot: number): number {
    for (let i = 0; i < len; i++) if (list[i] === slot) return i;
    return -1;
  }

  private addWatcherOf(t: number, w: number): void {
    const n = this.nWatchers[t]!;
    let list = this.watchers[t]!;
    if (n === list.length) {
      const a = new Int32Array(grown(n, n + 1));
      a.set(list);
      this.watchers[t] = list = a;
    }
    list[n] = w;
    this.nWatchers[t] = n + 1;
  }

  private removeWatcherOf(t: number, w: number): void {
    const list = this.watchers[t]!;
    const n = this.nWatchers[t]!;
    const i = this.indexIn(list, n, w);
    if (i < 0) return;
    list[i] = list[n - 1]!;
    this.nWatchers[t] = n - 1;
    if (n - 1 === 0) this.watchers[t] = EMPTY_I32;
  }

  add(watcherHex: string, targets: readonly string[], views: readonly string[], max: number): number | undefined {
    return this.addCodes(watcherHex, targets, views.map(viewCode), max);
  }

  private addCodes(watcherHex: string, targets: readonly string[], codes: readonly number[], max: number): number | undefined {
    const ws = this.slotOf(watcherHex);
    const have = ws === undefined ? 0 : this.nWatching[ws]!;
    // The targets not watched yet (each once), before anything changes: a refusal changes nothing.
    const fresh: number[] = [];
    const seen = new Set<string>();
    targets.forEach((t, i) => {
      if (seen.has(t)) return;
      seen.add(t);
      const ts = this.slotOf(t);
      if (ws !== undefined && ts !== undefined && this.indexIn(this.watching[ws]!, have, ts) >= 0) return;
      fresh.push(i);
    });
    const n = have + fresh.length;
    if (n > max) return undefined;
    if (fresh.length === 0) return n;
    const w = ws ?? this.intern(watcherHex);
    let list = this.watching[w]!;
    let vs = this.views[w]!;
    if (n > list.length) {
      const cap = have === 0 ? n : grown(have, n);
      const a = new Int32Array(cap);
      a.set(list.subarray(0, have));
      const b = new Float64Array(cap);
      b.set(vs.subarray(0, have));
      this.watching[w] = list = a;
      this.views[w] = vs = b;
    }
    let k = have;
    for (const i of fresh) {
      const t = this.intern(targets[i]!);
      list[k] = t;
      vs[k] = codes[i] ?? 0;
      k++;
      this.addWatcherOf(t, w);
    }
    this.nWatching[w] = n;
    this.pairs += fresh.length;
    return n;
  }

  remove(watcherHex: string, targets: readonly string[] | 'all'): number {
    const w = this.slotOf(watcherHex);
    if (w === undefined || this.nWatching[w] === 0) return 0;
    const list = this.watching[w]!;
    const vs = this.views[w]!;
    let n = this.nWatching[w]!;
    const drop = (i: number): void => {
      const t = list[i]!;
      list[i] = list[n - 1]!;
      vs[i] = vs[n - 1]!;
      n--;
      this.pairs--;
      this.removeWatcherOf(t, w);
      this.nWatching[w] = n;
      this.release(t);
    };
    if (targets === 'all') {
      while (n > 0) drop(n - 1);
    } else {
      for (const hex of targets) {
        const t = this.slotOf(hex);
        const i = t === undefined ? -1 : this.indexIn(list, n, t);
        if (i >= 0) drop(i);
      }
    }
    if (n === 0) {
      this.watching[w] = EMPTY_I32;
      this.views[w] = EMPTY_F64;
      this.release(w);
    }
    return n;
  }

  count(watcherHex: string): number {
    const w = this.slotOf(watcherHex);
    return w === undefined ? 0 : this.nWatching[w]!;
  }

  watchersOf(targetHex: string): string[] {
    const t = this.slotOf(targetHex);
    if (t === undefined) return [];
    const n = this.nWatchers[t]!;
    const list = this.watchers[t]!;
    const out = new Array<string>(n);
    for (let i = 0; i < n; i++) out[i] = this.hexes[list[i]!]!;
    return out;
  }

  /** Whether anyone watches `targetHex` (no allocation: the expiry hook asks for every record). */
  isWatched(targetHex: string): boolean {
    const t = this.slotOf(targetHex);
    return t !== undefined && this.nWatchers[t]! > 0;
  }

  swapView(watcherHex: string, targetHex: string, view: string): boolean {
    const w = this.slotOf(watcherHex);
    const t = this.slotOf(targetHex);
    if (w === undefined || t === undefined) return false;
    const i = this.indexIn(this.watching[w]!, this.nWatching[w]!, t);
    if (i < 0) return false;
    const code = viewCode(view);
    const vs = this.views[w]!;
    if (vs[i] === code) return false;
    vs[i] = code;
    return true;
  }

  /** Subscriptions held (pairs), for the metrics. */
  get size(): number {
    return this.pairs;
  }

  /** Every watcher's list with its view codes (the snapshot). */
  *lists(): Generator<{ watcher: string; targets: string[]; views: number[] }> {
    for (const [hex, w] of this.slots) {
      const n = this.nWatching[w]!;
      if (n === 0) continue;
      const list = this.watching[w]!;
      const vs = this.views[w]!;
      const targets = new Array<string>(n);
      const views = new Array<number>(n);
      for (let i = 0; i < n; i++) {
        targets[i] = this.hexes[list[i]!]!;
        views[i] = vs[i]!;
      }
      yield { watcher: hex, targets, views };
    }
  }

  /** Put back a list saved by lists() (view codes as saved); false when it does not fit `max`. */
  restore(watcher: string, targets: readonly string[], views: readonly number[], max: number): boolean {
    return this.addCodes(watcher, targets, views.map((v) => (Number.isSafeInteger(v) && v >= 0 ? v : 0)), max) !== undefined;
  }
}
