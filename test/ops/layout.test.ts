// The tree shows the architecture (HACKING.md "Layout"): src/ holds only what a user runs and
// imports nothing beside it; benchmarks (bench/), the fuzzer (fuzz/) and generators (tools/) are
// typechecked with the tests but are not in the package; compiled as the package is, `devloc
// bench` says where the benchmarks are instead of failing on a missing module.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { root } from './tools.js';

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(path.join(dir, e.name)) : [path.join(dir, e.name)]));
}

t.test('src/ imports nothing outside src/ (bench/, fuzz/, tools/, test/ depend on src, never the reverse)', async (t) => {
  const src = path.join(root, 'src');
  const files = walk(src).filter((f) => f.endsWith('.ts'));
  t.ok(files.length > 50, `${files.length} files under src/`);
  const outside: string[] = [];
  for (const f of files) {
    const text = readFileSync(f, 'utf8');
    for (const m of text.matchAll(/(?:from\s+|import\(\s*)'(\.{1,2}\/[^']+)'/g)) {
      const target = path.resolve(path.dirname(f), m[1]!);
      if (!target.startsWith(src + path.sep)) outside.push(`${path.relative(root, f)}: ${m[1]}`);
    }
  }
  t.same(outside, [], 'every relative import stays in src/');
  for (const d of ['bench', 'fuzz']) t.notOk(existsSync(path.join(src, d)), `no src/${d}/ (it is top-level ${d}/)`);
  t.same(files.filter((f) => /\/(bench|scale-bench|bench-worker|bench-child|gen-[\w-]+)\.ts$/.test(f) && !f.endsWith('/cli/commands/bench.ts')).map((f) => path.relative(root, f)), [],
    'no benchmark or generator in src/ (src/cli/commands/bench.ts only declares the flags)');
});

t.test('the package and the compilers: bench, fuzz, tools outside dist, typechecked with the tests', async (t) => {
  const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { files: string[]; scripts: Record<string, string> };
  t.same(pkg.files.filter((f) => /^(bench|fuzz|tools|build|test|src)\b/.test(f)), [], 'package.json "files" has none of them');
  const main = JSON.parse(readFileSync(path.join(root, 'tsconfig.json'), 'utf8')) as { include: string[]; compilerOptions: { rootDir: string; outDir: string } };
  t.same(main.include, ['src'], 'dist is compiled from src/ alone');
  t.equal(main.compilerOptions.outDir, 'dist');
  const tools = JSON.parse(readFileSync(path.join(root, 'tsconfig.tools.json'), 'utf8')) as { include: string[]; compilerOptions: { outDir: string } };
  t.not(tools.compilerOptions.outDir, 'dist', 'tsconfig.tools.json compiles outside dist');
  for (const d of ['bench', 'fuzz', 'tools']) t.ok(tools.include.includes(d), `tsconfig.tools.json compiles ${d}/`);
  const test = JSON.parse(readFileSync(path.join(root, 'test/tsconfig.json'), 'utf8')) as { include: string[] };
  for (const d of ['src', 'bench', 'fuzz', 'tools']) t.ok(test.include.includes(`../${d}`), `test/tsconfig.json typechecks ${d}/`);
  t.match(pkg.scripts['bench'], /tsconfig\.tools\.json/, 'npm run bench compiles bench/');
  t.match(pkg.scripts['fuzz'], /tsconfig\.tools\.json/, 'npm run fuzz compiles fuzz/');
});

t.test('compiled as the package is: no bench, fuzz or generator in it; devloc bench points to npm run bench', async (t) => {
  // Inside the repository, so the compiled files find node_modules; but not next to a bench/.
  mkdirSync(path.join(root, '.tap'), { recursive: true });
  const out = mkdtempSync(path.join(root, '.tap', 'layout-dist-'));
  t.teardown(() => rmSync(out, { recursive: true, force: true }));
  const tsc = spawnSync(process.execPath, [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', root, '--outDir', out, '--declaration', 'false', '--sourceMap', 'false'], { encoding: 'utf8' });
  t.equal(tsc.status, 0, `tsc: ${tsc.stdout}${tsc.stderr}`);
  const files = walk(out).map((f) => path.relative(out, f));
  t.ok(files.includes('cli/devloc.js') && files.includes('common/spawn.js'), 'the CLI and the spawn helper (the demo uses it) are in');
  t.same(files.filter((f) => /(^|\/)(bench|fuzz)\/|bench-|scale-bench|gen-protocol-man|(authd|locatord|matchd|agent)\/bench/.test(f)), [], 'nothing of bench/, fuzz/ or tools/');
  const r = spawnSync(process.execPath, [path.join(out, 'cli/devloc.js'), 'bench', '--only', 'codec'], { encoding: 'utf8' });
  t.equal(r.status, 1, 'devloc bench: exit 1');
  t.match(r.stderr, /devloc bench: the benchmarks are not part of the installed package: .*npm run bench/, 'says where to run it');
  t.equal(r.stdout, '', 'nothing ran');
  const help = spawnSync(process.execPath, [path.join(out, 'cli/devloc.js'), 'bench', '--help'], { encoding: 'utf8', env: { ...process.env, COLUMNS: '100' } });
  t.equal(help.status, 0, 'devloc bench --help still works (devloc(1) documents the flags)');
});
