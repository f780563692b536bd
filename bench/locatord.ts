// Benchmarks of devloc-locatord, for `npm run bench` (the lead wires these in). Each function
// returns a plain object of figures.
//
// Throughput: a locatord child process on loopback, driven by `workers` load-generator
// processes (locatord-worker.ts), each with its own sessions, keeping `window` requests outstanding.
// The same workers then drive a bare node:dgram echo server with the same datagrams, so the
// figures are also given as a ratio to what the machine's UDP path does with no work at all.
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startDaemon } from '../src/common/spawn.js';
import type { Address } from '../src/wire/addr.js';
import type { KeyFile } from '../src/wire/keys.js';
import { generatePair, keyFileToJson, newKid, publicOf, publicToJson } from '../src/wire/keys.js';
import { processTree, treeCpuS } from './cpu.js';
import { median } from './stats.js';
import type { Child } from './procs.js';
import { forkSibling } from './procs.js';
import type { RunResult, WorkerCommand } from './locatord-worker.js';

export type { Child } from './procs.js';

/** A bench/locatord-worker.ts child (load generator, echo server, in-process measurements). */
export function forkWorker(extraArgv: string[] = []): Child {
  return forkSibling('locatord-worker', { execArgv: extraArgv, stdout: 'ignore' });
}

type RunCommand = Extract<WorkerCommand, { cmd: 'run' }>;

/**
 * Untimed load before measuring: `seconds` of REFRESH, then of QUERY_ADDR, to each of `targets`
 * (undefined: the generators' own daemon). A fresh daemon compiles its handlers in its first
 * second of load, which is start-up, not what a request costs. The locatord section and scale1m.
 */
export async function warmUp(all: (m: WorkerCommand) => Promise<RunResult[]>, run: Omit<RunCommand, 'cmd' | 'kind' | 'seconds' | 'target'>, seconds: number, targets: (Address | undefined)[] = [undefined]): Promise<void> {
  if (seconds <= 0) return;
  for (const kind of ['REFRESH', 'QUERY_ADDR'] as const) {
    for (const target of targets) await all({ cmd: 'run', kind, seconds, ...run, ...(target ? { target } : {}) });
  }
}

export interface ThroughputOptions {
  /** Load-generator processes (at least 2). */
  workers?: number;
  /** Sessions each worker opens. */
  sessionsPerWorker?: number;
  /** Requests each worker keeps outstanding. */
  window?: number;
  /** Seconds per measurement. */
  seconds?: number;
  /**
   * Seconds of REFRESH and of QUERY_ADDR, to locatord and to the echo server, sent untimed
   * before measuring (default 1; 0: none): a fresh daemon compiles its handlers in its first
   * second of load, which is start-up, not what a request costs (scale1m.ts found the same).
   */
  warmupSeconds?: number;
  /** Locator IDs per QUERY_ADDR. */
  idsPerQuery?: number;
  /**
   * Times each pair of measurements behind a CPU-per-datagram ratio (locatord's, then the echo
   * server's, of the same load; the order alternates) is taken; the ratio is of the two medians
   * (default 1). One 3-second measurement moves by up to +-10% here, a ratio of two of them more.
   */
  rounds?: number;
  /** More locatord flags (scale.ts: --store redis, --workers). */
  extraArgs?: string[];
  /** Profile locatord's CPU into this directory (node --cpu-prof; written as it stops). */
  cpuProfDir?: string;
  /**
   * Also drive echo servers that spend this many microseconds of pure CPU on each REFRESH-sized
   * datagram (none by default; the locatord section of `devloc bench` asks for [6, 12]): how the
   * UDP path's cost per datagram grows with the server's own work, i.e. what "x echo" allows a
   * daemon.
   */
  echoWorkUs?: number[];
  /**
   * Also measure QUERY_ADDR with each of these numbers of IDs, against locatord and the echo
   * server (issue 16 item 2's QUERY_ADDR target is for 1 ID; the main query phase uses
   * `idsPerQuery`).
   */
  moreQueryIds?: number[];
}

export interface ThroughputResult {
  workers: number;
  sessions: number;
  window: number;
  seconds: number;
  idsPerQuery: number;
  /** REGISTERs opening a session (ticket signature + X25519 each) per second. */
  firstRegistrationsPerS: number;
  refreshPerS: number;
  queryPerS: number;
  queryIdsPerS: number;
  /** The echo baseline with the same datagrams. */
  echoRefreshSizedPerS: number;
  echoQuerySizedPerS: number;
  /** locatord / echo. */
  refreshRatio: number;
  queryRatio: number;
  /** REFRESHes answered per CPU-second of locatord (its whole process tree: workers included). */
  refreshPerCpuS: number;
  queryPerCpuS: number;
  /** The same datagrams answered per CPU-second of the echo server (issue 16 item 2's yardstick). */
  echoRefreshPerCpuS: number;
  echoQueryPerCpuS: number;
  /** locatord's CPU per datagram in echo server CPUs per datagram, same run (target: REFRESH <= 2, QUERY_ADDR(1) <= 2.5): the ratio of the rounds' medians. */
  refreshCpuXEcho: number;
  queryCpuXEcho: number;
  /** Each round's own ratio (its two measurements side by side). */
  refreshCpuXEchoRounds: number[];
  queryCpuXEchoRounds: number[];
  /**
   * Echo servers doing `workUs` of pure CPU per REFRESH-sized datagram: their CPU per datagram in
   * bare-echo CPUs per datagram (`cpuXEcho`), and the part of it beyond the work itself, in us
   * (`ioUs`; the bare echo's whole cost is `ioUs` at workUs 0).
   */
  echoWithWork: { workUs: number; cpuXEcho: number; ioUs: number }[];
  /** QUERY_ADDR of `ids` IDs (moreQueryIds): per CPU-second of locatord and of the echo server, and their ratio. */
  queriesByIds: { ids: number; perCpuS: number; echoPerCpuS: number; cpuXEcho: number; cpuXEchoRounds: number[] }[];
  lost: number;
}

export const perS = (rs: RunResult[]): number => {
  const ms = Math.max(...rs.map((r) => r.ms));
  return Math.round((rs.reduce((a, r) => a + r.answered, 0) * 1000) / ms);
};

/**
 * Preloaded into a locatord child (NODE_OPTIONS --import) when the bench wants its GC pauses:
 * every 'gc' performance entry as a line "<start, epoch ms> <duration ms> <kind>" appended to
 * $DEVLOC_BENCH_GC_LOG, batched every 100 ms. A data: URL, so it needs neither tsx nor a build,
 * and the daemon's code is the one users run.
 */
const GC_LOGGER = `data:text/javascript,${encodeURIComponent([
  'import { PerformanceObserver, performance } from "node:perf_hooks";',
  'import { appendFileSync } from "node:fs";',
  'const file = process.env.DEVLOC_BENCH_GC_LOG; let lines = [];',
  'new PerformanceObserver((l) => { for (const e of l.getEntries()) lines.push(`${(performance.timeOrigin + e.startTime).toFixed(1)} ${e.duration.toFixed(3)} ${e.detail?.kind ?? 0}`); }).observe({ entryTypes: ["gc"] });',
  'setInterval(() => { if (lines.length) { appendFileSync(file, lines.join("\\n") + "\\n"); lines = []; } }, 100).unref();',
].join('\n'))}`;

/** One GC pause of a locatord child (GC_LOGGER): when it began (epoch ms), how long (ms), V8's kind (1 minor, 2 major, 4 incremental, 8 weak callbacks). */
export interface GcPause {
  atMs: number;
  ms: number;
  kind: number;
}

/** The pauses logged in `file` so far (none if it does not exist yet). */
export function readGcPauses(file: string): GcPause[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => {
    const [at, ms, kind] = l.split(' ').map(Number);
    return { atMs: at!, ms: ms!, kind: kind! };
  });
}

/**
 * A locatord child on loopback with fresh keys in a temporary directory (remove `dir` after),
 * no rate limits, hour-long registrations; `setup(n)` is the worker command opening n sessions
 * with tickets for it.
 */
export async function startBenchLocatord(extraArgs: string[] = [], o: {
  /** Profile locatord's CPU into this directory (written when it exits by SIGTERM). */
  cpuProfDir?: string;
  /** Run with the state directory (created) before the daemon starts (the snapshot bench writes its snapshot there). */
  beforeStart?: (stateDir: string) => Promise<void>;
  /** Its wait for log lines, "listening" included (ms). */
  timeoutMs?: number;
  /** Log its GC pauses to this file (readGcPauses). */
  gcLogFile?: string;
} = {}): Promise<{
  dir: string; loc: Awaited<ReturnType<typeof startDaemon>>; target: Address; setup: (sessions: number) => WorkerCommand;
}> {
  const dir = mkdtempSync(path.join(tmpdir(), 'locatord-bench-'));
  const sign = generatePair('ed25519');
  const kid = newKid();
  const service: KeyFile = { kind: 'service', service: 'locator', seal: generatePair('x25519') };
  const authd: KeyFile = { kind: 'authd', kid, sign, seal: generatePair('x25519') };
  writeFileSync(path.join(dir, 'service.key'), keyFileToJson(service), { mode: 0o600 });
  writeFileSync(path.join(dir, 'authd.pub'), publicToJson(publicOf(authd)));
  mkdirSync(path.join(dir, 'state'), { mode: 0o700 });
  await o.beforeStart?.(path.join(dir, 'state'));
  // --cpu-prof is not allowed in NODE_OPTIONS: node is started through a shell that adds it
  // (the profile is written when locatord exits by SIGTERM).
  const prefix = o.cpuProfDir ? ['sh', '-c', 'exec "$0" --cpu-prof --cpu-prof-dir="$DEVLOC_BENCH_CPU_PROF_DIR" "$@"'] : undefined;
  const env: NodeJS.ProcessEnv = {
    ...(o.cpuProfDir ? { DEVLOC_BENCH_CPU_PROF_DIR: o.cpuProfDir } : {}),
    ...(o.gcLogFile ? { DEVLOC_BENCH_GC_LOG: o.gcLogFile, NODE_OPTIONS: `${process.env['NODE_OPTIONS'] ?? ''} --import ${GC_LOGGER}`.trim() } : {}),
  };
  const loc = await startDaemon({ entry: 'locatord/main', env, ...(prefix ? { prefix } : {}), ...(o.timeoutMs ? { timeoutMs: o.timeoutMs } : {}), args: [
    '--listen', '127.0.0.1', '--port', '0', '--reflector-port', '-1', '--state-dir', path.join(dir, 'state'),
    '--service-key', path.join(dir, 'service.key'), '--trust', path.join(dir, 'authd.pub'),
    '--rate', '0', '--query-rate', '0', '--query-source-rate', '0', '--receive-buffer', String(8 << 20), '--max-ttl', '3600', '--default-ttl', '3600',
    ...extraArgs,
  ] });
  const target: Address = { ip: '127.0.0.1', port: Number(loc.listening['port']) };
  const setup = (sessions: number): WorkerCommand => ({
    cmd: 'setup', target, kid, audience: 'locator', sessions,
    authdSign: { public: sign.public.toString('base64url'), secret: sign.secret.toString('base64url') },
    servicePublic: service.seal.public.toString('base64url'),
  });
  return { dir, loc, target, setup };
}

/** First registrations/s, refresh/s and query/s against a locatord child, and the echo baseline. */
export async function benchLocatordThroughput(o: ThroughputOptions = {}): Promise<ThroughputResult> {
  const workers = Math.max(2, o.workers ?? 2);
  const sessionsPerWorker = o.sessionsPerWorker ?? 2000;
  const window = o.window ?? 64;
  const seconds = o.seconds ?? 5;
  const idsPerQuery = o.idsPerQuery ?? 4;
  const { dir, loc, setup } = await startBenchLocatord(o.extraArgs, o.cpuProfDir ? { cpuProfDir: o.cpuProfDir } : {});
  const children: ChildProcess[] = o.cpuProfDir ? [] : [loc.proc];
  try {
    const echo = forkWorker();
    children.push(echo.proc);
    const echoPort = (await echo.ask<{ port: number }>({ cmd: 'echo' })).port;
    const gens = Array.from({ length: workers }, () => forkWorker());
    children.push(...gens.map((g) => g.proc));
    await Promise.all(gens.map((g) => g.ask(setup(sessionsPerWorker))));
    const all = (m: WorkerCommand): Promise<RunResult[]> => Promise.all(gens.map((g) => g.ask<RunResult>(m)));
    const reg = await all({ cmd: 'register', window });
    const tree = processTree(loc.proc.pid!);
    const echoTarget = { ip: '127.0.0.1', port: echoPort };
    await warmUp(all, { window, idsPerQuery }, o.warmupSeconds ?? 1, [undefined, echoTarget]);
    // Answers per CPU-second of locatord over the same run: a ratio that holds when the cores are shared.
    const perCpuS = async (m: WorkerCommand, pids = tree): Promise<[RunResult[], number]> => {
      const c0 = treeCpuS(pids);
      const rs = await all(m);
      const c1 = treeCpuS(pids);
      const answered = rs.reduce((a, r) => a + r.answered, 0);
      return [rs, c0 !== null && c1 !== null && c1 > c0 ? Math.round(answered / (c1 - c0)) : 0];
    };
    const xEcho = (own: number, echoes: number): number => (own > 0 && echoes > 0 ? Math.round((echoes / own) * 100) / 100 : 0);
    const rounds = Math.max(1, o.rounds ?? 1);
    /**
     * The same load `m` to locatord and to the echo server, `rounds` times, the order alternating:
     * each one's median per CPU-second, the ratio of the medians, each round's ratio, and the
     * first round's results (throughput and losses).
     */
    interface Paired { own: RunResult[]; echo: RunResult[]; ownPerCpuS: number; echoPerCpuS: number; cpuXEcho: number; cpuXEchoRounds: number[] }
    const paired = async (m: Extract<WorkerCommand, { cmd: 'run' }>): Promise<Paired> => {
      const owns: number[] = [];
      const echoes: number[] = [];
      const each: number[] = [];
      let first: [RunResult[], RunResult[]] | undefined;
      type Measured = [RunResult[], number];
      const toOwn = (): Promise<Measured> => perCpuS(m);
      const toEcho = (): Promise<Measured> => perCpuS({ ...m, target: echoTarget }, [echo.proc.pid!]);
      for (let r = 0; r < rounds; r++) {
        // Even rounds start with locatord, odd ones with the echo server.
        const ownFirst = r % 2 === 0;
        const ran: Measured[] = [];
        for (const run of ownFirst ? [toOwn, toEcho] : [toEcho, toOwn]) ran.push(await run());
        const [own, echoed] = ownFirst ? [ran[0]!, ran[1]!] : [ran[1]!, ran[0]!];
        first ??= [own[0], echoed[0]];
        owns.push(own[1]);
        echoes.push(echoed[1]);
        each.push(xEcho(own[1], echoed[1]));
      }
      const ownPerCpuS = Math.round(median(owns));
      const echoPerCpuS = Math.round(median(echoes));
      return { own: first![0], echo: first![1], ownPerCpuS, echoPerCpuS, cpuXEcho: xEcho(ownPerCpuS, echoPerCpuS), cpuXEchoRounds: each };
    };
    const refreshPair = await paired({ cmd: 'run', kind: 'REFRESH', seconds, window, idsPerQuery });
    const queryPair = await paired({ cmd: 'run', kind: 'QUERY_ADDR', seconds, window, idsPerQuery });
    const [refresh, echoRefresh, query, echoQuery] = [refreshPair.own, refreshPair.echo, queryPair.own, queryPair.echo];
    const [refreshPerCpuS, echoRefreshPerCpuS, queryPerCpuS, echoQueryPerCpuS] = [refreshPair.ownPerCpuS, refreshPair.echoPerCpuS, queryPair.ownPerCpuS, queryPair.echoPerCpuS];
    // A server that works longer per datagram leaves its clients waiting (asleep) longer, and each
    // answer then pays for waking one: the UDP path costs more per datagram than the bare echo's
    // (README, "CPU per request"). Echo servers that spin a known CPU time show by how much.
    const echoWithWork: ThroughputResult['echoWithWork'] = [];
    for (const workUs of o.echoWorkUs ?? []) {
      const busy = forkWorker();
      children.push(busy.proc);
      const port = (await busy.ask<{ port: number }>({ cmd: 'echo', workUs })).port;
      const [, perCpuSWorking] = await perCpuS({ cmd: 'run', kind: 'REFRESH', target: { ip: '127.0.0.1', port }, seconds, window, idsPerQuery }, [busy.proc.pid!]);
      busy.proc.kill('SIGKILL');
      if (perCpuSWorking > 0 && echoRefreshPerCpuS > 0) {
        echoWithWork.push({ workUs, cpuXEcho: xEcho(perCpuSWorking, echoRefreshPerCpuS), ioUs: Math.round((1e6 / perCpuSWorking - workUs) * 100) / 100 });
      }
    }
    const queriesByIds: ThroughputResult['queriesByIds'] = [];
    for (const ids of o.moreQueryIds ?? []) {
      const q = await paired({ cmd: 'run', kind: 'QUERY_ADDR', seconds, window, idsPerQuery: ids });
      queriesByIds.push({ ids, perCpuS: q.ownPerCpuS, echoPerCpuS: q.echoPerCpuS, cpuXEcho: q.cpuXEcho, cpuXEchoRounds: q.cpuXEchoRounds });
    }
    const refreshPerS = perS(refresh);
    const queryPerS = perS(query);
    const echoRefreshSizedPerS = perS(echoRefresh);
    const echoQuerySizedPerS = perS(echoQuery);
    return {
      workers, sessions: workers * sessionsPerWorker, window, seconds, idsPerQuery,
      firstRegistrationsPerS: perS(reg),
      refreshPerS, queryPerS, queryIdsPerS: queryPerS * idsPerQuery,
      echoRefreshSizedPerS, echoQuerySizedPerS,
      refreshRatio: Math.round((refreshPerS / echoRefreshSizedPerS) * 100) / 100,
      queryRatio: Math.round((queryPerS / echoQuerySizedPerS) * 100) / 100,
      refreshPerCpuS, queryPerCpuS, echoRefreshPerCpuS, echoQueryPerCpuS,
      refreshCpuXEcho: refreshPair.cpuXEcho, queryCpuXEcho: queryPair.cpuXEcho, refreshCpuXEchoRounds: refreshPair.cpuXEchoRounds, queryCpuXEchoRounds: queryPair.cpuXEchoRounds,
      echoWithWork, queriesByIds,
      lost: [...reg, ...refresh, ...query].reduce((a, r) => a + r.lost, 0),
    };
  } finally {
    for (const c of children) c.kill('SIGKILL');
    if (o.cpuProfDir) await loc.stop('SIGTERM', 30_000);
    rmSync(dir, { recursive: true, force: true });
  }
}

export interface TableResult {
  entries: number;
  /** V8 heap per registered terminal: record, key and lru-cache bookkeeping. */
  heapBytesPerEntry: number;
  rssBytesPerEntry: number;
  /** A sweep with nothing due (a table of 1M costs nothing to sweep). */
  sweepIdleMs: number;
  /** One sweep freeing half the table at once (all registered in the same second). */
  sweepExpireHalfMs: number;
  expired: number;
  sweepUsPerExpired: number;
  /** Sweep time per second of a full table of 90 s registrations turning over. */
  steadySweepMsPerS: number;
}

/** Memory per registered terminal and expiry sweep time, in-process table only (own child, --expose-gc). */
export async function benchTable(entries = 1_000_000, o: { nickname?: boolean } = {}): Promise<TableResult> {
  const child = forkWorker(['--expose-gc', '--max-old-space-size=4096']);
  try {
    return await child.ask<TableResult>({ cmd: 'table', entries, nickname: o.nickname ?? false });
  } finally {
    child.proc.kill('SIGKILL');
  }
}

export interface TerminalsMemoryResult {
  entries: number;
  /** Whole-process RSS growth per registered terminal, its session included. */
  rssBytesPerTerminal: number;
  heapBytesPerTerminal: number;
  arrayBufferBytesPerTerminal: number;
  externalBytesPerTerminal: number;
}

/** Process memory per registered terminal with its session (own child, --expose-gc). */
export async function benchTerminalsMemory(entries = 1_000_000): Promise<TerminalsMemoryResult> {
  const child = forkWorker(['--expose-gc', '--max-old-space-size=8192']);
  try {
    return await child.ask<TerminalsMemoryResult>({ cmd: 'terminals', entries });
  } finally {
    child.proc.kill('SIGKILL');
  }
}

/** Everything, for the README table. */
export async function benchLocatord(o: ThroughputOptions & { tableEntries?: number } = {}): Promise<Record<string, unknown>> {
  const entries = o.tableEntries ?? 1_000_000;
  return {
    throughput: await benchLocatordThroughput(o),
    table: await benchTable(entries),
    tableWithNicknames: await benchTable(entries, { nickname: true }),
  };
}

// `node --import tsx bench/locatord.ts` (or build/bench/locatord.js): print the figures.
if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  benchLocatord().then((r) => process.stdout.write(JSON.stringify(r, null, 2) + '\n'), (err: Error) => {
    process.stderr.write(`${err.stack ?? err.message}\n`);
    process.exit(1);
  });
}
