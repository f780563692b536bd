// src/agent/turn stays inside the agent's import rule (node built-ins, src/wire, and of src/net
// only lookup.ts, its sockets' literalLookup: not the retransmitting client), so the
// dependency-free agent distribution (issue 20) can carry it. Type-only imports count too.
import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { builtinModules } from 'node:module';
import { root } from '../helpers/daemon.js';

const dir = path.join(root, 'src', 'agent', 'turn');
const builtins = new Set(builtinModules);

t.test('every file of src/agent/turn imports only node:*, src/wire, src/net/lookup.ts and its own directory', async (t) => {
  const files = readdirSync(dir).filter((f) => f.endsWith('.ts'));
  t.ok(files.includes('client.ts') && files.includes('codec.ts'));
  const bad: string[] = [];
  for (const f of files) {
    const code = readFileSync(path.join(dir, f), 'utf8').replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
    for (const m of code.matchAll(/(?:\bfrom\s*|\bimport\s*\(?\s*)['"]([^'"]+)['"]/g)) {
      const spec = m[1]!;
      if (spec.startsWith('node:') && builtins.has(spec.slice(5))) continue;
      const rel = spec.startsWith('.') ? path.relative(path.join(root, 'src'), path.resolve(dir, spec)) : spec;
      if (spec.startsWith('.') && (rel.startsWith('wire/') || rel.startsWith('agent/turn/') || rel === 'net/lookup.js')) continue;
      bad.push(`${f} imports ${spec}`);
    }
  }
  t.same(bad, []);
});
