// The session table of ServerSessions (typed arrays indexed by slot, issue 16) against a simple
// model (a Map in recency order) under random operations with a fake clock: lookups, expiry,
// least-recently-used eviction, the per-locator-ID cap, replacement of a session ID, the replay
// window and send sequence written through handles, stale handles, dropWhere, ids/all/holds, and
// the MAC of what a handle encodes (from its slot's bytes, or the copy of its keys it read).
import t from 'tap';
import type { Test } from 'tap';
import { newServerSession, sameSession, ServerSessions } from '../../src/net/sessions.js';
import type { ServerSession as Session } from '../../src/net/sessions.js';
import { rawKey, ReplayWindow, verifyDatagram } from '../../src/wire/session.js';
import { TicketVerifier } from '../../src/wire/ticket.js';
import { Rng } from '../../fuzz/rng.js';

/** Sessions as locatord keeps them: with a kid. */
type ServerSession = Session & { kid?: string };

interface ModelSession {
  sidHex: string;
  locatorHex: string;
  aud: string;
  exp: number;
  window: ReplayWindow;
  txSeq: number;
  kid: string | undefined;
  keys: Buffer;
}

/** The semantics the table must keep, written the plain way. */
class Model {
  /** Least recently used first. */
  readonly held = new Map<string, ModelSession>();
  /** Per locator ID, oldest first. */
  readonly byLocator = new Map<string, string[]>();
  constructor(private readonly max: number, private readonly cap: number, private readonly skewS: number) {}

  private remove(sidHex: string): void {
    const s = this.held.get(sidHex);
    if (!s) return;
    this.held.delete(sidHex);
    const l = this.byLocator.get(s.locatorHex)!.filter((x) => x !== sidHex);
    if (l.length) this.byLocator.set(s.locatorHex, l);
    else this.byLocator.delete(s.locatorHex);
  }

  get(sidHex: string, nowMs: number): ModelSession | undefined {
    const s = this.held.get(sidHex);
    if (!s) return undefined;
    if (s.exp * 1000 + this.skewS * 1000 < nowMs) {
      this.remove(sidHex);
      return undefined;
    }
    this.held.delete(sidHex);
    this.held.set(sidHex, s);
    return s;
  }

  restore(s: ModelSession, nowMs: number): boolean {
    if (s.exp * 1000 + this.skewS * 1000 - nowMs <= 0) return false;
    if (this.held.has(s.sidHex)) this.remove(s.sidHex);
    else if (this.held.size >= this.max) this.remove(this.held.keys().next().value!);
    this.held.set(s.sidHex, s);
    const l = this.byLocator.get(s.locatorHex) ?? [];
    l.push(s.sidHex);
    this.byLocator.set(s.locatorHex, l);
    for (let ids = l; ids.length > this.cap; ids = this.byLocator.get(s.locatorHex)!) this.remove(ids[0]!);
    return this.held.has(s.sidHex);
  }

  drop(pred: (s: ModelSession) => boolean): number {
    const gone = [...this.held.values()].filter(pred);
    for (const s of gone) this.remove(s.sidHex);
    return gone.length;
  }
}

function run(t: Test, seed: number, o: { max: number; cap: number; sids: number; locators: number; ops: number }): void {
  const rng = new Rng(seed);
  const rand = (): number => rng.float();
  const int = (n: number): number => Math.floor(rand() * n);
  const hex = (i: number, tag: number): string => (tag.toString(16).padStart(2, '0') + i.toString(16).padStart(6, '0')).repeat(4);
  const clock = { ms: 1_700_000_000_000 };
  const verifier = new TicketVerifier({ keys: new Map(), audience: 'locator' });
  const sessions = new ServerSessions({ verifier, serviceSecret: undefined as never, maxSessions: o.max, maxSessionsPerId: o.cap, now: () => clock.ms });
  const model = new Model(o.max, o.cap, verifier.clockSkewS);
  const handles = new Map<string, ServerSession>();
  /** The keys each handle of `handles` read (all of them did: same() reads them). */
  const handleKeys = new Map<string, Buffer>();
  const rid = Buffer.alloc(8, 0x11);
  let failures = 0;
  const check = (ok: boolean, what: string, extra?: unknown): void => {
    if (ok) return;
    failures++;
    if (failures <= 5) t.fail(`seed ${seed}: ${what}`, { extra });
  };
  const same = (h: ServerSession, m: ModelSession, what: string): void => {
    check(h.sidHex === m.sidHex && h.locatorHex === m.locatorHex, `${what}: IDs`);
    check(h.exp === m.exp && h.aud === m.aud && h.kid === m.kid, `${what}: exp, aud, kid`);
    check(h.txSeq === m.txSeq, `${what}: txSeq`, { got: h.txSeq, want: m.txSeq });
    check(h.window.highestSeen === m.window.highestSeen && h.window.bitmapLo === m.window.bitmapLo && h.window.bitmapHi === m.window.bitmapHi, `${what}: window`);
    const k = Buffer.concat([h.keys.terminalToServer as Buffer, h.keys.serverToTerminal as Buffer]);
    check(k.equals(m.keys), `${what}: keys`);
  };
  for (let op = 0; op < o.ops; op++) {
    const r = rand();
    const sidHex = hex(int(o.sids), 0xa5);
    if (r < 0.3) {
      // Restore (a snapshot, a remote session, a clone): a fresh session under that ID.
      const m: ModelSession = {
        sidHex, locatorHex: hex(int(o.locators), 0x5c), aud: rand() < 0.5 ? 'locator' : 'matchd',
        exp: Math.floor(clock.ms / 1000) + int(600) - 60, window: new ReplayWindow(), txSeq: int(1000), kid: rand() < 0.5 ? `k${int(3)}` : undefined,
        keys: Buffer.from(Array.from({ length: 64 }, () => int(256))),
      };
      for (let i = int(5); i > 0; i--) m.window.accept(int(200));
      const s = newServerSession({
        sid: Buffer.from(sidHex, 'hex'), locatorId: Buffer.from(m.locatorHex, 'hex'), aud: m.aud, exp: m.exp,
        terminalToServer: m.keys.subarray(0, 32), serverToTerminal: m.keys.subarray(32),
        window: ReplayWindow.fromState(m.window.highestSeen, m.window.bitmapLo, m.window.bitmapHi), txSeq: m.txSeq,
      }) as ServerSession;
      if (m.kid !== undefined) s.kid = m.kid;
      const held = sessions.restore(s) as ServerSession | undefined;
      const want = model.restore({ ...m, window: ReplayWindow.fromState(m.window.highestSeen, m.window.bitmapLo, m.window.bitmapHi) }, clock.ms);
      check((held !== undefined) === want, 'restore holds it when the model does');
      if (held) {
        same(held, model.held.get(sidHex)!, 'restored');
        handles.set(sidHex, held);
        handleKeys.set(sidHex, m.keys);
      }
    } else if (r < 0.65) {
      // A datagram of the session: lookup, window check and accept, a reply (txSeq).
      const h = sessions.get(sidHex) as ServerSession | undefined;
      const m = model.get(sidHex, clock.ms);
      check((h === undefined) === (m === undefined), 'get finds it when the model does', { sidHex });
      if (h && m) {
        // Before same() reads the keys: MACed straight from the slot's bytes.
        const d = sessions.encode(h, 'PROBE', rid, {});
        m.txSeq++;
        check(verifyDatagram(m.keys.subarray(32), d), 'what a handle encodes is MACed with its session\'s key');
        same(h, m, 'got');
        const seq = int(300);
        check(h.window.check(seq) === m.window.check(seq), 'window check');
        if (rand() < 0.7) {
          h.window.accept(seq);
          m.window.accept(seq);
          h.txSeq++;
          m.txSeq++;
        }
        if (rand() < 0.1) {
          h.kid = 'k9';
          m.kid = 'k9';
        }
        check(sameSession(h, handles.get(sidHex) ?? h) === sessions.live(handles.get(sidHex) ?? h), 'sameSession agrees with live');
        handles.set(sidHex, h);
        handleKeys.set(sidHex, m.keys);
      }
    } else if (r < 0.8) {
      // An old handle: live exactly while the model still holds that session.
      const h = handles.get(sidHex);
      if (h) {
        const live = sessions.live(h);
        const m = model.get(sidHex, clock.ms);
        if (live) check(m !== undefined, 'a live handle is held');
        if (!live) check(h.window.check(int(300)) === 'replay', 'a stale handle accepts nothing');
        if (!live) {
          // It read its keys while held (as a request's handle does): it still MACs with them.
          const d = sessions.encode(h, 'PROBE', rid, {});
          check(verifyDatagram(handleKeys.get(sidHex)!.subarray(32), d), 'a stale handle MACs with the keys it read');
        }
        if (live && m) same(h, m, 'old handle');
      }
    } else if (r < 0.83) {
      const k = `k${int(3)}`;
      check(sessions.dropWhere((s: ServerSession) => s.kid === k) === model.drop((s) => s.kid === k), 'dropWhere count');
    } else if (r < 0.97) {
      clock.ms += int(60_000);
    } else {
      // Whole-table views: size, ids, all, holds (no recency change).
      check(sessions.size === model.held.size, 'size', { got: sessions.size, want: model.held.size });
      const ids = [...sessions.ids()].sort();
      check(JSON.stringify(ids) === JSON.stringify([...model.held.keys()].sort()), 'ids');
      const all = [...sessions.all()].map((s) => s.sidHex);
      check(JSON.stringify(all) === JSON.stringify([...model.held.keys()].reverse()), 'all, most recently used first');
      for (const [sid, h] of [...handles].slice(0, 40)) check(!sessions.holds(h) || model.held.has(sid), 'a session holds() says is held is held');
    }
  }
  t.equal(failures, 0, `seed ${seed}: ${o.ops} random operations agree with the model`);
  t.equal(sessions.size, model.held.size, 'same size at the end');
}

t.test('small table: eviction and the per-ID cap all the time', async (t) => {
  for (const seed of [1, 2, 3, 4, 5]) run(t, seed, { max: 24, cap: 3, sids: 60, locators: 10, ops: 4000 });
});

t.test('per-ID cap of 8 (the default) and one', async (t) => {
  run(t, 11, { max: 200, cap: 8, sids: 300, locators: 12, ops: 6000 });
  run(t, 12, { max: 50, cap: 1, sids: 100, locators: 20, ops: 4000 });
});

t.test('a table that grows past its first arrays (indexes rebuilt) and then evicts', async (t) => {
  run(t, 21, { max: 3000, cap: 8, sids: 4000, locators: 2500, ops: 12_000 });
});

t.test('a handle that never read its keys cannot MAC once its session ended; one that kept them can', async (t) => {
  const verifier = new TicketVerifier({ keys: new Map(), audience: 'locator' });
  const sessions = new ServerSessions({ verifier, serviceSecret: undefined as never });
  const t2s = Buffer.alloc(32, 3);
  const s2t = Buffer.alloc(32, 4);
  const held = sessions.restore(newServerSession({
    sid: Buffer.alloc(16, 1), locatorId: Buffer.alloc(16, 2), aud: 'locator', exp: Math.floor(Date.now() / 1000) + 600, terminalToServer: t2s, serverToTerminal: s2t,
  }))!;
  const bare = sessions.get(held.sidHex)!;
  const kept = sessions.get(held.sidHex)!;
  (kept as unknown as { keepKeys(): Uint8Array }).keepKeys();
  const rid = Buffer.alloc(8, 9);
  t.ok(verifyDatagram(s2t, sessions.encode(bare, 'PROBE', rid, {})), 'held: MACed from the slot');
  t.ok(verifyDatagram(s2t, sessions.encode(kept, 'PROBE', rid, {})), 'held: MACed from the copy');
  t.equal(sessions.dropWhere(() => true), 1);
  t.throws(() => sessions.encode(bare, 'PROBE', rid, {}), /no longer held/, 'ended, keys never read: refuses, never MACs with what the slot holds next');
  t.ok(verifyDatagram(s2t, sessions.encode(kept, 'PROBE', rid, {})), 'ended: the kept copy still MACs (a request answered after its session ended)');
  // The slot taken by another session: the old handle must not MAC with the new keys.
  sessions.restore(newServerSession({
    sid: Buffer.alloc(16, 5), locatorId: Buffer.alloc(16, 6), aud: 'locator', exp: Math.floor(Date.now() / 1000) + 600, terminalToServer: Buffer.alloc(32, 7), serverToTerminal: Buffer.alloc(32, 8),
  }));
  t.throws(() => sessions.encode(bare, 'PROBE', rid, {}), /no longer held/, 'slot reused: still refused');
  t.ok(verifyDatagram(s2t, sessions.encode(kept, 'PROBE', rid, {})), 'slot reused: the copy is still its own');
});

t.test('IDs of another size than the protocol\'s are not held (no slot, no throw)', async (t) => {
  const verifier = new TicketVerifier({ keys: new Map(), audience: 'locator' });
  const sessions = new ServerSessions({ verifier, serviceSecret: undefined as never });
  const s = newServerSession({
    sid: Buffer.alloc(8, 1), locatorId: Buffer.alloc(16, 2), aud: 'locator', exp: Math.floor(Date.now() / 1000) + 60,
    terminalToServer: Buffer.alloc(32), serverToTerminal: Buffer.alloc(32),
  });
  t.equal(sessions.restore(s), undefined);
  t.equal(sessions.size, 0);
  t.equal(sessions.get('0101'), undefined);
});

t.test('columns and restoreColumns: a bulk copy into an empty table (snapshot restore)', (t) => {
  let nowMs = 1_800_000_000_000;
  const make = (perId?: number): ServerSessions => new ServerSessions({
    verifier: new TicketVerifier({ keys: new Map(), audience: 'locator', now: () => Math.floor(nowMs / 1000) }),
    serviceSecret: undefined as never, now: () => nowMs, ...(perId !== undefined ? { maxSessionsPerId: perId } : {}),
  });
  const a = make();
  const loc = Buffer.alloc(16, 7);
  const held: ServerSession[] = [];
  for (let i = 0; i < 6; i++) {
    const s: ServerSession = newServerSession({
      sid: Buffer.alloc(16, 100 + i), locatorId: i < 4 ? loc : Buffer.alloc(16, i), aud: 'locator', exp: Math.floor(nowMs / 1000) + (i === 5 ? 10 : 3600),
      terminalToServer: Buffer.alloc(32, i), serverToTerminal: Buffer.alloc(32, 50 + i),
    });
    if (i === 1) s.kid = 'k1';
    const h = a.restore(s)!;
    h.window.accept(3 + i);
    h.txSeq = 20 + i;
    held.push(h);
  }
  a.get(held[2]!.sidHex); // touched: recency is not what a snapshot keeps
  const c = a.columns();
  t.equal(c.n, 6);
  // Copied in two slices, as the snapshot writer does.
  a.copyColumns(c, 0, 4);
  a.copyColumns(c, 4, c.n);
  nowMs += 1_200_000; // the sixth session's ticket (10 s) is over by now, clock skew allowed
  const b = make(3);
  t.ok(b.restoreColumns(c));
  t.equal(b.size, 3 + 1, 'four of one locator ID under a cap of 3: the oldest goes; the expired one is left out');
  t.equal(b.get(held[0]!.sidHex), undefined);
  t.equal(b.get(held[5]!.sidHex), undefined);
  for (const i of [1, 2, 3, 4]) {
    const s = b.heldAt(a.heldSlot(held[i]!))! as ServerSession;
    t.equal(s.sidHex, held[i]!.sidHex, `session ${i} at the same slot`);
    t.same([s.txSeq, s.window.check(3 + i), s.window.check(4 + i), s.aud, s.kid], [20 + i, 'replay', 'ok', 'locator', i === 1 ? 'k1' : undefined]);
    t.same(rawKey(s.keys.serverToTerminal), Buffer.alloc(32, 50 + i));
  }
  t.notOk(b.restoreColumns(c), 'a table holding sessions is not filled in bulk');
  t.equal(b.heldAt(held[0]!.sid.length), undefined, 'heldAt of a free slot');
  t.end();
});
