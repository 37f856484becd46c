/**
 * How activities publish on the worker's stream bus: never letting a bus reach the work. The `StreamBus`
 * contract says `publish` does not throw; this holds it for a bus a team wrote itself too, and reports the
 * first failure of each activity attempt (the log line names the bus, never the event).
 */
import { log } from '@temporalio/activity';
import type { StreamBus, StreamEvent } from '../stream/types.js';

/** A publish function for one activity attempt: a no-op without a bus. */
export function streamPublisher(bus: StreamBus | undefined): (event: StreamEvent) => void {
  if (!bus) return () => undefined;
  let warned = false;
  return (event) => {
    try {
      bus.publish(event);
    } catch (err) {
      if (warned) return;
      warned = true;
      log.warn('stream bus: publish threw; stream events of this attempt are dropped', { stream: bus.kind, error: err instanceof Error ? err.name : 'Error' });
    }
  };
}
