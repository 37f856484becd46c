/**
 * Keel's store on a SQLite file (the embedded default: `<KEEL_DATA_DIR>/keel.sqlite`). WAL mode and a busy
 * timeout let several worker processes on one machine share it; workers on several machines need the
 * PostgreSQL store. Every read-modify-write of resilience state runs in an IMMEDIATE transaction: it takes
 * the file's write lock before it reads, so two processes can never both act on the same old row (the
 * other waits, up to the busy timeout, and then reads what the first wrote). Audit appends do the same, so
 * two appenders to one session never take the same seq or chain from the same row.
 */
import { createHash } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { ConversationMessage } from '../workflows/types.js';
import { ConversationMissingError, STORE_SCHEMA, type AuditEntry, type BreakerPolicy, type KeelStore } from './types.js';
import { resolveBlobs } from './blobs.js';
import { AuditVerifier, chainEntries, checkEntries, toAuditRow, type AuditRecord } from './audit.js';
import {
  breakerParams,
  checkPolicy,
  checkRate,
  decideAdmission,
  decideRecord,
  epochMs,
  slotSpacingUs,
  toBreakerRow,
  toDisabledTool,
  waitMs,
  type BreakerRecord,
  type DisabledRecord,
} from './resilience.js';

const BREAKER_COLUMNS = `tool, state, failures, opened_at AS "openedAt", next_probe_at AS "nextProbeAt",
  probe_started_at AS "probeStartedAt", updated_at AS "updatedAt"`;
const DISABLED_COLUMNS = 'tool, reason, disabled_by AS "by", disabled_at AS "at"';
const AUDIT_COLUMNS = 'session_id AS "sessionId", seq, key, kind, at, data, prev_hash AS "prevHash", hash';

/** Opens (and on first use creates) a SQLite store. */
export function openSqliteStore(file: string): KeelStore {
  mkdirSync(path.dirname(file), { recursive: true });
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma('busy_timeout = 5000');
  db.exec(STORE_SCHEMA);
  const upsert = db.prepare('INSERT OR REPLACE INTO keel_conversation_messages (conversation_id, seq, message) VALUES (?, ?, ?)');
  const select = db.prepare('SELECT message FROM keel_conversation_messages WHERE conversation_id = ? AND seq < ? ORDER BY seq');
  const putBlob = db.prepare('INSERT OR IGNORE INTO keel_blobs (hash, content) VALUES (?, ?)');
  const getBlob = db.prepare('SELECT content FROM keel_blobs WHERE hash = ?');
  const writeAll = db.transaction((id: string, from: number, messages: ConversationMessage[]) => {
    messages.forEach((m, i) => upsert.run(id, from + i, JSON.stringify(m)));
  });
  const blob = async (hash: string) => (getBlob.get(hash) as { content: string } | undefined)?.content;

  const breakerOf = db.prepare<[string], BreakerRecord>(`SELECT ${BREAKER_COLUMNS} FROM keel_breakers WHERE tool = ?`);
  const allBreakers = db.prepare<[], BreakerRecord>(`SELECT ${BREAKER_COLUMNS} FROM keel_breakers ORDER BY tool`);
  const putBreaker = db.prepare(
    `INSERT INTO keel_breakers (tool, state, failures, opened_at, next_probe_at, probe_started_at, updated_at)
     VALUES (?, ?, ?, ?, ?, ?, ?)
     ON CONFLICT (tool) DO UPDATE SET state = excluded.state, failures = excluded.failures, opened_at = excluded.opened_at,
       next_probe_at = excluded.next_probe_at, probe_started_at = excluded.probe_started_at, updated_at = excluded.updated_at`,
  );
  const disabledOf = db.prepare<[string], DisabledRecord>(`SELECT ${DISABLED_COLUMNS} FROM keel_disabled_tools WHERE tool = ?`);
  const allDisabled = db.prepare<[], DisabledRecord>(`SELECT ${DISABLED_COLUMNS} FROM keel_disabled_tools ORDER BY tool`);
  const putDisabled = db.prepare(
    `INSERT INTO keel_disabled_tools (tool, reason, disabled_by, disabled_at) VALUES (?, ?, ?, ?)
     ON CONFLICT (tool) DO UPDATE SET reason = excluded.reason, disabled_by = excluded.disabled_by, disabled_at = excluded.disabled_at`,
  );
  const deleteBreaker = db.prepare('DELETE FROM keel_breakers WHERE tool = ?');
  const deleteDisabled = db.prepare('DELETE FROM keel_disabled_tools WHERE tool = ?');
  // One statement moves the clock (epoch µs): max(next free time, now) + spacing; the slot is the value before.
  const takeSlot = db.prepare<[string, number, number, number, number], { nextFreeUs: number }>(
    `INSERT INTO keel_rate_clocks (tool, next_free_us) VALUES (?, ? + ?)
     ON CONFLICT (tool) DO UPDATE SET next_free_us = max(next_free_us, ?) + ?
     RETURNING next_free_us AS "nextFreeUs"`,
  );

  const lastAudit = db.prepare<[string], { seq: number; hash: string }>('SELECT seq, hash FROM keel_audit WHERE session_id = ? ORDER BY seq DESC LIMIT 1');
  const hasAuditKey = db.prepare<[string, string], { one: number }>('SELECT 1 AS one FROM keel_audit WHERE session_id = ? AND key = ?');
  const insertAudit = db.prepare<[string, number, string, string, string, string, string, string]>(
    'INSERT INTO keel_audit (session_id, seq, key, kind, at, data, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
  );
  const auditOf = db.prepare<[string], AuditRecord>(`SELECT ${AUDIT_COLUMNS} FROM keel_audit WHERE session_id = ? ORDER BY seq`);
  const allAudit = db.prepare<[], AuditRecord>(`SELECT ${AUDIT_COLUMNS} FROM keel_audit ORDER BY session_id, seq`);
  const auditSince = db.prepare<[string, string], AuditRecord>(
    `SELECT ${AUDIT_COLUMNS} FROM keel_audit
     WHERE session_id IN (SELECT session_id FROM keel_audit WHERE kind = ? AND at >= ?) ORDER BY session_id, seq`,
  );

  // The atomic sections: each re-reads the row under the write lock and applies the same rules.
  const admitLocked = db.transaction((tool: string, disabled: DisabledRecord | undefined, policy: BreakerPolicy, now: number) => {
    const decision = decideAdmission(tool, disabled, breakerOf.get(tool), policy, now);
    if (decision.write) putBreaker.run(...breakerParams(decision.write));
    return decision.admission;
  });
  const recordLocked = db.transaction((tool: string, ok: boolean, policy: BreakerPolicy, now: number) => {
    const decision = decideRecord(tool, breakerOf.get(tool), ok, policy, now);
    if (decision.write) putBreaker.run(...breakerParams(decision.write));
    return decision.transition;
  });
  const appendLocked = db.transaction((sessionId: string, entries: AuditEntry[]) => {
    const rows = chainEntries(sessionId, entries, lastAudit.get(sessionId), (key) => hasAuditKey.get(sessionId, key) !== undefined);
    for (const r of rows) insertAudit.run(r.sessionId, r.seq, r.key, r.kind, r.at, r.data, r.prevHash, r.hash);
    return rows.length;
  });
  const reserveLocked = db.transaction((tool: string, spacingUs: number, nowUs: number) => takeSlot.get(tool, nowUs, spacingUs, nowUs, spacingUs)!.nextFreeUs - spacingUs);

  return {
    kind: 'sqlite',
    async write(id, from, messages) {
      writeAll(id, from, messages);
    },
    async read(id, count) {
      const rows = select.all(id, count) as Array<{ message: string }>;
      if (rows.length < count) {
        throw new ConversationMissingError(
          `conversation ${id}: the store (${file}) has ${rows.length} of its ${count} messages; was the store lost, or does this worker use another one (KEEL_AUDIT_URL)?`,
        );
      }
      return resolveBlobs(rows.map((r) => JSON.parse(r.message) as ConversationMessage), blob);
    },
    async putBlob(text) {
      const hash = createHash('sha256').update(text).digest('hex');
      putBlob.run(hash, text);
      return hash;
    },
    getBlob: blob,

    async admit(tool, policy, now) {
      checkPolicy(tool, policy);
      const at = epochMs(now);
      const disabled = disabledOf.get(tool);
      // The common case (closed, or open and not due) is a plain read; only a probe takes the lock.
      const first = decideAdmission(tool, disabled, breakerOf.get(tool), policy, at);
      return first.write ? admitLocked.immediate(tool, disabled, policy, at) : first.admission;
    },
    async record(tool, ok, policy, now) {
      checkPolicy(tool, policy);
      const at = epochMs(now);
      // A success on a healthy (or never failed) tool changes nothing: skip the write lock.
      if (ok && !decideRecord(tool, breakerOf.get(tool), ok, policy, at).write) return undefined;
      return recordLocked.immediate(tool, ok, policy, at);
    },
    async breakers() {
      return allBreakers.all().map(toBreakerRow);
    },
    async disable(tool, reason, by) {
      putDisabled.run(tool, reason, by, Date.now());
    },
    async enable(tool) {
      return deleteDisabled.run(tool).changes > 0;
    },
    async resetBreaker(tool) {
      return deleteBreaker.run(tool).changes > 0;
    },
    async disabledTools() {
      return allDisabled.all().map(toDisabledTool);
    },
    async reserveRateSlot(tool, perSecond, now) {
      checkRate(tool, perSecond);
      const at = epochMs(now);
      return waitMs(reserveLocked.immediate(tool, slotSpacingUs(perSecond), at * 1000), at);
    },

    async appendAudit(sessionId, entries) {
      checkEntries(sessionId, entries);
      return entries.length === 0 ? 0 : appendLocked.immediate(sessionId, entries);
    },
    async auditTrail(sessionId) {
      return auditOf.all(sessionId).map(toAuditRow);
    },
    async auditRows(since, anchor = 'run') {
      return auditSince.all(anchor, since.toISOString()).map(toAuditRow);
    },
    async verifyAudit(sessionId) {
      const verifier = new AuditVerifier();
      if (sessionId !== undefined) {
        const rows = auditOf.all(sessionId);
        if (rows.length) verifier.add(sessionId, rows);
        return verifier.result();
      }
      // One statement reads one snapshot (WAL); rows stream, one session in memory at a time.
      let current: AuditRecord[] = [];
      for (const row of allAudit.iterate()) {
        if (current.length && current[0]!.sessionId !== row.sessionId) {
          verifier.add(current[0]!.sessionId, current);
          current = [];
        }
        current.push(row);
      }
      if (current.length) verifier.add(current[0]!.sessionId, current);
      return verifier.result();
    },

    async close() {
      db.close();
    },
  };
}
