// A short pass of the fuzzer (fuzz) in the test suite: every target runs (the decoders, the
// DatagramServer, and the daemons' own servers in-process), on the wire vectors when present,
// and nothing crashes. `npm run fuzz -- --seconds 60` is the real run.
import t from 'tap';
import { runFuzz } from '../../fuzz/fuzz.js';

t.test('2-second fuzz pass: no crash in any target', async (t) => {
  // At least 100 mutated inputs per target whatever the machine's load: the assertions below count
  // work done, never time.
  const report = await runFuzz({ seconds: 2, seed: 20260101, crashDir: null, minMutations: 100 });
  for (const c of report.crashes) t.fail(`${c.target}: ${c.message}\ninput: ${c.inputHex}\n${c.stack}`);
  t.equal(report.crashes.length, 0, 'no crashes');
  // A daemon that cannot start here is its own tests' business; say so, do not fail.
  for (const s of report.skipped) t.comment(`daemon target ${s.name} skipped: ${s.reason}`);
  t.ok(report.targets.length + report.skipped.length >= 13, 'every target ran or was reported');
  for (const target of report.targets) t.ok(target.executions > 100, `${target.name}: ${target.executions} executions (seeds + at least 100 mutated)`);
  t.ok(report.executions >= 100 * report.targets.length, `${report.executions} executions in total`);
});
