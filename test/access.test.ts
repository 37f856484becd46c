/**
 * Roles decide tools. With an access policy in the tools module, a session offers the model only the
 * tools its user's roles allow; a call outside them (the model asks anyway) is refused as an `is_error`
 * result, never reaches the downstream (the notice board's notes are the witness), and is recorded as a
 * refused authorization in the audit trail. A tool chain is held to the same policy. A policy naming a
 * tool the module lacks, or an approver role it does not define, stops the app at start.
 */
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { z } from 'zod';
import { AccessPolicyError, appFromModule, AppDefinitionError, defineAccessPolicy, defineAgent, defineTool, mayCall } from '../src/workflow.js';
import { openStore } from '../src/store/index.js';
import { approveUntilDone, createTestEnv, type TestEnv } from '../src/testing/index.js';
import { startNotesBoard, type NotesBoard } from './support/notes-board.js';
import { ROOT } from './support/paths.js';

const ACCESS_TOOLS = path.join(ROOT, 'test', 'fixtures', 'access-tools.ts');
const postThenAnswer = {
  name: 'access-post',
  description: 'Asks to post a note, then answers whatever came back.',
  turns: [
    { content: [{ type: 'tool_use' as const, name: 'post_note', input: { text: 'Standup moves to 10:00' } }], stop_reason: 'tool_use' as const },
    { content: [{ type: 'text' as const, text: 'Done what I could.' }], stop_reason: 'end_turn' as const },
  ],
};

let env: TestEnv;
let board: NotesBoard;
beforeAll(async () => {
  board = await startNotesBoard();
  env = await createTestEnv({
    tools: ACCESS_TOOLS,
    scenarios: [postThenAnswer],
    temporalAddress: inject('temporalAddress'),
    env: { NOTES_URL: board.url, KEEL_DATA_DIR: path.join(ROOT, '.keel', 'test', 'data', `access-${randomUUID().slice(0, 8)}`) },
  });
});
afterAll(async () => {
  await env?.close();
  await board?.close();
});

/** The tools offered to the model in a session's first model call, from its history. */
const offeredTools = async (sessionId: string) => {
  const history = await env.client.session(sessionId).fetchHistory();
  const e = history.events!.find((x) => x.activityTaskScheduledEventAttributes?.activityType?.name === 'callModel')!;
  const input = JSON.parse(Buffer.from(e.activityTaskScheduledEventAttributes!.input!.payloads![0]!.data!).toString()) as { tools: Array<{ name: string }> };
  return input.tools.map((t) => t.name).sort();
};

describe('a session under an access policy', () => {
  it("offers only the user's tools and refuses a call outside them, recorded in the audit trail", async () => {
    const { sessionId, handle } = await env.client.startSession({ prompt: 'Post that standup moved', user: { id: 'reader-1', roles: ['reader'] }, model: 'scripted/access-post' });
    const result = await env.withWorker(() => handle.result());

    expect(await offeredTools(sessionId)).toEqual(['define_word', 'list_items', 'ping_board', 'search_wiki']);
    expect(result.toolCalls).toMatchObject([{ name: 'post_note', outcome: 'rejected', error: expect.stringMatching(/^post_note is not allowed for this user: none of the user's roles \(reader\) may call post_note/) }]);
    expect(result.answer).toBe('Done what I could.');
    expect(board.notes).toEqual([]);

    const store = await openStore(env.config);
    try {
      const authz = (await store.auditTrail(sessionId)).filter((r) => r.kind === 'authorization').map((r) => r.data);
      expect(authz).toMatchObject([{ tool: 'post_note', allowed: false, user: 'reader-1', roles: ['reader'], reason: "none of the user's roles (reader) may call post_note" }]);
    } finally {
      await store.close();
    }
  });

  it('lets a user whose role grants the tool call it (after approval, as its tier asks)', async () => {
    const { sessionId, handle } = await env.client.startSession({ prompt: 'Post that standup moved', user: { id: 'poster-1', roles: ['reader', 'poster'] }, model: 'scripted/access-post' });
    const result = await env.withWorker(async () => {
      await approveUntilDone(env.client, sessionId);
      return handle.result();
    });
    expect(await offeredTools(sessionId)).toEqual(['define_word', 'list_items', 'ping_board', 'post_note', 'search_wiki']);
    expect(result.toolCalls).toMatchObject([{ name: 'post_note', outcome: 'ok' }]);
    expect(board.notes.map((n) => n.text)).toEqual(['Standup moves to 10:00']);
  });

  it('holds a tool chain to the same policy', async () => {
    const handle = await env.client.startChain({ user: { id: 'reader-2', roles: ['reader'] }, steps: [{ tool: 'define_word', input: { word: 'idempotent' } }, { tool: 'post_note', input: { text: 'sneaky' } }] });
    const err = await env.withWorker(() => handle.result().then(() => undefined, (e: unknown) => e as Error & { cause?: Error }));
    expect(err?.cause?.message).toMatch(/step 1 \(post_note\) failed: post_note is not allowed for this user/);
    expect(board.notes.map((n) => n.text)).not.toContain('sneaky');
  });
});

describe('the access policy itself', () => {
  const tool = (name: string) => defineTool({ name, description: name, input: z.object({}), risk: 'read', run: async () => 'ok' });
  const lookUp = tool('look_up');
  const other = tool('other');

  it('grants by role, by everyone, and by *', () => {
    const policy = defineAccessPolicy({ roles: { a: ['look_up'], admin: '*' }, everyone: ['other'] });
    expect(mayCall(policy, ['a'], 'look_up').allowed).toBe(true);
    expect(mayCall(policy, [], 'other')).toEqual({ allowed: true, reason: 'other is allowed to everyone' });
    expect(mayCall(policy, ['b'], 'look_up')).toEqual({ allowed: false, reason: "none of the user's roles (b) may call look_up" });
    expect(mayCall(policy, ['admin'], 'anything')).toEqual({ allowed: true, reason: "role 'admin' may call anything" });
    expect(mayCall(undefined, [], 'look_up').allowed).toBe(true);
  });

  it('stops the app at start on a tool the module lacks, naming the role and tool', () => {
    const access = defineAccessPolicy({ roles: { support: ['look_up', 'refund_all'] } });
    expect(() => appFromModule({ lookUp, access })).toThrow(AppDefinitionError);
    expect(() => appFromModule({ lookUp, access })).toThrow("role 'support' names tool 'refund_all', which the module does not export (tools: look_up)");
    expect(() => appFromModule({ lookUp, access: defineAccessPolicy({ roles: {}, everyone: ['nope'] }) })).toThrow("everyone names tool 'nope'");
  });

  it("stops the app at start on an agent's approver role the policy does not define", () => {
    const access = defineAccessPolicy({ roles: { support: ['look_up'], approver: [] } });
    const agent = defineAgent({ name: 'desk', system: 'x', approval: { approverRoles: ['aprover'] } });
    expect(() => appFromModule({ lookUp, access, agent })).toThrow("agent 'desk' names role 'aprover' in approval.approverRoles, which the access policy does not define (roles: support, approver)");
  });

  it('refuses two policies in one module, and a malformed one, naming the field', () => {
    const a = defineAccessPolicy({ roles: { x: ['look_up'] } });
    const b = defineAccessPolicy({ roles: { y: ['other'] } });
    expect(() => appFromModule({ lookUp, other, a, b })).toThrow("two access policies (export 'a' and export 'b'); export one");
    expect(() => defineAccessPolicy({ roles: { 'bad role!': ['x'] } })).toThrow(AccessPolicyError);
    expect(() => defineAccessPolicy({ roles: { x: 'all' as never } })).toThrow(/access policy: roles\.x/);
    expect(() => defineAccessPolicy({ roles: {}, extra: 1 } as never)).toThrow(/access policy: .*extra/);
    expect(appFromModule({ lookUp, other, a }).access).toBe(a);
  });
});
