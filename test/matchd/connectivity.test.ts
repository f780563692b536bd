// The connectivity matrix of connectivity.ts, cell by cell, and host choice.
import t from 'tap';
import { canConnectDirect, canConnectRelayed, canUseRelay, chooseHost, chooseHostByPaths, fullyConnected, MatchPath, matrixRows, pathBetween, RelayVia } from '../../src/matchd/connectivity.js';
import { NetMode } from '../../src/wire/constants.js';

const { OPEN: O, FULL_CONE: F, RESTRICTED: R, PORT_RESTRICTED: P, SYMMETRIC: S, UDP_BLOCKED: B, UNKNOWN: U } = NetMode;

t.test('matrix', async (t) => {
  // Rows/columns: open, full-cone, restricted, port-restricted, symmetric, udp-blocked.
  const expected = [
    [1, 1, 1, 1, 1, 0],
    [1, 1, 1, 1, 1, 0],
    [1, 1, 1, 1, 1, 0],
    [1, 1, 1, 1, 0, 0],
    [1, 1, 1, 0, 0, 0],
    [0, 0, 0, 0, 0, 0],
  ];
  const modes = [O, F, R, P, S, B];
  for (let i = 0; i < 6; i++) {
    for (let j = 0; j < 6; j++) {
      t.equal(canConnectDirect(modes[i]!, modes[j]!), expected[i]![j] === 1, `${modes[i]} <-> ${modes[j]}`);
    }
  }
  t.equal(matrixRows().length, 6);
  t.notOk(canConnectDirect(U, S), 'unknown counts as symmetric');
  t.notOk(canConnectDirect(U, U));
  t.ok(canConnectDirect(U, R));
});

t.test('host choice', async (t) => {
  t.equal(chooseHost([S, S, O]), 2, 'only the open member reaches both symmetric ones');
  t.equal(chooseHost([S, S]), -1, 'cannot be connected');
  t.equal(chooseHost([P, S, R]), 2, 'restricted reaches port-restricted and symmetric');
  t.equal(chooseHost([P, P, F, O]), 3, 'most reachable wins among valid hosts');
  t.equal(chooseHost([R, R]), 0, 'ties: earliest');
  t.ok(fullyConnected([O, F, R, P]));
  t.notOk(fullyConnected([P, S]));
});

t.test('relays: who can use one, which pairs connect through one, the path', async (t) => {
  const { UDP, TCP, TLS } = RelayVia;
  t.notOk(canUseRelay(S, 0), 'no relay declared');
  t.ok(canUseRelay(S, UDP));
  t.notOk(canUseRelay(B, UDP), 'udp-blocked: not over UDP');
  t.ok(canUseRelay(B, TCP));
  t.ok(canUseRelay(B, TLS));
  t.ok(canConnectRelayed({ netMode: S, relay: UDP }, { netMode: S }), 'one allocation is enough when the other sends UDP');
  t.notOk(canConnectRelayed({ netMode: S }, { netMode: S }), 'neither has a relay');
  t.notOk(canConnectRelayed({ netMode: B, relay: TCP }, { netMode: B }), 'the other blocks UDP and has no relay');
  t.ok(canConnectRelayed({ netMode: B, relay: TCP }, { netMode: B, relay: TLS }), 'relay to relay');
  t.equal(pathBetween({ netMode: P }, { netMode: R }, true), MatchPath.LAN, 'same observed IP, direct: LAN');
  t.equal(pathBetween({ netMode: S }, { netMode: S }, true), 0, 'a shared IP (carrier-grade NAT) adds no path');
  t.equal(pathBetween({ netMode: B, relay: TCP }, { netMode: O }, true), MatchPath.RELAY, 'udp-blocked is never on the LAN');
  t.equal(pathBetween({ netMode: P, relay: UDP }, { netMode: R }), MatchPath.DIRECT, 'direct when the matrix allows it, relay or not');
  t.equal(pathBetween({ netMode: P, relay: UDP }, { netMode: S }), MatchPath.RELAY);
  t.equal(pathBetween({ netMode: P }, { netMode: S }), 0);
});

t.test('relays: host choice by paths', async (t) => {
  const by = (ms: { netMode: number; relay?: number }[]) => chooseHostByPaths(ms, (i, j) => pathBetween(ms[i]!, ms[j]!));
  t.same(by([{ netMode: S }, { netMode: S }, { netMode: O }]), { host: 2, paths: [MatchPath.DIRECT, MatchPath.DIRECT, 0] }, 'as chooseHost without relays');
  t.equal(by([{ netMode: S }, { netMode: S }]), null);
  t.same(by([{ netMode: S, relay: 1 }, { netMode: S, relay: 1 }]), { host: 0, paths: [0, MatchPath.RELAY] }, 'both relayed-capable: earliest');
  // b (udp-blocked, TCP relay) is relayed to any host; o reaches the others directly and is the
  // most reachable.
  const ms = [{ netMode: B, relay: 2 }, { netMode: S }, { netMode: R }, { netMode: O }];
  t.same(by(ms), { host: 3, paths: [MatchPath.RELAY, MatchPath.DIRECT, MatchPath.DIRECT, 0] });
  t.equal(by(ms.slice(0, 3))!.host, 2, 'without o: r (b relayed, s direct)');
  // Nobody reaches everyone directly: the host with the fewest relayed members.
  const q = [{ netMode: S, relay: 1 }, { netMode: P, relay: 1 }, { netMode: P, relay: 1 }, { netMode: S, relay: 1 }];
  // Host p1: s1, s2 relayed, p2 direct (2). Host s1: p1, p2, s2 relayed (3). Fewest: p1.
  t.same(by(q), { host: 1, paths: [MatchPath.RELAY, 0, MatchPath.DIRECT, MatchPath.RELAY] });
});
