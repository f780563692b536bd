// Events of the agent and its channels are emitted from socket handlers and timers: a listener
// of the embedding application that throws (e.g. `ch.send()` on a channel that is not open
// any more, answering a message) would unwind into the UDP socket's 'message' event and kill the
// process. `SafeEmitter` catches what a listener throws: the exception is logged and, if the
// application listens for 'error', handed to it there (a throwing 'error' listener is only
// logged). EventEmitter's own `once()` wrappers and `events.once()` go through `emit` too.
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
    const emit = EventEmitter.prototype.emit as (this: unknown, event: string | symbol, ...args: unknown[]) => boolean;
    const safe = (event: string | symbol, ...args: unknown[]): boolean => {
      try {
        return emit.call(this, event, ...args);
      } catch (err) {
        this.listenerErrors++;
        const e = err instanceof Error ? err : new Error(String(err));
        log('error', 'an event listener threw; ignored', { event: String(event), err: e.message });
        if (event !== 'error' && this.listenerCount('error' as never) > 0) {
          try {
            emit.call(this, 'error', e);
          } catch (again) {
            log('error', "the 'error' listener threw; ignored", { err: (again as Error).message });
          }
        }
        return true;
      }
    };
    this.emit = safe as this['emit'];
  }
}
