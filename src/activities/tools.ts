/**
 * Tool activities: one per registered tool, registered under the tool's name so the Temporal Web UI
 * reads like the conversation. Each validates its input again (the workflow already did; this is the
 * server-side check), hands the tool its idempotency key, abort signal and logger, maps `ToolError` to
 * a non-retryable `ToolError` failure the model will read, caps the result's size, and writes exactly
 * one structured log line per attempt: tool, session, success, duration_ms, result_bytes, arg_keys.
 */
import { ApplicationFailure, Context, log } from '@temporalio/activity';
import { ToolError, type Tool, type ToolLogger } from '../tools/index.js';
import { FailureTypes, type ToolActivityInput, type ToolActivityOutput } from '../workflows/types.js';

/** Results larger than this (bytes of JSON) are cut, with a note to the model. */
export const MAX_RESULT_BYTES = 64 * 1024;

/** Creates the activity functions for a set of tools, keyed by tool name. */
export function createToolActivities(
  tools: Iterable<Tool>,
  opts: { env?: Readonly<Record<string, string | undefined>> } = {},
): Record<string, (req: ToolActivityInput) => Promise<ToolActivityOutput>> {
  const env = opts.env ?? process.env;
  const activities: Record<string, (req: ToolActivityInput) => Promise<ToolActivityOutput>> = {};
  for (const tool of tools) {
    activities[tool.name] = (req) => runTool(tool, req, env);
  }
  return activities;
}

async function runTool(
  tool: Tool,
  req: ToolActivityInput,
  env: Readonly<Record<string, string | undefined>>,
): Promise<ToolActivityOutput> {
  const ctx = Context.current();
  const started = performance.now();
  const argKeys = req.input && typeof req.input === 'object' ? Object.keys(req.input).sort() : [];
  let success = false;
  let resultBytes = 0;
  let errorType: string | undefined;
  const beat = setInterval(() => ctx.heartbeat(), 1_000);
  try {
    const parsed = tool.input.safeParse(req.input);
    if (!parsed.success) {
      errorType = FailureTypes.InvalidToolInput;
      throw ApplicationFailure.create({
        type: FailureTypes.InvalidToolInput,
        nonRetryable: true,
        message: parsed.error.issues.map((i) => `${i.path.join('.') || '(input)'}: ${i.message}`).join('; '),
      });
    }
    const toolLog: ToolLogger = {
      info: (m, meta) => log.info(m, { tool: tool.name, ...meta }),
      warn: (m, meta) => log.warn(m, { tool: tool.name, ...meta }),
      error: (m, meta) => log.error(m, { tool: tool.name, ...meta }),
    };
    let result: unknown;
    try {
      result = await tool.run(parsed.data, {
        idempotencyKey: req.idempotencyKey,
        signal: ctx.cancellationSignal,
        log: toolLog,
        session: req.session,
        toolUseId: req.toolUseId,
        env,
      });
    } catch (err) {
      if (err instanceof ToolError) {
        errorType = FailureTypes.ToolError;
        throw ApplicationFailure.create({ type: FailureTypes.ToolError, message: err.message, nonRetryable: !err.retryable });
      }
      errorType = err instanceof Error ? err.name : 'Error';
      throw err;
    }
    const text = JSON.stringify(result ?? null);
    resultBytes = Buffer.byteLength(text);
    success = true;
    if (resultBytes <= MAX_RESULT_BYTES) return { content: text, bytes: resultBytes, truncated: false };
    const cut = Buffer.from(text).subarray(0, MAX_RESULT_BYTES).toString('utf8');
    return {
      content: `${cut}\n[result truncated: ${resultBytes} bytes, the first ${MAX_RESULT_BYTES} shown]`,
      bytes: resultBytes,
      truncated: true,
    };
  } finally {
    clearInterval(beat);
    log.info('tool call', {
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
