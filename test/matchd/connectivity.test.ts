// The connectivity matrix of connectivity.ts, cell by cell, and host choice.
import t from 'tap';
import { canConnectDirect, chooseHost, fullyConnected, matrixRows } from '../../src/matchd/connectivity.js';
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
