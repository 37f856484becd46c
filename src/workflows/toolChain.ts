/**
 * `toolChain`: a declared sequence of tool steps, for the production workflows that are a known
 * sequence rather than an open loop. Each step runs through the same `ToolRunner` as an agent session
 * (tiers, idempotency keys, approvals, saga). A step's input may use earlier results: a string value
 * `"{{steps.<id or index>.<path>}}"` is replaced by that value of that step's result. When a step fails,
 * the undos of the completed steps run last-in-first-out and the chain fails with them in its details.
 */
import { ApplicationFailure, isCancellation, setHandler, workflowInfo } from '@temporalio/workflow';
import { z } from 'zod';
import { toolRegistry } from '../tools/index.js';
import { ToolRunner, failureWithCompensations } from './tool-runner.js';
import { ApprovalPolicySchema, FailureTypes, SessionUserSchema, statusQuery, type CompensationRecord, type SessionStatus, parseWorkflowInput } from './types.js';

/** One declared step. */
export const ChainStepSchema = z.object({
  /** Name other steps refer to (its index otherwise). */
  id: z.string().regex(/^[A-Za-z_]\w*$/).optional(),
  tool: z.string().min(1),
  input: z.record(z.string(), z.unknown()).default({}),
});

/** What a chain starts from. */
export const ToolChainInputSchema = z.object({
  steps: z.array(ChainStepSchema).min(1).max(100),
  user: SessionUserSchema,
  approval: ApprovalPolicySchema.default(ApprovalPolicySchema.parse({})),
});
/** The chain input as a caller writes it. */
export type ToolChainInputArgs = z.input<typeof ToolChainInputSchema>;

/** One completed step. */
export interface ChainStepResult {
  id: string;
  tool: string;
  result: unknown;
}

/** What `toolChain` returns. */
export interface ToolChainResult {
  steps: ChainStepResult[];
  compensations: CompensationRecord[];
}

const REF = /^\{\{steps\.([A-Za-z_]\w*|\d+)((?:\.[\w-]+)*)\}\}$/;

/** Replaces `{{steps.x.path}}` strings in a step's input with earlier results. */
export function resolveRefs(value: unknown, done: ReadonlyMap<string, unknown>): unknown {
  if (typeof value === 'string') {
    const m = REF.exec(value);
    if (!m) return value;
    if (!done.has(m[1]!)) throw new Error(`${value}: no earlier step '${m[1]}'`);
    let v: unknown = done.get(m[1]!);
    for (const part of m[2]!.split('.').filter(Boolean)) {
      if (v === null || typeof v !== 'object' || !(part in v)) throw new Error(`${value}: the result of step '${m[1]}' has no '${part}'`);
      v = (v as Record<string, unknown>)[part];
    }
    return v;
  }
  if (Array.isArray(value)) return value.map((v) => resolveRefs(v, done));
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value as Record<string, unknown>).map(([k, v]) => [k, resolveRefs(v, done)]));
  }
  return value;
}

/** Runs the declared steps in order. */
export async function toolChain(args: ToolChainInputArgs): Promise<ToolChainResult> {
  const input = parseWorkflowInput(ToolChainInputSchema, args, 'chain');
  let state: SessionStatus['state'] = 'running';
  let step = 'starting';
  let current = 0;
  const runner = new ToolRunner({
    workflowId: workflowInfo().workflowId,
    user: input.user,
    tools: toolRegistry,
    approval: input.approval,
    onChange: () => undefined,
  });
  setHandler(statusQuery, () => runner.status({ state, step, iteration: current, usage: { input_tokens: 0, output_tokens: 0 } }));

  const done = new Map<string, unknown>();
  const results: ChainStepResult[] = [];
  try {
    for (const [i, s] of input.steps.entries()) {
      current = i + 1;
      const id = s.id ?? String(i);
      step = `step ${current}/${input.steps.length}: ${s.tool}`;
      let stepInput: unknown;
      try {
        stepInput = resolveRefs(s.input, done);
      } catch (err) {
        throw ApplicationFailure.create({ type: FailureTypes.ChainStepFailed, nonRetryable: true, message: `step ${id} (${s.tool}): ${(err as Error).message}` });
      }
      const r = await runner.run({ toolUseId: `step-${id}`, name: s.tool, input: stepInput, iteration: current });
      if (r.isError) {
        throw ApplicationFailure.create({ type: FailureTypes.ChainStepFailed, nonRetryable: true, message: `step ${id} (${s.tool}) failed: ${r.content}` });
      }
      const result = JSON.parse(r.content) as unknown;
      done.set(id, result);
      if (s.id) done.set(String(i), result);
      results.push({ id, tool: s.tool, result });
    }
  } catch (err) {
    state = 'failed';
    step = `compensating after: ${err instanceof Error ? err.message : String(err)}`;
    const compensations = await runner.compensate(current);
    if (isCancellation(err)) throw err;
    throw failureWithCompensations(err, compensations);
  }
  state = 'completed';
  step = 'completed';
  return { steps: results, compensations: runner.compensations };
}
