/**
 * The tool contract, the risk tiers and MCP servers' tools. Sandbox-safe: workflows read tool schemas and
 * policies; only the worker runs tools. Keel ships no tools: a team's own module defines them (see `src/app/`).
 */
export * from './define.js';
export * from './policy.js';
export * from './mcp.js';
