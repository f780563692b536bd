// The address book: nickname <-> 16-byte ID (a peer's locator ID, or a group ID), kept in a
// small JSON file so a user can say "alice" wherever an ID is accepted. Writes are atomic
// (temporary file in the same directory, fsync, rename), so a crash never leaves half a file.
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { dirname, basename, join } from 'node:path';
import { formatId, isIdText, isNickname, parseId } from './ids.js';

export interface PeerEntry {
  name: string;
  /** 32 lowercase hex digits. */
  id: string;
  /** "peer" (a locator ID) or "group" (a group ID); informational. */
  kind: 'peer' | 'group';
}

interface FileShape {
  version: 1;
  peers: PeerEntry[];
}

/** Most entries kept: the book is for people, and a bound keeps the file (and a read of it) small. */
export const MAX_PEERS = 10_000;

export class AddressBookError extends Error {
  override readonly name = 'AddressBookError';
}

export class AddressBook {
  private entries = new Map<string, PeerEntry>();

  constructor(readonly path: string) {}

  /** Load the file; a missing file is an empty book. Throws AddressBookError on a bad file. */
  load(): void {
    let text: string;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        this.entries = new Map();
        return;
      }
      throw new AddressBookError(`cannot read address book ${this.path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    let o: unknown;
    try {
      o = JSON.parse(text);
    } catch {
      throw new AddressBookError(`address book ${this.path} is not JSON`);
    }
    const peers = (o as Partial<FileShape> | null)?.peers;
    if (!Array.isArray(peers)) throw new AddressBookError(`address book ${this.path}: expected {"version":1,"peers":[...]}`);
    const m = new Map<string, PeerEntry>();
    for (const [i, p] of peers.entries()) {
      const e = p as Partial<PeerEntry>;
      if (typeof e.name !== 'string' || !isNickname(e.name) || typeof e.id !== 'string' || !isIdText(e.id)) {
        throw new AddressBookError(`address book ${this.path}: entry ${i} is not {name, id}`);
      }
      m.set(e.name, { name: e.name, id: e.id.toLowerCase(), kind: e.kind === 'group' ? 'group' : 'peer' });
    }
    this.entries = m;
  }

  list(): PeerEntry[] {
    return [...this.entries.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  get(name: string): PeerEntry | undefined {
    return this.entries.get(name);
  }

  /** Names given to an ID (reverse lookup, for display). */
  namesOf(id: string): string[] {
    const lower = id.toLowerCase();
    return this.list().filter((e) => e.id === lower).map((e) => e.name);
  }

  /** Add or replace `name`. Throws AddressBookError on a bad name or ID. */
  add(name: string, id: string, kind: 'peer' | 'group' = 'peer'): PeerEntry {
    if (!isNickname(name)) throw new AddressBookError(`bad nickname ${JSON.stringify(name)}: 1-32 of A-Z a-z 0-9 . _ -, not 32 hex digits`);
    const bytes = parseId(id);
    if (!bytes) throw new AddressBookError(`bad ID ${JSON.stringify(id)}: expected 32 hex digits`);
    if (!this.entries.has(name) && this.entries.size >= MAX_PEERS) throw new AddressBookError(`address book full (${MAX_PEERS} entries)`);
    const e: PeerEntry = { name, id: formatId(bytes), kind };
    const next = new Map(this.entries).set(name, e);
    this.save(next);
    this.entries = next;
    return e;
  }

  /**
   * Remember the partners of a match under their nicknames: each one with a valid nickname that
   * is not in the book yet, neither by name nor by ID (the user's own entries are never
   * replaced). Returns the entries added.
   */
  addPartners(members: readonly { id: string; nickname?: string | undefined; self: boolean }[]): PeerEntry[] {
    const added: PeerEntry[] = [];
    for (const m of members) {
      const name = m.nickname;
      if (m.self || name === undefined || !isNickname(name) || this.entries.has(name) || this.namesOf(m.id).length > 0) continue;
      if (this.entries.size >= MAX_PEERS) break;
      added.push(this.add(name, m.id, 'peer'));
    }
    return added;
  }

  /** Remove `name`; false when absent. */
  remove(name: string): boolean {
    if (!this.entries.has(name)) return false;
    const next = new Map(this.entries);
    next.delete(name);
    this.save(next);
    this.entries = next;
    return true;
  }

  /** An ID in text, or a nickname from the book, to 16 bytes; null when neither. */
  resolve(target: string): Buffer | null {
    const direct = parseId(target);
    if (direct) return direct;
    const e = this.entries.get(target);
    return e ? Buffer.from(e.id, 'hex') : null;
  }

  private save(m: Map<string, PeerEntry>): void {
    const body: FileShape = { version: 1, peers: [...m.values()].sort((a, b) => a.name.localeCompare(b.name)) };
    try {
      writeFileAtomic(this.path, JSON.stringify(body, null, 2) + '\n');
    } catch (err) {
      throw new AddressBookError(`cannot write address book ${this.path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  }
}

/**
 * Write `text` to `path` atomically (temporary file in the same directory, fsync, rename, fsync
 * of the directory): a crash leaves the old file or the new one. The agent's state files
 * (address book, allow list) are written so.
 */
export function writeFileAtomic(path: string, text: string): void {
  const dir = dirname(path);
  mkdirSync(dir, { recursive: true, mode: 0o750 });
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${Date.now()}.tmp`);
  let fd: number | undefined;
  try {
    fd = openSync(tmp, 'wx', 0o640);
    writeSync(fd, text);
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, path);
    // Make the rename itself durable.
    try {
      const dfd = openSync(dir, 'r');
      try { fsyncSync(dfd); } finally { closeSync(dfd); }
    } catch { /* some filesystems refuse fsync on a directory; the rename is still atomic */ }
  } catch (err) {
    if (fd !== undefined) closeSync(fd);
    try { unlinkSync(tmp); } catch { /* already gone */ }
    throw err;
  }
}
