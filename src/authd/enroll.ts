// Enrollment: importing the maker's list of devices (JSON Lines or CSV) into the terminal
// database. Every line is validated and every bad one reported with its number; the import is
// one transaction, so the database holds either all of a file or none of it, whatever happens
// (an error, a crash, SIGKILL: SQLite's write-ahead log drops an uncommitted transaction).
// Re-importing a file changes nothing. The file is read in chunks, synchronously: the whole
// import runs as one uninterrupted loop of prepared statements (> 100k records/s).
import { createHash } from 'node:crypto';
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import path from 'node:path';
import { isDeviceId } from '../wire/keys.js';
import type { AuthDb, DeviceRecord } from './db.js';

export type EnrollFormat = 'auto' | 'jsonl' | 'csv';

export interface EnrollOptions {
  /** A different key for an enrolled device replaces it (otherwise it is an error). */
  replace?: boolean;
  format?: EnrollFormat;
  /** Validate and count, write nothing. */
  dryRun?: boolean;
  /** Called once per bad line (1-based line number in the file). */
  onError?: (line: number, reason: string) => void;
  /** Called every few thousand records and at the end. */
  onProgress?: (p: EnrollProgress) => void;
  now?: () => number;
}

export interface EnrollProgress {
  bytes: number;
  totalBytes: number;
  records: number;
}

export interface EnrollResult {
  /** True when the file was imported (or, with dryRun, would be). */
  ok: boolean;
  dryRun: boolean;
  file: string;
  sha256: string;
  format: 'jsonl' | 'csv';
  records: number;
  added: number;
  unchanged: number;
  /** Same key, model or region changed. */
  updated: number;
  /** Key replaced (--replace). */
  replaced: number;
  /** Bad lines (nothing was imported when > 0). */
  errors: number;
}

/** 32 bytes in unpadded base64url are 43 characters, the last one carrying 4 bits and 2 zero bits. */
const KEY_RE = /^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$/;
const TEXT_MAX = 64;
// eslint-disable-next-line no-control-regex
const CONTROL_RE = /[\u0000-\u001f\u007f]/;
const FIELDS = new Set(['deviceId', 'publicKey', 'model', 'region']);
/** Fields `devloc devices list --json` adds; accepted and ignored, so an export re-imports. */
const EXPORT_FIELDS = new Set(['revoked', 'revokedAt', 'enrolledAt', 'updatedAt', 'locatorId']);

export class RecordError extends Error {}

/** Decode a base64url Ed25519 public key (32 bytes, unpadded; one trailing '=' tolerated). */
export function parsePublicKey(text: string): Buffer | null {
  const s = text.length === 44 && text.endsWith('=') ? text.slice(0, 43) : text;
  return KEY_RE.test(s) ? Buffer.from(s, 'base64url') : null;
}

function optionalText(v: unknown, name: string): string | undefined {
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string') throw new RecordError(`${name} must be text`);
  if (v.length > TEXT_MAX) throw new RecordError(`${name} longer than ${TEXT_MAX} characters`);
  if (CONTROL_RE.test(v)) throw new RecordError(`${name} contains control characters`);
  return v;
}

/** Validate one record's fields; throws RecordError with the reason. */
export function checkRecord(deviceId: unknown, publicKey: unknown, model: unknown, region: unknown): DeviceRecord {
  if (typeof deviceId !== 'string' || deviceId === '') throw new RecordError('deviceId missing');
  if (!isDeviceId(deviceId)) throw new RecordError(`deviceId ${JSON.stringify(deviceId.slice(0, 80))} is not a device ID (1-64 of A-Z a-z 0-9 . _ : -)`);
  if (typeof publicKey !== 'string' || publicKey === '') throw new RecordError('publicKey missing');
  const key = parsePublicKey(publicKey);
  if (!key) throw new RecordError('publicKey is not a 32-byte Ed25519 key in base64url (43 characters)');
  const r: DeviceRecord = { deviceId, publicKey: key };
  const m = optionalText(model, 'model');
  const g = optionalText(region, 'region');
  if (m !== undefined) r.model = m;
  if (g !== undefined) r.region = g;
  return r;
}

export function parseJsonRecord(line: string): DeviceRecord {
  let o: unknown;
  try {
    o = JSON.parse(line);
  } catch (err) {
    throw new RecordError(`not valid JSON (${(err as Error).message})`);
  }
  if (typeof o !== 'object' || o === null || Array.isArray(o)) throw new RecordError('not a JSON object');
  const rec = o as Record<string, unknown>;
  for (const k of Object.keys(rec)) {
    if (!FIELDS.has(k) && !EXPORT_FIELDS.has(k)) throw new RecordError(`unknown field ${JSON.stringify(k)} (expected deviceId, publicKey, model, region)`);
  }
  return checkRecord(rec['deviceId'], rec['publicKey'], rec['model'], rec['region']);
}

/** Split one CSV line (RFC 4180 quoting; a quoted field cannot span lines). */
export function splitCsv(line: string): string[] {
  const out: string[] = [];
  let i = 0;
  for (;;) {
    if (line[i] === '"') {
      let v = '';
      i++;
      for (;;) {
        const q = line.indexOf('"', i);
        if (q < 0) throw new RecordError('unterminated quoted field');
        v += line.slice(i, q);
        if (line[q + 1] === '"') {
          v += '"';
          i = q + 2;
          continue;
        }
        i = q + 1;
        break;
      }
      out.push(v);
      if (i === line.length) return out;
      if (line[i] !== ',') throw new RecordError('text after a closing quote');
      i++;
    } else {
      const c = line.indexOf(',', i);
      if (c < 0) {
        out.push(line.slice(i).trim());
        return out;
      }
      out.push(line.slice(i, c).trim());
      i = c + 1;
    }
  }
}

interface CsvLayout {
  deviceId: number;
  publicKey: number;
  model: number;
  region: number;
  columns: number;
}

export function parseCsvHeader(line: string): CsvLayout {
  const names = splitCsv(line).map((s) => s.trim());
  const layout: CsvLayout = { deviceId: -1, publicKey: -1, model: -1, region: -1, columns: names.length };
  names.forEach((n, i) => {
    const known = [...FIELDS].find((f) => f.toLowerCase() === n.toLowerCase());
    if (!known) throw new RecordError(`header: unknown column ${JSON.stringify(n)} (expected deviceId,publicKey,model,region)`);
    if (layout[known as keyof CsvLayout] !== -1) throw new RecordError(`header: column ${known} twice`);
    (layout as unknown as Record<string, number>)[known] = i;
  });
  if (layout.deviceId < 0 || layout.publicKey < 0) throw new RecordError('header must name the columns deviceId and publicKey (e.g. deviceId,publicKey,model,region)');
  return layout;
}

export function parseCsvRecord(line: string, l: CsvLayout): DeviceRecord {
  const f = splitCsv(line);
  if (f.length !== l.columns) throw new RecordError(`expected ${l.columns} fields, found ${f.length}`);
  return checkRecord(f[l.deviceId], f[l.publicKey], l.model >= 0 ? f[l.model] : undefined, l.region >= 0 ? f[l.region] : undefined);
}

/** Calls `fn(line, lineNumber)` for each line of the file, reading it in 1 MiB chunks. */
function forEachLine(fd: number, hash: ReturnType<typeof createHash>, fn: (line: string, n: number, bytes: number) => void): void {
  const chunk = Buffer.allocUnsafe(1 << 20);
  let carry: Buffer = Buffer.alloc(0);
  let lineNo = 0;
  let bytes = 0;
  const emit = (buf: Buffer, start: number, end: number): void => {
    lineNo++;
    if (end > start && buf[end - 1] === 0x0d) end--;
    let s = buf.toString('utf8', start, end);
    if (lineNo === 1 && s.charCodeAt(0) === 0xfeff) s = s.slice(1);
    fn(s, lineNo, bytes);
  };
  for (;;) {
    const n = readSync(fd, chunk, 0, chunk.length, null);
    if (n === 0) break;
    bytes += n;
    hash.update(chunk.subarray(0, n));
    // '\n' never occurs inside a multi-byte UTF-8 sequence, so splitting bytes on it is safe.
    let buf: Buffer = carry.length ? Buffer.concat([carry, chunk.subarray(0, n)]) : chunk.subarray(0, n);
    let start = 0;
    for (let nl = buf.indexOf(0x0a, start); nl >= 0; nl = buf.indexOf(0x0a, start)) {
      emit(buf, start, nl);
      start = nl + 1;
    }
    carry = Buffer.from(buf.subarray(start));
    buf = carry;
  }
  if (carry.length) emit(carry, 0, carry.length);
}

/** Guess the format from the file name, else from the first non-blank line. */
function sniffFormat(file: string, firstLine: string): 'jsonl' | 'csv' {
  const ext = path.extname(file).toLowerCase();
  if (ext === '.csv') return 'csv';
  if (ext === '.jsonl' || ext === '.ndjson' || ext === '.json') return 'jsonl';
  return firstLine.trimStart().startsWith('{') ? 'jsonl' : 'csv';
}

/**
 * Import `file` into `db`. All-or-nothing: returns ok false (and writes nothing) when any line is
 * bad, each bad line having been passed to `onError`. Throws only for I/O and database failures
 * (after rolling back).
 */
export function enrollFile(db: AuthDb, file: string, o: EnrollOptions = {}): EnrollResult {
  const now = (o.now ?? Date.now)();
  const fd = openSync(file, 'r');
  const totalBytes = fstatSync(fd).size;
  const hash = createHash('sha256');
  const res: EnrollResult = {
    ok: false, dryRun: o.dryRun ?? false, file, sha256: '', format: 'jsonl',
    records: 0, added: 0, unchanged: 0, updated: 0, replaced: 0, errors: 0,
  };
  const seen = new Map<string, number>();
  const sql = db.db;
  const insert = sql.prepare('INSERT INTO devices (device_id, public_key, model, region, enrolled_at, updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (device_id) DO NOTHING');
  const select = sql.prepare<[string], { public_key: Buffer; model: string | null; region: string | null }>('SELECT public_key, model, region FROM devices WHERE device_id = ?');
  const update = sql.prepare('UPDATE devices SET public_key = ?, model = ?, region = ?, updated_at = ? WHERE device_id = ?');
  let format: 'jsonl' | 'csv' | undefined = o.format && o.format !== 'auto' ? o.format : undefined;
  let layout: CsvLayout | undefined;
  let headerBroken = false;
  let lastProgress = 0;
  const fail = (line: number, reason: string): void => {
    res.errors++;
    o.onError?.(line, reason);
  };
  // Writes stop at the first bad line (the transaction will be rolled back) but checking goes
  // on, lookups included, so that every bad line is reported in one run.
  const apply = (r: DeviceRecord, line: number): void => {
    const model = r.model ?? null;
    const region = r.region ?? null;
    if (!res.dryRun && res.errors === 0 && insert.run(r.deviceId, r.publicKey, model, region, now, now).changes === 1) {
      res.added++;
      return;
    }
    const old = select.get(r.deviceId);
    if (!old) {
      res.added++;
      return;
    }
    const sameKey = old.public_key.equals(r.publicKey);
    if (sameKey && old.model === model && old.region === region) {
      res.unchanged++;
      return;
    }
    if (!sameKey && !o.replace) {
      fail(line, `device ${r.deviceId} is enrolled with a different public key (--replace replaces it)`);
      return;
    }
    if (!res.dryRun && res.errors === 0) update.run(r.publicKey, model, region, now, r.deviceId);
    if (sameKey) res.updated++;
    else res.replaced++;
  };

  if (!res.dryRun) sql.exec('BEGIN IMMEDIATE');
  try {
    forEachLine(fd, hash, (text, line, bytes) => {
      if (text.trim() === '') return;
      if (format === undefined) format = sniffFormat(file, text);
      let rec: DeviceRecord;
      try {
        if (format === 'csv') {
          if (!layout) {
            if (headerBroken) return;
            try {
              layout = parseCsvHeader(text);
            } catch (err) {
              headerBroken = true;
              throw err;
            }
            return;
          }
          rec = parseCsvRecord(text, layout);
        } else {
          rec = parseJsonRecord(text);
        }
      } catch (err) {
        if (err instanceof RecordError) {
          fail(line, err.message);
          return;
        }
        throw err;
      }
      res.records++;
      const first = seen.get(rec.deviceId);
      if (first !== undefined) {
        fail(line, `duplicate device ID ${rec.deviceId} (first on line ${first})`);
        return;
      }
      seen.set(rec.deviceId, line);
      apply(rec, line);
      if (o.onProgress && (res.records & 0x1fff) === 0) {
        const t = Date.now();
        if (t - lastProgress >= 100) {
          lastProgress = t;
          o.onProgress({ bytes, totalBytes, records: res.records });
        }
      }
    });
    res.format = format ?? 'jsonl';
    res.sha256 = hash.digest('hex');
    res.ok = res.errors === 0;
    if (!res.dryRun) {
      if (res.ok) {
        sql.prepare('INSERT INTO enrollments (at, file, sha256, records, added, unchanged, updated, replaced) VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
          .run(now, path.resolve(file), res.sha256, res.records, res.added, res.unchanged, res.updated, res.replaced);
        sql.exec('COMMIT');
      } else {
        sql.exec('ROLLBACK');
      }
    }
  } catch (err) {
    if (sql.inTransaction) sql.exec('ROLLBACK');
    throw err;
  } finally {
    closeSync(fd);
  }
  if (!res.ok) {
    // Nothing was written: the counts describe what the file would have done.
    if (!res.dryRun) res.added = res.unchanged = res.updated = res.replaced = 0;
  }
  o.onProgress?.({ bytes: totalBytes, totalBytes, records: res.records });
  return res;
}
