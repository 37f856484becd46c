/**
 * The Keel worker: connects to Temporal, registers `agentSession` and the activities (`callModel` and
 * one per tool, named after the tool), with pino as the runtime logger. Thin on purpose: everything it
 * wires lives in `workflows/`, `activities/` and `tools/`.
 */
import { fileURLToPath } from 'node:url';
import { NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';
import type { Logger as PinoLogger } from 'pino';
import { createModelActivities, createToolActivities } from './activities/index.js';
import { loadConfig, modelEndpoint, temporalConnectionOptions, type KeelConfig } from './config.js';
import { createLogger, installRuntimeLogger } from './logging.js';
import { toolRegistry, type Tool } from './tools/index.js';

/** The workflow entry point the worker bundles. */
export const WORKFLOWS_PATH = fileURLToPath(new URL('./workflows/index.ts', import.meta.url));

/** Options for `createKeelWorker`. */
export interface KeelWorkerOptions {
  /** Validated configuration (from the environment by default). */
  config?: KeelConfig;
  /** Tools to register (the whole registry by default). */
  tools?: Iterable<Tool>;
  /** A prebuilt workflow bundle (tests bundle once); otherwise the worker bundles `WORKFLOWS_PATH`. */
  workflowBundle?: WorkerOptions['workflowBundle'];
  /** Logger to install as Temporal's runtime logger (created from config by default). */
  logger?: PinoLogger;
  /** Environment handed to tools (`process.env` by default). */
  toolEnv?: Readonly<Record<string, string | undefined>>;
  /** Extra worker options (identity, concurrency, shutdown grace). */
  worker?: Partial<Omit<WorkerOptions, 'connection' | 'taskQueue' | 'namespace' | 'activities'>>;
}

/** A worker and the connection it owns. */
export interface KeelWorker {
  worker: Worker;
  connection: NativeConnection;
  /** Shuts the worker down and closes the connection. */
  close(): Promise<void>;
}

/** Creates a worker ready to `run()`. */
export async function createKeelWorker(opts: KeelWorkerOptions = {}): Promise<KeelWorker> {
  const config = opts.config ?? loadConfig();
  const logger = installRuntimeLogger(opts.logger ?? createLogger({ level: config.KEEL_LOG_LEVEL, file: config.KEEL_LOG_FILE }));
  const model = modelEndpoint(config);
  const toolEnv = opts.toolEnv ?? process.env;
  const workflowBundle = opts.workflowBundle ?? (config.KEEL_WORKFLOW_BUNDLE ? { codePath: config.KEEL_WORKFLOW_BUNDLE } : undefined);
  const connection = await NativeConnection.connect(temporalConnectionOptions(config));
  try {
    const worker = await Worker.create({
      connection,
      namespace: config.TEMPORAL_NAMESPACE,
      taskQueue: config.KEEL_TASK_QUEUE,
      ...(workflowBundle ? { workflowBundle } : { workflowsPath: WORKFLOWS_PATH }),
      activities: {
        ...createModelActivities({ apiKey: model.apiKey, ...(model.baseURL ? { baseURL: model.baseURL } : {}) }),
        ...createToolActivities(opts.tools ?? toolRegistry.values(), { env: toolEnv }),
      },
      shutdownGraceTime: '5s',
      ...(config.KEEL_MAX_CACHED_WORKFLOWS !== undefined ? { maxCachedWorkflows: config.KEEL_MAX_CACHED_WORKFLOWS } : {}),
      ...opts.worker,
    });
    logger.info({ taskQueue: config.KEEL_TASK_QUEUE, namespace: config.TEMPORAL_NAMESPACE, model: model.kind }, 'worker ready');
    return {
      worker,
      connection,
      async close() {
        if (worker.getState() === 'RUNNING') worker.shutdown();
        await connection.close();
      },
    };
  } catch (err) {
    await connection.close();
    throw err;
  }
}
