// Introductions across locatord instances sharing Redis (devloc-locatord(8), SEVERAL
// INSTANCES). An INTRO must leave from the instance the target last spoke to (the presence
// record's `inst`): that is where the target's NAT mapping points and where its INTRO_ACK comes
// back. So the instance answering INTRODUCE builds both halves (it reads the target's session
// keys from Redis to seal the target's half), then asks the owner over Redis pub/sub to push the
// target's half, and answers the asker only once the owner has said yes.
//
// Every instance subscribes to `<prefix>relay:<instance id>` (in Cluster: sharded pub/sub,
// SSUBSCRIBE/SPUBLISH, so a message goes to the channel's shard only, and the subscription
// follows the shard's master across a failover; redis-client.ts). A message is
//   HMAC-SHA256(relay key)[0:16] || CBOR [kind, from, to, id, timeMs, a, b]
// with the relay key derived from the service key file (only instances of this deployment can
// ask for a push); it is refused when the tag is wrong, it is not addressed to us, its time is
// more than MAX_SKEW_MS off, or its ID was seen (replay). kind 0, a request: a = target locator
// ID, b = the INTRO as an unauthenticated datagram whose auth names the target's session (the
// owner MACs and sends it in that session). kind 1, the answer: a = a RelayResult. kind 2, a
// check an instance sends its own channel (a = 0, b = null; nothing is done with it).
// The check is there because the subscription is the one thing nobody else would see fail: every
// `checkEveryMs` an instance publishes a check to its own channel, and Redis answers how many
// subscribers got it; when that is 0 for CHECK_MISSES checks in a row while Redis takes commands,
// the subscription is made again on a new connection (logged, counted). ioredis normally
// follows a Cluster failover with the sharded subscription within a second; a run of the
// failover test once saw relays to one instance not resume within 30 s of the promotion, and
// a subscription left behind is the cause nothing else would notice or mend.
// Bounded: at most `maxOutstanding` requests waiting for an answer (beyond: busy), each at most
// `timeoutMs` (then: unreachable, e.g. the owner stopped); the owner admits pushes with its
// usual per-target limits (Introductions.admit).
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { Logger } from '../../common/log.js';
import type { Metrics } from '../../common/metrics.js';
import { decodeStrict, encodeCbor } from '../../wire/cbor.js';
import { KeyedHmac } from '../../wire/hmac-sha256.js';
import type { RedisClient, RedisSubscription } from './redis-client.js';

export type RelayResult = 'ok' | 'busy' | 'gone' | 'unreachable';
const RESULTS: RelayResult[] = ['ok', 'busy', 'gone', 'unreachable'];
const TAG_BYTES = 16;
const MAX_SKEW_MS = 10_000;

export interface IntroRelayOptions {
  /** Publishes, and subscribes on a connection of its own (RedisClient.subscribe). */
  client: RedisClient;
  prefix: string;
  instanceId: string;
  /** 32 bytes, the same on every instance (codec.ts deriveFromServiceKey). */
  key: Buffer;
  timeoutMs: number;
  maxOutstanding?: number;
  /** At the owner: push `intro` (an INTRO datagram without MAC) to `targetHex`. */
  deliver: (targetHex: string, intro: Buffer) => Promise<RelayResult>;
  metrics: Metrics;
  logger: Logger;
  now?: () => number;
  /** How often the subscription checks itself (ms; default RELAY_CHECK_EVERY_MS; 0: never, tests call checkSubscription()). */
  checkEveryMs?: number;
}

/** How often an instance publishes a check to its own relay channel (ms). */
export const RELAY_CHECK_EVERY_MS = 2000;
/** Checks in a row that reached no subscriber before the subscription is made again. */
export const CHECK_MISSES = 2;

interface Waiting {
  resolve: (r: RelayResult) => void;
  timer: NodeJS.Timeout;
}

export class IntroRelay {
  private sub: RedisSubscription;
  /** Checks in a row that Redis delivered to no subscriber. */
  private missedChecks = 0;
  private readonly checkTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly waiting = new Map<string, Waiting>();
  private readonly seen = new LRUCache<string, true>({ max: 10_000, ttl: 2 * MAX_SKEW_MS });
  private readonly maxOutstanding: number;
  private readonly now: () => number;
  private readonly me: Buffer;
  /** The relay key's HMAC (tags of relay messages), its pads hashed once. */
  private readonly mac: KeyedHmac;

  constructor(private readonly o: IntroRelayOptions) {
    this.mac = new KeyedHmac(o.key);
    this.maxOutstanding = o.maxOutstanding ?? 1000;
    this.now = o.now ?? Date.now;
    this.me = Buffer.from(o.instanceId, 'hex');
    o.metrics.counter('intro_relays_total', 'Introductions relayed between instances, by direction and result');
    o.metrics.counter('intro_relay_resubscriptions_total', 'Relay subscriptions made again because checks sent to them reached no subscriber');
    this.sub = this.subscribe();
    const every = o.checkEveryMs ?? RELAY_CHECK_EVERY_MS;
    if (every > 0) {
      this.checkTimer = setInterval(() => void this.checkSubscription(), every);
      this.checkTimer.unref();
    }
  }

  private subscribe(): RedisSubscription {
    return this.o.client.subscribe(this.channel(this.o.instanceId), (m) => this.receive(m));
  }

  /**
   * Publish a check to our own channel; after CHECK_MISSES in a row that Redis delivered to
   * nobody, subscribe again on a new connection. A check that fails (Redis unavailable) counts
   * neither way: there is nothing to mend on our side then.
   */
  async checkSubscription(): Promise<void> {
    let receivers: unknown;
    try {
      receivers = await this.send(this.o.instanceId, 2, randomBytes(8), 0, null);
    } catch {
      return;
    }
    if (this.closed) return;
    if (typeof receivers !== 'number' || receivers > 0) {
      this.missedChecks = 0;
      return;
    }
    if (++this.missedChecks < CHECK_MISSES) return;
    this.missedChecks = 0;
    this.sub.close();
    this.sub = this.subscribe();
    this.o.metrics.inc('intro_relay_resubscriptions_total');
    this.o.logger.warn('relay subscription renewed', { channel: this.sub.channel, reason: `${CHECK_MISSES} checks reached no subscriber` });
  }

  get ready(): Promise<void> {
    return this.sub.ready;
  }

  private channel(inst: string): string {
    return `${this.o.prefix}relay:${inst}`;
  }

  private seal(body: Buffer): Buffer {
    const m = Buffer.allocUnsafe(TAG_BYTES + body.length);
    this.mac.digestInto(body, body.length, m, 0, TAG_BYTES);
    body.copy(m, TAG_BYTES);
    return m;
  }

  private send(to: string, kind: number, id: Buffer, a: Buffer | number, b: Buffer | null): Promise<unknown> {
    const body = encodeCbor([kind, this.me, Buffer.from(to, 'hex'), id, this.now(), a, b]);
    // Cluster: SPUBLISH to the shard of the addressee's channel (where it SSUBSCRIBEd).
    return this.o.client.publish(this.channel(to), this.seal(body));
  }

  /** Ask instance `owner` to push `intro` to `targetHex`; resolves with its answer. */
  request(owner: string, targetHex: string, intro: Buffer): Promise<RelayResult> {
    const count = (r: RelayResult): RelayResult => {
      this.o.metrics.inc('intro_relays_total', { direction: 'out', result: r });
      return r;
    };
    if (this.waiting.size >= this.maxOutstanding) return Promise.resolve(count('busy'));
    const id = randomBytes(8);
    const key = id.toString('hex');
    return new Promise<RelayResult>((resolve) => {
      const timer = setTimeout(() => {
        this.waiting.delete(key);
        resolve(count('unreachable'));
      }, this.o.timeoutMs);
      timer.unref();
      this.waiting.set(key, { resolve: (r) => resolve(count(r)), timer });
      this.send(owner, 0, id, Buffer.from(targetHex, 'hex'), intro).catch(() => {
        clearTimeout(timer);
        this.waiting.delete(key);
        resolve(count('unreachable'));
      });
    });
  }

  private refuse(reason: string): void {
    this.o.metrics.inc('intro_relays_total', { direction: 'in', result: 'refused' });
    this.o.logger.refusal('relay-refused', { reason });
  }

  private receive(m: Buffer): void {
    if (m.length <= TAG_BYTES) return this.refuse('short');
    const body = m.subarray(TAG_BYTES);
    const tag = Buffer.allocUnsafe(TAG_BYTES);
    this.mac.digestInto(body, body.length, tag, 0, TAG_BYTES);
    if (!timingSafeEqual(tag, m.subarray(0, TAG_BYTES))) return this.refuse('bad tag');
    const d = decodeStrict(body);
    if (!d.ok || !Array.isArray(d.value)) return this.refuse('malformed');
    const [kind, from, to, id, timeMs, a, b] = d.value;
    if (!(from instanceof Uint8Array) || !(to instanceof Uint8Array) || !(id instanceof Uint8Array) || typeof timeMs !== 'number') return this.refuse('malformed');
    if (!this.me.equals(to)) return this.refuse('not ours');
    if (Math.abs(timeMs - this.now()) > MAX_SKEW_MS) return this.refuse('stale');
    const idHex = Buffer.from(id).toString('hex');
    if (kind === 2) return;
    if (kind === 1) {
      const w = this.waiting.get(idHex);
      if (!w || typeof a !== 'number' || !RESULTS[a]) return;
      this.waiting.delete(idHex);
      clearTimeout(w.timer);
      w.resolve(RESULTS[a]!);
      return;
    }
    if (kind !== 0 || !(a instanceof Uint8Array) || !(b instanceof Uint8Array)) return this.refuse('malformed');
    const replayKey = `${Buffer.from(from).toString('hex')}/${idHex}`;
    if (this.seen.has(replayKey)) return this.refuse('replay');
    this.seen.set(replayKey, true);
    const fromHex = Buffer.from(from).toString('hex');
    void this.o.deliver(Buffer.from(a).toString('hex'), Buffer.from(b)).catch((): RelayResult => 'gone').then((r) => {
      this.o.metrics.inc('intro_relays_total', { direction: 'in', result: r });
      return this.send(fromHex, 1, Buffer.from(id), RESULTS.indexOf(r), null);
    }).catch(() => { /* the asker's instance times out */ });
  }

  close(): void {
    this.closed = true;
    if (this.checkTimer) clearInterval(this.checkTimer);
    this.sub.close();
    for (const [k, w] of this.waiting) {
      clearTimeout(w.timer);
      this.waiting.delete(k);
      w.resolve('unreachable');
    }
  }
}
