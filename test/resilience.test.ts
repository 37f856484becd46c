/**
 * Fleet-wide circuit breakers and operators' switches, with the downstream's own request count as the
 * witness: a broken optional tool opens its breaker after 3 failures; while it is open no session calls
 * the downstream (another worker process included) and the model is not offered the tool; once the
 * downstream is back, one probe closes it. `keel tools disable` refuses the very next call, `enable` lets
 * calls through again. A critical tool behind an open breaker fails its session at once, with a typed
 * failure naming the tool, and the session's writes are undone.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { failureMessage } from '../src/client.js';
import { openStore } from '../src/store/index.js';
import type { TestEnv } from '../src/testing/index.js';
import { historyEvents, startHarness, type Harness } from './support/harness.js';
import { TEST_APP_TOOLS } from './support/paths.js';
import { killWorkers, runKeel, sigkill, spawnWorker, until } from './support/processes.js';
import { startTestApp, type TestApp } from './support/test-app.js';

let app: TestApp;
let env: TestEnv;
let h: Harness;
beforeAll(async () => {
  app = await startTestApp();
  env = app.env;
  h = await startHarness('resilience');
});
afterAll(async () => {
  await killWorkers();
  await app?.close();
  await h?.close();
});

const user = { id: 'teammate-1' };
const ask = async (model: string) => {
  const { sessionId, handle } = await env.client.startSession({ prompt: 'Who is on call?', user, agent: 'notes', model, idleTimeout: 0 });
  return { sessionId, result: await handle.result() };
};
const breaker = async (tool: string) => {
  const store = await openStore(env.config);
  try {
    return (await store.breakers()).find((b) => b.tool === tool);
  } finally {
    await store.close();
  }
};
/** The tools and system prompt of a session's last model call, from its history. */
const lastModelCall = async (t: TestEnv, sessionId: string) => {
  const history = await t.client.session(sessionId).fetchHistory();
  const e = history.events!.filter((x) => x.activityTaskScheduledEventAttributes?.activityType?.name === 'callModel').at(-1)!;
  return JSON.parse(Buffer.from(e.activityTaskScheduledEventAttributes!.input!.payloads![0]!.data!).toString()) as { tools: Array<{ name: string }>; system: string };
};

describe('a circuit breaker per tool, shared by every worker', () => {
  it('opens after 3 failures, keeps sessions off the downstream and the tool out of the list, and closes on a good probe', async () => {
    app.board.wikiDown = true;
    const first = await env.withWorker(() => ask('scripted/wiki-answer'));
    // Three attempts of one call (the read tier's retries), three failures: open.
    expect(app.board.wikiRequests).toBe(3);
    expect(first.result.toolCalls).toMatchObject([{ name: 'search_wiki', outcome: 'error' }]);
    expect(first.result.answer).toBe('See the On-call page, or ask your lead.');
    expect(await breaker('search_wiki')).toMatchObject({ state: 'open', failures: 3 });

    // A session on another worker process: the model is not offered the tool, and is told why.
    const worker = await spawnWorker(env.env, TEST_APP_TOOLS, inject('testAppBundlePath'));
    try {
      const { handle, sessionId } = await env.client.startSession({ prompt: 'Who is on call?', user, agent: 'notes', model: 'scripted/no-tools', idleTimeout: 0 });
      await handle.result();
      const call = await lastModelCall(env, sessionId);
      expect(call.tools.map((t) => t.name)).not.toContain('search_wiki');
      expect(call.tools.map((t) => t.name)).toContain('define_word');
      expect(call.system).toMatch(/Not available right now, so not offered: search_wiki \(circuit open until/);

      // A model that calls it anyway gets "unavailable" at once: the downstream is not touched.
      const second = await ask('scripted/wiki-answer');
      expect(second.result.toolCalls).toMatchObject([{ name: 'search_wiki', outcome: 'error', error: expect.stringMatching(/unavailable right now \(.*circuit/) }]);
      expect(app.board.wikiRequests).toBe(3);
    } finally {
      await sigkill(worker);
    }

    // Back up: after the reset window one probe goes through and closes the breaker.
    app.board.wikiDown = false;
    const open = await breaker('search_wiki');
    await until(() => (Date.now() >= Date.parse(open!.nextProbeAt!) ? true : undefined), 'the reset window', 15_000);
    const probe = await env.withWorker(() => ask('scripted/wiki-answer'));
    expect(probe.result.toolCalls).toMatchObject([{ name: 'search_wiki', outcome: 'ok' }]);
    expect(app.board.wikiRequests).toBe(4);
    expect(await breaker('search_wiki')).toMatchObject({ state: 'closed', failures: 0 });
  }, 90_000);
});

describe('a rate limit per tool', () => {
  it('spaces parallel calls to the rate the downstream takes', async () => {
    const { sessionId, handle } = await env.client.startSession({ prompt: 'Is the board up?', user, model: 'scripted/pings', idleTimeout: 0 });
    await env.withWorker(() => handle.result());
    expect(sessionId).toBeTruthy();
    const pings = app.board.pings.slice(-4).sort((a, b) => a - b);
    expect(pings).toHaveLength(4);
    // 4 a second: a slot every 250 ms, shared through the store (a little slack for the HTTP hop).
    const gaps = pings.slice(1).map((t, i) => t - pings[i]!);
    for (const gap of gaps) expect(gap).toBeGreaterThanOrEqual(200);
  }, 60_000);
});

describe("operators' switches", () => {
  it('keel tools disable refuses the next call on every worker, with the reason; enable lets calls through', async () => {
    const before = app.board.wikiRequests;
    const off = await runKeel(['tools', 'disable', 'search_wiki', '--reason', 'wiki maintenance', '--tools', TEST_APP_TOOLS], env.env);
    expect(off.code, off.stderr).toBe(0);
    const refused = await env.withWorker(() => ask('scripted/wiki-answer'));
    expect(refused.result.toolCalls).toMatchObject([{ name: 'search_wiki', outcome: 'error', error: expect.stringMatching(/wiki maintenance/) }]);
    expect(app.board.wikiRequests).toBe(before);

    const on = await runKeel(['tools', 'enable', 'search_wiki', '--tools', TEST_APP_TOOLS], env.env);
    expect(on.code, on.stderr).toBe(0);
    const allowed = await env.withWorker(() => ask('scripted/wiki-answer'));
    expect(allowed.result.toolCalls).toMatchObject([{ name: 'search_wiki', outcome: 'ok' }]);
    expect(app.board.wikiRequests).toBe(before + 1);
  }, 60_000);
});

describe('a critical tool that stays down', () => {
  it('fails later sessions at once with a typed failure naming it, without calling the downstream, and undoes their writes', async () => {
    await h.demoApi.setFault({ endpoint: '/orders', status: 503 });
    try {
      const start = () => h.client.startSession({ prompt: 'Check ord_1001', user: { id: 'agent-operator-1', roles: ['support'] }, model: 'scripted/ticket-then-order' });
      const first = await start();
      const err1 = await h.withWorker(() => first.handle.result().catch((e: unknown) => e));
      expect(failureMessage(err1)).toMatch(/critical tool get_order failed after 3 attempt\(s\)/);

      const ordersBefore = (await h.demoApi.stats()).requests['GET /orders'] ?? 0;
      const second = await start();
      const err2 = await h.withWorker(() => second.handle.result().catch((e: unknown) => e));
      expect(failureMessage(err2)).toMatch(/^critical tool get_order is unavailable: .*circuit/);
      expect((err2 as { cause?: { type?: string } }).cause?.type).toBe('CriticalToolFailed');
      expect((await h.demoApi.stats()).requests['GET /orders'] ?? 0).toBe(ordersBefore);
      // Its ticket was undone.
      const events = await historyEvents(h, second.sessionId);
      expect(events.some((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'create_ticket.compensate')).toBe(true);
      const tickets = (await h.demoApi.ledger()).tickets.filter((t) => t.idempotency_key?.startsWith(second.sessionId));
      expect(tickets.map((t) => t.status)).toEqual(['closed']);
    } finally {
      await h.demoApi.clearFaults();
      await h.closeBreakers();
    }
  }, 60_000);
});
