// The STUN/TURN fuzz targets (fuzz/stun-targets.ts) hold on their seeds and on a few thousand
// seeded mutations, so they keep working before and after they are registered with the fuzzer.
import t from 'tap';
import { stunTargets } from '../../fuzz/stun-targets.js';
import { mutate } from '../../fuzz/mutate.js';
import { Rng } from '../../fuzz/rng.js';

for (const target of stunTargets()) {
  t.test(`${target.name}: seeds and 3000 mutations keep every promise`, async (t) => {
    const rng = new Rng(17);
    const outcomes = new Set<string>();
    for (const s of target.seeds) outcomes.add(await target.run(s, rng));
    t.ok([...outcomes].some((o) => o.startsWith('ok') || o === 'data' || o === 'ignored'), 'seeds decode');
    for (let i = 0; i < 3000; i++) {
      let input = mutate(rng.pick(target.seeds), rng, () => rng.pick(target.seeds));
      if (target.prepare) input = target.prepare(input, rng);
      outcomes.add(await target.run(input, rng));
    }
    t.ok(outcomes.size > 3, `${outcomes.size} distinct outcomes`);
  });
}
