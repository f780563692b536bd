// Figures for issue 9 (README "Scaling out"): one locatord embedded vs one and two processes on
// Redis (--store redis, and --workers 2 on the same port), refresh/s and query/s through the
// same load generators and echo baseline as bench.ts, and Redis memory per registered
// terminal (INFO used_memory before and after `entries` registrations). Needs redis-server on
// the PATH; starts its own on a free port (never the system one).
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { ThroughputOptions, ThroughputResult } from './locatord.js';
import { benchLocatordThroughput } from './locatord.js';
import { RedisStore } from '../src/locatord/store/redis.js';
import type { Presence } from '../src/locatord/store/types.js';

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

async function withRedis<T>(fn: (url: string) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(path.join(tmpdir(), 'scale-bench-redis-'));
  const port = await freePort();
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' });
  try {
    for (let i = 0; i < 200; i++) {
      const ok = await new Promise<boolean>((resolve) => {
        const s = net.createConnection({ host: '127.0.0.1', port }, () => { s.destroy(); resolve(true); });
        s.on('error', () => resolve(false));
      });
      if (ok) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    return await fn(`redis://127.0.0.1:${port}/0`);
  } finally {
    proc.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
}

export interface ScaleBenchResult {
  embedded: Pick<ThroughputResult, 'refreshPerS' | 'queryPerS' | 'refreshRatio' | 'queryRatio' | 'lost'>;
  redis1: ScaleBenchResult['embedded'];
  redis2: ScaleBenchResult['embedded'];
  echoRefreshSizedPerS: number;
  echoQuerySizedPerS: number;
  idsPerQuery: number;
  redisEntries: number;
  redisBytesPerTerminal: number;
  presenceValueBytes: number;
}

const pick = (r: ThroughputResult): ScaleBenchResult['embedded'] =>
  ({ refreshPerS: r.refreshPerS, queryPerS: r.queryPerS, refreshRatio: r.refreshRatio, queryRatio: r.queryRatio, lost: r.lost });

/** Redis bytes per registration: `entries` typical records (IPv4, nickname, no extras). */
export async function redisBytesPerTerminal(url: string, entries: number): Promise<{ bytes: number; valueBytes: number }> {
  const u = new URL(url);
  const store = new RedisStore({ nodes: [{ host: u.hostname, port: Number(u.port) }], sessionSealKey: randomBytes(32), instanceId: randomBytes(8).toString('hex'), limits: { maxMembers: 256, maxGroupsPerTerminal: 32 }, maxPending: 100_000, timeoutMs: 10_000, prefix: 'mem:' });
  try {
    const before = await store.usedMemory();
    const now = Date.now();
    const { encodePresence } = await import('../src/locatord/store/codec.js');
    let valueBytes = 0;
    for (let i = 0; i < entries; i += 5000) {
      const batch: Promise<void>[] = [];
      for (let j = i; j < Math.min(entries, i + 5000); j++) {
        const p: Presence = {
          addr: { ip: `198.51.${(j >> 8) & 255}.${j & 255}`, port: 40000 + (j % 20000) }, netMode: 2, visibility: 0,
          sidHex: randomBytes(16).toString('hex'), seq: 1 + (j % 1000), regMs: now, expMs: now + 3_600_000, nickname: `terminal-${j}`,
        };
        if (j === 0) valueBytes = encodePresence({ ...p, inst: store.instanceId }).length;
        batch.push(store.putPresence(randomBytes(16).toString('hex'), p));
      }
      await Promise.all(batch);
    }
    const after = await store.usedMemory();
    return { bytes: Math.round((after - before) / entries), valueBytes };
  } finally {
    await store.close();
  }
}

export async function benchScale(o: ThroughputOptions & { redisEntries?: number } = {}): Promise<ScaleBenchResult> {
  const entries = o.redisEntries ?? 100_000;
  const embedded = await benchLocatordThroughput(o);
  return withRedis(async (url) => {
    const redisArgs = ['--store', 'redis', '--redis-url', url, '--redis-max-pending', '100000'];
    const redis1 = await benchLocatordThroughput({ ...o, extraArgs: redisArgs });
    const redis2 = await benchLocatordThroughput({ ...o, extraArgs: [...redisArgs, '--workers', '2'] });
    const mem = await redisBytesPerTerminal(url, entries);
    return {
      embedded: pick(embedded), redis1: pick(redis1), redis2: pick(redis2),
      echoRefreshSizedPerS: embedded.echoRefreshSizedPerS, echoQuerySizedPerS: embedded.echoQuerySizedPerS, idsPerQuery: embedded.idsPerQuery,
      redisEntries: entries, redisBytesPerTerminal: mem.bytes, presenceValueBytes: mem.valueBytes,
    };
  });
}

if (process.argv[1] && import.meta.url.endsWith(path.basename(process.argv[1]))) {
  const seconds = Number(process.env['SECONDS_PER_RUN'] ?? 5);
  benchScale({ seconds }).then((r) => process.stdout.write(`${JSON.stringify(r, null, 2)}\n`), (e: Error) => {
    process.stderr.write(`${e.stack}\n`);
    process.exit(1);
  });
}
