/**
 * The tool contract. A tool is one object: a name the model calls it by, a description written for the
 * model, a zod input schema, a risk tier and a `run` function. `defineTool` checks the definition against
 * its tier's rules once, at registration, so an unsafe tool never reaches a worker.
 *
 * This module is sandbox-safe (zod and plain data only): workflow code imports tool definitions to read
 * their schemas and policies, while only the worker ever calls `run`. Tool modules must therefore not
 * import Node built-ins at the top level; they reach the outside world through `ctx`, HTTP through
 * `ctx.fetch`, which refuses hosts outside the tool's `allowedHosts`.
 */
import { z } from 'zod';
import { EXECUTION_MODES, LOCAL_ACTIVITY_MAX_TIMEOUT, RISK_TIERS, type ExecutionMode, type RiskTier, type Duration, tierPolicy } from './policy.js';

export type { RiskTier } from './policy.js';

/** Whether a failing tool fails the session (`critical`) or degrades to a note for the model (`optional`). */
export type Criticality = 'critical' | 'optional';

/** How a tool's idempotency key is derived; keys always start with the workflow ID. */
export type IdempotencyMode =
  /** workflow ID + tool name + hash of the canonical input: the same request twice is one effect. */
  | 'input-hash'
  /** workflow ID + tool_use id: every model call is its own effect. */
  | 'per-call';

/** The session a tool call belongs to, as the tool sees it. */
export interface ToolSession {
  /** Temporal workflow ID of the session. */
  workflowId: string;
  /** The requesting user's id. */
  userId: string;
  /** The requesting user's roles. */
  roles: string[];
}

/** A logger with pino's call shape, as handed to a tool. */
export interface ToolLogger {
  info(message: string, meta?: Record<string, unknown>): void;
  warn(message: string, meta?: Record<string, unknown>): void;
  error(message: string, meta?: Record<string, unknown>): void;
}

/** What a tool's `run` receives beside its validated input. */
export interface ToolContext {
  /** Stable across retries, crashes, replay and continue-as-new; send it downstream as `Idempotency-Key`. */
  idempotencyKey: string;
  /** Aborted when Temporal cancels the activity (session cancelled, timeout, worker shutdown). */
  signal: AbortSignal;
  /** Structured logger bound to the session and tool. */
  log: ToolLogger;
  /** The session making the call. */
  session: ToolSession;
  /** The id of the model's tool_use block. */
  toolUseId: string;
  /** The worker's environment (validated config lives elsewhere; tools read their own endpoints here). */
  env: Readonly<Record<string, string | undefined>>;
  /**
   * Headers that carry the session's trace to a downstream: W3C `traceparent` (and `tracestate`) and
   * `X-Trace-ID`. Spread them into your HTTP call's headers; empty when tracing is off.
   */
  traceHeaders: Readonly<Record<string, string>>;
  /**
   * `fetch` with the tool's `allowedHosts` enforced: a URL whose host is not allowed, or whose scheme is
   * not http(s), is refused with a non-retryable `ToolError` before any network I/O, and so is a redirect
   * to such a host (redirects are followed hop by hop, each hop checked). It adds `traceHeaders` (unless
   * the caller set them) and `signal` (unless the caller gave a signal). Without `allowedHosts` any host
   * is allowed. Global `fetch` bypasses all of this: tools should use this one.
   */
  fetch: typeof globalThis.fetch;
  /**
   * Tells the session's watchers how the call is going (`'fetched 3 of 10 pages'`) and heartbeats, so a
   * long call shows life. The message is published on the worker's stream bus as a `tool_progress` event:
   * one line, at most 500 characters, passed through Keel's redactor with the values of `sensitive`
   * fields masked. Keep it to progress; the input and the result are not for watchers. Published for the
   * call itself, not for a status check or an undo (there it only heartbeats); without a bus, it only
   * heartbeats.
   */
  progress(message: string): void;
}

/**
 * Thrown by a tool for an outcome the model should read and act on (order not found, amount too
 * large). It becomes an `is_error` tool result and is never retried.
 */
export class ToolError extends Error {
  override readonly name = 'ToolError';
  /** @param retryable - true when the failure is transient and the tier's retry policy may try again. */
  constructor(
    message: string,
    readonly retryable = false,
  ) {
    super(message);
  }
}

/** A tool as the author writes it. */
export interface ToolSpec<S extends z.ZodObject = z.ZodObject, R = unknown> {
  /** The name the model calls; also the Temporal activity type. `^[a-zA-Z0-9_-]{1,64}$`. */
  name: string;
  /** Written for the model: what it does, its side effects, whether it can be undone. */
  description: string;
  /** Input schema; property descriptions reach the model through JSON Schema. */
  input: S;
  /** The risk tier, which sets retries, timeouts, idempotency and approval together. */
  risk: RiskTier;
  /** Default `critical`. */
  criticality?: Criticality;
  /** Start-to-close timeout; must not exceed the tier's ceiling. */
  timeout?: Duration;
  /** Attempts including the first; must not exceed what the tier allows. */
  maxAttempts?: number;
  /** Key derivation for write tiers; default `input-hash`. Reads have no key. */
  idempotency?: IdempotencyMode;
  /** True when the downstream honours `Idempotency-Key`, which lets a `write` tool retry with the same key. */
  idempotentDownstream?: boolean;
  /** Does the work. Throw `ToolError` for outcomes the model should see. */
  run(input: z.output<S>, ctx: ToolContext): Promise<R>;
  /**
   * Undoes a `write`. Registered before the side effect runs and called, last-in-first-out, when the
   * session fails, is cancelled or a critical step fails. It gets the original input and the original
   * call's idempotency key (`ctx.idempotencyKey`), so it can find what was done; it must be a no-op when
   * nothing happened, and is retried until it succeeds.
   */
  compensate?(input: z.output<S>, ctx: ToolContext): Promise<unknown>;
  /** A `write` that cannot be undone and is not `irreversible` must say why instead of `compensate`. */
  noCompensation?: string;
  /**
   * Asks the downstream, by idempotency key, whether a call whose outcome is unknown (timed out, worker
   * lost) happened. Without one, an unknown outcome goes to the model as unknown, never a blind retry.
   */
  statusCheck?(input: z.output<S>, ctx: ToolContext): Promise<StatusCheckResult>;
  /** How long an approval request for this tool waits for a person (the session's default, 24h). */
  approvalTimeout?: Duration;
  /** Largest result, in bytes of JSON, the model is shown; a longer one is cut with a note (64 KiB; at most 1 MiB). */
  maxResultBytes?: number;
  /**
   * The tool's circuit breaker, shared by every worker: it opens after `failures` consecutive failed calls
   * (3), fails calls fast for `resetAfter` (60s), then lets one probe through. `false` turns it off.
   */
  breaker?: { failures?: number; resetAfter?: Duration } | false;
  /** Calls per second the downstream can take, across the fleet; calls beyond it wait their turn. */
  rateLimit?: { perSecond: number };
  /**
   * True when what the tool returns is curated data the team controls (its own config, a glossary), not
   * text others can write (emails, tickets, web pages, knowledge-base articles). Output is untrusted by
   * default: the model is shown it marked as data, and once it is in a session's context every later
   * side-effecting call needs a person's approval, which names the source (false).
   */
  trustedOutput?: boolean;
  /**
   * Input fields whose values are secrets or personal data: masked (`[redacted]`) in approval requests,
   * the audit trail and logs, on top of what Keel's redactor finds by itself (none).
   */
  sensitive?: string[];
  /** Passes the result through Keel's redactor before the model sees it: emails, cards, tokens, phones (false). */
  redactOutput?: boolean;
  /**
   * The hosts `ctx.fetch` may reach (any host, without it: declaring them is the least-privilege way).
   * Each entry is a host (`api.example.com`, `10.0.0.5`, `[::1]`), a wildcard for its subdomains at any
   * depth (`*.example.com`, which does not match `example.com` itself), either with an optional `:port`
   * (without one, any port), or `env:NAME`: the host and port of the URL in the worker's environment
   * variable `NAME`, read at call time (unset or not a URL: allows nothing). Matched against the URL as
   * fetch parses it (so `http://allowed.com@evil.com/` is `evil.com`), by name, never by DNS resolution.
   */
  allowedHosts?: string[];
  /**
   * How the call runs (a `read` tool only may say `local`). `local`: as a local activity in the worker that
   * runs the session's workflow task, in every session; `regular`: as a regular activity, whatever the
   * session or agent asks (a read that runs long or reports `ctx.progress`). Unset: the session's
   * `execution.reads`, then the agent's, else regular. A local tool's `timeout` is at most 10 s.
   */
  execution?: ExecutionMode;
}

/** What a status check found. */
export type StatusCheckResult = { applied: true; result: unknown } | { applied: false };

/** A registered tool: its spec plus the policy its tier resolved to. */
export interface Tool<S extends z.ZodObject = z.ZodObject, R = unknown> extends ToolSpec<S, R> {
  /** Marks a value made by `defineTool`, so a module's exports can be told apart. */
  readonly kind: 'tool';
  criticality: Criticality;
  policy: ResolvedToolPolicy;
  /**
   * The JSON Schema the model is shown, when the tool came with one (an MCP server's tool, see
   * `src/tools/mcp.ts`); otherwise it is derived from `input`.
   */
  modelInputSchema?: ModelToolDefinition['input_schema'];
}

/** The activity options and rules a tool runs under, after its tier's defaults and its overrides. */
export interface ResolvedToolPolicy {
  risk: RiskTier;
  startToCloseTimeout: Duration;
  maxAttempts: number;
  initialRetryInterval: Duration;
  idempotency: IdempotencyMode | 'none';
  approval: 'never' | 'policy' | 'always' | 'other-person';
  /** Set when the tool has an undo. */
  compensable: boolean;
  /** Set when the tool can be asked whether a call happened. */
  hasStatusCheck: boolean;
  approvalTimeout?: Duration;
  /** Largest result the model is shown, in bytes of JSON. */
  maxResultBytes: number;
  /** The circuit breaker, unless turned off. */
  breaker?: { failureThreshold: number; resetAfterMs: number };
  /** Fleet-wide calls per second. */
  rateLimitPerSecond?: number;
  /** How the tool declared its calls run (unset: as the session says; see `ToolSpec.execution`). */
  execution?: ExecutionMode;
}

/** A tool definition broke its tier's rules; the message names the tool and the rule. */
export class ToolDefinitionError extends Error {
  override readonly name = 'ToolDefinitionError';
}

const TOOL_NAME = /^[a-zA-Z0-9_-]{1,64}$/;

/** One DNS label (letters, digits, inner hyphens), lower or upper case. */
const LABEL = '[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?';
/**
 * An `allowedHosts` entry: a host name or IPv4 address, a `*.` wildcard over a name of two labels or
 * more (never `*.com`), or a bracketed IPv6 address; then an optional port. `env:NAME` entries aside.
 */
const ALLOWED_HOST = new RegExp(`^(?:${LABEL}(?:\\.${LABEL})*|\\*\\.${LABEL}(?:\\.${LABEL})+|\\[[0-9a-f:.]+\\])(?::(\\d{1,5}))?$`, 'i');
const ENV_HOST = /^env:[A-Za-z_][A-Za-z0-9_]*$/;

/** The problem with an `allowedHosts` entry, or undefined when it is fine. */
function allowedHostProblem(entry: unknown): string | undefined {
  const shown = typeof entry === 'string' ? `'${entry}'` : String(entry);
  const usage = "use a host ('api.example.com', '10.0.0.5', '[::1]'), a wildcard ('*.example.com'), either with an optional ':port', or 'env:NAME'";
  if (typeof entry !== 'string') return `allowedHosts entry ${shown} is not a string: ${usage}`;
  if (ENV_HOST.test(entry)) return undefined;
  const m = ALLOWED_HOST.exec(entry);
  if (!m) return `allowedHosts entry ${shown} is not a host: ${usage} (no scheme, path or user; a wildcard needs two labels after '*.')`;
  const port = m[1] === undefined ? undefined : Number(m[1]);
  if (port !== undefined && (port < 1 || port > 65535)) return `allowedHosts entry ${shown} has port ${port}: a port is 1 to 65535`;
  return undefined;
}

/** The default of `maxResultBytes`: what the model is shown of one result (64 KiB). */
export const DEFAULT_MAX_RESULT_BYTES = 64 * 1024;

/**
 * Registers a tool after checking it against its tier's rules.
 * @throws ToolDefinitionError naming the tool and the rule it broke.
 */
export function defineTool<S extends z.ZodObject, R>(spec: ToolSpec<S, R>): Tool<S, R> {
  const fail = (rule: string): never => {
    throw new ToolDefinitionError(`tool '${spec.name}': ${rule}`);
  };
  if (!TOOL_NAME.test(spec.name)) fail('name must match ^[a-zA-Z0-9_-]{1,64}$ (the Messages API rule)');
  if (!spec.description?.trim()) fail('description is required: the model chooses tools by it');
  if (!(spec.input instanceof z.ZodObject)) fail('input must be a z.object(...) schema');
  if (!RISK_TIERS.includes(spec.risk)) fail(`risk must be one of ${RISK_TIERS.join(', ')}`);
  const tier = tierPolicy(spec.risk);
  const aTier = `${/^[aeiou]/.test(spec.risk) ? 'an' : 'a'} ${spec.risk} tool`;
  const maxAttempts = spec.maxAttempts ?? (spec.idempotentDownstream ? tier.maxAttemptsWithKeys : tier.maxAttempts);
  const ceiling = spec.idempotentDownstream ? tier.maxAttemptsWithKeys : tier.maxAttempts;
  if (!Number.isInteger(maxAttempts) || maxAttempts < 1) fail('maxAttempts must be a whole number >= 1');
  if (maxAttempts > ceiling) {
    fail(
      `${aTier} may make at most ${ceiling} attempt(s)` +
        (spec.risk === 'write' && !spec.idempotentDownstream ? ' unless its downstream honours idempotency keys (idempotentDownstream: true)' : '') +
        (spec.risk === 'irreversible' || spec.risk === 'privileged' ? ': it is never retried blindly' : ''),
    );
  }
  if (spec.risk === 'read' && spec.idempotency) fail('a read tool has no side effect and takes no idempotency mode');
  if (spec.idempotency && !['input-hash', 'per-call'].includes(spec.idempotency)) {
    fail(`idempotency must be 'input-hash' or 'per-call': ${aTier} needs a key strategy`);
  }
  if (spec.risk === 'read' && (spec.compensate || spec.statusCheck)) fail('a read tool has nothing to compensate or check');
  if (spec.risk === 'write' && !spec.compensate && !spec.noCompensation?.trim()) {
    fail('a write tool must declare compensate (its undo), or noCompensation with the reason it has none');
  }
  if ((spec.risk === 'irreversible' || spec.risk === 'privileged') && spec.compensate) {
    fail(`${aTier} cannot be undone, so it takes no compensate; if it can be undone, make it a write`);
  }
  if (spec.approvalTimeout !== undefined) toMs(spec.approvalTimeout);
  const breaker = spec.breaker === false ? undefined : { failureThreshold: spec.breaker?.failures ?? 3, resetAfterMs: toMs(spec.breaker?.resetAfter ?? '60s') };
  if (breaker && (!Number.isInteger(breaker.failureThreshold) || breaker.failureThreshold < 1)) fail('breaker.failures must be a whole number >= 1');
  if (breaker && breaker.resetAfterMs < 100) fail('breaker.resetAfter must be at least 100ms');
  if (spec.rateLimit && !(spec.rateLimit.perSecond > 0)) fail('rateLimit.perSecond must be a number > 0');
  if (spec.allowedHosts !== undefined) {
    if (!Array.isArray(spec.allowedHosts)) fail('allowedHosts must be an array of hosts (omit it to allow any host)');
    for (const entry of spec.allowedHosts as unknown[]) {
      const problem = allowedHostProblem(entry);
      if (problem) fail(problem);
    }
  }
  const fields = Object.keys((spec.input as z.ZodObject).shape);
  const unknownField = spec.sensitive?.find((f) => !fields.includes(f));
  if (unknownField !== undefined) fail(`sensitive names '${unknownField}', which is not a field of its input (fields: ${fields.join(', ')})`);
  const maxResultBytes = spec.maxResultBytes ?? DEFAULT_MAX_RESULT_BYTES;
  if (!Number.isInteger(maxResultBytes) || maxResultBytes < 256 || maxResultBytes > 1024 * 1024) {
    fail('maxResultBytes must be a whole number from 256 to 1048576 (1 MiB)');
  }
  const timeout = spec.timeout ?? tier.startToCloseTimeout;
  if (toMs(timeout) > toMs(tier.maxStartToCloseTimeout)) {
    fail(`timeout ${timeout} exceeds the ${spec.risk} tier's ceiling of ${tier.maxStartToCloseTimeout}`);
  }
  if (spec.execution !== undefined && !EXECUTION_MODES.includes(spec.execution)) fail(`execution must be one of ${EXECUTION_MODES.join(', ')}`);
  if (spec.execution === 'local' && spec.risk !== 'read') {
    fail(`only a read tool may run as a local activity: a local activity may run again after a worker crash, whatever maxAttempts says, and ${aTier} has side effects`);
  }
  if (spec.execution === 'local' && toMs(timeout) > toMs(LOCAL_ACTIVITY_MAX_TIMEOUT)) {
    fail(`timeout ${timeout} is too long for a local activity (at most ${LOCAL_ACTIVITY_MAX_TIMEOUT}: it cannot heartbeat); leave execution unset or 'regular'`);
  }
  return {
    ...spec,
    kind: 'tool',
    criticality: spec.criticality ?? 'critical',
    policy: {
      risk: spec.risk,
      startToCloseTimeout: timeout,
      maxAttempts,
      initialRetryInterval: tier.initialRetryInterval,
      idempotency: spec.risk === 'read' ? 'none' : (spec.idempotency ?? 'input-hash'),
      approval: tier.approval,
      compensable: Boolean(spec.compensate),
      hasStatusCheck: Boolean(spec.statusCheck),
      maxResultBytes,
      ...(breaker ? { breaker } : {}),
      ...(spec.rateLimit ? { rateLimitPerSecond: spec.rateLimit.perSecond } : {}),
      ...(spec.approvalTimeout !== undefined ? { approvalTimeout: spec.approvalTimeout } : {}),
      ...(spec.execution !== undefined ? { execution: spec.execution } : {}),
    },
  };
}

/**
 * Whether a call of `tool` runs as a local activity, given the session's mode for reads: only a `read`
 * tool whose timeout fits a local activity, and not one that declared `execution: 'regular'`; one that
 * declared `local` always does, others when the session says `local`. Sandbox-safe: the workflow asks.
 */
export function runsLocal(tool: Pick<Tool, 'risk' | 'policy'>, sessionReads: ExecutionMode | undefined): boolean {
  if (tool.risk !== 'read' || tool.policy.execution === 'regular') return false;
  if (toMs(tool.policy.startToCloseTimeout) > toMs(LOCAL_ACTIVITY_MAX_TIMEOUT)) return false;
  return tool.policy.execution === 'local' || sessionReads === 'local';
}

/** True for a value made by `defineTool`. */
export function isTool(value: unknown): value is Tool {
  return typeof value === 'object' && value !== null && (value as { kind?: unknown }).kind === 'tool';
}

/** The tool as the Messages API sees it: name, description and JSON Schema of the input. */
export interface ModelToolDefinition {
  name: string;
  description: string;
  input_schema: { type: 'object'; [key: string]: unknown };
}

/** Converts a tool to the Messages API's `tools` entry (zod → JSON Schema, input side; an MCP tool's listed schema as is). */
export function toModelTool(tool: Pick<Tool, 'name' | 'description' | 'input'> & Partial<Pick<Tool, 'modelInputSchema'>>): ModelToolDefinition {
  if (tool.modelInputSchema) return { name: tool.name, description: tool.description, input_schema: tool.modelInputSchema };
  const schema = z.toJSONSchema(tool.input, { io: 'input' }) as Record<string, unknown>;
  delete schema.$schema;
  return { name: tool.name, description: tool.description, input_schema: { ...schema, type: 'object' } };
}

/** Milliseconds in a duration string such as `500ms`, `5s`, `2m`, `1h`, or a number of ms. */
export function toMs(d: Duration | string): number {
  if (typeof d === 'number') return d;
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)$/.exec(d);
  if (!m) throw new ToolDefinitionError(`bad duration '${d}': use e.g. 500ms, 5s, 2m, 1h`);
  const n = Number(m[1]);
  return n * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 'ms' | 's' | 'm' | 'h'];
}
