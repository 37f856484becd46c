/**
 * What a test file needs to drive real sessions of the support-desk example: a test env from Keel's own
 * testing entry (the shared Temporal server from global set-up, its own task queue, the scripted model
 * playing the example's and `test/scenarios/`, a client, in-process workers on the shared workflow bundle
 * whose pino logs go to a file the test can read), plus the example's demo services.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { inject } from 'vitest';
import { KeelClient } from '../../src/client.js';
import type { KeelConfig } from '../../src/config.js';
import { demoClient, startDemoServices, type DemoServices } from '../../examples/support-desk/services/index.js';
import { approveUntilDone as approveAll, createTestEnv, type ScriptedModelServer, type TestEnv } from '../../src/testing/index.js';
import type { KeelWorker } from '../../src/worker.js';
import { openStore } from '../../src/store/index.js';
import type { StreamBus } from '../../src/stream/index.js';

import { EXAMPLE_TOOLS, ROOT } from './paths.js';

export { ROOT } from './paths.js';
/** Scenario directories the tests play. */
export const SCENARIO_DIRS = [path.join(ROOT, 'examples', 'support-desk', 'scenarios'), path.join(ROOT, 'test', 'scenarios')];

/** A test file's slice of the stack. */
export interface Harness {
  env: Record<string, string>;
  config: KeelConfig;
  client: KeelClient;
  model: ScriptedModelServer;
  /** The in-memory stream bus this file's in-process workers publish on (`subscribeSession`). */
  stream: StreamBus;
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
  /** Closes every open circuit breaker in this file's store (after a test broke a downstream on purpose). */
  closeBreakers(): Promise<void>;
  close(): Promise<void>;
}

/** Starts the harness for one test file: a test env (`keel/testing`) on the example app, plus its demo services. */
export async function startHarness(name: string, extraEnv: Record<string, string> = {}): Promise<Harness> {
  const demo = await startDemoServices();
  const logDir = path.join(ROOT, '.keel', 'test', 'logs');
  mkdirSync(logDir, { recursive: true });
  const logFile = path.join(logDir, `${name}-${process.pid}.log`);
  let env: TestEnv;
  try {
    env = await createTestEnv({
      tools: EXAMPLE_TOOLS,
      scenarioDirs: SCENARIO_DIRS,
      temporalAddress: inject('temporalAddress'),
      workflowBundle: { codePath: inject('workflowBundlePath') },
      // A store of this file's own (breakers a test opens stay here), shared with the worker processes it spawns.
      env: { KEEL_DEMO_URL: demo.url, KEEL_DATA_DIR: path.join(ROOT, '.keel', 'test', 'data', `${name}-${process.pid}`), ...extraEnv },
      logFile,
    });
  } catch (err) {
    await demo.close();
    throw err;
  }
  return {
    ...env,
    demo,
    demoApi: demoClient(demo.url),
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
    async closeBreakers() {
      const store = await openStore(env.config);
      try {
        for (const b of await store.breakers()) await store.resetBreaker(b.tool);
      } finally {
        await store.close();
      }
    },
    async close() {
      await env.close();
      await demo.close();
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

/** Approves every request the session raises until it closes (as `keel/testing`'s, with this file's approver). */
export function approveUntilDone(client: KeelClient, sessionId: string, approver = APPROVER): Promise<string[]> {
  return approveAll(client, sessionId, approver);
}

/** Activity types in the order the session scheduled them. */
export function scheduledActivities(events: Awaited<ReturnType<typeof historyEvents>>): string[] {
  return events.flatMap((e) => e.activityTaskScheduledEventAttributes?.activityType?.name ?? []);
}
