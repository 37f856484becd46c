/**
 * The fleet-wide guard around a tool call: before it, the tool's disabled switch and circuit breaker
 * (both in Keel's store, shared by every worker) decide whether the downstream may be called at all, and
 * the tool's rate limit spaces calls across the fleet; after it, the outcome moves the breaker. A refused
 * call fails fast as a non-retryable `ToolUnavailable`, so the workflow knows nothing happened. Every
 * breaker transition is logged. Also `toolAvailability`, the local activity the workflow asks before each
 * model call which optional tools to leave out.
 */
import { ApplicationFailure, Context, log } from '@temporalio/activity';
import type { KeelStore } from '../store/index.js';
import { ToolError, type Tool } from '../tools/index.js';
import { FailureTypes, type ToolAvailabilityInput, type ToolAvailabilityOutput } from '../workflows/types.js';

/** A breaker that never opens (nothing is recorded for it): a tool without one is still subject to `keel tools disable`. */
const NO_BREAKER = { failureThreshold: Number.MAX_SAFE_INTEGER, resetAfterMs: 60_000 };

/** Runs `call` under the tool's switch, breaker and rate limit. */
export async function guarded<T>(store: KeelStore, tool: Tool, call: () => Promise<T>): Promise<T> {
  const policy = tool.policy.breaker ?? NO_BREAKER;
  const admission = await store.admit(tool.name, policy);
  if (!admission.allowed) {
    throw ApplicationFailure.create({ type: FailureTypes.ToolUnavailable, nonRetryable: true, message: admission.message, details: [{ reason: admission.reason }] });
  }
  if (admission.probe) log.warn('circuit breaker transition', { tool: tool.name, from: 'open', to: 'half_open', probe: true });
  if (tool.policy.rateLimitPerSecond) await waitForSlot(store, tool, tool.policy.rateLimitPerSecond);
  let ok = false;
  try {
    const result = await call();
    ok = true;
    return result;
  } catch (err) {
    // The downstream answered and refused this input: it works. A cancelled session says nothing of it.
    ok = err instanceof ToolError || cancelledByCaller();
    throw err;
  } finally {
    if (tool.policy.breaker) {
      const change = await store.record(tool.name, ok, policy);
      if (change) log.warn('circuit breaker transition', { tool: tool.name, ...change });
    }
  }
}

/** Waits for the tool's next fleet-wide slot (the activity heartbeats meanwhile; cancellation ends the wait). */
async function waitForSlot(store: KeelStore, tool: Tool, perSecond: number): Promise<void> {
  const wait = await store.reserveRateSlot(tool.name, perSecond);
  if (wait <= 0) return;
  await Context.current().sleep(wait);
}

function cancelledByCaller(): boolean {
  const reason = Context.current().cancellationSignal.reason as { message?: string } | undefined;
  return Context.current().cancellationSignal.aborted && reason?.message === 'CANCELLED';
}

/** Creates the `toolAvailability` local activity: which of the given tools are disabled or behind an open circuit. */
export function createAvailabilityActivities(store: KeelStore) {
  return {
    async toolAvailability({ tools }: ToolAvailabilityInput): Promise<ToolAvailabilityOutput> {
      const [breakers, disabled] = await Promise.all([store.breakers(), store.disabledTools()]);
      const now = Date.now();
      return tools.flatMap((tool) => {
        const off = disabled.find((d) => d.tool === tool);
        if (off) return [{ tool, reason: `disabled: ${off.reason}` }];
        const b = breakers.find((r) => r.tool === tool);
        if (b?.state === 'open' && b.nextProbeAt && Date.parse(b.nextProbeAt) > now) return [{ tool, reason: `circuit open until ${b.nextProbeAt}` }];
        if (b?.state === 'half_open') return [{ tool, reason: 'circuit half-open: a probe is testing the downstream' }];
        return [];
      });
    },
  };
}
