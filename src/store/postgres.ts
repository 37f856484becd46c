/**
 * Keel's store on PostgreSQL (`KEEL_AUDIT_URL=postgres://…`): the store every worker shares, on one
 * machine or many. It keeps the same tables as the SQLite store, creates them on first use (under an
 * advisory lock, so workers starting together do not race), and behaves the same: idempotent upserts by
 * position, reads that refuse a short conversation, blobs kept once by SHA-256, and resilience state
 * changed atomically: a breaker's read-modify-write runs in a transaction holding its row with
 * `SELECT … FOR UPDATE`, and the rate clock moves in one `INSERT … ON CONFLICT DO UPDATE … RETURNING`.
 * An audit append runs in a transaction holding the session's advisory lock, so appenders to one session
 * take turns (and appenders to different sessions do not wait for each other).
 * The URL may carry a password, so it is never logged or echoed; errors name the server by host, port and
 * database only.
 */
import { createHash } from 'node:crypto';
import pg from 'pg';
import type { ConversationMessage } from '../workflows/types.js';
import { ConversationMissingError, STORE_SCHEMA, type KeelStore } from './types.js';
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

/** Key of the transaction-scoped advisory lock that serialises schema creation ('keel' in ASCII). */
const SCHEMA_LOCK = 0x6b65656c;

/**
 * First key of the two-key advisory locks that serialise audit appends per session ('kaud' in ASCII); the
 * second is `hashtext(session_id)`. Two-key locks do not share a key space with the one-key schema lock.
 */
const AUDIT_LOCK = 0x6b617564;
/** Rows per round trip when `verifyAudit` walks every session. */
const VERIFY_PAGE = 5_000;

const AUDIT_COLUMNS = 'session_id AS "sessionId", seq, key, kind, at, data, prev_hash AS "prevHash", hash';

const BREAKER_COLUMNS = `tool, state, failures, opened_at AS "openedAt", next_probe_at AS "nextProbeAt",
  probe_started_at AS "probeStartedAt", updated_at AS "updatedAt"`;
const DISABLED_COLUMNS = 'tool, reason, disabled_by AS "by", disabled_at AS "at"';
const PUT_BREAKER = `INSERT INTO keel_breakers (tool, state, failures, opened_at, next_probe_at, probe_started_at, updated_at)
  VALUES ($1, $2, $3, $4, $5, $6, $7)
  ON CONFLICT (tool) DO UPDATE SET state = EXCLUDED.state, failures = EXCLUDED.failures, opened_at = EXCLUDED.opened_at,
    next_probe_at = EXCLUDED.next_probe_at, probe_started_at = EXCLUDED.probe_started_at, updated_at = EXCLUDED.updated_at`;

/** A breaker row as pg returns it: BIGINT columns come back as strings. */
type BreakerQueryRow = Omit<BreakerRecord, 'openedAt' | 'nextProbeAt' | 'probeStartedAt' | 'updatedAt'> &
  Record<'openedAt' | 'nextProbeAt' | 'probeStartedAt' | 'updatedAt', string | null>;

const msOrNull = (v: string | null): number | null => (v === null ? null : Number(v));
const toBreakerRecord = (r: BreakerQueryRow): BreakerRecord => ({
  tool: r.tool,
  state: r.state,
  failures: r.failures,
  openedAt: msOrNull(r.openedAt),
  nextProbeAt: msOrNull(r.nextProbeAt),
  probeStartedAt: msOrNull(r.probeStartedAt),
  updatedAt: Number(r.updatedAt),
});
const toDisabledRecord = (r: Omit<DisabledRecord, 'at'> & { at: string }): DisabledRecord => ({ ...r, at: Number(r.at) });

/**
 * Opens (and on first use creates) a PostgreSQL store: a pool of at most 4 connections.
 * Messages are stored as JSON text, exactly as the SQLite store writes them.
 * @param url a `postgres://` or `postgresql://` URL (the value of `KEEL_AUDIT_URL`).
 * @throws Error naming `KEEL_AUDIT_URL` and the reason (never the password) when the server cannot be
 * reached or the tables cannot be created.
 */
export async function openPostgresStore(url: string): Promise<KeelStore> {
  const where = describe(url);
  const pool = new pg.Pool({ connectionString: url, max: 4, connectionTimeoutMillis: 10_000 });
  // A pooled connection that breaks while idle (a server restart) is dropped by the pool and replaced on
  // the next query; without a listener the 'error' event would crash the worker.
  pool.on('error', () => {});
  try {
    await inTransaction(pool, async (client) => {
      await client.query('SELECT pg_advisory_xact_lock($1)', [SCHEMA_LOCK]);
      await client.query(STORE_SCHEMA);
    });
  } catch (err) {
    await pool.end().catch(() => {});
    throw new Error(`KEEL_AUDIT_URL: cannot open the PostgreSQL store at ${where} (${reason(err, secretsOf(url))})`);
  }

  const blob = async (hash: string) =>
    (await pool.query<{ content: string }>('SELECT content FROM keel_blobs WHERE hash = $1', [hash])).rows[0]?.content;
  const breakerOf = async (q: pg.Pool | pg.PoolClient, tool: string, lock = false) => {
    const { rows } = await q.query<BreakerQueryRow>(`SELECT ${BREAKER_COLUMNS} FROM keel_breakers WHERE tool = $1${lock ? ' FOR UPDATE' : ''}`, [tool]);
    return rows[0] && toBreakerRecord(rows[0]);
  };
  let closed = false;
  return {
    kind: 'postgres',
    async write(id, from, messages) {
      if (messages.length === 0) return;
      // One statement, so one transaction: every message lands, or none does.
      await pool.query(
        `INSERT INTO keel_conversation_messages (conversation_id, seq, message)
         SELECT $1, $2::integer + (t.ord - 1)::integer, t.message FROM unnest($3::text[]) WITH ORDINALITY AS t(message, ord)
         ON CONFLICT (conversation_id, seq) DO UPDATE SET message = EXCLUDED.message`,
        [id, from, messages.map((m) => JSON.stringify(m))],
      );
    },
    async read(id, count) {
      const { rows } = await pool.query<{ message: string }>(
        'SELECT message FROM keel_conversation_messages WHERE conversation_id = $1 AND seq < $2 ORDER BY seq',
        [id, count],
      );
      if (rows.length < count) {
        throw new ConversationMissingError(
          `conversation ${id}: the store (PostgreSQL at ${where}) has ${rows.length} of its ${count} messages; was the store lost, or does this worker use another one (KEEL_AUDIT_URL)?`,
        );
      }
      return resolveBlobs(rows.map((r) => JSON.parse(r.message) as ConversationMessage), blob);
    },
    async putBlob(text) {
      const hash = createHash('sha256').update(text).digest('hex');
      await pool.query('INSERT INTO keel_blobs (hash, content) VALUES ($1, $2) ON CONFLICT (hash) DO NOTHING', [hash, text]);
      return hash;
    },
    getBlob: blob,

    async admit(tool, policy, now) {
      checkPolicy(tool, policy);
      const at = epochMs(now);
      // One round trip for the common case (closed, or open and not due): the switch and the breaker.
      const { rows } = await pool.query<Partial<BreakerQueryRow> & { dReason: string | null; dBy: string | null; dAt: string | null }>(
        `SELECT d.reason AS "dReason", d.disabled_by AS "dBy", d.disabled_at AS "dAt",
           b.tool, b.state, b.failures, b.opened_at AS "openedAt", b.next_probe_at AS "nextProbeAt",
           b.probe_started_at AS "probeStartedAt", b.updated_at AS "updatedAt"
         FROM (SELECT $1::text AS tool) t
         LEFT JOIN keel_disabled_tools d ON d.tool = t.tool
         LEFT JOIN keel_breakers b ON b.tool = t.tool`,
        [tool],
      );
      const r = rows[0]!;
      const disabled = r.dReason != null ? { tool, reason: r.dReason, by: r.dBy!, at: Number(r.dAt) } : undefined;
      const breaker = r.tool != null ? toBreakerRecord(r as BreakerQueryRow) : undefined;
      const first = decideAdmission(tool, disabled, breaker, policy, at);
      if (!first.write) return first.admission;
      // A probe is due: decide again on the locked row, so one caller across the fleet wins; the others
      // wait for its commit and then see the half-open row with a fresh probe.
      return inTransaction(pool, async (client) => {
        const decision = decideAdmission(tool, disabled, await breakerOf(client, tool, true), policy, at);
        if (decision.write) await client.query(PUT_BREAKER, breakerParams(decision.write));
        return decision.admission;
      });
    },
    async record(tool, ok, policy, now) {
      checkPolicy(tool, policy);
      const at = epochMs(now);
      // A success on a healthy (or never failed) tool changes nothing: no transaction, no lock.
      if (ok && !decideRecord(tool, await breakerOf(pool, tool), ok, policy, at).write) return undefined;
      return inTransaction(pool, async (client) => {
        // A first failure has no row to lock yet: create a closed one (a concurrent creator wins, we lock theirs).
        if (!ok) {
          await client.query(
            `INSERT INTO keel_breakers (tool, state, failures, updated_at) VALUES ($1, 'closed', 0, $2) ON CONFLICT (tool) DO NOTHING`,
            [tool, at],
          );
        }
        const decision = decideRecord(tool, await breakerOf(client, tool, true), ok, policy, at);
        if (decision.write) await client.query(PUT_BREAKER, breakerParams(decision.write));
        return decision.transition;
      });
    },
    async breakers() {
      const { rows } = await pool.query<BreakerQueryRow>(`SELECT ${BREAKER_COLUMNS} FROM keel_breakers ORDER BY tool COLLATE "C"`);
      return rows.map((r) => toBreakerRow(toBreakerRecord(r)));
    },
    async disable(tool, reason, by) {
      await pool.query(
        `INSERT INTO keel_disabled_tools (tool, reason, disabled_by, disabled_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (tool) DO UPDATE SET reason = EXCLUDED.reason, disabled_by = EXCLUDED.disabled_by, disabled_at = EXCLUDED.disabled_at`,
        [tool, reason, by, Date.now()],
      );
    },
    async enable(tool) {
      return ((await pool.query('DELETE FROM keel_disabled_tools WHERE tool = $1', [tool])).rowCount ?? 0) > 0;
    },
    async resetBreaker(tool) {
      return ((await pool.query('DELETE FROM keel_breakers WHERE tool = $1', [tool])).rowCount ?? 0) > 0;
    },
    async disabledTools() {
      const { rows } = await pool.query<Omit<DisabledRecord, 'at'> & { at: string }>(`SELECT ${DISABLED_COLUMNS} FROM keel_disabled_tools ORDER BY tool COLLATE "C"`);
      return rows.map((r) => toDisabledTool(toDisabledRecord(r)));
    },
    async reserveRateSlot(tool, perSecond, now) {
      checkRate(tool, perSecond);
      const at = epochMs(now);
      const spacingUs = slotSpacingUs(perSecond);
      // One statement, atomic under concurrency: the conflicting row is locked and the update sees the
      // latest committed clock (epoch µs). The slot is the clock before this reservation moved it.
      const { rows } = await pool.query<{ nextFreeUs: string }>(
        `INSERT INTO keel_rate_clocks AS s (tool, next_free_us) VALUES ($1, $2::bigint + $3::bigint)
         ON CONFLICT (tool) DO UPDATE SET next_free_us = GREATEST(s.next_free_us, $2::bigint) + $3::bigint
         RETURNING next_free_us AS "nextFreeUs"`,
        [tool, at * 1000, spacingUs],
      );
      return waitMs(Number(rows[0]!.nextFreeUs) - spacingUs, at);
    },

    async appendAudit(sessionId, entries) {
      checkEntries(sessionId, entries);
      if (entries.length === 0) return 0;
      return inTransaction(pool, async (client) => {
        await client.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [AUDIT_LOCK, sessionId]);
        const last = (await client.query<{ seq: number; hash: string }>('SELECT seq, hash FROM keel_audit WHERE session_id = $1 ORDER BY seq DESC LIMIT 1', [sessionId])).rows[0];
        const { rows: known } = await client.query<{ key: string }>('SELECT key FROM keel_audit WHERE session_id = $1 AND key = ANY($2::text[])', [
          sessionId,
          entries.map((e) => e.key),
        ]);
        const has = new Set(known.map((k) => k.key));
        const rows = chainEntries(sessionId, entries, last, (key) => has.has(key));
        if (rows.length === 0) return 0;
        // One statement for the batch; the primary key and the unique key are the backstop for the lock.
        await client.query(
          `INSERT INTO keel_audit (session_id, seq, key, kind, at, data, prev_hash, hash)
           SELECT $1, t.seq, t.key, t.kind, t.at, t.data, t.prev_hash, t.hash
           FROM unnest($2::integer[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[]) AS t(seq, key, kind, at, data, prev_hash, hash)`,
          [sessionId, ...(['seq', 'key', 'kind', 'at', 'data', 'prevHash', 'hash'] as const).map((c) => rows.map((r) => r[c]))],
        );
        return rows.length;
      });
    },
    async auditTrail(sessionId) {
      const { rows } = await pool.query<AuditRecord>(`SELECT ${AUDIT_COLUMNS} FROM keel_audit WHERE session_id = $1 ORDER BY seq`, [sessionId]);
      return rows.map(toAuditRow);
    },
    async auditRows(since, anchor = 'run') {
      const { rows } = await pool.query<AuditRecord>(
        `SELECT ${AUDIT_COLUMNS} FROM keel_audit
         WHERE session_id IN (SELECT session_id FROM keel_audit WHERE kind = $1 AND at >= $2) ORDER BY session_id COLLATE "C", seq`,
        [anchor, since.toISOString()],
      );
      return rows.map(toAuditRow);
    },
    async verifyAudit(sessionId) {
      const verifier = new AuditVerifier();
      if (sessionId !== undefined) {
        const { rows } = await pool.query<AuditRecord>(`SELECT ${AUDIT_COLUMNS} FROM keel_audit WHERE session_id = $1 ORDER BY seq`, [sessionId]);
        if (rows.length) verifier.add(sessionId, rows);
        return verifier.result();
      }
      // Every session, in pages ordered by (session, seq), one session in memory at a time. Each session's
      // rows are read in order, and appends only add rows after the last, so pages never skip a row.
      let current: AuditRecord[] = [];
      let after: [string, number] | undefined;
      for (;;) {
        const { rows } = await pool.query<AuditRecord>(
          `SELECT ${AUDIT_COLUMNS} FROM keel_audit ${after ? 'WHERE (session_id, seq) > ($2, $3)' : ''} ORDER BY session_id, seq LIMIT $1`,
          after ? [VERIFY_PAGE, ...after] : [VERIFY_PAGE],
        );
        for (const row of rows) {
          if (current.length && current[0]!.sessionId !== row.sessionId) {
            verifier.add(current[0]!.sessionId, current);
            current = [];
          }
          current.push(row);
        }
        if (rows.length < VERIFY_PAGE) break;
        const last = rows.at(-1)!;
        after = [last.sessionId, last.seq];
      }
      if (current.length) verifier.add(current[0]!.sessionId, current);
      return verifier.result();
    },

    async close() {
      if (closed) return;
      closed = true;
      await pool.end();
    },
  };
}

async function inTransaction<T>(pool: pg.Pool, work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const result = await work(client);
    await client.query('COMMIT');
    client.release();
    return result;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    // Destroy the connection rather than return one in an unknown state to the pool.
    client.release(err instanceof Error ? err : true);
    throw err;
  }
}

/** The server as `host:port/database`, with no user, password or query parameters. */
function describe(url: string): string {
  try {
    const u = new URL(url);
    return `${u.host || 'the default host'}${u.pathname.length > 1 ? u.pathname : ''}`;
  } catch {
    return 'an unparsable URL';
  }
}

/** The passwords a URL may carry (in the authority or as `?password=`), to scrub from error text. */
function secretsOf(url: string): string[] {
  try {
    const u = new URL(url);
    return [u.password, safeDecode(u.password), u.searchParams.get('password') ?? ''].filter((s) => s.length > 0);
  } catch {
    return [];
  }
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** Why a connection failed, in words: the message, else the error code (e.g. an AggregateError of ECONNREFUSEDs). */
function reason(err: unknown, secrets: string[]): string {
  const e = err as { message?: unknown; code?: unknown; errors?: unknown };
  let text =
    (typeof e.message === 'string' && e.message) ||
    (typeof e.code === 'string' && e.code) ||
    (Array.isArray(e.errors) && e.errors.map((x) => reason(x, [])).join('; ')) ||
    String(err);
  for (const s of secrets) text = text.split(s).join('***');
  return text;
}
