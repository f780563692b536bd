// The pool of random bytes authd draws per request from (src/wire/random-pool.ts): every byte
// handed out once, zeroed as it leaves, refilled only when a draw does not fit, and large draws
// filled directly.
import t from 'tap';
import { MAX_POOLED_DRAW, RandomPool, randomDraw } from '../../src/wire/random-pool.js';

t.test('draws are consecutive bytes of the fills, each handed out once, zeroed in the pool as they leave', async (t) => {
  // A fill that writes a counter: which fill and which byte of it every drawn byte came from.
  let fills = 0;
  const pool = new RandomPool(256, (b) => {
    fills++;
    for (let i = 0; i < b.length; i++) b[i] = (fills * 31 + i) & 0xff;
  });
  t.equal(pool.left, 0, 'nothing drawn before the first draw');
  const a = pool.draw(100);
  t.equal(fills, 1);
  t.same([...a], Array.from({ length: 100 }, (_, i) => (31 + i) & 0xff), 'the first 100 bytes of the fill');
  const b = pool.draw(156);
  t.equal(fills, 1, '100 + 156 fit one fill of 256');
  t.same([...b], Array.from({ length: 156 }, (_, i) => (31 + 100 + i) & 0xff), 'the next 156, none handed out twice');
  t.equal(pool.left, 0);
  const c = pool.draw(16);
  t.equal(fills, 2, 'a draw that does not fit refills');
  t.same([...c], Array.from({ length: 16 }, (_, i) => (62 + i) & 0xff));
  t.equal(pool.left, 240);
  // What the pool still holds is only what was not drawn: the drawn bytes are zeros there.
  const inside = (pool as unknown as { pool: Buffer }).pool;
  t.ok(inside.subarray(0, 16).every((x) => x === 0), 'drawn bytes zeroed in the pool');
  t.ok(inside.subarray(16).some((x) => x !== 0), 'the rest kept');
  t.equal(pool.draw(0).length, 0, 'an empty draw');
});

t.test('a draw larger than the pooled limit is filled directly; bad sizes throw', async (t) => {
  let filled: number[] = [];
  const pool = new RandomPool(512, (b) => { filled.push(b.length); b.fill(7); });
  t.same([...pool.draw(MAX_POOLED_DRAW + 1)].every((x) => x === 7), true);
  t.same(filled, [MAX_POOLED_DRAW + 1], 'its own fill, the pool untouched');
  t.equal(pool.left, 0);
  filled = [];
  pool.draw(MAX_POOLED_DRAW);
  t.same(filled, [512], 'at the limit: from the pool');
  t.throws(() => pool.draw(-1), RangeError);
  t.throws(() => pool.draw(1.5), RangeError);
  t.throws(() => new RandomPool(100), RangeError, 'a pool smaller than the largest pooled draw');
});

t.test('the process pool: distinct draws of the sizes asked', async (t) => {
  const seen = new Set<string>();
  for (let i = 0; i < 2000; i++) seen.add(randomDraw(16).toString('hex'));
  t.equal(seen.size, 2000, '2,000 draws of 16 bytes, across several refills, all different');
  t.equal(randomDraw(12).length, 12);
  t.equal(randomDraw(1000).length, 1000);
});
