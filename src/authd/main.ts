#!/usr/bin/env node
// devloc-authd(8): the authentication server daemon. Options, config file keys and environment
// variables come from `spec` below (see src/common/config.ts); man/devloc-authd.8 documents
// every one of them.
import cluster from 'node:cluster';
import { randomBytes } from 'node:crypto';
import { statSync } from 'node:fs';
import type { Config, Spec } from '../common/config.js';
import { list, num, str } from '../common/config.js';
import type { DaemonDefinition, Running } from '../common/daemon.js';
import { main } from '../common/daemon.js';
import { DEFAULT_CLOCK_SKEW_S, DEFAULT_PORTS, DEFAULT_TICKET_LIFETIME_S } from '../wire/constants.js';
import { loadKeyRing } from './keyring.js';
import { LocatorIds } from './locator.js';
import type { AuthdOptions, ReloadOptions } from './server.js';
import { defaultPolicy, defaultRate, startAuthd } from './server.js';
import { isMainModule } from '../common/entry.js';
import { controlSocketOption } from '../common/control.js';
import { authdControl } from './control.js';
import { broadcast, startWorkers, toPrimary, workerIndex } from '../common/workers.js';
import type { Logger } from '../common/log.js';
import { DeviceGate, RemoteGate, serveGate } from './gate.js';

export const spec: Spec = {
  listen: { type: 'string', default: '0.0.0.0', describe: 'IP address to listen on (IPv4 or IPv6 literal)' },
  port: { type: 'number', default: DEFAULT_PORTS.authd, min: 0, max: 65535, describe: 'UDP port (0 = any free port)' },
  'control-socket': controlSocketOption('authd'),
  key: {
    type: 'list', default: ['/etc/devloc/authd.key'], reloadable: true,
    describe: 'authd key file (repeat or comma-separate); the first signs tickets, all open requests',
  },
  'ticket-lifetime': { type: 'number', default: DEFAULT_TICKET_LIFETIME_S, min: 60, max: 7 * 86400, reloadable: true, describe: 'ticket lifetime, seconds' },
  'clock-skew': { type: 'number', default: DEFAULT_CLOCK_SKEW_S, min: 1, max: 86400, reloadable: true, describe: 'largest accepted difference between a request timeMs and our clock, seconds' },
  rate: { type: 'number', default: defaultRate.ratePerS, min: 0, reloadable: true, describe: 'datagrams per second per source IP (0 = unlimited)' },
  burst: { type: 'number', default: defaultRate.burst, min: 1, reloadable: true, describe: 'burst allowed per source IP' },
  'cookie-threshold': {
    type: 'number', default: defaultPolicy.cookieThreshold, min: -1, reloadable: true,
    describe: 'AUTH_REQUESTs per second (all sources) above which a cookie is required (0 = always, -1 = never)',
  },
  'device-rate': {
    type: 'number', default: defaultPolicy.deviceRatePerMin, min: 0, reloadable: true,
    describe: 'authentications per minute per device, also its burst, RATE_LIMITED beyond (0 = no limit)',
  },
  'max-rate': { type: 'number', default: defaultPolicy.maxRate, min: 0, reloadable: true, describe: 'authentications per second served at most, TRY_LATER beyond (0 = no limit)' },
  'receive-buffer': { type: 'number', default: 0, min: 0, describe: 'socket receive buffer (SO_RCVBUF), bytes (0 = system default)' },
  'replay-cache': { type: 'number', default: 1_000_000, min: 1000, describe: 'most (device, nonce) pairs remembered against replays' },
  workers: { type: 'number', default: 1, min: 1, max: 256, describe: 'processes serving the same UDP port (node:cluster); per-device state stays in the first process' },
};

function options(config: Config): Omit<AuthdOptions, 'logger' | 'metrics'> {
  return {
    host: str(config, 'listen'),
    port: num(config, 'port'),
    keyFiles: list(config, 'key'),
    stateDir: str(config, 'state-dir'),
    ticketLifetimeS: num(config, 'ticket-lifetime'),
    clockSkewS: num(config, 'clock-skew'),
    ratePerS: num(config, 'rate'),
    burst: num(config, 'burst'),
    cookieThreshold: num(config, 'cookie-threshold'),
    maxRate: num(config, 'max-rate'),
    deviceRatePerMin: num(config, 'device-rate'),
    receiveBufferBytes: num(config, 'receive-buffer'),
    replayCacheMax: num(config, 'replay-cache'),
  };
}

function reloadOptions(config: Config): ReloadOptions {
  const o = options(config);
  return {
    keyFiles: o.keyFiles, ticketLifetimeS: o.ticketLifetimeS!, clockSkewS: o.clockSkewS!, ratePerS: o.ratePerS!,
    burst: o.burst!, cookieThreshold: o.cookieThreshold!, maxRate: o.maxRate!, deviceRatePerMin: o.deviceRatePerMin!,
  };
}

/** Deep configuration check (also --check-config): keys load, addresses parse, state is sane. */
export function checkConfig(config: Config): string | null {
  const keys = list(config, 'key');
  if (keys.length === 0) return 'key: at least one authd key file is required (devloc keygen authd)';
  try {
    loadKeyRing(keys);
  } catch (err) {
    return (err as Error).message;
  }
  const dir = str(config, 'state-dir');
  try {
    if (!statSync(dir).isDirectory()) return `state-dir: ${dir} is not a directory`;
  } catch {
    return null; // created at start
  }
  try {
    statSync(LocatorIds.fileIn(dir));
  } catch {
    return null; // created at first start
  }
  try {
    LocatorIds.load(dir, false);
  } catch (err) {
    return (err as Error).message;
  }
  return null;
}

/** The environment variable that carries the cookie master from the primary to its workers. */
const COOKIE_MASTER_ENV = 'DEVLOC_WORKER_COOKIE_MASTER';

/** A whole-authd figure (--max-rate, --cookie-threshold) for one of N workers, each of which sees about 1/N of the requests. */
const shareOut = (x: number, workers: number): number => (x > 0 ? Math.max(1, Math.round(x / workers)) : x);

const gatePolicy = (config: Config): { clockSkewS: number; deviceRatePerMin: number } => ({
  clockSkewS: num(config, 'clock-skew'), deviceRatePerMin: num(config, 'device-rate'),
});

/**
 * --workers N: the primary forks the workers (src/common/workers.ts) and keeps the per-device
 * state they share (gate.ts: device budget, replay cache, cloned identities); it gives them one
 * cookie master, and passes a REVOKE_ACK received by one worker to the others (only worker 0
 * pushes REVOKEs; the ack may reach any of them).
 */
function startPrimary(config: Config, logger: Logger): Promise<Running> {
  const gate = new DeviceGate(gatePolicy(config), { replayCacheMax: num(config, 'replay-cache'), serveDuplicates: true });
  return startWorkers(num(config, 'workers'), logger, {
    env: { [COOKIE_MASTER_ENV]: randomBytes(32).toString('hex') },
    listeners: {
      'gate-ask': (m, from) => serveGate(gate, from, m.b),
      'revoke-ack': (m, from) => broadcast(m, from),
    },
    reload: (next) => gate.setPolicy(gatePolicy(next)),
  });
}

export const definition: DaemonDefinition = {
  derivesKeysPerRequest: true,
  name: 'authd',
  summary: 'devloc authentication server: checks devices against the terminal database and issues tickets and locator IDs.',
  spec,
  check: checkConfig,
  async start(config, logger, metrics): Promise<Running> {
    const workers = num(config, 'workers');
    if (workers > 1 && cluster.isPrimary) return startPrimary(config, logger);
    const perWorker = (o: Omit<AuthdOptions, 'logger' | 'metrics'>): Omit<AuthdOptions, 'logger' | 'metrics'> => {
      if (!cluster.isWorker) return o;
      const master = process.env[COOKIE_MASTER_ENV];
      delete process.env[COOKIE_MASTER_ENV];
      return {
        ...o, maxRate: shareOut(o.maxRate!, workers), cookieThreshold: shareOut(o.cookieThreshold!, workers), gate: new RemoteGate(),
        ...(master ? { cookieMaster: Buffer.from(master, 'hex') } : {}),
        pushRevocations: workerIndex() === 0,
        onRevokeAck: (rid) => toPrimary().send({ k: 'revoke-ack', rid: Buffer.from(rid).toString('hex') }),
      };
    };
    const authd = await startAuthd({ ...perWorker(options(config)), logger, metrics });
    if (cluster.isWorker) {
      toPrimary().on('revoke-ack', (m) => authd.revocations.ack(Buffer.from(m.rid, 'hex')));
    }
    return {
      stop: () => authd.stop(),
      // Workers (--workers) share the primary's argv: none serves the control socket.
      ...(cluster.isWorker ? {} : { control: authdControl(authd) }),
      reload(next: Config) {
        const r = reloadOptions(next);
        if (cluster.isWorker) {
          r.maxRate = shareOut(r.maxRate!, workers);
          r.cookieThreshold = shareOut(r.cookieThreshold!, workers);
        }
        authd.reload(r);
      },
    };
  },
};

if (isMainModule(import.meta.url)) main(definition);
