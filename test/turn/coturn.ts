// Start a real coturn (`turnserver`, Debian package coturn) for a test: a temp directory with a
// turnserver.conf on 127.0.0.1 (coturn cannot bind port 0, so a free port is found by binding
// and closing, retried on EADDRINUSE), readiness proven by a STUN Binding answered over UDP and
// TCP connects, and a stop at teardown. Optional TLS with a throwaway self-signed certificate.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { decodeStun, encodeStun, Method } from '../../src/agent/turn/codec.js';
import { freePort, udpPortShared } from '../../src/common/preflight.js';

export const haveCoturn = (() => {
  try {
    execFileSync('turnserver', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

export interface Coturn {
  host: string;
  port: number;
  /** The turnserver process ID (for a test that kills the relay). */
  pid(): number | null;
  tlsPort?: number;
  /** PEM of the self-signed certificate (TLS only): pass as the client's CA. */
  cert?: string;
  secret: string;
  realm: string;
  dir: string;
  log(): string;
  stop(): Promise<void>;
}

export interface CoturnOptions {
  tls?: boolean;
  /** Extra turnserver.conf lines. */
  extra?: string[];
  /**
   * Run inside this network namespace (test/agent/netns.ts), listening and relaying on `ip`
   * (port 3478: the namespace is fresh), with the production peer policy of
   * contrib/coturn/turnserver.conf (private and loopback ranges denied; the lab's public
   * segment, 198.51.100.0/24, is TEST-NET-2 and stays allowed).
   */
  netns?: { name: string; ip: string };
}

/** The denied-peer-ip lines of the hardened configuration, for the namespace lab. */
function deniedPeers(): string[] {
  const conf = readFileSync(path.join(path.dirname(new URL(import.meta.url).pathname), '../../contrib/coturn/turnserver.conf'), 'utf8');
  return conf.split('\n').filter((l) => l.startsWith('denied-peer-ip='));
}

/** A STUN Binding answered inside namespace `ns` at ip:port (a probe run there with node). */
async function bindingAnsweredIn(ns: string, ip: string, port: number, deadline: number): Promise<void> {
  const probe = `const s=require('node:dgram').createSocket('udp4');const h=Buffer.from('000100002112a442'+require('node:crypto').randomBytes(12).toString('hex'),'hex');` +
    `s.on('message',()=>process.exit(0));s.send(h,${port},'${ip}');setTimeout(()=>process.exit(1),300);`;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const p = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', probe], { stdio: 'ignore' });
      p.on('exit', (code) => resolve(code === 0));
      p.on('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`coturn in ${ns} did not answer a STUN Binding`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function bindingAnswered(port: number, deadline: number): Promise<void> {
  const sock = dgram.createSocket('udp4');
  try {
    let answered = false;
    await new Promise<void>((resolve, reject) => {
      const tid = randomBytes(12);
      const req = encodeStun({ method: Method.Binding, cls: 'request', tid, attrs: {} });
      sock.on('message', (b) => {
        const r = decodeStun(b);
        if (r.ok && r.msg.tid.equals(tid)) {
          answered = true;
          resolve();
        }
      });
      const tick = (): void => {
        if (answered) return;
        if (Date.now() > deadline) return reject(new Error('coturn did not answer a STUN Binding'));
        sock.send(req, port, '127.0.0.1');
        setTimeout(tick, 100).unref();
      };
      tick();
    });
  } finally {
    sock.close();
  }
}

async function tcpAccepts(port: number, deadline: number): Promise<void> {
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`coturn does not accept TCP on ${port}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function startCoturn(o: CoturnOptions = {}, attempt = 0): Promise<Coturn> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'devloc-coturn-'));
  const host = o.netns?.ip ?? '127.0.0.1';
  const port = o.netns ? 3478 : await freePort('127.0.0.1', ['tcp', 'udp']);
  const tlsPort = o.tls ? (o.netns ? 5349 : await freePort('127.0.0.1', ['tcp', 'udp'])) : undefined;
  const secret = randomBytes(16).toString('hex');
  const realm = 'devloc.test';
  let cert: string | undefined;
  if (o.tls) {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', `/CN=${host}`,
      '-addext', `subjectAltName=IP:${host}`, '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem')], { stdio: 'ignore' });
    cert = readFileSync(path.join(dir, 'cert.pem'), 'utf8');
  }
  const conf = [
    `listening-ip=${host}`,
    `listening-port=${port}`,
    ...(o.tls ? [`tls-listening-port=${tlsPort}`, `cert=${path.join(dir, 'cert.pem')}`, `pkey=${path.join(dir, 'key.pem')}`] : ['no-tls']),
    'no-dtls',
    // Peers are on loopback in the tests, so the relay must relay to 127.0.0.0/8 from 127.0.0.1;
    // in a namespace lab the peers are on the public segment and the production denials apply.
    `relay-ip=${host}`,
    ...(o.netns ? deniedPeers() : ['allow-loopback-peers']),
    'no-multicast-peers',
    'use-auth-secret',
    `static-auth-secret=${secret}`,
    `realm=${realm}`,
    'fingerprint',
    'no-cli',
    'no-rfc5780',
    `pidfile=${path.join(dir, 'turnserver.pid')}`,
    `userdb=${path.join(dir, 'turndb')}`,
    `log-file=${path.join(dir, 'turn.log')}`,
    'simple-log',
    'no-stdout-log',
    'verbose',
    ...(o.extra ?? []),
  ];
  writeFileSync(path.join(dir, 'turnserver.conf'), conf.join('\n') + '\n');
  // coturn runs under a tiny shell that kills it when our end of its stdin closes: at stop(), and
  // also when this test process dies without its teardown (killed by a timeout), so no relay is
  // ever left behind. The shell exits when turnserver does.
  const prefix = o.netns ? `ip netns exec ${o.netns.name} ` : '';
  const proc: ChildProcess = spawn('sh', ['-c', `exec 3<&0; ${prefix}turnserver -c "$1" & p=$!; (read _ <&3; kill $p 2>/dev/null) & wait $p`, 'sh', path.join(dir, 'turnserver.conf')], {
    stdio: ['pipe', 'ignore', 'pipe'],
  });
  let stderr = '';
  proc.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const log = (): string => {
    try {
      return readFileSync(path.join(dir, 'turn.log'), 'utf8');
    } catch {
      return '';
    }
  };
  const stop = async (): Promise<void> => {
    proc.stdin!.end();
    if (proc.exitCode === null && proc.signalCode === null) await exited;
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const deadline = Date.now() + 15_000;
    await Promise.race([
      (async () => {
        if (o.netns) return bindingAnsweredIn(o.netns.name, host, port, deadline);
        await bindingAnswered(port, deadline);
        await tcpAccepts(port, deadline);
        if (tlsPort) await tcpAccepts(tlsPort, deadline);
      })(),
      exited.then(() => {
        throw new Error(`turnserver exited: ${stderr} ${log().slice(-2000)}`);
      }),
    ]);
  } catch (err) {
    const text = log();
    await stop();
    // Someone took the port between our probe and coturn's bind: try another.
    if (attempt < 3 && /Address already in use|Cannot bind/i.test(text + String(err))) return startCoturn(o, attempt + 1);
    throw err;
  }
  const pid = (): number | null => {
    try {
      return Number(readFileSync(path.join(dir, 'turnserver.pid'), 'utf8').trim()) || null;
    } catch {
      return null;
    }
  };
  // coturn binds with SO_REUSEPORT: on a port another turnserver took meanwhile (a test of the
  // other tap job, given the same free port) it starts all the same and the two share it.
  const running = pid();
  if (!o.netns && running !== null && udpPortShared(port, running)) {
    await stop();
    if (attempt < 3) return startCoturn(o, attempt + 1);
    throw new Error(`turnserver: port ${port} shared with another process, ${attempt + 1} times`);
  }
  return { host, port, pid, ...(tlsPort ? { tlsPort } : {}), ...(cert ? { cert } : {}), secret, realm, dir, log, stop };
}
