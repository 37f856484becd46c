/**
 * The agent contract. An agent is configuration, not code: a name sessions choose it by, the system
 * prompt, the model (and a cheaper one for routine turns), the subset of the app's tools it may offer, its
 * budgets, its approval policy, prompt caching and the actions it must never take (`blocked`).
 * `defineAgent` validates the definition once, at registration, so a worker with a bad agent never starts.
 *
 * Sandbox-safe (zod and plain data only): the workflow reads agents to configure a session.
 */
import { z } from 'zod';
import { BudgetSchema, PricingSchema } from '../workflows/budget.js';
import { ApprovalPolicySchema, DurationSchema, ExecutionSchema, describeIssues } from '../workflows/types.js';

/** How a blocked-action pattern matches one input field: the exact value, or a regex a string field matches. */
export const BlockedFieldSchema = z.union([
  z.string(),
  z.number(),
  z.boolean(),
  z.strictObject({
    /** A JavaScript regex, unanchored (it matches anywhere in the value: anchor it with ^ and $). */
    matches: z.string().min(1).max(1000),
    /** Regex flags, from `imsu` (`g` and `y` would make matching stateful). */
    flags: z.string().optional(),
  }),
]);
export type BlockedField = z.infer<typeof BlockedFieldSchema>;

/**
 * An action an agent must never take, whoever asks: a tool, optionally only when fields of its validated
 * input match (every field given must match; an array field matches when one of its items does).
 */
export const BlockedActionSchema = z.strictObject({
  /** The tool's name. */
  tool: z.string().min(1),
  /** Input fields and what blocks them; without it, every call of the tool is blocked. */
  when: z.record(z.string().min(1), BlockedFieldSchema).optional(),
  /** Why, for the model and the audit trail: it reads "<tool> is blocked for this agent: <reason>". */
  reason: z.string().min(1).max(500),
});
export type BlockedAction = z.infer<typeof BlockedActionSchema>;

/** What an agent author writes. Defaults in parentheses. */
export const AgentSpecSchema = z.object({
  /** The name sessions choose it by (`keel run --agent <name>`). */
  name: z.string().regex(/^[a-zA-Z0-9_-]{1,64}$/, 'must match ^[a-zA-Z0-9_-]{1,64}$'),
  /** One line for people: what the agent is for. */
  description: z.string().max(1000).optional(),
  /** The system prompt: the agent's duties and manners, written for the model. */
  system: z.string().min(1, 'system prompt is empty').max(100_000),
  /** Model name; the session's `model` wins, then this, then the client's default (KEEL_MODEL). */
  model: z.string().min(1).max(200).optional(),
  /**
   * A cheaper model for routine turns (none: every turn uses `model`). A model call is routine when the
   * tool results it reads all came from `read` tools that succeeded; the first call of each user message,
   * every call after a side effect, an error or a refusal, and a budget's last turn use `model`. A routine
   * reply that asks for anything but a `read` tool is set aside and `model` answers that turn instead, so
   * the cheaper model never chooses a side effect. A session that names its own `model` does not use it
   * (it may name its own `routineModel`).
   */
  routineModel: z.string().min(1).max(200).optional(),
  /**
   * Prompt-cache breakpoints on the last tool, the system prompt and the conversation's last message
   * (true). Turn it off for an endpoint that rejects `cache_control`, or for an agent whose calls are
   * rarely within the cache's 5 minutes of each other (each write costs 25% more than plain input).
   */
  promptCaching: z.boolean().optional(),
  /**
   * How the agent's sessions run their `read` tools and the model call: `{ reads: 'local' }` runs reads
   * that do not declare `execution` as local activities, `{ model: 'local' }` the model call (both
   * `regular`). A session's `execution` wins field by field. See README, *Execution modes*.
   */
  execution: ExecutionSchema.optional(),
  /** Tools the agent may offer, by name (every tool of the app). */
  tools: z.array(z.string().min(1)).optional(),
  /** Model turns per user message before the session stops with `max_iterations` (10). */
  maxIterations: z.number().int().min(1).max(200).optional(),
  /** `max_tokens` per model call (1024). */
  maxTokens: z.number().int().min(1).max(64_000).optional(),
  /** Who may approve what (see ApprovalPolicySchema). */
  approval: ApprovalPolicySchema.partial().optional(),
  /** How long a conversation waits for the next user message before it completes (0: answer once and complete). */
  idleTimeout: DurationSchema.optional(),
  /** What each session may spend (see BudgetSchema); a session's own budget wins field by field. */
  budget: BudgetSchema.partial().optional(),
  /** Model prices over Keel's (USD per million tokens). */
  pricing: PricingSchema.optional(),
  /** Actions refused before anything runs, whatever the model was asked or talked into (none). */
  blocked: z.array(BlockedActionSchema).max(100).optional(),
  /**
   * Other agents of the app this one may delegate to, by name (none). Each is offered to the model as a
   * tool `delegate_to_<agent>` (input `{ task }`, described by the agent's `description`) and runs as a
   * child session: the same user, its own prompt, model, tools and policies, within what this session has
   * left of its budgets (see `src/workflows/subagents.ts`). At most 52 characters each, so the tool's name
   * fits the API's 64.
   */
  subAgents: z.array(z.string().regex(/^[a-zA-Z0-9_-]{1,52}$/, 'must name an agent of at most 52 characters (^[a-zA-Z0-9_-]{1,52}$)')).max(20).optional(),
});
/** An agent as its author writes it. */
export type AgentSpec = z.input<typeof AgentSpecSchema>;

/** A registered agent. */
export type Agent = z.output<typeof AgentSpecSchema> & { readonly kind: 'agent' };

/** An agent definition is invalid; the message names the agent and the field. */
export class AgentDefinitionError extends Error {
  override readonly name = 'AgentDefinitionError';
}

/**
 * Registers an agent after validating it. Tools and sub-agents may be given as names or as the objects.
 * @throws AgentDefinitionError naming the agent and every bad field.
 */
export function defineAgent(
  spec: Omit<AgentSpec, 'tools' | 'subAgents'> & { tools?: Array<string | { name: string }>; subAgents?: Array<string | { name: string }> },
): Agent {
  const tools = spec.tools?.map((t) => (typeof t === 'string' ? t : t.name));
  const subAgents = spec.subAgents?.map((a) => (typeof a === 'string' ? a : a.name));
  const parsed = AgentSpecSchema.safeParse({ ...spec, ...(tools ? { tools } : {}), ...(subAgents ? { subAgents } : {}) });
  if (!parsed.success) {
    throw new AgentDefinitionError(`agent '${String(spec.name)}': ${describeIssues(parsed.error, '(definition)')}`);
  }
  parsed.data.blocked?.forEach((pattern, i) => {
    for (const [field, match] of Object.entries(pattern.when ?? {})) {
      if (typeof match !== 'object') continue;
      if (match.flags !== undefined && !/^[imsu]*$/.test(match.flags)) {
        throw new AgentDefinitionError(
          `agent '${parsed.data.name}': blocked[${i}] (tool '${pattern.tool}'), field '${field}': flags '${match.flags}' may use only i, m, s and u (g and y make matching stateful)`,
        );
      }
      try {
        new RegExp(match.matches, match.flags);
      } catch (err) {
        throw new AgentDefinitionError(
          `agent '${parsed.data.name}': blocked[${i}] (tool '${pattern.tool}'), field '${field}': '${match.matches}' is not a valid regex (${(err as Error).message})`,
        );
      }
    }
  });
  return { ...parsed.data, kind: 'agent' };
}

/**
 * The first of `patterns` that blocks this call of `tool` with its validated `input`, or undefined.
 * Deterministic and sandbox-safe: the tool runner asks it in workflow code.
 */
export function blockedBy(patterns: readonly BlockedAction[] | undefined, tool: string, input: unknown): BlockedAction | undefined {
  const fields = typeof input === 'object' && input !== null ? (input as Record<string, unknown>) : {};
  return patterns?.find((p) => p.tool === tool && Object.entries(p.when ?? {}).every(([field, match]) => fieldMatches(fields[field], match)));
}

function fieldMatches(value: unknown, match: BlockedField): boolean {
  if (Array.isArray(value)) return value.some((item) => fieldMatches(item, match));
  if (typeof match !== 'object') return value === match;
  if (typeof value !== 'string' && typeof value !== 'number' && typeof value !== 'boolean') return false;
  return new RegExp(match.matches, match.flags).test(String(value));
}

/** True for a value made by `defineAgent`. */
export function isAgent(value: unknown): value is Agent {
  return typeof value === 'object' && value !== null && (value as { kind?: unknown }).kind === 'agent';
}
