// One embedded agent, its CPU time and wire bytes measured from inside its own process (agent.ts
// starts it). It reads one JSON line of settings on stdin, registers, lets the agent settle, then
// measures over the window and prints one JSON line. Only the library is loaded, as an
// application embedding the agent would load it. Its RSS is not measured here: this process
// carries the bench's instruments and --expose-gc (the flag alone added 0.6 MiB to an embedding
// host in A/B runs, nothing to bare Node); the footprint is measured-process.ts's host, which
// carries neither.
import dgram from 'node:dgram';
import { once } from 'node:events';
import { serveOneJsonRequest } from './json-child.js';

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
  const mem = process.memoryUsage();
  const result: ChildResult = {
    startToRegisteredMs, bytesSent: wire.sent, bytesReceived: wire.received, datagrams: wire.datagrams,
    heapAfterGcStart, heapAfterGcEnd: heapAfterGc(),
    heapUsedBytes: mem.heapUsed, cpuUserUs: c1.user, cpuSystemUs: c1.system,
    refreshes: agent.counters.refreshes - r0, seconds,
  };
  await agent.stop();
  return result;
}

serveOneJsonRequest('bench-child', run);
