/**
 * Dead letters (`keel failed`): the sessions that failed or were cancelled, newest first, with why and
 * what became of their undos, computed from the audit trail's session summaries. Pure: the CLI reads the
 * rows and prints.
 */
import type { SessionSummary, UndoRecord } from './sessions.js';

/**
 * What became of a session's undos. `none needed`: it had no write to undo (discarded undos are writes
 * that never happened); `all compensated`: every write was undone; `some failed`: at least one undo failed
 * for good and needs a person; `incomplete`: an undo never ran (still pending at the end).
 */
export type CompensationState = 'none needed' | 'all compensated' | 'some failed' | 'incomplete';

/** One failed or cancelled session. */
export interface FailedSession {
  sessionId: string;
  outcome: 'failed' | 'cancelled';
  startedAt: string;
  /** When it ended (ISO 8601). */
  endedAt: string;
  /** `run_end.reason`, or 'no reason recorded'. */
  reason: string;
  compensation: CompensationState;
  /** The undos that mattered (not the discarded ones). */
  undos: UndoRecord[];
  agent?: string;
  user?: string;
  costUsd?: number;
}

/** The state of a set of undos (see `CompensationState`). */
export function compensationState(undos: readonly UndoRecord[]): CompensationState {
  const relevant = undos.filter((u) => u.status !== 'discarded');
  if (relevant.length === 0) return 'none needed';
  if (relevant.some((u) => u.status === 'failed')) return 'some failed';
  if (relevant.every((u) => u.status === 'compensated')) return 'all compensated';
  return 'incomplete';
}

/** The failed and cancelled sessions among `sessions` that ended at or after `since`, newest end first. */
export function failedSessions(sessions: readonly SessionSummary[], since: Date): FailedSession[] {
  return sessions
    .filter((s) => (s.outcome === 'failed' || s.outcome === 'cancelled') && s.endedAt !== undefined && Date.parse(s.endedAt) >= since.getTime())
    .map((s) => ({
      sessionId: s.sessionId,
      outcome: s.outcome as 'failed' | 'cancelled',
      startedAt: s.startedAt,
      endedAt: s.endedAt!,
      reason: s.reason ?? 'no reason recorded',
      compensation: compensationState(s.undos),
      undos: s.undos.filter((u) => u.status !== 'discarded'),
      ...(s.agent ? { agent: s.agent } : {}),
      ...(s.user ? { user: s.user } : {}),
      ...(s.costUsd !== undefined ? { costUsd: s.costUsd } : {}),
    }))
    .sort((a, b) => Date.parse(b.endedAt) - Date.parse(a.endedAt));
}
