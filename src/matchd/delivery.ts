// Delivery of results: when a request ends (matched, or no match by its deadline) matchd pushes
// MATCH_RESULT to the terminal's observed address, MACed in its session, and retransmits until
// the terminal answers MATCH_RESULT_ACK.
//
// - Each result gets a fresh random request ID (rid). Every copy carries the same rid but a new
//   session sequence number (each copy is MACed anew), so a terminal's replay window accepts
//   it and the terminal acknowledges every copy it gets (it deduplicates by matchId).
// - The push itself is the confirmable push of net/push.ts (as INTRO's). Schedule (CoAP-like, as
//   for requests): the first retransmission after a timeout uniform in [T, 1.5T], doubling, at
//   most `maxRetransmit` retransmissions; then the push is abandoned and the result stays
//   available to MATCH_STATUS until it is forgotten (retention). Retransmissions run on their own
//   timers, not on matchd's tick, so they go out when the schedule says.
// - Each copy goes to the terminal's address as known at that moment (contacts.ts), so a
//   terminal whose NAT mapping changed gets it after its next datagram to matchd.
// - MATCH_RESULT_ACK is itself the answer to the push (type 0x67 = 0x66 + 1), carrying the push's
//   request ID: matchd sends nothing back. A lost ack costs one more copy, which the terminal
//   acks again.
// - A MATCH_STATUS or MATCH_CANCEL answered with the final result also ends the push: the
//   terminal has the result.
// - The first copy is sent after the current handler's reply (setImmediate), so a terminal whose
//   submit forms a party at once sees MATCH_SUBMIT_ACK (and the matchId) first.
import type { Logger } from '../common/log.js';
import type { Metrics } from '../common/metrics.js';
import type { Timers } from '../net/client.js';
import type { PushCopy } from '../net/push.js';
import { Pusher } from '../net/push.js';
import type { ServerSessions } from '../net/sessions.js';
import type { Address } from '../wire/addr.js';
import type { Bodies, MatchMember } from '../wire/catalog.js';
import { MatchState } from '../wire/catalog.js';
import { DEFAULT_RETRANSMIT_TIMEOUT_MS, MAX_DATAGRAM, MAX_RETRANSMIT } from '../wire/constants.js';
import type { Contact } from './contacts.js';
import type { MatchRequest } from './engine.js';

export type ContactRequest = MatchRequest<Contact>;

/** The body shared by MATCH_RESULT and MATCH_STATUS_RESULT for a request's current state. */
export function resultBody(r: ContactRequest): Bodies['MATCH_RESULT'] {
  const body: Bodies['MATCH_RESULT'] = { matchId: r.id, state: r.state };
  if (r.state === MatchState.MATCHED && r.party) {
    // A hidden member (visibility 1) is shown to the others under its per-request alias and
    // without its nickname; it sees itself as it is.
    const paths = r.party.paths;
    body.members = r.party.members.map((m, i): MatchMember => {
      const hidden = m.alias !== undefined && m !== r;
      const e: MatchMember = { id: hidden ? m.alias! : m.locatorId, netMode: m.netMode, addr: m.contact.addr };
      if (m.nickname !== undefined && !hidden) e.nickname = m.nickname;
      if (paths[i]) e.path = paths[i];
      return e;
    });
    body.host = r.party.host;
  }
  if (r.state === MatchState.NO_MATCH && r.noPath) body.noPath = true;
  return body;
}

export interface DeliveryOptions {
  sessions: ServerSessions;
  send: (bytes: Buffer, to: Address) => void;
  random: () => number;
  /** Request IDs of the pushes (default: Pusher's, random IDs cut from a pooled fill). */
  newRid?: () => Buffer;
  /** T: first retransmission after uniform [T, 1.5T]. */
  initialTimeoutMs?: number;
  maxRetransmit?: number;
  /** Most pushes pending in all (default: as many ended requests as matchd keeps) and per terminal. */
  maxPending?: number;
  maxPendingPerTerminal?: number;
  /** Run after the current handler (default setImmediate). */
  defer?: (fn: () => void) => void;
  /** Retransmission timers (tests: a fake clock). */
  timers?: Timers;
  metrics: Metrics;
  logger: Logger;
}

export class Delivery {
  private readonly pushes: Pusher<ContactRequest>;

  constructor(private readonly opts: DeliveryOptions) {
    const m = opts.metrics;
    m.counter('match_pushes_total', 'MATCH_RESULT pushes started (one per ended request)');
    m.counter('match_push_sends_total', 'MATCH_RESULT datagrams sent, first copies and retransmissions');
    m.counter('match_push_retransmissions_total', 'MATCH_RESULT retransmissions');
    m.counter('match_push_acked_total', 'Pushes ended by MATCH_RESULT_ACK, by how (ack, poll, cancel)');
    m.counter('match_push_abandoned_total', 'Pushes given up after the last retransmission');
    m.gauge('match_pending_pushes', 'Pushes waiting for an acknowledgement', () => this.pushes.size);
    this.pushes = new Pusher<ContactRequest>({
      send: opts.send,
      initialTimeoutMs: opts.initialTimeoutMs ?? DEFAULT_RETRANSMIT_TIMEOUT_MS,
      maxRetransmit: opts.maxRetransmit ?? MAX_RETRANSMIT,
      maxPending: opts.maxPending ?? 200_000,
      // A terminal has one waiting request; a few ended ones may still be pushed (short waits).
      maxPendingPerTarget: opts.maxPendingPerTerminal ?? 16,
      random: opts.random,
      ...(opts.newRid ? { newRid: opts.newRid } : {}),
      defer: opts.defer ?? ((fn) => setImmediate(fn)),
      ...(opts.timers ? { timers: opts.timers } : {}),
      onCopy: (_p, n, skipped) => {
        if (n > 1) m.inc('match_push_retransmissions_total');
        if (skipped === undefined) m.inc('match_push_sends_total');
      },
      onEnd: (p, outcome) => {
        if ('acked' in outcome) {
          m.inc('match_push_acked_total', { how: outcome.acked });
          return;
        }
        m.inc('match_push_abandoned_total');
        opts.logger.debug('push abandoned', { matchId: p.key, locator: p.target, copies: p.copies });
      },
    });
  }

  get pendingCount(): number {
    return this.pushes.size;
  }

  /** Longest a push stays pending: the whole schedule at its upper random bound. */
  get lifetimeMs(): number {
    return this.pushes.lifetimeMs;
  }

  /** Start pushing the result of `req` (it just ended). */
  push(req: ContactRequest): void {
    const refused = this.pushes.push({ key: req.idHex, target: req.locatorHex, data: req, build: (rid) => this.copy(req, rid) });
    if (refused) {
      // Only a terminal with many short requests ending unacknowledged gets here; the result
      // stays available to MATCH_STATUS.
      this.opts.metrics.inc('dropped_total', { reason: 'push-bound' });
      this.opts.logger.refusal('push-bound', { matchId: req.idHex, locator: req.locatorHex, why: refused });
      return;
    }
    this.opts.metrics.inc('match_pushes_total', { state: req.state === MatchState.MATCHED ? 'matched' : 'no-match' });
  }

  /**
   * The terminal has the result of `idHex`: its MATCH_RESULT_ACK (with the push's request ID
   * `rid`), or a poll or cancel that returned it.
   */
  ack(idHex: string, how: 'ack' | 'poll' | 'cancel', rid?: Uint8Array): boolean {
    return this.pushes.ack(idHex, how, rid);
  }

  isPending(idHex: string): boolean {
    return this.pushes.isPending(idHex);
  }

  private copy(req: ContactRequest, rid: Buffer): PushCopy {
    const c = req.contact;
    // The session may have ended (ticket expired, key no longer trusted): nothing can be MACed;
    // the copy counts against the schedule, and a later copy goes out if the terminal opened a
    // new session meanwhile (contacts.ts); the terminal can also poll.
    if (!this.opts.sessions.get(c.session.sidHex)) {
      this.opts.metrics.inc('dropped_total', { reason: 'push-without-session' });
      return { skip: 'no session' };
    }
    const bytes = this.opts.sessions.encode(c.session, 'MATCH_RESULT', rid, resultBody(req));
    if (bytes.length > MAX_DATAGRAM) {
      // Cannot happen with parties of at most MAX_PARTY_LIMIT (tested); never send a fragment.
      this.opts.metrics.inc('dropped_total', { reason: 'push-too-large' });
      this.opts.logger.error('result too large', { matchId: req.idHex, bytes: bytes.length });
      return { skip: 'too large' };
    }
    return { bytes, to: c.addr };
  }

  close(): void {
    this.pushes.close();
  }
}
