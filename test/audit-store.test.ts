/**
 * The audit trail in Keel's store: append-only, idempotent by key, hash-chained per session, and verified
 * by recomputing the chain. The same behaviour from the SQLite store (a temp file shared by two store
 * instances) and the PostgreSQL store (`postgres://postgres@127.0.0.1:5432/test` unless
 * KEEL_TEST_POSTGRES_URL says otherwise, shared by two pools). Tampering is done the way an intruder would:
 * with raw SQL, around the store.
 */
import { createHash, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import canonicalize from 'canonicalize';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSqliteStore, type AuditEntry, type AuditRow, type KeelStore } from '../src/store/index.js';
import { ROOT } from './support/paths.js';
import { runCommand } from './support/processes.js';
import { postgresBackend, sqliteBackend } from './support/store-backends.js';

const RUN = `audit-test-${randomUUID()}`;
/** A session id of its own for each test; every one starts with RUN, so the PostgreSQL rows go afterwards. */
const sessionName = (label: string) => `${RUN}-${label}-${randomUUID().slice(0, 8)}`;

const T0 = Date.parse('2030-01-01T00:00:00.000Z');
const entry = (key: string, kind: AuditEntry['kind'] = 'tool_intent', data: Record<string, unknown> = { tool: 'get_order', args: { order_id: key } }, ms = 0): AuditEntry => ({
  key,
  kind,
  at: new Date(T0 + ms).toISOString(),
  data,
});
/** A small session: the run, a model turn, an intent, its result, the end. */
const session = (): AuditEntry[] => [
  entry('run', 'run', { agent: 'support', model: 'claude-sonnet-4-5' }, 0),
  entry('turn:1', 'model_turn', { iteration: 1, usage: { input_tokens: 120, output_tokens: 30, cost_usd: 0.0012 }, stopReason: 'tool_use' }, 1),
  entry('intent:toolu_1', 'tool_intent', { tool: 'get_order', tier: 'read', args: { order_id: 'ord_1001' }, idempotencyKey: 'k1' }, 2),
  entry('result:toolu_1', 'tool_result', { tool: 'get_order', outcome: 'ok', latencyMs: 12, resultHash: 'ab'.repeat(32) }, 3),
  entry('end', 'run_end', { outcome: 'completed', stopReason: 'end_turn' }, 4),
];

/**
 * The chain as the specification states it, computed here independently of the store's code: sha256 hex
 * of prevHash + the RFC 8785 canonical JSON of { sessionId, seq, key, kind, at, data }.
 */
function expectChained(rows: AuditRow[], sessionId: string): void {
  let prev = '';
  rows.forEach((r, i) => {
    expect(r.sessionId).toBe(sessionId);
    expect(r.seq).toBe(i + 1);
    expect(r.prevHash).toBe(prev);
    const body = canonicalize({ sessionId: r.sessionId, seq: r.seq, key: r.key, kind: r.kind, at: r.at, data: r.data })!;
    expect(r.hash).toBe(createHash('sha256').update(prev + body).digest('hex'));
    prev = r.hash;
  });
}

describe.each([
  ['sqlite', () => sqliteBackend('keel-audit-')],
  ['postgres', () => postgresBackend({ ownSchema: true })],
] as const)('%s store: audit trail', (_kind, makeBackend) => {
  const backend = makeBackend();
  let store: KeelStore;
  /** A second store instance on the same database: another worker, as far as the store can tell. */
  let other: KeelStore;

  beforeAll(async () => {
    store = await backend.open();
    other = await backend.open();
  });
  afterAll(() => backend.cleanup());

  it('appends entries in order, numbered from 1 and chained by hash', async () => {
    const id = sessionName('order');
    expect(await store.appendAudit(id, session().slice(0, 2))).toBe(2);
    expect(await other.appendAudit(id, session().slice(2))).toBe(3);
    const rows = await store.auditTrail(id);
    expect(rows.map((r) => [r.seq, r.key, r.kind])).toEqual([
      [1, 'run', 'run'],
      [2, 'turn:1', 'model_turn'],
      [3, 'intent:toolu_1', 'tool_intent'],
      [4, 'result:toolu_1', 'tool_result'],
      [5, 'end', 'run_end'],
    ]);
    expect(rows.map((r) => ({ key: r.key, kind: r.kind, at: r.at, data: r.data }))).toEqual(session());
    expectChained(rows, id);
    expect(await store.auditTrail(sessionName('unknown'))).toEqual([]);
    expect(await store.appendAudit(id, [])).toBe(0);
  });

  it('re-appending the same keys (a retry, a replay) adds nothing and keeps the chain', async () => {
    const id = sessionName('idempotent');
    expect(await store.appendAudit(id, session().slice(0, 3))).toBe(3);
    const before = await store.auditTrail(id);
    // A replay writes the same entries again (even with another clock), from another worker too.
    expect(await other.appendAudit(id, session().slice(0, 3).map((e) => ({ ...e, at: new Date().toISOString() })))).toBe(0);
    expect(await store.appendAudit(id, session().slice(0, 2))).toBe(0);
    expect(await store.auditTrail(id)).toEqual(before);
    // A batch mixing old and new keys (and a key twice) adds only the new ones, once, in order.
    expect(await other.appendAudit(id, [...session(), entry('end', 'run_end', { outcome: 'again' })])).toBe(2);
    const rows = await store.auditTrail(id);
    expect(rows.slice(0, 3)).toEqual(before);
    expect(rows.map((r) => r.key)).toEqual(['run', 'turn:1', 'intent:toolu_1', 'result:toolu_1', 'end']);
    expect(rows[4]!.data).toEqual({ outcome: 'completed', stopReason: 'end_turn' });
    expectChained(rows, id);
    expect(await store.verifyAudit(id)).toEqual({ sessions: 1, rows: 5 });
  });

  it('appends from two store instances at once never share a seq or break the chain', async () => {
    const id = sessionName('parallel');
    const stores = [store, other];
    const added = await Promise.all(
      Array.from({ length: 10 }, (_, i) => stores[i % 2]!.appendAudit(id, [entry(`k${i}-a`, 'model_turn', { i }, i), entry(`k${i}-b`, 'tool_intent', { i }, i)])),
    );
    expect(added).toEqual(Array(10).fill(2));
    const rows = await other.auditTrail(id);
    expect(rows.map((r) => r.seq)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    // Each batch landed whole and in order: its two rows are adjacent.
    for (let i = 0; i < 10; i++) {
      const a = rows.findIndex((r) => r.key === `k${i}-a`);
      expect(rows[a + 1]!.key).toBe(`k${i}-b`);
    }
    expectChained(rows, id);
    expect(await store.verifyAudit(id)).toEqual({ sessions: 1, rows: 20 });
  });

  it('a second wave of the same parallel appends adds nothing', async () => {
    const id = sessionName('parallel-retry');
    const batch = (i: number) => [entry(`k${i}`, 'tool_result', { i }, i)];
    await Promise.all(Array.from({ length: 10 }, (_, i) => store.appendAudit(id, batch(i))));
    const added = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 ? store : other).appendAudit(id, batch(i))));
    expect(added).toEqual(Array(10).fill(0));
    expect((await store.auditTrail(id)).map((r) => r.seq)).toEqual(Array.from({ length: 10 }, (_, i) => i + 1));
  });

  it('keeps data as canonical JSON: key order does not matter, undefined is dropped, a split surrogate is kept as U+FFFD', async () => {
    const id = sessionName('canonical');
    const data = { z: 1, a: { y: [1, 'two', null], b: undefined }, text: 'cut 😀'.slice(0, 5) };
    expect(await store.appendAudit(id, [entry('x', 'tool_result', data)])).toBe(1);
    const [row] = await other.auditTrail(id);
    expect(row!.data).toEqual({ a: { y: [1, 'two', null] }, text: 'cut \uFFFD', z: 1 });
    expect(Object.keys(row!.data)).toEqual(['a', 'text', 'z']);
    expectChained([row!], id);
    expect((await store.verifyAudit(id)).broken).toBeUndefined();
  });

  it('refuses entries it cannot chain, naming the entry and the field, and adds none of the batch', async () => {
    const id = sessionName('invalid');
    await expect(store.appendAudit(id, [entry('ok'), { ...entry('bad'), kind: 'nope' as AuditEntry['kind'] }])).rejects.toThrow(/entry 1 .*\(bad\): kind must be one of/);
    await expect(store.appendAudit(id, [{ ...entry('bad'), at: 'yesterday' }])).rejects.toThrow(/at must be an ISO 8601 time/);
    await expect(store.appendAudit(id, [{ ...entry('bad'), key: '' }])).rejects.toThrow(/key must be a non-empty string/);
    await expect(store.appendAudit(id, [{ ...entry('bad'), data: [] as unknown as Record<string, unknown> }])).rejects.toThrow(/data must be an object/);
    expect(await store.auditTrail(id)).toEqual([]);
  });

  describe('verification', () => {
    it('passes on an untouched trail', async () => {
      const id = sessionName('intact');
      await store.appendAudit(id, session());
      expect(await other.verifyAudit(id)).toEqual({ sessions: 1, rows: 5 });
      expect(await other.verifyAudit(sessionName('none'))).toEqual({ sessions: 0, rows: 0 });
    });

    it('names the row whose data was changed', async () => {
      const id = sessionName('edited');
      await store.appendAudit(id, session());
      await backend.query('UPDATE keel_audit SET data = ? WHERE session_id = ? AND seq = 4', [JSON.stringify({ tool: 'get_order', outcome: 'error', latencyMs: 12 }), id]);
      expect(await store.verifyAudit(id)).toEqual({
        sessions: 1,
        rows: 5,
        broken: { sessionId: id, seq: 4, key: 'result:toolu_1', problem: 'row 4 (tool_result result:toolu_1) was changed: its hash does not match its content' },
      });
    });

    it('names a row whose kind, time or hash was changed', async () => {
      for (const [column, value] of [['kind', 'approval'], ['at', '2031-01-01T00:00:00.000Z'], ['hash', '0'.repeat(64)]] as const) {
        const id = sessionName(`edited-${column}`);
        await store.appendAudit(id, session());
        await backend.query(`UPDATE keel_audit SET ${column} = ? WHERE session_id = ? AND seq = 2`, [value, id]);
        expect((await store.verifyAudit(id)).broken, column).toMatchObject({ sessionId: id, seq: 2, problem: expect.stringMatching(/^row 2 \(.*\) was changed/) });
      }
    });

    it('names a removed row by the gap it leaves', async () => {
      const id = sessionName('removed');
      await store.appendAudit(id, session());
      await backend.query('DELETE FROM keel_audit WHERE session_id = ? AND seq = 3', [id]);
      expect(await store.verifyAudit(id)).toEqual({ sessions: 1, rows: 4, broken: { sessionId: id, seq: 3, problem: 'row 3 was removed: row 4 follows row 2' } });
    });

    it('names a removed first row', async () => {
      const id = sessionName('removed-first');
      await store.appendAudit(id, session());
      await backend.query('DELETE FROM keel_audit WHERE session_id = ? AND seq = 1', [id]);
      expect((await store.verifyAudit(id)).broken).toEqual({ sessionId: id, seq: 1, problem: 'row 1 was removed: the trail starts at row 2' });
    });

    it('names a row that was removed and the rest renumbered: it no longer chains', async () => {
      const id = sessionName('renumbered');
      await store.appendAudit(id, session());
      await backend.query('DELETE FROM keel_audit WHERE session_id = ? AND seq = 3', [id]);
      await backend.query('UPDATE keel_audit SET seq = seq - 1 WHERE session_id = ? AND seq = 4', [id]);
      // Row 4 moved to 3: its hash covered seq 4, so its content no longer matches.
      expect((await store.verifyAudit(id)).broken).toMatchObject({ sessionId: id, seq: 3, key: 'result:toolu_1', problem: expect.stringMatching(/^row 3 .* was changed/) });
    });

    it('names a row re-hashed after an edit: it no longer chains to the one before', async () => {
      const id = sessionName('rehashed');
      await store.appendAudit(id, session());
      const [, second] = await store.auditTrail(id);
      // An intruder who edits row 2 and recomputes its hash still breaks row 3's link.
      const data = { ...second!.data, iteration: 9 };
      const body = canonicalize({ sessionId: id, seq: 2, key: second!.key, kind: second!.kind, at: second!.at, data })!;
      const hash = createHash('sha256').update(second!.prevHash + body).digest('hex');
      await backend.query('UPDATE keel_audit SET data = ?, hash = ? WHERE session_id = ? AND seq = 2', [canonicalize(data), hash, id]);
      expect((await store.verifyAudit(id)).broken).toMatchObject({ sessionId: id, seq: 3, key: 'intent:toolu_1', problem: expect.stringMatching(/^row 3 does not chain to row 2/) });
    });

    it('across every session: counts sessions and rows, and names the first broken row', async () => {
      // A database of its own, so the counts are exact and no other test's tampering shows.
      const fresh = makeBackend();
      const [a, b] = [await fresh.open(), await fresh.open()];
      try {
        expect(await a.verifyAudit()).toEqual({ sessions: 0, rows: 0 });
        const ids = ['s-1', 's-2', 's-3'].map(sessionName);
        await a.appendAudit(ids[0]!, session());
        await b.appendAudit(ids[1]!, session().slice(0, 3));
        await a.appendAudit(ids[2]!, session().slice(0, 1));
        expect(await b.verifyAudit()).toEqual({ sessions: 3, rows: 9 });

        await fresh.query('UPDATE keel_audit SET data = ? WHERE session_id = ? AND seq = 2', ['{"iteration":2}', ids[1]]);
        await fresh.query('DELETE FROM keel_audit WHERE session_id = ? AND seq = 1', [ids[2]]);
        expect(await a.verifyAudit()).toEqual({
          sessions: 2,
          rows: 8,
          broken: { sessionId: ids[1], seq: 2, key: 'turn:1', problem: 'row 2 (model_turn turn:1) was changed: its hash does not match its content' },
        });
        expect(await a.verifyAudit(ids[0])).toEqual({ sessions: 1, rows: 5 });
      } finally {
        await fresh.cleanup();
      }
    });
  });
});

describe('sqlite store: audit trail across processes', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'keel-audit-procs-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('four processes appending to one session at once never share a seq or break the chain', async () => {
    const file = path.join(dir, 'keel.sqlite');
    const id = sessionName('procs');
    const script = path.join(dir, 'append.mts');
    writeFileSync(
      script,
      `import { openSqliteStore } from ${JSON.stringify(pathToFileURL(path.join(ROOT, 'src', 'store', 'sqlite.ts')).href)};
const [file, id, startAt, proc] = process.argv.slice(2);
const store = openSqliteStore(file!);
while (Date.now() < Number(startAt)) { /* spin: every process starts together */ }
let added = 0;
for (let i = 0; i < 15; i++) {
  const at = new Date().toISOString();
  added += await store.appendAudit(id!, [
    { key: \`p\${proc}-\${i}-a\`, kind: 'tool_intent', at, data: { proc, i } },
    { key: \`p\${proc}-\${i}-b\`, kind: 'tool_result', at, data: { proc, i } },
  ]);
}
await store.close();
process.stdout.write(String(added));
`,
    );
    await openSqliteStore(file).close(); // the tables exist before the race
    const loader = pathToFileURL(path.join(ROOT, 'node_modules', 'tsx', 'dist', 'loader.mjs')).href;
    const startAt = String(Date.now() + 4_000);
    const runs = await Promise.all(Array.from({ length: 4 }, (_, p) => runCommand(process.execPath, ['--import', loader, script, file, id, startAt, String(p)], {})));
    for (const r of runs) expect(r.code, r.stderr).toBe(0);
    expect(runs.map((r) => Number(r.stdout))).toEqual([30, 30, 30, 30]);

    const store = openSqliteStore(file);
    try {
      const rows = await store.auditTrail(id);
      expect(rows.map((r) => r.seq)).toEqual(Array.from({ length: 120 }, (_, i) => i + 1));
      expectChained(rows, id);
      expect(await store.verifyAudit()).toEqual({ sessions: 1, rows: 120 });
    } finally {
      await store.close();
    }
  });
});
