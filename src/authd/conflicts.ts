// Cloned identities as authd sees them (issue 19): two terminals holding one device identity
// each re-authenticate when locatord tells them the other took their registration, so authd sees
// the device flip between two addresses: A, then B, then A again, within minutes. A terminal that
// moves goes A -> B and stays. authd cannot stop a clone (both prove the same key; locatord
// refuses the displaced session with IDENTITY_CONFLICT); it counts and logs the flip so the
// operator learns which device is in use twice, and where.
import { LRUCache } from 'lru-cache';

/** A return to the previous address within this long counts as a conflict. */
export const CONFLICT_WINDOW_MS = 10 * 60_000;
/** Devices remembered (LRU): each entry is two addresses and three times. */
export const CONFLICT_DEVICES = 100_000;
/** One log line per device at most this often (the metric counts every flip). */
const LOG_INTERVAL_MS = 60_000;

interface Seen {
  cur: string;
  curAt: number;
  prev?: string;
  prevAt?: number;
  loggedAt?: number;
}

export interface Conflict {
  /** The address the device authenticated from just before, now contested. */
  other: string;
  /** Whether this one should be logged (rate-limited per device). */
  log: boolean;
}

export class IdentityConflicts {
  private readonly seen: LRUCache<string, Seen>;

  constructor(private readonly now: () => number = Date.now, max = CONFLICT_DEVICES, private readonly windowMs = CONFLICT_WINDOW_MS) {
    this.seen = new LRUCache({ max });
  }

  /** Note a successful authentication of `deviceId` from `addr`; a conflict when it flips back. */
  note(deviceId: string, addr: string): Conflict | null {
    const t = this.now();
    const s = this.seen.get(deviceId);
    if (!s) {
      this.seen.set(deviceId, { cur: addr, curAt: t });
      return null;
    }
    if (s.cur === addr) {
      s.curAt = t;
      return null;
    }
    const flippedBack = s.prev === addr && s.prevAt !== undefined && t - s.prevAt <= this.windowMs;
    const other = s.cur;
    s.prev = s.cur;
    s.prevAt = s.curAt;
    s.cur = addr;
    s.curAt = t;
    if (!flippedBack) return null;
    const log = s.loggedAt === undefined || t - s.loggedAt >= LOG_INTERVAL_MS;
    if (log) s.loggedAt = t;
    return { other, log };
  }
}
