// One configuration model for every daemon (devloc.conf(5)):
//   - a file of `key = value` lines ('#' starts a comment; keys are the long flag names),
//   - environment variables DEVLOC_<DAEMON>_<KEY> (KEY upper-cased, '-' -> '_'),
//   - command-line flags --key value.
// Precedence: flags > environment > file > built-in defaults. Unknown keys and bad values are
// refused with the key (and file line) named, so a typo never silently means "default".
import { readFileSync } from 'node:fs';
import { closest, didYouMean } from './suggest.js';

export type OptionType = 'string' | 'number' | 'boolean' | 'list';

export interface OptionSpec {
  type: OptionType;
  default?: string | number | boolean | string[];
  describe: string;
  /** Applied on SIGHUP without a restart. */
  reloadable?: boolean;
  /** Allowed values (strings). */
  choices?: readonly string[];
  /** Numbers: inclusive bounds. */
  min?: number;
  max?: number;
  /**
   * A file the daemon creates at start (a socket) and runs without when, at this option's
   * default, it cannot: a warning then, not an error (--check-config says so and passes).
   */
  optionalAtDefault?: boolean;
}

export type Spec = Record<string, OptionSpec>;
export type ConfigValue = string | number | boolean | string[];
export type Config = Record<string, ConfigValue | undefined>;

export type ConfigResult =
  | {
    ok: true; config: Config; sources: Record<string, 'flag' | 'env' | 'file' | 'default'>;
    /** Where each option not at its default was set: "FILE:LINE", "environment NAME" or "--key". */
    origins: Record<string, string>;
  }
  | { ok: false; error: string };

/** The spec of `key`, by own property only: a key named "constructor" or "__proto__" is unknown, not a crash. */
export function specOf(spec: Spec, key: string): OptionSpec | undefined {
  return Object.hasOwn(spec, key) ? spec[key] : undefined;
}

/** Options every daemon has. */
export const commonSpec: Spec = {
  config: { type: 'string', describe: 'configuration file (key = value lines)' },
  'log-level': { type: 'string', default: 'info', choices: ['debug', 'info', 'warn', 'error'], describe: 'least severe log level written', reloadable: true },
  'log-format': { type: 'string', default: 'json', choices: ['json', 'text'], describe: 'log lines as JSON objects, or as text: time level msg key=value ...', reloadable: true },
  'metrics-listen': { type: 'string', default: '', describe: 'serve Prometheus /metrics on this loopback host:port ("" = off)' },
  'metrics-allow-remote': { type: 'boolean', default: false, describe: 'allow a metrics-listen address that is not loopback' },
  'state-dir': { type: 'string', default: '/var/lib/devloc', describe: 'directory for persistent state' },
};

type Checked = { ok: true; value: ConfigValue } | { ok: false; error: string };

function check(key: string, spec: OptionSpec, raw: string | boolean | number | string[]): Checked {
  const fail = (why: string): Checked => ({ ok: false, error: `${key}: ${why}` });
  switch (spec.type) {
    case 'string': {
      const v = String(raw);
      if (spec.choices && !spec.choices.includes(v)) return fail(`must be one of ${spec.choices.join(', ')} (got ${JSON.stringify(v)})`);
      return { ok: true, value: v };
    }
    case 'number': {
      const n = typeof raw === 'number' ? raw : Number(String(raw).trim());
      if (String(raw).trim() === '' || !Number.isFinite(n)) return fail(`must be a number (got ${JSON.stringify(raw)})`);
      if (spec.min !== undefined && n < spec.min) return fail(`must be >= ${spec.min}`);
      if (spec.max !== undefined && n > spec.max) return fail(`must be <= ${spec.max}`);
      return { ok: true, value: n };
    }
    case 'boolean': {
      if (typeof raw === 'boolean') return { ok: true, value: raw };
      const s = String(raw).trim().toLowerCase();
      if (['true', 'yes', 'on', '1'].includes(s)) return { ok: true, value: true };
      if (['false', 'no', 'off', '0'].includes(s)) return { ok: true, value: false };
      return fail(`must be true or false (got ${JSON.stringify(raw)})`);
    }
    case 'list': {
      const items = (Array.isArray(raw) ? raw.map(String) : [String(raw)]).flatMap((x) => x.split(',')).map((x) => x.trim()).filter(Boolean);
      const bad = spec.choices ? items.find((x) => !spec.choices!.includes(x)) : undefined;
      if (bad !== undefined) return fail(`items must be among ${spec.choices!.join(', ')} (got ${JSON.stringify(bad)})`);
      return { ok: true, value: items };
    }
  }
}

/** Parse a config file's text. */
export function parseConfigFile(text: string, spec: Spec, fileName = 'config'): { ok: true; values: Config; lines: Record<string, number> } | { ok: false; error: string } {
  const values: Config = {};
  const lineOf: Record<string, number> = {};
  const keys = Object.keys(spec).filter((k) => k !== 'config');
  const meant = (k: string): string => {
    const c = closest(k, keys);
    return c === undefined ? '' : ` (did you mean "${c}"?)`;
  };
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const text = lines[i]!;
    // A '#' starts a comment at the start of a line or after blanks, but not inside a quoted
    // value (`name = "a #1"`).
    const quoted = /^\s*([a-z0-9-]+)\s*=\s*("[^"]*")\s*(#.*)?$/.exec(text);
    const line = quoted ? `${quoted[1]} = ${quoted[2]}` : text.replace(/(^|\s)#.*$/, '').trim();
    if (!line) continue;
    const m = /^([a-z0-9-]+)\s*=\s*(.*)$/.exec(line);
    if (!m) {
      // `Max-Party = 4`, `max party = 4`, `max_party = 4`: name the key that was meant.
      const loose = /^([^=]*?)\s*=/.exec(line);
      const meant = loose && loose[1] ? closest(loose[1], keys) : undefined;
      if (meant !== undefined) return { ok: false, error: `${fileName}:${i + 1}: "${loose![1]}" is not a key; keys are lower case with '-' (did you mean "${meant}"?)` };
      return { ok: false, error: `${fileName}:${i + 1}: expected "key = value"` };
    }
    const key = m[1]!;
    const s = specOf(spec, key);
    if (!s || key === 'config') return { ok: false, error: `${fileName}:${i + 1}: unknown key "${key}"${meant(key)}` };
    let raw = m[2]!.trim();
    if (/^".*"$/.test(raw)) raw = raw.slice(1, -1);
    const r = check(key, s, raw);
    if (!r.ok) return { ok: false, error: `${fileName}:${i + 1}: ${r.error}` };
    values[key] = r.value;
    lineOf[key] = i + 1;
  }
  return { ok: true, values, lines: lineOf };
}

export function envName(daemon: string, key: string): string {
  return `DEVLOC_${daemon.toUpperCase()}_${key.toUpperCase().replace(/-/g, '_')}`;
}

/**
 * Resolve the configuration from flags (already parsed by args.ts: only keys given), environment
 * and file. `readFile` is injectable for tests.
 */
export function resolveConfig(
  daemon: string,
  spec: Spec,
  flags: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
  readFile: (path: string) => string = (p) => readFileSync(p, 'utf8'),
): ConfigResult {
  const config: Config = {};
  const sources: Record<string, 'flag' | 'env' | 'file' | 'default'> = {};
  const origins: Record<string, string> = {};
  for (const [k, s] of Object.entries(spec)) {
    if (s.default !== undefined) {
      config[k] = s.default;
      sources[k] = 'default';
    }
  }
  const configPath = (flags['config'] as string | undefined) ?? env[envName(daemon, 'config')];
  if (configPath) {
    let text: string;
    try {
      text = readFile(configPath);
    } catch (err) {
      return { ok: false, error: `cannot read ${configPath}: ${(err as Error).message}` };
    }
    const f = parseConfigFile(text, spec, configPath);
    if (!f.ok) return f;
    for (const [k, v] of Object.entries(f.values)) {
      config[k] = v;
      sources[k] = 'file';
      origins[k] = `${configPath}:${f.lines[k] ?? 0}`;
    }
    config['config'] = configPath;
  }
  const prefix = `DEVLOC_${daemon.toUpperCase()}_`;
  for (const [name, raw] of Object.entries(env)) {
    if (!name.startsWith(prefix) || raw === undefined) continue;
    const key = name.slice(prefix.length).toLowerCase().replace(/_/g, '-');
    const s = specOf(spec, key);
    if (!s) return { ok: false, error: `environment ${name}: unknown key "${key}"${didYouMean(key, Object.keys(spec))}` };
    if (key === 'config') continue;
    const r = check(key, s, raw);
    if (!r.ok) return { ok: false, error: `environment ${name}: ${r.error}` };
    config[key] = r.value;
    sources[key] = 'env';
    origins[key] = `environment ${name}`;
  }
  for (const [key, raw] of Object.entries(flags)) {
    const s = specOf(spec, key);
    if (!s || raw === undefined) continue;
    const r = check(key, s, raw as string);
    if (!r.ok) return { ok: false, error: `--${r.error}` };
    config[key] = r.value;
    sources[key] = 'flag';
    origins[key] = `--${key}`;
  }
  return { ok: true, config, sources, origins };
}

/**
 * The first flag in `argv` that is not a known option, as one line naming it and the closest
 * known option (`unknown option --max-tll (did you mean --max-ttl?)`), or null. Only the
 * dash-case names count as known.
 * `known` holds long names without dashes; `--no-X` is known when X is.
 */
export function unknownFlag(argv: readonly string[], known: readonly string[], short: readonly string[] = ['h']): string | null {
  for (const arg of argv) {
    if (arg === '--') break;
    if (/^-\d/.test(arg) || arg === '-' || !arg.startsWith('-')) continue; // a (negative) value or positional
    if (arg.startsWith('--')) {
      const name = arg.slice(2).split('=')[0]!;
      if (known.includes(name) || (name.startsWith('no-') && known.includes(name.slice(3)))) continue;
      return `unknown option --${name}${didYouMean(name, known, '--')}`;
    }
    const letters = arg.slice(1).split('=')[0]!;
    for (const c of letters) if (!short.includes(c)) return `unknown option -${c}${letters.length > 1 ? ` (in ${arg}; long options take two dashes)` : ''}`;
  }
  return null;
}

export const str = (c: Config, k: string): string => String(c[k] ?? '');
export const num = (c: Config, k: string): number => Number(c[k] ?? 0);
export const bool = (c: Config, k: string): boolean => c[k] === true;
export const list = (c: Config, k: string): string[] => (Array.isArray(c[k]) ? (c[k] as string[]) : []);
