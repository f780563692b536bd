// RateLimiter on a fake clock: bursts, refill, per-source buckets, bounded memory.
import t from 'tap';
import { RateLimiter } from '../../src/net/ratelimit.js';

function limiter(ratePerS: number, burst: number, maxSources?: number) {
  const clock = { ms: 1_000_000 };
  const rl = new RateLimiter({ ratePerS, burst, now: () => clock.ms, ...(maxSources ? { maxSources } : {}) });
  return { rl, clock };
}

const takeN = (rl: RateLimiter, src: string, n: number): number => {
  let ok = 0;
  for (let i = 0; i < n; i++) if (rl.take(src)) ok++;
  return ok;
};

t.test('a burst, then the sustained rate', async (t) => {
  const { rl, clock } = limiter(10, 5);
  t.equal(takeN(rl, 'a', 100), 5, 'burst of 5 at once');
  t.equal(rl.retryAfterMs('a'), 100, 'one token at 10/s: 100 ms');
  clock.ms += 50;
  t.equal(rl.retryAfterMs('a'), 50, 'the wait shrinks as time passes');
  t.notOk(rl.take('a'));
  clock.ms += 50;
  t.ok(rl.take('a'), 'one token after 100 ms');
  t.notOk(rl.take('a'));
  clock.ms += 1000;
  t.equal(takeN(rl, 'a', 100), 5, 'refill is capped at the burst');
  clock.ms += 10_000;
  t.equal(rl.retryAfterMs('a'), 0, 'nothing to wait for');
});

t.test('sources are independent; cost > 1', async (t) => {
  const { rl } = limiter(1, 3);
  t.equal(takeN(rl, 'a', 10), 3);
  t.equal(takeN(rl, 'b', 10), 3, 'b has its own bucket');
  t.ok(rl.take('c', 3));
  t.notOk(rl.take('c', 1));
  t.notOk(rl.take('d', 4), 'a cost above the burst never passes');
  t.equal(rl.retryAfterMs('unknown'), 0);
});

t.test('a clock stepping back does not drain the buckets', async (t) => {
  const { rl, clock } = limiter(10, 5);
  t.ok(rl.take('a'));
  clock.ms -= 3_600_000;
  t.equal(takeN(rl, 'a', 10), 4, 'the tokens left are still there');
  clock.ms += 100;
  t.ok(rl.take('a'), 'and refill resumes from the new time');
});

t.test('memory is bounded by maxSources (LRU)', async (t) => {
  const { rl } = limiter(1, 1, 100);
  for (let i = 0; i < 1000; i++) rl.take(`10.0.${i >> 8}.${i & 255}`);
  t.equal(rl.size, 100);
  t.ok(rl.take('10.0.0.0'), 'an evicted source starts with a full bucket');
});

t.test('rate 0 disables limiting; setRate applies at once', async (t) => {
  const { rl } = limiter(0, 0);
  t.equal(takeN(rl, 'a', 1000), 1000);
  t.equal(rl.retryAfterMs('a'), 0);
  rl.setRate(1, 2);
  t.equal(takeN(rl, 'a', 10), 2);
});

t.test('default clock is monotonic: works without injection', async (t) => {
  const rl = new RateLimiter({ ratePerS: 1, burst: 2 });
  t.equal(takeN(rl, 'x', 5), 2);
  t.ok(rl.retryAfterMs('x') > 0 && rl.retryAfterMs('x') <= 1000);
});
