// The agent distribution (packages/agent, issue 20): `npm pack` of it, `npm install -g` of the
// tarball into an empty prefix without the network, and what the installed copy can do: its
// binaries start and answer --version, nothing but node built-ins is imported, no dependency is
// installed. Then the example of devloc-agent(3), taken from the page, compiled with tsc against
// the installed package and run against real daemons (authd, locatord, matchd) and a reachable
// peer: identity from a buffer, events, every kind of call, clean shutdown. And every code an
// AgentError is thrown with is documented (errors.ts's AGENT_ERROR_CODES and the page).
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { builtinModules } from 'node:module';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { AGENT_ERROR_CODES } from '../../src/agent/errors.js';
import { keyFileToJson } from '../../src/wire/keys.js';
import { root } from '../helpers/daemon.js';
import { FAST_AGENT, stack } from './stack.js';

const page = readFileSync(path.join(root, 'man/devloc-agent.3'), 'utf8');
const version = (JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string }).version;
const builtins = new Set(builtinModules);

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(path.join(dir, e.name)) : [path.join(dir, e.name)]));
}

/** The example of devloc-agent(3), as a reader copies it (mdoc escapes undone). */
export function exampleOf(text: string): string {
  const m = /^\.\\" example begin\n\.Bd -literal\n([\s\S]*?)\n\.Ed\n\.\\" example end$/m.exec(text);
  if (!m) throw new Error('no example in man/devloc-agent.3');
  return `${m[1]!.replace(/\\e/g, '\\').replace(/\\&/g, '')}\n`;
}

t.test('every AgentError code in src/agent is in AGENT_ERROR_CODES and in devloc-agent(3)', async (t) => {
  const thrown = new Set<string>();
  for (const f of walk(path.join(root, 'src/agent')).filter((f) => f.endsWith('.ts'))) {
    for (const m of readFileSync(f, 'utf8').matchAll(/new AgentError\(\s*'([A-Z_]+)'/g)) thrown.add(m[1]!);
  }
  t.ok(thrown.size > 10, `${thrown.size} codes thrown`);
  t.same([...thrown].filter((c) => !Object.hasOwn(AGENT_ERROR_CODES, c)).sort(), [], 'each in AGENT_ERROR_CODES (src/agent/errors.ts)');
  const documented = new Set([...page.matchAll(/^\.It Er ([A-Z_]+)$/gm)].map((m) => m[1]!));
  t.same(Object.keys(AGENT_ERROR_CODES).filter((c) => !documented.has(c)).sort(), [], 'each in the ERRORS section of man/devloc-agent.3');
});

t.test('every option of AgentOptions and every public member of Agent is in devloc-agent(3)', async (t) => {
  const types = readFileSync(path.join(root, 'src/agent/types.ts'), 'utf8');
  const body = /^export interface AgentOptions \{\n([\s\S]*?)^\}/m.exec(types)?.[1] ?? '';
  const options = [...body.matchAll(/^ {2}(\w+)\??:/gm)].map((m) => m[1]!);
  t.ok(options.length > 20, `${options.length} options`);
  const section = (name: string): string => {
    const m = new RegExp(`^\\.Ss ${name}\\n([\\s\\S]*?)^\\.S[sh] `, 'm').exec(page);
    return m?.[1] ?? '';
  };
  const tagged = (text: string, macro: string): Set<string> =>
    new Set([...text.matchAll(new RegExp(`^\\.It ${macro} (.+)$`, 'gm'))].flatMap((m) => m[1]!.split(/\s*,\s*|\s+:\s.*$|\s+/)).filter(Boolean));
  const documented = tagged(section('Options'), 'Fa');
  t.same(options.filter((o) => !documented.has(o)), [], 'each option in the Options section');
  // Public members: methods (.It Fn) and getters (.It Fa) of the Calls section; the properties
  // the page names as internal are left out.
  const agent = readFileSync(path.join(root, 'src/agent/agent.ts'), 'utf8');
  const internal = new Set(['constructor', 'punch', 'relay', 'presence', 'extraGrants', 'match', 'registration', 'queries']);
  const methods = [...agent.matchAll(/^ {2}(?:async )?(\w+)\(/gm)].map((m) => m[1]!).filter((n) => !internal.has(n));
  const getters = [...agent.matchAll(/^ {2}get (\w+)\(/gm)].map((m) => m[1]!).filter((n) => !internal.has(n));
  const calls = section('Calls');
  t.same(methods.filter((n) => !tagged(calls, 'Fn').has(n)), [], 'each method in the Calls section');
  t.same(getters.filter((n) => !tagged(calls, 'Fa').has(n)), [], 'each getter in the Calls section');
  const matching = tagged(section('Matching'), 'Fn');
  for (const n of ['submit', 'cancel', 'status', 'wait', 'list']) t.ok(matching.has(`match.${n}`), `match.${n} in the Matching section`);
  for (const e of ['state', 'registered', 'refreshed', 'address', 'netmode', 'problem', 'match', 'presence', 'allow', 'channel', 'stopped', 'error']) {
    t.match(section('Events'), new RegExp(`^\\.It Cm ${e}\\b`, 'm'), `event ${e} in the Events section`);
  }
});

t.test('npm pack, npm install -g offline into an empty prefix, the example against real daemons', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'devloc-agent-dist-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // The daemons first, before npm pack and tsc load the machine.
  const s = await stack(t, { matchd: true });
  const peer = await s.agent('peer', [...FAST_AGENT, '--reachable']);
  await peer.waitFor((l) => l['msg'] === 'registered', 60_000, 'peer registered');
  const peerId = (await peer.status()).locatorId!;
  const env = { ...process.env, npm_config_cache: path.join(dir, 'npm-cache'), npm_config_update_notifier: 'false' };
  const pack = spawnSync('npm', ['pack', '--json', '--pack-destination', dir], { cwd: path.join(root, 'packages/agent'), encoding: 'utf8', env, timeout: 600_000 });
  if (!t.equal(pack.status, 0, `npm pack: ${pack.stderr}`)) return;
  const packed = (JSON.parse(pack.stdout.slice(pack.stdout.indexOf('['))) as { filename: string; files: { path: string }[] }[])[0]!;
  const paths = packed.files.map((f) => f.path);
  t.same(paths.filter((p) => !/^(?:dist\/|man\/devloc[\w.-]*\.[138]$|README\.md$|package\.json$)/.test(p)), [], 'only dist/, man/, README.md, package.json');
  for (const f of ['dist/agent.js', 'dist/agent.cjs', 'dist/devloc-agent.js', 'dist/devloc.js', 'dist/types/agent/index.d.ts', 'dist/types/agent/index.d.cts', 'dist/agent.d.ts', 'dist/agent.d.cts', 'man/devloc-agent.3', 'man/devloc-agent.8', 'README.md']) t.ok(paths.includes(f), `${f} is in`);
  t.notOk(paths.some((p) => p.endsWith('.node')), 'nothing native');

  const prefix = path.join(dir, 'prefix');
  mkdirSync(prefix);
  const install = spawnSync('npm', ['install', '-g', '--prefix', prefix, '--offline', '--no-audit', '--no-fund', path.join(dir, packed.filename)], { cwd: dir, encoding: 'utf8', env, timeout: 600_000 });
  if (!t.equal(install.status, 0, `npm install -g --offline: ${install.stderr}`)) return;
  const installed = path.join(prefix, 'lib/node_modules/devloc-agent');
  const pkg = JSON.parse(readFileSync(path.join(installed, 'package.json'), 'utf8')) as Record<string, unknown>;
  for (const k of ['dependencies', 'optionalDependencies', 'peerDependencies', 'bundleDependencies']) t.notOk(pkg[k], `no ${k}`);
  t.notOk(existsSync(path.join(installed, 'node_modules')), 'nothing installed beside it');
  t.same(readdirSync(path.join(prefix, 'lib/node_modules')), ['devloc-agent'], 'one package in the prefix');
  const imports = new Set<string>();
  for (const f of walk(path.join(installed, 'dist')).filter((f) => /\.c?js$/.test(f))) {
    const code = readFileSync(f, 'utf8');
    // esbuild writes each static import on a line of its own; dynamic ones and require() anywhere.
    const re = /^(?:import|export)\b[^;"']*?\bfrom\s*"([^"]+)";?$|^import\s*"([^"]+)";?$|\bimport\(\s*"([^"]+)"\s*\)|\brequire\(\s*"([^"]+)"\s*\)/gm;
    for (const m of code.matchAll(re)) imports.add(m[1] ?? m[2] ?? m[3] ?? m[4]!);
    // One non-ASCII character makes V8 keep the whole source two-byte: twice the bundle in the
    // heap of every process that loads it (build.mjs escapes what esbuild leaves in comments).
    t.notOk(/[^\x00-\x7f]/.test(code), `${path.relative(installed, f)} is ASCII only`);
  }
  // What loading the library loads: node:net, node:tls and node:dns cost an idle agent RSS and are
  // imported when a relay link, the control socket or a DNS name needs them (issue 20).
  const library = readFileSync(path.join(installed, 'dist/agent.js'), 'utf8');
  const loadedWith = [...library.matchAll(/^(?:import|export)\b[^;"']*?\bfrom\s*"([^"]+)";?$|^import\s*"([^"]+)";?$/gm)].map((m) => m[1] ?? m[2]!);
  t.ok(loadedWith.includes('node:dgram'), 'the scan sees the library\'s static imports');
  t.same(loadedWith.filter((s) => /^node:(?:net|tls|dns)(?:\/|$)/.test(s)), [], 'the library does not load node:net, node:tls or node:dns with it');
  // The CommonJS build: esbuild writes each top-level require() as `var x = require("...")` at
  // the start of a line; the lazy ones stay import() inside functions.
  const libraryCjs = readFileSync(path.join(installed, 'dist/agent.cjs'), 'utf8');
  const requiredWith = [...libraryCjs.matchAll(/^var \w+ = (?:__toESM\()?require\("([^"]+)"\)/gm)].map((m) => m[1]!);
  t.ok(requiredWith.includes('node:dgram'), 'the scan sees agent.cjs\'s top-level requires');
  t.same(requiredWith.filter((s) => /^node:(?:net|tls|dns)(?:\/|$)/.test(s)), [], 'agent.cjs does not load node:net, node:tls or node:dns with it');
  t.ok(imports.has('node:dgram') && imports.has('node:crypto'), 'the scan sees the imports');
  t.same([...imports].filter((s) => !builtins.has(s.replace(/^node:/, ''))).sort(), [], 'the bundles import node built-ins only');

  const run = (bin: string, args: string[]): ReturnType<typeof spawnSync> => spawnSync(path.join(prefix, 'bin', bin), args, { cwd: dir, encoding: 'utf8', timeout: 60_000 });
  const v = run('devloc-agent', ['--version']);
  t.same([v.status, String(v.stdout)], [0, `devloc-agent ${version}\n`], 'devloc-agent --version');
  const cli = run('devloc', ['--version']);
  t.same([cli.status, String(cli.stdout)], [0, `devloc ${version}\n`], 'devloc --version');
  const typo = run('devloc-agent', ['--idenity', 'x']);
  t.same([typo.status, String(typo.stderr)], [2, 'devloc-agent: unknown option --idenity (did you mean --identity?)\n'], 'unknown flag: one line with the suggestion, exit 2');
  const status = run('devloc', ['status', '--socket', path.join(dir, 'none.sock')]);
  t.equal(status.status, 1, `devloc status without an agent: exit 1 (${String(status.stderr).trim()})`);

  // The example, compiled by tsc against the installed package's declarations.
  const app = path.join(dir, 'app');
  mkdirSync(path.join(app, 'node_modules'), { recursive: true });
  symlinkSync(installed, path.join(app, 'node_modules/devloc-agent'));
  writeFileSync(path.join(app, 'package.json'), '{ "type": "module", "private": true }\n');
  writeFileSync(path.join(app, 'console-agent.ts'), exampleOf(page));
  writeFileSync(path.join(app, 'tsconfig.json'), JSON.stringify({
    compilerOptions: {
      target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, exactOptionalPropertyTypes: true,
      noUncheckedIndexedAccess: true, skipLibCheck: true, types: ['node'], typeRoots: [path.join(root, 'node_modules/@types')], outDir: 'out',
    },
    files: ['console-agent.ts'],
  }));
  const tsc = spawnSync(process.execPath, [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', app], { cwd: app, encoding: 'utf8', timeout: 600_000 });
  if (!t.equal(tsc.status, 0, `tsc of the example: ${tsc.stdout}${tsc.stderr}`)) return;
  // A CommonJS host gets dist/agent.cjs by require() ("require" in the package's exports), with
  // the same API as an ES module host's import().
  const both = spawnSync(process.execPath, ['-e', `const cjs = require('devloc-agent');
    import('devloc-agent').then((esm) => console.log(JSON.stringify({ file: require.resolve('devloc-agent'), cjs: Object.keys(cjs).sort(), esm: Object.keys(esm).filter((k) => k !== 'default').sort() })));`], { cwd: app, encoding: 'utf8', timeout: 60_000 });
  if (!t.equal(both.status, 0, `require('devloc-agent'): ${both.stderr}`)) return;
  const exported = JSON.parse(both.stdout) as { file: string; cjs: string[]; esm: string[] };
  t.match(exported.file, /dist\/agent\.cjs$/, 'require() resolves to dist/agent.cjs');
  t.ok(exported.cjs.includes('Agent') && exported.cjs.includes('AgentError'), 'agent.cjs exports the library');
  t.same(exported.cjs, exported.esm, 'agent.cjs and agent.js export the same names');
  // A CommonJS TypeScript host (module Node16, the setting Node 20 projects use): the "require"
  // condition's declarations are CommonJS (.d.cts), or tsc refuses the require (TS1479).
  const cjsApp = path.join(dir, 'cjs-app');
  mkdirSync(path.join(cjsApp, 'node_modules'), { recursive: true });
  symlinkSync(installed, path.join(cjsApp, 'node_modules/devloc-agent'));
  writeFileSync(path.join(cjsApp, 'package.json'), '{ "private": true }\n');
  writeFileSync(path.join(cjsApp, 'host.cts'), [
    "import { Agent, AgentError } from 'devloc-agent';",
    "import type { AgentOptions } from 'devloc-agent';",
    "const options: Partial<AgentOptions> = {};",
    "const failure: AgentError | undefined = undefined;",
    "console.log(JSON.stringify({ agent: typeof Agent, error: typeof AgentError, options: Object.keys(options).length, failure: failure === undefined }));",
    '',
  ].join('\n'));
  writeFileSync(path.join(cjsApp, 'tsconfig.json'), JSON.stringify({
    compilerOptions: { target: 'ES2022', module: 'Node16', moduleResolution: 'Node16', strict: true, skipLibCheck: true, types: ['node'], typeRoots: [path.join(root, 'node_modules/@types')], outDir: 'out' },
    files: ['host.cts'],
  }));
  const cjsTsc = spawnSync(process.execPath, [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', cjsApp], { cwd: cjsApp, encoding: 'utf8', timeout: 600_000 });
  if (!t.equal(cjsTsc.status, 0, `tsc of a CommonJS host (module Node16): ${cjsTsc.stdout}${cjsTsc.stderr}`)) return;
  const cjsRun = spawnSync(process.execPath, [path.join(cjsApp, 'out/host.cjs')], { cwd: cjsApp, encoding: 'utf8', timeout: 60_000 });
  t.same([cjsRun.status, cjsRun.stdout.trim()], [0, JSON.stringify({ agent: 'function', error: 'function', options: 0, failure: true })], 'the CommonJS host runs on agent.cjs');

  const device = s.device('console');
  const unknownPeer = 'ab'.repeat(16);
  const child = spawn(process.execPath, [path.join(app, 'out/console-agent.js')], {
    cwd: app, stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env,
      CONSOLE_DEVICE_KEY: Buffer.from(keyFileToJson(device.key)).toString('base64'),
      CONSOLE_AUTHD_PUB: readFileSync(s.authdPubFile).toString('base64'),
      CONSOLE_AUTHD: s.authdAddr,
      CONSOLE_PEERS: `${peerId},${unknownPeer}`,
    },
  });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  const killer = setTimeout(() => child.kill('SIGKILL'), 240_000);
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  clearTimeout(killer);
  t.equal(code, 0, `the example exits 0 by itself after stop() (stderr: ${err.trim()})`);
  const lines = out.split('\n');
  const has = (re: RegExp, what: string): void => void t.ok(lines.some((l) => re.test(l)), `${what}\n${out}`);
  has(/^registered [0-9a-f]{32} at 127\.0\.0\.1:\d+$/, 'registered event with the locator ID and address');
  has(/^address - -> 127\.0\.0\.1:\d+$/, 'address event');
  has(/^lookup online at 127\.0\.0\.1:\d+$/, 'lookup');
  has(/^online true$/, 'online');
  has(/^group members 1$/, 'group create and members');
  has(/^match submitted waiting$/, 'match submit');
  has(/^match cancelled$/, 'match event (pushed or polled) after cancel');
  has(/^connect (?:lan|peer-reflexive|public) ping ok$/, 'connect to a reachable peer, ping over the channel');
  has(/^connect error PEER_UNAVAILABLE$/, 'connect to an unknown ID: an AgentError with a documented code');
  t.equal(lines.filter(Boolean).at(-1), 'stopped', 'clean shutdown last');
});
