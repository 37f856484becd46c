/**
 * Model tiering: which model answers a model call of an agent session. An agent (or a session) may name a
 * cheaper `routineModel` for routine calls. The rule is deterministic, decided in workflow code from what
 * is in history:
 *
 * - a call is **routine** when every tool result it is about to read came from a `read` tool that
 *   succeeded: the model is between lookups, gathering facts;
 * - the first call of each user message (reading what the person asked), every call after a side effect
 *   (`write` and above), an error, a refusal, an unknown outcome or an unrun call, and a budget's last
 *   turn use the main model;
 * - a routine reply that asks for anything but a known `read` tool is set aside (its tokens still count)
 *   and the main model answers that turn instead: the cheaper model never chooses a side effect.
 *
 * Sandbox-safe and pure.
 */
import type { Tool } from '../tools/index.js';
import type { ContentBlock, ToolCallRecord, ToolUseBlock } from './types.js';

/** What one tool call of the previous model turn came to, as the next call's model is chosen from it. */
export interface TurnToolOutcome {
  /** The tool's name as the model asked for it. */
  tool: string;
  /** The call's outcome; `skipped` when it never ran (the tool-call budget was spent). */
  outcome: ToolCallRecord['outcome'] | 'skipped';
}

/**
 * True when the next model call is routine: it follows tool calls (not a user message) and every one of
 * them was a `read` tool of this session that succeeded.
 */
export function isRoutineTurn(previous: readonly TurnToolOutcome[], tools: ReadonlyMap<string, Tool>): boolean {
  return previous.length > 0 && previous.every((c) => c.outcome === 'ok' && tools.get(c.tool)?.risk === 'read');
}

/**
 * The tools a routine reply asks for that only the main model may choose: every one that is not a `read`
 * tool of this session (unknown tools included). Empty when the reply may stand.
 */
export function sideEffectsAsked(content: readonly ContentBlock[], tools: ReadonlyMap<string, Tool>): string[] {
  return content
    .filter((b): b is ToolUseBlock => b.type === 'tool_use')
    .map((b) => b.name)
    .filter((name) => tools.get(name)?.risk !== 'read');
}
