/**
 * The Node side of `run_code`: runs one JavaScript program in QuickJS compiled to WebAssembly
 * (`quickjs-emscripten`), in a worker thread, WebAssembly instance, runtime and context of its own, all
 * thrown away after the call. The program gets a time limit (an interrupt handler QuickJS polls while it runs), a
 * memory limit and a stack limit (QuickJS's own allocator and stack checks), and sees nothing of the
 * host but `console.log` and the `input` value: QuickJS has no network, filesystem, process, timer or
 * module APIs unless a host adds them, and this one adds none (no module loader either, so `import()`
 * rejects).
 *
 * Not sandbox-safe (it loads WebAssembly from disk): only the tool's `run` imports it, lazily, so it
 * never reaches the workflow bundle. It reports what happened as a value; the tool turns a failure into
 * the `ToolError` the model reads.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { newQuickJSWASMModule, RELEASE_SYNC, type QuickJSContext, type QuickJSHandle, type QuickJSRuntime } from 'quickjs-emscripten';

/** The limits one program runs under. */
export interface SandboxLimits {
  /** Wall-clock time the program may run, in milliseconds. */
  timeLimitMs: number;
  /** Memory QuickJS may allocate for the program's heap, in bytes. */
  memoryLimitBytes: number;
  /** The interpreter's stack, in bytes (deep recursion stops here with a RangeError). */
  maxStackBytes: number;
  /** `console.log` lines kept; later ones are counted, not kept. */
  maxLogLines: number;
  /** Characters of `console.log` output kept in all. */
  maxLogChars: number;
}

/** Why a program did not finish with a value. */
export type SandboxStop =
  /** It ran past `timeLimitMs` and was interrupted. */
  | 'time'
  /** It tried to allocate past `memoryLimitBytes`. */
  | 'memory'
  /** It recursed past `maxStackBytes`. */
  | 'stack'
  /** It threw (a syntax error, a runtime error, a rejected promise), or its promise never settles. */
  | 'error'
  /** The caller aborted (the activity was cancelled). */
  | 'cancelled';

/** What running a program came to: its result and logs, or why it stopped. */
export type SandboxOutcome =
  | { ok: true; result: unknown; logs: string[]; ms: number }
  /** `message` completes "the program …" for an error ("threw TypeError: x is not a function (line 3)"). */
  | { ok: false; stop: SandboxStop; message: string; logs: string[]; ms: number };

/**
 * Runs `code` in a worker thread of its own (see {@link evaluate}) and ends that thread when the program
 * outlives its time limit by `HARD_STOP_GRACE_MS`. QuickJS polls its interrupt handler every few thousand
 * interpreter steps, and a step can be slow (`'x'.repeat(1e6)` in a loop overran a 1 s limit by 40 s when
 * tried), so the in-thread deadline alone cannot bound how long a program holds a thread; terminating the
 * worker can, and keeps the worker's event loop (heartbeats, other activities) free meanwhile.
 */
export function runInSandbox(code: string, input: unknown, limits: SandboxLimits, signal?: AbortSignal): Promise<SandboxOutcome> {
  const started = performance.now();
  return new Promise<SandboxOutcome>((resolve) => {
    const worker = new Worker(WORKER_BOOTSTRAP, {
      eval: true,
      workerData: { code, input, limits } satisfies SandboxJob,
      resourceLimits: { maxOldGenerationSizeMb: 64, maxYoungGenerationSizeMb: 16 },
      stdout: true,
      stderr: true,
    });
    let settled = false;
    const finish = (outcome: SandboxOutcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(hardStop);
      signal?.removeEventListener('abort', onAbort);
      void worker.terminate();
      resolve(outcome);
    };
    const stopped = (stop: SandboxStop, message = ''): SandboxOutcome => ({ ok: false, stop, message, logs: [], ms: Math.round(performance.now() - started) });
    // Counted from when the thread has loaded and starts the program, as the in-thread deadline is.
    let hardStop: ReturnType<typeof setTimeout> | undefined;
    const onAbort = () => finish(stopped('cancelled'));
    if (signal?.aborted) return finish(stopped('cancelled'));
    signal?.addEventListener('abort', onAbort, { once: true });
    worker.on('message', (message: SandboxOutcome | 'started') => {
      if (message === 'started') hardStop = setTimeout(() => finish(stopped('time')), limits.timeLimitMs + HARD_STOP_GRACE_MS);
      else finish(message);
    });
    worker.once('error', (err) => finish(stopped('error', `stopped: the sandbox failed (${err.message})`)));
    worker.once('exit', (exitCode) => finish(stopped('error', `stopped: the sandbox thread exited (${exitCode})`)));
  });
}

/**
 * The thread's entry: loads `./worker.ts` through tsx's API, so the thread runs TypeScript whatever loader
 * (tsx, vitest) its parent uses.
 */
const WORKER_BOOTSTRAP = `import(${JSON.stringify(tsxEsmApi())})
  .then(({ tsImport }) => tsImport(${JSON.stringify(new URL('./worker.ts', import.meta.url).href)}, ${JSON.stringify(import.meta.url)}));`;

/** The ESM entry of `tsx/esm/api`, from tsx's own exports map (`require.resolve` would give the CommonJS one). */
function tsxEsmApi(): string {
  const manifest = createRequire(import.meta.url).resolve('tsx/package.json');
  const pkg = JSON.parse(readFileSync(manifest, 'utf8')) as { exports: Record<string, { import: { default: string } }> };
  return pathToFileURL(path.join(path.dirname(manifest), pkg.exports['./esm/api']!.import.default)).href;
}

/** What a sandbox thread is given. */
export interface SandboxJob {
  code: string;
  input: unknown;
  limits: SandboxLimits;
}

/** How long past its time limit a program's thread is ended if the interrupt has not stopped it (ms). */
export const HARD_STOP_GRACE_MS = 500;

/**
 * Runs `code` as a script (its result is the value of its last expression; a promise is awaited) with
 * `input` as a global, on the calling thread. Resolves with an outcome; rejects only when the sandbox
 * itself could not start. The sandbox thread calls it; use {@link runInSandbox}.
 */
export async function evaluate(code: string, input: unknown, limits: SandboxLimits, signal?: AbortSignal): Promise<SandboxOutcome> {
  // A WebAssembly instance of its own per call: nothing a program (or a QuickJS fault) does can reach the next call.
  const wasm = await newQuickJSWASMModule(RELEASE_SYNC);
  const logs = new LogBuffer(limits.maxLogLines, limits.maxLogChars);
  const started = performance.now();
  const deadline = started + limits.timeLimitMs;
  let interrupted: 'time' | 'cancelled' | undefined;
  const runtime = wasm.newRuntime();
  runtime.setMemoryLimit(limits.memoryLimitBytes);
  runtime.setMaxStackSize(limits.maxStackBytes);
  // QuickJS calls this every few thousand operations; returning true throws an uncatchable "interrupted".
  runtime.setInterruptHandler(() => {
    if (signal?.aborted) interrupted = 'cancelled';
    else if (performance.now() > deadline) interrupted = 'time';
    return interrupted !== undefined;
  });
  const vm = runtime.newContext();
  const done = (outcome: { ok: true; result: unknown } | { ok: false; stop: SandboxStop; message: string }): SandboxOutcome => ({
    ...outcome,
    logs: logs.lines(),
    ms: Math.round(performance.now() - started),
  });
  const failed = (errorHandle: QuickJSHandle): SandboxOutcome => {
    const thrown = classify(vm, errorHandle);
    // An interrupt surfaces as a thrown InternalError "interrupted": the flag says which limit it was.
    return done(interrupted ? { ok: false, stop: interrupted, message: '' } : { ok: false, ...thrown });
  };
  try {
    installGlobals(vm, logs, input);
    const evaluated = vm.evalCode(code, 'program.js', { type: 'global' });
    if (evaluated.error) return failed(evaluated.error);
    return settle(vm, runtime, evaluated.value, () => interrupted, failed, done, deadline);
  } catch (err) {
    // The host side failed (out of WebAssembly memory, a QuickJS assertion): report, never leak the instance.
    return done({ ok: false, stop: interrupted ?? 'error', message: `stopped: the sandbox failed (${(err as Error).message})` });
  } finally {
    try {
      vm.dispose();
      runtime.dispose();
    } catch {
      // A QuickJS fault can leave the instance unusable; it is dropped with this call either way.
    }
  }
}

/** `console.log` (captured) and `input` (a copy of the JSON value): the only things the program gets from the host. */
function installGlobals(vm: QuickJSContext, logs: LogBuffer, input: unknown): void {
  const consoleObject = vm.newObject();
  const log = vm.newFunction('log', (...args: QuickJSHandle[]) => {
    logs.add(args.map((a) => show(vm, a)).join(' '));
  });
  vm.setProp(consoleObject, 'log', log);
  vm.setProp(vm.global, 'console', consoleObject);
  log.dispose();
  consoleObject.dispose();
  // The input crosses as JSON text (a string literal: JSON.stringify of a string is one), parsed inside.
  const json = input === undefined ? 'undefined' : `JSON.parse(${JSON.stringify(JSON.stringify(input))})`;
  const set = vm.evalCode(`globalThis.input = ${json}; undefined`, 'input.js');
  if (set.error) {
    const message = String((vm.dump(set.error) as { message?: unknown } | undefined)?.message ?? 'unknown error');
    set.error.dispose();
    throw new Error(`could not pass the input in: ${message}`);
  }
  set.value.dispose();
}

/** Awaits a promise result by running QuickJS's job queue (there are no timers, so it settles now or never). */
function settle(
  vm: QuickJSContext,
  runtime: QuickJSRuntime,
  value: QuickJSHandle,
  interrupted: () => 'time' | 'cancelled' | undefined,
  failed: (error: QuickJSHandle) => SandboxOutcome,
  done: (outcome: { ok: true; result: unknown } | { ok: false; stop: SandboxStop; message: string }) => SandboxOutcome,
  deadline: number,
): SandboxOutcome {
  try {
    for (;;) {
      const state = vm.getPromiseState(value);
      if (state.type === 'fulfilled') {
        if (state.notAPromise) return done({ ok: true, result: vm.dump(value) as unknown });
        try {
          return done({ ok: true, result: vm.dump(state.value) as unknown });
        } finally {
          state.value.dispose();
        }
      }
      if (state.type === 'rejected') return failed(state.error);
      const ran = runtime.executePendingJobs(1000);
      if (ran.error) return failed(ran.error);
      const stop = interrupted() ?? (performance.now() > deadline ? 'time' : undefined);
      if (stop) return done({ ok: false, stop, message: '' });
      if (ran.value === 0) {
        return done({ ok: false, stop: 'error', message: 'returned a promise that never settles (the sandbox has no timers or I/O to wait for)' });
      }
    }
  } finally {
    value.dispose();
  }
}

/** Sorts a thrown value into the limit it hit, or a plain error with its message. Disposes the handle. */
function classify(vm: QuickJSContext, errorHandle: QuickJSHandle): { stop: SandboxStop; message: string } {
  let error: unknown;
  try {
    error = vm.dump(errorHandle);
  } catch {
    error = undefined;
  } finally {
    errorHandle.dispose();
  }
  const e = (typeof error === 'object' && error !== null ? error : {}) as { name?: unknown; message?: unknown; stack?: unknown };
  const name = typeof e.name === 'string' ? e.name : undefined;
  const message = typeof e.message === 'string' ? e.message : error === undefined || error === null ? '' : JSON.stringify(error) ?? String(error);
  // QuickJS reports an allocation past the limit as InternalError "out of memory" (or, when even that
  // cannot be allocated, as a null exception).
  if (error === null || /out of memory/i.test(message)) return { stop: 'memory', message };
  if (/stack overflow|call stack/i.test(message)) return { stop: 'stack', message };
  const line = typeof e.stack === 'string' ? /program\.js:(\d+)/.exec(e.stack)?.[1] : undefined;
  const described = name ? `threw ${name}: ${message}` : `threw ${message || 'without a message'}`;
  return { stop: 'error', message: line ? `${described} (line ${line})` : described };
}

/** One `console.log` argument as text: strings as they are, other values as JSON where they have one. */
function show(vm: QuickJSContext, handle: QuickJSHandle): string {
  if (vm.typeof(handle) === 'string') return vm.getString(handle);
  const value = vm.dump(handle) as unknown;
  if (value === undefined) return 'undefined';
  if (typeof value === 'string') return value;
  return JSON.stringify(value) ?? String(value);
}

/** `console.log` output, capped by lines and characters; what is dropped is counted. */
class LogBuffer {
  private readonly kept: string[] = [];
  private chars = 0;
  private dropped = 0;

  constructor(
    private readonly maxLines: number,
    private readonly maxChars: number,
  ) {}

  add(line: string): void {
    if (this.kept.length >= this.maxLines || this.chars >= this.maxChars) {
      this.dropped++;
      return;
    }
    const room = this.maxChars - this.chars;
    const kept = line.length > room ? `${line.slice(0, room)}…` : line;
    this.kept.push(kept);
    this.chars += kept.length;
  }

  lines(): string[] {
    return this.dropped ? [...this.kept, `… ${this.dropped} more line(s) not kept`] : [...this.kept];
  }
}
