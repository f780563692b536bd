// The relay's check of its own subscription (store/relay.ts): an instance whose pub/sub
// subscription stopped receiving (a Cluster failover the client did not follow) would never be
// asked for an introduction again, and nothing else would notice. Here against a fake client
// whose subscription can be cut: the checks Redis delivers to nobody make it subscribe again,
// a failed check (Redis unavailable) or a delivered one does not, and the relay works after.
import t from 'tap';
import { Logger } from '../../src/common/log.js';
import { Metrics } from '../../src/common/metrics.js';
import { CHECK_MISSES, IntroRelay } from '../../src/locatord/store/relay.js';
import type { RedisClient, RedisSubscription } from '../../src/locatord/store/redis-client.js';

/** Channels to their live subscribers; a cut subscriber stays "subscribed" but gets nothing. */
class FakePubSub {
  readonly subscribers = new Map<string, Set<{ onMessage: (m: Buffer) => void; cut: boolean }>>();
  subscriptions = 0;
  down = false;

  client(): RedisClient {
    return {
      subscribe: (channel: string, onMessage: (m: Buffer) => void): RedisSubscription => {
        this.subscriptions++;
        const s = { onMessage, cut: false };
        let set = this.subscribers.get(channel);
        if (!set) this.subscribers.set(channel, (set = new Set()));
        set.add(s);
        return { channel, ready: Promise.resolve(), close: () => set.delete(s) } as unknown as RedisSubscription;
      },
      publish: async (channel: string, m: Buffer): Promise<number> => {
        if (this.down) throw new Error('redis unavailable');
        let n = 0;
        for (const s of this.subscribers.get(channel) ?? []) {
          if (s.cut) continue;
          n++;
          queueMicrotask(() => s.onMessage(m));
        }
        return n;
      },
    } as unknown as RedisClient;
  }

  /** Cut (or mend) every subscription of `channel` made so far. */
  cut(channel: string, cut = true): void {
    for (const s of this.subscribers.get(channel) ?? []) s.cut = cut;
  }
}

// The relay's timers are unref'd (they never keep a daemon alive): this keeps the test's process
// up while a request waits out its timeout.
const keepAlive = setInterval(() => {}, 1000);
t.teardown(() => clearInterval(keepAlive));

const OWNER = 'aa'.repeat(8);
const OWNER_CHANNEL = `dl:relay:${OWNER}`;

function relay(bus: FakePubSub, instanceId: string, lines: string[], deliver = async (): Promise<'ok'> => 'ok'): { r: IntroRelay; metrics: Metrics } {
  const metrics = new Metrics();
  const logger = new Logger({ service: 'test', level: 'info', write: (l) => lines.push(l) });
  const r = new IntroRelay({ client: bus.client(), prefix: 'dl:', instanceId, key: Buffer.alloc(32, 7), timeoutMs: 200, deliver, metrics, logger, checkEveryMs: 0 });
  return { r, metrics };
}

t.test('checks delivered to nobody: subscribed again after CHECK_MISSES in a row, and relayed to again', async (t) => {
  const bus = new FakePubSub();
  const lines: string[] = [];
  const owner = relay(bus, OWNER, lines);
  const asker = relay(bus, 'bb'.repeat(8), []);
  t.teardown(() => { owner.r.close(); asker.r.close(); });
  t.equal(await asker.r.request(OWNER, 'cc'.repeat(16), Buffer.from('intro')), 'ok', 'relayed while subscribed');

  for (let i = 0; i < 3; i++) await owner.r.checkSubscription();
  t.equal(bus.subscriptions, 2, 'delivered checks: no new subscription (one each)');

  bus.cut(OWNER_CHANNEL);
  t.equal(await asker.r.request(OWNER, 'cc'.repeat(16), Buffer.from('intro')), 'unreachable', 'cut: the owner is not reached');
  for (let i = 1; i < CHECK_MISSES; i++) await owner.r.checkSubscription();
  t.equal(owner.metrics.get('intro_relay_resubscriptions_total'), 0, 'not before CHECK_MISSES checks');
  await owner.r.checkSubscription();
  t.equal(owner.metrics.get('intro_relay_resubscriptions_total'), 1, 'subscribed again');
  t.ok(lines.some((l) => (JSON.parse(l) as Record<string, unknown>)['msg'] === 'relay subscription renewed'), 'and logged');
  t.equal(await asker.r.request(OWNER, 'cc'.repeat(16), Buffer.from('intro')), 'ok', 'relayed to again');
});

t.test('Redis unavailable: a failed check is no miss, so no resubscription storm while it is down', async (t) => {
  const bus = new FakePubSub();
  const owner = relay(bus, OWNER, []);
  t.teardown(() => owner.r.close());
  bus.cut(OWNER_CHANNEL);
  await owner.r.checkSubscription();
  bus.down = true;
  for (let i = 0; i < 5; i++) await owner.r.checkSubscription();
  t.equal(owner.metrics.get('intro_relay_resubscriptions_total'), 0, 'failed checks count neither way');
  bus.down = false;
  // One miss before the outage and CHECK_MISSES - 1 after it: a run of misses is counted across
  // failed checks, since nothing in between said the subscription works.
  for (let i = 1; i < CHECK_MISSES; i++) await owner.r.checkSubscription();
  t.equal(owner.metrics.get('intro_relay_resubscriptions_total'), 1, 'then the misses resubscribe it');
});

t.test('a delivered check resets the count: misses must be in a row', async (t) => {
  const bus = new FakePubSub();
  const owner = relay(bus, OWNER, []);
  t.teardown(() => owner.r.close());
  for (let round = 0; round < 3; round++) {
    bus.cut(OWNER_CHANNEL);
    for (let i = 1; i < CHECK_MISSES; i++) await owner.r.checkSubscription();
    bus.cut(OWNER_CHANNEL, false);
    await owner.r.checkSubscription();
  }
  t.equal(owner.metrics.get('intro_relay_resubscriptions_total'), 0);
});

t.test('its own checks are not refused as malformed', async (t) => {
  const bus = new FakePubSub();
  const lines: string[] = [];
  const owner = relay(bus, OWNER, lines);
  t.teardown(() => owner.r.close());
  await owner.r.checkSubscription();
  await new Promise((r) => setImmediate(r));
  t.equal(owner.metrics.get('intro_relays_total', { direction: 'in', result: 'refused' }), 0);
  t.notOk(lines.some((l) => l.includes('relay-refused')));
});
