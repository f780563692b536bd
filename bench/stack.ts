// A throwaway devloc deployment for the "terminals" bench: keys, N device identities made and
// enrolled as `devloc device new` + `devloc enroll` do, the "locator" and "match" services
// registered with authd, and devloc-authd, devloc-locatord and devloc-matchd as child processes
// on 127.0.0.1 (port 0), all in a temporary directory removed at stop. The daemons run their
// real entry points with their defaults except the per-source limits, which are off: every
// simulated terminal shares 127.0.0.1, so per-IP rate limits and authd's cookie would measure
// themselves instead of the service. Each daemon watches a pipe from us and stops when we die.
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { RunningDaemon } from '../src/common/spawn.js';
import { isListening, spawnDaemon } from '../src/common/spawn.js';
import { AuthDb } from '../src/authd/db.js';
import { enrollFile } from '../src/authd/enroll.js';
import type { Address } from '../src/wire/addr.js';
import { formatAddress } from '../src/wire/addr.js';
import type { KeyFile } from '../src/wire/keys.js';
import { keyFileToJson, newAuthdKey, newDeviceKey, newServiceKey, publicOf, publicToJson } from '../src/wire/keys.js';
import type { WorkerIdentity } from './terminal-worker.js';

const HOST = '127.0.0.1';
const BUFFER = String(8 << 20);

export interface DaemonProcess {
  name: 'authd' | 'locatord' | 'matchd';
  proc: ChildProcess;
  daemon: RunningDaemon;
  log: string;
  address: Address;
}

export interface Stack {
  dir: string;
  authd: Address;
  locatord: Address;
  matchd: Address;
  authdKidHex: string;
  /** authd's X25519 sealing key, base64url. */
  authdSeal: string;
  identities: WorkerIdentity[];
  daemons: DaemonProcess[];
  /** The flags each daemon was started with (beyond keys, state and ports), for the report. */
  flags: Record<string, string[]>;
  stop(): Promise<void>;
}

async function startDaemon(name: DaemonProcess['name'], args: string[], dir: string, started: DaemonProcess[]): Promise<DaemonProcess> {
  const log = path.join(dir, `${name}.log`);
  const daemon = spawnDaemon({ entry: `${name}/main`, args, logFile: log, watchdog: true, timeoutMs: 60_000 });
  const d: DaemonProcess = { name, proc: daemon.proc, daemon, log, address: { ip: HOST, port: 0 } };
  started.push(d); // stopped with the others if this or another daemon fails to start
  d.address.port = Number((await daemon.waitFor(isListening))['port']);
  return d;
}

const stopDaemon = async (d: DaemonProcess): Promise<void> => void (await d.daemon.stop('SIGTERM', 5000));

export async function startStack(o: { terminals: number; log?: (line: string) => void }): Promise<Stack> {
  const dir = mkdtempSync(path.join(tmpdir(), 'devloc-bench-terminals-'));
  const daemons: DaemonProcess[] = [];
  try {
    const write = (name: string, k: KeyFile): string => {
      const f = path.join(dir, name);
      writeFileSync(f, keyFileToJson(k), { mode: 0o600 });
      return f;
    };
    const authdKey = newAuthdKey();
    const locKey = newServiceKey('locator');
    const matchKey = newServiceKey('match');
    if (authdKey.kind !== 'authd' || locKey.kind !== 'service' || matchKey.kind !== 'service') throw new Error('unexpected key kinds');
    const files = { authd: write('authd.key', authdKey), locator: write('locatord.key', locKey), match: write('matchd.key', matchKey), authdPub: path.join(dir, 'authd.pub') };
    writeFileSync(files.authdPub, publicToJson(publicOf(authdKey)) + '\n');

    // Identities, enrolled from a devices.jsonl as `devloc enroll` does.
    const t0 = performance.now();
    const identities: WorkerIdentity[] = [];
    const records: string[] = [];
    for (let i = 0; i < o.terminals; i++) {
      const d = newDeviceKey(`BENCH-${String(i).padStart(6, '0')}`);
      if (d.kind !== 'device') throw new Error('unexpected key kind');
      identities.push({ index: i, deviceId: d.deviceId, signPublic: d.sign.public.toString('base64url'), signSecret: d.sign.secret.toString('base64url') });
      records.push(JSON.stringify({ deviceId: d.deviceId, publicKey: d.sign.public.toString('base64url'), model: 'devloc-bench', region: 'loopback' }));
    }
    const list = path.join(dir, 'devices.jsonl');
    writeFileSync(list, records.join('\n') + '\n');
    const authdState = path.join(dir, 'authd');
    const db = AuthDb.open(authdState, { create: true });
    try {
      const r = enrollFile(db, list);
      if (!r.ok || r.added !== o.terminals) throw new Error(`enrollment of ${o.terminals} bench devices failed (${r.errors} bad records)`);
    } finally {
      db.close();
    }
    o.log?.(`terminals: ${o.terminals} device identities made and enrolled in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

    const flags: Record<string, string[]> = {
      locatord: [
        '--rate', '0', '--query-rate', '0', '--query-source-rate', '0', '--receive-buffer', BUFFER, '--max-ttl', '3600',
        '--max-groups-per-terminal', '100000', '--max-group-members', '100000', '--reflector-port', '-1',
      ],
      // The per-terminal limits of issue 15 (submit rate, cool-down, authentications per device)
      // are off: the load generator is one program playing many terminals at a chosen pace.
      matchd: ['--rate', '0', '--receive-buffer', BUFFER, '--submit-interval', '0', '--match-cooldown', '0'],
      authd: ['--rate', '0', '--cookie-threshold', '-1', '--max-rate', '0', '--device-rate', '0', '--receive-buffer', BUFFER],
    };
    const common = (name: string): string[] => ['--listen', HOST, '--port', '0', '--state-dir', path.join(dir, name)];
    const [locatord, matchd] = await Promise.all([
      startDaemon('locatord', [...common('locatord'), '--service-key', files.locator, '--trust', files.authdPub, ...flags['locatord']!], dir, daemons),
      startDaemon('matchd', [...common('matchd'), '--service-key', files.match, '--trust', files.authdPub, ...flags['matchd']!], dir, daemons),
    ]);
    const sdb = AuthDb.open(authdState, { create: true });
    try {
      sdb.putService({ serviceId: 'locator', sealKey: locKey.seal.public, addr: formatAddress(locatord.address) }, true);
      sdb.putService({ serviceId: 'match', sealKey: matchKey.seal.public, addr: formatAddress(matchd.address) }, true);
    } finally {
      sdb.close();
    }
    const authd = await startDaemon('authd', [...common('authd'), '--key', files.authd, ...flags['authd']!], dir, daemons);
    return {
      dir, authd: authd.address, locatord: locatord.address, matchd: matchd.address,
      authdKidHex: authdKey.kid, authdSeal: authdKey.seal.public.toString('base64url'),
      identities, daemons, flags,
      stop: async () => {
        await Promise.all(daemons.map(stopDaemon));
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await Promise.all(daemons.map(stopDaemon));
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}
