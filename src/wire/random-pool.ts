// Random bytes for the values a server draws per request (a ticket's ID, a grant's nonce), cut
// from a pool filled 4 KiB at a time. Why: node:crypto's randomBytes(16) costs ~2.3 us here (a
// native call into OpenSSL's generator per draw), ~0.2 us from the pool; authd draws two or
// three per authentication (2.8% of a worker's busy samples in a CPU profile, 2026-12-06).
//
// The bytes are the same generator's (randomFillSync); each is handed out once and zeroed in the
// pool as it leaves, so the pool holds only bytes not yet drawn. Processes do not share one:
// node's cluster and child_process start new processes (no fork() of this one's memory).
import { randomFillSync } from 'node:crypto';

/** Draws larger than this are filled directly (a pool refill would be most of them). */
export const MAX_POOLED_DRAW = 256;

export class RandomPool {
  private readonly pool: Buffer;
  private at: number;

  /** `fill` fills a buffer with random bytes (default randomFillSync; tests count the refills). */
  constructor(readonly poolBytes = 4096, private readonly fill: (b: Buffer) => void = (b) => { randomFillSync(b); }) {
    if (!Number.isInteger(poolBytes) || poolBytes < MAX_POOLED_DRAW) throw new RangeError(`a pool holds at least ${MAX_POOLED_DRAW} bytes`);
    this.pool = Buffer.alloc(poolBytes);
    this.at = poolBytes;
  }

  /** `n` random bytes, in a new Buffer. */
  draw(n: number): Buffer {
    if (!Number.isInteger(n) || n < 0) throw new RangeError(`cannot draw ${n} random bytes`);
    const out = Buffer.allocUnsafe(n);
    if (n > MAX_POOLED_DRAW) {
      this.fill(out);
      return out;
    }
    if (this.at + n > this.poolBytes) {
      this.fill(this.pool);
      this.at = 0;
    }
    this.pool.copy(out, 0, this.at, this.at + n);
    this.pool.fill(0, this.at, this.at + n);
    this.at += n;
    return out;
  }

  /** Bytes drawn and not yet handed out (tests: what the pool still holds is only these). */
  get left(): number {
    return this.poolBytes - this.at;
  }
}

const shared = new RandomPool();

/** `n` random bytes from this process's pool (a new Buffer). */
export function randomDraw(n: number): Buffer {
  return shared.draw(n);
}
