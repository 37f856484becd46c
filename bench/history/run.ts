/**
 * History benchmark: how much Temporal history does a long session with large tool results cost, now that
 * the conversation lives in Keel's store? Runs scripted sessions of N model calls (10, 50, 100) in which
 * each of the first N - 1 turns calls `fetch_report` (bench/history/tools.ts) once and gets ~200 KiB of
 * JSON back, all of which the model is shown; the last turn answers. Each turn's `expect` checks that the
 * previous report reached the model whole (its trailer, 200 KiB past the preview history keeps).
 *
 * Per run of each session (following continue-as-new) it reports events and history bytes, as the server
 * counts them (what its limits and the continue-as-new suggestion use) and as the fetched history encodes.
 * Beside the measured figures it prints a COMPUTED one: what history would hold had each `callModel`
 * carried the whole conversation inline and each tool result been kept in full (the design before the
 * store), obtained by swapping those payloads for their inline versions. One more session (N = 100 with a
 * small `historyLimitBytes`) shows continue-as-new carrying the session over, with the same answer.
 *
 * The target: 100 model calls, each receiving a 200 KB tool result, complete, with no run's history above
 * 10 MB. Human progress goes to stderr; the table (or, with `--json`, one JSON document) to stdout; exit
 * code 1 when the target is missed. Run: `npx tsx bench/history/run.ts [--kb K] [--limit-bytes B] [--json]`.
 */
import path from 'node:path';
import type { WorkflowHandle } from '@temporalio/client';
import proto from '@temporalio/proto';
import type { KeelClient } from '../../src/client.js';
import type { ConversationStore } from '../../src/store/index.js';
import type { Scenario, ScenarioTurn } from '../../src/testing/scripted/index.js';
import type { CallModelInput, SessionResult, ToolActivityInput, ToolActivityOutput, ToolResultBlock } from '../../src/workflows/types.js';
import {
  machineFacts,
  machineLine,
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
import { reportTrailer } from './tools.js';

// @temporalio/proto is CommonJS: its namespaces come through the default import under ESM.
const { History, HistoryEvent: HistoryEventProto } = proto.temporal.api.history.v1;
const TOOL = 'fetch_report';
const TOOLS_MODULE = path.join(ROOT, 'bench', 'history', 'tools.ts');
/** Model calls per session, in the order they run. */
const CALLS = [10, 50, 100] as const;
const PROMPT = 'Benchmark: read the sales report page by page, then summarise it.';
const USER = { id: 'bench-user', roles: ['analyst'] };
const MB = 1_000_000;
/** The issue's bound on any one run's history, in bytes (Temporal warns at 10 MB, terminates at 50 MB). */
const RUN_LIMIT_BYTES = 10 * MB;
/** Temporal's default largest payload (`limit.blobSize.error`, 2 MiB): an inline conversation past it fails the workflow task. */
const PAYLOAD_LIMIT_BYTES = 2 * 1024 * 1024;
/** A session never has more runs than this here; the run-chain walk stops there. */
const MAX_RUNS = 1000;

interface Args {
  kb: number;
  limitBytes: number;
  json: boolean;
}

function parseCli(): Args {
  const a = parseBenchArgs('bench/history', 'npx tsx bench/history/run.ts [--kb K (200)] [--limit-bytes B (250000; 0: no continue-as-new row)] [--json]', {
    kb: { def: 200, min: 1, max: 250 },
    'limit-bytes': { def: 250_000, min: 0, max: 50_000_000 },
  });
  if (a['limit-bytes'] > 0 && a['limit-bytes'] < 1_000) a.usage('--limit-bytes must be 0 or at least 1000 (the session input minimum)');
  return { kb: a.kb, limitBytes: a['limit-bytes'], json: a.json };
}

/** N model calls: N - 1 turns that each fetch one report page, then an answer; each turn checks the last page arrived whole. */
function historyScenario(calls: number, kb: number): Scenario {
  const arrived = (page: number) => ({ expect: { tool_results: [{ is_error: false, contains: `"end":"${reportTrailer(page)}"` }] } });
  const turns: ScenarioTurn[] = [];
  for (let page = 0; page < calls - 1; page++) {
    turns.push({
      content: [
        { type: 'text', text: `Reading page ${page} of the report.` },
        { type: 'tool_use', name: TOOL, input: { page, kb } },
      ],
      stop_reason: 'tool_use',
      ...(page > 0 ? arrived(page - 1) : {}),
    });
  }
  turns.push({
    content: [{ type: 'text', text: finalAnswer(calls) }],
    stop_reason: 'end_turn',
    ...(calls > 1 ? arrived(calls - 2) : {}),
  });
  return { name: `bench-history-${calls}-${kb}kb`, description: `${calls - 1} report pages of ${kb} KiB, then an answer (history benchmark)`, turns };
}

const finalAnswer = (calls: number): string => `Read ${calls - 1} pages of the report; totals are in the rows.`;

/** One run of a session, from its history and the server's description of it. */
interface RunFacts {
  run: number;
  runId: string;
  events: number;
  /** The server's count (`historySizeBytes`): what its limits and the continue-as-new suggestion read. */
  historyBytes: number;
  /** `History.encode(history)` of the fetched history. */
  encodedBytes: number;
  /** `callModel` activities scheduled in this run. */
  modelCalls: number;
  /** The largest single event, encoded. */
  largestEventBytes: number;
  continuedAsNew: boolean;
  status: string;
}

/** What the design before the store would have put in history: computed from this session, never run. */
interface InlineEstimate {
  /** Measured history with each callModel input and tool result swapped for its inline version. */
  historyBytes: number;
  /** The largest inline payload: a callModel input holding the conversation so far (or a full tool result). */
  largestPayloadBytes: number;
  /** The first model call whose inline input passes Temporal's 2 MiB payload limit (the workflow task would fail); null if none. */
  firstCallOverPayloadLimit: number | null;
}

interface SessionReport {
  label: string;
  calls: number;
  historyLimitBytes: number | undefined;
  sessionId: string;
  wallSeconds: number;
  /** `result.iterations`. */
  modelCalls: number;
  /** `result.runs`. */
  runs: number;
  stopReason: string;
  answer: string;
  toolCallsOk: number;
  /** JSON bytes of the fetch_report results the model received, summed (each output's `bytes`). */
  toolResultBytes: number;
  runFacts: RunFacts[];
  largestRunBytes: number;
  totalHistoryBytes: number;
  inline: InlineEstimate | undefined;
}

const decoder = new TextDecoder();
/** A payload's JSON value (Keel uses the default JSON payload converter, no codec). */
const payloadJson = <T>(data: Uint8Array | null | undefined): T => JSON.parse(decoder.decode(data ?? new Uint8Array())) as T;
const jsonBytes = (v: unknown): number => Buffer.byteLength(JSON.stringify(v));

/** Fetches every run of a session, first to last, following continue-as-new. */
async function walkRuns(client: KeelClient, sessionId: string, firstRunId: string): Promise<{ facts: RunFacts[]; events: HistoryEvent[][] }> {
  const facts: RunFacts[] = [];
  const events: HistoryEvent[][] = [];
  let runId: string | undefined = firstRunId;
  for (let run = 1; runId && run <= MAX_RUNS; run++) {
    const handle: WorkflowHandle = client.temporal.workflow.getHandle(sessionId, runId);
    const [history, desc] = await Promise.all([handle.fetchHistory(), handle.describe()]);
    const evs: HistoryEvent[] = history.events ?? [];
    const next: string | undefined = evs.at(-1)?.workflowExecutionContinuedAsNewEventAttributes?.newExecutionRunId ?? undefined;
    facts.push({
      run,
      runId,
      events: evs.length,
      historyBytes: desc.historySize ?? Number.NaN,
      encodedBytes: History.encode(history).finish().length,
      modelCalls: evs.filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'callModel').length,
      largestEventBytes: Math.max(...evs.map((e) => HistoryEventProto.encode(e).finish().length)),
      continuedAsNew: next !== undefined,
      status: desc.status.name,
    });
    events.push(evs);
    runId = next;
  }
  if (runId) throw new Error(`session ${sessionId} has more than ${MAX_RUNS} runs`);
  return { facts, events };
}

/**
 * The inline design's history, computed: each callModel input's `conversation` reference replaced by the
 * conversation it stands for (read back from the store, blobs resolved), each tool result's preview by its
 * full text; every other byte as measured. Payload sizes change by the JSON bytes swapped (the protobuf
 * length prefixes by a byte or two, ignored).
 */
async function inlineEstimate(store: ConversationStore, events: HistoryEvent[], measuredBytes: number): Promise<InlineEstimate> {
  const calls: Array<{ data: Uint8Array; input: CallModelInput }> = [];
  const toolInputs = new Map<string, ToolActivityInput>();
  const toolResults: Array<{ scheduledEventId: string; data: Uint8Array }> = [];
  for (const e of events) {
    const s = e.activityTaskScheduledEventAttributes;
    const data = s?.input?.payloads?.[0]?.data;
    if (s && data) {
      if (s.activityType?.name === 'callModel') calls.push({ data, input: payloadJson<CallModelInput>(data) });
      else if (s.activityType?.name === TOOL) toolInputs.set(String(e.eventId), payloadJson<ToolActivityInput>(data));
    }
    const c = e.activityTaskCompletedEventAttributes;
    const result = c?.result?.payloads?.[0]?.data;
    if (c && result) toolResults.push({ scheduledEventId: String(c.scheduledEventId), data: result });
  }
  const last = calls.at(-1)?.input.conversation;
  if (!last) throw new Error('no callModel in history');
  const conversation = await store.read(last.id, last.stored + last.append.length);
  // JSON.stringify(messages.slice(0, k)) has 2 + sum of the first k message sizes + (k - 1) commas bytes.
  const prefix = [0];
  for (const m of conversation) prefix.push(prefix.at(-1)! + jsonBytes(m));
  const messagesBytes = (k: number): number => 2 + prefix[k]! + Math.max(0, k - 1);
  const fullText = new Map<string, string>();
  for (const m of conversation) {
    if (m.role !== 'user' || typeof m.content === 'string') continue;
    for (const b of m.content) {
      if (b.type === 'tool_result') {
        const r = b as ToolResultBlock;
        fullText.set(r.tool_use_id, r.content);
      }
    }
  }

  let delta = 0;
  let largestPayloadBytes = 0;
  let firstCallOverPayloadLimit: number | null = null;
  for (const [i, { data, input }] of calls.entries()) {
    const { conversation: ref, ...rest } = input;
    // The same input with `messages: []` in place of the reference, then the conversation's bytes for the `[]`.
    const inline = jsonBytes({ ...rest, messages: [] }) - 2 + messagesBytes(ref.stored + ref.append.length);
    delta += inline - data.length;
    largestPayloadBytes = Math.max(largestPayloadBytes, inline);
    if (firstCallOverPayloadLimit === null && inline > PAYLOAD_LIMIT_BYTES) firstCallOverPayloadLimit = i + 1;
  }
  for (const { scheduledEventId, data } of toolResults) {
    const input = toolInputs.get(scheduledEventId);
    if (!input) continue; // not a fetch_report result (callModel's output is the same in both designs)
    const out = payloadJson<ToolActivityOutput>(data);
    const text = fullText.get(input.toolUseId);
    if (text === undefined) throw new Error(`tool result ${input.toolUseId} is not in the stored conversation`);
    const { blob: _blob, ...kept } = out;
    const inline = jsonBytes({ ...kept, content: text });
    delta += inline - data.length;
    largestPayloadBytes = Math.max(largestPayloadBytes, inline);
  }
  return { historyBytes: measuredBytes + delta, largestPayloadBytes, firstCallOverPayloadLimit };
}

/** Runs one session to its end and measures every run of it. */
async function runSession(stack: BenchStack, calls: number, kb: number, historyLimitBytes: number | undefined, withInline: boolean): Promise<SessionReport> {
  const { client } = stack;
  const scenario = historyScenario(calls, kb);
  const label = `${calls} calls${historyLimitBytes ? `, limit ${fmtKB(historyLimitBytes)} KB` : ''}`;
  const sessionId = `bench-history-${calls}-${historyLimitBytes ?? 'default'}-${Date.now().toString(36)}`;
  progress(`session: ${label} (${calls - 1} × ${kb} KiB tool results)`);
  const started = performance.now();
  const { handle } = await client.startSession({
    sessionId,
    prompt: PROMPT,
    user: USER,
    model: `scripted/${scenario.name}`,
    tools: [TOOL],
    maxIterations: calls,
    maxTokens: 1024,
    ...(historyLimitBytes ? { historyLimitBytes } : {}),
  });
  const result: SessionResult = await client.result(sessionId);
  const wallSeconds = (performance.now() - started) / 1000;
  const ok = result.toolCalls.filter((c) => c.outcome === 'ok').length;
  if (result.stopReason !== 'end_turn' || result.iterations !== calls || ok !== calls - 1) {
    throw new Error(`session ${sessionId} ended ${result.stopReason} after ${result.iterations} model calls with ${ok} of ${result.toolCalls.length} tool calls ok; expected end_turn after ${calls} with ${calls - 1} ok`);
  }

  const desc = await client.session(sessionId).describe();
  const firstRunId = desc.raw.workflowExecutionInfo?.firstRunId || (handle as { firstExecutionRunId?: string }).firstExecutionRunId;
  if (!firstRunId) throw new Error(`cannot tell the first run of ${sessionId}`);
  const { facts, events } = await walkRuns(client, sessionId, firstRunId);
  if (facts.length !== result.runs) throw new Error(`session ${sessionId}: ${facts.length} runs in Temporal, result says ${result.runs}`);
  if (facts.at(-1)?.status !== 'COMPLETED') throw new Error(`session ${sessionId}: last run is ${facts.at(-1)?.status}`);
  const toolResultBytes = toolResultBytesOf(events);
  const inline = withInline && facts.length === 1 ? await inlineEstimate(stack.keelWorker.store, events[0]!, facts[0]!.historyBytes) : undefined;
  return {
    label,
    calls,
    historyLimitBytes,
    sessionId,
    wallSeconds: round(wallSeconds, 1),
    modelCalls: result.iterations,
    runs: result.runs,
    stopReason: result.stopReason,
    answer: result.answer,
    toolCallsOk: ok,
    toolResultBytes,
    runFacts: facts,
    largestRunBytes: Math.max(...facts.map((f) => f.historyBytes)),
    totalHistoryBytes: facts.reduce((s, f) => s + f.historyBytes, 0),
    inline,
  };
}

/** The bytes of every fetch_report result the model received (each output's `bytes`, from history). */
function toolResultBytesOf(runs: HistoryEvent[][]): number {
  const tools = new Set<string>();
  let sum = 0;
  for (const evs of runs) {
    for (const e of evs) {
      if (e.activityTaskScheduledEventAttributes?.activityType?.name === TOOL) tools.add(String(e.eventId));
      const c = e.activityTaskCompletedEventAttributes;
      const data = c?.result?.payloads?.[0]?.data;
      if (c && data && tools.has(String(c.scheduledEventId))) sum += payloadJson<ToolActivityOutput>(data).bytes;
    }
  }
  return sum;
}

const fmtKB = (bytes: number): string => (bytes / 1000).toLocaleString('en-US', { maximumFractionDigits: 1, minimumFractionDigits: 1 });
const fmtMB = (bytes: number): string => (bytes / MB).toFixed(2);

function table(sessions: SessionReport[]): string {
  const header = ['session', 'run', 'model calls', 'events', 'history KB', 'KB / model call', 'largest event KB', 'ended', 'wall s', 'inline design KB (computed)'];
  const cells: string[][] = [];
  for (const s of sessions) {
    for (const r of s.runFacts) {
      const first = r.run === 1;
      cells.push([
        first ? s.label : '',
        `${r.run}/${s.runs}`,
        String(r.modelCalls),
        String(r.events),
        fmtKB(r.historyBytes),
        r.modelCalls > 0 ? fmtKB(r.historyBytes / r.modelCalls) : '–',
        fmtKB(r.largestEventBytes),
        r.continuedAsNew ? 'continued as new' : r.status.toLowerCase(),
        first ? s.wallSeconds.toFixed(1) : '',
        first && s.inline ? fmtKB(s.inline.historyBytes) : '',
      ]);
    }
  }
  return renderTable(header, cells);
}

interface Report {
  machine: MachineFacts;
  params: { calls: readonly number[]; toolResultKiB: number; maxResultBytes: number; historyLimitBytesRow: number | undefined };
  sessions: SessionReport[];
  target: { sessionCompleted: boolean; modelCalls: number; largestRunBytes: number; limitBytes: number; met: boolean };
  continueAsNew: { runs: number; sameAnswer: boolean } | undefined;
  method: Record<string, string>;
}

function render(r: Report, kb: number): string {
  const hundred = r.sessions.find((s) => s.calls === 100 && s.historyLimitBytes === undefined);
  const can = r.sessions.find((s) => s.historyLimitBytes !== undefined);
  const lines = [
    `Keel history benchmark: sessions of ${r.params.calls.join(' / ')} model calls, each tool turn receiving a ${kb} KiB result the model sees in full`,
    machineLine(r.machine),
    '',
    table(r.sessions),
    '',
  ];
  for (const s of r.sessions) {
    if (!s.inline) continue;
    const over = s.inline.firstCallOverPayloadLimit;
    lines.push(
      `${s.label}: measured ${fmtMB(s.totalHistoryBytes)} MB; inline design (COMPUTED, not run) ${fmtMB(s.inline.historyBytes)} MB ` +
        `(${(s.inline.historyBytes / s.totalHistoryBytes).toFixed(0)}x), its largest payload ${fmtMB(s.inline.largestPayloadBytes)} MB` +
        (over ? ` — over Temporal's 2 MiB payload limit from model call ${over} on, so it could not have run` : ''),
    );
  }
  lines.push('');
  if (hundred) {
    lines.push(
      `100-call session: ${r.target.sessionCompleted ? 'completed' : 'DID NOT complete'} (${hundred.stopReason} after ${hundred.modelCalls} model calls, ` +
        `${hundred.toolCallsOk} tool results of ${fmtKB(hundred.toolResultBytes / hundred.toolCallsOk)} KB each, ${hundred.runs} run${hundred.runs === 1 ? '' : 's'}); ` +
        `largest run's history ${fmtMB(r.target.largestRunBytes)} MB vs the ${fmtMB(r.target.limitBytes)} MB limit: ${r.target.met ? 'PASS' : 'FAIL'}`,
    );
  }
  if (can && r.continueAsNew) {
    lines.push(
      `with historyLimitBytes ${can.historyLimitBytes}: ${r.continueAsNew.runs} runs, largest ${fmtMB(can.largestRunBytes)} MB; ` +
        `same answer and tool calls as the one-run session: ${r.continueAsNew.sameAnswer ? 'yes' : 'NO'}`,
    );
  }
  const runs = r.sessions.flatMap((s) => s.runFacts);
  const maxDiff = Math.max(...runs.map((f) => Math.abs(f.encodedBytes - f.historyBytes)));
  lines.push(
    '',
    `history KB:       ${r.method.historyBytes}`,
    `                  cross-check, ${r.method.encodedBytes}: ${maxDiff === 0 ? 'equal for every run' : `differs by up to ${maxDiff} bytes`}`,
    `largest event KB: ${r.method.largestEvent}`,
    `inline design:    ${r.method.inline}`,
    'KB = 1,000 bytes, MB = 1,000,000 bytes. Wall times on this shared machine are only comparable within one run.',
  );
  return lines.join('\n');
}

async function main(): Promise<void> {
  const args = parseCli();
  const machine = machineFacts();
  const plan: Array<{ calls: number; limit: number | undefined }> = CALLS.map((calls) => ({ calls, limit: undefined }));
  if (args.limitBytes > 0) plan.push({ calls: 100, limit: args.limitBytes });
  const scenarios = [...new Set(plan.map((p) => p.calls))].map((calls) => historyScenario(calls, args.kb));

  let stack: BenchStack | undefined;
  try {
    stack = await startBenchStack({ scenarios, taskQueuePrefix: 'bench-history', tools: TOOLS_MODULE });
    const s = stack;
    const sessions: SessionReport[] = [];
    await s.keelWorker.worker.runUntil(async () => {
      for (const p of plan) sessions.push(await runSession(s, p.calls, args.kb, p.limit, p.limit === undefined));
    });

    const hundred = sessions.find((x) => x.calls === 100 && x.historyLimitBytes === undefined)!;
    const can = sessions.find((x) => x.historyLimitBytes !== undefined);
    const sameAs = (a: SessionReport, b: SessionReport): boolean =>
      a.answer === b.answer && a.modelCalls === b.modelCalls && a.toolCallsOk === b.toolCallsOk && a.toolResultBytes === b.toolResultBytes;
    const target = {
      sessionCompleted: hundred.stopReason === 'end_turn' && hundred.modelCalls === 100,
      modelCalls: hundred.modelCalls,
      largestRunBytes: hundred.largestRunBytes,
      limitBytes: RUN_LIMIT_BYTES,
      met: false,
    };
    target.met = target.sessionCompleted && target.largestRunBytes <= RUN_LIMIT_BYTES && (!can || can.largestRunBytes <= RUN_LIMIT_BYTES);
    const report: Report = {
      machine,
      params: { calls: CALLS, toolResultKiB: args.kb, maxResultBytes: 256 * 1024, historyLimitBytesRow: can?.historyLimitBytes },
      sessions,
      target,
      continueAsNew: can ? { runs: can.runs, sameAnswer: sameAs(can, hundred) } : undefined,
      method: {
        historyBytes: "the server's historySizeBytes of each run (describe): what its 10/50 MB limits and the continue-as-new suggestion read",
        encodedBytes: 'History.encode(history).finish().length of the fetched history of each run',
        largestEvent: "the largest single event, encoded: the result's tool-call list, or the session state a continued run starts from",
        inline:
          'COMPUTED, not run: the measured history with every callModel input carrying the whole conversation so far (read back from the store) ' +
          'instead of a reference, and every tool result in full instead of a preview; all other bytes as measured',
      },
    };
    if (!target.met || (report.continueAsNew && !report.continueAsNew.sameAnswer)) process.exitCode = 1;
    process.stdout.write(args.json ? `${JSON.stringify(report, null, 2)}\n` : `${render(report, args.kb)}\n`);
  } finally {
    await stack?.close();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench/history failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
