// devloc-matchd as a real process: configuration from flags and environment, the "listening"
// line, matching over UDP, metrics, SIGHUP reloading the trusted keys (sessions of distrusted
// keys dropped), SIGTERM. And the man page: lint-clean, every option documented.
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { commonSpec } from '../../src/common/config.js';
import { definition, spec } from '../../src/matchd/main.js';
import { runDaemon } from '../../src/common/daemon.js';
import { MatchState } from '../../src/wire/catalog.js';
import { ErrorCode } from '../../src/wire/errors.js';
import { keyFileToJson, newAuthdKey, newServiceKey, privateKeyObject, publicKeyObject, publicOf, publicToJson } from '../../src/wire/keys.js';
import { root, startDaemon } from '../helpers/daemon.js';
import type { Fixture } from './helpers.js';
import { SERVICE, Terminal } from './helpers.js';
import { scrapeMetrics } from '../helpers/metrics.js';

t.test('daemon: listens, matches, reloads trusted keys on SIGHUP, stops on SIGTERM', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'matchd-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const authd = newAuthdKey();
  const other = newAuthdKey();
  const service = newServiceKey(SERVICE);
  if (authd.kind !== 'authd' || other.kind !== 'authd' || service.kind !== 'service') throw new Error('keygen');
  writeFileSync(path.join(dir, 'match.key'), keyFileToJson(service), { mode: 0o600 });
  writeFileSync(path.join(dir, 'authd.pub'), publicToJson(publicOf(authd)));
  writeFileSync(path.join(dir, 'other.pub'), publicToJson(publicOf(other)));
  const trustFile = path.join(dir, 'trust.pub');
  writeFileSync(trustFile, publicToJson(publicOf(authd)));
  // Port and listen by flags; the rest by the environment (DEVLOC_MATCHD_*).
  const d = await startDaemon('matchd/main.ts', ['--listen', '127.0.0.1', '--port', '0', '--metrics-listen', '127.0.0.1:0'], {
    DEVLOC_MATCHD_SERVICE_KEY: path.join(dir, 'match.key'),
    DEVLOC_MATCHD_TRUST: trustFile,
    DEVLOC_MATCHD_TICK_INTERVAL: '50',
  });
  t.teardown(() => d.stop());
  const port = d.listening['port'] as number;
  t.ok(port > 0, 'listening line carries the port');
  t.equal(d.lines[0]!['msg'], 'listening', 'first line after binding');

  const fx: Fixture = {
    authd: authd.sign, kid: authd.kid, authdSecret: privateKeyObject('Ed25519', authd.sign), service: service.seal,
    trusted: new Map([[authd.kid, publicKeyObject('Ed25519', authd.sign.public)]]),
  };
  const a = await Terminal.open(fx, { ip: '127.0.0.1', port });
  const b = await Terminal.open(fx, { ip: '127.0.0.1', port });
  t.teardown(() => Promise.all([a.close(), b.close()]));
  const ka = await a.submitOk({ nickname: 'a' });
  const kb = await b.submitOk({ nickname: 'b' });
  const [ra, rb] = await Promise.all([a.waitResult(ka.matchId), b.waitResult(kb.matchId)]);
  t.equal(ra.state, MatchState.MATCHED);
  t.same(ra.members, rb.members);
  await d.waitFor((l) => l['msg'] === 'match formed');

  const metricsLine = await d.waitFor((l) => l['msg'] === 'metrics endpoint');
  const text = await scrapeMetrics(String(metricsLine['listen']));
  for (const name of ['match_submits_total', 'match_formed_total', 'match_push_acked_total', 'match_waiting', 'match_pending_pushes']) {
    t.match(text, new RegExp(`^devloc_${name}`, 'm'), `metric ${name}`);
  }

  // Distrust the authd key: sessions opened with its tickets are dropped, its tickets refused.
  writeFileSync(trustFile, publicToJson(publicOf(other)));
  d.proc.kill('SIGHUP');
  const reloaded = await d.waitFor((l) => l['msg'] === 'trusted keys reloaded');
  t.same(reloaded['kids'], [other.kid]);
  t.equal(reloaded['sessionsDropped'], 2);
  const st = await a.request('MATCH_STATUS', { matchId: ka.matchId });
  t.equal(st.msg.name === 'ERROR' && st.msg.body.code, ErrorCode.NO_SESSION, 'session dropped');
  const again = await a.submit();
  t.equal(again.msg.name === 'ERROR' && again.msg.body.code, ErrorCode.BAD_TICKET, 'ticket of a distrusted key refused');

  t.equal(await d.stop(), 0, 'clean exit on SIGTERM');
});

t.test('daemon: configuration errors are refused with the key named', async (t) => {
  // runDaemon in-process: it returns before starting anything when the configuration is bad.
  const run = async (args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ status: number; stderr: string }> => {
    const chunks: string[] = [];
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((c: string | Uint8Array) => {
      chunks.push(String(c));
      return true;
    }) as typeof process.stderr.write;
    try {
      const status = await runDaemon(definition, args, env);
      return { status, stderr: chunks.join('') };
    } finally {
      process.stderr.write = write;
    }
  };
  const r = await run(['--check-config']);
  t.equal(r.status, 2);
  t.match(r.stderr, /service-key is required/);
  const r2 = await run(['--check-config', '--service-key', '/nonexistent'], { DEVLOC_MATCHD_TRUST: '/nonexistent.pub' });
  t.equal(r2.status, 2);
  t.match(r2.stderr, /service-key: cannot read/);
  const r3 = await run(['--check-config'], { DEVLOC_MATCHD_MAX_PARTY: '40' });
  t.equal(r3.status, 2);
  t.match(r3.stderr, /max-party/);
  const r4 = await run(['--check-config', '--widen-step', 'x']);
  t.equal(r4.status, 2);
  t.match(r4.stderr, /widen-step/);
});

t.test('man page: lint-clean and documents every option', async (t) => {
  const page = path.join(root, 'man/devloc-matchd.8');
  const text = readFileSync(page, 'utf8');
  const documented = new Set([...text.matchAll(/^\.It Fl -([a-z-]+)/gm)].map((m) => m[1]));
  for (const key of [...Object.keys(commonSpec), ...Object.keys(spec), 'check-config', 'help']) {
    t.ok(documented.has(key), `--${key} documented`);
  }
  t.match(text, /DEVLOC_MATCHD_/, 'environment variables documented');
  const which = spawnSync('mandoc', ['-V'], { encoding: 'utf8' });
  if (which.error) {
    t.comment('mandoc not installed: lint skipped');
    return;
  }
  let out = '';
  try {
    out = execFileSync('mandoc', ['-T', 'lint', '-W', 'warning', page], { encoding: 'utf8' });
  } catch (err) {
    out = String((err as { stdout?: string }).stdout ?? err);
  }
  t.equal(out.trim(), '', 'mandoc -T lint: no warnings');
});
