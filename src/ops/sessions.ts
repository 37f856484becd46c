/**
 * Sessions as an operator sees them, computed from the audit trail: when each started and ended, how it
 * ended, what it cost, its tool results and its undos. This is the shared ground of the operator reports
 * (`keel slo`, `keel failed`); it is pure (rows in, summaries out) so the reports can be tested without a
 * store. A "session" here is one execution chain: a workflow ID reused by a new session gets keys with a
 * new prefix (see src/workflows/audit.ts), so the two are reported apart.
 */
import type { AuditRow } from '../store/index.js';

/** How a session ended, as its `run_end` row says. */
export type SessionOutcome = 'completed' | 'failed' | 'cancelled';

/** One undo, as a `compensation` row (or the `run_end` summary, `'tool: status'`) records it. */
export interface UndoRecord {
  tool: string;
  /** `compensated`, `failed`, `discarded` (the write never happened, nothing to undo) or `pending`. */
  status: string;
  error?: string;
}

/** One tool result of a session. */
export interface ToolResultRecord {
  tool: string;
  /** `ok`, `error`, `rejected` (the model's mistake: bad input, a refused call) or `unknown`. */
  outcome: string;
  latencyMs?: number;
}

/** A session, summarised from its audit rows. Times are ISO 8601 as the trail holds them. */
export interface SessionSummary {
  sessionId: string;
  /** The key prefix of the execution chain ('' for keys without one). */
  chain: string;
  /** The `run` row's time. */
  startedAt: string;
  /** The `run_end` row's time; absent while the session runs. */
  endedAt?: string;
  outcome?: SessionOutcome;
  /** Why it failed or was cancelled (`run_end.reason`). */
  reason?: string;
  /** `run_end.usage.cost_usd`, in US dollars. */
  costUsd?: number;
  /** Seconds from the `run` row to the `run_end` row. */
  latencySeconds?: number;
  /** The agent, or the workflow for tool chains. */
  agent?: string;
  user?: string;
  toolResults: ToolResultRecord[];
  /** One per undo: from the `compensation` rows, else from the `run_end` summary. */
  undos: UndoRecord[];
}

const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

/** The execution chain a row belongs to: its key's prefix before the first ':' ('' without one). */
function chainOf(key: string): string {
  const i = key.indexOf(':');
  return i < 0 ? '' : key.slice(0, i);
}

/**
 * Summarises audit rows (any order, any number of sessions) into sessions, newest start first. Rows of a
 * chain with no `run` row are left out: there is no start to place them by.
 */
export function summarizeSessions(rows: readonly AuditRow[]): SessionSummary[] {
  const chains = new Map<string, AuditRow[]>();
  for (const row of rows) {
    const id = `${row.sessionId}\u0000${chainOf(row.key)}`;
    const list = chains.get(id);
    if (list) list.push(row);
    else chains.set(id, [row]);
  }
  const sessions: SessionSummary[] = [];
  for (const list of chains.values()) {
    list.sort((a, b) => a.seq - b.seq);
    const run = list.find((r) => r.kind === 'run');
    if (!run) continue;
    const end = [...list].reverse().find((r) => r.kind === 'run_end');
    const s: SessionSummary = {
      sessionId: run.sessionId,
      chain: chainOf(run.key),
      startedAt: run.at,
      toolResults: [],
      undos: [],
    };
    const agent = str(run.data.agent) ?? str(run.data.workflow);
    if (agent) s.agent = agent;
    const user = str(run.data.user);
    if (user) s.user = user;
    // Undos by tool_use id: the last row for each wins (a retried undo is recorded once per key anyway).
    const undos = new Map<string, UndoRecord>();
    for (const r of list) {
      if (r.kind === 'tool_result') {
        const latencyMs = num(r.data.latencyMs);
        s.toolResults.push({ tool: str(r.data.tool) ?? '?', outcome: str(r.data.outcome) ?? 'unknown', ...(latencyMs !== undefined ? { latencyMs } : {}) });
      } else if (r.kind === 'compensation') {
        const error = str(r.data.error);
        undos.set(str(r.data.toolUseId) ?? r.key, { tool: str(r.data.tool) ?? '?', status: str(r.data.status) ?? 'unknown', ...(error ? { error } : {}) });
      }
    }
    s.undos = [...undos.values()];
    if (end) {
      s.endedAt = end.at;
      const outcome = str(end.data.outcome);
      s.outcome = outcome === 'completed' || outcome === 'cancelled' ? outcome : 'failed';
      const reason = str(end.data.reason);
      if (reason) s.reason = reason;
      const usage = end.data.usage as Record<string, unknown> | undefined;
      const cost = num(usage?.cost_usd);
      if (cost !== undefined) s.costUsd = cost;
      const ms = Date.parse(end.at) - Date.parse(run.at);
      if (Number.isFinite(ms)) s.latencySeconds = Math.max(0, ms) / 1000;
      // Without compensation rows (an older trail), the end's summary ('tool: status') says what happened.
      if (!s.undos.length && Array.isArray(end.data.compensations)) {
        s.undos = (end.data.compensations as unknown[]).filter((c): c is string => typeof c === 'string').map((c) => {
          const i = c.lastIndexOf(': ');
          return i < 0 ? { tool: c, status: 'unknown' } : { tool: c.slice(0, i), status: c.slice(i + 2) };
        });
      }
    }
    sessions.push(s);
  }
  return sessions.sort((a, b) => Date.parse(b.startedAt) - Date.parse(a.startedAt));
}

const UNIT_MS = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/**
 * A report window such as `30m`, `24h` or `7d` (also `90s`), in milliseconds.
 * @throws RangeError naming the value when it is not a whole number > 0 followed by s, m, h or d.
 */
export function parseSince(text: string): number {
  const m = /^(\d+)(s|m|h|d)$/.exec(text.trim());
  if (!m || Number(m[1]) < 1) throw new RangeError(`--since takes a duration such as 30m, 24h or 7d (got '${text}')`);
  return Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS];
}

/**
 * The `p`-th percentile (0 < p <= 100) of `values` by the nearest-rank method: the smallest value with at
 * least p% of the values at or below it, so the result is always one of the values. Undefined when empty.
 */
export function percentile(values: readonly number[], p: number): number | undefined {
  if (!(p > 0 && p <= 100)) throw new RangeError(`percentile: p must be in (0, 100] (got ${p})`);
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.ceil((p / 100) * sorted.length) - 1];
}
