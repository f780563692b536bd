// matchd's commands on its control socket (devloc-ctl(8)): status counts, one terminal's contact
// and open request (`show`), the sessions held, and `kick` (its request cancelled, its sessions
// ended). Served by the control socket of src/common/control.ts, which runDaemon starts.
import type { DaemonControl } from '../common/daemon.js';
import type { ControlArgs } from '../common/control.js';
import { ControlRefusal, intArg, textArg } from '../common/control.js';
import { sessionView } from '../net/ended.js';
import type { Logger } from '../common/log.js';
import type { ServerSession } from '../net/sessions.js';
import { formatAddress } from '../wire/addr.js';
import { ErrorCode } from '../wire/errors.js';
import type { Matchd } from './server.js';

const iso = (ms: number): string => new Date(ms).toISOString();

function locatorOf(args: ControlArgs): string {
  const t = textArg(args, 'target');
  if (!/^[0-9a-fA-F]{32}$/.test(t)) throw new ControlRefusal('BAD_REQUEST', `matchd knows terminals by locator ID: 32 hex digits (got ${JSON.stringify(t)})`);
  return t.toLowerCase();
}

function sessionsOf(m: Matchd, idHex: string): ServerSession[] {
  const out: ServerSession[] = [];
  for (const s of m.sessions.all()) if (s.locatorHex === idHex) out.push(s);
  return out;
}

export function matchdControl(m: Matchd, logger: Logger): DaemonControl {
  return {
    status: () => ({
      sessions: m.sessions.size, endedSessions: m.ended.size, waiting: m.engine.waiting, mediaIds: m.engine.mediaCount,
      contacts: m.contacts.size, pendingPushes: m.delivery.pendingCount,
    }),
    commands: {
      show: (args: ControlArgs) => {
        const id = locatorOf(args);
        const c = m.contacts.get(id);
        const r = m.engine.openOf(id);
        const sessions = sessionsOf(m, id);
        if (!c && !r && sessions.length === 0) throw new ControlRefusal('NOT_FOUND', `matchd has no contact, request or session of ${id}`);
        return {
          locatorId: id,
          contact: c ? { addr: formatAddress(c.addr), lastSeenAt: iso(c.lastSeenMs), session: c.session.sidHex } : null,
          request: r ? { matchId: r.idHex, mediaId: r.mediaId, minParty: r.minParty, maxParty: r.maxParty, submittedAt: iso(r.submittedAtMs), deadlineAt: iso(r.deadlineMs) } : null,
          sessions: sessions.map((s) => sessionView(s, m.ended)),
        };
      },
      sessions: (args: ControlArgs) => {
        const limit = intArg(args, 'limit', 100, 1, 10_000);
        const list: Record<string, unknown>[] = [];
        for (const s of m.sessions.all()) {
          if (list.length >= limit) break;
          list.push(sessionView(s));
        }
        return { total: m.sessions.size, shown: list.length, sessions: list };
      },
      kick: (args: ControlArgs) => {
        const id = locatorOf(args);
        const open = m.engine.openOf(id);
        const cancelled = open ? m.engine.cancel(open.idHex, id) !== undefined : false;
        const sessions = sessionsOf(m, id);
        const reason = { code: ErrorCode.KICKED, message: 'kicked by the operator (devloc ctl kick)' };
        for (const s of sessions) m.ended.end(s.sidHex, reason, (s.exp + m.verifier.clockSkewS) * 1000);
        if (!cancelled && sessions.length === 0) throw new ControlRefusal('NOT_FOUND', `matchd has no request or session of ${id}`);
        logger.info('kicked', { locatorId: id, requestCancelled: cancelled, sessionsEnded: sessions.length });
        return { locatorId: id, requestCancelled: cancelled, sessionsEnded: sessions.length };
      },
    },
  };
}
