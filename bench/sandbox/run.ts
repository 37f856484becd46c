/**
 * What one workflow costs the worker's sandbox before it runs a line of the loop: Temporal's sandbox
 * evaluates the bundle's modules again for every workflow it creates (and for every replay of a session
 * that left the cache), and Keel's bundle shares zod across a thread's workflows (shared-libraries.ts).
 *
 * Two measurements, each side by side in one run:
 * 1. Module evaluation per workflow: the support desk's workflow bundle evaluated in N fresh `vm` contexts,
 *    each with an empty module cache ("every workflow evaluates zod") or with one pre-filled with the zod
 *    module records a first evaluation made ("zod shared": what shared-libraries.ts does in the SDK's
 *    sandbox). Heap retained per workflow (after a collection) and time per workflow.
 * 2. Replays through the SDK's own replayer (`Worker.runReplayHistories`, one sandbox for the batch): the
 *    golden `refund-demo` history N times, on a bundle built with `shareLibraries: true` and one with
 *    `false`, in rounds taking turns at going first; median ms per replay of the rounds, and the ratio.
 *
 * `npx tsx --expose-gc bench/sandbox/run.ts [--contexts N (30)] [--replays N (40)] [--rounds R (5)] [--json]`
 */
import path from 'node:path';
import vm from 'node:vm';
import { DefaultLogger, Runtime, Worker } from '@temporalio/worker';
import { bundleApp } from '../../src/app/load.js';
import { readHistoryFile } from '../../src/replay.js';
import { workerTracing } from '../../src/telemetry/tracing.js';
import { isSharedLibrary } from '../../src/workflows/shared-libraries.js';
import { ROOT, SUPPORT_TOOLS, machineFacts, machineLine, parseBenchArgs, percentile, progress, renderTable, round } from '../support.js';

const HISTORY = path.join(ROOT, 'test', 'histories', 'refund-demo.json');
const MB = 2 ** 20;
const gc = (globalThis as { gc?: () => void }).gc;

const args = parseBenchArgs('bench/sandbox', 'npx tsx --expose-gc bench/sandbox/run.ts [--contexts N (30)] [--replays N (40)] [--rounds R (5)] [--json]', {
  contexts: { def: 30, min: 2, max: 1000 },
  replays: { def: 40, min: 1, max: 10_000 },
  rounds: { def: 5, min: 1, max: 50 },
});
if (!gc) args.usage('run with --expose-gc (npm run bench:sandbox does): memory is read after a collection');

const quiet = { log() {}, trace() {}, debug() {}, info() {}, warn() {}, error() {} };
type ModuleCache = Record<string, unknown>;

/** Evaluates the bundle's workflow modules once, in a fresh context, with `cache` as its module cache. */
function evaluate(script: vm.Script, cache: ModuleCache): vm.Context {
  const context = vm.createContext({ __webpack_module_cache__: cache, console, TextEncoder, TextDecoder, URL, URLSearchParams, AbortController });
  script.runInContext(context);
  (context.__TEMPORAL__ as { importWorkflows(): unknown }).importWorkflows();
  return context;
}

/** Heap retained and time per workflow over `n` evaluations, each starting from `prefill`'s records. */
function perWorkflow(script: vm.Script, prefill: ModuleCache, n: number): { heapMB: number; ms: number } {
  const kept: vm.Context[] = [];
  gc!();
  const heap0 = process.memoryUsage().heapUsed;
  const t0 = performance.now();
  for (let i = 0; i < n; i++) kept.push(evaluate(script, { ...prefill }));
  const ms = (performance.now() - t0) / n;
  gc!();
  const heapMB = (process.memoryUsage().heapUsed - heap0) / n / MB;
  kept.length = 0;
  return { heapMB, ms };
}

async function replayMs(code: string, history: Awaited<ReturnType<typeof readHistoryFile>>, n: number): Promise<number> {
  async function* histories() {
    for (let i = 0; i < n; i++) yield { workflowId: `bench-sandbox-${i}`, history };
  }
  const t0 = performance.now();
  for await (const r of Worker.runReplayHistories({ workflowBundle: { code }, sinks: workerTracing(undefined, new Map()).sinks }, histories())) {
    if (r.error) throw new Error(`replay of refund-demo failed: ${String(r.error)}`);
  }
  return (performance.now() - t0) / n;
}

async function main(): Promise<void> {
  Runtime.install({ logger: new DefaultLogger('WARN') }); // the replayer's worker states stay out of the report
  const machine = machineFacts();
  progress('bundling the support desk twice (shareLibraries true and false)');
  const shared = await bundleApp(SUPPORT_TOOLS, { logger: quiet, tracing: false });
  const unshared = await bundleApp(SUPPORT_TOOLS, { logger: quiet, tracing: false, shareLibraries: false });

  progress(`evaluating the bundle's modules in ${args.contexts} contexts per mode`);
  const script = new vm.Script(unshared.code, { filename: 'workflow-bundle.js' });
  const first: ModuleCache = {};
  evaluate(script, first);
  const zodRecords = Object.fromEntries(Object.entries(first).filter(([id]) => isSharedLibrary(id)));
  evaluate(script, {}); // warm-up of the other mode's path
  const own = perWorkflow(script, {}, args.contexts);
  const withZod = perWorkflow(script, zodRecords, args.contexts);

  progress(`replaying refund-demo ${args.replays} times per bundle, ${args.rounds} rounds`);
  const history = await readHistoryFile(HISTORY);
  await replayMs(shared.code, history, 3);
  await replayMs(unshared.code, history, 3);
  const rounds = { shared: [] as number[], unshared: [] as number[] };
  for (let r = 0; r < args.rounds; r++) {
    // ABBA: each bundle goes first in every other round, so a drift in the machine's load favours neither.
    const order = r % 2 === 0 ? (['unshared', 'shared'] as const) : (['shared', 'unshared'] as const);
    for (const which of order) rounds[which].push(await replayMs(which === 'shared' ? shared.code : unshared.code, history, args.replays));
  }
  const replay = { unshared: percentile(rounds.unshared, 50), shared: percentile(rounds.shared, 50) };

  const report = {
    machine,
    params: { contexts: args.contexts, replays: args.replays, rounds: args.rounds, zodModules: Object.keys(zodRecords).length, modules: Object.keys(first).length },
    evaluation: { everyWorkflow: { heapMB: round(own.heapMB), ms: round(own.ms, 1) }, zodShared: { heapMB: round(withZod.heapMB), ms: round(withZod.ms, 1) } },
    replay: { unsharedMs: round(replay.unshared, 1), sharedMs: round(replay.shared, 1), ratio: round(replay.shared / replay.unshared), rounds },
  };
  if (args.json) {
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    return;
  }
  const e = report.evaluation;
  process.stdout.write(
    [
      `Keel sandbox benchmark: what one workflow costs before it runs (support desk bundle, ${report.params.modules} modules, ${report.params.zodModules} of them zod's)`,
      machineLine(machine),
      '',
      `Module evaluation per workflow (${args.contexts} fresh vm contexts per mode; heap retained after a collection):`,
      renderTable(
        ['mode', 'heap MB / workflow', 'ms / workflow'],
        [
          ['every workflow evaluates zod', e.everyWorkflow.heapMB.toFixed(2), e.everyWorkflow.ms.toFixed(1)],
          ['zod shared (shared-libraries.ts)', e.zodShared.heapMB.toFixed(2), e.zodShared.ms.toFixed(1)],
          ['ratio', (e.zodShared.heapMB / e.everyWorkflow.heapMB).toFixed(2), (e.zodShared.ms / e.everyWorkflow.ms).toFixed(2)],
        ],
      ),
      '',
      `Replay of test/histories/refund-demo.json through Worker.runReplayHistories (${args.replays} per round, ${args.rounds} rounds in ABBA order, median of rounds):`,
      renderTable(
        ['bundle', 'ms / replay', 'rounds'],
        [
          ['shareLibraries: false', report.replay.unsharedMs.toFixed(1), rounds.unshared.map((x) => x.toFixed(1)).join(', ')],
          ['shareLibraries: true (default)', report.replay.sharedMs.toFixed(1), rounds.shared.map((x) => x.toFixed(1)).join(', ')],
          ['ratio', report.replay.ratio.toFixed(2), ''],
        ],
      ),
      '',
      'Evaluation is measured outside the SDK (fresh contexts, no promise hooks); the replay column is the SDK sandbox itself, where Keel adopts the shared records.',
      'Timings on this shared machine are noisy; compare within one run.',
      '',
    ].join('\n'),
  );
}

main().catch((err: unknown) => {
  process.stderr.write(`bench/sandbox failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
