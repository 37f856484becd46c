/**
 * The tool registry: every tool a session can name, keyed by name. Sandbox-safe, so the workflow can
 * read schemas and policies from it; only the worker runs tools. Add your own tools here.
 */
import type { Tool } from './define.js';
import { supportTools } from './examples/support.js';

export * from './define.js';
export * from './policy.js';

/** All registered tools by name. */
export const toolRegistry: ReadonlyMap<string, Tool> = new Map(
  (supportTools as unknown as Tool[]).map((t) => [t.name, t]),
);
