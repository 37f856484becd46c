/**
 * Overhead benchmark: what does durability cost per agent step? Runs the same scripted session (N steps,
 * each one model turn that calls one read tool, then a final `end_turn` turn; model and tools answer at
 * once) in-process and on Keel, and compares the time per step:
 *
 * 1. in-process, no durability: a plain loop here that calls the real `@anthropic-ai/sdk` against the
 *    scripted model server and runs the tool's `run(input, ctx)` directly against the demo services;
 * 2. on Keel: a Temporal dev server started here, an in-process Keel worker, sessions through `KeelClient`,
 *    in each execution mode (README, *Execution modes*): regular activities (the default), read tools as
 *    local activities (`execution: { reads: 'local' }`), and reads and the model call as local activities.
 *
 * Every mode makes the same HTTP calls to the same servers; the difference is Temporal (workflow tasks,
 * activity scheduling, history writes, payload conversion). Sessions alternate between the modes so machine
 * noise hits both alike. Human progress goes to stderr; the table (or, with `--json`, one JSON document)
 * to stdout. Run: `npx tsx bench/overhead/run.ts [--steps N] [--sessions M] [--json]`.
 */
import { randomUUID } from 'node:crypto';
import Anthropic from '@anthropic-ai/sdk';
import type { KeelClient } from '../../src/client.js';
import type { Execution } from '../../src/workflows/types.js';
import type { Scenario } from '../../src/testing/scripted/index.js';
import { DEFAULT_SYSTEM_PROMPT, type KeelApp } from '../../src/app/registry.js';
import { toModelTool, type Tool, type ToolContext, type ToolLogger } from '../../src/tools/index.js';
import { guardedFetch } from '../../src/activities/fetch.js';
import { idempotencyKey } from '../../src/workflows/keys.js';
import {
  eventTimeMs,
  localActivityOf,
  machineFacts,
  machineLine,
  mean,
  percentile,
  progress,
  renderTable,
  round,
  startBenchStack,
  type BenchStack,
  type HistoryEvent,
  parseBenchArgs,
  readStepsScenario,
  STEP_TOOLS,
} from '../support.js';

/** The two read tools (of the support desk's tools module) the steps alternate between, with inputs the demo services know. */
const TOOL_NAMES = STEP_TOOLS.map((t) => t.name);
const PROMPT = 'Benchmark: look up the order and the customer, step by step.';
const USER = { id: 'bench-user', roles: ['support'] };
const MAX_TOKENS = 1024;
/** The agent loop allows at most 200 model turns; N steps need N + 1. */
const MAX_STEPS = 199;

/** The Keel rows: one per execution mode, the same session each time. */
const KEEL_MODES: ReadonlyArray<{ mode: string; execution?: Execution }> = [
  { mode: 'keel' },
  { mode: 'keel, local reads', execution: { reads: 'local' } },
  { mode: 'keel, local reads+model', execution: { reads: 'local', model: 'local' } },
];

/** Per-step and per-session timings of one mode. */
interface ModeSamples {
  /** Milliseconds per step, pooled over the counted sessions. */
  stepMs: number[];
  /** Wall time of each counted session, in ms. */
  sessionMs: number[];
}

/** The summary of one mode, as printed. */
interface ModeSummary {
  mode: string;
  steps: number;
  sessions: number;
  p50MsPerStep: number;
  p95MsPerStep: number;
  meanMsPerStep: number;
  meanSessionMs: number;
  /** Mean of session wall time / N: includes session start, the final turn and (Keel) result delivery. */
  meanSessionMsPerStep: number;
}

interface Args {
  steps: number;
  sessions: number;
  json: boolean;
}

function parseCli(): Args {
  const a = parseBenchArgs('bench/overhead', 'npx tsx bench/overhead/run.ts [--steps N (10)] [--sessions M (5)] [--json]', {
    steps: { def: 10, min: 1, max: MAX_STEPS },
    sessions: { def: 5, min: 1, max: 1000 },
  });
  return { steps: a.steps, sessions: a.sessions, json: a.json };
}

/** The scripted session: N tool turns alternating the two read tools, then one end_turn turn. */
function benchScenario(steps: number): Scenario {
  return readStepsScenario(steps, `bench-overhead-${steps}`, `${steps} read-tool steps, then an answer (overhead benchmark)`);
}

const noopLog: ToolLogger = { info() {}, warn() {}, error() {} };

function missingTool(name: string): never {
  throw new Error(`the worker's tools module has no tool '${name}'`);
}

/**
 * Mode 1: the agent loop without durability. Mirrors what Keel's `callModel` and tool activities send
 * (same system prompt, tools, max_tokens, metadata; tool input validated by zod; result as JSON text) so
 * the only thing missing is Temporal (and Keel's conversation store, which `callModel` writes and reads
 * back on every call). The tools are the worker's own (`app`), so every mode runs the same code. Returns
 * the per-step times and the session's wall time.
 */
async function runInProcess(
  anthropic: Anthropic,
  app: KeelApp,
  model: string,
  steps: number,
  demoUrl: string,
): Promise<{ stepMs: number[]; sessionMs: number }> {
  const sessionId = `bench-inproc-${randomUUID()}`;
  const tools: Tool[] = TOOL_NAMES.map((n) => app.tools.get(n) ?? missingTool(n));
  const byName = new Map(tools.map((t) => [t.name, t]));
  const modelTools = tools.map(toModelTool);
  const env = { KEEL_DEMO_URL: demoUrl };
  const messages: Anthropic.MessageParam[] = [{ role: 'user', content: PROMPT }];
  const stepMs: number[] = [];
  const started = performance.now();
  for (let turn = 0; turn <= steps; turn++) {
    const stepStart = performance.now();
    const reply = await anthropic.messages.create({
      model,
      max_tokens: MAX_TOKENS,
      system: DEFAULT_SYSTEM_PROMPT,
      messages,
      tools: modelTools as Anthropic.Tool[],
      metadata: { user_id: sessionId },
    });
    messages.push({ role: 'assistant', content: reply.content });
    const toolUses = reply.content.filter((b): b is Anthropic.ToolUseBlock => b.type === 'tool_use');
    if (reply.stop_reason !== 'tool_use' || toolUses.length === 0) {
      if (turn !== steps) throw new Error(`in-process session ended after ${turn} of ${steps} steps (${reply.stop_reason})`);
      break;
    }
    const results: Anthropic.ToolResultBlockParam[] = [];
    for (const block of toolUses) {
      const tool = byName.get(block.name);
      if (!tool) throw new Error(`scripted model asked for unknown tool ${block.name}`);
      const input = tool.input.parse(block.input);
      const signal = new AbortController().signal;
      const ctx: ToolContext = {
        idempotencyKey: idempotencyKey(tool.policy.idempotency, sessionId, tool.name, input, block.id),
        signal,
        log: noopLog,
        session: { workflowId: sessionId, userId: USER.id, roles: USER.roles },
        toolUseId: block.id,
        env,
        traceHeaders: {},
        fetch: guardedFetch(tool, { env, signal, traceHeaders: {} }),
        progress: () => undefined,
      };
      const out = await tool.run(input, ctx);
      results.push({ type: 'tool_result', tool_use_id: block.id, content: JSON.stringify(out ?? null) });
    }
    messages.push({ role: 'user', content: results });
    stepMs.push(performance.now() - stepStart);
  }
  const sessionMs = performance.now() - started;
  if (stepMs.length !== steps) throw new Error(`in-process session ran ${stepMs.length} steps, expected ${steps}`);
  return { stepMs, sessionMs };
}

/**
 * Mode 2: the same session on Keel, in one execution mode. Wall time is measured around `startSession` +
 * `result`; per-step times come from the history: the gap between consecutive model calls being scheduled
 * (a `callModel` ActivityTaskScheduled event's server timestamp or, for a local model call, its marker's
 * schedule time), i.e. model call + workflow task(s) + tool call, per step.
 */
async function runOnKeel(
  client: KeelClient,
  model: string,
  steps: number,
  execution: Execution | undefined,
): Promise<{ stepMs: number[]; sessionMs: number; breakdown: Breakdown }> {
  const sessionId = `bench-keel-${randomUUID()}`;
  const started = performance.now();
  await client.startSession({
    sessionId,
    prompt: PROMPT,
    user: USER,
    model,
    tools: TOOL_NAMES,
    maxIterations: steps + 1,
    maxTokens: MAX_TOKENS,
    ...(execution ? { execution } : {}),
  });
  const result = await client.result(sessionId);
  const sessionMs = performance.now() - started;
  if (result.stopReason !== 'end_turn' || result.iterations !== steps + 1) {
    throw new Error(`Keel session ${sessionId} ended with ${result.stopReason} after ${result.iterations} turns, expected end_turn after ${steps + 1}`);
  }
  const bad = result.toolCalls.filter((c) => c.outcome !== 'ok');
  if (result.toolCalls.length !== steps || bad.length > 0) {
    throw new Error(`Keel session ${sessionId}: ${result.toolCalls.length} tool calls, ${bad.length} not ok (${bad.map((c) => c.error).join('; ')})`);
  }

  const events = (await client.session(sessionId).fetchHistory()).events ?? [];
  const scheduled = events.flatMap((e) => {
    if (e.activityTaskScheduledEventAttributes?.activityType?.name === 'callModel') return [eventTimeMs(e.eventTime)];
    const local = localActivityOf(e);
    return local?.type === 'callModel' ? [local.scheduledMs] : [];
  });
  if (scheduled.length !== steps + 1) throw new Error(`Keel session ${sessionId}: ${scheduled.length} callModel calls in history, expected ${steps + 1}`);
  const stepMs = scheduled.slice(1).map((t, i) => t - scheduled[i]!);
  return { stepMs, sessionMs, breakdown: breakdownOf(events, scheduled[0]!, scheduled[steps]!, steps) };
}


/** Where a Keel step's time goes, in ms per step (means over the steps of the sessions measured). */
interface Breakdown {
  /** callModel: started → completed (the HTTP call to the model plus SDK and payload work in the worker). */
  modelActivityRun: number;
  /** Tool activity: started → completed (the HTTP call to the demo services plus payload work). */
  toolActivityRun: number;
  /** Any activity: scheduled → started (matching and dispatch to the worker's poller). */
  activityQueueWait: number;
  /** Workflow task: scheduled → started (matching and dispatch). */
  workflowTaskQueueWait: number;
  /** Workflow task: started → completed (the worker runs the workflow code and its local activities, and answers). */
  workflowTaskRun: number;
  /** Workflow tasks completed (per step, like the rest: a count, not ms). */
  workflowTasks: number;
  /** Local `callModel` calls (a count per step; their time is inside the workflow task run). */
  localModelCalls: number;
  /** Local tool calls (a count per step). */
  localToolCalls: number;
  /** Keel's own local activities: audit writes, tool availability (a count per step). */
  localKeelCalls: number;
}

/** The parts of a step that follow one another, in ms (the rest of a breakdown are counts). */
const SEQUENTIAL: ReadonlyArray<keyof Breakdown> = ['modelActivityRun', 'toolActivityRun', 'activityQueueWait', 'workflowTaskQueueWait', 'workflowTaskRun'];
/** Keel's own local activities, as opposed to tools run local. */
const KEEL_LOCAL_ACTIVITIES = new Set(['appendAudit', 'toolAvailability', 'listMcpTools']);

/**
 * Splits the step window [first callModel scheduled, last callModel scheduled) of one history into queue
 * waits and run times of activities and workflow tasks, per step. Intervals are attributed by the time they
 * end; what is left (history writes between a completion and the next task being scheduled) is the rest.
 */
function breakdownOf(events: HistoryEvent[], from: number, to: number, steps: number): Breakdown {
  const time = new Map<string, number>();
  const activityType = new Map<string, string>();
  const b: Breakdown = { modelActivityRun: 0, toolActivityRun: 0, activityQueueWait: 0, workflowTaskQueueWait: 0, workflowTaskRun: 0, workflowTasks: 0, localModelCalls: 0, localToolCalls: 0, localKeelCalls: 0 };
  for (const e of events) {
    const id = String(e.eventId);
    const t = eventTimeMs(e.eventTime);
    time.set(id, t);
    const since = (ref: unknown): number => t - (time.get(String(ref)) ?? t);
    const a = e.activityTaskScheduledEventAttributes;
    if (a?.activityType?.name) activityType.set(id, a.activityType.name);
    const local = localActivityOf(e);
    // Counted by when they were scheduled: a workflow task of local calls may record them after the window.
    if (local && local.scheduledMs >= from && local.scheduledMs < to) {
      if (local.type === 'callModel') b.localModelCalls += 1;
      else if (KEEL_LOCAL_ACTIVITIES.has(local.type)) b.localKeelCalls += 1;
      else b.localToolCalls += 1;
    }
    if (t <= from || t > to) continue;
    if (e.activityTaskStartedEventAttributes) b.activityQueueWait += since(e.activityTaskStartedEventAttributes.scheduledEventId);
    const done = e.activityTaskCompletedEventAttributes;
    if (done) {
      const run = since(done.startedEventId);
      if (activityType.get(String(done.scheduledEventId)) === 'callModel') b.modelActivityRun += run;
      else b.toolActivityRun += run;
    }
    if (e.workflowTaskStartedEventAttributes) b.workflowTaskQueueWait += since(e.workflowTaskStartedEventAttributes.scheduledEventId);
    if (e.workflowTaskCompletedEventAttributes) {
      b.workflowTaskRun += since(e.workflowTaskCompletedEventAttributes.startedEventId);
      b.workflowTasks += 1;
    }
  }
  for (const k of Object.keys(b) as Array<keyof Breakdown>) b[k] /= steps;
  return b;
}

function summarize(mode: string, steps: number, s: ModeSamples): ModeSummary {
  return {
    mode,
    steps,
    sessions: s.sessionMs.length,
    p50MsPerStep: round(percentile(s.stepMs, 50)),
    p95MsPerStep: round(percentile(s.stepMs, 95)),
    meanMsPerStep: round(mean(s.stepMs)),
    meanSessionMs: round(mean(s.sessionMs), 1),
    meanSessionMsPerStep: round(mean(s.sessionMs) / steps),
  };
}

function table(rows: ModeSummary[]): string {
  const header = ['mode', 'steps', 'p50 ms/step', 'p95 ms/step', 'mean session ms', 'session ms / N'];
  const cells = rows.map((r) => [
    r.mode,
    String(r.steps),
    r.p50MsPerStep.toFixed(2),
    r.p95MsPerStep.toFixed(2),
    r.meanSessionMs.toFixed(1),
    r.meanSessionMsPerStep.toFixed(2),
  ]);
  return renderTable(header, cells);
}

async function main(): Promise<void> {
  const args = parseCli();
  const { steps, sessions } = args;
  const scenario = benchScenario(steps);
  const modelName = `scripted/${scenario.name}`;
  const machine = machineFacts();

  let stack: BenchStack | undefined;
  try {
    stack = await startBenchStack({ scenarios: [scenario], taskQueuePrefix: 'bench-overhead' });
    const { model, demo, client, keelWorker } = stack;
    // The same client settings as Keel's callModel activity: one client, no SDK retries.
    const anthropic = new Anthropic({ apiKey: 'scripted', baseURL: model.url, maxRetries: 0, timeout: 120_000 });

    const inProcess: ModeSamples = { stepMs: [], sessionMs: [] };
    const keel = KEEL_MODES.map(() => ({ samples: { stepMs: [], sessionMs: [] } as ModeSamples, breakdowns: [] as Breakdown[] }));
    const runInProc = async (counted: boolean): Promise<void> => {
      const r = await runInProcess(anthropic, keelWorker.app, modelName, steps, demo.url);
      if (counted) {
        inProcess.stepMs.push(...r.stepMs);
        inProcess.sessionMs.push(r.sessionMs);
      }
    };
    const runKeel = (i: number) => async (counted: boolean): Promise<void> => {
      const r = await runOnKeel(client, modelName, steps, KEEL_MODES[i]!.execution);
      if (counted) {
        keel[i]!.samples.stepMs.push(...r.stepMs);
        keel[i]!.samples.sessionMs.push(r.sessionMs);
        keel[i]!.breakdowns.push(r.breakdown);
      }
    };
    const runners = [runInProc, ...KEEL_MODES.map((_, i) => runKeel(i))];

    await keelWorker.worker.runUntil(async () => {
      progress('warm-up: 1 session each way (not counted)');
      for (const run of runners) await run(false);
      for (let i = 0; i < sessions; i++) {
        // Rotate which mode goes first, so none always runs right after the same other.
        const order = runners.map((_, j) => runners[(i + j) % runners.length]!);
        for (const run of order) await run(true);
        progress(`session ${i + 1}/${sessions} done each way`);
      }
    });

    const base = summarize('in-process', steps, inProcess);
    const keelRows = KEEL_MODES.map((m, i) => summarize(m.mode, steps, keel[i]!.samples));
    const rows = [base, ...keelRows];
    const regular = keelRows[0]!;
    const modes = keelRows.map((r, i) => {
      const breakdown = Object.fromEntries(
        (Object.keys(keel[i]!.breakdowns[0]!) as Array<keyof Breakdown>).map((k) => [k, round(mean(keel[i]!.breakdowns.map((b) => b[k])))]),
      ) as unknown as Breakdown;
      const accounted = SEQUENTIAL.reduce((sum, k) => sum + breakdown[k], 0);
      return {
        mode: r.mode,
        execution: KEEL_MODES[i]!.execution ?? {},
        ratioOverInProcess: { p50: round(r.p50MsPerStep / base.p50MsPerStep), p95: round(r.p95MsPerStep / base.p95MsPerStep) },
        overheadMsPerStep: { p50: round(r.p50MsPerStep - base.p50MsPerStep), p95: round(r.p95MsPerStep - base.p95MsPerStep) },
        ratioOverRegularKeel: { p50: round(r.p50MsPerStep / regular.p50MsPerStep), p95: round(r.p95MsPerStep / regular.p95MsPerStep), mean: round(r.meanMsPerStep / regular.meanMsPerStep) },
        stepBreakdownMs: { ...breakdown, rest: round(r.meanMsPerStep - accounted) },
      };
    });
    const method = {
      inProcess: 'each step timed directly with performance.now(): model call + tool call',
      keel: 'each step from history: gap between consecutive model calls being scheduled (callModel ActivityTaskScheduled, server time; or a local callModel marker\'s schedule time)',
      session: 'wall time around startSession + result (Keel) or the whole loop (in-process), incl. the final end_turn turn',
    };

    if (args.json) {
      process.stdout.write(`${JSON.stringify({ machine, params: { steps, sessions, warmupSessions: 1 }, modes: rows, keel: modes, method }, null, 2)}\n`);
    } else {
      const out = [
        `Keel overhead benchmark: ${sessions} sessions x ${steps} steps each way (+1 warm-up each, not counted)`,
        machineLine(machine),
        '',
        table(rows),
        '',
        ...modes.flatMap((m) => {
          const b = m.stepBreakdownMs;
          const counts =
            `  per step: ${b.workflowTasks.toFixed(1)} workflow tasks completed; local activities: model ${b.localModelCalls.toFixed(1)}, ` +
            `tools ${b.localToolCalls.toFixed(1)}, Keel's own (audit, availability) ${b.localKeelCalls.toFixed(1)} (their time is in the workflow task run)`;
          return [
            `${m.mode}: / in-process p50 ${m.ratioOverInProcess.p50.toFixed(2)}x, p95 ${m.ratioOverInProcess.p95.toFixed(2)}x ` +
              `(overhead per step: p50 +${m.overheadMsPerStep.p50.toFixed(2)} ms, p95 +${m.overheadMsPerStep.p95.toFixed(2)} ms); ` +
              `/ keel: p50 ${m.ratioOverRegularKeel.p50.toFixed(2)}x, p95 ${m.ratioOverRegularKeel.p95.toFixed(2)}x, mean ${m.ratioOverRegularKeel.mean.toFixed(2)}x`,
            `  step, mean ms: model activity ${b.modelActivityRun.toFixed(2)}, tool activity ${b.toolActivityRun.toFixed(2)}, ` +
              `activity queue wait ${b.activityQueueWait.toFixed(2)}, workflow task queue wait ${b.workflowTaskQueueWait.toFixed(2)}, ` +
              `workflow task run ${b.workflowTaskRun.toFixed(2)}, rest ${b.rest.toFixed(2)} (from history)`,
            counts,
          ];
        }),
        '',
        `per step, in-process: ${method.inProcess}`,
        `per step, keel:       ${method.keel}`,
        `session ms / N:       mean session wall time / N (${method.session})`,
        'Timings on this shared machine are only comparable as ratios within one run, not across runs or machines.',
      ];
      process.stdout.write(`${out.join('\n')}\n`);
    }
  } finally {
    await stack?.close();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench/overhead failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
