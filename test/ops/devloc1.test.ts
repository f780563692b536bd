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
