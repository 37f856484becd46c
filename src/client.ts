/**
 * The Keel client: start a session, read its status and result, cancel it. Wraps the Temporal client so
 * callers deal in sessions, not workflow plumbing; the session input is validated here, at the edge,
 * before anything reaches Temporal.
 */
import { randomUUID } from 'node:crypto';
import { Client, Connection, WorkflowExecutionAlreadyStartedError, WorkflowFailedError, WorkflowUpdateFailedError, type WorkflowHandle, type WorkflowHandleWithFirstExecutionRunId } from '@temporalio/client';
import { ApplicationFailure, type SearchAttributePair } from '@temporalio/common';
import { keelDataConverter } from './codec/index.js';
import { defaultModel, loadConfig, temporalConnectionOptions, type KeelConfig } from './config.js';
import {
  ApprovalDecisionSchema,
  SessionInputSchema,
  UserMessageSchema,
  decideApprovalUpdate,
  endConversationSignal,
  pendingApprovalsQuery,
  sendMessageUpdate,
  statusQuery,
  type ApprovalDecision,
  type ApprovalOutcome,
  type ApprovalRequest,
  type SessionInputArgs,
  type SessionResult,
  type SessionEvent,
  type SessionStatus,
  type TurnAnswer,
  describeIssues,
  SESSION_USER_MEMO,
} from './workflows/types.js';

export { SESSION_USER_MEMO };
import { clientTracing, tracingFromEnv, type KeelTracing } from './telemetry/tracing.js';
import { ToolChainInputSchema, type ToolChainInputArgs } from './workflows/toolChain.js';
import { RouteInputSchema, routeQuery, type RouteInputArgs, type RouteStatus } from './workflows/router.js';
import { KeelStatus } from './workflows/search-attributes.js';
import type { agentSession, routeRequest, toolChain } from './workflows/index.js';

/** Pending approvals across sessions; sessions that did not answer (no worker) are listed apart. */
export interface PendingApprovalListing {
  pending: Array<ApprovalRequest & { sessionId: string }>;
  unavailable: Array<{ sessionId: string; error: string }>;
}

/** The session input was invalid; the message names each bad field. */
export class SessionInputError extends Error {
  override readonly name = 'SessionInputError';
}

/** What `startSession` needs; the model defaults to the agent's, then KEEL_MODEL (or Claude with an API key). */
export type StartSessionOptions = Omit<SessionInputArgs, 'defaultModel'> & {
  /** Workflow ID (`session-<uuid>`). */
  sessionId?: string;
  /**
   * With a caller-chosen `sessionId`: a session that already has this id (running or closed) is
   * returned instead of starting another, so a retried request starts one session (false: a closed
   * session's id may be used again).
   */
  idempotent?: boolean;
};

/** A started session. */
export interface SessionHandle {
  sessionId: string;
  /** The handle, with the first run's id (the session's later runs continue from it). */
  handle: WorkflowHandleWithFirstExecutionRunId<typeof agentSession>;
  /** True when `idempotent` found the session already started. */
  existing?: boolean;
}

/**
 * `KeelStatus: running` set with the start, so the workflow need not set it (each search-attribute update
 * is a billed action on Temporal Cloud; the start is one anyway).
 */
function startedRunning(searchAttributes: boolean): { typedSearchAttributes?: SearchAttributePair[] } {
  return searchAttributes ? { typedSearchAttributes: [{ key: KeelStatus, value: 'running' }] } : {};
}

/** The Keel client. */
export class KeelClient {
  private constructor(
    readonly config: KeelConfig,
    readonly connection: Connection,
    readonly temporal: Client,
    private readonly tracing?: KeelTracing,
  ) {}

  /**
   * Connects to Temporal with the validated configuration. With tracing on (the `OTEL_*` variables), a
   * session's trace starts here, at the client's `StartWorkflow` span.
   */
  static async connect(config: KeelConfig = loadConfig(), opts: { tracing?: KeelTracing | false } = {}): Promise<KeelClient> {
    const tracing = opts.tracing === false ? undefined : (opts.tracing ?? tracingFromEnv(process.env, 'keel-client'));
    const connection = await Connection.connect({ ...temporalConnectionOptions(config), connectTimeout: '5s' });
    // With codec keys, what the client sends is encrypted and what it reads is decrypted (src/codec).
    const dataConverter = keelDataConverter(config);
    const temporal = new Client({ connection, namespace: config.TEMPORAL_NAMESPACE, interceptors: { workflow: clientTracing(tracing) }, ...(dataConverter ? { dataConverter } : {}) });
    return new KeelClient(config, connection, temporal, tracing);
  }

  /** Starts a session; throws `SessionInputError` naming every bad field. */
  async startSession(opts: StartSessionOptions): Promise<SessionHandle> {
    const { sessionId: requestedId, idempotent, ...rest } = opts;
    const fallback = defaultModel(this.config);
    const parsed = SessionInputSchema.safeParse({ ...rest, ...(fallback ? { defaultModel: fallback } : {}) });
    if (!parsed.success) {
      throw new SessionInputError(describeIssues(parsed.error, 'input'));
    }
    if (!parsed.data.model && !parsed.data.agent && !parsed.data.defaultModel) {
      throw new SessionInputError('model: none given; pass a model (with the scripted model: scripted/<scenario>), name an agent that has one, or set KEEL_MODEL');
    }
    const sessionId = requestedId ?? `session-${randomUUID()}`;
    const firstLine = parsed.data.prompt.split('\n', 1)[0]!;
    const start = this.temporal.workflow.start('agentSession', {
      taskQueue: this.config.KEEL_TASK_QUEUE,
      workflowId: sessionId,
      args: [parsed.data],
      memo: { [SESSION_USER_MEMO]: parsed.data.user.id },
      ...startedRunning(parsed.data.searchAttributes),
      ...(idempotent ? { workflowIdReusePolicy: 'REJECT_DUPLICATE' as const } : {}),
      staticSummary: truncateBytes(firstLine, 200),
      staticDetails:
        `**User:** ${parsed.data.user.id} · **agent:** ${parsed.data.agent ?? 'default'} · **model:** ${parsed.data.model ?? parsed.data.defaultModel ?? "the agent's"}` +
        `\n\n${truncateBytes(parsed.data.prompt, 4000)}`,
    });
    let handle;
    try {
      handle = await start;
    } catch (err) {
      if (!(idempotent && err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
      const existing = this.temporal.workflow.getHandle(sessionId);
      const { runId } = await existing.describe();
      return { sessionId, handle: Object.assign(existing, { firstExecutionRunId: runId }) as WorkflowHandleWithFirstExecutionRunId<typeof agentSession>, existing: true };
    }
    return { sessionId, handle: handle as WorkflowHandleWithFirstExecutionRunId<typeof agentSession> };
  }

  /** Who started the session (its memo), or undefined for a session started without one; throws `WorkflowNotFoundError`. */
  async sessionUser(sessionId: string): Promise<string | undefined> {
    const description = await this.session(sessionId).describe();
    const user = description.memo?.[SESSION_USER_MEMO];
    return typeof user === 'string' ? user : undefined;
  }

  /** The handle of an existing session. */
  session(sessionId: string): WorkflowHandle<typeof agentSession> {
    return this.temporal.workflow.getHandle(sessionId);
  }

  /** The session's live status (works on closed sessions too, from their history). */
  async status(sessionId: string): Promise<SessionStatus> {
    return this.session(sessionId).query(statusQuery);
  }

  /** Waits for the session's result; a failed session throws `WorkflowFailedError`. */
  async result(sessionId: string): Promise<SessionResult> {
    return this.session(sessionId).result();
  }

  /**
   * Sends a follow-up message and waits for its answer (the `sendMessage` update). The session must be a
   * conversation (an `idleTimeout`) that has not ended; a turn that waits for an approval waits here too.
   * @throws SessionInputError for an empty or oversized message.
   */
  async sendMessage(sessionId: string, text: string): Promise<TurnAnswer> {
    const parsed = UserMessageSchema.safeParse({ text });
    if (!parsed.success) throw new SessionInputError(describeIssues(parsed.error, 'text'));
    try {
      return await this.session(sessionId).executeUpdate(sendMessageUpdate, { args: [parsed.data] });
    } catch (err) {
      // The session refused the message (its validator: the conversation has ended): say why, as bad input.
      if (err instanceof WorkflowUpdateFailedError && err.cause instanceof ApplicationFailure) throw new SessionInputError(err.cause.message);
      // The session closed while the message was on its way.
      const state = (await this.session(sessionId).describe().catch(() => undefined))?.status.name;
      if (state && state !== 'RUNNING') throw new SessionInputError(`the session has ${state === 'COMPLETED' ? 'ended' : state.toLowerCase()}; start a new session`);
      throw err;
    }
  }

  /** Ends a conversation: the session answers what it was asked and completes. */
  async endConversation(sessionId: string): Promise<void> {
    await this.session(sessionId).signal(endConversationSignal);
  }

  /** Running Keel sessions and chains on this client's task queue. */
  async listRunning(): Promise<Array<{ workflowId: string; runId: string; type: string }>> {
    const found = [];
    const query = `ExecutionStatus = 'Running' AND TaskQueue = '${this.config.KEEL_TASK_QUEUE}' AND (WorkflowType = 'agentSession' OR WorkflowType = 'toolChain' OR WorkflowType = 'routeRequest')`;
    for await (const wf of this.temporal.workflow.list({ query })) found.push({ workflowId: wf.workflowId, runId: wf.runId, type: wf.type });
    return found;
  }

  /** Requests cancellation of a session. */
  async cancel(sessionId: string): Promise<void> {
    await this.session(sessionId).cancel();
  }

  /** Starts a `toolChain` of declared tool steps; throws `SessionInputError` naming every bad field. */
  async startChain(input: ToolChainInputArgs, opts: { chainId?: string } = {}): Promise<WorkflowHandle<typeof toolChain>> {
    const parsed = ToolChainInputSchema.safeParse(input);
    if (!parsed.success) {
      throw new SessionInputError(describeIssues(parsed.error, 'input'));
    }
    return this.temporal.workflow.start('toolChain', {
      taskQueue: this.config.KEEL_TASK_QUEUE,
      workflowId: opts.chainId ?? `chain-${randomUUID()}`,
      args: [parsed.data],
      ...startedRunning(parsed.data.searchAttributes),
      staticSummary: truncateBytes(`chain: ${parsed.data.steps.map((s) => s.tool).join(' → ')}`, 200),
    }) as Promise<WorkflowHandle<typeof toolChain>>;
  }

  /**
   * Starts a `routeRequest`: a model picks which of the candidate agents handles the prompt, and that
   * agent's session runs as the route's child (its workflow ID is `route(...).sessionId`, by default
   * `<routeId>-session`: approve its calls and send it messages there). The routing model is `model`, else
   * KEEL_MODEL. Throws `SessionInputError` naming every bad field.
   */
  async route(input: RouteInputArgs, opts: { routeId?: string } = {}): Promise<WorkflowHandle<typeof routeRequest>> {
    const fallback = defaultModel(this.config);
    const parsed = RouteInputSchema.safeParse({ ...input, ...(fallback && !input.defaultModel ? { defaultModel: fallback } : {}) });
    if (!parsed.success) {
      throw new SessionInputError(describeIssues(parsed.error, 'input'));
    }
    const routeId = opts.routeId ?? `route-${randomUUID()}`;
    return this.temporal.workflow.start('routeRequest', {
      taskQueue: this.config.KEEL_TASK_QUEUE,
      workflowId: routeId,
      args: [parsed.data],
      memo: { [SESSION_USER_MEMO]: parsed.data.user.id },
      staticSummary: truncateBytes(`route: ${parsed.data.prompt.split('\n', 1)[0]!}`, 200),
    }) as Promise<WorkflowHandle<typeof routeRequest>>;
  }

  /** A route's state, its session's workflow ID and (once made) its decision (the `route` query). */
  async routeStatus(routeId: string): Promise<RouteStatus> {
    return this.temporal.workflow.getHandle(routeId).query(routeQuery);
  }

  /** The session's requests waiting for a person. */
  async pendingApprovals(sessionId: string): Promise<ApprovalRequest[]> {
    return this.session(sessionId).query(pendingApprovalsQuery);
  }

  /**
   * Every pending approval across sessions: a visibility query on the `KeelPendingApproval` search
   * attribute finds the sessions, then each is asked for its requests, in parallel, each within
   * `queryTimeoutMs`. A session whose query fails (no worker running) is still listed, under `unavailable`.
   */
  async listPendingApprovals(opts: { queryTimeoutMs?: number } = {}): Promise<PendingApprovalListing> {
    const sessions: string[] = [];
    for await (const wf of this.temporal.workflow.list({ query: `KeelPendingApproval = true AND ExecutionStatus = 'Running'` })) {
      sessions.push(wf.workflowId);
    }
    const deadline = Date.now() + (opts.queryTimeoutMs ?? 5_000);
    const answers = await Promise.all(
      sessions.map((sessionId) =>
        this.temporal.withDeadline(deadline, () => this.pendingApprovals(sessionId)).then(
          (requests) => ({ sessionId, requests }),
          (err: unknown) => ({ sessionId, error: err instanceof Error ? err.message : String(err) }),
        ),
      ),
    );
    return {
      pending: answers.flatMap((a) => ('requests' in a ? a.requests.map((r) => ({ ...r, sessionId: a.sessionId })) : [])),
      unavailable: answers.flatMap((a) => ('error' in a ? [{ sessionId: a.sessionId, error: a.error }] : [])),
    };
  }

  /**
   * Decides on a request through the `decideApproval` update, so the answer says at once whether it was
   * accepted (and if not, why: unknown request, already decided, not allowed).
   */
  async decide(sessionId: string, decision: ApprovalDecision): Promise<ApprovalOutcome> {
    const parsed = ApprovalDecisionSchema.safeParse(decision);
    if (!parsed.success) {
      throw new SessionInputError(describeIssues(parsed.error, 'decision'));
    }
    return this.session(sessionId).executeUpdate(decideApprovalUpdate, { args: [parsed.data] });
  }

  /** Closes the connection. */
  async close(): Promise<void> {
    await this.connection.close();
    await this.tracing?.shutdown();
  }
}

/** Messages of Temporal's wrapper failures, which say nothing about the cause. */
const WRAPPER_MESSAGES = new Set(['Activity task failed', 'Workflow execution failed', 'Child Workflow execution failed']);

/** The most useful message of a failed session's error chain: the first one that is not a wrapper's. */
export function failureMessage(err: unknown): string {
  let cause: unknown = err instanceof WorkflowFailedError ? err.cause : err;
  while (cause instanceof Error) {
    if (!WRAPPER_MESSAGES.has(cause.message)) return cause.message;
    cause = (cause as { cause?: unknown }).cause;
  }
  return err instanceof Error ? err.message : String(err);
}

function truncateBytes(text: string, max: number): string {
  const buf = Buffer.from(text);
  if (buf.length <= max) return text;
  return `${buf.subarray(0, max - 3).toString('utf8').replace(/\uFFFD$/, '')}...`;
}

/**
 * Follows a session: polls its `status` query and calls `onEvent` once for each new event, in order,
 * until the session closes; then returns its result (or throws its failure).
 */
export async function followSession(
  client: KeelClient,
  sessionId: string,
  onEvent: (event: SessionEvent) => void,
  opts: { intervalMs?: number; since?: number } = {},
): Promise<SessionResult> {
  return followUntil(client, sessionId, client.result(sessionId), onEvent, opts);
}

/**
 * Calls `onEvent` once for each new event of the session (after event `since`), in order, until `until`
 * settles (a result, an update's answer); then returns what it settled with (or throws its error).
 */
export async function followUntil<T>(
  client: KeelClient,
  sessionId: string,
  until: Promise<T>,
  onEvent: (event: SessionEvent) => void,
  opts: { intervalMs?: number; since?: number } = {},
): Promise<T> {
  let seen = opts.since ?? 0;
  let done = false;
  const settled = until.finally(() => {
    done = true;
  });
  // Handled below (raced, then returned); without this a failure during the first poll is "unhandled".
  settled.catch(() => undefined);
  const drain = async (): Promise<void> => {
    const status = await client.status(sessionId).catch(() => undefined);
    for (const e of status?.events ?? []) {
      if (e.seq > seen) {
        seen = e.seq;
        onEvent(e);
      }
    }
  };
  while (!done) {
    await drain();
    await Promise.race([settled.catch(() => undefined), new Promise((r) => setTimeout(r, opts.intervalMs ?? 250))]);
  }
  await drain();
  return settled;
}
