/**
 * How the example tools talk to their downstream systems (the demo services, or a real deployment at
 * the same URL shape) through `ctx.fetch`, which keeps them to their allowed hosts: JSON over HTTP, the
 * idempotency key as `Idempotency-Key` on writes, the activity's abort signal and the session's trace
 * (`ctx.traceHeaders`) on every request (`ctx.fetch` adds both). A 4xx answer
 * is the downstream refusing this input: a `ToolError` the model can read. A 5xx answer or a network
 * failure is transient: a plain error the tier's retry policy handles.
 */
import { ToolError, type StatusCheckResult, type ToolContext } from 'keel/workflow';

/**
 * Calls the downstream and returns its JSON body. Writes carry `ctx.idempotencyKey` unless
 * `opts.idempotencyKey` says otherwise (an undo must not reuse its original call's key).
 */
export async function downstream<T = unknown>(
  ctx: ToolContext,
  method: 'GET' | 'POST',
  path: string,
  body?: unknown,
  opts: { idempotencyKey?: string } = {},
): Promise<T> {
  const base = ctx.env.KEEL_DEMO_URL;
  if (!base) throw new ToolError('this tool is not configured: KEEL_DEMO_URL is not set on the worker');
  const headers: Record<string, string> = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (method !== 'GET') headers['idempotency-key'] = opts.idempotencyKey ?? ctx.idempotencyKey;
  // ctx.fetch: only the tool's allowed hosts; it adds the session's trace headers and the abort signal.
  const res = await ctx.fetch(new URL(path, base), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  const json = text ? (JSON.parse(text) as unknown) : undefined;
  if (res.ok) return json as T;
  const message = (json as { error?: { message?: string } } | undefined)?.error?.message ?? text.slice(0, 200);
  if (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429) {
    throw new ToolError(`${method} ${path} was refused (${res.status}): ${message}`);
  }
  throw new Error(`${method} ${path} failed (${res.status}): ${message}`);
}

/** Records a status check or compensation can find by the original call's idempotency key. */
export async function findByKey<T>(ctx: ToolContext, collection: string): Promise<T[]> {
  const found = await downstream<Record<string, T[]>>(ctx, 'GET', `/${collection}?idempotency_key=${encodeURIComponent(ctx.idempotencyKey)}`);
  return found[collection] ?? [];
}

/** A status check that looks the call up by its idempotency key in one collection. */
export function statusByKey(collection: string) {
  return async (_input: unknown, ctx: ToolContext): Promise<StatusCheckResult> => {
    const [first] = await findByKey<unknown>(ctx, collection);
    return first === undefined ? { applied: false } : { applied: true, result: first };
  };
}

/**
 * An undo that finds what the original call did by its idempotency key and posts one undo request for
 * each (its own key, derived from the original), so it is a no-op when nothing happened and safe to retry.
 */
export function undoByKey(collection: string, undoPath: (id: string) => string, body: unknown = {}) {
  return async (_input: unknown, ctx: ToolContext): Promise<{ undone: string[] }> => {
    const rows = await findByKey<{ id: string }>(ctx, collection);
    for (const row of rows) {
      await downstream(ctx, 'POST', undoPath(row.id), body, { idempotencyKey: `${ctx.idempotencyKey}:undo:${row.id}` });
    }
    return { undone: rows.map((r) => r.id) };
  };
}
