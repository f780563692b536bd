// The store behind locatord's state (issue 9, issue 14): presence (the registration table),
// sessions, and groups, as one interface whose operations answer synchronously or with a
// promise (store/maybe.ts), with two backends:
//   - `embedded` (store/embedded.ts): the in-process lru-cache table, session LRU and SQLite
//     group database; it answers synchronously, so the embedded hot path creates no promise;
//   - `redis` (store/redis.ts): shared by every locatord instance pointed at the same Redis,
//     so a terminal may register through one instance and be found through another.
// One set of handlers (handlers/*.ts) runs on both. What an instance does beside reading and
// writing the state (probe schedule, SIGHUP clean-up, introductions relayed between instances)
// is the `ServedStore` below: store/embedded.ts and store/shared.ts (Redis + relay + schedule).
import type { Address } from '../../wire/addr.js';
import type { CodeProof, GroupInfo, JoinFailureCounts, JoinRequest } from '../groups.js';
import type { DeferredClaim, ServerSession } from '../../net/sessions.js';
import type { LocatordLimits } from '../options.js';
import type { KeyedSession } from '../snapshot.js';
import type { RegistrationExtra } from '../table.js';
import type { MaybePromise } from './maybe.js';
import type { RelayResult } from './relay.js';

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

/** A terminal refused by every instance until `untilMs`, with the code it is told. */
export interface Refused {
  code: number;
  message: string;
  untilMs: number;
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
  /** A new group with an ID drawn by the store; closed when `codeKey` is given. */
  create(owner: Buffer, name: string, codeKey?: Buffer): MaybePromise<Buffer>;
  join(groupId: Buffer, locatorId: Buffer, proof?: CodeProof): MaybePromise<boolean>;
  /** REGISTER's joinGroups: existing groups only, all or nothing. */
  joinAll(locatorId: Buffer, joins: readonly JoinRequest[]): MaybePromise<number>;
  /** Failed join proofs in the current window (groups.ts, JOIN_FAILURE_LIMITS), of the terminal and of the group, and the time left of each window. */
  joinFailures(groupId: Buffer, locatorId: Buffer): MaybePromise<JoinFailureCounts>;
  noteJoinFailure(groupId: Buffer, locatorId: Buffer): MaybePromise<void>;
  leave(groupId: Buffer, locatorId: Buffer): MaybePromise<boolean>;
  get(groupId: Buffer): MaybePromise<GroupInfo | undefined>;
  isMember(groupId: Buffer, locatorId: Buffer): MaybePromise<boolean>;
  members(groupId: Buffer, offset: number, limit: number): MaybePromise<Buffer[]>;
  shareGroup(a: Buffer, b: Buffer): MaybePromise<boolean>;
}

/**
 * Subscriptions (WATCH): which terminals each watcher watches, and for each pair the last view
 * the watcher was told of (so a push goes out only when what the watcher may see changes: a
 * hidden terminal going offline changes nothing it sees). Keys are locator IDs in hex.
 */
export interface WatchBackend {
  /**
   * Add `targets` (distinct: watches.ts distinctTargets) to the watcher's list unless it would
   * then exceed `max`; the new count, or undefined when refused.
   */
  add(watcherHex: string, targets: readonly string[], views: readonly string[], max: number): MaybePromise<number | undefined>;
  /** Remove `targets` (or every one); the count left. */
  remove(watcherHex: string, targets: readonly string[] | 'all'): MaybePromise<number>;
  count(watcherHex: string): MaybePromise<number>;
  /** The watchers of `targetHex`. */
  watchersOf(targetHex: string): MaybePromise<string[]>;
  /** Record `view` as the last one `watcherHex` was told of `targetHex`: true when it differs (and the pair is watched). */
  swapView(watcherHex: string, targetHex: string, view: string): MaybePromise<boolean>;
}

/**
 * The partner-search index (SEARCH): per media ID, the terminals whose record says they look for
 * a partner (search-index.ts searchMediaOf), in locator ID order. An entry is a hint: the handler
 * reads the record and drops an entry that no longer holds (Redis, where records expire by
 * themselves); the store keeps the index bounded by the live records.
 */
export interface SearchBackend {
  /** Up to `limit` locator IDs (hex) indexed under `mediaId`, in ID order, after `afterHex` ('' = from the start). */
  page(mediaId: string, afterHex: string, limit: number): MaybePromise<string[]>;
  /** Remove an entry found stale. */
  drop(mediaId: string, idHex: string): MaybePromise<void>;
  /** The record of `idHex` went from `cur` to `next` (undefined: none): file it under its media ID, or not (what every write of the store does). */
  index(idHex: string, cur: Presence | undefined, next: Presence | undefined): MaybePromise<void>;
}

export interface LocatorStore {
  readonly kind: 'embedded' | 'redis';
  getPresence(idHex: string): MaybePromise<Presence | undefined>;
  /** Many at once (a query): one round trip on Redis (MGET, or pipelined GETs on Cluster). */
  getPresences(idHexes: readonly string[]): MaybePromise<(Presence | undefined)[]>;
  /** Store with expiry at `p.expMs`. */
  putPresence(idHex: string, p: Presence): MaybePromise<void>;
  deletePresence(idHex: string): MaybePromise<boolean>;
  /**
   * Read-decide-write as one atomic step across instances: `change` sees the current record
   * (undefined if none) and says what to write; the write happens only if nobody changed the
   * record since it was read, else `change` runs again on the new record (Redis: compare-and-set
   * by a Lua script; bounded retries, then RedisUnavailable). `session` is the session whose
   * message makes the change (a record written is always of this session): the embedded store
   * links the record to it, the shared one files it in this instance's probe schedule. `claim`:
   * the request's shared replay window claim left to the handler (RequestContext.claim; only
   * with a shared window): taken with the write, or alone when nothing is written, before the
   * result; refused, it rejects with ClaimRefused and nothing is written.
   */
  updatePresence<T>(idHex: string, change: (cur: Presence | undefined) => PresenceChange<T>, session?: ServerSession, claim?: DeferredClaim): MaybePromise<T>;
  /**
   * The shared refusal list (issue 19): a revoked terminal's tickets are refused by every
   * instance until `untilMs`. Embedded: nothing to share (the instance's own list, net/ended.ts,
   * is the list); Redis: a key per terminal with that expiry.
   */
  refuse(locatorHex: string, r: Refused): MaybePromise<void>;
  refusal(locatorHex: string): MaybePromise<Refused | undefined>;
  saveSession(s: StoredSession): MaybePromise<void>;
  loadSession(sidHex: string): MaybePromise<StoredSession | undefined>;
  readonly groups: GroupBackend;
  readonly watches: WatchBackend;
  readonly search: SearchBackend;
  /** Commands waiting for Redis (0 for embedded). */
  readonly pending: number;
  close(): MaybePromise<void>;
}

/** A registration due for a liveness probe: where, and in which session to MAC it. */
export interface DueProbe {
  session: ServerSession;
  addr: Address;
}

/** The store as one locatord instance serves it: the state, and this instance's duties. */
export interface ServedStore extends LocatorStore {
  /** Redis: this instance's ID (Presence.inst of the records it writes); undefined embedded. */
  readonly instanceId: string | undefined;
  /** Sessions: the other instances may serve this one (Redis); nothing to do embedded. */
  shareSession(s: KeyedSession): MaybePromise<void>;
  /**
   * Free expired records and pick, at most `maxProbes`, the registrations this instance
   * should probe now (embedded: its table; Redis: those it wrote last, still so in Redis).
   */
  sweep(maxProbes: number): MaybePromise<{ expired: number; due: DueProbe[] }>;
  /** Remove the registrations of sessions `drop` says (SIGHUP: keys no longer trusted); how many. */
  removeWhere(drop: (s: ServerSession) => boolean): MaybePromise<number>;
  /** Redis: ask instance `owner` to push `intro` (INTRO without MAC) to `targetHex` (store/relay.ts). */
  relayIntro?(owner: string, targetHex: string, intro: Buffer): Promise<RelayResult>;
  /** Limits changed (SIGHUP): group bounds, probe point. */
  setLimits(limits: LocatordLimits): void;
}
