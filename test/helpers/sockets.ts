// Which UDP sockets a test's in-process code opened, and whether each is closed yet: a stopped
// agent must leave nothing behind (devloc-agent(3): "nothing keeps the process alive
// afterwards"). Counted as node:dgram creates them, since a socket of an earlier test may still
// be closing, which makes the process's own count no base. src/ calls `dgram.createSocket`
// through the module's default export, which is what this replaces.
import type { Test } from 'tap';
import dgram from 'node:dgram';

export interface SocketTracker {
  /** Sockets created since the tracker started. */
  readonly opened: number;
  /** Of those, the ones not closed yet (no 'close' event), with where each was created. */
  open(): string[];
}

/** Track every UDP socket created from now until the test ends. */
export function trackUdpSockets(t: Test): SocketTracker {
  const created: { closed: boolean; where: string }[] = [];
  const createSocket = dgram.createSocket;
  dgram.createSocket = ((...args: Parameters<typeof createSocket>) => {
    const socket = createSocket(...args);
    const entry = { closed: false, where: new Error().stack?.split('\n').slice(2, 5).map((l) => l.trim()).join(' < ') ?? '?' };
    created.push(entry);
    socket.once('close', () => { entry.closed = true; });
    return socket;
  }) as typeof createSocket;
  t.teardown(() => { dgram.createSocket = createSocket; });
  return {
    get opened() { return created.length; },
    open: () => created.filter((s) => !s.closed).map((s) => s.where),
  };
}
