/**
 * Faults benchmark: what do Keel's fleet-wide circuit breakers, graceful degradation and compensation do
 * when a downstream breaks? For each of two tools of the support desk, the optional `search_kb` (downstream
 * `/kb`) and the critical `get_order` (`/orders`), and each of four faults injected into the demo services
 * (10 %, 50 % and 100 % of requests answered 503, and every request hanging), it runs N scripted sessions
 * (20 by default, at most C at a time) that first open a support ticket (a write, undone by closing it when
 * the session fails), then call the tool under fault, then answer.
 *
 * Per configuration it reports sessions completed and failed (and how many were expected to fail), the time
 * from the first failing downstream request to the breaker opening, the downstream requests made while it
 * was open, calls the breaker refused, sessions whose model was not offered the optional tool, the undos
 * that ran, and anything lost: a ticket that is neither kept by a completed session nor closed for a failed
 * one, or a session that neither completed nor failed. Lost must be 0.
 *
 * How it sees what happens, all in this process (the worker runs here): `globalThis.fetch` is wrapped to
 * time every business request the tools send to the demo services, and the worker's store is wrapped to
 * see every breaker admission and recorded outcome; one sequence counter orders the two exactly (the
 * SQLite store decides synchronously when called). The demo services' own request count (`GET /stats`)
 * cross-checks the requests seen, and their ledger is the witness for tickets. Human progress goes to
 * stderr; the table (or, with `--json`, one JSON document) to stdout; exit code 1 when anything was lost.
 * Run: `npx tsx bench/faults/run.ts [--sessions N] [--concurrency C] [--json]`.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { z } from 'zod';
import { demoClient, type DemoClient, type FaultSpec, type Ledger, type Stats } from '../../examples/support-desk/services/index.js';
import type { BreakerPolicy, BreakerRow, BreakerTransition, KeelStore } from '../../src/store/index.js';
import type { Scenario } from '../../src/testing/scripted/index.js';
import type { CompensationRecord } from '../../src/workflows/types.js';
import {
  machineFacts,
  machineLine,
  parseBenchArgs,
  percentile,
  progress,
  renderTable,
  round,
  startBenchStack,
  type BenchStack,
  type MachineFacts,
} from '../support.js';

/** The two tools under fault: what their scenario sends them, and the demo endpoint behind them. */
const TOOLS = [
  { name: 'search_kb', criticality: 'optional', endpoint: '/kb', statsKey: 'GET /kb', input: { query: 'damaged on arrival', limit: 3 } },
  { name: 'get_order', criticality: 'critical', endpoint: '/orders', statsKey: 'GET /orders', input: { order_id: 'ord_1001' } },
] as const;
type ToolUnderFault = (typeof TOOLS)[number];

/** The four faults, in the order they run; `fault` is what `POST /faults` gets (with the tool's endpoint). */
const FAULTS = [
  { id: '10%', label: '10% errors (503)', fault: { error_rate: 0.1, status: 503 } },
  { id: '50%', label: '50% errors (503)', fault: { error_rate: 0.5, status: 503 } },
  { id: '100%', label: '100% errors (503)', fault: { error_rate: 1, status: 503 } },
  { id: 'hang', label: 'hang (no answer)', fault: { hang: true } },
] as const;
type Fault = (typeof FAULTS)[number];

const PROMPT = 'My keyboard (order ord_1001) arrived damaged. Please open a ticket and tell me what happens next.';
const USER = { id: 'bench-user', roles: ['support'] };
const TICKET = { customer_id: 'cust_001', subject: 'Keyboard arrived damaged', body: 'Order ord_1001 arrived with a cracked case.' };
/** Demo paths that are not business requests (the demo services do not count them either). */
const CONTROL_PATHS = new Set(['/ledger', '/faults', '/healthz', '/stats']);
/** A session that has not ended after this long is given up on (terminated) and counts as lost. */
const SESSION_TIMEOUT_MS = 180_000;
/** How long to wait, after a configuration's sessions end, for tool requests still in flight (a hang aborted late). */
const DRAIN_TIMEOUT_MS = 30_000;

interface Args {
  sessions: number;
  concurrency: number;
  json: boolean;
}

function parseCli(): Args {
  const a = parseBenchArgs('bench/faults', 'npx tsx bench/faults/run.ts [--sessions N (20)] [--concurrency C (5)] [--json]', {
    sessions: { def: 20, min: 1, max: 500 },
    concurrency: { def: 5, min: 1, max: 100 },
  });
  return { sessions: a.sessions, concurrency: a.concurrency, json: a.json };
}

/** Turn 1 opens a ticket, turn 2 calls the tool under fault (after checking the ticket exists), turn 3 answers. */
function faultScenario(tool: ToolUnderFault): Scenario {
  return {
    name: `bench-faults-${tool.name}`,
    description: `open a ticket, call ${tool.name} (${tool.criticality}), answer (faults benchmark)`,
    turns: [
      {
        content: [
          { type: 'text', text: 'I will open a ticket first.' },
          { type: 'tool_use', name: 'create_ticket', input: TICKET },
        ],
        stop_reason: 'tool_use',
      },
      {
        content: [
          { type: 'text', text: `Ticket open. Now ${tool.name}.` },
          { type: 'tool_use', name: tool.name, input: tool.input },
        ],
        stop_reason: 'tool_use',
        expect: { tool_results: [{ is_error: false, contains: '"status":"open"' }] },
      },
      {
        content: [{ type: 'text', text: 'Your ticket is open; a colleague will follow up on the damaged keyboard.' }],
        stop_reason: 'end_turn',
        // A critical tool's result must have arrived whole; an optional one may be a note that it is down.
        ...(tool.criticality === 'critical' ? { expect: { tool_results: [{ is_error: false, contains: '"id":"ord_1001"' }] } } : {}),
      },
    ],
  };
}

// ---------------------------------------------------------------------------------------------------------
// Instruments: one ordered log of downstream requests and breaker decisions, for the whole run.

/** A business request a tool sent to the demo services, as the wrapped `fetch` saw it. */
interface DownstreamRequest {
  kind: 'request';
  seq: number;
  /** performance.now() when sent. */
  at: number;
  /** `METHOD /segment`, as the demo services count it (`GET /kb`). */
  key: string;
  endedAt?: number;
  status?: number;
  error?: string;
}

/** A breaker decision on a tool, as the wrapped store made it. */
type BreakerEvent =
  | { kind: 'admit'; seq: number; at: number; tool: string; allowed: boolean; probe: boolean }
  | { kind: 'record'; seq: number; at: number; tool: string; ok: boolean; transition?: BreakerTransition };

type Observed = DownstreamRequest | BreakerEvent;

/** Everything observed, in order. `seq` is taken where the decision or the send happens. */
const observed: Observed[] = [];
let seq = 0;

/**
 * Wraps `globalThis.fetch` so every business request to the demo services is recorded, with its send time
 * and outcome (an HTTP status, or the error it threw: an abort, for a hang). The example tools call the
 * global `fetch` when they run, in this process; requests elsewhere pass through untouched.
 */
function recordDownstream(demoUrl: string): void {
  const origin = new URL(demoUrl).origin;
  const original = globalThis.fetch;
  globalThis.fetch = async (input, init) => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    if (url.origin !== origin || CONTROL_PATHS.has(url.pathname)) return original(input, init);
    const method = (init?.method ?? (input instanceof Request ? input.method : 'GET')).toUpperCase();
    const req: DownstreamRequest = { kind: 'request', seq: ++seq, at: performance.now(), key: `${method} /${url.pathname.split('/')[1] ?? ''}` };
    observed.push(req);
    try {
      const res = await original(input, init);
      req.status = res.status;
      req.endedAt = performance.now();
      return res;
    } catch (err) {
      req.error = err instanceof Error ? err.name : String(err);
      req.endedAt = performance.now();
      throw err;
    }
  };
}

/**
 * Wraps the worker's store so each breaker admission and recorded outcome is seen. Both run synchronously
 * on SQLite when called, so the sequence number taken before the call orders them exactly against the
 * requests.
 */
function recordBreakers(store: KeelStore): void {
  const admit = store.admit.bind(store);
  const record = store.record.bind(store);
  store.admit = async (tool, policy, now) => {
    const event: BreakerEvent = { kind: 'admit', seq: ++seq, at: performance.now(), tool, allowed: false, probe: false };
    observed.push(event);
    const admission = await admit(tool, policy, now);
    event.allowed = admission.allowed;
    event.probe = admission.allowed && admission.probe;
    return admission;
  };
  store.record = async (tool, ok, policy, now) => {
    const event: BreakerEvent = { kind: 'record', seq: ++seq, at: performance.now(), tool, ok };
    observed.push(event);
    const transition = await record(tool, ok, policy, now);
    if (transition) event.transition = transition;
    return transition;
  };
}

const failed = (r: DownstreamRequest): boolean => r.endedAt === undefined || r.error !== undefined || (r.status ?? 0) >= 500;

// ---------------------------------------------------------------------------------------------------------
// Sessions

/** How one session ended. */
interface SessionOutcome {
  sessionId: string;
  outcome: 'completed' | 'failed' | 'stuck';
  /** The failure's type and message (failed), or why it was given up on (stuck). */
  failure?: { type: string; message: string };
  compensations: CompensationRecord[];
  /** From starting the session to its result (or failure), in ms. */
  ms: number;
  /** Completed sessions: whether the call of the tool under fault gave the model a result (`ok`) or a note that it failed. */
  toolOk?: boolean;
}

const FailureDetailsSchema = z.tuple([
  z.object({
    compensations: z.array(z.object({ tool: z.string(), idempotencyKey: z.string(), toolUseId: z.string(), status: z.enum(['pending', 'compensated', 'failed', 'discarded']), error: z.string().optional() })),
  }),
]);

class SessionTimeout extends Error {}

async function runSession(s: BenchStack, sessionId: string, tool: ToolUnderFault): Promise<SessionOutcome> {
  const t0 = performance.now();
  const { handle } = await s.client.startSession({ sessionId, prompt: PROMPT, user: USER, agent: 'support', model: `scripted/bench-faults-${tool.name}`, idleTimeout: 0 });
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new SessionTimeout(`no result after ${SESSION_TIMEOUT_MS / 1000} s`)), SESSION_TIMEOUT_MS);
  });
  try {
    const result = await Promise.race([handle.result(), deadline]);
    const call = result.toolCalls.find((c) => c.name === tool.name);
    return { sessionId, outcome: 'completed', compensations: result.compensations, ms: performance.now() - t0, toolOk: call?.outcome === 'ok' };
  } catch (err) {
    if (err instanceof WorkflowFailedError && err.cause instanceof ApplicationFailure) {
      const details = FailureDetailsSchema.safeParse(err.cause.details);
      return {
        sessionId,
        outcome: 'failed',
        failure: { type: err.cause.type ?? 'unknown', message: err.cause.message },
        compensations: details.success ? details.data[0].compensations : [],
        ms: performance.now() - t0,
      };
    }
    if (err instanceof SessionTimeout) {
      await handle.terminate('bench/faults: the session did not end in time').catch(() => undefined);
      return { sessionId, outcome: 'stuck', failure: { type: 'timeout', message: err.message }, compensations: [], ms: performance.now() - t0 };
    }
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

/** Whether some `callModel` of the session went out without the tool in its tool list (it was down). */
async function wasWithheld(s: BenchStack, sessionId: string, tool: string): Promise<boolean> {
  const history = await s.client.session(sessionId).fetchHistory();
  return (history.events ?? []).some((e) => {
    const a = e.activityTaskScheduledEventAttributes;
    if (a?.activityType?.name !== 'callModel') return false;
    const data = a.input?.payloads?.[0]?.data;
    if (!data) return false;
    const input = JSON.parse(Buffer.from(data).toString('utf8')) as { tools?: Array<{ name: string }> };
    return !(input.tools ?? []).some((t) => t.name === tool);
  });
}

/** Runs `n` jobs with at most `limit` at a time; results in job order. */
async function pool<T>(n: number, limit: number, job: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array<T>(n);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, n) }, async () => {
      while (next < n) {
        const i = next++;
        out[i] = await job(i);
      }
    }),
  );
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// One configuration

/** What one configuration measured. */
interface ConfigReport {
  tool: string;
  criticality: 'optional' | 'critical';
  endpoint: string;
  fault: string;
  faultSpec: FaultSpec;
  sessions: number;
  completed: number;
  failed: number;
  stuck: number;
  expectedFailed: number;
  completionRate: number;
  /** Session durations (start to result), in seconds. */
  sessionS: { p50: number; max: number };
  wallS: number;
  breaker: {
    /** Times it opened (closed or half-open → open). */
    openings: number;
    /** ms from sending the first request that failed to the first opening; undefined when it never opened. */
    firstFailureToOpenMs?: number;
    /** Failed requests sent before the first opening. */
    failedRequestsBeforeOpen: number;
    /** Tool calls (attempts) the breaker refused without calling the downstream. */
    refused: number;
    /** Calls let through as half-open probes. */
    probes: number;
    /** Calls let through while open that were not probes (the breaker's contract says 0). */
    admittedWhileOpen: number;
    /** Every change of state, ms after the configuration started (`failures` after it; none for a probe's half-open). */
    transitions: Array<{ from: BreakerRow['state']; to: BreakerRow['state']; failures?: number; atMs: number }>;
    /** The stored row at the end of the configuration. */
    final?: BreakerRow;
  };
  downstream: {
    /** Requests to the endpoint, by the demo services' own count (GET /stats delta). */
    requests: number;
    /** The same, as the wrapped fetch saw them (must equal `requests`). */
    seen: number;
    failed: number;
    /** Requests sent while the breaker was open or half-open, probes excepted. */
    whileOpen: number;
    /** Requests still unanswered when the configuration ended (after the drain wait). */
    stillInFlight: number;
    /** Each request: ms after the configuration started when sent, how long it took, and its status or error. */
    log: Array<{ atMs: number; ms?: number; status?: number; error?: string }>;
  };
  /** Optional tool: sessions in which some model call was not offered it. */
  withheld?: number;
  /** Completed sessions whose call of the tool under fault ended in an error note instead of a result (degraded answers). */
  degraded: number;
  compensations: { run: number; failed: number; ticketsClosed: number };
  lost: { count: number; items: string[] };
  outcomes: Array<{ sessionId: string; outcome: SessionOutcome['outcome']; failure?: string }>;
}

async function runConfig(s: BenchStack, demo: DemoClient, args: Args, runTag: string, tool: ToolUnderFault, fault: Fault): Promise<ConfigReport> {
  const before = await demo.stats();
  const firstSeq = seq + 1;
  const faultSpec: FaultSpec = { endpoint: tool.endpoint, ...fault.fault };
  await demo.setFault(faultSpec);
  const started = performance.now();
  const prefix = `bench-faults-${runTag}-${tool.name}-${fault.id.replace('%', 'pct')}`;
  const outcomes = await pool(args.sessions, args.concurrency, (i) => runSession(s, `${prefix}-${i + 1}`, tool));
  const wallS = (performance.now() - started) / 1000;

  // Requests of this configuration still hanging end when their activity is cancelled: wait for that,
  // so their late failure is recorded here and not in the next configuration.
  const mine = (): DownstreamRequest[] => observed.filter((o): o is DownstreamRequest => o.kind === 'request' && o.seq >= firstSeq && o.key === tool.statsKey);
  const drainUntil = performance.now() + DRAIN_TIMEOUT_MS;
  while (mine().some((r) => r.endedAt === undefined) && performance.now() < drainUntil) await new Promise((r) => setTimeout(r, 100));
  await demo.clearFaults();
  const lastSeq = seq;
  const after = await demo.stats();
  const ledger = await demo.ledger();
  const finalRow = (await s.keelWorker.store.breakers()).find((b) => b.tool === tool.name);

  const events = observed.filter((o) => o.seq >= firstSeq && o.seq <= lastSeq);
  const breaker = walkBreaker(events, tool, started);
  const withheld =
    tool.criticality === 'optional' ? (await Promise.all(outcomes.map((o) => (o.outcome === 'stuck' ? false : wasWithheld(s, o.sessionId, tool.name))))).filter(Boolean).length : undefined;
  const requests = mine();
  const accounting = account(outcomes, ledger);
  const completed = outcomes.filter((o) => o.outcome === 'completed').length;
  const failedCount = outcomes.filter((o) => o.outcome === 'failed').length;
  return {
    tool: tool.name,
    criticality: tool.criticality,
    endpoint: tool.endpoint,
    fault: fault.id,
    faultSpec,
    sessions: outcomes.length,
    completed,
    failed: failedCount,
    stuck: outcomes.filter((o) => o.outcome === 'stuck').length,
    expectedFailed: expectedFailures(s, tool, fault, outcomes.length),
    completionRate: completed / outcomes.length,
    sessionS: { p50: round(percentile(outcomes.map((o) => o.ms), 50) / 1000, 1), max: round(Math.max(...outcomes.map((o) => o.ms)) / 1000, 1) },
    wallS: round(wallS, 1),
    breaker: { ...breaker.summary, ...(finalRow ? { final: finalRow } : {}) },
    downstream: {
      requests: statsDelta(before, after, tool.statsKey),
      seen: requests.length,
      failed: requests.filter(failed).length,
      whileOpen: breaker.requestsWhileOpen,
      stillInFlight: requests.filter((r) => r.endedAt === undefined).length,
      log: requests.map((r) => ({
        atMs: round(r.at - started, 1),
        ...(r.endedAt !== undefined ? { ms: round(r.endedAt - r.at, 1) } : {}),
        ...(r.status !== undefined ? { status: r.status } : {}),
        ...(r.error !== undefined ? { error: r.error } : {}),
      })),
    },
    ...(withheld !== undefined ? { withheld } : {}),
    degraded: outcomes.filter((o) => o.outcome === 'completed' && !o.toolOk).length,
    compensations: {
      run: outcomes.flatMap((o) => o.compensations).filter((c) => c.status === 'compensated').length,
      failed: outcomes.flatMap((o) => o.compensations).filter((c) => c.status === 'failed').length,
      ticketsClosed: accounting.ticketsClosed,
    },
    lost: { count: accounting.lost.length, items: accounting.lost },
    outcomes: outcomes.map((o) => ({ sessionId: o.sessionId, outcome: o.outcome, ...(o.failure ? { failure: `${o.failure.type}: ${o.failure.message}` } : {}) })),
  };
}

/**
 * Sessions expected to fail, before any breaker effect: none for an optional tool (it degrades to a note);
 * every one for a critical tool that never answers (100 %, hang); at error rate r, a critical call fails
 * when all its attempts do, r^attempts if errors were independent (the demo services fail every 1/r-th
 * request by a counter, so which attempts fail depends on how the sessions interleave).
 */
function expectedFailures(s: BenchStack, tool: ToolUnderFault, fault: Fault, sessions: number): number {
  if (tool.criticality === 'optional') return 0;
  if (!('error_rate' in fault.fault)) return sessions;
  const attempts = s.keelWorker.app.tools.get(tool.name)?.policy.maxAttempts ?? 1;
  return Number((sessions * fault.fault.error_rate ** attempts).toPrecision(2));
}

const statsDelta = (before: Stats, after: Stats, key: string): number => (after.requests[key] ?? 0) - (before.requests[key] ?? 0);

/**
 * Replays the configuration's observations in order: the breaker's state after each decision, and so the
 * state each request was sent in. The breaker starts closed (it was reset before the configuration).
 */
function walkBreaker(events: Observed[], tool: ToolUnderFault, t0: number): { summary: Omit<ConfigReport['breaker'], 'final'>; requestsWhileOpen: number } {
  let state: BreakerRow['state'] = 'closed';
  let firstFailure: DownstreamRequest | undefined;
  let firstOpenAt: number | undefined;
  let failedBeforeOpen = 0;
  let refused = 0;
  let probes = 0;
  let admittedWhileOpen = 0;
  let sentWhileOpen = 0;
  const transitions: ConfigReport['breaker']['transitions'] = [];
  for (const e of events) {
    if (e.kind === 'request') {
      if (e.key !== tool.statsKey) continue;
      if (failed(e)) {
        firstFailure ??= e;
        if (firstOpenAt === undefined) failedBeforeOpen += 1;
      }
      if (state !== 'closed') sentWhileOpen += 1;
      continue;
    }
    if (e.tool !== tool.name) continue;
    if (e.kind === 'admit') {
      if (!e.allowed) refused += 1;
      else if (e.probe) {
        probes += 1;
        transitions.push({ from: state, to: 'half_open', atMs: round(e.at - t0, 1) });
        state = 'half_open';
      } else if (state !== 'closed') admittedWhileOpen += 1;
      continue;
    }
    if (e.transition) {
      transitions.push({ ...e.transition, atMs: round(e.at - t0, 1) });
      state = e.transition.to;
      if (e.transition.to === 'open') firstOpenAt ??= e.at;
    }
  }
  return {
    summary: {
      openings: transitions.filter((t) => t.to === 'open').length,
      ...(firstOpenAt !== undefined && firstFailure ? { firstFailureToOpenMs: round(firstOpenAt - firstFailure.at, 1) } : {}),
      failedRequestsBeforeOpen: failedBeforeOpen,
      refused,
      probes,
      admittedWhileOpen,
      transitions,
    },
    // Each probe sends one request by design; the rest sent while open are what the breaker let through.
    requestsWhileOpen: Math.max(0, sentWhileOpen - probes),
  };
}

/**
 * The ledger as witness: each session's tickets (found by the idempotency key, which starts with the
 * session's workflow ID) must be one open ticket for a completed session, and closed tickets only for a
 * failed one. Anything else is lost, as is a session that neither completed nor failed.
 */
function account(outcomes: SessionOutcome[], ledger: Ledger): { lost: string[]; ticketsClosed: number } {
  const lost: string[] = [];
  let ticketsClosed = 0;
  for (const o of outcomes) {
    const tickets = ledger.tickets.filter((t) => t.idempotency_key?.startsWith(`${o.sessionId}:`));
    const open = tickets.filter((t) => t.status === 'open');
    ticketsClosed += tickets.length - open.length;
    if (o.outcome === 'completed') {
      if (tickets.length === 0) lost.push(`${o.sessionId}: completed but its ticket is not in the ledger`);
      if (tickets.length > 1) lost.push(`${o.sessionId}: completed with ${tickets.length} tickets (1 expected)`);
      if (open.length < tickets.length) lost.push(`${o.sessionId}: completed but ${tickets.length - open.length} of its tickets were closed`);
    } else if (o.outcome === 'failed') {
      if (open.length > 0) lost.push(`${o.sessionId}: failed but ${open.length} ticket(s) still open (not compensated)`);
    } else {
      lost.push(`${o.sessionId}: neither completed nor failed (${o.failure?.message ?? 'stuck'}); ${open.length} open ticket(s)`);
    }
  }
  return { lost, ticketsClosed };
}

/** Side effects in the ledger that belong to no session of this run (any of them is lost). */
function strays(ledger: Ledger, sessionIds: Set<string>): string[] {
  const out: string[] = [];
  for (const t of ledger.tickets) {
    const owner = t.idempotency_key?.split(':', 1)[0];
    if (!owner || !sessionIds.has(owner)) out.push(`ticket ${t.id} (${t.status}) belongs to no session of this run (key ${t.idempotency_key ?? 'none'})`);
  }
  for (const [kind, rows] of [['refund', ledger.refunds], ['email', ledger.emails], ['credit', ledger.credits], ['plan change', ledger.plan_changes]] as const) {
    for (const r of rows) out.push(`unexpected ${kind} ${r.id}`);
  }
  return out;
}

/** Forgets every breaker (as `keel circuits reset` does), without the instruments seeing it. */
async function resetBreakers(s: BenchStack): Promise<void> {
  for (const row of await s.keelWorker.store.breakers()) await s.keelWorker.store.resetBreaker(row.tool);
  const left = (await s.keelWorker.store.breakers()).filter((b) => b.state !== 'closed' || b.failures !== 0);
  if (left.length) throw new Error(`breakers not reset: ${JSON.stringify(left)}`);
}

/** Breaker transitions the worker logged ('circuit breaker transition', warn), by tool. */
function loggedTransitions(logFile: string): Map<string, number> {
  const counts = new Map<string, number>();
  let text = '';
  try {
    text = readFileSync(logFile, 'utf8');
  } catch {
    return counts;
  }
  for (const line of text.split('\n')) {
    if (!line.includes('circuit breaker transition')) continue;
    const entry = JSON.parse(line) as { tool?: string };
    if (entry.tool) counts.set(entry.tool, (counts.get(entry.tool) ?? 0) + 1);
  }
  return counts;
}

// ---------------------------------------------------------------------------------------------------------
// Report

interface Report {
  machine: MachineFacts;
  params: { sessionsPerConfig: number; concurrency: number; breaker: Record<string, BreakerPolicy | undefined>; readTier: string };
  configs: ConfigReport[];
  /** Side effects in the ledger that belong to no session of the run. */
  strays: string[];
  /** Breaker transitions the store reported vs. the 'circuit breaker transition' lines in the worker log. */
  transitionsLogged: { observed: number; logged: number };
  lostTotal: number;
  wallS: number;
  method: Record<string, string>;
}

const METHOD = {
  sessions:
    'each session: create_ticket (write, undone by closing the ticket), then the tool under fault, then an answer (scripted model). ' +
    'completed = the workflow completed; failed = it failed (a critical tool failing or refused: CriticalToolFailed, its ticket compensated)',
  expected:
    'optional tool: 0 (it degrades to a note for the model); critical tool at 100% or hang: every session (it never answers); ' +
    'critical at error rate r: sessions × r^attempts (all 3 attempts of its one call fail), as if errors were independent; a breaker that opens fails the rest',
  firstFailureToOpen:
    'from sending the first request to the endpoint that failed (5xx, or a hang: aborted when its attempt timed out) to the store recording the opening failure; ' +
    'both timed in this process (wrapped fetch, wrapped store)',
  requests:
    "requests to the endpoint during the configuration by the demo services' own count (GET /stats delta; the wrapped fetch must see the same number, " +
    'else SEEN n is printed); failed: answered 5xx, or hanging until the attempt gave up',
  whileOpen:
    'requests sent after the store opened the breaker (ordered against its decisions by one sequence counter), half-open probes excepted. ' +
    'A request admitted just before the opening and sent just after counts here too',
  refused: 'tool-call attempts the breaker refused (ToolUnavailable) without calling the downstream',
  notOffered: "optional tool: sessions in which some model call's tool list left it out (read from the callModel inputs in history)",
  undone: 'compensations with status compensated in the failed sessions\' failure details; the ledger must show as many of their tickets closed',
  times: 'a session from startSession to its result or failure (median and slowest); wall: the configuration from its first session start to its last session end',
  lost: 'tickets of a completed session that are missing, duplicated or closed; open tickets of a failed session; sessions that neither completed nor failed; side effects of no session',
};

/** A failure message without the parts that differ from session to session (times, counts, status text). */
const shortReason = (failure: string): string => failure.replace(/ after \d+ consecutive failure.*$/, '').replace(/ \(HTTP \d+\).*$/, '').slice(0, 160);

function countBy(xs: string[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const x of xs) m.set(x, (m.get(x) ?? 0) + 1);
  return m;
}

function render(r: Report): string {
  const header = ['tool', 'fault', 'completed', 'failed (expected)', 'first failure → open', 'requests (failed)', 'while open', 'refused', 'not offered', 'undone', 'lost', 'session s p50/max', 'wall s'];
  const cells = r.configs.map((c) => [
    `${c.tool} (${c.criticality})`,
    c.fault,
    `${c.completed}/${c.sessions} (${Math.round(c.completionRate * 100)}%)`,
    `${c.failed + c.stuck} (${Number.isInteger(c.expectedFailed) ? c.expectedFailed : `≈${c.expectedFailed}`})`,
    c.breaker.firstFailureToOpenMs === undefined ? (c.downstream.failed ? 'never opened' : 'no failure') : `${(c.breaker.firstFailureToOpenMs / 1000).toFixed(2)} s`,
    `${c.downstream.requests} (${c.downstream.failed})${c.downstream.requests === c.downstream.seen ? '' : ` SEEN ${c.downstream.seen}`}`,
    String(c.downstream.whileOpen),
    String(c.breaker.refused),
    c.withheld === undefined ? '–' : String(c.withheld),
    c.compensations.ticketsClosed === c.compensations.run ? String(c.compensations.run) : `${c.compensations.run} (ledger ${c.compensations.ticketsClosed})`,
    String(c.lost.count),
    `${c.sessionS.p50.toFixed(1)} / ${c.sessionS.max.toFixed(1)}`,
    c.wallS.toFixed(1),
  ]);
  const lines = [
    `Keel faults benchmark: ${r.params.sessionsPerConfig} sessions per configuration, at most ${r.params.concurrency} at a time; breakers ${Object.entries(r.params.breaker)
      .map(([t, p]) => (p ? `${t} ${p.failureThreshold} failures / ${p.resetAfterMs / 1000} s` : `${t} none`))
      .join(', ')}; read tier: ${r.params.readTier}`,
    machineLine(r.machine),
    '',
    renderTable(header, cells),
    '',
  ];
  for (const c of r.configs) {
    const notes: string[] = [];
    if (Number.isInteger(c.expectedFailed) && c.failed + c.stuck !== c.expectedFailed) notes.push(`${c.failed + c.stuck} failed where ${c.expectedFailed} were expected`);
    if (c.degraded) notes.push(`${c.degraded} completed without ${c.tool}'s result (the model got a note that it is unavailable)`);
    for (const [reason, n] of countBy(c.outcomes.flatMap((o) => (o.failure ? [shortReason(o.failure)] : [])))) notes.push(`${n}× ${reason}`);
    if (c.breaker.openings > 1) notes.push(`the breaker opened ${c.breaker.openings} times (transitions: ${c.breaker.transitions.map((t) => `${t.from}→${t.to}`).join(', ')})`);
    if (c.breaker.probes) notes.push(`${c.breaker.probes} half-open probe(s)`);
    if (c.breaker.admittedWhileOpen) notes.push(`${c.breaker.admittedWhileOpen} call(s) admitted while open that were not probes`);
    if (c.downstream.stillInFlight) notes.push(`${c.downstream.stillInFlight} request(s) still in flight ${DRAIN_TIMEOUT_MS / 1000} s after the sessions ended`);
    if (c.breaker.firstFailureToOpenMs !== undefined) notes.push(`${c.breaker.failedRequestsBeforeOpen} failed request(s) before it opened`);
    if (c.breaker.final) notes.push(`breaker at the end: ${c.breaker.final.state}, ${c.breaker.final.failures} consecutive failure(s)`);
    for (const item of c.lost.items) notes.push(`LOST: ${item}`);
    lines.push(`${c.tool} ${c.fault}: ${notes.join('; ') || 'as expected'}`);
  }
  for (const item of r.strays) lines.push(`LOST: ${item}`);
  lines.push(
    '',
    `lost, all configurations: ${r.lostTotal}${r.lostTotal ? ' — FAIL' : ' (must be 0): PASS'}; ` +
      `breaker transitions logged ('circuit breaker transition'): ${r.transitionsLogged.logged} of ${r.transitionsLogged.observed} the store reported; total wall ${r.wallS.toFixed(0)} s`,
    '',
    `completed:             ${r.method.sessions}`,
    `failed (expected):     failed or stuck; expected: ${r.method.expected}`,
    `first failure → open:  ${r.method.firstFailureToOpen}`,
    `requests (failed):     ${r.method.requests}`,
    `while open:            ${r.method.whileOpen}`,
    `refused:               ${r.method.refused}`,
    `not offered:           ${r.method.notOffered}`,
    `undone:                ${r.method.undone}`,
    `lost:                  ${r.method.lost}`,
    `session s, wall s:     ${r.method.times}`,
  );
  return lines.join('\n');
}

/** The retry policy of the tools under fault (both read tier), as the worker's app has it. */
function readTier(s: BenchStack): string {
  const p = s.keelWorker.app.tools.get(TOOLS[0].name)!.policy;
  return `${p.maxAttempts} attempts, backoff from ${p.initialRetryInterval}, ${p.startToCloseTimeout} start-to-close timeout per attempt`;
}

async function main(): Promise<void> {
  const args = parseCli();
  const machine = machineFacts();
  const runTag = Date.now().toString(36);
  let stack: BenchStack | undefined;
  const started = performance.now();
  try {
    stack = await startBenchStack({ scenarios: TOOLS.map(faultScenario), taskQueuePrefix: 'bench-faults' });
    const s = stack;
    const demo = demoClient(s.demo.url);
    recordDownstream(s.demo.url);
    recordBreakers(s.keelWorker.store);
    const configs: ConfigReport[] = [];
    await s.keelWorker.worker.runUntil(async () => {
      for (const tool of TOOLS) {
        for (const fault of FAULTS) {
          await resetBreakers(s);
          progress(`${tool.name} (${tool.criticality}), ${fault.label}: ${args.sessions} sessions, at most ${args.concurrency} at a time`);
          const c = await runConfig(s, demo, args, runTag, tool, fault);
          progress(`  ${c.completed} completed, ${c.failed} failed, ${c.stuck} stuck, ${c.downstream.requests} requests, lost ${c.lost.count} (${c.wallS.toFixed(1)} s)`);
          configs.push(c);
        }
      }
    });
    const ledger = await demo.ledger();
    const strayItems = strays(ledger, new Set(configs.flatMap((c) => c.outcomes.map((o) => o.sessionId))));
    // The worker log is written asynchronously: give it a moment before counting its lines.
    await new Promise((r) => setTimeout(r, 500));
    const logged = loggedTransitions(path.join(s.tmp, 'worker.log'));
    const report: Report = {
      machine,
      params: {
        sessionsPerConfig: args.sessions,
        concurrency: args.concurrency,
        breaker: Object.fromEntries(TOOLS.map((t) => [t.name, s.keelWorker.app.tools.get(t.name)?.policy.breaker])),
        readTier: readTier(s),
      },
      configs,
      strays: strayItems,
      transitionsLogged: {
        observed: observed.filter((o) => o.kind === 'record' && o.transition).length,
        logged: [...logged.values()].reduce((a, b) => a + b, 0),
      },
      lostTotal: configs.reduce((n, c) => n + c.lost.count, 0) + strayItems.length,
      wallS: (performance.now() - started) / 1000,
      method: METHOD,
    };
    if (report.lostTotal > 0) process.exitCode = 1;
    process.stdout.write(args.json ? `${JSON.stringify(report, null, 2)}\n` : `${render(report)}\n`);
  } finally {
    await stack?.close();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench/faults failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
