// Errors that say what to change. `preflight` is what --check-config adds to the configuration
// checks: the state directory is writable (or can be created), socket directories likewise, the
// ports are free (bound and closed again). `explainStartError` turns an OS error at start
// (EADDRINUSE, EACCES, EEXIST, ENOENT, ENOTDIR) into a line naming the option and value to
// change, and where that value was set. `portFree`, `freePort` and `udpPortShared` also serve
// `devloc demo` (and the tests' and benchmarks' servers).
import { accessSync, constants, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { createSocket } from 'node:dgram';
import { dirname, resolve } from 'node:path';
import type { Config, Spec } from './config.js';
import { str } from './config.js';
import { parseAddress } from '../wire/addr.js';

/** Options whose value is a UDP port bound on `listen`: `port` and `*-port` numbers. */
function portKeys(spec: Spec): string[] {
  return Object.keys(spec).filter((k) => spec[k]!.type === 'number' && (k === 'port' || k.endsWith('-port')));
}

/** Options whose value is a directory the daemon writes in, or a file it creates. */
const dirKeys = ['state-dir'];
const createdFileKeys = ['control-socket'];

/** Null when `dir` is a writable directory or can be created; else why not. */
function writableDir(dir: string): string | null {
  let p = resolve(dir);
  let exists = true;
  for (;;) {
    try {
      const st = statSync(p);
      if (!st.isDirectory()) return exists ? `${p} is not a directory` : `${p} is not a directory (needed to create ${dir})`;
      accessSync(p, constants.W_OK | constants.X_OK);
      return null;
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'EACCES' || e.code === 'EPERM' || e.code === 'EROFS') return exists ? `${p}: permission denied (not writable)` : `cannot create ${dir}: ${p} is not writable`;
      if (e.code !== 'ENOENT' && e.code !== 'ENOTDIR') return `${p}: ${e.code ?? e.message}`;
      exists = false;
      const up = dirname(p);
      if (up === p) return `cannot create ${dir}`;
      p = up;
    }
  }
}

/**
 * A socket bound to `host`:`port` (0: any free port), exclusively, or the error of the bind; held
 * until `close`. (portFree and freePort bind and close at once; the tests hold a port with it to
 * make a daemon's bind fail.)
 */
export function bindPort(protocol: 'udp' | 'tcp', host: string, port: number): Promise<{ port: number; close: () => Promise<void> }> {
  return new Promise((resolve, reject) => {
    if (protocol === 'udp') {
      const s = createSocket(host.includes(':') ? 'udp6' : 'udp4');
      s.once('error', (err) => {
        s.close();
        reject(err);
      });
      s.bind({ address: host, port, exclusive: true }, () =>
        resolve({ port: s.address().port, close: () => new Promise<void>((done) => s.close(() => done())) }));
    } else {
      const s = createServer();
      s.once('error', reject);
      s.listen({ host, port, exclusive: true }, () => {
        const bound = s.address();
        resolve({ port: typeof bound === 'object' && bound ? bound.port : 0, close: () => new Promise<void>((done) => s.close(() => done())) });
      });
    }
  });
}

/** Null when `protocol` `host`:`port` can be bound right now (bound and closed again); else why not. */
export async function portFree(protocol: 'udp' | 'tcp', host: string, port: number): Promise<string | null> {
  try {
    await (await bindPort(protocol, host, port)).close();
    return null;
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    return e.code === 'EADDRINUSE' ? 'in use' : (e.code ?? e.message);
  }
}

/**
 * A port on `host` that every protocol of `protocols` can bind right now (bound and closed again),
 * for a server started next: the demo's relay and the tests' and benchmarks' redis-server and
 * coturn. Another process can still take it before the server binds, so the caller checks that
 * its own server answers there (`udpPortShared`, `expectOwnServers` in the tests).
 */
export async function freePort(host: string, protocols: readonly ('udp' | 'tcp')[]): Promise<number> {
  const [first, ...rest] = protocols;
  if (first === undefined) throw new Error('freePort: no protocol');
  for (let attempt = 1; ; attempt++) {
    const held = [await bindPort(first, host, 0)];
    const port = held[0]!.port;
    try {
      for (const p of rest) held.push(await bindPort(p, host, port));
      return port;
    } catch (err) {
      // Free for the first protocol and taken for another: any other port will do.
      if (attempt >= 20) throw err;
    } finally {
      await Promise.all(held.map((h) => h.close()));
    }
  }
}

/**
 * Whether a UDP socket of another process than `pid` is bound to `port` on 127.0.0.1 or on every
 * address, IPv4 or dual-stack IPv6 (`::`, which also receives IPv4 datagrams, or `::ffff:127.0.0.1`)
 * (Linux: /proc/net/udp, /proc/net/udp6 and /proc/<pid>/fd; false where they cannot be read).
 * coturn binds with SO_REUSEPORT, so a second turnserver on a port already held by one (two demos
 * started at once) does not fail: the two share it silently and the kernel spreads datagrams over both.
 */
export function udpPortShared(port: number, pid: number): boolean {
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  // /proc/net/udp6 writes an address as four 32-bit words, each in the host's (little-endian) order.
  const bound = new Set([`0100007F:${hexPort}`, `00000000:${hexPort}`, `${'0'.repeat(32)}:${hexPort}`, `0000000000000000FFFF00000100007F:${hexPort}`]);
  const inodes: (string | undefined)[] = [];
  for (const table of ['/proc/net/udp', '/proc/net/udp6']) {
    let text: string;
    try {
      text = readFileSync(table, 'utf8');
    } catch {
      continue; // no IPv6 (or no /proc): nothing bound there
    }
    // Fields: sl, local_address, rem_address, st, tx:rx, tr:when, retrnsmt, uid, timeout, inode.
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (bound.has(f[1] ?? '')) inodes.push(f[9]);
    }
  }
  const own = new Set<string>();
  try {
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
        if (m) own.add(m[1]!);
      } catch {
        /* closed meanwhile */
      }
    }
  } catch {
    return false;
  }
  return inodes.some((i) => i !== undefined && !own.has(i));
}

/** Name an option for a message: `--state-dir /x (set at /etc/devloc/authd.conf:3)`. */
function named(key: string, value: unknown, origins: Record<string, string>): string {
  const origin = origins[key];
  const where = origin && origin.startsWith('--') ? '' : origin ? ` (set at ${origin})` : ' (the default)';
  return `--${key} ${String(value)}${where}`;
}

/**
 * The resource checks of --check-config: every problem found, each naming its option, and the
 * warnings the start would log (a file at its default the daemon runs without: optionalAtDefault).
 */
export async function preflight(spec: Spec, config: Config, origins: Record<string, string> = {}): Promise<{ problems: string[]; warnings: string[] }> {
  const problems: string[] = [];
  const warnings: string[] = [];
  for (const k of dirKeys) {
    if (!Object.hasOwn(spec, k) || !str(config, k)) continue;
    const why = writableDir(str(config, k));
    if (why) problems.push(`${named(k, str(config, k), origins)}: ${why}`);
  }
  for (const k of createdFileKeys) {
    if (!Object.hasOwn(spec, k) || !str(config, k)) continue;
    const why = writableDir(dirname(str(config, k)));
    if (!why) continue;
    // As the start does: without a file at its default it runs (and warns); a configured one it must have.
    if (spec[k]!.optionalAtDefault && origins[k] === undefined) warnings.push(`${named(k, str(config, k), origins)}: ${why}: the daemon would start without it`);
    else problems.push(`${named(k, str(config, k), origins)}: ${why}`);
  }
  const host = Object.hasOwn(spec, 'listen') ? str(config, 'listen') : '';
  if (host) {
    for (const k of portKeys(spec)) {
      const port = Number(config[k]);
      if (!(port > 0)) continue;
      // An alternate port of a socket that is off (`reflector-port -1`: no reflector) is not bound.
      const main = k.endsWith('-alt-port') ? `${k.slice(0, -'-alt-port'.length)}-port` : undefined;
      if (main !== undefined && Object.hasOwn(spec, main) && Number(config[main]) < 0) continue;
      const why = await portFree('udp', host, port);
      if (why) problems.push(`${named(k, port, origins)}: UDP ${host.includes(':') ? `[${host}]` : host}:${port} ${why}`);
    }
  }
  const ml = parseAddress(str(config, 'metrics-listen'));
  if (ml && ml.port > 0) {
    const why = await portFree('tcp', ml.ip, ml.port);
    if (why) problems.push(`${named('metrics-listen', str(config, 'metrics-listen'), origins)}: TCP ${why}`);
  }
  return { problems, warnings };
}

/** An OS error at start, explained: the line for people and the option it is about. */
export interface StartError {
  /** Names the option, its value and where it was set, and what to change. */
  text: string;
  /** The option to change (`reflector-port`, `state-dir`, ...), without dashes. */
  option: string;
}

/** The log fields of a start error: the OS error's `code` (EADDRINUSE, ...) and the option to change, where known. */
export function startErrorFields(err: unknown, explained: StartError | null): { code?: string; option?: string } {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return { ...(typeof code === 'string' ? { code } : {}), ...(explained ? { option: explained.option } : {}) };
}

/**
 * An OS error from starting a daemon, as a line naming the option to change; null when the error
 * is not one we can attribute (the caller then reports it as it is).
 */
export function explainStartError(err: unknown, spec: Spec, config: Config, origins: Record<string, string> = {}): StartError | null {
  const e = err as NodeJS.ErrnoException & { port?: number; address?: string };
  if (!(e instanceof Error) || typeof e.code !== 'string') return null;
  if ((e.code === 'EADDRINUSE' || e.code === 'EADDRNOTAVAIL' || e.code === 'EACCES') && (e.syscall === 'bind' || e.syscall === 'listen') && typeof e.port === 'number' && !e.address?.startsWith('/')) {
    const why = e.code === 'EADDRINUSE' ? 'is in use' : e.code === 'EADDRNOTAVAIL' ? 'is not an address of this host' : 'needs privileges';
    const where = `${e.address?.includes(':') ? `[${e.address}]` : e.address}:${e.port}`;
    const key = portKeys(spec).find((k) => Number(config[k]) === e.port && e.port !== 0);
    if (key) return { option: key, text: `${named(key, e.port, origins)}: ${where} ${why}; choose another --${key} or stop what holds it` };
    const ml = parseAddress(str(config, 'metrics-listen'));
    if (ml && ml.port === e.port) return { option: 'metrics-listen', text: `${named('metrics-listen', str(config, 'metrics-listen'), origins)}: ${where} ${why}` };
    if (e.code === 'EADDRNOTAVAIL' && Object.hasOwn(spec, 'listen')) return { option: 'listen', text: `${named('listen', str(config, 'listen'), origins)}: ${where} ${why}` };
  }
  // A Unix socket's listen() error carries the path as `address`.
  const errPath = typeof e.path === 'string' ? e.path : typeof e.address === 'string' && e.address.startsWith('/') ? e.address : undefined;
  if (errPath !== undefined && ['EACCES', 'EPERM', 'EEXIST', 'ENOENT', 'ENOTDIR', 'EROFS', 'EISDIR', 'EADDRINUSE'].includes(e.code)) {
    const path = resolve(errPath);
    // The option whose value is this path, a directory above it (a file in the state dir) or
    // below it (a parent directory that had to be created).
    const key = Object.keys(spec).find((k) => {
      if (spec[k]!.type !== 'string' || !str(config, k)) return false;
      const v = resolve(str(config, k));
      return v === path || path.startsWith(v + '/') || v.startsWith(path + '/');
    });
    if (!key) return null;
    const what: Record<string, string> = {
      EACCES: 'permission denied', EPERM: 'operation not permitted', EEXIST: 'already exists', ENOENT: 'does not exist',
      ENOTDIR: 'a path component is not a directory', EROFS: 'read-only file system', EISDIR: 'is a directory',
      EADDRINUSE: 'in use by another process',
    };
    const op = e.syscall ? `${e.syscall} ` : '';
    return { option: key, text: `${named(key, str(config, key), origins)}: ${op}${errPath}: ${what[e.code]}; change --${key} or the ownership/mode of ${errPath}` };
  }
  return null;
}
