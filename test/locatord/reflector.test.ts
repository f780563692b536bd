// The NAT reflector: observed address, change-port and change-address answers from the other
// sockets, never a reply larger than the request, rate limited (REFLECT proves nothing about its
// source, so by one budget shared by all sources: UNPROVEN_BUDGET_FACTOR times the rate and burst).
import t from 'tap';
import dgram from 'node:dgram';
import { Logger } from '../../src/common/log.js';
import { Metrics } from '../../src/common/metrics.js';
import type { Reply } from '../../src/net/client.js';
import { UdpClient } from '../../src/net/client.js';
import { CHANGE_ADDRESS, CHANGE_PORT, Reflector } from '../../src/locatord/reflector.js';
import type { Address } from '../../src/wire/addr.js';
import { bytesToIp } from '../../src/wire/addr.js';
import { decodeDatagram, encodeDatagram } from '../../src/wire/envelope.js';
import { ErrorCode } from '../../src/wire/errors.js';
import { UNPROVEN_BUDGET_FACTOR } from '../../src/net/server.js';
import { startServer } from './fixtures/helpers.js';

function reflect(change: number, padTo = 100): { rid: Buffer; bytes: Buffer } {
  const rid = UdpClient.newRequestId();
  let bytes = encodeDatagram('REFLECT', rid, { change, padding: new Uint8Array(0) });
  bytes = encodeDatagram('REFLECT', rid, { change, padding: new Uint8Array(Math.max(0, padTo - bytes.length)) });
  return { rid, bytes };
}

async function ask(client: UdpClient, to: Address, change: number, padTo = 100): Promise<Reply> {
  const r = reflect(change, padTo);
  return client.request(to, r.bytes, r.rid, { anySource: true, policy: { initialTimeoutMs: 200, maxRetransmit: 1 } });
}

t.test('REFLECT: observed address, from the other port and the other address on request', async (t) => {
  // 127.0.0.2 is on Linux's loopback (127/8) without configuration: the alternate address.
  const { loc } = await startServer(t, { reflector: { port: 0, altPort: 0, altIp: '127.0.0.2' } });
  t.ok(loc.reflectorPort > 0 && loc.reflectorAltPort > 0 && loc.reflectorPort !== loc.reflectorAltPort);
  const client = await UdpClient.open({ bind: { host: '127.0.0.1', port: 0 } });
  t.teardown(() => client.close());
  const primary = { ip: '127.0.0.1', port: loc.reflectorPort };
  const me = { ip: '127.0.0.1', port: client.localPort };

  const plain = await ask(client, primary, 0);
  t.equal(plain.msg.name, 'REFLECT_RESULT');
  if (plain.msg.name !== 'REFLECT_RESULT') return;
  t.same(plain.msg.body.observed, me);
  t.same(plain.msg.body.from, primary);
  t.same(plain.from, primary);
  t.equal(plain.msg.body.otherPort, loc.reflectorAltPort);
  t.equal(bytesToIp(plain.msg.body.otherIp!), '127.0.0.2');

  const port = await ask(client, primary, CHANGE_PORT);
  t.same(port.from, { ip: '127.0.0.1', port: loc.reflectorAltPort }, 'change-port: answered from the alternate port');
  if (port.msg.name === 'REFLECT_RESULT') t.same(port.msg.body.from, port.from);

  const addr = await ask(client, primary, CHANGE_ADDRESS);
  t.same(addr.from, { ip: '127.0.0.2', port: loc.reflectorPort }, 'change-address: from the alternate address');

  const both = await ask(client, primary, CHANGE_ADDRESS | CHANGE_PORT);
  t.same(both.from, { ip: '127.0.0.2', port: loc.reflectorAltPort });

  // Asked on the alternate port, "the other port" is the primary one.
  const fromAlt = await ask(client, { ip: '127.0.0.1', port: loc.reflectorAltPort }, CHANGE_PORT);
  t.same(fromAlt.from, primary);
  if (fromAlt.msg.name === 'REFLECT_RESULT') t.equal(fromAlt.msg.body.otherPort, loc.reflectorPort);
});

t.test('no reply larger than the request, from any socket; change-address without an alternate is refused', async (t) => {
  const { loc } = await startServer(t, { reflector: { port: 0, altPort: 0 } });
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  t.teardown(() => sock.close());
  const got: { msg: Buffer; port: number }[] = [];
  sock.on('message', (msg, rinfo) => got.push({ msg, port: rinfo.port }));
  const primary = loc.reflectorPort;
  const until = (n: number): Promise<void> => new Promise((resolve) => {
    const check = (): void => {
      if (got.length < n) return;
      sock.off('message', check);
      resolve();
    };
    sock.on('message', check);
    check();
  });
  const sizes: number[] = [];
  for (const change of [0, CHANGE_PORT]) {
    for (const padTo of [8, 20, 30]) {
      const small = reflect(change, padTo);
      sizes.push(small.bytes.length);
      sock.send(small.bytes, primary, '127.0.0.1');
    }
  }
  // A sentinel: padded, answered; everything sent before it has been handled by then.
  const sentinel = reflect(0, 100);
  sock.send(sentinel.bytes, primary, '127.0.0.1');
  await until(1);
  await new Promise((r) => setImmediate(r));
  const answers = got.filter((g) => !g.msg.includes(sentinel.rid));
  t.equal(answers.length, 0, `unpadded REFLECTs (${sizes.join(', ')} B) get no answer from either port`);
  t.ok(loc.metrics.get('dropped_total', { reason: 'amplification' }) >= 6, 'dropped as amplification');

  const client = await UdpClient.open({ bind: { host: '127.0.0.1', port: 0 } });
  t.teardown(() => client.close());
  const r = await ask(client, { ip: '127.0.0.1', port: primary }, CHANGE_ADDRESS);
  t.equal(r.msg.name === 'ERROR' ? r.msg.body.code : -1, ErrorCode.BAD_MESSAGE, 'no alternate address configured');
  t.ok(r.raw.length <= 100);
  const ok = await ask(client, { ip: '127.0.0.1', port: primary }, 0);
  if (ok.msg.name === 'REFLECT_RESULT') t.equal(ok.msg.body.otherIp, undefined, 'no otherIp advertised');
});

t.test('rate limited by the shared budget of unproven datagrams', async (t) => {
  const metrics = new Metrics();
  const r = await Reflector.start({ host: '127.0.0.1', port: 0, altPort: 0, ratePerS: 0.01, burst: 3, logger: new Logger({ service: 'reflector', write: () => {} }), metrics });
  t.teardown(() => r.close());
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((res) => sock.bind(0, '127.0.0.1', res));
  t.teardown(() => sock.close());
  const got: Buffer[] = [];
  sock.on('message', (m) => got.push(m));
  const sent = 3 * UNPROVEN_BUDGET_FACTOR + 20;
  for (let i = 0; i < sent; i++) sock.send(reflect(0, 100).bytes, r.port, '127.0.0.1');
  await new Promise<void>((resolve) => {
    const check = (): void => {
      if (metrics.get('datagrams_received_total') >= sent) resolve();
      else setTimeout(check, 5);
    };
    check();
  });
  const results = got.map((m) => decodeDatagram(m)).filter((d) => d.ok && d.msg.name === 'REFLECT_RESULT');
  // The burst (150), plus what refilled meanwhile at 0.5 a second.
  t.ok(results.length < sent, `${results.length} of ${sent} answered`);
  t.ok(results.length >= 3 * UNPROVEN_BUDGET_FACTOR, 'the whole burst is served');
  t.ok(metrics.get('dropped_total', { reason: 'unproven-budget' }) > 0, 'the rest dropped');
});
