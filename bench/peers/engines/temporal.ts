/**
 * Plain Temporal, on the same dev server as Keel: the shared agent loop as a workflow whose two calls are
 * regular activities (`temporal`) or local activities (`temporal-local`). Each engine starts its own worker
 * (SDK defaults: sticky cache, default pollers and slots) on its own task queue with a client of its own;
 * the workflows are bundled once per run (not timed).
 */
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client, Connection } from '@temporalio/client';
import { bundleWorkflowCode, DefaultLogger, NativeConnection, Worker } from '@temporalio/worker';
import type { BenchStack } from '../../support.js';
import { DEV_SERVER_DYNAMIC_CONFIG } from '../../../src/devserver/index.js';
import { checkSession, PROMPT } from '../workload.js';
import { pkgVersion, sqlitePragmas, temporalServerVersion } from '../versions.js';
import { createStepActivities } from './temporal-activities.js';
import type { Engine, StartEngine } from './types.js';
import type { plainSession } from './temporal-workflows.js';

let bundle: Promise<{ code: string }> | undefined;

/** The workflows' bundle, made on first use (≈1 s; not timed). */
function workflowBundle(): Promise<{ code: string }> {
  bundle ??= bundleWorkflowCode({
    workflowsPath: fileURLToPath(new URL('./temporal-workflows.ts', import.meta.url)),
    logger: new DefaultLogger('WARN'),
  });
  return bundle;
}

/** What both Temporal-based engines (and Keel) say about the dev server's durability. */
export async function devServerDurability(stack: BenchStack): Promise<string> {
  let journal = '?';
  try {
    journal = sqlitePragmas(path.join(stack.tmp, 'temporal', 'temporal.sqlite')).journalMode;
  } catch {
    // The file is the dev server's; when it cannot be read, say so rather than guess.
  }
  const dynamic = Object.entries(DEV_SERVER_DYNAMIC_CONFIG).map(([k, v]) => `${k}=${v}`).join(', ');
  return `${await temporalServerVersion(stack)} (dev server as Keel starts it): one SQLite file (journal_mode=${journal}, synchronous=FULL, the default), 1 history shard, dynamic config ${dynamic}; every history write is a SQLite transaction synced before the server answers`;
}

/** Starts plain Temporal with regular activities (`local: false`) or local activities (`local: true`). */
export function startTemporal(local: boolean): StartEngine {
  return async ({ stack, io, steps }) => {
    const address = stack.server.address;
    const namespace = stack.server.namespace;
    const taskQueue = `bench-peers-${local ? 'local' : 'regular'}-${randomUUID().slice(0, 8)}`;
    const workerConnection = await NativeConnection.connect({ address });
    const worker = await Worker.create({
      connection: workerConnection,
      namespace,
      taskQueue,
      workflowBundle: await workflowBundle(),
      activities: createStepActivities(io),
    });
    const running = worker.run();
    const connection = await Connection.connect({ address });
    const client = new Client({ connection, namespace });
    const name = local ? 'temporal-local' : 'temporal';
    const engine: Engine = {
      name,
      version: `@temporalio/worker ${pkgVersion('@temporalio/worker')}, ${await temporalServerVersion(stack)}`,
      durability: [
        await devServerDurability(stack),
        local
          ? 'each step = 2 local activities run inside a workflow task; their results reach history as markers when that task completes (a task heartbeats every ~8 s while they run), so a crash mid-task reruns them'
          : 'each step = 2 activities; each result is in history before the workflow sees it',
        'worker: SDK defaults (sticky cache; no eager tuning); the conversation travels in activity inputs',
      ],
      async runSession(sessionId) {
        // Both workflows take and return the same types; the name picks the variant.
        const result = await client.workflow.execute<typeof plainSession>(local ? 'plainSessionLocal' : 'plainSession', {
          taskQueue,
          workflowId: sessionId,
          args: [{ sessionId, prompt: PROMPT, maxTurns: steps + 1 }],
        });
        checkSession(name, sessionId, steps, result);
      },
      async history(sessionId) {
        return (await client.workflow.getHandle(sessionId).fetchHistory()).events ?? [];
      },
      async close() {
        worker.shutdown();
        await running;
        await workerConnection.close();
        await connection.close();
      },
    };
    return engine;
  };
}
