// Shared process lifecycle for devloc-authd, -locatord, -matchd and -agent: parse flags,
// resolve the config (flags > env > file > defaults), --check-config, JSON logs, metrics
// endpoint, SIGTERM/SIGINT graceful stop, SIGHUP reload.
import type { Config, Spec } from './config.js';
import { daemonHelp, parseDaemonArgs } from './args.js';
import { bool, commonSpec, resolveConfig, specOf, str, unknownFlag } from './config.js';
import type { Level, LogFormat } from './log.js';
import { Logger } from './log.js';
import { Metrics } from './metrics.js';
import { explainStartError, preflight, startErrorFields } from './preflight.js';
import { inForce, reloadReport } from './reload.js';
import { version, versionLine } from './version.js';
import type { ControlCommands } from './control.js';
import { ControlRefusal, ControlSocket, RateSampler } from './control.js';
import type { ReloadReport } from './reload.js';
import { ipToBytes, parseAddress } from '../wire/addr.js';
import { deriveKeysInJavaScript } from '../wire/hkdf.js';
import cluster from 'node:cluster';
import { answerMetricsScrapes, scrapeWorkers, workerIndex } from './workers.js';

export interface Running {
  /** Stop serving, persist what must be persisted. */
  stop(): Promise<void>;
  /** Apply a re-read configuration (SIGHUP). Throws with a message when it cannot. */
  reload?(config: Config): Promise<void> | void;
  /**
   * The daemon's commands on its control socket (devloc-ctl(8)): `status` (its counts, merged
   * into the common status), `show`, `sessions`, `kick`. `reload` and the common part of
   * `status` are runDaemon's own. Served when the daemon has a `control-socket` option.
   */
  control?: DaemonControl;
}

export interface DaemonControl {
  /** The daemon's own counts for `status`. */
  status(): unknown;
  commands: ControlCommands;
}

export interface DaemonDefinition {
  /** e.g. "authd" (binary devloc-authd, env prefix DEVLOC_AUTHD_). */
  name: string;
  summary: string;
  spec: Spec;
  /** Validate the config deeply (keys readable, addresses valid); return an error or null. */
  check(config: Config): Promise<string | null> | string | null;
  start(config: Config, logger: Logger, metrics: Metrics): Promise<Running>;
  /**
   * Derives keys per request (a server): HKDF in JavaScript, cheaper per call than node:crypto's
   * but ~4 MiB more resident once optimised (src/wire/hkdf.ts). Not for the agent.
   */
  derivesKeysPerRequest?: boolean;
}

export function fullSpec(spec: Spec): Spec {
  return { ...commonSpec, ...spec };
}

/** Run a daemon as the main program. Resolves when it has stopped. */
export async function runDaemon(def: DaemonDefinition, argv: string[] = process.argv.slice(2), env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const spec = fullSpec(def.spec);
  const binary = `devloc-${def.name}`;
  const before = argv.indexOf('--') < 0 ? argv : argv.slice(0, argv.indexOf('--'));
  if (before.includes('--version')) {
    process.stdout.write(`${versionLine(binary)}\n`);
    return 0;
  }
  // Unknown flags: one line with the closest option, exit 2 (not the whole help).
  const unknown = unknownFlag(argv, [...Object.keys(spec), 'check-config', 'help', 'version']);
  if (unknown) {
    process.stderr.write(`${binary}: ${unknown}\n`);
    return 2;
  }
  const parsed = parseDaemonArgs(spec, argv);
  if (!parsed.ok) {
    process.stderr.write(`${binary}: ${parsed.error} (${binary} --help for usage)\n`);
    return 2;
  }
  if (parsed.help) {
    process.stdout.write(daemonHelp(binary, def.summary, spec, process.stdout.columns || 100));
    return 0;
  }
  const flags: Record<string, unknown> = parsed.flags;
  const resolved = resolveConfig(def.name, spec, flags, env);
  if (!resolved.ok) {
    process.stderr.write(`${binary}: configuration error: ${resolved.error}\n`);
    return 2;
  }
  const { config, origins } = resolved;
  const problem = checkCommon(config) ?? (await def.check(config));
  if (problem) {
    process.stderr.write(`${binary}: configuration error: ${located(problem, spec, origins)}\n`);
    return 2;
  }
  if (parsed.checkConfig) {
    const { problems, warnings } = await preflight(spec, config, origins);
    for (const w of warnings) process.stderr.write(`${binary}: warning: ${w}\n`);
    if (problems.length) {
      for (const p of problems) process.stderr.write(`${binary}: configuration error: ${p}\n`);
      return 2;
    }
    process.stdout.write(`${binary}: configuration OK\n`);
    return 0;
  }
  const logger = new Logger({
    service: def.name, level: str(config, 'log-level') as Level, format: str(config, 'log-format') as LogFormat,
    firstLine: { version: version() },
    // --workers: each line says which worker wrote it (src/common/workers.ts).
    ...(workerIndex() >= 0 ? { every: { worker: workerIndex() } } : {}),
  });
  deriveKeysInJavaScript(def.derivesKeysPerRequest === true);
  const metrics = new Metrics();
  metrics.gauge('build_info', 'The running devloc version (always 1)', () => 1, { version: version() });
  /**
   * A start error reported on stderr and as the log line `msg`: the text for people, `code` and
   * `option` for scripts (devloc demo moves a daemon whose port is taken).
   */
  const reportStartError = (msg: string, err: unknown, fields: Record<string, unknown> = {}): void => {
    const explained = explainStartError(err, spec, config, origins);
    const text = explained?.text ?? (err as Error).message;
    logger.error(msg, { ...fields, err: text, ...startErrorFields(err, explained) });
    process.stderr.write(`${binary}: cannot start: ${text}\n`);
  };
  let running: Running;
  try {
    running = await def.start(config, logger, metrics);
  } catch (err) {
    reportStartError('failed to start', err);
    return 1;
  }
  // A SIGTERM while the metrics endpoint or the control socket is still opening must stop the
  // daemon cleanly (locatord's snapshot included), not kill it: remembered here, acted on once
  // the stop path below is in place (under load, a test's SIGTERM came before the socket was up).
  let earlySignal: NodeJS.Signals | undefined;
  let earlyReload = false;
  const early = (signal: NodeJS.Signals): void => {
    if (signal === 'SIGHUP') earlyReload = true;
    else earlySignal ??= signal;
  };
  const dropEarly = (): void => {
    for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.off(signal, early);
  };
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(signal, early);
  let metricsServer: { close: () => Promise<void>; port: number } | undefined;
  const ml = str(config, 'metrics-listen');
  // --workers: the workers share the primary's argv, so each would bind the metrics port (and die
  // and be restarted forever). Only the primary serves it, with every worker's series labelled.
  if (ml && cluster.isWorker) answerMetricsScrapes(metrics);
  else if (ml) {
    const a = parseAddress(ml)!; // checked by checkCommon
    try {
      metricsServer = await metrics.serve(a.ip, a.port, () => scrapeWorkers(metrics));
    } catch (err) {
      // e.g. the port is taken: stop what was started instead of dying on a rejection.
      reportStartError('cannot serve metrics', err, { listen: ml });
      await running.stop().catch(() => undefined);
      dropEarly();
      return 1;
    }
    logger.info('metrics endpoint', { listen: `${a.ip}:${metricsServer.port}` });
  }
  let current = config;
  // SIGHUP and `devloc ctl reload`: the same checks as at start (a reload must not apply what a
  // start would refuse), then one report in the same words in every daemon. Throws when refused.
  const reload = async (): Promise<ReloadReport> => {
    const again = resolveConfig(def.name, spec, flags, env);
    if (!again.ok) throw new ReloadRefused(again.error);
    const bad = checkCommon(again.config) ?? (await def.check(again.config));
    if (bad) throw new ReloadRefused(located(bad, spec, again.origins));
    const report = reloadReport(spec, current, again.config);
    await running.reload?.(again.config);
    logger.level = str(again.config, 'log-level') as Level;
    logger.format = str(again.config, 'log-format') as LogFormat;
    current = inForce(spec, current, again.config);
    // One line, the same words in every daemon: what is in force now, what waits for a restart.
    logger.info('reloaded', { applied: report.applied, needsRestart: report.needsRestart });
    return report;
  };
  const control = running.control;
  const controlPath = control && Object.hasOwn(spec, 'control-socket') ? str(config, 'control-socket') : '';
  if (!control && workerIndex() < 0 && origins['control-socket'] !== undefined) {
    // --workers: no process serves it (their state is per worker); say so rather than leave
    // `devloc ctl` to report the daemon as not running.
    logger.warn('control socket not served', { path: str(config, 'control-socket'), reason: 'with --workers no process serves the control socket (devloc-ctl(8))' });
  }
  let controlSocket: ControlSocket | undefined;
  let sampler: RateSampler | undefined;
  if (control && controlPath) {
    const startedAt = Date.now();
    const totals = (): Record<string, number> => ({
      requests: metrics.total('requests_total'), refused: metrics.total('refused_total'), dropped: metrics.total('dropped_total'),
    });
    sampler = new RateSampler(totals);
    const s = sampler;
    const commands: ControlCommands = {
      status: () => ({
        daemon: binary, version: version(), pid: process.pid, startedAt: new Date(startedAt).toISOString(),
        uptimeS: Math.floor((Date.now() - startedAt) / 1000), totals: totals(), rates: s.rates(), ...(control.status() as object),
      }),
      reload: async () => {
        try {
          return await reload();
        } catch (err) {
          throw new ControlRefusal('FAILED', `reload refused: ${(err as Error).message}`);
        }
      },
      ...control.commands,
    };
    try {
      controlSocket = await ControlSocket.listen(controlPath, commands, logger);
      logger.info('control socket', { path: controlPath });
    } catch (err) {
      const text = (err as NodeJS.ErrnoException).code ? `control-socket: cannot bind ${controlPath}: ${(err as Error).message}` : (err as Error).message;
      if (!spec['control-socket']?.optionalAtDefault || origins['control-socket'] !== undefined) {
        // Asked for explicitly: a daemon without the socket the operator configured does not start.
        logger.error('cannot open the control socket', { path: controlPath, err: text });
        process.stderr.write(`${binary}: cannot start: ${text}\n`);
        sampler.close();
        await running.stop().catch(() => undefined);
        await metricsServer?.close();
        dropEarly();
        return 1;
      }
      // The default path (e.g. /run/devloc missing outside the unit): serve without it.
      logger.warn('control socket not available (devloc ctl will not reach this daemon)', { path: controlPath, err: text });
      sampler.close();
      sampler = undefined;
    }
  }
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = async (signal: string): Promise<void> => {
      if (stopping) return;
      stopping = true;
      logger.info('stopping', { signal });
      try {
        sampler?.close();
        await controlSocket?.close();
        await running.stop();
        await metricsServer?.close();
        logger.info('stopped');
        resolve(0);
      } catch (err) {
        logger.error('stop failed', { err: (err as Error).message });
        resolve(1);
      }
    };
    process.on('SIGTERM', () => void stop('SIGTERM'));
    process.on('SIGINT', () => void stop('SIGINT'));
    const onHangup = (): void => {
      reload().catch((err: Error) => {
        if (err instanceof ReloadRefused) logger.error('reload refused: configuration error', { err: err.message });
        else logger.error('reload failed', { err: err.message });
      });
    };
    process.on('SIGHUP', onHangup);
    dropEarly();
    if (earlySignal) void stop(earlySignal);
    else if (earlyReload) onHangup();
  });
}

/** A reload refused by a configuration error (the running configuration stays). */
class ReloadRefused extends Error {}

/**
 * Prefix a check's message with where the option it names was set (`FILE:LINE: listen: ...`),
 * when that was the config file: the line to edit.
 */
export function located(problem: string, spec: Spec, origins: Record<string, string>): string {
  const key = /^(?:--)?([a-z0-9-]+)/.exec(problem)?.[1];
  const origin = key !== undefined && specOf(spec, key) ? origins[key] : undefined;
  return origin && !origin.startsWith('--') && !origin.startsWith('environment') ? `${origin}: ${problem}` : problem;
}

/** A loopback address: 127.0.0.0/8, ::1, or ::ffff:127.x.y.z. */
function isLoopback(ip: string): boolean {
  const b = ipToBytes(ip);
  if (!b) return false;
  if (b.length === 4) return b[0] === 127;
  if (b.every((x, i) => x === (i === 15 ? 1 : 0))) return true;
  return b.slice(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff && b[12] === 127;
}

/** Checks of the options every daemon has; an error text or null. */
export function checkCommon(config: Config): string | null {
  // The daemons that answer on a socket (authd, locatord, matchd) take its address as `listen`.
  if (config['listen'] !== undefined && !ipToBytes(str(config, 'listen'))) return `listen: ${JSON.stringify(str(config, 'listen'))} is not an IP address`;
  const ml = str(config, 'metrics-listen');
  if (!ml) return null;
  const a = parseAddress(ml);
  if (!a) return `metrics-listen: expected IP:PORT or [IPv6]:PORT (got ${JSON.stringify(ml)})`;
  // /metrics is unauthenticated: serving it beyond this host must be a decision, not a typo.
  if (!isLoopback(a.ip) && !bool(config, 'metrics-allow-remote')) {
    return `metrics-listen: ${ml} is not a loopback address; set metrics-allow-remote = yes to serve /metrics to other hosts`;
  }
  return null;
}

/** Entry helper for bin scripts: run and exit with the daemon's status. */
export function main(def: DaemonDefinition): void {
  runDaemon(def).then(
    (code) => process.exit(code),
    (err: Error) => {
      process.stderr.write(`devloc-${def.name}: ${err.message}\n`);
      process.exit(1);
    },
  );
}
