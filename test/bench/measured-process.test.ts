// The agent bench measures bare Node, the library and the daemon alike (bench/measured-process.ts,
// issue 20): the parent reads /proc after the child's readiness signal, and nothing in a measured
// child opens process.stdin/stdout/stderr or loads a module for the bench before its RSS is read.
// The bare child that reported its own RSS on process.stdout (the method before) fails the first
// test; a library child that reports before it is measured, or never signals, fails the second.
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { build } from 'esbuild';
import { fileURLToPath } from 'node:url';
import { bareNodeArgs, measureChild, measuredStdio, measuredEnv, MEASURED_NODE_FLAGS, READY_FD } from '../../bench/measured-process.js';
import type { ChildResult, ChildSettings } from '../../bench/agent-child.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const probe = path.join(here, 'stdio-probe.cjs');

/** Everything the child wrote on the readiness pipe (the probe's reports and the readiness line). */
function pipeText(proc: ChildProcess): { text: string } {
  const seen = { text: '' };
  (proc.stdio[READY_FD] as NodeJS.ReadableStream).on('data', (d: Buffer) => (seen.text += d.toString('utf8')));
  return seen;
}
// tap's process tracking puts its own --import back into NODE_OPTIONS of every child it sees
// spawned, whatever measuredEnv() says: `env -u` drops it in the child (its pid becomes node's).
const spawnNode = (args: string[], o: Parameters<typeof spawn>[2]): ChildProcess =>
  spawn('/usr/bin/env', ['-u', 'NODE_OPTIONS', process.execPath, ...args], { ...o, env: measuredEnv() });
const exited = (proc: ChildProcess): Promise<number | null> => new Promise((r) => proc.once('exit', (code) => r(code)));

t.test('bare node -e: ready without touching stdio or loading a module, measured from /proc', { skip: process.platform !== 'linux' && 'needs /proc' }, async (t) => {
  const args = bareNodeArgs();
  t.same(args.slice(0, MEASURED_NODE_FLAGS.length), MEASURED_NODE_FLAGS, 'the same node flags as the library child');
  const proc = spawnNode([...MEASURED_NODE_FLAGS, '--require', probe, ...args.slice(MEASURED_NODE_FLAGS.length)], { stdio: measuredStdio(false) });
  const seen = pipeText(proc);
  const gone = exited(proc);
  const rss = await measureChild(proc, 0);
  proc.kill('SIGKILL');
  await gone;
  t.ok(rss > 10 * 2 ** 20, `an RSS read from /proc (${(rss / 2 ** 20).toFixed(1)} MiB)`);
  t.notMatch(seen.text, /touched/, 'no std stream touched before the measurement');
  const loaded = JSON.parse(/^loaded (.*)$/m.exec(seen.text)?.[1] ?? 'null') as string[] | null;
  // What `node -e` itself loads to run any script is part of the baseline (internal/vm/module).
  t.same(loaded?.filter((m) => /stream|tty|net|pipe|socket/.test(m)), [], `no stream module loaded before the measurement (${loaded?.join(', ')})`);
  t.match(seen.text, /ready\n$/, 'the readiness line');
});

t.test('library child: ready at registration, reports only after it was measured', { skip: process.platform !== 'linux' && 'needs /proc' }, async (t) => {
  const settings: ChildSettings = {
    library: path.join(here, 'fake-agent-library.mjs'), identity: 'x', authd: '127.0.0.1:1', authdKey: 'x', maxRefreshS: 0, seconds: 0.2, warmupMs: 0,
  };
  // The library child as the bench runs it from build/ (plain node: tsx would touch stdout
  // itself), with the probe preloaded.
  const dir = mkdtempSync(path.join(tmpdir(), 'devloc-measured-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const child = path.join(dir, 'agent-child.mjs');
  await build({ entryPoints: [path.join(root, 'bench/agent-child.ts')], outfile: child, bundle: true, platform: 'node', format: 'esm', target: 'node20', logLevel: 'warning' });
  const proc = spawnNode([...MEASURED_NODE_FLAGS, '--require', probe, child], { cwd: root, stdio: measuredStdio(true) });
  const seen = pipeText(proc);
  let out = '';
  let err = '';
  proc.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const gone = exited(proc);
  proc.stdin!.end(JSON.stringify(settings) + '\n');
  // Measured well after the child's window ended: it must still be waiting, with nothing printed.
  const rss = await measureChild(proc, 1000);
  const printedBeforeMeasured = out;
  const code = await gone;
  t.equal(code, 0, `exit 0 ${err}`);
  t.ok(rss > 10 * 2 ** 20, `an RSS read from /proc (${(rss / 2 ** 20).toFixed(1)} MiB)`);
  t.equal(printedBeforeMeasured, '', 'nothing printed before the parent read the RSS');
  t.notMatch(seen.text, /touched/, `no std stream touched before the measurement (${seen.text.trim()})`);
  t.match(seen.text, /ready\n$/, 'the readiness line');
  const r = JSON.parse(out.trim()) as ChildResult;
  t.notOk('rssBytes' in r, 'the child reports no RSS of its own');
  t.equal(r.refreshes, 0, 'the result line after the measurement');
});
