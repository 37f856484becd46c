/**
 * `keel eval` as CI runs it, as a subprocess against the shared Temporal server, the scripted model and a
 * worker on this file's task queue: the support-desk example's suite passes its committed baseline, and
 * its `--json` report carries the figures of what ran, witnessed by the sessions' own results and the demo
 * ledger; a copy whose model regressed (the `eval-*-regressed` scenarios: a refund without the order
 * lookup, a wrong and wordier answer) exits 1, its table listing each case and naming each metric and case
 * that got worse; a case is given up on past its timeout, or at an approval the suite cannot give; a bad
 * suite or baseline exits 2 with one line. The baseline rule and the tool matching are also checked
 * in-process, on hand-made reports.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { checkSessionInputs, compareToBaseline, loadBaseline, loadSuite, parseSuite, summarize, toolsMatch, type Baseline, type CaseReport, type EvalReport } from '../src/eval/index.js';
import { ROOT, startHarness, type Harness } from './support/harness.js';
import { expectUsageError, runKeel } from './support/processes.js';

const SUITE = path.join(ROOT, 'examples', 'support-desk', 'evals', 'support.json');
const BASELINE = path.join(ROOT, 'examples', 'support-desk', 'evals', 'support.baseline.json');
const CASES = ['refund-partial', 'order-status', 'refund-policy', 'late-delivery'];

let h: Harness;
let dir: string;
beforeAll(async () => {
  h = await startHarness('eval');
  dir = mkdtempSync(path.join(tmpdir(), 'keel-eval-test-'));
});
afterAll(async () => {
  await h?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const keel = (args: string[]) => runKeel(args, h.env);
/** Writes `doc` as a JSON file in this file's temp dir and returns its path. */
const writeJson = (name: string, doc: unknown) => {
  const file = path.join(dir, name);
  writeFileSync(file, typeof doc === 'string' ? doc : JSON.stringify(doc, null, 2));
  return file;
};
type SuiteDoc = { name: string; defaults: { pricing: Record<string, unknown> }; cases: Array<{ name: string; model: string; [k: string]: unknown }> };
const exampleSuite = () => JSON.parse(readFileSync(SUITE, 'utf8')) as SuiteDoc;

describe('keel eval on the support-desk suite', () => {
  it('passes against its committed baseline; --json prints one report with the figures of what ran', async () => {
    const r = await h.withWorker(() => keel(['eval', SUITE, '--baseline', BASELINE, '--json']));
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as EvalReport;
    expect(report).toMatchObject({ suite: 'support', concurrency: 1, taskQueue: h.env.KEEL_TASK_QUEUE, passed: true });
    expect(report.comparison).toMatchObject({ passed: true, commonCases: 4, regressions: [], newlyFailing: [], tolerance: { resourcesPercent: 10, latencyPercent: null } });
    expect(report.cases.map((c) => c.name)).toEqual(CASES);
    // Progress went to stderr, one line per case.
    expect(r.stderr.match(/^PASS /gm)).toHaveLength(4);

    const byName = Object.fromEntries(report.cases.map((c) => [c.name, c]));
    // Tokens as the scenarios script them (eval-*.json), cost at the suite's 3 / 15 USD per million tokens.
    expect(byName['refund-partial']).toMatchObject({
      status: 'completed',
      passed: true,
      steps: 3,
      tokens: { input: 4050, output: 190, total: 4240 },
      costUsd: 0.015,
      tools: { called: [{ name: 'get_order', outcome: 'ok' }, { name: 'issue_refund', outcome: 'ok' }], match: true },
      answer: { correct: true },
      approvals: ['issue_refund-1'],
    });
    expect(byName['late-delivery']!.tools.called.map((t) => t.name)).toEqual(['create_ticket', 'apply_credit']);
    expect(report.overall).toMatchObject({
      cases: 4,
      passed: 4,
      passRate: 1,
      toolAccuracy: 1,
      answerCorrectness: 1,
      steps: { total: 9, mean: 2.25, p95: 3 },
      tokens: { input: 11300, output: 575, total: 11875 },
      costUsd: 0.042525,
    });
    const latencies = report.cases.map((c) => c.latencyMs).sort((a, b) => a - b);
    expect(report.overall.latencyMs).toEqual({ p50: latencies[1], p95: latencies[3] });

    // The figures are the sessions' own: each result, read back from Temporal, says the same.
    for (const c of report.cases) {
      const result = await h.client.result(c.sessionId);
      expect(c.steps).toBe(result.iterations);
      expect(c.tokens.input).toBe(result.usage.input_tokens);
      expect(c.answer.text).toBe(result.answer);
    }
    // And the side effects happened once each, under the cases' sessions.
    const ledger = await h.demoApi.ledger();
    const underSession = <T extends { idempotency_key: string | null }>(rows: T[], c: string) => rows.filter((x) => x.idempotency_key?.startsWith(`${byName[c]!.sessionId}:`));
    expect(underSession(ledger.refunds, 'refund-partial').map((x) => x.amount_cents)).toEqual([500]);
    expect(underSession(ledger.credits, 'late-delivery').map((x) => x.amount_cents)).toEqual([1000]);
    expect(underSession(ledger.tickets, 'late-delivery')).toHaveLength(1);
  }, 60_000);

  it('fails on a planted regression; the table lists each case and the report names each metric and case that got worse', async () => {
    // The same suite, but two cases played by a worse model: one skips the order lookup, one misreads the
    // order with about three times the tokens.
    const suite = exampleSuite();
    const worse: Record<string, string> = { 'refund-partial': 'scripted/eval-refund-partial-regressed', 'order-status': 'scripted/eval-order-status-regressed' };
    for (const c of suite.cases) c.model = worse[c.name] ?? c.model;
    for (const m of Object.values(worse)) suite.defaults.pricing[m] = { input: 3, output: 15 };
    const file = writeJson('regressed.json', suite);

    const r = await h.withWorker(() => keel(['eval', file, '--baseline', BASELINE]));
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.stdout).toMatch(/^refund-partial +FAIL +WRONG +ok +2 +2660 +\$0\.0093 /m);
    expect(r.stdout).toMatch(/^order-status +FAIL +ok +WRONG +2 +7305 +\$0\.0250 /m);
    expect(r.stdout).toMatch(/^refund-policy +PASS +ok +ok +2 +2475 +\$0\.0089 /m);
    expect(r.stdout).toMatch(/^late-delivery +PASS +ok +ok +2 +2725 +\$0\.0103 /m);
    expect(r.stdout).toMatch(/^passed 2\/4 \(50%\) · tool-selection accuracy 3\/4 \(75%\) · answer correctness 3\/4 \(75%\)$/m);
    const regressions = r.stdout.split('\n').filter((l) => l.startsWith('REGRESSION: '));
    expect(regressions).toEqual([
      'REGRESSION: tool_accuracy (tool-selection accuracy) dropped to 75% from 100%',
      'REGRESSION: answer_correctness (answer correctness) dropped to 75% from 100%',
      'REGRESSION: tokens (tokens) rose to 15165 from 11875 (+27.7%), above the limit 13062.5',
      'REGRESSION: cost_usd (cost) rose to $0.0535 from $0.0425 (+25.7%), above the limit $0.0468',
      "REGRESSION: case 'refund-partial' passed in the baseline and fails now: tools: expected the calls [get_order, issue_refund], got [issue_refund]",
      `REGRESSION: case 'order-status' passed in the baseline and fails now: answer lacks "shipped"; answer contains "delivered"`,
    ]);
    // Fewer steps is not worse; latency is shown, not gated.
    expect(r.stdout).toMatch(/^steps +9 +8 +<= 9.9 +ok$/m);
    expect(r.stdout).toMatch(/^latency_p95_ms .* not gated +ok$/m);
  }, 60_000);

  it('a case is given up on, and its session cancelled, past its timeout or at an approval no one may give', async () => {
    // The refund case with no approver in the suite, and a model whose second turn takes 8 s with a 2 s timeout.
    const suite = exampleSuite() as SuiteDoc & { defaults: { approver?: unknown } };
    delete suite.defaults.approver;
    const slow = { name: 'slow', prompt: 'Where is ord_1002?', model: 'scripted/slow-model', timeout: '2s', tools: { set: ['get_order'] } };
    const file = writeJson('given-up.json', { ...suite, cases: [suite.cases[0], slow] });
    const r = await h.withWorker(() => keel(['eval', file, '--json']));
    expect(r.code, r.stderr).toBe(1);
    const report = JSON.parse(r.stdout) as EvalReport;
    const [refund, late] = report.cases;
    expect(refund).toMatchObject({
      status: 'failed',
      passed: false,
      error: 'issue_refund waits for approval issue_refund-1 and the suite names no approver (defaults.approver) (the session was cancelled)',
      // What it did before, from the session's status.
      tools: { called: [{ name: 'get_order', outcome: 'ok' }], match: false },
      approvals: [],
    });
    expect(late).toMatchObject({ status: 'timed_out', passed: false, tools: { called: [{ name: 'get_order', outcome: 'ok' }], match: true } });
    expect(late!.error).toMatch(/^no result within 2s \(the session was cancelled/);
    expect(late!.latencyMs).toBeGreaterThanOrEqual(2000);
    expect(late!.latencyMs).toBeLessThan(8000);
    // No refund was made, and both sessions were asked to cancel.
    const ledger = await h.demoApi.ledger();
    expect(ledger.refunds.filter((x) => x.idempotency_key?.startsWith(`${refund!.sessionId}:`))).toEqual([]);
    for (const c of [refund!, late!]) {
      const session = h.client.session(c.sessionId);
      const events = (await session.fetchHistory()).events ?? [];
      expect(events.some((e) => e.workflowExecutionCancelRequestedEventAttributes), c.name).toBe(true);
      await session.terminate('test over').catch(() => undefined);
    }
  }, 60_000);
});

describe('bad input exits 2 with one line', () => {
  it('names the suite file, the case and the field; a malformed baseline is named too', async () => {
    const good = exampleSuite();
    const badCase = writeJson('bad-case.json', { ...good, cases: [good.cases[0], { ...good.cases[1], tools: { set: ['get_order'], order: ['get_order'] } }] });
    const notReport = writeJson('not-report.json', { suite: 'support', cases: [{ name: 'x' }] });
    const lines = (await Promise.all([keel(['eval', badCase]), keel(['eval', SUITE, '--baseline', notReport])])).map(expectUsageError);
    expect(lines).toEqual([
      `keel: suite ${badCase}: case 'order-status' (cases[1]) tools: give exactly one of "set" (any order) or "order" (this exact sequence)`,
      `keel: baseline ${notReport}: not a keel eval --json report (cases.0.passed: Invalid input: expected boolean, received undefined)`,
    ]);
  }, 60_000);

  it('checks suites and baselines before anything runs (in-process)', async () => {
    const bad = (doc: unknown) => () => parseSuite(doc, 's.json');
    expect(bad({ name: 's', cases: [{ name: 'a', prompt: 'p', promt: 'p' }] })).toThrow(`suite s.json: case 'a' (cases[0]): Unrecognized key: "promt"`);
    expect(bad({ name: 's', cases: [{ name: 'a', prompt: 'p', answer: { matches: '(' } }] })).toThrow("suite s.json: case 'a' (cases[0]) answer.matches: not a valid regular expression");
    expect(bad({ name: 's', cases: [{ name: 'a', prompt: 'p' }, { name: 'a', prompt: 'q' }] })).toThrow("suite s.json: case 'a' (cases[1]) name: duplicate case name 'a'");
    expect(bad({ name: 's', cases: [{ name: 'a', prompt: 'p', tools: { order: ['x'], allowExtra: true } }] })).toThrow(`case 'a' (cases[0]) tools.allowExtra: goes with "set" only`);
    expect(bad({ name: 's', defaults: { timeout: 'soon' }, cases: [{ name: 'a', prompt: 'p' }] })).toThrow(/^suite s\.json: defaults\.timeout: /);
    expect(bad({ name: 's', cases: [] })).toThrow('suite s.json: cases: a suite needs at least one case');
    const config = loadConfig({});
    expect(() => checkSessionInputs(parseSuite({ name: 's', cases: [{ name: 'a', prompt: 'p' }] }, 's.json'), 's.json', { config })).toThrow(/^suite s\.json: case 'a' \(cases\[0\]\): no model: /);

    await expect(loadSuite(writeJson('not-json.json', '{ "name": '))).rejects.toThrow(/^suite .*not-json\.json: not JSON \(/);
    await expect(loadSuite(path.join(dir, 'missing.json'))).rejects.toThrow(/^suite .*missing\.json: no such file$/);
    await expect(loadBaseline(writeJson('b.json', '[1,'), 'support')).rejects.toThrow(/^baseline .*b\.json: not JSON \(/);
    await expect(loadBaseline(BASELINE, 'other')).rejects.toThrow(`baseline ${BASELINE}: a report of suite 'support', not 'other'`);
  });
});

describe('the baseline rule and tool matching (in-process)', () => {
  /** A passing case with these figures. */
  const kase = (name: string, over: Partial<CaseReport> = {}): CaseReport => ({
    name,
    sessionId: `s-${name}`,
    status: 'completed',
    passed: true,
    failures: [],
    tools: { expected: { set: ['a'], allowExtra: false }, called: [{ name: 'a', outcome: 'ok' }], match: true },
    answer: { text: 'ok', correct: true },
    steps: 2,
    tokens: { input: 900, output: 100, total: 1000 },
    costUsd: 0.01,
    latencyMs: 1000,
    approvals: [],
    ...over,
  });
  const asBaseline = (cases: CaseReport[]): Baseline => ({ suite: 's', cases, overall: summarize(cases) });
  const compare = (now: CaseReport[], before: CaseReport[], latency?: number) =>
    compareToBaseline({ cases: now, overall: summarize(now) }, asBaseline(before), 'b.json', { resources: 0.1, ...(latency !== undefined ? { latency } : {}) });

  it('steps, tokens and cost may rise 10% over the common cases; latency is gated only when asked', () => {
    const before = [kase('x'), kase('y')];
    const within = compare([kase('x', { tokens: { input: 1000, output: 100, total: 1100 } }), kase('y', { latencyMs: 9000 })], before);
    expect(within.passed).toBe(true);
    expect(within.metrics.find((m) => m.metric === 'latency_p95_ms')).toMatchObject({ gated: false, regressed: false, current: 9000 });

    const over = compare([kase('x', { tokens: { input: 1300, output: 100, total: 1400 }, costUsd: 0.013 }), kase('y', { steps: 3 })], before);
    expect(over.regressions).toEqual([
      'steps (steps) rose to 5 from 4 (+25.0%), above the limit 4.4',
      'tokens (tokens) rose to 2400 from 2000 (+20.0%), above the limit 2200',
      'cost_usd (cost) rose to $0.0230 from $0.0200 (+15.0%), above the limit $0.0220',
    ]);
    expect(compare([kase('x', { latencyMs: 2000 }), kase('y')], before, 0.5).regressions).toEqual(['latency_p95_ms (p95 latency) rose to 2.00 s from 1.00 s (+100.0%), above the limit 1.50 s']);

    // An added case is not a rise: figures are summed over the cases both runs have.
    expect(compare([...before, kase('z', { tokens: { input: 9000, output: 0, total: 9000 } })], before).passed).toBe(true);
  });

  it('a case that already failed in the baseline does not fail the run; a newly failing or new failing case does', () => {
    const broken = (name: string) => kase(name, { passed: false, failures: ['answer lacks "x"'], answer: { text: '', correct: false } });
    const known = compare([kase('x'), broken('y')], [kase('x'), broken('y')]);
    expect(known).toMatchObject({ passed: true, stillFailing: ['y'], regressions: [] });
    const fresh = compare([kase('x'), broken('y'), broken('z')], [kase('x'), kase('y')]);
    expect(fresh.newlyFailing).toEqual(['y']);
    expect(fresh.newFailing).toEqual(['z']);
    expect(fresh.regressions).toEqual([
      'answer_correctness (answer correctness) dropped to 33.3% from 100%',
      `case 'y' passed in the baseline and fails now: answer lacks "x"`,
      `case 'z' (not in the baseline) fails: answer lacks "x"`,
    ]);
  });

  it('a set is each tool called successfully at least once, extras counting against unless allowed; an order is the exact sequence of successful calls', () => {
    const calls = [
      { name: 'lookup', outcome: 'ok' as const },
      { name: 'nope', outcome: 'rejected' as const },
      { name: 'refund', outcome: 'ok' as const },
      { name: 'lookup', outcome: 'ok' as const },
    ];
    expect(toolsMatch({ set: ['refund', 'lookup'], allowExtra: false }, calls)).toEqual({ match: false, why: 'not expected: nope' });
    expect(toolsMatch({ set: ['refund', 'lookup'], allowExtra: true }, calls)).toEqual({ match: true });
    expect(toolsMatch({ set: ['email'], allowExtra: true }, calls)).toMatchObject({ match: false, why: 'never called successfully: email' });
    expect(toolsMatch({ order: ['lookup', 'refund', 'lookup'] }, calls)).toEqual({ match: true });
    expect(toolsMatch({ order: ['refund', 'lookup'] }, calls)).toMatchObject({ match: false });
    expect(toolsMatch({ set: [], allowExtra: false }, [])).toEqual({ match: true });
  });
});
