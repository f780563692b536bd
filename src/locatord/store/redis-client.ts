// locatord's Redis client: ioredis (standalone or Cluster), configured to fail fast, as
// devloc-locatord(8) documents, rather than to wait for Redis:
//   - no offline queue: a command issued while the connection (or the slot's master) is down
//     fails at once with RedisUnavailable, which the handlers answer with TRY_LATER;
//   - bounded: at most `maxPending` commands sent and not yet settled by ioredis (a batched
//     script counts each call it carries), beyond which a command fails at once ("queue full"),
//     so a slow or absent Redis costs no memory growth;
//   - the calls of one script in one event-loop turn (the presence compare-and-sets of a turn's
//     REFRESHes) go as one script (BatchedScript); on a Cluster each alone;
//   - every call settles within `timeoutMs` (our own deadline, also over ioredis's Cluster
//     retries); a connection that sent commands and got nothing back for
//     `hangMs` is closed and reconnected (ioredis socketTimeout: a Redis that stopped answering
//     without closing the connection, e.g. SIGSTOP or a dead host); TCP keepalive for idle ones;
//   - at most one resend of a command whose connection was lost (maxRetriesPerRequest 1);
//   - Cluster: the slot map is re-read on MOVED, CLUSTERDOWN, TRYAGAIN and lost connections
//     (ioredis), and every second besides (slotsRefreshInterval): after a master dies, its slots
//     are served again as soon as the cluster has promoted a replica;
//   - pub/sub on its own connection; in Cluster, sharded (SSUBSCRIBE/SPUBLISH, Redis 7): a
//     message goes only to the shard of its channel, not over the whole cluster bus.
// Why ioredis rather than node-redis, measured on our workload: README, "Scaling out".
//
// The client only ever rejects with RedisUnavailable (retry later) or RedisReplyError (Redis
// answered with an error).
import { createHash } from 'node:crypto';
import type { Socket } from 'node:net';
import type { ClusterOptions, RedisOptions } from 'ioredis';
import { Cluster, Command, Redis } from 'ioredis';
import { RedisReplyError, RedisUnavailable } from './redis-url.js';
import type { RedisNode } from './redis-url.js';

export { parseRedisUrl, RedisReplyError, RedisUnavailable } from './redis-url.js';
export type { RedisNode, RedisUrl } from './redis-url.js';

/** A Redis reply as ioredis gives it with callBuffer (RESP2). */
export type RedisReply = Buffer | number | null | RedisReply[];
export type Arg = string | Buffer | number;

/**
 * A command whose request is built in one buffer, each argument measured once. ioredis's own
 * (Command toWritable), as soon as one argument is a Buffer (a presence record, a window's
 * fingerprint: every command of a REFRESH), gathers two or three pieces per argument, measures
 * each twice (Buffer.byteLength) and copies them in; it was ~8% of locatord's CPU per REFRESH on
 * Redis (README, "REFRESH per locatord CPU-second on Redis vs embedded"). The same bytes.
 */
export class OneBufferCommand extends Command {
  override toWritable(): Buffer {
    // Numbers were made strings by the constructor (ioredis stringifyArguments).
    const args = this.args as (string | Buffer)[];
    let bound = 32 + this.name.length;
    for (const a of args) bound += 16 + (typeof a === 'string' ? 3 * a.length : a.length);
    const b = Buffer.allocUnsafe(bound);
    b[0] = 0x2a; // *
    let o = putLine(b, 1, args.length + 1);
    o = putString(b, o, this.name);
    for (const a of args) o = typeof a === 'string' ? putString(b, o, a) : putBulk(b, o, a);
    return b.subarray(0, o);
  }
}

/** `n` in decimal and CRLF at `o`; the offset after. */
function putLine(b: Buffer, o: number, n: number): number {
  let end = o + 1;
  for (let x = n; x >= 10; x = Math.floor(x / 10)) end++;
  for (let k = end - 1; k >= o; k--) {
    b[k] = 0x30 + (n % 10);
    n = Math.floor(n / 10);
  }
  b[end] = 13;
  b[end + 1] = 10;
  return end + 2;
}

/** A bulk string of the bytes `a` at `o`. */
function putBulk(b: Buffer, o: number, a: Uint8Array): number {
  b[o++] = 0x24; // $
  o = putLine(b, o, a.length);
  b.set(a, o);
  o += a.length;
  b[o++] = 13;
  b[o++] = 10;
  return o;
}

/** A bulk string of `s` (UTF-8) at `o`: ASCII (every name, key and number here) copied as is. */
function putString(b: Buffer, o: number, s: string): number {
  let ascii = true;
  for (let k = 0; k < s.length; k++) if (s.charCodeAt(k) > 0x7f) { ascii = false; break; }
  if (!ascii) return putBulk(b, o, Buffer.from(s, 'utf8'));
  b[o++] = 0x24;
  o = putLine(b, o, s.length);
  for (let k = 0; k < s.length; k++) b[o++] = s.charCodeAt(k);
  b[o++] = 13;
  b[o++] = 10;
  return o;
}

// CRC16-CCITT (XMODEM), as Redis Cluster uses for key slots (tests, and the relay's channel).
const CRC_TABLE = (() => {
  const t = new Uint16Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i << 8;
    for (let j = 0; j < 8; j++) c = c & 0x8000 ? ((c << 1) ^ 0x1021) & 0xffff : (c << 1) & 0xffff;
    t[i] = c;
  }
  return t;
})();

/** Hash slot of a key: only the part inside the first non-empty {...} counts, when present. */
export function keySlot(key: string | Buffer): number {
  let b = Buffer.isBuffer(key) ? key : Buffer.from(key);
  const open = b.indexOf(0x7b);
  if (open >= 0) {
    const close = b.indexOf(0x7d, open + 1);
    if (close > open + 1) b = b.subarray(open + 1, close);
  }
  let crc = 0;
  for (const x of b) crc = ((crc << 8) & 0xffff) ^ CRC_TABLE[((crc >> 8) ^ x) & 0xff]!;
  return crc % 16384;
}

/** A Lua script sent by EVALSHA, with EVAL when the node does not have it (NOSCRIPT). */
export class LuaScript {
  readonly sha: string;
  constructor(readonly source: string) {
    this.sha = createHash('sha1').update(source).digest('hex');
  }
}

/** Calls of one batched script in one event-loop turn sent as one, at most. */
export const BATCH_MAX_CALLS = 128;

/**
 * A Lua script whose calls of one event-loop turn go to Redis as one script (RedisClient
 * evalBatched): `one` is the script as written (KEYS and ARGV of one call), `many` runs its body
 * once per call, in order, each in a pcall, and answers an array with one reply per call (an
 * error reply for a call that raised: the others' writes stand, as they would have as separate
 * scripts). Every call names `keysPerCall` keys and `argsPerCall` arguments, and answers
 * something (a Lua array cannot hold nil: a call that answers nil is an error, alone or not,
 * so that its answer does not depend on the load). Why: each command
 * costs the client ~10 us of CPU (README, "Scaling out"), the same for a script that does two
 * keys' work or a hundred.
 */
export class BatchedScript {
  readonly one: LuaScript;
  readonly many: LuaScript;
  constructor(source: string, readonly keysPerCall: number, readonly argsPerCall: number) {
    // At least one key: a call's first routes it (Cluster), and the script counts calls by keys.
    if (!Number.isInteger(keysPerCall) || keysPerCall < 1 || !Number.isInteger(argsPerCall) || argsPerCall < 0) throw new RangeError('a batched script takes at least one key per call, and a whole number of arguments');
    this.one = new LuaScript(source);
    // ARGV of `many`: the calls' arguments one after the other (KEYS likewise). The body's
    // KEYS and ARGV are the parameters of `one`, so its own functions see a call's, not the batch's.
    this.many = new LuaScript(`local function one(KEYS, ARGV)
${source}
end
local out = {}
local n = #KEYS / ${keysPerCall}
for i = 0, n - 1 do
  local k, a = {}, {}
  for j = 1, ${keysPerCall} do k[j] = KEYS[i * ${keysPerCall} + j] end
  for j = 1, ${argsPerCall} do a[j] = ARGV[i * ${argsPerCall} + j] end
  local ok, r = pcall(one, k, a)
  if not ok then
    if type(r) == 'table' and r.err then out[i + 1] = r else out[i + 1] = redis.error_reply(tostring(r)) end
  elseif r == nil or r == false then out[i + 1] = redis.error_reply('ERR batched call answered nil')
  else out[i + 1] = r end
end
return out`);
  }
}

/** A batched call that answered nil (BatchedScript: alone as in a batch). */
const answeredNil = (): RedisReplyError => new RedisReplyError('ERR batched call answered nil');

/** One call waiting for its turn's batch (RedisClient evalBatched). */
interface BatchedCall {
  keys: readonly string[];
  args: readonly Arg[];
  resolve: (v: RedisReply) => void;
  reject: (e: Error) => void;
}

export interface RedisClientOptions {
  /** One node (standalone), or Cluster seed nodes. */
  nodes: RedisNode[];
  cluster?: boolean;
  db?: number;
  username?: string;
  password?: string;
  /** TLS (rediss://) to every node. */
  tls?: boolean;
  /** PEM CA certificate(s) trusted for TLS, instead of the system's. */
  tlsCa?: string | Buffer;
  /** A command without a reply after this long fails (RedisUnavailable), ms. */
  timeoutMs?: number;
  /** Most commands sent to Redis and not settled, all nodes together (a batched script counts its calls); beyond, commands fail at once. */
  maxPending?: number;
  /** A connection with commands in flight and nothing received for this long is closed, ms (default 2 x timeoutMs, at least 1000). */
  hangMs?: number;
  /** Cluster: re-read the slot map this often besides on errors, ms (default 1000; 0: never). */
  slotsRefreshMs?: number;
  /** Told when Redis becomes unreachable or reachable again (logging, metrics). */
  onState?: (state: 'up' | 'down', detail: string) => void;
}

/** Errors that mean "ask again soon", not "Redis refused this command". */
const TRANSIENT_REPLY = /^(CLUSTERDOWN|TRYAGAIN|LOADING|MASTERDOWN|READONLY|BUSY|MOVED|ASK) /;

/** What every connection, standalone or Cluster node, is given. */
type NodeOptions = Omit<RedisOptions, 'port' | 'host' | 'path' | 'sentinels' | 'retryStrategy' | 'enableOfflineQueue' | 'readOnly' | 'himportFieldsets' | 'maintNotifications'> & { replyMapping: 'legacy' };

interface Deadline {
  reject: (e: Error) => void;
  at: number;
}

/** Standalone or Cluster client over ioredis; `call(args)` routes by the command's key in Cluster mode. */
export class RedisClient {
  readonly cluster: boolean;
  readonly timeoutMs: number;
  readonly maxPending: number;
  private readonly redis: Redis | Cluster;
  private readonly deadlines = new Set<Deadline>();
  private readonly sweep: NodeJS.Timeout;
  private sent = 0;
  private up = false;
  private everUp = false;
  private closed = false;
  private readonly firstReady: Promise<void>;
  /** Calls failed (unavailable, timed out, refused for a full queue). */
  errors = 0;
  /** The connections corked for this event-loop turn (see batchTurn), uncorked by setImmediate. */
  private corked: Socket[] | undefined;
  /** Calls of batched scripts this turn, by script; sent before the uncork. */
  private batches = new Map<string, { script: BatchedScript; calls: BatchedCall[] }>();
  /** Scripts sent for batched calls, and the calls they carried (tests). */
  batchesSent = 0;
  batchedCalls = 0;
  private readonly uncork = (): void => {
    if (this.batches.size > 0) this.sendBatches();
    const streams = this.corked;
    this.corked = undefined;
    for (const s of streams ?? []) s.uncork();
  };

  constructor(private readonly o: RedisClientOptions) {
    this.cluster = o.cluster ?? o.nodes.length > 1;
    this.timeoutMs = o.timeoutMs ?? 1000;
    this.maxPending = o.maxPending ?? 10_000;
    this.redis = this.connect(false);
    this.firstReady = new Promise((resolve) => this.redis.once('ready', () => resolve()));
    this.redis.on('ready', () => {
      this.up = true;
      if (this.everUp) o.onState?.('up', this.describe());
      this.everUp = true;
    });
    this.redis.on('error', () => { /* 'close' / 'node error' say it; commands fail on their own */ });
    const down = (detail: string): void => {
      if (!this.up || this.closed) return;
      this.up = false;
      o.onState?.('down', detail);
    };
    this.redis.on('close', () => down(`${this.describe()}: connection closed`));
    // Cluster: one node lost (a master killed) is said too, at most every 5 s per node (every
    // command routed to a dead master until the promotion fails the same way).
    const saidAt = new Map<string, number>();
    this.redis.on('node error', (err: Error, node: string) => {
      const now = Date.now();
      if ((saidAt.get(node) ?? -Infinity) > now - 5000) return;
      saidAt.set(node, now);
      if (saidAt.size > 64) saidAt.delete(saidAt.keys().next().value!);
      o.onState?.('down', `${node}: ${err.message}`);
    });
    this.sweep = setInterval(() => this.expire(), Math.max(10, Math.floor(this.timeoutMs / 4)));
    this.sweep.unref();
  }

  private describe(): string {
    return this.o.nodes.map((n) => `${n.host}:${n.port}`).join(',');
  }

  /** ioredis options shared by the command and the subscriber connections. */
  private nodeOptions(): NodeOptions {
    const o = this.o;
    const hangMs = o.hangMs ?? Math.max(1000, 2 * this.timeoutMs);
    return {
      ...(o.username ? { username: o.username } : {}),
      ...(o.password !== undefined ? { password: o.password } : {}),
      ...(o.tls ? { tls: o.tlsCa ? { ca: o.tlsCa } : {} } : {}),
      // RESP2: plain arrays for our replies, pub/sub on its own connection (as we use it).
      protocol: 2,
      replyMapping: 'legacy',
      // No commandTimeout: it arms a timer per command (measured: half the client's CPU); our
      // deadline sweep (expire) bounds every call, socketTimeout closes a hung connection.
      socketTimeout: hangMs,
      connectTimeout: Math.max(1000, this.timeoutMs),
      keepAlive: 5000,
      noDelay: true,
      maxRetriesPerRequest: 1,
      // Commands are pipelined on the connection (no waiting for replies), each turn's in one
      // write (batchTurn). Not enableAutoPipelining: it costs more client CPU per request than
      // it saves (measured: tools/redis-clients.ts, README "Scaling out").
      enableAutoPipelining: false,
      disableClientInfo: true,
    };
  }

  private connect(subscriber: boolean): Redis | Cluster {
    const base = this.nodeOptions();
    const retry = (times: number): number => Math.min(2000, 50 * 2 ** Math.min(times, 6));
    if (this.cluster) {
      const co: ClusterOptions & { redisOptions: NodeOptions } = {
        enableOfflineQueue: subscriber,
        enableReadyCheck: true,
        scaleReads: 'master',
        maxRedirections: 8,
        retryDelayOnFailover: 100,
        retryDelayOnClusterDown: 100,
        retryDelayOnTryAgain: 100,
        slotsRefreshTimeout: Math.max(500, this.timeoutMs),
        ...(this.o.slotsRefreshMs !== 0 ? { slotsRefreshInterval: this.o.slotsRefreshMs ?? 1000 } : {}),
        clusterRetryStrategy: retry,
        enableAutoPipelining: false,
        ...(subscriber ? { shardedSubscribers: true, shardedSubscriberHealthCheckInterval: Math.max(1000, base.socketTimeout ?? 1000) } : {}),
        redisOptions: base,
      };
      return new Cluster(this.o.nodes, co);
    }
    const n = this.o.nodes[0]!;
    return new Redis({
      ...base, host: n.host, port: n.port, db: this.o.db ?? 0, maintNotifications: 'disabled',
      retryStrategy: retry,
      enableOfflineQueue: subscriber,
      // A subscriber keeps its subscription across reconnections.
      ...(subscriber ? { autoResubscribe: true, maxRetriesPerRequest: null } : {}),
    });
  }

  /** Commands sent and not yet settled by ioredis, all nodes (a batched script: each call it carries). */
  get pending(): number {
    return this.sent;
  }

  /** Resolves once connected (Cluster: slot map read); rejects after `ms`. */
  async ready(ms = 10_000): Promise<void> {
    if (this.everUp) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.firstReady,
      new Promise((_, reject) => { timer = setTimeout(() => reject(new RedisUnavailable(`redis ${this.describe()} not ready after ${ms} ms`, 500)), ms); }),
    ]).finally(() => clearTimeout(timer));
  }

  private unavailable(why: string, retryAfterMs = 500): RedisUnavailable {
    this.errors++;
    return new RedisUnavailable(`redis ${why}`, retryAfterMs);
  }

  /** The refusal of a command (or batched call) beyond maxPending. */
  private queueFull(): RedisUnavailable {
    return this.unavailable(`queue full (${this.maxPending} pending)`, 100);
  }

  private classify(err: unknown): Error {
    if (err instanceof RedisUnavailable || err instanceof RedisReplyError) return err;
    const e = err as Error;
    if (e?.name === 'ReplyError' && !TRANSIENT_REPLY.test(e.message)) return new RedisReplyError(e.message);
    return this.unavailable(`unavailable: ${e?.message ?? String(err)}`);
  }

  /** Fail calls past their deadline (ioredis may still be retrying them across a failover). */
  private expire(): void {
    const now = Date.now();
    for (const d of this.deadlines) {
      if (d.at > now) break; // one timeout for all: insertion order is deadline order
      this.deadlines.delete(d);
      d.reject(this.unavailable(`no reply within ${this.timeoutMs} ms`, this.timeoutMs));
    }
  }

  /**
   * Send one command (Cluster: routed by its key; every key of a command must be in one slot).
   * `_key` is the routing key, kept for callers: ioredis finds it in the command itself.
   * `calls`: the callers this command answers (a batched script's), each counted in `pending`.
   */
  call(args: readonly Arg[], _key?: string, calls = 1): Promise<RedisReply> {
    if (this.closed) return Promise.reject(this.unavailable('client closed'));
    if (this.sent + calls > this.maxPending) return Promise.reject(this.queueFull());
    // Before the first connection (Cluster: the first slot map), wait for it rather than fail
    // the daemon's first requests; afterwards, fail fast.
    if (!this.everUp) return this.ready(this.timeoutMs).then(() => this.call(args, _key, calls), (e: unknown) => Promise.reject(this.classify(e)));
    const [cmd, ...rest] = args;
    this.sent += calls;
    if (!this.corked) this.batchTurn();
    return new Promise<RedisReply>((resolve, reject) => {
      const d: Deadline = { reject, at: Date.now() + this.timeoutMs };
      this.deadlines.add(d);
      // Replies as Buffers (replyEncoding null), as ioredis's <name>Buffer methods ask.
      (this.redis.sendCommand(new OneBufferCommand(String(cmd).toLowerCase(), rest, { replyEncoding: null })) as Promise<RedisReply>).then(
        (v) => {
          this.sent -= calls;
          if (this.deadlines.delete(d)) resolve(v);
        },
        (e: unknown) => {
          this.sent -= calls;
          if (this.deadlines.delete(d)) reject(this.classify(e));
        },
      );
    });
  }

  /**
   * Every command of this event-loop turn in one write per connection: the connections are
   * corked at the turn's first command and uncorked once the turn's callbacks (every datagram
   * read in it, every reply parsed in it, and the commands they issued) have run. ioredis writes
   * each command to the socket as it comes; corked, Node gathers them into one writev. Cheaper
   * than ioredis's enableAutoPipelining (a Pipeline per batch, flushed at the next tick: one
   * datagram's commands, not the turn's; measured in README "Scaling out"), and the same on a
   * Cluster (every master's connection corked: a few).
   */
  private batchTurn(): void {
    const r = this.redis;
    const conns = r instanceof Cluster ? r.nodes('master') : [r];
    const streams: Socket[] = [];
    for (const c of conns) {
      // ioredis's connection socket (declared, marked @ignore); unset until the first connect.
      const s: Socket | undefined = c.stream;
      if (s && s.writable) {
        s.cork();
        streams.push(s);
      }
    }
    this.corked = streams;
    setImmediate(this.uncork);
  }

  /**
   * Run `script` with one key, or several of one slot (the first routes it); EVALSHA, then EVAL
   * on NOSCRIPT. `calls`: as for call.
   */
  async eval(script: LuaScript, key: string | readonly string[], args: readonly Arg[], calls = 1): Promise<RedisReply> {
    const keys = typeof key === 'string' ? [key] : key;
    try {
      return await this.call(['EVALSHA', script.sha, keys.length, ...keys, ...args], keys[0], calls);
    } catch (err) {
      if (!(err instanceof RedisReplyError) || !err.message.startsWith('NOSCRIPT')) throw err;
      // First use on this node, or the node restarted or was promoted: EVAL caches it there.
      return this.call(['EVAL', script.source, keys.length, ...keys, ...args], keys[0], calls);
    }
  }

  /**
   * Run `script` like eval, its calls of this event-loop turn together: one EVALSHA of its
   * `many` form per batch (one Redis; on a Cluster each call is sent alone), sent when the
   * turn ends, when the turn's other commands are written anyway (batchTurn). A call alone in
   * its batch goes as `one`. Each call settles with its own reply, or its own error. So Redis
   * runs a turn's batched calls after the commands the turn sent directly: a caller that needs
   * one before the other awaits the first (a turn's requests are concurrent: none waits on another's
   * write).
   */
  evalBatched(script: BatchedScript, keys: readonly string[], args: readonly Arg[]): Promise<RedisReply> {
    if (keys.length !== script.keysPerCall || args.length !== script.argsPerCall) {
      return Promise.reject(new RedisReplyError(`ERR batched script takes ${script.keysPerCall} keys and ${script.argsPerCall} arguments`));
    }
    // Not connected yet, or closed: eval says so (or waits for the first connection). On a
    // Cluster, alone: a script's keys must share one slot, which two calls of a turn rarely do
    // (a hash tag per terminal), and a batch whose slot is being migrated would be refused as a
    // whole (TRYAGAIN) where a single call is redirected (ASK).
    if (!this.everUp || this.closed || this.cluster) return this.eval(script.one, keys, args).then((v) => (v === null ? Promise.reject(answeredNil()) : v));
    let batch = this.batches.get(script.one.sha);
    if (!batch) {
      batch = { script, calls: [] };
      this.batches.set(script.one.sha, batch);
    }
    if (!this.corked) this.batchTurn();
    return new Promise<RedisReply>((resolve, reject) => {
      batch.calls.push({ keys, args, resolve, reject });
    });
  }

  /**
   * Send the turn's batched calls, BATCH_MAX_CALLS per script at most. Each call counts in
   * `pending` as a command would: the calls beyond `maxPending` fail at once, as theirs would.
   */
  private sendBatches(): void {
    const batches = this.batches;
    this.batches = new Map();
    for (const { script, calls } of batches.values()) {
      const room = Math.max(0, Math.min(calls.length, this.maxPending - this.sent));
      for (let from = 0; from < room; from += BATCH_MAX_CALLS) this.sendBatch(script, calls.slice(from, Math.min(room, from + BATCH_MAX_CALLS)));
      for (let i = room; i < calls.length; i++) calls[i]!.reject(this.queueFull());
    }
  }

  private sendBatch(script: BatchedScript, calls: BatchedCall[]): void {
    if (calls.length === 1) {
      const c = calls[0]!;
      this.eval(script.one, c.keys, c.args).then((v) => (v === null ? c.reject(answeredNil()) : c.resolve(v)), c.reject);
      return;
    }
    const keys: string[] = [];
    const args: Arg[] = [];
    for (const c of calls) {
      for (const k of c.keys) keys.push(k);
      for (const a of c.args) args.push(a);
    }
    this.batchesSent++;
    this.batchedCalls += calls.length;
    this.eval(script.many, keys, args, calls.length).then((r) => {
      const replies = Array.isArray(r) && r.length === calls.length ? r : undefined;
      calls.forEach((c, i) => {
        const v = replies?.[i] as RedisReply | Error | undefined;
        if (v === undefined) c.reject(new RedisReplyError(`ERR batched script answered ${Array.isArray(r) ? `${r.length} replies for ${calls.length} calls` : 'no array'}`));
        else if (v instanceof Error) c.reject(this.classify(v));
        else c.resolve(v);
      });
    }, (e: Error) => {
      for (const c of calls) c.reject(e);
    });
  }

  /** Publish on `channel`: SPUBLISH (sharded, to the channel's shard) in Cluster, PUBLISH otherwise. */
  publish(channel: string, message: Buffer): Promise<RedisReply> {
    return this.call([this.cluster ? 'SPUBLISH' : 'PUBLISH', channel, message], channel);
  }

  /** Subscribe to `channel` on a connection of its own (SSUBSCRIBE in Cluster); resubscribes after reconnections and failovers. */
  subscribe(channel: string, onMessage: (payload: Buffer) => void): RedisSubscription {
    return new RedisSubscription(this.connect(true), this.cluster, channel, onMessage);
  }

  /** The underlying ioredis client (tests). */
  get raw(): Redis | Cluster {
    return this.redis;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.sweep);
    this.redis.disconnect();
    for (const d of this.deadlines) d.reject(new RedisUnavailable('redis client closed', 500));
    this.deadlines.clear();
  }
}

/** A pub/sub subscription on its own connection (a subscribed connection takes no other command). */
export class RedisSubscription {
  /** Resolves once subscribed the first time. */
  readonly ready: Promise<void>;

  constructor(
    private readonly conn: Redis | Cluster,
    cluster: boolean,
    readonly channel: string,
    onMessage: (payload: Buffer) => void,
  ) {
    conn.on('error', () => { /* reconnects by itself */ });
    const event = cluster ? 'smessageBuffer' : 'messageBuffer';
    conn.on(event, (ch: Buffer, payload: Buffer) => {
      if (ch.toString() === channel) onMessage(payload);
    });
    const sub = cluster ? conn.ssubscribe(channel) : conn.subscribe(channel);
    this.ready = sub.then(() => {}, () => {});
  }

  close(): void {
    this.conn.disconnect();
  }
}
