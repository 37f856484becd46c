// The demo services' wire contract and a tiny typed client for it. The zod schemas here describe what
// `GET /ledger` and `GET /faults` return and what `POST /faults` accepts; the server validates fault
// specs with the same schema, so the contract lives in one place. Tests and benchmarks use
// `demoClient(baseUrl)` to read the ledger and to inject faults; the example tools call the business
// endpoints with plain `fetch` and do not need this module.
import { z } from 'zod';

/** An ISO-8601 UTC timestamp as the demo services write it (`new Date().toISOString()`). */
const TimestampSchema = z.string();

/** A refund applied by `POST /refunds`. Amounts are integer cents in the order's currency. */
export const RefundSchema = z.object({
  id: z.string(),
  order_id: z.string(),
  amount_cents: z.number().int(),
  currency: z.string(),
  reason: z.string(),
  status: z.literal('succeeded'),
  idempotency_key: z.string().nullable(),
  traceparent: z.string().nullable(),
  created_at: TimestampSchema,
});
/** A refund applied by `POST /refunds`. */
export type Refund = z.infer<typeof RefundSchema>;

/** An email queued in the outbox by `POST /emails`. */
export const EmailSchema = z.object({
  id: z.string(),
  to: z.string(),
  subject: z.string(),
  body: z.string(),
  status: z.literal('queued'),
  idempotency_key: z.string().nullable(),
  traceparent: z.string().nullable(),
  created_at: TimestampSchema,
});
/** An email queued in the outbox by `POST /emails`. */
export type Email = z.infer<typeof EmailSchema>;

/** A support ticket: opened by `POST /tickets`, closed by `POST /tickets/:id/close`. */
export const TicketSchema = z.object({
  id: z.string(),
  customer_id: z.string(),
  subject: z.string(),
  body: z.string(),
  status: z.enum(['open', 'closed']),
  close_reason: z.string().nullable(),
  idempotency_key: z.string().nullable(),
  traceparent: z.string().nullable(),
  created_at: TimestampSchema,
  closed_at: TimestampSchema.nullable(),
});
/** A support ticket. */
export type Ticket = z.infer<typeof TicketSchema>;

/** An account credit: granted by `POST /credits`, revoked by `POST /credits/:id/revoke`. */
export const CreditSchema = z.object({
  id: z.string(),
  customer_id: z.string(),
  amount_cents: z.number().int(),
  currency: z.string(),
  reason: z.string(),
  status: z.enum(['active', 'revoked']),
  idempotency_key: z.string().nullable(),
  traceparent: z.string().nullable(),
  created_at: TimestampSchema,
  revoked_at: TimestampSchema.nullable(),
});
/** An account credit. */
export type Credit = z.infer<typeof CreditSchema>;

/** The plans an account can be on. */
export const PlanSchema = z.enum(['free', 'pro', 'enterprise']);
/** The plans an account can be on. */
export type Plan = z.infer<typeof PlanSchema>;

/**
 * One `POST /accounts/:customer_id/plan` call. Every call is recorded, also one that sets the plan the
 * account already has (then `changed` is false), so the ledger shows what the caller asked for.
 */
export const PlanChangeSchema = z.object({
  id: z.string(),
  customer_id: z.string(),
  previous_plan: PlanSchema,
  plan: PlanSchema,
  changed: z.boolean(),
  idempotency_key: z.string().nullable(),
  traceparent: z.string().nullable(),
  created_at: TimestampSchema,
});
/** One `POST /accounts/:customer_id/plan` call. */
export type PlanChange = z.infer<typeof PlanChangeSchema>;

/** `GET /ledger`: every side effect applied so far, each list in creation order (oldest first). */
export const LedgerSchema = z.object({
  refunds: z.array(RefundSchema),
  emails: z.array(EmailSchema),
  tickets: z.array(TicketSchema),
  credits: z.array(CreditSchema),
  plan_changes: z.array(PlanChangeSchema),
});
/** Every side effect the demo services applied so far. */
export type Ledger = z.infer<typeof LedgerSchema>;

/**
 * `POST /faults`: fault injection for requests whose `"METHOD /path"` starts with `endpoint`
 * (`"POST /refunds"`); an `endpoint` that begins with `/` matches the path under any method (`"/kb"`).
 * Setting a fault for an endpoint replaces the earlier fault for the same endpoint; when several
 * endpoints match a request, the longest (most specific) one applies. `/ledger`, `/faults` and
 * `/healthz` are never faulted.
 *
 * - `error_rate` (0..1): share of matching requests that fail, drawn by a counter, not at random:
 *   request n (from 0) fails when `floor((n+1)*rate) > floor(n*rate)`, so 1 fails every request and
 *   0.5 fails the 2nd, 4th, …. Default: 1, except for a spec that sets only `latency_ms` (then 0).
 * - `status`: HTTP status of a failed request (default 503); body
 *   `{ error: { type: 'fault_injected', message } }`.
 * - `times`: only the next N matching requests are affected; then the fault removes itself.
 * - `latency_ms`: delay before every matching request is answered (or failed).
 * - `hang`: a failed request is never answered; the socket stays open until the client gives up or
 *   the server closes.
 * - `after_apply`: the request is processed and its side effect committed first, then the latency,
 *   hang or error happens: "the downstream applied it but the caller never heard back".
 */
export const FaultSpecSchema = z.object({
  endpoint: z
    .string()
    .regex(/^(\/|[A-Z]+( \/|$))/, 'must start with "/" or with an HTTP method such as "POST /refunds"'),
  error_rate: z.number().min(0).max(1).optional(),
  status: z.number().int().min(400).max(599).optional(),
  times: z.number().int().min(1).optional(),
  latency_ms: z.number().int().min(0).max(600_000).optional(),
  hang: z.boolean().optional(),
  after_apply: z.boolean().optional(),
});
/** `GET /stats`: request counts by `METHOD /segment`, and their total. */
export const StatsSchema = z.object({ requests: z.record(z.string(), z.number().int().nonnegative()), total: z.number().int().nonnegative() });
/** Request counts of the demo services. */
export type Stats = z.infer<typeof StatsSchema>;

/** A fault injection spec, as sent to `POST /faults`. */
export type FaultSpec = z.infer<typeof FaultSpecSchema>;

/** A fault as `GET /faults` lists it: the spec with defaults filled in, and its counters. */
export const ActiveFaultSchema = z.object({
  endpoint: z.string(),
  error_rate: z.number(),
  status: z.number().int(),
  times: z.number().int().nullable(),
  latency_ms: z.number().int(),
  hang: z.boolean(),
  after_apply: z.boolean(),
  /** How many requests matched this fault so far. */
  matched: z.number().int(),
  /** How many more requests it affects before it removes itself; null when `times` was not set. */
  remaining: z.number().int().nullable(),
});
/** A fault as `GET /faults` lists it. */
export type ActiveFault = z.infer<typeof ActiveFaultSchema>;

/** The error body every demo endpoint answers with on failure. `param` names the bad field of a 400. */
export const DemoErrorBodySchema = z.object({
  error: z.object({ type: z.string(), message: z.string(), param: z.string().optional() }),
});
/** The error body every demo endpoint answers with on failure. */
export type DemoErrorBody = z.infer<typeof DemoErrorBodySchema>;

/** A non-2xx answer from the demo services, with the `type` from its error body. */
export class DemoHttpError extends Error {
  override readonly name = 'DemoHttpError';
  /**
   * @param status HTTP status of the answer.
   * @param type `error.type` from the body, or `http_error` when the body was not a demo error.
   * @param message `error.message` from the body, or the status line.
   */
  constructor(
    readonly status: number,
    readonly type: string,
    message: string,
  ) {
    super(message);
  }
}

/** The typed client returned by {@link demoClient}. */
export interface DemoClient {
  /** `GET /ledger`: every side effect applied so far. */
  ledger(): Promise<Ledger>;
  /** `POST /faults`: set (or replace) the fault for `f.endpoint`. */
  setFault(f: FaultSpec): Promise<void>;
  /** `DELETE /faults`: clear every fault. */
  clearFaults(): Promise<void>;
  /** `GET /faults`: the faults in force, with their counters. */
  faults(): Promise<ActiveFault[]>;
  /** `GET /stats`: business requests received so far, by method and first path segment (`GET /orders`). */
  stats(): Promise<Stats>;
}

/**
 * A typed client for the demo services' control endpoints.
 *
 * @param baseUrl the server's base URL, e.g. `DemoServices.url` or `KEEL_DEMO_URL`.
 * @throws {DemoHttpError} from each method when the server answers with a non-2xx status.
 */
export function demoClient(baseUrl: string): DemoClient {
  const base = baseUrl.replace(/\/+$/, '');

  async function call(method: string, path: string, body?: unknown): Promise<unknown> {
    const init: RequestInit = { method };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers = { 'content-type': 'application/json' };
    }
    const res = await fetch(`${base}${path}`, init);
    const text = await res.text();
    const json: unknown = text === '' ? undefined : JSON.parse(text);
    if (!res.ok) {
      const parsed = DemoErrorBodySchema.safeParse(json);
      if (parsed.success) throw new DemoHttpError(res.status, parsed.data.error.type, parsed.data.error.message);
      throw new DemoHttpError(res.status, 'http_error', `${method} ${path}: HTTP ${res.status}`);
    }
    return json;
  }

  return {
    async ledger() {
      return LedgerSchema.parse(await call('GET', '/ledger'));
    },
    async setFault(f) {
      await call('POST', '/faults', FaultSpecSchema.parse(f));
    },
    async clearFaults() {
      await call('DELETE', '/faults');
    },
    async faults() {
      return z.object({ faults: z.array(ActiveFaultSchema) }).parse(await call('GET', '/faults')).faults;
    },
    async stats() {
      return StatsSchema.parse(await call('GET', '/stats'));
    },
  };
}
