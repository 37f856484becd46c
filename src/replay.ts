/**
 * Replay: run a recorded session history against a workflow bundle (the current code with a tools
 * module, from `bundleApp`) and report whether the code still makes the same decisions. A
 * `DeterminismViolationError` means the change would break sessions that are running now; `replayRunning`
 * checks every open session before a deploy. Histories of encrypted sessions replay with the codec keys
 * their workers used (`codecKeys`); a key that is missing is a configuration error, not a determinism one.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { Worker, type WorkerOptions } from '@temporalio/worker';
import type { Client } from '@temporalio/client';
import type { Payload } from '@temporalio/common';
import { historyFromJSON, historyToJSON } from '@temporalio/common/lib/proto-utils.js';
import type { KeelClient } from './client.js';
import { KEY_ID_METADATA, isEncrypted, keelDataConverter, type CodecKeyring } from './codec/index.js';
import { ConfigError } from './config.js';
import { workerTracing } from './telemetry/tracing.js';

type History = ReturnType<typeof historyFromJSON>;

/** The outcome of one replay. */
export interface ReplayReport {
  workflowId: string;
  events: number;
  deterministic: boolean;
  /** Set when the replay found a difference or failed. */
  error?: { type: string; message: string };
}

/** Reads a history exported as JSON (Web UI download, `temporal workflow show --output json`, or `fetchHistory`). */
export async function readHistoryFile(file: string): Promise<History> {
  const text = await readFile(file, 'utf8');
  const json = JSON.parse(text) as { events?: unknown[] };
  if (!json || !Array.isArray(json.events)) throw new Error(`${file}: not a workflow history (no "events" array)`);
  return historyFromJSON(json);
}

/** Writes a history as proto3 JSON, the format the Web UI and `temporal workflow show --output json` use. */
export async function writeHistoryFile(file: string, history: History): Promise<void> {
  await writeFile(file, `${JSON.stringify(JSON.parse(historyToJSON(history)), null, 1)}\n`);
}

/** A workflow bundle to replay against (`bundleApp(tools)`, or a prebuilt one's `codePath`). */
export type ReplayBundle = NonNullable<WorkerOptions['workflowBundle']>;

/** What a replay runs against: the build, and the codec keys when histories are encrypted. */
export interface ReplayOptions {
  workflowBundle: ReplayBundle;
  /** The keys the sessions were encrypted with (`config.codecKeys`); needed for encrypted histories. */
  codecKeys?: CodecKeyring;
}

/** The key ids of the encrypted payloads anywhere in a history. */
function encryptionKeyIds(history: History): Set<string> {
  const ids = new Set<string>();
  const walk = (v: unknown): void => {
    if (v === null || typeof v !== 'object' || v instanceof Uint8Array) return;
    const payload = v as Payload;
    if ('metadata' in v && isEncrypted(payload)) {
      const id = payload.metadata?.[KEY_ID_METADATA];
      ids.add(id ? new TextDecoder().decode(id) : '(none)');
      return;
    }
    for (const child of Object.values(v)) walk(child);
  };
  walk(history.events);
  return ids;
}

/**
 * Replays one history; never throws for a determinism problem, only reports it.
 * @throws ConfigError when the history holds encrypted payloads and a key they need is not configured
 */
export async function replayHistory(history: History, workflowId: string, opts: ReplayOptions): Promise<ReplayReport> {
  const events = history.events?.length ?? 0;
  const missing = [...encryptionKeyIds(history)].filter((id) => !opts.codecKeys?.byId.has(id));
  if (missing.length) {
    throw new ConfigError(
      `KEEL_CODEC_KEYS: ${workflowId} holds payloads encrypted with key ${missing.map((id) => `'${id}'`).join(', ')}, ` +
        `${opts.codecKeys ? `which is not configured (keys here: ${[...opts.codecKeys.byId.keys()].join(', ')})` : 'and no codec keys are configured'}; set the keys its workers used to replay it`,
    );
  }
  const dataConverter = opts.codecKeys ? keelDataConverter({ codecKeys: opts.codecKeys }) : undefined;
  try {
    await Worker.runReplayHistory(
      { workflowBundle: opts.workflowBundle, sinks: workerTracing(undefined, new Map()).sinks, ...(dataConverter ? { dataConverter } : {}) },
      history,
      workflowId,
    );
    return { workflowId, events, deterministic: true };
  } catch (err) {
    const e = err as Error;
    return {
      workflowId,
      events,
      deterministic: false,
      error: { type: e.name, message: e.message },
    };
  }
}

/** Fetches a session's history from the server (as stored: encrypted payloads stay encrypted) and replays it. */
export async function replaySession(client: Client, workflowId: string, opts: ReplayOptions): Promise<ReplayReport> {
  const history = await client.workflow.getHandle(workflowId).fetchHistory();
  return replayHistory(history, workflowId, opts);
}

/**
 * Replays the current run of every running session and chain on the client's task queue against the
 * bundle. Run it with the build you are about to deploy: any report with `deterministic: false` names a
 * session that build would break.
 */
export async function replayRunning(client: KeelClient, opts: ReplayOptions): Promise<ReplayReport[]> {
  const reports: ReplayReport[] = [];
  const codecKeys = opts.codecKeys ?? client.config.codecKeys;
  for (const wf of await client.listRunning()) {
    const history = await client.temporal.workflow.getHandle(wf.workflowId, wf.runId).fetchHistory();
    reports.push(await replayHistory(history, wf.workflowId, { ...opts, ...(codecKeys ? { codecKeys } : {}) }));
  }
  return reports;
}
