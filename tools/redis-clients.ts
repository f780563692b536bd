// Measures the two maintained Redis clients for Node.js on locatord's workload, to choose one
// (README, "Scaling out"): ioredis as src/locatord/store/redis-client.ts configures it, and
// node-redis (redis / @redis/client) configured the same way (no offline queue, command
// timeout that also rejects commands in flight, socket timeout, keepalive, RESP2, Buffers).
//   throughput: a standalone redis-server started here; `--conc` request loops, each request
//     the commands of one locatord request in turn: REFRESH (GET + EVALSHA of the
//     compare-and-set script), QUERY of 8 IDs (MGET), REGISTER (SET PX), a relay message
//     (PUBLISH, to a subscriber on its own connection); requests per second and client CPU
//     microseconds per request, each client alone, `--seconds` each;
//   failover: a Cluster of 3 masters + 3 replicas (cluster-node-timeout 1000), both clients
//     GETting keys of every master back to back, the master of one slot SIGKILLed: when each
//     client serves that slot again, measured from the replica's promotion (ROLE polled).
// node-redis is not a dependency of devloc: `npm install --no-save redis` first.
// Usage (from a clone; loopback only, every process stopped at the end):
//   node --import tsx tools/redis-clients.ts [--seconds 5] [--conc 256] [--skip-failover]
import { keySlot, LuaScript, RedisClient } from '../src/locatord/store/redis-client.js';
import { startReplicatedCluster } from '../test/scale/fixtures/redis-replicas.js';
import { startRedis } from '../test/scale/fixtures/redis-server.js';
import { withTeardown } from '../test/helpers/teardown.js';

// node-redis is not a dependency of devloc (`npm install --no-save redis` first): loaded by name
// at run time, so the type check of a clone without it passes; typed only as far as used here.
interface NodeRedisModule {
  createClient(o: object): any; // eslint-disable-line @typescript-eslint/no-explicit-any
  createCluster(o: object): any; // eslint-disable-line @typescript-eslint/no-explicit-any
  RESP_TYPES: { BLOB_STRING: number };
}
const NODE_REDIS: string = 'redis';
const { createClient, createCluster, RESP_TYPES } = (await import(NODE_REDIS)) as NodeRedisModule;

const arg = (name: string, dflt: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const SECONDS = arg('seconds', 5);
const CONC = arg('conc', 256);
const TIMEOUT_MS = 500;

const CAS = new LuaScript(`local cur = redis.call('GET', KEYS[1])
if (cur or '') ~= ARGV[1] then return 0 end
if ARGV[2] == 'del' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4]) end
return 1`);

type Send = (args: (string | Buffer | number)[]) => Promise<unknown>;
interface Subject {
  name: string;
  send: Send;
  subscribe(channel: string, on: () => void): Promise<void>;
  close(): Promise<void>;
}

const bytes = (v: unknown): string => (Buffer.isBuffer(v) ? v.toString('latin1') : '');

function ioredis(port: number): Subject {
  const c = new RedisClient({ nodes: [{ host: '127.0.0.1', port }], timeoutMs: TIMEOUT_MS, maxPending: 100_000 });
  const subs: { close(): void }[] = [];
  return {
    name: 'ioredis 6',
    send: (a) => c.call(a),
    async subscribe(channel, on) {
      const s = c.subscribe(channel, on);
      subs.push(s);
      await s.ready;
    },
    async close() {
      subs.forEach((s) => s.close());
      c.close();
    },
  };
}

const nodeRedisOptions = {
  RESP: 2 as const,
  disableOfflineQueue: true,
  commandOptions: { timeout: TIMEOUT_MS, rejectInFlight: true, typeMapping: { [RESP_TYPES.BLOB_STRING]: Buffer } },
};
const nodeRedisSocket = { connectTimeout: 1000, socketTimeout: 2 * TIMEOUT_MS, keepAlive: true, noDelay: true, reconnectStrategy: (n: number) => Math.min(2000, 50 * 2 ** Math.min(n, 6)) };

async function nodeRedis(port: number): Promise<Subject> {
  const c = createClient({ ...nodeRedisOptions, socket: { ...nodeRedisSocket, host: '127.0.0.1', port } });
  c.on('error', () => {});
  await c.connect();
  const sub = c.duplicate();
  sub.on('error', () => {});
  await sub.connect();
  return {
    name: 'node-redis 6',
    send: (a) => c.sendCommand(a.map((x) => (typeof x === 'number' ? String(x) : x))),
    async subscribe(channel, on) {
      await sub.subscribe(channel, on, true);
    },
    async close() {
      c.destroy();
      sub.destroy();
    },
  };
}

/** One locatord-shaped request (see the top of the file). */
async function request(s: Subject, i: number): Promise<void> {
  const k = `dl:p:{${(i % 10_000).toString(16).padStart(8, '0')}}`;
  switch (i % 4) {
    case 0: {
      const cur = await s.send(['GET', k]);
      let r = await s.send(['EVALSHA', CAS.sha, 1, k, bytes(cur), 'set', `v${i}`, 60_000]).catch(() => null);
      if (r === null) r = await s.send(['EVAL', CAS.source, 1, k, bytes(cur), 'set', `v${i}`, 60_000]);
      return;
    }
    case 1:
      await s.send(['MGET', ...Array.from({ length: 8 }, (_, j) => `dl:p:{${((i + j * 997) % 10_000).toString(16).padStart(8, '0')}}`)]);
      return;
    case 2:
      await s.send(['SET', k, Buffer.alloc(60, i & 0xff), 'PX', 60_000]);
      return;
    default:
      await s.send(['PUBLISH', 'dl:relay:bench', Buffer.alloc(120, 1)]);
  }
}

async function throughput(s: Subject): Promise<{ reqPerS: number; cpuUsPerReq: number; errors: number }> {
  let received = 0;
  await s.subscribe('dl:relay:bench', () => { received++; });
  // Warm-up (script cache, JIT).
  for (let i = 0; i < 2000; i++) await request(s, i);
  let done = 0;
  let errors = 0;
  let stop = false;
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const loops = Array.from({ length: CONC }, async (_, w) => {
    for (let i = w; !stop; i += CONC) {
      try {
        await request(s, i);
        done++;
      } catch {
        errors++;
      }
    }
  });
  await new Promise((r) => setTimeout(r, SECONDS * 1000));
  stop = true;
  await Promise.all(loops);
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  if (received === 0) errors++;
  return { reqPerS: Math.round(done / secs), cpuUsPerReq: Math.round(((cpu.user + cpu.system) / done) * 10) / 10, errors };
}

async function failover(): Promise<Record<string, number | string>> {
  return withTeardown(async (t) => {
    const cluster = await startReplicatedCluster(t);
    const io = new RedisClient({ nodes: cluster.ports.map((port) => ({ host: '127.0.0.1', port })), cluster: true, timeoutMs: TIMEOUT_MS });
    t.teardown(() => io.close());
    await io.ready();
    const nr = createCluster({
      rootNodes: cluster.ports.map((port) => ({ socket: { host: '127.0.0.1', port } })),
      defaults: { ...nodeRedisOptions, socket: nodeRedisSocket },
      ...nodeRedisOptions,
    });
    nr.on('error', () => {});
    await nr.connect();
    t.teardown(() => nr.destroy());
    // One key per master; the first one's master is killed.
    const keys: string[] = [];
    const owners = new Set<number>();
    for (let i = 0; owners.size < 3; i++) {
      const k = `dl:p:{${i}}`;
      const o = await cluster.ownerOf(keySlot(k));
      if (!owners.has(o)) {
        owners.add(o);
        keys.push(k);
      }
    }
    for (const k of keys) await io.call(['SET', k, 'x']);
    const victim = await cluster.ownerOf(keySlot(keys[0]!));
    const view = await cluster.nodes(victim);
    const replica = view.find((n) => n.masterId === view.find((m) => m.port === victim)!.id)!.port;
    const clients: [string, Send][] = [
      ['ioredis 6', (a) => io.call(a)],
      ['node-redis 6', (a) => nr.sendCommand(String(a[1]), true, a.map(String))],
    ];
    const log = new Map<string, { atMs: number; key: string; ok: boolean }[]>(clients.map(([n]) => [n, []]));
    let stop = false;
    const loops = clients.flatMap(([name, send]) => keys.map(async (key) => {
      while (!stop) {
        const ok = await send(['GET', key]).then(() => true, () => false);
        log.get(name)!.push({ atMs: Date.now(), key, ok });
        if (!ok) await new Promise((r) => setTimeout(r, 5));
      }
    }));
    await new Promise((r) => setTimeout(r, 500));
    const killedAt = Date.now();
    await cluster.kill(victim);
    const promotedAt = await cluster.waitPromoted(replica);
    await new Promise((r) => setTimeout(r, 15_000));
    stop = true;
    await Promise.all(loops);
    const out: Record<string, number | string> = { promotionAfterKillMs: promotedAt - killedAt };
    for (const [name] of clients) {
      const l = log.get(name)!;
      const back = l.find((o) => o.key === keys[0] && o.ok && o.atMs >= promotedAt);
      out[`${name}: victim slot served again after promotion, ms`] = back ? back.atMs - promotedAt : 'not within 15 s';
      out[`${name}: other slots failed GETs`] = l.filter((o) => o.key !== keys[0] && !o.ok).length;
    }
    return out;
  });
}

await withTeardown(async (t) => {
  const redis = await startRedis(t);
  for (const make of [async () => ioredis(redis.port), () => nodeRedis(redis.port)]) {
    const s = await make();
    const r = await throughput(s);
    console.log(JSON.stringify({ client: s.name, conc: CONC, seconds: SECONDS, ...r }));
    await s.close();
  }
});
if (!process.argv.includes('--skip-failover')) console.log(JSON.stringify(await failover()));
