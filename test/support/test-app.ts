/**
 * The small test app (`test/app/tools.ts`) as a team would test it, through `keel/testing`: a test env on
 * the shared Temporal server and bundle, with its notice board as the downstream the tools post to.
 */
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { inject } from 'vitest';
import { createTestEnv, type TestEnv } from '../../src/testing/index.js';
import { startNotesBoard, type NotesBoard } from './notes-board.js';
import { ROOT, TEST_APP_TOOLS } from './paths.js';

/** A test env of the test app, and its notice board. */
export interface TestApp {
  env: TestEnv;
  board: NotesBoard;
  close(): Promise<void>;
}

/** Starts the test app's env and notice board. */
export async function startTestApp(): Promise<TestApp> {
  const board = await startNotesBoard();
  const env = await createTestEnv({
    tools: TEST_APP_TOOLS,
    scenarioDirs: [path.join(ROOT, 'test', 'app', 'scenarios')],
    temporalAddress: inject('temporalAddress'),
    workflowBundle: { codePath: inject('testAppBundlePath') },
    // A store of this env's own (breakers a test opens stay here), shared with the worker processes it spawns.
    env: { NOTES_URL: board.url, KEEL_DATA_DIR: path.join(ROOT, '.keel', 'test', 'data', `app-${randomUUID().slice(0, 8)}`) },
  }).catch(async (err: unknown) => {
    await board.close();
    throw err;
  });
  return {
    env,
    board,
    async close() {
      await env.close();
      await board.close();
    },
  };
}
