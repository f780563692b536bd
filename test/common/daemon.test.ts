// runDaemon: --check-config, configuration errors (exit 2), metrics endpoint, SIGHUP reload
// (with the same checks as at start) and SIGTERM stop, in-process.
import t from 'tap';
import type { Test } from 'tap';
import http from 'node:http';
import type { DaemonDefinition } from '../../src/common/daemon.js';
import { runDaemon } from '../../src/common/daemon.js';
import type { Config } from '../../src/common/config.js';
import { scrapeMetrics } from '../helpers/metrics.js';

function quietStdout(t: Test): string[] {
  const out: string[] = [];
  const write = process.stdout.write.bind(process.stdout);
  const err = process.stderr.write.bind(process.stderr);
  (process.stdout as unknown as { write: (s: string) => boolean }).write = (s: string) => (out.push(String(s)), true);
  (process.stderr as unknown as { write: (s: string) => boolean }).write = (s: string) => (out.push(String(s)), true);
  t.teardown(() => {
    (process.stdout as unknown as { write: typeof write }).write = write;
    (process.stderr as unknown as { write: typeof err }).write = err;
  });
  return out;
}

function def(events: string[], opts: { check?: (c: Config) => string | null } = {}): DaemonDefinition {
  return {
    name: 'testd',
    summary: 'a test daemon',
    spec: { greeting: { type: 'string', default: 'hello', describe: 'what to say', reloadable: true } },
    check: (c) => opts.check?.(c) ?? null,
    start: async (c) => {
      events.push(`start:${String(c['greeting'])}`);
      return {
        stop: async () => void events.push('stop'),
        reload: (c2) => void events.push(`reload:${String(c2['greeting'])}`),
      };
    },
  };
}

t.test('--check-config validates and exits 0 without starting', async (t) => {
  const out = quietStdout(t);
  const events: string[] = [];
  t.equal(await runDaemon(def(events), ['--check-config'], {}), 0);
  t.same(events, []);
  t.match(out.join(''), /devloc-testd: configuration OK/);
});

t.test('configuration errors exit 2 with the reason', async (t) => {
  const out = quietStdout(t);
  const events: string[] = [];
  t.equal(await runDaemon(def(events), [], { DEVLOC_TESTD_BOGUS: '1' }), 2);
  t.equal(await runDaemon(def(events), ['--metrics-listen', 'localhost:9100'], {}), 2, 'a bad metrics-listen is a configuration error, not a crash');
  t.equal(await runDaemon(def(events, { check: () => 'greeting: too rude' }), [], {}), 2);
  t.same(events, [], 'nothing started');
  t.match(out.join(''), /unknown key "bogus"/);
  t.match(out.join(''), /metrics-listen: expected IP:PORT/);
  t.match(out.join(''), /greeting: too rude/);
});

t.test('runs, serves metrics, reloads on SIGHUP from its own env, stops on SIGTERM', async (t) => {
  const out = quietStdout(t);
  const events: string[] = [];
  const env: NodeJS.ProcessEnv = { DEVLOC_TESTD_GREETING: 'hi' };
  let rejectGreeting = false;
  const running = runDaemon(def(events, { check: (c) => (rejectGreeting && c['greeting'] === 'rude' ? 'greeting: too rude' : null) }), ['--metrics-listen', '127.0.0.1:0'], env);
  const logs = (): Record<string, unknown>[] => out.join('').split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
  const waitLog = async (msg: string, n = 1): Promise<Record<string, unknown>> => {
    const end = Date.now() + 15_000;
    while (logs().filter((l) => l['msg'] === msg).length < n) {
      if (Date.now() > end) throw new Error(`no "${msg}" log line`);
      await new Promise((r) => setTimeout(r, 5));
    }
    return logs().filter((l) => l['msg'] === msg)[n - 1]!;
  };
  const ep = await waitLog('metrics endpoint');
  t.same(events, ['start:hi'], 'started with the env value');
  const port = Number(String(ep['listen']).split(':').at(-1));
  t.ok(port > 0);
  t.type(await scrapeMetrics(port), 'string');
  env['DEVLOC_TESTD_GREETING'] = 'bonjour';
  process.kill(process.pid, 'SIGHUP');
  await waitLog('reloaded');
  t.same(events, ['start:hi', 'reload:bonjour'], 'reload reads the environment the daemon was given');
  rejectGreeting = true;
  env['DEVLOC_TESTD_GREETING'] = 'rude';
  process.kill(process.pid, 'SIGHUP');
  const refused = await waitLog('reload refused: configuration error');
  t.match(refused['err'], /too rude/, 'reload runs the same checks as start');
  t.same(events, ['start:hi', 'reload:bonjour'], 'and does not apply what they refuse');
  process.kill(process.pid, 'SIGTERM');
  t.equal(await running, 0);
  t.same(events, ['start:hi', 'reload:bonjour', 'stop']);
});

t.test('a metrics port already taken: logged, stopped, exit 1 (no unhandled rejection)', async (t) => {
  const blocker = http.createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => blocker.close());
  const port = (blocker.address() as { port: number }).port;
  const out = quietStdout(t);
  const events: string[] = [];
  t.equal(await runDaemon(def(events), ['--metrics-listen', `127.0.0.1:${port}`], {}), 1);
  t.same(events, ['start:hello', 'stop'], 'what started was stopped');
  t.match(out.join(''), /cannot serve metrics/);
});
