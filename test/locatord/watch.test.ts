// Presence pushed, not polled (issue 18): WATCH / UNWATCH, PRESENCE pushes and PRESENCE_ACK,
// PRESENCE_SET and QUERY_STATUS `presence`, against a real locatord on both stores. What a
// watcher is told is what QUERY_STATUS would answer it; hidden is offline; pushes go to the
// watcher's registered address only; a watcher's list and its pending pushes are bounded. A
// registration removed by a kick, a REVOKE or a SIGHUP is pushed offline like an UNREGISTER.
import t from 'tap';
import type { Test } from 'tap';
import type { Reply } from '../../src/net/client.js';
import { UdpClient } from '../../src/net/client.js';
import type { PresenceEntry } from '../../src/wire/catalog.js';
import { MAX_WATCHES } from '../../src/wire/catalog.js';
import { ErrorCode } from '../../src/wire/errors.js';
import type { ServerOptions, StoreFixture, TestKeys, TestServer } from './fixtures/helpers.js';
import { errorCodeOf, FakeClock, forEachStore, makeKeys, onRedisStore, Terminal, writeKeyFiles } from './fixtures/helpers.js';
import type { Address } from '../../src/wire/addr.js';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { startDaemon } from '../helpers/daemon.js';
import type { RunningDaemon } from '../helpers/daemon.js';
import type { KeyObject } from 'node:crypto';
import { Logger } from '../../src/common/log.js';
import { locatordControl } from '../../src/locatord/control.js';
import { encodeDatagram } from '../../src/wire/envelope.js';
import type { MessageOf } from '../../src/wire/envelope.js';
import { privateKeyObject, publicKeyObject } from '../../src/wire/keys.js';
import { signRevoke } from '../../src/wire/revoke.js';
import { encodeArrayAround } from '../../src/wire/cbor.js';
import { MessageType } from '../../src/wire/catalog.js';
import { PROTOCOL_VERSION } from '../../src/wire/constants.js';
import { sealDatagram } from '../../src/wire/session.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** A terminal whose socket collects the PRESENCE pushes it gets (acknowledging them unless told not to). */
interface Watcher {
  term: Terminal;
  pushes: PresenceEntry[];
  from: Address[];
  /** The next push satisfying `pred` (already received or to come; 10 s at most). */
  waitFor: (pred: (e: PresenceEntry) => boolean, what: string) => Promise<PresenceEntry>;
}

async function openWatcher(t: Test, keys: TestKeys, dest: Address, o: { ack?: boolean; nowS?: number } = {}): Promise<Watcher> {
  const pushes: PresenceEntry[] = [];
  const from: Address[] = [];
  let wake: (() => void) | undefined;
  let term: Terminal | undefined;
  const client = await UdpClient.open({
    bind: { host: '127.0.0.1', port: 0 }, policy: { initialTimeoutMs: 300, deadlineMs: 10_000 },
    onPush: (r: Reply) => {
      if (!term || r.msg.name !== 'PRESENCE' || !term.session.accept(r)) return;
      pushes.push(r.msg.body);
      from.push(r.from);
      if (o.ack !== false) term.client.send(term.dest, term.session.encode('PRESENCE_ACK', r.msg.rid, { id: r.msg.body.id }));
      wake?.();
    },
  });
  t.teardown(() => client.close());
  term = await Terminal.open(t, keys, dest, { client, ...(o.nowS !== undefined ? { nowS: o.nowS } : {}) });
  const waitFor = async (pred: (e: PresenceEntry) => boolean, what: string): Promise<PresenceEntry> => {
    const end = Date.now() + 10_000;
    for (let seen = 0; ;) {
      for (; seen < pushes.length; seen++) if (pred(pushes[seen]!)) return pushes[seen]!;
      if (Date.now() > end) throw new Error(`no push: ${what}`);
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, 200);
      });
    }
  };
  return { term, pushes, from, waitFor };
}

/** A server on store `s` with a registered watcher. */
async function withWatcher(t: Test, s: StoreFixture, o: ServerOptions = {}): Promise<TestServer & { w: Watcher }> {
  const server = await s.start(t, o);
  const w = await openWatcher(t, server.keys, server.dest);
  await w.term.expect(t, 'REGISTER_ACK', w.term.register());
  return { ...server, w };
}

const isFor = (id: Buffer, online: boolean) => (e: PresenceEntry): boolean => hex(e.id) === hex(id) && e.online === online;

t.test('watch: online, presence change and offline are pushed; QUERY_STATUS returns the record', (t) => forEachStore(t, async (t, s) => {
  const { loc, dest, keys } = await s.start(t);
  const w = await openWatcher(t, keys, dest);
  await w.term.expect(t, 'REGISTER_ACK', w.term.register());
  const friend = await Terminal.open(t, keys, dest);
  const ack = await w.term.expect(t, 'WATCH_ACK', w.term.request('WATCH', { ids: [friend.locatorId] }));
  t.same(ack.body, { entries: [{ id: friend.locatorId, online: false }], watching: 1 }, 'offline now; watching one');

  await friend.expect(t, 'REGISTER_ACK', friend.register({ nickname: 'ann', presence: { mediaId: 'chess', status: 'hi' } }));
  const on = await w.waitFor(isFor(friend.locatorId, true), 'online');
  t.same(on.nickname, 'ann');
  t.same(on.presence, { mediaId: 'chess', status: 'hi' });

  await friend.expect(t, 'PRESENCE_SET_ACK', friend.request('PRESENCE_SET', { presence: { mediaId: 'go', lookingForPartner: true, wants: { level: 3 }, status: 'up for a game' } }));
  const changed = await w.waitFor((e) => e.presence?.status === 'up for a game', 'presence change');
  t.same(changed.presence, { mediaId: 'go', lookingForPartner: true, wants: { level: 3 }, status: 'up for a game' });
  const q = await w.term.expect(t, 'QUERY_STATUS_RESULT', w.term.request('QUERY_STATUS', { ids: [friend.locatorId, w.term.locatorId], presence: true }));
  t.same(q.body, { online: [true, true], presence: [changed.presence, {}] }, 'QUERY_STATUS presence: the record, {} without one');
  const addr = await w.term.expect(t, 'QUERY_ADDR_RESULT', w.term.request('QUERY_ADDR', { ids: [friend.locatorId] }));
  t.equal(addr.body.entries[0]!.mediaId, 'go', 'PRESENCE_SET mediaId is the media ID');

  await friend.expect(t, 'UNREGISTER_ACK', friend.request('UNREGISTER', {}));
  await w.waitFor(isFor(friend.locatorId, false), 'offline');
  t.ok(w.from.every((f) => f.port === loc.port), 'pushed by the locatord');
  for (const end = Date.now() + 10_000; loc.metrics.get('presence_acks_total') !== w.pushes.length && Date.now() < end;) await new Promise((r) => setTimeout(r, 10));
  t.equal(loc.metrics.get('presence_acks_total'), w.pushes.length, 'each push acknowledged');
  t.equal(loc.presencePushes.size, 0, 'nothing pending');

  const un = await w.term.expect(t, 'UNWATCH_ACK', w.term.request('UNWATCH', { ids: [friend.locatorId] }));
  t.equal(un.body.watching, 0);
}));

t.test('consent: a hidden terminal is offline to its watcher, and its coming and going pushes nothing', (t) => forEachStore(t, async (t, s) => {
  const { dest, keys } = await s.start(t);
  const w = await openWatcher(t, keys, dest);
  await w.term.expect(t, 'REGISTER_ACK', w.term.register());
  const hidden = await Terminal.open(t, keys, dest);
  const open = await Terminal.open(t, keys, dest);
  await hidden.expect(t, 'REGISTER_ACK', hidden.register({ visibility: 1, nickname: 'shy' }));
  const ack = await w.term.expect(t, 'WATCH_ACK', w.term.request('WATCH', { ids: [hidden.locatorId, open.locatorId, Buffer.alloc(16, 7)] }));
  t.same(ack.body.entries, [{ id: hidden.locatorId, online: false }, { id: open.locatorId, online: false }, { id: Buffer.alloc(16, 7), online: false }],
    'hidden, offline and unknown answer alike');
  await hidden.expect(t, 'PRESENCE_SET_ACK', hidden.request('PRESENCE_SET', { presence: { status: 'busy' } }));
  await hidden.expect(t, 'UNREGISTER_ACK', hidden.request('UNREGISTER', {}));
  await hidden.expect(t, 'REGISTER_ACK', hidden.register({ visibility: 1 }));
  // A change the watcher may see, after the hidden ones: once it arrives, nothing came of them.
  await open.expect(t, 'REGISTER_ACK', open.register());
  await w.waitFor(isFor(open.locatorId, true), 'the visible one');
  t.same(w.pushes.filter((e) => hex(e.id) === hex(hidden.locatorId)), [], 'nothing about the hidden terminal');
  // Allowed now (allow list): it comes online for the watcher.
  await hidden.expect(t, 'REGISTER_ACK', hidden.register({ visibility: 1, allow: [w.term.locatorId] }));
  await w.waitFor(isFor(hidden.locatorId, true), 'allowed: online');
}));

t.test('bounds: at most MAX_WATCHES IDs; pushes wait at most so many per watcher that never acks', (t) => forEachStore(t, async (t, s) => {
  const { loc, dest, keys } = await s.start(t);
  const w = await openWatcher(t, keys, dest, { ack: false });
  await w.term.expect(t, 'REGISTER_ACK', w.term.register());
  const ids = Array.from({ length: MAX_WATCHES }, (_, i) => Buffer.from(i.toString(16).padStart(32, '0'), 'hex'));
  // An ID named twice in one WATCH is watched once and takes one place (both stores).
  const twice = await w.term.expect(t, 'WATCH_ACK', w.term.request('WATCH', { ids: [ids[0]!, ids[0]!] }));
  t.equal(twice.body.watching, 1, 'a duplicate ID counts once');
  for (let i = 0; i < MAX_WATCHES; i += 64) {
    const a = await w.term.expect(t, 'WATCH_ACK', w.term.request('WATCH', { ids: ids.slice(i, i + 64) }));
    t.equal(a.body.watching, i + 64);
  }
  const again = await w.term.expect(t, 'WATCH_ACK', w.term.request('WATCH', { ids: ids.slice(0, 3) }));
  t.equal(again.body.watching, MAX_WATCHES, 'watching again what is watched costs no room');
  t.equal(errorCodeOf(await w.term.request('WATCH', { ids: [Buffer.alloc(16, 0xee)] })), ErrorCode.FULL, 'one more: FULL');
  await w.term.expect(t, 'UNWATCH_ACK', w.term.request('UNWATCH', { ids: [], all: true }));

  // 40 watched terminals come online; the watcher never acks: at most 32 pushes wait.
  const friends = await Promise.all(Array.from({ length: 40 }, () => Terminal.open(t, keys, dest)));
  await w.term.expect(t, 'WATCH_ACK', w.term.request('WATCH', { ids: friends.map((f) => f.locatorId) }));
  for (const f of friends) await f.expect(t, 'REGISTER_ACK', f.register());
  for (const end = Date.now() + 10_000; loc.presencePushes.size + loc.metrics.get('presence_dropped_total') < 40 && Date.now() < end;) await new Promise((r) => setTimeout(r, 10));
  t.equal(loc.presencePushes.size, 32, 'pending pushes bounded per watcher');
  t.equal(loc.metrics.get('presence_dropped_total'), 8, 'the rest dropped and counted');
  // A flood of changes by one terminal: still one push for the pair.
  for (let i = 0; i < 20; i++) await friends[0]!.expect(t, 'PRESENCE_SET_ACK', friends[0]!.request('PRESENCE_SET', { presence: { status: `s${i}` } }));
  t.ok(loc.presencePushes.size <= 32, 'changes to a pending pair replace its content');
}));

t.test('paging: a WATCH whose answer does not fit one datagram is answered in pages (cursor), every ID once, and all are watched', (t) => forEachStore(t, async (t, s) => {
  const { dest, keys, w } = await withWatcher(t, s);
  // Presence records near their bound (8 wanted attributes of 64-byte text, 64-byte status): a few per datagram.
  const fat = { wants: Object.fromEntries(Array.from({ length: 8 }, (_, i) => [`attr${i}`, 'v'.repeat(64)])), status: 's'.repeat(64) };
  const friends = await Promise.all(Array.from({ length: 4 }, () => Terminal.open(t, keys, dest)));
  for (const f of friends) await f.expect(t, 'REGISTER_ACK', f.register({ nickname: 'n'.repeat(32), presence: fat }));
  const ids = friends.map((f) => f.locatorId);
  const answered: string[] = [];
  let cursor: number | undefined = 0;
  let pages = 0;
  for (; cursor !== undefined; pages++) {
    const ack: MessageOf<'WATCH_ACK'> = await w.term.expect(t, 'WATCH_ACK', w.term.request('WATCH', { ids, cursor }));
    t.ok(ack.body.entries.length > 0 && ack.body.entries.every((e) => e.online && e.presence?.status === fat.status), `page ${pages}: online entries with their record`);
    answered.push(...ack.body.entries.map((e) => hex(e.id)));
    cursor = ack.body.nextCursor;
    t.equal(ack.body.watching, ids.length, 'every ID watched from the first page on');
    if (pages > ids.length) break;
  }
  t.ok(pages > 1, `more than one page (${pages})`);
  t.same(answered, ids.map(hex), 'every ID answered once, in order');
  await friends[3]!.expect(t, 'PRESENCE_SET_ACK', friends[3]!.request('PRESENCE_SET', { presence: { status: 'changed' } }));
  await w.waitFor((e) => e.presence?.status === 'changed', 'an ID of the last page is watched');
}));

t.test('abuse: PRESENCE_SET oversize, replayed or out of order; pushes never go to a spoofed source', (t) => forEachStore(t, async (t, s) => {
  const { dest, keys } = await s.start(t);
  const w = await openWatcher(t, keys, dest);
  await w.term.expect(t, 'REGISTER_ACK', w.term.register());
  const friend = await Terminal.open(t, keys, dest);
  await friend.expect(t, 'REGISTER_ACK', friend.register());
  t.equal(errorCodeOf(await friend.request('PRESENCE_SET', { presence: { status: 'x'.repeat(65) } })), ErrorCode.BAD_MESSAGE, 'status text over 64 bytes: BAD_MESSAGE');
  t.equal(errorCodeOf(await friend.request('PRESENCE_SET', { presence: { wants: Object.fromEntries(Array.from({ length: 9 }, (_, i) => [`a${i}`, i])) } })), ErrorCode.BAD_MESSAGE, 'more than 8 wanted attributes: BAD_MESSAGE');
  // Two sets, the later one arriving first: the earlier changes nothing.
  const first = friend.encode('PRESENCE_SET', { presence: { status: 'old' } });
  const second = friend.encode('PRESENCE_SET', { presence: { status: 'new' } });
  await friend.expect(t, 'PRESENCE_SET_ACK', friend.send(second));
  await friend.expect(t, 'PRESENCE_SET_ACK', friend.send(first));
  const q = await w.term.expect(t, 'QUERY_STATUS_RESULT', w.term.request('QUERY_STATUS', { ids: [friend.locatorId], presence: true }));
  t.same(q.body.presence, [{ status: 'new' }], 'an older PRESENCE_SET does not undo a newer one');
  // Unregistered: nothing to set, nowhere to push to.
  await w.term.expect(t, 'UNREGISTER_ACK', w.term.request('UNREGISTER', {}));
  t.equal(errorCodeOf(await w.term.request('PRESENCE_SET', { presence: {} })), ErrorCode.NOT_FOUND, 'PRESENCE_SET unregistered: NOT_FOUND');
  t.equal(errorCodeOf(await w.term.request('WATCH', { ids: [friend.locatorId] })), ErrorCode.NOT_FOUND, 'WATCH unregistered: NOT_FOUND');
  await w.term.expect(t, 'REGISTER_ACK', w.term.register());

  // The watcher asks from another socket (a spoofed source): the push still goes to its registered address.
  const other = await UdpClient.open({ bind: { host: '127.0.0.1', port: 0 }, policy: { initialTimeoutMs: 300, deadlineMs: 10_000 }, onPush: () => t.fail('pushed to the asking source') });
  t.teardown(() => other.close());
  const watching = await w.term.send(w.term.encode('WATCH', { ids: [friend.locatorId] }), other);
  t.equal(watching.msg.name, 'WATCH_ACK');
  await friend.expect(t, 'PRESENCE_SET_ACK', friend.request('PRESENCE_SET', { presence: { status: 'newest' } }));
  await w.waitFor((e) => e.presence?.status === 'newest', 'at the registered address');
}));

t.test('abuse: a forged PRESENCE_SET (bad MAC), one replayed from another source, one from an older session: nothing changes, nothing is pushed', (t) => forEachStore(t, async (t, s) => {
  const { dest, keys, w } = await withWatcher(t, s);
  const old = await Terminal.open(t, keys, dest);
  await old.expect(t, 'REGISTER_ACK', old.register());
  // The same terminal (same locator ID, same socket) registers again in a newer session: `old`
  // is its older one. (From another socket it would be a clone: identity-conflict.test.ts.)
  const friend = await Terminal.open(t, keys, dest, { locatorId: old.locatorId, client: old.client });
  await friend.expect(t, 'REGISTER_ACK', friend.register());
  await friend.expect(t, 'PRESENCE_SET_ACK', friend.request('PRESENCE_SET', { presence: { status: 'real' } }));
  await w.term.expect(t, 'WATCH_ACK', w.term.request('WATCH', { ids: [friend.locatorId] }));
  const attacker = await UdpClient.open({ bind: { host: '127.0.0.1', port: 0 }, policy: { initialTimeoutMs: 300, deadlineMs: 10_000 } });
  t.teardown(() => attacker.close());

  const flipped = friend.encode('PRESENCE_SET', { presence: { status: 'forged' } });
  flipped.bytes[flipped.bytes.length - 1]! ^= 1;
  t.equal(errorCodeOf(await attacker.request(dest, flipped.bytes, flipped.rid, { accept: () => true })), ErrorCode.BAD_MAC, 'forged: BAD_MAC');
  const captured = friend.encode('PRESENCE_SET', { presence: { status: 'captured' } });
  await friend.expect(t, 'PRESENCE_SET_ACK', friend.send(captured));
  await friend.expect(t, 'PRESENCE_SET_ACK', friend.request('PRESENCE_SET', { presence: { status: 'latest' } }));
  await w.waitFor((e) => e.presence?.status === 'latest', 'the genuine change');
  const replayed = await attacker.request(dest, captured.bytes, captured.rid, { accept: () => true });
  t.not(replayed.msg.name, 'PRESENCE', 'the replay is answered (cached answer or REPLAY), not executed again');
  t.equal(errorCodeOf(await old.request('PRESENCE_SET', { presence: { status: 'older session' } })), -1, 'the older session is answered...');
  const q = await w.term.expect(t, 'QUERY_STATUS_RESULT', w.term.request('QUERY_STATUS', { ids: [friend.locatorId], presence: true }));
  t.same(q.body.presence, [{ status: 'latest' }], '...and neither it, the forgery nor the replay changed the record');
  // A change the watcher may see, after them: once it arrives, nothing else was pushed meanwhile.
  await friend.expect(t, 'PRESENCE_SET_ACK', friend.request('PRESENCE_SET', { presence: { status: 'last' } }));
  await w.waitFor((e) => e.presence?.status === 'last', 'the last change');
  // (A copy may come twice on a loaded machine, and a pending push may skip to a newer change.)
  const told = w.pushes.map((e) => e.presence?.status);
  t.same(told.slice(told.indexOf('latest')).filter((x) => x !== 'latest' && x !== 'last'), [], 'pushed after the attempts: the genuine changes only');
}));

t.test('presence fields not in canonical CBOR: decoded strictly, kept and told re-encoded; what CBOR receivers refuse is refused', (t) => forEachStore(t, async (t, s) => {
  const { dest, keys, w } = await withWatcher(t, s);
  const friend = await Terminal.open(t, keys, dest);
  await friend.expect(t, 'REGISTER_ACK', friend.register());
  t.match((await w.term.expect(t, 'WATCH_ACK', w.term.request('WATCH', { ids: [friend.locatorId] }))).body.entries, [{ online: true }]);
  // PRESENCE_SET {presence: {status: 'hi', wants: {b: 1 (two-byte head), a: 2}}}: keys out of order at both levels.
  const body = Buffer.from('a101a2046268690' + '3a261621801616102', 'hex');
  const raw = (b: Buffer): { rid: Buffer; bytes: Buffer } => {
    const rid = UdpClient.newRequestId();
    const auth = [friend.session.sid, friend.session.nextSeq, Buffer.alloc(16)];
    // The session's own counter is not advanced: each raw request is sent once, and last.
    return { rid, bytes: sealDatagram(friend.session.keys.terminalToServer, encodeArrayAround([PROTOCOL_VERSION, MessageType.PRESENCE_SET, rid], b, [auth])) };
  };
  const floatBody = Buffer.from('a101a103a16161f93c00', 'hex'); // wants {a: 1.0 as a half float}
  const float = raw(floatBody);
  // Refused before the MAC is looked at: the ERROR is not MACed, so it is read without the session.
  t.equal(errorCodeOf(await friend.client.request(dest, float.bytes, float.rid)), ErrorCode.MALFORMED, 'a float: MALFORMED, as every receiver refuses it');
  await friend.expect(t, 'PRESENCE_SET_ACK', friend.send(raw(body)));
  const told = await w.waitFor((e) => e.presence?.status === 'hi', 'the record, told');
  t.same(told.presence, { wants: { a: 2, b: 1 }, status: 'hi' });
  t.same(Object.keys(told.presence!.wants!), ['a', 'b'], 'told in deterministic order');
  const q = await w.term.expect(t, 'QUERY_STATUS_RESULT', w.term.request('QUERY_STATUS', { ids: [friend.locatorId], presence: true }));
  t.same(q.body.presence, [{ wants: { a: 2, b: 1 }, status: 'hi' }]);
}));

t.test('expiry: a watched terminal that expires is pushed offline at the next sweep', (t) => forEachStore(t, async (t, s) => {
  const clock = new FakeClock();
  const { loc, dest, keys } = await s.start(t, { now: clock.now, limits: { minTtlS: 30, defaultTtlS: 30, maxTtlS: 600 } });
  const nowS = Math.floor(clock.ms / 1000);
  const w = await openWatcher(t, keys, dest, { nowS });
  await w.term.expect(t, 'REGISTER_ACK', w.term.request('REGISTER', { ticket: w.term.creds.ticket, timeMs: clock.ms, ttlS: 600 }));
  const friend = await Terminal.open(t, keys, dest, { nowS });
  await friend.expect(t, 'REGISTER_ACK', friend.request('REGISTER', { ticket: friend.creds.ticket, timeMs: clock.ms, ttlS: 30 }));
  await w.term.expect(t, 'WATCH_ACK', w.term.request('WATCH', { ids: [friend.locatorId] }));
  clock.advance(31_000);
  await loc.sweep();
  await w.waitFor(isFor(friend.locatorId, false), 'offline after expiry');
}));

t.test('removed by someone else (devloc ctl kick, REVOKE from authd, SIGHUP distrusting its key): the watcher is told offline', (t) => forEachStore(t, async (t, s) => {
  const keys = makeKeys();
  const other: TestKeys = { ...makeKeys(), service: keys.service };
  const trust = (k: TestKeys[]): Map<string, KeyObject> => new Map(k.map((x) => [x.kid, publicKeyObject('Ed25519', x.authd.public)]));
  const { loc, dest, w } = await withWatcher(t, s, { keys, trustedKeys: trust([keys, other]) });
  const [kicked, revoked] = await Promise.all([Terminal.open(t, keys, dest), Terminal.open(t, keys, dest)]);
  const distrusted = await Terminal.open(t, other, dest);
  const friends = [kicked, revoked, distrusted];
  await w.term.expect(t, 'WATCH_ACK', w.term.request('WATCH', { ids: friends.map((f) => f.locatorId) }));
  for (const f of friends) {
    await f.expect(t, 'REGISTER_ACK', f.register());
    await w.waitFor(isFor(f.locatorId, true), 'online');
  }

  const kick = await locatordControl(loc, new Logger({ service: 'locatord', write: () => undefined })).commands['kick']!({ target: hex(kicked.locatorId) });
  t.match(kick, { registrationRemoved: true });
  await w.waitFor(isFor(kicked.locatorId, false), 'kicked: offline');

  const rid = UdpClient.newRequestId();
  const body = signRevoke(rid, { locatorId: revoked.locatorId, code: ErrorCode.REVOKED, untilS: Math.floor(Date.now() / 1000) + 600, timeMs: Date.now() }, keys.kid, privateKeyObject('Ed25519', keys.authd));
  const ack = await w.term.client.request(dest, encodeDatagram('REVOKE', rid, body), rid);
  t.equal(ack.msg.name, 'REVOKE_ACK');
  await w.waitFor(isFor(revoked.locatorId, false), 'revoked: offline');

  await loc.reload({ trustedKeys: trust([keys]) });
  await w.waitFor(isFor(distrusted.locatorId, false), 'distrusted: offline');
}));

onRedisStore(t, 'redis: the watcher on one instance is told of a change made through another, after a restart of either', async (t, s) => {
  const a = await s.start(t);
  const b = await s.start(t, { keys: a.keys });
  const w = await openWatcher(t, a.keys, a.dest);
  await w.term.expect(t, 'REGISTER_ACK', w.term.register());
  const friend = await Terminal.open(t, a.keys, b.dest);
  await w.term.expect(t, 'WATCH_ACK', w.term.request('WATCH', { ids: [friend.locatorId] }));
  await friend.expect(t, 'REGISTER_ACK', friend.register({ presence: { status: 'via B' } }));
  await w.waitFor(isFor(friend.locatorId, true), 'online, told through A');
  t.same(w.from.map((f) => f.port), [a.loc.port], 'pushed from the instance the watcher speaks to');
  // Instance A restarts: the subscription is in Redis; the next change still reaches the watcher.
  await a.loc.stop({ snapshot: false });
  const a2 = await s.start(t, { keys: a.keys });
  w.term.dest = a2.dest;
  await w.term.expect(t, 'REFRESH_ACK', w.term.request('REFRESH', {}));
  await friend.expect(t, 'PRESENCE_SET_ACK', friend.request('PRESENCE_SET', { presence: { status: 'after restart' } }));
  await w.waitFor((e) => e.presence?.status === 'after restart', 'after A restarted');
  // Instance B (the watched terminal's) restarts: its next change, made through the new B, still reaches the watcher.
  await b.loc.stop({ snapshot: false });
  const b2 = await s.start(t, { keys: a.keys });
  friend.dest = b2.dest;
  await friend.expect(t, 'REFRESH_ACK', friend.request('REFRESH', {}));
  await friend.expect(t, 'PRESENCE_SET_ACK', friend.request('PRESENCE_SET', { presence: { status: 'after B restarted' } }));
  await w.waitFor((e) => e.presence?.status === 'after B restarted', 'after B restarted');
});

t.test('a real locatord restarted with SIGTERM keeps its subscriptions (snapshot): the next change is pushed without a new WATCH', async (t) => {
  const dir = t.testdir();
  const keys = makeKeys();
  const files = writeKeyFiles(dir, keys);
  const start = async (): Promise<RunningDaemon> => {
    const d = await startDaemon('locatord/main.ts', [
      '--listen', '127.0.0.1', '--port', '0', '--reflector-port', '-1',
      '--service-key', files.serviceKey, '--trust', files.trust, '--state-dir', path.join(dir, 'state'), '--rate', '0',
    ]);
    t.teardown(() => d.stop('SIGKILL'));
    return d;
  };
  const portOf = (d: RunningDaemon): Address => ({ ip: '127.0.0.1', port: Number(d.listening['port']) });
  const d1 = await start();
  const w = await openWatcher(t, keys, portOf(d1));
  await w.term.expect(t, 'REGISTER_ACK', w.term.register({ ttlS: 600 }));
  const friend = await Terminal.open(t, keys, portOf(d1));
  await friend.expect(t, 'REGISTER_ACK', friend.register({ ttlS: 600, presence: { status: 'before' } }));
  const ack = await w.term.expect(t, 'WATCH_ACK', w.term.request('WATCH', { ids: [friend.locatorId] }));
  t.equal(ack.body.watching, 1);
  t.equal(await d1.stop('SIGTERM'), 0, 'clean exit: snapshot written');

  const d2 = await start();
  const restored = await d2.waitFor((l) => l['msg'] === 'snapshot restored');
  t.equal(restored['watchLists'], 1, 'the watch list restored with the registrations');
  w.term.dest = portOf(d2);
  friend.dest = portOf(d2);
  const count = await w.term.expect(t, 'WATCH_ACK', w.term.request('WATCH', { ids: [] }));
  t.equal(count.body.watching, 1, 'locatord still holds the list');
  // No new WATCH: the change made after the restart is pushed, and only it (the status told
  // before the restart is the view kept, so nothing is pushed again for it).
  await friend.expect(t, 'PRESENCE_SET_ACK', friend.request('PRESENCE_SET', { presence: { status: 'after restart' } }));
  await w.waitFor((e) => e.presence?.status === 'after restart', 'the change after the restart');
  t.same(w.pushes.map((e) => e.presence?.status), ['after restart'], 'one push, the change');
  // The watcher's registration still ends its list.
  await w.term.expect(t, 'UNREGISTER_ACK', w.term.request('UNREGISTER', {}));
  await w.term.expect(t, 'REGISTER_ACK', w.term.register({ ttlS: 600 }));
  t.equal((await w.term.expect(t, 'WATCH_ACK', w.term.request('WATCH', { ids: [] }))).body.watching, 0, 'gone with its registration');
});

onRedisStore(t, 'redis: watch entries forged in Redis (a planted watcher, a planted or moved view) are refused, counted and dropped', async (t, s) => {
  const { loc, dest, keys } = await s.start(t);
  const redis = new Redis((await s.redis())!.url);
  t.teardown(() => redis.disconnect());
  const w = await openWatcher(t, keys, dest);
  const x = await openWatcher(t, keys, dest);
  await w.term.expect(t, 'REGISTER_ACK', w.term.register());
  await x.term.expect(t, 'REGISTER_ACK', x.term.register());
  const friend = await Terminal.open(t, keys, dest);
  const other = await Terminal.open(t, keys, dest);
  await w.term.expect(t, 'WATCH_ACK', w.term.request('WATCH', { ids: [friend.locatorId, other.locatorId] }));
  const [fh, oh, xh, wh] = [friend.locatorId, other.locatorId, x.term.locatorId, w.term.locatorId].map(hex) as [string, string, string, string];
  // Someone who can write Redis but lacks the service key: x planted as a watcher of friend
  // (bare ID, ID with a made-up tag, and w's genuine member of another target moved here).
  const genuine = (await redis.smembersBuffer(`dl:wb:{${oh}}`))[0]!;
  t.equal(genuine.length, 32, "a member is the watcher's ID and a 16-byte tag");
  await redis.sadd(`dl:wb:{${fh}}`, xh, Buffer.concat([x.term.locatorId, randomBytes(16)]), Buffer.concat([Buffer.from(xh, 'hex'), genuine.subarray(16)]));
  // ... and a view planted for x (it never watched friend), and w's view of friend replaced by its view of other.
  await redis.hset(`dl:w:{${xh}}`, fh, 'anything');
  const moved = await redis.hgetBuffer(`dl:w:{${wh}}`, oh);
  await redis.hset(`dl:w:{${wh}}`, fh, moved!);

  await friend.expect(t, 'REGISTER_ACK', friend.register({ presence: { status: 'here' } }));
  // The fan-out checks the members first (watchersOf), then w's view (swapView): once the view
  // is counted refused, the fan-out of this change is over, and w's push was not sent for it.
  const rejected = (kind: string): number => loc.metrics.get('redis_records_rejected_total', { kind });
  for (const end = Date.now() + 30_000; rejected('watch') < 1 && Date.now() < end;) await new Promise((r) => setTimeout(r, 20));
  t.equal(rejected('watch'), 1, 'the moved view refused (w not told on the strength of it)');
  t.equal(rejected('watcher'), 3, 'three planted watchers refused');
  t.same(x.pushes, [], 'the planted watcher was told nothing');
  t.same(w.pushes.filter(isFor(friend.locatorId, true)), [], 'w not told through the tampered pair');
  t.same((await redis.smembersBuffer(`dl:wb:{${fh}}`)).map((b) => b.subarray(0, 16).toString('hex')), [wh], 'planted members dropped');
  t.equal(await redis.hexists(`dl:w:{${wh}}`, fh), 0, 'the tampered pair dropped');
  // w watches friend again (a genuine entry): told of the next change.
  await w.term.expect(t, 'WATCH_ACK', w.term.request('WATCH', { ids: [friend.locatorId] }));
  await friend.expect(t, 'PRESENCE_SET_ACK', friend.request('PRESENCE_SET', { presence: { status: 'again' } }));
  await w.waitFor((e) => e.presence?.status === 'again', 'told after watching again');
});
