// Configuration: precedence flag > env > file > default, and every kind of refusal naming the
// key (and the file line).
import t from 'tap';
import { checkCommon } from '../../src/common/daemon.js';
import type { Spec } from '../../src/common/config.js';
import { bool, commonSpec, envName, list, num, parseConfigFile, resolveConfig, str } from '../../src/common/config.js';

const spec: Spec = {
  ...commonSpec,
  listen: { type: 'string', default: '0.0.0.0:4701', describe: 'UDP address' },
  'max-sessions': { type: 'number', default: 1000, min: 1, max: 1_000_000, describe: 'sessions' },
  'rate-per-s': { type: 'number', default: 100, min: 0, describe: 'rate' },
  'allow-open': { type: 'boolean', default: false, describe: 'flag' },
  mode: { type: 'string', default: 'strict', choices: ['strict', 'lenient'], describe: 'a choice' },
  audiences: { type: 'list', default: ['locatord'], describe: 'a list' },
  nickname: { type: 'string', describe: 'no default' },
};

const files = (m: Record<string, string>) => (p: string): string => {
  const f = m[p];
  if (f === undefined) throw new Error(`ENOENT: no such file ${p}`);
  return f;
};

t.test('precedence: flag > env > file > default, with sources', async (t) => {
  const file = 'listen = 127.0.0.1:1\nmax-sessions = 10\nrate-per-s = 5\nmode = lenient\n';
  const env = { DEVLOC_LOCATORD_MAX_SESSIONS: '20', DEVLOC_LOCATORD_RATE_PER_S: '7', DEVLOC_OTHERD_BOGUS: 'ignored: another daemon' };
  const r = resolveConfig('locatord', spec, { config: '/etc/devloc/locatord.conf', 'max-sessions': '30' }, env, files({ '/etc/devloc/locatord.conf': file }));
  t.ok(r.ok, r.ok ? '' : r.error);
  if (!r.ok) return;
  t.equal(r.config['max-sessions'], 30, 'flag beats env and file');
  t.equal(r.sources['max-sessions'], 'flag');
  t.equal(r.config['rate-per-s'], 7, 'env beats file');
  t.equal(r.sources['rate-per-s'], 'env');
  t.equal(r.config['listen'], '127.0.0.1:1', 'file beats default');
  t.equal(r.sources['listen'], 'file');
  t.equal(r.config['mode'], 'lenient');
  t.equal(r.config['allow-open'], false, 'default');
  t.equal(r.sources['allow-open'], 'default');
  t.same(r.config['audiences'], ['locatord']);
  t.equal(r.config['nickname'], undefined, 'no default: absent');
  t.equal(r.config['log-level'], 'info', 'common defaults included');
  t.equal(r.config['config'], '/etc/devloc/locatord.conf');
  t.equal(str(r.config, 'listen'), '127.0.0.1:1');
  t.equal(num(r.config, 'max-sessions'), 30);
  t.equal(bool(r.config, 'allow-open'), false);
  t.same(list(r.config, 'audiences'), ['locatord']);
});

t.test('the config file may be named by the environment', async (t) => {
  const r = resolveConfig('locatord', spec, {}, { DEVLOC_LOCATORD_CONFIG: '/c' }, files({ '/c': 'rate-per-s = 3' }));
  t.ok(r.ok && r.config['rate-per-s'] === 3 && r.sources['rate-per-s'] === 'file');
  t.equal(envName('locatord', 'rate-per-s'), 'DEVLOC_LOCATORD_RATE_PER_S');
});

t.test('unknown keys are refused, with the key and the file line named', async (t) => {
  const file = '# devloc\n\nlisten = 127.0.0.1:1\nmax-sesions = 10\n';
  const r = resolveConfig('locatord', spec, { config: '/c' }, {}, files({ '/c': file }));
  t.notOk(r.ok);
  if (!r.ok) {
    t.match(r.error, /\/c:4:/, 'file and line');
    t.match(r.error, /unknown key "max-sesions"/);
  }
  const inFile = parseConfigFile('config = /other\n', spec, 'x.conf');
  t.notOk(inFile.ok, 'a config file cannot name another one');
  const e = resolveConfig('locatord', spec, {}, { DEVLOC_LOCATORD_MAX_SESIONS: '1' });
  t.notOk(e.ok);
  if (!e.ok) {
    t.match(e.error, /DEVLOC_LOCATORD_MAX_SESIONS/, 'the variable is named');
    t.match(e.error, /unknown key "max-sesions"/);
  }
  const bad = parseConfigFile('listen 127.0.0.1:1\n', spec, 'y.conf');
  t.match(bad.ok ? '' : bad.error, /y\.conf:1: expected "key = value"/);
  const upper = parseConfigFile('Listen = x\n', spec, 'z.conf');
  t.notOk(upper.ok, 'keys are lower case');
});

t.test('bad numbers, booleans and choices are refused with the key named', async (t) => {
  const cases: [string, string, RegExp][] = [
    ['max-sessions', '12abc', /max-sessions: must be a number \(got "12abc"\)/],
    ['max-sessions', '', /max-sessions: must be a number/],
    ['max-sessions', 'NaN', /must be a number/],
    ['max-sessions', 'Infinity', /must be a number/],
    ['max-sessions', '0', /max-sessions: must be >= 1/],
    ['max-sessions', '1000001', /max-sessions: must be <= 1000000/],
    ['allow-open', 'maybe', /allow-open: must be true or false \(got "maybe"\)/],
    ['mode', 'loose', /mode: must be one of strict, lenient \(got "loose"\)/],
    ['log-level', 'verbose', /log-level: must be one of debug, info, warn, error/],
  ];
  for (const [key, value, re] of cases) {
    const f = parseConfigFile(`${key} = ${value}\n`, spec, 'f.conf');
    t.notOk(f.ok, `file ${key} = ${JSON.stringify(value)} refused`);
    t.match(f.ok ? '' : f.error, re);
    t.match(f.ok ? '' : f.error, /^f\.conf:1: /, 'with the line');
    const e = resolveConfig('locatord', spec, {}, { [envName('locatord', key)]: value });
    t.notOk(e.ok, `env ${key} refused`);
    t.match(e.ok ? '' : e.error, re);
    const fl = resolveConfig('locatord', spec, { [key]: value }, {});
    t.notOk(fl.ok, `flag ${key} refused`);
    t.match(fl.ok ? '' : fl.error, new RegExp(`^--${key}: `));
  }
});

t.test('accepted spellings', async (t) => {
  for (const [v, b] of [['yes', true], ['On', true], ['1', true], ['TRUE', true], ['no', false], ['off', false], ['0', false]] as const) {
    const f = parseConfigFile(`allow-open = ${v}`, spec);
    t.same(f.ok && f.values['allow-open'], b, `${v} -> ${b}`);
  }
  const n = parseConfigFile('max-sessions = 2500   # a comment\nrate-per-s=0\r\n', spec);
  t.same(n.ok && n.values, { 'max-sessions': 2500, 'rate-per-s': 0 }, 'comments, no blanks, CRLF');
  const q = parseConfigFile('nickname = "a # not a comment"  # but this is\nlisten = "127.0.0.1:9"\n', spec);
  t.same(q.ok && q.values, { nickname: 'a # not a comment', listen: '127.0.0.1:9' }, 'quoted values keep a #');
  const l = parseConfigFile('audiences = locatord, matchd ,,\n', spec);
  t.same(l.ok && l.values['audiences'], ['locatord', 'matchd'], 'lists split on commas');
  const fl = resolveConfig('locatord', spec, { audiences: ['a', 'b,c'], 'allow-open': true, 'max-sessions': 5 }, {});
  t.ok(fl.ok);
  if (fl.ok) {
    t.same(fl.config['audiences'], ['a', 'b', 'c'], 'repeated flags and commas');
    t.equal(fl.config['allow-open'], true);
    t.equal(fl.config['max-sessions'], 5);
  }
});

t.test('list choices are checked item by item', async (t) => {
  const s: Spec = { kinds: { type: 'list', choices: ['a', 'b'], describe: 'x' } };
  t.ok(parseConfigFile('kinds = a,b', s).ok);
  const bad = parseConfigFile('kinds = a,c', s, 'k.conf');
  t.match(bad.ok ? '' : bad.error, /k\.conf:1: kinds: items must be among a, b \(got "c"\)/);
});

t.test('an unreadable config file is an error naming it', async (t) => {
  const r = resolveConfig('locatord', spec, { config: '/nope' }, {}, files({}));
  t.notOk(r.ok);
  t.match(r.ok ? '' : r.error, /cannot read \/nope: ENOENT/);
});

t.test('checkCommon: metrics-listen must be an IP:PORT', async (t) => {
  t.equal(checkCommon({ 'metrics-listen': '' }), null, 'off');
  t.equal(checkCommon({ 'metrics-listen': '127.0.0.1:9100' }), null);
  t.equal(checkCommon({ 'metrics-listen': '[::1]:9100' }), null);
  t.match(checkCommon({ 'metrics-listen': 'localhost:9100' }), /metrics-listen: expected IP:PORT/);
  t.match(checkCommon({ 'metrics-listen': '127.0.0.1' }), /metrics-listen/);
});

t.test('--max-sessions of locatord and matchd stops where one session table fits in a Buffer (4 GiB)', async (t) => {
  const { locatordSpec } = await import('../../src/locatord/options.js');
  const { MAX_SESSIONS_LIMIT } = await import('../../src/net/sessions.js');
  t.ok(MAX_SESSIONS_LIMIT * 184 <= 2 ** 32, '184-byte rows');
  const ok = resolveConfig('locatord', locatordSpec, { 'max-sessions': String(MAX_SESSIONS_LIMIT) }, {}, files({}));
  t.ok(ok.ok);
  const over = resolveConfig('locatord', locatordSpec, { 'max-sessions': String(MAX_SESSIONS_LIMIT + 1) }, {}, files({}));
  t.notOk(over.ok);
  if (!over.ok) t.match(over.error, /max-sessions/);
});
