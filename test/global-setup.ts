/**
 * Test-run set-up: the Debian packages some tests drive (found, or installed with apt-get when it can),
 * one real Temporal dev server (the CLI found or installed by Keel's own resolver,
 * headless, on a free port, with a throw-away SQLite file) and one workflow bundle per tools module (the
 * support-desk example's, and the small test app's), shared by every test file through vitest's
 * `provide`/`inject`.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { bundleApp } from '../src/app/load.js';
import { resolveTemporalCli, startDevServer, type DevServer } from '../src/devserver/index.js';
import { EXAMPLE_TOOLS, TEST_APP_TOOLS } from './support/paths.js';
import { ensureSystemPackages, TEST_PACKAGES } from './support/system-packages.js';

declare module 'vitest' {
  export interface ProvidedContext {
    temporalAddress: string;
    temporalCliPath: string;
    /** The workflow bundle of the support-desk example's tools module. */
    workflowBundlePath: string;
    /** The workflow bundle of the test app (test/app/tools.ts). */
    testAppBundlePath: string;
  }
}

const quiet = { log() {}, trace() {}, debug() {}, info() {}, warn() {}, error: (m: string) => process.stderr.write(`${m}\n`) };

let server: DevServer | undefined;
let tmp: string | undefined;

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const missing = ensureSystemPackages(TEST_PACKAGES, (m) => process.stderr.write(`[setup] ${m}\n`));
  if (missing.length && process.env.CI === 'true') throw new Error(`CI needs ${missing.join(', ')} on PATH, and they could not be installed`);
  const dataDir = path.resolve('.keel');
  const cli = await resolveTemporalCli({ dataDir, log: (m) => process.stderr.write(`[setup] ${m}\n`) });
  tmp = await mkdtemp(path.join(os.tmpdir(), 'keel-test-'));
  server = await startDevServer({ cliPath: cli.path, dataDir: tmp, port: 0, uiPort: null });
  const bundleDir = path.join(dataDir, 'test');
  await mkdir(bundleDir, { recursive: true });
  const write = async (tools: string, name: string) => {
    const file = path.join(bundleDir, name);
    await writeFile(file, (await bundleApp(tools, { logger: quiet })).code);
    return file;
  };
  project.provide('temporalAddress', server.address);
  project.provide('temporalCliPath', cli.path);
  project.provide('workflowBundlePath', await write(EXAMPLE_TOOLS, 'workflow-bundle.js'));
  project.provide('testAppBundlePath', await write(TEST_APP_TOOLS, 'test-app-bundle.js'));
  return async () => {
    await server?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  };
}
