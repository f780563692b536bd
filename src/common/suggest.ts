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

/**
 * yargs' "Unknown arguments: max-tll, maxTll" as one line naming the first flag as typed and the
 * closest option of the command (dash-case only: the camelCase aliases are yargs internals).
 */
export function unknownArgumentLine(msg: string, known: readonly string[]): string | null {
  const m = /^Unknown arguments?: (.*)$/.exec(msg);
  if (!m) return null;
  const names = m[1]!.split(', ').filter((n) => !/[A-Z]/.test(n) || !m[1]!.split(', ').some((o) => o !== n && o.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase()) === n));
  const first = names[0] ?? m[1]!;
  const options = known.filter((k) => k.length > 1 && !/[A-Z]/.test(k));
  return `unknown option ${first.length > 1 ? '--' : '-'}${first}${didYouMean(first, options, '--')}`;
}
