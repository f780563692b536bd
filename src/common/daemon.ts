// Shared process lifecycle for devloc-authd, -locatord, -matchd and -agent: parse flags,
// resolve the config (flags > env > file > defaults), --check-config, JSON logs, metrics
// endpoint, SIGTERM/SIGINT graceful stop, SIGHUP reload.
import { hideBin } from 'yargs/helpers';
import type { Config, Spec } from './config.js';
import { commonSpec, daemonArgs, resolveConfig, str } from './config.js';
import type { Level } from './log.js';
import { Logger } from './log.js';
import { Metrics } from './metrics.js';
import { parseAddress } from '../wire/addr.js';

export interface Running {
  /** Stop serving, persist what must be persisted. */
  stop(): Promise<void>;
  /** Apply a re-read configuration (SIGHUP). Throws with a message when it cannot. */
  reload?(config: Config): Promise<void> | void;
}

export interface DaemonDefinition {
  /** e.g. "authd" (binary devloc-authd, env prefix DEVLOC_AUTHD_). */
  name: string;
  summary: string;
  spec: Spec;
  /** Validate the config deeply (keys readable, addresses valid); return an error or null. */
  check(config: Config): Promise<string | null> | string | null;
  start(config: Config, logger: Logger, metrics: Metrics): Promise<Running>;
}

export function fullSpec(spec: Spec): Spec {
  return { ...commonSpec, ...spec };
}

/** Run a daemon as the main program. Resolves when it has stopped. */
export async function runDaemon(def: DaemonDefinition, argv: string[] = hideBin(process.argv), env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const spec = fullSpec(def.spec);
  const binary = `devloc-${def.name}`;
  const parsed = await daemonArgs(binary, def.summary, spec, argv).parseAsync();
  const flags: Record<string, unknown> = {};
  for (const k of Object.keys(spec)) if (parsed[k] !== undefined) flags[k] = parsed[k];
  const resolved = resolveConfig(def.name, spec, flags, env);
  if (!resolved.ok) {
    process.stderr.write(`${binary}: configuration error: ${resolved.error}\n`);
    return 2;
  }
  const config = resolved.config;
  const problem = checkCommon(config) ?? (await def.check(config));
  if (problem) {
    process.stderr.write(`${binary}: configuration error: ${problem}\n`);
    return 2;
  }
  if (parsed['check-config']) {
    process.stdout.write(`${binary}: configuration OK\n`);
    return 0;
  }
  const logger = new Logger({ service: def.name, level: str(config, 'log-level') as Level });
  const metrics = new Metrics();
  let running: Running;
  try {
    running = await def.start(config, logger, metrics);
  } catch (err) {
    logger.error('failed to start', { err: (err as Error).message });
    return 1;
  }
  let metricsServer: { close: () => Promise<void>; port: number } | undefined;
  const ml = str(config, 'metrics-listen');
  if (ml) {
    const a = parseAddress(ml)!; // checked by checkCommon
    try {
      metricsServer = await metrics.serve(a.ip, a.port);
    } catch (err) {
      // e.g. the port is taken: stop what was started instead of dying on a rejection.
      logger.error('cannot serve metrics', { listen: ml, err: (err as Error).message });
      await running.stop().catch(() => undefined);
      return 1;
    }
    logger.info('metrics endpoint', { listen: `${a.ip}:${metricsServer.port}` });
  }
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = async (signal: string): Promise<void> => {
      if (stopping) return;
      stopping = true;
      logger.info('stopping', { signal });
      try {
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
    process.on('SIGHUP', () => {
      void (async () => {
        const again = resolveConfig(def.name, spec, flags, env);
        if (!again.ok) {
          logger.error('reload refused: configuration error', { err: again.error });
          return;
        }
        // The same checks as at start: a reload must not apply what a start would refuse.
        const bad = checkCommon(again.config) ?? (await def.check(again.config));
        if (bad) {
          logger.error('reload refused: configuration error', { err: bad });
          return;
        }
        logger.level = str(again.config, 'log-level') as Level;
        await running.reload?.(again.config);
        logger.info('reloaded');
      })().catch((err: Error) => logger.error('reload failed', { err: err.message }));
    });
  });
}

/** Checks of the options every daemon has; an error text or null. */
export function checkCommon(config: Config): string | null {
  const ml = str(config, 'metrics-listen');
  if (ml && !parseAddress(ml)) return `metrics-listen: expected IP:PORT or [IPv6]:PORT (got ${JSON.stringify(ml)})`;
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
