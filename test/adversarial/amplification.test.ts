// Anti-amplification over every unauthenticated input we can make, at each real daemon (authd,
// locatord, its NAT reflector, matchd): every catalog message type, with minimal and full bodies,
// unauthenticated and under an unknown or the victim's session ID with a wrong MAC; captured
// datagrams of a legitimate terminal replayed; genuine AUTH_REQUESTs; the fuzzer's seeds; and
// each of them mangled (truncated, bit-flipped, retyped, re-versioned, padded past the limit,
// fuzz-mutated). For every datagram the bytes that come back to its source are at most its own
// size, and so is the sum per daemon. Then the one way a source can get a large cached answer:
// a captured request replayed with the victim's own (spoofed) source address.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { mutate } from '../../fuzz/mutate.js';
import { Rng } from '../../fuzz/rng.js';
import { messageNames, sampleBody } from '../../fuzz/samples.js';
import { buildWorld } from '../../fuzz/world.js';
import { UdpClient } from '../../src/net/client.js';
import { buildAuthRequest } from '../../src/wire/auth.js';
import type { MessageName } from '../../src/wire/catalog.js';
import { catalog, MessageType } from '../../src/wire/catalog.js';
import type { CborValue } from '../../src/wire/cbor.js';
import { decodeStrict, encodeCbor } from '../../src/wire/cbor.js';
import { MAX_DATAGRAM, MAX_RETRANSMIT } from '../../src/wire/constants.js';
import { encodeDatagram } from '../../src/wire/envelope.js';
import { generatePair, privateKeyObject } from '../../src/wire/keys.js';
import { adversarialStack, expectMsg, LOCATOR, MATCH, RawSocket } from './fixtures/stack.js';

const s = await adversarialStack(t);
const victim = await s.terminal('victim');
expectMsg(await victim.register({ nickname: 'victim', mediaId: 'amplification' }), 'REGISTER_ACK');
const victimMatch = expectMsg(await victim.submit({ mediaId: 'amplification' }), 'MATCH_SUBMIT_ACK');
// Several attacker sockets, each with its own sequence of exchanges (so its byte count stays
// exact), run side by side to keep the walk short.
const attackers = await Promise.all(Array.from({ length: 8 }, (_, i) => RawSocket.open(t, `127.0.0.${70 + i}`)));
const rng = new Rng(20260110);

// What an eavesdropper captures from the victim, replayed from the attacker's address. Each was
// sent by the victim first: a captured datagram that never reached the server is not a replay
// but the terminal's own authenticated message, which any on-path relay can deliver.
const captured: Buffer[] = [];
for (const [name, body] of [
  ['REGISTER', { ticket: victim.tickets.locator.ticket, timeMs: Date.now(), nickname: 'victim' }],
  ['REFRESH', {}],
  ['QUERY_ADDR', { ids: [victim.locatorId] }],
  ['QUERY_STATUS', { ids: [victim.locatorId] }],
  ['GROUP_CREATE', { name: 'captured' }],
  ['MATCH_SUBMIT', { ticket: victim.tickets.match.ticket, timeMs: Date.now(), mediaId: 'amplification', minParty: 3, maxParty: 3, netMode: 1, maxWaitS: 60 }],
  ['MATCH_STATUS', { matchId: victimMatch.matchId }],
] as [MessageName, never][]) {
  const d = victim.encode(name, body);
  const r = await victim.send(name, d);
  if (r.msg.name === 'ERROR') throw new Error(`victim's ${name} refused: ${JSON.stringify(r.msg.body)}`);
  captured.push(d.bytes);
}

/** Seeds: valid datagrams of every kind an attacker can produce or capture. */
function seeds(): Buffer[] {
  const out: Buffer[] = [];
  const rid = (): Buffer => randomBytes(8);
  for (const name of messageNames) {
    const spec = catalog[MessageType[name]];
    for (const full of [false, true]) {
      const body = sampleBody(name, full, out.length) as never;
      out.push(encodeDatagram(name as MessageName, rid(), body));
      if (spec.auth === 'session') {
        // An unknown session, and the victim's session with a MAC the attacker cannot make.
        out.push(encodeDatagram(name as MessageName, rid(), body, { sid: randomBytes(16), seq: 1 + out.length }));
        const forged = encodeDatagram(name as MessageName, rid(), body, { sid: victim.sessions.locator.sid, seq: 1_000_000 + out.length });
        randomBytes(16).copy(forged, forged.length - 16);
        out.push(forged);
      }
    }
  }
  out.push(...captured);
  // Genuine AUTH_REQUESTs (an enrolled device: authd serves them), and the fuzzer's seeds.
  const device = s.enroll('amplifier');
  for (const audiences of [[], [LOCATOR], [LOCATOR, MATCH]]) {
    out.push(buildAuthRequest({
      rid: rid(), deviceId: device.deviceId, deviceKey: privateKeyObject('Ed25519', device.sign), authdKid: Buffer.from(s.authdKey.kid, 'hex'),
      authdSealPublic: s.authdKey.seal.public, audiences, cnf: generatePair('x25519').public, timeMs: Date.now(),
    }).datagram);
  }
  out.push(...buildWorld().datagrams);
  return out.filter((d) => d.length > 0);
}

/** A datagram with its envelope's type or version replaced (type confusion), when it decodes. */
function retyped(d: Buffer, type: number | string, version: CborValue = 1): Buffer | null {
  const v = decodeStrict(d);
  if (!v.ok || !Array.isArray(v.value) || v.value.length < 4) return null;
  const items = [...v.value];
  items[0] = version;
  items[1] = type;
  return encodeCbor(items);
}

function mangled(seed: Buffer, i: number): Buffer[] {
  const types = Object.values(MessageType);
  const out: (Buffer | null)[] = [
    seed.subarray(0, 1), seed.subarray(0, seed.length >> 2), seed.subarray(0, seed.length >> 1), seed.subarray(0, seed.length - 1),
    Buffer.concat([seed, Buffer.from([0])]),
    Buffer.concat([seed, Buffer.alloc(Math.max(1, MAX_DATAGRAM + 1 - seed.length))]),
    retyped(seed, types[i % types.length]!), retyped(seed, types[(i * 7 + 3) % types.length]!), retyped(seed, 'REGISTER'), retyped(seed, 0x7e, 2),
  ];
  for (const at of [2, seed.length >> 1, seed.length - 1]) {
    const flipped = Buffer.from(seed);
    if (at < flipped.length) flipped[at]! ^= 1 << (i % 8);
    out.push(flipped);
  }
  for (let k = 0; k < 2; k++) out.push(mutate(seed, rng, () => seed, 1400));
  return out.filter((d): d is Buffer => d !== null && d.length > 0);
}

const all = ((): Buffer[] => {
  const base = seeds();
  return [...base, ...base.flatMap((d, i) => mangled(d, i))];
})();

for (const target of ['authd', 'locatord', 'reflector', 'matchd'] as const) {
  t.test(`${target}: no datagram gets more bytes back than it had`, async (t) => {
    let bytesIn = 0;
    let bytesOut = 0;
    let answered = 0;
    const violations: string[] = [];
    await Promise.all(attackers.map(async (attacker, k) => {
      for (let i = k; i < all.length; i += attackers.length) {
        const d = all[i]!;
        const got = await attacker.exchange(s.addr[target], d);
        const out = got.reduce((n, g) => n + g.length, 0);
        bytesIn += d.length;
        bytesOut += out;
        if (got.length > 0) answered++;
        if (out > d.length || got.length > 1) violations.push(`${got.length} answers, ${out} B for ${d.length} B: ${d.toString('hex').slice(0, 120)}`);
      }
    }));
    t.same(violations.slice(0, 10), [], `${violations.length} of ${all.length} datagrams amplified`);
    t.ok(bytesOut <= bytesIn, `${target}: ${bytesOut} B out for ${bytesIn} B in over ${all.length} datagrams (${answered} answered)`);
    t.ok(answered > all.length / 3, 'most inputs were answered (the check is not vacuous)');
    t.equal(s.procs[target === 'reflector' ? 'locatord' : target].proc.exitCode, null, 'still running');
  });
}

t.test('a captured request replayed from the victim\'s own (spoofed) address: the large cached answer is repeated a bounded number of times', async (t) => {
  // Three terminals with the largest entries the schema allows: a QUERY_ADDR of them is small,
  // its answer several times larger, and it sits in the response cache for the exchange lifetime.
  const rich = await Promise.all([0, 1, 2].map((i) => s.terminal(`rich${i}`)));
  for (const [i, x] of rich.entries()) {
    expectMsg(await x.register({
      nickname: `n${i}`.padEnd(32, 'x'), mediaId: `m${i}`.padEnd(64, 'y'), localAddrs: [1, 2, 3, 4].map((k) => ({ ip: `2001:db8::${k}`, port: 40000 + k })),
    }), 'REGISTER_ACK');
  }
  const captured = victim.encode('QUERY_ADDR', { ids: rich.map((x) => x.locatorId) });
  const first = await victim.send('QUERY_ADDR', captured);
  t.ok(first.raw.length > 3 * captured.bytes.length, `answer ${first.raw.length} B for a ${captured.bytes.length} B request`);
  // The attacker forges the victim's source address: on loopback, it sends from the victim's socket.
  let arrived = 0;
  const sentinelRid = randomBytes(8);
  const done = new Promise<void>((resolve) => {
    victim.client.socket.on('message', (m: Buffer) => {
      if (m.includes(sentinelRid)) resolve();
      else arrived += m.length;
    });
  });
  const copies = 40;
  for (let i = 0; i < copies; i++) victim.client.socket.send(captured.bytes, s.addr.locatord.port, s.addr.locatord.ip);
  victim.client.socket.send(encodeCbor([1, 0x7e, sentinelRid, new Map([[15, Buffer.alloc(60)]])]), s.addr.locatord.port, s.addr.locatord.ip);
  await done;
  t.ok(arrived <= MAX_RETRANSMIT * first.raw.length, `${arrived} B sent to the victim for ${copies} replays (at most ${MAX_RETRANSMIT} answers of ${first.raw.length} B)`);
  t.ok(arrived > 0, 'a genuine retransmission is still answered');
  t.ok(await s.metric('locatord', 'dropped_total', { reason: 'retransmissions-exhausted' }) >= copies - MAX_RETRANSMIT, 'the rest dropped and counted');
  t.ok(s.refusals('locatord', { event: 'drop:retransmissions-exhausted' }).length > 0, 'and logged');
});

// Last: every refusal the daemons' handlers answered above is one devloc-protocol(7) lists.
t.test('every handler refusal answered is listed in devloc-protocol(7)', async (t) => {
  t.same(await s.undocumentedRefusals(), []);
});
