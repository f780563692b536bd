// Values that are there now or later. The embedded store answers synchronously, so that its hot
// path (REFRESH, QUERY_ADDR) creates no promise per request and the DatagramServer answers in
// the same turn; Redis answers with promises. The handlers are written once with these helpers:
// a function applied at once to a plain value, or when a promise settles.

export type MaybePromise<T> = T | Promise<T>;

export function isPromise<T>(v: MaybePromise<T>): v is Promise<T> {
  return typeof (v as { then?: unknown } | null | undefined)?.then === 'function';
}

/** `f(v)` now if `v` is a value, else once it resolves. */
export function then<T, R>(v: MaybePromise<T>, f: (x: T) => MaybePromise<R>): MaybePromise<R> {
  return isPromise(v) ? v.then(f) : f(v);
}

/** Both values, now if both are there (the two commands of one request still share a pipeline). */
export function both<A, B>(a: MaybePromise<A>, b: MaybePromise<B>): MaybePromise<[A, B]> {
  return isPromise(a) || isPromise(b) ? Promise.all([a, b]) : [a, b];
}

/** Every value, now if all are there. */
export function all<T>(vs: MaybePromise<T>[]): MaybePromise<T[]> {
  for (const v of vs) if (isPromise(v)) return Promise.all(vs);
  return vs as T[];
}
