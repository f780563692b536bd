// An indexed binary min-heap of timed items (matchd: deadlines and widening steps of waiting
// requests; net/push.ts: the due times of its retransmission buckets),
// so a tick touches only the requests whose time has come instead of scanning every waiting
// request. Items remember their position, so an ended request leaves the heap in O(log n) and
// nothing keeps it alive.

export interface Timed {
  /** When the item is due, ms. */
  eventAtMs: number;
  /** Tie-breaker (submission order). */
  seq: number;
  /** Position in the heap; -1 when not in it. */
  heapIndex: number;
}

export class TimerHeap<T extends Timed> {
  private readonly items: T[] = [];

  get size(): number {
    return this.items.length;
  }

  peek(): T | undefined {
    return this.items[0];
  }

  push(x: T): void {
    x.heapIndex = this.items.length;
    this.items.push(x);
    this.up(x.heapIndex);
  }

  pop(): T | undefined {
    const top = this.items[0];
    if (top) this.remove(top);
    return top;
  }

  remove(x: T): void {
    const i = x.heapIndex;
    if (i < 0 || this.items[i] !== x) return;
    const last = this.items.pop()!;
    x.heapIndex = -1;
    if (last === x) return;
    this.items[i] = last;
    last.heapIndex = i;
    this.down(i);
    this.up(last.heapIndex);
  }

  clear(): void {
    for (const x of this.items) x.heapIndex = -1;
    this.items.length = 0;
  }

  private less(a: T, b: T): boolean {
    return a.eventAtMs < b.eventAtMs || (a.eventAtMs === b.eventAtMs && a.seq < b.seq);
  }

  private swap(i: number, j: number): void {
    const a = this.items[i]!;
    const b = this.items[j]!;
    this.items[i] = b;
    this.items[j] = a;
    a.heapIndex = j;
    b.heapIndex = i;
  }

  private up(i: number): void {
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.less(this.items[i]!, this.items[parent]!)) return;
      this.swap(i, parent);
      i = parent;
    }
  }

  private down(i: number): void {
    const n = this.items.length;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < n && this.less(this.items[l]!, this.items[m]!)) m = l;
      if (r < n && this.less(this.items[r]!, this.items[m]!)) m = r;
      if (m === i) return;
      this.swap(i, m);
      i = m;
    }
  }
}
