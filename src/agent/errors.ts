// Errors and logging types of the agent library, in a module of their own: every other agent
// module (the facade, registration, queries, matching, peers, channels, control) imports them
// from here, so none has to import the Agent facade and the import graph has no cycle
// (test/agent/imports.test.ts).
import { ErrorCode, errorName } from '../wire/errors.js';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type AgentLog = (level: LogLevel, msg: string, fields?: Record<string, unknown>) => void;

/** An error an API call (lookup, online, group ...) reports: a stable code and a message. */
export class AgentError extends Error {
  override readonly name = 'AgentError';
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/**
 * A request whose answer the agent's own stop cut off (its UdpClient rejected it with
 * ClientClosed): NOT_RUNNING, never NO_ANSWER, which is the server's silence.
 */
export function stoppedBeforeAnswer(request: string): AgentError {
  return new AgentError('NOT_RUNNING', `${request}: the agent stopped before an answer`);
}

/** An ERROR answer from a server (authd or locatord), as the step that got it saw it. */
export class ServerError extends Error {
  constructor(
    readonly step: string,
    readonly code: number,
    readonly detail: string | undefined,
    readonly retryAfterMs: number | undefined,
    readonly cookie: Uint8Array | undefined,
  ) {
    super(`${step}: ${errorName(code)}${detail ? ` (${detail})` : ''}`);
  }
}

/** Errors of authd that mean "this device is not welcome": retried slowly, logged as errors. */
export const REFUSALS: readonly number[] = [ErrorCode.UNKNOWN_DEVICE, ErrorCode.REVOKED, ErrorCode.BAD_PROOF];
/** Errors of locatord that mean "get a new ticket". */
export const NEEDS_TICKET: readonly number[] = [
  ErrorCode.TICKET_EXPIRED, ErrorCode.BAD_TICKET, ErrorCode.WRONG_AUDIENCE, ErrorCode.CLOCK_SKEW, ErrorCode.BAD_MAC, ErrorCode.REPLAY,
  // Kicked by the operator: the session is over; a new ticket opens a new one.
  ErrorCode.KICKED,
];

/**
 * Every code an `AgentError` of the library carries, with what it means (documented in
 * devloc-agent(3); test/agent/distribution.test.ts checks that each code thrown in src/agent is here
 * and in the page). Besides these, an ERROR answer of locatord or matchd is passed on with the
 * wire code's name (RATE_LIMITED, TRY_LATER, FULL, ...: devloc-protocol(7)).
 */
export const AGENT_ERROR_CODES: Readonly<Record<string, string>> = {
  NOT_RUNNING: "the agent is not started, or is stopping; also a call still under way when stop() ends it: waiting for a server's answer or for a relay allocation (never NO_ANSWER or a relay's error)",
  NOT_REGISTERED: 'not registered with locatord: the call waited for the registration (10 s; a match submit 20 s) and gave up',
  NO_ANSWER: 'a server did not answer after every retransmission',
  BAD_REQUEST: 'an argument or option is malformed (an option of new Agent, a match spec or requirement, a presence record, an empty channel message, ...)',
  BAD_TARGET: 'an ID given as bytes is not 16 bytes long',
  UNKNOWN_TARGET: 'neither an ID (32 hex digits) nor a name in the address book',
  NOT_FOUND: 'no such terminal, group, match request or address book entry',
  FORBIDDEN: 'the server refused: not allowed to see the target, or this terminal is udp-blocked',
  PEER_UNAVAILABLE: 'connect: the peer is offline or may not be seen',
  NO_DIRECT_PATH: 'connect: both ends are behind NATs no hole punching can traverse',
  PUNCH_FAILED: 'connect: the channel did not open (timeout, or closed first)',
  RELAY_UNAVAILABLE: 'connect: a relayed path was needed but no granted TURN relay gave an allocation',
  RELAY_LOST: 'a relayed channel closed because its TURN relay stopped answering (the reason says whether another relay is left)',
  BAD_INTRODUCTION: 'connect: locatord introduced another terminal, or a key that does not open',
  CHANNEL_NOT_OPEN: 'send on a channel that is not open (still punching, or closed)',
  TOO_LARGE: 'a channel message larger than the largest payload',
  NO_MATCHD: 'matching: authd named no matchd and none was configured',
  NO_MATCH_TICKET: 'matching: authd granted no ticket for the match service',
  NO_ADDRESS_BOOK: 'control API: the agent has no address book',
  UNKNOWN_COMMAND: 'control API: no such command',
};

/**
 * A key `v` has that `known` does not name is refused (AgentError BAD_REQUEST, `what` and the
 * keys known): a misspelt one (`require` for `requirements`, `ttl` for `ttlS`) would otherwise be
 * dropped without a word and the agent run without what it was asked for.
 */
export function refuseUnknownKeys(v: unknown, known: readonly string[], what: string): void {
  if (typeof v !== 'object' || v === null) return;
  const unknown = Object.keys(v).filter((k) => !known.includes(k));
  if (unknown.length === 0) return;
  throw new AgentError('BAD_REQUEST', `${what}: unknown ${unknown.length === 1 ? 'key' : 'keys'} ${unknown.map((k) => JSON.stringify(k)).join(', ')} (known: ${known.join(', ')})`);
}
