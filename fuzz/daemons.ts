// Fuzz targets for the daemons' own datagram servers (authd, locatord, matchd), started
// in-process with their real handlers on 127.0.0.1:0, a fake clock at the seeds' time, and the
// socket's send replaced by a recorder (nothing leaves the process). The properties are those
// of every datagram server (targets.ts: datagramServerTarget). A daemon that cannot be started
// (its module or API changed) is reported as skipped, not as a crash.
import { createPublicKey } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Logger } from '../src/common/log.js';
import { Metrics } from '../src/common/metrics.js';
import type { DatagramServer } from '../src/net/server.js';
import type { ServerSessions } from '../src/net/sessions.js';
import { keyFileToJson, rawPublicKey } from '../src/wire/keys.js';
import type { ServerUnderTest, Target } from './targets.js';
import { datagramServerTarget, restoreWorldSessions } from './targets.js';
import type { World } from './world.js';

export interface DaemonTargets {
  targets: Target[];
  skipped: { name: string; reason: string }[];
  stop(): Promise<void>;
}

// Raw 32-byte halves from DER (RFC 8410: the key is the last 32 bytes), not JWK (issue 16).
const raw = (k: KeyObject, which: 'd' | 'x'): Buffer =>
  which === 'x' ? rawPublicKey(k) : k.export({ format: 'der', type: 'pkcs8' }).subarray(-32);
const quiet = (service: string, clock: { ms: number }): Logger => new Logger({ service, write: () => undefined, now: () => clock.ms });

/** Replace the socket's send with a recorder; the server's own send() keeps its counting. */
function record(server: DatagramServer): ServerUnderTest['sent'] {
  const sent: ServerUnderTest['sent'] = [];
  (server.socket as unknown as { send: (...a: unknown[]) => void }).send = (bytes: unknown, port: unknown, ip: unknown, cb?: unknown) => {
    sent.push({ bytes: Buffer.from(bytes as Uint8Array), port: port as number, ip: ip as string });
    if (typeof cb === 'function') (cb as (e: Error | null) => void)(null);
  };
  return sent;
}

export async function daemonTargets(w: World, log: (l: string) => void = () => undefined): Promise<DaemonTargets> {
  const targets: Target[] = [];
  const skipped: DaemonTargets['skipped'] = [];
  const stops: (() => Promise<void>)[] = [];
  const dirs: string[] = [];
  const tmp = (name: string): string => {
    const d = mkdtempSync(path.join(tmpdir(), `devloc-fuzz-${name}-`));
    dirs.push(d);
    return d;
  };
  const attempt = async (name: string, start: () => Promise<Target>): Promise<void> => {
    try {
      targets.push(await start());
    } catch (err) {
      skipped.push({ name, reason: (err as Error).message });
      log(`fuzz: ${name} not started: ${(err as Error).message}`);
    }
  };

  await attempt('authd', async () => {
    const { startAuthd } = await import('../src/authd/server.js');
    const clock = { ms: w.ticket.verifyAt * 1000 };
    const dir = tmp('authd');
    const keyFile = path.join(dir, 'authd.key');
    writeFileSync(keyFile, keyFileToJson({
      kind: 'authd', kid: w.auth.kid.toString('hex'),
      sign: { public: raw(w.ticket.signKey, 'x'), secret: raw(w.ticket.signKey, 'd') },
      seal: { public: raw(w.auth.sealSecret, 'x'), secret: raw(w.auth.sealSecret, 'd') },
    }), { mode: 0o600 });
    const a = await startAuthd({
      host: '127.0.0.1', port: 0, keyFiles: [keyFile], stateDir: path.join(dir, 'state'), ratePerS: 0, cookieThreshold: -1,
      logger: quiet('authd', clock), metrics: new Metrics(), now: () => clock.ms,
    });
    stops.push(() => a.stop());
    a.db.addDevice({ deviceId: w.auth.deviceId, publicKey: raw(w.auth.deviceKey, 'x') });
    a.db.putService({ serviceId: w.ticket.audience, sealKey: raw(createPublicKey(w.serviceSecret), 'x') }, true);
    const sent = record(a.server);
    return datagramServerTarget('authd', 'devloc-authd in-process (AUTH_REQUEST handler, real database and keys)', w, () => ({ server: a.server, sent, clock }), Infinity);
  });

  await attempt('locatord', async () => {
    const { startLocatord } = await import('../src/locatord/server.js');
    const { defaultLimits } = await import('../src/locatord/options.js');
    const clock = { ms: w.ticket.verifyAt * 1000 };
    const l = await startLocatord({
      listen: '127.0.0.1', port: 0, serviceSecret: w.serviceSecret, audience: w.ticket.audience, trustedKeys: w.ticket.verifyKeys,
      stateDir: tmp('locatord'), maxEntries: 10_000, maxSessions: 10_000, clockSkewS: 300, freshnessMs: 120_000, reflector: null,
      receiveBufferBytes: 0, sweepIntervalMs: 3_600_000, snapshot: false, now: () => clock.ms,
      limits: { ...defaultLimits, ratePerS: 0, queryRatePerS: 0, querySourceRatePerS: 0 },
    }, quiet('locatord', clock), new Metrics());
    stops.push(() => l.stop({ snapshot: false }));
    restoreWorldSessions(l.sessions as ServerSessions, w);
    const sent = record(l.server);
    return datagramServerTarget('locatord', 'devloc-locatord in-process (every locatord handler, real table and group database)', w, () => ({ server: l.server, sent, clock }), Infinity);
  });

  await attempt('matchd', async () => {
    const { startMatchd } = await import('../src/matchd/server.js');
    const clock = { ms: w.ticket.verifyAt * 1000 };
    const m = await startMatchd({
      host: '127.0.0.1', port: 0, service: 'matchd', serviceSecret: w.serviceSecret, trustedKeys: w.ticket.verifyKeys,
      now: () => clock.ms, tickMs: 0, rate: { ratePerS: 0, burst: 0 }, logger: quiet('matchd', clock), metrics: new Metrics(),
    });
    stops.push(() => m.stop());
    restoreWorldSessions(m.sessions as ServerSessions, w);
    const sent = record(m.server);
    return datagramServerTarget('matchd', 'devloc-matchd in-process (every matchd handler, the matching engine, result pushes)', w, () => ({ server: m.server, sent, clock }), Infinity);
  });

  return {
    targets,
    skipped,
    stop: async () => {
      for (const s of stops) await s().catch(() => undefined);
      for (const d of dirs) rmSync(d, { recursive: true, force: true });
    },
  };
}
