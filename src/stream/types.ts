/**
 * What a running session streams to the people watching it, while it runs: the model's text as it is
 * generated and the progress of its tools. These events are ephemeral (the durable record is the
 * workflow's history and the audit store): a watcher that connects late sees what happens from then on,
 * then the session's result. Workers publish them on a {@link StreamBus}; gateways subscribe per session.
 *
 * A model turn is identified by `turn` (the conversation position the reply will take, stable across
 * attempts) and each activity attempt by `attempt`. Text from an attempt that failed is withdrawn: the
 * worker publishes `attempt_failed`, and a subscriber that sees a newer attempt of the same turn (a
 * worker that died cannot say so) treats the older attempt's text as withdrawn too.
 */

/** Fields every stream event carries. */
interface StreamEventBase {
  /** The session (workflow ID) the event belongs to. */
  sessionId: string;
  /** When the worker published it, ms since the epoch (for latency figures, not for ordering). */
  at: number;
}

/** A piece of the model's text, as the Messages API streamed it. */
export interface TextDeltaEvent extends StreamEventBase {
  type: 'text_delta';
  /** The model turn: the conversation position of the reply, the same on every attempt. */
  turn: number;
  /** The `callModel` activity attempt (1-based) that produced this text. */
  attempt: number;
  /** The content block index within the reply. */
  index: number;
  text: string;
}

/** A model attempt failed after (possibly) streaming text: its text is withdrawn; a retry may follow. */
export interface AttemptFailedEvent extends StreamEventBase {
  type: 'attempt_failed';
  turn: number;
  attempt: number;
  /** The failure, one line, redacted. */
  error: string;
}

/** A tool activity attempt started. */
export interface ToolStartedEvent extends StreamEventBase {
  type: 'tool_started';
  tool: string;
  /** The model's `tool_use` id (or the chain step's id). */
  toolUseId: string;
  attempt: number;
}

/** A tool reported progress (`ctx.progress(message)`). */
export interface ToolProgressEvent extends StreamEventBase {
  type: 'tool_progress';
  tool: string;
  toolUseId: string;
  attempt: number;
  /** What the tool said, redacted. */
  message: string;
}

/** A tool activity attempt ended. */
export interface ToolFinishedEvent extends StreamEventBase {
  type: 'tool_finished';
  tool: string;
  toolUseId: string;
  attempt: number;
  outcome: 'ok' | 'error';
  durationMs: number;
}

/** What workers publish. */
export type StreamEvent = TextDeltaEvent | AttemptFailedEvent | ToolStartedEvent | ToolProgressEvent | ToolFinishedEvent;

/** What a subscriber of {@link subscribeSession} receives: the bus's events plus `retract`. */
export type SessionStreamEvent =
  | StreamEvent
  | (StreamEventBase & {
      /** Drop the text already shown for this turn's `attempt`: that attempt failed or was superseded. */
      type: 'retract';
      turn: number;
      attempt: number;
    });

/**
 * Carries stream events from workers to gateways. `publish` never throws and never blocks the caller
 * for long (a lost stream event costs a watcher some text, never the session).
 */
export interface StreamBus {
  /** Which transport: `memory` (one process), `sqlite` (processes sharing the data dir) or `postgres` (LISTEN/NOTIFY). */
  readonly kind: 'memory' | 'sqlite' | 'postgres';
  publish(event: StreamEvent): void;
  /** Calls `listener` with each event of `sessionId` published from now on; returns the unsubscribe. */
  subscribe(sessionId: string, listener: (event: StreamEvent) => void): Promise<() => void>;
  close(): Promise<void>;
}
