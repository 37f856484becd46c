/**
 * `toolChain`: declared tool steps, for the production workflows that are a known plan rather than an
 * open loop. Each step runs through the same `ToolRunner` as an agent session (tiers, idempotency keys,
 * approvals, saga) under the same lifecycle (status query, details, search attributes, so a step waiting
 * for a person shows in `keel approvals`). A step's input may use the results of steps it waits for: a
 * string value `"{{steps.<id or index>.<path>}}"` is replaced by that value of that step's whole result
 * (not the model-facing text, which a large result exceeds).
 *
 * The steps form a graph: a step waits for the step before it, unless it says what it waits for
 * (`dependsOn`, `[]` for nothing); every step whose dependencies are done runs at once, so independent
 * steps run in parallel, and a chain with no `dependsOn` runs in order as it always did. The graph is
 * checked with the input (unknown ids, cycles, references to steps a step does not wait for). When a step
 * fails, no further step starts, the steps still running finish, then the undos of the completed steps run
 * last-in-first-out (in reverse of the order the steps started, so a step is undone before the steps it
 * waited for) and the chain fails with them in its details.
 */
import { ApplicationFailure, patched, workflowInfo } from '@temporalio/workflow';
import { AuditTrail } from './audit.js';
import { z } from 'zod';
import { currentApp } from './app.js';
import { noSpend } from './budget.js';
import { SessionLifecycle } from './lifecycle.js';
import { ToolRunner } from './tool-runner.js';
import { ApprovalPolicySchema, FailureTypes, SessionUserSchema, type CompensationRecord, parseWorkflowInput } from './types.js';

/** A step's name in `dependsOn` and references: its `id`, or its index. */
const STEP_NAME = /^([A-Za-z_]\w*|\d+)$/;

/** One declared step. */
export const ChainStepSchema = z.object({
  /** Name other steps refer to (its index otherwise). */
  id: z.string().regex(/^[A-Za-z_]\w*$/).optional(),
  tool: z.string().min(1),
  input: z.record(z.string(), z.unknown()).default({}),
  /**
   * The steps this one waits for, by id or index: it starts once they are done, beside any other step that
   * is ready. Without it, the step waits for the step before it; `[]`: it waits for nothing.
   */
  dependsOn: z.array(z.string().regex(STEP_NAME, 'must be a step id or index')).max(100).optional(),
});
/** One declared step, as a caller writes it. */
export type ChainStep = z.input<typeof ChainStepSchema>;

/** What a chain starts from. */
export const ToolChainInputSchema = z
  .object({
    steps: z.array(ChainStepSchema).min(1).max(100),
    user: SessionUserSchema,
    approval: ApprovalPolicySchema.default(ApprovalPolicySchema.parse({})),
    /** Upsert Keel's search attributes (needs them registered on the namespace) (true). */
    searchAttributes: z.boolean().default(true),
  })
  .superRefine((input, ctx) => {
    for (const issue of chainPlanIssues(input.steps)) ctx.addIssue({ code: 'custom', path: ['steps', ...issue.path], message: issue.message });
  });
/** The chain input as a caller writes it. */
export type ToolChainInputArgs = z.input<typeof ToolChainInputSchema>;

/** A problem with a chain's graph, at a path under `steps`. */
export interface ChainPlanIssue {
  path: Array<string | number>;
  message: string;
}

/** The step names of the `{{steps.<name>…}}` references in a value. */
function refsIn(value: unknown): string[] {
  if (typeof value === 'string') return [...value.matchAll(REF)].map((m) => m[1]!);
  if (Array.isArray(value)) return value.flatMap(refsIn);
  if (value && typeof value === 'object') return Object.values(value as Record<string, unknown>).flatMap(refsIn);
  return [];
}

/** Each step's index by name: its id (when it has one) and its index. */
function stepIndex(steps: ReadonlyArray<{ id?: string | undefined }>): Map<string, number> {
  const byName = new Map<string, number>();
  steps.forEach((s, i) => {
    byName.set(String(i), i);
    if (s.id !== undefined && !byName.has(s.id)) byName.set(s.id, i);
  });
  return byName;
}

/**
 * The steps each step waits for, by index: its `dependsOn`, or the step before it. Assumes a plan without
 * issues (see {@link chainPlanIssues}); names it does not know are left out.
 */
export function chainDependencies(steps: ReadonlyArray<{ id?: string | undefined; dependsOn?: string[] | undefined }>): number[][] {
  const byName = stepIndex(steps);
  return steps.map((s, i) => (s.dependsOn ? [...new Set(s.dependsOn.flatMap((n) => byName.get(n) ?? []))] : i > 0 ? [i - 1] : []));
}

/**
 * What is wrong with a chain's graph, each at its path under `steps`: two steps with one id, a
 * `dependsOn` naming no step or the step itself, steps that wait for each other in a cycle, and a
 * reference to a step the referring step does not wait for (directly or through others). Empty when the
 * plan can run.
 */
export function chainPlanIssues(steps: ReadonlyArray<{ id?: string | undefined; input?: unknown; dependsOn?: string[] | undefined }>): ChainPlanIssue[] {
  const issues: ChainPlanIssue[] = [];
  const name = (i: number) => steps[i]!.id ?? String(i);
  const firstWithId = new Map<string, number>();
  steps.forEach((s, i) => {
    if (s.id === undefined) return;
    const other = firstWithId.get(s.id);
    if (other !== undefined) issues.push({ path: [i, 'id'], message: `'${s.id}' is the id of step ${other} too: ids must be unique` });
    else firstWithId.set(s.id, i);
  });
  const byName = stepIndex(steps);
  const known = [...new Set(steps.map((_, i) => name(i)))].join(', ');
  steps.forEach((s, i) =>
    s.dependsOn?.forEach((dep, k) => {
      const target = byName.get(dep);
      if (target === undefined) issues.push({ path: [i, 'dependsOn', k], message: `no step '${dep}' (steps: ${known})` });
      else if (target === i) issues.push({ path: [i, 'dependsOn', k], message: `step '${name(i)}' cannot wait for itself` });
    }),
  );
  if (issues.length) return issues;

  const deps = chainDependencies(steps);
  // A cycle: follow dependencies depth-first; meeting a step still on the path closes one.
  const color = steps.map(() => 0); // 0 unvisited, 1 on the path, 2 done
  const path: number[] = [];
  const visit = (i: number): number[] | undefined => {
    color[i] = 1;
    path.push(i);
    for (const d of deps[i]!) {
      if (color[d] === 1) return [...path.slice(path.indexOf(d)), d];
      if (color[d] === 0) {
        const cycle = visit(d);
        if (cycle) return cycle;
      }
    }
    path.pop();
    color[i] = 2;
    return undefined;
  };
  for (let i = 0; i < steps.length; i++) {
    const cycle = color[i] === 0 ? visit(i) : undefined;
    if (cycle) {
      return [{ path: [cycle[0]!, 'dependsOn'], message: `steps wait for each other in a cycle: ${cycle.map(name).join(' → ')} (each waits for the next)` }];
    }
  }

  // A reference must name a step the referring step waits for, or its result may not exist yet.
  const ancestors = (i: number, seen = new Set<number>()): Set<number> => {
    for (const d of deps[i]!) if (!seen.has(d)) ancestors(d, seen.add(d));
    return seen;
  };
  steps.forEach((s, i) => {
    const before = ancestors(i);
    for (const ref of new Set(refsIn(s.input ?? {}))) {
      const target = byName.get(ref);
      if (target === undefined) issues.push({ path: [i, 'input'], message: `{{steps.${ref}…}} names no step (steps: ${known})` });
      else if (!before.has(target)) {
        issues.push({ path: [i, 'input'], message: `{{steps.${ref}…}} uses the result of step '${name(target)}', which step '${name(i)}' does not wait for (add it to dependsOn)` });
      }
    }
  });
  return issues;
}

/** One completed step. */
export interface ChainStepResult {
  id: string;
  tool: string;
  result: unknown;
}

/** What `toolChain` returns. */
export interface ToolChainResult {
  /** Every step's result, in the order the steps were declared. */
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

/** Runs the declared steps, each once the steps it waits for are done (see the file header). */
export async function toolChain(args: ToolChainInputArgs): Promise<ToolChainResult> {
  const input = parseWorkflowInput(ToolChainInputSchema, args, 'chain');
  const app = currentApp();
  /** Steps started so far: the status query's `iteration`. */
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

  const { steps } = input;
  const deps = chainDependencies(steps);
  const done = new Map<string, unknown>();
  const results: Array<ChainStepResult | undefined> = steps.map(() => undefined);
  const status = steps.map((): 'waiting' | 'running' | 'done' => 'waiting');
  const showRunning = () => {
    const running = steps.flatMap((s, i) => (status[i] === 'running' ? [`${i + 1}/${steps.length}: ${s.tool}`] : []));
    if (running.length) life.setStep(running.length === 1 ? `step ${running[0]}` : `steps ${running.join(', ')}`);
  };

  const runStep = async (i: number): Promise<void> => {
    const s = steps[i]!;
    const id = s.id ?? String(i);
    current += 1;
    showRunning();
    let stepInput: unknown;
    try {
      stepInput = resolveRefs(s.input, done);
    } catch (err) {
      throw ApplicationFailure.create({ type: FailureTypes.ChainStepFailed, nonRetryable: true, message: `step ${id} (${s.tool}): ${(err as Error).message}` });
    }
    if (app.tools.has(s.tool) && !toolsUsed.includes(s.tool)) toolsUsed.push(s.tool);
    const r = await runner.run({ toolUseId: `step-${id}`, name: s.tool, input: stepInput, iteration: i + 1 });
    if (r.isError) {
      throw ApplicationFailure.create({ type: FailureTypes.ChainStepFailed, nonRetryable: true, message: `step ${id} (${s.tool}) failed: ${r.content}` });
    }
    // The whole result, as the tool returned it; an earlier identical call's is only its text.
    const result = 'value' in r ? r.value : (JSON.parse(r.content) as unknown);
    done.set(id, result);
    if (s.id) done.set(String(i), result);
    results[i] = { id, tool: s.tool, result };
  };

  return life.run(async () => {
    // Every step whose dependencies are done starts at once, in declaration order. After a failure no step
    // starts; those running finish (a write is never undone while it still runs), then the chain fails.
    let failure: { error: unknown } | undefined;
    const started: Array<Promise<void>> = [];
    const startReady = () => {
      for (const [i, waitsFor] of deps.entries()) {
        if (failure || status[i] !== 'waiting' || !waitsFor.every((d) => status[d] === 'done')) continue;
        status[i] = 'running';
        started.push(
          runStep(i).then(
            () => {
              status[i] = 'done';
              startReady();
            },
            (error: unknown) => {
              failure ??= { error };
            },
          ),
        );
      }
    };
    startReady();
    // A step's completion starts the next before its own promise settles, so this sees every step started.
    for (let k = 0; k < started.length; k++) await started[k];
    if (failure) throw failure.error;
    life.setStep('completed');
    return { steps: results.filter((r): r is ChainStepResult => r !== undefined), compensations: runner.compensations };
  });
}
