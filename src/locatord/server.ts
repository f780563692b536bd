// devloc-locatord wired together, for both stores (store/types.ts): ticket verifier and
// sessions, the store (embedded: registration table + SQLite groups; redis: shared by several
// instances, with the relay and probe schedule of store/shared.ts), the UDP server with one
// handler per message (handlers/index.ts), the NAT reflector, the periodic sweep (expiry and
// liveness probes), and, embedded only, the snapshot of soft state across a clean restart
// (Redis keeps the state itself).
import type { KeyObject } from 'node:crypto';
import { mkdirSync, renameSync } from 'node:fs';
import path from 'node:path';
import { Logger } from '../common/log.js';
import { Metrics } from '../common/metrics.js';
import { RateLimiter } from '../net/ratelimit.js';
import { AddressValidation, tokenKeyFrom } from '../net/routability.js';
import { bindUdp, DatagramServer } from '../net/server.js';
import type { SharedRefusals } from '../net/ended.js';
import { EndedSessions, gateHandlers } from '../net/ended.js';
import { ServerSessions } from '../net/sessions.js';
import { pooledRid } from '../net/push.js';
import { TicketVerifier } from '../wire/ticket.js';
import type { LocatorContext } from './context.js';
import { GroupStore } from './groups.js';
import { locatorHandlers, storeFailure } from './handlers/index.js';
import { Introductions, introTarget } from './handlers/introduce.js';
import { PresencePushes, presenceGone } from './handlers/watch.js';
import type { LocatordLimits, LocatordOptions } from './options.js';
import { checkLimits } from './options.js';
import { Reflector } from './reflector.js';
import type { KeyedSession } from './snapshot.js';
import { discardSnapshot, restoreSnapshot, saveSnapshot, SNAPSHOT_FILE } from './snapshot.js';
import { EmbeddedStore } from './store/embedded.js';
import type { MaybePromise } from './store/maybe.js';
import { then } from './store/maybe.js';
import type { SharedStore } from './store/shared.js';
import type { ServedStore } from './store/types.js';
import type { ErrorCode as ErrorCodeT } from '../wire/errors.js';
import type { MessageName } from '../wire/catalog.js';
import { RegistrationTable } from './table.js';

/**
 * The messages whose shared replay window claim (--store redis) goes into the presence write
 * (one Redis script, CLAIM_AND_CAS in store/redis.ts): their handlers do nothing before it but
 * read (REGISTER also shares its session, which a copy of it writes again the same; and takes
 * the claim alone before joining groups).
 */
const CLAIM_IN_HANDLER: ReadonlySet<MessageName> = new Set<MessageName>(['REGISTER', 'REFRESH', 'PROBE_ACK']);

export const DB_FILE = 'locatord.db';

export interface SweepResult {
  expired: number;
  probes: number;
}

export interface Locatord {
  readonly port: number;
  /** Reflector ports; 0 when there is no reflector. */
  readonly reflectorPort: number;
  readonly reflectorAltPort: number;
  /** Where the state is: EmbeddedStore (its `table`, `groupStore`) or SharedStore (Redis). */
  readonly store: ServedStore;
  readonly sessions: ServerSessions;
  readonly verifier: TicketVerifier;
  readonly metrics: Metrics;
  readonly server: DatagramServer;
  readonly reflector: Reflector | null;
  /** INTRO pushes waiting for their INTRO_ACK (handlers/introduce.ts). */
  readonly introductions: Introductions;
  /** PRESENCE pushes waiting for their ack (handlers/watch.ts). */
  readonly presencePushes: PresencePushes;
  /** Sessions ended before their ticket expired (kick): answered with the reason (net/ended.ts). */
  readonly ended: EndedSessions;
  /** Limits in force (changed by reload). */
  readonly limits: LocatordLimits;
  /**
   * Free expired records and probe those near expiry (also run every sweep interval).
   * Synchronous on the embedded store; on Redis a promise (due records are checked there first).
   */
  sweep(): MaybePromise<SweepResult>;
  /**
   * Apply new limits and/or trusted keys (SIGHUP). Sessions of keys no longer trusted end, and
   * their registrations are removed (on Redis: those this instance wrote last); settles once done.
   */
  reload(change: { limits?: LocatordLimits; trustedKeys?: Map<string, KeyObject> }): MaybePromise<void>;
  /** Stop serving; write the snapshot (embedded) unless told not to (or the options disabled it). */
  stop(o?: { snapshot?: boolean }): Promise<void>;
  /** A registration was removed by someone else than its terminal (devloc ctl kick): its watchers are told, as after an expiry. */
  removed(idHex: string): void;
}

/** Start a locator server (in-process: tests, demo; main.ts for the daemon), on either store. */
export async function startLocatord(o: LocatordOptions, logger = new Logger({ service: 'locatord' }), metrics = new Metrics()): Promise<Locatord> {
  const problem = checkLimits(o.limits);
  if (problem) throw new Error(problem);
  const now = o.now ?? Date.now;
  let limits = { ...o.limits };
  const verifier = new TicketVerifier({ keys: o.trustedKeys, audience: o.audience, clockSkewS: o.clockSkewS, now: () => Math.floor(now() / 1000) });
  declareMetrics(metrics);
  // Both late-bound: the relay (Redis) delivers INTROs through this instance's Introductions,
  // which send through the server, which is made last.
  let introductions: Introductions | undefined;
  let presencePushes: PresencePushes | undefined;
  // Registrations gone by themselves (expiry, eviction) or removed by someone else than their
  // terminal (kick, REVOKE, SIGHUP), told to their watchers in one batch after the operation that
  // noticed (the table calls this from inside its own operations).
  let context: LocatorContext | undefined;
  const goneBatch = new Set<string>();
  const onGone = (idHex: string): void => {
    if (goneBatch.size === 0) setImmediate(() => {
      const keys = [...goneBatch];
      goneBatch.clear();
      if (context) for (const k of keys) presenceGone(context, k);
    });
    goneBatch.add(idHex);
  };
  let store: ServedStore;
  let sessions: ServerSessions;
  // Soft state from a clean stop (embedded), restored before the first datagram is served (and
  // logged after "listening"); the file is deleted only once the sockets are bound.
  const notes: (() => void)[] = [];
  let restored = false;
  const useSnapshot = o.store?.kind !== 'redis' && (o.snapshot ?? true);
  let shared: SharedStore | undefined;
  if (o.store?.kind === 'redis') {
    // Loaded only here: the Redis client (ioredis) costs an embedded daemon ~26 MiB of RSS.
    const { deliverRelayed, remoteSessions, SharedStore } = await import('./store/shared.js');
    shared = new SharedStore({
      config: o.store, serviceSecret: o.serviceSecret, limits, sessionGraceMs: o.clockSkewS * 1000, maxEntries: o.maxEntries,
      deliver: (targetHex, intro) => deliverRelayed(sessions, () => introductions!, () => presencePushes!)(targetHex, intro), metrics, logger, now,
      onGone,
    });
    store = shared;
    // Sessions opened by another instance are loaded from Redis.
    sessions = new ServerSessions({
      verifier, serviceSecret: o.serviceSecret, maxSessions: o.maxSessions, now, freshnessMs: o.freshnessMs,
      remote: remoteSessions(shared, () => verifier.keys, o.audience),
      // Replay protection across instances and workers: every sequence number is taken in Redis.
      sharedWindow: shared,
    });
  } else {
    sessions = new ServerSessions({ verifier, serviceSecret: o.serviceSecret, maxSessions: o.maxSessions, now, freshnessMs: o.freshnessMs });
    const table = new RegistrationTable({
      maxEntries: o.maxEntries, now, probeAtPercent: limits.probeAtPercent,
      onExpired: (n) => metrics.inc('expiries_total', undefined, n),
      onEvicted: () => metrics.inc('evictions_total'),
      // Only what someone watches, or a watcher, is worth a look (no work per expiry otherwise).
      onGone: (k) => {
        (store as EmbeddedStore).search.set(k, undefined);
        const w = (store as EmbeddedStore).watches;
        if (w.isWatched(k) || w.count(k) > 0) onGone(k);
      },
    });
    mkdirSync(o.stateDir, { recursive: true, mode: 0o700 });
    const groups = new GroupStore(path.join(o.stateDir, DB_FILE), { maxMembers: limits.maxGroupMembers, maxGroupsPerTerminal: limits.maxGroupsPerTerminal }, { now, sync: o.dbSync ?? 'normal' });
    store = new EmbeddedStore(table, sessions, groups);
    metrics.gauge('registrations', 'Registrations in the table (expired ones until swept)', () => table.size);
    if (useSnapshot) {
      const file = path.join(o.stateDir, SNAPSHOT_FILE);
      // A bad snapshot costs soft state only: set it aside, start empty, terminals re-register.
      const setAside = (code: string, reason: string): void => {
        try { renameSync(file, `${file}.corrupt`); } catch { /* nothing to set aside */ }
        notes.push(() => logger.error('snapshot unusable, starting empty', { code, err: reason }));
      };
      try {
        const embedded = store as EmbeddedStore;
        const r = await restoreSnapshot(o.stateDir, { sessions, table, search: embedded.search, watches: embedded.watches }, now());
        if (r?.ok) {
          restored = true;
          const { ok: _ok, ...figures } = r;
          notes.push(() => logger.info('snapshot restored', figures));
        } else if (r) setAside(r.code, r.reason);
      } catch (err) {
        setAside('unreadable', (err as Error).message);
      }
    }
  }

  const rateLimiter = new RateLimiter({ ratePerS: limits.ratePerS, burst: limits.burst });
  let socket: Awaited<ReturnType<typeof bindUdp>> | undefined;
  let reflector: Reflector | null = null;
  try {
    socket = await bindUdp({ host: o.listen, port: o.port, ...(o.receiveBufferBytes ? { receiveBufferBytes: o.receiveBufferBytes } : {}) });
    if (o.reflector) {
      reflector = await Reflector.start({
        host: o.listen, port: o.reflector.port, altPort: o.reflector.altPort,
        ...(o.reflector.altIp ? { altIp: o.reflector.altIp } : {}),
        ratePerS: limits.reflectorRatePerS, burst: limits.reflectorBurst, receiveBufferBytes: o.receiveBufferBytes, logger, metrics,
      });
    }
    if (restored) discardSnapshot(o.stateDir);
  } catch (err) {
    // Nothing served: close what was opened; an unused snapshot stays for the next start.
    socket?.close();
    await reflector?.close();
    await store.close();
    throw err;
  }
  const intros = new Introductions({ target: introTarget(store), sessions, send: (bytes, to) => server.send(bytes, to), metrics, logger });
  introductions = intros;
  const pushes = new PresencePushes({ target: introTarget(store), sessions, send: (bytes, to) => server.send(bytes, to), metrics, logger });
  presencePushes = pushes;
  const ended = new EndedSessions(100_000, now);
  context = {
    store, sessions, introductions: intros, presencePushes: pushes, ended, limits, metrics, logger, now,
    queryLimiter: new RateLimiter({ ratePerS: limits.queryRatePerS, burst: limits.queryBurst, maxSources: 262_144 }),
    querySourceLimiter: new RateLimiter({ ratePerS: limits.querySourceRatePerS, burst: limits.querySourceBurst }),
  };
  const ctx = context;
  const server: DatagramServer = new DatagramServer({ service: 'locatord', socket, logger, metrics, sessions, addressValidation: new AddressValidation({ key: tokenKeyFrom(o.serviceSecret) }), rateLimiter, handlers: locatorHandlers(ctx, (h) => gateHandlers(h, ended, sharedRefusals(store, now))), storeFailure: (err) => storeFailure(ctx, err), claimInHandler: CLAIM_IN_HANDLER });
  metrics.gauge('sessions', store.kind === 'redis' ? 'Open sessions (held by this instance)' : 'Open sessions', () => sessions.size);
  metrics.gauge('ticket_signature_checks', 'Ticket signatures verified since start (one per distinct ticket)', () => verifier.signatureChecks);

  if (shared) await shared.started();
  const port = socket.address().port;
  logger.info('listening', {
    port, reflectorPort: reflector?.port ?? 0, reflectorAltPort: reflector?.altPort ?? 0,
    ...(shared ? { store: 'redis', instance: shared.instanceId, ...shared.where } : {}),
  });
  for (const n of notes) n();

  const sweep = (): MaybePromise<SweepResult> => {
    const started = process.hrtime.bigint();
    return then(store.sweep(limits.maxProbesPerSweep), ({ expired, due }) => {
      let probes = 0;
      for (const { session: s, addr } of due) {
        // A session that ended (ticket expired, key distrusted) cannot MAC a probe; let it expire.
        if (!sessions.live(s)) continue;
        server.send(sessions.encode(s, 'PROBE', pooledRid(), {}), addr);
        probes++;
      }
      metrics.inc('probes_sent_total', undefined, probes);
      metrics.observe('sweep_duration_seconds', 'Time of one sweep of the table', Number(process.hrtime.bigint() - started) / 1e9);
      return { expired, probes };
    });
  };
  const timer = setInterval(() => {
    try {
      const r = sweep();
      if (r instanceof Promise) r.catch((err: unknown) => logger.refusal('redis-error', { err: (err as Error).message, during: 'probe sweep' }));
    } catch (err) {
      logger.error('sweep failed', { err: (err as Error).message });
    }
  }, o.sweepIntervalMs);
  timer.unref();

  let stopped = false;
  return {
    port,
    reflectorPort: reflector?.port ?? 0,
    reflectorAltPort: reflector?.altPort ?? 0,
    store, sessions, verifier, metrics, server, reflector, introductions: intros, presencePushes: pushes, ended,
    get limits() {
      return limits;
    },
    sweep,
    removed: onGone,
    reload(change) {
      if (change.limits) {
        const p = checkLimits(change.limits);
        if (p) throw new Error(p);
        limits = { ...change.limits };
        ctx.limits = limits;
        store.setLimits(limits);
        rateLimiter.setRate(limits.ratePerS, limits.burst);
        ctx.queryLimiter.setRate(limits.queryRatePerS, limits.queryBurst);
        ctx.querySourceLimiter.setRate(limits.querySourceRatePerS, limits.querySourceBurst);
        reflector?.setRate(limits.reflectorRatePerS, limits.reflectorBurst);
      }
      if (!change.trustedKeys) return;
      const keys = change.trustedKeys;
      verifier.setKeys(keys);
      const distrusted = (s: KeyedSession): boolean => s.kid !== undefined && !keys.has(s.kid);
      // Their registrations go too: what an untrusted key vouched for is not served any more.
      // Chosen first (removeWhere picks them before it awaits anything): once dropped, a
      // record's session is a stale handle that no longer tells its kid.
      const candidates: string[] = [];
      const removed = store.removeWhere((s) => {
        if (!distrusted(s as KeyedSession)) return false;
        candidates.push(s.locatorHex);
        return true;
      });
      const sessionsDropped = sessions.dropWhere(distrusted);
      const done = (registrationsRemoved: number): void => {
        // Their watchers are told (presenceGone skips a record another session wrote since).
        for (const k of candidates) onGone(k);
        logger.info('trusted keys reloaded', { kids: [...keys.keys()], sessionsDropped, registrationsRemoved });
      };
      if (!(removed instanceof Promise)) return done(removed);
      return removed.then(done, (err: unknown) => {
        logger.error('trusted keys reloaded; removing their registrations failed', { kids: [...keys.keys()], sessionsDropped, err: (err as Error).message });
      });
    },
    async stop(so = {}) {
      if (stopped) return;
      stopped = true;
      clearInterval(timer);
      intros.close();
      pushes.close();
      await server.close();
      await reflector?.close();
      if (store instanceof EmbeddedStore && (so.snapshot ?? useSnapshot)) {
        // Nothing is served any more, so the state holds still while the write yields to the event loop.
        const r = await saveSnapshot(o.stateDir, sessions, store.table, now(), store.watches);
        logger.info('snapshot written', { file: path.join(o.stateDir, SNAPSHOT_FILE), ...r });
      }
      await store.close();
    },
  };
}

function declareMetrics(m: Metrics): void {
  m.counter('registrations_total', 'REGISTERs accepted');
  m.counter('refreshes_total', 'REFRESHes accepted');
  m.counter('unregistrations_total', 'UNREGISTERs that removed a registration');
  m.counter('stale_updates_total', 'Authenticated updates older than the registration (changed nothing), by type');
  m.counter('sessions_opened_total', 'Sessions opened by a REGISTER with a ticket');
  m.counter('queries_total', 'Queries answered, by type and result');
  m.counter('query_ids_total', 'Locator IDs looked up, by query type and answer');
  m.counter('expiries_total', 'Registrations that expired');
  m.counter('evictions_total', 'Live registrations evicted because the table was full');
  m.counter('probes_sent_total', 'Liveness probes sent');
  m.counter('probe_acks_total', 'Probe answers that extended a registration');
  m.counter('group_changes_total', 'Group changes committed, by operation');
  m.counter('group_join_refusals_total', 'Joins refused for a join proof that did not verify (proof) or over the failed-proof limits (limit)');
  m.counter('kicks_total', 'Terminals kicked by the operator (devloc ctl kick)');
  m.counter('revocations_total', 'REVOKEs from authd applied (repeats included)');
  m.counter('identity_conflicts_total', 'REFRESH, PRESENCE_SET, UNREGISTER and PROBE_ACK messages of a session another terminal with the same identity displaced (cloned identity)');
}

/** How often an instance asks the shared refusal list about a terminal it serves (Redis only). */
export const SHARED_REFUSAL_CHECK_MS = 2000;

/**
 * With --store redis, a REVOKE reaches the instance authd knows; the others see the terminal's
 * refusal in Redis within SHARED_REFUSAL_CHECK_MS of its next message (net/ended.ts).
 */
function sharedRefusals(store: ServedStore, now: () => number): SharedRefusals | undefined {
  if (store.kind !== 'redis') return undefined;
  return {
    intervalMs: SHARED_REFUSAL_CHECK_MS,
    now,
    // A revoked terminal registers again at no instance: its REGISTER asks every time, and is
    // answered TRY_LATER when Redis cannot say (the lookup's failure reaches locatorHandlers'
    // store-failure guard, which sits outside this gate).
    everyTime: new Set(['REGISTER']),
    lookup: async (hex) => {
      const r = await store.refusal(hex);
      return r ? { code: r.code as ErrorCodeT, message: r.message, untilMs: r.untilMs } : undefined;
    },
  };
}
