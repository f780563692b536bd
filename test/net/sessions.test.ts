// ServerSessions on a fake clock: opening from a ticket, the replay window, expiry with the
// ticket, and every refusal of a session-opening message.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import type { Handlers } from '../../src/net/server.js';
import { encodeDatagram, decodeDatagram } from '../../src/wire/envelope.js';
import { ErrorCode } from '../../src/wire/errors.js';
import { rawKey, sealDatagram } from '../../src/wire/session.js';
import { MAX_SESSIONS_PER_ID, newServerSession } from '../../src/net/sessions.js';
import { createSecretKey } from 'node:crypto';
import { A, decoded, harness, rid, sessionWorld } from './fixtures/net.js';
import type { SessionWorld } from './fixtures/net.js';

const ack = { observed: A, ttlS: 90, refreshS: 25 };
function handlers(): Handlers & { count: { register: number; refresh: number } } {
  const count = { register: 0, refresh: 0 };
  return {
    count,
    REGISTER: (ctx) => {
      count.register++;
      return ctx.reply('REGISTER_ACK', { ...ack, locatorId: ctx.session!.locatorId });
    },
    REFRESH: (ctx) => {
      count.refresh++;
      return ctx.reply('REFRESH_ACK', { ...ack, locatorId: ctx.session!.locatorId });
    },
  };
}

// The ticket names A, the harness's source, as authd's tickets name the grant's address: sessions open validated.
function setup(w: SessionWorld = sessionWorld(undefined, { ticketAddr: A })) {
  const hs = handlers();
  const h = harness({ handlers: hs, sessions: w.sessions, clock: w.clock });
  const last = () => decoded(h.socket.sent.at(-1)!.bytes);
  const code = () => {
    const m = last();
    return m.name === 'ERROR' ? m.body.code : m.name;
  };
  return { w, h, hs, last, code };
}

async function open(s: ReturnType<typeof setup>) {
  const cs = s.w.client();
  await s.h.server.receive(cs.encode('REGISTER', rid(1), { ticket: s.w.ticket, timeMs: s.w.clock.ms }), A);
  if (s.last().name !== 'REGISTER_ACK') throw new Error('session did not open');
  return cs;
}

t.test('a session opens from a ticket; later messages cost one MAC; the ticket is verified once', async (t) => {
  const s = setup();
  const cs = await open(s);
  t.equal(s.w.sessions.size, 1);
  t.equal(s.w.sessions.opened, 1);
  for (let i = 0; i < 3; i++) {
    await s.h.server.receive(cs.encode('REFRESH', rid(10 + i), {}), A);
    t.equal(s.code(), 'REFRESH_ACK');
  }
  t.equal(s.w.verifier.signatureChecks, 1);
  const reply = s.h.socket.sent.at(-1)!;
  t.ok(cs.accept({ msg: decoded(reply.bytes), raw: reply.bytes, from: A }), 'replies are MACed for the terminal');
});

t.test('a bad MAC with a huge sequence number never moves the window', async (t) => {
  const s = setup();
  const cs = await open(s);
  const session = s.w.sessions.get(s.w.cti.toString('hex'))!;
  const highest = session.window.highestSeen;
  const forged = sealDatagram(createSecretKey(randomBytes(32)), encodeDatagram('REFRESH', rid(20), {}, { sid: s.w.cti, seq: 2 ** 52 }));
  await s.h.server.receive(forged, A);
  t.equal(s.code(), ErrorCode.BAD_MAC);
  t.equal(s.last().auth, undefined, 'the refusal is not MACed (nothing verified)');
  t.ok(s.h.socket.sent.at(-1)!.bytes.length <= forged.length, 'and no larger than the forgery');
  t.equal(session.window.highestSeen, highest, 'window untouched');
  // A MAC-less copy of a real message with its seq bumped is a forgery too.
  const real = cs.encode('REFRESH', rid(21), {});
  const tampered = Buffer.from(real);
  tampered[tampered.length - 1]! ^= 1;
  await s.h.server.receive(tampered, A);
  t.equal(s.code(), ErrorCode.BAD_MAC);
  await s.h.server.receive(real, A);
  t.equal(s.code(), 'REFRESH_ACK', 'the next genuine sequence number is still accepted');
  t.equal(s.hs.count.refresh, 1);
});

t.test('replay window: seen and too-old sequence numbers refused; reordering within it accepted', async (t) => {
  const s = setup();
  const cs = await open(s);
  const msgs = Array.from({ length: 70 }, (_, i) => cs.encode('REFRESH', rid(100 + i), {}));
  await s.h.server.receive(msgs[69]!, A);
  t.equal(s.code(), 'REFRESH_ACK');
  await s.h.server.receive(msgs[20]!, A);
  t.equal(s.code(), 'REFRESH_ACK', 'out of order, inside the window of 64');
  await s.h.server.receive(msgs[1]!, A);
  t.equal(s.code(), ErrorCode.REPLAY, 'left of the window');
  // A seen sequence number under a new request ID (the cache does not know it): REPLAY.
  const again = s.w.client();
  for (let i = 0; i < 21; i++) again.encode('REFRESH', rid(0), {});
  const replayed = again.encode('REFRESH', rid(300), {});
  await s.h.server.receive(replayed, A);
  t.equal(s.code(), ErrorCode.REPLAY, 'sequence already seen');
  t.ok(s.h.socket.sent.at(-1)!.bytes.length <= replayed.length, 'REPLAY refusal no larger than the replayed datagram');
  t.equal(s.hs.count.refresh, 2);
});

t.test('the session expires with its ticket (fake clock)', async (t) => {
  const s = setup();
  const cs = await open(s);
  const sid = s.w.cti.toString('hex');
  const skewMs = s.w.verifier.clockSkewS * 1000;
  s.w.clock.ms = s.w.exp * 1000 + skewMs;
  t.ok(s.w.sessions.get(sid), 'still there at exp + skew');
  await s.h.server.receive(cs.encode('REFRESH', rid(30), {}), A);
  t.equal(s.code(), 'REFRESH_ACK');
  s.w.clock.ms += 1;
  t.equal(s.w.sessions.get(sid), undefined, 'gone just after');
  await s.h.server.receive(cs.encode('REFRESH', rid(31), {}), A);
  t.equal(s.code(), ErrorCode.NO_SESSION, 'no session: register again');
  // Tickets are checked at second granularity: one second on, the ticket is refused too.
  s.w.clock.ms += 1000;
  await s.h.server.receive(cs.encode('REGISTER', rid(32), { ticket: s.w.ticket, timeMs: s.w.clock.ms }), A);
  t.equal(s.code(), ErrorCode.TICKET_EXPIRED, 'and the expired ticket cannot reopen it');
  t.equal(s.w.sessions.size, 0);
});

t.test('refusals of a session-opening message', async (t) => {
  const s = setup();
  const cs = s.w.client();
  await s.h.server.receive(cs.encode('REFRESH', rid(40), {}), A);
  t.equal(s.code(), ErrorCode.NO_SESSION, 'unknown session and no ticket: NO_SESSION');
  // Ticket whose cti is not the session ID the message names.
  const other = s.w.issue({ cti: randomBytes(16) });
  await s.h.server.receive(cs.encode('REGISTER', rid(41), { ticket: other, timeMs: s.w.clock.ms }), A);
  t.equal(s.code(), ErrorCode.BAD_TICKET, 'cti != sid: BAD_TICKET');
  t.match(s.last().name === 'ERROR' ? s.last().body : {}, { message: /cti/ });
  // timeMs too old or too far ahead (default freshness 120 s).
  await s.h.server.receive(cs.encode('REGISTER', rid(42), { ticket: s.w.ticket, timeMs: s.w.clock.ms - 120_001 }), A);
  t.equal(s.code(), ErrorCode.CLOCK_SKEW, 'stale timeMs: CLOCK_SKEW');
  await s.h.server.receive(cs.encode('REGISTER', rid(43), { ticket: s.w.ticket, timeMs: s.w.clock.ms + 120_001 }), A);
  t.equal(s.code(), ErrorCode.CLOCK_SKEW, 'timeMs from the future: CLOCK_SKEW');
  // Another audience.
  const elsewhere = s.w.issue({ aud: 'matchd' });
  await s.h.server.receive(cs.encode('REGISTER', rid(44), { ticket: elsewhere, timeMs: s.w.clock.ms }), A);
  t.equal(s.code(), ErrorCode.WRONG_AUDIENCE);
  // A garbage ticket.
  await s.h.server.receive(cs.encode('REGISTER', rid(45), { ticket: Buffer.from('not a ticket'), timeMs: s.w.clock.ms }), A);
  t.equal(s.code(), ErrorCode.BAD_TICKET);
  t.equal(s.w.sessions.size, 0, 'no session was opened by any of these');
  t.equal(s.hs.count.register, 0, 'no handler ran');
  // Within the freshness bound it opens.
  await s.h.server.receive(cs.encode('REGISTER', rid(46), { ticket: s.w.ticket, timeMs: s.w.clock.ms - 119_000 }), A);
  t.equal(s.code(), 'REGISTER_ACK');
});

t.test('a valid ticket with a MAC made without the cnf secret opens nothing, and costs one X25519 at most', async (t) => {
  const s = setup();
  for (let i = 0; i < 5; i++) {
    const forged = sealDatagram(createSecretKey(randomBytes(32)), encodeDatagram('REGISTER', rid(50 + i), { ticket: s.w.ticket, timeMs: s.w.clock.ms }, { sid: s.w.cti, seq: 1 + i }));
    await s.h.server.receive(forged, A);
    t.equal(s.code(), ErrorCode.BAD_MAC);
  }
  t.equal(s.w.sessions.size, 0, 'stolen ticket: no session');
  t.equal(s.w.sessions.keyDerivations, 1, 'the key agreement is not repeated for each forgery');
  t.equal(s.w.verifier.signatureChecks, 1, 'nor the ticket signature check');
  await open(s);
  t.equal(s.w.sessions.keyDerivations, 1, 'the genuine terminal opens with the same keys');
});

t.test('the keys and verdicts kept for opening messages go when their ticket expires', async (t) => {
  // Two days of hourly renewals, each ticket valid for an hour and opening one session, as one
  // terminal does. The keys derived for each opening message stayed (no expiry) until 10,000
  // newer ones pushed them out, as did the ticket's cached verdict: 48 of each here. A forged MAC
  // is enough to make both (the keys are derived before the MAC is checked).
  const s = setup();
  let most = { keys: 0, tickets: 0 };
  for (let hour = 0; hour < 48; hour++) {
    const iat = Math.floor(s.w.clock.ms / 1000);
    const cti = randomBytes(16);
    const ticket = s.w.issue({ cti, iat, exp: iat + 3600 });
    const forged = sealDatagram(createSecretKey(randomBytes(32)), encodeDatagram('REGISTER', rid(100 + hour), { ticket, timeMs: s.w.clock.ms }, { sid: cti, seq: 1 }));
    await s.h.server.receive(forged, A);
    t.equal(s.code(), ErrorCode.BAD_MAC, `hour ${hour}: refused after the key derivation`);
    most = { keys: Math.max(most.keys, s.w.sessions.pendingKeyCount), tickets: Math.max(most.tickets, s.w.verifier.cachedTickets) };
    s.w.clock.ms += 3_600_000;
  }
  t.equal(s.w.sessions.keyDerivations, 48, 'one key derivation per ticket');
  t.ok(most.keys <= 2, `pending keys: at most the live ticket's and the one before (most: ${most.keys})`);
  t.ok(most.tickets <= 2, `cached verdicts: at most the live ticket's and the one before (most: ${most.tickets})`);
});

t.test('authenticate() directly: no auth, restore, dropWhere', async (t) => {
  const w = sessionWorld(undefined, { ticketAddr: A });
  const d = decodeDatagram(encodeDatagram('REFLECT', rid(60), {}));
  t.ok(d.ok);
  if (d.ok) t.match(w.sessions.authenticate(d.msg, Buffer.alloc(0)), { ok: false, code: ErrorCode.BAD_MESSAGE });
  const s = setup(w);
  await open(s);
  const all = [...w.sessions.all()];
  t.equal(all.length, 1);
  t.equal(w.sessions.dropWhere((x) => x.aud === 'locatord'), 1);
  t.equal(w.sessions.size, 0);
  w.sessions.restore(all[0]!);
  t.equal(w.sessions.size, 1, 'restored');
  w.clock.ms = (w.exp + w.verifier.clockSkewS) * 1000 + 1;
  w.sessions.restore(all[0]!);
  t.equal(w.sessions.get(all[0]!.sidHex), undefined, 'an expired session is not restored');
});

t.test('a session record keeps copies of its IDs and keys, not views of the datagram that opened it (issue 16)', async (t) => {
  const s = setup();
  const cs = s.w.client();
  const opening = cs.encode('REGISTER', rid(70), { ticket: s.w.ticket, timeMs: s.w.clock.ms });
  await s.h.server.receive(opening, A);
  t.equal(s.last().name, 'REGISTER_ACK');
  const session = [...s.w.sessions.all()][0]!;
  t.ok(session.sid.equals(cs.sid), 'sid');
  t.equal(session.sidHex, cs.sid.toString('hex'));
  t.equal(session.locatorId.toString('hex'), session.locatorHex);
  t.ok(rawKey(session.keys.terminalToServer).equals(rawKey(cs.keys.terminalToServer)), 'terminal-to-server key as the terminal derived it');
  t.ok(rawKey(session.keys.serverToTerminal).equals(rawKey(cs.keys.serverToTerminal)), 'server-to-terminal key');
  t.not(session.sid.buffer, opening.buffer, 'the sid is not a view of the opening datagram');
  // Overwriting the datagram (Node reuses receive buffers) changes nothing the session holds.
  const sidBefore = Buffer.from(session.sid);
  opening.fill(0);
  t.ok(session.sid.equals(sidBefore), 'the sid survives the datagram being overwritten');
  await s.h.server.receive(cs.encode('REFRESH', rid(71), {}), A);
  t.equal(s.code(), 'REFRESH_ACK', 'and the session goes on');
});

t.test('sessions per locator ID: the cap drops that ID\'s oldest, and the bookkeeping follows expiry and deletion', async (t) => {
  const w = sessionWorld(undefined, { ticketAddr: A });
  const s = setup(w);
  await open(s);
  const first = [...w.sessions.all()][0]!;
  const clones = Array.from({ length: MAX_SESSIONS_PER_ID }, () => newServerSession({
    sid: randomBytes(16), locatorId: first.locatorId, aud: first.aud, exp: first.exp,
    terminalToServer: randomBytes(32), serverToTerminal: randomBytes(32),
  }));
  for (const c of clones) w.sessions.restore(c);
  t.equal(w.sessions.size, MAX_SESSIONS_PER_ID, 'the cap holds');
  t.equal(w.sessions.get(first.sidHex), undefined, 'the oldest of that ID went');
  t.ok(w.sessions.get(clones[0]!.sidHex), 'the others stay');
  t.equal(w.sessions.dropWhere((x) => x.sidHex !== clones.at(-1)!.sidHex), MAX_SESSIONS_PER_ID - 1);
  // Back to one session for the ID: adding more again counts from there.
  for (const c of clones.slice(0, MAX_SESSIONS_PER_ID - 1)) w.sessions.restore(c);
  t.equal(w.sessions.size, MAX_SESSIONS_PER_ID);
  w.sessions.restore(first);
  t.equal(w.sessions.size, MAX_SESSIONS_PER_ID, 'still capped');
  t.equal(w.sessions.get(clones.at(-1)!.sidHex), undefined, 'the oldest (the one that stayed) went');
});

t.test('a shared session answered by two instances within one millisecond: the terminal takes every answer', async (t) => {
  // The clock of milliseconds stands still (both answers in one ms); the microsecond clock moves
  // on between them, as it does between one instance's answer and the next request reaching
  // the other. Before, both instances numbered from ms x 1000 and the second answer repeated
  // the first's number: the terminal refused it as a REPLAY, and every retransmission with it.
  const w = sessionWorld();
  let us = w.clock.ms * 1000;
  const clockUs = (): number => ++us;
  let stored: ReturnType<typeof newServerSession> | undefined;
  const one = w.instance({ clockUs, remote: () => Promise.resolve(undefined) });
  const two = w.instance({ clockUs, remote: () => Promise.resolve(stored) });
  const cs = w.client();
  const reply = (bytes: Buffer): boolean => cs.accept({ msg: decoded(bytes), raw: bytes, from: A });

  const open = cs.encode('REGISTER', rid(1), { ticket: w.ticket, timeMs: w.clock.ms });
  const a1 = one.authenticate(decoded(open), open);
  if (!a1.ok) throw new Error(a1.reason);
  const held = one.commit(a1.session);
  held.window.accept(1);
  // What Redis would hand the other instance: the session as opened (send sequence 0).
  stored = newServerSession({ sid: held.sid, sidHex: held.sidHex, locatorId: held.locatorId, aud: held.aud, exp: held.exp, terminalToServer: rawKey(held.keys.terminalToServer), serverToTerminal: rawKey(held.keys.serverToTerminal) });
  t.ok(reply(one.encode(held, 'REGISTER_ACK', rid(1), { observed: A, ttlS: 90, refreshS: 25, locatorId: w.locatorId })), 'first answer (instance one)');

  const seen: number[] = [];
  for (let i = 2; i <= 7; i++) {
    const inst = i % 2 ? one : two;
    const req = cs.encode('REFRESH', rid(i), {});
    await inst.fetch(held.sidHex);
    const a = inst.authenticate(decoded(req), req);
    if (!a.ok) throw new Error(a.reason);
    a.session.window.accept(i);
    const ack = inst.encode(a.session, 'REFRESH_ACK', rid(i), { observed: A, ttlS: 90, refreshS: 25, locatorId: w.locatorId });
    seen.push(decoded(ack).auth!.seq);
    t.ok(reply(ack), `answer ${i} (instance ${i % 2 ? 'one' : 'two'}) taken by the terminal`);
  }
  t.ok(seen.every((s, i) => i === 0 || s > seen[i - 1]!), 'sequence numbers increase across the instances');
});
