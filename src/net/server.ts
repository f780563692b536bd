// The datagram server shared by every daemon: bounds, rate limit, decode, session
// authentication, anti-replay, the response cache for retransmissions, dispatch to a handler per
// message type, and refusals with an error code on the wire and a log line.
//
// Order matters for safety: size -> decode -> MAC (no state touched before it verifies; the
// order of checks within decode and MAC is devloc-protocol(7) "Order of checks": for a known
// session the MAC is checked before the body, so a bad body under a valid MAC is refused MACed,
// and under a wrong MAC is BAD_MAC; every refusal carries the request ID whenever it can be read)
// -> response cache (a byte-identical retransmission from the same source is answered, not
// executed twice; a reply larger than the request at most MAX_RETRANSMIT times) -> replay window
// -> rate limit (the source's own bucket) -> handler (the window takes the sequence number unless
// the answer is TRY_LATER / RATE_LIMITED, which are neither cached nor spent; with several
// instances the window shared through the store is asked too, and takes the number before the
// handler runs: see ServerSessions.claim; or, for the messages in `claimInHandler`, the handler's
// store takes it in its own write, before anything else the request does: DeferredClaim).
// Replies to anything not MAC-verified, and every refusal made here (replays included), are
// never larger than the request; responses (odd types, ERROR above all) are never answered with
// a refusal.
//
// Rate limits (issue 15): a source's own bucket is charged only for a datagram that proved
// something: a session MAC that verified on a sequence number not seen before (here, just before
// the handler), or, for unauthenticated requests, whatever the handler checks (authd's cookie:
// the handler calls ctx.chargeSource()). Everything that proves nothing (undecodable, unknown
// type, no session, bad MAC, replays, unauthenticated requests, and the ticket check that opens a
// session, before it runs) draws on one budget shared by all sources (UNPROVEN_BUDGET_FACTOR times
// the per-source rate): a forged datagram can spend it for everyone, never a chosen victim's.
// Session messages from an address not validated for their session (routability.ts) get no
// answer larger than the request and move nothing: ADDR_CHALLENGE instead, sequence not spent.
import dgram from 'node:dgram';
import type { Logger } from '../common/log.js';
import type { CounterSeries, Metrics, SeriesByLabel } from '../common/metrics.js';
import type { Address } from '../wire/addr.js';
import { formatAddress, normaliseIp } from '../wire/addr.js';
import type { Bodies, MessageName } from '../wire/catalog.js';
import { specOf } from '../wire/catalog.js';
import { EXCHANGE_LIFETIME_MS, MAX_DATAGRAM, MAX_RETRANSMIT, REQUEST_ID_BYTES } from '../wire/constants.js';
import type { DecodeOutcome, Message, MessageOf } from '../wire/envelope.js';
import { decodeDatagram, encodeDatagram } from '../wire/envelope.js';
import { DevlocError, ErrorCode, errorName } from '../wire/errors.js';
import type { RateLimiter } from './ratelimit.js';
import { serverLookup } from './lookup.js';
import { ReplyCache } from './reply-cache.js';
import { AddressValidation, NEEDS_VALIDATION } from './routability.js';
import { NIL } from './slot-index.js';
import type { ClaimVerdict, DeferredClaim, ServerSession, ServerSessions, WindowVerdict } from './sessions.js';

export interface Refusal {
  error: ErrorCode;
  message?: string;
  retryAfterMs?: number;
  cookie?: Uint8Array;
  /** For the log line only, never sent (a dependency's own error text, say). */
  detail?: string;
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
  /**
   * For session messages: whether `from` proved it receives for this session (routability.ts).
   * false: the handler must not bind or use the address (answer NEEDS_VALIDATION instead).
   */
  addressValidated?: boolean;
  /** Encode a reply of `name` to this request (MACed when the request was). */
  reply<R extends MessageName>(name: R, body: Bodies[R]): Buffer;
  /**
   * For unauthenticated requests, once the handler has proven the source (authd: a valid
   * cookie): charge the source's rate bucket. False when the source is over its limit (answer
   * RATE_LIMITED, with retryAfterMs from `retryAfterMs()`). Session messages are charged by the
   * server; this then returns true.
   */
  chargeSource(): boolean;
  /** Milliseconds until the source's bucket has a token again. */
  retryAfterMs(): number;
  /**
   * The shared replay window's claim of this message's sequence number, when the server left it
   * to the handler (DatagramServerOptions.claimInHandler, and a shared window): the handler hands
   * it to its store's write, or calls `ensure()` before anything else it does.
   */
  claim?: DeferredClaim;
}

export type Handler<N extends MessageName = MessageName> = (ctx: RequestContext<N>) => HandlerResult | Promise<HandlerResult>;
export type Handlers = { [N in MessageName]?: Handler<N> };

export interface DatagramServerOptions {
  service: string;
  socket: dgram.Socket;
  handlers: Handlers;
  /**
   * The refusal for a failure of the store behind the sessions (a shared session's fetch, the
   * shared replay window's claim), as the daemon answers one in a handler (locatord: TRY_LATER,
   * counted in redis_errors_total, a log line); null, or absent: TRY_LATER with the store's
   * words in the log line only.
   */
  storeFailure?: (err: unknown) => Refusal | null;
  logger: Logger;
  metrics: Metrics;
  sessions?: ServerSessions;
  /** Address validation of session messages (default: one of its own when `sessions` is given). */
  addressValidation?: AddressValidation;
  rateLimiter?: RateLimiter;
  /** Most cached replies kept for retransmissions. */
  replyCacheMax?: number;
  exchangeLifetimeMs?: number;
  /**
   * Session messages whose handler takes the shared replay window's claim itself
   * (RequestContext.claim): it must do nothing the request asks before the claim is taken (its
   * store folds it into its first write, or it calls `ensure()`), bar writes that a copy of the
   * request repeats to the same effect (locatord's REGISTER shares its session first). Others are
   * claimed before the handler runs. A session a message opens is committed before its handler,
   * also when the claim is then refused: it is the session the other copy opened too.
   */
  claimInHandler?: ReadonlySet<MessageName>;
}

/**
 * The in-flight set's key of a request: session ID and request ID as latin1 characters (one per
 * byte, so distinct IDs give distinct strings). Built only when an answer waits (a promise).
 */
function flightKey(msg: Message): string {
  const latin1 = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.length).toString('latin1');
  return msg.auth ? `${latin1(msg.auth.sid)}/${latin1(msg.rid)}` : `-/${latin1(msg.rid)}`;
}

const isPromiseLike = (v: unknown): v is PromiseLike<HandlerResult> =>
  typeof v === 'object' && v !== null && typeof (v as { then?: unknown }).then === 'function';

const ZERO_RID = new Uint8Array(REQUEST_ID_BYTES);

const replayReason = (w: WindowVerdict): string => (w === 'old' ? 'sequence left of the replay window' : 'sequence already seen');

/**
 * The budget for datagrams that prove nothing, shared by all sources, in per-source rates and
 * bursts (see the top of this file): 50 sources' worth.
 */
export const UNPROVEN_BUDGET_FACTOR = 50;

/** Most bytes of a refusal's message text (the ERROR schema bounds it in bytes, not characters). */
const ERROR_MESSAGE_MAX_BYTES = 120;

/**
 * The request ID and type of a datagram without decoding it (for the rate-limited path, which
 * must stay cheap): canonical envelopes start `84|85, version, type, 48 <8-byte rid>`.
 */
export function peekEnvelope(raw: Uint8Array): { rid?: Uint8Array; type?: number } {
  if (raw.length < 2 || (raw[0] !== 0x84 && raw[0] !== 0x85) || raw[1]! >= 24) return {};
  let i = 2;
  let type: number | undefined;
  if (raw[i] !== undefined && raw[i]! < 24) type = raw[i++];
  else if (raw[i] === 0x18 && raw[i + 1] !== undefined) {
    type = raw[i + 1];
    i += 2;
  } else return {};
  if (raw[i] !== 0x40 + REQUEST_ID_BYTES || raw.length < i + 1 + REQUEST_ID_BYTES) return type === undefined ? {} : { type };
  return { type: type!, rid: raw.subarray(i + 1, i + 1 + REQUEST_ID_BYTES) };
}

/**
 * Responses (odd types, ERROR included) are never answered with a refusal: two servers could
 * otherwise be made to bounce ERRORs at each other forever by one spoofed datagram.
 */
const isResponseType = (type: number | undefined): boolean => type !== undefined && type % 2 === 1;

/** Truncate text to at most `max` UTF-8 bytes without splitting a character. */
export function truncateUtf8(text: string, max: number): string {
  if (Buffer.byteLength(text) <= max) return text;
  let out = '';
  let bytes = 0;
  for (const ch of text) {
    const n = Buffer.byteLength(ch);
    if (bytes + n > max) break;
    out += ch;
    bytes += n;
  }
  return out;
}

/**
 * A request's context: one object per datagram, its methods on the prototype (no closures made
 * per datagram: the per-request path's garbage is what the GC pays for, issue 16).
 */
class Context implements RequestContext {
  session?: ServerSession;
  addressValidated?: boolean;
  claim?: DeferredClaim;

  constructor(
    readonly msg: Message,
    readonly raw: Buffer,
    readonly from: Address,
    session: ServerSession | undefined,
    readonly freshSession: boolean,
    private readonly sessions: ServerSessions | undefined,
    private readonly rateLimiter: RateLimiter | undefined,
  ) {
    if (session) this.session = session;
  }

  reply<R extends MessageName>(name: R, body: Bodies[R]): Buffer {
    return this.session ? this.sessions!.encode(this.session, name, this.msg.rid, body) : encodeDatagram(name, this.msg.rid, body);
  }

  chargeSource(): boolean {
    return this.session !== undefined || !this.rateLimiter || this.rateLimiter.take(this.from.ip);
  }

  retryAfterMs(): number {
    return this.rateLimiter?.retryAfterMs(this.from.ip) ?? 0;
  }
}

export class DatagramServer {
  readonly socket: dgram.Socket;
  private readonly replies: ReplyCache;
  private readonly purgeTimer: NodeJS.Timeout;
  /** Requests being executed, so a retransmission arriving meanwhile is not executed twice. */
  private readonly inFlight = new Set<string>();
  private closed = false;
  /** Addresses validated per session (only with sessions). */
  readonly routability: AddressValidation | undefined;
  /** Counter series of the per-datagram path, their label keys built once. */
  private readonly received: CounterSeries;
  private readonly sent: CounterSeries;
  private readonly sendErrors: CounterSeries;
  private readonly retransmissionsAnswered: CounterSeries;
  /** requests_total{type, result="ok"} by message name. */
  private readonly requestsOk: SeriesByLabel;
  /** One completion callback for every send (rather than a closure per datagram). */
  private readonly afterSend = (err: Error | null): void => {
    if (err) this.sendErrors.inc();
  };

  constructor(private readonly opts: DatagramServerOptions) {
    this.socket = opts.socket;
    this.routability = opts.sessions ? opts.addressValidation ?? new AddressValidation() : undefined;
    if (this.routability && opts.sessions) this.routability.attach(opts.sessions);
    const replyLifetimeMs = opts.exchangeLifetimeMs ?? EXCHANGE_LIFETIME_MS;
    this.replies = new ReplyCache(opts.replyCacheMax ?? 100_000, replyLifetimeMs);
    // An expired answer is forgotten only when overwritten: without a purge, a quiet server keeps
    // up to replyCacheMax dead replies (seen: the heap of a day of one terminal's refreshes grew by
    // ~100 KB an hour). One pass per lifetime frees them.
    this.purgeTimer = setInterval(() => this.replies.purge(performance.now()), replyLifetimeMs);
    this.purgeTimer.unref();
    const m = opts.metrics;
    m.counter('datagrams_received_total', 'Datagrams received');
    m.counter('datagrams_sent_total', 'Datagrams sent');
    m.counter('requests_total', 'Requests handled, by message type and result');
    m.counter('refused_total', 'Datagrams refused, by error code');
    m.counter('dropped_total', 'Datagrams dropped without reply, by reason');
    m.counter('retransmissions_answered_total', 'Retransmitted requests answered from the response cache');
    m.counter('addr_challenges_total', 'ADDR_CHALLENGEs sent to addresses not validated for their session');
    m.counter('addr_proofs_total', 'ADDR_PROOFs received, by result');
    this.received = m.series('datagrams_received_total');
    this.sent = m.series('datagrams_sent_total');
    this.sendErrors = m.series('dropped_total', { reason: 'send-error' });
    this.retransmissionsAnswered = m.series('retransmissions_answered_total');
    this.requestsOk = m.seriesBy('requests_total', 'type', { result: 'ok' });
    const failed = (err: unknown): void => {
      m.inc('dropped_total', { reason: 'internal' });
      opts.logger.error('datagram processing failed', { err: String((err as Error)?.stack ?? err) });
    };
    this.socket.on('message', (raw, rinfo) => {
      // process() handles its own failures; these catches are the last line so that no datagram
      // can ever take the daemon down (a throw, or an unhandled rejection of an async handler).
      let pending: Promise<void> | undefined;
      try {
        pending = this.process(raw, { ip: normaliseIp(rinfo.address), port: rinfo.port });
      } catch (err) {
        failed(err);
        return;
      }
      pending?.catch(failed);
    });
    // Without a listener, a socket error (e.g. ICMP-reported failures on some platforms) would
    // be thrown as an uncaught exception.
    this.socket.on('error', (err) => opts.logger.error('socket error', { err: err.message }));
  }

  /** Process one datagram (exposed for tests and fuzzing: no socket needed to call it). */
  async receive(raw: Buffer, from: Address): Promise<void> {
    await this.process(raw, from);
  }

  /**
   * Process one datagram: synchronously to the end when the handler answers synchronously (most
   * do), so that no promise is made per datagram; a promise only when the handler returns one.
   */
  private process(raw: Buffer, from: Address, triedRemote = false): Promise<void> | undefined {
    const { metrics } = this.opts;
    if (!triedRemote) this.received.inc();
    if (raw.length > MAX_DATAGRAM) {
      this.drop('oversize', from, { bytes: raw.length });
      return;
    }
    const dec = decodeDatagram(raw);
    if (!dec.ok) return this.refuseUndecoded(raw, from, dec, triedRemote);
    const msg = dec.msg;
    if (msg.name === 'ADDR_PROOF' && this.routability) {
      // Unauthenticated (two HMACs to check it): from the shared budget, as anything unproven.
      if (this.unproven(raw, from, msg.rid, msg.type)) this.addrProof(msg.body as Bodies['ADDR_PROOF'], from);
      return;
    }
    const handler = this.opts.handlers[msg.name] as Handler | undefined;
    if (!handler || (msg.auth && !this.opts.sessions)) {
      if (!this.unproven(raw, from, msg.rid, msg.type)) return;
      this.refuse(raw, from, msg.rid, { error: ErrorCode.UNKNOWN_TYPE, message: `${msg.name} is not served by ${this.opts.service}` }, undefined, msg.name, msg.type);
      return;
    }
    let session: ServerSession | undefined;
    let fresh = false;
    // A response (odd type: the acknowledgement of a push, a PROBE_ACK, a REVOKE_ACK) is never
    // answered, so there is no answer to remember for its retransmissions: no cache key, no
    // lookup, no entry (an LRU set per ack showed in the push path's profile). A copy of it is
    // stopped by the replay window (session messages) or executed again, which changes nothing
    // (devloc-protocol(7), "Response cache").
    const answerless = isResponseType(msg.type);
    if (msg.auth) {
      const sessions = this.opts.sessions!;
      // Opening a session checks a ticket (a signature, an X25519): work for a datagram that has
      // proven nothing yet, drawn from the shared budget.
      if (!triedRemote && (msg.body as { ticket?: unknown }).ticket !== undefined && !sessions.get(Buffer.from(msg.auth.sid).toString('hex'))
        && !this.unproven(raw, from, msg.rid, msg.type)) return;
      const auth = sessions.authenticate(msg, raw);
      // A session opened by another instance sharing the store (locatord --store redis): load
      // it, then process the datagram once more (without a second lookup).
      if (!auth.ok && auth.code === ErrorCode.NO_SESSION && sessions.hasRemote && !triedRemote) {
        if (!this.unproven(raw, from, msg.rid, msg.type)) return;
        return sessions.fetch(Buffer.from(msg.auth.sid).toString('hex')).then(
          (found) => (found ? this.process(raw, from, true) : this.refuse(raw, from, msg.rid, { error: auth.code, message: auth.reason }, undefined, msg.name, msg.type)),
          (err: unknown) => this.refuse(raw, from, msg.rid, this.storeRefusal(err, 'session store'), undefined, msg.name),
        );
      }
      if (!auth.ok) {
        if (!this.unproven(raw, from, msg.rid, msg.type)) return;
        this.refuse(raw, from, msg.rid, { error: auth.code, message: auth.reason }, undefined, msg.name, msg.type);
        return;
      }
      session = auth.session;
      fresh = auth.fresh;
    }
    // Answers are remembered by session ID and request ID, or outside a session by request ID
    // alone (64 random bits), so that the same request replayed from another source is
    // recognised as such rather than executed again. `answerable` goes with the datagram to
    // answer(): the one place that decides a response gets nothing back.
    const answerable = !answerless;
    const cached = answerable ? this.replies.find(msg.auth?.sid, msg.rid, performance.now()) : NIL;
    if (cached !== NIL) {
      if (this.replies.isRetransmission(cached, raw, from.ip, from.port)) {
        const replyBytes = this.replies.replyBytes(cached);
        // A source address proves nothing: a captured datagram replayed with its sender's
        // address spoofed looks like a retransmission. A reply larger than the request is sent
        // again at most as often as an honest client retransmits, or each spoofed copy would
        // bounce an amplified answer at the terminal for the whole exchange lifetime.
        if (replyBytes > raw.length && this.replies.resent(cached) >= MAX_RETRANSMIT) {
          this.drop('retransmissions-exhausted', from, { type: msg.name, reply: replyBytes, request: raw.length });
          return;
        }
        this.replies.countResend(cached);
        this.retransmissionsAnswered.inc();
        // Copied out of the cache only now that it is sent.
        if (replyBytes >= 0) this.send(this.replies.reply(cached)!, from);
      } else {
        // Same request ID from elsewhere, or other bytes under it: a captured packet replayed
        // or a forgery. Never answer it with the cached reply (that could be larger than the
        // request, toward a spoofed victim); the refusal itself is bounded by the request.
        const sameSource = this.replies.sameSource(cached, from.ip, from.port);
        const why = sameSource ? 'request ID reused for another request' : 'request already executed for another source';
        if (!this.unproven(raw, from, msg.rid, msg.type)) return;
        this.refuse(raw, from, msg.rid, { error: ErrorCode.REPLAY, message: why }, session, msg.name, msg.type);
      }
      return;
    }
    if (answerable && this.inFlight.size > 0 && this.inFlight.has(flightKey(msg))) {
      // A retransmission while the handler still runs: its answer is on the way.
      metrics.inc('dropped_total', { reason: 'in-flight' });
      return;
    }
    if (session && msg.auth) {
      const w = session.window.check(msg.auth.seq);
      if (w !== 'ok' && answerless) {
        // A copy of an acknowledgement already taken (network duplication, or a terminal that
        // answers every copy of a push with the same datagram): what the response cache used to
        // absorb. Never answered (a response), counted and logged as such rather than as a REPLAY.
        this.drop('response-copy', from, { type: msg.name, reason: replayReason(w) });
        return;
      }
      if (w !== 'ok') {
        if (!this.unproven(raw, from, msg.rid, msg.type)) return;
        this.refuse(raw, from, msg.rid, { error: ErrorCode.REPLAY, message: replayReason(w) }, session, msg.name, msg.type);
        return;
      }
      // The window takes the sequence number once the handler has run (below), unless the
      // answer is "try again": then the same datagram must be executable again. Meanwhile the
      // in-flight set keeps a copy of this datagram (same MAC, so same request ID) out.
      // Proven (a MAC on a sequence number not seen before): now, and only now, the source's
      // own bucket is charged.
      const limiter = this.opts.rateLimiter;
      if (limiter && !limiter.take(from.ip)) {
        this.rateLimited(raw, from, msg, session);
        return;
      }
      // Several instances (locatord --store redis): the shared window must also say yes, and
      // takes the number at once (atomically), so that a copy reaching another instance or
      // worker meanwhile is refused there; "try again" gives it back (answer()). A handler of
      // `claimInHandler` gets the claim to fold into its store's write (one round trip less).
      const claim = this.opts.sessions!.claim(session, msg.auth.seq, from);
      if (claim) {
        if (this.opts.claimInHandler?.has(msg.name)) return this.execute(raw, from, msg, handler, session, fresh, answerable, claim);
        const s = session;
        return this.afterClaim(claim, raw, from, msg, s, answerable, () => this.execute(raw, from, msg, handler, s, fresh, answerable));
      }
    } else if (!this.unproven(raw, from, msg.rid, msg.type)) return;
    return this.execute(raw, from, msg, handler, session, fresh, answerable);
  }

  /**
   * Take `claim` alone, then `go` on when it is ours; a refused claim is answered as such, a store
   * that fails TRY_LATER. Meanwhile the in-flight set keeps copies of the datagram out.
   */
  private afterClaim(
    claim: DeferredClaim, raw: Buffer, from: Address, msg: Message, session: ServerSession, answerable: boolean,
    go: () => Promise<void> | void,
  ): Promise<void> {
    const key = answerable ? flightKey(msg) : undefined;
    if (key !== undefined) this.inFlight.add(key);
    return claim.take().then(
      (verdict) => {
        if (key !== undefined) this.inFlight.delete(key);
        if (verdict === 'ok') return go();
        this.claimRefused(raw, from, msg, session, answerable, verdict);
        return undefined;
      },
      (err: unknown) => {
        if (key !== undefined) this.inFlight.delete(key);
        this.refuse(raw, from, msg.rid, this.storeRefusal(err, 'replay window'), session, msg.name, msg.type);
      },
    );
  }

  /** The refusal for a failure of the store behind the sessions (see DatagramServerOptions.storeFailure). */
  private storeRefusal(err: unknown, during: string): Refusal {
    const mapped = this.opts.storeFailure?.(err);
    if (mapped) return mapped;
    const r = err as { message?: string; retryAfterMs?: number };
    // The store's own words (a client library's) go to the log, not on the wire.
    return { error: ErrorCode.TRY_LATER, message: 'store unavailable, try later', detail: `${during}: ${r.message ?? String(err)}`, retryAfterMs: r.retryAfterMs ?? 1000 };
  }

  /** A claim the shared window refused: REPLAY, or dropped (a copy another instance answers, a response). */
  private claimRefused(raw: Buffer, from: Address, msg: Message, session: ServerSession, answerable: boolean, verdict: Exclude<ClaimVerdict, 'ok'>): void {
    if (verdict === 'elsewhere') {
      // A retransmission from the same source whose first copy another instance took: that one
      // answers (its response cache), as for a copy in flight here.
      this.opts.metrics.inc('dropped_total', { reason: 'in-flight-elsewhere' });
      return;
    }
    if (!answerable) this.drop('response-copy', from, { type: msg.name, reason: `${replayReason(verdict)} (shared window)` });
    else this.refuse(raw, from, msg.rid, { error: ErrorCode.REPLAY, message: `${replayReason(verdict)} (shared window)` }, session, msg.name, msg.type);
  }

  /**
   * Run the handler of a datagram that passed every check (and, unless `claim` is given, whose
   * sequence number the shared window took), then answer().
   */
  private execute(
    raw: Buffer, from: Address, msg: Message, handler: Handler, session: ServerSession | undefined, fresh: boolean,
    answerable: boolean, claim?: DeferredClaim,
  ): Promise<void> | undefined {
    if (session && fresh) {
      // From here on the request works on the held session (its window, its send sequence).
      session = this.opts.sessions!.commit(session);
      this.routability!.opened(session, (msg.body as { ticket?: Uint8Array }).ticket, from);
    }
    const ctx = new Context(msg, raw, from, session, fresh, this.opts.sessions, this.opts.rateLimiter);
    if (session) ctx.addressValidated = this.routability!.isValidated(session, from);
    if (claim) ctx.claim = claim;
    const started = performance.now();
    let out: HandlerResult | Promise<HandlerResult>;
    try {
      out = handler(ctx as never);
    } catch (err) {
      return this.handled(ctx, answerable, started, undefined, true, err);
    }
    if (isPromiseLike(out)) {
      // Only an answer that waits can meet a retransmission of its request meanwhile: the
      // in-flight set keeps such copies out until it is cached (a synchronous one is cached first).
      const key = answerable ? flightKey(msg) : undefined;
      if (key !== undefined) this.inFlight.add(key);
      return Promise.resolve(out).then(
        (result) => {
          if (key !== undefined) this.inFlight.delete(key);
          return this.handled(ctx, answerable, started, result, false);
        },
        (err: unknown) => {
          if (key !== undefined) this.inFlight.delete(key);
          return this.handled(ctx, answerable, started, undefined, true, err);
        },
      );
    }
    return this.handled(ctx, answerable, started, out, false);
  }

  /**
   * The handler is done (`result`, or it threw `err`): answer, unless the claim left to it
   * (ctx.claim) was refused. A claim still pending (the handler answered without its store) is
   * taken first, whatever the answer, so that the wire sees what a claim before the handler gives:
   * a number taken elsewhere is refused (or dropped) before a challenge or a "try again", which
   * give it back (answer()).
   */
  private handled(
    ctx: Context, answerable: boolean, started: number,
    result: HandlerResult | undefined, threw: boolean, err?: unknown,
  ): Promise<void> | undefined {
    const { raw, from, msg, session, claim } = ctx;
    const unvalidated = ctx.addressValidated === false;
    // Refused in the handler's store (which then threw ClaimRefused): as if refused before it.
    if (claim?.state === 'refused') {
      this.claimRefused(raw, from, msg, session!, answerable, claim.verdict as Exclude<ClaimVerdict, 'ok'>);
      return undefined;
    }
    const out = threw ? this.handlerFailure(msg, err) : result!;
    if (claim?.state === 'pending') return this.afterClaim(claim, raw, from, msg, session!, answerable, () => this.answer(raw, from, msg, session, unvalidated, answerable, started, out));
    this.answer(raw, from, msg, session, unvalidated, answerable, started, out);
    return undefined;
  }

  /**
   * Refuse a datagram that did not decode, in the documented order of checks: the request ID
   * whenever it can be read (decoded, or peeked when the CBOR itself was refused); a type this
   * server does not serve before the session part; and, for a session message of a known session
   * whose body is bad, the MAC before the body: BAD_MAC if it fails, else the refusal MACed.
   */
  private refuseUndecoded(raw: Buffer, from: Address, dec: Extract<DecodeOutcome, { ok: false }>, triedRemote: boolean): Promise<void> | undefined {
    const rid = dec.rid ?? peekEnvelope(raw).rid ?? ZERO_RID;
    if (!this.unproven(raw, from, rid, dec.type)) return undefined;
    const spec = dec.type === undefined ? undefined : specOf(dec.type);
    if (spec && dec.code !== ErrorCode.UNKNOWN_TYPE && (!this.opts.handlers[spec.name] || (spec.auth === 'session' && !this.opts.sessions))) {
      this.refuse(raw, from, rid, { error: ErrorCode.UNKNOWN_TYPE, message: `${spec.name} is not served by ${this.opts.service}` }, undefined, spec.name, dec.type);
      return undefined;
    }
    const sessions = this.opts.sessions;
    if (spec && dec.auth && sessions) {
      const auth = sessions.authenticateKnown(dec.auth, raw);
      if (!auth.ok && auth.code === ErrorCode.NO_SESSION && sessions.hasRemote && !triedRemote) {
        return sessions.fetch(Buffer.from(dec.auth.sid).toString('hex')).then(
          (found) => (found ? this.process(raw, from, true) : this.refuse(raw, from, rid, { error: dec.code, message: dec.reason }, undefined, 'decode', dec.type)),
          (err: unknown) => this.refuse(raw, from, rid, this.storeRefusal(err, 'session store'), undefined, spec.name),
        );
      }
      if (!auth.ok && auth.code === ErrorCode.BAD_MAC) {
        this.refuse(raw, from, rid, { error: auth.code, message: auth.reason }, undefined, spec.name, dec.type);
        return undefined;
      }
      if (auth.ok) {
        // Nothing was executed and the sequence number is not taken (no state moves for a
        // datagram that is refused before its handler), as for REPLAY.
        this.refuse(raw, from, rid, { error: dec.code, message: dec.reason }, auth.session, 'decode', dec.type);
        return undefined;
      }
    }
    this.refuse(raw, from, rid, { error: dec.code, message: dec.reason }, undefined, 'decode', dec.type);
    return undefined;
  }

  /**
   * Charge the shared budget of datagrams that prove nothing (see the top of the file). True:
   * go on. False: the budget is empty, the datagram was dropped, answered with RATE_LIMITED
   * only while the (also shared) notification budget lasts.
   */
  private unproven(raw: Buffer, from: Address, rid: Uint8Array | undefined, type: number | undefined): boolean {
    const limiter = this.opts.rateLimiter;
    if (!limiter || limiter.takeShared('unproven', UNPROVEN_BUDGET_FACTOR)) return true;
    this.opts.metrics.inc('dropped_total', { reason: 'unproven-budget' });
    this.opts.logger.refusal('drop:unproven-budget', { from: formatAddress(from), reason: 'unproven-budget' });
    if (!isResponseType(type) && limiter.takeShared('notify', 1)) {
      this.opts.metrics.inc('refused_total', { code: errorName(ErrorCode.RATE_LIMITED) });
      this.sendRefusal(raw, from, rid ?? ZERO_RID, { error: ErrorCode.RATE_LIMITED, message: 'busy', retryAfterMs: 1000 });
    }
    return false;
  }

  /** A proven request over its source's limit: RATE_LIMITED (the sequence number is not spent). */
  private rateLimited(raw: Buffer, from: Address, msg: Message, session: ServerSession): void {
    const limiter = this.opts.rateLimiter!;
    // Answers to one source are bounded too (a terminal that keeps sending gets some of them).
    if (!limiter.take(`notify:${from.ip}`)) {
      this.opts.metrics.inc('dropped_total', { reason: 'rate-limited' });
      return;
    }
    this.refuse(raw, from, msg.rid, { error: ErrorCode.RATE_LIMITED, retryAfterMs: limiter.retryAfterMs(from.ip) }, session, msg.name, msg.type);
  }

  /** The refusal for a handler's exception. */
  private handlerFailure(msg: Message, err: unknown): Refusal {
    if (err instanceof DevlocError) {
      return { error: err.code, message: err.message, ...(err.retryAfterMs !== undefined ? { retryAfterMs: err.retryAfterMs } : {}) };
    }
    this.opts.logger.error('handler failed', { type: msg.name, err: String((err as Error)?.stack ?? err) });
    return { error: ErrorCode.INTERNAL, message: 'internal error' };
  }

  /** After the handler: take the sequence number, reply (bounded), cache what was sent. */
  private answer(
    raw: Buffer, from: Address, msg: Message, session: ServerSession | undefined, unvalidated: boolean,
    answerable: boolean, started: number, handled: HandlerResult,
  ): void {
    const { metrics, logger } = this.opts;
    let result = handled;
    const now = performance.now();
    metrics.observe('request_duration_seconds', 'Time to handle a request', (now - started) / 1e3);
    // A response (`answerable` false: an ack of a push, PROBE_ACK, REVOKE_ACK) is never answered,
    // also when its handler refuses it (an ended session's ack, a store failure): the refusal is
    // counted and logged below, and nothing is built for it (no MAC, no server sequence number spent).
    // A refusal by the handler is an answer too: MACed, and to an unvalidated address only when it
    // is no larger than the request (built here once, so its sequence number is taken once).
    let refusal: Buffer | null | undefined;
    if (answerable && session && unvalidated && result !== null && result !== NEEDS_VALIDATION && !Buffer.isBuffer(result)) refusal = this.errorReply(raw, msg.rid, result, session);
    if (answerable && session && unvalidated && (result === NEEDS_VALIDATION || (Buffer.isBuffer(result) && result.length > raw.length) || (refusal != null && refusal.length > raw.length))) {
      // Executable again once the address is validated: the number is not spent (as "try again").
      if (msg.auth) this.releaseShared(session, msg.auth.seq, msg.name);
      this.challenge(from, msg, session, result === NEEDS_VALIDATION ? 'binding' : refusal ? 'larger refusal' : 'larger answer');
      return;
    }
    if (Buffer.isBuffer(result) && result.length > MAX_DATAGRAM) {
      // A handler bug: the terminal would drop it anyway. Say so on both sides.
      logger.error('reply too large', { type: msg.name, bytes: result.length, max: MAX_DATAGRAM });
      result = { error: ErrorCode.INTERNAL, message: 'reply too large' };
    }
    const tryAgain = !Buffer.isBuffer(result) && result !== null && (result.error === ErrorCode.TRY_LATER || result.error === ErrorCode.RATE_LIMITED);
    if (session && msg.auth && !tryAgain) session.window.accept(msg.auth.seq);
    else if (session && msg.auth) this.releaseShared(session, msg.auth.seq, msg.name);
    let reply: Buffer | null;
    if (result === null) reply = null;
    else if (Buffer.isBuffer(result)) reply = result;
    else {
      metrics.inc('refused_total', { code: errorName(result.error) });
      logger.refusal(`${msg.name}:${errorName(result.error)}`, { from: formatAddress(from), type: msg.name, code: errorName(result.error), reason: result.message });
      reply = !answerable ? null : refusal !== undefined ? refusal : this.errorReply(raw, msg.rid, result, session);
    }
    if (Buffer.isBuffer(result) || result === null) this.requestsOk(msg.name).inc();
    else metrics.inc('requests_total', { type: msg.name, result: errorName(result.error) });
    if (reply && !session && reply.length > raw.length) {
      this.drop('amplification', from, { type: msg.name, reply: reply.length, request: raw.length });
      reply = null;
    }
    if (!answerable && result !== null) {
      this.opts.metrics.inc('dropped_total', { reason: 'response-not-answered' });
      reply = null;
    }
    // Errors that say "try again" are not cached: the retry should be executed. What is cached
    // is what was sent, so a retransmission never gets what the first copy could not. A response
    // has no cache key (nothing answers it).
    if (!tryAgain && answerable) this.replies.remember(msg.auth?.sid, msg.rid, raw, from.ip, from.port, reply, now);
    if (reply) this.send(reply, from);
  }

  /** Executable again: give the number back to the shared window (if any) too. */
  private releaseShared(session: ServerSession, seq: number, type: string): void {
    this.opts.sessions!.release(session, seq).catch((err: unknown) => {
      this.opts.logger.refusal('replay-window-release', { type, err: (err as Error)?.message ?? String(err) });
    });
  }

  /**
   * Instead of an answer the unvalidated address may not get: ADDR_CHALLENGE (at most one per
   * CHALLENGE_GAP_MS per session and address), nothing cached, the sequence number not spent.
   */
  private challenge(from: Address, msg: Message, session: ServerSession, why: string): void {
    const { metrics, logger } = this.opts;
    metrics.inc('requests_total', { type: msg.name, result: 'ADDR_CHALLENGE' });
    logger.refusal(`${msg.name}:ADDR_CHALLENGE`, { from: formatAddress(from), type: msg.name, reason: `address not validated for the session (${why})` });
    const body = this.routability!.challenge(session, from);
    if (!body) {
      metrics.inc('dropped_total', { reason: 'challenge-suppressed' });
      return;
    }
    metrics.inc('addr_challenges_total');
    this.send(this.opts.sessions!.encode(session, 'ADDR_CHALLENGE', msg.rid, body), from);
  }

  /** ADDR_PROOF: validates its source for the session named, when the token is right. Never answered. */
  private addrProof(body: Bodies['ADDR_PROOF'], from: Address): void {
    const sidHex = Buffer.from(body.sid).toString('hex');
    const sessions = this.opts.sessions!;
    const held = sessions.get(sidHex);
    // The token is checked once, and only when some process may hold the session.
    const tokenOk = (held !== undefined || sessions.hasRemote) && this.routability!.tokenMatches(body, from);
    if (!held && tokenOk) {
      // The challenge came from another worker of this port or another instance: the session is
      // in the shared store (REGISTER stores it before it challenges).
      const proveNow = (): void => this.proveAddress(sessions.get(sidHex), true, from);
      void sessions.fetch(sidHex).then(proveNow, proveNow);
      return;
    }
    this.proveAddress(held, tokenOk, from);
  }

  private proveAddress(session: ServerSession | undefined, tokenOk: boolean, from: Address): void {
    const ok = this.routability!.prove(session, tokenOk, from);
    this.opts.metrics.inc('addr_proofs_total', { result: ok ? 'ok' : 'bad' });
    if (!ok) this.opts.logger.refusal('ADDR_PROOF:bad', { from: formatAddress(from), reason: 'token not made for this session and address' });
  }

  /** Send `bytes` to `to`, counting it. Never throws (a reply finishing after close() is dropped). */
  send(bytes: Buffer, to: Address): void {
    if (this.closed) {
      this.opts.metrics.inc('dropped_total', { reason: 'closed' });
      return;
    }
    this.sent.inc();
    try {
      // A callback is still needed: without one, node:dgram neither reports nor emits a failed
      // send, and send errors are counted.
      this.socket.send(bytes, to.port, to.ip, this.afterSend);
    } catch {
      this.sendErrors.inc();
    }
  }

  private drop(reason: string, from: Address, fields: Record<string, unknown>): void {
    this.opts.metrics.inc('dropped_total', { reason });
    this.opts.logger.refusal(`drop:${reason}`, { from: formatAddress(from), reason, ...fields });
  }

  private refuse(raw: Buffer, from: Address, rid: Uint8Array, r: Refusal, session: ServerSession | undefined, what: string, type?: number): void {
    this.opts.metrics.inc('refused_total', { code: errorName(r.error) });
    this.opts.logger.refusal(`${what}:${errorName(r.error)}`, { from: formatAddress(from), code: errorName(r.error), reason: r.message, ...(r.detail ? { detail: r.detail } : {}) });
    if (isResponseType(type ?? peekEnvelope(raw).type)) {
      // Logged and counted, but a response (an ERROR above all) is never answered.
      this.opts.metrics.inc('dropped_total', { reason: 'response-not-answered' });
      return;
    }
    // Refusals made here answer datagrams that executed nothing (replays included: a replayed
    // MAC proves nothing about the source), so they never exceed the request either. A MACed
    // ERROR is preferred; when it would be larger, the unauthenticated one, which the terminal
    // accepts for a pending request ID, still tells it what happened.
    if (session) {
      const reply = this.errorReply(raw, rid, r, session);
      if (reply && reply.length <= raw.length) {
        this.send(reply, from);
        return;
      }
    }
    this.sendRefusal(raw, from, rid, r);
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
    if (r.message) body.message = truncateUtf8(r.message, ERROR_MESSAGE_MAX_BYTES);
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
    if (this.closed) return Promise.resolve();
    this.closed = true;
    clearInterval(this.purgeTimer);
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
  const { lookup, bound } = serverLookup();
  const socket = dgram.createSocket({ type: o.host.includes(':') ? 'udp6' : 'udp4', reuseAddr: false, lookup });
  return new Promise((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(o.port, o.host, () => {
      bound();
      socket.off('error', reject);
      if (o.receiveBufferBytes) socket.setRecvBufferSize(o.receiveBufferBytes);
      resolve(socket);
    });
  });
}

export type { Message };
