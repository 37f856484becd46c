/**
 * The audit trail's chain rules, shared by every store implementation: how an entry is checked and
 * normalised, how a row's hash is made, and how a stored chain is verified. The rules are pure; each store
 * runs `chainEntries` inside its own atomic section (an IMMEDIATE transaction on SQLite, a per-session
 * advisory lock on PostgreSQL), which is what keeps seq and the chain unbroken across processes.
 *
 * Hash recipe: `hash = sha256_hex(prevHash + canonical)`, where `canonical` is the RFC 8785 (JCS) canonical
 * JSON, made by the `canonicalize` package, of `{ sessionId, seq, key, kind, at, data }`; `prevHash` is ''
 * for seq 1. `data` is stored as its own canonical JSON, so what is hashed is exactly what is stored.
 */
import { createHash } from 'node:crypto';
import canonicalize from 'canonicalize';
import { AUDIT_KINDS, type AuditEntry, type AuditKind, type AuditRow, type AuditVerification } from './types.js';

/** An audit row as the table holds it (`data` as canonical JSON text). */
export interface AuditRecord {
  sessionId: string;
  seq: number;
  key: string;
  kind: string;
  at: string;
  data: string;
  prevHash: string;
  hash: string;
}

/** The RFC 8785 canonical JSON of a value that is JSON already (normalised by `normaliseData`). */
function canonical(value: unknown): string {
  const text = canonicalize(value);
  if (text === undefined) throw new RangeError('audit: a value with no JSON form');
  return text;
}

/** Lone UTF-16 surrogates (half of a pair, e.g. from slicing a string mid-emoji): RFC 8785 refuses them. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

function wellFormed(value: unknown): unknown {
  if (typeof value === 'string') return value.replace(LONE_SURROGATE, '\uFFFD');
  if (Array.isArray(value)) return value.map(wellFormed);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k.replace(LONE_SURROGATE, '\uFFFD'), wellFormed(v)]));
  }
  return value;
}

/**
 * `data` as the canonical JSON text the table keeps: first its plain JSON form (as `JSON.stringify` makes
 * it: undefined dropped, NaN and Infinity as null, dates as strings), with lone surrogates replaced by
 * U+FFFD, so an entry that JSON can carry is never refused (a refused entry would stall the session's
 * trail behind retries).
 */
export function canonicalData(data: Record<string, unknown>): string {
  return canonical(wellFormed(JSON.parse(JSON.stringify(data)) as unknown));
}

/** The hash of a row: see the file header. */
export function auditHash(row: Omit<AuditRecord, 'hash' | 'data'> & { data: unknown }): string {
  const body = canonical({ sessionId: row.sessionId, seq: row.seq, key: row.key, kind: row.kind, at: row.at, data: row.data });
  return createHash('sha256').update(row.prevHash + body).digest('hex');
}

/** @throws RangeError naming the entry and the field when an entry cannot go into a trail. */
export function checkEntries(sessionId: string, entries: AuditEntry[]): void {
  if (typeof sessionId !== 'string' || sessionId.length === 0) throw new RangeError('audit: sessionId must be a non-empty string');
  if (!Array.isArray(entries)) throw new RangeError('audit: entries must be an array');
  entries.forEach((e, i) => {
    const what = `audit entry ${i} of session '${sessionId}'`;
    if (typeof e?.key !== 'string' || e.key.length === 0) throw new RangeError(`${what}: key must be a non-empty string`);
    if (!AUDIT_KINDS.includes(e.kind)) throw new RangeError(`${what} (${e.key}): kind must be one of ${AUDIT_KINDS.join(', ')} (got ${JSON.stringify(e.kind)})`);
    if (typeof e.at !== 'string' || !Number.isFinite(Date.parse(e.at))) throw new RangeError(`${what} (${e.key}): at must be an ISO 8601 time (got ${JSON.stringify(e.at)})`);
    if (e.data === null || typeof e.data !== 'object' || Array.isArray(e.data)) throw new RangeError(`${what} (${e.key}): data must be an object`);
  });
}

/**
 * The rows to insert after `last` (the session's newest row, or none): entries whose key the session has
 * (`has`) or that came earlier in the same batch are skipped; the rest are numbered and chained in order.
 * Call it only inside the store's atomic section, with `last` and `has` read there.
 */
export function chainEntries(
  sessionId: string,
  entries: AuditEntry[],
  last: { seq: number; hash: string } | undefined,
  has: (key: string) => boolean,
): AuditRecord[] {
  const seen = new Set<string>();
  const rows: AuditRecord[] = [];
  let seq = last?.seq ?? 0;
  let prevHash = last?.hash ?? '';
  for (const e of entries) {
    if (seen.has(e.key) || has(e.key)) continue;
    seen.add(e.key);
    const data = canonicalData(e.data);
    const row = { sessionId, seq: ++seq, key: e.key, kind: e.kind, at: e.at, data, prevHash };
    const hash = auditHash({ ...row, data: JSON.parse(data) as unknown });
    rows.push({ ...row, hash });
    prevHash = hash;
  }
  return rows;
}

/** A stored row as the API returns it. */
export function toAuditRow(r: AuditRecord): AuditRow {
  return { sessionId: r.sessionId, seq: Number(r.seq), key: r.key, kind: r.kind as AuditKind, at: r.at, data: JSON.parse(r.data) as Record<string, unknown>, prevHash: r.prevHash, hash: r.hash };
}

type Broken = NonNullable<AuditVerification['broken']>;

/** A row by seq and what it is, for the problems: `row 7 (tool_result result:toolu_1)`. */
const named = (r: AuditRecord) => `row ${r.seq} (${r.kind} ${r.key})`;

/**
 * Checks one session's stored rows (in seq order) and returns the first problem, or undefined when the
 * chain is intact. A gap is reported before a broken link, since removing a row breaks both.
 */
export function verifyChain(sessionId: string, rows: AuditRecord[]): Broken | undefined {
  let prev: AuditRecord | undefined;
  for (const row of rows) {
    const seq = Number(row.seq);
    const expected = prev ? Number(prev.seq) + 1 : 1;
    if (seq !== expected) {
      const missing = seq - 1 > expected ? `rows ${expected}–${seq - 1} were removed` : `row ${expected} was removed`;
      const problem = prev ? `${missing}: row ${seq} follows row ${prev.seq}` : `${missing}: the trail starts at row ${seq}`;
      return { sessionId, seq: expected, problem };
    }
    let data: unknown;
    try {
      data = JSON.parse(row.data);
    } catch {
      return { sessionId, seq, key: row.key, problem: `${named(row)} was changed: its data is not JSON` };
    }
    if (auditHash({ ...row, seq, data }) !== row.hash) {
      return { sessionId, seq, key: row.key, problem: `${named(row)} was changed: its hash does not match its content` };
    }
    if (row.prevHash !== (prev?.hash ?? '')) {
      return {
        sessionId,
        seq,
        key: row.key,
        problem: prev ? `row ${seq} does not chain to row ${prev.seq}: its prev_hash is not row ${prev.seq}'s hash` : `row 1 does not start the chain: its prev_hash is not empty`,
      };
    }
    prev = row;
  }
  return undefined;
}

/** Verification across sessions: feed each session's rows, then read the result. */
export class AuditVerifier {
  private sessions = 0;
  private rows = 0;
  private broken: Broken | undefined;

  /** Checks one session's rows (in seq order); only the first problem across all sessions is kept. */
  add(sessionId: string, rows: AuditRecord[]): void {
    this.sessions++;
    this.rows += rows.length;
    this.broken ??= verifyChain(sessionId, rows);
  }

  result(): AuditVerification {
    return { sessions: this.sessions, rows: this.rows, ...(this.broken ? { broken: this.broken } : {}) };
  }
}
