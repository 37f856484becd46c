/**
 * The approvals benchmark's Keel worker, in a process of its own so that its memory can be measured
 * without the benchmark's client, scripted model, demo services and bundler. `run.ts` starts it (with
 * `node --import tsx --expose-gc`) and talks to it over the IPC channel: the child reports `ready` once
 * its worker polls (with its RSS along the start-up), then answers requests until told to shut down (or
 * until the parent goes away).
 *
 * The worker is `createKeelWorker` with the benchmark stack's configuration, passed in the environment
 * under Keel's own names (TEMPORAL_ADDRESS, KEEL_TASK_QUEUE, ANTHROPIC_BASE_URL, KEEL_DEMO_URL,
 * KEEL_DATA_DIR, KEEL_LOG_LEVEL, KEEL_LOG_FILE; nothing else of the environment reaches `loadConfig`),
 * the prebuilt workflow bundle the stack made (`--bundle <file>`, so nothing is bundled here), the tools
 * module (`--tools <file>`) and, with `--max-cached M`, `maxCachedWorkflows: M`. The parent adds
 * `--max-old-space-size` to this process's Node flags for `--worker-heap-mb`.
 *
 * Requests: `stats` (optionally after `global.gc()`, a settle and another collection: RSS, peak RSS,
 * main heap, external memory, cached workflows, cumulative CPU), `toolStart` (when this worker began
 * executing a session's first `issue_refund` attempt, as `performance.timeOrigin + performance.now()`,
 * i.e. ms since the epoch with sub-ms precision), `clock` (that same clock now) and `shutdown`.
 * Not meant to be run by hand.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import v8 from 'node:v8';
import type { KeelWorker } from '../../src/worker.js';
import { nowMs, toolStartRecorder } from './tool-start.js';

/** RSS before Keel's modules are loaded (Node and tsx only): Keel is imported dynamically below. */
const rssAtStart = process.memoryUsage().rss;

/** The configuration variables the parent passes; the rest of the environment is not read. */
export const WORKER_CONFIG_KEYS = ['TEMPORAL_ADDRESS', 'KEEL_TASK_QUEUE', 'ANTHROPIC_BASE_URL', 'KEEL_DEMO_URL', 'KEEL_DATA_DIR', 'KEEL_LOG_LEVEL', 'KEEL_LOG_FILE'] as const;

/** The worker process's own measurements at one moment. */
export interface WorkerStats {
  /** `process.memoryUsage()`: the whole process (main thread, the SDK's workflow thread, the Rust core). */
  rss: number;
  /** The process's peak RSS so far (VmHWM from /proc), when readable. */
  peakRss: number | undefined;
  /** Main-thread V8 heap only (workflows run in the SDK's workflow worker thread). */
  heapUsed: number;
  external: number;
  arrayBuffers: number;
  numCachedWorkflows: number;
  /** `process.cpuUsage()` (µs, cumulative, every thread of the process). */
  cpu: { user: number; system: number };
  /** `performance.timeOrigin + performance.now()` when read. */
  at: number;
}

/** The worker process's RSS (bytes) along its start-up, each after a collection. */
export interface StartupRss {
  /** Node and tsx, before Keel's modules are imported. */
  started: number;
  /** Keel's worker modules (and through them the SDK, the model client, the tools' dependencies) imported. */
  imported: number;
  /** `createKeelWorker` done: tools module loaded, store open, connection up, workflow bundle loaded into the SDK's workflow thread. */
  created: number;
  /** Polling its task queue, before any work. */
  running: number;
}

/** What the parent asks. */
export type WorkerRequest =
  | { id: number; op: 'stats'; settleMs: number }
  | { id: number; op: 'toolStart'; workflowId: string }
  | { id: number; op: 'clock' }
  | { id: number; op: 'shutdown' };

/** What the child sends. */
export type WorkerMessage =
  | { type: 'ready'; pid: number; maxCachedWorkflows: number; heapLimit: number; gcExposed: boolean; startupRss: StartupRss }
  | { type: 'reply'; id: number; ok: true; value: unknown }
  | { type: 'reply'; id: number; ok: false; error: string }
  | { type: 'failed'; error: string };

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const gc = (globalThis as { gc?: () => void }).gc;
const describe = (err: unknown): string => (err instanceof Error ? (err.stack ?? err.message) : String(err));

function send(msg: WorkerMessage): void {
  process.send?.(msg);
}

/** Peak RSS in bytes from /proc/self/status; undefined off Linux. */
function peakRss(): number | undefined {
  try {
    const kB = Number(/^VmHWM:\s+(\d+)\s+kB/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1]);
    return Number.isFinite(kB) ? kB * 1024 : undefined;
  } catch {
    return undefined;
  }
}

async function main(): Promise<void> {
  if (!process.send) throw new Error('bench/approvals/worker.ts is started by bench/approvals/run.ts, with an IPC channel');
  const { values } = parseArgs({ options: { tools: { type: 'string' }, bundle: { type: 'string' }, 'max-cached': { type: 'string' } }, strict: true });
  if (!values.tools || !values.bundle) throw new Error('--tools and --bundle are required');
  const maxCached = values['max-cached'] === undefined ? undefined : Number(values['max-cached']);
  if (maxCached !== undefined && !Number.isInteger(maxCached)) throw new Error(`--max-cached: ${values['max-cached']}`);

  const { loadConfig } = await import('../../src/config.js');
  const { createKeelWorker } = await import('../../src/worker.js');
  gc?.();
  const rssImported = process.memoryUsage().rss;
  const config = loadConfig(Object.fromEntries(WORKER_CONFIG_KEYS.map((k) => [k, process.env[k]])));

  /** When the worker began executing each session's first issue_refund attempt, by workflow ID. */
  const toolStartedAt = new Map<string, number>();

  const keelWorker: KeelWorker = await createKeelWorker({
    tools: values.tools,
    config,
    workflowBundle: { codePath: values.bundle },
    toolEnv: { KEEL_DEMO_URL: process.env.KEEL_DEMO_URL },
    worker: {
      interceptors: { activity: [toolStartRecorder(toolStartedAt)] },
      ...(maxCached !== undefined ? { maxCachedWorkflows: maxCached } : {}),
    },
  });
  const { worker } = keelWorker;
  gc?.();
  const rssCreated = process.memoryUsage().rss;

  const stats = async (settleMs: number): Promise<WorkerStats> => {
    if (settleMs > 0) {
      gc?.();
      await sleep(settleMs);
      gc?.();
    }
    const mem = process.memoryUsage();
    return {
      rss: mem.rss,
      peakRss: peakRss(),
      heapUsed: mem.heapUsed,
      external: mem.external,
      arrayBuffers: mem.arrayBuffers,
      numCachedWorkflows: worker.getStatus().numCachedWorkflows,
      cpu: process.cpuUsage(),
      at: nowMs(),
    };
  };

  const running = worker.run();
  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    if (worker.getState() === 'RUNNING') worker.shutdown();
  };
  process.on('disconnect', stop);
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.on('message', (raw: WorkerRequest) => {
    const reply = (value: unknown): void => send({ type: 'reply', id: raw.id, ok: true, value });
    const fail = (err: unknown): void => send({ type: 'reply', id: raw.id, ok: false, error: describe(err) });
    switch (raw.op) {
      case 'stats':
        stats(raw.settleMs).then(reply, fail);
        return;
      case 'toolStart':
        reply(toolStartedAt.get(raw.workflowId) ?? null);
        return;
      case 'clock':
        reply(nowMs());
        return;
      case 'shutdown':
        reply(null);
        stop();
        return;
      default:
        fail(new Error(`unknown request ${JSON.stringify(raw)}`));
    }
  });

  // Ready once the worker polls; the start-up garbage (module loading, reading the bundle) is collected first.
  while (worker.getState() !== 'RUNNING') {
    if (['FAILED', 'STOPPED', 'STOPPING', 'DRAINING', 'DRAINED'].includes(worker.getState())) {
      await running; // rejects with the reason when the worker failed
      throw new Error(`the worker stopped (${worker.getState()}) before it polled`);
    }
    await sleep(20);
  }
  gc?.();
  await sleep(500);
  gc?.();
  const startupRss: StartupRss = { started: rssAtStart, imported: rssImported, created: rssCreated, running: process.memoryUsage().rss };
  send({ type: 'ready', pid: process.pid, maxCachedWorkflows: worker.options.maxCachedWorkflows, heapLimit: v8.getHeapStatistics().heap_size_limit, gcExposed: gc !== undefined, startupRss });

  try {
    await running;
  } finally {
    await keelWorker.close();
  }
  if (process.connected) process.disconnect();
}

main().catch((err: unknown) => {
  const error = describe(err);
  process.stderr.write(`bench/approvals worker failed: ${error}\n`);
  if (process.connected) {
    send({ type: 'failed', error });
    process.disconnect();
  }
  process.exitCode = 1;
});
