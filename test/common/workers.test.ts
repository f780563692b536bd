// The one channel between a --workers primary and its workers (src/common/workers.ts): every
// message kind in one union, checked by one table on receipt, dispatched by kind; batches of one
// event-loop turn. The daemons' use of it is tested with real processes in test/authd/workers.test.ts,
// test/scale/instances.test.ts and test/net/routability.test.ts.
import t from 'tap';
import { EventEmitter } from 'node:events';
import { decodeWorkerMessage, WorkerChannel } from '../../src/common/workers.js';
import { nextTurns, workerPipe as pipe } from '../helpers/worker-pipe.js';

t.test('messages reach the listeners of their kind only', async (t) => {
  const { a, b } = pipe();
  const got: unknown[] = [];
  b.on('addr-validated', (m) => got.push(['addr', ...m.b.flat()]));
  const off = b.on('revoke-ack', (m) => got.push(['ack', m.rid]));
  t.ok(a.send({ k: 'addr-validated', b: [['ab', '192.0.2.1|1']] }));
  t.ok(a.send({ k: 'revoke-ack', rid: '01' }));
  await nextTurns();
  t.same(got, [['addr', 'ab', '192.0.2.1|1'], ['ack', '01']]);
  off();
  a.send({ k: 'revoke-ack', rid: '02' });
  await nextTurns();
  t.equal(got.length, 2, 'a listener that stopped hears nothing more');
});

t.test('what is not one of our messages is ignored', async (t) => {
  t.equal(decodeWorkerMessage({ cmd: 'NODE_CLUSTER', act: 'online' }), undefined, "node's own cluster messages");
  t.equal(decodeWorkerMessage({ k: 'scrape', id: '1' }), undefined, 'a known kind of the wrong shape');
  t.equal(decodeWorkerMessage({ k: 'toString' }), undefined, 'no kind from the prototype');
  t.equal(decodeWorkerMessage({ k: 'addr-validated', sid: 'ab', addr: '192.0.2.1|1' }), undefined, 'a validated address outside a batch (the message of before)');
  t.equal(decodeWorkerMessage({ k: 'addr-validated', b: [['ab', '192.0.2.1|1'], ['ab']] }), undefined, 'a batch with one item of the wrong shape');
  t.equal(decodeWorkerMessage({ k: 'addr-validated', b: [['ab', 7]] }), undefined, 'an address that is not a string');
  t.same(decodeWorkerMessage({ k: 'addr-validated', b: [] }), { k: 'addr-validated', b: [] });
  t.equal(decodeWorkerMessage(null), undefined);
  t.same(decodeWorkerMessage({ k: 'metrics', id: 3, text: 'x 1\n', worker: 0 }), { k: 'metrics', id: 3, text: 'x 1\n', worker: 0 });
});

t.test('batch: the items of one event-loop turn leave in one message', async (t) => {
  const { a, b, sent } = pipe();
  const batches: number[] = [];
  b.on('gate-ask', (m) => batches.push(m.b.length));
  const unsent = (): void => {
    t.fail('nothing unsent on an open channel');
  };
  for (let i = 1; i <= 3; i++) a.batch('gate-ask', [i, 'DEV', '00', 0, '01', '192.0.2.1:1'], unsent);
  t.equal(sent.length, 0, 'not sent within the turn');
  await new Promise((r) => setImmediate(r));
  a.batch('gate-ask', [4, 'DEV', '00', 0, '01', '192.0.2.1:1'], unsent);
  await nextTurns();
  t.same(batches, [3, 1], 'one message per turn');
});

t.test('a closed channel: send is false and a batch comes back unsent', async (t) => {
  const ch = new WorkerChannel(Object.assign(new EventEmitter(), { connected: false, send: (): boolean => t.fail('sent') }));
  t.notOk(ch.send({ k: 'scrape', id: 1 }));
  const back = await new Promise<unknown[]>((resolve) => ch.batch('gate-ask', [7, 'DEV', '00', 0, '01', 'x'], resolve));
  t.same(back.map((q) => (q as unknown[])[0]), [7]);
  const throwing = new WorkerChannel(Object.assign(new EventEmitter(), {
    send: (): boolean => {
      throw new Error('channel closed');
    },
  }));
  t.notOk(throwing.send({ k: 'scrape', id: 1 }), 'a send that throws is reported, not thrown');
});
