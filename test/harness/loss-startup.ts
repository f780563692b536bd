// Startup under 30% UDP loss each way (issue 17 item 4; devloc-agent(8) TIMERS, "Time to
// registration under loss", and NETWORK MODE): agents with the default timers (T = 1 s,
// backoff 1 s .. 60 s) behind lossy symmetric and full-cone NATs in network namespaces
// (nftables numgen drop, test/agent/netns.ts `lossy`). Per start: the time from spawning the
// agent to registered, the first verdict of the classification, whether the mode is still
// `unknown` 20 s after the start (after the quick retries of 2 + 4 + 8 s: "settled on unknown"),
// when the right mode was first shown, and the mode when the watch ends (60 s after the start);
// the summary adds the first verdict's median and worst time and, of the full cones, how many
// were first shown more restrictive and how many still were at the end. Needs root and nft.
//
//   npx tsx test/harness/loss-startup.ts [--rounds 4] [--per-kind 2] [--loss 30] [--watch-s 60]
//       prints one line per start and a summary; writes bench-results/loss-startup.json
//
// A measurement, not a test: test/agent/nat.test.ts asserts one lossy start per run, and
// test/agent/startup-schedule.test.ts the bound of the man page on the schedule itself. Here, in
// test/harness/ (which tap never runs: package.json "tap" excludes it), not among the tests of
// test/agent/: `npx tap test/agent/` runs every file of the directory, and this one takes minutes
// in namespaces and overwrites bench-results/loss-startup.json.
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { root } from '../helpers/daemon.js';
import { haveNetns, Lab, PUBLIC_NET } from '../agent/netns.js';
import type { AgentProc } from '../agent/stack.js';
import { withTeardown } from '../agent/stack.js';

const arg = (name: string, dflt: number): number => {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const ROUNDS = arg('--rounds', 4);
const PER_KIND = arg('--per-kind', 2);
const LOSS = arg('--loss', 30);
/** The defaults of devloc-agent(8), over the FAST_AGENT timers the stack starts agents with. */
const DEFAULT_TIMERS = ['--retransmit-ms', '1000', '--backoff-min-ms', '1000', '--backoff-max-ms', '60000'];
/** Past the quick retries of an inconclusive classification (2 + 4 + 8 s) and one more test. */
const SETTLED_AFTER_MS = 20_000;
/** Past the lossy re-checks and a few inconclusive retries (2 + 4 + 8 + 16 s). */
const WATCH_MS = arg('--watch-s', 60) * 1000;

interface Start {
  kind: 'symmetric' | 'full-cone';
  registeredMs: number | null;
  firstVerdict: string | null;
  firstVerdictMs: number | null;
  modeAt20s: string | null;
  rightModeMs: number | null;
  /** The mode when the watch ended (--watch-s after the start). */
  modeAtEnd: string | null;
  /** Each verdict as it changed, with its reason. */
  modes: string[];
}

/** Poll the agent's status every 100 ms for WATCH_MS after `t0`. */
async function watch(p: AgentProc, kind: Start['kind'], t0: number): Promise<Start> {
  const s: Start = { kind, registeredMs: null, firstVerdict: null, firstVerdictMs: null, modeAt20s: null, rightModeMs: null, modeAtEnd: null, modes: [] };
  while (Date.now() - t0 < WATCH_MS) {
    const x = await p.status().catch(() => null);
    const at = Date.now() - t0;
    if (x) {
      if (x.registered && s.registeredMs === null) s.registeredMs = at;
      // The first verdict: the first mode whose reason is not "classifying" (before any, the mode is unknown with no reason).
      const verdict = x.netModeReason && !/classifying/.test(x.netModeReason) ? x.netMode : null;
      if (verdict && s.firstVerdict === null) {
        s.firstVerdict = verdict;
        s.firstVerdictMs = at;
      }
      if (verdict && !s.modes.at(-1)?.startsWith(`${verdict}:`)) s.modes.push(`${verdict}: ${x.netModeReason}`);
      if (x.netMode === kind && s.rightModeMs === null) s.rightModeMs = at;
      if (at >= SETTLED_AFTER_MS && s.modeAt20s === null) s.modeAt20s = x.netMode;
      s.modeAtEnd = x.netMode;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return s;
}

async function main(): Promise<void> {
  const missing = haveNetns();
  if (missing) {
    console.log(`loss-startup: skipped (${missing})`);
    return;
  }
  const starts: Start[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    await withTeardown(async (t) => {
      const lab = new Lab(t);
      const hosts = Array.from({ length: 2 * PER_KIND }, (_, i) => {
        const kind: Start['kind'] = i % 2 === 0 ? 'symmetric' : 'full-cone';
        const ns = lab.behindNat(`l${i}`, `${PUBLIC_NET}.${50 + i}`, 50 + i, kind);
        lab.lossy(ns, LOSS);
        return { ns, kind, name: `l${i}` };
      });
      const st = await lab.stack({ reflectorAltIp: `${PUBLIC_NET}.2` });
      const got = await Promise.all(hosts.map(async (h) => {
        const t0 = Date.now();
        const p = await st.agent(h.name, DEFAULT_TIMERS, { netns: h.ns });
        return watch(p, h.kind, t0);
      }));
      for (const s of got) console.log(JSON.stringify(s));
      starts.push(...got);
    });
  }
  const reg = starts.map((s) => s.registeredMs).filter((x): x is number => x !== null).sort((a, b) => a - b);
  const verdicts = starts.map((s) => s.firstVerdictMs).filter((x): x is number => x !== null).sort((a, b) => a - b);
  const cones = starts.filter((s) => s.kind === 'full-cone');
  const summary = {
    loss: LOSS, watchS: WATCH_MS / 1000, starts: starts.length,
    registered: reg.length,
    registeredMs: { median: reg[Math.floor(reg.length / 2)] ?? null, worst: reg.at(-1) ?? null },
    firstVerdictUnknown: starts.filter((s) => s.firstVerdict === 'unknown').length,
    unknownAt20s: starts.filter((s) => s.modeAt20s === 'unknown').length,
    unknownAtEnd: starts.filter((s) => s.modeAtEnd === 'unknown').length,
    wrongAtEnd: starts.filter((s) => s.modeAtEnd !== s.kind).length,
    wrongAt20s: starts.filter((s) => s.modeAt20s !== s.kind).length,
    rightModeWorstMs: Math.max(...starts.map((s) => s.rightModeMs ?? Infinity)),
    firstVerdictMs: { median: verdicts[Math.floor(verdicts.length / 2)] ?? null, worst: verdicts.at(-1) ?? null },
    // A full cone first shown more restrictive (a lost filtering answer), and still so at the end.
    fullCone: { starts: cones.length, firstVerdictWrong: cones.filter((s) => s.firstVerdict !== 'full-cone').length, wrongAtEnd: cones.filter((s) => s.modeAtEnd !== 'full-cone').length },
  };
  console.log(JSON.stringify({ summary }));
  const dir = path.join(root, 'bench-results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'loss-startup.json'), JSON.stringify({ summary, starts }, null, 2) + '\n');
}

await main();
