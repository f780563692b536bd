// The agent's bounded waits (for the registration, for a new grant, a back-off, the network
// classification before a match submit) end when the agent stops: stop() aborts the run's
// signal (registration.ts `stopSignal`) and every wait listens to it. So the caller learns at
// once that the agent stopped (NOT_RUNNING, or the wait's own "no"), and no timer of a wait
// keeps the process alive after stop() (devloc-agent(3) stop). One helper for all of them.

export interface WaitSpec<T> {
  /**
   * Start listening for what ends the wait well (an event): call `settle` then. Returns what
   * stops listening; called whichever way the wait ends.
   */
  arm(settle: (value: T) => void): () => void;
  /** The outcome at the bound: a value, or an Error to reject with. */
  timedOut(): T | Error;
  /** The outcome when the agent stops first (also when it has stopped already). */
  stopped(): T | Error;
}

/** Wait for `spec.arm`'s event, at most `ms`, and no longer than until `signal` aborts. */
export function waitUnlessStopped<T>(signal: AbortSignal, ms: number, spec: WaitSpec<T>): Promise<T> {
  if (signal.aborted) return settled(spec.stopped());
  return new Promise<T>((resolve, reject) => {
    let done = false;
    let disarm: (() => void) | undefined;
    const end = (outcome: T | Error): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      disarm?.();
      if (outcome instanceof Error) reject(outcome);
      else resolve(outcome);
    };
    const onAbort = (): void => end(spec.stopped());
    const timer = setTimeout(() => end(spec.timedOut()), ms);
    signal.addEventListener('abort', onAbort, { once: true });
    const off = spec.arm(end);
    // Settled while arming (the event had come already): stop listening now.
    if (done) off();
    else disarm = off;
  });
}

function settled<T>(outcome: T | Error): Promise<T> {
  return outcome instanceof Error ? Promise.reject(outcome) : Promise.resolve(outcome);
}

/** After `ms`: true; when `signal` aborts first (or has): false, at once. */
export function sleepUnlessStopped(signal: AbortSignal, ms: number): Promise<boolean> {
  return waitUnlessStopped(signal, ms, { arm: () => () => {}, timedOut: () => true, stopped: () => false });
}
