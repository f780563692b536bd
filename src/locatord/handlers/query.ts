// QUERY_ADDR and QUERY_STATUS (the patent's Fig. 4 inquiry and online-status inquiry), for
// authenticated terminals only. An ID that is unknown, expired, or whose terminal does not let
// the asker see it answers exactly like an offline one: {id, online: false}, byte for byte.
//
// Visibility 0: anyone authenticated who knows the ID. Visibility 1: the terminal itself, IDs on
// its allow-list, and members of a group it is in.
import type { Metrics } from '../../common/metrics.js';
import type { HandlerResult, Refusal, RequestContext } from '../../net/server.js';
import type { ServerSession } from '../../net/sessions.js';
import type { AddrEntry, PresenceRecord } from '../../wire/catalog.js';
import { MessageType, specOf } from '../../wire/catalog.js';
import { Visibility } from '../../wire/constants.js';
import type { LocatorContext, LookupLimits } from '../context.js';
import { chargeLookups } from '../context.js';
import { encodedSize, entryFields, envelopeSize, fillPage } from '../paging.js';
import type { MaybePromise } from '../store/maybe.js';
import { all, then } from '../store/maybe.js';
import type { Presence } from '../store/types.js';

const ADDR_ENTRY_FIELDS = entryFields('QUERY_ADDR_RESULT');
const ADDR_BASE = envelopeSize('QUERY_ADDR_RESULT', { entries: [], nextCursor: Number.MAX_SAFE_INTEGER });
const STATUS_BASE = envelopeSize('QUERY_STATUS_RESULT', { online: [], nextCursor: Number.MAX_SAFE_INTEGER });
/** One more byte: the presence array's header past 23 entries. */
const STATUS_PRESENCE_BASE = envelopeSize('QUERY_STATUS_RESULT', { online: [], presence: [], nextCursor: Number.MAX_SAFE_INTEGER }) + 1;
const PRESENCE_RECORD_FIELDS = (() => {
  const f = specOf(MessageType.QUERY_STATUS_RESULT)!.fields.find((x) => x.name === 'presence')!.type;
  if (f.t !== 'array' || f.of.t !== 'struct') throw new TypeError('QUERY_STATUS_RESULT presence: not an array of structs');
  return f.of.fields;
})();
/** A CBOR boolean is one byte. */
const BOOL_SIZE = 1;

const hexOf = (id: Uint8Array): string => Buffer.from(id.buffer, id.byteOffset, id.length).toString('hex');

/**
 * `p` (the record of `targetHex`) if `asker` may see it (also a watcher: handlers/watch.ts). An
 * unknown ID costs the same group lookup as a hidden one: both answer "offline", and the time to
 * answer must not tell a hidden online terminal from an unknown ID (test/locatord/query.test.ts
 * counts the store calls).
 */
export function visibleTo(c: LocatorContext, p: Presence | undefined, targetHex: string, asker: Pick<ServerSession, 'locatorHex' | 'locatorId'>): MaybePromise<Presence | undefined> {
  if (p && p.visibility === Visibility.ANYONE) return p;
  if (p && (targetHex === asker.locatorHex || p.extra?.allow?.includes(asker.locatorHex))) return p;
  return then(c.store.groups.shareGroup(Buffer.from(targetHex, 'hex'), asker.locatorId), (shared) => (p && shared ? p : undefined));
}

/** The live records of `ids` (one read: MGET on Redis) that `asker` may see; undefined for the rest. */
export function visibleRecords(c: LocatorContext, ids: readonly Uint8Array[], asker: ServerSession): MaybePromise<(Presence | undefined)[]> {
  const hexes = ids.map(hexOf);
  return then(c.store.getPresences(hexes), (recs) => all(recs.map((p, i) => visibleTo(c, p, hexes[i]!, asker))));
}

/** The presence record of a registration (undefined when it has none). */
export function presenceRecordOf(p: Presence): PresenceRecord | undefined {
  const x = p.extra;
  if (!x || (x.mediaId === undefined && !x.presence)) return undefined;
  const r: PresenceRecord = {};
  if (x.mediaId !== undefined) r.mediaId = x.mediaId;
  if (x.presence?.lookingForPartner !== undefined) r.lookingForPartner = x.presence.lookingForPartner;
  if (x.presence?.wants) r.wants = x.presence.wants;
  if (x.presence?.status !== undefined) r.status = x.presence.status;
  return r;
}

export function addrEntry(id: Uint8Array, p: Presence | undefined): AddrEntry {
  if (!p) return { id, online: false };
  const e: AddrEntry = { id, online: true, addr: p.addr };
  if (p.extra?.localAddrs) e.localAddrs = p.extra.localAddrs;
  e.netMode = p.netMode;
  if (p.nickname !== undefined) e.nickname = p.nickname;
  if (p.extra?.mediaId !== undefined) e.mediaId = p.extra.mediaId;
  return e;
}

/**
 * Once a page of answers is filled, the same for both stores: charge its lookups to the asker's
 * budgets (refused: RATE_LIMITED, counted) and count the IDs found online and offline.
 */
export function chargeQueryPage(
  c: LookupLimits & { metrics: Metrics },
  type: 'QUERY_ADDR' | 'QUERY_STATUS' | 'WATCH',
  sourceIp: string,
  asker: ServerSession,
  online: readonly boolean[],
): Refusal | null {
  const refused = chargeLookups(c, sourceIp, asker.locatorHex, online.length);
  const queries = c.metrics.seriesByPair('queries_total', 'type', 'result');
  if (refused) {
    queries(type, 'rate-limited').inc();
    return refused;
  }
  let found = 0;
  for (const o of online) if (o) found++;
  const ids = c.metrics.seriesByPair('query_ids_total', 'type', 'result');
  queries(type, 'ok').inc();
  ids(type, 'online').inc(found);
  ids(type, 'offline').inc(online.length - found);
  return null;
}

export function queryAddr(c: LocatorContext, ctx: RequestContext<'QUERY_ADDR'>): MaybePromise<HandlerResult> {
  const asker = ctx.session!;
  const { ids, cursor = 0 } = ctx.msg.body;
  const from = Math.min(cursor, ids.length);
  return then(visibleRecords(c, ids.slice(from), asker), (recs) => {
    const page = fillPage(from, ids.length, ADDR_BASE, (i) => addrEntry(ids[i]!, recs[i - from]), (e) => encodedSize(ADDR_ENTRY_FIELDS, e));
    const refused = chargeQueryPage(c, 'QUERY_ADDR', ctx.from.ip, asker, page.entries.map((e) => e.online));
    if (refused) return refused;
    return ctx.reply('QUERY_ADDR_RESULT', page.next === undefined ? { entries: page.entries } : { entries: page.entries, nextCursor: page.next });
  });
}

export function queryStatus(c: LocatorContext, ctx: RequestContext<'QUERY_STATUS'>): MaybePromise<HandlerResult> {
  const asker = ctx.session!;
  const { ids, cursor = 0, presence } = ctx.msg.body;
  const from = Math.min(cursor, ids.length);
  if (presence === true) return queryStatusWithPresence(c, ctx, from);
  return then(visibleRecords(c, ids.slice(from), asker), (recs) => {
    const page = fillPage(from, ids.length, STATUS_BASE, (i) => recs[i - from] !== undefined, () => BOOL_SIZE);
    const refused = chargeQueryPage(c, 'QUERY_STATUS', ctx.from.ip, asker, page.entries);
    if (refused) return refused;
    return ctx.reply('QUERY_STATUS_RESULT', page.next === undefined ? { online: page.entries } : { online: page.entries, nextCursor: page.next });
  });
}

/** QUERY_STATUS with `presence`: each entry's presence record beside its boolean ({} when offline or none). */
function queryStatusWithPresence(c: LocatorContext, ctx: RequestContext<'QUERY_STATUS'>, from: number): MaybePromise<HandlerResult> {
  const asker = ctx.session!;
  const { ids } = ctx.msg.body;
  return then(visibleRecords(c, ids.slice(from), asker), (recs) => {
    const page = fillPage(from, ids.length, STATUS_PRESENCE_BASE, (i) => {
      const p = recs[i - from];
      return { online: p !== undefined, record: (p && presenceRecordOf(p)) ?? {} };
    }, (e) => BOOL_SIZE + encodedSize(PRESENCE_RECORD_FIELDS, e.record));
    const online = page.entries.map((e) => e.online);
    const refused = chargeQueryPage(c, 'QUERY_STATUS', ctx.from.ip, asker, online);
    if (refused) return refused;
    const body = { online, presence: page.entries.map((e) => e.record) };
    return ctx.reply('QUERY_STATUS_RESULT', page.next === undefined ? body : { ...body, nextCursor: page.next });
  });
}
