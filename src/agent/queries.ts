// The locator queries of the agent's application API: lookup (QUERY_ADDR), online
// (QUERY_STATUS) and groups (GROUP_*), on the session the registration loop opened with
// locatord, re-registering once when locatord lost that session. Targets are locator IDs, group
// IDs or address-book names.
//
// Answers that do not fit one datagram come in pages: the request carries a cursor (an index:
// into the IDs asked for, or into the group's members), the answer the entries from there on and
// `nextCursor` when more remain. `collectPages` is the one loop all three queries use, with one
// stop rule (see there), so a server that misbehaves cannot keep the agent asking.
import { formatAddress } from '../wire/addr.js';
import type { AddrEntry, Bodies, MemberEntry, MessageName } from '../wire/catalog.js';
import { MAX_QUERY_IDS } from '../wire/catalog.js';
import { netModeNames } from '../wire/constants.js';
import type { MessageOf } from '../wire/envelope.js';
import { ErrorCode, errorName } from '../wire/errors.js';
import { joinProof, sealCodeKey } from '../wire/groupcode.js';
import type { ClientSession } from '../net/clientsession.js';
import { AgentError, NEEDS_TICKET, ServerError } from './errors.js';
import { formatId, parseId } from './ids.js';
import type { AddressBook } from './peers.js';
import type { GroupMembers, LookupEntry } from './types.js';

/** Pages of one GROUP_MEMBERS listing at most (64 members a page at most: 64,000 members). */
export const MAX_MEMBER_PAGES = 1000;

export interface Page<T> {
  items: T[];
  nextCursor?: number | undefined;
}

export interface Paged<T> {
  items: T[];
  /** Pages asked for. */
  pages: number;
  /** False when the listing stopped before the server said it was complete (see `collectPages`). */
  complete: boolean;
}

/**
 * Ask for pages from cursor 0 (sent as no cursor) until the listing is complete, and return the
 * items in order. The stop rule, the same for every query:
 *   - no `nextCursor`: complete;
 *   - otherwise stop, incomplete, when the page was empty (no progress), when `nextCursor` does
 *     not advance past the cursor asked for, when it reaches `end` (the number of items there
 *     can be, when known), or after `maxPages` pages.
 * Each page must bring at least one item and move the cursor forward, so a listing of n items
 * takes at most n pages, whatever the server answers.
 */
export async function collectPages<T>(
  fetch: (cursor: number | undefined) => Promise<Page<T>>,
  o: { maxPages: number; end?: number },
): Promise<Paged<T>> {
  const items: T[] = [];
  let cursor = 0;
  for (let pages = 1; ; pages++) {
    const page = await fetch(cursor === 0 ? undefined : cursor);
    items.push(...page.items);
    const next = page.nextCursor;
    if (next === undefined) return { items, pages, complete: true };
    const stuck = page.items.length === 0 || next <= cursor || (o.end !== undefined && next >= o.end) || pages >= o.maxPages;
    if (stuck) return { items, pages, complete: false };
    cursor = next;
  }
}

/** What the queries need of the registration loop. */
export interface QueryHost {
  /** The session REGISTER confirmed, once registered (waits at most `timeoutMs`). */
  ready(timeoutMs: number): Promise<ClientSession>;
  /** One session-authenticated request to locatord; an ERROR answer throws ServerError. */
  call<N extends MessageName, R extends MessageName>(session: ClientSession, name: N, body: Bodies[N], expect: R): Promise<MessageOf<R>>;
  /** locatord does not know our session (or our ticket): register again (with a new ticket). */
  sessionLost(needTicket: boolean): void;
}

const modeName = (m: number): string => netModeNames[m] ?? `mode-${m}`;

export class LocatorQueries {
  constructor(
    private readonly host: QueryHost,
    private readonly peers: AddressBook | undefined,
  ) {}

  /**
   * A query on the current session; on NO_SESSION (or a ticket problem), re-register once and
   * retry. `body` may be made from the session (a join proof is bound to it).
   */
  async query<N extends MessageName, R extends MessageName>(
    name: N, body: Bodies[N] | ((session: ClientSession) => Bodies[N]), expect: R, waitMs = 10_000,
  ): Promise<MessageOf<R>> {
    for (let attempt = 0; ; attempt++) {
      const session = await this.host.ready(waitMs);
      try {
        return await this.host.call(session, name, typeof body === 'function' ? body(session) : body, expect);
      } catch (err) {
        if (err instanceof ServerError) {
          if ((err.code === ErrorCode.NO_SESSION || NEEDS_TICKET.includes(err.code)) && attempt === 0) {
            this.host.sessionLost(err.code !== ErrorCode.NO_SESSION);
            continue;
          }
          throw new AgentError(errorName(err.code), err.detail ?? err.message);
        }
        if (err instanceof AgentError) throw err;
        throw new AgentError('NO_ANSWER', (err as Error).message);
      }
    }
  }

  /** A locator ID, group ID or address book name to 16 bytes. */
  resolveTarget(target: string | Uint8Array): Buffer {
    if (typeof target !== 'string') {
      if (target.length !== 16) throw new AgentError('BAD_TARGET', 'IDs are 16 bytes');
      return Buffer.from(target);
    }
    const id = this.peers ? this.peers.resolve(target) : parseId(target);
    if (!id) throw new AgentError('UNKNOWN_TARGET', `${JSON.stringify(target)} is neither an ID (32 hex digits) nor a name in the address book`);
    return id;
  }

  namesOf(id: Uint8Array): string[] {
    return this.peers ? this.peers.namesOf(formatId(id)) : [];
  }

  /** Current addresses of peers (QUERY_ADDR), by locator ID or nickname, in request order. */
  async lookup(targets: (string | Uint8Array)[]): Promise<LookupEntry[]> {
    const ids = targets.map((t) => this.resolveTarget(t));
    const entries: AddrEntry[] = [];
    for (let i = 0; i < ids.length; i += MAX_QUERY_IDS) {
      const batch = ids.slice(i, i + MAX_QUERY_IDS);
      const got = await collectPages(async (cursor) => {
        const m = await this.query('QUERY_ADDR', { ids: batch, ...(cursor !== undefined ? { cursor } : {}) }, 'QUERY_ADDR_RESULT');
        return { items: m.body.entries, nextCursor: m.body.nextCursor };
      }, { maxPages: batch.length, end: batch.length });
      entries.push(...got.items);
    }
    return ids.map((id, i) => {
      const e = entries.find((x) => Buffer.from(x.id).equals(id));
      const target = typeof targets[i] === 'string' ? (targets[i] as string) : formatId(id);
      const out: LookupEntry = { target, id: formatId(id), online: e?.online ?? false, names: this.namesOf(id) };
      if (e?.addr) out.addr = formatAddress(e.addr);
      if (e?.localAddrs?.length) out.localAddrs = e.localAddrs.map(formatAddress);
      if (e?.netMode !== undefined) out.netMode = modeName(e.netMode);
      if (e?.nickname !== undefined) out.nickname = e.nickname;
      if (e?.mediaId !== undefined) out.mediaId = e.mediaId;
      return out;
    });
  }

  /** Online status of peers (QUERY_STATUS), in request order. */
  async online(targets: (string | Uint8Array)[]): Promise<{ target: string; id: string; online: boolean; names: string[] }[]> {
    const ids = targets.map((t) => this.resolveTarget(t));
    const online: boolean[] = [];
    for (let i = 0; i < ids.length; i += MAX_QUERY_IDS) {
      const batch = ids.slice(i, i + MAX_QUERY_IDS);
      const got = await collectPages(async (cursor) => {
        const m = await this.query('QUERY_STATUS', { ids: batch, ...(cursor !== undefined ? { cursor } : {}) }, 'QUERY_STATUS_RESULT');
        return { items: m.body.online, nextCursor: m.body.nextCursor };
      }, { maxPages: batch.length, end: batch.length });
      // An ID the listing did not reach (or a surplus answer) is not reported online.
      for (let j = 0; j < batch.length; j++) online.push(got.items[j] ?? false);
    }
    return ids.map((id, i) => ({
      target: typeof targets[i] === 'string' ? (targets[i] as string) : formatId(id), id: formatId(id), online: online[i] ?? false, names: this.namesOf(id),
    }));
  }

  /** A group with an ID locatord draws; closed when `joinCode` is given (only its key is sent, sealed). */
  async groupCreate(name: string, joinCode?: string): Promise<{ groupId: string }> {
    const m = await this.query('GROUP_CREATE', (s) => ({ name, ...(joinCode ? sealCodeKey(s.keys, joinCode) : {}) }), 'GROUP_CREATE_ACK');
    return { groupId: formatId(m.body.groupId) };
  }

  /** Join; for a closed group a proof of `joinCode` bound to the session is sent, never the code. */
  async groupJoin(group: string | Uint8Array, joinCode?: string): Promise<{ groupId: string }> {
    const groupId = this.resolveTarget(group);
    const m = await this.query('GROUP_JOIN', (s) => ({ groupId, ...(joinCode ? joinProof(s.keys, s.sid, groupId, joinCode) : {}) }), 'GROUP_JOIN_ACK');
    return { groupId: formatId(m.body.groupId) };
  }

  async groupLeave(group: string | Uint8Array): Promise<{ groupId: string }> {
    const groupId = this.resolveTarget(group);
    await this.query('GROUP_LEAVE', { groupId }, 'GROUP_LEAVE_ACK');
    return { groupId: formatId(groupId) };
  }

  async groupMembers(group: string | Uint8Array): Promise<GroupMembers> {
    const groupId = this.resolveTarget(group);
    let total = 0;
    let name: string | undefined;
    const got = await collectPages<MemberEntry>(async (cursor) => {
      const m = await this.query('GROUP_MEMBERS', { groupId, ...(cursor !== undefined ? { cursor } : {}) }, 'GROUP_MEMBERS_RESULT');
      total = m.body.total;
      if (m.body.name !== undefined) name = m.body.name;
      return { items: m.body.members, nextCursor: m.body.nextCursor };
    }, { maxPages: MAX_MEMBER_PAGES });
    return {
      groupId: formatId(groupId), ...(name !== undefined ? { name } : {}), total,
      members: got.items.map((e) => ({
        id: formatId(e.id), online: e.online, names: this.namesOf(e.id),
        ...(e.addr ? { addr: formatAddress(e.addr) } : {}),
        ...(e.nickname !== undefined ? { nickname: e.nickname } : {}),
        ...(e.netMode !== undefined ? { netMode: modeName(e.netMode) } : {}),
      })),
    };
  }
}
