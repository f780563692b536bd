// The rule for external tools (test/ops/tools.ts): a test that needs one is skipped only on a
// machine without it and outside CI; with CI=true it runs, and fails on the missing tool.
import t from 'tap';
import { has, needs } from './tools.js';

t.test('needs: skipped without the tool outside CI, run (and failing) in CI', async (t) => {
  const saved = process.env['CI'];
  t.teardown(() => {
    if (saved === undefined) delete process.env['CI'];
    else process.env['CI'] = saved;
  });
  delete process.env['CI'];
  t.match(needs('mandoc', false).skip, /mandoc not installed/, 'developer machine without the tool: skipped');
  t.equal(needs('mandoc', true).skip, false, 'tool present: runs');
  process.env['CI'] = 'true';
  t.equal(needs('mandoc', false).skip, false, 'CI without the tool: runs, so it fails');
});

t.test('has: a program that does not exist is not there', async (t) => {
  t.equal(has('devloc-no-such-tool-3f9a'), false);
  t.equal(has(process.execPath), true, 'node itself is');
});
