// The terminal database (the patent's terminal database 140): the maker's list of devices with
// their Ed25519 public keys and revocation flags, plus the registry of services authd issues
// tickets for. One SQLite file, authd.db, in the state directory, in WAL mode so the devloc(1)
// admin commands can write (enroll, revoke) while the daemon keeps reading: the daemon reads
// each device row at every authentication, so a revocation takes effect at the next request.
import Database from 'better-sqlite3';
import { closeSync, existsSync, fchmodSync, mkdirSync, openSync, statSync } from 'node:fs';
import path from 'node:path';

export const DB_FILE = 'authd.db';
/** Bumped with every schema change; a database from a newer devloc is refused, not guessed at. */
export const SCHEMA_VERSION = 2;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS devices (
  device_id   TEXT    NOT NULL PRIMARY KEY,
  public_key  BLOB    NOT NULL CHECK (length(public_key) = 32),
  model       TEXT,
  region      TEXT,
  revoked     INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
  revoked_at  INTEGER,
  enrolled_at INTEGER NOT NULL,
  updated_at  INTEGER NOT NULL
) WITHOUT ROWID;
-- Partial index: counting and listing revoked devices stays cheap with millions of devices,
-- and enrolling (revoked = 0) never touches it.
CREATE INDEX IF NOT EXISTS devices_revoked ON devices (device_id) WHERE revoked = 1;
CREATE TABLE IF NOT EXISTS services (
  service_id  TEXT    NOT NULL PRIMARY KEY,
  seal_key    BLOB    NOT NULL CHECK (length(seal_key) = 32),
  addr        TEXT,
  added_at    INTEGER NOT NULL,
  updated_at  INTEGER NOT NULL
) WITHOUT ROWID;
-- TURN relays (coturn) whose credentials authd mints into grants. The secret itself stays in
-- secret_file (owner-only), read by authd; the database holds where to find it. (Version 2.)
CREATE TABLE IF NOT EXISTS relays (
  relay_id    TEXT    NOT NULL PRIMARY KEY,
  udp         TEXT,
  tcp         TEXT,
  tls         TEXT,
  tls_name    TEXT,
  secret_file TEXT    NOT NULL,
  added_at    INTEGER NOT NULL,
  updated_at  INTEGER NOT NULL,
  CHECK (udp IS NOT NULL OR tcp IS NOT NULL OR tls IS NOT NULL)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS enrollments (
  id        INTEGER PRIMARY KEY,
  at        INTEGER NOT NULL,
  file      TEXT    NOT NULL,
  sha256    TEXT    NOT NULL,
  records   INTEGER NOT NULL,
  added     INTEGER NOT NULL,
  unchanged INTEGER NOT NULL,
  updated   INTEGER NOT NULL,
  replaced  INTEGER NOT NULL
);
`;

export interface DeviceRecord {
  deviceId: string;
  publicKey: Buffer;
  model?: string;
  region?: string;
}

export interface DeviceRow extends DeviceRecord {
  revoked: boolean;
  /** ms since the epoch */
  revokedAt?: number;
  enrolledAt: number;
  updatedAt: number;
}

export interface ServiceRow {
  serviceId: string;
  /** The service's X25519 public key (delivered to terminals in each grant). */
  sealKey: Buffer;
  /** "ip:port" or "[v6]:port", literal IP. */
  addr?: string;
  addedAt: number;
  updatedAt: number;
}

/** A TURN relay: where terminals reach it, by transport, and the file holding its shared secret. */
export interface RelayRow {
  relayId: string;
  /** "ip:port" or "[v6]:port", literal IP, per client-to-relay transport (at least one). */
  udp?: string;
  tcp?: string;
  tls?: string;
  /** The name the relay's TLS certificate is issued for. */
  tlsName?: string;
  secretFile: string;
  addedAt: number;
  updatedAt: number;
}
export type RelaySpec = Omit<RelayRow, 'addedAt' | 'updatedAt'>;

interface RawRelay {
  relay_id: string;
  udp: string | null;
  tcp: string | null;
  tls: string | null;
  tls_name: string | null;
  secret_file: string;
  added_at: number;
  updated_at: number;
}

function relayOf(r: RawRelay): RelayRow {
  const row: RelayRow = { relayId: r.relay_id, secretFile: r.secret_file, addedAt: r.added_at, updatedAt: r.updated_at };
  if (r.udp !== null) row.udp = r.udp;
  if (r.tcp !== null) row.tcp = r.tcp;
  if (r.tls !== null) row.tls = r.tls;
  if (r.tls_name !== null) row.tlsName = r.tls_name;
  return row;
}

interface RawDevice {
  device_id: string;
  public_key: Buffer;
  model: string | null;
  region: string | null;
  revoked: number;
  revoked_at: number | null;
  enrolled_at: number;
  updated_at: number;
}
interface RawService {
  service_id: string;
  seal_key: Buffer;
  addr: string | null;
  added_at: number;
  updated_at: number;
}

function deviceOf(r: RawDevice): DeviceRow {
  const d: DeviceRow = { deviceId: r.device_id, publicKey: r.public_key, revoked: r.revoked === 1, enrolledAt: r.enrolled_at, updatedAt: r.updated_at };
  if (r.model !== null) d.model = r.model;
  if (r.region !== null) d.region = r.region;
  if (r.revoked_at !== null) d.revokedAt = r.revoked_at;
  return d;
}
function serviceOf(r: RawService): ServiceRow {
  const s: ServiceRow = { serviceId: r.service_id, sealKey: r.seal_key, addedAt: r.added_at, updatedAt: r.updated_at };
  if (r.addr !== null) s.addr = r.addr;
  return s;
}

export interface OpenOptions {
  /** Create the file (and the state directory) when missing. Default true. */
  create?: boolean;
  /**
   * SQLite `synchronous`: NORMAL (the daemon: commits are atomic, the last ones may be lost on
   * power failure) or FULL (admin commands: once devloc says "imported", it survives power loss).
   */
  synchronous?: 'NORMAL' | 'FULL';
  /** Page cache in KiB (negative cache_size); bulk imports want more than SQLite's 2 MB. */
  cacheKiB?: number;
  /** Wait this long for another writer (ms). */
  busyTimeoutMs?: number;
}

export class AuthDb {
  readonly db: Database.Database;
  readonly path: string;
  private readonly q: {
    device: Database.Statement<[string], RawDevice>;
    deviceKey: Database.Statement<[string], { public_key: Buffer; revoked: number }>;
    service: Database.Statement<[string], RawService>;
    changeStamp: Database.Statement<[], number>;
    dataVersion: Database.Statement<[], number>;
  };

  private constructor(db: Database.Database, file: string) {
    this.db = db;
    this.path = file;
    this.q = {
      device: db.prepare('SELECT * FROM devices WHERE device_id = ?'),
      deviceKey: db.prepare('SELECT public_key, revoked FROM devices WHERE device_id = ?'),
      service: db.prepare('SELECT * FROM services WHERE service_id = ?'),
      changeStamp: db.prepare<[], number>('SELECT data_version * 4294967296 + total_changes() FROM pragma_data_version').pluck(),
      // Prepared once: db.pragma() prepares its statement at every call.
      dataVersion: db.prepare<[], number>('SELECT data_version FROM pragma_data_version').pluck(),
    };
  }

  static fileIn(stateDir: string): string {
    return path.join(stateDir, DB_FILE);
  }

  /** Open (and by default create) the database in `stateDir`. Throws Error with a reason. */
  static open(stateDir: string, o: OpenOptions = {}): AuthDb {
    const file = AuthDb.fileIn(stateDir);
    const create = o.create ?? true;
    if (!existsSync(file)) {
      if (!create) throw new Error(`no terminal database at ${file} (devloc enroll or devloc-authd creates it)`);
      mkdirSync(stateDir, { recursive: true, mode: 0o700 });
      // Created 0600 whatever the umask (SQLite would make it 0644, and its -wal/-shm files take
      // the database file's mode): it lists every device's key and revocation state.
      let fd: number | undefined;
      try {
        fd = openSync(file, 'wx', 0o600);
        fchmodSync(fd, 0o600);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err; // another process just created it
      } finally {
        if (fd !== undefined) closeSync(fd);
      }
    }
    const db = new Database(file, { fileMustExist: !create, timeout: o.busyTimeoutMs ?? 5000 });
    try {
      db.pragma('journal_mode = WAL');
      db.pragma(`synchronous = ${o.synchronous ?? 'NORMAL'}`);
      db.pragma('foreign_keys = ON');
      if (o.cacheKiB) db.pragma(`cache_size = -${Math.floor(o.cacheKiB)}`);
      const version = db.pragma('user_version', { simple: true }) as number;
      if (version > SCHEMA_VERSION) {
        throw new Error(`${file} has schema version ${version}; this devloc knows up to ${SCHEMA_VERSION} (upgrade devloc)`);
      }
      if (version < SCHEMA_VERSION) {
        db.transaction(() => {
          db.exec(SCHEMA);
          db.pragma(`user_version = ${SCHEMA_VERSION}`);
        }).immediate();
      }
    } catch (err) {
      db.close();
      throw err;
    }
    return new AuthDb(db, file);
  }

  /** An empty database in memory (dry runs without a state directory, tests). */
  static memory(): AuthDb {
    const db = new Database(':memory:');
    db.exec(SCHEMA);
    db.pragma(`user_version = ${SCHEMA_VERSION}`);
    return new AuthDb(db, ':memory:');
  }

  close(): void {
    if (this.db.open) this.db.close();
  }

  get open(): boolean {
    return this.db.open;
  }

  /** Changes whenever another connection commits (PRAGMA data_version). */
  dataVersion(): number {
    return this.q.dataVersion.get()!;
  }

  /**
   * Changes whenever anything was committed, by another connection (data_version) or by this
   * one (total_changes): what a cache of rows compares (~4 us, a prepared statement).
   */
  changeStamp(): number {
    return this.q.changeStamp.get()!;
  }

  /** Bytes on disk: the database plus its write-ahead log. */
  sizeBytes(): number {
    let n = 0;
    if (this.path === ':memory:') return 0;
    for (const f of [this.path, `${this.path}-wal`]) {
      try {
        n += statSync(f).size;
      } catch {
        // no WAL yet
      }
    }
    return n;
  }

  // ---- devices ---------------------------------------------------------------------------

  getDevice(deviceId: string): DeviceRow | undefined {
    const r = this.q.device.get(deviceId);
    return r ? deviceOf(r) : undefined;
  }

  /** The hot path of authentication: key and revocation flag only. */
  deviceKey(deviceId: string): { publicKey: Buffer; revoked: boolean } | undefined {
    const r = this.q.deviceKey.get(deviceId);
    return r ? { publicKey: r.public_key, revoked: r.revoked === 1 } : undefined;
  }

  countDevices(): { devices: number; revoked: number } {
    const devices = (this.db.prepare('SELECT count(*) AS n FROM devices').get() as { n: number }).n;
    const revoked = (this.db.prepare('SELECT count(*) AS n FROM devices WHERE revoked = 1').get() as { n: number }).n;
    return { devices, revoked };
  }

  /** Devices in device-ID order, after `after` (paging), at most `limit` (0 = all). */
  listDevices(o: { limit?: number; after?: string; revokedOnly?: boolean } = {}): DeviceRow[] {
    const where: string[] = [];
    const args: (string | number)[] = [];
    if (o.after !== undefined) {
      where.push('device_id > ?');
      args.push(o.after);
    }
    if (o.revokedOnly) where.push('revoked = 1');
    const sql = `SELECT * FROM devices${where.length ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY device_id${o.limit ? ' LIMIT ?' : ''}`;
    if (o.limit) args.push(o.limit);
    return (this.db.prepare(sql).all(...args) as RawDevice[]).map(deviceOf);
  }

  /** Enroll one device (bulk imports go through enroll.ts). False when the ID exists already. */
  addDevice(r: DeviceRecord, now = Date.now()): boolean {
    return this.db
      .prepare('INSERT INTO devices (device_id, public_key, model, region, enrolled_at, updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (device_id) DO NOTHING')
      .run(r.deviceId, r.publicKey, r.model ?? null, r.region ?? null, now, now).changes === 1;
  }

  /** Devices revoked at or after `sinceMs`, oldest first (at most `limit`): what authd tells the services. */
  revokedSince(sinceMs: number, limit = 10_000): { deviceId: string; revokedAt: number }[] {
    return (this.db.prepare('SELECT device_id, revoked_at FROM devices WHERE revoked = 1 AND revoked_at >= ? ORDER BY revoked_at LIMIT ?')
      .all(sinceMs, limit) as { device_id: string; revoked_at: number }[]).map((r) => ({ deviceId: r.device_id, revokedAt: r.revoked_at }));
  }

  /** Set or clear the revoked flag. */
  setRevoked(deviceId: string, revoked: boolean, now = Date.now()): 'changed' | 'unchanged' | 'unknown' {
    const r = this.db
      .prepare('UPDATE devices SET revoked = ?, revoked_at = ?, updated_at = ? WHERE device_id = ? AND revoked <> ?')
      .run(revoked ? 1 : 0, revoked ? now : null, now, deviceId, revoked ? 1 : 0);
    if (r.changes > 0) return 'changed';
    return this.q.deviceKey.get(deviceId) ? 'unchanged' : 'unknown';
  }

  // ---- services --------------------------------------------------------------------------

  getService(serviceId: string): ServiceRow | undefined {
    const r = this.q.service.get(serviceId);
    return r ? serviceOf(r) : undefined;
  }

  listServices(): ServiceRow[] {
    return (this.db.prepare('SELECT * FROM services ORDER BY service_id').all() as RawService[]).map(serviceOf);
  }

  /**
   * Register a service. Re-adding the same key and address changes nothing; a different key or
   * address is a conflict unless `replace`.
   */
  putService(s: { serviceId: string; sealKey: Buffer; addr?: string }, replace: boolean, now = Date.now()): 'added' | 'unchanged' | 'replaced' | 'conflict' {
    return this.db.transaction(() => {
      const old = this.getService(s.serviceId);
      if (!old) {
        this.db.prepare('INSERT INTO services (service_id, seal_key, addr, added_at, updated_at) VALUES (?, ?, ?, ?, ?)').run(s.serviceId, s.sealKey, s.addr ?? null, now, now);
        return 'added' as const;
      }
      if (old.sealKey.equals(s.sealKey) && old.addr === s.addr) return 'unchanged' as const;
      if (!replace) return 'conflict' as const;
      this.db.prepare('UPDATE services SET seal_key = ?, addr = ?, updated_at = ? WHERE service_id = ?').run(s.sealKey, s.addr ?? null, now, s.serviceId);
      return 'replaced' as const;
    }).immediate();
  }

  removeService(serviceId: string): boolean {
    return this.db.prepare('DELETE FROM services WHERE service_id = ?').run(serviceId).changes > 0;
  }

  // ---- relays ----------------------------------------------------------------------------

  listRelays(): RelayRow[] {
    return (this.db.prepare('SELECT * FROM relays ORDER BY relay_id').all() as RawRelay[]).map(relayOf);
  }

  /** Register a relay. Same fields: unchanged; other fields: a conflict unless `replace`. */
  putRelay(r: RelaySpec, replace: boolean, now = Date.now()): 'added' | 'unchanged' | 'replaced' | 'conflict' {
    return this.db.transaction(() => {
      const raw = this.db.prepare('SELECT * FROM relays WHERE relay_id = ?').get(r.relayId) as RawRelay | undefined;
      const values = [r.udp ?? null, r.tcp ?? null, r.tls ?? null, r.tlsName ?? null, r.secretFile] as const;
      if (!raw) {
        this.db.prepare('INSERT INTO relays (relay_id, udp, tcp, tls, tls_name, secret_file, added_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)').run(r.relayId, ...values, now, now);
        return 'added' as const;
      }
      const same = raw.udp === values[0] && raw.tcp === values[1] && raw.tls === values[2] && raw.tls_name === values[3] && raw.secret_file === values[4];
      if (same) return 'unchanged' as const;
      if (!replace) return 'conflict' as const;
      this.db.prepare('UPDATE relays SET udp = ?, tcp = ?, tls = ?, tls_name = ?, secret_file = ?, updated_at = ? WHERE relay_id = ?').run(...values, now, r.relayId);
      return 'replaced' as const;
    }).immediate();
  }

  removeRelay(relayId: string): boolean {
    return this.db.prepare('DELETE FROM relays WHERE relay_id = ?').run(relayId).changes > 0;
  }

  lastEnrollment(): { at: number; file: string; sha256: string; records: number } | undefined {
    return this.db.prepare('SELECT at, file, sha256, records FROM enrollments ORDER BY id DESC LIMIT 1').get() as
      | { at: number; file: string; sha256: string; records: number }
      | undefined;
  }
}
