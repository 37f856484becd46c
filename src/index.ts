/** Keel's library surface: define tools, run workers, start and follow sessions. Everything else is internal. */
export { KeelClient, SessionInputError, failureMessage, followSession, type StartSessionOptions, type SessionHandle, type PendingApprovalListing } from './client.js';
export { createKeelWorker, type KeelWorker, type KeelWorkerOptions } from './worker.js';
export { loadConfig, ConfigError, type KeelConfig } from './config.js';
export { defineTool, ToolError, ToolDefinitionError, toolRegistry, type Tool, type ToolSpec, type ToolContext, type RiskTier, type StatusCheckResult } from './tools/index.js';
export { replayHistory, replaySession, readHistoryFile, writeHistoryFile, type ReplayReport } from './replay.js';
export type {
  ApprovalDecision,
  ApprovalOutcome,
  ApprovalRequest,
  CompensationRecord,
  SessionInputArgs,
  SessionResult,
  SessionStatus,
  SessionEvent,
  ToolCallRecord,
} from './workflows/types.js';
export type { ToolChainInputArgs, ToolChainResult } from './workflows/toolChain.js';
export { approvalSignal, decideApprovalUpdate, pendingApprovalsQuery, statusQuery } from './workflows/types.js';
