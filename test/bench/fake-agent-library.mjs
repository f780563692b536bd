// A stand-in for the agent library (the host of bench/measured-process.ts loads what it is given):
// registered at once, no network, so measured-process.test.ts can run the bench's library host
// without a stack. Plain JavaScript: the host is plain node -e.
import { EventEmitter } from 'node:events';

export class Agent extends EventEmitter {
  isRegistered = true;
  counters = { refreshes: 0 };
  // A timer keeps the host alive, as the agent's sockets and timers do.
  async start() {
    this.timer = setInterval(() => {}, 2 ** 30);
  }
  async stop() {}
}
export const loadDeviceIdentity = () => ({ ok: true, value: {} });
export const loadAuthdKey = () => ({ ok: true, value: {} });
export const parseAddress = (s) => s;
