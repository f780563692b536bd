// Events of the agent and its channels are emitted from socket handlers and timers: a listener
// of the embedding application that throws (e.g. `ch.send()` on a channel that is not open
// any more, answering a message) would unwind into the UDP socket's 'message' event and kill the
// process. `SafeEmitter` calls each listener on its own: what one throws is logged and, if the
// application listens for 'error', handed to it there (a throwing 'error' listener is only
// logged), and the next listeners still run. An 'error' event nobody listens for is logged, not
// thrown. once() wrappers (also those of `events.once()`) are called like Node calls them.
import { EventEmitter } from 'node:events';
import type { AgentLog } from './errors.js';

type EventMap<T> = Record<keyof T, unknown[]>;

export class SafeEmitter<T extends EventMap<T>> extends EventEmitter<T> {
  /** Exceptions thrown by listeners and caught here. */
  listenerErrors = 0;

  constructor(log: AgentLog) {
    super();
    // An own property shadowing EventEmitter#emit keeps its typed signature (an `override` of a
    // generic method cannot restate it).
    type Fn = (...a: unknown[]) => unknown;
    const listenersOf = (event: string | symbol): Fn[] => [...(EventEmitter.prototype.rawListeners.call(this, event) as Fn[])];
    const call = (listener: Fn, event: string | symbol, args: unknown[]): Error | undefined => {
      try {
        listener.apply(this, args);
        return undefined;
      } catch (err) {
        this.listenerErrors++;
        const e = err instanceof Error ? err : new Error(String(err));
        log('error', 'an event listener threw; ignored', { event: String(event), err: e.message });
        return e;
      }
    };
    const safe = (event: string | symbol, ...args: unknown[]): boolean => {
      // A copy, as EventEmitter#emit takes: listeners added or removed meanwhile do not count.
      const listeners = listenersOf(event);
      if (listeners.length === 0) {
        if (event === 'error') log('error', 'unhandled error event', { err: (args[0] as Error | undefined)?.message });
        return false;
      }
      for (const listener of listeners) {
        const e = call(listener, event, args);
        if (e && event !== 'error') {
          for (const onError of listenersOf('error')) call(onError, 'error', [e]);
        }
      }
      return true;
    };
    this.emit = safe as this['emit'];
  }
}
