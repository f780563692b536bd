// devloc-locatord's options: the flag/config/env spec, the typed options startLocatord takes,
// and the translation between the two (reading the key files the config names).
import type { KeyObject } from 'node:crypto';
import type { Config, Spec } from '../common/config.js';
import { list, num, str } from '../common/config.js';
import { ipToBytes } from '../wire/addr.js';
import { DEFAULT_CLOCK_SKEW_S, DEFAULT_PORTS, NAT_REFRESH_S, TTL_PER_REFRESH } from '../wire/constants.js';
import type { DbSync } from './groups.js';
import { parseRedisUrl } from './store/redis-url.js';
import { checkServiceKeys, readServiceKey as readSharedServiceKey, readTrust } from '../net/trust.js';
import { MAX_SESSIONS_LIMIT } from '../net/sessions.js';
import { controlSocketOption } from '../common/control.js';

/** Limits applied per request; all of them are reloaded on SIGHUP. */
export interface LocatordLimits {
  /** TTL bounds and the TTL granted when a terminal asks for none, seconds. */
  minTtlS: number;
  defaultTtlS: number;
  maxTtlS: number;
  /** Datagrams per second (and burst) per source IP, before any decoding. 0 = unlimited. */
  ratePerS: number;
  burst: number;
  /** Locator IDs looked up per second (and burst) per terminal, by queries and member lists. 0 = unlimited. */
  queryRatePerS: number;
  queryBurst: number;
  /** The same per source IP (terminals behind one NAT share it). 0 = unlimited. */
  querySourceRatePerS: number;
  querySourceBurst: number;
  /** Probe a registration not refreshed for this percentage of its TTL; 0 = never probe. */
  probeAtPercent: number;
  /** Most probes sent per sweep. */
  maxProbesPerSweep: number;
  maxGroupMembers: number;
  maxGroupsPerTerminal: number;
  /** REFLECT datagrams per second (and burst) per source IP. 0 = unlimited. */
  reflectorRatePerS: number;
  reflectorBurst: number;
}

export interface ReflectorConfig {
  /** UDP port of the reflector (0 = ephemeral). */
  port: number;
  /** Alternate port on the same address(es) (0 = ephemeral). */
  altPort: number;
  /** Alternate local address for change-address answers; absent = none. */
  altIp?: string;
}

/** --store redis: where the shared state is and how long to wait for it. */
export interface RedisStoreConfig {
  kind: 'redis';
  /** redis://[user:pass@]host:port[/db], or redis+cluster://host:port[,host:port...] (Cluster seeds); rediss:// for TLS. */
  url: string;
  /** rediss://: PEM file of the CA(s) to trust instead of the system's. */
  tlsCaFile?: string;
  /** A Redis command without a reply after this long fails the request with TRY_LATER, ms. */
  timeoutMs: number;
  /** Most commands in flight to Redis (all nodes) before requests get TRY_LATER. */
  maxPending: number;
  /** Key prefix (default "dl:"), to share one Redis between deployments or tests. */
  prefix?: string;
}

export interface LocatordOptions {
  /** Shared store; absent = embedded (in-process table, SQLite groups). */
  store?: RedisStoreConfig;
  listen: string;
  port: number;
  /** Our static X25519 secret (from the service key file). */
  serviceSecret: KeyObject;
  /** Service ID tickets must name (the service key file's `service`). */
  audience: string;
  /** Trusted authd signing keys by kid (hex). */
  trustedKeys: Map<string, KeyObject>;
  /** Directory of locatord.db and locatord.snapshot. */
  stateDir: string;
  /** SQLite synchronous mode of the group database (see groups.ts); default normal. */
  dbSync?: DbSync;
  maxEntries: number;
  maxSessions: number;
  clockSkewS: number;
  /** How far a session-opening REGISTER's timeMs may be from our clock, ms. */
  freshnessMs: number;
  /** null: no reflector. */
  reflector: ReflectorConfig | null;
  /** SO_RCVBUF bytes; 0 = system default. */
  receiveBufferBytes: number;
  /** How often expired records are freed and probes sent, ms. */
  sweepIntervalMs: number;
  limits: LocatordLimits;
  /** Load the snapshot at start and write one at stop (default true). */
  snapshot?: boolean;
  /** Milliseconds clock for everything time-dependent (tests). */
  now?: () => number;
}

export const defaultLimits: LocatordLimits = {
  minTtlS: 30,
  // 3.5 NAT refresh intervals (87.5 s), rounded up: a NAT'd terminal may lose 3 refreshes.
  defaultTtlS: Math.ceil(NAT_REFRESH_S * TTL_PER_REFRESH / 10) * 10,
  maxTtlS: 3600,
  ratePerS: 100,
  burst: 200,
  queryRatePerS: 64,
  queryBurst: 256,
  querySourceRatePerS: 1024,
  querySourceBurst: 4096,
  probeAtPercent: 80,
  maxProbesPerSweep: 1000,
  maxGroupMembers: 256,
  maxGroupsPerTerminal: 32,
  reflectorRatePerS: 20,
  reflectorBurst: 40,
};

/** What an in-process locatord must be given; everything else has the daemon's defaults. */
export type RequiredOptions = Pick<LocatordOptions, 'serviceSecret' | 'audience' | 'trustedKeys' | 'stateDir'>;

/**
 * Complete options for startLocatord from the required ones (for the demo and tests): the
 * daemon's defaults, except a reflector on free ports rather than 4702/4704 when none is given.
 */
export function withDefaults(o: RequiredOptions & Partial<Omit<LocatordOptions, 'limits'>> & { limits?: Partial<LocatordLimits> }): LocatordOptions {
  return {
    listen: '0.0.0.0', port: DEFAULT_PORTS.locatord, maxEntries: 1_000_000, maxSessions: 2_000_000,
    clockSkewS: DEFAULT_CLOCK_SKEW_S, freshnessMs: 120_000, reflector: { port: 0, altPort: 0 }, receiveBufferBytes: 0,
    sweepIntervalMs: 1000,
    ...o,
    limits: { ...defaultLimits, ...o.limits },
  };
}

export const locatordSpec: Spec = {
  listen: { type: 'string', default: '0.0.0.0', describe: 'address to listen on (IPv4 or IPv6 literal)' },
  port: { type: 'number', default: DEFAULT_PORTS.locatord, min: 0, max: 65535, describe: 'UDP port (0 = any free port)' },
  'control-socket': controlSocketOption('locatord'),
  'service-key': { type: 'string', describe: 'service key file (kind "service"); its service ID is the ticket audience (required)' },
  trust: { type: 'list', default: [], describe: 'authd public key files whose tickets are accepted, comma-separated (required)', reloadable: true },
  'db-sync': { type: 'string', default: 'normal', choices: ['normal', 'full'], describe: 'group database commits: normal (survive a process kill) or full (also power loss; fsync per change)' },
  'max-entries': { type: 'number', default: 1_000_000, min: 1, describe: 'most registrations held (least recently refreshed evicted beyond)' },
  'max-sessions': { type: 'number', default: 2_000_000, min: 1, max: MAX_SESSIONS_LIMIT, describe: 'most sessions held' },
  'min-ttl': { type: 'number', default: defaultLimits.minTtlS, min: 4, describe: 'shortest registration TTL granted, seconds', reloadable: true },
  'default-ttl': { type: 'number', default: defaultLimits.defaultTtlS, min: 4, describe: 'TTL granted when a terminal asks for none, seconds', reloadable: true },
  'max-ttl': { type: 'number', default: defaultLimits.maxTtlS, min: 4, describe: 'longest registration TTL granted, seconds', reloadable: true },
  rate: { type: 'number', default: defaultLimits.ratePerS, min: 0, describe: 'datagrams per second per source IP (0 = unlimited)', reloadable: true },
  burst: { type: 'number', default: defaultLimits.burst, min: 1, describe: 'burst of datagrams per source IP', reloadable: true },
  'query-rate': { type: 'number', default: defaultLimits.queryRatePerS, min: 0, describe: 'locator IDs looked up per second per terminal (0 = unlimited)', reloadable: true },
  'query-burst': { type: 'number', default: defaultLimits.queryBurst, min: 64, describe: 'burst of locator IDs looked up per terminal', reloadable: true },
  'query-source-rate': { type: 'number', default: defaultLimits.querySourceRatePerS, min: 0, describe: 'locator IDs looked up per second per source IP (0 = unlimited)', reloadable: true },
  'query-source-burst': { type: 'number', default: defaultLimits.querySourceBurst, min: 64, describe: 'burst of locator IDs looked up per source IP', reloadable: true },
  'clock-skew': { type: 'number', default: DEFAULT_CLOCK_SKEW_S, min: 0, max: 86_400, describe: 'clock skew allowed on ticket times, seconds' },
  'register-freshness': { type: 'number', default: 120, min: 1, max: 3600, describe: "how far a session-opening REGISTER's timeMs may be from our clock, seconds" },
  'probe-at': { type: 'number', default: defaultLimits.probeAtPercent, min: 0, max: 99, describe: 'probe a registration not refreshed for this % of its TTL (0 = never)', reloadable: true },
  'max-probes': { type: 'number', default: defaultLimits.maxProbesPerSweep, min: 0, describe: 'most probes sent per sweep', reloadable: true },
  'sweep-interval': { type: 'number', default: 1000, min: 10, max: 60_000, describe: 'how often expired entries are freed and probes sent, ms' },
  'max-group-members': { type: 'number', default: defaultLimits.maxGroupMembers, min: 1, describe: 'most members in one group', reloadable: true },
  'max-groups-per-terminal': { type: 'number', default: defaultLimits.maxGroupsPerTerminal, min: 1, describe: 'most groups one terminal may be in', reloadable: true },
  'reflector-port': { type: 'number', default: DEFAULT_PORTS.reflector, min: -1, max: 65535, describe: 'NAT reflector UDP port (0 = any free port, -1 = no reflector)' },
  'reflector-alt-port': { type: 'number', default: 4704, min: 0, max: 65535, describe: 'NAT reflector alternate port (change-port answers; 0 = any free port)' },
  'reflector-alt-ip': { type: 'string', default: '', describe: 'NAT reflector alternate local address (change-address answers; "" = none)' },
  'reflector-rate': { type: 'number', default: defaultLimits.reflectorRatePerS, min: 0, describe: 'REFLECT datagrams per second per source IP (0 = unlimited)', reloadable: true },
  'reflector-burst': { type: 'number', default: defaultLimits.reflectorBurst, min: 1, describe: 'burst of REFLECT datagrams per source IP', reloadable: true },
  store: { type: 'string', default: 'embedded', choices: ['embedded', 'redis'], describe: 'where registrations, sessions and groups live: embedded (this process, SQLite) or redis (shared by several instances)' },
  'redis-url': { type: 'string', default: 'redis://127.0.0.1:6379/0', describe: 'Redis of --store redis: redis://[user:pass@]host:port[/db], or redis+cluster://[user:pass@]host:port[,host:port...] for Redis Cluster seed nodes; rediss:// and rediss+cluster:// over TLS' },
  'redis-tls-ca': { type: 'string', default: '', describe: 'PEM file of the CA certificates trusted for rediss:// (default: the system CAs)' },
  'redis-timeout-ms': { type: 'number', default: 500, min: 10, max: 60_000, describe: 'Redis command timeout: requests waiting longer get TRY_LATER, ms' },
  'redis-max-pending': { type: 'number', default: 20_000, min: 1, describe: 'most Redis commands in flight (all nodes together); beyond, requests get TRY_LATER at once' },
  'redis-prefix': { type: 'string', default: 'dl:', describe: 'prefix of every Redis key (to share one Redis)' },
  workers: { type: 'number', default: 1, min: 1, max: 256, describe: 'processes serving the same UDP port (node:cluster); more than 1 needs --store redis' },
  'receive-buffer': { type: 'number', default: 0, min: 0, describe: 'UDP receive buffer (SO_RCVBUF) in bytes (0 = system default)' },
};

export function limitsFromConfig(c: Config): LocatordLimits {
  return {
    minTtlS: num(c, 'min-ttl'),
    defaultTtlS: num(c, 'default-ttl'),
    maxTtlS: num(c, 'max-ttl'),
    ratePerS: num(c, 'rate'),
    burst: num(c, 'burst'),
    queryRatePerS: num(c, 'query-rate'),
    queryBurst: num(c, 'query-burst'),
    querySourceRatePerS: num(c, 'query-source-rate'),
    querySourceBurst: num(c, 'query-source-burst'),
    probeAtPercent: num(c, 'probe-at'),
    maxProbesPerSweep: num(c, 'max-probes'),
    maxGroupMembers: num(c, 'max-group-members'),
    maxGroupsPerTerminal: num(c, 'max-groups-per-terminal'),
    reflectorRatePerS: num(c, 'reflector-rate'),
    reflectorBurst: num(c, 'reflector-burst'),
  };
}

export function checkLimits(l: LocatordLimits): string | null {
  if (!(l.minTtlS <= l.defaultTtlS && l.defaultTtlS <= l.maxTtlS)) {
    return `TTLs must satisfy min-ttl <= default-ttl <= max-ttl (got ${l.minTtlS}, ${l.defaultTtlS}, ${l.maxTtlS})`;
  }
  return null;
}

export { readTrust } from '../net/trust.js';

/** Read the service key file: our X25519 secret and the audience. Throws with the file named. */
export function readServiceKey(file: string, read?: (p: string) => string): { secret: KeyObject; audience: string } {
  const k = read ? readSharedServiceKey(file, read) : readSharedServiceKey(file);
  return { secret: k.secret, audience: k.service };
}

/** Validate a resolved configuration deeply (for --check-config and before start). */
export function checkConfig(c: Config): string | null {
  const keys = checkServiceKeys(str(c, 'service-key'), list(c, 'trust'));
  if (keys) return keys;
  const alt = str(c, 'reflector-alt-ip');
  if (alt) {
    const altBytes = ipToBytes(alt);
    const listenBytes = ipToBytes(str(c, 'listen'))!;
    if (!altBytes) return `reflector-alt-ip: ${JSON.stringify(alt)} is not an IP address`;
    // A wildcard socket on the reflector ports would hold them on the alternate address too.
    if (listenBytes.every((b) => b === 0)) return 'reflector-alt-ip needs a specific listen address, not a wildcard';
    if (altBytes.length !== listenBytes.length) return 'reflector-alt-ip and listen must be of the same family';
    if (Buffer.from(altBytes).equals(Buffer.from(listenBytes))) return 'reflector-alt-ip must differ from listen';
  }
  const rp = num(c, 'reflector-port');
  if (rp > 0 && rp === num(c, 'reflector-alt-port')) return 'reflector-port and reflector-alt-port must differ';
  if (rp > 0 && rp === num(c, 'port')) return 'port and reflector-port must differ';
  if (num(c, 'workers') > 1 && str(c, 'store') !== 'redis') return 'workers > 1 needs store = redis (each worker would have its own table)';
  if (str(c, 'store') === 'redis') {
    let tls: boolean;
    try {
      tls = parseRedisUrl(str(c, 'redis-url')).tls;
    } catch (err) {
      return `redis-url: ${(err as Error).message}`;
    }
    // A CA file with a plain URL would be ignored: the operator meant TLS and would not get it.
    if (str(c, 'redis-tls-ca') && !tls) return 'redis-tls-ca needs a rediss:// or rediss+cluster:// redis-url';
  }
  return checkLimits(limitsFromConfig(c));
}

/** Build startLocatord's options from a checked configuration. */
export function optionsFromConfig(c: Config): LocatordOptions {
  const sk = readServiceKey(str(c, 'service-key'));
  const rp = num(c, 'reflector-port');
  const alt = str(c, 'reflector-alt-ip');
  return {
    listen: str(c, 'listen'),
    port: num(c, 'port'),
    serviceSecret: sk.secret,
    audience: sk.audience,
    trustedKeys: readTrust(list(c, 'trust')),
    stateDir: str(c, 'state-dir'),
    dbSync: str(c, 'db-sync') as DbSync,
    maxEntries: num(c, 'max-entries'),
    maxSessions: num(c, 'max-sessions'),
    clockSkewS: num(c, 'clock-skew'),
    freshnessMs: num(c, 'register-freshness') * 1000,
    reflector: rp < 0 ? null : { port: rp, altPort: num(c, 'reflector-alt-port'), ...(alt ? { altIp: alt } : {}) },
    receiveBufferBytes: num(c, 'receive-buffer'),
    sweepIntervalMs: num(c, 'sweep-interval'),
    limits: limitsFromConfig(c),
    ...(str(c, 'store') === 'redis'
      ? { store: { kind: 'redis' as const, url: str(c, 'redis-url'), ...(str(c, 'redis-tls-ca') ? { tlsCaFile: str(c, 'redis-tls-ca') } : {}), timeoutMs: num(c, 'redis-timeout-ms'), maxPending: num(c, 'redis-max-pending'), prefix: str(c, 'redis-prefix') } }
      : {}),
  };
}
