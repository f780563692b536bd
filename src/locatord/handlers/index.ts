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

/** Every handler of locatord over `c.store`. */
export function locatorHandlers(c: LocatorContext): Handlers {
  const guard = <N extends keyof Handlers & string>(fn: (c: LocatorContext, ctx: RequestContext<N>) => MaybePromise<HandlerResult>) =>
    (ctx: RequestContext<N>): MaybePromise<HandlerResult> => {
      let out: MaybePromise<HandlerResult>;
      try {
        out = fn(c, ctx);
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
  return {
    REGISTER: guard(register),
    REFRESH: guard(refresh),
    UNREGISTER: guard(unregister),
    PROBE_ACK: guard(probeAck),
    QUERY_ADDR: guard(queryAddr),
    QUERY_STATUS: guard(queryStatus),
    GROUP_CREATE: guard(groupCreate),
    GROUP_JOIN: guard(groupJoin),
    GROUP_LEAVE: guard(groupLeave),
    GROUP_MEMBERS: guard(groupMembers),
    INTRODUCE: guard(introduce),
    INTRO_ACK: (ctx) => introAck(c, ctx),
    WATCH: guard(watch),
    UNWATCH: guard(unwatch),
    PRESENCE_SET: guard(presenceSet),
    PRESENCE_ACK: (ctx) => presenceAck(c, ctx),
    SEARCH: guard(search),
    REVOKE: guard(revoke),
  } as Handlers;
}
