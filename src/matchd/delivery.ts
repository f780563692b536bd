// Delivery of results: when a request ends (matched, or no match by its deadline) matchd pushes
// MATCH_RESULT to the terminal's observed address, MACed in its session, and retransmits until
// the terminal answers MATCH_RESULT_ACK.
//
// - Each result gets a fresh random request ID (rid). Every copy carries the same rid but a new
//   session sequence number (each copy is MACed anew), so a terminal's replay window accepts
//   it and the terminal acknowledges every copy it gets (it deduplicates by matchId).
// - Schedule (CoAP-like, as for requests): the first retransmission after a timeout uniform in
//   [T, 1.5T], doubling, at most `maxRetransmit` retransmissions; then the push is abandoned and
//   the result stays available to MATCH_STATUS until it is forgotten (retention). Retransmissions
//   run on matchd's tick, so their timing is accurate to one tick.
// - Each copy goes to the terminal's address as known at that moment (contacts.ts), so a
//   terminal whose NAT mapping changed gets it after its next datagram to matchd.
// - MATCH_RESULT_ACK is itself the answer to the push (type 0x67 = 0x66 + 1): matchd sends
//   nothing back. A lost ack costs one more copy, which the terminal acks again.
// - A MATCH_STATUS or MATCH_CANCEL answered with the final result also ends the push: the
//   terminal has the result.
// - The first copy is sent after the current handler's reply (setImmediate), so a terminal whose
//   submit forms a party at once sees MATCH_SUBMIT_ACK (and the matchId) first.
import type { Logger } from '../common/log.js';
import type { Metrics } from '../common/metrics.js';
import type { ServerSessions } from '../net/sessions.js';
import type { Address } from '../wire/addr.js';
import type { Bodies, MatchMember } from '../wire/catalog.js';
import { MatchState } from '../wire/catalog.js';
import { DEFAULT_RETRANSMIT_TIMEOUT_MS, MAX_DATAGRAM, MAX_RETRANSMIT, RETRANSMIT_RANDOM_FACTOR } from '../wire/constants.js';
import type { Contact } from './contacts.js';
import type { MatchRequest } from './engine.js';

export type ContactRequest = MatchRequest<Contact>;

/** The body shared by MATCH_RESULT and MATCH_STATUS_RESULT for a request's current state. */
export function resultBody(r: ContactRequest): Bodies['MATCH_RESULT'] {
  const body: Bodies['MATCH_RESULT'] = { matchId: r.id, state: r.state };
  if (r.state === MatchState.MATCHED && r.party) {
    body.members = r.party.members.map((m): MatchMember => {
      const e: MatchMember = { id: m.locatorId, netMode: m.netMode, addr: m.contact.addr };
      if (m.nickname !== undefined) e.nickname = m.nickname;
      return e;
    });
    body.host = r.party.host;
  }
  return body;
}

export interface DeliveryOptions {
  sessions: ServerSessions;
  send: (bytes: Buffer, to: Address) => void;
  /** Milliseconds since the epoch. */
  now: () => number;
  random: () => number;
  newRid: () => Buffer;
  /** T: first retransmission after uniform [T, 1.5T]. */
  initialTimeoutMs?: number;
  maxRetransmit?: number;
  /** Run after the current handler (default setImmediate). */
  defer?: (fn: () => void) => void;
  metrics: Metrics;
  logger: Logger;
}

interface Push {
  req: ContactRequest;
  rid: Buffer;
  /** Copies sent so far. */
  sent: number;
  nextAtMs: number;
  timeoutMs: number;
}

export class Delivery {
  private readonly pending = new Map<string, Push>();
  private readonly initialTimeoutMs: number;
  private readonly maxRetransmit: number;
  private readonly defer: (fn: () => void) => void;

  constructor(private readonly opts: DeliveryOptions) {
    this.initialTimeoutMs = opts.initialTimeoutMs ?? DEFAULT_RETRANSMIT_TIMEOUT_MS;
    this.maxRetransmit = opts.maxRetransmit ?? MAX_RETRANSMIT;
    this.defer = opts.defer ?? ((fn) => setImmediate(fn));
    const m = opts.metrics;
    m.counter('match_pushes_total', 'MATCH_RESULT pushes started (one per ended request)');
    m.counter('match_push_sends_total', 'MATCH_RESULT datagrams sent, first copies and retransmissions');
    m.counter('match_push_retransmissions_total', 'MATCH_RESULT retransmissions');
    m.counter('match_push_acked_total', 'Pushes ended by MATCH_RESULT_ACK, by how (ack, poll, cancel)');
    m.counter('match_push_abandoned_total', 'Pushes given up after the last retransmission');
    m.gauge('match_pending_pushes', 'Pushes waiting for an acknowledgement', () => this.pending.size);
  }

  get pendingCount(): number {
    return this.pending.size;
  }

  /** Longest a push stays pending: the whole schedule at its upper random bound. */
  get lifetimeMs(): number {
    return Math.ceil(this.initialTimeoutMs * RETRANSMIT_RANDOM_FACTOR * (2 ** (this.maxRetransmit + 1) - 1));
  }

  /** Start pushing the result of `req` (it just ended). */
  push(req: ContactRequest): void {
    const p: Push = {
      req, rid: this.opts.newRid(), sent: 0, nextAtMs: Infinity,
      timeoutMs: this.initialTimeoutMs * (1 + this.opts.random() * (RETRANSMIT_RANDOM_FACTOR - 1)),
    };
    this.pending.set(req.idHex, p);
    this.opts.metrics.inc('match_pushes_total', { state: req.state === MatchState.MATCHED ? 'matched' : 'no-match' });
    this.defer(() => {
      if (this.pending.get(req.idHex) === p && p.sent === 0) this.sendCopy(p, this.opts.now());
    });
  }

  /** The terminal has the result of `idHex` (ack, or a poll/cancel that returned it). */
  ack(idHex: string, how: 'ack' | 'poll' | 'cancel'): boolean {
    if (!this.pending.delete(idHex)) return false;
    this.opts.metrics.inc('match_push_acked_total', { how });
    return true;
  }

  isPending(idHex: string): boolean {
    return this.pending.has(idHex);
  }

  /** Retransmit what is due; abandon pushes past their last copy's timeout. */
  tick(): void {
    const now = this.opts.now();
    for (const [k, p] of this.pending) {
      if (p.nextAtMs > now) continue;
      if (p.sent > this.maxRetransmit) {
        this.pending.delete(k);
        this.opts.metrics.inc('match_push_abandoned_total');
        this.opts.logger.debug('push abandoned', { matchId: k, locator: p.req.locatorHex });
        continue;
      }
      this.opts.metrics.inc('match_push_retransmissions_total');
      this.sendCopy(p, now);
    }
  }

  private sendCopy(p: Push, now: number): void {
    if (p.sent > 0) p.timeoutMs *= 2;
    p.sent++;
    p.nextAtMs = now + p.timeoutMs;
    const c = p.req.contact;
    // The session may have ended (ticket expired, key no longer trusted): nothing can be MACed;
    // the copy counts against the schedule and the terminal can still poll with a new session.
    if (!this.opts.sessions.get(c.session.sidHex)) {
      this.opts.metrics.inc('dropped_total', { reason: 'push-without-session' });
      return;
    }
    const bytes = this.opts.sessions.encode(c.session, 'MATCH_RESULT', p.rid, resultBody(p.req));
    if (bytes.length > MAX_DATAGRAM) {
      // Cannot happen with parties of at most MAX_PARTY_LIMIT (tested); never send a fragment.
      this.opts.metrics.inc('dropped_total', { reason: 'push-too-large' });
      this.opts.logger.error('result too large', { matchId: p.req.idHex, bytes: bytes.length });
      return;
    }
    this.opts.metrics.inc('match_push_sends_total');
    this.opts.send(bytes, c.addr);
  }

  clear(): void {
    this.pending.clear();
  }
}
