// Builds the agent distribution (issue 20) from the repository's sources: three ESM bundles and
// the library once more as CommonJS, each one self-contained file (node built-ins only), so the
// package has no dependencies and a console maker can vendor dist/agent.js (or agent.cjs) alone.
//   dist/agent.js         the library (src/agent/index.ts): `import { Agent } from './agent.js'`
//   dist/agent.cjs        the same library for a CommonJS host: `require('./agent.cjs')`. Loading
//                         an ES module starts Node's ES module loader (0.9-1.2 MiB of RSS in the
//                         agent bench), which a CommonJS host has not paid and need not.
//   dist/devloc-agent.js  the daemon (src/agent/main.ts)
//   dist/devloc.js        the terminal-side devloc(1) commands (src/cli/terminal.ts; yargs inlined)
//   dist/types/           the library's declarations (tsc), for TypeScript hosts: .d.ts for an
//                         ES module host, .d.cts beside them for a CommonJS one
//   dist/agent.d.ts, dist/agent.d.cts   one line each, re-exporting dist/types/agent/index.d.(c)ts:
//                         the declarations of agent.js and agent.cjs for a program that copies
//                         them (with dist/types/) and imports them by path
// The man pages are copied beside them. Run by `npm pack` (prepack) or `npm run build:agent`.
// esbuild is a devDependency of the repository: the build needs the source tree anyway.
import { build } from 'esbuild';
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const out = path.join(here, 'dist');
const version = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')).version;
const own = JSON.parse(readFileSync(path.join(here, 'package.json'), 'utf8'));
if (own.version !== version) throw new Error(`packages/agent/package.json version ${own.version} differs from devloc's ${version}`);

/**
 * esbuild escapes non-ASCII text in strings, regular expressions and names (charset 'ascii', its
 * default) but keeps the comments it copies as they are. One such character (a dash in a doc
 * comment) makes V8 hold the whole source as a two-byte string: twice the bundle's size in every
 * agent's heap (issue 20). What remains is in comments; it becomes an escape there, harmless.
 */
function asciiOnly(file) {
  const code = readFileSync(file, 'utf8');
  const ascii = code.replace(/[^\x00-\x7f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  if (ascii !== code) writeFileSync(file, ascii);
}

rmSync(out, { recursive: true, force: true });
const entries = [
  ['agent.js', 'src/agent/index.ts'],
  ['agent.cjs', 'src/agent/index.ts'],
  ['devloc-agent.js', 'src/agent/main.ts'],
  ['devloc.js', 'src/cli/terminal.ts'],
];
for (const [file, entry] of entries) {
  const name = file.replace(/\.c?js$/, '');
  const cjs = file.endsWith('.cjs');
  await build({
    entryPoints: [path.join(root, entry)],
    outfile: path.join(out, file),
    bundle: true,
    platform: 'node',
    format: cjs ? 'cjs' : 'esm',
    target: 'node20',
    legalComments: 'inline',
    // import.meta.url: only version.ts reads it, where __DEVLOC_VERSION__ is unset (never in a bundle).
    define: { __DEVLOC_VERSION__: JSON.stringify(version), ...(cjs ? { 'import.meta.url': 'undefined' } : {}) },
    // yargs (devloc.js only) uses require() of built-ins in places: give the ESM bundle one.
    banner: name === 'devloc' ? { js: "import { createRequire as __devlocRequire } from 'node:module'; const require = __devlocRequire(import.meta.url);" } : {},
    logLevel: 'warning',
  });
  asciiOnly(path.join(out, file));
  if (name !== 'agent') chmodSync(path.join(out, file), 0o755);
}
// Declarations of the library for TypeScript hosts (dist/types/agent/index.d.ts and what it names).
const tsc = spawnSync(process.execPath, [
  path.join(root, 'node_modules/typescript/bin/tsc'), '--declaration', '--emitDeclarationOnly', '--rootDir', path.join(root, 'src'),
  '--outDir', path.join(out, 'types'), '--target', 'ES2022', '--module', 'NodeNext', '--moduleResolution', 'NodeNext', '--lib', 'ES2023',
  '--types', 'node', '--strict', '--exactOptionalPropertyTypes', '--skipLibCheck', path.join(root, 'src/agent/index.ts'),
], { encoding: 'utf8' });
if (tsc.status !== 0) throw new Error(`tsc (declarations): ${tsc.stdout}${tsc.stderr}`);
// The same declarations as CommonJS (.d.cts, relative imports to .cjs) for the "require"
// condition: under "type": "module" a .d.ts declares an ES module, and a CommonJS TypeScript host
// compiled with module Node16 refuses to require() one (TS1479), though agent.cjs is CommonJS.
function cjsDeclarations(dir) {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const f = path.join(dir, e.name);
    if (e.isDirectory()) cjsDeclarations(f);
    else if (e.name.endsWith('.d.ts')) {
      const text = readFileSync(f, 'utf8').replace(/((?:from|import\()\s*)(['"])(\.{1,2}\/[^'"]+)\.js\2/g, '$1$2$3.cjs$2');
      writeFileSync(f.replace(/\.d\.ts$/, '.d.cts'), text);
    }
  }
}
cjsDeclarations(path.join(out, 'types'));
// Declarations beside the two library files, so that a program that vendors dist/agent.js (or
// agent.cjs) with dist/types/ and imports it by path gets its types (without them tsc finds no
// declaration for './agent.js': TS7016).
writeFileSync(path.join(out, 'agent.d.ts'), "export * from './types/agent/index.js';\n");
writeFileSync(path.join(out, 'agent.d.cts'), "export * from './types/agent/index.cjs';\n");
mkdirSync(path.join(here, 'man'), { recursive: true });
for (const page of ['devloc-agent.8', 'devloc-agent.3', 'devloc.1']) copyFileSync(path.join(root, 'man', page), path.join(here, 'man', page));
writeFileSync(path.join(out, 'VERSION'), `${version}\n`);
