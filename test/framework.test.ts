/**
 * Keel as a framework a team adopts: a tools module is checked as a whole when a worker starts (a tool or
 * agent defined wrong stops it with a message naming it); a tool chain shares the session lifecycle (its
 * approval shows in `keel approvals`) and reads fields of results larger than the model is shown;
 * `keel replay --running` passes the current build and names each open session an incompatible one breaks.
 */
import path from 'node:path';
import { bundleWorkflowCode } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { z } from 'zod';
import { defineAgent } from '../src/agents/define.js';
import { appFromModule, MAX_TOOLS_PER_AGENT } from '../src/app/registry.js';
import { defineTool } from '../src/tools/index.js';
import type { TestEnv } from '../src/testing/index.js';
import type { NotesBoard } from './support/notes-board.js';
import { startTestApp, type TestApp } from './support/test-app.js';
import { ROOT, TEST_APP_TOOLS } from './support/paths.js';
import { runKeel, until } from './support/processes.js';

const read = (name: string) => defineTool({ name, description: `Read ${name}.`, input: z.object({}), risk: 'read', run: async () => name });

describe('a tools module, checked as a whole', () => {
  it('collects tools and agents from named exports, arrays and a default object', () => {
    const a = read('a');
    const b = read('b');
    const helper = defineAgent({ name: 'helper', system: 'Help.', tools: [a] });
    const app = appFromModule({ a, all: [a, b], default: { agents: [helper] } });
    expect([...app.tools.keys()].sort()).toEqual(['a', 'b']);
    expect([...app.agents.keys()]).toEqual(['helper']);
    expect(app.warnings).toEqual([]);
  });

  it('refuses two different tools of one name, naming it', () => {
    expect(() => appFromModule({ one: read('lookup'), two: read('lookup') }, 'tools.ts')).toThrow(
      "tools.ts: two different tools are named 'lookup' (the second at export 'two'); tool names must be unique",
    );
  });

  it('refuses an agent that names a tool the module does not export', () => {
    const agent = defineAgent({ name: 'helper', system: 'Help.', tools: ['a', 'missing'] });
    expect(() => appFromModule({ a: read('a'), agent }, 'tools.ts')).toThrow(/agent 'helper' names tool 'missing', which the module does not export \(tools: a\)/);
  });

  it('refuses something that looks like a tool but skipped defineTool, and a module without tools', () => {
    expect(() => appFromModule({ raw: { name: 'raw', input: z.object({}), run: async () => 1 } })).toThrow(/export 'raw' \('raw'\) looks like a tool but was not made by defineTool/);
    expect(() => appFromModule({ helper: defineAgent({ name: 'helper', system: 'Help.' }) })).toThrow(/exports no tools/);
  });

  it(`warns when an agent offers more than ${MAX_TOOLS_PER_AGENT} tools`, () => {
    const tools = Array.from({ length: MAX_TOOLS_PER_AGENT + 1 }, (_, i) => read(`t${i}`));
    const app = appFromModule({ tools, small: defineAgent({ name: 'small', system: 'Help.', tools: tools.slice(0, 3) }) });
    expect(app.warnings).toEqual([expect.stringMatching(/^the default agent \(sessions that name no agent\) offers 21 tools to the model/)]);
  });

  it('validates an agent, naming it and the field', () => {
    expect(() => defineAgent({ name: 'helper', system: '', maxIterations: 0 })).toThrow(/agent 'helper': system: system prompt is empty; maxIterations: Too small/);
  });

  const fixtures: Array<[string, string, RegExp]> = [
    ['a tool defined wrong', 'bad-tools.ts', /^keel: test\/fixtures\/bad-tools\.ts: tool 'wire_money': an irreversible tool may make at most 1 attempt\(s\): it is never retried blindly$/],
    ['two tools of one name', 'duplicate-tools.ts', /^keel: test\/fixtures\/duplicate-tools\.ts: two different tools are named 'lookup'/],
  ];
  it.each(fixtures)('stops `keel worker` at start on %s, exit 2 and a message naming it', async (_what, file, message) => {
    const r = await runKeel(['worker', '--tools', `test/fixtures/${file}`], { TEMPORAL_ADDRESS: inject('temporalAddress'), ANTHROPIC_BASE_URL: 'http://127.0.0.1:9' });
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toMatch(message);
  }, 30_000);
});

let app: TestApp;
let env: TestEnv;
let board: NotesBoard;
beforeAll(async () => {
  app = await startTestApp();
  ({ env, board } = app);
});
afterAll(async () => {
  await app?.close();
});

describe('a tool chain under the session lifecycle', () => {
  it('shows its approval in keel approvals and resolves references into a result larger than the model is shown', async () => {
    const handle = await env.client.startChain({
      user: { id: 'teammate-1', roles: ['staff'] },
      steps: [
        // ~170 KB of JSON: more than the 64 KiB default the model is shown, and kept out of history.
        { id: 'list', tool: 'list_items', input: { count: 5000 } },
        { tool: 'post_note', input: { text: 'Last item: {{steps.list.items.4999.name}} on {{steps.list.items.4999.shelf}}' } },
      ],
    });
    const result = await env.withWorker(async () => {
      const listing = await until(async () => {
        const l = await env.client.listPendingApprovals();
        return l.pending.find((p) => p.sessionId === handle.workflowId);
      }, 'the chain in keel approvals');
      expect(listing).toMatchObject({ requestId: 'post_note-1', tool: 'post_note', risk: 'irreversible' });
      const cli = await runKeel(['approve', handle.workflowId, 'post_note-1', '--as', 'lead-1', '--role', 'approver'], env.env);
      expect(cli.code, cli.stderr).toBe(0);
      return handle.result();
    });
    expect(result.steps.map((s) => s.tool)).toEqual(['list_items', 'post_note']);
    expect(board.notes.at(-1)!.text).toBe('Last item: item-4999 on shelf-39');
  }, 60_000);
});

describe('keel replay --running', () => {
  it('passes the unchanged build and names each open session an incompatible build would break', async () => {
    const { sessionId } = await env.client.startSession({ prompt: 'What does durable mean?', user: { id: 'teammate-1' }, agent: 'notes', model: 'scripted/chat-three-turns' });
    await env.withWorker(() => until(async () => ((await env.client.status(sessionId)).awaitingMessage ? true : undefined), 'the first answer'));
    try {
      const same = await runKeel(['replay', '--running', '--json', '--tools', TEST_APP_TOOLS], { ...env.env, KEEL_WORKFLOW_BUNDLE: '' });
      expect(same.code, same.stderr).toBe(0);
      expect(JSON.parse(same.stdout)).toMatchObject({ sessions: 1, broken: [], reports: [{ workflowId: sessionId, deterministic: true }] });

      const changed = await bundleWorkflowCode({
        workflowsPath: path.join(ROOT, 'test', 'fixtures', 'changed-workflow.ts'),
        logger: { log() {}, trace() {}, debug() {}, info() {}, warn() {}, error() {} },
      });
      const file = path.join(ROOT, '.keel', 'test', 'changed-bundle.js');
      await import('node:fs/promises').then((fs) => fs.writeFile(file, changed.code));
      const broken = await runKeel(['replay', '--running'], { ...env.env, KEEL_WORKFLOW_BUNDLE: file });
      expect(broken.code).toBe(1);
      expect(broken.stdout).toContain(`${sessionId}: NOT deterministic (DeterminismViolationError)`);
      expect(broken.stdout).toMatch(new RegExp(`1 running session\\(s\\) replayed; 1 would break: ${sessionId}$`, 'm'));
    } finally {
      await env.client.cancel(sessionId);
    }
  }, 90_000);
});
