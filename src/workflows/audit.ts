/**
 * The session's audit trail, as the workflow writes it: one entry per step (the run, each model turn with
 * the reasoning text, tokens and cost, each authorization decision, the intent before a tool call and its
 * result after, each approval decision, each undo, the end). Entries are redacted here and keyed
 * deterministically, collected in the session's state and written by a local activity at each point that
 * matters (before a tool call, so the intent is on record before the side effect; before each model call;
 * at the end). A crash loses nothing: the replayed workflow writes the same entries again, and the store
 * skips keys it has, so nothing is written twice. The store chains each session's rows by hash.
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
}
