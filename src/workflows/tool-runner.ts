/**
 * How a workflow runs tool calls safely; shared by `agentSession` and `toolChain`. For each call it
 * checks the tool is allowed, the input valid and the call not one its agent blocks; derives the idempotency key from the workflow ID and
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
  isCancellation,
  log,
  patched,
  proxyActivities,
  proxyLocalActivities,
  setHandler,
  TemporalFailure,
} from '@temporalio/workflow';
import { RetryState, type Duration as TemporalDuration } from '@temporalio/common';
import { runsLocal, toMs, type ExecutionMode, type Tool } from '../tools/index.js';
import { mayCall, type AccessPolicy } from '../app/access.js';
import { blockedBy, type BlockedAction } from '../agents/define.js';
import { hashOf, type AuditTrail } from './audit.js';
import { idempotencyKey } from './keys.js';
import { redact, redactText } from './redact.js';
import {
  ApprovalDecisionSchema,
  FailureTypes,
  approvalSignal,
  decideApprovalUpdate,
  pendingApprovalsQuery,
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
  type ToolOutputRef,
  type ToolRunnerState,
  type UntrustedSource,
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
  /** What led to the call, for the audit trail: the model's text of that turn, its tokens and cost. */
  reasoning?: { text: string; usage?: Record<string, number> };
}

/** What the model (or chain) gets back. */
export interface ToolCallResult extends ToolOutputRef {
  isError: boolean;
  record: ToolCallRecord;
  /** The whole result, when the runner was asked for values (tool chains). */
  value?: unknown;
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
  /** Ask tool activities for the whole result as a value too (tool chains read fields of it). */
  wantValues?: boolean;
  /** Where each decision and call is recorded. */
  audit?: AuditTrail;
  /** Which of the user's roles may call which tools (all of `tools`, without one). */
  access?: AccessPolicy;
  /** The agent's blocked actions: a call matching one is refused before anything runs (none). */
  blocked?: readonly BlockedAction[];
  /**
   * A model chooses the calls (an agent session): results of untrusted tools taint the calls of later
   * turns, and a tainted side-effecting call needs a person's approval. A chain's calls are the caller's.
   */
  taint?: boolean;
  /**
   * How the session runs `read` tools that do not declare `execution`: `local` activities or `regular`
   * ones (regular). A tool's own `execution` wins (see `runsLocal`).
   */
  reads?: ExecutionMode;
}

/** A runner's state before its first call. */
export function newToolRunnerState(): ToolRunnerState {
  return { toolCalls: [], compensations: [], undoInputs: [], approvals: [], approvalLog: [], completed: {}, events: [], seq: 0 };
}

/** Events the status query keeps (the most recent ones). */
const MAX_EVENTS = 200;

/** How long heartbeats may stop before Temporal considers a tool's worker lost. Tool activities beat every second. */
const TOOL_HEARTBEAT_TIMEOUT = '5s';

/** True for a tool whose output others can write (see `trustedOutput`). */
export function isUntrusted(tool: Tool | undefined): boolean {
  return tool !== undefined && tool.trustedOutput !== true;
}

/**
 * Runs tool calls for one workflow; see the file header. Everything it remembers is in `state`, a plain
 * value the workflow owns (and carries over continue-as-new); only calls under way live outside it.
 */
export class ToolRunner {
  /** Calls under way, by idempotency key: an identical call in the same turn waits for the first. */
  private readonly inFlight = new Map<string, Promise<ToolCallResult>>();
  /**
   * The order this run issued each call in, by toolUseId. Undos are registered in this order, not in the
   * order parallel calls happen to get there, so a saga undoes a turn's calls in reverse of the model's.
   */
  private readonly callOrder = new Map<string, number>();

  /** Whether taint holds side effects for approval (sessions begun before it existed replay without it). */
  private readonly taintApprovals: boolean;

  /**
   * Whether calls that `runsLocal` says may run local do (sessions begun before local reads existed replay
   * with regular activities). Read once, here, with the session's other patches: a patch first checked late
   * in a session would answer differently when a query replays a closed session.
   */
  private readonly localReads: boolean;

  constructor(
    private readonly o: ToolRunnerOptions,
    readonly state: ToolRunnerState = newToolRunnerState(),
  ) {
    this.taintApprovals = o.taint === true && patched('keel-taint-approval');
    // Only a session that has a tool to run local records the patch: the others' histories stay as they were.
    this.localReads = [...o.tools.values()].some((t) => runsLocal(t, o.reads)) && patched('keel-local-reads');
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

  /** Every tool call so far. */
  get toolCalls(): ToolCallRecord[] {
    return this.state.toolCalls;
  }

  /** Every registered undo and what became of it. */
  get compensations(): CompensationRecord[] {
    return this.state.compensations;
  }

  /** Records a line of the workflow's story, keeping the most recent MAX_EVENTS. */
  addEvent(event: EventWithoutSeq): void {
    const events = this.state.events;
    // The status query shows these to anyone who may query the session: model text and results are redacted.
    const shown = { ...event, ...('detail' in event ? { detail: redactText(event.detail) } : {}), ...('text' in event ? { text: redactText(event.text) } : {}) };
    events.push({ ...shown, seq: ++this.state.seq } as SessionEvent);
    if (events.length > MAX_EVENTS) events.shift();
  }

  /** The `status` query's answer: the workflow's own progress plus this runner's calls, approvals and undos. */
  status(progress: Omit<SessionStatus, 'toolCalls' | 'events' | 'approvals' | 'approvalLog' | 'compensations'>): SessionStatus {
    const s = this.state;
    return { ...progress, toolCalls: s.toolCalls.length, events: s.events, approvals: s.approvals, approvalLog: s.approvalLog, compensations: s.compensations };
  }

  /** Requests waiting for a person. */
  pendingApprovals(): ApprovalRequest[] {
    return this.state.approvals.filter((a) => a.status === 'pending');
  }

  /** Runs one call; never throws for a failure the model should hear about. */
  async run(call: ToolCallRequest): Promise<ToolCallResult> {
    const record: ToolCallRecord = { toolUseId: call.toolUseId, name: call.name, outcome: 'ok', iteration: call.iteration };
    this.state.toolCalls.push(record);
    this.callOrder.set(call.toolUseId, this.callOrder.size);
    const started = Date.now();
    const finish = (outcome: ToolCallRecord['outcome'], content: string, detail = content, out?: Partial<ToolActivityOutput>): ToolCallResult => {
      record.outcome = outcome;
      // What an untrusted tool returned (its errors too: they may quote the downstream) is now in the context.
      if (this.o.taint && (outcome === 'ok' || outcome === 'error') && isUntrusted(this.o.tools.get(call.name))) {
        (this.state.untrusted ??= []).push({ tool: call.name, toolUseId: call.toolUseId, iteration: call.iteration });
      }
      if (outcome !== 'ok') record.error = content;
      this.o.audit?.add('tool_result', `result:${call.toolUseId}`, {
        tool: call.name,
        toolUseId: call.toolUseId,
        outcome,
        latencyMs: Date.now() - started,
        resultHash: hashOf(content),
        result: content.slice(0, 1000),
        ...(record.deduplicated ? { deduplicated: true } : {}),
        ...(record.statusChecked ? { statusChecked: true } : {}),
      });
      this.addEvent({ kind: 'tool', iteration: call.iteration, name: call.name, toolUseId: call.toolUseId, outcome, detail: detail.slice(0, 200) });
      return { content, isError: outcome !== 'ok', record, ...(out?.blob ? { blob: out.blob } : {}), ...(out && 'value' in out ? { value: out.value } : {}) };
    };

    const authorize = (allowed: boolean, reason: string) =>
      this.o.audit?.add('authorization', `authz:${call.toolUseId}`, { tool: call.name, toolUseId: call.toolUseId, allowed, reason, user: this.o.user.id, roles: this.o.user.roles });
    const tool = this.o.tools.get(call.name);
    if (!tool) {
      authorize(false, 'not a tool of this session');
      return finish('rejected', `Unknown tool '${call.name}'. Available tools: ${[...this.o.tools.keys()].join(', ') || '(none)'}.`);
    }
    const access = mayCall(this.o.access, this.o.user.roles, tool.name);
    if (!access.allowed) {
      authorize(false, access.reason);
      return finish('rejected', `${tool.name} is not allowed for this user: ${access.reason}. It did not run; do not retry it. Tell the user a person with access must do it.`);
    }
    const valid = tool.input.safeParse(call.input);
    if (!valid.success) {
      const issues = describeIssues(valid.error);
      authorize(false, `invalid input: ${issues}`);
      return finish('rejected', `Invalid input for ${tool.name}: ${issues}. Fix the arguments and call the tool again.`);
    }
    // Matched on the validated input: what the tool would get, after the schema's own transforms.
    const block = blockedBy(this.o.blocked, tool.name, valid.data);
    if (block) {
      authorize(false, `blocked action: ${block.reason}`);
      return finish('rejected', `${tool.name} is blocked for this agent: ${block.reason}. It did not run; do not retry it or work around it. Tell the user.`);
    }
    authorize(true, `${tool.name} is one of the session's tools (${access.reason}) and its input is valid`);
    const key = idempotencyKey(tool.policy.idempotency, this.o.workflowId, tool.name, valid.data, call.toolUseId);
    record.idempotencyKey = key;

    if (tool.policy.idempotency !== 'none') {
      const earlier = this.state.completed[key];
      if (earlier !== undefined) {
        record.deduplicated = true;
        return finish('ok', earlier.content, `(same call as before; not run again) ${earlier.content}`, earlier);
      }
      const running = this.inFlight.get(key);
      if (running) {
        // The same call is already under way (the model asked twice in one turn): share its outcome.
        record.deduplicated = true;
        const first = await running;
        return finish(first.record.outcome, first.content, `(same call as another in this turn; not run again) ${first.content}`, first);
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
    finish: (outcome: ToolCallRecord['outcome'], content: string, detail?: string, out?: Partial<ToolActivityOutput>) => ToolCallResult,
  ): Promise<ToolCallResult> {
    // Untrusted data the model had read before it asked for this call; a side effect after it needs a person.
    const sources = this.o.taint ? (this.state.untrusted ?? []).filter((u) => u.iteration < call.iteration) : [];
    const tainted = sources.length > 0 && tool.risk !== 'read';
    if (this.needsApproval(tool) || (tainted && this.taintApprovals)) {
      const request = await this.awaitApproval(tool, call, validInput, record, tainted ? sources : []);
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
      ...(this.o.wantValues ? { wantValue: true } : {}),
    };
    // The intent is on record before the side effect.
    this.o.audit?.add('tool_intent', `intent:${call.toolUseId}`, {
      tool: tool.name,
      tier: tool.risk,
      toolUseId: call.toolUseId,
      idempotencyKey: key,
      argHash: hashOf(validInput),
      args: redact(validInput, { fields: tool.sensitive ?? [], maxString: 2000 }),
      ...(call.reasoning ? { reasoning: call.reasoning.text.slice(0, 2000), ...(call.reasoning.usage ? { turnUsage: call.reasoning.usage } : {}) } : {}),
      ...(record.approvalRequestId ? { approvalRequestId: record.approvalRequestId } : {}),
    });
    // A read has no side effect to put its intent before: it is written with the next batch (audit.ts).
    await (tool.risk === 'read' ? this.o.audit?.checkpoint() : this.o.audit?.flush());
    // The undo is registered before the side effect, so a crash between the two cannot lose it.
    let undo: CompensationRecord | undefined;
    if (tool.policy.compensable) {
      undo = { tool: tool.name, idempotencyKey: key, toolUseId: call.toolUseId, status: 'pending' };
      this.registerUndo(undo, input);
    }

    try {
      const out = await this.toolActivity(tool)(input);
      this.remember(tool, key, out);
      return finish('ok', out.content, out.content, out);
    } catch (err) {
      if (!(err instanceof ActivityFailure)) throw err;
      const cause = err.cause;
      const reason = cause?.message ?? err.message;
      if (cause instanceof ApplicationFailure && (cause.type === FailureTypes.ToolError || cause.type === FailureTypes.InvalidToolInput)) {
        // The downstream refused: nothing happened, so there is nothing to undo.
        if (undo) undo.status = 'discarded';
        return finish('error', `${tool.name} failed: ${reason}`);
      }
      if (cause instanceof ApplicationFailure && cause.type === FailureTypes.ToolUnavailable) {
        // Refused before the downstream was called (circuit open, or disabled): nothing happened.
        if (undo) undo.status = 'discarded';
        if (tool.criticality === 'critical') throw this.criticalFailure(tool, reason, err, 'unavailable');
        log.warn('optional tool unavailable; continuing without it', { tool: tool.name, reason });
        return finish('error', `${tool.name} is unavailable right now (${reason}). Continue without it.`);
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
        this.remember(tool, key, status);
        return finish('ok', status.content, `(confirmed by status check after: ${reason}) ${status.content}`, status);
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
    const { compensations, undoInputs } = this.state;
    await CancellationScope.nonCancellable(async () => {
      for (let i = compensations.length - 1; i >= 0; i--) {
        const undo = compensations[i]!;
        if (undo.status !== 'pending') continue;
        const input = undoInputs[i]!;
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
        this.o.audit?.add('compensation', `undo:${undo.toolUseId}`, { tool: undo.tool, toolUseId: undo.toolUseId, idempotencyKey: undo.idempotencyKey, status: undo.status, ...(undo.error ? { error: undo.error } : {}) });
        this.addEvent({ kind: 'compensation', iteration, name: undo.tool, status: undo.status, detail: undo.error ?? `undid ${undo.tool} (${undo.toolUseId})` });
      }
    });
    return compensations;
  }

  /** Adds an undo after every undo of a call issued before this one (undos from earlier runs come first). */
  private registerUndo(undo: CompensationRecord, input: ToolActivityInput): void {
    const { compensations, undoInputs } = this.state;
    const order = (c: CompensationRecord) => this.callOrder.get(c.toolUseId) ?? -1;
    let at = compensations.length;
    while (at > 0 && order(compensations[at - 1]!) > order(undo)) at--;
    compensations.splice(at, 0, undo);
    undoInputs.splice(at, 0, input);
  }

  /** Remembers a completed side effect's result by key, so the same call later is answered without running. */
  private remember(tool: Tool, key: string, out: ToolOutputRef): void {
    if (tool.policy.idempotency === 'none') return;
    this.state.completed[key] = { content: out.content, ...(out.blob ? { blob: out.blob } : {}) };
  }

  private needsApproval(tool: Tool): boolean {
    const rule = tool.policy.approval;
    return rule === 'always' || rule === 'other-person' || (rule === 'policy' && this.o.approval.writeTools.includes(tool.name));
  }

  private async awaitApproval(tool: Tool, call: ToolCallRequest, input: unknown, record: ToolCallRecord, untrusted: UntrustedSource[]): Promise<ApprovalRequest> {
    const timeout = tool.policy.approvalTimeout ?? this.o.approval.timeout;
    const now = Date.now();
    const request: ApprovalRequest = {
      requestId: `${tool.name}-${this.state.approvals.filter((a) => a.tool === tool.name).length + 1}`,
      tool: tool.name,
      risk: tool.risk,
      toolUseId: call.toolUseId,
      input: redact(input, { fields: tool.sensitive ?? [] }),
      reason:
        (tool.policy.approval === 'other-person'
          ? `${tool.name} is privileged: an approver with role ${this.o.approval.privilegedApproverRoles.join(' or ')} who is not the requester must approve`
          : tool.risk === 'irreversible'
            ? `${tool.name} is irreversible: a person with role ${this.o.approval.approverRoles.join(' or ')} must approve`
            : this.needsApproval(tool)
              ? `the session's policy requires approval for ${tool.name}`
              : `${tool.name} changes things after the model read untrusted data: a person with role ${this.o.approval.approverRoles.join(' or ')} must approve`) +
        (untrusted.length ? `. Untrusted data in the conversation came from ${untrusted.map((u) => `${u.tool} (${u.toolUseId})`).join(', ')}: check the request is the user's, not the data's` : ''),
      ...(untrusted.length ? { untrustedSources: untrusted.map((u) => ({ tool: u.tool, toolUseId: u.toolUseId })) } : {}),
      requestedBy: this.o.user.id,
      requestedAt: new Date(now).toISOString(),
      expiresAt: new Date(now + toMs(timeout)).toISOString(),
      status: 'pending',
    };
    this.state.approvals.push(request);
    record.approvalRequestId = request.requestId;
    this.addEvent({ kind: 'approval', iteration: call.iteration, requestId: request.requestId, name: tool.name, status: 'pending', detail: request.reason });
    this.o.onChange();
    // The trail shows what led here while the session waits (an older session did not write here: no await for it).
    if (this.o.audit?.lean) await this.o.audit.flush();
    const decided = await condition(() => request.status !== 'pending', timeout as TemporalDuration, { summary: `approval ${request.requestId}` });
    if (!decided) {
      this.o.audit?.add('approval', `approval:${request.requestId}:expired`, { requestId: request.requestId, tool: tool.name, decision: 'expired', reason: 'nobody decided within the timeout' });
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
      this.state.approvalLog.push({ at, requestId, via, accepted: false, reason, ...(approver ? { approver } : {}) });
      this.o.audit?.add('approval', `approval:${requestId}:${this.state.approvalLog.length}`, { requestId, via, accepted: false, code, reason, ...(approver ? { approver } : {}) });
      log.warn('approval refused', { requestId, via, code, reason });
      return { accepted: false, requestId, code, reason };
    };
    const parsed = ApprovalDecisionSchema.safeParse(raw);
    if (!parsed.success) {
      const id = typeof (raw as { requestId?: unknown })?.requestId === 'string' ? (raw as { requestId: string }).requestId : '(none)';
      return refuse(id, 'invalid', `invalid approval: ${describeIssues(parsed.error, '')}`);
    }
    const d = parsed.data;
    const request = this.state.approvals.find((a) => a.requestId === d.requestId);
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
    this.state.approvalLog.push({ at, requestId: d.requestId, decision: d.decision, approver: d.approver.id, via, accepted: true, ...(d.reason ? { reason: d.reason } : {}) });
    this.o.audit?.add('approval', `approval:${d.requestId}:${this.state.approvalLog.length}`, {
      requestId: d.requestId,
      tool: request.tool,
      via,
      accepted: true,
      decision: d.decision,
      approver: d.approver.id,
      approverRoles: d.approver.roles,
      ...(d.reason ? { reason: d.reason } : {}),
    });
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
    if (this.localReads && runsLocal(tool, this.o.reads)) {
      // A read as a local activity (README, *Execution modes*): the same registered activity, run by this
      // worker within the workflow task; no heartbeat (its timeout is at most 10 s), retried by this worker.
      const call = proxyLocalActivities<Record<string, ToolActivity>>({
        startToCloseTimeout: tool.policy.startToCloseTimeout,
        retry: {
          maximumAttempts: tool.policy.maxAttempts,
          initialInterval: tool.policy.initialRetryInterval,
          backoffCoefficient: 2,
          nonRetryableErrorTypes: [FailureTypes.ToolError, FailureTypes.InvalidToolInput, FailureTypes.ToolUnavailable],
        },
        cancellationType: ActivityCancellationType.TRY_CANCEL,
        summary: `${tool.policy.risk}, local${tool.criticality === 'optional' ? ', optional' : ''}`,
      })[tool.name]!;
      return (input) => call(input).catch((err: unknown) => Promise.reject(asActivityFailure(err, tool.name)));
    }
    return proxyActivities<Record<string, ToolActivity>>({
      startToCloseTimeout: tool.policy.startToCloseTimeout,
      heartbeatTimeout: TOOL_HEARTBEAT_TIMEOUT,
      retry: {
        maximumAttempts: tool.policy.maxAttempts,
        initialInterval: tool.policy.initialRetryInterval,
        backoffCoefficient: 2,
        nonRetryableErrorTypes: [FailureTypes.ToolError, FailureTypes.InvalidToolInput, FailureTypes.ToolUnavailable],
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

  private criticalFailure(tool: Tool, reason: string, cause: Error, how: 'failed' | 'unavailable' = 'failed'): ApplicationFailure {
    return ApplicationFailure.create({
      type: FailureTypes.CriticalToolFailed,
      nonRetryable: true,
      message: how === 'failed' ? `critical tool ${tool.name} failed after ${tool.policy.maxAttempts} attempt(s): ${reason}` : `critical tool ${tool.name} is unavailable: ${reason}`,
      details: [{ tool: tool.name }],
      cause,
    });
  }
}

/**
 * A local activity's failure reaches the workflow as the activity's own failure (an `ApplicationFailure`,
 * a `TimeoutFailure`), without the `ActivityFailure` around it that a regular activity's has: wrapped here,
 * so the runner makes the same of a failure in both modes. Cancellation passes as it is.
 */
function asActivityFailure(err: unknown, activityType: string): unknown {
  if (err instanceof ActivityFailure || !(err instanceof TemporalFailure) || isCancellation(err)) return err;
  const retryState = err instanceof ApplicationFailure && err.nonRetryable ? RetryState.NON_RETRYABLE_FAILURE : RetryState.MAXIMUM_ATTEMPTS_REACHED;
  return new ActivityFailure('Local activity failed', activityType, undefined, retryState, undefined, err);
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
