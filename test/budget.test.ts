/**
 * Budgets and cost, on the test app: each unit (model calls, tool calls, input and output tokens, USD,
 * wall time) ends a session as specified: at 100% it stops with `budget_<kind>`; at 90% the model gets
 * one last turn with no tools. Cost comes from the pricing table and shows in the result, the status, the
 * search attribute and the log. A session that a budget stops undoes its writes unless told to keep them.
 * Bad budgets and pricing are refused with a reason.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KeelCostUsd, KeelIterations, KeelStopReason } from '../src/workflows/search-attributes.js';
import type { TestEnv } from '../src/testing/index.js';
import { SessionInputError } from '../src/client.js';
import type { StartSessionOptions } from '../src/client.js';
import { startTestApp, type TestApp } from './support/test-app.js';
import { startHarness, type Harness } from './support/harness.js';

let app: TestApp;
let env: TestEnv;
let h: Harness;
beforeAll(async () => {
  app = await startTestApp();
  env = app.env;
  h = await startHarness('budget');
});
afterAll(async () => {
  await app?.close();
  await h?.close();
});

const user = { id: 'teammate-1' };
/** $1 a call: 1,000 input tokens at $1,000 per million. */
const pricing = { 'scripted/budget-loop': { input: 1000, output: 0 }, 'scripted/budget-slow': { input: 1000, output: 0 } };

async function run(opts: Partial<StartSessionOptions>) {
  const { sessionId, handle } = await env.client.startSession({ prompt: 'Define some words', user, agent: 'notes', model: 'scripted/budget-loop', idleTimeout: 0, maxIterations: 20, ...opts });
  const result = await env.withWorker(() => handle.result());
  return { sessionId, handle, result };
}

describe('a budget at 100% stops the session with budget_<kind>', () => {
  const cases: Array<[string, Partial<StartSessionOptions>, string, number]> = [
    ['model calls', { budget: { iterations: 3 } }, 'budget_iterations', 3],
    // One lookup a call: after two calls the tool-call budget is spent.
    ['tool calls', { budget: { toolCalls: 2 } }, 'budget_toolCalls', 2],
    ['input tokens', { budget: { inputTokens: 2_500 } }, 'budget_inputTokens', 3],
    ['output tokens', { budget: { outputTokens: 250 } }, 'budget_outputTokens', 3],
    ['USD', { budget: { usd: 2.5 }, pricing }, 'budget_usd', 3],
  ];
  it.each(cases)('%s', async (_unit, opts, stopReason, modelCalls) => {
    const { result } = await run(opts);
    expect(result.stopReason).toBe(stopReason);
    expect(result.iterations).toBe(modelCalls);
  }, 60_000);

  it('wall time', async () => {
    const { result } = await run({ model: 'scripted/budget-slow', budget: { wallTime: '1s' } });
    expect(result.stopReason).toBe('budget_wallTime');
    // 350 ms a call: the second second of the session never starts a call.
    expect(result.iterations).toBeLessThanOrEqual(4);
  }, 60_000);
});

describe('near a budget', () => {
  it('at 90% gives the model one last turn with no tools, whose answer stands', async () => {
    const { sessionId, handle, result } = await run({ budget: { usd: 3.2 }, pricing });
    // Calls 1–3 cost $3; 3/3.2 = 94%: call 4 is the last, without tools, and its answer is the session's.
    expect(result).toMatchObject({ stopReason: 'budget_usd', iterations: 4, answer: 'Here is what I found before the budget ran out.' });
    expect(result.usage.cost_usd).toBeCloseTo(4, 6);
    const history = await handle.fetchHistory();
    const lastModelInput = history.events!.filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'callModel').at(-1)!;
    const input = JSON.parse(Buffer.from(lastModelInput.activityTaskScheduledEventAttributes!.input!.payloads![0]!.data!).toString()) as { tools: unknown[]; system: string };
    expect(input.tools).toEqual([]);
    expect(input.system).toMatch(/last turn and no tools are available/);
    // Cost, iterations and why it stopped in the search attributes too.
    const attributes = (await env.client.session(sessionId).describe()).typedSearchAttributes;
    expect([attributes.get(KeelCostUsd), attributes.get(KeelIterations), attributes.get(KeelStopReason)]).toEqual([4, 4, 'budget_usd']);
  }, 60_000);

  it('runs only the tool calls a turn has budget for, then stops', async () => {
    const { result } = await run({ model: 'scripted/budget-parallel', budget: { toolCalls: 1 } });
    // The model asked for two lookups with one left: one ran; the other never reached the tool.
    expect(result.toolCalls.map((t) => `${t.name}:${t.outcome}`)).toEqual(['define_word:ok']);
    expect(result).toMatchObject({ stopReason: 'budget_toolCalls', iterations: 1 });
  }, 60_000);
});

describe('cost', () => {
  it('counts cache reads and writes at their prices, in the result and the status', async () => {
    const { sessionId, result } = await run({ budget: { iterations: 2 }, pricing: { 'scripted/budget-loop': { input: 3, output: 15, cacheWrite: 3.75, cacheRead: 0.3 } } });
    // Two calls of 1,000 input and 100 output tokens: 2 × (1000×3 + 100×15) / 1e6.
    expect(result.usage).toMatchObject({ input_tokens: 2000, output_tokens: 200 });
    expect(result.usage.cost_usd).toBeCloseTo(0.009, 9);
    const [status, metadata] = await env.withWorker(() =>
      Promise.all([env.client.status(sessionId), env.client.session(sessionId).query<{ currentDetails?: string }>('__temporal_workflow_metadata')]),
    );
    expect(status.usage.cost_usd).toBeCloseTo(0.009, 9);
    // The Web UI's details show cost and budget use.
    expect(metadata.currentDetails).toContain('**cost:** $0.0090');
    expect(metadata.currentDetails).toContain('**Budget:** model calls 2/2 (100%)');
  }, 60_000);
});

describe('what a stopped session does with its writes', () => {
  const start = (onExhausted?: 'keep') =>
    h.client.startSession({
      prompt: 'Look into my bill',
      user: { id: 'agent-operator-1', roles: ['support'] },
      model: 'scripted/safety-budget-write',
      budget: { iterations: 2, ...(onExhausted ? { onExhausted } : {}) },
    });
  const ticketsOf = async (sessionId: string) => (await h.demoApi.ledger()).tickets.filter((t) => t.idempotency_key?.startsWith(sessionId));

  it('undoes them by default', async () => {
    const { sessionId, handle } = await start();
    const result = await h.withWorker(() => handle.result());
    expect(result.stopReason).toBe('budget_iterations');
    expect(result.compensations).toMatchObject([{ tool: 'create_ticket', status: 'compensated' }]);
    expect((await ticketsOf(sessionId)).map((t) => t.status)).toEqual(['closed']);
  }, 60_000);

  it("keeps them with onExhausted: 'keep'", async () => {
    const { sessionId, handle } = await start('keep');
    const result = await h.withWorker(() => handle.result());
    expect(result.stopReason).toBe('budget_iterations');
    expect(result.compensations).toMatchObject([{ tool: 'create_ticket', status: 'pending' }]);
    expect((await ticketsOf(sessionId)).map((t) => t.status)).toEqual(['open']);
  }, 60_000);
});

describe('bad budgets and pricing', () => {
  it('refuses a negative budget, naming it', async () => {
    await expect(env.client.startSession({ prompt: 'x', user, agent: 'notes', model: 'scripted/budget-loop', budget: { usd: -1 } })).rejects.toThrow(
      new SessionInputError('budget.usd: Too small: expected number to be >0'),
    );
  });

  it('fails a session whose pricing table lacks its model, saying so', async () => {
    const { handle } = await env.client.startSession({ prompt: 'x', user, agent: 'notes', model: 'scripted/budget-loop', budget: { usd: 1 }, pricing: { 'claude-x': { input: 1, output: 1 } } });
    await expect(env.withWorker(() => handle.result())).rejects.toMatchObject({
      cause: { type: 'InvalidSessionInput', message: "pricing: no price for model 'scripted/budget-loop', which this session uses (its usd budget needs one)" },
    });
  }, 60_000);
});
