/**
 * Test-run set-up: one real Temporal dev server (the CLI found or installed by Keel's own resolver,
 * headless, on a free port, with a throw-away SQLite file) and one workflow bundle, shared by every
 * test file through vitest's `provide`/`inject`.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { bundleWorkflowCode } from '@temporalio/worker';
import type { TestProject } from 'vitest/node';
import { resolveTemporalCli, startDevServer, type DevServer } from '../src/devserver/index.js';
import { WORKFLOWS_PATH } from '../src/worker.js';

declare module 'vitest' {
  export interface ProvidedContext {
    temporalAddress: string;
    temporalCliPath: string;
    workflowBundlePath: string;
  }
}

const quiet = { log() {}, trace() {}, debug() {}, info() {}, warn() {}, error: (m: string) => process.stderr.write(`${m}\n`) };

let server: DevServer | undefined;
let tmp: string | undefined;

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const dataDir = path.resolve('.keel');
  const cli = await resolveTemporalCli({ dataDir, log: (m) => process.stderr.write(`[setup] ${m}\n`) });
  tmp = await mkdtemp(path.join(os.tmpdir(), 'keel-test-'));
  server = await startDevServer({ cliPath: cli.path, dataDir: tmp, port: 0, uiPort: null });
  const bundle = await bundleWorkflowCode({ workflowsPath: WORKFLOWS_PATH, logger: quiet });
  const bundleDir = path.join(dataDir, 'test');
  await mkdir(bundleDir, { recursive: true });
  const bundlePath = path.join(bundleDir, 'workflow-bundle.js');
  await writeFile(bundlePath, bundle.code);
  project.provide('temporalAddress', server.address);
  project.provide('temporalCliPath', cli.path);
  project.provide('workflowBundlePath', bundlePath);
  return async () => {
    await server?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  };
}
