/**
 * Tools from MCP servers, the sandbox-safe half. A tools module declares a server with
 * `defineMcpServer` (how to reach it: a command to spawn over stdio, or a streamable-HTTP URL; and the
 * risk tier of each of its tools, by the server's tool name). The worker connects at start-up, lists the
 * server's tools and registers one activity per tool; a session learns the list once, from an activity
 * whose result history records (`src/workflows/mcp.ts`). Both sides then turn each listed tool into an
 * ordinary `Tool` with `mcpTool`, so an MCP tool goes through the same tool runner as a native one: access
 * policy, validation, keys, approvals, breakers, audit.
 *
 * A listed tool is named `<server>__<tool>` (the Messages API's `^[a-zA-Z0-9_-]{1,64}$`; other characters
 * of the server's name become `_`). Its tier comes from the server's `tools` configuration; a tool with
 * none is `irreversible`: one attempt, and a person approves every call. Its input is checked against the
 * JSON Schema the server lists, converted to zod with `z.fromJSONSchema` (pure code, so the workflow can
 * do it); a schema zod cannot express is checked by the server alone.
 *
 * Sandbox-safe: zod and plain data only.
 */
import { z } from 'zod';
import type { KeelApp } from '../app/registry.js';
import { defineTool, ToolDefinitionError, type ModelToolDefinition, type Tool, type ToolSpec } from './define.js';
import { EXECUTION_MODES, RISK_TIERS } from './policy.js';
import { DurationSchema } from '../workflows/duration.js';
import { describeIssues } from '../workflows/types.js';

/** Between the server's name and the tool's in the name Keel gives an MCP tool: `<server>__<tool>`. */
export const MCP_NAME_SEPARATOR = '__';

/**
 * The `_meta` field of every `tools/call` request that carries the call's idempotency key (the same key a
 * native tool gets as `ctx.idempotencyKey`): a server that applies side effects can deduplicate by it.
 */
export const MCP_IDEMPOTENCY_META_KEY = 'keel/idempotencyKey';

/** A server's name: letters, digits and hyphens (no `_`, so `<server>__<tool>` splits one way only). */
const SERVER_NAME = /^[a-zA-Z0-9-]{1,32}$/;
/** An `env:NAME` reference, read from the worker's environment when it connects. */
const ENV_REF = /^env:[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * The schemas a server's spec is checked with, built on first use: every workflow evaluates this module
 * again (Temporal's sandbox), and most apps declare no MCP server, so they are not built at module level.
 */
function buildServerSchemas() {
  /**
   * How Keel treats one of a server's tools: its risk tier and, optionally, the same policy fields a
   * native tool takes. A tool the configuration does not name is `irreversible`.
   */
  const toolConfig = z.strictObject({
    /** The risk tier: sets retries, timeouts, idempotency and approval together (see the tier table). */
    risk: z.enum(RISK_TIERS),
    /** Replaces the server's description (what the model reads to choose the tool). */
    description: z.string().trim().min(1).max(10_000).optional(),
    /** `critical` (default): its failure fails the session; `optional`: it degrades to a note. */
    criticality: z.enum(['critical', 'optional']).optional(),
    /** Start-to-close timeout of one call, within the tier's ceiling (the tier's default). */
    timeout: DurationSchema.optional(),
    /** Attempts including the first, within what the tier allows. */
    maxAttempts: z.number().int().min(1).optional(),
    /** Key derivation for write tiers (`input-hash`). */
    idempotency: z.enum(['input-hash', 'per-call']).optional(),
    /** True when the server deduplicates by the key in `_meta`: a `write` may then retry with the same key. */
    idempotentDownstream: z.boolean().optional(),
    /** A `write` must say why it has no undo (MCP tools have none). */
    noCompensation: z.string().trim().min(1).max(500).optional(),
    /** How long an approval request for it waits for a person (the session's default). */
    approvalTimeout: DurationSchema.optional(),
    /** Largest result the model is shown, in bytes of JSON (64 KiB). */
    maxResultBytes: z.number().int().optional(),
    /** Its circuit breaker (3 failures, 60s), or `false`. */
    breaker: z.union([z.literal(false), z.strictObject({ failures: z.number().int().optional(), resetAfter: DurationSchema.optional() })]).optional(),
    /** Calls per second across the fleet. */
    rateLimit: z.strictObject({ perSecond: z.number() }).optional(),
    /** True when what it returns is curated data the team controls (untrusted by default). */
    trustedOutput: z.boolean().optional(),
    /** Input fields masked in approval requests, the audit trail and logs. */
    sensitive: z.array(z.string().min(1)).optional(),
    /** Redact its result before the model sees it. */
    redactOutput: z.boolean().optional(),
    /** `local` (a `read` only) or `regular`: how its calls run, as for `defineTool` (the session's mode). */
    execution: z.enum(EXECUTION_MODES).optional(),
  });
  const serverFields = {
    /** The server's name in Keel: the prefix of its tools' names. */
    name: z.string().regex(SERVER_NAME, `must match ${SERVER_NAME.source} (letters, digits, hyphens: its tools are named <server>__<tool>)`),
    /** Each tool's tier and policy, by the server's name for the tool. Tools not named here are `irreversible`. */
    tools: z.record(z.string().min(1).max(128), toolConfig).default({}),
  };
  const envValue = z.string().max(4096);

  /** A server the worker spawns and talks to over stdin/stdout. */
  const stdio = z.strictObject({
    ...serverFields,
    /** The executable (found on the worker's PATH), or `env:NAME`. */
    command: z.string().min(1).max(4096),
    /** Its arguments; an argument `env:NAME` is the value of that worker variable. */
    args: z.array(envValue).max(100).default([]),
    /**
     * Its environment, on top of a minimal inherited one (HOME, LOGNAME, PATH, SHELL, TERM, USER): a value
     * `env:NAME` is the worker's variable (so secrets stay out of the bundled module).
     */
    env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'an environment variable name'), envValue).default({}),
    /** Its working directory (the worker's), or `env:NAME`. */
    cwd: z.string().min(1).max(4096).optional(),
  });

  /** A server the worker reaches over streamable HTTP. */
  const http = z.strictObject({
    ...serverFields,
    /** The endpoint (`https://…/mcp`), or `env:NAME` for a worker variable holding it. */
    url: z.string().refine((u) => ENV_REF.test(u) || /^https?:\/\/[^\s]+$/.test(u), 'must be an http(s) URL or env:NAME'),
    /** Headers sent with every request (`Authorization`); a value `env:NAME` is the worker's variable. */
    headers: z.record(z.string().min(1), envValue).default({}),
  });
  return { toolConfig, stdio, http };
}
type ServerSchemas = ReturnType<typeof buildServerSchemas>;
let serverSchemas: ServerSchemas | undefined;
/** {@link buildServerSchemas}, once per evaluation of this module. */
const schemas = (): ServerSchemas => (serverSchemas ??= buildServerSchemas());

/** How Keel treats one of a server's tools: its risk tier and, optionally, the policy fields a native tool takes. */
export type McpToolConfig = z.input<ServerSchemas['toolConfig']>;

/** A server as its author writes it: stdio (`command`) or streamable HTTP (`url`). */
export type McpServerSpec = z.input<ServerSchemas['stdio']> | z.input<ServerSchemas['http']>;

/** A registered MCP server: its validated spec, as plain data (it is bundled into the workflow code). */
export type McpServerDefinition = (z.output<ServerSchemas['stdio']> | z.output<ServerSchemas['http']>) & { readonly kind: 'mcp-server' };

/** One tool a server listed, as the worker found it and the session records it. */
export interface McpToolListing {
  /** Keel's name for it: `<server>__<tool>`; also its activity type. */
  name: string;
  /** The server's name in Keel. */
  server: string;
  /** The server's name for it (what `tools/call` names). */
  tool: string;
  /** The server's description (the configuration may replace it). */
  description: string;
  /** Its input's JSON Schema as the server listed it (without `$schema`): what the model is shown. */
  inputSchema: ModelToolDefinition['input_schema'];
}

/** An MCP tool as a `Tool`: where it comes from, beside the usual policy. */
export interface McpTool extends Tool {
  mcp: {
    /** The server's name in Keel. */
    server: string;
    /** The server's name for the tool. */
    tool: string;
    /** Why its input is checked by the server only (a JSON Schema zod cannot express), if it is. */
    unchecked?: string;
  };
}

/**
 * Registers an MCP server after checking its shape and each configured tool against its tier's rules
 * (as `defineTool` does; an MCP tool has no undo, so a `write` must give `noCompensation`).
 * @throws ToolDefinitionError naming the server, and the tool and rule when it is a tool's.
 */
export function defineMcpServer(spec: McpServerSpec): McpServerDefinition {
  const name = typeof (spec as { name?: unknown }).name === 'string' ? (spec as { name: string }).name : '(unnamed)';
  const fail = (message: string): never => {
    throw new ToolDefinitionError(`MCP server '${name}': ${message}`);
  };
  const hasCommand = 'command' in spec && spec.command !== undefined;
  const hasUrl = 'url' in spec && spec.url !== undefined;
  if (hasCommand === hasUrl) fail('give either command (a process spoken to over stdio) or url (streamable HTTP)');
  const parsed = (hasCommand ? schemas().stdio : schemas().http).safeParse(spec);
  if (!parsed.success) return fail(describeIssues(parsed.error, '(server)'));
  for (const [tool, config] of Object.entries(parsed.data.tools)) {
    const keelName = mcpToolName(parsed.data.name, tool);
    if (!keelName) fail(`tool '${tool}': its Keel name ${parsed.data.name}${MCP_NAME_SEPARATOR}${tool} is longer than 64 characters (the Messages API's limit)`);
    if (config.risk === 'write' && !config.noCompensation) {
      fail(`tool '${tool}': an MCP tool has no undo, so a write tool must give noCompensation (why it needs none), or be configured irreversible`);
    }
    // The tier's rules, checked as for a native tool (the input's fields are known only once the server lists it).
    const { sensitive: _sensitive, ...rest } = config;
    defineTool({ ...toolSpecOf(rest), name: keelName!, description: 'checked when the server lists it', input: z.object({}), run: notInThisProcess });
  }
  return { ...parsed.data, kind: 'mcp-server' };
}

/** The variable an `env:NAME` configuration value names, or undefined for a literal value. */
export function mcpEnvRef(value: string): string | undefined {
  return ENV_REF.test(value) ? value.slice('env:'.length) : undefined;
}

/** True for a value made by `defineMcpServer`. */
export function isMcpServer(value: unknown): value is McpServerDefinition {
  return typeof value === 'object' && value !== null && (value as { kind?: unknown }).kind === 'mcp-server';
}

/**
 * Keel's name for a server's tool, `<server>__<tool>` with characters outside `[a-zA-Z0-9_-]` replaced by
 * `_`; undefined when it would be longer than 64 characters.
 */
export function mcpToolName(server: string, tool: string): string | undefined {
  const name = `${server}${MCP_NAME_SEPARATOR}${tool.replace(/[^a-zA-Z0-9_-]/g, '_')}`;
  return name.length <= 64 ? name : undefined;
}

/** The server a Keel tool name belongs to, when it has the `<server>__` form and the app declares that server. */
export function mcpServerOf(name: string, servers: ReadonlyMap<string, McpServerDefinition>): McpServerDefinition | undefined {
  const at = name.indexOf(MCP_NAME_SEPARATOR);
  return at > 0 ? servers.get(name.slice(0, at)) : undefined;
}

/**
 * A listed MCP tool as a `Tool`: the configured tier (irreversible without one), the configured or listed
 * description, and a zod input schema made from the listed JSON Schema. `run` is the worker's call to the
 * server; workflow code never runs a tool and passes none.
 * @throws ToolDefinitionError when the configuration breaks the tier's rules for this tool (a sensitive
 *   field its input lacks).
 */
export function mcpTool(server: McpServerDefinition, listing: McpToolListing, run: Tool['run'] = notInThisProcess): McpTool {
  const config = server.tools[listing.tool] ?? { risk: 'irreversible' as const };
  const input = inputSchemaOf(listing.inputSchema);
  const tool = defineTool({
    ...toolSpecOf(config),
    name: listing.name,
    description: config.description ?? (listing.description.trim() || `${listing.tool} (a tool of the MCP server ${server.name})`),
    input: input.schema,
    run,
  });
  return { ...tool, modelInputSchema: listing.inputSchema, mcp: { server: server.name, tool: listing.tool, ...(input.problem ? { unchecked: input.problem } : {}) } };
}

/** True for a tool made by `mcpTool`. */
export function isMcpTool(tool: Tool | undefined): tool is McpTool {
  return tool !== undefined && typeof (tool as Partial<McpTool>).mcp === 'object';
}

/**
 * The app with its MCP servers' listed tools added (an app without servers, or no listing, is returned
 * as is). A listing of a server the app no longer declares, or a name a native tool already has, is skipped.
 * @param run - the worker's call for each tool; workflow code passes none.
 */
export function withMcpTools(app: KeelApp, listings: readonly McpToolListing[] | undefined, run?: (listing: McpToolListing) => Tool['run']): KeelApp {
  if (!listings?.length || app.mcpServers.size === 0) return app;
  const tools = new Map(app.tools);
  for (const listing of listings) {
    const server = app.mcpServers.get(listing.server);
    if (!server || tools.has(listing.name)) continue;
    tools.set(listing.name, mcpTool(server, listing, run?.(listing)));
  }
  return { ...app, tools };
}

/** The `defineTool` fields of a tool's configuration (without the description, which `mcpTool` resolves). */
function toolSpecOf(config: McpToolConfig): Omit<ToolSpec, 'name' | 'description' | 'input' | 'run'> {
  const { description: _description, ...rest } = config;
  return rest as Omit<ToolSpec, 'name' | 'description' | 'input' | 'run'>;
}

/**
 * The zod schema an MCP tool's input is checked with. `z.fromJSONSchema` (with a registry of its own, so
 * `$id`s of different servers never meet) when it can express the schema and yields an object schema;
 * otherwise any object passes here, and the reason is kept so the worker can say so at start.
 */
function inputSchemaOf(json: McpToolListing['inputSchema']): { schema: z.ZodObject; problem?: string } {
  // Any object, with the listed properties as its (unchecked) fields, so `sensitive` and blocked patterns can name them.
  const anyObject = () => {
    const properties = typeof json.properties === 'object' && json.properties !== null ? Object.keys(json.properties) : [];
    return z.looseObject(Object.fromEntries(properties.map((p) => [p, z.unknown().optional()])));
  };
  let converted: z.ZodType;
  try {
    converted = z.fromJSONSchema(json as Parameters<typeof z.fromJSONSchema>[0], { registry: z.registry() });
  } catch (err) {
    return { schema: anyObject(), problem: err instanceof Error ? err.message : String(err) };
  }
  if (converted instanceof z.ZodObject) return { schema: converted };
  // A top-level union or intersection: an object schema that defers to it, so validation stays whole.
  return {
    schema: anyObject().superRefine((value, ctx) => {
      const result = converted.safeParse(value);
      if (!result.success) for (const issue of result.error.issues) ctx.addIssue({ code: 'custom', message: issue.message, path: issue.path });
    }),
  };
}

function notInThisProcess(): Promise<never> {
  return Promise.reject(new Error('an MCP tool runs only in a Keel worker that connected to its server'));
}
