// The embedded locatord never loads the Redis client: ioredis costs ~26 MiB of RSS and ~200 ms
// of start-up, and only `--store redis` uses it (server.ts imports store/shared.ts dynamically).
// Walks the static imports (type-only ones are erased, so they do not count) from the daemon's
// entry; a dynamic import() is where the walk stops.
import t from 'tap';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { root } from '../helpers/daemon.js';

const src = path.join(root, 'src');

function staticImports(file: string): string[] {
  const code = readFileSync(file, 'utf8').replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
  const out: string[] = [];
  for (const m of code.matchAll(/^\s*(?:import|export)\s+(?!type\b)(?:[\s\S]*?\bfrom\s*)?['"]([^'"]+)['"]/gm)) out.push(m[1]!);
  return out;
}

/** Every src file and package the entry loads before any dynamic import runs. */
function reach(entry: string): { files: Set<string>; packages: Set<string> } {
  const files = new Set<string>();
  const packages = new Set<string>();
  const queue = [path.join(src, entry)];
  while (queue.length) {
    const file = queue.pop()!;
    if (files.has(file)) continue;
    files.add(file);
    for (const spec of staticImports(file)) {
      if (spec.startsWith('.')) queue.push(path.resolve(path.dirname(file), spec.replace(/\.js$/, '.ts')));
      else if (!spec.startsWith('node:')) packages.add(spec.split('/').slice(0, spec.startsWith('@') ? 2 : 1).join('/'));
    }
  }
  return { files, packages };
}

t.test('devloc-locatord loads no Redis client until --store redis asks for one', async (t) => {
  const { files, packages } = reach('locatord/main.ts');
  t.ok(files.has(path.join(src, 'locatord/server.ts')), 'the walk reaches the server (the scanner works)');
  t.ok(packages.has('better-sqlite3') || [...files].some((f) => f.endsWith('locatord/groups.ts')), 'and the embedded store');
  t.notOk(packages.has('ioredis'), 'ioredis is not loaded statically');
  t.notOk(files.has(path.join(src, 'locatord/store/redis-client.ts')), 'nor the client module');
  // The positive control: the Redis store does load it.
  t.ok(reach('locatord/store/shared.ts').packages.has('ioredis'), 'store/shared.ts does (loaded by import() for --store redis)');
});
