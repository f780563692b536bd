// The local control sockets (the agent's, and the daemons' for devloc ctl): a stale socket file
// left by a dead process is removed, a live one is refused, and the socket is bound mode 0660 so
// its directory's group (RuntimeDirectory) decides who may connect. Node built-ins only: the
// agent distribution uses it too.
import { chmodSync, lstatSync, unlinkSync } from 'node:fs';
import type { Server } from 'node:net';

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
