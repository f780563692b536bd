// The agent's relayed candidate (devloc-agent(8), RELAYED CHANNELS; issue 17): one TURN
// allocation, made when a channel needs one, on the first usable relay of the authd grant, shared
// by every relayed channel of the agent. The TURN protocol is turn/client.ts; this file decides
// when to allocate, which relay, what to permit, and what to report.
//
// - ensure(): allocate on the first relay of the grant that is not marked lost, with the grant's
//   credentials, over the transports the grant lists for it in the order UDP, TCP, TLS: one
//   that neither connects nor answers within RELAY_TRANSPORT_TIMEOUT_MS (a network that blocks
//   UDP, or TCP but for TLS's port) is left for the next (allocateOn); one that failed so is
//   tried last on that relay for RELAY_LOST_MS (the next allocation does not wait for it again).
//   An allocation that needed TCP or TLS because UDP got no answer makes the terminal
//   UDP-blocked (udpBlocked) until an allocation over UDP succeeds or its address changes, which
//   re-checks at once (addressChanged). Credentials that authd's grant says have expired
//   (or that the relay refuses as expired) make the agent authenticate again for fresh ones and
//   allocate once more: never a silent stall. Resolves with the relayed address, or rejects with
//   AgentError RELAY_UNAVAILABLE (no relay granted, or none answers) naming every relay's error,
//   or NOT_RUNNING when close() (the agent's stop) came first: nothing it began is kept then.
// - permit(ip): CreatePermission for exactly the introduced peer's observed IP (never anything
//   else: the relay forwards to us only what comes from peers we were introduced to).
// - lost(): the allocation stopped answering (a channel over it went silent) or the client
//   reported an error: the relay is marked lost for RELAY_LOST_MS, the allocation dropped, and
//   the next ensure() takes the next relay of the grant. Channels over it learn it through
//   their own silence (channel.ts) or onLost, and move to the next relay (punch.ts,
//   moveRelayed); with none left they close with a reason that says which relay was lost.
// - Credentials that expire under an allocation: coturn keeps serving an allocation made with
//   them (it checks a username's expiry only when an allocation is made), but a grant must not
//   be used beyond its `exp`. So at `exp` the allocation is dropped like a lost one, without
//   skipping the relay (onLost): its channels move to a new allocation made with fresh
//   credentials (ensure() authenticates again when the grant has expired). A relay that does
//   refuse the expired credentials (401, TURN_CREDENTIALS_EXPIRED) leads to the same move.
// Counters (status, metrics): allocations, relayed datagrams and bytes each way, losses.
import type { Address } from '../wire/addr.js';
import { formatAddress } from '../wire/addr.js';
import type { RelayGrant } from '../wire/catalog.js';
import type { AgentLog } from './errors.js';
import { AgentError } from './errors.js';
import type { TurnClock, TurnServer, TurnTransport } from './turn/client.js';
import { nodeTurnClock, TurnClient, TurnError, TurnErrorCode } from './turn/client.js';

/** Retransmission timeout and count of the TURN requests (see allocateOn). */
export const RELAY_RTO_MS = 250;
export const RELAY_RC = 5;

/** How long a relay that stopped answering is skipped (ms). */
export const RELAY_LOST_MS = 5 * 60_000;

/**
 * How long one transport to a relay may take to connect (TCP/TLS) or to answer a request before
 * the next transport is tried: the UDP schedule's total (RELAY_RTO_MS doubling, RELAY_RC sends,
 * then 16 RTO: 7.75 s), used as the TCP/TLS connect and request timeout too.
 */
export const RELAY_TRANSPORT_TIMEOUT_MS = RELAY_RTO_MS * (2 ** (RELAY_RC - 1) - 1 + 16);

export interface RelayHost {
  /** The relays of the current authd grant, with their credentials. */
  grants(): readonly RelayGrant[];
  /** Authenticate again for fresh credentials; resolves with whether authd granted in time. */
  reauthenticate(reason: string): Promise<boolean>;
  log: AgentLog;
  /**
   * The one clock of the manager and its TURN clients: now() (credentials' expiry, relays lost)
   * and the timers (the renewal at the credentials' expiry, the TURN client's unless
   * `client.clock` is given). Tests pass a fake clock; the agent nodeTurnClock(its now).
   * Default: nodeTurnClock(Date.now).
   */
  clock?: TurnClock;
  /** TURN client options for tests (fake links, short timeouts). */
  client?: Partial<ConstructorParameters<typeof TurnClient>[0]>;
}

export interface RelayAllocationStatus {
  relay: string;
  transport: TurnTransport;
  server: string;
  relayed: string;
  /** Our address as the relay sees it. */
  mapped: string | null;
  /** Peer IPs permitted (one per introduced peer). */
  permitted: number;
  since: string;
}

export interface RelayCounters {
  allocations: number;
  /** Relays that stopped answering (or failed) while allocated. */
  relaysLost: number;
  datagramsOut: number;
  datagramsIn: number;
  bytesOut: number;
  bytesIn: number;
}

interface Current {
  client: TurnClient;
  name: string;
  transport: TurnTransport;
  server: string;
  since: number;
  /** Fires at the credentials' expiry: a new allocation with fresh ones (a handle of the manager's clock). */
  renew?: unknown;
}

/** The ways to reach relay `g` its grant lists, in the order they are tried: UDP, TCP, TLS. */
function serversOf(g: RelayGrant): { server: TurnServer; addr: Address }[] {
  const pick: [TurnTransport, Address | undefined][] = [['udp', g.udp], ['tcp', g.tcp], ['tls', g.tls]];
  const out: { server: TurnServer; addr: Address }[] = [];
  for (const [transport, addr] of pick) {
    if (!addr) continue;
    const server: TurnServer = { host: addr.ip, port: addr.port, transport };
    if (transport === 'tls' && g.tlsName) server.tls = { servername: g.tlsName };
    out.push({ server, addr });
  }
  return out;
}

/** An allocation's own end when close() came before it was kept (allocate() reports it as stopped). */
const closedWhileAllocating = (): TurnError => new TurnError(TurnErrorCode.CLOSED, 'relay manager closed while allocating');
/**
 * What ensure() rejects with when close() (the agent's stop) came while it allocated: the
 * agent's own code for a call its stop ended (devloc-agent(3) NOT_RUNNING), not a relay's error.
 */
const stopped = (): AgentError => new AgentError('NOT_RUNNING', 'the agent stopped while a relay allocation was being made');
/** Errors that say this transport does not get through (the next one may): no answer, no connection. */
const unreachable = (e: TurnError): boolean => e.code === TurnErrorCode.TIMEOUT || e.code === TurnErrorCode.CONNECTION;

export class RelayManager {
  private current: Current | undefined;
  private allocating: Promise<Address> | undefined;
  /** The client whose Allocate is in flight (close() closes it too). */
  private inFlight: TurnClient | undefined;
  /** Bumped by close(): an allocation begun before it is dropped instead of becoming `current`. */
  private epoch = 0;
  /**
   * Allocations released (lost, dropped) whose client is still closing: it waits for the
   * relay's answer to Refresh(0) up to its close timeout, which a lost relay never gives.
   * close() waits for them, so that none outlives the manager.
   */
  private readonly releasing = new Set<Promise<void>>();
  /** Relay name -> when it was lost. */
  private readonly lostAt = new Map<string, number>();
  /** `relay|transport` -> when that transport to that relay last got no connection or answer. */
  private readonly transportFailedAt = new Map<string, number>();
  /** An allocation needed TCP or TLS because UDP to the same relay got no answer (see udpBlocked). */
  private udpBlockedKnown = false;
  /** The next allocation tries UDP first although UDP is known blocked (the re-check of addressChanged). */
  private recheckUdp = false;
  readonly counters: RelayCounters = { allocations: 0, relaysLost: 0, datagramsOut: 0, datagramsIn: 0, bytesOut: 0, bytesIn: 0 };
  /** Datagrams the relay delivered from a peer (set by the peer manager). */
  onData: (from: Address, bytes: Buffer) => void = () => {};
  /** The allocation is gone (the TURN client failed): what lost() said, for the channels that used it (set by the peer manager). */
  onLost: (reason: string) => void = () => {};

  private readonly clock: TurnClock;

  constructor(private readonly host: RelayHost) {
    this.clock = host.clock ?? nodeTurnClock(Date.now);
  }

  /** Whether authd granted any relay (a relayed path is possible at all). */
  get available(): boolean {
    return this.host.grants().some((g) => serversOf(g).length > 0);
  }

  /** The relay in use, if allocated. */
  get name(): string | null {
    return this.current?.client.isAllocated ? this.current.name : null;
  }

  /** How the allocation in use reaches its relay (udp, tcp, tls), if allocated. */
  get transport(): TurnTransport | null {
    return this.current?.client.isAllocated ? this.current.transport : null;
  }

  /**
   * Whether this network lets no UDP through to the relay while TCP or TLS gets there: UDP is
   * then blocked but to the services, matching declares the terminal udp-blocked (reachable
   * through its relay only), and a peer's introduction is answered through the relay. Learnt
   * from an allocation and kept while the situation lasts, not for a while: until an allocation
   * over UDP succeeds, or our address changes (addressChanged re-checks it at once).
   */
  get udpBlocked(): boolean {
    return this.udpBlockedKnown;
  }

  /**
   * Our address changed (a new network, or the same one renumbered): what was learnt about the
   * relays (lost ones, transports that failed) belongs to the old one, and is forgotten; a
   * terminal that knew itself UDP-blocked re-checks at once (a new allocation, UDP first: the
   * old one belongs to the old address anyway) and keeps its knowledge until the answer.
   */
  addressChanged(why: string): void {
    // A relay "lost" just before (its TCP/TLS link broke with the old address) was not the
    // relay's fault: from here every relay and transport is tried again.
    this.transportFailedAt.clear();
    this.lostAt.clear();
    if (!this.udpBlockedKnown || !this.available) return;
    this.drop(why);
    this.recheckUdp = true;
    this.host.log('info', 'address changed: checking again whether UDP reaches the relay', { why });
    this.ensure().catch(() => {
      // No relay answers at all from here: not "UDP blocked but to TCP/TLS" any more.
      this.udpBlockedKnown = false;
    });
  }

  /** Relays of the grant not marked lost, after `except`. */
  private usable(): RelayGrant[] {
    const now = this.clock.now();
    return this.host.grants().filter((g) => {
      const at = this.lostAt.get(g.name);
      return serversOf(g).length > 0 && (at === undefined || now - at >= RELAY_LOST_MS);
    });
  }

  /** How many relays of the grant are left to try (not lost). */
  get remaining(): number {
    return this.usable().filter((g) => g.name !== this.current?.name).length;
  }

  /** The relayed address, allocating on the first usable relay when there is none. */
  ensure(): Promise<Address> {
    const c = this.current;
    if (c?.client.isAllocated && c.client.relayedAddress) return Promise.resolve(c.client.relayedAddress);
    this.allocating ??= this.allocate().finally(() => {
      this.allocating = undefined;
      this.recheckUdp = false;
    });
    return this.allocating;
  }

  private async allocate(): Promise<Address> {
    const epoch = this.epoch;
    const errors: string[] = [];
    for (const first of this.usable()) {
      let g = first;
      for (let attempt = 0; attempt < 2; attempt++) {
        if (g.exp * 1000 <= this.clock.now() || attempt === 1) {
          // Expired (by the grant's own expiry, or as the relay said): fresh credentials first.
          this.host.log('info', 'relay credentials expired: authenticating again', { relay: g.name });
          await this.host.reauthenticate('relay credentials expired');
          // close() came while authd was asked: nothing may be allocated for a closed manager.
          if (this.epoch !== epoch) throw stopped();
          const fresh = this.host.grants().find((x) => x.name === g.name);
          if (!fresh || fresh.exp * 1000 <= this.clock.now()) {
            errors.push(`${g.name}: credentials expired and authd gave no fresh ones`);
            break;
          }
          g = fresh;
        }
        try {
          return await this.allocateOn(g, epoch);
        } catch (err) {
          // Closed meanwhile: no next relay, and this one is not "lost".
          if (this.epoch !== epoch) throw stopped();
          const e = err instanceof TurnError ? err : new TurnError(TurnErrorCode.CONNECTION, (err as Error).message);
          if (e.code === TurnErrorCode.CREDENTIALS_EXPIRED && attempt === 0) continue;
          errors.push(`${g.name}: ${e.code} ${e.message}`);
          this.lostAt.set(g.name, this.clock.now());
          break;
        }
      }
    }
    const why = errors.length ? errors.join('; ') : this.host.grants().length ? 'every granted relay was lost recently' : 'authd granted no relay';
    this.host.log('warn', 'no relay allocation', { why });
    throw new AgentError('RELAY_UNAVAILABLE', `no relay: ${why}`);
  }

  /**
   * Allocate on relay `g` over the first of its transports that works: one that neither connects
   * nor answers within RELAY_TRANSPORT_TIMEOUT_MS is left for the next (UDP, then TCP, then TLS;
   * one that failed so in the last RELAY_LOST_MS goes last). Any other error (the relay answered:
   * a refusal, expired credentials) is the relay's, whatever the transport: thrown at once.
   */
  private async allocateOn(g: RelayGrant, epoch: number): Promise<Address> {
    const now = this.clock.now();
    // Known UDP-blocked: TCP and TLS first (a UDP attempt would cost RELAY_TRANSPORT_TIMEOUT_MS),
    // but for the re-check after an address change.
    const udpLast = this.udpBlockedKnown && !this.recheckUdp;
    const failedRecently = (t: TurnTransport): number => {
      if (t === 'udp' && udpLast) return 1;
      const at = this.transportFailedAt.get(`${g.name}|${t}`);
      return at !== undefined && now - at < RELAY_LOST_MS ? 1 : 0;
    };
    const servers = serversOf(g).sort((x, y) => failedRecently(x.server.transport) - failedRecently(y.server.transport));
    const failures: string[] = [];
    let last: TurnError | undefined;
    for (const s of servers) {
      try {
        const relayed = await this.allocateVia(g, s, epoch);
        if (s.server.transport === 'udp') this.udpBlockedKnown = false;
        else if (failedRecently('udp') || failures.some((f) => f.startsWith('udp '))) this.udpBlockedKnown = true;
        return relayed;
      } catch (err) {
        const e = err instanceof TurnError ? err : new TurnError(TurnErrorCode.CONNECTION, (err as Error).message);
        if (!unreachable(e)) throw e;
        this.transportFailedAt.set(`${g.name}|${s.server.transport}`, this.clock.now());
        failures.push(`${s.server.transport} ${e.code} ${e.message}`);
        last = e;
        if (s !== servers.at(-1)) this.host.log('info', 'relay unreachable over this transport: trying the next', { relay: g.name, transport: s.server.transport, code: e.code, err: e.message });
      }
    }
    throw new TurnError(last?.code ?? TurnErrorCode.CONNECTION, failures.join('; ') || 'no transport listed');
  }

  /** Allocate on `s`, a server of `g`, for the manager as it was at `epoch` (when ensure() began). */
  private async allocateVia(g: RelayGrant, s: { server: TurnServer; addr: Address }, epoch: number): Promise<Address> {
    // Closed since ensure() began (while authd gave fresh credentials, or while another
    // transport failed): the epoch of the whole attempt decides, not one read here.
    if (this.epoch !== epoch) throw closedWhileAllocating();
    const client = new TurnClient({
      server: s.server, credentials: { username: g.username, password: g.password },
      // A dead relay must show within seconds, not the 39.5 s of RFC 8489's defaults: a connect
      // waits on the permission (250 ms doubling, 5 retransmissions: 7.75 s).
      rtoMs: RELAY_RTO_MS, rc: RELAY_RC, tcpTimeoutMs: RELAY_TRANSPORT_TIMEOUT_MS,
      log: (msg, fields) => this.host.log('debug', msg, { relay: g.name, ...fields }),
      clock: this.clock,
      ...this.host.client,
    });
    const cur: Current = { client, name: g.name, transport: s.server.transport, server: formatAddress(s.addr), since: this.clock.now() };
    client.on('data', (from, bytes) => {
      this.counters.datagramsIn++;
      this.counters.bytesIn += bytes.length;
      this.onData(from, bytes);
    });
    // A failed refresh (the relay is gone, or a relay that checks the username's expiry on
    // every request refused it; coturn 4.6 checks it only when allocating, hence `renew`) ends
    // the allocation: its channels move at once (onLost). Expired credentials do not make the
    // relay "lost": the next ensure() authenticates again.
    const failed = (err: TurnError): void => {
      if (this.current !== cur) return;
      const expired = err.code === TurnErrorCode.CREDENTIALS_EXPIRED;
      this.onLost(this.lost(`${err.code}: ${err.message}`, !expired));
    };
    client.on('error', (err) => {
      this.host.log('warn', 'relay error', { relay: g.name, code: err.code, err: err.message });
      failed(err);
    });
    client.on('closed', (err) => {
      if (err) failed(err);
    });
    this.inFlight = client;
    let a: Awaited<ReturnType<TurnClient['allocate']>>;
    try {
      a = await client.allocate();
    } finally {
      if (this.inFlight === client) this.inFlight = undefined;
    }
    if (this.epoch !== epoch) {
      // close() came while the relay answered: the allocation must not outlive the manager.
      client.removeAllListeners('closed');
      await client.close().catch(() => {});
      throw closedWhileAllocating();
    }
    this.current = cur;
    this.counters.allocations++;
    const expiresInMs = Math.min(Math.max(g.exp * 1000 - this.clock.now(), 0), 2 ** 31 - 1);
    cur.renew = this.clock.setTimeout(() => {
      if (this.current !== cur) return;
      this.host.log('info', 'relay credentials expire: a new allocation with fresh ones', { relay: g.name });
      this.onLost(this.lost(`credentials expired at ${new Date(g.exp * 1000).toISOString()}: allocating anew with fresh ones`, false));
    }, expiresInMs);
    // The renewal alone must not keep a process alive (a real timer's handle; a fake one has no unref).
    (cur.renew as { unref?: () => void }).unref?.();
    this.host.log('info', 'relay allocated', { relay: g.name, transport: s.server.transport, relayed: formatAddress(a.relayed) });
    return a.relayed;
  }

  /** Permit the introduced peer's IP on the allocation (only that one). */
  async permit(peer: Address): Promise<void> {
    const c = this.current;
    if (!c?.client.isAllocated) throw new AgentError('RELAY_UNAVAILABLE', 'no relay allocation');
    try {
      await c.client.permit([peer]);
    } catch (err) {
      const e = err as TurnError;
      // No answer: the relay is gone (the allocation is dropped, the next ensure() takes another).
      const why = e.code === TurnErrorCode.TIMEOUT || e.code === TurnErrorCode.CONNECTION || e.code === TurnErrorCode.CLOSED ? this.lost(`${e.code}: ${e.message}`) : `${e.code ?? ''} ${e.message}`;
      throw new AgentError('RELAY_UNAVAILABLE', `relay ${c.name} did not permit ${peer.ip}: ${why}`);
    }
  }

  /** Relay one datagram to `to` (a permitted peer); false when there is no allocation or the relay refused. */
  send(to: Address, bytes: Buffer): boolean {
    const c = this.current;
    if (!c) return false;
    const r = c.client.send(to, bytes);
    if (!r.ok) return false;
    this.counters.datagramsOut++;
    this.counters.bytesOut += bytes.length;
    return true;
  }

  /**
   * The allocation is gone or stopped answering (`why`): mark the relay lost, drop the
   * allocation. Returns a sentence for the channels that used it.
   */
  lost(why: string, skip = true): string {
    const c = this.release();
    if (!c) return 'relay lost';
    // An expiry (skip false) is no lost relay: the same relay serves the next allocation.
    if (skip) {
      this.counters.relaysLost++;
      this.lostAt.set(c.name, this.clock.now());
    }
    const left = this.remaining;
    this.host.log('warn', 'relay lost', { relay: c.name, why, relaysLeft: left });
    return left > 0 ? `relay ${c.name} lost (${why}); ${left} relay${left === 1 ? '' : 's'} left` : `relay ${c.name} lost (${why}); no relay left`;
  }

  /**
   * Our address changed: the allocation belongs to the old one (the relay no longer knows us).
   * Drop it without marking the relay lost; the next ensure() allocates anew.
   */
  drop(why: string): void {
    const c = this.release();
    if (c) this.host.log('info', 'relay allocation dropped', { relay: c.name, why });
  }

  /** Forget the allocation (lost() and drop()): its renewal stops, its client closes without reporting it lost. */
  private release(): Current | undefined {
    const c = this.current;
    if (!c) return undefined;
    this.current = undefined;
    this.clock.clearTimeout(c.renew);
    c.client.removeAllListeners('closed');
    const closing: Promise<void> = c.client.close().catch(() => {}).finally(() => this.releasing.delete(closing));
    this.releasing.add(closing);
    return c;
  }

  status(): RelayAllocationStatus | null {
    const c = this.current;
    if (!c?.client.isAllocated || !c.client.relayedAddress) return null;
    const m = c.client.mappedAddress;
    return {
      relay: c.name, transport: c.transport, server: c.server, relayed: formatAddress(c.client.relayedAddress), mapped: m ? formatAddress(m) : null,
      permitted: c.client.permittedIps.length, since: new Date(c.since).toISOString(),
    };
  }

  async close(): Promise<void> {
    this.epoch++;
    const c = this.current;
    this.current = undefined;
    if (c) this.clock.clearTimeout(c.renew);
    const pending = this.inFlight;
    this.inFlight = undefined;
    await Promise.all([c?.client.close().catch(() => {}), pending?.close().catch(() => {}), ...this.releasing]);
  }
}
