// devloc-authd: the authentication server (the patent's authentication server 100). It opens a
// sealed AUTH_REQUEST, checks the device against the terminal database and its signature, and
// answers with a sealed grant: the terminal's locator ID and one ticket per requested service.
//
// Checks, cheapest first, so that nothing costly is done for a request that will be refused:
//   (DatagramServer: size <= 1200, CBOR and schema, the shared budget of unproven datagrams)
//   1. exactly AUTH_REQUEST_SIZE bytes                          BAD_MESSAGE
//   2. cookie, unless load is at or below --cookie-threshold    COOKIE_REQUIRED
//      (default 0: always; 2 HMACs); then the source's bucket   RATE_LIMITED
//   3. global budget (--max-rate)                               TRY_LATER
//   4. authdKey names a loaded key                              BAD_PROOF
//   5. X25519 + open the seal; device lookup; Ed25519 proof     BAD_PROOF (unknown devices too:
//      they are checked against a decoy key, so the answer and the work are those of a bad proof)
//      (source's bucket here when no cookie was checked)        RATE_LIMITED
//   6. revoked (after the proof: only the device learns it)     REVOKED
//   7. the device's own budget (--device-rate)                  RATE_LIMITED
//   8. |timeMs - now| <= --clock-skew                           CLOCK_SKEW
//   9. (device ID, nonce) not seen within the skew window       REPLAY (TRY_LATER if the
//      device's own replay state overflowed: see replay.ts)
//  10. at least one requested audience is a registered service  NOT_FOUND
// then one Ed25519 signature per ticket. Unknown audiences among known ones are skipped (the
// grant names the audiences it covers); a request naming only unknown ones is refused with
// NOT_FOUND. An empty audience list is served with no tickets: the locator ID alone.
import type { KeyObject } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { Logger } from '../common/log.js';
import { Metrics } from '../common/metrics.js';
import type { HandlerResult, Refusal, RequestContext } from '../net/server.js';
import { bindUdp, DatagramServer } from '../net/server.js';
import { RateLimiter } from '../net/ratelimit.js';
import { formatAddress, parseAddress } from '../wire/addr.js';
import { openAuthRequest, sealAuthGrant } from '../wire/auth.js';
import type { AuthGrant, TicketGrant } from '../wire/catalog.js';
import { AUTH_REQUEST_SIZE, DEFAULT_CLOCK_SKEW_S, DEFAULT_PORTS, DEFAULT_TICKET_LIFETIME_S, SESSION_ID_BYTES } from '../wire/constants.js';
import { encodeDatagram } from '../wire/envelope.js';
import type { ErrorCode as ErrorCodeT } from '../wire/errors.js';
import { DevlocError, ErrorCode, errorName } from '../wire/errors.js';
import { generatePair, publicKeyObject } from '../wire/keys.js';
import { randomDraw } from '../wire/random-pool.js';
import { issueTicket } from '../wire/ticket.js';
import { CookieJar, LoadMeter } from './cookie.js';
import type { ServiceRow } from './db.js';
import { AuthDb } from './db.js';
import type { Gate, GateVerdict } from './gate.js';
import { DeviceGate } from './gate.js';
import type { KeyRing } from './keyring.js';
import { loadKeyRing } from './keyring.js';
import { LocatorIds } from './locator.js';
import { RelayIssuer } from './relays.js';
import { Revocations } from './revocations.js';

/** Largest sealed grant the AUTH_RESPONSE schema admits. */
const MAX_SEALED_GRANT = 1100;

export interface AuthPolicy {
  ticketLifetimeS: number;
  clockSkewS: number;
  /** Auth requests/s across all sources above which a cookie is required; 0 always, -1 never. */
  cookieThreshold: number;
  /** Authentications/s across all sources served at most (TRY_LATER beyond); 0 = no limit. */
  maxRate: number;
  /** Authentications per minute per device (and burst), after its proof; 0 = no limit. */
  deviceRatePerMin: number;
}

export const defaultPolicy: AuthPolicy = {
  ticketLifetimeS: DEFAULT_TICKET_LIFETIME_S,
  clockSkewS: DEFAULT_CLOCK_SKEW_S,
  // Always: no X25519 for a source that has not returned a cookie (issue 15). Terminals echo
  // it automatically; it costs one round trip per authentication.
  cookieThreshold: 0,
  maxRate: 0,
  deviceRatePerMin: 10,
};

export interface AuthServiceOptions {
  db: AuthDb;
  keys: KeyRing;
  locator: LocatorIds;
  logger: Logger;
  metrics: Metrics;
  policy?: Partial<AuthPolicy>;
  replayCacheMax?: number;
  /** The per-device checks (gate.ts); default a DeviceGate of this process. */
  gate?: Gate;
  /** The cookie secret's master, shared by the workers of one authd (cookie.ts). */
  cookieMaster?: Buffer;
  /** ms clock (tickets, skew, cookies, replay cache). */
  now?: () => number;
  random?: (n: number) => Buffer;
  /** TURN relay credentials put into grants (default: the relays registered in `db`). */
  relays?: RelayIssuer;
}

// Imported through JWK (publicKeyObject), not DER/SPKI: measured here, OpenSSL 3 decodes a DER
// SubjectPublicKeyInfo about ten times slower than node builds the same key from a JWK. Once per
// device while authd.db is unchanged (the row cache below), not once per request.
function ed25519PublicKey(raw: Buffer): KeyObject | null {
  try {
    return publicKeyObject('Ed25519', raw);
  } catch {
    return null;
  }
}

const hex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.length).toString('hex');

/** A device row as the hot path needs it: its key object (null: not a valid point) and flag. */
interface CachedDevice {
  key: KeyObject | null;
  revoked: boolean;
}

/** Cached for a device ID that is not enrolled. */
const UNKNOWN_DEVICE: CachedDevice = { key: null, revoked: false };

/** The AUTH_REQUEST handler and everything it needs; no socket (tests drive it directly too). */
export class AuthService {
  keys: KeyRing;
  policy: AuthPolicy;
  readonly db: AuthDb;
  readonly locator: LocatorIds;
  readonly cookies: CookieJar;
  readonly load: LoadMeter;
  /** Steps 7-9 (device budget, clock, replay): here, or the primary's with --workers. */
  readonly gate: Gate;
  private readonly localGate: DeviceGate | undefined;
  private globalLimiter: RateLimiter | undefined;
  /**
   * Device and service rows with the device's key object, valid while authd.db's change stamp
   * is the one they were read at: a revocation, an enrollment or a service change committed by
   * `devloc` takes effect at the next request, as without it. The stamp is read once per request
   * (~4 us, a prepared statement), when its device is looked up, and that one reading also
   * serves its service rows and its relay credentials (relays.ts).
   */
  private rowsStamp = Number.NaN;
  private readonly deviceRows = new LRUCache<string, CachedDevice>({ max: 100_000 });
  private readonly serviceRows = new Map<string, ServiceRow | null>();
  /** Checked in place of an unknown device's key: its proof fails as a wrong one does. */
  private readonly decoyKey = publicKeyObject('Ed25519', generatePair('ed25519').public);
  private readonly logger: Logger;
  private readonly metrics: Metrics;
  private readonly now: () => number;
  private readonly injectedClock: boolean;
  private readonly random: (n: number) => Buffer;
  readonly relays: RelayIssuer;

  constructor(o: AuthServiceOptions) {
    this.injectedClock = o.now !== undefined;
    this.db = o.db;
    this.keys = o.keys;
    this.locator = o.locator;
    this.logger = o.logger;
    this.metrics = o.metrics;
    this.now = o.now ?? Date.now;
    this.random = o.random ?? randomDraw;
    this.policy = { ...defaultPolicy, ...o.policy };
    this.cookies = new CookieJar({ now: this.now, ...(o.cookieMaster ? { master: o.cookieMaster } : {}) });
    this.load = new LoadMeter(this.now);
    this.localGate = o.gate ? undefined : new DeviceGate(this.policy, { ...(o.replayCacheMax ? { replayCacheMax: o.replayCacheMax } : {}), ...(this.injectedClock ? { now: this.now } : {}) });
    this.gate = o.gate ?? this.localGate!;
    this.setPolicy(this.policy);
    this.relays = o.relays ?? new RelayIssuer(o.db, o.logger, o.metrics);
    const m = this.metrics;
    m.counter('auth_ok_total', 'Authentications that were granted tickets');
    m.counter('auth_failed_total', 'Authentications refused, by error code');
    m.counter('signatures_total', 'Ed25519 signatures made (one per ticket)');
    m.counter('tickets_issued_total', 'Tickets issued, by audience');
    m.counter('relay_credentials_issued_total', 'TURN relay credentials put into grants');
    m.counter('identity_conflicts_total', 'Authentications of a device flipping back to the address it left minutes ago (a cloned identity)');
    m.counter('cookies_sent_total', 'COOKIE_REQUIRED answers sent');
    m.counter('auth_unknown_device_total', 'AUTH_REQUESTs of devices not enrolled (answered BAD_PROOF)');
    m.gauge('replay_cache_entries', 'Entries in the AUTH_REQUEST replay cache', () => this.gate.replayEntries);
    m.gauge('replay_cache_evicted_early', 'Unexpired replay-cache entries forced out by its bound', () => this.gate.replayEvictedEarly);
    m.gauge('auth_load_per_second', 'AUTH_REQUESTs per second over the last second, all sources', () => this.load.rate());
    m.gauge('authd_keys', 'authd keys loaded (the first one signs)', () => this.keys.keys.length);
  }

  setPolicy(p: AuthPolicy): void {
    this.policy = p;
    const clock = this.injectedClock ? { now: this.now } : {};
    this.globalLimiter = p.maxRate > 0 ? new RateLimiter({ ratePerS: p.maxRate, burst: Math.max(1, p.maxRate), maxSources: 1, ...clock }) : undefined;
    this.localGate?.setPolicy(p);
  }

  /** Read authd.db's change stamp; forget the cached rows when it moved since they were read. Throws as the database does. */
  private checkRows(): number {
    const stamp = this.db.changeStamp();
    if (stamp === this.rowsStamp) return stamp;
    this.deviceRows.clear();
    this.serviceRows.clear();
    this.rowsStamp = stamp;
    return stamp;
  }

  private deviceRow(deviceId: string): CachedDevice {
    let d = this.deviceRows.get(deviceId);
    if (d === undefined) {
      const row = this.db.deviceKey(deviceId);
      d = row ? { key: ed25519PublicKey(row.publicKey), revoked: row.revoked } : UNKNOWN_DEVICE;
      this.deviceRows.set(deviceId, d);
    }
    return d;
  }

  private serviceRow(serviceId: string): ServiceRow | undefined {
    let s = this.serviceRows.get(serviceId);
    if (s === undefined) {
      // Bounded by the registered services plus the misses of one request (at most 4 audiences).
      if (this.serviceRows.size >= 1024) this.serviceRows.clear();
      s = this.db.getService(serviceId) ?? null;
      this.serviceRows.set(serviceId, s);
    }
    return s ?? undefined;
  }

  cookieRequired(): boolean {
    const t = this.policy.cookieThreshold;
    return t === 0 || (t > 0 && this.load.rate() > t);
  }

  private refuse(code: ErrorCodeT, message: string, extra: Partial<Refusal> = {}): Refusal {
    this.metrics.inc('auth_failed_total', { code: errorName(code) });
    return { error: code, message, ...extra };
  }

  /** A refusal after the request was opened: also log which device it was (never on the wire). */
  private refuseDevice(code: ErrorCodeT, message: string, deviceId: string, from: string): Refusal {
    this.logger.refusal(`auth:${errorName(code)}`, { from, deviceId, code: errorName(code), reason: message });
    return this.refuse(code, message);
  }

  handle(ctx: RequestContext<'AUTH_REQUEST'>): HandlerResult | Promise<HandlerResult> {
    const { msg, raw, from } = ctx;
    this.load.hit();
    // 1. Exactly 1200 bytes: the padding is what keeps every answer smaller than the request.
    if (raw.length !== AUTH_REQUEST_SIZE) {
      return this.refuse(ErrorCode.BAD_MESSAGE, `AUTH_REQUEST must be exactly ${AUTH_REQUEST_SIZE} bytes, got ${raw.length}`);
    }
    const body = msg.body;
    // 2. Cookie: two HMACs, before any public-key operation.
    const cookieChecked = this.cookieRequired();
    if (cookieChecked && !(body.cookie && this.cookies.check(body.cookie, from))) {
      this.metrics.inc('cookies_sent_total');
      return this.refuse(ErrorCode.COOKIE_REQUIRED, body.cookie ? 'cookie invalid or expired: send a new request with this one' : 'send a new request with this cookie', {
        cookie: this.cookies.mint(from),
      });
    }
    // The source has proven it receives at its address: only now is its own bucket charged.
    if (cookieChecked && !ctx.chargeSource()) return this.rateLimited(ctx);
    // 3. Global budget.
    if (this.globalLimiter && !this.globalLimiter.take('*')) {
      return this.refuse(ErrorCode.TRY_LATER, 'authd is at its --max-rate', { retryAfterMs: Math.max(100, this.globalLimiter.retryAfterMs('*')) });
    }
    // 4. Which of our keys the request is sealed to.
    const key = this.keys.byKid.get(hex(body.authdKey));
    if (!key) return this.refuse(ErrorCode.BAD_PROOF, `no authd key with kid ${hex(body.authdKey)}`);
    // 5. Open, look the device up, verify its signature.
    let device: CachedDevice | undefined;
    let dbFailed = false;
    let stamp = Number.NaN;
    const opened = openAuthRequest(msg.rid, body, key.sealSecret, (deviceId) => {
      try {
        stamp = this.checkRows();
        device = this.deviceRow(deviceId);
        if (device === UNKNOWN_DEVICE) device = undefined;
      } catch (err) {
        dbFailed = true;
        this.logger.error('database read failed', { err: (err as Error).message });
        return { ok: false, code: ErrorCode.TRY_LATER, reason: 'terminal database unavailable' };
      }
      // Unknown: verified against the decoy key, so that it fails exactly as a wrong proof does
      // (same code, same text, same work): the answer tells no one which device IDs exist.
      if (!device) return { ok: true, key: this.decoyKey };
      const pk = device.key;
      // An enrolled key that is not a valid point can verify nothing: the same as a bad proof.
      if (!pk) return { ok: false, code: ErrorCode.BAD_PROOF, reason: 'enrolled device key is not a valid Ed25519 key' };
      return { ok: true, key: pk };
    });
    const fromText = formatAddress(from);
    if (!opened.ok) {
      if (dbFailed) return this.refuse(ErrorCode.TRY_LATER, opened.reason, { retryAfterMs: 1000 });
      if (opened.code === ErrorCode.BAD_PROOF && device === undefined && opened.reason === 'device signature does not verify') {
        // The log (never the wire) tells the operator what it was.
        this.metrics.inc('auth_unknown_device_total');
        this.logger.refusal('auth:UNKNOWN_DEVICE', { from: formatAddress(from), code: 'BAD_PROOF', reason: 'device not enrolled' });
      }
      return this.refuse(opened.code, opened.reason);
    }
    const inner = opened.inner;
    const deviceId = inner.deviceId;
    if (device === undefined) {
      // The decoy key verified: impossible without its secret, which no one holds.
      return this.refuse(ErrorCode.BAD_PROOF, 'device signature does not verify');
    }
    if (!cookieChecked && !ctx.chargeSource()) return this.rateLimited(ctx);
    // 6. Revocation, only now that the requester has proved it holds the device key.
    if (device!.revoked) return this.refuseDevice(ErrorCode.REVOKED, 'device revoked', deviceId, fromText);
    // 7-9. The device's budget, the clock, the replay cache (gate.ts; in the primary with --workers).
    const query = { deviceId, nonce: hex(inner.nonce), timeMs: inner.timeMs, rid: hex(msg.rid), from: fromText };
    const admitted = (v: GateVerdict): HandlerResult => {
      if (!v.ok) {
        this.logger.refusal(`auth:${errorName(v.code)}`, { from: fromText, deviceId, code: errorName(v.code), reason: v.logReason ?? v.message });
        return this.refuse(v.code, v.message, v.retryAfterMs !== undefined ? { retryAfterMs: v.retryAfterMs } : {});
      }
      if (v.conflict) {
        this.metrics.inc('identity_conflicts_total');
        if (v.conflict.log) this.logger.warn('device identity in use at two addresses', { deviceId, addrs: [v.conflict.other, fromText] });
      }
      // 10. Tickets.
      return this.issue(ctx, deviceId, inner.audiences, inner.cnf, inner.nonce, opened.keys, this.now(), fromText, stamp);
    };
    const verdict = this.gate.admit(query);
    return verdict instanceof Promise ? verdict.then(admitted) : admitted(verdict);
  }

  private rateLimited(ctx: RequestContext<'AUTH_REQUEST'>): Refusal {
    return this.refuse(ErrorCode.RATE_LIMITED, 'too many requests from this address', { retryAfterMs: Math.max(100, ctx.retryAfterMs()) });
  }

  private issue(
    ctx: RequestContext<'AUTH_REQUEST'>, deviceId: string, audiences: string[], cnf: Uint8Array, nonce: Uint8Array,
    sealKeys: Parameters<typeof sealAuthGrant>[0], nowMs: number, fromText: string, stamp: number,
  ): HandlerResult {
    const rid = ctx.msg.rid;
    const iat = Math.floor(nowMs / 1000);
    const exp = iat + this.policy.ticketLifetimeS;
    const signer = this.keys.signer;
    const locatorId = this.locator.of(deviceId);
    const grant: AuthGrant = { locatorId, tickets: [], nonce };
    const unknown: string[] = [];
    const dropped: string[] = [];
    let response: Buffer | undefined;
    const seal = (g: AuthGrant): Buffer | undefined => {
      const sealed = sealAuthGrant(sealKeys, rid, g);
      if (sealed.length > MAX_SEALED_GRANT) return undefined;
      const bytes = encodeDatagram('AUTH_RESPONSE', rid, { sealed });
      return bytes.length <= AUTH_REQUEST_SIZE ? bytes : undefined;
    };
    for (const aud of new Set(audiences)) {
      let svc;
      try {
        // The rows are as new as the stamp this request read (newer when another request read a
        // later one while the primary's gate answered): no second reading.
        svc = this.serviceRow(aud);
      } catch (err) {
        this.logger.error('database read failed', { err: (err as Error).message });
        return this.refuse(ErrorCode.TRY_LATER, 'terminal database unavailable', { retryAfterMs: 1000 });
      }
      if (!svc) {
        unknown.push(aud);
        continue;
      }
      if (dropped.length) {
        dropped.push(aud);
        continue;
      }
      const ticket = issueTicket({ locatorId, aud, iat, exp, cti: this.random(SESSION_ID_BYTES), cnf, addr: ctx.from }, signer.kidBytes, signer.signKey);
      this.metrics.inc('signatures_total');
      const tg: TicketGrant = { aud, ticket, serviceKey: svc.sealKey, exp };
      const addr = svc.addr ? parseAddress(svc.addr) : null;
      if (addr) tg.addr = addr;
      grant.tickets.push(tg);
      // Tickets are ~250 B: four with long service IDs may not fit one reply. The grant then
      // carries the first ones; the terminal asks again for the rest.
      const attempt = seal(grant);
      if (!attempt) {
        grant.tickets.pop();
        dropped.push(aud);
        continue;
      }
      response = attempt;
      this.metrics.inc('tickets_issued_total', { aud });
    }
    if (audiences.length > 0 && grant.tickets.length === 0 && dropped.length === 0) {
      return this.refuseDevice(ErrorCode.NOT_FOUND, `no requested audience is a registered service (${unknown.join(', ').slice(0, 80)})`, deviceId, fromText);
    }
    // Relay credentials expire with the tickets. They go last: a grant too full for them still
    // carries its tickets (the terminal then has no relay, and the log says why).
    const relays = this.relays.grantsFor(locatorId.toString('hex'), exp, stamp);
    if (relays.length > 0) {
      grant.relays = relays;
      while (grant.relays.length > 0) {
        const attempt = seal(grant);
        if (attempt) {
          response = attempt;
          this.metrics.inc('relay_credentials_issued_total', {}, grant.relays.length);
          break;
        }
        grant.relays.pop();
      }
      if (grant.relays.length === 0) {
        delete grant.relays;
        this.logger.warn('relay credentials do not fit the grant', { deviceId, audiences: grant.tickets.map((t) => t.aud) });
      }
    }
    response ??= seal(grant);
    if (!response) throw new DevlocError(ErrorCode.INTERNAL, 'grant does not fit a datagram');
    this.metrics.inc('auth_ok_total');
    if (this.logger.level === 'debug') this.logger.debug('authenticated', {
      from: fromText, deviceId, locatorId: locatorId.toString('hex'), kid: signer.kid,
      audiences: grant.tickets.map((t) => t.aud), ...(unknown.length ? { unknownAudiences: unknown } : {}), ...(dropped.length ? { notFitting: dropped } : {}),
    });
    return response;
  }
}

// ---- the daemon in a box ---------------------------------------------------------------------

export interface AuthdOptions {
  /** Listen address (literal IP). Default 0.0.0.0. */
  host?: string;
  /** UDP port; 0 = ephemeral. Default 4700. */
  port?: number;
  /** authd key files; the first signs. */
  keyFiles: string[];
  stateDir: string;
  ticketLifetimeS?: number;
  clockSkewS?: number;
  /** Per-source requests/s (0 = unlimited) and burst. */
  ratePerS?: number;
  burst?: number;
  cookieThreshold?: number;
  maxRate?: number;
  deviceRatePerMin?: number;
  receiveBufferBytes?: number;
  replayCacheMax?: number;
  /** How often authd.db is checked for new revocations, ms (default 500). */
  revocationPollMs?: number;
  /** Push REVOKEs to the services (default true; with --workers only worker 0 does). */
  pushRevocations?: boolean;
  /** A REVOKE_ACK arrived here (with --workers: passed on to the worker that pushed). */
  onRevokeAck?: (rid: Uint8Array) => void;
  /** The per-device checks (gate.ts); default this process's own. */
  gate?: Gate;
  /** Shared cookie master (--workers: cookie.ts). */
  cookieMaster?: Buffer;
  logger?: Logger;
  metrics?: Metrics;
  /** ms clock, for tests. */
  now?: () => number;
}

export type ReloadOptions = Partial<Pick<AuthdOptions, 'keyFiles' | 'ticketLifetimeS' | 'clockSkewS' | 'ratePerS' | 'burst' | 'cookieThreshold' | 'maxRate' | 'deviceRatePerMin'>>;

export interface Authd {
  host: string;
  port: number;
  service: AuthService;
  server: DatagramServer;
  db: AuthDb;
  logger: Logger;
  metrics: Metrics;
  /** REVOKE pushes to the services (revocations.ts). */
  revocations: Revocations;
  /** Re-read the key files (and apply new limits). Keeps the old keys when a file is bad. */
  reload(o?: ReloadOptions): void;
  stop(): Promise<void>;
}

export const defaultRate = { ratePerS: 20, burst: 40 };

/** Start an authd: open the database and keys, bind, log "listening". */
export async function startAuthd(o: AuthdOptions): Promise<Authd> {
  const logger = o.logger ?? new Logger({ service: 'authd' });
  const metrics = o.metrics ?? new Metrics();
  const now = o.now ?? Date.now;
  let keyFiles = [...o.keyFiles];
  const keys = loadKeyRing(keyFiles);
  for (const w of keys.warnings) logger.warn(w);
  const db = AuthDb.open(o.stateDir, { create: true });
  let locator: LocatorIds;
  try {
    const l = LocatorIds.load(o.stateDir, true);
    if (l.created) logger.info('created locator secret', { file: LocatorIds.fileIn(o.stateDir) });
    locator = l.ids;
  } catch (err) {
    db.close();
    throw err;
  }
  const policy: AuthPolicy = {
    ticketLifetimeS: o.ticketLifetimeS ?? defaultPolicy.ticketLifetimeS,
    clockSkewS: o.clockSkewS ?? defaultPolicy.clockSkewS,
    cookieThreshold: o.cookieThreshold ?? defaultPolicy.cookieThreshold,
    maxRate: o.maxRate ?? defaultPolicy.maxRate,
    deviceRatePerMin: o.deviceRatePerMin ?? defaultPolicy.deviceRatePerMin,
  };
  const service = new AuthService({
    db, keys, locator, logger, metrics, policy, now, ...(o.replayCacheMax ? { replayCacheMax: o.replayCacheMax } : {}),
    ...(o.gate ? { gate: o.gate } : {}), ...(o.cookieMaster ? { cookieMaster: o.cookieMaster } : {}),
  });
  service.relays.reload(); // logs the relays going into grants, and any whose secret is unusable
  let rate = { ratePerS: o.ratePerS ?? defaultRate.ratePerS, burst: o.burst ?? defaultRate.burst };
  // The limiters keep their own monotonic clock unless a test injects one.
  const limiter = new RateLimiter({ ...rate, ...(o.now ? { now: o.now } : {}) });
  // Counting devices scans the whole table (~0.1 s per million): done again only when the
  // database changed (another connection committed: PRAGMA data_version), at most once a minute.
  let counted = { at: -Infinity, n: 0, version: -1 };
  metrics.gauge('authd_db_bytes', 'Size of authd.db and its write-ahead log, bytes', () => (db.open ? db.sizeBytes() : 0));
  metrics.gauge('authd_devices', 'Enrolled devices (refreshed at most once a minute)', () => {
    if (db.open && Date.now() - counted.at > 60_000) {
      try {
        const version = db.dataVersion();
        if (version !== counted.version) counted = { at: Date.now(), n: db.countDevices().devices, version };
      } catch {
        // keep the last figure
      }
    }
    return counted.n;
  });
  const host = o.host ?? '0.0.0.0';
  let socket;
  try {
    socket = await bindUdp({ host, port: o.port ?? DEFAULT_PORTS.authd, ...(o.receiveBufferBytes ? { receiveBufferBytes: o.receiveBufferBytes } : {}) });
  } catch (err) {
    db.close();
    throw err;
  }
  // Revocations reach the services at once (issue 19): pushed from this socket.
  const revocations = new Revocations({
    db, locator, keys: () => service.keys, ticketLifetimeS: () => service.policy.ticketLifetimeS,
    send: (bytes, to) => server.send(bytes, to), logger, metrics, now, ...(o.revocationPollMs ? { pollMs: o.revocationPollMs } : {}),
  });
  const server: DatagramServer = new DatagramServer({
    service: 'authd', socket, logger, metrics, rateLimiter: limiter,
    handlers: {
      AUTH_REQUEST: (ctx) => service.handle(ctx),
      REVOKE_ACK: (ctx) => {
        revocations.ack(ctx.msg.rid);
        o.onRevokeAck?.(ctx.msg.rid);
        return null; // an answer to our push: nothing answers it
      },
    },
  });
  const port = socket.address().port;
  logger.info('listening', {
    port, host, kids: keys.kids, signingKid: keys.signer.kid, stateDir: o.stateDir, db: db.path,
    ticketLifetimeS: policy.ticketLifetimeS, clockSkewS: policy.clockSkewS, cookieThreshold: policy.cookieThreshold,
  });
  if (o.pushRevocations ?? true) revocations.start();
  let stopped = false;
  return {
    host, port, service, server, db, logger, metrics, revocations,
    reload(r: ReloadOptions = {}) {
      if (r.keyFiles) keyFiles = [...r.keyFiles];
      const fresh = loadKeyRing(keyFiles); // throws: the old keys stay in use
      for (const w of fresh.warnings) logger.warn(w);
      service.keys = fresh;
      service.setPolicy({
        ticketLifetimeS: r.ticketLifetimeS ?? service.policy.ticketLifetimeS,
        clockSkewS: r.clockSkewS ?? service.policy.clockSkewS,
        cookieThreshold: r.cookieThreshold ?? service.policy.cookieThreshold,
        maxRate: r.maxRate ?? service.policy.maxRate,
        deviceRatePerMin: r.deviceRatePerMin ?? service.policy.deviceRatePerMin,
      });
      rate = { ratePerS: r.ratePerS ?? rate.ratePerS, burst: r.burst ?? rate.burst };
      limiter.setRate(rate.ratePerS, rate.burst);
      counted = { ...counted, at: -Infinity };
      service.relays.reload();
      logger.info('keys loaded', { kids: fresh.kids, signingKid: fresh.signer.kid });
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      revocations.stop();
      await server.close();
      db.close();
    },
  };
}
