/**
 * A tool's runbook (`keel runbook <tool>`), written from its definition rather than by hand, so it cannot
 * drift from what the worker enforces: what the tool does, its dependency, criticality, risk tier and what
 * the tier means for retries, approval and undo, its breaker and rate limit, the real commands to check
 * and act on it, and what the model sees when it is down. Pure: definition in, Markdown (or facts) out.
 */
import type { Tool } from '../tools/define.js';

/** The runbook's facts, as `keel runbook --json` prints them. */
export interface RunbookFacts {
  tool: string;
  description: string;
  /** The downstream, as far as the definition says (it names none today: see the tool's run()). */
  dependency: string;
  criticality: Tool['criticality'];
  risk: Tool['policy']['risk'];
  retries: string;
  approval: string;
  undo: string;
  breaker: string;
  rateLimit: string;
  whenDown: string;
  /** Shell commands, by purpose. */
  commands: Record<'breakers' | 'resetBreaker' | 'disable' | 'enable' | 'failed' | 'slo' | 'pendingApprovals', string>;
}

/** Quotes a word for a POSIX shell when it needs it. */
function sh(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

const seconds = (ms: number) => (ms % 1000 === 0 ? `${ms / 1000} s` : `${ms} ms`);

/** What the tier's approval rule means for a call. */
function approvalText(tool: Tool): string {
  const timeout = `requests wait ${tool.policy.approvalTimeout ?? "the session's approval timeout (24h by default)"}, then count as a refusal the model is told about`;
  switch (tool.policy.approval) {
    case 'never':
      return 'never: calls run without a person (a read has no side effect)';
    case 'policy':
      return `by policy: a person approves a call only when the session's approval policy lists ${tool.name}; ${timeout}`;
    case 'always':
      return `always: a person must approve every call before it runs; ${timeout}`;
    case 'other-person':
      return `other person: every call needs an approver with an approver role who is not the requester; ${timeout}`;
  }
}

/** Builds the runbook's facts from a tool definition; `module` is the tools module as the operator names it. */
export function runbookFacts(tool: Tool, module: string): RunbookFacts {
  const p = tool.policy;
  const name = sh(tool.name);
  const mod = sh(module);
  const retries =
    p.maxAttempts > 1
      ? `up to ${p.maxAttempts} attempts (first retry after ${p.initialRetryInterval}, doubling), each limited to ${p.startToCloseTimeout}` +
        (p.idempotency !== 'none' ? `; every retry sends the same idempotency key (${p.idempotency})` : '')
      : `one attempt, limited to ${p.startToCloseTimeout}: never retried blindly` +
        (p.hasStatusCheck
          ? '; an unknown outcome (timeout, lost worker) is settled by asking the downstream by idempotency key (its status check)'
          : '; an unknown outcome (timeout, lost worker) goes to the model as unknown, and a person must confirm what happened');
  const undo =
    p.risk === 'read'
      ? 'nothing to undo: a read has no side effect'
      : p.compensable
        ? 'compensable: its undo is registered before the call and runs (last first) when the session fails or is cancelled'
        : p.risk === 'write'
          ? `none: ${tool.noCompensation ?? 'the definition gives no undo'}`
          : `none: ${p.risk} calls cannot be undone, which is why they need approval`;
  const breaker = p.breaker
    ? `opens after ${p.breaker.failureThreshold} consecutive failed calls (across every worker), refuses calls for ${seconds(p.breaker.resetAfterMs)}, then lets one probe through; the probe's success closes it`
    : 'off (breaker: false): failures are never cut short';
  const whenDown =
    tool.criticality === 'optional'
      ? `optional: while its circuit is open or it is disabled, ${tool.name} is left out of the tools offered to the model, which is told it is unavailable; a call to it (or one that fails after its attempts) gets a note as its result, and the session carries on without it`
      : `critical: while its circuit is open or it is disabled, a call to it fails the session; so does a downstream that cannot be reached after its attempts` +
        (p.risk === 'read' ? '' : ` (unless the outcome is unknown: then ${p.hasStatusCheck ? 'its status check settles it' : 'the model is told it is unknown'})`) +
        `. A failed session's completed writes are undone (compensations, last first) and it is listed by keel failed. An error the downstream answers with (a ToolError such as "not found") is not an outage: the model reads it as an is_error result and may act on it`;
  return {
    tool: tool.name,
    description: tool.description,
    dependency: `the downstream ${tool.name} calls is not named in its definition: see the tool's run() in ${module}`,
    criticality: tool.criticality,
    risk: p.risk,
    retries,
    approval: approvalText(tool),
    undo,
    breaker,
    rateLimit: p.rateLimitPerSecond ? `${p.rateLimitPerSecond} calls per second across the fleet; calls beyond it wait their turn` : 'none',
    whenDown,
    commands: {
      breakers: 'keel circuits',
      resetBreaker: `keel circuits reset ${name}`,
      disable: `keel tools disable ${name} --reason "…" --tools ${mod}`,
      enable: `keel tools enable ${name} --tools ${mod}`,
      failed: 'keel failed --since 1h',
      slo: 'keel slo',
      pendingApprovals: 'keel approvals',
    },
  };
}

/** The runbook as Markdown. */
export function renderRunbook(f: RunbookFacts): string {
  const c = f.commands;
  return `# Runbook: ${f.tool}

${f.description}

| | |
|---|---|
| Dependency | ${f.dependency} |
| Criticality | ${f.criticality} |
| Risk tier | ${f.risk} |
| Retries | ${f.retries} |
| Approval | ${f.approval} |
| Undo | ${f.undo} |
| Circuit breaker | ${f.breaker} |
| Rate limit | ${f.rateLimit} |

## When it is down

${f.whenDown}.

## Check

- \`${c.breakers}\`: is ${f.tool}'s circuit open (state, consecutive failures, next probe), and is it disabled?
- \`${c.slo}\`: ${f.tool}'s availability over the last 24h against the 99.5% objective (add \`--since 1h\` for now).
- \`${c.failed}\`: sessions that failed or were cancelled in the last hour, with the reason and whether their writes were undone.
- \`keel audit <session>\`: one session's trail (intent, result, latency, approval, undo of each call).${f.approval.startsWith('never') ? '' : `\n- \`${c.pendingApprovals}\`: calls waiting for a person.`}

## Act

- Stop every call to it on every worker while the downstream is broken:
  \`${c.disable}\`
- Let calls through again once it is fixed:
  \`${c.enable}\`
- Close its breaker at once rather than wait for the probe (after the fix):
  \`${c.resetBreaker}\`
`;
}
