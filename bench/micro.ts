// Timing of an in-process operation: warm up, then run it in growing batches until the time is
// up (one clock read per batch), and report operations per second.

/** Results are folded in here so that no call can be optimised away. */
export let sink = 0;

export function consume(v: unknown): void {
  if (v === null || v === undefined) sink++;
  else if (typeof v === 'object' && 'length' in v) sink += (v as { length: number }).length;
  else sink += 1;
}

export function measure(fn: () => unknown, seconds: number): { opsPerS: number; n: number } {
  const warmEnd = performance.now() + Math.min(100, seconds * 200);
  while (performance.now() < warmEnd) consume(fn());
  let n = 0;
  let batch = 1;
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  let now = t0;
  while (now < end) {
    for (let i = 0; i < batch; i++) consume(fn());
    n += batch;
    const t = performance.now();
    if (t - now < 5) batch *= 2;
    now = t;
  }
  return { opsPerS: n / ((now - t0) / 1000), n };
}
