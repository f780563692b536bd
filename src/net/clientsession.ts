// Terminal side of a session: the keys derived from our cnf secret and the service's static
// key, our send sequence, and the replay window for what the server sends us.
import type { KeyObject } from 'node:crypto';
import type { TicketGrant } from '../wire/catalog.js';
import type { Bodies, MessageName } from '../wire/catalog.js';
import { encodeDatagram } from '../wire/envelope.js';
import type { SessionKeys } from '../wire/session.js';
import { deriveSessionKeys, ReplayWindow, sealDatagram, verifyDatagram } from '../wire/session.js';
import { peekTicket } from '../wire/ticket-parse.js';
import type { Reply } from './client.js';

export class ClientSession {
  private txSeq = 0;
  private rxWindow = new ReplayWindow();

  private constructor(
    readonly grant: TicketGrant,
    readonly sid: Buffer,
    readonly keys: SessionKeys,
    readonly exp: number,
  ) {}

  /** Build from a ticket grant and our cnf secret; null if the grant is unusable. */
  static fromGrant(grant: TicketGrant, cnfSecret: KeyObject): ClientSession | null {
    const peek = peekTicket(grant.ticket);
    if (typeof peek === 'string') return null;
    const keys = deriveSessionKeys(cnfSecret, grant.serviceKey, peek.claims.cti, grant.aud);
    if (!keys) return null;
    return new ClientSession(grant, peek.claims.cti, keys, peek.claims.exp);
  }

  /**
   * A session whose keys are known already, not derived from a grant here (a load generator
   * driving terminals restored from a snapshot it built: bench/scale1m.ts). The sequence goes on
   * after `sentSeq`, the last number the server has seen from it.
   */
  static fromKeys(grant: TicketGrant, sid: Buffer, keys: SessionKeys, sentSeq: number): ClientSession {
    const s = new ClientSession(grant, sid, keys, grant.exp);
    s.txSeq = sentSeq;
    return s;
  }

  get nextSeq(): number {
    return this.txSeq + 1;
  }

  /** Encode and MAC a request. */
  encode<N extends MessageName>(name: N, rid: Uint8Array, body: Bodies[N]): Buffer {
    this.txSeq++;
    return sealDatagram(this.keys.terminalToServer, encodeDatagram(name, rid, body, { sid: this.sid, seq: this.txSeq }));
  }

  /**
   * Forget the sequence numbers received so far. Call before a REGISTER that (re)opens the
   * session from its ticket: a server that lost the session (NO_SESSION after a restart) opens it
   * again with its own sequence starting at 1, which the old window would refuse as replays. Our
   * send sequence goes on, so nothing we sent before can be replayed into the new session; replies
   * still have to match a pending request ID.
   */
  restartReceive(): void {
    this.rxWindow = new ReplayWindow();
  }

  /**
   * Accept a datagram from the server only if it is MACed in this session and not replayed.
   * Unauthenticated ERRORs are accepted for a pending request ID (the 64-bit random request ID is
   * what an off-path attacker would have to guess): they can only make us retry or re-register.
   */
  accept(reply: Reply): boolean {
    const auth = reply.msg.auth;
    if (!auth) return reply.msg.name === 'ERROR';
    if (!this.sid.equals(Buffer.from(auth.sid))) return false;
    if (!verifyDatagram(this.keys.serverToTerminal, reply.raw)) return false;
    if (this.rxWindow.check(auth.seq) !== 'ok') return false;
    this.rxWindow.accept(auth.seq);
    return true;
  }
}
