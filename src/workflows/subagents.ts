/**
 * Sub-agents: an agent may delegate to other agents of its app (`defineAgent({ subAgents: ['billing'] })`).
 * Each is offered to the model as a tool, `delegate_to_<agent>`, whose input is `{ task }`. A call runs
 * `agentSession` as a child workflow (a relationship in the Web UI) whose workflow ID is the parent's, the
 * agent's name and the `tool_use` id, as the parent's user with the parent's roles, with the sub-agent's own
 * prompt, model (else the parent's), tools, approval policy and blocked actions. The child answers once (no
 * follow-up messages); its answer is the tool result. A delegation passes the steps of the tool pipeline
 * that apply to it: authorize (the agent names the sub-agent), validate (`{ task }`), budget, audit (intent
 * before, result after), and the record in the session's tool calls and events.
 *
 * **Budgets.** For each kind the parent caps, the delegations of one model turn share what the parent has
 * left after that turn's calls, evenly (wall time is not split: children run side by side), capped further
 * by the sub-agent's own budget. What a child spent (model calls, tool calls, tokens, cost) is added to the
 * parent's, even when the child fails, so the parent's budget checks, cost and result see it.
 *
 * **Compensation.** A child that fails or is cancelled undoes its own writes (its saga). A child that
 * completed hands back the writes it left in place with their undo inputs; the parent puts them on its own
 * undo stack, so a parent that fails, is cancelled or ends at a budget later undoes them too, with the same
 * `<tool>.compensate` activities, last in first out. This needs no running child and no extra workflow: the
 * undo is the tool's own, keyed by the child's idempotency key.
 *
 * **Cancellation.** Cancelling the parent cancels its running children and waits until each has finished
 * cancelling (`WAIT_CANCELLATION_COMPLETED`), so their sagas have run before the parent's. Should the parent
 * close any other way while a child runs (terminated, timed out), `ParentClosePolicy.REQUEST_CANCEL` asks the
 * child to cancel, which runs its saga; the default, `TERMINATE`, would kill it with its writes in place.
 *
 * **Taint.** Untrusted data the parent's model had read when it delegated goes with the task, so every side
 * effect of the child needs a person; a child that read untrusted data answers as untrusted data.
 *
 * Sandbox-safe: workflow code.
 */
import { z } from 'zod';
import {
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  ChildWorkflowCancellationType,
  type ChildWorkflowOptions,
  ChildWorkflowFailure,
  ContinueAsNew,
  ParentClosePolicy,
  executeChild,
  isCancellation,
  log,
} from '@temporalio/workflow';
// The workflow entry does not re-export it; the common package is what the workflow runtime itself uses.
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import type { KeelApp } from '../app/registry.js';
import { toModelTool, toMs, type ModelToolDefinition } from '../tools/index.js';
import type { agentSession } from './agentSession.js';
import { hashOf, type AuditTrail } from './audit.js';
import type { Budget, BudgetKind, Spend, Used } from './budget.js';
import { redact } from './redact.js';
import type { ToolCallRequest, ToolRunner } from './tool-runner.js';
import { asUntrustedData } from './untrusted.js';
import {
  SESSION_USER_MEMO,
  describeIssues,
  type ParentLink,
  type PendingUndo,
  type SessionInputArgs,
  type SessionResult,
  type SessionSpec,
  type SessionState,
  type SubAgentSpend,
  type ToolCallRecord,
  type ToolResultBlock,
  type ToolRunnerState,
  type ToolUseBlock,
} from './types.js';

/** The tool name prefix of delegations: the model calls `delegate_to_<agent>`. */
export const DELEGATION_PREFIX = 'delegate_to_';

/**
 * How a Keel workflow runs an agent session as its child (a delegation, a route): cancelling the parent
 * cancels the child and waits for its saga, a parent closed any other way asks it to cancel, and the memo
 * records who started it as the client does for a session (`SESSION_USER_MEMO`), so the gateway shows a
 * user their own.
 */
export function childSessionOptions(workflowId: string, summary: string, userId: string): ChildWorkflowOptions {
  return {
    workflowId,
    cancellationType: ChildWorkflowCancellationType.WAIT_CANCELLATION_COMPLETED,
    parentClosePolicy: ParentClosePolicy.REQUEST_CANCEL,
    staticSummary: summary,
    memo: { [SESSION_USER_MEMO]: userId },
  };
}

/** The tool a sub-agent is offered as. */
export function delegationToolName(agent: string): string {
  return `${DELEGATION_PREFIX}${agent}`;
}

/** The input of every delegation tool. */
export const DelegationInputSchema = z.object({
  task: z
    .string()
    .min(1)
    .max(100_000)
    .describe('The task, complete in itself: the sub-agent sees only this text, not this conversation. Name the ids, amounts and the outcome you want.'),
});

/** The delegation tools of `names` as the Messages API sees them, described from each agent's description. */
export function delegationTools(app: KeelApp, names: readonly string[]): ModelToolDefinition[] {
  return names.map((name) => {
    const about = app.agents.get(name)?.description;
    return toModelTool({
      name: delegationToolName(name),
      description:
        `Delegate a task to the ${name} sub-agent${about ? `: ${about}` : ''}. It works on its own with its own tools ` +
        '(its side effects need the same approvals) and answers with what it did. Independent delegations in one turn run in parallel.',
      input: DelegationInputSchema,
    });
  });
}

/** What each delegation of a turn may spend, or the budget kind that leaves nothing to share. */
export type Allotment = { budget: Partial<Budget> } | { refused: BudgetKind };

/**
 * Shares what a parent has left of each budget it caps among `ways` delegations: counts are floored (a
 * share under 1 refuses them), USD is split, wall time is not (children run side by side).
 * `onExhausted` is the parent's.
 */
export function shareBudget(parent: Budget, used: Used, ways: number, msOf: (d: number | string) => number = toMs): Allotment {
  const budget: Partial<Budget> = { onExhausted: parent.onExhausted };
  const counts: Array<[Exclude<BudgetKind, 'usd' | 'wallTime'>, number | undefined, number]> = [
    ['iterations', parent.iterations, used.iterations],
    ['toolCalls', parent.toolCalls, used.toolCalls],
    ['inputTokens', parent.inputTokens, used.spend.input_tokens + used.spend.cache_creation_input_tokens + used.spend.cache_read_input_tokens],
    ['outputTokens', parent.outputTokens, used.spend.output_tokens],
  ];
  for (const [kind, limit, value] of counts) {
    if (limit === undefined) continue;
    const each = Math.floor((limit - value) / ways);
    if (each < 1) return { refused: kind };
    budget[kind] = each;
  }
  if (parent.usd !== undefined) {
    const each = (parent.usd - used.spend.cost_usd) / ways;
    if (!(each > 0)) return { refused: 'usd' };
    budget.usd = each;
  }
  if (parent.wallTime !== undefined) {
    const left = Math.floor(msOf(parent.wallTime) - used.elapsedMs);
    if (left < 1) return { refused: 'wallTime' };
    budget.wallTime = left;
  }
  return { budget };
}

/**
 * The tighter of an allotment and a sub-agent's own budget, kind by kind; the sub-agent's `onExhausted`
 * wins when it has a budget of its own.
 */
export function tighterBudget(allotted: Partial<Budget>, own: Partial<Budget> | undefined, msOf: (d: number | string) => number = toMs): Partial<Budget> {
  const out: Partial<Budget> = { ...own, ...allotted, ...(own?.onExhausted ? { onExhausted: own.onExhausted } : {}) };
  for (const kind of ['iterations', 'toolCalls', 'inputTokens', 'outputTokens', 'usd'] as const) {
    const a = allotted[kind];
    const b = own?.[kind];
    if (a !== undefined && b !== undefined) out[kind] = Math.min(a, b);
  }
  if (allotted.wallTime !== undefined && own?.wallTime !== undefined) out.wallTime = Math.min(msOf(allotted.wallTime), msOf(own.wallTime));
  return out;
}

/** The spend a failed sub-agent session reports in its failure's details. */
interface ReportedSpend {
  keelSpend: Omit<SubAgentSpend, 'sessions'>;
}

/**
 * A sub-agent session's body, made to report what it spent when it fails: the failure carries it in its
 * details (same type and message), so the parent adds it to its own. Other sessions' bodies are returned
 * as they are; cancellation and continue-as-new pass through.
 */
export function reportingSpend<T>(isChild: boolean, spent: () => Omit<SubAgentSpend, 'sessions'>, body: () => Promise<T>): () => Promise<T> {
  if (!isChild) return body;
  return async () => {
    try {
      return await body();
    } catch (err) {
      if (err instanceof ContinueAsNew || isCancellation(err)) throw err;
      let cause: unknown = err;
      while (cause instanceof ActivityFailure && cause.cause) cause = cause.cause;
      const details: ReportedSpend = { keelSpend: spent() };
      throw ApplicationFailure.create({
        type: cause instanceof ApplicationFailure ? (cause.type ?? 'SessionFailed') : 'SessionFailed',
        nonRetryable: true,
        message: cause instanceof Error ? cause.message : String(cause),
        details: [details],
        cause: err instanceof Error ? err : undefined,
      });
    }
  };
}

/** The parent's untrusted sources a sub-agent starts with, as its runner's state records them. */
export function inheritedTaint(parent: ParentLink | undefined): Pick<ToolRunnerState, 'untrusted'> {
  if (!parent?.untrusted.length) return {};
  // Turn 0 comes before the child's first model turn: every call the child makes is after it.
  return { untrusted: parent.untrusted.map((u) => ({ tool: u.tool, toolUseId: u.toolUseId, iteration: 0 })) };
}

/**
 * What a session's result says about sub-agents: what they spent (when it delegated), and, for a sub-agent's
 * own session, the writes it leaves in place with their undo inputs and the untrusted tools it read.
 */
export function subAgentResult(spec: SessionSpec, state: SessionState, runner: ToolRunner): Pick<SessionResult, 'subAgents' | 'undos' | 'untrusted'> {
  const { compensations, undoInputs, untrusted } = runner.state;
  return {
    ...(state.subAgents ? { subAgents: state.subAgents } : {}),
    ...(spec.parent
      ? {
          undos: compensations.flatMap((c, i): PendingUndo[] => (c.status === 'pending' ? [{ compensation: c, input: undoInputs[i]! }] : [])),
          untrusted: [...new Set((untrusted ?? []).map((u) => u.tool))],
        }
      : {}),
  };
}

/** What a session hands `Delegations`. */
export interface DelegationsOptions {
  app: KeelApp;
  spec: SessionSpec;
  state: SessionState;
  runner: ToolRunner;
  audit: AuditTrail;
  workflowId: string;
}

/** Runs a session's delegations to its sub-agents; see the file header. */
export class Delegations {
  /** The delegation tools to offer the model. */
  readonly tools: ModelToolDefinition[];
  private readonly names: ReadonlyMap<string, string>;
  /** This turn's allotment (set by `planTurn`). */
  private allotment: Allotment = { budget: {} };

  constructor(private readonly o: DelegationsOptions) {
    const agents = o.spec.subAgents ?? [];
    this.names = new Map(agents.map((a) => [delegationToolName(a), a]));
    this.tools = delegationTools(o.app, agents);
  }

  /** True when `tool` is one of this session's delegation tools. */
  handles(tool: string): boolean {
    return this.names.has(tool);
  }

  /**
   * Shares the parent's remaining budget among the delegations of a model turn; call it once per turn,
   * before its calls run, with the calls that will run and what the session had used before them.
   */
  planTurn(calls: readonly ToolUseBlock[], used: Used): void {
    const ways = calls.filter((c) => this.handles(c.name)).length;
    // Each of this turn's calls counts as one tool call of the parent, delegations included.
    if (ways > 0) this.allotment = shareBudget(this.o.spec.budget, { ...used, toolCalls: used.toolCalls + calls.length }, ways);
  }

  /** Runs one delegation as a child session; never throws for an outcome the model should hear about. */
  async run(call: ToolCallRequest): Promise<ToolResultBlock> {
    const { spec, state, runner, audit } = this.o;
    const agent = this.names.get(call.name)!;
    const childId = `${this.o.workflowId}.${agent}.${call.toolUseId}`;
    const record: ToolCallRecord = { toolUseId: call.toolUseId, name: call.name, outcome: 'ok', iteration: call.iteration, subSession: childId };
    runner.state.toolCalls.push(record);
    if (!state.toolsUsed.includes(call.name)) state.toolsUsed.push(call.name);
    const finish = (outcome: ToolCallRecord['outcome'], content: string, data: Record<string, unknown> = {}): ToolResultBlock => {
      record.outcome = outcome;
      if (outcome !== 'ok') record.error = content;
      audit.add('tool_result', `result:${call.toolUseId}`, { tool: call.name, toolUseId: call.toolUseId, outcome, resultHash: hashOf(content), result: content.slice(0, 1000), subSession: childId, ...data });
      runner.addEvent({ kind: 'tool', iteration: call.iteration, name: call.name, toolUseId: call.toolUseId, outcome, detail: content.slice(0, 200) });
      return { type: 'tool_result', tool_use_id: call.toolUseId, content, ...(outcome !== 'ok' ? { is_error: true } : {}) };
    };
    const authorize = (allowed: boolean, reason: string) =>
      audit.add('authorization', `authz:${call.toolUseId}`, { tool: call.name, toolUseId: call.toolUseId, allowed, reason, user: spec.user.id, roles: spec.user.roles });

    const valid = DelegationInputSchema.safeParse(call.input);
    if (!valid.success) {
      authorize(false, `invalid input: ${describeIssues(valid.error)}`);
      return finish('rejected', `Invalid input for ${call.name}: ${describeIssues(valid.error)}. Give the task as { "task": "..." } and call it again.`);
    }
    if ('refused' in this.allotment) {
      authorize(false, `the session's ${this.allotment.refused} budget leaves nothing to delegate`);
      return finish('rejected', `${call.name} was not run: the session's ${this.allotment.refused} budget is nearly spent. Answer with what you have.`);
    }
    authorize(true, `${agent} is a sub-agent of ${spec.agent}; it runs as the same user, held to its own tools and policies`);
    const budget = tighterBudget(this.allotment.budget, this.o.app.agents.get(agent)?.budget);
    // What the parent's model had read from others may have shaped the task: the child's side effects need a person.
    const untrusted = (runner.state.untrusted ?? []).filter((u) => u.iteration < call.iteration).map((u) => ({ tool: u.tool, toolUseId: u.toolUseId }));
    const input: SessionInputArgs = {
      prompt: valid.data.task,
      user: spec.user,
      agent,
      defaultModel: spec.model,
      modelRetry: spec.modelRetry,
      modelHeartbeatTimeout: spec.modelHeartbeatTimeout,
      idleTimeout: 0,
      budget,
      ...(spec.pricing ? { pricing: spec.pricing } : {}),
      ...(spec.historyLimitBytes !== undefined ? { historyLimitBytes: spec.historyLimitBytes } : {}),
      searchAttributes: spec.searchAttributes,
      parent: { workflowId: this.o.workflowId, toolUseId: call.toolUseId, untrusted },
    };
    audit.add('tool_intent', `intent:${call.toolUseId}`, {
      tool: call.name,
      tier: 'sub-agent',
      toolUseId: call.toolUseId,
      argHash: hashOf(valid.data),
      args: redact(valid.data, { maxString: 2000 }),
      subSession: childId,
      budget,
      ...(call.reasoning ? { reasoning: call.reasoning.text.slice(0, 2000), ...(call.reasoning.usage ? { turnUsage: call.reasoning.usage } : {}) } : {}),
    });
    await audit.flush();

    let result: SessionResult;
    try {
      result = await executeChild<typeof agentSession>('agentSession', {
        ...childSessionOptions(childId, `sub-agent ${agent}: ${valid.data.task.split('\n', 1)[0]!.slice(0, 100)}`, spec.user.id),
        args: [input],
      });
    } catch (err) {
      // The parent is being cancelled: its own saga runs next (the child's already has).
      if (CancellationScope.current().consideredCancelled) throw err;
      if (err instanceof WorkflowExecutionAlreadyStartedError) {
        return finish('error', `${call.name} did not start: a session ${childId} is already running.`);
      }
      if (!(err instanceof ChildWorkflowFailure)) throw err;
      const spent = reportedSpend(err);
      if (spent) this.rollUp(spent);
      const reason = messageOf(err);
      const undone = compensationsIn(err);
      log.warn('sub-agent failed', { agent, subSession: childId, reason });
      return finish(
        'error',
        isCancellation(err)
          ? `The ${agent} sub-agent was cancelled before it finished${undone ? `; its ${undone} write(s) were undone` : ''}. Do not assume it did anything.`
          : `The ${agent} sub-agent failed: ${reason}${undone ? `. Its ${undone} write(s) were undone` : ''}. Do not assume it did anything.`,
        spent ? { usage: spent.usage } : {},
      );
    }

    this.rollUp({ modelCalls: result.iterations + (result.subAgents?.modelCalls ?? 0), toolCalls: result.toolCalls.length + (result.subAgents?.toolCalls ?? 0), usage: result.usage });
    // The child's writes stay unless the parent fails: then the parent's saga undoes them with its own.
    for (const undo of result.undos ?? []) {
      runner.state.compensations.push({ ...undo.compensation, toolUseId: `${call.toolUseId}/${undo.compensation.toolUseId}`, session: undo.compensation.session ?? childId });
      runner.state.undoInputs.push(undo.input);
    }
    if (result.untrusted?.length) (runner.state.untrusted ??= []).push({ tool: call.name, toolUseId: call.toolUseId, iteration: call.iteration });
    const stoppedEarly = result.stopReason === 'max_iterations' || result.stopReason.startsWith('budget_');
    const undone = result.compensations.filter((c) => c.status === 'compensated').length;
    const answer = result.answer || '(no answer)';
    const text = stoppedEarly
      ? `The ${agent} sub-agent stopped early (${result.stopReason})${undone ? ` and its ${undone} write(s) were undone` : ''}. Its last answer: ${answer}`
      : answer;
    const content = result.untrusted?.length ? asUntrustedData(call.name, text) : text;
    return finish(stoppedEarly ? 'error' : 'ok', content, { stopReason: result.stopReason, usage: result.usage });
  }

  /** Adds a child's spend to the session's usage and its sub-agents' total. */
  private rollUp(spent: Omit<SubAgentSpend, 'sessions'>): void {
    const { state } = this.o;
    const total = (state.subAgents ??= { sessions: 0, modelCalls: 0, toolCalls: 0, usage: { input_tokens: 0, output_tokens: 0, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, cost_usd: 0 } });
    total.sessions += 1;
    total.modelCalls += spent.modelCalls;
    total.toolCalls += spent.toolCalls;
    addSpend(total.usage, spent.usage);
    addSpend(state.usage, spent.usage);
  }
}

function addSpend(total: Spend, more: Spend): void {
  total.input_tokens += more.input_tokens;
  total.output_tokens += more.output_tokens;
  total.cache_creation_input_tokens += more.cache_creation_input_tokens;
  total.cache_read_input_tokens += more.cache_read_input_tokens;
  total.cost_usd += more.cost_usd;
}

/** The failures in a chain, outermost first. */
function chainOf(err: unknown): Error[] {
  const chain: Error[] = [];
  for (let e: unknown = err; e instanceof Error && chain.length < 20; e = e.cause) chain.push(e);
  return chain;
}

/** The spend a failed child reported (see `reportingSpend`). */
function reportedSpend(err: ChildWorkflowFailure): ReportedSpend['keelSpend'] | undefined {
  for (const e of chainOf(err)) {
    const d = e instanceof ApplicationFailure ? (e.details?.[0] as Partial<ReportedSpend> | undefined) : undefined;
    if (d?.keelSpend) return d.keelSpend;
  }
  return undefined;
}

/** How many of a failed child's writes its saga undid (from the lifecycle's failure details). */
function compensationsIn(err: ChildWorkflowFailure): number {
  for (const e of chainOf(err)) {
    const d = e instanceof ApplicationFailure ? (e.details?.[0] as { compensations?: Array<{ status?: string }> } | undefined) : undefined;
    if (d?.compensations) return d.compensations.filter((c) => c.status === 'compensated').length;
  }
  return 0;
}

/** The message of the first failure in the chain that says what went wrong (not Temporal's wrapper). */
function messageOf(err: ChildWorkflowFailure): string {
  return chainOf(err).find((e) => !(e instanceof ChildWorkflowFailure))?.message ?? err.message;
}

/**
 * The first problem with the agents' sub-agents, or undefined: a sub-agent the app lacks, a delegation tool
 * whose name a tool of the app already has, or agents that delegate in a circle (A → B → A), which no budget
 * would stop short of the deepest nesting. The app check calls it once, at start.
 */
export function subAgentProblem(agents: ReadonlyMap<string, { subAgents?: string[] | undefined }>, toolNames: ReadonlySet<string> | ReadonlyMap<string, unknown>): string | undefined {
  for (const [name, agent] of agents) {
    for (const sub of agent.subAgents ?? []) {
      if (!agents.has(sub)) return `agent '${name}' names sub-agent '${sub}', which the module does not export (agents: ${[...agents.keys()].join(', ')})`;
      if (toolNames.has(delegationToolName(sub))) return `agent '${name}' delegates to '${sub}' as tool '${delegationToolName(sub)}', but a tool of that name exists; rename the tool`;
    }
  }
  const visiting: string[] = [];
  const done = new Set<string>();
  const cycle = (name: string): string[] | undefined => {
    if (visiting.includes(name)) return [...visiting.slice(visiting.indexOf(name)), name];
    if (done.has(name)) return undefined;
    visiting.push(name);
    for (const sub of agents.get(name)?.subAgents ?? []) {
      const found = cycle(sub);
      if (found) return found;
    }
    visiting.pop();
    done.add(name);
    return undefined;
  };
  for (const name of agents.keys()) {
    const found = cycle(name);
    if (found) return `agents delegate in a circle (${found.join(' → ')}): a sub-agent may not delegate back to an agent that delegates to it`;
  }
  return undefined;
}
