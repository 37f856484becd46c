/**
 * Risk tiers: the one place where a tier's retry policy, timeouts, idempotency and approval rule live.
 * A tool picks a tier and may override within the tier's bounds (checked by `defineTool`).
 * Sandbox-safe: the workflow reads these to build activity options.
 */

/** The four risk tiers, least to most dangerous. */
export const RISK_TIERS = ['read', 'write', 'irreversible', 'privileged'] as const;
/** A tool's risk tier. */
export type RiskTier = (typeof RISK_TIERS)[number];
/** A duration as Temporal accepts it: a number of ms or a string such as `5s`. */
export type Duration = number | `${number}${'ms' | 's' | 'm' | 'h'}`;

/** What a tier sets for every tool in it. */
export interface TierPolicy {
  /** Attempts (including the first) when the downstream does not honour idempotency keys. */
  maxAttempts: number;
  /** Attempts when the tool declares `idempotentDownstream` (retries reuse the same key). */
  maxAttemptsWithKeys: number;
  /** First retry delay; doubles each attempt. */
  initialRetryInterval: Duration;
  /** Default start-to-close timeout. */
  startToCloseTimeout: Duration;
  /** Largest start-to-close timeout a tool of this tier may declare. */
  maxStartToCloseTimeout: Duration;
  /** `never`; `policy` (the session's approval policy decides); `always` (a person); `other-person` (a person who is not the requester, with an approver role). */
  approval: 'never' | 'policy' | 'always' | 'other-person';
}

const TIERS: Record<RiskTier, TierPolicy> = {
  read: { maxAttempts: 3, maxAttemptsWithKeys: 3, initialRetryInterval: '200ms', startToCloseTimeout: '5s', maxStartToCloseTimeout: '30s', approval: 'never' },
  write: { maxAttempts: 1, maxAttemptsWithKeys: 3, initialRetryInterval: '500ms', startToCloseTimeout: '10s', maxStartToCloseTimeout: '2m', approval: 'policy' },
  irreversible: { maxAttempts: 1, maxAttemptsWithKeys: 1, initialRetryInterval: '1s', startToCloseTimeout: '15s', maxStartToCloseTimeout: '2m', approval: 'always' },
  privileged: { maxAttempts: 1, maxAttemptsWithKeys: 1, initialRetryInterval: '1s', startToCloseTimeout: '15s', maxStartToCloseTimeout: '2m', approval: 'other-person' },
};

/**
 * How a tool's call runs: `regular`, an activity the server dispatches (heartbeats, cancellation, an
 * activity event in the Web UI); `local`, a local activity run by the worker that runs the session's workflow
 * task (no dispatch round trip; a marker in history). Only `read` tools may run local: a local activity can
 * run again after a worker crash even with one attempt allowed, which only a call without side effects can take.
 */
export const EXECUTION_MODES = ['regular', 'local'] as const;
/** See {@link EXECUTION_MODES}. */
export type ExecutionMode = (typeof EXECUTION_MODES)[number];

/**
 * The longest timeout a tool may have and still run as a local activity (10 s, the workflow task's
 * default timeout): a local activity cannot heartbeat, and one that outlives its workflow task makes the
 * worker extend the task.
 */
export const LOCAL_ACTIVITY_MAX_TIMEOUT: Duration = '10s';

/** The policy of a tier. */
export function tierPolicy(risk: RiskTier): TierPolicy {
  return TIERS[risk];
}
