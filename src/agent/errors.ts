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
