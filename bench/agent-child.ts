// One embedded agent (agent.ts starts it). It reads one JSON line of settings on stdin,
// registers, says so on the readiness pipe (measured-process.ts: the parent reads this process's
// RSS from /proc a settling time later, as it does bare Node's and the daemon's), lets the agent
// settle, measures CPU time and wire bytes over the window, waits until the parent has read the
// RSS, and only then prints one JSON line. Only the library is loaded, as an application
// embedding the agent would load it.
import dgram from 'node:dgram';
import { once } from 'node:events';
import { serveOneJsonRequest } from './json-child.js';
import { signalReady, waitUntilMeasured } from './measured-process.js';

type Library = typeof import('../src/agent/index.js');

export interface ChildSettings {
  /** Module exporting the agent library's API: the distribution's bundle, or src/agent/index. */
  library: string;
  identity: string;
  authd: string;
  authdKey: string;
  maxRefreshS: number;
  seconds: number;
  warmupMs: number;
}

export interface ChildResult {
  /** From the process's start to the 'registered' event, ms. */
  startToRegisteredMs: number;
  /** UDP payload bytes and datagrams the agent sent and received in the window. */
  bytesSent: number;
  bytesReceived: number;
  datagrams: number;
  /** V8 heap in use after a full GC, at the window's start and end (--expose-gc). */
  heapAfterGcStart: number;
  heapAfterGcEnd: number;
  /** V8 heap in use at the window's end (no GC forced). The RSS is the parent's reading (measured-process.ts). */
  heapUsedBytes: number;
  cpuUserUs: number;
  cpuSystemUs: number;
  refreshes: number;
  seconds: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// Bytes on the wire: every datagram of every UDP socket of this process (the agent's only),
// counted while `counting` (payload bytes; the caller adds IP and UDP headers).
const wire = { counting: false, sent: 0, received: 0, datagrams: 0 };
const proto = dgram.Socket.prototype as unknown as { send: (...a: unknown[]) => void; emit: (ev: string | symbol, ...a: unknown[]) => boolean };
const send = proto.send;
proto.send = function (this: unknown, ...a: unknown[]) {
  if (wire.counting) {
    const m = a[0];
    wire.sent += Array.isArray(m) ? m.reduce((n: number, b: Uint8Array) => n + b.length, 0) : typeof m === 'string' ? Buffer.byteLength(m) : (m as Uint8Array).length;
    wire.datagrams++;
  }
  return send.apply(this, a);
};
const emit = proto.emit;
proto.emit = function (this: unknown, ev: string | symbol, ...a: unknown[]) {
  if (wire.counting && ev === 'message') {
    wire.received += (a[0] as Buffer).length;
    wire.datagrams++;
  }
  return emit.call(this, ev, ...a);
};
const heapAfterGc = (): number => {
  (globalThis as { gc?: () => void }).gc?.();
  return process.memoryUsage().heapUsed;
};

async function run(s: ChildSettings): Promise<ChildResult> {
  // Loaded only now, from the file the parent names, as an application embedding it would.
  const { Agent, loadAuthdKey, loadDeviceIdentity, parseAddress } = (await import(s.library)) as Library;
  const id = loadDeviceIdentity(s.identity);
  if (!id.ok) throw new Error(id.error);
  const key = loadAuthdKey(s.authdKey);
  if (!key.ok) throw new Error(key.error);
  const agent = new Agent({ identity: id.value, authd: parseAddress(s.authd)!, authdKey: key.value, reflector: null, maxRefreshS: s.maxRefreshS });
  await agent.start();
  const deadline = setTimeout(() => {
    process.stderr.write('bench-child: not registered within 30 s\n');
    process.exit(1);
  }, 30_000);
  if (!agent.isRegistered) await once(agent, 'registered');
  const startToRegisteredMs = process.uptime() * 1000;
  clearTimeout(deadline);
  signalReady();
  await sleep(s.warmupMs);
  const heapAfterGcStart = heapAfterGc();
  const r0 = agent.counters.refreshes;
  wire.counting = true;
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  await sleep(s.seconds * 1000);
  const c1 = process.cpuUsage(c0);
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  wire.counting = false;
  const heapUsedBytes = process.memoryUsage().heapUsed;
  // Nothing below is counted in the RSS: the parent reads it while this blocks (or has already).
  waitUntilMeasured();
  const result: ChildResult = {
    startToRegisteredMs, bytesSent: wire.sent, bytesReceived: wire.received, datagrams: wire.datagrams,
    heapAfterGcStart, heapAfterGcEnd: heapAfterGc(),
    heapUsedBytes, cpuUserUs: c1.user, cpuSystemUs: c1.system,
    refreshes: agent.counters.refreshes - r0, seconds,
  };
  await agent.stop();
  return result;
}

serveOneJsonRequest('bench-child', run);
