/**
 * Tool chains as a graph (`dependsOn`), on the support-desk example with the demo ledger as witness:
 * independent steps are scheduled together and a step waits for what it depends on; a failure stops the
 * steps that wait for it, lets running siblings finish, and undoes every completed write in reverse of the
 * order the steps started; a bad graph is refused before anything runs, naming the step; and a graph
 * chain's history replays against the current code. `KEEL_UPDATE_GOLDEN=1` writes that history as the
 * golden `test/histories/tool-chain-dag.json`, which test/replay.test.ts replays.
 */
import path from 'node:path';
import { WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { SessionInputError } from '../src/client.js';
import { replayHistory, writeHistoryFile } from '../src/replay.js';
import type { ChainStep } from '../src/workflows/toolChain.js';
import { ROOT, historyEvents, scheduledActivities, startHarness, type Harness } from './support/harness.js';

let h: Harness;
beforeAll(async () => {
  h = await startHarness('dag');
});
afterAll(async () => {
  await h?.close();
});

const user = { id: 'ops-1', roles: ['support'] };
type Events = Awaited<ReturnType<typeof historyEvents>>;

/** The scheduled event of the activity of `type` (the first one). */
function scheduled(events: Events, type: string) {
  const e = events.find((x) => x.activityTaskScheduledEventAttributes?.activityType?.name === type);
  if (!e) throw new Error(`no ${type} in history (scheduled: ${scheduledActivities(events).join(', ')})`);
  return e;
}
/** The position in history where the activity scheduled at `e` completed (or failed). */
function settledAt(events: Events, e: Events[number]): number {
  const id = String(e.eventId);
  return events.findIndex(
    (x) => String(x.activityTaskCompletedEventAttributes?.scheduledEventId ?? x.activityTaskFailedEventAttributes?.scheduledEventId ?? '') === id,
  );
}
const positionOf = (events: Events, e: Events[number]) => events.indexOf(e);
const mine = <T extends { idempotency_key?: string | null }>(rows: T[], id: string) => rows.filter((r) => r.idempotency_key?.startsWith(id));

describe('a chain with dependsOn', () => {
  it('runs independent steps together and a step once what it waits for is done', async () => {
    const steps: ChainStep[] = [
      { id: 'customer', tool: 'lookup_customer', input: { customer_id: 'cust_001' } },
      { id: 'order', tool: 'get_order', input: { order_id: 'ord_1001' }, dependsOn: [] },
      {
        id: 'ticket',
        tool: 'create_ticket',
        input: { customer_id: '{{steps.order.customer_id}}', subject: 'About {{steps.order.id}}', body: 'For {{steps.customer.name}}.' },
        dependsOn: ['customer', 'order'],
      },
    ];
    const handle = await h.client.startChain({ user, steps }, { chainId: `dag-fan-in-${Date.now()}` });
    const result = await h.withWorker(() => handle.result());
    // Results in the order the steps were declared; the ticket used both lookups.
    expect(result.steps.map((s) => s.id)).toEqual(['customer', 'order', 'ticket']);
    const customer = result.steps[0]!.result as { name: string };
    expect(result.steps[2]!.result).toMatchObject({ customer_id: 'cust_001', subject: 'About ord_1001', body: `For ${customer.name}.` });

    const events = await historyEvents(h, handle.workflowId);
    const [lookup, order, ticket] = ['lookup_customer', 'get_order', 'create_ticket'].map((t) => scheduled(events, t));
    // Scheduled together: in the same workflow task's commands, each before the other settled.
    expect(String(lookup!.activityTaskScheduledEventAttributes!.workflowTaskCompletedEventId)).toBe(String(order!.activityTaskScheduledEventAttributes!.workflowTaskCompletedEventId));
    expect(positionOf(events, order!)).toBeLessThan(settledAt(events, lookup!));
    expect(positionOf(events, lookup!)).toBeLessThan(settledAt(events, order!));
    // The ticket waited for both.
    expect(positionOf(events, ticket!)).toBeGreaterThan(Math.max(settledAt(events, lookup!), settledAt(events, order!)));

    // And its history replays against the current code (test/replay.test.ts replays the golden one).
    const history = await h.client.temporal.workflow.getHandle(handle.workflowId).fetchHistory();
    expect(await replayHistory(history, handle.workflowId, { workflowBundle: { codePath: inject('workflowBundlePath') } })).toMatchObject({ deterministic: true });
    if (process.env.KEEL_UPDATE_GOLDEN === '1') await writeHistoryFile(path.join(ROOT, 'test', 'histories', 'tool-chain-dag.json'), history);
  });

  it('undoes the parallel writes a failed step waited for, the later-started first', async () => {
    const handle = await h.client.startChain(
      {
        user,
        steps: [
          { id: 'ticket', tool: 'create_ticket', input: { customer_id: 'cust_002', subject: 'Missing parcel', body: 'Not delivered.' } },
          { id: 'credit', tool: 'apply_credit', input: { customer_id: 'cust_002', amount_cents: 400, reason: 'Sorry for the wait' }, dependsOn: [] },
          // No such order: the orders service answers 404, a ToolError that fails the step.
          { id: 'order', tool: 'get_order', input: { order_id: 'ord_9999' }, dependsOn: ['ticket', 'credit'] },
        ],
      },
      { chainId: `dag-undo-${Date.now()}` },
    );
    const err = await h.withWorker(() => handle.result().then(() => undefined, (e: unknown) => e));
    expect(err).toBeInstanceOf(WorkflowFailedError);
    const failure = (err as WorkflowFailedError).cause as ApplicationFailure;
    expect(failure.type).toBe('ChainStepFailed');
    expect(failure.message).toMatch(/step order \(get_order\) failed: .*404/);

    const events = await historyEvents(h, handle.workflowId);
    expect(scheduledActivities(events)).toEqual(['create_ticket', 'apply_credit', 'get_order', 'apply_credit.compensate', 'create_ticket.compensate']);
    expect(settledAt(events, scheduled(events, 'apply_credit.compensate'))).toBeLessThan(settledAt(events, scheduled(events, 'create_ticket.compensate')));
    const ledger = await h.demoApi.ledger();
    expect(mine(ledger.tickets, handle.workflowId)).toEqual([expect.objectContaining({ status: 'closed' })]);
    expect(mine(ledger.credits, handle.workflowId)).toEqual([expect.objectContaining({ status: 'revoked' })]);
  });

  it('lets a running sibling write finish and undoes it when a parallel step fails, and starts nothing that waited', async () => {
    const handle = await h.client.startChain(
      {
        user,
        steps: [
          { id: 'ticket', tool: 'create_ticket', input: { customer_id: 'cust_003', subject: 'Wrong colour', body: 'Exchange requested.' } },
          { id: 'order', tool: 'get_order', input: { order_id: 'ord_9999' }, dependsOn: [] },
          { id: 'credit', tool: 'apply_credit', input: { customer_id: 'cust_003', amount_cents: 300, reason: 'goodwill for {{steps.ticket.id}}' }, dependsOn: ['ticket', 'order'] },
        ],
      },
      { chainId: `dag-sibling-${Date.now()}` },
    );
    const err = await h.withWorker(() => handle.result().then(() => undefined, (e: unknown) => e));
    expect(((err as WorkflowFailedError).cause as ApplicationFailure).message).toMatch(/step order \(get_order\) failed/);
    const events = await historyEvents(h, handle.workflowId);
    expect(scheduledActivities(events)).toEqual(['create_ticket', 'get_order', 'create_ticket.compensate']);
    expect(mine((await h.demoApi.ledger()).tickets, handle.workflowId)).toEqual([expect.objectContaining({ status: 'closed' })]);
    expect(mine((await h.demoApi.ledger()).credits, handle.workflowId)).toEqual([]);
  });
});

describe('a bad graph', () => {
  const step = (id: string, dependsOn?: string[], input: Record<string, unknown> = { order_id: 'ord_1001' }): ChainStep => ({ id, tool: 'get_order', input, ...(dependsOn ? { dependsOn } : {}) });
  const start = (steps: ChainStep[]) => h.client.startChain({ user, steps });

  it('is refused before anything starts, naming the step and what is wrong', async () => {
    await expect(start([step('a'), step('b', ['c'])])).rejects.toThrow(new SessionInputError("steps.1.dependsOn.0: no step 'c' (steps: a, b)"));
    await expect(start([step('a', ['a'])])).rejects.toThrow(new SessionInputError("steps.0.dependsOn.0: step 'a' cannot wait for itself"));
    await expect(start([step('a', ['c']), step('b'), step('c')])).rejects.toThrow(
      new SessionInputError('steps.0.dependsOn: steps wait for each other in a cycle: a → c → b → a (each waits for the next)'),
    );
    await expect(start([step('a'), step('a')])).rejects.toThrow(new SessionInputError("steps.1.id: 'a' is the id of step 0 too: ids must be unique"));
    // `b` starts at once (dependsOn: []), so a's result may not exist yet.
    await expect(start([step('a'), step('b', [], { order_id: '{{steps.a.id}}' })])).rejects.toThrow(
      new SessionInputError("steps.1.input: {{steps.a…}} uses the result of step 'a', which step 'b' does not wait for (add it to dependsOn)"),
    );
  });

  it('accepts a reference to a step waited for through another', async () => {
    const handle = await start([step('a'), step('b', ['a']), step('c', ['b'], { order_id: '{{steps.a.id}}' })]);
    await handle.terminate('only the input check was under test');
  });
});
