/**
 * Parallel-tools benchmark: do independent tool calls of one model turn really run side by side? The
 * target, from the performance issue: five parallel 200 ms tools in one turn finish in ≤ 1.1 × 200 ms plus
 * one step's overhead. Runs three scripted sessions on Keel, with the bench-local tools module
 * (bench/parallel/tools.ts), each one tool turn and then an `end_turn` turn:
 *
 * - one fast step: turn 1 calls `fast_lookup` once (it answers at once): what one step costs by itself;
 * - five parallel 200 ms: turn 1 calls `slow_lookup` five times (five tool_use blocks in ONE turn);
 * - one 200 ms: turn 1 calls `slow_lookup` once, to set beside the five.
 *
 * Each in two execution modes: regular activities (the default) and read tools as local activities
 * (`execution: { reads: 'local' }`). Per session it measures the wall time (`startSession` → `result`) and,
 * from history, the tool span: the first tool call being scheduled to the last one done. The verdict sets
 * the five-parallel p50 session time against `1.1 × 200 ms + the one-fast-step p50 session time`.
 *
 * Sessions run one at a time, rotating which mode goes first each round. Human progress goes to stderr;
 * the table (or, with `--json`, one JSON document) to stdout. Exit code 1 when a session fails, 2 on bad
 * arguments (a missed target is a finding, not a failure: exit code 0).
 * Run: `npx tsx bench/parallel/run.ts [--sessions M] [--ms T] [--json]`.
 */
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import type { KeelClient } from '../../src/client.js';
import type { Scenario, ScenarioContentBlock } from '../../src/testing/scripted/index.js';
import type { Execution } from '../../src/workflows/types.js';
import {
  eventTimeMs,
  localActivityOf,
  machineFacts,
  machineLine,
  mean,
  percentile,
  progress,
  renderTable,
  ROOT,
  round,
  startBenchStack,
  type BenchStack,
  type HistoryEvent,
  type MachineFacts,
  parseBenchArgs,
} from '../support.js';
import { SLOW_LOOKUP_DEFAULT_MS, SLOW_LOOKUP_MAX_MS } from './tools.js';

const TOOLS_MODULE = path.join(ROOT, 'bench', 'parallel', 'tools.ts');
const SLOW = 'slow_lookup';
const FAST = 'fast_lookup';
const PROMPT = 'Benchmark: look the keys up.';
const USER = { id: 'bench-user', roles: ['analyst'] };
/** The target's allowance on top of the slowest call: 1.1 × its time. */
const TARGET_FACTOR = 1.1;

/** What turn 1 of a session calls. */
interface Shape {
  id: 'fast' | 'five' | 'one';
  tool: typeof SLOW | typeof FAST;
  calls: number;
}

const SHAPES: readonly Shape[] = [
  { id: 'fast', tool: FAST, calls: 1 },
  { id: 'five', tool: SLOW, calls: 5 },
  { id: 'one', tool: SLOW, calls: 1 },
];

/** The execution modes, each one set of rows. */
const EXECS: ReadonlyArray<{ id: 'regular' | 'local'; label: string; execution?: Execution }> = [
  { id: 'regular', label: 'keel' },
  { id: 'local', label: 'keel, local reads', execution: { reads: 'local' } },
];

const shapeLabel = (s: Shape, ms: number): string => (s.id === 'fast' ? 'one fast step' : s.id === 'five' ? `five parallel ${ms} ms` : `one ${ms} ms`);
const keyOf = (i: number): string => `key-${i + 1}`;

interface Args {
  sessions: number;
  ms: number;
  json: boolean;
}

function parseCli(): Args {
  const a = parseBenchArgs('bench/parallel', `npx tsx bench/parallel/run.ts [--sessions M (10)] [--ms T (${SLOW_LOOKUP_DEFAULT_MS})] [--json]`, {
    sessions: { def: 10, min: 1, max: 1000 },
    ms: { def: SLOW_LOOKUP_DEFAULT_MS, min: 1, max: SLOW_LOOKUP_MAX_MS },
  });
  return { sessions: a.sessions, ms: a.ms, json: a.json };
}

/**
 * A shape's scripted session: turn 1 calls its tool `calls` times in one turn (one tool_use block each,
 * keys key-1 … key-N), turn 2 checks that every result came back, in order and intact, and answers.
 */
function scenarioOf(shape: Shape, ms: number): Scenario {
  const uses: ScenarioContentBlock[] = Array.from({ length: shape.calls }, (_, i) => ({
    type: 'tool_use' as const,
    name: shape.tool,
    input: shape.tool === SLOW ? { key: keyOf(i), ms } : { key: keyOf(i) },
  }));
  return {
    name: `bench-parallel-${shape.id}-${ms}`,
    description: `${shape.calls} × ${shape.tool} in one turn, then an answer (parallel benchmark)`,
    turns: [
      { content: [{ type: 'text', text: `Looking up ${shape.calls} key(s).` }, ...uses], stop_reason: 'tool_use' },
      {
        content: [{ type: 'text', text: 'All keys found.' }],
        stop_reason: 'end_turn',
        expect: { tool_results: uses.map((_, i) => ({ tool: shape.tool, is_error: false, contains: keyOf(i) })) },
      },
    ],
  };
}

/** One counted session. */
interface Sample {
  sessionMs: number;
  toolSpanMs: number;
  /** First call scheduled → last call started (regular) or last call scheduled (local): how staggered the calls began. */
  startSpreadMs: number;
}


/**
 * The tool span of one session's history: from the first call of `tool` being scheduled to the last one
 * done. Regular activities: ActivityTaskScheduled → ActivityTaskCompleted (server timestamps). Local
 * activities: the marker's schedule time (the worker's clock, same machine) → the marker's event time,
 * i.e. the completion of the workflow task that ran the calls (an upper bound: it includes what the
 * workflow did after the last call ended in that task). And the start spread: first call scheduled → last
 * ActivityTaskStarted (regular) or last marker's schedule time (local). Checks the calls ran the way the
 * mode says.
 */
function toolSpanOf(events: HistoryEvent[], tool: string, calls: number, local: boolean, sessionId: string): { toolSpanMs: number; startSpreadMs: number } {
  const scheduled = new Set<string>();
  let first = Number.POSITIVE_INFINITY;
  let lastStart = Number.NEGATIVE_INFINITY;
  let last = Number.NEGATIVE_INFINITY;
  let regularDone = 0;
  let localDone = 0;
  for (const e of events) {
    const t = eventTimeMs(e.eventTime);
    if (e.activityTaskScheduledEventAttributes?.activityType?.name === tool) {
      scheduled.add(String(e.eventId));
      first = Math.min(first, t);
    }
    // A started event is written when its activity closes, but its time is when a worker took the task.
    const start = e.activityTaskStartedEventAttributes;
    if (start && scheduled.has(String(start.scheduledEventId))) lastStart = Math.max(lastStart, t);
    const done = e.activityTaskCompletedEventAttributes;
    if (done && scheduled.has(String(done.scheduledEventId))) {
      last = Math.max(last, t);
      regularDone += 1;
    }
    const marker = localActivityOf(e);
    if (marker?.type === tool) {
      first = Math.min(first, marker.scheduledMs);
      lastStart = Math.max(lastStart, marker.scheduledMs);
      last = Math.max(last, t);
      localDone += 1;
    }
  }
  const [want, other] = local ? [localDone, regularDone] : [regularDone, localDone];
  if (want !== calls || other !== 0) {
    throw new Error(
      `session ${sessionId}: history has ${regularDone} completed ${tool} activities and ${localDone} local ${tool} markers; ` +
        `expected ${calls} ${local ? 'local' : 'regular'} and none the other way`,
    );
  }
  return { toolSpanMs: last - first, startSpreadMs: lastStart - first };
}

/** Runs one session to its end, checks it, and measures it. */
async function runSession(client: KeelClient, shape: Shape, exec: (typeof EXECS)[number], ms: number): Promise<Sample> {
  const sessionId = `bench-parallel-${shape.id}-${exec.id}-${randomUUID()}`;
  const started = performance.now();
  await client.startSession({
    sessionId,
    prompt: PROMPT,
    user: USER,
    model: `scripted/${scenarioOf(shape, ms).name}`,
    tools: [SLOW, FAST],
    maxIterations: 2,
    maxTokens: 256,
    ...(exec.execution ? { execution: exec.execution } : {}),
  });
  const result = await client.result(sessionId);
  const sessionMs = performance.now() - started;
  if (result.stopReason !== 'end_turn' || result.iterations !== 2) {
    throw new Error(`session ${sessionId} ended with ${result.stopReason} after ${result.iterations} model calls, expected end_turn after 2`);
  }
  const bad = result.toolCalls.filter((c) => c.outcome !== 'ok' || c.name !== shape.tool || c.deduplicated);
  if (result.toolCalls.length !== shape.calls || bad.length > 0) {
    throw new Error(`session ${sessionId}: ${result.toolCalls.length} tool calls (expected ${shape.calls}), ${bad.length} not ok (${bad.map((c) => `${c.name}: ${c.outcome}${c.deduplicated ? ' (deduplicated)' : ''} ${c.error ?? ''}`).join('; ')})`);
  }
  const events = (await client.session(sessionId).fetchHistory()).events ?? [];
  return { sessionMs, ...toolSpanOf(events, shape.tool, shape.calls, exec.execution?.reads === 'local', sessionId) };
}

/** One printed row. */
interface Row {
  mode: string;
  execution: 'regular' | 'local';
  shape: Shape['id'];
  toolCalls: number;
  sessions: number;
  p50SessionMs: number;
  p95SessionMs: number;
  meanSessionMs: number;
  p50ToolSpanMs: number;
  p95ToolSpanMs: number;
  p50StartSpreadMs: number;
}

/** The target, in one execution mode. */
interface Verdict {
  execution: 'regular' | 'local';
  label: string;
  fiveP50SessionMs: number;
  fastP50SessionMs: number;
  /** 1.1 × ms + the one-fast-step p50 session time. */
  boundMs: number;
  /** five-parallel p50 ÷ bound: at most 1 when met. */
  ratio: number;
  met: boolean;
  /** Five calls' tool span p50 against one call's: side by side when under two calls' time. */
  fiveToolSpanP50Ms: number;
  oneToolSpanP50Ms: number;
  parallel: boolean;
  /** What the four extra calls cost: five-parallel p50 session − one-200-ms p50 session. */
  extraForFourMoreMs: number;
}

interface Report {
  machine: MachineFacts;
  params: { sessions: number; warmupSessions: number; toolMs: number; targetFactor: number };
  rows: Row[];
  verdicts: Verdict[];
  method: Record<string, string>;
}

function summarize(shape: Shape, exec: (typeof EXECS)[number], ms: number, samples: Sample[]): Row {
  const session = samples.map((s) => s.sessionMs);
  const span = samples.map((s) => s.toolSpanMs);
  return {
    mode: `${exec.label}: ${shapeLabel(shape, ms)}`,
    execution: exec.id,
    shape: shape.id,
    toolCalls: shape.calls,
    sessions: samples.length,
    p50SessionMs: round(percentile(session, 50), 1),
    p95SessionMs: round(percentile(session, 95), 1),
    meanSessionMs: round(mean(session), 1),
    p50ToolSpanMs: round(percentile(span, 50), 1),
    p95ToolSpanMs: round(percentile(span, 95), 1),
    p50StartSpreadMs: round(percentile(samples.map((s) => s.startSpreadMs), 50), 1),
  };
}

function verdictOf(exec: (typeof EXECS)[number], rows: Row[], ms: number): Verdict {
  const row = (shape: Shape['id']): Row => rows.find((r) => r.execution === exec.id && r.shape === shape)!;
  const [fast, five, one] = [row('fast'), row('five'), row('one')];
  const boundMs = TARGET_FACTOR * ms + fast.p50SessionMs;
  return {
    execution: exec.id,
    label: exec.label,
    fiveP50SessionMs: five.p50SessionMs,
    fastP50SessionMs: fast.p50SessionMs,
    boundMs: round(boundMs, 1),
    ratio: round(five.p50SessionMs / boundMs, 3),
    met: five.p50SessionMs <= boundMs,
    fiveToolSpanP50Ms: five.p50ToolSpanMs,
    oneToolSpanP50Ms: one.p50ToolSpanMs,
    parallel: five.p50ToolSpanMs < 2 * ms,
    extraForFourMoreMs: round(five.p50SessionMs - one.p50SessionMs, 1),
  };
}

function render(r: Report): string {
  const { sessions, toolMs } = r.params;
  const header = ['mode', 'tool calls', 'p50 session ms', 'p95 session ms', 'p50 tool span ms', 'p95 tool span ms', 'p50 start spread ms'];
  const cells = r.rows.map((x) => [
    x.mode,
    String(x.toolCalls),
    x.p50SessionMs.toFixed(1),
    x.p95SessionMs.toFixed(1),
    x.p50ToolSpanMs.toFixed(1),
    x.p95ToolSpanMs.toFixed(1),
    x.p50StartSpreadMs.toFixed(1),
  ]);
  const lines = [
    `Keel parallel-tools benchmark: ${sessions} sessions per mode (+1 warm-up each, not counted); slow_lookup waits ${toolMs} ms`,
    machineLine(r.machine),
    '',
    renderTable(header, cells),
    '',
  ];
  for (const v of r.verdicts) {
    lines.push(
      `${v.execution === 'regular' ? 'target' : 'target, local reads (extra)'}: five parallel ${toolMs} ms p50 ${v.fiveP50SessionMs.toFixed(1)} ms ` +
        `vs bound ${TARGET_FACTOR} × ${toolMs} + one fast step p50 ${v.fastP50SessionMs.toFixed(1)} = ${v.boundMs.toFixed(1)} ms: ` +
        `ratio ${v.ratio.toFixed(3)}, ${v.met ? 'met' : 'not met'}`,
      `  ${v.label}: tool span p50 five calls ${v.fiveToolSpanP50Ms.toFixed(1)} ms, one call ${v.oneToolSpanP50Ms.toFixed(1)} ms: ` +
        `${v.parallel ? 'the five ran side by side' : `the five did NOT run side by side (span over 2 × ${toolMs} ms)`}; ` +
        `four more calls cost ${v.extraForFourMoreMs.toFixed(1)} ms of session p50`,
    );
  }
  lines.push(
    '',
    `session ms:   ${r.method.session}`,
    `tool span:    ${r.method.toolSpan}`,
    `  local:      ${r.method.toolSpanLocal}`,
    `start spread: ${r.method.startSpread}`,
    `bound:        ${r.method.bound}`,
    'Timings on this shared machine are only comparable within one run, not across runs or machines.',
  );
  return lines.join('\n');
}

async function main(): Promise<void> {
  const args = parseCli();
  const { sessions, ms } = args;
  const machine = machineFacts();
  const scenarios = SHAPES.map((s) => scenarioOf(s, ms));

  let stack: BenchStack | undefined;
  try {
    stack = await startBenchStack({ scenarios, taskQueuePrefix: 'bench-parallel', tools: TOOLS_MODULE });
    const { client, keelWorker } = stack;
    const runners = EXECS.flatMap((exec) => SHAPES.map((shape) => ({ exec, shape, samples: [] as Sample[] })));

    await keelWorker.worker.runUntil(async () => {
      progress('warm-up: 1 session per mode (not counted)');
      for (const r of runners) await runSession(client, r.shape, r.exec, ms);
      for (let i = 0; i < sessions; i++) {
        // Rotate which mode goes first, so none always runs right after the same other.
        for (let j = 0; j < runners.length; j++) {
          const r = runners[(i + j) % runners.length]!;
          r.samples.push(await runSession(client, r.shape, r.exec, ms));
        }
        progress(`round ${i + 1}/${sessions} done (${runners.length} sessions)`);
      }
    });

    const rows = runners.map((r) => summarize(r.shape, r.exec, ms, r.samples));
    const report: Report = {
      machine,
      params: { sessions, warmupSessions: 1, toolMs: ms, targetFactor: TARGET_FACTOR },
      rows,
      verdicts: EXECS.map((e) => verdictOf(e, rows, ms)),
      method: {
        session: 'wall time around startSession + result: starting the workflow, two model calls, the tool turn, delivering the result',
        toolSpan: 'from history: first tool call ActivityTaskScheduled to last ActivityTaskCompleted of the turn (server timestamps)',
        toolSpanLocal:
          "first tool marker's schedule time (the worker's clock) to the last tool marker's event time, i.e. the end of the workflow task that ran the calls (an upper bound)",
        startSpread: "first tool call scheduled to the last one started (ActivityTaskStarted time) or, local, to the last one scheduled (marker schedule times)",
        bound: `${TARGET_FACTOR} × the tool's ${ms} ms + the one-fast-step p50 session time (same execution mode); met when the five-parallel p50 session time is at most that`,
      },
    };
    process.stdout.write(args.json ? `${JSON.stringify(report, null, 2)}\n` : `${render(report)}\n`);
  } finally {
    await stack?.close();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench/parallel failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
