// The fuzz loop: time-sliced round robin over the targets; each execution picks an input from
// the target's corpus (seeds plus inputs that produced an outcome not seen before), mutates
// it, runs it, and records a crash when the target throws or a property breaks. Seeded: the
// same seed and the same time slices replay the same inputs.
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { mutate } from './mutate.js';
import { Rng } from './rng.js';
import type { Target } from './targets.js';
import { allTargets } from './targets.js';
import type { DaemonTargets } from './daemons.js';
import { daemonTargets } from './daemons.js';
import type { World } from './world.js';
import { buildWorld } from './world.js';

export interface FuzzOptions {
  seconds: number;
  seed?: number;
  /** Target names to run (default: all). */
  only?: string[];
  /** Where crashing inputs are written as hex; null: not written. Default "fuzz-crashes". */
  crashDir?: string | null;
  /** Progress lines. */
  log?: (line: string) => void;
  world?: World;
  /** Most corpus entries kept per target (seeds included). */
  maxCorpus?: number;
  /** Also fuzz the daemons' own servers (authd, locatord, matchd in-process). Default true. */
  daemons?: boolean;
  /**
   * Mutated inputs every target gets at least, even past `seconds` (default 0): a pass whose
   * time went to the seeds on a busy machine still mutates (the test suite's smoke pass).
   */
  minMutations?: number;
}

export interface Crash {
  target: string;
  message: string;
  stack: string;
  inputHex: string;
  /** How many executions hit this (target, message). */
  count: number;
  file?: string;
}

export interface TargetReport {
  name: string;
  doc: string;
  executions: number;
  execsPerS: number;
  /** Distinct outcomes seen (error codes and reasons, message types...). */
  outcomes: number;
  corpus: number;
  crashes: number;
}

export interface FuzzReport {
  /** Targets that could not be started (a daemon whose API changed), with why. */
  skipped: { name: string; reason: string }[];
  seed: number;
  seconds: number;
  seeds: 'vectors' | 'generated';
  executions: number;
  execsPerS: number;
  targets: TargetReport[];
  crashes: Crash[];
}

interface State {
  target: Target;
  corpus: Buffer[];
  outcomes: Set<string>;
  executions: number;
  busyMs: number;
  crashes: number;
}

const SLICE_MS = 25;

export async function runFuzz(o: FuzzOptions): Promise<FuzzReport> {
  const seed = o.seed ?? (Date.now() & 0x7fffffff);
  const rng = new Rng(seed);
  const world = o.world ?? buildWorld();
  const maxCorpus = o.maxCorpus ?? 2000;
  const crashDir = o.crashDir === undefined ? 'fuzz-crashes' : o.crashDir;
  let targets = allTargets(world);
  const daemonNames = ['authd', 'locatord', 'matchd'];
  let daemons: DaemonTargets | undefined;
  if (o.daemons !== false && (!o.only?.length || o.only.some((n) => daemonNames.includes(n)))) {
    daemons = await daemonTargets(world, (l) => o.log?.(l));
    targets.push(...daemons.targets);
  }
  if (o.only?.length) {
    const known = [...targets.map((t) => t.name), ...(daemons?.skipped.map((s) => s.name) ?? [])];
    const unknown = o.only.filter((n) => !known.includes(n));
    if (unknown.length) {
      await daemons?.stop();
      throw new Error(`unknown fuzz target(s) ${unknown.join(', ')}; known: ${[...allTargets(world).map((t) => t.name), ...daemonNames].join(', ')}`);
    }
    targets = targets.filter((t) => o.only!.includes(t.name));
  }
  const states: State[] = targets.map((t) => ({ target: t, corpus: t.seeds.length ? [...t.seeds] : [Buffer.alloc(0)], outcomes: new Set(), executions: 0, busyMs: 0, crashes: 0 }));
  const crashes = new Map<string, Crash>();
  let current: { state: State; input: Buffer } | undefined;

  const record = (st: State, input: Buffer, err: unknown): void => {
    st.crashes++;
    const e = err instanceof Error ? err : new Error(String(err));
    const message = `${e.name}: ${e.message}`;
    const key = `${st.target.name}\0${message.replace(/\d+/g, '#')}`;
    const seen = crashes.get(key);
    if (seen) {
      seen.count++;
      return;
    }
    const crash: Crash = { target: st.target.name, message, stack: e.stack ?? message, inputHex: input.toString('hex'), count: 1 };
    if (crashDir) {
      mkdirSync(crashDir, { recursive: true });
      const id = createHash('sha256').update(input).digest('hex').slice(0, 12);
      crash.file = path.join(crashDir, `${st.target.name}-${id}.hex`);
      writeFileSync(crash.file, crash.inputHex + '\n');
      writeFileSync(crash.file.replace(/\.hex$/, '.txt'), `target: ${st.target.name}\nseed: ${seed}\n${crash.stack}\n`);
    }
    crashes.set(key, crash);
    o.log?.(`crash in ${st.target.name}: ${message}${crash.file ? ` (${crash.file})` : ''}`);
  };

  // Anything escaping a target asynchronously is a crash of the input that was running.
  const onAsync = (err: unknown): void => {
    if (current) record(current.state, current.input, err);
    else record(states[0]!, Buffer.alloc(0), err);
  };
  process.on('unhandledRejection', onAsync);
  process.on('uncaughtException', onAsync);

  const exec = async (st: State, input: Buffer): Promise<void> => {
    current = { state: st, input };
    try {
      const outcome = await st.target.run(input, rng);
      if (!st.outcomes.has(outcome)) {
        st.outcomes.add(outcome);
        if (st.corpus.length < maxCorpus) st.corpus.push(input);
      }
    } catch (err) {
      record(st, input, err);
    }
    st.executions++;
  };

  const started = performance.now();
  const deadline = started + o.seconds * 1000;
  try {
    // The seeds themselves first, unmutated: a bad seed is a finding too.
    for (const st of states) for (const s of [...st.corpus]) await exec(st, s);
    const donors = (st: State) => (): Buffer => (rng.chance(0.8) ? rng.pick(st.corpus) : rng.pick(rng.pick(states).corpus));
    const minMutations = o.minMutations ?? 0;
    const mutated = new Map<State, number>(states.map((st) => [st, 0]));
    const short = (): boolean => states.some((st) => mutated.get(st)! < minMutations);
    while (performance.now() < deadline || short()) {
      for (const st of states) {
        const t0 = performance.now();
        const sliceEnd = Math.min(deadline, t0 + SLICE_MS);
        const donor = donors(st);
        do {
          let input = mutate(rng.pick(st.corpus), rng, donor);
          if (st.target.prepare) input = st.target.prepare(input, rng);
          await exec(st, input);
          mutated.set(st, mutated.get(st)! + 1);
        } while (performance.now() < sliceEnd || mutated.get(st)! < minMutations);
        st.busyMs += performance.now() - t0;
        if (performance.now() >= deadline && !short()) break;
      }
    }
    // Let stray timers and promises of the last inputs surface before reporting.
    await new Promise((r) => setImmediate(r));
  } finally {
    current = undefined;
    await daemons?.stop();
    process.off('unhandledRejection', onAsync);
    process.off('uncaughtException', onAsync);
  }
  const elapsedS = (performance.now() - started) / 1000;
  const executions = states.reduce((a, s) => a + s.executions, 0);
  return {
    skipped: daemons?.skipped ?? [],
    seed,
    seconds: elapsedS,
    seeds: world.source,
    executions,
    execsPerS: executions / elapsedS,
    targets: states.map((s) => ({
      name: s.target.name, doc: s.target.doc, executions: s.executions,
      execsPerS: s.busyMs > 0 ? s.executions / (s.busyMs / 1000) : 0, outcomes: s.outcomes.size, corpus: s.corpus.length, crashes: s.crashes,
    })),
    crashes: [...crashes.values()],
  };
}

/** Run one saved input through a target (reproducing a crash file). Throws what the target throws. */
export async function replayInput(targetName: string, input: Buffer, seed = 1): Promise<string> {
  const world = buildWorld();
  const daemons = ['authd', 'locatord', 'matchd'].includes(targetName) ? await daemonTargets(world) : undefined;
  try {
    const target = [...allTargets(world), ...(daemons?.targets ?? [])].find((t) => t.name === targetName);
    if (!target) throw new Error(`unknown fuzz target ${targetName}`);
    return await target.run(input, new Rng(seed));
  } finally {
    await daemons?.stop();
  }
}
