// Where each terminal is: the source address of its latest authenticated datagram to matchd and
// the session to MAC pushes with. One record per locator ID, shared by all of that terminal's
// requests, so a terminal that moves (new NAT mapping, new ticket) gets its result at the new
// address and members' addresses in results are current.
//
// As locatord does (docs/SECURITY.md, "Address hijack"), the address only moves forward: a
// datagram replaces it only if it was sent later in the same session (higher sequence number) or
// in a session of a later ticket, so a delayed or reordered old datagram cannot move it back.
import type { Address } from '../wire/addr.js';
import type { ServerSession } from '../net/sessions.js';
import { sameSession } from '../net/sessions.js';

export interface Contact {
  locatorId: Buffer;
  locatorHex: string;
  /** Observed source address (what other terminals reach). */
  addr: Address;
  /** The session the terminal last used; pushes are MACed in it. */
  session: ServerSession;
  /** Sequence number (in `session`) of the datagram that set `addr`. */
  addrSeq: number;
  lastSeenMs: number;
  /** MATCH_SUBMIT budget (server.ts submitGate): tokens left at `submitAtMs`. */
  submitTokens?: number;
  submitAtMs?: number;
  /** No MATCH_SUBMIT accepted before this (set when a request of the terminal ends matched). */
  coolUntilMs?: number;
}

export class Contacts {
  private readonly byLocator = new Map<string, Contact>();

  get size(): number {
    return this.byLocator.size;
  }

  get(locatorHex: string): Contact | undefined {
    return this.byLocator.get(locatorHex);
  }

  /** Record an authenticated datagram of `session` with sequence `seq` from `from`. */
  touch(session: ServerSession, from: Address, seq: number, now: number): Contact {
    let c = this.byLocator.get(session.locatorHex);
    if (!c) {
      c = { locatorId: session.locatorId, locatorHex: session.locatorHex, addr: from, session, addrSeq: seq, lastSeenMs: now };
      this.byLocator.set(session.locatorHex, c);
      return c;
    }
    c.lastSeenMs = now;
    if (sameSession(c.session, session)) {
      if (seq > c.addrSeq) {
        c.addr = from;
        c.addrSeq = seq;
      }
    } else if (session.exp >= c.session.exp) {
      c.session = session;
      c.addr = from;
      c.addrSeq = seq;
    }
    return c;
  }

  /** Forget terminals not heard from since `beforeMs` (their requests have long ended). */
  purge(beforeMs: number): number {
    let n = 0;
    for (const [k, c] of this.byLocator) {
      if (c.lastSeenMs < beforeMs) {
        this.byLocator.delete(k);
        n++;
      }
    }
    return n;
  }
}
