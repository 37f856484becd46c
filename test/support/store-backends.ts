/**
 * Keel's store on each backend, as the store tests open it: a SQLite file in a temp directory, or the
 * machine's PostgreSQL (optionally in a schema of its own, so counts are exact), with raw SQL beside the
 * store for looking (and tampering) around it.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { openSqliteStore, type KeelStore } from '../../src/store/index.js';
import { openPostgresStore } from '../../src/store/postgres.js';

/** The PostgreSQL the tests use (trust auth on our machines). */
export const PG_URL = process.env.KEEL_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

/** One database the store opens, and raw SQL around it. */
export interface StoreBackend {
  /** Opens another store instance on the database (another worker, as far as the store can tell). */
  open(): Promise<KeelStore>;
  /** Runs raw SQL with `?` placeholders against the same database; returns its rows. */
  query<R extends Record<string, unknown> = Record<string, unknown>>(text: string, params?: unknown[]): Promise<R[]>;
  /** Closes every store it opened, then removes the database. */
  cleanup(): Promise<void>;
}

/** Wraps a backend's `open` and `cleanup` so cleanup first closes every store opened. */
function closingOpened(backend: StoreBackend): StoreBackend {
  const opened: KeelStore[] = [];
  return {
    ...backend,
    async open() {
      const store = await backend.open();
      opened.push(store);
      return store;
    },
    async cleanup() {
      await Promise.all(opened.splice(0).map((s) => s.close()));
      await backend.cleanup();
    },
  };
}

/** A SQLite file in a temp directory, made at the first use (a run that filters the tests out leaves nothing). */
export function sqliteBackend(prefix = 'keel-store-'): StoreBackend {
  let dir: string | undefined;
  const file = () => path.join((dir ??= mkdtempSync(path.join(tmpdir(), prefix))), 'keel.sqlite');
  return closingOpened({
    open: async () => openSqliteStore(file()),
    async query<R>(text: string, params: unknown[] = []) {
      const db = new Database(file());
      try {
        const statement = db.prepare(text);
        return (statement.reader ? statement.all(...params) : (statement.run(...params), [])) as R[];
      } finally {
        db.close();
      }
    },
    async cleanup() {
      if (dir) rmSync(dir, { recursive: true, force: true });
    },
  });
}

/** The machine's PostgreSQL; with `ownSchema`, a fresh schema dropped at cleanup. */
export function postgresBackend(opts: { ownSchema?: boolean } = {}): StoreBackend {
  const schema = opts.ownSchema ? `keel_test_${randomUUID().replaceAll('-', '')}` : undefined;
  const url = new URL(PG_URL);
  if (schema) url.searchParams.set('options', `-c search_path=${schema}`);
  const run = async <R>(text: string, params: unknown[] = [], connection = url.toString()): Promise<R[]> => {
    const client = new pg.Client({ connectionString: connection });
    await client.connect();
    try {
      let n = 0;
      return (await client.query(text.replace(/\?/g, () => `$${++n}`), params)).rows as R[];
    } finally {
      await client.end();
    }
  };
  let created = false;
  return closingOpened({
    async open() {
      if (schema && !created) await run(`CREATE SCHEMA IF NOT EXISTS ${schema}`, [], PG_URL);
      created = true;
      return openPostgresStore(url.toString());
    },
    query: (text, params) => run(text, params),
    async cleanup() {
      if (schema && created) await run(`DROP SCHEMA IF EXISTS ${schema} CASCADE`, [], PG_URL);
    },
  });
}
