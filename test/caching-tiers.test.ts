/**
 * Prompt caching and model tiering, on the test app through `keel/testing`, with the scripted model as
 * witness of what each call sent: `cache_control` on the stable system prompt (not on Keel's notes after
 * it), the last tool and the conversation's last message (and nowhere without `promptCaching`); cache writes and reads (played by a
 * scenario with `prompt_cache`) priced at their own rates in the session's cost; routine calls (after
 * successful lookups) sent to the cheaper model and priced at its price, a routine reply that asks for a
 * side effect answered again by the main model, and every call's model in the session's events.
 */
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createTestEnv, approveUntilDone, type Scenario, type TestEnv } from '../src/testing/index.js';
import { withCacheBreakpoints } from '../src/activities/model.js';
import { isRoutineTurn, sideEffectsAsked } from '../src/workflows/model-tier.js';
import { defineWord, postNote } from './app/tools.js';
import { startNotesBoard, type NotesBoard } from './support/notes-board.js';
import { ROOT, TEST_APP_TOOLS } from './support/paths.js';
import type { CallModelOutput } from '../src/workflows/types.js';

const define = (word: string) => ({ type: 'tool_use' as const, name: 'define_word', input: { word } });
const say = (text: string) => [{ type: 'text' as const, text }];

const SCENARIOS: Scenario[] = [
  {
    name: 'cache-glossary',
    description: 'Two lookups, then an answer; usage estimated with the prompt cache played.',
    prompt_cache: { min_tokens: 1024 },
    turns: [
      { content: [define('durable')], stop_reason: 'tool_use' },
      { content: [define('idempotent')], stop_reason: 'tool_use' },
      { content: say('Durable: survives a crash. Idempotent: safe to repeat.'), stop_reason: 'end_turn' },
    ],
  },
  {
    name: 'tiering',
    description: 'A lookup, a post (asked for first by the routine model), a lookup, an answer.',
    turns: [
      { content: [define('durable')], stop_reason: 'tool_use', usage: { input_tokens: 1000, output_tokens: 0 } },
      {
        content: [{ type: 'tool_use', name: 'post_note', input: { text: 'Durable: able to survive a crash without losing progress' } }],
        stop_reason: 'tool_use',
        usage: { input_tokens: 1000, output_tokens: 0 },
      },
      { content: [define('idempotent')], stop_reason: 'tool_use', usage: { input_tokens: 1000, output_tokens: 0 } },
      { content: say('Posted the definition of durable.'), stop_reason: 'end_turn', usage: { input_tokens: 1000, output_tokens: 0 } },
    ],
  },
];

let env: TestEnv;
let board: NotesBoard;
beforeAll(async () => {
  board = await startNotesBoard();
  env = await createTestEnv({
    tools: TEST_APP_TOOLS,
    scenarios: SCENARIOS,
    temporalAddress: inject('temporalAddress'),
    workflowBundle: { codePath: inject('testAppBundlePath') },
    env: { NOTES_URL: board.url, KEEL_DATA_DIR: path.join(ROOT, '.keel', 'test', 'data', `caching-${randomUUID().slice(0, 8)}`) },
  });
});
afterAll(async () => {
  await env?.close();
  await board?.close();
});

const user = { id: 'teammate-1' };
const EPHEMERAL = { type: 'ephemeral' };
type Block = { type: string; text?: string; cache_control?: unknown };

/** What the scripted model received for one session, in order. */
const requestsOf = (sessionId: string) => env.model.received.filter((r) => r.session === sessionId);
/** Each model call's reply, from history. */
async function modelReplies(sessionId: string): Promise<CallModelOutput[]> {
  const events = (await env.client.session(sessionId).fetchHistory()).events ?? [];
  const callModel = new Set(events.filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'callModel').map((e) => String(e.eventId)));
  return events
    .filter((e) => callModel.has(String(e.activityTaskCompletedEventAttributes?.scheduledEventId ?? '')))
    .map((e) => JSON.parse(Buffer.from(e.activityTaskCompletedEventAttributes!.result!.payloads![0]!.data!).toString()) as CallModelOutput);
}

describe('prompt caching', () => {
  // Over 1,024 tokens on its own, so the system prompt's breakpoint caches; unique, so no other test wrote it.
  const system = `You explain glossary words precisely (${randomUUID()}). ${'Always look a word up before you explain it. '.repeat(120)}`;
  const pricing = { 'scripted/cache-glossary': { input: 3, output: 15, cacheWrite: 3.75, cacheRead: 0.3 } };

  it('marks the system prompt, the last tool and the last message, and prices cache writes and reads', async () => {
    const { sessionId, handle } = await env.client.startSession({ prompt: 'Define durable and idempotent', user, agent: 'notes', model: 'scripted/cache-glossary', system, pricing, idleTimeout: 0 });
    const result = await env.withWorker(() => handle.result());
    expect(result.answer).toMatch(/Idempotent/);

    const sent = requestsOf(sessionId);
    expect(sent).toHaveLength(3);
    for (const r of sent) {
      expect(r.system).toEqual([{ type: 'text', text: system, cache_control: EPHEMERAL }]);
      const tools = r.tools as Array<{ name: string; cache_control?: unknown }>;
      expect(tools.map((t) => t.cache_control ?? null)).toEqual([...tools.slice(1).map(() => null), EPHEMERAL]);
      const last = r.lastMessage as { content: Block[] };
      expect(last.content.at(-1)!.cache_control).toEqual(EPHEMERAL);
      expect(last.content.slice(0, -1).every((b) => b.cache_control === undefined)).toBe(true);
    }
    // The first call writes the prefix; each later one reads what the one before wrote and writes what is new.
    const [first, second, third] = (await modelReplies(sessionId)).map((r) => r.usage);
    expect(first).toMatchObject({ cache_read_input_tokens: 0 });
    expect(first!.cache_creation_input_tokens).toBeGreaterThan(1024);
    expect(second!.cache_read_input_tokens).toBe(first!.cache_creation_input_tokens);
    expect(third!.cache_read_input_tokens).toBe(second!.cache_read_input_tokens + second!.cache_creation_input_tokens);
    expect(second!.cache_creation_input_tokens).toBeGreaterThan(0);

    // Cost: each kind of token at its own price, summed over the calls.
    const u = result.usage;
    expect(u.cache_read_input_tokens).toBe(second!.cache_read_input_tokens + third!.cache_read_input_tokens);
    const expected = (u.input_tokens * 3 + u.output_tokens * 15 + u.cache_creation_input_tokens * 3.75 + u.cache_read_input_tokens * 0.3) / 1e6;
    expect(u.cost_usd).toBeCloseTo(expected, 10);
    // Cheaper than sending the same tokens uncached.
    const uncached = ((u.input_tokens + u.cache_creation_input_tokens + u.cache_read_input_tokens) * 3 + u.output_tokens * 15) / 1e6;
    expect(u.cost_usd).toBeLessThan(uncached * 0.75);
  }, 60_000);

  it('sends no breakpoints and counts no cache tokens with promptCaching: false', async () => {
    const { sessionId, handle } = await env.client.startSession({ prompt: 'Define durable and idempotent', user, agent: 'notes', model: 'scripted/cache-glossary', system, pricing, promptCaching: false, idleTimeout: 0 });
    const result = await env.withWorker(() => handle.result());
    const sent = requestsOf(sessionId);
    expect(sent).toHaveLength(3);
    expect(JSON.stringify(sent)).not.toContain('cache_control');
    expect(sent.every((r) => r.system === system)).toBe(true);
    expect(result.usage).toMatchObject({ cache_creation_input_tokens: 0, cache_read_input_tokens: 0 });
    expect(result.usage.cost_usd).toBeCloseTo((result.usage.input_tokens * 3 + result.usage.output_tokens * 15) / 1e6, 10);
  }, 60_000);
});

describe('model tiering', () => {
  const models = { model: 'scripted/tiering', routineModel: 'scripted/tiering@small' };
  // $0.01 a main call, $0.001 a routine one: 1,000 input tokens each.
  const pricing = { 'scripted/tiering': { input: 10, output: 0 }, 'scripted/tiering@small': { input: 1, output: 0 } };

  it('sends routine calls to the cheaper model, hands side effects to the main model, and prices each call at its model', async () => {
    const { sessionId, handle } = await env.client.startSession({ prompt: 'Look up durable and post it', user, agent: 'notes', ...models, pricing, idleTimeout: 0 });
    const [result] = await env.withWorker(() => Promise.all([handle.result(), approveUntilDone(env.client, sessionId, { id: 'lead-1', roles: ['approver'] })]));
    expect(result.answer).toBe('Posted the definition of durable.');

    // The prompt: main. After a lookup: routine, which asked to post: set aside, main asks again. After the
    // post (a side effect): main. After a lookup: routine, whose answer stands.
    expect(requestsOf(sessionId).map((r) => r.model)).toEqual(['scripted/tiering', 'scripted/tiering@small', 'scripted/tiering', 'scripted/tiering', 'scripted/tiering@small']);
    expect(board.notes.filter((n) => n.idempotencyKey.includes(sessionId))).toHaveLength(1);
    // Four turns of the loop (the set-aside call is part of its turn); five calls' tokens and cost.
    expect(result.iterations).toBe(4);
    expect(result.usage.input_tokens).toBe(5000);
    expect(result.usage.cost_usd).toBeCloseTo(3 * 0.01 + 2 * 0.001, 10);

    // The model of every call is in the session's events.
    const status = await env.withWorker(() => env.client.status(sessionId));
    const calls = status.events.flatMap((e) => (e.kind === 'model' ? [{ iteration: e.iteration, model: e.model, routine: e.routine ?? false, escalated: e.escalated ?? false, toolUses: e.toolUses }] : []));
    expect(calls).toEqual([
      { iteration: 1, model: 'scripted/tiering', routine: false, escalated: false, toolUses: ['define_word'] },
      { iteration: 2, model: 'scripted/tiering@small', routine: true, escalated: true, toolUses: ['post_note'] },
      { iteration: 2, model: 'scripted/tiering', routine: false, escalated: false, toolUses: ['post_note'] },
      { iteration: 3, model: 'scripted/tiering', routine: false, escalated: false, toolUses: ['define_word'] },
      { iteration: 4, model: 'scripted/tiering@small', routine: true, escalated: false, toolUses: [] },
    ]);
  }, 60_000);

  it('refuses a session whose pricing prices its model but not its routine model', async () => {
    const { handle } = await env.client.startSession({ prompt: 'x', user, agent: 'notes', ...models, pricing: { 'scripted/tiering': { input: 10, output: 0 } }, idleTimeout: 0 });
    await expect(env.withWorker(() => handle.result())).rejects.toMatchObject({
      cause: { type: 'InvalidSessionInput', message: "pricing: no price for routine model 'scripted/tiering@small', which this session uses (the cost of its routine turns would go uncounted)" },
    });
  }, 60_000);

  it('calls a turn routine only when every result came from a read tool that succeeded', () => {
    const tools = new Map([defineWord, postNote].map((t) => [t.name, t]));
    expect(isRoutineTurn([], tools)).toBe(false); // a user message
    expect(isRoutineTurn([{ tool: 'define_word', outcome: 'ok' }, { tool: 'define_word', outcome: 'ok' }], tools)).toBe(true);
    expect(isRoutineTurn([{ tool: 'define_word', outcome: 'ok' }, { tool: 'define_word', outcome: 'error' }], tools)).toBe(false);
    expect(isRoutineTurn([{ tool: 'define_word', outcome: 'skipped' }], tools)).toBe(false);
    expect(isRoutineTurn([{ tool: 'post_note', outcome: 'ok' }], tools)).toBe(false);
    expect(isRoutineTurn([{ tool: 'nonexistent', outcome: 'ok' }], tools)).toBe(false);
    expect(sideEffectsAsked([define('x'), { type: 'tool_use', id: 't', name: 'post_note', input: {} }, { type: 'tool_use', id: 'u', name: 'rm_rf', input: {} }], tools)).toEqual(['post_note', 'rm_rf']);
    expect(sideEffectsAsked([define('x'), { type: 'text', text: 'ok' }], tools)).toEqual([]);
  });
});

describe('withCacheBreakpoints', () => {
  it('leaves a request as it is without caching, and never changes the messages it was given', () => {
    const request = { system: 'Be brief.', tools: [{ name: 'a', input_schema: { type: 'object' as const } }], messages: [{ role: 'user' as const, content: 'hi' }] };
    expect(withCacheBreakpoints(request, undefined)).toBe(request);
    const cached = withCacheBreakpoints(request, { systemChars: 9 });
    expect(cached.messages).toEqual([{ role: 'user', content: [{ type: 'text', text: 'hi', cache_control: EPHEMERAL }] }]);
    expect(cached.system).toEqual([{ type: 'text', text: 'Be brief.', cache_control: EPHEMERAL }]);
    expect(request.messages[0]!.content).toBe('hi');
  });

  it('keeps the notes Keel appends to the system prompt out of the cached block', () => {
    const request = { system: 'Be brief.\n\n[Keel] This is your last turn.', tools: [], messages: [{ role: 'user' as const, content: 'hi' }] };
    expect(withCacheBreakpoints(request, { systemChars: 9 }).system).toEqual([
      { type: 'text', text: 'Be brief.', cache_control: EPHEMERAL },
      { type: 'text', text: '\n\n[Keel] This is your last turn.' },
    ]);
  });
});
