// Two ends of the --workers channel (src/common/workers.ts) joined by a fake pipe: what one end
// sends is copied through JSON and delivered to the other on a later turn, as node's IPC does.
import { EventEmitter } from 'node:events';
import { WorkerChannel } from '../../src/common/workers.js';

export function workerPipe(): { a: WorkerChannel; b: WorkerChannel; sent: unknown[] } {
  const sent: unknown[] = [];
  const pa = new EventEmitter();
  const pb = new EventEmitter();
  const end = (self: EventEmitter, other: EventEmitter) => Object.assign(self, {
    isConnected: () => true,
    send: (m: unknown): boolean => {
      sent.push(m);
      const copy: unknown = JSON.parse(JSON.stringify(m));
      setImmediate(() => other.emit('message', copy));
      return true;
    },
  });
  return { a: new WorkerChannel(end(pa, pb)), b: new WorkerChannel(end(pb, pa)), sent };
}

/** Two turns of the event loop: a batch queued in this one has been sent and delivered. */
export async function nextTurns(): Promise<void> {
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
}
