// The datagram server shared by every daemon: bounds, rate limit, decode, session
// authentication, anti-replay, the response cache for retransmissions, dispatch to a handler per
// message type, and refusals with an error code on the wire and a log line.
//
// Order matters for safety: size -> rate limit -> decode -> MAC (no state touched before it
// verifies) -> response cache (a retransmission is answered, not executed twice) -> replay
// window -> handler. Replies to anything not MAC-verified are never larger than the request.
import dgram from 'node:dgram';
import { LRUCache } from 'lru-cache';
import type { Logger } from '../common/log.js';
import type { Metrics } from '../common/metrics.js';
import type { Address } from '../wire/addr.js';
import { formatAddress, normaliseIp } from '../wire/addr.js';
import type { Bodies, MessageName } from '../wire/catalog.js';
import { EXCHANGE_LIFETIME_MS, MAX_DATAGRAM, REQUEST_ID_BYTES } from '../wire/constants.js';
import type { Message, MessageOf } from '../wire/envelope.js';
import { decodeDatagram, encodeDatagram } from '../wire/envelope.js';
import { DevlocError, ErrorCode, errorName } from '../wire/errors.js';
import type { RateLimiter } from './ratelimit.js';
import type { ServerSession, ServerSessions } from './sessions.js';

export interface Refusal {
  error: ErrorCode;
  message?: string;
  retryAfterMs?: number;
  cookie?: Uint8Array;
}

/** What a handler returns: encoded reply bytes, a refusal, or nothing (no reply). */
export type HandlerResult = Buffer | Refusal | null;

export interface RequestContext<N extends MessageName = MessageName> {
  msg: MessageOf<N>;
  raw: Buffer;
  from: Address;
  /** Present for session-authenticated messages whose MAC verified. */
  session?: ServerSession;
  /** True for the message that opened `session`. */
  freshSession: boolean;
  /** Encode a reply of `name` to this request (MACed when the request was). */
  reply<R extends MessageName>(name: R, body: Bodies[R]): Buffer;
}

export type Handler<N extends MessageName = MessageName> = (ctx: RequestContext<N>) => HandlerResult | Promise<HandlerResult>;
export type Handlers = { [N in MessageName]?: Handler<N> };

export interface DatagramServerOptions {
  service: string;
  socket: dgram.Socket;
  handlers: Handlers;
  logger: Logger;
  metrics: Metrics;
  sessions?: ServerSessions;
  rateLimiter?: RateLimiter;
  /** Most cached replies kept for retransmissions. */
  replyCacheMax?: number;
  exchangeLifetimeMs?: number;
}

interface CachedReply {
  reply: Buffer | null;
  fromKey: string;
}

const ZERO_RID = new Uint8Array(REQUEST_ID_BYTES);

export class DatagramServer {
  readonly socket: dgram.Socket;
  private readonly replies: LRUCache<string, CachedReply>;
  /** Requests being executed, so a retransmission arriving meanwhile is not executed twice. */
  private readonly inFlight = new Set<string>();

  constructor(private readonly opts: DatagramServerOptions) {
    this.socket = opts.socket;
    this.replies = new LRUCache({ max: opts.replyCacheMax ?? 100_000, ttl: opts.exchangeLifetimeMs ?? EXCHANGE_LIFETIME_MS });
    const m = opts.metrics;
    m.counter('datagrams_received_total', 'Datagrams received');
    m.counter('datagrams_sent_total', 'Datagrams sent');
    m.counter('requests_total', 'Requests handled, by message type and result');
    m.counter('refused_total', 'Datagrams refused, by error code');
    m.counter('dropped_total', 'Datagrams dropped without reply, by reason');
    m.counter('retransmissions_answered_total', 'Retransmitted requests answered from the response cache');
    this.socket.on('message', (raw, rinfo) => {
      void this.receive(raw, { ip: normaliseIp(rinfo.address), port: rinfo.port });
    });
  }

  /** Process one datagram (exposed for tests and fuzzing: no socket needed to call it). */
  async receive(raw: Buffer, from: Address): Promise<void> {
    const { metrics, logger } = this.opts;
    metrics.inc('datagrams_received_total');
    if (raw.length > MAX_DATAGRAM) {
      this.drop('oversize', from, { bytes: raw.length });
      return;
    }
    if (this.opts.rateLimiter && !this.opts.rateLimiter.take(from.ip)) {
      metrics.inc('refused_total', { code: errorName(ErrorCode.RATE_LIMITED) });
      logger.refusal('rate-limited', { from: formatAddress(from) });
      // Answer (small, never amplifying) so honest clients back off; a flood's answers are
      // themselves bounded by the bucket's refill, as the limiter is charged for them too.
      if (this.opts.rateLimiter.take(`notify:${from.ip}`)) {
        this.sendRefusal(raw, from, ZERO_RID, { error: ErrorCode.RATE_LIMITED, retryAfterMs: this.opts.rateLimiter.retryAfterMs(from.ip) });
      }
      return;
    }
    const dec = decodeDatagram(raw);
    if (!dec.ok) {
      this.refuse(raw, from, dec.rid ?? ZERO_RID, { error: dec.code, message: dec.reason }, undefined, 'decode');
      return;
    }
    const msg = dec.msg;
    const handler = this.opts.handlers[msg.name] as Handler | undefined;
    if (!handler || (msg.auth && !this.opts.sessions)) {
      this.refuse(raw, from, msg.rid, { error: ErrorCode.UNKNOWN_TYPE, message: `${msg.name} is not served by ${this.opts.service}` }, undefined, msg.name);
      return;
    }
    const fromKey = formatAddress(from);
    let session: ServerSession | undefined;
    let fresh = false;
    let cacheKey: string;
    if (msg.auth) {
      const sessions = this.opts.sessions!;
      let auth = sessions.authenticate(msg, raw);
      // A session opened by another instance sharing the store (locatord --store redis).
      if (!auth.ok && auth.code === ErrorCode.NO_SESSION && sessions.hasRemote) {
        let found = false;
        try {
          found = await sessions.fetch(Buffer.from(msg.auth.sid).toString('hex'));
        } catch (err) {
          const r = err as { message?: string; retryAfterMs?: number };
          this.refuse(raw, from, msg.rid, { error: ErrorCode.TRY_LATER, message: `session store: ${r.message ?? String(err)}`, retryAfterMs: r.retryAfterMs ?? 1000 }, undefined, msg.name);
          return;
        }
        if (found) auth = sessions.authenticate(msg, raw);
      }
      if (!auth.ok) {
        this.refuse(raw, from, msg.rid, { error: auth.code, message: auth.reason }, undefined, msg.name);
        return;
      }
      session = auth.session;
      fresh = auth.fresh;
      cacheKey = `${session.sidHex}/${Buffer.from(msg.rid).toString('hex')}`;
    } else {
      cacheKey = `${fromKey}/${Buffer.from(msg.rid).toString('hex')}`;
    }
    const cached = this.replies.get(cacheKey);
    if (cached || this.inFlight.has(cacheKey)) {
      if (cached && cached.fromKey === fromKey) {
        metrics.inc('retransmissions_answered_total');
        if (cached.reply) this.send(cached.reply, from);
      } else if (cached) {
        // Same request from elsewhere: a captured packet replayed. Never answer it with the
        // cached reply (that could be larger than the request, toward a spoofed victim).
        this.refuse(raw, from, msg.rid, { error: ErrorCode.REPLAY, message: 'request already executed for another source' }, session, msg.name);
      }
      return;
    }
    if (session && msg.auth) {
      const w = session.window.check(msg.auth.seq);
      if (w !== 'ok') {
        this.refuse(raw, from, msg.rid, { error: ErrorCode.REPLAY, message: w === 'old' ? 'sequence left of the replay window' : 'sequence already seen' }, session, msg.name);
        return;
      }
      session.window.accept(msg.auth.seq);
      if (fresh) this.opts.sessions!.commit(session);
    }
    const sessions = this.opts.sessions;
    const ctx: RequestContext = {
      msg, raw, from, freshSession: fresh,
      reply: (name, body) => (session ? sessions!.encode(session, name, msg.rid, body) : encodeDatagram(name, msg.rid, body)),
    };
    if (session) ctx.session = session;
    this.inFlight.add(cacheKey);
    const started = process.hrtime.bigint();
    let result: HandlerResult;
    try {
      result = await handler(ctx as never);
    } catch (err) {
      if (err instanceof DevlocError) {
        result = { error: err.code, message: err.message, ...(err.retryAfterMs !== undefined ? { retryAfterMs: err.retryAfterMs } : {}) };
      } else {
        logger.error('handler failed', { type: msg.name, err: String((err as Error)?.stack ?? err) });
        result = { error: ErrorCode.INTERNAL, message: 'internal error' };
      }
    } finally {
      this.inFlight.delete(cacheKey);
    }
    metrics.observe('request_duration_seconds', 'Time to handle a request', Number(process.hrtime.bigint() - started) / 1e9);
    let reply: Buffer | null;
    if (result === null) reply = null;
    else if (Buffer.isBuffer(result)) reply = result;
    else {
      metrics.inc('refused_total', { code: errorName(result.error) });
      logger.refusal(`${msg.name}:${errorName(result.error)}`, { from: fromKey, type: msg.name, code: errorName(result.error), reason: result.message });
      reply = this.errorReply(raw, msg.rid, result, session);
    }
    metrics.inc('requests_total', { type: msg.name, result: Buffer.isBuffer(result) || result === null ? 'ok' : errorName(result.error) });
    // Errors that say "try again" are not cached: the retry should be executed.
    if (Buffer.isBuffer(result) || result === null || !(result.error === ErrorCode.TRY_LATER || result.error === ErrorCode.RATE_LIMITED)) {
      this.replies.set(cacheKey, { reply, fromKey });
    }
    if (reply) {
      if (!session && reply.length > raw.length) this.drop('amplification', from, { type: msg.name, reply: reply.length, request: raw.length });
      else this.send(reply, from);
    }
  }

  /** Send `bytes` to `to`, counting it. */
  send(bytes: Buffer, to: Address): void {
    this.opts.metrics.inc('datagrams_sent_total');
    this.socket.send(bytes, to.port, to.ip, (err) => {
      if (err) this.opts.metrics.inc('dropped_total', { reason: 'send-error' });
    });
  }

  private drop(reason: string, from: Address, fields: Record<string, unknown>): void {
    this.opts.metrics.inc('dropped_total', { reason });
    this.opts.logger.refusal(`drop:${reason}`, { from: formatAddress(from), reason, ...fields });
  }

  private refuse(raw: Buffer, from: Address, rid: Uint8Array, r: Refusal, session: ServerSession | undefined, what: string): void {
    this.opts.metrics.inc('refused_total', { code: errorName(r.error) });
    this.opts.logger.refusal(`${what}:${errorName(r.error)}`, { from: formatAddress(from), code: errorName(r.error), reason: r.message });
    if (session) {
      const reply = this.errorReply(raw, rid, r, session);
      if (reply) this.send(reply, from);
    } else {
      this.sendRefusal(raw, from, rid, r);
    }
  }

  private sendRefusal(raw: Buffer, from: Address, rid: Uint8Array, r: Refusal): void {
    const reply = this.errorReply(raw, rid, r, undefined);
    if (reply) this.send(reply, from);
    else this.opts.metrics.inc('dropped_total', { reason: 'refusal-too-large' });
  }

  /**
   * An ERROR reply. Unauthenticated ones are trimmed (message text first) to fit within the
   * request's size; null when even the bare code would not fit (the request was tinier).
   */
  private errorReply(raw: Buffer, rid: Uint8Array, r: Refusal, session: ServerSession | undefined): Buffer | null {
    const body: Bodies['ERROR'] = { code: r.error };
    if (r.message) body.message = r.message.slice(0, 120);
    if (r.retryAfterMs !== undefined) body.retryAfterMs = r.retryAfterMs;
    if (r.cookie) body.cookie = r.cookie;
    if (session) return this.opts.sessions!.encode(session, 'ERROR', rid, body);
    let bytes = encodeDatagram('ERROR', rid, body);
    if (bytes.length > raw.length && body.message) {
      delete body.message;
      bytes = encodeDatagram('ERROR', rid, body);
    }
    return bytes.length <= raw.length ? bytes : null;
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.socket.close(() => resolve()));
  }
}

export interface BindOptions {
  host: string;
  port: number;
  /** SO_RCVBUF in bytes; 0 keeps the system default. */
  receiveBufferBytes?: number;
}

/** Bind a UDP socket (IPv4 or IPv6 by the host's form). Resolves once bound. */
export function bindUdp(o: BindOptions): Promise<dgram.Socket> {
  const socket = dgram.createSocket({ type: o.host.includes(':') ? 'udp6' : 'udp4', reuseAddr: false });
  return new Promise((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(o.port, o.host, () => {
      socket.off('error', reject);
      if (o.receiveBufferBytes) socket.setRecvBufferSize(o.receiveBufferBytes);
      resolve(socket);
    });
  });
}

export type { Message };
