/**
 * `keel audit <session>` and `keel audit verify [<session>]`, run as a user's script runs them, against a
 * SQLite store in a temp directory (KEEL_AUDIT_URL). They need only the store: no Temporal server, no
 * worker. Trails are seeded through the store's API, and tampered with through better-sqlite3 directly.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSqliteStore, type AuditEntry, type AuditRow, type AuditVerification } from '../src/store/index.js';
import { expectUsageError, runKeel } from './support/processes.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'keel-audit-cli-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A fresh store file per test, so tests do not see each other's trails. */
let n = 0;
const freshStore = () => path.join(dir, `keel-${++n}.sqlite`);
const keel = (store: string, args: string[]) => runKeel(args, { KEEL_AUDIT_URL: store });

const at = (s: number) => `2030-01-01T00:00:0${s}.000Z`;
/** A refund session's trail as the workflow writes it (field names from src/workflows/audit.ts). */
const TRAIL: AuditEntry[] = [
  { key: 'r1:run', kind: 'run', at: at(0), data: { agent: 'support', model: 'claude-sonnet-4-5', user: 'cust-7' } },
  {
    key: 'r1:turn:1',
    kind: 'model_turn',
    at: at(1),
    data: { iteration: 1, usage: { input_tokens: 1200, output_tokens: 80 }, costUsd: 0.0048, stopReason: 'tool_use', text: 'The keyboard arrived damaged; I will refund it.' },
  },
  { key: 'r1:authz:toolu_1', kind: 'authorization', at: at(2), data: { tool: 'issue_refund', allowed: true, reason: 'role support may call it', user: 'cust-7' } },
  { key: 'r1:approval:refund-1:1', kind: 'approval', at: at(3), data: { requestId: 'refund-1', tool: 'issue_refund', accepted: true, decision: 'approve', approver: 'alice', approverRoles: ['approver'], reason: 'damaged on arrival', via: 'signal' } },
  {
    key: 'r1:intent:toolu_1',
    kind: 'tool_intent',
    at: at(4),
    data: {
      tool: 'issue_refund',
      tier: 'irreversible',
      idempotencyKey: 'sess-1:issue_refund:0a1b2c3d',
      argHash: 'f'.repeat(64),
      args: { order_id: 'ord_1001', amount: 59.9 },
      reasoning: 'The keyboard arrived damaged; I will refund it.',
      turnUsage: { input_tokens: 1200, output_tokens: 80, cost_usd: 0.0048 },
    },
  },
  { key: 'r1:result:toolu_1', kind: 'tool_result', at: at(5), data: { tool: 'issue_refund', outcome: 'ok', latencyMs: 142, resultHash: 'e'.repeat(64), result: '{"refund_id":"rf_1"}' } },
  { key: 'r1:undo:toolu_1', kind: 'compensation', at: at(6), data: { tool: 'issue_refund', idempotencyKey: 'sess-1:issue_refund:0a1b2c3d', status: 'done' } },
  { key: 'r1:end', kind: 'run_end', at: at(7), data: { outcome: 'failed', reason: 'send_email failed', usage: { input_tokens: 2400, output_tokens: 160, cost_usd: 0.0096 }, compensations: ['issue_refund: done'] } },
];

async function seed(store: string, sessions: Record<string, AuditEntry[]>): Promise<void> {
  const s = openSqliteStore(store);
  try {
    for (const [id, entries] of Object.entries(sessions)) expect(await s.appendAudit(id, entries)).toBe(entries.length);
  } finally {
    await s.close();
  }
}

function tamper(store: string, sql: string, ...params: unknown[]): void {
  const db = new Database(store);
  try {
    expect(db.prepare(sql).run(...params).changes).toBe(1);
  } finally {
    db.close();
  }
}

/** The one-line reason of a bad-usage exit. */

describe('keel audit <session>', () => {
  it('prints the trail one line per row, in seq order, with what each step did', async () => {
    const store = freshStore();
    await seed(store, { 'sess-1': TRAIL, 'sess-2': TRAIL.slice(0, 1) });
    const r = await keel(store, ['audit', 'sess-1']);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines).toHaveLength(TRAIL.length);
    lines.forEach((line, i) => expect(line.startsWith(`#${i + 1} ${TRAIL[i]!.at} ${TRAIL[i]!.kind} ${TRAIL[i]!.key} — `), line).toBe(true));
    const [run, turn, authz, approval, intent, result, undo, end] = lines as [string, string, string, string, string, string, string, string];
    expect(run).toMatch(/agent support.*model claude-sonnet-4-5/);
    expect(turn).toMatch(/turn 1.*1200 in \/ 80 out tokens.*\$0\.0048.*tool_use.*keyboard arrived damaged/);
    expect(authz).toMatch(/issue_refund allowed.*role support may call it/);
    expect(approval).toMatch(/refund-1 \(issue_refund\) APPROVED.*by alice \[approver\].*damaged on arrival/);
    // The intent: tool, tier, the (redacted) arguments, the key, the reasoning and that turn's cost.
    for (const part of ['issue_refund (irreversible)', 'ord_1001', 'sess-1:issue_refund:0a1b2c3d', 'because "The keyboard arrived damaged', '1200 in / 80 out tokens', '$0.0048']) {
      expect(intent).toContain(part);
    }
    expect(result).toMatch(/issue_refund ok in 142 ms.*result hash eeeeeeeeeeee/);
    expect(undo).toMatch(/undo issue_refund done/);
    expect(end).toMatch(/outcome failed.*send_email failed.*2400 in \/ 160 out tokens.*\$0\.0096.*undos: issue_refund: done/);
  });

  it('--json prints the session id and its rows as stored', async () => {
    const store = freshStore();
    await seed(store, { 'sess-1': TRAIL });
    const r = await keel(store, ['audit', 'sess-1', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const doc = JSON.parse(r.stdout) as { sessionId: string; rows: AuditRow[] };
    expect(doc.sessionId).toBe('sess-1');
    expect(doc.rows.map((row) => ({ key: row.key, kind: row.kind, at: row.at, data: row.data }))).toEqual(TRAIL);
    expect(doc.rows.map((row) => row.seq)).toEqual(TRAIL.map((_, i) => i + 1));
    doc.rows.forEach((row, i) => {
      expect(row.sessionId).toBe('sess-1');
      expect(row.hash).toMatch(/^[0-9a-f]{64}$/);
      expect(row.prevHash).toBe(i ? doc.rows[i - 1]!.hash : '');
    });
  });

  it('an unknown session exits 2 with a one-line reason', async () => {
    const store = freshStore();
    await seed(store, { 'sess-1': TRAIL });
    expect(expectUsageError(await keel(store, ['audit', 'nope']))).toBe("keel: no audit trail for session 'nope'");
    expect(expectUsageError(await keel(store, ['audit', 'verify', 'nope']))).toBe("keel: no audit trail for session 'nope'");
  });

  it('bad usage exits 2', async () => {
    const store = freshStore();
    expect(expectUsageError(await keel(store, ['audit']))).toMatch(/keel audit takes one session id/);
    expect(expectUsageError(await keel(store, ['audit', 'a', 'b']))).toMatch(/keel audit takes one session id/);
    expect(expectUsageError(await keel(store, ['audit', 'verify', 'a', 'b']))).toMatch(/at most one session id/);
    expect(expectUsageError(await keel(store, ['audit', 'a', '--bogus']))).toMatch(/--bogus/);
  });
});

describe('keel audit verify', () => {
  it('passes on untouched trails, for all sessions and for one', async () => {
    const store = freshStore();
    await seed(store, { 'sess-1': TRAIL, 'sess-2': TRAIL.slice(0, 3) });
    const all = await keel(store, ['audit', 'verify']);
    expect(all.code, all.stderr).toBe(0);
    expect(all.stdout.trim()).toBe('verified 11 rows of 2 session(s): the chain is intact');
    const one = await keel(store, ['audit', 'verify', 'sess-2', '--json']);
    expect(one.code, one.stderr).toBe(0);
    expect(JSON.parse(one.stdout)).toEqual({ sessions: 1, rows: 3 });
  });

  it('exits 1 naming the row whose content was edited', async () => {
    const store = freshStore();
    await seed(store, { 'sess-1': TRAIL, 'sess-2': TRAIL.slice(0, 3) });
    tamper(store, 'UPDATE keel_audit SET data = ? WHERE session_id = ? AND seq = 6', JSON.stringify({ tool: 'issue_refund', outcome: 'error', latencyMs: 142 }), 'sess-1');
    const r = await keel(store, ['audit', 'verify']);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stdout).toContain('session sess-1: row 6 (tool_result r1:result:toolu_1) was changed');
    const json = await keel(store, ['audit', 'verify', 'sess-1', '--json']);
    expect(json.code).toBe(1);
    expect((JSON.parse(json.stdout) as AuditVerification).broken).toMatchObject({ sessionId: 'sess-1', seq: 6, key: 'r1:result:toolu_1' });
    // The other session is still intact on its own.
    expect((await keel(store, ['audit', 'verify', 'sess-2'])).code).toBe(0);
  });

  it('exits 1 naming the row that was removed', async () => {
    const store = freshStore();
    await seed(store, { 'sess-1': TRAIL });
    tamper(store, 'DELETE FROM keel_audit WHERE session_id = ? AND seq = 4', 'sess-1');
    const r = await keel(store, ['audit', 'verify', 'sess-1']);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stdout).toContain('row 4 was removed: row 5 follows row 3');
  });
});
