// The relayed path of a Channel (src/agent/channel.ts), in process: two channels on a simulated
// network where the relay is slower than the direct path, so that a message sent directly
// after the move could overtake one still in the relay. The real relays are in relay.test.ts.
//
// - the responder punches the initiator's relayed address; the initiator learns the peer's
//   address as the relay reports it and answers through the relay: both open on the relay;
// - nothing goes direct while the direct path is blocked; once it opens, the background
//   punching finds it, both move, and a stream sent across the move arrives complete, once, in
//   order (the fence), with the upgrade counted;
// - forced relaying refuses what does not come through the relay;
// - a relayed address that does not answer gets at most MAX_UNANSWERED_RELAY_PUNCHES.
import { randomBytes } from 'node:crypto';
import t from 'tap';
import type { Test } from 'tap';
import type { CandidateKind, Via } from '../../src/agent/channel.js';
import { Channel, MAX_UNANSWERED_RELAY_PUNCHES } from '../../src/agent/channel.js';
import type { Address } from '../../src/wire/addr.js';
import { formatAddress } from '../../src/wire/addr.js';
import { decodeDatagram } from '../../src/wire/envelope.js';

const A: Address = { ip: '198.51.100.11', port: 1000 };
const B: Address = { ip: '198.51.100.12', port: 2000 };
/** The initiator's relayed address. */
const R: Address = { ip: '198.51.100.20', port: 50000 };
const same = (x: Address, y: Address): boolean => formatAddress(x) === formatAddress(y);

interface Net {
  a: Channel;
  b: Channel;
  /** Whether the NATs let direct datagrams through. */
  direct: boolean;
  /** Whether the relay forwards. */
  relayUp: boolean;
  /** Datagrams sent by b to R. */
  toRelay: number;
}

function net(t: Test, o: { relayOnlyA?: boolean; direct?: boolean; bCandidates?: { addr: Address; kind: CandidateKind }[] } = {}): Net {
  const id = randomBytes(16);
  const key = randomBytes(32);
  const timing = { punchTimeoutMs: 8000, keepaliveMs: 60_000, upgradeWindowMs: 100, relayAfterMs: 0, backgroundPunchMs: 50, fenceMs: 5000 };
  const n = { direct: o.direct ?? false, relayUp: true, toRelay: 0 } as Net;
  const to = (ch: () => Channel, from: Address, via: Via, delayMs: number, bytes: Buffer): void => {
    const d = decodeDatagram(bytes);
    if (!d.ok) throw new Error('undecodable datagram on the simulated wire');
    const go = (): void => ch().receive(d.msg, bytes, from, via);
    if (delayMs) setTimeout(go, delayMs);
    else setImmediate(go);
  };
  n.a = new Channel({
    id, role: 'initiator', peer: randomBytes(16), names: [], channelKey: key, candidates: o.relayOnlyA ? [] : [{ addr: B, kind: 'public' }],
    directPossible: false, relayOnly: o.relayOnlyA ?? false, timing,
    send: (dst, bytes, via) => {
      // Through the relay: out of R, to the address the relay saw the peer at (B).
      if (via === 'relay') {
        if (n.relayUp && same(dst, B)) to(() => n.b, R, 'socket', 20, bytes);
      } else if (n.direct && same(dst, B)) to(() => n.b, A, 'socket', 0, bytes);
    },
  });
  n.b = new Channel({
    id, role: 'responder', peer: randomBytes(16), names: [], channelKey: key,
    candidates: o.bCandidates ?? [{ addr: A, kind: 'public' }, { addr: R, kind: 'relay' }], directPossible: false, timing,
    send: (dst, bytes) => {
      if (same(dst, R)) {
        n.toRelay++;
        if (n.relayUp) to(() => n.a, B, 'relay', 20, bytes);
      } else if (n.direct && same(dst, A)) to(() => n.a, B, 'socket', 0, bytes);
    },
  });
  t.teardown(() => {
    n.a.close('test over');
    n.b.close('test over');
  });
  n.a.start();
  n.b.start();
  return n;
}

const pathIs = (ch: Channel, kind: CandidateKind): Promise<void> =>
  new Promise((resolve) => {
    const check = (): void => {
      if (ch.path?.kind !== kind) return;
      ch.off('path', check);
      resolve();
    };
    ch.on('path', check);
    check();
  });

t.test('opens on the relay, moves to direct when it opens, and the stream across the move is complete and in order', async (t) => {
  const n = net(t);
  const [pa, pb] = await Promise.all([n.a.waitOpen(), n.b.waitOpen()]);
  t.equal(pa.kind, 'relay', 'the initiator is on the relay');
  t.equal(pa.addr, formatAddress(B), "to the peer's address as the relay reports it");
  t.equal(pb.kind, 'relay');
  t.equal(pb.addr, formatAddress(R), "the responder sends to the initiator's relayed address");
  const got: string[] = [];
  const back: string[] = [];
  let lost = 0;
  n.b.on('message', (m) => got.push(m.toString()));
  n.a.on('message', (m) => back.push(m.toString()));
  n.b.on('loss', (l) => (lost += l.missing));
  n.a.on('loss', (l) => (lost += l.missing));
  for (let i = 1; i <= 20; i++) {
    n.a.send(`m${i}`);
    n.b.send(`r${i}`);
  }
  t.equal(n.a.path?.kind, 'relay', 'still relayed while the direct path is blocked');
  n.direct = true;
  const upgraded = Promise.all([pathIs(n.a, 'public'), pathIs(n.b, 'public')]);
  let i = 20;
  let done = false;
  void upgraded.then(() => (done = true));
  while (!done) {
    i++;
    n.a.send(`m${i}`);
    n.b.send(`r${i}`);
    await new Promise((r) => setTimeout(r, 2));
  }
  for (let k = 0; k < 20; k++) {
    i++;
    n.a.send(`m${i}`);
    n.b.send(`r${i}`);
  }
  const total = i;
  const deadline = Date.now() + 30_000;
  while ((got.length < total || back.length < total) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  t.same(got, Array.from({ length: total }, (_, k) => `m${k + 1}`), `all ${total} messages once, in order, across the move`);
  t.same(back, Array.from({ length: total }, (_, k) => `r${k + 1}`), 'and the other way');
  t.equal(lost, 0, 'no loss reported');
  t.equal(n.a.stats.upgrades, 1, 'one upgrade counted');
  t.equal(n.b.stats.upgrades, 1);
  t.ok(n.a.stats.relayedBytes > 0 && n.b.stats.relayedBytes > 0, 'relayed bytes counted on both ends');
});

t.test('forced relaying: the initiator answers only what comes through its relay', async (t) => {
  const n = net(t, { relayOnlyA: true, direct: true });
  const [pa, pb] = await Promise.all([n.a.waitOpen(), n.b.waitOpen()]);
  t.equal(pa.kind, 'relay');
  t.equal(pb.kind, 'relay', 'the direct PUNCHes of the responder were refused');
  t.ok(n.a.stats.refused > 0, 'refused, not answered');
});

t.test('a relayed address that never answers gets a bounded number of PUNCHes', async (t) => {
  const n = net(t);
  n.relayUp = false;
  await t.rejects(n.b.waitOpen(), { code: 'PUNCH_FAILED' });
  t.equal(n.toRelay, MAX_UNANSWERED_RELAY_PUNCHES, `${MAX_UNANSWERED_RELAY_PUNCHES} PUNCHes to the relayed address`);
});
