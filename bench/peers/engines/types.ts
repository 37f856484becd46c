/**
 * The contract each engine of the peers benchmark fulfils: start (not timed), run one session to its
 * end, say how it keeps state durable, and stop. Engines on Temporal also read a session's history, so the
 * benchmark can count Temporal Cloud actions and split a step into queue waits and run times.
 */
import type { BenchStack, HistoryEvent } from '../../support.js';
import type { StepIO, StepTarget } from '../workload.js';

/** What every engine gets at start: the shared stack (model, demo services, Temporal dev server, Keel worker), the step I/O and a scratch directory. */
export interface EngineContext {
  stack: BenchStack;
  io: StepIO;
  target: StepTarget;
  /** Steps per session. */
  steps: number;
  /** A directory of this run, removed at the end (databases, server data, logs). */
  tmp: string;
  /** Writes a progress line to stderr. */
  progress(msg: string): void;
}

/** One engine, started. */
export interface Engine {
  /** Column name in the table, e.g. `temporal-local`. */
  name: string;
  /** Versions of what runs, one short line (e.g. `restate-server 1.7.12, sdk 1.17.2`). */
  version: string;
  /** How it keeps a step durable, as configured for this run: lines printed under the table. */
  durability: string[];
  /** Runs one session to its end and checks it ran the whole script; throws otherwise. */
  runSession(sessionId: string): Promise<void>;
  /** The session's Temporal history (engines on Temporal only). */
  history?(sessionId: string): Promise<HistoryEvent[]>;
  /** Stops what `start` started (servers, workers, connections); the shared stack stays up. */
  close(): Promise<void>;
}

/** Starts an engine; not timed. */
export type StartEngine = (ctx: EngineContext) => Promise<Engine>;
