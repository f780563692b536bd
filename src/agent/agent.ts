// The client terminal of the patent (Fig. 8) as a library: `Agent` is a facade over the
// concepts it is made of, each in its own module:
//   - registration.ts: the loop that authenticates, classifies the network, registers with
//     locatord and keeps the registration true (address changes, ticket renewal, restarts);
//   - queries.ts: lookup, online status and groups, with one paging helper;
//   - match.ts: matching with devloc-matchd;
//   - punch.ts and channel.ts: introductions and direct channels to peers.
// All of them share the registration's one UDP socket and its sessions; events of all of them
// are the Agent's (types.ts), and a listener that throws is logged, not fatal (emitter.ts).
import type { RelayGrant, TicketGrant } from '../wire/catalog.js';
import type { Reply } from '../net/client.js';
import { SafeEmitter } from './emitter.js';
import { MatchClient } from './match.js';
import { PeerManager } from './punch.js';
import type { RelayPolicy } from './punch.js';
import { RelayManager } from './relay.js';
import { nodeTurnClock } from './turn/client.js';
import { LocatorQueries } from './queries.js';
import { PresenceWatch } from './presence.js';
import type { PresenceStatus } from './presence.js';
import type { PresenceRecord, Requirement } from '../wire/catalog.js';
import { MAX_ALLOW } from '../wire/catalog.js';
import { NetMode } from '../wire/constants.js';
import { AgentError } from './errors.js';
import { formatId } from './ids.js';
import { checkOptions } from './options.js';
import { Registration } from './registration.js';
import type { Channel } from './channel.js';
import type { AgentCounters, AgentEvents, AgentOptions, AgentState, AgentStatus, GroupMembers, LookupEntry } from './types.js';
import type { ClientSession } from '../net/clientsession.js';

// Where the public API used to live: importers of src/agent/agent.ts keep working.
export type {
  AgentCounters, AgentEvents, AgentOptions, AgentState, AgentStatus, GroupMembers, LookupEntry, RegistrationInfo,
} from './types.js';
export type { AgentLog, LogLevel } from './errors.js';
export { AgentError } from './errors.js';

export class Agent extends SafeEmitter<AgentEvents> {
  /** Matching with devloc-matchd over this agent's socket and tickets (match.ts). */
  readonly match: MatchClient;
  /** Introductions and direct channels to peers (punch.ts, channel.ts). */
  readonly punch: PeerManager;
  /** Watched terminals and our own presence record (presence.ts). */
  readonly presence: PresenceWatch;
  /** The TURN allocation relayed channels use (relay.ts). */
  readonly relay: RelayManager;
  private readonly registration: Registration;
  private readonly queries: LocatorQueries;

  /**
   * Throws AgentError('BAD_REQUEST') naming the option when a required one (identity, authd,
   * authdKey) is missing or an option has the wrong shape (options.ts).
   */
  constructor(options: AgentOptions) {
    const opts = checkOptions(options);
    const log = opts.log ?? (() => {});
    super(log);
    const reg = new Registration(opts, this, {
      attach: (socket) => this.punch.attach(socket),
      push: (r: Reply) => this.match.onPush(r) || this.punch.onPush(r) || this.presence.onPush(r),
    });
    this.registration = reg;
    this.queries = new LocatorQueries({
      ready: (ms) => reg.ready(ms),
      call: (session, name, body, expect) => reg.call(session, name, body, expect),
      sessionLost: (needTicket) => reg.sessionLost(needTicket),
    }, opts.peers);
    this.match = new MatchClient({
      client: () => reg.client,
      session: (aud) => reg.sessionFor(aud),
      ready: async (ms) => {
        await reg.ready(ms);
      },
      recheckGrant: (aud, ms) => reg.recheckGrant(aud, ms),
      // UDP that reaches the services but not the relay (it took TCP or TLS): matchd must not
      // count on a direct path to us; udp-blocked with a TCP/TLS relay is matched relayed.
      netMode: () => (this.relay.udpBlocked ? NetMode.UDP_BLOCKED : reg.wireNetMode()),
      relays: () => reg.relays,
      netModeSettled: () => reg.netModeSettled,
      stopSignal: () => reg.stopSignal,
      locatorId: () => reg.locatorIdHex,
      names: (id) => opts.peers?.namesOf(id) ?? [],
      ...(opts.nickname ? { nickname: opts.nickname } : {}),
      ...(opts.visibility !== undefined ? { visibility: opts.visibility } : {}),
      emit: (r) => this.emit('match', r),
      now: reg.now,
      log,
    }, { retransmitMs: opts.retransmitMs ?? 1000, ...opts.match });
    this.relay = new RelayManager({
      grants: () => reg.relays,
      reauthenticate: (reason) => reg.reauthenticate(reason, 10_000),
      log, clock: nodeTurnClock(reg.now),
    });
    this.punch = new PeerManager({
      relay: this.relay,
      send: (to, bytes) => reg.client?.send(to, bytes),
      locatord: () => reg.locatordAddress,
      sessions: () => reg.sessions(),
      introduce: async (body) => {
        let session: ClientSession | undefined;
        const ack = await this.queries.query('INTRODUCE', (s) => ((session = s), body), 'INTRODUCE_ACK');
        return { ack, session: session! };
      },
      resolve: (target) => this.queries.resolveTarget(target),
      names: (id) => this.queries.namesOf(id),
      netMode: () => reg.wireNetMode(),
      localAddrs: () => reg.localAddrs(),
      reachable: () => opts.reachable === true,
      incoming: (ch) => this.emit('channel', ch),
      log, now: reg.now, random: reg.random,
    }, opts.peer);
    this.presence = new PresenceWatch({
      queries: this.queries, locatord: () => reg.locatordAddress, sessions: () => reg.sessions(),
      send: (to, bytes) => reg.client?.send(to, bytes), emit: (s) => this.emit('presence', s), log,
      mediaId: opts.mediaId, registered: () => reg.isRegistered,
    });
    // Every REGISTER carries our presence record, so a re-registration keeps it.
    reg.presenceRecord = () => this.presence.own;
    // locatord forgets a watch list with the registration: watch again after each REGISTER, and
    // check now and then (on refreshes) that it still holds it (a restart keeps registrations).
    this.on('registered', () => void this.presence.resync(true));
    this.on('refreshed', () => void this.presence.resync(false));
    // Partners of a match into the address book under their nicknames (opt-out: savePartners).
    if (opts.peers && opts.savePartners !== false) {
      const book = opts.peers;
      this.on('match', (r) => {
        if (r.state !== 'matched' || !r.members) return;
        try {
          const added = book.addPartners(r.members);
          if (added.length > 0) log('info', 'partners saved in the address book', { names: added.map((e) => e.name) });
        } catch (err) {
          log('warn', 'partners not saved', { err: (err as Error).message });
        }
      });
    }
    // A new address (NAT rebinding, new network): matchd must learn it before it pushes results.
    this.on('address', (_now, previous) => {
      if (previous === null) return;
      this.match.addressChanged();
      // Open channels re-introduce themselves (punch.ts); after this handler, once the
      // registration sequence this change starts is under way (their INTRODUCE waits for it).
      // The relay first: a UDP-blocked terminal re-checks (a new allocation), which the
      // channels' re-introductions then share.
      setImmediate(() => {
        // stop() may have come in between: a stopping or stopped agent allocates nothing (the
        // relay manager's close() may be behind it already) and re-introduces nothing.
        if (this.registration.stopSignal.aborted) return;
        this.relay.addressChanged(`address changed from ${previous}`);
        this.punch.addressChanged(`address changed from ${previous}`);
      });
    });
  }

  get state(): AgentState {
    return this.registration.state;
  }

  /** The terminal's locator ID (hex), once authd has granted it. */
  get locatorIdHex(): string | null {
    return this.registration.locatorIdHex;
  }

  get isRegistered(): boolean {
    return this.registration.isRegistered;
  }

  /** The UDP socket's local port (the one registered). */
  get localPort(): number | null {
    return this.registration.localPort;
  }

  /** Ticket grants for audiences other than locatord's (e.g. matchd), as authd issued them. */
  get extraGrants(): readonly TicketGrant[] {
    return this.registration.extraGrants;
  }

  /** TURN relays authd granted credentials for (the grant's `relays`; see devloc-protocol(7) RELAYS). */
  get relays(): readonly RelayGrant[] {
    return this.registration.relays;
  }

  get counters(): AgentCounters {
    return this.registration.counters;
  }

  /** Open the socket and start the automatic sequence. Resolves once the socket is bound. */
  start(): Promise<void> {
    return this.registration.start();
  }

  /** Stop: unregister (unless `unregister` is false), close the socket. */
  async stop(o: { unregister?: boolean } = {}): Promise<void> {
    if (!(await this.registration.halt())) return;
    await this.match.stop();
    this.punch.closeAll('agent stopping');
    this.punch.detach();
    await this.relay.close();
    await this.registration.close(o);
    this.emit('stopped');
  }

  status(): AgentStatus {
    return {
      ...this.registration.status(), relayAllocation: this.relay.status(), relayCounters: { ...this.punch.relayCountersNow(), ...this.relay.counters },
      channels: this.punch.list(),
    };
  }

  /**
   * Authenticate again now, to pick up services added to authd since the last grant (the
   * daemon does it on SIGHUP). Resolves with whether authd granted within `timeoutMs` (0: do not wait).
   */
  reauthenticate(reason = 'requested', timeoutMs = 0): Promise<boolean> {
    return this.registration.reauthenticate(reason, timeoutMs);
  }

  /** Tell the agent its address may have changed (e.g. an application saw a link change). */
  addressChanged(reason = 'requested'): void {
    this.registration.addressChanged(reason);
  }

  /**
   * A direct datagram channel to a peer (locator ID or address-book name), open once this
   * resolves (punch.ts). Rejects with AgentError: PEER_UNAVAILABLE, NO_DIRECT_PATH, PUNCH_FAILED.
   */
  connect(peer: string | Uint8Array, o: { reuse?: boolean; relay?: RelayPolicy } = {}): Promise<Channel> {
    return this.punch.connect(peer, o);
  }

  /** A locator ID, group ID or address book name to 16 bytes. */
  resolveTarget(target: string | Uint8Array): Buffer {
    return this.queries.resolveTarget(target);
  }

  /** Current addresses of peers (QUERY_ADDR), by locator ID or nickname, in request order. */
  lookup(targets: (string | Uint8Array)[]): Promise<LookupEntry[]> {
    return this.queries.lookup(targets);
  }

  /** Online status of peers (QUERY_STATUS), in request order. */
  online(targets: (string | Uint8Array)[]): Promise<{ target: string; id: string; online: boolean; names: string[] }[]> {
    return this.queries.online(targets);
  }

  /** Watch peers (IDs or names): their status now; changes come as `presence` events. */
  watch(targets: (string | Uint8Array)[]): Promise<PresenceStatus[]> {
    return this.presence.watch(targets);
  }

  unwatch(targets: (string | Uint8Array)[] | 'all'): Promise<{ watching: number }> {
    return this.presence.unwatch(targets);
  }

  /** Replace this terminal's presence record (media ID, looking for a partner, wanted attributes, status). */
  setPresence(record: PresenceRecord): Promise<PresenceRecord> {
    return this.presence.set(record);
  }

  /** The allow list: locator IDs (hex) that may always see this terminal (with visibility "groups"). */
  get allow(): string[] {
    return this.registration.allow;
  }

  /**
   * Add or remove IDs (or names) on the allow list (at most 32); locatord learns it from a new
   * REGISTER, sent now. Kept until the agent stops; the `allow` event tells whoever keeps it
   * longer (devloc-agent keeps it in its state directory).
   */
  changeAllow(add: (string | Uint8Array)[], remove: (string | Uint8Array)[] = []): string[] {
    const gone = new Set(remove.map((x) => formatId(this.queries.resolveTarget(x))));
    const next = [...new Set([...this.allow, ...add.map((x) => formatId(this.queries.resolveTarget(x)))])].filter((h) => !gone.has(h));
    if (next.length > MAX_ALLOW) throw new AgentError('BAD_REQUEST', `at most ${MAX_ALLOW} IDs on the allow list`);
    this.registration.setAllow(next.map((h) => Buffer.from(h, 'hex')));
    this.emit('allow', next);
    return next;
  }

  /** Change the media ID at run time (re-registration keeps it; PRESENCE_SET now when registered). */
  setMedia(mediaId: string): Promise<PresenceRecord> {
    return this.presence.setMedia(mediaId);
  }

  /** Partner search: terminals looking for a partner with `mediaId` (default: ours) whose wants satisfy `requirements`. */
  search(requirements: Requirement[] = [], mediaId?: string): Promise<PresenceStatus[]> {
    return this.presence.search(requirements, mediaId ?? this.presence.mediaId);
  }

  groupCreate(name: string, joinCode?: string): Promise<{ groupId: string }> {
    return this.queries.groupCreate(name, joinCode);
  }

  groupJoin(group: string | Uint8Array, joinCode?: string): Promise<{ groupId: string }> {
    return this.queries.groupJoin(group, joinCode);
  }

  groupLeave(group: string | Uint8Array): Promise<{ groupId: string }> {
    return this.queries.groupLeave(group);
  }

  groupMembers(group: string | Uint8Array): Promise<GroupMembers> {
    return this.queries.groupMembers(group);
  }
}
