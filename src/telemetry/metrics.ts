/**
 * Keel's Prometheus metrics. They go through Temporal's metric meters, so a worker serves them on the same
 * `/metrics` endpoint as Temporal's own worker metrics (core's Prometheus exporter, `KEEL_METRICS_ADDRESS`):
 *
 * - per tool call attempt, from an activity interceptor (the activity type is the tool's name): calls by
 *   outcome, errors by type, latency;
 * - per model call attempt (`callModel`), from the same interceptor: calls by outcome, latency, tokens, and
 *   the cost of a successful call at the session's price, which the call carries;
 * - from workflow code, replay-safe (the workflow meter records nothing while replaying), when an agent
 *   session ends: its outcome, model calls, cost and duration;
 * - fleet-wide gauges a worker reads every `KEEL_METRICS_INTERVAL`: each tool's breaker state and disabled
 *   switch (from Keel's store, which every worker shares) and the sessions waiting for a person (a visibility
 *   count on `KeelPendingApproval`).
 *
 * Labels are tool names, tiers, phases, outcomes, error types, model names, agent names, and the namespace,
 * task queue and activity or workflow type the SDK adds: never a session id, a user id or an input.
 *
 * Workflow code imports this file, so it must stay sandbox-safe: `@temporalio/common` and type imports only.
 * What the exporter does to names (checked by scraping it): no prefix on these (core's `temporal_` prefix
 * is for its own metrics), no unit suffix, no `_total` added (so counters carry it in their names),
 * histograms as `_bucket{le}` / `_sum` / `_count`, counters of whole numbers only (so dollars are a float
 * histogram, whose `_sum` is the spend), and the SDK's labels in camelCase (`taskQueue`, `activityType`).
 */
import { ApplicationFailure, CancelledFailure, type MetricMeter, type MetricTags } from '@temporalio/common';
import type { Context as ActivityContext } from '@temporalio/activity';
import type { ActivityInterceptorsFactory } from '@temporalio/worker';
import type { KeelStore } from '../store/types.js';
import { costOf, type ModelPrice } from '../workflows/budget.js';

/** One of Keel's metrics: its exported name, what it counts, and the buckets of a histogram. */
export interface MetricDefinition {
  name: string;
  help: string;
  /** A histogram's bucket boundaries (core's default, 50…10 000, suits milliseconds only). */
  buckets?: number[];
}

const SECONDS_SHORT = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

/** Every metric Keel exports, by role. Alert rules (deploy/prometheus/keel-alerts.yml) use these names. */
export const KEEL_METRICS = {
  toolCalls: {
    name: 'keel_tool_calls_total',
    help: 'Tool activity attempts by tool, tier, phase (run, status, compensate) and outcome (ok, error, rejected, unavailable, disabled, cancelled)',
  },
  toolErrors: {
    name: 'keel_tool_errors_total',
    help: 'Failed tool activity attempts by tool, tier, phase and error type (ToolError, ToolUnavailable, Timeout, TypeError, ...)',
  },
  toolDuration: { name: 'keel_tool_duration_seconds', help: 'Tool activity attempt latency in seconds', buckets: SECONDS_SHORT },
  modelCalls: { name: 'keel_model_calls_total', help: 'Model call attempts (callModel) by model and outcome (ok, error, rejected, cancelled)' },
  modelDuration: {
    name: 'keel_model_duration_seconds',
    help: 'Model call attempt latency in seconds',
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120],
  },
  modelTokens: { name: 'keel_model_tokens_total', help: 'Tokens of successful model calls by model and kind (input, output, cache_write, cache_read)' },
  modelCost: {
    name: 'keel_model_cost_usd',
    help: "Cost in USD of each priced model call, from the session's pricing table (the _sum is the spend)",
    buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
  },
  sessions: { name: 'keel_sessions_total', help: 'Agent sessions ended, by agent, model, outcome (completed, failed, cancelled) and stop reason' },
  sessionIterations: {
    name: 'keel_session_iterations',
    help: 'Model calls per ended agent session',
    buckets: [1, 2, 3, 4, 5, 6, 7, 8, 10, 15, 20, 30, 50, 100, 200],
  },
  sessionCost: {
    name: 'keel_session_cost_usd',
    help: 'Cost in USD per ended agent session whose model has a price',
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  },
  sessionDuration: {
    name: 'keel_session_duration_seconds',
    help: 'Wall time per ended agent session in seconds (waits for people and messages included)',
    buckets: [1, 2.5, 5, 10, 15, 30, 60, 120, 300, 900, 3600, 14_400, 86_400],
  },
  breakerState: { name: 'keel_tool_breaker_state', help: "Each tool's circuit breaker as stored for the fleet: 0 closed, 1 half-open, 2 open" },
  toolDisabled: { name: 'keel_tool_disabled', help: 'Whether an operator disabled the tool (keel tools disable): 1 disabled, 0 not' },
  awaitingApproval: { name: 'keel_sessions_awaiting_approval', help: 'Running sessions and chains of this task queue waiting for a person to approve a call' },
} as const satisfies Record<string, MetricDefinition>;

/** Bucket boundaries of Keel's histograms, for the exporter's `histogramBucketOverrides`. */
export function keelHistogramBuckets(): Record<string, number[]> {
  return Object.fromEntries(Object.values(KEEL_METRICS as Record<string, MetricDefinition>).flatMap((m) => (m.buckets ? [[m.name, m.buckets]] : [])));
}

/**
 * How a tool attempt ended. `rejected`: the tool or downstream refused the input (the model's mistake);
 * `unavailable`: refused by the open breaker; `disabled`: refused by an operator's switch.
 */
export type ToolOutcome = 'ok' | 'error' | 'rejected' | 'unavailable' | 'disabled' | 'cancelled';

/** What an activity is, for the interceptor: a tool phase, or the model call. */
type Measured = { kind: 'tool'; tool: string; tier: string; phase: 'run' | 'status' | 'compensate' } | { kind: 'model' };

/**
 * The activity interceptor that measures tool and model calls (every attempt, on the worker that ran it).
 * Other activities (Keel's audit and availability reads) pass through untouched.
 * @param tools - the app's tools, for their tiers; an activity type that is not one of them is not a tool.
 */
export function createMetricsInterceptor(tools: Iterable<{ name: string; policy: { risk: string } }>): ActivityInterceptorsFactory {
  const tiers = new Map([...tools].map((t) => [t.name, t.policy.risk]));
  return (ctx) => {
    const what = measured(ctx.info.activityType, tiers);
    if (!what) return {};
    return {
      inbound: {
        async execute(input, next) {
          const started = performance.now();
          try {
            const result = await next(input);
            record(ctx, what, performance.now() - started, { ok: true, result, arg: input.args[0] });
            return result;
          } catch (err) {
            record(ctx, what, performance.now() - started, { ok: false, err, arg: input.args[0] });
            throw err;
          }
        },
      },
    };
  };
}

function measured(activityType: string, tiers: Map<string, string>): Measured | undefined {
  if (activityType === 'callModel') return { kind: 'model' };
  const dot = activityType.lastIndexOf('.');
  const [tool, suffix] = dot > 0 ? [activityType.slice(0, dot), activityType.slice(dot + 1)] : [activityType, ''];
  const tier = tiers.get(tool);
  if (tier === undefined) return undefined;
  if (suffix === '') return { kind: 'tool', tool, tier, phase: 'run' };
  if (suffix === 'status' || suffix === 'compensate') return { kind: 'tool', tool, tier, phase: suffix };
  return undefined;
}

type Ending = { ok: true; result: unknown; arg: unknown } | { ok: false; err: unknown; arg: unknown };

function record(ctx: ActivityContext, what: Measured, ms: number, end: Ending): void {
  const meter = ctx.metricMeter;
  const failure = end.ok ? undefined : classifyFailure(ctx, end.err);
  if (what.kind === 'tool') {
    const outcome: ToolOutcome = failure?.outcome ?? 'ok';
    const labels = { tool: what.tool, tier: what.tier, phase: what.phase };
    counter(meter, KEEL_METRICS.toolCalls).add(1, { ...labels, outcome });
    histogram(meter, KEEL_METRICS.toolDuration).record(ms / 1000, { ...labels, outcome });
    if (failure && outcome !== 'cancelled' && outcome !== 'disabled') counter(meter, KEEL_METRICS.toolErrors).add(1, { ...labels, error_type: failure.type });
    return;
  }
  const model = modelOf(end.arg);
  const outcome = failure?.outcome ?? 'ok';
  counter(meter, KEEL_METRICS.modelCalls).add(1, { model, outcome });
  histogram(meter, KEEL_METRICS.modelDuration).record(ms / 1000, { model, outcome });
  if (!end.ok) return;
  const usage = (end.result as { usage?: Record<string, unknown> } | undefined)?.usage ?? {};
  const count = (key: string) => {
    const n = usage[key];
    return typeof n === 'number' && Number.isInteger(n) && n > 0 ? n : 0;
  };
  const spent = {
    input_tokens: count('input_tokens'),
    output_tokens: count('output_tokens'),
    cache_creation_input_tokens: count('cache_creation_input_tokens'),
    cache_read_input_tokens: count('cache_read_input_tokens'),
  };
  const tokens = counter(meter, KEEL_METRICS.modelTokens);
  tokens.add(spent.input_tokens, { model, kind: 'input' });
  tokens.add(spent.output_tokens, { model, kind: 'output' });
  tokens.add(spent.cache_creation_input_tokens, { model, kind: 'cache_write' });
  tokens.add(spent.cache_read_input_tokens, { model, kind: 'cache_read' });
  // The session's price for its model travels with the call (agent and session pricing included).
  const price = (end.arg as { price?: ModelPrice } | undefined)?.price;
  if (price) histogram(meter, KEEL_METRICS.modelCost).record(costOf(spent, price), { model });
}

/** Keel's failure types that say the input was refused (the model's mistake), not that the tool failed. */
const REFUSED_INPUT = new Set(['InvalidToolInput', 'ModelRequestRejected']);

/**
 * Sorts a failed attempt: the outcome, and an error type safe as a label (a failure type or an error
 * class name; never a message). Spans use the same words (`keel.tool.outcome`).
 */
export function classifyFailure(ctx: ActivityContext, err: unknown): { outcome: Exclude<ToolOutcome, 'ok'>; type: string } {
  if (err instanceof CancelledFailure || ctx.cancellationSignal.aborted) {
    // A timeout is the call's failure; a cancelled session or a worker shutting down says nothing of the tool.
    return ctx.cancellationDetails?.timedOut ? { outcome: 'error', type: 'Timeout' } : { outcome: 'cancelled', type: 'Cancelled' };
  }
  if (err instanceof ApplicationFailure) {
    const type = labelSafe(err.type ?? '', 'ApplicationFailure');
    if (type === 'ToolUnavailable') {
      // An operator's switch is a decision, not a failure: it must not page as an error rate.
      const reason = (err.details?.[0] as { reason?: unknown } | undefined)?.reason;
      return reason === 'disabled' ? { outcome: 'disabled', type } : { outcome: 'unavailable', type };
    }
    if (REFUSED_INPUT.has(type) || (type === 'ToolError' && err.nonRetryable)) return { outcome: 'rejected', type };
    return { outcome: 'error', type };
  }
  return { outcome: 'error', type: labelSafe(err instanceof Error ? err.name : '', 'Error') };
}

function labelSafe(name: string, otherwise: string): string {
  return /^[A-Z][A-Za-z0-9]{0,47}$/.test(name) ? name : otherwise;
}

function modelOf(arg: unknown): string {
  const model = (arg as { model?: unknown } | undefined)?.model;
  return typeof model === 'string' && model.length > 0 ? model.slice(0, 200) : 'unknown';
}

function counter(meter: MetricMeter, m: MetricDefinition) {
  return meter.createCounter(m.name, undefined, m.help);
}

function histogram(meter: MetricMeter, m: MetricDefinition) {
  return meter.createHistogram(m.name, 'float', undefined, m.help);
}

/** What workflow code reports when an agent session ends. */
export interface SessionEnd {
  agent: string;
  model: string;
  outcome: 'completed' | 'failed' | 'cancelled';
  /** The last turn's stop reason (`end_turn`, `max_iterations`, `budget_usd`, …); `failed`/`cancelled` otherwise. */
  stopReason: string;
  /** Model calls over the whole session (all runs). */
  iterations: number;
  /** The session's model cost; absent when its model has no price (an unknown cost is not a zero one). */
  costUsd?: number;
  durationMs: number;
}

/**
 * Records a session's end on the workflow's meter (`metricMeter` from `@temporalio/workflow`, which records
 * nothing while replaying, so a session is counted once however often it replays).
 */
export function recordSessionEnd(meter: MetricMeter, s: SessionEnd): void {
  const labels: MetricTags = { agent: s.agent, model: s.model, outcome: s.outcome };
  counter(meter, KEEL_METRICS.sessions).add(1, { ...labels, stop_reason: labelSafeReason(s.stopReason) });
  meter.createHistogram(KEEL_METRICS.sessionIterations.name, 'int', undefined, KEEL_METRICS.sessionIterations.help).record(s.iterations, labels);
  if (s.costUsd !== undefined) histogram(meter, KEEL_METRICS.sessionCost).record(Math.max(0, s.costUsd), labels);
  histogram(meter, KEEL_METRICS.sessionDuration).record(Math.max(0, s.durationMs) / 1000, labels);
}

function labelSafeReason(reason: string): string {
  return /^[a-z][a-z_]{0,47}$/i.test(reason) ? reason : 'other';
}

/** Options of `startFleetGauges`. */
export interface FleetGaugeOptions {
  /** The runtime's meter (`Runtime.instance().metricMeter`). */
  meter: MetricMeter;
  /** Keel's store: breakers and disabled tools are fleet-wide there. */
  store: Pick<KeelStore, 'breakers' | 'disabledTools'>;
  /** The app's tool names: each gets a breaker and a disabled gauge (0 when the store has no row). */
  tools: string[];
  /** Temporal's visibility (a client's `workflow`), to count the sessions waiting for approval. */
  visibility: { count(query: string): Promise<{ count: number }> };
  namespace: string;
  taskQueue: string;
  /** Milliseconds between reads (KEEL_METRICS_INTERVAL). */
  intervalMs: number;
  /** Called once when a read starts failing (and again if the reason changes), not on every interval. */
  onError(what: string, err: unknown): void;
}

const BREAKER_VALUE = { closed: 0, half_open: 1, open: 2 } as const;

/**
 * Starts the fleet-wide gauges: reads them now and every `intervalMs` (the timer does not keep the process
 * alive). Every worker reports the same fleet-wide values, so query them with `max`, not `sum`.
 * A gauge is a read of shared state rather than something the guard updates, because a breaker opened by
 * another worker, or re-admitting after its reset window, must show on every worker.
 */
export function startFleetGauges(o: FleetGaugeOptions): { stop(): Promise<void> } {
  const breaker = o.meter.createGauge(KEEL_METRICS.breakerState.name, 'int', undefined, KEEL_METRICS.breakerState.help);
  const disabled = o.meter.createGauge(KEEL_METRICS.toolDisabled.name, 'int', undefined, KEEL_METRICS.toolDisabled.help);
  const awaiting = o.meter.createGauge(KEEL_METRICS.awaitingApproval.name, 'int', undefined, KEEL_METRICS.awaitingApproval.help);
  // Chains and sessions alike raise the flag; TaskQueue keeps each deployment to its own count.
  const query = `KeelPendingApproval = true AND ExecutionStatus = 'Running' AND TaskQueue = '${o.taskQueue}'`;
  const failing = new Map<string, string>();
  const guard = async (what: string, read: () => Promise<void>) => {
    try {
      await read();
      failing.delete(what);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      if (failing.get(what) !== message) o.onError(what, err);
      failing.set(what, message);
    }
  };
  const refresh = () =>
    Promise.all([
      guard('breakers', async () => {
        const [rows, off] = await Promise.all([o.store.breakers(), o.store.disabledTools()]);
        const tools = new Set([...o.tools, ...rows.map((r) => r.tool), ...off.map((d) => d.tool)]);
        for (const tool of tools) {
          breaker.set(BREAKER_VALUE[rows.find((r) => r.tool === tool)?.state ?? 'closed'], { tool });
          disabled.set(off.some((d) => d.tool === tool) ? 1 : 0, { tool });
        }
      }),
      guard('sessions awaiting approval', async () => {
        const { count } = await o.visibility.count(query);
        awaiting.set(count, { namespace: o.namespace, taskQueue: o.taskQueue });
      }),
    ]).then(() => undefined);
  let inFlight: Promise<void> | undefined;
  const tick = () => {
    // A read slower than the interval is not stacked behind: the next tick after it ends reads again.
    inFlight ??= refresh().finally(() => (inFlight = undefined));
  };
  tick();
  const timer = setInterval(tick, o.intervalMs);
  timer.unref();
  return {
    async stop() {
      clearInterval(timer);
      await inFlight;
    },
  };
}
