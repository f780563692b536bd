// devloc-authd: the authentication server (the patent's authentication server 100). It opens a
// sealed AUTH_REQUEST, checks the device against the terminal database and its signature, and
// answers with a sealed grant: the terminal's locator ID and one ticket per requested service.
//
// Checks, cheapest first, so that nothing costly is done for a request that will be refused:
//   (DatagramServer: size <= 1200, per-source rate limit, CBOR and schema)
//   1. exactly AUTH_REQUEST_SIZE bytes                          BAD_MESSAGE
//   2. cookie, when load is above --cookie-threshold (2 HMACs)  COOKIE_REQUIRED
//   3. global budget (--max-rate)                               TRY_LATER
//   4. authdKey names a loaded key                              BAD_PROOF
//   5. X25519 + open the seal; device lookup; Ed25519 proof     BAD_PROOF, UNKNOWN_DEVICE
//   6. revoked (after the proof: only the device learns it)     REVOKED
//   7. |timeMs - now| <= --clock-skew                           CLOCK_SKEW
//   8. (device ID, nonce) not seen within the skew window       REPLAY (TRY_LATER if saturated)
//   9. at least one requested audience is a registered service  NOT_FOUND
// then one Ed25519 signature per ticket. Unknown audiences among known ones are skipped (the
// grant names the audiences it covers); a request naming only unknown ones is refused with
// NOT_FOUND. An empty audience list is served with no tickets: the locator ID alone.
import type { KeyObject } from 'node:crypto';
import { randomBytes } from 'node:crypto';
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
import { publicKeyObject } from '../wire/keys.js';
import { issueTicket } from '../wire/ticket.js';
import { CookieJar, LoadMeter } from './cookie.js';
import { AuthDb } from './db.js';
import type { KeyRing } from './keyring.js';
import { loadKeyRing } from './keyring.js';
import { LocatorIds } from './locator.js';
import { ReplayCache } from './replay.js';
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
}

export const defaultPolicy: AuthPolicy = {
  ticketLifetimeS: DEFAULT_TICKET_LIFETIME_S,
  clockSkewS: DEFAULT_CLOCK_SKEW_S,
  cookieThreshold: 1000,
  maxRate: 0,
};

export interface AuthServiceOptions {
  db: AuthDb;
  keys: KeyRing;
  locator: LocatorIds;
  logger: Logger;
  metrics: Metrics;
  policy?: Partial<AuthPolicy>;
  replayCacheMax?: number;
  /** ms clock (tickets, skew, cookies, replay cache). */
  now?: () => number;
  random?: (n: number) => Buffer;
}

// Imported through JWK (publicKeyObject), not DER/SPKI: measured here, OpenSSL 3 decodes a DER
// SubjectPublicKeyInfo about ten times slower than node builds the same key from a JWK.
function ed25519PublicKey(raw: Buffer): KeyObject | null {
  try {
    return publicKeyObject('Ed25519', raw);
  } catch {
    return null;
  }
}

const hex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.length).toString('hex');

/** The AUTH_REQUEST handler and everything it needs; no socket (tests drive it directly too). */
export class AuthService {
  keys: KeyRing;
  policy: AuthPolicy;
  readonly db: AuthDb;
  readonly locator: LocatorIds;
  readonly cookies: CookieJar;
  readonly load: LoadMeter;
  readonly replay: ReplayCache;
  private globalLimiter: RateLimiter | undefined;
  private readonly logger: Logger;
  private readonly metrics: Metrics;
  private readonly now: () => number;
  private readonly injectedClock: boolean;
  private readonly random: (n: number) => Buffer;

  constructor(o: AuthServiceOptions) {
    this.injectedClock = o.now !== undefined;
    this.db = o.db;
    this.keys = o.keys;
    this.locator = o.locator;
    this.logger = o.logger;
    this.metrics = o.metrics;
    this.now = o.now ?? Date.now;
    this.random = o.random ?? randomBytes;
    this.policy = { ...defaultPolicy, ...o.policy };
    this.cookies = new CookieJar({ now: this.now });
    this.load = new LoadMeter(this.now);
    this.replay = new ReplayCache(o.replayCacheMax ?? 1_000_000, this.now);
    this.setPolicy(this.policy);
    const m = this.metrics;
    m.counter('auth_ok_total', 'Authentications that were granted tickets');
    m.counter('auth_failed_total', 'Authentications refused, by error code');
    m.counter('signatures_total', 'Ed25519 signatures made (one per ticket)');
    m.counter('tickets_issued_total', 'Tickets issued, by audience');
    m.counter('cookies_sent_total', 'COOKIE_REQUIRED answers sent');
    m.gauge('replay_cache_entries', 'Entries in the AUTH_REQUEST replay cache', () => this.replay.size);
    m.gauge('replay_cache_evicted_early', 'Unexpired replay-cache entries forced out by its bound', () => this.replay.evictedEarly);
    m.gauge('auth_load_per_second', 'AUTH_REQUESTs per second over the last second, all sources', () => this.load.rate());
    m.gauge('authd_keys', 'authd keys loaded (the first one signs)', () => this.keys.keys.length);
  }

  setPolicy(p: AuthPolicy): void {
    this.policy = p;
    this.globalLimiter = p.maxRate > 0 ? new RateLimiter({ ratePerS: p.maxRate, burst: Math.max(1, p.maxRate), maxSources: 1, ...(this.injectedClock ? { now: this.now } : {}) }) : undefined;
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

  handle(ctx: RequestContext<'AUTH_REQUEST'>): HandlerResult {
    const { msg, raw, from } = ctx;
    this.load.hit();
    // 1. Exactly 1200 bytes: the padding is what keeps every answer smaller than the request.
    if (raw.length !== AUTH_REQUEST_SIZE) {
      return this.refuse(ErrorCode.BAD_MESSAGE, `AUTH_REQUEST must be exactly ${AUTH_REQUEST_SIZE} bytes, got ${raw.length}`);
    }
    const body = msg.body;
    // 2. Cookie: two HMACs, before any public-key operation.
    if (this.cookieRequired() && !(body.cookie && this.cookies.check(body.cookie, from))) {
      this.metrics.inc('cookies_sent_total');
      return this.refuse(ErrorCode.COOKIE_REQUIRED, body.cookie ? 'cookie invalid or expired: send a new request with this one' : 'busy: send a new request with this cookie', {
        cookie: this.cookies.mint(from),
      });
    }
    // 3. Global budget.
    if (this.globalLimiter && !this.globalLimiter.take('*')) {
      return this.refuse(ErrorCode.TRY_LATER, 'authd is at its --max-rate', { retryAfterMs: Math.max(100, this.globalLimiter.retryAfterMs('*')) });
    }
    // 4. Which of our keys the request is sealed to.
    const key = this.keys.byKid.get(hex(body.authdKey));
    if (!key) return this.refuse(ErrorCode.BAD_PROOF, `no authd key with kid ${hex(body.authdKey)}`);
    // 5. Open, look the device up, verify its signature.
    let device: { publicKey: Buffer; revoked: boolean } | undefined;
    let dbFailed = false;
    const opened = openAuthRequest(msg.rid, body, key.sealSecret, (deviceId) => {
      try {
        device = this.db.deviceKey(deviceId);
      } catch (err) {
        dbFailed = true;
        this.logger.error('database read failed', { err: (err as Error).message });
        return { ok: false, code: ErrorCode.TRY_LATER, reason: 'terminal database unavailable' };
      }
      if (!device) return { ok: false, code: ErrorCode.UNKNOWN_DEVICE, reason: 'device not enrolled' };
      const pk = ed25519PublicKey(device.publicKey);
      // An enrolled key that is not a valid point can verify nothing: the same as a bad proof.
      if (!pk) return { ok: false, code: ErrorCode.BAD_PROOF, reason: 'enrolled device key is not a valid Ed25519 key' };
      return { ok: true, key: pk };
    });
    const fromText = formatAddress(from);
    if (!opened.ok) {
      if (dbFailed) return this.refuse(ErrorCode.TRY_LATER, opened.reason, { retryAfterMs: 1000 });
      return this.refuse(opened.code, opened.reason);
    }
    const inner = opened.inner;
    const deviceId = inner.deviceId;
    // 6. Revocation, only now that the requester has proved it holds the device key.
    if (device!.revoked) return this.refuseDevice(ErrorCode.REVOKED, 'device revoked', deviceId, fromText);
    // 7. Clock.
    const now = this.now();
    const skewMs = this.policy.clockSkewS * 1000;
    const drift = inner.timeMs - now;
    if (Math.abs(drift) > skewMs) {
      return this.refuseDevice(ErrorCode.CLOCK_SKEW, `timeMs is ${Math.round(Math.abs(drift) / 1000)} s ${drift > 0 ? 'ahead of' : 'behind'} authd's clock (allowed ${this.policy.clockSkewS} s)`, deviceId, fromText);
    }
    // 8. Replay.
    const verdict = this.replay.check(deviceId, inner.nonce, inner.timeMs, inner.timeMs + skewMs + 1000);
    if (verdict === 'replay') return this.refuseDevice(ErrorCode.REPLAY, 'request already served', deviceId, fromText);
    if (verdict === 'saturated') return this.refuse(ErrorCode.TRY_LATER, 'replay cache saturated: send a new request', { retryAfterMs: 1000 });
    // 9. Tickets.
    return this.issue(ctx, deviceId, inner.audiences, inner.cnf, inner.nonce, opened.keys, now, fromText);
  }

  private issue(
    ctx: RequestContext<'AUTH_REQUEST'>, deviceId: string, audiences: string[], cnf: Uint8Array, nonce: Uint8Array,
    sealKeys: Parameters<typeof sealAuthGrant>[0], nowMs: number, fromText: string,
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
        svc = this.db.getService(aud);
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
      const ticket = issueTicket({ locatorId, aud, iat, exp, cti: this.random(SESSION_ID_BYTES), cnf }, signer.kidBytes, signer.signKey);
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
  receiveBufferBytes?: number;
  replayCacheMax?: number;
  /** How often authd.db is checked for new revocations, ms (default 500). */
  revocationPollMs?: number;
  logger?: Logger;
  metrics?: Metrics;
  /** ms clock, for tests. */
  now?: () => number;
}

export type ReloadOptions = Partial<Pick<AuthdOptions, 'keyFiles' | 'ticketLifetimeS' | 'clockSkewS' | 'ratePerS' | 'burst' | 'cookieThreshold' | 'maxRate'>>;

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
  };
  const service = new AuthService({ db, keys, locator, logger, metrics, policy, now, ...(o.replayCacheMax ? { replayCacheMax: o.replayCacheMax } : {}) });
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
        return null; // an answer to our push: nothing answers it
      },
    },
  });
  const port = socket.address().port;
  logger.info('listening', {
    port, host, kids: keys.kids, signingKid: keys.signer.kid, stateDir: o.stateDir, db: db.path,
    ticketLifetimeS: policy.ticketLifetimeS, clockSkewS: policy.clockSkewS, cookieThreshold: policy.cookieThreshold,
  });
  revocations.start();
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
      });
      rate = { ratePerS: r.ratePerS ?? rate.ratePerS, burst: r.burst ?? rate.burst };
      limiter.setRate(rate.ratePerS, rate.burst);
      counted = { ...counted, at: -Infinity };
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
