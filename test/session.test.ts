/**
 * An agent session end to end on a real Temporal dev server, the real Anthropic SDK against the scripted
 * model, and the demo services: the loop, parallel tool calls, activities named after tools, bad model
 * output as is_error results, Temporal-owned retries of the model call, graceful degradation, the
 * per-tool log line and what the Web UI shows.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { SessionInputError, failureMessage } from '../src/client.js';
import { EAGER_ACTIVITIES_PER_TASK } from '../src/worker.js';
import { KeelStatus, KeelToolsUsed } from '../src/workflows/search-attributes.js';
import { approveUntilDone, historyEvents, scheduledActivities, startHarness, type Harness } from './support/harness.js';

let h: Harness;
/** The refund demo's session, whose log lines a later test reads. */
let demoSessionId = '';
beforeAll(async () => {
  h = await startHarness('session');
});
afterAll(async () => {
  await h?.close();
});

const user = { id: 'agent-operator-1', roles: ['support'] };

/** The Keel search attributes each UpsertWorkflowSearchAttributes event sets, sorted (patch markers' TemporalChangeVersion left out). */
function keelUpserts(events: Awaited<ReturnType<typeof historyEvents>>): string[][] {
  return events
    .map((e) => Object.keys(e.upsertWorkflowSearchAttributesEventAttributes?.searchAttributes?.indexedFields ?? {}).filter((k) => k.startsWith('Keel')).sort())
    .filter((keys) => keys.length > 0);
}


describe('agentSession', () => {
  it('plays the refund demo to its answer, with one refund and one email in the ledger', async () => {
    const { sessionId } = await h.client.startSession({ prompt: 'My keyboard arrived damaged, order ord_1001.', user, model: 'scripted/refund-demo' });
    const [result, approved] = await h.withWorker(() => Promise.all([h.client.result(sessionId), approveUntilDone(h.client, sessionId)]));
    // The refund and the email are irreversible: each waited for a person.
    expect(approved).toEqual(['issue_refund-1', 'send_email-1']);

    expect(result.stopReason).toBe('end_turn');
    expect(result.answer).toContain('refunded the full 129.00 USD');
    expect(result.iterations).toBe(5);
    expect(result.toolCalls.map((t) => `${t.name}:${t.outcome}`)).toEqual([
      'lookup_customer:ok',
      'get_order:ok',
      'search_kb:ok',
      'issue_refund:ok',
      'send_email:ok',
    ]);
    expect(result.usage.input_tokens).toBeGreaterThan(0);

    const ledger = await h.demoApi.ledger();
    const refunds = ledger.refunds.filter((r) => r.idempotency_key?.startsWith(sessionId));
    expect(refunds).toHaveLength(1);
    expect(refunds[0]).toMatchObject({ order_id: 'ord_1001', amount_cents: 12900 });
    expect(refunds[0]!.idempotency_key).toBe(result.toolCalls[3]!.idempotencyKey);
    expect(ledger.emails.filter((e) => e.idempotency_key?.startsWith(sessionId))).toHaveLength(1);

    // Activities are named after tools, so the Web UI reads like the conversation.
    const events = await historyEvents(h, sessionId);
    expect(scheduledActivities(events)).toEqual([
      'callModel', 'lookup_customer', 'get_order', 'callModel', 'search_kb', 'callModel', 'issue_refund', 'callModel', 'send_email', 'callModel',
    ]);
    // The two tool calls of turn 1 were scheduled together, before either completed: they ran in parallel.
    const idx = (name: string) => events.findIndex((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === name);
    const [a, b] = [idx('lookup_customer'), idx('get_order')];
    const firstToolCompleted = events.findIndex((e, i) => i > Math.min(a, b) && e.activityTaskCompletedEventAttributes);
    expect(Math.max(a, b)).toBeLessThan(firstToolCompleted);
    demoSessionId = sessionId;
  });

  it('sets KeelToolsUsed with the approval wait, not on each new tool', async () => {
    // The refund demo's session (the first test): reads, then an irreversible refund that waits for a person.
    const events = await historyEvents(h, demoSessionId);
    const scheduled = (tool: string) => events.findIndex((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === tool);
    const firstToolsUpdate = events.findIndex((e) => Object.keys(e.upsertWorkflowSearchAttributesEventAttributes?.searchAttributes?.indexedFields ?? {}).includes('KeelToolsUsed'));
    // The reads (lookup_customer, get_order, search_kb) updated nothing; the refund's approval wait carried them.
    expect(firstToolsUpdate).toBeGreaterThan(scheduled('search_kb'));
    expect(firstToolsUpdate).toBeLessThan(scheduled('issue_refund'));
    expect(keelUpserts(events)[0]).toEqual(['KeelPendingApproval', 'KeelStatus', 'KeelToolsUsed']);
    const final = (await h.client.session(demoSessionId).describe()).typedSearchAttributes.get(KeelToolsUsed);
    expect(final).toEqual(['lookup_customer', 'get_order', 'search_kb', 'issue_refund', 'send_email']);
  });

  it('starts up to 16 of a turn\'s tool calls eagerly, with the workflow task that schedules them (the SDK default is 3)', async () => {
    const w = await h.worker();
    try {
      expect(w.worker.options.maxEagerActivityReservationsPerWorkflowTask).toBe(EAGER_ACTIVITIES_PER_TASK);
      expect(EAGER_ACTIVITIES_PER_TASK).toBeGreaterThan(3);
    } finally {
      await w.close();
    }
  });

  it('shows the session in the Web UI: summary, current details, search attributes', async () => {
    const { sessionId, handle } = await h.client.startSession({ prompt: 'Refund please\nsecond line', user, model: 'scripted/overloaded', modelRetry: { initialInterval: '50ms' } });
    const status = await h.withWorker(async () => {
      await handle.result();
      return h.client.status(sessionId);
    });
    const desc = await handle.describe();
    expect(await desc.staticSummary()).toBe('Refund please');
    expect(desc.typedSearchAttributes.get(KeelStatus)).toBe('completed');
    expect(desc.typedSearchAttributes.get(KeelToolsUsed)).toEqual(['get_order']);
    expect(status.state).toBe('completed');
    expect(status.events.map((e) => e.kind)).toEqual(['model', 'tool', 'model']);

    // Each update is a billed action: `running` came with the start, and the read tool rode on the one update at the end.
    const events = await historyEvents(h, sessionId);
    expect(Object.keys(events[0]!.workflowExecutionStartedEventAttributes?.searchAttributes?.indexedFields ?? {})).toContain('KeelStatus');
    expect(keelUpserts(events)).toEqual([['KeelIterations', 'KeelStatus', 'KeelStopReason', 'KeelToolsUsed']]);
  });

  it('turns an unknown tool and schema-breaking arguments into is_error results and goes on', async () => {
    const { sessionId } = await h.client.startSession({ prompt: 'What does ord_1001 cost?', user, model: 'scripted/bad-input' });
    const result = await h.withWorker(() => h.client.result(sessionId));
    expect(result.answer).toBe('Order ord_1001 totals 129.00 USD.');
    expect(result.toolCalls.map((t) => `${t.name}:${t.outcome}`)).toEqual(['delete_everything:rejected', 'get_order:rejected', 'get_order:ok']);
    expect(result.toolCalls[1]!.error).toMatch(/order_id: Invalid input: expected string, received number/);
    // Rejected calls never reached a worker.
    const events = await historyEvents(h, sessionId);
    expect(scheduledActivities(events).filter((n) => n !== 'callModel')).toEqual(['get_order']);
  });

  it('retries a model that answers 529 twice, through Temporal (three attempts of one activity)', async () => {
    const { sessionId } = await h.client.startSession({ prompt: 'Where is ord_1001?', user, model: 'scripted/overloaded', modelRetry: { initialInterval: '100ms' } });
    const result = await h.withWorker(() => h.client.result(sessionId));
    expect(result.answer).toBe('Your order ord_1001 was delivered.');
    const events = await historyEvents(h, sessionId);
    const started = events.filter((e) => e.activityTaskStartedEventAttributes);
    expect(started[0]!.activityTaskStartedEventAttributes!.attempt).toBe(3);
    expect(started[0]!.activityTaskStartedEventAttributes!.lastFailure?.message).toMatch(/529/);
  });

  it('does not retry a request the API rejects (400) and fails the session', async () => {
    const { sessionId } = await h.client.startSession({ prompt: 'hello', user, model: 'scripted/rejected', modelRetry: { initialInterval: '100ms' } });
    const err = await h.withWorker(() => h.client.result(sessionId)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WorkflowFailedError);
    expect(failureMessage(err)).toMatch(/model API 400 error/);
    const events = await historyEvents(h, sessionId);
    expect(events.filter((e) => e.activityTaskStartedEventAttributes)[0]!.activityTaskStartedEventAttributes!.attempt).toBe(1);
    const failure = (err as WorkflowFailedError).cause;
    expect(failure).toBeInstanceOf(ApplicationFailure);
    expect((failure as ApplicationFailure).type).toBe('ModelRequestRejected');
  });

  it('degrades an optional tool that is down to a note the model can proceed with', async () => {
    await h.demoApi.setFault({ endpoint: '/kb', status: 503 });
    try {
      const { sessionId } = await h.client.startSession({ prompt: 'Refund policy?', user, model: 'scripted/kb-down' });
      const result = await h.withWorker(() => h.client.result(sessionId));
      expect(result.stopReason).toBe('end_turn');
      expect(result.toolCalls[0]).toMatchObject({ name: 'search_kb', outcome: 'error' });
      // A read tool is tried three times before it is given up.
      const attempts = h.logLines().filter((l) => l.msg === 'tool call' && l.session === sessionId);
      expect(attempts.map((l) => l.attempt)).toEqual([1, 2, 3]);
      expect(attempts.every((l) => l.success === false)).toBe(true);
    } finally {
      await h.demoApi.clearFaults();
      await h.closeBreakers();
    }
  });

  it('fails the session when a critical tool stays down', async () => {
    await h.demoApi.setFault({ endpoint: '/orders', status: 503 });
    try {
      const { sessionId } = await h.client.startSession({ prompt: 'ord_1001?', user, model: 'scripted/orders-down' });
      const [err, status] = await h.withWorker(async () => [
        await h.client.result(sessionId).catch((e: unknown) => e),
        await h.client.status(sessionId),
      ]);
      expect(err).toBeInstanceOf(WorkflowFailedError);
      expect(failureMessage(err)).toMatch(/critical tool get_order failed after 3 attempt\(s\)/);
      expect(status.state).toBe('failed');
    } finally {
      await h.demoApi.clearFaults();
      await h.closeBreakers();
    }
  });

  it('lets a parallel sibling finish and be recorded before a critical failure fails the session, then undoes it', async () => {
    await h.demoApi.setFault({ endpoint: '/orders', status: 503 });
    await h.demoApi.setFault({ endpoint: 'POST /tickets', latency_ms: 1_500 });
    try {
      const { sessionId } = await h.client.startSession({ prompt: 'ord_1001?', user, model: 'scripted/parallel-partial' });
      const err = await h.withWorker(() => h.client.result(sessionId).catch((e: unknown) => e));
      expect(failureMessage(err)).toMatch(/critical tool get_order failed after 3 attempt\(s\)/);
      // The ticket's call was neither cancelled nor lost: it completed, then its undo ran (in that order).
      const events = await historyEvents(h, sessionId);
      const scheduled = scheduledActivities(events);
      expect(scheduled.filter((a) => a === 'create_ticket')).toHaveLength(1);
      const completedTicket = events.findIndex((e) => e.activityTaskCompletedEventAttributes && events.find((s) => s.eventId?.toString() === e.activityTaskCompletedEventAttributes!.scheduledEventId?.toString())?.activityTaskScheduledEventAttributes?.activityType?.name === 'create_ticket');
      const undoScheduled = events.findIndex((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'create_ticket.compensate');
      expect(completedTicket).toBeGreaterThan(-1);
      expect(undoScheduled).toBeGreaterThan(completedTicket);
      const tickets = (await h.demoApi.ledger()).tickets.filter((t) => t.idempotency_key?.startsWith(sessionId));
      expect(tickets.map((t) => t.status)).toEqual(['closed']);
    } finally {
      await h.demoApi.clearFaults();
      await h.closeBreakers();
    }
  });

  it('stops a runaway model at maxIterations', async () => {
    const { sessionId } = await h.client.startSession({ prompt: 'loop', user, model: 'scripted/runaway', maxIterations: 2 });
    const result = await h.withWorker(() => h.client.result(sessionId));
    expect(result.stopReason).toBe('max_iterations');
    expect(result.iterations).toBe(2);
    expect(result.toolCalls).toHaveLength(2);
  });

  it('writes one structured log line per tool call, with argument keys and never their values', async () => {
    expect(demoSessionId).not.toBe('');
    const lines = h.logLines().filter((l) => l.msg === 'tool call' && l.session === demoSessionId);
    expect(lines.map((l) => l.tool)).toEqual(expect.arrayContaining(['lookup_customer', 'get_order', 'search_kb', 'issue_refund', 'send_email']));
    expect(lines).toHaveLength(5);
    for (const l of lines) {
      expect(l).toMatchObject({ success: true, level: 30 });
      expect(typeof l.duration_ms).toBe('number');
      expect(l.result_bytes as number).toBeGreaterThan(0);
    }
    expect(lines.find((l) => l.tool === 'send_email')!.arg_keys).toEqual(['body', 'subject', 'to']);
    const text = JSON.stringify(lines);
    expect(text).not.toContain('ada@example.com');
    expect(text).not.toContain('cracked case');
  });

  it('refuses an invalid session input at the client, naming the field', async () => {
    await expect(h.client.startSession({ prompt: '', user })).rejects.toThrow(SessionInputError);
    await expect(h.client.startSession({ prompt: 'x', user, maxIterations: 0 })).rejects.toThrow(/maxIterations/);
  });
});
