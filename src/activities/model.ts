/**
 * `callModel`: one model turn through `@anthropic-ai/sdk`. The workflow sends only what is new in the
 * conversation; this activity appends it to the conversation store, reads the whole conversation back,
 * calls the model, and stores the reply after it, so history stays O(what is new) per call. The SDK client is built with `maxRetries: 0`
 * because Temporal's retry policy is the only retry layer: this activity classifies each failure so the
 * policy does the right thing (429/529/5xx/408/409 and connection errors are retryable, honouring the
 * API's `retry-after`; 400/401/403/404/413/422 are not). It heartbeats while it waits, so a worker that
 * dies mid-call is noticed within the heartbeat timeout and the turn is retried on another worker.
 *
 * The reply is streamed (`messages.stream`): each text delta is published on the worker's stream bus as it
 * arrives, tagged with the turn (the reply's conversation position, the same on every attempt) and the
 * activity attempt; a failed attempt publishes `attempt_failed`, so watchers withdraw its text before the
 * retry's (src/stream). What the activity returns is the final message, as before: the stream is a view.
 *
 * Prompt caching: when the workflow asks for it (`cache`), the request carries `cache_control` breakpoints
 * (Anthropic renders tools, then system, then messages, and caches the prefix up to each breakpoint): on
 * the last tool, on the stable system prompt (Keel's notes follow it in a block of their own) and on the
 * last block of the conversation's last message, so the next call of the loop reads the whole conversation
 * so far from the cache. Three of the four breakpoints the API allows.
 */
import Anthropic from '@anthropic-ai/sdk';
import { ApplicationFailure, Context } from '@temporalio/activity';
import { ConversationMissingError, type ConversationStore } from '../store/index.js';
import type { StreamBus } from '../stream/types.js';
import { redactText } from '../workflows/redact.js';
import { streamPublisher } from './stream.js';
import { FailureTypes, type CallModelInput, type CallModelOutput, type ContentBlock } from '../workflows/types.js';

/** Where the model lives, and where conversations are kept. */
export interface ModelActivityOptions {
  store: ConversationStore;
  apiKey: string;
  /** An Anthropic-compatible endpoint; unset means the real API. */
  baseURL?: string;
  /** Per-request HTTP timeout in ms (120,000). */
  timeoutMs?: number;
  /** Where the model's text is published as it streams (nothing is published without one). */
  stream?: StreamBus;
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
      // As a local activity (the session's `execution.model`) the call cannot heartbeat: its timeout bounds it.
      const beat = ctx.info.isLocal ? undefined : setInterval(() => ctx.heartbeat(), 1_000);
      const { id, stored, append } = input.conversation;
      const tag = { sessionId: input.sessionId, turn: stored + append.length, attempt: ctx.info.attempt + (input.streamAttemptOffset ?? 0) };
      const publish = streamPublisher(opts.stream);
      try {
        await opts.store.write(id, stored, append);
        const messages = await opts.store.read(id, stored + append.length).catch((err: unknown) => {
          if (!(err instanceof ConversationMissingError)) throw err;
          // Another worker may hold the right store, or it may come back: retryable, within the model's policy.
          throw ApplicationFailure.create({ type: FailureTypes.ConversationMissing, message: err.message, nonRetryable: false });
        });
        const cached = withCacheBreakpoints({ system: input.system, tools: input.tools as Anthropic.Tool[], messages: messages as Anthropic.MessageParam[] }, input.cache);
        const stream = client.messages.stream(
          {
            model: input.model,
            max_tokens: input.maxTokens,
            ...(cached.system ? { system: cached.system } : {}),
            messages: cached.messages,
            ...(cached.tools.length ? { tools: cached.tools } : {}),
            ...(input.toolChoice ? { tool_choice: { type: 'tool' as const, name: input.toolChoice } } : {}),
            metadata: { user_id: input.sessionId },
          },
          { signal: ctx.cancellationSignal },
        );
        if (opts.stream) {
          stream.on('streamEvent', (event) => {
            if (event.type === 'content_block_delta' && event.delta.type === 'text_delta') {
              publish({ type: 'text_delta', ...tag, at: Date.now(), index: event.index, text: event.delta.text });
            }
          });
        }
        const reply = await stream.finalMessage();
        // Plain data, as `messages.create` returned it: the stream's message carries non-enumerable helpers.
        const content = JSON.parse(JSON.stringify(reply.content)) as ContentBlock[];
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
        const failure = classifyModelError(err);
        const message = failure instanceof Error ? failure.message : String(failure);
        publish({ type: 'attempt_failed', ...tag, at: Date.now(), error: redactText(message.split('\n')[0] ?? '').slice(0, 500) });
        throw failure;
      } finally {
        clearInterval(beat);
      }
    },
  };
}

/** A prompt-cache breakpoint: the default (5-minute) ephemeral cache. */
const EPHEMERAL: Anthropic.CacheControlEphemeral = { type: 'ephemeral' };

/** Content block types that may carry `cache_control` as the last block of a user message. */
const CACHEABLE_BLOCKS = new Set(['text', 'tool_result', 'image', 'document']);

/**
 * The request's system prompt, tools and messages with prompt-cache breakpoints, or as given when `cache` is
 * absent: `cache_control` on the first `cache.systemChars` characters of the system prompt (the rest, Keel's
 * notes, follows as a second block), on the last tool, and on the last block of the last message (a string
 * message becomes one text block). Copies what it changes; the conversation as stored is untouched.
 */
export function withCacheBreakpoints(
  request: { system: string | undefined; tools: Anthropic.Tool[]; messages: Anthropic.MessageParam[] },
  cache: CallModelInput['cache'],
): { system: string | Anthropic.TextBlockParam[] | undefined; tools: Anthropic.Tool[]; messages: Anthropic.MessageParam[] } {
  if (!cache) return request;
  const { system, tools, messages } = request;
  let cachedSystem: string | Anthropic.TextBlockParam[] | undefined = system;
  const stable = system?.slice(0, cache.systemChars) ?? '';
  if (system && stable.trim()) {
    const notes = system.slice(stable.length);
    cachedSystem = [{ type: 'text', text: stable, cache_control: EPHEMERAL }, ...(notes.trim() ? [{ type: 'text' as const, text: notes }] : [])];
  }
  const cachedTools = tools.map((t, i) => (i === tools.length - 1 ? { ...t, cache_control: EPHEMERAL } : t));
  const last = messages.at(-1);
  let cachedMessages = messages;
  if (last) {
    const content: Anthropic.ContentBlockParam[] = typeof last.content === 'string' ? [{ type: 'text', text: last.content }] : [...last.content];
    const final = content.at(-1);
    if (final && CACHEABLE_BLOCKS.has(final.type)) {
      content[content.length - 1] = { ...final, cache_control: EPHEMERAL } as Anthropic.ContentBlockParam;
      cachedMessages = [...messages.slice(0, -1), { ...last, content } as Anthropic.MessageParam];
    }
  }
  return { system: cachedSystem, tools: cachedTools, messages: cachedMessages };
}

const NON_RETRYABLE = new Set([400, 401, 403, 404, 413, 422]);
/** The error types of those statuses, for an `error` event in a stream that had already answered 200. */
const NON_RETRYABLE_TYPES = new Set(['invalid_request_error', 'authentication_error', 'permission_error', 'not_found_error', 'request_too_large']);

/**
 * Turns an SDK error into an ApplicationFailure whose type and retryability say what to do. An error that
 * arrives as an `error` event after the stream began (status 200 already sent) has no status: its `type`
 * decides (`overloaded_error`, `api_error`: retryable).
 */
export function classifyModelError(err: unknown): unknown {
  if (err instanceof Anthropic.APIUserAbortError) return err;
  if (err instanceof Anthropic.APIError) {
    const status = err.status;
    const midStream = status === undefined && err.type !== null;
    const what = status !== undefined ? `${status} error` : midStream ? `error mid-stream (${err.type})` : 'connection error';
    const message = `model API ${what}: ${err.apiMessage ?? err.message}`;
    if (status !== undefined ? NON_RETRYABLE.has(status) : midStream && NON_RETRYABLE_TYPES.has(err.type ?? '')) {
      return ApplicationFailure.create({ type: FailureTypes.ModelRequestRejected, message, nonRetryable: true, details: [{ status: status ?? null }] });
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
