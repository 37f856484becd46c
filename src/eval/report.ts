/**
 * The eval report and the baseline rule. `summarize` turns per-case results into the suite's figures;
 * `compareToBaseline` decides what got worse against an earlier report (`keel eval --json`, saved);
 * `renderReport` is the human text. Pure: the runner measures, the CLI reads files and prints.
 *
 * The baseline rule: tool-selection accuracy and answer correctness may not drop at all (they are shares
 * of cases: one case is a real change); steps, tokens and cost, summed over the cases both runs have, may
 * rise by at most the tolerance (10% by default) — summed over common cases so that adding or removing a
 * case is not a regression; p95 latency is reported but gated only when a latency tolerance is given (wall
 * time on a shared machine is noise). A case that passed in the baseline and fails now, or a new case that
 * fails, fails the run; a case that already failed in the baseline is reported and does not.
 */
import { z } from 'zod';
import { percentile } from '../ops/sessions.js';
import type { ToolCallRecord } from '../workflows/types.js';
import { readJsonFile, type ExpectedTools } from './suite.js';

/** One tool call as the report keeps it. */
export interface ToolCallSummary {
  name: string;
  outcome: ToolCallRecord['outcome'];
}

/** One case's session, measured and judged. */
export interface CaseReport {
  name: string;
  sessionId: string;
  agent?: string;
  model?: string;
  /** `completed`: the session returned a result; `failed`: it failed; `timed_out`: no result in time (cancelled). */
  status: 'completed' | 'failed' | 'timed_out';
  stopReason?: string;
  error?: string;
  passed: boolean;
  /** Why it failed, one sentence each (empty when it passed). */
  failures: string[];
  tools: {
    expected: ExpectedTools | null;
    /** Every call, in the order the model issued it, with its outcome. */
    called: ToolCallSummary[];
    /** Null when the case expects no particular tools. */
    match: boolean | null;
  };
  answer: {
    text: string;
    /** Null when the case has no answer checks. */
    correct: boolean | null;
  };
  /** Model calls. */
  steps: number;
  maxSteps?: number;
  /** Input tokens include cache writes and reads, as budgets count them. */
  tokens: { input: number; output: number; total: number };
  /** Model cost in USD (0 for a model without a price). */
  costUsd: number;
  /** Wall time from starting the session to its result, approvals included. */
  latencyMs: number;
  /** Approval requests the suite's approver approved. */
  approvals: string[];
}

/** The suite's figures. Shares are 0–1; a share is null when no case had that kind of expectation. */
export interface OverallFigures {
  cases: number;
  passed: number;
  failed: number;
  passRate: number;
  /** Cases with expected tools, and of those the ones whose calls matched. */
  toolCases: number;
  toolMatched: number;
  toolAccuracy: number | null;
  /** Cases with answer checks, and of those the ones whose answer passed them. */
  answerCases: number;
  answerCorrect: number;
  answerCorrectness: number | null;
  /** Model calls per case. */
  steps: { total: number; mean: number; p95: number };
  tokens: { input: number; output: number; total: number };
  costUsd: number;
  /** Per-case wall time, nearest-rank percentiles. */
  latencyMs: { p50: number; p95: number };
}

/** What `keel eval --json` prints (and what a baseline file holds). */
export interface EvalReport {
  suite: string;
  file: string;
  /** The `--model` every case ran with, when one was given. */
  model?: string;
  startedAt: string;
  durationMs: number;
  concurrency: number;
  taskQueue: string;
  cases: CaseReport[];
  overall: OverallFigures;
  comparison?: Comparison;
  /** Whether the run passes: every case passed, or (with a baseline) nothing got worse. */
  passed?: boolean;
}

/** Money to 8 decimals, so sums of per-token prices print as they were meant. */
const usd = (n: number) => Number(n.toFixed(8));

/** The suite's figures from its cases. */
export function summarize(cases: readonly CaseReport[]): OverallFigures {
  const n = cases.length;
  const passed = cases.filter((c) => c.passed).length;
  const toolCases = cases.filter((c) => c.tools.match !== null);
  const answerCases = cases.filter((c) => c.answer.correct !== null);
  const toolMatched = toolCases.filter((c) => c.tools.match).length;
  const answerCorrect = answerCases.filter((c) => c.answer.correct).length;
  const steps = cases.map((c) => c.steps);
  const latency = cases.map((c) => c.latencyMs);
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  return {
    cases: n,
    passed,
    failed: n - passed,
    passRate: n ? passed / n : 0,
    toolCases: toolCases.length,
    toolMatched,
    toolAccuracy: toolCases.length ? toolMatched / toolCases.length : null,
    answerCases: answerCases.length,
    answerCorrect,
    answerCorrectness: answerCases.length ? answerCorrect / answerCases.length : null,
    steps: { total: sum(steps), mean: n ? Number((sum(steps) / n).toFixed(3)) : 0, p95: percentile(steps, 95) ?? 0 },
    tokens: { input: sum(cases.map((c) => c.tokens.input)), output: sum(cases.map((c) => c.tokens.output)), total: sum(cases.map((c) => c.tokens.total)) },
    costUsd: usd(sum(cases.map((c) => c.costUsd))),
    latencyMs: { p50: percentile(latency, 50) ?? 0, p95: percentile(latency, 95) ?? 0 },
  };
}

/** The part of a saved report that a comparison reads; anything else in the file is ignored. */
export const BaselineSchema = z.object({
  suite: z.string(),
  cases: z.array(
    z.object({
      name: z.string(),
      passed: z.boolean(),
      steps: z.number(),
      tokens: z.object({ total: z.number() }),
      costUsd: z.number(),
      latencyMs: z.number(),
    }),
  ),
  overall: z.object({
    toolAccuracy: z.number().nullable(),
    answerCorrectness: z.number().nullable(),
    latencyMs: z.object({ p95: z.number() }),
  }),
});
/** A baseline: an earlier report. */
export type Baseline = z.infer<typeof BaselineSchema>;

/** The baseline file could not be read or is not a report; the message is one line naming the file. */
export class BaselineError extends Error {
  override readonly name = 'BaselineError';
}

/** Reads a baseline (a saved `keel eval --json` report) of suite `suite`. @throws BaselineError naming the file. */
export async function loadBaseline(file: string, suite: string): Promise<Baseline> {
  const raw = await readJsonFile(file, (why) => new BaselineError(`baseline ${file}: ${why}`), `; save one with keel eval <suite> --json > ${file}`);
  const parsed = BaselineSchema.safeParse(raw);
  if (!parsed.success) {
    const first = parsed.error.issues[0]!;
    throw new BaselineError(`baseline ${file}: not a keel eval --json report (${first.path.map(String).join('.') || '(top level)'}: ${first.message})`);
  }
  if (parsed.data.suite !== suite) throw new BaselineError(`baseline ${file}: a report of suite '${parsed.data.suite}', not '${suite}'`);
  return parsed.data;
}

/** How much worse a figure may get. */
export interface Tolerances {
  /** Steps, tokens and cost may rise by this share of the baseline (0.1). */
  resources: number;
  /** p95 latency may rise by this share; undefined: latency is not gated (the default). */
  latency?: number;
}

/** The default tolerances: 10% for steps, tokens and cost; latency not gated. */
export const DEFAULT_TOLERANCES: Tolerances = { resources: 0.1 };

/** One figure against the baseline. */
export interface MetricComparison {
  metric: 'tool_accuracy' | 'answer_correctness' | 'steps' | 'tokens' | 'cost_usd' | 'latency_p95_ms';
  baseline: number | null;
  current: number | null;
  /** The worst value that still passes (null when not gated or not comparable). */
  limit: number | null;
  gated: boolean;
  regressed: boolean;
}

/** What got worse, and what did not. */
export interface Comparison {
  baseline: string;
  tolerance: { resourcesPercent: number; latencyPercent: number | null };
  /** Cases both runs have: steps, tokens and cost are summed over these. */
  commonCases: number;
  metrics: MetricComparison[];
  /** One sentence per regression: each metric that got worse, each case that fails now and did not. */
  regressions: string[];
  /** Passed in the baseline, fail now. */
  newlyFailing: string[];
  /** Not in the baseline, fail now. */
  newFailing: string[];
  /** Failed in the baseline too (not a regression). */
  stillFailing: string[];
  /** Failed in the baseline, pass now. */
  fixed: string[];
  /** In the baseline, not in this run. */
  missing: string[];
  passed: boolean;
}

/** A share as a percentage: whole numbers as they are (75%), others to one decimal (33.3%). */
const pct = (share: number | null) => {
  if (share === null) return '-';
  const v = Number((share * 100).toFixed(1));
  return `${Number.isInteger(v) ? v : v.toFixed(1)}%`;
};
const EPS = 1e-9;

/** Compares a report with a baseline under the rule in the file header. */
export function compareToBaseline(report: Pick<EvalReport, 'cases' | 'overall'>, baseline: Baseline, file: string, tol: Tolerances = DEFAULT_TOLERANCES): Comparison {
  const before = new Map(baseline.cases.map((c) => [c.name, c]));
  const now = new Map(report.cases.map((c) => [c.name, c]));
  const common = report.cases.filter((c) => before.has(c.name));
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  const metrics: MetricComparison[] = [];

  const share = (metric: 'tool_accuracy' | 'answer_correctness', b: number | null, c: number | null) => {
    const comparable = b !== null && c !== null;
    metrics.push({ metric, baseline: b, current: c, limit: b, gated: true, regressed: comparable && c < b - EPS });
  };
  share('tool_accuracy', baseline.overall.toolAccuracy, report.overall.toolAccuracy);
  share('answer_correctness', baseline.overall.answerCorrectness, report.overall.answerCorrectness);

  const rising = (metric: 'steps' | 'tokens' | 'cost_usd' | 'latency_p95_ms', b: number, c: number, tolerance: number | undefined) => {
    const limit = tolerance === undefined ? null : metric === 'cost_usd' ? usd(b * (1 + tolerance)) : b * (1 + tolerance);
    metrics.push({ metric, baseline: b, current: c, limit, gated: limit !== null, regressed: limit !== null && c > limit + EPS });
  };
  rising('steps', sum(common.map((c) => before.get(c.name)!.steps)), sum(common.map((c) => c.steps)), tol.resources);
  rising('tokens', sum(common.map((c) => before.get(c.name)!.tokens.total)), sum(common.map((c) => c.tokens.total)), tol.resources);
  rising('cost_usd', usd(sum(common.map((c) => before.get(c.name)!.costUsd))), usd(sum(common.map((c) => c.costUsd))), tol.resources);
  rising('latency_p95_ms', baseline.overall.latencyMs.p95, report.overall.latencyMs.p95, tol.latency);

  const newlyFailing = common.filter((c) => !c.passed && before.get(c.name)!.passed).map((c) => c.name);
  const newFailing = report.cases.filter((c) => !c.passed && !before.has(c.name)).map((c) => c.name);
  const stillFailing = common.filter((c) => !c.passed && !before.get(c.name)!.passed).map((c) => c.name);
  const fixed = common.filter((c) => c.passed && !before.get(c.name)!.passed).map((c) => c.name);
  const missing = baseline.cases.filter((c) => !now.has(c.name)).map((c) => c.name);

  const regressions = [
    ...metrics.filter((m) => m.regressed).map(describeRegression),
    ...newlyFailing.map((name) => `case '${name}' passed in the baseline and fails now: ${now.get(name)!.failures.join('; ')}`),
    ...newFailing.map((name) => `case '${name}' (not in the baseline) fails: ${now.get(name)!.failures.join('; ')}`),
  ];
  return {
    baseline: file,
    tolerance: { resourcesPercent: tol.resources * 100, latencyPercent: tol.latency === undefined ? null : tol.latency * 100 },
    commonCases: common.length,
    metrics,
    regressions,
    newlyFailing,
    newFailing,
    stillFailing,
    fixed,
    missing,
    passed: regressions.length === 0,
  };
}

const METRIC_LABEL: Record<MetricComparison['metric'], string> = {
  tool_accuracy: 'tool-selection accuracy',
  answer_correctness: 'answer correctness',
  steps: 'steps',
  tokens: 'tokens',
  cost_usd: 'cost',
  latency_p95_ms: 'p95 latency',
};

/** A figure as text, in its metric's unit. */
function figure(metric: MetricComparison['metric'], v: number | null): string {
  if (v === null) return '-';
  if (metric === 'tool_accuracy' || metric === 'answer_correctness') return pct(v);
  if (metric === 'cost_usd') return `$${v.toFixed(4)}`;
  if (metric === 'latency_p95_ms') return `${(v / 1000).toFixed(2)} s`;
  return String(Number(v.toFixed(2)));
}

function describeRegression(m: MetricComparison): string {
  if (m.metric === 'tool_accuracy' || m.metric === 'answer_correctness') {
    return `${m.metric} (${METRIC_LABEL[m.metric]}) dropped to ${figure(m.metric, m.current)} from ${figure(m.metric, m.baseline)}`;
  }
  const change = m.baseline ? ` (+${(((m.current ?? 0) / m.baseline - 1) * 100).toFixed(1)}%)` : '';
  return `${m.metric} (${METRIC_LABEL[m.metric]}) rose to ${figure(m.metric, m.current)} from ${figure(m.metric, m.baseline)}${change}, above the limit ${figure(m.metric, m.limit)}`;
}

/** Lines of text as columns, each as wide as its widest cell. */
function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  return [header, ...rows].map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n');
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
const judged = (v: boolean | null) => (v === null ? '-' : v ? 'ok' : 'WRONG');

/** The report as text: a table of cases, the overall figures, the failures, and the comparison. */
export function renderReport(r: EvalReport): string {
  const o = r.overall;
  const lines = [
    `suite ${r.suite} (${r.file}): ${o.cases} case(s) on task queue ${r.taskQueue}, ${r.concurrency} at a time${r.model ? `, model ${r.model} for every case` : ''}`,
    '',
    table(
      ['CASE', 'RESULT', 'TOOLS', 'ANSWER', 'STEPS', 'TOKENS', 'COST', 'LATENCY'],
      r.cases.map((c) => [
        c.name,
        c.passed ? 'PASS' : c.status === 'completed' ? 'FAIL' : c.status.toUpperCase().replace('_', ' '),
        judged(c.tools.match),
        judged(c.answer.correct),
        String(c.steps),
        String(c.tokens.total),
        `$${c.costUsd.toFixed(4)}`,
        seconds(c.latencyMs),
      ]),
    ),
    '',
    `passed ${o.passed}/${o.cases} (${pct(o.passRate)}) · tool-selection accuracy ${o.toolMatched}/${o.toolCases} (${pct(o.toolAccuracy)}) · answer correctness ${o.answerCorrect}/${o.answerCases} (${pct(o.answerCorrectness)})`,
    `steps mean ${Number(o.steps.mean.toFixed(2))}, p95 ${o.steps.p95} · tokens ${o.tokens.total} (${o.tokens.input} in / ${o.tokens.output} out) · cost $${o.costUsd.toFixed(4)} · latency p50 ${seconds(o.latencyMs.p50)}, p95 ${seconds(o.latencyMs.p95)}`,
  ];
  const failed = r.cases.filter((c) => !c.passed);
  if (failed.length) lines.push('', 'failures:', ...failed.map((c) => `  ${c.name} (session ${c.sessionId}): ${c.failures.join('; ')}`));
  const cmp = r.comparison;
  if (cmp) {
    const latency = cmp.tolerance.latencyPercent === null ? 'p95 latency is reported, not gated' : `p95 latency may rise ${cmp.tolerance.latencyPercent}%`;
    lines.push(
      '',
      `against baseline ${cmp.baseline} (${cmp.commonCases} case(s) in common; accuracy and correctness may not drop; steps, tokens and cost, summed over the common cases, may rise ${cmp.tolerance.resourcesPercent}%; ${latency}):`,
      table(
        ['METRIC', 'BASELINE', 'NOW', 'LIMIT', 'STATUS'],
        cmp.metrics.map((m) => [
          m.metric,
          figure(m.metric, m.baseline),
          figure(m.metric, m.current),
          m.gated && m.limit !== null ? `${m.metric === 'tool_accuracy' || m.metric === 'answer_correctness' ? '>=' : '<='} ${figure(m.metric, m.limit)}` : 'not gated',
          m.regressed ? 'WORSE' : 'ok',
        ]),
      ),
    );
    if (cmp.stillFailing.length) lines.push(`failing in the baseline too (not a regression): ${cmp.stillFailing.join(', ')}`);
    if (cmp.fixed.length) lines.push(`fixed since the baseline: ${cmp.fixed.join(', ')}`);
    if (cmp.missing.length) lines.push(`in the baseline but not run: ${cmp.missing.join(', ')}`);
    lines.push('', ...(cmp.regressions.length ? cmp.regressions.map((x) => `REGRESSION: ${x}`) : ['no regression against the baseline']));
  }
  return lines.join('\n');
}
