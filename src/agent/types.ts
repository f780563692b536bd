// The agent library's public types (options, status, events, query results), apart from the
// modules that implement them so that the facade (agent.ts), the registration loop
// (registration.ts) and the queries (queries.ts) share them without importing each other.
import type { Address } from '../wire/addr.js';
import type { AuthdPublicKey, DeviceIdentity } from './identity.js';
import type { InterfaceSource } from './interfaces.js';
import type { MatchClientOptions, MatchResult } from './match.js';
import type { AddressBook } from './peers.js';
import type { Channel, ChannelSummary } from './channel.js';
import type { PeerOptions, RelayChannelCounters } from './punch.js';
import type { RelayAllocationStatus, RelayCounters } from './relay.js';
import type { AgentLog } from './errors.js';
import type { PresenceRecord } from '../wire/catalog.js';

export type AgentState =
  | 'stopped'
  | 'authenticating'
  | 'registering'
  | 'registered'
  | 'retrying'
  | 'stopping';

export interface AgentOptions {
  identity: DeviceIdentity;
  authd: Address;
  authdKey: AuthdPublicKey;
  /** Services to get tickets for; the first one is locatord's (default ["locator", "match"]). */
  audiences?: string[];
  /** locatord's address; default: the address authd puts in the grant. */
  locatord?: Address;
  /** Matching (match.ts): matchd's address (default: from the "match" grant), tuning. */
  match?: MatchClientOptions;
  /** NAT reflector; undefined: locatord's host on port 4702; null: do not classify. */
  reflector?: Address | null;
  /**
   * Local address of the UDP socket, a literal IP (default: any address of authd's family,
   * ephemeral port): {host, port}, or an Address {ip, port} as parseAddress gives it.
   */
  bind?: { host: string; port: number } | Address;
  nickname?: string;
  /**
   * Groups to join with the first REGISTER (REGISTER joinGroups, at most 4; a closed group with
   * its join code, proven in the session, never sent). Once joined (membership is durable) they
   * are not sent again; refused (no such group, wrong code, full), the agent registers without.
   * A group ID is 16 bytes or 32 hex digits (what groupCreate returns).
   */
  joinGroups?: { groupId: Uint8Array | string; joinCode?: string }[];
  /**
   * Locator IDs that may always see this terminal (REGISTER allow, at most 32; matters with
   * visibility 1): 16 bytes or 32 hex digits each.
   */
  allow?: (Uint8Array | string)[];
  mediaId?: string;
  /** 0 anyone with the ID (default), 1 groups and allow-list only. */
  visibility?: number;
  /** TTL to ask for, seconds (the server clamps it). */
  ttlS?: number;
  /** Refresh at least this often, seconds, whatever the server suggests (0: as the server says). */
  maxRefreshS?: number;
  /** How often to look at the interfaces, ms (default 3000). */
  interfacePollMs?: number;
  /** Retransmission timeout T, ms (default 1000; CoAP-style doubling, 4 retransmissions). */
  retransmitMs?: number;
  /** Backoff bounds while a server is unreachable, ms (default 1000 .. 60000). */
  backoffMinMs?: number;
  backoffMaxMs?: number;
  /** Retry a classification that got no usable answer after this long, ms (default 300000). */
  reclassifyMs?: number;
  /** Fraction of the ticket lifetime after which it is renewed (default 0.8, ±0.05 jitter). */
  renewFraction?: number;
  /** Address book for nicknames (lookup/online/group accept them where an ID is expected). */
  peers?: AddressBook;
  /**
   * Add the partners of a match to the address book under their nicknames (the patent: the
   * terminal memorises the partner's nickname with its locator ID); default true. A name
   * already in the book, or a partner already named there, is left as it is.
   */
  savePartners?: boolean;
  log?: AgentLog;
  now?: () => number;
  random?: () => number;
  interfaces?: InterfaceSource;
  /** Accept introductions: peers that may see this terminal can open channels to it (default false). */
  reachable?: boolean;
  /** Peer channels (punch.ts): punch timeout, keepalive. */
  peer?: PeerOptions;
}

export interface RegistrationInfo {
  locatorId: string;
  observed: string;
  ttlS: number;
  refreshS: number;
  netMode: string;
  locatord: string;
}

export interface AgentStatus {
  state: AgentState;
  registered: boolean;
  locatorId: string | null;
  observed: string | null;
  netMode: string;
  netModeReason: string | null;
  localPort: number | null;
  localAddrs: string[];
  authd: string;
  locatord: string | null;
  reflector: string | null;
  registeredAt: string | null;
  lastRefreshAt: string | null;
  nextRefreshAt: string | null;
  expiresAt: string | null;
  ttlS: number | null;
  refreshS: number | null;
  ticketExpiresAt: string | null;
  ticketRenewAt: string | null;
  retryAt: string | null;
  /** The step's request while it goes unanswered: datagrams sent so far (1 + retransmissions), since when. */
  attempt: { step: string; to: string; sent: number; since: string } | null;
  lastError: { step: string; error: string; at: string } | null;
  /** TURN relays authd granted credentials for (never the credentials themselves). */
  relays: RelayStatus[];
  /** The agent's TURN allocation, when it made one (relayed channels; relay.ts). */
  relayAllocation: RelayAllocationStatus | null;
  /** Relayed channels, bytes and upgrades to direct, and the allocation's counters. */
  relayCounters: RelayChannelCounters & RelayCounters;
  counters: AgentCounters;
  /** Peer channels: open and punching ones, then the last closed or failed (with the reason). */
  channels: ChannelSummary[];
}

export interface RelayStatus {
  name: string;
  udp: string | null;
  tcp: string | null;
  tls: string | null;
  credentialsExpireAt: string;
}

export interface AgentCounters {
  authentications: number;
  registrations: number;
  refreshes: number;
  probesAnswered: number;
  failures: number;
  addressChanges: number;
}

export interface LookupEntry {
  target: string;
  id: string;
  online: boolean;
  addr?: string;
  localAddrs?: string[];
  netMode?: string;
  nickname?: string;
  mediaId?: string;
  /** Address book names of this ID. */
  names: string[];
}

export interface GroupMembers {
  groupId: string;
  name?: string;
  total: number;
  members: { id: string; online: boolean; addr?: string; nickname?: string; netMode?: string; names: string[] }[];
}

/** One watched terminal's status as the agent reports it. */
export interface PresenceStatus {
  id: string;
  names: string[];
  online: boolean;
  nickname?: string;
  presence?: PresenceRecord;
}

export interface AgentEvents {
  state: [state: AgentState, previous: AgentState];
  registered: [info: RegistrationInfo];
  refreshed: [info: RegistrationInfo];
  address: [observed: string, previous: string | null];
  netmode: [mode: string, reason: string];
  problem: [step: string, error: string];
  /** A match request ended (matched, no-match, cancelled). */
  match: [result: MatchResult];
  /** What a watched terminal shows changed (a PRESENCE push), or was seen again after a re-watch. */
  presence: [status: PresenceStatus];
  /** The allow list changed (changeAllow): the IDs (hex) now on it, for whoever keeps it (the daemon: allow.json). */
  allow: [ids: string[]];
  /** A peer opened a channel to us (we are reachable). */
  channel: [channel: Channel];
  stopped: [];
  /** An exception thrown by a listener of another event (caught; the agent keeps running). */
  error: [err: Error];
}
