/**
 * The bodies the gateway accepts, as zod schemas: validated on every request and turned into the
 * OpenAPI document's request schemas.
 */
import { z } from 'zod';
import { BudgetSchema } from '../workflows/budget.js';
import { DurationSchema } from '../workflows/duration.js';

/** The body of `POST /v1/sessions`. The user is the caller; everything else about the session is here. */
export const StartRequestSchema = z.strictObject({
  prompt: z.string().min(1, 'prompt is empty').max(100_000, 'prompt is longer than 100,000 characters'),
  /** The agent (`defineAgent`) to run; the default agent otherwise. */
  agent: z.string().min(1).max(64).optional(),
  /** The model, over the agent's. */
  model: z.string().min(1).max(200).optional(),
  /** A client-chosen session id: a retried request with the same id returns the same session. */
  sessionId: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$/, 'expected 1–200 letters, digits, ".", "_", ":" or "-", starting with a letter or digit')
    .optional(),
  /** Keep the conversation open this long for follow-up messages (e.g. `10m`). */
  idleTimeout: DurationSchema.optional(),
  maxIterations: z.number().int().min(1).max(200).optional(),
  budget: BudgetSchema.partial().optional(),
});

/** The body of `POST /v1/sessions/{id}/messages`. */
export const MessageRequestSchema = z.strictObject({ text: z.string().min(1, 'text is empty').max(100_000) });

/** The body of `POST /v1/sessions/{id}/approvals/{requestId}`. The approver is the caller. */
export const DecisionRequestSchema = z.strictObject({
  decision: z.enum(['approve', 'reject']),
  reason: z.string().max(2000).optional(),
});
