// A seeded UDP impairment proxy: what `tc netem` would do to a link, for a kernel without it.
// Clients send to the proxy's port; for each client source the proxy opens its own upstream
// socket to the target (so the target sees one stable address per client, as behind a NAT) and
// forwards both ways, duplicating, reordering, delaying and dropping datagrams on the way.
// Datagrams are never altered.
//
//   npx tsx tools/impair.ts --listen 127.0.0.1:0 --target 127.0.0.1:4701 --seed 7 \
//       --dup 0.2 --reorder 0.2 --delay-ms 5-40 --loss 0.05
//
// prints {"msg":"listening","port":N,...} once bound, a {"msg":"stats",...} line on SIGUSR1,
// and the final stats on SIGTERM/SIGINT before it exits.
//
// Every decision (drop, duplicate, hold back, delay) comes from a small PRNG seeded from --seed,
// one stream per direction of each client in the order clients first appear: the same input
// sequence gives the same decisions. Output timing is real time, so with delays two datagrams
// sent close together may still leave in either order; with no delay the output sequence itself
// is reproducible. Memory is bounded: held datagrams, client mappings and pending delayed sends
// all have caps, and idle mappings expire.
import dgram from 'node:dgram';
import { parseArgs } from 'node:util';
import { Rng } from '../fuzz/rng.js';
import type { Address } from '../src/wire/addr.js';
import { formatAddress, normaliseIp, parseAddress } from '../src/wire/addr.js';
import { isMainModule } from '../src/common/entry.js';

export type Direction = 'up' | 'down';

export interface ImpairOptions {
  /** Where clients send (port 0: any free port). */
  listen: Address;
  /** Where the proxy forwards clients' datagrams. */
  target: Address;
  seed: number;
  /** Probability that a datagram is sent twice (0..1). */
  dup?: number;
  /** Probability that a datagram is held back and released after the next one(s) (0..1). */
  reorder?: number;
  /** A held datagram goes out after 1..reorderDepth later datagrams of its flow (default 2)... */
  reorderDepth?: number;
  /** ...or after this long if its flow goes quiet, ms (default 100): holding is not losing. */
  holdMaxMs?: number;
  /** Each copy waits uniformly in [min, max] ms before it is sent (default [0, 0]). */
  delayMs?: [number, number];
  /** Probability that a datagram is dropped (0..1). */
  loss?: number;
  /** Which directions are impaired (default both); the other one is forwarded untouched. */
  directions?: readonly Direction[];
  /** Most datagrams held back for reordering, all flows together (default 256). */
  maxHeld?: number;
  /** Most delayed copies waiting for their timer (default 4096); beyond, copies go at once. */
  maxPending?: number;
  /** Most client mappings (default 1024); the least recently active one is closed beyond. */
  maxClients?: number;
  /** A mapping with no traffic for this long is closed, ms (default 60000). */
  idleMs?: number;
  /** Local address of the upstream sockets (default: any address of the target's family). */
  upstreamBind?: string;
  /** Called for each datagram as it arrives, before any impairment (tests count requests). */
  onReceive?: (dir: Direction, datagram: Buffer, client: Address) => void;
  /** Called for each copy as it is sent. */
  onSend?: (dir: Direction, datagram: Buffer, client: Address) => void;
}

/** Counters; "up" is client to target, "down" target to client. */
export interface ImpairStats {
  /** Client mappings open now. */
  clients: number;
  clientsOpened: number;
  /** Closed after idleMs without traffic. */
  clientsExpired: number;
  /** Closed to make room (maxClients). */
  clientsEvicted: number;
  /** Datagrams that arrived. */
  received: Record<Direction, number>;
  /** Copies sent on (duplicates included). */
  sent: Record<Direction, number>;
  /** Datagrams lost on purpose. */
  dropped: Record<Direction, number>;
  /** Datagrams sent twice. */
  duplicated: Record<Direction, number>;
  /** Datagrams held back behind later ones. */
  reordered: Record<Direction, number>;
  /** Copies that waited for a delay timer. */
  delayed: Record<Direction, number>;
  /** Held datagrams released early because maxHeld was reached. */
  heldOverflow: number;
  /** Copies sent without their delay because maxPending was reached. */
  pendingOverflow: number;
  sendErrors: number;
  /** Datagrams held back now. */
  held: number;
  /** Delayed copies waiting for their timer now. */
  pending: number;
}

export interface ImpairProxy {
  /** The bound listening port. */
  readonly port: number;
  readonly address: Address;
  stats(): ImpairStats;
  /** Close every socket and timer; held and delayed datagrams are discarded. */
  close(): Promise<void>;
}

/** What happens to one datagram: nothing sent (dropped), or copies each with a delay. */
export interface Decision {
  drop: boolean;
  /** Delay of each copy, ms (two entries when duplicated). */
  copies: number[];
  /** Held back until this many later datagrams of the flow have passed (0: not held). */
  holdFor: number;
}

/**
 * The decisions for one direction of one flow, in arrival order. Pure given the seed: the
 * proxy's determinism is this function's. Exported so tests can check it directly.
 */
export class Decider {
  private readonly rng: Rng;
  constructor(
    seed: number,
    private readonly o: { dup: number; reorder: number; reorderDepth: number; delayMs: [number, number]; loss: number },
  ) {
    this.rng = new Rng(seed);
  }

  next(): Decision {
    // Always the same number of draws per datagram, so one knob's setting does not shift the
    // stream of the others (a run with --dup 0.2 drops the same datagrams as one with --dup 0).
    const r = this.rng;
    const lossDraw = r.float();
    const dupDraw = r.float();
    const reorderDraw = r.float();
    const depth = r.range(1, Math.max(1, this.o.reorderDepth));
    const [lo, hi] = this.o.delayMs;
    const d1 = lo + r.float() * (hi - lo);
    const d2 = lo + r.float() * (hi - lo);
    if (lossDraw < this.o.loss) return { drop: true, copies: [], holdFor: 0 };
    const copies = dupDraw < this.o.dup ? [d1, d2] : [d1];
    return { drop: false, copies: copies.map((d) => Math.round(d)), holdFor: reorderDraw < this.o.reorder ? depth : 0 };
  }
}

interface Held {
  bytes: Buffer;
  copies: number[];
  remaining: number;
  timer: NodeJS.Timeout;
  flow: Flow;
  dir: Direction;
}

interface Flow {
  key: string;
  client: Address;
  upstream: dgram.Socket;
  lastActive: number;
  decide: Record<Direction, Decider>;
  held: Record<Direction, Held[]>;
  closed: boolean;
}

const emptyDirs = (): Record<Direction, number> => ({ up: 0, down: 0 });

/** Mix the seed with the flow's index and direction (splitmix-style) into one 32-bit seed. */
export function flowSeed(seed: number, index: number, dir: Direction): number {
  let z = (seed ^ Math.imul(index + 1, 0x9e3779b9) ^ (dir === 'up' ? 0x5bd1e995 : 0x1b873593)) >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
  return (z ^ (z >>> 16)) >>> 0;
}

function checkProbability(name: string, v: number): void {
  if (!(v >= 0 && v <= 1)) throw new RangeError(`${name} must be a probability in [0, 1], got ${v}`);
}

export async function createImpairProxy(o: ImpairOptions): Promise<ImpairProxy> {
  const dup = o.dup ?? 0;
  const reorder = o.reorder ?? 0;
  const loss = o.loss ?? 0;
  checkProbability('dup', dup);
  checkProbability('reorder', reorder);
  checkProbability('loss', loss);
  const delayMs = o.delayMs ?? [0, 0];
  if (!(delayMs[0] >= 0 && delayMs[1] >= delayMs[0])) throw new RangeError(`delayMs must be [min, max] with 0 <= min <= max, got ${JSON.stringify(delayMs)}`);
  const reorderDepth = o.reorderDepth ?? 2;
  const holdMaxMs = o.holdMaxMs ?? 100;
  const maxHeld = o.maxHeld ?? 256;
  const maxPending = o.maxPending ?? 4096;
  const maxClients = o.maxClients ?? 1024;
  const idleMs = o.idleMs ?? 60_000;
  const impaired = new Set<Direction>(o.directions ?? ['up', 'down']);
  const untouched = { dup: 0, reorder: 0, reorderDepth: 1, delayMs: [0, 0] as [number, number], loss: 0 };
  const knobs = { dup, reorder, reorderDepth, delayMs, loss };
  const family = o.target.ip.includes(':') ? 'udp6' : 'udp4';
  const targetIp = normaliseIp(o.target.ip);
  const upstreamBind = o.upstreamBind ?? (family === 'udp6' ? '::' : '0.0.0.0');

  const stats = {
    clientsOpened: 0, clientsExpired: 0, clientsEvicted: 0,
    received: emptyDirs(), sent: emptyDirs(), dropped: emptyDirs(), duplicated: emptyDirs(), reordered: emptyDirs(), delayed: emptyDirs(),
    heldOverflow: 0, pendingOverflow: 0, sendErrors: 0,
  };
  // Insertion order is activity order (a flow is moved to the end when it is used): the first
  // entry is the least recently active, the one evicted when the table is full.
  const flows = new Map<string, Flow>();
  const pending = new Set<NodeJS.Timeout>();
  /** Every held datagram, oldest first (bounded by maxHeld). */
  const allHeld = new Set<Held>();
  let flowIndex = 0;
  let closed = false;

  const listener = dgram.createSocket({ type: o.listen.ip.includes(':') ? 'udp6' : 'udp4' });
  const afterSend = (err: Error | null): void => {
    if (err) stats.sendErrors++;
  };

  const transmit = (flow: Flow, dir: Direction, bytes: Buffer): void => {
    if (closed || flow.closed) return;
    stats.sent[dir]++;
    o.onSend?.(dir, bytes, flow.client);
    try {
      if (dir === 'up') flow.upstream.send(bytes, o.target.port, o.target.ip, afterSend);
      else listener.send(bytes, flow.client.port, flow.client.ip, afterSend);
    } catch {
      stats.sendErrors++;
    }
  };

  /** Send each copy after its delay. */
  const emit = (flow: Flow, dir: Direction, bytes: Buffer, copies: number[]): void => {
    for (const ms of copies) {
      if (ms <= 0 || pending.size >= maxPending) {
        if (ms > 0) stats.pendingOverflow++;
        transmit(flow, dir, bytes);
        continue;
      }
      stats.delayed[dir]++;
      const timer = setTimeout(() => {
        pending.delete(timer);
        transmit(flow, dir, bytes);
      }, ms);
      pending.add(timer);
    }
  };

  const release = (h: Held): void => {
    clearTimeout(h.timer);
    const list = h.flow.held[h.dir];
    const i = list.indexOf(h);
    if (i >= 0) list.splice(i, 1);
    allHeld.delete(h);
    emit(h.flow, h.dir, h.bytes, h.copies);
  };

  const handle = (flow: Flow, dir: Direction, bytes: Buffer): void => {
    stats.received[dir]++;
    o.onReceive?.(dir, bytes, flow.client);
    const d = flow.decide[dir].next();
    // This datagram counts as "a later one" for those held before it, whatever happens to it.
    const before = [...flow.held[dir]];
    if (d.drop) stats.dropped[dir]++;
    else {
      if (d.copies.length > 1) stats.duplicated[dir]++;
      if (d.holdFor > 0) {
        if (allHeld.size >= maxHeld) {
          // Full: the datagram held longest goes out now (insertion order: the first one).
          const oldest = allHeld.values().next().value;
          if (oldest) {
            stats.heldOverflow++;
            release(oldest);
          }
        }
        stats.reordered[dir]++;
        const h: Held = { bytes, copies: d.copies, remaining: d.holdFor, flow, dir, timer: setTimeout(() => release(h), holdMaxMs) };
        flow.held[dir].push(h);
        allHeld.add(h);
      } else emit(flow, dir, bytes, d.copies);
    }
    for (const h of before) if (--h.remaining <= 0) release(h);
  };

  const closeFlow = (flow: Flow): void => {
    if (flow.closed) return;
    flow.closed = true;
    for (const d of ['up', 'down'] as const) {
      for (const h of flow.held[d]) {
        clearTimeout(h.timer);
        allHeld.delete(h);
      }
      flow.held[d] = [];
    }
    flows.delete(flow.key);
    try {
      flow.upstream.close();
    } catch {
      /* already closed */
    }
  };

  /** Note activity: the flow moves to the end of the activity order. */
  const touch = (flow: Flow): void => {
    flow.lastActive = Date.now();
    flows.delete(flow.key);
    flows.set(flow.key, flow);
  };

  const flowOf = (client: Address): Flow => {
    const key = formatAddress(client);
    const existing = flows.get(key);
    if (existing) {
      touch(existing);
      return existing;
    }
    if (flows.size >= maxClients) {
      const lru = flows.values().next().value as Flow;
      stats.clientsEvicted++;
      closeFlow(lru);
    }
    const index = flowIndex++;
    const upstream = dgram.createSocket({ type: family });
    const flow: Flow = {
      key, client, upstream, lastActive: Date.now(), closed: false,
      decide: {
        up: new Decider(flowSeed(o.seed, index, 'up'), impaired.has('up') ? knobs : untouched),
        down: new Decider(flowSeed(o.seed, index, 'down'), impaired.has('down') ? knobs : untouched),
      },
      held: { up: [], down: [] },
    };
    // Datagrams sent before bind completes are queued by node:dgram (an implicit bind would pick
    // the same wildcard address); binding explicitly lets upstreamBind choose the source.
    upstream.bind(0, upstreamBind);
    upstream.on('message', (msg, rinfo) => {
      // Only the target's answers go back: the upstream port is not an open relay.
      if (flow.closed || rinfo.port !== o.target.port || normaliseIp(rinfo.address) !== targetIp) return;
      touch(flow);
      handle(flow, 'down', msg);
    });
    upstream.on('error', () => {
      stats.sendErrors++;
    });
    flows.set(key, flow);
    stats.clientsOpened++;
    return flow;
  };

  listener.on('message', (msg, rinfo) => {
    if (closed) return;
    handle(flowOf({ ip: rinfo.address, port: rinfo.port }), 'up', msg);
  });
  listener.on('error', () => {
    stats.sendErrors++;
  });
  await new Promise<void>((resolve, reject) => {
    listener.once('error', reject);
    listener.bind(o.listen.port, o.listen.ip, () => {
      listener.off('error', reject);
      resolve();
    });
  });
  const sweeper = setInterval(() => {
    const cutoff = Date.now() - idleMs;
    for (const f of [...flows.values()]) {
      if (f.lastActive >= cutoff) break; // activity order: the rest are newer
      stats.clientsExpired++;
      closeFlow(f);
    }
  }, Math.max(10, Math.min(idleMs / 4, 10_000)));
  sweeper.unref();

  const port = listener.address().port;
  return {
    port,
    address: { ip: o.listen.ip, port },
    stats: () => ({
      ...stats, received: { ...stats.received }, sent: { ...stats.sent }, dropped: { ...stats.dropped }, duplicated: { ...stats.duplicated },
      reordered: { ...stats.reordered }, delayed: { ...stats.delayed }, clients: flows.size, held: allHeld.size, pending: pending.size,
    }),
    async close() {
      if (closed) return;
      closed = true;
      clearInterval(sweeper);
      for (const t of pending) clearTimeout(t);
      pending.clear();
      for (const f of [...flows.values()]) closeFlow(f);
      await new Promise<void>((resolve) => listener.close(() => resolve()));
    },
  };
}

// ---- command line ------------------------------------------------------------------------

const USAGE = `usage: npx tsx tools/impair.ts --listen HOST:PORT --target HOST:PORT [--seed N] [--dup P] [--reorder P]
         [--reorder-depth N] [--hold-max-ms MS] [--delay-ms MIN-MAX] [--loss P] [--direction both|up|down]
         [--max-clients N] [--idle-s S]
P is a probability in [0, 1]. Prints {"msg":"listening","port":N} once bound; stats on SIGUSR1 and at exit.`;

/** Parse the command line; an error message instead of options when it is wrong. */
export function parseCli(argv: string[]): { ok: true; options: ImpairOptions } | { ok: false; error: string } {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        listen: { type: 'string' }, target: { type: 'string' }, seed: { type: 'string' }, dup: { type: 'string' },
        reorder: { type: 'string' }, 'reorder-depth': { type: 'string' }, 'hold-max-ms': { type: 'string' },
        'delay-ms': { type: 'string' }, loss: { type: 'string' }, direction: { type: 'string' },
        'max-clients': { type: 'string' }, 'idle-s': { type: 'string' }, help: { type: 'boolean' },
      },
      strict: true,
    }));
  } catch (err) {
    return { ok: false, error: (err as Error).message };
  }
  if (values['help']) return { ok: false, error: '' };
  const addr = (k: string): Address | string => {
    const v = values[k];
    if (typeof v !== 'string') return `--${k} is required`;
    return parseAddress(v) ?? `--${k}: expected HOST:PORT with a literal IP, got ${JSON.stringify(v)}`;
  };
  const listen = addr('listen');
  if (typeof listen === 'string') return { ok: false, error: listen };
  const target = addr('target');
  if (typeof target === 'string') return { ok: false, error: target };
  const num = (k: string, dflt: number, min: number, max: number): number | string => {
    const v = values[k];
    if (v === undefined) return dflt;
    const n = Number(v);
    return typeof v === 'string' && v.trim() !== '' && Number.isFinite(n) && n >= min && n <= max ? n : `--${k}: expected a number in [${min}, ${max}], got ${JSON.stringify(v)}`;
  };
  const o: ImpairOptions = { listen, target, seed: 0 };
  const fields: [keyof ImpairOptions & string, string, number, number, number][] = [
    ['seed', 'seed', 0, 0, 0xffffffff], ['dup', 'dup', 0, 0, 1], ['reorder', 'reorder', 0, 0, 1], ['reorderDepth', 'reorder-depth', 2, 1, 64],
    ['holdMaxMs', 'hold-max-ms', 100, 0, 60_000], ['loss', 'loss', 0, 0, 1], ['maxClients', 'max-clients', 1024, 1, 1_000_000],
  ];
  for (const [key, flag, dflt, min, max] of fields) {
    const v = num(flag, dflt, min, max);
    if (typeof v === 'string') return { ok: false, error: v };
    (o as unknown as Record<string, number>)[key] = v;
  }
  const idle = num('idle-s', 60, 0.01, 86_400);
  if (typeof idle === 'string') return { ok: false, error: idle };
  o.idleMs = idle * 1000;
  const delay = values['delay-ms'];
  if (delay !== undefined) {
    const m = /^(\d+(?:\.\d+)?)(?:-(\d+(?:\.\d+)?))?$/.exec(String(delay));
    if (!m || (m[2] !== undefined && Number(m[2]) < Number(m[1]))) return { ok: false, error: `--delay-ms: expected MS or MIN-MAX, got ${JSON.stringify(delay)}` };
    o.delayMs = [Number(m[1]), Number(m[2] ?? m[1])];
  }
  const dir = values['direction'] ?? 'both';
  if (dir !== 'both' && dir !== 'up' && dir !== 'down') return { ok: false, error: `--direction: both, up or down, got ${JSON.stringify(dir)}` };
  o.directions = dir === 'both' ? ['up', 'down'] : [dir];
  return { ok: true, options: o };
}

async function cli(): Promise<void> {
  const parsed = parseCli(process.argv.slice(2));
  if (!parsed.ok) {
    process.stderr.write(`${parsed.error ? `impair: ${parsed.error}\n` : ''}${USAGE}\n`);
    process.exit(parsed.error ? 2 : 0);
  }
  const o = parsed.options;
  const proxy = await createImpairProxy(o);
  const line = (msg: string, fields: Record<string, unknown>): void => {
    process.stdout.write(`${JSON.stringify({ msg, ...fields })}\n`);
  };
  line('listening', {
    port: proxy.port, listen: formatAddress(proxy.address), target: formatAddress(o.target), seed: o.seed,
    dup: o.dup, reorder: o.reorder, delayMs: o.delayMs ?? [0, 0], loss: o.loss, directions: o.directions,
  });
  process.on('SIGUSR1', () => line('stats', { ...proxy.stats() }));
  const stop = (signal: string): void => {
    void proxy.close().then(() => {
      line('stopped', { signal, ...proxy.stats() });
      process.exit(0);
    });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

if (isMainModule(import.meta.url)) void cli();
