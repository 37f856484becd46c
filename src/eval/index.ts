/**
 * `keel eval`: a suite of cases (prompt, expected tools, answer checks) run as real sessions, measured,
 * and compared with a baseline. `suite.ts` is the file format, `run.ts` runs it, `report.ts` sums it up,
 * applies the baseline rule and prints it.
 */
export { loadSuite, parseSuite, SuiteError, EvalSuiteSchema, type EvalSuite, type EvalCase, type ExpectedTools, type AnswerChecks } from './suite.js';
export { runSuite, checkSessionInputs, sessionInput, toolsMatch, answerFailures, workerPolling, type RunSuiteOptions } from './run.js';
export {
  summarize,
  loadBaseline,
  compareToBaseline,
  renderReport,
  BaselineError,
  BaselineSchema,
  DEFAULT_TOLERANCES,
  type Baseline,
  type CaseReport,
  type Comparison,
  type EvalReport,
  type MetricComparison,
  type OverallFigures,
  type Tolerances,
  type ToolCallSummary,
} from './report.js';
