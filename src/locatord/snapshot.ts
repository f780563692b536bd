// Soft state across a clean restart: on SIGTERM locatord writes its sessions (with their raw
// keys, replay windows and send sequence) and registrations (with their absolute expiry) to
// <state-dir>/locatord.snapshot, 0600, atomically (temporary file, fsync, rename, fsync of the
// directory). At start it loads the file and, once its sockets are bound, deletes it before
// serving: a snapshot is used once, so a crash later can never bring back replay windows older
// than traffic already accepted. Terminals are named by locator ID only; no device ID ever
// reaches locatord, so none can be in here.
//
// Format (version 2, binary, little-endian; a million terminals must be written in seconds and
// read back in seconds, so there is no per-record JSON and no object per record beyond the ones
// the table keeps, issue 16): a 24-byte header
//   "DEVLOCSN" | u32 version (2) | u32 0 | f64 savedMs
// then records, each a type byte and its fields:
//   STRING  u16 length, UTF-8: the next entry of the string table (audiences and kids: a
//           session names them by index, so a million sessions share a handful of strings)
//   REG     a registration: u8 flags, u8 ID length + ID bytes, the IPv4 address as i32 (or u8
//           length + IPv6 text), u16 port, u8 network mode, u8 visibility, f64 registration and
//           expiry times (ms since the epoch), f64 sequence number, then if flagged: nickname
//           (u16 length + UTF-8), the rare fields (u32 length + JSON: media ID, LAN addresses,
//           community, allow-list, rich presence) and its session (below), written inline
//   SESSION a session no live registration holds: u8 sid length + sid, u8 locator ID length +
//           bytes (0 inside a REG: the registration's ID), u16 audience and u16 kid (0xffff: none)
//           string indices, f64 ticket expiry (s), f64 replay window highest, i32 + i32 its
//           bitmap, f64 send sequence, 32 + 32 key bytes
//   WATCH   a watcher's subscriptions: u8 length + watcher ID, u32 n, n x (u8 length + target
//           ID), n x f64 view code (watches.ts viewCode): a restart neither loses a subscription
//           nor pushes what the watcher was already told
//   END     u32 sessions, u32 registrations, u32 watch lists: the file is complete (last byte)
// The write yields to the event loop between slices of SLICE_MS (saveSnapshot), so the process
// keeps answering (signals, metrics) while a million records go out; the state
// is frozen meanwhile (the server stopped first), so the file is one consistent instant. The
// reader checks the whole file before it builds anything (decodeSnapshot: {ok:false, code} for
// anything malformed, never a throw), so a bad file costs soft state only: locatord starts empty.
// Version 1 files (JSON lines, earlier releases) are still read once, so an upgrade keeps the
// terminals' sessions.
import { closeSync, fsyncSync, openSync, renameSync, unlinkSync } from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { ServerSession, ServerSessions } from '../net/sessions.js';
import { copySessionKeys, newServerSession } from '../net/sessions.js';
import type { Address } from '../wire/addr.js';
import type { Props } from '../wire/schema.js';
import { ReplayWindow } from '../wire/session.js';
import type { RegistrationExtra, RegistrationFields, RegistrationTable, RichPresence } from './table.js';
import type { MemorySearchIndex } from './search-index.js';
import type { MemoryWatches } from './watches.js';
import { MAX_WATCHES } from '../wire/catalog.js';
import { LOCATOR_ID_BYTES } from '../wire/constants.js';

export const SNAPSHOT_FILE = 'locatord.snapshot';
const KIND = 'devloc-locatord-snapshot';
const MAGIC = Buffer.from('DEVLOCSN', 'latin1');
export const SNAPSHOT_VERSION = 2;
const HEADER_BYTES = 24;
const T_STRING = 1;
const T_REG = 2;
const T_SESSION = 3;
const T_WATCH = 4;
const T_END = 0xff;
const F_SESSION = 1;
const F_IPV6 = 2;
const F_NICKNAME = 4;
const F_EXTRA = 8;
const F_REACHABLE = 16;
const NO_STRING = 0xffff;
const KEY_BYTES = 32;
/** Longest ID (locator ID, sid) a record may hold: what a u8 length allows, and far beyond the 16 used. */
const MAX_ID_BYTES = 64;
/** Work between two yields to the event loop while writing (the block serving may see). */
export const SLICE_MS = 10;
/** Bytes gathered before each write(2). */
const CHUNK_BYTES = 4 << 20;

/** A server session as locatord keeps it: with the kid of the ticket that opened it (SIGHUP). */
export type KeyedSession = ServerSession & { kid?: string };

/** Why a snapshot file was not used (the log line's `code`). */
export type SnapshotErrorCode = 'bad-magic' | 'bad-version' | 'truncated' | 'bad-record' | 'trailing-bytes' | 'bad-json-line';

export type SnapshotDecodeError = { ok: false; code: SnapshotErrorCode; reason: string };

/** Time slices of a long job on the event loop: the longest stretch between two yields is kept. */
class Slicer {
  readonly startedAt = performance.now();
  readonly cpuAtStart = process.cpuUsage();
  private sliceStart = this.startedAt;
  private sliceCpu = this.cpuAtStart;
  private n = 0;
  maxSliceMs = 0;
  /**
   * The longest slice in CPU time (the process's: GC helper threads included): what the slice
   * costs on a core of its own, where the wall time also counts waiting for a busy core.
   */
  maxSliceCpuMs = 0;
  slices = 1;

  constructor(private readonly sliceMs: number) {}

  /** Time to yield (the clock is read once per 256 calls). */
  due(): boolean {
    return (++this.n & 255) === 0 && performance.now() - this.sliceStart >= this.sliceMs;
  }

  /** The current slice ends here (before an await). */
  pause(): void {
    this.maxSliceMs = Math.max(this.maxSliceMs, performance.now() - this.sliceStart);
    const c = process.cpuUsage(this.sliceCpu);
    this.maxSliceCpuMs = Math.max(this.maxSliceCpuMs, (c.user + c.system) / 1000);
  }

  /** A new slice starts here (after an await). */
  resume(): void {
    this.sliceStart = performance.now();
    this.sliceCpu = process.cpuUsage();
    this.slices++;
  }

  /** CPU time since the start, ms. */
  cpuMs(): number {
    return cpuMsSince(this.cpuAtStart);
  }

  async yield(): Promise<void> {
    this.pause();
    await new Promise<void>((resolve) => setImmediate(resolve));
    this.resume();
  }
}

/** Records gathered in a large buffer, written when it fills (each write is a yield: see Slicer). */
class ChunkWriter {
  buf = Buffer.allocUnsafe(CHUNK_BYTES);
  pos = 0;
  written = 0;

  constructor(private readonly fh: import('node:fs/promises').FileHandle, private readonly slicer: Slicer) {}

  fits(n: number): boolean {
    return this.pos + n <= this.buf.length;
  }

  /** Write what is gathered; then there is room for `need` bytes. */
  async flush(need = 0): Promise<void> {
    this.slicer.pause();
    let off = 0;
    while (off < this.pos) off += (await this.fh.write(this.buf, off, this.pos - off)).bytesWritten;
    this.slicer.resume();
    this.written += this.pos;
    this.pos = 0;
    if (need > this.buf.length) this.buf = Buffer.allocUnsafe(need);
  }

  u8(v: number): void {
    this.buf[this.pos++] = v;
  }

  u16(v: number): void {
    this.pos = this.buf.writeUInt16LE(v, this.pos);
  }

  u32(v: number): void {
    this.pos = this.buf.writeUInt32LE(v, this.pos);
  }

  i32(v: number): void {
    this.pos = this.buf.writeInt32LE(v, this.pos);
  }

  f64(v: number): void {
    this.pos = this.buf.writeDoubleLE(v, this.pos);
  }

  bytes(b: Uint8Array): void {
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }

  /** u8 length + the bytes of an ID in hex; false (nothing written) when it is not one. */
  hexId(hex: string): boolean {
    const n = hex.length >>> 1;
    if (n === 0 || n > MAX_ID_BYTES || hex.length !== 2 * n) return false;
    if (this.buf.write(hex, this.pos + 1, n, 'hex') !== n) return false;
    this.buf[this.pos] = n;
    this.pos += 1 + n;
    return true;
  }

  /** UTF-8 text whose byte length is `n`. */
  text(s: string, n: number): void {
    this.pos += this.buf.write(s, this.pos, n, 'utf8');
  }
}

/** Worst case of a REG or SESSION record without its nickname and rare fields. */
const RECORD_BYTES = 512;

export interface SnapshotWritten {
  sessions: number;
  records: number;
  watchLists: number;
  bytes: number;
  /** Start to renamed and synced, ms. */
  durationMs: number;
  /** CPU time of the write, ms (the wall time on a loaded machine also counts waiting for a core). */
  cpuMs: number;
  /** The longest the event loop was held between two yields, ms: wall time, and CPU time. */
  maxSliceMs: number;
  maxSliceCpuMs: number;
  slices: number;
  /** Records not written: an ID that is not hex (none in practice). */
  skipped: number;
}

/**
 * Write the snapshot atomically, in slices of `sliceMs` between which the event loop runs. The
 * caller keeps the state still meanwhile (locatord stops serving first). Resolves with what was
 * written; rejects (and leaves no file) on an I/O error.
 */
export async function saveSnapshot(
  stateDir: string,
  sessions: ServerSessions,
  table: RegistrationTable,
  nowMs: number,
  watches?: MemoryWatches,
  o: { sliceMs?: number } = {},
): Promise<SnapshotWritten> {
  const file = path.join(stateDir, SNAPSHOT_FILE);
  const tmp = `${file}.${process.pid}.tmp`;
  const slicer = new Slicer(o.sliceMs ?? SLICE_MS);
  const fh = await open(tmp, 'w', 0o600);
  const w = new ChunkWriter(fh, slicer);
  const out: SnapshotWritten = { sessions: 0, records: 0, watchLists: 0, bytes: 0, durationMs: 0, cpuMs: 0, maxSliceMs: 0, maxSliceCpuMs: 0, slices: 0, skipped: 0 };
  const strings = new Map<string, number>();
  const stringIndex = async (s: string | undefined): Promise<number> => {
    if (s === undefined) return NO_STRING;
    let i = strings.get(s);
    if (i !== undefined) return i;
    const n = Buffer.byteLength(s);
    if (strings.size >= NO_STRING || n > 0xffff) throw new Error('snapshot: too many or too long audiences and kids');
    if (!w.fits(3 + n)) await w.flush(3 + n);
    w.u8(T_STRING);
    w.u16(n);
    w.text(s, n);
    strings.set(s, (i = strings.size));
    return i;
  };
  // The session body; `inRecord`: its locator ID is the registration's (not repeated).
  const putSession = (s: KeyedSession, aud: number, kid: number, inRecord: boolean): boolean => {
    const at = w.pos;
    if (!w.hexId(s.sidHex)) return false;
    if (inRecord) w.u8(0);
    else if (!w.hexId(s.locatorHex)) {
      w.pos = at;
      return false;
    }
    w.u16(aud);
    w.u16(kid);
    w.f64(s.exp);
    w.f64(s.window.highestSeen);
    w.i32(s.window.bitmapLo);
    w.i32(s.window.bitmapHi);
    w.f64(s.txSeq);
    copySessionKeys(s, w.buf, w.pos);
    w.pos += 2 * KEY_BYTES;
    return true;
  };
  try {
    const head = Buffer.alloc(HEADER_BYTES);
    MAGIC.copy(head, 0);
    head.writeUInt32LE(SNAPSHOT_VERSION, 8);
    head.writeDoubleLE(nowMs, 16);
    w.bytes(head);
    // Sessions a live registration holds are written inside it, the others after.
    const embedded = new Set<string>();
    const nowTick = table.nowTick();
    // The registrations straight from the table's arrays (table.ts): no object per record.
    const used = table.usedSlots;
    for (let slot = 0; slot < used; slot++) {
      if (slicer.due()) await slicer.yield();
      if (!table.inUse(slot) || nowTick >= table.expTicks[slot]!) continue;
      const s = table.sessionOf(slot) as KeyedSession | undefined;
      // Held first: an ended session's handle may no longer know its IDs. Raw IDs compared: no
      // hex string made (and kept by the handle) per record at each save.
      const withSession = s !== undefined && sessions.holds(s) && table.idIs(slot, s.locatorId);
      const aud = withSession ? await stringIndex(s.aud) : NO_STRING;
      const kid = withSession ? await stringIndex(s.kid) : NO_STRING;
      const nick = table.nicknames.get(slot);
      const nickBytes = nick === undefined ? 0 : Buffer.byteLength(nick);
      const x = table.extras.get(slot);
      const extra = x === undefined ? undefined : JSON.stringify(x);
      const extraBytes = extra === undefined ? 0 : Buffer.byteLength(extra);
      const need = RECORD_BYTES + nickBytes + extraBytes;
      if (!w.fits(need)) await w.flush(need);
      const at = w.pos;
      const ip = table.ipOf(slot);
      const v6 = typeof ip === 'string';
      w.u8(T_REG);
      w.u8((withSession ? F_SESSION : 0) | (v6 ? F_IPV6 : 0) | (nick !== undefined ? F_NICKNAME : 0) | (extra !== undefined ? F_EXTRA : 0) | (table.reachableOf(slot) ? F_REACHABLE : 0));
      if ((v6 && Buffer.byteLength(ip) > 0xff) || nickBytes > 0xffff) {
        w.pos = at;
        out.skipped++;
        continue;
      }
      w.u8(LOCATOR_ID_BYTES);
      table.copyId(slot, w.buf, w.pos);
      w.pos += LOCATOR_ID_BYTES;
      if (v6) {
        const n = Buffer.byteLength(ip);
        w.u8(n);
        w.text(ip, n);
      } else w.i32(ip);
      w.u16(table.portOf(slot));
      w.u8(table.netModeOf(slot));
      w.u8(table.visibilityOf(slot));
      w.f64(table.tickToMs(table.regTicks[slot]!));
      w.f64(table.tickToMs(table.expTicks[slot]!));
      w.f64(table.seqs[slot]!);
      if (nick !== undefined) {
        w.u16(nickBytes);
        w.text(nick, nickBytes);
      }
      if (extra !== undefined) {
        w.u32(extraBytes);
        w.text(extra, extraBytes);
      }
      if (withSession) {
        if (!putSession(s, aud, kid, true)) {
          w.pos = at;
          out.skipped++;
          continue;
        }
        embedded.add(s.sidHex);
        out.sessions++;
      }
      out.records++;
    }
    for (const sid of sessions.ids()) {
      if (slicer.due()) await slicer.yield();
      if (embedded.has(sid)) continue;
      const s = sessions.get(sid) as KeyedSession | undefined;
      if (!s) continue;
      const aud = await stringIndex(s.aud);
      const kid = await stringIndex(s.kid);
      if (!w.fits(RECORD_BYTES)) await w.flush();
      const at = w.pos;
      w.u8(T_SESSION);
      if (!putSession(s, aud, kid, false)) {
        w.pos = at;
        out.skipped++;
        continue;
      }
      out.sessions++;
    }
    embedded.clear();
    for (const l of watches?.lists() ?? []) {
      if (slicer.due()) await slicer.yield();
      const need = 16 + l.targets.length * (2 + MAX_ID_BYTES + 8);
      if (!w.fits(need)) await w.flush(need);
      const at = w.pos;
      w.u8(T_WATCH);
      let ok = w.hexId(l.watcher);
      w.u32(l.targets.length);
      for (const t of l.targets) ok = ok && w.hexId(t);
      if (!ok) {
        w.pos = at;
        out.skipped++;
        continue;
      }
      for (const v of l.views) w.f64(v);
      out.watchLists++;
    }
    if (!w.fits(13)) await w.flush();
    w.u8(T_END);
    w.u32(out.sessions);
    w.u32(out.records);
    w.u32(out.watchLists);
    await w.flush();
    slicer.pause();
    await fh.sync();
    slicer.resume();
  } catch (err) {
    await fh.close();
    try { unlinkSync(tmp); } catch { /* already gone */ }
    throw err;
  }
  await fh.close();
  renameSync(tmp, file);
  fsyncDir(stateDir);
  slicer.pause();
  out.bytes = w.written;
  out.durationMs = Math.round(performance.now() - slicer.startedAt);
  out.cpuMs = slicer.cpuMs();
  out.maxSliceMs = Math.round(slicer.maxSliceMs * 10) / 10;
  out.maxSliceCpuMs = Math.round(slicer.maxSliceCpuMs * 10) / 10;
  out.slices = slicer.slices;
  return out;
}

/** Where a restore puts what it reads (the embedded store's parts). */
export interface RestoreTarget {
  sessions: ServerSessions;
  table: RegistrationTable;
  search: MemorySearchIndex;
  watches: MemoryWatches;
}

/** What a restore put back. */
export interface Restored {
  ok: true;
  version: number;
  savedMs: number;
  sessions: number;
  records: number;
  droppedExpired: number;
  watchLists: number;
  bytes: number;
  durationMs: number;
  cpuMs: number;
}

/** Puts decoded state in place (both versions). */
class Restorer {
  sessions = 0;
  records = 0;
  droppedExpired = 0;
  watchLists = 0;
  private searchable: [string, { extra: RegistrationExtra }][] = [];

  constructor(private readonly t: RestoreTarget, private readonly nowMs: number) {}

  /** Hold a session (unless its ticket expired meanwhile); the session when held. */
  session(s: KeyedSession): KeyedSession | undefined {
    const held = this.t.sessions.restore(s);
    if (!held) return undefined;
    this.sessions++;
    return held;
  }

  /** False when it expired while locatord was down (dropped). */
  live(expMs: number): boolean {
    if (expMs > this.nowMs) return true;
    this.droppedExpired++;
    return false;
  }

  /** Hold a registration under the raw ID `b[at, at + len)` (`idHex`: the same in hex, if made already). */
  record(b: Uint8Array, at: number, len: number, f: RegistrationFields, idHex?: string): void {
    if (this.t.table.setRaw(b, at, len, f) === undefined) return;
    // Only a media ID puts a terminal in the search index, sorted once at the end (finish).
    if (f.extra?.mediaId !== undefined) this.searchable.push([idHex ?? Buffer.from(b.subarray(at, at + len)).toString('hex'), { extra: f.extra }]);
    this.records++;
  }

  /** Once every record is in: the search index, built and sorted once (not an insertion per record). */
  finish(): void {
    this.t.search.load(this.searchable);
    this.searchable = [];
  }

  /** Lists of watchers still registered: one whose registration expired meanwhile lost it, as it would have running. */
  watch(watcher: string, targets: readonly string[], views: readonly number[]): void {
    if (this.t.table.get(watcher) !== undefined && this.t.watches.restore(watcher, targets, views, MAX_WATCHES)) this.watchLists++;
  }
}

/** A malformed snapshot (caught by decodeSnapshot: it returns {ok:false}, never throws). */
class Malformed extends Error {
  constructor(readonly code: SnapshotErrorCode, reason: string) {
    super(reason);
  }
}

/** Bounds-checked reads of a version 2 file. */
class Reader {
  pos = HEADER_BYTES;

  constructor(readonly buf: Buffer) {}

  need(n: number): number {
    const at = this.pos;
    if (n > this.buf.length - at) throw new Malformed('truncated', `snapshot ends inside a record at byte ${at}`);
    this.pos = at + n;
    return at;
  }

  u8(): number {
    return this.buf[this.need(1)]!;
  }

  u16(): number {
    return this.buf.readUInt16LE(this.need(2));
  }

  u32(): number {
    return this.buf.readUInt32LE(this.need(4));
  }

  i32(): number {
    return this.buf.readInt32LE(this.need(4));
  }

  f64(): number {
    return this.buf.readDoubleLE(this.need(8));
  }

  /** A count or sequence number: a non-negative safe integer (or -1 when `orMinusOne`). */
  int(what: string, orMinusOne = false): number {
    const v = this.f64();
    if (!Number.isSafeInteger(v) || v < (orMinusOne ? -1 : 0)) throw this.bad(`${what} is not a valid integer`);
    return v;
  }

  time(what: string): number {
    const v = this.f64();
    if (!Number.isFinite(v)) throw this.bad(`${what} is not a finite time`);
    return v;
  }

  /** u8 length + ID bytes: the offset of the bytes and their length. */
  id(what: string, allowEmpty = false): [number, number] {
    const n = this.u8();
    if ((n === 0 && !allowEmpty) || n > MAX_ID_BYTES) throw this.bad(`${what} of ${n} bytes`);
    return [this.need(n), n];
  }

  bad(reason: string): Malformed {
    return new Malformed('bad-record', `${reason} (byte ${this.pos})`);
  }
}

/** A session body (see the format above); built and restored when `into` is given. */
function readSession(r: Reader, strings: string[], into: Restorer | undefined, recordId?: string): KeyedSession | undefined {
  const [sidAt, sidLen] = r.id('session ID');
  const [locAt, locLen] = r.id('session locator ID', recordId !== undefined);
  if (recordId === undefined && locLen === 0) throw r.bad('standalone session without a locator ID');
  const audIdx = r.u16();
  const kidIdx = r.u16();
  if (audIdx >= strings.length || (kidIdx !== NO_STRING && kidIdx >= strings.length)) throw r.bad('session names an undefined string');
  const exp = r.time('ticket expiry');
  const highest = r.int('replay window', true);
  const lo = r.i32();
  const hi = r.i32();
  const txSeq = r.int('send sequence');
  const keysAt = r.need(2 * KEY_BYTES);
  if (!into) return undefined;
  const b = r.buf;
  const locatorId = locLen === 0 ? Buffer.from(recordId!, 'hex') : b.subarray(locAt, locAt + locLen);
  const s: KeyedSession = newServerSession({
    sid: b.subarray(sidAt, sidAt + sidLen), locatorId, aud: strings[audIdx]!, exp,
    terminalToServer: b.subarray(keysAt, keysAt + KEY_BYTES), serverToTerminal: b.subarray(keysAt + KEY_BYTES, keysAt + 2 * KEY_BYTES),
    window: ReplayWindow.fromState(highest, lo, hi), txSeq, ...(locLen === 0 ? { locatorHex: recordId } : {}),
  });
  if (kidIdx !== NO_STRING) s.kid = strings[kidIdx]!;
  return into.session(s);
}

function parseExtra(text: string): RegistrationExtra | undefined {
  try {
    const x = JSON.parse(text) as unknown;
    return x !== null && typeof x === 'object' && !Array.isArray(x) ? (x as RegistrationExtra) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Check (without `into`) or restore (with it) a version 2 snapshot. Never throws on malformed
 * input; the restore pass runs only over a file the check pass accepted, so it cannot stop half
 * way.
 */
function decodeV2(buf: Buffer, into?: Restorer, table?: RegistrationTable): { ok: true; savedMs: number } | SnapshotDecodeError {
  if (buf.length < HEADER_BYTES || !buf.subarray(0, MAGIC.length).equals(MAGIC)) return { ok: false, code: 'bad-magic', reason: 'not a locatord snapshot' };
  const version = buf.readUInt32LE(8);
  if (version !== SNAPSHOT_VERSION) return { ok: false, code: 'bad-version', reason: `snapshot version ${version}, this locatord reads 1 and 2` };
  const savedMs = buf.readDoubleLE(16);
  const r = new Reader(buf);
  const strings: string[] = [];
  let sessions = 0;
  let records = 0;
  let watchLists = 0;
  try {
    for (;;) {
      const type = r.u8();
      if (type === T_END) {
        const ns = r.u32();
        const nr = r.u32();
        const nw = r.u32();
        if (ns !== sessions || nr !== records || nw !== watchLists) throw r.bad('end record counts differ from the records');
        if (r.pos !== buf.length) return { ok: false, code: 'trailing-bytes', reason: `${buf.length - r.pos} bytes after the end record` };
        return { ok: true, savedMs };
      }
      if (type === T_STRING) {
        const n = r.u16();
        const at = r.need(n);
        if (strings.length >= NO_STRING) throw r.bad('too many strings');
        strings.push(buf.toString('utf8', at, at + n));
      } else if (type === T_REG) {
        const flags = r.u8();
        if (flags & ~(F_SESSION | F_IPV6 | F_NICKNAME | F_EXTRA | F_REACHABLE)) throw r.bad('unknown registration flags');
        const [idAt, idLen] = r.id('locator ID');
        let ip: number | string;
        if (flags & F_IPV6) {
          const n = r.u8();
          const at = r.need(n);
          ip = into ? buf.toString('utf8', at, at + n) : '';
        } else ip = r.i32();
        const port = r.u16();
        const netMode = r.u8();
        const vis = r.u8();
        if (netMode > 7 || vis > 1) throw r.bad('network mode or visibility out of range');
        const regMs = r.time('registration time');
        const expMs = r.time('expiry');
        const seq = r.int('sequence number');
        let nickname: string | undefined;
        if (flags & F_NICKNAME) {
          const n = r.u16();
          const at = r.need(n);
          if (into) nickname = buf.toString('utf8', at, at + n);
        }
        let extra: RegistrationExtra | undefined;
        if (flags & F_EXTRA) {
          const n = r.u32();
          const at = r.need(n);
          extra = parseExtra(buf.toString('utf8', at, at + n));
          if (!extra) throw r.bad('rare fields are not a JSON object');
        }
        // The hex ID only where a string is kept anyway (the session's, the search index's).
        const idHex = into && (flags & F_SESSION || extra?.mediaId !== undefined) ? buf.toString('hex', idAt, idAt + idLen) : undefined;
        const session = flags & F_SESSION ? readSession(r, strings, into, idHex ?? '') : undefined;
        if (flags & F_SESSION) sessions++;
        records++;
        if (!into || !table || !into.live(expMs)) continue;
        into.record(buf, idAt, idLen, {
          ip, port, session, seq, regTick: table.msToTick(regMs), expTick: table.msToTick(expMs), netMode, visibility: vis,
          reachable: (flags & F_REACHABLE) !== 0, nickname, extra,
        }, idHex);
      } else if (type === T_SESSION) {
        readSession(r, strings, into);
        sessions++;
      } else if (type === T_WATCH) {
        const [wAt, wLen] = r.id('watcher ID');
        const n = r.u32();
        if (n > MAX_WATCHES) throw r.bad(`watch list of ${n} targets`);
        const targets: string[] = [];
        for (let i = 0; i < n; i++) {
          const [at, len] = r.id('watch target');
          if (into) targets.push(buf.toString('hex', at, at + len));
        }
        const views: number[] = [];
        for (let i = 0; i < n; i++) views.push(r.f64());
        watchLists++;
        if (into) into.watch(buf.toString('hex', wAt, wAt + wLen), targets, views);
      } else {
        throw r.bad(`unknown record type ${type}`);
      }
    }
  } catch (err) {
    if (err instanceof Malformed) return { ok: false, code: err.code, reason: err.message };
    throw err;
  }
}

/** Check a snapshot file's bytes (version 2) without building anything: {ok:false, code} if malformed. */
export function decodeSnapshot(buf: Buffer): { ok: true; savedMs: number } | SnapshotDecodeError {
  return decodeV2(buf);
}

// Version 1 (JSON lines), read once after an upgrade: a header {"v":1,"kind":...,"savedMs"},
// then one line per session {"t":"s"}, registration {"t":"r"} and watch list {"t":"w"}.
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

export function sessionFromLine(l: SessionLine): KeyedSession {
  const s: KeyedSession = newServerSession({
    sid: Buffer.from(l.sid, 'hex'), sidHex: l.sid, locatorId: Buffer.from(l.loc, 'hex'), locatorHex: l.loc, aud: l.aud, exp: l.exp,
    terminalToServer: Buffer.from(l.t2s, 'base64url'), serverToTerminal: Buffer.from(l.s2t, 'base64url'),
    window: ReplayWindow.fromJSON(l.win), txSeq: l.tx,
  });
  if (l.kid !== undefined) s.kid = l.kid;
  return s;
}

export function recordFromLine(l: RecordLine, table: RegistrationTable, session: ServerSession | undefined): RegistrationFields {
  const x: RegistrationExtra = {};
  if (l.mediaId !== undefined) x.mediaId = l.mediaId;
  if (l.localAddrs) x.localAddrs = l.localAddrs;
  if (l.community) x.community = l.community;
  if (l.allow) x.allow = l.allow;
  if (l.presence) x.presence = l.presence;
  return {
    addr: { ip: l.ip, port: l.port }, session, seq: l.seq, regTick: table.msToTick(l.regMs), expTick: table.msToTick(l.expMs),
    netMode: l.netMode, visibility: l.vis, reachable: l.reach === 1, nickname: l.nickname, extra: Object.keys(x).length > 0 ? x : undefined,
  };
}

/** Parse a version 1 file whole, then restore it (so a bad line leaves nothing half restored). */
function restoreV1(text: string, into: Restorer, table: RegistrationTable): { ok: true; savedMs: number } | SnapshotDecodeError {
  const sessions: KeyedSession[] = [];
  const records: RecordLine[] = [];
  const watches: WatchLine[] = [];
  let savedMs = 0;
  const lines = text.split('\n');
  const hex = (x: unknown): boolean => typeof x === 'string' && /^[0-9a-f]{1,128}$/.test(x);
  const bad = (lineNo: number, why: string): SnapshotDecodeError => ({ ok: false, code: 'bad-json-line', reason: `line ${lineNo}: ${why}` });
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (!line) continue;
    let o: Record<string, unknown>;
    try {
      o = JSON.parse(line) as Record<string, unknown>;
      if (o === null || typeof o !== 'object') return bad(i + 1, 'not an object');
    } catch {
      return bad(i + 1, 'not JSON');
    }
    if (i === 0) {
      if (o['kind'] !== KIND || o['v'] !== 1) return { ok: false, code: 'bad-version', reason: 'not a version 1 locatord snapshot' };
      savedMs = Number(o['savedMs']);
    } else if (o['t'] === 's') {
      const l = o as unknown as SessionLine;
      if (!hex(l.sid) || !hex(l.loc) || typeof l.aud !== 'string' || typeof l.t2s !== 'string' || typeof l.s2t !== 'string' || typeof l.win !== 'object' || l.win === null || !Array.isArray(l.win.seen)) {
        return bad(i + 1, 'bad session');
      }
      try {
        sessions.push(sessionFromLine(l));
      } catch {
        return bad(i + 1, 'bad session');
      }
    } else if (o['t'] === 'r') {
      const l = o as unknown as RecordLine;
      if (!hex(l.id) || typeof l.ip !== 'string' || typeof l.expMs !== 'number') return bad(i + 1, 'bad registration');
      records.push(l);
    } else if (o['t'] === 'w') {
      const w = o as unknown as WatchLine;
      if (!hex(w.id) || !Array.isArray(w.ts) || !Array.isArray(w.vs) || w.ts.length !== w.vs.length || !w.ts.every(hex) || !w.vs.every((v) => typeof v === 'number')) {
        return bad(i + 1, 'bad watch list');
      }
      watches.push(w);
    } else {
      return bad(i + 1, 'unknown line type');
    }
  }
  const bySid = new Map<string, KeyedSession>();
  for (const s of sessions) {
    const held = into.session(s);
    if (held) bySid.set(s.sidHex, held);
  }
  for (const l of records) {
    if (!into.live(l.expMs)) continue;
    const id = Buffer.from(l.id, 'hex');
    into.record(id, 0, id.length, recordFromLine(l, table, l.sid ? bySid.get(l.sid) : undefined), l.id);
  }
  for (const w of watches) into.watch(w.id, w.ts, w.vs);
  return { ok: true, savedMs };
}

/**
 * Read the snapshot of `stateDir` into `target` (registrations that expired by `nowMs` are
 * dropped). Null when there is none; {ok:false, code} when it is malformed (nothing restored);
 * rejects on an I/O error other than its absence.
 */
export async function restoreSnapshot(stateDir: string, target: RestoreTarget, nowMs: number): Promise<Restored | SnapshotDecodeError | null> {
  const started = performance.now();
  const cpu0 = process.cpuUsage();
  let buf: Buffer;
  try {
    buf = await readFile(path.join(stateDir, SNAPSHOT_FILE));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  const into = new Restorer(target, nowMs);
  let version = SNAPSHOT_VERSION;
  let r: { ok: true; savedMs: number } | SnapshotDecodeError;
  if (buf[0] === 0x7b /* '{': version 1, JSON lines */) {
    version = 1;
    r = restoreV1(buf.toString('utf8'), into, target.table);
  } else {
    r = decodeV2(buf);
    if (r.ok) r = decodeV2(buf, into, target.table);
  }
  if (!r.ok) return r;
  into.finish();
  return {
    ok: true, version, savedMs: r.savedMs, sessions: into.sessions, records: into.records, droppedExpired: into.droppedExpired,
    watchLists: into.watchLists, bytes: buf.length, durationMs: Math.round(performance.now() - started), cpuMs: cpuMsSince(cpu0),
  };
}

function cpuMsSince(from: NodeJS.CpuUsage): number {
  const c = process.cpuUsage(from);
  return Math.round((c.user + c.system) / 1000);
}

function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
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
