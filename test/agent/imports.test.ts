// The agent library stays tiny: everything reachable from src/agent/index.ts is src/wire, the
// UDP client and client session of src/net, the agent's own files and node built-ins. No npm
// packages (lru-cache, yargs, better-sqlite3) and nothing of src/common. Type-only imports count
// too: what is allowed to be named may also be loaded later.
import t from 'tap';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { builtinModules } from 'node:module';
import { root } from '../helpers/daemon.js';

const src = path.join(root, 'src');
const ALLOWED_FILES = new Set(['net/client.ts', 'net/clientsession.ts']);
const allowed = (rel: string): boolean => rel.startsWith('wire/') || rel.startsWith('agent/') || ALLOWED_FILES.has(rel);
const builtins = new Set(builtinModules);

/** Every module specifier in a TypeScript file (static, re-export, side-effect and dynamic imports). */
export function specifiers(text: string): string[] {
  const out: string[] = [];
  const code = text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
  const patterns = [
    /\bimport\s+(?:type\s+)?[\s\S]*?\bfrom\s*['"]([^'"]+)['"]/g,
    /\bexport\s+(?:type\s+)?(?:\*|\{[\s\S]*?\})(?:\s+as\s+\w+)?\s*from\s*['"]([^'"]+)['"]/g,
    /\bimport\s*['"]([^'"]+)['"]/g,
    /\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)/g,
    /\brequire\s*\(\s*['"]([^'"]+)['"]\s*\)/g,
  ];
  for (const re of patterns) for (const m of code.matchAll(re)) out.push(m[1]!);
  return out;
}

function walk(entry: string): { files: Set<string>; bad: string[] } {
  const files = new Set<string>();
  const bad: string[] = [];
  const queue = [entry];
  while (queue.length) {
    const file = queue.pop()!;
    if (files.has(file)) continue;
    files.add(file);
    const rel = path.relative(src, file);
    for (const spec of specifiers(readFileSync(file, 'utf8'))) {
      if (spec.startsWith('node:') ? builtins.has(spec.slice(5)) : false) continue;
      if (!spec.startsWith('.')) {
        bad.push(`${rel} imports package ${spec}${builtins.has(spec) ? ' (use the node: prefix)' : ''}`);
        continue;
      }
      const target = path.resolve(path.dirname(file), spec.replace(/\.js$/, '.ts'));
      const trel = path.relative(src, target);
      if (!allowed(trel)) {
        bad.push(`${rel} imports ${trel}`);
        continue;
      }
      queue.push(target);
    }
  }
  return { files, bad };
}

t.test('the specifier scanner sees every import form', async (t) => {
  const text = [
    "import a from 'a1';", "import type { B } from 'b1';", "import {\n  c,\n  d,\n} from 'c1';", "export * from 'e1';",
    "export { f } from 'f1';", "export type { G } from 'g1';", "import 'h1';", "const x = await import('i1');",
    "// import z from 'not-me';", '/* import y from "nor-me"; */',
  ].join('\n');
  t.same(specifiers(text).sort(), ['a1', 'b1', 'c1', 'e1', 'f1', 'g1', 'h1', 'i1']);
});

t.test('src/agent/index.ts reaches only wire, net/client, net/clientsession, agent and node:*', async (t) => {
  const { files, bad } = walk(path.join(src, 'agent', 'index.ts'));
  t.same(bad, [], 'no forbidden imports');
  const rel = [...files].map((f) => path.relative(src, f));
  t.ok(rel.includes('net/client.ts') && rel.includes('net/clientsession.ts'), 'walks into src/net');
  t.ok(rel.includes('wire/auth.ts'), 'walks into src/wire');
  t.notOk(rel.includes('wire/ticket.ts'), 'not the ticket verifier (lru-cache)');
  t.notOk(rel.some((f) => f === 'agent/main.ts' || f === 'agent/daemon.ts'), 'the daemon entry is outside the library');
});

t.test('the walk would catch a forbidden import', async (t) => {
  const { bad } = walk(path.join(src, 'wire', 'ticket.ts'));
  t.ok(bad.some((b) => b.includes('lru-cache')), 'lru-cache found through ticket.ts');
  const d = walk(path.join(src, 'agent', 'daemon.ts'));
  t.ok(d.bad.some((b) => b.includes('common/')), 'the daemon uses src/common');
});
