// devloc-locatord wired together: ticket verifier and sessions, the registration table, the group
// database, the UDP server with one handler per message, the NAT reflector, the periodic sweep
// (expiry and liveness probes), and the snapshot of soft state across a clean restart.
import type { KeyObject } from 'node:crypto';
import { randomBytes } from 'node:crypto';
import { mkdirSync, renameSync } from 'node:fs';
import path from 'node:path';
import { Logger } from '../common/log.js';
import { Metrics } from '../common/metrics.js';
import { RateLimiter } from '../net/ratelimit.js';
import { bindUdp, DatagramServer } from '../net/server.js';
import { ServerSessions } from '../net/sessions.js';
import { REQUEST_ID_BYTES } from '../wire/constants.js';
import { TicketVerifier } from '../wire/ticket.js';
import type { LocatorContext } from './context.js';
import { GroupStore } from './groups.js';
import { groupCreate, groupJoin, groupLeave, groupMembers } from './handlers/groups.js';
import { introAck, introduce, Introductions } from './handlers/introduce.js';
import { queryAddr, queryStatus } from './handlers/query.js';
import { probeAck, refresh, register, unregister } from './handlers/registration.js';
import type { LocatordLimits, LocatordOptions } from './options.js';
import { checkLimits } from './options.js';
import { Reflector } from './reflector.js';
import type { KeyedSession } from './snapshot.js';
import { discardSnapshot, readSnapshot, recordFromLine, saveSnapshot, SNAPSHOT_FILE } from './snapshot.js';
import type { Registration } from './table.js';
import { RegistrationTable } from './table.js';
import { startScaledLocatord } from './scaled.js';

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
  readonly context: LocatorContext;
  readonly table: RegistrationTable;
  readonly groups: GroupStore;
  readonly sessions: ServerSessions;
  readonly verifier: TicketVerifier;
  readonly metrics: Metrics;
  readonly server: DatagramServer;
  readonly reflector: Reflector | null;
  /** INTRO pushes waiting for their INTRO_ACK (handlers/introduce.ts). */
  readonly introductions: Introductions;
  /** Free expired records and probe those near expiry (also run every sweep interval). */
  sweep(): SweepResult;
  /** Apply new limits and/or trusted keys (SIGHUP). Sessions of keys no longer trusted end. */
  reload(change: { limits?: LocatordLimits; trustedKeys?: Map<string, KeyObject> }): void;
  /** Stop serving; write the snapshot unless told not to (or the options disabled it). */
  stop(o?: { snapshot?: boolean }): Promise<void>;
}

/** Start a locator server (in-process: tests, demo; main.ts for the daemon). */
export async function startLocatord(o: LocatordOptions, logger = new Logger({ service: 'locatord' }), metrics = new Metrics()): Promise<Locatord> {
  // Shared state in Redis (several instances): scaled.ts. The embedded path below is unchanged.
  if (o.store?.kind === 'redis') return startScaledLocatord({ ...o, store: o.store }, logger, metrics);
  const problem = checkLimits(o.limits);
  if (problem) throw new Error(problem);
  const now = o.now ?? Date.now;
  const useSnapshot = o.snapshot ?? true;
  let limits = { ...o.limits };
  const verifier = new TicketVerifier({ keys: o.trustedKeys, audience: o.audience, clockSkewS: o.clockSkewS, now: () => Math.floor(now() / 1000) });
  const sessions = new ServerSessions({ verifier, serviceSecret: o.serviceSecret, maxSessions: o.maxSessions, now, freshnessMs: o.freshnessMs });
  declareMetrics(metrics);
  const table = new RegistrationTable({
    maxEntries: o.maxEntries, now, probeAtPercent: limits.probeAtPercent,
    onExpired: (n) => metrics.inc('expiries_total', undefined, n),
    onEvicted: () => metrics.inc('evictions_total'),
  });
  mkdirSync(o.stateDir, { recursive: true, mode: 0o700 });
  const groups = new GroupStore(path.join(o.stateDir, DB_FILE), { maxMembers: limits.maxGroupMembers, maxGroupsPerTerminal: limits.maxGroupsPerTerminal }, { now, sync: o.dbSync ?? 'normal' });

  // Soft state from a clean stop, restored before the first datagram is served (and logged
  // after "listening"); the file is deleted only once the sockets are bound.
  const notes: (() => void)[] = [];
  let restored = false;
  if (useSnapshot) {
    try {
      const snap = await readSnapshot(o.stateDir);
      if (snap) {
        restored = true;
        const bySid = new Map<string, KeyedSession>();
        for (const s of snap.sessions) {
          sessions.restore(s);
          if (sessions.get(s.sidHex) === s) bySid.set(s.sidHex, s);
        }
        const nowMs = now();
        let kept = 0;
        for (const l of snap.records) {
          if (l.expMs <= nowMs) continue;
          table.set(l.id, recordFromLine(l, table, l.sid ? bySid.get(l.sid) : undefined));
          kept++;
        }
        notes.push(() => logger.info('snapshot restored', { savedMs: snap.savedMs, sessions: bySid.size, records: kept, droppedExpired: snap.records.length - kept }));
      }
    } catch (err) {
      // A corrupt snapshot costs soft state only: set it aside, start empty, terminals re-register.
      const file = path.join(o.stateDir, SNAPSHOT_FILE);
      try { renameSync(file, `${file}.corrupt`); } catch { /* nothing to set aside */ }
      notes.push(() => logger.error('snapshot unusable, starting empty', { err: (err as Error).message }));
    }
  }

  const context: LocatorContext = {
    table, groups, sessions, limits, metrics, logger,
    queryLimiter: new RateLimiter({ ratePerS: limits.queryRatePerS, burst: limits.queryBurst, maxSources: 262_144 }),
    querySourceLimiter: new RateLimiter({ ratePerS: limits.querySourceRatePerS, burst: limits.querySourceBurst }),
  };
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
    groups.close();
    throw err;
  }
  const introductions = new Introductions({ table, sessions, send: (bytes, to) => server.send(bytes, to), metrics, logger });
  const server = new DatagramServer({
    service: 'locatord', socket, logger, metrics, sessions, rateLimiter,
    handlers: {
      REGISTER: (ctx) => register(context, ctx),
      REFRESH: (ctx) => refresh(context, ctx),
      UNREGISTER: (ctx) => unregister(context, ctx),
      PROBE_ACK: (ctx) => probeAck(context, ctx),
      QUERY_ADDR: (ctx) => queryAddr(context, ctx),
      QUERY_STATUS: (ctx) => queryStatus(context, ctx),
      GROUP_CREATE: (ctx) => groupCreate(context, ctx),
      GROUP_JOIN: (ctx) => groupJoin(context, ctx),
      GROUP_LEAVE: (ctx) => groupLeave(context, ctx),
      GROUP_MEMBERS: (ctx) => groupMembers(context, ctx),
      INTRODUCE: (ctx) => introduce(context, introductions, ctx),
      INTRO_ACK: (ctx) => introAck(introductions, ctx),
    },
  });
  metrics.gauge('registrations', 'Registrations in the table (expired ones until swept)', () => table.size);
  metrics.gauge('sessions', 'Open sessions', () => sessions.size);
  metrics.gauge('ticket_signature_checks', 'Ticket signatures verified since start (one per distinct ticket)', () => verifier.signatureChecks);

  const port = socket.address().port;
  logger.info('listening', { port, reflectorPort: reflector?.port ?? 0, reflectorAltPort: reflector?.altPort ?? 0 });
  for (const n of notes) n();

  const sendProbe = (rec: Registration): boolean => {
    const s = rec.session;
    // A session that ended (ticket expired, key distrusted) cannot MAC a probe; let it expire.
    if (!s || sessions.get(s.sidHex) !== s) return false;
    server.send(sessions.encode(s, 'PROBE', randomBytes(REQUEST_ID_BYTES), {}), rec.address);
    return true;
  };

  const sweep = (): SweepResult => {
    const started = process.hrtime.bigint();
    const { expired, probes: due } = table.sweep(limits.maxProbesPerSweep);
    let probes = 0;
    for (const rec of due) if (sendProbe(rec)) probes++;
    metrics.inc('probes_sent_total', undefined, probes);
    metrics.observe('sweep_duration_seconds', 'Time of one sweep of the table', Number(process.hrtime.bigint() - started) / 1e9);
    return { expired, probes };
  };
  const timer = setInterval(sweep, o.sweepIntervalMs);
  timer.unref();

  let stopped = false;
  return {
    port,
    reflectorPort: reflector?.port ?? 0,
    reflectorAltPort: reflector?.altPort ?? 0,
    context, table, groups, sessions, verifier, metrics, server, reflector, introductions,
    sweep,
    reload(change) {
      if (change.limits) {
        const p = checkLimits(change.limits);
        if (p) throw new Error(p);
        limits = { ...change.limits };
        context.limits = limits;
        table.probeAtPercent = limits.probeAtPercent;
        groups.limits = { maxMembers: limits.maxGroupMembers, maxGroupsPerTerminal: limits.maxGroupsPerTerminal };
        rateLimiter.setRate(limits.ratePerS, limits.burst);
        context.queryLimiter.setRate(limits.queryRatePerS, limits.queryBurst);
        context.querySourceLimiter.setRate(limits.querySourceRatePerS, limits.querySourceBurst);
        reflector?.setRate(limits.reflectorRatePerS, limits.reflectorBurst);
      }
      if (change.trustedKeys) {
        const keys = change.trustedKeys;
        verifier.setKeys(keys);
        const dropped = new Set<string>();
        sessions.dropWhere((s: KeyedSession) => {
          const drop = s.kid !== undefined && !keys.has(s.kid);
          if (drop) dropped.add(s.sidHex);
          return drop;
        });
        // Their registrations go too: what an untrusted key vouched for is not served any more.
        let removed = 0;
        if (dropped.size > 0) {
          const gone: string[] = [];
          for (const [id, rec] of table.entries()) if (rec.session && dropped.has(rec.session.sidHex)) gone.push(id);
          for (const id of gone) table.delete(id);
          removed = gone.length;
        }
        logger.info('trusted keys reloaded', { kids: [...keys.keys()], sessionsDropped: dropped.size, registrationsRemoved: removed });
      }
    },
    async stop(so = {}) {
      if (stopped) return;
      stopped = true;
      clearInterval(timer);
      introductions.close();
      await server.close();
      await reflector?.close();
      if (so.snapshot ?? useSnapshot) {
        const r = saveSnapshot(o.stateDir, sessions.all(), table, now());
        logger.info('snapshot written', { file: path.join(o.stateDir, SNAPSHOT_FILE), ...r });
      }
      groups.close();
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
}
