/**
 * One session lifecycle, shared by every Keel workflow (`agentSession`, `toolChain`): the `status` query,
 * the details and search attributes people read in the Web UI (and `keel approvals` finds sessions by),
 * and the ending: completed, or failed/cancelled → the registered undos run last-in-first-out → the
 * failure is rethrown with them in its details. Continue-as-new passes through untouched.
 */
import { CancellationScope, ContinueAsNew, isCancellation, metricMeter, patched, setCurrentDetails, setHandler, upsertSearchAttributes, workflowInfo } from '@temporalio/workflow';
import { recordSessionEnd } from '../telemetry/metrics.js';
import type { AuditTrail } from './audit.js';
import type { SearchAttributeUpdatePair } from '@temporalio/common';
import { KeelCostUsd, KeelIterations, KeelPendingApproval, KeelStatus, KeelStopReason, KeelToolsUsed } from './search-attributes.js';
import { failureWithCompensations, type ToolRunner } from './tool-runner.js';
import { statusQuery, type SessionStatus } from './types.js';

/** What a workflow tells its lifecycle. */
export interface LifecycleOptions {
  runner: ToolRunner;
  /** Upsert Keel's search attributes (they must be registered on the namespace). */
  searchAttributes: boolean;
  /** The request's first line, for the details. */
  title: string;
  /** The workflow's own progress, for the status query and details. */
  progress(): Pick<SessionStatus, 'iteration' | 'usage' | 'turn' | 'awaitingMessage' | 'run'>;
  /** Names of the tools called so far. */
  toolsUsed(): string[];
  /** Where the session's end is recorded. */
  audit?: AuditTrail;
  /** More lines for the details (e.g. budget use). */
  details?(): string[];
  /**
   * Labels for the session metrics recorded when the workflow ends (`keel_sessions_total`, iterations, cost,
   * duration); without them nothing is recorded (a tool chain is not an agent session).
   */
  metrics?: {
    agent: string;
    model: string;
    /** The model has a price, so the session's cost is known (an unpriced session records no cost). */
    priced: boolean;
    stopReason(): string;
  };
}

/** A workflow's status, details, search attributes and ending; see the file header. */
export class SessionLifecycle {
  state: SessionStatus['state'] = 'running';
  step = 'starting';
  private lastPending = false;
  private lastToolsUsed = 0;
  private lastCost = 0;
  /**
   * Whether search-attribute changes are batched (sessions from this build on): `running` is not set again
   * when the client set it at the start, and `KeelToolsUsed` rides on the next update (an approval wait,
   * the cost, the end) or is set before the session waits for a message (`publishToolsUsed`). Each update
   * is a billed action on Temporal Cloud.
   */
  private readonly batched: boolean;

  /**
   * Whether the session sets KeelIterations and KeelStopReason when it ends. Decided at the start: a patch
   * checked in the activation that completes the workflow made queries replaying it fail.
   */
  private readonly setsEndAttributes: boolean;

  constructor(private readonly o: LifecycleOptions) {
    this.setsEndAttributes = o.searchAttributes && patched('keel-outcome-search-attributes');
    this.batched = o.searchAttributes && patched('keel-batched-search-attributes');
    setHandler(statusQuery, () => o.runner.status({ state: this.state, step: this.step, ...o.progress() }));
    if (!(this.batched && workflowInfo().typedSearchAttributes.get(KeelStatus) === 'running')) this.upsert([{ key: KeelStatus, value: 'running' }]);
  }

  /** Sets the human-readable step and refreshes what the Web UI shows. */
  setStep(step: string): void {
    this.step = step;
    this.refresh();
  }

  /** Refreshes the details and, when they changed, the pending-approval and tools-used search attributes. */
  refresh(): void {
    const { runner } = this.o;
    const progress = this.o.progress();
    const pending = runner.pendingApprovals();
    const toolsUsed = this.o.toolsUsed();
    const lines = [
      `**Request:** ${this.o.title}`,
      `**Step:** ${pending.length ? `waiting for approval: ${pending.map((p) => `${p.requestId} (${p.tool})`).join(', ')}` : this.step}`,
      `**Turns:** ${progress.turn} · **model calls:** ${progress.iteration} · **tool calls:** ${runner.toolCalls.length} · **tokens:** ${progress.usage.input_tokens} in / ${progress.usage.output_tokens} out` +
        (progress.usage.cost_usd > 0 ? ` · **cost:** $${progress.usage.cost_usd.toFixed(4)}` : '') +
        (progress.run > 1 ? ` · **run:** ${progress.run}` : ''),
    ];
    if (toolsUsed.length) lines.push(`**Tools used:** ${toolsUsed.join(', ')}`);
    lines.push(...(this.o.details?.() ?? []));
    const undone = runner.compensations.filter((c) => c.status !== 'pending');
    if (undone.length) lines.push(`**Compensations:** ${undone.map((c) => `${c.tool} ${c.status}`).join(', ')}`);
    setCurrentDetails(lines.join('\n\n'));
    const pairs: SearchAttributeUpdatePair[] = [];
    if (pending.length > 0 !== this.lastPending && this.state === 'running') {
      this.lastPending = pending.length > 0;
      pairs.push({ key: KeelPendingApproval, value: this.lastPending }, { key: KeelStatus, value: this.lastPending ? 'waiting_approval' : 'running' });
    }
    if (!this.batched) {
      // Sessions from before batching: one update per change, as their histories recorded.
      if (pairs.length) this.upsert(pairs);
      if (toolsUsed.length !== this.lastToolsUsed) {
        this.lastToolsUsed = toolsUsed.length;
        this.upsert([{ key: KeelToolsUsed, value: toolsUsed }]);
      }
      return;
    }
    if (pairs.length) this.upsert(this.withToolsUsed(pairs));
  }

  /** Sets `KeelToolsUsed` if tools were called since it was last set: before a wait that may be long (batched sessions). */
  publishToolsUsed(): void {
    const pairs = this.withToolsUsed([]);
    if (pairs.length) this.upsert(pairs);
  }

  /** `pairs` plus `KeelToolsUsed` when tools were called since it was last set (batched sessions only). */
  private withToolsUsed(pairs: SearchAttributeUpdatePair[]): SearchAttributeUpdatePair[] {
    const toolsUsed = this.o.toolsUsed();
    if (!this.batched || toolsUsed.length === this.lastToolsUsed) return pairs;
    this.lastToolsUsed = toolsUsed.length;
    return [...pairs, { key: KeelToolsUsed, value: [...toolsUsed] }];
  }

  /**
   * Runs the workflow's body. On success the session is completed; on failure or cancellation the undos
   * run and the failure is rethrown (with the undos in its details); continue-as-new passes through.
   */
  async run<T>(body: () => Promise<T>, ending?: (result: T) => Record<string, unknown>): Promise<T> {
    let result: T;
    try {
      result = await body();
    } catch (err) {
      if (err instanceof ContinueAsNew) throw err;
      this.state = 'failed';
      const reason = err instanceof Error ? err.message : String(err);
      this.setStep(`compensating after: ${reason}`);
      const compensations = await this.o.runner.compensate(this.o.progress().iteration);
      const outcome = isCancellation(err) ? 'cancelled' : 'failed';
      this.o.audit?.add('run_end', 'end', { outcome, reason, usage: this.o.progress().usage, compensations: compensations.map((c) => `${c.tool}: ${c.status}`) });
      await CancellationScope.nonCancellable(() => this.o.audit?.flush() ?? Promise.resolve());
      this.setStep(`failed: ${reason}`);
      this.upsert(this.withToolsUsed([{ key: KeelStatus, value: isCancellation(err) ? 'cancelled' : 'failed' }, { key: KeelPendingApproval, value: false }, ...this.endAttributes(outcome)]));
      this.recordEnd(outcome, outcome);
      if (isCancellation(err)) throw err;
      throw failureWithCompensations(err, compensations);
    }
    this.state = 'completed';
    this.o.audit?.add('run_end', 'end', { outcome: 'completed', usage: this.o.progress().usage, ...ending?.(result) });
    await this.o.audit?.flush();
    this.upsert(this.withToolsUsed([{ key: KeelStatus, value: 'completed' }, ...this.endAttributes(this.o.metrics?.stopReason() ?? 'completed')]));
    this.recordEnd('completed', this.o.metrics?.stopReason() ?? 'completed');
    return result;
  }

  /** Session metrics at the end (the workflow meter is replay-safe: nothing is recorded while replaying). */
  private recordEnd(outcome: 'completed' | 'failed' | 'cancelled', stopReason: string): void {
    const m = this.o.metrics;
    if (!m) return;
    const progress = this.o.progress();
    recordSessionEnd(metricMeter, {
      agent: m.agent,
      model: m.model,
      outcome,
      stopReason,
      iterations: progress.iteration,
      ...(m.priced ? { costUsd: progress.usage.cost_usd } : {}),
      // From the first run's start: continue-as-new keeps the session going.
      durationMs: Date.now() - workflowInfo().startTime.getTime(),
    });
  }

  /** Sets the `KeelCostUsd` search attribute (rounded to a hundredth of a cent, so it changes only when it shows). */
  setCost(usd: number): void {
    const rounded = Math.round(usd * 10_000) / 10_000;
    if (rounded === this.lastCost) return;
    this.lastCost = rounded;
    this.upsert(this.withToolsUsed([{ key: KeelCostUsd, value: rounded }]));
  }

  /** Iterations and stop reason for the Web UI's list (sessions that began before these existed set none). */
  private endAttributes(stopReason: string): SearchAttributeUpdatePair[] {
    if (!this.setsEndAttributes) return [];
    return [
      { key: KeelIterations, value: this.o.progress().iteration },
      { key: KeelStopReason, value: stopReason },
    ];
  }

  private upsert(pairs: SearchAttributeUpdatePair[]): void {
    if (this.o.searchAttributes) upsertSearchAttributes(pairs);
  }
}
