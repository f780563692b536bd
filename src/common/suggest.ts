// "Did you mean": the closest known name to a misspelt flag, config key or subcommand, so that
// an error says what to type instead of printing the whole help.

/** Levenshtein distance (insert, delete, substitute; each costs 1). */
export function editDistance(a: string, b: string): number {
  if (a === b) return 0;
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}

/**
 * The known name closest to `input`, or undefined when none is close enough to be a plausible
 * typo (at most a third of the input's length, at least 2 edits allowed). Case and the choice
 * between '-', '_' and ' ' are ignored first: `Max_Party` is `max-party`. Ties go to the first
 * name in `known`.
 */
export function closest(input: string, known: readonly string[]): string | undefined {
  const norm = (s: string): string => s.toLowerCase().replace(/[\s_]+/g, '-');
  const n = norm(input);
  const exact = known.find((k) => norm(k) === n);
  if (exact !== undefined) return exact;
  const limit = Math.max(2, Math.floor(n.length / 3));
  let best: string | undefined;
  let bestD = Infinity;
  for (const k of known) {
    const d = editDistance(n, norm(k));
    if (d < bestD) {
      bestD = d;
      best = k;
    }
  }
  return bestD <= limit ? best : undefined;
}

/** " (did you mean --x?)" or "" . */
export function didYouMean(input: string, known: readonly string[], prefix = ''): string {
  const c = closest(input, known);
  return c === undefined ? '' : ` (did you mean ${prefix}${c}?)`;
}
