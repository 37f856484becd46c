/**
 * The stream bus for processes that share Keel's data directory (the SQLite store's setting): workers
 * append events to a small table in a SQLite file of its own (`keel-stream.sqlite` beside the store's
 * file, so the stream's churn never waits on the store's write lock nor grows its log), and each bus
 * instance that has subscribers tails the table by row id with one poller every 20 ms. WAL mode lets the
 * pollers read while workers write. Rows are ephemeral: each is pruned a minute after it was published,
 * so a watcher that falls a minute behind loses events, never the table its disk.
 *
 * Tailing by id is safe here because SQLite has one writer at a time: a row becomes visible only after
 * every row with a smaller id has. AUTOINCREMENT keeps ids from being reused once old rows are pruned
 * (plain rowids restart below a poller's position when the table empties).
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { dropReporter, silentStreamLogger, type StreamBusLogger } from './report.js';
import type { StreamBus, StreamEvent } from './types.js';

/** The file a SQLite stream bus uses in a directory. */
export const SQLITE_STREAM_FILE = 'keel-stream.sqlite';

/** Options of {@link openSqliteStreamBus}. */
export interface SqliteStreamBusOptions {
  /** Where dropped events are reported (nowhere by default). */
  logger?: StreamBusLogger;
  /** How often the poller reads new rows while there are subscribers, in ms (20). */
  pollMs?: number;
  /** How long a row is kept after it was published, in ms (60,000). */
  retentionMs?: number;
}

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS keel_stream_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    event TEXT NOT NULL
  );
  CREATE INDEX IF NOT EXISTS keel_stream_events_at ON keel_stream_events (at);
`;
/** Rows per read: a poller behind by more reads again at once. */
const BATCH = 1_000;
/** How often old rows are pruned, in ms (by whichever process publishes or polls). */
const PRUNE_EVERY_MS = 5_000;

interface Subscription {
  listener: (event: StreamEvent) => void;
  /** Rows up to this id were published before the subscription: not for it. */
  since: number;
}

/**
 * Opens (and on first use creates) a SQLite stream bus in `file`.
 * @throws Error when the file cannot be opened or created (a configuration problem, found at start).
 */
export function openSqliteStreamBus(file: string, opts: SqliteStreamBusOptions = {}): StreamBus {
  const pollMs = opts.pollMs ?? 20;
  const retentionMs = opts.retentionMs ?? 60_000;
  const report = dropReporter(opts.logger ?? silentStreamLogger, 'sqlite');
  mkdirSync(path.dirname(file), { recursive: true });
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  // The events are ephemeral: no fsync per insert (WAL with NORMAL loses at most the last ones on power loss).
  db.pragma('synchronous = NORMAL');
  // Publish must not hold a worker up: wait briefly for another writer, then drop the event.
  db.pragma('busy_timeout = 250');
  db.exec(SCHEMA);
  const insert = db.prepare('INSERT INTO keel_stream_events (session_id, at, event) VALUES (?, ?, ?)');
  const after = db.prepare<[number, number], { id: number; session_id: string; event: string }>(
    'SELECT id, session_id, event FROM keel_stream_events WHERE id > ? ORDER BY id LIMIT ?',
  );
  const lastId = db.prepare<[], { id: number | null }>('SELECT MAX(id) AS id FROM keel_stream_events');
  const prune = db.prepare('DELETE FROM keel_stream_events WHERE at < ?');

  const subscriptions = new Map<string, Set<Subscription>>();
  let subscribers = 0;
  let position = 0;
  let timer: NodeJS.Timeout | undefined;
  let prunedAt = 0;
  let closed = false;

  const maybePrune = () => {
    const now = Date.now();
    if (now - prunedAt < PRUNE_EVERY_MS) return;
    prunedAt = now;
    try {
      prune.run(now - retentionMs);
    } catch (err) {
      report.dropped('prune', err, 0);
    }
  };

  const poll = () => {
    try {
      for (;;) {
        const rows = after.all(position, BATCH);
        for (const row of rows) {
          position = row.id;
          const subs = subscriptions.get(row.session_id);
          if (!subs) continue;
          const event = JSON.parse(row.event) as StreamEvent;
          for (const sub of [...subs]) {
            if (row.id <= sub.since) continue;
            try {
              sub.listener(event);
            } catch (err) {
              report.dropped('listener', err);
            }
          }
        }
        if (rows.length < BATCH) break;
      }
    } catch (err) {
      report.dropped('poll', err, 0);
    }
    maybePrune();
  };

  return {
    kind: 'sqlite',
    publish(event) {
      if (closed) return;
      try {
        insert.run(event.sessionId, event.at, JSON.stringify(event));
      } catch (err) {
        report.dropped('publish', err);
        return;
      }
      maybePrune();
    },
    async subscribe(sessionId, listener) {
      if (closed) throw new Error('stream bus closed');
      const since = lastId.get()?.id ?? 0;
      const sub: Subscription = { listener, since };
      let subs = subscriptions.get(sessionId);
      if (!subs) subscriptions.set(sessionId, (subs = new Set()));
      subs.add(sub);
      subscribers += 1;
      if (!timer) {
        position = since;
        timer = setInterval(poll, pollMs);
      }
      let subscribed = true;
      return () => {
        if (!subscribed) return;
        subscribed = false;
        subs.delete(sub);
        if (subs.size === 0 && subscriptions.get(sessionId) === subs) subscriptions.delete(sessionId);
        subscribers -= 1;
        if (subscribers === 0 && timer) {
          clearInterval(timer);
          timer = undefined;
        }
      };
    },
    async close() {
      if (closed) return;
      closed = true;
      if (timer) clearInterval(timer);
      timer = undefined;
      subscriptions.clear();
      db.close();
    },
  };
}
