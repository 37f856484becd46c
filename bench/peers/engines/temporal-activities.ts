/**
 * The activities of the plain Temporal workflows: the shared step I/O, unchanged. The same functions run
 * as regular activities (`plainSession`) and as local activities (`plainSessionLocal`).
 */
import type { StepIO } from '../workload.js';

/** Creates the two activities over the benchmark's step I/O. */
export function createStepActivities(io: StepIO) {
  return {
    /** One model turn (see `StepIO.callModel`). */
    callModel: (sessionId: string, messages: Parameters<StepIO['callModel']>[1]) => io.callModel(sessionId, messages),
    /** One read tool call (see `StepIO.callTool`). */
    callTool: (use: Parameters<StepIO['callTool']>[0]) => io.callTool(use),
  };
}

/** The activities' types, as the workflows import them. */
export type StepActivities = ReturnType<typeof createStepActivities>;
