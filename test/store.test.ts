/**
 * The conversation store: the same behaviour from the SQLite store (a temp file) and the PostgreSQL store
 * (a local server, `postgres://postgres@127.0.0.1:5432/test` unless KEEL_TEST_POSTGRES_URL says otherwise).
 */
import { createHash, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { ConversationMissingError, openStore, type ConversationStore } from '../src/store/index.js';
import { openPostgresStore } from '../src/store/postgres.js';
import { BLOB_FIELD } from '../src/store/types.js';
import type { ConversationMessage } from '../src/workflows/types.js';
import { PG_URL, postgresBackend, sqliteBackend } from './support/store-backends.js';

const RUN = `store-test-${randomUUID()}`;
const conversationId = () => `${RUN}-${randomUUID()}`;

// Every conversation ID and blob text this file writes to PostgreSQL contains RUN; they go when the file is done.
afterAll(async () => {
  const client = new pg.Client({ connectionString: PG_URL });
  await client.connect();
  try {
    await client.query('DELETE FROM keel_conversation_messages WHERE conversation_id LIKE $1', [`${RUN}-%`]);
    await client.query('DELETE FROM keel_blobs WHERE content LIKE $1', [`%${RUN}%`]);
  } finally {
    await client.end();
  }
});

const user = (text: string): ConversationMessage => ({ role: 'user', content: text });
const assistant = (text: string): ConversationMessage => ({ role: 'assistant', content: [{ type: 'text', text }] });

describe.each([
  ['sqlite', () => sqliteBackend()],
  ['postgres', () => postgresBackend()],
] as const)('%s store', (kind, makeBackend) => {
  const backend = makeBackend();
  let store: ConversationStore;

  beforeAll(async () => {
    store = await backend.open();
  });
  afterAll(() => backend.cleanup());

  it(`says it is ${kind}`, () => {
    expect(store.kind).toBe(kind);
  });

  it('reads back what was written, in order, across several writes', async () => {
    const id = conversationId();
    const first = [user('refund order 17'), assistant('looking it up')];
    const second = [user('thanks'), assistant('done'), user('bye')];
    await store.write(id, 0, first);
    await store.write(id, 2, second);
    expect(await store.read(id, 5)).toEqual([...first, ...second]);
    expect(await store.read(id, 3)).toEqual([...first, second[0]]);
    expect(await store.read(id, 0)).toEqual([]);
  });

  it('replaces what an earlier attempt left at the same positions, and a retry adds nothing', async () => {
    const id = conversationId();
    await store.write(id, 0, [user('a'), assistant('stale b'), user('stale c')]);
    await store.write(id, 1, [assistant('b'), user('c')]);
    await store.write(id, 1, [assistant('b'), user('c')]);
    expect(await store.read(id, 3)).toEqual([user('a'), assistant('b'), user('c')]);
    await expect(store.read(id, 4)).rejects.toThrow(ConversationMissingError);
  });

  it('refuses to read more messages than are stored, naming the conversation', async () => {
    const id = conversationId();
    await store.write(id, 0, [user('one'), assistant('two')]);
    const err = await store.read(id, 3).then(
      () => expect.unreachable(),
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ConversationMissingError);
    expect((err as Error).message).toContain(`conversation ${id}: `);
    expect((err as Error).message).toMatch(/has 2 of its 3 messages.*KEEL_AUDIT_URL/);
    await expect(store.read(conversationId(), 1)).rejects.toThrow(/has 0 of its 1 messages/);
  });

  it('resolves a tool_result blob reference to the blob text and drops the reference', async () => {
    const id = conversationId();
    const text = `order 17: ${'line of output\n'.repeat(2000)}${RUN} ${randomUUID()}`;
    const hash = await store.putBlob(text);
    expect(hash).toBe(createHash('sha256').update(text).digest('hex'));
    expect(await store.getBlob(hash)).toBe(text);
    const call = { type: 'tool_use', id: 'toolu_1', name: 'lookup_order', input: { orderId: 17, nested: { b: 1, a: [2, 'x'] } } };
    await store.write(id, 0, [
      user('look up order 17'),
      { role: 'assistant', content: [call] },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_1', content: 'order 17: line of…', [BLOB_FIELD]: hash }, { type: 'text', text: 'and?' }] },
    ]);
    const messages = await store.read(id, 3);
    expect(messages[1]).toEqual({ role: 'assistant', content: [call] });
    expect(messages[2]).toEqual({ role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_1', content: text }, { type: 'text', text: 'and?' }] });
    expect(messages[2]?.content[0]).not.toHaveProperty(BLOB_FIELD);
  });

  it('fails a read whose blob is missing rather than sending the preview', async () => {
    const id = conversationId();
    const missing = createHash('sha256').update(randomUUID()).digest('hex');
    expect(await store.getBlob(missing)).toBeUndefined();
    await store.write(id, 0, [{ role: 'user', content: [{ type: 'tool_result', tool_use_id: 't', content: 'preview', [BLOB_FIELD]: missing }] }]);
    await expect(store.read(id, 1)).rejects.toThrow(`blob ${missing} is missing`);
  });

  it('keeps a blob once: the same text twice gives the same hash and one row', async () => {
    const text = `same text ${RUN} ${randomUUID()}`;
    const [a, b] = [await store.putBlob(text), await store.putBlob(text)];
    expect(a).toBe(b);
    expect(Number((await backend.query<{ n: number | string }>('SELECT count(*) AS n FROM keel_blobs WHERE hash = ?', [a]))[0]?.n)).toBe(1);
    const other = await store.putBlob(`${text}!`);
    expect(other).not.toBe(a);
    expect(await store.getBlob(a)).toBe(text);
  });

  it("lets two store instances see each other's writes and blobs", async () => {
    const other = await backend.open();
    const id = conversationId();
    await store.write(id, 0, [user('from the first')]);
    expect(await other.read(id, 1)).toEqual([user('from the first')]);
    await other.write(id, 0, [user('rewritten by the second'), assistant('appended by the second')]);
    expect(await store.read(id, 2)).toEqual([user('rewritten by the second'), assistant('appended by the second')]);
    const hash = await other.putBlob(`shared ${id}`);
    expect(await store.getBlob(hash)).toBe(`shared ${id}`);
  });
});

describe('postgres store: opening', () => {
  it('creates its tables when several workers open a fresh database at once', async () => {
    const schema = `keel_store_test_${randomUUID().replaceAll('-', '')}`;
    const admin = new pg.Client({ connectionString: PG_URL });
    await admin.connect();
    try {
      await admin.query(`CREATE SCHEMA ${schema}`);
      const url = new URL(PG_URL);
      url.searchParams.set('options', `-c search_path=${schema}`);
      const stores = await Promise.all(Array.from({ length: 6 }, () => openPostgresStore(url.toString())));
      try {
        const { rows } = await admin.query<{ table_name: string }>('SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name', [schema]);
        expect(rows.map((r) => r.table_name)).toEqual(['keel_audit', 'keel_blobs', 'keel_breakers', 'keel_conversation_messages', 'keel_disabled_tools', 'keel_rate_clocks']);
        const id = conversationId();
        await stores[0]!.write(id, 0, [user('fresh')]);
        expect(await stores[5]!.read(id, 1)).toEqual([user('fresh')]);
      } finally {
        await Promise.all(stores.map((s) => s.close()));
      }
    } finally {
      await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await admin.end();
    }
  });

  it.each([
    ['an unreachable server', 'postgres://keel:s3cret-pw@127.0.0.1:1/test', /ECONNREFUSED/],
    ['a database that does not exist', `postgres://postgres:s3cret-pw@${new URL(PG_URL).host}/keel_no_such_db`, /database "keel_no_such_db" does not exist/],
  ])('names KEEL_AUDIT_URL and the reason, never the password, for %s', async (_what, url, why) => {
    const err = await openPostgresStore(url).then(
      () => expect.unreachable(),
      (e: unknown) => e as Error,
    );
    expect(err.message).toMatch(/^KEEL_AUDIT_URL: cannot open the PostgreSQL store at 127\.0\.0\.1:\d+\/(test|keel_no_such_db) /);
    expect(err.message).toMatch(why);
    expect(err.message).not.toContain('s3cret-pw');
  });
});

describe('openStore', () => {
  it('opens the PostgreSQL store for a postgres:// KEEL_AUDIT_URL', async () => {
    const store = await openStore(loadConfig({ KEEL_AUDIT_URL: PG_URL }));
    const id = conversationId();
    try {
      expect(store.kind).toBe('postgres');
      await store.write(id, 0, [user('via openStore')]);
      expect(await store.read(id, 1)).toEqual([user('via openStore')]);
    } finally {
      await store.close();
    }
    const direct = await openPostgresStore(PG_URL);
    try {
      expect(await direct.read(id, 1)).toEqual([user('via openStore')]);
    } finally {
      await direct.close();
    }
  });

  it('opens the SQLite store for a sqlite: KEEL_AUDIT_URL', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'keel-store-'));
    try {
      const store = await openStore(loadConfig({ KEEL_AUDIT_URL: `sqlite:${path.join(dir, 'audit.sqlite')}` }));
      expect(store.kind).toBe('sqlite');
      await store.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
