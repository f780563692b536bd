// DatagramServer: bounds, decode refusals, dispatch, the response cache, replays, handler
// errors, rate limiting and anti-amplification. Most tests call server.receive() with a
// recording socket (exact, no timing); the last ones use real sockets on loopback.
import t from 'tap';
import dgram from 'node:dgram';
import { UdpClient } from '../../src/net/client.js';
import { RateLimiter } from '../../src/net/ratelimit.js';
import type { HandlerResult, Handlers, Refusal, RequestContext } from '../../src/net/server.js';
import type { ClaimVerdict } from '../../src/net/sessions.js';
import { ClaimRefused } from '../../src/net/sessions.js';
import { NEEDS_VALIDATION } from '../../src/net/routability.js';
import { bindUdp, peekEnvelope, UNPROVEN_BUDGET_FACTOR } from '../../src/net/server.js';
import { Rng } from '../../fuzz/rng.js';
import { mutate } from '../../fuzz/mutate.js';
import { sampleDatagrams } from '../../fuzz/world.js';
import { encodeCbor } from '../../src/wire/cbor.js';
import { MAX_DATAGRAM, MAX_RETRANSMIT } from '../../src/wire/constants.js';
import type { Message } from '../../src/wire/envelope.js';
import { encodeDatagram } from '../../src/wire/envelope.js';
import { sealDatagram, verifyDatagram } from '../../src/wire/session.js';
import { DevlocError, ErrorCode } from '../../src/wire/errors.js';
import { A, B, decoded, harness, recordingWindow, rid, sessionWorld, until } from './fixtures/net.js';

/** A REFLECT request padded to `size` bytes (an unauthenticated request of a chosen size). */
function reflect(id: Buffer, size = 64): Buffer {
  const bare = encodeDatagram('REFLECT', id, {});
  if (size <= bare.length) return bare;
  // body {2: padding}: key 1 B + bstr head 1..3 B.
  for (let n = size - bare.length - 2; n >= 0; n--) {
    const d = encodeDatagram('REFLECT', id, { padding: Buffer.alloc(n) });
    if (d.length <= size) return d;
  }
  return bare;
}

/** Any handler, typed for whichever message it is registered under (these tests do not care). */
type AnyHandler = (ctx: RequestContext) => HandlerResult | Promise<HandlerResult>;
const anyHandler = (f: AnyHandler): never => f as never;

/** Mark `from` (default A) validated for the session of `cs` (what its ADDR_PROOF would do). */
/** The sequence number of a session datagram. */
const verifyAuthSeq = (raw: Buffer): number => decoded(raw).auth!.seq;

function validated(
  h: { server: { routability: { accept(s: never, a: { ip: string; port: number }): void } | undefined } },
  w: { sessions: { get(sidHex: string): unknown } },
  cs: { sid: Buffer },
  from: { ip: string; port: number } = A,
): void {
  h.server.routability!.accept(w.sessions.get(cs.sid.toString('hex')) as never, from);
}

const reflectResult = (ctx: RequestContext): Buffer => ctx.reply('REFLECT_RESULT', { observed: ctx.from, from: ctx.from });

function counting(f: AnyHandler = reflectResult): { handler: never; calls: () => number } {
  let n = 0;
  return { handler: anyHandler((ctx) => { n++; return f(ctx); }), calls: () => n };
}

/**
 * REGISTER and REFRESH handlers of a session test, REFRESHes counted; with `busyOnce` the first
 * REFRESH is refused with TRY_LATER (a store that is busy), the later ones answered.
 */
function sessionHandlers(o: { busyOnce?: boolean } = {}): { handlers: Handlers; refreshes: () => number } {
  let refreshes = 0;
  const handlers: Handlers = {
    REGISTER: (ctx) => ctx.reply('REGISTER_ACK', { observed: ctx.from, ttlS: 90, refreshS: 25, locatorId: ctx.session!.locatorId }),
    REFRESH: (ctx) => {
      if (++refreshes === 1 && o.busyOnce) throw new DevlocError(ErrorCode.TRY_LATER, 'database busy', 100);
      return ctx.reply('REFRESH_ACK', { observed: ctx.from, ttlS: 90, refreshS: 25, locatorId: ctx.session!.locatorId });
    },
  };
  return { handlers, refreshes: () => refreshes };
}

t.test('oversize datagrams are dropped: no reply, counted, logged, not decoded', async (t) => {
  const c = counting();
  const h = harness({ handlers: { REFLECT: c.handler } });
  const big = encodeDatagram('REFLECT', rid(1), { padding: Buffer.alloc(MAX_DATAGRAM) });
  t.ok(big.length > MAX_DATAGRAM);
  await h.server.receive(big, A);
  await h.server.receive(Buffer.alloc(MAX_DATAGRAM + 1), A);
  t.equal(h.socket.sent.length, 0, 'no reply');
  t.equal(c.calls(), 0, 'not executed');
  t.equal(h.metrics.get('dropped_total', { reason: 'oversize' }), 2, 'counted');
  t.ok(h.logs.some((l) => l['event'] === 'drop:oversize' && l['bytes'] === big.length), 'logged with its size');
  await h.server.receive(reflect(rid(2), MAX_DATAGRAM), A);
  t.equal(c.calls(), 1, 'exactly MAX_DATAGRAM bytes is accepted');
});

t.test('decode refusals: ERROR with the right code and request ID, never larger than the request', async (t) => {
  const h = harness({ handlers: { REFLECT: reflectResult as never, AUTH_REQUEST: () => null } });
  const id = rid(3);
  const pad = new Map<number, Uint8Array>([[15, Buffer.alloc(80)]]);
  const badVersion = Buffer.from(reflect(id, 100));
  badVersion[1] = 0x02;
  const cases: [string, Buffer, ErrorCode, Buffer | null][] = [
    ['version 2', badVersion, ErrorCode.UNSUPPORTED_VERSION, id],
    ['unknown type', encodeCbor([1, 0x7e, id, pad]), ErrorCode.UNKNOWN_TYPE, id],
    ['missing required fields', encodeCbor([1, 0x02, id, pad]), ErrorCode.BAD_MESSAGE, id],
    // The type is checked before the session part: this server does not serve REFRESH.
    ['session type without auth, not served', encodeCbor([1, 0x12, id, pad]), ErrorCode.UNKNOWN_TYPE, id],
    ['not CBOR', Buffer.concat([Buffer.from([0x9f]), Buffer.alloc(60)]), ErrorCode.MALFORMED, null],
    // The CBOR is refused after the envelope's canonical head: the request ID is still read.
    ['trailing bytes', Buffer.concat([reflect(id, 60), Buffer.from([0])]), ErrorCode.MALFORMED, id],
    ['too deep', encodeCbor([1, 0x50, id, new Map([[15, [[[[[[[[[[1]]]]]]]]]]]]), Buffer.alloc(40)]), ErrorCode.TOO_LARGE, id],
    ['too many items', encodeCbor([1, 0x50, id, new Map([[15, Array.from({ length: 700 }, () => 0)]])]), ErrorCode.TOO_LARGE, id],
    ['a float in the body', Buffer.concat([Buffer.from([0x84, 0x01, 0x18, 0x50, 0x48]), id, Buffer.from([0xa2, 0x0f, 0x58, 30]), Buffer.alloc(30), Buffer.from([0x01, 0xf9, 0x3c, 0x00])]), ErrorCode.MALFORMED, id],
    ['an array of 6 items', encodeCbor([1, 0x50, id, new Map(), 0, Buffer.alloc(30)]), ErrorCode.MALFORMED, id],
    ['a tag', Buffer.concat([Buffer.from([0xc1]), reflect(id, 60)]), ErrorCode.MALFORMED, null],
    ['a non-canonical head and bad CBOR', Buffer.concat([Buffer.from([0x84, 0x18, 0x01]), Buffer.alloc(40, 0xff)]), ErrorCode.MALFORMED, null],
  ];
  for (const [what, bytes, code, expectRid] of cases) {
    const before = h.socket.sent.length;
    await h.server.receive(bytes, A);
    t.equal(h.socket.sent.length, before + 1, `${what}: one reply`);
    const reply = h.socket.sent.at(-1)!;
    t.ok(reply.bytes.length <= bytes.length, `${what}: reply ${reply.bytes.length} B <= request ${bytes.length} B`);
    const m = decoded(reply.bytes);
    t.equal(m.name, 'ERROR', `${what}: an ERROR`);
    if (m.name === 'ERROR') t.equal(m.body.code, code, `${what}: code ${code}`);
    t.same(Buffer.from(m.rid), expectRid ?? Buffer.alloc(8), `${what}: request ID ${expectRid ? 'echoed' : 'zero (unknown)'}`);
    t.same({ ip: reply.ip, port: reply.port }, A, `${what}: to the source`);
  }
  t.equal(h.metrics.get('refused_total', { code: 'MALFORMED' }), 6);
});

t.test('order of checks for session messages: type, session part, then the MAC before the body (devloc-protocol(7))', async (t) => {
  const w = sessionWorld();
  let executed = 0;
  const handlers: Handlers = {
    REGISTER: (ctx) => { executed++; return ctx.reply('REGISTER_ACK', { observed: ctx.from, ttlS: 90, refreshS: 25, locatorId: ctx.session!.locatorId }); },
    QUERY_ADDR: (ctx) => { executed++; return ctx.reply('QUERY_ADDR_RESULT', { entries: [] }); },
  };
  const h = harness({ handlers, sessions: w.sessions, clock: w.clock });
  const cs = w.client();
  await h.server.receive(cs.encode('REGISTER', rid(40), { ticket: w.ticket, timeMs: w.clock.ms }), A);
  t.equal(executed, 1, 'session open');
  const sid = w.cti;
  /** A QUERY_ADDR of the session whose body is bad (ids must be an array), MACed with `key`. */
  const badBody = (id: Buffer, seq: number, key = cs.keys.terminalToServer): Buffer =>
    sealDatagram(key, encodeCbor([1, 0x20, id, new Map<number, unknown>([[1, 'not an array'], [15, Buffer.alloc(60)]]) as never, [sid, seq, Buffer.alloc(16)]]));
  const last = (): Message => decoded(h.socket.sent.at(-1)!.bytes);
  const code = (m: Message): number | false => m.name === 'ERROR' && m.body.code;

  // Valid MAC, bad body: BAD_MESSAGE, MACed in the session, with the request ID.
  const before = h.socket.sent.length;
  const good = badBody(rid(41), 2);
  await h.server.receive(good, A);
  t.equal(h.socket.sent.length, before + 1, 'one answer');
  const m1 = last();
  t.equal(code(m1), ErrorCode.BAD_MESSAGE, 'BAD_MESSAGE');
  t.ok(m1.auth && Buffer.from(m1.auth.sid).equals(sid), 'MACed in the session');
  t.ok(verifyDatagram(cs.keys.serverToTerminal, h.socket.sent.at(-1)!.bytes), 'with a MAC that verifies');
  t.same(Buffer.from(m1.rid), rid(41), 'request ID echoed');
  t.equal(executed, 1, 'not executed');
  // Its sequence number was not taken: the next good request with it executes.
  await h.server.receive(sealDatagram(cs.keys.terminalToServer, encodeDatagram('QUERY_ADDR', rid(42), { ids: [] }, { sid, seq: 2 })), A);
  t.equal(last().name, 'QUERY_ADDR_RESULT', 'sequence number 2 still usable');

  // Wrong MAC, bad body: BAD_MAC, unauthenticated, with the request ID.
  const forged = badBody(rid(43), 3, cs.keys.serverToTerminal);
  await h.server.receive(forged, B);
  const m2 = last();
  t.equal(code(m2), ErrorCode.BAD_MAC, 'BAD_MAC, not BAD_MESSAGE');
  t.equal(m2.auth, undefined, 'unauthenticated');
  t.same(Buffer.from(m2.rid), rid(43), 'request ID echoed');

  // Unknown session, bad body: nothing can be MAC-checked (opening needs the ticket): BAD_MESSAGE.
  const unknown = encodeCbor([1, 0x20, rid(44), new Map<number, unknown>([[1, 'x'], [15, Buffer.alloc(60)]]) as never, [Buffer.alloc(16, 9), 1, Buffer.alloc(16)]]);
  await h.server.receive(unknown, B);
  const m3 = last();
  t.equal(code(m3), ErrorCode.BAD_MESSAGE);
  t.equal(m3.auth, undefined);
  t.same(Buffer.from(m3.rid), rid(44));

  // Session part checked before the body: a session type without it is BAD_MESSAGE (served type).
  await h.server.receive(encodeCbor([1, 0x20, rid(45), new Map([[15, Buffer.alloc(60)]])]), B);
  t.equal(code(last()), ErrorCode.BAD_MESSAGE);
  t.same(Buffer.from(last().rid), rid(45));
  // A type not served, with a bad session part: UNKNOWN_TYPE (type before session part).
  await h.server.receive(encodeCbor([1, 0x30, rid(46), new Map([[15, Buffer.alloc(60)]])]), B);
  t.equal(code(last()), ErrorCode.UNKNOWN_TYPE);
  t.equal(executed, 2);
});

t.test('tiny garbage gets no reply (even the bare ERROR would be larger)', async (t) => {
  const h = harness({ handlers: {} });
  for (const bytes of [Buffer.alloc(0), Buffer.from([0xff]), Buffer.from('hello'), Buffer.alloc(15, 0x9f), encodeCbor([1, 0x7e, rid(4), new Map()])]) {
    await h.server.receive(bytes, A);
  }
  t.equal(h.socket.sent.length, 0, 'nothing sent');
  t.equal(h.metrics.get('dropped_total', { reason: 'refusal-too-large' }), 5, 'each counted');
  t.equal(h.metrics.total('refused_total'), 5, 'and refused');
});

t.test('a type this server does not serve: UNKNOWN_TYPE', async (t) => {
  const h = harness({ handlers: { AUTH_REQUEST: () => null } });
  const req = reflect(rid(5), 100);
  await h.server.receive(req, A);
  const m = decoded(h.socket.sent[0]!.bytes);
  t.equal(m.name === 'ERROR' && m.body.code, ErrorCode.UNKNOWN_TYPE);
  t.match(m.name === 'ERROR' ? m.body.message : '', /REFLECT is not served by test/);
  // Session messages to a server without sessions are not served either.
  const w = sessionWorld();
  const h2 = harness({ handlers: { REFRESH: () => null } });
  const reg = w.client().encode('REFRESH', rid(6), {});
  await h2.server.receive(Buffer.concat([reg]), A);
  const m2 = decoded(h2.socket.sent[0]!.bytes);
  t.equal(m2.name === 'ERROR' && m2.body.code, ErrorCode.UNKNOWN_TYPE);
});

t.test('responses (ERROR above all) are never answered: no ERROR ping-pong between servers', async (t) => {
  const h = harness({ handlers: { REFLECT: reflectResult as never } });
  const inputs = [
    encodeDatagram('ERROR', rid(7), { code: ErrorCode.UNKNOWN_TYPE, message: 'x'.repeat(100) }),
    encodeDatagram('REFLECT_RESULT', rid(8), { observed: A, from: A, otherIp: Buffer.alloc(16) }),
    encodeCbor([1, 0x7f, rid(9), new Map([[2, 'code missing'.repeat(5)]])]),
    encodeCbor([1, 0x7d, rid(10), new Map([[15, Buffer.alloc(60)]])]),
    encodeCbor([2, 0x7f, rid(11), new Map([[15, Buffer.alloc(60)]])]),
  ];
  for (const bytes of inputs) await h.server.receive(bytes, B);
  t.equal(h.socket.sent.length, 0, 'nothing sent back');
  t.equal(h.metrics.get('dropped_total', { reason: 'response-not-answered' }), inputs.length, 'counted');
  // The rate-limited path does not answer responses either.
  const rl = new RateLimiter({ ratePerS: 1, burst: 1, now: () => 0 });
  const h2 = harness({ handlers: {}, rateLimiter: rl });
  for (const bytes of inputs) await h2.server.receive(bytes, B);
  t.equal(h2.socket.sent.length, 0);
});

t.test('response cache: a retransmission is answered from the cache, not executed again', async (t) => {
  const c = counting();
  const h = harness({ handlers: { REFLECT: c.handler } });
  const req = reflect(rid(12), 80);
  await h.server.receive(req, A);
  await h.server.receive(req, A);
  await h.server.receive(req, A);
  t.equal(c.calls(), 1, 'executed once');
  t.equal(h.socket.sent.length, 3, 'answered three times');
  t.ok(h.socket.sent.every((s) => s.bytes.equals(h.socket.sent[0]!.bytes)), 'with the same reply');
  t.equal(h.metrics.get('retransmissions_answered_total'), 2);
  await h.server.receive(reflect(rid(13), 80), A);
  t.equal(c.calls(), 2, 'another request ID is another request');
});

t.test('a retransmission arriving while the async handler runs is not executed twice', async (t) => {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const c = counting(async (ctx: RequestContext) => {
    await gate;
    return reflectResult(ctx);
  });
  const h = harness({ handlers: { REFLECT: c.handler } });
  const req = reflect(rid(14), 80);
  const first = h.server.receive(req, A);
  await h.server.receive(req, A);
  await h.server.receive(req, A);
  t.equal(c.calls(), 1, 'executing once');
  t.equal(h.socket.sent.length, 0, 'nothing sent yet');
  release();
  await first;
  t.equal(h.socket.sent.length, 1, 'one answer when the handler is done');
  await h.server.receive(req, A);
  t.equal(c.calls(), 1, 'later copies come from the cache');
  t.equal(h.socket.sent.length, 2);
});

t.test('same request bytes from another source: REPLAY, never the cached reply', async (t) => {
  const c = counting();
  const h = harness({ handlers: { REFLECT: c.handler } });
  const req = reflect(rid(15), 60);
  await h.server.receive(req, A);
  const answer = h.socket.sent[0]!.bytes;
  await h.server.receive(req, B);
  t.equal(c.calls(), 1, 'not executed for the replay');
  t.equal(h.socket.sent.length, 2);
  const r = h.socket.sent[1]!;
  t.same({ ip: r.ip, port: r.port }, B);
  t.notOk(r.bytes.equals(answer), 'not the cached reply');
  const m = decoded(r.bytes);
  t.equal(m.name === 'ERROR' && m.body.code, ErrorCode.REPLAY);
  t.ok(r.bytes.length <= req.length, 'no larger than the replayed request');
  // The same with a session request: the replay toward B gets a REPLAY no larger than it.
  const w = sessionWorld();
  const hs = harness({ handlers: { REGISTER: counting((ctx: RequestContext) => ctx.reply('REGISTER_ACK', { observed: ctx.from, ttlS: 90, refreshS: 25, locatorId: ctx.session!.locatorId })).handler }, sessions: w.sessions, clock: w.clock });
  const cs = w.client();
  const reg = cs.encode('REGISTER', rid(16), { ticket: w.ticket, timeMs: w.clock.ms });
  await hs.server.receive(reg, A);
  t.equal(decoded(hs.socket.sent[0]!.bytes).name, 'REGISTER_ACK');
  await hs.server.receive(reg, B);
  const rr = hs.socket.sent[1]!;
  const mm = decoded(rr.bytes);
  t.equal(mm.name === 'ERROR' && mm.body.code, ErrorCode.REPLAY, 'session replay from elsewhere: REPLAY');
  t.ok(rr.bytes.length <= reg.length);
});

t.test('a different datagram reusing a request ID never fetches the cached reply', async (t) => {
  const c = counting();
  const h = harness({ handlers: { REFLECT: c.handler } });
  const id = rid(17);
  await h.server.receive(reflect(id, 200), A);
  t.equal(h.socket.sent.length, 1, 'the padded request is answered');
  const tiny = reflect(id, 0);
  await h.server.receive(tiny, A);
  t.equal(c.calls(), 1, 'not executed');
  t.ok(h.socket.sent.slice(1).every((s) => s.bytes.length <= tiny.length), 'nothing larger than the tiny request was sent');
  t.equal(h.metrics.get('retransmissions_answered_total'), 0, 'not taken for a retransmission');
  const mid = reflect(id, 100);
  await h.server.receive(mid, A);
  const m = decoded(h.socket.sent.at(-1)!.bytes);
  t.equal(m.name === 'ERROR' && m.body.code, ErrorCode.REPLAY, 'refused as a replay when the refusal fits');
});

t.test('amplification: a reply larger than an unauthenticated request is never sent, not even to a retransmission', async (t) => {
  const c = counting();
  const h = harness({ handlers: { REFLECT: c.handler } });
  const req = reflect(rid(18), 0);
  t.ok(req.length < 30, 'a small request');
  await h.server.receive(req, A);
  await h.server.receive(req, A);
  t.equal(h.socket.sent.length, 0, 'the larger reply is not sent');
  t.equal(c.calls(), 1);
  t.equal(h.metrics.get('dropped_total', { reason: 'amplification' }), 1);
  t.ok(h.logs.some((l) => l['event'] === 'drop:amplification'), 'logged');
});

t.test('TRY_LATER and RATE_LIMITED answers are not cached: the same datagram executes again', async (t) => {
  for (const code of [ErrorCode.TRY_LATER, ErrorCode.RATE_LIMITED]) {
    let n = 0;
    const h = harness({
      handlers: {
        REFLECT: anyHandler((ctx: RequestContext) => {
          if (++n === 1) throw new DevlocError(code, 'busy', 250);
          return reflectResult(ctx);
        }),
      },
    });
    const req = reflect(rid(19), 80);
    await h.server.receive(req, A);
    const m = decoded(h.socket.sent[0]!.bytes);
    t.equal(m.name === 'ERROR' && m.body.code, code);
    t.equal(m.name === 'ERROR' && m.body.retryAfterMs, 250, 'retryAfterMs passed on');
    await h.server.receive(req, A);
    t.equal(n, 2, `${code}: executed again`);
    t.equal(decoded(h.socket.sent[1]!.bytes).name, 'REFLECT_RESULT');
    await h.server.receive(req, A);
    t.equal(n, 2, 'the success is cached');
  }
});

t.test('session: after TRY_LATER the retransmitted datagram executes (its sequence number was not spent)', async (t) => {
  const w = sessionWorld();
  const { handlers, refreshes } = sessionHandlers({ busyOnce: true });
  const h = harness({ handlers, sessions: w.sessions, clock: w.clock });
  const cs = w.client();
  await h.server.receive(cs.encode('REGISTER', rid(20), { ticket: w.ticket, timeMs: w.clock.ms }), A);
  validated(h, w, cs);
  const ref = cs.encode('REFRESH', rid(21), {});
  await h.server.receive(ref, A);
  const m1 = decoded(h.socket.sent[1]!.bytes);
  t.equal(m1.name === 'ERROR' && m1.body.code, ErrorCode.TRY_LATER);
  await h.server.receive(ref, A);
  t.equal(decoded(h.socket.sent[2]!.bytes).name, 'REFRESH_ACK', 'executed, not refused as a replay');
  t.equal(refreshes(), 2);
  await h.server.receive(ref, A);
  t.equal(refreshes(), 2, 'then answered from the cache');
  t.equal(decoded(h.socket.sent[3]!.bytes).name, 'REFRESH_ACK');
});

t.test('a cached answer larger than its request is resent at most MAX_RETRANSMIT times (spoofed copies cannot amplify)', async (t) => {
  const w = sessionWorld();
  const { handlers, refreshes } = sessionHandlers();
  const h = harness({ handlers, sessions: w.sessions, clock: w.clock });
  const cs = w.client();
  await h.server.receive(cs.encode('REGISTER', rid(22), { ticket: w.ticket, timeMs: w.clock.ms }), A);
  validated(h, w, cs);
  const ref = cs.encode('REFRESH', rid(23), {});
  for (let i = 0; i < 1 + MAX_RETRANSMIT + 3; i++) await h.server.receive(ref, A);
  const answers = h.socket.sent.slice(1);
  t.ok(answers[0]!.bytes.length > ref.length, 'the answer is larger than the request (else there is nothing to cap)');
  t.equal(refreshes(), 1, 'executed once');
  t.equal(answers.length, 1 + MAX_RETRANSMIT, 'the first answer and MAX_RETRANSMIT resends, then silence');
  t.ok(answers.every((s) => s.bytes.equals(answers[0]!.bytes)), 'every resend is the cached answer');
  t.equal(h.metrics.get('dropped_total', { reason: 'retransmissions-exhausted' }), 3, 'later copies counted');
  t.ok(h.logs.some((l) => l['event'] === 'drop:retransmissions-exhausted'), 'and logged');
  // A reply no larger than its request is not capped: resending it amplifies nothing.
  const c = counting();
  const hr = harness({ handlers: { REFLECT: c.handler } });
  const big = reflect(rid(24), 200);
  for (let i = 0; i < 1 + MAX_RETRANSMIT + 3; i++) await hr.server.receive(big, A);
  t.ok(hr.socket.sent[0]!.bytes.length <= big.length);
  t.equal(hr.socket.sent.length, 1 + MAX_RETRANSMIT + 3, 'small answers are always resent');
  t.equal(c.calls(), 1);
});

t.test('handler errors: a DevlocError gives its code; anything else INTERNAL and a log line', async (t) => {
  const h = harness({
    handlers: {
      REFLECT: anyHandler((ctx: RequestContext) => {
        const pad = ctx.msg.name === 'REFLECT' ? ctx.msg.body.padding?.length ?? 0 : 0;
        if (pad > 900) throw new DevlocError(ErrorCode.FORBIDDEN, '€'.repeat(100));
        if (pad > 500) throw new TypeError('boom: a bug');
        throw new DevlocError(ErrorCode.NOT_FOUND, 'no such group');
      }),
    },
  });
  await h.server.receive(reflect(rid(22), 200), A);
  const m1 = decoded(h.socket.sent[0]!.bytes);
  t.equal(m1.name === 'ERROR' && m1.body.code, ErrorCode.NOT_FOUND);
  t.equal(m1.name === 'ERROR' && m1.body.message, 'no such group');
  await h.server.receive(reflect(rid(23), 600), A);
  const m2 = decoded(h.socket.sent[1]!.bytes);
  t.equal(m2.name === 'ERROR' && m2.body.code, ErrorCode.INTERNAL);
  t.equal(m2.name === 'ERROR' && m2.body.message, 'internal error', 'no internals on the wire');
  const line = h.logs.find((l) => l['msg'] === 'handler failed');
  t.ok(line, 'logged');
  t.equal(line?.['level'], 'error');
  t.match(String(line?.['err']), /boom: a bug/);
  // Multi-byte text is cut to the 120-byte limit of the ERROR schema, on a character boundary.
  await h.server.receive(reflect(rid(24), 1000), A);
  const m3 = decoded(h.socket.sent[2]!.bytes);
  t.equal(m3.name === 'ERROR' && m3.body.code, ErrorCode.FORBIDDEN);
  t.equal(m3.name === 'ERROR' && m3.body.message, '€'.repeat(40), '40 three-byte characters');
});

t.test('a handler reply larger than a datagram is not sent: INTERNAL instead', async (t) => {
  const w = sessionWorld();
  const h = harness({
    handlers: {
      REGISTER: (ctx) => ctx.reply('REGISTER_ACK', { observed: ctx.from, ttlS: 90, refreshS: 25, locatorId: ctx.session!.locatorId }),
      REFRESH: () => Buffer.alloc(MAX_DATAGRAM + 1),
    },
    sessions: w.sessions, clock: w.clock,
  });
  const cs = w.client();
  await h.server.receive(cs.encode('REGISTER', rid(25), { ticket: w.ticket, timeMs: w.clock.ms }), A);
  validated(h, w, cs);
  await h.server.receive(cs.encode('REFRESH', rid(26), {}), A);
  const r = h.socket.sent[1]!;
  t.ok(r.bytes.length <= MAX_DATAGRAM);
  const m = decoded(r.bytes);
  t.equal(m.name === 'ERROR' && m.body.code, ErrorCode.INTERNAL);
  t.ok(m.auth, 'MACed in the session');
  t.ok(cs.accept({ msg: m, raw: r.bytes, from: A }), 'the terminal accepts it');
  t.ok(h.logs.some((l) => l['msg'] === 'reply too large'));
});

t.test('rate limiting per source IP, only once a MAC proved the datagram: RATE_LIMITED with retryAfterMs and the request ID; notifications bounded', async (t) => {
  const w = sessionWorld();
  const clock = w.clock;
  const rl = new RateLimiter({ ratePerS: 2, burst: 3, now: () => clock.ms });
  const { handlers, refreshes } = sessionHandlers();
  const h = harness({ handlers, sessions: w.sessions, clock, rateLimiter: rl });
  const cs = w.client();
  await h.server.receive(cs.encode('REGISTER', rid(99), { ticket: w.ticket, timeMs: clock.ms }), { ip: A.ip, port: 999 });
  for (let i = 0; i < 12; i++) await h.server.receive(cs.encode('REFRESH', rid(100 + i), {}), { ip: A.ip, port: 1000 + i });
  t.equal(refreshes(), 2, 'the burst (REGISTER + 2) is executed, whatever the source port');
  const refusals = h.socket.sent.slice(3).map((s) => decoded(s.bytes));
  t.equal(refusals.length, 3, 'notifications bounded by their own bucket');
  refusals.forEach((m, i) => {
    t.equal(m.name === 'ERROR' && m.body.code, ErrorCode.RATE_LIMITED);
    t.equal(m.name === 'ERROR' && m.body.retryAfterMs, 500, 'one token at 2/s: 500 ms');
    t.same(Buffer.from(m.rid), rid(102 + i), 'carries the refused request ID');
  });
  t.equal(h.metrics.get('refused_total', { code: 'RATE_LIMITED' }), 3);
  t.equal(h.metrics.get('dropped_total', { reason: 'rate-limited' }), 7);
  clock.ms += 500;
  await h.server.receive(cs.encode('REFRESH', rid(201), {}), A);
  t.equal(refreshes(), 3, 'a token refilled after retryAfterMs (the refused sequence numbers were not spent)');
});

t.test('datagrams that prove nothing never charge the source they claim: one budget shared by all sources', async (t) => {
  const w = sessionWorld();
  const clock = w.clock;
  const rl = new RateLimiter({ ratePerS: 1, burst: 3, now: () => clock.ms });
  const c = counting();
  const { handlers: session, refreshes } = sessionHandlers();
  const handlers: Handlers = { REFLECT: c.handler, ...session };
  const h = harness({ handlers, sessions: w.sessions, clock, rateLimiter: rl });
  // Forged with the victim's IP: junk, a forged MAC, a replay of the victim's own datagram.
  const cs = w.client();
  await h.server.receive(cs.encode('REGISTER', rid(300), { ticket: w.ticket, timeMs: clock.ms }), A);
  validated(h, w, cs);
  const captured = cs.encode('REFRESH', rid(301), {});
  await h.server.receive(captured, A);
  t.equal(refreshes(), 1);
  const forged = Buffer.from(cs.encode('REFRESH', rid(302), {}));
  forged[forged.length - 1]! ^= 1;
  const shared = 3 * UNPROVEN_BUDGET_FACTOR;
  for (let i = 0; i < shared + 20; i++) {
    const pick = i % 3;
    await h.server.receive(pick === 0 ? Buffer.from([0x01]) : pick === 1 ? forged : captured, { ip: A.ip, port: 40_000 + i });
  }
  t.ok(h.metrics.get('dropped_total', { reason: 'unproven-budget' }) >= 20, 'the shared budget ran out');
  // The victim's own MACed requests are still served: its bucket was never charged.
  await h.server.receive(cs.encode('REFRESH', rid(303), {}), A);
  t.equal(refreshes(), 2, 'the victim is served');
  // Unauthenticated requests draw on the shared budget only, and it refills.
  await h.server.receive(reflect(rid(304), 80), B);
  t.equal(c.calls(), 0, 'an unproven request waits for the shared budget');
  clock.ms += 1000;
  await h.server.receive(reflect(rid(305), 80), B);
  t.equal(c.calls(), 1, 'served once it refilled');
  // Never larger than the request: a tiny limited request gets no notification.
  const rl2 = new RateLimiter({ ratePerS: 1, burst: 1, now: () => clock.ms });
  const h2 = harness({ handlers: { REFLECT: c.handler }, rateLimiter: rl2, clock });
  for (let i = 0; i < UNPROVEN_BUDGET_FACTOR; i++) await h2.server.receive(reflect(rid(400 + i), 80), A);
  const before = h2.socket.sent.length;
  await h2.server.receive(reflect(rid(500), 0), A);
  t.equal(h2.socket.sent.length, before, 'no notification larger than the request');
});

t.test('peekEnvelope reads request ID and type of canonical envelopes only', async (t) => {
  const d = reflect(rid(300), 40);
  t.same(peekEnvelope(d), { type: 0x50, rid: rid(300) });
  t.same(peekEnvelope(encodeDatagram('AUTH_REQUEST', rid(301), { authdKey: Buffer.alloc(4), ephemeral: Buffer.alloc(32), sealed: Buffer.alloc(16) })), { type: 2, rid: rid(301) });
  t.same(peekEnvelope(Buffer.from([0x84, 0x01])), {});
  t.same(peekEnvelope(Buffer.from([0x83, 0x01, 0x02])), {});
  t.same(peekEnvelope(Buffer.from([0x84, 0x01, 0x18, 0x7f, 0x41, 0x00])), { type: 0x7f });
});

t.test('loopback: over many random unauthenticated inputs, no datagram is answered with more bytes than it had', async (t) => {
  const w = sessionWorld();
  const socket = await bindUdp({ host: '127.0.0.1', port: 0 });
  const bigAnswer = (ctx: RequestContext): Buffer => ctx.reply('AUTH_RESPONSE', { sealed: Buffer.alloc(ctx.raw.length % 1000) });
  const h = harness({
    socket,
    sessions: w.sessions,
    clock: w.clock,
    rateLimiter: new RateLimiter({ ratePerS: 1e6, burst: 1e6, now: () => w.clock.ms }),
    handlers: {
      REFLECT: anyHandler((ctx: RequestContext) => (ctx.raw.length % 3 === 0 ? reflectResult(ctx) : ctx.reply('REFLECT_RESULT', { observed: ctx.from, from: ctx.from, otherIp: Buffer.alloc(16), otherPort: 9 }))),
      AUTH_REQUEST: bigAnswer as never,
      REGISTER: (ctx) => ctx.reply('REGISTER_ACK', { observed: ctx.from, ttlS: 90, refreshS: 25, locatorId: ctx.session!.locatorId }),
      REFRESH: (ctx) => ctx.reply('GROUP_MEMBERS_RESULT', { members: [], total: 0, name: 'x'.repeat(60) } as never),
      QUERY_ADDR: () => { throw new DevlocError(ErrorCode.FORBIDDEN, 'a long refusal text that is longer than small requests are'); },
    },
  });
  t.teardown(() => h.server.close());
  // Count bytes at the server socket: per destination, per datagram.
  let sentBytes = 0;
  const send = socket.send.bind(socket) as (...a: unknown[]) => void;
  (socket as unknown as { send: (...a: unknown[]) => void }).send = (...a: unknown[]) => {
    sentBytes += (a[0] as Buffer).length;
    send(...a);
  };
  const attacker = dgram.createSocket('udp4');
  await new Promise<void>((r) => attacker.bind(0, '127.0.0.1', () => r()));
  t.teardown(() => attacker.close());
  let receivedBytes = 0;
  let receivedDatagrams = 0;
  attacker.on('message', (m) => {
    receivedBytes += m.length;
    receivedDatagrams++;
  });
  // A legitimate terminal opens a session; the attacker replays what it sent.
  const cs = w.client();
  const legit: Buffer[] = [cs.encode('REGISTER', rid(400), { ticket: w.ticket, timeMs: w.clock.ms })];
  for (let i = 0; i < 5; i++) legit.push(cs.encode('REFRESH', rid(401 + i), {}));
  legit.push(cs.encode('QUERY_ADDR', rid(410), { ids: [w.locatorId] }));
  for (const [i, d] of legit.entries()) {
    await h.server.receive(d, { ip: '127.0.0.1', port: 1 });
    // The terminal's own address proved it receives (routability.ts), as its client would.
    if (i === 0) validated(h, w, cs, { ip: '127.0.0.1', port: 1 });
  }
  const rng = new Rng(20260101);
  const seeds = [...sampleDatagrams([]), ...legit];
  const port = socket.address().port;
  const served = (): number => h.metrics.get('datagrams_received_total');
  let sentTotal = 0;
  let worst = 0;
  for (let i = 0; i < 1500; i++) {
    const input = rng.chance(0.15) ? rng.pick(legit) : rng.chance(0.1) ? rng.bytes(rng.smallLength(MAX_DATAGRAM)) : mutate(rng.pick(seeds), rng, () => rng.pick(seeds), MAX_DATAGRAM);
    if (input.length === 0) continue;
    const before = sentBytes;
    const n = served();
    attacker.send(input, port, '127.0.0.1');
    sentTotal += input.length;
    await until(() => served() > n, 'the server to receive the datagram');
    await new Promise((r) => setImmediate(r));
    const answered = sentBytes - before;
    worst = Math.max(worst, answered / input.length);
    if (answered > input.length) t.fail(`answered ${answered} B to a ${input.length} B datagram: ${input.toString('hex')}`);
  }
  // Everything sent on loopback arrives: wait for the attacker's socket to have it all.
  await until(() => receivedDatagrams >= h.metrics.get('datagrams_sent_total') - legit.length, 'every answer to arrive');
  t.ok(receivedBytes <= sentTotal, `attacker received ${receivedBytes} B for ${sentTotal} B sent (worst ratio ${worst.toFixed(2)})`);
  t.ok(receivedDatagrams > 100, `many inputs were answered (${receivedDatagrams})`);
});

// Skipped only where the machine has no ::1 (checked with a bind attempt).
const noIpv6 = await bindUdp({ host: '::1', port: 0 }).then((s) => (s.close(), false), (err: Error) => `no ::1 on this machine (${err.message})`);

t.test('IPv6 loopback (::1)', { skip: noIpv6 }, async (t) => {
  const socket = await bindUdp({ host: '::1', port: 0 });
  const h = harness({ socket, handlers: { REFLECT: reflectResult as never } });
  t.teardown(() => h.server.close());
  const client = await UdpClient.open({ bind: { host: '::1', port: 0 }, policy: { initialTimeoutMs: 2000 } });
  t.teardown(() => client.close());
  const id = UdpClient.newRequestId();
  const r = await client.request({ ip: '::1', port: socket.address().port }, reflect(id, 64), id);
  t.equal(r.msg.name, 'REFLECT_RESULT');
  if (r.msg.name === 'REFLECT_RESULT') t.same(r.msg.body.observed, { ip: '::1', port: client.localPort }, 'observed address is IPv6');
  t.same(r.from, { ip: '::1', port: socket.address().port });
});

t.test('close() while a handler runs: its late reply is dropped and nothing throws', async (t) => {
  const socket = await bindUdp({ host: '127.0.0.1', port: 0 });
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const h = harness({
    socket,
    handlers: { REFLECT: anyHandler(async (ctx) => { await gate; return reflectResult(ctx); }) },
  });
  const pending = h.server.receive(reflect(rid(500), 80), { ip: '127.0.0.1', port: 9 });
  await h.server.close();
  release();
  await t.resolves(pending, 'receive() settles normally');
  t.equal(h.metrics.get('dropped_total', { reason: 'closed' }), 1);
  await h.server.close();
  t.pass('close() twice is harmless');
});

t.test('shared replay window (several instances): asked before the handler; replay, elsewhere, store down, try again', async (t) => {
  const sharedWindow = recordingWindow();
  const { verdicts, claims, released } = sharedWindow;
  const w = sessionWorld(undefined, { sharedWindow });
  const { handlers, refreshes } = sessionHandlers({ busyOnce: true });
  const h = harness({ handlers, sessions: w.sessions, clock: w.clock });
  const cs = w.client();
  await h.server.receive(cs.encode('REGISTER', rid(30), { ticket: w.ticket, timeMs: w.clock.ms }), A);
  t.equal(decoded(h.socket.sent[0]!.bytes).name, 'REGISTER_ACK', 'claimed, executed');
  validated(h, w, cs);
  // Taken by another instance for another source: REPLAY, not executed.
  verdicts.push('replay');
  const r1 = cs.encode('REFRESH', rid(31), {});
  await h.server.receive(r1, B);
  const m1 = decoded(h.socket.sent[1]!.bytes);
  t.equal(m1.name === 'ERROR' && m1.body.code, ErrorCode.REPLAY, 'REPLAY');
  t.ok(h.socket.sent[1]!.bytes.length <= r1.length, 'no larger than the request');
  t.equal(refreshes(), 0, 'the handler did not run');
  // Taken by another instance for this source: a retransmission, dropped here.
  verdicts.push('elsewhere');
  await h.server.receive(cs.encode('REFRESH', rid(32), {}), A);
  t.equal(h.socket.sent.length, 2, 'no answer');
  t.equal(h.metrics.get('dropped_total', { reason: 'in-flight-elsewhere' }), 1);
  // The store is unavailable: TRY_LATER, nothing executed, and the same datagram may come again.
  verdicts.push(Object.assign(new Error('redis down'), { retryAfterMs: 250 }));
  const r3 = cs.encode('REFRESH', rid(33), {});
  await h.server.receive(r3, A);
  const m3 = decoded(h.socket.sent[2]!.bytes);
  t.equal(m3.name === 'ERROR' && m3.body.code, ErrorCode.TRY_LATER, 'TRY_LATER');
  t.notMatch(h.socket.sent[2]!.bytes.toString('latin1'), /redis down/, "the store's own words are not on the wire");
  t.ok(h.logs.some((l) => l['code'] === 'TRY_LATER' && String(l['detail']).includes('redis down')), 'they are in the log line');
  t.equal(refreshes(), 0);
  // Claimed, the handler answers TRY_LATER: the number is given back to the shared window.
  await h.server.receive(r3, A);
  t.equal(refreshes(), 1);
  const seq3 = claims[claims.length - 1]!;
  t.same(released, [seq3], 'released after "try again"');
  await h.server.receive(r3, A);
  t.equal(decoded(h.socket.sent[h.socket.sent.length - 1]!.bytes).name, 'REFRESH_ACK', 'then executed');
  t.same(released, [seq3], 'an executed number is kept');
});

t.test('a claim left to the handler (claimInHandler): folded into its store write, taken alone when it answers without one, answered as a claim before it', async (t) => {
  const sharedWindow = recordingWindow();
  const { verdicts: aloneVerdicts, claims, released } = sharedWindow;
  const w = sessionWorld(undefined, { sharedWindow });
  // What the REFRESH handler's "store" does with the claim, per request.
  type Plan = { fold: ClaimVerdict } | { answer: 'not-found' | 'try-later' | 'challenge' } | { fold: 'ok'; thenFail: true } | { failWhileAsking: true };
  const plans: Plan[] = [];
  let written = 0;
  const handlers: Handlers = {
    REGISTER: (ctx) => ctx.reply('REGISTER_ACK', { observed: ctx.from, ttlS: 90, refreshS: 25, locatorId: ctx.session!.locatorId }),
    REFRESH: async (ctx) => {
      const claim = ctx.claim!;
      const plan = plans.shift()!;
      if ('answer' in plan) {
        if (plan.answer === 'challenge') return NEEDS_VALIDATION;
        return plan.answer === 'not-found' ? { error: ErrorCode.NOT_FOUND, message: 'not registered' } : { error: ErrorCode.TRY_LATER, message: 'busy', retryAfterMs: 10 };
      }
      claim.asking();
      await Promise.resolve();
      if ('failWhileAsking' in plan) throw new DevlocError(ErrorCode.TRY_LATER, 'store timed out', 10);
      claim.settle(plan.fold);
      if (plan.fold !== 'ok') throw new ClaimRefused(plan.fold);
      written++;
      if ('thenFail' in plan) throw new DevlocError(ErrorCode.TRY_LATER, 'store failed after the write', 10);
      return ctx.reply('REFRESH_ACK', { observed: ctx.from, ttlS: 90, refreshS: 25, locatorId: ctx.session!.locatorId });
    },
  };
  const h = harness({ handlers, sessions: w.sessions, clock: w.clock, claimInHandler: new Set(['REFRESH']) });
  const cs = w.client();
  const last = (): Message => decoded(h.socket.sent[h.socket.sent.length - 1]!.bytes);
  await h.server.receive(cs.encode('REGISTER', rid(40), { ticket: w.ticket, timeMs: w.clock.ms }), A);
  t.equal(last().name, 'REGISTER_ACK');
  t.equal(claims.length, 1, 'a REGISTER (not in claimInHandler) is claimed before its handler');
  validated(h, w, cs);

  plans.push({ fold: 'ok' });
  await h.server.receive(cs.encode('REFRESH', rid(41), {}), A);
  t.equal(last().name, 'REFRESH_ACK', 'folded, taken: answered');
  t.equal(claims.length, 1, 'the server asked the shared window nothing more');
  t.equal(written, 1);

  plans.push({ fold: 'replay' });
  const r2 = cs.encode('REFRESH', rid(42), {});
  await h.server.receive(r2, A);
  const m2 = last();
  t.equal(m2.name === 'ERROR' && m2.body.code, ErrorCode.REPLAY, 'folded, refused: REPLAY');
  t.ok(h.socket.sent[h.socket.sent.length - 1]!.bytes.length <= r2.length, 'no larger than the request');
  t.equal(written, 1, 'nothing written');
  t.match(h.logs.at(-1), { event: 'REFRESH:REPLAY', reason: 'sequence already seen (shared window)' }, 'logged as a claim refused before the handler is');

  const sent = h.socket.sent.length;
  plans.push({ fold: 'elsewhere' });
  await h.server.receive(cs.encode('REFRESH', rid(43), {}), A);
  t.equal(h.socket.sent.length, sent, 'folded, taken elsewhere for this source: no answer');
  t.equal(h.metrics.get('dropped_total', { reason: 'in-flight-elsewhere' }), 1);

  // The handler answers without its store: the server takes the claim, then answers.
  plans.push({ answer: 'not-found' });
  await h.server.receive(cs.encode('REFRESH', rid(44), {}), A);
  const m4 = last();
  t.equal(m4.name === 'ERROR' && m4.body.code, ErrorCode.NOT_FOUND, 'answered after the claim');
  t.equal(claims.length, 2, 'claimed alone');
  plans.push({ answer: 'not-found' });
  aloneVerdicts.push('replay');
  await h.server.receive(cs.encode('REFRESH', rid(45), {}), A);
  const m5 = last();
  t.equal(m5.name === 'ERROR' && m5.body.code, ErrorCode.REPLAY, "a refused claim wins over the handler's answer");

  // "Try again" answers: the claim is taken, then given back (as when it was taken first).
  plans.push({ answer: 'try-later' });
  const r6 = cs.encode('REFRESH', rid(46), {});
  await h.server.receive(r6, A);
  const m6 = last();
  t.equal(m6.name === 'ERROR' && m6.body.code, ErrorCode.TRY_LATER);
  const seq6 = claims[claims.length - 1]!;
  t.same(released, [seq6], 'taken alone, then released');
  plans.push({ fold: 'ok', thenFail: true });
  const r7 = cs.encode('REFRESH', rid(47), {});
  await h.server.receive(r7, A);
  const seq7 = verifyAuthSeq(r7);
  t.same(released, [seq6, seq7], 'folded, then the store failed: released');
  plans.push({ failWhileAsking: true });
  const r8 = cs.encode('REFRESH', rid(48), {});
  await h.server.receive(r8, A);
  t.same(released, [seq6, seq7, verifyAuthSeq(r8)], 'the store failed while asking (maybe taken): released');
  // From an unvalidated address: claimed, then challenged and released (the number not spent).
  plans.push({ answer: 'challenge' });
  const r9 = cs.encode('REFRESH', rid(49), {});
  await h.server.receive(r9, B);
  t.equal(last().name, 'ADDR_CHALLENGE');
  t.equal(claims[claims.length - 1], verifyAuthSeq(r9), 'claimed before the challenge');
  t.equal(released[released.length - 1], verifyAuthSeq(r9), 'then released');
  t.equal(plans.length, 0);
});

t.test('a response (an ack) is not kept in the response cache: a byte-identical copy is stopped by the replay window, unanswered, counted as a response copy', async (t) => {
  const w = sessionWorld();
  let acks = 0;
  const handlers: Handlers = {
    REGISTER: (ctx) => ctx.reply('REGISTER_ACK', { observed: ctx.from, ttlS: 90, refreshS: 25, locatorId: ctx.session!.locatorId }),
    PRESENCE_ACK: () => {
      acks++;
      return null;
    },
  };
  const h = harness({ handlers, sessions: w.sessions, clock: w.clock });
  const cs = w.client();
  await h.server.receive(cs.encode('REGISTER', rid(40), { ticket: w.ticket, timeMs: w.clock.ms }), A);
  validated(h, w, cs);
  const sentBefore = h.socket.sent.length;
  const ack = cs.encode('PRESENCE_ACK', rid(41), { id: w.locatorId });
  await h.server.receive(ack, A);
  t.equal(acks, 1, 'the ack is taken');
  await h.server.receive(ack, A);
  t.equal(acks, 1, 'its copy is not executed again');
  t.equal(h.socket.sent.length, sentBefore, 'nothing is ever sent back to an ack');
  t.equal(h.metrics.get('retransmissions_answered_total'), 0, 'the copy was not found in the response cache (nothing was cached)');
  t.equal(h.metrics.get('dropped_total', { reason: 'response-copy' }), 1, 'the replay window stopped it: counted as a copy of a response');
  t.equal(h.metrics.get('refused_total', { code: 'REPLAY' }), 0, 'not as a REPLAY refusal');
  t.ok(h.logs.some((l) => l['event'] === 'drop:response-copy' && l['type'] === 'PRESENCE_ACK'), 'logged');
});

t.test("a response's handler refusing it (an ended session's ack, a store failure) sends nothing either", async (t) => {
  const w = sessionWorld();
  let refusal: Refusal = { error: ErrorCode.KICKED, message: 'session ended by the operator' };
  const handlers: Handlers = {
    REGISTER: (ctx) => ctx.reply('REGISTER_ACK', { observed: ctx.from, ttlS: 90, refreshS: 25, locatorId: ctx.session!.locatorId }),
    PRESENCE_ACK: () => refusal,
    PROBE_ACK: () => Promise.resolve(refusal),
  };
  const h = harness({ handlers, sessions: w.sessions, clock: w.clock });
  const cs = w.client();
  await h.server.receive(cs.encode('REGISTER', rid(50), { ticket: w.ticket, timeMs: w.clock.ms }), A);
  validated(h, w, cs);
  const sentBefore = h.socket.sent.length;
  await h.server.receive(cs.encode('PRESENCE_ACK', rid(51), { id: w.locatorId }), A);
  refusal = { error: ErrorCode.TRY_LATER, message: 'store unavailable, try later', retryAfterMs: 50 };
  await h.server.receive(cs.encode('PROBE_ACK', rid(52), {}), A);
  t.equal(h.socket.sent.length, sentBefore, 'no ERROR goes back to a response');
  t.equal(h.metrics.get('dropped_total', { reason: 'response-not-answered' }), 2, 'counted');
  t.equal(h.metrics.get('refused_total', { code: 'KICKED' }), 1, 'and the refusal itself counted and logged');
  t.ok(h.logs.some((l) => l['event'] === 'PROBE_ACK:TRY_LATER'), 'logged');
  // From an address not validated for the session: nothing built for it either (an ERROR MACed
  // and then dropped would spend one of the server's sequence numbers).
  const held = w.sessions.get(cs.sid.toString('hex'))!;
  const txSeq = held.txSeq;
  refusal = { error: ErrorCode.KICKED, message: 'session ended by the operator' };
  await h.server.receive(cs.encode('PRESENCE_ACK', rid(53), { id: w.locatorId }), B);
  t.equal(h.socket.sent.length, sentBefore, 'nothing to the unvalidated address');
  t.equal(held.txSeq, txSeq, 'no sequence number spent on it');
  t.equal(h.metrics.get('refused_total', { code: 'KICKED' }), 2, 'counted as the refusal it is');
});

t.test('an unauthenticated response (REVOKE_ACK) is not cached either: a copy runs the handler again, nothing is sent', async (t) => {
  let acks = 0;
  const h = harness({ handlers: { REVOKE_ACK: () => { acks++; return null; } } });
  const ack = encodeDatagram('REVOKE_ACK', rid(42), {});
  await h.server.receive(ack, A);
  await h.server.receive(ack, A);
  t.equal(acks, 2, 'executed twice (taking an ack twice changes nothing)');
  t.equal(h.socket.sent.length, 0, 'nothing sent');
  t.equal(h.metrics.get('retransmissions_answered_total'), 0, 'no response cache entry');
});
