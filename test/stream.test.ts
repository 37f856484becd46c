/**
 * Streaming out of durable runs: each stream bus (memory; SQLite shared by two instances on one file;
 * PostgreSQL LISTEN/NOTIFY between two instances) delivers a session's events in order and stops at
 * unsubscribe; `subscribeSession` withdraws the text of failed and superseded model attempts; the
 * scripted model streams with spaced chunks and fails mid-stream like the real API; `callModel` streams
 * its text and classifies a 529 before the stream and an `error` event inside it alike (retryable), with
 * the same output as before; tool activities publish their calls and progress, never their input or
 * output. And end to end, through a real worker on the real Temporal server: a reply cut by a mid-stream
 * 529 reaches a watcher as attempt 1's text, its retraction, then attempt 2's whole text, which is the
 * session's answer.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Anthropic from '@anthropic-ai/sdk';
import { ApplicationFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { z } from 'zod';
import { classifyModelError, createModelActivities } from '../src/activities/model.js';
import { createToolActivities } from '../src/activities/tools.js';
import { loadConfig } from '../src/config.js';
import { openSqliteStore, type KeelStore } from '../src/store/index.js';
import {
  createMemoryStreamBus,
  openSqliteStreamBus,
  openStreamBus,
  sessionStreamFilter,
  subscribeSession,
  type SessionStreamEvent,
  type StreamBus,
  type StreamEvent,
  type TextDeltaEvent,
} from '../src/stream/index.js';
import { fitEvent, MAX_NOTIFY_BYTES, openPostgresStreamBus } from '../src/stream/postgres.js';
import { createTestEnv, startScriptedModel, type Scenario, type ScriptedModelServer, type TestEnv } from '../src/testing/index.js';
import { defineTool, ToolError } from '../src/tools/index.js';
import type { CallModelInput, CallModelOutput, ToolActivityInput } from '../src/workflows/types.js';
import { TEST_APP_TOOLS } from './support/paths.js';
import { PG_URL } from './support/store-backends.js';

const scratch = mkdtempSync(path.join(tmpdir(), 'keel-stream-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** Activities in a mock context, with the SDK's activity log lines kept out of the test output. */
const silent = { log() {}, trace() {}, debug() {}, info() {}, warn() {}, error() {} };
const mockActivity = (info: { attempt?: number } = {}) => new MockActivityEnvironment(info, { logger: silent });

/** Waits (polling every 5 ms) until `probe` is true. */
async function waitFor(probe: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const delta = (sessionId: string, text: string, turn = 1, attempt = 1): TextDeltaEvent => ({ type: 'text_delta', sessionId, at: Date.now(), turn, attempt, index: 0, text });

/** What a watcher shows of a stream: each turn's text, retracted attempts removed. */
function shownText(events: SessionStreamEvent[]): Map<number, string> {
  const byAttempt = new Map<string, string>();
  for (const e of events) {
    if (e.type === 'text_delta') byAttempt.set(`${e.turn}/${e.attempt}`, (byAttempt.get(`${e.turn}/${e.attempt}`) ?? '') + e.text);
    if (e.type === 'retract') byAttempt.delete(`${e.turn}/${e.attempt}`);
  }
  const byTurn = new Map<number, string>();
  for (const [key, text] of byAttempt) {
    const turn = Number(key.split('/')[0]);
    byTurn.set(turn, (byTurn.get(turn) ?? '') + text);
  }
  return byTurn;
}

describe.each([
  ['memory', () => { const bus = createMemoryStreamBus(); return [bus, bus] as const; }],
  ['sqlite', () => {
    // Two instances on one file: two processes sharing the data dir, as far as the bus can tell.
    const file = path.join(scratch, `bus-${randomUUID().slice(0, 8)}`, 'keel-stream.sqlite');
    return [openSqliteStreamBus(file), openSqliteStreamBus(file)] as const;
  }],
  ['postgres', () => {
    // A channel of this run's own, so concurrent runs on the machine's PostgreSQL do not hear each other.
    const channel = `keel_stream_test_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
    return [openPostgresStreamBus(PG_URL, { channel }), openPostgresStreamBus(PG_URL, { channel })] as const;
  }],
])('the %s stream bus', (kind, open) => {
  let publisher: StreamBus;
  let subscriber: StreamBus;
  beforeAll(() => {
    [publisher, subscriber] = open();
  });
  afterAll(async () => {
    await publisher.close();
    if (subscriber !== publisher) await subscriber.close();
  });

  it('delivers a session its own events, in order, from another instance, until it unsubscribes', async () => {
    expect(publisher.kind).toBe(kind);
    const session = `s-${randomUUID()}`;
    const other = `o-${randomUUID()}`;
    publisher.publish(delta(session, 'before the subscription'));
    if (kind === 'postgres') await new Promise((r) => setTimeout(r, 100)); // its NOTIFY goes out first
    const got: StreamEvent[] = [];
    const gotOther: StreamEvent[] = [];
    const unsubscribe = await subscriber.subscribe(session, (e) => got.push(e));
    await subscriber.subscribe(other, (e) => gotOther.push(e));
    const texts = Array.from({ length: 200 }, (_, i) => `chunk ${i} `);
    for (const text of texts) {
      publisher.publish(delta(session, text));
      publisher.publish(delta(`unwatched-${session}`, text));
    }
    publisher.publish({ type: 'tool_started', sessionId: session, at: Date.now(), tool: 'lookup', toolUseId: 'toolu_1', attempt: 1 });
    await waitFor(() => got.length === texts.length + 1, `${texts.length + 1} events`);
    expect(got.slice(0, -1).map((e) => (e as TextDeltaEvent).text)).toEqual(texts);
    expect(got.at(-1)).toMatchObject({ type: 'tool_started', tool: 'lookup' });
    expect(gotOther).toEqual([]);

    unsubscribe();
    publisher.publish(delta(session, 'after unsubscribe'));
    publisher.publish(delta(other, 'marker'));
    // The marker was published after the dropped event: once it is in, the other would be too.
    await waitFor(() => gotOther.length === 1, 'the marker');
    expect(got).toHaveLength(texts.length + 1);
  });

  it('never throws into a publisher, even after it is closed', async () => {
    const bus = open()[0];
    await bus.close();
    expect(() => bus.publish(delta('closed', 'x'))).not.toThrow();
  });
});

describe('the postgres stream bus and the NOTIFY payload limit', () => {
  it('splits a long text delta into deltas that concatenate to it, and truncates a long progress message', async () => {
    const text = `${'héllo wörld 🚀 '.repeat(1_500)}"quoted"\n`;
    const parts = fitEvent(delta('s', text)).map((j) => JSON.parse(j) as TextDeltaEvent);
    expect(parts.length).toBeGreaterThan(2);
    expect(parts.map((p) => p.text).join('')).toBe(text);
    for (const p of parts) expect(Buffer.byteLength(JSON.stringify(p))).toBeLessThanOrEqual(MAX_NOTIFY_BYTES - 2);

    const channel = `keel_stream_test_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
    const [a, b] = [openPostgresStreamBus(PG_URL, { channel }), openPostgresStreamBus(PG_URL, { channel })];
    try {
      const got: StreamEvent[] = [];
      await b.subscribe('big', (e) => got.push(e));
      a.publish(delta('big', text));
      a.publish({ type: 'tool_progress', sessionId: 'big', at: Date.now(), tool: 't', toolUseId: 'toolu_1', attempt: 1, message: 'x'.repeat(20_000) });
      await waitFor(() => got.at(-1)?.type === 'tool_progress', 'the progress event');
      expect(got.filter((e) => e.type === 'text_delta').map((e) => (e as TextDeltaEvent).text).join('')).toBe(text);
      const progress = got.at(-1) as Extract<StreamEvent, { type: 'tool_progress' }>;
      expect(progress.message.endsWith('…')).toBe(true);
      expect(progress.message.length).toBeGreaterThan(7_000);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });
});

describe('openStreamBus', () => {
  it('follows the store: SQLite beside it by default or for a SQLite path, PostgreSQL for a postgres URL', async () => {
    const dataDir = path.join(scratch, 'data');
    const buses = [
      await openStreamBus(loadConfig({ KEEL_DATA_DIR: dataDir })),
      await openStreamBus(loadConfig({ KEEL_AUDIT_URL: `sqlite:${path.join(scratch, 'elsewhere', 'store.sqlite')}` })),
      await openStreamBus(loadConfig({ KEEL_AUDIT_URL: PG_URL })),
    ];
    try {
      expect(buses.map((b) => b.kind)).toEqual(['sqlite', 'sqlite', 'postgres']);
      // Two processes opening the default bus share it.
      const again = await openStreamBus(loadConfig({ KEEL_DATA_DIR: dataDir }));
      const got: StreamEvent[] = [];
      await again.subscribe('shared', (e) => got.push(e));
      buses[0]!.publish(delta('shared', 'hi'));
      await waitFor(() => got.length === 1, 'the event');
      await again.close();
    } finally {
      await Promise.all(buses.map((b) => b.close()));
    }
    await expect(openStreamBus(loadConfig({ KEEL_AUDIT_URL: 'mysql://db/keel' }))).rejects.toThrow(/KEEL_AUDIT_URL/);
  });
});

describe('subscribeSession', () => {
  /** Feeds raw events through the filter; returns what the watcher sees. */
  const watch = (events: StreamEvent[]): SessionStreamEvent[] => {
    const seen: SessionStreamEvent[] = [];
    const filter = sessionStreamFilter((e) => seen.push(e));
    for (const e of events) filter(e);
    return seen;
  };
  const failed = (turn: number, attempt: number): StreamEvent => ({ type: 'attempt_failed', sessionId: 's', at: 0, turn, attempt, error: 'model API 529 error: Overloaded' });
  const brief = (events: SessionStreamEvent[]) =>
    events.map((e) => (e.type === 'text_delta' ? `${e.turn}/${e.attempt}:${e.text}` : e.type === 'retract' || e.type === 'attempt_failed' ? `${e.type} ${e.turn}/${e.attempt}` : e.type));

  it('retracts a failed attempt whose text was shown, then shows the retry', () => {
    const seen = watch([delta('s', 'Hel', 3, 1), delta('s', 'lo', 3, 1), failed(3, 1), delta('s', 'Hello', 3, 2), delta('s', '!', 3, 2)]);
    expect(brief(seen)).toEqual(['3/1:Hel', '3/1:lo', 'retract 3/1', 'attempt_failed 3/1', '3/2:Hello', '3/2:!']);
    expect(shownText(seen).get(3)).toBe('Hello!');
  });

  it('retracts an attempt a newer one supersedes when its worker died without a word', () => {
    const seen = watch([delta('s', 'Hel', 3, 1), delta('s', 'Hello', 3, 2)]);
    expect(brief(seen)).toEqual(['3/1:Hel', 'retract 3/1', '3/2:Hello']);
  });

  it('retracts nothing for a failure that showed no text', () => {
    expect(brief(watch([failed(1, 1), delta('s', 'ok', 1, 2)]))).toEqual(['attempt_failed 1/1', '1/2:ok']);
  });

  it('drops late text of an older or failed attempt, and keeps turns apart', () => {
    const seen = watch([delta('s', 'a', 1, 1), failed(1, 1), delta('s', 'late', 1, 1), delta('s', 'b', 1, 2), delta('s', 'older', 1, 1), delta('s', 'next turn', 3, 1)]);
    expect(brief(seen)).toEqual(['1/1:a', 'retract 1/1', 'attempt_failed 1/1', '1/2:b', '3/1:next turn']);
  });

  it('passes tool events through, and subscribes through the bus', async () => {
    const bus = createMemoryStreamBus();
    const seen: SessionStreamEvent[] = [];
    const unsubscribe = await subscribeSession(bus, 's', (e) => seen.push(e));
    bus.publish({ type: 'tool_finished', sessionId: 's', at: 0, tool: 't', toolUseId: 'toolu_1', attempt: 1, outcome: 'ok', durationMs: 3 });
    bus.publish(delta('s', 'x', 1, 2));
    bus.publish(delta('s', 'y', 1, 1));
    unsubscribe();
    bus.publish(delta('s', 'z', 1, 3));
    expect(brief(seen)).toEqual(['tool_finished', '1/2:x']);
  });
});

// ---------------------------------------------------------------------------------------------------
// The scripted model streaming, and callModel on it (in a mock activity context: no Temporal needed).

const reply = 'The order ord_1001 was refunded in full; you will see it on your card in 3–5 days.';
const scenarios: Scenario[] = [
  {
    name: 'stream-cut',
    description: 'Overloaded mid-stream after two chunks once, then streams the whole reply.',
    turns: [{ content: [{ type: 'text', text: reply }], stop_reason: 'end_turn', stream_chunk_ms: 5, faults: [{ status: 529, times: 1, after_chunks: 2 }], usage: { input_tokens: 50, output_tokens: 20, cache_creation_input_tokens: 7, cache_read_input_tokens: 11 } }],
  },
  {
    name: 'stream-529',
    description: 'Overloaded (HTTP 529) before the stream once, then answers.',
    turns: [{ content: [{ type: 'text', text: 'fine now' }], stop_reason: 'end_turn', faults: [{ status: 529, times: 1 }] }],
  },
  {
    name: 'stream-slow',
    description: 'Streams with 30 ms between chunks.',
    turns: [{ content: [{ type: 'text', text: 'x'.repeat(24 * 5) }], stop_reason: 'end_turn', stream_chunk_ms: 30 }],
  },
];

describe('the scripted model, streamed', () => {
  let server: ScriptedModelServer;
  let client: Anthropic;
  beforeAll(async () => {
    server = await startScriptedModel({ scenarioDirs: [], scenarios });
    client = new Anthropic({ baseURL: server.url, apiKey: 'test', maxRetries: 0 });
  });
  afterAll(() => server.close());
  const hello: Anthropic.MessageParam[] = [{ role: 'user', content: 'Hello' }];

  it('fails mid-stream like the real API: two deltas, then an overloaded_error event; the retry streams it all, with the same usage', async () => {
    const request = { model: 'scripted/stream-cut', max_tokens: 100, messages: hello, metadata: { user_id: `cut-${randomUUID()}` } };
    const texts: string[] = [];
    const stream = client.messages.stream(request).on('text', (t) => texts.push(t));
    const err = await stream.finalMessage().then(() => undefined, (e: unknown) => e);
    expect(texts).toEqual([reply.slice(0, 24), reply.slice(24, 48)]);
    expect(err).toBeInstanceOf(Anthropic.APIError);
    expect(err).toMatchObject({ status: undefined, type: 'overloaded_error' });
    const streamed = await client.messages.stream(request).finalMessage();
    const plain = await client.messages.create(request);
    expect(streamed.content).toEqual(plain.content);
    expect(streamed.usage).toMatchObject({ input_tokens: 50, output_tokens: 20, cache_creation_input_tokens: 7, cache_read_input_tokens: 11 });
    expect(streamed.usage).toMatchObject(plain.usage);
  });

  it('spaces chunks by stream_chunk_ms', async () => {
    const at: number[] = [];
    await client.messages.stream({ model: 'scripted/stream-slow', max_tokens: 100, messages: hello }).on('text', () => at.push(performance.now())).finalMessage();
    expect(at).toHaveLength(5);
    expect(at.at(-1)! - at[0]!).toBeGreaterThanOrEqual(4 * 25);
  });

  it('refuses retry_after_ms with after_chunks: a begun stream has no headers left to carry it', async () => {
    const bad = { name: 'bad', description: '', turns: [{ content: [], stop_reason: 'end_turn', faults: [{ status: 429, times: 1, after_chunks: 1, retry_after_ms: 100 }] }] };
    await expect(startScriptedModel({ scenarioDirs: [], scenarios: [bad as Scenario] })).rejects.toThrow(/retry_after_ms cannot go with after_chunks/);
  });
});

describe('callModel, streaming', () => {
  let server: ScriptedModelServer;
  let store: KeelStore;
  let bus: StreamBus;
  let model: ReturnType<typeof createModelActivities>;
  beforeAll(async () => {
    server = await startScriptedModel({ scenarioDirs: [], scenarios });
    store = openSqliteStore(path.join(scratch, 'model', 'keel.sqlite'));
    bus = createMemoryStreamBus();
    model = createModelActivities({ store, stream: bus, apiKey: 'test', baseURL: server.url });
  });
  afterAll(async () => {
    await server.close();
    await store.close();
    await bus.close();
  });

  const input = (scenario: string, sessionId: string): CallModelInput => ({
    model: `scripted/${scenario}`,
    conversation: { id: sessionId, stored: 0, append: [{ role: 'user', content: 'Where is my refund?' }] },
    tools: [],
    maxTokens: 200,
    sessionId,
  });
  /** Runs callModel as attempt `attempt`; returns its outcome and what the session's watcher saw. */
  const attempt = async (scenario: string, sessionId: string, n: number, seen: SessionStreamEvent[]) => {
    const env = mockActivity({ attempt: n });
    const unsubscribe = await subscribeSession(bus, sessionId, (e) => seen.push(e));
    try {
      return await env.run(model.callModel, input(scenario, sessionId)).then((output) => ({ output }), (error: unknown) => ({ error }));
    } finally {
      unsubscribe();
    }
  };

  it('classifies an error event mid-stream as a retryable ModelUnavailable, withdraws its text, and returns what it returned before', async () => {
    const sessionId = `cut-${randomUUID()}`;
    const seen: SessionStreamEvent[] = [];
    const first = await attempt('stream-cut', sessionId, 1, seen);
    expect('error' in first && first.error).toBeInstanceOf(ApplicationFailure);
    const failure = (first as { error: ApplicationFailure }).error;
    expect(failure).toMatchObject({ type: 'ModelUnavailable', nonRetryable: false });
    expect(failure.message).toContain('overloaded_error');
    const second = await attempt('stream-cut', sessionId, 2, seen);
    expect(second).toEqual({
      output: {
        id: expect.stringMatching(/^msg_/),
        model: 'scripted/stream-cut',
        content: [{ type: 'text', text: reply }],
        stopReason: 'end_turn',
        usage: { input_tokens: 50, output_tokens: 20, cache_creation_input_tokens: 7, cache_read_input_tokens: 11 },
      },
    });
    // The turn is the reply's conversation position (after the one user message): 1 on both attempts.
    expect(seen.map((e) => `${e.type} ${'attempt' in e ? e.attempt : ''}`)).toEqual([
      'text_delta 1', 'text_delta 1', 'retract 1', 'attempt_failed 1', ...Array.from({ length: Math.ceil(reply.length / 24) }, () => 'text_delta 2'),
    ]);
    expect(seen.every((e) => 'turn' in e && e.turn === 1)).toBe(true);
    expect(shownText(seen).get(1)).toBe(reply);
    // The reply is stored exactly once, at its position.
    expect(await store.read(sessionId, 2)).toEqual([{ role: 'user', content: 'Where is my refund?' }, { role: 'assistant', content: [{ type: 'text', text: reply }] }]);
  });

  it('classifies an HTTP 529 before the stream as a retryable ModelUnavailable with its status', async () => {
    const sessionId = `529-${randomUUID()}`;
    const seen: SessionStreamEvent[] = [];
    const first = await attempt('stream-529', sessionId, 1, seen);
    expect((first as { error: ApplicationFailure }).error).toMatchObject({ type: 'ModelUnavailable', nonRetryable: false, details: [{ status: 529 }] });
    expect(seen.map((e) => e.type)).toEqual(['attempt_failed']);
    expect((seen[0] as { error: string }).error).toMatch(/^model API 529 error/);
    expect(await attempt('stream-529', sessionId, 2, seen)).toMatchObject({ output: { content: [{ type: 'text', text: 'fine now' }] } });
  });

  it('classifies the SDK errors as before: statuses decide, then a mid-stream type', () => {
    const headers = new Headers();
    const classified = (e: unknown) => classifyModelError(e) as ApplicationFailure;
    expect(classified(Anthropic.APIError.generate(529, { type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } }, undefined, headers))).toMatchObject({ type: 'ModelUnavailable', nonRetryable: false });
    expect(classified(Anthropic.APIError.generate(400, { type: 'error', error: { type: 'invalid_request_error', message: 'bad' } }, undefined, headers))).toMatchObject({ type: 'ModelRequestRejected', nonRetryable: true });
    expect(classified(new Anthropic.APIError(undefined, { type: 'error', error: { type: 'api_error', message: 'Internal' } }, undefined, headers))).toMatchObject({ type: 'ModelUnavailable', nonRetryable: false });
    expect(classified(new Anthropic.APIConnectionError({ message: 'Connection error.' }))).toMatchObject({ type: 'ModelUnavailable', nonRetryable: false });
  });

  it('publishes nothing without a bus, and returns the same', async () => {
    const quiet = createModelActivities({ store, apiKey: 'test', baseURL: server.url });
    const sessionId = `quiet-${randomUUID()}`;
    const seen: StreamEvent[] = [];
    await bus.subscribe(sessionId, (e) => seen.push(e));
    const out: CallModelOutput = await mockActivity().run(quiet.callModel, input('stream-slow', sessionId));
    expect(out.content).toEqual([{ type: 'text', text: 'x'.repeat(120) }]);
    expect(seen).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------------
// Tool activities.

describe('tool activities on the stream', () => {
  let store: KeelStore;
  let bus: StreamBus;
  beforeAll(() => {
    store = openSqliteStore(path.join(scratch, 'tools', 'keel.sqlite'));
    bus = createMemoryStreamBus();
  });
  afterAll(async () => {
    await store.close();
    await bus.close();
  });

  const crawl = defineTool({
    name: 'crawl_site',
    description: 'Crawls a site. Read-only.',
    input: z.object({ url: z.string(), apiToken: z.string(), fail: z.boolean().default(false) }),
    risk: 'read',
    sensitive: ['apiToken'],
    breaker: false,
    run: async ({ apiToken, fail }, ctx) => {
      ctx.progress(`page 1 of 2 (as ${apiToken}, for ada@example.com)`);
      ctx.progress('page 2 of 2\nalmost done');
      if (fail) throw new ToolError('the site refused us');
      return { pages: ['secret-page-body'] };
    },
  });
  const request = (fail: boolean): ToolActivityInput => ({
    input: { url: 'https://intranet.example/private-path', apiToken: 'tok-9f8e7d6c5b', fail },
    idempotencyKey: 'k',
    toolUseId: 'toolu_crawl_1',
    session: { workflowId: `tools-${randomUUID()}`, userId: 'u1', roles: [] },
  });

  it('publishes the call and its progress, redacted and without the input or the result, and heartbeats on progress', async () => {
    const activities = createToolActivities([crawl], { store, stream: bus, env: {} });
    const req = request(false);
    const seen: StreamEvent[] = [];
    await bus.subscribe(req.session.workflowId, (e) => seen.push(e));
    const env = mockActivity({ attempt: 2 });
    let heartbeats = 0;
    env.on('heartbeat', () => (heartbeats += 1));
    await env.run(activities.crawl_site!, req);
    expect(seen.map((e) => e.type)).toEqual(['tool_started', 'tool_progress', 'tool_progress', 'tool_finished']);
    for (const e of seen) expect(e).toMatchObject({ tool: 'crawl_site', toolUseId: 'toolu_crawl_1', attempt: 2, sessionId: req.session.workflowId });
    expect(seen.slice(1, 3).map((e) => (e as { message: string }).message)).toEqual(['page 1 of 2 (as [redacted], for a***@example.com)', 'page 2 of 2 almost done']);
    expect(seen[3]).toMatchObject({ outcome: 'ok', durationMs: expect.any(Number) });
    expect(heartbeats).toBeGreaterThanOrEqual(2);
    const wire = JSON.stringify(seen);
    for (const secret of ['tok-9f8e7d6c5b', 'private-path', 'secret-page-body', 'ada@']) expect(wire).not.toContain(secret);
  });

  it('finishes with outcome error when the tool fails', async () => {
    const activities = createToolActivities([crawl], { store, stream: bus, env: {} });
    const req = request(true);
    const seen: StreamEvent[] = [];
    await bus.subscribe(req.session.workflowId, (e) => seen.push(e));
    await expect(mockActivity().run(activities.crawl_site!, req)).rejects.toMatchObject({ type: 'ToolError' });
    expect(seen.at(-1)).toMatchObject({ type: 'tool_finished', outcome: 'error' });
  });
});

// ---------------------------------------------------------------------------------------------------
// End to end: a real worker on the real Temporal server, the scripted model, a watcher on the env's bus.

describe('a session streamed end to end', () => {
  const answer = 'Durable means able to survive a crash without losing progress; Keel runs each step as a Temporal activity, so a retry picks up where it stopped.';
  const e2e: Scenario = {
    name: 'stream-e2e',
    description: 'Looks a word up (streaming a line first), then answers; the answer is cut mid-stream by a 529 once.',
    turns: [
      { content: [{ type: 'text', text: 'Let me look that up.' }, { type: 'tool_use', name: 'define_word', input: { word: 'durable' } }], stop_reason: 'tool_use' },
      { content: [{ type: 'text', text: answer }], stop_reason: 'end_turn', stream_chunk_ms: 20, faults: [{ status: 529, times: 1, after_chunks: 2 }] },
    ],
  };
  let env: TestEnv;
  beforeAll(async () => {
    env = await createTestEnv({
      tools: TEST_APP_TOOLS,
      scenarioDirs: [],
      scenarios: [e2e],
      temporalAddress: inject('temporalAddress'),
      workflowBundle: { codePath: inject('testAppBundlePath') },
    });
  });
  afterAll(() => env?.close());

  it('shows attempt 1, its retraction, then attempt 2 whole: the answer, once, as it was generated', async () => {
    const { sessionId } = await env.client.startSession({ prompt: 'What does durable mean?', user: { id: 'teammate-1' }, model: 'scripted/stream-e2e', modelRetry: { initialInterval: '50ms' } });
    const seen: Array<SessionStreamEvent & { receivedAt: number }> = [];
    const unsubscribe = await subscribeSession(env.stream, sessionId, (e) => seen.push({ ...e, receivedAt: performance.now() }));
    const result = await env.withWorker(() => env.client.result(sessionId));
    const finishedAt = performance.now();
    unsubscribe();

    const turns = [...new Set(seen.flatMap((e) => ('turn' in e ? [e.turn] : [])))];
    expect(turns).toHaveLength(2);
    const last = Math.max(...turns);
    const ofLast = seen.filter((e) => 'turn' in e && e.turn === last);
    const chunks = Math.ceil(answer.length / 24);
    expect(ofLast.map((e) => `${e.type} ${(e as { attempt: number }).attempt}`)).toEqual([
      'text_delta 1', 'text_delta 1', 'retract 1', 'attempt_failed 1', ...Array.from({ length: chunks }, () => 'text_delta 2'),
    ]);
    const shown = shownText(seen);
    expect(shown.get(last)).toBe(answer);
    expect(result.answer).toBe(answer);
    expect(shown.get(Math.min(...turns))).toBe('Let me look that up.');

    // Streamed as generated: attempt 2's chunks came 20 ms apart, and the first well before the session ended.
    const second = ofLast.filter((e) => e.type === 'text_delta' && e.attempt === 2);
    expect(second.at(-1)!.at - second[0]!.at).toBeGreaterThanOrEqual((chunks - 1) * 15);
    expect(finishedAt - second[0]!.receivedAt).toBeGreaterThanOrEqual((chunks - 1) * 15);

    // The tool call between the turns, by name and tool_use id only.
    const tool = seen.filter((e) => e.type.startsWith('tool_'));
    expect(tool.map((e) => e.type)).toEqual(['tool_started', 'tool_finished']);
    expect(tool[1]).toMatchObject({ tool: 'define_word', toolUseId: result.toolCalls[0]!.toolUseId, attempt: 1, outcome: 'ok' });
    expect(JSON.stringify(tool)).not.toContain('crash without losing progress'); // the glossary's result
  });
});
