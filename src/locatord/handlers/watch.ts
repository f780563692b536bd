// WATCH, UNWATCH, PRESENCE_SET and PRESENCE_ACK: presence pushed, not polled (issue 18;
// devloc-locatord(8), PRESENCE; devloc-protocol(7), PRESENCE).
//
// A terminal watches up to MAX_WATCHES locator IDs. When what it may see of one of them changes
// (it comes online, goes offline, changes its nickname or presence record), locatord pushes
// PRESENCE to it: a confirmable push (net/push.ts, like INTRO), retransmitted until PRESENCE_ACK.
//
// Consent first: what a watcher is told is exactly what QUERY_STATUS (with `presence`) would
// answer it at that moment (the same visibility rules, handlers/query.ts): a terminal hidden
// from the watcher is "offline", byte for byte, and since a push goes out only when the
// watcher's view changes (the last view told is kept per pair), a hidden terminal coming and
// going sends nothing at all: watching tells no more than querying, and hidden is offline.
//
// No amplification: a push goes only to the watcher's own registered address (the source of its
// last authenticated REGISTER / REFRESH / PROBE_ACK), MACed in its session; WATCH is charged like
// a lookup of its IDs. Bounded: per watcher at most `maxPendingPerWatcher` pushes wait for their
// ack (one per watched terminal: a newer change to a pending pair replaces what its next copy
// says), each retransmitted on the push schedule and then abandoned; changes beyond are dropped
// and counted (the watcher re-syncs with WATCH). A watcher that never acks costs at most that.
//
// With --store redis the subscriptions are in Redis, the instance that sees a change fans it
// out, and the push leaves from the instance the watcher last spoke to (Presence.inst), relayed
// there like an INTRO (store/relay.ts).
import type { Logger } from '../../common/log.js';
import type { Metrics } from '../../common/metrics.js';
import type { PushCopy } from '../../net/push.js';
import { pooledRid, Pusher } from '../../net/push.js';
import type { HandlerResult, RequestContext } from '../../net/server.js';
import type { ServerSession, ServerSessions } from '../../net/sessions.js';
import type { Address } from '../../wire/addr.js';
import type { PresenceEntry, PresenceRecord } from '../../wire/catalog.js';
import { MAX_WATCHES } from '../../wire/catalog.js';
import { EncodedBody, encodeDatagram } from '../../wire/envelope.js';
import { sha256 } from '../../wire/hmac-sha256.js';
import { ErrorCode } from '../../wire/errors.js';
import type { LocatorContext } from '../context.js';
import { encodedSize, entryFields, envelopeSize, fillPage } from '../paging.js';
import type { RegistrationExtra } from '../table.js';
import type { MaybePromise } from '../store/maybe.js';
import { all, both, then } from '../store/maybe.js';
import type { Presence } from '../store/types.js';
import { distinctTargets } from '../watches.js';
import { chargeQueryPage, presenceRecordOf, visibleRecords, visibleTo } from './query.js';
import { identityConflict, standingOf } from './standing.js';

const WATCH_ENTRY_FIELDS = entryFields('WATCH_ACK');
const WATCH_BASE = envelopeSize('WATCH_ACK', { entries: [], nextCursor: Number.MAX_SAFE_INTEGER, watching: MAX_WATCHES });

const hexOf = (id: Uint8Array): string => Buffer.from(id.buffer, id.byteOffset, id.length).toString('hex');

/** `extra` with the presence record `r` in place of its own (absent fields cleared). */
export function withPresence(extra: RegistrationExtra | undefined, r: PresenceRecord): RegistrationExtra | undefined {
  const x: RegistrationExtra = { ...extra };
  delete x.presence;
  if (r.mediaId !== undefined) x.mediaId = r.mediaId;
  else delete x.mediaId;
  const rich: NonNullable<RegistrationExtra['presence']> = {};
  if (r.lookingForPartner !== undefined) rich.lookingForPartner = r.lookingForPartner;
  if (r.wants && Object.keys(r.wants).length > 0) rich.wants = r.wants;
  if (r.status !== undefined) rich.status = r.status;
  if (Object.keys(rich).length > 0) x.presence = rich;
  return Object.keys(x).length > 0 ? x : undefined;
}

/** One watched terminal as a watcher may see it (`p`: its record if visible to the watcher, else undefined). */
export function presenceEntryOf(id: Uint8Array, p: Presence | undefined): PresenceEntry {
  if (!p) return { id, online: false };
  const e: PresenceEntry = { id, online: true };
  if (p.nickname !== undefined) e.nickname = p.nickname;
  const r = presenceRecordOf(p);
  if (r) e.presence = r;
  return e;
}

/**
 * What a watcher was told, compactly ('' = offline): equal views, no push. The first 12
 * characters of the base64 of a SHA-256 (72 bits; kept per subscription, in Redis too), hashed in
 * JavaScript: createHash's native object per change, freed through a weak handle in the
 * scavenger's pause, was 0.2-1.2 ms of each 2.3-4.5 ms scavenge at 10k changes/s.
 */
export function viewOf(e: PresenceEntry): string {
  if (!e.online) return '';
  // 12 base64 characters are the digest's first 9 bytes.
  return sha256(Buffer.from(JSON.stringify([e.nickname ?? null, e.presence ?? null]), 'utf8'), Buffer.allocUnsafe(32)).toString('base64', 0, 9);
}

/** One PRESENCE as its watchers are told it: the entry, its view and its body encoded once. */
export interface Telling {
  entry: PresenceEntry;
  view: string;
  body: EncodedBody<'PRESENCE'>;
}

function telling(entry: PresenceEntry): Telling {
  return { entry, view: viewOf(entry), body: EncodedBody.of('PRESENCE', entry) };
}

/**
 * What one change of `targetHex` tells its watchers. A watcher sees either the record or
 * "offline" (visibleTo), so there are two tellings at most, each made once per change (not a
 * SHA-256 and an encoding per watcher): only the request ID, session and MAC differ per push.
 */
class Tellings {
  private readonly id: Buffer;
  private visible: Telling | undefined;
  private offline: Telling | undefined;

  constructor(targetHex: string, private readonly rec: Presence | undefined) {
    this.id = Buffer.from(targetHex, 'hex');
  }

  of(seen: Presence | undefined): Telling {
    if (seen && seen === this.rec) return (this.visible ??= telling(presenceEntryOf(this.id, seen)));
    if (!seen) return (this.offline ??= telling(presenceEntryOf(this.id, undefined)));
    return telling(presenceEntryOf(this.id, seen));
  }
}

interface PushData {
  watcherHex: string;
  session: ServerSession;
  /** Where the first copy goes, when the caller knew (PresencePushOptions.firstTo). */
  firstTo: Address | undefined;
  entry: PresenceEntry;
  body: EncodedBody<'PRESENCE'>;
  /** Changes to the pair since the push began, and how many the first copy carried. */
  version: number;
  firstVersion: number;
}

export interface PresencePushesOptions {
  /** Where the watcher is now, if still registered in that session (handlers/introduce.ts introTarget). */
  target: (watcherHex: string, session: ServerSession) => Address | undefined | Promise<Address | undefined>;
  sessions: ServerSessions;
  send: (bytes: Buffer, to: Address) => void;
  metrics: Metrics;
  logger: Logger;
  initialTimeoutMs?: number;
  maxRetransmit?: number;
  maxPending?: number;
  maxPendingPerWatcher?: number;
  timers?: ConstructorParameters<typeof Pusher>[0]['timers'];
}

/** What a caller of PresencePushes.push may already have, so that the push does not redo it. */
export interface PresencePushOptions {
  /** The entry encoded (once for all the watchers of a change); default: encoded for this push. */
  body?: EncodedBody<'PRESENCE'>;
  /** The entry's locator ID in hex; default: from the entry. */
  targetHex?: string;
  /**
   * Where the watcher is, from its record just read in this session (the fan-out has it), so the
   * first copy does not look the record up again; later copies do.
   */
  firstTo?: Address;
}

/** PRESENCE pushes of this instance, waiting for their PRESENCE_ACK. */
export class PresencePushes {
  private readonly pushes: Pusher<PushData>;

  constructor(private readonly o: PresencePushesOptions) {
    const m = o.metrics;
    m.counter('presence_pushes_total', 'PRESENCE copies sent (retransmissions included)');
    m.counter('presence_acks_total', 'PRESENCE pushes acknowledged');
    m.counter('presence_abandoned_total', 'PRESENCE pushes given up, by reason');
    m.counter('presence_dropped_total', 'Presence changes not pushed: too many pushes pending for the watcher');
    m.gauge('presence_pending', 'PRESENCE pushes waiting for PRESENCE_ACK', () => this.pushes.size);
    // Handles taken once: a label key rebuilt per push and per ack showed in the profile.
    const copies = m.series('presence_pushes_total');
    const acks = m.series('presence_acks_total');
    this.pushes = new Pusher<PushData>({
      send: o.send,
      ...(o.initialTimeoutMs !== undefined ? { initialTimeoutMs: o.initialTimeoutMs } : {}),
      ...(o.maxRetransmit !== undefined ? { maxRetransmit: o.maxRetransmit } : {}),
      maxPending: o.maxPending ?? 100_000,
      maxPendingPerTarget: o.maxPendingPerWatcher ?? 32,
      ...(o.timers ? { timers: o.timers } : {}),
      onCopy: (_p, _n, skipped) => {
        if (!skipped) copies.inc();
      },
      onEnd: (p, outcome) => {
        if ('acked' in outcome) {
          acks.inc();
          // Changed after the first copy: the ack may be for an older copy; tell the latest.
          if (p.data.version !== p.data.firstVersion) this.push(p.target, p.data.session, p.data.entry, { body: p.data.body });
          return;
        }
        m.inc('presence_abandoned_total', { reason: outcome.abandoned });
        o.logger.refusal('presence push not acknowledged', { watcher: p.target, reason: outcome.abandoned, copies: p.copies });
      },
    });
  }

  get size(): number {
    return this.pushes.size;
  }

  /**
   * Push `entry` to the watcher of `session` (or, when one is pending for the pair, make its next
   * copies say it).
   */
  push(watcherHex: string, session: ServerSession, entry: PresenceEntry, o: PresencePushOptions = {}): void {
    const body = o.body ?? EncodedBody.of('PRESENCE', entry);
    const targetHex = o.targetHex ?? hexOf(entry.id);
    const firstTo = o.firstTo;
    const key = `${watcherHex}:${targetHex}`;
    const pending = this.pushes.get(key);
    if (pending && pending.data.session.sidHex === session.sidHex) {
      pending.data.entry = entry;
      pending.data.body = body;
      pending.data.version++;
      return;
    }
    const data: PushData = { watcherHex, session, firstTo, entry, body, version: 0, firstVersion: -1 };
    const r = this.pushes.push({ key, target: watcherHex, data, build: this.build });
    if (r === 'full' || r === 'duplicate') this.o.metrics.inc('presence_dropped_total');
  }

  /** Copy `n` of the push of `data` (one function for every push: no closure made per push). */
  private readonly build = (rid: Buffer, n: number, data: PushData): PushCopy | Promise<PushCopy> => {
    if (n === 1) {
      data.firstVersion = data.version;
      if (data.firstTo) return this.copy(data, rid, data.firstTo);
    }
    const to = this.o.target(data.watcherHex, data.session);
    return to instanceof Promise
      ? to.then((a) => this.copy(data, rid, a), (): PushCopy => ({ abandon: 'store unavailable' }))
      : this.copy(data, rid, to);
  };

  private copy(d: PushData, rid: Buffer, to: Address | undefined): PushCopy {
    if (!to || !this.o.sessions.live(d.session)) return { abandon: 'watcher gone' };
    return { bytes: this.o.sessions.encode(d.session, 'PRESENCE', rid, d.body), to };
  }

  /** PRESENCE_ACK of `session` for `id`: ends the push (only the watcher's session can). */
  ack(session: ServerSession, id: Uint8Array, rid: Uint8Array): boolean {
    return this.pushes.ack(`${session.locatorHex}:${hexOf(id)}`, 'ack', rid, (p) => p.data.session.sidHex === session.sidHex);
  }

  close(): void {
    this.pushes.close();
  }
}

/**
 * Tell the watchers of `targetHex` what they may now see of it, each only if that changed.
 * Never throws: a failure (Redis) is logged and counted; the watcher re-syncs with WATCH.
 */
export function notifyWatchers(c: LocatorContext, targetHex: string): void {
  const logFail = (err: unknown): void => {
    c.logger.refusal('redis-error', { err: (err as Error).message, during: 'presence fan-out' });
  };
  try {
    const r = then(c.store.watches.watchersOf(targetHex), (watchers): MaybePromise<unknown> => {
      if (watchers.length === 0) return undefined;
      return then(both(c.store.getPresence(targetHex), c.store.getPresences(watchers)), ([rec, wrecs]) => {
        const tellings = new Tellings(targetHex, rec);
        return all(watchers.map((w, i) => tellWatcher(c, targetHex, rec, tellings, w, wrecs[i])));
      });
    });
    if (r instanceof Promise) r.catch(logFail);
  } catch (err) {
    logFail(err);
  }
}

/** A watcher as visibleTo asks about it: its locator ID as bytes only when a group must be asked, not per push. */
class Asker {
  constructor(readonly locatorHex: string) {}

  get locatorId(): Buffer {
    return Buffer.from(this.locatorHex, 'hex');
  }
}

function tellWatcher(c: LocatorContext, targetHex: string, rec: Presence | undefined, tellings: Tellings, watcherHex: string, w: Presence | undefined): MaybePromise<void> {
  // A watcher no longer registered has nowhere to be told: its subscription lapses.
  if (!w) return then(c.store.watches.remove(watcherHex, [targetHex]), () => undefined);
  return then(visibleTo(c, rec, targetHex, new Asker(watcherHex)), (seen) => {
    const t = tellings.of(seen);
    return then(c.store.watches.swapView(watcherHex, targetHex, t.view), (changed) => {
      if (changed) deliver(c, watcherHex, targetHex, w, t);
    });
  });
}

/** Push `t` to the watcher: from here, or relayed to the instance it last spoke to (Redis). */
function deliver(c: LocatorContext, watcherHex: string, targetHex: string, w: Presence, t: Telling): void {
  const owner = w.inst !== undefined && w.inst !== c.store.instanceId && c.store.relayIntro ? w.inst : undefined;
  if (owner) {
    // The owner MACs it in the watcher's session (store/shared.ts deliverRelayed).
    // The owner pushes it under its own request ID: this one only has to be well formed (from
    // the pool, not a randomBytes() call per push).
    const bytes = encodeDatagram('PRESENCE', pooledRid(), t.body, { sid: Buffer.from(w.sidHex, 'hex'), seq: 0 });
    c.store.relayIntro!(owner, watcherHex, bytes).catch(() => c.metrics.inc('presence_dropped_total'));
    return;
  }
  const local = c.sessions.get(w.sidHex);
  if (local) {
    // `local` is held under w.sidHex: w.addr is where the watcher is in it (the first copy's address).
    if (local.locatorHex === watcherHex) c.presencePushes.push(watcherHex, local, t.entry, { body: t.body, targetHex, firstTo: w.addr });
    return;
  }
  c.sessions.fetch(w.sidHex).then(() => {
    const s = c.sessions.get(w.sidHex);
    if (s && s.locatorHex === watcherHex) c.presencePushes.push(watcherHex, s, t.entry, { body: t.body, targetHex });
  }, () => c.metrics.inc('presence_dropped_total'));
}

/** A registration went offline by itself (expiry, eviction) or was removed (kick, REVOKE, SIGHUP): its watchers are told, its own subscriptions lapse. */
export function presenceGone(c: LocatorContext, idHex: string): void {
  try {
    const r = then(c.store.getPresence(idHex), (p): MaybePromise<unknown> => {
      if (p) return undefined; // registered again meanwhile (or elsewhere, Redis)
      notifyWatchers(c, idHex);
      return c.store.watches.remove(idHex, 'all');
    });
    if (r instanceof Promise) r.catch((err: unknown) => c.logger.refusal('redis-error', { err: (err as Error).message, during: 'presence expiry' }));
  } catch (err) {
    c.logger.refusal('redis-error', { err: (err as Error).message, during: 'presence expiry' });
  }
}

export function watch(c: LocatorContext, ctx: RequestContext<'WATCH'>): MaybePromise<HandlerResult> {
  const me = ctx.session!;
  const { ids, cursor = 0 } = ctx.msg.body;
  const hexes = ids.map(hexOf);
  return then(c.store.getPresence(me.locatorHex), (mine) => {
    // Pushes go to the watcher's registered address: nothing to watch from without one.
    if (!mine || mine.sidHex !== me.sidHex) return { error: ErrorCode.NOT_FOUND, message: 'not registered: send REGISTER' };
    const from = Math.min(cursor, ids.length);
    return then(visibleRecords(c, ids, me), (recs) => {
      const entries = recs.map((p, i) => presenceEntryOf(ids[i]!, p));
      const page = fillPage(from, ids.length, WATCH_BASE, (i) => entries[i]!, (e) => encodedSize(WATCH_ENTRY_FIELDS, e));
      // Charged like QUERY_STATUS of the IDs answered: the answer reveals as much.
      const refused = chargeQueryPage(c, 'WATCH', ctx.from.ip, me, page.entries.map((e) => e.online));
      if (refused) return refused;
      // An ID named twice is one watch (the answer still has an entry per ID named).
      const d = distinctTargets(hexes, entries.map(viewOf));
      return then(c.store.watches.add(me.locatorHex, d.targets, d.views, MAX_WATCHES), (watching): HandlerResult => {
        if (watching === undefined) {
          c.metrics.inc('watch_refused_total');
          c.logger.refusal('watch-full', { locatorId: me.locatorHex, asked: ids.length });
          return { error: ErrorCode.FULL, message: `at most ${MAX_WATCHES} IDs watched` };
        }
        const body = { entries: page.entries, watching };
        return ctx.reply('WATCH_ACK', page.next === undefined ? body : { ...body, nextCursor: page.next });
      });
    });
  });
}

export function unwatch(c: LocatorContext, ctx: RequestContext<'UNWATCH'>): MaybePromise<HandlerResult> {
  const me = ctx.session!;
  const b = ctx.msg.body;
  return then(c.store.watches.remove(me.locatorHex, b.all === true ? 'all' : b.ids.map(hexOf)), (watching) => ctx.reply('UNWATCH_ACK', { watching }));
}

/** What a PRESENCE_SET did; an identity conflict carries the newer registration (the rare case allocates). */
type SetOutcome = 'none' | 'stale' | 'set' | { conflict: Presence };

export function presenceSet(c: LocatorContext, ctx: RequestContext<'PRESENCE_SET'>): MaybePromise<HandlerResult> {
  const s = ctx.session!;
  const seq = ctx.msg.auth!.seq;
  const r = ctx.msg.body.presence;
  const out = c.store.updatePresence<SetOutcome>(s.locatorHex, (cur) => {
    if (!cur) return { result: 'none' };
    const standing = standingOf(cur, seq, ctx);
    if (standing === 'conflict') return { result: { conflict: cur } };
    if (standing === 'stale') return { result: 'stale' };
    return { result: 'set', put: { ...cur, seq, extra: withPresence(cur.extra, r) } };
  }, s);
  return then(out, (o): HandlerResult => {
    if (o === 'none') return { error: ErrorCode.NOT_FOUND, message: 'not registered: send REGISTER' };
    if (typeof o !== 'string') return identityConflict(c, ctx, o.conflict);
    // By outcome through Metrics' lookup: no label key built per PRESENCE_SET.
    c.metrics.seriesBy('presence_sets_total', 'result')(o).inc();
    if (o === 'set') notifyWatchers(c, s.locatorHex);
    return ctx.reply('PRESENCE_SET_ACK', {});
  });
}

/** The watcher's receipt of a PRESENCE: ends the push; nothing is sent back. */
export function presenceAck(c: LocatorContext, ctx: RequestContext<'PRESENCE_ACK'>): HandlerResult {
  c.presencePushes.ack(ctx.session!, ctx.msg.body.id, ctx.msg.rid);
  return null;
}
