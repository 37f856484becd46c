/**
 * The one workload every engine runs, and the clock that times it the same way for all of them.
 *
 * A session is N steps, each one model turn that asks for one read tool (`get_order` and
 * `lookup_customer`, alternating), then a final `end_turn` turn. The model is Keel's scripted Messages API
 * server and the tools read the support desk's demo services; both answer at once. Keel calls them from
 * its own activities; the peers call them through {@link StepIO}: the same `messages.stream` request
 * (system prompt, the two tools' definitions, `max_tokens`, metadata) with `@anthropic-ai/sdk`
 * (`maxRetries: 0`), and the same `GET` to the demo services. So every engine does the same I/O, and each
 * turn's `expect` in the script checks that the previous tool result reached the model intact.
 *
 * {@link ModelRequestClock} times steps from outside every engine: it records when each `POST /v1/messages`
 * reaches the model server (Node's `http.server.request.start` diagnostics channel; the server runs in this
 * process). With one session running at a time, the gap between two consecutive model requests is one
 * step: model call, tool call and whatever the engine does between them.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import type { IncomingMessage } from 'node:http';
import Anthropic from '@anthropic-ai/sdk';
import type { Scenario } from '../../src/testing/scripted/index.js';
import { readStepsScenario, STEP_TOOLS } from '../support.js';
import type { LoopResult, ModelReply } from './loop.js';

/** The read tools the steps alternate between: inputs the demo services know, the path each reads, and a string its result contains. */
export { STEP_TOOLS };

/** Names of the tools a session offers the model. */
export const TOOL_NAMES = STEP_TOOLS.map((t) => t.name);

/** The user's prompt of every session, on every engine. */
export const PROMPT = 'Benchmark: look up the order and the customer, step by step.';

/** `max_tokens` of every model call. */
export const MAX_TOKENS = 1024;

/** The scripted session: N tool turns alternating the two read tools, then one `end_turn` turn. */
export function peerScenario(steps: number): Scenario {
  return readStepsScenario(steps, `bench-peers-${steps}`, `${steps} read-tool steps, then an answer (peers benchmark)`);
}

/** Where the peers' steps go, and what they send. */
export interface StepTarget {
  /** The scripted model server's base URL. */
  modelUrl: string;
  /** The demo services' base URL. */
  demoUrl: string;
  /** `scripted/<scenario name>`. */
  model: string;
  /** Keel's default system prompt (what Keel sends). */
  system: string;
  /** The two tools' model-facing definitions, made by Keel's `toModelTool` from the support desk's tools. */
  tools: Anthropic.Tool[];
}

/** The two plain (non-durable) calls of a step; each engine wraps them in its own durable primitive. */
export interface StepIO {
  /** One model turn for `sessionId`, streamed as Keel's `callModel` does; returns plain JSON. */
  callModel(sessionId: string, messages: Anthropic.MessageParam[]): Promise<ModelReply>;
  /** One read tool call: `GET` on the demo services; the JSON body, as text, is the tool result. */
  callTool(use: Anthropic.ToolUseBlock): Promise<Anthropic.ToolResultBlockParam>;
}

/** Makes the step I/O the peers share: one Anthropic client (no SDK retries: the engine owns retries) and `fetch`. */
export function createStepIO(target: StepTarget): StepIO {
  const anthropic = new Anthropic({ apiKey: 'scripted', baseURL: target.modelUrl, maxRetries: 0, timeout: 120_000 });
  return {
    async callModel(sessionId, messages) {
      const reply = await anthropic.messages
        .stream({
          model: target.model,
          max_tokens: MAX_TOKENS,
          system: target.system,
          messages,
          tools: target.tools,
          metadata: { user_id: sessionId },
        })
        .finalMessage();
      // Plain data, as Keel's callModel returns it: the stream's message carries non-enumerable helpers.
      return { content: JSON.parse(JSON.stringify(reply.content)) as Anthropic.ContentBlock[], stopReason: reply.stop_reason ?? 'end_turn' };
    },
    async callTool(use) {
      const input = use.input as Record<string, string | undefined>;
      const path =
        use.name === 'get_order'
          ? `/orders/${encodeURIComponent(input.order_id ?? '')}`
          : use.name === 'lookup_customer'
            ? `/customers/${encodeURIComponent(input.customer_id ?? '')}`
            : undefined;
      if (!path) return { type: 'tool_result', tool_use_id: use.id, is_error: true, content: `unknown tool ${use.name}` };
      const res = await fetch(new URL(path, target.demoUrl), { headers: { accept: 'application/json' } });
      const text = await res.text();
      if (!res.ok) throw new Error(`GET ${path} failed (${res.status}): ${text.slice(0, 200)}`);
      return { type: 'tool_result', tool_use_id: use.id, content: JSON.stringify(JSON.parse(text)) };
    },
  };
}

/** Throws unless a session ran the script to its end: N tool calls, N + 1 model calls, `end_turn`. */
export function checkSession(engine: string, sessionId: string, steps: number, r: LoopResult): void {
  if (r.stopReason !== 'end_turn' || r.turns !== steps + 1 || r.toolCalls !== steps) {
    throw new Error(`${engine} session ${sessionId} ended with ${r.stopReason} after ${r.turns} turns and ${r.toolCalls} tool calls; expected end_turn after ${steps + 1} turns and ${steps} tool calls`);
  }
}

/**
 * Records when each `POST /v1/messages` reaches the scripted model server (in this process). `take()`
 * returns the times since the last `take()` and starts afresh.
 */
export class ModelRequestClock {
  private times: number[] = [];
  private readonly onStart = (message: unknown): void => {
    const req = (message as { request: IncomingMessage }).request;
    if (req.method === 'POST' && req.url === '/v1/messages' && req.socket.localPort === this.port) this.times.push(performance.now());
  };

  constructor(private readonly port: number) {
    subscribe('http.server.request.start', this.onStart);
  }

  /** The arrival times (ms, `performance.now()`) recorded since the last call. */
  take(): number[] {
    const t = this.times;
    this.times = [];
    return t;
  }

  /** Stops recording. */
  close(): void {
    unsubscribe('http.server.request.start', this.onStart);
  }
}
