// devloc-matchd wiring: a DatagramServer with session authentication (tickets for this
// service's audience), the MATCH_* handlers, the matching engine, result delivery (whose
// retransmissions run on their own timers) and the tick that drives widening and deadlines. `startMatchd` runs it in-process (tests,
// `devloc demo`); main.ts turns the daemon configuration into its options.
//
// Everything here is soft state: a restart loses the waiting requests and the sessions, so a
// terminal's next datagram gets NO_SESSION and it submits again with its ticket.
import type dgram from 'node:dgram';
import type { KeyObject } from 'node:crypto';
import { randomBytes } from 'node:crypto';
import { Logger } from '../common/log.js';
import { Metrics } from '../common/metrics.js';
import type { Timers } from '../net/client.js';
import { RateLimiter } from '../net/ratelimit.js';
import { AddressValidation, NEEDS_VALIDATION, tokenKeyFrom } from '../net/routability.js';
import type { HandlerResult, Refusal, RequestContext } from '../net/server.js';
import { bindUdp, DatagramServer } from '../net/server.js';
import { acceptRevoke, EndedSessions, gateHandlers } from '../net/ended.js';
import type { ServerSession } from '../net/sessions.js';
import { ServerSessions } from '../net/sessions.js';
import type { Address } from '../wire/addr.js';
import { formatAddress, normaliseIp } from '../wire/addr.js';
import { MatchPath, matchPathNames } from '../wire/connectivity.js';
import type { SessionAuth } from '../wire/envelope.js';
import type { Bodies } from '../wire/catalog.js';
import { MatchState } from '../wire/catalog.js';
import { DEFAULT_CLOCK_SKEW_S, DEFAULT_PORTS } from '../wire/constants.js';
import { ErrorCode } from '../wire/errors.js';
import { TicketVerifier } from '../wire/ticket.js';
import type { Contact } from './contacts.js';
import { Contacts } from './contacts.js';
import { Delivery, resultBody } from './delivery.js';
import type { ContactRequest } from './delivery.js';
import type { EngineOptions } from './engine.js';
import { MatchEngine } from './engine.js';

export type EngineTuning = Partial<Omit<EngineOptions, 'now' | 'newId' | 'onFinished'>>;

export interface MatchdOptions {
  /** Address to bind (default 127.0.0.1 in-process; the daemon's default is 0.0.0.0). */
  host?: string;
  /** UDP port (default 4703; 0 = ephemeral). */
  port?: number;
  /** Use this bound socket instead of binding one. */
  socket?: dgram.Socket;
  receiveBufferBytes?: number;
  /** This service's ID: the audience of the tickets accepted (the service key file's `service`). */
  service: string;
  /** Our X25519 secret (service key `seal`). */
  serviceSecret: KeyObject;
  /** Trusted authd signing keys by kid (hex). */
  trustedKeys: Map<string, KeyObject>;
  clockSkewS?: number;
  /** How far a session-opening MATCH_SUBMIT's timeMs may be from our clock, ms (default 120 s). */
  freshnessMs?: number;
  /** Milliseconds since the epoch (tests pass a fake clock; it drives tickets, sessions and matching). */
  now?: () => number;
  random?: () => number;
  /** Tick period, ms; 0 = no timer (tests call `tick()`). */
  tickMs?: number;
  /** Timers of the MATCH_RESULT retransmissions (tests: a fake clock; default the real ones). */
  timers?: Timers;
  engine?: EngineTuning;
  push?: { initialTimeoutMs?: number; maxRetransmit?: number };
  /** Per-source rate limit; ratePerS 0 disables it. */
  rate?: { ratePerS: number; burst: number };
  /** Per-terminal MATCH_SUBMIT limits (default DEFAULT_SUBMIT_LIMITS; see submitGate). */
  submitLimits?: SubmitLimits;
  maxSessions?: number;
  logger?: Logger;
  metrics?: Metrics;
}

export interface Matchd {
  readonly port: number;
  readonly address: Address;
  readonly engine: MatchEngine<Contact>;
  readonly sessions: ServerSessions;
  readonly verifier: TicketVerifier;
  readonly server: DatagramServer;
  readonly delivery: Delivery;
  readonly contacts: Contacts;
  readonly metrics: Metrics;
  readonly logger: Logger;
  /** Sessions ended before their ticket expired (kick): answered with the reason (net/ended.ts). */
  readonly ended: EndedSessions;
  /** Run one tick now (the timer calls this every tickMs). */
  tick(): void;
  /** Replace the trusted authd keys; sessions opened with tickets of removed keys are dropped. Returns how many. */
  setTrustedKeys(keys: Map<string, KeyObject>): number;
  setRate(ratePerS: number, burst: number): void;
  /** Change engine tuning (widening, limits) at run time. */
  tune(t: EngineTuning): void;
  stop(): Promise<void>;
}

/**
 * MATCH_SUBMITs of one terminal (locator ID, whatever its sessions or addresses): a bucket of
 * `burst` refilled one per `intervalMs`, and after one of its requests ends matched none for
 * `cooldownMs`. Issue 15: a terminal camping a media ID was matched with every arrival and
 * collected 5 partners' IDs in 0.6 s; with these it collects at most one party per cool-down.
 * intervalMs 0 turns the bucket off, cooldownMs 0 the cool-down.
 */
export interface SubmitLimits {
  intervalMs: number;
  burst: number;
  cooldownMs: number;
}
export const DEFAULT_SUBMIT_LIMITS: SubmitLimits = { intervalMs: 5_000, burst: 3, cooldownMs: 10_000 };

type MatchMessage = 'MATCH_SUBMIT' | 'MATCH_STATUS' | 'MATCH_CANCEL' | 'MATCH_RESULT_ACK';

const hex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.length).toString('hex');

export async function startMatchd(o: MatchdOptions): Promise<Matchd> {
  const now = o.now ?? Date.now;
  const random = o.random ?? Math.random;
  const logger = o.logger ?? new Logger({ service: 'matchd', level: 'warn' });
  const metrics = o.metrics ?? new Metrics();
  const verifier = new TicketVerifier({
    keys: o.trustedKeys, audience: o.service, clockSkewS: o.clockSkewS ?? DEFAULT_CLOCK_SKEW_S, now: () => Math.floor(now() / 1000),
  });
  const sessions = new ServerSessions({
    verifier, serviceSecret: o.serviceSecret, now,
    ...(o.maxSessions ? { maxSessions: o.maxSessions } : {}),
    ...(o.freshnessMs ? { freshnessMs: o.freshnessMs } : {}),
  });
  /** kid of the ticket that opened each session, so a SIGHUP that distrusts a key can drop them. */
  const kidOfSession = new Map<string, string>();
  const contacts = new Contacts();
  const socket = o.socket ?? (await bindUdp({ host: o.host ?? '127.0.0.1', port: o.port ?? DEFAULT_PORTS.matchd, receiveBufferBytes: o.receiveBufferBytes ?? 0 }));
  // Always present so a reload can turn limiting on; a rate of 0 lets everything through.
  const rateLimiter = new RateLimiter({ ratePerS: o.rate?.ratePerS ?? 0, burst: o.rate?.burst ?? 1, now });
  const submitLimits = o.submitLimits ?? DEFAULT_SUBMIT_LIMITS;

  metrics.counter('match_submits_total', 'MATCH_SUBMIT requests accepted');
  metrics.counter('match_submit_refusals_total', 'MATCH_SUBMITs refused by the per-terminal limits, by reason (rate, cooldown)');
  metrics.counter('match_replaced_total', 'Waiting requests replaced by a newer submit of the same terminal');
  metrics.counter('match_formed_total', 'Parties formed');
  metrics.counter('match_matched_total', 'Requests ended matched (members of formed parties)');
  metrics.counter('match_no_match_total', 'Requests ended without a match at their deadline');
  metrics.counter('match_relayed_members_total', 'Members of formed parties whose path to the host is a TURN relay');
  metrics.counter('match_cancels_total', 'MATCH_CANCEL requests, by the state answered');
  metrics.counter('revocations_total', 'REVOKEs from authd applied (repeats included)');
  metrics.gauge('match_waiting', 'Requests waiting', () => engine.waiting);
  metrics.gauge('match_media_ids', 'Media IDs with waiting requests', () => engine.mediaCount);
  metrics.gauge('sessions', 'Open sessions', () => sessions.size);

  // Declared before the engine: the engine reports ended requests to it.
  let server: DatagramServer;
  const delivery = new Delivery({
    sessions, random,
    send: (bytes, to) => server.send(bytes, to),
    ...(o.push?.initialTimeoutMs !== undefined ? { initialTimeoutMs: o.push.initialTimeoutMs } : {}),
    ...(o.push?.maxRetransmit !== undefined ? { maxRetransmit: o.push.maxRetransmit } : {}),
    ...(o.timers ? { timers: o.timers } : {}),
    metrics, logger,
  });

  const engine = new MatchEngine<Contact>({
    ...o.engine,
    now,
    newId: () => randomBytes(8),
    onFinished: (req) => {
      const r = req as ContactRequest;
      if (r.state === MatchState.MATCHED) {
        metrics.inc('match_matched_total');
        if (submitLimits.cooldownMs > 0) r.contact.coolUntilMs = now() + submitLimits.cooldownMs;
        if (r.party && r.party.members[0] === r) {
          metrics.inc('match_formed_total');
          logger.info('match formed', {
            mediaId: r.mediaId, size: r.party.members.length, host: r.party.host,
            members: r.party.members.map((m) => m.locatorHex),
            waitedMs: r.party.members.map((m) => r.party!.formedAtMs - m.submittedAtMs),
            paths: r.party.paths.map((p) => matchPathNames[p] ?? 'host'),
          });
          const relayed = r.party.paths.filter((p) => p === MatchPath.RELAY).length;
          if (relayed) metrics.inc('match_relayed_members_total', {}, relayed);
        }
      } else {
        metrics.inc('match_no_match_total');
        logger.debug('no match', { matchId: r.idHex, locator: r.locatorHex, mediaId: r.mediaId, ...(r.noPath ? { noPath: true } : {}) });
      }
      delivery.push(r);
    },
  });

  /**
   * Every handler: only from an address validated for the session (net/routability.ts), as it
   * becomes where partners and MATCH_RESULT find the terminal; from another the server sends
   * ADDR_CHALLENGE instead (a MATCH_RESULT_ACK is dropped).
   */
  const validated = <N extends MatchMessage>(h: (ctx: RequestContext<N>) => HandlerResult) =>
    (ctx: RequestContext<N>): HandlerResult => (ctx.addressValidated === false ? NEEDS_VALIDATION : h(ctx));

  /** Every handler: note where the terminal is now. */
  const touch = <N extends MatchMessage>(ctx: RequestContext<N>): { session: ServerSession; contact: Contact } => {
    const session = ctx.session!;
    const auth = (ctx.msg as { auth?: SessionAuth }).auth;
    const contact = contacts.touch(session, ctx.from, auth?.seq ?? 0, now());
    return { session, contact };
  };

  /** The per-terminal MATCH_SUBMIT limits (SubmitLimits): a refusal, or null after taking a token. */
  const submitGate = (c: Contact, from: Address): Refusal | null => {
    const t = now();
    const L = submitLimits;
    const refuse = (reason: 'rate' | 'cooldown', retryAfterMs: number): Refusal => {
      metrics.inc('match_submit_refusals_total', { reason });
      logger.refusal(`submit-${reason}`, { locator: c.locatorHex, from: formatAddress(from), retryAfterMs });
      return { error: ErrorCode.RATE_LIMITED, message: reason === 'rate' ? 'too many MATCH_SUBMITs' : 'matched recently: submit again later', retryAfterMs };
    };
    if (c.coolUntilMs !== undefined && t < c.coolUntilMs) return refuse('cooldown', c.coolUntilMs - t);
    if (L.intervalMs > 0) {
      const tokens = Math.min(L.burst, (c.submitTokens ?? L.burst) + Math.max(0, t - (c.submitAtMs ?? t)) / L.intervalMs);
      if (tokens < 1) return refuse('rate', Math.ceil((1 - tokens) * L.intervalMs));
      c.submitTokens = tokens - 1;
      c.submitAtMs = t;
    }
    return null;
  };

  const ended = new EndedSessions(100_000, now);
  server = new DatagramServer({
    service: 'matchd', socket, logger, metrics, sessions,
    addressValidation: new AddressValidation({ key: tokenKeyFrom(o.serviceSecret) }),
    rateLimiter,
    handlers: gateHandlers({
      MATCH_SUBMIT: validated((ctx) => {
        const { session, contact } = touch(ctx);
        const b = ctx.msg.body;
        if (ctx.freshSession && b.ticket) {
          const v = verifier.verify(b.ticket); // cached: no second signature check
          if (v.ok) kidOfSession.set(session.sidHex, v.kid);
        }
        const refused = submitGate(contact, ctx.from);
        if (refused) return refused;
        const hadOpen = engine.openOf(session.locatorHex) !== undefined;
        const req = engine.submit({
          locatorId: session.locatorId, mediaId: b.mediaId, minParty: b.minParty, maxParty: b.maxParty,
          netMode: b.netMode, maxWaitS: b.maxWaitS, contact, notAfterMs: session.exp * 1000,
          natKey: normaliseIp(ctx.from.ip), ...(b.relay ? { relay: b.relay } : {}),
          ...(b.appType !== undefined ? { appType: b.appType } : {}),
          ...(b.attrs !== undefined ? { attrs: b.attrs } : {}),
          ...(b.requirements !== undefined ? { requirements: b.requirements } : {}),
          ...(b.nickname !== undefined ? { nickname: b.nickname } : {}),
          ...(b.visibility === 1 ? { alias: randomBytes(16) } : {}),
        });
        metrics.inc('match_submits_total');
        if (hadOpen) metrics.inc('match_replaced_total');
        logger.debug('submit', { matchId: req.idHex, locator: session.locatorHex, mediaId: req.mediaId, from: formatAddress(ctx.from) });
        return ctx.reply('MATCH_SUBMIT_ACK', { matchId: req.id, deadlineS: Math.ceil(req.deadlineMs / 1000) });
      }),
      MATCH_STATUS: validated((ctx) => {
        const { session } = touch(ctx);
        const r = engine.find(hex(ctx.msg.body.matchId), session.locatorHex);
        if (!r) return { error: ErrorCode.NOT_FOUND, message: 'no such match request (ended long ago, or matchd restarted: submit again)' };
        if (r.state === MatchState.MATCHED || r.state === MatchState.NO_MATCH) delivery.ack(r.idHex, 'poll');
        return ctx.reply('MATCH_STATUS_RESULT', resultBody(r as ContactRequest));
      }),
      MATCH_CANCEL: validated((ctx) => {
        const { session } = touch(ctx);
        const r = engine.cancel(hex(ctx.msg.body.matchId), session.locatorHex);
        if (!r) return { error: ErrorCode.NOT_FOUND, message: 'no such match request' };
        metrics.inc('match_cancels_total', { state: String(r.state) });
        const body: Bodies['MATCH_CANCEL_ACK'] = resultBody(r as ContactRequest);
        if (r.state === MatchState.MATCHED || r.state === MatchState.NO_MATCH) delivery.ack(r.idHex, 'cancel');
        return ctx.reply('MATCH_CANCEL_ACK', body);
      }),
      MATCH_RESULT_ACK: validated((ctx) => {
        const { session } = touch(ctx);
        const r = engine.find(hex(ctx.msg.body.matchId), session.locatorHex);
        if (r) delivery.ack(r.idHex, 'ack', ctx.msg.rid);
        return null; // the ack answers our push; nothing answers an answer
      }),
      // authd revoked the terminal's device (issue 19): its request goes, its sessions end.
      REVOKE: (ctx) => {
        const a = acceptRevoke(ctx, verifier, ended, logger, now());
        if ('error' in a) return a;
        const open = engine.openOf(a.locatorHex);
        const cancelled = open ? engine.cancel(open.idHex, a.locatorHex) !== undefined : false;
        metrics.inc('revocations_total');
        logger.info('revoked', { locatorId: a.locatorHex, requestCancelled: cancelled, untilMs: a.untilMs });
        return ctx.reply('REVOKE_ACK', {});
      },
    }, ended),
  });

  const purgeEveryMs = 10_000;
  let lastPurge = now();
  const tick = (): void => {
    engine.tick();
    const t = now();
    if (t - lastPurge >= purgeEveryMs) {
      lastPurge = t;
      contacts.purge(t - (engine.opts.maxWaitMs + engine.opts.retentionMs + delivery.lifetimeMs + 60_000));
      for (const sid of kidOfSession.keys()) if (!sessions.get(sid)) kidOfSession.delete(sid);
    }
  };
  const timer = o.tickMs === 0 ? undefined : setInterval(tick, o.tickMs ?? 250);
  timer?.unref?.();

  const addr = socket.address();
  logger.info('listening', { port: addr.port, host: addr.address, service: o.service });
  return {
    port: addr.port,
    address: { ip: addr.address, port: addr.port },
    engine, sessions, verifier, server, delivery, contacts, metrics, logger, ended,
    tick,
    setTrustedKeys(keys) {
      verifier.setKeys(keys);
      const dropped = sessions.dropWhere((s) => {
        const kid = kidOfSession.get(s.sidHex);
        return kid === undefined || !keys.has(kid);
      });
      for (const sid of [...kidOfSession.keys()]) if (!sessions.get(sid)) kidOfSession.delete(sid);
      return dropped;
    },
    setRate(ratePerS, burst) {
      rateLimiter.setRate(ratePerS, burst);
    },
    tune(t) {
      engine.tune(t);
    },
    async stop() {
      if (timer) clearInterval(timer);
      delivery.close();
      engine.clear();
      await server.close();
    },
  };
}
