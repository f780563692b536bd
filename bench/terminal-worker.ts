// Load-generator worker of the "terminals" bench (a child process of `devloc bench`): simulates
// a share of the terminals, each with its own enrolled device identity, its own sessions and
// (up to SOCKETS_MAX per worker) its own UDP socket, using the same wire code as devloc-agent:
// sealed AUTH_REQUEST with an Ed25519 proof, grants opened with X25519, session MAC both ways.
//
// Commands from the parent, one at a time:
//   setup    authenticate every terminal, REGISTER (opening the locatord session from the
//            ticket), open the matchd session (MATCH_SUBMIT with the ticket, then MATCH_CANCEL),
//            and create the home group of every tenth terminal;
//   prepare  learn every terminal's locator ID and the home groups; join the home group;
//   run      one step: requests of the mix, open-loop at a rate or flat out with a window,
//            then wait up to the timeout for the answers still due. Progress every 250 ms.
// Requests are never retransmitted: one unanswered after the timeout is lost, and counted.
import type { KeyObject } from 'node:crypto';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { performance } from 'node:perf_hooks';
import { addrProof } from '../src/net/client.js';
import { ClientSession } from '../src/net/clientsession.js';
import { peekEnvelope } from '../src/net/server.js';
import type { Address } from '../src/wire/addr.js';
import { buildAuthRequest, openAuthGrant } from '../src/wire/auth.js';
import type { Bodies, TicketGrant } from '../src/wire/catalog.js';
import { NetMode } from '../src/wire/constants.js';
import type { Message } from '../src/wire/envelope.js';
import { decodeDatagram } from '../src/wire/envelope.js';
import { errorName } from '../src/wire/errors.js';
import { generatePair, privateKeyObject } from '../src/wire/keys.js';
import type { Kind, Mix } from './mix.js';
import { KINDS, kindPicker } from './mix.js';
import { Pacer } from './pacer.js';
import { toParent } from './procs.js';
import type { HistogramJSON } from './stats.js';
import { Histogram } from './stats.js';

/** Terminals beyond this many per worker share sockets (file descriptors, kernel buffers). */
export const SOCKETS_MAX = 256;
/** Locator IDs per QUERY_ADDR / QUERY_STATUS. */
export const IDS_PER_QUERY = 4;
/** Terminals per home group; each terminal may also join the next GROUP_CIRCLE - 1 groups. */
export const TERMINALS_PER_GROUP = 10;
export const GROUP_CIRCLE = 4;
/** Terminals per media ID of match-submit (so partners are there to be found). */
export const TERMINALS_PER_MEDIA = 20;

export interface WorkerIdentity {
  index: number;
  deviceId: string;
  /** Ed25519, base64url. */
  signPublic: string;
  signSecret: string;
}

export interface SetupCommand {
  cmd: 'setup';
  workerId: number;
  identities: WorkerIdentity[];
  totalTerminals: number;
  bindHost: string;
  authd: Address;
  authdKidHex: string;
  /** authd's X25519 sealing key, base64url. */
  authdSeal: string;
  /** Default: the address authd puts in the grant. */
  locatord?: Address;
  matchd?: Address;
  audiences: { locator: string; match: string };
  timeoutMs: number;
  /** Open matchd sessions (skipped when the mix sends no match-submit). */
  withMatch: boolean;
}

export interface PrepareCommand {
  cmd: 'prepare';
  locatorIds: string[];
  homeGroups: string[];
}

export interface RunCommand {
  cmd: 'run';
  step: number;
  /** Offered requests/s of this worker; null = flat out with `window` outstanding. */
  ratePerS: number | null;
  seconds: number;
  window: number;
  mix: Mix;
  timeoutMs: number;
}

export type WorkerCommand = SetupCommand | PrepareCommand | RunCommand;

export interface KindReport {
  sent: number;
  answered: number;
  /** Answered before the end of the step (what the throughput counts). */
  answeredInStep: number;
  lost: number;
  /** ERROR replies by code name, and client-side failures (e.g. a grant that does not open). */
  errors: Record<string, number>;
  histogram: HistogramJSON;
}

export interface StepReport {
  ms: number;
  kinds: Record<string, KindReport>;
  /** MATCH_RESULT pushes: submit to result, for results of requests submitted in this step. */
  matchResults: { matched: number; noMatch: number; histogram: HistogramJSON };
  /** Open loop only: requests the pacer handed out and how many went out more than 5 ms late. */
  pacer: { offered: number; late: number; maxLateMs: number } | null;
  /** Event-loop utilisation of this worker over the step (1 = saturated). */
  elu: number;
  cpuS: number;
  /** Answers that failed the session MAC or replay check, or did not decode. */
  badReplies: number;
  /** Answers after their request had been counted lost. */
  lateReplies: number;
  sendErrors: number;
}

export interface SetupReply {
  type: 'setup';
  terminals: { index: number; locatorId: string; homeGroup?: string }[];
  locatord: Address;
  matchd: Address | null;
  report: StepReport;
}

export interface ProgressMessage {
  type: 'progress';
  step: number;
  sent: number;
  answered: number;
  lost: number;
  errors: number;
}

// ---- state ----------------------------------------------------------------------------------

interface Fresh {
  loc: ClientSession;
  match: ClientSession | undefined;
  ticket: Uint8Array;
}

interface Terminal {
  index: number;
  deviceId: string;
  deviceKey: KeyObject;
  socket: dgram.Socket;
  loc: ClientSession | undefined;
  match: ClientSession | undefined;
  matchOpened: boolean;
  /** Sessions from the last auth, for the next register. */
  fresh: Fresh | undefined;
  /** The session of the newest REGISTER with a new ticket (t.loc once acknowledged). */
  newest?: ClientSession | undefined;
  locatorId: Buffer | undefined;
  /** Groups it is in (the home group first). */
  groups: Buffer[];
  /** Groups created or joined during the run: what group-leave leaves first. */
  extraGroups: Buffer[];
  circle: Buffer[];
  /**
   * Groups (hex) with a join or leave in flight: no second operation on them until it is
   * answered or lost, or a members list could race a leave and be refused (FORBIDDEN) for a
   * reason of the bench's making.
   */
  busy: Set<string>;
}

interface Built {
  bytes: Buffer;
  to: Address;
  /** The session the answer must be MACed in; none for authd. */
  session: ClientSession | undefined;
  /** Check and use the answer; an error name, or null when it is what was asked for. */
  onAnswer: (m: Message) => string | null;
  /** Called once the request is answered or lost. */
  onDone?: () => void;
}

class KindStats {
  sent = 0;
  answered = 0;
  answeredInStep = 0;
  lost = 0;
  errors: Record<string, number> = {};
  readonly hist = new Histogram();

  error(name: string): void {
    this.errors[name] = (this.errors[name] ?? 0) + 1;
  }

  report(): KindReport {
    return { sent: this.sent, answered: this.answered, answeredInStep: this.answeredInStep, lost: this.lost, errors: this.errors, histogram: this.hist.toJSON() };
  }
}

class Stats {
  readonly kinds = new Map<string, KindStats>();
  endMs = Infinity;
  outstanding = 0;
  errorCount = 0;
  /** Flat out: called when a request is answered or lost, to send the next one. */
  onComplete: (() => void) | undefined;
  readonly matchHist = new Histogram();
  matched = 0;
  noMatch = 0;

  kind(name: string): KindStats {
    let k = this.kinds.get(name);
    if (!k) this.kinds.set(name, (k = new KindStats()));
    return k;
  }

  totals(): { sent: number; answered: number; lost: number } {
    let sent = 0;
    let answered = 0;
    let lost = 0;
    for (const k of this.kinds.values()) {
      sent += k.sent;
      answered += k.answered;
      lost += k.lost;
    }
    return { sent, answered, lost };
  }
}

interface Pending {
  kind: string;
  at: number;
  stats: Stats;
  session: ClientSession | undefined;
  onAnswer: (m: Message) => string | null;
  onDone: (() => void) | undefined;
  settle: ((m: Message | null) => void) | undefined;
  /** The request as sent (sent again after an ADDR_CHALLENGE). */
  bytes: Buffer;
  to: Address;
}

let workerId = 0;
let counter = 0;
let timeoutMs = 1000;
let bindHost = '127.0.0.1';
let authd: Address;
let authdKid: Buffer;
let authdSeal: Buffer;
let locatord: Address | undefined;
let matchd: Address | undefined;
let audiences = { locator: 'locator', match: 'match' };
let mediaIds = 1;
const terminals: Terminal[] = [];
const sockets: dgram.Socket[] = [];
let peers: Buffer[] = [];
const pending = new Map<number, Pending>();
/** Session ID (hex) -> session, for server pushes (MATCH_RESULT, PROBE). */
const sessionsBySid = new Map<string, ClientSession>();
/** matchId (hex) -> when submitted and into which step's stats, for submit -> result latency. */
const submitted = new Map<string, { at: number; stats: Stats }>();
let badReplies = 0;
let lateReplies = 0;
let sendErrors = 0;

const rand = (n: number): number => Math.floor(Math.random() * n);
const hex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.length).toString('hex');

function ridOf(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt16BE(workerId, 0);
  b.writeUIntBE(n, 2, 6);
  return b;
}

const randomGroupId = (): Buffer => randomBytes(16);

function remember(s: ClientSession): void {
  sessionsBySid.set(hex(s.sid), s);
}

// ---- sending and receiving -----------------------------------------------------------------

function send(stats: Stats, kind: string, t: Terminal, build: (rid: Buffer) => Built, settle?: (m: Message | null) => void): void {
  const n = ++counter;
  let b: Built;
  try {
    b = build(ridOf(n));
  } catch (err) {
    // A request that cannot even be built (e.g. no ticket for matchd) is an error of its kind.
    stats.kind(kind).error(`cannot send: ${(err as Error).message}`);
    stats.errorCount++;
    settle?.(null);
    return;
  }
  stats.kind(kind).sent++;
  stats.outstanding++;
  pending.set(n, { kind, at: performance.now(), stats, session: b.session, onAnswer: b.onAnswer, onDone: b.onDone, settle, bytes: b.bytes, to: b.to });
  t.socket.send(b.bytes, b.to.port, b.to.ip);
}

function complete(p: Pending): void {
  p.onDone?.();
  p.stats.outstanding--;
  p.stats.onComplete?.();
}

function onDatagram(socket: dgram.Socket, raw: Buffer, rinfo: dgram.RemoteInfo): void {
  const peek = peekEnvelope(raw);
  if (peek.type === undefined) {
    badReplies++;
    return;
  }
  if (peek.type % 2 === 0) {
    onPush(socket, raw, rinfo);
    return;
  }
  const rid = peek.rid && Buffer.from(peek.rid.buffer, peek.rid.byteOffset, peek.rid.length);
  if (!rid || rid.readUInt16BE(0) !== workerId) {
    badReplies++;
    return;
  }
  const n = rid.readUIntBE(2, 6);
  const p = pending.get(n);
  if (!p) {
    lateReplies++;
    return;
  }
  const now = performance.now();
  const d = decodeDatagram(raw);
  // A reply that does not decode or verify is not the answer: the real one may still come.
  if (!d.ok || (p.session && !p.session.accept({ msg: d.msg, raw, from: { ip: rinfo.address, port: rinfo.port } }))) {
    badReplies++;
    return;
  }
  pending.delete(n);
  const k = p.stats.kind(p.kind);
  k.answered++;
  if (now <= p.stats.endMs) k.answeredInStep++;
  k.hist.record(now - p.at);
  let err: string | null;
  try {
    err = d.msg.name === 'ERROR' ? errorName(d.msg.body.code) : p.onAnswer(d.msg);
  } catch (e) {
    err = `bad answer: ${(e as Error).message}`;
  }
  if (err) {
    k.error(err);
    p.stats.errorCount++;
  }
  p.settle?.(err ? null : d.msg);
  complete(p);
}

/** Server pushes: MATCH_RESULT (acknowledged, latency recorded) and PROBE (answered). */
function onPush(socket: dgram.Socket, raw: Buffer, rinfo: dgram.RemoteInfo): void {
  const d = decodeDatagram(raw);
  if (!d.ok || !d.msg.auth) {
    badReplies++;
    return;
  }
  const session = sessionsBySid.get(hex(d.msg.auth.sid));
  if (!session || !session.accept({ msg: d.msg, raw, from: { ip: rinfo.address, port: rinfo.port } })) {
    badReplies++;
    return;
  }
  const m = d.msg;
  if (m.name === 'MATCH_RESULT') {
    socket.send(session.encode('MATCH_RESULT_ACK', m.rid, { matchId: m.body.matchId }), rinfo.port, rinfo.address);
    const key = hex(m.body.matchId);
    const s = submitted.get(key);
    if (s) {
      submitted.delete(key);
      if (m.body.state === 1) {
        s.stats.matched++;
        s.stats.matchHist.record(performance.now() - s.at);
      } else s.stats.noMatch++;
    }
  } else if (m.name === 'PROBE') {
    socket.send(session.encode('PROBE_ACK', m.rid, {}), rinfo.port, rinfo.address);
  } else if (m.name === 'ADDR_CHALLENGE') {
    // Our address is not validated for the session yet (devloc-protocol(7), ADDRESS
    // VALIDATION): echo the token from here, then send the request again at once.
    const rid = Buffer.from(m.rid);
    const p = rid.readUInt16BE(0) === workerId ? pending.get(rid.readUIntBE(2, 6)) : undefined;
    socket.send(addrProof(m), rinfo.port, rinfo.address);
    if (p) socket.send(p.bytes, p.to.port, p.to.ip);
  }
}

/** Requests unanswered after the timeout are lost (checked every 50 ms, oldest first). */
function sweep(): void {
  const now = performance.now();
  for (const [n, p] of pending) {
    if (now - p.at <= timeoutMs) break;
    pending.delete(n);
    p.stats.kind(p.kind).lost++;
    p.settle?.(null);
    complete(p);
  }
  if (submitted.size > 100_000) submitted.clear();
}

// ---- the kinds of request -------------------------------------------------------------------

function authRequest(t: Terminal, onGrant: (g: { locatorId: Uint8Array; loc: ClientSession; locGrant: TicketGrant; match: ClientSession | undefined; matchGrant: TicketGrant | undefined }) => void): (rid: Buffer) => Built {
  return (rid) => {
    const cnf = generatePair('x25519');
    const built = buildAuthRequest({
      rid, deviceId: t.deviceId, deviceKey: t.deviceKey, authdKid, authdSealPublic: authdSeal,
      audiences: [audiences.locator, audiences.match], cnf: cnf.public, timeMs: Date.now(),
    });
    return {
      bytes: built.datagram, to: authd, session: undefined,
      onAnswer: (m) => {
        if (m.name !== 'AUTH_RESPONSE') return `unexpected ${m.name}`;
        const opened = openAuthGrant(built.keys, rid, m.body.sealed, built.nonce);
        if (!opened.ok) return 'grant does not open';
        const cnfSecret = privateKeyObject('X25519', cnf);
        const locGrant = opened.grant.tickets.find((x) => x.aud === audiences.locator);
        const matchGrant = opened.grant.tickets.find((x) => x.aud === audiences.match);
        const loc = locGrant && ClientSession.fromGrant(locGrant, cnfSecret);
        if (!locGrant || !loc) return `no usable ticket for "${audiences.locator}"`;
        const match = matchGrant ? ClientSession.fromGrant(matchGrant, cnfSecret) ?? undefined : undefined;
        remember(loc);
        if (match) remember(match);
        onGrant({ locatorId: opened.grant.locatorId, loc, locGrant, match, matchGrant });
        return null;
      },
    };
  };
}

const expect = (name: string) => (m: Message): string | null => (m.name === name ? null : `unexpected ${m.name}`);

function registerBody(t: Terminal, ticket?: Uint8Array): Bodies['REGISTER'] {
  return {
    ...(ticket ? { ticket } : {}), timeMs: Date.now(), netMode: NetMode.FULL_CONE, nickname: `t${t.index}`,
    mediaId: `bench-${t.index % mediaIds}`, ttlS: 3600,
  };
}

function locSession(t: Terminal): ClientSession {
  if (!t.loc) throw new Error('not registered');
  return t.loc;
}

function someIds(): Buffer[] {
  return Array.from({ length: IDS_PER_QUERY }, () => peers[rand(peers.length)]!);
}

function matchSubmit(t: Terminal, sentAt: () => number, stats: Stats): (rid: Buffer) => Built {
  return (rid) => {
    const s = t.match;
    if (!s || !matchd) throw new Error('no ticket for matchd');
    const opening = !t.matchOpened;
    if (opening) s.restartReceive();
    const body: Bodies['MATCH_SUBMIT'] = {
      ...(opening ? { ticket: s.grant.ticket, timeMs: Date.now() } : {}),
      mediaId: `bench-${rand(mediaIds)}`, appType: 'game', minParty: 2, maxParty: 2,
      attrs: { level: 1 + rand(100) }, netMode: NetMode.FULL_CONE, maxWaitS: 10, nickname: `t${t.index}`,
    };
    return {
      bytes: s.encode('MATCH_SUBMIT', rid, body), to: matchd, session: s,
      onAnswer: (m) => {
        if (m.name !== 'MATCH_SUBMIT_ACK') return `unexpected ${m.name}`;
        if (s === t.match) t.matchOpened = true;
        submitted.set(hex(m.body.matchId), { at: sentAt(), stats });
        return null;
      },
    };
  };
}

/** Send one request of `kind` for terminal `t` (the run phase). */
function sendKind(kind: Kind, t: Terminal, stats: Stats): void {
  const loc = (name: 'REFRESH' | 'QUERY_ADDR' | 'QUERY_STATUS' | 'GROUP_CREATE' | 'GROUP_JOIN' | 'GROUP_LEAVE' | 'GROUP_MEMBERS', body: object, answer: string, use?: (m: Message) => void, busyGroup?: Buffer) =>
    (rid: Buffer): Built => {
      const s = locSession(t);
      const key = busyGroup && hex(busyGroup);
      if (key) t.busy.add(key);
      return {
        bytes: s.encode(name, rid, body as never), to: locatord!, session: s,
        onAnswer: (m) => {
          if (m.name !== answer) return `unexpected ${m.name}`;
          use?.(m);
          return null;
        },
        ...(key ? { onDone: () => t.busy.delete(key) } : {}),
      };
    };
  const idle = (gs: Buffer[]): Buffer[] => gs.filter((g) => !t.busy.has(hex(g)));
  switch (kind) {
    case 'auth':
      return send(stats, kind, t, authRequest(t, (g) => {
        t.fresh = { loc: g.loc, match: g.match, ticket: g.locGrant.ticket };
      }));
    case 'register': {
      const fresh = t.fresh;
      t.fresh = undefined;
      if (fresh) {
        t.newest = fresh.loc;
        // A new ticket: REGISTER with it opens a new session, which the terminal then uses.
        return send(stats, kind, t, (rid) => ({
          bytes: fresh.loc.encode('REGISTER', rid, registerBody(t, fresh.ticket)), to: locatord!, session: fresh.loc,
          onAnswer: (m) => {
            if (m.name !== 'REGISTER_ACK') return `unexpected ${m.name}`;
            // An older re-registration answered after a newer one was sent: keep to the newer.
            if (t.newest !== fresh.loc) return null;
            t.loc = fresh.loc;
            if (fresh.match) {
              t.match = fresh.match;
              t.matchOpened = false;
            }
            return null;
          },
        }));
      }
      return send(stats, kind, t, (rid) => {
        const s = locSession(t);
        return { bytes: s.encode('REGISTER', rid, registerBody(t)), to: locatord!, session: s, onAnswer: expect('REGISTER_ACK') };
      });
    }
    case 'refresh':
      return send(stats, kind, t, loc('REFRESH', {}, 'REFRESH_ACK'));
    case 'query-addr':
      return send(stats, kind, t, loc('QUERY_ADDR', { ids: someIds() }, 'QUERY_ADDR_RESULT'));
    case 'query-status':
      return send(stats, kind, t, loc('QUERY_STATUS', { ids: someIds() }, 'QUERY_STATUS_RESULT'));
    case 'group-create':
      return send(stats, kind, t, loc('GROUP_CREATE', { name: `bench ${workerId}.${counter}` }, 'GROUP_CREATE_ACK', (m) => {
        if (m.name !== 'GROUP_CREATE_ACK') return;
        const g = Buffer.from(m.body.groupId);
        t.groups.push(g);
        t.extraGroups.push(g);
      }));
    case 'group-join': {
      const free = idle(t.circle);
      const g = free[rand(free.length)];
      // Every neighbour busy: join the home group again (idempotent, never left: no race).
      if (!g) return send(stats, kind, t, loc('GROUP_JOIN', { groupId: t.groups[0] ?? randomGroupId() }, 'GROUP_JOIN_ACK'));
      return send(stats, kind, t, loc('GROUP_JOIN', { groupId: g }, 'GROUP_JOIN_ACK', () => {
        if (!t.groups.some((x) => x.equals(g))) {
          t.groups.push(g);
          t.extraGroups.push(g);
        }
      }, g));
    }
    case 'group-leave': {
      // A group joined or created in the run (never the home group), else a neighbour the
      // terminal may not be in (a no-op leave).
      const extra = idle(t.extraGroups);
      const free = idle(t.circle);
      const g = extra[extra.length - 1] ?? free[rand(free.length)];
      // Every candidate busy: leave a group that does not exist (acknowledged all the same).
      if (!g) return send(stats, kind, t, loc('GROUP_LEAVE', { groupId: randomGroupId() }, 'GROUP_LEAVE_ACK'));
      t.extraGroups = t.extraGroups.filter((x) => !x.equals(g));
      // Not a member any more from now on: group-members must not ask about it meanwhile.
      t.groups = t.groups.filter((x) => !x.equals(g));
      return send(stats, kind, t, loc('GROUP_LEAVE', { groupId: g }, 'GROUP_LEAVE_ACK', undefined, g));
    }
    case 'group-members': {
      const mine = idle(t.groups);
      const g = mine[rand(mine.length)] ?? t.groups[0];
      if (!g) return send(stats, kind, t, () => { throw new Error('in no group'); });
      return send(stats, kind, t, loc('GROUP_MEMBERS', { groupId: g }, 'GROUP_MEMBERS_RESULT'));
    }
    case 'match-submit': {
      const at = performance.now();
      return send(stats, kind, t, matchSubmit(t, () => at, stats));
    }
  }
}

// ---- commands -------------------------------------------------------------------------------

/** One request in the setup phase, retried (new request ID, new sequence) when lost. */
async function call(stats: Stats, kind: string, t: Terminal, build: () => (rid: Buffer) => Built, tries = 5): Promise<Message> {
  let last = 'no answer';
  for (let i = 0; i < tries; i++) {
    const m = await new Promise<Message | null>((resolve) => send(stats, kind, t, build(), resolve));
    if (m) return m;
    const k = stats.kind(kind);
    last = Object.keys(k.errors).at(-1) ?? 'no answer';
  }
  throw new Error(`${kind} for terminal ${t.index} failed ${tries} times (last: ${last})`);
}

async function pool<T>(items: T[], concurrency: number, fn: (x: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, async () => {
    while (next < items.length) await fn(items[next++]!);
  }));
}

function stepReport(stats: Stats, ms: number, elu: number, cpuS: number, pacer: Pacer | null): StepReport {
  return {
    ms,
    kinds: Object.fromEntries([...stats.kinds].map(([k, v]) => [k, v.report()])),
    matchResults: { matched: stats.matched, noMatch: stats.noMatch, histogram: stats.matchHist.toJSON() },
    pacer: pacer ? { offered: pacer.sent, late: pacer.late, maxLateMs: pacer.maxLateMs } : null,
    elu, cpuS, badReplies, lateReplies, sendErrors,
  };
}

async function setup(c: SetupCommand): Promise<SetupReply> {
  workerId = c.workerId;
  timeoutMs = c.timeoutMs;
  bindHost = c.bindHost;
  authd = c.authd;
  authdKid = Buffer.from(c.authdKidHex, 'hex');
  authdSeal = Buffer.from(c.authdSeal, 'base64url');
  locatord = c.locatord;
  matchd = c.matchd;
  audiences = c.audiences;
  mediaIds = Math.max(1, Math.floor(c.totalTerminals / TERMINALS_PER_MEDIA));
  const nSockets = Math.min(c.identities.length, SOCKETS_MAX);
  for (let i = 0; i < nSockets; i++) {
    const s = dgram.createSocket(bindHost.includes(':') ? 'udp6' : 'udp4');
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.bind(0, bindHost, () => {
        s.off('error', reject);
        resolve();
      });
    });
    try {
      s.setRecvBufferSize(1 << 20);
    } catch {
      /* the system maximum applies */
    }
    s.on('message', (raw, rinfo) => onDatagram(s, raw, rinfo));
    s.on('error', () => sendErrors++);
    sockets.push(s);
  }
  c.identities.forEach((id, i) => {
    terminals.push({
      index: id.index, deviceId: id.deviceId,
      deviceKey: privateKeyObject('Ed25519', { public: Buffer.from(id.signPublic, 'base64url'), secret: Buffer.from(id.signSecret, 'base64url') }),
      socket: sockets[i % nSockets]!, loc: undefined, match: undefined, matchOpened: false, fresh: undefined,
      locatorId: undefined, groups: [], extraGroups: [], circle: [], busy: new Set(),
    });
  });
  setInterval(sweep, 50).unref();
  const stats = new Stats();
  const t0 = performance.now();
  const elu0 = performance.eventLoopUtilization();
  const cpu0 = process.cpuUsage();
  const homeGroups = new Map<number, string>();
  await pool(terminals, 16, async (t) => {
    let grant: { loc: ClientSession; locGrant: TicketGrant; match: ClientSession | undefined; matchGrant: TicketGrant | undefined } | undefined;
    await call(stats, 'auth', t, () => authRequest(t, (g) => {
      t.locatorId = Buffer.from(g.locatorId);
      grant = g;
    }));
    const g = grant!;
    locatord ??= g.locGrant.addr;
    matchd ??= g.matchGrant?.addr;
    if (!locatord) throw new Error(`authd did not say where "${audiences.locator}" is: give --locatord`);
    t.loc = g.loc;
    t.match = g.match;
    await call(stats, 'register', t, () => (rid) => ({
      bytes: g.loc.encode('REGISTER', rid, registerBody(t, g.locGrant.ticket)), to: locatord!, session: g.loc, onAnswer: expect('REGISTER_ACK'),
    }));
    if (c.withMatch) {
      if (!t.match || !matchd) throw new Error(`authd granted no ticket for "${audiences.match}" or did not say where matchd is: give --matchd, or a --mix without match-submit`);
      const ack = await call(stats, 'match-submit', t, () => matchSubmit(t, () => performance.now(), stats));
      if (ack.name === 'MATCH_SUBMIT_ACK') {
        const matchId = ack.body.matchId;
        submitted.delete(hex(matchId));
        const s = t.match;
        await call(stats, 'match-cancel', t, () => (rid) => ({ bytes: s.encode('MATCH_CANCEL', rid, { matchId }), to: matchd!, session: s, onAnswer: expect('MATCH_CANCEL_ACK') }));
      }
    }
    if (t.index % TERMINALS_PER_GROUP === 0) {
      const m = await call(stats, 'group-create', t, () => (rid) => ({
        bytes: locSession(t).encode('GROUP_CREATE', rid, { name: `home ${t.index / TERMINALS_PER_GROUP}` }), to: locatord!, session: t.loc, onAnswer: expect('GROUP_CREATE_ACK'),
      }));
      if (m.name === 'GROUP_CREATE_ACK') {
        t.groups.push(Buffer.from(m.body.groupId));
        homeGroups.set(t.index, hex(m.body.groupId));
      }
    }
  });
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  return {
    type: 'setup',
    terminals: terminals.map((t) => ({ index: t.index, locatorId: hex(t.locatorId!), ...(homeGroups.has(t.index) ? { homeGroup: homeGroups.get(t.index)! } : {}) })),
    locatord: locatord!, matchd: matchd ?? null,
    report: stepReport(stats, ms, performance.eventLoopUtilization(elu0).utilization, (cpu.user + cpu.system) / 1e6, null),
  };
}

async function prepare(c: PrepareCommand): Promise<{ type: 'prepared'; joined: number }> {
  peers = c.locatorIds.map((h) => Buffer.from(h, 'hex'));
  const groups = c.homeGroups.map((h) => Buffer.from(h, 'hex'));
  const stats = new Stats();
  let joined = 0;
  for (const t of terminals) {
    const home = Math.floor(t.index / TERMINALS_PER_GROUP);
    t.circle = groups.length ? Array.from({ length: Math.min(GROUP_CIRCLE, groups.length) - 1 }, (_, i) => groups[(home + 1 + i) % groups.length]!) : [];
  }
  await pool(terminals.filter((t) => t.groups.length === 0), 16, async (t) => {
    const g = groups[Math.floor(t.index / TERMINALS_PER_GROUP)];
    if (!g) return;
    await call(stats, 'group-join', t, () => (rid) => ({ bytes: locSession(t).encode('GROUP_JOIN', rid, { groupId: g }), to: locatord!, session: t.loc, onAnswer: expect('GROUP_JOIN_ACK') }));
    t.groups.push(g);
    joined++;
  });
  return { type: 'prepared', joined };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function run(c: RunCommand): Promise<{ type: 'done'; report: StepReport }> {
  timeoutMs = c.timeoutMs;
  badReplies = 0;
  lateReplies = 0;
  sendErrors = 0;
  const stats = new Stats();
  const pick = kindPicker(c.mix);
  const fire = (): void => sendKind(KINDS[pick(Math.random())]!, terminals[rand(terminals.length)]!, stats);
  const progress = setInterval(() => {
    const x = stats.totals();
    toParent({ type: 'progress', step: c.step, ...x, errors: stats.errorCount } satisfies ProgressMessage);
  }, 250);
  const elu0 = performance.eventLoopUtilization();
  const cpu0 = process.cpuUsage();
  const start = performance.now();
  const end = start + c.seconds * 1000;
  stats.endMs = end;
  let pacer: Pacer | null = null;
  if (c.ratePerS !== null) {
    const p = new Pacer(c.ratePerS, start, end);
    pacer = p;
    const timer = setInterval(() => {
      const { count } = p.take(performance.now());
      for (let i = 0; i < count; i++) fire();
    }, 1);
    await sleep(end - performance.now());
    // Whatever is still due before the end goes out now (a late timer must not offer less).
    const { count } = p.take(end);
    for (let i = 0; i < count; i++) fire();
    clearInterval(timer);
  } else {
    stats.onComplete = () => {
      if (performance.now() < end) fire();
    };
    for (let i = 0; i < c.window; i++) fire();
    await sleep(end - performance.now());
    stats.onComplete = undefined;
  }
  const ms = performance.now() - start;
  const elu = performance.eventLoopUtilization(elu0).utilization;
  const cpu = process.cpuUsage(cpu0);
  // The answers still due: wait for them up to the timeout, then the rest are lost.
  const drainUntil = performance.now() + timeoutMs + 100;
  while (stats.outstanding > 0 && performance.now() < drainUntil) await sleep(20);
  for (const [n, p] of pending) {
    if (p.stats !== stats) continue;
    pending.delete(n);
    p.stats.kind(p.kind).lost++;
    p.onDone?.();
    p.stats.outstanding--;
  }
  clearInterval(progress);
  return { type: 'done', report: stepReport(stats, ms, elu, (cpu.user + cpu.system) / 1e6, pacer) };
}

process.on('message', (m: WorkerCommand) => {
  const work = m.cmd === 'setup' ? setup(m) : m.cmd === 'prepare' ? prepare(m) : run(m);
  work.then(toParent, (err: Error) => toParent({ type: 'error', error: err.stack ?? err.message }));
});
process.on('disconnect', () => process.exit(0));
