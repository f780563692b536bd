// The CommonJS twin of fake-agent-library.mjs: a stand-in for dist/agent.cjs, registered at once.
'use strict';
const { EventEmitter } = require('node:events');

class Agent extends EventEmitter {
  isRegistered = true;
  counters = { refreshes: 0 };
  // A timer keeps the host alive, as the agent's sockets and timers do.
  async start() {
    this.timer = setInterval(() => {}, 2 ** 30);
  }
  async stop() {}
}
module.exports = { Agent, loadDeviceIdentity: () => ({ ok: true, value: {} }), loadAuthdKey: () => ({ ok: true, value: {} }), parseAddress: (s) => s };
