// Sessions a service has ended before their tickets expire (devloc ctl kick, revocation,
// identity conflicts): every later message in such a session is answered with the reason's
// error code, MACed in the session (so only the terminal holding the session keys can be told,
// and a forger cannot make a terminal believe it was kicked). The session itself stays in
// ServerSessions until its ticket expires: its keys are what authenticates the answer.
//
// Two kinds of entries, both bounded by count and kept until the tickets concerned expire:
//   - one session (by session ID);
//   - every session of a locator ID whose ticket was issued before a time (revocation: tickets
//     issued before it are refused; authd refuses to issue new ones).
import { LRUCache } from 'lru-cache';
import type { ErrorCode } from '../wire/errors.js';
import type { Handlers, HandlerResult, Refusal, RequestContext } from './server.js';
import type { ServerSession } from './sessions.js';

export interface EndReason {
  code: ErrorCode;
  message: string;
}

export class EndedSessions {
  private readonly bySession: LRUCache<string, EndReason>;
  private readonly byLocator: LRUCache<string, EndReason & { beforeS: number }>;

  constructor(max = 100_000, private readonly now: () => number = Date.now) {
    this.bySession = new LRUCache({ max, ttlAutopurge: false, perf: { now } });
    this.byLocator = new LRUCache({ max, ttlAutopurge: false, perf: { now } });
  }

  get size(): number {
    return this.bySession.size + this.byLocator.size;
  }

  /** End one session until `untilMs` (its ticket's expiry). */
  end(sidHex: string, reason: EndReason, untilMs: number): void {
    const ttl = Math.max(1, untilMs - this.now());
    this.bySession.set(sidHex, reason, { ttl });
  }

  /** End every session of `locatorHex` whose ticket was issued before `beforeS` (s), until `untilMs`. */
  endLocator(locatorHex: string, reason: EndReason, beforeS: number, untilMs: number): void {
    const ttl = Math.max(1, untilMs - this.now());
    const old = this.byLocator.get(locatorHex);
    this.byLocator.set(locatorHex, { ...reason, beforeS: Math.max(beforeS, old?.beforeS ?? 0) }, { ttl });
  }

  /** Why `session` has ended, or undefined while it is live. */
  reason(session: Pick<ServerSession, 'sidHex' | 'locatorHex'> & { iat?: number }): EndReason | undefined {
    const s = this.bySession.get(session.sidHex);
    if (s) return s;
    const l = this.byLocator.get(session.locatorHex);
    if (l && (session.iat === undefined || session.iat <= l.beforeS)) return l;
    return undefined;
  }

  check(session: ServerSession | undefined): Refusal | null {
    if (!session) return null;
    const r = this.reason(session);
    return r ? { error: r.code, message: r.message } : null;
  }
}

/** `handlers`, each answering an ended session's message with its reason instead of running. */
export function gateHandlers(handlers: Handlers, ended: EndedSessions): Handlers {
  const out: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(handlers)) {
    const h = fn as (ctx: RequestContext) => HandlerResult | Promise<HandlerResult>;
    out[name] = (ctx: RequestContext) => ended.check(ctx.session) ?? h(ctx);
  }
  return out as Handlers;
}
