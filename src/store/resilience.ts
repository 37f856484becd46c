/**
 * The circuit breaker's rules, shared by every store implementation: given a tool's stored breaker (or
 * none) and the time, what a call is told and what the store must write. The rules are pure; each store
 * runs them inside its own atomic read-modify-write (an IMMEDIATE transaction on SQLite, a row locked with
 * `SELECT … FOR UPDATE` on PostgreSQL), which is what makes "exactly one probe" hold across processes.
 */
import type { Admission, BreakerPolicy, BreakerRow, BreakerState, BreakerTransition, DisabledTool } from './types.js';

/** A breaker row as the tables hold it: times in epoch milliseconds, null when unset. */
export interface BreakerRecord {
  tool: string;
  state: BreakerState;
  failures: number;
  openedAt: number | null;
  nextProbeAt: number | null;
  probeStartedAt: number | null;
  updatedAt: number;
}

/** A disabled tool as the tables hold it. */
export interface DisabledRecord {
  tool: string;
  reason: string;
  by: string;
  at: number;
}

/** Epoch ms of `now` (default: the current time). @throws RangeError for an invalid Date. */
export function epochMs(now: Date | undefined): number {
  const ms = (now ?? new Date()).getTime();
  if (!Number.isFinite(ms)) throw new RangeError('now: not a valid Date');
  return ms;
}

/** @throws RangeError naming the tool and the field when a policy is out of range. */
export function checkPolicy(tool: string, policy: BreakerPolicy): void {
  if (!Number.isInteger(policy.failureThreshold) || policy.failureThreshold < 1) {
    throw new RangeError(`breaker policy of '${tool}': failureThreshold must be a whole number >= 1 (got ${policy.failureThreshold})`);
  }
  if (!Number.isFinite(policy.resetAfterMs) || policy.resetAfterMs < 0) {
    throw new RangeError(`breaker policy of '${tool}': resetAfterMs must be a number of milliseconds >= 0 (got ${policy.resetAfterMs})`);
  }
}

/** @throws RangeError when a rate is not a positive finite number of calls per second. */
export function checkRate(tool: string, perSecond: number): void {
  if (!Number.isFinite(perSecond) || perSecond <= 0) {
    throw new RangeError(`rate limit of '${tool}': perSecond must be a number > 0 (got ${perSecond})`);
  }
}

/**
 * Microseconds between two slots of a `perSecond` rate limit, to the nearest microsecond. The rate clock
 * counts whole epoch microseconds (exact in a BIGINT and in a JS number), so a backlog of slots never
 * drifts the way fractional epoch milliseconds in floating point would.
 */
export function slotSpacingUs(perSecond: number): number {
  return Math.max(1, Math.round(1_000_000 / perSecond));
}

/** Whole milliseconds from `nowMs` to a reserved slot (epoch µs), rounded up so a caller never goes early. */
export function waitMs(slotUs: number, nowMs: number): number {
  return Math.max(0, Math.ceil((slotUs - nowMs * 1000) / 1000));
}

const iso = (ms: number | null): string | undefined => (ms === null ? undefined : new Date(ms).toISOString());
const reset = (policy: BreakerPolicy): number => Math.ceil(policy.resetAfterMs);

/** A stored breaker as the API reports it. */
export function toBreakerRow(r: BreakerRecord): BreakerRow {
  const row: BreakerRow = { tool: r.tool, state: r.state, failures: r.failures, updatedAt: new Date(r.updatedAt).toISOString() };
  const openedAt = iso(r.openedAt);
  const nextProbeAt = iso(r.nextProbeAt);
  const probeStartedAt = iso(r.probeStartedAt);
  if (openedAt) row.openedAt = openedAt;
  if (nextProbeAt) row.nextProbeAt = nextProbeAt;
  if (probeStartedAt) row.probeStartedAt = probeStartedAt;
  return row;
}

/** A stored disabled tool as the API reports it. */
export function toDisabledTool(r: DisabledRecord): DisabledTool {
  return { tool: r.tool, reason: r.reason, by: r.by, at: new Date(r.at).toISOString() };
}

/** What `admit` answers, and the breaker to write (only when a probe is let through). */
export interface AdmitDecision {
  admission: Admission;
  write?: BreakerRecord;
}

/**
 * The admission rules (see `ResilienceStorage.admit`). Callers run this once on a plain read, and again
 * inside their atomic section, on the locked row, only when the first answer has something to `write`.
 */
export function decideAdmission(
  tool: string,
  disabled: DisabledRecord | undefined,
  breaker: BreakerRecord | undefined,
  policy: BreakerPolicy,
  now: number,
): AdmitDecision {
  if (disabled) {
    return {
      admission: {
        allowed: false,
        reason: 'disabled',
        message: `tool '${tool}' is disabled by ${disabled.by} (since ${new Date(disabled.at).toISOString()}): ${disabled.reason}`,
      },
    };
  }
  if (!breaker || breaker.state === 'closed') return { admission: { allowed: true, probe: false } };
  // Open: due at next_probe_at. Half-open: the probe in flight counts as lost after resetAfterMs.
  const dueAt =
    breaker.state === 'open'
      ? (breaker.nextProbeAt ?? now)
      : breaker.probeStartedAt === null
        ? now
        : breaker.probeStartedAt + reset(policy);
  if (now < dueAt) {
    const when = new Date(dueAt).toISOString();
    const message =
      breaker.state === 'open'
        ? `circuit open for tool '${tool}' after ${breaker.failures} consecutive failure(s); the next probe goes at ${when}`
        : `circuit half-open for tool '${tool}': a probe call is in flight; if it has not finished by ${when} another call probes`;
    return { admission: { allowed: false, reason: 'open', message, nextProbeAt: when } };
  }
  return {
    admission: { allowed: true, probe: true },
    write: { ...breaker, state: 'half_open', nextProbeAt: now + reset(policy), probeStartedAt: now, updatedAt: now },
  };
}

/** What `record` reports, and the breaker to write (none when nothing changes). */
export interface RecordDecision {
  transition?: BreakerTransition;
  write?: BreakerRecord;
}

/** The recording rules (see `ResilienceStorage.record`), applied to the locked row (or none). */
export function decideRecord(tool: string, breaker: BreakerRecord | undefined, ok: boolean, policy: BreakerPolicy, now: number): RecordDecision {
  if (ok) {
    // Only the half-open probe closes an open breaker: a call let through before it opened proves little.
    if (!breaker || (breaker.state === 'closed' && breaker.failures === 0) || breaker.state === 'open') return {};
    const write: BreakerRecord = { tool, state: 'closed', failures: 0, openedAt: null, nextProbeAt: null, probeStartedAt: null, updatedAt: now };
    return breaker.state === 'closed' ? { write } : { write, transition: { from: breaker.state, to: 'closed', failures: 0 } };
  }
  const from = breaker ?? { tool, state: 'closed' as const, failures: 0, openedAt: null, nextProbeAt: null, probeStartedAt: null, updatedAt: now };
  const failures = from.failures + 1;
  const opens = from.state === 'half_open' || (from.state === 'closed' && failures >= policy.failureThreshold);
  if (!opens) {
    // Closed below the threshold, or already open (a call admitted before it opened, failing late).
    return { write: { ...from, failures, updatedAt: now } };
  }
  return {
    write: { tool, state: 'open', failures, openedAt: now, nextProbeAt: now + reset(policy), probeStartedAt: null, updatedAt: now },
    transition: { from: from.state, to: 'open', failures },
  };
}

/** Columns of `keel_breakers`, in the order the upsert statements bind them. */
export function breakerParams(r: BreakerRecord): [string, BreakerState, number, number | null, number | null, number | null, number] {
  return [r.tool, r.state, r.failures, r.openedAt, r.nextProbeAt, r.probeStartedAt, r.updatedAt];
}
