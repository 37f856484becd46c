/**
 * Libraries evaluated once per workflow thread instead of once per workflow.
 *
 * The SDK's sandbox (reusable V8 context) evaluates the bundle's modules again for every workflow it
 * creates, and so for every replay of a session that left the cache: each one paid for zod's own module
 * code, about half of that evaluation's time and memory (bench/approvals, README). The SDK's own sharing
 * (`preloadModules`) deep-freezes what it shares, which zod does not survive: it resets `lastIndex` on its
 * module-level regexes (`z.email()` throws) and configures itself on first use. So zod is shared here
 * instead: the first workflow on a thread evaluates it as usual, this map keeps its module records, and
 * each later workflow puts them into its own module cache before anything of it imports zod.
 *
 * Why that is safe: zod keeps no state that one workflow could leave for another to see. What it keeps
 * at module level is its configuration (set once, the same for everyone), registries keyed by schema
 * (each workflow's schemas are its own) and regexes it resets before each use; workflow code on a thread
 * runs one activation at a time, and zod reads globals such as `Date` when called, so it sees the
 * current workflow's. Keel's own modules and the team's tools module are not shared: they stay per
 * workflow, as the SDK intends.
 *
 * This module is preloaded (`bundleApp` passes it in `preloadModules`), so its map is one per thread; the
 * SDK freezes the map object, which does not stop a Map from holding entries. It relies on two details of
 * the SDK's sandbox (the activator's per-workflow `moduleCache`, and webpack's module records in it);
 * where they are missing (another SDK version, `reuseV8Context: false`, the replayer's fresh contexts)
 * nothing is shared and every workflow evaluates zod itself, as before. Sandbox-safe: no imports.
 */

/** Module ids (webpack's, paths in the bundle) of the libraries shared across workflows. */
const SHARED = /(?:^|[\\/])node_modules[\\/]zod[\\/]/;

/** Whether a bundle's module (by webpack's id) is one of the libraries a thread's workflows share. */
export function isSharedLibrary(moduleId: string): boolean {
  return SHARED.test(moduleId);
}

/** webpack's record of one module: `{ exports }`. */
interface ModuleRecord {
  exports?: unknown;
}

/** The thread's shared module records by id, taken from the first workflow that evaluated them. */
const shared = new Map<string, ModuleRecord>();

/** The current workflow's module cache (the SDK's activator keeps one per workflow), if there is one. */
function workflowModuleCache(): Map<string, ModuleRecord> | undefined {
  const cache = (globalThis as { __TEMPORAL_ACTIVATOR__?: { moduleCache?: unknown } }).__TEMPORAL_ACTIVATOR__?.moduleCache;
  return cache instanceof Map ? (cache as Map<string, ModuleRecord>) : undefined;
}

/** Puts the thread's shared libraries into this workflow's module cache; first thing the bundle's entry does. */
export function adoptSharedLibraries(): void {
  const cache = workflowModuleCache();
  if (!cache) return;
  for (const [id, record] of shared) if (!cache.has(id)) cache.set(id, record);
}

/**
 * Keeps this workflow's shared libraries for the workflows after it. The last thing the bundle's entry
 * does, once every module it imports has been evaluated (requires are synchronous), so only whole modules
 * are kept.
 */
export function publishSharedLibraries(): void {
  const cache = workflowModuleCache();
  if (!cache) return;
  for (const [id, record] of cache) if (isSharedLibrary(id) && !shared.has(id)) shared.set(id, record);
}

/** How many module records the thread shares (for tests and benchmarks). */
export function sharedLibraryCount(): number {
  return shared.size;
}
