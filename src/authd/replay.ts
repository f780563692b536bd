// Replay cache for AUTH_REQUESTs: the (device ID, nonce) pairs of verified requests, each kept
// until its timeMs leaves the clock-skew window (after that the request is refused as
// CLOCK_SKEW anyway). The state is per device, so that no device can push out another's entries
// (issue 15: cache-size + 50 requests of one device dated now + 290 s used to raise one global
// floor and make every honest authentication TRY_LATER for five minutes):
//
// - each device keeps at most `perDevice` unexpired entries. When a device needs one more, its
//   oldest entry is forgotten and the device's own floor rises to that entry's timeMs: from then
//   on only that device's requests younger than the floor are served (older ones get TRY_LATER).
//   A device that floods authd delays only itself.
// - the devices are bounded too (LRU, `max / perDevice` of them). A device record forced out
//   while some of its entries are unexpired leaves its newest timeMs in one of FLOOR_SLOTS slots
//   chosen by a hash of the device ID; a device coming back starts from its slot's floor. Forcing
//   records out takes max / perDevice devices authenticating within the skew window (62,500 at
//   the defaults), and even then the floor holds only for the devices of the same slot.
//
// No replay is ever served: a forgotten entry's request is older than some floor that applies to
// its device.
import { LRUCache } from 'lru-cache';

export type ReplayVerdict = 'fresh' | 'replay' | 'saturated' | 'duplicate';

/** Unexpired requests remembered per device (a device re-authenticates a few times an hour). */
export const DEVICE_REPLAY_ENTRIES = 16;
/** Slots of the floors left by device records forced out of the cache (see above). */
export const FLOOR_SLOTS = 4096;

interface Entry {
  timeMs: number;
  expiresAt: number;
  /** The request ID, when the caller tells copies of one request apart (gate.ts). */
  tag?: string;
}

interface DeviceEntries {
  /** nonce (latin1) -> entry */
  entries: Map<string, Entry>;
  /** This device's requests with timeMs at or below this are not served. */
  floorTimeMs: number;
}

/** FNV-1a of the device ID, as a slot index. */
export function replaySlotOf(deviceId: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < deviceId.length; i++) h = Math.imul(h ^ deviceId.charCodeAt(i), 0x01000193);
  return (h >>> 0) % FLOOR_SLOTS;
}

export class ReplayCache {
  private readonly devices: LRUCache<string, DeviceEntries>;
  private readonly slotFloors = new Float64Array(FLOOR_SLOTS).fill(-Infinity);
  private entryCount = 0;
  /** Unexpired entries forgotten because of a bound (a metric). */
  evictedEarly = 0;

  constructor(max: number, private readonly now: () => number = Date.now, private readonly perDevice = DEVICE_REPLAY_ENTRIES) {
    this.devices = new LRUCache<string, DeviceEntries>({
      max: Math.max(1, Math.ceil(max / perDevice)),
      dispose: (d, deviceId, reason) => {
        this.entryCount -= d.entries.size;
        if (reason !== 'evict') return;
        const now = this.now();
        let newest = -Infinity;
        for (const e of d.entries.values()) {
          if (e.expiresAt <= now) continue;
          this.evictedEarly++;
          if (e.timeMs > newest) newest = e.timeMs;
        }
        const slot = replaySlotOf(deviceId);
        if (newest > this.slotFloors[slot]!) this.slotFloors[slot] = newest;
      },
    });
  }

  /** Entries remembered, all devices. */
  get size(): number {
    return this.entryCount;
  }

  /** Whether this request was remembered with this `tag` and has not expired (a copy of it). */
  isCopy(deviceId: string, nonce: Uint8Array, tag: string): boolean {
    const e = this.devices.peek(deviceId)?.entries.get(Buffer.from(nonce).toString('latin1'));
    return e !== undefined && e.tag === tag && e.expiresAt > this.now();
  }

  /**
   * Check and remember one verified request. `expiresAt` (ms, our clock) is when a replay of it
   * would be refused for its timestamp anyway. With a `tag` (the request ID), a request whose
   * nonce was seen with the same tag is a 'duplicate' (a retransmission), not a 'replay'.
   */
  check(deviceId: string, nonce: Uint8Array, timeMs: number, expiresAt: number, tag?: string): ReplayVerdict {
    const now = this.now();
    let d = this.devices.get(deviceId);
    if (!d) {
      d = { entries: new Map(), floorTimeMs: this.slotFloors[replaySlotOf(deviceId)]! };
      this.devices.set(deviceId, d);
    }
    const key = Buffer.from(nonce).toString('latin1');
    const old = d.entries.get(key);
    if (old && old.expiresAt > now) return tag !== undefined && old.tag === tag ? 'duplicate' : 'replay';
    if (timeMs <= d.floorTimeMs) return 'saturated';
    if (old) {
      d.entries.delete(key);
      this.entryCount--;
    }
    if (d.entries.size >= this.perDevice) {
      for (const [k, e] of d.entries) if (e.expiresAt <= now) {
        d.entries.delete(k);
        this.entryCount--;
      }
    }
    if (d.entries.size >= this.perDevice) {
      // Forget this device's oldest request; its own floor keeps a replay of it out.
      let oldestKey: string | undefined;
      let oldest: Entry | undefined;
      for (const [k, e] of d.entries) if (!oldest || e.timeMs < oldest.timeMs) {
        oldestKey = k;
        oldest = e;
      }
      d.entries.delete(oldestKey!);
      this.entryCount--;
      this.evictedEarly++;
      if (oldest!.timeMs > d.floorTimeMs) d.floorTimeMs = oldest!.timeMs;
      if (timeMs <= d.floorTimeMs) return 'saturated';
    }
    d.entries.set(key, tag === undefined ? { timeMs, expiresAt } : { timeMs, expiresAt, tag });
    this.entryCount++;
    return 'fresh';
  }
}
