// The matching engine (the patent's matching control unit 236 with its search unit 232): waiting
// requests per media ID, the rules that decide who may play with whom, party formation with a
// host chosen by network mode, and the widening of tolerance as requests wait. Pure: no sockets,
// the clock and the ID source are injected, results leave through `onFinished`.
//
// Rules (documented in devloc-matchd(8), MATCHING):
// - Requests match only within the same media ID and the same appType (absent = "").
// - Two requests are compatible when each one's requirements accept the other's attributes:
//   mandatory ones exactly, preferred ones within the request's current tolerance.
// - A party is a set of pairwise compatible requests whose size n satisfies every member's
//   minParty <= n <= maxParty, and that can be connected: all pairs directly, or through a host
//   every other member reaches (connectivity.ts): directly (reported as LAN when both share an
//   observed IP), or through a TURN relay when the terminals declared one they can use (MATCH_SUBMIT relay). A
//   party without relayed members is preferred to one of the same size with some; the host is
//   one everyone reaches directly when there is one, else the one with the fewest relayed
//   members (chooseHostByPaths). A terminal has at most one open request, so it is never matched
//   with itself.
// - Oldest first: when something changes (a submit, a tolerance step), the waiting requests that
//   could now be in a party are tried as anchors in submission order; the anchor takes its most
//   compatible candidates (highest `fit`, then oldest) greedily.
// - Tolerance: a request's preferred numeric ranges widen by `widenStep` on each side every
//   `widenIntervalMs` of waiting; after `preferredDropMs` its preferred requirements stop
//   filtering and only rank candidates. Mandatory requirements never relax.
// - Past its deadline a request ends with "no match"; cancelled or expired requests are never
//   part of a party.
import { MatchState } from '../wire/catalog.js';
import type { Requirement } from '../wire/catalog.js';
import { NetMode } from '../wire/constants.js';
import { DevlocError, ErrorCode } from '../wire/errors.js';
import type { Props } from '../wire/schema.js';
import { canUseRelay, chooseHostByPaths, hostRank, MatchPath, pathBetween } from './connectivity.js';
import { TimerHeap } from '../net/heap.js';
import type { Rule, Tolerance } from '../wire/requirements.js';
import { accepts, compileRequirements, EXACT, fit, hasPreferred, Op } from '../wire/requirements.js';

export type MatchStateValue = (typeof MatchState)[keyof typeof MatchState];

export interface Party<C> {
  /** Anchor first, then members in the order they were taken. */
  members: MatchRequest<C>[];
  /** Index in `members` of the host. */
  host: number;
  /** Each member's path to the host (a MatchPath; 0 for the host itself). */
  paths: number[];
  formedAtMs: number;
}

export interface MatchRequest<C> {
  id: Buffer;
  idHex: string;
  locatorId: Buffer;
  locatorHex: string;
  mediaId: string;
  appType: string;
  minParty: number;
  maxParty: number;
  attrs: Props;
  rules: Rule[];
  netMode: number;
  /** Relays the terminal can use (RelayVia mask; 0: none). */
  relay: number;
  /** Same value: the same observed IP (matchd: at submit); a direct path between them is reported as LAN. */
  natKey: string | undefined;
  /** A compatible partner was waiting that this request had no path to (why a no-match). */
  noPath: boolean;
  nickname: string | undefined;
  /**
   * Set when the terminal asked not to be revealed (MATCH_SUBMIT visibility 1): the random ID
   * its partners see instead of its locator ID, for this request only (delivery.ts resultBody).
   */
  alias: Buffer | undefined;
  submittedAtMs: number;
  deadlineMs: number;
  /** Submission order (ties in age are impossible). */
  seq: number;
  state: MatchStateValue;
  tol: Tolerance;
  /** When the tolerance next changes (Infinity: never). */
  nextWidenAtMs: number;
  /** Tolerance changed since the request was last tried. */
  dirty: boolean;
  /** Next timed event: min(deadlineMs, nextWidenAtMs) (see heap.ts). */
  eventAtMs: number;
  heapIndex: number;
  party: Party<C> | null;
  finishedAtMs: number;
  /** Opaque per-terminal data of the caller (matchd: observed address and session). */
  contact: C;
  /** Bucket of its queue's index (see indexKeyOf). */
  indexKey: string;
}

export interface SubmitInput<C> {
  locatorId: Buffer;
  mediaId: string;
  appType?: string;
  minParty: number;
  maxParty: number;
  attrs?: Props;
  requirements?: Requirement[];
  netMode: number;
  /** RelayVia mask: transports over which the terminal reaches a TURN relay it holds credentials for. */
  relay?: number;
  /** Terminals with the same key share an observed IP (matchd: the source IP of the submit). */
  natKey?: string;
  maxWaitS: number;
  nickname?: string;
  /** Shown to partners instead of the locator ID (and no nickname): a hidden terminal. */
  alias?: Buffer;
  contact: C;
  /** The request may not outlive this instant (the session's end), ms since the epoch. */
  notAfterMs?: number;
}

export interface EngineOptions {
  /** Milliseconds since the epoch. */
  now: () => number;
  /** 8 random bytes per request. */
  newId: () => Buffer;
  /** Waiting requests in total; more are refused with FULL. */
  maxWaiting: number;
  /** Waiting requests per media ID; more are refused with FULL. */
  maxWaitingPerMedia: number;
  /** Largest party formed (a result must fit one datagram); larger maxParty is clamped. */
  maxParty: number;
  /** Longest wait granted; larger maxWaitS is clamped. */
  maxWaitMs: number;
  /** Preferred ranges widen by this much per step. */
  widenStep: number;
  /** One widening step per this much waiting; 0 disables widening. */
  widenIntervalMs: number;
  /** After this much waiting, preferred requirements stop filtering. */
  preferredDropMs: number;
  /** Finished requests are kept this long for MATCH_STATUS / MATCH_CANCEL. */
  retentionMs: number;
  /** Most finished requests kept (oldest forgotten first). */
  maxRetained: number;
  /** Anchors tried per trigger before giving up until the next change. */
  maxAnchorAttempts: number;
  /** Hosts tried per anchor when the members cannot all connect directly. */
  maxHostAttempts: number;
  /** Tolerance-change triggers processed per tick; the rest wait for the next tick (oldest first). */
  maxTriggersPerTick: number;
  /** Called for every member of a formed party and for every request that ran out of time. */
  onFinished?: (req: MatchRequest<unknown>) => void;
}

export const defaultEngineOptions: Omit<EngineOptions, 'now' | 'newId'> = {
  maxWaiting: 200_000,
  maxWaitingPerMedia: 20_000,
  maxParty: 8,
  maxWaitMs: 600_000,
  widenStep: 1,
  widenIntervalMs: 10_000,
  preferredDropMs: 30_000,
  retentionMs: 120_000,
  maxRetained: 200_000,
  maxAnchorAttempts: 32,
  maxHostAttempts: 4,
  maxTriggersPerTick: 5_000,
};

/**
 * Worst-case bytes per member in MATCH_RESULT: map head 1, id 1+1+16, nickname 1+2+32,
 * netMode 1+1, addr 1+1+1+16+3 (IPv6, port > 255), path 1+1 = 80. With ~60 B of envelope,
 * session auth and other fields, 14 members fit in 1200 B; a larger party could not be delivered.
 */
export const MAX_PARTY_LIMIT = 14;

interface Queue<C> {
  mediaId: string;
  /** Insertion order is submission order: oldest first. */
  waiting: Map<string, MatchRequest<C>>;
  /**
   * The same requests by index key (see indexKeyOf), each bucket in submission order, so that
   * looking for requests that could accept X only visits the buckets X's attributes name.
   */
  byKey: Map<string, Map<string, MatchRequest<C>>>;
}

/** Key of the bucket of requests that accept anyone (no mandatory equality requirement). */
const WILDCARD = '';
const keyOf = (attr: string, value: string | number | boolean): string => `${attr}\u0000${typeof value === 'string' ? value : String(value)}`;

/**
 * A request's index key: its first mandatory requirement that names one value (equal, or a
 * set of one), as attr + value. Every request it accepts has that value, so a request X can only
 * be accepted by requests in the buckets keyOf(attr, X.attrs[attr]) for X's attributes, and in
 * the wildcard bucket.
 */
function indexKeyOf(rules: readonly Rule[]): string {
  for (const r of rules) {
    if (!r.mandatory) continue;
    if (r.op === Op.EQUAL) return keyOf(r.attr, r.value);
    if (r.op === Op.MEMBER && r.set!.size === 1) return keyOf(r.attr, r.set!.values().next().value!);
  }
  return WILDCARD;
}

interface Candidate<C> {
  r: MatchRequest<C>;
  score: number;
}

export interface EngineStats {
  submitted: number;
  replaced: number;
  cancelled: number;
  formed: number;
  matchedMembers: number;
  noMatch: number;
}

export class MatchEngine<C = unknown> {
  readonly opts: EngineOptions;
  private readonly queues = new Map<string, Queue<C>>();
  /** Every request still known: waiting, and finished ones within retention. */
  private readonly byId = new Map<string, MatchRequest<C>>();
  /** Finished requests in finishing order (for retention). */
  private readonly finished = new Map<string, MatchRequest<C>>();
  /** The open (waiting) request of each terminal. */
  private readonly openByLocator = new Map<string, MatchRequest<C>>();
  private waitingTotal = 0;
  private seq = 0;
  /** Waiting requests by their next deadline or widening step. */
  private readonly timers = new TimerHeap<MatchRequest<C>>();
  /** Requests whose tolerance changed and that wait for a tick's trigger budget. */
  private readonly dirtySet = new Set<MatchRequest<C>>();
  readonly stats: EngineStats = { submitted: 0, replaced: 0, cancelled: 0, formed: 0, matchedMembers: 0, noMatch: 0 };

  constructor(opts: Partial<EngineOptions> & Pick<EngineOptions, 'now' | 'newId'>) {
    this.opts = { ...defaultEngineOptions, ...opts };
    this.tune({});
  }

  /**
   * Change options at run time (SIGHUP). Widening changes apply to each waiting request from
   * its next scheduled step; limits apply to later submits.
   */
  tune(t: Partial<Omit<EngineOptions, 'now' | 'newId'>>): void {
    Object.assign(this.opts, t);
    this.opts.maxParty = Math.max(2, Math.min(this.opts.maxParty, MAX_PARTY_LIMIT));
  }

  get waiting(): number {
    return this.waitingTotal;
  }

  get mediaCount(): number {
    return this.queues.size;
  }

  get retained(): number {
    return this.finished.size;
  }

  waitingIn(mediaId: string): number {
    return this.queues.get(mediaId)?.waiting.size ?? 0;
  }

  /** A request by ID, if still known; only the terminal that submitted it may see it. */
  find(idHex: string, locatorHex: string): MatchRequest<C> | undefined {
    const r = this.byId.get(idHex);
    return r && r.locatorHex === locatorHex ? r : undefined;
  }

  /** The open request of a terminal, if any. */
  openOf(locatorHex: string): MatchRequest<C> | undefined {
    return this.openByLocator.get(locatorHex);
  }

  /**
   * Queue a request (replacing the terminal's open one) and try to match it at once.
   * Throws DevlocError BAD_MESSAGE, FORBIDDEN or FULL.
   */
  submit(input: SubmitInput<C>): MatchRequest<C> {
    const o = this.opts;
    const now = o.now();
    const compiled = compileRequirements(input.requirements);
    if (!compiled.ok) throw new DevlocError(ErrorCode.BAD_MESSAGE, compiled.reason);
    if (input.minParty < 2) throw new DevlocError(ErrorCode.BAD_MESSAGE, 'minParty must be at least 2 (the requester counts)');
    if (input.minParty > input.maxParty) throw new DevlocError(ErrorCode.BAD_MESSAGE, 'minParty > maxParty');
    if (input.minParty > o.maxParty) throw new DevlocError(ErrorCode.BAD_MESSAGE, `parties are at most ${o.maxParty} here`);
    if (input.netMode === NetMode.UDP_BLOCKED && !canUseRelay(input.netMode, input.relay)) {
      throw new DevlocError(ErrorCode.FORBIDDEN, 'a udp-blocked terminal cannot reach any partner without a relay it reaches over TCP or TLS');
    }
    const locatorHex = input.locatorId.toString('hex');
    const prev = this.openByLocator.get(locatorHex);
    // Capacity, counting the request this one replaces as already gone. A refused submit leaves
    // the previous request waiting.
    const inMedia = this.waitingIn(input.mediaId) - (prev && prev.mediaId === input.mediaId ? 1 : 0);
    if (this.waitingTotal - (prev ? 1 : 0) >= o.maxWaiting) throw new DevlocError(ErrorCode.FULL, 'too many waiting requests', 1000);
    if (inMedia >= o.maxWaitingPerMedia) throw new DevlocError(ErrorCode.FULL, 'too many waiting requests for this media ID', 1000);
    if (prev) {
      this.unqueue(prev);
      this.finish(prev, MatchState.CANCELLED, now);
      this.stats.replaced++;
    }
    const waitMs = Math.min(Math.max(1, input.maxWaitS) * 1000, o.maxWaitMs);
    const deadlineMs = Math.max(now + 1000, Math.min(now + waitMs, input.notAfterMs ?? Infinity));
    let id = o.newId();
    while (this.byId.has(id.toString('hex'))) id = o.newId();
    const r: MatchRequest<C> = {
      id, idHex: id.toString('hex'), locatorId: input.locatorId, locatorHex,
      mediaId: input.mediaId, appType: input.appType ?? '',
      minParty: input.minParty, maxParty: Math.min(input.maxParty, o.maxParty),
      attrs: input.attrs ?? {}, rules: compiled.rules, netMode: input.netMode, relay: input.relay ?? 0,
      natKey: input.natKey, noPath: false, nickname: input.nickname,
      alias: input.alias, submittedAtMs: now, deadlineMs, seq: ++this.seq, state: MatchState.WAITING,
      tol: EXACT, nextWidenAtMs: Infinity, dirty: false, eventAtMs: deadlineMs, heapIndex: -1,
      party: null, finishedAtMs: 0, contact: input.contact,
      indexKey: indexKeyOf(compiled.rules),
    };
    this.retolerate(r, now);
    let q = this.queues.get(r.mediaId);
    if (!q) {
      q = { mediaId: r.mediaId, waiting: new Map(), byKey: new Map() };
      this.queues.set(r.mediaId, q);
    }
    q.waiting.set(r.idHex, r);
    let bucket = q.byKey.get(r.indexKey);
    if (!bucket) {
      bucket = new Map();
      q.byKey.set(r.indexKey, bucket);
    }
    bucket.set(r.idHex, r);
    this.byId.set(r.idHex, r);
    this.openByLocator.set(locatorHex, r);
    r.eventAtMs = Math.min(r.deadlineMs, r.nextWidenAtMs);
    this.timers.push(r);
    this.waitingTotal++;
    this.stats.submitted++;
    this.tryMatch(r, now);
    return r;
  }

  /**
   * Withdraw a waiting request. Returns the request in its final state: CANCELLED, or MATCHED /
   * NO_MATCH when it had already ended (a cancel never undoes a formed party); undefined when
   * unknown or not this terminal's.
   */
  cancel(idHex: string, locatorHex: string): MatchRequest<C> | undefined {
    const r = this.find(idHex, locatorHex);
    if (!r) return undefined;
    if (r.state === MatchState.WAITING) {
      this.unqueue(r);
      this.finish(r, MatchState.CANCELLED, this.opts.now());
      this.stats.cancelled++;
    }
    return r;
  }

  /**
   * Periodic work: forget old results, end expired requests, apply tolerance steps and try the
   * requests whose tolerance changed (oldest first, at most maxTriggersPerTick; the rest next
   * tick). Only requests whose time has come are touched (a heap of next events).
   */
  tick(): void {
    const now = this.opts.now();
    this.purge(now);
    for (let r = this.timers.peek(); r && r.eventAtMs <= now; r = this.timers.peek()) {
      this.timers.pop();
      if (r.deadlineMs <= now) {
        this.unqueue(r);
        this.finish(r, MatchState.NO_MATCH, now);
        this.stats.noMatch++;
        this.opts.onFinished?.(r as MatchRequest<unknown>);
        continue;
      }
      this.retolerate(r, now);
      if (r.dirty) this.dirtySet.add(r);
      r.eventAtMs = Math.min(r.deadlineMs, r.nextWidenAtMs);
      this.timers.push(r);
    }
    if (this.dirtySet.size === 0) return;
    const triggers = [...this.dirtySet].sort((a, b) => a.seq - b.seq);
    const n = Math.min(triggers.length, this.opts.maxTriggersPerTick);
    for (let i = 0; i < n; i++) {
      const r = triggers[i]!;
      this.dirtySet.delete(r);
      if (r.state === MatchState.WAITING && r.dirty) this.tryMatch(r, now);
    }
  }

  /** Triggers left over by the last tick (work deferred by the per-tick budget). */
  get deferredTriggers(): number {
    return this.dirtySet.size;
  }

  /** Drop everything (tests, shutdown). */
  clear(): void {
    this.timers.clear();
    this.dirtySet.clear();
    this.queues.clear();
    this.byId.clear();
    this.finished.clear();
    this.openByLocator.clear();
    this.waitingTotal = 0;
  }

  /** Set the tolerance for the request's current waiting time and when it next changes. */
  private retolerate(r: MatchRequest<C>, now: number): void {
    const o = this.opts;
    if (!hasPreferred(r.rules)) {
      r.nextWidenAtMs = Infinity;
      return;
    }
    const waited = now - r.submittedAtMs;
    const dropped = waited >= o.preferredDropMs;
    const steps = o.widenIntervalMs > 0 ? Math.floor(waited / o.widenIntervalMs) : 0;
    const widen = steps * o.widenStep;
    if (dropped !== r.tol.dropped || widen !== r.tol.widen) {
      // A submit starts at its own tolerance; only later changes make it a trigger again.
      if (r.tol !== EXACT || waited > 0) r.dirty = true;
      r.tol = { widen, dropped };
    }
    if (dropped) {
      r.nextWidenAtMs = Infinity;
    } else {
      const nextStep = o.widenIntervalMs > 0 && o.widenStep > 0 ? r.submittedAtMs + (steps + 1) * o.widenIntervalMs : Infinity;
      r.nextWidenAtMs = Math.min(nextStep, r.submittedAtMs + o.preferredDropMs);
    }
  }

  private unqueue(r: MatchRequest<C>): void {
    const q = this.queues.get(r.mediaId);
    if (q && q.waiting.delete(r.idHex)) {
      this.waitingTotal--;
      const bucket = q.byKey.get(r.indexKey);
      if (bucket) {
        bucket.delete(r.idHex);
        if (bucket.size === 0) q.byKey.delete(r.indexKey);
      }
      if (q.waiting.size === 0) this.queues.delete(r.mediaId);
    }
    if (this.openByLocator.get(r.locatorHex) === r) this.openByLocator.delete(r.locatorHex);
    this.timers.remove(r);
    this.dirtySet.delete(r);
  }

  private finish(r: MatchRequest<C>, state: MatchStateValue, now: number): void {
    r.state = state;
    r.finishedAtMs = now;
    r.dirty = false;
    this.finished.set(r.idHex, r);
    while (this.finished.size > this.opts.maxRetained) {
      const oldest = this.finished.keys().next().value!;
      this.finished.delete(oldest);
      this.byId.delete(oldest);
    }
  }

  private purge(now: number): void {
    for (const [k, r] of this.finished) {
      if (r.finishedAtMs + this.opts.retentionMs > now) break;
      this.finished.delete(k);
      this.byId.delete(k);
    }
  }

  private live(r: MatchRequest<C>, now: number): boolean {
    return r.state === MatchState.WAITING && r.deadlineMs > now;
  }

  /**
   * Each request's filtering rules accept the other (both ways). `b`'s rules are checked first:
   * callers pass the request they compare many others with as `b`, whose rules stay in cache.
   */
  compatible(a: MatchRequest<C>, b: MatchRequest<C>): boolean {
    return a !== b && a.appType === b.appType && accepts(b.rules, a.attrs, b.tol) &&
      accepts(a.rules, b.attrs, a.tol) && a.locatorHex !== b.locatorHex;
  }

  /**
   * Something about `trigger` changed (new, or more tolerant): try the waiting requests that
   * could now form a party with it as anchors, oldest first.
   */
  private tryMatch(trigger: MatchRequest<C>, now: number): void {
    trigger.dirty = false;
    const q = this.queues.get(trigger.mediaId);
    if (!q) return;
    let attempts = 0;
    let triedSelf = false;
    const attempt = (w: MatchRequest<C>): boolean => {
      attempts++;
      const party = this.buildParty(q, w, now);
      if (party) this.form(party.members, party.host, party.paths, now);
      return trigger.state !== MatchState.WAITING || attempts >= this.opts.maxAnchorAttempts;
    };
    // Lazily, oldest first: most triggers end with the first compatible anchor.
    for (const w of this.acceptersOf(q, trigger, now)) {
      if (!triedSelf && w.seq > trigger.seq) {
        triedSelf = true;
        if (attempt(trigger)) return;
      }
      if (!this.live(w, now) || !this.compatible(w, trigger)) continue;
      if (attempt(w)) return;
    }
    if (!triedSelf && trigger.state === MatchState.WAITING && attempts < this.opts.maxAnchorAttempts) attempt(trigger);
  }

  /**
   * The live waiting requests of `q` (other than `x`) whose index key allows them to accept
   * `x` — the wildcard bucket and the buckets named by x's attributes — oldest first. Not yet
   * filtered by the full rules.
   */
  private *acceptersOf(q: Queue<C>, x: MatchRequest<C>, now: number): Generator<MatchRequest<C>> {
    const buckets: Map<string, MatchRequest<C>>[] = [];
    const w = q.byKey.get(WILDCARD);
    if (w) buckets.push(w);
    for (const attr in x.attrs) {
      const b = q.byKey.get(keyOf(attr, x.attrs[attr]!));
      if (b) buckets.push(b);
    }
    if (buckets.length === 1) {
      for (const r of buckets[0]!.values()) if (r !== x && this.live(r, now)) yield r;
      return;
    }
    const all: MatchRequest<C>[] = [];
    for (const b of buckets) for (const r of b.values()) if (r !== x && this.live(r, now)) all.push(r);
    all.sort((p, r) => p.seq - r.seq);
    yield* all;
  }

  /** The best path between two requests' terminals (a MatchPath), 0 when none. */
  pathOf(a: MatchRequest<C>, b: MatchRequest<C>): number {
    return pathBetween(a, b, a.natKey !== undefined && a.natKey === b.natKey);
  }

  /** Host and paths of a candidate party (chooseHostByPaths), with the number of relayed members. */
  private hostOf(members: MatchRequest<C>[]): { host: number; paths: number[]; relayed: number } | null {
    const h = chooseHostByPaths(members, (i, j) => this.pathOf(members[i]!, members[j]!));
    return h && { ...h, relayed: h.paths.filter((p) => p === MatchPath.RELAY).length };
  }

  /** The best party anchored on `a` that can be formed now, or null. */
  private buildParty(q: Queue<C>, a: MatchRequest<C>, now: number): { members: MatchRequest<C>[]; host: number; paths: number[] } | null {
    const cands: Candidate<C>[] = [];
    for (const c of this.acceptersOf(q, a, now)) {
      if (!this.compatible(c, a)) continue;
      cands.push({ r: c, score: fit(a.rules, c.attrs) + fit(c.rules, a.attrs) });
    }
    if (cands.length + 1 < a.minParty) return null;
    cands.sort((x, y) => y.score - x.score || x.r.seq - y.r.seq);
    const mesh = this.greedy(a, cands, null);
    let best = mesh.members;
    let bestHost = best && this.hostOf(best);
    // A full mesh party cannot be beaten; otherwise, if connectivity turned candidates away,
    // try parties built around a host: those `a` reaches directly first, the most reachable
    // first. Keep the largest; of equal size, the one with the fewest relayed members.
    if (mesh.blocked && (!best || best.length < mesh.cap)) {
      const reach = new Map<MatchRequest<C>, number>();
      for (const { r } of cands) {
        const p = this.pathOf(a, r);
        reach.set(r, p);
        if (p === 0) a.noPath = r.noPath = true;
      }
      const hosts = [a, ...cands.map((c) => c.r).filter((r) => reach.get(r) !== 0)]
        .map((r, i) => ({ r, i, relayed: reach.get(r) === MatchPath.RELAY ? 1 : 0 }))
        .sort((x, y) => x.relayed - y.relayed || hostRank(x.r.netMode) - hostRank(y.r.netMode) || x.i - y.i)
        .slice(0, this.opts.maxHostAttempts);
      for (const { r: h } of hosts) {
        const p = this.greedy(a, cands, h).members;
        if (!p || (best && p.length < best.length)) continue;
        const ph = this.hostOf(p);
        if (ph && (!best || !bestHost || p.length > best.length || ph.relayed < bestHost.relayed)) {
          best = p;
          bestHost = ph;
        }
      }
    }
    if (!best || !bestHost) return null;
    return { members: best, host: bestHost.host, paths: bestHost.paths };
  }

  /**
   * Take candidates in order while the party stays valid: pairwise compatible, sizes within
   * everyone's bounds, and connected (all pairs directly when `hub` is null, else everyone to the
   * hub by any path, relays included). When members with a large minParty make the party fall
   * short, retry without them.
   */
  private greedy(a: MatchRequest<C>, cands: Candidate<C>[], hub: MatchRequest<C> | null): { members: MatchRequest<C>[] | null; cap: number; blocked: boolean } {
    let limit = cands.length + 1;
    let blocked = false;
    let cap = 0;
    for (let round = 0; round < 3; round++) {
      const members = [a];
      cap = Math.min(a.maxParty, this.opts.maxParty);
      let need = a.minParty;
      if (hub && hub !== a) {
        members.push(hub);
        cap = Math.min(cap, hub.maxParty);
        need = Math.max(need, hub.minParty);
      }
      if (need > limit || members.length > cap) return { members: null, cap, blocked };
      for (const { r: c } of cands) {
        if (members.length >= cap) break;
        if (c === hub || c.minParty > limit || c.maxParty < members.length + 1) continue;
        const connected = hub ? this.pathOf(c, hub) !== 0 : members.every((m) => {
          const p = this.pathOf(m, c);
          return p === MatchPath.LAN || p === MatchPath.DIRECT;
        });
        if (!connected) {
          blocked = true;
          continue;
        }
        let ok = true;
        for (let i = 1; i < members.length && ok; i++) ok = this.compatible(members[i]!, c);
        if (!ok) continue;
        members.push(c);
        cap = Math.min(cap, c.maxParty);
        need = Math.max(need, c.minParty);
      }
      if (members.length >= need) return { members, cap, blocked };
      if (members.length < 2 || members.length >= limit) break;
      limit = members.length;
    }
    return { members: null, cap, blocked };
  }

  private form(members: MatchRequest<C>[], host: number, paths: number[], now: number): void {
    const party: Party<C> = { members, host, paths, formedAtMs: now };
    for (const m of members) {
      this.unqueue(m);
      m.party = party;
      this.finish(m, MatchState.MATCHED, now);
    }
    this.stats.formed++;
    this.stats.matchedMembers += members.length;
    for (const m of members) this.opts.onFinished?.(m as MatchRequest<unknown>);
  }
}
