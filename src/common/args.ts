// The daemons' command line, without an npm package: every daemon option is a long flag
// (`--key value`, `--key=value`; booleans also `--key`, `--no-key`, `--key false`), `-h`/`--help`
// prints the options, and anything else is a usage error (exit 2, one line). Values are checked
// later, with the file and environment, by config.ts's resolveConfig: here they stay as typed.
// This replaced yargs so that devloc-agent loads no npm package at all (issue 20).
import type { OptionSpec, Spec } from './config.js';
import { envName, specOf } from './config.js';

export type ParsedArgs =
  | { ok: true; help: boolean; checkConfig: boolean; flags: Record<string, string | boolean | string[]> }
  | { ok: false; error: string };

/** Flags of the lifecycle itself, beside the daemon's spec. */
const LIFECYCLE: Spec = {
  'check-config': { type: 'boolean', describe: 'validate the configuration, the files, directories and ports it names, and exit' },
  version: { type: 'boolean', describe: 'print "PROGRAM <version>" and exit' },
};

const isValue = (arg: string | undefined): arg is string => arg !== undefined && (arg === '-' || /^-\d/.test(arg) || !arg.startsWith('-'));
const BOOL_WORDS = /^(?:true|false|yes|no|on|off|1|0)$/i;

/** Parse a daemon's argv against its spec (unknown flags are found before, by unknownFlag). */
export function parseDaemonArgs(spec: Spec, argv: readonly string[]): ParsedArgs {
  const flags: Record<string, string | boolean | string[]> = {};
  let help = false;
  let checkConfig = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      if (i + 1 < argv.length) return { ok: false, error: `unexpected argument ${JSON.stringify(argv[i + 1])}` };
      break;
    }
    if (arg === '-h' || arg === '--help') {
      help = true;
      continue;
    }
    if (!arg.startsWith('--')) return { ok: false, error: `unexpected argument ${JSON.stringify(arg)}` };
    const eq = arg.indexOf('=');
    let name = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
    let inline: string | undefined = eq < 0 ? undefined : arg.slice(eq + 1);
    if (name === 'check-config' || name === 'version') {
      if (inline !== undefined && !BOOL_WORDS.test(inline)) return { ok: false, error: `--${name} takes no value` };
      if (name === 'check-config') checkConfig = inline === undefined || /^(?:true|yes|on|1)$/i.test(inline);
      continue;
    }
    let s = specOf(spec, name);
    let negated = false;
    if (!s && name.startsWith('no-') && specOf(spec, name.slice(3))?.type === 'boolean') {
      name = name.slice(3);
      s = specOf(spec, name);
      negated = true;
    }
    if (!s) return { ok: false, error: `unknown option --${name}` };
    if (s.type === 'boolean') {
      if (negated) {
        if (inline !== undefined) return { ok: false, error: `--no-${name} takes no value` };
        flags[name] = false;
      } else if (inline !== undefined) flags[name] = inline;
      else if (argv[i + 1] !== undefined && BOOL_WORDS.test(argv[i + 1]!)) flags[name] = argv[++i]!;
      else flags[name] = true;
      continue;
    }
    if (inline === undefined) {
      const next = argv[i + 1];
      if (!isValue(next)) return { ok: false, error: `--${name} needs a value` };
      inline = next;
      i++;
    }
    if (s.type === 'list') {
      const prev = flags[name];
      flags[name] = Array.isArray(prev) ? [...prev, inline] : [inline];
    } else flags[name] = inline; // the last one given counts
  }
  return { ok: true, help, checkConfig, flags };
}

function wrap(text: string, width: number, indent: number): string[] {
  const lines: string[] = [];
  for (const para of text.split('\n')) {
    let line = '';
    for (const word of para.split(/ +/)) {
      if (line && line.length + 1 + word.length > width - indent) {
        lines.push(line);
        line = word;
      } else line = line ? `${line} ${word}` : word;
    }
    lines.push(line);
  }
  return lines;
}

function describe(s: OptionSpec): string {
  const def = s.default === undefined || s.default === '' ? '' : ` [default: ${Array.isArray(s.default) ? s.default.join(',') : String(s.default)}]`;
  const reload = s.reloadable ? ' (reloaded on SIGHUP)' : '';
  const choices = s.choices ? ` [choices: ${s.choices.map((c) => JSON.stringify(c)).join(', ')}]` : '';
  return `${s.describe}${def}${reload} [${s.type}]${choices}`;
}

/** The --help text: usage, summary, then one entry per option (`      --key  text`). */
export function daemonHelp(binary: string, summary: string, spec: Spec, columns = 100): string {
  const width = Math.max(60, Math.min(100, columns));
  const all: [string, OptionSpec][] = [
    ['help', { type: 'boolean', describe: 'show this help and exit' }],
    ['check-config', LIFECYCLE['check-config']!],
    ['version', { ...LIFECYCLE['version']!, describe: `print "${binary} <version>" and exit` }],
    ...Object.entries(spec),
  ];
  const col = Math.min(28, 6 + Math.max(...all.map(([k]) => k.length + 2)) + 2);
  const out = [
    `${binary} [options]`, '', ...wrap(summary, width, 0), '',
    'Every option may also be set in the --config file (key = value) or as',
    // A placeholder no option is named after (DEVLOC_AUTHD_KEY is --key's own variable).
    `${envName(binary.replace(/^devloc-/, ''), '<OPTION>')} (the option's name in capitals, - as _). Precedence: flag > environment > file > default.`, '', 'Options:',
  ];
  for (const [k, s] of all) {
    const head = `${k === 'help' ? '  -h, ' : '      '}--${k}`;
    const text = wrap(describe(s), width, col);
    if (head.length + 2 > col) {
      out.push(head);
      for (const l of text) out.push(`${' '.repeat(col)}${l}`);
    } else {
      out.push(`${head.padEnd(col)}${text[0]}`);
      for (const l of text.slice(1)) out.push(`${' '.repeat(col)}${l}`);
    }
  }
  return `${out.join('\n')}\n`;
}
