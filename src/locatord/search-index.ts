// The partner-search index of the embedded store (store/types.ts SearchBackend): per media ID,
// the locator IDs (hex) of the registrations looking for a partner, kept sorted so a SEARCH
// pages through them in ID order from any point (binary search), whatever changes in between.
// Kept exact by the store (every write, delete, expiry and eviction of a record passes here),
// so it never holds more entries than the table holds records.
import type { Presence, SearchBackend } from './store/types.js';

/** The media ID under which `p` is found by SEARCH, if any (only while it looks for a partner). */
export function searchMediaOf(p: Pick<Presence, 'extra'> | undefined): string | undefined {
  const x = p?.extra;
  return x?.mediaId !== undefined && x.presence?.lookingForPartner === true ? x.mediaId : undefined;
}

/** First index of `a` (sorted) whose element is greater than `key` (or equal, when `orEqual`). */
function bound(a: readonly string[], key: string, orEqual: boolean): number {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const v = a[mid]!;
    if (v < key || (!orEqual && v === key)) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

export class MemorySearchIndex implements SearchBackend {
  private readonly byMedia = new Map<string, string[]>();
  private readonly mediaOf = new Map<string, string>();

  /** The record of `idHex` is now `p` (undefined: gone). */
  set(idHex: string, p: Pick<Presence, 'extra'> | undefined): void {
    const media = searchMediaOf(p);
    const old = this.mediaOf.get(idHex);
    if (old === media) return;
    if (old !== undefined) this.drop(old, idHex);
    if (media === undefined) return;
    let ids = this.byMedia.get(media);
    if (!ids) this.byMedia.set(media, (ids = []));
    ids.splice(bound(ids, idHex, true), 0, idHex);
    this.mediaOf.set(idHex, media);
  }

  /** SearchBackend.index: the same as `set` (the previous record is known here). */
  index(idHex: string, _cur: Presence | undefined, next: Presence | undefined): void {
    this.set(idHex, next);
  }

  /**
   * Many records at once (a snapshot restore): appended, then each media ID's list sorted once,
   * where `set` would insert each into a sorted array (quadratic for one popular media ID).
   */
  load(records: Iterable<readonly [string, Pick<Presence, 'extra'>]>): void {
    const touched = new Set<string[]>();
    for (const [idHex, p] of records) {
      const media = searchMediaOf(p);
      if (this.mediaOf.has(idHex)) {
        this.set(idHex, p);
        continue;
      }
      if (media === undefined) continue;
      let ids = this.byMedia.get(media);
      if (!ids) this.byMedia.set(media, (ids = []));
      ids.push(idHex);
      touched.add(ids);
      this.mediaOf.set(idHex, media);
    }
    for (const ids of touched) {
      ids.sort();
      // One ID twice in the input: kept once, as `set` would.
      let n = 0;
      for (let i = 0; i < ids.length; i++) if (i === 0 || ids[i] !== ids[n - 1]) ids[n++] = ids[i]!;
      ids.length = n;
    }
  }

  page(mediaId: string, afterHex: string, limit: number): string[] {
    const ids = this.byMedia.get(mediaId);
    if (!ids) return [];
    const from = afterHex === '' ? 0 : bound(ids, afterHex, false);
    return ids.slice(from, from + limit);
  }

  drop(mediaId: string, idHex: string): void {
    if (this.mediaOf.get(idHex) !== mediaId) return;
    this.mediaOf.delete(idHex);
    const ids = this.byMedia.get(mediaId)!;
    const i = bound(ids, idHex, true);
    if (ids[i] === idHex) ids.splice(i, 1);
    if (ids.length === 0) this.byMedia.delete(mediaId);
  }

  /** Entries held, for the metrics. */
  get size(): number {
    return this.mediaOf.size;
  }
}
