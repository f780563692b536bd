// Protocol constants, each with its reason. Daemons take these as defaults and let options
// override the ones marked "configurable".

/** The only protocol version; a receiver refuses any other with UNSUPPORTED_VERSION. */
export const PROTOCOL_VERSION = 1;

/**
 * Largest datagram anyone sends or accepts. 1200 B fits the IPv6 minimum MTU (1280) minus IPv6
 * and UDP headers with room to spare, as QUIC (RFC 9000 §14) chose, so nothing is fragmented.
 */
export const MAX_DATAGRAM = 1200;

/**
 * An AUTH_REQUEST is padded to exactly this size, so the authd reply (tickets are ~250 B each)
 * is never larger than the unauthenticated request that caused it (anti-amplification).
 */
export const AUTH_REQUEST_SIZE = 1200;

/** Request IDs: 64 random bits, so an off-path attacker cannot guess one to forge a reply. */
export const REQUEST_ID_BYTES = 8;

/** Session IDs are the ticket's `cti`: 128 random bits chosen by authd. */
export const SESSION_ID_BYTES = 16;

/** Session MAC: HMAC-SHA-256 truncated to 128 bits (as in TLS/OSCORE profiles: 2^-128 forgery). */
export const MAC_BYTES = 16;

/** Locator IDs: 128-bit keyed hash of the device ID; collision-free in practice for 2^40 devices. */
export const LOCATOR_ID_BYTES = 16;

/** Peer channel IDs: 128 random bits chosen by locatord; they fill the session ID slot of peer messages. */
export const CHANNEL_ID_BYTES = 16;

/** A 32-byte channel key sealed with ChaCha20-Poly1305 (16-byte tag) in INTRODUCE_ACK and INTRO. */
export const SEALED_CHANNEL_KEY_BYTES = 48;

/**
 * Largest application payload of one DATA: a DATA with it and every header at its largest
 * (64-bit sequence numbers) stays under MAX_DATAGRAM with room to spare.
 */
export const MAX_CHANNEL_PAYLOAD = 1024;

/**
 * Keepalive on an open peer channel, seconds: below the 30 s UDP binding timeout of many home
 * NATs (RFC 4787 REQ-5 asks for at least 2 min; RFC 8445 ICE uses 15 s as well). Jittered ±10%.
 */
export const PEER_KEEPALIVE_S = 15;

/** Replay window: 64 sequence numbers, as DTLS (RFC 6347 §4.1.2.6) and IPsec use. */
export const REPLAY_WINDOW = 64;

/** Clock skew allowed on iat/nbf (ahead) and exp (behind), seconds. Configurable (Kerberos: 300 s). */
export const DEFAULT_CLOCK_SKEW_S = 300;

/** Ticket lifetime (configurable): a revoked device loses service within one lifetime. */
export const DEFAULT_TICKET_LIFETIME_S = 3600;

/** Retransmission: the first timeout T; each later one doubles (CoAP ACK_TIMEOUT). */
export const DEFAULT_RETRANSMIT_TIMEOUT_MS = 1000;
/** Retransmission: the first timeout is uniform in [T, 1.5T] (CoAP ACK_RANDOM_FACTOR). */
export const RETRANSMIT_RANDOM_FACTOR = 1.5;
/** At most 4 retransmissions (CoAP MAX_RETRANSMIT): 5 sends over 1+2+4+8+16 = 31 T at worst. */
export const MAX_RETRANSMIT = 4;

/**
 * How long a server remembers a reply to answer retransmissions: the exchange lifetime, i.e. the
 * time from first send to last retransmission at the upper random bound, plus slack.
 */
export const EXCHANGE_LIFETIME_MS = Math.ceil(
  DEFAULT_RETRANSMIT_TIMEOUT_MS * RETRANSMIT_RANDOM_FACTOR * (2 ** (MAX_RETRANSMIT + 1) - 1),
) + 2000;

/** Deepest nesting of arrays and maps a decoder accepts, the envelope array being level 1; deeper is TOO_LARGE (see ENCODING). */
export const MAX_DEPTH = 8;
/** Most data items in one datagram, every array, map, key, value and element counted once; more is TOO_LARGE (see ENCODING). */
export const MAX_ITEMS = 600;

/** Default UDP ports. */
export const DEFAULT_PORTS = {
  authd: 4700,
  locatord: 4701,
  reflector: 4702,
  matchd: 4703,
} as const;

/**
 * Default service IDs (ticket audiences, the "devloc-session-v1 " info of the session keys) of
 * the two session services. A service's ID is whatever its service key file says (devloc keygen
 * --service); these are the names the tools make and the agent asks for by default.
 */
export const DEFAULT_SERVICE_IDS = {
  locatord: 'locator',
  matchd: 'match',
} as const;

/**
 * Refresh interval suggested to a terminal behind NAT: 25 s keeps a typical 30 s UDP binding
 * alive (RFC 4787 REQ-5 asks for >= 2 min, many home routers use 30 s). Jittered ±20% by the agent.
 */
export const NAT_REFRESH_S = 25;
/** Refresh interval for a terminal with a public address: only the TTL matters. */
export const OPEN_REFRESH_S = 300;
/** TTL granted is at least this multiple of the refresh interval: 3 refreshes may be lost. */
export const TTL_PER_REFRESH = 3.5;

/** Network modes (registration field), in the order of how reachable a terminal is. */
export const NetMode = {
  UNKNOWN: 0,
  /** Public address on an interface: anyone can send to it. */
  OPEN: 1,
  /** Endpoint-independent mapping and filtering ("full cone"). */
  FULL_CONE: 2,
  /** Endpoint-independent mapping, address-dependent filtering. */
  RESTRICTED: 3,
  /** Endpoint-independent mapping, address-and-port-dependent filtering. */
  PORT_RESTRICTED: 4,
  /** Endpoint-dependent mapping ("symmetric"). */
  SYMMETRIC: 5,
  /** No UDP reaches the reflector. */
  UDP_BLOCKED: 6,
} as const;
export type NetMode = (typeof NetMode)[keyof typeof NetMode];
export const netModeNames: Record<number, string> = Object.fromEntries(
  Object.entries(NetMode).map(([k, v]) => [v, k.toLowerCase().replace('_', '-')]),
);

/** Visibility of a terminal's address to queries. */
export const Visibility = {
  /** Any authenticated terminal that knows the locator ID (the patent's default). */
  ANYONE: 0,
  /** Only members of a group the terminal is in, and IDs on its allow-list. */
  GROUPS_AND_ALLOWED: 1,
} as const;
export type Visibility = (typeof Visibility)[keyof typeof Visibility];
