/**
 * Keel's library surface (`keel`): define tools and agents, run workers and the embedded stack, start
 * and follow sessions and conversations, watch a running session's stream, replay histories. Sandbox-safe
 * pieces for tools modules are in `keel/workflow`; the scripted model and test helpers in `keel/testing`.
 * Everything else is internal.
 */
export * from './workflow.js';
export {
  KeelClient,
  SessionInputError,
  failureMessage,
  followSession,
  followUntil,
  type StartSessionOptions,
  type SessionHandle,
  type PendingApprovalListing,
} from './client.js';
export { createKeelWorker, type KeelWorker, type KeelWorkerOptions } from './worker.js';
export { loadConfig, ConfigError, type KeelConfig } from './config.js';
export { bundleApp, loadApp, type BundleAppOptions } from './app/load.js';
export { startEmbeddedStack, type EmbeddedStack, type EmbeddedStackOptions } from './dev.js';
export {
  openStore,
  openSqliteStore,
  ConversationMissingError,
  type ConversationStore,
  type KeelStore,
  type Admission,
  type BreakerPolicy,
  type BreakerRow,
  type BreakerState,
  type BreakerTransition,
  type DisabledTool,
} from './store/index.js';
export {
  openStreamBus,
  createMemoryStreamBus,
  openSqliteStreamBus,
  subscribeSession,
  sessionStreamFilter,
  type OpenStreamBusOptions,
  type MemoryStreamBusOptions,
  type SqliteStreamBusOptions,
  type StreamBus,
  type StreamBusLogger,
  type StreamEvent,
  type SessionStreamEvent,
  type TextDeltaEvent,
  type AttemptFailedEvent,
  type ToolStartedEvent,
  type ToolProgressEvent,
  type ToolFinishedEvent,
} from './stream/index.js';
export { replayHistory, replayRunning, replaySession, readHistoryFile, writeHistoryFile, type ReplayReport, type ReplayBundle } from './replay.js';
export { describeEvent, describeResult, followInTerminal, followTurn, terminalOutput, type TerminalOut, type AutoApprover, type AutoDecision } from './terminal.js';
export type { ToolChainInputArgs, ToolChainResult } from './workflows/toolChain.js';
