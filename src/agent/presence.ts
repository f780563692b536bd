// Presence, pushed not polled (devloc-protocol(7), PRESENCE): the agent's watch list, the
// PRESENCE pushes locatord sends for it, and the terminal's own presence record.
//
// - `watch(targets)` adds locator IDs (or address-book names) to the list and sends WATCH (64
//   IDs a request, each answer paged with `collectPages`); the answer is the current status.
// - PRESENCE pushes from locatord, MACed in our session, are acknowledged (every copy: the ack
//   is the push's answer) and reported once per change as a `presence` event.
// - `search(mediaId, requirements)` is the partner search (SEARCH): the terminals looking for a
//   partner with that media ID whose wanted attributes satisfy the requirements, every page.
// - Our own record is kept here (`own`): every REGISTER carries it (registration.ts), so a
//   re-registration (address change, locatord restart) does not lose it; `setMedia` changes its
//   media ID at run time (PRESENCE_SET when registered, else with the next REGISTER).
// - The list is the agent's: locatord forgets it when the registration ends (expiry,
//   re-registration after an address change, an embedded locatord's restart). After every
//   REGISTER the whole list is watched again, and every `checkEveryMs` a WATCH with no IDs asks
//   locatord how many it holds; fewer than ours, and the list is sent again. So subscriptions
//   survive a locatord restart and an address change without the user doing anything.
import type { Reply } from '../net/client.js';
import type { ClientSession } from '../net/clientsession.js';
import type { Address } from '../wire/addr.js';
import { sameAddress } from '../wire/addr.js';
import type { PresenceEntry, PresenceRecord, Requirement } from '../wire/catalog.js';
import { catalog, MAX_QUERY_IDS, MAX_WATCHES, MessageType, presenceRecordFields } from '../wire/catalog.js';
import { pickFields } from '../wire/schema.js';
import { AgentError, refuseUnknownKeys } from './errors.js';
import { formatId } from './ids.js';
import type { LocatorQueries } from './queries.js';
import type { PresenceStatus } from './types.js';
import { collectPages } from './queries.js';
import { checkRequest, checkRequirements } from './match.js';

export interface PresenceHost {
  queries: LocatorQueries;
  locatord: () => Address | undefined;
  sessions: () => ClientSession[];
  send: (to: Address, bytes: Buffer) => void;
  /** Each change told by a push (or seen when watching). */
  emit: (s: PresenceStatus) => void;
  log: (level: 'debug' | 'info' | 'warn', msg: string, fields?: Record<string, unknown>) => void;
  /** The media ID the agent was started with (--media-id), if any. */
  mediaId?: string | undefined;
  /** Whether the agent holds a registration now (a PRESENCE_SET needs one). */
  registered?: () => boolean;
}

/** Most results one `search` collects (pages followed until then). */
export const MAX_SEARCH_RESULTS = 256;

/** Ask locatord whether it still holds our list at most this often (on refreshes). */
const CHECK_EVERY_MS = 60_000;

const RECORD_KEYS = presenceRecordFields.map((f) => f.name);

/** The checks of the presence record locatord makes (the catalog's record), so a bad one is refused here (BAD_REQUEST). */
function checkRecord(r: PresenceRecord): void {
  refuseUnknownKeys(r, RECORD_KEYS, 'presence record');
  checkRequest(presenceRecordFields, r, 'presence record: ');
}

export class PresenceWatch {
  /** Watched locator IDs (hex) -> last status known. */
  private readonly watched = new Map<string, PresenceStatus | undefined>();
  private resyncing: Promise<void> | undefined;
  private checkedAt = 0;
  /** Our own presence record, as last set (undefined: none set; REGISTER carries --media-id alone). */
  own: PresenceRecord | undefined;

  constructor(private readonly host: PresenceHost) {}

  list(): PresenceStatus[] {
    return [...this.watched.entries()].map(([id, s]) => s ?? { id, names: this.host.queries.namesOf(Buffer.from(id, 'hex')), online: false });
  }

  private status(e: PresenceEntry): PresenceStatus {
    const s: PresenceStatus = { id: formatId(e.id), names: this.host.queries.namesOf(e.id), online: e.online };
    if (e.nickname !== undefined) s.nickname = e.nickname;
    if (e.presence) s.presence = e.presence;
    return s;
  }

  /** Watch `targets` (IDs or names): their status now, in order. */
  async watch(targets: (string | Uint8Array)[]): Promise<PresenceStatus[]> {
    const ids = targets.map((t) => this.host.queries.resolveTarget(t));
    const fresh = new Set(ids.map((i) => formatId(i)).filter((h) => !this.watched.has(h)));
    if (this.watched.size + fresh.size > MAX_WATCHES) throw new AgentError('BAD_REQUEST', `at most ${MAX_WATCHES} terminals watched`);
    const out = await this.send(ids);
    for (const s of out) this.watched.set(s.id, s);
    return out;
  }

  /** WATCH `ids`, 64 a request, every page; their status. */
  private async send(ids: Buffer[]): Promise<PresenceStatus[]> {
    const out: PresenceStatus[] = [];
    for (let i = 0; i < ids.length; i += MAX_QUERY_IDS) {
      const chunk = ids.slice(i, i + MAX_QUERY_IDS);
      const r = await collectPages(async (cursor) => {
        const m = await this.host.queries.query('WATCH', cursor === undefined ? { ids: chunk } : { ids: chunk, cursor }, 'WATCH_ACK');
        return { items: m.body.entries, nextCursor: m.body.nextCursor };
      }, { maxPages: chunk.length, end: chunk.length });
      out.push(...r.items.map((e) => this.status(e)));
    }
    return out;
  }

  async unwatch(targets: (string | Uint8Array)[] | 'all'): Promise<{ watching: number }> {
    const ids = targets === 'all' ? [] : targets.map((t) => this.host.queries.resolveTarget(t));
    if (targets === 'all') this.watched.clear();
    else for (const id of ids) this.watched.delete(formatId(id));
    for (let i = 0; i < Math.max(1, ids.length); i += MAX_QUERY_IDS) {
      await this.host.queries.query('UNWATCH', targets === 'all' ? { ids: [], all: true } : { ids: ids.slice(i, i + MAX_QUERY_IDS) }, 'UNWATCH_ACK');
    }
    return { watching: this.watched.size };
  }

  /** Replace our presence record (PRESENCE_SET). */
  async set(record: PresenceRecord): Promise<PresenceRecord> {
    checkRecord(record);
    const before = this.own;
    this.own = record;
    try {
      await this.host.queries.query('PRESENCE_SET', { presence: record }, 'PRESENCE_SET_ACK');
    } catch (err) {
      // A record locatord refuses must not ride on every later REGISTER (refused the same way).
      if (err instanceof AgentError && err.code === 'BAD_MESSAGE' && this.own === record) this.own = before;
      throw err;
    }
    return record;
  }

  /** The media ID in use now. */
  get mediaId(): string | undefined {
    return this.own ? this.own.mediaId : this.host.mediaId;
  }

  /**
   * Change the media ID at run time ('' : none), keeping the rest of our record: told to
   * locatord now (PRESENCE_SET) when registered, and carried by every REGISTER from now on.
   */
  async setMedia(mediaId: string): Promise<PresenceRecord> {
    const r: PresenceRecord = { ...(this.own ?? {}) };
    if (mediaId === '') delete r.mediaId;
    else r.mediaId = mediaId;
    checkRecord(r);
    this.own = r;
    if (this.host.registered && !this.host.registered()) return r;
    return this.set(r);
  }

  /**
   * Partner search (SEARCH): online terminals looking for a partner with `mediaId` (default: ours)
   * whose wanted attributes satisfy `requirements`, that we may see; every page, at most
   * MAX_SEARCH_RESULTS (`max`).
   */
  async search(requirements: Requirement[] = [], mediaId = this.mediaId, max = MAX_SEARCH_RESULTS): Promise<PresenceStatus[]> {
    if (mediaId === undefined || mediaId === '') throw new AgentError('BAD_REQUEST', 'search: name a media ID (none in use)');
    checkRequest(pickFields(catalog[MessageType.SEARCH].fields, ['mediaId']), { mediaId }, 'search: ');
    checkRequirements(requirements, 'SEARCH', 'search: ');
    const out: PresenceStatus[] = [];
    let after: Uint8Array | undefined;
    do {
      const body = { mediaId, ...(requirements.length ? { requirements } : {}), ...(after ? { after } : {}) };
      const m = await this.host.queries.query('SEARCH', body, 'SEARCH_RESULT');
      out.push(...m.body.entries.map((e) => this.status(e)));
      after = m.body.next;
    } while (after && out.length < max);
    return out.slice(0, max);
  }

  /**
   * Send the whole list again when locatord may have lost it: after a REGISTER (`force`), or
   * when it says it holds fewer than we watch.
   */
  resync(force: boolean, now = Date.now()): Promise<void> {
    if (this.watched.size === 0 || this.resyncing) return this.resyncing ?? Promise.resolve();
    if (!force && now - this.checkedAt < CHECK_EVERY_MS) return Promise.resolve();
    this.checkedAt = now;
    const run = async (): Promise<void> => {
      if (!force) {
        const m = await this.host.queries.query('WATCH', { ids: [] }, 'WATCH_ACK');
        if (m.body.watching >= this.watched.size) return;
      }
      this.host.log('info', 'watching again', { watching: this.watched.size });
      const out = await this.send([...this.watched.keys()].map((h) => Buffer.from(h, 'hex')));
      for (const s of out) this.changed(s);
    };
    this.resyncing = run().catch((err: unknown) => this.host.log('warn', 'watching again failed', { err: (err as Error).message })).finally(() => {
      this.resyncing = undefined;
    });
    return this.resyncing;
  }

  private changed(s: PresenceStatus): void {
    if (!this.watched.has(s.id)) return;
    const before = this.watched.get(s.id);
    this.watched.set(s.id, s);
    if (!before || JSON.stringify(before) !== JSON.stringify(s)) this.host.emit(s);
  }

  /** A push on the agent's socket: true when it was a PRESENCE (acknowledged and reported here). */
  onPush(r: Reply): boolean {
    if (r.msg.name !== 'PRESENCE') return false;
    const to = this.host.locatord();
    if (!to || !sameAddress(r.from, to)) return true;
    const session = this.host.sessions().find((s) => s.accept(r));
    // A retransmitted copy is refused by the replay window only if it is the same bytes: each
    // copy is MACed anew, so each is accepted and answered.
    if (!session) return true;
    this.host.send(r.from, session.encode('PRESENCE_ACK', r.msg.rid, { id: r.msg.body.id }));
    this.changed(this.status(r.msg.body));
    return true;
  }
}

export type { PresenceStatus } from './types.js';
