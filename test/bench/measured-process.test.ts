// The agent bench measures bare Node, the library and the daemon alike (bench/measured-process.ts,
// issue 20): the parent reads /proc after the child's readiness signal, and nothing in a measured
// child opens process.stdin/stdout/stderr or loads a stream module for the bench before its RSS
// is read; the library's host is the bare script plus the library, with the same node flags.
// A bare child that reports its own RSS on process.stdout (the method before) fails here.
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { bareNodeArgs, libraryHostArgs, measureChild, MEASURED_STDIO, measuredEnv, READY_FD, type ModuleSystem } from '../../bench/measured-process.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const probe = path.join(here, 'stdio-probe.cjs');
const linux = process.platform === 'linux';

// tap's process tracking puts its own --import back into NODE_OPTIONS of every child it sees
// spawned, whatever measuredEnv() says: `env -u` drops it in the child (its pid becomes node's).
function spawnProbed(args: string[]): ChildProcess {
  return spawn('/usr/bin/env', ['-u', 'NODE_OPTIONS', process.execPath, '--require', probe, ...args], { stdio: MEASURED_STDIO, env: measuredEnv() });
}

/** Measures the child as the bench does; returns its RSS and what it wrote on the readiness pipe. */
async function measureProbed(args: string[]): Promise<{ rss: number; pipe: string }> {
  const proc = spawnProbed(args);
  let pipe = '';
  (proc.stdio[READY_FD] as NodeJS.ReadableStream).on('data', (d: Buffer) => (pipe += d.toString('utf8')));
  const gone = new Promise((r) => proc.once('exit', r));
  try {
    return { rss: await measureChild(proc, 200), pipe };
  } finally {
    proc.kill('SIGKILL');
    await gone;
  }
}

/** The -e script of node arguments, and what comes before it (the node flags). */
const split = (args: string[]): { flags: string[]; script: string } => ({ flags: args.slice(0, args.indexOf('-e')), script: args[args.indexOf('-e') + 1]! });

for (const system of ['commonjs', 'module'] as ModuleSystem[]) {
  const host = libraryHostArgs(system, { library: path.join(here, `fake-agent-library.${system === 'commonjs' ? 'cjs' : 'mjs'}`), identity: 'x', authd: 'x', authdKey: 'x' });

  t.test(`${system}: the library host is the bare script plus the library, with the same flags`, async (t) => {
    const bare = split(bareNodeArgs(system));
    const lib = split(host);
    t.same(lib.flags, bare.flags, 'the same node flags');
    t.equal(lib.script.split('\n')[0], bare.script.split(' writeSync(')[0], 'the same first statement');
    t.notMatch(`${bare.script}\n${lib.script}`, /process\.std|console\.(?:log|info)|memoryUsage/, 'no stdio and no RSS of its own in either script (console.error on a failure only)');
  });

  t.test(`${system}: bare and library host are ready without touching stdio or loading a stream module`, { skip: !linux && 'needs /proc' }, async (t) => {
    for (const [what, args] of [['bare', bareNodeArgs(system)], ['library host', host]] as const) {
      const { rss, pipe } = await measureProbed(args);
      t.ok(rss > 10 * 2 ** 20, `${what}: an RSS read from /proc (${(rss / 2 ** 20).toFixed(1)} MiB)`);
      t.notMatch(pipe, /touched/, `${what}: no std stream touched before the measurement`);
      const loaded = JSON.parse(/^loaded (.*)$/m.exec(pipe)?.[1] ?? 'null') as string[] | null;
      t.ok(loaded, `${what}: the probe saw the readiness line`);
      // What node -e itself loads to run a script (internal/vm/module; the ES module loader and
      // the streams it uses for --input-type=module) is part of the baseline; process.stdout on a
      // pipe or a terminal is what reporting would cost (net, tty and their bindings).
      t.same(loaded?.filter((m) => /\b(?:tty|net|pipe_wrap|tcp_wrap|stream_wrap|tty_wrap)$/.test(m)), [], `${what}: nothing of process.stdout loaded (${loaded?.length} modules)`);
      t.match(pipe, /ready\n$/, `${what}: the readiness line last`);
    }
  });
}
