// A throwaway devloc deployment for the "terminals" bench: keys, N device identities made and
// enrolled as `devloc device new` + `devloc enroll` do, the "locator" and "match" services
// registered with authd, and devloc-authd, devloc-locatord and devloc-matchd as child processes
// on 127.0.0.1 (port 0), all in a temporary directory removed at stop. The daemons run their
// real entry points with their defaults except the per-source limits, which are off: every
// simulated terminal shares 127.0.0.1, so per-IP rate limits and authd's cookie would measure
// themselves instead of the service. Each daemon watches a pipe from us and stops when we die.
import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AuthDb } from '../authd/db.js';
import { enrollFile } from '../authd/enroll.js';
import type { Address } from '../wire/addr.js';
import { formatAddress } from '../wire/addr.js';
import type { KeyFile } from '../wire/keys.js';
import { keyFileToJson, newAuthdKey, newDeviceKey, newServiceKey, publicOf, publicToJson } from '../wire/keys.js';
import type { WorkerIdentity } from './terminal-worker.js';

const HOST = '127.0.0.1';
const BUFFER = String(8 << 20);

export interface DaemonProcess {
  name: 'authd' | 'locatord' | 'matchd';
  proc: ChildProcess;
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

/** Stop when our stdin (a pipe from the bench) closes: the bench died without stopping us. */
const WATCHDOG = `data:text/javascript,${encodeURIComponent(
  'process.stdin.on("end",()=>process.kill(process.pid,"SIGTERM"));process.stdin.on("error",()=>{});process.stdin.resume();',
)}`;

/** node arguments starting `<daemon>/main` next to this file (through tsx from the sources). */
function daemonArgv(daemon: string): string[] {
  const here = fileURLToPath(import.meta.url);
  const fromSource = here.endsWith('.ts');
  const file = path.resolve(path.dirname(here), '..', daemon, `main${fromSource ? '.ts' : '.js'}`);
  return fromSource ? ['--import', import.meta.resolve('tsx'), file] : [file];
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function startDaemon(name: DaemonProcess['name'], args: string[], dir: string, started: DaemonProcess[]): Promise<DaemonProcess> {
  const log = path.join(dir, `${name}.log`);
  const fd = openSync(log, 'a');
  const proc = spawn(process.execPath, ['--import', WATCHDOG, ...daemonArgv(name), ...args], { stdio: ['pipe', fd, fd] });
  closeSync(fd);
  const d: DaemonProcess = { name, proc, log, address: { ip: HOST, port: 0 } };
  started.push(d);
  let exited: number | string | null = null;
  proc.once('exit', (code, sig) => (exited = code ?? sig));
  for (const end = Date.now() + 60_000; Date.now() < end;) {
    const text = readFileSync(log, 'utf8');
    for (const line of text.split('\n')) {
      if (!line.includes('"listening"')) continue;
      try {
        const l = JSON.parse(line) as { msg?: string; port?: number };
        if (l.msg === 'listening' && typeof l.port === 'number') {
          d.address = { ip: HOST, port: l.port };
          return d;
        }
      } catch {
        /* a partial line: read again */
      }
    }
    if (exited !== null) throw new Error(`devloc-${name} exited (${exited}) before listening:\n${text.trim().split('\n').slice(-3).join('\n')}`);
    await sleep(50);
  }
  throw new Error(`devloc-${name} did not start listening within 60 s (log ${log})`);
}

async function stopDaemon(d: DaemonProcess): Promise<void> {
  if (d.proc.exitCode !== null || d.proc.signalCode !== null) return;
  const exited = new Promise<void>((r) => d.proc.once('exit', () => r()));
  d.proc.kill('SIGTERM');
  const timer = setTimeout(() => d.proc.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

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
      matchd: ['--rate', '0', '--receive-buffer', BUFFER],
      authd: ['--rate', '0', '--cookie-threshold', '-1', '--max-rate', '0', '--receive-buffer', BUFFER],
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
