// The lookup of our UDP sockets (src/net/lookup.ts literalLookup): an IP literal answers itself
// as dns.lookup would, without node:dns, whose first load (c-ares) cost an idle agent 0.3 MiB of
// RSS (issue 20); a name still resolves, through node:dns loaded then.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { literalLookup, serverLookup } from '../../src/net/lookup.js';
import { bindUdp } from '../../src/net/server.js';
import { root } from '../helpers/daemon.js';

const lookup = (host: string, options: unknown): Promise<[string, number]> =>
  new Promise((resolve, reject) => literalLookup(host, options, (err, address, family) => (err ? reject(err) : resolve([address, family]))));

t.test('IP literals answer themselves with their family; names go to node:dns', async (t) => {
  t.same(await lookup('127.0.0.1', 4), ['127.0.0.1', 4]);
  t.same(await lookup('0.0.0.0', 4), ['0.0.0.0', 4]);
  t.same(await lookup('::1', 6), ['::1', 6]);
  t.same(await lookup('::ffff:10.0.0.1', 6), ['::ffff:10.0.0.1', 6], 'a v4-mapped literal stays IPv6 (as dns.lookup keeps it)');
  const [address, family] = await lookup('localhost', 4);
  t.same([address, family], ['127.0.0.1', 4], 'a name resolves through dns.lookup');
  const failed = await lookup('no-such-host.invalid', 4).then(() => null, (err: NodeJS.ErrnoException) => err.syscall);
  t.equal(failed, 'getaddrinfo', 'a name that does not resolve fails as dns.lookup fails');
});

t.test('a UdpClient sending to an IP literal does not load node:dns', async (t) => {
  // A fresh process: this one has loaded node:dns already (the test above, tap).
  const script = `
    import dgram from 'node:dgram';
    import { literalLookup } from ${JSON.stringify(path.join(root, 'src/net/lookup.ts'))};
    import { UdpClient } from ${JSON.stringify(path.join(root, 'src/net/client.ts'))};
    const server = dgram.createSocket({ type: 'udp4', lookup: literalLookup });
    await new Promise((r) => server.bind(0, '127.0.0.1', r));
    const got = new Promise((r) => server.once('message', r));
    const client = await UdpClient.open({ bind: { host: '127.0.0.1', port: 0 } });
    client.send({ ip: '127.0.0.1', port: server.address().port }, Buffer.from('x'));
    await got;
    process.stdout.write(JSON.stringify(process.moduleLoadList.filter((m) => /^NativeModule dns(\\/|$)|^Internal Binding cares_wrap$/.test(m))));
    client.close(); server.close();`;
  const child = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: root, encoding: 'utf8', timeout: 120_000 });
  t.equal(child.status, 0, `child: ${child.stderr}`);
  t.same(JSON.parse(child.stdout || 'null'), [], 'no node:dns module nor c-ares binding loaded');
});

t.test('serverLookup: an IPv4 literal answers within the call once bound, everything else as literalLookup', async (t) => {
  const { lookup, bound } = serverLookup();
  /** A lookup, and whether it answered before the call returned. */
  const lookupNow = (host: string, options: unknown): { within: boolean; got: Promise<[string, number]> } => {
    let within = false;
    const got = new Promise<[string, number]>((resolve, reject) => lookup(host, options, (err, address, family) => {
      within = true;
      if (err) reject(err);
      else resolve([address, family]);
    }));
    return { within, got };
  };
  const before = lookupNow('127.0.0.1', 4);
  t.equal(before.within, false, 'while binding: on a later tick (bind() must not emit listening before it returns)');
  t.same(await before.got, ['127.0.0.1', 4]);
  bound();
  const after = lookupNow('10.1.2.3', 4);
  t.equal(after.within, true, 'bound: within the call');
  t.same(await after.got, ['10.1.2.3', 4]);
  const six = lookupNow('::1', 6);
  t.equal(six.within, false, 'IPv6: through literalLookup');
  t.same(await six.got, ['::1', 6]);
  t.same(await lookupNow('localhost', 4).got, ['127.0.0.1', 4], 'a name still resolves');
  const withOptions = lookupNow('127.0.0.1', { family: 4 });
  t.equal(withOptions.within, false, 'an options object: through literalLookup (dns.lookup answers it)');
  t.same(await withOptions.got, ['127.0.0.1', 4]);
});

t.test('bindUdp: a bound socket sends to IPv4 literals (the lookup answering within the call)', async (t) => {
  const server = await bindUdp({ host: '127.0.0.1', port: 0 });
  const peer = await bindUdp({ host: '127.0.0.1', port: 0 });
  t.teardown(() => {
    server.close();
    peer.close();
  });
  server.on('message', (m, rinfo) => server.send(m, rinfo.port, rinfo.address));
  const echoed = new Promise<Buffer>((resolve) => peer.once('message', resolve));
  let sent: Error | null | undefined;
  peer.send(Buffer.from('ping'), server.address().port, '127.0.0.1', (err) => {
    sent = err;
  });
  t.same(await echoed, Buffer.from('ping'));
  t.equal(sent, null, 'the send callback reported no error');
});
