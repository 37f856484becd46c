/**
 * The support desk's demo (`npm run demo`): everything a team's own app would do to try its agent on the
 * embedded defaults, through Keel's public API only. It starts the example's downstream services (orders,
 * payments, email outbox, KB on a SQLite ledger), then Keel's embedded stack with this example's tools
 * module (a Temporal dev server with its Web UI, the scripted model playing `scenarios/refund-demo.json`,
 * a worker), and runs one `support` session to its answer. The refund and the email are irreversible, so
 * the session waits for a person: the demo prints the `keel approve` / `keel reject` commands, or decides
 * itself: `--approve-as <id>` approves every call, `--reject-as <id>` rejects every call, and
 * `--approve-as <id> --reject <tool>` rejects that tool's calls and approves the rest. The scenario
 * answers whichever way it goes.
 *
 *   npm run demo [-- --approve-as alice [--reject send_email]] [--json]
 *   npm run demo -- --reject-as alice [--json]
 *   npm run demo -- --services-only [--port 4100] [--host 127.0.0.1]   the downstream services alone, for `keel dev --tools …`
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { KeelClient, followInTerminal, startEmbeddedStack, terminalOutput, type AutoDecision } from 'keel';
import { startDemoServices } from './services/index.js';
import { support } from './tools.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** This example's tools module, as `keel worker --tools` would take it. */
const TOOLS = path.join(HERE, 'tools.ts');

/** The demo's request, played by scenario `refund-demo`. */
export const DEMO_PROMPT =
  'Hi, this is Ada Lovelace (ada@example.com). My order ord_1001, the mechanical keyboard, arrived with a cracked case. Can I get a refund?';

/**
 * Who decides the session's approvals, from `--approve-as`, `--reject-as` and `--reject`: `auto` is
 * undefined when a person does (the demo prints the commands); `error` is a one-line usage error.
 */
function autoDecision(values: { 'approve-as'?: string; 'reject-as'?: string; reject?: string[] }): { auto?: AutoDecision; error?: string } {
  const { 'approve-as': approveAs, 'reject-as': rejectAs, reject = [] } = values;
  if (approveAs === '' || rejectAs === '') return { error: `--${approveAs === '' ? 'approve' : 'reject'}-as needs the id of the person deciding` };
  if (approveAs !== undefined && rejectAs !== undefined) {
    return { error: '--approve-as and --reject-as do not go together (to reject only some tools: --approve-as <id> --reject <tool>)' };
  }
  if (reject.length > 0 && approveAs === undefined) {
    const already = rejectAs !== undefined ? ' (--reject-as rejects every call already)' : '';
    return { error: `--reject ${reject[0]} needs --approve-as <id>: who rejects it and approves the other calls${already}` };
  }
  const unknown = reject.find((tool) => !support.tools?.includes(tool));
  if (unknown !== undefined) return { error: `--reject: the ${support.name} agent has no tool '${unknown}' (its tools: ${support.tools?.join(', ') ?? 'none'})` };
  if (rejectAs !== undefined) return { auto: { approver: { id: rejectAs, roles: ['approver'] }, reject: 'all' } };
  if (approveAs !== undefined) return { auto: { approver: { id: approveAs, roles: ['approver'] }, reject } };
  return {};
}

async function main(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        'approve-as': { type: 'string' },
        'reject-as': { type: 'string' },
        reject: { type: 'string', multiple: true },
        json: { type: 'boolean' },
        'services-only': { type: 'boolean' },
        port: { type: 'string' },
        host: { type: 'string' },
      },
      strict: true,
    }));
  } catch (err) {
    process.stderr.write(`demo: ${(err as Error).message.split('\n')[0]}\n`);
    return 2;
  }
  const { auto, error } = autoDecision(values);
  if (error !== undefined) {
    process.stderr.write(`demo: ${error}\n`);
    return 2;
  }
  const out = terminalOutput(values.json ?? false);
  const dataDir = path.resolve(process.env.KEEL_DATA_DIR ?? '.keel');
  const port = values.port === undefined ? 0 : Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    process.stderr.write(`demo: --port must be 0-65535 (got '${values.port}')\n`);
    return 2;
  }
  await mkdir(dataDir, { recursive: true });
  const services = await startDemoServices({ port, host: values.host ?? '127.0.0.1', dbFile: path.join(dataDir, 'demo-ledger.sqlite') });
  out.info(`demo services: ${services.url} (ledger at ${services.url}/ledger)`);
  if (values['services-only']) {
    out.info(`KEEL_DEMO_URL=${services.url} keel dev --tools ${path.relative(process.cwd(), TOOLS)}   (Ctrl-C stops the services)`);
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
    await services.close();
    return 0;
  }
  const stack = await startEmbeddedStack({
    tools: TOOLS,
    env: { ...process.env, KEEL_DEMO_URL: services.url },
    scenarioDirs: [path.join(HERE, 'scenarios')],
    log: (line) => out.info(line),
  });
  const client = await KeelClient.connect(stack.config);
  try {
    out.info(`\nRequest: ${DEMO_PROMPT}\n`);
    const { sessionId } = await client.startSession({
      prompt: DEMO_PROMPT,
      user: { id: 'demo-agent-operator', roles: ['support'] },
      agent: 'support',
      // The scripted model plays the scenario its model name names; with ANTHROPIC_API_KEY set, Claude answers.
      ...(stack.modelUrl ? { model: 'scripted/refund-demo' } : {}),
    });
    const ui = stack.uiUrl ?? 'http://localhost:8233';
    out.info(`session ${sessionId} started — ${ui}/namespaces/${stack.config.TEMPORAL_NAMESPACE}/workflows/${sessionId}`);
    return await followInTerminal(client, sessionId, out, auto ? { autoDecide: auto } : {});
  } finally {
    await client.close();
    await stack.stop();
    await services.close();
  }
}

process.exitCode = await main(process.argv.slice(2));
