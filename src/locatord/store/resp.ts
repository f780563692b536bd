// A minimal Redis client (RESP2) for locatord's shared store: one TCP connection per Redis node,
// pipelined (every command issued in the same event-loop turn goes out in one write, replies
// are parsed incrementally and matched in order), reconnecting with backoff, and bounded: at
// most `maxPending` commands queued or awaiting a reply per connection, beyond which a command
// fails at once with RedisUnavailable ("TRY_LATER"), so a slow or absent Redis costs no memory
// growth. Commands that get no reply within `timeoutMs` fail the same way (the connection
// stays; their late replies are discarded in order).
//
// Redis Cluster (redis+cluster://, or several seeds): `RedisClient` maps the 16384 hash slots
// to nodes (CLUSTER SLOTS, read before the first command), sends each command to the node of
// its key's slot, and follows MOVED (remap, re-read the map, retry) and ASK (ASKING + retry
// once) redirections. Keys use hash tags ("{...}") so that one terminal's keys share a slot.
// Also: Lua scripts by EVALSHA with EVAL on NOSCRIPT (LuaScript), and a pub/sub subscriber on
// its own connection (RespSubscriber).
//
// Why not ioredis or iovalkey: a runtime dependency for the ~600 lines we need, whose default
// failure behaviour (offline queue without bound, retries per request) is not the one the
// daemon documents (fail fast, bounded queue); measured on the same pipelined GET/SET workload,
// ioredis 5 was not faster (README, "Scaling out").
import { createHash } from 'node:crypto';
import net from 'node:net';

export type RespValue = Buffer | number | null | RespValue[] | RespServerError;
export type Arg = string | Buffer | number;

/** An error reply from Redis (-ERR ..., -MOVED ...). */
export class RespServerError extends Error {
  override readonly name = 'RespServerError';
}

/** Redis cannot be reached, is too slow, or our queue is full: the request may be retried. */
export class RedisUnavailable extends Error {
  override readonly name = 'RedisUnavailable';
  constructor(
    message: string,
    readonly retryAfterMs: number,
  ) {
    super(message);
  }
}

export interface RespOptions {
  host: string;
  port: number;
  db?: number;
  password?: string;
  username?: string;
  /** A command without a reply after this long fails (RedisUnavailable). */
  timeoutMs?: number;
  /** Most commands queued or in flight; beyond, commands fail at once. */
  maxPending?: number;
  /** Told when the connection goes up or down (logging, metrics). */
  onState?: (state: 'up' | 'down', detail: string) => void;
}

interface Pending {
  resolve: (v: RespValue) => void;
  reject: (e: Error) => void;
  deadline: number;
  /** Timed out: the reply, when it comes, is dropped. */
  dead: boolean;
  /** Internal command (SELECT/AUTH): its reply is not a caller's. */
  internal?: boolean;
}

const CRLF = Buffer.from('\r\n');

function encodeCommand(args: readonly Arg[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const a of args) {
    const b = Buffer.isBuffer(a) ? a : Buffer.from(String(a));
    parts.push(Buffer.from(`$${b.length}\r\n`), b, CRLF);
  }
  return Buffer.concat(parts);
}

const INCOMPLETE = Symbol('incomplete');

/** Incremental RESP2 reply parser. */
export class RespParser {
  private buf: Buffer = Buffer.alloc(0);
  private pos = 0;

  /** Feed bytes; returns every complete reply now available. */
  feed(chunk: Buffer): RespValue[] {
    this.buf = this.pos < this.buf.length ? Buffer.concat([this.buf.subarray(this.pos), chunk]) : chunk;
    this.pos = 0;
    const out: RespValue[] = [];
    for (;;) {
      const start = this.pos;
      const v = this.read();
      if (v === INCOMPLETE) {
        this.pos = start;
        break;
      }
      out.push(v);
    }
    return out;
  }

  private line(): string | typeof INCOMPLETE {
    const end = this.buf.indexOf(CRLF, this.pos);
    if (end < 0) return INCOMPLETE;
    const s = this.buf.toString('latin1', this.pos, end);
    this.pos = end + 2;
    return s;
  }

  private read(): RespValue | typeof INCOMPLETE {
    if (this.pos >= this.buf.length) return INCOMPLETE;
    const type = this.buf[this.pos++];
    const l = this.line();
    if (l === INCOMPLETE) return INCOMPLETE;
    switch (type) {
      case 0x2b: // +
        return Buffer.from(l, 'latin1');
      case 0x2d: // -
        return new RespServerError(l);
      case 0x3a: // :
        return Number(l);
      case 0x24: { // $
        const n = Number(l);
        if (n < 0) return null;
        if (this.buf.length < this.pos + n + 2) return INCOMPLETE;
        const v = Buffer.from(this.buf.subarray(this.pos, this.pos + n));
        this.pos += n + 2;
        return v;
      }
      case 0x2a: { // *
        const n = Number(l);
        if (n < 0) return null;
        const arr: RespValue[] = [];
        for (let i = 0; i < n; i++) {
          const v = this.read();
          if (v === INCOMPLETE) return INCOMPLETE;
          arr.push(v);
        }
        return arr;
      }
      default:
        throw new Error(`RESP protocol error: type byte ${type}`);
    }
  }
}

/** One connection to one Redis node. */
export class RespConnection {
  private socket: net.Socket | null = null;
  private state: 'connecting' | 'up' | 'down' | 'closed' = 'down';
  private readonly inFlight: Pending[] = [];
  private head = 0;
  private outgoing: Buffer[] = [];
  private flushScheduled = false;
  private parser = new RespParser();
  private attempts = 0;
  private retryTimer: NodeJS.Timeout | null = null;
  private readonly timer: NodeJS.Timeout;
  private nextRetryAt = 0;
  readonly timeoutMs: number;
  readonly maxPending: number;
  /** Commands failed (unavailable, timed out, refused for a full queue). */
  errors = 0;

  constructor(readonly o: RespOptions) {
    this.timeoutMs = o.timeoutMs ?? 1000;
    this.maxPending = o.maxPending ?? 10_000;
    this.timer = setInterval(() => this.expire(), Math.max(10, Math.floor(this.timeoutMs / 4)));
    this.timer.unref();
    this.connect();
  }

  get pending(): number {
    return this.inFlight.length - this.head;
  }

  get isUp(): boolean {
    return this.state === 'up';
  }

  private connect(): void {
    if (this.state === 'closed') return;
    this.state = 'connecting';
    this.parser = new RespParser();
    const s = net.createConnection({ host: this.o.host, port: this.o.port });
    s.setNoDelay(true);
    this.socket = s;
    // Handshake first, ahead of anything queued while connecting.
    const hello: Buffer[] = [];
    if (this.o.password !== undefined) {
      hello.push(encodeCommand(this.o.username ? ['AUTH', this.o.username, this.o.password] : ['AUTH', this.o.password]));
    }
    if (this.o.db) hello.push(encodeCommand(['SELECT', this.o.db]));
    const internal = hello.map((): Pending => ({ resolve: () => {}, reject: () => {}, deadline: Date.now() + this.timeoutMs, dead: false, internal: true }));
    this.inFlight.splice(this.head, 0, ...internal);
    this.outgoing.unshift(...hello);
    s.on('connect', () => {
      if (this.socket !== s) return;
      this.state = 'up';
      if (this.attempts > 0 || this.everUp) this.o.onState?.('up', `${this.o.host}:${this.o.port}`);
      this.everUp = true;
      this.attempts = 0;
      this.flush();
    });
    s.on('data', (chunk: Buffer) => {
      let replies: RespValue[];
      try {
        replies = this.parser.feed(chunk);
      } catch (err) {
        s.destroy(err as Error);
        return;
      }
      for (const r of replies) this.deliver(r);
    });
    s.on('error', () => { /* 'close' follows */ });
    s.on('close', () => {
      if (this.socket !== s) return;
      this.socket = null;
      this.lost(s.errored?.message ?? 'connection closed');
    });
  }

  private everUp = false;

  private deliver(r: RespValue): void {
    const p = this.inFlight[this.head];
    if (!p) return; // unsolicited: ignore
    this.inFlight[this.head++] = undefined as unknown as Pending;
    if (this.head > 1024 && this.head * 2 > this.inFlight.length) {
      this.inFlight.splice(0, this.head);
      this.head = 0;
    }
    if (p.internal) {
      if (r instanceof RespServerError) this.socket?.destroy(new Error(`handshake: ${r.message}`));
      return;
    }
    if (p.dead) return;
    p.resolve(r);
  }

  private lost(why: string): void {
    const wasUp = this.state === 'up' || this.everUp;
    if (this.state !== 'closed') this.state = 'down';
    const failed = this.inFlight.splice(this.head);
    this.inFlight.length = 0;
    this.head = 0;
    this.outgoing = [];
    const delay = Math.min(2000, 50 * 2 ** Math.min(this.attempts, 6));
    this.attempts++;
    this.nextRetryAt = Date.now() + delay;
    const err = new RedisUnavailable(`redis ${this.o.host}:${this.o.port} unavailable: ${why}`, delay);
    for (const p of failed) {
      if (p.dead || p.internal) continue;
      this.errors++;
      p.reject(err);
    }
    if (this.attempts === 1 || wasUp) this.o.onState?.('down', why);
    if (this.state === 'closed') return;
    this.retryTimer = setTimeout(() => this.connect(), delay);
    this.retryTimer.unref();
  }

  /** Fail commands without a reply for too long (they stay in order: their replies are dropped). */
  private expire(): void {
    const now = Date.now();
    for (let i = this.head; i < this.inFlight.length; i++) {
      const p = this.inFlight[i]!;
      if (p.deadline > now) break;
      if (p.dead || p.internal) continue;
      p.dead = true;
      this.errors++;
      p.reject(new RedisUnavailable(`redis ${this.o.host}:${this.o.port}: no reply within ${this.timeoutMs} ms`, this.timeoutMs));
    }
  }

  /** Send one command; resolves with its reply (an error reply resolves as RespServerError). */
  call(args: readonly Arg[]): Promise<RespValue> {
    if (this.state === 'down' || this.state === 'closed') {
      this.errors++;
      return Promise.reject(new RedisUnavailable(`redis ${this.o.host}:${this.o.port} unavailable`, Math.max(50, this.nextRetryAt - Date.now())));
    }
    if (this.pending >= this.maxPending) {
      this.errors++;
      return Promise.reject(new RedisUnavailable(`redis queue full (${this.maxPending} pending)`, 100));
    }
    return new Promise<RespValue>((resolve, reject) => {
      this.inFlight.push({ resolve, reject, deadline: Date.now() + this.timeoutMs, dead: false });
      this.outgoing.push(encodeCommand(args));
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        // After the current I/O phase: every command of the datagrams received in it goes in
        // one write (pipelining without waiting).
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.flushScheduled = false;
    if (this.state !== 'up' || !this.socket || this.outgoing.length === 0) return;
    const data = this.outgoing.length === 1 ? this.outgoing[0]! : Buffer.concat(this.outgoing);
    this.outgoing = [];
    this.socket.write(data);
  }

  close(): void {
    this.state = 'closed';
    clearInterval(this.timer);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    const s = this.socket;
    this.socket = null;
    s?.destroy();
    this.lost('client closed');
  }
}

// CRC16-CCITT (XMODEM), as Redis Cluster uses for key slots.
const CRC_TABLE = (() => {
  const t = new Uint16Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i << 8;
    for (let j = 0; j < 8; j++) c = c & 0x8000 ? ((c << 1) ^ 0x1021) & 0xffff : (c << 1) & 0xffff;
    t[i] = c;
  }
  return t;
})();

export function crc16(b: Buffer): number {
  let crc = 0;
  for (const x of b) crc = ((crc << 8) & 0xffff) ^ CRC_TABLE[((crc >> 8) ^ x) & 0xff]!;
  return crc;
}

/** Hash slot of a key: only the part inside the first non-empty {...} counts, when present. */
export function keySlot(key: string | Buffer): number {
  let b = Buffer.isBuffer(key) ? key : Buffer.from(key);
  const open = b.indexOf(0x7b);
  if (open >= 0) {
    const close = b.indexOf(0x7d, open + 1);
    if (close > open + 1) b = b.subarray(open + 1, close);
  }
  return crc16(b) % 16384;
}

export interface RedisClientOptions extends Omit<RespOptions, 'host' | 'port'> {
  /** One node (standalone), or cluster seed nodes. */
  nodes: { host: string; port: number }[];
  cluster?: boolean;
}

export interface RedisUrl {
  nodes: { host: string; port: number }[];
  db: number;
  /** redis+cluster://, or several comma-separated redis:// URLs. */
  cluster: boolean;
  password?: string;
  username?: string;
}

/**
 * Parse `redis://[user:pass@]host:port[/db]` (one standalone Redis) or
 * `redis+cluster://[user:pass@]host:port[,host:port...]` (Redis Cluster: any reachable seed
 * gives the slot map). A comma-separated list of redis:// URLs also means Cluster seeds.
 */
export function parseRedisUrl(url: string): RedisUrl {
  const nodes: { host: string; port: number }[] = [];
  let db = 0;
  let password: string | undefined;
  let username: string | undefined;
  let scheme = '';
  for (const part of url.split(',').map((s) => s.trim()).filter(Boolean)) {
    const withScheme = part.includes('://') ? part : `${scheme || 'redis:'}//${part}`;
    const m = /^([a-z+]+:)\/\//i.exec(withScheme);
    const proto = m?.[1]?.toLowerCase() ?? '';
    if (proto !== 'redis:' && proto !== 'redis+cluster:') throw new Error(`unsupported Redis URL scheme ${proto || part} (redis:// or redis+cluster://)`);
    if (scheme && proto !== scheme) throw new Error('do not mix redis:// and redis+cluster:// in one list');
    scheme = proto;
    const u = new URL(`redis://${withScheme.slice(proto.length + 2)}`);
    nodes.push({ host: u.hostname.replace(/^\[|\]$/g, '') || '127.0.0.1', port: u.port ? Number(u.port) : 6379 });
    if (u.pathname.length > 1) db = Number(u.pathname.slice(1));
    if (!Number.isInteger(db) || db < 0) throw new Error(`bad Redis database number in ${part}`);
    if (u.password) password = decodeURIComponent(u.password);
    if (u.username) username = decodeURIComponent(u.username);
  }
  if (nodes.length === 0) throw new Error('no Redis node given');
  const cluster = scheme === 'redis+cluster:' || nodes.length > 1;
  if (cluster && db !== 0) throw new Error('Redis Cluster has only database 0');
  return { nodes, db, cluster, ...(password !== undefined ? { password } : {}), ...(username ? { username } : {}) };
}

/** A Lua script sent by EVALSHA, with EVAL when the node does not have it (NOSCRIPT). */
export class LuaScript {
  readonly sha: string;
  constructor(readonly source: string) {
    this.sha = createHash('sha1').update(source).digest('hex');
  }
}

/** Standalone or Cluster client: `call(args, key)` routes by the key's slot in Cluster mode. */
export class RedisClient {
  private readonly conns = new Map<string, RespConnection>();
  private readonly slots: (string | undefined)[] = new Array<string | undefined>(16384);
  readonly cluster: boolean;
  private readonly seeds: string[];
  private refreshing: Promise<void> | null = null;
  /** Cluster redirections followed (tests, metrics). */
  readonly redirects = { moved: 0, ask: 0 };
  /** Cluster: the slot map has been read once (until then, commands wait for the first read). */
  private mapped = false;
  private firstMap: Promise<void> | null = null;

  constructor(private readonly o: RedisClientOptions) {
    this.cluster = o.cluster ?? o.nodes.length > 1;
    this.seeds = o.nodes.map((n) => `${n.host}:${n.port}`);
    this.conn(this.seeds[0]!);
    if (this.cluster) this.firstMap = this.refreshSlots().catch(() => {});
  }

  private conn(addr: string): RespConnection {
    let c = this.conns.get(addr);
    if (!c) {
      const i = addr.lastIndexOf(':');
      const { nodes: _n, cluster: _c, ...rest } = this.o;
      c = new RespConnection({ ...rest, ...(this.cluster ? { db: 0 } : {}), host: addr.slice(0, i), port: Number(addr.slice(i + 1)) });
      this.conns.set(addr, c);
    }
    return c;
  }

  /** Commands queued or awaiting replies, all nodes. */
  get pending(): number {
    let n = 0;
    for (const c of this.conns.values()) n += c.pending;
    return n;
  }

  get errors(): number {
    let n = 0;
    for (const c of this.conns.values()) n += c.errors;
    return n;
  }

  /** The node (host:port) a key's commands go to now (Cluster), or the only node. */
  nodeOf(key: string): string {
    return (this.cluster ? this.slots[keySlot(key)] : undefined) ?? this.seeds[0]!;
  }

  /** Re-read the slot map from any reachable node. */
  refreshSlots(): Promise<void> {
    if (!this.refreshing) {
      this.refreshing = (async () => {
        const tried = new Set<string>();
        for (const addr of [...this.seeds, ...this.conns.keys()]) {
          if (tried.has(addr)) continue;
          tried.add(addr);
          try {
            const r = await this.conn(addr).call(['CLUSTER', 'SLOTS']);
            if (!Array.isArray(r)) continue;
            for (const range of r) {
              if (!Array.isArray(range) || typeof range[0] !== 'number' || typeof range[1] !== 'number' || !Array.isArray(range[2])) continue;
              const [from, to, master] = range as [number, number, RespValue[]];
              // An empty host means "the address you reached me at" (cluster-announce unset).
              const host = Buffer.isBuffer(master[0]) && master[0].length > 0 ? master[0].toString() : addr.slice(0, addr.lastIndexOf(':'));
              const node = `${host}:${master[1] as number}`;
              for (let s = from; s <= to && s < 16384; s++) this.slots[s] = node;
            }
            this.mapped = true;
            return;
          } catch { /* next node */ }
        }
      })().finally(() => { this.refreshing = null; });
    }
    return this.refreshing;
  }

  /**
   * Send a command about `key` (routing key in Cluster mode; every other key of the command
   * must be in the same slot); error replies reject. MOVED: remap the slot, re-read the map in
   * the background, retry at the new node. ASK (slot being migrated, key already moved): ASKING
   * and the command at the target, once, without remapping.
   */
  async call(args: readonly Arg[], key?: string): Promise<RespValue> {
    // A fresh client would otherwise send its first burst to the seed and bounce off MOVED.
    if (this.cluster && !this.mapped && this.firstMap) {
      await this.firstMap;
      this.firstMap = null;
    }
    let addr = key !== undefined ? this.nodeOf(key) : this.seeds[0]!;
    for (let hop = 0; ; hop++) {
      const r = await this.conn(addr).call(args);
      if (!(r instanceof RespServerError)) return r;
      const m = /^(MOVED|ASK) (\d+) (\S+)$/.exec(r.message);
      if (!m || hop >= 4) throw r;
      const target = m[3]!.startsWith(':') ? `${addr.slice(0, addr.lastIndexOf(':'))}${m[3]}` : m[3]!;
      if (m[1] === 'MOVED') {
        this.redirects.moved++;
        this.slots[Number(m[2])] = target;
        void this.refreshSlots().catch(() => {});
        addr = target;
      } else {
        this.redirects.ask++;
        const c = this.conn(target);
        // Same connection, same write: ASKING applies to the very next command.
        const asking = c.call(['ASKING']);
        const again = c.call(args);
        await asking;
        const v = await again;
        if (v instanceof RespServerError) throw v;
        return v;
      }
    }
  }

  /** Run `script` with one key (its slot routes it); EVALSHA, then EVAL on NOSCRIPT. */
  async eval(script: LuaScript, key: string, args: readonly Arg[]): Promise<RespValue> {
    try {
      return await this.call(['EVALSHA', script.sha, 1, key, ...args], key);
    } catch (err) {
      if (!(err instanceof RespServerError) || !err.message.startsWith('NOSCRIPT')) throw err;
      // First use on this node, or the node restarted: EVAL also caches the script there.
      return this.call(['EVAL', script.source, 1, key, ...args], key);
    }
  }

  close(): void {
    for (const c of this.conns.values()) c.close();
    this.conns.clear();
  }
}

/**
 * A Redis pub/sub subscription on its own connection (a subscribed connection takes no other
 * command): subscribes to `channel`, hands every message to `onMessage`, reconnects with backoff
 * (rotating through the nodes: in Cluster, PUBLISH reaches every node's subscribers).
 */
export class RespSubscriber {
  private socket: net.Socket | null = null;
  private closed = false;
  private attempts = 0;
  private next = 0;
  private timer: NodeJS.Timeout | null = null;
  /** Resolves once subscribed the first time. */
  readonly ready: Promise<void>;
  private markReady!: () => void;

  constructor(
    private readonly o: Omit<RespOptions, 'host' | 'port' | 'db'> & { nodes: { host: string; port: number }[] },
    readonly channel: string,
    private readonly onMessage: (payload: Buffer) => void,
  ) {
    this.ready = new Promise((resolve) => { this.markReady = resolve; });
    this.connect();
  }

  private connect(): void {
    if (this.closed) return;
    const node = this.o.nodes[this.next++ % this.o.nodes.length]!;
    const parser = new RespParser();
    const s = net.createConnection({ host: node.host, port: node.port });
    this.socket = s;
    s.setNoDelay(true);
    s.on('connect', () => {
      const hello: Buffer[] = [];
      if (this.o.password !== undefined) hello.push(encodeCommand(this.o.username ? ['AUTH', this.o.username, this.o.password] : ['AUTH', this.o.password]));
      hello.push(encodeCommand(['SUBSCRIBE', this.channel]));
      s.write(Buffer.concat(hello));
    });
    s.on('data', (chunk: Buffer) => {
      let replies: RespValue[];
      try {
        replies = parser.feed(chunk);
      } catch (err) {
        s.destroy(err as Error);
        return;
      }
      for (const r of replies) {
        if (r instanceof RespServerError) {
          s.destroy(r);
          return;
        }
        if (!Array.isArray(r) || !Buffer.isBuffer(r[0])) continue;
        const kind = r[0].toString();
        if (kind === 'subscribe') {
          this.attempts = 0;
          this.markReady();
        } else if (kind === 'message' && Buffer.isBuffer(r[2])) this.onMessage(r[2]);
      }
    });
    s.on('error', () => { /* 'close' follows */ });
    s.on('close', () => {
      if (this.socket !== s || this.closed) return;
      this.socket = null;
      const delay = Math.min(2000, 50 * 2 ** Math.min(this.attempts++, 6));
      this.timer = setTimeout(() => this.connect(), delay);
      this.timer.unref();
    });
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.socket?.destroy();
    this.socket = null;
  }
}
