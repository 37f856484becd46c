/**
 * Approvals benchmark: what does a session parked on an approval cost the worker, and how fast does it
 * resume once a person decides? Starts a dev server, the scripted model and the demo services in this
 * process, and ONE Keel worker: by default (`--worker-process`) in a child process of its own
 * (`bench/approvals/worker.ts`, on the workflow bundle made here), so that its memory is the worker's
 * alone; with `--in-process`, in this process as before (its RSS then includes the client, the scripted
 * model and the demo services). Then:
 *
 * 1. warms up (two sessions approved and finished, one per decision path) and measures the worker
 *    process's RSS and idle CPU;
 * 2. parks N sessions: each one's first model turn asks for `issue_refund` (irreversible, so it always
 *    needs approval) and the workflow waits; once the visibility store lists every session with its
 *    `KeelPendingApproval` flag set, measures RSS, idle CPU and the worker's sticky-cache size again;
 * 3. for K sampled sessions per decision path (the `decideApproval` update via `KeelClient.decide`, and the
 *    `approval` signal), sequentially: approves, waits for the session to finish and reads from its history
 *    when the `issue_refund` activity was scheduled and started, from the worker when it began executing
 *    it, and from the demo ledger when the refund row was written; all against the time just before the
 *    decision was sent;
 * 4. approves the rest, waits for them all, measures again, checks every refund landed exactly once, and
 *    cleans up. The report ends with a verdict on the performance target (worker RSS with N parked
 *    ≤ 300 MB, approval → tool start p95 ≤ 100 ms).
 *
 * Human progress goes to stderr; the tables (or, with `--json`, one JSON document) to stdout. Run:
 * `npx tsx --expose-gc bench/approvals/run.ts [--sessions N] [--samples K] [--concurrency C] [--max-cached M] [--worker-heap-mb H] [--in-process] [--no-share-libraries] [--json]`.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import v8 from 'node:v8';
import { fileURLToPath } from 'node:url';
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
  ROOT,
  round,
  startBenchStack,
  SUPPORT_TOOLS,
  type BenchStack,
  type HistoryEvent,
  type MachineFacts,
  parseBenchArgs,
} from '../support.js';
import { nowMs, RECORDED_TOOL, toolStartRecorder } from './tool-start.js';
import type { StartupRss, WorkerMessage, WorkerRequest, WorkerStats } from './worker.js';

const TOOL = RECORDED_TOOL;
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
/** How long to let the worker settle (after gc) before reading memory, and the idle-CPU window. */
const SETTLE_MS = 2000;
const IDLE_WINDOW_MS = 5000;
/** Give up waiting for sessions to park after this long. */
const PARK_TIMEOUT_MS = 30 * 60_000;
/** Give up on the worker process reporting ready, and on it exiting after being told to, after these. */
const WORKER_READY_TIMEOUT_MS = 180_000;
const WORKER_EXIT_TIMEOUT_MS = 30_000;
/** The worker process's entry point. */
const WORKER_SCRIPT = fileURLToPath(new URL('./worker.ts', import.meta.url));
/** The performance target: with the sessions parked, the worker's RSS and the approval → tool start p95. */
const TARGET = { sessions: 10_000, rssMB: 300, p95Ms: 100 } as const;

type Via = 'update' | 'signal';
type Mode = 'process' | 'in-process';

interface Args {
  sessions: number;
  samples: number;
  concurrency: number;
  maxCached: number | undefined;
  /** Process mode: `--max-old-space-size` of the worker process. */
  workerHeapMB: number | undefined;
  mode: Mode;
  /** `--no-share-libraries`: every workflow evaluates zod itself (`bundleApp({ shareLibraries: false })`). */
  shareLibraries: boolean;
  json: boolean;
}

const MODE_FLAGS: Record<string, Mode> = { '--worker-process': 'process', '--in-process': 'in-process' };

function parseCli(): Args {
  // The two mode flags are taken out before the shared parser (whole-number and string options only) sees the rest.
  const modes = process.argv.slice(2).filter((a) => a in MODE_FLAGS);
  const shareLibraries = !process.argv.slice(2).includes('--no-share-libraries');
  process.argv = process.argv.filter((a, i) => i < 2 || !(a in MODE_FLAGS || a === '--no-share-libraries'));
  const a = parseBenchArgs(
    'bench/approvals',
    'npx tsx --expose-gc bench/approvals/run.ts [--sessions N (1000)] [--samples K (50)] [--concurrency C (50)] [--max-cached M] [--worker-heap-mb H] [--worker-process (default) | --in-process] [--no-share-libraries] [--json]',
    {
      sessions: { def: 1000, min: 2, max: REFUNDABLE_CENTS - WARMUP_SESSIONS },
      samples: { def: 50, min: 1, max: 5000 },
      concurrency: { def: 50, min: 1, max: 500 },
      'max-cached': { def: Number.NaN, min: 0, max: 100_000 },
      'worker-heap-mb': { def: Number.NaN, min: 64, max: 65_536 },
    },
  );
  const mode: Mode = modes.length > 0 ? MODE_FLAGS[modes[0]!]! : 'process';
  const workerHeapMB = Number.isNaN(a['worker-heap-mb']) ? undefined : a['worker-heap-mb'];
  if (workerHeapMB !== undefined && mode === 'in-process') a.usage('--worker-heap-mb applies to the worker process, not to --in-process');
  if (new Set(modes.map((m) => MODE_FLAGS[m])).size > 1) a.usage('--worker-process and --in-process exclude each other');
  if (2 * a.samples > a.sessions) a.usage(`--samples ${a.samples} needs at least ${2 * a.samples} parked sessions (K per decision path), got --sessions ${a.sessions}`);
  return {
    sessions: a.sessions,
    samples: a.samples,
    concurrency: a.concurrency,
    maxCached: Number.isNaN(a['max-cached']) ? undefined : a['max-cached'],
    workerHeapMB,
    mode,
    shareLibraries,
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

/** RSS, peak RSS (MB) and cumulative CPU time (ms) of a process, from /proc; undefined off Linux. */
function procStats(pid: number | undefined): { rssMB: number; peakRssMB: number | undefined; cpuMs: number } | undefined {
  if (pid === undefined) return undefined;
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const rssKB = Number(/^VmRSS:\s+(\d+)\s+kB/m.exec(status)?.[1]);
    const peakKB = Number(/^VmHWM:\s+(\d+)\s+kB/m.exec(status)?.[1]);
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15, in clock ticks (100/s).
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11]) + Number(fields[12]);
    if (!Number.isFinite(rssKB) || !Number.isFinite(ticks)) return undefined;
    return { rssMB: rssKB / 1024, peakRssMB: Number.isFinite(peakKB) ? peakKB / 1024 : undefined, cpuMs: ticks * 10 };
  } catch {
    return undefined;
  }
}

/** The one Keel worker the benchmark runs against, in this process or in a child process. */
interface WorkerSide {
  mode: Mode;
  pid: number;
  maxCachedWorkflows: number;
  /** The V8 heap limit where the worker runs (MB; the SDK's default maxCachedWorkflows derives from it). */
  heapLimitMB: number;
  /** Whether `global.gc()` is available where the worker runs. */
  gcExposed: boolean;
  /** Process mode: the child's clock minus this process's (ms), measured over the IPC channel, and that round trip's length. */
  clock: { offsetMs: number; rttMs: number } | undefined;
  /** Process mode: the worker process's RSS along its start-up. */
  startupRss: StartupRss | undefined;
  /** The worker process's own figures, after `global.gc()`, `settleMs` and another collection when `settleMs` > 0. */
  stats(settleMs: number): Promise<WorkerStats>;
  /** When the worker began executing the session's first issue_refund attempt (epoch ms, sub-ms), if it did. */
  toolStartedAt(workflowId: string): Promise<number | undefined>;
  /** Runs `fn` while the worker polls; fails at once if the worker process dies. */
  run<T>(fn: () => Promise<T>): Promise<T>;
  /** Stops the worker process (in-process: nothing; the stack closes its worker). */
  close(): Promise<void>;
}

/** In-process mode: when the worker began executing each session's first issue_refund attempt, by workflow ID. */
const toolStartedAt = new Map<string, number>();

/** This process's figures, shaped as the worker process reports its own. */
async function ownStats(settleMs: number, numCachedWorkflows: () => number): Promise<WorkerStats> {
  if (settleMs > 0) {
    gc?.();
    await sleep(settleMs);
    gc?.();
  }
  const mem = process.memoryUsage();
  const peak = procStats(process.pid)?.peakRssMB;
  return {
    rss: mem.rss,
    peakRss: peak === undefined ? undefined : peak * MB,
    heapUsed: mem.heapUsed,
    external: mem.external,
    arrayBuffers: mem.arrayBuffers,
    numCachedWorkflows: numCachedWorkflows(),
    cpu: process.cpuUsage(),
    at: nowMs(),
  };
}

/** `--in-process`: the stack's worker, run in this process with the tool-start interceptor. */
function inProcessWorker(s: BenchStack): WorkerSide {
  const { worker } = s.keelWorker;
  return {
    mode: 'in-process',
    pid: process.pid,
    maxCachedWorkflows: worker.options.maxCachedWorkflows,
    heapLimitMB: v8.getHeapStatistics().heap_size_limit / MB,
    gcExposed: gc !== undefined,
    clock: undefined,
    startupRss: undefined,
    stats: (settleMs) => ownStats(settleMs, () => worker.getStatus().numCachedWorkflows),
    toolStartedAt: (id) => Promise.resolve(toolStartedAt.get(id)),
    run: (fn) => worker.runUntil(fn),
    close: () => Promise.resolve(),
  };
}

/** A request to the worker process, without its ID. */
type RequestBody = { [K in WorkerRequest['op']]: Omit<Extract<WorkerRequest, { op: K }>, 'id'> }[WorkerRequest['op']];

/**
 * `--worker-process` (the default): writes the workflow bundle the stack made to a file, closes the
 * stack's in-process worker before any session exists (it is never run with work; the SDK releases the
 * connection only once `run()` has ended, so closing it starts and stops its pollers on an empty task
 * queue), then starts `worker.ts` with the stack's configuration and waits until it polls.
 */
async function startWorkerProcess(s: BenchStack, maxCached: number | undefined, heapMB: number | undefined): Promise<WorkerSide> {
  const bundle = s.keelWorker.worker.options.workflowBundle;
  if (!bundle || !('code' in bundle)) throw new Error("the stack's worker holds no workflow bundle code to hand to the worker process");
  const bundlePath = path.join(s.tmp, 'workflow-bundle.js');
  await writeFile(bundlePath, bundle.code);

  // Closed once here; the stack's own close() later finds it closed.
  const kw = s.keelWorker;
  const closeInProcess = kw.close.bind(kw);
  let inProcessClosed: Promise<void> | undefined;
  kw.close = () => (inProcessClosed ??= closeInProcess());
  await kw.close();

  const logFile = path.join(s.tmp, 'worker-process.log');
  const env: Record<string, string> = {
    TEMPORAL_ADDRESS: s.config.TEMPORAL_ADDRESS,
    KEEL_TASK_QUEUE: s.config.KEEL_TASK_QUEUE,
    ANTHROPIC_BASE_URL: s.model.url,
    KEEL_DEMO_URL: s.demo.url,
    KEEL_DATA_DIR: s.tmp,
    KEEL_LOG_LEVEL: 'warn',
    KEEL_LOG_FILE: logFile,
  };
  const argv = ['--import', 'tsx', '--expose-gc', ...(heapMB !== undefined ? [`--max-old-space-size=${heapMB}`] : []), WORKER_SCRIPT, '--tools', SUPPORT_TOOLS, '--bundle', bundlePath];
  if (maxCached !== undefined) argv.push('--max-cached', String(maxCached));
  const shown = (x: string): string => (x.startsWith(ROOT) ? path.relative(ROOT, x) : x);
  progress(`starting the worker process: node ${argv.map(shown).join(' ')} (log: ${logFile})`);
  const child = spawn(process.execPath, argv, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });

  // Its output goes to stderr, never stdout (which holds the report); the last lines explain an early exit.
  const tail: string[] = [];
  const forward = (chunk: Buffer): void => {
    for (const line of chunk.toString().split('\n').filter(Boolean)) {
      progress(`worker process: ${line}`);
      tail.push(line);
      if (tail.length > 20) tail.shift();
    }
  };
  child.stdout!.on('data', forward);
  child.stderr!.on('data', forward);

  const pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  let exitError: Error | undefined;
  let onReady: ((m: Extract<WorkerMessage, { type: 'ready' }>) => void) | undefined;
  const exited = new Promise<never>((_, reject) => {
    child.once('exit', (code, signal) => {
      exitError = new Error(`the worker process exited (${signal ?? `code ${code}`})${tail.length ? `; its last output:\n${tail.join('\n')}` : ''}`);
      for (const p of pending.values()) p.reject(exitError);
      pending.clear();
      reject(exitError);
    });
  });
  exited.catch(() => undefined);
  child.on('message', (m: WorkerMessage) => {
    if (m.type === 'ready') onReady?.(m);
    else if (m.type === 'failed') tail.push(m.error);
    else {
      const p = pending.get(m.id);
      pending.delete(m.id);
      if (m.ok) p?.resolve(m.value);
      else p?.reject(new Error(`worker process: ${m.error}`));
    }
  });
  let seq = 0;
  const request = <T>(body: RequestBody): Promise<T> => {
    if (exitError) return Promise.reject(exitError);
    const id = ++seq;
    return new Promise<T>((resolve, reject) => {
      pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      child.send({ ...body, id } as WorkerRequest);
    });
  };
  const close = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const gone = exited.catch(() => undefined);
    await request({ op: 'shutdown' }).catch(() => undefined);
    const timer = setTimeout(() => {
      progress(`the worker process did not exit within ${WORKER_EXIT_TIMEOUT_MS / 1000} s of shutdown: killing it`);
      child.kill('SIGKILL');
    }, WORKER_EXIT_TIMEOUT_MS);
    await gone;
    clearTimeout(timer);
  };

  try {
    let timer: NodeJS.Timeout | undefined;
    const ready = await Promise.race([
      new Promise<Extract<WorkerMessage, { type: 'ready' }>>((resolve) => (onReady = resolve)),
      exited,
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`the worker process was not ready after ${WORKER_READY_TIMEOUT_MS / 1000} s`)), WORKER_READY_TIMEOUT_MS))),
    ]).finally(() => clearTimeout(timer));
    // The clocks: the round trip with the shortest time bounds the offset by half of it.
    let clock: { offsetMs: number; rttMs: number } | undefined;
    for (let i = 0; i < 20; i++) {
      const a = nowMs();
      const b = await request<number>({ op: 'clock' });
      const c = nowMs();
      if (!clock || c - a < clock.rttMs) clock = { offsetMs: b - (a + c) / 2, rttMs: c - a };
    }
    progress(`worker process ${ready.pid} ready (maxCachedWorkflows ${ready.maxCachedWorkflows}); clock offset ${clock!.offsetMs.toFixed(3)} ms (IPC round trip ${clock!.rttMs.toFixed(3)} ms)`);
    return {
      mode: 'process',
      pid: ready.pid,
      maxCachedWorkflows: ready.maxCachedWorkflows,
      heapLimitMB: ready.heapLimit / MB,
      gcExposed: ready.gcExposed,
      clock,
      startupRss: ready.startupRss,
      stats: (settleMs) => request<WorkerStats>({ op: 'stats', settleMs }),
      toolStartedAt: async (workflowId) => (await request<number | null>({ op: 'toolStart', workflowId })) ?? undefined,
      run: (fn) => Promise.race([fn(), exited]),
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}

/** Memory and CPU of the worker process and of the dev server at one point in time. */
interface Snapshot {
  rssMB: number;
  /** The worker process's peak RSS so far (VmHWM), when /proc is readable. */
  peakRssMB: number | undefined;
  /** Main-thread V8 heap only: workflows run in the SDK's workflow worker thread, which this does not see. */
  heapUsedMB: number;
  externalMB: number;
  cachedWorkflows: number;
  /** The worker process's CPU (user + system, all threads) over an idle window, in ms per second of wall time. */
  idleCpuMsPerS: number;
  /** Process mode: this process's RSS (client, scripted model, demo services), after its own gc. */
  benchRssMB: number | undefined;
  /** The dev server's RSS and idle CPU, when its process can be read from /proc. */
  serverRssMB: number | undefined;
  serverIdleCpuMsPerS: number | undefined;
}

/** Collects garbage in the worker (when exposed), lets it settle, samples memory, then an idle CPU window. */
async function snapshot(stack: BenchStack, worker: WorkerSide): Promise<Snapshot> {
  if (worker.mode === 'process') gc?.();
  const m0 = await worker.stats(SETTLE_MS);
  const benchRss = worker.mode === 'process' ? process.memoryUsage().rss : undefined;
  const server0 = procStats(stack.server.pid);
  await sleep(IDLE_WINDOW_MS);
  const m1 = await worker.stats(0);
  const server1 = procStats(stack.server.pid);
  const wallS = (m1.at - m0.at) / 1000;
  const cpuMs = (m1.cpu.user + m1.cpu.system - m0.cpu.user - m0.cpu.system) / 1000;
  return {
    rssMB: round(m0.rss / MB, 1),
    peakRssMB: m0.peakRss === undefined ? undefined : round(m0.peakRss / MB, 1),
    heapUsedMB: round(m0.heapUsed / MB, 1),
    externalMB: round(m0.external / MB, 1),
    cachedWorkflows: m0.numCachedWorkflows,
    idleCpuMsPerS: round(cpuMs / wallS, 1),
    benchRssMB: benchRss === undefined ? undefined : round(benchRss / MB, 1),
    serverRssMB: server0 ? round(server0.rssMB, 1) : undefined,
    serverIdleCpuMsPerS: server0 && server1 ? round((server1.cpuMs - server0.cpuMs) / wallS, 1) : undefined,
  };
}

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

/** One sampled approval: times in ms after the instant just before the decision was sent (epoch ms, sub-ms: `performance.timeOrigin + performance.now()`). */
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
  /** The worker began executing the issue_refund activity (an inbound activity interceptor, the worker process's clock). THE tool start. */
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

/** The performance target's two parts, judged on this run. */
interface Verdict {
  rssParkedMB: number;
  rssMet: boolean;
  p95Ms: Record<Via, number>;
  p95Met: boolean;
  met: boolean;
}

interface Report {
  machine: MachineFacts;
  params: {
    sessions: number;
    samplesPerPath: number;
    concurrency: number;
    warmupSessions: number;
    maxCachedWorkflows: number;
    maxCachedWorkflowsSetBy: string;
    /** V8 heap limit of the worker process (MB); `--worker-heap-mb` sets it. */
    workerHeapLimitMB: number;
    workerHeapLimitSetBy: string;
    /** Whether the bundle shares zod across a thread's workflows (`--no-share-libraries` turns it off). */
    shareLibraries: boolean;
    gcExposed: boolean;
  };
  worker: {
    mode: Mode;
    pid: number;
    clockOffsetMs: number | undefined;
    clockRttMs: number | undefined;
    /** MB; process mode only. */
    startupRssMB: { started: number; imported: number; created: number; running: number } | undefined;
  };
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
  target: { sessions: number; rssMB: number; p95Ms: number; verdict: Verdict };
}

const f1 = (x: number | undefined): string => (x === undefined ? 'n/a' : x.toFixed(1));

function judge(parked: Snapshot, latency: LatencyRow[]): Verdict {
  const p95Ms = Object.fromEntries(latency.map((l) => [l.via, l.toolStarted.p95])) as Record<Via, number>;
  const rssMet = parked.rssMB <= TARGET.rssMB;
  const p95Met = latency.every((l) => l.toolStarted.p95 <= TARGET.p95Ms);
  return { rssParkedMB: parked.rssMB, rssMet, p95Ms, p95Met, met: rssMet && p95Met };
}

function render(r: Report): string {
  const { before, parked, drained } = r.memory;
  const inProcess = r.worker.mode === 'in-process';
  const memTable = renderTable(
    ['sessions parked', 'max cached', 'RSS before MB', 'RSS parked MB', 'RSS drained MB', 'delta MB', 'delta per session KB', 'cached workflows'],
    [
      [
        String(r.params.sessions),
        String(r.params.maxCachedWorkflows),
        f1(before.rssMB),
        f1(parked.rssMB),
        f1(drained.rssMB),
        f1(r.memory.deltaMB),
        f1(r.memory.deltaPerSessionKB),
        `${before.cachedWorkflows} → ${parked.cachedWorkflows} → ${drained.cachedWorkflows}`,
      ],
    ],
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
  const row = (label: string, pick: (s: Snapshot) => number | undefined, note = ''): string =>
    `${label.padEnd(17)}${f1(pick(before)).padStart(10)}  ${f1(pick(parked)).padStart(10)}  ${f1(pick(drained)).padStart(10)}${note ? `   ${note}` : ''}`;
  const v = r.target.verdict;
  const metWord = (ok: boolean): string => (ok ? 'met' : 'NOT MET');
  const caveats = [
    ...(r.params.sessions < TARGET.sessions ? [`measured with ${r.params.sessions} sessions parked, not the target's ${TARGET.sessions.toLocaleString('en-US')}`] : []),
    ...(inProcess ? ['in-process: the RSS includes the client, scripted model and demo services; run with --worker-process for the worker alone'] : []),
  ];
  return [
    `Keel approvals benchmark: ${r.params.sessions} sessions parked on an ${TOOL} approval, ${r.params.samplesPerPath} approvals sampled per decision path`,
    `${machineLine(r.machine)}; gc ${r.params.gcExposed ? 'exposed' : 'NOT exposed (run with --expose-gc)'}`,
    `worker: ${inProcess ? `in this process (--in-process), pid ${r.worker.pid}` : `its own process (pid ${r.worker.pid}), clock offset ${r.worker.clockOffsetMs?.toFixed(3)} ms ± ${((r.worker.clockRttMs ?? 0) / 2).toFixed(3)} ms`}; maxCachedWorkflows ${r.params.maxCachedWorkflows} (${r.params.maxCachedWorkflowsSetBy}); V8 heap limit ${r.params.workerHeapLimitMB} MB (${r.params.workerHeapLimitSetBy}); zod ${r.params.shareLibraries ? 'shared by the workflow thread' : 'evaluated by every workflow (--no-share-libraries)'}; parking took ${r.parkSeconds.toFixed(1)} s at concurrency ${r.params.concurrency}`,
    '',
    inProcess
      ? 'Worker process (this process: worker + client + scripted model + demo services), after gc and 2 s settle:'
      : 'Worker process (the Keel worker alone, in its own process), after gc and 2 s settle:',
    memTable,
    ...(r.worker.startupRssMB
      ? [
          `worker process start-up RSS MB (after gc): node + tsx ${f1(r.worker.startupRssMB.started)} → Keel's modules imported ${f1(r.worker.startupRssMB.imported)} → createKeelWorker done ${f1(r.worker.startupRssMB.created)} → polling ${f1(r.worker.startupRssMB.running)}`,
        ]
      : []),
    '',
    `                     before      parked      all approved and done`,
    row('RSS MB', (s) => s.rssMB),
    row('peak RSS MB', (s) => s.peakRssMB, '(VmHWM: the most the process has held so far)'),
    `cached workflows ${String(before.cachedWorkflows).padStart(10)}  ${String(parked.cachedWorkflows).padStart(10)}  ${String(drained.cachedWorkflows).padStart(10)}`,
    row('main heap MB', (s) => s.heapUsedMB, "(main thread only; workflows live in the SDK's workflow thread)"),
    row('external MB', (s) => s.externalMB, '(main thread)'),
    row('idle CPU ms/s', (s) => s.idleCpuMsPerS, `(worker process, over ${IDLE_WINDOW_MS / 1000} s with nothing to do)`),
    ...(inProcess ? [] : [row('bench process RSS', (s) => s.benchRssMB, '(MB: client, scripted model, demo services; not the worker)')]),
    row('dev server RSS MB', (s) => s.serverRssMB, '(separate process; where parked sessions actually live)'),
    row('dev server CPU', (s) => s.serverIdleCpuMsPerS, '(ms/s, same window)'),
    '',
    'Approval → tool, ms after the decision was sent (p50 / p95), sequential, one session at a time:',
    latTable,
    '',
    `approval → tool start: ${main}`,
    `  tool start = the worker began executing the ${TOOL} activity (inbound activity interceptor), on the worker process's clock (performance.timeOrigin + performance.now(), same host), from just before the decision was sent.`,
    'call returned: update = the update completed (the workflow accepted it and ran the handler); signal = the server stored the signal.',
    `decision in history / activity scheduled / activity started: server event times (WorkflowExecutionUpdateAccepted or WorkflowExecutionSignaled; ActivityTaskScheduled, ActivityTaskStarted of ${TOOL}).`,
    `refund written: the demo ledger row's created_at (ms resolution): the tool's HTTP call reached the downstream.`,
    `drain: approving the other ${r.params.sessions - 2 * r.params.samplesPerPath} sessions and waiting for all took ${r.drainSeconds.toFixed(1)} s; ${r.refundsInLedger} refunds in the ledger (${r.params.sessions} + ${r.params.warmupSessions} warm-up), each key once.`,
    'Timings and RSS on this shared machine are noisy; compare within one run, not across runs or machines.',
    '',
    `target (${TARGET.sessions.toLocaleString('en-US')} sessions parked: worker RSS ≤ ${TARGET.rssMB} MB with the cache bound; approval → tool start p95 ≤ ${TARGET.p95Ms} ms):`,
    `  worker RSS parked ${v.rssParkedMB.toFixed(1)} MB ≤ ${TARGET.rssMB} MB: ${metWord(v.rssMet)}`,
    `  tool start p95 ${r.latencyMs.map((l) => `${l.via} ${l.toolStarted.p95.toFixed(1)} ms`).join(', ')} ≤ ${TARGET.p95Ms} ms: ${metWord(v.p95Met)}`,
    `verdict: target ${v.met ? 'met' : 'not met'}${caveats.length ? ` (${caveats.join('; ')})` : ''}`,
  ].join('\n');
}

async function main(): Promise<void> {
  const args = parseCli();
  const { sessions, samples, concurrency } = args;
  const scenario = approvalScenario();
  const model = `scripted/${scenario.name}`;
  const machine = machineFacts();
  if (!gc) progress('global.gc is not exposed here: memory is read without forcing a collection (run with `npx tsx --expose-gc`)');

  let stack: BenchStack | undefined;
  let worker: WorkerSide | undefined;
  try {
    stack = await startBenchStack({
      scenarios: [scenario],
      taskQueuePrefix: 'bench-approvals',
      shareLibraries: args.shareLibraries,
      // In process mode this worker is closed unused; worker.ts gets the same options.
      worker:
        args.mode === 'in-process'
          ? { interceptors: { activity: [toolStartRecorder(toolStartedAt)] }, ...(args.maxCached !== undefined ? { maxCachedWorkflows: args.maxCached } : {}) }
          : {},
    });
    const s = stack;
    const { client } = s;
    worker = args.mode === 'process' ? await startWorkerProcess(s, args.maxCached, args.workerHeapMB) : inProcessWorker(s);
    const w = worker;
    const runId = Date.now().toString(36);
    const ids = Array.from({ length: sessions }, (_, i) => `bench-approval-${runId}-${String(i).padStart(5, '0')}`);
    const start = (sessionId: string): Promise<unknown> =>
      client.startSession({ sessionId, prompt: PROMPT, user: USER, model, tools: [TOOL], maxIterations: 2, maxTokens: 256 });
    /** One session: polls its pendingApprovals query until its request is pending. */
    const waitParked = async (id: string): Promise<void> => {
      const deadline = Date.now() + PARK_TIMEOUT_MS;
      while (!(await client.pendingApprovals(id).catch(() => [])).some((p) => p.requestId === REQUEST_ID)) {
        if (Date.now() > deadline) throw new Error(`session ${id} never parked`);
        await sleep(100);
      }
    };
    /**
     * Many sessions: polls the visibility store until it counts them all running with the
     * KeelPendingApproval flag (set by the workflow task that made the request pending), then lists them
     * and checks each ID. Queries would do, but each query of a session evicted from the sticky cache
     * replays it on the worker: with a bounded cache, every poll round would replay nearly all N.
     */
    const parkedQuery = `KeelPendingApproval = true AND ExecutionStatus = 'Running' AND TaskQueue = '${s.config.KEEL_TASK_QUEUE}'`;
    const waitAllParked = async (list: readonly string[]): Promise<void> => {
      const deadline = Date.now() + PARK_TIMEOUT_MS;
      let told = Date.now();
      for (;;) {
        const { count } = await client.temporal.workflow.count(parkedQuery);
        if (count >= list.length) break;
        if (Date.now() > deadline) throw new Error(`only ${count} of ${list.length} sessions parked after ${PARK_TIMEOUT_MS / 60_000} min`);
        if (Date.now() - told > 10_000) {
          progress(`parked ${count}/${list.length}`);
          told = Date.now();
        }
        await sleep(250);
      }
      const listed = new Set<string>();
      for await (const wf of client.temporal.workflow.list({ query: parkedQuery })) listed.add(wf.workflowId);
      const missing = list.filter((id) => !listed.has(id));
      if (missing.length > 0) throw new Error(`${missing.length} sessions not listed as parked (e.g. ${missing[0]})`);
    };

    let before: Snapshot | undefined;
    let parked: Snapshot | undefined;
    let drained: Snapshot | undefined;
    let parkSeconds = 0;
    let drainSeconds = 0;
    const taken: Sample[] = [];

    await w.run(async () => {
      progress(`warm-up: ${WARMUP_SESSIONS} sessions, approved (update, then signal) and finished (not counted)`);
      for (let i = 0; i < WARMUP_SESSIONS; i++) {
        const id = `bench-approval-${runId}-warmup-${i}`;
        await start(id);
        await waitParked(id);
        await approve(client, id, i % 2 === 0 ? 'update' : 'signal');
        checkResult(id, await client.result(id));
        if ((await w.toolStartedAt(id)) === undefined) throw new Error(`the worker never recorded ${TOOL} starting for ${id}`);
      }
      progress('measuring the warmed-up worker (gc, settle, idle window)');
      before = await snapshot(s, w);

      progress(`parking ${sessions} sessions (${concurrency} starts at a time)`);
      const parkStart = performance.now();
      let started = 0;
      await pool(ids, concurrency, async (id) => {
        await start(id);
        if (++started % 500 === 0) progress(`started ${started}/${sessions} after ${((performance.now() - parkStart) / 1000).toFixed(0)} s`);
      });
      await waitAllParked(ids);
      parkSeconds = (performance.now() - parkStart) / 1000;
      progress(`all ${sessions} parked after ${parkSeconds.toFixed(1)} s; measuring`);
      parked = await snapshot(s, w);

      // K per path, spread evenly over the parked sessions, alternating update and signal.
      const step = Math.floor(sessions / (2 * samples));
      const sampled = Array.from({ length: 2 * samples }, (_, i) => ids[i * step]!);
      progress(`sampling ${samples} approvals per path (update, signal alternating), sequentially`);
      for (const [i, id] of sampled.entries()) {
        const via: Via = i % 2 === 0 ? 'update' : 'signal';
        const t0 = nowMs();
        await approve(client, id, via);
        const callReturnedMs = nowMs() - t0;
        const key = checkResult(id, await client.result(id));
        const h = historyTimes((await client.session(id).fetchHistory()).events ?? [], via);
        const toolAt = await w.toolStartedAt(id);
        if (toolAt === undefined) throw new Error(`the worker never recorded ${TOOL} starting for ${id}`);
        taken.push({
          via,
          sessionId: id,
          callReturnedMs,
          decisionRecordedMs: h.decision - t0,
          toolScheduledMs: h.scheduled - t0,
          activityStartedMs: h.started - t0,
          toolStartedMs: toolAt - t0,
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
        if (++done % 500 === 0) progress(`finished ${done}/${rest.length} after ${((performance.now() - drainStart) / 1000).toFixed(0)} s`);
      });
      drainSeconds = (performance.now() - drainStart) / 1000;
      progress('measuring after the drain');
      drained = await snapshot(s, w);
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
    const latencyMs = [latencyRow('update', taken), latencyRow('signal', taken)];
    const report: Report = {
      machine,
      params: {
        sessions,
        samplesPerPath: samples,
        concurrency,
        warmupSessions: WARMUP_SESSIONS,
        maxCachedWorkflows: w.maxCachedWorkflows,
        maxCachedWorkflowsSetBy: args.maxCached !== undefined ? '--max-cached' : 'SDK default from the V8 heap limit',
        workerHeapLimitMB: round(w.heapLimitMB, 0),
        workerHeapLimitSetBy: args.workerHeapMB !== undefined ? '--worker-heap-mb' : 'V8 default',
        shareLibraries: args.shareLibraries,
        gcExposed: w.gcExposed,
      },
      worker: {
        mode: w.mode,
        pid: w.pid,
        clockOffsetMs: w.clock ? round(w.clock.offsetMs, 3) : undefined,
        clockRttMs: w.clock ? round(w.clock.rttMs, 3) : undefined,
        startupRssMB: w.startupRss
          ? {
              started: round(w.startupRss.started / MB, 1),
              imported: round(w.startupRss.imported / MB, 1),
              created: round(w.startupRss.created / MB, 1),
              running: round(w.startupRss.running / MB, 1),
            }
          : undefined,
      },
      memory: { before: b, parked: p, drained: drained!, deltaMB: round(deltaMB, 1), deltaPerSessionKB: round((deltaMB * 1024) / sessions, 1) },
      parkSeconds: round(parkSeconds, 1),
      latencyMs,
      drainSeconds: round(drainSeconds, 1),
      refundsInLedger: ledger.refunds.length,
      target: { ...TARGET, verdict: judge(p, latencyMs) },
    };
    process.stdout.write(args.json ? `${JSON.stringify(report, null, 2)}\n` : `${render(report)}\n`);
  } finally {
    await worker?.close();
    await stack?.close();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench/approvals failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
