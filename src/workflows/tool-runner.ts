/**
 * How a workflow runs tool calls safely; shared by `agentSession` and `toolChain`. For each call it
 * checks the tool is allowed and the input valid; derives the idempotency key from the workflow ID and
 * returns an earlier identical call's result instead of running the tool twice; parks the call until a
 * person approves it when the tier or policy says so (the `approval` signal / `decideApproval` update);
 * registers the tool's undo before the side effect; runs the tool as an activity named after it, under
 * its tier's retry policy; treats a write whose outcome is unknown (timeout, lost worker) as unknown,
 * asking the tool's status check rather than retrying blindly; and, when the session fails, runs the
 * registered undos last-in-first-out in a scope that cannot be cancelled, retrying each until it succeeds.
 */
import {
  ActivityCancellationType,
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  condition,
  log,
  proxyActivities,
  setHandler,
} from '@temporalio/workflow';
import type { Duration as TemporalDuration } from '@temporalio/common';
import { toMs, type Tool } from '../tools/index.js';
import { idempotencyKey } from './keys.js';
import { redact } from './redact.js';
import {
  ApprovalDecisionSchema,
  FailureTypes,
  approvalSignal,
  decideApprovalUpdate,
  pendingApprovalsQuery,
  type ApprovalLogEntry,
  type ApprovalOutcome,
  type ApprovalPolicy,
  type ApprovalRequest,
  type CompensationRecord,
  type SessionEvent,
  type SessionStatus,
  type SessionUser,
  type StatusCheckOutput,
  type ToolActivityInput,
  type ToolActivityOutput,
  type ToolCallRecord,
  describeIssues,
} from './types.js';

type ToolActivity = (input: ToolActivityInput) => Promise<ToolActivityOutput>;
type StatusActivity = (input: ToolActivityInput) => Promise<StatusCheckOutput>;
type EventWithoutSeq = SessionEvent extends infer E ? (E extends SessionEvent ? Omit<E, 'seq'> : never) : never;

/** One tool call to run. */
export interface ToolCallRequest {
  toolUseId: string;
  name: string;
  input: unknown;
  iteration: number;
}

/** What the model (or chain) gets back. */
export interface ToolCallResult {
  content: string;
  isError: boolean;
  record: ToolCallRecord;
}

/** What a runner needs from its workflow. */
export interface ToolRunnerOptions {
  workflowId: string;
  user: SessionUser;
  /** The tools this session may call, by name. */
  tools: ReadonlyMap<string, Tool>;
  approval: ApprovalPolicy;
  /** Something people watch changed (approvals pending, step). */
  onChange(): void;
}

/** Events the status query keeps (the most recent ones). */
const MAX_EVENTS = 200;

/** How long heartbeats may stop before Temporal considers a tool's worker lost. Tool activities beat every second. */
const TOOL_HEARTBEAT_TIMEOUT = '5s';

/** Runs tool calls for one workflow; see the file header. */
export class ToolRunner {
  readonly toolCalls: ToolCallRecord[] = [];
  readonly compensations: CompensationRecord[] = [];
  readonly approvals: ApprovalRequest[] = [];
  readonly approvalLog: ApprovalLogEntry[] = [];
  /** The most recent lines of the workflow's story, numbered from 1 by `seq`. */
  readonly events: SessionEvent[] = [];
  private seq = 0;
  /** Results of calls that completed, by idempotency key. */
  private readonly completed = new Map<string, string>();
  /** Calls under way, by idempotency key: an identical call in the same turn waits for the first. */
  private readonly inFlight = new Map<string, Promise<ToolCallResult>>();
  private readonly undoInputs = new Map<CompensationRecord, ToolActivityInput>();

  constructor(private readonly o: ToolRunnerOptions) {
    setHandler(pendingApprovalsQuery, () => this.pendingApprovals());
    setHandler(approvalSignal, (decision) => {
      this.decide(decision, 'signal');
    });
    setHandler(decideApprovalUpdate, (decision) => this.decide(decision, 'update'), {
      validator: (decision) => {
        const parsed = ApprovalDecisionSchema.safeParse(decision);
        if (!parsed.success) throw new Error(`invalid approval: ${describeIssues(parsed.error, '')}`);
      },
    });
  }

  /** Records a line of the workflow's story, keeping the most recent MAX_EVENTS. */
  addEvent(event: EventWithoutSeq): void {
    this.events.push({ ...event, seq: ++this.seq } as SessionEvent);
    if (this.events.length > MAX_EVENTS) this.events.shift();
  }

  /** The `status` query's answer: the workflow's own progress plus this runner's calls, approvals and undos. */
  status(progress: Pick<SessionStatus, 'state' | 'step' | 'iteration' | 'usage'>): SessionStatus {
    return {
      ...progress,
      toolCalls: this.toolCalls.length,
      events: this.events,
      approvals: this.approvals,
      approvalLog: this.approvalLog,
      compensations: this.compensations,
    };
  }

  /** Requests waiting for a person. */
  pendingApprovals(): ApprovalRequest[] {
    return this.approvals.filter((a) => a.status === 'pending');
  }

  /** Runs one call; never throws for a failure the model should hear about. */
  async run(call: ToolCallRequest): Promise<ToolCallResult> {
    const record: ToolCallRecord = { toolUseId: call.toolUseId, name: call.name, outcome: 'ok', iteration: call.iteration };
    this.toolCalls.push(record);
    const finish = (outcome: ToolCallRecord['outcome'], content: string, detail = content): ToolCallResult => {
      record.outcome = outcome;
      if (outcome !== 'ok') record.error = content;
      this.addEvent({ kind: 'tool', iteration: call.iteration, name: call.name, toolUseId: call.toolUseId, outcome, detail: detail.slice(0, 200) });
      return { content, isError: outcome !== 'ok', record };
    };

    const tool = this.o.tools.get(call.name);
    if (!tool) {
      return finish('rejected', `Unknown tool '${call.name}'. Available tools: ${[...this.o.tools.keys()].join(', ') || '(none)'}.`);
    }
    const valid = tool.input.safeParse(call.input);
    if (!valid.success) {
      const issues = describeIssues(valid.error);
      return finish('rejected', `Invalid input for ${tool.name}: ${issues}. Fix the arguments and call the tool again.`);
    }
    const key = idempotencyKey(tool.policy.idempotency, this.o.workflowId, tool.name, valid.data, call.toolUseId);
    record.idempotencyKey = key;

    if (tool.policy.idempotency !== 'none') {
      const earlier = this.completed.get(key);
      if (earlier !== undefined) {
        record.deduplicated = true;
        return finish('ok', earlier, `(same call as before; not run again) ${earlier}`);
      }
      const running = this.inFlight.get(key);
      if (running) {
        // The same call is already under way (the model asked twice in one turn): share its outcome.
        record.deduplicated = true;
        const first = await running;
        return finish(first.record.outcome, first.content, `(same call as another in this turn; not run again) ${first.content}`);
      }
      const execution = this.execute(tool, call, valid.data, key, record, finish);
      this.inFlight.set(key, execution);
      try {
        return await execution;
      } finally {
        this.inFlight.delete(key);
      }
    }
    return this.execute(tool, call, valid.data, key, record, finish);
  }

  /** Approval, undo registration, the activity, and what to make of its failure. */
  private async execute(
    tool: Tool,
    call: ToolCallRequest,
    validInput: unknown,
    key: string,
    record: ToolCallRecord,
    finish: (outcome: ToolCallRecord['outcome'], content: string, detail?: string) => ToolCallResult,
  ): Promise<ToolCallResult> {
    if (this.needsApproval(tool)) {
      const request = await this.awaitApproval(tool, call, validInput, record);
      if (request.status !== 'approved') {
        const message =
          request.status === 'rejected'
            ? `${tool.name} was rejected by ${request.decidedBy}: ${request.decisionReason || 'no reason given'}. It did not run; do not retry it. Tell the user.`
            : `${tool.name} was not approved: nobody decided within the approval timeout. It did not run; you may continue without it.`;
        if (this.o.approval.failOnReject) {
          finish('rejected', message);
          throw ApplicationFailure.create({ type: FailureTypes.ApprovalRefused, nonRetryable: true, message });
        }
        return finish('rejected', message);
      }
    }

    const input: ToolActivityInput = {
      input: validInput,
      idempotencyKey: key,
      toolUseId: call.toolUseId,
      session: { workflowId: this.o.workflowId, userId: this.o.user.id, roles: this.o.user.roles },
    };
    // The undo is registered before the side effect, so a crash between the two cannot lose it.
    let undo: CompensationRecord | undefined;
    if (tool.policy.compensable) {
      undo = { tool: tool.name, idempotencyKey: key, toolUseId: call.toolUseId, status: 'pending' };
      this.compensations.push(undo);
      this.undoInputs.set(undo, input);
    }

    try {
      const out = await this.toolActivity(tool)(input);
      if (tool.policy.idempotency !== 'none') this.completed.set(key, out.content);
      return finish('ok', out.content);
    } catch (err) {
      if (!(err instanceof ActivityFailure)) throw err;
      const cause = err.cause;
      const reason = cause?.message ?? err.message;
      if (cause instanceof ApplicationFailure && (cause.type === FailureTypes.ToolError || cause.type === FailureTypes.InvalidToolInput)) {
        // The downstream refused: nothing happened, so there is nothing to undo.
        if (undo) undo.status = 'discarded';
        return finish('error', `${tool.name} failed: ${reason}`);
      }
      if (tool.risk === 'read') {
        if (tool.criticality === 'optional') {
          log.warn('optional tool unavailable; continuing without it', { tool: tool.name, reason });
          return finish('error', `${tool.name} is unavailable right now (${reason}). Continue without it.`);
        }
        throw this.criticalFailure(tool, reason, err);
      }
      // A side-effecting call that timed out or lost its worker may have happened: ask, never retry blindly.
      const status = tool.policy.hasStatusCheck ? await this.checkStatus(tool, input) : undefined;
      record.statusChecked = status !== undefined;
      if (status?.applied) {
        this.completed.set(key, status.content);
        return finish('ok', status.content, `(confirmed by status check after: ${reason}) ${status.content}`);
      }
      if (status && !status.applied) {
        if (undo) undo.status = 'discarded';
        if (tool.criticality === 'critical') throw this.criticalFailure(tool, `${reason}; its status check confirms it did not happen`, err);
        return finish('error', `${tool.name} did not happen (its status check confirms it): ${reason}`);
      }
      log.warn('tool outcome unknown', { tool: tool.name, idempotencyKey: key, reason });
      return finish(
        'unknown',
        `${tool.name}: outcome UNKNOWN. The call may or may not have taken effect (${reason}). Do not retry it; tell the user a person will confirm what happened.`,
      );
    }
  }

  /**
   * Runs every pending undo, last registered first, in a scope that cancellation cannot interrupt. Each
   * undo retries until it succeeds; one that fails for good (a non-retryable error) is recorded and the
   * rest still run. Returns all compensation records.
   */
  async compensate(iteration: number): Promise<CompensationRecord[]> {
    await CancellationScope.nonCancellable(async () => {
      for (const undo of [...this.compensations].reverse()) {
        if (undo.status !== 'pending') continue;
        const input = this.undoInputs.get(undo)!;
        try {
          await this.compensateActivity(undo.tool)(input);
          undo.status = 'compensated';
        } catch (err) {
          // Only the undo's own failure is recorded; anything else is a bug that must fail the task loudly.
          if (!(err instanceof ActivityFailure)) throw err;
          undo.status = 'failed';
          undo.error = err.cause?.message ?? err.message;
        }
        log.info('compensation', { tool: undo.tool, idempotencyKey: undo.idempotencyKey, status: undo.status, error: undo.error });
        this.addEvent({ kind: 'compensation', iteration, name: undo.tool, status: undo.status, detail: undo.error ?? `undid ${undo.tool} (${undo.toolUseId})` });
      }
    });
    return this.compensations;
  }

  private needsApproval(tool: Tool): boolean {
    const rule = tool.policy.approval;
    return rule === 'always' || rule === 'other-person' || (rule === 'policy' && this.o.approval.writeTools.includes(tool.name));
  }

  private async awaitApproval(tool: Tool, call: ToolCallRequest, input: unknown, record: ToolCallRecord): Promise<ApprovalRequest> {
    const timeout = tool.policy.approvalTimeout ?? this.o.approval.timeout;
    const now = Date.now();
    const request: ApprovalRequest = {
      requestId: `${tool.name}-${this.approvals.filter((a) => a.tool === tool.name).length + 1}`,
      tool: tool.name,
      risk: tool.risk,
      toolUseId: call.toolUseId,
      input: redact(input),
      reason:
        tool.policy.approval === 'other-person'
          ? `${tool.name} is privileged: an approver with role ${this.o.approval.privilegedApproverRoles.join(' or ')} who is not the requester must approve`
          : tool.risk === 'irreversible'
            ? `${tool.name} is irreversible: a person with role ${this.o.approval.approverRoles.join(' or ')} must approve`
            : `the session's policy requires approval for ${tool.name}`,
      requestedBy: this.o.user.id,
      requestedAt: new Date(now).toISOString(),
      expiresAt: new Date(now + toMs(timeout)).toISOString(),
      status: 'pending',
    };
    this.approvals.push(request);
    record.approvalRequestId = request.requestId;
    this.addEvent({ kind: 'approval', iteration: call.iteration, requestId: request.requestId, name: tool.name, status: 'pending', detail: request.reason });
    this.o.onChange();
    const decided = await condition(() => request.status !== 'pending', timeout as TemporalDuration, { summary: `approval ${request.requestId}` });
    if (!decided) {
      request.status = 'expired';
      request.decidedAt = new Date(Date.now()).toISOString();
    }
    this.addEvent({
      kind: 'approval',
      iteration: call.iteration,
      requestId: request.requestId,
      name: tool.name,
      status: request.status,
      detail: request.decidedBy ? `${request.status} by ${request.decidedBy}${request.decisionReason ? `: ${request.decisionReason}` : ''}` : request.status,
    });
    this.o.onChange();
    return request;
  }

  /** Applies a decision if the policy allows it; otherwise changes nothing. Either way it is logged. */
  private decide(raw: unknown, via: 'signal' | 'update'): ApprovalOutcome {
    const at = new Date(Date.now()).toISOString();
    const refuse = (requestId: string, code: Exclude<ApprovalOutcome, { accepted: true }>['code'], reason: string, approver?: string): ApprovalOutcome => {
      this.approvalLog.push({ at, requestId, via, accepted: false, reason, ...(approver ? { approver } : {}) });
      log.warn('approval refused', { requestId, via, code, reason });
      return { accepted: false, requestId, code, reason };
    };
    const parsed = ApprovalDecisionSchema.safeParse(raw);
    if (!parsed.success) {
      const id = typeof (raw as { requestId?: unknown })?.requestId === 'string' ? (raw as { requestId: string }).requestId : '(none)';
      return refuse(id, 'invalid', `invalid approval: ${describeIssues(parsed.error, '')}`);
    }
    const d = parsed.data;
    const request = this.approvals.find((a) => a.requestId === d.requestId);
    if (!request) return refuse(d.requestId, 'unknown_request', `no approval request '${d.requestId}' in this session`, d.approver.id);
    if (request.status !== 'pending') {
      return refuse(d.requestId, 'already_decided', `request ${d.requestId} is already ${request.status}${request.decidedBy ? ` (by ${request.decidedBy})` : ''}`, d.approver.id);
    }
    const privileged = this.o.tools.get(request.tool)?.policy.approval === 'other-person';
    const allowed = privileged ? this.o.approval.privilegedApproverRoles : this.o.approval.approverRoles;
    if (!d.approver.roles.some((r) => allowed.includes(r))) {
      return refuse(d.requestId, 'not_allowed', `${d.approver.id} holds none of the roles that may decide on ${request.tool} (${allowed.join(', ')})`, d.approver.id);
    }
    if (privileged && d.approver.id === request.requestedBy) {
      return refuse(d.requestId, 'not_allowed', `${d.approver.id} requested this privileged call and cannot approve it`, d.approver.id);
    }
    request.status = d.decision === 'approve' ? 'approved' : 'rejected';
    request.decidedBy = d.approver.id;
    request.decidedAt = at;
    if (d.reason) request.decisionReason = d.reason;
    this.approvalLog.push({ at, requestId: d.requestId, decision: d.decision, approver: d.approver.id, via, accepted: true, ...(d.reason ? { reason: d.reason } : {}) });
    return { accepted: true, requestId: d.requestId, decision: d.decision };
  }

  private async checkStatus(tool: Tool, input: ToolActivityInput): Promise<StatusCheckOutput | undefined> {
    const check = proxyActivities<Record<string, StatusActivity>>({
      startToCloseTimeout: '10s',
      retry: { maximumAttempts: 5, initialInterval: '500ms', backoffCoefficient: 2 },
      summary: `${tool.name} status check`,
    })[`${tool.name}.status`]!;
    try {
      return await check(input);
    } catch (err) {
      if (!(err instanceof ActivityFailure)) throw err;
      log.warn('status check failed; outcome stays unknown', { tool: tool.name, reason: err.cause?.message ?? err.message });
      return undefined;
    }
  }

  private toolActivity(tool: Tool): ToolActivity {
    return proxyActivities<Record<string, ToolActivity>>({
      startToCloseTimeout: tool.policy.startToCloseTimeout,
      heartbeatTimeout: TOOL_HEARTBEAT_TIMEOUT,
      retry: {
        maximumAttempts: tool.policy.maxAttempts,
        initialInterval: tool.policy.initialRetryInterval,
        backoffCoefficient: 2,
        nonRetryableErrorTypes: [FailureTypes.ToolError, FailureTypes.InvalidToolInput],
      },
      // A cancelled side effect must have stopped before its undo runs.
      cancellationType: tool.risk === 'read' ? ActivityCancellationType.TRY_CANCEL : ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
      summary: `${tool.policy.risk}${tool.criticality === 'optional' ? ', optional' : ''}`,
    })[tool.name]!;
  }

  private compensateActivity(tool: string): ToolActivity {
    return proxyActivities<Record<string, ToolActivity>>({
      startToCloseTimeout: '30s',
      heartbeatTimeout: TOOL_HEARTBEAT_TIMEOUT,
      // Undos retry until they succeed (no maximumAttempts: unlimited is the default; 0 is rejected by the
      // SDK); only a non-retryable ToolError stops them.
      retry: { initialInterval: '500ms', backoffCoefficient: 2, maximumInterval: '10s', nonRetryableErrorTypes: [FailureTypes.ToolError, FailureTypes.InvalidToolInput] },
      summary: `undo ${tool}`,
    })[`${tool}.compensate`]!;
  }

  private criticalFailure(tool: Tool, reason: string, cause: Error): ApplicationFailure {
    return ApplicationFailure.create({
      type: FailureTypes.CriticalToolFailed,
      nonRetryable: true,
      message: `critical tool ${tool.name} failed after ${tool.policy.maxAttempts} attempt(s): ${reason}`,
      cause,
    });
  }
}

/**
 * The session's failure: the type and message of the first failure in the chain that says what went
 * wrong (not Temporal's "Activity task failed" wrapper), with the compensations in its details.
 */
export function failureWithCompensations(err: unknown, compensations: CompensationRecord[]): ApplicationFailure {
  let cause: unknown = err;
  while (cause instanceof ActivityFailure && cause.cause) cause = cause.cause;
  const app = cause instanceof ApplicationFailure ? cause : undefined;
  return ApplicationFailure.create({
    type: app?.type ?? 'SessionFailed',
    nonRetryable: true,
    message: cause instanceof Error ? cause.message : String(cause),
    details: [{ compensations }],
    cause: err instanceof Error ? err : undefined,
  });
}
