/**
 * Plain Temporal workflows for the peers benchmark: the shared agent loop with its two calls as regular
 * activities (`plainSession`) or as local activities (`plainSessionLocal`). Workflow code: sandbox-safe,
 * activity types only. Both use the SDK's default retry policy and a two-minute start-to-close timeout.
 */
import { proxyActivities, proxyLocalActivities } from '@temporalio/workflow';
import { agentLoop, type LoopInput, type LoopResult, type StepCalls } from '../loop.js';
import type { StepActivities } from './temporal-activities.js';

/** A session's input: the loop's input and the session's id (sent to the model as `metadata.user_id`). */
export interface PlainSessionInput extends LoopInput {
  sessionId: string;
}

const regular = proxyActivities<StepActivities>({ startToCloseTimeout: '2 minutes' });
const local = proxyLocalActivities<StepActivities>({ startToCloseTimeout: '2 minutes' });

/** The loop with each model call and each tool call a regular activity. */
export async function plainSession(input: PlainSessionInput): Promise<LoopResult> {
  return agentLoop(calls(regular, input.sessionId), input);
}

/** The loop with each model call and each tool call a local activity. */
export async function plainSessionLocal(input: PlainSessionInput): Promise<LoopResult> {
  return agentLoop(calls(local, input.sessionId), input);
}

function calls(acts: StepActivities, sessionId: string): StepCalls {
  return {
    callModel: (messages) => acts.callModel(sessionId, messages),
    callTool: (use) => acts.callTool(use),
  };
}
