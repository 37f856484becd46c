/**
 * What the Web UI test needs: its own Temporal dev server *with* the Web UI (the shared test server is
 * headless), the scripted model and demo services, a Keel client and in-process workers against that
 * server, and a headless Debian chromium driven by `playwright-core` (never a Playwright-downloaded
 * browser: this machine and CI have no internet beyond package registries).
 */
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { KeelClient } from '../../src/client.js';
import { loadConfig, type KeelConfig } from '../../src/config.js';
import { startDemoServices, type DemoServices } from '../../examples/support-desk/services/index.js';
import { resolveTemporalCli, startDevServer, type DevServer } from '../../src/devserver/index.js';
import { createLogger } from '../../src/logging.js';
import { startScriptedModel, type ScriptedModelServer } from '../../src/testing/scripted/index.js';
import { createKeelWorker } from '../../src/worker.js';
import { ROOT, SCENARIO_DIRS } from './harness.js';
import { EXAMPLE_TOOLS } from './paths.js';

/** Debian's chromium (`apt-get install -y chromium`); override with `KEEL_CHROMIUM`. */
export const CHROMIUM_PATH = process.env.KEEL_CHROMIUM ?? '/usr/bin/chromium';
/** Whether that chromium is there (the test run installs it when it can; the browser tests skip without it). */
export const hasChromium = existsSync(CHROMIUM_PATH);

/** Flags for a headless chromium on a machine without internet. */
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-quic',
  '--no-first-run',
  '--disable-component-update',
  '--disable-sync',
];

/** Launches headless chromium; the caller closes it. */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM_PATH, args: CHROMIUM_ARGS, timeout: 30_000 });
}

/** A Temporal dev server with its Web UI, plus everything needed to run sessions on it. */
export interface UiStack {
  server: DevServer;
  /** Web UI base URL, e.g. `http://127.0.0.1:41234`. */
  uiUrl: string;
  config: KeelConfig;
  client: KeelClient;
  model: ScriptedModelServer;
  demo: DemoServices;
  /** Runs an in-process worker on this stack's task queue until `fn` settles. */
  withWorker<T>(fn: () => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

/**
 * Starts a separate dev server with the Web UI on free ports (throw-away SQLite in a temp dir), the
 * scripted model, the demo services and a client; workers use the prebuilt `workflowBundlePath`.
 */
export async function startUiStack(name: string, workflowBundlePath: string): Promise<UiStack> {
  const dataDir = path.join(ROOT, '.keel');
  const cli = await resolveTemporalCli({ dataDir });
  const tmp = await mkdtemp(path.join(os.tmpdir(), `keel-${name}-`));
  const cleanups: Array<() => Promise<void>> = [() => rm(tmp, { recursive: true, force: true })];
  const close = async (): Promise<void> => {
    for (const fn of cleanups.reverse()) await fn().catch(() => {});
  };
  try {
    const server = await startDevServer({ cliPath: cli.path, dataDir: tmp, port: 0, uiPort: 0 });
    cleanups.push(() => server.stop());
    if (server.uiUrl === undefined) throw new Error('the dev server started without its Web UI');
    const model = await startScriptedModel({ scenarioDirs: SCENARIO_DIRS });
    cleanups.push(() => model.close());
    const demo = await startDemoServices();
    cleanups.push(() => demo.close());
    const logDir = path.join(dataDir, 'test', 'logs');
    mkdirSync(logDir, { recursive: true });
    const env: Record<string, string> = {
      TEMPORAL_ADDRESS: server.address,
      KEEL_TASK_QUEUE: `test-${name}-${randomUUID().slice(0, 8)}`,
      ANTHROPIC_BASE_URL: model.url,
      KEEL_DEMO_URL: demo.url,
      KEEL_DATA_DIR: dataDir,
    };
    const config = loadConfig(env);
    const client = await KeelClient.connect(config);
    cleanups.push(() => client.close());
    const logger = createLogger({ level: 'info', file: path.join(logDir, `${name}-${process.pid}.log`), sync: true });
    return {
      server,
      uiUrl: server.uiUrl,
      config,
      client,
      model,
      demo,
      async withWorker(fn) {
        const w = await createKeelWorker({ tools: EXAMPLE_TOOLS, config, toolEnv: env, logger, workflowBundle: { codePath: workflowBundlePath } });
        try {
          return await w.worker.runUntil(fn);
        } finally {
          await w.close();
        }
      },
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}
