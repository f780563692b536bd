// devloc demo (`npm start`): the whole deployment on 127.0.0.1 from nothing, as a quick start.
//
//   1. a state folder (default ./demo-state) with keys made by the library (authd, the "locator"
//      and "match" services) and demo devices made and enrolled as `devloc device new` and
//      `devloc enroll` do, the two services registered as `devloc service add` does;
//   2. devloc-authd, devloc-locatord (with its NAT reflector) and devloc-matchd as child
//      processes on 127.0.0.1 (default ports 4700-4704; a daemon whose port is taken runs on free ones),
//      JSON logs in logs/;
//   3. two terminals, alice and bob (in-process agents, each with a control socket in run/ for
//      devloc(1)), that authenticate, register, look each other up by locator ID and by
//      nickname, see each other online, connect directly, share a group and get matched;
//      with coturn installed (`turnserver` on the PATH), also a relayed channel: a coturn on
//      127.0.0.1 registered as relay "demo" (as `devloc relay add` does) and a forced-relay
//      pair (alice connects to bob with relaying forced); without it, one line says it skipped;
//   4. then it keeps running until SIGINT/SIGTERM (or exits after the scenario with --once),
//      and stops everything in order: agents withdraw and unregister, daemons get SIGTERM.
//
// Re-running reuses the folder: keys, devices and enrollment are idempotent, and the locator
// IDs stay the same (authd's locator secret is in its state directory).
//
// The daemons are the entry points next to this file: dist/<daemon>/main.js when running from
// dist, src/<daemon>/main.ts through tsx when running from the sources. They run in their own
// process groups, so a terminal's Ctrl-C reaches only this process, which then stops them after
// the agents have unregistered; and each watches its stdin, a pipe from this process, so they
// also stop if this process dies without cleaning up.
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { appendFileSync, chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { Agent } from '../../agent/agent.js';
import type { LookupEntry } from '../../agent/agent.js';
import { ControlServer } from '../../agent/control.js';
import { loadAuthdKey, loadDeviceIdentity } from '../../agent/identity.js';
import type { MatchResult } from '../../agent/match.js';
import { AddressBook } from '../../agent/peers.js';
import { AuthDb } from '../../authd/db.js';
import { readRelaySecret } from '../../authd/relays.js';
import { enrollFile } from '../../authd/enroll.js';
import type { RunningDaemon } from '../../common/spawn.js';
import { entryPoint, isListening, spawnDaemon } from '../../common/spawn.js';
import type { Address } from '../../wire/addr.js';
import { formatAddress } from '../../wire/addr.js';
import type { KeyFile } from '../../wire/keys.js';
import { keyFileToJson, newAuthdKey, newDeviceKey, newServiceKey, parseKeyFile, publicOf, publicToJson } from '../../wire/keys.js';
import { CliError, cliIo, runHandler, UsageError } from '../util.js';
import { writeSecretFile } from './keygen.js';
import { safeText } from '../../common/escape.js';
import { freePort, portFree, udpPortShared } from '../../common/preflight.js';

interface DemoArgs {
  dir: string;
  once: boolean;
  'base-port': number;
}

const HOST = '127.0.0.1';
const DEVICES = ['alice', 'bob', 'carol'] as const;
const MEDIA = 'demo-game';
/** A path as the user would type it: relative below the current directory, else absolute. */
function shown(p: string): string {
  const rel = path.relative(process.cwd(), p);
  return rel === '' ? '.' : rel.startsWith('..') ? p : rel;
}
const short = (id: string | null | undefined): string => (id ? `${id.slice(0, 8)}…` : '-');
const out = (s: string): void => cliIo.out(`${safeText(s)}\n`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

let stepNo = 0;
function step(tag: string, text: string): void {
  stepNo++;
  out(`${String(stepNo).padStart(2)}. ${tag.padEnd(9)} ${text}`);
}

/** The command line that starts one of our entry points (devloc, a daemon), for the user to type. */
function command(rel: string): string {
  const e = entryPoint(rel);
  return `node ${e.execArgv.length ? '--import tsx ' : ''}${shown(e.file)}`;
}

// ---- state folder -------------------------------------------------------------------------------

interface Keys {
  authd: KeyFile & { kind: 'authd' };
  locator: KeyFile & { kind: 'service' };
  match: KeyFile & { kind: 'service' };
  files: { authd: string; authdPub: string; locator: string; match: string };
  created: string[];
}

function loadOrCreateKey(file: string, make: () => KeyFile, created: string[], label: string): KeyFile {
  if (existsSync(file)) {
    const p = parseKeyFile(readFileSync(file, 'utf8'));
    if (!p.ok) throw new CliError(`${file}: ${p.error} (remove it to make a new one)`);
    return p.value;
  }
  const k = make();
  writeSecretFile(file, keyFileToJson(k), false);
  created.push(label);
  return k;
}

function keys(dir: string): Keys {
  const kd = path.join(dir, 'keys');
  mkdirSync(kd, { recursive: true, mode: 0o700 });
  const created: string[] = [];
  const files = {
    authd: path.join(kd, 'authd.key'), authdPub: path.join(kd, 'authd.pub'),
    locator: path.join(kd, 'locatord.key'), match: path.join(kd, 'matchd.key'),
  };
  const authd = loadOrCreateKey(files.authd, newAuthdKey, created, 'authd');
  const locator = loadOrCreateKey(files.locator, () => newServiceKey('locator'), created, '"locator"');
  const match = loadOrCreateKey(files.match, () => newServiceKey('match'), created, '"match"');
  if (authd.kind !== 'authd' || locator.kind !== 'service' || match.kind !== 'service') throw new CliError(`unexpected key kinds in ${kd}`);
  // The public half, as `devloc keygen authd --out authd.key > authd.pub` leaves it.
  writeFileSync(files.authdPub, publicToJson(publicOf(authd)) + '\n', { mode: 0o644 });
  return { authd, locator, match, files, created };
}

interface Devices {
  paths: Record<string, string>;
  ids: Record<string, string>;
  made: string[];
  enrolled: { added: number; unchanged: number; records: number };
  file: string;
}

/** Device identities as `devloc device new` makes them, enrolled as `devloc enroll` does. */
function devices(dir: string, authdState: string): Devices {
  const dd = path.join(dir, 'devices');
  mkdirSync(dd, { recursive: true, mode: 0o700 });
  const paths: Record<string, string> = {};
  const ids: Record<string, string> = {};
  const made: string[] = [];
  const records: string[] = [];
  for (const name of DEVICES) {
    const file = path.join(dd, `${name}.key`);
    paths[name] = file;
    let key: KeyFile;
    if (existsSync(file)) {
      const p = parseKeyFile(readFileSync(file, 'utf8'));
      if (!p.ok || p.value.kind !== 'device') throw new CliError(`${file}: not a device identity (remove it to make a new one)`);
      key = p.value;
    } else {
      key = newDeviceKey(`DEMO-${name.toUpperCase()}-${Math.random().toString(16).slice(2, 10).toUpperCase()}`);
      writeSecretFile(file, keyFileToJson(key), false);
      made.push(name);
    }
    if (key.kind !== 'device') throw new CliError(`${file}: not a device identity`);
    chmodSync(file, 0o600);
    ids[name] = key.deviceId;
    records.push(JSON.stringify({ deviceId: key.deviceId, publicKey: key.sign.public.toString('base64url'), model: 'devloc-demo', region: 'loopback' }));
  }
  const file = path.join(dir, 'devices.jsonl');
  writeFileSync(file, records.join('\n') + '\n');
  const db = AuthDb.open(authdState, { create: true, synchronous: 'FULL' });
  try {
    const res = enrollFile(db, file, { onError: (line, reason) => process.stderr.write(`${file}:${line}: ${reason}\n`) });
    if (!res.ok) throw new CliError(`${file}: not enrolled`);
    return { paths, ids, made, enrolled: { added: res.added, unchanged: res.unchanged, records: res.records }, file };
  } finally {
    db.close();
  }
}

/** `devloc service add --replace`: the addresses may differ from the last run. */
function registerServices(authdState: string, k: Keys, locatord: string, matchd: string): string[] {
  const db = AuthDb.open(authdState, { create: true, synchronous: 'FULL' });
  try {
    return [
      `locator ${db.putService({ serviceId: 'locator', sealKey: k.locator.seal.public, addr: locatord }, true)}`,
      `match ${db.putService({ serviceId: 'match', sealKey: k.match.seal.public, addr: matchd }, true)}`,
    ];
  } finally {
    db.close();
  }
}

// ---- daemons --------------------------------------------------------------------------------------

interface Child {
  name: string;
  daemon: RunningDaemon;
  log: string;
}

/** Start `src|dist/<daemon>/main` with its JSON log in logs/<name>.log; resolve at "listening". */
async function startDaemon(children: Child[], name: string, daemon: string, args: string[], logDir: string): Promise<RunningDaemon> {
  const log = path.join(logDir, `${name}.log`);
  const d = spawnDaemon({ entry: `${daemon}/main`, name: `devloc-${daemon}`, args, logFile: log, watchdog: true, detached: true, timeoutMs: 30_000 });
  children.push({ name, daemon: d, log });
  try {
    d.listening = await d.waitFor(isListening);
  } catch (err) {
    throw new CliError((err as Error).message);
  }
  return d;
}

/** Whether a daemon that exited at start did so because one of its ports was taken. */
const portTaken = (d: RunningDaemon): boolean =>
  d.lines.some((l) => l['msg'] === 'failed to start' && l['code'] === 'EADDRINUSE');

/**
 * A daemon on the demo's fixed ports (easy to point a devloc-agent at), or on any free ports (0)
 * when one of them is taken. The daemon itself finds out, by failing to bind: a check beforehand
 * would race with whatever binds the port next (two demos started at once both saw 4701 free).
 * `moved` lists the fixed ports given up.
 */
async function startOnPorts(children: Child[], name: string, ports: number[], args: (ports: number[]) => string[], logDir: string): Promise<{ daemon: RunningDaemon; moved: number[] }> {
  try {
    return { daemon: await startDaemon(children, name, name, args(ports), logDir), moved: [] };
  } catch (err) {
    const failed = children.pop()!;
    if (ports.every((p) => p === 0) || !portTaken(failed.daemon)) {
      children.push(failed);
      throw err;
    }
    await failed.daemon.exited;
    const daemon = await startDaemon(children, name, name, args(ports.map(() => 0)), logDir);
    return { daemon, moved: ports.filter((p) => p !== 0) };
  }
}

const stopChild = async (c: Child): Promise<void> => void (await c.daemon.stop('SIGTERM', 10_000));

// ---- the demo relay (coturn) ------------------------------------------------------------------------

interface DemoRelay {
  port: number;
  stop: () => Promise<void>;
}

/** Whether coturn's `turnserver` can be started. */
const haveTurnserver = (): boolean => spawnSync('turnserver', ['--version'], { stdio: 'ignore', timeout: 10_000 }).error === undefined;

/** A STUN Binding answered at 127.0.0.1:port within `ms`. */
async function stunAnswers(port: number, ms: number): Promise<boolean> {
  const s = dgram.createSocket('udp4');
  try {
    return await new Promise<boolean>((resolve) => {
      const req = Buffer.concat([Buffer.from('000100002112a442', 'hex'), randomBytes(12)]);
      let timer: NodeJS.Timeout | undefined;
      const done = (ok: boolean): void => {
        clearTimeout(timer);
        resolve(ok);
      };
      s.on('message', () => done(true));
      const end = Date.now() + ms;
      const tick = (): void => {
        if (Date.now() > end) return done(false);
        s.send(req, port, HOST);
        timer = setTimeout(tick, 200);
      };
      tick();
    });
  } finally {
    s.close();
  }
}

/**
 * coturn on 127.0.0.1 for the relayed channel of the demo: the shared-secret scheme of
 * contrib/coturn/turnserver.conf, but loopback peers allowed (the demo's terminals are on
 * 127.0.0.1, which the production configuration denies). Its secret goes in a 0400 file, and
 * the relay is registered in authd's database as `devloc relay add` does. On `port` when free
 * (0: any); where another process holds it, even one that bound it meanwhile (coturn would
 * share it: udpPortShared), on any free port.
 */
async function startDemoRelay(dir: string, logDir: string, authdState: string, port: number): Promise<DemoRelay> {
  // The port asked for, if free, then any free port (0); each given up if it turns out shared.
  const ports = port > 0 && (await portFree('udp', HOST, port)) === null ? [port, 0] : [0];
  let shared = 0;
  for (const p of ports) {
    const relay = await startTurnserver(dir, logDir, authdState, p || (await freePort(HOST, ['udp'])));
    if (!relay.shared) return relay;
    shared = relay.port;
    await relay.stop();
  }
  throw new CliError(`turnserver on ${HOST}:${shared} shares the port with another process`);
}

/** turnserver on `port`, answering, and registered with authd; `shared`: another process is bound to its port too. */
async function startTurnserver(dir: string, logDir: string, authdState: string, port: number): Promise<DemoRelay & { shared: boolean }> {
  const rd = path.join(dir, 'relay');
  mkdirSync(rd, { recursive: true, mode: 0o700 });
  // A re-run reuses the secret: authd reads secret files when the relay list changes or on
  // SIGHUP (devloc-authd(8)), and re-registering the same relay is no change, so a new secret
  // here would leave authd signing credentials with the old one (coturn answers 401).
  const secretFile = path.join(rd, 'relay.secret');
  let secret: string;
  if (existsSync(secretFile)) {
    secret = readRelaySecret(secretFile);
  } else {
    secret = randomBytes(24).toString('hex');
    writeSecretFile(secretFile, `${secret}\n`, true);
  }
  const conf = path.join(rd, 'turnserver.conf');
  writeFileSync(conf, [
    `listening-ip=${HOST}`, `listening-port=${port}`, `relay-ip=${HOST}`, 'allow-loopback-peers', 'no-multicast-peers', 'no-tls', 'no-dtls',
    'use-auth-secret', `static-auth-secret=${secret}`, 'realm=demo.devloc', 'fingerprint', 'no-cli', 'no-rfc5780',
    `pidfile=${path.join(rd, 'turnserver.pid')}`, `userdb=${path.join(rd, 'turndb')}`, `log-file=${path.join(logDir, 'turnserver.log')}`, 'simple-log', 'no-stdout-log',
  ].join('\n') + '\n');
  const proc = spawn('turnserver', ['-c', conf], { stdio: 'ignore', detached: true });
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const stop = async (): Promise<void> => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGTERM');
      await exited;
    }
  };
  if (!(await stunAnswers(port, 10_000))) {
    await stop();
    throw new CliError(`turnserver did not answer on ${HOST}:${port} (see ${path.join(logDir, 'turnserver.log')})`);
  }
  if (udpPortShared(port, proc.pid!)) return { port, stop, shared: true };
  const db = AuthDb.open(authdState);
  try {
    db.putRelay({ relayId: 'demo', udp: `${HOST}:${port}`, secretFile }, true);
  } finally {
    db.close();
  }
  return { port, stop, shared: false };
}

// ---- terminals ----------------------------------------------------------------------------------

interface Terminal {
  name: string;
  agent: Agent;
  book: AddressBook;
  control?: ControlServer;
  socket: string;
}

async function until<T>(what: string, ms: number, fn: () => T | undefined | null | false): Promise<T> {
  for (const end = Date.now() + ms; ;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) throw new CliError(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

// ---- the command ----------------------------------------------------------------------------------

async function demo(a: DemoArgs): Promise<void> {
  const dir = path.resolve(a.dir);
  const shownDir = shown(dir);
  const children: Child[] = [];
  const terminals: Terminal[] = [];
  let relay: DemoRelay | undefined;
  let stopping: Promise<void> | undefined;

  const shutdown = (): Promise<void> => {
    stopping ??= (async () => {
      await Promise.all(terminals.map(async (t) => {
        await t.control?.close().catch(() => undefined);
        await t.agent.stop().catch(() => undefined);
      }));
      await Promise.all(children.map(stopChild));
      await relay?.stop();
    })();
    return stopping;
  };
  let signalled = false;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (signalled) return;
    signalled = true;
    out(`\n${sig}: stopping (agents withdraw and unregister, then the daemons stop)`);
    void shutdown().then(() => {
      out('stopped.');
      process.exit(0);
    });
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const logDir = path.join(dir, 'logs');
    const runDir = path.join(dir, 'run');
    mkdirSync(logDir, { recursive: true });
    mkdirSync(runDir, { recursive: true });
    const authdState = path.join(dir, 'authd');
    out(`devloc demo: the whole stack on ${HOST}, state in ${shownDir}/ (Ctrl-C stops it)`);

    // 1-3: keys, devices, enrollment.
    const k = keys(dir);
    step('keys', `${k.created.length === 3 ? 'new' : k.created.length ? `new ${k.created.join(', ')}, others reused` : 'reused'}: authd key ${k.authd.kid}, service keys "locator" and "match" in ${shownDir}/keys/`);
    const d = devices(dir, authdState);
    step('devices', `${DEVICES.join(', ')} ${d.made.length ? `(new: ${d.made.join(', ')})` : '(reused)'}; enrolled ${d.enrolled.records} records: ${d.enrolled.added} added, ${d.enrolled.unchanged} unchanged`);

    // 4: daemons, on --base-port and the next ports, or on any free ones where those are taken.
    const base = a['base-port'];
    const at = (offset: number): number => (base > 0 ? base + offset : 0);
    const { daemon: locatord, moved: locMoved } = await startOnPorts(children, 'locatord', [at(1), at(2), at(4)], ([port, refl, alt]) => [
      '--listen', HOST, '--port', String(port), '--service-key', k.files.locator, '--trust', k.files.authdPub,
      '--state-dir', path.join(dir, 'locatord'), '--reflector-port', String(refl), '--reflector-alt-port', String(alt),
    ], logDir);
    const { daemon: matchd, moved: matchMoved } = await startOnPorts(children, 'matchd', [at(3)], ([port]) => [
      '--listen', HOST, '--port', String(port), '--service-key', k.files.match, '--trust', k.files.authdPub, '--state-dir', path.join(dir, 'matchd'),
    ], logDir);
    const locAddr: Address = { ip: HOST, port: Number(locatord.listening['port']) };
    const reflector: Address = { ip: HOST, port: Number(locatord.listening['reflectorPort']) };
    const matchAddr: Address = { ip: HOST, port: Number(matchd.listening['port']) };
    const registered = registerServices(authdState, k, formatAddress(locAddr), formatAddress(matchAddr));
    step('services', `registered with authd: "locator" at ${formatAddress(locAddr)}, "match" at ${formatAddress(matchAddr)} (${registered.join(', ')})`);
    const { daemon: authd, moved: authdMoved } = await startOnPorts(children, 'authd', [at(0)], ([port]) => [
      '--listen', HOST, '--port', String(port), '--key', k.files.authd, '--state-dir', authdState,
    ], logDir);
    const authdAddr: Address = { ip: HOST, port: Number(authd.listening['port']) };
    const moved = [...authdMoved, ...locMoved, ...matchMoved].sort((x, y) => x - y);
    step('daemons', `devloc-authd ${formatAddress(authdAddr)} (pid ${authd.proc.pid}), devloc-locatord ${formatAddress(locAddr)} with reflector :${reflector.port}/:${String(locatord.listening['reflectorAltPort'])} (pid ${locatord.proc.pid}), devloc-matchd ${formatAddress(matchAddr)} (pid ${matchd.proc.pid}); logs in ${shownDir}/logs/${moved.length ? ` (port${moved.length > 1 ? 's' : ''} ${moved.join(', ')} taken: on free ports instead)` : ''}`);
    if (signalled) return;

    // 5-6: the two terminals.
    const authdKey = loadAuthdKey(k.files.authdPub);
    if (!authdKey.ok) throw new CliError(authdKey.error);
    const agentLog = path.join(logDir, 'agents.log');
    for (const name of ['alice', 'bob']) {
      const identity = loadDeviceIdentity(d.paths[name]!);
      if (!identity.ok) throw new CliError(identity.error);
      const book = new AddressBook(path.join(dir, 'agents', name, 'peers.json'));
      book.load();
      const agent = new Agent({
        identity: identity.value, authd: authdAddr, authdKey: authdKey.value, reflector, bind: { host: HOST, port: 0 },
        nickname: name, mediaId: MEDIA, reachable: true, retransmitMs: 300, backoffMinMs: 200, backoffMaxMs: 5000, peers: book,
        log: (level, msg, fields) => appendFileSync(agentLog, JSON.stringify({ time: new Date().toISOString(), agent: name, level, msg, ...fields }) + '\n'),
      });
      const t: Terminal = { name, agent, book, socket: path.join(runDir, `${name}.sock`) };
      terminals.push(t);
      await agent.start();
      try {
        t.control = await ControlServer.listen(t.socket, agent, book);
      } catch (err) {
        out(`   (no control socket for ${name}: ${(err as Error).message})`);
      }
    }
    const [alice, bob] = terminals as [Terminal, Terminal];
    for (const t of terminals) {
      await until(`${t.name} to register`, 30_000, () => t.agent.isRegistered);
      await until(`${t.name}'s network classification`, 30_000, () => t.agent.status().netModeReason !== null && t.agent.status().netModeReason !== 'address changed, classifying again');
      const s = t.agent.status();
      step(t.name, `authenticated: locator ID ${short(s.locatorId)}; registered with locatord, observed ${s.observed}, network mode ${s.netMode} (${s.netModeReason})`);
    }
    if (signalled) return;
    const sa = alice.agent.status();
    const sb = bob.agent.status();

    // 7-8: lookups, by locator ID and through the address book.
    const [byId] = await alice.agent.lookup([sb.locatorId!]);
    step('lookup', `alice looks up ${short(sb.locatorId)}: ${describe(byId!)}`);
    alice.book.add('bob', sb.locatorId!, 'peer');
    bob.book.add('alice', sa.locatorId!, 'peer');
    const [byNick] = await bob.agent.lookup(['alice']);
    step('nickname', `bob's address book: alice = ${short(sa.locatorId)}; bob looks up "alice": ${describe(byNick!)}`);

    // 9: online status.
    const [onA] = await alice.agent.online(['bob']);
    const [onB] = await bob.agent.online(['alice']);
    step('online', `alice sees bob ${onA!.online ? 'online' : 'OFFLINE'}; bob sees alice ${onB!.online ? 'online' : 'OFFLINE'}`);

    // 9b: a direct channel after the lookup (introduction by locatord, then UDP hole punching).
    bob.agent.on('channel', (ch) => ch.on('message', (m) => ch.send(`bob got: ${m.toString()}`)));
    const ch = await alice.agent.connect('bob');
    const answer = new Promise<string>((resolve) => ch.once('message', (m) => resolve(m.toString())));
    ch.send('hello bob');
    const rtt = await ch.ping();
    step('direct', `alice connects to bob directly: path ${ch.path?.addr} (${ch.path?.kind}), punched in ${ch.summary().punchMs} ms, ping ${rtt} ms, bob answers "${await answer}"`);
    ch.close();

    // 9c: a relayed channel through coturn: a forced-relay pair (the two terminals could talk
    // directly on 127.0.0.1; relaying is forced to show it).
    if (!haveTurnserver()) {
      step('relay', 'skipped the relayed channel: turnserver (Debian package coturn) is not installed');
    } else {
      relay = await startDemoRelay(dir, logDir, authdState, at(5));
      await alice.agent.reauthenticate('demo relay added', 15_000);
      await until('alice to get the relay in her grant', 15_000, () => alice.agent.relays.length > 0);
      const rc = await alice.agent.connect('bob', { reuse: false, relay: 'always' });
      const relayed = new Promise<string>((resolve) => rc.once('message', (m) => resolve(m.toString())));
      rc.send('hello bob, via the relay');
      const rrtt = await rc.ping();
      const alloc = alice.agent.relay.status();
      step('relay', `alice connects to bob through coturn ${HOST}:${relay.port} (forced relay): path ${rc.path?.addr} (${rc.path?.kind}), alice's relayed address ${alloc?.relayed ?? '?'}, ping ${rrtt} ms, bob answers "${await relayed}"; the relay carries only ciphertext`);
      rc.close();
    }

    // 10: a group (reused on a re-run: its ID is in alice's address book).
    let groupId: string | undefined;
    const saved = alice.book.list().find((e) => e.name === 'demo-friends' && e.kind === 'group');
    if (saved) {
      try {
        await alice.agent.groupMembers(saved.id);
        groupId = saved.id;
      } catch {
        /* gone (locatord state removed): make a new one */
      }
    }
    const reused = groupId !== undefined;
    groupId ??= (await alice.agent.groupCreate('demo-friends')).groupId;
    alice.book.add('demo-friends', groupId, 'group');
    bob.book.add('demo-friends', groupId, 'group');
    await bob.agent.groupJoin('demo-friends');
    const g = await bob.agent.groupMembers('demo-friends');
    const members = g.members.map((m) => `${m.nickname ?? short(m.id)} (${m.online ? `online, ${m.addr}` : 'offline'})`).join(', ');
    step('group', `alice ${reused ? 'reuses' : 'creates'} "demo-friends" (${short(groupId)}), bob joins; members: ${members}`);

    // 11: matching: both want a partner for the same media ID.
    const t0 = Date.now();
    const [ma, mb] = await Promise.all([
      alice.agent.match.submit({ mediaId: MEDIA, maxWaitS: 30, attrs: { level: 12 } }, { wait: true }),
      bob.agent.match.submit({ mediaId: MEDIA, maxWaitS: 30, attrs: { level: 11 }, requirements: [{ attr: 'level', op: 1, min: 10, max: 14 }] }, { wait: true }),
    ]);
    if (ma.state !== 'matched' || mb.state !== 'matched') throw new CliError(`match: alice ${ma.state}, bob ${mb.state}${ma.reason ? ` (${ma.reason})` : ''}`);
    step('match', `alice and bob ask matchd for a partner for "${MEDIA}": matched in ${((Date.now() - t0) / 1000).toFixed(1)} s; ${party(ma)}`);
    const other = (r: MatchResult): string => {
      const m = r.members!.find((x) => !x.self)!;
      return `${m.nickname} ${short(m.id)} at ${m.addr} (${m.netMode})`;
    };
    step('partners', `alice got ${other(ma)}; bob got ${other(mb)}; both agree the host is ${ma.hostId === mb.hostId ? short(ma.hostId) : 'NOT THE SAME'}`);

    if (a.once) {
      step('done', 'scenario complete (--once): stopping');
      await shutdown();
      out('stopped: agents unregistered, daemons stopped.');
      return;
    }
    const devloc = command('cli/devloc');
    step('running', 'stack running; Ctrl-C to stop. Meanwhile, in another shell:');
    if (alice.control && bob.control) {
      out(`      ${devloc} status --socket ${shown(alice.socket)}`);
      out(`      ${devloc} lookup bob --socket ${shown(alice.socket)}`);
      out(`      ${devloc} match submit --media chess --socket ${shown(bob.socket)}   (and the same for alice.sock)`);
    }
    out(`      a third terminal: ${command('agent/main')} --identity ${shown(d.paths['carol']!)} --authd ${formatAddress(authdAddr)} \\`);
    out(`        --authd-key ${shown(k.files.authdPub)} --reflector ${formatAddress(reflector)} --control-socket ${shown(path.join(runDir, 'carol.sock'))} --state-dir ${shown(path.join(dir, 'agents', 'carol'))}`);
    for (const t of terminals) {
      t.agent.on('refreshed', (info) => out(`   ${new Date().toISOString().slice(11, 19)} ${t.name} refreshed its registration: ${info.observed}, TTL ${info.ttlS} s`));
      t.agent.on('problem', (stepName, error) => out(`   ${new Date().toISOString().slice(11, 19)} ${t.name}: ${stepName} failed: ${error} (retrying)`));
      t.agent.on('match', (r) => out(`   ${new Date().toISOString().slice(11, 19)} ${t.name}: match ${r.state}${r.members ? `: ${party(r)}` : ''}`));
    }
    for (const c of children) {
      void c.daemon.exited.then((code) => {
        if (!signalled) out(`   devloc-${c.name} exited (${code ?? c.daemon.proc.signalCode}): see ${c.log}`);
      });
    }
    await new Promise<never>(() => {}); // until a signal
  } catch (err) {
    if (signalled) return;
    await shutdown();
    throw err;
  } finally {
    if (!signalled) {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  }
}

function describe(e: LookupEntry): string {
  if (!e.online) return 'offline';
  return `online at ${e.addr}, network mode ${e.netMode ?? '?'}${e.nickname ? `, nickname ${e.nickname}` : ''}`;
}

function party(r: MatchResult): string {
  const host = r.members?.[r.host ?? -1];
  return `party ${r.members!.map((m) => m.nickname ?? short(m.id)).join(' + ')}, host ${host ? `${host.nickname ?? short(host.id)} (${host.netMode}, ${host.addr})` : '-'}`;
}

export const demoCommand: CommandModule<object, DemoArgs> = {
  command: 'demo',
  describe: 'run the whole stack on 127.0.0.1 with two demo terminals (npm start); Ctrl-C stops it',
  builder: (y) =>
    y
      .option('dir', { type: 'string', default: './demo-state', describe: 'state folder: keys, enrolled devices, daemon state, logs (reused)' })
      .option('once', { type: 'boolean', default: false, describe: 'run the scenario, stop everything and exit' })
      .option('base-port', { type: 'number', default: 4700, describe: 'authd on this UDP port, locatord +1, reflector +2 and +4, matchd +3, the demo relay (coturn) +5 (a daemon whose port is taken: on any free ports; 0: all any)' }) as unknown as Argv<DemoArgs>,
  handler: (a) => runHandler('demo', async () => {
    if (!Number.isInteger(a['base-port']) || a['base-port'] < 0 || a['base-port'] > 65535 - 5) throw new UsageError('--base-port: 0, or 1 to 65530 (it and the five ports after it)');
    await demo(a);
  }),
};
