// The example configuration files (contrib/etc/<daemon>.conf, installed as
// /etc/devloc/<daemon>.conf):
//   - every option the daemon's --help lists is shown (set, or commented out with its default),
//     and no key the daemon does not have;
//   - the daemon parses the file with every commented-out line enabled too (no line-numbered
//     error; errors about key files that do not exist on a build machine are fine);
//   - with keys made by `devloc keygen` as the README's "Deploying under systemd" says, every
//     daemon's --check-config says "configuration OK" on the files as shipped.
// The daemons are started through tsx (a few seconds each), so the runs go in parallel.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import t from 'tap';
import { DAEMONS, root } from './tools.js';
import type { Daemon } from './tools.js';

/** Flags that are not configuration keys. */
const NOT_KEYS = new Set(['--help', '--check-config', '--config', '--version']);

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Run a TypeScript entry point of src/ with `args`; never rejects. */
function run(entry: string, args: string[]): Promise<Run> {
  // No DEVLOC_* variable of the caller's environment may change what the file means.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('DEVLOC_')));
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['--import', 'tsx', path.join(root, entry), ...args], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    p.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const timer = setTimeout(() => p.kill('SIGKILL'), 60_000);
    p.on('error', (err) => {
      clearTimeout(timer);
      resolve({ status: null, stdout, stderr: `${stderr}${err.message}` });
    });
    p.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

const escapeRe = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const present = DAEMONS.filter((d) => existsSync(path.join(root, `src/${d}/main.ts`)));
const examplePath = (d: Daemon): string => path.join(root, 'contrib/etc', `${d}.conf`);

t.test('an example file per daemon, showing every option', async (t) => {
  for (const d of DAEMONS) t.ok(existsSync(path.join(root, `src/${d}/main.ts`)), `src/${d}/main.ts exists`);
  for (const d of DAEMONS) t.ok(existsSync(examplePath(d)), `contrib/etc/${d}.conf exists`);
  const helps = await Promise.all(present.map((d) => run(`src/${d}/main.ts`, ['--help'])));
  present.forEach((d, i) => {
    if (!existsSync(examplePath(d))) return;
    const help = helps[i]!;
    t.equal(help.status, 0, `devloc-${d} --help exits 0`);
    const keys = [...new Set([...help.stdout.matchAll(/^ {2,6}(?:-\w, )?(--[a-z][a-z0-9-]*)/gm)].map((m) => m[1]!))]
      .filter((f) => !NOT_KEYS.has(f))
      .map((f) => f.slice(2));
    t.ok(keys.length > 3, `${d}: options found in --help`);
    const text = readFileSync(examplePath(d), 'utf8');
    const shown = new Set([...text.matchAll(/^#?([a-z][a-z0-9-]*) =/gm)].map((m) => m[1]!));
    t.same(keys.filter((k) => !shown.has(k)), [], `${d}.conf shows every option`);
    t.same([...shown].filter((k) => !keys.includes(k)), [], `${d}.conf has no key devloc-${d} lacks`);
    t.match(text, new RegExp(`^state-dir = /var/lib/devloc/${d}$`, 'm'), `${d}.conf: state-dir matches the unit's StateDirectory`);
  });
});

t.test('every line parses, defaults uncommented too', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'devloc-conf-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const ds = present.filter((d) => existsSync(examplePath(d)));
  const files = ds.map((d) => {
    const file = path.join(dir, `${d}.conf`);
    writeFileSync(file, readFileSync(examplePath(d), 'utf8').replace(/^#([a-z][a-z0-9-]* =.*)$/gm, '$1'));
    return file;
  });
  const results = await Promise.all(ds.map((d, i) => run(`src/${d}/main.ts`, ['--config', files[i]!, '--check-config'])));
  ds.forEach((d, i) => {
    const r = results[i]!;
    const parseError = new RegExp(`${escapeRe(files[i]!)}:\\d+:|unknown key|environment DEVLOC_`);
    // A check of a key file names the line that names the file: not a parse error.
    const missingFile = /ENOENT|does not exist|cannot read/;
    t.notMatch(r.stderr.split('\n').filter((l) => !missingFile.test(l)).join('\n'), parseError, `${d}.conf parses (${r.stderr.trim() || 'configuration OK'})`);
  });
});

t.test('the examples pass --check-config with keys made as the README says', async (t) => {
  // A daemon that went missing fails here too, not only in the first test.
  if (!t.same(present, [...DAEMONS], 'every daemon exists')) return;
  const dir = mkdtempSync(path.join(tmpdir(), 'devloc-deploy-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const etc = path.join(dir, 'etc/devloc');
  mkdirSync(etc, { recursive: true });
  // /etc/devloc as "Deploying under systemd" makes it.
  const keygen: [string[], string | null][] = [
    [['keygen', 'authd', '--out', path.join(etc, 'authd.key')], path.join(etc, 'authd.pub')],
    [['keygen', 'service', '--id', 'locator', '--out', path.join(etc, 'locatord.key')], path.join(etc, 'locatord.pub')],
    [['keygen', 'service', '--id', 'match', '--out', path.join(etc, 'matchd.key')], path.join(etc, 'matchd.pub')],
    [['keygen', 'device', '--out', path.join(etc, 'device.key')], null],
  ];
  const made = await Promise.all(keygen.map(([args]) => run('src/cli/devloc.ts', args)));
  keygen.forEach(([args, pub], i) => {
    const r = made[i]!;
    t.equal(r.status, 0, `devloc ${args.slice(0, 2).join(' ')}${r.status === 0 ? '' : `: ${r.stderr}`}`);
    if (pub) writeFileSync(pub, r.stdout);
  });
  const files = DAEMONS.map((d) => {
    const file = path.join(etc, `${d}.conf`);
    writeFileSync(file, readFileSync(examplePath(d), 'utf8')
      .replaceAll('/etc/devloc/', `${etc}/`)
      .replaceAll('/var/lib/devloc/', `${dir}/var/lib/devloc/`)
      .replaceAll('/run/devloc/', `${dir}/run/devloc/`));
    return file;
  });
  // --check-config binds the ports to see that they are free; the examples' are the defaults,
  // which something else on a shared test machine may hold: any free port instead.
  const anyPort: Record<string, string[]> = {
    authd: ['--port', '0'], locatord: ['--port', '0', '--reflector-port', '0', '--reflector-alt-port', '0'], matchd: ['--port', '0'],
  };
  const results = await Promise.all(DAEMONS.map((d, i) => run(`src/${d}/main.ts`, ['--config', files[i]!, '--check-config', ...(anyPort[d] ?? [])])));
  DAEMONS.forEach((d, i) => {
    const r = results[i]!;
    t.equal(r.status, 0, `devloc-${d} --check-config exits 0${r.status === 0 ? '' : `: ${r.stderr.trim()}`}`);
    t.match(r.stdout, 'configuration OK', `devloc-${d}: configuration OK`);
  });
});
