/**
 * The operator reports: `keel slo`, `keel failed` and `keel runbook`, run as a user's script runs them
 * against a SQLite store seeded through the store's API (no Temporal server, no worker), plus the pure
 * functions behind them (src/ops/) and the store read they use (`auditRows`) on SQLite and PostgreSQL.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { compensationState, failedSessions, type FailedSession } from '../src/ops/failed.js';
import { runbookFacts } from '../src/ops/runbook.js';
import { parseSince, percentile, summarizeSessions } from '../src/ops/sessions.js';
import { sloReport, type SloReport } from '../src/ops/slo.js';
import { openSqliteStore, type AuditEntry, type AuditRow, type KeelStore } from '../src/store/index.js';
import { defineTool } from '../src/tools/define.js';
import { runKeel } from './support/processes.js';

const PG_URL = process.env.KEEL_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const TOOLS = 'examples/support-desk/tools.ts';
const NOW = Date.now();
const iso = (msAgo: number) => new Date(NOW - msAgo).toISOString();
const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;

/** A session's trail as the workflow writes it (kinds and fields from src/workflows/). */
function session(opts: {
  chain: string;
  startMsAgo: number;
  latencyS?: number;
  costUsd?: number;
  outcome?: 'completed' | 'failed' | 'cancelled';
  reason?: string;
  results?: Array<[tool: string, outcome: string]>;
  undos?: Array<[tool: string, status: string, error?: string]>;
}): AuditEntry[] {
  const k = (key: string) => `${opts.chain}:${key}`;
  const start = NOW - opts.startMsAgo;
  const at = (ms: number) => new Date(start + ms).toISOString();
  const entries: AuditEntry[] = [{ key: k('run'), kind: 'run', at: at(0), data: { agent: 'support', model: 'claude-sonnet-4-5', user: 'cust_7', roles: [], tools: [] } }];
  (opts.results ?? []).forEach(([tool, outcome], i) => {
    entries.push(
      { key: k(`intent:toolu_${i}`), kind: 'tool_intent', at: at(100 + i), data: { tool, tier: 'read', toolUseId: `toolu_${i}`, argHash: 'a'.repeat(64), args: {} } },
      { key: k(`result:toolu_${i}`), kind: 'tool_result', at: at(200 + i), data: { tool, toolUseId: `toolu_${i}`, outcome, latencyMs: 40, resultHash: 'b'.repeat(64), result: '{}' } },
    );
  });
  (opts.undos ?? []).forEach(([tool, status, error], i) => {
    entries.push({ key: k(`undo:toolu_u${i}`), kind: 'compensation', at: at(300 + i), data: { tool, toolUseId: `toolu_u${i}`, idempotencyKey: `key-${i}`, status, ...(error ? { error } : {}) } });
  });
  if (opts.outcome) {
    entries.push({
      key: k('end'),
      kind: 'run_end',
      at: at((opts.latencyS ?? 1) * 1000),
      data: {
        outcome: opts.outcome,
        usage: { input_tokens: 1000, output_tokens: 100, cost_usd: opts.costUsd ?? 0.01 },
        ...(opts.reason ? { reason: opts.reason } : {}),
        ...(opts.undos ? { compensations: opts.undos.map(([t, s]) => `${t}: ${s}`) } : {}),
      },
    });
  }
  return entries;
}

/**
 * Seven sessions ended in the last 24h (5 completed, 1 failed, 1 cancelled), one still running, and one
 * completed and one failed three days ago. Latencies 4..14 s (p95 of 7 by nearest rank = the largest, 14 s);
 * costs up to $0.25 (p95 = $0.25). lookup_customer: 3 ok, 1 error; get_order: 4 ok (one in the running session) and 1 rejected.
 */
const SESSIONS: Record<string, AuditEntry[]> = {
  'sess-ok-1': session({ chain: 'c1', startMsAgo: 5 * HOUR, latencyS: 5, costUsd: 0.02, outcome: 'completed', results: [['get_order', 'ok'], ['lookup_customer', 'ok']] }),
  'sess-ok-2': session({ chain: 'c2', startMsAgo: 4 * HOUR, latencyS: 8, costUsd: 0.03, outcome: 'completed', results: [['get_order', 'ok'], ['get_order', 'rejected']] }),
  'sess-ok-3': session({ chain: 'c3', startMsAgo: 3 * HOUR, latencyS: 10, costUsd: 0.04, outcome: 'completed', results: [['lookup_customer', 'ok'], ['lookup_customer', 'error']] }),
  'sess-ok-4': session({ chain: 'c4', startMsAgo: 2 * HOUR, latencyS: 12, costUsd: 0.05, outcome: 'completed', results: [['get_order', 'ok']] }),
  'sess-ok-5': session({ chain: 'c5', startMsAgo: 90 * MIN, latencyS: 14, costUsd: 0.25, outcome: 'completed', results: [['lookup_customer', 'ok']] }),
  'sess-failed': session({
    chain: 'c6',
    startMsAgo: 50 * MIN,
    latencyS: 9,
    costUsd: 0.06,
    outcome: 'failed',
    reason: 'critical tool issue_refund is unavailable: disabled by ops',
    results: [['create_ticket', 'ok']],
    undos: [['create_ticket', 'compensated'], ['apply_credit', 'discarded']],
  }),
  'sess-cancelled': session({
    chain: 'c7',
    startMsAgo: 30 * MIN,
    latencyS: 4,
    costUsd: 0.01,
    outcome: 'cancelled',
    reason: 'Workflow cancelled',
    undos: [['apply_credit', 'failed', 'ledger unreachable']],
  }),
  'sess-running': session({ chain: 'c8', startMsAgo: 10 * MIN, results: [['get_order', 'ok']] }),
  'sess-old-ok': session({ chain: 'c9', startMsAgo: 3 * DAY, latencyS: 40, costUsd: 0.5, outcome: 'completed', results: [['search_kb', 'error']] }),
  'sess-old-failed': session({ chain: 'ca', startMsAgo: 3 * DAY - HOUR, latencyS: 3, outcome: 'failed', reason: 'model provider down' }),
};

let dir: string;
let storeFile: string;
const keel = (args: string[], env: Record<string, string> = {}) => runKeel(args, { KEEL_AUDIT_URL: storeFile, KEEL_TOOLS: TOOLS, ...env });

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'keel-ops-'));
  storeFile = path.join(dir, 'keel.sqlite');
  const store = openSqliteStore(storeFile);
  try {
    for (const [id, entries] of Object.entries(SESSIONS)) expect(await store.appendAudit(id, entries)).toBe(entries.length);
  } finally {
    await store.close();
  }
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const line = (r: SloReport, objective: string, tool?: string) => r.lines.find((l) => l.objective === objective && l.tool === tool);

describe('keel slo', () => {
  it('measures the last 24h against the targets: completion, availability per tool, p95 latency and cost', async () => {
    const run = await keel(['slo', '--json']);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const report = JSON.parse(run.stdout) as SloReport;
    expect(report.sessions).toEqual({ started: 8, ended: 7, completed: 5, failed: 1, cancelled: 1, running: 1 });
    expect(line(report, 'completion_rate')).toMatchObject({ good: 5, total: 7, met: false });
    expect(line(report, 'completion_rate')!.actual).toBeCloseTo(5 / 7, 6);
    // get_order: the rejected call is the model's mistake, so 4 of 4, not 4 of 5; the running session's result counts.
    expect(line(report, 'tool_availability', 'get_order')).toMatchObject({ actual: 1, good: 4, total: 4, rejected: 1, met: true });
    expect(line(report, 'tool_availability', 'lookup_customer')).toMatchObject({ actual: 0.75, good: 3, total: 4, met: false });
    expect(line(report, 'tool_availability', 'create_ticket')).toMatchObject({ actual: 1, met: true });
    // The old session's search_kb error is outside the window.
    expect(line(report, 'tool_availability', 'search_kb')).toBeUndefined();
    expect(line(report, 'p95_latency_seconds')).toMatchObject({ actual: 14, total: 7, met: true });
    expect(line(report, 'p95_cost_usd')).toMatchObject({ actual: 0.25, total: 7, met: false });
  });

  it('prints a table with MET and MISSED, and exits 0 even when objectives are missed', async () => {
    const run = await keel(['slo']);
    expect(run.code).toBe(0);
    const row = (start: string) => run.stdout.split('\n').find((l) => l.startsWith(start)) ?? '';
    expect(row('session completion rate')).toMatch(/>= 95%\s+71\.43%\s+5 of 7 ended sessions\s+MISSED$/);
    expect(row('availability of get_order')).toMatch(/100%.*rejected.*MET$/);
    expect(row('availability of lookup_customer')).toMatch(/75%\s+3 of 4 results\s+MISSED$/);
    expect(row('p95 session latency')).toMatch(/<= 15 s\s+14\.0 s.*MET$/);
    expect(row('p95 cost per session')).toMatch(/\$0\.2500.*MISSED$/);
    expect(run.stdout).toMatch(/1 still running/);
  });

  it('--since widens or narrows the window by the run row', async () => {
    const week = JSON.parse((await keel(['slo', '--since', '7d', '--json'])).stdout) as SloReport;
    expect(week.sessions).toMatchObject({ started: 10, ended: 9, completed: 6, failed: 2 });
    expect(line(week, 'tool_availability', 'search_kb')).toMatchObject({ actual: 0, met: false });
    const hour = JSON.parse((await keel(['slo', '--since', '1h', '--json'])).stdout) as SloReport;
    expect(hour.sessions).toEqual({ started: 3, ended: 2, completed: 0, failed: 1, cancelled: 1, running: 1 });
  });

  it('refuses a bad --since with exit 2, naming it', async () => {
    for (const bad of ['yesterday', '0h', '24']) {
      const run = await keel(['slo', '--since', bad]);
      expect(run.code).toBe(2);
      expect(run.stderr).toContain('--since');
      expect(run.stderr).toContain(`'${bad}'`);
      expect(run.stdout).toBe('');
    }
  });

  it('reports NO DATA on an empty store', async () => {
    const run = await runKeel(['slo'], { KEEL_AUDIT_URL: path.join(dir, 'empty.sqlite') });
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/session completion rate.*NO DATA/);
  });
});

describe('keel failed', () => {
  it('lists the failed and cancelled sessions of the window, newest first, with reason and undo status', async () => {
    const run = await keel(['failed', '--json']);
    expect(run.code).toBe(0);
    const { sessions } = JSON.parse(run.stdout) as { sessions: FailedSession[] };
    expect(sessions.map((s) => s.sessionId)).toEqual(['sess-cancelled', 'sess-failed']);
    expect(sessions[1]).toMatchObject({
      outcome: 'failed',
      reason: 'critical tool issue_refund is unavailable: disabled by ops',
      compensation: 'all compensated',
      // The discarded undo (a write that never happened) is not listed.
      undos: [{ tool: 'create_ticket', status: 'compensated' }],
    });
    expect(sessions[0]).toMatchObject({ outcome: 'cancelled', compensation: 'some failed', undos: [{ tool: 'apply_credit', status: 'failed', error: 'ledger unreachable' }] });
    const text = await keel(['failed']);
    expect(text.stdout).toMatch(/sess-failed\s+failed\s+all compensated \(create_ticket compensated\)\s+critical tool issue_refund/);
  });

  it('--since reaches older failures; a window without any says so', async () => {
    const week = JSON.parse((await keel(['failed', '--since', '7d', '--json'])).stdout) as { sessions: FailedSession[] };
    expect(week.sessions.map((s) => s.sessionId)).toEqual(['sess-cancelled', 'sess-failed', 'sess-old-failed']);
    expect(week.sessions[2]).toMatchObject({ reason: 'model provider down', compensation: 'none needed' });
    const quiet = await keel(['failed', '--since', '10m']);
    expect(quiet.code).toBe(0);
    expect(quiet.stdout).toMatch(/^no failed or cancelled sessions since/);
    expect((await keel(['failed', '--since', 'soon'])).code).toBe(2);
  });
});

describe('keel runbook', () => {
  it('writes the runbook of issue_refund from its definition', async () => {
    const run = await keel(['runbook', 'issue_refund']);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const md = run.stdout;
    expect(md).toMatch(/^# Runbook: issue_refund/);
    expect(md).toContain('Refund part or all of an order');
    expect(md).toMatch(/\| Risk tier \| irreversible \|/);
    expect(md).toMatch(/\| Criticality \| critical \|/);
    expect(md).toMatch(/\| Approval \| always: a person must approve every call/);
    expect(md).toMatch(/one attempt.*never retried blindly.*status check/);
    expect(md).toMatch(/opens after 3 consecutive failed calls.*60 s/);
    expect(md).toContain(`keel tools disable issue_refund --reason "…" --tools ${TOOLS}`);
    expect(md).toContain(`keel tools enable issue_refund --tools ${TOOLS}`);
    expect(md).toContain('keel circuits reset issue_refund');
    expect(md).toContain('keel failed --since 1h');
    expect(md).toMatch(/a call to it fails the session/);
  });

  it("prints commands that work as written: disabling through the runbook's line disables the tool", async () => {
    const env = { KEEL_AUDIT_URL: path.join(dir, 'switches.sqlite') };
    const md = (await keel(['runbook', 'issue_refund'], env)).stdout;
    const disable = /`keel (tools disable .+)`/.exec(md)![1]!.replace('"…"', 'refunds-api-down');
    const [sub, ...rest] = disable.split(' ');
    expect((await keel([sub!, ...rest], env)).code).toBe(0);
    const listed = JSON.parse((await keel(['tools', 'list', '--json'], env)).stdout) as { disabled: Array<{ tool: string; reason: string }> };
    expect(listed.disabled).toEqual([expect.objectContaining({ tool: 'issue_refund', reason: 'refunds-api-down' })]);
    const enable = /`keel (tools enable .+)`/.exec(md)![1]!.split(' ');
    expect((await keel(enable, env)).code).toBe(0);
    expect((JSON.parse((await keel(['tools', 'list', '--json'], env)).stdout) as { disabled: unknown[] }).disabled).toEqual([]);
  });

  it('says what the model sees when an optional tool is down, and that a read needs no approval', async () => {
    const run = await keel(['runbook', 'search_kb', '--json']);
    expect(run.code).toBe(0);
    const facts = JSON.parse(run.stdout) as ReturnType<typeof runbookFacts> & { markdown: string };
    expect(facts).toMatchObject({ tool: 'search_kb', criticality: 'optional', risk: 'read' });
    expect(facts.whenDown).toMatch(/left out of the tools offered to the model/);
    expect(facts.approval).toMatch(/^never/);
    expect(facts.markdown).not.toContain('keel approvals');
  });

  it('refuses an unknown tool (naming the known ones) and a missing module, with exit 2', async () => {
    const nope = await keel(['runbook', 'nope']);
    expect(nope.code).toBe(2);
    expect(nope.stderr).toMatch(/unknown tool 'nope'.*issue_refund.*search_kb/);
    const noModule = await runKeel(['runbook', 'issue_refund'], { KEEL_AUDIT_URL: storeFile, KEEL_TOOLS: '' });
    expect(noModule.code).toBe(2);
    expect(noModule.stderr).toMatch(/needs --tools <module>/);
    expect((await keel(['runbook'])).code).toBe(2);
  });
});

describe('the report functions', () => {
  it('p95 is the nearest-rank percentile: always one of the values', () => {
    const oneToTwenty = Array.from({ length: 20 }, (_, i) => 20 - i);
    expect(percentile(oneToTwenty, 95)).toBe(19);
    expect(percentile(Array.from({ length: 100 }, (_, i) => i + 1), 95)).toBe(95);
    expect(percentile([7], 95)).toBe(7);
    expect(percentile([3, 1, 2], 50)).toBe(2);
    expect(percentile([], 95)).toBeUndefined();
    expect(() => percentile([1], 0)).toThrow(RangeError);
  });

  it('parses report windows', () => {
    expect(parseSince('30m')).toBe(30 * MIN);
    expect(parseSince('24h')).toBe(DAY);
    expect(parseSince('7d')).toBe(7 * DAY);
    for (const bad of ['', '1w', '-1h', '1.5h', '0m', 'h']) expect(() => parseSince(bad), bad).toThrow(/--since/);
  });

  it('tells execution chains of one workflow ID apart, and skips rows with no run', () => {
    const rows = (id: string, entries: AuditEntry[]): AuditRow[] => entries.map((e, i) => ({ ...e, sessionId: id, seq: i + 1, prevHash: '', hash: '' }));
    const first = session({ chain: 'aaaa', startMsAgo: 2 * HOUR, outcome: 'failed', reason: 'boom' });
    const second = session({ chain: 'bbbb', startMsAgo: HOUR, outcome: 'completed', latencyS: 3 });
    const orphan: AuditEntry = { key: 'cccc:result:x', kind: 'tool_result', at: iso(0), data: { tool: 'get_order', outcome: 'ok' } };
    const summaries = summarizeSessions(rows('reused', [...first, ...second, orphan]));
    expect(summaries.map((s) => [s.chain, s.outcome])).toEqual([
      ['bbbb', 'completed'],
      ['aaaa', 'failed'],
    ]);
    expect(summaries[0]!.latencySeconds).toBe(3);
    // An older trail without compensation rows: the end's summary says what the undos did.
    const legacy = summarizeSessions(rows('legacy', [first[0]!, { ...first[1]!, data: { ...first[1]!.data, compensations: ['create_ticket: failed'] } }]));
    expect(failedSessions(legacy, new Date(0))[0]).toMatchObject({ compensation: 'some failed', undos: [{ tool: 'create_ticket', status: 'failed' }] });
  });

  it('classifies undo outcomes', () => {
    expect(compensationState([])).toBe('none needed');
    expect(compensationState([{ tool: 'a', status: 'discarded' }])).toBe('none needed');
    expect(compensationState([{ tool: 'a', status: 'compensated' }, { tool: 'b', status: 'discarded' }])).toBe('all compensated');
    expect(compensationState([{ tool: 'a', status: 'compensated' }, { tool: 'b', status: 'failed' }])).toBe('some failed');
    expect(compensationState([{ tool: 'a', status: 'pending' }])).toBe('incomplete');
  });

  it('has no verdict without data, and judges each objective against its target', () => {
    const empty = sloReport([], new Date(0));
    expect(empty.lines.map((l) => l.met)).toEqual([null, null, null]);
    const one = sloReport(summarizeSessions(SESSIONS['sess-ok-1']!.map((e, i) => ({ ...e, sessionId: 's', seq: i + 1, prevHash: '', hash: '' }))), new Date(0));
    expect(one.lines.map((l) => [l.objective, l.tool, l.met])).toEqual([
      ['completion_rate', undefined, true],
      ['tool_availability', 'get_order', true],
      ['tool_availability', 'lookup_customer', true],
      ['p95_latency_seconds', undefined, true],
      ['p95_cost_usd', undefined, true],
    ]);
  });

  it('runbooks follow the definition: a write with an undo, no breaker and a rate limit', () => {
    const tool = defineTool({
      name: 'book_slot',
      description: 'Books a calendar slot.',
      input: z.object({ slot: z.string() }),
      risk: 'write',
      idempotentDownstream: true,
      maxAttempts: 3,
      breaker: false,
      rateLimit: { perSecond: 5 },
      run: async () => ({}),
      compensate: async () => ({}),
    });
    const facts = runbookFacts(tool, 'my app/tools.ts');
    expect(facts.retries).toMatch(/up to 3 attempts.*same idempotency key/);
    expect(facts.undo).toMatch(/^compensable/);
    expect(facts.breaker).toMatch(/^off/);
    expect(facts.rateLimit).toMatch(/^5 calls per second/);
    expect(facts.approval).toMatch(/approval policy lists book_slot/);
    expect(facts.commands.disable).toBe(`keel tools disable book_slot --reason "…" --tools 'my app/tools.ts'`);
  });
});

describe.each([
  ['SQLite', async () => openSqliteStore(path.join(dir, `rows-${randomUUID()}.sqlite`))],
  ['PostgreSQL', async () => (await import('../src/store/postgres.js')).openPostgresStore(PG_URL)],
])('auditRows on %s', (_name, open) => {
  let store: KeelStore;
  const tag = randomUUID().slice(0, 8);
  beforeAll(async () => {
    store = await open();
    await store.appendAudit(`${tag}-new`, session({ chain: 'n', startMsAgo: HOUR, outcome: 'completed' }));
    await store.appendAudit(`${tag}-old`, session({ chain: 'o', startMsAgo: 3 * DAY, outcome: 'failed', latencyS: 3 * DAY / 1000 - 60 }));
  });
  afterAll(async () => store?.close());
  const mine = (rows: AuditRow[]) => [...new Set(rows.filter((r) => r.sessionId.startsWith(tag)).map((r) => r.sessionId))];

  it('returns every row of the sessions whose anchor row is in the window, in seq order', async () => {
    const rows = await store.auditRows(new Date(NOW - DAY));
    expect(mine(rows)).toEqual([`${tag}-new`]);
    const own = rows.filter((r) => r.sessionId === `${tag}-new`);
    expect(own.map((r) => r.seq)).toEqual([1, 2]);
    expect(own[1]!.data).toMatchObject({ outcome: 'completed' });
    // By run_end: the old session started three days ago but ended a minute ago.
    expect(mine(await store.auditRows(new Date(NOW - HOUR / 2), 'run_end')).sort()).toEqual([`${tag}-old`]);
    expect(mine(await store.auditRows(new Date(NOW - 7 * DAY))).sort()).toEqual([`${tag}-new`, `${tag}-old`]);
  });
});
