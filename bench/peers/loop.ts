/**
 * The agent loop every engine but Keel and LangGraph runs, as one function over two calls: ask the model,
 * run the tool it asked for, repeat until it answers without a tool. Each engine passes its own durable
 * wrapper of the two calls (a Temporal activity or local activity, a Restate `ctx.run`, a DBOS step), so
 * the loop itself is the same code everywhere. LangGraph expresses the same loop as a graph (two nodes and
 * a conditional edge), and Keel runs its own `agentSession` workflow.
 *
 * This file is imported by Temporal workflow code: it must stay sandbox-safe (types only, no I/O).
 */
import type Anthropic from '@anthropic-ai/sdk';

/** What a model call returns to the loop: the reply's content and why it stopped (plain JSON). */
export interface ModelReply {
  content: Anthropic.ContentBlock[];
  stopReason: string;
}

/** The two calls of a step, as one engine makes them durable. */
export interface StepCalls {
  /** Sends the conversation so far to the model. */
  callModel(messages: Anthropic.MessageParam[]): Promise<ModelReply>;
  /** Runs the tool the model asked for and returns the result block for the next user message. */
  callTool(use: Anthropic.ToolUseBlock): Promise<Anthropic.ToolResultBlockParam>;
}

/** What a session ended with; the benchmark checks it against the script. */
export interface LoopResult {
  /** Model calls made, the final answer included. */
  turns: number;
  /** Tool calls made. */
  toolCalls: number;
  /** The last reply's stop reason (`end_turn` when the script ran to its end). */
  stopReason: string;
}

/** The session's input: the user's prompt and the most model calls it may make. */
export interface LoopInput {
  prompt: string;
  maxTurns: number;
}

/** Runs the loop to the model's final answer, or throws when it would exceed `maxTurns` model calls. */
export async function agentLoop(calls: StepCalls, input: LoopInput): Promise<LoopResult> {
  const messages: Anthropic.MessageParam[] = [{ role: 'user', content: input.prompt }];
  let toolCalls = 0;
  for (let turn = 1; turn <= input.maxTurns; turn++) {
    const reply = await calls.callModel(messages);
    messages.push({ role: 'assistant', content: reply.content });
    const uses = toolUses(reply);
    if (uses.length === 0) return { turns: turn, toolCalls, stopReason: reply.stopReason };
    const results: Anthropic.ToolResultBlockParam[] = [];
    for (const use of uses) results.push(await calls.callTool(use));
    toolCalls += uses.length;
    messages.push({ role: 'user', content: results });
  }
  throw new Error(`the model still asked for tools after ${input.maxTurns} turns`);
}

/** The tool calls a reply asks for (none when it stopped for any reason other than `tool_use`). */
export function toolUses(reply: ModelReply): Anthropic.ToolUseBlock[] {
  if (reply.stopReason !== 'tool_use') return [];
  return reply.content.filter((b): b is Anthropic.ToolUseBlock => b.type === 'tool_use');
}
