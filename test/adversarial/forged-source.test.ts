// Forged datagrams against a chosen IP (issue 15, item 3), at the real daemons: authd, locatord,
// its reflector and matchd, each with a per-source rate limit. The attacker sends 1-byte
// datagrams from the victim's IP (here from another port of the same loopback address: the
// buckets are keyed by IP, so this is exactly what a forged source does to them). Before, the
// per-IP buckets were charged before anything was checked and the victim's own requests got
// RATE_LIMITED at every daemon; now only datagrams that prove something (a session MAC, a cookie,
// a device proof) charge a source's bucket, and the rest draw on one budget shared by all sources.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import type { Address } from '../../src/wire/addr.js';
import { encodeDatagram } from '../../src/wire/envelope.js';
import type { Daemon } from './fixtures/stack.js';
import { adversarialStack, decoded, expectMsg, RawSocket } from './fixtures/stack.js';

const VICTIM_IP = '127.0.0.5';
const BURST = 10;
const FLOOD = 4 * BURST;
const limits = ['--rate', '2', '--burst', String(BURST)];
const s = await adversarialStack(t, {
  authdArgs: limits,
  locatordArgs: [...limits, '--reflector-rate', '2', '--reflector-burst', String(BURST)],
  matchdArgs: limits,
});
const forger = await RawSocket.open(t, VICTIM_IP);

/** FLOOD 1-byte datagrams "from the victim" to `to`, waited for until the daemon has read them all. */
async function flood(d: Daemon, to: Address): Promise<void> {
  const before = await s.metric(d, 'datagrams_received_total');
  for (let i = 0; i < FLOOD; i++) forger.send(to, Buffer.from([0x84]));
  const end = Date.now() + 30_000;
  while ((await s.metric(d, 'datagrams_received_total')) < before + FLOOD) {
    if (Date.now() > end) throw new Error(`${d} did not read the flood`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

t.test('authd: the victim authenticates after the forged flood', async (t) => {
  await flood('authd', s.addr.authd);
  const victim = await s.terminal('victim', { bind: VICTIM_IP });
  t.ok(victim.locatorId.length === 16, 'authenticated');
  t.equal(await s.metric('authd', 'refused_total', { code: 'RATE_LIMITED' }), 0, 'nothing was RATE_LIMITED');

  t.test('locatord and matchd: the victim registers and submits after the forged floods', async (t) => {
    await flood('locatord', s.addr.locatord);
    expectMsg(await victim.register(), 'REGISTER_ACK');
    await flood('matchd', s.addr.matchd);
    expectMsg(await victim.submit(), 'MATCH_SUBMIT_ACK');
    // At once, not after retransmissions outlasting the limit.
    t.equal(await s.metric('locatord', 'refused_total', { code: 'RATE_LIMITED' }), 0, 'locatord: nothing was RATE_LIMITED');
    t.equal(await s.metric('matchd', 'refused_total', { code: 'RATE_LIMITED' }), 0, 'matchd: nothing was RATE_LIMITED');
  });

  t.test('reflector: the victim is reflected after the forged flood', async (t) => {
    await flood('locatord', s.addr.reflector);
    const sock = await RawSocket.open(t, VICTIM_IP);
    const rid = randomBytes(8);
    const a = await sock.ask(s.addr.reflector, encodeDatagram('REFLECT', rid, { padding: Buffer.alloc(40) }), rid, 5000);
    t.ok(a, 'answered');
    t.equal(a && decoded(a).name, 'REFLECT_RESULT');
  });
});

// Last: every refusal the daemons' handlers answered above is one devloc-protocol(7) lists.
t.test('every handler refusal answered is listed in devloc-protocol(7)', async (t) => {
  t.same(await s.undocumentedRefusals(), []);
});
