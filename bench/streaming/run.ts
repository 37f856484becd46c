/**
 * Streaming benchmark: how long does a piece of the model's text take from the model to the user? For
 * each stream bus (memory: worker and gateway in one process sharing the bus; sqlite: two bus instances on
 * one file, as a worker and a gateway on one machine would have; postgres: two instances on the machine's
 * PostgreSQL, LISTEN/NOTIFY, as workers and gateways anywhere would), it starts a dev server, the scripted
 * model, one Keel worker and a `keel serve` gateway in this process, then runs sessions one after another
 * through the gateway's HTTP API only: start, open the SSE stream, read to the end. The scripted model
 * streams each answer in 24-character chunks `--chunk-ms` apart and notes when it wrote each chunk; the
 * client notes when each `text_delta` arrived. Delay = arrival − the model writing that chunk (same
 * clock, same machine), split at the worker's publish time into model → worker and worker → client.
 *
 * Human progress goes to stderr; the table (or, with `--json`, one JSON document) to stdout. Run:
 * `npx tsx bench/streaming/run.ts [--sessions N] [--chunk-ms M] [--json]` (`npm run bench:streaming`).
 */
import path from 'node:path';
import pg from 'pg';
import { startGateway } from '../../src/gateway/server.js';
import { tokenAuthenticator } from '../../src/gateway/auth.js';
import { createMemoryStreamBus, openSqliteStreamBus, type StreamBus } from '../../src/stream/index.js';
import { openPostgresStreamBus } from '../../src/stream/postgres.js';
import type { Scenario, StreamChunkNote } from '../../src/testing/scripted/index.js';
import { machineFacts, machineLine, parseBenchArgs, percentile, progress, renderTable, round, startBenchStack } from '../support.js';

const args = parseBenchArgs('bench/streaming', 'npx tsx bench/streaming/run.ts [--sessions N] [--chunk-ms M] [--json]', {
  sessions: { def: 20, min: 1, max: 1000 },
  'chunk-ms': { def: 20, min: 0, max: 1000 },
});
const POSTGRES_URL = process.env.KEEL_BENCH_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const TOKEN = 'bench-streaming-token-0123456789';
const ANSWER =
  'Your order ord_1001 was delivered on time and the keyboard is covered by the 30-day return window. ' +
  'I have checked the refund policy for damaged items: a full refund applies, and you do not need to send it back. ' +
  'The refund of 129.00 USD will reach your original payment method within five business days. ' +
  'If anything else about this order is not right, reply here and I will pick it up from where we left off.';
const SCENARIO: Scenario = {
  name: 'stream-bench',
  description: 'One streamed answer, chunks spaced by --chunk-ms; the pause before it lets the client subscribe first.',
  turns: [{ content: [{ type: 'text', text: ANSWER }], stop_reason: 'end_turn', latency_ms: 400, stream_chunk_ms: args['chunk-ms'] }],
};

interface Row {
  bus: string;
  sessions: number;
  chunks: number;
  lost: number;
  p50: number;
  p95: number;
  max: number;
  modelToWorkerP50: number;
  workerToClientP50: number;
  workerToClientP95: number;
}

/** Runs the sessions on one bus kind; `buses` makes the worker's and the gateway's bus. */
async function measure(kind: string, buses: (tmp: string) => Promise<{ worker: StreamBus; gateway: StreamBus }>): Promise<Row> {
  const notes: StreamChunkNote[] = [];
  const stack = await startBenchStack({ scenarios: [SCENARIO], taskQueuePrefix: `bench-streaming-${kind}`, onStreamChunk: (n) => notes.push(n), streamBuses: buses });
  const gatewayBus = stack.streamBuses!.gateway;
  const gateway = await startGateway({ client: stack.client, auth: tokenAuthenticator({ tokens: [{ token: TOKEN, user: 'bench', roles: [] }] }), bus: gatewayBus, port: 0 });
  const delays: number[] = [];
  const toWorker: number[] = [];
  const toClient: number[] = [];
  let chunks = 0;
  let lost = 0;
  try {
    await stack.keelWorker.worker.runUntil(async () => {
      for (let i = 0; i < args.sessions; i++) {
        const start = await fetch(`${gateway.url}/v1/sessions`, {
          method: 'POST',
          headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
          body: JSON.stringify({ prompt: `stream bench ${i}`, model: 'scripted/stream-bench' }),
        });
        const { sessionId } = (await start.json()) as { sessionId: string };
        const arrivals: Array<{ at: number; published: number; text: string }> = [];
        const res = await fetch(`${gateway.url}/v1/sessions/${sessionId}/stream`, { headers: { authorization: `Bearer ${TOKEN}` } });
        const decoder = new TextDecoder();
        let buffer = '';
        for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
          const now = Date.now();
          buffer += decoder.decode(chunk, { stream: true });
          let cut: number;
          while ((cut = buffer.indexOf('\n\n')) >= 0) {
            const frame = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            if (!/^event: text_delta$/m.test(frame)) continue;
            const data = JSON.parse(/^data: (.*)$/m.exec(frame)![1]!) as { text: string; at: number };
            arrivals.push({ at: now, published: data.at, text: data.text });
          }
        }
        const written = notes.filter((n) => n.session === sessionId && n.kind === 'text');
        chunks += written.length;
        lost += Math.max(0, written.length - arrivals.length);
        // Chunks arrive in order; pair the k-th written with the k-th received, and check the text matches.
        for (let k = 0; k < Math.min(written.length, arrivals.length); k++) {
          const w = written[k]!;
          const a = arrivals[k]!;
          if (w.text !== a.text) throw new Error(`session ${sessionId}: chunk ${k} was "${w.text}" at the model but "${a.text}" at the client`);
          delays.push(a.at - w.at);
          toWorker.push(a.published - w.at);
          toClient.push(a.at - a.published);
        }
        if (arrivals.map((a) => a.text).join('') !== ANSWER) throw new Error(`session ${sessionId}: the streamed text is not the answer`);
        progress(`${kind}: session ${i + 1}/${args.sessions}: ${arrivals.length} chunks, median delay ${round(percentile(delays, 50), 1)} ms so far`);
      }
    });
  } finally {
    await gateway.close();
    await stack.close();
  }
  return {
    bus: kind,
    sessions: args.sessions,
    chunks,
    lost,
    p50: round(percentile(delays, 50), 1),
    p95: round(percentile(delays, 95), 1),
    max: round(Math.max(...delays), 1),
    modelToWorkerP50: round(percentile(toWorker, 50), 1),
    workerToClientP50: round(percentile(toClient, 50), 1),
    workerToClientP95: round(percentile(toClient, 95), 1),
  };
}

async function postgresReachable(): Promise<boolean> {
  const c = new pg.Client({ connectionString: POSTGRES_URL, connectionTimeoutMillis: 2000 });
  try {
    await c.connect();
    return true;
  } catch {
    return false;
  } finally {
    await c.end().catch(() => {});
  }
}

const rows: Row[] = [];
rows.push(
  await measure('memory', async () => {
    const bus = createMemoryStreamBus();
    return { worker: bus, gateway: bus };
  }),
);
rows.push(
  await measure('sqlite', async (tmp) => ({
    worker: openSqliteStreamBus(path.join(tmp, 'stream.sqlite')),
    gateway: openSqliteStreamBus(path.join(tmp, 'stream.sqlite')),
  })),
);
if (await postgresReachable()) {
  rows.push(await measure('postgres', async () => ({ worker: openPostgresStreamBus(POSTGRES_URL), gateway: openPostgresStreamBus(POSTGRES_URL) })));
} else {
  progress(`postgres: ${POSTGRES_URL} not reachable, skipped (KEEL_BENCH_POSTGRES_URL sets another)`);
}

const machine = machineFacts();
if (args.json) {
  process.stdout.write(`${JSON.stringify({ machine, sessions: args.sessions, chunkMs: args['chunk-ms'], rows }, null, 2)}\n`);
} else {
  process.stdout.write(
    `Streaming delay: scripted model writes a chunk → the client reads its SSE text_delta through keel serve (ms)\n` +
      `${machineLine(machine)} · ${args.sessions} sessions per bus, ${ANSWER.length}-character answer in 24-character chunks ${args['chunk-ms']} ms apart\n\n` +
      renderTable(
        ['bus', 'chunks', 'lost', 'p50', 'p95', 'max', 'model→worker p50', 'worker→client p50', 'worker→client p95'],
        rows.map((r) => [r.bus, String(r.chunks), String(r.lost), String(r.p50), String(r.p95), String(r.max), String(r.modelToWorkerP50), String(r.workerToClientP50), String(r.workerToClientP95)]),
      ) +
      '\n',
  );
}
