/**
 * The audit trail in PostgreSQL, end to end: a session's trail shows the run, each model turn with its
 * reasoning, the authorization, the intent before and the result after every call, the approvals, the
 * undo and the end; a worker SIGKILLed mid-call duplicates no row; `keel audit verify` passes on the
 * untouched trail and names the row edited in PostgreSQL; and no email address planted in the prompt and
 * the tool input reaches the trail.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore, type KeelStore } from '../src/store/index.js';
import { APPROVER, approveUntilDone, startHarness, type Harness } from './support/harness.js';
import { killWorkers, runKeel, sigkill, spawnWorker, until } from './support/processes.js';

const PG_URL = process.env.KEEL_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

let h: Harness;
let store: KeelStore;
beforeAll(async () => {
  h = await startHarness('audit', { KEEL_AUDIT_URL: PG_URL });
  store = await openStore(h.config);
});
afterAll(async () => {
  await killWorkers();
  await store?.close();
  await h?.close();
});

const user = { id: 'agent-operator-1', roles: ['support'] };

describe('the audit trail', () => {
  it('records every step of a session, once each, across a worker SIGKILL mid-call', async () => {
    // The refund is applied, then its answer never comes: the worker is killed while it waits.
    await h.demoApi.setFault({ endpoint: 'POST /refunds', after_apply: true, hang: true, times: 1 });
    const first = await spawnWorker(h.env);
    const sessionId = `audit-crash-${Date.now()}`;
    const { handle } = await h.client.startSession({ sessionId, prompt: 'Refund 15 USD of ord_1002 for ada@example.com', user, model: 'scripted/safety-refund-crash' });
    const [request] = await until(async () => {
      const pending = await h.client.pendingApprovals(sessionId).catch(() => []);
      return pending.length ? pending : undefined;
    }, 'the refund approval request');
    await h.client.decide(sessionId, { requestId: request!.requestId, decision: 'approve', approver: APPROVER, reason: 'customer is right' });
    await until(async () => ((await h.demoApi.ledger()).refunds.some((r) => r.idempotency_key?.startsWith(sessionId)) ? true : undefined), 'the refund in the ledger');
    await sigkill(first);
    const second = await spawnWorker(h.env);
    try {
      await handle.result();
    } finally {
      await sigkill(second);
      await h.demoApi.clearFaults();
    }

    const rows = await store.auditTrail(sessionId);
    const kinds = rows.map((r) => `${r.kind}${r.data.tool ? `:${String(r.data.tool)}` : ''}`);
    expect(kinds).toEqual([
      'run',
      'model_turn',
      'authorization:issue_refund',
      'approval:issue_refund',
      'tool_intent:issue_refund',
      'tool_result:issue_refund',
      'model_turn',
      'run_end',
    ]);
    expect(new Set(rows.map((r) => r.key)).size).toBe(rows.length);
    expect(rows.map((r) => r.seq)).toEqual(rows.map((_, i) => i + 1));
    const intent = rows.find((r) => r.kind === 'tool_intent')!;
    expect(intent.data).toMatchObject({ tier: 'irreversible', idempotencyKey: expect.stringMatching(new RegExp(`^${sessionId}:issue_refund:`)), argHash: expect.stringMatching(/^[0-9a-f]{64}$/) });
    expect(intent.data.reasoning).toEqual(expect.any(String));
    expect(rows.find((r) => r.kind === 'approval')!.data).toMatchObject({ decision: 'approve', approver: APPROVER.id, reason: 'customer is right' });
    expect(rows.find((r) => r.kind === 'tool_result')!.data).toMatchObject({ outcome: 'ok', statusChecked: true });
    expect(rows.at(-1)!.data).toMatchObject({ outcome: 'completed', stopReason: 'end_turn' });
    // The planted email never reached the trail.
    expect(JSON.stringify(rows)).not.toContain('ada@example.com');
  }, 90_000);

  it('records the undo of a session a budget ended', async () => {
    const { sessionId, handle } = await h.client.startSession({ prompt: 'Look into my bill', user, model: 'scripted/safety-budget-write', maxIterations: 2 });
    await h.withWorker(() => handle.result());
    const rows = await store.auditTrail(sessionId);
    expect(rows.filter((r) => r.kind === 'compensation').map((r) => r.data)).toMatchObject([{ tool: 'create_ticket', status: 'compensated' }]);
    expect(rows.at(-1)).toMatchObject({ kind: 'run_end', data: { stopReason: 'max_iterations' } });
  }, 60_000);

  it('keel audit verify passes on an untouched trail and names the row edited in PostgreSQL', async () => {
    const { sessionId, handle } = await h.client.startSession({ prompt: 'My keyboard arrived damaged, order ord_1001.', user, model: 'scripted/refund-demo' });
    await h.withWorker(() => Promise.all([handle.result(), approveUntilDone(h.client, sessionId)]));
    const shown = await runKeel(['audit', sessionId], h.env);
    expect(shown.code, shown.stderr).toBe(0);
    expect(shown.stdout).toMatch(/tool_intent/);
    const ok = await runKeel(['audit', 'verify', sessionId], h.env);
    expect(ok.code, ok.stderr).toBe(0);

    const rows = await store.auditTrail(sessionId);
    const target = rows.find((r) => r.kind === 'tool_result')!;
    const db = new pg.Client({ connectionString: PG_URL });
    await db.connect();
    try {
      await db.query(`UPDATE keel_audit SET data = $1 WHERE session_id = $2 AND seq = $3`, [JSON.stringify({ ...target.data, outcome: 'error' }), sessionId, target.seq]);
    } finally {
      await db.end();
    }
    const broken = await runKeel(['audit', 'verify', sessionId], h.env);
    expect(broken.code).toBe(1);
    expect(broken.stdout + broken.stderr).toMatch(new RegExp(`row ${target.seq}\\b`));
  }, 60_000);
});
