// A stand-in for the agent library (bench/agent-child.ts imports the module its settings name):
// registered at once, no network, so measured-process.test.ts can run the bench's library child
// without a stack. Plain JavaScript: the child runs under node alone, as the bench's built one.
import { EventEmitter } from 'node:events';

export class Agent extends EventEmitter {
  isRegistered = true;
  counters = { refreshes: 0 };
  async start() {}
  async stop() {}
}
export const loadDeviceIdentity = () => ({ ok: true, value: {} });
export const loadAuthdKey = () => ({ ok: true, value: {} });
export const parseAddress = (s) => s;
