/**
 * What a test file needs to drive real sessions: the shared Temporal server (from global set-up), its
 * own task queue, the scripted model playing `scenarios/` and `test/scenarios/`, the demo services, a
 * Keel client, and in-process workers on the shared workflow bundle whose pino logs go to a file the
 * test can read.
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { inject } from 'vitest';
import { KeelClient } from '../../src/client.js';
import { loadConfig, type KeelConfig } from '../../src/config.js';
import { demoClient, startDemoServices, type DemoServices } from '../../src/demo/index.js';
import { createLogger } from '../../src/logging.js';
import { startScriptedModel, type ScriptedModelServer } from '../../src/scripted/index.js';
import { createKeelWorker, type KeelWorker } from '../../src/worker.js';

/** Repository root. */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** Scenario directories the tests play. */
export const SCENARIO_DIRS = [path.join(ROOT, 'scenarios'), path.join(ROOT, 'test', 'scenarios')];

/** A test file's slice of the stack. */
export interface Harness {
  env: Record<string, string>;
  config: KeelConfig;
  client: KeelClient;
  model: ScriptedModelServer;
  demo: DemoServices;
  demoApi: ReturnType<typeof demoClient>;
  /** The pino log file of this file's workers. */
  logFile: string;
  /** Creates a worker on this file's task queue (not yet running). */
  worker(): Promise<KeelWorker>;
  /** Runs a worker until `fn` settles. */
  withWorker<T>(fn: () => Promise<T>): Promise<T>;
  /** Structured log lines written so far. */
  logLines(): Array<Record<string, unknown>>;
  close(): Promise<void>;
}

/** Starts the harness for one test file. */
export async function startHarness(name: string): Promise<Harness> {
  const model = await startScriptedModel({ scenarioDirs: SCENARIO_DIRS });
  const demo = await startDemoServices();
  const logDir = path.join(ROOT, '.keel', 'test', 'logs');
  mkdirSync(logDir, { recursive: true });
  const logFile = path.join(logDir, `${name}-${process.pid}.log`);
  const env: Record<string, string> = {
    TEMPORAL_ADDRESS: inject('temporalAddress'),
    KEEL_TASK_QUEUE: `test-${name}-${randomUUID().slice(0, 8)}`,
    ANTHROPIC_BASE_URL: model.url,
    KEEL_DEMO_URL: demo.url,
    KEEL_DATA_DIR: path.join(ROOT, '.keel'),
  };
  const config = loadConfig(env);
  const client = await KeelClient.connect(config);
  const logger = createLogger({ level: 'info', file: logFile, sync: true });
  const worker = () =>
    createKeelWorker({ config, toolEnv: env, logger, workflowBundle: { codePath: inject('workflowBundlePath') } });
  return {
    env,
    config,
    client,
    model,
    demo,
    demoApi: demoClient(demo.url),
    logFile,
    worker,
    async withWorker(fn) {
      const w = await worker();
      try {
        return await w.worker.runUntil(fn);
      } finally {
        await w.connection.close();
      }
    },
    logLines() {
      let text = '';
      try {
        text = readFileSync(logFile, 'utf8');
      } catch {
        return [];
      }
      return text
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>);
    },
    async close() {
      await client.close();
      await Promise.all([model.close(), demo.close()]);
    },
  };
}

/** The events of a session's history, as plain objects. */
export async function historyEvents(h: Harness, sessionId: string) {
  const history = await h.client.session(sessionId).fetchHistory();
  return history.events ?? [];
}

/** An approver allowed to decide on irreversible calls under the default policy. */
export const APPROVER = { id: 'manager-1', roles: ['approver'] };

/**
 * Approves every request the session raises until it closes, as a person watching `keel approvals`
 * would. Returns the ids it approved.
 */
export async function approveUntilDone(client: KeelClient, sessionId: string, approver = APPROVER): Promise<string[]> {
  const approved: string[] = [];
  const handle = client.session(sessionId);
  for (;;) {
    const desc = await handle.describe();
    if (desc.status.name !== 'RUNNING') return approved;
    const pending = await client.pendingApprovals(sessionId).catch(() => []);
    for (const p of pending) {
      const outcome = await client.decide(sessionId, { requestId: p.requestId, decision: 'approve', approver, reason: 'ok' });
      if (outcome.accepted) approved.push(p.requestId);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Activity types in the order the session scheduled them. */
export function scheduledActivities(events: Awaited<ReturnType<typeof historyEvents>>): string[] {
  return events.flatMap((e) => e.activityTaskScheduledEventAttributes?.activityType?.name ?? []);
}
