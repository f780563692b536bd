// Subscriptions of the embedded store (store/types.ts WatchBackend): two in-memory maps, watcher
// -> (target -> last view) and target -> watchers. Soft state like the registrations, but not in
// the snapshot: a watcher learns from WATCH_ACK `watching` (0 after a restart) to watch again.
// Bounded: at most MAX_WATCHES targets per watcher, and a watcher's list is dropped when its
// registration is gone (expiry, eviction, UNREGISTER), so the maps never outgrow the table.
import type { WatchBackend } from './store/types.js';

export class MemoryWatches implements WatchBackend {
  private readonly byWatcher = new Map<string, Map<string, string>>();
  private readonly byTarget = new Map<string, Set<string>>();

  add(watcherHex: string, targets: readonly string[], views: readonly string[], max: number): number | undefined {
    const mine = this.byWatcher.get(watcherHex);
    const fresh = [...new Set(targets)].filter((t) => !mine?.has(t));
    const n = (mine?.size ?? 0) + fresh.length;
    if (n > max) return undefined;
    if (fresh.length === 0) return n;
    const list = mine ?? new Map<string, string>();
    if (!mine) this.byWatcher.set(watcherHex, list);
    targets.forEach((t, i) => {
      if (list.has(t)) return;
      list.set(t, views[i] ?? '');
      let w = this.byTarget.get(t);
      if (!w) this.byTarget.set(t, (w = new Set()));
      w.add(watcherHex);
    });
    return list.size;
  }

  remove(watcherHex: string, targets: readonly string[] | 'all'): number {
    const mine = this.byWatcher.get(watcherHex);
    if (!mine) return 0;
    for (const t of targets === 'all' ? [...mine.keys()] : targets) {
      if (!mine.delete(t)) continue;
      const w = this.byTarget.get(t);
      w?.delete(watcherHex);
      if (w?.size === 0) this.byTarget.delete(t);
    }
    if (mine.size === 0) this.byWatcher.delete(watcherHex);
    return mine.size;
  }

  count(watcherHex: string): number {
    return this.byWatcher.get(watcherHex)?.size ?? 0;
  }

  watchersOf(targetHex: string): string[] {
    const w = this.byTarget.get(targetHex);
    return w ? [...w] : [];
  }

  /** Whether anyone watches `targetHex` (no allocation: the expiry hook asks for every record). */
  isWatched(targetHex: string): boolean {
    return this.byTarget.has(targetHex);
  }

  swapView(watcherHex: string, targetHex: string, view: string): boolean {
    const mine = this.byWatcher.get(watcherHex);
    if (!mine || !mine.has(targetHex) || mine.get(targetHex) === view) return false;
    mine.set(targetHex, view);
    return true;
  }

  /** Subscriptions held (pairs), for the metrics. */
  get size(): number {
    let n = 0;
    for (const m of this.byWatcher.values()) n += m.size;
    return n;
  }
}
