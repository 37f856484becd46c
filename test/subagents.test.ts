/**
 * Sub-agents as child workflows (issue 13, part 1), against the real Temporal server, the scripted model
 * and the support-desk demo services, with the ledger as witness. The `desk` agent (test/fixtures/
 * subagent-tools.ts) delegates to specialists, each scripted here turn by turn: two delegations of one model
 * turn run as two child sessions side by side, and an approval inside one is listed and decided like any
 * other; the parent's budget bounds what a child may spend and the child's spend rolls up into the parent's
 * result; cancelling the parent cancels its running children (their sagas undo their writes) and the
 * parent's saga undoes the writes of a child that had already completed. The app check refuses unknown
 * sub-agents and agents that delegate in a circle.
 */
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { z } from 'zod';
import { AppDefinitionError, appFromModule, defineAgent, defineTool } from '../src/workflow.js';
import { demoClient, startDemoServices, type DemoServices } from '../examples/support-desk/services/index.js';
import { createTestEnv, type TestEnv } from '../src/testing/index.js';
import type { Scenario } from '../src/testing/scripted/scenario.js';
import type { SessionResult } from '../src/workflows/types.js';
import { ROOT } from './support/paths.js';

const SUBAGENT_TOOLS = path.join(ROOT, 'test', 'fixtures', 'subagent-tools.ts');
const user = { id: 'agent-7', roles: ['support'] };
const approver = { id: 'manager-1', roles: ['approver'] };
const tokens = (input: number, output: number) => ({ input_tokens: input, output_tokens: output });
const use = (name: string, input: Record<string, unknown>) => ({ type: 'tool_use' as const, name, input });
const say = (text: string) => ({ type: 'text' as const, text });

const scenarios: Scenario[] = [
  // The desk: one model turn with two delegations, then an answer from both results.
  {
    name: 'desk-parallel',
    description: 'Delegates a credit to billing and a ticket and email to shipping, in one turn.',
    turns: [
      {
        content: [
          say('Billing credits the customer while shipping opens a ticket and emails them.'),
          use('delegate_to_billing', { task: 'Credit cust_001 500 cents for the late order ord_1001.' }),
          use('delegate_to_shipping', { task: 'Open a ticket for cust_001 about late order ord_1001, then email ada@example.com that it is on its way.' }),
        ],
        stop_reason: 'tool_use',
        usage: tokens(120, 40),
      },
      {
        expect: { tool_results: [{ tool: 'delegate_to_billing', is_error: false, contains: 'Credited 500 cents' }, { tool: 'delegate_to_shipping', is_error: false, contains: 'emailed' }] },
        content: [say('Ada got a 500-cent credit, a ticket and an email.')],
        stop_reason: 'end_turn',
        usage: tokens(300, 20),
      },
    ],
  },
  {
    name: 'sub-billing',
    description: 'Applies the credit, then says so.',
    turns: [
      { content: [use('apply_credit', { customer_id: 'cust_001', amount_cents: 500, reason: 'late order ord_1001' })], stop_reason: 'tool_use', usage: tokens(80, 15) },
      { expect: { tool_results: [{ is_error: false }] }, content: [say('Credited 500 cents to cust_001.')], stop_reason: 'end_turn', usage: tokens(110, 10) },
    ],
  },
  {
    name: 'sub-shipping',
    description: 'Opens a ticket, emails the customer (a person approves), then says so.',
    turns: [
      {
        content: [use('create_ticket', { customer_id: 'cust_001', subject: 'Late order ord_1001', body: 'The customer reports that ord_1001 is late.' })],
        stop_reason: 'tool_use',
        usage: tokens(90, 25),
      },
      { content: [use('send_email', { to: 'ada@example.com', subject: 'Your order ord_1001', body: 'It is on its way; we opened a ticket.' })], stop_reason: 'tool_use', usage: tokens(130, 30) },
      { expect: { tool_results: [{ is_error: false }] }, content: [say('Ticket opened and the customer emailed.')], stop_reason: 'end_turn', usage: tokens(160, 10) },
    ],
  },
  {
    name: 'sub-refunds',
    description: 'Applies a goodwill credit, then asks for a refund a person must approve.',
    turns: [
      { content: [use('apply_credit', { customer_id: 'cust_002', amount_cents: 200, reason: 'goodwill for ord_2001' })], stop_reason: 'tool_use', usage: tokens(70, 15) },
      { content: [use('issue_refund', { order_id: 'ord_2001', amount_cents: 999, reason: 'mouse arrived broken' })], stop_reason: 'tool_use', usage: tokens(90, 20) },
      { content: [say('Refunded and credited.')], stop_reason: 'end_turn', usage: tokens(100, 5) },
    ],
  },
  // Cancelled while billing has answered and refunds and shipping wait for people; never reaches turn 2.
  {
    name: 'desk-cancel',
    description: 'Delegates to billing, refunds and shipping in one turn.',
    turns: [
      {
        content: [
          use('delegate_to_billing', { task: 'Credit cust_001 500 cents for the late order ord_1001.' }),
          use('delegate_to_refunds', { task: 'Refund ord_2001 (9.99 USD, broken) and give cust_002 a 200-cent goodwill credit.' }),
          use('delegate_to_shipping', { task: 'Open a ticket for cust_001 about late order ord_1001 and email them.' }),
        ],
        stop_reason: 'tool_use',
        usage: tokens(150, 50),
      },
    ],
  },
  // Terminated while refunds and shipping wait for people.
  {
    name: 'desk-park',
    description: 'Delegates to refunds and shipping in one turn.',
    turns: [
      {
        content: [
          use('delegate_to_refunds', { task: 'Refund ord_2001 (9.99 USD, broken) and give cust_002 a 200-cent goodwill credit.' }),
          use('delegate_to_shipping', { task: 'Open a ticket for cust_001 about late order ord_1001 and email them.' }),
        ],
        stop_reason: 'tool_use',
        usage: tokens(150, 50),
      },
    ],
  },
  // The desk with a budget of 4 model calls: it makes one, so the researcher may make the other 3.
  {
    name: 'desk-budget',
    description: 'Delegates research that would run on and on.',
    turns: [{ content: [use('delegate_to_researcher', { task: 'Credit cust_002 300 cents, then find out everything about our customers.' })], stop_reason: 'tool_use', usage: tokens(100, 30) }],
  },
  {
    name: 'sub-researcher',
    description: 'Applies a credit, then looks customers up without end (three turns are all it gets).',
    turns: [
      { content: [use('apply_credit', { customer_id: 'cust_002', amount_cents: 300, reason: 'goodwill, researched' })], stop_reason: 'tool_use', usage: tokens(200, 100) },
      { content: [use('lookup_customer', { customer_id: 'cust_002' })], stop_reason: 'tool_use', usage: tokens(250, 100) },
      { content: [use('lookup_customer', { customer_id: 'cust_001' })], stop_reason: 'tool_use', usage: tokens(300, 100) },
    ],
  },
];

let env: TestEnv;
let demo: DemoServices;
let ledger: ReturnType<typeof demoClient>;
beforeAll(async () => {
  demo = await startDemoServices();
  ledger = demoClient(demo.url);
  env = await createTestEnv({
    tools: SUBAGENT_TOOLS,
    scenarios,
    temporalAddress: inject('temporalAddress'),
    env: { KEEL_DEMO_URL: demo.url, KEEL_DATA_DIR: path.join(ROOT, '.keel', 'test', 'data', `subagents-${randomUUID().slice(0, 8)}`) },
  }).catch(async (err: unknown) => {
    await demo.close();
    throw err;
  });
});
afterAll(async () => {
  await env?.close();
  await demo?.close();
});

/** Polls until `check` returns a value (or fails after `ms`). */
async function waitFor<T>(what: string, check: () => Promise<T | undefined>, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const childResult = (workflowId: string) => env.client.temporal.workflow.getHandle(workflowId).result() as Promise<SessionResult>;
const childStatus = async (workflowId: string) => (await env.client.temporal.workflow.getHandle(workflowId).describe()).status.name;
const sum = (...usages: Array<{ input_tokens: number; output_tokens: number }>) => ({
  input_tokens: usages.reduce((n, u) => n + u.input_tokens, 0),
  output_tokens: usages.reduce((n, u) => n + u.output_tokens, 0),
});
/** The ledger's rows written with keys of this session (its sub-agents' keys begin with its ID too). */
const rowsOf = async (sessionId: string) => {
  const l = await ledger.ledger();
  const mine = <T extends { idempotency_key: string | null }>(rows: T[]) => rows.filter((r) => r.idempotency_key?.startsWith(sessionId));
  return { credits: mine(l.credits), tickets: mine(l.tickets), emails: mine(l.emails), refunds: mine(l.refunds) };
};

describe('sub-agents', () => {
  it('runs two delegations of one turn as parallel child sessions; an approval inside one is listed and decided like any other', async () => {
    const { sessionId, handle } = await env.client.startSession({ prompt: 'Ada’s order ord_1001 is late: make it right', user, agent: 'desk', model: 'scripted/desk-parallel' });
    const { result, listed } = await env.withWorker(async () => {
      // The shipping child parks on send_email; `keel approvals` (this listing) shows it under the child's session.
      const listed = await waitFor('the child approval in the listing', async () => {
        const { pending } = await env.client.listPendingApprovals();
        return pending.find((p) => p.sessionId.startsWith(`${sessionId}.shipping.`));
      });
      expect(await env.client.decide(listed.sessionId, { requestId: listed.requestId, decision: 'approve', approver, reason: 'fine' })).toMatchObject({ accepted: true });
      return { result: await handle.result(), listed };
    });

    expect(listed).toMatchObject({ tool: 'send_email', requestedBy: 'agent-7', status: 'pending' });
    expect(result.answer).toBe('Ada got a 500-cent credit, a ticket and an email.');
    expect(result.toolCalls).toMatchObject([
      { name: 'delegate_to_billing', outcome: 'ok', iteration: 1, subSession: expect.stringMatching(new RegExp(`^${sessionId}\\.billing\\.`)) },
      { name: 'delegate_to_shipping', outcome: 'ok', iteration: 1, subSession: listed.sessionId },
    ]);

    // Each child ran as its agent, as the same user, and the Web UI shows it as the parent's child.
    const billingId = result.toolCalls[0]!.subSession!;
    const [billing, shipping] = await Promise.all([childResult(billingId), childResult(listed.sessionId)]);
    expect(billing).toMatchObject({ agent: 'billing', answer: 'Credited 500 cents to cust_001.', toolCalls: [{ name: 'apply_credit', outcome: 'ok' }] });
    expect(shipping).toMatchObject({ agent: 'shipping', toolCalls: [{ name: 'create_ticket', outcome: 'ok' }, { name: 'send_email', outcome: 'ok', approvalRequestId: listed.requestId }] });
    const described = await env.client.temporal.workflow.getHandle(billingId).describe();
    expect(described.parentExecution?.workflowId).toBe(sessionId);

    // Both children were started before either finished: one turn, side by side.
    const events = (await env.client.session(sessionId).fetchHistory()).events ?? [];
    const started = events.flatMap((e, i) => (e.startChildWorkflowExecutionInitiatedEventAttributes ? [i] : []));
    const firstDone = events.findIndex((e) => e.childWorkflowExecutionCompletedEventAttributes);
    expect(started).toHaveLength(2);
    expect(Math.max(...started)).toBeLessThan(firstDone);

    // The children's tokens roll up into the parent's (its own two turns: 420 in, 60 out).
    expect(result.subAgents).toMatchObject({ sessions: 2, modelCalls: 5, toolCalls: 3, usage: sum(billing.usage, shipping.usage) });
    expect(result.usage).toMatchObject(sum(billing.usage, shipping.usage, tokens(420, 60)));

    // The completed session keeps every write; nothing was undone.
    const rows = await rowsOf(sessionId);
    expect(rows.credits).toMatchObject([{ customer_id: 'cust_001', amount_cents: 500, status: 'active' }]);
    expect(rows.tickets).toMatchObject([{ status: 'open' }]);
    expect(rows.emails).toMatchObject([{ to: 'ada@example.com' }]);
    expect(result.compensations).toMatchObject([{ tool: 'apply_credit', status: 'pending', session: billingId }, { tool: 'create_ticket', status: 'pending' }]);
  });

  it("gives a sub-agent only what the parent's budget has left, and rolls its usage and cost up", async () => {
    const pricing = { 'scripted/desk-budget': { input: 3, output: 15 }, 'scripted/sub-researcher': { input: 1, output: 5 } };
    const { sessionId, handle } = await env.client.startSession({
      prompt: 'Research our customers',
      user,
      agent: 'desk',
      model: 'scripted/desk-budget',
      budget: { iterations: 4 },
      pricing,
    });
    const result = await env.withWorker(() => handle.result());

    // The desk made 1 model call of its 4; the researcher got the other 3 and was stopped after them (its
    // scenario would have gone on: a 4th call would have failed the test with the scripted model's 400).
    const childId = result.toolCalls[0]!.subSession!;
    const child = await childResult(childId);
    expect(child).toMatchObject({ stopReason: 'budget_iterations', iterations: 3, toolCalls: [{ name: 'apply_credit' }, { name: 'lookup_customer' }, { name: 'lookup_customer' }] });
    expect(result.toolCalls).toMatchObject([{ name: 'delegate_to_researcher', outcome: 'error', error: expect.stringContaining('stopped early (budget_iterations)') }]);

    // The parent is out of model calls with the child's counted: it stops without another call.
    expect(result).toMatchObject({ stopReason: 'budget_iterations', iterations: 1, subAgents: { sessions: 1, modelCalls: 3, toolCalls: 3 } });
    // Usage and cost roll up; the child's cost comes from the parent's pricing table.
    const ownCost = (100 * 3 + 30 * 15) / 1e6;
    const childCost = ((200 + 250 + 300) * 1 + 300 * 5) / 1e6;
    expect(child.usage.cost_usd).toBeCloseTo(childCost, 10);
    expect(result.usage).toMatchObject({ input_tokens: 100 + 750, output_tokens: 30 + 300 });
    expect(result.usage.cost_usd).toBeCloseTo(ownCost + childCost, 10);

    // A budget that runs out undoes the writes (the child's own saga did it).
    expect((await rowsOf(sessionId)).credits).toMatchObject([{ customer_id: 'cust_002', amount_cents: 300, status: 'revoked' }]);
    expect(child.compensations).toMatchObject([{ tool: 'apply_credit', status: 'compensated' }]);
  });

  it("cancelling the parent cancels its running sub-agents and undoes every child's writes", async () => {
    const { sessionId, handle } = await env.client.startSession({ prompt: 'Sort out Ada and Grace', user, agent: 'desk', model: 'scripted/desk-cancel' });
    const parentUndos = await env.withWorker(async () => {
      // Refunds and shipping each made a write and now wait for a person; billing has answered.
      const parked = await waitFor('both approvals', async () => {
        const { pending } = await env.client.listPendingApprovals();
        const mine = pending.filter((p) => p.sessionId.startsWith(`${sessionId}.`));
        return mine.length === 2 ? mine : undefined;
      });
      expect(parked.map((p) => p.tool).sort()).toEqual(['issue_refund', 'send_email']);
      const billing = await waitFor('billing to complete', async () => {
        const children = (await env.client.status(sessionId)).events.filter((e) => e.kind === 'tool' && e.name === 'delegate_to_billing');
        return children.length ? children : undefined;
      });
      expect(billing).toHaveLength(1);
      await env.client.cancel(sessionId);
      await expect(handle.result()).rejects.toThrow();
      // The status query replays the closed session on a worker.
      return (await env.client.status(sessionId)).compensations;
    });

    // The children, by agent, from the parent's history (each ID is the parent's, the agent's and the tool_use id).
    const history = (await env.client.session(sessionId).fetchHistory()).events ?? [];
    const children = new Map(history.flatMap((e) => (e.startChildWorkflowExecutionInitiatedEventAttributes ? [e.startChildWorkflowExecutionInitiatedEventAttributes.workflowId!] : [])).map((id) => [id.slice(sessionId.length + 1).split('.')[0]!, id]));
    expect([...children.keys()].sort()).toEqual(['billing', 'refunds', 'shipping']);
    expect(await childStatus(children.get('refunds')!)).toBe('CANCELLED');
    expect(await childStatus(children.get('shipping')!)).toBe('CANCELLED');
    expect(await childStatus(children.get('billing')!)).toBe('COMPLETED');

    // The ledger: every write of every child undone, nothing irreversible done.
    const rows = await rowsOf(sessionId);
    expect(rows.credits.map((c) => [c.customer_id, c.status]).sort()).toEqual([['cust_001', 'revoked'], ['cust_002', 'revoked']]);
    expect(rows.tickets).toMatchObject([{ status: 'closed' }]);
    expect(rows.emails).toEqual([]);
    expect(rows.refunds).toEqual([]);

    // The completed child's credit was undone by the parent's saga; the cancelled children undid their own.
    expect(parentUndos).toMatchObject([{ tool: 'apply_credit', status: 'compensated', session: children.get('billing') }]);
    const undoneBy = async (id: string) =>
      ((await env.client.temporal.workflow.getHandle(id).fetchHistory()).events ?? []).flatMap((e) => e.activityTaskScheduledEventAttributes?.activityType?.name ?? []).filter((n) => n.endsWith('.compensate'));
    expect(await undoneBy(sessionId)).toEqual(['apply_credit.compensate']);
    expect(await undoneBy(children.get('refunds')!)).toEqual(['apply_credit.compensate']);
    expect(await undoneBy(children.get('shipping')!)).toEqual(['create_ticket.compensate']);
  });

  it('terminating the parent asks its running sub-agents to cancel, so their sagas still undo their writes', async () => {
    const { sessionId, handle } = await env.client.startSession({ prompt: 'Sort out Grace and Ada', user, agent: 'desk', model: 'scripted/desk-park' });
    const children = await env.withWorker(async () => {
      const parked = await waitFor('both approvals', async () => {
        const { pending } = await env.client.listPendingApprovals();
        const mine = pending.filter((p) => p.sessionId.startsWith(`${sessionId}.`));
        return mine.length === 2 ? mine : undefined;
      });
      // No saga of the parent runs on termination: the parent close policy is what reaches the children.
      await handle.terminate('operator stops it');
      const ids = parked.map((p) => p.sessionId);
      await waitFor('the children to be cancelled', async () => ((await Promise.all(ids.map(childStatus))).every((s) => s === 'CANCELLED') ? true : undefined));
      return ids;
    });
    expect(children).toHaveLength(2);
    const rows = await rowsOf(sessionId);
    expect(rows.credits).toMatchObject([{ customer_id: 'cust_002', status: 'revoked' }]);
    expect(rows.tickets).toMatchObject([{ status: 'closed' }]);
    expect([...rows.emails, ...rows.refunds]).toEqual([]);
  });

  it('refuses a module whose agent names an unknown sub-agent, or whose agents delegate in a circle', () => {
    const tool = defineTool({ name: 'noop', description: 'Does nothing. Read-only.', input: z.object({}), risk: 'read', run: async () => ({}) });
    const agent = (name: string, subAgents: string[]) => defineAgent({ name, system: 'x', tools: [tool], subAgents });
    expect(() => appFromModule({ tool, a: agent('a', ['ghost']) })).toThrow(AppDefinitionError);
    expect(() => appFromModule({ tool, a: agent('a', ['ghost']) })).toThrow("agent 'a' names sub-agent 'ghost', which the module does not export");
    expect(() => appFromModule({ tool, a: agent('a', ['b']), b: agent('b', ['c']), c: agent('c', ['a']) })).toThrow('agents delegate in a circle (a → b → c → a)');
    expect(appFromModule({ tool, a: agent('a', ['b']), b: agent('b', []) }).agents.get('a')?.subAgents).toEqual(['b']);
  });
});
