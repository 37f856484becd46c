/**
 * `agentSession`: the agent loop as a deterministic Temporal workflow. A session runs as one of the app's
 * agents (its prompt, model, tools, budgets and approval policy). Each model call is the activity
 * `callModel`, which gets the conversation by reference (the store holds it; history holds only what is
 * new); each tool call goes through the `ToolRunner` (allowlist, validation, idempotency keys, approval
 * gate, saga registration, unknown-outcome handling) and runs as an activity named after the tool.
 * Routine model calls (between successful lookups) may go to the agent's cheaper `routineModel`
 * (model-tier.ts); each call's cost is counted at its own model's price.
 * An agent's sub-agents are offered as delegation tools, each call a child session within the
 * parent's budgets whose writes the parent's saga undoes too (subagents.ts).
 *
 * A session is a conversation: after an answer it waits up to `idleTimeout` for a follow-up message (the
 * `sendMessage` update, which returns that message's answer) and completes when none comes. Keys, undos,
 * approvals and usage span the whole conversation. Everything the session is lives in one plain value,
 * `SessionState`; when Temporal suggests it (or the history passes `historyLimitBytes`) the session
 * continues as new with that value, between model calls and never while an update waits for its answer.
 */
import {
  allHandlersFinished,
  condition,
  continueAsNew,
  log,
  patched,
  proxyActivities,
  proxyLocalActivities,
  setHandler,
  workflowInfo,
} from '@temporalio/workflow';
import type { KeelApp } from '../app/registry.js';
import { DEFAULT_AGENT_NAME, DEFAULT_SYSTEM_PROMPT } from '../app/registry.js';
import { mayCall } from '../app/access.js';
import { toModelTool, toMs, withMcpTools } from '../tools/index.js';
import { currentApp } from './app.js';
import { AuditTrail, hashOf } from './audit.js';
import { BudgetSchema, FINAL_TURN_AT, costOf, mostUsed, noSpend, priceOf, type BudgetKind, type ModelPrice, type Spend } from './budget.js';
import { SessionLifecycle } from './lifecycle.js';
import { learnMcpTools } from './mcp.js';
import { isRoutineTurn, sideEffectsAsked, type TurnToolOutcome } from './model-tier.js';
import { ToolRunner, isUntrusted, newToolRunnerState } from './tool-runner.js';
import { Delegations, inheritedTaint, reportingSpend, subAgentResult } from './subagents.js';
import { asUntrustedData } from './untrusted.js';
import {
  ApprovalPolicySchema,
  FailureTypes,
  SessionInputSchema,
  UserMessageSchema,
  describeIssues,
  endConversationSignal,
  invalidInput,
  parseWorkflowInput,
  sendMessageUpdate,
  type CallModelInput,
  type CallModelOutput,
  type ContentBlock,
  type SessionInput,
  type SessionInputArgs,
  type SessionResult,
  type SessionSpec,
  type SessionState,
  type TextBlock,
  type ToolAvailabilityInput,
  type ToolAvailabilityOutput,
  type ToolResultBlock,
  type ToolUseBlock,
  type TurnAnswer,
} from './types.js';

type ModelActivities = { callModel(input: CallModelInput): Promise<CallModelOutput> };
type AvailabilityActivities = { toolAvailability(input: ToolAvailabilityInput): Promise<ToolAvailabilityOutput> };

/** Answers kept for updates waiting on them. */
const ANSWERS_KEPT = 20;

/**
 * Added to the attempt number of the main model's call that replaces a set-aside routine reply, in stream
 * events: watchers see it as a later attempt of the same turn and retract the routine reply's text.
 */
const ESCALATION_STREAM_ATTEMPT = 1_000;

/**
 * Runs one agent session until its conversation ends.
 * @param args - the session's input (validated here again).
 * @param continued - the state a previous run handed over by continue-as-new.
 */
export async function agentSession(args: SessionInputArgs, continued?: SessionState): Promise<SessionResult> {
  const info = workflowInfo();
  const input = continued ? undefined : parseWorkflowInput(SessionInputSchema, args, 'session');
  // MCP servers' tools are known at run time only: listed once when the session starts (history records
  // it), then carried in the state; an app without MCP servers schedules nothing for this.
  const mcpTools = continued ? continued.mcpTools : await learnMcpTools(currentApp());
  const app = withMcpTools(currentApp(), mcpTools);
  const state = continued ?? { ...newSessionState(input!, app, info), ...(mcpTools ? { mcpTools } : {}) };
  const { spec } = state;
  if (continued) {
    state.run += 1;
    // State handed over by a run of an older build lacks what was added since: fill it in.
    spec.budget ??= BudgetSchema.parse({});
    state.startedAt ??= info.startTime.getTime();
    state.audit ??= [];
  }
  // Sessions started before the trail existed replay without its activities, and those started before it
  // was lean with its writes before each model call and read (audit.ts).
  const auditOn = patched('keel-audit-trail');
  const audit = new AuditTrail(state.audit, auditOn, auditOn && patched('keel-lean-audit'));
  if (!continued) {
    audit.add('run', 'run', { agent: spec.agent, model: spec.model, user: spec.user.id, roles: spec.user.roles, tools: spec.tools, prompt: args.prompt.slice(0, 2000), budget: spec.budget, ...(spec.subAgents ? { subAgents: spec.subAgents } : {}), ...(spec.parent ? { parent: spec.parent.workflowId } : {}) });
  }
  const tools = spec.tools.map((name) => app.tools.get(name) ?? invalidInput(`tool '${name}' of this session is not in the worker's tools module any more`));
  // The model is offered only what the user's roles allow; the runner refuses the rest if asked anyway.
  const offered = tools.filter((t) => mayCall(app.access, spec.user.roles, t.name).allowed);
  const modelTools = offered.map(toModelTool);
  const toolsByName: ReadonlyMap<string, (typeof tools)[number]> = new Map(tools.map((t) => [t.name, t]));

  const modelRetry = {
    initialInterval: spec.modelRetry.initialInterval,
    backoffCoefficient: 2,
    maximumInterval: '30s',
    maximumAttempts: spec.modelRetry.maximumAttempts,
    nonRetryableErrorTypes: [FailureTypes.ModelRequestRejected],
  };
  // The model call as a local activity only when the session asks (README, *Execution modes*). Decided once,
  // at the run's start: a session begun before the option existed keeps its regular activities on replay.
  const localModel = spec.execution?.model === 'local' && patched('keel-local-model');
  const { callModel } = localModel
    ? proxyLocalActivities<ModelActivities>({ startToCloseTimeout: '2m', retry: modelRetry, summary: 'model turn' })
    : proxyActivities<ModelActivities>({ startToCloseTimeout: '2m', heartbeatTimeout: spec.modelHeartbeatTimeout, retry: modelRetry, summary: 'model turn' });

  // Which optional tools are down (open circuit, disabled) is read before each model call, from the store
  // every worker shares; a local activity records the answer, so replay sees the same tool list.
  const { toolAvailability } = proxyLocalActivities<AvailabilityActivities>({ startToCloseTimeout: '5s', retry: { maximumAttempts: 3, initialInterval: '100ms' } });
  const optionalTools = offered.filter((t) => t.criticality === 'optional').map((t) => t.name);

  // The agent's blocked actions are read from the code, like the access policy: changing them is a code change.
  const blocked = app.agents.get(spec.agent)?.blocked;
  // What the session has used, in each unit a budget caps; its sub-agents' model and tool calls count too.
  const used = () => ({
    iterations: state.modelCalls + (state.subAgents?.modelCalls ?? 0),
    toolCalls: runner.toolCalls.length + (state.subAgents?.toolCalls ?? 0),
    spend: state.usage,
    elapsedMs: Date.now() - state.startedAt,
  });
  const runner: ToolRunner = new ToolRunner(
    { workflowId: info.workflowId, user: spec.user, tools: new Map(tools.map((t) => [t.name, t])), approval: spec.approval, onChange: () => life.refresh(), audit, taint: true, ...(spec.execution ? { reads: spec.execution.reads } : {}), ...(app.access ? { access: app.access } : {}), ...(blocked ? { blocked } : {}) },
    state.tools,
  );
  const life: SessionLifecycle = new SessionLifecycle({
    runner,
    searchAttributes: spec.searchAttributes,
    title: spec.title,
    progress: () => ({ iteration: state.modelCalls, usage: state.usage, turn: state.turn, awaitingMessage: state.phase === 'idle', run: state.run }),
    toolsUsed: () => state.toolsUsed,
    audit,
    details: () => budgetLine(spec.budget, used()),
    metrics: { agent: spec.agent, model: spec.model, priced: spec.price !== undefined, stopReason: () => state.stopReason },
  });
  // Sub-agents (subagents.ts) are offered as delegation tools; a session whose agent has none never gets here.
  const delegations = spec.subAgents?.length && patched('keel-sub-agents') ? new Delegations({ app, spec, state, runner, audit, workflowId: info.workflowId }) : undefined;
  if (delegations) modelTools.push(...delegations.tools);

  setHandler(
    sendMessageUpdate,
    async (message): Promise<TurnAnswer> => {
      // Queued messages are answered in order, each as its own turn after the current one.
      const turn = state.turn + state.inbox.length + 1;
      state.inbox.push(message.text.trim());
      await condition(() => state.answers.some((a) => a.turn === turn));
      return state.answers.find((a) => a.turn === turn)!;
    },
    {
      validator: (message) => {
        const parsed = UserMessageSchema.safeParse(message);
        if (!parsed.success) throw new Error(`invalid message: ${describeIssues(parsed.error, 'text')}`);
        if (state.endRequested) throw new Error('the conversation has ended; start a new session');
      },
    },
  );
  setHandler(endConversationSignal, () => {
    state.endRequested = true;
  });

  const idleMs = toMs(spec.idleTimeout);
  // A run hands over only after it made progress: a new run's own start (the state) may already pass the limit.
  const callsAtRunStart = state.modelCalls;
  const continueIfDue = () => (state.modelCalls > callsAtRunStart ? continueAsNewIfDue(args, state, audit) : Promise.resolve());
  // A sub-agent's session reports what it spent when it fails, so its parent counts it (subagents.ts).
  const spentHere = () => ({ modelCalls: used().iterations, toolCalls: used().toolCalls, usage: state.usage });
  return life.run(reportingSpend(spec.parent !== undefined, spentHere, async () => {
    for (;;) {
      if (state.phase === 'idle') {
        if (state.inbox.length === 0 && !state.endRequested) {
          await continueIfDue();
          if (idleMs > 0) {
            life.setStep('waiting for a message');
            life.publishToolsUsed();
            if (audit.lean) await audit.flush();
            await condition(() => state.inbox.length > 0 || state.endRequested, idleMs);
          }
        }
        // Nothing left to answer; a message accepted at this very moment still gets its turn.
        if (state.inbox.length === 0) await condition(() => allHandlersFinished() || state.inbox.length > 0);
        const text = state.inbox.shift();
        if (text === undefined) break;
        startTurn(state, text);
      }
      if (state.turnModelCalls >= spec.maxIterations) {
        finishTurn(state, 'max_iterations');
        break;
      }
      const spent = mostUsed(spec.budget, used(), toMs);
      if (spent.kind && spent.share >= 1) {
        finishTurn(state, `budget_${spent.kind}`);
        state.budgetExhausted = true;
        break;
      }
      // Near a budget's end the model gets one last turn with no tools, and is told to answer.
      const finalTurn = spent.kind && spent.share >= FINAL_TURN_AT ? spent.kind : undefined;
      await continueIfDue();
      state.turnModelCalls += 1;
      const iteration = ++state.modelCalls;
      life.setStep(`model turn ${iteration}${finalTurn ? ` (last: ${finalTurn} budget nearly spent)` : ''}`);
      // An optional tool that is down is not offered; the model is told why (a call to it still gets a note).
      const down = optionalTools.length && !finalTurn && patched('keel-tool-availability') ? await toolAvailability({ tools: optionalTools }) : [];
      const notes = [finalTurn ? finalTurnNote(finalTurn) : '', down.length ? unavailableNote(down) : ''].filter(Boolean);
      await audit.checkpoint();
      const append = state.conversation.unsent;
      // Model tiering (model-tier.ts): between successful lookups a cheaper model may answer.
      const routine = spec.routineModel !== undefined && !finalTurn && isRoutineTurn(state.lastToolOutcomes ?? [], toolsByName);
      const ask = (model: string, price: ModelPrice | undefined, streamAttemptOffset?: number) =>
        callModel({
          model,
          system: notes.length ? `${spec.system}\n\n${notes.join('\n\n')}` : spec.system,
          conversation: { id: state.conversationId, stored: state.conversation.stored, append },
          tools: finalTurn ? [] : modelTools.filter((t) => !down.some((d) => d.tool === t.name)),
          maxTokens: spec.maxTokens,
          sessionId: info.workflowId,
          ...(price ? { price } : {}),
          // Sessions carried over from a build before caching have no setting: they get the default.
          ...(spec.promptCaching !== false ? { cache: { systemChars: spec.system.length } } : {}),
          ...(streamAttemptOffset ? { streamAttemptOffset } : {}),
        });
      let model = routine ? spec.routineModel! : spec.model;
      let price = routine ? spec.routinePrice : spec.price;
      let reply = await ask(model, price);
      let cost = addUsage(state.usage, reply.usage, price);
      const escalate = routine ? sideEffectsAsked(reply.content, toolsByName) : [];
      if (escalate.length) {
        // The cheaper model asked for a side effect: its reply is set aside (its tokens still count) and the
        // main model answers this turn from the same conversation; its reply takes the routine one's place.
        const setAside = reply.content.filter((b): b is ToolUseBlock => b.type === 'tool_use').map((t) => t.name);
        log.info('model call', { model, iteration, routine: true, escalatedFor: escalate, ...reply.usage, cost_usd: cost, session_cost_usd: state.usage.cost_usd });
        audit.add('model_turn', `model:${iteration}:routine`, { iteration, turn: state.turn, model, routine: true, escalatedFor: escalate, text: textOf(reply.content).slice(0, 2000), toolUses: setAside, stopReason: reply.stopReason, usage: reply.usage, costUsd: cost });
        runner.addEvent({ kind: 'model', iteration, text: textOf(reply.content), toolUses: setAside, stopReason: reply.stopReason, model, routine: true, escalated: true });
        model = spec.model;
        price = spec.price;
        reply = await ask(model, price, ESCALATION_STREAM_ATTEMPT);
        cost = addUsage(state.usage, reply.usage, price);
      }
      const tier = routine && !escalate.length ? { routine: true as const } : {};
      state.conversation = { stored: state.conversation.stored + append.length + 1, unsent: [] };
      // Sessions started before cost existed must replay without the new command.
      if ((spec.price || spec.routinePrice) && patched('keel-cost-search-attribute')) life.setCost(state.usage.cost_usd);
      log.info('model call', { model, iteration, ...tier, ...reply.usage, cost_usd: cost, session_cost_usd: state.usage.cost_usd });

      const text = textOf(reply.content);
      const toolUses = reply.content.filter((b): b is ToolUseBlock => b.type === 'tool_use');
      audit.add('model_turn', `model:${iteration}`, { iteration, turn: state.turn, model, ...tier, text: text.slice(0, 2000), toolUses: toolUses.map((t) => t.name), stopReason: reply.stopReason, usage: reply.usage, costUsd: cost });
      runner.addEvent({ kind: 'model', iteration, text, toolUses: toolUses.map((t) => t.name), stopReason: reply.stopReason, model, ...tier });
      if (text) state.answer = text;
      if (finalTurn) {
        // The last turn: its answer stands (nothing is undone), and the conversation ends.
        finishTurn(state, `budget_${finalTurn}`);
        break;
      }
      if (reply.stopReason !== 'tool_use' || toolUses.length === 0) {
        finishTurn(state, reply.stopReason);
        continue;
      }
      for (const t of toolUses) if (tools.some((tool) => tool.name === t.name) && !state.toolsUsed.includes(t.name)) state.toolsUsed.push(t.name);
      life.setStep(`running ${toolUses.map((t) => t.name).join(', ')}`);
      // Independent tool calls of one model turn run in parallel; results keep the model's order. One that
      // fails the session (a critical tool) still lets its siblings finish and be recorded first.
      const allowed = spec.budget.toolCalls === undefined ? toolUses.length : Math.max(0, spec.budget.toolCalls - used().toolCalls);
      // What each call came to decides whether the next model call is routine (model-tier.ts).
      const outcomes: TurnToolOutcome[] = toolUses.map((block) => ({ tool: block.name, outcome: 'skipped' }));
      delegations?.planTurn(toolUses.slice(0, allowed), used());
      const settled = await Promise.allSettled(
        toolUses.map(async (block, i): Promise<ToolResultBlock> => {
          if (i >= allowed) {
            return { type: 'tool_result', tool_use_id: block.id, content: `${block.name} was not run: the session's tool-call budget is spent. Answer with what you have.`, is_error: true };
          }
          if (delegations?.handles(block.name)) {
            return delegations.run({ toolUseId: block.id, name: block.name, input: block.input, iteration, reasoning: { text, usage: { ...reply.usage, cost_usd: cost } } });
          }
          const r = await runner.run({ toolUseId: block.id, name: block.name, input: block.input, iteration, reasoning: { text, usage: { ...reply.usage, cost_usd: cost } } });
          outcomes[i]!.outcome = r.record.outcome;
          // What others could have written reaches the model marked as data (see `trustedOutput`).
          const untrusted = isUntrusted(app.tools.get(block.name)) && r.record.outcome !== 'rejected';
          const content = untrusted ? asUntrustedData(block.name, r.content) : r.content;
          const blob = r.blob ? { keel_blob: r.blob, ...(untrusted ? { keel_untrusted: block.name } : {}) } : {};
          return { type: 'tool_result', tool_use_id: block.id, content, ...(r.isError ? { is_error: true } : {}), ...blob };
        }),
      );
      const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
      state.conversation.unsent.push({ role: 'user', content: settled.map((r) => (r as PromiseFulfilledResult<ToolResultBlock>).value) });
      state.lastToolOutcomes = outcomes;
    }

    if (state.stopReason === 'max_iterations' || state.stopReason.startsWith('budget_')) {
      // A budget ends the conversation: messages still queued are answered with why, and no more are taken.
      state.endRequested = true;
      for (const _ of state.inbox.splice(0)) {
        state.turn += 1;
        state.answers.push({ turn: state.turn, answer: `The session ended (${state.stopReason}) before this message was read.`, stopReason: 'session_ended' });
      }
      const undo = state.stopReason === 'max_iterations' || (state.budgetExhausted === true && spec.budget.onExhausted === 'compensate');
      log.warn(`budget ended the session${undo ? '; compensating its writes' : ''}`, { stopReason: state.stopReason, usage: state.usage });
      if (undo) await runner.compensate(state.modelCalls);
    }
    life.setStep(`completed (${state.stopReason})`);
    return {
      answer: state.answer,
      stopReason: state.stopReason,
      iterations: state.modelCalls,
      turns: state.turn,
      agent: spec.agent,
      runs: state.run,
      usage: state.usage,
      toolCalls: runner.toolCalls,
      compensations: runner.compensations,
      ...subAgentResult(spec, state, runner),
    };
  }), (r) => ({ stopReason: r.stopReason, turns: r.turns, modelCalls: r.iterations, toolCalls: r.toolCalls.length, answerHash: hashOf(r.answer) }));
}

/** Resolves the session's settings from its input, its agent and the defaults, and starts its state. */
function newSessionState(input: SessionInput, app: KeelApp, info: ReturnType<typeof workflowInfo>): SessionState {
  const agentName = input.agent ?? DEFAULT_AGENT_NAME;
  const agent = input.agent === undefined ? undefined : app.agents.get(input.agent);
  if (input.agent !== undefined && !agent) {
    invalidInput(`unknown agent '${input.agent}' (this worker's agents: ${[...app.agents.keys()].join(', ') || 'none'}; omit it for the default agent)`);
  }
  const tools = input.tools ?? agent?.tools ?? [...app.tools.keys()];
  const unknown = tools.filter((t) => !app.tools.has(t));
  if (unknown.length) invalidInput(`unknown tool(s) ${unknown.join(', ')} (this worker's tools: ${[...app.tools.keys()].join(', ')})`);
  const model = input.model ?? agent?.model ?? input.defaultModel;
  if (!model) invalidInput(`no model: the session names none, agent '${agentName}' names none, and no default was sent (set KEEL_MODEL)`);
  const budget = BudgetSchema.parse({ ...agent?.budget, ...input.budget });
  const price = priceOf(model!, input.pricing, agent?.pricing);
  if (!price && (input.pricing || agent?.pricing || budget.usd !== undefined)) {
    invalidInput(`pricing: no price for model '${model}', which this session uses (${budget.usd !== undefined ? 'its usd budget needs one' : 'the pricing table given lacks it'})`);
  }
  // The agent's routine model goes with the agent's model: a session that names its own model names its own.
  const routineModel = input.routineModel ?? (input.model === undefined ? agent?.routineModel : undefined);
  const routinePrice = routineModel === undefined ? undefined : priceOf(routineModel, input.pricing, agent?.pricing);
  if (routineModel !== undefined && !routinePrice && (price || input.pricing || agent?.pricing || budget.usd !== undefined)) {
    invalidInput(`pricing: no price for routine model '${routineModel}', which this session uses (the cost of its routine turns would go uncounted)`);
  }
  const spec: SessionSpec = {
    agent: agentName,
    user: input.user,
    model: model!,
    system: input.system ?? agent?.system ?? DEFAULT_SYSTEM_PROMPT,
    tools,
    maxIterations: input.maxIterations ?? agent?.maxIterations ?? 10,
    maxTokens: input.maxTokens ?? agent?.maxTokens ?? 1024,
    approval: ApprovalPolicySchema.parse({ ...agent?.approval, ...input.approval }),
    idleTimeout: input.idleTimeout ?? agent?.idleTimeout ?? 0,
    modelRetry: input.modelRetry,
    modelHeartbeatTimeout: input.modelHeartbeatTimeout,
    ...(input.historyLimitBytes !== undefined ? { historyLimitBytes: input.historyLimitBytes } : {}),
    searchAttributes: input.searchAttributes,
    title: input.prompt.split('\n', 1)[0]!.slice(0, 120),
    budget,
    ...(price ? { price } : {}),
    // A session that delegates hands its own pricing table to its sub-agents (subagents.ts).
    ...(agent?.subAgents?.length ? { subAgents: agent.subAgents, ...(input.pricing ? { pricing: input.pricing } : {}) } : {}),
    ...(input.parent ? { parent: input.parent } : {}),
    ...(routineModel !== undefined ? { routineModel } : {}),
    ...(routinePrice ? { routinePrice } : {}),
    promptCaching: input.promptCaching ?? agent?.promptCaching ?? true,
    execution: { reads: input.execution?.reads ?? agent?.execution?.reads ?? 'regular', model: input.execution?.model ?? agent?.execution?.model ?? 'regular' },
  };
  return {
    spec,
    conversationId: `${info.workflowId}/${info.firstExecutionRunId}`,
    conversation: { stored: 0, unsent: [] },
    run: 1,
    phase: 'idle',
    turn: 0,
    turnModelCalls: 0,
    modelCalls: 0,
    inbox: [input.prompt],
    answers: [],
    answer: '',
    stopReason: 'end_turn',
    usage: noSpend(),
    toolsUsed: [],
    endRequested: false,
    tools: { ...newToolRunnerState(), ...inheritedTaint(input.parent) },
    startedAt: Date.now(),
    audit: [],
    lastToolOutcomes: [],
  };
}

/** Adds one call's tokens (and their cost, when priced) to the session's; returns the call's cost. */
function addUsage(total: Spend, call: Omit<Spend, 'cost_usd'>, price: SessionSpec['price']): number {
  total.input_tokens += call.input_tokens;
  total.output_tokens += call.output_tokens;
  total.cache_creation_input_tokens += call.cache_creation_input_tokens;
  total.cache_read_input_tokens += call.cache_read_input_tokens;
  const cost = price ? costOf(call, price) : 0;
  total.cost_usd += cost;
  return cost;
}

/** The details' line on budget use: each budget as used / limit, or nothing without budgets. */
function budgetLine(budget: SessionSpec['budget'], used: Parameters<typeof mostUsed>[1]): string[] {
  const parts: string[] = [];
  const show = (kind: string, value: number, limit: number | undefined, fmt = (n: number) => String(Math.round(n))) => {
    if (limit !== undefined) parts.push(`${kind} ${fmt(value)}/${fmt(limit)} (${Math.round((value / limit) * 100)}%)`);
  };
  show('model calls', used.iterations, budget.iterations);
  show('tool calls', used.toolCalls, budget.toolCalls);
  show('input tokens', used.spend.input_tokens + used.spend.cache_creation_input_tokens + used.spend.cache_read_input_tokens, budget.inputTokens);
  show('output tokens', used.spend.output_tokens, budget.outputTokens);
  show('USD', used.spend.cost_usd, budget.usd, (n) => n.toFixed(4));
  show('wall time s', used.elapsedMs / 1000, budget.wallTime === undefined ? undefined : toMs(budget.wallTime) / 1000);
  return parts.length ? [`**Budget:** ${parts.join(' · ')}`] : [];
}

function unavailableNote(down: ToolAvailabilityOutput): string {
  return `[Keel] Not available right now, so not offered: ${down.map((d) => `${d.tool} (${d.reason})`).join('; ')}. Proceed without them.`;
}

function finalTurnNote(kind: BudgetKind): string {
  return `[Keel] This session has nearly spent its ${kind} budget. This is your last turn and no tools are available: answer the user now with what you have, and say what is left undone.`;
}

function startTurn(state: SessionState, text: string): void {
  state.phase = 'turn';
  state.turn += 1;
  state.turnModelCalls = 0;
  state.answer = '';
  // A user message is read by the main model.
  state.lastToolOutcomes = [];
  state.conversation.unsent.push({ role: 'user', content: text });
}

function finishTurn(state: SessionState, stopReason: string): void {
  state.phase = 'idle';
  state.stopReason = stopReason;
  state.answers.push({ turn: state.turn, answer: state.answer, stopReason });
  if (state.answers.length > ANSWERS_KEPT) state.answers.shift();
}

/**
 * Continues as new, handing over the state, when Temporal suggests it or the run's history passed the
 * session's limit, and no update is waiting for an answer (its caller would lose it).
 */
async function continueAsNewIfDue(args: SessionInputArgs, state: SessionState, audit: AuditTrail): Promise<void> {
  const info = workflowInfo();
  const limit = state.spec.historyLimitBytes;
  const due = info.continueAsNewSuggested || (limit !== undefined && info.historySize > limit);
  if (!due || !allHandlersFinished()) return;
  log.info('continuing as new', { run: state.run, historyBytes: info.historySize, historyEvents: info.historyLength });
  // A batched trail is written first, so the next run does not carry it (older sessions carried theirs).
  if (audit.lean) {
    await audit.flush();
    // A message may have come in while the trail was written: its caller waits for an answer from this run.
    if (!allHandlersFinished()) return;
  }
  await continueAsNew<typeof agentSession>(args, state);
}

function textOf(content: ContentBlock[]): string {
  return content
    .filter((b): b is TextBlock => b.type === 'text')
    .map((b) => b.text)
    .join('\n')
    .trim();
}
