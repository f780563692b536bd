// The store behind locatord's state (issue 9): presence (the registration table), sessions, and
// groups, as one asynchronous interface with two backends:
//   - `embedded` (store/embedded.ts): today's in-process lru-cache table, session LRU and SQLite
//     group database, wrapped without changing their behaviour; one instance owns its state;
//   - `redis` (store/redis.ts): shared by every locatord instance pointed at the same Redis,
//     so a terminal may register through one instance and be found through another.
// The daemon's default embedded path keeps calling the classes directly (synchronous, no
// promise per request); the async handlers of store/handlers.ts run on either backend.
import type { Address } from '../../wire/addr.js';
import type { GroupInfo } from '../groups.js';
import type { RegistrationExtra } from '../table.js';

/** One registration as the store keeps it. */
export interface Presence {
  addr: Address;
  netMode: number;
  visibility: number;
  /** Session (hex) of the message that last changed the record, and its sequence number. */
  sidHex: string;
  seq: number;
  /** Registration (last renewal) time and expiry, ms since the epoch. */
  regMs: number;
  expMs: number;
  nickname?: string | undefined;
  extra?: RegistrationExtra | undefined;
  /** REGISTER `reachable`: the terminal accepts introductions (INTRO). */
  reachable?: boolean | undefined;
  /**
   * Redis mode: the instance (random ID, hex) that last wrote the record, i.e. the one the
   * terminal last spoke to: it probes the terminal and pushes its INTROs.
   */
  inst?: string | undefined;
}

/** What updatePresence's `change` decides from the current record. */
export interface PresenceChange<T> {
  result: T;
  /** Store this record (expiry at its expMs). */
  put?: Presence;
  /** Delete the record. */
  remove?: boolean;
}

/** What another instance needs to serve a session opened elsewhere. */
export interface StoredSession {
  sidHex: string;
  locatorHex: string;
  aud: string;
  /** Ticket expiry, seconds since the epoch. */
  exp: number;
  kid?: string | undefined;
  /** Raw session keys (terminal->server, server->terminal). */
  t2s: Buffer;
  s2t: Buffer;
}

export interface GroupBackend {
  create(owner: Buffer, name: string, joinCode?: string): Promise<Buffer>;
  join(groupId: Buffer, locatorId: Buffer, joinCode?: string): Promise<boolean>;
  joinAll(locatorId: Buffer, joins: readonly { groupId: Uint8Array; joinCode?: string }[]): Promise<number>;
  leave(groupId: Buffer, locatorId: Buffer): Promise<boolean>;
  get(groupId: Buffer): Promise<GroupInfo | undefined>;
  isMember(groupId: Buffer, locatorId: Buffer): Promise<boolean>;
  members(groupId: Buffer, offset: number, limit: number): Promise<Buffer[]>;
  shareGroup(a: Buffer, b: Buffer): Promise<boolean>;
}

export interface LocatorStore {
  readonly kind: 'embedded' | 'redis';
  getPresence(idHex: string): Promise<Presence | undefined>;
  /** Many at once (a query): one round trip on Redis (MGET, or pipelined GETs on Cluster). */
  getPresences(idHexes: readonly string[]): Promise<(Presence | undefined)[]>;
  /** Store with expiry at `p.expMs`. */
  putPresence(idHex: string, p: Presence): Promise<void>;
  deletePresence(idHex: string): Promise<boolean>;
  /**
   * Read-decide-write as one atomic step across instances: `change` sees the current record
   * (undefined if none) and says what to write; the write happens only if nobody changed the
   * record since it was read, else `change` runs again on the new record (Redis: compare-and-set
   * by a Lua script; bounded retries, then RedisUnavailable).
   */
  updatePresence<T>(idHex: string, change: (cur: Presence | undefined) => PresenceChange<T>): Promise<T>;
  saveSession(s: StoredSession): Promise<void>;
  loadSession(sidHex: string): Promise<StoredSession | undefined>;
  readonly groups: GroupBackend;
  /** Commands waiting for Redis (0 for embedded). */
  readonly pending: number;
  close(): Promise<void>;
}
