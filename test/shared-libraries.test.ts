/**
 * Zod evaluated once per workflow thread, not once per workflow (src/workflows/shared-libraries.ts). The
 * bookkeeping: only zod's module records are kept, and a workflow adopts them without replacing its own.
 * On a real worker: the second session on a worker runs its tools module on the zod the first one
 * evaluated (the probe's count says so), and still checks tool input with it, zod's module-level regexes
 * included; with `shareLibraries: false` every session evaluates zod itself.
 */
import path from 'node:path';
import { afterAll, afterEach, describe, expect, inject, it } from 'vitest';
import { bundleApp } from '../src/app/load.js';
import { createTestEnv, type TestEnv } from '../src/testing/index.js';
import { adoptSharedLibraries, publishSharedLibraries, sharedLibraryCount } from '../src/workflows/shared-libraries.js';
import { ROOT } from './support/paths.js';

const PROBE_TOOLS = path.join(ROOT, 'test', 'fixtures', 'zod-probe-tools.ts');
const quiet = { log() {}, trace() {}, debug() {}, info() {}, warn() {}, error() {} };

describe('the sharing bookkeeping', () => {
  const global = globalThis as { __TEMPORAL_ACTIVATOR__?: { moduleCache: Map<string, unknown> } };
  afterEach(() => {
    delete global.__TEMPORAL_ACTIVATOR__;
  });

  it("keeps zod's module records only, and a later workflow adopts them without replacing its own", () => {
    expect(sharedLibraryCount()).toBe(0);
    const zodCore = { exports: { core: 1 } };
    const zodClassic = { exports: { classic: 1 } };
    const first = new Map<string, unknown>([
      ['./node_modules/zod/v4/core/core.js', zodCore],
      ['./node_modules/keel/node_modules/zod/v4/classic/schemas.js', zodClassic],
      ['./src/workflows/types.ts', { exports: {} }],
      ['./node_modules/zod-extra/index.js', { exports: {} }],
      ['./examples/zod/tools.ts', { exports: {} }],
    ]);
    global.__TEMPORAL_ACTIVATOR__ = { moduleCache: first };
    publishSharedLibraries();
    expect(sharedLibraryCount()).toBe(2);

    const own = { exports: { mine: true } };
    const later = new Map<string, unknown>([['./node_modules/zod/v4/core/core.js', own]]);
    global.__TEMPORAL_ACTIVATOR__ = { moduleCache: later };
    adoptSharedLibraries();
    expect(later.get('./node_modules/zod/v4/core/core.js')).toBe(own);
    expect(later.get('./node_modules/keel/node_modules/zod/v4/classic/schemas.js')).toBe(zodClassic);
    expect([...later.keys()]).toHaveLength(2);
  });

  it('does nothing outside a workflow, or where the sandbox keeps no module cache', () => {
    const before = sharedLibraryCount();
    expect(() => adoptSharedLibraries()).not.toThrow();
    global.__TEMPORAL_ACTIVATOR__ = { moduleCache: 'not a map' as unknown as Map<string, unknown> };
    expect(() => publishSharedLibraries()).not.toThrow();
    expect(sharedLibraryCount()).toBe(before);
  });
});

/** Calls zod_probe with `contact`, then answers. */
const probeScenario = (name: string, contact: string) => ({
  name,
  description: 'Calls zod_probe once, then answers.',
  turns: [
    { content: [{ type: 'tool_use' as const, name: 'zod_probe', input: { contact } }], stop_reason: 'tool_use' as const },
    { content: [{ type: 'text' as const, text: 'Probed.' }], stop_reason: 'end_turn' as const },
  ],
});

describe.each([true, false])('sessions on one worker, shareLibraries: %s', (shareLibraries) => {
  let env: TestEnv | undefined;
  afterAll(async () => {
    await env?.close();
  });

  /** The count in zod_probe's description as the session's first model call saw it. */
  const probeCount = async (sessionId: string): Promise<number> => {
    const history = await env!.client.session(sessionId).fetchHistory();
    const e = history.events!.find((x) => x.activityTaskScheduledEventAttributes?.activityType?.name === 'callModel')!;
    const input = JSON.parse(Buffer.from(e.activityTaskScheduledEventAttributes!.input!.payloads![0]!.data!).toString()) as { tools: Array<{ name: string; description: string }> };
    return Number(/: (\d+)$/.exec(input.tools.find((t) => t.name === 'zod_probe')!.description)![1]);
  };

  it(shareLibraries ? 'runs the second session on the zod the first evaluated, and checks input with it' : 'evaluates zod in every session', async () => {
    const bundle = await bundleApp(PROBE_TOOLS, { logger: quiet, shareLibraries });
    env = await createTestEnv({
      tools: PROBE_TOOLS,
      scenarios: [probeScenario('probe-valid', 'ada@example.com'), probeScenario('probe-invalid', 'not an address')],
      scenarioDirs: [],
      temporalAddress: inject('temporalAddress'),
      workflowBundle: { code: bundle.code },
    });
    const user = { id: 'probe-user', roles: ['support'] };
    const results = await env.withWorker(async () => {
      const out = [];
      // One after another on the one worker (and so on its one workflow thread).
      for (const model of ['scripted/probe-valid', 'scripted/probe-invalid', 'scripted/probe-valid']) {
        const { sessionId, handle } = await env!.client.startSession({ prompt: 'Probe', user, model });
        out.push({ sessionId, result: await handle.result() });
      }
      return out;
    });
    const counts = await Promise.all(results.map((r) => probeCount(r.sessionId)));
    expect(counts).toEqual(shareLibraries ? [1, 2, 3] : [1, 1, 1]);
    // zod checks input in every session: a valid address reaches the tool, an invalid one is refused.
    expect(results.map((r) => r.result.toolCalls[0]?.outcome)).toEqual(['ok', 'rejected', 'ok']);
    expect(results[1]!.result.toolCalls[0]?.error).toMatch(/contact/);
  }, 120_000);
});
