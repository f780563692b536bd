// The TURN client against a real coturn (Debian package coturn; CI installs it): allocations,
// permissions, channels and data both ways over UDP, TCP and TLS to the relay; expired and wrong
// credentials; a peer not permitted is dropped by the relay (with a positive control); a peer
// the relay's policy denies; refresh of a short allocation, observed by its transaction.
import t from 'tap';
import dgram from 'node:dgram';
import { randomBytes } from 'node:crypto';
import type { Address } from '../../src/wire/addr.js';
import { defaultLink, TurnClient, TurnErrorCode, type LinkFactory, type TurnClientOptions, type TurnTransport } from '../../src/agent/turn/client.js';
import { mintTurnCredentials } from '../../src/wire/turn-credentials.js';
import { haveCoturn, startCoturn, type Coturn } from './coturn.js';

if (!haveCoturn) {
  t.fail('turnserver (Debian package coturn) is not installed: apt-get install coturn');
  process.exit(1);
}

let relay: Coturn;
const clients: TurnClient[] = [];
const sockets: dgram.Socket[] = [];

t.before(async () => {
  // max-allocate-lifetime keeps allocations short so the refresh test sees one within seconds;
  // 127.0.0.5 stands for an address the operator denies (contrib/coturn denies private ranges).
  relay = await startCoturn({ tls: true, extra: ['max-allocate-lifetime=6', 'denied-peer-ip=127.0.0.5'] });
});
t.teardown(async () => {
  for (const c of clients) await c.close();
  for (const s of sockets) s.close();
  await relay?.stop();
});

const nowSec = (): number => Math.floor(Date.now() / 1000);
const locator = (): string => randomBytes(16).toString('hex');

function client(transport: TurnTransport, over: Partial<TurnClientOptions> = {}): TurnClient {
  const c = new TurnClient({
    server: { host: relay.host, port: transport === 'tls' ? relay.tlsPort! : relay.port, transport, tls: { ca: relay.cert! } },
    credentials: mintTurnCredentials(relay.secret, locator(), nowSec() + 600),
    ...over,
  });
  c.on('error', () => {});
  clients.push(c);
  return c;
}

/** The next 'data' event matching `pred` (a guard timeout only, never an assertion on time). */
function nextData(c: TurnClient, pred: (from: Address, data: Buffer) => boolean = () => true, ms = 10_000): Promise<{ from: Address; data: Buffer; via: string }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      c.off('data', on);
      reject(new Error('no data within the guard timeout'));
    }, ms);
    const on = (from: Address, data: Buffer, via: string): void => {
      if (!pred(from, data)) return;
      clearTimeout(timer);
      c.off('data', on);
      resolve({ from, data: Buffer.from(data), via });
    };
    c.on('data', on);
  });
}

async function udpPeer(ip: string): Promise<dgram.Socket> {
  const s = dgram.createSocket('udp4');
  sockets.push(s);
  await new Promise<void>((resolve) => s.bind(0, ip, () => resolve()));
  return s;
}
const sendUdp = (s: dgram.Socket, data: Buffer, to: Address): Promise<void> =>
  new Promise((resolve, reject) => s.send(data, to.port, to.ip, (e) => (e ? reject(e) : resolve())));

for (const transport of ['udp', 'tcp', 'tls'] as const) {
  t.test(`two clients over ${transport}: permissions, Send/Data indications, then channels, byte for byte both ways`, async (t) => {
    const a = client(transport);
    const b = client(transport);
    const [ra, rb] = await Promise.all([a.allocate(), b.allocate()]);
    t.equal(ra.relayed.ip, '127.0.0.1');
    t.ok(ra.mapped, 'the relay reports the client address it sees');
    await Promise.all([a.permit([rb.relayed]), b.permit([ra.relayed])]);
    t.same(a.permittedIps, ['127.0.0.1'], 'exactly the peer it was told');

    // Before a channel is bound: Send indication out, Data indication in.
    const first = randomBytes(300);
    const got1 = nextData(b);
    t.same(a.send(rb.relayed, first), { ok: true, via: 'indication' });
    const r1 = await got1;
    t.same(r1.from, ra.relayed, 'from A\'s relayed address');
    t.equal(r1.via, 'indication');
    t.ok(r1.data.equals(first), 'indication payload intact');

    const [cha, chb] = await Promise.all([a.bindChannel(rb.relayed), b.bindChannel(ra.relayed)]);
    t.ok(cha >= 0x4000 && chb >= 0x4000, 'channel numbers in range');
    t.equal(a.channelOf(rb.relayed), cha);
    for (let i = 0; i < 20; i++) {
      // Sizes cover padding (n % 4 = 0..3), a 1-byte and a near-MTU datagram.
      const size = i === 0 ? 1 : i === 1 ? 1400 : 1 + ((i * 37) % 600);
      const ping = randomBytes(size);
      const atB = nextData(b);
      const sent = a.send(rb.relayed, ping);
      if (!sent.ok || sent.via !== 'channel') t.fail(`ping ${i} not sent on the channel`);
      const p = await atB;
      if (!p.data.equals(ping) || p.via !== 'channel') t.fail(`ping ${i} differs (${p.via})`);
      const pong = Buffer.concat([Buffer.from('pong'), randomBytes(size)]);
      const atA = nextData(a);
      b.send(ra.relayed, pong);
      const q = await atA;
      if (!q.data.equals(pong) || q.via !== 'channel') t.fail(`pong ${i} differs (${q.via})`);
      if (q.from.port !== rb.relayed.port) t.fail(`pong ${i} from ${q.from.ip}:${q.from.port}`);
    }
    t.pass('20 pings and pongs of 1..1400 bytes relayed intact on the channels');
    t.same(a.stats.dropped, {}, 'A dropped nothing');
    t.same(b.stats.dropped, {}, 'B dropped nothing');
    t.equal(a.stats.dataIn, 20);
    t.equal(b.stats.dataIn, 21);
    await Promise.all([a.close(), b.close()]);
    t.notOk(a.isAllocated);
    t.same(a.send(rb.relayed, first), { ok: false, code: TurnErrorCode.CLOSED }, 'send after close returns a code, never throws');
  });
}

t.test('expired credentials are refused with TURN_CREDENTIALS_EXPIRED; a wrong secret with TURN_UNAUTHORIZED', async (t) => {
  const expired = client('udp', { credentials: mintTurnCredentials(relay.secret, locator(), nowSec() - 60) });
  const closed = new Promise((resolve) => expired.once('closed', resolve));
  await t.rejects(expired.allocate(), { name: 'TurnError', code: TurnErrorCode.CREDENTIALS_EXPIRED, stunCode: 401 });
  t.ok(await closed, 'closed with the error');
  const wrong = client('tcp', { credentials: mintTurnCredentials('not-the-secret', locator(), nowSec() + 600) });
  await t.rejects(wrong.allocate(), { code: TurnErrorCode.UNAUTHORIZED, stunCode: 401 });
});

/** A UDP link to the relay from local port `port` (what defaultLink does from a port the kernel picks). */
function udpLinkFrom(port: number, onPort: (p: number) => void = () => {}): LinkFactory {
  return async (server, h) => {
    const sock = dgram.createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      sock.bind(port, '127.0.0.1', () => resolve());
    });
    onPort(sock.address().port);
    await new Promise<void>((resolve) => sock.connect(server.port, server.host, () => resolve()));
    sock.on('message', (b) => h.packet(b));
    let open = true;
    return {
      reliable: false,
      send: (bytes) => (open && (sock.send(bytes), true)),
      close: () => {
        if (open) sock.close();
        open = false;
      },
    };
  };
}

t.test('a 5-tuple the relay still holds for another username (437) is left for a new local address', async (t) => {
  // coturn keeps the username of a 5-tuple's first authenticated request, even a refused one: a
  // client that then gets the same local port (reused by the kernel, or a NAT mapping) is
  // answered 437 "Allocation mismatch: wrong credentials". The client allocates again from a new
  // socket (RFC 8656 section 7.3).
  let port = 0;
  const first = client('udp', { credentials: mintTurnCredentials(relay.secret, locator(), nowSec() - 60), link: udpLinkFrom(0, (p) => (port = p)) });
  await t.rejects(first.allocate(), { code: TurnErrorCode.CREDENTIALS_EXPIRED });
  const logs: string[] = [];
  let links = 0;
  const second = client('udp', {
    link: (server, h, o) => (++links === 1 ? udpLinkFrom(port)(server, h, o) : defaultLink(server, h, o)),
    log: (msg, fields) => logs.push(`${msg} ${String(fields['message'] ?? '')}`),
  });
  const a = await second.allocate();
  t.equal(a.relayed.ip, '127.0.0.1', 'allocated');
  t.equal(links, 2, 'from a second local address');
  t.match(logs.join('\n'), /turn allocation mismatch: allocating again from another local address relay answered 437/);
  t.notMatch(logs.join('\n'), /\0/, 'the reason phrase without its NUL padding');
  await second.close();
});

t.test('a peer not permitted cannot reach the client (the relay drops it); once permitted it can', async (t) => {
  const a = client('udp');
  const { relayed } = await a.allocate();
  const stranger = await udpPeer('127.0.0.2');
  const friend = await udpPeer('127.0.0.3');
  await a.permit([{ ip: '127.0.0.3', port: 0 }]);
  const fromStranger: Buffer[] = [];
  a.on('data', (from, data) => {
    if (from.ip === '127.0.0.2') fromStranger.push(Buffer.from(data));
  });
  for (let i = 0; i < 5; i++) {
    // The stranger's datagram goes first; the friend's, sent after it to the same relayed
    // socket, arriving is the positive control that the stranger's had its chance.
    await sendUdp(stranger, Buffer.from(`stranger ${i}`), relayed);
    const got = nextData(a, (from) => from.ip === '127.0.0.3');
    await sendUdp(friend, Buffer.from(`friend ${i}`), relayed);
    t.equal((await got).data.toString(), `friend ${i}`);
  }
  t.same(fromStranger, [], 'nothing from the stranger');
  t.notOk(a.stats.dropped['Data indication from a peer not permitted'], 'dropped by the relay, not by the client');
  await a.permit([{ ip: '127.0.0.2', port: 0 }]);
  const got = nextData(a, (from) => from.ip === '127.0.0.2');
  await sendUdp(stranger, Buffer.from('now permitted'), relayed);
  t.equal((await got).data.toString(), 'now permitted', 'the stranger reaches the client once permitted');
});

t.test('a peer address the relay denies is refused with TURN_FORBIDDEN', async (t) => {
  const a = client('udp');
  await a.allocate();
  await t.rejects(a.permit([{ ip: '127.0.0.5', port: 9 }]), { code: TurnErrorCode.FORBIDDEN, stunCode: 403 });
  await t.rejects(a.bindChannel({ ip: '127.0.0.5', port: 9 }), { code: TurnErrorCode.FORBIDDEN });
  t.same(a.permittedIps, [], 'no permission recorded');
  t.ok(a.isAllocated, 'the allocation survives the refusal');
});

t.test('a short allocation is refreshed before it expires, and keeps relaying', async (t) => {
  const a = client('udp', { lifetimeSec: 6 });
  const b = client('tcp');
  const ra = await a.allocate();
  t.ok(ra.lifetimeSec <= 6, `relay granted ${ra.lifetimeSec} s`);
  const rb = await b.allocate();
  const refreshed = new Promise<{ lifetimeSec: number; tid: string }>((resolve) => a.once('refreshed', resolve));
  await a.permit([rb.relayed]);
  await b.permit([ra.relayed]);
  const r = await refreshed;
  t.match(r.tid, /^[0-9a-f]{24}$/, 'the Refresh transaction completed');
  t.ok(r.lifetimeSec > 0);
  t.equal(a.stats.refreshes, 1);
  // After the point where the first lifetime would have run out, the allocation still relays.
  const later = new Promise((resolve) => setTimeout(resolve, ra.lifetimeSec * 1000 - (ra.lifetimeSec * 1000) / 2 + 500));
  await later;
  const got = nextData(a);
  b.send(ra.relayed, Buffer.from('still there'));
  t.equal((await got).data.toString(), 'still there');
});

t.test('a nonce gone stale at the relay (438) is replaced and the request retried', async (t) => {
  const stale = await startCoturn({ extra: ['stale-nonce=2'] });
  t.teardown(() => stale.stop());
  const lines: string[] = [];
  const a = new TurnClient({
    server: { host: stale.host, port: stale.port, transport: 'udp' },
    credentials: mintTurnCredentials(stale.secret, locator(), nowSec() + 600),
    log: (msg) => lines.push(msg),
  });
  a.on('error', () => {});
  t.teardown(() => a.close());
  await a.allocate();
  // Outlive the nonce (2 s), then make a request: the relay must answer 438 first.
  await new Promise((resolve) => setTimeout(resolve, 3000));
  await a.permit([{ ip: '127.0.0.3', port: 0 }]);
  t.ok(lines.includes('turn stale nonce'), 'the relay said 438 and the client retried with its new nonce');
  t.same(a.permittedIps, ['127.0.0.3']);
});
