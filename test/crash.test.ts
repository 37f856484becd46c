/**
 * Durability: the worker process is killed with SIGKILL while a session waits on a slow model turn; a
 * new worker process picks the session up and it completes with the answer it gives without the crash,
 * without running the finished tool call again.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { historyEvents, scheduledActivities, startHarness, type Harness } from './support/harness.js';
import { killWorkers, sigkill, spawnWorker, until } from './support/processes.js';

let h: Harness;
beforeAll(async () => {
  h = await startHarness('crash');
});
afterAll(async () => {
  await killWorkers();
  await h?.close();
});

const start = (sessionId: string) =>
  h.client.startSession({
    sessionId,
    prompt: 'How much was ord_1002?',
    user: { id: 'agent-operator-1', roles: ['support'] },
    model: 'scripted/slow-model',
    modelHeartbeatTimeout: '2s',
  });

it('survives SIGKILL of the worker during a slow model turn and gives the same answer', async () => {
  // Without a crash, for comparison.
  const baseline = await start(`crash-baseline-${Date.now()}`);
  const expected = await h.withWorker(() => baseline.handle.result());

  const sessionId = `crash-${Date.now()}`;
  const first = await spawnWorker(h.env);
  const requestsBefore = h.model.requests;
  const { handle } = await start(sessionId);
  // Turn 1 answers at once; turn 2 takes 8 s. Kill the worker while it waits on turn 2: a second after history
  // shows turn 2 scheduled (so the tool call before it is done).
  await until(async () => {
    const names = scheduledActivities(await historyEvents(h, sessionId));
    return names.filter((n) => n === 'callModel').length === 2 ? true : undefined;
  }, 'the slow model turn to be scheduled');
  await new Promise((r) => setTimeout(r, 1000)); // well inside the 8 s turn
  await sigkill(first);

  await spawnWorker(h.env);
  const result = await handle.result();
  expect(result.answer).toBe(expected.answer);
  expect(result.toolCalls.map((t) => `${t.name}:${t.outcome}`)).toEqual(expected.toolCalls.map((t) => `${t.name}:${t.outcome}`));

  const events = await historyEvents(h, sessionId);
  const started = events.filter((e) => e.activityTaskStartedEventAttributes);
  // The slow turn ran twice (the first attempt died with the worker); the tool call before it ran once.
  expect(started.map((e) => e.activityTaskStartedEventAttributes!.attempt)).toEqual([1, 1, 2]);
  const timedOut = events.find((e) => e.activityTaskTimedOutEventAttributes);
  expect(timedOut).toBeUndefined(); // the retry was scheduled by the server, not a failure of the session
  expect(scheduledActivities(events)).toEqual(['callModel', 'get_order', 'callModel']);
  // The slow turn was asked for again after the crash (a model call may be repeated; a tool call may not).
  expect(h.model.requests - requestsBefore).toBeGreaterThanOrEqual(3);
}, 90_000);
