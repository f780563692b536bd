// A devloc deployment behind impairment proxies, for the fault tests: devloc-authd, -locatord
// and -matchd as real processes on 127.0.0.1, each reached by the agents only through its own
// tools/impair.ts proxy (authd's grants name the proxies as the services' addresses), every
// daemon serving /metrics, and devloc-agent processes. Daemons can be SIGKILLed and started again
// with the same state directory, configuration and ports; the proxies stay, so the agents keep
// talking to the same addresses. The NAT reflector is reached directly (its change-address tests
// need its real ports), so agents classify themselves "open" as on a LAN.
//
// Every datagram a proxy forwards toward its daemon is recorded by type and content, so a test
// can compare how many distinct requests reached a daemon with how many it executed.
import { createHash } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { AuthDb } from '../../src/authd/db.js';
import type { AgentStatus } from '../../src/agent/agent.js';
import { controlRequest } from '../../src/agent/control-client.js';
import { peekEnvelope } from '../../src/net/server.js';
import { specOf } from '../../src/wire/catalog.js';
import type { KeyFile } from '../../src/wire/keys.js';
import { keyFileToJson, newAuthdKey, newDeviceKey, newServiceKey, publicOf, publicToJson } from '../../src/wire/keys.js';
import type { ImpairOptions, ImpairProxy } from '../../tools/impair.js';
import { createImpairProxy } from '../../tools/impair.js';
import type { Proc, Teardown } from '../agent/stack.js';
import { FAST_AGENT, spawnNode } from '../agent/stack.js';
import { DAEMON_START_TIMEOUT_MS } from '../helpers/daemon.js';
import { scrapeMetrics } from '../helpers/metrics.js';
import { undocumentedRefusalsAt } from '../helpers/refusals.js';

export type DaemonName = 'authd' | 'locatord' | 'matchd';
export const DAEMONS: readonly DaemonName[] = ['authd', 'locatord', 'matchd'];

/** Impairment of every proxy (the seed is mixed with the daemon's name). */
export type Impairment = Omit<ImpairOptions, 'listen' | 'target' | 'onReceive' | 'onSend'>;

export interface Device {
  name: string;
  deviceId: string;
  identityPath: string;
  key: KeyFile & { kind: 'device' };
}

export interface FaultAgent extends Proc {
  name: string;
  device: Device;
  socket: string;
  control<T = unknown>(cmd: string, args?: Record<string, unknown>, timeoutMs?: number): Promise<T>;
  status(): Promise<AgentStatus>;
}

export interface MetricSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export class MetricsSnapshot {
  constructor(readonly samples: MetricSample[]) {}

  static parse(text: string): MetricsSnapshot {
    const out: MetricSample[] = [];
    for (const line of text.split('\n')) {
      if (!line || line.startsWith('#')) continue;
      const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
      if (!m) continue;
      const labels: Record<string, string> = {};
      for (const l of (m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)) labels[l[1]!] = l[2]!;
      out.push({ name: m[1]!, labels, value: Number(m[3]) });
    }
    return new MetricsSnapshot(out);
  }

  /** Sum of `name` (without the devloc_ prefix) over the series whose labels include `where`. */
  sum(name: string, where: Record<string, string> = {}): number {
    return this.samples
      .filter((s) => s.name === `devloc_${name}` && Object.entries(where).every(([k, v]) => s.labels[k] === v))
      .reduce((a, s) => a + s.value, 0);
  }
}

/** What a proxy forwarded toward its daemon: distinct datagrams and copies, by message type. */
export class RequestLog {
  readonly distinct = new Map<string, Set<string>>();
  readonly copies = new Map<string, number>();

  note(datagram: Buffer): void {
    const type = peekEnvelope(datagram).type;
    const name = (type !== undefined && specOf(type)?.name) || `type-${type}`;
    let set = this.distinct.get(name);
    if (!set) this.distinct.set(name, (set = new Set()));
    set.add(createHash('sha256').update(datagram).digest('hex'));
    this.copies.set(name, (this.copies.get(name) ?? 0) + 1);
  }

  /** Distinct datagrams of each type. */
  counts(): Record<string, number> {
    return Object.fromEntries([...this.distinct].map(([k, v]) => [k, v.size]));
  }
}

export interface World {
  dir: string;
  authdState: string;
  locatordState: string;
  procs: Record<DaemonName, Proc>;
  ports: Record<DaemonName, number> & { reflector: number; reflectorAlt: number };
  proxies: Record<DaemonName, ImpairProxy>;
  /** What each proxy forwarded to its daemon (since the world started). */
  requests: Record<DaemonName, RequestLog>;
  /** The daemon's /metrics, parsed. */
  metrics(d: DaemonName): Promise<MetricsSnapshot>;
  /**
   * Each refusal the daemons counted (requests_total, since each last started) that
   * devloc-protocol(7) does not list for its message (test/helpers/refusals.ts); [] when none.
   */
  undocumentedRefusals(): Promise<string[]>;
  /** Enroll a new device in authd's database (as `devloc enroll` would, synchronous=FULL). */
  device(name: string): Device;
  agent(name: string, o?: { device?: Device; args?: string[] }): Promise<FaultAgent>;
  /** SIGKILL the daemon and wait until it is gone. */
  kill(d: DaemonName): Promise<void>;
  /** Start it again: same state directory, configuration and ports. */
  start(d: DaemonName): Promise<void>;
  /** Groups and members in locatord's database, read from the file (a second connection). */
  groupsOnDisk(): { groups: Map<string, { owner: string; name: string }>; members: Map<string, Set<string>> };
  /** Enrolled device IDs in authd's database. */
  devicesOnDisk(): Set<string>;
}

const LO = '127.0.0.1';
const hex = (b: Buffer): string => b.toString('hex');

export async function world(t: Teardown, impairment: Impairment): Promise<World> {
  const dir = mkdtempSync(path.join(tmpdir(), 'devloc-faults-'));
  chmodSync(dir, 0o755);
  const live = new Set<Proc>();
  const proxies: Partial<Record<DaemonName, ImpairProxy>> = {};
  t.teardown(async () => {
    await Promise.all([...live].map((p) => p.stop('SIGKILL')));
    for (const p of Object.values(proxies)) await p.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const authdKey = newAuthdKey();
  const authdKeyFile = path.join(dir, 'authd.key');
  writeFileSync(authdKeyFile, keyFileToJson(authdKey), { mode: 0o600 });
  const authdPubFile = path.join(dir, 'authd.pub');
  writeFileSync(authdPubFile, publicToJson(publicOf(authdKey)) + '\n', { mode: 0o644 });
  const serviceKeyFile = (id: string): { file: string; seal: Buffer } => {
    const k = newServiceKey(id);
    if (k.kind !== 'service') throw new Error('unreachable');
    const file = path.join(dir, `${id}.key`);
    writeFileSync(file, keyFileToJson(k), { mode: 0o600 });
    return { file, seal: k.seal.public };
  };
  const locatorKey = serviceKeyFile('locator');
  const matchKey = serviceKeyFile('match');
  const authdState = path.join(dir, 'authd-state');
  const locatordState = path.join(dir, 'locatord-state');
  AuthDb.open(authdState).close();

  const ports = { authd: 0, locatord: 0, matchd: 0, reflector: 0, reflectorAlt: 0 };
  const metricsPorts: Record<DaemonName, number> = { authd: 0, locatord: 0, matchd: 0 };
  const argv = (d: DaemonName): string[] => {
    const common = ['--listen', LO, '--port', String(ports[d]), '--rate', '0', '--metrics-listen', `${LO}:${metricsPorts[d]}`];
    if (d === 'authd') {
      // Per-device and per-terminal limits off: this world counts executions exactly, and a request
      // refused RATE_LIMITED is executed again when the agent retries.
      return [...common, '--key', authdKeyFile, '--state-dir', authdState, '--cookie-threshold', '-1', '--ticket-lifetime', '600', '--device-rate', '0'];
    }
    if (d === 'locatord') {
      return [
        ...common, '--service-key', locatorKey.file, '--trust', authdPubFile, '--state-dir', locatordState,
        '--reflector-port', String(ports.reflector), '--reflector-alt-port', String(ports.reflectorAlt),
        '--min-ttl', '4', '--default-ttl', '8', '--reflector-rate', '0', '--query-rate', '0', '--query-source-rate', '0', '--sweep-interval', '200',
      ];
    }
    return [...common, '--service-key', matchKey.file, '--trust', authdPubFile, '--tick-interval', '50', '--log-level', 'debug', '--submit-interval', '0', '--match-cooldown', '0'];
  };
  const entry: Record<DaemonName, string> = { authd: 'authd/main.ts', locatord: 'locatord/main.ts', matchd: 'matchd/main.ts' };
  const procs: Partial<Record<DaemonName, Proc>> = {};
  const start = async (d: DaemonName): Promise<void> => {
    const p = spawnNode(entry[d], argv(d));
    live.add(p);
    void p.exited.then(() => live.delete(p));
    procs[d] = p;
    const l = await p.waitFor((x) => x['msg'] === 'listening', DAEMON_START_TIMEOUT_MS, `${d} listening`);
    const m = await p.waitFor((x) => x['msg'] === 'metrics endpoint', DAEMON_START_TIMEOUT_MS, `${d} metrics endpoint`);
    // The first start picks free ports; later starts reuse them.
    ports[d] = Number(l['port']);
    metricsPorts[d] = Number(String(m['listen']).split(':').pop());
    if (d === 'locatord') {
      ports.reflector = Number(l['reflectorPort']);
      ports.reflectorAlt = Number(l['reflectorAltPort']);
    }
  };

  const requests: Record<DaemonName, RequestLog> = { authd: new RequestLog(), locatord: new RequestLog(), matchd: new RequestLog() };
  const seedOf = (d: DaemonName): number => (impairment.seed ^ (DAEMONS.indexOf(d) + 1) * 0x2545f491) >>> 0;
  const proxy = async (d: DaemonName): Promise<ImpairProxy> => {
    const p = await createImpairProxy({
      ...impairment, seed: seedOf(d), listen: { ip: LO, port: 0 }, target: { ip: LO, port: ports[d] },
      onSend: (dir, datagram) => {
        if (dir === 'up') requests[d].note(datagram);
      },
    });
    proxies[d] = p;
    return p;
  };

  // Services first: authd's grants carry their (proxied) addresses.
  await Promise.all([start('locatord'), start('matchd')]);
  const [pl, pm] = await Promise.all([proxy('locatord'), proxy('matchd')]);
  const db = AuthDb.open(authdState);
  db.putService({ serviceId: 'locator', sealKey: locatorKey.seal, addr: `${LO}:${pl.port}` }, false);
  db.putService({ serviceId: 'match', sealKey: matchKey.seal, addr: `${LO}:${pm.port}` }, false);
  db.close();
  await start('authd');
  const pa = await proxy('authd');

  const w: World = {
    dir, authdState, locatordState, ports,
    procs: procs as Record<DaemonName, Proc>,
    proxies: proxies as Record<DaemonName, ImpairProxy>,
    requests,
    async metrics(d) {
      return MetricsSnapshot.parse(await scrapeMetrics(`${LO}:${metricsPorts[d]}`));
    },
    undocumentedRefusals() {
      return undocumentedRefusalsAt(DAEMONS.map((d) => `${LO}:${metricsPorts[d]}`));
    },
    device(name) {
      const key = newDeviceKey(`${name.toUpperCase()}-${Math.random().toString(16).slice(2, 10).toUpperCase()}`) as KeyFile & { kind: 'device' };
      const identityPath = path.join(dir, `${name}.key`);
      writeFileSync(identityPath, keyFileToJson(key), { mode: 0o600 });
      chmodSync(identityPath, 0o600);
      const d = AuthDb.open(authdState, { synchronous: 'FULL' });
      d.addDevice({ deviceId: key.deviceId, publicKey: key.sign.public });
      d.close();
      return { name, deviceId: key.deviceId, identityPath, key };
    },
    async agent(name, o = {}) {
      const device = o.device ?? w.device(name);
      const socket = path.join(dir, `${name}.sock`);
      const p = spawnNode('agent/main.ts', [
        '--identity', device.identityPath, '--authd', `${LO}:${pa.port}`, '--authd-key', authdPubFile, '--control-socket', socket,
        '--state-dir', path.join(dir, `${name}-state`), ...FAST_AGENT, '--reflector', `${LO}:${ports.reflector}`, '--nickname', name, ...(o.args ?? []),
      ]);
      live.add(p);
      void p.exited.then(() => live.delete(p));
      await p.waitFor((l) => l['msg'] === 'listening', DAEMON_START_TIMEOUT_MS, `agent ${name} listening`);
      const control = <T>(cmd: string, args: Record<string, unknown> = {}, timeoutMs = 30_000): Promise<T> => controlRequest(socket, cmd, args, timeoutMs) as Promise<T>;
      return Object.assign(p, { name, device, socket, control, status: () => control<AgentStatus>('status') });
    },
    async kill(d) {
      await procs[d]!.stop('SIGKILL');
    },
    start,
    groupsOnDisk() {
      const g = new Database(path.join(locatordState, 'locatord.db'), { readonly: true, fileMustExist: true });
      try {
        const groups = new Map<string, { owner: string; name: string }>();
        for (const r of g.prepare('SELECT id, owner, name FROM groups').all() as { id: Buffer; owner: Buffer; name: string }[]) {
          groups.set(hex(r.id), { owner: hex(r.owner), name: r.name });
        }
        const members = new Map<string, Set<string>>();
        for (const r of g.prepare('SELECT group_id, locator_id FROM members').all() as { group_id: Buffer; locator_id: Buffer }[]) {
          const k = hex(r.group_id);
          if (!members.has(k)) members.set(k, new Set());
          members.get(k)!.add(hex(r.locator_id));
        }
        return { groups, members };
      } finally {
        g.close();
      }
    },
    devicesOnDisk() {
      const a = AuthDb.open(authdState, { create: false });
      try {
        return new Set(a.listDevices().map((r) => r.deviceId));
      } finally {
        a.close();
      }
    },
  };
  return w;
}

/** Registered with locatord and classified (match submits wait for the classification). */
export function settled(s: AgentStatus): boolean {
  return s.registered && s.netMode === 'open';
}
