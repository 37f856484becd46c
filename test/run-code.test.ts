/**
 * The `run_code` example tool: a JavaScript program runs in QuickJS (WebAssembly) and the model gets its
 * result and logs; a program that loops forever, allocates too much, recurses too deep or throws ends
 * as a `ToolError` naming the limit or the error; the sandbox offers nothing of the host (no `require`,
 * `process`, `fetch`, modules) and nothing survives from one call to the next. And one session through a
 * real worker: the model's endless loop ends at the time limit, the model is told, the session completes.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ToolError, type ToolContext } from '../src/tools/index.js';
import { createTestEnv, type TestEnv } from '../src/testing/index.js';
import { runCode, RUN_CODE_LIMITS, MAX_CODE_CHARS } from '../examples/support-desk/sandbox/run-code.js';
import { EXAMPLE_TOOLS } from './support/paths.js';

const quiet = { info() {}, warn() {}, error() {} };
const ctx = (signal = new AbortController().signal): ToolContext => ({
  idempotencyKey: 'test:run_code',
  signal,
  log: quiet,
  session: { workflowId: 'test', userId: 'u1', roles: [] },
  toolUseId: 'toolu_1',
  env: {},
  traceHeaders: {},
  // run_code reaches nothing outside its sandbox: a fetch would be a bug.
  fetch: () => Promise.reject(new Error('run_code must not fetch')),
  progress: () => undefined,
});

/** Calls the tool the way the worker does: the input through its schema, then `run`. */
const run = (input: { code: string; input?: unknown }, signal?: AbortSignal) => runCode.run(runCode.input.parse(input), ctx(signal));

/** The ToolError a call ends with (fails the test when it succeeds or throws something else). */
const refusal = async (input: { code: string; input?: unknown }) => {
  const err = await run(input).then(
    (out) => ({ unexpected: out }),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ToolError);
  return err as ToolError;
};

describe('run_code', () => {
  it('returns the value of the last expression and what the program logged', async () => {
    const out = await run({ code: "console.log('sum', 1 + 2, { a: 1 }, [true]); console.log(); [1, 2, 3].map((x) => x * 2)" });
    expect(out).toEqual({ result: [2, 4, 6], logs: ['sum 3 {"a":1} [true]', ''] });
  });

  it('hands the program its input, and awaits a promise', async () => {
    const input = { items: [{ sku: 'a', cents: 1250 }, { sku: 'b', cents: 399 }] };
    expect(await run({ code: 'input.items.reduce((s, i) => s + i.cents, 0)', input })).toEqual({ result: 1649, logs: [] });
    expect(await run({ code: '(async () => { await null; return input.items.map((i) => i.sku).join() })()', input })).toMatchObject({ result: 'a,b' });
    expect(await run({ code: 'typeof input' })).toMatchObject({ result: 'undefined' });
  });

  it('keeps the first lines of a chatty program and says how many it dropped', async () => {
    const { logs } = await run({ code: 'for (let i = 0; i < 1000; i++) console.log(i); null' });
    expect(logs).toHaveLength(RUN_CODE_LIMITS.maxLogLines + 1);
    expect(logs.at(-1)).toBe(`… ${1000 - RUN_CODE_LIMITS.maxLogLines} more line(s) not kept`);
  });

  it('stops a program that loops forever at its time limit, and the model reads why', async () => {
    // A call starts a thread before the program runs: time that with a trivial program, and subtract it.
    let started = performance.now();
    await run({ code: '0' });
    const startup = performance.now() - started;
    started = performance.now();
    const err = await refusal({ code: "console.log('starting'); while (true) {}" });
    const ms = performance.now() - started - startup;
    expect(err.message).toMatch(/^run_code stopped the program at its 1000 ms time limit/);
    expect(err.message).toContain('["starting"]');
    expect(err.retryable).toBe(false);
    expect(ms + startup).toBeGreaterThanOrEqual(RUN_CODE_LIMITS.timeLimitMs);
    expect(ms).toBeLessThan(RUN_CODE_LIMITS.timeLimitMs * 2);
  });

  it('cannot catch its way past the time limit, or hide behind a promise', async () => {
    expect((await refusal({ code: 'for (;;) { try { while (true) {} } catch (e) {} }' })).message).toMatch(/1000 ms time limit/);
    expect((await refusal({ code: '(async () => { for (;;) await null })()' })).message).toMatch(/1000 ms time limit/);
  });

  it('stops a program that allocates past its memory limit', async () => {
    const err = await refusal({ code: "const big = 'x'.repeat(64 * 1024 * 1024); big.length" });
    expect(err.message).toMatch(/^run_code stopped the program at its 16 MiB memory limit/);
  });

  it('stops runaway recursion at its stack limit', async () => {
    const err = await refusal({ code: 'function down(n) { return down(n + 1) + 1 } down(0)' });
    expect(err.message).toMatch(/^run_code stopped the program at its 256 KiB stack limit/);
  });

  it('reports a syntax error, a runtime error and a rejected promise with the JavaScript message', async () => {
    expect((await refusal({ code: 'let x = ;' })).message).toMatch(/^run_code ran the program and it threw SyntaxError: .+\(line 1\)/);
    expect((await refusal({ code: '\nconst o = null;\no.field' })).message).toMatch(/threw TypeError: .*null.*\(line 3\)/);
    expect((await refusal({ code: "Promise.reject(new RangeError('too big'))" })).message).toMatch(/threw RangeError: too big/);
    expect((await refusal({ code: 'new Promise(() => {})' })).message).toMatch(/never settles/);
  });

  it('offers nothing of the host: no require, process, fetch, timers or modules', async () => {
    const probe = await run({
      code: `({
        host: ['require', 'process', 'fetch', 'XMLHttpRequest', 'WebSocket', 'setTimeout', 'setInterval', 'module', 'exports',
               'Buffer', 'std', 'os', 'print', 'Deno', 'Bun', 'WebAssembly']
          .filter((name) => name in globalThis || typeof globalThis[name] !== 'undefined'),
        own: Object.getOwnPropertyNames(globalThis),
        consoleKeys: Object.keys(console),
      })`,
    });
    const { host, own, consoleKeys } = probe.result as { host: string[]; own: string[]; consoleKeys: string[] };
    expect(host).toEqual([]);
    expect(own).toEqual(expect.arrayContaining(['console', 'input', 'JSON', 'Math']));
    expect(consoleKeys).toEqual(['log']);
    const imported = await run({ code: "import('node:fs').then(() => 'loaded', (e) => 'refused: ' + e.message)" });
    expect(imported.result).toMatch(/^refused: /);
    expect((await refusal({ code: "import fs from 'fs'" })).message).toMatch(/SyntaxError/);
  });

  it('starts every call from scratch: nothing one program sets is there for the next', async () => {
    await run({ code: "globalThis.leak = 42; Object.prototype.polluted = 'yes'; Array.prototype.map = null; 'set'" });
    const next = await run({ code: '[typeof leak, ({}).polluted, typeof [].map]' });
    expect(next.result).toEqual(['undefined', null, 'function']); // JSON has no undefined: an absent property reads back as null
  });

  it('refuses a program larger than its schema allows before anything runs', () => {
    expect(runCode.input.safeParse({ code: 'x'.repeat(MAX_CODE_CHARS + 1) }).success).toBe(false);
    expect(runCode.policy).toMatchObject({ risk: 'read', approval: 'never' });
    expect(runCode.description).toMatch(/no side effects outside the sandbox/);
  });
});

describe('a session whose model runs an endless loop', () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await createTestEnv({
      tools: EXAMPLE_TOOLS,
      workflowBundle: { codePath: inject('workflowBundlePath') },
      temporalAddress: inject('temporalAddress'),
      scenarioDirs: [],
      scenarios: [
        {
          name: 'run-code-loop',
          description: 'Runs a program that never ends, then answers from the error it got.',
          turns: [
            { content: [{ type: 'tool_use', name: 'run_code', input: { code: 'let n = 0; while (true) { n++ }' } }], stop_reason: 'tool_use' },
            {
              content: [{ type: 'text', text: 'My program looped forever; I stopped trying.' }],
              stop_reason: 'end_turn',
              expect: { tool_results: [{ is_error: true, contains: '1000 ms time limit' }] },
            },
          ],
        },
      ],
    });
  });
  afterAll(async () => {
    await env?.close();
  });

  it('completes: the call ends at the time limit and the model reads an is_error naming it', async () => {
    const { handle } = await env.client.startSession({ prompt: 'Add up 1 to infinity', user: { id: 'u1' }, model: 'scripted/run-code-loop' });
    const result = await env.withWorker(() => handle.result());
    expect(result.toolCalls).toMatchObject([{ name: 'run_code', outcome: 'error', error: expect.stringMatching(/run_code stopped the program at its 1000 ms time limit/) }]);
    expect(result.answer).toBe('My program looped forever; I stopped trying.');
  });
});
