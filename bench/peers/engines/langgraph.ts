/**
 * LangGraph.js with its SQLite checkpointer (`SqliteSaver` on a file of this run): the agent loop as a
 * graph of two nodes, `model` and `tool`, and a conditional edge (to `tool` while the model asks for one,
 * else to the end). Each node is a super-step, and the checkpointer saves a checkpoint after each; a
 * session is one `graph.invoke` on its own `thread_id`, in this process. Run twice: with LangGraph's
 * default `durability: "async"` (the checkpoint is written while the next step already runs) and with
 * `"sync"` (written before the next step starts).
 */
import path from 'node:path';
import type Anthropic from '@anthropic-ai/sdk';
import { Annotation, END, START, StateGraph } from '@langchain/langgraph';
import { SqliteSaver } from '@langchain/langgraph-checkpoint-sqlite';
import { toolUses, type ModelReply } from '../loop.js';
import { checkSession, PROMPT } from '../workload.js';
import { pkgVersion, SYNCHRONOUS } from '../versions.js';
import type { Engine, StartEngine } from './types.js';

/** The graph's state: the conversation (appended to), the last reply, and counters for the check. */
const SessionState = Annotation.Root({
  messages: Annotation<Anthropic.MessageParam[]>({ reducer: (a, b) => a.concat(b), default: () => [] }),
  last: Annotation<ModelReply | undefined>(),
  turns: Annotation<number>({ reducer: (a, b) => a + b, default: () => 0 }),
  toolCalls: Annotation<number>({ reducer: (a, b) => a + b, default: () => 0 }),
});

/** Starts LangGraph with the given checkpoint durability. */
export function startLangGraph(durability: 'async' | 'sync'): StartEngine {
  return async ({ io, steps, tmp }) => {
    const file = path.join(tmp, `langgraph-${durability}.sqlite`);
    const checkpointer = SqliteSaver.fromConnString(file);
    const graph = new StateGraph(SessionState)
      .addNode('model', async (state, config) => {
        const reply = await io.callModel(String(config.configurable?.thread_id), state.messages);
        return { messages: [{ role: 'assistant' as const, content: reply.content }], last: reply, turns: 1 };
      })
      .addNode('tool', async (state) => {
        const uses = toolUses(state.last!);
        const results: Anthropic.ToolResultBlockParam[] = [];
        for (const use of uses) results.push(await io.callTool(use));
        return { messages: [{ role: 'user' as const, content: results }], toolCalls: uses.length };
      })
      .addEdge(START, 'model')
      .addConditionalEdges('model', (state) => (toolUses(state.last!).length > 0 ? 'tool' : END), ['tool', END])
      .addEdge('tool', 'model')
      .compile({ checkpointer });
    // The saver creates its tables (and sets WAL) on first use; read its connection's settings after that.
    await checkpointer.getTuple({ configurable: { thread_id: 'bench-setup' } });
    const journal = String(checkpointer.db.pragma('journal_mode', { simple: true }));
    const sync = Number(checkpointer.db.pragma('synchronous', { simple: true }));
    const name = durability === 'async' ? 'langgraph' : 'langgraph-sync';
    const engine: Engine = {
      name,
      version: `@langchain/langgraph ${pkgVersion('@langchain/langgraph')}, checkpoint-sqlite ${pkgVersion('@langchain/langgraph-checkpoint-sqlite')}`,
      durability: [
        `SqliteSaver, one SQLite file in this process (journal_mode=${journal}, synchronous=${SYNCHRONOUS[sync] ?? sync})`,
        `durability: "${durability}"${durability === 'async' ? " (LangGraph's default): a step's checkpoint is written while the next step runs" : ': a step\'s checkpoint is written before the next step starts'}; a checkpoint after each node (2 per step), each with the whole state`,
      ],
      async runSession(sessionId) {
        const out = await graph.invoke(
          { messages: [{ role: 'user', content: PROMPT }] },
          { configurable: { thread_id: sessionId }, durability, recursionLimit: 2 * (steps + 1) + 5 },
        );
        checkSession(name, sessionId, steps, { turns: out.turns, toolCalls: out.toolCalls, stopReason: out.last?.stopReason ?? 'none' });
      },
      async close() {
        checkpointer.db.close();
      },
    };
    return engine;
  };
}
