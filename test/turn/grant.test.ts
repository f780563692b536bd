// Relay credentials end to end: a real coturn, a real authd and locatord, the relay registered
// with `devloc relay add`; an agent's grant carries credentials that coturn accepts (over UDP and
// TCP), bound to that terminal's locator ID (the same password under another ID is refused),
// and `devloc status` shows the relay without the credentials.
import t from 'tap';
import type { Test } from 'tap';
import path from 'node:path';
import { createSocket } from 'node:dgram';
import { chmodSync, writeFileSync } from 'node:fs';
import { Agent } from '../../src/agent/agent.js';
import { loadAuthdKey, loadDeviceIdentity } from '../../src/agent/identity.js';
import { TurnClient, TurnErrorCode, type TurnTransport } from '../../src/agent/turn/client.js';
import { formatStatus } from '../../src/cli/commands/agentctl.js';
import { parseAddress } from '../../src/wire/addr.js';
import type { RelayGrant } from '../../src/wire/catalog.js';
import type { Stack } from '../agent/stack.js';
import { eventually, stack } from '../agent/stack.js';
import { devloc } from '../cli/fixtures/cli.js';
import { trackUdpSockets } from '../helpers/sockets.js';
import type { Coturn } from './coturn.js';
import { haveCoturn, startCoturn } from './coturn.js';

if (!haveCoturn) {
  t.fail('turnserver (Debian package coturn) is not installed: apt-get install coturn');
  process.exit(1);
}

/** A real coturn and a real stack (authd, locatord), with where authd's state and the relay's secret file go. */
async function relayStack(t: Test): Promise<{ relay: Coturn; s: Stack; state: string; secretFile: string }> {
  const relay = await startCoturn();
  t.teardown(() => relay.stop());
  const s = await stack(t);
  return { relay, s, state: path.join(s.dir, 'authd-state'), secretFile: path.join(s.dir, 'relay.secret') };
}

/** An in-process agent of device `name` of the stack (no reflector), stopped at teardown. */
function inProcessAgent(t: Test, s: Stack, name: string, log?: (msg: string) => void): Agent {
  const id = loadDeviceIdentity(s.device(name).identityPath);
  const key = loadAuthdKey(s.authdPubFile);
  if (!id.ok || !key.ok) throw new Error('fixture unreadable');
  const agent = new Agent({
    identity: id.value, authd: parseAddress(s.authdAddr)!, authdKey: key.value, reflector: null, retransmitMs: 200,
    ...(log ? { log: (_level, msg) => log(msg) } : {}),
  });
  t.teardown(() => agent.stop({ unregister: false }));
  return agent;
}

t.test('an authenticated terminal gets relay credentials coturn accepts, bound to its locator ID', async (t) => {
  const { relay, s, state, secretFile } = await relayStack(t);
  writeFileSync(secretFile, `# coturn static-auth-secret\n${relay.secret}\n`, { mode: 0o600 });
  chmodSync(secretFile, 0o644);
  const loose = devloc(['relay', 'add', 'lo', '--state-dir', state, '--udp', `127.0.0.1:${relay.port}`, '--secret-file', secretFile]);
  t.equal(loose.status, 2, 'a group-readable secret file is refused');
  t.match(loose.stderr, /chmod 0400/);
  chmodSync(secretFile, 0o400);
  const noAddr = devloc(['relay', 'add', 'lo', '--state-dir', state, '--secret-file', secretFile]);
  t.equal(noAddr.status, 2, 'a relay with no address is refused');
  t.match(noAddr.stderr, /--udp, --tcp, --tls/);
  const add = devloc(['relay', 'add', 'lo', '--state-dir', state, '--udp', `127.0.0.1:${relay.port}`, '--tcp', `127.0.0.1:${relay.port}`, '--secret-file', secretFile]);
  t.equal(add.status, 0, add.stderr);
  t.match(add.stdout, 'relay lo: added');
  const list = devloc(['relay', 'list', '--state-dir', state, '--json']);
  t.match(JSON.parse(list.stdout.trim()), { relay: 'lo', udp: `127.0.0.1:${relay.port}`, tcp: `127.0.0.1:${relay.port}`, tls: null, secretFile });

  // The agent daemon: status shows the relay, never its credentials.
  const daemon = await s.agent('alice');
  const st = await eventually(async () => {
    const x = await daemon.status();
    return x.registered && x.relays.length > 0 ? x : undefined;
  }, 60_000, 'registered with a relay');
  t.match(st.relays, [{ name: 'lo', udp: `127.0.0.1:${relay.port}`, tcp: `127.0.0.1:${relay.port}`, tls: null }]);
  t.notMatch(JSON.stringify(st), /password|username/, 'no credential in the status');
  t.match(formatStatus(st), /relay:\s+lo: udp 127\.0\.0\.1:\d+, tcp 127\.0\.0\.1:\d+; credentials expire/);

  // An in-process agent, to hold the credentials themselves.
  const sockets = trackUdpSockets(t);
  const agent = inProcessAgent(t, s, 'bob');
  await agent.start();
  await eventually(async () => agent.status().registered, 60_000, 'bob registered');
  const [grant] = agent.relays;
  t.ok(grant, 'the grant names the relay');
  const locatorHex = agent.status().locatorId!;
  t.equal(grant!.username.split(':')[1], locatorHex, 'the username carries the locator ID');
  t.ok(grant!.exp * 1000 <= Date.parse(agent.status().ticketExpiresAt!) + 1000, 'the credentials do not outlive the ticket');

  const allocate = async (transport: TurnTransport, g: RelayGrant): Promise<{ ok: true } | { ok: false; code: string }> => {
    const addr = transport === 'udp' ? g.udp! : g.tcp!;
    const c = new TurnClient({ server: { host: addr.ip, port: addr.port, transport }, credentials: { username: g.username, password: g.password } });
    c.on('error', () => {});
    try {
      await c.allocate();
      return { ok: true };
    } catch (err) {
      return { ok: false, code: (err as { code?: string }).code ?? String(err) };
    } finally {
      await c.close();
    }
  };
  t.same(await allocate('udp', grant!), { ok: true }, 'allocation over UDP with the granted credentials');
  t.same(await allocate('tcp', grant!), { ok: true }, 'allocation over TCP with the granted credentials');
  const other = `${grant!.exp}:${'00'.repeat(16)}`;
  t.same(await allocate('udp', { ...grant!, username: other }), { ok: false, code: TurnErrorCode.UNAUTHORIZED }, 'the same password under another locator ID is refused');

  // The agent's own allocation (what a relayed channel uses) goes with the agent: stop() leaves
  // no socket of it open (devloc-agent(3): nothing keeps the process alive afterwards).
  const relayed = await agent.relay.ensure();
  t.equal(agent.status().relayAllocation?.relayed, `${relayed.ip}:${relayed.port}`, 'the agent allocated on the relay');
  await agent.stop({ unregister: false });
  t.equal(agent.status().relayAllocation, null, 'no allocation after stop()');
  t.ok(sockets.opened >= 2, `the agent's socket and the relay's were tracked (${sockets.opened})`);
  t.same(sockets.open(), [], `the ${sockets.opened} sockets bob's agent opened, the relay's among them, are closed when stop() resolves`);
});

t.test('an address change just before stop(): the UDP-blocked agent allocates nothing after it', async (t) => {
  // A terminal whose UDP does not reach the relay (it allocated over TCP) re-checks UDP on an
  // address change, one event-loop turn after the change is reported. When stop() comes in
  // that turn (a console suspending: the network goes, the host stops its agent), the re-check
  // must not start: the relay manager's close() is already behind it, so what it allocated
  // would outlive the agent (its sockets, for the 7.75 s of the UDP attempt and beyond).
  const { relay, s, state, secretFile } = await relayStack(t);
  writeFileSync(secretFile, `${relay.secret}\n`, { mode: 0o400 });
  // UDP to a port where nothing answers (a bound socket that reads nothing), TCP to coturn.
  const silent = await new Promise<import('node:dgram').Socket>((resolve) => {
    const sock = createSocket('udp4');
    sock.bind(0, '127.0.0.1', () => resolve(sock));
  });
  t.teardown(() => silent.close());
  const add = devloc(['relay', 'add', 'half', '--state-dir', state, '--udp', `127.0.0.1:${silent.address().port}`, '--tcp', `127.0.0.1:${relay.port}`, '--secret-file', secretFile]);
  t.equal(add.status, 0, add.stderr);
  const logs: string[] = [];
  const agent = inProcessAgent(t, s, 'carol', (msg) => logs.push(msg));
  await agent.start();
  await eventually(async () => agent.status().registered && agent.relays.length > 0, 60_000, 'carol registered with the relay granted');
  await agent.relay.ensure();
  t.ok(agent.relay.udpBlocked, 'allocated over TCP after UDP got no answer: known UDP-blocked');
  const sockets = trackUdpSockets(t);
  agent.emit('address', '127.0.0.1:1', '127.0.0.1:2');
  await agent.stop({ unregister: false });
  // The re-check was scheduled for the turn after the change: let that turn come.
  await new Promise((resolve) => setImmediate(resolve));
  t.notOk(logs.includes('address changed: checking again whether UDP reaches the relay'), 'no UDP re-check after stop()');
  t.equal(agent.status().relayAllocation, null, 'nothing allocated');
  t.same(sockets.open(), [], `no socket opened after the change left open (${sockets.opened} opened)`);
});
