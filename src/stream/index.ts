/**
 * Streaming out of durable runs: what a running session streams (model text per turn and attempt, tool
 * progress) and the bus that carries it from workers to whoever watches (see ./types.ts). The bus follows
 * Keel's store, so every process that shares a store shares a stream: `sqlite` (a file beside the store,
 * for processes on one machine), `postgres` (LISTEN/NOTIFY, for workers anywhere), or `memory` (one
 * process, for tests and embedded use). Watchers subscribe per session through {@link subscribeSession}.
 */
import path from 'node:path';
import { ConfigError, dataDir, type KeelConfig } from '../config.js';
import { openSqliteStreamBus, SQLITE_STREAM_FILE } from './sqlite.js';
import type { StreamBusLogger } from './report.js';
import type { StreamBus } from './types.js';

export type {
  StreamBus,
  StreamEvent,
  SessionStreamEvent,
  TextDeltaEvent,
  AttemptFailedEvent,
  ToolStartedEvent,
  ToolProgressEvent,
  ToolFinishedEvent,
} from './types.js';
export type { StreamBusLogger } from './report.js';
export { createMemoryStreamBus, type MemoryStreamBusOptions } from './memory.js';
export { openSqliteStreamBus, SQLITE_STREAM_FILE, type SqliteStreamBusOptions } from './sqlite.js';
export { subscribeSession, sessionStreamFilter } from './session.js';

/** Options of {@link openStreamBus}. */
export interface OpenStreamBusOptions {
  /** Where the bus reports the events it drops (nowhere by default; the worker passes its logger). */
  logger?: StreamBusLogger;
}

/**
 * Opens the stream bus of the store the configuration selects, as `openStore` does: with `KEEL_AUDIT_URL`
 * a `postgres://` URL, LISTEN/NOTIFY on that database; with it a SQLite path, a `keel-stream.sqlite` file
 * beside that file; unset, `<KEEL_DATA_DIR>/keel-stream.sqlite`. Opening makes no PostgreSQL connection
 * (they are made when first needed); a SQLite file that cannot be created throws here.
 * @throws ConfigError for a `KEEL_AUDIT_URL` that is neither a SQLite path nor a PostgreSQL URL.
 */
export async function openStreamBus(config: KeelConfig, opts: OpenStreamBusOptions = {}): Promise<StreamBus> {
  const url = config.KEEL_AUDIT_URL;
  const logger = opts.logger ? { logger: opts.logger } : {};
  if (!url) return openSqliteStreamBus(path.join(dataDir(config), SQLITE_STREAM_FILE), logger);
  if (/^postgres(ql)?:\/\//.test(url)) {
    const { openPostgresStreamBus } = await import('./postgres.js');
    return openPostgresStreamBus(url, logger);
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(url) && !url.startsWith('sqlite:')) {
    throw new ConfigError(`KEEL_AUDIT_URL: expected a SQLite file path, sqlite:<path> or postgres://… (got a ${url.split(':')[0]} URL)`);
  }
  const storeFile = path.resolve(url.replace(/^sqlite:(\/\/)?/, ''));
  return openSqliteStreamBus(path.join(path.dirname(storeFile), SQLITE_STREAM_FILE), logger);
}
