// The man pages: `mandoc -T lint -W warning` has nothing to say about any of them, and every
// flag a binary's --help prints (every command, for devloc(1)) appears in that binary's page.
// A page goes missing or stale as soon as its binary exists: that is the drift this catches.
// A binary or page that is missing (renamed, moved) fails the test: there is no "not yet".
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { DAEMONS, has, needs, root } from './tools.js';

const mandoc = has('mandoc');
const manDir = path.join(root, 'man');
const pages = existsSync(manDir) ? readdirSync(manDir).filter((f) => /\.[1-8]$/.test(f)).sort() : [];

/** The page as plain text (mandoc -T ascii, overstrike bold/underline removed). */
function rendered(page: string): string {
  const r = spawnSync('mandoc', ['-T', 'ascii', path.join(manDir, page)], { encoding: 'utf8', env: { ...process.env, MANWIDTH: '200' } });
  return r.stdout.replace(/.\x08/g, '');
}

interface Help {
  status: number | null;
  out: string;
  err: string;
}

/** Run a TypeScript entry point with --help. */
function runHelp(entry: string): Promise<Help> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['--import', 'tsx', path.join(root, entry), '--help'], {
      cwd: root, env: { ...process.env, COLUMNS: '100' }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    p.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
    p.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
    const timer = setTimeout(() => p.kill('SIGKILL'), 60_000);
    p.on('error', (e) => {
      clearTimeout(timer);
      resolve({ status: null, out, err: `${err}${e.message}` });
    });
    p.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, out, err });
    });
  });
}

// Every binary's --help, gathered in parallel (each start through tsx takes seconds).
const entries = [...DAEMONS.map((d) => `src/${d}/main.ts`), 'src/cli/devloc.ts'].filter((e) => existsSync(path.join(root, e)));
const helps = new Map(await Promise.all(entries.map(async (e) => [e, await runHelp(e)] as const)));
const help = (entry: string): Help => helps.get(entry) ?? { status: null, out: '', err: `${entry} missing` };

/** Every long option --help defines (at the start of an option line), e.g. --check-config. */
function flagsOf(text: string): string[] {
  return [...new Set([...text.matchAll(/^ {2,6}(?:-\w, )?(--[a-z][a-z0-9-]*)/gm)].map((m) => m[1]!))].sort();
}

/** Whether `word` appears in `text` not as a prefix of a longer flag or word. */
function mentions(text: string, word: string): boolean {
  const escaped = word.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`(?<![\\w-])${escaped}(?![\\w-])`).test(text);
}

t.test('mandoc -T lint -W warning is silent on every page', needs('mandoc', mandoc), async (t) => {
  t.ok(mandoc, 'mandoc is installed');
  t.ok(pages.includes('devloc.conf.5'), 'man/devloc.conf.5 exists');
  for (const page of pages) {
    const r = spawnSync('mandoc', ['-T', 'lint', '-W', 'warning', path.join(manDir, page)], { encoding: 'utf8' });
    t.equal(`${r.stdout}${r.stderr}`.trim(), '', `${page}: no warnings`);
    t.equal(r.status, 0, `${page}: mandoc exits 0`);
  }
});

for (const d of DAEMONS) {
  const entry = `src/${d}/main.ts`;
  const page = `devloc-${d}.8`;
  t.test(`devloc-${d} --help flags are in man/${page}`, needs('mandoc', mandoc), async (t) => {
    if (!t.ok(existsSync(path.join(root, entry)), `${entry} exists`)) return;
    const h = help(entry);
    t.equal(h.status, 0, `${entry} --help exits 0${h.status === 0 ? '' : `: ${h.err}`}`);
    const flags = flagsOf(h.out);
    t.ok(flags.includes('--check-config'), '--help lists flags');
    if (!t.ok(pages.includes(page), `man/${page} exists`)) return;
    const text = rendered(page);
    const missing = flags.filter((f) => !mentions(text, f));
    t.same(missing, [], `every flag of devloc-${d} --help is in ${page}`);
  });
}

t.test('devloc --help commands and flags are in man/devloc.1', needs('mandoc', mandoc), async (t) => {
  if (!t.ok(existsSync(path.join(root, 'src/cli/devloc.ts')), 'src/cli/devloc.ts exists')) return;
  const h = help('src/cli/devloc.ts');
  t.equal(h.status, 0, `devloc --help exits 0${h.status === 0 ? '' : `: ${h.err}`}`);
  const commandsSection = h.out.split(/^Commands:$/m)[1]?.split(/^\S/m)[0] ?? '';
  const commands = [...commandsSection.matchAll(/^\s+devloc ([a-z][a-z0-9-]*)/gm)].map((m) => m[1]!);
  if (!t.ok(commands.length > 0, 'devloc --help lists its commands')) return;
  if (!t.ok(pages.includes('devloc.1'), 'man/devloc.1 exists')) return;
  const text = rendered('devloc.1');
  t.same(commands.filter((c) => !mentions(text, c)), [], 'every command is in devloc.1');
  t.same(flagsOf(h.out).filter((f) => !mentions(text, f)), [], 'every top-level flag is in devloc.1');
});

t.test('devloc.conf.5 lists every key of every daemon in its section', needs('mandoc', mandoc), async (t) => {
  if (!t.ok(pages.includes('devloc.conf.5'), 'man/devloc.conf.5 exists')) return;
  const text = rendered('devloc.conf.5');
  for (const d of DAEMONS) {
    const entry = `src/${d}/main.ts`;
    if (!t.ok(existsSync(path.join(root, entry)), `${entry} exists`)) continue;
    // The subsection "devloc-<daemon>" of KEYS BY DAEMON, up to the next (sub)section.
    const section = new RegExp(`^ {3}devloc-${d}\\n([\\s\\S]*?)(?=^ {0,3}\\S)`, 'm').exec(text)?.[1] ?? '';
    t.not(section, '', `devloc.conf.5 has a subsection devloc-${d}`);
    const common = new Set(['--help', '--check-config', '--config', '--log-level', '--metrics-listen', '--state-dir', '--log-format', '--metrics-allow-remote', '--version']);
    const keys = flagsOf(help(entry).out).filter((f) => !common.has(f)).map((f) => f.slice(2));
    t.ok(keys.length > 0, `${d}: keys found in --help`);
    t.same(keys.filter((k) => !mentions(section, k)), [], `every devloc-${d} key is listed under devloc-${d}`);
  }
  for (const k of ['log-level', 'metrics-listen', 'state-dir']) t.ok(mentions(text, k), `common key ${k} is listed`);
});

t.test('devloc-ctl.8 documents every devloc ctl command and its exit statuses', needs('mandoc', mandoc), async (t) => {
  if (!t.ok(pages.includes('devloc-ctl.8'), 'man/devloc-ctl.8 exists')) return;
  const text = rendered('devloc-ctl.8');
  const { CTL_COMMANDS, CTL_DAEMONS } = await import('../../src/cli/commands/ctl.js');
  for (const w of [...CTL_COMMANDS, ...CTL_DAEMONS, '--socket', '--json', '--limit', '--timeout', 'EXIT STATUS']) t.ok(mentions(text, w), `devloc-ctl.8 mentions ${w}`);
  for (const p of ['devloc.1', 'devloc-authd.8', 'devloc-locatord.8', 'devloc-matchd.8']) t.ok(mentions(rendered(p), 'devloc-ctl(8)'), `${p} refers to devloc-ctl(8)`);
});
