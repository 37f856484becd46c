/**
 * OpenTelemetry tracing, configured by the standard `OTEL_*` variables and exported with OTLP over
 * HTTP (JSON). One trace follows a session: the client's `StartWorkflow:agentSession` span, the
 * workflow's `RunWorkflow` span, each `StartActivity`/`RunActivity` pair for model turns and tool
 * calls (Temporal's interceptors make these), with Keel's attributes on the activity spans (model,
 * tokens and cost; tool, tier, outcome, idempotency key), and the W3C `traceparent` handed to tools
 * for their downstream calls (`ctx.traceHeaders`).
 *
 * When tracing is on is `tracingSettings`'s business. Spans carry names, counts and keys, never
 * prompts, tool arguments or results.
 */
import { context, propagation, trace, type Span, type Tracer } from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { Resource, detectResourcesSync, envDetectorSync } from '@opentelemetry/resources';
import { BatchSpanProcessor, ConsoleSpanExporter, NoopSpanProcessor, type SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import type { Context as ActivityContext } from '@temporalio/activity';
import {
  OpenTelemetryActivityInboundInterceptor,
  OpenTelemetryActivityOutboundInterceptor,
  OpenTelemetryWorkflowClientInterceptor,
  makeWorkflowExporter,
  type OpenTelemetrySinks,
} from '@temporalio/interceptors-opentelemetry';
import type { ActivityInterceptorsFactory, InjectedSinks } from '@temporalio/worker';
import { ConfigError } from '../config.js';
import { classifyFailure } from './metrics.js';
import { tracingSettings } from './settings.js';
import type { Tool } from '../tools/index.js';
import { costOf } from '../workflows/budget.js';
import { type CallModelInput, type CallModelOutput, type ToolActivityInput } from '../workflows/types.js';

type Env = Readonly<Record<string, string | undefined>>;

/** A process's tracing: where spans go, and the tracer Keel's interceptors use. */
export interface KeelTracing {
  tracer: Tracer;
  spanProcessor: SpanProcessor;
  resource: Resource;
  /** Exports what is buffered and stops; call before the process exits. */
  shutdown(): Promise<void>;
}

let current: { key: string; tracing: KeelTracing } | undefined;

/**
 * The process's tracing from the `OTEL_*` variables, or undefined when they leave it off. Set up once
 * per process (the provider is registered globally, so context flows through async calls); a later
 * call with other settings is refused rather than silently ignored (a process running both a worker and
 * a client names itself after whichever set tracing up first).
 * @throws ConfigError naming the variable when a setting is one Keel cannot honour.
 */
export function tracingFromEnv(env: Env = process.env, defaultServiceName = 'keel'): KeelTracing | undefined {
  const settings = tracingSettings(env);
  if (!settings) return undefined;
  const key = JSON.stringify(settings);
  if (current) {
    if (current.key !== key) throw new ConfigError('OTEL_*: tracing is already set up in this process with other settings');
    return current.tracing;
  }
  const resource = Resource.default()
    .merge(new Resource({ 'service.name': defaultServiceName }))
    .merge(detectResourcesSync({ detectors: [envDetectorSync] }));
  const processors: SpanProcessor[] = [];
  if (settings.otlpTracesUrl) processors.push(new BatchSpanProcessor(new OTLPTraceExporter({ url: settings.otlpTracesUrl }), { scheduledDelayMillis: 500 }));
  if (settings.console) processors.push(new BatchSpanProcessor(new ConsoleSpanExporter()));
  const provider = new NodeTracerProvider({ resource, spanProcessors: processors });
  provider.register();
  const tracing: KeelTracing = {
    tracer: provider.getTracer('keel'),
    // Workflow spans come out of the sandbox through a sink; they go where activity spans go.
    spanProcessor: processors.length === 1 ? processors[0]! : fanOut(processors),
    resource,
    shutdown: () => provider.forceFlush(),
  };
  current = { key, tracing };
  return tracing;
}

/**
 * What a worker adds for tracing: Temporal's activity interceptors, Keel's attributes inside them,
 * and the sink that exports the workflow's spans. Without tracing the sink still exists (the workflow
 * bundle always carries the tracing interceptors) and drops what it is given.
 */
export function workerTracing(
  tracing: KeelTracing | undefined,
  tools: ReadonlyMap<string, Tool>,
): { activity: ActivityInterceptorsFactory[]; sinks: InjectedSinks<OpenTelemetrySinks> } {
  const sinks = { exporter: makeWorkflowExporter(tracing?.spanProcessor ?? new NoopSpanProcessor(), tracing?.resource ?? Resource.empty()) };
  if (!tracing) return { activity: [], sinks };
  const options = { tracer: tracing.tracer };
  return {
    activity: [
      (ctx) => ({ inbound: new OpenTelemetryActivityInboundInterceptor(ctx, options), outbound: new OpenTelemetryActivityOutboundInterceptor(ctx) }),
      (ctx) => ({ inbound: { execute: (input, next) => withKeelAttributes(ctx, tools, input.args[0], () => next(input)) } }),
    ],
    sinks,
  };
}

/** The client interceptor that starts a session's trace (and carries it into the workflow's headers). */
export function clientTracing(tracing: KeelTracing | undefined): OpenTelemetryWorkflowClientInterceptor[] {
  return tracing ? [new OpenTelemetryWorkflowClientInterceptor({ tracer: tracing.tracer })] : [];
}

/**
 * Headers that carry the current trace to a downstream: W3C `traceparent` (and `tracestate`), and
 * `X-Trace-ID` for services that log a plain id. Empty when no trace is active.
 */
export function traceHeaders(): Record<string, string> {
  const carrier: Record<string, string> = {};
  propagation.inject(context.active(), carrier);
  const traceId = trace.getActiveSpan()?.spanContext().traceId;
  if (carrier.traceparent && traceId) carrier['X-Trace-ID'] = traceId;
  return carrier;
}

/** Sets Keel's attributes on the activity's span: what was called, and how it came out. */
async function withKeelAttributes<T>(ctx: ActivityContext, tools: ReadonlyMap<string, Tool>, arg: unknown, run: () => Promise<T>): Promise<T> {
  const span = trace.getActiveSpan();
  if (!span) return run();
  const type = ctx.info.activityType;
  if (type === 'callModel') return modelSpan(span, arg as CallModelInput, run as () => Promise<CallModelOutput>) as Promise<T>;
  const [name, phase = 'run'] = type.split('.');
  const tool = tools.get(name!);
  if (!tool) return run();
  const req = arg as ToolActivityInput;
  span.setAttributes({
    'keel.tool': tool.name,
    'keel.tool.tier': tool.risk,
    'keel.tool.phase': phase,
    'keel.tool.criticality': tool.criticality,
    'keel.idempotency_key': req.idempotencyKey,
    'keel.tool_use_id': req.toolUseId,
  });
  try {
    const out = await run();
    const applied = phase === 'status' ? (out as { applied?: boolean }).applied : undefined;
    span.setAttribute('keel.tool.outcome', applied === false ? 'not_applied' : 'ok');
    return out;
  } catch (err) {
    const failure = classifyFailure(ctx, err);
    span.setAttributes({ 'keel.tool.outcome': failure.outcome, 'keel.error_type': failure.type });
    throw err;
  }
}

async function modelSpan(span: Span, input: CallModelInput, run: () => Promise<CallModelOutput>): Promise<CallModelOutput> {
  span.setAttributes({ 'gen_ai.system': 'anthropic', 'gen_ai.operation.name': 'chat', 'gen_ai.request.model': input.model, 'gen_ai.request.max_tokens': input.maxTokens });
  const out = await run();
  const u = out.usage;
  span.setAttributes({
    'gen_ai.response.model': out.model,
    'gen_ai.response.finish_reasons': [out.stopReason],
    'gen_ai.usage.input_tokens': u.input_tokens,
    'gen_ai.usage.output_tokens': u.output_tokens,
    'keel.usage.cache_read_input_tokens': u.cache_read_input_tokens,
    'keel.usage.cache_creation_input_tokens': u.cache_creation_input_tokens,
    ...(input.price ? { 'keel.cost_usd': costOf(u, input.price) } : {}),
  });
  return out;
}

/** Several processors as one (workflow spans reach every exporter). */
function fanOut(processors: SpanProcessor[]): SpanProcessor {
  return {
    onStart: (span, ctx) => processors.forEach((p) => p.onStart(span, ctx)),
    onEnd: (span) => processors.forEach((p) => p.onEnd(span)),
    forceFlush: async () => void (await Promise.all(processors.map((p) => p.forceFlush()))),
    shutdown: async () => void (await Promise.all(processors.map((p) => p.shutdown()))),
  };
}
