// The TURN client on a fake clock and a fake link (the relay is the test): the RFC 8489
// retransmission schedule, the long-term credential exchange (401, 438 once), response
// authentication, refresh timing of allocation, permissions and channels, close, and a
// malicious relay that cannot crash it.
import t from 'tap';
import fc from 'fast-check';
import { decodeStun, encodeChannelData, encodeStun, longTermKey, Method, verifyIntegrity, type DecodedStun, type StunAttributes } from '../../src/agent/turn/codec.js';
import { TurnClient, TurnErrorCode, type LinkHandlers, type TurnLink } from '../../src/agent/turn/client.js';
import { FakeClock, flush } from './fake-clock.js';
import { mintTurnCredentials } from '../../src/wire/turn-credentials.js';

const EPOCH = 1_800_000_000_000;

class FakeRelay {
  sent: { at: number; msg: DecodedStun | null; bytes: Buffer }[] = [];
  handlers!: LinkHandlers;
  closed = false;
  /** When set, every request is answered with success (as a relay would) right after it is sent. */
  autoKey: Buffer | undefined;
  constructor(readonly clock: FakeClock, readonly reliable = false) {}
  /** Links opened (each a new client transport address). */
  links = 0;
  link = async (_s: unknown, h: LinkHandlers): Promise<TurnLink> => {
    this.links++;
    this.handlers = h;
    return {
      reliable: this.reliable,
      send: (bytes) => {
        const r = decodeStun(bytes);
        this.sent.push({ at: this.clock.t, msg: r.ok ? r.msg : null, bytes });
        const k = this.autoKey;
        if (k && r.ok && r.msg.cls === 'request') {
          const m = r.msg;
          queueMicrotask(() => this.answer(m, 'success', m.method === Method.Refresh ? { lifetime: m.attrs.lifetime ?? 600 } : {}, k));
        }
        return true;
      },
      close: () => {
        this.closed = true;
      },
    };
  };
  requests(method?: number): DecodedStun[] {
    return this.sent.map((s) => s.msg).filter((m): m is DecodedStun => !!m && m.cls === 'request' && (method === undefined || m.method === method));
  }
  last(): DecodedStun {
    return this.requests().at(-1)!;
  }
  answer(req: DecodedStun, cls: 'success' | 'error', attrs: StunAttributes, key?: Buffer): void {
    this.handlers.packet(encodeStun({ method: req.method, cls, tid: req.tid, attrs }, { ...(key ? { integrityKey: key } : {}), fingerprint: true }));
  }
}

const creds = mintTurnCredentials('secret', 'ab12', EPOCH / 1000 + 3600);
const key = longTermKey(creds.username, 'devloc.test', creds.password);
const relayed = { ip: '192.0.2.7', port: 50000 };

function setup(reliable = false, extra: Partial<ConstructorParameters<typeof TurnClient>[0]> = {}): { clock: FakeClock; relay: FakeRelay; c: TurnClient } {
  const clock = new FakeClock(EPOCH);
  const relay = new FakeRelay(clock, reliable);
  const c = new TurnClient({ server: { host: '192.0.2.1', port: 3478, transport: reliable ? 'tcp' : 'udp' }, credentials: creds, clock, link: relay.link, ...extra });
  c.on('error', () => {});
  return { clock, relay, c };
}

/** Drive allocate() through 401 and a success. */
async function allocated(reliable = false, extra = {}): Promise<ReturnType<typeof setup>> {
  const s = setup(reliable, extra);
  const p = s.c.allocate();
  await flush();
  s.relay.answer(s.relay.last(), 'error', { errorCode: { code: 401, reason: 'Unauthorized' }, realm: 'devloc.test', nonce: 'n1' });
  await flush();
  s.relay.answer(s.relay.last(), 'success', { xorRelayedAddress: relayed, xorMappedAddress: { ip: '198.51.100.2', port: 4000 }, lifetime: 600 }, key);
  await p;
  return s;
}

t.test('UDP retransmissions follow RFC 8489: RTO 500 ms doubling, 7 requests, then 16 RTO', async (t) => {
  const { clock, relay, c } = setup();
  const p = c.allocate();
  let err: unknown;
  p.catch((e) => (err = e));
  await clock.advance(39_499);
  t.same(relay.sent.map((s) => s.at), [0, 500, 1500, 3500, 7500, 15500, 31500]);
  t.ok(relay.sent.every((s) => s.bytes.equals(relay.sent[0]!.bytes)), 'retransmissions are identical');
  t.equal(err, undefined, 'not given up before 39.5 s');
  await clock.advance(1);
  t.match(err, { name: 'TurnError', code: TurnErrorCode.TIMEOUT });
  t.ok(relay.closed, 'the link is closed after a failed allocation');
});

t.test('a 437 to the Allocate is retried from a new client transport address, unauthenticated, three addresses in all', async (t) => {
  const mismatch = async (s: ReturnType<typeof setup>): Promise<void> => {
    await flush();
    t.equal(s.relay.last().attrs.username, undefined, 'each address starts unauthenticated (the nonce was the old 5-tuple\'s)');
    s.relay.answer(s.relay.last(), 'error', { errorCode: { code: 401, reason: 'Unauthorized' }, realm: 'devloc.test', nonce: 'n1' });
    await flush();
    // coturn pads this reason with NULs inside the attribute.
    s.relay.answer(s.relay.last(), 'error', { errorCode: { code: 437, reason: 'Allocation mismatch: wrong credentials\0\0' } }, key);
  };
  const s = setup();
  const p = s.c.allocate();
  await mismatch(s);
  await mismatch(s);
  await flush();
  s.relay.answer(s.relay.last(), 'error', { errorCode: { code: 401, reason: 'Unauthorized' }, realm: 'devloc.test', nonce: 'n2' });
  await flush();
  s.relay.answer(s.relay.last(), 'success', { xorRelayedAddress: relayed, lifetime: 600 }, key);
  t.same((await p).relayed, relayed, 'allocated from the third address');
  t.equal(s.relay.links, 3);

  const f = setup();
  const failed = f.c.allocate();
  let err: unknown;
  failed.catch((e) => (err = e));
  for (let i = 0; i < 3; i++) await mismatch(f);
  await flush();
  t.match(err, { code: TurnErrorCode.ALLOCATION_MISMATCH, stunCode: 437, message: 'relay answered 437 Allocation mismatch: wrong credentials' });
  t.notMatch((err as Error).message, /\0/, 'no NUL in the message');
  t.equal(f.relay.links, 3, 'given up after three addresses');
  t.ok(f.relay.closed);
});

t.test('over TCP/TLS a request is sent once and times out after Ti = 39.5 s', async (t) => {
  const { clock, relay, c } = setup(true);
  const p = c.allocate();
  let err: unknown;
  p.catch((e) => (err = e));
  await clock.advance(39_499);
  t.equal(relay.sent.length, 1);
  t.equal(err, undefined);
  await clock.advance(1);
  t.match(err, { code: TurnErrorCode.TIMEOUT });
});

t.test('long-term credentials: 401 challenge, then 438 retried once with the new nonce', async (t) => {
  const { relay, c } = setup();
  const p = c.allocate();
  await flush();
  const first = relay.last();
  t.equal(first.attrs.username, undefined, 'the first Allocate is unauthenticated');
  t.equal(first.attrs.requestedTransport, 17, 'REQUESTED-TRANSPORT UDP');
  t.ok(first.fingerprint);
  relay.answer(first, 'error', { errorCode: { code: 401, reason: 'Unauthorized' }, realm: 'devloc.test', nonce: 'n1' });
  await flush();
  const second = relay.last();
  t.same([second.attrs.username, second.attrs.realm, second.attrs.nonce], [creds.username, 'devloc.test', 'n1']);
  t.ok(verifyIntegrity(second, key), 'MESSAGE-INTEGRITY with md5(username:realm:password)');
  t.not(second.tid.toString('hex'), first.tid.toString('hex'), 'a new transaction');
  relay.answer(second, 'error', { errorCode: { code: 438, reason: 'Stale Nonce' }, realm: 'devloc.test', nonce: 'n2' });
  await flush();
  const third = relay.last();
  t.equal(third.attrs.nonce, 'n2');
  relay.answer(third, 'success', { xorRelayedAddress: relayed, lifetime: 600 }, key);
  const a = await p;
  t.same(a.relayed, relayed);
  t.equal(c.relayedAddress?.port, 50000);
});

t.test('a second 438 fails with TURN_STALE_NONCE; 401 to authenticated requests fails with a code', async (t) => {
  {
    const { relay, c } = setup();
    const p = c.allocate();
    await flush();
    relay.answer(relay.last(), 'error', { errorCode: { code: 401, reason: 'Unauthorized' }, realm: 'devloc.test', nonce: 'n1' });
    await flush();
    relay.answer(relay.last(), 'error', { errorCode: { code: 438, reason: 'Stale Nonce' }, nonce: 'n2' });
    await flush();
    relay.answer(relay.last(), 'error', { errorCode: { code: 438, reason: 'Stale Nonce' }, nonce: 'n3' });
    await t.rejects(p, { code: TurnErrorCode.STALE_NONCE, stunCode: 438 });
  }
  {
    const { relay, c } = setup();
    const p = c.allocate();
    await flush();
    relay.answer(relay.last(), 'error', { errorCode: { code: 401, reason: 'Unauthorized' }, realm: 'devloc.test', nonce: 'n1' });
    await flush();
    relay.answer(relay.last(), 'error', { errorCode: { code: 401, reason: 'Unauthorized' }, realm: 'devloc.test', nonce: 'n1' });
    await t.rejects(p, { code: TurnErrorCode.UNAUTHORIZED });
  }
  {
    const { clock, relay, c } = setup();
    clock.t = 7200_000; // past the credentials' expiry
    const p = c.allocate();
    await flush();
    relay.answer(relay.last(), 'error', { errorCode: { code: 401, reason: 'Unauthorized' }, realm: 'devloc.test', nonce: 'n1' });
    await flush();
    relay.answer(relay.last(), 'error', { errorCode: { code: 401, reason: 'Unauthorized' }, realm: 'devloc.test', nonce: 'n1' });
    await t.rejects(p, { code: TurnErrorCode.CREDENTIALS_EXPIRED });
  }
  {
    const { relay, c } = setup();
    const p = c.allocate();
    await flush();
    relay.answer(relay.last(), 'error', { errorCode: { code: 401, reason: 'Unauthorized' }, realm: 'devloc.test', nonce: 'n1' });
    await flush();
    relay.answer(relay.last(), 'error', { errorCode: { code: 486, reason: 'Allocation Quota Reached' } });
    await t.rejects(p, { code: TurnErrorCode.QUOTA, stunCode: 486 });
  }
});

t.test('an authenticated request accepts only a success with the right MESSAGE-INTEGRITY', async (t) => {
  const { relay, c } = setup();
  const p = c.allocate();
  await flush();
  relay.answer(relay.last(), 'error', { errorCode: { code: 401, reason: 'Unauthorized' }, realm: 'devloc.test', nonce: 'n1' });
  await flush();
  const req = relay.last();
  relay.answer(req, 'success', { xorRelayedAddress: { ip: '203.0.113.66', port: 1 }, lifetime: 600 });
  relay.answer(req, 'success', { xorRelayedAddress: { ip: '203.0.113.66', port: 1 }, lifetime: 600 }, Buffer.from('forged'));
  await flush();
  t.equal(c.isAllocated, false, 'forged and unauthenticated successes ignored');
  t.equal(c.stats.dropped['unauthenticated success response to an authenticated request'], 1);
  t.equal(c.stats.dropped['response with a wrong MESSAGE-INTEGRITY'], 1);
  relay.answer(req, 'success', { xorRelayedAddress: relayed, lifetime: 600 }, key);
  t.same((await p).relayed, relayed);
});

t.test('refresh timing: allocation a minute before expiry, permissions every 4 min, channels every 9 min', async (t) => {
  const { clock, relay, c } = await allocated();
  const refreshed: unknown[] = [];
  c.on('refreshed', (r) => refreshed.push(r));
  const pp = c.permit([{ ip: '198.51.100.9', port: 1 }, { ip: '198.51.100.9', port: 2 }]);
  await flush();
  const perm = relay.last();
  t.equal(perm.method, Method.CreatePermission);
  t.same(perm.attrs.xorPeerAddresses?.map((a) => a.ip), ['198.51.100.9'], 'one permission per IP, exactly the one told');
  relay.answer(perm, 'success', {}, key);
  await pp;
  const cp = c.bindChannel({ ip: '198.51.100.10', port: 7000 });
  await flush();
  const bind = relay.last();
  t.equal(bind.method, Method.ChannelBind);
  t.equal(bind.attrs.channelNumber, 0x4000);
  relay.answer(bind, 'success', {}, key);
  t.equal(await cp, 0x4000);
  t.same(c.permittedIps.sort(), ['198.51.100.10', '198.51.100.9'], 'a channel\'s peer is kept permitted too');

  const start = relay.sent.length;
  relay.autoKey = key;
  await clock.advance(239_999);
  t.equal(relay.sent.length, start, 'nothing before 4 min');
  await clock.advance(1);
  const permRefresh = relay.last();
  t.equal(permRefresh.method, Method.CreatePermission, 'permission refresh at 240 s');
  t.same(permRefresh.attrs.xorPeerAddresses?.map((a) => a.ip).sort(), ['198.51.100.10', '198.51.100.9']);
  await clock.advance(540_000 - 240_000 - 1);
  t.notOk(relay.requests().slice(start).some((r) => r.method === Method.Refresh || r.method === Method.ChannelBind), 'no allocation or channel refresh before 540 s');
  await clock.advance(1);
  const at540 = relay.requests().slice(start).map((r) => r.method);
  t.ok(at540.includes(Method.Refresh), 'allocation refresh at 540 s (lifetime 600 s minus 60 s)');
  t.ok(at540.includes(Method.ChannelBind), 'channel refresh at 540 s');
  t.equal(refreshed.length, 1);
  t.equal(c.stats.channelRefreshes, 1);
  t.equal(c.stats.permissionRefreshes, 2, 'permissions refreshed at 240 and 480 s');
  t.equal(c.stats.retransmissions, 0);

  const closing = c.close();
  await flush();
  const last = relay.last();
  t.equal(last.method, Method.Refresh);
  t.equal(last.attrs.lifetime, 0, 'close() releases the allocation with LIFETIME 0');
  await closing;
  t.ok(relay.closed);
});

t.test('send: Send indication before the channel, ChannelData after; refused without permission', async (t) => {
  const { relay, c } = await allocated(true);
  const peer = { ip: '198.51.100.20', port: 9000 };
  t.same(c.send(peer, Buffer.from('x')), { ok: false, code: TurnErrorCode.NO_PERMISSION });
  const pp = c.permit([peer]);
  await flush();
  relay.answer(relay.last(), 'success', {}, key);
  await pp;
  t.same(c.send(peer, Buffer.from('hello')), { ok: true, via: 'indication' });
  const ind = relay.sent.at(-1)!.msg!;
  t.equal(ind.method, Method.Send);
  t.equal(ind.cls, 'indication');
  t.same(ind.attrs.xorPeerAddresses, [peer]);
  t.equal(ind.attrs.data?.toString(), 'hello');
  const cp = c.bindChannel(peer);
  await flush();
  relay.answer(relay.last(), 'success', {}, key);
  const ch = await cp;
  t.same(c.send(peer, Buffer.from('hello')), { ok: true, via: 'channel' });
  t.same(relay.sent.at(-1)!.bytes, encodeChannelData(ch, Buffer.from('hello'), true), 'padded ChannelData over a stream');
  t.same(c.send(peer, Buffer.alloc(70_000)), { ok: false, code: TurnErrorCode.TOO_LARGE });
});

t.test('a malicious relay cannot crash the client or inject data', async (t) => {
  const { relay, c } = await allocated();
  const peer = { ip: '198.51.100.30', port: 1234 };
  const pp = c.permit([peer]);
  await flush();
  relay.answer(relay.last(), 'success', {}, key);
  await pp;
  const got: string[] = [];
  c.on('data', (from, data) => {
    got.push(`${from.ip}:${data.toString()}`);
    throw new Error('a listener that throws');
  });
  const ind = (from: { ip: string; port: number }, text: string): Buffer =>
    encodeStun({ method: Method.Data, cls: 'indication', tid: Buffer.alloc(12, 1), attrs: { xorPeerAddresses: [from], data: Buffer.from(text) } });
  relay.handlers.packet(ind({ ip: '203.0.113.1', port: 1 }, 'intruder'));
  relay.handlers.packet(encodeChannelData(0x4123, Buffer.from('unbound'), false));
  relay.handlers.packet(ind(peer, 'welcome'));
  t.same(got, ['198.51.100.30:welcome'], 'only the permitted peer\'s datagram is delivered');
  t.equal(c.stats.listenerErrors, 1, 'the throwing listener was contained');
  t.equal(c.stats.dropped['Data indication from a peer not permitted'], 1);
  t.equal(c.stats.dropped['ChannelData on an unbound channel'], 1);
  fc.assert(fc.property(fc.uint8Array({ maxLength: 120 }), (b) => {
    relay.handlers.packet(Buffer.from(b));
  }), { numRuns: 3000 });
  const valid = ind(peer, 'x');
  fc.assert(fc.property(fc.nat({ max: valid.length - 1 }), fc.integer({ min: 1, max: 255 }), (i, x) => {
    const b = Buffer.from(valid);
    b[i] = b[i]! ^ x;
    relay.handlers.packet(b);
  }), { numRuns: 2000 });
  t.ok(c.isAllocated, 'still allocated after 5000 hostile datagrams');
  const closedWith = new Promise((resolve) => c.once('closed', resolve));
  relay.handlers.closed(new (await import('../../src/agent/turn/client.js')).TurnError(TurnErrorCode.CONNECTION, 'gone'));
  t.match(await closedWith, { code: TurnErrorCode.CONNECTION }, 'a lost link closes the client with TURN_CONNECTION');
  t.same(c.send(peer, Buffer.from('x')), { ok: false, code: TurnErrorCode.CLOSED });
  await t.rejects(c.permit([peer]), { code: TurnErrorCode.CLOSED });
});

t.test('a refused refresh (437) ends the allocation with TURN_ALLOCATION_MISMATCH', async (t) => {
  const { clock, relay, c } = await allocated();
  const closed = new Promise((resolve) => c.once('closed', resolve));
  await clock.advance(540_000);
  const r = relay.last();
  t.equal(r.method, Method.Refresh);
  relay.answer(r, 'error', { errorCode: { code: 437, reason: 'Allocation Mismatch' } }, key);
  t.match(await closed, { code: TurnErrorCode.ALLOCATION_MISMATCH, stunCode: 437 });
});

t.test('close() waits at most closeTimeoutMs for the release, and UDP ChannelData is unpadded', async (t) => {
  const { clock, relay, c } = await allocated(false, { closeTimeoutMs: 2000 });
  const peer = { ip: '198.51.100.40', port: 7 };
  const cp = c.bindChannel(peer);
  await flush();
  relay.answer(relay.last(), 'success', {}, key);
  const ch = await cp;
  t.same(c.send(peer, Buffer.from('abcde')), { ok: true, via: 'channel' });
  t.same(relay.sent.at(-1)!.bytes, encodeChannelData(ch, Buffer.from('abcde'), false), 'no padding over UDP');
  const closedAt: number[] = [];
  c.once('closed', () => closedAt.push(clock.t));
  const start = clock.t;
  const closing = c.close();
  await clock.advance(1999);
  t.same(closedAt, [], 'still waiting for the Refresh(0) answer');
  await clock.advance(1);
  await closing;
  t.same(closedAt, [start + 2000], 'closed after the close timeout without an answer');
  t.ok(relay.closed);
});

t.test('close() while the link is still connecting: the link that comes afterwards is closed, not kept', async (t) => {
  // Found as a test process that never exited: a UDP socket with its listeners left open by a
  // relay manager closed during an allocation, under load.
  let connected!: (l: TurnLink) => void;
  let closedLinks = 0;
  const link: TurnLink = { reliable: false, send: () => true, close: () => void closedLinks++ };
  const c = new TurnClient({
    server: { host: '192.0.2.1', port: 3478, transport: 'udp' },
    credentials: { username: 'u', password: 'p' },
    clock: new FakeClock(0),
    link: () => new Promise<TurnLink>((resolve) => (connected = resolve)),
  });
  const allocating = c.allocate();
  await c.close();
  connected(link);
  await t.rejects(allocating, { code: TurnErrorCode.CLOSED });
  t.equal(closedLinks, 1, 'the late link is closed');
});
