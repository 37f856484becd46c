/**
 * Tool safety, end to end on the real dev server, the scripted model and the demo services, with the
 * demo services' ledger as the witness: a refund applied downstream whose worker then died is confirmed
 * by its status check, not repeated; the same email asked for twice leaves once; a failing chain and a
 * cancelled session undo their writes last-in-first-out; an undo that fails transiently is retried until
 * it succeeds; a privileged call whose outcome is unknown and that has no status check is reported as
 * unknown, never retried blindly; and the tier rules `defineTool` enforces for undos and status checks.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import { defineTool, ToolDefinitionError } from '../src/tools/index.js';
import { APPROVER, approveUntilDone, historyEvents, scheduledActivities, startHarness, type Harness } from './support/harness.js';
import { killWorkers, sigkill, spawnWorker, until } from './support/processes.js';

let h: Harness;
beforeAll(async () => {
  h = await startHarness('tool-safety');
});
afterEach(async () => {
  await h?.demoApi.clearFaults();
  await h?.closeBreakers();
});
afterAll(async () => {
  await killWorkers();
  await h?.close();
});

const user = { id: 'agent-operator-1', roles: ['support'] };
type HistoryEvent = Awaited<ReturnType<typeof historyEvents>>[number];

/** The attempt recorded in the ActivityTaskStarted events of every activity of one type. */
function startedAttempts(events: HistoryEvent[], activityType: string): number[] {
  const ids = new Set(
    events.filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === activityType).map((e) => String(e.eventId)),
  );
  return events.flatMap((e) => {
    const s = e.activityTaskStartedEventAttributes;
    return s && ids.has(String(s.scheduledEventId)) ? [s.attempt ?? 0] : [];
  });
}

/** How many requests reached a demo endpoint under a (counting) fault. */
async function matched(endpoint: string): Promise<number | undefined> {
  return (await h.demoApi.faults()).find((f) => f.endpoint === endpoint)?.matched;
}

const mine = <T extends { idempotency_key: string | null }>(rows: T[], id: string): T[] => rows.filter((r) => r.idempotency_key?.startsWith(`${id}:`));

/** The compensations a failed session or chain carries in its failure's details. */
const FailureDetailsSchema = z.tuple([
  z.object({ compensations: z.array(z.object({ tool: z.string(), status: z.string(), idempotencyKey: z.string() })) }),
]);

describe('unknown outcomes', () => {
  it('settles a refund applied downstream before its worker died by the status check: exactly one refund, the model hears success', async () => {
    // The payments service commits the refund and never answers. `times: 2` (not 1) keeps the fault
    // listed after the first request, so its counter proves how many refund requests ever arrived; a
    // blind retry would be counted (and hang).
    await h.demoApi.setFault({ endpoint: 'POST /refunds', after_apply: true, hang: true, times: 2 });
    const first = await spawnWorker(h.env);
    const sessionId = `safety-refund-crash-${Date.now()}`;
    const { handle } = await h.client.startSession({ sessionId, prompt: 'Refund 15 USD of ord_1002', user, model: 'scripted/safety-refund-crash' });

    const [request] = await until(async () => {
      const pending = await h.client.pendingApprovals(sessionId).catch(() => []);
      return pending.length ? pending : undefined;
    }, 'the refund approval request');
    expect(request).toMatchObject({ requestId: 'issue_refund-1', tool: 'issue_refund' });
    expect(await h.client.decide(sessionId, { requestId: request!.requestId, decision: 'approve', approver: APPROVER })).toMatchObject({ accepted: true });

    // The refund is in the ledger while the activity still waits for an answer: kill its worker.
    const [refund] = await until(async () => {
      const rows = mine((await h.demoApi.ledger()).refunds, sessionId);
      return rows.length ? rows : undefined;
    }, 'the refund in the ledger');
    await sigkill(first);

    const second = await spawnWorker(h.env);
    try {
      const result = await handle.result();
      expect(result.stopReason).toBe('end_turn');
      expect(result.answer).toBe('I refunded 15.00 USD of order ord_1002.'); // turn 2's expect saw "status":"succeeded"
      const call = result.toolCalls[0]!;
      expect(call).toMatchObject({ name: 'issue_refund', outcome: 'ok', statusChecked: true });
      expect(call.idempotencyKey).toBe(refund!.idempotency_key);

      const ledger = await h.demoApi.ledger();
      expect(mine(ledger.refunds, sessionId)).toHaveLength(1);
      expect(ledger.refunds.filter((r) => r.idempotency_key === call.idempotencyKey)).toHaveLength(1);
      expect(await matched('POST /refunds')).toBe(1);

      // One attempt of the refund (irreversible: never retried), then the status check by key.
      const events = await historyEvents(h, sessionId);
      expect(scheduledActivities(events)).toEqual(['callModel', 'issue_refund', 'issue_refund.status', 'callModel']);
      expect(events.filter((e) => e.activityTaskTimedOutEventAttributes)).toHaveLength(1);
    } finally {
      await sigkill(second);
    }
  }, 90_000);

  it('reports a privileged call with no status check whose outcome is unknown as unknown, and never retries it', async () => {
    // As above, `times: 2` so the counter shows every request that reached the accounts service.
    await h.demoApi.setFault({ endpoint: 'POST /accounts', after_apply: true, hang: true, times: 2 });
    const { sessionId } = await h.client.startSession({ prompt: 'Move cust_002 to pro', user, model: 'scripted/safety-plan-unknown' });
    const admin = { id: 'admin-1', roles: ['admin'] };
    const [result, approved] = await h.withWorker(() => Promise.all([h.client.result(sessionId), approveUntilDone(h.client, sessionId, admin)]));
    expect(approved).toEqual(['set_account_plan-1']);
    expect(result.answer).toMatch(/could not confirm/); // turn 2's expect saw is_error with "outcome UNKNOWN"
    const call = result.toolCalls[0]!;
    expect(call).toMatchObject({ name: 'set_account_plan', outcome: 'unknown', statusChecked: false });
    expect(call.error).toContain('outcome UNKNOWN');
    expect(call.error).toContain('Do not retry it');

    const ledger = await h.demoApi.ledger();
    expect(mine(ledger.plan_changes, sessionId)).toHaveLength(1);
    expect(mine(ledger.plan_changes, sessionId)[0]).toMatchObject({ customer_id: 'cust_002', plan: 'pro' });
    expect(await matched('POST /accounts')).toBe(1);

    const events = await historyEvents(h, sessionId);
    expect(scheduledActivities(events)).toEqual(['callModel', 'set_account_plan', 'callModel']);
    expect(startedAttempts(events, 'set_account_plan')).toEqual([1]);
    expect(events.filter((e) => e.activityTaskTimedOutEventAttributes)).toHaveLength(1);
  }, 60_000);
});

describe('idempotency keys', () => {
  it('sends one email when the model asks twice, in two turns: the second call is deduplicated before approval', async () => {
    // A latency-only fault fails nothing; it counts the requests that reach the outbox.
    await h.demoApi.setFault({ endpoint: 'POST /emails', latency_ms: 1 });
    const { sessionId } = await h.client.startSession({ prompt: 'Email Grace', user, model: 'scripted/safety-email-twice' });
    const [result, approved] = await h.withWorker(() => Promise.all([h.client.result(sessionId), approveUntilDone(h.client, sessionId)]));
    expect(result.answer).toBe('I emailed Grace.');
    expect(approved).toEqual(['send_email-1']);
    const [firstCall, secondCall] = result.toolCalls;
    expect(firstCall).toMatchObject({ name: 'send_email', outcome: 'ok', approvalRequestId: 'send_email-1' });
    expect(firstCall!.deduplicated).toBeUndefined();
    expect(secondCall).toMatchObject({ name: 'send_email', outcome: 'ok', deduplicated: true });
    expect(secondCall!.approvalRequestId).toBeUndefined();
    expect(secondCall!.idempotencyKey).toBe(firstCall!.idempotencyKey);

    expect(mine((await h.demoApi.ledger()).emails, sessionId)).toHaveLength(1);
    expect(await matched('POST /emails')).toBe(1);
    expect(scheduledActivities(await historyEvents(h, sessionId)).filter((n) => n === 'send_email')).toHaveLength(1);
  });

  it('sends one email when the model asks twice in one turn: the second call waits for the first, one approval', async () => {
    await h.demoApi.setFault({ endpoint: 'POST /emails', latency_ms: 1 });
    const { sessionId } = await h.client.startSession({ prompt: 'Email Alan', user, model: 'scripted/safety-email-parallel' });
    const [result, approved] = await h.withWorker(() => Promise.all([h.client.result(sessionId), approveUntilDone(h.client, sessionId)]));
    expect(approved).toEqual(['send_email-1']);
    expect(result.toolCalls[1]).toMatchObject({ deduplicated: true });
    expect(result.toolCalls[0]!.deduplicated).toBeUndefined();
    expect(result.answer).toBe('I emailed Alan.');
    expect(result.toolCalls.map((t) => `${t.name}:${t.outcome}`)).toEqual(['send_email:ok', 'send_email:ok']);
    expect(result.toolCalls[0]!.idempotencyKey).toBeDefined();
    expect(result.toolCalls[1]!.idempotencyKey).toBe(result.toolCalls[0]!.idempotencyKey);
    const emails = mine((await h.demoApi.ledger()).emails, sessionId);
    expect(emails).toHaveLength(1);
    expect(emails[0]).toMatchObject({ to: 'alan@example.com', subject: 'Your plan' });
    // Keel itself ran the tool once: the downstream's Idempotency-Key was not needed to keep it to one.
    expect(await matched('POST /emails')).toBe(1);
    expect(scheduledActivities(await historyEvents(h, sessionId)).filter((n) => n === 'send_email')).toHaveLength(1);
  });
});

describe('saga', () => {
  it('undoes the writes of a session that a budget (maxIterations) ended', async () => {
    const { sessionId } = await h.client.startSession({ prompt: 'Look into my bill', user, model: 'scripted/safety-budget-write', maxIterations: 2 });
    const result = await h.withWorker(() => h.client.result(sessionId));
    expect(result.stopReason).toBe('max_iterations');
    expect(result.compensations).toEqual([expect.objectContaining({ tool: 'create_ticket', status: 'compensated' })]);
    const tickets = mine((await h.demoApi.ledger()).tickets, sessionId);
    expect(tickets).toHaveLength(1);
    expect(tickets[0]!.status).toBe('closed');
  });

  it('undoes step 2 then step 1 when step 3 of a chain fails', async () => {
    const handle = await h.client.startChain({
      user,
      steps: [
        { id: 'ticket', tool: 'create_ticket', input: { customer_id: 'cust_001', subject: 'Damaged keyboard', body: 'Refund requested.' } },
        { id: 'credit', tool: 'apply_credit', input: { customer_id: 'cust_001', amount_cents: 500, reason: 'Sorry for the trouble' } },
        // ord_2001 totals 2999 cents: the payments service refuses (400), a ToolError that fails the step.
        { id: 'refund', tool: 'issue_refund', input: { order_id: 'ord_2001', amount_cents: 999_999, reason: 'More than the order' } },
      ],
    });
    const chainId = handle.workflowId;
    const [err, approved] = await h.withWorker(() => Promise.all([handle.result().then(() => undefined, (e: unknown) => e), approveUntilDone(h.client, chainId)]));
    expect(approved).toEqual(['issue_refund-1']);
    expect(err).toBeInstanceOf(WorkflowFailedError);
    const failure = (err as WorkflowFailedError).cause;
    expect(failure).toBeInstanceOf(ApplicationFailure);
    expect((failure as ApplicationFailure).type).toBe('ChainStepFailed');
    expect(failure!.message).toMatch(/step refund \(issue_refund\) failed: .*exceeds the refundable amount/);
    const [{ compensations }] = FailureDetailsSchema.parse((failure as ApplicationFailure).details);
    // Records are listed in registration order; each says the undo ran.
    expect(compensations.map((c) => `${c.tool}:${c.status}`)).toEqual(['create_ticket:compensated', 'apply_credit:compensated']);

    const ledger = await h.demoApi.ledger();
    const [ticket] = mine(ledger.tickets, chainId);
    const [credit] = mine(ledger.credits, chainId);
    expect(ticket).toMatchObject({ status: 'closed', close_reason: 'compensated: session did not complete' });
    expect(credit).toMatchObject({ status: 'revoked', amount_cents: 500 });
    expect(mine(ledger.refunds, chainId)).toHaveLength(0);
    expect(credit!.revoked_at! <= ticket!.closed_at!).toBe(true);

    // Last in, first out: the credit's undo ran (was scheduled and completed) before the ticket's.
    const events = await historyEvents(h, chainId);
    expect(scheduledActivities(events)).toEqual(['create_ticket', 'apply_credit', 'issue_refund', 'apply_credit.compensate', 'create_ticket.compensate']);
    const completedOf = (type: string) => {
      const sched = events.find((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === type)!;
      return events.findIndex((e) => String(e.activityTaskCompletedEventAttributes?.scheduledEventId) === String(sched.eventId));
    };
    expect(completedOf('apply_credit.compensate')).toBeGreaterThan(0);
    expect(completedOf('apply_credit.compensate')).toBeLessThan(completedOf('create_ticket.compensate'));
  });

  it('passes an earlier step\'s result to a later step through {{steps.<id>.<path>}}, and undoes nothing when the chain succeeds', async () => {
    const handle = await h.client.startChain({
      user,
      steps: [
        { id: 'ticket', tool: 'create_ticket', input: { customer_id: 'cust_002', subject: 'Wrong size', body: 'Exchange requested.' } },
        { tool: 'apply_credit', input: { customer_id: '{{steps.ticket.customer_id}}', amount_cents: 300, reason: '{{steps.ticket.id}}' } },
      ],
    });
    const result = await h.withWorker(() => handle.result());
    const ticketId = (result.steps[0]!.result as { id: string }).id;
    expect(ticketId).toMatch(/\w+_\d+/);
    expect(result.steps[1]).toMatchObject({ id: '1', tool: 'apply_credit', result: { reason: ticketId, customer_id: 'cust_002' } });
    expect(result.compensations.map((c) => `${c.tool}:${c.status}`)).toEqual(['create_ticket:pending', 'apply_credit:pending']);
    const ledger = await h.demoApi.ledger();
    expect(mine(ledger.credits, handle.workflowId)).toEqual([expect.objectContaining({ reason: ticketId, status: 'active' })]);
    expect(mine(ledger.tickets, handle.workflowId)).toEqual([expect.objectContaining({ id: ticketId, status: 'open' })]);
  });

  it('retries an undo that fails transiently until it succeeds', async () => {
    // Matches the close (POST /tickets/<id>/close), not the create (POST /tickets).
    await h.demoApi.setFault({ endpoint: 'POST /tickets/', status: 503, times: 2 });
    const handle = await h.client.startChain({
      user,
      steps: [
        { id: 'ticket', tool: 'create_ticket', input: { customer_id: 'cust_003', subject: 'Lost parcel', body: 'Parcel not delivered.' } },
        // No such order: the orders service answers 404, a ToolError that fails the step.
        { tool: 'get_order', input: { order_id: 'ord_9999' } },
      ],
    });
    const err = await h.withWorker(() => handle.result().then(() => undefined, (e: unknown) => e));
    expect(err).toBeInstanceOf(WorkflowFailedError);
    const failure = (err as WorkflowFailedError).cause as ApplicationFailure;
    expect(failure.message).toMatch(/step 1 \(get_order\) failed: .*404/);
    const [{ compensations }] = FailureDetailsSchema.parse(failure.details);
    expect(compensations.map((c) => `${c.tool}:${c.status}`)).toEqual(['create_ticket:compensated']);

    const events = await historyEvents(h, handle.workflowId);
    expect(startedAttempts(events, 'create_ticket.compensate')).toEqual([3]);
    const lastFailure = events.find((e) => e.activityTaskStartedEventAttributes?.attempt === 3)!.activityTaskStartedEventAttributes!.lastFailure;
    expect(lastFailure?.message).toMatch(/failed \(503\)/);
    expect(await h.demoApi.faults()).toEqual([]); // both injected failures were used up
    expect(mine((await h.demoApi.ledger()).tickets, handle.workflowId)).toEqual([expect.objectContaining({ status: 'closed' })]);
  });

  it('undoes a cancelled session\'s writes', async () => {
    const { sessionId, handle } = await h.client.startSession({ prompt: 'Sort out the double charge', user, model: 'scripted/safety-cancel' });
    const { failed: err, status } = await h.withWorker(async () => {
      await until(async () => {
        const l = await h.demoApi.ledger();
        return mine(l.tickets, sessionId).length && mine(l.credits, sessionId).length ? true : undefined;
      }, 'the ticket and the credit');
      await h.client.cancel(sessionId);
      const failed = await handle.result().then(() => undefined, (e: unknown) => e);
      // A closed session's status is replayed from its history by a worker.
      return { failed, status: await h.client.status(sessionId) };
    });
    expect(err).toBeInstanceOf(WorkflowFailedError);
    expect((err as WorkflowFailedError).cause).toBeInstanceOf(CancelledFailure);
    expect((await handle.describe()).status.name).toBe('CANCELLED');

    const ledger = await h.demoApi.ledger();
    expect(mine(ledger.tickets, sessionId)).toEqual([expect.objectContaining({ status: 'closed' })]);
    expect(mine(ledger.credits, sessionId)).toEqual([expect.objectContaining({ status: 'revoked' })]);
    const names = scheduledActivities(await historyEvents(h, sessionId));
    expect(names.slice(-2)).toEqual(['apply_credit.compensate', 'create_ticket.compensate']);
    expect(status.compensations.map((c) => `${c.tool}:${c.status}`)).toEqual([
      'create_ticket:compensated',
      'apply_credit:compensated',
    ]);
  });
});

describe('defineTool: undo and status-check rules', () => {
  const base = { description: 'x', input: z.object({ a: z.string() }), run: async () => 'ok' };
  const undo = async () => 'undone';
  const check = async () => ({ applied: false as const });

  it('rejects a write with neither compensate nor noCompensation, naming the tool and the rule', () => {
    expect(() => defineTool({ ...base, name: 'upd', risk: 'write' })).toThrow(ToolDefinitionError);
    expect(() => defineTool({ ...base, name: 'upd', risk: 'write' })).toThrow(
      "tool 'upd': a write tool must declare compensate (its undo), or noCompensation with the reason it has none",
    );
    expect(() => defineTool({ ...base, name: 'upd', risk: 'write', noCompensation: '   ' })).toThrow(/tool 'upd': a write tool must declare compensate/);
    expect(defineTool({ ...base, name: 'upd', risk: 'write', compensate: undo }).policy.compensable).toBe(true);
    expect(defineTool({ ...base, name: 'log', risk: 'write', noCompensation: 'an audit line is never removed' }).policy.compensable).toBe(false);
  });

  it('rejects an irreversible or privileged tool with compensate', () => {
    expect(() => defineTool({ ...base, name: 'pay', risk: 'irreversible', compensate: undo })).toThrow(ToolDefinitionError);
    expect(() => defineTool({ ...base, name: 'pay', risk: 'irreversible', compensate: undo })).toThrow(
      /tool 'pay': an irreversible tool cannot be undone, so it takes no compensate/,
    );
    expect(() => defineTool({ ...base, name: 'grant', risk: 'privileged', compensate: undo })).toThrow(/tool 'grant': a privileged tool cannot be undone/);
  });

  it('rejects a read with a status check (or an undo)', () => {
    expect(() => defineTool({ ...base, name: 'look', risk: 'read', statusCheck: check })).toThrow(ToolDefinitionError);
    expect(() => defineTool({ ...base, name: 'look', risk: 'read', statusCheck: check })).toThrow(/tool 'look': a read tool has nothing to compensate or check/);
    expect(() => defineTool({ ...base, name: 'look', risk: 'read', compensate: undo })).toThrow(/tool 'look': a read tool has nothing to compensate or check/);
    expect(defineTool({ ...base, name: 'pay', risk: 'irreversible', statusCheck: check }).policy.hasStatusCheck).toBe(true);
  });
});
