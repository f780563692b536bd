// What a SIGHUP did, in the same words for every daemon: the options whose value changed, split
// into those applied now (`reloadable` in the spec) and those that keep their old value until a
// restart. One function, so that authd, locatord, matchd and the agent cannot drift apart.
import type { Config, Spec } from './config.js';
import { specOf } from './config.js';

export interface ReloadReport {
  /** Changed options now in force. */
  applied: string[];
  /** Changed options still at their old value: restart the daemon to use them. */
  needsRestart: string[];
}

const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);

/** Compare the configuration in force with the re-read one. `config` (the file's name) is not an option. */
export function reloadReport(spec: Spec, current: Config, next: Config): ReloadReport {
  const applied: string[] = [];
  const needsRestart: string[] = [];
  const keys = new Set([...Object.keys(current), ...Object.keys(next)]);
  for (const k of [...keys].sort()) {
    if (k === 'config' || same(current[k], next[k])) continue;
    (specOf(spec, k)?.reloadable ? applied : needsRestart).push(k);
  }
  return { applied, needsRestart };
}

/**
 * The configuration in force after a reload: the new values of reloadable options, the old ones
 * of the others (so that a second SIGHUP still reports them as needing a restart).
 */
export function inForce(spec: Spec, current: Config, next: Config): Config {
  const out: Config = { ...next };
  for (const k of reloadReport(spec, current, next).needsRestart) {
    if (Object.hasOwn(current, k)) out[k] = current[k];
    else delete out[k];
  }
  return out;
}
