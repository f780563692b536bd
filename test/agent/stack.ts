// A real devloc deployment for agent tests: devloc-authd and devloc-locatord as processes (in a
// network namespace if asked), devices enrolled in authd's database, and devloc-agent
// processes started against them. Everything lives in a temporary directory removed at teardown.
import type { ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { AuthDb } from '../../src/authd/db.js';
import { controlRequest } from '../../src/agent/control-client.js';
import { spawnDaemon } from '../../src/common/spawn.js';
import type { AgentStatus } from '../../src/agent/agent.js';
import type { KeyFile } from '../../src/wire/keys.js';
import { keyFileToJson, newAuthdKey, newDeviceKey, newServiceKey, publicOf, publicToJson } from '../../src/wire/keys.js';
import { root } from '../helpers/daemon.js';
import { DAEMON_START_TIMEOUT_MS } from '../helpers/daemon.js';

export { type Teardown, withTeardown } from '../helpers/teardown.js';
import type { Teardown } from '../helpers/teardown.js';

export interface Proc {
  proc: ChildProcess;
  lines: Record<string, unknown>[];
  stderr: string[];
  /** stdout as received, for scanning. */
  raw: string[];
  exited: Promise<number | null>;
  waitFor(pred: (l: Record<string, unknown>) => boolean, ms?: number, what?: string): Promise<Record<string, unknown>>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Run `node --import tsx src/<entry> args` (src/common/spawn.ts), inside `netns` if given. */
export function spawnNode(entry: string, args: string[], o: { netns?: string; env?: NodeJS.ProcessEnv } = {}): Proc {
  const d = spawnDaemon({ entry: entry.replace(/\.ts$/, ''), name: entry, args, cwd: root, timeoutMs: 20_000, ...(o.env ? { env: o.env } : {}), ...(o.netns ? { prefix: ['ip', 'netns', 'exec', o.netns] } : {}) });
  const raw: string[] = [];
  d.proc.stdout!.on('data', (c: string) => raw.push(c));
  const exited = d.exited.then((code) => code ?? (d.proc.signalCode ? 128 : null));
  return {
    proc: d.proc, lines: d.lines, stderr: d.stderr, raw, exited,
    waitFor: (pred, ms, what = 'log line') => d.waitFor(pred, ms).catch((err: Error) => Promise.reject(new Error(`waiting for ${what}: ${err.message}`))),
    stop: async (signal: NodeJS.Signals = 'SIGTERM') => {
      if (d.proc.exitCode !== null || d.proc.signalCode !== null) return d.proc.exitCode;
      await d.stop(signal);
      return exited;
    },
  };
}

export interface Device {
  name: string;
  deviceId: string;
  identityPath: string;
  key: KeyFile & { kind: 'device' };
}

export interface AgentProc extends Proc {
  name: string;
  socket: string;
  device: Device;
  status(): Promise<AgentStatus>;
  control(cmd: string, args?: Record<string, unknown>): Promise<unknown>;
}

export interface StackOptions {
  /** Address the servers listen on (default 127.0.0.1). */
  listen?: string;
  /** Network namespace of the servers. */
  netns?: string;
  /** Alternate address for the reflector (change-address answers). */
  reflectorAltIp?: string;
  locatordArgs?: string[];
  /** Also run devloc-matchd (service "match", registered with authd) with these extra args. */
  matchd?: boolean;
  matchdArgs?: string[];
}

export interface Stack {
  dir: string;
  listen: string;
  authd: Proc;
  locatord: Proc;
  authdAddr: string;
  locatordAddr: string;
  authdPubFile: string;
  ports: { authd: number; locatord: number; reflector: number; reflectorAlt: number; matchd?: number };
  /** Control sockets of the daemons (devloc ctl --socket). */
  ctl: { authd: string; locatord: string; matchd: string };
  /** With `matchd: true`. */
  matchd?: Proc;
  matchdAddr?: string;
  device(name: string): Device;
  agent(name: string, args?: string[], o?: { netns?: string; device?: Device; env?: NodeJS.ProcessEnv }): Promise<AgentProc>;
  /** Stop locatord with `signal` and start it again on the same ports. */
  restartLocatord(signal: NodeJS.Signals): Promise<void>;
  /** Kill every process of the stack (teardown does it too). */
  stopAll(): Promise<void>;
}

/** Agent options that make tests quick: short retransmission and backoff, fast interface polls. */
export const FAST_AGENT = ['--retransmit-ms', '200', '--backoff-min-ms', '100', '--backoff-max-ms', '1000', '--interface-poll-s', '0.5', '--log-level', 'debug'];

export async function stack(t: Teardown, o: StackOptions = {}): Promise<Stack> {
  const dir = mkdtempSync(path.join(tmpdir(), 'devloc-agent-e2e-'));
  chmodSync(dir, 0o755);
  const procs: Proc[] = [];
  const stopAll = async (): Promise<void> => {
    await Promise.all(procs.map((p) => p.stop('SIGKILL')));
  };
  t.teardown(async () => {
    await stopAll();
    rmSync(dir, { recursive: true, force: true });
  });
  const listen = o.listen ?? '127.0.0.1';
  const authdKey = newAuthdKey();
  const authdKeyFile = path.join(dir, 'authd.key');
  writeFileSync(authdKeyFile, keyFileToJson(authdKey), { mode: 0o600 });
  const authdPubFile = path.join(dir, 'authd.pub');
  writeFileSync(authdPubFile, publicToJson(publicOf(authdKey)) + '\n', { mode: 0o644 });
  const serviceKey = newServiceKey('locator');
  if (serviceKey.kind !== 'service') throw new Error('unreachable');
  const serviceKeyFile = path.join(dir, 'locator.key');
  writeFileSync(serviceKeyFile, keyFileToJson(serviceKey), { mode: 0o600 });
  const authdState = path.join(dir, 'authd-state');
  const db = AuthDb.open(authdState);
  db.close();

  const ctl = { authd: path.join(dir, 'authd.ctl'), locatord: path.join(dir, 'locatord.ctl'), matchd: path.join(dir, 'matchd.ctl') };
  const locArgs = (ports: { locatord: number; reflector: number; reflectorAlt: number }): string[] => [
    '--control-socket', ctl.locatord, '--listen', listen, '--port', String(ports.locatord), '--service-key', serviceKeyFile, '--trust', authdPubFile,
    '--state-dir', path.join(dir, 'locatord-state'), '--reflector-port', String(ports.reflector), '--reflector-alt-port', String(ports.reflectorAlt),
    '--min-ttl', '4', '--default-ttl', '8', '--rate', '0', '--reflector-rate', '0', '--query-rate', '0', '--query-source-rate', '0',
    '--sweep-interval', '200', ...(o.reflectorAltIp ? ['--reflector-alt-ip', o.reflectorAltIp] : []), ...(o.locatordArgs ?? []),
  ];
  const netOpt = o.netns ? { netns: o.netns } : {};
  let locatord = spawnNode('locatord/main.ts', locArgs({ locatord: 0, reflector: 0, reflectorAlt: 0 }), netOpt);
  procs.push(locatord);
  const ll = await locatord.waitFor((l) => l['msg'] === 'listening', DAEMON_START_TIMEOUT_MS, 'locatord listening');
  const ports: Stack['ports'] = { authd: 0, locatord: Number(ll['port']), reflector: Number(ll['reflectorPort']), reflectorAlt: Number(ll['reflectorAltPort']) };
  const fmt = (port: number): string => (listen.includes(':') ? `[${listen}]:${port}` : `${listen}:${port}`);
  const locatordAddr = fmt(ports.locatord);
  const db2 = AuthDb.open(authdState);
  db2.putService({ serviceId: 'locator', sealKey: serviceKey.seal.public, addr: locatordAddr }, false);
  db2.close();
  let matchd: Proc | undefined;
  let matchdAddr: string | undefined;
  if (o.matchd) {
    const matchKey = newServiceKey('match');
    if (matchKey.kind !== 'service') throw new Error('unreachable');
    const matchKeyFile = path.join(dir, 'match.key');
    writeFileSync(matchKeyFile, keyFileToJson(matchKey), { mode: 0o600 });
    matchd = spawnNode('matchd/main.ts', [
      '--control-socket', ctl.matchd, '--listen', listen, '--port', '0', '--service-key', matchKeyFile, '--trust', authdPubFile, '--rate', '0', '--tick-interval', '50',
      '--log-level', 'debug', ...(o.matchdArgs ?? []),
    ], netOpt);
    procs.push(matchd);
    const ml = await matchd.waitFor((l) => l['msg'] === 'listening', DAEMON_START_TIMEOUT_MS, 'matchd listening');
    ports.matchd = Number(ml['port']);
    matchdAddr = fmt(ports.matchd);
    const db3 = AuthDb.open(authdState);
    db3.putService({ serviceId: 'match', sealKey: matchKey.seal.public, addr: matchdAddr }, false);
    db3.close();
  }
  const authd = spawnNode('authd/main.ts', [
    '--control-socket', ctl.authd, '--listen', listen, '--port', '0', '--key', authdKeyFile, '--state-dir', authdState, '--rate', '0', '--cookie-threshold', '-1', '--ticket-lifetime', '600',
  ], netOpt);
  procs.push(authd);
  const al = await authd.waitFor((l) => l['msg'] === 'listening', DAEMON_START_TIMEOUT_MS, 'authd listening');
  ports.authd = Number(al['port']);

  const s: Stack = {
    dir, listen, authd, locatord, ctl, authdAddr: fmt(ports.authd), locatordAddr, authdPubFile, ports, stopAll,
    ...(matchd ? { matchd } : {}), ...(matchdAddr ? { matchdAddr } : {}),
    device(name) {
      const key = newDeviceKey(`${name.toUpperCase()}-${Math.random().toString(16).slice(2, 10).toUpperCase()}`) as KeyFile & { kind: 'device' };
      const identityPath = path.join(dir, `${name}.key`);
      writeFileSync(identityPath, keyFileToJson(key), { mode: 0o600 });
      chmodSync(identityPath, 0o600);
      const d = AuthDb.open(authdState);
      d.addDevice({ deviceId: key.deviceId, publicKey: key.sign.public });
      d.close();
      return { name, deviceId: key.deviceId, identityPath, key };
    },
    async agent(name, args = [], ao = {}) {
      const device = ao.device ?? s.device(name);
      const socket = path.join(dir, `${name}.sock`);
      const p = spawnNode('agent/main.ts', [
        '--identity', device.identityPath, '--authd', s.authdAddr, '--authd-key', authdPubFile, '--control-socket', socket,
        '--state-dir', path.join(dir, `${name}-state`), ...FAST_AGENT,
        ...(args.includes('--reflector') ? [] : ['--reflector', fmt(ports.reflector)]), ...args,
      ], { ...(ao.netns ? { netns: ao.netns } : {}), ...(ao.env ? { env: ao.env } : {}) });
      procs.push(p);
      await p.waitFor((l) => l['msg'] === 'listening', DAEMON_START_TIMEOUT_MS, `agent ${name} listening`);
      const control = (cmd: string, a: Record<string, unknown> = {}): Promise<unknown> => controlRequest(socket, cmd, a, 20_000);
      return Object.assign(p, { name, socket, device, control, status: () => control('status') as Promise<AgentStatus> });
    },
    async restartLocatord(signal) {
      await locatord.stop(signal);
      locatord = spawnNode('locatord/main.ts', locArgs(ports), netOpt);
      procs.push(locatord);
      s.locatord = locatord;
      await locatord.waitFor((l) => l['msg'] === 'listening', DAEMON_START_TIMEOUT_MS, 'locatord listening again');
    },
  };
  return s;
}

/** Poll `fn` until it returns a truthy value; reject after `ms`. */
export async function eventually<T>(fn: () => Promise<T | undefined | null | false>, ms = 15_000, what = 'condition'): Promise<T> {
  const end = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${last ? ` (last error: ${(last as Error).message})` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
