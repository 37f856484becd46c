/**
 * The session's audit trail, as the workflow writes it: one entry per step (the run, each model turn with
 * the reasoning text, tokens and cost, each authorization decision, the intent before a tool call and its
 * result after, each approval decision, each undo, the end). Entries are redacted here and keyed
 * deterministically, collected in the session's state and written by a local activity at each point that
 * matters: before a call with a side effect, so the intent is on record before it; before the session waits
 * (for a person, for a message); once `AUDIT_BATCH` entries are pending; before continuing as new; at the end. (Sessions begun before
 * the trail was lean also wrote before each model call and each read; they replay that way.) A crash loses
 * nothing: the replayed workflow writes the same entries again, and the store skips keys it has, so nothing
 * is written twice. The store chains each session's rows by hash.
 */
import { proxyLocalActivities, workflowInfo } from '@temporalio/workflow';
import { canonicalJson, sha256Hex } from './keys.js';
import { redact } from './redact.js';

/** What kind of step an entry records (the store's `AuditKind`). */
export type AuditKind = 'run' | 'model_turn' | 'authorization' | 'approval' | 'tool_intent' | 'tool_result' | 'compensation' | 'run_end';
/** One entry as the workflow writes it; `data` is redacted. */
export interface AuditEntryInput {
  key: string;
  kind: AuditKind;
  at: string;
  data: Record<string, unknown>;
}
/** Input of the `appendAudit` local activity. */
export interface AppendAuditInput {
  sessionId: string;
  entries: AuditEntryInput[];
}

type AuditActivities = { appendAudit(input: AppendAuditInput): Promise<number> };

/** Fields Keel fills with identifiers of its own making: never personal data, kept whole. */
const KEEL_IDENTIFIERS = new Set(['toolUseId', 'idempotencyKey', 'argHash', 'resultHash', 'answerHash', 'requestId', 'approvalRequestId']);

/**
 * Entries a lean trail lets pile up before it writes them between side effects and waits: a read-only
 * stretch of a session costs one audit write per this many entries, not one per model call and read.
 */
export const AUDIT_BATCH = 50;

/** The SHA-256 (hex) of a value's canonical JSON: what the trail keeps of arguments and results. */
export function hashOf(value: unknown): string {
  return sha256Hex(canonicalJson(value ?? null));
}

/** Collects and writes a workflow's audit entries; `pending` is part of the workflow's state. */
export class AuditTrail {
  private readonly prefix: string;
  private readonly write = proxyLocalActivities<AuditActivities>({
    startToCloseTimeout: '10s',
    // The store may be down for a while; the session waits for its trail rather than lose it.
    retry: { initialInterval: '200ms', backoffCoefficient: 2, maximumInterval: '10s' },
  }).appendAudit;

  constructor(
    private readonly pending: AuditEntryInput[],
    /** False for a session started before the trail existed (its history has no such activities). */
    readonly enabled: boolean,
    /**
     * True for a session begun since the trail is lean: it skips the writes before model calls and reads
     * that older sessions made (and replay), see `checkpoint` and `beforeWait`.
     */
    readonly lean = false,
  ) {
    // Keys are unique per execution chain: a new session reusing a workflow ID gets keys of its own.
    this.prefix = workflowInfo().firstExecutionRunId.slice(0, 8);
  }

  /**
   * Records a step; `data` is redacted (emails, long digit runs, secret-looking fields), except the
   * identifiers Keel made itself (ids, keys, hashes), which the trail needs whole to correlate with
   * downstreams and history.
   */
  add(kind: AuditKind, key: string, data: Record<string, unknown>): void {
    if (!this.enabled) return;
    const ids = Object.fromEntries(Object.entries(data).filter(([k]) => KEEL_IDENTIFIERS.has(k)));
    this.pending.push({ key: `${this.prefix}:${key}`, kind, at: new Date(Date.now()).toISOString(), data: { ...(redact(data, 2000) as Record<string, unknown>), ...ids } });
  }

  /** Writes what is pending (one local activity), then forgets it. */
  async flush(): Promise<void> {
    if (!this.enabled || this.pending.length === 0) return;
    const entries = this.pending.splice(0);
    await this.write({ sessionId: workflowInfo().workflowId, entries });
  }

  /**
   * Before a model call or a read (no side effect to put the intent before): writes what is pending in a
   * session begun before the trail was lean, and in a lean one only once `AUDIT_BATCH` entries are pending.
   * Not `async`: an older session awaits `flush`'s own promise, as it did, so its commands keep their order.
   * (Before a wait, a lean session writes too: callers do `if (audit.lean) await audit.flush()`, so that an
   * older session does not await at all there.)
   */
  checkpoint(): Promise<void> {
    return this.lean && this.pending.length < AUDIT_BATCH ? Promise.resolve() : this.flush();
  }
}
