// Soft state across a clean restart: on SIGTERM locatord writes its sessions (with their raw
// keys, replay windows and send sequence) and registrations (with their absolute expiry) to
// <state-dir>/locatord.snapshot, 0600, atomically (temporary file, fsync, rename, fsync of the
// directory). At start it loads the file and, once its sockets are bound, deletes it before
// serving: a snapshot is used once, so a crash later can never bring back replay windows older
// than traffic already accepted. Terminals are named by locator ID only; no device ID ever
// reaches locatord, so none can be in here.
//
// Format (version 3, binary; a million terminals written in seconds and read back in seconds,
// issue 16 item 4): both tables are slots of typed arrays (table.ts: a 64-byte row per slot;
// net/sessions.ts: parallel arrays), and the file is a column per field, so the write is a copy
// of arrays (the sessions' written straight from their memory, the registrations' copied out of
// their rows a slice at a time) and the restore a fill of the new tables at the same slot
// numbers, then one walk of the slots to rebuild the indexes and lists. Numbers are
// little-endian (the arrays' byte order on the hosts Node runs on: a big-endian host refuses to
// write or read one). A 24-byte header
//   "DEVLOCSN" | u32 version (3) | u32 0 | f64 savedMs
// then, in this order:
//   STRINGS   u32 n, n x (u32 length + UTF-8): audiences and kids, named by index by the sessions
//   SESSIONS  u32 n (slots), then the columns of slots [0, n) (SessionColumns): sid 16 B,
//             locator ID 16 B, keys 64 B, f64 ticket expiry (s), f64 send sequence, f64 replay
//             window highest, i32 + i32 its bitmap, i32 audience and i32 kid string indexes
//             (-1: none; an audience of -1 is a free slot)
//   RECORDS   u32 n (slots), f64 base time (ms), u32 tick (ms), then the columns of slots [0, n)
//             (RegistrationColumns): locator ID 16 B, i32 IPv4, u32 bits (port, network mode,
//             visibility, flags: table.ts's layout, so a change to it bumps the version), i32
//             registration and expiry ticks, f64 sequence number, i32 its session's slot (-1:
//             none)
//   RARE      u32 n, n x (u32 slot, u8 flags, then if flagged, each u32 length + UTF-8: the
//             IPv6 address, the nickname, JSON of the rare fields: media ID, LAN addresses,
//             community, allow-list, rich presence), slots ascending
//   WATCHES   u32 n, n x (u8 length + watcher ID, u32 k, k x (u8 length + target ID), k x f64
//             view code (watches.ts viewCode)): a restart neither loses a subscription nor
//             pushes what the watcher was already told
//   END       u32 sessions, u32 registrations (slots holding one), u32 watch lists: the file
//             is complete (its last bytes)
// The write yields to the event loop between its writes and every SLICE_MS of work, so the
// process keeps answering (signals, metrics); the state is frozen meanwhile (the server stopped
// first), so the file is one consistent instant. The reader checks the whole file before it
// builds anything (decodeSnapshot: {ok:false, code} for anything malformed, never a throw), so a
// bad file costs soft state only: locatord starts empty. Files of earlier versions (1: JSON
// lines, 2: a record per terminal) are refused (bad-version): the terminals register again.
import { closeSync, fsyncSync, openSync, renameSync, unlinkSync } from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { ServerSession, ServerSessions, SessionColumns } from '../net/sessions.js';
import { newServerSession } from '../net/sessions.js';
import { ReplayWindow } from '../wire/session.js';
import type { RegistrationColumns, RegistrationExtra, RegistrationTable, SlotRareFields } from './table.js';
import { RegistrationTable as Table } from './table.js';
import type { MemorySearchIndex } from './search-index.js';
import type { MemoryWatches } from './watches.js';
import { MAX_WATCHES } from '../wire/catalog.js';
import { LOCATOR_ID_BYTES, SESSION_ID_BYTES } from '../wire/constants.js';

export const SNAPSHOT_FILE = 'locatord.snapshot';
const MAGIC = Buffer.from('DEVLOCSN', 'latin1');
export const SNAPSHOT_VERSION = 3;
const HEADER_BYTES = 24;
const F_IPV6 = 1;
const F_NICKNAME = 2;
const F_EXTRA = 4;
const NO_STRING = -1;
const KEY_BYTES = 32;
/** Bytes per session slot and per registration slot (the columns above). */
const SESSION_SLOT_BYTES = SESSION_ID_BYTES + LOCATOR_ID_BYTES + 2 * KEY_BYTES + 3 * 8 + 4 * 4;
const RECORD_SLOT_BYTES = LOCATOR_ID_BYTES + 4 * 4 + 8 + 4;
/** Most strings (audiences and kids): far beyond the handful a deployment has. */
const MAX_STRINGS = 0xffff;
/** Longest ID (watcher, watch target) a watch list may hold: what a u8 length allows, and far beyond the 16 used. */
const MAX_ID_BYTES = 64;
/** Work between two yields to the event loop while writing (the block serving may see). */
export const SLICE_MS = 10;
/** Bytes gathered before each write(2) of the small sections. */
const CHUNK_BYTES = 1 << 20;
/** Slots (sessions, registrations) copied from rows to columns between two looks at the clock: a few us once compiled, a few ms while the first slices still run in the interpreter (16,384 held the event loop 80 ms, 1,024 24 ms). */
const COPY_SLOTS = 256;
/** Slicer: units of work (about a slot's copy each) between two readings of the clock. */
const CLOCK_UNITS = 256;
/** Largest single write of a column (each is a yield). */
const COLUMN_WRITE_BYTES = 16 << 20;
const LITTLE_ENDIAN = os.endianness() === 'LE';

/** A server session as locatord keeps it: with the kid of the ticket that opened it (SIGHUP). */
export type KeyedSession = ServerSession & { kid?: string };

/** Why a snapshot file was not used (the log line's `code`). */
export type SnapshotErrorCode = 'bad-magic' | 'bad-version' | 'truncated' | 'bad-record' | 'trailing-bytes';

export type SnapshotDecodeError = { ok: false; code: SnapshotErrorCode; reason: string };

/** Time slices of a long job on the event loop: the longest stretch between two yields is kept. */
export class Slicer {
  readonly startedAt = performance.now();
  readonly cpuAtStart = process.cpuUsage();
  private sliceStart = this.startedAt;
  private sliceCpu = this.cpuAtStart;
  /** Work done since the clock was last read, in units of about one slot's copy. */
  private units = 0;
  maxSliceMs = 0;
  /**
   * The longest slice in CPU time (the process's: GC helper threads included): what the slice
   * costs on a core of its own, where the wall time also counts waiting for a busy core.
   */
  maxSliceCpuMs = 0;
  slices = 1;

  constructor(private readonly sliceMs: number) {}

  /**
   * Time to yield, after `units` more of work (about one slot's copy each). The clock is read
   * once every CLOCK_UNITS units: a loop doing one slot per call reads it every 256th call, a
   * loop copying 256 slots per call every call. (One rule for both: a count of calls alone
   * once let the 256-slot copies read it per 65,536 slots and hold the loop 25-43 ms.)
   */
  due(units = 1): boolean {
    this.units += units;
    if (this.units < CLOCK_UNITS) return false;
    this.units = 0;
    return performance.now() - this.sliceStart >= this.sliceMs;
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

/** Small fields gathered in a buffer, written when it fills; columns written whole (each write is a yield). */
class ChunkWriter {
  buf = Buffer.allocUnsafe(CHUNK_BYTES);
  pos = 0;
  written = 0;

  constructor(private readonly fh: import('node:fs/promises').FileHandle, private readonly slicer: Slicer) {}

  /** Room for `n` more bytes (what is gathered is written first when they do not fit). */
  async room(n: number): Promise<void> {
    if (this.pos + n <= this.buf.length) return;
    await this.flush();
    if (n > this.buf.length) this.buf = Buffer.allocUnsafe(n);
  }

  /** Write what is gathered. */
  async flush(): Promise<void> {
    await this.out(this.buf.subarray(0, this.pos));
    this.pos = 0;
  }

  /** Write `b` whole (what is gathered first), in pieces of COLUMN_WRITE_BYTES. */
  async column(b: Uint8Array): Promise<void> {
    if (this.pos > 0) await this.flush();
    for (let at = 0; at < b.length; at += COLUMN_WRITE_BYTES) await this.out(b.subarray(at, Math.min(b.length, at + COLUMN_WRITE_BYTES)));
  }

  private async out(b: Uint8Array): Promise<void> {
    this.slicer.pause();
    let off = 0;
    while (off < b.length) off += (await this.fh.write(b, off, b.length - off)).bytesWritten;
    this.slicer.resume();
    this.written += b.length;
  }

  u8(v: number): void {
    this.buf[this.pos++] = v;
  }

  u32(v: number): void {
    this.pos = this.buf.writeUInt32LE(v, this.pos);
  }

  f64(v: number): void {
    this.pos = this.buf.writeDoubleLE(v, this.pos);
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

  /** u32 length + UTF-8 text. */
  text(s: string): void {
    const n = Buffer.byteLength(s);
    this.u32(n);
    this.pos += this.buf.write(s, this.pos, n, 'utf8');
  }
}

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
  /** Watch lists not written: an ID that is not hex (none in practice). */
  skipped: number;
}

/**
 * Write the snapshot atomically, in slices of `sliceMs` between which the event loop runs. The
 * caller keeps the state still meanwhile (locatord stops serving first). Resolves with what was
 * written; rejects (and leaves no file) on an I/O error or a big-endian host.
 */
export async function saveSnapshot(
  stateDir: string,
  sessions: ServerSessions,
  table: RegistrationTable,
  nowMs: number,
  watches?: MemoryWatches,
  o: { sliceMs?: number } = {},
): Promise<SnapshotWritten> {
  if (!LITTLE_ENDIAN) throw new Error('snapshot: this host is big-endian; the snapshot format is little-endian');
  const file = path.join(stateDir, SNAPSHOT_FILE);
  const tmp = `${file}.${process.pid}.tmp`;
  const slicer = new Slicer(o.sliceMs ?? SLICE_MS);
  // An await is a yield: the event loop runs meanwhile, so it ends a slice (as each write does).
  slicer.pause();
  const fh = await open(tmp, 'w', 0o600);
  slicer.resume();
  const w = new ChunkWriter(fh, slicer);
  const out: SnapshotWritten = { sessions: 0, records: 0, watchLists: 0, bytes: 0, durationMs: 0, cpuMs: 0, maxSliceMs: 0, maxSliceCpuMs: 0, slices: 0, skipped: 0 };
  try {
    // Both tables keep a row per slot; the file a column per field: copied out in slices.
    const copyOut = async (n: number, copy: (from: number, to: number) => void): Promise<void> => {
      for (let at = 0; at < n; at += COPY_SLOTS) {
        if (slicer.due(COPY_SLOTS)) await slicer.yield();
        copy(at, Math.min(n, at + COPY_SLOTS));
      }
    };
    const sc = sessions.columns();
    await copyOut(sc.n, (from, to) => sessions.copyColumns(sc, from, to));
    const rc = table.columns();
    await copyOut(rc.n, (from, to) => table.copyColumns(rc, from, to));
    w.buf.set(MAGIC, 0);
    w.pos = MAGIC.length;
    w.u32(SNAPSHOT_VERSION);
    w.u32(0);
    w.f64(nowMs);
    if (sc.strings.length > MAX_STRINGS) throw new Error('snapshot: too many audiences and kids');
    await w.room(4);
    w.u32(sc.strings.length);
    for (const s of sc.strings) {
      await w.room(4 + 3 * s.length);
      w.text(s);
    }
    // Sessions: their columns as they are.
    const aud = new Int32Array(sc.aud.buffer, sc.aud.byteOffset, sc.n);
    for (let s = 0; s < sc.n; s++) if (aud[s] !== NO_STRING) out.sessions++;
    await w.room(4);
    w.u32(sc.n);
    for (const c of [sc.sid, sc.loc, sc.keys, sc.exp, sc.txSeq, sc.high, sc.lo, sc.hi, sc.aud, sc.kid]) await w.column(c);
    // Registrations: their columns as they are, then each one's session slot (a live session of
    // its own locator ID), made here; and the rare fields of the few that have any.
    const refs = new Int32Array(rc.n).fill(-1);
    const bits = new Uint32Array(rc.bits.buffer, rc.bits.byteOffset, rc.n);
    const rare: number[] = [];
    for (let slot = 0; slot < rc.n; slot++) {
      if (slicer.due()) await slicer.yield();
      if (!table.inUse(slot)) continue;
      out.records++;
      const s = table.sessionOf(slot);
      const ref = s === undefined ? -1 : sessions.heldSlot(s);
      // A slot the copy holds as a session (the reader refuses a reference to a free one).
      if (ref >= 0 && ref < sc.n && aud[ref] !== NO_STRING && sameId(rc.ids, slot, sc.loc, ref)) refs[slot] = ref;
      if (Table.slotKind(bits[slot]!) === 2) rare.push(slot);
    }
    // The few with a nickname or rare fields, from their maps (not two lookups per slot).
    for (const slot of table.nicknames.keys()) rare.push(slot);
    for (const slot of table.extras.keys()) rare.push(slot);
    rare.sort((a, b) => a - b);
    await w.room(20);
    w.u32(rc.n);
    w.f64(rc.baseMs);
    w.u32(rc.tickMs);
    for (const c of [rc.ids, rc.ips, rc.bits, rc.regTicks, rc.expTicks, rc.seqs]) await w.column(c);
    await w.column(new Uint8Array(refs.buffer));
    const rareSlots = rare.filter((slot, i) => slot !== rare[i - 1] && slot < rc.n);
    await w.room(4);
    w.u32(rareSlots.length);
    for (const slot of rareSlots) {
      if (slicer.due()) await slicer.yield();
      const ip = table.ipOf(slot);
      const v6 = typeof ip === 'string' ? ip : undefined;
      const nick = table.nicknames.get(slot);
      const x = table.extras.get(slot);
      const extra = x === undefined ? undefined : JSON.stringify(x);
      await w.room(16 + 3 * ((v6?.length ?? 0) + (nick?.length ?? 0) + (extra?.length ?? 0)));
      w.u32(slot);
      w.u8((v6 !== undefined ? F_IPV6 : 0) | (nick !== undefined ? F_NICKNAME : 0) | (extra !== undefined ? F_EXTRA : 0));
      if (v6 !== undefined) w.text(v6);
      if (nick !== undefined) w.text(nick);
      if (extra !== undefined) w.text(extra);
    }
    const lists = [...(watches?.lists() ?? [])].filter((l) => {
      const ok = isHexId(l.watcher) && l.targets.every(isHexId) && l.views.length === l.targets.length;
      if (!ok) out.skipped++;
      return ok;
    });
    await w.room(4);
    w.u32(lists.length);
    for (const l of lists) {
      if (slicer.due(1 + l.targets.length)) await slicer.yield();
      await w.room(8 + l.targets.length * (1 + MAX_ID_BYTES + 8));
      w.hexId(l.watcher);
      w.u32(l.targets.length);
      for (const t of l.targets) w.hexId(t);
      for (const v of l.views) w.f64(v);
      out.watchLists++;
    }
    await w.room(12);
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

/** A locator ID (the record's, `a` at slot `i`) equals another (`b` at slot `j`): 16 bytes each. */
function sameId(a: Uint8Array, i: number, b: Uint8Array, j: number): boolean {
  const x = i * LOCATOR_ID_BYTES;
  const y = j * LOCATOR_ID_BYTES;
  for (let k = 0; k < LOCATOR_ID_BYTES; k++) if (a[x + k] !== b[y + k]) return false;
  return true;
}

function isHexId(hex: string): boolean {
  return hex.length > 0 && hex.length <= 2 * MAX_ID_BYTES && /^(?:[0-9a-f]{2})+$/.test(hex);
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

/** A malformed snapshot (caught by decodeSnapshot: it returns {ok:false}, never throws). */
class Malformed extends Error {
  constructor(readonly code: SnapshotErrorCode, reason: string) {
    super(reason);
  }
}

/** Bounds-checked reads of a file. */
class Reader {
  pos = HEADER_BYTES;

  constructor(readonly buf: Buffer) {}

  need(n: number): number {
    const at = this.pos;
    if (n > this.buf.length - at) throw new Malformed('truncated', `snapshot ends inside a section at byte ${at}`);
    this.pos = at + n;
    return at;
  }

  u8(): number {
    return this.buf[this.need(1)]!;
  }

  u32(): number {
    return this.buf.readUInt32LE(this.need(4));
  }

  f64(): number {
    return this.buf.readDoubleLE(this.need(8));
  }

  /** `n` slots of `width` bytes: a view of them. */
  column(n: number, width: number): Buffer {
    const at = this.need(n * width);
    return this.buf.subarray(at, at + n * width);
  }

  /** u32 length + UTF-8. */
  text(): string {
    const n = this.u32();
    const at = this.need(n);
    return this.buf.toString('utf8', at, at + n);
  }

  /** u8 length + ID bytes, in hex. */
  hexId(what: string): string {
    const n = this.u8();
    if (n === 0 || n > MAX_ID_BYTES) throw this.bad(`${what} of ${n} bytes`);
    const at = this.need(n);
    return this.buf.toString('hex', at, at + n);
  }

  bad(reason: string): Malformed {
    return new Malformed('bad-record', `${reason} (byte ${this.pos})`);
  }
}

/** A checked file: views of its columns, its few parsed parts. */
interface Decoded {
  savedMs: number;
  sessions: FileColumns<SessionColumns>;
  records: FileColumns<RegistrationColumns>;
  /** Each registration slot's session slot, -1 for none. */
  refs: Int32Array;
  rare: Map<number, SlotRareFields>;
  watches: { watcher: string; targets: string[]; views: number[] }[];
}

/** Columns as a decoded file has them: Buffers (views of the file), read with bounds checks. */
type FileColumns<T> = { [K in keyof T]: T[K] extends Uint8Array ? Buffer : T[K] };
const i32At = (c: Buffer, i: number): number => c.readInt32LE(4 * i);
const f64At = (c: Buffer, i: number): number => c.readDoubleLE(8 * i);

function parseExtra(text: string): RegistrationExtra | undefined {
  try {
    const x = JSON.parse(text) as unknown;
    return x !== null && typeof x === 'object' && !Array.isArray(x) ? (x as RegistrationExtra) : undefined;
  } catch {
    return undefined;
  }
}

/** Check a whole file; nothing is built (only the few rare fields and watch lists parsed). */
function decode(buf: Buffer): { ok: true; d: Decoded } | SnapshotDecodeError {
  if (buf.length < HEADER_BYTES || !buf.subarray(0, MAGIC.length).equals(MAGIC)) {
    return { ok: false, code: buf[0] === 0x7b ? 'bad-version' : 'bad-magic', reason: buf[0] === 0x7b ? 'snapshot version 1 (JSON lines, an earlier release): this locatord reads version 3 only' : 'not a locatord snapshot' };
  }
  const version = buf.readUInt32LE(8);
  if (version !== SNAPSHOT_VERSION) return { ok: false, code: 'bad-version', reason: `snapshot version ${version}: this locatord reads version ${SNAPSHOT_VERSION} only` };
  if (!LITTLE_ENDIAN) return { ok: false, code: 'bad-version', reason: 'this host is big-endian; the snapshot format is little-endian' };
  const savedMs = buf.readDoubleLE(16);
  const r = new Reader(buf);
  try {
    const nStrings = r.u32();
    if (nStrings > MAX_STRINGS) throw r.bad(`${nStrings} strings`);
    const strings: string[] = [];
    for (let i = 0; i < nStrings; i++) strings.push(r.text());
    // Sessions.
    const sn = r.u32();
    if (sn * SESSION_SLOT_BYTES > buf.length - r.pos) throw new Malformed('truncated', `snapshot ends inside the sessions (${sn} slots)`);
    const sc: FileColumns<SessionColumns> = {
      n: sn, sid: r.column(sn, SESSION_ID_BYTES), loc: r.column(sn, LOCATOR_ID_BYTES), keys: r.column(sn, 2 * KEY_BYTES),
      exp: r.column(sn, 8), txSeq: r.column(sn, 8), high: r.column(sn, 8), lo: r.column(sn, 4), hi: r.column(sn, 4),
      aud: r.column(sn, 4), kid: r.column(sn, 4), strings,
    };
    let sessions = 0;
    for (let s = 0; s < sn; s++) {
      const aud = i32At(sc.aud, s);
      if (aud === NO_STRING) continue;
      const kid = i32At(sc.kid, s);
      if (aud < 0 || aud >= nStrings || kid < NO_STRING || kid >= nStrings) throw r.bad(`session slot ${s} names an undefined string`);
      const exp = f64At(sc.exp, s);
      const tx = f64At(sc.txSeq, s);
      const high = f64At(sc.high, s);
      if (!Number.isFinite(exp) || !Number.isSafeInteger(tx) || tx < 0 || !Number.isSafeInteger(high) || high < -1) throw r.bad(`session slot ${s}: expiry, send sequence or replay window out of range`);
      sessions++;
    }
    // Registrations.
    const rn = r.u32();
    const baseMs = r.f64();
    const tickMs = r.u32();
    if (!Number.isFinite(baseMs) || tickMs === 0) throw r.bad('registration base time or tick out of range');
    if (rn * RECORD_SLOT_BYTES > buf.length - r.pos) throw new Malformed('truncated', `snapshot ends inside the registrations (${rn} slots)`);
    const rc: FileColumns<RegistrationColumns> = {
      n: rn, baseMs, tickMs, ids: r.column(rn, LOCATOR_ID_BYTES), ips: r.column(rn, 4), bits: r.column(rn, 4),
      regTicks: r.column(rn, 4), expTicks: r.column(rn, 4), seqs: r.column(rn, 8),
    };
    const refs = new Int32Array(rn);
    new Uint8Array(refs.buffer).set(r.column(rn, 4));
    let records = 0;
    let v6 = 0;
    for (let s = 0; s < rn; s++) {
      const kind = Table.slotKind(i32At(rc.bits, s) >>> 0);
      if (kind < 0) throw r.bad(`registration slot ${s}: unknown flags`);
      if (kind === 0) continue;
      const seq = f64At(rc.seqs, s);
      if (!Number.isSafeInteger(seq) || seq < 0) throw r.bad(`registration slot ${s}: sequence number out of range`);
      const ref = refs[s]!;
      if (ref !== -1 && (ref < 0 || ref >= sn || i32At(sc.aud, ref) === NO_STRING || !sameId(rc.ids, s, sc.loc, ref))) throw r.bad(`registration slot ${s}: not its session's`);
      if (kind === 2) v6++;
      records++;
    }
    const nRare = r.u32();
    const rare = new Map<number, SlotRareFields>();
    let last = -1;
    for (let i = 0; i < nRare; i++) {
      const slot = r.u32();
      const flags = r.u8();
      if (slot <= last || slot >= rn) throw r.bad(`rare fields of slot ${slot}: slots not ascending or out of range`);
      last = slot;
      const kind = Table.slotKind(i32At(rc.bits, slot) >>> 0);
      if (kind <= 0 || flags === 0 || flags & ~(F_IPV6 | F_NICKNAME | F_EXTRA) || (kind === 2) !== ((flags & F_IPV6) !== 0)) throw r.bad(`rare fields of slot ${slot}: flags do not match the record`);
      const f: SlotRareFields = {};
      if (flags & F_IPV6) f.ip = r.text();
      if (flags & F_NICKNAME) f.nickname = r.text();
      if (flags & F_EXTRA) {
        f.extra = parseExtra(r.text());
        if (!f.extra) throw r.bad(`rare fields of slot ${slot}: not a JSON object`);
      }
      if (kind === 2) v6--;
      rare.set(slot, f);
    }
    if (v6 !== 0) throw r.bad('an IPv6 registration without its address');
    const nWatches = r.u32();
    const watches: Decoded['watches'] = [];
    for (let i = 0; i < nWatches; i++) {
      const watcher = r.hexId('watcher ID');
      const n = r.u32();
      if (n > MAX_WATCHES) throw r.bad(`watch list of ${n} targets`);
      const targets: string[] = [];
      for (let k = 0; k < n; k++) targets.push(r.hexId('watch target'));
      const views: number[] = [];
      for (let k = 0; k < n; k++) views.push(r.f64());
      watches.push({ watcher, targets, views });
    }
    const ns = r.u32();
    const nr = r.u32();
    const nw = r.u32();
    if (ns !== sessions || nr !== records || nw !== nWatches) throw r.bad('end counts differ from the sections');
    if (r.pos !== buf.length) return { ok: false, code: 'trailing-bytes', reason: `${buf.length - r.pos} bytes after the end` };
    return { ok: true, d: { savedMs, sessions: sc, records: rc, refs, rare, watches } };
  } catch (err) {
    if (err instanceof Malformed) return { ok: false, code: err.code, reason: err.message };
    throw err;
  }
}

/** Check a snapshot file's bytes without building anything: {ok:false, code} if malformed. */
export function decodeSnapshot(buf: Buffer): { ok: true; savedMs: number } | SnapshotDecodeError {
  const r = decode(buf);
  return r.ok ? { ok: true, savedMs: r.d.savedMs } : r;
}

/**
 * The sessions of a checked file held by `sessions`: in bulk at their slot numbers
 * (ServerSessions.restoreColumns), or one by one when it holds some already or has room for
 * fewer; a lookup from the file's slot to the held session.
 */
function restoreSessions(c: FileColumns<SessionColumns>, sessions: ServerSessions): (slot: number) => ServerSession | undefined {
  if (sessions.restoreColumns(c)) return (slot) => sessions.heldAt(slot);
  const held = new Map<number, ServerSession>();
  for (let s = 0; s < c.n; s++) {
    const aud = i32At(c.aud, s);
    if (aud === NO_STRING) continue;
    const kid = i32At(c.kid, s);
    const k = s * 2 * KEY_BYTES;
    const one: KeyedSession = newServerSession({
      sid: c.sid.subarray(s * SESSION_ID_BYTES, (s + 1) * SESSION_ID_BYTES), locatorId: c.loc.subarray(s * LOCATOR_ID_BYTES, (s + 1) * LOCATOR_ID_BYTES),
      aud: c.strings[aud]!, exp: f64At(c.exp, s), txSeq: f64At(c.txSeq, s),
      terminalToServer: c.keys.subarray(k, k + KEY_BYTES), serverToTerminal: c.keys.subarray(k + KEY_BYTES, k + 2 * KEY_BYTES),
      window: ReplayWindow.fromState(f64At(c.high, s), i32At(c.lo, s), i32At(c.hi, s)),
    });
    if (kid !== NO_STRING) one.kid = c.strings[kid]!;
    const h = sessions.restore(one);
    if (h) held.set(s, h);
  }
  return (slot) => held.get(slot);
}

/**
 * The registrations of a checked file put in `table`: in bulk at their slot numbers
 * (RegistrationTable.fill), or one by one (`setRaw`) when it was used already or has room for
 * fewer slots (then the least recently registered are evicted beyond its bound, as running). How
 * many had expired meanwhile (left out).
 */
function restoreRecords(d: Decoded, table: RegistrationTable, sessionAt: (slot: number) => ServerSession | undefined, nowMs: number): number {
  const c = d.records;
  const ofRecord = (s: number): ServerSession | undefined => (d.refs[s]! < 0 ? undefined : sessionAt(d.refs[s]!));
  const expired = table.fill(c, ofRecord, d.rare);
  if (expired >= 0) return expired;
  let dropped = 0;
  const toTick = (tick: number): number => table.msToTick(c.baseMs + tick * c.tickMs);
  for (let s = 0; s < c.n; s++) {
    const bits = i32At(c.bits, s) >>> 0;
    if (Table.slotKind(bits) <= 0) continue;
    if (c.baseMs + i32At(c.expTicks, s) * c.tickMs <= nowMs) {
      dropped++;
      continue;
    }
    const rare = d.rare.get(s);
    table.setRaw(c.ids, s * LOCATOR_ID_BYTES, LOCATOR_ID_BYTES, {
      ...Table.fieldsOfBits(bits), ip: rare?.ip ?? i32At(c.ips, s), session: ofRecord(s), seq: f64At(c.seqs, s),
      regTick: toTick(i32At(c.regTicks, s)), expTick: toTick(i32At(c.expTicks, s)), nickname: rare?.nickname, extra: rare?.extra,
    });
  }
  return dropped;
}

/**
 * Read the snapshot of `stateDir` into `target` (registrations that expired by `nowMs` are
 * dropped). Null when there is none; {ok:false, code} when it is malformed or of another
 * version (nothing restored); rejects on an I/O error other than its absence.
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
  const checked = decode(buf);
  if (!checked.ok) return checked;
  const d = checked.d;
  const sessionsBefore = target.sessions.size;
  const recordsBefore = target.table.size;
  const sessionAt = restoreSessions(d.sessions, target.sessions);
  const droppedExpired = restoreRecords(d, target.table, sessionAt, nowMs);
  // Only a media ID puts a terminal in the search index, sorted once (not an insertion per record).
  const searchable: [string, { extra: RegistrationExtra }][] = [];
  for (const [slot, f] of d.rare) {
    if (f.extra?.mediaId === undefined) continue;
    const key = Buffer.from(d.records.ids.subarray(slot * LOCATOR_ID_BYTES, (slot + 1) * LOCATOR_ID_BYTES)).toString('hex');
    if (target.table.find(key) !== -1) searchable.push([key, { extra: f.extra }]);
  }
  target.search.load(searchable);
  // Lists of watchers still registered: one whose registration expired meanwhile lost it, as it would have running.
  let watchLists = 0;
  for (const l of d.watches) {
    if (target.table.find(l.watcher) !== -1 && target.watches.restore(l.watcher, l.targets, l.views, MAX_WATCHES)) watchLists++;
  }
  return {
    ok: true, version: SNAPSHOT_VERSION, savedMs: d.savedMs, sessions: target.sessions.size - sessionsBefore, records: target.table.size - recordsBefore,
    droppedExpired, watchLists, bytes: buf.length, durationMs: Math.round(performance.now() - started), cpuMs: cpuMsSince(cpu0),
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
