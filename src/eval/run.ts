/**
 * Runs an eval suite: each case is a real session started through the Keel client, on whatever worker
 * serves the task queue (as `keel run` does), with its pending approvals decided by the suite's approver
 * and a timeout of its own. Measures what each session did (tools called and their outcomes, model calls,
 * tokens, cost, wall time, answer) and judges it against the case's expectations; the report's overall
 * figures come from `summarize` (report.ts).
 */
import { randomUUID } from 'node:crypto';
import { WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { failureMessage, type KeelClient, type StartSessionOptions } from '../client.js';
import { defaultModel, type KeelConfig } from '../config.js';
import { FailureTypes, SessionInputSchema, describeIssues, type SessionResult, type SessionStatus, type ToolCallRecord } from '../workflows/types.js';
import { summarize, type CaseReport, type EvalReport, type ToolCallSummary } from './report.js';
import { SuiteError, type AnswerChecks, type EvalCase, type EvalSuite, type ExpectedTools } from './suite.js';

/** Options of `runSuite`. */
export interface RunSuiteOptions {
  /** The suite file, as given (recorded in the report). */
  file: string;
  /** Cases run at a time (1). */
  concurrency?: number;
  /** A model for every case, over the cases' and the defaults' (e.g. to run a scripted suite against Claude). */
  model?: string;
  /** A progress line (one per case as it finishes). */
  log?: (line: string) => void;
  /** How often pending approvals are looked for, in ms (200). */
  approvalPollMs?: number;
}

/** The session input of one case: the case's fields over the suite's defaults (and `--model` over both). */
export function sessionInput(suite: EvalSuite, c: EvalCase, model?: string): StartSessionOptions {
  const d = suite.defaults;
  const agent = c.agent ?? d.agent;
  const chosen = model ?? c.model ?? d.model;
  // Only the case's model's price: a session refuses a pricing table that lacks its model.
  const price = chosen === undefined ? undefined : d.pricing?.[chosen];
  return {
    prompt: c.prompt,
    user: d.user,
    ...(agent ? { agent } : {}),
    ...(chosen ? { model: chosen } : {}),
    ...(price ? { pricing: { [chosen!]: price } } : {}),
    // One answer per case: the session completes after it.
    idleTimeout: 0,
  };
}

/**
 * Checks every case's session input before anything runs, as `startSession` would, so a suite the client
 * would refuse stops the run at once. A case with neither model nor agent needs the configuration's
 * fallback (KEEL_MODEL, or Claude with an API key). @throws SuiteError naming the case and the field.
 */
export function checkSessionInputs(suite: EvalSuite, file: string, opts: { model?: string; config: KeelConfig }): void {
  const fallback = defaultModel(opts.config);
  for (const [i, c] of suite.cases.entries()) {
    const input = sessionInput(suite, c, opts.model);
    const parsed = SessionInputSchema.safeParse(input);
    const where = `suite ${file}: case '${c.name}' (cases[${i}])`;
    if (!parsed.success) throw new SuiteError(`${where}: ${describeIssues(parsed.error, 'input')}`);
    if (!input.model && !input.agent && !fallback) {
      throw new SuiteError(`${where}: no model: give the case or the defaults a model (scripted/<scenario> on the scripted model) or an agent, pass --model, or set KEEL_MODEL`);
    }
  }
}

/** Whether the calls made match the expected tools (see `ExpectedToolsSchema`). */
export function toolsMatch(expected: ExpectedTools, calls: readonly ToolCallSummary[]): { match: boolean; why?: string } {
  const ok = calls.filter((c) => c.outcome === 'ok').map((c) => c.name);
  if ('order' in expected) {
    const match = ok.length === expected.order.length && ok.every((n, i) => n === expected.order[i]);
    return match ? { match } : { match, why: `expected the calls [${expected.order.join(', ')}], got [${ok.join(', ')}]` };
  }
  const missing = expected.set.filter((t) => !ok.includes(t));
  const extra = expected.allowExtra ? [] : [...new Set(calls.map((c) => c.name).filter((n) => !expected.set.includes(n)))];
  if (!missing.length && !extra.length) return { match: true };
  const parts = [missing.length && `never called successfully: ${missing.join(', ')}`, extra.length && `not expected: ${extra.join(', ')}`].filter(Boolean);
  return { match: false, why: parts.join('; ') };
}

/** The answer checks that fail, each as a short sentence (none: the answer is correct). */
export function answerFailures(checks: AnswerChecks, answer: string): string[] {
  const fold = (s: string) => (checks.ignoreCase ? s.toLowerCase() : s);
  const text = fold(answer);
  const failures: string[] = [];
  for (const s of checks.contains ?? []) if (!text.includes(fold(s))) failures.push(`answer lacks ${JSON.stringify(s)}`);
  for (const s of checks.notContains ?? []) if (text.includes(fold(s))) failures.push(`answer contains ${JSON.stringify(s)}`);
  if (checks.matches !== undefined && !new RegExp(checks.matches, checks.ignoreCase ? 'i' : '').test(answer)) {
    failures.push(`answer does not match /${checks.matches}/${checks.ignoreCase ? 'i' : ''}`);
  }
  return failures;
}

/** Whether a case has any answer check. */
function hasAnswerChecks(a: AnswerChecks | undefined): a is AnswerChecks {
  return !!a && (!!a.contains?.length || !!a.notContains?.length || a.matches !== undefined);
}

/** What a session left, whichever way it ended. */
interface Outcome {
  status: CaseReport['status'];
  result?: SessionResult;
  error?: string;
  /** Best-effort figures of a session that did not complete (from its `status` query). */
  partial?: SessionStatus;
  /** When the result came (or the timeout struck), epoch ms. */
  endedAt: number;
}

/**
 * Approves every pending approval of a session as the suite's `approver` until `done()`, and returns the
 * ids it approved. A request it cannot decide (the suite names no approver, or the session does not accept
 * the approver: a missing role, the requester of a privileged call) would park the session until its
 * timeout, so it calls `blocked` with the reason at once and stops.
 */
async function approvePending(
  client: KeelClient,
  sessionId: string,
  approver: EvalSuite['defaults']['approver'],
  done: () => boolean,
  blocked: (why: string) => void,
  pollMs: number,
): Promise<string[]> {
  const approved: string[] = [];
  while (!done()) {
    const pending = await client.temporal.withDeadline(Date.now() + 2_000, () => client.pendingApprovals(sessionId)).catch(() => []);
    for (const p of pending) {
      if (done()) break;
      if (!approver) {
        blocked(`${p.tool} waits for approval ${p.requestId} and the suite names no approver (defaults.approver)`);
        return approved;
      }
      const outcome = await client
        .decide(sessionId, { requestId: p.requestId, decision: 'approve', approver, reason: 'approved by keel eval (the suite approver)' })
        .catch((err: unknown) => ({ accepted: false as const, code: 'error', reason: err instanceof Error ? err.message : String(err) }));
      if (outcome.accepted) approved.push(p.requestId);
      // Decided meanwhile (e.g. by a person): the next poll no longer lists it.
      else if (outcome.code !== 'already_decided') {
        blocked(`approval ${p.requestId} (${p.tool}) not accepted from ${approver.id}: ${outcome.reason}`);
        return approved;
      }
    }
    await new Promise((r) => setTimeout(r, pollMs));
  }
  return approved;
}

/**
 * Waits for a session's result up to `timeoutMs`, or until `stop` gives a reason to give up on it; either
 * way the session is cancelled (its writes are undone).
 */
async function awaitOutcome(client: KeelClient, sessionId: string, timeoutMs: number, stop: Promise<string>): Promise<Outcome> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<{ timeout: string }>((resolve) => {
    timer = setTimeout(
      () => resolve({ timeout: `no result within ${timeoutMs / 1000}s (the session was cancelled; is a worker serving task queue ${client.config.KEEL_TASK_QUEUE}?)` }),
      timeoutMs,
    );
  });
  const stopped = stop.then((why) => ({ stopped: `${why} (the session was cancelled)` }));
  // Aborted when given up on: a result long poll left open holds the connection (and the CLI's exit) for ~20 s.
  const abort = new AbortController();
  const result = client.temporal.withAbortSignal(abort.signal, () => client.result(sessionId));
  result.catch(() => undefined);
  try {
    const settled = await Promise.race([result, timedOut, stopped]);
    const endedAt = Date.now();
    if ('timeout' in settled || 'stopped' in settled) {
      abort.abort();
      await client.cancel(sessionId).catch(() => undefined);
      const status = 'timeout' in settled ? ('timed_out' as const) : ('failed' as const);
      return { status, error: 'timeout' in settled ? settled.timeout : settled.stopped, endedAt, ...(await partialStatus(client, sessionId)) };
    }
    return { status: 'completed', result: settled, endedAt };
  } catch (err) {
    const endedAt = Date.now();
    const refused = err instanceof WorkflowFailedError && err.cause instanceof ApplicationFailure && err.cause.type === FailureTypes.InvalidSessionInput;
    return { status: 'failed', error: `${refused ? 'the worker refused the session input: ' : ''}${failureMessage(err)}`, endedAt, ...(await partialStatus(client, sessionId)) };
  } finally {
    clearTimeout(timer);
  }
}

/** The `status` of a session that did not complete, if a worker answers within 3 s. */
async function partialStatus(client: KeelClient, sessionId: string): Promise<{ partial?: SessionStatus }> {
  const status = await client.temporal.withDeadline(Date.now() + 3_000, () => client.status(sessionId)).catch(() => undefined);
  return status ? { partial: status } : {};
}

/** Runs one case and judges it. */
async function runCase(client: KeelClient, suite: EvalSuite, c: EvalCase, opts: RunSuiteOptions): Promise<CaseReport> {
  const input = sessionInput(suite, c, opts.model);
  const slug = c.name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 60);
  const sessionId = `eval-${slug || 'case'}-${randomUUID().slice(0, 8)}`;
  const started = Date.now();
  await client.startSession({ ...input, sessionId });
  let finished = false;
  let blocked: (why: string) => void = () => {};
  const stop = new Promise<string>((resolve) => (blocked = resolve));
  const approvals = approvePending(client, sessionId, suite.defaults.approver, () => finished, blocked, opts.approvalPollMs ?? 200);
  const outcome = await awaitOutcome(client, sessionId, c.timeout ?? suite.defaults.timeout, stop);
  const latencyMs = outcome.endedAt - started;
  finished = true;
  const approved = await approvals;

  const r = outcome.result;
  const calls: ToolCallSummary[] = r
    ? r.toolCalls.map((t: ToolCallRecord) => ({ name: t.name, outcome: t.outcome }))
    : (outcome.partial?.events ?? []).flatMap((e) => (e.kind === 'tool' ? [{ name: e.name, outcome: e.outcome }] : []));
  const usage = r?.usage ?? outcome.partial?.usage;
  const inputTokens = usage ? usage.input_tokens + usage.cache_creation_input_tokens + usage.cache_read_input_tokens : 0;
  const outputTokens = usage?.output_tokens ?? 0;
  const steps = r?.iterations ?? outcome.partial?.iteration ?? 0;
  const answer = r?.answer ?? '';

  const failures: string[] = [];
  if (outcome.status !== 'completed') failures.push(`session ${outcome.status === 'timed_out' ? 'timed out' : 'failed'}: ${outcome.error}`);
  else if (r && r.stopReason !== 'end_turn') failures.push(`session stopped with ${r.stopReason}, not end_turn`);
  let toolsOk: boolean | null = null;
  if (c.tools) {
    const m = toolsMatch(c.tools, calls);
    toolsOk = m.match;
    if (m.why) failures.push(`tools: ${m.why}`);
  }
  let answerOk: boolean | null = null;
  if (hasAnswerChecks(c.answer)) {
    const wrong = outcome.status === 'completed' ? answerFailures(c.answer, answer) : ['no answer'];
    answerOk = wrong.length === 0;
    failures.push(...wrong);
  }
  if (c.maxSteps !== undefined && steps > c.maxSteps) failures.push(`${steps} model calls, more than maxSteps ${c.maxSteps}`);

  return {
    name: c.name,
    sessionId,
    ...(input.agent ? { agent: input.agent } : {}),
    ...(input.model ? { model: input.model } : {}),
    status: outcome.status,
    ...(r ? { stopReason: r.stopReason } : {}),
    ...(outcome.error ? { error: outcome.error } : {}),
    passed: failures.length === 0,
    failures,
    tools: { expected: c.tools ?? null, called: calls, match: toolsOk },
    answer: { text: answer, correct: answerOk },
    steps,
    ...(c.maxSteps !== undefined ? { maxSteps: c.maxSteps } : {}),
    tokens: { input: inputTokens, output: outputTokens, total: inputTokens + outputTokens },
    // To 8 decimals: sums of per-token prices otherwise print as 0.008324999999999999.
    costUsd: Number((usage?.cost_usd ?? 0).toFixed(8)),
    latencyMs,
    approvals: approved,
  };
}

/** A case as one progress line. */
function progressLine(c: CaseReport): string {
  const figures = `${c.steps} steps, ${c.tokens.total} tokens, ${(c.latencyMs / 1000).toFixed(1)} s`;
  return c.passed ? `PASS ${c.name} (${figures})` : `FAIL ${c.name} (${figures}): ${c.failures.join('; ')}`;
}

/**
 * Runs every case of the suite, `concurrency` at a time, and returns the report (cases in suite order).
 * A session the client refuses (SessionInputError) is thrown, not reported: check inputs first with
 * `checkSessionInputs`.
 */
export async function runSuite(client: KeelClient, suite: EvalSuite, opts: RunSuiteOptions): Promise<EvalReport> {
  const startedAt = new Date();
  const reports: CaseReport[] = new Array<CaseReport>(suite.cases.length);
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < suite.cases.length) {
      const i = next++;
      reports[i] = await runCase(client, suite, suite.cases[i]!, opts);
      opts.log?.(progressLine(reports[i]));
    }
  };
  const concurrency = Math.max(1, Math.min(opts.concurrency ?? 1, suite.cases.length));
  await Promise.all(Array.from({ length: concurrency }, lane));
  return {
    suite: suite.name,
    file: opts.file,
    ...(opts.model ? { model: opts.model } : {}),
    startedAt: startedAt.toISOString(),
    durationMs: Date.now() - startedAt.getTime(),
    concurrency,
    taskQueue: client.config.KEEL_TASK_QUEUE,
    cases: reports,
    overall: summarize(reports),
  };
}

/** Whether any worker has polled the client's task queue for workflow tasks lately (Temporal's poller list). */
export async function workerPolling(client: KeelClient): Promise<boolean | undefined> {
  try {
    const res = await client.temporal.workflowService.describeTaskQueue({
      namespace: client.config.TEMPORAL_NAMESPACE,
      taskQueue: { name: client.config.KEEL_TASK_QUEUE },
      // TASK_QUEUE_TYPE_WORKFLOW (the proto enum lives in @temporalio/proto, not a direct dependency).
      taskQueueType: 1,
    });
    return (res.pollers ?? []).length > 0;
  } catch {
    return undefined;
  }
}
