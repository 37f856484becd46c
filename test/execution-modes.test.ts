/**
 * Execution modes (README, *Execution modes*): a session whose `read` tools run as local activities gets
 * the same results as one whose reads are regular activities, with a marker in history instead of an
 * activity event per read, while its write stays a regular activity; a failing local read is retried by the
 * worker and an optional one degrades to a note; the model call runs local on request; the per-tool log
 * line and the stream's tool events are there for local reads too. Histories of such sessions replay, and
 * golden histories of sessions begun before (where reads were regular activities) replay against a build
 * whose read declares `execution: 'local'`, because the patch `keel-local-reads` is read once, at start.
 * `KEEL_UPDATE_GOLDEN=1` writes the local-reads session's history as `test/histories/local-reads.json`.
 */
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { z } from 'zod';
import { bundleApp } from '../src/app/load.js';
import { readHistoryFile, replayHistory, writeHistoryFile } from '../src/replay.js';
import { openStore } from '../src/store/index.js';
import { subscribeSession, type SessionStreamEvent } from '../src/stream/index.js';
import { defineTool, runsLocal, ToolDefinitionError } from '../src/tools/index.js';
import type { SessionResult } from '../src/workflows/types.js';
import { ROOT, historyEvents, scheduledActivities, startHarness, type Harness } from './support/harness.js';

type Events = Awaited<ReturnType<typeof historyEvents>>;

let h: Harness;
beforeAll(async () => {
  h = await startHarness('execution-modes');
});
afterAll(async () => {
  await h?.close();
});

const user = { id: 'modes-user', roles: ['support'] };
const READS = ['lookup_customer', 'get_order', 'search_kb'];
const quiet = { log() {}, trace() {}, debug() {}, info() {}, warn() {}, error() {} };

/** The activity type of each local activity marker, in history order. */
function localActivities(events: Events): string[] {
  return events.flatMap((e) => {
    const m = e.markerRecordedEventAttributes;
    if (m?.markerName !== 'core_local_activity') return [];
    const data = m.details?.data?.payloads?.[0]?.data;
    return data ? [(JSON.parse(Buffer.from(data).toString('utf8')) as { activity_type: string }).activity_type] : [];
  });
}

/** What the model was told of each tool call, in the status query's events (the session's own story); a worker must run. */
async function toolStory(sessionId: string): Promise<string[]> {
  const status = await h.client.status(sessionId);
  return status.events.flatMap((e) => (e.kind === 'tool' ? [`${e.name}:${e.outcome}:${e.detail}`] : []));
}

/** Runs the `local-reads` scenario to its end with the given execution modes; returns its id, result and stream events. */
async function runSession(name: string, execution?: { reads?: 'local' | 'regular'; model?: 'local' | 'regular' }) {
  // Base 36: a long run of digits can pass the Luhn check, and the log's redactor would mask it as a card number.
  const sessionId = `modes-${name}-${Date.now().toString(36)}`;
  const seen: SessionStreamEvent[] = [];
  const unsubscribe = await subscribeSession(h.stream, sessionId, (e) => seen.push(e));
  try {
    const { handle } = await h.client.startSession({ sessionId, prompt: 'My keyboard from ord_1001 arrived damaged.', user, model: 'scripted/local-reads', ...(execution ? { execution } : {}) });
    // The status query of the closed session is answered too (its patches were read at its start).
    const [result, story] = await h.withWorker(async (): Promise<[SessionResult, string[]]> => [await handle.result(), await toolStory(sessionId)]);
    return { sessionId, result, story, events: await historyEvents(h, sessionId), stream: seen };
  } finally {
    unsubscribe();
  }
}

describe('execution modes', () => {
  let regular: Awaited<ReturnType<typeof runSession>>;
  let local: Awaited<ReturnType<typeof runSession>>;

  it('runs read tools as local activities when the session says so: markers instead of activities, the same results, the write still regular', async () => {
    regular = await runSession('regular');
    local = await runSession('local', { reads: 'local' });

    // Regular reads: one scheduled activity per call, each named after its tool (a turn's calls in any order).
    expect(scheduledActivities(regular.events).sort()).toEqual(['callModel', 'callModel', 'callModel', 'create_ticket', 'get_order', 'get_order', 'lookup_customer', 'search_kb']);
    // Local reads: the model and the write are activities; the reads are local activity markers of the same names.
    expect(scheduledActivities(local.events).sort()).toEqual(['callModel', 'callModel', 'callModel', 'create_ticket']);
    expect(localActivities(local.events).filter((t) => READS.includes(t)).sort()).toEqual(['get_order', 'get_order', 'lookup_customer', 'search_kb']);
    expect(localActivities(regular.events).filter((t) => READS.includes(t))).toEqual([]);
    // The write was dispatched by the workflow task that ran the turn's reads, once they had finished: a
    // workflow task completes only when its local activities have.
    const firstTask = (events: Events, pred: (e: Events[number]) => boolean) => String(events.find(pred)?.markerRecordedEventAttributes?.workflowTaskCompletedEventId ?? events.find(pred)?.activityTaskScheduledEventAttributes?.workflowTaskCompletedEventId);
    expect(firstTask(local.events, (e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'create_ticket')).toBe(
      firstTask(local.events, (e) => e.markerRecordedEventAttributes?.markerName === 'core_local_activity' && localActivities([e])[0] === 'lookup_customer'),
    );

    // The same answers, tool outcomes and results the model read (the scripted model checked them as it went).
    expect(local.result.answer).toBe(regular.result.answer);
    expect(local.result.stopReason).toBe('end_turn');
    expect(local.result.toolCalls.map((c) => `${c.name}:${c.outcome}`)).toEqual(regular.result.toolCalls.map((c) => `${c.name}:${c.outcome}`));
    expect(local.result.toolCalls.map((c) => c.outcome)).toEqual(['ok', 'ok', 'ok', 'ok', 'error']);
    const story = (s: string[]) => s.filter((line) => !line.startsWith('create_ticket')).sort();
    expect(story(local.story)).toEqual(story(regular.story));

    // The write ran once, with its key, as a regular activity.
    const tickets = (await h.demoApi.ledger()).tickets.filter((t) => t.idempotency_key?.startsWith(local.sessionId));
    expect(tickets).toHaveLength(1);
    expect(tickets[0]!.idempotency_key).toBe(local.result.toolCalls[2]!.idempotencyKey);
  });

  it('keeps the per-tool log line and the stream events for local reads', () => {
    const lines = () => h.logLines().filter((l) => l.msg === 'tool call' && l.session === local.sessionId);
    expect(lines().map((l) => `${String(l.tool)}:${String(l.success)}`).sort()).toEqual(['create_ticket:true', 'get_order:false', 'get_order:true', 'lookup_customer:true', 'search_kb:true']);
    const finished = local.stream.flatMap((e) => (e.type === 'tool_finished' ? [`${e.tool}:${e.outcome}`] : []));
    expect(finished.sort()).toEqual(['create_ticket:ok', 'get_order:error', 'get_order:ok', 'lookup_customer:ok', 'search_kb:ok']);
  });

  it('writes the audit trail in batches: every step on record, one write before the side effect and one at the end', async () => {
    const store = await openStore(h.config);
    let kinds: string[];
    try {
      kinds = (await store.auditTrail(local.sessionId)).map((r) => `${r.kind}${r.data.tool ? `:${String(r.data.tool)}` : ''}`);
    } finally {
      await store.close();
    }
    const count = (kind: string) => kinds.filter((k) => k.startsWith(kind)).length;
    expect([count('run'), count('model_turn'), count('authorization'), count('tool_intent'), count('tool_result'), count('run_end')]).toEqual([2, 3, 5, 5, 5, 1]);
    // The write's intent was on record before it ran: it went out with the write that preceded the ticket's activity.
    expect(kinds.indexOf('tool_intent:create_ticket')).toBeLessThan(kinds.indexOf('tool_result:create_ticket'));
    const audits = (events: Events) => localActivities(events).filter((t) => t === 'appendAudit').length;
    expect(audits(local.events)).toBe(2);
    // A session begun before the trail was lean (the golden local-reads history) wrote before every model call and read, and replays so.
    expect(audits((await readHistoryFile(path.join(ROOT, 'test', 'histories', 'local-reads.json'))).events ?? [])).toBe(9);
  });

  it("retries a failing local read in the worker, within the tier's attempts", async () => {
    await h.demoApi.setFault({ endpoint: '/kb', status: 503, times: 2 });
    try {
      const before = (await h.demoApi.stats()).requests['GET /kb'] ?? 0;
      const { result, events } = await runSession('retry', { reads: 'local' });
      expect(result.toolCalls.map((c) => `${c.name}:${c.outcome}`)).toEqual(['lookup_customer:ok', 'get_order:ok', 'create_ticket:ok', 'search_kb:ok', 'get_order:error']);
      // Two failed attempts and the one that answered, all within one local activity (one marker, attempt 3).
      expect((await h.demoApi.stats()).requests['GET /kb']).toBe(before + 3);
      const kb = events.find((e) => e.markerRecordedEventAttributes?.markerName === 'core_local_activity' && localActivities([e])[0] === 'search_kb');
      const data = JSON.parse(Buffer.from(kb!.markerRecordedEventAttributes!.details!.data!.payloads![0]!.data!).toString('utf8')) as { attempt: number };
      expect(data.attempt).toBe(3);
    } finally {
      await h.demoApi.clearFaults();
      await h.closeBreakers();
    }
  });

  it('runs the model call as a local activity on request, with the same answer', async () => {
    const both = await runSession('model', { reads: 'local', model: 'local' });
    expect(scheduledActivities(both.events)).toEqual(['create_ticket']);
    expect(localActivities(both.events).filter((t) => t === 'callModel')).toHaveLength(3);
    expect(both.result.answer).toBe(regular.result.answer);
    expect(both.result.iterations).toBe(3);
    // The model's text still streams to watchers.
    expect(both.stream.some((e) => e.type === 'text_delta')).toBe(true);
  });

  it('replays a local-reads history', async () => {
    const history = await h.client.session(local.sessionId).fetchHistory();
    expect(await replayHistory(history, local.sessionId, { workflowBundle: { codePath: inject('workflowBundlePath') } })).toMatchObject({ deterministic: true });
    if (process.env.KEEL_UPDATE_GOLDEN === '1') await writeHistoryFile(path.join(ROOT, 'test', 'histories', 'local-reads.json'), history);
  });

  it("replays sessions begun before local reads against a build whose read says execution: 'local'", async () => {
    const bundle = await bundleApp(path.join(ROOT, 'test', 'fixtures', 'local-reads-tools.ts'), { logger: quiet });
    const dir = path.join(ROOT, 'test', 'histories');
    // Agent sessions that called get_order as a regular activity, before the patch existed.
    const files = (await readdir(dir)).filter((f) => ['refund-demo.json', 'follow-up.json', 'continue-as-new-run1.json'].includes(f));
    expect(files).toHaveLength(3);
    for (const f of files) {
      const report = await replayHistory(await readHistoryFile(path.join(dir, f)), f, { workflowBundle: { code: bundle.code } });
      expect(report, f).toMatchObject({ deterministic: true });
    }
  }, 60_000);
});

describe('execution in the tool contract', () => {
  const input = z.object({ id: z.string() });
  const run = async () => ({});

  it('lets only quick read tools run local', () => {
    expect(() => defineTool({ name: 'w', description: 'a write', input, risk: 'write', noCompensation: 'n/a', execution: 'local', run })).toThrow(/only a read tool may run as a local activity/);
    expect(() => defineTool({ name: 'r', description: 'a slow read', input, risk: 'read', timeout: '20s', execution: 'local', run })).toThrow(ToolDefinitionError);
    expect(defineTool({ name: 'r', description: 'a read', input, risk: 'read', execution: 'local', run }).policy.execution).toBe('local');
  });

  it("decides per call: the tool's own execution first, then the session's mode for reads", () => {
    const read = defineTool({ name: 'r', description: 'a read', input, risk: 'read', run });
    const local = defineTool({ name: 'l', description: 'a read', input, risk: 'read', execution: 'local', run });
    const pinned = defineTool({ name: 'p', description: 'a long read', input, risk: 'read', execution: 'regular', run });
    const slow = defineTool({ name: 's', description: 'a slow read', input, risk: 'read', timeout: '20s', run });
    const write = defineTool({ name: 'w', description: 'a write', input, risk: 'write', noCompensation: 'n/a', run });
    expect([read, local, pinned, slow, write].map((t) => runsLocal(t, undefined))).toEqual([false, true, false, false, false]);
    expect([read, local, pinned, slow, write].map((t) => runsLocal(t, 'local'))).toEqual([true, true, false, false, false]);
  });
});
