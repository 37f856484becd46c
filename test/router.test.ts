/**
 * `routeRequest`, on the test app with three more agents (test/fixtures/routing-tools.ts): the routing
 * model is sent the candidates and a forced `route_to_agent` call; its choice runs as a child `agentSession`
 * (its parent is the route) whose result comes back with the decision; an agent that is not a candidate
 * goes to the fallback, or fails the route with `RoutingFailed` and starts nothing; one candidate needs no
 * model call; cancelling a route cancels its session; `keel run --route` follows the chosen session. A
 * captured route history replays against the current code.
 */
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { WorkflowFailedError } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { bundleApp } from '../src/app/load.js';
import { replayHistory } from '../src/replay.js';
import { createTestEnv, type Scenario, type TestEnv } from '../src/testing/index.js';
import { startNotesBoard, type NotesBoard } from './support/notes-board.js';
import { runKeel } from './support/processes.js';
import { ROOT } from './support/paths.js';

const ROUTING_TOOLS = path.join(ROOT, 'test', 'fixtures', 'routing-tools.ts');
const route = (agent: string, reason = 'It fits.') => ({
  content: [{ type: 'tool_use' as const, name: 'route_to_agent', input: { agent, reason } }],
  stop_reason: 'tool_use' as const,
  usage: { input_tokens: 400, output_tokens: 20 },
});

const SCENARIOS: Scenario[] = [
  { name: 'route-glossary', description: 'The router picks glossary.', turns: [route('glossary', 'The user asks what a word means.')] },
  { name: 'route-payroll', description: 'The router names an agent that does not exist.', turns: [route('payroll')] },
  { name: 'route-board', description: 'The router picks board.', turns: [route('board', 'The user wants a note posted.')] },
  {
    name: 'glossary-answer',
    description: 'The glossary agent looks the word up and answers.',
    turns: [
      { content: [{ type: 'tool_use', name: 'define_word', input: { word: 'durable' } }], stop_reason: 'tool_use' },
      { content: [{ type: 'text', text: 'Durable means able to survive a crash without losing progress.' }], stop_reason: 'end_turn', expect: { tool_results: [{ contains: 'survive a crash' }] } },
    ],
  },
  {
    name: 'board-post',
    description: 'The board agent posts a note (a person must approve).',
    turns: [
      { content: [{ type: 'tool_use', name: 'post_note', input: { text: 'Standup moves to 10:00' } }], stop_reason: 'tool_use' },
      { content: [{ type: 'text', text: 'Posted.' }], stop_reason: 'end_turn' },
    ],
  },
];

const quiet = { log() {}, trace() {}, debug() {}, info() {}, warn() {}, error() {} };
let env: TestEnv;
let board: NotesBoard;
let bundleCode: string;
beforeAll(async () => {
  board = await startNotesBoard();
  bundleCode = (await bundleApp(ROUTING_TOOLS, { logger: quiet })).code;
  env = await createTestEnv({
    tools: ROUTING_TOOLS,
    scenarios: SCENARIOS,
    temporalAddress: inject('temporalAddress'),
    workflowBundle: { code: bundleCode },
    env: { NOTES_URL: board.url, KEEL_DATA_DIR: path.join(ROOT, '.keel', 'test', 'data', `router-${randomUUID().slice(0, 8)}`) },
  });
});
afterAll(async () => {
  await env?.close();
  await board?.close();
});

const user = { id: 'teammate-1', roles: ['staff'] };
const candidates = ['glossary', 'board', 'inventory'];

describe('routeRequest', () => {
  it('asks the routing model to choose, runs the chosen agent as a child session, and returns both', async () => {
    const handle = await env.client.route({
      prompt: 'What does durable mean?',
      user,
      agents: candidates,
      model: 'scripted/route-glossary',
      pricing: { 'scripted/route-glossary': { input: 1, output: 5 } },
      session: { model: 'scripted/glossary-answer', idleTimeout: 0 },
    });
    const result = await env.withWorker(() => handle.result());
    const sessionId = `${handle.workflowId}-session`;
    expect(result.route).toMatchObject({ agent: 'glossary', by: 'model', reason: 'The user asks what a word means.', candidates, model: 'scripted/route-glossary', sessionId });
    // 400 input and 20 output tokens at $1 and $5 per million.
    expect(result.route.usage.cost_usd).toBeCloseTo((400 * 1 + 20 * 5) / 1e6, 12);
    expect(result.session).toMatchObject({ agent: 'glossary', stopReason: 'end_turn', answer: 'Durable means able to survive a crash without losing progress.' });

    // The routing model was shown the candidates and made to call the routing tool.
    const asked = env.model.received.find((r) => r.session === handle.workflowId)!;
    expect(asked.toolChoice).toEqual({ type: 'tool', name: 'route_to_agent' });
    const [tool] = asked.tools as Array<{ name: string; input_schema: { properties: { agent: { enum: string[] } } } }>;
    expect(tool!.input_schema.properties.agent.enum).toEqual(candidates);
    expect(asked.system).toContain('- glossary: Explains what words and terms mean, from the team glossary.');
    expect(asked.system).toContain('- inventory: Answers questions about inventory items');

    // The session is the route's child, in history and in its own description.
    const events = (await handle.fetchHistory()).events ?? [];
    const child = events.find((e) => e.startChildWorkflowExecutionInitiatedEventAttributes)!.startChildWorkflowExecutionInitiatedEventAttributes!;
    expect([child.workflowType?.name, child.workflowId]).toEqual(['agentSession', sessionId]);
    expect((await env.client.session(sessionId).describe()).parentExecution?.workflowId).toBe(handle.workflowId);
    expect(await env.withWorker(() => env.client.routeStatus(handle.workflowId))).toMatchObject({ state: 'completed', sessionId, decision: { agent: 'glossary', by: 'model' } });

    // The route's history replays against the current code.
    const history = await handle.fetchHistory();
    expect(await replayHistory(history, handle.workflowId, { workflowBundle: { code: bundleCode } })).toMatchObject({ deterministic: true });
  }, 60_000);

  it('hands a request the model cannot place to the fallback agent', async () => {
    const handle = await env.client.route({
      prompt: 'What does durable mean?',
      user,
      agents: candidates,
      model: 'scripted/route-payroll',
      fallback: 'glossary',
      session: { model: 'scripted/glossary-answer', idleTimeout: 0 },
    });
    const result = await env.withWorker(() => handle.result());
    expect(result.route).toMatchObject({ agent: 'glossary', by: 'fallback', rejected: "the model chose 'payroll', which is not one of glossary, board, inventory" });
    expect(result.session.answer).toMatch(/survive a crash/);
  }, 60_000);

  it('fails with RoutingFailed, starting no session, when there is no fallback', async () => {
    const handle = await env.client.route({ prompt: 'Run payroll', user, agents: candidates, model: 'scripted/route-payroll' });
    const err = await env.withWorker(() => handle.result().then(() => undefined, (e: unknown) => e));
    expect(err).toBeInstanceOf(WorkflowFailedError);
    expect((err as WorkflowFailedError).cause).toMatchObject({
      type: 'RoutingFailed',
      message: "could not route the request: the model chose 'payroll', which is not one of glossary, board, inventory, and there is no fallback agent",
    });
    const events = (await handle.fetchHistory()).events ?? [];
    expect(events.some((e) => e.startChildWorkflowExecutionInitiatedEventAttributes)).toBe(false);
  }, 60_000);

  it('runs the one candidate without asking a model', async () => {
    const before = env.model.received.length;
    const handle = await env.client.route({ prompt: 'What does durable mean?', user, agents: ['glossary'], session: { model: 'scripted/glossary-answer', idleTimeout: 0 } });
    const result = await env.withWorker(() => handle.result());
    expect(result.route).toMatchObject({ agent: 'glossary', by: 'only', usage: { cost_usd: 0 } });
    expect(result.route.model).toBeUndefined();
    // Only the session's two calls reached the model.
    expect(env.model.received.slice(before).map((r) => r.model)).toEqual(['scripted/glossary-answer', 'scripted/glossary-answer']);
  }, 60_000);

  it('refuses an unknown candidate, naming it', async () => {
    const handle = await env.client.route({ prompt: 'x', user, agents: ['glossary', 'payroll'], model: 'scripted/route-glossary' });
    await expect(env.withWorker(() => handle.result())).rejects.toMatchObject({
      cause: { type: 'InvalidSessionInput', message: 'unknown agent(s) payroll (this worker\'s agents: board, glossary, inventory, notes, default)' },
    });
  }, 60_000);

  it('runs from the command line: keel run --route follows the chosen session to its answer', async () => {
    const routeId = `cli-route-${randomUUID().slice(0, 8)}`;
    const args = ['run', '--route', '--candidate', 'glossary', '--candidate', 'board', '--route-model', 'scripted/route-glossary', '--model', 'scripted/glossary-answer', '--session-id', routeId, '--json', 'What does durable mean?'];
    const run = await env.withWorker(() => runKeel(args, env.env));
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toContain(`routed to glossary (The user asks what a word means.); session ${routeId}-session`);
    expect(JSON.parse(run.stdout)).toMatchObject({ sessionId: `${routeId}-session`, status: 'completed', answer: 'Durable means able to survive a crash without losing progress.' });
    const refused = await runKeel(['run', '--route', '--agent', 'glossary', 'x'], env.env);
    expect([refused.code, refused.stderr.trim()]).toEqual([2, 'keel: --route chooses the agent: name the ones it may choose with --candidate']);
  }, 60_000);

  it('cancels its session, and what the session waits for, when the route is cancelled', async () => {
    const handle = await env.client.route({ prompt: 'Post that standup moves to 10:00', user, agents: candidates, model: 'scripted/route-board', session: { model: 'scripted/board-post', idleTimeout: 0 } });
    const sessionId = `${handle.workflowId}-session`;
    const [waited, err] = await env.withWorker(async () => {
      // The session waits for a person to approve the post.
      let pending: Array<{ requestId: string }> = [];
      for (let i = 0; i < 100 && !pending.length; i++) {
        pending = await env.client.pendingApprovals(sessionId).catch(() => []);
        if (!pending.length) await new Promise((r) => setTimeout(r, 100));
      }
      await handle.cancel();
      return [pending.map((p) => p.requestId), await handle.result().then(() => undefined, (e: unknown) => e)] as const;
    });
    expect(waited).toEqual(['post_note-1']);
    expect(err).toBeInstanceOf(WorkflowFailedError);
    expect((await env.client.session(sessionId).describe()).status.name).toBe('CANCELLED');
    expect(board.notes.filter((n) => n.text === 'Standup moves to 10:00')).toEqual([]);
  }, 60_000);
});
