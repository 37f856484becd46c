/**
 * Tracing, end to end: with OTEL_EXPORTER_OTLP_ENDPOINT pointing at an OTLP/HTTP receiver, one session
 * is one trace: the client's StartWorkflow span, the workflow's RunWorkflow span under it, the model
 * turn's and the tool call's activity spans under that (with Keel's attributes), and the downstream's
 * request carrying a `traceparent` whose parent is the tool's span. The address planted in the prompt
 * reaches no span and no log line. Bad `OTEL_*` settings stop a command at start, naming the variable.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleApp, TRACING_INTERCEPTORS_MARKER } from '../src/app/load.js';
import { ConfigError } from '../src/config.js';
import { createKeelWorker } from '../src/worker.js';
import { tracingSettings } from '../src/telemetry/settings.js';
import { expectUsageError, runKeel, until } from './support/processes.js';
import { startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from './support/otlp-receiver.js';
import { TEST_APP_TOOLS } from './support/paths.js';
import { startTestApp, type TestApp } from './support/test-app.js';

let receiver: OtlpReceiver;
let app: TestApp;
beforeAll(async () => {
  receiver = await startOtlpReceiver();
  // This file's process traces (vitest runs each file in its own process); the worker and client read these.
  process.env.OTEL_EXPORTER_OTLP_ENDPOINT = receiver.url;
  process.env.OTEL_SERVICE_NAME = 'keel-tracing-test';
  app = await startTestApp();
});
afterAll(async () => {
  await app?.close();
  await receiver?.close();
});

const CANARY = 'canary-4f1c9e@example.com';

describe('a session is one trace', () => {
  it('links client → workflow → model and tool calls → the downstream, with Keel attributes and no prompt text', async () => {
    const { env, board } = app;
    const { sessionId, handle } = await env.client.startSession({
      prompt: `Who is on call? My address is ${CANARY}`,
      user: { id: 'teammate-1' },
      agent: 'notes',
      model: 'scripted/wiki-answer',
      idleTimeout: 0,
    });
    const result = await env.withWorker(() => handle.result());
    expect(result.toolCalls).toMatchObject([{ name: 'search_wiki', outcome: 'ok' }]);

    // The client's span names the session; the rest of the trace is found by its trace id.
    const spans = await until(() => {
      const root = receiver.spans.find((s) => s.name === 'StartWorkflow:agentSession' && s.attributes['temporalWorkflowId'] === sessionId);
      const named = (name: string) => receiver.spans.find((s) => s.name === name && s.traceId === root?.traceId);
      const want = [root, ...['RunWorkflow:agentSession', 'RunActivity:callModel', 'RunActivity:search_wiki'].map(named)];
      return want.every(Boolean) ? (want as ReceivedSpan[]) : undefined;
    }, 'the session spans at the receiver', 20_000);
    const [start, run, model, tool] = spans as [ReceivedSpan, ReceivedSpan, ReceivedSpan, ReceivedSpan];
    const trace = start.traceId;
    const inTrace = receiver.spans.filter((s) => s.traceId === trace);
    const byId = new Map(inTrace.map((s) => [s.spanId, s]));
    const parentOf = (s: ReceivedSpan) => (s.parentSpanId ? byId.get(s.parentSpanId) : undefined);

    // One trace, rooted at the client.
    for (const s of spans) expect(s.traceId).toBe(trace);
    expect(start.parentSpanId ?? '').toBe('');
    expect(start.service).toBe('keel-tracing-test');
    expect(parentOf(run)?.spanId).toBe(start.spanId);
    // Each activity span hangs under its StartActivity span, which hangs under the workflow's run.
    for (const [span, type] of [[model, 'callModel'], [tool, 'search_wiki']] as const) {
      const scheduled = parentOf(span);
      expect(scheduled?.name).toBe(`StartActivity:${type}`);
      expect(parentOf(scheduled!)?.spanId).toBe(run.spanId);
    }

    expect(model.attributes).toMatchObject({ 'gen_ai.system': 'anthropic', 'gen_ai.request.model': 'scripted/wiki-answer', 'gen_ai.response.model': 'scripted/wiki-answer' });
    expect(model.attributes['gen_ai.usage.input_tokens']).toBeGreaterThan(0);
    expect(model.attributes['gen_ai.usage.output_tokens']).toBeGreaterThan(0);
    expect(tool.attributes).toMatchObject({
      'keel.tool': 'search_wiki',
      'keel.tool.tier': 'read',
      'keel.tool.phase': 'run',
      'keel.tool.criticality': 'optional',
      'keel.tool.outcome': 'ok',
      'keel.idempotency_key': result.toolCalls[0]!.idempotencyKey,
    });

    // The downstream saw the tool span as its parent, and the trace id as X-Trace-ID.
    const wiki = board.traces.filter((t) => t.path === '/wiki');
    expect(wiki).toHaveLength(1);
    const [, traceId, parentId, flags] = wiki[0]!.traceparent!.split('-');
    expect([traceId, parentId, flags]).toEqual([trace, tool.spanId, '01']);
    expect(wiki[0]!.traceId).toBe(trace);

    // The prompt (and its planted address) is in no span: attributes, status or events.
    expect(JSON.stringify(inTrace.map((s) => s.raw))).not.toContain(CANARY);
    expect(JSON.stringify(inTrace.map((s) => s.raw))).not.toContain('Who is on call');
    // Nor in the worker's log, which does tell of this session.
    const log = readFileSync(env.logFile, 'utf8');
    expect(log).toContain(sessionId);
    expect(log).not.toContain(CANARY);
  });

  it('marks a tool call that failed with its outcome', async () => {
    const { env, board } = app;
    board.wikiDown = true;
    try {
      const { sessionId, handle } = await env.client.startSession({ prompt: 'Who is on call?', user: { id: 'teammate-1' }, agent: 'notes', model: 'scripted/wiki-answer', idleTimeout: 0 });
      const result = await env.withWorker(() => handle.result());
      expect(result.toolCalls).toMatchObject([{ name: 'search_wiki', outcome: 'error' }]);
      const attempts = await until(() => {
        const found = receiver.spans.filter((s) => s.name === 'RunActivity:search_wiki' && s.attributes['temporalWorkflowId'] === sessionId);
        return found.length >= 3 ? found : undefined;
      }, 'three failed attempts at the receiver', 20_000);
      // The read tier's three attempts, each its own span, each failed (a 503 is transient, retried).
      expect(attempts.map((s) => [s.attributes['keel.tool.outcome'], s.attributes['keel.error_type']])).toEqual(Array(3).fill(['error', 'Error']));
    } finally {
      board.wikiDown = false;
    }
  });
});

describe('OTEL_* settings', () => {
  it('stops a command at start on one Keel cannot honour, naming the variable (exit 2)', async () => {
    const r = await runKeel(['status', 'any-session'], { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318', OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc', TEMPORAL_ADDRESS: '127.0.0.1:1' });
    expect(expectUsageError(r)).toMatch(/^keel: OTEL_EXPORTER_OTLP_PROTOCOL: Keel exports traces as http\/json \(got 'grpc'\)/);
  });

  it.each([
    [{ OTEL_TRACES_EXPORTER: 'jaeger' }, /^OTEL_TRACES_EXPORTER: 'jaeger' is not supported/],
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: 'collector:4318' }, /^OTEL_EXPORTER_OTLP_ENDPOINT: expected an http\(s\) URL, got 'collector:4318'/],
  ])('refuses %o', (env, message) => {
    expect(() => tracingSettings(env)).toThrow(ConfigError);
    expect(() => tracingSettings(env)).toThrow(message);
  });

  it('is on with an endpoint or the console exporter, off otherwise or when disabled', () => {
    expect(tracingSettings({})).toBeUndefined();
    expect(tracingSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318/' })).toEqual({ otlpTracesUrl: 'http://c:4318/v1/traces', console: false });
    expect(tracingSettings({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://c:4318/custom', OTEL_SERVICE_NAME: 'desk' })).toEqual({ otlpTracesUrl: 'http://c:4318/custom', console: false, serviceName: 'desk' });
    expect(tracingSettings({ OTEL_TRACES_EXPORTER: 'console' })).toEqual({ console: true });
    expect(tracingSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_SDK_DISABLED: 'true' })).toBeUndefined();
    expect(tracingSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_TRACES_EXPORTER: 'none' })).toBeUndefined();
  });
});

// Last in this file: closing the worker below shuts this process's tracing down.
describe('the workflow bundle and tracing', () => {
  it('holds the tracing interceptors unless built with tracing: false, and a traced worker warns of a bundle without them', async () => {
    const quiet = { log() {}, trace() {}, debug() {}, info() {}, warn() {}, error() {} };
    const [traced, untraced] = await Promise.all([bundleApp(TEST_APP_TOOLS, { logger: quiet }), bundleApp(TEST_APP_TOOLS, { logger: quiet, tracing: false })]);
    expect(traced.code).toContain(TRACING_INTERCEPTORS_MARKER);
    expect(untraced.code).not.toContain(TRACING_INTERCEPTORS_MARKER);

    // The process's Temporal runtime logger is the test env's (the first worker's), so the warning lands in its file.
    const warning = /tracing: this workflow bundle was built without the tracing interceptors/;
    expect(readFileSync(app.env.logFile, 'utf8')).not.toMatch(warning);
    const worker = await createKeelWorker({ tools: TEST_APP_TOOLS, config: app.env.config, workflowBundle: untraced, toolEnv: app.env.env });
    await worker.close();
    expect(readFileSync(app.env.logFile, 'utf8')).toMatch(warning);
  }, 60_000);
});
