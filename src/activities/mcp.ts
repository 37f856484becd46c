/**
 * MCP servers on the worker's side, through `@modelcontextprotocol/sdk`. When the worker starts it
 * connects to each server its tools module declares (stdio: spawns the command; streamable HTTP: the
 * URL), lists the server's tools and turns each into a `Tool` whose `run` calls it (`tools/call`), so the
 * worker registers them as tool activities like any other: one per tool, named `<server>__<tool>`, behind
 * the same validation, breaker, rate limit, result cap and log line. The call carries its idempotency key
 * in the request's `_meta` (`keel/idempotencyKey`), so a server that applies side effects can deduplicate;
 * the server's progress notifications become `ctx.progress`. A result with `isError` is a `ToolError` the
 * model reads, never retried, as is a JSON-RPC error that says the server refused the request (invalid
 * params, unknown method); a timeout, a lost connection or an internal error is a failure: retried as the
 * tier allows, counted by the breaker, and an unknown outcome for a side-effecting tier. The model is shown
 * the result's `structuredContent` when it has one, else its text (the JSON a text holds, as JSON).
 *
 * It also makes `listMcpTools`, the local activity a session asks once, at its start, which MCP tools the
 * app has (`src/workflows/mcp.ts`). The list is the one this worker made at start-up: restart workers to
 * pick up tools a server added since.
 */
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import { Readable } from 'node:stream';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ErrorCode, McpError } from '@modelcontextprotocol/sdk/types.js';
import { AppDefinitionError, checkAppReferences, type KeelApp } from '../app/registry.js';
import {
  MCP_IDEMPOTENCY_META_KEY,
  ToolDefinitionError,
  ToolError,
  isMcpTool,
  mcpEnvRef,
  mcpToolName,
  toMs,
  withMcpTools,
  type McpServerDefinition,
  type McpToolListing,
  type ResolvedToolPolicy,
  type ToolContext,
} from '../tools/index.js';
import type { ListMcpToolsInput } from '../workflows/mcp.js';

/** How long the worker waits for a server to start and answer `initialize`, and to list its tools (ms). */
const CONNECT_TIMEOUT_MS = 20_000;
/** Tools listed per server at most (pages are followed until then). */
const MAX_TOOLS_PER_SERVER = 500;
/** JSON-RPC errors by which the server says it refused the request: nothing happened, the model can act. */
const REFUSALS: readonly number[] = [ErrorCode.InvalidParams, ErrorCode.MethodNotFound, ErrorCode.InvalidRequest, ErrorCode.ParseError];

const KEEL_VERSION = (createRequire(import.meta.url)('../../package.json') as { version: string }).version;

/** The pino-style logger the worker hands in (`logger.warn(fields, message)`). */
export interface McpLogger {
  info(fields: Record<string, unknown>, message: string): void;
  warn(fields: Record<string, unknown>, message: string): void;
}

/** What `connectMcpServers` gives the worker. */
export interface McpRuntime {
  /** The app with every listed MCP tool added (each one's `run` calls its server). */
  app: KeelApp;
  /** The tools listed, as sessions learn them. */
  listings: McpToolListing[];
  /** `listMcpTools`, registered when the app declares MCP servers. */
  activities: Record<string, (input: ListMcpToolsInput) => Promise<McpToolListing[]>>;
  /** Closes every connection (a stdio server's process ends with it). */
  close(): Promise<void>;
}

/**
 * Connects to the app's MCP servers, lists their tools and adds them to the app (see the file header).
 * An app without servers is returned as is, with nothing to close.
 * @param source - names the tools module in errors.
 * @throws AppDefinitionError when an `env:NAME` the servers use is unset, or an agent, blocked pattern or
 *   access policy names an MCP tool no server listed; an Error naming the server when one cannot be reached.
 */
export async function connectMcpServers(
  app: KeelApp,
  opts: { env: Readonly<Record<string, string | undefined>>; logger: McpLogger; source?: string },
): Promise<McpRuntime> {
  if (app.mcpServers.size === 0) return { app, listings: [], activities: {}, close: async () => undefined };
  const source = opts.source ?? 'the tools module';
  const connections = new Map([...app.mcpServers.values()].map((server) => [server.name, new McpConnection(server, opts.env, opts.logger)]));
  const close = async () => {
    await Promise.allSettled([...connections.values()].map((c) => c.close()));
  };
  try {
    const listed = await Promise.all([...connections.values()].map((c) => listServer(c, app, opts.logger)));
    const listings = listed.flat();
    let merged: KeelApp;
    try {
      merged = withMcpTools(app, listings, (listing) => (input, ctx) => callMcpTool(connections.get(listing.server)!, listing, policyOf(merged, listing), input, ctx));
    } catch (err) {
      if (err instanceof ToolDefinitionError) throw new AppDefinitionError(`${source}: ${err.message}`);
      throw err;
    }
    const warnings = checkAppReferences(merged, source);
    for (const tool of merged.tools.values()) {
      if (isMcpTool(tool) && tool.mcp.unchecked) {
        opts.logger.warn({ tool: tool.name, reason: tool.mcp.unchecked }, 'MCP tool: its input schema is one Keel cannot check, so only the server checks it');
      }
    }
    opts.logger.info({ servers: [...connections.keys()], tools: listings.map((l) => l.name) }, 'MCP servers connected');
    return {
      app: { ...merged, warnings },
      listings,
      activities: {
        async listMcpTools({ servers }: ListMcpToolsInput): Promise<McpToolListing[]> {
          return listings.filter((l) => servers.includes(l.server));
        },
      },
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}

function policyOf(app: KeelApp, listing: McpToolListing): ResolvedToolPolicy {
  return app.tools.get(listing.name)!.policy;
}

/** Lists a server's tools as listings with Keel names; tools that cannot be named, or clash, are left out with a warning. */
async function listServer(connection: McpConnection, app: KeelApp, logger: McpLogger): Promise<McpToolListing[]> {
  const server = connection.server;
  const client = await connection.connected();
  const tools: Awaited<ReturnType<Client['listTools']>>['tools'] = [];
  let cursor: string | undefined;
  do {
    const page = await client.listTools(cursor ? { cursor } : undefined, { timeout: CONNECT_TIMEOUT_MS });
    tools.push(...page.tools);
    cursor = page.nextCursor;
  } while (cursor && tools.length < MAX_TOOLS_PER_SERVER);
  const listings: McpToolListing[] = [];
  const leaveOut = (tool: string, reason: string) => logger.warn({ mcpServer: server.name, mcpTool: tool }, `MCP tool left out: ${reason}`);
  for (const tool of tools.slice(0, MAX_TOOLS_PER_SERVER)) {
    const name = mcpToolName(server.name, tool.name);
    if (!name) {
      leaveOut(tool.name, `its Keel name would be longer than 64 characters`);
      continue;
    }
    if (app.tools.has(name)) {
      leaveOut(tool.name, `the tools module has a tool named ${name}`);
      continue;
    }
    if (listings.some((l) => l.name === name)) {
      leaveOut(tool.name, `another tool of the server is also named ${name} in Keel`);
      continue;
    }
    const { $schema: _schema, ...schema } = tool.inputSchema as Record<string, unknown>;
    listings.push({ name, server: server.name, tool: tool.name, description: tool.description ?? '', inputSchema: { ...schema, type: 'object' } });
  }
  for (const configured of Object.keys(server.tools)) {
    if (!tools.some((t) => t.name === configured)) {
      logger.warn({ mcpServer: server.name, mcpTool: configured }, 'MCP server: its configuration names a tool the server does not list');
    }
  }
  return listings;
}

/** Calls one MCP tool: see the file header for how results and failures map. */
async function callMcpTool(connection: McpConnection, listing: McpToolListing, policy: ResolvedToolPolicy, input: unknown, ctx: ToolContext): Promise<unknown> {
  const client = await connection.connected();
  let result: Awaited<ReturnType<Client['callTool']>>;
  try {
    result = await client.callTool(
      { name: listing.tool, arguments: input as Record<string, unknown>, _meta: { [MCP_IDEMPOTENCY_META_KEY]: ctx.idempotencyKey } },
      undefined,
      {
        signal: ctx.signal,
        // A little under the tool's start-to-close timeout, so the attempt fails here with the server's
        // timeout (and the request is cancelled at the server) before Temporal's timer gives up on it.
        timeout: requestTimeoutMs(toMs(policy.startToCloseTimeout)),
        onprogress: (p) => ctx.progress(p.message ?? `${p.progress}${p.total === undefined ? '' : ` of ${p.total}`}`),
      },
    );
  } catch (err) {
    if (err instanceof McpError && REFUSALS.includes(err.code)) throw new ToolError(`${listing.tool} was refused by the MCP server ${listing.server}: ${err.message}`);
    // The server lost the HTTP session (it restarted): the next attempt starts a new one.
    if (err instanceof StreamableHTTPError && err.code === 404) connection.reset();
    throw err;
  }
  if ('toolResult' in result) return result.toolResult;
  if (result.isError) throw new ToolError(textOf(result.content) || `${listing.tool} reported an error without a message`);
  if (result.structuredContent !== undefined) return result.structuredContent;
  const content = result.content ?? [];
  // Images, resources and links are shown as the blocks themselves; text as its text, or the JSON it holds
  // (servers often answer JSON as text: shown once, not as an escaped string).
  if (!content.every((b) => b.type === 'text')) return content;
  const text = textOf(content);
  if (/^\s*[[{]/.test(text)) {
    try {
      return JSON.parse(text) as unknown;
    } catch {
      return text;
    }
  }
  return text;
}

/** The MCP request timeout for a tool's start-to-close timeout: a tenth less, at most a second less. */
function requestTimeoutMs(startToCloseMs: number): number {
  return startToCloseMs - Math.min(1000, startToCloseMs / 10);
}

function textOf(content: ReadonlyArray<{ type: string; text?: unknown }> | undefined): string {
  return (content ?? []).map((b) => (b.type === 'text' && typeof b.text === 'string' ? b.text : JSON.stringify(b))).join('\n');
}

/**
 * One server's client, connected on first use and again after the connection is lost (a stdio server
 * that exited is spawned anew), shared by every call: the SDK multiplexes concurrent requests.
 */
class McpConnection {
  private client: Promise<Client> | undefined;
  private generation = 0;
  private closing = false;

  constructor(
    readonly server: McpServerDefinition,
    private readonly env: Readonly<Record<string, string | undefined>>,
    private readonly logger: McpLogger,
  ) {}

  /** The connected client, connecting when there is none. */
  connected(): Promise<Client> {
    if (this.closing) return Promise.reject(new Error(`MCP server '${this.server.name}': the worker is shutting down`));
    if (!this.client) {
      const generation = ++this.generation;
      const attempt = this.connect(generation);
      this.client = attempt;
      attempt.catch(() => {
        if (this.generation === generation) this.client = undefined;
      });
    }
    return this.client;
  }

  /** Drops the current client (closing it), so the next call connects afresh. */
  reset(): void {
    const current = this.client;
    this.client = undefined;
    this.generation++;
    void current?.then((c) => c.close()).catch(() => undefined);
  }

  /** Closes the connection for good. */
  async close(): Promise<void> {
    this.closing = true;
    const current = this.client;
    this.client = undefined;
    const client = await current?.catch(() => undefined);
    await client?.close();
  }

  private async connect(generation: number): Promise<Client> {
    const server = this.server;
    const client = new Client({ name: 'keel', version: KEEL_VERSION });
    let up = false;
    client.onclose = () => {
      if (this.generation === generation) this.client = undefined;
      if (up && !this.closing) this.logger.warn({ mcpServer: server.name }, 'MCP server connection closed; the next call reconnects');
    };
    client.onerror = (err) => this.logger.warn({ mcpServer: server.name, err: err.message }, 'MCP server connection error');
    try {
      await client.connect(this.transport(), { timeout: CONNECT_TIMEOUT_MS });
      up = true;
    } catch (err) {
      await client.close().catch(() => undefined);
      if (err instanceof AppDefinitionError) throw err;
      throw new Error(`MCP server '${server.name}': cannot connect (${'command' in server ? `command ${server.command}` : 'its url'}): ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    return client;
  }

  private transport(): StdioClientTransport | StreamableHTTPClientTransport {
    const server = this.server;
    const value = (v: string, where: string) => resolveEnvRef(v, this.env, `MCP server '${server.name}': ${where}`);
    if ('command' in server) {
      const transport = new StdioClientTransport({
        command: value(server.command, 'command'),
        args: server.args.map((a, i) => value(a, `args[${i}]`)),
        env: Object.fromEntries(Object.entries(server.env).map(([k, v]) => [k, value(v, `env.${k}`)])),
        ...(server.cwd ? { cwd: value(server.cwd, 'cwd') } : {}),
        stderr: 'pipe',
      });
      // What the server writes to stderr goes to the worker's log, a line at a time.
      if (transport.stderr instanceof Readable) {
        createInterface({ input: transport.stderr }).on('line', (line) => this.logger.info({ mcpServer: server.name, line }, 'MCP server stderr'));
      }
      return transport;
    }
    const headers = Object.fromEntries(Object.entries(server.headers).map(([k, v]) => [k, value(v, `headers.${k}`)]));
    return new StreamableHTTPClientTransport(new URL(value(server.url, 'url')), { requestInit: { headers } });
  }
}

/** A configured value, or the worker variable an `env:NAME` value names. */
function resolveEnvRef(value: string, env: Readonly<Record<string, string | undefined>>, where: string): string {
  const name = mcpEnvRef(value);
  if (name === undefined) return value;
  const resolved = env[name];
  if (resolved === undefined || resolved === '') throw new AppDefinitionError(`${where} is env:${name}, which is not set on the worker`);
  return resolved;
}
