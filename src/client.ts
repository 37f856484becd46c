/**
 * The Keel client: start a session, read its status and result, cancel it. Wraps the Temporal client so
 * callers deal in sessions, not workflow plumbing; the session input is validated here, at the edge,
 * before anything reaches Temporal.
 */
import { randomUUID } from 'node:crypto';
import { Client, Connection, WorkflowFailedError, type WorkflowHandle } from '@temporalio/client';
import { defaultModel, loadConfig, temporalConnectionOptions, type KeelConfig } from './config.js';
import {
  ApprovalDecisionSchema,
  SessionInputSchema,
  decideApprovalUpdate,
  pendingApprovalsQuery,
  statusQuery,
  type ApprovalDecision,
  type ApprovalOutcome,
  type ApprovalRequest,
  type SessionInputArgs,
  type SessionResult,
  type SessionStatus,
  describeIssues,
} from './workflows/types.js';
import { ToolChainInputSchema, type ToolChainInputArgs } from './workflows/toolChain.js';
import type { agentSession, toolChain } from './workflows/index.js';

/** Pending approvals across sessions; sessions that did not answer (no worker) are listed apart. */
export interface PendingApprovalListing {
  pending: Array<ApprovalRequest & { sessionId: string }>;
  unavailable: Array<{ sessionId: string; error: string }>;
}

/** The session input was invalid; the message names each bad field. */
export class SessionInputError extends Error {
  override readonly name = 'SessionInputError';
}

/** What `startSession` needs; `model` defaults to the configured endpoint's model. */
export type StartSessionOptions = Omit<SessionInputArgs, 'model'> & {
  model?: string;
  /** Workflow ID (`session-<uuid>`). */
  sessionId?: string;
};

/** A started session. */
export interface SessionHandle {
  sessionId: string;
  handle: WorkflowHandle<typeof agentSession>;
}

/** The Keel client. */
export class KeelClient {
  private constructor(
    readonly config: KeelConfig,
    readonly connection: Connection,
    readonly temporal: Client,
  ) {}

  /** Connects to Temporal with the validated configuration. */
  static async connect(config: KeelConfig = loadConfig()): Promise<KeelClient> {
    const connection = await Connection.connect({ ...temporalConnectionOptions(config), connectTimeout: '5s' });
    return new KeelClient(config, connection, new Client({ connection, namespace: config.TEMPORAL_NAMESPACE }));
  }

  /** Starts a session; throws `SessionInputError` naming every bad field. */
  async startSession(opts: StartSessionOptions): Promise<SessionHandle> {
    const { sessionId: requestedId, ...rest } = opts;
    const model = rest.model ?? defaultModel(this.config);
    const parsed = SessionInputSchema.safeParse({ ...rest, model });
    if (!parsed.success) {
      throw new SessionInputError(describeIssues(parsed.error, 'input'));
    }
    const sessionId = requestedId ?? `session-${randomUUID()}`;
    const firstLine = parsed.data.prompt.split('\n', 1)[0]!;
    const handle = await this.temporal.workflow.start('agentSession', {
      taskQueue: this.config.KEEL_TASK_QUEUE,
      workflowId: sessionId,
      args: [parsed.data],
      staticSummary: truncateBytes(firstLine, 200),
      staticDetails: `**User:** ${parsed.data.user.id} · **model:** ${parsed.data.model}\n\n${truncateBytes(parsed.data.prompt, 4000)}`,
    });
    return { sessionId, handle: handle as WorkflowHandle<typeof agentSession> };
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
      staticSummary: truncateBytes(`chain: ${parsed.data.steps.map((s) => s.tool).join(' → ')}`, 200),
    }) as Promise<WorkflowHandle<typeof toolChain>>;
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
  onEvent: (event: SessionStatus['events'][number]) => void,
  opts: { intervalMs?: number } = {},
): Promise<SessionResult> {
  let seen = 0;
  let done = false;
  const result = client.result(sessionId).finally(() => {
    done = true;
  });
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
    await Promise.race([result.catch(() => undefined), new Promise((r) => setTimeout(r, opts.intervalMs ?? 250))]);
  }
  await drain();
  return result;
}
