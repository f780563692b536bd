// bench/crypto-floor.ts: the crypto floor answers every AUTH_REQUEST with an AUTH_RESPONSE naming
// its request ID (UdpClient takes only a reply with the ID of its request: a wrong one would time
// out), having done the ceiling's three operations for it (the proof it verifies holds, once per
// datagram). No timing asserted.
import t from 'tap';
import { authRequestBuilder, startCryptoFloor } from '../../bench/authd.js';
import { ceilingOperations } from '../../bench/crypto-ceiling.js';
import { UdpClient } from '../../src/net/client.js';
import { newAuthdKey, newDeviceKey } from '../../src/wire/keys.js';

t.test('ceilingOperations: the proof holds, the secret and the signature have their sizes', async (t) => {
  const ops = ceilingOperations();
  t.equal(ops.verify(), true);
  t.equal(ops.x25519().length, 32);
  t.equal(ops.sign().length, 64);
});

t.test('the crypto floor (2 workers) answers each request with its ID and does the work once per datagram', async (t) => {
  const authd = newAuthdKey();
  const device = newDeviceKey('FLOOR-1');
  if (authd.kind !== 'authd' || device.kind !== 'device') throw new Error('key kinds');
  const build = authRequestBuilder(authd, [device]);
  const floor = await startCryptoFloor(2, build(1)[0]!);
  const client = await UdpClient.open({ bind: { host: '127.0.0.1', port: 0 }, policy: { initialTimeoutMs: 2000, maxRetransmit: 2, deadlineMs: 10_000 } });
  t.teardown(async () => {
    await client.close();
    floor.stop();
  });
  const to = { ip: '127.0.0.1', port: floor.port };
  const reqs = build(12);
  const replies = await Promise.all(reqs.map((r) => client.request(to, r.datagram, r.rid)));
  replies.forEach((reply, i) => {
    t.equal(reply.msg.name, 'AUTH_RESPONSE');
    t.same(Buffer.from(reply.msg.rid), reqs[i]!.rid, 'the request ID of its own request');
  });
  // Retransmissions are possible on a loaded machine: at least one verification per request.
  const verified = await floor.verified();
  t.ok(verified >= reqs.length, `${verified} verifications for ${reqs.length} requests`);
  t.ok(verified <= reqs.length * 3, 'no more than one per datagram sent');
});
