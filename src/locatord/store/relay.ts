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
// owner MACs and sends it in that session). kind 1, the answer: a = a RelayResult.
// Bounded: at most `maxOutstanding` requests waiting for an answer (beyond: busy), each at most
// `timeoutMs` (then: unreachable, e.g. the owner stopped); the owner admits pushes with its
// usual per-target limits (Introductions.admit).
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { Logger } from '../../common/log.js';
import type { Metrics } from '../../common/metrics.js';
import { decodeStrict, encodeCbor } from '../../wire/cbor.js';
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
}

interface Waiting {
  resolve: (r: RelayResult) => void;
  timer: NodeJS.Timeout;
}

export class IntroRelay {
  private readonly sub: RedisSubscription;
  private readonly waiting = new Map<string, Waiting>();
  private readonly seen = new LRUCache<string, true>({ max: 10_000, ttl: 2 * MAX_SKEW_MS });
  private readonly maxOutstanding: number;
  private readonly now: () => number;
  private readonly me: Buffer;

  constructor(private readonly o: IntroRelayOptions) {
    this.maxOutstanding = o.maxOutstanding ?? 1000;
    this.now = o.now ?? Date.now;
    this.me = Buffer.from(o.instanceId, 'hex');
    o.metrics.counter('intro_relays_total', 'Introductions relayed between instances, by direction and result');
    this.sub = o.client.subscribe(this.channel(o.instanceId), (m) => this.receive(m));
  }

  get ready(): Promise<void> {
    return this.sub.ready;
  }

  private channel(inst: string): string {
    return `${this.o.prefix}relay:${inst}`;
  }

  private seal(body: Buffer): Buffer {
    return Buffer.concat([createHmac('sha256', this.o.key).update(body).digest().subarray(0, TAG_BYTES), body]);
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
    const tag = createHmac('sha256', this.o.key).update(body).digest().subarray(0, TAG_BYTES);
    if (!timingSafeEqual(tag, m.subarray(0, TAG_BYTES))) return this.refuse('bad tag');
    const d = decodeStrict(body);
    if (!d.ok || !Array.isArray(d.value)) return this.refuse('malformed');
    const [kind, from, to, id, timeMs, a, b] = d.value;
    if (!(from instanceof Uint8Array) || !(to instanceof Uint8Array) || !(id instanceof Uint8Array) || typeof timeMs !== 'number') return this.refuse('malformed');
    if (!this.me.equals(to)) return this.refuse('not ours');
    if (Math.abs(timeMs - this.now()) > MAX_SKEW_MS) return this.refuse('stale');
    const idHex = Buffer.from(id).toString('hex');
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
    this.sub.close();
    for (const [k, w] of this.waiting) {
      clearTimeout(w.timer);
      this.waiting.delete(k);
      w.resolve('unreachable');
    }
  }
}
