// The bench's virtual clock (bench/virtual-clock.ts): timers fire in due order on virtual time,
// intervals repeat, cleared timers do not fire, and loopback I/O completes between two timers.
import t from 'tap';
import dgram from 'node:dgram';
import { installVirtualClock } from '../../bench/virtual-clock.js';

t.test('timers in due order, intervals, clear, Date.now and performance.now follow', async (t) => {
  const clock = installVirtualClock();
  t.teardown(() => clock.uninstall());
  const start = Date.now();
  const perf0 = performance.now();
  const seen: string[] = [];
  setTimeout(() => seen.push(`b@${Date.now() - start}`), 2000);
  setTimeout(() => seen.push(`a@${Date.now() - start}`), 1000);
  const cleared = setTimeout(() => seen.push('cleared'), 1500);
  clearTimeout(cleared);
  let ticks = 0;
  const iv = setInterval(() => {
    ticks++;
    if (ticks === 5) clearInterval(iv);
  }, 600);
  const refreshed = setTimeout(() => seen.push(`r@${Date.now() - start}`), 1000);
  await clock.runUntil(start + 500);
  refreshed.refresh(); // due 1000 ms from now (virtual 1500)
  await clock.runUntil(start + 3_600_000);
  t.same(seen, ['a@1000', 'r@1500', 'b@2000']);
  t.equal(ticks, 5, 'the interval ran until cleared');
  t.equal(Date.now() - start, 3_600_000, 'virtual time reached the target');
  t.ok(Math.abs(performance.now() - perf0 - 3_600_000) < 1, 'performance.now moves with it');
  t.equal(clock.pending, 0);
  t.same(clock.errors, []);
});

t.test('a throwing timer is recorded, the others still run', async (t) => {
  const clock = installVirtualClock();
  t.teardown(() => clock.uninstall());
  let after = false;
  setTimeout(() => {
    throw new Error('boom');
  }, 10);
  setTimeout(() => (after = true), 20);
  await clock.runUntil(Date.now() + 100);
  t.equal(clock.errors[0]?.message, 'boom');
  t.ok(after);
});

t.test('a loopback exchange completes between two timers (no virtual time passes)', async (t) => {
  const clock = installVirtualClock();
  t.teardown(() => clock.uninstall());
  const server = dgram.createSocket('udp4');
  const client = dgram.createSocket('udp4');
  t.teardown(() => {
    server.close();
    client.close();
  });
  server.on('message', (m, r) => server.send(m, r.port, r.address));
  await new Promise<void>((r) => server.bind(0, '127.0.0.1', r));
  await new Promise<void>((r) => client.bind(0, '127.0.0.1', r));
  const answeredAt: number[] = [];
  client.on('message', () => answeredAt.push(Date.now()));
  const t0 = Date.now();
  // A request every 25 virtual seconds for an hour, each with a 1 s "timeout" timer behind it.
  let timeouts = 0;
  const iv = setInterval(() => {
    const sentAt = Date.now();
    client.send(Buffer.from('ping'), (server.address()).port, '127.0.0.1');
    setTimeout(() => {
      if (!answeredAt.some((a) => a >= sentAt)) timeouts++;
    }, 1000);
  }, 25_000);
  await clock.runUntil(t0 + 3_600_000, 50);
  clearInterval(iv);
  t.equal(answeredAt.length, 144, 'every ping answered');
  t.ok(timeouts <= 2, `answers arrive before the next timer (timeouts: ${timeouts})`);
});
