// What the simulated terminals of `devloc bench` send (the "terminals" section): the kinds of
// request, the default proportions, and the parsing of --mix and --sweep. Pure, for tests.

/** Every kind of request a simulated terminal sends, in the order results are shown. */
export const KINDS = [
  'auth', 'register', 'refresh', 'query-addr', 'query-status',
  'group-create', 'group-join', 'group-leave', 'group-members', 'match-submit',
] as const;
export type Kind = (typeof KINDS)[number];

export const KIND_DOC: Record<Kind, string> = {
  auth: 'AUTH_REQUEST to authd (sealed, Ed25519-signed, fresh X25519 cnf); the grant is opened and kept for the next register',
  register: 'REGISTER to locatord: opens a new session from the ticket of the last auth if there is one, else re-registers in the current session',
  refresh: 'REFRESH in the session',
  'query-addr': 'QUERY_ADDR of 4 random terminals',
  'query-status': 'QUERY_STATUS of 4 random terminals',
  'group-create': 'GROUP_CREATE of a new group',
  'group-join': 'GROUP_JOIN of one of 3 neighbouring groups',
  'group-leave': 'GROUP_LEAVE of a group created or joined in the run (else of a neighbouring one: a no-op)',
  'group-members': 'GROUP_MEMBERS (first page) of a group the terminal is in',
  'match-submit': 'MATCH_SUBMIT to matchd (2-party, 1 of N/20 media IDs; replaces the waiting one); results pushed by matchd are acknowledged',
};

export type Mix = Record<Kind, number>;

/**
 * The default proportions (percent). A deployed terminal mostly refreshes (every 25-60 s) and
 * looks peers up; groups and matching follow its user; it authenticates once per ticket
 * lifetime (hours), which would round to nothing, so auth and register get a small share
 * to keep authd and session opening in the picture.
 */
export const DEFAULT_MIX: Mix = {
  auth: 2, register: 4, refresh: 40, 'query-addr': 16, 'query-status': 10,
  'group-create': 2, 'group-join': 4, 'group-leave': 2, 'group-members': 10, 'match-submit': 10,
};

/** Names standing for several kinds in --mix (the weight is split evenly). */
export const MIX_ALIASES: Record<string, readonly Kind[]> = {
  query: ['query-addr', 'query-status'],
  group: ['group-create', 'group-join', 'group-leave', 'group-members'],
  match: ['match-submit'],
};

export type Parsed<T> = { ok: true; value: T } | { ok: false; error: string };

const zeroMix = (): Mix => Object.fromEntries(KINDS.map((k) => [k, 0])) as Mix;

/** `refresh=50,query=30,auth=1`: weights (any scale) of the kinds named; the others get 0. */
export function parseMix(text: string): Parsed<Mix> {
  const mix = zeroMix();
  const items = text.split(',').map((s) => s.trim()).filter(Boolean);
  if (items.length === 0) return { ok: false, error: 'empty mix: give kind=weight,... (kinds: ' + KINDS.join(', ') + ')' };
  for (const item of items) {
    const m = /^([a-z-]+)\s*[=:]\s*([0-9]*\.?[0-9]+)$/.exec(item);
    if (!m) return { ok: false, error: `"${item}" is not kind=weight` };
    const name = m[1]!;
    const weight = Number(m[2]);
    const kinds: readonly Kind[] | undefined = (KINDS as readonly string[]).includes(name) ? [name as Kind] : MIX_ALIASES[name];
    if (!kinds) return { ok: false, error: `unknown kind "${name}" (kinds: ${KINDS.join(', ')}; also ${Object.keys(MIX_ALIASES).join(', ')})` };
    for (const k of kinds) mix[k] += weight / kinds.length;
  }
  const total = KINDS.reduce((a, k) => a + mix[k], 0);
  if (!(total > 0)) return { ok: false, error: 'every weight is 0: nothing to send' };
  return { ok: true, value: mix };
}

/** Weights as fractions summing to 1. */
export function normaliseMix(mix: Mix): Mix {
  const total = KINDS.reduce((a, k) => a + mix[k], 0);
  return Object.fromEntries(KINDS.map((k) => [k, total > 0 ? mix[k] / total : 0])) as Mix;
}

/** `refresh=40%,...` of the kinds with a share, in KINDS order. */
export function formatMix(mix: Mix): string {
  const n = normaliseMix(mix);
  return KINDS.filter((k) => n[k] > 0).map((k) => `${k}=${+(n[k] * 100).toFixed(1)}%`).join(',');
}

/**
 * Pick a kind from a uniform random number in [0, 1): cumulative shares in KINDS order.
 * Kinds with no share are never picked.
 */
export function kindPicker(mix: Mix): (r: number) => number {
  const n = normaliseMix(mix);
  const cumulative: number[] = [];
  const index: number[] = [];
  let sum = 0;
  KINDS.forEach((k, i) => {
    if (n[k] <= 0) return;
    sum += n[k];
    cumulative.push(sum);
    index.push(i);
  });
  return (r: number) => {
    const x = r * sum;
    for (let i = 0; i < cumulative.length; i++) if (x < cumulative[i]!) return index[i]!;
    return index[index.length - 1]!;
  };
}

/** One step of a sweep: flat out, an offered rate, or a share of the flat-out throughput. */
export type SweepStep = { kind: 'max' } | { kind: 'rate'; perS: number } | { kind: 'percent'; percent: number };

/** The sweep when neither --rate nor --sweep is given: flat out, then fractions of it. */
export const DEFAULT_SWEEP = 'max,25%,50%,75%,100%,125%';

/** `max,1000,2000` or `max,50%,100%`: steps in the order given. */
export function parseSweep(text: string): Parsed<SweepStep[]> {
  const steps: SweepStep[] = [];
  const items = text.split(',').map((s) => s.trim()).filter(Boolean);
  if (items.length === 0) return { ok: false, error: 'empty sweep' };
  for (const item of items) {
    if (item === 'max') {
      steps.push({ kind: 'max' });
      continue;
    }
    const pct = /^([0-9]*\.?[0-9]+)%$/.exec(item);
    if (pct) {
      const percent = Number(pct[1]);
      if (!(percent > 0) || percent > 1000) return { ok: false, error: `"${item}": a share must be above 0% and at most 1000%` };
      steps.push({ kind: 'percent', percent });
      continue;
    }
    if (!/^[0-9]*\.?[0-9]+$/.test(item)) return { ok: false, error: `"${item}" is not a rate (req/s), a share of the flat-out figure (N%) or max` };
    const perS = Number(item);
    if (!(perS > 0)) return { ok: false, error: `"${item}": a rate must be above 0 req/s` };
    steps.push({ kind: 'rate', perS });
  }
  return { ok: true, value: steps };
}

/**
 * The steps as run: a share of the flat-out figure needs one, so a flat-out step is put first
 * when the sweep has shares and no flat-out step before them.
 */
export function planSweep(steps: SweepStep[]): SweepStep[] {
  const firstPercent = steps.findIndex((s) => s.kind === 'percent');
  if (firstPercent < 0) return steps;
  const maxBefore = steps.slice(0, firstPercent).some((s) => s.kind === 'max');
  return maxBefore ? steps : [{ kind: 'max' }, ...steps];
}
