// Figures for issue 9 (README "Scaling out"): one locatord embedded vs one and two processes on
// Redis (--store redis, and --workers 2 on the same port), refresh/s and query/s through the
// same load generators and echo baseline as bench.ts, and Redis memory per registered
// terminal (INFO used_memory before and after `entries` registrations). Needs redis-server on
// the PATH; starts its own on a free port (never the system one).
import { rmSync } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import { cryptoCeiling } from './crypto-ceiling.js';
import { machineCpu, processTree, treeCpuS } from './cpu.js';
import type { ThroughputOptions, ThroughputResult } from './locatord.js';
import { benchLocatordThroughput, forkWorker, startBenchLocatord } from './locatord.js';
import type { RunResult } from './locatord-worker.js';
import { RedisStore } from '../src/locatord/store/redis.js';
import { startRedis } from '../test/scale/fixtures/redis-server.js';
import { withTeardown } from '../test/helpers/teardown.js';
import type { Presence } from '../src/locatord/store/types.js';

/** `fn` with a throwaway redis-server of its own (the tests' fixture), stopped afterwards. */
const withRedis = <T>(fn: (url: string) => Promise<T>): Promise<T> => withTeardown(async (t) => fn((await startRedis(t)).url));

export interface ScaleBenchResult {
  embedded: Pick<ThroughputResult, 'refreshPerS' | 'queryPerS' | 'refreshRatio' | 'queryRatio' | 'refreshPerCpuS' | 'queryPerCpuS' | 'lost'>;
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
  ({ refreshPerS: r.refreshPerS, queryPerS: r.queryPerS, refreshRatio: r.refreshRatio, queryRatio: r.queryRatio, refreshPerCpuS: r.refreshPerCpuS, queryPerCpuS: r.queryPerCpuS, lost: r.lost });

/** Redis bytes per registered terminal (INFO used_memory deltas over `entries` terminals). */
export interface RedisMemoryResult {
  /** Presence record alone (what earlier runs reported as "per terminal"). */
  bytes: number;
  /** Its session, sealed (0 when measured for the presence record only). */
  sessionBytes: number;
  /** Its shared replay window once full (REPLAY_WINDOW datagrams taken), over the first `windowTerminals` (0 if none). */
  windowBytes: number;
  windowTerminals: number;
  /** The three together: what a registered terminal that keeps refreshing costs Redis. */
  terminalBytes: number;
  valueBytes: number;
}

/**
 * Redis bytes per registration: `entries` typical records (IPv4, nickname, no extras), then,
 * unless `presenceOnly` (the scale section reports the record alone), their sessions and full
 * replay windows.
 */
export async function redisBytesPerTerminal(url: string, entries: number, presenceOnly = false): Promise<RedisMemoryResult> {
  const u = new URL(url);
  const store = new RedisStore({ nodes: [{ host: u.hostname, port: Number(u.port) }], sessionSealKey: randomBytes(32), instanceId: randomBytes(8).toString('hex'), limits: { maxMembers: 256, maxGroupsPerTerminal: 32 }, maxPending: 100_000, timeoutMs: 10_000, prefix: 'mem:' });
  try {
    const now = Date.now();
    const { encodePresence } = await import('../src/locatord/store/codec.js');
    const { REPLAY_WINDOW } = await import('../src/wire/constants.js');
    const ids = Array.from({ length: entries }, () => randomBytes(16).toString('hex'));
    const sids = Array.from({ length: entries }, () => randomBytes(16).toString('hex'));
    const each = async (f: (j: number) => Promise<unknown>, n = entries): Promise<number> => {
      for (let i = 0; i < n; i += 5000) {
        const batch: Promise<unknown>[] = [];
        for (let j = i; j < Math.min(n, i + 5000); j++) batch.push(f(j));
        await Promise.all(batch);
      }
      return store.usedMemory();
    };
    let valueBytes = 0;
    const m0 = await store.usedMemory();
    const m1 = await each((j) => {
      const p: Presence = {
        addr: { ip: `198.51.${(j >> 8) & 255}.${j & 255}`, port: 40000 + (j % 20000) }, netMode: 2, visibility: 0,
        sidHex: sids[j]!, seq: 1 + (j % 1000), regMs: now, expMs: now + 3_600_000, nickname: `terminal-${j}`,
      };
      if (j === 0) valueBytes = encodePresence({ ...p, inst: store.instanceId }).length;
      return store.putPresence(ids[j]!, p);
    });
    const bytes = Math.round((m1 - m0) / entries);
    if (presenceOnly) return { bytes, sessionBytes: 0, windowBytes: 0, windowTerminals: 0, terminalBytes: bytes, valueBytes };
    const exp = Math.floor(now / 1000) + 86_400;
    const m2 = await each((j) => store.saveSession({ sidHex: sids[j]!, locatorHex: ids[j]!, aud: 'locator', exp, kid: 'bench', t2s: randomBytes(32), s2t: randomBytes(32) }));
    // A terminal refreshing for an hour or more has had a whole window of datagrams taken
    // (measured over 10k terminals: 64 claims each, one after the other, take a while).
    const windowTerminals = Math.min(entries, 10_000);
    const m3 = await each(async (j) => {
      const owner = { locatorHex: ids[j]!, sidHex: sids[j]! };
      for (let seq = 1; seq <= REPLAY_WINDOW; seq++) await store.claimSeq(owner, seq, 86_400_000, `198.51.${(j >> 8) & 255}.${j & 255}|${40000 + (j % 20000)}`);
    }, windowTerminals);
    const sessionBytes = Math.round((m2 - m1) / entries);
    const windowBytes = Math.round((m3 - m2) / windowTerminals);
    return { bytes, sessionBytes, windowBytes, windowTerminals, terminalBytes: bytes + sessionBytes + windowBytes, valueBytes };
  } finally {
    await store.close();
  }
}

export interface RedisRefreshResult {
  embedded: ScaleBenchResult['embedded'];
  redis: ScaleBenchResult['embedded'];
  /** REFRESH per locatord CPU-second on Redis / embedded, same run. */
  refreshPerCpuRatio: number;
  memory: RedisMemoryResult;
  entries: number;
}

/** What starts a locatord on the Redis at `url` (the pending bound above the bench's load). */
const onRedis = (url: string): string[] => ['--store', 'redis', '--redis-url', url, '--redis-max-pending', '100000'];

/**
 * Issue 16 item 5: REFRESH per CPU-second of one locatord, embedded and on Redis in the same
 * run (one process each: the figure per locatord core), and Redis memory per terminal over
 * `entries` terminals (presence, session, full replay window).
 */
export async function benchRedisStore(o: ThroughputOptions & { entries?: number } = {}): Promise<RedisRefreshResult> {
  const entries = o.entries ?? 100_000;
  const embedded = await benchLocatordThroughput(o);
  return withRedis(async (url) => {
    const redis = await benchLocatordThroughput({ ...o, extraArgs: onRedis(url) });
    const memory = await redisBytesPerTerminal(url, entries);
    const ratio = embedded.refreshPerCpuS > 0 ? Math.round((redis.refreshPerCpuS / embedded.refreshPerCpuS) * 100) / 100 : 0;
    return { embedded: pick(embedded), redis: pick(redis), refreshPerCpuRatio: ratio, memory, entries };
  });
}

export async function benchScale(o: ThroughputOptions & { redisEntries?: number } = {}): Promise<ScaleBenchResult> {
  const entries = o.redisEntries ?? 100_000;
  const embedded = await benchLocatordThroughput(o);
  return withRedis(async (url) => {
    const redisArgs = onRedis(url);
    const redis1 = await benchLocatordThroughput({ ...o, extraArgs: redisArgs });
    const redis2 = await benchLocatordThroughput({ ...o, extraArgs: [...redisArgs, '--workers', '2'] });
    const mem = await redisBytesPerTerminal(url, entries, true);
    return {
      embedded: pick(embedded), redis1: pick(redis1), redis2: pick(redis2),
      echoRefreshSizedPerS: embedded.echoRefreshSizedPerS, echoQuerySizedPerS: embedded.echoQuerySizedPerS, idsPerQuery: embedded.idsPerQuery,
      redisEntries: entries, redisBytesPerTerminal: mem.bytes, presenceValueBytes: mem.valueBytes,
    };
  });
}

if (process.argv[1] && import.meta.url.endsWith(path.basename(process.argv[1]))) {
  const seconds = Number(process.env['SECONDS_PER_RUN'] ?? 5);
  const run = process.env['BENCH_REDIS_ONLY'] ? benchRedisStore({ seconds, entries: Number(process.env['BENCH_REDIS_ENTRIES'] ?? 100_000), sessionsPerWorker: Number(process.env['BENCH_SESSIONS'] ?? 500) }) : benchScale({ seconds });
  run.then((r) => process.stdout.write(`${JSON.stringify(r, null, 2)}\n`), (e: Error) => {
    process.stderr.write(`${e.stack}\n`);
    process.exit(1);
  });
}

export interface FirstRegisterResult {
  /** locatord processes serving the port (--workers). */
  workers: number;
  registrations: number;
  registrationsPerS: number;
  /** Registrations/s the cores could do with nothing but the ticket's Ed25519 verify and the X25519. */
  ceilingPerS: number;
  ceilingRatio: number;
  cryptoUsPerRegistration: number;
  /** CPU of locatord (primary and workers) per registration, us. */
  cpuUsPerRegistration: number;
  /** cryptoUsPerRegistration / cpuUsPerRegistration: the ceiling ratio when the cores are locatord's own. */
  cpuCeilingRatio: number;
  /** The load generators' CPU and everything else's (Redis, other processes) per registration, us. */
  generatorCpuUsPerRegistration: number;
  othersCpuUsPerRegistration: number;
  machineBusy: number;
  lost: number;
}

/**
 * The first REGISTER of a session (ticket signature + X25519 at locatord) against
 * `devloc-locatord --workers N --store redis` (--workers needs Redis), beside the crypto ceiling
 * measured in the same run (authd.ts cryptoCeiling: one Ed25519 verify and one X25519 per
 * registration, times the cores). The tickets are made by the load generators before the clock
 * starts; their CPU while registering and the rest of the machine's are reported beside it.
 * `warmupSessionsPerWorker` registrations per generator (default 1,000) are made untimed first.
 */
export async function benchFirstRegister(o: { workers?: number; sessionsPerWorker?: number; warmupSessionsPerWorker?: number; window?: number } = {}): Promise<FirstRegisterResult> {
  const c = cryptoCeiling();
  const workers = o.workers ?? c.cores;
  const cryptoUs = c.verifyUs + c.x25519Us;
  const ceilingPerS = (c.cores * 1e6) / cryptoUs;
  return withRedis(async (url) => {
    const { dir, loc, setup } = await startBenchLocatord(['--store', 'redis', '--redis-url', url, '--redis-max-pending', '100000', '--workers', String(workers)]);
    const children: ChildProcess[] = [loc.proc];
    try {
      await loc.waitFor(() => loc.lines.filter((l) => l['msg'] === 'listening').length >= workers);
      const gens = [forkWorker(), forkWorker()];
      children.push(...gens.map((g) => g.proc));
      // Untimed first: a fresh daemon's workers run their first thousands of registrations in
      // the interpreter (measured: 915 us of locatord CPU per registration in a first round of
      // 8,000, 674 us in the second), which is start-up, not what a registration costs.
      const warmup = o.warmupSessionsPerWorker ?? 1000;
      if (warmup > 0) {
        await Promise.all(gens.map((g) => g.ask(setup(warmup))));
        await Promise.all(gens.map((g) => g.ask<RunResult>({ cmd: 'register', window: o.window ?? 64 })));
      }
      await Promise.all(gens.map((g) => g.ask(setup(o.sessionsPerWorker ?? 2000))));
      const tree = processTree(loc.proc.pid!);
      const genPids = gens.map((g) => g.proc.pid!);
      const before = { loc: treeCpuS(tree), gen: treeCpuS(genPids), machine: machineCpu() };
      const reg = await Promise.all(gens.map((g) => g.ask<RunResult>({ cmd: 'register', window: o.window ?? 64 })));
      const after = { loc: treeCpuS(tree), gen: treeCpuS(genPids), machine: machineCpu() };
      const registrations = reg.reduce((a, r) => a + r.answered, 0);
      const registrationsPerS = Math.round((registrations * 1000) / Math.max(...reg.map((r) => r.ms)));
      const perRegUs = (a: number | null | undefined, b: number | null | undefined): number =>
        (a != null && b != null && registrations > 0 ? Math.round(((b - a) * 1e6) / registrations) : 0);
      const cpuUs = perRegUs(before.loc, after.loc);
      const generatorUs = perRegUs(before.gen, after.gen);
      const machineUs = perRegUs(before.machine?.busyS, after.machine?.busyS);
      const m0 = before.machine;
      const m1 = after.machine;
      return {
        workers, registrations, registrationsPerS, ceilingPerS: Math.round(ceilingPerS), ceilingRatio: Math.round((registrationsPerS / ceilingPerS) * 100) / 100,
        cryptoUsPerRegistration: Math.round(cryptoUs), cpuUsPerRegistration: cpuUs, cpuCeilingRatio: cpuUs > 0 ? Math.round((cryptoUs / cpuUs) * 100) / 100 : 0,
        generatorCpuUsPerRegistration: generatorUs, othersCpuUsPerRegistration: Math.max(0, machineUs - cpuUs - generatorUs),
        machineBusy: m0 && m1 ? Math.round(((m1.busyS - m0.busyS) / Math.max(1e-9, m1.totalS - m0.totalS)) * 100) / 100 : 0,
        lost: reg.reduce((a, r) => a + r.lost, 0),
      };
    } finally {
      for (const ch of children) ch.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
