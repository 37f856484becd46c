/**
 * MCP tools, end to end against real MCP server processes: the test ledger server (`fixtures/mcp-ledger.ts`,
 * built on the SDK's `McpServer`) spawned by the worker over stdio, and the same server over streamable
 * HTTP. Its tools are listed and offered to the model beside a native one; a read tool runs at once; a tool
 * with no tier configured is held for a person and, once approved, runs exactly once (its ledger as
 * witness, the idempotency key in `_meta`) with its audit rows; bad input and the server's `isError` come
 * back as `is_error` results; a hanging tool's failures open its breaker, and the next call never reaches
 * the server. The captured history replays against the same bundle.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { defaultPayloadConverter } from '@temporalio/common';
import type { WorkflowBundle } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { z } from 'zod';
import { bundleApp } from '../src/app/load.js';
import { appFromModule, checkAppReferences } from '../src/app/registry.js';
import { replayHistory } from '../src/replay.js';
import { openStore, type KeelStore } from '../src/store/index.js';
import { createTestEnv, type Scenario, type ScenarioContentBlock, type ScenarioTurn, type TestEnv } from '../src/testing/index.js';
import { defineAgent } from '../src/agents/define.js';
import { defineAccessPolicy } from '../src/app/access.js';
import { defineMcpServer, defineTool, mcpTool, withMcpTools, type McpToolListing } from '../src/tools/index.js';
import { readJsonLines, serveLedgerOverHttp, type LedgerCall, type LedgerEntry } from './fixtures/mcp-ledger.js';
import { until } from './support/processes.js';
import { ROOT } from './support/paths.js';

const MCP_TOOLS = path.join(ROOT, 'test', 'fixtures', 'mcp-tools.ts');
const APPROVER = { id: 'lead-1', roles: ['approver'] };
const user = { id: 'clerk-1', roles: ['clerk'] };

/** A scripted turn: its blocks, `tool_use` as the stop reason when it calls a tool, and what else it sets. */
const turn = (content: ScenarioContentBlock[], extra: Partial<ScenarioTurn> = {}): ScenarioTurn => ({
  content,
  stop_reason: content.some((b) => b.type === 'tool_use') ? 'tool_use' : 'end_turn',
  ...extra,
});
const use = (name: string, input: Record<string, unknown>) => ({ type: 'tool_use' as const, name, input });
const say = (text: string) => ({ type: 'text' as const, text });

const SCENARIOS: Scenario[] = [
  {
    name: 'mcp-read',
    description: 'Reads the ledger through an MCP read tool.',
    turns: [turn([say('Reading the ledger.'), use('ledger__read_entries', { limit: 5 })]), turn([say('The ledger is read.')], { expect: { tool_results: [{ is_error: false, contains: 'entries' }] } })],
  },
  {
    name: 'mcp-append',
    description: 'Appends an entry through an MCP tool with no tier configured (irreversible), then asks for the same again.',
    turns: [
      turn([say('Recording it.'), use('ledger__append_entry', { text: 'standup moves to 10:00' })]),
      turn([say('Once more, to be sure.'), use('ledger__append_entry', { text: 'standup moves to 10:00' })], { expect: { tool_results: [{ is_error: false, contains: 'appended entry' }] } }),
      turn([say('Recorded once.')], { expect: { tool_results: [{ is_error: false, contains: 'appended entry' }] } }),
    ],
  },
  {
    name: 'mcp-errors',
    description: 'Bad input for an MCP tool and an isError result from the server.',
    turns: [
      turn([use('ledger__append_entry', {}), use('ledger__get_entry', { n: 999 })]),
      turn([say('Both failed.')], {
        expect: { tool_results: [{ is_error: true, contains: 'Invalid input for ledger__append_entry' }, { is_error: true, contains: 'no entry 999' }] },
      }),
    ],
  },
  {
    name: 'mcp-hang',
    description: 'An MCP tool that hangs: its failures open the breaker; the next call is refused without reaching the server.',
    turns: [
      turn([use('ledger__check_stock', { sku: 'hang' })]),
      turn([use('ledger__check_stock', { sku: 'A1' })], { expect: { tool_results: [{ is_error: true, contains: 'unavailable' }] } }),
      turn([say('Stock is unknown for now.')], { expect: { tool_results: [{ is_error: true, contains: 'circuit' }] } }),
    ],
  },
  {
    name: 'mcp-long',
    description: 'Reads through MCP tools over several model calls, continuing as new between them.',
    turns: [
      turn([use('ledger__read_entries', { limit: 1 })]),
      turn([use('ledger__read_entries', { limit: 2 })], { expect: { tool_results: [{ is_error: false, contains: 'entries' }] } }),
      turn([say('Read twice.')], { expect: { tool_results: [{ is_error: false, contains: 'entries' }] } }),
    ],
  },
  {
    name: 'mcp-remote',
    description: 'Reads the ledger of the MCP server reached over streamable HTTP.',
    turns: [turn([use('remote__read_entries', {})]), turn([say('Read remotely.')], { expect: { tool_results: [{ is_error: false, contains: 'entries' }] } })],
  },
];

let dir: string;
let env: TestEnv;
let store: KeelStore;
let remote: { url: string; close(): Promise<void> };
let bundle: WorkflowBundle;
const stdioDir = () => path.join(dir, 'stdio');

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'keel-mcp-'));
  remote = await serveLedgerOverHttp(path.join(dir, 'http'));
  bundle = await bundleApp(MCP_TOOLS, { logger: { log() {}, trace() {}, debug() {}, info() {}, warn() {}, error() {} } });
  env = await createTestEnv({
    tools: MCP_TOOLS,
    scenarios: SCENARIOS,
    temporalAddress: inject('temporalAddress'),
    workflowBundle: bundle,
    env: { KEEL_TEST_MCP_SERVER: path.join(ROOT, 'test', 'fixtures', 'mcp-server.ts'), KEEL_TEST_MCP_DIR: stdioDir(), KEEL_TEST_MCP_URL: remote.url },
  });
  store = await openStore(env.config);
});
afterAll(async () => {
  await store?.close();
  await env?.close();
  await remote?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** The ledger server's calls made by one session (its keys start with the session's workflow ID). */
function callsOf(sessionId: string, where = stdioDir()): LedgerCall[] {
  return readJsonLines<LedgerCall>(path.join(where, 'calls.jsonl')).filter((c) => c.key?.startsWith(`${sessionId}:`));
}

/** The `tools` each `callModel` of a session was given, in order. */
async function offeredTools(sessionId: string): Promise<Array<Array<{ name: string; description: string; input_schema: Record<string, unknown> }>>> {
  const history = await env.client.session(sessionId).fetchHistory();
  return (history.events ?? []).flatMap((e) => {
    const a = e.activityTaskScheduledEventAttributes;
    if (a?.activityType?.name !== 'callModel') return [];
    const input = defaultPayloadConverter.fromPayload<{ tools: Array<{ name: string; description: string; input_schema: Record<string, unknown> }> }>(a.input!.payloads![0]!);
    return [input.tools];
  });
}

describe('MCP tools', () => {
  it('lists a server’s tools, offers them to the model beside native ones, and runs a read tool as an activity named after it', async () => {
    const { sessionId, handle } = await env.client.startSession({ prompt: 'What is in the ledger?', user, agent: 'bookkeeper', model: 'scripted/mcp-read', idleTimeout: 0 });
    const result = await env.withWorker(() => handle.result());
    expect(result.stopReason).toBe('end_turn');
    expect(result.toolCalls).toMatchObject([{ name: 'ledger__read_entries', outcome: 'ok' }]);

    const [tools] = await offeredTools(sessionId);
    expect(tools!.map((t) => t.name).sort()).toEqual(['ledger__append_entry', 'ledger__check_stock', 'ledger__get_entry', 'ledger__read_entries', 'today']);
    // The model sees the schema the server listed, descriptions included.
    const read = tools!.find((t) => t.name === 'ledger__read_entries')!;
    expect(read.description).toContain('Read the entries of the ledger');
    expect(read.input_schema).toMatchObject({ type: 'object', properties: { limit: { type: 'integer', description: 'At most this many' } } });

    const history = await env.client.session(sessionId).fetchHistory();
    const activities = (history.events ?? []).flatMap((e) => e.activityTaskScheduledEventAttributes?.activityType?.name ?? []);
    expect(activities).toEqual(['callModel', 'ledger__read_entries', 'callModel']);
    // The server was called once, with the call's key in _meta.
    expect(callsOf(sessionId)).toEqual([{ tool: 'read_entries', input: { limit: 5 }, key: expect.stringMatching(new RegExp(`^${sessionId}:ledger__read_entries:[0-9a-f]{16}$`)) }]);

    // The history (with the listing the session recorded) replays against the same bundle.
    expect(await replayHistory(history, sessionId, { workflowBundle: bundle })).toMatchObject({ deterministic: true });
  });

  it('holds a tool with no configured tier for a person, runs it once when approved, and audits it like a native tool', async () => {
    const { sessionId, handle } = await env.client.startSession({ prompt: 'Record that standup moves to 10:00', user, agent: 'bookkeeper', model: 'scripted/mcp-append', idleTimeout: 0 });
    const result = await env.withWorker(async () => {
      const [request] = await until(async () => {
        const pending = await env.client.pendingApprovals(sessionId).catch(() => []);
        return pending.length ? pending : undefined;
      }, 'the append approval request');
      expect(request).toMatchObject({ requestId: 'ledger__append_entry-1', tool: 'ledger__append_entry', risk: 'irreversible', input: { text: 'standup moves to 10:00' } });
      // Parked: the server has not been called.
      expect(callsOf(sessionId)).toEqual([]);
      await env.client.decide(sessionId, { requestId: request!.requestId, decision: 'approve', approver: APPROVER, reason: 'asked by the team' });
      return handle.result();
    });
    expect(result.stopReason).toBe('end_turn');
    // The model asked twice; the second is answered from the first (same key), without a second approval.
    expect(result.toolCalls).toMatchObject([
      { name: 'ledger__append_entry', outcome: 'ok', approvalRequestId: 'ledger__append_entry-1' },
      { name: 'ledger__append_entry', outcome: 'ok', deduplicated: true },
    ]);
    const entries = readJsonLines<LedgerEntry>(path.join(stdioDir(), 'ledger.jsonl')).filter((e) => e.key?.startsWith(`${sessionId}:`));
    expect(entries).toEqual([{ n: expect.any(Number), text: 'standup moves to 10:00', key: result.toolCalls[0]!.idempotencyKey }]);
    expect(result.toolCalls[0]!.idempotencyKey).toMatch(new RegExp(`^${sessionId}:ledger__append_entry:[0-9a-f]{16}$`));

    const rows = await store.auditTrail(sessionId);
    expect(rows.map((r) => `${r.kind}${r.data.tool ? `:${String(r.data.tool)}` : ''}`)).toEqual([
      'run',
      'model_turn',
      'authorization:ledger__append_entry',
      'approval:ledger__append_entry',
      'tool_intent:ledger__append_entry',
      'tool_result:ledger__append_entry',
      'model_turn',
      'authorization:ledger__append_entry',
      'tool_result:ledger__append_entry',
      'model_turn',
      'run_end',
    ]);
    expect(rows.find((r) => r.kind === 'tool_intent')!.data).toMatchObject({ tier: 'irreversible', idempotencyKey: entries[0]!.key, args: { text: 'standup moves to 10:00' } });
    expect(rows.find((r) => r.kind === 'approval')!.data).toMatchObject({ decision: 'approve', approver: APPROVER.id, reason: 'asked by the team' });
    expect(rows.filter((r) => r.kind === 'tool_result').map((r) => r.data)).toMatchObject([{ outcome: 'ok' }, { outcome: 'ok', deduplicated: true }]);
  });

  it('returns bad input and the server’s isError to the model as is_error results, before any approval', async () => {
    const { sessionId, handle } = await env.client.startSession({ prompt: 'Append nothing and read entry 999', user, agent: 'bookkeeper', model: 'scripted/mcp-errors', idleTimeout: 0 });
    const result = await env.withWorker(() => handle.result());
    expect(result.toolCalls).toMatchObject([
      { name: 'ledger__append_entry', outcome: 'rejected' },
      { name: 'ledger__get_entry', outcome: 'error' },
    ]);
    expect(result.toolCalls.some((c) => c.approvalRequestId)).toBe(false);
    // The invalid append never reached the server; the read did, and the server answered isError.
    expect(callsOf(sessionId).map((c) => c.tool)).toEqual(['get_entry']);
  });

  it('counts an MCP tool’s failures in its breaker: once open, calls are refused without reaching the server and it is not offered', async () => {
    const { sessionId, handle } = await env.client.startSession({ prompt: 'Is A1 in stock?', user, agent: 'bookkeeper', model: 'scripted/mcp-hang', idleTimeout: 0 });
    try {
      const result = await env.withWorker(() => handle.result());
      expect(result.toolCalls).toMatchObject([
        { name: 'ledger__check_stock', outcome: 'error' },
        { name: 'ledger__check_stock', outcome: 'error' },
      ]);
      // Three attempts (the read tier's) reached the hanging server; the call after them did not.
      expect(callsOf(sessionId).map((c) => c.input)).toEqual([{ sku: 'hang' }, { sku: 'hang' }, { sku: 'hang' }]);
      const breaker = (await store.breakers()).find((b) => b.tool === 'ledger__check_stock');
      expect(breaker).toMatchObject({ state: 'open', failures: 3 });
      // An optional tool behind an open breaker is not offered to the model.
      const offered = await offeredTools(sessionId);
      expect(offered[0]!.map((t) => t.name)).toContain('ledger__check_stock');
      expect(offered.at(-1)!.map((t) => t.name)).not.toContain('ledger__check_stock');
    } finally {
      await store.resetBreaker('ledger__check_stock');
    }
  }, 60_000);

  it('carries the tools it learned across continue-as-new instead of listing them again', async () => {
    const { sessionId, handle } = await env.client.startSession({ prompt: 'Read the ledger twice', user, agent: 'bookkeeper', model: 'scripted/mcp-long', idleTimeout: 0, historyLimitBytes: 1_000 });
    const result = await env.withWorker(() => handle.result());
    expect(result.runs).toBeGreaterThan(1);
    expect(result.toolCalls).toMatchObject([
      { name: 'ledger__read_entries', outcome: 'ok' },
      { name: 'ledger__read_entries', outcome: 'ok' },
    ]);
    // Listed once, in the first run (a local activity's marker in history); later runs use the state.
    const runsOf = async (runId: string | undefined, found: string[] = []): Promise<string[]> => {
      const history = await env.client.temporal.workflow.getHandle(sessionId, runId).fetchHistory();
      const markers = (history.events ?? []).flatMap((e) => Object.values(e.markerRecordedEventAttributes?.details ?? {}));
      found.push(markers.flatMap((p) => (p.payloads ?? []).map((x) => Buffer.from(x.data ?? []).toString())).join(' '));
      const next = history.events!.at(-1)!.workflowExecutionContinuedAsNewEventAttributes?.newExecutionRunId;
      return next ? runsOf(next, found) : found;
    };
    const markers = await runsOf(handle.firstExecutionRunId);
    expect(markers.length).toBe(result.runs);
    expect(markers.map((m) => m.includes('listMcpTools'))).toEqual(markers.map((_, i) => i === 0));
  });

  it('calls a server over streamable HTTP', async () => {
    const { sessionId, handle } = await env.client.startSession({ prompt: 'What is in the remote ledger?', user, model: 'scripted/mcp-remote', idleTimeout: 0 });
    const result = await env.withWorker(() => handle.result());
    expect(result.toolCalls).toMatchObject([{ name: 'remote__read_entries', outcome: 'ok' }]);
    const [tools] = await offeredTools(sessionId);
    // The default agent offers every tool: native, stdio and HTTP servers'; the configured description wins.
    expect(tools!.find((t) => t.name === 'remote__read_entries')!.description).toBe('Read the entries of the remote ledger, oldest first. Read-only.');
    expect(tools!.map((t) => t.name)).toEqual(expect.arrayContaining(['today', 'ledger__append_entry', 'remote__read_entries']));
    expect(callsOf(sessionId, path.join(dir, 'http'))).toMatchObject([{ tool: 'read_entries', key: expect.stringMatching(new RegExp(`^${sessionId}:remote__read_entries:`)) }]);
  });
});

describe('defineMcpServer and MCP tools in an app', () => {
  const listing = (tool: string, inputSchema: McpToolListing['inputSchema']): McpToolListing => ({ name: `files__${tool}`, server: 'files', tool, description: `${tool} a file`, inputSchema });
  const files = defineMcpServer({ name: 'files', command: 'files-mcp', tools: { read_file: { risk: 'read' }, write_file: { risk: 'write', noCompensation: 'files are versioned by the server' } } });
  const native = defineTool({ name: 'note', description: 'Note.', input: z.object({ text: z.string() }), risk: 'read', run: async () => 'ok' });

  it('refuses a server without a transport, a bad name, and a tool config that breaks its tier', () => {
    expect(() => defineMcpServer({ name: 'x' } as never)).toThrow(/either command .* or url/);
    expect(() => defineMcpServer({ name: 'my_server', command: 'x' })).toThrow(/MCP server 'my_server': name/);
    expect(() => defineMcpServer({ name: 'x', command: 'x', tools: { put: { risk: 'write' } } })).toThrow(/tool 'put': an MCP tool has no undo/);
    expect(() => defineMcpServer({ name: 'x', command: 'x', tools: { send: { risk: 'irreversible', maxAttempts: 3 } } })).toThrow(/at most 1 attempt/);
    expect(() => defineMcpServer({ name: 'x', url: 'ftp://host/mcp' })).toThrow(/url/);
    expect(() => defineMcpServer({ name: 'x', command: 'x', tools: { read: { risk: 'read', critical: true } as never } })).toThrow(/critical/);
  });

  it('makes an unconfigured tool irreversible and checks input against the listed JSON Schema', () => {
    const schema = { type: 'object' as const, properties: { path: { type: 'string', minLength: 1 }, mode: { enum: ['a', 'w'] } }, required: ['path'] };
    const unconfigured = mcpTool(files, listing('delete_file', schema));
    expect(unconfigured.policy).toMatchObject({ risk: 'irreversible', approval: 'always', maxAttempts: 1 });
    const read = mcpTool(files, listing('read_file', schema));
    expect(read.policy).toMatchObject({ risk: 'read', approval: 'never' });
    expect(read.input.safeParse({ path: 'a.txt', mode: 'w' }).success).toBe(true);
    expect(read.input.safeParse({ mode: 'x' }).success).toBe(false);
    // JSON Schema allows unknown fields unless it says otherwise; they reach the server unchanged.
    expect(read.input.parse({ path: 'a', extra: 1 })).toEqual({ path: 'a', extra: 1 });
  });

  it('lets agents name MCP tools of declared servers, and checks them once the server has listed its tools', () => {
    const agent = defineAgent({ name: 'filer', system: 'Files.', tools: ['note', 'files__read_file', 'files__rename'] });
    expect(() => appFromModule({ native, agent })).toThrow(/names tool 'files__read_file'/);
    const app = appFromModule({ native, files, agent });
    const listed = withMcpTools(app, [listing('read_file', { type: 'object', properties: {} })]);
    expect(() => checkAppReferences(listed)).toThrow(/agent 'filer' names tool 'files__rename'/);
    const complete = withMcpTools(app, [listing('read_file', { type: 'object' }), listing('rename', { type: 'object' })]);
    expect(checkAppReferences(complete)).toEqual([]);
    // The access policy may grant them too, checked the same way.
    const access = defineAccessPolicy({ roles: { filer: ['note', 'files__read_file', 'files__rename', 'files__chmod'] } });
    expect(() => appFromModule({ native, agent, access })).toThrow(/names tool 'files__read_file'/);
    const withPolicy = withMcpTools(appFromModule({ native, files, agent, access }), [listing('read_file', { type: 'object' }), listing('rename', { type: 'object' })]);
    expect(() => checkAppReferences(withPolicy)).toThrow(/role 'filer' names tool 'files__chmod'/);
  });
});
