/**
 * Metrics and alerts. The alert rules pass `promtool check rules` and their own `promtool test rules`. A
 * `keel worker` process with KEEL_METRICS_ADDRESS serves Temporal's worker metrics and Keel's on one
 * `/metrics`, and after real sessions its counters say exactly what ran: tool calls by outcome, errors,
 * latency, model calls, tokens and cost at the session's price, session iterations and cost, the breaker a
 * failing downstream opened, and the session waiting for a person; no label carries a session id, a user id
 * or an input. Bad addresses are usage errors. Last, a real Prometheus scrapes a worker whose tool's
 * downstream is down, and the tool error-rate alert fires.
 */
import { spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { parse } from 'yaml';
import { openStore, type KeelStore } from '../src/store/index.js';
import { createTestEnv, type TestEnv } from '../src/testing/index.js';
import type { Scenario } from '../src/testing/scripted/scenario.js';
import { startNotesBoard, type NotesBoard } from './support/notes-board.js';
import { ROOT, TEST_APP_TOOLS } from './support/paths.js';
import { expectUsageError, freePort, killWorkers, runCommand, runKeel, sigkill, spawnWorker, until } from './support/processes.js';
import { scrape, select, startPrometheus, valueOf, type Sample } from './support/prometheus.js';

const RULES = path.join(ROOT, 'deploy', 'prometheus', 'keel-alerts.yml');
const RULE_TESTS = path.join(ROOT, 'deploy', 'prometheus', 'keel-alerts.test.yml');
const hasPromtool = !spawnSync('promtool', ['--version'], { stdio: 'ignore' }).error;
const hasPrometheus = !spawnSync('prometheus', ['--version'], { stdio: 'ignore' }).error;

describe('the alert rules (deploy/prometheus)', () => {
  it.skipIf(!hasPromtool)('pass promtool check rules and their unit tests (promtool test rules)', async () => {
    const check = await runCommand('promtool', ['check', 'rules', RULES], {});
    expect(check.code, check.stdout + check.stderr).toBe(0);
    expect(check.stdout).toMatch(/SUCCESS: 8 rules found/);
    const test = await runCommand('promtool', ['test', 'rules', RULE_TESTS], {});
    expect(test.code, test.stdout + test.stderr).toBe(0);
    expect(test.stdout).toMatch(/SUCCESS/);
  });

  it('hold the seed thresholds', () => {
    const rules = rulesOf(parse(readFileSync(RULES, 'utf8')) as RuleFile);
    const expr = (alert: string) => rules.find((r) => r.alert === alert)?.expr.replace(/\s+/g, ' ').trim() ?? '';
    expect(expr('KeelToolErrorRateHigh')).toMatch(/\[5m\].*> 0\.10$/);
    expect(expr('KeelToolErrorRateCritical')).toMatch(/\[5m\].*> 0\.25$/);
    expect(expr('KeelToolLatencyHigh')).toMatch(/histogram_quantile\(0\.95, .*keel_tool_duration_seconds_bucket.*\[5m\].*> 5$/);
    expect(expr('KeelSessionCostHigh')).toMatch(/histogram_quantile\(0\.95, .*keel_session_cost_usd_bucket\[1h\].*> 0\.50$/);
    expect(expr('KeelDailyCostHigh')).toMatch(/increase\(keel_model_cost_usd_sum\[1d\]\).*> 500$/);
    expect(expr('KeelModelErrorRateHigh')).toMatch(/> 0\.05$/);
    expect(expr('KeelSessionIterationsHigh')).toMatch(/histogram_quantile\(0\.95, .*keel_session_iterations_bucket\[1h\].*> 7$/);
    for (const r of rules.filter((x) => x.expr.includes('keel_tool_'))) expect(r.annotations?.runbook, r.alert).toMatch(/^keel runbook \{\{ \$labels\.tool \}\}/);
    for (const r of rules) expect(['warning', 'critical']).toContain(r.labels?.severity);
  });
});

/** Scenarios of this file: two lookups (one refused), one model overload first; and a note to post. */
const SCENARIOS: Scenario[] = [
  {
    name: 'metrics-lookups',
    description: 'Two lookups in parallel, one of a word the glossary lacks; the first model attempt is overloaded.',
    turns: [
      {
        content: [
          { type: 'tool_use', name: 'define_word', input: { word: 'durable' } },
          { type: 'tool_use', name: 'define_word', input: { word: 'canary-serendipity' } },
        ],
        stop_reason: 'tool_use',
        usage: { input_tokens: 1000, output_tokens: 200 },
        faults: [{ status: 529, times: 1 }],
      },
      { content: [{ type: 'text', text: 'Durable: able to survive a crash.' }], stop_reason: 'end_turn', usage: { input_tokens: 1500, output_tokens: 100, cache_read_input_tokens: 400 } },
    ],
  },
  {
    name: 'metrics-post',
    description: 'Posts a note (irreversible: a person approves), then says so.',
    turns: [
      { content: [{ type: 'tool_use', name: 'post_note', input: { text: 'canary-standup moves to 10:00' } }], stop_reason: 'tool_use' },
      { content: [{ type: 'text', text: 'Posted.' }], stop_reason: 'end_turn' },
    ],
  },
];
/** $3 / $15 per million input / output tokens, cache reads at $0.30. */
const PRICE = { input: 3, output: 15, cacheRead: 0.3 };

let board: NotesBoard;
let env: TestEnv;
beforeAll(async () => {
  board = await startNotesBoard();
  env = await createTestEnv({
    tools: TEST_APP_TOOLS,
    scenarioDirs: [path.join(ROOT, 'test', 'app', 'scenarios')],
    scenarios: SCENARIOS,
    temporalAddress: inject('temporalAddress'),
    workflowBundle: { codePath: inject('testAppBundlePath') },
    env: { NOTES_URL: board.url },
  });
});
afterAll(async () => {
  await killWorkers();
  await env?.close();
  await board?.close();
});

/** A `keel worker` process of the test app with metrics on a free port; returns it and its /metrics URL. */
async function metricsWorker(): Promise<{ worker: ChildProcess; address: string; url: string }> {
  const address = `127.0.0.1:${await freePort()}`;
  const worker = await spawnWorker({ ...env.env, KEEL_METRICS_ADDRESS: address, KEEL_METRICS_INTERVAL: '200ms' }, TEST_APP_TOOLS, inject('testAppBundlePath'));
  return { worker, address, url: `http://${address}/metrics` };
}

const user = { id: 'canary-user-7731', roles: ['staff'] };

describe('a worker with KEEL_METRICS_ADDRESS', () => {
  it('serves Temporal’s and Keel’s metrics on one /metrics, with the values of what ran and no ids or inputs', async () => {
    const { worker, url } = await metricsWorker();
    try {
      const lookups = await env.client.startSession({
        prompt: 'What does durable mean?',
        user,
        agent: 'notes',
        model: 'scripted/metrics-lookups',
        idleTimeout: 0,
        pricing: { 'scripted/metrics-lookups': PRICE },
        modelRetry: { initialInterval: '50ms', maximumAttempts: 3 },
      });
      const first = await lookups.handle.result();
      // The session tells the model of the refused word (an error result); the metrics count it as `rejected`.
      expect(first.toolCalls.map((c) => c.outcome).sort()).toEqual(['error', 'ok']);

      board.wikiDown = true;
      const wiki = await env.client.startSession({ prompt: 'Who is on call?', user, agent: 'notes', model: 'scripted/wiki-answer', idleTimeout: 0 });
      expect((await wiki.handle.result()).toolCalls).toMatchObject([{ name: 'search_wiki', outcome: 'error' }]);
      board.wikiDown = false;

      const post = await env.client.startSession({ prompt: 'Post the standup change', user, agent: 'notes', model: 'scripted/metrics-post', idleTimeout: 0 });
      const taskQueue = env.config.KEEL_TASK_QUEUE;
      // The session waits for a person: the fleet-wide gauge (a visibility count) shows it, then clears.
      await until(async () => ((await valueAt(url, 'keel_sessions_awaiting_approval', { taskQueue })) === 1 ? true : undefined), 'the session waiting for approval', 20_000);
      const [request] = await until(async () => {
        const pending = await env.client.pendingApprovals(post.sessionId);
        return pending.length ? pending : undefined;
      }, 'the approval request');
      await env.client.decide(post.sessionId, { requestId: request!.requestId, decision: 'approve', approver: { id: 'lead-1', roles: ['approver'] }, reason: 'ok' });
      await post.handle.result();
      await until(async () => ((await valueAt(url, 'keel_sessions_awaiting_approval', { taskQueue })) === 0 ? true : undefined), 'the gauge to clear', 20_000);

      // An operator disables the wiki: its refused call is `disabled`, not an error, and the gauge says so.
      await withStore((store) => store.disable('search_wiki', 'wiki maintenance', 'ops'));
      const off = await env.client.startSession({ prompt: 'Who is on call?', user, agent: 'notes', model: 'scripted/wiki-answer', idleTimeout: 0 });
      expect((await off.handle.result()).toolCalls).toMatchObject([{ name: 'search_wiki', outcome: 'error', error: expect.stringMatching(/wiki maintenance/) }]);
      await until(async () => ((await valueAt(url, 'keel_tool_disabled', { tool: 'search_wiki' })) === 1 ? true : undefined), 'the disabled gauge', 20_000);

      const m = await scrape(url);
      const at = (name: string, labels: Record<string, string> = {}) => valueOf(m, name, labels);

      // Temporal's own worker metrics, from the same endpoint (core's prefix).
      expect(at('temporal_workflow_completed', { workflow_type: 'agentSession', task_queue: taskQueue })).toBe(4);
      expect(at('temporal_activity_execution_latency_count', { activity_type: 'define_word' })).toBe(2);

      // Tool calls: every attempt, by outcome; a refused input is `rejected`, a read retried 3 times is 3 errors.
      expect(at('keel_tool_calls_total', { tool: 'define_word', tier: 'read', phase: 'run', outcome: 'ok' })).toBe(1);
      expect(at('keel_tool_calls_total', { tool: 'define_word', tier: 'read', phase: 'run', outcome: 'rejected' })).toBe(1);
      expect(at('keel_tool_errors_total', { tool: 'define_word', error_type: 'ToolError' })).toBe(1);
      expect(at('keel_tool_calls_total', { tool: 'search_wiki', outcome: 'error' })).toBe(3);
      expect(at('keel_tool_errors_total', { tool: 'search_wiki', error_type: 'Error' })).toBe(3);
      expect(at('keel_tool_calls_total', { tool: 'search_wiki', outcome: 'disabled' })).toBe(1);
      expect(at('keel_tool_errors_total', { tool: 'search_wiki' })).toBe(3);
      expect(at('keel_tool_calls_total', { tool: 'post_note', tier: 'irreversible', phase: 'run', outcome: 'ok' })).toBe(1);
      // Latency: a histogram in seconds, one observation per attempt, on Keel's buckets.
      expect(at('keel_tool_duration_seconds_count', { tool: 'define_word' })).toBe(2);
      expect(at('keel_tool_duration_seconds_bucket', { tool: 'search_wiki', outcome: 'error', le: '+Inf' })).toBe(3);
      expect(select(m, 'keel_tool_duration_seconds_bucket', { tool: 'define_word', outcome: 'ok' }).map((s) => s.labels.le)).toContain('5');
      const wikiSeconds = at('keel_tool_duration_seconds_sum', { tool: 'search_wiki', outcome: 'error' })!;
      expect(wikiSeconds).toBeGreaterThan(0);
      expect(wikiSeconds).toBeLessThan(5);

      // Model calls: the overloaded attempt is an error; tokens and cost of the two answers, at the session's price.
      const model = 'scripted/metrics-lookups';
      expect(at('keel_model_calls_total', { model, outcome: 'error' })).toBe(1);
      expect(at('keel_model_calls_total', { model, outcome: 'ok' })).toBe(2);
      expect(at('keel_model_tokens_total', { model, kind: 'input' })).toBe(2500);
      expect(at('keel_model_tokens_total', { model, kind: 'output' })).toBe(300);
      expect(at('keel_model_tokens_total', { model, kind: 'cache_read' })).toBe(400);
      const cost = (2500 * 3 + 300 * 15 + 400 * 0.3) / 1e6;
      expect(at('keel_model_cost_usd_sum', { model })).toBeCloseTo(cost, 9);
      expect(at('keel_model_cost_usd_count', { model })).toBe(2);
      expect(first.usage.cost_usd).toBeCloseTo(cost, 9);
      // An unpriced model has tokens but no cost.
      expect(at('keel_model_tokens_total', { model: 'scripted/wiki-answer', kind: 'input' })).toBeGreaterThan(0);
      expect(at('keel_model_cost_usd_count', { model: 'scripted/wiki-answer' })).toBeUndefined();

      // Sessions, recorded by the workflow when each ended.
      expect(at('keel_sessions_total', { agent: 'notes', model, outcome: 'completed', stop_reason: 'end_turn' })).toBe(1);
      expect(at('keel_sessions_total', { agent: 'notes', outcome: 'completed' })).toBe(4);
      expect(at('keel_session_iterations_sum', { agent: 'notes', model })).toBe(2);
      expect(at('keel_session_iterations_bucket', { agent: 'notes', model, le: '1' })).toBe(0);
      expect(at('keel_session_iterations_bucket', { agent: 'notes', model, le: '2' })).toBe(1);
      expect(at('keel_session_cost_usd_sum', { agent: 'notes', model })).toBeCloseTo(cost, 9);
      expect(at('keel_session_duration_seconds_count', { agent: 'notes' })).toBe(4);

      // The breaker the wiki's three failures opened, as the fleet's store has it; the others closed.
      expect(at('keel_tool_breaker_state', { tool: 'search_wiki' })).toBe(2);
      expect(at('keel_tool_breaker_state', { tool: 'define_word' })).toBe(0);
      expect(at('keel_tool_disabled', { tool: 'search_wiki' })).toBe(1);
      expect(at('keel_tool_disabled', { tool: 'define_word' })).toBe(0);

      // Labels are names, tiers and outcomes: no session id, user id or input anywhere on the page.
      const page = await (await fetch(url)).text();
      for (const canary of [lookups.sessionId, wiki.sessionId, post.sessionId, off.sessionId, user.id, 'canary-serendipity', 'canary-standup']) expect(page).not.toContain(canary);
      const keelLabels = new Set(m.filter((s) => s.name.startsWith('keel_')).flatMap((s) => Object.keys(s.labels)));
      expect([...keelLabels].sort()).toEqual(
        ['activityType', 'agent', 'error_type', 'kind', 'le', 'model', 'namespace', 'outcome', 'phase', 'stop_reason', 'taskQueue', 'tier', 'tool', 'workflowType'].sort(),
      );
    } finally {
      await withStore((store) => store.enable('search_wiki'));
      await resetBreakers();
      await sigkill(worker);
    }
  }, 90_000);

  it('exits on SIGTERM (the exporter does not hold the process) and frees its port', async () => {
    const { worker, address, url } = await metricsWorker();
    expect((await fetch(url)).ok).toBe(true);
    const exited = new Promise<number | null>((resolve) => worker.once('exit', resolve));
    worker.kill('SIGTERM');
    expect(await exited).toBe(0);
    await expect(listening(address)).resolves.toBe(false);
  }, 30_000);

  it('refuses an address it cannot serve: exit 2 naming the setting', async () => {
    const tools = ['--tools', TEST_APP_TOOLS];
    // A port another process holds.
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    try {
      const port = (taken.address() as net.AddressInfo).port;
      const [hostName, flag, busy] = await Promise.all([
        runKeel(['worker', ...tools], { ...env.env, KEEL_METRICS_ADDRESS: 'localhost:9464' }),
        runKeel(['worker', ...tools, '--metrics', '9464'], env.env),
        runKeel(['worker', ...tools, '--metrics', `127.0.0.1:${port}`], env.env),
      ]);
      expect(expectUsageError(hostName)).toMatch(/^keel: KEEL_METRICS_ADDRESS: expected an IP address and a port/);
      expect(expectUsageError(flag)).toMatch(/^keel: --metrics: expected an IP address and a port .*\(got '9464'\)/);
      expect(expectUsageError(busy)).toMatch(new RegExp(`^keel: KEEL_METRICS_ADDRESS: cannot serve /metrics on 127\\.0\\.0\\.1:${port}: .*in use`));
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
  }, 60_000);
});

describe('a real Prometheus scraping a worker under injected faults', () => {
  it.skipIf(!hasPrometheus)('fires the tool error-rate alert for the tool whose downstream is down', async () => {
    const { worker, address } = await metricsWorker();
    // keel-alerts.yml's own rules with every `for:` cut to 1s, scraped and evaluated every second, so
    // the test takes seconds; the expressions (5-minute windows, thresholds) are the file's, untouched.
    const groups = (parse(readFileSync(RULES, 'utf8')) as RuleFile).groups.map((g) => ({ ...g, rules: g.rules.map((r) => ({ ...r, for: '1s' })) }));
    const prometheus = await startPrometheus({ targets: [address], groups });
    board.wikiDown = true;
    let stop = false;
    let trafficError: unknown;
    // Sessions keep asking the wiki while it is down: failed attempts, then fast refusals of the open breaker.
    const traffic = (async () => {
      while (!stop) {
        const { handle } = await env.client.startSession({ prompt: 'Who is on call?', user, agent: 'notes', model: 'scripted/wiki-answer', idleTimeout: 0 });
        await handle.result();
      }
    })().catch((err: unknown) => {
      trafficError = err;
    });
    try {
      const firing = await until(async () => {
        const alerts = await prometheus.alerts();
        if (trafficError) throw new Error(`a session failed: ${String(trafficError)}`);
        return alerts.find((a) => a.labels.alertname === 'KeelToolErrorRateCritical' && a.state === 'firing') ? alerts : undefined;
      }, 'KeelToolErrorRateCritical to fire', 60_000);
      const named = (name: string) => firing.filter((a) => a.labels.alertname === name && a.state === 'firing');
      expect(named('KeelToolErrorRateCritical')).toMatchObject([
        { labels: { tool: 'search_wiki', severity: 'critical' }, annotations: { summary: 'Tool search_wiki: 100% of calls failed over 5 minutes (critical above 25%)', runbook: 'keel runbook search_wiki --tools <module>' } },
      ]);
      expect(named('KeelToolErrorRateHigh').map((a) => a.labels.tool)).toEqual(['search_wiki']);
      // What Prometheus computed from the worker's counters: every attempt failed or was refused.
      const ratio = await prometheus.query('sum by (tool) (rate(keel_tool_calls_total{outcome=~"error|unavailable"}[5m])) / sum by (tool) (rate(keel_tool_calls_total[5m]))');
      expect(ratio).toMatchObject([{ metric: { tool: 'search_wiki' }, value: [expect.any(Number), '1'] }]);
      await until(async () => ((await prometheus.alerts()).some((a) => a.labels.alertname === 'KeelToolCircuitOpen' && a.labels.tool === 'search_wiki' && a.state === 'firing') ? true : undefined), 'KeelToolCircuitOpen to fire', 20_000);
    } finally {
      stop = true;
      board.wikiDown = false;
      await traffic;
      await prometheus.close();
      await resetBreakers();
      await sigkill(worker);
    }
  }, 120_000);
});

interface Rule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
interface RuleFile {
  groups: Array<{ name: string; rules: Rule[] }>;
}
const rulesOf = (f: RuleFile) => f.groups.flatMap((g) => g.rules);

/** The value of one metric on a worker's page (summed over matching series). */
async function valueAt(url: string, name: string, labels: Record<string, string>): Promise<number | undefined> {
  const samples: Sample[] = await scrape(url);
  return valueOf(samples, name, labels);
}

/** Whether something accepts connections on `ip:port`. */
function listening(address: string): Promise<boolean> {
  const [host, port] = [address.slice(0, address.lastIndexOf(':')), Number(address.slice(address.lastIndexOf(':') + 1))];
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** Closes the breaker this file's failing wiki opened (the store is this env's own). */
async function resetBreakers(): Promise<void> {
  await withStore((store) => store.resetBreaker('search_wiki'));
}

/** Runs `fn` on this env's store (the one its workers share). */
async function withStore<T>(fn: (store: KeelStore) => Promise<T>): Promise<T> {
  const store = await openStore(env.config);
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}
