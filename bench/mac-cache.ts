// What the session MACs' pad cache saves (SessionMacs, src/wire/hmac-sha256.ts, at locatord's
// size SESSION_MAC_CACHE_KEYS), in one process: MAC checks of a REFRESH-sized datagram under keys
// visited in turn, for sets of keys that fit the cache and sets that do not. scale1m's working sets
// are such sets: 10k terminals refreshing use 20k keys (two per session), 100k use 200k. Reported
// per set: CPU per check and the share of checks that found no cached pads (median round; the
// sets alternate within a round), and what one miss costs, from the smallest and the largest set.
// README "The table's size, or how many terminals refresh?".
//   node build/bench/mac-cache.js [rounds]
import { randomBytes } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { SESSION_MAC_CACHE_KEYS } from '../src/net/sessions.js';
import { SessionMacs } from '../src/wire/hmac-sha256.js';
import { cpuUs } from './micro-locatord.js';
import { median } from './stats.js';

export interface MacCacheOptions {
  /** Keys the cache holds (a power of two; default locatord's). */
  entries?: number;
  /** Sizes of the key sets checked in turn (default 1,000, 20,000 and 200,000). */
  keySets?: number[];
  /** Checks per set and round (default 1,000,000). */
  checksPerRound?: number;
  rounds?: number;
}

export interface MacCacheResult {
  entries: number;
  sets: { keys: number; nsPerCheck: number; missShare: number; rounds: number[] }[];
  /** (ns per check of the largest set - the smallest's) / (their miss shares' difference). */
  nsPerMiss: number;
}

/** A 60-byte datagram (a REFRESH with its MAC is about that) checked under `keys` in turn by one SessionMacs. */
export function runMacCache(o: MacCacheOptions = {}): MacCacheResult {
  const entries = o.entries ?? SESSION_MAC_CACHE_KEYS;
  const sizes = o.keySets ?? [1000, 20_000, 200_000];
  const checks = o.checksPerRound ?? 1_000_000;
  const rounds = o.rounds ?? 3;
  const macs = new SessionMacs(entries);
  const datagram = randomBytes(60);
  const keySets = sizes.map((n) => Array.from({ length: n }, () => randomBytes(32)));
  const ns = sizes.map(() => [] as number[]);
  const misses = sizes.map(() => [] as number[]);
  let sink = 0;
  for (let r = 0; r < rounds; r++) {
    // The sets' order alternates, so that a drift in the machine's speed hits all of them.
    const order = sizes.map((_, i) => i);
    if (r % 2 === 1) order.reverse();
    for (const i of order) {
      const keys = keySets[i]!;
      // One pass untimed: the cache holds what the set leaves in it, not the previous set's keys.
      for (const k of keys) sink += macs.verify(k, datagram) ? 1 : 0;
      const m0 = macs.misses;
      const t0 = cpuUs();
      for (let c = 0; c < checks; c++) sink += macs.verify(keys[c % keys.length]!, datagram) ? 1 : 0;
      ns[i]!.push(((cpuUs() - t0) * 1000) / checks);
      misses[i]!.push((macs.misses - m0) / checks);
    }
  }
  if (sink !== 0) throw new Error('a random MAC verified');
  const sets = sizes.map((keys, i) => ({
    keys, nsPerCheck: Math.round(median(ns[i]!)), missShare: Math.round(median(misses[i]!) * 1000) / 1000, rounds: ns[i]!.map(Math.round),
  }));
  const lo = sets[0]!;
  const hi = sets[sets.length - 1]!;
  const dMiss = hi.missShare - lo.missShare;
  return { entries, sets, nsPerMiss: dMiss > 0 ? Math.round((hi.nsPerCheck - lo.nsPerCheck) / dMiss) : 0 };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.stdout.write(`${JSON.stringify(runMacCache({ rounds: Number(process.argv[2] ?? 3) }), null, 2)}\n`);
}
