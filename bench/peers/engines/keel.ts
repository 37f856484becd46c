/**
 * Keel: the benchmark stack's own worker (created by `startBenchStack` with the support desk's tools
 * module and Keel's default worker options) runs while this engine is measured; sessions go through
 * `KeelClient.startSession` and `result`, as a team's app starts them.
 */
import path from 'node:path';
import type { Engine, StartEngine } from './types.js';
import { devServerDurability } from './temporal.js';
import { MAX_TOKENS, PROMPT, TOOL_NAMES } from '../workload.js';
import { pkgVersion, sqlitePragmas, temporalServerVersion } from '../versions.js';

const USER = { id: 'bench-user', roles: ['support'] };

/** The store's durability: the SQLite file the stack's worker opened in its data dir, unless a store URL was configured. */
function storeDurability(dataDir: string, url: string | undefined): string {
  if (url) return `KEEL_AUDIT_URL store (${url.split(':')[0]})`;
  try {
    const p = sqlitePragmas(path.join(dataDir, 'keel.sqlite'));
    return `SQLite file, journal_mode=${p.journalMode}, synchronous=${p.synchronous}`;
  } catch (err) {
    return `SQLite file (pragmas not readable: ${err instanceof Error ? err.message : String(err)})`;
  }
}

export const startKeel: StartEngine = async ({ stack, target, steps }) => {
  const { client, keelWorker, config } = stack;
  const running = keelWorker.worker.run();
  const server = await temporalServerVersion(stack);
  const engine: Engine = {
    name: 'keel',
    version: `keel ${pkgVersion('keel')}, @temporalio/worker ${pkgVersion('@temporalio/worker')}, ${server}`,
    durability: [
      await devServerDurability(stack),
      'each step = 2 activities (callModel, the tool); each result is in history before the workflow sees it',
      `conversation in Keel's store, written and read back by every callModel: ${storeDurability(stack.tmp, config.KEEL_AUDIT_URL)}`,
      'worker: Keel defaults (sticky cache, no local activities)',
    ],
    async runSession(sessionId) {
      await client.startSession({
        sessionId,
        prompt: PROMPT,
        user: USER,
        model: target.model,
        tools: TOOL_NAMES,
        maxIterations: steps + 1,
        maxTokens: MAX_TOKENS,
      });
      const result = await client.result(sessionId);
      if (result.stopReason !== 'end_turn' || result.iterations !== steps + 1) {
        throw new Error(`keel session ${sessionId} ended with ${result.stopReason} after ${result.iterations} turns, expected end_turn after ${steps + 1}`);
      }
      const bad = result.toolCalls.filter((c) => c.outcome !== 'ok');
      if (result.toolCalls.length !== steps || bad.length > 0) {
        throw new Error(`keel session ${sessionId}: ${result.toolCalls.length} tool calls, ${bad.length} not ok (${bad.map((c) => c.error).join('; ')})`);
      }
    },
    async history(sessionId) {
      return (await client.session(sessionId).fetchHistory()).events ?? [];
    },
    async close() {
      keelWorker.worker.shutdown();
      await running;
    },
  };
  return engine;
};
