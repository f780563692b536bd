// Run a devloc program (src/<entry> through tsx) to its exit, for the operations tests.
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { keyFileToJson, newAuthdKey, newServiceKey, publicOf, publicToJson } from '../../src/wire/keys.js';
import type { SpawnOptions } from 'node:child_process';
import path from 'node:path';
import { root } from '../helpers/daemon.js';
import { bindPort } from '../../src/common/preflight.js';

export interface Exited {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `inheritEnv: false`: only `env` (a child of another user must not load tap's hooks, which write into .tap/). */
export function run(entry: string, args: string[], env: NodeJS.ProcessEnv = {}, opts: SpawnOptions = {}, inheritEnv = true): Promise<Exited> {
  return new Promise((resolve, reject) => {
    const node = [process.execPath, '--import', 'tsx', path.join(root, 'src', entry), ...args];
    // tap adds its process-info hook through NODE_OPTIONS even to a given env: env(1) drops it.
    const [cmd, ...argv] = inheritEnv ? node : ['env', '-u', 'NODE_OPTIONS', ...node];
    const p = spawn(cmd!, argv, {
      cwd: root, env: inheritEnv ? { ...process.env, ...env } : env, stdio: ['ignore', 'pipe', 'pipe'], ...opts,
    });
    let stdout = '';
    let stderr = '';
    p.stdout!.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    p.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    p.once('error', reject);
    p.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** A service key and a trusted authd public key in `dir`. */
export function keys(dir: string, service = 'locator'): { serviceKey: string; trust: string } {
  const authd = newAuthdKey();
  const sk = newServiceKey(service);
  if (authd.kind !== 'authd' || sk.kind !== 'service') throw new Error('keygen');
  mkdirSync(dir, { recursive: true });
  const serviceKey = path.join(dir, `${service}.key`);
  const trust = path.join(dir, 'authd.pub');
  writeFileSync(serviceKey, keyFileToJson(sk), { mode: 0o600 });
  writeFileSync(trust, publicToJson(publicOf(authd)));
  return { serviceKey, trust };
}

/** A UDP port on `address` (default 127.0.0.1) held by this process (to make a daemon's bind fail) until `close`; rejects if it cannot be bound. */
export const holdUdp = (address = '127.0.0.1'): Promise<{ port: number; close: () => Promise<void> }> => bindPort('udp', address, 0);
