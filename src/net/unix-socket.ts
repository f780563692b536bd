// The local control sockets (the agent's, devloc-agent(8) CONTROL SOCKET, and the daemons' for
// devloc ctl, devloc-ctl(8)): one protocol, one server. JSON lines on a Unix stream socket:
//
//   request:  {"id": any, "cmd": "show", "args": {"target": "alice"}}
//   response: {"id": same, "ok": true, "result": ...}
//          or {"id": same, "ok": false, "error": {"code": "NOT_FOUND", "message": "..."}}
//
// One request per line, answered in order per connection. A stale socket file left by a dead
// process is removed, a live one is refused, and the socket is bound mode 0660 so its
// directory's group (RuntimeDirectory) decides who may connect. Everything a local client sends
// is bounded (line length, connections, idle time); a refusal is answered with its code and
// reported to the owner's log. The commands are the owner's (src/common/control.ts for the
// daemons, src/agent/control.ts for the agent). Node built-ins only: the agent distribution uses
// it too.
import { chmodSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import type { Server, Socket } from 'node:net';
import { dirname } from 'node:path';

/** Remove `path` when it is a socket nobody answers on; throw `inUse` when someone does. */
export async function clearStaleSocket(path: string, errors: { notSocket: string; inUse: string }): Promise<void> {
  let st;
  try {
    st = lstatSync(path);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new Error(errors.notSocket);
  // Imported here, not with the module: the agent library re-exports the control server, and an
  // embedded agent that never listens does not load node:net (issue 20).
  const net = await import('node:net');
  const alive = await new Promise<boolean>((resolve) => {
    const c = net.connect(path);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
  if (alive) throw new Error(errors.inUse);
  unlinkSync(path);
}

/** Bind `server` to `path`, mode 0660. */
export async function listenUnix(server: Server, path: string): Promise<void> {
  // The umask is process-wide, so it is narrowed only around bind(); chmod then sets 0660
  // exactly (the umask may have removed group write).
  const oldMask = process.umask(0o117);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } finally {
    process.umask(oldMask);
  }
  chmodSync(path, 0o660);
}

export interface ControlRequest {
  id?: unknown;
  cmd: string;
  args?: Record<string, unknown>;
}

export type ControlResponse =
  | { id?: unknown; ok: true; result: unknown }
  | { id?: unknown; ok: false; error: { code: string; message: string } };

/** How one side of the protocol runs requests: the command, and the code of what it threw. */
export interface ControlHandler {
  run(req: ControlRequest): unknown;
  /** The code and message of an error `run` threw (its own error classes; anything else INTERNAL). */
  errorOf(err: unknown): { code: string; message: string };
  /** A refused request or connection (code, why): the owner's log line. */
  refused?(code: string, message: string): void;
}

/** Parse and run one request line; never throws. */
export async function answerControlLine(h: ControlHandler, line: string): Promise<ControlResponse> {
  let req: ControlRequest;
  try {
    const o = JSON.parse(line) as unknown;
    if (typeof o !== 'object' || o === null || Array.isArray(o) || typeof (o as ControlRequest).cmd !== 'string') throw new Error();
    req = o as ControlRequest;
    if (req.args !== undefined && (typeof req.args !== 'object' || req.args === null || Array.isArray(req.args))) throw new Error();
  } catch {
    const message = 'expected one JSON object per line: {"id":..., "cmd":..., "args":{...}}';
    h.refused?.('BAD_REQUEST', message);
    return { ok: false, error: { code: 'BAD_REQUEST', message } };
  }
  const idPart = req.id !== undefined ? { id: req.id } : {};
  try {
    return { ...idPart, ok: true, result: await h.run(req) };
  } catch (err) {
    const e = h.errorOf(err);
    h.refused?.(e.code, e.message);
    return { ...idPart, ok: false, error: e };
  }
}

export interface ControlServerLimits {
  /** Longest request line, bytes. */
  maxLine: number;
  maxConnections: number;
  /** A connection without a request for this long is closed (none when absent). */
  idleMs?: number;
}

export interface ControlListenOptions extends ControlServerLimits {
  /** Mode of the socket's directory when it must be created. */
  dirMode: number;
  /** The messages of clearStaleSocket. */
  errors: { notSocket: string; inUse: string };
  /** A connection's socket error (the client went away). */
  connectionError?(err: Error): void;
}

/** A bound control socket serving one ControlHandler. */
export class UnixControlServer {
  private readonly sockets = new Set<Socket>();

  private constructor(
    private readonly server: Server,
    readonly path: string,
  ) {}

  /** Bind `path` (mode 0660; its directory created with `dirMode` when missing) and serve `h`. */
  static async listen(path: string, h: ControlHandler, o: ControlListenOptions): Promise<UnixControlServer> {
    mkdirSync(dirname(path), { recursive: true, mode: o.dirMode });
    await clearStaleSocket(path, o.errors);
    // node:net only now: an embedded agent that never listens does not load it (issue 20).
    const { createServer } = await import('node:net');
    const server = createServer();
    const cs = new UnixControlServer(server, path);
    server.maxConnections = o.maxConnections;
    server.on('drop', () => h.refused?.('FULL', `more than ${o.maxConnections} control connections`));
    server.on('connection', (sock) => cs.serve(sock, h, o));
    await listenUnix(server, path);
    return cs;
  }

  private serve(sock: Socket, h: ControlHandler, o: ControlListenOptions): void {
    this.sockets.add(sock);
    sock.setEncoding('utf8');
    if (o.idleMs !== undefined) sock.setTimeout(o.idleMs, () => sock.destroy());
    let buf = '';
    let chain = Promise.resolve();
    const tooLarge = (): void => {
      const message = `request line longer than ${o.maxLine} bytes`;
      h.refused?.('TOO_LARGE', message);
      sock.removeAllListeners('data');
      buf = '';
      sock.end(JSON.stringify({ ok: false, error: { code: 'TOO_LARGE', message } }) + '\n');
    };
    sock.on('data', (chunk: string) => {
      buf += chunk;
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        if (i > o.maxLine) return tooLarge();
        const line = buf.slice(0, i).trim();
        buf = buf.slice(i + 1);
        if (!line) continue;
        // Answered in order: each request waits for the previous one on this connection.
        chain = chain.then(async () => {
          const res = await answerControlLine(h, line);
          if (!sock.destroyed) sock.write(JSON.stringify(res) + '\n');
        });
      }
      if (buf.length > o.maxLine) tooLarge();
    });
    sock.on('error', (err) => o.connectionError?.(err));
    sock.on('close', () => this.sockets.delete(sock));
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
