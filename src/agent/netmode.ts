// Network mode classification against the NAT reflector (REFLECT / REFLECT_RESULT), in the
// manner of RFC 5780 §4.3-4.4, reduced to the modes of the registration field (NetMode).
//
// The reflector answers on its primary address P = (ip1, port1) and on an alternate port
// (ip1, port2) it names in REFLECT_RESULT.otherPort; if it also has an alternate address ip2
// (otherIp) it can answer from (ip2, port2). Two fresh sockets:
//
//   mapping socket                               filtering socket (once T1 named port2, ip2)
//   T1  REFLECT to P        -> observed O1        F1  REFLECT to P, change=3: answer from
//   M1  REFLECT to (ip1, port2) -> observed O2          (ip2, port2) arrives? (only with otherIp)
//   M2  REFLECT to (ip2, port1) -> observed O3    F2  REFLECT to P, change=1: answer from
//       (only with otherIp)                             (ip1, port2) arrives?
//
// No answer to T1 at all means udp-blocked. The filtering tests need their own socket: on the
// mapping socket, M1 would open the NAT's filter for (ip1, port2) and make F2 pass, and an
// unsolicited F2 answer dropped by the NAT leaves a connection-tracking entry that makes the
// NAT pick another port for M1 (Linux does exactly that), faking a symmetric NAT. Both sockets
// are new because the agent's main socket has already talked to the server's address. The
// filtering socket only ever sends to P, so each F request itself opens the NAT for P (and only
// P), and the tests can be repeated on it without touching any other filter or mapping.
//
// A filtering test is a negative test: no answer is what a filtering NAT looks like, and also
// what a lost request or answer looks like. So each is FILTER_PROBES requests spread over its
// wait, and "filtered" means none of them was answered (see FILTER_PROBES for the arithmetic).
// `decideNetMode` is the decision table (also in devloc-agent(8)).
import type { Address } from '../wire/addr.js';
import { bytesToIp, normaliseIp, sameAddress } from '../wire/addr.js';
import type { Bodies } from '../wire/catalog.js';
import { encodeDatagram } from '../wire/envelope.js';
import { MAX_DATAGRAM, NetMode, REQUEST_ID_BYTES } from '../wire/constants.js';
import type { RetransmitPolicy, Reply, Timers } from '../net/client.js';
import { nodeTimers, UdpClient } from '../net/client.js';
import type { LocalAddress } from './interfaces.js';
import { isLocalIp } from './interfaces.js';

export interface ReflectAnswer {
  observed: Address;
  /** Where the answer actually came from (the datagram's source). */
  source: Address;
  otherPort?: number;
  otherIp?: string;
}

export interface ReflectorTests {
  t1: ReflectAnswer | null;
  /** Change-address-and-port answer arrived (undefined: not tried, no alternate address). */
  f1?: boolean;
  /** Change-port answer arrived (undefined: not tried). */
  f2?: boolean;
  m1?: ReflectAnswer | null;
  m2?: ReflectAnswer | null;
}

export interface Classification {
  mode: NetMode;
  /** Short reason naming the deciding test, for status and logs. */
  reason: string;
  /** T1's observed address: the public address as the reflector saw it. */
  observed?: Address;
  tests: ReflectorTests;
  /**
   * Some request of the tests needed a retransmission or went unanswered: the path loses
   * datagrams, so a missing answer (a negative filtering test) may be a loss, not the NAT.
   */
  lossy?: boolean;
}

/** First quick re-classification after an inconclusive one, ms (then doubling). */
export const RECLASSIFY_QUICK_MS = 2000;
/** Quick re-checks of a filtering result decided on a lossy path before it is taken as settled. */
export const LOSSY_RECHECKS = 2;

/**
 * Requests of each filtering test (F1, F2); the test is negative only when none was answered.
 * A request is answered when it and its answer both get through: under 30% loss each way with
 * 0.7 x 0.7 = 0.49, so all 8 are lost with 0.51^8 = 0.46% (two sends before: 0.51^2 = 26%, and
 * 3 of 22 full cones stayed `restricted`). A lossy verdict is also re-checked (LOSSY_RECHECKS).
 * Bounded: 2 x 8 REFLECTs padded to MAX_REFLECT_RESULT, each answered at most once and never
 * with more bytes; with T1, M1 and M2 (at most 4 sends each) a classification sends at most 28,
 * within the reflector's per-source burst (40 by default, devloc-locatord(8)).
 */
export const FILTER_PROBES = 8;

/**
 * Give-up of T1 and of each mapping test (M1, M2), in units of T. Their sends go at 0, T', 3T'
 * and 7T' (T' uniform in [T, 1.5T]), so the last one has at least 1.5 T for its answer.
 */
export const MAPPING_TEST_DEADLINE_T = 12;

/** How long a filtering test waits for an answer that may legitimately never come, ms. */
export function filterWaitMs(retransmitMs: number): number {
  return Math.max(3 * retransmitMs, 1000);
}

/**
 * When the requests of one filtering test are sent, ms after its start: evenly over the first
 * two thirds of its wait, so the last one has a third (T at the defaults) for its answer. A
 * loss-free path waits no longer than with one request. Pure.
 */
export function filterProbeTimes(waitMs: number, probes = FILTER_PROBES): number[] {
  const spread = (2 * waitMs) / 3;
  return Array.from({ length: probes }, (_, k) => (probes > 1 ? Math.round((k * spread) / (probes - 1)) : 0));
}

/**
 * Longest one classification (classifyNetwork) takes, ms: T1, then M1 and M2 at the same time,
 * each giving up after MAPPING_TEST_DEADLINE_T x T, or the filtering tests' wait after T1 if
 * that is longer. 24 s at T = 1 s. A match submit waits this long for a verdict (match.ts,
 * devloc-agent(8) MATCHING). Pure.
 */
export function classificationBoundMs(retransmitMs: number, waitMs = filterWaitMs(retransmitMs)): number {
  const test = MAPPING_TEST_DEADLINE_T * retransmitMs;
  return test + Math.max(test, waitMs);
}

/** How open a mode's filtering is (a positive filtering test is proof; a negative may be a loss). */
const OPENNESS: Partial<Record<NetMode, number>> = { [NetMode.PORT_RESTRICTED]: 1, [NetMode.RESTRICTED]: 2, [NetMode.FULL_CONE]: 3 };

/** An answer from the reflector was missing where one was expected: nothing was decided. */
export function inconclusive(c: Classification): boolean {
  return c.mode === NetMode.UDP_BLOCKED || (c.mode === NetMode.UNKNOWN && c.tests.t1 !== null && c.tests.m1 === null);
}

/**
 * When to classify again after `c`, the `attempt`-th quick try in a row (0 for the first), ms;
 * undefined: settled until the periodic re-classification. Pure (devloc-agent(8), NETWORK MODE).
 * - inconclusive (no answer from the reflector, or none from its alternate port and none to
 *   F1): again after RECLASSIFY_QUICK_MS, doubling, at most `reclassifyMs`;
 * - a filtering verdict (port-restricted, restricted) on a lossy path: re-checked LOSSY_RECHECKS
 *   times after RECLASSIFY_QUICK_MS, since an answer that proves more openness may have been lost.
 */
export function reclassifyDelay(c: Classification, attempt: number, reclassifyMs: number): number | undefined {
  if (inconclusive(c)) return Math.min(reclassifyMs, RECLASSIFY_QUICK_MS * 2 ** Math.min(attempt, 20));
  if (c.lossy && (c.mode === NetMode.PORT_RESTRICTED || c.mode === NetMode.RESTRICTED) && attempt < LOSSY_RECHECKS) return RECLASSIFY_QUICK_MS;
  return undefined;
}

/**
 * Combine a new classification with the previous one of the same network (same observed IP, or
 * no answer at all to tell).
 * Positive evidence wins: an answer that arrived proves a filter open, a different mapping
 * proves a symmetric NAT; what only a missing answer says yields to it. Pure.
 */
export function combineClassifications(prev: Classification | undefined, next: Classification): Classification {
  const conclusive = (c: Classification): boolean => c.mode !== NetMode.UNKNOWN && c.mode !== NetMode.UDP_BLOCKED;
  if (!prev || !prev.observed) return next;
  // A test that got no answer at all has no observed address to compare, and proves nothing: the
  // caller passes `prev` only during the quick re-checks of one address (a new address starts
  // over), so the earlier verdict stands. Under 30% loss each way 7% of tests lose every answer
  // of T1, and a full cone re-checked as lossy was shown `unknown` for a minute.
  if (!next.observed) return conclusive(prev) ? { ...prev, lossy: true } : next;
  if (normaliseIp(prev.observed.ip) !== normaliseIp(next.observed.ip)) return next;
  if (next.mode === NetMode.SYMMETRIC || next.mode === NetMode.OPEN) return next;
  // A test that lost its answers says nothing against an earlier conclusive result.
  if (!conclusive(next)) return conclusive(prev) ? { ...prev, lossy: true } : next;
  if (prev.mode === NetMode.SYMMETRIC) return next.lossy ? prev : next;
  const before = OPENNESS[prev.mode] ?? 0;
  const now = OPENNESS[next.mode] ?? 0;
  if (before > now && next.lossy) return { ...prev, reason: `${prev.reason} (seen before; the last test lost answers)`, lossy: true };
  return next;
}

/** The decision table. Pure. */
export function decideNetMode(t: ReflectorTests, local: LocalAddress[]): Classification {
  const base = { tests: t, ...(t.t1 ? { observed: t.t1.observed } : {}) };
  if (!t.t1) return { ...base, mode: NetMode.UDP_BLOCKED, reason: 'no answer from the reflector' };
  if (isLocalIp(t.t1.observed.ip, local)) return { ...base, mode: NetMode.OPEN, reason: 'observed address is on a local interface' };
  if (t.m1 === undefined) return { ...base, mode: NetMode.UNKNOWN, reason: 'reflector has no alternate port' };
  if (t.m1 === null && t.f1 !== true) return { ...base, mode: NetMode.UNKNOWN, reason: "no answer from the reflector's alternate port" };
  if (t.m1 && !sameAddress(t.m1.observed, t.t1.observed)) return { ...base, mode: NetMode.SYMMETRIC, reason: 'mapping changes with the destination port' };
  if (t.m2 && !sameAddress(t.m2.observed, t.t1.observed)) return { ...base, mode: NetMode.SYMMETRIC, reason: 'mapping changes with the destination address' };
  if (t.f1 === true) {
    if (t.m1 !== null) return { ...base, mode: NetMode.FULL_CONE, reason: 'answer from another address and port arrives' };
    // An answer from another address and port reached the mapping, so it lets in anyone: peers
    // can reach the observed address whatever M1 would have said. M1 lost its answers, so this
    // verdict is from a lossy path: an earlier `symmetric` of this network stands against it
    // (combineClassifications), as against any test that lost answers.
    return { ...base, mode: NetMode.FULL_CONE, reason: 'answer from another address and port arrives (the mapping test lost its answers)', lossy: true };
  }
  if (t.f2 === true) {
    return {
      ...base, mode: NetMode.RESTRICTED,
      reason: t.f1 === undefined ? 'answer from another port arrives (no alternate address: full cone not provable)' : 'answer from another port arrives, not from another address',
    };
  }
  return { ...base, mode: NetMode.PORT_RESTRICTED, reason: 'only answers from the address and port contacted arrive' };
}

/** Largest REFLECT_RESULT a reflector can send (IPv6 everywhere): a REFLECT is padded to it. */
export const MAX_REFLECT_RESULT = encodeDatagram('REFLECT_RESULT', new Uint8Array(REQUEST_ID_BYTES), {
  observed: { ip: 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', port: 65535 },
  from: { ip: 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', port: 65535 },
  otherPort: 65535,
  otherIp: new Uint8Array(16).fill(0xff),
}).length;

/** REFLECT padded so the request is at least as large as any answer (no amplification). */
export function encodeReflect(rid: Uint8Array, change: number, minSize = MAX_REFLECT_RESULT): Buffer {
  const body: Bodies['REFLECT'] = change ? { change } : {};
  const bare = encodeDatagram('REFLECT', rid, body);
  if (bare.length >= minSize) return bare;
  // key (1 B) + bstr head (1 B under 24, 2 B under 256) + padding
  let pad = Math.max(0, minSize - bare.length - 3);
  let out = encodeDatagram('REFLECT', rid, { ...body, padding: Buffer.alloc(pad) });
  while (out.length < minSize && out.length < MAX_DATAGRAM) {
    pad++;
    out = encodeDatagram('REFLECT', rid, { ...body, padding: Buffer.alloc(pad) });
  }
  return out;
}

export interface ClassifyOptions {
  reflector: Address;
  /** Local bind address for the test socket (host decides the family). */
  bindHost: string;
  local: () => LocalAddress[];
  /** T and the retransmission count for T1 and the mapping tests. */
  retransmitMs: number;
  /** Wait of a filtering test whose answer may legitimately never come (default filterWaitMs(T)). */
  filterWaitMs?: number;
  /** Opened on demand; injectable for tests. */
  openClient?: () => Promise<UdpClient>;
  /** Spaces the filtering requests; injectable for tests (the clients' timers should be the same). */
  timers?: Timers;
  /**
   * Abandons the tests (the agent's address changed, or it is stopping): the test sockets close
   * and the spacing timers are cleared at once, the tests not yet answered count as unanswered,
   * and the result is not a verdict on anything (its caller drops it).
   */
  signal?: AbortSignal;
}

function toAnswer(r: Reply): ReflectAnswer | null {
  if (r.msg.name !== 'REFLECT_RESULT') return null;
  const b = r.msg.body;
  const a: ReflectAnswer = { observed: b.observed, source: r.from };
  if (b.otherPort !== undefined) a.otherPort = b.otherPort;
  if (b.otherIp) {
    const ip = bytesToIp(b.otherIp);
    if (ip) a.otherIp = ip;
  }
  return a;
}

/** Run the tests above and classify. Never throws; socket trouble counts as no answer. */
export async function classifyNetwork(o: ClassifyOptions): Promise<Classification> {
  const open = o.openClient ?? (() => UdpClient.open({ bind: { host: o.bindHost, port: 0 } }));
  const timers = o.timers ?? nodeTimers;
  const clients: UdpClient[] = [];
  /** The filtering tests still waiting (their `finish`): an abort ends them unanswered. */
  const waiting = new Set<(answered: boolean) => void>();
  const abandon = (): void => {
    // Closing a client rejects its requests in flight: each test then ends as unanswered.
    for (const c of clients) void c.close();
    for (const finish of waiting) finish(false);
  };
  o.signal?.addEventListener('abort', abandon, { once: true });
  try {
    let mapping: UdpClient;
    let filtering: UdpClient;
    try {
      mapping = await open();
      clients.push(mapping);
      filtering = await open();
      clients.push(filtering);
      if (o.signal?.aborted) abandon();
    } catch (err) {
      return { mode: NetMode.UNKNOWN, reason: `cannot open a test socket: ${(err as Error).message}`, tests: { t1: null } };
    }
    for (const c of clients) c.socket.on('error', () => { /* send errors surface as missing answers */ });
    const T = o.retransmitMs;
    const normal: Partial<RetransmitPolicy> = { initialTimeoutMs: T, maxRetransmit: 3, deadlineMs: MAPPING_TEST_DEADLINE_T * T };
    const filterWait = o.filterWaitMs ?? filterWaitMs(T);
    let lossy = false;
    /** One REFLECT; `expectFrom` pins the answer's source (change requests, which may rightly go unanswered). */
    const ask = async (client: UdpClient, to: Address, change: number, policy: Partial<RetransmitPolicy>, expectFrom?: Address): Promise<ReflectAnswer | null> => {
      const rid = UdpClient.newRequestId();
      try {
        const r = await client.request(to, encodeReflect(rid, change), rid, {
          policy,
          anySource: expectFrom !== undefined,
          accept: (x) => x.msg.name === 'REFLECT_RESULT' && (expectFrom === undefined || sameAddress(x.from, expectFrom)),
          ...(expectFrom === undefined ? { onRetransmit: () => { lossy = true; } } : {}),
        });
        return toAnswer(r);
      } catch {
        if (expectFrom === undefined) lossy = true;
        return null;
      }
    };
    /**
     * One filtering test: a REFLECT with `change` at each of filterProbeTimes (each its own
     * request, sent once), all waiting until the test's end; true at the first answer from
     * `from`, false when none came.
     */
    const filterTest = (change: number, from: Address): Promise<boolean> => new Promise<boolean>((resolve) => {
      const times = filterProbeTimes(filterWait);
      const scheduled: unknown[] = [];
      let unanswered = times.length;
      let done = false;
      const finish = (answered: boolean): void => {
        if (done) return;
        done = true;
        waiting.delete(finish);
        for (const h of scheduled) timers.clearTimeout(h);
        resolve(answered);
      };
      if (o.signal?.aborted) return finish(false);
      waiting.add(finish);
      const probe = (at: number): void => {
        const left = filterWait - at;
        void ask(filtering, o.reflector, change, { initialTimeoutMs: left, maxRetransmit: 0, deadlineMs: left }, from).then((a) => {
          if (a) finish(true);
          else if (--unanswered === 0) finish(false);
        });
      };
      for (const at of times) {
        if (at === 0) probe(0);
        else scheduled.push(timers.setTimeout(() => probe(at), at));
      }
    });
    const tests: ReflectorTests = { t1: await ask(mapping, o.reflector, 0, normal) };
    const t1 = tests.t1;
    if (t1 && t1.otherPort !== undefined && !isLocalIp(t1.observed.ip, o.local())) {
      const otherPort = t1.otherPort;
      const [m1, m2, f1, f2] = await Promise.all([
        ask(mapping, { ip: o.reflector.ip, port: otherPort }, 0, normal),
        t1.otherIp ? ask(mapping, { ip: t1.otherIp, port: o.reflector.port }, 0, normal) : Promise.resolve(undefined),
        t1.otherIp ? filterTest(3, { ip: t1.otherIp, port: otherPort }) : Promise.resolve(undefined),
        filterTest(1, { ip: o.reflector.ip, port: otherPort }),
      ]);
      tests.m1 = m1;
      if (m2 !== undefined) tests.m2 = m2;
      if (f1 !== undefined) tests.f1 = f1;
      tests.f2 = f2;
    }
    return { ...decideNetMode(tests, o.local()), ...(lossy ? { lossy } : {}) };
  } finally {
    o.signal?.removeEventListener('abort', abandon);
    await Promise.all(clients.map((c) => c.close()));
  }
}
