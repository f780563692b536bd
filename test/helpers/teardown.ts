// What a fixture needs of a tap Test, and the same outside tap (lab scripts, benchmarks, tools).

/** The part of a tap Test that fixtures use: cleanups run when the test ends, last first. */
export interface Teardown {
  teardown(fn: () => unknown): void;
}

/** Run `body` with a tap-like teardown outside tap; the cleanups run last first, however it ends. */
export async function withTeardown<T>(body: (t: Teardown) => Promise<T>): Promise<T> {
  const cleanups: (() => unknown)[] = [];
  try {
    return await body({ teardown: (fn) => void cleanups.push(fn) });
  } finally {
    for (const fn of cleanups.reverse()) await fn();
  }
}
