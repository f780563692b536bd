// The group database (the patent's second embodiment, group database 244): groups and their
// members, durable in SQLite. Unlike registrations this is hard state: every change is committed
// (WAL mode) before it is acknowledged, so an acknowledged change survives SIGKILL.
//
// synchronous: NORMAL by default. In WAL mode a NORMAL commit is a write(2) into the WAL: it is
// in the kernel when the ack leaves, so it survives the process being killed; only a power loss
// or kernel crash can lose the last commits (the database stays consistent). FULL also fsyncs the
// WAL at each commit; better-sqlite3 is synchronous, so that fsync stalls every datagram for its
// duration (measured here: ~20 ms on a virtual disk), and an authenticated terminal looping
// join/leave could stall the server. Choose FULL (`--db-sync full`) on fast storage when power
// loss must not lose a join. Reads (visibility checks, member lists) never write.
import { randomBytes } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import Database from 'better-sqlite3';
import { DevlocError, ErrorCode } from '../wire/errors.js';

export const GROUP_ID_BYTES = 16;

/**
 * Checks a join proof against a group's stored code key (src/wire/groupcode.ts): the handler
 * binds it to the session, group and nonce of the request; the store only supplies the key.
 */
export type CodeProof = (codeKey: Buffer) => boolean;

/** One join of REGISTER's joinGroups (or a GROUP_JOIN): the group, and for a closed one a proof. */
export interface JoinRequest {
  groupId: Uint8Array;
  proof?: CodeProof | undefined;
}

/**
 * Failed join proofs (a proof sent for a closed group that does not verify; a missing proof is
 * refused without counting, as it tests no guess) allowed in one window, per terminal and per group (issue 15: a 4-digit code fell in 421 guesses). With these, guessing a
 * 6-digit code takes about 10^6 / 2 / 20 windows of 10 minutes (~300 days) whatever the number
 * of terminals; a group under attack refuses its honest joiners too until the window ends
 * (RATE_LIMITED with retryAfterMs), which is the price of a cap that holds across devices.
 */
export const JOIN_FAILURE_LIMITS = { perTerminal: 5, perGroup: 20, windowMs: 10 * 60_000 } as const;

/** Failed join proofs in the current windows, of a terminal and of a group (GroupBackend.joinFailures). */
export interface JoinFailureCounts {
  terminal: number;
  group: number;
  /**
   * Time left of each count's window, ms: what a refusal's retryAfterMs says. 0 when the count is
   * 0; for a count under its limit a backend may give 0 too (Redis reads the time left, a PTTL,
   * only of a count at its limit, the only one a refusal names).
   */
  terminalLeftMs: number;
  groupLeftMs: number;
}

/** Failed join attempts counted in fixed windows (the embedded store's; Redis keeps its own). */
export class JoinFailures {
  private readonly counts = new Map<string, { n: number; untilMs: number }>();

  constructor(private readonly now: () => number, private readonly maxKeys = 100_000) {}

  /** A key's failures in its current window, and the ms left of that window (0, 0 when none). */
  private read(key: string, t: number): [number, number] {
    const c = this.counts.get(key);
    return c && c.untilMs > t ? [c.n, c.untilMs - t] : [0, 0];
  }

  /** Failures in the current windows of the terminal and of the group, and the time left of each. */
  get(groupId: Buffer, locatorId: Buffer): JoinFailureCounts {
    const t = this.now();
    const [terminal, terminalLeftMs] = this.read(`t${locatorId.toString('hex')}`, t);
    const [group, groupLeftMs] = this.read(`g${groupId.toString('hex')}`, t);
    return { terminal, group, terminalLeftMs, groupLeftMs };
  }

  note(groupId: Buffer, locatorId: Buffer): void {
    const t = this.now();
    if (this.counts.size >= this.maxKeys) for (const [k, c] of this.counts) if (c.untilMs <= t) this.counts.delete(k);
    for (const key of [`t${locatorId.toString('hex')}`, `g${groupId.toString('hex')}`]) {
      const c = this.counts.get(key);
      if (c && c.untilMs > t) c.n++;
      // Bounded: when every entry is live, the oldest inserted goes (Map keeps insertion order).
      else {
        this.counts.delete(key);
        if (this.counts.size >= this.maxKeys) this.counts.delete(this.counts.keys().next().value as string);
        this.counts.set(key, { n: 1, untilMs: t + JOIN_FAILURE_LIMITS.windowMs });
      }
    }
  }
}

export type DbSync = 'normal' | 'full';

export interface GroupLimits {
  /** Most members in one group. */
  maxMembers: number;
  /** Most groups one terminal belongs to (created ones included). */
  maxGroupsPerTerminal: number;
}

export interface GroupInfo {
  id: Buffer;
  name: string;
  owner: Buffer;
  closed: boolean;
  createdMs: number;
  members: number;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS groups (
  id         BLOB PRIMARY KEY,
  name       TEXT NOT NULL,
  owner      BLOB NOT NULL,
  code_salt  BLOB,                         -- before version 2: salted hash of the code (unusable now)
  code_hash  BLOB,
  created_ms INTEGER NOT NULL,
  code_key   BLOB                          -- closed group: the code key (src/wire/groupcode.ts)
);
CREATE TABLE IF NOT EXISTS members (
  seq        INTEGER PRIMARY KEY,          -- join order: the page cursor counts in it
  group_id   BLOB NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
  locator_id BLOB NOT NULL,
  joined_ms  INTEGER NOT NULL,
  UNIQUE (group_id, locator_id)
);
CREATE INDEX IF NOT EXISTS members_by_group ON members(group_id, seq);
CREATE INDEX IF NOT EXISTS members_by_locator ON members(locator_id, group_id);
`;

/** Version 2 (issue 15): join proofs against a stored code key instead of codes sent in clear. */
const SCHEMA_VERSION = 2;

interface GroupRow {
  id: Buffer;
  name: string;
  owner: Buffer;
  code_salt: Buffer | null;
  code_hash: Buffer | null;
  code_key: Buffer | null;
  created_ms: number;
}

export class GroupStore {
  private readonly db: Database.Database;
  limits: GroupLimits;
  private readonly now: () => number;
  /** Soft state: failed join proofs of the current windows (lost on restart, like rate limits). */
  private readonly failures: JoinFailures;
  private readonly st: {
    getGroup: Database.Statement<[Buffer], GroupRow>;
    insertGroup: Database.Statement<[Buffer, string, Buffer, Buffer | null, number]>;
    deleteGroup: Database.Statement<[Buffer]>;
    isMember: Database.Statement<[Buffer, Buffer], { one: number }>;
    addMember: Database.Statement<[Buffer, Buffer, number]>;
    removeMember: Database.Statement<[Buffer, Buffer]>;
    countMembers: Database.Statement<[Buffer], { n: number }>;
    countGroupsOf: Database.Statement<[Buffer], { n: number }>;
    page: Database.Statement<[Buffer, number, number], { locator_id: Buffer }>;
    groupsOf: Database.Statement<[Buffer], { group_id: Buffer }>;
    share: Database.Statement<[Buffer, Buffer], { one: number }>;
  };

  /** Open (creating if needed) the database at `path`; ":memory:" for tests. */
  constructor(path: string, limits: GroupLimits, o: { now?: () => number; sync?: DbSync } = {}) {
    // Owner-only, like every file in the state directory (SQLite gives -wal/-shm the same mode).
    if (path !== ':memory:') closeSync(openSync(path, 'a', 0o600));
    this.db = new Database(path);
    this.limits = limits;
    this.now = o.now ?? Date.now;
    this.failures = new JoinFailures(this.now);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma(`synchronous = ${o.sync === 'full' ? 'FULL' : 'NORMAL'}`);
    this.db.pragma('foreign_keys = ON');
    const version = this.db.pragma('user_version', { simple: true }) as number;
    this.db.exec(SCHEMA);
    // A database of version 1 has no code_key: its closed groups stay closed to everyone (their
    // codes were never kept) until re-created.
    if (version < SCHEMA_VERSION) {
      const cols = this.db.prepare<[], { name: string }>('PRAGMA table_info(groups)').all().map((c) => c.name);
      if (!cols.includes('code_key')) this.db.exec('ALTER TABLE groups ADD COLUMN code_key BLOB');
      this.db.pragma(`user_version = ${SCHEMA_VERSION}`);
    }
    const p = <P extends unknown[], R = unknown>(sql: string) => this.db.prepare<P, R>(sql);
    this.st = {
      getGroup: p('SELECT id, name, owner, code_salt, code_hash, code_key, created_ms FROM groups WHERE id = ?'),
      insertGroup: p('INSERT INTO groups (id, name, owner, code_key, created_ms) VALUES (?, ?, ?, ?, ?)'),
      deleteGroup: p('DELETE FROM groups WHERE id = ?'),
      isMember: p('SELECT 1 AS one FROM members WHERE group_id = ? AND locator_id = ?'),
      addMember: p('INSERT INTO members (group_id, locator_id, joined_ms) VALUES (?, ?, ?)'),
      removeMember: p('DELETE FROM members WHERE group_id = ? AND locator_id = ?'),
      countMembers: p('SELECT COUNT(*) AS n FROM members WHERE group_id = ?'),
      countGroupsOf: p('SELECT COUNT(*) AS n FROM members WHERE locator_id = ?'),
      page: p('SELECT locator_id FROM members WHERE group_id = ? ORDER BY seq LIMIT ? OFFSET ?'),
      groupsOf: p('SELECT group_id FROM members WHERE locator_id = ? ORDER BY group_id'),
      share: p(
        'SELECT 1 AS one FROM members a JOIN members b ON a.group_id = b.group_id WHERE a.locator_id = ? AND b.locator_id = ? LIMIT 1',
      ),
    };
  }

  private checkRoomFor(locatorId: Buffer): void {
    if (this.st.countGroupsOf.get(locatorId)!.n >= this.limits.maxGroupsPerTerminal) {
      throw new DevlocError(ErrorCode.FULL, `terminal is in ${this.limits.maxGroupsPerTerminal} groups already`);
    }
  }

  /**
   * Create a group owned by `owner`, who becomes its first member; closed when `codeKey` is
   * given. The ID is drawn here (128 random bits): no message names the ID of a group to create,
   * so an emptied and deleted group cannot be re-created by anyone (its ID is never drawn again).
   */
  create(owner: Buffer, name: string, codeKey?: Buffer): Buffer {
    const id = randomBytes(GROUP_ID_BYTES);
    this.db.transaction(() => {
      this.checkRoomFor(owner);
      const now = this.now();
      this.st.insertGroup.run(id, name, owner, codeKey ?? null, now);
      this.st.addMember.run(id, owner, now);
    })();
    return id;
  }

  /** Add `locatorId` to `groupId` (idempotent) or throw NOT_FOUND / FORBIDDEN / FULL. True when it changed. */
  private joinOne(groupId: Buffer, locatorId: Buffer, proof: CodeProof | undefined): boolean {
    const g = this.st.getGroup.get(groupId);
    if (!g) throw new DevlocError(ErrorCode.NOT_FOUND, 'no such group');
    if (this.st.isMember.get(groupId, locatorId)) return false;
    if (g.code_key || g.code_hash) {
      const ok = g.code_key !== null && proof !== undefined && proof(g.code_key);
      if (!ok) throw new DevlocError(ErrorCode.FORBIDDEN, proof === undefined ? 'group is closed: join proof required' : 'wrong join code');
    }
    if (this.st.countMembers.get(groupId)!.n >= this.limits.maxMembers) {
      throw new DevlocError(ErrorCode.FULL, `group has ${this.limits.maxMembers} members already`);
    }
    this.checkRoomFor(locatorId);
    this.st.addMember.run(groupId, locatorId, this.now());
    return true;
  }

  /** GROUP_JOIN: true when `locatorId` was not a member before. */
  join(groupId: Buffer, locatorId: Buffer, proof?: CodeProof): boolean {
    return this.db.transaction(() => this.joinOne(groupId, locatorId, proof))();
  }

  /**
   * REGISTER's joinGroups, all or nothing. Only existing groups: a group not known is NOT_FOUND
   * (issue 15: creating it with the ID asked for let anyone re-create an emptied closed group
   * as an open one). Returns how many changed.
   */
  joinAll(locatorId: Buffer, joins: readonly JoinRequest[]): number {
    // Nothing to write for groups already joined: no transaction, no fsync on re-registration.
    const pending = joins.filter((j) => !this.st.isMember.get(Buffer.from(j.groupId), locatorId));
    if (pending.length === 0) return 0;
    return this.db.transaction(() => {
      let n = 0;
      for (const j of pending) if (this.joinOne(Buffer.from(j.groupId), locatorId, j.proof)) n++;
      return n;
    })();
  }

  joinFailures(groupId: Buffer, locatorId: Buffer): JoinFailureCounts {
    return this.failures.get(groupId, locatorId);
  }

  noteJoinFailure(groupId: Buffer, locatorId: Buffer): void {
    this.failures.note(groupId, locatorId);
  }

  /** Leave (idempotent); a group left empty is deleted. True when `locatorId` was a member. */
  leave(groupId: Buffer, locatorId: Buffer): boolean {
    return this.db.transaction(() => {
      const changed = this.st.removeMember.run(groupId, locatorId).changes > 0;
      if (changed && this.st.countMembers.get(groupId)!.n === 0) this.st.deleteGroup.run(groupId);
      return changed;
    })();
  }

  get(groupId: Buffer): GroupInfo | undefined {
    const g = this.st.getGroup.get(groupId);
    if (!g) return undefined;
    return { id: g.id, name: g.name, owner: g.owner, closed: g.code_key !== null || g.code_hash !== null, createdMs: g.created_ms, members: this.st.countMembers.get(groupId)!.n };
  }

  isMember(groupId: Buffer, locatorId: Buffer): boolean {
    return this.st.isMember.get(groupId, locatorId) !== undefined;
  }

  /** Members in join order from `offset`, at most `limit`. */
  members(groupId: Buffer, offset: number, limit: number): Buffer[] {
    return this.st.page.all(groupId, limit, offset).map((r) => r.locator_id);
  }

  groupsOf(locatorId: Buffer): Buffer[] {
    return this.st.groupsOf.all(locatorId).map((r) => r.group_id);
  }

  /** Do `a` and `b` share at least one group? (Visibility 1.) */
  shareGroup(a: Buffer, b: Buffer): boolean {
    return this.st.share.get(a, b) !== undefined;
  }

  close(): void {
    this.db.close();
  }
}
