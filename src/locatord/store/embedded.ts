// The embedded backend of the locator store: the in-process registration table (table.ts),
// the session LRU and the SQLite group database. One instance owns its state. Every operation
// answers synchronously (no promise per request: store/maybe.ts), and reads and writes happen
// in one turn of the event loop, so updatePresence is atomic as it is.
import type { ServerSession, ServerSessions } from '../../net/sessions.js';
import { newServerSession } from '../../net/sessions.js';
import { rawKey } from '../../wire/session.js';
import type { GroupStore } from '../groups.js';
import type { LocatordLimits } from '../options.js';
import type { KeyedSession } from '../snapshot.js';
import type { Registration, RegistrationTable } from '../table.js';
import { MemorySearchIndex } from '../search-index.js';
import { MemoryWatches } from '../watches.js';
import type { DueProbe, GroupBackend, Presence, PresenceChange, Refused, ServedStore, StoredSession } from './types.js';

export class EmbeddedStore implements ServedStore {
  readonly kind = 'embedded' as const;
  readonly instanceId = undefined;
  readonly groups: GroupBackend;
  readonly watches = new MemoryWatches();
  /** Kept exact: every write and delete below, and expiry and eviction (server.ts onGone). */
  readonly search = new MemorySearchIndex();
  readonly pending = 0;

  constructor(
    readonly table: RegistrationTable,
    readonly sessions: ServerSessions,
    readonly groupStore: GroupStore,
  ) {
    this.groups = groupStore;
  }

  /**
   * Every field set (undefined when absent): one object shape for the hot path's property reads.
   * `session`: the session asking, whose handle may already hold the record's session ID in hex.
   */
  private toPresence(r: Registration, session?: ServerSession): Presence {
    return {
      addr: r.address, netMode: r.netMode, visibility: r.visibility, sidHex: this.table.sessionIdHexOf(r.slot, session), seq: r.seq,
      regMs: this.table.tickToMs(r.regTick), expMs: this.table.tickToMs(r.expTick),
      nickname: r.nickname, extra: r.extra, reachable: r.reachable || undefined, inst: undefined,
    };
  }

  getPresence(idHex: string): Presence | undefined {
    const s = this.table.find(idHex);
    return s < 0 ? undefined : this.toPresence(this.table.view(s));
  }

  getPresences(idHexes: readonly string[]): (Presence | undefined)[] {
    return idHexes.map((h) => this.getPresence(h));
  }

  putPresence(idHex: string, p: Presence, session?: ServerSession): void {
    mirrorPresence(this.table, idHex, p, this.sessionFor(p, session));
    this.search.set(idHex, p);
  }

  /** The session a record `p` is stored with: the one given, else the one it names, if held. */
  private sessionFor(p: Presence, session: ServerSession | undefined): ServerSession | undefined {
    return session ?? (p.sidHex ? this.sessions.get(p.sidHex) : undefined);
  }

  deletePresence(idHex: string): boolean {
    this.search.set(idHex, undefined);
    return this.table.delete(idHex);
  }

  updatePresence<T>(idHex: string, change: (cur: Presence | undefined) => PresenceChange<T>, session?: ServerSession): T {
    const s = this.table.findOf(idHex, session);
    const r = s < 0 ? undefined : this.table.view(s);
    const d = change(r && this.toPresence(r, session));
    if (d.remove) this.deletePresence(idHex);
    else if (d.put) {
      // The record just read is renewed where it is, its ID not looked up again (each REFRESH),
      // unless `change` had it removed or replaced, or it expired meanwhile: putPresence then
      // decides by ID, as `find` does.
      if (r && !r.removed && this.table.nowTick() < r.expTick) {
        // The search index reads only `extra`, which a REFRESH mostly keeps (the same object):
        // then the index already holds what it says (a Map lookup by ID less per REFRESH).
        const sameExtra = d.put.extra === r.extra;
        this.table.touchSlot(r.slot);
        renewPresence(this.table, r, d.put, this.sessionFor(d.put, session));
        if (!sameExtra) this.search.set(idHex, d.put);
      } else this.putPresence(idHex, d.put, session);
    }
    return d.result;
  }

  /** Sessions are in-process already (the DatagramServer commits them); nothing to share. */
  // One process: its own refusal list (net/ended.ts) is the whole list.
  refuse(_id: string, _r: Refused): void {}

  refusal(_id: string): undefined {
    return undefined;
  }

  saveSession(_s: StoredSession): void {}

  shareSession(_s: KeyedSession): void {}

  loadSession(sidHex: string): StoredSession | undefined {
    const s = this.sessions.get(sidHex) as KeyedSession | undefined;
    return s ? toStoredSession(s) : undefined;
  }

  sweep(maxProbes: number): { expired: number; due: DueProbe[] } {
    const { expired, probes } = this.table.sweep(maxProbes);
    const due: DueProbe[] = [];
    for (const r of probes) if (r.session) due.push({ session: r.session, addr: r.address });
    return { expired, due };
  }

  removeWhere(drop: (s: ServerSession) => boolean): number {
    const gone: string[] = [];
    for (const [id, rec] of this.table.entries()) if (rec.session && drop(rec.session)) gone.push(id);
    for (const id of gone) this.deletePresence(id);
    return gone.length;
  }

  setLimits(l: LocatordLimits): void {
    this.table.probeAtPercent = l.probeAtPercent;
    this.groupStore.limits = { maxMembers: l.maxGroupMembers, maxGroupsPerTerminal: l.maxGroupsPerTerminal };
  }

  close(): void {
    this.groupStore.close();
  }
}

/**
 * Store `p` in `table` as a Registration of `session` (created, or renewed in place so that the
 * table's sweep schedule files it at its new times). Also the probe schedule of --store redis
 * (store/shared.ts).
 */
export function mirrorPresence(t: RegistrationTable, idHex: string, p: Presence, session: ServerSession | undefined): Registration {
  const r = t.touch(idHex);
  if (!r) {
    return t.set(idHex, {
      addr: p.addr, session, seq: p.seq, regTick: t.msToTick(p.regMs), expTick: t.msToTick(p.expMs),
      netMode: p.netMode, visibility: p.visibility, nickname: p.nickname, extra: p.extra, reachable: p.reachable === true,
    });
  }
  renewPresence(t, r, p, session);
  return r;
}

/** Write `p` over the live record `r` of `t`, with `session`. */
function renewPresence(t: RegistrationTable, r: Registration, p: Presence, session: ServerSession | undefined): void {
  r.setAddress(p.addr);
  r.session = session;
  r.seq = p.seq;
  // renew() re-files the record in the sweep schedule at its new times.
  t.renew(r, p.expMs - t.now());
  r.regTick = t.msToTick(p.regMs);
  r.netMode = p.netMode;
  r.visibility = p.visibility;
  r.nickname = p.nickname;
  r.extra = p.extra;
  r.reachable = p.reachable === true;
}

export function toStoredSession(s: KeyedSession): StoredSession {
  return {
    sidHex: s.sidHex, locatorHex: s.locatorHex, aud: s.aud, exp: s.exp, kid: s.kid,
    t2s: rawKey(s.keys.terminalToServer), s2t: rawKey(s.keys.serverToTerminal),
  };
}

/**
 * A session loaded from the store. Its local replay window starts empty: this instance has not
 * seen the session's packets; the window shared in Redis (ServerSessions' sharedWindow) has, and
 * refuses what another instance executed (see devloc-locatord(8), "Several instances").
 */
export function fromStoredSession(s: StoredSession): KeyedSession {
  const k: KeyedSession = newServerSession({
    sid: Buffer.from(s.sidHex, 'hex'), sidHex: s.sidHex, locatorId: Buffer.from(s.locatorHex, 'hex'), locatorHex: s.locatorHex,
    aud: s.aud, exp: s.exp, terminalToServer: s.t2s, serverToTerminal: s.s2t,
  });
  if (s.kid !== undefined) k.kid = s.kid;
  return k;
}
