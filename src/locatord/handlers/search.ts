// SEARCH: partner search, the patent's search unit ("searches the user database for a terminal
// of an appropriate user"; issue 18; devloc-locatord(8), PARTNER SEARCH).
//
// The candidates are the online terminals whose presence record (REGISTER / PRESENCE_SET) has
// the media ID asked and lookingForPartner true: the store keeps an index of them per media ID
// (store/types.ts SearchBackend), in locator ID order. A SEARCH examines at most MAX_SEARCH_SCAN
// of them from `after` (one read of their records), keeps those the asker may see (the
// visibility rules of QUERY_STATUS, handlers/query.ts visibleTo) whose `wants` satisfy every
// requirement (matchd's syntax, wire/requirements.ts), and answers them as WATCH_ACK entries:
// exactly what QUERY_STATUS with presence (or WATCH) would tell the asker of those IDs. A
// hidden terminal is never found, and a searcher learns no more than by querying.
//
// Bounded and charged: the work of one request is one index page and one read of at most
// MAX_SEARCH_SCAN records; the answer fits one datagram (paging.ts) and says where to continue.
// Each SEARCH costs the lookup budgets of QUERY_STATUS (context.ts chargeLookups) one ID before
// any store work, and one more per entry answered beyond the first.
import type { HandlerResult, RequestContext } from '../../net/server.js';
import type { PresenceEntry } from '../../wire/catalog.js';
import { MAX_SEARCH_SCAN } from '../../wire/catalog.js';
import { LOCATOR_ID_BYTES } from '../../wire/constants.js';
import { ErrorCode } from '../../wire/errors.js';
import { accepts, compileRequirements, EXACT } from '../../wire/requirements.js';
import type { LocatorContext } from '../context.js';
import { chargeLookups } from '../context.js';
import { encodedSize, entryFields, envelopeSize, fillPage } from '../paging.js';
import { searchMediaOf } from '../search-index.js';
import type { MaybePromise } from '../store/maybe.js';
import { all, then } from '../store/maybe.js';
import { visibleTo } from './query.js';
import { presenceEntryOf } from './watch.js';

const SEARCH_ENTRY_FIELDS = entryFields('SEARCH_RESULT');
const SEARCH_BASE = envelopeSize('SEARCH_RESULT', { entries: [], next: new Uint8Array(LOCATOR_ID_BYTES) });

export function search(c: LocatorContext, ctx: RequestContext<'SEARCH'>): MaybePromise<HandlerResult> {
  const me = ctx.session!;
  const { mediaId, requirements, after } = ctx.msg.body;
  const compiled = compileRequirements(requirements);
  if (!compiled.ok) {
    c.metrics.inc('queries_total', { type: 'SEARCH', result: 'bad-requirements' });
    c.logger.refusal('search-bad-requirements', { locatorId: me.locatorHex, reason: compiled.reason });
    return { error: ErrorCode.BAD_MESSAGE, message: compiled.reason };
  }
  // One ID up front: a searcher over its budget costs no store work.
  const refused = chargeLookups(c, ctx.from.ip, me.locatorHex, 1);
  if (refused) {
    c.metrics.inc('queries_total', { type: 'SEARCH', result: 'rate-limited' });
    return refused;
  }
  const afterHex = after ? Buffer.from(after).toString('hex') : '';
  return then(c.store.search.page(mediaId, afterHex, MAX_SEARCH_SCAN), (ids) =>
    then(c.store.getPresences(ids), (recs) => {
      const seen = recs.map((p, i): MaybePromise<PresenceEntry | undefined> => {
        const hex = ids[i]!;
        if (searchMediaOf(p) !== mediaId) {
          // Gone or changed since it was indexed (Redis expires records by itself): a stale hint.
          dropStale(c, mediaId, hex);
          return undefined;
        }
        if (hex === me.locatorHex) return undefined;
        return then(visibleTo(c, p, hex, me), (v) =>
          v && accepts(compiled.rules, v.extra?.presence?.wants ?? {}, EXACT) ? presenceEntryOf(Buffer.from(hex, 'hex'), v) : undefined);
      });
      return then(all(seen), (found): HandlerResult => {
        const entries = found.filter((e): e is PresenceEntry => e !== undefined);
        const page = fillPage(0, entries.length, SEARCH_BASE, (i) => entries[i]!, (e) => encodedSize(SEARCH_ENTRY_FIELDS, e));
        const more = page.entries.length > 1 ? chargeLookups(c, ctx.from.ip, me.locatorHex, page.entries.length - 1) : null;
        if (more) {
          c.metrics.inc('queries_total', { type: 'SEARCH', result: 'rate-limited' });
          return more;
        }
        c.metrics.inc('queries_total', { type: 'SEARCH', result: 'ok' });
        c.metrics.inc('query_ids_total', { type: 'SEARCH', result: 'online' }, page.entries.length);
        // Continue after the last entry answered when the page is full, else after the last
        // candidate examined when the scan stopped at its bound.
        const next = page.next !== undefined ? page.entries[page.entries.length - 1]!.id
          : ids.length === MAX_SEARCH_SCAN ? Buffer.from(ids[ids.length - 1]!, 'hex') : undefined;
        return ctx.reply('SEARCH_RESULT', next ? { entries: page.entries, next } : { entries: page.entries });
      });
    }));
}

/**
 * Drop an entry found stale, then read its record again and file it back if it looks under
 * `mediaId` by now. Between the read above and the drop (Redis: other requests, other instances)
 * the terminal may start looking again, and the write that indexed it may come before this drop:
 * without the second read it would stay out of the index until its next REFRESH. A store writes
 * the record before indexing it, so a write after the second read indexes it by itself.
 */
function dropStale(c: LocatorContext, mediaId: string, idHex: string): void {
  const fail = (err: unknown): void => c.logger.refusal('redis-error', { err: (err as Error).message, during: 'search index clean-up' });
  try {
    const r = then(c.store.search.drop(mediaId, idHex), () =>
      then(c.store.getPresence(idHex), (p) => (searchMediaOf(p) === mediaId ? c.store.search.index(idHex, undefined, p) : undefined)));
    if (r instanceof Promise) r.catch(fail);
  } catch (err) {
    fail(err);
  }
}
