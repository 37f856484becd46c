/**
 * Keel's testing entry (`keel/testing`): test a team's own agent against a real Temporal dev server and
 * the real Anthropic SDK, with the scripted Messages API server playing scenario scripts in place of the
 * model. `createTestEnv` is the few lines a test file needs; Keel's own tests use it too.
 *
 * ```ts
 * const env = await createTestEnv({ tools: 'src/tools.ts', scenarioDirs: ['test/scenarios'] });
 * const { sessionId } = await env.client.startSession({ prompt: 'Hi', user: { id: 'u1' }, agent: 'helper', model: 'scripted/hello' });
 * const result = await env.withWorker(() => env.client.result(sessionId));
 * await env.close();
 * ```
 */
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { WorkerOptions } from '@temporalio/worker';
import type { Logger as PinoLogger } from 'pino';
import { bundleApp } from '../app/load.js';
import { KeelClient } from '../client.js';
import { loadConfig, type KeelConfig } from '../config.js';
import { resolveTemporalCli, startDevServer, type DevServer } from '../devserver/index.js';
import { createLogger } from '../logging.js';
import { createMemoryStreamBus, type StreamBus } from '../stream/index.js';
import { createKeelWorker, type KeelWorker } from '../worker.js';
import type { ApprovalRequest } from '../workflows/types.js';
import { startScriptedModel, type ScriptedModelServer } from './scripted/index.js';
import type { Scenario } from './scripted/scenario.js';

export * from './scripted/index.js';

/** Options of `createTestEnv`. */
export interface TestEnvOptions {
  /** The tools module under test. */
  tools: string;
  /** Scenario directories for the scripted model (`./scenarios` and KEEL_SCENARIOS_DIR). */
  scenarioDirs?: string[];
  /** In-memory scenarios (they win over files of the same name). */
  scenarios?: Scenario[];
  /** A Temporal server to use (`host:port`); otherwise a dev server is started for this env and stopped by `close`. */
  temporalAddress?: string;
  /** A prebuilt bundle of the same tools module (bundle once per test run); otherwise bundled here. */
  workflowBundle?: WorkerOptions['workflowBundle'];
  /** More environment for the config and the tools (e.g. your downstreams' URLs). */
  env?: Record<string, string>;
  /** Where the workers' pino logs go (a temp file by default). */
  logFile?: string;
}

/** A test's slice of a Keel stack. */
export interface TestEnv {
  /** The environment the config and the tools see (its own task queue, the scripted model's URL). */
  env: Record<string, string>;
  config: KeelConfig;
  client: KeelClient;
  model: ScriptedModelServer;
  /**
   * The stream bus this env's in-process workers publish on (in memory): subscribe to a session with
   * `subscribeSession(env.stream, sessionId, listener)` to see its model text and tool progress as it runs.
   */
  stream: StreamBus;
  /** The workers' pino log file. */
  logFile: string;
  /** A worker on this env's task queue (not yet running). */
  worker(): Promise<KeelWorker>;
  /** Runs a worker until `fn` settles. */
  withWorker<T>(fn: () => Promise<T>): Promise<T>;
  /** Stops the scripted model, the client and (when it started one) the dev server. */
  close(): Promise<void>;
}

/** Starts a test env; see the file header. */
export async function createTestEnv(opts: TestEnvOptions): Promise<TestEnv> {
  const scratch = await mkdtemp(path.join(os.tmpdir(), 'keel-testenv-'));
  let server: DevServer | undefined;
  let model: ScriptedModelServer | undefined;
  try {
    let address = opts.temporalAddress;
    if (!address) {
      const cli = await resolveTemporalCli({ dataDir: path.resolve(loadConfig().KEEL_DATA_DIR) });
      server = await startDevServer({ cliPath: cli.path, dataDir: scratch, port: 0, uiPort: null });
      address = server.address;
    }
    model = await startScriptedModel({
      ...(opts.scenarioDirs ? { scenarioDirs: opts.scenarioDirs } : {}),
      ...(opts.scenarios ? { scenarios: opts.scenarios } : {}),
    });
    const env: Record<string, string> = {
      KEEL_DATA_DIR: scratch,
      ...opts.env,
      TEMPORAL_ADDRESS: address,
      KEEL_TASK_QUEUE: `test-${randomUUID().slice(0, 8)}`,
      ANTHROPIC_BASE_URL: model.url,
    };
    const config = loadConfig(env);
    const client = await KeelClient.connect(config);
    const logFile = opts.logFile ?? path.join(scratch, 'worker.log');
    const logger: PinoLogger = createLogger({ level: 'info', file: logFile, sync: true });
    const workflowBundle = opts.workflowBundle ?? (await bundleApp(opts.tools, { logger: silent, encryptFailures: config.codecKeys !== undefined }));
    const stream = createMemoryStreamBus({ logger });
    const worker = () => createKeelWorker({ tools: opts.tools, config, toolEnv: env, logger, workflowBundle, stream });
    const started = { server, model };
    return {
      env,
      config,
      client,
      model,
      stream,
      logFile,
      worker,
      async withWorker(fn) {
        const w = await worker();
        try {
          return await w.worker.runUntil(fn);
        } finally {
          await w.close();
        }
      },
      async close() {
        await client.close();
        await stream.close();
        await started.model.close();
        await started.server?.stop();
        await rm(scratch, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await model?.close();
    await server?.stop();
    await rm(scratch, { recursive: true, force: true });
    throw err;
  }
}

/**
 * Approves every request a session raises until it closes, as a person watching `keel approvals` would.
 * Returns the ids it approved (in order).
 */
export async function approveUntilDone(
  client: KeelClient,
  sessionId: string,
  approver: { id: string; roles: string[] } = { id: 'test-approver', roles: ['approver'] },
): Promise<string[]> {
  const approved: string[] = [];
  const handle = client.session(sessionId);
  for (;;) {
    const desc = await handle.describe();
    if (desc.status.name !== 'RUNNING') return approved;
    const pending: ApprovalRequest[] = await client.pendingApprovals(sessionId).catch(() => []);
    for (const p of pending) {
      const outcome = await client.decide(sessionId, { requestId: p.requestId, decision: 'approve', approver, reason: 'ok' });
      if (outcome.accepted) approved.push(p.requestId);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

const silent = { log() {}, trace() {}, debug() {}, info() {}, warn() {}, error() {} };
