// REVOKE (devloc-protocol(7), REVOCATION): authd says a terminal's device was revoked. Its
// sessions end here (answered REVOKED from now on, net/ended.ts), its registration is removed,
// and the refusal is written to the store, so that with --store redis every instance refuses
// the terminal's next REGISTER (registration.ts) and the record is gone for all of them at once.
// Its watchers are told it went offline (handlers/watch.ts presenceGone).
// Idempotent: authd retransmits until REVOKE_ACK, and a repeated REVOKE changes nothing more.
import type { HandlerResult, RequestContext } from '../../net/server.js';
import { acceptRevoke } from '../../net/ended.js';
import type { LocatorContext } from '../context.js';
import type { MaybePromise } from '../store/maybe.js';
import { both, then } from '../store/maybe.js';
import { presenceGone } from './watch.js';

export function revoke(c: LocatorContext, ctx: RequestContext<'REVOKE'>): MaybePromise<HandlerResult> {
  const a = acceptRevoke(ctx, c.sessions.verifier, c.ended, c.logger, c.now());
  if ('error' in a) return a;
  const done = both(c.store.deletePresence(a.locatorHex), c.store.refuse(a.locatorHex, { ...a.reason, untilMs: a.untilMs }));
  return then(done, ([removed]) => {
    if (removed) presenceGone(c, a.locatorHex);
    c.metrics.inc('revocations_total');
    c.logger.info('revoked', { locatorId: a.locatorHex, registrationRemoved: removed, untilMs: a.untilMs });
    return ctx.reply('REVOKE_ACK', {});
  });
}
