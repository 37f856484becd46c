/**
 * `callModel`: one model turn through `@anthropic-ai/sdk`. The workflow sends only what is new in the
 * conversation; this activity appends it to the conversation store, reads the whole conversation back,
 * calls the model, and stores the reply after it, so history stays O(what is new) per call. The SDK client is built with `maxRetries: 0`
 * because Temporal's retry policy is the only retry layer: this activity classifies each failure so the
 * policy does the right thing (429/529/5xx/408/409 and connection errors are retryable, honouring the
 * API's `retry-after`; 400/401/403/404/413/422 are not). It heartbeats while it waits, so a worker that
 * dies mid-call is noticed within the heartbeat timeout and the turn is retried on another worker.
 */
import Anthropic from '@anthropic-ai/sdk';
import { ApplicationFailure, Context } from '@temporalio/activity';
import { ConversationMissingError, type ConversationStore } from '../store/index.js';
import { FailureTypes, type CallModelInput, type CallModelOutput, type ContentBlock } from '../workflows/types.js';

/** Where the model lives, and where conversations are kept. */
export interface ModelActivityOptions {
  store: ConversationStore;
  apiKey: string;
  /** An Anthropic-compatible endpoint; unset means the real API. */
  baseURL?: string;
  /** Per-request HTTP timeout in ms (120,000). */
  timeoutMs?: number;
}

/** Creates the model activities for a worker. */
export function createModelActivities(opts: ModelActivityOptions) {
  const client = new Anthropic({
    apiKey: opts.apiKey,
    baseURL: opts.baseURL ?? null,
    maxRetries: 0,
    timeout: opts.timeoutMs ?? 120_000,
  });

  return {
    /** Sends the conversation and returns the model's reply. */
    async callModel(input: CallModelInput): Promise<CallModelOutput> {
      const ctx = Context.current();
      const beat = setInterval(() => ctx.heartbeat(), 1_000);
      const { id, stored, append } = input.conversation;
      try {
        await opts.store.write(id, stored, append);
        const messages = await opts.store.read(id, stored + append.length).catch((err: unknown) => {
          if (!(err instanceof ConversationMissingError)) throw err;
          // Another worker may hold the right store, or it may come back: retryable, within the model's policy.
          throw ApplicationFailure.create({ type: FailureTypes.ConversationMissing, message: err.message, nonRetryable: false });
        });
        const reply = await client.messages.create(
          {
            model: input.model,
            max_tokens: input.maxTokens,
            ...(input.system ? { system: input.system } : {}),
            messages: messages as Anthropic.MessageParam[],
            ...(input.tools.length ? { tools: input.tools as Anthropic.Tool[] } : {}),
            metadata: { user_id: input.sessionId },
          },
          { signal: ctx.cancellationSignal },
        );
        const content = reply.content as unknown as ContentBlock[];
        await opts.store.write(id, stored + append.length, [{ role: 'assistant', content }]);
        return {
          id: reply.id,
          model: reply.model,
          content,
          stopReason: reply.stop_reason ?? 'end_turn',
          usage: {
            input_tokens: reply.usage?.input_tokens ?? 0,
            output_tokens: reply.usage?.output_tokens ?? 0,
            cache_creation_input_tokens: reply.usage?.cache_creation_input_tokens ?? 0,
            cache_read_input_tokens: reply.usage?.cache_read_input_tokens ?? 0,
          },
        };
      } catch (err) {
        throw classifyModelError(err);
      } finally {
        clearInterval(beat);
      }
    },
  };
}

const NON_RETRYABLE = new Set([400, 401, 403, 404, 413, 422]);

/** Turns an SDK error into an ApplicationFailure whose type and retryability say what to do. */
export function classifyModelError(err: unknown): unknown {
  if (err instanceof Anthropic.APIUserAbortError) return err;
  if (err instanceof Anthropic.APIError) {
    const status = err.status;
    const message = `model API ${status ?? 'connection'} error: ${err.apiMessage ?? err.message}`;
    if (status !== undefined && NON_RETRYABLE.has(status)) {
      return ApplicationFailure.create({ type: FailureTypes.ModelRequestRejected, message, nonRetryable: true, details: [{ status }] });
    }
    return ApplicationFailure.create({
      type: FailureTypes.ModelUnavailable,
      message,
      nonRetryable: false,
      details: [{ status: status ?? null }],
      nextRetryDelay: retryAfterMs(err.headers),
    });
  }
  return err;
}

/** The server's requested wait, from `retry-after-ms` or `retry-after` (seconds or an HTTP date). */
export function retryAfterMs(headers: Headers | undefined): number | undefined {
  const ms = Number(headers?.get('retry-after-ms'));
  if (Number.isFinite(ms) && ms > 0) return Math.min(ms, 120_000);
  const ra = headers?.get('retry-after');
  if (!ra) return undefined;
  const seconds = Number(ra);
  if (Number.isFinite(seconds)) return seconds > 0 ? Math.min(seconds * 1000, 120_000) : undefined;
  const at = Date.parse(ra);
  return Number.isFinite(at) ? Math.min(Math.max(at - Date.now(), 0), 120_000) || undefined : undefined;
}
