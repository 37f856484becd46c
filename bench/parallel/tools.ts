/**
 * The parallel-tools benchmark's tools module: what its worker loads and bundles into the workflow code.
 * Two read tools that touch no downstream: `slow_lookup` waits a given time (200 ms by default) and returns
 * the key it was given, standing in for a slow read (a search, a remote API); `fast_lookup` returns the key
 * at once, so a step with it costs only Keel's own overhead. Both are plain `read` tools with the tier's
 * defaults (5 s timeout), so a session with `execution: { reads: 'local' }` runs them as local activities.
 * Sandbox-safe: it imports `keel/workflow` and zod only, like `examples/support-desk/tools.ts`; the timer
 * is only ever started by `run`, which runs in the worker, never in the workflow.
 */
import { z } from 'zod';
import { defineTool } from 'keel/workflow';

/** How long `slow_lookup` waits when its input names no time, in ms. */
export const SLOW_LOOKUP_DEFAULT_MS = 200;
/** The longest wait `slow_lookup` takes, in ms: well inside the read tier's 5 s timeout. */
export const SLOW_LOOKUP_MAX_MS = 4000;

const Key = z.string().min(1).max(200).describe('What to look up');

/** Resolves after `ms`, or rejects with the signal's reason as soon as it is aborted (activity cancelled). */
function wait(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason instanceof Error ? signal.reason : new Error('slow_lookup was cancelled'));
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason instanceof Error ? signal.reason : new Error('slow_lookup was cancelled'));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** A read that takes `ms` milliseconds (200 by default), then returns its key. */
export const slowLookup = defineTool({
  name: 'slow_lookup',
  description: 'Look up a key in the slow index. Takes about `ms` milliseconds (200 by default). Read-only; safe to repeat. Returns the key.',
  input: z.object({
    key: Key,
    ms: z.number().int().min(0).max(SLOW_LOOKUP_MAX_MS).optional().describe(`How long the lookup takes, in ms (${SLOW_LOOKUP_DEFAULT_MS} by default)`),
  }),
  risk: 'read',
  run: async (input, ctx) => {
    await wait(input.ms ?? SLOW_LOOKUP_DEFAULT_MS, ctx.signal);
    return input.key;
  },
});

/** A read that answers at once with its key. */
export const fastLookup = defineTool({
  name: 'fast_lookup',
  description: 'Look up a key in the fast index. Answers at once. Read-only; safe to repeat. Returns the key.',
  input: z.object({ key: Key }),
  risk: 'read',
  run: (input) => Promise.resolve(input.key),
});
