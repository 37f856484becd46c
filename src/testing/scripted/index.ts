// Public entry point of the scripted Messages API server: a local stand-in for the Anthropic Messages
// API that plays scenario scripts, so tests and the demo run the real `@anthropic-ai/sdk` code path
// without internet. Start it with `startScriptedModel()` and point the SDK (or `ANTHROPIC_BASE_URL`) at
// its `url`; select a scenario with the model name `scripted/<name>`.
export {
  startScriptedModel,
  MAX_REQUEST_BYTES,
  SCRIPTED_MODEL_PREFIX,
  RECEIVED_KEPT,
  type ScriptedRequest,
  type ScriptedModelLogger,
  type ScriptedModelOptions,
  type ScriptedModelServer,
  type StreamChunkNote,
} from './server.js';
export {
  ScenarioSchema,
  ScenarioTurnSchema,
  ScenarioTurnEntrySchema,
  ScenarioBranchingTurnSchema,
  ScenarioChoiceSchema,
  ScenarioContentBlockSchema,
  ScenarioFaultSchema,
  ScenarioExpectedToolResultSchema,
  loadScenarios,
  parseScenarioFile,
  scenarioDirs,
  type Scenario,
  type ScenarioTurn,
  type ScenarioTurnEntry,
  type ScenarioBranchingTurn,
  type ScenarioChoice,
  type ScenarioContentBlock,
  type ScenarioFault,
  type ScenarioExpectedToolResult,
} from './scenario.js';
