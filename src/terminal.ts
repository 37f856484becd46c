/**
 * A session in a terminal: the lines `keel run` and `keel chat` print as a session goes (model turns,
 * tool calls, approvals, undos), the hint that tells a person how to approve, and following a session or
 * one conversation turn to its answer. Shared by the CLI and by apps' own scripts (the example's demo).
 * Human lines go to stdout, or to stderr when `--json` keeps stdout for one JSON document.
 */
import { WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { followSession, followUntil, failureMessage, type KeelClient } from './client.js';
import { FailureTypes, type ApproverSchema, type SessionEvent, type SessionResult, type TurnAnswer } from './workflows/types.js';
import type { z } from 'zod';

/** Where a command's output goes. */
export interface TerminalOut {
  json: boolean;
  /** A progress line (stderr with --json). */
  info(line: string): void;
  /** The command's result: one JSON document with --json, else the human text. */
  result(doc: unknown, human: string): void;
}

/** Output for a command, with or without `--json`. */
export function terminalOutput(json: boolean): TerminalOut {
  return {
    json,
    info: (line) => (json ? process.stderr : process.stdout).write(`${line}\n`),
    result: (doc, human) => process.stdout.write(json ? `${JSON.stringify(doc, null, 2)}\n` : `${human}\n`),
  };
}

/** One event as a line. */
export function describeEvent(e: SessionEvent): string {
  if (e.kind === 'model') {
    const text = e.text ? ` ${e.text.replace(/\s+/g, ' ').slice(0, 300)}` : '';
    const tools = e.toolUses.length ? ` → ${e.toolUses.join(', ')}` : '';
    // The model is named only when tiering chose the cheaper one; the main model's lines read as before.
    if (e.escalated) return `[turn ${e.iteration}] routine model (${e.model}) asked for${tools.slice(2)}: set aside, the main model answers`;
    return `[turn ${e.iteration}] model${e.routine ? ` (routine: ${e.model})` : ''}:${text}${tools}`;
  }
  const detail = e.detail.replace(/\s+/g, ' ').slice(0, 200);
  if (e.kind === 'approval') return `[turn ${e.iteration}]   ${e.name} approval ${e.requestId}: ${e.status.toUpperCase()} — ${detail}`;
  if (e.kind === 'compensation') return `[undo]     ${e.name} ${e.status.toUpperCase()}: ${detail}`;
  const mark = e.outcome === 'ok' ? 'ok' : e.outcome.toUpperCase();
  return `[turn ${e.iteration}]   ${e.name} ${mark}: ${detail}`;
}

/** A finished session as text. */
export function describeResult(r: SessionResult): string {
  return [
    '',
    r.answer || '(no answer text)',
    '',
    `stop: ${r.stopReason} · model calls: ${r.iterations} · user turns: ${r.turns} · tool calls: ${r.toolCalls.length} · tokens: ${r.usage.input_tokens} in / ${r.usage.output_tokens} out` +
      (r.usage.cost_usd > 0 ? ` · cost: $${r.usage.cost_usd.toFixed(4)}` : '') +
      (r.runs > 1 ? ` · runs: ${r.runs}` : ''),
  ].join('\n');
}

/** Who decides approvals automatically (the demo's `--approve-as` / `--reject-as`). */
export type AutoApprover = z.input<typeof ApproverSchema>;

/**
 * Approvals decided without a person at the terminal (the demo's `--approve-as <id>`, `--reject-as <id>`
 * and `--reject <tool>`): `approver` decides every pending request, rejecting the calls of the tools in
 * `reject` and approving the rest. The reason recorded (and read by the model on a rejection) says it
 * was automatic.
 */
export interface AutoDecision {
  /** Who decides, with the roles the session's approval policy asks for. */
  approver: AutoApprover;
  /** Tool names whose calls are rejected, or `'all'` to reject every call; default: none (all approved). */
  reject?: readonly string[] | 'all';
}

/** The decision and its recorded reason for a pending call of `tool`. */
function autoDecide(auto: AutoDecision, tool: string): { decision: 'approve' | 'reject'; reason: string } {
  if (auto.reject === 'all') return { decision: 'reject', reason: `rejected automatically (--reject-as ${auto.approver.id})` };
  if (auto.reject?.includes(tool)) return { decision: 'reject', reason: `rejected automatically (--reject ${tool})` };
  return { decision: 'approve', reason: `approved automatically (--approve-as ${auto.approver.id})` };
}

/** Prints each event; on a pending approval, decides it (with `auto`) or says how to. */
function eventPrinter(client: KeelClient, sessionId: string, out: TerminalOut, auto?: AutoDecision) {
  return (e: SessionEvent): void => {
    out.info(describeEvent(e));
    if (e.kind !== 'approval' || e.status !== 'pending') return;
    if (auto) {
      const { decision, reason } = autoDecide(auto, e.name);
      client
        .decide(sessionId, { requestId: e.requestId, decision, approver: auto.approver, reason })
        .catch((err: unknown) => out.info(`could not ${decision} ${e.requestId}: ${err instanceof Error ? err.message : String(err)}`));
      return;
    }
    out.info(
      `\n  ⏸  ${e.name} waits for a person. In another terminal:\n` +
        `     keel approve ${sessionId} ${e.requestId} --as <your-id> --role approver [--reason "…"]\n` +
        `     (or: keel reject ${sessionId} ${e.requestId} --as <your-id> --role approver --reason "…")\n`,
    );
  };
}

/**
 * Follows a session to its end, printing as it goes, then prints its result. Returns the exit code:
 * 0 completed, 1 failed, 2 when the session refused its input (unknown agent or tool, no model).
 */
export async function followInTerminal(
  client: KeelClient,
  sessionId: string,
  out: TerminalOut,
  opts: { autoDecide?: AutoDecision; since?: number } = {},
): Promise<number> {
  try {
    const result = await followSession(client, sessionId, eventPrinter(client, sessionId, out, opts.autoDecide), opts.since ? { since: opts.since } : {});
    out.result({ sessionId, status: 'completed', ...result }, describeResult(result));
    return 0;
  } catch (err) {
    const message = failureMessage(err);
    const refused = err instanceof WorkflowFailedError && err.cause instanceof ApplicationFailure && err.cause.type === FailureTypes.InvalidSessionInput;
    out.result({ sessionId, status: 'failed', error: message }, `session ${refused ? 'refused its input' : 'failed'}: ${message}`);
    return refused ? 2 : 1;
  }
}

/**
 * Waits for one turn's answer while printing the session's events; returns the answer and the last
 * event printed (the next turn's `since`).
 */
export async function followTurn(
  client: KeelClient,
  sessionId: string,
  out: TerminalOut,
  answer: Promise<TurnAnswer>,
  opts: { autoDecide?: AutoDecision; since?: number } = {},
): Promise<{ answer: TurnAnswer; lastSeq: number }> {
  let lastSeq = opts.since ?? 0;
  const print = eventPrinter(client, sessionId, out, opts.autoDecide);
  const result = await followUntil(
    client,
    sessionId,
    answer,
    (e) => {
      lastSeq = e.seq;
      print(e);
    },
    { since: lastSeq },
  );
  return { answer: result, lastSeq };
}

/** Waits until the session has answered `turn` (or closed), polling its status. */
export async function turnAnswered(client: KeelClient, sessionId: string, turn: number, intervalMs = 200): Promise<TurnAnswer> {
  for (;;) {
    const status = await client.status(sessionId).catch(() => undefined);
    if (status && (status.turn > turn || (status.turn === turn && status.awaitingMessage) || status.state !== 'running')) {
      const text = [...status.events].reverse().find((e) => e.kind === 'model' && e.text);
      return { turn, answer: text?.kind === 'model' ? text.text : '', stopReason: status.state === 'running' ? 'end_turn' : status.state };
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
