/**
 * Shared by the benchmarks under `bench/`: starting and stopping the stack a benchmark runs against (the
 * scripted model with in-memory scenarios, the demo services with an in-memory ledger, a headless
 * Temporal dev server on a free port, one in-process Keel worker for a tools module (the support desk's by
 * default) and a `KeelClient`), reading history event times, and the small statistics and table helpers
 * the reports use. Human progress goes to stderr.
 */
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { bundleApp } from '../src/app/load.js';
import { KeelClient } from '../src/client.js';
import { loadConfig, type KeelConfig } from '../src/config.js';
import { startDemoServices, type DemoServices } from '../examples/support-desk/services/index.js';
import { resolveTemporalCli, startDevServer, type DevServer } from '../src/devserver/index.js';
import { createLogger } from '../src/logging.js';
import { startScriptedModel, type Scenario, type ScenarioTurn, type ScriptedModelOptions, type ScriptedModelServer } from '../src/testing/scripted/index.js';
import type { StreamBus } from '../src/stream/index.js';
import { createKeelWorker, type KeelWorker, type KeelWorkerOptions } from '../src/worker.js';

/** Repository root (the Temporal CLI cache lives in its `.keel/`). */
export const ROOT = fileURLToPath(new URL('../', import.meta.url));

/** The support desk's tools module: what the benchmarks' workers load unless told otherwise. */
export const SUPPORT_TOOLS = path.join(ROOT, 'examples', 'support-desk', 'tools.ts');

/** Writes one progress line to stderr. */
export const progress = (msg: string): void => {
  process.stderr.write(`[bench] ${msg}\n`);
};

/** What a benchmark runs against; `close()` stops all of it. */
export interface BenchStack {
  model: ScriptedModelServer;
  demo: DemoServices;
  server: DevServer;
  keelWorker: KeelWorker;
  client: KeelClient;
  config: KeelConfig;
  /** Temporary directory (dev server SQLite file and log, worker log); removed by `close()`. */
  tmp: string;
  /** The buses made by `streamBuses`, when given. */
  streamBuses?: { worker: StreamBus; gateway: StreamBus };
  /** Stops everything in reverse order of start-up; each step is guarded so one failure does not leak the rest. */
  close(): Promise<void>;
}

/** Options of {@link startBenchStack}. */
export interface BenchStackOptions {
  /** In-memory scenarios for the scripted model (no scenario files are read). */
  scenarios: Scenario[];
  /** The worker's tools module ({@link SUPPORT_TOOLS} by default). */
  tools?: string;
  /** Prefix of the (random) task queue name, e.g. `bench-overhead`. */
  taskQueuePrefix: string;
  /** Extra worker options (e.g. `maxCachedWorkflows`). */
  worker?: KeelWorkerOptions['worker'];
  /** `bundleApp`'s `shareLibraries` (default `true`: zod evaluated once per workflow thread). */
  shareLibraries?: boolean;
  /** The stream buses of the worker and of whoever watches (both closed with the stack); the worker's default otherwise. */
  streamBuses?: (tmp: string) => Promise<{ worker: StreamBus; gateway: StreamBus }>;
  /** Called as the scripted model writes each streamed chunk. */
  onStreamChunk?: ScriptedModelOptions['onStreamChunk'];
}

/**
 * Starts the scripted model, the demo services, a dev server and a worker (created, not running: call
 * `keelWorker.worker.runUntil(...)`), and connects a client. The workflows are bundled with the tools
 * module (`bundleApp`) before the worker is created; neither is timed.
 */
export async function startBenchStack(opts: BenchStackOptions): Promise<BenchStack> {
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'keel-bench-'));
  const closers: Array<[string, () => Promise<void> | undefined]> = [['tmp dir', () => rm(tmp, { recursive: true, force: true })]];
  const close = async (): Promise<void> => {
    for (const [what, stop] of closers.splice(0).reverse()) {
      try {
        await stop();
      } catch (err) {
        progress(`cleanup: closing ${what} failed: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
  };
  try {
    // Scripted model with the in-memory scenarios only (no files), demo services with an in-memory ledger.
    const model = await startScriptedModel({ scenarioDirs: [], scenarios: opts.scenarios, ...(opts.onStreamChunk ? { onStreamChunk: opts.onStreamChunk } : {}) });
    closers.push(['scripted model', () => model.close()]);
    const demo = await startDemoServices();
    closers.push(['demo services', () => demo.close()]);
    progress(`scripted model at ${model.url}, demo services at ${demo.url}`);

    const cli = await resolveTemporalCli({ dataDir: path.join(ROOT, '.keel'), log: progress });
    const server = await startDevServer({ cliPath: cli.path, port: 0, uiPort: null, dataDir: path.join(tmp, 'temporal'), log: progress });
    closers.push(['temporal dev server', () => server.stop()]);

    const config = loadConfig({
      TEMPORAL_ADDRESS: server.address,
      KEEL_TASK_QUEUE: `${opts.taskQueuePrefix}-${randomUUID().slice(0, 8)}`,
      ANTHROPIC_BASE_URL: model.url,
      KEEL_DEMO_URL: demo.url,
      KEEL_DATA_DIR: tmp,
      KEEL_LOG_LEVEL: 'warn',
    });
    const logFile = path.join(tmp, 'worker.log');
    const tools = opts.tools ?? SUPPORT_TOOLS;
    progress(`bundling workflows with ${path.relative(ROOT, tools)} and creating the worker (not timed); worker log: ${logFile}`);
    const logger = createLogger({ level: 'warn', file: logFile });
    // As a worker without OTEL_* settings bundles for itself: without the tracing interceptors.
    const workflowBundle = await bundleApp(tools, { logger: bundlerLogger(logger), tracing: false, ...(opts.shareLibraries === false ? { shareLibraries: false } : {}) });
    const streamBuses = await opts.streamBuses?.(tmp);
    if (streamBuses) {
      const { worker, gateway } = streamBuses;
      closers.push(['stream buses', async () => void (await Promise.all(worker === gateway ? [worker.close()] : [worker.close(), gateway.close()]))]);
    }
    const keelWorker = await createKeelWorker({
      tools,
      config,
      workflowBundle,
      toolEnv: { KEEL_DEMO_URL: demo.url },
      logger,
      ...(opts.worker ? { worker: opts.worker } : {}),
      ...(streamBuses ? { stream: streamBuses.worker } : {}),
    });
    closers.push(['worker', () => keelWorker.close()]);
    const client = await KeelClient.connect(config);
    closers.push(['client', () => client.close()]);
    return { model, demo, server, keelWorker, client, config, tmp, close, ...(streamBuses ? { streamBuses } : {}) };
  } catch (err) {
    await close();
    throw err;
  }
}

/** The bundler's progress is noise; its warnings and errors go to the worker log. */
function bundlerLogger(logger: ReturnType<typeof createLogger>): NonNullable<Parameters<typeof bundleApp>[1]>['logger'] {
  const pass = (level: 'warn' | 'error') => (message: string, meta?: Record<string, unknown>) => logger[level](meta ?? {}, message);
  const quiet = (): void => undefined;
  return { log: quiet, trace: quiet, debug: quiet, info: quiet, warn: pass('warn'), error: pass('error') };
}

/** The machine a run happened on, printed in every report header. */
export interface MachineFacts {
  cores: number;
  cpu: string;
  memGiB: number;
  node: string;
  platform: string;
  loadavg1m: number;
}

export function machineFacts(): MachineFacts {
  return {
    cores: os.cpus().length,
    cpu: os.cpus()[0]?.model.trim() ?? 'unknown',
    memGiB: round(os.totalmem() / 2 ** 30, 1),
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    loadavg1m: round(os.loadavg()[0] ?? 0),
  };
}

/** One line describing the machine. */
export function machineLine(m: MachineFacts): string {
  return `machine: ${m.cores} cores (${m.cpu}), ${m.memGiB} GiB RAM, node ${m.node}, ${m.platform}, load avg ${m.loadavg1m}`;
}

/** One event of a workflow history, as `fetchHistory()` returns it. */
export type HistoryEvent = NonNullable<Awaited<ReturnType<ReturnType<KeelClient['session']>['fetchHistory']>>['events']>[number];

/**
 * A history event's time in ms since the epoch with sub-millisecond precision (the SDK's `tsToMs` floors
 * to whole ms, too coarse for steps of a few ms).
 */
export function eventTimeMs(ts: { seconds?: { toNumber(): number } | null; nanos?: number | null } | null | undefined): number {
  if (!ts) throw new Error('history event without eventTime');
  return (ts.seconds?.toNumber() ?? 0) * 1000 + (ts.nanos ?? 0) / 1e6;
}

/**
 * A local activity's marker: its type, and when the worker scheduled it (the worker's clock, ms). The
 * marker's own event time is when the workflow task that recorded it completed (the server's clock), not
 * when the call ended, so a local call's run time is not in history: it is part of the workflow task run.
 */
export function localActivityOf(e: HistoryEvent): { type: string; scheduledMs: number } | undefined {
  const m = e.markerRecordedEventAttributes;
  const data = m?.markerName === 'core_local_activity' ? m.details?.data?.payloads?.[0]?.data : undefined;
  if (!data) return undefined;
  type Ts = { seconds: number; nanos: number };
  const d = JSON.parse(Buffer.from(data).toString('utf8')) as { activity_type: string; original_schedule_time: Ts };
  return { type: d.activity_type, scheduledMs: d.original_schedule_time.seconds * 1000 + d.original_schedule_time.nanos / 1e6 };
}

/** Nearest-rank percentile of unsorted samples. */
export function percentile(samples: number[], p: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1] ?? Number.NaN;
}

export const mean = (xs: number[]): number => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : Number.NaN);
export const round = (x: number, digits = 2): number => Number(x.toFixed(digits));

/** A Markdown table: first column left-aligned, the others right-aligned. */
export function renderTable(header: string[], cells: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: string[]): string => `| ${c.map((v, i) => (i === 0 ? v.padEnd(widths[i]!) : v.padStart(widths[i]!))).join(' | ')} |`;
  const sep = `|${widths.map((w, i) => (i === 0 ? `:${'-'.repeat(w + 1)}` : `${'-'.repeat(w + 1)}:`)).join('|')}|`;
  return [line(header), sep, ...cells.map(line)].join('\n');
}

/** A whole-number option of a benchmark: its default and bounds. */
export interface IntOption {
  def: number;
  min: number;
  max: number;
}

/**
 * Parses a benchmark's command line: the given whole-number options (`--name N`, optional when `def`
 * is NaN), the given string options (`--name S`, `def` when absent), plus `--json` and `--help`. Bad
 * usage prints the reason and `usageLine` and exits 2.
 */
export function parseBenchArgs<K extends string, S extends string = never>(
  name: string,
  usageLine: string,
  ints: Record<K, IntOption>,
  strings: Record<S, { def: string }> = {} as Record<S, { def: string }>,
): { json: boolean; usage(reason: string): never } & Record<K, number> & Record<S, string> {
  const usage = (reason: string): never => {
    process.stderr.write(`${name}: ${reason}\nusage: ${usageLine}\n`);
    process.exit(2);
  };
  let values: Record<string, string | boolean | undefined> = {};
  try {
    ({ values } = parseArgs({
      options: {
        ...Object.fromEntries([...Object.keys(ints), ...Object.keys(strings)].map((k) => [k, { type: 'string' as const }])),
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    usage(err instanceof Error ? err.message : String(err));
  }
  if (values.help) usage('help');
  const parsed = Object.fromEntries(
    (Object.entries(ints) as Array<[K, IntOption]>).map(([key, { def, min, max }]) => {
      const raw = values[key];
      if (raw === undefined) return [key, def];
      const n = Number(raw);
      if (!Number.isInteger(n) || n < min || n > max) usage(`--${key} must be a whole number from ${min} to ${max}, got ${JSON.stringify(raw)}`);
      return [key, n];
    }),
  ) as Record<K, number>;
  const texts = Object.fromEntries(
    (Object.entries(strings) as Array<[S, { def: string }]>).map(([key, { def }]) => [key, typeof values[key] === 'string' ? values[key] : def]),
  ) as Record<S, string>;
  return { ...parsed, ...texts, json: values.json === true, usage };
}

/**
 * The two read tools a benchmark step calls in turn: the tool's input, the demo services' path it reads,
 * and a piece of its result the next model turn checks for.
 */
export const STEP_TOOLS = [
  { name: 'get_order', input: { order_id: 'ord_1001' }, path: '/orders/ord_1001', contains: '"id":"ord_1001"' },
  { name: 'lookup_customer', input: { customer_id: 'cust_001' }, path: '/customers/cust_001', contains: 'Ada Lovelace' },
] as const;

/** The scripted session of the overhead and peers benchmarks: N tool turns alternating the two read tools, then one `end_turn` turn. */
export function readStepsScenario(steps: number, name: string, description: string): Scenario {
  const turns: ScenarioTurn[] = [];
  for (let i = 0; i < steps; i++) {
    const tool = STEP_TOOLS[i % STEP_TOOLS.length]!;
    const prev = i > 0 ? STEP_TOOLS[(i - 1) % STEP_TOOLS.length]! : undefined;
    turns.push({
      content: [
        { type: 'text', text: `Step ${i + 1}: calling ${tool.name}.` },
        { type: 'tool_use', name: tool.name, input: { ...tool.input } },
      ],
      stop_reason: 'tool_use',
      // The model server checks that the previous step's tool result arrived intact, in every engine and mode alike.
      ...(prev ? { expect: { tool_results: [{ is_error: false, contains: prev.contains }] } } : {}),
    });
  }
  const last = STEP_TOOLS[(steps - 1) % STEP_TOOLS.length]!;
  turns.push({
    content: [{ type: 'text', text: `Done after ${steps} steps.` }],
    stop_reason: 'end_turn',
    expect: { tool_results: [{ is_error: false, contains: last.contains }] },
  });
  return { name, description, turns };
}
