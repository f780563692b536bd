// The Redis store as one locatord instance serves it (--store redis): the shared state
// (store/redis.ts) and what this instance does beside reading and writing it, so that the daemon
// has one startup path (server.ts) and one set of handlers for both stores:
//   - the probe schedule: Redis expires registrations itself (PX); each instance keeps, in
//     memory, only the schedule of the registrations it wrote last (a RegistrationTable used as
//     a schedule: the terminal spoke to this instance last, so its NAT mapping points here),
//     checks a due record against Redis (not renewed elsewhere) and hands it out to probe;
//   - the relay of introductions between instances (store/relay.ts): an INTRO leaves from the
//     instance the target last spoke to;
//   - SIGHUP clean-up: the registrations this instance wrote last whose session's key is no
//     longer trusted are removed from Redis (compare-and-set: only if still that session's);
//   - sessions are shared (keys sealed in Redis), and so are their replay windows (claimSeq:
//     a datagram replayed to another instance or worker is refused there too);
//   - records that fail authentication (forged or altered by a Redis writer) are absent, counted
//     and logged.
// No snapshot: the state is in Redis (a Redis without persistence loses registrations on
// restart; terminals re-register on NOT_FOUND / NO_SESSION). devloc-locatord(8) documents each.
import type { KeyObject } from 'node:crypto';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Logger } from '../../common/log.js';
import type { Metrics } from '../../common/metrics.js';
import type { ClaimVerdict, DeferredClaim, ServerSession, ServerSessions, SharedReplayWindow, WindowOwner } from '../../net/sessions.js';
import { decodeDatagram } from '../../wire/envelope.js';
import type { Introductions } from '../handlers/introduce.js';
import type { PresencePushes } from '../handlers/watch.js';
import type { LocatordLimits, RedisStoreConfig } from '../options.js';
import type { KeyedSession } from '../snapshot.js';
import { RegistrationTable } from '../table.js';
import { deriveFromServiceKey, recordKey, sessionSealKey } from './codec.js';
import { fromStoredSession, mirrorPresence, toStoredSession } from './embedded.js';
import type { MaybePromise } from './maybe.js';
import { RedisStore } from './redis.js';
import type { RelayResult } from './relay.js';
import { IntroRelay } from './relay.js';
import { parseRedisUrl } from './redis-url.js';
import type { DueProbe, GroupBackend, Presence, PresenceChange, Refused, SearchBackend, ServedStore, StoredSession, WatchBackend } from './types.js';

/** Media IDs of the search index each sweep looks at, and expired entries it removes from each (RedisSearch.trim). */
const SEARCH_TRIM_MEDIA = 16;
const SEARCH_TRIM_PER_MEDIA = 256;
/**
 * Presence values remembered so that an update skips its GET (RedisStore.lastValue): ~200 B of
 * locatord memory each, so at most this many (~25 MiB); a terminal beyond costs the GET.
 */
const PRESENCE_CACHE_ENTRIES = 131_072;

export interface SharedStoreOptions {
  config: RedisStoreConfig;
  serviceSecret: KeyObject;
  limits: LocatordLimits;
  /** Added to session lifetimes (ticket clock skew), ms. */
  sessionGraceMs: number;
  maxEntries: number;
  /** At this instance: push an INTRO another instance built (see `deliverRelayed`). */
  deliver: (targetHex: string, intro: Buffer) => Promise<RelayResult>;
  /** A registration this instance wrote last expired in its schedule (it may live on in Redis: check). */
  onGone?: (idHex: string) => void;
  metrics: Metrics;
  logger: Logger;
  now?: () => number;
}

export class SharedStore implements ServedStore, SharedReplayWindow {
  readonly kind = 'redis' as const;
  /** Names this process in the presence records it writes (probes, introductions). */
  readonly instanceId = randomBytes(8).toString('hex');
  readonly redis: RedisStore;
  readonly relay: IntroRelay;
  /** The registrations this instance wrote last: its probe schedule (see the top of the file). */
  readonly schedule: RegistrationTable;
  /** Seed nodes and mode, for the "listening" line. */
  readonly where: { redis: string; cluster: boolean };
  /**
   * RedisStore's groups, with REGISTER's joins all or nothing as on the embedded store (one
   * SQLite transaction there): Redis applies them one by one, so when one is refused (wrong
   * code, full) the joins this call made before it are undone (REGISTER creates no group).
   */
  readonly groups: GroupBackend;
  readonly watches: WatchBackend;
  readonly search: SearchBackend;
  private readonly ready: Promise<void>;
  private readonly metrics: Metrics;
  private readonly logger: Logger;
  /** A trim of the search index is under way (one at a time). */
  private trimming = false;

  constructor(o: SharedStoreOptions) {
    this.metrics = o.metrics;
    this.logger = o.logger;
    const url = parseRedisUrl(o.config.url);
    const now = o.now ?? Date.now;
    const l = o.limits;
    this.redis = new RedisStore({
      ...url, ...(o.config.tlsCaFile ? { tlsCa: readFileSync(o.config.tlsCaFile) } : {}), instanceId: this.instanceId, presenceCacheEntries: Math.min(o.maxEntries, PRESENCE_CACHE_ENTRIES), sessionSealKey: sessionSealKey(o.serviceSecret), recordKey: recordKey(o.serviceSecret),
      onRejected: (kind, key) => {
        o.metrics.inc('redis_records_rejected_total', { kind });
        o.logger.refusal('redis-record-rejected', { kind, key, reason: 'does not verify under the service key: forged, altered, or written with another key' });
      },
      timeoutMs: o.config.timeoutMs, maxPending: o.config.maxPending,
      ...(o.config.prefix ? { prefix: o.config.prefix } : {}),
      limits: { maxMembers: l.maxGroupMembers, maxGroupsPerTerminal: l.maxGroupsPerTerminal },
      sessionGraceMs: o.sessionGraceMs, now,
      onState: (state, detail) => {
        if (state === 'down') o.logger.error('redis connection lost', { detail });
        else o.logger.info('redis connection restored', { detail });
      },
    });
    const g = this.redis.groups;
    this.groups = {
      ...bindAll(g),
      joinAll: async (locatorId, joins) => {
        const before = await Promise.all(joins.map((j) => g.isMember(Buffer.from(j.groupId), locatorId)));
        try {
          return await g.joinAll(locatorId, joins);
        } catch (err) {
          await Promise.all(joins.map((j, i) => (before[i] ? false : g.leave(Buffer.from(j.groupId), locatorId))));
          throw err;
        }
      },
    };
    this.watches = this.redis.watches;
    this.search = this.redis.search;
    this.schedule = new RegistrationTable({ maxEntries: o.maxEntries, now, probeAtPercent: l.probeAtPercent, ...(o.onGone ? { onGone: o.onGone } : {}) });
    this.relay = new IntroRelay({
      client: this.redis.client, prefix: o.config.prefix || 'dl:', instanceId: this.instanceId, key: deriveFromServiceKey(o.serviceSecret, 'devloc locatord relay v1'),
      timeoutMs: o.config.timeoutMs, deliver: o.deliver, metrics: o.metrics, logger: o.logger, now,
    });
    // Subscribed before "listening": an introduction relayed to us right away must find us.
    this.ready = Promise.race([this.relay.ready, new Promise<void>((r) => setTimeout(r, o.config.timeoutMs).unref())]);
    this.where = { redis: url.nodes.map((n) => `${n.host}:${n.port}`).join(','), cluster: url.cluster };
    o.metrics.counter('redis_records_rejected_total', 'Redis records that failed authentication (forged or altered) and were treated as absent, by kind');
    o.metrics.counter('redis_errors_total', 'Requests refused because Redis was unavailable, slow, or our queue to it full');
    o.metrics.counter('search_index_trimmed_total', 'Partner-search index entries of expired registrations removed by the sweep (Redis)');
    o.metrics.gauge('redis_pending', 'Commands queued for or awaiting Redis', () => this.redis.pending);
  }

  /** Resolves once the relay is subscribed (or after the Redis timeout: then without it). */
  started(): Promise<void> {
    return this.ready;
  }

  get pending(): number {
    return this.redis.pending;
  }

  getPresence(idHex: string): Promise<Presence | undefined> {
    return this.redis.getPresence(idHex);
  }

  getPresences(idHexes: readonly string[]): Promise<(Presence | undefined)[]> {
    return this.redis.getPresences(idHexes);
  }

  putPresence(idHex: string, p: Presence): Promise<void> {
    return this.redis.putPresence(idHex, p);
  }

  deletePresence(idHex: string): Promise<boolean> {
    return this.redis.deletePresence(idHex);
  }

  /** As RedisStore's, and the record written (or removed) is filed in (or leaves) the schedule. */
  async updatePresence<T>(idHex: string, change: (cur: Presence | undefined) => PresenceChange<T>, session?: ServerSession, claim?: DeferredClaim): Promise<T> {
    let last: PresenceChange<T> | undefined;
    const result = await this.redis.updatePresence(idHex, (cur) => (last = change(cur)), session, claim);
    if (last?.remove) this.schedule.delete(idHex);
    else if (last?.put) mirrorPresence(this.schedule, idHex, last.put, session);
    return result;
  }

  refuse(idHex: string, r: Refused): Promise<void> {
    return this.redis.refuse(idHex, r);
  }

  refusal(idHex: string): Promise<Refused | undefined> {
    return this.redis.refusal(idHex);
  }

  saveSession(s: StoredSession): Promise<void> {
    return this.redis.saveSession(s);
  }

  loadSession(sidHex: string): Promise<StoredSession | undefined> {
    return this.redis.loadSession(sidHex);
  }

  /** The shared replay window (ServerSessions' sharedWindow): store/redis.ts CLAIM_SEQ. */
  claim(s: WindowOwner, seq: number, ttlMs: number, source: string): Promise<ClaimVerdict> {
    return this.redis.claimSeq(s, seq, ttlMs, source);
  }

  release(s: WindowOwner, seq: number): Promise<void> {
    return this.redis.releaseSeq(s, seq);
  }

  shareSession(s: KeyedSession): Promise<void> {
    return this.redis.saveSession(toStoredSession(s));
  }

  /**
   * The registrations of the schedule that are due, after checking in Redis that each is still
   * ours and not renewed elsewhere (otherwise it leaves the schedule).
   */
  async sweep(maxProbes: number): Promise<{ expired: number; due: DueProbe[] }> {
    this.trimSearch();
    const { expired, probes } = this.schedule.sweep(maxProbes);
    if (probes.length === 0) return { expired, due: [] };
    // Keys and sessions read now: a view of the schedule is void once its slot is reused.
    const keys = probes.map((r) => r.key);
    const sessions = probes.map((r) => r.session);
    const current = await this.redis.getPresences(keys);
    const due: DueProbe[] = [];
    keys.forEach((key, i) => {
      const p = current[i];
      const s = sessions[i];
      if (!p || !s || p.sidHex !== s.sidHex || p.inst !== this.instanceId) this.schedule.delete(key);
      else due.push({ session: s, addr: p.addr });
    });
    return { expired, due };
  }

  /**
   * The partner-search index loses the registrations that expired in Redis (redis.ts RedisSearch
   * trim), a few media IDs per sweep, whether or not anyone searches or registers under them
   * again: its memory follows the live records. Beside the probes: a failure is logged, not theirs.
   */
  private trimSearch(): void {
    if (this.trimming) return;
    this.trimming = true;
    this.redis.search.trim(SEARCH_TRIM_MEDIA, SEARCH_TRIM_PER_MEDIA).then(
      (n) => this.metrics.inc('search_index_trimmed_total', undefined, n),
      (err: unknown) => this.logger.refusal('redis-error', { err: (err as Error).message, during: 'search index trim' }),
    ).finally(() => (this.trimming = false));
  }

  /**
   * Remove from Redis the registrations this instance wrote last whose session `drop` names
   * (each instance does so for its own on SIGHUP), unless another session wrote it since.
   */
  async removeWhere(drop: (s: ServerSession) => boolean): Promise<number> {
    const gone: [string, string][] = [];
    for (const [id, rec] of this.schedule.entries()) if (rec.session && drop(rec.session)) gone.push([id, rec.session.sidHex]);
    const removed = await Promise.all(gone.map(([id, sidHex]) => this.updatePresence(id, (cur) => (cur && cur.sidHex === sidHex ? { result: true, remove: true } : { result: false }))));
    for (const [id] of gone) this.schedule.delete(id);
    return removed.filter(Boolean).length;
  }

  relayIntro(owner: string, targetHex: string, intro: Buffer): Promise<RelayResult> {
    return this.relay.request(owner, targetHex, intro);
  }

  setLimits(l: LocatordLimits): void {
    this.redis.limits = { maxMembers: l.maxGroupMembers, maxGroupsPerTerminal: l.maxGroupsPerTerminal };
    this.schedule.probeAtPercent = l.probeAtPercent;
  }

  close(): MaybePromise<void> {
    this.relay.close();
    return this.redis.close();
  }
}

function bindAll(g: GroupBackend): GroupBackend {
  return {
    create: (o, n, c) => g.create(o, n, c), join: (gid, l, c) => g.join(gid, l, c), joinAll: (l, j) => g.joinAll(l, j),
    leave: (gid, l) => g.leave(gid, l), get: (gid) => g.get(gid), isMember: (gid, l) => g.isMember(gid, l),
    members: (gid, o, n) => g.members(gid, o, n), shareGroup: (a, b) => g.shareGroup(a, b),
    joinFailures: (gid, l) => g.joinFailures(gid, l), noteJoinFailure: (gid, l) => g.noteJoinFailure(gid, l),
  };
}

/**
 * A session another instance opened, as this instance may serve it: not one vouched for by a key
 * no longer trusted (SIGHUP), nor one for another audience. For ServerSessions' `remote`.
 */
export function remoteSessions(store: Pick<ServedStore, 'loadSession'>, trusted: () => ReadonlyMap<string, unknown>, audience: string): (sidHex: string) => Promise<ServerSession | undefined> {
  return async (sidHex) => {
    const s = await store.loadSession(sidHex);
    if (!s || (s.kid !== undefined && !trusted().has(s.kid)) || s.aud !== audience) return undefined;
    return fromStoredSession(s);
  };
}

/**
 * The relay's `deliver` (store/relay.ts): push an INTRO (or a PRESENCE, handlers/watch.ts)
 * another instance built for a target whose session this instance serves (loaded from Redis if
 * need be).
 */
export function deliverRelayed(sessions: ServerSessions, intros: () => Introductions, presence?: () => PresencePushes): (targetHex: string, intro: Buffer) => Promise<RelayResult> {
  return async (targetHex, bytes) => {
    const d = decodeDatagram(bytes);
    if (!d.ok || (d.msg.name !== 'INTRO' && d.msg.name !== 'PRESENCE') || !d.msg.auth) return 'gone';
    const sidHex = Buffer.from(d.msg.auth.sid).toString('hex');
    if (!sessions.get(sidHex)) await sessions.fetch(sidHex);
    const session = sessions.get(sidHex);
    if (!session || session.locatorHex !== targetHex) return 'gone';
    if (d.msg.name === 'PRESENCE') {
      if (!presence) return 'gone';
      presence().push(targetHex, session, d.msg.body);
      return 'ok';
    }
    if (intros().admit(targetHex)) return 'busy';
    intros().push(targetHex, session, d.msg.body);
    return 'ok';
  };
}
