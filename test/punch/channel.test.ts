// Peer channel crypto (src/wire/peer.ts) and the Channel state machine (src/agent/channel.ts),
// in process: two channels joined by a simulated network that can drop, reorder, replay and
// inject datagrams. The real NATs are in nat.test.ts.
import { randomBytes } from 'node:crypto';
import t from 'tap';
import type { Test } from 'tap';
import { Channel, MAX_CANDIDATES } from '../../src/agent/channel.js';
import type { CandidateKind } from '../../src/agent/channel.js';
import { planPath } from '../../src/agent/punch.js';
import type { Address } from '../../src/wire/addr.js';
import { formatAddress } from '../../src/wire/addr.js';
import { NetMode } from '../../src/wire/constants.js';
import { decodeDatagram, encodeDatagram } from '../../src/wire/envelope.js';
import { generatePair, privateKeyObject } from '../../src/wire/keys.js';
import { channelCipher, deriveDataKeys, derivePunchKeys, openChannelKey, sealChannelKey } from '../../src/wire/peer.js';
import { deriveSessionKeys, sealDatagram } from '../../src/wire/session.js';

const sessionKeys = () => {
  const a = generatePair('x25519');
  const b = generatePair('x25519');
  return deriveSessionKeys(privateKeyObject('X25519', a), b.public, randomBytes(16), 'locator')!;
};

t.test('ChaCha20 keystream: RFC 8439 appendix A.1, test vector 1 (key 0, nonce 0, counter 0)', async (t) => {
  const ks = channelCipher(Buffer.alloc(32), 0, Buffer.alloc(64));
  t.equal(ks.toString('hex'),
    '76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586');
  const key = randomBytes(32);
  const msg = Buffer.from('the same key and sequence number open what they sealed');
  t.same(channelCipher(key, 7, channelCipher(key, 7, msg)), msg, 'XOR twice is the identity');
  t.notSame(channelCipher(key, 8, msg), channelCipher(key, 7, msg), 'the sequence number is the nonce');
});

t.test('channel key sealing: only the session it was sealed for opens it, for that channel and peer', async (t) => {
  const mine = sessionKeys();
  const other = sessionKeys();
  const id = randomBytes(16);
  const peer = randomBytes(16);
  const key = randomBytes(32);
  const sealed = sealChannelKey(mine, id, peer, key);
  t.equal(sealed.length, 48, '32 bytes and a 16-byte tag');
  t.same(openChannelKey(mine, id, peer, sealed), key, 'opens under its session');
  t.equal(openChannelKey(other, id, peer, sealed), null, 'not under another session (an eavesdropper has none)');
  t.equal(openChannelKey(mine, randomBytes(16), peer, sealed), null, 'bound to the channel ID');
  t.equal(openChannelKey(mine, id, randomBytes(16), sealed), null, 'bound to the peer named');
  const bad = Buffer.from(sealed);
  bad[3]! ^= 1;
  t.equal(openChannelKey(mine, id, peer, bad), null, 'tampered: refused');
  t.equal(openChannelKey(mine, id, peer, sealed.subarray(1)), null, 'wrong length: refused');
  t.not(sealChannelKey(other, id, peer, key).toString('hex'), sealed.toString('hex'), 'each session its own ciphertext');
});

t.test('punch and data keys: both ends derive the same, per direction', async (t) => {
  const id = randomBytes(16);
  const key = randomBytes(32);
  const i = generatePair('x25519');
  const r = generatePair('x25519');
  const p = derivePunchKeys(key, id);
  t.not(p.initiatorToResponder.export().toString('hex'), p.responderToInitiator.export().toString('hex'), 'one key per direction');
  const ki = deriveDataKeys(privateKeyObject('X25519', i), r.public, key, id, i.public, r.public)!;
  const kr = deriveDataKeys(privateKeyObject('X25519', r), i.public, key, id, i.public, r.public)!;
  t.equal(ki.initiatorToResponder.enc.toString('hex'), kr.initiatorToResponder.enc.toString('hex'));
  t.equal(ki.responderToInitiator.mac.export().toString('hex'), kr.responderToInitiator.mac.export().toString('hex'));
  const m = generatePair('x25519');
  const km = deriveDataKeys(privateKeyObject('X25519', m), i.public, key, id, i.public, m.public)!;
  t.not(km.initiatorToResponder.enc.toString('hex'), ki.initiatorToResponder.enc.toString('hex'), 'another ephemeral key, other data keys');
  t.equal(deriveDataKeys(privateKeyObject('X25519', i), Buffer.alloc(32), key, id, i.public, Buffer.alloc(32)), null, 'a low-order point is refused');
});

t.test('planPath: same NAT tries LAN first whatever the modes; the matrix rules out the rest', async (t) => {
  const peer = { addr: { ip: '198.51.100.30', port: 4000 }, localAddrs: [{ ip: '10.1.0.3', port: 4000 }], netMode: NetMode.SYMMETRIC };
  const same = planPath({ observed: { ip: '198.51.100.30', port: 5000 }, netMode: NetMode.SYMMETRIC }, peer);
  t.equal(same.sameNat, true);
  t.equal(same.problem, null, 'behind one NAT the LAN path needs no punching');
  t.same(same.candidates.map((c) => c.kind), ['lan', 'public']);
  const apart = planPath({ observed: { ip: '198.51.100.31', port: 5000 }, netMode: NetMode.SYMMETRIC }, peer);
  t.match(apart.problem, /symmetric NAT and the peer behind a symmetric NAT: both NATs pick a new port/);
  t.same(apart.candidates.map((c) => c.kind), ['public'], 'LAN addresses of another network are not tried');
  t.match(planPath({ observed: { ip: '198.51.100.31', port: 5000 }, netMode: NetMode.PORT_RESTRICTED }, peer).problem, /port-restricted NAT only lets in/);
  t.equal(planPath({ observed: { ip: '198.51.100.31', port: 5000 }, netMode: NetMode.PORT_RESTRICTED }, { ...peer, netMode: NetMode.PORT_RESTRICTED }).problem, null);
  t.equal(planPath({ observed: { ip: '198.51.100.31', port: 5000 }, netMode: NetMode.UNKNOWN }, peer).problem, null, 'unclassified: tried');
});

t.test('planPath: an IPv4 socket skips IPv6 candidates (no wasted candidate place, issue 15)', async (t) => {
  const peer = {
    addr: { ip: '198.51.100.30', port: 4000 },
    localAddrs: [{ ip: '10.1.0.3', port: 4000 }, { ip: '2001:db8::3', port: 4000 }, { ip: '::ffff:10.1.0.4', port: 4000 }],
    netMode: NetMode.FULL_CONE,
  };
  const own = { observed: { ip: '198.51.100.30', port: 5000 }, netMode: NetMode.FULL_CONE };
  const v4 = planPath({ ...own, family: 'IPv4' }, peer);
  t.same(v4.candidates.map((c) => c.addr.ip), ['10.1.0.3', '::ffff:10.1.0.4', '198.51.100.30'], 'the IPv6 LAN address is skipped; an IPv4-mapped one is IPv4');
  t.equal(v4.problem, null);
  t.same(planPath({ ...own, family: 'IPv6' }, peer).candidates.length, 4, 'a dual-stack IPv6 socket keeps every candidate');
  t.same(planPath(own, peer).candidates.length, 4, 'unknown family: every candidate');
  const only6 = planPath({ ...own, observed: { ip: '2001:db8::1', port: 5000 }, family: 'IPv4' }, { ...peer, addr: { ip: '2001:db8::1', port: 4000 }, localAddrs: [{ ip: '2001:db8::3', port: 4000 }] });
  t.same(only6.candidates, [], 'nothing the socket can reach');
  t.match(only6.problem, /socket's family \(IPv4\)/, 'refused at once instead of punching nothing for 10 s');
});

// ---------------------------------------------------------------------------------------------
// Two channels on a simulated network.

interface Wire {
  a: Channel;
  b: Channel;
  /** Every datagram sent, as [from, to, bytes]. */
  log: { from: Address; to: Address; bytes: Buffer }[];
  /** Return false to drop. */
  filter: (from: Address, to: Address, bytes: Buffer) => boolean;
  /** Deliver bytes to the channel listening at `to` as if from `from`. */
  inject: (from: Address, to: Address, bytes: Buffer) => void;
  /** Resolves once every datagram sent so far (and every answer to it) has been delivered or dropped. */
  settle: () => Promise<void>;
  /** Log lines of both ends, as "level msg". */
  logs: string[];
}

const A: Address = { ip: '10.0.0.1', port: 1000 };
const B: Address = { ip: '10.0.0.2', port: 2000 };

interface PairOptions {
  aCandidates?: { addr: Address; kind: CandidateKind }[];
  bCandidates?: { addr: Address; kind: CandidateKind }[];
  /** Source addresses of each end's datagrams (default A, B). */
  srcA?: Address;
  srcB?: Address;
  /** Addresses delivered to each end (default its source address). */
  listenA?: Address[];
  listenB?: Address[];
  /** What the network does to a datagram: the (from, to) it arrives with, or null (dropped). */
  route?: (from: Address, to: Address) => { from: Address; to: Address } | null;
}

function pair(t: Test, o: PairOptions = {}): Wire {
  const id = randomBytes(16);
  const key = randomBytes(32);
  const aId = randomBytes(16);
  const bId = randomBytes(16);
  const timing = { punchTimeoutMs: 3000, keepaliveMs: 60_000, upgradeWindowMs: 300 };
  const w = { log: [], logs: [], filter: () => true } as unknown as Wire;
  const log = (level: string, msg: string): void => void w.logs.push(`${level} ${msg}`);
  const at = new Map<string, Channel>();
  // Datagrams on their way (delivered on the next turn of the event loop): settle() waits for
  // none to be left, rather than for a fixed time.
  let inFlight = 0;
  const deliver = (from: Address, to: Address, bytes: Buffer): void => {
    w.log.push({ from, to, bytes });
    if (!w.filter(from, to, bytes)) return;
    const r = o.route ? o.route(from, to) : { from, to };
    if (!r) return;
    inFlight++;
    setImmediate(() => {
      inFlight--;
      w.inject(r.from, r.to, bytes);
    });
  };
  w.inject = (from, to, bytes) => {
    const ch = at.get(formatAddress(to));
    const d = decodeDatagram(bytes);
    if (ch && d.ok && Buffer.from(d.msg.auth!.sid).equals(ch.id)) ch.receive(d.msg, bytes, from);
  };
  w.a = new Channel({ id, role: 'initiator', peer: bId, names: ['bob'], channelKey: key, candidates: o.aCandidates ?? [{ addr: B, kind: 'public' }], send: (to, bytes) => deliver(o.srcA ?? A, to, bytes), timing, log });
  w.b = new Channel({
    id, role: 'responder', peer: aId, names: [], channelKey: key, candidates: o.bCandidates ?? [{ addr: A, kind: 'public' }],
    send: (to, bytes) => deliver(o.srcB ?? B, to, bytes), timing, log,
  });
  for (const x of o.listenA ?? [o.srcA ?? A]) at.set(formatAddress(x), w.a);
  for (const x of o.listenB ?? [o.srcB ?? B]) at.set(formatAddress(x), w.b);
  w.settle = async () => {
    do await new Promise((r) => setImmediate(r));
    while (inFlight > 0);
  };
  t.teardown(() => {
    w.a.close('test over');
    w.b.close('test over');
  });
  w.a.start();
  w.b.start();
  return w;
}

/** Resolves when the channel is on a path of this kind (now or after a 'path' event). */
function onPath(ch: Channel, kind: CandidateKind): Promise<void> {
  if (ch.path?.kind === kind) return Promise.resolve();
  return new Promise((resolve) => {
    const check = (): void => {
      if (ch.path?.kind !== kind) return;
      ch.off('path', check);
      resolve();
    };
    ch.on('path', check);
  });
}

t.test('two channels open, exchange data in order, ping, and close together', async (t) => {
  const w = pair(t);
  const [pa, pb] = await Promise.all([w.a.waitOpen(), w.b.waitOpen()]);
  t.equal(pa.addr, formatAddress(B));
  t.equal(pb.addr, formatAddress(A));
  const got: string[] = [];
  w.b.on('message', (m) => got.push(m.toString()));
  for (let i = 1; i <= 20; i++) w.a.send(`message ${i}`);
  await w.settle();
  t.same(got, Array.from({ length: 20 }, (_, i) => `message ${i + 1}`), 'all, in order');
  const back: string[] = [];
  w.a.on('message', (m) => back.push(m.toString()));
  w.b.send('hello, initiator');
  await w.settle();
  t.same(back, ['hello, initiator']);
  const rtt = await w.a.ping(1000);
  t.ok(rtt !== null && rtt >= 0, `ping answered (${rtt} ms)`);
  t.equal(w.b.stats.received, 20, 'pings are not delivered as messages');
  const data = w.log.filter((x) => decodeDatagram(x.bytes).ok && (decodeDatagram(x.bytes) as { msg: { name: string } }).msg.name === 'DATA');
  t.notOk(data.some((x) => x.bytes.includes(Buffer.from('message 1'))), 'no plaintext on the wire');
  const closed = new Promise<string>((r) => w.b.once('close', r));
  w.a.close();
  t.equal(await closed, 'peer closed the channel');
  t.equal(w.b.state, 'closed');
  t.throws(() => w.a.send('late'), { code: 'CHANNEL_NOT_OPEN' });
});

t.test('replayed, tampered and third-party datagrams are refused; nothing reaches the application', async (t) => {
  const w = pair(t);
  await Promise.all([w.a.waitOpen(), w.b.waitOpen()]);
  const got: string[] = [];
  w.b.on('message', (m) => got.push(m.toString()));
  w.a.send('genuine');
  await w.settle();
  const captured = w.log.filter((x) => (decodeDatagram(x.bytes) as { ok: boolean; msg?: { name: string } }).msg?.name === 'DATA').at(-1)!;
  const before = w.b.stats.refused;
  w.inject(captured.from, captured.to, captured.bytes);
  w.inject({ ip: '10.9.9.9', port: 9 }, B, captured.bytes);
  const tampered = Buffer.from(captured.bytes);
  const dec = decodeDatagram(captured.bytes);
  const ct = dec.ok && dec.msg.name === 'DATA' ? Buffer.from(dec.msg.body.payload) : Buffer.alloc(0);
  tampered[captured.bytes.indexOf(ct) + 2]! ^= 0x01; // a bit of the ciphertext
  w.inject(captured.from, B, tampered);
  // A third party who saw the channel ID (it is on the wire) but has no key.
  const forged = sealDatagram(derivePunchKeys(randomBytes(32), w.a.id).initiatorToResponder,
    encodeDatagram('DATA', randomBytes(8), { n: 99, payload: Buffer.from('evil') }, { sid: w.a.id, seq: 1_000_000 }));
  w.inject({ ip: '10.9.9.9', port: 9 }, B, forged);
  const punch = sealDatagram(derivePunchKeys(randomBytes(32), w.a.id).initiatorToResponder,
    encodeDatagram('PUNCH', randomBytes(8), { eph: generatePair('x25519').public }, { sid: w.a.id, seq: 1_000_001 }));
  w.inject({ ip: '10.9.9.9', port: 9 }, B, punch);
  await w.settle();
  t.same(got, ['genuine'], 'only the genuine message was delivered, once');
  t.equal(w.b.stats.refused - before, 5, 'replay (twice), tampered, forged DATA and forged PUNCH refused');
  t.equal(w.b.path!.addr, formatAddress(A), 'the path did not move to the third party');
  w.a.send('still fine');
  await w.settle();
  t.same(got, ['genuine', 'still fine']);
});

t.test('loss is flagged, late datagrams dropped: delivery stays in order', async (t) => {
  const w = pair(t);
  await Promise.all([w.a.waitOpen(), w.b.waitOpen()]);
  const got: number[] = [];
  const losses: number[] = [];
  w.b.on('message', (_m, info) => got.push(info.n));
  w.b.on('loss', (l) => losses.push(l.missing));
  let held: Buffer | undefined;
  let n = 0;
  w.filter = (_f, _to, bytes) => {
    const d = decodeDatagram(bytes);
    if (!d.ok || d.msg.name !== 'DATA') return true;
    n++;
    if (n === 3) {
      held = bytes;
      return false; // message 3 is late
    }
    return n !== 5 && n !== 6; // messages 5 and 6 are lost
  };
  for (let i = 1; i <= 8; i++) w.a.send(`m${i}`);
  await w.settle();
  w.inject(A, B, held!);
  await w.settle();
  t.same(got, [1, 2, 4, 7, 8], 'in order, gaps skipped');
  t.same(losses, [1, 2], 'gaps reported as they appear');
  t.equal(w.b.stats.lost, 3);
  t.equal(w.b.stats.late, 1, 'message 3 came after 4: dropped, not delivered out of order');
  t.equal(got.length + w.b.stats.lost, 8, 'every message is delivered or counted lost');
});

t.test('behind one NAT: the LAN path wins over the hairpinned public one', async (t) => {
  // Both on 192.168.7.0/24 behind one NAT (public 198.51.100.9) that hairpins: a datagram to
  // the other's public address arrives from the sender's public address.
  const lanA: Address = { ip: '192.168.7.1', port: 1000 };
  const lanB: Address = { ip: '192.168.7.2', port: 2000 };
  const pubA: Address = { ip: '198.51.100.9', port: 1000 };
  const pubB: Address = { ip: '198.51.100.9', port: 2000 };
  const lan = (x: Address): boolean => x.ip.startsWith('192.168.7.');
  const w = pair(t, {
    srcA: lanA, srcB: lanB, listenA: [lanA, pubA], listenB: [lanB, pubB],
    aCandidates: [{ addr: pubB, kind: 'public' }, { addr: lanB, kind: 'lan' }],
    bCandidates: [{ addr: pubA, kind: 'public' }, { addr: lanA, kind: 'lan' }],
    route: (from, to) => (lan(to) ? { from, to } : { from: from === lanA ? pubA : pubB, to }),
  });
  await Promise.all([w.a.waitOpen(), w.b.waitOpen()]);
  // Whichever path opened first, each end moves to the LAN path when it answers ('path' event).
  await Promise.all([onPath(w.a, 'lan'), onPath(w.b, 'lan')]);
  t.equal(w.a.path!.kind, 'lan', 'initiator on the LAN path');
  t.equal(w.a.path!.addr, formatAddress(lanB));
  t.equal(w.b.path!.addr, formatAddress(lanA), 'responder on the LAN path');
});

t.test('a peer-reflexive candidate is learned (the peer is seen from another port)', async (t) => {
  // B's NAT gives it a new port toward A: A sees its datagrams from an address it was not told.
  const mapped: Address = { ip: '10.0.0.2', port: 2999 };
  const w2 = pair(t, { listenB: [B, mapped], route: (from, to) => ({ from: from === B ? mapped : from, to }) });
  const [pa] = await Promise.all([w2.a.waitOpen(), w2.b.waitOpen()]);
  t.ok(pa.addr === formatAddress(mapped) || w2.a.path!.addr === formatAddress(mapped), 'path to the port B is really seen from');
  t.equal(w2.a.path!.kind, 'peer-reflexive');
});

t.test('no answer: punching gives up with the reason', async (t) => {
  const w = pair(t);
  w.filter = () => false;
  const err = await w.a.waitOpen().then(() => null, (e: Error & { code?: string }) => e);
  t.equal(err?.code, 'PUNCH_FAILED');
  t.match(err?.message, /no answer from the peer at 1 candidate address within 3 s/);
  t.equal(w.a.state, 'failed');
  // Return routability (issue 15): a candidate that never answered gets at most 2 PUNCHes, not the
  // whole schedule (which an introduction naming a victim would aim at the victim).
  t.ok(w.a.stats.punchesSent >= 1 && w.a.stats.punchesSent <= 2, `an unanswered candidate punched at most twice (${w.a.stats.punchesSent} PUNCHes in 3 s)`);
});

t.test('a DATA opens the end still punching, so a listener can answer it', async (t) => {
  // The responder never hears a PUNCH_ACK: it is still 'punching' when the initiator (open)
  // sends, yet it has the data keys (from the initiator's PUNCH). The authenticated DATA opens it
  // on the address it came from, before the message is delivered, so the listener's answer goes
  // out. (Before, send() threw CHANNEL_NOT_OPEN inside the datagram handler: the CI failure.)
  const w = pair(t);
  w.filter = (_f, to, bytes) => {
    const d = decodeDatagram(bytes);
    return !(to === B && d.ok && d.msg.name === 'PUNCH_ACK');
  };
  await w.a.waitOpen();
  t.equal(w.b.state, 'punching', 'the responder is not open yet');
  const states: string[] = [];
  w.b.on('message', (m) => {
    states.push(w.b.state);
    w.b.send(`re: ${m.toString()}`);
  });
  const answers: string[] = [];
  w.a.on('message', (m) => answers.push(m.toString()));
  w.a.send('one');
  await w.settle();
  t.same(states, ['open'], 'open when the message is delivered');
  t.equal(w.b.path?.addr, formatAddress(A), 'on the address the DATA came from');
  t.equal(w.b.path?.rttMs, null, 'no round trip measured');
  t.same(answers, ['re: one']);
});

t.test('a listener that throws, or sends on a closing channel, cannot break the channel or its caller', async (t) => {
  // Listeners run inside the datagram handler (the socket's 'message' event in an agent): what
  // one throws is caught, logged and handed to the 'error' listeners; the next listeners run
  // and the channel goes on.
  const w = pair(t);
  await Promise.all([w.a.waitOpen(), w.b.waitOpen()]);
  const got: string[] = [];
  const errors: string[] = [];
  w.b.on('message', (m) => {
    if (m.toString() === 'throw') throw new Error('listener bug');
  });
  w.b.on('message', (m) => got.push(m.toString()));
  w.b.on('error', (e) => errors.push(e.message));
  w.a.send('throw');
  w.a.send('fine');
  await w.settle();
  t.same(got, ['throw', 'fine'], 'the next listener still ran');
  t.same(errors, ['listener bug'], "reported on 'error'");
  t.ok(w.logs.some((l) => l === 'error an event listener threw; ignored'), 'and logged');

  // A message that closes the channel in one listener while the next one answers: that send
  // throws CHANNEL_NOT_OPEN; without an 'error' listener it is only logged.
  w.b.removeAllListeners('error');
  w.b.on('message', (m) => {
    if (m.toString() === 'bye') w.b.close('done');
  });
  w.b.on('message', (m) => void w.b.send(`late: ${m.toString()}`));
  const closed = new Promise<string>((r) => w.a.once('close', r));
  w.a.send('bye');
  t.equal(await closed, 'peer closed the channel', 'closed as asked; the late send only failed');
  t.equal(w.b.state, 'closed');
  t.equal(w.b.listenerErrors, 2, 'two exceptions caught');
  t.equal(w.b.stats.received, 3, 'every message was delivered');
});

t.test('a re-introduction while still punching stays within MAX_CANDIDATES', async (t) => {
  // The peer's re-introductions (INTRO with resumes) may name addresses: however many come
  // while the channel is not open yet, it probes at most MAX_CANDIDATES (return routability).
  const w = pair(t, { route: () => null });
  const many = Array.from({ length: 3 * MAX_CANDIDATES }, (_, i) => ({ addr: { ip: '192.0.2.1', port: 3000 + i }, kind: 'public' as const }));
  w.a.reestablish(many.slice(0, MAX_CANDIDATES), 'the peer moved');
  w.a.reestablish(many.slice(MAX_CANDIDATES), 'the peer moved again');
  t.equal(w.a.state, 'punching', 'still punching');
  t.equal(w.a.summary().candidates.length, MAX_CANDIDATES, `at most ${MAX_CANDIDATES} candidates`);
});
