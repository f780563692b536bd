// The registration loop of the terminal (devloc-agent(8)): it authenticates to authd, gets a
// ticket and a locator ID, registers its address with locatord and keeps that registration true
// with no user involvement: at start, whenever its address changes, before its ticket expires,
// and after any server restart. The Agent facade (agent.ts) owns one and lends its socket,
// sessions and network mode to the queries, matching and peer channels.
//
// One UDP socket carries all locatord traffic, so the NAT binding that REGISTER created is the
// one REFRESH keeps alive, the one PROBE reaches and the one other terminals are told about.
//
// The work is one loop (`run`) that does one step at a time — authenticate, classify, register,
// refresh — and then sleeps until the next deadline or a kick (address change, NO_SESSION,
// stop). A kick during a step abandons the step (its late result is discarded by generation).
import type dgram from 'node:dgram';
import type { EventEmitter } from 'node:events';
import type { Address } from '../wire/addr.js';
import { formatAddress, sameAddress } from '../wire/addr.js';
import { buildAuthRequest, openAuthGrant } from '../wire/auth.js';
import type { Bodies, MessageName, PresenceRecord, RegistrationAck, RelayGrant, TicketGrant } from '../wire/catalog.js';
import { DEFAULT_PORTS, DEFAULT_SERVICE_IDS, NetMode, netModeNames } from '../wire/constants.js';
import type { Message, MessageOf } from '../wire/envelope.js';
import { DevlocError, ErrorCode } from '../wire/errors.js';
import { joinProof } from '../wire/groupcode.js';
import { generatePair, privateKeyObject } from '../wire/keys.js';
import { peekTicket } from '../wire/ticket-parse.js';
import type { Reply, RetransmitPolicy } from '../net/client.js';
import { ClientClosed, UdpClient } from '../net/client.js';
import { ClientSession } from '../net/clientsession.js';
import type { AgentLog, LogLevel } from './errors.js';
import { AgentError, NEEDS_TICKET, REFUSALS, ServerError, stoppedBeforeAnswer } from './errors.js';
import { formatId } from './ids.js';
import type { LocalAddress } from './interfaces.js';
import { addressSignature, localAddresses, reportableAddresses } from './interfaces.js';
import type { Classification } from './netmode.js';
import { classifyNetwork, combineClassifications, inconclusive, reclassifyDelay } from './netmode.js';
import type { CheckedOptions } from './options.js';
import type { AgentCounters, AgentEvents, AgentOptions, AgentState, AgentStatus, RegistrationInfo } from './types.js';
import { waitUnlessStopped } from './wait.js';

/** The step was abandoned because something more urgent happened (address change, stop). */
class Interrupted extends Error {}

/**
 * A step that failed without a server's ERROR answer (no answer, a local problem), with the
 * step's name: the names of `problem` events and status().lastError are those of ServerError
 * ("auth", "REGISTER", "REFRESH") and "classify", never the state the agent was in.
 */
class StepFailure extends Error {
  constructor(
    readonly step: string,
    err: Error,
  ) {
    super(err.message);
  }
}

/** Run one step, naming it in a failure that is not a server's answer (nor an interruption). */
async function named<T>(step: string, p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (err) {
    if (err instanceof ServerError || err instanceof Interrupted || err instanceof StepFailure || !(err instanceof Error)) throw err;
    throw new StepFailure(step, err);
  }
}

/** What locatord answers a REGISTER whose joinGroups it refuses (devloc-locatord(8), Groups). */
const JOIN_REFUSALS: readonly number[] = [ErrorCode.NOT_FOUND, ErrorCode.FORBIDDEN, ErrorCode.FULL, ErrorCode.BAD_MESSAGE];

/**
 * A service answering that our ticket for it is missing re-authenticates at most this often:
 * a terminal asking again and again for a service authd does not know must not flood authd.
 */
export const GRANT_RECHECK_MIN_MS = 10_000;

/**
 * The retransmission of AUTH_REQUEST and REGISTER: three sends (at 0, T' and 3T', T' uniform in
 * [T, 1.5T]) and the attempt ends 4.5 T after the first, then the loop's back-off (at most
 * backoff-min, then doubling) and a new attempt with a new request. Short attempts rather than
 * one long schedule (5 sends over up to 46 s): under loss a terminal gets through sooner, and
 * the time to a registration is bounded (startupBoundMs, devloc-agent(8) REGISTRATION).
 */
export function startupPolicy(retransmitMs: number): RetransmitPolicy {
  return { initialTimeoutMs: retransmitMs, maxRetransmit: 2, deadlineMs: retransmitMs * 4.5 };
}

/**
 * Longest time from start to registered when each of authentication and REGISTER succeeds
 * within `attempts` attempts (all jitter at its worst): per step, `attempts` attempts of 4.5 T
 * and the back-offs between them (equal jitter: at most backoff-min * 2^k before attempt k+1;
 * the back-off starts over once authd answered). Pure.
 */
export function startupBoundMs(o: { retransmitMs: number; backoffMinMs: number; backoffMaxMs: number }, attempts: number): number {
  let step = 0;
  for (let k = 0; k < attempts; k++) step += o.retransmitMs * 4.5 + (k > 0 ? Math.min(o.backoffMaxMs, o.backoffMinMs * 2 ** (k - 1)) : 0);
  return 2 * step;
}

/** What the facade adds to the loop's socket. */
export interface RegistrationHooks {
  /** The socket is open: peer channels listen on it too. */
  attach(socket: dgram.Socket): void;
  /** A server push (a datagram answering no request): true when matching or peers took it; PROBE is answered here. */
  push(r: Reply): boolean;
}

const iso = (ms: number | undefined): string | null => (ms === undefined ? null : new Date(ms).toISOString());
const modeName = (m: number): string => netModeNames[m] ?? `mode-${m}`;

export class Registration {
  private readonly o: Required<Pick<AgentOptions,
    'audiences' | 'interfacePollMs' | 'retransmitMs' | 'backoffMinMs' | 'backoffMaxMs' | 'reclassifyMs' | 'renewFraction' | 'maxRefreshS'>> & CheckedOptions;
  readonly now: () => number;
  readonly random: () => number;
  readonly log: AgentLog;
  /** The agent's one UDP socket (undefined while stopped). */
  client: UdpClient | undefined;
  /** --join-group: joined with the next REGISTER, then cleared (joined or refused). */
  private joins: { groupId: Uint8Array; joinCode?: string }[];
  /** REGISTER allow: changed at run time by setAllow (a new REGISTER). */
  private allowIds: Uint8Array[];
  /** Our presence record for REGISTER (agent.ts: presence.ts `own`); its media ID replaces --media-id. */
  presenceRecord: () => PresenceRecord | undefined = () => undefined;

  private _state: AgentState = 'stopped';
  /**
   * This run's stop: aborted by halt(), new at each start(). Every bounded wait of the run
   * listens to it (wait.ts), so that it ends with the stop.
   */
  private runAbort = new AbortController();
  private loopDone: Promise<void> | undefined;
  /** Bumped by every kick that invalidates work in progress. */
  private generation = 0;
  private wake: (() => void) | undefined;
  private interrupt: ((e: Interrupted) => void) | undefined;
  private sleepTimer: ReturnType<typeof setTimeout> | undefined;
  private pollTimer: ReturnType<typeof setInterval> | undefined;

  private needAuth = true;
  /** locatord said another terminal registered with our identity since (issue 19): stay off. */
  private conflict = false;
  private needClassify = true;
  private needRegister = true;
  private backoffAttempt = 0;
  private retryAt: number | undefined;

  private locatorId: Buffer | undefined;
  private grant: TicketGrant | undefined;
  private otherGrants: TicketGrant[] = [];
  /** TURN relays with credentials from the last grant (expiring with its tickets). */
  private relayGrants: RelayGrant[] = [];
  /** Sessions of the other grants (matchd's), by audience. */
  private otherSessions = new Map<string, ClientSession>();
  /**
   * Classifications under way, by generation (step starts one and does not wait for it): at most
   * one per generation. An abandoned generation's is aborted (kick), which closes its test
   * sockets at once; `done` settles when they are closed, which halt waits for.
   */
  private readonly classifications = new Map<number, { abort: AbortController; done: Promise<void> }>();
  /** The session of the newest ticket (REGISTER opens it on locatord). */
  private session: ClientSession | undefined;
  /** The session locatord confirmed with REGISTER_ACK: refreshes and queries use it. */
  private activeSession: ClientSession | undefined;
  private ticketExpMs: number | undefined;
  private renewAt: number | undefined;
  private locatord: Address | undefined;
  private reflector: Address | undefined;

  private netMode: NetMode = NetMode.UNKNOWN;
  private classification: Classification | undefined;
  private reclassifyAt: number | undefined;
  /** Quick re-classifications in a row (inconclusive or lossy results; netmode.ts reclassifyDelay). */
  private quickChecks = 0;
  private reportedNetMode: number | undefined;
  private reportedLocal = '';

  private observed: Address | undefined;
  private registered = false;
  private registeredAt: number | undefined;
  private lastAckAt: number | undefined;
  private ttlS: number | undefined;
  private refreshS: number | undefined;
  private nextRefreshAt: number | undefined;
  private lastError: { step: string; error: string; at: number } | undefined;
  /** The request of the step in progress (auth, REGISTER, REFRESH) while it goes unanswered. */
  private pending: { step: string; to: string; sent: number; since: number } | undefined;
  /** Callers waiting for the next authentication's outcome (reauthenticate). */
  private authWaiters: ((ok: boolean) => void)[] = [];
  private lastGrantRecheck: number | undefined;
  private local: LocalAddress[] = [];
  private localSignature = '';
  private lastProbe: { raw: string; ack: Buffer } | undefined;
  readonly counters: AgentCounters = { authentications: 0, registrations: 0, refreshes: 0, probesAnswered: 0, failures: 0, addressChanges: 0 };

  constructor(
    /** The options as options.ts's checkOptions returns them (IDs as bytes). */
    opts: CheckedOptions,
    /** The Agent: the loop's events are its events. */
    private readonly events: EventEmitter<AgentEvents>,
    private readonly hooks: RegistrationHooks,
  ) {
    const audiences = opts.audiences && opts.audiences.length > 0 ? opts.audiences : [DEFAULT_SERVICE_IDS.locatord, DEFAULT_SERVICE_IDS.matchd];
    this.o = {
      interfacePollMs: 3000, retransmitMs: 1000, backoffMinMs: 1000, backoffMaxMs: 60_000, reclassifyMs: 300_000,
      renewFraction: 0.8, maxRefreshS: 0, ...opts, audiences,
    };
    this.joins = [...(opts.joinGroups ?? [])];
    this.allowIds = [...(opts.allow ?? [])];
    this.now = opts.now ?? Date.now;
    this.random = opts.random ?? Math.random;
    this.log = opts.log ?? (() => {});
  }

  get state(): AgentState {
    return this._state;
  }

  // What the facade lends to matching and peer channels.

  /** locatord's address (from the grant or the options), once authenticated. */
  get locatordAddress(): Address | undefined {
    return this.locatord;
  }

  /** The locatord sessions a push may be MACed in: the confirmed one and the newest. */
  sessions(): ClientSession[] {
    return [this.activeSession, this.session].filter((x): x is ClientSession => x !== undefined);
  }

  /** The session of the newest ticket for another audience (matchd's), and its address from the grant. */
  sessionFor(aud: string): { session: ClientSession; addr?: Address } | undefined {
    const session = this.otherSessions.get(aud);
    return session ? { session, ...(session.grant.addr ? { addr: session.grant.addr } : {}) } : undefined;
  }

  /** Whether the classification of the current network is done. */
  get netModeSettled(): boolean {
    // An inconclusive result is not settled during its first quick retries (2 + 4 + 8 s):
    // matching waits a little for a verdict rather than submit `unknown`.
    return this.classification !== undefined && !this.needClassify && !this.classifications.has(this.generation)
      && !(this.quickChecks > 0 && this.quickChecks <= 3 && inconclusive(this.classification));
  }

  /** Our LAN addresses with the socket's port, as reported to locatord. */
  localAddrs(): Address[] {
    return this.client ? reportableAddresses(this.local, this.client.localPort) : [];
  }

  /** The terminal's locator ID (hex), once authd has granted it. */
  get locatorIdHex(): string | null {
    return this.locatorId ? formatId(this.locatorId) : null;
  }

  get isRegistered(): boolean {
    return this.registered;
  }

  /** The UDP socket's local port (the one registered). */
  get localPort(): number | null {
    return this.client ? this.client.localPort : null;
  }

  /** Ticket grants for audiences other than locatord's (e.g. matchd), as authd issued them. */
  get extraGrants(): readonly TicketGrant[] {
    return this.otherGrants;
  }

  /** Aborted when the agent stops (halt): for the waits of the agent's other parts (wait.ts). */
  get stopSignal(): AbortSignal {
    return this.runAbort.signal;
  }

  /** stop() has begun (the run's signal is aborted); false again once start() runs. */
  private get stopping(): boolean {
    return this.runAbort.signal.aborted;
  }

  /** The TURN relays of the last grant, with their credentials. */
  get relays(): readonly RelayGrant[] {
    return this.relayGrants;
  }

  /** Open the socket and start the automatic sequence. Resolves once the socket is bound. */
  async start(): Promise<void> {
    if (this.client) throw new Error('agent already started');
    this.runAbort = new AbortController();
    const bind = this.o.bind ?? { host: this.o.authd.ip.includes(':') ? '::' : '0.0.0.0', port: 0 };
    this.client = await UdpClient.open({ bind, policy: { initialTimeoutMs: this.o.retransmitMs }, random: this.random, onPush: (r) => this.onPush(r) });
    this.hooks.attach(this.client.socket);
    // Without a listener a send error (ENETUNREACH while an interface is down) would crash the
    // process; it surfaces anyway as a missing answer.
    this.client.socket.on('error', (err) => this.log('debug', 'socket error', { err: err.message }));
    this.local = this.interfaces();
    this.localSignature = addressSignature(this.local);
    this.pollTimer = setInterval(() => this.pollInterfaces(), this.o.interfacePollMs);
    this.loopDone = this.run();
  }

  /** Stop the loop (first half of Agent.stop); false when not running or already stopping. */
  async halt(): Promise<boolean> {
    if (!this.client || this.stopping) return false;
    // Every wait of this run ends now (the registration, a new grant, a back-off): its caller
    // learns that the agent stopped, and its timer does not keep the process alive.
    this.runAbort.abort();
    this.setState('stopping');
    if (this.pollTimer) clearInterval(this.pollTimer);
    this.kick(true);
    await this.loopDone;
    // The classification's test sockets are closed (kick aborted it) before stop() resolves.
    await Promise.all([...this.classifications.values()].map((c) => c.done));
    return true;
  }

  /** Unregister (unless `unregister` is false) and close the socket (second half of Agent.stop). */
  async close(o: { unregister?: boolean } = {}): Promise<void> {
    const client = this.client;
    if (!client) return;
    // Also when the registration may be stale (address just changed): locatord still has it.
    if ((o.unregister ?? true) && this.activeSession && this.locatord) {
      try {
        const short = { initialTimeoutMs: Math.min(this.o.retransmitMs, 500), maxRetransmit: 2, deadlineMs: 2500 };
        await this.call(this.activeSession, 'UNREGISTER', {}, 'UNREGISTER_ACK', short);
        this.log('info', 'unregistered', { locatorId: this.locatorIdHex });
      } catch (err) {
        this.log('warn', 'unregister failed', { err: (err as Error).message });
      }
    }
    this.registered = false;
    this.client = undefined;
    await client.close();
    this.setState('stopped');
  }

  /** The status, except the channels (the PeerManager's). */
  status(): Omit<AgentStatus, 'channels' | 'relayAllocation' | 'relayCounters'> {
    const expiresAt = this.lastAckAt !== undefined && this.ttlS !== undefined ? this.lastAckAt + this.ttlS * 1000 : undefined;
    return {
      state: this._state,
      registered: this.registered && !this.expired(),
      locatorId: this.locatorIdHex,
      observed: this.observed ? formatAddress(this.observed) : null,
      netMode: modeName(this.netMode),
      netModeReason: this.classification?.reason ?? null,
      localPort: this.localPort,
      localAddrs: reportableAddresses(this.local, 0).map((a) => a.ip),
      authd: formatAddress(this.o.authd),
      locatord: this.locatord ? formatAddress(this.locatord) : this.o.locatord ? formatAddress(this.o.locatord) : null,
      reflector: this.reflector ? formatAddress(this.reflector) : null,
      registeredAt: iso(this.registeredAt),
      lastRefreshAt: iso(this.lastAckAt),
      nextRefreshAt: iso(this.registered ? this.nextRefreshAt : undefined),
      expiresAt: iso(this.registered ? expiresAt : undefined),
      ttlS: this.ttlS ?? null,
      refreshS: this.refreshS ?? null,
      ticketExpiresAt: iso(this.ticketExpMs),
      ticketRenewAt: iso(this.renewAt),
      retryAt: iso(this.retryAt),
      attempt: this.pending ? { step: this.pending.step, to: this.pending.to, sent: this.pending.sent, since: new Date(this.pending.since).toISOString() } : null,
      lastError: this.lastError ? { step: this.lastError.step, error: this.lastError.error, at: new Date(this.lastError.at).toISOString() } : null,
      relays: this.relayGrants.map((r) => ({
        name: r.name, udp: r.udp ? formatAddress(r.udp) : null, tcp: r.tcp ? formatAddress(r.tcp) : null, tls: r.tls ? formatAddress(r.tls) : null,
        credentialsExpireAt: new Date(r.exp * 1000).toISOString(),
      })),
      counters: { ...this.counters },
    };
  }

  /** Tell the agent its address may have changed (e.g. an application saw a link change). */
  addressChanged(reason = 'requested'): void {
    this.onAddressChange(reason);
  }

  // ---------------------------------------------------------------- the automatic sequence

  private setState(s: AgentState): void {
    if (s === this._state) return;
    const prev = this._state;
    this._state = s;
    this.events.emit('state', s, prev);
  }

  private interfaces(): LocalAddress[] {
    return localAddresses(this.o.interfaces);
  }

  private pollInterfaces(): void {
    let now: LocalAddress[];
    try {
      now = this.interfaces();
    } catch (err) {
      this.log('warn', 'cannot read interfaces', { err: (err as Error).message });
      return;
    }
    const sig = addressSignature(now);
    this.local = now;
    if (sig === this.localSignature) return;
    const before = this.localSignature;
    this.localSignature = sig;
    this.log('info', 'local addresses changed', { before: before.split(',').filter(Boolean), after: sig.split(',').filter(Boolean) });
    this.onAddressChange('interfaces');
  }

  private onAddressChange(reason: string): void {
    if (this.stopping || !this.client) return;
    this.counters.addressChanges++;
    this.needAuth = this.needClassify = this.needRegister = true;
    this.registered = false;
    this.retryAt = undefined;
    // The old classification describes the old network: unknown until the new one is classified.
    this.setNetMode({ mode: NetMode.UNKNOWN, reason: 'address changed, classifying again', tests: { t1: null } });
    this.quickChecks = 0;
    this.backoffAttempt = 0;
    this.log('info', 'address change: authenticating and registering again', { reason });
    this.kick(true);
  }

  /** Wake the loop; with `abandon`, also abandon the step and the classification in progress. */
  private kick(abandon = false): void {
    if (abandon) {
      this.generation++;
      this.interrupt?.(new Interrupted('interrupted'));
      for (const c of this.classifications.values()) c.abort.abort();
    }
    this.wake?.();
  }

  private async run(): Promise<void> {
    while (!this.stopping) {
      const gen = this.generation;
      try {
        if (await this.guard(this.step(gen))) {
          this.backoffAttempt = 0;
          this.retryAt = undefined;
        }
      } catch (err) {
        if (this.stopping) break;
        if (!(err instanceof Interrupted)) this.onFailure(err as Error);
      }
      if (this.stopping) break;
      await this.sleep(this.nextWakeDelay());
    }
  }

  /** Race a step against a kick that abandons it. The abandoned step's errors are swallowed. */
  private guard<T>(p: Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.interrupt = reject;
      p.then(resolve, reject);
    }).finally(() => {
      this.interrupt = undefined;
      p.catch(() => {});
    });
  }

  /** Work of generation `gen` is abandoned: a kick came since (address change, stop). */
  private superseded(gen: number): boolean {
    return gen !== this.generation || this.stopping;
  }

  private check(gen: number): void {
    if (this.superseded(gen)) throw new Interrupted('superseded');
  }

  private expired(now = this.now()): boolean {
    return this.lastAckAt === undefined || this.ttlS === undefined || now > this.lastAckAt + this.ttlS * 1000;
  }

  /**
   * One unit of work, chosen by what is due; false when nothing was due yet (woken early).
   * Order: authenticate (or renew the ticket), then register, with the classification started
   * beside it (classifyBeside) — neither a REGISTER nor a REFRESH is held up by the reflector's
   * deliberately unanswered filtering tests — then a REFRESH when one is due, at once if the
   * classification changed the mode locatord knows.
   */
  private async step(gen: number): Promise<boolean> {
    // Another terminal holds our identity and won (IDENTITY_CONFLICT): do not fight it; an
    // operator's SIGHUP (reauthenticate) or a restart tries again.
    if (this.conflict) return false;
    const now = this.now();
    if (this.registered && this.expired(now)) {
      this.registered = false;
      this.needRegister = true;
      this.log('warn', 'registration expired without a refresh', { locatorId: this.locatorIdHex });
      this.setState('retrying');
    }
    if (this.retryAt !== undefined && now < this.retryAt) return false;
    // The retry is under way: status shows its attempts, not a time in the past.
    this.retryAt = undefined;
    const renewal = !this.needAuth && this.renewAt !== undefined && now >= this.renewAt;
    if (this.needAuth || renewal) {
      try {
        await named('auth', this.authenticate(gen));
        // authd answered: the path works, so a REGISTER that goes unanswered next starts its
        // back-off over (the bound of startupBoundMs counts the two steps separately).
        this.backoffAttempt = 0;
      } catch (err) {
        if (!renewal || !this.registered || err instanceof Interrupted) throw err;
        // authd is unreachable but the old ticket still holds: keep the registration alive
        // with it and try the renewal again later.
        this.needAuth = false;
        const delay = this.backoffDelay();
        this.renewAt = this.now() + delay;
        this.counters.failures++;
        this.lastError = { step: 'auth', error: (err as Error).message, at: this.now() };
        this.settleAuthWaiters(false);
        this.log('warn', 'ticket renewal failed, keeping the current ticket', { err: (err as Error).message, retryInMs: delay });
        this.events.emit('problem', 'auth', (err as Error).message);
      }
    }
    const classifyDue = this.needClassify || (this.reclassifyAt !== undefined && now >= this.reclassifyAt);
    // The classification runs beside the steps, not in one: under loss it can take longer than
    // a registration's TTL (classificationBoundMs, 24 s at T = 1 s), and neither a REGISTER nor a
    // REFRESH that falls due meanwhile waits for it. Its verdict wakes the loop, which sends a
    // changed mode to locatord at once (below).
    if (classifyDue && !this.classifications.has(gen)) this.classifyBeside(gen);
    if (this.needRegister) await named('REGISTER', this.register(gen));
    this.check(gen);
    if (this.unreported()) this.nextRefreshAt = this.now();
    if (!this.needRegister && this.registered && this.nextRefreshAt !== undefined && this.now() >= this.nextRefreshAt) {
      await named('REFRESH', this.refresh(gen));
    }
    if (this.registered) this.setState('registered');
    return true;
  }

  /** Run classify(gen) beside the steps; a failure counts as a failed step (onFailure), as when a step ran it. */
  private classifyBeside(gen: number): void {
    // An abandoned step may still run on (guard lets the loop go on without it): it must not
    // start a classification that no kick will abort.
    if (this.superseded(gen)) return;
    const abort = new AbortController();
    const done = named('classify', this.classify(gen, abort.signal)).then(() => this.wake?.(), (err: unknown) => {
      if (err instanceof Interrupted || this.superseded(gen)) return;
      this.onFailure(err as Error);
      this.wake?.();
    }).finally(() => this.classifications.delete(gen));
    this.classifications.set(gen, { abort, done });
  }

  /**
   * Registered, and the mode or the LAN addresses differ from what locatord was last told: a
   * REFRESH carrying them is due now (step), and the loop does not sleep first (nextWakeDelay),
   * since a classification that ends during a step has no sleep to wake.
   */
  private unreported(): boolean {
    return this.registered && (this.wireNetMode() !== this.reportedNetMode
      || (this.client !== undefined && JSON.stringify(reportableAddresses(this.local, this.client.localPort)) !== this.reportedLocal));
  }

  private nextWakeDelay(): number {
    const now = this.now();
    if (this.retryAt !== undefined) return Math.max(0, this.retryAt - now);
    if (this.needAuth || this.needRegister || this.needClassify) return 0;
    if (this.unreported()) return 0;
    const due = [this.nextRefreshAt, this.renewAt, this.reclassifyAt].filter((x): x is number => x !== undefined);
    if (due.length === 0) return this.o.backoffMaxMs;
    return Math.max(0, Math.min(...due) - now);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = (): void => {
        if (this.sleepTimer) clearTimeout(this.sleepTimer);
        this.sleepTimer = undefined;
        this.wake = undefined;
        resolve();
      };
      this.wake = done;
      // setTimeout's limit is 2^31-1 ms; wake at least daily to recompute.
      this.sleepTimer = setTimeout(done, Math.min(ms, 86_400_000));
    });
  }

  private backoffDelay(): number {
    const base = Math.min(this.o.backoffMaxMs, this.o.backoffMinMs * 2 ** Math.min(this.backoffAttempt, 30));
    this.backoffAttempt++;
    // "Equal jitter": half fixed, half random, so retries of many terminals spread out.
    return Math.round(base / 2 + (this.random() * base) / 2);
  }

  private onFailure(err: Error): void {
    this.counters.failures++;
    const step = err instanceof ServerError || err instanceof StepFailure ? err.step : this._state;
    let delay: number;
    let level: LogLevel = 'warn';
    if (err instanceof ServerError) {
      if (err.code === ErrorCode.NO_SESSION || (err.code === ErrorCode.NOT_FOUND && err.step === 'REFRESH')) {
        // locatord lost our session or our registration (restart, expiry): register again
        // with the ticket, now.
        this.needRegister = true;
        this.registered = false;
        delay = this.backoffAttempt === 0 ? 0 : this.backoffDelay();
        this.backoffAttempt = Math.max(this.backoffAttempt, 1);
      } else if ((err.code === ErrorCode.RATE_LIMITED || err.code === ErrorCode.TRY_LATER) && err.retryAfterMs !== undefined) {
        delay = err.retryAfterMs + Math.round(this.random() * Math.min(1000, err.retryAfterMs * 0.1));
      } else if (err.code === ErrorCode.IDENTITY_CONFLICT && err.step !== 'auth') {
        // A copy of our identity file is in use elsewhere and registered after us: stop
        // re-registering (two terminals fighting over one locator ID flip it back and forth).
        this.conflict = true;
        this.registered = false;
        level = 'error';
        delay = 0;
      } else if (REFUSALS.includes(err.code)) {
        // The device is not (or no longer) accepted: keep trying, slowly; an operator may fix it.
        // A service that says so (authd revoked the device: REVOKED) has dropped the
        // registration; the next try asks authd.
        if (err.step !== 'auth') {
          this.registered = false;
          this.needAuth = true;
        }
        level = 'error';
        this.backoffAttempt = Math.max(this.backoffAttempt, 30);
        delay = this.backoffDelay();
      } else {
        if (NEEDS_TICKET.includes(err.code) && err.step !== 'auth') this.needAuth = true;
        // Kicked: the registration is gone already.
        if (err.code === ErrorCode.KICKED) this.registered = false;
        if (err.step !== 'auth') this.needRegister = true;
        delay = this.backoffDelay();
      }
    } else {
      // No answer (server unreachable) or a local problem: back off, then start the
      // registration over with the ticket (the server may have restarted meanwhile).
      if (this.session && !this.needAuth) this.needRegister = true;
      delay = this.backoffDelay();
    }
    if (this.registered && this.expired()) this.registered = false;
    this.retryAt = this.conflict ? undefined : this.now() + delay;
    const message = err.message;
    this.lastError = { step, error: message, at: this.now() };
    if (step === 'auth') this.settleAuthWaiters(false);
    if (this.conflict) this.log(level, 'identity in use by another terminal: not registering again (devloc-agent(8), KICKED, REVOKED AND IDENTITY CONFLICT)', { step, err: message });
    else this.log(level, 'step failed, retrying', { step, err: message, retryInMs: delay });
    this.events.emit('problem', step, message);
    if (!this.registered) this.setState('retrying');
  }

  private async authenticate(gen: number): Promise<void> {
    // needAuth is cleared only on success: a failure (or an abandoned attempt) leaves it as is.
    if (!this.registered) this.setState('authenticating');
    const cnf = generatePair('x25519');
    let cookie: Uint8Array | undefined;
    for (let round = 0; ; round++) {
      const rid = UdpClient.newRequestId();
      let built;
      try {
        built = buildAuthRequest({
          rid, deviceId: this.o.identity.deviceId, deviceKey: this.o.identity.key,
          authdKid: this.o.authdKey.kid, authdSealPublic: this.o.authdKey.seal,
          audiences: this.o.audiences, cnf: cnf.public, timeMs: this.now(),
          ...(cookie ? { cookie } : {}),
        });
      } catch (err) {
        throw new Error(`cannot build AUTH_REQUEST: ${(err as Error).message}`);
      }
      let r: Reply;
      try {
        r = await this.tracked('auth', 'authd', this.o.authd, (onRetransmit) => this.client!.request(this.o.authd, built.datagram, rid, {
          accept: (x) => x.msg.name === 'AUTH_RESPONSE' || x.msg.name === 'ERROR', onRetransmit, policy: startupPolicy(this.o.retransmitMs),
        }));
      } catch (err) {
        throw new Error(`auth: ${(err as Error).message}`);
      }
      this.check(gen);
      const m = r.msg;
      if (m.name === 'ERROR') {
        if (m.body.code === ErrorCode.COOKIE_REQUIRED && m.body.cookie && round < 2) {
          cookie = m.body.cookie;
          continue;
        }
        throw new ServerError('auth', m.body.code, m.body.message, m.body.retryAfterMs, m.body.cookie);
      }
      if (m.name !== 'AUTH_RESPONSE') {
        throw new Error(`auth: unexpected ${m.name}`);
      }
      const opened = openAuthGrant(built.keys, rid, m.body.sealed, built.nonce);
      if (!opened.ok) {
        throw new Error(`auth: ${opened.reason}`);
      }
      const g = opened.grant;
      const aud = this.o.audiences[0]!;
      const grant = g.tickets.find((t) => t.aud === aud);
      if (!grant) {
        throw new Error(`auth: authd granted no ticket for "${aud}"`);
      }
      const cnfSecret = privateKeyObject('X25519', cnf);
      const session = ClientSession.fromGrant(grant, cnfSecret);
      const peek = peekTicket(grant.ticket);
      if (!session || typeof peek === 'string') {
        throw new Error('auth: granted ticket is unusable');
      }
      const locatord = this.o.locatord ?? grant.addr;
      if (!locatord) {
        throw new Error('auth: authd did not say where locatord is; set --locatord');
      }
      const now = this.now();
      const lifetimeMs = Math.max(1000, (peek.claims.exp - peek.claims.iat) * 1000);
      const fraction = this.o.renewFraction + (this.random() - 0.5) * 0.1;
      const changedId = this.locatorId && !this.locatorId.equals(Buffer.from(g.locatorId));
      this.locatorId = Buffer.from(g.locatorId);
      this.grant = grant;
      this.otherGrants = g.tickets.filter((t) => t !== grant);
      this.relayGrants = g.relays ?? [];
      this.otherSessions = new Map();
      for (const t of this.otherGrants) {
        const s = ClientSession.fromGrant(t, cnfSecret);
        if (s) this.otherSessions.set(t.aud, s);
      }
      this.session = session;
      this.ticketExpMs = now + (peek.claims.exp - peek.claims.iat) * 1000;
      this.renewAt = now + Math.round(lifetimeMs * Math.min(0.95, Math.max(0.1, fraction)));
      if (!this.locatord || !sameAddress(this.locatord, locatord)) {
        this.locatord = locatord;
        this.needClassify = true;
      }
      this.reflector = this.o.reflector === null ? undefined : (this.o.reflector ?? { ip: locatord.ip, port: DEFAULT_PORTS.reflector });
      // A new ticket is a new session: register with it.
      this.needRegister = true;
      this.needAuth = false;
      this.counters.authentications++;
      this.log('info', 'authenticated', {
        locatorId: formatId(this.locatorId), audiences: g.tickets.map((t) => t.aud), ticketExpires: iso(this.ticketExpMs),
        ...(this.relayGrants.length ? { relays: this.relayGrants.map((r) => r.name) } : {}),
        renewAt: iso(this.renewAt), locatord: formatAddress(locatord),
      });
      if (changedId) this.log('warn', 'authd issued a different locator ID than before');
      this.settleAuthWaiters(true);
      return;
    }
  }

  private async classify(gen: number, signal: AbortSignal): Promise<void> {
    this.needClassify = false;
    this.reclassifyAt = undefined;
    if (!this.reflector) {
      this.setNetMode({ mode: NetMode.UNKNOWN, reason: 'classification disabled', tests: { t1: null } });
      return;
    }
    const c: Classification = await classifyNetwork({
      reflector: this.reflector,
      bindHost: this.reflector.ip.includes(':') ? '::' : '0.0.0.0',
      local: () => this.interfaces(),
      retransmitMs: this.o.retransmitMs,
      signal,
    });
    this.check(gen);
    // Under loss a test can lose its answers: an inconclusive result is tried again within
    // seconds, a filtering verdict from a lossy path is re-checked, and what an answer proved
    // (an open filter, a changing mapping) outlives a later test that lost it (netmode.ts).
    const combined = combineClassifications(this.quickChecks > 0 ? this.classification : undefined, c);
    const quick = reclassifyDelay(combined, this.quickChecks, this.o.reclassifyMs);
    if (quick !== undefined) {
      this.reclassifyAt = this.now() + quick;
      this.quickChecks++;
      this.log('debug', 'classifying again soon', { mode: modeName(combined.mode), reason: combined.reason, lossy: combined.lossy === true, inMs: quick });
    } else {
      this.quickChecks = 0;
      if (combined.mode === NetMode.UNKNOWN || combined.mode === NetMode.UDP_BLOCKED) this.reclassifyAt = this.now() + this.o.reclassifyMs;
    }
    // locatord answering at this address disproves "udp-blocked": only the reflector is out of reach.
    this.setNetMode(combined.mode === NetMode.UDP_BLOCKED && this.registered ? { ...combined, mode: NetMode.UNKNOWN, reason: 'reflector unreachable, locatord reachable' } : combined);
  }

  private setNetMode(c: Classification): void {
    const changed = c.mode !== this.netMode || !this.classification;
    this.classification = c;
    this.netMode = c.mode;
    if (changed) {
      this.log('info', 'network mode', { mode: modeName(c.mode), reason: c.reason, ...(c.observed ? { observed: formatAddress(c.observed) } : {}) });
      this.events.emit('netmode', modeName(c.mode), c.reason);
    }
  }

  /** The mode as reported to locatord: "udp-blocked" is disproved by any answer, so send unknown. */
  wireNetMode(): number {
    return this.netMode === NetMode.UDP_BLOCKED ? NetMode.UNKNOWN : this.netMode;
  }

  private async register(gen: number): Promise<void> {
    const session = this.session;
    const grant = this.grant;
    const to = this.locatord;
    if (!session || !grant || !to) {
      this.needAuth = true;
      throw new Error('register: no ticket');
    }
    // needRegister is cleared only on success.
    if (!this.registered) this.setState('registering');
    const localAddrs = reportableAddresses(this.local, this.client!.localPort);
    const body: Bodies['REGISTER'] = { ticket: grant.ticket, timeMs: this.now(), netMode: this.wireNetMode() };
    if (localAddrs.length) body.localAddrs = localAddrs;
    if (this.o.nickname) body.nickname = this.o.nickname;
    if (this.o.mediaId) body.mediaId = this.o.mediaId;
    const presence = this.presenceRecord();
    if (presence) body.presence = presence;
    if (this.o.visibility !== undefined) body.visibility = this.o.visibility;
    if (this.allowIds.length > 0) body.allow = this.allowIds;
    if (this.o.reachable) body.reachable = true;
    if (this.o.ttlS) body.ttlS = this.o.ttlS;
    const joins = this.joins;
    if (joins.length > 0) body.joinGroups = joins.map((j) => ({ groupId: j.groupId, ...(j.joinCode ? joinProof(session.keys, session.sid, j.groupId, j.joinCode) : {}) }));
    // The server may have lost the session and will number its answers from 1 again.
    session.restartReceive();
    let m: MessageOf<'REGISTER_ACK'>;
    try {
      m = await this.call(session, 'REGISTER', body, 'REGISTER_ACK', startupPolicy(this.o.retransmitMs), true);
    } catch (err) {
      // The joins are all or nothing, and a refused one registers nothing: register without.
      if (joins.length > 0 && err instanceof ServerError && JOIN_REFUSALS.includes(err.code)) {
        this.joins = [];
        this.log('warn', 'join-group refused: registering without joining', { groups: joins.map((j) => formatId(j.groupId)), err: err.message });
      }
      throw err;
    }
    this.check(gen);
    if (joins.length > 0) {
      this.joins = [];
      this.log('info', 'joined groups', { groups: joins.map((j) => formatId(j.groupId)) });
    }
    this.needRegister = false;
    this.reportedNetMode = body.netMode;
    this.reportedLocal = JSON.stringify(localAddrs);
    this.activeSession = session;
    this.counters.registrations++;
    this.registeredAt = this.now();
    this.acknowledged(m.body, 'registered');
  }

  private async refresh(gen: number): Promise<void> {
    const session = this.activeSession;
    if (!session) {
      this.needRegister = true;
      return;
    }
    const body: Bodies['REFRESH'] = {};
    if (this.o.ttlS) body.ttlS = this.o.ttlS;
    const mode = this.wireNetMode();
    if (mode !== this.reportedNetMode) body.netMode = mode;
    const localAddrs = reportableAddresses(this.local, this.client!.localPort);
    if (JSON.stringify(localAddrs) !== this.reportedLocal) body.localAddrs = localAddrs;
    let m: MessageOf<'REFRESH_ACK'>;
    try {
      m = await this.call(session, 'REFRESH', body, 'REFRESH_ACK', undefined, true);
    } catch (err) {
      if (gen === this.generation) this.needRegister = true;
      throw err;
    }
    this.check(gen);
    if (body.netMode !== undefined) this.reportedNetMode = body.netMode;
    if (body.localAddrs) this.reportedLocal = JSON.stringify(localAddrs);
    this.counters.refreshes++;
    this.acknowledged(m.body, 'refreshed');
  }

  /** Common bookkeeping of REGISTER_ACK / REFRESH_ACK. */
  private acknowledged(ack: RegistrationAck, kind: 'registered' | 'refreshed'): void {
    const now = this.now();
    const previous = this.observed;
    this.observed = ack.observed;
    this.ttlS = ack.ttlS;
    this.refreshS = ack.refreshS;
    this.lastAckAt = now;
    this.registered = true;
    if (this.netMode === NetMode.UDP_BLOCKED) {
      // The server answered, so UDP is not blocked; the reflector alone is unreachable.
      this.setNetMode({ mode: NetMode.UNKNOWN, reason: 'reflector unreachable, locatord reachable', tests: { t1: null } });
    }
    let interval = ack.refreshS > 0 ? ack.refreshS : Math.max(1, Math.floor(ack.ttlS / 3.5));
    if (this.o.maxRefreshS > 0) interval = Math.min(interval, this.o.maxRefreshS);
    // ±20% jitter: terminals that registered together (after an outage) drift apart.
    this.nextRefreshAt = now + Math.round(interval * 1000 * (0.8 + 0.4 * this.random()));
    const info: RegistrationInfo = {
      locatorId: this.locatorIdHex ?? '', observed: formatAddress(ack.observed), ttlS: ack.ttlS, refreshS: ack.refreshS,
      netMode: modeName(this.netMode), locatord: this.locatord ? formatAddress(this.locatord) : '',
    };
    this.setState('registered');
    if (kind === 'registered') {
      this.log('info', 'registered', { ...info });
      this.events.emit('registered', info);
    } else {
      this.log('debug', 'refreshed', { observed: info.observed, ttlS: ack.ttlS });
      this.events.emit('refreshed', info);
    }
    const prevText = previous ? formatAddress(previous) : null;
    if (!previous || !sameAddress(previous, ack.observed)) this.events.emit('address', info.observed, prevText);
    if (previous && kind === 'refreshed' && !sameAddress(previous, ack.observed)) {
      // The NAT moved us (rebinding, new public address): the whole sequence again.
      this.log('info', 'observed address changed', { before: prevText, after: info.observed });
      this.onAddressChange('observed address');
    }
  }

  /** Server-initiated datagrams on our socket: PROBE from locatord, MATCH_RESULT from matchd. */
  private onPush(r: Reply): void {
    // This runs inside the socket's 'message' event: nothing may throw out of it.
    try {
      if (this.hooks.push(r)) return;
      this.answerProbe(r);
    } catch (err) {
      this.log('error', 'push handling failed; datagram dropped', { type: r.msg.name, err: (err as Error).message });
    }
  }

  private answerProbe(r: Reply): void {
    if (r.msg.name !== 'PROBE' || !this.locatord || !sameAddress(r.from, this.locatord)) return;
    const raw = r.raw.toString('base64');
    if (this.lastProbe && this.lastProbe.raw === raw) {
      // A retransmitted PROBE (our ACK was lost): the replay window refuses it, answer again.
      this.client?.send(r.from, this.lastProbe.ack);
      return;
    }
    const session = [this.activeSession, this.session].find((s) => s !== undefined && s.accept(r));
    if (!session) return;
    const ack = session.encode('PROBE_ACK', r.msg.rid, {});
    this.lastProbe = { raw, ack };
    this.client?.send(r.from, ack);
    this.counters.probesAnswered++;
    this.log('debug', 'probe answered');
  }

  /** One session-authenticated request to locatord; an ERROR answer becomes a ServerError. */
  async call<N extends MessageName, R extends MessageName>(
    session: ClientSession, name: N, body: Bodies[N], expect: R, policy?: Partial<RetransmitPolicy>, track = false,
  ): Promise<MessageOf<R>> {
    const to = this.locatord;
    const client = this.client;
    if (!to || !client) throw new AgentError('NOT_REGISTERED', 'agent has no locatord address yet');
    const rid = UdpClient.newRequestId();
    const datagram = session.encode(name, rid, body);
    const send = (onRetransmit?: (n: number) => void): Promise<Reply> =>
      client.request(to, datagram, rid, { accept: (x) => session.accept(x), ...(policy ? { policy } : {}), ...(onRetransmit ? { onRetransmit } : {}) });
    let r: Reply;
    try {
      r = await (track ? this.tracked(name, 'locatord', to, send) : send());
    } catch (err) {
      // The agent stopped (its socket closed) before an answer: not the server's silence.
      if (err instanceof ClientClosed) throw stoppedBeforeAnswer(name);
      if (err instanceof DevlocError) throw new Error(`${name}: ${err.message}`);
      throw err;
    }
    const m: Message = r.msg;
    if (m.name === 'ERROR') throw new ServerError(name, m.body.code, m.body.message, m.body.retryAfterMs, m.body.cookie);
    if (m.name !== expect) throw new Error(`${name}: unexpected answer ${m.name}`);
    return m as MessageOf<R>;
  }

  /** Wait (bounded) until registered; queries need the session that REGISTER opened. */
  async ready(timeoutMs: number): Promise<ClientSession> {
    if (this.registered && this.activeSession) return this.activeSession;
    if (!this.client || this.stopping) throw new AgentError('NOT_RUNNING', 'agent is not running');
    await waitUnlessStopped<void>(this.runAbort.signal, timeoutMs, {
      arm: (settle) => {
        const onReg = (): void => settle(undefined);
        this.events.once('registered', onReg);
        return () => this.events.off('registered', onReg);
      },
      timedOut: () => new AgentError('NOT_REGISTERED', `not registered with locatord (state ${this._state}${this.lastError ? `; last error: ${this.lastError.error}` : ''})`),
      stopped: () => new AgentError('NOT_RUNNING', 'the agent stopped before it registered'),
    });
    if (!this.activeSession) throw new AgentError('NOT_REGISTERED', 'not registered with locatord');
    return this.activeSession;
  }

  /**
   * Run one request of a step, so that status shows it from its first timeout on: the attempts
   * sent so far, and as last error "no answer from <service> <address>" (not only once the whole
   * retransmission schedule, 45 s by default, has run out).
   */
  private async tracked<T>(step: string, service: string, to: Address, send: (onRetransmit: (n: number) => void) => Promise<T>): Promise<T> {
    const p = { step, to: formatAddress(to), sent: 1, since: this.now() };
    this.pending = p;
    const onRetransmit = (n: number): void => {
      if (this.pending !== p) return;
      p.sent = n + 1;
      const error = `no answer from ${service} ${p.to} yet (${p.sent} attempts in ${Math.round((this.now() - p.since) / 1000)} s)`;
      this.lastError = { step, error, at: this.now() };
      // A log line, not a 'problem' event: that one means a step failed.
      if (n === 1) this.log('warn', 'no answer yet, retransmitting', { step, to: p.to });
    };
    try {
      return await send(onRetransmit);
    } finally {
      if (this.pending === p) this.pending = undefined;
    }
  }

  private settleAuthWaiters(ok: boolean): void {
    const waiters = this.authWaiters;
    this.authWaiters = [];
    for (const w of waiters) w(ok);
  }

  /**
   * Authenticate again now, e.g. to pick up services added to authd since the last grant
   * (SIGHUP of devloc-agent). Like a ticket renewal: the registration stays up meanwhile, and
   * when authd is unreachable the current ticket is kept. Resolves with whether authd answered
   * with a grant within \`timeoutMs\` (false at once when not running).
   */
  reauthenticate(reason: string, timeoutMs = 0): Promise<boolean> {
    if (!this.client || this.stopping) return Promise.resolve(false);
    this.log('info', 'authenticating again', { reason });
    if (this.conflict) {
      this.conflict = false;
      this.needAuth = this.needRegister = true;
    }
    if (this.needAuth || this.renewAt === undefined) this.needAuth = true;
    else this.renewAt = this.now();
    this.retryAt = undefined;
    this.backoffAttempt = 0;
    // An interrupted authentication reports no outcome (onFailure skips Interrupted): a stop
    // ends the wait with false.
    const outcome = timeoutMs > 0
      ? waitUnlessStopped<boolean>(this.runAbort.signal, timeoutMs, {
        arm: (settle) => {
          this.authWaiters.push(settle);
          return () => { this.authWaiters = this.authWaiters.filter((w) => w !== settle); };
        },
        timedOut: () => false,
        stopped: () => false,
      })
      : Promise.resolve(true);
    this.kick(false);
    return outcome;
  }

  /**
   * A service told us (or we found) that we hold no ticket for \`aud\`: authd may know the service
   * by now. Authenticates again, at most once per GRANT_RECHECK_MIN_MS, and resolves with
   * whether a ticket for \`aud\` is there afterwards.
   */
  async recheckGrant(aud: string, timeoutMs: number): Promise<boolean> {
    const now = this.now();
    if (this.lastGrantRecheck !== undefined && now - this.lastGrantRecheck < GRANT_RECHECK_MIN_MS) return this.otherSessions.has(aud);
    this.lastGrantRecheck = now;
    await this.reauthenticate(`no ticket for "${aud}"`, timeoutMs);
    return this.otherSessions.has(aud);
  }

  /** The allow list (hex IDs). */
  get allow(): string[] {
    return this.allowIds.map((id) => formatId(id));
  }

  /** Replace the allow list: locatord learns it from a new REGISTER, sent now. */
  setAllow(ids: Uint8Array[]): void {
    this.allowIds = [...ids];
    this.needRegister = true;
    this.retryAt = undefined;
    this.kick(false);
  }

  /** locatord no longer knows our session (NO_SESSION to a query) or our ticket: register again now. */
  sessionLost(needTicket: boolean): void {
    this.registered = false;
    this.needRegister = true;
    this.retryAt = undefined;
    if (needTicket) this.needAuth = true;
    this.kick(false);
  }
}
