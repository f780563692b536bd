// The message catalog: every devloc message in one table. The codec, `devloc decode`, the man
// page (devloc-protocol.7) and the Wireshark dissector are all checked against this table.
//
// Numbering: requests are even, their responses are request + 1 (odd). Server-initiated
// messages (PROBE, INTRO, MATCH_RESULT) follow the same rule with the terminal answering.
// 0x7_ are peer messages, sent terminal to terminal on a channel that locatord introduced.
import type { BodyOf, Field, FieldType } from './schema.js';
import type { ErrorCode } from './errors.js';
import { CHANNEL_ID_BYTES, LOCATOR_ID_BYTES, MAX_CHANNEL_PAYLOAD, MAX_DATAGRAM, SEALED_CHANNEL_KEY_BYTES } from './constants.js';

export const MessageType = {
  AUTH_REQUEST: 0x02,
  AUTH_RESPONSE: 0x03,
  // issue 19: revocation pushed by authd to the services (one block).
  REVOKE: 0x08,
  REVOKE_ACK: 0x09,
  // issue 15 item 3: session address validation (devloc-protocol(7), ADDRESS VALIDATION).
  ADDR_CHALLENGE: 0x0a,
  ADDR_PROOF: 0x0b,
  REGISTER: 0x10,
  REGISTER_ACK: 0x11,
  REFRESH: 0x12,
  REFRESH_ACK: 0x13,
  UNREGISTER: 0x14,
  UNREGISTER_ACK: 0x15,
  QUERY_ADDR: 0x20,
  QUERY_ADDR_RESULT: 0x21,
  QUERY_STATUS: 0x22,
  QUERY_STATUS_RESULT: 0x23,
  WATCH: 0x24,
  WATCH_ACK: 0x25,
  UNWATCH: 0x26,
  UNWATCH_ACK: 0x27,
  PRESENCE_SET: 0x28,
  PRESENCE_SET_ACK: 0x29,
  PRESENCE: 0x2a,
  PRESENCE_ACK: 0x2b,
  SEARCH: 0x2c,
  SEARCH_RESULT: 0x2d,
  GROUP_CREATE: 0x30,
  GROUP_CREATE_ACK: 0x31,
  GROUP_JOIN: 0x32,
  GROUP_JOIN_ACK: 0x33,
  GROUP_LEAVE: 0x34,
  GROUP_LEAVE_ACK: 0x35,
  GROUP_MEMBERS: 0x36,
  GROUP_MEMBERS_RESULT: 0x37,
  PROBE: 0x40,
  PROBE_ACK: 0x41,
  INTRODUCE: 0x42,
  INTRODUCE_ACK: 0x43,
  INTRO: 0x44,
  INTRO_ACK: 0x45,
  REFLECT: 0x50,
  REFLECT_RESULT: 0x51,
  MATCH_SUBMIT: 0x60,
  MATCH_SUBMIT_ACK: 0x61,
  MATCH_STATUS: 0x62,
  MATCH_STATUS_RESULT: 0x63,
  MATCH_CANCEL: 0x64,
  MATCH_CANCEL_ACK: 0x65,
  MATCH_RESULT: 0x66,
  MATCH_RESULT_ACK: 0x67,
  PUNCH: 0x70,
  PUNCH_ACK: 0x71,
  DATA: 0x72,
  DATA_ACK: 0x73,
  ERROR: 0x7f,
} as const;
export type MessageType = (typeof MessageType)[keyof typeof MessageType];
export type MessageName = keyof typeof MessageType;

/**
 * How a message is authenticated:
 * - none: no authentication (replies are never larger than the request);
 * - sealed: body encrypted to a static key (AUTH_REQUEST to authd; AUTH_RESPONSE back);
 * - session: envelope carries [session ID, sequence, MAC] under the session key (for peer
 *   messages: [channel ID, sequence, MAC] under the channel's key, see src/wire/peer.ts).
 */
export type AuthKind = 'none' | 'sealed' | 'session';
export type Direction = 'terminal->authd' | 'authd->terminal' | 'terminal->server' | 'server->terminal' | 'terminal->terminal' | 'authd->server' | 'server->authd';
/** `peer`: no server; sent between two terminals (either may send it). */
export type Service = 'authd' | 'locatord' | 'reflector' | 'matchd' | 'peer' | 'any';

/** A refusal a request's server answers beyond the checks every datagram goes through (devloc-protocol(7), Order of checks). */
export interface RefusalSpec {
  readonly code: keyof typeof ErrorCode;
  /** When, in protocol terms (and retryAfterMs when it is set). */
  readonly when: string;
}

export interface MessageSpec {
  readonly name: MessageName;
  readonly direction: Direction;
  readonly service: Service;
  readonly auth: AuthKind;
  readonly doc: string;
  /** A request's own refusals (devloc-protocol(7) MESSAGES, "Refusals"); every request a server serves lists them, [] for none. */
  readonly refusals?: readonly RefusalSpec[];
  readonly fields: readonly Field[];
}

// Reusable field types.
const locatorId = { t: 'bstr', min: LOCATOR_ID_BYTES, max: LOCATOR_ID_BYTES } as const satisfies FieldType;
const groupId = { t: 'bstr', min: 16, max: 16 } as const satisfies FieldType;
const codeNonce = { t: 'bstr', min: 16, max: 16 } as const satisfies FieldType;
const codeProof = { t: 'bstr', min: 32, max: 32 } as const satisfies FieldType;
const matchId = { t: 'bstr', min: 8, max: 8 } as const satisfies FieldType;
const key32 = { t: 'bstr', min: 32, max: 32 } as const satisfies FieldType;
const nickname = { t: 'tstr', max: 32 } as const satisfies FieldType;
const mediaId = { t: 'tstr', max: 64 } as const satisfies FieldType;
const netMode = { t: 'uint', max: 6 } as const satisfies FieldType;
const cursor = { t: 'uint' } as const satisfies FieldType;
const ticket = { t: 'bstr', max: 600 } as const satisfies FieldType;
const padding = { t: 'bstr', max: MAX_DATAGRAM } as const satisfies FieldType;
const channelId = { t: 'bstr', min: CHANNEL_ID_BYTES, max: CHANNEL_ID_BYTES } as const satisfies FieldType;
const localAddrs = { t: 'array', of: { t: 'addr' }, max: 4 } as const satisfies FieldType;

/**
 * The refusals of a session-opening message (REGISTER, MATCH_SUBMIT: SESSIONS, Opening), one
 * list for both; `timeMs` ends CLOCK_SKEW's condition, which differs by whether timeMs is required.
 */
function sessionOpeningRefusals(timeMs: string): RefusalSpec[] {
  return [
    { code: 'NO_SESSION', when: 'the server does not hold the session and the body carries no ticket (SESSIONS, Opening)' },
    { code: 'BAD_TICKET', when: 'the ticket does not parse, names an unknown kid, does not verify, has malformed claims or a cti other than the session ID, or its cnf key is unusable' },
    { code: 'WRONG_AUDIENCE', when: 'the ticket\'s aud is not this service\'s ID' },
    { code: 'TICKET_EXPIRED', when: 'the ticket\'s exp plus the clock skew (300 s by default) has passed' },
    { code: 'CLOCK_SKEW', when: `the ticket's iat is ahead of the server's clock by more than the skew, ${timeMs}` },
    { code: 'BAD_MAC', when: 'the datagram\'s MAC does not verify under the keys the ticket gives' },
  ];
}

/** The refusal of a request charged to locatord's lookup budgets (QUERY_ADDR, QUERY_STATUS, WATCH, GROUP_MEMBERS). */
const LOOKUP_REFUSAL: RefusalSpec = {
  code: 'RATE_LIMITED', when: 'retryAfterMs: the IDs this answer carries are over the source\'s or the terminal\'s lookup budget (see devloc-locatord(8)); an answer of no entries is free',
};

/** Largest batch in one QUERY_ADDR / QUERY_STATUS request (each ID costs 17 B). */
export const MAX_QUERY_IDS = 64;

const queryAddrEntry = [
  { key: 1, name: 'id', type: locatorId, required: true, doc: 'locator ID asked about' },
  { key: 2, name: 'online', type: { t: 'bool' }, required: true, doc: 'false for unknown, expired or not visible (indistinguishable)' },
  { key: 3, name: 'addr', type: { t: 'addr' }, doc: 'observed (public) address, when online' },
  { key: 4, name: 'localAddrs', type: { t: 'array', of: { t: 'addr' }, max: 4 }, doc: 'self-reported LAN addresses' },
  { key: 5, name: 'netMode', type: netMode, doc: 'network mode (see NETWORK MODES)' },
  { key: 6, name: 'nickname', type: nickname, doc: 'nickname the terminal registered' },
  { key: 7, name: 'mediaId', type: mediaId, doc: 'media ID the terminal registered' },
] as const satisfies readonly Field[];

/** Most locator IDs on a terminal's allow list (REGISTER allow). */
export const MAX_ALLOW = 32;
/** Most groups one REGISTER joins (REGISTER joinGroups). */
export const MAX_JOIN_GROUPS = 4;
/** Most locator IDs one terminal watches (WATCH): a bound on a watcher's state and on fan-out. */
export const MAX_WATCHES = 256;
/** Longest presence status text, bytes (UTF-8). */
export const MAX_STATUS_BYTES = 64;

/**
 * Rich presence (the patent's community field, made explicit): what a terminal says about
 * itself to those who may see it. Bounded: at most 64 + 1 + 8 x (16 + 64) + 64 B of content.
 */
const presenceRecord = [
  { key: 1, name: 'mediaId', type: mediaId, doc: 'game/media ID in use (the same as REGISTER mediaId)' },
  { key: 2, name: 'lookingForPartner', type: { t: 'bool' }, doc: 'true: the user wants a partner' },
  { key: 3, name: 'wants', type: { t: 'props', max: 8 }, doc: "the wanted partner's attributes (names as in matchd requirements)" },
  { key: 4, name: 'status', type: { t: 'tstr', max: MAX_STATUS_BYTES }, doc: 'short status text' },
] as const satisfies readonly Field[];
/** The presence record's fields (REGISTER presence, PRESENCE_SET): what the agent checks a record against. */
export const presenceRecordFields: readonly Field[] = presenceRecord;

/** Candidates one SEARCH examines at most (a bound on the work of one request; the rest is paged). */
export const MAX_SEARCH_SCAN = 64;

/** One watched terminal as the watcher may see it (WATCH_ACK entries, PRESENCE pushes). */
const presenceEntry = [
  { key: 1, name: 'id', type: locatorId, required: true, doc: 'locator ID watched' },
  { key: 2, name: 'online', type: { t: 'bool' }, required: true, doc: 'false for unknown, expired or not visible (indistinguishable)' },
  { key: 3, name: 'nickname', type: nickname, doc: 'when online: nickname the terminal registered' },
  { key: 4, name: 'presence', type: { t: 'struct', fields: presenceRecord }, doc: 'when online: its presence record' },
] as const satisfies readonly Field[];

const memberEntry = [
  { key: 1, name: 'id', type: locatorId, required: true, doc: 'member locator ID' },
  { key: 2, name: 'online', type: { t: 'bool' }, required: true, doc: 'whether the member is registered now' },
  { key: 3, name: 'addr', type: { t: 'addr' }, doc: 'observed address, when online' },
  { key: 4, name: 'nickname', type: nickname, doc: 'nickname, when online' },
  { key: 5, name: 'netMode', type: netMode, doc: 'network mode, when online' },
] as const satisfies readonly Field[];

const ticketGrant = [
  { key: 1, name: 'aud', type: { t: 'tstr', max: 64 }, required: true, doc: 'service ID the ticket is for' },
  { key: 2, name: 'ticket', type: ticket, required: true, doc: 'the ticket: COSE_Sign1 CWT' },
  { key: 3, name: 'serviceKey', type: key32, required: true, doc: "service's X25519 public key (session key agreement)" },
  { key: 4, name: 'exp', type: { t: 'uint' }, required: true, doc: 'ticket expiry, seconds since the epoch' },
  { key: 5, name: 'addr', type: { t: 'addr' }, doc: "service's address, if authd knows it" },
] as const satisfies readonly Field[];

const requirement = [
  { key: 1, name: 'attr', type: { t: 'tstr', max: 32 }, required: true, doc: 'attribute name' },
  { key: 2, name: 'op', type: { t: 'uint', max: 2 }, required: true, doc: '0 equal, 1 numeric range, 2 member of set' },
  { key: 3, name: 'value', type: { t: 'tstr', max: 64 }, doc: 'op 0: value as text (numbers in decimal)' },
  { key: 4, name: 'min', type: { t: 'uint' }, doc: 'op 1: lowest allowed' },
  { key: 5, name: 'max', type: { t: 'uint' }, doc: 'op 1: highest allowed' },
  { key: 6, name: 'set', type: { t: 'array', of: { t: 'tstr', max: 64 }, max: 16 }, doc: 'op 2: allowed values' },
  { key: 7, name: 'mandatory', type: { t: 'bool' }, doc: 'true: must hold; false/absent: preferred' },
] as const satisfies readonly Field[];

const matchMember = [
  { key: 1, name: 'id', type: locatorId, required: true, doc: 'member locator ID, or a random alias for a member that submitted visibility 1' },
  { key: 2, name: 'nickname', type: nickname, doc: 'member nickname (never for a hidden member)' },
  { key: 3, name: 'netMode', type: netMode, required: true, doc: 'member network mode' },
  { key: 4, name: 'addr', type: { t: 'addr' }, required: true, doc: "source address of the member's latest authenticated datagram to matchd (never a claimed one)" },
  { key: 5, name: 'path', type: { t: 'uint', max: 3 }, doc: "the member's path to the host: 1 lan (same observed IP), 2 direct, 3 relay (TURN); absent on the host's own entry" },
] as const satisfies readonly Field[];

const registrationAck = [
  { key: 1, name: 'observed', type: { t: 'addr' }, required: true, doc: 'source address the server saw (what others reach)' },
  { key: 2, name: 'ttlS', type: { t: 'uint' }, required: true, doc: 'granted TTL, seconds (clamped by the server)' },
  { key: 3, name: 'refreshS', type: { t: 'uint' }, required: true, doc: 'refresh interval the terminal should use, seconds' },
  { key: 4, name: 'locatorId', type: locatorId, required: true, doc: 'locator ID the registration is for' },
] as const satisfies readonly Field[];

/** INTRODUCE_ACK and INTRO: one terminal told about the other (see PEER CHANNELS). */
const introduction = [
  { key: 1, name: 'channelId', type: channelId, required: true, doc: 'the channel: random, chosen by locatord; the session ID slot of every peer message on it' },
  { key: 2, name: 'peer', type: locatorId, required: true, doc: 'locator ID of the other terminal' },
  { key: 3, name: 'addr', type: { t: 'addr' }, required: true, doc: "the other terminal's observed (public) address" },
  { key: 4, name: 'localAddrs', type: localAddrs, doc: "the other terminal's LAN addresses (tried when both observed addresses share an IP: same NAT)" },
  { key: 5, name: 'netMode', type: netMode, required: true, doc: "the other terminal's network mode" },
  { key: 6, name: 'nickname', type: nickname, doc: 'nickname the other terminal registered' },
  { key: 7, name: 'sealedKey', type: { t: 'bstr', min: SEALED_CHANNEL_KEY_BYTES, max: SEALED_CHANNEL_KEY_BYTES }, required: true, doc: 'the channel key, sealed under this session (ChaCha20-Poly1305, see PEER CHANNELS)' },
  { key: 8, name: 'observed', type: { t: 'addr' }, required: true, doc: "this terminal's own address as locatord sees it" },
  { key: 9, name: 'relayed', type: { t: 'addr' }, doc: "the other terminal's relayed address on its TURN relay, when it allocated one (INTRO only; see RELAYS)" },
  { key: 10, name: 'resumes', type: channelId, doc: "INTRO only: the other terminal re-introduces the open channel with this ID (its relay was lost or its credentials expired, or its address changed): the addresses of this INTRO (fields 3, 4, 9) are new candidates of that channel, to punch on it; a field 9 replaces the other terminal's old relayed address. Only a channel with that ID and that peer is touched; this introduction's own channel ID and key are not used (see RELAYS)" },
] as const satisfies readonly Field[];

/** What the catalog must be: every message type, its spec named as in MessageType. */
type CatalogShape = { readonly [N in MessageName as (typeof MessageType)[N]]: MessageSpec & { readonly name: N } };

// Declared `as const` so the field specs keep their literal names, types and `required` flags:
// `Bodies` and the entry types below are computed from them (BodyOf in schema.ts), never restated.
const specs = {
  [MessageType.AUTH_REQUEST]: {
    name: 'AUTH_REQUEST', direction: 'terminal->authd', service: 'authd', auth: 'sealed',
    doc: 'Authenticate a device. Padded to exactly 1200 bytes. The sealed part holds the device ID and its signature.',
    refusals: [
      { code: 'BAD_MESSAGE', when: 'the datagram is not exactly 1200 bytes, or the opened AuthInner fails its schema (authd checks in the order of AUTHENTICATION, What authd checks)' },
      { code: 'COOKIE_REQUIRED', when: 'a cookie is required (always, by default) and the request carries no valid one: the ERROR carries a fresh cookie' },
      { code: 'RATE_LIMITED', when: "retryAfterMs: the source's budget (charged once a valid cookie is seen), or the device's own (10 a minute by default)" },
      { code: 'TRY_LATER', when: "retryAfterMs: authd's overall budget is spent, its database cannot be read, or the device sent more recent requests than authd remembers per device (16) and this one is older than the one it forgot" },
      { code: 'BAD_PROOF', when: 'authdKey names no key of authd, the seal does not open, or the signature does not verify (an unknown device the same, with the same message)' },
      { code: 'MALFORMED', when: 'the opened AuthInner is not CBOR of a map' },
      { code: 'REVOKED', when: 'the device is revoked (told only once its proof verified)' },
      { code: 'CLOCK_SKEW', when: "timeMs is more than the clock skew (300 s by default) from authd's clock" },
      { code: 'REPLAY', when: 'the pair (device ID, nonce) was served within the skew window' },
      { code: 'NOT_FOUND', when: 'no audience asked for is a known service' },
    ],
    fields: [
      { key: 1, name: 'authdKey', type: { t: 'bstr', max: 16 }, required: true, doc: 'ID of the authd sealing key used' },
      { key: 2, name: 'ephemeral', type: key32, required: true, doc: "terminal's one-shot X25519 public key for sealing" },
      { key: 3, name: 'sealed', type: { t: 'bstr', max: 1000 }, required: true, doc: 'ChaCha20-Poly1305 ciphertext of the AuthInner map' },
      { key: 4, name: 'cookie', type: { t: 'bstr', max: 64 }, doc: 'address-validation cookie, when authd asked for one' },
      { key: 15, name: 'padding', type: padding, doc: 'zero bytes bringing the datagram to 1200 bytes' },
    ],
  },
  [MessageType.AUTH_RESPONSE]: {
    name: 'AUTH_RESPONSE', direction: 'authd->terminal', service: 'authd', auth: 'sealed',
    doc: "Tickets and locator ID, sealed under the response key of the request's key exchange: only the holder of the request's one-shot key can open it.",
    fields: [{ key: 1, name: 'sealed', type: { t: 'bstr', max: 1100 }, required: true, doc: 'A 12-byte nonce, then the ChaCha20-Poly1305 ciphertext of the AuthGrant map' }],
  },
  // issue 19: revocation pushed by authd to the services (one block).
  [MessageType.REVOKE]: {
    name: 'REVOKE', direction: 'authd->server', service: 'any', auth: 'none',
    doc: 'authd tells a registered service (locatord, matchd) to end a terminal now: drop its registration and sessions and refuse its tickets until they expire (see REVOCATION). Signed by authd; retransmitted until acknowledged.',
    refusals: [
      { code: 'BAD_PROOF', when: 'kid is not an authd key the service trusts, or the signature does not verify' },
      { code: 'CLOCK_SKEW', when: 'timeMs is more than the clock skew (300 s by default) from the service\'s clock' },
      { code: 'BAD_MESSAGE', when: 'code is not REVOKED' },
    ],
    fields: [
      { key: 1, name: 'locatorId', type: locatorId, required: true, doc: 'the terminal' },
      { key: 2, name: 'code', type: { t: 'uint' }, required: true, doc: 'why: REVOKED (the device was revoked)' },
      { key: 3, name: 'untilS', type: { t: 'uint' }, required: true, doc: 'refuse its tickets until then, seconds since the epoch (the last ticket issued before the revocation expires by then)' },
      { key: 4, name: 'timeMs', type: { t: 'uint' }, required: true, doc: "authd's clock, ms since the epoch (a copy older than the clock skew is refused)" },
      { key: 5, name: 'kid', type: { t: 'bstr', max: 16 }, required: true, doc: 'the authd key that signed, one the service trusts' },
      { key: 6, name: 'signature', type: { t: 'bstr', min: 64, max: 64 }, required: true, doc: 'Ed25519 over "devloc-revoke-v1" and the CBOR array [requestId, locatorId, code, untilS, timeMs]' },
    ],
  },
  [MessageType.REVOKE_ACK]: {
    name: 'REVOKE_ACK', direction: 'server->authd', service: 'any', auth: 'none',
    doc: 'The service has ended the terminal (or the REVOKE was already applied).', fields: [],
  },
  [MessageType.REGISTER]: {
    name: 'REGISTER', direction: 'terminal->server', service: 'locatord', auth: 'session',
    doc: 'Register the source address. Carries the ticket when opening a session.',
    refusals: [
      ...sessionOpeningRefusals('or timeMs is more than 120 s from the server\'s clock (a REGISTER without timeMs fails the body check first: BAD_MESSAGE)'),
      { code: 'RATE_LIMITED', when: 'joinGroups is given while the terminal, or a group it names, is over its failed-proof limit (GROUP CODES), retryAfterMs the time left of its window (at most 600000); nothing is registered' },
      { code: 'NOT_FOUND', when: 'a joinGroups group does not exist; nothing is registered' },
      { code: 'FORBIDDEN', when: 'a joinGroups group is closed, the terminal is not a member, and the proof is missing or does not verify; nothing is registered' },
      { code: 'FULL', when: 'a joinGroups group has 256 members, or the terminal would be in more than 32 groups; nothing is registered' },
    ],
    fields: [
      { key: 1, name: 'ticket', type: ticket, doc: 'ticket for this service; required when the server has no session' },
      { key: 2, name: 'timeMs', type: { t: 'uint' }, required: true, doc: "terminal's clock, ms since the epoch (bounds replays across server restarts)" },
      { key: 3, name: 'localAddrs', type: { t: 'array', of: { t: 'addr' }, max: 4 }, doc: 'LAN addresses of the terminal' },
      { key: 4, name: 'netMode', type: netMode, doc: 'network mode as classified by the agent' },
      { key: 5, name: 'nickname', type: nickname, doc: 'nickname shown to others' },
      { key: 6, name: 'mediaId', type: mediaId, doc: 'game/media ID in use' },
      { key: 7, name: 'community', type: { t: 'props', max: 16 }, doc: 'service-defined properties (the patent\'s community field)' },
      { key: 8, name: 'visibility', type: { t: 'uint', max: 1 }, doc: '0 anyone with the ID (default), 1 groups and allow-list only' },
      { key: 9, name: 'allow', type: { t: 'array', of: locatorId, max: MAX_ALLOW }, doc: 'locator IDs that may always see this terminal' },
      { key: 10, name: 'joinGroups', type: { t: 'array', of: { t: 'struct', fields: [
        { key: 1, name: 'groupId', type: groupId, required: true, doc: 'group to join (it must exist: REGISTER creates no group)' },
        { key: 3, name: 'nonce', type: codeNonce, doc: 'closed group: fresh random nonce of the proof' },
        { key: 4, name: 'proof', type: codeProof, doc: 'closed group: proof of the join code, bound to this session (see GROUP CODES)' },
      ] }, max: MAX_JOIN_GROUPS }, doc: 'groups to join as part of registering (closed ones with a proof, never the code)' },
      { key: 11, name: 'ttlS', type: { t: 'uint' }, doc: 'requested TTL, seconds' },
      { key: 12, name: 'reachable', type: { t: 'bool' }, doc: 'true: accept introductions (INTRO) from terminals that may see this one; absent or false: locatord never introduces anyone to it' },
      { key: 13, name: 'presence', type: { t: 'struct', fields: presenceRecord }, doc: 'rich presence record (see PRESENCE); its mediaId, when present, replaces mediaId' },
    ],
  },
  [MessageType.REGISTER_ACK]: {
    name: 'REGISTER_ACK', direction: 'server->terminal', service: 'locatord', auth: 'session',
    doc: 'Registration accepted.', fields: registrationAck,
  },
  [MessageType.REFRESH]: {
    name: 'REFRESH', direction: 'terminal->server', service: 'locatord', auth: 'session',
    doc: 'Keep the registration alive; the source address is re-learned. In a session the server does not have (never opened by a '
      + 'REGISTER with the ticket, or lost) refused with NO_SESSION, as every session message is (see SESSIONS). Without a registration '
      + 'of the locator ID (expired, unregistered) refused with NOT_FOUND: send REGISTER. Not newer than the registration (a sequence number at or below the last one it took, '
      + 'or another session registered since and this REFRESH comes from the very address and port that registration is bound to: '
      + 'the same terminal registered again with a new ticket) answered with REFRESH_ACK describing the registration as it stands, '
      + 'which it leaves as it is. In a session another session\'s REGISTER displaced, from any other address: refused with '
      + 'IDENTITY_CONFLICT, as is every later message of that session (a second terminal holds the identity).',
    refusals: [
      { code: 'NOT_FOUND', when: 'the locator ID has no registration: send REGISTER' },
      { code: 'IDENTITY_CONFLICT', when: 'another session registered the locator ID since, and this REFRESH comes from an address validated for this session other than the one that registration is bound to' },
    ],
    fields: [
      { key: 1, name: 'ttlS', type: { t: 'uint' }, doc: 'requested TTL, seconds' },
      { key: 2, name: 'netMode', type: netMode, doc: 'new network mode, if it changed' },
      { key: 3, name: 'localAddrs', type: { t: 'array', of: { t: 'addr' }, max: 4 }, doc: 'new LAN addresses, if they changed' },
    ],
  },
  [MessageType.REFRESH_ACK]: {
    name: 'REFRESH_ACK', direction: 'server->terminal', service: 'locatord', auth: 'session',
    doc: 'Refresh accepted.', fields: registrationAck,
  },
  [MessageType.UNREGISTER]: {
    name: 'UNREGISTER', direction: 'terminal->server', service: 'locatord', auth: 'session',
    doc: 'Remove the registration (clean shutdown). The session stays open until the ticket expires. Executed from any source '
      + 'address (the MAC proves the terminal, and nothing is bound to the source); to an address not validated for the session '
      + 'the UNREGISTER_ACK goes only when it is no larger than the request, else an ADDR_CHALLENGE replaces it, the registration '
      + 'removed all the same (the ACK is larger when the server\'s sequence number takes more bytes than the terminal\'s, as the '
      + 'wall-clock numbers of locatord on Redis do, see Sequence numbers and ADDRESS VALIDATION). When the registration is this session\'s, and this sequence number is '
      + 'above the last one it took, it is removed and UNREGISTER_ACK answers. UNREGISTER_ACK answers too, and nothing is removed, when '
      + 'there is no registration; when the registration is this session\'s and took this sequence number or a higher one; and when '
      + 'another session registered since and this UNREGISTER comes from the very address and port that registration is bound to, or '
      + 'from an address not validated for this session. When another session registered since and this UNREGISTER comes from any other '
      + 'address, one validated for this session: refused with IDENTITY_CONFLICT, as is every later message of this session, and the '
      + 'newer registration stays.', refusals: [
      { code: 'IDENTITY_CONFLICT', when: 'another session registered the locator ID since, and this UNREGISTER comes from an address validated for this session other than the one that registration is bound to' },
    ], fields: [],
  },
  [MessageType.UNREGISTER_ACK]: {
    name: 'UNREGISTER_ACK', direction: 'server->terminal', service: 'locatord', auth: 'session', doc: 'Registration removed.', fields: [],
  },
  [MessageType.QUERY_ADDR]: {
    name: 'QUERY_ADDR', direction: 'terminal->server', service: 'locatord', auth: 'session',
    doc: 'Current address of up to 64 locator IDs; the answer is paged.',
    refusals: [
      LOOKUP_REFUSAL,
    ],
    fields: [
      { key: 1, name: 'ids', type: { t: 'array', of: locatorId, max: MAX_QUERY_IDS }, required: true, doc: 'locator IDs asked about' },
      { key: 2, name: 'cursor', type: cursor, doc: 'index into ids to start from (from a previous nextCursor)' },
    ],
  },
  [MessageType.QUERY_ADDR_RESULT]: {
    name: 'QUERY_ADDR_RESULT', direction: 'server->terminal', service: 'locatord', auth: 'session',
    doc: 'One entry per ID from the cursor on, as many as fit.',
    fields: [
      { key: 1, name: 'entries', type: { t: 'array', of: { t: 'struct', fields: queryAddrEntry }, max: MAX_QUERY_IDS }, required: true, doc: 'results in request order' },
      { key: 2, name: 'nextCursor', type: cursor, doc: 'present when more entries remain: send the query again with this cursor' },
    ],
  },
  [MessageType.QUERY_STATUS]: {
    name: 'QUERY_STATUS', direction: 'terminal->server', service: 'locatord', auth: 'session',
    doc: 'Online/offline status of up to 64 locator IDs.',
    refusals: [
      LOOKUP_REFUSAL,
    ],
    fields: [
      { key: 1, name: 'ids', type: { t: 'array', of: locatorId, max: MAX_QUERY_IDS }, required: true, doc: 'locator IDs asked about' },
      { key: 2, name: 'cursor', type: cursor, doc: 'index into ids to start from' },
      { key: 3, name: 'presence', type: { t: 'bool' }, doc: 'true: also return the presence records' },
    ],
  },
  [MessageType.QUERY_STATUS_RESULT]: {
    name: 'QUERY_STATUS_RESULT', direction: 'server->terminal', service: 'locatord', auth: 'session',
    doc: 'One boolean per ID from the cursor on.',
    fields: [
      { key: 1, name: 'online', type: { t: 'array', of: { t: 'bool' }, max: MAX_QUERY_IDS }, required: true, doc: 'status in request order' },
      { key: 2, name: 'nextCursor', type: cursor, doc: 'present when more remain' },
      { key: 3, name: 'presence', type: { t: 'array', of: { t: 'struct', fields: presenceRecord }, max: MAX_QUERY_IDS }, doc: 'when asked: one presence record per entry of online (empty when offline)' },
    ],
  },
  [MessageType.WATCH]: {
    name: 'WATCH', direction: 'terminal->server', service: 'locatord', auth: 'session',
    doc: 'Watch up to 64 more locator IDs (at most 256 in all per terminal): PRESENCE is pushed when one comes online, goes offline or changes its presence. Every ID of ids is watched whatever the cursor; the answer is their current status from the cursor on, as many as fit, charged like a QUERY_STATUS of those (the next page: the same ids with cursor = nextCursor, charged for its own entries).',
    refusals: [
      { code: 'NOT_FOUND', when: 'the terminal is not registered in this session (no registration, or one another session made): send REGISTER' },
      LOOKUP_REFUSAL,
      { code: 'FULL', when: 'the IDs not watched yet would bring the terminal over 256 watched IDs (an ID named twice counts once); nothing is added' },
    ],
    fields: [
      { key: 1, name: 'ids', type: { t: 'array', of: locatorId, max: MAX_QUERY_IDS }, required: true, doc: 'locator IDs to watch (already watched ones are kept); empty: only the count' },
      { key: 2, name: 'cursor', type: cursor, doc: 'index into ids to answer from' },
    ],
  },
  [MessageType.WATCH_ACK]: {
    name: 'WATCH_ACK', direction: 'server->terminal', service: 'locatord', auth: 'session',
    doc: 'Watching; the current status of the IDs from the cursor on, as many as fit.',
    fields: [
      { key: 1, name: 'entries', type: { t: 'array', of: { t: 'struct', fields: presenceEntry }, max: MAX_QUERY_IDS }, required: true, doc: 'status in request order' },
      { key: 2, name: 'nextCursor', type: cursor, doc: 'present when more entries remain: send the WATCH again with this cursor' },
      { key: 3, name: 'watching', type: { t: 'uint' }, required: true, doc: 'locator IDs this terminal watches now (0 after a locatord restart: watch again)' },
    ],
  },
  [MessageType.UNWATCH]: {
    name: 'UNWATCH', direction: 'terminal->server', service: 'locatord', auth: 'session', doc: 'Stop watching locator IDs.',
    refusals: [],
    fields: [
      { key: 1, name: 'ids', type: { t: 'array', of: locatorId, max: MAX_QUERY_IDS }, required: true, doc: 'locator IDs to stop watching (required also with all: an empty array then); an ID not watched is ignored' },
      { key: 2, name: 'all', type: { t: 'bool' }, doc: 'true: stop watching every ID (ids is then ignored)' },
    ],
  },
  [MessageType.UNWATCH_ACK]: {
    name: 'UNWATCH_ACK', direction: 'server->terminal', service: 'locatord', auth: 'session', doc: 'Done (idempotent).',
    fields: [{ key: 1, name: 'watching', type: { t: 'uint' }, required: true, doc: 'locator IDs still watched' }],
  },
  [MessageType.PRESENCE_SET]: {
    name: 'PRESENCE_SET', direction: 'terminal->server', service: 'locatord', auth: 'session',
    doc: 'Replace the presence record of a registered terminal without re-registering; watchers are told. Executed from any source '
      + 'address, which it does not bind; to an address not validated for the session the PRESENCE_SET_ACK goes only when it is no '
      + 'larger than the request, else an ADDR_CHALLENGE replaces it, the record set all the same (see ADDRESS VALIDATION). Without a registration '
      + 'of the locator ID refused with NOT_FOUND: send REGISTER. Answered with PRESENCE_SET_ACK and the record left as it is when the '
      + 'registration is this session\'s and took this sequence number or a higher one, and when another session registered since and '
      + 'this PRESENCE_SET comes from the very address and port that registration is bound to, or from an address not validated for this '
      + 'session. When another session registered since and this PRESENCE_SET comes from any other address, one validated for this '
      + 'session: refused with IDENTITY_CONFLICT, as is every later message of this session (a second terminal holds the identity).',
    refusals: [
      { code: 'NOT_FOUND', when: 'the locator ID has no registration: send REGISTER' },
      { code: 'IDENTITY_CONFLICT', when: 'another session registered the locator ID since, and this PRESENCE_SET comes from an address validated for this session other than the one that registration is bound to' },
    ],
    fields: [{ key: 1, name: 'presence', type: { t: 'struct', fields: presenceRecord }, required: true, doc: 'the new record (absent fields are cleared)' }],
  },
  [MessageType.PRESENCE_SET_ACK]: {
    name: 'PRESENCE_SET_ACK', direction: 'server->terminal', service: 'locatord', auth: 'session', doc: 'Presence record replaced.', fields: [],
  },
  [MessageType.PRESENCE]: {
    name: 'PRESENCE', direction: 'server->terminal', service: 'locatord', auth: 'session',
    doc: 'Pushed to a watcher at its registered address when what it may see of a watched terminal changes; retransmitted until PRESENCE_ACK.',
    fields: presenceEntry,
  },
  [MessageType.PRESENCE_ACK]: {
    name: 'PRESENCE_ACK', direction: 'terminal->server', service: 'locatord', auth: 'session', doc: 'Presence push received (sent for every copy).',
    fields: [{ key: 1, name: 'id', type: locatorId, required: true, doc: 'the id of the PRESENCE' }],
  },
  [MessageType.SEARCH]: {
    name: 'SEARCH', direction: 'terminal->server', service: 'locatord', auth: 'session',
    doc: "Partner search (the patent's search unit): online terminals visible to the asker whose presence record has this mediaId, lookingForPartner true, and wants satisfying every requirement. Examines at most 64 candidates per request, in locator ID order; charged like a QUERY_STATUS of the entries answered (at least one).",
    refusals: [
      { code: 'BAD_MESSAGE', when: 'a requirement is invalid: an empty attr, op 0 without value, op 1 with min above max, op 2 without a non-empty set' },
      { code: 'RATE_LIMITED', when: 'retryAfterMs: the search (charged as one ID up front) or the entries it answers are over the source\'s or the terminal\'s lookup budget' },
    ],
    fields: [
      { key: 1, name: 'mediaId', type: mediaId, required: true, doc: "the candidates' media ID (their presence record's mediaId)" },
      { key: 2, name: 'requirements', type: { t: 'array', of: { t: 'struct', fields: requirement }, max: 16 }, doc: "conditions on the candidate's wants, in MATCH_SUBMIT's syntax; every one must hold (mandatory or not: a search does not wait, so nothing is relaxed)" },
      { key: 3, name: 'after', type: locatorId, doc: 'continue after this locator ID (the next of a previous SEARCH_RESULT)' },
    ],
  },
  [MessageType.SEARCH_RESULT]: {
    name: 'SEARCH_RESULT', direction: 'server->terminal', service: 'locatord', auth: 'session',
    doc: 'The candidates found in this page, as WATCH_ACK entries (what QUERY_STATUS with presence would tell the asker), in locator ID order; may be empty while next is present.',
    fields: [
      { key: 1, name: 'entries', type: { t: 'array', of: { t: 'struct', fields: presenceEntry }, max: MAX_SEARCH_SCAN }, required: true, doc: 'online candidates found, in locator ID order' },
      { key: 2, name: 'next', type: locatorId, doc: 'present when candidates remain: send the SEARCH again with after set to it' },
    ],
  },
  [MessageType.GROUP_CREATE]: {
    name: 'GROUP_CREATE', direction: 'terminal->server', service: 'locatord', auth: 'session',
    doc: 'Create a group; the creator is its first member (and holds no other right: the group is deleted when its last member leaves, whoever that is). locatord chooses the group ID; no message creates a group with a chosen ID. The join code never travels: a closed group is created with its code key sealed under the session (see GROUP CODES).',
    refusals: [
      { code: 'BAD_MESSAGE', when: 'only one of nonce and sealedCodeKey is given, or sealedCodeKey does not open under this session (GROUP CODES)' },
      { code: 'FULL', when: 'the terminal is in 32 groups already' },
    ],
    fields: [
      { key: 1, name: 'name', type: { t: 'tstr', max: 64 }, required: true, doc: 'display name' },
      { key: 3, name: 'nonce', type: codeNonce, doc: 'closed group: fresh random nonce of the seal' },
      { key: 4, name: 'sealedCodeKey', type: { t: 'bstr', min: 48, max: 48 }, doc: 'present (with nonce): the group is closed; its code key, sealed under this session' },
    ],
  },
  [MessageType.GROUP_CREATE_ACK]: {
    name: 'GROUP_CREATE_ACK', direction: 'server->terminal', service: 'locatord', auth: 'session', doc: 'Group created.',
    fields: [{ key: 1, name: 'groupId', type: groupId, required: true, doc: 'new group ID (random, chosen by locatord)' }],
  },
  [MessageType.GROUP_JOIN]: {
    name: 'GROUP_JOIN', direction: 'terminal->server', service: 'locatord', auth: 'session',
    doc: 'Join a group. A closed group needs a proof of its join code bound to this session; failed proofs are limited per terminal and per group (RATE_LIMITED). A member joining again is answered GROUP_JOIN_ACK, its proof (if any) not checked.',
    refusals: [
      { code: 'RATE_LIMITED', when: 'retryAfterMs the time left of the window (at most 600000): the terminal, or a group named, is over its failed-proof limit (GROUP CODES): every join is refused before anything else, also of open groups, unknown groups and groups already joined' },
      { code: 'NOT_FOUND', when: 'the group does not exist (GROUP_JOIN tells this; GROUP_MEMBERS does not)' },
      { code: 'FORBIDDEN', when: 'the group is closed, the terminal is not a member, and the proof is missing ("join proof required", not counted as a failure) or does not verify ("wrong join code", counted)' },
      { code: 'FULL', when: 'the group has 256 members, or the terminal is in 32 groups already' },
    ],
    fields: [
      { key: 1, name: 'groupId', type: groupId, required: true, doc: 'group to join' },
      { key: 3, name: 'nonce', type: codeNonce, doc: 'closed group: fresh random nonce of the proof' },
      { key: 4, name: 'proof', type: codeProof, doc: 'closed group: proof of the join code, bound to this session (see GROUP CODES)' },
    ],
  },
  [MessageType.GROUP_JOIN_ACK]: {
    name: 'GROUP_JOIN_ACK', direction: 'server->terminal', service: 'locatord', auth: 'session', doc: 'Joined (idempotent).',
    fields: [{ key: 1, name: 'groupId', type: groupId, required: true, doc: 'group joined' }],
  },
  [MessageType.GROUP_LEAVE]: {
    name: 'GROUP_LEAVE', direction: 'terminal->server', service: 'locatord', auth: 'session', doc: 'Leave a group.',
    refusals: [],
    fields: [{ key: 1, name: 'groupId', type: groupId, required: true, doc: 'group to leave' }],
  },
  [MessageType.GROUP_LEAVE_ACK]: {
    name: 'GROUP_LEAVE_ACK', direction: 'server->terminal', service: 'locatord', auth: 'session', doc: 'Left (idempotent).', fields: [],
  },
  [MessageType.GROUP_MEMBERS]: {
    name: 'GROUP_MEMBERS', direction: 'terminal->server', service: 'locatord', auth: 'session',
    doc: 'List members with status and address; members only; paged.',
    refusals: [
      { code: 'FORBIDDEN', when: 'the terminal is not a member of the group, or the group does not exist: the same answer' },
      LOOKUP_REFUSAL,
    ],
    fields: [
      { key: 1, name: 'groupId', type: groupId, required: true, doc: 'group to list' },
      { key: 2, name: 'cursor', type: cursor, doc: 'member index to start from' },
    ],
  },
  [MessageType.GROUP_MEMBERS_RESULT]: {
    name: 'GROUP_MEMBERS_RESULT', direction: 'server->terminal', service: 'locatord', auth: 'session', doc: 'A page of members.',
    fields: [
      { key: 1, name: 'members', type: { t: 'array', of: { t: 'struct', fields: memberEntry }, max: 64 }, required: true, doc: 'members from the cursor on' },
      { key: 2, name: 'nextCursor', type: cursor, doc: 'present when more members remain' },
      { key: 3, name: 'total', type: { t: 'uint' }, required: true, doc: 'number of members' },
      { key: 4, name: 'name', type: { t: 'tstr', max: 64 }, doc: 'group display name' },
    ],
  },
  [MessageType.PROBE]: {
    name: 'PROBE', direction: 'server->terminal', service: 'locatord', auth: 'session',
    doc: 'Liveness probe sent by locatord to the registered address near expiry.', fields: [],
  },
  [MessageType.PROBE_ACK]: {
    name: 'PROBE_ACK', direction: 'terminal->server', service: 'locatord', auth: 'session',
    doc: 'Terminal is alive at this address; extends the registration like a REFRESH. Never answered. Changes nothing when not newer '
      + 'than the registration (as for REFRESH), or from an address neither validated for its session nor the one bound. In a session '
      + 'another session\'s REGISTER displaced, from an address validated for it other than the one that registration is bound to: '
      + 'changes nothing either, and every later message of that session is refused with IDENTITY_CONFLICT (a second terminal holds '
      + 'the identity).',
    fields: [],
  },
  [MessageType.INTRODUCE]: {
    name: 'INTRODUCE', direction: 'terminal->server', service: 'locatord', auth: 'session',
    doc: 'Ask to be introduced to a peer for a direct channel. Refused with NOT_FOUND, the same for each case, when the target is offline, unknown, not visible to the asker or not reachable.',
    refusals: [
      { code: 'BAD_MESSAGE', when: 'the target is the asker\'s own locator ID' },
      { code: 'RATE_LIMITED', when: 'retryAfterMs: the target\'s lookup is over the source\'s or the terminal\'s lookup budget' },
      { code: 'NOT_FOUND', when: 'the target is offline, unknown, not visible to the asker or not registered with reachable true: one answer, one message, for all' },
      { code: 'TRY_LATER', when: 'retryAfterMs: more than 2 introductions per second (burst 10) to this target, or 8 INTROs to it already waiting for their INTRO_ACK, or 10,000 in all' },
    ],
    fields: [
      { key: 1, name: 'target', type: locatorId, required: true, doc: 'locator ID of the peer' },
      { key: 2, name: 'netMode', type: netMode, doc: "the asker's current network mode (default: as registered)" },
      { key: 3, name: 'localAddrs', type: localAddrs, doc: "the asker's LAN addresses (default: as registered)" },
      { key: 4, name: 'relayed', type: { t: 'addr' }, doc: "the asker's relayed address on a TURN relay (passed on in INTRO: the peer punches it when no direct path works)" },
      { key: 5, name: 'resumes', type: channelId, doc: "the asker's open channel to the target that it re-introduces: its relay was lost or its credentials expired (field 4 the new relayed address), or its address changed (field 4 when the path went through its relay); passed on in INTRO field 10" },
    ],
  },
  [MessageType.INTRODUCE_ACK]: {
    name: 'INTRODUCE_ACK', direction: 'server->terminal', service: 'locatord', auth: 'session',
    doc: 'The introduction, for the asker; the target gets INTRO at the same time.', fields: introduction,
  },
  [MessageType.INTRO]: {
    name: 'INTRO', direction: 'server->terminal', service: 'locatord', auth: 'session',
    doc: 'Pushed by locatord to the target of an INTRODUCE at its registered address; retransmitted until INTRO_ACK.', fields: introduction,
  },
  [MessageType.INTRO_ACK]: {
    name: 'INTRO_ACK', direction: 'terminal->server', service: 'locatord', auth: 'session', doc: 'Introduction received (sent for every copy).',
    fields: [{ key: 1, name: 'channelId', type: channelId, required: true, doc: 'the channel of the INTRO' }],
  },
  [MessageType.REFLECT]: {
    name: 'REFLECT', direction: 'terminal->server', service: 'reflector', auth: 'none',
    doc: 'NAT reflector: "what address do you see?" (RFC 5780 style). Padded to 80 bytes, the largest REFLECT_RESULT.',
    refusals: [
      { code: 'BAD_MESSAGE', when: 'change asks for the other address (bit 1) and the reflector has none' },
    ],
    fields: [
      { key: 1, name: 'change', type: { t: 'uint', max: 3 }, doc: 'value 1 (bit 0): answer from the other port; value 2 (bit 1): from the other address; 3: both' },
      { key: 15, name: 'padding', type: padding, doc: 'makes the request at least as large as the answer' },
    ],
  },
  [MessageType.REFLECT_RESULT]: {
    name: 'REFLECT_RESULT', direction: 'server->terminal', service: 'reflector', auth: 'none', doc: 'The observed source address.',
    fields: [
      { key: 1, name: 'observed', type: { t: 'addr' }, required: true, doc: 'source address of the REFLECT as seen' },
      { key: 2, name: 'from', type: { t: 'addr' }, required: true, doc: 'address this answer is sent from' },
      { key: 3, name: 'otherPort', type: { t: 'uint', max: 65535 }, doc: 'the alternate port the reflector also answers on' },
      { key: 4, name: 'otherIp', type: { t: 'bstr', min: 4, max: 16 }, doc: 'the alternate address, if configured' },
    ],
  },
  [MessageType.MATCH_SUBMIT]: {
    name: 'MATCH_SUBMIT', direction: 'terminal->server', service: 'matchd', auth: 'session',
    doc: 'Ask for partners. A second submit from the same terminal replaces the first. Limited per terminal (a rate, and a cool-down after a match): RATE_LIMITED with retryAfterMs.',
    refusals: [
      ...sessionOpeningRefusals('or timeMs is absent or more than 120 s from the server\'s clock'),
      { code: 'RATE_LIMITED', when: 'retryAfterMs: a request of this terminal was matched less than the cool-down ago (10 s by default; retryAfterMs is the time left), or its submit budget is spent (3 at once, then one per 5 s, per locator ID; every submit that gets past these two checks is charged, the session\'s first and those refused below included)' },
      { code: 'BAD_MESSAGE', when: 'a requirement is invalid (as for SEARCH), or minParty is below 2, above maxParty or above the largest party matchd forms (8 by default)' },
      { code: 'FORBIDDEN', when: 'netMode is 6 (udp-blocked) and relay names neither a TCP nor a TLS relay' },
      { code: 'FULL', when: 'retryAfterMs: matchd holds its most waiting requests, in all or for this mediaId' },
    ],
    fields: [
      { key: 1, name: 'ticket', type: ticket, doc: 'ticket for matchd; required when matchd has no session' },
      { key: 2, name: 'timeMs', type: { t: 'uint' }, doc: "terminal's clock, ms since the epoch (required with ticket)" },
      { key: 3, name: 'mediaId', type: mediaId, required: true, doc: 'game/application to match within' },
      { key: 4, name: 'appType', type: { t: 'tstr', max: 16 }, doc: 'game, chat, voice, ...' },
      { key: 5, name: 'minParty', type: { t: 'uint', max: 64 }, required: true, doc: 'smallest party, including the requester' },
      { key: 6, name: 'maxParty', type: { t: 'uint', max: 64 }, required: true, doc: 'largest party' },
      { key: 7, name: 'attrs', type: { t: 'props', max: 16 }, doc: "requester's own attributes (age, level, region, ...)" },
      { key: 8, name: 'requirements', type: { t: 'array', of: { t: 'struct', fields: requirement }, max: 16 }, doc: 'conditions on partners' },
      { key: 9, name: 'netMode', type: netMode, required: true, doc: "requester's network mode" },
      { key: 10, name: 'maxWaitS', type: { t: 'uint', max: 3600 }, required: true, doc: 'longest wait before a no-match result' },
      { key: 11, name: 'nickname', type: nickname, doc: 'nickname shown to partners' },
      { key: 12, name: 'visibility', type: { t: 'uint', max: 1 }, doc: '0 shown to partners by locator ID and nickname (default); 1 hidden: partners see a random alias for this request, no nickname' },
      { key: 13, name: 'relay', type: { t: 'uint', max: 7 }, doc: 'transports over which the requester reaches a TURN relay it holds credentials for (its grant\'s relays), a mask: 1 udp, 2 tcp, 4 tls; absent or 0: none' },
    ],
  },
  [MessageType.MATCH_SUBMIT_ACK]: {
    name: 'MATCH_SUBMIT_ACK', direction: 'server->terminal', service: 'matchd', auth: 'session', doc: 'Request queued.',
    fields: [
      { key: 1, name: 'matchId', type: matchId, required: true, doc: 'ID of the waiting request' },
      { key: 2, name: 'deadlineS', type: { t: 'uint' }, required: true, doc: 'when a no-match result will be sent, seconds since the epoch' },
    ],
  },
  [MessageType.MATCH_STATUS]: {
    name: 'MATCH_STATUS', direction: 'terminal->server', service: 'matchd', auth: 'session', doc: 'Poll a request.',
    refusals: [
      { code: 'NOT_FOUND', when: 'matchId is unknown, another terminal\'s, or forgotten (120 s after its request ended, or after a restart of matchd): one answer for all' },
    ],
    fields: [{ key: 1, name: 'matchId', type: matchId, required: true, doc: 'request to poll' }],
  },
  [MessageType.MATCH_STATUS_RESULT]: {
    name: 'MATCH_STATUS_RESULT', direction: 'server->terminal', service: 'matchd', auth: 'session', doc: 'State of a request.',
    fields: [
      { key: 1, name: 'matchId', type: matchId, required: true, doc: 'request polled' },
      { key: 2, name: 'state', type: { t: 'uint', max: 3 }, required: true, doc: '0 waiting, 1 matched, 2 no match, 3 cancelled' },
      { key: 3, name: 'members', type: { t: 'array', of: { t: 'struct', fields: matchMember }, max: 16 }, doc: 'state 1: the party' },
      { key: 4, name: 'host', type: { t: 'uint', max: 15 }, doc: 'state 1: index in members of the host' },
      { key: 5, name: 'noPath', type: { t: 'bool' }, doc: 'state 2: a compatible partner was waiting that the requester had no path to (not direct, not through a relay)' },
    ],
  },
  [MessageType.MATCH_CANCEL]: {
    name: 'MATCH_CANCEL', direction: 'terminal->server', service: 'matchd', auth: 'session', doc: 'Withdraw a waiting request.',
    refusals: [
      { code: 'NOT_FOUND', when: 'matchId is unknown, another terminal\'s, or forgotten: one answer for all' },
    ],
    fields: [{ key: 1, name: 'matchId', type: matchId, required: true, doc: 'request to cancel' }],
  },
  [MessageType.MATCH_CANCEL_ACK]: {
    name: 'MATCH_CANCEL_ACK', direction: 'server->terminal', service: 'matchd', auth: 'session', doc: 'Final state after the cancel.',
    fields: [
      { key: 1, name: 'matchId', type: matchId, required: true, doc: 'request' },
      { key: 2, name: 'state', type: { t: 'uint', max: 3 }, required: true, doc: '3 cancelled, or 1 if a match was already formed' },
      { key: 3, name: 'members', type: { t: 'array', of: { t: 'struct', fields: matchMember }, max: 16 }, doc: 'state 1 (cancel lost the race): the party' },
      { key: 4, name: 'host', type: { t: 'uint', max: 15 }, doc: 'state 1: index in members of the host' },
      { key: 5, name: 'noPath', type: { t: 'bool' }, doc: 'state 2: a compatible partner was waiting that the requester had no path to (not direct, not through a relay)' },
    ],
  },
  [MessageType.MATCH_RESULT]: {
    name: 'MATCH_RESULT', direction: 'server->terminal', service: 'matchd', auth: 'session',
    doc: 'Pushed to the terminal when its request ends; retransmitted until MATCH_RESULT_ACK.',
    fields: [
      { key: 1, name: 'matchId', type: matchId, required: true, doc: 'request' },
      { key: 2, name: 'state', type: { t: 'uint', max: 3 }, required: true, doc: '1 matched, 2 no match' },
      { key: 3, name: 'members', type: { t: 'array', of: { t: 'struct', fields: matchMember }, max: 16 }, doc: 'state 1: the party' },
      { key: 4, name: 'host', type: { t: 'uint', max: 15 }, doc: 'state 1: index in members of the host' },
      { key: 5, name: 'noPath', type: { t: 'bool' }, doc: 'state 2: a compatible partner was waiting that the requester had no path to (not direct, not through a relay)' },
    ],
  },
  [MessageType.MATCH_RESULT_ACK]: {
    name: 'MATCH_RESULT_ACK', direction: 'terminal->server', service: 'matchd', auth: 'session', doc: 'Result received.',
    fields: [{ key: 1, name: 'matchId', type: matchId, required: true, doc: 'request' }],
  },
  [MessageType.PUNCH]: {
    name: 'PUNCH', direction: 'terminal->terminal', service: 'peer', auth: 'session',
    doc: 'Hole punching probe and keepalive, sent to every candidate address of the peer; MACed with the punch key of the sender\'s direction.',
    fields: [
      { key: 1, name: 'eph', type: key32, required: true, doc: "the sender's ephemeral X25519 public key for this channel (the same in every PUNCH)" },
      { key: 2, name: 'close', type: { t: 'bool' }, doc: 'true: the sender closes the channel' },
    ],
  },
  [MessageType.PUNCH_ACK]: {
    name: 'PUNCH_ACK', direction: 'terminal->terminal', service: 'peer', auth: 'session',
    doc: 'Answer to a PUNCH, sent to its source address: the path from that address works both ways.',
    fields: [
      { key: 1, name: 'eph', type: key32, required: true, doc: "the answerer's ephemeral X25519 public key for this channel" },
      { key: 2, name: 'observed', type: { t: 'addr' }, required: true, doc: 'source address the PUNCH came from' },
      { key: 3, name: 'rx', type: { t: 'uint' }, doc: 'highest DATA message number the answerer has received on the channel: after a move between relays the peer sends again what it sent later (see RELAYS)' },
    ],
  },
  [MessageType.DATA]: {
    name: 'DATA', direction: 'terminal->terminal', service: 'peer', auth: 'session',
    doc: 'Application data on an open channel, encrypted and MACed with the data keys of the sender\'s direction. An empty payload is a ping (acknowledged, not delivered).',
    fields: [
      { key: 1, name: 'n', type: { t: 'uint' }, required: true, doc: 'message number: 1, 2, 3 ... per direction; a gap is loss, a lower one arrived late and is dropped' },
      { key: 2, name: 'payload', type: { t: 'bstr', max: MAX_CHANNEL_PAYLOAD }, required: true, doc: 'ChaCha20 ciphertext of the application bytes (nonce from the sequence number)' },
      { key: 3, name: 'ack', type: { t: 'bool' }, doc: 'true: answer with DATA_ACK' },
    ],
  },
  [MessageType.DATA_ACK]: {
    name: 'DATA_ACK', direction: 'terminal->terminal', service: 'peer', auth: 'session', doc: 'Receipt of a DATA that asked for one.',
    fields: [{ key: 1, name: 'n', type: { t: 'uint' }, required: true, doc: 'message number acknowledged' }],
  },
  [MessageType.ADDR_CHALLENGE]: {
    name: 'ADDR_CHALLENGE', direction: 'server->terminal', service: 'any', auth: 'session',
    doc: 'Sent by locatord or matchd in place of the answer to a session request from an address not yet validated for the session (see ADDRESS VALIDATION): carries the request\'s ID; the request was not executed, or its answer was larger than the request. Answer with ADDR_PROOF from that address, then send the request again.',
    fields: [{ key: 1, name: 'token', type: { t: 'bstr', min: 16, max: 16 }, required: true, doc: 'HMAC of the session ID and the address, see ADDRESS VALIDATION' }],
  },
  [MessageType.ADDR_PROOF]: {
    name: 'ADDR_PROOF', direction: 'terminal->server', service: 'any', auth: 'none',
    doc: 'Echo of an ADDR_CHALLENGE from the address it was sent to, under a new request ID (the server reads only sid and token): that address is validated for the session. Never answered.',
    fields: [
      { key: 1, name: 'sid', type: { t: 'bstr', min: 16, max: 16 }, required: true, doc: 'session ID the challenge was MACed in' },
      { key: 2, name: 'token', type: { t: 'bstr', min: 16, max: 16 }, required: true, doc: 'the token of the ADDR_CHALLENGE, unchanged' },
    ],
  },
  [MessageType.ERROR]: {
    name: 'ERROR', direction: 'server->terminal', service: 'any', auth: 'none',
    doc: 'Refusal. Carries the request ID of the refused request. Session-MACed when the request was.',
    fields: [
      { key: 1, name: 'code', type: { t: 'uint' }, required: true, doc: 'error code (see ERROR CODES)' },
      { key: 2, name: 'message', type: { t: 'tstr', max: 120 }, doc: 'human-readable detail; omitted when it would make the reply larger than the request' },
      { key: 3, name: 'retryAfterMs', type: { t: 'uint' }, doc: 'RATE_LIMITED / TRY_LATER: wait at least this long' },
      { key: 4, name: 'cookie', type: { t: 'bstr', max: 64 }, doc: 'COOKIE_REQUIRED: send the request again with this cookie' },
    ],
  },
} as const satisfies CatalogShape;

export const catalog: Record<MessageType, MessageSpec> = specs;

/** Inner, sealed structures (not messages, but on the wire inside `sealed`). */
const authInnerSpec = [
  { key: 1, name: 'deviceId', type: { t: 'tstr', max: 64 }, required: true, doc: 'factory device ID' },
  { key: 2, name: 'timeMs', type: { t: 'uint' }, required: true, doc: "terminal's clock, ms since the epoch" },
  { key: 3, name: 'nonce', type: { t: 'bstr', min: 16, max: 16 }, required: true, doc: 'fresh random nonce' },
  { key: 4, name: 'audiences', type: { t: 'array', of: { t: 'tstr', max: 64 }, max: 4 }, required: true, doc: 'service IDs to get tickets for' },
  { key: 5, name: 'cnf', type: key32, required: true, doc: "terminal's session X25519 public key, bound into every ticket" },
  { key: 6, name: 'signature', type: { t: 'bstr', min: 64, max: 64 }, required: true, doc: 'Ed25519 signature by the device key (see AUTHENTICATION)' },
] as const satisfies readonly Field[];
export const authInnerFields: readonly Field[] = authInnerSpec;

/**
 * A TURN relay (coturn, RFC 8656) the terminal may allocate on, with credentials in coturn's
 * shared-secret scheme: username "<exp>:<locator ID in hex>", password base64(HMAC-SHA1(secret,
 * username)). See RELAYS.
 */
const relayGrant = [
  { key: 1, name: 'name', type: { t: 'tstr', max: 32 }, required: true, doc: 'relay name, as registered with devloc relay add' },
  { key: 2, name: 'udp', type: { t: 'addr' }, doc: 'TURN over UDP at this address' },
  { key: 3, name: 'tcp', type: { t: 'addr' }, doc: 'TURN over TCP at this address' },
  { key: 4, name: 'tls', type: { t: 'addr' }, doc: 'TURN over TLS at this address' },
  { key: 5, name: 'tlsName', type: { t: 'tstr', max: 253 }, doc: 'name the TLS certificate is checked against (absent: the address)' },
  { key: 6, name: 'username', type: { t: 'tstr', max: 64 }, required: true, doc: 'TURN username: expiry and locator ID' },
  { key: 7, name: 'password', type: { t: 'tstr', max: 64 }, required: true, doc: 'TURN password: base64 HMAC-SHA1 of the username under the relay secret' },
  { key: 8, name: 'exp', type: { t: 'uint' }, required: true, doc: 'credential expiry, seconds since the epoch (never after the tickets)' },
] as const satisfies readonly Field[];

const authGrantSpec = [
  { key: 1, name: 'locatorId', type: locatorId, required: true, doc: "the terminal's stable locator ID" },
  { key: 2, name: 'tickets', type: { t: 'array', of: { t: 'struct', fields: ticketGrant }, max: 4 }, required: true, doc: 'one grant per audience' },
  { key: 3, name: 'nonce', type: { t: 'bstr', min: 16, max: 16 }, required: true, doc: 'the request nonce, echoed' },
  { key: 4, name: 'relays', type: { t: 'array', of: { t: 'struct', fields: relayGrant }, max: 2 }, doc: 'TURN relays with credentials, when authd has relays registered (see RELAYS)' },
] as const satisfies readonly Field[];
export const authGrantFields: readonly Field[] = authGrantSpec;

// The message and entry types, computed from the specs above (see BodyOf): a field added,
// renamed, retyped or made optional in the catalog changes them, and every use is checked
// against the change. test/unit/catalog-types.test.ts pins the derivation.
type Spec<N extends MessageName> = (typeof specs)[(typeof MessageType)[N]];

/** Typed body of every message, by type name. */
export type Bodies = { [N in MessageName]: BodyOf<Spec<N>['fields']> };

export type AuthInner = BodyOf<typeof authInnerSpec>;
export type TicketGrant = BodyOf<typeof ticketGrant>;
export type RelayGrant = BodyOf<typeof relayGrant>;
export type AuthGrant = BodyOf<typeof authGrantSpec>;
export type AddrEntry = BodyOf<typeof queryAddrEntry>;
export type MemberEntry = BodyOf<typeof memberEntry>;
export type Requirement = BodyOf<typeof requirement>;
export type MatchMember = BodyOf<typeof matchMember>;
export type Introduction = BodyOf<typeof introduction>;
export type RegistrationAck = BodyOf<typeof registrationAck>;
export type PresenceRecord = BodyOf<typeof presenceRecord>;
export type PresenceEntry = BodyOf<typeof presenceEntry>;

export const MatchState = { WAITING: 0, MATCHED: 1, NO_MATCH: 2, CANCELLED: 3 } as const;

export function specOf(type: number): MessageSpec | undefined {
  return (catalog as Record<number, MessageSpec>)[type];
}

/** The response type of a request type (request + 1), or undefined for responses. */
export function responseTypeOf(type: MessageType): MessageType | undefined {
  return type % 2 === 0 ? ((type + 1) as MessageType) : undefined;
}

