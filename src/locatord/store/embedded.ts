// The embedded backend of the locator store: the in-process registration table (lru-cache),
// the session LRU and the SQLite group database, wrapped as they are. This is what one
// instance serves by default (server.ts uses the classes directly on its hot path); this
// wrapper gives them the store interface, so the async handlers and the contract tests run on
// both backends alike.
import { createSecretKey } from 'node:crypto';
import type { ServerSession, ServerSessions } from '../../net/sessions.js';
import { ReplayWindow } from '../../wire/session.js';
import type { GroupStore } from '../groups.js';
import type { KeyedSession } from '../snapshot.js';
import type { RegistrationTable } from '../table.js';
import { Registration } from '../table.js';
import type { GroupBackend, LocatorStore, Presence, PresenceChange, StoredSession } from './types.js';

export class EmbeddedStore implements LocatorStore {
  readonly kind = 'embedded' as const;
  readonly groups: GroupBackend;
  readonly pending = 0;

  constructor(
    readonly table: RegistrationTable,
    readonly sessions: ServerSessions,
    readonly groupStore: GroupStore,
  ) {
    const g = groupStore;
    this.groups = {
      create: async (owner, name, code) => g.create(owner, name, code),
      join: async (gid, loc, code) => g.join(gid, loc, code),
      joinAll: async (loc, joins) => g.joinAll(loc, joins),
      leave: async (gid, loc) => g.leave(gid, loc),
      get: async (gid) => g.get(gid),
      isMember: async (gid, loc) => g.isMember(gid, loc),
      members: async (gid, o, l) => g.members(gid, o, l),
      shareGroup: async (a, b) => g.shareGroup(a, b),
    };
  }

  private toPresence(r: Registration): Presence {
    const p: Presence = {
      addr: r.address, netMode: r.netMode, visibility: r.visibility, sidHex: r.session?.sidHex ?? '', seq: r.seq,
      regMs: this.table.tickToMs(r.regTick), expMs: this.table.tickToMs(r.expTick),
    };
    if (r.nickname !== undefined) p.nickname = r.nickname;
    if (r.extra) p.extra = r.extra;
    if (r.reachable) p.reachable = true;
    return p;
  }

  async getPresence(idHex: string): Promise<Presence | undefined> {
    const r = this.table.get(idHex);
    return r ? this.toPresence(r) : undefined;
  }

  async getPresences(idHexes: readonly string[]): Promise<(Presence | undefined)[]> {
    return idHexes.map((h) => {
      const r = this.table.get(h);
      return r ? this.toPresence(r) : undefined;
    });
  }

  async putPresence(idHex: string, p: Presence): Promise<void> {
    this.putNow(idHex, p);
  }

  private putNow(idHex: string, p: Presence): void {
    mirrorPresence(this.table, idHex, p, p.sidHex ? this.sessions.get(p.sidHex) : undefined);
  }

  async deletePresence(idHex: string): Promise<boolean> {
    return this.table.delete(idHex);
  }

  /** One process, no await between read and write: atomic as it is. */
  async updatePresence<T>(idHex: string, change: (cur: Presence | undefined) => PresenceChange<T>): Promise<T> {
    const r = this.table.get(idHex);
    const d = change(r ? this.toPresence(r) : undefined);
    if (d.remove) this.table.delete(idHex);
    else if (d.put) this.putNow(idHex, d.put);
    return d.result;
  }

  /** Sessions are in-process already (server.ts commits them); nothing to share. */
  async saveSession(_s: StoredSession): Promise<void> {}

  async loadSession(sidHex: string): Promise<StoredSession | undefined> {
    const s = this.sessions.get(sidHex) as KeyedSession | undefined;
    return s ? toStoredSession(s) : undefined;
  }

  async close(): Promise<void> {}
}

/**
 * Store `p` in `table` as a Registration of `session` (created, or renewed in place so that the
 * table's sweep schedule files it at its new times). Also the probe schedule of --store redis.
 */
export function mirrorPresence(t: RegistrationTable, idHex: string, p: Presence, session: ServerSession | undefined): Registration {
  let r = t.touch(idHex);
  if (!r) {
    r = new Registration(p.addr, session, p.seq, t.msToTick(p.regMs), t.msToTick(p.expMs));
  } else {
    r.setAddress(p.addr);
    r.session = session;
    r.seq = p.seq;
    // renew() re-files the record in the sweep schedule at its new times.
    t.renew(r, p.expMs - t.now());
    r.regTick = t.msToTick(p.regMs);
  }
  r.netMode = p.netMode;
  r.visibility = p.visibility;
  r.nickname = p.nickname;
  r.extra = p.extra;
  r.reachable = p.reachable === true;
  if (r.key === '') t.set(idHex, r);
  return r;
}

export function toStoredSession(s: KeyedSession): StoredSession {
  return {
    sidHex: s.sidHex, locatorHex: s.locatorHex, aud: s.aud, exp: s.exp, kid: s.kid,
    t2s: s.keys.terminalToServer.export(), s2t: s.keys.serverToTerminal.export(),
  };
}

/**
 * A session loaded from the store. Its replay window starts empty: this instance has not seen
 * the session's packets (see devloc-locatord(8), "Several instances"); the presence record's
 * sequence number still makes an older update change nothing.
 */
export function fromStoredSession(s: StoredSession): KeyedSession {
  const k: KeyedSession = {
    sid: Buffer.from(s.sidHex, 'hex'), sidHex: s.sidHex, locatorId: Buffer.from(s.locatorHex, 'hex'), locatorHex: s.locatorHex,
    aud: s.aud, exp: s.exp, keys: { terminalToServer: createSecretKey(s.t2s), serverToTerminal: createSecretKey(s.s2t) },
    window: new ReplayWindow(), txSeq: 0,
  };
  if (s.kid !== undefined) k.kid = s.kid;
  return k;
}
