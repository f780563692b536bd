// Soft state across a clean restart: on SIGTERM locatord writes its sessions (with their raw
// keys, replay windows and send sequence) and registrations (with their absolute expiry) to
// <state-dir>/locatord.snapshot, 0600, atomically (temporary file, fsync, rename, fsync of the
// directory). At start it loads the file and, once its sockets are bound, deletes it before
// serving: a snapshot is used once, so a crash later can never bring back replay windows older
// than traffic already accepted.
//
// Format: JSON lines. A header {"v":1,"kind":"devloc-locatord-snapshot",...}, then one line per
// session {"t":"s",...}, per registration {"t":"r",...} and per watch list {"t":"w",...} (a
// watcher's subscriptions with the view last told for each, so a restart neither loses a
// subscription nor pushes what the watcher was already told; an older reader that does not know
// "w" lines fails the file, which costs soft state only). Terminals are named by locator ID
// only; no device ID ever reaches locatord, so none can be in here.
import { closeSync, createReadStream, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import type { ServerSession } from '../net/sessions.js';
import { newServerSession } from '../net/sessions.js';
import type { Address } from '../wire/addr.js';
import type { Props } from '../wire/schema.js';
import { rawKey, ReplayWindow } from '../wire/session.js';
import type { RegistrationExtra, RegistrationTable, RichPresence } from './table.js';
import { Registration } from './table.js';
import type { MemoryWatches } from './watches.js';
import { MAX_WATCHES } from '../wire/catalog.js';

export const SNAPSHOT_FILE = 'locatord.snapshot';
const KIND = 'devloc-locatord-snapshot';

/** A server session as locatord keeps it: with the kid of the ticket that opened it (SIGHUP). */
export type KeyedSession = ServerSession & { kid?: string };

interface SessionLine {
  t: 's';
  sid: string;
  loc: string;
  aud: string;
  exp: number;
  kid?: string;
  /** Raw terminal-to-server and server-to-terminal keys, base64url. */
  t2s: string;
  s2t: string;
  win: { highest: number; seen: number[] };
  tx: number;
}

interface RecordLine {
  t: 'r';
  id: string;
  ip: string;
  port: number;
  netMode: number;
  vis: number;
  /** Accepts introductions (absent: no). */
  reach?: 1;
  regMs: number;
  expMs: number;
  seq: number;
  sid?: string;
  nickname?: string;
  mediaId?: string;
  localAddrs?: Address[];
  community?: Props;
  allow?: string[];
  /** The rich presence record beside the media ID (looking for a partner, wants, status). */
  presence?: RichPresence;
}

/** A watcher's subscriptions: target locator IDs (hex) and each one's view code (watches.ts viewCode). */
interface WatchLine {
  t: 'w';
  id: string;
  ts: string[];
  vs: number[];
}

export function sessionToLine(s: KeyedSession): SessionLine {
  const line: SessionLine = {
    t: 's', sid: s.sidHex, loc: s.locatorHex, aud: s.aud, exp: s.exp,
    t2s: rawKey(s.keys.terminalToServer).toString('base64url'),
    s2t: rawKey(s.keys.serverToTerminal).toString('base64url'),
    win: s.window.toJSON(), tx: s.txSeq,
  };
  if (s.kid !== undefined) line.kid = s.kid;
  return line;
}

export function sessionFromLine(l: SessionLine): KeyedSession {
  const s: KeyedSession = newServerSession({
    sid: Buffer.from(l.sid, 'hex'), sidHex: l.sid, locatorId: Buffer.from(l.loc, 'hex'), locatorHex: l.loc, aud: l.aud, exp: l.exp,
    terminalToServer: Buffer.from(l.t2s, 'base64url'), serverToTerminal: Buffer.from(l.s2t, 'base64url'),
    window: ReplayWindow.fromJSON(l.win), txSeq: l.tx,
  });
  if (l.kid !== undefined) s.kid = l.kid;
  return s;
}

export function recordToLine(id: string, r: Registration, table: RegistrationTable): RecordLine {
  const a = r.address;
  const line: RecordLine = {
    t: 'r', id, ip: a.ip, port: a.port, netMode: r.netMode, vis: r.visibility,
    regMs: table.tickToMs(r.regTick), expMs: table.tickToMs(r.expTick), seq: r.seq,
  };
  if (r.session) line.sid = r.session.sidHex;
  if (r.reachable) line.reach = 1;
  if (r.nickname !== undefined) line.nickname = r.nickname;
  const x = r.extra;
  if (x?.mediaId !== undefined) line.mediaId = x.mediaId;
  if (x?.localAddrs) line.localAddrs = x.localAddrs;
  if (x?.community) line.community = x.community;
  if (x?.allow) line.allow = x.allow;
  if (x?.presence) line.presence = x.presence;
  return line;
}

export function recordFromLine(l: RecordLine, table: RegistrationTable, session: ServerSession | undefined): Registration {
  const r = new Registration({ ip: l.ip, port: l.port }, session, l.seq, table.msToTick(l.regMs), table.msToTick(l.expMs));
  r.netMode = l.netMode;
  r.visibility = l.vis;
  r.reachable = l.reach === 1;
  if (l.nickname !== undefined) r.nickname = l.nickname;
  const x: RegistrationExtra = {};
  if (l.mediaId !== undefined) x.mediaId = l.mediaId;
  if (l.localAddrs) x.localAddrs = l.localAddrs;
  if (l.community) x.community = l.community;
  if (l.allow) x.allow = l.allow;
  if (l.presence) x.presence = l.presence;
  if (Object.keys(x).length > 0) r.extra = x;
  return r;
}

function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Write the snapshot atomically. Returns what was written. */
export function saveSnapshot(
  stateDir: string,
  sessions: Iterable<KeyedSession>,
  table: RegistrationTable,
  nowMs: number,
  watches?: MemoryWatches,
): { sessions: number; records: number; watchLists: number; bytes: number } {
  const file = path.join(stateDir, SNAPSHOT_FILE);
  const tmp = `${file}.${process.pid}.tmp`;
  const fd = openSync(tmp, 'w', 0o600);
  let bytes = 0;
  let buf: string[] = [];
  const flush = (): void => {
    if (buf.length === 0) return;
    bytes += writeSync(fd, buf.join(''));
    buf = [];
  };
  const put = (o: object): void => {
    buf.push(JSON.stringify(o) + '\n');
    if (buf.length >= 4096) flush();
  };
  let ns = 0;
  let nr = 0;
  let nw = 0;
  try {
    put({ v: 1, kind: KIND, savedMs: nowMs });
    for (const s of sessions) {
      put(sessionToLine(s));
      ns++;
    }
    const nowTick = table.nowTick();
    for (const [id, r] of table.entries()) {
      if (nowTick >= r.expTick) continue;
      put(recordToLine(id, r, table));
      nr++;
    }
    for (const l of watches?.lists() ?? []) {
      const line: WatchLine = { t: 'w', id: l.watcher, ts: l.targets, vs: l.views };
      put(line);
      nw++;
    }
    flush();
    fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    try { unlinkSync(tmp); } catch { /* already gone */ }
    throw err;
  }
  closeSync(fd);
  renameSync(tmp, file);
  fsyncDir(stateDir);
  return { sessions: ns, records: nr, watchLists: nw, bytes };
}

export interface LoadedSnapshot {
  savedMs: number;
  sessions: KeyedSession[];
  records: RecordLine[];
  watches: WatchLine[];
}

/** Read the snapshot; null when there is none. Throws on a corrupt file. */
export async function readSnapshot(stateDir: string): Promise<LoadedSnapshot | null> {
  const file = path.join(stateDir, SNAPSHOT_FILE);
  const stream = createReadStream(file, { encoding: 'utf8' });
  const opened = await new Promise<boolean>((resolve, reject) => {
    stream.once('open', () => resolve(true));
    stream.once('error', (err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? resolve(false) : reject(err)));
  });
  if (!opened) return null;
  const out: LoadedSnapshot = { savedMs: 0, sessions: [], records: [], watches: [] };
  let first = true;
  let lineNo = 0;
  for await (const text of createInterface({ input: stream, crlfDelay: Infinity })) {
    lineNo++;
    if (!text) continue;
    let o: Record<string, unknown>;
    try {
      o = JSON.parse(text) as Record<string, unknown>;
    } catch {
      throw new Error(`${file}:${lineNo}: not JSON`);
    }
    if (first) {
      if (o['kind'] !== KIND || o['v'] !== 1) throw new Error(`${file}: not a version 1 locatord snapshot`);
      out.savedMs = Number(o['savedMs']);
      first = false;
    } else if (o['t'] === 's') {
      out.sessions.push(sessionFromLine(o as unknown as SessionLine));
    } else if (o['t'] === 'r') {
      out.records.push(o as unknown as RecordLine);
    } else if (o['t'] === 'w') {
      const w = o as unknown as WatchLine;
      const hex = (x: unknown): boolean => typeof x === 'string' && /^[0-9a-f]{1,64}$/.test(x);
      if (!hex(w.id) || !Array.isArray(w.ts) || !Array.isArray(w.vs) || w.ts.length !== w.vs.length || !w.ts.every(hex) || !w.vs.every((v) => typeof v === 'number')) {
        throw new Error(`${file}:${lineNo}: bad watch list`);
      }
      out.watches.push(w);
    } else {
      throw new Error(`${file}:${lineNo}: unknown line type`);
    }
  }
  return out;
}

/**
 * Put back the watch lists of watchers still registered (`registered`): a watcher whose
 * registration expired while locatord was down has lost its list, as it would have running.
 * Bounded as a WATCH is (MAX_WATCHES). Returns how many lists were restored.
 */
export function restoreWatches(lines: readonly WatchLine[], watches: MemoryWatches, registered: (idHex: string) => boolean): number {
  let n = 0;
  for (const l of lines) {
    if (registered(l.id) && watches.restore(l.id, l.ts, l.vs, MAX_WATCHES)) n++;
  }
  return n;
}

/** Delete the snapshot once its state is in use, durably (a later crash must not reload it). */
export function discardSnapshot(stateDir: string): void {
  try {
    unlinkSync(path.join(stateDir, SNAPSHOT_FILE));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  fsyncDir(stateDir);
}
