// --workers N, the one mechanism of devloc-authd and devloc-locatord for using every core: the
// first process (the primary) forks N workers (node:cluster, same argv) that each run the daemon
// on the same UDP port (node:cluster shares the bound socket: the kernel hands each datagram to
// one of them). The primary serves nothing itself; it restarts a worker that dies, passes SIGHUP
// on, stops them all on SIGTERM, and answers the workers' messages: the state that must be one
// for all of them (authd's per-device budget and replay cache) lives there.
//
// The messages between the primary and its workers are the one union `WorkerMessage` below,
// carried by one `WorkerChannel` per process pair (node's IPC pipe: JSON, ordered): every kind
// is listed here, checked on receipt by one table, and delivered to the listeners of its kind.
// A sender with many items per wake-up (authd's gate questions, locatord's validated addresses)
// queues them with `batch()`: the items of one event-loop turn leave in one message, since a
// message per item cost each side a pipe write, a wake-up of the other process and a JSON parse
// (bench/authd.ts; for locatord's first REGISTERs the sender's pipe write alone was 4-6% of a
// worker's CPU in a profile under the load of bench --only register).
import cluster from 'node:cluster';
import type { Running } from './daemon.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';
import { mergeExpositions } from './metrics.js';
import type { ErrorCode } from '../wire/errors.js';

/**
 * The index (0 .. N-1) of this --workers process (startWorkers forks it with
 * DEVLOC_WORKER_INDEX), stable across a restart of that worker; -1 outside a cluster.
 */
export function workerIndex(): number {
  if (!cluster.isWorker) return -1;
  const i = Number(process.env['DEVLOC_WORKER_INDEX']);
  return Number.isInteger(i) && i >= 0 ? i : 0;
}

/** One question to authd's per-device gate (src/authd/gate.ts): [id, deviceId, nonce hex, timeMs, rid hex, from] (arrays: smaller JSON than objects). */
export type GateQuestion = [id: number, deviceId: string, nonce: string, timeMs: number, rid: string, from: string];

/** An address validated for a session at one worker (src/net/routability.ts `acceptKey`): [session ID hex, address key]. */
export type ValidatedAddress = [sid: string, addr: string];

/** The gate's answer to one question (src/authd/gate.ts `admit`). */
export type GateVerdict =
  | { ok: true; conflict?: { other: string; log: boolean } }
  | { ok: false; code: ErrorCode; message: string; retryAfterMs?: number; logReason?: string };

/** Every message between the primary of --workers and a worker. */
export type WorkerMessage =
  /** worker -> primary (authd): the gate questions of one event-loop turn. */
  | { k: 'gate-ask'; b: GateQuestion[] }
  /** primary -> worker (authd): [id, verdict] for each question of a batch. */
  | { k: 'gate-answer'; a: [number, GateVerdict][] }
  /** worker -> primary -> the other workers (authd): a REVOKE_ACK, for the worker that pushed the REVOKE (request ID, hex). */
  | { k: 'revoke-ack'; rid: string }
  /**
   * worker -> primary -> the other workers (locatord): the addresses validated for sessions in one
   * event-loop turn (routability.ts acceptKey), forwarded as they came.
   */
  | { k: 'addr-validated'; b: ValidatedAddress[] }
  /** primary -> worker (every daemon with --metrics-listen): a scrape of /metrics. */
  | { k: 'scrape'; id: number }
  /** worker -> primary: that worker's series for scrape `id`. */
  | { k: 'metrics'; id: number; text: string; worker: number };

export type WorkerMessageKind = WorkerMessage['k'];
export type WorkerMessageOf<K extends WorkerMessageKind> = Extract<WorkerMessage, { k: K }>;
/** The kinds whose message is a batch `b` of items (sent with `batch()`). */
type BatchKind = { [K in WorkerMessageKind]: WorkerMessageOf<K> extends { b: unknown[] } ? K : never }[WorkerMessageKind];
type BatchItem<K extends BatchKind> = WorkerMessageOf<K> extends { b: (infer I)[] } ? I : never;

const str = (x: unknown): x is string => typeof x === 'string';
const int = (x: unknown): x is number => Number.isSafeInteger(x);
const arr = (x: unknown): x is unknown[] => Array.isArray(x);
/** What a message of each kind must hold; anything else on the pipe is not ours and is ignored. */
const SHAPES: { [K in WorkerMessageKind]: (m: Record<string, unknown>) => boolean } = {
  'gate-ask': (m) => arr(m['b']),
  'gate-answer': (m) => arr(m['a']),
  'revoke-ack': (m) => str(m['rid']),
  'addr-validated': (m) => arr(m['b']) && m['b'].every((x) => arr(x) && x.length === 2 && str(x[0]) && str(x[1])),
  scrape: (m) => int(m['id']),
  metrics: (m) => int(m['id']) && str(m['text']) && int(m['worker']),
};

/** A message of ours, or undefined (node's own cluster messages, anything else). */
export function decodeWorkerMessage(m: unknown): WorkerMessage | undefined {
  if (typeof m !== 'object' || m === null) return undefined;
  const k = (m as { k?: unknown }).k;
  if (!str(k) || !Object.hasOwn(SHAPES, k)) return undefined;
  return SHAPES[k as WorkerMessageKind](m as Record<string, unknown>) ? (m as WorkerMessage) : undefined;
}

/** The IPC end a channel uses: `process` in a worker, a cluster `Worker` in the primary (or a fake in tests). */
export interface WorkerPort {
  on(event: 'message', listener: (m: unknown) => void): unknown;
  send?(m: never): boolean;
  /** A cluster Worker's; a process is connected while `connected` is not false. */
  isConnected?(): boolean;
  connected?: boolean;
}

/** One end of the pipe between the primary and one worker. */
export class WorkerChannel {
  private readonly listeners = new Map<WorkerMessageKind, Set<(m: WorkerMessage) => void>>();
  private readonly queued = new Map<BatchKind, { items: unknown[]; unsent: (items: never[]) => void }>();

  constructor(readonly port: WorkerPort) {
    port.on('message', (raw) => {
      const m = decodeWorkerMessage(raw);
      if (!m) return;
      for (const l of this.listeners.get(m.k) ?? []) l(m);
    });
  }

  /** Call `listener` with every message of kind `k`; returns the function that stops it. */
  on<K extends WorkerMessageKind>(k: K, listener: (m: WorkerMessageOf<K>) => void): () => void {
    let set = this.listeners.get(k);
    if (!set) this.listeners.set(k, (set = new Set()));
    const l = listener as (m: WorkerMessage) => void;
    set.add(l);
    return () => set.delete(l);
  }

  get connected(): boolean {
    const p = this.port;
    return p.send !== undefined && (p.isConnected ? p.isConnected() : p.connected !== false);
  }

  /** Send one message; false when the other end is gone (a closed channel, a worker that exited). */
  send(m: WorkerMessage): boolean {
    if (!this.connected) return false;
    try {
      // node's send() returning false only means queued behind others; a closed channel throws.
      this.port.send!(m as never);
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Queue `item` for a message of kind `k`: what is queued in one turn of the event loop leaves
   * in one message, after the poll phase (every datagram read at this wake-up has been handled by
   * then). `unsent` gets the items of a batch that could not be sent.
   */
  batch<K extends BatchKind>(k: K, item: BatchItem<K>, unsent: (items: BatchItem<K>[]) => void): void {
    let q = this.queued.get(k);
    if (!q) {
      const batch = { items: [] as unknown[], unsent: unsent as (items: never[]) => void };
      this.queued.set(k, (q = batch));
      setImmediate(() => {
        this.queued.delete(k);
        if (!this.send({ k, b: batch.items } as WorkerMessage)) batch.unsent(batch.items as never[]);
      });
    }
    q.items.push(item);
  }
}

const channels = new WeakMap<WorkerPort, WorkerChannel>();
/** The one channel over `port` (created at first use, so that every listener shares one dispatch). */
export function channelOf(port: WorkerPort): WorkerChannel {
  let ch = channels.get(port);
  if (!ch) channels.set(port, (ch = new WorkerChannel(port)));
  return ch;
}

/** In a worker: the channel to the primary. */
export const toPrimary = (): WorkerChannel => channelOf(process as WorkerPort);

/** In the primary: the channels of the live workers. */
export function workerChannels(): WorkerChannel[] {
  return Object.values(cluster.workers ?? {}).flatMap((w) => (w && w.isConnected() ? [channelOf(w)] : []));
}

/** In the primary: send `m` to every live worker but the one of `except`. */
export function broadcast(m: WorkerMessage, except?: WorkerChannel): void {
  for (const ch of workerChannels()) if (ch !== except) ch.send(m);
}

/** In a worker: answer the primary's scrapes with this process's series. */
export function answerMetricsScrapes(metrics: Metrics): void {
  const ch = toPrimary();
  ch.on('scrape', (m) => ch.send({ k: 'metrics', id: m.id, text: metrics.render(), worker: workerIndex() }));
}

let scrapeSeq = 0;
/** Workers answering within this time are in the scrape; one that is busy or restarting is left out. */
const WORKER_SCRAPE_TIMEOUT_MS = 2000;

/** /metrics of this process, and of its workers (label worker="<index>", as in their log lines) when it has some. */
export async function scrapeWorkers(metrics: Metrics): Promise<string> {
  const workers = workerChannels();
  if (workers.length === 0) return metrics.render();
  const id = ++scrapeSeq;
  const answers = await Promise.all(workers.map((ch) => new Promise<{ labels: { worker: string }; text: string } | undefined>((resolve) => {
    const done = (m: WorkerMessageOf<'metrics'> | undefined): void => {
      clearTimeout(timer);
      off();
      resolve(m === undefined ? undefined : { labels: { worker: String(m.worker) }, text: m.text });
    };
    const off = ch.on('metrics', (m) => {
      if (m.id === id) done(m);
    });
    const timer = setTimeout(() => done(undefined), WORKER_SCRAPE_TIMEOUT_MS);
    if (!ch.send({ k: 'scrape', id })) done(undefined);
  })));
  const parts = answers.filter((x) => x !== undefined);
  return mergeExpositions([{ labels: {}, text: metrics.render() }, ...parts]);
}

/** What the primary does with its workers' messages: listeners by kind, given the sender's channel. */
export type PrimaryListeners = { [K in WorkerMessageKind]?: (m: WorkerMessageOf<K>, from: WorkerChannel) => void };

export interface WorkersOptions {
  /** Extra environment of every worker (e.g. a secret they must share). */
  env?: Record<string, string>;
  /** The workers' messages, by kind. */
  listeners?: PrimaryListeners;
  /** Called after SIGHUP was passed on (the primary's own part of a reload). */
  reload?: Running['reload'];
}

/**
 * How long to wait before restarting a worker that exited after `livedMs`: 1 s after a worker
 * that ran a while, doubling (to 60 s) while each replacement dies within 10 s, so a worker that
 * cannot start does not burn a core in a restart loop.
 */
export function workerRestartDelayMs(livedMs: number, previousDelayMs: number): number {
  if (livedMs >= 10_000 || previousDelayMs === 0) return 1000;
  return Math.min(previousDelayMs * 2, 60_000);
}

/** Fork `n` workers (same argv); restart one that dies unexpectedly; stop them all on stop. */
export function startWorkers(n: number, logger: Logger, o: WorkersOptions = {}): Promise<Running> {
  let stopping = false;
  const fork = (index: number, previousDelayMs: number): void => {
    const w = cluster.fork({ ...o.env, DEVLOC_WORKER_INDEX: String(index) });
    const startedAt = Date.now();
    const ch = channelOf(w);
    for (const [k, listener] of Object.entries(o.listeners ?? {})) {
      ch.on(k as WorkerMessageKind, (m) => (listener as (m: WorkerMessage, from: WorkerChannel) => void)(m, ch));
    }
    w.on('exit', (code, signal) => {
      if (stopping) return;
      const delayMs = workerRestartDelayMs(Date.now() - startedAt, previousDelayMs);
      logger.error('worker exited, starting another', { pid: w.process.pid, code, signal, inMs: delayMs });
      setTimeout(() => fork(index, delayMs), delayMs).unref();
    });
  };
  for (let i = 0; i < n; i++) fork(i, 0);
  logger.info('workers started', { workers: n });
  return Promise.resolve({
    async stop() {
      stopping = true;
      await Promise.all(Object.values(cluster.workers ?? {}).map((w) => new Promise<void>((resolve) => {
        if (!w || w.isDead()) return resolve();
        w.once('exit', () => resolve());
        w.process.kill('SIGTERM');
      })));
    },
    async reload(config) {
      await o.reload?.(config);
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGHUP');
    },
  });
}
