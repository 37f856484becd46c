/**
 * The SLO report (`keel slo`): session completion rate, availability per tool, p95 session latency and p95
 * cost per session, each against the service level objectives of the observability seed, computed from the
 * audit trail's session summaries. Pure: the CLI reads the rows and prints; this decides the numbers.
 */
import { percentile, type SessionSummary } from './sessions.js';

/** The seed's objectives. */
export const SLO_TARGETS = {
  /** Share of ended sessions that completed (failed and cancelled ones count against it). */
  completionRate: 0.95,
  /** Share of each tool's results that were `ok`, leaving out `rejected` ones (the model's mistakes). */
  toolAvailability: 0.995,
  /** p95 of run → run_end, in seconds. */
  p95LatencySeconds: 15,
  /** p95 of `run_end.usage.cost_usd`, in US dollars. */
  p95CostUsd: 0.1,
} as const;

/** One objective, measured. `met` is null when there was nothing to measure. */
export interface SloLine {
  objective: 'completion_rate' | 'tool_availability' | 'p95_latency_seconds' | 'p95_cost_usd';
  /** The tool, on availability lines. */
  tool?: string;
  /** `>=` for rates (higher is better), `<=` for latency and cost. */
  comparison: '>=' | '<=';
  target: number;
  actual: number | null;
  met: boolean | null;
  /** The good events (completed sessions, ok results); rates only. */
  good?: number;
  /** What the figure is over: ended sessions, or a tool's results without the rejected ones. */
  total: number;
  /** Availability lines: results left out because the model's call was rejected (bad input, refused). */
  rejected?: number;
}

/** What `keel slo` reports. */
export interface SloReport {
  /** Start of the window (ISO 8601): sessions whose `run` row is at or after it. */
  since: string;
  sessions: {
    /** Sessions started in the window. */
    started: number;
    /** Of those, the ones with a `run_end` row. */
    ended: number;
    completed: number;
    failed: number;
    cancelled: number;
    /** No `run_end` yet: left out of completion, latency and cost. */
    running: number;
  };
  lines: SloLine[];
}

const ratio = (good: number, total: number): number | null => (total === 0 ? null : good / total);
const judge = (actual: number | null | undefined, cmp: '>=' | '<=', target: number): boolean | null =>
  actual === null || actual === undefined ? null : cmp === '>=' ? actual >= target : actual <= target;

/**
 * Measures `sessions` (already limited to the window) against `SLO_TARGETS`. Lines come in a fixed order:
 * completion rate, one availability line per tool (by name), p95 latency, p95 cost.
 */
export function sloReport(sessions: readonly SessionSummary[], since: Date): SloReport {
  const ended = sessions.filter((s) => s.outcome !== undefined);
  const count = (o: string) => ended.filter((s) => s.outcome === o).length;
  const completed = count('completed');
  const lines: SloLine[] = [];

  const completion = ratio(completed, ended.length);
  lines.push({ objective: 'completion_rate', comparison: '>=', target: SLO_TARGETS.completionRate, actual: completion, met: judge(completion, '>=', SLO_TARGETS.completionRate), good: completed, total: ended.length });

  // Every tool result counts, running sessions' too: availability is the downstream's, not the session's.
  const perTool = new Map<string, { ok: number; total: number; rejected: number }>();
  for (const s of sessions) {
    for (const r of s.toolResults) {
      const t = perTool.get(r.tool) ?? { ok: 0, total: 0, rejected: 0 };
      if (r.outcome === 'rejected') t.rejected++;
      else {
        t.total++;
        if (r.outcome === 'ok') t.ok++;
      }
      perTool.set(r.tool, t);
    }
  }
  for (const tool of [...perTool.keys()].sort()) {
    const t = perTool.get(tool)!;
    const availability = ratio(t.ok, t.total);
    lines.push({
      objective: 'tool_availability',
      tool,
      comparison: '>=',
      target: SLO_TARGETS.toolAvailability,
      actual: availability,
      met: judge(availability, '>=', SLO_TARGETS.toolAvailability),
      good: t.ok,
      total: t.total,
      rejected: t.rejected,
    });
  }

  const latencies = ended.flatMap((s) => (s.latencySeconds === undefined ? [] : [s.latencySeconds]));
  const p95Latency = percentile(latencies, 95) ?? null;
  lines.push({ objective: 'p95_latency_seconds', comparison: '<=', target: SLO_TARGETS.p95LatencySeconds, actual: p95Latency, met: judge(p95Latency, '<=', SLO_TARGETS.p95LatencySeconds), total: latencies.length });

  const costs = ended.flatMap((s) => (s.costUsd === undefined ? [] : [s.costUsd]));
  const p95Cost = percentile(costs, 95) ?? null;
  lines.push({ objective: 'p95_cost_usd', comparison: '<=', target: SLO_TARGETS.p95CostUsd, actual: p95Cost, met: judge(p95Cost, '<=', SLO_TARGETS.p95CostUsd), total: costs.length });

  return {
    since: since.toISOString(),
    sessions: { started: sessions.length, ended: ended.length, completed, failed: count('failed'), cancelled: count('cancelled'), running: sessions.length - ended.length },
    lines,
  };
}

const pct = (v: number) => `${(Math.round(v * 10_000) / 100).toString()}%`;

/** A figure as the table shows it: rates in %, latency in seconds, cost in dollars. */
function figure(line: SloLine, v: number | null): string {
  if (v === null) return '-';
  if (line.objective === 'p95_latency_seconds') return `${v.toFixed(1)} s`;
  if (line.objective === 'p95_cost_usd') return `$${v.toFixed(4)}`;
  return pct(v);
}

/** The report as rows of text cells: objective, target, actual, basis, status (MET / MISSED / NO DATA). */
export function sloRows(report: SloReport): string[][] {
  return report.lines.map((l) => {
    const name = {
      completion_rate: 'session completion rate',
      tool_availability: `availability of ${l.tool}`,
      p95_latency_seconds: 'p95 session latency',
      p95_cost_usd: 'p95 cost per session',
    }[l.objective];
    const basis =
      l.objective === 'completion_rate'
        ? `${l.good} of ${l.total} ended sessions`
        : l.objective === 'tool_availability'
          ? `${l.good} of ${l.total} results${l.rejected ? ` (+${l.rejected} rejected, left out)` : ''}`
          : `${l.total} ended session(s)`;
    const target = l.objective === 'p95_latency_seconds' ? `${l.target} s` : l.objective === 'p95_cost_usd' ? `$${l.target.toFixed(2)}` : pct(l.target);
    return [name, `${l.comparison} ${target}`, figure(l, l.actual), basis, l.met === null ? 'NO DATA' : l.met ? 'MET' : 'MISSED'];
  });
}
