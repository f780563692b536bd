// The operator control socket of devloc-authd, -locatord and -matchd (devloc-ctl(8)): one
// implementation for the three daemons, started by runDaemon (daemon.ts) when the daemon
// defines commands. JSON lines on a Unix stream socket, like the agent's control API:
//
//   request:  {"id": any, "cmd": "show", "args": {"target": "alice"}}
//   response: {"id": same, "ok": true, "result": ...}
//          or {"id": same, "ok": false, "error": {"code": "NOT_FOUND", "message": "..."}}
//
// Access control is the socket's mode, 0660 (owner and group; the unit's RuntimeDirectory is
// group devloc, mode 0750). Everything a local client sends is bounded: one line at most
// MAX_CONTROL_REQUEST bytes, MAX_CONTROL_CONNECTIONS connections, each closed after
// CONTROL_IDLE_MS without a request; every refusal has a code on the wire and a log line.
import { mkdirSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import { dirname } from 'node:path';
import { clearStaleSocket, listenUnix } from '../net/unix-socket.js';
import type { OptionSpec } from './config.js';
import type { Logger } from './log.js';

export const MAX_CONTROL_REQUEST = 4096;
export const MAX_CONTROL_CONNECTIONS = 16;
export const CONTROL_IDLE_MS = 60_000;

/** Where devloc-<daemon> listens and devloc ctl <daemon> connects by default (the unit's RuntimeDirectory). */
export const defaultControlSocket = (daemon: string): string => `/run/devloc/${daemon}/control.sock`;

/** The `control-socket` option of authd, locatord and matchd. */
export function controlSocketOption(daemon: string): OptionSpec {
  return { type: 'string', default: defaultControlSocket(daemon), describe: 'Unix socket for devloc ctl (mode 0660; "" = none)' };
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

export type ControlResponse =
  | { id?: unknown; ok: true; result: unknown }
  | { id?: unknown; ok: false; error: { code: string; message: string } };

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

/** Parse and run one request line; never throws. */
export async function handleControlLine(commands: ControlCommands, line: string, log?: (code: string, message: string) => void): Promise<ControlResponse> {
  let req: { id?: unknown; cmd: string; args?: ControlArgs };
  try {
    const o = JSON.parse(line) as unknown;
    if (typeof o !== 'object' || o === null || Array.isArray(o) || typeof (o as { cmd?: unknown }).cmd !== 'string') throw new Error();
    req = o as typeof req;
    if (req.args !== undefined && (typeof req.args !== 'object' || req.args === null || Array.isArray(req.args))) throw new Error();
  } catch {
    const message = 'expected one JSON object per line: {"id":..., "cmd":..., "args":{...}}';
    log?.('BAD_REQUEST', message);
    return { ok: false, error: { code: 'BAD_REQUEST', message } };
  }
  const idPart = req.id !== undefined ? { id: req.id } : {};
  const fn = Object.hasOwn(commands, req.cmd) ? commands[req.cmd] : undefined;
  if (!fn) {
    const message = `unknown command ${JSON.stringify(req.cmd.slice(0, 64))} (one of ${Object.keys(commands).join(', ')})`;
    log?.('UNKNOWN_COMMAND', message);
    return { ...idPart, ok: false, error: { code: 'UNKNOWN_COMMAND', message } };
  }
  try {
    return { ...idPart, ok: true, result: await fn(req.args ?? {}) };
  } catch (err) {
    const e = err instanceof ControlRefusal ? err : new ControlRefusal('INTERNAL', (err as Error)?.message ?? String(err));
    log?.(e.code, e.message);
    return { ...idPart, ok: false, error: { code: e.code, message: e.message } };
  }
}

/** If `path` exists: a socket nobody answers on is stale and removed; anything else is refused. */
export class ControlSocket {
  private readonly sockets = new Set<net.Socket>();

  private constructor(
    private readonly server: net.Server,
    readonly path: string,
  ) {}

  /** Bind `path` (mode 0660; its directory is created 0750 when missing) and serve `commands`. */
  static async listen(path: string, commands: ControlCommands, logger: Logger): Promise<ControlSocket> {
    mkdirSync(dirname(path), { recursive: true, mode: 0o750 });
    await clearStaleSocket(path, { notSocket: `control-socket: ${path} exists and is not a socket`, inUse: `control-socket: ${path} is in use: is another instance running? (set control-socket to another path)` });
    const server = net.createServer();
    const cs = new ControlSocket(server, path);
    server.maxConnections = MAX_CONTROL_CONNECTIONS;
    server.on('drop', () => logger.refusal('control:FULL', { reason: `more than ${MAX_CONTROL_CONNECTIONS} control connections` }));
    server.on('connection', (sock) => cs.serve(sock, commands, logger));
    await listenUnix(server, path);
    return cs;
  }

  private serve(sock: net.Socket, commands: ControlCommands, logger: Logger): void {
    this.sockets.add(sock);
    sock.setEncoding('utf8');
    sock.setTimeout(CONTROL_IDLE_MS, () => sock.destroy());
    const log = (code: string, message: string): void => logger.refusal(`control:${code}`, { code, reason: message });
    let buf = '';
    let chain = Promise.resolve();
    sock.on('data', (chunk: string) => {
      buf += chunk;
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i).trim();
        buf = buf.slice(i + 1);
        if (i > MAX_CONTROL_REQUEST) {
          this.tooLarge(sock, log);
          return;
        }
        if (!line) continue;
        // Answered in order: each request waits for the previous one on this connection.
        chain = chain.then(async () => {
          const res = await handleControlLine(commands, line, log);
          if (!sock.destroyed) sock.write(JSON.stringify(res) + '\n');
        });
      }
      if (buf.length > MAX_CONTROL_REQUEST) this.tooLarge(sock, log);
    });
    sock.on('error', () => undefined);
    sock.on('close', () => this.sockets.delete(sock));
  }

  private tooLarge(sock: net.Socket, log: (code: string, message: string) => void): void {
    const message = `request line longer than ${MAX_CONTROL_REQUEST} bytes`;
    log('TOO_LARGE', message);
    sock.removeAllListeners('data');
    sock.end(JSON.stringify({ ok: false, error: { code: 'TOO_LARGE', message } }) + '\n');
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    try {
      unlinkSync(this.path);
    } catch {
      /* already gone */
    }
  }
}

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
