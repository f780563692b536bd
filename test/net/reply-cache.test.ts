// ReplyCache (net/reply-cache.ts): the response cache by raw session ID and request ID, on a
// fake clock. What devloc-protocol(7) "Response cache" promises: a retransmission (same source,
// same bytes) is found for the exchange lifetime; at most `capacity` answers, the oldest
// forgotten first; a request outside a session is keyed by its request ID alone.
import { createHash, randomBytes } from 'node:crypto';
import t from 'tap';
import { NIL } from '../../src/net/slot-index.js';
import { ReplyCache } from '../../src/net/reply-cache.js';

const LIFETIME = 48_500;
const rid = (n: number): Buffer => {
  const b = Buffer.alloc(8);
  b.writeUInt32BE(n, 4);
  return b;
};
/** A session datagram: whatever bytes, its last 16 the MAC tag. */
const datagram = (tag: number, length = 60): Buffer => {
  const b = Buffer.alloc(length, 7);
  b.fill(tag, length - 16);
  return b;
};
const answer = (n: number): Buffer => Buffer.from(`answer ${n}`);

t.test('a session request: found until its lifetime ends, by its session ID and request ID', async (t) => {
  const c = new ReplyCache(100, LIFETIME);
  const sid = randomBytes(16);
  const raw = datagram(1);
  c.remember(sid, rid(1), raw, '192.0.2.1', 4000, answer(1), 1000);
  const i = c.find(sid, rid(1), 1000 + LIFETIME - 1);
  t.not(i, NIL, 'found just before its lifetime ends');
  t.same(c.reply(i), answer(1));
  t.ok(c.isRetransmission(i, raw, '192.0.2.1', 4000), 'same source, same tag');
  t.notOk(c.isRetransmission(i, datagram(2), '192.0.2.1', 4000), 'another tag: other bytes');
  t.notOk(c.isRetransmission(i, raw, '192.0.2.1', 4001), 'another port');
  t.notOk(c.isRetransmission(i, raw, '192.0.2.2', 4000), 'another address');
  t.ok(c.sameSource(i, '192.0.2.1', 4000));
  t.equal(c.find(sid, rid(1), 1000 + LIFETIME), NIL, 'expired at its lifetime');
  t.equal(c.find(randomBytes(16), rid(1), 1000), NIL, 'another session, same request ID');
  t.equal(c.find(undefined, rid(1), 1000), NIL, 'the request ID outside a session');
  t.equal(c.find(sid, rid(2), 1000), NIL, 'another request ID');
});

t.test('outside a session: keyed by request ID alone, identified by its bytes (a copy, or a hash above 256 B)', async (t) => {
  const c = new ReplyCache(100, LIFETIME);
  const small = randomBytes(64);
  const large = randomBytes(300);
  c.remember(undefined, rid(1), small, '192.0.2.1', 4000, answer(1), 0);
  c.remember(undefined, rid(2), large, '192.0.2.1', 4000, null, 0);
  const i = c.find(undefined, rid(1), 10);
  t.ok(c.isRetransmission(i, Buffer.from(small), '192.0.2.1', 4000));
  const other = Buffer.from(small);
  other[10]! ^= 1;
  t.notOk(c.isRetransmission(i, other, '192.0.2.1', 4000), 'one byte differs');
  const j = c.find(undefined, rid(2), 10);
  t.equal(c.reply(j), null, 'nothing was sent');
  t.ok(c.isRetransmission(j, Buffer.from(large), '192.0.2.1', 4000));
  const otherLarge = Buffer.from(large);
  otherLarge[299]! ^= 1;
  t.notOk(c.isRetransmission(j, otherLarge, '192.0.2.1', 4000), 'one byte differs (hashed)');
  // A short request is never compared with a long one's hash, even when its bytes are that hash.
  const hashBytes = createHash('sha256').update(large).digest().subarray(0, 16);
  t.notOk(c.isRetransmission(j, hashBytes, '192.0.2.1', 4000), 'a 16-byte request equal to the hash kept');
  // The caller's buffer may be reused: the copy is the cache's own.
  small.fill(0);
  t.notOk(c.isRetransmission(i, small, '192.0.2.1', 4000));
});

t.test('resends counted per entry, from zero on a new answer', async (t) => {
  const c = new ReplyCache(10, LIFETIME);
  const sid = randomBytes(16);
  c.remember(sid, rid(1), datagram(1), '192.0.2.1', 1, answer(1), 0);
  const i = c.find(sid, rid(1), 0);
  t.equal(c.resent(i), 0);
  c.countResend(i);
  c.countResend(i);
  t.equal(c.resent(i), 2);
  c.remember(sid, rid(1), datagram(1), '192.0.2.1', 1, answer(2), LIFETIME + 1);
  const k = c.find(sid, rid(1), LIFETIME + 1);
  t.same(c.reply(k), answer(2), 'the same key remembered again replaces it');
  t.equal(c.resent(k), 0);
  t.equal(c.size, 1);
});

t.test('at capacity the oldest are forgotten first', async (t) => {
  const capacity = 3000;
  const c = new ReplyCache(capacity, LIFETIME);
  const sids = Array.from({ length: capacity + 500 }, () => randomBytes(16));
  for (let n = 0; n < sids.length; n++) c.remember(sids[n], rid(n), datagram(n & 255), '192.0.2.1', n & 0xffff, answer(n), n);
  t.equal(c.size, capacity);
  for (let n = 0; n < 500; n++) t.equal(c.find(sids[n], rid(n), sids.length), NIL, `oldest ${n} forgotten`);
  let found = 0;
  for (let n = 500; n < sids.length; n++) {
    const i = c.find(sids[n], rid(n), sids.length);
    if (i !== NIL && c.reply(i)!.equals(answer(n)) && c.isRetransmission(i, datagram(n & 255), '192.0.2.1', n & 0xffff)) found++;
  }
  t.equal(found, capacity, 'every newer one kept, with its own answer and source');
});

t.test('replaced entries leave holes that are reused, never counted twice', async (t) => {
  const c = new ReplyCache(4, LIFETIME);
  const sid = randomBytes(16);
  for (let round = 0; round < 10; round++) for (let n = 0; n < 3; n++) c.remember(sid, rid(n), datagram(n), '192.0.2.1', 1, answer(round), round);
  t.equal(c.size, 3);
  for (let n = 0; n < 3; n++) t.same(c.reply(c.find(sid, rid(n), 10)), answer(9));
});

t.test('purge forgets what expired, oldest first, and stops at the first one alive', async (t) => {
  const c = new ReplyCache(100, LIFETIME);
  const sid = randomBytes(16);
  for (let n = 0; n < 10; n++) c.remember(sid, rid(n), datagram(n), '192.0.2.1', 1, answer(n), n * 1000);
  t.equal(c.purge(LIFETIME + 4500), 5, 'the five added at 0-4 s');
  t.equal(c.size, 5);
  t.equal(c.find(sid, rid(4), 0), NIL);
  t.not(c.find(sid, rid(5), LIFETIME + 4500), NIL);
  t.equal(c.purge(LIFETIME + 4500), 0, 'nothing more');
  t.equal(c.purge(10 * LIFETIME), 5);
  t.equal(c.size, 0);
  c.remember(sid, rid(1), datagram(1), '192.0.2.1', 1, answer(1), 10 * LIFETIME);
  t.not(c.find(sid, rid(1), 10 * LIFETIME), NIL, 'usable after being emptied');
});

t.test('sources: IPv4 compared packed, IPv6 as text, the port too', async (t) => {
  const c = new ReplyCache(10, LIFETIME);
  const sid = randomBytes(16);
  c.remember(sid, rid(1), datagram(1), '192.0.2.1', 7, answer(1), 0);
  c.remember(sid, rid(2), datagram(2), '2001:db8::1', 7, answer(2), 0);
  const v4 = c.find(sid, rid(1), 0);
  const v6 = c.find(sid, rid(2), 0);
  t.ok(c.sameSource(v4, '192.0.2.1', 7));
  t.notOk(c.sameSource(v4, '192.0.2.10', 7));
  t.notOk(c.sameSource(v4, '2001:db8::1', 7));
  t.ok(c.sameSource(v6, '2001:db8::1', 7));
  t.notOk(c.sameSource(v6, '2001:db8::2', 7));
  t.notOk(c.sameSource(v6, '192.0.2.1', 7));
  t.notOk(c.sameSource(v6, '2001:db8::1', 8));
});

t.test('answers larger than the byte ring allows: the oldest forgotten sooner, never a wrong answer', async (t) => {
  const c = new ReplyCache(100, LIFETIME);
  const sid = randomBytes(16);
  const big = (n: number): Buffer => Buffer.alloc(1000, n & 255);
  for (let n = 0; n < 100; n++) c.remember(sid, rid(n), datagram(n & 255), '192.0.2.1', 1, big(n), 0);
  const fit = Math.floor(c.ringBytes / (1000 + 16));
  t.ok(c.size <= fit && c.size >= fit - 2, `about as many as fit (${c.size} of ${fit})`);
  for (let n = 0; n < 100; n++) {
    const i = c.find(sid, rid(n), 0);
    if (n >= 100 - (fit - 2)) t.not(i, NIL, `recent ${n} kept`);
    if (i !== NIL) t.same(c.reply(i), big(n), `${n}: its own answer`);
  }
  t.equal(c.find(sid, rid(0), 0), NIL, 'the oldest forgotten');
});

t.test('the byte ring\'s end: an answer ending exactly there stays; one a byte longer wraps and forgets what it overwrites', async (t) => {
  // Session entries take their answer's bytes and their 16-byte MAC tag, side by side.
  for (const over of [0, 1]) {
    const c = new ReplyCache(4, LIFETIME);
    const sid = randomBytes(16);
    const ring = c.ringBytes;
    const a = Buffer.alloc(Math.floor(ring / 2) - 16, 1);
    const b = Buffer.alloc(ring - (a.length + 16) - 16 + over, 2);
    c.remember(sid, rid(1), datagram(1), '192.0.2.1', 1, a, 0);
    c.remember(sid, rid(2), datagram(2), '192.0.2.1', 1, b, 0);
    const found = (n: number): Buffer | null => {
      const i = c.find(sid, rid(n), 0);
      return i === NIL ? null : c.reply(i);
    };
    if (over === 0) {
      t.same([found(1), found(2)], [a, b], 'exactly the ring: both kept');
      t.ok(c.isRetransmission(c.find(sid, rid(2), 0), datagram(2), '192.0.2.1', 1), 'the last entry\'s tag, in the ring\'s last bytes, compares');
      // The next answer starts the ring again: the first entry is in its way, the second is not.
      const small = Buffer.alloc(10, 3);
      c.remember(sid, rid(3), datagram(3), '192.0.2.1', 1, small, 0);
      t.same([found(1), found(2), found(3)], [null, b, small], 'wrapped: the first forgotten, the one at the end kept');
    } else {
      t.same([found(1), found(2)], [null, b], 'a byte over: the second wraps to the start and the first is forgotten');
    }
    t.equal(c.size, over === 0 ? 2 : 1);
  }
});

t.test('against a model: what is found is the latest answer, unexpired; what is recent enough is found', async (t) => {
  // Keys from a small pool, so that keys are remembered again (replaced) and holes form; answers
  // of every size, so that the byte ring wraps and forgets by bytes too; time moves in random
  // steps, so that entries expire; purges now and then. "Recent enough": among the last
  // `capacity` answers and, with what came after it, within the byte ring less one largest entry.
  const lifetime = 1000;
  for (const seed of [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]) {
    let x = seed;
    const rand = (n: number): number => {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      return (x >>> 8) % n;
    };
    const capacity = 1 + rand(64);
    const c = new ReplyCache(capacity, lifetime);
    const sids = Array.from({ length: 5 }, () => randomBytes(16));
    // Model: per key, the number of its last answer, the bytes kept before it, what it kept.
    const last = new Map<string, { n: number; bytesBefore: number; at: number; reply: Buffer | null; raw: Buffer; port: number }>();
    let n = 0;
    let written = 0;
    let now = 0;
    let bad = 0;
    let found = 0;
    for (let step = 0; step < 4000; step++) {
      const s = rand(6);
      const sid = s === 5 ? undefined : sids[s];
      const r = rid(rand(25));
      const key = `${s}/${r.toString('hex')}`;
      const op = rand(10);
      if (op < 5) {
        const size = rand(4) === 0 ? rand(1200) : rand(120);
        const reply = rand(8) === 0 ? null : Buffer.alloc(size, step & 255);
        // Outside a session the request's bytes (up to 256) or their hash are kept.
        const raw = sid ? datagram(step & 255, 40 + rand(60)) : randomBytes(1 + rand(300));
        const port = 1 + rand(3);
        last.set(key, { n, bytesBefore: written, at: now, reply, raw, port });
        c.remember(sid, r, raw, '192.0.2.1', port, reply, now);
        n++;
        written += (reply ? reply.length : 0) + (sid ? 16 : raw.length > 256 ? 16 : raw.length);
      } else if (op < 9) {
        const m = last.get(key);
        const i = c.find(sid, r, now);
        const alive = m !== undefined && now - m.at < lifetime;
        const recent = alive && n - m.n <= capacity && written - m.bytesBefore <= c.ringBytes - (1200 + 256);
        if (recent && i === NIL) bad++;
        if (i !== NIL) {
          found++;
          const got = c.reply(i);
          if (!alive || !(got === m.reply || (got && m.reply && got.equals(m.reply)))) bad++;
          else if (!c.isRetransmission(i, m.raw, '192.0.2.1', m.port)) bad++;
        }
      } else c.purge(now);
      now += rand(30);
    }
    t.equal(bad, 0, `seed ${seed}, capacity ${capacity}: ${found} answers found, each right, every recent one found`);
    t.ok(c.size <= capacity, `seed ${seed}: size within the bound`);
  }
});

t.test('bad capacity refused', async (t) => {
  t.throws(() => new ReplyCache(0, LIFETIME), RangeError);
  t.throws(() => new ReplyCache(1.5, LIFETIME), RangeError);
});
