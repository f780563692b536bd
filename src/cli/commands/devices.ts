// devloc(1) commands that administer devloc-authd's terminal database and service registry,
// working directly on authd.db in --state-dir (the daemon may run meanwhile: SQLite WAL):
//   device new, enroll, revoke, unrevoke, devices [list|show], service add|list|rm
// Exit status: 0 done, 1 the work failed (bad lines, unknown device, ...), 2 bad arguments.
import path from 'node:path';
import { accessSync, closeSync, constants, existsSync, fchmodSync, fsyncSync, unlinkSync, openSync, readFileSync, statSync, writeSync } from 'node:fs';
import type { Argv, CommandModule } from 'yargs';
import { AuthDb } from '../../authd/db.js';
import type { DeviceRow, RelaySpec, ServiceRow } from '../../authd/db.js';
import { readRelaySecret } from '../../authd/relays.js';
import type { EnrollProgress } from '../../authd/enroll.js';
import { enrollFile } from '../../authd/enroll.js';
import { LocatorIds } from '../../authd/locator.js';
import { parseAddress } from '../../wire/addr.js';
import { isDeviceId, isServiceId, keyFileToJson, newDeviceKey, parsePublicKeyFile } from '../../wire/keys.js';
import { escapeControls } from '../../common/escape.js';
import { CliError, UsageError, cliIo, print, printJson, runHandler, table } from '../util.js';

/**
 * `devloc <name>` running `body` through runHandler (usage errors exit 2, failures 1). SQLite and
 * file-system errors thrown by the database or a file are the work failing too: a message, no
 * stack.
 */
function handle<A>(name: string, body: (a: A) => void | Promise<void>): (a: A) => Promise<void> {
  return (a: A) =>
    runHandler(name, async () => {
      try {
        await body(a);
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        // Only the database's and the system's (EACCES, ENOSPC, ...): node's own ERR_* codes are bugs, kept with their stack.
        if (e instanceof Error && (e.name === 'SqliteError' || /^E[A-Z0-9]+$/.test(e.code ?? ''))) throw new CliError(e.message);
        throw err;
      }
    });
}

/**
 * --state-dir default: what devloc-authd itself uses ($DEVLOC_AUTHD_STATE_DIR, else
 * /var/lib/devloc); but where the systemd unit keeps it (/var/lib/devloc/authd, a directory an
 * admin's shell has no variable for) when that exists and the plain default holds no database.
 */
export function defaultStateDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env['DEVLOC_AUTHD_STATE_DIR']) return env['DEVLOC_AUTHD_STATE_DIR'];
  if (!existsSync('/var/lib/devloc/authd.db') && existsSync('/var/lib/devloc/authd')) return '/var/lib/devloc/authd';
  return '/var/lib/devloc';
}

function withStateDir<T>(y: Argv<T>) {
  return y.option('state-dir', {
    type: 'string',
    default: defaultStateDir(),
    defaultDescription: '$DEVLOC_AUTHD_STATE_DIR, else /var/lib/devloc/authd if it exists, else /var/lib/devloc',
    describe: 'directory holding authd.db (as devloc-authd --state-dir)',
  });
}

const denied = (path: string): CliError =>
  new CliError(`permission denied: ${path} (run as the user devloc-authd runs as, e.g. sudo -u devloc, or pass --state-dir)`);

/**
 * Say what stops us from using the database in `stateDir`, before SQLite says "no such file" or
 * "unable to open database file": a directory we cannot enter, a file we cannot read or write
 * (WAL mode writes beside the database even to read it).
 */
function checkAccess(stateDir: string, create: boolean): void {
  const file = AuthDb.fileIn(stateDir);
  const code = (f: () => void): string | undefined => {
    try {
      f();
      return undefined;
    } catch (err) {
      return (err as NodeJS.ErrnoException).code ?? 'EIO';
    }
  };
  const dirStat = code(() => statSync(stateDir));
  if (dirStat === 'EACCES' || dirStat === 'EPERM') throw denied(stateDir);
  if (dirStat === 'ENOTDIR') throw new CliError(`${stateDir}: not a directory (pass --state-dir)`);
  if (dirStat === undefined) {
    if (!statSync(stateDir).isDirectory()) throw new CliError(`${stateDir}: not a directory (pass --state-dir)`);
    if (code(() => accessSync(stateDir, constants.X_OK)) !== undefined) throw denied(stateDir);
    const fileStat = code(() => statSync(file));
    if (fileStat === undefined) {
      if (code(() => accessSync(file, constants.R_OK | constants.W_OK)) !== undefined) throw denied(file);
      if (code(() => accessSync(stateDir, constants.W_OK)) !== undefined) throw denied(stateDir);
    } else if (create && code(() => accessSync(stateDir, constants.W_OK)) !== undefined) {
      throw denied(stateDir);
    }
  }
}

function openDb(stateDir: string, create: boolean, cacheKiB = 0): AuthDb {
  checkAccess(stateDir, create);
  try {
    return AuthDb.open(stateDir, { create, synchronous: 'FULL', ...(cacheKiB ? { cacheKiB } : {}) });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'EACCES' || e.code === 'EPERM') throw denied(e.path ?? stateDir);
    if (e.code === 'SQLITE_CANTOPEN') throw new CliError(`cannot open ${AuthDb.fileIn(stateDir)}: ${e.message} (check --state-dir and its permissions)`);
    throw new CliError(e.message);
  }
}

// Output through util's print/printJson (safeText, safeJson: a value from the database or a file
// never reaches the terminal with a control character raw); JSON one object a line.
const iso = (ms: number | undefined): string => (ms === undefined ? '' : new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z'));

function deviceJson(d: DeviceRow, locatorId?: string): Record<string, unknown> {
  return {
    deviceId: d.deviceId,
    publicKey: d.publicKey.toString('base64url'),
    ...(d.model !== undefined ? { model: d.model } : {}),
    ...(d.region !== undefined ? { region: d.region } : {}),
    revoked: d.revoked,
    ...(d.revokedAt !== undefined ? { revokedAt: iso(d.revokedAt) } : {}),
    enrolledAt: iso(d.enrolledAt),
    updatedAt: iso(d.updatedAt),
    ...(locatorId ? { locatorId } : {}),
  };
}

function serviceJson(s: ServiceRow): Record<string, unknown> {
  return { serviceId: s.serviceId, sealKey: s.sealKey.toString('base64url'), ...(s.addr ? { addr: s.addr } : {}), addedAt: iso(s.addedAt), updatedAt: iso(s.updatedAt) };
}

// ---- device new --------------------------------------------------------------------------------

interface DeviceNewArgs {
  out: string;
  id?: string;
  model?: string;
  region?: string;
}

const deviceNew: CommandModule<object, DeviceNewArgs> = {
  command: 'new',
  describe: 'make a device identity file (factory side) and print its enrollment record',
  builder: (y) =>
    y
      .option('out', { type: 'string', demandOption: true, describe: 'identity file to write (0600; never overwritten)' })
      .option('id', { type: 'string', describe: 'device ID (default: D + 16 random hex digits)' })
      .option('model', { type: 'string', describe: 'model, recorded in the enrollment record' })
      .option('region', { type: 'string', describe: 'region, recorded in the enrollment record' }) as Argv<DeviceNewArgs>,
  handler: handle('device new', (a) => {
    if (a.id !== undefined && !isDeviceId(a.id)) throw new UsageError(`--id ${JSON.stringify(a.id)} is not a device ID (1-64 of A-Z a-z 0-9 . _ : -)`);
    for (const [k, v] of [['model', a.model], ['region', a.region]] as const) {
      // eslint-disable-next-line no-control-regex
      if (v !== undefined && (v.length === 0 || v.length > 64 || /[\u0000-\u001f\u007f]/.test(v))) throw new UsageError(`--${k} must be 1-64 printable characters`);
    }
    const key = newDeviceKey(a.id);
    if (key.kind !== 'device') throw new Error('unreachable');
    let fd: number;
    try {
      fd = openSync(a.out, 'wx', 0o600);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new CliError(code === 'EEXIST' ? `${a.out} exists: refusing to overwrite a device identity` : `cannot create ${a.out}: ${code ?? (err as Error).message}`);
    }
    try {
      fchmodSync(fd, 0o600); // exactly 0600, whatever the umask left
      writeSync(fd, keyFileToJson(key));
      fsyncSync(fd);
    } catch (err) {
      closeSync(fd);
      unlinkSync(a.out);
      throw new CliError(`cannot write ${a.out}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    closeSync(fd);
    printJson({
      deviceId: key.deviceId,
      publicKey: key.sign.public.toString('base64url'),
      ...(a.model !== undefined ? { model: a.model } : {}),
      ...(a.region !== undefined ? { region: a.region } : {}),
    }, true);
  }),
};

const device: CommandModule = {
  command: 'device <command>',
  describe: 'device identities (device new)',
  builder: (y) => y.command(deviceNew as CommandModule).demandCommand(1, 'name a device command: new'),
  handler: () => undefined,
};

// ---- enroll ------------------------------------------------------------------------------------

interface EnrollArgs {
  file: string;
  'state-dir': string;
  replace: boolean;
  progress?: boolean;
  format: 'auto' | 'jsonl' | 'csv';
  'dry-run': boolean;
  json: boolean;
}

/** A progress bar on stderr: redrawn in place on a terminal, one line per update otherwise. */
function progressBar(tty: boolean): { update: (p: EnrollProgress) => void; done: () => void } {
  const started = Date.now();
  let drawn = false;
  return {
    update(p) {
      const frac = p.totalBytes > 0 ? Math.min(1, p.bytes / p.totalBytes) : 1;
      const width = 30;
      const fill = Math.round(frac * width);
      const s = Math.max(0.001, (Date.now() - started) / 1000);
      const text = `enroll [${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${(frac * 100).toFixed(0).padStart(3)}% ${p.records} records ${Math.round(p.records / s)}/s`;
      cliIo.err(tty ? `\r${text}\x1b[K` : `${text}\n`);
      drawn = true;
    },
    done() {
      if (drawn && tty) cliIo.err('\n');
    },
  };
}

const enroll: CommandModule<object, EnrollArgs> = {
  command: 'enroll <file>',
  describe: "import the maker's device list (JSON Lines or CSV) into the terminal database, all or nothing",
  builder: (y) =>
    withStateDir(y)
      .positional('file', { type: 'string', demandOption: true, describe: 'JSON Lines ({"deviceId","publicKey","model","region"}) or CSV with a header line' })
      .option('replace', { type: 'boolean', default: false, describe: 'a different key for an enrolled device replaces it (otherwise an error)' })
      .option('progress', { type: 'boolean', describe: 'progress bar on stderr (default: when stderr is a terminal and the file is over 1 MiB)' })
      .option('format', { choices: ['auto', 'jsonl', 'csv'] as const, default: 'auto' as const, describe: 'input format (auto: by extension, else by the first line)' })
      .option('dry-run', { type: 'boolean', default: false, describe: 'check every line and count, change nothing' })
      .option('json', { type: 'boolean', default: false, describe: 'print the summary as JSON' }) as unknown as Argv<EnrollArgs>,
  handler: handle('enroll', (a) => {
    let size: number;
    try {
      const st = statSync(a.file);
      if (!st.isFile()) throw new CliError(`${a.file} is not a regular file`);
      size = st.size;
    } catch (err) {
      if (err instanceof CliError) throw err;
      throw new CliError(`cannot read ${a.file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    const tty = cliIo.errIsTTY();
    const showProgress = a.progress ?? (tty && size > 1 << 20);
    const bar = showProgress ? progressBar(tty) : undefined;
    // 64 MiB of page cache: random-order inserts into a large table otherwise spill and re-read.
    const db = a['dry-run'] && !existsSync(AuthDb.fileIn(a['state-dir'])) ? AuthDb.memory() : openDb(a['state-dir'], !a['dry-run'], 65536);
    let res;
    try {
      res = enrollFile(db, a.file, {
        replace: a.replace,
        format: a.format,
        dryRun: a['dry-run'],
        // The reason may quote the file (a JSON parse error does): no control character raw.
        onError: (line, reason) => cliIo.err(`${escapeControls(a.file)}:${line}: ${escapeControls(reason)}\n`),
        ...(bar ? { onProgress: bar.update } : {}),
      });
    } finally {
      bar?.done();
      db.close();
    }
    if (a.json) {
      printJson(res, true);
    } else if (res.ok) {
      const verb = res.dryRun ? 'would import' : 'imported';
      print(`${verb} ${a.file}: ${res.records} records: ${res.added} added, ${res.unchanged} unchanged, ${res.updated} updated, ${res.replaced} replaced`);
    }
    if (!res.ok) {
      throw new CliError(`${res.errors} bad line${res.errors === 1 ? '' : 's'} in ${a.file}: ${res.dryRun ? 'it would not be imported' : 'nothing imported'}`);
    }
  }),
};

// ---- revoke / unrevoke -------------------------------------------------------------------------

interface RevokeArgs {
  device: string[];
  'state-dir': string;
}

function revokeCommand(revoke: boolean): CommandModule<object, RevokeArgs> {
  const name = revoke ? 'revoke' : 'unrevoke';
  return {
    command: `${name} <device..>`,
    describe: revoke ? 'revoke devices: authd refuses them (REVOKED) from their next request on' : 'lift a revocation',
    builder: (y) => withStateDir(y).positional('device', { type: 'string', array: true, demandOption: true, describe: 'device IDs' }) as unknown as Argv<RevokeArgs>,
    handler: handle(name, (a) => {
      const db = openDb(a['state-dir'], false);
      const unknown: string[] = [];
      try {
        for (const id of a.device) {
          const r = db.setRevoked(String(id), revoke);
          if (r === 'unknown') unknown.push(String(id));
          else print(`${id}: ${r === 'changed' ? (revoke ? 'revoked' : 'no longer revoked') : revoke ? 'already revoked' : 'was not revoked'}`);
        }
      } finally {
        db.close();
      }
      if (unknown.length) throw new CliError(`unknown device${unknown.length > 1 ? 's' : ''}: ${unknown.join(', ')}`);
    }),
  };
}

// ---- devices -----------------------------------------------------------------------------------

interface DevicesArgs {
  'state-dir': string;
  json: boolean;
}
interface DevicesListArgs extends DevicesArgs {
  limit: number;
  after?: string;
  revoked: boolean;
}
interface DevicesShowArgs extends DevicesArgs {
  device: string;
}

const jsonOption = <T>(y: Argv<T>) => y.option('json', { type: 'boolean', default: false, describe: 'JSON output' });

function locatorIds(stateDir: string): LocatorIds | undefined {
  try {
    return LocatorIds.load(stateDir, false).ids;
  } catch {
    return undefined;
  }
}

const devicesList: CommandModule<object, DevicesListArgs> = {
  command: 'list',
  describe: 'list devices in device-ID order',
  builder: (y) =>
    jsonOption(withStateDir(y))
      .option('limit', { type: 'number', default: 100, describe: 'at most this many (0 = all)' })
      .option('after', { type: 'string', describe: 'start after this device ID (paging)' })
      .option('revoked', { type: 'boolean', default: false, describe: 'revoked devices only' }) as unknown as Argv<DevicesListArgs>,
  handler: handle('devices list', (a) => {
    if (!Number.isInteger(a.limit) || a.limit < 0) throw new UsageError('--limit must be a whole number >= 0');
    const db = openDb(a['state-dir'], false);
    try {
      const rows = db.listDevices({ limit: a.limit, revokedOnly: a.revoked, ...(a.after !== undefined ? { after: a.after } : {}) });
      if (a.json) {
        for (const d of rows) printJson(deviceJson(d), true);
        return;
      }
      const lines = [['DEVICE', 'PUBLIC KEY', 'MODEL', 'REGION', 'STATUS', 'ENROLLED']];
      for (const d of rows) lines.push([d.deviceId, d.publicKey.toString('base64url'), d.model ?? '-', d.region ?? '-', d.revoked ? 'revoked' : 'ok', iso(d.enrolledAt)]);
      print(table(lines));
    } finally {
      db.close();
    }
  }),
};

const devicesShow: CommandModule<object, DevicesShowArgs> = {
  command: 'show <device>',
  describe: 'one device in full, with its locator ID when the locator secret is readable',
  builder: (y) => jsonOption(withStateDir(y)).positional('device', { type: 'string', demandOption: true, describe: 'device ID' }) as unknown as Argv<DevicesShowArgs>,
  handler: handle('devices show', (a) => {
    const db = openDb(a['state-dir'], false);
    try {
      const d = db.getDevice(String(a.device));
      if (!d) throw new CliError(`unknown device ${a.device}`);
      const loc = locatorIds(a['state-dir'])?.of(d.deviceId).toString('hex');
      const j = deviceJson(d, loc);
      if (a.json) printJson(j, true);
      else print(Object.entries(j).map(([k, v]) => `${`${k}:`.padEnd(12)} ${String(v)}`).join('\n'));
    } finally {
      db.close();
    }
  }),
};

const devices: CommandModule<object, DevicesArgs> = {
  command: 'devices',
  describe: 'count enrolled devices (devices list, devices show DEVICE for more)',
  builder: (y) => jsonOption(withStateDir(y)).command(devicesList as CommandModule).command(devicesShow as CommandModule) as unknown as Argv<DevicesArgs>,
  handler: handle('devices', (a) => {
    const db = openDb(a['state-dir'], false);
    try {
      const c = db.countDevices();
      const last = db.lastEnrollment();
      if (a.json) printJson({ ...c, ...(last ? { lastEnrollment: { at: iso(last.at), file: last.file, sha256: last.sha256, records: last.records } } : {}) }, true);
      else print(`${c.devices} device${c.devices === 1 ? '' : 's'} (${c.revoked} revoked)`);
    } finally {
      db.close();
    }
  }),
};

// ---- service -----------------------------------------------------------------------------------

interface ServiceAddArgs {
  'state-dir': string;
  id?: string;
  key: string;
  addr?: string;
  replace: boolean;
}

/** --key: a file name, or the public-key JSON itself (devloc keygen --public prints it). */
function readServiceKey(arg: string): { service: string; seal: Buffer; private: boolean } {
  let text = arg;
  if (!arg.trim().startsWith('{')) {
    try {
      text = readFileSync(arg, 'utf8');
    } catch (err) {
      throw new CliError(`cannot read --key ${arg}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  }
  const p = parsePublicKeyFile(text);
  if (!p.ok) throw new CliError(`--key: ${p.error}`);
  if (p.value.kind !== 'service-public') throw new CliError(`--key: a ${p.value.kind.replace('-public', '')} key, not a service key (devloc keygen service --id ID)`);
  let isPrivate = false;
  try {
    isPrivate = (JSON.parse(text) as { kind?: string }).kind === 'service';
  } catch {
    // parsed above
  }
  return { service: p.value.service, seal: p.value.seal, private: isPrivate };
}

const serviceAdd: CommandModule<object, ServiceAddArgs> = {
  command: 'add',
  describe: 'register a service authd issues tickets for',
  builder: (y) =>
    withStateDir(y)
      .option('id', { type: 'string', describe: 'service ID, the ticket audience (default: the one in the key)' })
      .option('key', { type: 'string', demandOption: true, describe: "the service's key: file or inline JSON (public half suffices)" })
      .option('addr', { type: 'string', describe: 'address terminals reach it at, IP:PORT or [IPv6]:PORT (sent in grants)' })
      .option('replace', { type: 'boolean', default: false, describe: 'replace the key or address of a registered service' }) as unknown as Argv<ServiceAddArgs>,
  handler: handle('service add', (a) => {
    const k = readServiceKey(a.key);
    const id = a.id ?? k.service;
    if (!isServiceId(id)) throw new UsageError(`--id ${JSON.stringify(id)} is not a service ID (lowercase letters, digits, '.', '-')`);
    if (k.service !== id) throw new UsageError(`--key is for service ${k.service}, not ${id}`);
    let addr: string | undefined;
    if (a.addr !== undefined) {
      const p = parseAddress(a.addr);
      if (!p) throw new UsageError(`--addr ${JSON.stringify(a.addr)} is not IP:PORT or [IPv6]:PORT`);
      addr = p.ip.includes(':') ? `[${p.ip}]:${p.port}` : `${p.ip}:${p.port}`;
    }
    if (k.private) cliIo.err(`devloc service add: note: ${escapeControls(a.key)} holds the service's secret key; authd stores only the public half (give it devloc keygen --public output)\n`);
    const db = openDb(a['state-dir'], true);
    try {
      const r = db.putService({ serviceId: id, sealKey: k.seal, ...(addr ? { addr } : {}) }, a.replace);
      if (r === 'conflict') throw new CliError(`service ${id} is registered with another key or address (--replace replaces it)`);
      print(`service ${id}: ${r}`);
    } finally {
      db.close();
    }
  }),
};

/** `<kind> list`: the rows as a table, or one JSON object per line with --json. */
function listCommand<R>(kind: string, rows: (db: AuthDb) => R[], json: (r: R) => Record<string, unknown>, header: string[], cells: (r: R) => string[]): CommandModule<object, DevicesArgs> {
  return {
    command: 'list',
    describe: `list registered ${kind}s`,
    builder: (y) => jsonOption(withStateDir(y)) as unknown as Argv<DevicesArgs>,
    handler: handle(`${kind} list`, (a) => {
      const db = openDb(a['state-dir'], false);
      try {
        const all = rows(db);
        if (a.json) {
          for (const r of all) printJson(json(r), true);
          return;
        }
        print(table([header, ...all.map(cells)]));
      } finally {
        db.close();
      }
    }),
  };
}

/** `<kind> rm <name>`: one row removed, or an error naming what is not there. */
function rmCommand(kind: string, name: string, describe: string, remove: (db: AuthDb, id: string) => boolean): CommandModule<object, Record<string, unknown>> {
  return {
    command: `rm <${name}>`,
    describe,
    builder: (y) => withStateDir(y).positional(name, { type: 'string', demandOption: true, describe: `${kind} ${name === 'id' ? 'ID' : name}` }) as unknown as Argv<Record<string, unknown>>,
    handler: handle(`${kind} rm`, (a) => {
      const db = openDb(String(a['state-dir']), false);
      const id = String(a[name]);
      try {
        if (!remove(db, id)) throw new CliError(`no ${kind} ${id}`);
        print(`${kind} ${id}: removed`);
      } finally {
        db.close();
      }
    }),
  };
}

const serviceList = listCommand('service', (db) => db.listServices(), serviceJson, ['SERVICE', 'KEY (X25519)', 'ADDRESS', 'UPDATED'], (s) => [s.serviceId, s.sealKey.toString('base64url'), s.addr ?? '-', iso(s.updatedAt)]);

const serviceRm = rmCommand('service', 'id', 'unregister a service: no more tickets for it (tickets issued stay valid until they expire)', (db, id) => db.removeService(id));

const service: CommandModule = {
  command: 'service <command>',
  describe: 'the services authd issues tickets for (service add|list|rm)',
  builder: (y) =>
    y
      .command(serviceAdd as CommandModule)
      .command(serviceList as CommandModule)
      .command(serviceRm as CommandModule)
      .demandCommand(1, 'name a service command: add, list, rm'),
  handler: () => undefined,
};

// ---- relays ------------------------------------------------------------------------------

interface RelayAddArgs {
  'state-dir': string;
  name: string;
  udp?: string;
  tcp?: string;
  tls?: string;
  'tls-name'?: string;
  'secret-file': string;
  replace: boolean;
}

function relayAddr(flag: string, value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const p = parseAddress(value);
  if (!p) throw new UsageError(`--${flag} ${JSON.stringify(value)} is not IP:PORT or [IPv6]:PORT (a literal IP: terminals get it in their grant)`);
  return p.ip.includes(':') ? `[${p.ip}]:${p.port}` : `${p.ip}:${p.port}`;
}

const relayAdd: CommandModule<object, RelayAddArgs> = {
  command: 'add <name>',
  describe: 'register a TURN relay (coturn) whose credentials authd puts into grants',
  builder: (y) =>
    withStateDir(y)
      .positional('name', { type: 'string', demandOption: true, describe: 'relay name (as services: lowercase letters, digits, ".", "-")' })
      .option('udp', { type: 'string', describe: 'TURN over UDP at IP:PORT (coturn listening-port, 3478)' })
      .option('tcp', { type: 'string', describe: 'TURN over TCP at IP:PORT (for terminals whose UDP is blocked)' })
      .option('tls', { type: 'string', describe: 'TURN over TLS at IP:PORT (coturn tls-listening-port, 5349)' })
      .option('tls-name', { type: 'string', describe: "the name the relay's TLS certificate is issued for (default: the --tls IP)" })
      .option('secret-file', { type: 'string', demandOption: true, describe: "file holding coturn's static-auth-secret, one per line, the first used (mode 0400, readable by authd)" })
      .option('replace', { type: 'boolean', default: false, describe: 'replace the addresses or secret file of a registered relay' }) as unknown as Argv<RelayAddArgs>,
  handler: handle('relay add', (a) => {
    const name = String(a.name);
    if (!isServiceId(name) || name.length > 32) throw new UsageError(`relay name ${JSON.stringify(name)}: lowercase letters, digits, '.', '-', at most 32 characters`);
    const spec: RelaySpec = { relayId: name, secretFile: path.resolve(a['secret-file']) };
    for (const t of ['udp', 'tcp', 'tls'] as const) {
      const v = relayAddr(t, a[t]);
      if (v !== undefined) spec[t] = v;
    }
    if (!spec.udp && !spec.tcp && !spec.tls) throw new UsageError('give at least one of --udp, --tcp, --tls');
    if (a['tls-name'] !== undefined) {
      if (!spec.tls) throw new UsageError('--tls-name needs --tls');
      if (!/^[A-Za-z0-9.-]{1,253}$/.test(a['tls-name'])) throw new UsageError(`--tls-name ${JSON.stringify(a['tls-name'])} is not a host name`);
      spec.tlsName = a['tls-name'];
    }
    try {
      readRelaySecret(spec.secretFile);
    } catch (err) {
      const msg = (err as Error).message;
      // An admin registering a file owned by authd's user is fine: authd checks it as itself.
      if (/ is owned by uid /.test(msg)) cliIo.err(`devloc relay add: note: ${escapeControls(msg)}; authd checks it again as its own user\n`);
      else throw new UsageError(msg);
    }
    const db = openDb(a['state-dir'], true);
    try {
      const r = db.putRelay(spec, a.replace);
      if (r === 'conflict') throw new CliError(`relay ${name} is registered with other addresses or another secret file (--replace replaces them)`);
      print(`relay ${name}: ${r}`);
    } finally {
      db.close();
    }
  }),
};

const relayList = listCommand(
  'relay',
  (db) => db.listRelays(),
  (r) => ({ relay: r.relayId, udp: r.udp ?? null, tcp: r.tcp ?? null, tls: r.tls ?? null, tlsName: r.tlsName ?? null, secretFile: r.secretFile, updatedAt: iso(r.updatedAt) }),
  ['RELAY', 'UDP', 'TCP', 'TLS', 'SECRET FILE', 'UPDATED'],
  (r) => [r.relayId, r.udp ?? '-', r.tcp ?? '-', r.tls ? `${r.tls}${r.tlsName ? ` (${r.tlsName})` : ''}` : '-', escapeControls(r.secretFile), iso(r.updatedAt)],
);

const relayRm = rmCommand('relay', 'name', 'unregister a relay: no more credentials for it (those issued stay valid until they expire)', (db, id) => db.removeRelay(id));

const relay: CommandModule = {
  command: 'relay <command>',
  describe: 'the TURN relays authd issues credentials for (relay add|list|rm)',
  builder: (y) =>
    y
      .command(relayAdd as CommandModule)
      .command(relayList as CommandModule)
      .command(relayRm as CommandModule)
      .demandCommand(1, 'name a relay command: add, list, rm'),
  handler: () => undefined,
};

/** Every authd admin command, for src/cli/commands/index.ts. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const authdCommands: CommandModule<any, any>[] = [
  device,
  enroll as CommandModule,
  revokeCommand(true) as CommandModule,
  revokeCommand(false) as CommandModule,
  devices as CommandModule,
  service,
  relay,
];
