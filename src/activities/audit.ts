/**
 * `appendAudit`: the local activity that writes a session's audit entries to Keel's store (which skips
 * keys it already has, so retries and replays never duplicate a row, and chains each session's rows by
 * hash). The entries arrive redacted from the workflow.
 */
import type { KeelStore } from '../store/index.js';
import type { AppendAuditInput } from '../workflows/audit.js';

/** Creates the audit activities for a worker. */
export function createAuditActivities(store: KeelStore) {
  return {
    /** Appends the entries; returns how many were new. */
    async appendAudit({ sessionId, entries }: AppendAuditInput): Promise<number> {
      return store.appendAudit(sessionId, entries);
    },
  };
}
