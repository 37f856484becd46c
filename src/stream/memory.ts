/**
 * The in-process stream bus: a map of session → listeners. Workers and watchers in one process (tests,
 * `keel dev`, a gateway that runs its own workers) need nothing more. Delivery is synchronous, in publish
 * order; a listener that throws is reported and skipped, never felt by the publisher.
 */
import { dropReporter, silentStreamLogger, type StreamBusLogger } from './report.js';
import type { StreamBus, StreamEvent } from './types.js';

/** Options of {@link createMemoryStreamBus}. */
export interface MemoryStreamBusOptions {
  /** Where listener failures are reported (nowhere by default). */
  logger?: StreamBusLogger;
}

/** Creates a stream bus that carries events within this process only. */
export function createMemoryStreamBus(opts: MemoryStreamBusOptions = {}): StreamBus {
  const listeners = new Map<string, Set<(event: StreamEvent) => void>>();
  const report = dropReporter(opts.logger ?? silentStreamLogger, 'memory');
  let closed = false;
  return {
    kind: 'memory',
    publish(event) {
      const set = listeners.get(event.sessionId);
      if (!set) return;
      // A copy: a listener may unsubscribe (itself or another) while we deliver.
      for (const listener of [...set]) {
        try {
          listener(event);
        } catch (err) {
          report.dropped('listener', err);
        }
      }
    },
    async subscribe(sessionId, listener) {
      if (closed) throw new Error('stream bus closed');
      // Wrapped, so the same function subscribed twice is two subscriptions, each with its own unsubscribe.
      const entry = (event: StreamEvent) => listener(event);
      let set = listeners.get(sessionId);
      if (!set) listeners.set(sessionId, (set = new Set()));
      set.add(entry);
      return () => {
        set.delete(entry);
        if (set.size === 0 && listeners.get(sessionId) === set) listeners.delete(sessionId);
      };
    },
    async close() {
      closed = true;
      listeners.clear();
    },
  };
}
