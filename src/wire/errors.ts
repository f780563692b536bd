// Error codes carried in ERROR messages (body key 1). One table for the codec, the daemons, the
// man page and the dissector. Codes are stable: never renumber, only add.

export const ErrorCode = {
  /** Not CBOR, or CBOR devloc refuses (indefinite length, tag, duplicate key, trailing bytes). */
  MALFORMED: 1,
  /** Well-formed CBOR but not a valid devloc message (wrong type of a field, missing field). */
  BAD_MESSAGE: 2,
  /** Protocol version not spoken by this server. */
  UNSUPPORTED_VERSION: 3,
  /** Message type unknown, or sent to a daemon that does not serve it. */
  UNKNOWN_TYPE: 4,
  /** Datagram, string, array or nesting beyond the protocol's bounds. */
  TOO_LARGE: 5,
  /** Source (or, at authd, device) over its rate limit, or the servers' budget for unproven datagrams spent; retry after the given delay. */
  RATE_LIMITED: 6,
  /** Server overloaded or a dependency unavailable; retry after the given delay. */
  TRY_LATER: 7,
  /** authd: no longer sent (an unknown device gets BAD_PROOF, so no one learns which IDs are enrolled); reserved. */
  UNKNOWN_DEVICE: 16,
  /** authd: device revoked. */
  REVOKED: 17,
  /** authd: the device's signature (proof of its factory key) does not verify, the device is not enrolled, or sealing failed. */
  BAD_PROOF: 18,
  /** Timestamp or ticket validity outside the allowed clock skew. */
  CLOCK_SKEW: 19,
  /** authd: address-validation cookie required or invalid; body carries a fresh cookie. */
  COOKIE_REQUIRED: 20,
  /** Ticket signature invalid, unknown kid, malformed claims. */
  BAD_TICKET: 32,
  /** Ticket expired. */
  TICKET_EXPIRED: 33,
  /** Ticket is for another service (aud). */
  WRONG_AUDIENCE: 34,
  /** Session MAC did not verify. */
  BAD_MAC: 35,
  /** Sequence number already seen or left of the replay window. */
  REPLAY: 36,
  /** Session unknown to this server (e.g. after restart): register again with the ticket. */
  NO_SESSION: 37,
  /** Session ended by the operator (devloc ctl kick): authenticate again for a new ticket. */
  KICKED: 38,
  /** Another terminal registered with the same identity since: this session lost (a cloned identity file). */
  IDENTITY_CONFLICT: 39,
  /** Action not permitted for this terminal (e.g. listing a group it is not in). */
  FORBIDDEN: 48,
  /** Object named does not exist (group, match request). */
  NOT_FOUND: 49,
  /** Object already exists / conflicting state. */
  CONFLICT: 50,
  /** A bounded table or queue is full. */
  FULL: 51,
  /** Internal error; the request was not executed. */
  INTERNAL: 63,
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export const errorNames: Record<ErrorCode, string> = Object.fromEntries(
  Object.entries(ErrorCode).map(([name, code]) => [code, name]),
) as Record<ErrorCode, string>;

export function errorName(code: number): string {
  return errorNames[code as ErrorCode] ?? `UNKNOWN_ERROR_${code}`;
}

/** Typed error with a stable name, mirrored by the wire code. Thrown only inside a daemon. */
export class DevlocError extends Error {
  override readonly name = 'DevlocError';
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}
