// `devloc demo` (npm start): from an empty folder it makes keys, enrolls devices, starts
// devloc-authd, devloc-locatord and devloc-matchd as child processes on 127.0.0.1, and runs two
// terminals through authentication, registration, lookups, online status, a group and a match.
// --once exits 0 after the scenario; a re-run reuses the folder; SIGINT while it runs stops
// everything (exit 0) and leaves no process behind. The --once runs use a held --base-port and 0;
// the SIGINT run the default ports (4700-4704), where a taken one moves to a free port, so two
// suites on one host do not collide.
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { root } from '../helpers/daemon.js';
import { holdUdp } from '../common/ops-helpers.js';
import { haveCoturn } from '../turn/coturn.js';

interface Demo {
  output(): string;
  exited: Promise<number | null>;
  waitFor(re: RegExp, ms: number): Promise<RegExpExecArray>;
  kill(sig: NodeJS.Signals): void;
}

function demo(args: string[]): Demo {
  const p = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'src/cli/devloc.ts'), 'demo', ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  let text = '';
  p.stdout.setEncoding('utf8').on('data', (s: string) => (text += s));
  p.stderr.setEncoding('utf8').on('data', (s: string) => (text += s));
  const exited = new Promise<number | null>((resolve) => p.once('exit', (code, sig) => resolve(code ?? (sig ? 128 : null))));
  const killer = setTimeout(() => p.kill('SIGKILL'), 80_000);
  void exited.then(() => clearTimeout(killer));
  return {
    output: () => text,
    exited,
    kill: (sig) => p.kill(sig),
    async waitFor(re, ms) {
      for (const end = Date.now() + ms; ;) {
        const m = re.exec(text);
        if (m) return m;
        if (p.exitCode !== null || Date.now() > end) throw new Error(`no ${re} in the demo's output:\n${text}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
  };
}

/** Processes whose command line mentions `dir` (the daemons' --state-dir, key files). */
function processesUsing(dir: string): string[] {
  const found: string[] = [];
  for (const pid of readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
      if (cmd.includes(dir)) found.push(`${pid}: ${cmd.slice(0, 160)}`);
    } catch {
      /* gone meanwhile */
    }
  }
  return found;
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

t.test('devloc demo --once: the scenario from an empty folder, then again reusing it', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'devloc-demo-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // --base-port on a port this test holds: authd's port is taken, so authd moves to a free one.
  // (The ports after it are whatever this host has free: each one taken moves too.)
  const { port: held, close } = await holdUdp();
  t.teardown(close);
  const first = demo(['--once', '--dir', dir, '--base-port', String(held)]);
  const code = await first.exited;
  const out = first.output();
  t.equal(code, 0, `exit 0\n${out}`);
  const authdPort = Number(/devloc-authd 127\.0\.0\.1:(\d+)/.exec(out)?.[1]);
  t.ok(authdPort > 0 && authdPort !== held, `authd moved off the taken port ${held} (to ${authdPort})`);
  t.match(out, new RegExp(`\\(ports? (\\d+, )*${held}(, \\d+)* taken: on free ports instead\\)`), 'the daemons line says which ports were taken');
  t.match(out, /keys\s+new: authd key [0-9a-f]+/, 'keys made');
  t.match(out, /enrolled 3 records: 3 added, 0 unchanged/, 'devices enrolled');
  t.match(out, /registered with authd: "locator" at 127\.0\.0\.1:\d+, "match" at 127\.0\.0\.1:\d+/, 'services registered');
  t.match(out, /devloc-authd 127\.0\.0\.1:\d+ \(pid \d+\), devloc-locatord 127\.0\.0\.1:\d+ with reflector :\d+\/:\d+ \(pid \d+\), devloc-matchd 127\.0\.0\.1:\d+ \(pid \d+\)/, 'daemons');
  for (const who of ['alice', 'bob']) {
    t.match(out, new RegExp(`${who}\\s+authenticated: locator ID [0-9a-f]{8}…; registered with locatord, observed 127\\.0\\.0\\.1:\\d+, network mode open`), `${who} registered`);
  }
  t.match(out, /alice looks up [0-9a-f]{8}…: online at 127\.0\.0\.1:\d+, network mode open, nickname bob/, 'lookup by locator ID');
  t.match(out, /bob looks up "alice": online at 127\.0\.0\.1:\d+/, 'lookup by nickname');
  t.match(out, /alice sees bob online; bob sees alice online/, 'online');
  t.match(out, /alice connects to bob directly: path 127\.0\.0\.1:\d+ \(\w+\), punched in \d+ ms, ping [\d.]+ ms, bob answers "bob got: hello bob"/, 'direct channel after the lookup');
  if (haveCoturn) {
    t.match(out, /alice connects to bob through coturn 127\.0\.0\.1:\d+ \(forced relay\): path 127\.0\.0\.1:\d+ \(relay\), alice's relayed address 127\.0\.0\.1:\d+, ping [\d.]+ ms, bob answers "bob got: hello bob, via the relay"/, 'relayed channel (coturn installed)');
  } else {
    t.match(out, /skipped the relayed channel: turnserver \(Debian package coturn\) is not installed/, 'one line says the relayed channel was skipped');
  }
  t.match(out, /alice creates "demo-friends" \([0-9a-f]{8}…\), bob joins; members: alice \(online, [^)]+\), bob \(online, [^)]+\)/, 'group');
  t.match(out, /matched in [\d.]+ s; party alice \+ bob, host (alice|bob) \(open, 127\.0\.0\.1:\d+\)/, 'matched, with the host');
  t.match(out, /both agree the host is [0-9a-f]{8}…/, 'same host for both');
  t.match(out, /stopped: agents unregistered, daemons stopped\./, 'stopped');
  for (const f of ['keys/authd.key', 'keys/authd.pub', 'keys/locatord.key', 'keys/matchd.key', 'devices/alice.key', 'devices.jsonl', 'authd/authd.db', 'logs/authd.log', 'logs/locatord.log', 'logs/matchd.log']) {
    t.ok(existsSync(path.join(dir, f)), `${f} exists`);
  }
  t.same(processesUsing(dir), [], 'no process left');
  const ids = [...out.matchAll(/(alice|bob)\s+authenticated: locator ID ([0-9a-f]{8})/g)].map((m) => m[2]);

  const again = demo(['--once', '--dir', dir, '--base-port', '0']);
  t.equal(await again.exited, 0, `second run: exit 0\n${again.output()}`);
  const out2 = again.output();
  t.match(out2, /keys\s+reused/, 'keys reused');
  t.match(out2, /enrolled 3 records: 0 added, 3 unchanged/, 'enrollment idempotent');
  t.match(out2, /alice reuses "demo-friends"/, 'group reused');
  t.same([...out2.matchAll(/(alice|bob)\s+authenticated: locator ID ([0-9a-f]{8})/g)].map((m) => m[2]), ids, 'same locator IDs');
  t.same(processesUsing(dir), [], 'no process left');
});

t.test('devloc demo: SIGINT while running stops everything, exit 0', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'devloc-demo-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const d = demo(['--dir', dir]);
  t.teardown(() => d.kill('SIGKILL'));
  await d.waitFor(/stack running; Ctrl-C to stop/, 60_000);
  const daemons = await d.waitFor(/devloc-authd \S+ \(pid (\d+)\), devloc-locatord .* \(pid (\d+)\), devloc-matchd \S+ \(pid (\d+)\)/, 1000);
  const pids = daemons.slice(1, 4).map(Number);
  t.ok(pids.every(alive), 'the daemons run');
  t.ok(existsSync(path.join(dir, 'run', 'alice.sock')), "alice's control socket");
  d.kill('SIGINT');
  t.equal(await d.exited, 0, 'exit 0');
  t.match(d.output(), /SIGINT: stopping/);
  t.match(d.output(), /^stopped\.$/m);
  t.same(pids.filter(alive), [], 'the daemons are gone');
  t.same(processesUsing(dir), [], 'no process left');
  t.match(readFileSync(path.join(dir, 'logs', 'locatord.log'), 'utf8'), /"msg":"stopping","signal":"SIGTERM"/, 'locatord was stopped with SIGTERM');
  t.match(readFileSync(path.join(dir, 'logs', 'agents.log'), 'utf8'), /"msg":"unregistered"/, 'the agents unregistered');
});

t.test('devloc demo --base-port: the port and the five after it must exist', async (t) => {
  for (const bad of ['65531', '-1', '1.5']) {
    const d = demo(['--once', '--base-port', bad]);
    t.equal(await d.exited, 2, `--base-port ${bad}: a usage error`);
    t.match(d.output(), /--base-port: 0, or 1 to 65530 \(it and the five ports after it\)/);
  }
});
