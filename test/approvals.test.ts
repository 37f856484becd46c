/**
 * Acceptance tests of human approvals, on real Temporal dev servers: a parked tool call survives a
 * SIGKILLed worker and a restarted server and, once approved, runs exactly once; two parallel
 * irreversible calls are decided separately; an undecided request expires and the model is told (or the
 * session fails, with `failOnReject`); refused decisions (requester, wrong role, unknown request, already
 * decided, invalid payload) change nothing and are recorded; the `keel approvals/approve/reject` CLI;
 * and what the Web UI shows while a session is parked.
 */
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WorkflowFailedError, WorkflowUpdateFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { KeelClient, SessionInputError } from '../src/client.js';
import { loadConfig } from '../src/config.js';
import { resolveTemporalCli, startDevServer, type DevServer } from '../src/devserver/index.js';
import { KeelPendingApproval, KeelStatus } from '../src/workflows/search-attributes.js';
import {
  approvalSignal,
  decideApprovalUpdate,
  statusQuery,
  type ApprovalDecision,
  type ApprovalRequest,
  type SessionStatus,
} from '../src/workflows/types.js';
import { APPROVER, historyEvents, scheduledActivities, startHarness, type Harness } from './support/harness.js';
import { freePort, killWorkers, runKeel, sigkill, spawnWorker, until } from './support/processes.js';

let h: Harness;
const servers: DevServer[] = [];
const tmpDirs: string[] = [];
const clients: KeelClient[] = [];

beforeAll(async () => {
  h = await startHarness('approvals');
});
afterAll(async () => {
  await killWorkers();
  for (const c of clients) await c.close().catch(() => {});
  for (const s of servers) await s.stop();
  for (const d of tmpDirs) await rm(d, { recursive: true, force: true });
  await h?.close();
});

const operator = { id: 'agent-operator-1', roles: ['support'] };

/** The session's pending requests once they are exactly `ids`. */
function pendingIs(client: KeelClient, sessionId: string, ids: string[]): Promise<ApprovalRequest[]> {
  return until(async () => {
    const pending = await client.pendingApprovals(sessionId);
    return pending.map((p) => p.requestId).join(',') === ids.join(',') ? pending : undefined;
  }, `pending approvals ${ids.join(', ')} in ${sessionId}`);
}

/** Waits for the session's search attributes to say it is (or is no longer) waiting for a person. */
function searchAttributesSay(client: KeelClient, sessionId: string, pending: boolean, status: string): Promise<true> {
  return until(async () => {
    const sa = (await client.session(sessionId).describe()).typedSearchAttributes;
    return sa.get(KeelPendingApproval) === pending && sa.get(KeelStatus) === status ? true : undefined;
  }, `search attributes KeelPendingApproval=${pending}, KeelStatus=${status}`);
}

async function ledgerFor(sessionId: string) {
  const ledger = await h.demoApi.ledger();
  const mine = <T extends { idempotency_key: string | null }>(rows: T[]) => rows.filter((r) => r.idempotency_key?.startsWith(`${sessionId}:`));
  return { refunds: mine(ledger.refunds), emails: mine(ledger.emails), planChanges: mine(ledger.plan_changes) };
}

describe('human approvals', () => {
  it('parks durably across a SIGKILLed worker and a restarted server; once approved the refund runs exactly once', async () => {
    const cli = await resolveTemporalCli({ dataDir: path.resolve('.keel') });
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'keel-approvals-'));
    tmpDirs.push(dataDir);
    const port = await freePort();
    const serverOpts = { cliPath: cli.path, dataDir, port, uiPort: null };
    const first = await startDevServer(serverOpts);
    servers.push(first);
    const env = { ...h.env, TEMPORAL_ADDRESS: first.address, KEEL_TASK_QUEUE: `test-approvals-durable-${randomUUID().slice(0, 8)}` };
    let client = await KeelClient.connect(loadConfig(env));
    clients.push(client);

    const worker1 = await spawnWorker(env);
    const sessionId = `approval-durable-${randomUUID()}`;
    await client.startSession({ sessionId, prompt: 'Refund part of ord_1001, the case is cracked.', user: operator, model: 'scripted/approval-refund' });

    const [pending] = await pendingIs(client, sessionId, ['issue_refund-1']);
    expect(pending).toMatchObject({
      requestId: 'issue_refund-1',
      tool: 'issue_refund',
      risk: 'irreversible',
      status: 'pending',
      requestedBy: operator.id,
      // Personal data is masked in what approvers see.
      input: { order_id: 'ord_1001', amount_cents: 500, reason: 'Cracked case reported by a***@example.com' },
    });
    expect(pending!.reason).toMatch(/issue_refund is irreversible: a person with role approver must approve/);
    expect(pending!.decidedBy).toBeUndefined();
    // Default timeout: 24 h.
    expect(Date.parse(pending!.expiresAt) - Date.parse(pending!.requestedAt)).toBe(24 * 3600_000);
    await searchAttributesSay(client, sessionId, true, 'waiting_approval');
    expect((await ledgerFor(sessionId)).refunds).toHaveLength(0);

    // Kill everything: the worker without a chance to clean up, then the server.
    await sigkill(worker1);
    await client.close();
    await first.stop();

    const second = await startDevServer(serverOpts);
    servers.push(second);
    expect(second.address).toBe(first.address);
    client = await KeelClient.connect(loadConfig(env));
    clients.push(client);
    await spawnWorker(env);

    // Still parked, with the same request (rebuilt by replay on the new worker), and nothing ran.
    expect((await client.session(sessionId).describe()).status.name).toBe('RUNNING');
    const [afterRestart] = await pendingIs(client, sessionId, ['issue_refund-1']);
    expect(afterRestart).toEqual(pending);
    expect((await client.session(sessionId).describe()).typedSearchAttributes.get(KeelPendingApproval)).toBe(true);
    expect((await ledgerFor(sessionId)).refunds).toHaveLength(0);

    const outcome = await client.decide(sessionId, { requestId: 'issue_refund-1', decision: 'approve', approver: APPROVER, reason: 'checked the photos' });
    expect(outcome).toEqual({ accepted: true, requestId: 'issue_refund-1', decision: 'approve' });

    const result = await client.result(sessionId);
    expect(result.answer).toBe('Done: I refunded 5.00 USD for order ord_1001.');
    expect(result.toolCalls.map((t) => `${t.name}:${t.outcome}`)).toEqual(['get_order:ok', 'issue_refund:ok']);
    expect(result.toolCalls[1]!.approvalRequestId).toBe('issue_refund-1');

    const { refunds } = await ledgerFor(sessionId);
    expect(refunds).toHaveLength(1);
    expect(refunds[0]).toMatchObject({ order_id: 'ord_1001', amount_cents: 500 });
    expect(refunds[0]!.idempotency_key).toBe(result.toolCalls[1]!.idempotencyKey);
    const events = await client.session(sessionId).fetchHistory().then((hist) => hist.events ?? []);
    expect(scheduledActivities(events).filter((n) => n === 'issue_refund')).toHaveLength(1);

    const status = await client.status(sessionId);
    expect(status.approvals).toEqual([expect.objectContaining({ requestId: 'issue_refund-1', status: 'approved', decidedBy: APPROVER.id, decisionReason: 'checked the photos' })]);
    expect(status.approvalLog).toEqual([expect.objectContaining({ requestId: 'issue_refund-1', accepted: true, via: 'update', approver: APPROVER.id, decision: 'approve' })]);
    await searchAttributesSay(client, sessionId, false, 'completed');
  }, 120_000);

  it('decides two parallel irreversible calls separately: the refund approved, the email rejected with a reason the model sees', async () => {
    const { sessionId, handle } = await h.client.startSession({ prompt: 'Refund ord_1001 partly and tell Ada.', user: operator, model: 'scripted/approval-parallel' });
    await h.withWorker(async () => {
      const pending = await pendingIs(h.client, sessionId, ['issue_refund-1', 'send_email-1']);
      expect(pending.map((p) => p.tool)).toEqual(['issue_refund', 'send_email']);
      expect(pending[1]!.input).toMatchObject({ to: 'a***@example.com' });
      await searchAttributesSay(h.client, sessionId, true, 'waiting_approval');

      // What the Web UI shows while parked: the summary and the current details naming both requests.
      const desc = await handle.describe();
      expect(await desc.staticSummary()).toBe('Refund ord_1001 partly and tell Ada.');
      const metadata = await handle.query<{ currentDetails?: string }>('__temporal_workflow_metadata');
      expect(metadata.currentDetails).toContain('waiting for approval: issue_refund-1 (issue_refund), send_email-1 (send_email)');

      expect(await h.client.decide(sessionId, { requestId: 'issue_refund-1', decision: 'approve', approver: APPROVER })).toMatchObject({ accepted: true });
      // The refund runs while the email still waits.
      await until(async () => ((await ledgerFor(sessionId)).refunds.length === 1 ? true : undefined), 'the refund in the ledger');
      expect((await h.client.pendingApprovals(sessionId)).map((p) => p.requestId)).toEqual(['send_email-1']);
      expect((await handle.describe()).status.name).toBe('RUNNING');

      const rejected = await h.client.decide(sessionId, {
        requestId: 'send_email-1',
        decision: 'reject',
        approver: { id: 'manager-2', roles: ['approver'] },
        reason: 'Wrong tone: rewrite the email first',
      });
      expect(rejected).toEqual({ accepted: true, requestId: 'send_email-1', decision: 'reject' });

      // The scripted model's next turn `expect`s result 0 ok and result 1 is_error with the reason.
      const result = await handle.result();
      expect(result.answer).toBe('I refunded 7.00 USD; the email was rejected, so I did not send it.');
      expect(result.toolCalls.map((t) => `${t.name}:${t.outcome}`)).toEqual(['issue_refund:ok', 'send_email:rejected']);
      expect(result.toolCalls[1]!.error).toMatch(/^send_email was rejected by manager-2: Wrong tone: rewrite the email first\. It did not run/);

      const status: SessionStatus = await h.client.status(sessionId);
      expect(status.approvals.map((a) => [a.requestId, a.status, a.decidedBy, a.decisionReason])).toEqual([
        ['issue_refund-1', 'approved', APPROVER.id, undefined],
        ['send_email-1', 'rejected', 'manager-2', 'Wrong tone: rewrite the email first'],
      ]);
      expect(status.approvalLog.map((l) => [l.requestId, l.accepted, l.decision])).toEqual([
        ['issue_refund-1', true, 'approve'],
        ['send_email-1', true, 'reject'],
      ]);
    });

    const { refunds, emails } = await ledgerFor(sessionId);
    expect(refunds).toHaveLength(1);
    expect(refunds[0]).toMatchObject({ order_id: 'ord_1001', amount_cents: 700 });
    expect(emails).toHaveLength(0);
    expect(scheduledActivities(await historyEvents(h, sessionId)).filter((n) => n !== 'callModel')).toEqual(['issue_refund']);
  }, 60_000);

  it('expires an undecided request after the timeout and tells the model; nothing runs', async () => {
    const { sessionId, handle } = await h.client.startSession({
      prompt: 'Goodwill refund on ord_1001.',
      user: operator,
      model: 'scripted/approval-timeout',
      approval: { timeout: '2s' },
    });
    const started = Date.now();
    await h.withWorker(async () => {
      const [pending] = await pendingIs(h.client, sessionId, ['issue_refund-1']);
      expect(Date.parse(pending!.expiresAt) - Date.parse(pending!.requestedAt)).toBe(2000);

      // The scripted model's next turn `expect`s is_error containing 'not approved'.
      const result = await handle.result();
      expect(Date.now() - started).toBeGreaterThanOrEqual(2000);
      expect(result.stopReason).toBe('end_turn');
      expect(result.toolCalls).toHaveLength(1);
      expect(result.toolCalls[0]).toMatchObject({ name: 'issue_refund', outcome: 'rejected', approvalRequestId: 'issue_refund-1' });
      expect(result.toolCalls[0]!.error).toMatch(/issue_refund was not approved: nobody decided within the approval timeout/);

      const status = await h.client.status(sessionId);
      expect(status.approvals).toHaveLength(1);
      expect(status.approvals[0]).toMatchObject({ requestId: 'issue_refund-1', status: 'expired' });
      expect(status.approvals[0]!.decidedBy).toBeUndefined();
      expect(status.approvals[0]!.decidedAt).toBeDefined();
      expect(status.approvalLog).toEqual([]);
      expect(status.events.filter((e) => e.kind === 'approval').map((e) => e.kind === 'approval' && e.status)).toEqual(['pending', 'expired']);
    });
    expect((await ledgerFor(sessionId)).refunds).toHaveLength(0);
    expect(scheduledActivities(await historyEvents(h, sessionId))).toEqual(['callModel', 'callModel']);
  }, 60_000);

  it('with failOnReject, an expired request fails the session with ApprovalRefused', async () => {
    const { sessionId, handle } = await h.client.startSession({
      prompt: 'Goodwill refund on ord_1001.',
      user: operator,
      model: 'scripted/approval-timeout',
      approval: { timeout: '1s', failOnReject: true },
    });
    const err = await h.withWorker(() => handle.result()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WorkflowFailedError);
    const cause = (err as WorkflowFailedError).cause;
    expect(cause).toBeInstanceOf(ApplicationFailure);
    expect((cause as ApplicationFailure).type).toBe('ApprovalRefused');
    expect((cause as ApplicationFailure).message).toMatch(/issue_refund was not approved/);
    expect((await ledgerFor(sessionId)).refunds).toHaveLength(0);
    // The model was not asked again after the refusal.
    expect(scheduledActivities(await historyEvents(h, sessionId))).toEqual(['callModel']);
    expect((await handle.describe()).typedSearchAttributes.get(KeelStatus)).toBe('failed');
  }, 60_000);

  it('refuses decisions that are not allowed, unknown, already made or malformed; they change nothing and are recorded', async () => {
    const requester = { id: 'ops-lead', roles: ['admin', 'support'] };
    const { sessionId, handle } = await h.client.startSession({ prompt: 'Move Grace to pro.', user: requester, model: 'scripted/approval-privileged' });
    const requestId = 'set_account_plan-1';
    const logOf = async () => (await handle.query(statusQuery)).approvalLog;
    const logLength = (n: number) => until(async () => ((await logOf()).length >= n ? true : undefined), `${n} approval log entries`);

    await h.withWorker(async () => {
      const [pending] = await pendingIs(h.client, sessionId, [requestId]);
      expect(pending!.reason).toMatch(/privileged: an approver with role admin who is not the requester must approve/);
      expect(pending!.requestedBy).toBe('ops-lead');

      const byRequester: ApprovalDecision = { requestId, decision: 'approve', approver: { id: 'ops-lead', roles: ['admin'] } };
      const wrongRole: ApprovalDecision = { requestId, decision: 'approve', approver: { id: 'agent-2', roles: ['support'] } };
      const approverNotAdmin: ApprovalDecision = { requestId, decision: 'approve', approver: { id: 'manager-1', roles: ['approver'] } };
      const unknown: ApprovalDecision = { requestId: 'set_account_plan-9', decision: 'approve', approver: { id: 'admin-2', roles: ['admin'] } };

      // Through the signal (fire and forget): each is recorded as refused.
      for (const d of [byRequester, wrongRole, approverNotAdmin, unknown]) await handle.signal(approvalSignal, d);
      await logLength(4);
      const viaSignal = await logOf();
      expect(viaSignal.map((l) => [l.requestId, l.via, l.accepted, l.approver])).toEqual([
        [requestId, 'signal', false, 'ops-lead'],
        [requestId, 'signal', false, 'agent-2'],
        [requestId, 'signal', false, 'manager-1'],
        ['set_account_plan-9', 'signal', false, 'admin-2'],
      ]);
      expect(viaSignal[0]!.reason).toBe('ops-lead requested this privileged call and cannot approve it');
      expect(viaSignal[1]!.reason).toBe('agent-2 holds none of the roles that may decide on set_account_plan (admin)');
      expect(viaSignal[2]!.reason).toMatch(/manager-1 holds none of the roles/);
      expect(viaSignal[3]!.reason).toBe("no approval request 'set_account_plan-9' in this session");

      // Through the update: the same refusals, with their codes.
      expect(await h.client.decide(sessionId, byRequester)).toEqual({ accepted: false, requestId, code: 'not_allowed', reason: viaSignal[0]!.reason });
      expect(await h.client.decide(sessionId, wrongRole)).toMatchObject({ accepted: false, requestId, code: 'not_allowed' });
      expect(await h.client.decide(sessionId, approverNotAdmin)).toMatchObject({ accepted: false, requestId, code: 'not_allowed' });
      expect(await h.client.decide(sessionId, unknown)).toMatchObject({ accepted: false, requestId: 'set_account_plan-9', code: 'unknown_request' });
      expect((await logOf()).slice(4).map((l) => [l.via, l.accepted])).toEqual([
        ['update', false],
        ['update', false],
        ['update', false],
        ['update', false],
      ]);

      // A malformed decision: the update's validator rejects it (nothing is recorded); the client refuses it before sending.
      const maybe = { requestId, decision: 'maybe', approver: { id: 'admin-2', roles: ['admin'] } } as unknown as ApprovalDecision;
      const invalidErr = await handle.executeUpdate(decideApprovalUpdate, { args: [maybe] }).then(() => undefined, (e: unknown) => e);
      expect(invalidErr).toBeInstanceOf(WorkflowUpdateFailedError);
      expect((invalidErr as WorkflowUpdateFailedError).cause?.message).toMatch(/^invalid approval: decision/);
      await expect(h.client.decide(sessionId, maybe)).rejects.toBeInstanceOf(SessionInputError);
      // Through the signal it cannot be refused to the sender, so it is recorded as refused.
      await handle.signal(approvalSignal, maybe);
      await logLength(9);
      const afterInvalid = await logOf();
      expect(afterInvalid).toHaveLength(9);
      expect(afterInvalid[8]).toMatchObject({ requestId, via: 'signal', accepted: false, reason: expect.stringMatching(/^invalid approval: decision/) });
      expect(afterInvalid.every((l) => l.accepted === false && typeof l.reason === 'string' && l.reason.length > 0)).toBe(true);

      // None of that changed anything.
      const [still] = await h.client.pendingApprovals(sessionId);
      expect(still).toEqual(pending);
      expect((await ledgerFor(sessionId)).planChanges).toHaveLength(0);
      expect((await handle.describe()).typedSearchAttributes.get(KeelPendingApproval)).toBe(true);

      // A valid approval: an admin who is not the requester.
      await handle.signal(approvalSignal, { requestId, decision: 'approve', approver: { id: 'admin-2', roles: ['admin'] }, reason: 'customer asked' });
      await until(async () => ((await handle.query(statusQuery)).approvals[0]?.status === 'approved' ? true : undefined), 'the approval');
      // The final model turn takes 2 s, so the session is still open for a second decision.
      expect(await h.client.decide(sessionId, { requestId, decision: 'reject', approver: { id: 'admin-3', roles: ['admin'] } })).toEqual({
        accepted: false,
        requestId,
        code: 'already_decided',
        reason: `request ${requestId} is already approved (by admin-2)`,
      });
      await handle.signal(approvalSignal, { requestId, decision: 'reject', approver: { id: 'admin-3', roles: ['admin'] } });

      const result = await handle.result();
      expect(result.answer).toBe('Grace is on the pro plan now.');
      expect(result.toolCalls.map((t) => `${t.name}:${t.outcome}`)).toEqual(['set_account_plan:ok']);

      const status = await h.client.status(sessionId);
      expect(status.approvals).toEqual([expect.objectContaining({ requestId, status: 'approved', decidedBy: 'admin-2', decisionReason: 'customer asked' })]);
      const log = status.approvalLog;
      expect(log).toHaveLength(12);
      expect(log[9]).toMatchObject({ requestId, via: 'signal', accepted: true, approver: 'admin-2', decision: 'approve' });
      expect(log[10]).toMatchObject({ requestId, via: 'update', accepted: false, approver: 'admin-3' });
      expect(log[11]).toMatchObject({ requestId, via: 'signal', accepted: false, approver: 'admin-3', reason: `request ${requestId} is already approved (by admin-2)` });
      // Only one accepted decision, and it is the last one that changed the request.
      expect(log.filter((l) => l.accepted)).toHaveLength(1);
    });
    const { planChanges } = await ledgerFor(sessionId);
    expect(planChanges).toHaveLength(1);
    expect(planChanges[0]).toMatchObject({ customer_id: 'cust_002', plan: 'pro' });
  }, 60_000);
});

describe('keel approvals / approve / reject', () => {
  const keel = (args: string[]) => runKeel(args, h.env);

  it('lists a parked request, approves it, refuses a second decision, an unknown request and a missing --as', async () => {
    const { sessionId, handle } = await h.client.startSession({ prompt: 'Refund ord_1001 partly and tell Ada.', user: operator, model: 'scripted/approval-parallel' });
    await h.withWorker(async () => {
      await pendingIs(h.client, sessionId, ['issue_refund-1', 'send_email-1']);

      // Visibility lags the search attribute a little: poll.
      const listed = await until(async () => {
        const r = await keel(['approvals', '--json']);
        expect(r.code).toBe(0);
        const doc = JSON.parse(r.stdout) as { pending: Array<ApprovalRequest & { sessionId: string }> };
        const mine = doc.pending.filter((p) => p.sessionId === sessionId);
        return mine.length === 2 ? mine : undefined;
      }, 'keel approvals to list the session', 30_000);
      expect(listed.map((p) => p.requestId).sort()).toEqual(['issue_refund-1', 'send_email-1']);
      expect(listed.find((p) => p.requestId === 'send_email-1')).toMatchObject({ tool: 'send_email', requestedBy: operator.id, input: { to: 'a***@example.com' } });

      const approve = await keel(['approve', sessionId, 'issue_refund-1', '--as', 'manager-1', '--role', 'approver', '--json']);
      expect(approve.code).toBe(0);
      expect(JSON.parse(approve.stdout)).toEqual({ accepted: true, requestId: 'issue_refund-1', decision: 'approve' });

      // The email still waits, so the session is open for a second decision on the refund.
      const again = await keel(['approve', sessionId, 'issue_refund-1', '--as', 'manager-1', '--role', 'approver', '--json']);
      expect(again.code).toBe(2);
      expect(JSON.parse(again.stdout)).toMatchObject({ accepted: false, requestId: 'issue_refund-1', code: 'already_decided' });

      const unknown = await keel(['reject', sessionId, 'nope', '--as', 'x', '--role', 'approver']);
      expect(unknown.code).toBe(2);
      expect(`${unknown.stdout}\n${unknown.stderr}`).toMatch(/unknown_request/);
      expect(unknown.stderr).toMatch(/^keel: .*no approval request 'nope' in this session\n$/);

      const noAs = await keel(['approve', sessionId, 'send_email-1', '--role', 'approver']);
      expect(noAs.code).toBe(2);
      expect(noAs.stderr.trim()).toBe('keel: keel approve needs --as <approver>: who is deciding');
      expect((await h.client.pendingApprovals(sessionId)).map((p) => p.requestId)).toEqual(['send_email-1']);

      const reject = await keel(['reject', sessionId, 'send_email-1', '--as', 'manager-2', '--role', 'approver', '--reason', 'Wrong tone: rewrite the email first']);
      expect(reject.code).toBe(0);
      expect(reject.stdout.trim()).toBe(`rejected send_email-1 in ${sessionId}`);

      const result = await handle.result();
      expect(result.toolCalls.map((t) => `${t.name}:${t.outcome}`)).toEqual(['issue_refund:ok', 'send_email:rejected']);
      const status = await h.client.status(sessionId);
      expect(status.approvalLog.map((l) => [l.requestId, l.via, l.accepted, l.approver])).toEqual([
        ['issue_refund-1', 'update', true, 'manager-1'],
        ['issue_refund-1', 'update', false, 'manager-1'],
        ['nope', 'update', false, 'x'],
        ['send_email-1', 'update', true, 'manager-2'],
      ]);
    });
    // A closed session is no longer listed.
    const after = await until(async () => {
      const r = await keel(['approvals', '--json']);
      const doc = JSON.parse(r.stdout) as { pending: Array<{ sessionId: string }> };
      return doc.pending.some((p) => p.sessionId === sessionId) ? undefined : doc;
    }, 'keel approvals to drop the closed session');
    expect(after.pending.filter((p) => p.sessionId === sessionId)).toEqual([]);
    const { refunds, emails } = await ledgerFor(sessionId);
    expect(refunds).toHaveLength(1);
    expect(emails).toHaveLength(0);
  }, 90_000);
});

describe('listing approvals when no worker answers', () => {
  it('still lists a parked session, as unavailable, within the query deadline', async () => {
    const { sessionId } = await h.client.startSession({ prompt: 'Refund ord_1001', user: operator, model: 'scripted/approval-refund' });
    // Park it with a worker, then let the worker go: the session waits in Temporal with nobody to answer queries.
    await h.withWorker(() => pendingIs(h.client, sessionId, ['issue_refund-1']));
    const listing = await until(async () => {
      const l = await h.client.listPendingApprovals({ queryTimeoutMs: 1_000 });
      return l.unavailable.some((u) => u.sessionId === sessionId) ? l : undefined;
    }, 'the parked session to be listed as unavailable');
    expect(listing.pending.filter((p) => p.sessionId === sessionId)).toEqual([]);
    // Let it finish so it does not linger: approve it with a worker back.
    await h.withWorker(async () => {
      expect(await h.client.decide(sessionId, { requestId: 'issue_refund-1', decision: 'approve', approver: APPROVER, reason: 'test over' })).toMatchObject({ accepted: true });
      await h.client.result(sessionId);
    });
  }, 60_000);
});
