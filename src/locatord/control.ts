// locatord's commands on its control socket (devloc-ctl(8)): status counts, one terminal's
// record (`show`), the sessions this instance holds, and `kick`. Served by the control socket
// of src/common/control.ts, which runDaemon starts.
import type { DaemonControl } from '../common/daemon.js';
import type { ControlArgs } from '../common/control.js';
import { ControlRefusal, intArg, textArg } from '../common/control.js';
import { sessionView } from '../net/ended.js';
import type { Logger } from '../common/log.js';
import type { ServerSession } from '../net/sessions.js';
import { formatAddress } from '../wire/addr.js';
import { netModeNames } from '../wire/constants.js';
import { ErrorCode } from '../wire/errors.js';
import type { Locatord } from './server.js';
import { EmbeddedStore } from './store/embedded.js';
import type { Presence } from './store/types.js';

const iso = (ms: number): string => new Date(ms).toISOString();
/** Most terminals a nickname may name before `show`/`kick` ask for the locator ID. */
const MAX_NICKNAME_MATCHES = 16;

function presenceView(p: Presence): Record<string, unknown> {
  return {
    addr: formatAddress(p.addr), netMode: netModeNames[p.netMode] ?? `mode-${p.netMode}`, visibility: p.visibility,
    nickname: p.nickname ?? null, reachable: p.reachable === true, registeredAt: iso(p.regMs), expiresAt: iso(p.expMs),
    session: p.sidHex, ...(p.extra?.localAddrs ? { localAddrs: p.extra.localAddrs.map(formatAddress) } : {}),
    ...(p.extra?.mediaId !== undefined ? { mediaId: p.extra.mediaId } : {}), ...(p.inst ? { instance: p.inst } : {}),
  };
}

/** The locator IDs `target` names: 32 hex digits, or a nickname (embedded store: a scan of the table). */
function resolve(l: Locatord, target: string): string[] {
  if (/^[0-9a-fA-F]{32}$/.test(target)) return [target.toLowerCase()];
  if (!(l.store instanceof EmbeddedStore)) {
    throw new ControlRefusal('NOT_SUPPORTED', `with --store redis, name the terminal by its locator ID (32 hex digits), not a nickname (${JSON.stringify(target)})`);
  }
  const ids: string[] = [];
  const now = l.store.table.nowTick();
  for (const [id, r] of l.store.table.entries()) {
    if (r.nickname === target && r.expTick > now && !r.removed) ids.push(id);
    if (ids.length > MAX_NICKNAME_MATCHES) break;
  }
  if (ids.length === 0) throw new ControlRefusal('NOT_FOUND', `no registered terminal with nickname ${JSON.stringify(target)}`);
  return ids;
}

function one(l: Locatord, target: string): string {
  const ids = resolve(l, target);
  if (ids.length > 1) throw new ControlRefusal('BAD_REQUEST', `nickname ${JSON.stringify(target)} names ${ids.length > MAX_NICKNAME_MATCHES ? 'many' : ids.length} terminals: give a locator ID (${ids.slice(0, 4).join(', ')}${ids.length > 4 ? ', ...' : ''})`);
  return ids[0]!;
}

function sessionsOf(l: Locatord, idHex: string): ServerSession[] {
  const out: ServerSession[] = [];
  for (const s of l.sessions.all()) if (s.locatorHex === idHex) out.push(s);
  return out;
}

export function locatordControl(l: Locatord, logger: Logger): DaemonControl {
  return {
    status: () => ({
      store: l.store.kind, ...(l.store.instanceId ? { instance: l.store.instanceId } : {}),
      registrations: l.store instanceof EmbeddedStore ? l.store.table.size : null,
      sessions: l.sessions.size, endedSessions: l.ended.size, introductionsPending: l.introductions.size,
      storePending: l.store.pending,
    }),
    commands: {
      show: async (args: ControlArgs) => {
        const id = one(l, textArg(args, 'target'));
        const p = await l.store.getPresence(id);
        const sessions = sessionsOf(l, id);
        const idBuf = Buffer.from(id, 'hex');
        const groups = l.store instanceof EmbeddedStore ? l.store.groupStore.groupsOf(idBuf).map((g) => g.toString('hex')) : null;
        if (!p && sessions.length === 0 && (!groups || groups.length === 0)) throw new ControlRefusal('NOT_FOUND', `locator ID ${id} is not registered and has no session here`);
        return {
          locatorId: id, online: p !== undefined && p.expMs > Date.now(), presence: p ? presenceView(p) : null,
          sessions: sessions.map((s) => sessionView(s, l.ended)), groups,
        };
      },
      sessions: (args: ControlArgs) => {
        const limit = intArg(args, 'limit', 100, 1, 10_000);
        const list: Record<string, unknown>[] = [];
        for (const s of l.sessions.all()) {
          if (list.length >= limit) break;
          list.push(sessionView(s));
        }
        return { total: l.sessions.size, shown: list.length, sessions: list };
      },
      kick: async (args: ControlArgs) => {
        const id = one(l, textArg(args, 'target'));
        const removed = await l.store.deletePresence(id);
        if (removed) l.removed(id);
        const sessions = sessionsOf(l, id);
        const reason = { code: ErrorCode.KICKED, message: 'kicked by the operator (devloc ctl kick)' };
        for (const s of sessions) l.ended.end(s.sidHex, reason, (s.exp + l.verifier.clockSkewS) * 1000);
        if (!removed && sessions.length === 0) throw new ControlRefusal('NOT_FOUND', `locator ID ${id} is not registered and has no session here`);
        logger.info('kicked', { locatorId: id, registrationRemoved: removed, sessionsEnded: sessions.length });
        l.metrics.inc('kicks_total');
        return { locatorId: id, registrationRemoved: removed, sessionsEnded: sessions.length };
      },
    },
  };
}
