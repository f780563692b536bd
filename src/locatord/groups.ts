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
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import Database from 'better-sqlite3';
import { DevlocError, ErrorCode } from '../wire/errors.js';

export const GROUP_ID_BYTES = 16;

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
  code_salt  BLOB,
  code_hash  BLOB,
  created_ms INTEGER NOT NULL
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
PRAGMA user_version = 1;
`;

function hashCode(salt: Uint8Array, code: string): Buffer {
  return createHash('sha256').update(salt).update(code, 'utf8').digest();
}

interface GroupRow {
  id: Buffer;
  name: string;
  owner: Buffer;
  code_salt: Buffer | null;
  code_hash: Buffer | null;
  created_ms: number;
}

export class GroupStore {
  private readonly db: Database.Database;
  limits: GroupLimits;
  private readonly now: () => number;
  private readonly st: {
    getGroup: Database.Statement<[Buffer], GroupRow>;
    insertGroup: Database.Statement<[Buffer, string, Buffer, Buffer | null, Buffer | null, number]>;
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
    this.db.pragma('journal_mode = WAL');
    this.db.pragma(`synchronous = ${o.sync === 'full' ? 'FULL' : 'NORMAL'}`);
    this.db.pragma('foreign_keys = ON');
    this.db.exec(SCHEMA);
    const p = <P extends unknown[], R = unknown>(sql: string) => this.db.prepare<P, R>(sql);
    this.st = {
      getGroup: p('SELECT id, name, owner, code_salt, code_hash, created_ms FROM groups WHERE id = ?'),
      insertGroup: p('INSERT INTO groups (id, name, owner, code_salt, code_hash, created_ms) VALUES (?, ?, ?, ?, ?, ?)'),
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

  private insertGroup(id: Buffer, owner: Buffer, name: string, joinCode: string | undefined): void {
    this.checkRoomFor(owner);
    const salt = joinCode !== undefined ? randomBytes(16) : null;
    const hash = salt && joinCode !== undefined ? hashCode(salt, joinCode) : null;
    const now = this.now();
    this.st.insertGroup.run(id, name, owner, salt, hash, now);
    this.st.addMember.run(id, owner, now);
  }

  /** Create a group owned by `owner`, who becomes its first member. Closed when `joinCode` is given. */
  create(owner: Buffer, name: string, joinCode?: string): Buffer {
    const id = randomBytes(GROUP_ID_BYTES);
    this.db.transaction(() => this.insertGroup(id, owner, name, joinCode))();
    return id;
  }

  /** Add `locatorId` to `groupId` (idempotent) or throw NOT_FOUND / FORBIDDEN / FULL. True when it changed. */
  private joinOne(groupId: Buffer, locatorId: Buffer, joinCode: string | undefined, createIfMissing: boolean): boolean {
    const g = this.st.getGroup.get(groupId);
    if (!g) {
      if (!createIfMissing) throw new DevlocError(ErrorCode.NOT_FOUND, 'no such group');
      this.insertGroup(groupId, locatorId, '', joinCode);
      return true;
    }
    if (this.st.isMember.get(groupId, locatorId)) return false;
    if (g.code_hash && g.code_salt) {
      const ok = joinCode !== undefined && timingSafeEqual(hashCode(g.code_salt, joinCode), g.code_hash);
      if (!ok) throw new DevlocError(ErrorCode.FORBIDDEN, joinCode === undefined ? 'group is closed: join code required' : 'wrong join code');
    }
    if (this.st.countMembers.get(groupId)!.n >= this.limits.maxMembers) {
      throw new DevlocError(ErrorCode.FULL, `group has ${this.limits.maxMembers} members already`);
    }
    this.checkRoomFor(locatorId);
    this.st.addMember.run(groupId, locatorId, this.now());
    return true;
  }

  /** GROUP_JOIN: true when `locatorId` was not a member before. */
  join(groupId: Buffer, locatorId: Buffer, joinCode?: string): boolean {
    return this.db.transaction(() => this.joinOne(groupId, locatorId, joinCode, false))();
  }

  /**
   * REGISTER's joinGroups, all or nothing: a group not known yet is created with the terminal as
   * its owner (the patent: "in a case where the group has not been registered, the registration
   * unit newly registers the group"), closed with the given code if any. Returns how many changed.
   */
  joinAll(locatorId: Buffer, joins: readonly { groupId: Uint8Array; joinCode?: string }[]): number {
    // Nothing to write for groups already joined: no transaction, no fsync on re-registration.
    const pending = joins.filter((j) => !this.st.isMember.get(Buffer.from(j.groupId), locatorId));
    if (pending.length === 0) return 0;
    return this.db.transaction(() => {
      let n = 0;
      for (const j of pending) if (this.joinOne(Buffer.from(j.groupId), locatorId, j.joinCode, true)) n++;
      return n;
    })();
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
    return { id: g.id, name: g.name, owner: g.owner, closed: g.code_hash !== null, createdMs: g.created_ms, members: this.st.countMembers.get(groupId)!.n };
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
