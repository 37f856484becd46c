/**
 * How a session learns its MCP servers' tools. They exist only at run time (the worker lists each server
 * when it starts), so a session asks once, when it starts, with the local activity `listMcpTools`; the
 * answer is recorded in history (replay reads it from there) and kept in the session's state, which
 * continue-as-new carries over. A session of an app that declares no MCP server schedules nothing here, so
 * its commands are exactly those of a session before MCP tools existed.
 */
import { patched, proxyLocalActivities } from '@temporalio/workflow';
import type { KeelApp } from '../app/registry.js';
import type { McpToolListing } from '../tools/mcp.js';

/** Input of the `listMcpTools` local activity: the servers the session's app declares. */
export interface ListMcpToolsInput {
  servers: string[];
}

/** The activity a worker with MCP servers registers (`src/activities/mcp.ts`). */
export interface McpActivities {
  /** The tools the worker listed at start-up for these servers, by Keel name. */
  listMcpTools(input: ListMcpToolsInput): Promise<McpToolListing[]>;
}

/**
 * The MCP tools the app's servers offer, as the worker running this task listed them; undefined for an
 * app without MCP servers (and for a session begun before this code, so its history replays unchanged).
 */
export async function learnMcpTools(app: KeelApp): Promise<McpToolListing[] | undefined> {
  if (app.mcpServers.size === 0 || !patched('keel-mcp-tools')) return undefined;
  const { listMcpTools } = proxyLocalActivities<McpActivities>({
    startToCloseTimeout: '10s',
    retry: { maximumAttempts: 5, initialInterval: '200ms', backoffCoefficient: 2 },
    summary: 'list MCP tools',
  });
  return listMcpTools({ servers: [...app.mcpServers.keys()] });
}
