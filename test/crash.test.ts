/**
 * Durability: the worker process is killed with SIGKILL while a session waits on a slow model turn; a
 * new worker process picks the session up and it completes with the answer it gives without the crash,
 * without running the finished tool call again.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { inject } from 'vitest';
import { historyEvents, ROOT, startHarness, type Harness } from './support/harness.js';

let h: Harness;
const children: ChildProcess[] = [];
beforeAll(async () => {
  h = await startHarness('crash');
});
afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  await h?.close();
});

/** Starts `keel worker` as its own process and resolves once it polls. */
function spawnWorker(): Promise<ChildProcess> {
  const child = spawn(process.execPath, [path.join(ROOT, 'bin', 'keel.js'), 'worker'], {
    env: { ...process.env, ...h.env, KEEL_WORKFLOW_BUNDLE: inject('workflowBundlePath'), KEEL_LOG_FILE: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  return new Promise((resolve, reject) => {
    let out = '';
    const onData = (d: Buffer) => {
      out += d.toString();
      if (out.includes('worker ready')) resolve(child);
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    child.once('exit', (code) => reject(new Error(`worker exited early (${code}): ${out}`)));
  });
}

async function until(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

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
  const first = await spawnWorker();
  const requestsBefore = h.model.requests;
  const { handle } = await start(sessionId);
  // Turn 1 answers at once; turn 2 takes 4 s. Kill the worker while it waits on turn 2.
  await until(() => h.model.requests >= requestsBefore + 2, 'the slow model turn to start');
  await new Promise((r) => setTimeout(r, 500));
  first.kill('SIGKILL');
  await new Promise((r) => first.once('exit', r));

  await spawnWorker();
  const result = await handle.result();
  expect(result.answer).toBe(expected.answer);
  expect(result.toolCalls.map((t) => `${t.name}:${t.outcome}`)).toEqual(expected.toolCalls.map((t) => `${t.name}:${t.outcome}`));

  const events = await historyEvents(h, sessionId);
  const started = events.filter((e) => e.activityTaskStartedEventAttributes);
  // The slow turn ran twice (the first attempt died with the worker); the tool call before it ran once.
  expect(started.map((e) => e.activityTaskStartedEventAttributes!.attempt)).toEqual([1, 1, 2]);
  const timedOut = events.find((e) => e.activityTaskTimedOutEventAttributes);
  expect(timedOut).toBeUndefined(); // the retry was scheduled by the server, not a failure of the session
  const scheduled = events.flatMap((e) => e.activityTaskScheduledEventAttributes?.activityType?.name ?? []);
  expect(scheduled).toEqual(['callModel', 'get_order', 'callModel']);
  expect(h.model.requests - requestsBefore).toBe(3);
}, 90_000);
