// The startup schedule of devloc-agent(8), REGISTRATION: AUTH_REQUEST and REGISTER go out in
// short attempts (three sends in 4.5 T), and the bound the man page states for 30% loss each way
// follows from it. A fake clock drives the retransmitting client: the sends are counted, not
// timed.
import dgram from 'node:dgram';
import t from 'tap';
import { startupBoundMs, startupPolicy } from '../../src/agent/registration.js';
import { retransmitPlan, UdpClient } from '../../src/net/client.js';

/** Timers that run only when the test advances the clock. */
function fakeTimers() {
  let now = 0;
  const queue: { at: number; fn: () => void; id: number }[] = [];
  let next = 0;
  return {
    now: () => now,
    setTimeout: (fn: () => void, ms: number) => {
      const id = next++;
      queue.push({ at: now + ms, fn, id });
      return id;
    },
    clearTimeout: (h: unknown) => {
      const i = queue.findIndex((q) => q.id === h);
      if (i >= 0) queue.splice(i, 1);
    },
    /** Run every timer due up to `until`, in order. */
    advance(until: number) {
      for (;;) {
        queue.sort((a, b) => a.at - b.at);
        const q = queue[0];
        if (!q || q.at > until) break;
        queue.shift();
        now = q.at;
        q.fn();
      }
      now = until;
    },
  };
}

t.test('one attempt: three sends, over within 4.5 T, whatever the jitter', async (t) => {
  for (const r of [0, 0.5, 0.999]) {
    const plan = retransmitPlan(startupPolicy(1000), () => r);
    t.equal(plan.retransmitAt.length, 2, `random ${r}: two retransmissions`);
    t.ok(plan.giveUpAt <= 4500, `random ${r}: gives up at ${plan.giveUpAt} ms`);
  }
});

t.test('the client follows it: a request nobody answers is sent 3 times and rejected by 4.5 T', async (t) => {
  const sink = dgram.createSocket('udp4');
  let received = 0;
  sink.on('message', () => received++);
  await new Promise<void>((res) => sink.bind(0, '127.0.0.1', res));
  const timers = fakeTimers();
  const client = await UdpClient.open({ bind: { host: '127.0.0.1', port: 0 }, timers, random: () => 0.999 });
  t.teardown(async () => {
    await client.close();
    sink.close();
  });
  const rid = UdpClient.newRequestId();
  let outcome: string | undefined;
  client.request({ ip: '127.0.0.1', port: (sink.address()).port }, Buffer.from('x'), rid, { policy: startupPolicy(1000) })
    .then(() => (outcome = 'answered'), () => (outcome = `rejected at ${timers.now()}`));
  timers.advance(4500);
  await new Promise((res) => setTimeout(res, 50));
  t.equal(client.stats.sent, 3, 'three sends');
  t.match(outcome, /^rejected at \d+$/);
  t.ok(Number(outcome?.split(' ').pop()) <= 4500, outcome ?? 'no outcome');
  // Not a timing assertion: the loopback datagrams are only counted.
  const deadline = Date.now() + 10_000;
  while (received < 3 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 20));
  t.equal(received, 3);
});

t.test('the bound of devloc-agent(8): 30% loss each way, defaults (T 1 s, back-off 1 s)', async (t) => {
  const o = { retransmitMs: 1000, backoffMinMs: 1000, backoffMaxMs: 60_000 };
  // A send gets its answer with probability 0.7 * 0.7; an attempt (3 sends) fails with 0.51^3.
  const attemptFails = (1 - 0.7 * 0.7) ** 3;
  const stepLate = attemptFails ** 4;
  t.ok(2 * stepLate < 0.001, `each step done within 4 attempts but in ${(2 * stepLate * 1e4).toFixed(1)} of 10000 starts`);
  t.equal(startupBoundMs(o, 4), 50_000, 'then registered within 50 s (the figure in devloc-agent(8))');
  t.equal(startupBoundMs(o, 1), 9000, 'no loss: 2 attempts of 4.5 s at most');
});
