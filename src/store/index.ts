/**
 * Opening Keel's store from configuration: `KEEL_AUDIT_URL` when set (a SQLite file path or
 * `sqlite:<path>`; `postgres://…` for a store every worker shares), else `<KEEL_DATA_DIR>/keel.sqlite`.
 */
import path from 'node:path';
import { ConfigError, dataDir, type KeelConfig } from '../config.js';
import { openSqliteStore } from './sqlite.js';
import type { KeelStore } from './types.js';

export {
  ConversationMissingError,
  type Admission,
  type AuditEntry,
  type AuditKind,
  type AuditRow,
  type AuditStorage,
  type AuditVerification,
  type BreakerPolicy,
  type BreakerRow,
  type BreakerState,
  type BreakerTransition,
  type ConversationStorage,
  type ConversationStore,
  type DisabledTool,
  type KeelStore,
  type ResilienceStorage,
} from './types.js';
export { openSqliteStore } from './sqlite.js';

/** Opens the store the configuration names. */
export async function openStore(config: KeelConfig): Promise<KeelStore> {
  const url = config.KEEL_AUDIT_URL;
  if (!url) return openSqliteStore(path.join(dataDir(config), 'keel.sqlite'));
  if (/^postgres(ql)?:\/\//.test(url)) {
    const { openPostgresStore } = await import('./postgres.js');
    return openPostgresStore(url);
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(url) && !url.startsWith('sqlite:')) {
    throw new ConfigError(`KEEL_AUDIT_URL: expected a SQLite file path, sqlite:<path> or postgres://… (got a ${url.split(':')[0]} URL)`);
  }
  return openSqliteStore(path.resolve(url.replace(/^sqlite:(\/\/)?/, '')));
}
