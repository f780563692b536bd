// locatord's dispatch table: one handler per message, over either store. A store failure (Redis
// down, slow, or our queue to it full) answers TRY_LATER with retryAfterMs, is logged
// (flood-safe) and counted in redis_errors_total; the embedded store never fails that way, and
// its handlers answer synchronously (no promise is made when none is needed).
import type { Handlers, HandlerResult, Refusal, RequestContext } from '../../net/server.js';
import { ErrorCode } from '../../wire/errors.js';
import type { LocatorContext } from '../context.js';
import type { MaybePromise } from '../store/maybe.js';
import { isPromise } from '../store/maybe.js';
import { RedisReplyError, RedisUnavailable } from '../store/redis-url.js';
import { groupCreate, groupJoin, groupLeave, groupMembers } from './groups.js';
import { introAck, introduce } from './introduce.js';
import { queryAddr, queryStatus } from './query.js';
import { probeAck, refresh, register, unregister } from './registration.js';
import { presenceAck, presenceSet, unwatch, watch } from './watch.js';
import { revoke } from './revoke.js';
import { search } from './search.js';

/** A store failure as a refusal: TRY_LATER (retry after), a log line, a count; null for any other error. */
export function storeFailure(c: LocatorContext, err: unknown): Refusal | null {
  if (err instanceof RedisUnavailable || err instanceof RedisReplyError) {
    c.metrics.inc('redis_errors_total', { kind: err instanceof RedisUnavailable ? 'unavailable' : 'reply' });
    c.logger.refusal('redis-error', { err: err.message });
    return { error: ErrorCode.TRY_LATER, message: 'store unavailable, try later', retryAfterMs: err instanceof RedisUnavailable ? Math.max(50, err.retryAfterMs) : 1000 };
  }
  return null;
}

/**
 * Every handler of locatord over `c.store`, behind `gate` (net/ended.ts's gateHandlers: ended
 * sessions and the shared refusal list), with the store-failure guard outside both: a Redis
 * failure in the gate's own lookup (REGISTER asks every time) is answered as one in a handler.
 */
export function locatorHandlers(c: LocatorContext, gate: (handlers: Handlers) => Handlers = (h) => h): Handlers {
  const bind = <N extends keyof Handlers & string>(fn: (c: LocatorContext, ctx: RequestContext<N>) => MaybePromise<HandlerResult>) =>
    (ctx: RequestContext<N>): MaybePromise<HandlerResult> => fn(c, ctx);
  const gated = gate({
    REGISTER: bind(register),
    REFRESH: bind(refresh),
    UNREGISTER: bind(unregister),
    PROBE_ACK: bind(probeAck),
    QUERY_ADDR: bind(queryAddr),
    QUERY_STATUS: bind(queryStatus),
    GROUP_CREATE: bind(groupCreate),
    GROUP_JOIN: bind(groupJoin),
    GROUP_LEAVE: bind(groupLeave),
    GROUP_MEMBERS: bind(groupMembers),
    INTRODUCE: bind(introduce),
    INTRO_ACK: bind(introAck),
    WATCH: bind(watch),
    UNWATCH: bind(unwatch),
    PRESENCE_SET: bind(presenceSet),
    PRESENCE_ACK: bind(presenceAck),
    SEARCH: bind(search),
    REVOKE: bind(revoke),
  } as Handlers);
  const out: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(gated)) out[name] = guarded(c, fn as (ctx: RequestContext) => MaybePromise<HandlerResult>);
  return out as Handlers;
}

/** `fn` with a store failure, thrown or rejected, answered as storeFailure says (other errors pass). */
function guarded(c: LocatorContext, fn: (ctx: RequestContext) => MaybePromise<HandlerResult>): (ctx: RequestContext) => MaybePromise<HandlerResult> {
  return (ctx) => {
    let out: MaybePromise<HandlerResult>;
    try {
      out = fn(ctx);
    } catch (err) {
      const r = storeFailure(c, err);
      if (r) return r;
      throw err;
    }
    if (!isPromise(out)) return out;
    return out.catch((err: unknown) => {
      const r = storeFailure(c, err);
      if (r) return r;
      throw err;
    });
  };
}
