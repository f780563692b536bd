// Issue 19 (operations), the pure parts: the "did you mean" suggestion, the text log format,
// unknown flags, config lines with the wrong case or spacing, own-property key lookups, the
// shared reload report, the version.
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { closest, didYouMean, editDistance, unknownArgumentLine } from '../../src/common/suggest.js';
import { Logger, textLine, textValue } from '../../src/common/log.js';
import { commonSpec, parseConfigFile, resolveConfig, unknownFlag } from '../../src/common/config.js';
import type { Spec } from '../../src/common/config.js';
import { inForce, reloadReport } from '../../src/common/reload.js';
import { checkCommon, located } from '../../src/common/daemon.js';
import { explainStartError, preflight, startErrorFields } from '../../src/common/preflight.js';
import { controlSocketOption } from '../../src/common/control.js';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { version } from '../../src/common/version.js';
import { Metrics } from '../../src/common/metrics.js';


const spec: Spec = {
  ...commonSpec,
  'max-ttl': { type: 'number', default: 3600, describe: 'x', reloadable: true },
  'max-party': { type: 'number', default: 4, describe: 'x', reloadable: true },
  port: { type: 'number', default: 1, describe: 'x' },
  listen: { type: 'string', default: '0.0.0.0', describe: 'x' },
};

t.test('edit distance and the closest name', async (t) => {
  t.equal(editDistance('max-tll', 'max-ttl'), 1);
  t.equal(editDistance('', 'abc'), 3);
  t.equal(editDistance('kitten', 'sitting'), 3);
  const known = Object.keys(spec);
  t.equal(closest('max-tll', known), 'max-ttl');
  t.equal(closest('maxTtl', known), 'max-ttl', 'camelCase is one edit from dash-case');
  t.equal(closest('Max-Party', known), 'max-party', 'case is ignored');
  t.equal(closest('max party', known), 'max-party', 'spaces and underscores count as dashes');
  t.equal(closest('max_party', known), 'max-party');
  t.equal(closest('zzzzzz', known), undefined, 'nothing plausible: no suggestion');
  t.equal(didYouMean('prot', known, '--'), ' (did you mean --port?)');
  t.equal(didYouMean('qqqqqqq', known, '--'), '');
});

t.test('unknown flags: one line, the flag as typed, the closest dash-case option', async (t) => {
  const known = [...Object.keys(spec), 'check-config', 'help', 'version'];
  t.equal(unknownFlag(['--max-tll', '3'], known), 'unknown option --max-tll (did you mean --max-ttl?)');
  t.equal(unknownFlag(['--max-ttl=3', '--maxTll=4'], known), 'unknown option --maxTll (did you mean --max-ttl?)');
  t.equal(unknownFlag(['--port', '-1', '--no-metrics-allow-remote', '-h'], known), null, 'negative values, --no-X and -h are fine');
  t.equal(unknownFlag(['--', '--whatever'], known), null, 'nothing after --');
  t.equal(unknownFlag(['-x'], known), 'unknown option -x');
  t.match(unknownFlag(['-port'], known), /unknown option -p \(in -port; long options take two dashes\)/);
  t.equal(unknownFlag(['--qqqqqqqqqq'], known), 'unknown option --qqqqqqqqqq');
});

t.test('devloc CLI: yargs "Unknown arguments" becomes one line without camelCase aliases', async (t) => {
  t.equal(unknownArgumentLine('Unknown arguments: state-dri, stateDri', ['state-dir', 'stateDir', 'help', 'h']), 'unknown option --state-dri (did you mean --state-dir?)');
  t.equal(unknownArgumentLine('Unknown argument: x', ['state-dir']), 'unknown option -x');
  t.equal(unknownArgumentLine('Missing required argument: out', ['out']), null);
});

t.test('text log lines: time level msg key=value, quoted when needed, controls escaped', async (t) => {
  t.equal(textValue('plain'), 'plain');
  t.equal(textValue(''), '""');
  t.equal(textValue('two words'), '"two words"');
  t.equal(textValue('a=b'), '"a=b"');
  t.equal(textValue('say "hi"'), '"say \\"hi\\""');
  t.equal(textValue('back\\slash'), '"back\\\\slash"');
  t.equal(textValue('evil\nts=1 level=error'), '"evil\\nts=1 level=error"', 'a newline cannot start a fake line');
  t.equal(textValue('\u001b[31mred'), '"\\x1b[31mred"', 'terminal escapes are escaped');
  t.equal(textValue('\u0085x'), '"\\x85x"', 'C1 controls too');
  t.equal(textValue(42), '42');
  t.equal(textValue(true), 'true');
  t.equal(textValue(['a', 'b']), '["a","b"]');
  t.equal(textValue(['a b']), '"[\\"a b\\"]"');
  t.equal(textValue(null), 'null');
  t.equal(textLine({ ts: '2026-12-03T14:35:00.000Z', level: 'info', svc: 'locatord', msg: 'listening', port: 4701 }), '2026-12-03T14:35:00.000Z info listening svc=locatord port=4701');
  t.equal(textLine({ ts: 'T', level: 'warn', msg: 'x=y\n', a: undefined }), 'T warn "x=y\\n"', 'a msg with = is quoted; undefined fields are left out');
  t.equal(textLine({ ts: 'T', level: 'warn', msg: 'two words\u001b' }), 'T warn two words\\x1b');

  const lines: string[] = [];
  const log = new Logger({ service: 'testd', format: 'text', now: () => 0, write: (l) => lines.push(l), firstLine: { version: '9.9.9' } });
  log.info('listening', { port: 1 });
  log.info('reloaded', { applied: ['log-level'], needsRestart: [] });
  t.same(lines, [
    '1970-01-01T00:00:00.000Z info listening svc=testd version=9.9.9 port=1',
    '1970-01-01T00:00:00.000Z info reloaded svc=testd applied=["log-level"] needsRestart=[]',
  ], 'the version is in the first line only');
  const json: string[] = [];
  const jlog = new Logger({ service: 'testd', now: () => 0, write: (l) => json.push(l), firstLine: { version: '9.9.9' } });
  jlog.debug('not written');
  jlog.info('first');
  jlog.info('second');
  t.same(json.map((l) => JSON.parse(l)), [
    { ts: '1970-01-01T00:00:00.000Z', level: 'info', svc: 'testd', msg: 'first', version: '9.9.9' },
    { ts: '1970-01-01T00:00:00.000Z', level: 'info', svc: 'testd', msg: 'second' },
  ]);
});

t.test('config lines with the wrong case or spacing name the line and the right key', async (t) => {
  t.same(parseConfigFile('# c\nMax-Party = 4\n', spec, 'x.conf'), { ok: false, error: 'x.conf:2: "Max-Party" is not a key; keys are lower case with \'-\' (did you mean "max-party"?)' });
  t.match(parseConfigFile('max party = 4\n', spec, 'x.conf'), { ok: false, error: /^x\.conf:1: "max party" is not a key.*"max-party"/ });
  t.match(parseConfigFile('max_party=4\n', spec, 'x.conf'), { ok: false, error: /^x\.conf:1: .*"max-party"/ });
  t.match(parseConfigFile('max-prty = 4\n', spec, 'x.conf'), { ok: false, error: 'x.conf:1: unknown key "max-prty" (did you mean "max-party"?)' });
  t.match(parseConfigFile('what is this\n', spec, 'x.conf'), { ok: false, error: 'x.conf:1: expected "key = value"' });
  const ok = parseConfigFile('\nmax-party = 5\n', spec, 'x.conf');
  t.match(ok, { ok: true, values: { 'max-party': 5 }, lines: { 'max-party': 2 } });
});

t.test('Object.prototype names are unknown keys, not crashes', async (t) => {
  for (const key of ['constructor', 'toString', '__proto__', 'hasOwnProperty', 'valueOf']) {
    t.match(parseConfigFile(`${key} = 1\n`, spec, 'x.conf'), { ok: false, error: new RegExp(`^x\\.conf:1: unknown key "${key.toLowerCase()}"|^x\\.conf:1: .*is not a key|expected`) }, key);
    const envName = `DEVLOC_TESTD_${key.toUpperCase()}`;
    t.match(resolveConfig('testd', spec, {}, { [envName]: '1' }), { ok: false, error: /unknown key/ }, `env ${key}`);
    t.match(resolveConfig('testd', spec, { [key]: '1' }, {}), { ok: true }, `flag ${key} is ignored (yargs refuses it first)`);
  }
});

t.test('origins and located(): a check names the file line to edit', async (t) => {
  const r = resolveConfig('testd', spec, { port: 7 }, { DEVLOC_TESTD_MAX_TTL: '9' }, () => '# c\nlisten = localhost\n');
  // resolveConfig reads the file only when a config path is given.
  t.match(r, { ok: true });
  const r2 = resolveConfig('testd', spec, { port: 7, config: '/etc/x.conf' }, { DEVLOC_TESTD_MAX_TTL: '9' }, () => '# c\nlisten = localhost\n');
  if (!r2.ok) throw new Error(r2.error);
  t.same(r2.origins, { config: '--config', listen: '/etc/x.conf:2', 'max-ttl': 'environment DEVLOC_TESTD_MAX_TTL', port: '--port' });
  t.equal(located('listen: "localhost" is not an IP address', spec, r2.origins), '/etc/x.conf:2: listen: "localhost" is not an IP address');
  t.equal(located('--listen: bad', spec, r2.origins), '/etc/x.conf:2: --listen: bad');
  t.equal(located('port: bad', spec, r2.origins), 'port: bad', 'a flag is already on the command line');
  t.equal(located('something else', spec, r2.origins), 'something else');
});

t.test('metrics-listen beyond loopback needs metrics-allow-remote', async (t) => {
  t.equal(checkCommon({ 'metrics-listen': '127.0.0.1:9471' }), null);
  t.equal(checkCommon({ 'metrics-listen': '127.8.0.1:9471' }), null);
  t.equal(checkCommon({ 'metrics-listen': '[::1]:9471' }), null);
  t.equal(checkCommon({ 'metrics-listen': '' }), null);
  t.match(checkCommon({ 'metrics-listen': '0.0.0.0:9471' }), /metrics-listen: 0\.0\.0\.0:9471 is not a loopback address; set metrics-allow-remote = yes/);
  t.match(checkCommon({ 'metrics-listen': '[::]:9471' }), /not a loopback/);
  t.equal(checkCommon({ 'metrics-listen': '0.0.0.0:9471', 'metrics-allow-remote': true }), null);
});

t.test('reload report: applied, needs a restart; the running value is kept for the latter', async (t) => {
  const cur = { 'max-ttl': 3600, port: 1, listen: '0.0.0.0', 'log-level': 'info', config: '/a' };
  const next = { 'max-ttl': 60, port: 2, listen: '0.0.0.0', 'log-level': 'debug', config: '/a', 'metrics-listen': '127.0.0.1:1' };
  t.same(reloadReport(spec, cur, next), { applied: ['log-level', 'max-ttl'], needsRestart: ['metrics-listen', 'port'] });
  const now = inForce(spec, cur, next);
  t.same(now, { 'max-ttl': 60, port: 1, listen: '0.0.0.0', 'log-level': 'debug', config: '/a' });
  t.same(reloadReport(spec, now, next), { applied: [], needsRestart: ['metrics-listen', 'port'] }, 'still reported on the next SIGHUP');
  t.same(reloadReport(spec, cur, cur), { applied: [], needsRestart: [] });
});

t.test('version from package.json; build_info gauge with the version label', async (t) => {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  t.equal(version(), pkg.version);
  const m = new Metrics();
  m.gauge('build_info', 'The running devloc version (always 1)', () => 1, { version: '1.2.3' });
  t.match(m.render(), /^devloc_build_info\{version="1\.2\.3"\} 1$/m);
});

t.test('explainStartError names the option and where it was set', async (t) => {
  const sp: Spec = {
    ...spec,
    'reflector-port': { type: 'number', default: 4702, describe: 'x' },
    'control-socket': { type: 'string', default: '/run/devloc/agent.sock', describe: 'x' },
  };
  const config = { port: 4795, 'reflector-port': 4702, listen: '0.0.0.0', 'state-dir': '/var/lib/devloc', 'control-socket': '/run/devloc/agent.sock', 'metrics-listen': '127.0.0.1:9471' };
  const text = (e: unknown, o: Record<string, string> = {}): string | undefined => explainStartError(e, sp, config, o)?.text;
  const sysErr = (code: string, extra: Record<string, unknown>): Error => Object.assign(new Error(`${code}: something`), { code, ...extra });
  t.equal(text(sysErr('EADDRINUSE', { syscall: 'bind', address: '0.0.0.0', port: 4702 }), { port: '--port' }),
    '--reflector-port 4702 (the default): 0.0.0.0:4702 is in use; choose another --reflector-port or stop what holds it');
  t.equal(text(sysErr('EADDRINUSE', { syscall: 'bind', address: '0.0.0.0', port: 4795 }), { port: '--port' }),
    '--port 4795: 0.0.0.0:4795 is in use; choose another --port or stop what holds it');
  t.equal(text(sysErr('EADDRINUSE', { syscall: 'listen', address: '127.0.0.1', port: 9471 }), { 'metrics-listen': '/etc/x.conf:7' }),
    '--metrics-listen 127.0.0.1:9471 (set at /etc/x.conf:7): 127.0.0.1:9471 is in use');
  t.equal(text(sysErr('EACCES', { syscall: 'mkdir', path: '/run/devloc' })),
    '--control-socket /run/devloc/agent.sock (the default): mkdir /run/devloc: permission denied; change --control-socket or the ownership/mode of /run/devloc');
  t.equal(text(sysErr('EEXIST', { syscall: 'mkdir', path: '/var/lib/devloc' }), { 'state-dir': 'environment DEVLOC_X_STATE_DIR' }),
    '--state-dir /var/lib/devloc (set at environment DEVLOC_X_STATE_DIR): mkdir /var/lib/devloc: already exists; change --state-dir or the ownership/mode of /var/lib/devloc');
  t.match(text(sysErr('EACCES', { syscall: 'open', path: '/var/lib/devloc/authd.db' })), /^--state-dir \/var\/lib\/devloc \(the default\): open \/var\/lib\/devloc\/authd\.db: permission denied/);
  t.equal(text(sysErr('EACCES', { syscall: 'listen', address: '/run/devloc/agent.sock', port: -1 })),
    '--control-socket /run/devloc/agent.sock (the default): listen /run/devloc/agent.sock: permission denied; change --control-socket or the ownership/mode of /run/devloc/agent.sock', 'a Unix socket names its path as address');
  t.equal(explainStartError(sysErr('EACCES', { syscall: 'open', path: '/elsewhere' }), sp, config), null, 'not ours to name');
  t.equal(explainStartError(new Error('plain'), sp, config), null);
  t.equal(explainStartError('not an error', sp, config), null);
  t.equal(explainStartError(sysErr('EADDRINUSE', { syscall: 'bind', address: '0.0.0.0', port: 4702 }), sp, config)?.option, 'reflector-port', 'the option, for the log line');
  t.equal(explainStartError(sysErr('EADDRINUSE', { syscall: 'listen', address: '127.0.0.1', port: 9471 }), sp, config)?.option, 'metrics-listen');
  t.equal(explainStartError(sysErr('EACCES', { syscall: 'mkdir', path: '/run/devloc' }), sp, config)?.option, 'control-socket');
  const inUse = sysErr('EADDRINUSE', { syscall: 'bind', address: '0.0.0.0', port: 4702 });
  t.same(startErrorFields(inUse, explainStartError(inUse, sp, config)), { code: 'EADDRINUSE', option: 'reflector-port' }, "the log line's fields");
  t.same(startErrorFields(sysErr('EACCES', { syscall: 'open', path: '/elsewhere' }), null), { code: 'EACCES' }, 'a code without an option');
  t.same(startErrorFields(new Error('plain'), null), {}, 'neither');
});

t.test('--check-config treats an unusable control socket as the start does: a warning at the default, an error when configured', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'preflight-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // A regular file where the socket's directory should be: no directory can be made there, root or not.
  writeFileSync(path.join(dir, 'file'), '');
  const unusable = path.join(dir, 'file', 'sub', 'control.sock');
  const spec: Spec = { 'control-socket': { ...controlSocketOption('locatord'), default: unusable } };
  const config = { 'control-socket': unusable };
  const atDefault = await preflight(spec, config, {});
  t.same(atDefault.problems, [], 'at its default: no error (the daemon starts without it)');
  t.equal(atDefault.warnings.length, 1);
  t.match(atDefault.warnings[0], /--control-socket .*\(the default\): .*not a directory.*would start without it/);
  const configured = await preflight(spec, config, { 'control-socket': 'environment DEVLOC_LOCATORD_CONTROL_SOCKET' });
  t.equal(configured.problems.length, 1, 'configured: an error (the start stops)');
  t.match(configured.problems[0], /set at environment DEVLOC_LOCATORD_CONTROL_SOCKET/);
  t.same(configured.warnings, []);
  // An option without optionalAtDefault (the agent's control socket: it does not start without it).
  const required = await preflight({ 'control-socket': { type: 'string', default: unusable, describe: 'x' } }, config, {});
  t.equal(required.problems.length, 1, 'required at its default too');
});
