// Matching for the terminal (devloc-matchd(8), MATCH_*): the agent asks matchd for partners for
// a media ID and learns the party — every member's locator ID, nickname, network mode and
// observed address, and which member hosts.
//
// Everything goes over the agent's own UDP socket, the one registered with locatord: matchd
// records the source address of our datagrams as our address and gives it to our partners, so
// it must be the NAT mapping that locatord (and through it everybody else) knows.
//
// The session with matchd is opened from the ticket authd granted for the "match" audience:
// the first MATCH_SUBMIT of a session carries the ticket (and our clock), later datagrams only
// the session MAC. A new ticket (renewal, address change) is a new session, opened by the next
// submit; a request stays with the session it was submitted in, which outlives it (matchd ends a
// request at the latest when its session's ticket expires).
//
// Relays (issue 17): a submit declares the transports over which the TURN relays of our grant
// can be reached (MATCH_SUBMIT relay, from the unexpired relays authd granted credentials for),
// so that matchd can match us with terminals we have no direct path to (and at all when UDP is
// blocked: then only TCP and TLS count). Each member of a result carries its path to the host
// (lan, direct, relay).
//
// Results arrive two ways, whichever is first, and are taken once per matchId:
//   - MATCH_RESULT pushed by matchd (retransmitted until acknowledged). Each copy is checked
//     with the session MAC and answered with MATCH_RESULT_ACK carrying the push's request ID;
//     the acknowledgement is encoded once per result and the same bytes are sent for every
//     later copy (a new encoding would reuse the request ID with other bytes: REPLAY);
//   - MATCH_STATUS polls: every `pollMs` while waiting (this also tells matchd where we are now),
//     right after an address change, and shortly after the deadline in case every push was
//     lost.
// A poll answered NO_SESSION or NOT_FOUND means matchd lost the request (restart): it is
// submitted again with the ticket for the time that remains, under a new matchId.
import type { Address } from '../wire/addr.js';
import { formatAddress, sameAddress } from '../wire/addr.js';
import type { Bodies, MatchMember, RelayGrant, Requirement } from '../wire/catalog.js';
import { catalog, MatchState, MessageType } from '../wire/catalog.js';
import { DEFAULT_RETRANSMIT_TIMEOUT_MS, netModeNames } from '../wire/constants.js';
import type { MatchPathName } from '../wire/connectivity.js';
import { matchPathNames, RelayVia } from '../wire/connectivity.js';
import type { Message, MessageOf } from '../wire/envelope.js';
import { DevlocError, ErrorCode, errorName } from '../wire/errors.js';
import { compileRequirements } from '../wire/requirements.js';
import type { Field, FieldType, Props } from '../wire/schema.js';
import { checkFields, checkValue, pickFields } from '../wire/schema.js';
import type { Reply, RetransmitPolicy } from '../net/client.js';
import { ClientClosed, UdpClient } from '../net/client.js';
import type { ClientSession } from '../net/clientsession.js';
import type { AgentLog } from './errors.js';
import { AgentError, refuseUnknownKeys, stoppedBeforeAnswer } from './errors.js';
import { formatId } from './ids.js';
import { classificationBoundMs } from './netmode.js';
import { sleepUnlessStopped } from './wait.js';

/** What the agent lends the match client: its socket, sessions, network mode and clock. */
export interface MatchBridge {
  /** The agent's UDP client (undefined when stopped). */
  client(): UdpClient | undefined;
  /** The session of the newest ticket for `aud`, and matchd's address from the grant. */
  session(aud: string): { session: ClientSession; addr?: Address } | undefined;
  /** Resolve once the agent is registered (it then has its tickets); reject after timeoutMs. */
  ready(timeoutMs: number): Promise<void>;
  /**
   * No ticket for `aud`: authenticate again (authd may know the service by now, rate-limited by
   * the registration) and resolve with whether there is one afterwards.
   */
  recheckGrant?(aud: string, timeoutMs: number): Promise<boolean>;
  /** Our network mode as reported to servers. */
  netMode(): number;
  /** The TURN relays of our grant, with their credentials (none: no relay capability declared). */
  relays?(): readonly RelayGrant[];
  /** Whether the classification of the current network is done. */
  netModeSettled(): boolean;
  /** Aborted when the agent stops: the client's own waits (a back-off, the classification) end then. */
  stopSignal(): AbortSignal;
  /** Our locator ID (hex), once known. */
  locatorId(): string | null;
  /** Address book names of an ID. */
  names(idHex: string): string[];
  /** The nickname registered with locatord (default for submits). */
  nickname?: string;
  /** The visibility registered with locatord: 1 (hidden) submits hidden too (partners see an alias). */
  visibility?: number;
  /** Report an ended request (the agent emits it as 'match'). */
  emit(result: MatchResult): void;
  now(): number;
  log: AgentLog;
}

export interface MatchClientOptions {
  /** matchd's address; default: the address authd puts in the grant. */
  matchd?: Address;
  /** The ticket audience of matchd (default "match"). */
  audience?: string;
  /** Poll a waiting request this often, ms (default 15000). */
  pollMs?: number;
  /** Poll this long after the deadline if no result came, ms (default 2000). */
  graceMs?: number;
  /** Give up on an unreachable matchd this long after the deadline, ms (default 60000). */
  giveUpMs?: number;
  /**
   * Wait at most this long for the network classification before a submit, ms. Default: the
   * longest one classification takes (netmode.ts classificationBoundMs, from retransmitMs; 24 s at
   * T = 1 s), so a classification under way when the wait starts has given its verdict by the end.
   */
  classifyWaitMs?: number;
  /** Wait this long for the registration before a submit, ms (default 20000). */
  readyWaitMs?: number;
  /** Retransmission timeout T for requests to matchd, ms (default: the agent's). */
  retransmitMs?: number;
}

/** A request for partners, as the application gives it. */
export interface MatchSpec {
  mediaId: string;
  appType?: string;
  /** Smallest party including us (default 2). */
  minParty?: number;
  /** Largest party (default: minParty). */
  maxParty?: number;
  attrs?: Props;
  requirements?: Requirement[];
  /** Longest wait, seconds (default 60; matchd clamps it). */
  maxWaitS?: number;
  /** Nickname shown to partners (default: the agent's). */
  nickname?: string;
}

export type MatchStateName = 'waiting' | 'matched' | 'no-match' | 'cancelled';
export const matchStateNames: Record<number, MatchStateName> = { 0: 'waiting', 1: 'matched', 2: 'no-match', 3: 'cancelled' };

export interface MatchPartyMember {
  id: string;
  nickname?: string;
  netMode: string;
  addr: string;
  /** Address book names of the member. */
  names: string[];
  /** This member is us. */
  self: boolean;
  /** This member hosts. */
  host: boolean;
  /**
   * This member's path to the host: lan, direct or relay; "host" on the host's own entry.
   * Absent when matchd did not say (older matchd).
   */
  path?: MatchPathName | 'host';
}

export interface MatchResult {
  /** matchd's ID of the request (16 hex digits); a new one after a resubmit. */
  matchId: string;
  /** Earlier IDs of the same request (resubmitted after matchd lost it). */
  previousIds?: string[];
  state: MatchStateName;
  mediaId: string;
  appType?: string;
  minParty: number;
  maxParty: number;
  submittedAt: string;
  /** When matchd gives up and answers no-match. */
  deadline: string;
  endedAt?: string;
  /** Matched: the party, in matchd's order. */
  members?: MatchPartyMember[];
  /** Matched: index in members of the host. */
  host?: number;
  /** Matched: the host's locator ID, and whether that is us. */
  hostId?: string;
  youHost?: boolean;
  /** Matched: our path to the host (lan, direct, relay; "host" when we host), if matchd said. */
  path?: MatchPathName | 'host';
  /** No match, and a compatible partner was waiting that we had no path to (direct or relayed). */
  noPath?: boolean;
  /** Why it ended this way, when it is not matchd's plain answer. */
  reason?: string;
  matchd: string;
}

/** An ERROR answer of matchd. */
class MatchdError extends Error {
  constructor(
    readonly code: number,
    readonly detail: string | undefined,
    readonly retryAfterMs: number | undefined,
  ) {
    super(`${errorName(code)}${detail ? ` (${detail})` : ''}`);
  }
}

interface Rec {
  ids: string[];
  matchId: Buffer;
  body: Bodies['MATCH_SUBMIT'];
  session: ClientSession;
  to: Address;
  state: number;
  submittedAtMs: number;
  /** The wait the request was first given ends here (resubmits keep it). */
  endMs: number;
  deadlineMs: number;
  endedAtMs?: number;
  result?: Bodies['MATCH_RESULT'];
  reason?: string;
  timer?: ReturnType<typeof setTimeout> | undefined;
  polling: boolean;
  cancelling: boolean;
  waiters: ((r: MatchResult) => void)[];
}

const MAX_RECORDS = 32;
const MAX_ACKS = 64;
const MAX_EARLY = 16;
const MAX_SESSIONS = 4;

const hex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.length).toString('hex');
const iso = (ms: number): string => new Date(ms).toISOString();
const modeName = (m: number): string => netModeNames[m] ?? `mode-${m}`;

/**
 * MATCH_SUBMIT `relay`: the transports (RelayVia bits) offered by the relays of our grant whose
 * credentials are still valid at `nowMs`. Offered, not probed: a relay we cannot reach over one
 * of them shows when the channel is set up.
 */
export function relayVia(relays: readonly RelayGrant[], nowMs: number): number {
  let via = 0;
  for (const r of relays) {
    if (r.exp * 1000 <= nowMs) continue;
    if (r.udp) via |= RelayVia.UDP;
    if (r.tcp) via |= RelayVia.TCP;
    if (r.tls) via |= RelayVia.TLS;
  }
  return via;
}

// ---- requirement and attribute syntax (shared with devloc(1)) ---------------------------------

/**
 * A requirement in text: "attr=value" (equal), "attr in a,b,c" (one of), "attr 10..20",
 * "attr 10.." or "attr ..20" (numeric range, bounds included). Throws AgentError(BAD_REQUEST).
 */
export function parseRequirement(text: string, mandatory: boolean): Requirement {
  const bad = (why: string): AgentError => new AgentError('BAD_REQUEST', `requirement ${JSON.stringify(text)}: ${why}`);
  const s = text.trim();
  let m: RegExpExecArray | null;
  let r: Requirement;
  if ((m = /^([^\s=]+)\s+in\s+(.+)$/.exec(s))) {
    const set = m[2]!.split(',').map((x) => x.trim()).filter((x) => x.length > 0);
    if (set.length === 0) throw bad('"in" needs comma-separated values');
    r = { attr: m[1]!, op: 2, set };
  } else if ((m = /^([^\s=]+)\s+(\d*)\s*\.\.\s*(\d*)$/.exec(s))) {
    if (m[2] === '' && m[3] === '') throw bad('a range needs a bound: "attr 10..20", "attr 10.." or "attr ..20"');
    r = { attr: m[1]!, op: 1 };
    if (m[2] !== '') r.min = Number(m[2]);
    if (m[3] !== '') r.max = Number(m[3]);
    if (!Number.isSafeInteger(r.min ?? 0) || !Number.isSafeInteger(r.max ?? 0)) throw bad('bounds are whole numbers');
    if (r.min !== undefined && r.max !== undefined && r.min > r.max) throw bad('the lower bound is above the upper one');
  } else if ((m = /^([^\s=]+)\s*=\s*(.*)$/.exec(s))) {
    r = { attr: m[1]!, op: 0, value: m[2]! };
  } else {
    throw bad('expected "attr=value", "attr in a,b" or "attr 10..20"');
  }
  if (mandatory) r.mandatory = true;
  // The sizes (attr 32 bytes, values 64, at most 16 in a set) are the catalog's, checked as a
  // requirement on the wire is (checkValue: "set: more than 16 elements").
  const fits = checkValue(REQUIREMENT_TYPE, r, '');
  if (!fits.ok) throw bad(fits.reason);
  return r;
}

/** One requirement as MATCH_SUBMIT (and SEARCH) carries it: the element type of the catalog's `requirements`. */
const REQUIREMENT_TYPE = ((): FieldType => {
  const t = pickFields(catalog[MessageType.MATCH_SUBMIT].fields, ['requirements'])[0]!.type;
  if (t.t !== 'array') throw new TypeError('MATCH_SUBMIT requirements: expected an array field');
  return t.of;
})();

/** The text form of a requirement (inverse of parseRequirement). */
export function formatRequirement(r: Requirement): string {
  if (r.op === 2) return `${r.attr} in ${(r.set ?? []).join(',')}`;
  if (r.op === 1) return `${r.attr} ${r.min ?? ''}..${r.max ?? ''}`;
  return `${r.attr}=${r.value ?? ''}`;
}

/** "key=value": whole numbers become numbers, true/false booleans, the rest text. */
export function parseAttr(text: string): [string, string | number | boolean] {
  const i = text.indexOf('=');
  if (i <= 0) throw new AgentError('BAD_REQUEST', `attribute ${JSON.stringify(text)}: expected key=value`);
  const k = text.slice(0, i).trim();
  const v = text.slice(i + 1).trim();
  return [k, attrValue(v)];
}

function attrValue(v: string): string | number | boolean {
  if (/^-?\d{1,15}$/.test(v)) return Number(v);
  if (v === 'true') return true;
  if (v === 'false') return false;
  return v;
}

/** The MATCH_SUBMIT fields a MatchSpec gives, the requirements aside (the agent fills in the rest). */
const SPEC_FIELDS = pickFields(catalog[MessageType.MATCH_SUBMIT].fields, ['mediaId', 'appType', 'minParty', 'maxParty', 'attrs', 'maxWaitS', 'nickname']);

/** Every MatchSpec key (the compiler holds it to the interface). */
const SPEC_KEYS = Object.keys({
  mediaId: true, appType: true, minParty: true, maxParty: true, attrs: true, requirements: true, maxWaitS: true, nickname: true,
} satisfies Record<keyof MatchSpec, true>);

/** A spec's party sizes and wait, defaults filled in, as they are submitted. */
function partyAndWait(spec: MatchSpec): { minParty: number; maxParty: number; maxWaitS: number } {
  const minParty = spec.minParty ?? 2;
  return { minParty, maxParty: spec.maxParty ?? Math.max(minParty, 2), maxWaitS: spec.maxWaitS ?? 60 };
}

/**
 * Validate a spec as matchd would, so mistakes are usage errors here (AgentError BAD_REQUEST,
 * the message naming the field), not BAD_MESSAGE there: the MATCH_SUBMIT fields of the catalog,
 * then what matchd refuses beyond them (minParty below 2 or above maxParty; an invalid
 * requirement). An empty media ID is refused here too (it names no game or application).
 */
export function checkSpec(spec: MatchSpec): void {
  if (typeof spec !== 'object' || spec === null) throw new AgentError('BAD_REQUEST', 'expected a match spec {mediaId, minParty?, ...}');
  refuseUnknownKeys(spec, SPEC_KEYS, 'match spec');
  // Absent attrs or requirements may be given as null (never sent: see doSubmit).
  const body = { ...spec, attrs: spec.attrs ?? undefined, ...partyAndWait(spec) };
  checkRequest(SPEC_FIELDS, body);
  if (body.mediaId === '') throw new AgentError('BAD_REQUEST', 'mediaId: empty (name the game or application)');
  if (body.minParty < 2) throw new AgentError('BAD_REQUEST', 'minParty: below 2 (this terminal is one of the party)');
  if (body.maxParty < body.minParty) throw new AgentError('BAD_REQUEST', `maxParty: below minParty (${body.minParty})`);
  checkRequirements(spec.requirements ?? [], 'MATCH_SUBMIT');
}

/**
 * Validate requirements (wire form {attr, op, value | min, max | set, mandatory}) as the server
 * would: the `requirements` field of `message` in the catalog, then the semantics matchd and
 * locatord apply (compileRequirements: op 0 needs value, op 1 min <= max, op 2 a non-empty set).
 * A malformed one is a usage error here (AgentError BAD_REQUEST, `prefix` and the field's path),
 * not BAD_MESSAGE or a failure to encode there. The text forms, "level 2..4", are for devloc(1)
 * and the control API: one given here is refused with a hint.
 */
export function checkRequirements(reqs: unknown, message: 'MATCH_SUBMIT' | 'SEARCH', prefix = ''): void {
  const text = Array.isArray(reqs) ? reqs.findIndex((x) => typeof x === 'string') : -1;
  if (text >= 0) {
    throw new AgentError('BAD_REQUEST', `${prefix}requirements[${text}] ${JSON.stringify((reqs as unknown[])[text])}: expected an object {attr, op, value | min, max | set}, not a text form`);
  }
  checkRequest(pickFields(catalog[MessageType[message]].fields, ['requirements']), { requirements: reqs }, prefix);
  const rules = compileRequirements(reqs as Requirement[]);
  if (!rules.ok) throw new AgentError('BAD_REQUEST', `${prefix}${rules.reason}`);
}

/** Check `body` against catalog `fields` (checkFields): AgentError BAD_REQUEST `${prefix}${reason}` when it does not fit. */
export function checkRequest(fields: readonly Field[], body: unknown, prefix = ''): void {
  const r = checkFields(fields, body, '');
  if (!r.ok) throw new AgentError('BAD_REQUEST', `${prefix}${r.reason}`);
}

// ---- the client ---------------------------------------------------------------------------------

export class MatchClient {
  private readonly audience: string;
  private readonly pollMs: number;
  private readonly graceMs: number;
  private readonly giveUpMs: number;
  private readonly classifyWaitMs: number;
  private readonly readyWaitMs: number;
  private readonly policy: Partial<RetransmitPolicy>;
  private readonly byId = new Map<string, Rec>();
  private readonly records: Rec[] = [];
  /** Sessions opened on matchd (their first submit carried the ticket and was answered). */
  private readonly opened = new WeakSet<ClientSession>();
  /** Sessions we used, newest first: pushes are MACed in one of them. */
  private sessions: ClientSession[] = [];
  /** Acknowledgements sent, by matchId + push request ID: every copy gets the same bytes. */
  private readonly acks = new Map<string, Buffer>();
  /** Results pushed before MATCH_SUBMIT_ACK told us their matchId. */
  private readonly early = new Map<string, Bodies['MATCH_RESULT']>();
  private submitting: Promise<unknown> = Promise.resolve();
  /** Set while the agent stops: no new work (the agent may be started again afterwards). */
  private stopping = false;
  /** The matchd address used last (pushes must come from it). */
  private lastMatchd: Address | undefined;

  constructor(
    private readonly bridge: MatchBridge,
    private readonly o: MatchClientOptions = {},
  ) {
    this.audience = o.audience ?? 'match';
    this.pollMs = o.pollMs ?? 15_000;
    this.graceMs = o.graceMs ?? 2000;
    this.giveUpMs = o.giveUpMs ?? 60_000;
    this.classifyWaitMs = o.classifyWaitMs ?? classificationBoundMs(o.retransmitMs ?? DEFAULT_RETRANSMIT_TIMEOUT_MS);
    this.readyWaitMs = o.readyWaitMs ?? 20_000;
    this.policy = o.retransmitMs ? { initialTimeoutMs: o.retransmitMs } : {};
  }

  /** Requests still waiting. */
  get waiting(): number {
    return this.records.filter((r) => r.state === MatchState.WAITING).length;
  }

  /**
   * Ask for partners. Resolves with the request as submitted (state waiting) or, with `wait`,
   * once it ended (matched, no-match, cancelled). A new submit replaces a waiting one.
   */
  async submit(spec: MatchSpec, o: { wait?: boolean } = {}): Promise<MatchResult> {
    checkSpec(spec);
    const run = this.submitting.then(() => this.doSubmit(spec));
    this.submitting = run.catch(() => undefined);
    const rec = await run;
    return o.wait ? this.waitFor(rec) : this.view(rec);
  }

  /** The state of a request (default: the newest); polls matchd while it is waiting. */
  async status(id?: string): Promise<MatchResult> {
    const rec = this.find(id);
    if (rec.state === MatchState.WAITING && !rec.cancelling) await this.poll(rec, false);
    return this.view(rec);
  }

  /** The requests this agent remembers, newest first. */
  list(): MatchResult[] {
    return [...this.records].reverse().map((r) => this.view(r));
  }

  /** Resolve when the request (default: the newest) has ended, or after timeoutMs with its state then. */
  async wait(id?: string, timeoutMs?: number): Promise<MatchResult> {
    const rec = this.find(id);
    if (timeoutMs === undefined) return this.waitFor(rec);
    return Promise.race([this.waitFor(rec), new Promise<MatchResult>((resolve) => {
      const t = setTimeout(() => resolve(this.view(rec)), timeoutMs);
      t.unref?.();
    })]);
  }

  /**
   * Withdraw a waiting request (default: the newest). A cancel that arrives after the party was
   * formed loses the race: the result is then the party (state matched).
   */
  async cancel(id?: string): Promise<MatchResult> {
    const rec = this.find(id);
    if (rec.state !== MatchState.WAITING) return this.view(rec);
    rec.cancelling = true;
    try {
      const m = await this.call(rec.session, rec.to, 'MATCH_CANCEL', { matchId: rec.matchId }, 'MATCH_CANCEL_ACK');
      if (rec.state === MatchState.WAITING) this.finish(rec, m.body, m.body.state === MatchState.CANCELLED ? undefined : 'the cancel came too late');
    } catch (err) {
      if (err instanceof MatchdError && (err.code === ErrorCode.NOT_FOUND || err.code === ErrorCode.NO_SESSION)) {
        if (rec.state === MatchState.WAITING) this.finish(rec, { matchId: rec.matchId, state: MatchState.CANCELLED }, 'matchd no longer had the request');
      } else {
        rec.cancelling = false;
        throw this.agentError(err);
      }
    }
    return this.view(rec);
  }

  /** Server-initiated datagram on the agent's socket; true when it was ours (MATCH_RESULT). */
  onPush(r: Reply): boolean {
    if (r.msg.name !== 'MATCH_RESULT') return false;
    const to = this.lastMatchd;
    if (!to || !sameAddress(r.from, to)) return true;
    const session = this.sessions.find((s) => s.accept(r));
    if (!session) return true;
    const msg = r.msg as MessageOf<'MATCH_RESULT'>;
    const body = msg.body;
    const id = hex(body.matchId);
    const key = `${id}/${hex(msg.rid)}`;
    let ack = this.acks.get(key);
    if (!ack) {
      ack = session.encode('MATCH_RESULT_ACK', msg.rid, { matchId: body.matchId });
      this.acks.set(key, ack);
      if (this.acks.size > MAX_ACKS) this.acks.delete(this.acks.keys().next().value!);
    }
    this.bridge.client()?.send(r.from, ack);
    const rec = this.byId.get(id);
    if (!rec) {
      // Our submit's answer may still be on its way (matchd sends the reply first, but
      // datagrams can be reordered): keep the result for it.
      this.early.set(id, body);
      if (this.early.size > MAX_EARLY) this.early.delete(this.early.keys().next().value!);
      return true;
    }
    if (hex(rec.matchId) === id && rec.state === MatchState.WAITING) this.finish(rec, body);
    return true;
  }

  /** Our address changed: tell matchd at once where we are (a poll does), so results reach us. */
  addressChanged(): void {
    for (const r of this.records) if (r.state === MatchState.WAITING) this.schedule(r, 0);
  }

  /** Stop: withdraw waiting requests (best effort, briefly), forget timers. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    const waiting = this.records.filter((r) => r.state === MatchState.WAITING);
    for (const r of this.records) if (r.timer) clearTimeout(r.timer);
    await Promise.all(waiting.map(async (r) => {
      try {
        const short = { initialTimeoutMs: 300, maxRetransmit: 2, deadlineMs: 2000 };
        const m = await this.call(r.session, r.to, 'MATCH_CANCEL', { matchId: r.matchId }, 'MATCH_CANCEL_ACK', short);
        if (r.state === MatchState.WAITING) this.finish(r, m.body, m.body.state === MatchState.CANCELLED ? 'agent stopped' : undefined);
      } catch {
        /* matchd ends it at its deadline */
      }
      if (r.state === MatchState.WAITING) this.finish(r, { matchId: r.matchId, state: MatchState.CANCELLED }, 'agent stopped');
    }));
    this.stopping = false;
  }

  // ---- internals -------------------------------------------------------------------------------

  private find(id?: string): Rec {
    if (id === undefined || id === '') {
      const last = this.records[this.records.length - 1];
      if (!last) throw new AgentError('NOT_FOUND', 'no match request yet');
      return last;
    }
    const rec = this.byId.get(id.toLowerCase());
    if (!rec) throw new AgentError('NOT_FOUND', `no match request ${JSON.stringify(id)} known to this agent`);
    return rec;
  }

  /** The current session for matchd and its address; throws AgentError when there is none. */
  private channel(): { session: ClientSession; to: Address } {
    const s = this.bridge.session(this.audience);
    if (!s) {
      throw new AgentError('NO_MATCH_TICKET', `authd granted no ticket for "${this.audience}" (is the match service registered with authd, and "${this.audience}" in --audiences?)`);
    }
    const to = this.o.matchd ?? s.addr;
    if (!to) throw new AgentError('NO_MATCHD', 'authd did not say where matchd is; set --matchd');
    if (!this.sessions.includes(s.session)) this.sessions = [s.session, ...this.sessions].slice(0, MAX_SESSIONS);
    this.lastMatchd = to;
    return { session: s.session, to };
  }

  private async doSubmit(spec: MatchSpec): Promise<Rec> {
    if (this.stopping) throw new AgentError('NOT_RUNNING', 'agent is not running');
    await this.bridge.ready(this.readyWaitMs);
    // Unknown counts as symmetric at matchd (two of those never match): wait for the
    // classification of this network, which started before the registration, for as long as a
    // classification can take; the verdict is taken as soon as it is there (polled).
    for (const end = Date.now() + this.classifyWaitMs; !this.bridge.netModeSettled() && Date.now() < end;) {
      if (!(await sleepUnlessStopped(this.bridge.stopSignal(), 100))) throw new AgentError('NOT_RUNNING', 'the agent stopped before the submit was sent');
    }
    const body: Bodies['MATCH_SUBMIT'] = { mediaId: spec.mediaId, ...partyAndWait(spec), netMode: this.bridge.netMode() };
    if (spec.appType) body.appType = spec.appType;
    if (spec.attrs && Object.keys(spec.attrs).length) body.attrs = spec.attrs;
    if (spec.requirements?.length) body.requirements = spec.requirements;
    const nickname = spec.nickname ?? this.bridge.nickname;
    if (nickname) body.nickname = nickname;
    if (this.bridge.visibility === 1) body.visibility = 1;
    this.declareRelays(body);
    if (!this.bridge.session(this.audience) && this.bridge.recheckGrant) {
      // A match service registered with authd after our last grant: ask authd again, once.
      await this.bridge.recheckGrant(this.audience, this.readyWaitMs);
    }
    const { session, to } = this.channel();
    const start = this.bridge.now();
    const ack = await this.sendSubmit(session, to, body);
    // matchd replaced our previous waiting request with this one.
    for (const r of this.records) {
      if (r.state === MatchState.WAITING) this.finish(r, { matchId: r.matchId, state: MatchState.CANCELLED }, 'replaced by a newer request');
    }
    const id = hex(ack.matchId);
    const rec: Rec = {
      ids: [id], matchId: Buffer.from(ack.matchId), body, session, to, state: MatchState.WAITING, submittedAtMs: start,
      endMs: start + body.maxWaitS * 1000, deadlineMs: ack.deadlineS * 1000, polling: false, cancelling: false, waiters: [],
    };
    this.records.push(rec);
    this.byId.set(id, rec);
    while (this.records.length > MAX_RECORDS) {
      const i = this.records.findIndex((r) => r.state !== MatchState.WAITING);
      if (i < 0) break;
      const [old] = this.records.splice(i, 1);
      for (const k of old!.ids) this.byId.delete(k);
    }
    this.bridge.log('info', 'match submitted', { matchId: id, mediaId: body.mediaId, party: `${body.minParty}..${body.maxParty}`, netMode: modeName(body.netMode), deadline: iso(rec.deadlineMs), matchd: formatAddress(to) });
    const early = this.early.get(id);
    if (early) {
      this.early.delete(id);
      this.finish(rec, early);
    } else {
      this.schedule(rec);
    }
    return rec;
  }

  /** Set (or clear) the submit's relay capability from the grant we hold now. */
  private declareRelays(body: Bodies['MATCH_SUBMIT']): void {
    const via = relayVia(this.bridge.relays?.() ?? [], this.bridge.now());
    if (via) body.relay = via;
    else delete body.relay;
  }

  /** MATCH_SUBMIT in `session`; carries the ticket when the session is not open on matchd yet. */
  private async sendSubmit(session: ClientSession, to: Address, body: Bodies['MATCH_SUBMIT']): Promise<Bodies['MATCH_SUBMIT_ACK']> {
    for (let attempt = 0; ; attempt++) {
      const b: Bodies['MATCH_SUBMIT'] = { ...body };
      const opening = !this.opened.has(session);
      if (opening) {
        b.ticket = session.grant.ticket;
        b.timeMs = this.bridge.now();
        // A matchd that lost the session opens it again numbering its datagrams from 1.
        session.restartReceive();
      }
      try {
        const m = await this.call(session, to, 'MATCH_SUBMIT', b, 'MATCH_SUBMIT_ACK');
        this.opened.add(session);
        return m.body;
      } catch (err) {
        if (err instanceof MatchdError && err.code === ErrorCode.NO_SESSION && !opening && attempt === 0) {
          // matchd restarted (or dropped us): open the session again with the ticket.
          this.opened.delete(session);
          continue;
        }
        throw this.agentError(err);
      }
    }
  }

  private agentError(err: unknown): AgentError {
    if (err instanceof AgentError) return err;
    if (err instanceof MatchdError) {
      if (err.code === ErrorCode.FORBIDDEN) return new AgentError('FORBIDDEN', `matchd refused: ${err.detail ?? 'this terminal cannot reach anyone over UDP (udp-blocked) and has no relay it reaches over TCP or TLS'}`);
      return new AgentError(errorName(err.code), err.detail ?? err.message);
    }
    return new AgentError('NO_ANSWER', `matchd: ${(err as Error).message}`);
  }

  /** One request to matchd in `session`; ERROR becomes MatchdError; RATE_LIMITED/FULL waited out twice. */
  private async call<N extends 'MATCH_SUBMIT' | 'MATCH_STATUS' | 'MATCH_CANCEL', R extends 'MATCH_SUBMIT_ACK' | 'MATCH_STATUS_RESULT' | 'MATCH_CANCEL_ACK'>(
    session: ClientSession, to: Address, name: N, body: Bodies[N], expect: R, policy?: Partial<RetransmitPolicy>,
  ): Promise<MessageOf<R>> {
    for (let attempt = 0; ; attempt++) {
      const client = this.bridge.client();
      if (!client) throw new AgentError('NOT_RUNNING', 'agent is not running');
      this.lastMatchd = to;
      const rid = UdpClient.newRequestId();
      const datagram = session.encode(name, rid, body);
      let r: Reply;
      try {
        r = await client.request(to, datagram, rid, { accept: (x) => session.accept(x), policy: { ...this.policy, ...policy } });
      } catch (err) {
        if (err instanceof ClientClosed) throw stoppedBeforeAnswer(name);
        if (err instanceof DevlocError) throw new AgentError('NO_ANSWER', `${name}: ${err.message}`);
        throw err;
      }
      const m: Message = r.msg;
      if (m.name === 'ERROR') {
        const e = new MatchdError(m.body.code, m.body.message, m.body.retryAfterMs);
        if ((e.code === ErrorCode.RATE_LIMITED || e.code === ErrorCode.TRY_LATER || e.code === ErrorCode.FULL) && attempt < 2 && !this.stopping) {
          const waited = await sleepUnlessStopped(this.bridge.stopSignal(), Math.min(5000, (e.retryAfterMs ?? 1000) * (1 + Math.random() * 0.2)));
          if (!waited) throw new AgentError('NOT_RUNNING', `${name}: the agent stopped before trying again`);
          continue;
        }
        throw e;
      }
      if (m.name !== expect) throw new AgentError('NO_ANSWER', `${name}: unexpected answer ${m.name}`);
      return m as MessageOf<R>;
    }
  }

  /**
   * Next poll: in `inMs`; else at the next poll interval, or just after the deadline; past the
   * deadline (matchd's clock may differ from ours) with growing gaps.
   */
  private schedule(rec: Rec, inMs?: number): void {
    if (rec.timer) clearTimeout(rec.timer);
    rec.timer = undefined;
    if (this.stopping || rec.state !== MatchState.WAITING) return;
    let delay = inMs;
    if (delay === undefined) {
      const untilDue = rec.deadlineMs + this.graceMs - this.bridge.now();
      delay = untilDue > 0 ? Math.min(this.pollMs, untilDue) : Math.min(this.pollMs, Math.max(1000, -untilDue / 2));
    }
    rec.timer = setTimeout(() => {
      rec.timer = undefined;
      void this.poll(rec, true);
    }, delay);
    rec.timer.unref?.();
  }

  /**
   * MATCH_STATUS for a waiting request. NOT_FOUND/NO_SESSION: matchd lost it; submitted again
   * for the time that remains. `background`: errors are handled here, never thrown.
   */
  private async poll(rec: Rec, background: boolean): Promise<void> {
    if (rec.polling || rec.state !== MatchState.WAITING) return;
    rec.polling = true;
    try {
      const m = await this.call(rec.session, rec.to, 'MATCH_STATUS', { matchId: rec.matchId }, 'MATCH_STATUS_RESULT');
      if (rec.state !== MatchState.WAITING) return;
      if (m.body.state === MatchState.WAITING) {
        this.schedule(rec);
        return;
      }
      this.finish(rec, m.body, m.body.state === MatchState.CANCELLED ? 'cancelled at matchd' : undefined);
    } catch (err) {
      if (rec.state !== MatchState.WAITING) return;
      if (err instanceof MatchdError && (err.code === ErrorCode.NOT_FOUND || err.code === ErrorCode.NO_SESSION) && !rec.cancelling) {
        await this.resubmit(rec, `matchd lost the request (${errorName(err.code)})`);
        return;
      }
      const now = this.bridge.now();
      if (now > rec.deadlineMs + this.giveUpMs) {
        this.finish(rec, { matchId: rec.matchId, state: MatchState.NO_MATCH }, `no answer from matchd since the deadline: ${(err as Error).message}`);
        return;
      }
      this.bridge.log('debug', 'match poll failed', { matchId: hex(rec.matchId), err: (err as Error).message });
      this.schedule(rec, Math.min(this.pollMs, 5000));
      if (!background) throw this.agentError(err);
    } finally {
      rec.polling = false;
    }
  }

  private async resubmit(rec: Rec, why: string): Promise<void> {
    const now = this.bridge.now();
    const remainingS = Math.floor((rec.endMs - now) / 1000);
    if (remainingS < 1) {
      this.finish(rec, { matchId: rec.matchId, state: MatchState.NO_MATCH }, why);
      return;
    }
    this.bridge.log('info', 'match request lost, submitting again', { matchId: hex(rec.matchId), why, remainingS });
    try {
      const { session, to } = this.channel();
      const body = { ...rec.body, maxWaitS: remainingS, netMode: this.bridge.netMode() };
      this.declareRelays(body);
      const ack = await this.sendSubmit(session, to, body);
      if (rec.state !== MatchState.WAITING) return;
      const id = hex(ack.matchId);
      rec.matchId = Buffer.from(ack.matchId);
      rec.ids.push(id);
      rec.session = session;
      rec.to = to;
      rec.deadlineMs = ack.deadlineS * 1000;
      this.byId.set(id, rec);
      const early = this.early.get(id);
      if (early) {
        this.early.delete(id);
        this.finish(rec, early);
        return;
      }
      this.schedule(rec);
    } catch (err) {
      this.bridge.log('warn', 'match resubmit failed', { err: (err as Error).message });
      if (rec.state === MatchState.WAITING) this.schedule(rec, Math.min(this.pollMs, 5000));
    }
  }

  private finish(rec: Rec, body: Bodies['MATCH_RESULT'], reason?: string): void {
    if (rec.state !== MatchState.WAITING) return;
    if (rec.timer) clearTimeout(rec.timer);
    rec.timer = undefined;
    rec.state = body.state;
    rec.result = body;
    rec.endedAtMs = this.bridge.now();
    if (reason !== undefined) rec.reason = reason;
    const v = this.view(rec);
    this.bridge.log('info', 'match result', {
      matchId: v.matchId, state: v.state, mediaId: v.mediaId,
      ...(v.members ? { members: v.members.map((m) => m.id), host: v.hostId } : {}), ...(v.reason ? { reason: v.reason } : {}),
    });
    for (const w of rec.waiters.splice(0)) w(v);
    this.bridge.emit(v);
  }

  private waitFor(rec: Rec): Promise<MatchResult> {
    if (rec.state !== MatchState.WAITING) return Promise.resolve(this.view(rec));
    return new Promise((resolve) => rec.waiters.push(resolve));
  }

  private view(rec: Rec): MatchResult {
    const self = this.bridge.locatorId();
    const v: MatchResult = {
      matchId: hex(rec.matchId),
      state: matchStateNames[rec.state] ?? 'waiting',
      mediaId: rec.body.mediaId,
      minParty: rec.body.minParty,
      maxParty: rec.body.maxParty,
      submittedAt: iso(rec.submittedAtMs),
      deadline: iso(rec.deadlineMs),
      matchd: formatAddress(rec.to),
    };
    if (rec.ids.length > 1) v.previousIds = rec.ids.slice(0, -1);
    if (rec.body.appType !== undefined) v.appType = rec.body.appType;
    if (rec.endedAtMs !== undefined) v.endedAt = iso(rec.endedAtMs);
    const res = rec.result;
    if (rec.state === MatchState.MATCHED && res?.members) {
      v.members = res.members.map((m: MatchMember, i): MatchPartyMember => {
        const id = formatId(m.id);
        const host = i === res.host;
        const path = host ? 'host' : m.path !== undefined ? matchPathNames[m.path] : undefined;
        return {
          id, ...(m.nickname !== undefined ? { nickname: m.nickname } : {}), netMode: modeName(m.netMode), addr: formatAddress(m.addr),
          names: this.bridge.names(id), self: id === self, host, ...(path && res.members!.some((x) => x.path !== undefined) ? { path } : {}),
        };
      });
      const me = v.members.find((m) => m.self);
      if (me?.path) v.path = me.path;
      if (res.host !== undefined) {
        v.host = res.host;
        const h = v.members[res.host];
        if (h) {
          v.hostId = h.id;
          v.youHost = h.self;
        }
      }
    }
    if (rec.state === MatchState.NO_MATCH && res?.noPath) v.noPath = true;
    if (rec.reason !== undefined) v.reason = rec.reason;
    return v;
  }
}
