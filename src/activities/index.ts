/** The activities a Keel worker registers: `callModel`, one activity per tool (MCP servers' tools too) and their helpers. */
export { createModelActivities, classifyModelError, retryAfterMs, type ModelActivityOptions } from './model.js';
export { createToolActivities, INLINE_RESULT_BYTES } from './tools.js';
export { createAvailabilityActivities, guarded } from './resilience.js';
export { createAuditActivities } from './audit.js';
export { connectMcpServers, type McpLogger, type McpRuntime } from './mcp.js';
