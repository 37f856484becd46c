/**
 * A watcher's view of one session's stream: the bus's raw events made consistent across model retries.
 * Text comes per attempt of a model turn; when an attempt fails its text must be withdrawn before the
 * retry's text is shown, or the watcher reads both. The worker says so (`attempt_failed`) when it can;
 * when it cannot (it died mid-stream), the first text of a newer attempt of the same turn says it. So:
 * a newer attempt's first text is preceded by a `retract` for each older attempt whose text was relayed;
 * `attempt_failed` is preceded by a `retract` for that attempt (and any older one) if its text was relayed;
 * and text of an attempt older than one already seen for its turn, or of an attempt that failed, is
 * dropped (a late packet).
 */
import type { SessionStreamEvent, StreamBus, StreamEvent } from './types.js';

/** Turns remembered per subscription: older ones are forgotten (a session's turns only move forward). */
const TURNS_KEPT = 64;

interface TurnState {
  /** The newest attempt seen for the turn (by text or failure). */
  latest: number;
  /** Attempts whose text was relayed and not yet retracted. */
  shown: Set<number>;
  /** Attempts that failed: their late text is dropped. */
  failed: Set<number>;
}

/**
 * Subscribes to one session and calls `listener` with its events, retracting the text of failed and
 * superseded model attempts (see the file header). Tool events pass through unchanged.
 * @returns the unsubscribe.
 * @throws what the bus's `subscribe` throws (a bus that cannot listen).
 */
export async function subscribeSession(
  bus: StreamBus,
  sessionId: string,
  listener: (event: SessionStreamEvent) => void,
): Promise<() => void> {
  return bus.subscribe(sessionId, sessionStreamFilter(listener));
}

/**
 * The filter {@link subscribeSession} puts between a bus and a listener: feed it the raw events of one
 * session, in order; it calls `listener` with the consistent stream.
 */
export function sessionStreamFilter(listener: (event: SessionStreamEvent) => void): (event: StreamEvent) => void {
  const turns = new Map<number, TurnState>();
  const stateOf = (turn: number): TurnState => {
    let state = turns.get(turn);
    if (!state) {
      state = { latest: 0, shown: new Set(), failed: new Set() };
      turns.set(turn, state);
      if (turns.size > TURNS_KEPT) turns.delete(Math.min(...turns.keys()));
    }
    return state;
  };
  const retract = (event: StreamEvent & { turn: number }, state: TurnState, attempt: number) => {
    state.shown.delete(attempt);
    listener({ type: 'retract', sessionId: event.sessionId, at: event.at, turn: event.turn, attempt });
  };
  return (event) => {
    if (event.type === 'text_delta') {
      const state = stateOf(event.turn);
      if (event.attempt < state.latest || state.failed.has(event.attempt)) return;
      if (event.attempt > state.latest) {
        for (const older of [...state.shown].sort((a, b) => a - b)) retract(event, state, older);
        state.latest = event.attempt;
      }
      state.shown.add(event.attempt);
      listener(event);
    } else if (event.type === 'attempt_failed') {
      const state = stateOf(event.turn);
      state.failed.add(event.attempt);
      state.latest = Math.max(state.latest, event.attempt);
      // This attempt's text, and any older attempt's (a worker that died before it could say so).
      for (const shown of [...state.shown].sort((a, b) => a - b)) if (shown <= event.attempt) retract(event, state, shown);
      listener(event);
    } else {
      listener(event);
    }
  };
}
