/**
 * Peers benchmark: the same agent workload on Keel, plain Temporal (regular and local activities),
 * Restate, LangGraph.js (SQLite checkpointer; async and sync durability) and DBOS (PostgreSQL), one
 * engine after another in one run, printed as one table with the engines side by side and each engine's
 * durability settings under it.
 *
 * All engines are started first (not timed) and get a warm-up session each. Then M rounds of one session
 * at a time per engine, the order rotating each round (ms per step, timed the same way for every engine:
 * the gaps between the model requests reaching the scripted model server); then, engine by engine, C
 * sessions with `--in-flight` of them running at once (sessions per second). On the engines built on
 * Temporal, each sequential session's history gives its billable Temporal Cloud actions and where a
 * step's time goes; the dev server's own `action` counter, read around one session run alone, is the
 * cross-check. Progress goes to stderr; the table (or, with `--json`, one JSON document) to
 * stdout. Run from this directory: `npm run bench -- [--steps N] [--sessions M] [--concurrent C]
 * [--in-flight F] [--engines a,b] [--json]`.
 */
import { randomUUID } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import type Anthropic from '@anthropic-ai/sdk';
import { DEFAULT_SYSTEM_PROMPT } from '../../src/app/registry.js';
import { toModelTool } from '../../src/tools/index.js';
import {
  machineFacts,
  machineLine,
  mean,
  parseBenchArgs,
  percentile,
  progress,
  renderTable,
  round,
  startBenchStack,
  type BenchStack,
} from '../support.js';
import { actionDelta, billableActions, findMetricsUrl, markersByName, settledActionMetric, timeSplit, totalActions, type ActionCount, type TimeSplit } from './actions.js';
import { startDbos } from './engines/dbos.js';
import { startKeel } from './engines/keel.js';
import { startLangGraph } from './engines/langgraph.js';
import { startRestate } from './engines/restate.js';
import { startTemporal } from './engines/temporal.js';
import type { Engine, EngineContext, StartEngine } from './engines/types.js';
import { createStepIO, ModelRequestClock, peerScenario, TOOL_NAMES, type StepTarget } from './workload.js';

/** Every engine, in the order they run and appear in the table. */
const ENGINES: Array<[string, StartEngine]> = [
  ['keel', startKeel()],
  ['keel-local', startKeel({ reads: 'local', model: 'local' })],
  ['temporal', startTemporal(false)],
  ['temporal-local', startTemporal(true)],
  ['restate', startRestate],
  ['langgraph', startLangGraph('async')],
  ['langgraph-sync', startLangGraph('sync')],
  ['dbos', startDbos],
];

/** The agent loop allows at most 200 model turns; N steps need N + 1. */
const MAX_STEPS = 199;

interface Args {
  steps: number;
  sessions: number;
  concurrent: number;
  inFlight: number;
  engines: string[];
  json: boolean;
}

function parseCli(): Args {
  const usageLine =
    'npx tsx bench/peers/run.ts [--steps N (10)] [--sessions M (10)] [--concurrent C (48)] [--in-flight F (16)] ' +
    `[--engines ${ENGINES.map(([n]) => n).join(',')} (all)] [--json]`;
  const a = parseBenchArgs(
    'bench/peers',
    usageLine,
    {
      steps: { def: 10, min: 1, max: MAX_STEPS },
      sessions: { def: 10, min: 1, max: 1000 },
      concurrent: { def: 48, min: 1, max: 10_000 },
      'in-flight': { def: 16, min: 1, max: 256 },
    },
    { engines: { def: ENGINES.map(([n]) => n).join(',') } },
  );
  const engines = a.engines.split(',').map((e) => e.trim()).filter(Boolean);
  const unknown = engines.filter((e) => !ENGINES.some(([n]) => n === e));
  if (unknown.length > 0 || engines.length === 0) a.usage(`--engines: unknown ${unknown.join(', ') || '(none given)'}`);
  return { steps: a.steps, sessions: a.sessions, concurrent: a.concurrent, inFlight: a['in-flight'], engines, json: a.json };
}

/** One engine's figures, as printed and in `--json`. */
interface EngineResult {
  name: string;
  version?: string;
  durability?: string[];
  /** Why the engine has no figures (it did not start, or a session failed). */
  error?: string;
  sequential?: {
    sessions: number;
    p50MsPerStep: number;
    p95MsPerStep: number;
    meanMsPerStep: number;
    meanSessionMs: number;
  };
  concurrent?: {
    sessions: number;
    inFlight: number;
    wallMs: number;
    sessionsPerSecond: number;
    p50SessionMs: number;
  };
  /** Temporal-based engines: billable actions, means over the sequential sessions. */
  actions?: {
    perSession: number;
    perStep: number;
    byKindPerSession: ActionCount;
    /** Markers by name per session (what the marker batches hold). */
    markersPerSession: ActionCount;
    /** The dev server's `action` counter over one session run alone (absent when unreadable). */
    serverCounterPerSession?: number;
    /** The same, by the server's `action_type`. */
    serverCounterByTypePerSession?: ActionCount;
  };
  /** Temporal-based engines: mean ms per step (session totals ÷ N) from history. */
  splitPerStepMs?: Omit<TimeSplit, 'workflowTasks'> & { workflowTasksPerStep: number };
}

/** The server counter's growth over `sessions` sessions, per session, in total and by type. */
function serverCounter(delta: ActionCount, sessions: number): { serverCounterPerSession: number; serverCounterByTypePerSession: ActionCount } {
  return {
    serverCounterPerSession: round(totalActions(delta) / sessions),
    serverCounterByTypePerSession: Object.fromEntries(Object.entries(delta).map(([k, v]) => [k, round(v / sessions)])),
  };
}

/** Runs `total` sessions with at most `inFlight` at once; returns each session's wall time. */
async function runConcurrently(total: number, inFlight: number, run: () => Promise<void>): Promise<number[]> {
  const times: number[] = [];
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < total) {
      next++;
      const t0 = performance.now();
      await run();
      times.push(performance.now() - t0);
    }
  };
  await Promise.all(Array.from({ length: Math.min(inFlight, total) }, lane));
  return times;
}

/** One engine during the run: what it has measured so far, or why it stopped. */
interface Entry {
  name: string;
  engine?: Engine;
  error?: string;
  stepMs: number[];
  sessionMs: number[];
  counts: ActionCount[];
  markers: ActionCount[];
  splits: TimeSplit[];
  /** The server counter's growth over the engine's counter session (Temporal-based engines). */
  counter?: ActionCount;
  concurrentMs?: number[];
  concurrentWallMs?: number;
}

/** Marks an engine failed (it takes part in no later phase) and says why on stderr. */
function fail(e: Entry, err: unknown): void {
  e.error = err instanceof Error ? err.message.split('\n')[0]! : String(err);
  progress(`${e.name}: FAILED: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  process.exitCode = 1;
}

const sessionId = (e: Entry): string => `bench-${e.name}-${randomUUID()}`;

/** One sequential session: its steps from the model server's clock, its wall time, and (Temporal) its history. */
async function sequentialSession(e: Entry, engine: Engine, steps: number, clock: ModelRequestClock): Promise<void> {
  const id = sessionId(e);
  clock.take();
  const t0 = performance.now();
  await engine.runSession(id);
  e.sessionMs.push(performance.now() - t0);
  const arrivals = clock.take();
  if (arrivals.length !== steps + 1) throw new Error(`${e.name} session ${id}: the model server saw ${arrivals.length} requests, expected ${steps + 1}`);
  e.stepMs.push(...arrivals.slice(1).map((t, k) => t - arrivals[k]!));
  if (engine.history) {
    const events = await engine.history(id);
    e.counts.push(billableActions(events));
    e.markers.push(markersByName(events));
    e.splits.push(timeSplit(events));
  }
}

/**
 * Measures the started engines: a warm-up session each; on Temporal-based engines one session alone
 * between two settled reads of the server's action counter; then M rounds of one sequential session per
 * engine, the order rotating each round (so machine noise spreads over all engines, as the overhead
 * benchmark alternates its modes); then, engine by engine, C sessions with F in flight.
 */
async function measureAll(entries: Entry[], args: Args, clock: ModelRequestClock, metrics: { url: string; namespace: string } | undefined): Promise<void> {
  const live = (): Array<Entry & { engine: Engine }> => entries.filter((e): e is Entry & { engine: Engine } => !!e.engine && !e.error);
  for (const e of live()) {
    try {
      progress(`${e.name}: warm-up session (not counted)`);
      await e.engine.runSession(sessionId(e));
      if (e.engine.history && metrics) {
        const read = () => settledActionMetric(metrics.url, metrics.namespace).catch(() => undefined);
        const before = await read();
        await e.engine.runSession(sessionId(e));
        const after = before ? await read() : undefined;
        if (before && after) e.counter = actionDelta(before, after);
      }
    } catch (err) {
      fail(e, err);
    }
  }
  for (let round = 0; round < args.sessions; round++) {
    const order = live();
    const shift = round % Math.max(1, order.length);
    for (const e of [...order.slice(shift), ...order.slice(0, shift)]) {
      try {
        await sequentialSession(e, e.engine, args.steps, clock);
      } catch (err) {
        fail(e, err);
      }
    }
    progress(`sequential round ${round + 1}/${args.sessions} done`);
  }
  for (const e of live()) {
    try {
      progress(`${e.name}: ${args.concurrent} sessions, ${args.inFlight} in flight`);
      clock.take();
      const t0 = performance.now();
      e.concurrentMs = await runConcurrently(args.concurrent, args.inFlight, () => e.engine.runSession(sessionId(e)));
      e.concurrentWallMs = performance.now() - t0;
      clock.take();
    } catch (err) {
      fail(e, err);
    }
  }
}

/** An engine's figures from what it measured. */
function resultOf(e: Entry, args: Args): EngineResult {
  const { steps } = args;
  const base = { name: e.name, ...(e.engine ? { version: e.engine.version, durability: e.engine.durability } : {}) };
  if (e.error || !e.concurrentMs || e.concurrentWallMs === undefined) return { ...base, error: e.error ?? 'not measured' };
  const result: EngineResult = {
    ...base,
    sequential: {
      sessions: e.sessionMs.length,
      p50MsPerStep: round(percentile(e.stepMs, 50)),
      p95MsPerStep: round(percentile(e.stepMs, 95)),
      meanMsPerStep: round(mean(e.stepMs)),
      meanSessionMs: round(mean(e.sessionMs), 1),
    },
    concurrent: {
      sessions: args.concurrent,
      inFlight: args.inFlight,
      wallMs: round(e.concurrentWallMs, 1),
      sessionsPerSecond: round((args.concurrent * 1000) / e.concurrentWallMs),
      p50SessionMs: round(percentile(e.concurrentMs, 50), 1),
    },
  };
  if (e.counts.length > 0) {
    const perSessionMeans = (cs: ActionCount[]): ActionCount => {
      const kinds = [...new Set(cs.flatMap((c) => Object.keys(c)))];
      return Object.fromEntries(kinds.map((k) => [k, round(mean(cs.map((c) => c[k] ?? 0)))]));
    };
    const perSession = mean(e.counts.map(totalActions));
    result.actions = {
      perSession: round(perSession),
      perStep: round(perSession / steps),
      byKindPerSession: perSessionMeans(e.counts),
      markersPerSession: perSessionMeans(e.markers),
      ...(e.counter ? serverCounter(e.counter, 1) : {}),
    };
    const m = (k: keyof TimeSplit): number => round(mean(e.splits.map((s) => s[k])) / steps);
    result.splitPerStepMs = {
      workflowTaskQueue: m('workflowTaskQueue'),
      workflowTaskRun: m('workflowTaskRun'),
      workflowTasksPerStep: m('workflowTasks'),
      activityQueue: m('activityQueue'),
      activityRun: m('activityRun'),
      modelActivityRun: m('modelActivityRun'),
    };
  }
  return result;
}

/** The side-by-side table: one column per engine, one row per figure. */
function table(results: EngineResult[], args: Args): string {
  const cell = (r: EngineResult, f: (r: EngineResult) => number | undefined, digits = 1): string => {
    if (r.error) return 'failed';
    const v = f(r);
    return v === undefined ? '–' : v.toFixed(digits);
  };
  const rows: Array<[string, (r: EngineResult) => string]> = [
    ['ms/step p50 (one at a time)', (r) => cell(r, (x) => x.sequential?.p50MsPerStep)],
    ['ms/step p95 (one at a time)', (r) => cell(r, (x) => x.sequential?.p95MsPerStep)],
    ['session ms, mean (one at a time)', (r) => cell(r, (x) => x.sequential?.meanSessionMs, 0)],
    [`sessions/s (${args.inFlight} in flight)`, (r) => cell(r, (x) => x.concurrent?.sessionsPerSecond, 2)],
    [`session ms p50 (${args.inFlight} in flight)`, (r) => cell(r, (x) => x.concurrent?.p50SessionMs, 0)],
    ['Temporal actions / session', (r) => cell(r, (x) => x.actions?.perSession, 1)],
    ['Temporal actions / step', (r) => cell(r, (x) => x.actions?.perStep, 2)],
    ['server action counter / session', (r) => cell(r, (x) => x.actions?.serverCounterPerSession, 1)],
  ];
  return renderTable(
    ['', ...results.map((r) => r.name)],
    rows.map(([label, f]) => [label, ...results.map(f)]),
  );
}

function report(results: EngineResult[], args: Args, machine: ReturnType<typeof machineFacts>): string {
  const out = [
    `Keel and its peers: ${args.steps} steps per session; per engine ${args.sessions} sessions one at a time (rounds over all engines) + ${args.concurrent} with ${args.inFlight} in flight (+1 warm-up, +1 alone for the server counter on Temporal)`,
    machineLine(machine),
    '',
    table(results, args),
    '',
  ];
  const temporal = results.filter((r) => r.splitPerStepMs);
  if (temporal.length > 0) {
    out.push('Where a step goes on Temporal (mean ms per step, from history; server timestamps):');
    for (const r of temporal) {
      const s = r.splitPerStepMs!;
      out.push(
        `  ${r.name.padEnd(15)} workflow task queue wait ${s.workflowTaskQueue.toFixed(1)}, workflow task run ${s.workflowTaskRun.toFixed(1)} ` +
          `(${s.workflowTasksPerStep.toFixed(2)} tasks/step), activity queue wait ${s.activityQueue.toFixed(1)}, ` +
          `activity run ${s.activityRun.toFixed(1)} (model ${s.modelActivityRun.toFixed(1)}, tool ${(s.activityRun - s.modelActivityRun).toFixed(1)})`,
      );
    }
    const kinds = (c: ActionCount | undefined): string => Object.entries(c ?? {}).map(([k, v]) => `${k} ${v}`).join(', ') || '–';
    out.push('Temporal actions per session, by kind, counted from history (markers in history by name):');
    for (const r of temporal) out.push(`  ${r.name.padEnd(15)} ${kinds(r.actions?.byKindPerSession)} (${kinds(r.actions?.markersPerSession)})`);
    out.push("The dev server's action counter per session, by action_type:");
    for (const r of temporal) out.push(`  ${r.name.padEnd(15)} ${kinds(r.actions?.serverCounterByTypePerSession)}`);
    out.push('');
  }
  out.push('Durability, as run:');
  for (const r of results) {
    out.push(`  ${r.name}${r.version ? ` (${r.version})` : ''}${r.error ? `: FAILED: ${r.error}` : ''}`);
    for (const line of r.durability ?? []) out.push(`    - ${line}`);
  }
  out.push(
    '',
    'ms/step: gap between consecutive model requests reaching the scripted model server (the same clock for every engine); one step = model call + tool call + what the engine does between them.',
    'Temporal actions: billable actions per Temporal Cloud\'s list, counted from each session\'s history (per step = per session ÷ N); the server counter is the dev server\'s own `action` metric,',
    '  which also counts the search-attribute upserts that only set TemporalChangeVersion (one per patched() call), which Temporal Cloud documents as not billed.',
    'Timings on this shared machine are only comparable within one run, not across runs or machines.',
  );
  return out.join('\n');
}

async function main(): Promise<void> {
  const args = parseCli();
  const { steps } = args;
  const machine = machineFacts();
  const scenario = peerScenario(steps);
  let stack: BenchStack | undefined;
  let clock: ModelRequestClock | undefined;
  try {
    stack = await startBenchStack({ scenarios: [scenario], taskQueuePrefix: 'bench-peers' });
    const tools = TOOL_NAMES.map((n) => {
      const tool = stack!.keelWorker.app.tools.get(n);
      if (!tool) throw new Error(`the support desk's tools module has no tool '${n}'`);
      return toModelTool(tool) as Anthropic.Tool;
    });
    const target: StepTarget = { modelUrl: stack.model.url, demoUrl: stack.demo.url, model: `scripted/${scenario.name}`, system: DEFAULT_SYSTEM_PROMPT, tools };
    const ctx: EngineContext = { stack, io: createStepIO(target), target, steps, tmp: path.join(stack.tmp, 'peers'), progress };
    await mkdir(ctx.tmp, { recursive: true });
    clock = new ModelRequestClock(stack.model.port);
    const frontendPort = Number(stack.server.address.split(':').at(-1));
    const metricsUrl = await findMetricsUrl(stack.server.pid, [frontendPort]);
    progress(metricsUrl ? `temporal dev server metrics at ${metricsUrl}` : 'temporal dev server metrics not found: no server action counter');

    const entries: Entry[] = ENGINES.filter(([n]) => args.engines.includes(n)).map(([name]) => ({ name, stepMs: [], sessionMs: [], counts: [], markers: [], splits: [] }));
    try {
      for (const e of entries) {
        progress(`${e.name}: starting (not timed)`);
        try {
          e.engine = await ENGINES.find(([n]) => n === e.name)![1](ctx);
        } catch (err) {
          fail(e, err);
        }
      }
      await measureAll(entries, args, clock, metricsUrl ? { url: metricsUrl, namespace: stack.server.namespace } : undefined);
    } finally {
      for (const e of entries.slice().reverse()) {
        await e.engine?.close().catch((err: unknown) => progress(`${e.name}: stopping failed: ${err instanceof Error ? err.message : String(err)}`));
      }
    }
    const results = entries.map((e) => resultOf(e, args));

    if (args.json) {
      const method = {
        msPerStep: 'gap between consecutive POST /v1/messages reaching the scripted model server, sequential sessions only (rounds over all engines, order rotating)',
        sessionsPerSecond: 'concurrent sessions ÷ wall time from the first start to the last result',
        actions: "billable Temporal Cloud actions counted from each sequential session's history; perStep = perSession ÷ steps",
        serverCounter: "the dev server's `action` metric, difference over one session run alone (after the warm-up)",
      };
      process.stdout.write(`${JSON.stringify({ machine, params: { steps, sessions: args.sessions, concurrent: args.concurrent, inFlight: args.inFlight, warmupSessions: 1 }, engines: results, method }, null, 2)}\n`);
    } else {
      process.stdout.write(`${report(results, args, machine)}\n`);
    }
  } finally {
    clock?.close();
    await stack?.close();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench/peers failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
