// Benchmarks of the matching engine, for `npm run bench` (in-process, no sockets: the figures
// are the engine's; delivery costs one HMAC and one sendto per member on top):
//   - memory per waiting request, with `waiting` requests across `mediaIds` media IDs;
//   - matches formed per second with that many waiting: each submit of the "b" side meets a
//     queue of ~waiting/mediaIds requests of the "a" side, of which it may take only those its
//     requirements (and theirs) allow; the pool is refilled so it stays full;
//   - time from submit to result (p50/p99) under a steady submit rate with the tick running,
//     including requests that only match once their tolerance widens;
//   - the duration of one tick (deadlines and widening over every waiting request).
//
// Shapes of the requests: side "a" (the waiting pool): attrs {side: "a", level 1..100, region
// one of 8}, mandatory "side = b", preferred "region = own region". Side "b" (the newcomers):
// attrs {side: "b", level, region}, mandatory "side = a", preferred level within +-3 of its own.
import { randomBytes } from 'node:crypto';
import v8 from 'node:v8';
import vm from 'node:vm';
import { MatchState } from '../src/wire/catalog.js';
import type { Requirement } from '../src/wire/catalog.js';
import { NetMode } from '../src/wire/constants.js';
import type { MatchRequest, SubmitInput } from '../src/matchd/engine.js';
import { MatchEngine } from '../src/matchd/engine.js';
import { isMainModule } from '../src/common/entry.js';

export interface MatchdBenchOptions {
  /** Waiting requests in the pool. Default 100,000. */
  waiting?: number;
  /** Media IDs they are spread over. Default 100. */
  mediaIds?: number;
  /** Matches measured in the throughput phase. Default 20,000. */
  matches?: number;
  /** Steady phase: submits per second of each side, and how long. Defaults 2,000 and 5 s. */
  steadyRatePerS?: number;
  steadySeconds?: number;
  /** Print progress to stderr. */
  verbose?: boolean;
}

export interface MatchdBenchResult {
  waiting: number;
  mediaIds: number;
  /** Heap growth per waiting request (after GC when it can be forced). */
  bytesPerWaitingRequest: number;
  /** Submits per second while filling the pool (each scans its media queue). */
  fillSubmitsPerS: number;
  /** Parties (of 2) formed per second with the pool full; each match also refills the pool. */
  matchesPerS: number;
  matchesMeasured: number;
  /** Mean duration of one tick with the pool full, ms. */
  tickMs: number;
  steady: {
    ratePerS: number;
    seconds: number;
    submitted: number;
    matched: number;
    /** Submit to result of the "b" side, ms. */
    latencyP50Ms: number;
    latencyP99Ms: number;
    latencyMaxMs: number;
    /** Share of "b" requests matched on submit (the rest on a tick, after widening). */
    matchedOnSubmit: number;
  };
}

const percentile = (sorted: number[], p: number): number => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]! : 0);
const round = (x: number, digits = 0): number => Number(x.toFixed(digits));
const REGIONS = ['eu', 'us-east', 'us-west', 'sa', 'af', 'me', 'ap-south', 'ap-east'];

/** A forced GC when the runtime lets us have one (for the memory figure). */
function gcFunction(): (() => void) | null {
  try {
    v8.setFlagsFromString('--expose-gc');
    return vm.runInNewContext('gc') as () => void;
  } catch {
    return null;
  }
}

export async function benchMatchd(opts: MatchdBenchOptions = {}): Promise<MatchdBenchResult> {
  const waiting = opts.waiting ?? 100_000;
  const mediaIds = opts.mediaIds ?? 100;
  const matches = opts.matches ?? 20_000;
  const rate = opts.steadyRatePerS ?? 2_000;
  const seconds = opts.steadySeconds ?? 5;
  const say = (s: string): void => {
    if (opts.verbose) process.stderr.write(`bench matchd: ${s}\n`);
  };
  let seed = 12345;
  const rnd = (): number => {
    // xorshift32: reproducible request shapes.
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) / 0x100000000;
  };
  const gc = gcFunction();

  const bLatency: number[] = [];
  const bSubmittedAt = new Map<string, number>();
  let matchedOnSubmit = 0;
  let formed = 0;
  // IDs from a counter (after a random prefix): randomBytes per request would be the bench's
  // own cost, not the engine's (matchd draws 8 random bytes per request).
  const prefix = randomBytes(4);
  let counter = 0;
  const counted = (size: number): Buffer => {
    const b = Buffer.alloc(size);
    prefix.copy(b);
    b.writeUInt32BE(++counter, size - 4);
    return b;
  };
  const engine = new MatchEngine<null>({
    now: Date.now,
    newId: () => counted(8),
    maxWaiting: waiting * 2,
    maxWaitingPerMedia: waiting,
    maxRetained: 10_000,
    retentionMs: 1_000,
    maxWaitMs: 3_600_000,
    onFinished: (r) => {
      if (r.state !== MatchState.MATCHED) return;
      if (r.party!.members[0] === r) formed++;
      const t0 = bSubmittedAt.get(r.idHex);
      if (t0 !== undefined) {
        bLatency.push(performance.now() - t0);
        bSubmittedAt.delete(r.idHex);
      }
    },
  });
  const side = (s: 'a' | 'b', media: number): SubmitInput<null> => {
    const level = 1 + Math.floor(rnd() * 100);
    const region = REGIONS[Math.floor(rnd() * REGIONS.length)]!;
    const requirements: Requirement[] = s === 'a'
      ? [{ attr: 'side', op: 0, value: 'b', mandatory: true }, { attr: 'region', op: 0, value: region }]
      : [{ attr: 'side', op: 0, value: 'a', mandatory: true }, { attr: 'level', op: 1, min: Math.max(0, level - 3), max: level + 3 }];
    return {
      locatorId: counted(16), mediaId: `media-${media}`, appType: 'game', minParty: 2, maxParty: 2,
      attrs: { side: s, level, region }, requirements, netMode: NetMode.FULL_CONE, maxWaitS: 3600, nickname: 'player', contact: null,
    };
  };

  // ---- fill: memory per waiting request ----
  gc?.();
  const heap0 = process.memoryUsage().heapUsed;
  const fillStart = performance.now();
  for (let i = 0; i < waiting; i++) engine.submit(side('a', i % mediaIds));
  const fillMs = performance.now() - fillStart;
  gc?.();
  const heap1 = process.memoryUsage().heapUsed;
  say(`filled ${engine.waiting} in ${round(fillMs)} ms, heap +${round((heap1 - heap0) / 1e6, 1)} MB`);

  // ---- one tick with the pool full ----
  const tickRuns = 5;
  const tickStart = performance.now();
  for (let i = 0; i < tickRuns; i++) engine.tick();
  const tickMs = (performance.now() - tickStart) / tickRuns;

  // ---- throughput: b submits, each refilled with an a ----
  const formedBefore = formed;
  const tpStart = performance.now();
  for (let i = 0; i < matches; i++) {
    const media = Math.floor(rnd() * mediaIds);
    engine.submit(side('b', media));
    engine.submit(side('a', media));
  }
  const tpMs = performance.now() - tpStart;
  const tpFormed = formed - formedBefore;
  say(`throughput: ${tpFormed} matches in ${round(tpMs)} ms; waiting ${engine.waiting}`);

  // ---- steady rate, real time, ticking ----
  const steadyStart = performance.now();
  let submitted = 0;
  let lastTick = steadyStart;
  let stop = false;
  const pending: MatchRequest<null>[] = [];
  bLatency.length = 0;
  while (!stop) {
    const now = performance.now();
    const due = Math.floor(((now - steadyStart) / 1000) * rate);
    while (submitted < due) {
      const media = Math.floor(rnd() * mediaIds);
      const t0 = performance.now();
      const b = engine.submit(side('b', media));
      if (b.state === MatchState.MATCHED) {
        matchedOnSubmit++;
        bLatency.push(performance.now() - t0);
      } else {
        bSubmittedAt.set(b.idHex, t0);
        pending.push(b);
      }
      engine.submit(side('a', media));
      submitted++;
    }
    if (now - lastTick >= 250) {
      lastTick = now;
      engine.tick();
    }
    if (now - steadyStart >= seconds * 1000) stop = true;
    await new Promise((r) => setImmediate(r));
  }
  const sorted = [...bLatency].sort((x, y) => x - y);
  say(`steady: ${submitted} b submitted, ${bLatency.length} matched, ${pending.filter((p) => p.state === MatchState.WAITING).length} still waiting`);
  engine.clear();
  return {
    waiting, mediaIds,
    bytesPerWaitingRequest: round((heap1 - heap0) / waiting),
    fillSubmitsPerS: round(waiting / (fillMs / 1000)),
    matchesPerS: round(tpFormed / (tpMs / 1000)),
    matchesMeasured: tpFormed,
    tickMs: round(tickMs, 2),
    steady: {
      ratePerS: rate, seconds, submitted, matched: bLatency.length,
      latencyP50Ms: round(percentile(sorted, 0.5), 3),
      latencyP99Ms: round(percentile(sorted, 0.99), 3),
      latencyMaxMs: round(sorted[sorted.length - 1] ?? 0, 3),
      matchedOnSubmit: round(submitted ? matchedOnSubmit / submitted : 0, 3),
    },
  };
}

if (isMainModule(import.meta.url)) {
  benchMatchd({ verbose: true }).then(
    (r) => process.stdout.write(JSON.stringify(r, null, 2) + '\n'),
    (err: Error) => {
      process.stderr.write(`bench matchd: ${err.stack ?? err.message}\n`);
      process.exit(1);
    },
  );
}
