// man/devloc.1 is assembled from tools/devloc1-parts/*.mdoc (tools/gen-devloc1.sh): fail when stale.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { root } from '../helpers/daemon.js';

t.test('man/devloc.1 is the concatenation of tools/devloc1-parts/*.mdoc', async (t) => {
  const dir = path.join(root, 'tools/devloc1-parts');
  const parts = readdirSync(dir).filter((f) => f.endsWith('.mdoc')).sort();
  t.ok(parts.length > 3, 'parts exist');
  const expected = parts.map((f) => readFileSync(path.join(dir, f), 'utf8')).join('');
  t.equal(readFileSync(path.join(root, 'man/devloc.1'), 'utf8'), expected, 'run tools/gen-devloc1.sh');
});

t.test('devloc(1) names every section of devloc bench, in the order they run', async (t) => {
  const { SECTION_NAMES } = await import('../../bench/index.js');
  const page = readFileSync(path.join(root, 'man/devloc.1'), 'utf8');
  const bench = page.slice(page.indexOf('.Ss devloc bench'));
  const at = SECTION_NAMES.map((n) => bench.search(new RegExp(`^\\.Ql ${n}( |$)`, 'm')));
  t.same(SECTION_NAMES.filter((_, i) => at[i]! < 0), [], 'sections the page does not name');
  t.same(at, [...at].sort((a, b) => a - b), 'the page lists them in the order --list gives');
});
