/**
 * Conversations and long sessions, on the small test app (its own tools and agent, outside `src/`), tested
 * through the testing entry the way a team would: a three-turn chat whose second turn waits for a person
 * survives a worker SIGKILL between turns; `keel run --chat` talks through stdin; a session that passes
 * its history limit continues as new and keeps its keys, its undo stack and its conversation; each model
 * call's history entry holds only what is new.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { approveUntilDone, type TestEnv } from '../src/testing/index.js';
import type { NotesBoard } from './support/notes-board.js';
import { startTestApp, type TestApp } from './support/test-app.js';
import { TEST_APP_TOOLS } from './support/paths.js';
import { killWorkers, runKeel, sigkill, spawnWorker, until } from './support/processes.js';

let app: TestApp;
let env: TestEnv;
let board: NotesBoard;
beforeAll(async () => {
  app = await startTestApp();
  ({ env, board } = app);
});
afterAll(async () => {
  await killWorkers();
  await app?.close();
});

const user = { id: 'teammate-1', roles: ['staff'] };
const approver = { id: 'lead-1', roles: ['approver'] };

describe('a conversation', () => {
  it('answers three messages in one session, the second after a person approves, across a worker SIGKILL between turns', async () => {
    let worker = await spawnWorker(env.env, TEST_APP_TOOLS, inject('testAppBundlePath'));
    const { sessionId, handle } = await env.client.startSession({ prompt: 'What does durable mean?', user, agent: 'notes', model: 'scripted/chat-three-turns' });
    await until(async () => {
      const s = await env.client.status(sessionId);
      return s.turn === 1 && s.awaitingMessage ? s : undefined;
    }, 'the first answer');

    // Turn 2 posts a note: irreversible, so it waits for a person while the update waits for its answer.
    const second = env.client.sendMessage(sessionId, 'Post that standup moves to 10:00.');
    const approved = await until(async () => {
      const [p] = await env.client.pendingApprovals(sessionId);
      return p ? env.client.decide(sessionId, { requestId: p.requestId, decision: 'approve', approver }) : undefined;
    }, 'the approval request');
    expect(approved).toMatchObject({ accepted: true, requestId: 'post_note-1' });
    expect(await second).toEqual({ turn: 2, answer: 'Posted your note to the board.', stopReason: 'end_turn' });
    expect(board.notes.map((n) => n.text)).toEqual(['Standup moves to 10:00.']);

    await sigkill(worker);
    worker = await spawnWorker(env.env, TEST_APP_TOOLS, inject('testAppBundlePath'));
    expect(await env.client.sendMessage(sessionId, 'Thanks!')).toEqual({ turn: 3, answer: "You're welcome. Bye!", stopReason: 'end_turn' });

    await env.client.endConversation(sessionId);
    const result = await handle.result();
    expect(result).toMatchObject({ agent: 'notes', turns: 3, iterations: 5, answer: "You're welcome. Bye!", stopReason: 'end_turn' });
    expect(result.toolCalls.map((t) => `${t.name}:${t.outcome}`)).toEqual(['define_word:ok', 'post_note:ok']);
    // One note, under the key the workflow derived for it.
    expect(board.notes).toHaveLength(1);
    expect(board.notes[0]!.idempotencyKey).toBe(result.toolCalls[1]!.idempotencyKey);
    await sigkill(worker);
  }, 90_000);

  it('refuses an empty message and one to an ended conversation, with the reason', async () => {
    await env.withWorker(async () => {
      const { sessionId, handle } = await env.client.startSession({ prompt: 'What does durable mean?', user, agent: 'notes', model: 'scripted/chat-three-turns' });
      await expect(env.client.sendMessage(sessionId, '   ')).rejects.toThrow(/text: message is empty/);
      await until(async () => ((await env.client.status(sessionId)).awaitingMessage ? true : undefined), 'the first answer');
      await env.client.endConversation(sessionId);
      await expect(env.client.sendMessage(sessionId, 'one more')).rejects.toThrow(/(the conversation|the session) has ended; start a new session/);
      expect(await handle.result()).toMatchObject({ turns: 1 });
    });
  }, 60_000);

  it('keel run --chat reads each line as the next message, prints the answers, and ends the conversation at end of input', async () => {
    const sessionId = `chat-cli-${Date.now()}`;
    const [run, approved] = await env.withWorker(() =>
      Promise.all([
        runKeel(
          ['run', '--chat', '--json', '--session-id', sessionId, '--agent', 'notes', '--model', 'scripted/chat-three-turns', '--user', 'teammate-1', 'What does durable mean?'],
          env.env,
          'Post that standup moves to 10:00.\nThanks!\n',
        ),
        until(() => env.client.session(sessionId).describe().then((d) => d.status.name), 'the session to start').then(() => approveUntilDone(env.client, sessionId, approver)),
      ]),
    );
    expect(run.code, run.stderr).toBe(0);
    expect(approved).toEqual(['post_note-1']);
    // Each answer was printed as it came (progress on stderr with --json), then one JSON document.
    const answers = ['Durable means able to survive a crash without losing progress.', 'Posted your note to the board.', "You're welcome. Bye!"];
    let at = 0;
    for (const a of answers) {
      at = run.stderr.indexOf(`\n${a}\n`, at);
      expect(at, `${a} in\n${run.stderr}`).toBeGreaterThan(-1);
    }
    expect(JSON.parse(run.stdout)).toMatchObject({ sessionId, status: 'completed', turns: 3, answer: "You're welcome. Bye!" });
  }, 60_000);
});

describe('a long session', () => {
  const run = async (historyLimitBytes?: number) => {
    const { sessionId, handle } = await env.client.startSession({
      prompt: 'Post hello, twice if you like, and count the inventory.',
      user,
      agent: 'notes',
      model: 'scripted/long-session',
      maxIterations: 10,
      // The notes agent waits 10 minutes for a follow-up; this session answers once and completes.
      idleTimeout: 0,
      ...(historyLimitBytes ? { historyLimitBytes } : {}),
    });
    const [result] = await env.withWorker(() => Promise.all([handle.result(), approveUntilDone(env.client, sessionId, approver)]));
    return { sessionId, result, firstRunId: handle.firstExecutionRunId };
  };

  it('keeps each model call O(what is new) in history: the conversation and large results live in the store', async () => {
    const { sessionId, result } = await run();
    expect(result).toMatchObject({ runs: 1, iterations: 6, answer: 'Posted once; the inventory has 3000 items.' });
    const history = await env.client.session(sessionId).fetchHistory();
    const bytes = (p: { data?: Uint8Array | null } | undefined | null) => p?.data?.length ?? 0;
    const modelInputs = (history.events ?? [])
      .filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'callModel')
      .map((e) => (e.activityTaskScheduledEventAttributes!.input?.payloads ?? []).reduce((n, p) => n + bytes(p), 0));
    expect(modelInputs).toHaveLength(6);
    // The sixth call's conversation holds a ~100 KB listing, yet its input is as small as the first one's.
    expect(Math.max(...modelInputs)).toBeLessThan(4_000);
    const listing = (history.events ?? []).flatMap((e) => e.activityTaskCompletedEventAttributes?.result?.payloads ?? []).map(bytes);
    expect(Math.max(...listing)).toBeLessThan(4_000);
    // The model saw the whole listing: its script checks for the last item (a 400 otherwise).
    expect(result.toolCalls.at(-1)).toMatchObject({ name: 'list_items', outcome: 'ok' });
  }, 60_000);

  it('continues as new past its history limit, carrying keys, results and the conversation to the same answer', async () => {
    const before = board.notes.length;
    const baseline = await run();
    const { sessionId, result, firstRunId } = await run(1_000);
    expect(result.runs).toBeGreaterThan(3);
    expect(result.answer).toBe(baseline.result.answer);
    expect(result.toolCalls.map((t) => `${t.name}:${t.outcome}${t.deduplicated ? ':dedup' : ''}`)).toEqual(
      baseline.result.toolCalls.map((t) => `${t.name}:${t.outcome}${t.deduplicated ? ':dedup' : ''}`),
    );
    // The second identical note, asked for in a later run, was answered from the carried-over key: one note each.
    expect(result.toolCalls.filter((t) => t.name === 'post_note').map((t) => t.deduplicated ?? false)).toEqual([false, true]);
    expect(board.notes.length - before).toBe(2);
    expect(board.notes.at(-1)!.idempotencyKey).toBe(`${sessionId}:post_note:${result.toolCalls[1]!.idempotencyKey!.split(':').at(-1)}`);
    // Each run's history is small; the first run ended by continuing as new.
    const first = await env.client.temporal.workflow.getHandle(sessionId, firstRunId).fetchHistory();
    expect(first.events?.length).toBeLessThan(40);
    expect(first.events?.at(-1)?.workflowExecutionContinuedAsNewEventAttributes).toBeTruthy();
  }, 90_000);
});
