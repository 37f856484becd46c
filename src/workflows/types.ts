/**
 * The data a session is made of, shared by the workflow, its activities, the client and the CLI:
 * the session's input (validated by zod at the client and again inside the workflow), its status and
 * result, the conversation blocks as the Messages API defines them, and the messages (query, signal)
 * the workflow exposes. Sandbox-safe: zod and plain types only.
 */
import { z } from 'zod';
import { ApplicationFailure, defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';

/** A zod error as one line: `path: message; path: message` (`root` names an issue at the top level). */
export function describeIssues(error: z.ZodError, root = '(input)'): string {
  return error.issues.map((i) => `${i.path.map(String).join('.') || root}: ${i.message}`).join('; ');
}

/** Parses a workflow's input, or fails the workflow for good with every bad field named. */
export function parseWorkflowInput<S extends z.ZodType>(schema: S, args: unknown, what: string): z.output<S> {
  const parsed = schema.safeParse(args);
  if (parsed.success) return parsed.data;
  return invalidInput(`invalid ${what} input: ${describeIssues(parsed.error, '(root)')}`);
}

/** Fails the workflow on input it cannot run with: a non-retryable `InvalidSessionInput` failure. */
export function invalidInput(message: string): never {
  throw ApplicationFailure.create({ type: FailureTypes.InvalidSessionInput, nonRetryable: true, message });
}

/** The memo key under which a session records who started it (encrypted with the payloads, never a search attribute). */
export const SESSION_USER_MEMO = 'keelUser';

import { DurationSchema } from './duration.js';
import { EXECUTION_MODES, type ExecutionMode } from '../tools/policy.js';
import { BudgetSchema, PricingSchema, type Budget, type ModelPrice, type Pricing, type Spend } from './budget.js';
import type { AuditEntryInput } from './audit.js';
import type { McpToolListing } from '../tools/mcp.js';
import type { TurnToolOutcome } from './model-tier.js';

export { DurationSchema } from './duration.js';

/** Who is asking: an id and roles, as the caller's identity system knows them. */
export const SessionUserSchema = z.object({
  id: z.string().min(1).max(200),
  roles: z.array(z.string().min(1).max(100)).max(50).default([]),
});
/** @see SessionUserSchema */
export type SessionUser = z.infer<typeof SessionUserSchema>;

/**
 * The session that started this one as its sub-agent (Keel sets it when a session delegates; see
 * `src/workflows/subagents.ts`).
 */
export const ParentLinkSchema = z.object({
  /** The parent session's workflow ID. */
  workflowId: z.string().min(1).max(1000),
  /** The parent's `tool_use` id of the delegation. */
  toolUseId: z.string().min(1).max(200),
  /**
   * Untrusted tool results the parent's model had read when it delegated: the task may carry what they
   * said, so every side effect of the sub-agent needs a person's approval.
   */
  untrusted: z.array(z.object({ tool: z.string().min(1).max(200), toolUseId: z.string().min(1).max(1000) })).max(1000).default([]),
});
/** @see ParentLinkSchema */
export type ParentLink = z.infer<typeof ParentLinkSchema>;

/** Who may approve what, and for how long a request waits. Defaults in parentheses. */
export const ApprovalPolicySchema = z.object({
  /** Roles that may approve `irreversible` calls and policy-gated writes (`approver`). */
  approverRoles: z.array(z.string().min(1)).min(1).default(['approver']),
  /** Roles that may approve `privileged` calls; the requester never may (`admin`). */
  privilegedApproverRoles: z.array(z.string().min(1)).min(1).default(['admin']),
  /** How long a request waits before it is refused (`24h`); a tool's `approvalTimeout` wins. */
  timeout: DurationSchema.default('24h'),
  /** `write` tools that need approval in this session, by name (none). */
  writeTools: z.array(z.string()).default([]),
  /** A rejected or expired call fails the session (and compensates) instead of telling the model (false). */
  failOnReject: z.boolean().default(false),
});
/** The validated approval policy. */
export type ApprovalPolicy = z.infer<typeof ApprovalPolicySchema>;

/**
 * How a session's activities run (README, *Execution modes*). `reads`: its `read` tools that do not declare
 * `execution` themselves run as local activities (`local`) or regular ones (`regular`); `model`: the model
 * call runs as a local activity (`local`: no heartbeat, so `modelHeartbeatTimeout` does not apply) or a
 * regular one (`regular`). Set on the agent or the session (the session's wins field by field); both
 * default to `regular`.
 */
export const ExecutionSchema = z.strictObject({
  reads: z.enum(EXECUTION_MODES).optional(),
  model: z.enum(EXECUTION_MODES).optional(),
});
/** @see ExecutionSchema */
export type Execution = z.infer<typeof ExecutionSchema>;

/** Everything a session starts from. Unset fields come from the agent, then the defaults in parentheses. */
export const SessionInputSchema = z.object({
  /** The user's request (1–100,000 characters). */
  prompt: z.string().min(1, 'prompt is empty').max(100_000, 'prompt is longer than 100,000 characters'),
  user: SessionUserSchema,
  /** The agent (`defineAgent`) whose prompt, model, tools, budgets and policy the session uses (the built-in `default`: every tool). */
  agent: z.string().min(1).max(64).optional(),
  /** Model name, e.g. `claude-sonnet-4-5` or `scripted/refund-demo` (the agent's, else `defaultModel`). */
  model: z.string().min(1).max(200).optional(),
  /** The model when neither the session nor its agent names one; clients fill it from KEEL_MODEL. */
  defaultModel: z.string().min(1).max(200).optional(),
  /** System prompt (the agent's, else a generic one). */
  system: z.string().max(100_000).optional(),
  /** Tools this session may use, by name (the agent's, else every tool of the app). */
  tools: z.array(z.string()).optional(),
  /** Model turns per user message before the session stops with `max_iterations` (the agent's, else 10). */
  maxIterations: z.number().int().min(1).max(200).optional(),
  /** `max_tokens` per model call (the agent's, else 1024). */
  maxTokens: z.number().int().min(1).max(64_000).optional(),
  /** Retry policy of the model call: first delay (1s) and attempts (8). Retry-after from the API wins. */
  modelRetry: z
    .object({ initialInterval: DurationSchema.default('1s'), maximumAttempts: z.number().int().min(1).max(100).default(8) })
    .default({ initialInterval: '1s', maximumAttempts: 8 }),
  /** How long a model call may go without a heartbeat before Temporal retries it elsewhere (10s). */
  modelHeartbeatTimeout: DurationSchema.default('10s'),
  /** Approval policy, over the agent's (see ApprovalPolicySchema). */
  approval: ApprovalPolicySchema.partial().optional(),
  /**
   * How long the session waits for a follow-up message (`sendMessage`) after an answer before it
   * completes (the agent's, else 0: answer once and complete).
   */
  idleTimeout: DurationSchema.optional(),
  /**
   * Continue as new once a run's history passes this many bytes; Temporal's own suggestion (about 4 MB or
   * 4,000 events on a default server) triggers it too (unset: only the suggestion).
   */
  historyLimitBytes: z.number().int().min(1_000).max(50_000_000).optional(),
  /** What the session may spend (over the agent's; see BudgetSchema). */
  budget: BudgetSchema.partial().optional(),
  /** Model prices over the agent's and Keel's (USD per million tokens; see PricingSchema). */
  pricing: PricingSchema.optional(),
  /**
   * A cheaper model for routine turns: a model call whose new tool results all came from `read` tools that
   * succeeded (src/workflows/model-tier.ts). The agent's applies only to a session that names no `model` of
   * its own (none: every turn uses `model`).
   */
  routineModel: z.string().min(1).max(200).optional(),
  /**
   * Prompt-cache breakpoints (`cache_control`) on the last tool, the system prompt and the conversation's
   * last message (the agent's, else true).
   */
  promptCaching: z.boolean().optional(),
  /** Local or regular activities for read tools and the model call, over the agent's (see ExecutionSchema). */
  execution: ExecutionSchema.optional(),
  /** Upsert Keel's search attributes (needs them registered on the namespace) (true). */
  searchAttributes: z.boolean().default(true),
  /** Set by Keel when a session delegates to a sub-agent: the session that started this one (see ParentLinkSchema). */
  parent: ParentLinkSchema.optional(),
});
/** The validated session input. */
export type SessionInput = z.infer<typeof SessionInputSchema>;
/** The session input as a caller may write it (defaults optional). */
export type SessionInputArgs = z.input<typeof SessionInputSchema>;

/** A session's settings once its agent and the defaults are applied; fixed for the session's life. */
export interface SessionSpec {
  agent: string;
  user: SessionUser;
  model: string;
  system: string;
  tools: string[];
  maxIterations: number;
  maxTokens: number;
  approval: ApprovalPolicy;
  idleTimeout: number | string;
  modelRetry: { initialInterval: number | string; maximumAttempts: number };
  modelHeartbeatTimeout: number | string;
  historyLimitBytes?: number;
  searchAttributes: boolean;
  /** First line of the prompt, for the Web UI's details. */
  title: string;
  budget: Budget;
  /** The model's price, when the pricing table has it (no cost is counted otherwise). */
  price?: ModelPrice;
  /** The model of routine turns (none: every turn uses `model`). */
  routineModel?: string;
  /** The routine model's price, when the pricing table has it. */
  routinePrice?: ModelPrice;
  /** Send prompt-cache breakpoints (absent in state carried from a build before caching: true). */
  promptCaching?: boolean;
  /** How read tools and the model call run (absent in state from a build before execution modes: both regular). */
  execution?: { reads: ExecutionMode; model: ExecutionMode };
  /** Agents this session may delegate to, as tools `delegate_to_<agent>` (absent: none). */
  subAgents?: string[];
  /** The session's own pricing table, handed to its sub-agents (absent: none given, or no sub-agents). */
  pricing?: Pricing;
  /** The session that started this one as its sub-agent. */
  parent?: ParentLink;
}

/** A text block of the Messages API. */
export interface TextBlock {
  type: 'text';
  text: string;
}
/** A tool_use block: the model asks for a tool. */
export interface ToolUseBlock {
  type: 'tool_use';
  id: string;
  name: string;
  input: unknown;
}
/** A tool_result block: Keel's answer to one tool_use. */
export interface ToolResultBlock {
  type: 'tool_result';
  tool_use_id: string;
  content: string;
  is_error?: boolean;
  /** The full text is a blob in the conversation store; `content` is its preview. Removed before the model sees it. */
  keel_blob?: string;
  /** With `keel_blob`: the untrusted tool whose result it is, so the resolved text is shown as data. */
  keel_untrusted?: string;
}
/** Any content block Keel reads or writes (other kinds are carried through untouched). */
export type ContentBlock = TextBlock | ToolUseBlock | ToolResultBlock | { type: string; [key: string]: unknown };
/** One conversation message. */
export interface ConversationMessage {
  role: 'user' | 'assistant';
  content: string | ContentBlock[];
}

/** Token counts and model cost (USD), summed over a session's model calls. */
export type Usage = Spend;

/** One tool call as the session records it. */
export interface ToolCallRecord {
  toolUseId: string;
  name: string;
  /**
   * `ok`: the tool ran (or its status check confirmed it did); `error`: it failed and the model was told;
   * `rejected`: never ran (unknown tool, bad input, not approved); `unknown`: it may or may not have happened.
   */
  outcome: 'ok' | 'error' | 'rejected' | 'unknown';
  /** True when an earlier identical call's result was returned without running the tool again. */
  deduplicated?: boolean;
  /** Set when the outcome was settled by the tool's status check. */
  statusChecked?: boolean;
  /** The approval request this call waited on. */
  approvalRequestId?: string;
  /** The message the model got when the outcome is not `ok`. */
  error?: string;
  idempotencyKey?: string;
  iteration: number;
  /** A delegation to a sub-agent: the child session's workflow ID. */
  subSession?: string;
}

/** One undo, as the session records it. */
export interface CompensationRecord {
  tool: string;
  idempotencyKey: string;
  toolUseId: string;
  /** `pending`: registered, not (yet) needed; `compensated`: the undo ran; `failed`: the undo failed for good; `discarded`: the call never happened. */
  status: 'pending' | 'compensated' | 'failed' | 'discarded';
  error?: string;
  /** A sub-agent's write the parent took over: the session (workflow ID) that made it. */
  session?: string;
}

/** A write still in place, with the input its undo runs with: what a sub-agent hands its parent. */
export interface PendingUndo {
  compensation: CompensationRecord;
  input: ToolActivityInput;
}

/** What a session's sub-agents spent, all of them together (it is included in the session's own usage). */
export interface SubAgentSpend {
  /** Sub-agent sessions that ran (delegations that started a child). */
  sessions: number;
  /** Their model calls, theirs and their own sub-agents'. */
  modelCalls: number;
  /** Their tool calls, theirs and their own sub-agents'. */
  toolCalls: number;
  usage: Usage;
}

/** A tool call waiting for (or decided by) a person. */
export interface ApprovalRequest {
  requestId: string;
  tool: string;
  risk: string;
  toolUseId: string;
  /** The input with personal data and secrets masked. */
  input: unknown;
  /** Why it needs approval. */
  reason: string;
  /** Untrusted tool results already in the model's context when it asked for this call. */
  untrustedSources?: Array<{ tool: string; toolUseId: string }>;
  /** The requesting user's id. */
  requestedBy: string;
  requestedAt: string;
  expiresAt: string;
  status: 'pending' | 'approved' | 'rejected' | 'expired';
  decidedBy?: string;
  decisionReason?: string;
  decidedAt?: string;
}

/** Who decides: an id and the roles their identity provider vouches for. */
export const ApproverSchema = z.object({ id: z.string().min(1).max(200), roles: z.array(z.string().min(1).max(100)).max(50).default([]) });

/** The payload of the `approval` signal and the `decideApproval` update. */
export const ApprovalDecisionSchema = z.object({
  requestId: z.string().min(1).max(200),
  decision: z.enum(['approve', 'reject']),
  approver: ApproverSchema,
  reason: z.string().max(2000).optional(),
});
/** A person's decision on one request. */
export type ApprovalDecision = z.input<typeof ApprovalDecisionSchema>;

/** What happened to a decision: applied, or refused (changing nothing) with the reason. */
export type ApprovalOutcome =
  | { accepted: true; requestId: string; decision: 'approve' | 'reject' }
  | { accepted: false; requestId: string; code: 'unknown_request' | 'already_decided' | 'not_allowed' | 'invalid'; reason: string };

/** Every decision that reached the session, accepted or refused, in order. */
export interface ApprovalLogEntry {
  at: string;
  requestId: string;
  decision?: string;
  approver?: string;
  via: 'signal' | 'update';
  accepted: boolean;
  reason?: string;
}

/**
 * A line of the session's story, for `keel run` to print as it happens. A `model` event names the model
 * that answered (`routine`: the agent's cheaper model; `escalated`: a routine reply set aside because it
 * asked for a side effect, answered again by the main model in the next event).
 */
export type SessionEvent =
  | { seq: number; kind: 'model'; iteration: number; text: string; toolUses: string[]; stopReason: string; model?: string; routine?: boolean; escalated?: boolean }
  | { seq: number; kind: 'tool'; iteration: number; name: string; toolUseId: string; outcome: ToolCallRecord['outcome']; detail: string }
  | { seq: number; kind: 'approval'; iteration: number; requestId: string; name: string; status: ApprovalRequest['status']; detail: string }
  | { seq: number; kind: 'compensation'; iteration: number; name: string; status: CompensationRecord['status']; detail: string };

/** What the `status` query returns. */
export interface SessionStatus {
  state: 'running' | 'completed' | 'failed';
  /** Human-readable current step, e.g. `model turn 2` or `running issue_refund`. */
  step: string;
  /** Model calls so far, across the whole session. */
  iteration: number;
  /** User messages taken so far (the prompt is 1). */
  turn: number;
  /** True while the session waits for a follow-up message. */
  awaitingMessage: boolean;
  /** Runs of this session so far (1, plus one per continue-as-new). */
  run: number;
  usage: Usage;
  toolCalls: number;
  /** The most recent events (at most 200); `seq` numbers them from 1 across the session. */
  events: SessionEvent[];
  /** Approval requests, pending and decided. */
  approvals: ApprovalRequest[];
  /** Every decision received, including refused ones. */
  approvalLog: ApprovalLogEntry[];
  /** Registered undos and what became of them. */
  compensations: CompensationRecord[];
}

/** Why a session stopped. */
export type SessionStopReason = 'end_turn' | 'max_iterations' | 'max_tokens' | 'stop_sequence' | 'refusal' | 'pause_turn';

/** What `agentSession` returns. */
export interface SessionResult {
  /** The last answer. */
  answer: string;
  stopReason: SessionStopReason | string;
  /** Model calls across the session. */
  iterations: number;
  /** User messages answered (the prompt is 1). */
  turns: number;
  /** The agent the session ran as. */
  agent: string;
  /** Runs the session took (1, plus one per continue-as-new). */
  runs: number;
  usage: Usage;
  toolCalls: ToolCallRecord[];
  /** Undos that ran (when a budget ended the session) or were registered. */
  compensations: CompensationRecord[];
  /** What the session's sub-agents spent (already in `usage`); absent when it delegated nothing. */
  subAgents?: SubAgentSpend;
  /** A sub-agent's session only: its writes still in place, which its parent undoes if the parent fails. */
  undos?: PendingUndo[];
  /** A sub-agent's session only: tools whose untrusted output it read (its answer may carry it). */
  untrusted?: string[];
}

/** Query: the session's live status. */
export const statusQuery = defineQuery<SessionStatus>('status');
/** Query: the tool calls waiting for a person. */
export const pendingApprovalsQuery = defineQuery<ApprovalRequest[]>('pendingApprovals');
/** Signal: a person's decision on an approval request (fire and forget; a refused one is recorded). */
export const approvalSignal = defineSignal<[ApprovalDecision]>('approval');
/** Update: the same decision, answering at once whether it was accepted. */
export const decideApprovalUpdate = defineUpdate<ApprovalOutcome, [ApprovalDecision]>('decideApproval');

/** A follow-up user message. */
export const UserMessageSchema = z.object({ text: z.string().trim().min(1, 'message is empty').max(100_000, 'message is longer than 100,000 characters') });
/** A follow-up user message. */
export type UserMessage = z.input<typeof UserMessageSchema>;
/** The answer to one user message. */
export interface TurnAnswer {
  turn: number;
  answer: string;
  stopReason: string;
}
/** Update: a follow-up user message; returns the answer to it once the session has one. */
export const sendMessageUpdate = defineUpdate<TurnAnswer, [UserMessage]>('sendMessage');
/** Signal: the user is done; the session completes once it has answered what it was asked. */
export const endConversationSignal = defineSignal('endConversation');

/** What a tool call's dedupe remembers: the model-facing text, and its blob when it is large. */
export interface ToolOutputRef {
  content: string;
  blob?: string;
}

/** The tool runner's part of a session's state: calls, undos, approvals, the event log, completed keys. */
export interface ToolRunnerState {
  toolCalls: ToolCallRecord[];
  compensations: CompensationRecord[];
  /** The activity input of each undo, at the same index as its record in `compensations`. */
  undoInputs: ToolActivityInput[];
  approvals: ApprovalRequest[];
  approvalLog: ApprovalLogEntry[];
  /** Results of calls that completed, by idempotency key. */
  completed: Record<string, ToolOutputRef>;
  /** The most recent events, numbered by `seq`. */
  events: SessionEvent[];
  seq: number;
  /**
   * Results of untrusted tools that entered the context, by model turn: once one is there, later
   * side-effecting calls need approval (absent in state carried from a build before taint existed).
   */
  untrusted?: UntrustedSource[];
}

/** A tool result the model read that others could have written. */
export interface UntrustedSource {
  tool: string;
  toolUseId: string;
  /** The model turn whose call returned it: calls of later turns are tainted by it. */
  iteration: number;
}

/**
 * Everything an agent session is, as one plain serializable value: continue-as-new hands it to the next
 * run as is, so keys, undos, approvals, usage and the conversation's place carry over.
 */
export interface SessionState {
  spec: SessionSpec;
  /** The conversation's id in the store (the workflow ID and the first run's id). */
  conversationId: string;
  /** Messages already in the conversation store, and those the next model call appends. */
  conversation: { stored: number; unsent: ConversationMessage[] };
  run: number;
  /** `turn`: answering `turn`; `idle`: answered, waiting for a message (or to complete). */
  phase: 'turn' | 'idle';
  turn: number;
  /** Model calls in the current turn. */
  turnModelCalls: number;
  /** Model calls across the session. */
  modelCalls: number;
  /** User messages waiting for their turn. */
  inbox: string[];
  /** Recent answers by turn (the last 20), for the updates waiting on them. */
  answers: TurnAnswer[];
  answer: string;
  stopReason: string;
  usage: Usage;
  toolsUsed: string[];
  endRequested: boolean;
  tools: ToolRunnerState;
  /** When the session started (ms since the epoch, workflow time), for the wall-time budget. */
  startedAt: number;
  /** Set when a budget reached 100% (the session stops, and undoes its writes if so configured). */
  budgetExhausted?: boolean;
  /** The app's MCP tools as listed when the session started (src/workflows/mcp.ts); absent without MCP servers. */
  mcpTools?: McpToolListing[];
  /**
   * What the tool calls of the last model turn came to, until the next model call reads them: decides
   * whether that call is routine (src/workflows/model-tier.ts). Empty after a user message.
   */
  lastToolOutcomes?: TurnToolOutcome[];
  /** Audit entries not yet written to the store. */
  audit: AuditEntryInput[];
  /** What the session's sub-agents spent (absent until one ran). */
  subAgents?: SubAgentSpend;
}

/** Input of the `callModel` activity. */
export interface CallModelInput {
  model: string;
  system?: string;
  /**
   * The conversation by reference: the activity writes `append` at position `stored` of conversation
   * `id` in the store, reads the whole conversation back and stores the reply after it. So history
   * holds only what is new.
   */
  conversation: { id: string; stored: number; append: ConversationMessage[] };
  tools: { name: string; description: string; input_schema: Record<string, unknown> }[];
  maxTokens: number;
  /** Sent as `metadata.user_id`: the workflow ID, never the person's identity. */
  sessionId: string;
  /** The session's price for this model, when it has one: spans and metrics cost the call with it. */
  price?: ModelPrice;
  /**
   * Prompt caching (absent: no breakpoints). The request carries `cache_control` on the last tool, on the
   * first `systemChars` characters of `system` (the stable prompt; notes Keel appends follow in a block of
   * their own, so they do not spoil the cache) and on the last block of the conversation's last message.
   */
  cache?: { systemChars: number };
  /** Forces the model to call this tool (`tool_choice: { type: 'tool', name }`). */
  toolChoice?: string;
  /**
   * Added to the activity attempt in stream events: a call that replaces an earlier call's reply for the
   * same turn (an escalated routine turn) streams as a later attempt, so watchers retract the first reply.
   */
  streamAttemptOffset?: number;
}
/** Output of the `callModel` activity. */
export interface CallModelOutput {
  id: string;
  model: string;
  content: ContentBlock[];
  stopReason: string;
  /** The call's tokens (its cost is the workflow's business: it holds the pricing). */
  usage: Omit<Usage, 'cost_usd'>;
}

/** Input of every tool activity (the activity type is the tool's name). */
export interface ToolActivityInput {
  input: unknown;
  idempotencyKey: string;
  toolUseId: string;
  session: { workflowId: string; userId: string; roles: string[] };
  /** Also return the whole result as a value (tool chains read fields of it). */
  wantValue?: boolean;
}
/** Input of a tool's status-check and compensation activities (`<tool>.status`, `<tool>.compensate`). */
export type ToolFollowUpInput = ToolActivityInput;
/** Output of a status-check activity. */
export type StatusCheckOutput = ({ applied: true } & ToolActivityOutput) | { applied: false };

/** Input of the `toolAvailability` local activity: the tools to ask about. */
export interface ToolAvailabilityInput {
  tools: string[];
}
/** Tools that cannot be called right now, and why (`circuit open until …`, `disabled: …`). */
export type ToolAvailabilityOutput = Array<{ tool: string; reason: string }>;

/**
 * Output of every tool activity: the result as JSON text for the model, capped at the tool's
 * `maxResultBytes`. A large text is kept in the conversation store: `blob` names it and `content` is a
 * preview, so history stays small.
 */
export interface ToolActivityOutput {
  content: string;
  bytes: number;
  truncated: boolean;
  blob?: string;
  /** The whole result, when the caller asked for it (`wantValue`). */
  value?: unknown;
}

/** ApplicationFailure types Keel raises on purpose. */
export const FailureTypes = {
  /** The tool refused the input or the outcome is for the model to handle. Never retried. */
  ToolError: 'ToolError',
  /** The activity got input that fails the tool's schema (should have been caught in the workflow). */
  InvalidToolInput: 'InvalidToolInput',
  /** The model API rejected the request (400/401/403/404/413/422): retrying cannot help. */
  ModelRequestRejected: 'ModelRequestRejected',
  /** The model API failed transiently (429/529/5xx/connection). */
  ModelUnavailable: 'ModelUnavailable',
  /** A critical tool failed after its retries: the session fails. */
  CriticalToolFailed: 'CriticalToolFailed',
  /** The session's input failed validation. */
  InvalidSessionInput: 'InvalidSessionInput',
  /** A step of a tool chain failed; its compensations ran. */
  ChainStepFailed: 'ChainStepFailed',
  /** A person rejected (or did not decide) a call whose session fails on rejection. */
  ApprovalRefused: 'ApprovalRefused',
  /** The conversation store lacks messages the session wrote (lost, or another store). Retried. */
  ConversationMissing: 'ConversationMissing',
  /** The tool was not called: its circuit is open or an operator disabled it. Never retried. */
  ToolUnavailable: 'ToolUnavailable',
  /** The router could not place a request (the model's choice was unusable and there is no fallback agent). */
  RoutingFailed: 'RoutingFailed',
} as const;
