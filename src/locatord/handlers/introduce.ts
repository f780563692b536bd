// INTRODUCE and INTRO_ACK: introductions for direct peer channels (devloc-locatord(8),
// INTRODUCTIONS; devloc-protocol(7), PEER CHANNELS).
//
// A terminal asks to be introduced to a peer by locator ID. If the peer is registered, visible to
// the asker (the rules of QUERY_ADDR) and registered with `reachable`, locatord draws a channel
// ID and a channel key, answers the asker with INTRODUCE_ACK (the peer's observed and LAN
// addresses, network mode, the key sealed under the asker's session) and at the same moment
// pushes INTRO to the peer (the same about the asker, the key sealed under the peer's session),
// so both start punching at once. Otherwise the answer is NOT_FOUND, the same bytes whichever
// reason holds: an introduction tells no more than a lookup does.
//
// INTRO is a confirmable push (net/push.ts, like matchd's MATCH_RESULT), retransmitted until the
// peer's INTRO_ACK with its request ID: every copy is MACed anew (new sequence number, same
// request ID), goes to the peer's address as registered at that moment, and the push is
// abandoned when the peer's registration or session is gone. The
// asker's observed address is the source of its INTRODUCE, i.e. the NAT mapping of the socket it
// registered from; locatord never carries a channel's data.
import { randomBytes } from 'node:crypto';
import type { Logger } from '../../common/log.js';
import type { Metrics } from '../../common/metrics.js';
import type { Timers } from '../../net/client.js';
import type { PushCopy } from '../../net/push.js';
import { pooledRid, Pusher } from '../../net/push.js';
import { RateLimiter } from '../../net/ratelimit.js';
import { NEEDS_VALIDATION } from '../../net/routability.js';
import type { HandlerResult, Refusal, RequestContext } from '../../net/server.js';
import type { ServerSession, ServerSessions } from '../../net/sessions.js';
import type { Address } from '../../wire/addr.js';
import { normaliseIp } from '../../wire/addr.js';
import type { Introduction } from '../../wire/catalog.js';
import { CHANNEL_ID_BYTES, DEFAULT_RETRANSMIT_TIMEOUT_MS, MAX_RETRANSMIT } from '../../wire/constants.js';
import { encodeDatagram } from '../../wire/envelope.js';
import { ErrorCode } from '../../wire/errors.js';
import { CHANNEL_KEY_BYTES, sealChannelKey } from '../../wire/peer.js';
import type { LocatorContext } from '../context.js';
import { chargeLookups } from '../context.js';
import { fromStoredSession } from '../store/embedded.js';
import type { MaybePromise } from '../store/maybe.js';
import { then } from '../store/maybe.js';
import type { LocatorStore } from '../store/types.js';
import { visibleRecords } from './query.js';

/** One message for every reason an introduction cannot be made (offline, unknown, invisible, not reachable). */
export const NOT_INTRODUCED = 'peer is offline, unknown, not visible to you or not accepting introductions';

export interface IntroductionsOptions {
  /**
   * The address to send the next INTRO copy to (the store: `introTarget` below), or undefined
   * when the target's registration is gone or no longer of `session`.
   */
  target: (targetHex: string, session: ServerSession) => Address | undefined | Promise<Address | undefined>;
  sessions: ServerSessions;
  send: (bytes: Buffer, to: Address) => void;
  metrics: Metrics;
  logger: Logger;
  random?: () => number;
  /** First retransmission after a timeout uniform in [T, 1.5T], doubling (default 500 ms: punching waits on it). */
  initialTimeoutMs?: number;
  /** Retransmission timers (tests: a fake clock). */
  timers?: Timers;
  maxRetransmit?: number;
  /** Most pushes waiting for INTRO_ACK, in all and per target. */
  maxPending?: number;
  maxPendingPerTarget?: number;
  /** Introductions per second (and burst) to one target: a terminal cannot be flooded with INTROs. */
  targetRatePerS?: number;
  targetBurst?: number;
}

/** INTRO pushes waiting for their INTRO_ACK (the confirmable push: net/push.ts). */
export class Introductions {
  private readonly pushes: Pusher<ServerSession>;
  private readonly targetLimiter: RateLimiter;

  constructor(private readonly o: IntroductionsOptions) {
    this.targetLimiter = new RateLimiter({ ratePerS: o.targetRatePerS ?? 2, burst: o.targetBurst ?? 10, maxSources: 65_536 });
    const m = o.metrics;
    m.counter('introductions_total', 'INTRODUCE requests, by result');
    m.counter('intro_pushes_total', 'INTRO copies sent (retransmissions included)');
    m.counter('intro_acks_total', 'INTROs acknowledged by their target');
    m.counter('intro_abandoned_total', 'INTRO pushes given up, by reason');
    m.gauge('intro_pending', 'INTRO pushes waiting for INTRO_ACK', () => this.pushes.size);
    this.pushes = new Pusher<ServerSession>({
      send: o.send,
      // Punching waits on it: half the requests' T.
      initialTimeoutMs: o.initialTimeoutMs ?? DEFAULT_RETRANSMIT_TIMEOUT_MS / 2,
      maxRetransmit: o.maxRetransmit ?? MAX_RETRANSMIT,
      maxPending: o.maxPending ?? 10_000,
      maxPendingPerTarget: o.maxPendingPerTarget ?? 8,
      ...(o.random ? { random: o.random } : {}),
      ...(o.timers ? { timers: o.timers } : {}),
      onCopy: () => m.inc('intro_pushes_total'),
      onEnd: (p, outcome) => {
        if ('acked' in outcome) {
          m.inc('intro_acks_total');
          return;
        }
        m.inc('intro_abandoned_total', { reason: outcome.abandoned });
        o.logger.info('introduction not acknowledged', {
          target: p.target, channel: p.key, reason: outcome.abandoned, copies: p.copies,
          ...(outcome.error ? { err: outcome.error.message } : {}),
        });
      },
    });
  }

  get size(): number {
    return this.pushes.size;
  }

  /** A refusal when `targetHex` may not get another introduction now. */
  admit(targetHex: string): Refusal | null {
    if (!this.pushes.hasRoom(targetHex)) {
      return { error: ErrorCode.TRY_LATER, message: 'too many introductions in progress', retryAfterMs: 1000 };
    }
    if (!this.targetLimiter.take(targetHex)) {
      return { error: ErrorCode.TRY_LATER, message: 'too many introductions to this peer', retryAfterMs: Math.max(100, this.targetLimiter.retryAfterMs(targetHex)) };
    }
    return null;
  }

  /** Push INTRO `body` to the terminal of `session` now, and until it acknowledges. */
  push(targetHex: string, session: ServerSession, body: Introduction): void {
    this.pushes.push({
      key: Buffer.from(body.channelId).toString('hex'), target: targetHex, data: session,
      build: (rid) => {
        const to = this.targetAddress(targetHex, session);
        return to instanceof Promise
          ? to.then((a) => this.copy(session, body, rid, a), (): PushCopy => ({ abandon: 'store unavailable' }))
          : this.copy(session, body, rid, to);
      },
    });
  }

  /** Where the target is now, if it is still registered in the push's session. */
  private targetAddress(targetHex: string, session: ServerSession): Address | undefined | Promise<Address | undefined> {
    return this.o.target(targetHex, session);
  }

  private copy(session: ServerSession, body: Introduction, rid: Buffer, to: Address | undefined): PushCopy {
    // The sealed key is for this session: a target that registered anew cannot open it.
    if (!to || !this.o.sessions.live(session)) return { abandon: 'target gone' };
    return { bytes: this.o.sessions.encode(session, 'INTRO', rid, body), to };
  }

  /**
   * INTRO_ACK from `session` for `channelId` (with the INTRO's request ID `rid`, when given): stop
   * the push. False when nothing was pending.
   */
  ack(session: ServerSession, channelId: Uint8Array, rid?: Uint8Array): boolean {
    // Only the target's session can end its push.
    return this.pushes.ack(Buffer.from(channelId).toString('hex'), 'ack', rid, (p) => p.data.sidHex === session.sidHex);
  }

  close(): void {
    this.pushes.close();
  }
}

function definedLocal(a: Address[] | undefined): { localAddrs?: Address[] } {
  return a && a.length > 0 ? { localAddrs: a } : {};
}

/** Both halves of an introduction, sharing a fresh channel ID and key (embedded and store modes). */
export function introduction(x: {
  asker: ServerSession; askerFrom: Address; askerLocalAddrs: Address[] | undefined; askerNetMode: number; askerNickname: string | undefined;
  askerRelayed?: Address | undefined;
  /** The asker's open channel it re-introduces (its relay was replaced or its address changed: INTRODUCE field 5). */
  askerResumes?: Uint8Array | undefined;
  target: Buffer; targetSession: ServerSession; targetAddr: Address; targetLocalAddrs: Address[] | undefined; targetNetMode: number; targetNickname: string | undefined;
}): { toTarget: Introduction; toAsker: Introduction } {
  const channelId = randomBytes(CHANNEL_ID_BYTES);
  const key = randomBytes(CHANNEL_KEY_BYTES);
  // Claimed LAN addresses are passed on only between terminals behind one NAT (the same observed
  // IP): to anyone else they are addresses nobody proved, which the peer would punch for nothing.
  const sameNat = normaliseIp(x.askerFrom.ip) === normaliseIp(x.targetAddr.ip);
  const toTarget: Introduction = {
    channelId, peer: x.asker.locatorId, addr: x.askerFrom, ...(sameNat ? definedLocal(x.askerLocalAddrs) : {}),
    netMode: x.askerNetMode,
    ...(x.askerNickname !== undefined ? { nickname: x.askerNickname } : {}),
    sealedKey: sealChannelKey(x.targetSession.keys, channelId, x.asker.locatorId, key),
    observed: x.targetAddr,
    // The asker's relayed address is passed on as claimed, like its LAN addresses: the target
    // probes it at most like any unanswered candidate (devloc-protocol(7) ADDRESS VALIDATION).
    ...(x.askerRelayed ? { relayed: x.askerRelayed } : {}),
    // Passed on as claimed: only the target's channel with this ID *and this asker* moves.
    ...(x.askerResumes ? { resumes: x.askerResumes } : {}),
  };
  const toAsker: Introduction = {
    channelId, peer: x.target, addr: x.targetAddr, ...(sameNat ? definedLocal(x.targetLocalAddrs) : {}), netMode: x.targetNetMode,
    ...(x.targetNickname !== undefined ? { nickname: x.targetNickname } : {}),
    sealedKey: sealChannelKey(x.asker.keys, channelId, x.target, key),
    observed: x.askerFrom,
  };
  key.fill(0);
  return { toTarget, toAsker };
}

/** For Introductions' `target`: where to send the next INTRO copy, if the target is still registered in that session. */
export function introTarget(store: LocatorStore): (targetHex: string, session: ServerSession) => MaybePromise<Address | undefined> {
  return (targetHex, session) => then(store.getPresence(targetHex), (p) => (p && p.sidHex === session.sidHex ? p.addr : undefined));
}

/**
 * INTRODUCE. The INTRO push goes out over the target's session from the instance the target last
 * spoke to (Presence.inst; with the embedded store, always this one): when that is this
 * instance, it pushes; otherwise (Redis) this instance seals the target's half with the target's
 * session keys from Redis and asks the owner, through the relay (store/relay.ts), to push it,
 * answering the asker once the owner agreed (devloc-locatord(8), SEVERAL INSTANCES).
 */
export async function introduce(c: LocatorContext, ctx: RequestContext<'INTRODUCE'>): Promise<HandlerResult> {
  const { sessions, introductions: intros } = c;
  const asker = ctx.session!;
  const b = ctx.msg.body;
  const target = Buffer.from(b.target);
  const targetHex = target.toString('hex');
  const result = (r: string): void => c.metrics.inc('introductions_total', { result: r });
  // The asker's address is its INTRODUCE's source, handed to the peer to punch: proven first.
  if (ctx.addressValidated === false) {
    result('unvalidated');
    return NEEDS_VALIDATION;
  }
  if (targetHex === asker.locatorHex) {
    result('self');
    return { error: ErrorCode.BAD_MESSAGE, message: 'cannot introduce a terminal to itself' };
  }
  // An introduction reveals the target's address like a lookup: it is charged like one.
  const limited = chargeLookups(c, ctx.from.ip, asker.locatorHex, 1);
  if (limited) {
    result('rate-limited');
    return limited;
  }
  const notFound = (why: string): Refusal => {
    result(why);
    return { error: ErrorCode.NOT_FOUND, message: NOT_INTRODUCED };
  };
  const [[rec], askerRec] = await Promise.all([visibleRecords(c, [target], asker), c.store.getPresence(asker.locatorHex)]);
  if (!rec || !rec.reachable) return notFound('not-found');
  const owner = rec.inst !== undefined && rec.inst !== c.store.instanceId && c.store.relayIntro ? rec.inst : undefined;
  let targetSession: ServerSession | undefined;
  if (owner) {
    const stored = await c.store.loadSession(rec.sidHex);
    targetSession = stored ? fromStoredSession(stored) : undefined;
  } else {
    if (!sessions.get(rec.sidHex)) await sessions.fetch(rec.sidHex);
    targetSession = sessions.get(rec.sidHex);
  }
  if (!targetSession || targetSession.locatorHex !== targetHex) return notFound('not-found');
  if (!owner) {
    const busy = intros.admit(targetHex);
    if (busy) {
      result('busy');
      return busy;
    }
  }
  const { toTarget, toAsker } = introduction({
    asker, askerFrom: ctx.from, askerLocalAddrs: b.localAddrs ?? askerRec?.extra?.localAddrs, askerNetMode: b.netMode ?? askerRec?.netMode ?? 0,
    askerNickname: askerRec?.nickname, askerRelayed: b.relayed, askerResumes: b.resumes, target, targetSession, targetAddr: rec.addr, targetLocalAddrs: rec.extra?.localAddrs,
    targetNetMode: rec.netMode, targetNickname: rec.nickname,
  });
  if (owner) {
    // The owner MACs it in the target's session: sent there with auth naming the session, no MAC.
    // The owner pushes it under its own request ID: this one only has to be well formed (pooled).
    const intro = encodeDatagram('INTRO', pooledRid(), toTarget, { sid: targetSession.sid, seq: 0 });
    const r = await c.store.relayIntro!(owner, targetHex, intro);
    if (r === 'busy') {
      result('busy');
      return { error: ErrorCode.TRY_LATER, message: 'too many introductions in progress', retryAfterMs: 1000 };
    }
    if (r !== 'ok') return notFound('not-found-elsewhere');
    result('ok-relayed');
    return ctx.reply('INTRODUCE_ACK', toAsker);
  }
  intros.push(targetHex, targetSession, toTarget);
  result('ok');
  return ctx.reply('INTRODUCE_ACK', toAsker);
}

/** The target's receipt of an INTRO: ends the push; nothing is sent back. */
export function introAck(c: LocatorContext, ctx: RequestContext<'INTRO_ACK'>): HandlerResult {
  c.introductions.ack(ctx.session!, ctx.msg.body.channelId, ctx.msg.rid);
  return null;
}
