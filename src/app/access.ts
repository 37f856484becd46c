/**
 * Least privilege: an access policy maps the roles a session's user holds to the tools the session may
 * call. A session offers the model only the tools its user's roles allow, and the tool runner refuses a
 * call outside them (an `is_error` result the model reads, and an authorization decision in the audit
 * trail), whatever the model was talked into. Without a policy every tool of the agent is allowed.
 *
 * A module exports at most one policy (`export const access = defineAccessPolicy({...})`); the app checks
 * that it names only tools the module exports, and that the approver roles agents name are roles it knows.
 * Changing the policy changes what running sessions do: treat it as a code change (`keel replay --running`).
 *
 * Sandbox-safe (zod and plain data only).
 */
import { z } from 'zod';
import { describeIssues } from '../workflows/types.js';

const ROLE = /^[A-Za-z0-9_.:-]{1,100}$/;

/** What a policy author writes. */
export const AccessPolicySpecSchema = z.strictObject({
  /** Each role's tools, by name; `'*'` for every tool; `[]` for a role that calls none (an approver). */
  roles: z.record(z.string().regex(ROLE, `a role name must match ${ROLE.source}`), z.union([z.literal('*'), z.array(z.string().min(1)).max(500)])),
  /** Tools every user may call, whatever their roles (none). */
  everyone: z.array(z.string().min(1)).max(500).default([]),
});
export type AccessPolicySpec = z.input<typeof AccessPolicySpecSchema>;

/** A registered access policy. */
export type AccessPolicy = z.output<typeof AccessPolicySpecSchema> & { readonly kind: 'access-policy' };

/** An access policy is invalid; the message names the field. */
export class AccessPolicyError extends Error {
  override readonly name = 'AccessPolicyError';
}

/**
 * Registers an access policy after validating its shape (the tools it names are checked against the
 * module's when the app is built).
 * @throws AccessPolicyError naming every bad field.
 */
export function defineAccessPolicy(spec: AccessPolicySpec): AccessPolicy {
  const parsed = AccessPolicySpecSchema.safeParse(spec);
  if (!parsed.success) throw new AccessPolicyError(`access policy: ${describeIssues(parsed.error, '(policy)')}`);
  return { ...parsed.data, kind: 'access-policy' };
}

/** True for a value made by `defineAccessPolicy`. */
export function isAccessPolicy(value: unknown): value is AccessPolicy {
  return typeof value === 'object' && value !== null && (value as { kind?: unknown }).kind === 'access-policy';
}

/**
 * Whether a user with `roles` may call `tool`: always without a policy; otherwise when the tool is
 * everyone's or one of the roles grants it. Returns the reason either way, for the audit trail.
 */
export function mayCall(policy: AccessPolicy | undefined, roles: readonly string[], tool: string): { allowed: boolean; reason: string } {
  if (!policy) return { allowed: true, reason: 'no access policy' };
  if (policy.everyone.includes(tool)) return { allowed: true, reason: `${tool} is allowed to everyone` };
  const granting = roles.find((r) => {
    const tools = policy.roles[r];
    return tools === '*' || tools?.includes(tool);
  });
  if (granting) return { allowed: true, reason: `role '${granting}' may call ${tool}` };
  return { allowed: false, reason: `none of the user's roles (${roles.join(', ') || 'none'}) may call ${tool}` };
}

/**
 * Checks a policy against the module's tools and agents; returns the first problem, naming the role,
 * tool or agent, or undefined.
 */
export function policyProblem(policy: AccessPolicy, tools: ReadonlySet<string>, agents: Iterable<{ name: string; approval?: { approverRoles?: string[]; privilegedApproverRoles?: string[] } }>): string | undefined {
  const known = [...tools].join(', ');
  for (const [role, granted] of Object.entries(policy.roles)) {
    if (granted === '*') continue;
    const unknown = granted.find((t) => !tools.has(t));
    if (unknown) return `access policy: role '${role}' names tool '${unknown}', which the module does not export (tools: ${known})`;
  }
  const unknown = policy.everyone.find((t) => !tools.has(t));
  if (unknown) return `access policy: everyone names tool '${unknown}', which the module does not export (tools: ${known})`;
  const roles = Object.keys(policy.roles);
  for (const agent of agents) {
    for (const field of ['approverRoles', 'privilegedApproverRoles'] as const) {
      const role = agent.approval?.[field]?.find((r) => !roles.includes(r));
      if (role) return `agent '${agent.name}' names role '${role}' in approval.${field}, which the access policy does not define (roles: ${roles.join(', ')})`;
    }
  }
  return undefined;
}
