// How small the agent is: idle RSS and CPU seconds per hour of refreshing. Starts devloc-authd
// and devloc-locatord as child processes on 127.0.0.1 (so their work is not counted), then two
// embedded agents one after the other, each in its own process (agent-child.ts), whose CPU and
// wire bytes are measured from inside:
//   idle run  — locatord's own refresh interval (25 s): what an agent costs doing nothing;
//   busy run  — a refresh every `refreshS` seconds: the cost of one refresh, by difference.
// CPU per hour at the default 25 s interval = idle CPU rate x 3600 + 144 refreshes x cost of one.
// Footprint against bare Node.js in the same run (issue 20): the RSS of `node -e` doing nothing,
// of a `node -e` host embedding the library (a CommonJS host requiring dist/agent.cjs; and an ES
// module host importing dist/agent.js against bare ES module `node -e`) and of the devloc-agent
// daemon, each read from /proc by this process the same settling time after the child is ready
// (measured-process.ts: nothing in the measured processes opens a stream to report it; the
// hosts run side by side while the daemon settles); start to registered for the library and the daemon; bytes on the wire per hour
// (one refresh's datagrams, measured in the busy run, times the refreshes of an hour behind a NAT
// and on an open address, plus 28 bytes of IPv4 and UDP header each); and the V8 heap after a
// full GC every hour of two virtual days (agent-day.ts: agent, authd and locatord in one process
// on a virtual clock), its growth over the second day split into compiled code and the rest.
// For `npm run bench`: `benchAgent()` returns the figures, `formatAgentBench()` prints them.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AuthDb } from '../src/authd/db.js';
import { spawnDaemon, startDaemon } from '../src/common/spawn.js';
import { NAT_REFRESH_S, OPEN_REFRESH_S } from '../src/wire/constants.js';
import { keyFileToJson, newAuthdKey, newDeviceKey, newServiceKey, publicOf, publicToJson } from '../src/wire/keys.js';
import type { ChildResult, ChildSettings } from './agent-child.js';
import { bareNodeArgs, libraryHostArgs, measureChild, MEASURED_STDIO, measuredEnv, rssAfter, type LibraryHostSettings, type ModuleSystem } from './measured-process.js';
import type { DayResult, DaySettings } from './agent-day.js';

export interface AgentBenchOptions {
  /** Measured window of each run, seconds (default 20). */
  seconds?: number;
  /** Refresh interval of the busy run, seconds (default 1). */
  refreshS?: number;
  /** Progress lines (default: none). */
  log?: (line: string) => void;
}

export interface AgentBenchResult {
  /** RSS of the CommonJS host's idle agent (Node.js itself included), MiB. */
  idleRssMiB: number;
  /** V8 heap in use in the idle run's process (agent-child.ts), MiB. */
  idleHeapMiB: number;
  /** CPU time of one refresh (REFRESH, REFRESH_ACK, timers), ms. */
  cpuMsPerRefresh: number;
  /** CPU seconds per hour doing nothing but waiting (interface polls, timers). */
  idleCpuSecondsPerHour: number;
  /** CPU seconds per hour at the default refresh interval. */
  cpuSecondsPerHour: number;
  defaultRefreshS: number;
  /** RSS of bare `node -e` (nothing loaded), of the library's CommonJS host and of the daemon, MiB. */
  bareRssMiB: number;
  daemonRssMiB: number;
  libraryAboveBareMiB: number;
  daemonAboveBareMiB: number;
  /** The same for an ES module host (`import()` of dist/agent.js) against bare `node --input-type=module -e`, MiB. */
  bareModuleRssMiB: number;
  libraryModuleRssMiB: number;
  libraryModuleAboveBareMiB: number;
  /** Process start to registered (authenticate, register; no classification), ms. */
  libraryStartToRegisteredMs: number;
  daemonStartToRegisteredMs: number;
  /** Bytes on the wire (IPv4: payload + 28) per refresh, and per idle hour behind a NAT (25 s) and on an open address (300 s). */
  bytesPerRefresh: number;
  bytesPerHourNat: number;
  bytesPerHourOpen: number;
  openRefreshS: number;
  /** CPU seconds per hour on an open address (300 s refresh). */
  cpuSecondsPerHourOpen: number;
  /** V8 heap after GC at virtual hour 1 of the day run (agent, authd and locatord in one process), and its growth to hour 24. */
  heapAfterGcMiB: number;
  heapGrowth24hKiB: number;
  /**
   * Growth over the second virtual day (hours 24 to 48: the trend of the hourly samples, least
   * squares, times 24 h), of the whole heap, of its compiled code (machine code and bytecode with
   * their metadata) and of the rest (data, feedback vectors, V8's own lists), and of ArrayBuffer
   * memory outside the heap, KiB.
   */
  secondDayGrowthKiB: DayGrowthKiB;
  /** The same over the last virtual day of the run (hours DAY_HOURS - 24 to DAY_HOURS): whether the JIT's growth levels off. */
  lastDayGrowthKiB: DayGrowthKiB;
  /**
   * The same over the second virtual day of a run in V8's interpreter only (`--max-opt=0`:
   * nothing is optimised, so compiled code stays what start-up made): the program's own data.
   */
  dataSecondDayGrowthKiB: DayGrowthKiB;
  idle: ChildResult;
  busy: ChildResult;
  day: DayResult;
  /** The interpreter-only run (DATA_DAY_HOURS). */
  dataDay: DayResult;
  /** What ran: the distribution's bundles, or the tree's modules ("node" compiled, "tsx" TypeScript at run time: RSS includes the compiler). */
  runtime: 'bundle' | 'node' | 'tsx';
}

const here = path.dirname(fileURLToPath(import.meta.url));
const typescript = import.meta.url.endsWith('.ts');

/** argv to run one of our modules with the runtime we are running under. */
function nodeArgs(rel: string): string[] {
  const file = path.join(here, typescript ? rel : rel.replace(/\.ts$/, '.js'));
  return typescript ? ['--import', 'tsx', file] : [file];
}

/** RSS of a measured `node -e` child (measured-process.ts), killed once measured. */
async function measuredNode(args: string[], settleMs: number): Promise<number> {
  const proc = spawn(process.execPath, args, { stdio: MEASURED_STDIO, env: measuredEnv() });
  try {
    return await measureChild(proc, settleMs);
  } finally {
    proc.kill('SIGKILL');
  }
}

/** The repository's root (bench/ or build/bench/ is below it). */
const root = path.resolve(here, typescript ? '..' : '../..');

/**
 * The agent distribution's files, built now (esbuild; a second or two), or undefined when the
 * tree cannot build it (no esbuild): the caller measures the tree's modules instead.
 */
function agentBundle(log: (line: string) => void): { library: string; libraryCjs: string; daemon: string } | undefined {
  const build = spawnSync(process.execPath, [path.join(root, 'packages/agent/build.mjs')], { encoding: 'utf8' });
  if (build.status !== 0) {
    log(`agent bench: cannot build the agent distribution (${(build.stderr || build.stdout).trim().split('\n')[0]}); measuring the tree's modules`);
    return undefined;
  }
  const dist = path.join(root, 'packages/agent/dist');
  return { library: path.join(dist, 'agent.js'), libraryCjs: path.join(dist, 'agent.cjs'), daemon: path.join(dist, 'devloc-agent.js') };
}

function runJsonChild<S, R>(file: string, settings: S, v8Flags: string[] = []): Promise<R> {
  const proc = spawn(process.execPath, ['--expose-gc', ...v8Flags, ...nodeArgs(file)], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  proc.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  proc.stdin!.end(JSON.stringify(settings) + '\n');
  return new Promise((resolve, reject) => {
    proc.once('exit', (code) => {
      if (code !== 0) reject(new Error(`bench child exited ${code}: ${err}`));
      else resolve(JSON.parse(out.trim()) as R);
    });
  });
}

const runChild = (settings: ChildSettings): Promise<ChildResult> => runJsonChild('agent-child.ts', settings);

/**
 * Virtual hours of the day run as shipped (JIT on): a week, so that the second day shows whether
 * the heap still grows once every periodic path (renewals, sweeps, expiries of the first day's
 * tickets) has run, and the last whether what V8 compiles levels off.
 */
const DAY_HOURS = 168;
/** Virtual hours of the interpreter-only run (the program's data; about twice as slow per hour). */
const DATA_DAY_HOURS = 48;

export interface DayGrowthKiB {
  heap: number;
  code: number;
  nonCode: number;
  arrayBuffers: number;
}

/**
 * Growth over `[fromHour, toHour]` of hourly samples (index 0 = hour 1): the least-squares slope
 * times the span, so one noisy hour (a GC's leftovers, a cache at the point of a purge) does
 * not make the figure; the endpoints' difference would.
 */
export function trendBytes(samples: number[], fromHour: number, toHour: number): number {
  const xs: number[] = [];
  const ys: number[] = [];
  for (let h = fromHour; h <= toHour && h <= samples.length; h++) {
    xs.push(h);
    ys.push(samples[h - 1]!);
  }
  if (xs.length < 2) return 0;
  const mean = (v: number[]): number => v.reduce((a, b) => a + b, 0) / v.length;
  const mx = mean(xs);
  const my = mean(ys);
  let sxy = 0;
  let sxx = 0;
  for (let i = 0; i < xs.length; i++) {
    sxy += (xs[i]! - mx) * (ys[i]! - my);
    sxx += (xs[i]! - mx) ** 2;
  }
  return (sxy / sxx) * (toHour - fromHour);
}

/** Growth of a day run's samples over the virtual day ending at `toHour` (trendBytes), KiB. */
export function dayGrowthKiB(day: DayResult, toHour: number): DayGrowthKiB {
  const kib = (samples: number[]): number => round(trendBytes(samples, toHour - 24, toHour) / 1024, 1);
  const nonCode = day.heapAfterGcBytes.map((b, i) => b - (day.codeAfterGcBytes[i] ?? 0));
  return { heap: kib(day.heapAfterGcBytes), code: kib(day.codeAfterGcBytes), nonCode: kib(nonCode), arrayBuffers: kib(day.arrayBuffersAfterGcBytes) };
}

const cpuS = (r: ChildResult): number => (r.cpuUserUs + r.cpuSystemUs) / 1e6;
const round = (x: number, digits: number): number => Number(x.toFixed(digits));

export async function benchAgent(o: AgentBenchOptions = {}): Promise<AgentBenchResult> {
  const seconds = o.seconds ?? 20;
  const refreshS = o.refreshS ?? 1;
  const log = o.log ?? (() => {});
  const dir = mkdtempSync(path.join(tmpdir(), 'devloc-agent-bench-'));
  const procs: ChildProcess[] = [];
  const bundle = agentBundle(log);
  const library = bundle?.library ?? path.join(root, typescript ? 'src/agent/index.ts' : 'build/src/agent/index.js');
  // Without the bundles, the CommonJS host require()s the tree's ES modules (Node >= 20.19).
  const libraryCjs = bundle?.libraryCjs ?? library;
  const loader = typescript && !bundle ? ['--import', 'tsx'] : [];
  try {
    const authdKey = newAuthdKey();
    const authdKeyFile = path.join(dir, 'authd.key');
    writeFileSync(authdKeyFile, keyFileToJson(authdKey), { mode: 0o600 });
    const authdPub = path.join(dir, 'authd.pub');
    writeFileSync(authdPub, publicToJson(publicOf(authdKey)));
    const service = newServiceKey('locator');
    const serviceFile = path.join(dir, 'locator.key');
    writeFileSync(serviceFile, keyFileToJson(service), { mode: 0o600 });
    if (service.kind !== 'service') throw new Error('unreachable');
    // One device for the daemon and then the CPU runs, one for each library host: the footprint's
    // three agents run side by side, and two registrations of one device would replace each other.
    const devices = ['device', 'host-commonjs', 'host-module'].map((name) => {
      const key = newDeviceKey();
      if (key.kind !== 'device') throw new Error('unreachable');
      const file = path.join(dir, `${name}.key`);
      writeFileSync(file, keyFileToJson(key), { mode: 0o600 });
      return { key, file };
    });
    const identity = devices[0]!.file;
    // A TTL of 90 s: locatord suggests the default 25 s refresh; the busy run overrides it.
    const loc = await startDaemon({ entry: 'locatord/main', args: [
      '--listen', '127.0.0.1', '--port', '0', '--service-key', serviceFile, '--trust', authdPub, '--state-dir', path.join(dir, 'loc'),
      '--reflector-port', '-1', '--default-ttl', '90',
    ] });
    procs.push(loc.proc);
    const authdState = path.join(dir, 'authd');
    const db = AuthDb.open(authdState);
    for (const { key } of devices) db.addDevice({ deviceId: key.deviceId, publicKey: key.sign.public });
    db.putService({ serviceId: 'locator', sealKey: service.seal.public, addr: `127.0.0.1:${Number(loc.listening['port'])}` }, false);
    db.close();
    const authd = await startDaemon({ entry: 'authd/main', args: ['--listen', '127.0.0.1', '--port', '0', '--key', authdKeyFile, '--state-dir', authdState] });
    procs.push(authd.proc);
    const base = { identity, authd: `127.0.0.1:${Number(authd.listening['port'])}`, authdKey: authdPub, seconds, library };
    const warmupMs = 5000;
    const settleMs = warmupMs + seconds * 1000; // ready (registered) -> RSS read, the same for all
    log('agent bench: footprint: devloc-agent daemon, then bare node -e and the library hosts beside it');
    const t0 = performance.now();
    const daemon = spawnDaemon({
      entry: bundle?.daemon ?? 'agent/main', timeoutMs: 30_000, env: measuredEnv(),
      args: ['--identity', identity, '--authd', base.authd, '--authd-key', authdPub, '--reflector', 'off', '--control-socket', path.join(dir, 'agent.sock'),
        '--state-dir', dir, '--log-level', 'info'],
    });
    procs.push(daemon.proc);
    // Its readiness is its own log line (the daemon is not changed for the bench); the RSS is read
    // from /proc as for the others.
    await daemon.waitFor((l) => l['msg'] === 'registered');
    const daemonStartToRegisteredMs = performance.now() - t0;
    const daemonRssRead = rssAfter(daemon.proc.pid!, Promise.resolve(), settleMs);
    const host = (system: ModuleSystem): string[] => {
      const settings: LibraryHostSettings = {
        library: system === 'commonjs' ? libraryCjs : library, identity: devices[system === 'commonjs' ? 1 : 2]!.file, authd: base.authd, authdKey: authdPub,
      };
      return libraryHostArgs(system, settings, loader);
    };
    const [bare, libraryRss, bareModule, libraryModuleRss, daemonRss] = await Promise.all([
      measuredNode(bareNodeArgs('commonjs'), settleMs),
      measuredNode(host('commonjs'), settleMs),
      measuredNode(bareNodeArgs('module'), settleMs),
      measuredNode(host('module'), settleMs),
      daemonRssRead,
    ]);
    await daemon.stop('SIGTERM', 10_000);
    log(`agent bench: idle run, ${seconds} s at locatord's interval`);
    const idle = await runChild({ ...base, maxRefreshS: 0, warmupMs });
    log(`agent bench: busy run, ${seconds} s refreshing every ${refreshS} s`);
    const busy = await runChild({ ...base, maxRefreshS: refreshS, warmupMs: Math.max(warmupMs, 2 * refreshS * 1000) });
    log(`agent bench: ${DAY_HOURS} virtual hours (agent, authd, locatord in one process)`);
    const day = await runJsonChild<DaySettings, DayResult>('agent-day.ts', { library, hours: DAY_HOURS });
    log(`agent bench: ${DATA_DAY_HOURS} virtual hours in V8's interpreter only (the program's data)`);
    const dataDay = await runJsonChild<DaySettings, DayResult>('agent-day.ts', { library, hours: DATA_DAY_HOURS }, ['--max-opt=0']);
    if (!day.registeredAtEnd || !dataDay.registeredAtEnd) throw new Error('agent bench: the agent was not registered at the end of the virtual days');
    const idleRate = cpuS(idle) / idle.seconds;
    const extra = busy.refreshes - (idle.refreshes * busy.seconds) / idle.seconds;
    const perRefresh = extra > 0 ? Math.max(0, cpuS(busy) - idleRate * busy.seconds) / extra : 0;
    const perHour = idleRate * 3600 + (3600 / NAT_REFRESH_S) * perRefresh;
    const bytesPerRefresh = busy.refreshes > 0 ? (busy.bytesSent + busy.bytesReceived + 28 * busy.datagrams) / busy.refreshes : 0;
    const mib = (b: number): number => round(b / 2 ** 20, 1);
    const heapAt = (h: number): number => day.heapAfterGcBytes[h - 1] ?? 0;
    return {
      bareRssMiB: mib(bare),
      daemonRssMiB: mib(daemonRss),
      libraryAboveBareMiB: mib(libraryRss - bare),
      bareModuleRssMiB: mib(bareModule),
      libraryModuleRssMiB: mib(libraryModuleRss),
      libraryModuleAboveBareMiB: mib(libraryModuleRss - bareModule),
      daemonAboveBareMiB: mib(daemonRss - bare),
      libraryStartToRegisteredMs: Math.round(idle.startToRegisteredMs),
      daemonStartToRegisteredMs: Math.round(daemonStartToRegisteredMs),
      bytesPerRefresh: Math.round(bytesPerRefresh),
      bytesPerHourNat: Math.round((3600 / NAT_REFRESH_S) * bytesPerRefresh),
      bytesPerHourOpen: Math.round((3600 / OPEN_REFRESH_S) * bytesPerRefresh),
      openRefreshS: OPEN_REFRESH_S,
      cpuSecondsPerHourOpen: round(idleRate * 3600 + (3600 / OPEN_REFRESH_S) * perRefresh, 2),
      heapAfterGcMiB: mib(heapAt(1)),
      heapGrowth24hKiB: round((heapAt(24) - heapAt(1)) / 1024, 1),
      secondDayGrowthKiB: dayGrowthKiB(day, 48),
      lastDayGrowthKiB: dayGrowthKiB(day, DAY_HOURS),
      dataSecondDayGrowthKiB: dayGrowthKiB(dataDay, 48),
      idle, busy, day, dataDay,
      idleRssMiB: round(libraryRss / 2 ** 20, 1),
      idleHeapMiB: round(idle.heapUsedBytes / 2 ** 20, 1),
      cpuMsPerRefresh: round(perRefresh * 1000, 3),
      idleCpuSecondsPerHour: round(idleRate * 3600, 2),
      cpuSecondsPerHour: round(perHour, 2),
      defaultRefreshS: NAT_REFRESH_S,
      runtime: bundle ? 'bundle' : typescript ? 'tsx' : 'node',
    };
  } finally {
    for (const p of procs) p.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

const signed = (x: number): string => (x >= 0 ? `+${x}` : String(x));
const growth = (g: DayGrowthKiB): string =>
  `${signed(g.heap)} KiB: compiled code ${signed(g.code)}, the rest (data, feedback) ${signed(g.nonCode)}; ArrayBuffers outside the heap ${signed(g.arrayBuffers)} KiB (trend of hourly samples)`;

export function formatAgentBench(r: AgentBenchResult): string {
  return [
    `devloc-agent (embedded Agent, ${r.runtime}):`,
    `  bare node -e RSS              ${r.bareRssMiB} MiB (ES module: ${r.bareModuleRssMiB} MiB)`,
    `  idle RSS, library             ${r.idleRssMiB} MiB in a CommonJS host (+${r.libraryAboveBareMiB} MiB over bare Node); ${r.libraryModuleRssMiB} MiB in an ES module host (+${r.libraryModuleAboveBareMiB} MiB over bare ES module Node)`,
    `  V8 heap in use, idle run      ${r.idleHeapMiB} MiB`,
    `  idle RSS, devloc-agent        ${r.daemonRssMiB} MiB (+${r.daemonAboveBareMiB} MiB over bare Node)`,
    `  start -> registered           library ${r.libraryStartToRegisteredMs} ms, daemon ${r.daemonStartToRegisteredMs} ms`,
    `  wire per refresh              ${r.bytesPerRefresh} B; per idle hour ${r.bytesPerHourNat} B behind a NAT (${r.defaultRefreshS} s), ${r.bytesPerHourOpen} B open (${r.openRefreshS} s)`,
    `  ${r.day.hours} virtual hours              ${r.day.refreshes} refreshes, ${r.day.authentications} authentications, ${r.day.realSeconds.toFixed(0)} s real; heap after GC ${r.heapAfterGcMiB} MiB at hour 1 (agent + authd + locatord), growth to hour 24 ${r.heapGrowth24hKiB} KiB`,
    `  second virtual day (24-48 h)  heap ${growth(r.secondDayGrowthKiB)}`,
    `  last virtual day (${r.day.hours - 24}-${r.day.hours} h) heap ${growth(r.lastDayGrowthKiB)}`,
    `  interpreter only, 24-48 h     heap ${signed(r.dataSecondDayGrowthKiB.heap)} KiB, ArrayBuffers ${signed(r.dataSecondDayGrowthKiB.arrayBuffers)} KiB: the program's data (--max-opt=0, ${r.dataDay.realSeconds.toFixed(0)} s real)`,
    `  CPU per refresh               ${r.cpuMsPerRefresh} ms (measured over ${r.busy.refreshes} refreshes)`,
    `  CPU idle                      ${r.idleCpuSecondsPerHour} s per hour (interface polls, timers)`,
    `  CPU per hour, ${r.defaultRefreshS} s refresh   ${r.cpuSecondsPerHour} s (open address, ${r.openRefreshS} s: ${r.cpuSecondsPerHourOpen} s)`,
  ].join('\n');
}
