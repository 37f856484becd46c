/**
 * Keel's sandbox-safe entry (`keel/workflow`): what a tools module imports. A tools module is bundled
 * into workflow code, so it must import only this entry, zod and other sandbox-safe code, never the main
 * `keel` entry (which brings the client and the worker).
 */
export {
  defineTool,
  isTool,
  toModelTool,
  toMs,
  ToolError,
  ToolDefinitionError,
  DEFAULT_MAX_RESULT_BYTES,
  RISK_TIERS,
  tierPolicy,
  type Tool,
  type ToolSpec,
  type ToolContext,
  type ToolLogger,
  type ToolSession,
  type RiskTier,
  type Criticality,
  type IdempotencyMode,
  type StatusCheckResult,
  type ResolvedToolPolicy,
  type Duration,
  type TierPolicy,
} from './tools/index.js';
export {
  BudgetSchema,
  DEFAULT_PRICING,
  FINAL_TURN_AT,
  ModelPriceSchema,
  PricingSchema,
  costOf,
  type Budget,
  type BudgetKind,
  type ModelPrice,
  type Pricing,
  type Spend,
} from './workflows/budget.js';
export {
  defineAgent,
  isAgent,
  blockedBy,
  AgentDefinitionError,
  AgentSpecSchema,
  BlockedActionSchema,
  BlockedFieldSchema,
  type Agent,
  type AgentSpec,
  type BlockedAction,
  type BlockedField,
} from './agents/define.js';
export { appFromModule, AppDefinitionError, DEFAULT_AGENT_NAME, DEFAULT_SYSTEM_PROMPT, MAX_TOOLS_PER_AGENT, type KeelApp } from './app/registry.js';
export { defineAccessPolicy, isAccessPolicy, mayCall, AccessPolicyError, AccessPolicySpecSchema, type AccessPolicy, type AccessPolicySpec } from './app/access.js';
export {
  approvalSignal,
  decideApprovalUpdate,
  endConversationSignal,
  pendingApprovalsQuery,
  sendMessageUpdate,
  statusQuery,
  type ApprovalDecision,
  type ApprovalOutcome,
  type ApprovalRequest,
  type CompensationRecord,
  type SessionEvent,
  type SessionInputArgs,
  type SessionResult,
  type SessionStatus,
  type ToolCallRecord,
  type TurnAnswer,
  type UserMessage,
} from './workflows/types.js';
