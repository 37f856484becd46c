/**
 * The Keel worker: loads the team's tools module, bundles it with Keel's workflows (the workflow reads
 * the tools' schemas and policies and the agents), connects to the MCP servers the module declares and
 * lists their tools, registers the activities (`callModel` and one per tool, MCP tools included, named
 * after the tool) and opens the conversation store, with pino as the runtime logger. Thin
 * on purpose: everything it wires lives in `app/`, `workflows/`, `activities/`, `store/` and `telemetry/`.
 */
import { readFile } from 'node:fs/promises';
import { Client } from '@temporalio/client';
import { NativeConnection, Runtime, Worker, type WorkerOptions } from '@temporalio/worker';
import type { Logger as PinoLogger } from 'pino';
import { connectMcpServers, createAuditActivities, createAvailabilityActivities, createModelActivities, createToolActivities } from './activities/index.js';
import { bundleApp, loadApp, TRACING_INTERCEPTORS_MARKER } from './app/load.js';
import type { KeelApp } from './app/registry.js';
import { ENCRYPTED_FAILURES_MARKER, keelDataConverter } from './codec/index.js';
import { loadConfig, modelEndpoint, temporalConnectionOptions, type KeelConfig } from './config.js';
import { createLogger, installRuntimeLogger } from './logging.js';
import { openStore, type KeelStore } from './store/index.js';
import { openStreamBus, type StreamBus } from './stream/index.js';
import { createMetricsInterceptor, startFleetGauges } from './telemetry/metrics.js';
import { tracingFromEnv, workerTracing, type KeelTracing } from './telemetry/tracing.js';

/** Options for `createKeelWorker`. */
export interface KeelWorkerOptions {
  /** Path of the team's tools module: it exports `defineTool` (and `defineAgent`) values. */
  tools: string;
  /** Validated configuration (from the environment by default). */
  config?: KeelConfig;
  /**
   * A prebuilt workflow bundle of the same tools module (`bundleApp`; tests bundle once); otherwise
   * `KEEL_WORKFLOW_BUNDLE`, otherwise the worker bundles at start (1–3 s).
   */
  workflowBundle?: WorkerOptions['workflowBundle'];
  /** The conversation store (opened from the configuration by default, and then closed with the worker). */
  store?: KeelStore;
  /**
   * Where the model's text and tool progress are published while sessions run (`openStreamBus(config)` by
   * default, the bus of the configured store, and then closed with the worker).
   */
  stream?: StreamBus;
  /** Logger to install as Temporal's runtime logger (created from config by default). */
  logger?: PinoLogger;
  /** Environment handed to tools (`process.env` by default). */
  toolEnv?: Readonly<Record<string, string | undefined>>;
  /** Tracing (from the `OTEL_*` variables by default; `false`: none). */
  tracing?: KeelTracing | false;
  /** Extra worker options (identity, concurrency, shutdown grace). */
  worker?: Partial<Omit<WorkerOptions, 'connection' | 'taskQueue' | 'namespace' | 'activities'>>;
}

/** A worker, the connection and store it owns, and the app it runs. */
export interface KeelWorker {
  worker: Worker;
  connection: NativeConnection;
  app: KeelApp;
  store: KeelStore;
  /** The stream bus the worker publishes on. */
  stream: StreamBus;
  /** Shuts the worker down and closes the connection (and the store and stream bus, when the worker opened them). */
  close(): Promise<void>;
}

/**
 * Creates a worker ready to `run()`.
 * @throws AppDefinitionError (naming the tool or agent) when the tools module is wrong.
 */
export async function createKeelWorker(opts: KeelWorkerOptions): Promise<KeelWorker> {
  const config = opts.config ?? loadConfig();
  const logger = installRuntimeLogger(opts.logger ?? createLogger({ level: config.KEEL_LOG_LEVEL, file: config.KEEL_LOG_FILE }), {
    metricsAddress: config.KEEL_METRICS_ADDRESS,
  });
  const model = modelEndpoint(config);
  const loaded = await loadApp(opts.tools);
  const toolEnv = opts.toolEnv ?? process.env;
  // With codec keys, payloads and failures are encrypted (src/codec); without, the SDK's defaults.
  const dataConverter = keelDataConverter(config);
  const tracing = opts.tracing === false ? undefined : (opts.tracing ?? tracingFromEnv(process.env, 'keel-worker'));
  const workflowBundle =
    opts.workflowBundle ??
    (config.KEEL_WORKFLOW_BUNDLE
      ? { codePath: config.KEEL_WORKFLOW_BUNDLE }
      : await bundleApp(opts.tools, { logger: quietBundler(logger), encryptFailures: dataConverter !== undefined, tracing: tracing !== undefined }));
  if (tracing && !(await bundleHasMarker(workflowBundle, TRACING_INTERCEPTORS_MARKER))) {
    logger.warn('tracing: this workflow bundle was built without the tracing interceptors (bundleApp({ tracing: false })), so workflows record no spans and activities start new traces');
  }
  if (dataConverter) {
    logger.info({ activeKey: config.codecKeys?.active.id, keys: [...(config.codecKeys?.byId.keys() ?? [])] }, 'payload encryption on');
    if (!(await bundleHasMarker(workflowBundle, ENCRYPTED_FAILURES_MARKER))) {
      logger.warn(
        'payload encryption: this workflow bundle has no encrypting failure converter, so failure messages raised in workflow code (a session or chain failing) are stored unencrypted; payloads and activity failures are encrypted',
      );
    }
  }
  // The MCP servers' tools join the app: connected and listed now (stdio servers spawned), closed with the worker.
  const mcp = await connectMcpServers(loaded, { env: toolEnv, logger, source: opts.tools });
  const app = mcp.app;
  for (const warning of app.warnings) logger.warn({ tools: opts.tools }, warning);
  const traced = workerTracing(tracing, app.tools);
  let store: KeelStore;
  let stream: StreamBus;
  try {
    store = opts.store ?? (await openStore(config));
  } catch (err) {
    await mcp.close();
    throw err;
  }
  try {
    stream = opts.stream ?? (await openStreamBus(config, { logger }));
  } catch (err) {
    if (!opts.store) await store.close();
    await mcp.close();
    throw err;
  }
  /** Closes what the worker opened itself: the stream bus, the store and the MCP connections. */
  const closeOwned = async () => {
    try {
      if (!opts.stream) await stream.close();
    } finally {
      try {
        if (!opts.store) await store.close();
      } finally {
        await mcp.close();
      }
    }
  };
  let connection: NativeConnection;
  try {
    connection = await NativeConnection.connect(temporalConnectionOptions(config));
  } catch (err) {
    await closeOwned();
    throw err;
  }
  try {
    const worker = await Worker.create({
      connection,
      namespace: config.TEMPORAL_NAMESPACE,
      taskQueue: config.KEEL_TASK_QUEUE,
      workflowBundle,
      ...(dataConverter ? { dataConverter } : {}),
      activities: {
        ...createModelActivities({ store, stream, apiKey: model.apiKey, ...(model.baseURL ? { baseURL: model.baseURL } : {}) }),
        ...createToolActivities(app.tools.values(), { store, stream, env: toolEnv }),
        ...createAvailabilityActivities(store),
        ...createAuditActivities(store),
        ...mcp.activities,
      },
      interceptors: { activity: [...traced.activity, createMetricsInterceptor(app.tools.values())] },
      sinks: traced.sinks,
      shutdownGraceTime: '5s',
      // A model turn often asks for several tools at once: reserve slots to start them all with the workflow
      // task that schedules them (the SDK's default is 3; the rest wait on the task queue).
      maxEagerActivityReservationsPerWorkflowTask: EAGER_ACTIVITIES_PER_TASK,
      ...(config.KEEL_MAX_CACHED_WORKFLOWS !== undefined ? { maxCachedWorkflows: config.KEEL_MAX_CACHED_WORKFLOWS } : {}),
      ...opts.worker,
    });
    // With metrics on, the fleet-wide gauges (breakers, disabled tools, sessions awaiting approval) too.
    const gauges = config.KEEL_METRICS_ADDRESS
      ? startFleetGauges({
          meter: Runtime.instance().metricMeter,
          store,
          tools: [...app.tools.keys()],
          visibility: new Client({ connection, namespace: config.TEMPORAL_NAMESPACE }).workflow,
          namespace: config.TEMPORAL_NAMESPACE,
          taskQueue: config.KEEL_TASK_QUEUE,
          intervalMs: config.KEEL_METRICS_INTERVAL,
          onError: (what, err) => logger.warn({ gauge: what, err: err instanceof Error ? err.message : String(err) }, 'metrics: cannot read a gauge'),
        })
      : undefined;
    logger.info(
      { taskQueue: config.KEEL_TASK_QUEUE, namespace: config.TEMPORAL_NAMESPACE, model: model.kind, tools: app.tools.size, agents: [...app.agents.keys()], store: store.kind, stream: stream.kind, ...(config.KEEL_METRICS_ADDRESS ? { metrics: config.KEEL_METRICS_ADDRESS } : {}) },
      'worker ready',
    );
    return {
      worker,
      connection,
      app,
      store,
      stream,
      async close() {
        try {
          await gauges?.stop();
          // The SDK releases its hold on the connection only when run() ends: end it, or run it for nothing.
          const state = worker.getState();
          if (state === 'INITIALIZED') await worker.runUntil(Promise.resolve());
          else if (state === 'RUNNING') {
            worker.shutdown();
            while (!['STOPPED', 'FAILED'].includes(worker.getState())) await new Promise((r) => setTimeout(r, 20));
          }
          await connection.close();
          await tracing?.shutdown();
        } finally {
          await closeOwned();
        }
      },
    };
  } catch (err) {
    await connection.close();
    await closeOwned();
    throw err;
  }
}

/** How many of one workflow task's activities a Keel worker starts eagerly (see `createKeelWorker`). */
export const EAGER_ACTIVITIES_PER_TASK = 16;

/** Whether a workflow bundle (its code, or the file it is in) contains `marker`. */
async function bundleHasMarker(bundle: NonNullable<WorkerOptions['workflowBundle']>, marker: string): Promise<boolean> {
  const code = 'code' in bundle ? bundle.code : await readFile(bundle.codePath, 'utf8').catch(() => '');
  return code.includes(marker);
}

/** Webpack's progress at info level is noise in a worker's log; keep its warnings and errors. */
function quietBundler(logger: PinoLogger) {
  const pass = (level: 'warn' | 'error') => (message: string, meta?: Record<string, unknown>) => logger[level](meta ?? {}, message);
  return { log: () => undefined, trace: () => undefined, debug: () => undefined, info: () => undefined, warn: pass('warn'), error: pass('error') };
}
