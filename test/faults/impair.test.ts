// tools/impair.ts, the seeded UDP impairment proxy the fault tests put between agents and
// daemons: decisions reproducible from the seed, rates near the configured ones, reordering
// that really reorders, delays within range, datagrams never altered, bounded state, and
// close() releasing every socket and timer. Real sockets on 127.0.0.1.
import t from 'tap';
import type { Test } from 'tap';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import path from 'node:path';
import type { ImpairOptions, ImpairProxy } from '../../tools/impair.js';
import { createImpairProxy, Decider, parseCli } from '../../tools/impair.js';
import { isListening, spawnDaemon } from '../../src/common/spawn.js';
import { root } from '../helpers/daemon.js';
import { eventually } from '../agent/stack.js';

const LO = '127.0.0.1';

interface Sock {
  socket: dgram.Socket;
  port: number;
  got: Buffer[];
  close(): Promise<void>;
}

async function udp(onMessage?: (s: dgram.Socket, msg: Buffer, rinfo: dgram.RemoteInfo) => void): Promise<Sock> {
  const socket = dgram.createSocket('udp4');
  const got: Buffer[] = [];
  socket.on('message', (msg, rinfo) => {
    got.push(msg);
    onMessage?.(socket, msg, rinfo);
  });
  await new Promise<void>((r) => socket.bind(0, LO, () => r()));
  return { socket, port: socket.address().port, got, close: () => new Promise<void>((r) => socket.close(() => r())) };
}

/** An echo server: sends every datagram back, with a marker byte in front of a copy. */
async function echo(): Promise<Sock> {
  return udp((s, msg, rinfo) => s.send(Buffer.concat([Buffer.from([0xee]), msg]), rinfo.port, rinfo.address));
}

const payload = (i: number): Buffer => {
  const b = Buffer.alloc(12);
  b.writeUInt32BE(i, 0);
  randomBytes(8).copy(b, 4);
  return b;
};
const idx = (b: Buffer): number => b.readUInt32BE(b[0] === 0xee ? 1 : 0);

/** Send `n` datagrams through a fresh proxy; return what the target and the client received. */
async function run(t: Test, opts: Omit<ImpairOptions, 'listen' | 'target'>, n: number): Promise<{ up: number[]; down: number[]; proxy: ImpairProxy; sent: Buffer[]; atTarget: Buffer[]; atClient: Buffer[] }> {
  const target = await echo();
  const proxy = await createImpairProxy({ listen: { ip: LO, port: 0 }, target: { ip: LO, port: target.port }, ...opts });
  const client = await udp();
  t.teardown(async () => {
    await proxy.close();
    await client.close();
    await target.close();
  });
  const sent: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    const p = payload(i);
    sent.push(p);
    client.socket.send(p, proxy.port, LO);
    // A pause now and then keeps socket buffers far from full (a kernel drop would not be ours).
    if (i % 50 === 49) await new Promise((r) => setImmediate(r));
  }
  // Everything the proxy decided to send has left once nothing is held or waiting on a timer,
  // and both ends have seen what was sent (loopback does not lose).
  await eventually(async () => {
    const s = proxy.stats();
    return s.held === 0 && s.pending === 0 && target.got.length === s.sent.up && client.got.length === s.sent.down;
  }, 20_000, 'proxy drained');
  return { up: target.got.map(idx), down: client.got.map(idx), proxy, sent, atTarget: target.got, atClient: client.got };
}

t.test('Decider: same seed, same decisions; rates near the configured ones; delays in range', async (t) => {
  const knobs = { dup: 0.2, reorder: 0.25, reorderDepth: 3, delayMs: [5, 40] as [number, number], loss: 0.1 };
  const a = new Decider(42, knobs);
  const b = new Decider(42, knobs);
  const c = new Decider(43, knobs);
  const n = 20_000;
  const da = Array.from({ length: n }, () => a.next());
  const db = Array.from({ length: n }, () => b.next());
  const dc = Array.from({ length: n }, () => c.next());
  // Compared as text: tap's deep diff of 20 000 objects would take minutes.
  t.ok(JSON.stringify(da) === JSON.stringify(db), 'same seed: the same decisions');
  t.ok(JSON.stringify(da) !== JSON.stringify(dc), 'another seed: other decisions');
  const kept = da.filter((d) => !d.drop);
  const rate = (k: number, of: number): number => k / of;
  t.ok(Math.abs(rate(n - kept.length, n) - 0.1) < 0.015, `loss ${rate(n - kept.length, n)} ~ 0.1`);
  t.ok(Math.abs(rate(kept.filter((d) => d.copies.length === 2).length, kept.length) - 0.2) < 0.015, 'dup ~ 0.2');
  t.ok(Math.abs(rate(kept.filter((d) => d.holdFor > 0).length, kept.length) - 0.25) < 0.015, 'reorder ~ 0.25');
  t.ok(kept.every((d) => d.holdFor >= 0 && d.holdFor <= 3), 'hold depth within 1..reorderDepth');
  t.ok(kept.every((d) => d.copies.every((ms) => ms >= 5 && ms <= 40)), 'every delay in [5, 40] ms');
  t.ok(da.filter((d) => d.drop).every((d) => d.copies.length === 0), 'a dropped datagram has no copies');
  // One knob does not shift the others' streams: the same datagrams are dropped without dup.
  const noDup = new Decider(42, { ...knobs, dup: 0 });
  const drops = (ds: { drop: boolean }[]): string => ds.map((d) => (d.drop ? '1' : '0')).join('');
  t.equal(drops(Array.from({ length: 1000 }, () => noDup.next())), drops(da.slice(0, 1000)), 'drops independent of --dup');
});

t.test('through sockets: same seed, same output; duplicated, reordered, lost, never altered', async (t) => {
  const opts = { seed: 1234, dup: 0.2, reorder: 0.2, loss: 0.05, holdMaxMs: 10_000 };
  const n = 400;
  const r1 = await run(t, opts, n);
  const r2 = await run(t, opts, n);
  const r3 = await run(t, { ...opts, seed: 99 }, n);
  t.equal(r1.up.join(), r2.up.join(), 'the target received the same sequence both times');
  t.equal(r1.down.join(), r2.down.join(), 'and the client got the same echoes back in the same order');
  t.not(r1.up.join(), r3.up.join(), 'another seed: another sequence');

  const s = r1.proxy.stats();
  t.equal(s.received.up, n, 'the proxy saw every datagram');
  t.equal(s.sent.up, n - s.dropped.up + s.duplicated.up, 'sent = received - dropped + duplicated');
  t.equal(r1.up.length, s.sent.up);
  const lossRate = s.dropped.up / n;
  const dupRate = s.duplicated.up / (n - s.dropped.up);
  t.ok(lossRate > 0.01 && lossRate < 0.1, `loss ${lossRate} ~ 0.05`);
  t.ok(dupRate > 0.12 && dupRate < 0.28, `dup ${dupRate} ~ 0.2`);
  t.ok(s.reordered.up > 0.1 * n && s.reordered.up < 0.3 * n, `held back ${s.reordered.up} of ${n}`);
  // Reordered: some datagram arrives after one sent later than it.
  let inversions = 0;
  for (let i = 1; i < r1.up.length; i++) if (r1.up[i]! < r1.up[i - 1]!) inversions++;
  t.ok(inversions > 10, `${inversions} out-of-order arrivals`);
  // Never altered: every datagram at the target is byte-identical to one sent, at most twice.
  const byIndex = new Map(r1.sent.map((p) => [p.readUInt32BE(0), p]));
  const seen = new Map<number, number>();
  let altered = 0;
  for (const d of r1.atTarget) {
    if (!byIndex.get(d.readUInt32BE(0))?.equals(d)) altered++;
    seen.set(d.readUInt32BE(0), (seen.get(d.readUInt32BE(0)) ?? 0) + 1);
  }
  t.equal(altered, 0, 'no datagram altered on the way up');
  t.ok([...seen.values()].every((k) => k <= 2), 'at most two copies of any datagram');
  t.equal([...seen.values()].filter((k) => k === 2).length, s.duplicated.up, 'duplicates seen = duplicates made');
  for (const d of r1.atClient) {
    const orig = byIndex.get(d.readUInt32BE(1));
    if (!orig || !d.subarray(1).equals(orig) || d[0] !== 0xee) altered++;
  }
  t.equal(altered, 0, 'nor on the way down');
  t.ok(s.duplicated.down > 0 && s.reordered.down > 0 && s.dropped.down > 0, 'the way down is impaired too');
});

t.test('directions: only the chosen one is impaired', async (t) => {
  const r = await run(t, { seed: 5, dup: 0.5, reorder: 0.5, loss: 0.2, directions: ['down'] }, 100);
  const s = r.proxy.stats();
  t.same([s.dropped.up, s.duplicated.up, s.reordered.up], [0, 0, 0], 'up untouched');
  t.equal(r.up.join(), Array.from({ length: 100 }, (_, i) => i).join(), 'up in order, all there');
  t.ok(s.dropped.down > 0 && s.duplicated.down > 0 && s.reordered.down > 0, 'down impaired');
});

t.test('delays: each copy waits at least the minimum; counted', async (t) => {
  const target = await udp();
  const sentAt = new Map<number, number>();
  const leftAt = new Map<number, number>();
  const proxy = await createImpairProxy({
    listen: { ip: LO, port: 0 }, target: { ip: LO, port: target.port }, seed: 3, delayMs: [30, 60],
    onReceive: (dir, d) => void (dir === 'up' && sentAt.set(idx(d), performance.now())),
    onSend: (dir, d) => void (dir === 'up' && leftAt.set(idx(d), performance.now())),
  });
  const client = await udp();
  t.teardown(async () => {
    await proxy.close();
    await client.close();
    await target.close();
  });
  for (let i = 0; i < 20; i++) client.socket.send(payload(i), proxy.port, LO);
  await eventually(async () => target.got.length === 20, 10_000, 'all delivered');
  const waited = [...leftAt].map(([i, at]) => at - sentAt.get(i)!);
  // Timers never fire before their delay (node rounds to the millisecond: allow 1 ms).
  t.ok(waited.every((w) => w >= 29), `every datagram waited >= 30 ms (min ${Math.min(...waited).toFixed(1)})`);
  t.equal(proxy.stats().delayed.up, 20, 'all counted as delayed');
});

t.test('bounded: client mappings capped and expiring, held datagrams capped', async (t) => {
  const target = await echo();
  const proxy = await createImpairProxy({
    listen: { ip: LO, port: 0 }, target: { ip: LO, port: target.port }, seed: 1, maxClients: 3, idleMs: 200,
    reorder: 1, maxHeld: 2, holdMaxMs: 60_000,
  });
  const clients = await Promise.all(Array.from({ length: 5 }, () => udp()));
  t.teardown(async () => {
    await proxy.close();
    for (const c of clients) await c.close();
    await target.close();
  });
  for (const [i, c] of clients.entries()) c.socket.send(payload(i), proxy.port, LO);
  await eventually(async () => proxy.stats().received.up === 5, 10_000, 'all five received');
  const s = proxy.stats();
  t.equal(s.clientsOpened, 5);
  t.ok(s.clients <= 3, `at most 3 mappings (${s.clients})`);
  t.ok(s.clientsEvicted >= 2, 'the least recently active ones evicted');
  t.ok(s.held <= 2, `at most 2 held (${s.held})`);
  t.ok(s.heldOverflow >= 1, 'the oldest held one released when full');
  await eventually(async () => proxy.stats().clients === 0, 10_000, 'idle mappings expire');
  t.ok(proxy.stats().clientsExpired >= 1);
  t.equal(proxy.stats().held, 0, 'held datagrams of expired mappings are gone');
});

t.test('close() releases the port, the sockets and the timers', async (t) => {
  // A closed handle leaves the list a moment after its close callback (the earlier tests' too).
  const live = (): number => process.getActiveResourcesInfo().filter((r) => r === 'UDPWrap' || r === 'Timeout').length;
  await eventually(async () => !process.getActiveResourcesInfo().includes('UDPWrap'), 5_000, 'earlier sockets gone');
  const before = live();
  const target = await udp();
  const proxy = await createImpairProxy({
    listen: { ip: LO, port: 0 }, target: { ip: LO, port: target.port }, seed: 8, delayMs: [5_000, 5_000], reorder: 0.5, holdMaxMs: 60_000,
  });
  const clients = await Promise.all(Array.from({ length: 4 }, () => udp()));
  for (const c of clients) for (let i = 0; i < 5; i++) c.socket.send(payload(i), proxy.port, LO);
  await eventually(async () => proxy.stats().received.up === 20, 10_000, 'received');
  const s = proxy.stats();
  t.equal(s.clients, 4);
  t.ok(s.pending + s.held > 0, 'datagrams waiting inside');
  await proxy.close();
  const after = proxy.stats();
  t.same([after.clients, after.held, after.pending], [0, 0, 0], 'nothing left inside');
  await proxy.close(); // twice is harmless
  for (const c of clients) await c.close();
  await target.close();
  await eventually(async () => live() <= before, 5_000, 'handles gone').catch(() => undefined);
  t.equal(live(), before, `no socket or timer left behind (${process.getActiveResourcesInfo().join(',')})`);
  // The listening port can be bound again at once.
  const again = dgram.createSocket('udp4');
  await new Promise<void>((resolve, reject) => {
    again.once('error', reject);
    again.bind(proxy.port, LO, () => resolve());
  });
  t.pass(`port ${proxy.port} free again`);
  await new Promise<void>((r) => again.close(() => r()));
});

t.test('command line: parse errors; listening line, forwarding, stats at exit', async (t) => {
  t.match(parseCli(['--target', '127.0.0.1:1']), { ok: false, error: /--listen is required/ });
  t.match(parseCli(['--listen', '127.0.0.1:0', '--target', 'localhost:1']), { ok: false, error: /literal IP/ });
  t.match(parseCli(['--listen', '127.0.0.1:0', '--target', '127.0.0.1:1', '--dup', '1.5']), { ok: false, error: /--dup/ });
  t.match(parseCli(['--listen', '127.0.0.1:0', '--target', '127.0.0.1:1', '--delay-ms', '40-5']), { ok: false, error: /--delay-ms/ });
  t.match(parseCli(['--listen', '127.0.0.1:0', '--target', '127.0.0.1:1', '--bogus']), { ok: false });
  const ok = parseCli(['--listen', '127.0.0.1:0', '--target', '127.0.0.1:9', '--seed', '7', '--dup', '0.2', '--reorder', '0.2', '--delay-ms', '5-40', '--loss', '0.05']);
  t.match(ok, { ok: true, options: { seed: 7, dup: 0.2, reorder: 0.2, delayMs: [5, 40], loss: 0.05, directions: ['up', 'down'] } });

  const target = await udp();
  const p = spawnDaemon({ entry: path.join(root, 'tools/impair.ts'), name: 'impair', cwd: root, timeoutMs: 20_000,
    args: ['--listen', '127.0.0.1:0', '--target', `127.0.0.1:${target.port}`, '--seed', '7', '--dup', '1', '--delay-ms', '1-5'] });
  const client = await udp();
  t.teardown(async () => {
    await p.stop('SIGKILL');
    await client.close();
    await target.close();
  });
  const listening = await p.waitFor(isListening);
  t.type(listening['port'], 'number');
  t.ok((listening['port'] as number) > 0, 'its bound port');
  client.socket.send(Buffer.from('hello'), listening['port'] as number, LO);
  await eventually(async () => target.got.length === 2, 10_000, 'hello, twice (--dup 1)');
  t.same(target.got.map(String), ['hello', 'hello']);
  t.equal(await p.stop('SIGTERM'), 0, 'exits 0 on SIGTERM');
  const stopped = await p.waitFor((l) => l['msg'] === 'stopped');
  t.match(stopped, { signal: 'SIGTERM', received: { up: 1 }, duplicated: { up: 1 }, sent: { up: 2 } }, 'final stats');
});
