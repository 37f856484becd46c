/**
 * Tool activities: one per registered tool, registered under the tool's name so the Temporal Web UI
 * reads like the conversation. Each validates its input again (the workflow already did; this is the
 * server-side check), hands the tool its idempotency key, abort signal, logger and guarded `fetch`, maps `ToolError` to
 * a non-retryable `ToolError` failure the model will read, caps the result at the tool's `maxResultBytes`,
 * keeps a large result in the conversation store (history then holds a preview and its hash), and writes exactly
 * one structured log line per attempt: tool, session, success, duration_ms, result_bytes, arg_keys.
 * Status checks (`<tool>.status`) and undos (`<tool>.compensate`) run the same way. The call itself (not
 * its status check or undo) is visible to the session's watchers: `tool_started` and `tool_finished` on the
 * worker's stream bus, and what the tool reports with `ctx.progress` (names and outcomes only: a tool's
 * input and output never go on the bus).
 */
import { ApplicationFailure, Context, log } from '@temporalio/activity';
import type { KeelStore } from '../store/index.js';
import type { StreamBus } from '../stream/types.js';
import { guardedFetch } from './fetch.js';
import { guarded } from './resilience.js';
import { streamPublisher } from './stream.js';
import { traceHeaders } from '../telemetry/tracing.js';
import { redactText } from '../workflows/redact.js';
import { ToolError, type Tool, type ToolContext, type ToolLogger } from '../tools/index.js';
import { FailureTypes, type StatusCheckOutput, type ToolActivityInput, type ToolActivityOutput, describeIssues } from '../workflows/types.js';

/** Results whose model-facing text is larger than this (bytes) are kept in the store, not in history. */
export const INLINE_RESULT_BYTES = 8 * 1024;
/** How much of a stored result history keeps as its preview (bytes). */
const PREVIEW_BYTES = 1024;

/** What a tool activity does: the call itself, its status check, or its undo. */
type Phase = 'run' | 'status' | 'compensate';
type Env = Readonly<Record<string, string | undefined>>;
/** What every tool activity of a worker shares: the environment tools see, and the stream bus. */
type Shared = { env: Env; stream: StreamBus | undefined };
/** Longest `ctx.progress` message published, in characters; longer ones are cut with an ellipsis. */
const PROGRESS_CHARS = 500;

/**
 * Creates the activity functions for a set of tools: `<name>` for each tool, `<name>.status` for each
 * status check and `<name>.compensate` for each undo. With `stream`, tool calls and their progress are
 * published on it.
 */
export function createToolActivities(
  tools: Iterable<Tool>,
  opts: { store: KeelStore; env?: Env; stream?: StreamBus },
): Record<string, (req: ToolActivityInput) => Promise<ToolActivityOutput | StatusCheckOutput>> {
  const shared: Shared = { env: opts.env ?? process.env, stream: opts.stream };
  const activities: Record<string, (req: ToolActivityInput) => Promise<ToolActivityOutput | StatusCheckOutput>> = {};
  for (const tool of tools) {
    const toOutput = (result: unknown, req: ToolActivityInput) => outputOf(result, tool.policy.maxResultBytes, opts.store, req.wantValue, tool.redactOutput);
    // The call itself goes through the fleet-wide guard (disabled switch, breaker, rate limit); its
    // status check and undo do not: they must reach the downstream whatever the breaker says.
    activities[tool.name] = (req) =>
      invoke(tool, req, shared, 'run', async (input, ctx) => toOutput(await guarded(opts.store, tool, () => tool.run(input, ctx)), req), outputBytes);
    const { statusCheck, compensate } = tool;
    if (statusCheck) {
      activities[`${tool.name}.status`] = (req) =>
        invoke(
          tool,
          req,
          shared,
          'status',
          async (input, ctx): Promise<StatusCheckOutput> => {
            const r = await statusCheck(input, ctx);
            return r.applied ? { applied: true, ...(await toOutput(r.result, req)) } : { applied: false };
          },
          (out) => (out.applied ? out.bytes : 0),
        );
    }
    if (compensate) {
      activities[`${tool.name}.compensate`] = (req) =>
        invoke(tool, req, shared, 'compensate', async (input, ctx) => toOutput(await compensate(input, ctx), { ...req, wantValue: false }), outputBytes);
    }
  }
  return activities;
}

const outputBytes = (out: ToolActivityOutput): number => out.bytes;

/**
 * The result as JSON text for the model, cut at `maxBytes` with a note. A text over INLINE_RESULT_BYTES
 * goes to the store and history keeps a preview and its hash; `wantValue` adds the whole result.
 */
async function outputOf(result: unknown, maxBytes: number, store: KeelStore, wantValue?: boolean, redactOutput?: boolean): Promise<ToolActivityOutput> {
  // What the model is shown; a chain's value (wantValue) stays whole.
  const json = redactOutput ? redactText(JSON.stringify(result ?? null)) : JSON.stringify(result ?? null);
  const bytes = Buffer.byteLength(json);
  const truncated = bytes > maxBytes;
  const text = truncated ? `${cutBytes(json, maxBytes)}\n[result truncated: ${bytes} bytes, the first ${maxBytes} shown]` : json;
  const value = wantValue ? { value: result ?? null } : {};
  if (Buffer.byteLength(text) <= INLINE_RESULT_BYTES) return { content: text, bytes, truncated, ...value };
  const blob = await store.putBlob(text);
  const preview = `${cutBytes(text, PREVIEW_BYTES)}… [${Buffer.byteLength(text)} bytes in the conversation store, blob ${blob.slice(0, 12)}]`;
  return { content: preview, bytes, truncated, blob, ...value };
}

function cutBytes(text: string, max: number): string {
  return Buffer.from(text).subarray(0, max).toString('utf8').replace(/\uFFFD$/, '');
}

/**
 * Validates the input, builds the tool's context, runs one phase, maps `ToolError` to a non-retryable
 * failure and writes the phase's one log line (`bytes` measures the phase's output for it).
 */
async function invoke<T>(
  tool: Tool,
  req: ToolActivityInput,
  shared: Shared,
  phase: Phase,
  fn: (input: Parameters<Tool['run']>[0], ctx: ToolContext) => Promise<T>,
  bytes: (output: T) => number,
): Promise<T> {
  const ctx = Context.current();
  const started = performance.now();
  const argKeys = req.input && typeof req.input === 'object' ? Object.keys(req.input).sort() : [];
  let success = false;
  let resultBytes = 0;
  let errorType: string | undefined;
  // A local activity (a read the session runs local) has no heartbeat: its short timeout bounds it instead.
  const heartbeat = ctx.info.isLocal ? () => undefined : () => ctx.heartbeat();
  const beat = ctx.info.isLocal ? undefined : setInterval(heartbeat, 1_000);
  // Watchers see the call itself; a status check or undo is bookkeeping they are not shown.
  const publish = phase === 'run' ? streamPublisher(shared.stream) : () => undefined;
  const tag = { sessionId: req.session.workflowId, tool: tool.name, toolUseId: req.toolUseId, attempt: ctx.info.attempt };
  publish({ type: 'tool_started', ...tag, at: Date.now() });
  try {
    const parsed = tool.input.safeParse(req.input);
    if (!parsed.success) {
      errorType = FailureTypes.InvalidToolInput;
      throw ApplicationFailure.create({
        type: FailureTypes.InvalidToolInput,
        nonRetryable: true,
        message: describeIssues(parsed.error),
      });
    }
    const toolLog: ToolLogger = {
      info: (m, meta) => log.info(m, { tool: tool.name, ...meta }),
      warn: (m, meta) => log.warn(m, { tool: tool.name, ...meta }),
      error: (m, meta) => log.error(m, { tool: tool.name, ...meta }),
    };
    try {
      const base = { signal: ctx.cancellationSignal, env: shared.env, traceHeaders: traceHeaders() };
      const result = await fn(parsed.data, {
        ...base,
        idempotencyKey: req.idempotencyKey,
        log: toolLog,
        session: req.session,
        toolUseId: req.toolUseId,
        fetch: guardedFetch(tool, base),
        progress(message) {
          heartbeat();
          let text = redactText(String(message)).replace(/\s+/g, ' ').trim();
          // A value of a field the tool declared sensitive is masked even when the redactor would not know it.
          for (const field of tool.sensitive ?? []) {
            const value = (parsed.data as Record<string, unknown>)[field];
            if (typeof value === 'string' && value.length >= 4) text = text.replaceAll(value, '[redacted]');
          }
          publish({ type: 'tool_progress', ...tag, at: Date.now(), message: text.length > PROGRESS_CHARS ? `${text.slice(0, PROGRESS_CHARS)}…` : text });
        },
      });
      resultBytes = bytes(result);
      success = true;
      return result;
    } catch (err) {
      if (err instanceof ToolError) {
        errorType = FailureTypes.ToolError;
        throw ApplicationFailure.create({ type: FailureTypes.ToolError, message: err.message, nonRetryable: !err.retryable });
      }
      errorType = err instanceof Error ? err.name : 'Error';
      throw err;
    }
  } finally {
    clearInterval(beat);
    publish({ type: 'tool_finished', ...tag, at: Date.now(), outcome: success ? 'ok' : 'error', durationMs: Math.round(performance.now() - started) });
    log.info(phase === 'run' ? 'tool call' : `tool ${phase}`, {
      tool: tool.name,
      risk: tool.policy.risk,
      session: req.session.workflowId,
      tool_use_id: req.toolUseId,
      attempt: ctx.info.attempt,
      success,
      duration_ms: Math.round(performance.now() - started),
      result_bytes: resultBytes,
      arg_keys: argKeys,
      ...(errorType ? { error_type: errorType } : {}),
    });
  }
}
