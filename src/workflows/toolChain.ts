/**
 * `toolChain`: a declared sequence of tool steps, for the production workflows that are a known
 * sequence rather than an open loop. Each step runs through the same `ToolRunner` as an agent session
 * (tiers, idempotency keys, approvals, saga) under the same lifecycle (status query, details, search
 * attributes, so a step waiting for a person shows in `keel approvals`). A step's input may use earlier
 * results: a string value `"{{steps.<id or index>.<path>}}"` is replaced by that value of that step's
 * whole result (not the model-facing text, which a large result exceeds). When a step fails, the undos of
 * the completed steps run last-in-first-out and the chain fails with them in its details.
 */
import { ApplicationFailure, patched, workflowInfo } from '@temporalio/workflow';
import { AuditTrail } from './audit.js';
import { z } from 'zod';
import { currentApp } from './app.js';
import { noSpend } from './budget.js';
import { SessionLifecycle } from './lifecycle.js';
import { ToolRunner } from './tool-runner.js';
import { ApprovalPolicySchema, FailureTypes, SessionUserSchema, type CompensationRecord, parseWorkflowInput } from './types.js';

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
  /** Upsert Keel's search attributes (needs them registered on the namespace) (true). */
  searchAttributes: z.boolean().default(true),
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

const REF = /\{\{steps\.([A-Za-z_]\w*|\d+)((?:\.[\w-]+)*)\}\}/g;

/** The value a `{{steps.<step>.<path>}}` reference names. */
function lookup(ref: string, step: string, fieldPath: string, done: ReadonlyMap<string, unknown>): unknown {
  if (!done.has(step)) throw new Error(`${ref}: no earlier step '${step}'`);
  let v: unknown = done.get(step);
  for (const part of fieldPath.split('.').filter(Boolean)) {
    if (v === null || typeof v !== 'object' || !(part in v)) throw new Error(`${ref}: the result of step '${step}' has no '${part}'`);
    v = (v as Record<string, unknown>)[part];
  }
  return v;
}

/**
 * Replaces `{{steps.x.path}}` references in a step's input with earlier results: a string that is one
 * reference becomes the value itself (any type); references inside a longer string are written into it
 * (objects as JSON).
 */
export function resolveRefs(value: unknown, done: ReadonlyMap<string, unknown>): unknown {
  if (typeof value === 'string') {
    const whole = new RegExp(`^${REF.source}$`).exec(value);
    if (whole) return lookup(value, whole[1]!, whole[2]!, done);
    return value.replace(REF, (ref, step: string, fieldPath: string) => {
      const v = lookup(ref, step, fieldPath, done);
      return typeof v === 'string' ? v : JSON.stringify(v);
    });
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
  const app = currentApp();
  let current = 0;
  const toolsUsed: string[] = [];
  const audit = new AuditTrail([], patched('keel-audit-trail'));
  audit.add('run', 'run', { workflow: 'toolChain', user: input.user.id, roles: input.user.roles, steps: input.steps.map((s) => s.tool) });
  const runner: ToolRunner = new ToolRunner({
    workflowId: workflowInfo().workflowId,
    user: input.user,
    tools: app.tools,
    approval: input.approval,
    onChange: () => life.refresh(),
    wantValues: true,
    audit,
    ...(app.access ? { access: app.access } : {}),
  });
  const life: SessionLifecycle = new SessionLifecycle({
    runner,
    searchAttributes: input.searchAttributes,
    title: `chain: ${input.steps.map((s) => s.tool).join(' → ')}`.slice(0, 120),
    progress: () => ({ iteration: current, usage: noSpend(), turn: 1, awaitingMessage: false, run: 1 }),
    toolsUsed: () => toolsUsed,
    audit,
  });

  const done = new Map<string, unknown>();
  const results: ChainStepResult[] = [];
  return life.run(async () => {
    for (const [i, s] of input.steps.entries()) {
      current = i + 1;
      const id = s.id ?? String(i);
      life.setStep(`step ${current}/${input.steps.length}: ${s.tool}`);
      let stepInput: unknown;
      try {
        stepInput = resolveRefs(s.input, done);
      } catch (err) {
        throw ApplicationFailure.create({ type: FailureTypes.ChainStepFailed, nonRetryable: true, message: `step ${id} (${s.tool}): ${(err as Error).message}` });
      }
      if (app.tools.has(s.tool) && !toolsUsed.includes(s.tool)) toolsUsed.push(s.tool);
      const r = await runner.run({ toolUseId: `step-${id}`, name: s.tool, input: stepInput, iteration: current });
      if (r.isError) {
        throw ApplicationFailure.create({ type: FailureTypes.ChainStepFailed, nonRetryable: true, message: `step ${id} (${s.tool}) failed: ${r.content}` });
      }
      // The whole result, as the tool returned it; an earlier identical call's is only its text.
      const result = 'value' in r ? r.value : (JSON.parse(r.content) as unknown);
      done.set(id, result);
      if (s.id) done.set(String(i), result);
      results.push({ id, tool: s.tool, result });
    }
    life.setStep('completed');
    return { steps: results, compensations: runner.compensations };
  });
}
