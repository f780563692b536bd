// The "terminals" bench section: N simulated terminals with real enrolled identities and real
// crypto against a whole devloc deployment (authd, locatord, matchd), at offered loads swept
// from flat out to overload. The terminals are spread over load-generator processes
// (terminal-worker.ts); each step reports, per kind of request and in total, what was offered,
// what was answered per second (also as a ratio of the same-run echo baseline), latency
// percentiles, losses and error replies by code, and where the CPU went, so the reader can tell
// a server bottleneck from a generator one. The report goes to JSON, CSV and an SVG chart.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { parseAddress } from '../src/wire/addr.js';
import type { Address } from '../src/wire/addr.js';
import { parseKeyFile } from '../src/wire/keys.js';
import { parseAuthdKey } from '../src/agent/identity.js';
import { CpuMeter, cores } from './cpu.js';
import type { Kind, Mix, SweepStep } from './mix.js';
import { formatMix, KINDS, normaliseMix } from './mix.js';
import type { Child } from './procs.js';
import { forkSibling } from './procs.js';
import { Progress } from './progress.js';
import type { Stack } from './stack.js';
import { startStack } from './stack.js';
import type { LatencySummary } from './stats.js';
import { Histogram } from './stats.js';
import type { ChartSpec } from './svg.js';
import { renderChart } from './svg.js';
import type { KindReport, ProgressMessage, RunCommand, SetupCommand, SetupReply, StepReport, WorkerCommand, WorkerIdentity } from './terminal-worker.js';
import type { BenchResult } from './types.js';

export interface ExternalTarget {
  authd: Address;
  authdKidHex: string;
  authdSeal: string;
  locatord?: Address;
  matchd?: Address;
  identities: WorkerIdentity[];
}

export interface TerminalsOptions {
  terminals: number;
  workers: number;
  mix: Mix;
  steps: SweepStep[];
  seconds: number;
  /** Flat out: requests outstanding per worker. */
  window: number;
  timeoutMs: number;
  /** Deployment to drive; a throwaway one on 127.0.0.1 when absent. */
  external?: ExternalTarget;
  /** Requests/s of the echo baseline measured in the same run. */
  echoPerS?: number;
  log(line: string): void;
  progress?: Progress;
}

export interface KindResult {
  kind: string;
  /** Offered requests/s of this kind (its share of the step's rate); null when flat out. */
  offeredPerS: number | null;
  sent: number;
  answered: number;
  /** Answered within the step, per second. */
  achievedPerS: number;
  ratioToEcho: number | null;
  lost: number;
  errors: Record<string, number>;
  latency: LatencySummary;
}

export interface StepResult {
  step: number;
  mode: 'flat-out' | 'paced';
  label: string;
  offeredPerS: number | null;
  seconds: number;
  sent: number;
  answered: number;
  achievedPerS: number;
  ratioToEcho: number | null;
  lost: number;
  errorReplies: number;
  errors: Record<string, number>;
  latency: LatencySummary;
  kinds: KindResult[];
  matchResults: { matched: number; noMatch: number; latency: LatencySummary };
  generator: { eventLoopBusy: number[]; cpuCores: number[]; lateShare: number | null; maxLateMs: number | null; badReplies: number; lateReplies: number; sendErrors: number };
  cpu: { processes: Record<string, number | null>; machineBusy: number | null; cores: number };
  bottleneck: string;
}

export interface TerminalsReport {
  target: 'self-started' | 'external';
  terminals: number;
  workers: number;
  mix: string;
  window: number;
  timeoutMs: number;
  secondsPerStep: number;
  echoBaselinePerS: number | null;
  daemonFlags?: Record<string, string[]>;
  setup: { seconds: number; kinds: KindResult[] };
  steps: StepResult[];
}

// ---- external identities -------------------------------------------------------------------

/** Device key files: every *.key in a directory, or one key file (JSON) per line of a file. */
export function loadIdentities(p: string, want: number): WorkerIdentity[] {
  let texts: { where: string; text: string }[];
  if (statSync(p).isDirectory()) {
    texts = readdirSync(p).filter((f) => f.endsWith('.key')).sort().map((f) => ({ where: path.join(p, f), text: readFileSync(path.join(p, f), 'utf8') }));
  } else {
    texts = readFileSync(p, 'utf8').split('\n').map((text, i) => ({ where: `${p}:${i + 1}`, text })).filter((x) => x.text.trim() !== '');
  }
  const out: WorkerIdentity[] = [];
  for (const { where, text } of texts) {
    if (out.length >= want) break;
    const k = parseKeyFile(text);
    if (!k.ok) throw new Error(`${where}: not a device key file (${k.error})`);
    if (k.value.kind !== 'device') throw new Error(`${where}: a key of kind "${k.value.kind}", not "device"`);
    out.push({ index: out.length, deviceId: k.value.deviceId, signPublic: k.value.sign.public.toString('base64url'), signSecret: k.value.sign.secret.toString('base64url') });
  }
  if (out.length < want) throw new Error(`${p}: ${out.length} device identities, ${want} terminals asked for`);
  return out;
}

export function externalTarget(o: { authd: string; authdKey: string; identities: string; locatord?: string; matchd?: string; terminals: number }): ExternalTarget {
  const addr = (flag: string, v: string): Address => {
    const a = parseAddress(v);
    if (!a) throw new Error(`--${flag}: ${JSON.stringify(v)} is not ip:port`);
    return a;
  };
  const key = parseAuthdKey(readFileSync(o.authdKey, 'utf8'), `--authd-key ${o.authdKey}`);
  if (!key.ok) throw new Error(key.error);
  return {
    authd: addr('authd', o.authd), authdKidHex: key.value.kid.toString('hex'), authdSeal: Buffer.from(key.value.seal).toString('base64url'),
    ...(o.locatord ? { locatord: addr('locatord', o.locatord) } : {}),
    ...(o.matchd ? { matchd: addr('matchd', o.matchd) } : {}),
    identities: loadIdentities(o.identities, o.terminals),
  };
}

// ---- workers --------------------------------------------------------------------------------

class Worker {
  private waiting: { resolve: (m: unknown) => void; reject: (e: Error) => void } | undefined;
  onProgress: ((m: ProgressMessage) => void) | undefined;

  constructor(readonly child: Child, readonly id: number) {
    child.proc.on('message', (m: { type?: string; error?: string }) => {
      if (m.type === 'progress') {
        this.onProgress?.(m as ProgressMessage);
        return;
      }
      const w = this.waiting;
      this.waiting = undefined;
      if (m.type === 'error') w?.reject(new Error(`load generator ${id}: ${m.error}`));
      else w?.resolve(m);
    });
    child.proc.on('exit', (code, sig) => this.waiting?.reject(new Error(`load generator ${id} exited (${code ?? sig})`)));
  }

  get pid(): number | undefined {
    return this.child.proc.pid;
  }

  /**
   * Sends a command and resolves with the answer. A load generator that has not answered after
   * `withinMs` is reported as such (which command, which worker) instead of the bench waiting
   * forever: every phase is bounded (requests time out, a step lasts --seconds), so silence past
   * the bound is a bug to see, not to sit out.
   */
  ask<T>(c: WorkerCommand, withinMs: number): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting = undefined;
        reject(new Error(`load generator ${this.id} (pid ${this.pid ?? '?'}) did not answer "${c.cmd}" within ${Math.round(withinMs / 1000)} s`));
      }, withinMs);
      this.waiting = {
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m as T);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      this.child.proc.send(c);
    });
  }
}

/**
 * Longest a setup phase may take: each terminal makes at most 5 tries of at most 5 requests, 16
 * terminals at a time per generator, each try bounded by the request timeout; plus a minute of slack.
 */
export function setupBoundMs(terminalsPerWorker: number, timeoutMs: number): number {
  return Math.ceil(terminalsPerWorker / 16) * 5 * 5 * timeoutMs + 60_000;
}

// ---- merging --------------------------------------------------------------------------------

const round = (x: number, digits = 2): number => Number(x.toFixed(digits));

function mergeKind(kind: string, parts: (KindReport | undefined)[], seconds: number, offeredPerS: number | null, echo: number | undefined): KindResult {
  const h = new Histogram();
  const errors: Record<string, number> = {};
  let sent = 0;
  let answered = 0;
  let inStep = 0;
  let lost = 0;
  for (const p of parts) {
    if (!p) continue;
    h.merge(Histogram.fromJSON(p.histogram));
    sent += p.sent;
    answered += p.answered;
    inStep += p.answeredInStep;
    lost += p.lost;
    for (const [k, v] of Object.entries(p.errors)) errors[k] = (errors[k] ?? 0) + v;
  }
  const achievedPerS = seconds > 0 ? inStep / seconds : 0;
  return {
    kind, offeredPerS: offeredPerS === null ? null : round(offeredPerS, 1), sent, answered, achievedPerS: round(achievedPerS, 1),
    ratioToEcho: echo ? round(achievedPerS / echo, 4) : null, lost, errors, latency: roundLatency(h.summary()),
  };
}

function roundLatency(l: LatencySummary): LatencySummary {
  return { count: l.count, meanMs: round(l.meanMs, 3), p50Ms: round(l.p50Ms, 3), p90Ms: round(l.p90Ms, 3), p99Ms: round(l.p99Ms, 3), maxMs: round(l.maxMs, 3) };
}

/**
 * Where the step's limit was, in one sentence, from the CPU figures. In this order: a generator
 * whose event loop was saturated (the figure is then the generator's); a daemon using a whole
 * core (its one event loop saturated); the machine's cores all busy (shared by generators,
 * daemons and whatever else runs); losses with CPU to spare; else nothing limited the step.
 * Paced requests that went out late are noted: bursts the server saw, from a descheduled
 * generator.
 */
export function diagnose(s: {
  paced: boolean; offeredPerS: number | null; achievedPerS: number; lost: number; sent: number;
  eventLoopBusy: number[]; lateShare: number | null; processes: Record<string, number | null>; machineBusy: number | null; cores: number;
}): string {
  const genBusy = Math.max(0, ...s.eventLoopBusy);
  const procs = Object.entries(s.processes).filter((e): e is [string, number] => e[1] !== null).sort((a, b) => b[1] - a[1]);
  const ours = procs.reduce((a, [, v]) => a + v, 0);
  const other = s.machineBusy !== null ? Math.max(0, s.machineBusy * s.cores - ours) : null;
  const used = `cores used: ${procs.map(([k, v]) => `${k} ${v.toFixed(2)}`).join(', ')}${other !== null ? `, other processes ${other.toFixed(2)}` : ''}`;
  const late = s.paced && s.lateShare !== null && s.lateShare > 0.05 ? `; ${Math.round(s.lateShare * 100)}% of requests went out more than 5 ms late (bursts)` : '';
  if (genBusy >= 0.9) return `load generator: event loop ${Math.round(genBusy * 100)}% busy, the figure is the generator's (${used})${late}`;
  const hot = procs.find(([k, v]) => !k.startsWith('generator') && v >= 0.9);
  if (hot) return `${hot[0]}: its event loop used ${hot[1].toFixed(2)} of a core (${used})${late}`;
  if (s.machineBusy !== null && s.machineBusy >= 0.9) return `CPU: the machine's ${s.cores} cores were ${Math.round(s.machineBusy * 100)}% busy (${used})${late}`;
  const lostShare = s.sent > 0 ? s.lost / s.sent : 0;
  if (lostShare > 0.01) return `${Math.round(lostShare * 100)}% lost with CPU to spare: socket buffers or bursts (${used})${late}`;
  if (!s.paced) return `none saturated: the window of outstanding requests bounds the rate (${used})`;
  if (s.offeredPerS !== null && s.achievedPerS < 0.95 * s.offeredPerS) return `answered ${Math.round((s.achievedPerS / s.offeredPerS) * 100)}% of the offered load with CPU to spare (${used})${late}`;
  return `none: the offered load was served (${used})${late}`;
}

// ---- the run --------------------------------------------------------------------------------

export async function runTerminals(o: TerminalsOptions): Promise<TerminalsReport> {
  const progress = o.progress ?? new Progress();
  const echo = o.echoPerS;
  let stack: Stack | undefined;
  const workers: Worker[] = [];
  try {
    let target: ExternalTarget;
    if (o.external) target = o.external;
    else {
      stack = await startStack({ terminals: o.terminals, log: o.log });
      target = { authd: stack.authd, authdKidHex: stack.authdKidHex, authdSeal: stack.authdSeal, locatord: stack.locatord, matchd: stack.matchd, identities: stack.identities };
      o.log(`terminals: authd ${stack.authd.port}, locatord ${stack.locatord.port}, matchd ${stack.matchd.port} on 127.0.0.1 (state in ${stack.dir})`);
    }
    const loopback = [target.authd, target.locatord, target.matchd].every((a) => !a || a.ip === '127.0.0.1' || a.ip === '::1');
    const nWorkers = Math.max(1, Math.min(o.workers, target.identities.length));
    for (let i = 0; i < nWorkers; i++) workers.push(new Worker(forkSibling('terminal-worker'), i + 1));
    const share = (i: number): WorkerIdentity[] => target.identities.filter((_, j) => j % nWorkers === i);
    const norm = normaliseMix(o.mix);

    // Setup: authenticate, register, open matchd sessions, create home groups.
    o.log(`terminals: ${target.identities.length} terminals authenticate and register (${nWorkers} load generators)`);
    const t0 = performance.now();
    const setups = await Promise.all(workers.map((w, i) => w.ask<SetupReply>({
      cmd: 'setup', workerId: w.id, identities: share(i), totalTerminals: target.identities.length, bindHost: loopback ? '127.0.0.1' : '0.0.0.0',
      authd: target.authd, authdKidHex: target.authdKidHex, authdSeal: target.authdSeal,
      ...(target.locatord ? { locatord: target.locatord } : {}), ...(target.matchd ? { matchd: target.matchd } : {}),
      audiences: { locator: 'locator', match: 'match' }, timeoutMs: Math.max(o.timeoutMs, 2000), withMatch: norm['match-submit'] > 0,
    } satisfies SetupCommand, setupBoundMs(target.identities.length / nWorkers, Math.max(o.timeoutMs, 2000)))));
    const setupS = (performance.now() - t0) / 1000;
    const all = setups.flatMap((s) => s.terminals).sort((a, b) => a.index - b.index);
    const homeGroups = all.filter((t) => t.homeGroup).map((t) => t.homeGroup!);
    await Promise.all(workers.map((w) => w.ask({ cmd: 'prepare', locatorIds: all.map((t) => t.locatorId), homeGroups }, setupBoundMs(all.length / nWorkers, Math.max(o.timeoutMs, 2000)))));
    const setupKinds = [...new Set(setups.flatMap((s) => Object.keys(s.report.kinds)))];
    const setup = {
      seconds: round(setupS, 1),
      kinds: setupKinds.map((k) => mergeKind(k, setups.map((s) => s.report.kinds[k]), setupS, null, undefined)),
    };
    o.log(`terminals: setup done in ${setupS.toFixed(1)} s (${setup.kinds.map((k) => `${k.kind} p50 ${k.latency.p50Ms} ms`).join(', ')})`);

    const steps: StepResult[] = [];
    let flatOut: number | undefined;
    const pids: Record<string, number | undefined> = {};
    for (const d of stack?.daemons ?? []) pids[d.name] = d.proc.pid;
    workers.forEach((w) => (pids[`generator ${w.id}`] = w.pid));
    for (const [si, step] of o.steps.entries()) {
      const offered = step.kind === 'max' ? null : step.kind === 'rate' ? step.perS : (flatOut ?? 0) * (step.percent / 100);
      if (offered !== null && !(offered > 0)) throw new Error('a share of the flat-out figure needs a flat-out step before it');
      const label = offered === null ? `flat out (${o.window} outstanding per generator)` : `offered ${Math.round(offered).toLocaleString('en-US')} req/s${step.kind === 'percent' ? ` (${step.percent}% of flat out)` : ''}`;
      const stepName = `step ${si + 1}/${o.steps.length}: ${label}`;
      const live = workers.map(() => ({ sent: 0, answered: 0, lost: 0, errors: 0 }));
      const started = performance.now();
      const redraw = (): void => {
        const sum = live.reduce((a, x) => ({ sent: a.sent + x.sent, answered: a.answered + x.answered, lost: a.lost + x.lost, errors: a.errors + x.errors }), { sent: 0, answered: 0, lost: 0, errors: 0 });
        progress.update({ label: stepName, fraction: (performance.now() - started) / (o.seconds * 1000), ...sum });
      };
      workers.forEach((w, i) => (w.onProgress = (m) => {
        live[i] = m;
        redraw();
      }));
      const meter = new CpuMeter(pids);
      const reports = await Promise.all(workers.map((w) => w.ask<{ report: StepReport }>({
        cmd: 'run', step: si, ratePerS: offered === null ? null : offered / workers.length, seconds: o.seconds, window: o.window, mix: o.mix, timeoutMs: o.timeoutMs,
      } satisfies RunCommand, o.seconds * 1000 + o.timeoutMs + 30_000))).then((rs) => rs.map((r) => r.report));
      const cpu = meter.read();
      workers.forEach((w) => (w.onProgress = undefined));
      const seconds = Math.max(...reports.map((r) => r.ms)) / 1000;
      const kinds = KINDS.filter((k) => norm[k] > 0 || reports.some((r) => r.kinds[k])).map((k) => mergeKind(k, reports.map((r) => r.kinds[k]), seconds, offered === null ? null : offered * norm[k as Kind], echo));
      const total = mergeKind('all', reports.flatMap((r) => Object.values(r.kinds)), seconds, offered, echo);
      const mh = new Histogram();
      for (const r of reports) mh.merge(Histogram.fromJSON(r.matchResults.histogram));
      const pacerOffered = reports.reduce((a, r) => a + (r.pacer?.offered ?? 0), 0);
      const late = reports.reduce((a, r) => a + (r.pacer?.late ?? 0), 0);
      const errorReplies = kinds.reduce((a, k) => a + Object.values(k.errors).reduce((x, y) => x + y, 0), 0);
      const generator = {
        eventLoopBusy: reports.map((r) => round(r.elu)), cpuCores: reports.map((r) => round(r.cpuS / seconds)),
        lateShare: offered === null ? null : round(pacerOffered ? late / pacerOffered : 0, 4),
        maxLateMs: offered === null ? null : round(Math.max(...reports.map((r) => r.pacer?.maxLateMs ?? 0)), 1),
        badReplies: reports.reduce((a, r) => a + r.badReplies, 0), lateReplies: reports.reduce((a, r) => a + r.lateReplies, 0), sendErrors: reports.reduce((a, r) => a + r.sendErrors, 0),
      };
      const result: StepResult = {
        step: si + 1, mode: offered === null ? 'flat-out' : 'paced', label, offeredPerS: offered === null ? null : round(offered, 1), seconds: round(seconds, 3),
        sent: total.sent, answered: total.answered, achievedPerS: total.achievedPerS, ratioToEcho: total.ratioToEcho, lost: total.lost, errorReplies, errors: total.errors,
        latency: total.latency, kinds,
        matchResults: { matched: reports.reduce((a, r) => a + r.matchResults.matched, 0), noMatch: reports.reduce((a, r) => a + r.matchResults.noMatch, 0), latency: roundLatency(mh.summary()) },
        generator, cpu: { processes: cpu.processes, machineBusy: cpu.machineBusy, cores: cores() },
        bottleneck: '',
      };
      result.bottleneck = diagnose({
        paced: offered !== null, offeredPerS: offered, achievedPerS: total.achievedPerS, lost: total.lost, sent: total.sent,
        eventLoopBusy: generator.eventLoopBusy, lateShare: generator.lateShare, processes: cpu.processes, machineBusy: cpu.machineBusy, cores: cores(),
      });
      if (offered === null) flatOut = total.achievedPerS;
      steps.push(result);
      progress.line(`bench: terminals ${stepName}: ${Math.round(total.achievedPerS).toLocaleString('en-US')} req/s${total.ratioToEcho !== null ? ` (${total.ratioToEcho.toFixed(3)} x echo)` : ''}, p50 ${total.latency.p50Ms} ms, p99 ${total.latency.p99Ms} ms, lost ${total.lost}, errors ${errorReplies}; limit: ${result.bottleneck}`);
    }
    return {
      target: o.external ? 'external' : 'self-started', terminals: target.identities.length, workers: nWorkers, mix: formatMix(o.mix),
      window: o.window, timeoutMs: o.timeoutMs, secondsPerStep: o.seconds, echoBaselinePerS: echo ? Math.round(echo) : null,
      ...(stack ? { daemonFlags: stack.flags } : {}),
      setup, steps,
    };
  } finally {
    for (const w of workers) w.child.kill();
    await stack?.stop();
  }
}

// ---- output ---------------------------------------------------------------------------------

/** Rows for the summary table (latest.json/csv): every step in total, and per kind when flat out. */
export function terminalsRows(r: TerminalsReport): BenchResult[] {
  const rows: BenchResult[] = [];
  const s = 'terminals';
  for (const st of r.steps) {
    rows.push({
      section: s, name: `${r.terminals} terminals, mix, ${st.label}`, value: st.achievedPerS, unit: 'req/s', latency: st.latency,
      extra: { offeredPerS: st.offeredPerS, lost: st.lost, errors: st.errors, bottleneck: st.bottleneck },
    });
    if (st.mode !== 'flat-out') continue;
    for (const k of st.kinds) {
      rows.push({ section: s, name: `  ${k.kind} in the mix, flat out`, value: k.achievedPerS, unit: 'req/s', latency: k.latency, extra: { lost: k.lost, errors: k.errors } });
    }
  }
  return rows;
}

const CSV_HEAD = 'step,mode,offered_per_s,kind,sent,answered,achieved_per_s,ratio_to_echo,p50_ms,p90_ms,p99_ms,max_ms,lost,errors';

/** One row per step and kind, plus the step's total as kind "all". */
export function terminalsCsv(r: TerminalsReport): string {
  const q = (v: unknown): string => {
    const s = v === null || v === undefined ? '' : String(v);
    return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  const errs = (e: Record<string, number>): string => Object.entries(e).map(([k, v]) => `${k}:${v}`).join(';');
  const lines = [CSV_HEAD];
  for (const st of r.steps) {
    for (const k of [...st.kinds, { kind: 'all', offeredPerS: st.offeredPerS, sent: st.sent, answered: st.answered, achievedPerS: st.achievedPerS, ratioToEcho: st.ratioToEcho, lost: st.lost, errors: st.errors, latency: st.latency }]) {
      lines.push([st.step, st.mode, k.offeredPerS, k.kind, k.sent, k.answered, k.achievedPerS, k.ratioToEcho, k.latency.p50Ms, k.latency.p90Ms, k.latency.p99Ms, k.latency.maxMs, k.lost, errs(k.errors)].map(q).join(','));
    }
  }
  return lines.join('\n') + '\n';
}

/** Achieved throughput and p50/p99 latency against offered load; flat out as a guide line. */
export function terminalsChart(r: TerminalsReport, o: { host?: string } = {}): string {
  const paced = r.steps.filter((s) => s.mode === 'paced' && s.offeredPerS !== null).sort((a, b) => a.offeredPerS! - b.offeredPerS!);
  const flat = r.steps.find((s) => s.mode === 'flat-out');
  const echo = r.echoBaselinePerS;
  const spec: ChartSpec = {
    title: `devloc: ${r.terminals} simulated terminals against authd + locatord + matchd`,
    subtitle: `mix ${r.mix}\n${r.workers} load generators, ${r.secondsPerStep} s per step${echo ? `; echo baseline ${echo.toLocaleString('en-US')} req/s` : ''}${o.host ? `; ${o.host}` : ''}`,
    xLabel: 'offered load (req/s)',
    width: 900,
    panels: [
      {
        yLabel: 'answered (req/s)',
        series: [
          { name: 'achieved throughput', points: paced.map((s) => [s.offeredPerS!, s.achievedPerS]) },
          { name: 'offered (ideal)', points: paced.map((s) => [s.offeredPerS!, s.offeredPerS!]), color: '#999999', dashed: true },
        ],
        ...(echo ? { rightAxis: { label: 'x echo baseline', divisor: echo } } : {}),
        ...(flat ? { guides: [{ y: flat.achievedPerS, label: `flat out: ${Math.round(flat.achievedPerS).toLocaleString('en-US')} req/s` }] } : {}),
      },
      {
        yLabel: 'latency (ms)',
        yLog: true,
        series: [
          { name: 'p50', points: paced.map((s) => [s.offeredPerS!, s.latency.p50Ms]) },
          { name: 'p99', points: paced.map((s) => [s.offeredPerS!, s.latency.p99Ms]), color: '#d62728' },
        ],
      },
    ],
  };
  return renderChart(spec);
}

/** The per-step, per-kind table printed after the run. */
export function terminalsTable(r: TerminalsReport): string {
  const head = ['step', 'kind', 'offered/s', 'answered/s', 'x echo', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms', 'lost', 'errors'];
  const n = (v: number | null): string => (v === null ? '-' : v >= 100 ? Math.round(v).toLocaleString('en-US') : String(v));
  const rows: string[][] = [];
  for (const st of r.steps) {
    const errs = (e: Record<string, number>): string => Object.entries(e).map(([k, v]) => `${k} ${v}`).join(', ') || '0';
    rows.push([String(st.step), 'all', st.offeredPerS === null ? 'max' : n(st.offeredPerS), n(st.achievedPerS), st.ratioToEcho === null ? '' : st.ratioToEcho.toFixed(3), n(st.latency.p50Ms), n(st.latency.p90Ms), n(st.latency.p99Ms), n(st.latency.maxMs), String(st.lost), errs(st.errors)]);
    for (const k of st.kinds) {
      rows.push(['', k.kind, k.offeredPerS === null ? '' : n(k.offeredPerS), n(k.achievedPerS), k.ratioToEcho === null ? '' : k.ratioToEcho.toFixed(4), n(k.latency.p50Ms), n(k.latency.p90Ms), n(k.latency.p99Ms), n(k.latency.maxMs), String(k.lost), errs(k.errors)]);
    }
  }
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((c) => c[i]!.length)));
  const line = (c: string[]): string => c.map((x, i) => (i <= 1 || i === 10 ? x.padEnd(widths[i]!) : x.padStart(widths[i]!))).join('  ').trimEnd();
  const limits = r.steps.map((s) => `  step ${s.step} (${s.label}): ${s.bottleneck}`);
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line), '', 'limits:', ...limits].join('\n');
}
