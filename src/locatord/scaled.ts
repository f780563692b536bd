// devloc-locatord on a shared store (--store redis): the same UDP server, sessions and reflector
// as server.ts, with the handlers of store/handlers.ts over the Redis store, so that several
// instances (processes, hosts, or --workers on one host) serve one registration table.
// Differences from the embedded mode, each documented in devloc-locatord(8):
//   - Redis expires registrations itself (PX); each instance keeps, in memory, only the probe
//     schedule of the registrations it wrote last (a RegistrationTable used as a schedule: the
//     terminal spoke to this instance last, so its NAT mapping points here), checks a due
//     record against Redis (not renewed elsewhere) and sends the PROBE;
//   - no snapshot: the state is in Redis (a Redis without persistence loses registrations on
//     restart; terminals re-register on NOT_FOUND / NO_SESSION);
//   - sessions are shared (keys sealed in Redis), replay windows are not (per instance);
//   - INTRODUCE whose target last spoke to another instance is relayed to it (store/relay.ts).
import type { KeyObject } from 'node:crypto';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Logger } from '../common/log.js';
import { Metrics } from '../common/metrics.js';
import { RateLimiter } from '../net/ratelimit.js';
import { bindUdp, DatagramServer } from '../net/server.js';
import { ServerSessions } from '../net/sessions.js';
import { REQUEST_ID_BYTES } from '../wire/constants.js';
import { TicketVerifier } from '../wire/ticket.js';
import type { LocatorContext } from './context.js';
import { GroupStore } from './groups.js';
import type { LocatordLimits, LocatordOptions, RedisStoreConfig } from './options.js';
import { checkLimits } from './options.js';
import { Reflector } from './reflector.js';
import type { Locatord, SweepResult } from './server.js';
import type { KeyedSession } from './snapshot.js';
import { deriveFromServiceKey, sessionSealKey } from './store/codec.js';
import { fromStoredSession, mirrorPresence } from './store/embedded.js';
import type { StoreContext } from './store/handlers.js';
import { deliverRelayed, storeHandlers, storeIntroTarget } from './store/handlers.js';
import { IntroRelay } from './store/relay.js';
import { Introductions } from './handlers/introduce.js';
import { parseRedisUrl } from './store/redis-client.js';
import { RedisStore } from './store/redis.js';
import { RegistrationTable } from './table.js';

/** A locatord on the shared store; probeSweep is sweep's asynchronous form (tests). */
export type ScaledLocatord = Locatord & { store: RedisStore; instanceId: string; probeSweep: () => Promise<SweepResult> };

export async function startScaledLocatord(o: LocatordOptions & { store: RedisStoreConfig }, logger = new Logger({ service: 'locatord' }), metrics = new Metrics()): Promise<Locatord> {
  const problem = checkLimits(o.limits);
  if (problem) throw new Error(problem);
  const now = o.now ?? Date.now;
  let limits = { ...o.limits };
  const url = parseRedisUrl(o.store.url);
  // Names this process in the presence records it writes (probes, introductions).
  const instanceId = randomBytes(8).toString('hex');
  const prefix = o.store.prefix || 'dl:';
  const store = new RedisStore({
    ...url, ...(o.store.tlsCaFile ? { tlsCa: readFileSync(o.store.tlsCaFile) } : {}), instanceId, sessionSealKey: sessionSealKey(o.serviceSecret), timeoutMs: o.store.timeoutMs, maxPending: o.store.maxPending, ...(o.store.prefix ? { prefix: o.store.prefix } : {}),
    limits: { maxMembers: limits.maxGroupMembers, maxGroupsPerTerminal: limits.maxGroupsPerTerminal },
    sessionGraceMs: o.clockSkewS * 1000, now,
    onState: (state, detail) => {
      if (state === 'down') logger.error('redis connection lost', { detail });
      else logger.info('redis connection restored', { detail });
    },
  });
  const verifier = new TicketVerifier({ keys: o.trustedKeys, audience: o.audience, clockSkewS: o.clockSkewS, now: () => Math.floor(now() / 1000) });
  const sessions = new ServerSessions({
    verifier, serviceSecret: o.serviceSecret, maxSessions: o.maxSessions, now, freshnessMs: o.freshnessMs,
    remote: async (sidHex) => {
      const s = await store.loadSession(sidHex);
      // A session vouched for by a key we no longer trust (SIGHUP) is not served here either.
      if (!s || (s.kid !== undefined && !verifier.keys.has(s.kid)) || s.aud !== o.audience) return undefined;
      return fromStoredSession(s);
    },
  });
  metrics.counter('redis_errors_total', 'Requests refused because Redis was unavailable, slow, or our queue to it full');
  // The probe schedule: the registrations this instance wrote last (see the top of the file).
  const schedule = new RegistrationTable({ maxEntries: o.maxEntries, now, probeAtPercent: limits.probeAtPercent });
  const c: StoreContext = {
    store, limits, metrics, logger, now, instanceId,
    onPresence: (idHex, p, session) => {
      if (p) mirrorPresence(schedule, idHex, p, session);
      else schedule.delete(idHex);
    },
    queryLimiter: new RateLimiter({ ratePerS: limits.queryRatePerS, burst: limits.queryBurst, maxSources: 262_144 }),
    querySourceLimiter: new RateLimiter({ ratePerS: limits.querySourceRatePerS, burst: limits.querySourceBurst }),
  };
  for (const [name, help] of [
    ['registrations_total', 'REGISTERs accepted'], ['refreshes_total', 'REFRESHes accepted'], ['unregistrations_total', 'UNREGISTERs that removed a registration'],
    ['stale_updates_total', 'Authenticated updates older than the registration (changed nothing), by type'], ['sessions_opened_total', 'Sessions opened by a REGISTER with a ticket'],
    ['queries_total', 'Queries answered, by type and result'], ['query_ids_total', 'Locator IDs looked up, by query type and answer'],
    ['probe_acks_total', 'Probe answers that extended a registration'], ['group_changes_total', 'Group changes committed, by operation'],
    ['probes_sent_total', 'Liveness probes sent'],
  ] as const) metrics.counter(name, help);
  const rateLimiter = new RateLimiter({ ratePerS: limits.ratePerS, burst: limits.burst });
  let socket: Awaited<ReturnType<typeof bindUdp>> | undefined;
  let reflector: Reflector | null = null;
  try {
    socket = await bindUdp({ host: o.listen, port: o.port, ...(o.receiveBufferBytes ? { receiveBufferBytes: o.receiveBufferBytes } : {}) });
    if (o.reflector) {
      reflector = await Reflector.start({
        host: o.listen, port: o.reflector.port, altPort: o.reflector.altPort, ...(o.reflector.altIp ? { altIp: o.reflector.altIp } : {}),
        ratePerS: limits.reflectorRatePerS, burst: limits.reflectorBurst, receiveBufferBytes: o.receiveBufferBytes, logger, metrics,
      });
    }
  } catch (err) {
    socket?.close();
    await reflector?.close();
    await store.close();
    throw err;
  }
  // INTRODUCE: pushed over the target's session, so only between terminals whose sessions this
  // instance holds (store/handlers.ts introduceHere); each INTRO copy re-reads the target in Redis.
  const introductions = new Introductions({ target: storeIntroTarget(store), sessions, send: (bytes, to) => server.send(bytes, to), metrics, logger });
  c.sessions = sessions;
  c.introductions = introductions;
  const relay = new IntroRelay({
    client: store.client, prefix, instanceId, key: deriveFromServiceKey(o.serviceSecret, 'devloc locatord relay v1'),
    subscriber: { nodes: url.nodes, ...(url.password !== undefined ? { password: url.password } : {}), ...(url.username ? { username: url.username } : {}) },
    timeoutMs: o.store.timeoutMs, deliver: deliverRelayed(sessions, introductions), metrics, logger, now,
  });
  c.relay = relay;
  const server: DatagramServer = new DatagramServer({ service: 'locatord', socket, logger, metrics, sessions, rateLimiter, handlers: storeHandlers(c) });
  metrics.gauge('sessions', 'Open sessions (held by this instance)', () => sessions.size);
  metrics.gauge('ticket_signature_checks', 'Ticket signatures verified since start (one per distinct ticket)', () => verifier.signatureChecks);
  metrics.gauge('redis_pending', 'Commands queued for or awaiting Redis', () => store.pending);
  // Started before "listening": an introduction relayed to us right away must find us subscribed.
  await Promise.race([relay.ready, new Promise((r) => setTimeout(r, o.store.timeoutMs).unref())]);
  const port = socket.address().port;
  logger.info('listening', {
    port, reflectorPort: reflector?.port ?? 0, reflectorAltPort: reflector?.altPort ?? 0, store: 'redis', instance: instanceId,
    redis: url.nodes.map((n) => `${n.host}:${n.port}`).join(','), cluster: url.cluster,
  });

  /**
   * Probe the registrations of this instance's schedule that are due, after checking in Redis
   * that each is still ours and not renewed elsewhere (then it leaves our schedule).
   */
  const probeSweep = async (): Promise<SweepResult> => {
    const { expired, probes: due } = schedule.sweep(limits.maxProbesPerSweep);
    if (due.length === 0) return { expired, probes: 0 };
    const current = await store.getPresences(due.map((r) => r.key));
    let probes = 0;
    due.forEach((local, i) => {
      const p = current[i];
      const s = local.session;
      if (!p || !s || p.sidHex !== s.sidHex || p.inst !== instanceId) {
        schedule.delete(local.key);
        return;
      }
      // A session that ended (ticket expired, key distrusted) cannot MAC a probe; let it expire.
      if (sessions.get(s.sidHex) !== s) return;
      server.send(sessions.encode(s, 'PROBE', randomBytes(REQUEST_ID_BYTES), {}), p.addr);
      probes++;
    });
    metrics.inc('probes_sent_total', undefined, probes);
    return { expired, probes };
  };
  const sweepTimer = setInterval(() => {
    probeSweep().catch((err: unknown) => logger.refusal('redis-error', { err: (err as Error).message, during: 'probe sweep' }));
  }, o.sweepIntervalMs);
  sweepTimer.unref();

  // Present for the Locatord shape only: in this mode the state is in Redis (store).
  const table = new RegistrationTable({ maxEntries: 1, now });
  const groups = new GroupStore(':memory:', { maxMembers: limits.maxGroupMembers, maxGroupsPerTerminal: limits.maxGroupsPerTerminal });
  const context: LocatorContext = { table, groups, sessions, limits, metrics, logger, queryLimiter: c.queryLimiter, querySourceLimiter: c.querySourceLimiter };
  let stopped = false;
  return {
    port,
    reflectorPort: reflector?.port ?? 0,
    reflectorAltPort: reflector?.altPort ?? 0,
    context, table, groups, sessions, verifier, metrics, server, reflector, introductions,
    store, instanceId,
    // Asynchronous here (Redis is asked before probing): the timer and tests use probeSweep.
    sweep: () => {
      void probeSweep().catch(() => {});
      return { expired: 0, probes: 0 };
    },
    probeSweep,
    reload(change: { limits?: LocatordLimits; trustedKeys?: Map<string, KeyObject> }) {
      if (change.limits) {
        const p = checkLimits(change.limits);
        if (p) throw new Error(p);
        limits = { ...change.limits };
        c.limits = limits;
        context.limits = limits;
        store.limits = { maxMembers: limits.maxGroupMembers, maxGroupsPerTerminal: limits.maxGroupsPerTerminal };
        schedule.probeAtPercent = limits.probeAtPercent;
        rateLimiter.setRate(limits.ratePerS, limits.burst);
        c.queryLimiter.setRate(limits.queryRatePerS, limits.queryBurst);
        c.querySourceLimiter.setRate(limits.querySourceRatePerS, limits.querySourceBurst);
        reflector?.setRate(limits.reflectorRatePerS, limits.reflectorBurst);
      }
      if (change.trustedKeys) {
        const keys = change.trustedKeys;
        verifier.setKeys(keys);
        const dropped = sessions.dropWhere((s: KeyedSession) => s.kid !== undefined && !keys.has(s.kid));
        logger.info('trusted keys reloaded', { kids: [...keys.keys()], sessionsDropped: dropped });
      }
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      clearInterval(sweepTimer);
      relay.close();
      introductions.close();
      await server.close();
      await reflector?.close();
      await store.close();
      groups.close();
    },
  } as ScaledLocatord;
}
