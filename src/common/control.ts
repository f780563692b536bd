// The operator control socket of devloc-authd, -locatord and -matchd (devloc-ctl(8)): one
// implementation for the three daemons, started by runDaemon (daemon.ts) when the daemon
// defines commands. The protocol and its server are the agent's control API's too
// (src/net/unix-socket.ts: JSON lines on a Unix stream socket); this file holds the daemons'
// commands, limits and refusal codes.
//
// Access control is the socket's mode, 0660 (owner and group; the unit's RuntimeDirectory is
// group devloc, mode 0750). Everything a local client sends is bounded: one line at most
// MAX_CONTROL_REQUEST bytes, MAX_CONTROL_CONNECTIONS connections, each closed after
// CONTROL_IDLE_MS without a request; every refusal has a code on the wire and a log line.
import type { ControlHandler, ControlResponse } from '../net/unix-socket.js';
import { UnixControlServer } from '../net/unix-socket.js';
import type { OptionSpec } from './config.js';
import type { Logger } from './log.js';

export const MAX_CONTROL_REQUEST = 4096;
export const MAX_CONTROL_CONNECTIONS = 16;
export const CONTROL_IDLE_MS = 60_000;

/** Where devloc-<daemon> listens and devloc ctl <daemon> connects by default (the unit's RuntimeDirectory). */
export const defaultControlSocket = (daemon: string): string => `/run/devloc/${daemon}/control.sock`;

/** The `control-socket` option of authd, locatord and matchd. */
export function controlSocketOption(daemon: string): OptionSpec {
  return { type: 'string', default: defaultControlSocket(daemon), describe: 'Unix socket for devloc ctl (mode 0660; "" = none)', optionalAtDefault: true };
}

/** What a command may answer with instead of a result: a stable code and a message. */
export class ControlRefusal extends Error {
  override readonly name = 'ControlRefusal';
  constructor(
    readonly code: 'BAD_REQUEST' | 'UNKNOWN_COMMAND' | 'TOO_LARGE' | 'NOT_FOUND' | 'NOT_SUPPORTED' | 'FAILED' | 'INTERNAL',
    message: string,
  ) {
    super(message);
  }
}

export type ControlArgs = Record<string, unknown>;
/** One command: its arguments as sent; a result (JSON-serialisable) or a ControlRefusal thrown. */
export type ControlCommand = (args: ControlArgs) => unknown;
export type ControlCommands = Record<string, ControlCommand>;

export type { ControlResponse };

/** A text argument `k` (required): at most 256 characters. */
export function textArg(args: ControlArgs, k: string): string {
  const v = args[k];
  if (typeof v !== 'string' || v.length === 0 || v.length > 256) throw new ControlRefusal('BAD_REQUEST', `args.${k} is required: text of 1..256 characters`);
  return v;
}

/** A whole-number argument `k` within [min, max], or `dflt` when absent. */
export function intArg(args: ControlArgs, k: string, dflt: number, min: number, max: number): number {
  const v = args[k];
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) throw new ControlRefusal('BAD_REQUEST', `args.${k} must be a whole number in ${min}..${max}`);
  return v;
}

/** The daemons' side of the protocol: `commands` by name, refusals with a code and a log line. */
export function daemonControlHandler(commands: ControlCommands, log?: (code: string, message: string) => void): ControlHandler {
  return {
    run(req) {
      const fn = Object.hasOwn(commands, req.cmd) ? commands[req.cmd] : undefined;
      if (!fn) throw new ControlRefusal('UNKNOWN_COMMAND', `unknown command ${JSON.stringify(req.cmd.slice(0, 64))} (one of ${Object.keys(commands).join(', ')})`);
      return fn(req.args ?? {});
    },
    errorOf(err) {
      const e = err instanceof ControlRefusal ? err : new ControlRefusal('INTERNAL', (err as Error)?.message ?? String(err));
      return { code: e.code, message: e.message };
    },
    ...(log ? { refused: log } : {}),
  };
}

/** The daemons' control socket: the shared server with the daemons' commands and limits. */
export const ControlSocket = {
  /** Bind `path` (mode 0660; its directory is created 0750 when missing) and serve `commands`. */
  listen(path: string, commands: ControlCommands, logger: Logger): Promise<UnixControlServer> {
    const log = (code: string, message: string): void => logger.refusal(`control:${code}`, { code, reason: message });
    return UnixControlServer.listen(path, daemonControlHandler(commands, log), {
      maxLine: MAX_CONTROL_REQUEST, maxConnections: MAX_CONTROL_CONNECTIONS, idleMs: CONTROL_IDLE_MS, dirMode: 0o750,
      errors: { notSocket: `control-socket: ${path} exists and is not a socket`, inUse: `control-socket: ${path} is in use: is another instance running? (set control-socket to another path)` },
    });
  },
};
export type ControlSocket = UnixControlServer;

/** Rates for `status`: totals sampled every `everyMs`, the rate over the last `windowMs`. */
export class RateSampler {
  private readonly samples: { at: number; values: Record<string, number> }[] = [];
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly read: () => Record<string, number>,
    private readonly everyMs = 10_000,
    private readonly windowMs = 60_000,
    private readonly now: () => number = Date.now,
  ) {
    this.sample();
    this.timer = setInterval(() => this.sample(), everyMs);
    this.timer.unref();
  }

  private sample(): void {
    this.samples.push({ at: this.now(), values: this.read() });
    while (this.samples.length > 1 && this.samples[0]!.at < this.now() - this.windowMs - this.everyMs) this.samples.shift();
  }

  /** Per second since the oldest sample kept (at most the window), by name; and over how long. */
  rates(): { windowS: number; perS: Record<string, number> } {
    const now = this.now();
    const cur = this.read();
    const first = this.samples.find((s) => s.at >= now - this.windowMs) ?? this.samples[this.samples.length - 1]!;
    const dt = Math.max(0.001, (now - first.at) / 1000);
    const perS: Record<string, number> = {};
    for (const [k, v] of Object.entries(cur)) perS[k] = Math.round(((v - (first.values[k] ?? 0)) / dt) * 100) / 100;
    return { windowS: Math.round(dt), perS };
  }

  close(): void {
    clearInterval(this.timer);
  }
}
