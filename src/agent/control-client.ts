// Client side of the control socket, for devloc(1) and for applications that talk to a running
// devloc-agent instead of embedding the Agent class. node:net is imported at the first request,
// not with the library: an embedded agent that never calls this does not pay for it (issue 20).

export const DEFAULT_CONTROL_SOCKET = '/run/devloc/agent.sock';

export class ControlError extends Error {
  override readonly name = 'ControlError';
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Send one request and resolve with its result; rejects with ControlError. `peer` names the
 * program behind the socket in messages (devloc ctl talks to the daemons' sockets with it too).
 */
export async function controlRequest(path: string, cmd: string, args: Record<string, unknown> = {}, timeoutMs = 30_000, peer = 'devloc-agent'): Promise<unknown> {
  const net = await import('node:net');
  return new Promise((resolve, reject) => {
    const sock = net.connect(path);
    let buf = '';
    let settled = false;
    const finish = (fn: () => void): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      fn();
    };
    const timer = setTimeout(() => finish(() => reject(new ControlError('TIMEOUT', `no answer from ${peer} on ${path} within ${timeoutMs} ms`))), timeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(JSON.stringify({ id: 1, cmd, args }) + '\n'));
    sock.on('data', (chunk: string) => {
      buf += chunk;
      const i = buf.indexOf('\n');
      if (i < 0) return;
      const line = buf.slice(0, i);
      finish(() => {
        let res: { ok?: boolean; result?: unknown; error?: { code?: string; message?: string } };
        try {
          res = JSON.parse(line) as typeof res;
        } catch {
          reject(new ControlError('BAD_RESPONSE', `${peer} sent something that is not JSON`));
          return;
        }
        if (res.ok) resolve(res.result);
        else reject(new ControlError(res.error?.code ?? 'ERROR', res.error?.message ?? 'request failed'));
      });
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      const why = err.code === 'ENOENT' || err.code === 'ECONNREFUSED'
        ? `${peer} is not running (no control socket at ${path})`
        : err.code === 'EACCES' ? `permission denied on ${path} (the socket is 0660: join its group)` : err.message;
      finish(() => reject(new ControlError('NO_AGENT', why)));
    });
    sock.on('close', () => finish(() => reject(new ControlError('NO_AGENT', `${peer} closed the connection without an answer`))));
  });
}
