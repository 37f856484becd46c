/**
 * Keel's store contract: what every worker, the CLI and the gateway share through one database.
 *
 * Conversations: a session's conversation lives here, not in Temporal's history. The workflow sends each
 * model call only what is new (the messages since the last call), and the `callModel` activity appends
 * them and reads the whole conversation back by session and position. Large tool results are kept once,
 * as content-addressed blobs, and the conversation refers to them. So each model call costs history
 * O(what is new), not O(conversation).
 *
 * Resilience: each tool's circuit breaker, the tools operators have disabled, and each tool's rate-limit
 * clock. They are fleet-wide because they live in the store every worker opens; each method that changes
 * them is atomic across processes and machines (see the SQLite and PostgreSQL implementations).
 *
 * Audit: each session's append-only, hash-chained trail of steps (the run, model turns, authorization
 * decisions, approvals, tool intents and results, undos, the end), written by the workflow through a local
 * activity and kept outside Temporal, so it outlives histories and crashes (see `audit.ts`).
 */
import type { ConversationMessage } from '../workflows/types.js';

/** Where a session's conversation is kept. Writes are idempotent, so activity retries never duplicate. */
export interface ConversationStorage {
  /**
   * Writes `messages` at positions `from`, `from + 1`, …, replacing what a failed earlier attempt may have
   * left there (the workflow's view is the truth).
   */
  write(conversationId: string, from: number, messages: ConversationMessage[]): Promise<void>;
  /**
   * The first `count` messages, with blob references resolved.
   * @throws ConversationMissingError when fewer are stored (a lost store, or a worker using another one).
   */
  read(conversationId: string, count: number): Promise<ConversationMessage[]>;
  /** Keeps a text once under its SHA-256 (hex) and returns that hash. */
  putBlob(text: string): Promise<string>;
  /** A blob by hash, or undefined. */
  getBlob(hash: string): Promise<string | undefined>;
}

/** A tool's circuit: `closed` lets calls through, `open` refuses them, `half_open` lets one probe through. */
export type BreakerState = 'closed' | 'open' | 'half_open';

/** When a tool's circuit opens and how long it stays open (per tool, from `defineTool`). */
export interface BreakerPolicy {
  /** Consecutive failures that open it (a whole number >= 1; Keel's default is 3). */
  failureThreshold: number;
  /**
   * Milliseconds the circuit stays open before one probe is let through (>= 0; Keel's default is 60 000).
   * Also how long a half-open probe may stay in flight before it counts as lost and another caller probes.
   */
  resetAfterMs: number;
}

/** One tool's breaker as stored. Times are ISO 8601 strings (UTC). */
export interface BreakerRow {
  tool: string;
  state: BreakerState;
  /** Consecutive failures recorded since the last success. */
  failures: number;
  /** When it last opened (set while open or half-open). */
  openedAt?: string;
  /** Open: when the next probe may go. Half-open: when the probe in flight counts as lost. */
  nextProbeAt?: string;
  /** Half-open: when the probe in flight was let through. */
  probeStartedAt?: string;
  updatedAt: string;
}

/** A tool an operator has disabled (`keel tools disable`): every worker refuses its calls. */
export interface DisabledTool {
  tool: string;
  /** Why, in the operator's words; calls refused because of it carry it. */
  reason: string;
  /** Who disabled it. */
  by: string;
  /** When (ISO 8601). */
  at: string;
}

/** What `admit` decided for one call. */
export type Admission =
  /** `probe`: this call is the half-open probe; its `record` closes or reopens the circuit. */
  | { allowed: true; probe: boolean }
  /** The circuit is open (or half-open with a probe in flight) until `nextProbeAt` (ISO 8601). */
  | { allowed: false; reason: 'open'; message: string; nextProbeAt: string }
  | { allowed: false; reason: 'disabled'; message: string };

/** A breaker's state change, as `record` reports it. `failures` is the count after the change. */
export interface BreakerTransition {
  from: BreakerState;
  to: BreakerState;
  failures: number;
}

/**
 * Fleet-wide breakers, operator switches and rate limits. Every `now` defaults to `new Date()`: the
 * caller's clock, so workers should keep their clocks in sync (NTP) for windows measured in seconds.
 */
export interface ResilienceStorage {
  /**
   * Asks whether a call to `tool` may go now. Disabled → not allowed (`disabled`, with the operator's
   * reason). Closed, or no breaker row → allowed. Open and `now` < `nextProbeAt` → not allowed (`open`).
   * Open and due (`now` >= `nextProbeAt`) → atomically moves to half-open and lets this caller through as
   * the probe: exactly one caller across all workers and processes wins; the others see `open`.
   * Half-open with a probe in flight → not allowed (`open`), unless the probe has been in flight for
   * `resetAfterMs` or more (a lost probe): then this caller becomes the probe, again exactly one.
   * @throws RangeError for a policy out of range (threshold < 1, negative reset) or an invalid `now`.
   */
  admit(tool: string, policy: BreakerPolicy, now?: Date): Promise<Admission>;
  /**
   * Records a call's outcome (`ok`: the downstream worked). Success: closed, failures 0 — except while
   * open, where only the half-open probe may close it (a call admitted before it opened, succeeding late,
   * changes nothing). Failure:
   * failures + 1; at `failureThreshold` or more (or any failure while half-open) the circuit opens with
   * `openedAt` = now and `nextProbeAt` = now + `resetAfterMs`; a failure while already open only counts.
   * Atomic across processes. Returns the transition when the state changed, else undefined.
   */
  record(tool: string, ok: boolean, policy: BreakerPolicy, now?: Date): Promise<BreakerTransition | undefined>;
  /** Every tool with a breaker row (a tool gets one at its first recorded failure), by tool name. */
  breakers(): Promise<BreakerRow[]>;
  /** Disables `tool` on every worker (replacing the reason, who and when if it already was). */
  disable(tool: string, reason: string, by: string): Promise<void>;
  /** Enables `tool` again; false when it was not disabled. */
  enable(tool: string): Promise<boolean>;
  /** Forgets `tool`'s breaker (closed, no failures): an operator's reset. False when it had none. */
  resetBreaker(tool: string): Promise<boolean>;
  /** The disabled tools, by tool name. */
  disabledTools(): Promise<DisabledTool[]>;
  /**
   * Fleet-wide rate limit of `perSecond` calls per second for `tool`: reserves the next free slot and
   * returns how many whole milliseconds the caller must wait before calling (0 = now). Slots are spaced
   * 1000 / `perSecond` ms apart (to the microsecond) across all workers: one shared "next free time" per
   * tool, moved forward atomically; an idle tool's clock restarts at `now` (no burst credit builds up).
   * @throws RangeError when `perSecond` is not a positive finite number.
   */
  reserveRateSlot(tool: string, perSecond: number, now?: Date): Promise<number>;
}

/** What kind of step an audit row records. */
export type AuditKind = 'run' | 'model_turn' | 'authorization' | 'approval' | 'tool_intent' | 'tool_result' | 'compensation' | 'run_end';

/** Every `AuditKind`, in the order a session meets them. */
export const AUDIT_KINDS: readonly AuditKind[] = ['run', 'model_turn', 'authorization', 'approval', 'tool_intent', 'tool_result', 'compensation', 'run_end'];

/**
 * One audit entry as the workflow writes it. `key` is deterministic (the same on every retry and replay)
 * and unique per session. `data` is already redacted; it is kept as RFC 8785 canonical JSON.
 */
export interface AuditEntry {
  key: string;
  kind: AuditKind;
  /** When the step happened (ISO 8601). */
  at: string;
  data: Record<string, unknown>;
}

/** A stored audit row: an entry with its place in the session's chain. */
export interface AuditRow extends AuditEntry {
  sessionId: string;
  /** 1, 2, … per session, with no gaps. */
  seq: number;
  /** The previous row's `hash`; '' for seq 1. */
  prevHash: string;
  /** SHA-256 (hex) of `prevHash` + the canonical JSON of `{ sessionId, seq, key, kind, at, data }`. */
  hash: string;
}

/** What `verifyAudit` found. */
export interface AuditVerification {
  /** Sessions checked. */
  sessions: number;
  /** Rows checked. */
  rows: number;
  /** The first row (by session, then seq) that was changed or removed; absent when every chain is intact. */
  broken?: {
    sessionId: string;
    /** The row that was changed, or the first one that is missing. */
    seq: number;
    /** The changed row's key (absent for a removed row). */
    key?: string;
    /** In words, naming the row: e.g. `row 5 was removed: row 6 follows row 4`. */
    problem: string;
  };
}

/** Each session's append-only, hash-chained audit trail. There is no update or delete. */
export interface AuditStorage {
  /**
   * Appends `entries` in order, skipping any whose key the session already has (or that comes twice in
   * `entries`): retries and replays add nothing. Each new row gets seq = last + 1, prevHash = the last
   * row's hash, and its hash (see `AuditRow.hash`). Atomic across processes and workers: two appenders
   * never get the same seq or break the chain. Returns how many rows were added.
   * @throws RangeError for an entry with no key, an unknown kind, an `at` that is not a date, or `data`
   * that is not an object.
   */
  appendAudit(sessionId: string, entries: AuditEntry[]): Promise<number>;
  /** A session's rows in seq order (none for an unknown session). */
  auditTrail(sessionId: string): Promise<AuditRow[]>;
  /**
   * Recomputes the chain of one session (or of every session) and names the first row that was changed
   * (its hash does not match its content), removed (a gap in seq, or a missing first row) or moved (its
   * prevHash is not the previous row's hash). Removing the newest rows of a trail leaves a shorter, intact
   * chain: that needs an anchor kept elsewhere, which this does not have.
   */
  verifyAudit(sessionId?: string): Promise<AuditVerification>;
  /**
   * Every row of each session that has an `anchor` row (default `run`) at or after `since`, by session,
   * then seq: what the operator reports (`keel slo`, `keel failed`) read. `at` is compared as text against
   * `since.toISOString()`, which orders correctly for the UTC ISO 8601 times the workflow writes.
   */
  auditRows(since: Date, anchor?: AuditKind): Promise<AuditRow[]>;
}

/** Keel's store: conversations, fleet-wide resilience state and audit trails, on SQLite or PostgreSQL. */
export interface KeelStore extends ConversationStorage, ResilienceStorage, AuditStorage {
  /** `sqlite` (a file, one machine) or `postgres` (shared by every worker). */
  readonly kind: string;
  close(): Promise<void>;
}

/** The store's earlier name, from when it held conversations only. */
export type ConversationStore = KeelStore;

/** The store has fewer messages than the session expects. */
export class ConversationMissingError extends Error {
  override readonly name = 'ConversationMissingError';
}

/**
 * A `tool_result` block whose full text is a blob: `content` holds a preview (what the Web UI and the
 * status show), `keel_blob` the hash the store resolves before the model sees it.
 */
export const BLOB_FIELD = 'keel_blob';

/**
 * The store's tables, in SQL both SQLite and PostgreSQL accept; created on first use. Resilience times
 * are integers so the atomic statements can do exact arithmetic in SQL: breaker times in epoch
 * milliseconds, the rate clock in epoch microseconds (slots may be fractions of a millisecond apart).
 * `keel_audit.data` is the entry's data as canonical JSON text (TEXT, not JSONB, so PostgreSQL keeps the
 * exact bytes the hash covers).
 */
export const STORE_SCHEMA = `
  CREATE TABLE IF NOT EXISTS keel_conversation_messages (
    conversation_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (conversation_id, seq)
  );
  CREATE TABLE IF NOT EXISTS keel_blobs (hash TEXT PRIMARY KEY, content TEXT NOT NULL);
  CREATE TABLE IF NOT EXISTS keel_breakers (
    tool TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('closed', 'open', 'half_open')),
    failures INTEGER NOT NULL,
    opened_at BIGINT,
    next_probe_at BIGINT,
    probe_started_at BIGINT,
    updated_at BIGINT NOT NULL
  );
  CREATE TABLE IF NOT EXISTS keel_disabled_tools (
    tool TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    disabled_by TEXT NOT NULL,
    disabled_at BIGINT NOT NULL
  );
  CREATE TABLE IF NOT EXISTS keel_rate_clocks (tool TEXT PRIMARY KEY, next_free_us BIGINT NOT NULL);
  CREATE TABLE IF NOT EXISTS keel_audit (
    session_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    at TEXT NOT NULL,
    data TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (session_id, seq),
    UNIQUE (session_id, key)
  );
  CREATE INDEX IF NOT EXISTS keel_audit_kind_at ON keel_audit (kind, at);
`;
