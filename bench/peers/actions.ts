/**
 * What a Temporal-based session costs in Temporal Cloud actions (the billing unit), and where its step
 * time goes, both read from its history; plus the Temporal server's own `action` counter, read from the
 * dev server's Prometheus endpoint, as a cross-check.
 *
 * Counted from history, per Temporal Cloud's published list of billable actions:
 * - workflow started: 1 (`WorkflowExecutionStarted`);
 * - activity started or retried: 1 per attempt (`ActivityTaskStarted`, whose `attempt` is the number of
 *   attempts made; only the last attempt's event is in history);
 * - local activities: all markers (`MarkerRecorded`) recorded by one workflow task count as 1;
 * - timer started, signal received, update accepted, upsert of search attributes (not one that only sets
 *   `TemporalChangeVersion`), workflow options updated, Nexus operation scheduled or cancel requested:
 *   1 each; child workflow started: 2.
 * Not in history, so not counted here: queries, activity heartbeats that reached the server, rejected
 * updates, and the extra action per workflow task heartbeat while local activities run longer than a
 * task. The server's `action` counter includes what the server meters (see {@link readActionMetric}).
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { eventTimeMs, type HistoryEvent } from '../support.js';

/** Billable actions of one history, by kind. */
export type ActionCount = Record<string, number>;

/** Counts the billable actions of a history (see the file header for the rules). */
export function billableActions(events: HistoryEvent[]): ActionCount {
  const count: ActionCount = {};
  const add = (kind: string, n = 1): void => {
    count[kind] = (count[kind] ?? 0) + n;
  };
  const markerTasks = new Set<string>();
  for (const e of events) {
    if (e.workflowExecutionStartedEventAttributes) add('workflow started');
    const started = e.activityTaskStartedEventAttributes;
    if (started) add('activity attempts', Math.max(1, started.attempt ?? 1));
    const marker = e.markerRecordedEventAttributes;
    if (marker) markerTasks.add(String(marker.workflowTaskCompletedEventId));
    if (e.timerStartedEventAttributes) add('timers');
    if (e.workflowExecutionSignaledEventAttributes) add('signals');
    if (e.workflowExecutionUpdateAcceptedEventAttributes) add('updates');
    const upsert = e.upsertWorkflowSearchAttributesEventAttributes;
    if (upsert) {
      const keys = Object.keys(upsert.searchAttributes?.indexedFields ?? {});
      if (keys.some((k) => k !== 'TemporalChangeVersion')) add('search attribute upserts');
    }
    if (e.workflowExecutionOptionsUpdatedEventAttributes) add('options updated');
    if (e.startChildWorkflowExecutionInitiatedEventAttributes) add('child workflows', 2);
    if (e.nexusOperationScheduledEventAttributes) add('nexus operations');
    if (e.nexusOperationCancelRequestedEventAttributes) add('nexus cancels');
  }
  if (markerTasks.size > 0) add('marker batches (workflow tasks with markers)', markerTasks.size);
  return count;
}

/** Markers in a history by name (`core_local_activity` for a local activity, `core_patch` for `patched()`): what the marker batches hold. */
export function markersByName(events: HistoryEvent[]): ActionCount {
  const names: ActionCount = {};
  for (const e of events) {
    const name = e.markerRecordedEventAttributes?.markerName;
    if (name) names[name] = (names[name] ?? 0) + 1;
  }
  return names;
}

/** The sum of a count. */
export const totalActions = (c: ActionCount): number => Object.values(c).reduce((a, b) => a + b, 0);

/** Where a session's time goes, in ms, summed over the whole session (divide by steps for per step). */
export interface TimeSplit {
  /** Workflow tasks: scheduled → started (matching, dispatch to a poller). */
  workflowTaskQueue: number;
  /** Workflow tasks: started → completed (the worker runs workflow code). */
  workflowTaskRun: number;
  /** Workflow tasks in the session. */
  workflowTasks: number;
  /** Activities: scheduled → started. */
  activityQueue: number;
  /** Activities: started → completed (the call itself plus the worker's payload work). */
  activityRun: number;
  /** `activityRun` of the model activity (`callModel`) alone; the rest is the tool activities'. */
  modelActivityRun: number;
}

/** Sums queue waits and run times of the workflow tasks and activities of one history (server timestamps). */
export function timeSplit(events: HistoryEvent[]): TimeSplit {
  const at = new Map<string, number>();
  const activityType = new Map<string, string>();
  const s: TimeSplit = { workflowTaskQueue: 0, workflowTaskRun: 0, workflowTasks: 0, activityQueue: 0, activityRun: 0, modelActivityRun: 0 };
  for (const e of events) {
    const t = eventTimeMs(e.eventTime);
    at.set(String(e.eventId), t);
    const type = e.activityTaskScheduledEventAttributes?.activityType?.name;
    if (type) activityType.set(String(e.eventId), type);
    const since = (ref: unknown): number => t - (at.get(String(ref)) ?? t);
    if (e.workflowTaskStartedEventAttributes) s.workflowTaskQueue += since(e.workflowTaskStartedEventAttributes.scheduledEventId);
    if (e.workflowTaskCompletedEventAttributes) {
      s.workflowTaskRun += since(e.workflowTaskCompletedEventAttributes.startedEventId);
      s.workflowTasks += 1;
    }
    if (e.activityTaskStartedEventAttributes) s.activityQueue += since(e.activityTaskStartedEventAttributes.scheduledEventId);
    const done = e.activityTaskCompletedEventAttributes;
    if (done) {
      const run = since(done.startedEventId);
      s.activityRun += run;
      if (activityType.get(String(done.scheduledEventId)) === 'callModel') s.modelActivityRun += run;
    }
  }
  return s;
}

/**
 * Finds the dev server's Prometheus endpoint. The Temporal CLI serves `/metrics` on a random port unless
 * told one, and Keel's dev server launcher does not pass one; so look at the TCP ports the server process
 * listens on (Linux `/proc`) and ask each for `/metrics`. Undefined when not found (not Linux, not
 * readable, no answer).
 */
export async function findMetricsUrl(pid: number | undefined, skipPorts: number[]): Promise<string | undefined> {
  if (pid === undefined) return undefined;
  let ports: number[];
  try {
    const inodes = new Set<string>();
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkOrEmpty(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]!);
    }
    ports = [];
    for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
      for (const line of readFileSync(table, 'utf8').split('\n').slice(1)) {
        const f = line.trim().split(/\s+/);
        // local_address is f[1] (hex ip:port), st is f[3] (0A = LISTEN), inode is f[9].
        if (f.length > 9 && f[3] === '0A' && inodes.has(f[9]!)) ports.push(parseInt(f[1]!.split(':')[1]!, 16));
      }
    }
  } catch {
    return undefined;
  }
  for (const port of ports.filter((p) => !skipPorts.includes(p))) {
    const url = `http://127.0.0.1:${port}/metrics`;
    const text = await fetch(url, { signal: AbortSignal.timeout(1000) })
      .then((r) => (r.ok ? r.text() : ''))
      .catch(() => '');
    if (/^# TYPE /m.test(text)) return url;
  }
  return undefined;
}

function readlinkOrEmpty(p: string): string {
  try {
    return readlinkSync(p);
  } catch {
    return '';
  }
}

/**
 * The server's `action` counter for one namespace, by `action_type` (e.g. `grpc_StartWorkflowExecution`,
 * `command_ScheduleActivityTask`, `command_BatchMarkers`, `command_UpsertWorkflowSearchAttributes`,
 * `grpc_QueryWorkflow`): Temporal Server 1.22.3 and later meter actions the way Temporal Cloud bills them,
 * local activities included. Only the frontend's series are summed. Undefined when the endpoint has no
 * such counter.
 */
export async function readActionMetric(url: string, namespace: string): Promise<ActionCount | undefined> {
  const text = await fetch(url, { signal: AbortSignal.timeout(5000) }).then((r) => r.text());
  const byType: ActionCount = {};
  let seen = false;
  for (const line of text.split('\n')) {
    const m = /^action(?:_total)?\{([^}]*)\}\s+(\S+)/.exec(line);
    if (!m) continue;
    seen = true;
    const labels = Object.fromEntries([...m[1]!.matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1], l[2]]));
    if (labels.namespace !== namespace || labels.service_name !== 'frontend') continue;
    const type = labels.action_type ?? 'unlabelled';
    byType[type] = (byType[type] ?? 0) + Number(m[2]);
  }
  return seen ? byType : undefined;
}

/**
 * Reads the counter until it stops moving: the server publishes it about once a second, so a read right
 * after the last session can miss that session's actions. Reads 1.2 s apart until two agree (at most 6).
 */
export async function settledActionMetric(url: string, namespace: string): Promise<ActionCount | undefined> {
  let last = await readActionMetric(url, namespace);
  for (let i = 0; i < 6 && last; i++) {
    await new Promise((r) => setTimeout(r, 1200));
    const next = await readActionMetric(url, namespace);
    if (next && totalActions(next) === totalActions(last)) return next;
    last = next;
  }
  return last;
}

/** What a counter read grew by between two reads, by kind (kinds that did not grow are left out). */
export function actionDelta(before: ActionCount, after: ActionCount): ActionCount {
  const delta: ActionCount = {};
  for (const [k, v] of Object.entries(after)) {
    const d = v - (before[k] ?? 0);
    if (d !== 0) delta[k] = d;
  }
  return delta;
}
