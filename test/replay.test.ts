/**
 * Replay coverage of `agentSession`: a freshly captured history replays against the current code; the
 * golden histories under test/histories/ (one per scenario, a conversation with a follow-up message, both
 * runs of a session that continued as new, and one tool chain, captured from real runs) still replay, so a
 * change that would break running sessions fails here; and a deliberately changed workflow is caught
 * as a DeterminismViolationError. Regenerate goldens with `KEEL_UPDATE_GOLDEN=1 npx vitest run test/replay.test.ts`
 * only when a change is meant to be incompatible (and version it with patched() instead when possible).
 */
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundleWorkflowCode } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { bundleApp } from '../src/app/load.js';
import { readHistoryFile, replayHistory, writeHistoryFile } from '../src/replay.js';
import { ROOT, approveUntilDone, startHarness, type Harness } from './support/harness.js';
import { EXAMPLE_TOOLS } from './support/paths.js';

const HISTORIES = path.join(ROOT, 'test', 'histories');
const GOLDEN_SCENARIOS = ['refund-demo', 'bad-input', 'overloaded', 'kb-down'];
/**
 * Golden files: one per scenario of agentSession, a conversation, the two runs of a continued session, one
 * toolChain, one toolChain with parallel steps (`tool-chain-dag`, captured by test/dag.test.ts), and a session
 * whose reads ran as local activities (`local-reads`, captured by test/execution-modes.test.ts).
 */
const GOLDEN_FILES = [...GOLDEN_SCENARIOS, 'follow-up', 'continue-as-new-run1', 'continue-as-new-run2', 'tool-chain', 'tool-chain-dag', 'local-reads'].map((name) => `${name}.json`).sort();
const bundle = () => ({ codePath: inject('workflowBundlePath') });

let h: Harness;
beforeAll(async () => {
  h = await startHarness('replay');
});
afterAll(async () => {
  await h?.close();
});

/** A chain whose second step uses the first step's result, run to completion. */
async function runChain(): Promise<string> {
  const handle = await h.client.startChain(
    {
      user: { id: 'golden-user', roles: ['support'] },
      steps: [
        { id: 'ticket', tool: 'create_ticket', input: { customer_id: 'cust_002', subject: 'Late delivery', body: 'Order ord_2001 is late.' } },
        { tool: 'apply_credit', input: { customer_id: 'cust_002', amount_cents: 500, reason: 'goodwill for {{steps.ticket.id}}' } },
      ],
    },
    { chainId: `golden-chain-${Date.now()}` },
  );
  await h.withWorker(() => handle.result());
  return handle.workflowId;
}

/** A conversation: the prompt, then a follow-up message through the update, then the end. */
async function runConversation(): Promise<string> {
  const { sessionId, handle } = await h.client.startSession({
    sessionId: `golden-follow-up-${Date.now()}`,
    prompt: 'How much was ord_1001?',
    user: { id: 'golden-user', roles: ['support'] },
    agent: 'support',
    model: 'scripted/follow-up',
    idleTimeout: '1m',
  });
  await h.withWorker(async () => {
    await h.client.sendMessage(sessionId, 'And what was in it?');
    await h.client.endConversation(sessionId);
    await handle.result();
  });
  return sessionId;
}

/** A session whose small history limit makes it continue as new; returns its first and second run ids. */
async function runContinued(): Promise<{ sessionId: string; runs: string[] }> {
  const { sessionId, handle } = await h.client.startSession({
    sessionId: `golden-continued-${Date.now()}`,
    prompt: 'Scenario bad-input',
    user: { id: 'golden-user', roles: ['support'] },
    model: 'scripted/bad-input',
    historyLimitBytes: 1_000,
  });
  await h.withWorker(() => handle.result());
  const runs = [handle.firstExecutionRunId];
  const first = await h.client.temporal.workflow.getHandle(sessionId, runs[0]).fetchHistory();
  runs.push(first.events!.at(-1)!.workflowExecutionContinuedAsNewEventAttributes!.newExecutionRunId!);
  return { sessionId, runs };
}

async function runScenario(scenario: string): Promise<string> {
  if (scenario === 'kb-down') await h.demoApi.setFault({ endpoint: '/kb', status: 503 });
  try {
    const { sessionId, handle } = await h.client.startSession({
      sessionId: `golden-${scenario}-${Date.now()}`,
      prompt: `Scenario ${scenario}`,
      user: { id: 'golden-user', roles: ['support'] },
      model: `scripted/${scenario}`,
      modelRetry: { initialInterval: '50ms' },
    });
    await h.withWorker(() => Promise.all([handle.result(), approveUntilDone(h.client, sessionId)]));
    return sessionId;
  } finally {
    await h.demoApi.clearFaults();
    await h.closeBreakers();
  }
}

describe('replay', () => {
  it('replays a freshly captured toolChain history against the current code', async () => {
    const chainId = await runChain();
    const history = await h.client.temporal.workflow.getHandle(chainId).fetchHistory();
    expect(await replayHistory(history, chainId, { workflowBundle: bundle() })).toMatchObject({ deterministic: true });
  });

  it('replays a freshly captured history against the current code', async () => {
    const sessionId = await runScenario('bad-input');
    const history = await h.client.session(sessionId).fetchHistory();
    const report = await replayHistory(history, sessionId, { workflowBundle: bundle() });
    expect(report).toMatchObject({ deterministic: true, workflowId: sessionId });
    expect(report.events).toBeGreaterThan(10);
  });

  it.runIf(process.env.KEEL_UPDATE_GOLDEN === '1')('captures golden histories', async () => {
    for (const scenario of GOLDEN_SCENARIOS) {
      const sessionId = await runScenario(scenario);
      const history = await h.client.session(sessionId).fetchHistory();
      await writeHistoryFile(path.join(HISTORIES, `${scenario}.json`), history);
    }
    const chainId = await runChain();
    await writeHistoryFile(path.join(HISTORIES, 'tool-chain.json'), await h.client.temporal.workflow.getHandle(chainId).fetchHistory());
    const conversationId = await runConversation();
    await writeHistoryFile(path.join(HISTORIES, 'follow-up.json'), await h.client.session(conversationId).fetchHistory());
    const continued = await runContinued();
    for (const [i, runId] of continued.runs.entries()) {
      await writeHistoryFile(path.join(HISTORIES, `continue-as-new-run${i + 1}.json`), await h.client.temporal.workflow.getHandle(continued.sessionId, runId).fetchHistory());
    }
  }, 120_000);

  it('replays every golden history under test/histories/', async () => {
    const files = (await readdir(HISTORIES)).filter((f) => f.endsWith('.json'));
    expect(files.sort()).toEqual(GOLDEN_FILES);
    for (const f of files) {
      const report = await replayHistory(await readHistoryFile(path.join(HISTORIES, f)), f, { workflowBundle: bundle() });
      expect(report, f).toMatchObject({ deterministic: true });
    }
  });

  it('replays them on a bundle without the tracing interceptors too (what a worker that does not trace runs)', async () => {
    const quiet = { log() {}, trace() {}, debug() {}, info() {}, warn() {}, error() {} };
    const untraced = await bundleApp(EXAMPLE_TOOLS, { logger: quiet, tracing: false });
    for (const f of GOLDEN_FILES) {
      const report = await replayHistory(await readHistoryFile(path.join(HISTORIES, f)), f, { workflowBundle: { code: untraced.code } });
      expect(report, f).toMatchObject({ deterministic: true });
    }
  }, 60_000);

  it('catches an incompatible workflow change as a DeterminismViolationError', async () => {
    const changed = await bundleWorkflowCode({
      workflowsPath: fileURLToPath(new URL('./fixtures/changed-workflow.ts', import.meta.url)),
      logger: { log() {}, trace() {}, debug() {}, info() {}, warn() {}, error() {} },
    });
    const history = await readHistoryFile(path.join(HISTORIES, 'refund-demo.json'));
    const report = await replayHistory(history, 'refund-demo', { workflowBundle: { code: changed.code } });
    expect(report.deterministic).toBe(false);
    expect(report.error?.type).toBe('DeterminismViolationError');
  }, 60_000);
});
