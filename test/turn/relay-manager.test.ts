// The agent's RelayManager (src/agent/relay.ts) against a real coturn on 127.0.0.1: expired
// credentials are never a silent stall. A grant whose credentials have expired (by its `exp`, or
// only as the relay says) makes the manager authenticate again and allocate with the fresh ones;
// when authd has none, ensure() fails at once with RELAY_UNAVAILABLE naming the relay. A relay
// that does not answer is reported the same way, and skipped afterwards. A relay that gets no UDP
// through is reached over TCP, and over TLS when TCP does not connect either (issue 17 item 2).
//
// Channel level: credentials that expire under an open relayed channel (coturn would go on
// serving the allocation: it checks the expiry only when allocating): at their expiry the
// manager drops the allocation (onLost), authenticates again, allocates with the fresh ones, and
// the channel moves to the new allocation (as punch.ts's moveRelayed does, with the peer told
// the new relayed address as INTRO field 10 would): a stream across it arrives complete, once
// and in order, and a capture of both legs at the relay (client to relay, relay to peer, on
// loopback) holds none of it in clear: the relay sees only ciphertext (needs root and dumpcap,
// as the namespace lab does; skipped without them outside CI).
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import t from 'tap';
import type { Test } from 'tap';
import { Channel } from '../../src/agent/channel.js';
import { RELAY_LOST_MS, RelayManager } from '../../src/agent/relay.js';
import { DEFAULT_CLOSE_TIMEOUT_MS, defaultLink, nodeTurnClock } from '../../src/agent/turn/client.js';
import type { Address } from '../../src/wire/addr.js';
import { decodeDatagram } from '../../src/wire/envelope.js';
import type { RelayGrant } from '../../src/wire/catalog.js';
import { mintTurnCredentials } from '../../src/wire/turn-credentials.js';
import { has, needs } from '../ops/tools.js';
import { capture } from '../punch/lab.js';
import { haveCoturn, startCoturn } from './coturn.js';
import { FakeClock } from './fake-clock.js';
import { trackUdpSockets } from '../helpers/sockets.js';

const LOCATOR = 'ab'.repeat(16);
const nowSec = (): number => Math.floor(Date.now() / 1000);

t.test('expired relay credentials: authenticate again, never a silent stall', needs('turnserver', haveCoturn), async (t) => {
  const relay = await startCoturn();
  t.teardown(() => relay.stop());
  const grant = (exp: number, usernameExp = exp): RelayGrant => {
    const c = mintTurnCredentials(relay.secret, LOCATOR, usernameExp);
    return { name: 'lo', udp: { ip: relay.host, port: relay.port }, username: c.username, password: c.password, exp };
  };
  const manager = (grants: RelayGrant[][], logs: string[] = []): { m: RelayManager; reauths: () => number } => {
    let current = grants.shift()!;
    let reauths = 0;
    const m = new RelayManager({
      grants: () => current,
      reauthenticate: async () => {
        reauths++;
        current = grants.shift() ?? current;
        return true;
      },
      log: (_l, msg, f) => void logs.push(`${msg} ${JSON.stringify(f ?? {})}`),
    });
    t.teardown(() => m.close());
    return { m, reauths: () => reauths };
  };
  /** Stop coturn (SIGSTOP: its sockets stay, nothing is answered); the result resumes it, as teardown does. */
  const pauseRelay = (t: Test): (() => void) => {
    const pid = relay.pid()!;
    process.kill(pid, 'SIGSTOP');
    let resumed = false;
    const resume = (): void => {
      if (!resumed) process.kill(pid, 'SIGCONT');
      resumed = true;
    };
    t.teardown(resume);
    return resume;
  };

  await t.test('expired by the grant: fresh credentials first, then the allocation', async (t) => {
    const { m, reauths } = manager([[grant(nowSec() - 60)], [grant(nowSec() + 600)]]);
    const relayed = await m.ensure();
    t.equal(relayed.ip, '127.0.0.1');
    t.equal(reauths(), 1, 'authenticated again once');
    t.equal(m.status()?.relay, 'lo');
  });

  await t.test('expired only as the relay says (clocks apart): the 401 makes it authenticate again', async (t) => {
    const { m, reauths } = manager([[grant(nowSec() + 600, nowSec() - 60)], [grant(nowSec() + 600)]]);
    await m.ensure();
    t.equal(reauths(), 1);
    t.equal(m.counters.allocations, 1);
  });

  await t.test('authd has no fresh credentials: RELAY_UNAVAILABLE at once, with the reason', async (t) => {
    const logs: string[] = [];
    const { m } = manager([[grant(nowSec() - 60)], [grant(nowSec() - 30)]], logs);
    await t.rejects(m.ensure(), { code: 'RELAY_UNAVAILABLE', message: /lo: credentials expired and authd gave no fresh ones/ });
    t.match(logs.join('\n'), /no relay allocation/, 'logged');
  });

  await t.test('a relay that does not answer: RELAY_UNAVAILABLE naming the timeout, then skipped', async (t) => {
    const dead: RelayGrant = { ...grant(nowSec() + 600), name: 'dead', udp: { ip: '127.0.0.1', port: 9 } };
    const { m } = manager([[dead, grant(nowSec() + 600)]]);
    const relayed = await m.ensure();
    t.equal(m.status()?.relay, 'lo', 'the second relay of the grant after the first timed out');
    t.equal(relayed.ip, '127.0.0.1');
    const { m: m2 } = manager([[dead]]);
    await t.rejects(m2.ensure(), { code: 'RELAY_UNAVAILABLE', message: /dead: TURN_TIMEOUT/ });
  });

  await t.test('closed while an Allocate is in flight: the allocation is dropped, not kept past close()', async (t) => {
    // coturn stopped (SIGSTOP) holds the Allocate in its socket; close() comes first; coturn then
    // answers. The manager used to finish that allocation after close() and keep it (a client,
    // its socket and a relay allocation nobody would release).
    const { m } = manager([[grant(nowSec() + 600)]]);
    const resume = pauseRelay(t);
    const allocating = m.ensure();
    await m.close();
    resume();
    await t.rejects(allocating, { code: 'NOT_RUNNING' }, 'the allocation in flight fails as stopped');
    t.equal(m.status(), null, 'nothing allocated after close()');
  });

  await t.test('closed while authd is asked for fresh credentials: nothing allocated with them after close()', async (t) => {
    // The agent stops while the manager waits for a new grant: the grant still comes (authd
    // answered just before), but the manager is closed. It used to go on and allocate with the
    // fresh credentials, and keep that allocation, its socket and its renewal timer.
    const sockets = trackUdpSockets(t);
    let current = [grant(nowSec() - 60)];
    let asked!: () => void;
    const askedAuthd = new Promise<void>((resolve) => (asked = resolve));
    let answer!: () => void;
    const m = new RelayManager({
      grants: () => current,
      reauthenticate: async () => {
        asked();
        await new Promise<void>((resolve) => (answer = resolve));
        current = [grant(nowSec() + 600)];
        return true;
      },
      log: () => {},
    });
    t.teardown(() => m.close());
    const allocating = m.ensure();
    await askedAuthd;
    await m.close();
    answer();
    await t.rejects(allocating, { code: 'NOT_RUNNING', message: /agent stopped while a relay allocation/ }, 'ensure() fails as stopped');
    t.equal(m.status(), null, 'nothing allocated after close()');
    t.equal(m.counters.allocations, 0, 'no allocation made');
    t.same(sockets.open(), [], `no socket left open (${sockets.opened} opened)`);
  });

  await t.test('a lost relay, then close(): the released allocation is closed when close() resolves', async (t) => {
    // lost() releases the allocation; its client says goodbye (Refresh with LIFETIME 0), which a
    // relay that stopped answering never acknowledges: the client closes at its close timeout.
    // close() (the agent's stop) comes meanwhile and must not resolve before it.
    const sockets = trackUdpSockets(t);
    const { m } = manager([[grant(nowSec() + 600)]]);
    await m.ensure();
    t.equal(sockets.opened, 1, 'one socket, the allocation\'s');
    const resume = pauseRelay(t);
    t.match(m.lost('test: the relay stopped answering'), /relay lo lost/);
    t.same(sockets.open().length, 1, 'the released client is still saying goodbye to the silent relay');
    await m.close();
    await new Promise((resolve) => setImmediate(resolve)); // the socket's 'close' event comes a tick after close()
    t.same(sockets.open(), [], 'its socket is closed when close() resolves');
    resume();
  });
});

t.test('transport fallback: UDP gets no answer, then TCP; TCP does not connect either, then TLS', needs('turnserver', haveCoturn), async (t) => {
  const relay = await startCoturn({ tls: true });
  t.teardown(() => relay.stop());
  // A TCP port nobody listens on (refused at once) and a UDP port nobody answers on.
  const closed = net.createServer();
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', () => resolve()));
  const deadPort = (closed.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => closed.close(() => resolve()));
  const c = mintTurnCredentials(relay.secret, LOCATOR, nowSec() + 600);
  const base = { name: 'lo', username: c.username, password: c.password, exp: nowSec() + 600 };
  const manager = (g: RelayGrant, logs: string[]): RelayManager => {
    const m = new RelayManager({
      grants: () => [g],
      reauthenticate: async () => true,
      log: (_l, msg, f) => void logs.push(`${msg} ${JSON.stringify(f ?? {})}`),
      // The test's self-signed certificate is trusted through the link (the agent uses the system's CAs).
      client: { link: (server, h, o) => defaultLink({ ...server, ...(server.transport === 'tls' ? { tls: { ...server.tls, ca: relay.cert! } } : {}) }, h, o) },
    });
    t.teardown(() => m.close());
    return m;
  };
  const fallbacks = (logs: string[]): string[] => logs.filter((l) => l.startsWith('relay unreachable over this transport'));

  await t.test('UDP blocked: allocated over TCP, and the next allocation starts with TCP', async (t) => {
    const logs: string[] = [];
    const m = manager({ ...base, udp: { ip: '127.0.0.1', port: deadPort }, tcp: { ip: relay.host, port: relay.port } }, logs);
    const relayed = await m.ensure();
    t.equal(relayed.ip, '127.0.0.1');
    t.equal(m.status()?.transport, 'tcp', 'the allocation is over TCP');
    t.equal(m.transport, 'tcp');
    t.equal(m.udpBlocked, true, 'learnt: UDP does not reach the relay, TCP does (matching declares udp-blocked)');
    t.match(fallbacks(logs), [/"transport":"udp","code":"TURN_TIMEOUT"/], 'the UDP timeout is logged once');
    m.lost('test: allocate again', false);
    t.equal(m.transport, null);
    await m.ensure();
    t.equal(m.status()?.transport, 'tcp');
    t.equal(fallbacks(logs).length, 1, 'UDP, which just failed, is tried after TCP: no second wait for it');
  });

  await t.test('UDP blocked is known while it lasts: not forgotten after a while, re-checked on an address change', async (t) => {
    const logs: string[] = [];
    let skewMs = 0;
    const g: RelayGrant = { ...base, udp: { ip: '127.0.0.1', port: deadPort }, tcp: { ip: relay.host, port: relay.port } };
    const m = new RelayManager({
      grants: () => [g], reauthenticate: async () => true,
      log: (_l, msg, f) => void logs.push(`${msg} ${JSON.stringify(f ?? {})}`),
      clock: nodeTurnClock(() => Date.now() + skewMs),
      // A short UDP schedule (50 ms doubling): the test waits for UDP timeouts twice.
      client: { rtoMs: 50 },
    });
    t.teardown(() => m.close());
    await m.ensure();
    t.equal(m.udpBlocked, true, 'learnt from the allocation over TCP');
    skewMs += RELAY_LOST_MS + 60_000;
    t.equal(m.udpBlocked, true, `still known ${(RELAY_LOST_MS + 60_000) / 60_000} min later: the situation did not change`);
    m.lost('test: allocate again', false);
    await m.ensure();
    t.equal(m.status()?.transport, 'tcp');
    t.equal(fallbacks(logs).length, 1, 'and the next allocation starts with TCP, without a UDP attempt');
    // An address change with UDP still blocked: UDP tried first again, TCP again, still known.
    // The TCP link broke with the old address just before the change was noticed: the relay is
    // marked lost, which the address change forgets (it was not the relay's fault).
    m.lost('test: the TCP link broke with the old address');
    t.equal(m.remaining, 0, 'the only relay is marked lost');
    m.addressChanged('test: renumbered');
    t.equal(m.udpBlocked, true, 'kept while the re-check runs');
    await m.ensure();
    t.equal(fallbacks(logs).length, 2, 'the re-check tried UDP first');
    t.equal(m.status()?.transport, 'tcp');
    t.equal(m.udpBlocked, true, 'still UDP-blocked at the new address');
    // Another address change, and this network lets UDP through: no longer UDP-blocked.
    g.udp = { ip: relay.host, port: relay.port };
    m.addressChanged('test: another network');
    await m.ensure();
    t.equal(m.status()?.transport, 'udp', 'the re-check allocated over UDP');
    t.equal(m.udpBlocked, false, 'not UDP-blocked any more');
    m.addressChanged('test: once more');
    t.ok(m.status(), 'a terminal not UDP-blocked keeps its allocation on an address change (its channels decide, punch.ts)');
  });

  await t.test('UDP and TCP blocked: allocated over TLS', async (t) => {
    const logs: string[] = [];
    const m = manager({ ...base, udp: { ip: '127.0.0.1', port: deadPort }, tcp: { ip: '127.0.0.1', port: deadPort }, tls: { ip: relay.host, port: relay.tlsPort! } }, logs);
    await m.ensure();
    t.equal(m.status()?.transport, 'tls');
    t.match(fallbacks(logs), [/"transport":"udp"/, /"transport":"tcp","code":"TURN_CONNECTION"/]);
  });

  await t.test('nothing gets through: RELAY_UNAVAILABLE naming each transport', async (t) => {
    const m = manager({ ...base, udp: { ip: '127.0.0.1', port: deadPort }, tcp: { ip: '127.0.0.1', port: deadPort } }, []);
    await t.rejects(m.ensure(), { code: 'RELAY_UNAVAILABLE', message: /lo: TURN_CONNECTION udp TURN_TIMEOUT .*; tcp TURN_CONNECTION / });
  });

  await t.test('a refusal is the relay\'s, not the transport\'s: no fallback', async (t) => {
    const logs: string[] = [];
    const m = manager({ ...base, password: 'wrong', udp: { ip: relay.host, port: relay.port }, tcp: { ip: relay.host, port: relay.port } }, logs);
    await t.rejects(m.ensure(), { code: 'RELAY_UNAVAILABLE', message: /lo: TURN_UNAUTHORIZED/ });
    t.equal(fallbacks(logs).length, 0);
    t.equal(m.udpBlocked, false);
  });
});

t.test("the renewal at the credentials' expiry runs on the manager's injected clock", needs('turnserver', haveCoturn), async (t) => {
  const relay = await startCoturn();
  t.teardown(() => relay.stop());
  const clock = new FakeClock(Date.now());
  const exp = Math.floor(clock.now() / 1000) + 30;
  const c = mintTurnCredentials(relay.secret, LOCATOR, exp);
  const m = new RelayManager({
    grants: () => [{ name: 'lo', udp: { ip: relay.host, port: relay.port }, username: c.username, password: c.password, exp }],
    reauthenticate: async () => true,
    log: () => {},
    clock,
  });
  t.teardown(() => m.close());
  const lost: string[] = [];
  m.onLost = (reason) => void lost.push(reason);
  await m.ensure();
  await clock.advance(exp * 1000 - clock.now() - 1000);
  t.same(lost, [], 'nothing before the expiry');
  await clock.advance(2000);
  t.match(lost, [/credentials expired at .*allocating anew/], 'at the expiry, in fake time: no real 30 s wait');
  t.equal(m.name, null, 'the allocation was dropped (the next ensure() makes a new one)');
  // The dropped allocation's client waits for the relay's answer to its release at most
  // DEFAULT_CLOSE_TIMEOUT_MS on this clock: let that pass. Otherwise a relay the teardown stops
  // before it answered left the client, and its socket, open for good: the process never exited
  // (1 run in 7 under load).
  await clock.advance(DEFAULT_CLOSE_TIMEOUT_MS + 1000);
});

t.test('credentials expiring under an open relayed channel: re-authorised, the channel moves, nothing lost', needs('turnserver', haveCoturn), async (t) => {
  const relay = await startCoturn();
  t.teardown(() => relay.stop());
  const grant = (exp: number): RelayGrant => {
    const c = mintTurnCredentials(relay.secret, LOCATOR, exp);
    return { name: 'lo', udp: { ip: relay.host, port: relay.port }, username: c.username, password: c.password, exp };
  };
  // Short-lived credentials (a ticket lifetime of seconds): they expire under the channel.
  let current = [grant(nowSec() + 4)];
  let reauths = 0;
  const m = new RelayManager({
    grants: () => current,
    reauthenticate: async () => {
      reauths++;
      current = [grant(nowSec() + 600)];
      return true;
    },
    log: () => {},
  });
  t.teardown(() => m.close());
  const relayed = await m.ensure();

  // The peer: a plain UDP socket on loopback, reaching us only through our relayed address.
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => sock.bind(0, '127.0.0.1', () => resolve()));
  t.teardown(() => sock.close());
  const peerAddr: Address = { ip: '127.0.0.1', port: sock.address().port };
  // Both legs at the relay: ours to its port (both allocations), and the relay's to the peer.
  const canCapture = process.getuid?.() === 0 && has('dumpcap');
  if (!canCapture && process.env['CI']) t.fail('cannot capture at the relay: needs root and dumpcap');
  const pcapDir = mkdtempSync(path.join(tmpdir(), 'devloc-relay-expiry-'));
  t.teardown(() => rmSync(pcapDir, { recursive: true, force: true }));
  const pcap = canCapture ? await capture(null, 'lo', path.join(pcapDir, 'relay.pcap'), `udp port ${relay.port} or udp port ${peerAddr.port}`) : null;
  t.teardown(() => pcap?.abort());
  await m.permit(peerAddr);
  const id = randomBytes(16);
  const key = randomBytes(32);
  const timing = { punchTimeoutMs: 10_000, keepaliveMs: 60_000, upgradeWindowMs: 100, relayAfterMs: 0 };
  const a = new Channel({
    id, role: 'initiator', peer: randomBytes(16), names: [], channelKey: key, candidates: [], directPossible: false, relayOnly: true, timing,
    send: (to, bytes) => void m.send(to, bytes),
  });
  const b = new Channel({
    id, role: 'responder', peer: randomBytes(16), names: [], channelKey: key, candidates: [{ addr: relayed, kind: 'relay' }], directPossible: false, timing,
    send: (to, bytes) => sock.send(bytes, to.port, to.ip),
  });
  t.teardown(() => {
    a.close('test over');
    b.close('test over');
  });
  const feed = (ch: Channel, raw: Buffer, from: Address, via: 'socket' | 'relay'): void => {
    const d = decodeDatagram(raw);
    if (d.ok) ch.receive(d.msg, raw, from, via);
  };
  m.onData = (from, bytes) => feed(a, bytes, from, 'relay');
  sock.on('message', (raw, r) => feed(b, raw, { ip: r.address, port: r.port }, 'socket'));
  // What the peer manager does on a lost allocation (punch.ts moveRelayed), with the INTRO's
  // field 10 handed to the peer directly.
  const lostReasons: string[] = [];
  m.onLost = (reason) => {
    lostReasons.push(reason);
    a.relayMoving(reason);
    void (async () => {
      const fresh = await m.ensure();
      await m.permit(peerAddr);
      a.reestablish([], `moved to ${m.name}`, { replaceRelay: 'ours' });
      b.reestablish([{ addr: fresh, kind: 'relay' }], 'the peer moved', { replaceRelay: 'peer' });
    })().catch((err: Error) => a.relayGone(`RELAY_LOST: ${reason}; ${err.message}`));
  };
  a.start();
  b.start();
  await Promise.all([a.waitOpen(), b.waitOpen()]);
  const got: string[] = [];
  const back: string[] = [];
  let lost = 0;
  b.on('message', (x) => got.push(x.toString()));
  a.on('message', (x) => back.push(x.toString()));
  a.on('loss', (l) => (lost += l.missing));
  b.on('loss', (l) => (lost += l.missing));
  // A stream until the channel moved, and a little beyond.
  const marker = 'EXPIRY-PLAINTEXT-';
  let i = 0;
  const deadline = Date.now() + 120_000;
  let after = 0;
  while (Date.now() < deadline && after < 20) {
    i++;
    a.send(`${marker}m${i}`);
    b.send(`${marker}r${i}`);
    if (a.stats.relayMoves >= 1 && b.stats.relayMoves >= 1) after++;
    await new Promise((r) => setTimeout(r, 50));
  }
  const end = Date.now() + 30_000;
  while ((got.length < i || back.length < i) && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
  t.match(lostReasons[0], /credentials expired at .*allocating anew/, `the expiry acted on, not a silent stall: ${lostReasons[0]}`);
  t.equal(m.counters.relaysLost, 0, 'an expiry is no lost relay');
  t.ok(reauths >= 1, 'authenticated again for fresh credentials');
  t.ok(m.counters.allocations >= 2, 'allocated again with them');
  t.equal(a.state, 'open', 'the channel stayed open');
  t.ok(a.stats.relayMoves >= 1 && b.stats.relayMoves >= 1, 'and moved to the new allocation');
  t.not(b.path?.addr, `${relayed.ip}:${relayed.port}`, "the peer sends to the new relayed address");
  t.same(got, Array.from({ length: i }, (_, k) => `${marker}m${k + 1}`), `all ${i} messages once, in order`);
  t.same(back, Array.from({ length: i }, (_, k) => `${marker}r${k + 1}`), 'and the other way');
  t.equal(lost, 0, 'no loss reported');
  if (pcap) {
    // Each message crosses the relay twice (two legs), each way.
    const bytes = await pcap.stop(i * 4 * 60);
    t.ok(bytes.length >= i * 4 * 60, `the relay carried the channel, both legs (${bytes.length} bytes captured)`);
    t.equal(bytes.indexOf(marker), -1, 'no plaintext in anything the relay saw, before or after the new allocation');
  } else t.comment('no capture at the relay: needs root and dumpcap');
});
