/**
 * Approvals benchmark: what does a session parked on an approval cost the worker, and how fast does it
 * resume once a person decides? Starts a dev server, the scripted model, the demo services and ONE Keel
 * worker in this process, then:
 *
 * 1. warms up (two sessions approved and finished, one per decision path) and measures this process's RSS
 *    and idle CPU (the worker is the only thing here doing Temporal work);
 * 2. parks N sessions: each one's first model turn asks for `issue_refund` (irreversible, so it always
 *    needs approval) and the workflow waits; once every session reports its request pending, measures
 *    RSS, idle CPU and the worker's sticky-cache size again;
 * 3. for K sampled sessions per decision path (the `decideApproval` update via `KeelClient.decide`, and the
 *    `approval` signal), sequentially: approves, waits for the session to finish and reads from its history
 *    when the `issue_refund` activity was scheduled and started, and from the demo ledger when the refund
 *    row was written; all against the wall-clock time just before the decision was sent;
 * 4. approves the rest, waits for them all, checks every refund landed exactly once, and cleans up.
 *
 * Human progress goes to stderr; the tables (or, with `--json`, one JSON document) to stdout. Run:
 * `npx tsx --expose-gc bench/approvals/run.ts [--sessions N] [--samples K] [--concurrency C] [--max-cached M] [--json]`.
 */
import { readFileSync } from 'node:fs';
import type { ActivityInterceptorsFactory } from '@temporalio/worker';
import { demoClient } from '../../examples/support-desk/services/index.js';
import type { KeelClient } from '../../src/client.js';
import type { Scenario } from '../../src/testing/scripted/index.js';
import { approvalSignal, type ApprovalDecision, type SessionResult } from '../../src/workflows/types.js';
import {
  eventTimeMs,
  machineFacts,
  machineLine,
  percentile,
  progress,
  renderTable,
  round,
  startBenchStack,
  type BenchStack,
  type HistoryEvent,
  type MachineFacts,
  parseBenchArgs,
} from '../support.js';

const TOOL = 'issue_refund';
/** Order ord_1001 totals 12,900 cents and refunds add up: 1 cent each keeps N + warm-ups under the refundable total. */
const REFUND = { order_id: 'ord_1001', amount_cents: 1, reason: 'bench: parked approval' } as const;
const REFUNDABLE_CENTS = 12_900;
const WARMUP_SESSIONS = 2;
const PROMPT = 'Benchmark: refund one cent on order ord_1001.';
const USER = { id: 'bench-user', roles: ['support'] };
const APPROVER = { id: 'bench-approver', roles: ['approver'] };
/** The first (and only) request of each session: `<tool>-<n>`. */
const REQUEST_ID = `${TOOL}-1`;
const MB = 1024 * 1024;
/** How long to let the process settle (after gc) before reading memory, and the idle-CPU window. */
const SETTLE_MS = 2000;
const IDLE_WINDOW_MS = 5000;
/** Give up waiting for sessions to park after this long. */
const PARK_TIMEOUT_MS = 10 * 60_000;

type Via = 'update' | 'signal';

interface Args {
  sessions: number;
  samples: number;
  concurrency: number;
  maxCached: number | undefined;
  json: boolean;
}

function parseCli(): Args {
  const a = parseBenchArgs(
    'bench/approvals',
    'npx tsx --expose-gc bench/approvals/run.ts [--sessions N (1000)] [--samples K (50)] [--concurrency C (50)] [--max-cached M] [--json]',
    {
      sessions: { def: 1000, min: 2, max: REFUNDABLE_CENTS - WARMUP_SESSIONS },
      samples: { def: 50, min: 1, max: 5000 },
      concurrency: { def: 50, min: 1, max: 500 },
      'max-cached': { def: Number.NaN, min: 0, max: 100_000 },
    },
  );
  if (2 * a.samples > a.sessions) a.usage(`--samples ${a.samples} needs at least ${2 * a.samples} parked sessions (K per decision path), got --sessions ${a.sessions}`);
  return {
    sessions: a.sessions,
    samples: a.samples,
    concurrency: a.concurrency,
    maxCached: Number.isNaN(a['max-cached']) ? undefined : a['max-cached'],
    json: a.json,
  };
}

/** Turn 1 asks for the refund (which parks on approval); turn 2, after the refund's result, answers. */
function approvalScenario(): Scenario {
  return {
    name: 'bench-approvals',
    description: 'one issue_refund call that needs approval, then an answer (approvals benchmark)',
    turns: [
      {
        content: [
          { type: 'text', text: 'Refunding one cent; this needs approval.' },
          { type: 'tool_use', name: TOOL, input: { ...REFUND } },
        ],
        stop_reason: 'tool_use',
      },
      {
        content: [{ type: 'text', text: 'Refunded.' }],
        stop_reason: 'end_turn',
        expect: { tool_results: [{ is_error: false, contains: '"status":"succeeded"' }] },
      },
    ],
  };
}

/** Runs `fn` over `items` with at most `limit` calls in flight. */
async function pool<T>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const gc = (globalThis as { gc?: () => void }).gc;

/** Memory and CPU of this process (the worker's) and of the dev server at one point in time. */
interface Snapshot {
  rssMB: number;
  /** Main-thread V8 heap only: workflows run in the SDK's workflow worker thread, which this does not see. */
  heapUsedMB: number;
  cachedWorkflows: number;
  /** This process's CPU (user + system) over an idle window, in ms per second of wall time. */
  idleCpuMsPerS: number;
  /** The dev server's RSS and idle CPU, when its process can be read from /proc. */
  serverRssMB: number | undefined;
  serverIdleCpuMsPerS: number | undefined;
}

/** RSS (MB) and cumulative CPU time (ms) of another process, from /proc; undefined off Linux. */
function procStats(pid: number | undefined): { rssMB: number; cpuMs: number } | undefined {
  if (pid === undefined) return undefined;
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const rssKB = Number(/^VmRSS:\s+(\d+)\s+kB/m.exec(status)?.[1]);
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15, in clock ticks (100/s).
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11]) + Number(fields[12]);
    if (!Number.isFinite(rssKB) || !Number.isFinite(ticks)) return undefined;
    return { rssMB: rssKB / 1024, cpuMs: ticks * 10 };
  } catch {
    return undefined;
  }
}

/** Collects garbage (when exposed), lets things settle, then samples memory and an idle CPU window. */
async function snapshot(stack: BenchStack): Promise<Snapshot> {
  gc?.();
  await sleep(SETTLE_MS);
  gc?.();
  const mem = process.memoryUsage();
  const cachedWorkflows = stack.keelWorker.worker.getStatus().numCachedWorkflows;
  const server0 = procStats(stack.server.pid);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await sleep(IDLE_WINDOW_MS);
  const cpu = process.cpuUsage(cpu0);
  const wallS = (performance.now() - t0) / 1000;
  const server1 = procStats(stack.server.pid);
  return {
    rssMB: round(mem.rss / MB, 1),
    heapUsedMB: round(mem.heapUsed / MB, 1),
    cachedWorkflows,
    idleCpuMsPerS: round((cpu.user + cpu.system) / 1000 / wallS, 1),
    serverRssMB: server0 ? round(server0.rssMB, 1) : undefined,
    serverIdleCpuMsPerS: server0 && server1 ? round((server1.cpuMs - server0.cpuMs) / wallS, 1) : undefined,
  };
}

/** performance.now() when the worker began executing each session's first issue_refund attempt, by workflow ID. */
const toolStartedAt = new Map<string, number>();
/** Records the tool start on the worker side, before the tool's own code runs. */
const toolStartRecorder: ActivityInterceptorsFactory = (ctx) => ({
  inbound: {
    execute(input, next) {
      const { activityType, workflowExecution, attempt } = ctx.info;
      if (activityType === TOOL && attempt === 1 && workflowExecution) toolStartedAt.set(workflowExecution.workflowId, performance.now());
      return next(input);
    },
  },
});

const decision: ApprovalDecision = { requestId: REQUEST_ID, decision: 'approve', approver: APPROVER, reason: 'benchmark' };

/** Sends the approval one way; resolves when the client call returns. */
async function approve(client: KeelClient, sessionId: string, via: Via): Promise<void> {
  if (via === 'update') {
    const outcome = await client.decide(sessionId, decision);
    if (!outcome.accepted) throw new Error(`approval of ${sessionId} refused: ${outcome.code} ${outcome.reason}`);
  } else {
    await client.session(sessionId).signal(approvalSignal, decision);
  }
}

/** Throws unless the session refunded once and answered. */
function checkResult(sessionId: string, r: SessionResult): string {
  const call = r.toolCalls[0];
  if (r.stopReason !== 'end_turn' || r.toolCalls.length !== 1 || call?.outcome !== 'ok' || !call.idempotencyKey) {
    throw new Error(`session ${sessionId} ended ${r.stopReason} with tool calls ${JSON.stringify(r.toolCalls)}`);
  }
  return call.idempotencyKey;
}

/** One sampled approval: times in ms after the wall-clock instant just before the decision was sent. */
interface Sample {
  via: Via;
  sessionId: string;
  /** The client call returned (update: the workflow accepted and completed the update; signal: the server stored it). */
  callReturnedMs: number;
  /** The decision's history event (WorkflowExecutionUpdateAccepted / WorkflowExecutionSignaled). */
  decisionRecordedMs: number;
  /** ActivityTaskScheduled of issue_refund: the workflow task that applied the decision completed. */
  toolScheduledMs: number;
  /** ActivityTaskStarted of issue_refund (server time): the server handed the activity task to the worker. */
  activityStartedMs: number;
  /** The worker began executing the issue_refund activity (an inbound activity interceptor, this process's clock). THE tool start. */
  toolStartedMs: number;
  /** The demo ledger's refund row was written (created_at, ms resolution): the side effect happened. */
  refundWrittenMs: number;
  idempotencyKey: string;
  t0: number;
}

/** Times of the decision and the tool activity from one finished session's history. */
function historyTimes(events: HistoryEvent[], via: Via): { decision: number; scheduled: number; started: number } {
  const decisionEvent = events.find((e) =>
    via === 'update' ? e.workflowExecutionUpdateAcceptedEventAttributes : e.workflowExecutionSignaledEventAttributes?.signalName === 'approval',
  );
  const scheduled = events.find((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === TOOL);
  const started = scheduled && events.find((e) => String(e.activityTaskStartedEventAttributes?.scheduledEventId ?? '') === String(scheduled.eventId));
  if (!decisionEvent || !scheduled || !started) throw new Error(`history lacks the ${via} decision or the ${TOOL} activity's scheduled/started events`);
  return { decision: eventTimeMs(decisionEvent.eventTime), scheduled: eventTimeMs(scheduled.eventTime), started: eventTimeMs(started.eventTime) };
}

interface LatencyRow {
  via: Via;
  samples: number;
  callReturned: { p50: number; p95: number };
  decisionRecorded: { p50: number; p95: number };
  toolScheduled: { p50: number; p95: number };
  activityStarted: { p50: number; p95: number };
  toolStarted: { p50: number; p95: number };
  refundWritten: { p50: number; p95: number };
}

function latencyRow(via: Via, samples: Sample[]): LatencyRow {
  const mine = samples.filter((s) => s.via === via);
  const pp = (pick: (s: Sample) => number): { p50: number; p95: number } => {
    const xs = mine.map(pick);
    return { p50: round(percentile(xs, 50), 1), p95: round(percentile(xs, 95), 1) };
  };
  return {
    via,
    samples: mine.length,
    callReturned: pp((s) => s.callReturnedMs),
    decisionRecorded: pp((s) => s.decisionRecordedMs),
    toolScheduled: pp((s) => s.toolScheduledMs),
    activityStarted: pp((s) => s.activityStartedMs),
    toolStarted: pp((s) => s.toolStartedMs),
    refundWritten: pp((s) => s.refundWrittenMs),
  };
}

interface Report {
  machine: MachineFacts;
  params: { sessions: number; samplesPerPath: number; concurrency: number; warmupSessions: number; maxCachedWorkflows: number; maxCachedWorkflowsSetBy: string; gcExposed: boolean };
  memory: {
    before: Snapshot;
    parked: Snapshot;
    drained: Snapshot;
    deltaMB: number;
    deltaPerSessionKB: number;
  };
  parkSeconds: number;
  latencyMs: LatencyRow[];
  drainSeconds: number;
  refundsInLedger: number;
}

const f1 = (x: number | undefined): string => (x === undefined ? 'n/a' : x.toFixed(1));

function render(r: Report): string {
  const { before, parked, drained } = r.memory;
  const memTable = renderTable(
    ['sessions parked', 'RSS before MB', 'RSS after MB', 'delta MB', 'delta per session KB', 'cached workflows'],
    [[String(r.params.sessions), f1(before.rssMB), f1(parked.rssMB), f1(r.memory.deltaMB), f1(r.memory.deltaPerSessionKB), `${before.cachedWorkflows} → ${parked.cachedWorkflows}`]],
  );
  const pair = (x: { p50: number; p95: number }): string => `${x.p50.toFixed(1)} / ${x.p95.toFixed(1)}`;
  const latTable = renderTable(
    ['decision via', 'samples', 'call returned', 'decision in history', 'activity scheduled', 'activity started', 'tool started', 'refund written'],
    r.latencyMs.map((l) => [
      l.via,
      String(l.samples),
      pair(l.callReturned),
      pair(l.decisionRecorded),
      pair(l.toolScheduled),
      pair(l.activityStarted),
      pair(l.toolStarted),
      pair(l.refundWritten),
    ]),
  );
  const main = r.latencyMs.map((l) => `${l.via} p50 ${l.toolStarted.p50.toFixed(1)} ms, p95 ${l.toolStarted.p95.toFixed(1)} ms`).join('; ');
  return [
    `Keel approvals benchmark: ${r.params.sessions} sessions parked on an ${TOOL} approval, ${r.params.samplesPerPath} approvals sampled per decision path`,
    `${machineLine(r.machine)}; gc ${r.params.gcExposed ? 'exposed' : 'NOT exposed (run with --expose-gc)'}`,
    `worker: maxCachedWorkflows ${r.params.maxCachedWorkflows} (${r.params.maxCachedWorkflowsSetBy}); parking took ${r.parkSeconds.toFixed(1)} s at concurrency ${r.params.concurrency}`,
    '',
    'Worker process (this process: worker + client + scripted model + demo services), after gc and 2 s settle:',
    memTable,
    '',
    `                     before      parked      all approved and done`,
    `RSS MB           ${f1(before.rssMB).padStart(10)}  ${f1(parked.rssMB).padStart(10)}  ${f1(drained.rssMB).padStart(10)}`,
    `cached workflows ${String(before.cachedWorkflows).padStart(10)}  ${String(parked.cachedWorkflows).padStart(10)}  ${String(drained.cachedWorkflows).padStart(10)}`,
    `main heap MB     ${f1(before.heapUsedMB).padStart(10)}  ${f1(parked.heapUsedMB).padStart(10)}  ${f1(drained.heapUsedMB).padStart(10)}   (main thread only; workflows live in the SDK's workflow thread)`,
    `idle CPU ms/s    ${f1(before.idleCpuMsPerS).padStart(10)}  ${f1(parked.idleCpuMsPerS).padStart(10)}  ${f1(drained.idleCpuMsPerS).padStart(10)}   (over ${IDLE_WINDOW_MS / 1000} s with nothing to do)`,
    `dev server RSS MB${f1(before.serverRssMB).padStart(10)}  ${f1(parked.serverRssMB).padStart(10)}  ${f1(drained.serverRssMB).padStart(10)}   (separate process; where parked sessions actually live)`,
    `dev server CPU   ${f1(before.serverIdleCpuMsPerS).padStart(10)}  ${f1(parked.serverIdleCpuMsPerS).padStart(10)}  ${f1(drained.serverIdleCpuMsPerS).padStart(10)}   (ms/s, same window)`,
    '',
    'Approval → tool, ms after the decision was sent (p50 / p95), sequential, one session at a time:',
    latTable,
    '',
    `approval → tool start: ${main}`,
    `  tool start = the worker began executing the ${TOOL} activity (inbound activity interceptor), measured on this process's clock from just before the decision was sent.`,
    'call returned: update = the update completed (the workflow accepted it and ran the handler); signal = the server stored the signal.',
    `decision in history / activity scheduled / activity started: server event times (WorkflowExecutionUpdateAccepted or WorkflowExecutionSignaled; ActivityTaskScheduled, ActivityTaskStarted of ${TOOL}).`,
    `refund written: the demo ledger row's created_at (ms resolution): the tool's HTTP call reached the downstream.`,
    `drain: approving the other ${r.params.sessions - 2 * r.params.samplesPerPath} sessions and waiting for all took ${r.drainSeconds.toFixed(1)} s; ${r.refundsInLedger} refunds in the ledger (${r.params.sessions} + ${r.params.warmupSessions} warm-up), each key once.`,
    'Timings and RSS on this shared machine are noisy; compare within one run, not across runs or machines.',
  ].join('\n');
}

async function main(): Promise<void> {
  const args = parseCli();
  const { sessions, samples, concurrency } = args;
  const scenario = approvalScenario();
  const model = `scripted/${scenario.name}`;
  const machine = machineFacts();
  if (!gc) progress('global.gc is not exposed: memory is read without forcing a collection (run with `npx tsx --expose-gc`)');

  let stack: BenchStack | undefined;
  try {
    stack = await startBenchStack({
      scenarios: [scenario],
      taskQueuePrefix: 'bench-approvals',
      worker: {
        interceptors: { activity: [toolStartRecorder] },
        ...(args.maxCached !== undefined ? { maxCachedWorkflows: args.maxCached } : {}),
      },
    });
    const s = stack;
    const { client } = s;
    const effectiveMaxCached = s.keelWorker.worker.options.maxCachedWorkflows;
    const runId = Date.now().toString(36);
    const ids = Array.from({ length: sessions }, (_, i) => `bench-approval-${runId}-${String(i).padStart(5, '0')}`);
    const start = (sessionId: string): Promise<unknown> =>
      client.startSession({ sessionId, prompt: PROMPT, user: USER, model, tools: [TOOL], maxIterations: 2, maxTokens: 256 });
    /** Polls the pendingApprovals query until each session has its request pending. */
    const waitParked = async (list: readonly string[]): Promise<void> => {
      let waiting = [...list];
      const deadline = Date.now() + PARK_TIMEOUT_MS;
      while (waiting.length > 0) {
        const still: string[] = [];
        await pool(waiting, concurrency, async (id) => {
          const pending = await client.pendingApprovals(id).catch(() => []);
          if (!pending.some((p) => p.requestId === REQUEST_ID)) still.push(id);
        });
        if (still.length > 0) {
          if (Date.now() > deadline) throw new Error(`${still.length} sessions never parked (e.g. ${still[0]})`);
          await sleep(250);
        }
        waiting = still;
      }
    };

    let before: Snapshot | undefined;
    let parked: Snapshot | undefined;
    let drained: Snapshot | undefined;
    let parkSeconds = 0;
    let drainSeconds = 0;
    const taken: Sample[] = [];

    await s.keelWorker.worker.runUntil(async () => {
      progress(`warm-up: ${WARMUP_SESSIONS} sessions, approved (update, then signal) and finished (not counted)`);
      for (let i = 0; i < WARMUP_SESSIONS; i++) {
        const id = `bench-approval-${runId}-warmup-${i}`;
        await start(id);
        await waitParked([id]);
        await approve(client, id, i % 2 === 0 ? 'update' : 'signal');
        checkResult(id, await client.result(id));
      }
      progress('measuring the warmed-up worker (gc, settle, idle window)');
      before = await snapshot(s);

      progress(`parking ${sessions} sessions (${concurrency} starts at a time)`);
      const parkStart = performance.now();
      let started = 0;
      await pool(ids, concurrency, async (id) => {
        await start(id);
        if (++started % 200 === 0) progress(`started ${started}/${sessions}`);
      });
      await waitParked(ids);
      parkSeconds = (performance.now() - parkStart) / 1000;
      progress(`all ${sessions} parked after ${parkSeconds.toFixed(1)} s; measuring`);
      parked = await snapshot(s);

      // K per path, spread evenly over the parked sessions, alternating update and signal.
      const step = Math.floor(sessions / (2 * samples));
      const sampled = Array.from({ length: 2 * samples }, (_, i) => ids[i * step]!);
      progress(`sampling ${samples} approvals per path (update, signal alternating), sequentially`);
      for (const [i, id] of sampled.entries()) {
        const via: Via = i % 2 === 0 ? 'update' : 'signal';
        const t0 = Date.now();
        const p0 = performance.now();
        await approve(client, id, via);
        const callReturnedMs = performance.now() - p0;
        const key = checkResult(id, await client.result(id));
        const h = historyTimes((await client.session(id).fetchHistory()).events ?? [], via);
        const toolAt = toolStartedAt.get(id);
        if (toolAt === undefined) throw new Error(`the worker never recorded ${TOOL} starting for ${id}`);
        taken.push({
          via,
          sessionId: id,
          callReturnedMs,
          decisionRecordedMs: h.decision - t0,
          toolScheduledMs: h.scheduled - t0,
          activityStartedMs: h.started - t0,
          toolStartedMs: toolAt - p0,
          refundWrittenMs: Number.NaN,
          idempotencyKey: key,
          t0,
        });
      }

      const sampledSet = new Set(sampled);
      const rest = ids.filter((id) => !sampledSet.has(id));
      progress(`approving the other ${rest.length} sessions and waiting for them`);
      const drainStart = performance.now();
      let done = 0;
      await pool(rest, concurrency, async (id) => {
        await approve(client, id, 'update');
        checkResult(id, await client.result(id));
        if (++done % 200 === 0) progress(`finished ${done}/${rest.length}`);
      });
      drainSeconds = (performance.now() - drainStart) / 1000;
      progress('measuring after the drain');
      drained = await snapshot(s);
    });

    // The refund rows: one per session, each key once; created_at gives the write time of the sampled ones.
    const ledger = await demoClient(s.demo.url).ledger();
    const byKey = new Map<string, number>();
    for (const r of ledger.refunds) {
      if (!r.idempotency_key) throw new Error(`refund ${r.id} without an idempotency key`);
      if (byKey.has(r.idempotency_key)) throw new Error(`refund key ${r.idempotency_key} written twice`);
      byKey.set(r.idempotency_key, Date.parse(r.created_at));
    }
    if (ledger.refunds.length !== sessions + WARMUP_SESSIONS) {
      throw new Error(`${ledger.refunds.length} refunds in the ledger, expected ${sessions + WARMUP_SESSIONS}`);
    }
    for (const t of taken) {
      const at = byKey.get(t.idempotencyKey);
      if (at === undefined) throw new Error(`no refund row for sampled session ${t.sessionId}`);
      t.refundWrittenMs = at - t.t0;
    }

    const b = before!;
    const p = parked!;
    const deltaMB = p.rssMB - b.rssMB;
    const report: Report = {
      machine,
      params: {
        sessions,
        samplesPerPath: samples,
        concurrency,
        warmupSessions: WARMUP_SESSIONS,
        maxCachedWorkflows: effectiveMaxCached,
        maxCachedWorkflowsSetBy: args.maxCached !== undefined ? '--max-cached' : 'SDK default from the V8 heap limit',
        gcExposed: gc !== undefined,
      },
      memory: { before: b, parked: p, drained: drained!, deltaMB: round(deltaMB, 1), deltaPerSessionKB: round((deltaMB * 1024) / sessions, 1) },
      parkSeconds: round(parkSeconds, 1),
      latencyMs: [latencyRow('update', taken), latencyRow('signal', taken)],
      drainSeconds: round(drainSeconds, 1),
      refundsInLedger: ledger.refunds.length,
    };
    process.stdout.write(args.json ? `${JSON.stringify(report, null, 2)}\n` : `${render(report)}\n`);
  } finally {
    await stack?.close();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench/approvals failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
