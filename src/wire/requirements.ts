// Requirements on partners (MATCH_SUBMIT key 8): what a requester asks of every other member's
// attributes (key 7, the patent's community field). Three operators:
//   0 equal       the attribute, as text (numbers in decimal, booleans "true"/"false"), equals `value`
//   1 range       the attribute is a number within [min, max] (either bound may be absent)
//   2 member      the attribute, as text, is one of `set`
// A missing attribute satisfies nothing. Mandatory requirements always hold exactly; preferred
// ones start out as filters too and are relaxed as the request waits (see Tolerance below).
import type { Requirement } from './catalog.js';
import type { Props } from './schema.js';

export const Op = { EQUAL: 0, RANGE: 1, MEMBER: 2 } as const;

/** A checked requirement, in the form the matcher evaluates quickly. */
export interface Rule {
  attr: string;
  op: number;
  value: string;
  min: number;
  max: number;
  set: ReadonlySet<string> | null;
  mandatory: boolean;
}

/** How far a request's preferred requirements are relaxed, from its waiting time. */
export interface Tolerance {
  /** Preferred numeric ranges are widened by this much on each side. */
  widen: number;
  /** Preferred requirements no longer filter (they only rank candidates). */
  dropped: boolean;
}

export const EXACT: Tolerance = { widen: 0, dropped: false };

/** Validate the wire form; returns rules or the reason the request is refused. */
export function compileRequirements(reqs: readonly Requirement[] | undefined): { ok: true; rules: Rule[] } | { ok: false; reason: string } {
  const rules: Rule[] = [];
  for (const [i, r] of (reqs ?? []).entries()) {
    const where = `requirements[${i}] (${r.attr})`;
    if (r.attr.length === 0) return { ok: false, reason: `${where}: empty attribute name` };
    const mandatory = r.mandatory === true;
    switch (r.op) {
      case Op.EQUAL:
        if (r.value === undefined) return { ok: false, reason: `${where}: op 0 needs value` };
        rules.push({ attr: r.attr, op: r.op, value: r.value, min: 0, max: 0, set: null, mandatory });
        break;
      case Op.RANGE: {
        const min = r.min ?? -Infinity;
        const max = r.max ?? Infinity;
        if (min > max) return { ok: false, reason: `${where}: min > max` };
        rules.push({ attr: r.attr, op: r.op, value: '', min, max, set: null, mandatory });
        break;
      }
      case Op.MEMBER:
        if (!r.set || r.set.length === 0) return { ok: false, reason: `${where}: op 2 needs a non-empty set` };
        rules.push({ attr: r.attr, op: r.op, value: '', min: 0, max: 0, set: new Set(r.set), mandatory });
        break;
      default:
        return { ok: false, reason: `${where}: unknown op ${r.op}` };
    }
  }
  return { ok: true, rules };
}

function asText(v: string | number | boolean): string {
  return typeof v === 'string' ? v : String(v);
}

/** Does `attrs` satisfy `rule`, with numeric ranges widened by `widen` on each side? */
export function holds(rule: Rule, attrs: Props, widen = 0): boolean {
  const v = attrs[rule.attr];
  if (v === undefined) return false;
  switch (rule.op) {
    case Op.EQUAL:
      return asText(v) === rule.value;
    case Op.RANGE:
      return typeof v === 'number' && v >= rule.min - widen && v <= rule.max + widen;
    default:
      return rule.set!.has(asText(v));
  }
}

/**
 * Whether `attrs` (a candidate's) pass the filtering rules of a request: every mandatory rule
 * exactly, and, unless the tolerance dropped them, every preferred rule within the widening.
 */
export function accepts(rules: readonly Rule[], attrs: Props, tol: Tolerance): boolean {
  for (const r of rules) {
    if (r.mandatory) {
      if (!holds(r, attrs, 0)) return false;
    } else if (!tol.dropped && !holds(r, attrs, r.op === Op.RANGE ? tol.widen : 0)) {
      return false;
    }
  }
  return true;
}

/**
 * How well `attrs` fit a request's wishes (higher is better), used to prefer the closest
 * candidates among those that pass: +1 per preferred rule met exactly, minus the distance of
 * each numeric attribute named by a range rule from the centre of that range, in half-widths
 * (0 at the centre, 1 at a bound; one-sided ranges only count distance outside the bound).
 */
export function fit(rules: readonly Rule[], attrs: Props): number {
  let s = 0;
  for (const r of rules) {
    if (!r.mandatory && holds(r, attrs, 0)) s += 1;
    if (r.op === Op.RANGE) {
      const v = attrs[r.attr];
      if (typeof v !== 'number') continue;
      if (Number.isFinite(r.min) && Number.isFinite(r.max)) {
        const half = Math.max(0.5, (r.max - r.min) / 2);
        s -= Math.abs(v - (r.min + r.max) / 2) / half / 2;
      } else if (v < r.min) {
        s -= (r.min - v) / 2;
      } else if (v > r.max) {
        s -= (v - r.max) / 2;
      }
    }
  }
  return s;
}

/** Whether any rule would change with the tolerance (otherwise a request never needs re-checking). */
export function hasPreferred(rules: readonly Rule[]): boolean {
  return rules.some((r) => !r.mandatory);
}
