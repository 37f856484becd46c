/**
 * Keel: the benchmark stack's own worker (created by `startBenchStack` with the support desk's tools
 * module and Keel's default worker options) runs while a Keel engine is up; sessions go through
 * `KeelClient.startSession` and `result`, as a team's app starts them. `keel` runs them in Keel's default
 * execution mode (every call a regular activity), `keel-local` with reads and the model call as local
 * activities (`execution: { reads: 'local', model: 'local' }`, README *Execution modes*): the mode to set
 * beside plain Temporal with local activities.
 */
import path from 'node:path';
import type { BenchStack } from '../../support.js';
import type { Execution } from '../../../src/workflows/types.js';
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

/** The stack's one worker, run while any Keel engine is up (both engines share it). */
const runs = new WeakMap<BenchStack, { running: Promise<void>; users: number }>();

function useWorker(stack: BenchStack): () => Promise<void> {
  let run = runs.get(stack);
  if (!run) runs.set(stack, (run = { running: stack.keelWorker.worker.run(), users: 0 }));
  run.users += 1;
  const held = run;
  return async () => {
    held.users -= 1;
    if (held.users > 0) return;
    runs.delete(stack);
    stack.keelWorker.worker.shutdown();
    await held.running;
  };
}

/** Keel in Keel's default execution mode (`execution` absent) or in the given one. */
export function startKeel(execution?: Execution): StartEngine {
  return async ({ stack, target, steps }) => {
    const { client, config } = stack;
    const release = useWorker(stack);
    const server = await temporalServerVersion(stack);
    const local = execution?.reads === 'local' || execution?.model === 'local';
    const engine: Engine = {
      name: local ? 'keel-local' : 'keel',
      version: `keel ${pkgVersion('keel')}, @temporalio/worker ${pkgVersion('@temporalio/worker')}, ${server}`,
      durability: [
        await devServerDurability(stack),
        local
          ? `each step = callModel (${execution?.model ?? 'regular'}) and the read tool (${execution?.reads ?? 'regular'}) as local activities inside a workflow task; their results reach history as markers when that task completes, so a crash mid-task reruns them; writes would stay regular activities`
          : 'each step = 2 activities (callModel, the tool); each result is in history before the workflow sees it',
        `conversation in Keel's store, written and read back by every callModel: ${storeDurability(stack.tmp, config.KEEL_AUDIT_URL)}`,
        `worker: Keel defaults (sticky cache); session execution ${JSON.stringify(execution ?? { reads: 'regular', model: 'regular' })}`,
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
          ...(execution ? { execution } : {}),
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
      close: release,
    };
    return engine;
  };
}
