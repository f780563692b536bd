// 24 simulated hours of an idle agent (issue 20): authd, locatord and one embedded Agent in this
// one process on a virtual clock (virtual-clock.ts), real UDP on 127.0.0.1 between them. The
// agent refreshes at locatord's interval, renews its ticket, re-authenticates, and the servers
// sweep, for a virtual day in well under a minute; the V8 heap after a full GC is sampled every
// virtual hour, split into compiled code (machine code and bytecode with their metadata,
// v8.getHeapCodeStatistics(): it grows while functions are compiled, optimised and
// deoptimised) and the rest (data, feedback vectors, V8's own lists), with the ArrayBuffer memory
// outside the heap (Buffers' backing stores: a retained 32-byte Buffer can pin an 8 KiB pool
// slab). Reported by agent.ts (`devloc bench --only agent`): growth of the whole process (agent
// and servers: a leak in any shows) over the first day and over the second. Reads one JSON line of
// settings on stdin, prints one JSON line. DAY_SNAPSHOT_HOURS=12,24 also writes V8 heap snapshots
// at those hours (os.tmpdir()/devloc-day-H.heapsnapshot), to see what grew.
// Run with `--max-opt=0` (V8's interpreter only: nothing is optimised, so no machine code is
// compiled after start-up and none is thrown away) the heap holds only the program's data and
// the interpreter's state, which is what a leak grows: agent.ts runs the day both ways.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { getHeapCodeStatistics, writeHeapSnapshot } from 'node:v8';
import path from 'node:path';
import { installVirtualClock } from './virtual-clock.js';
import { serveOneJsonRequest } from './json-child.js';
import { Rng } from '../fuzz/rng.js';

export interface DaySettings {
  /** Module exporting the agent library's API (the distribution's bundle, or src/agent/index). */
  library: string;
  /** Virtual hours to run (default 24). */
  hours?: number;
  /** Seed of the agent's jitter (refresh times, renewals, retries), so a day is reproducible (default 1). */
  seed?: number;
}

export interface DayResult {
  hours: number;
  /** V8 heap in use after a full GC at the end of each virtual hour (index 0 = hour 1). */
  heapAfterGcBytes: number[];
  /** Of it, compiled code: machine code and bytecode with their metadata (v8.getHeapCodeStatistics()), same hours. */
  codeAfterGcBytes: number[];
  /** ArrayBuffer backing stores (outside the V8 heap) after the same GCs. */
  arrayBuffersAfterGcBytes: number[];
  rssBytes: number;
  refreshes: number;
  authentications: number;
  timersFired: number;
  timerErrors: string[];
  realSeconds: number;
  registeredAtEnd: boolean;
}

type Library = typeof import('../src/agent/index.js');

async function run(s: DaySettings): Promise<DayResult> {
  const clock = installVirtualClock();
  const realStart = process.hrtime.bigint();
  // After the clock: every timer these modules set is virtual.
  const { startAuthd } = await import('../src/authd/server.js');
  const { AuthDb } = await import('../src/authd/db.js');
  const { startLocatord } = await import('../src/locatord/server.js');
  const { readServiceKey, withDefaults } = await import('../src/locatord/options.js');
  const { readTrust } = await import('../src/net/trust.js');
  const { Logger } = await import('../src/common/log.js');
  const keys = await import('../src/wire/keys.js');
  const lib = (await import(s.library)) as Library;

  const dir = mkdtempSync(path.join(tmpdir(), 'devloc-agent-day-'));
  const quiet = new Logger({ service: 'bench', level: 'error', write: () => {} });
  try {
    const authdKey = keys.newAuthdKey();
    const authdKeyFile = path.join(dir, 'authd.key');
    writeFileSync(authdKeyFile, keys.keyFileToJson(authdKey), { mode: 0o600 });
    const authdPub = path.join(dir, 'authd.pub');
    writeFileSync(authdPub, keys.publicToJson(keys.publicOf(authdKey)));
    const service = keys.newServiceKey('locator');
    const serviceFile = path.join(dir, 'locator.key');
    writeFileSync(serviceFile, keys.keyFileToJson(service), { mode: 0o600 });
    const device = keys.newDeviceKey();
    if (device.kind !== 'device' || service.kind !== 'service') throw new Error('unreachable');
    const identityFile = path.join(dir, 'device.key');
    writeFileSync(identityFile, keys.keyFileToJson(device), { mode: 0o600 });

    const sk = readServiceKey(serviceFile);
    const loc = await startLocatord(withDefaults({
      serviceSecret: sk.secret, audience: sk.audience, trustedKeys: readTrust([authdPub]), stateDir: path.join(dir, 'loc'),
      listen: '127.0.0.1', port: 0, reflector: null, snapshot: false,
    }), quiet);
    const authdState = path.join(dir, 'authd');
    const db = AuthDb.open(authdState, { create: true });
    db.addDevice({ deviceId: device.deviceId, publicKey: device.sign.public });
    db.putService({ serviceId: 'locator', sealKey: service.seal.public, addr: `127.0.0.1:${loc.port}` }, false);
    db.close();
    const authd = await startAuthd({ host: '127.0.0.1', port: 0, keyFiles: [authdKeyFile], stateDir: authdState, logger: quiet, ratePerS: 0 });

    const rng = new Rng(s.seed ?? 1);
    const id = lib.loadDeviceIdentity(identityFile);
    if (!id.ok) throw new Error(id.error);
    const ak = lib.loadAuthdKey(authdPub);
    if (!ak.ok) throw new Error(ak.error);
    const agent = new lib.Agent({ identity: id.value, authd: lib.parseAddress(`127.0.0.1:${authd.port}`)!, authdKey: ak.value, reflector: null, random: () => rng.float() });
    await agent.start();
    // Registered within a virtual minute (the exchange itself takes no virtual time).
    await clock.runUntil(clock.now() + 60_000);
    if (!agent.isRegistered) throw new Error('not registered after a virtual minute');

    const hours = s.hours ?? 24;
    const gc = (globalThis as { gc?: () => void }).gc;
    if (!gc) throw new Error('run with --expose-gc');
    // Allocated whole now: arrays grown by push() would be heap growth of the bench's own (their
    // backing stores double), seen in a run with the JIT off as the only thing still growing.
    const samples = (): number[] => Array.from({ length: hours }, () => 0);
    const heapAfterGcBytes = samples();
    const codeAfterGcBytes = samples();
    const arrayBuffersAfterGcBytes = samples();
    const r0 = agent.counters.refreshes;
    const a0 = agent.counters.authentications;
    for (let h = 1; h <= hours; h++) {
      await clock.runUntil(clock.now() + 3_600_000);
      gc();
      const memory = process.memoryUsage();
      heapAfterGcBytes[h - 1] = memory.heapUsed;
      arrayBuffersAfterGcBytes[h - 1] = memory.arrayBuffers;
      // Not the code spaces of getHeapSpaceStatistics(): bytecode and deoptimisation data are in
      // old space with the data, and grew there (heap snapshots of hours 48 and 96).
      const code = getHeapCodeStatistics();
      codeAfterGcBytes[h - 1] = code.code_and_metadata_size + code.bytecode_and_metadata_size;
      if (process.env['DAY_SNAPSHOT_HOURS']?.split(',').includes(String(h))) writeHeapSnapshot(path.join(tmpdir(), `devloc-day-${h}.heapsnapshot`));
    }
    const result: DayResult = {
      hours, heapAfterGcBytes, codeAfterGcBytes, arrayBuffersAfterGcBytes, rssBytes: process.memoryUsage().rss, refreshes: agent.counters.refreshes - r0, authentications: agent.counters.authentications - a0,
      timersFired: clock.fired, timerErrors: clock.errors.map((e) => e.message).slice(0, 5),
      realSeconds: Number(process.hrtime.bigint() - realStart) / 1e9, registeredAtEnd: agent.isRegistered,
    };
    const stopping = Promise.all([agent.stop({ unregister: false }), loc.stop(), authd.stop()]);
    // Stops may wait on timers (drains, final flushes): let virtual time move until they are done.
    let stopped = false;
    void stopping.then(() => (stopped = true));
    for (let i = 0; i < 100 && !stopped; i++) await clock.runUntil(clock.now() + 1000);
    return result;
  } finally {
    clock.uninstall();
    rmSync(dir, { recursive: true, force: true });
  }
}

serveOneJsonRequest('bench agent-day', run);
