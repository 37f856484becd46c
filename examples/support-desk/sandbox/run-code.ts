/**
 * The `run_code` tool: the model writes a short JavaScript program (arithmetic on an order's lines,
 * reshaping a lookup's JSON) and gets its result and `console.log` output back. The program runs in
 * QuickJS compiled to WebAssembly with a time limit, a memory limit and a stack limit, and sees nothing of
 * the host but `console.log` and `input`: no network, no filesystem, no process, no modules. A program
 * that runs too long, allocates too much or throws becomes an `is_error` result the model can read.
 *
 * Sandbox-safe: this module imports `keel/workflow` and zod only. The QuickJS side (`./quickjs.ts`, which
 * loads WebAssembly from disk) is imported inside `run`, with `webpackIgnore` so the workflow bundler
 * leaves that import alone: workflow code never runs a tool, and the bundle never carries the WASM.
 */
import { z } from 'zod';
import { defineTool, ToolError } from 'keel/workflow';
import type { SandboxLimits, SandboxOutcome } from './quickjs.js';

/**
 * What one program may use: 1 s of wall-clock time, 16 MiB of heap, 256 KiB of interpreter stack, and
 * 100 log lines / 8,000 characters of `console.log` output. Each program runs in a thread of its own,
 * ended 500 ms past the time limit if the interrupt has not stopped it.
 */
export const RUN_CODE_LIMITS: SandboxLimits = {
  timeLimitMs: 1_000,
  memoryLimitBytes: 16 * 1024 * 1024,
  maxStackBytes: 256 * 1024,
  maxLogLines: 100,
  maxLogChars: 8_000,
};

/** Largest program, in characters. */
export const MAX_CODE_CHARS = 20_000;
/** Largest `input`, in characters of JSON. */
export const MAX_INPUT_CHARS = 100_000;

const mib = (bytes: number) => `${Math.round(bytes / (1024 * 1024))} MiB`;
const kib = (bytes: number) => `${Math.round(bytes / 1024)} KiB`;

/** Loads the QuickJS side on first use; `webpackIgnore` keeps the workflow bundler from following the import. */
const loadSandbox = () => import(/* webpackIgnore: true */ './quickjs.js');

/** What the model reads when a program did not finish: the limit it hit or the error it threw, and its last logs. */
function stopMessage(outcome: Extract<SandboxOutcome, { ok: false }>): string {
  const logs = outcome.logs.length ? ` Its console.log output before it stopped: ${JSON.stringify(outcome.logs.slice(-10))}` : '';
  const stopped = 'run_code stopped the program at its';
  switch (outcome.stop) {
    case 'time':
      return `${stopped} ${RUN_CODE_LIMITS.timeLimitMs} ms time limit (an endless loop, or too much work): make it do less or fix the loop.${logs}`;
    case 'memory':
      return `${stopped} ${mib(RUN_CODE_LIMITS.memoryLimitBytes)} memory limit: build smaller values.${logs}`;
    case 'stack':
      return `${stopped} ${kib(RUN_CODE_LIMITS.maxStackBytes)} stack limit (recursion too deep): use a loop.${logs}`;
    case 'cancelled':
      return 'run_code stopped the program: the call was cancelled.';
    case 'error':
      return `run_code ran the program and it ${outcome.message}.${logs}`;
  }
}

/** Runs a short JavaScript program in a WebAssembly sandbox. Read tier: it changes nothing outside the sandbox. */
export const runCode = defineTool({
  name: 'run_code',
  description:
    'Run a short JavaScript program (ES2023, no imports) in an isolated sandbox and get back the value of its last ' +
    'expression (as JSON; a promise is awaited) and what it printed with console.log. Use it for arithmetic, ' +
    'dates, sorting and reshaping data you already have: pass that data as `input` and read the global `input`. ' +
    'The sandbox has no network, no filesystem, no timers and no modules, and each call starts from scratch. ' +
    `Limits: ${RUN_CODE_LIMITS.timeLimitMs} ms, ${mib(RUN_CODE_LIMITS.memoryLimitBytes)} of memory. ` +
    'Read-only: it has no side effects outside the sandbox; safe to repeat.',
  input: z.object({
    code: z.string().min(1).max(MAX_CODE_CHARS).describe('The program. Its last expression is the result, e.g. `input.items.reduce((s, i) => s + i.cents, 0)`'),
    input: z
      .unknown()
      .optional()
      .refine((v) => v === undefined || (JSON.stringify(v)?.length ?? 0) <= MAX_INPUT_CHARS, { message: `input must be at most ${MAX_INPUT_CHARS} characters of JSON` })
      .describe('Any JSON value, available to the program as the global `input`'),
  }),
  risk: 'read',
  // The model can work without it: if the sandbox itself cannot start, the session goes on with a note.
  criticality: 'optional',
  run: async ({ code, input }, ctx) => {
    const { runInSandbox } = await loadSandbox();
    const outcome = await runInSandbox(code, input, RUN_CODE_LIMITS, ctx.signal);
    if (!outcome.ok) {
      ctx.log.info('run_code stopped a program', { stop: outcome.stop, duration_ms: outcome.ms });
      throw new ToolError(stopMessage(outcome));
    }
    return { result: outcome.result ?? null, logs: outcome.logs };
  },
});
