// The demo services' HTTP server: a node:http server standing in for the downstream systems the
// example tools call (CRM and orders, payments, email outbox, knowledge base, tickets, credits, plans).
// It routes JSON requests to the SQLite ledger (`ledger.ts`), applies Stripe's Idempotency-Key rules to
// every business POST (the write and its key record commit in one transaction; a repeat with the same
// key, path and body replays the stored answer with `Idempotent-Replayed: true`; a repeat with a
// different body or path is a 409), and injects faults (latency, errors, hangs, and failures after the
// write was applied) so tests can rehearse timeouts and unknown outcomes. `close()` destroys open
// sockets, so a hanging request never keeps a test alive.
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { z } from 'zod';
import { FaultSpecSchema, PlanSchema, type ActiveFault, type FaultSpec } from './client.js';
import { DemoLedger, LedgerError, type KbArticle, type WriteMeta } from './ledger.js';

/** Options of {@link startDemoServices}. */
export interface DemoServicesOptions {
  /** TCP port; 0 (the default) picks a free one. */
  port?: number;
  /** Interface to listen on; default `127.0.0.1`. */
  host?: string;
  /** SQLite file for the ledger; default `':memory:'` (gone when the server closes). */
  dbFile?: string;
  /** Knowledge-base articles beside the seeded ones (what others wrote: the red-team suite plants injections). */
  kbArticles?: KbArticle[];
}

/** A running demo services server. */
export interface DemoServices {
  /** Base URL without a trailing slash, e.g. `http://127.0.0.1:41234`. */
  url: string;
  /** The port it listens on. */
  port: number;
  /** Stop listening, destroy open (also hanging) connections and close the ledger. */
  close(): Promise<void>;
}

/** Largest accepted request body: 1 MiB; larger bodies get 413. */
const MAX_BODY_BYTES = 1024 * 1024;
/** Beyond this, an oversized body is not drained any more: the socket is destroyed. */
const MAX_DRAIN_BYTES = 16 * MAX_BODY_BYTES;
/** Stripe's limit on idempotency key length. */
const MAX_KEY_LENGTH = 255;
/** Paths that fault injection never touches, so tests can always inspect and reset the server. */
const UNFAULTED_PATHS = ['/ledger', '/faults', '/healthz', '/stats'];

/** An HTTP error answered as `{ error: { type, message, param? } }`. */
class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    message: string,
    readonly param?: string,
  ) {
    super(message);
  }
}

interface Reply {
  status: number;
  body: unknown;
  headers?: Record<string, string>;
}

interface RouteContext {
  params: Record<string, string>;
  query: URLSearchParams;
  body: unknown;
  meta: WriteMeta;
}

interface Route {
  method: 'GET' | 'POST' | 'DELETE';
  pattern: RegExp;
  paramNames: string[];
  /** A business write: Idempotency-Key rules apply and it runs in one ledger transaction. */
  write: boolean;
  handler: (ctx: RouteContext) => Reply;
}

function route(method: Route['method'], path: string, handler: Route['handler'], write = false): Route {
  const paramNames: string[] = [];
  const source = path.replace(/:([a-z_]+)/g, (_m, name: string) => {
    paramNames.push(name);
    return '([^/]+)';
  });
  return { method, pattern: new RegExp(`^${source}$`), paramNames, write, handler };
}

/** Parse `value` with `schema`, or throw a 400 naming the first bad field. */
function parse<T>(schema: z.ZodType<T>, value: unknown, where: 'body' | 'query'): T {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const param = issue && issue.path.length > 0 ? issue.path.map(String).join('.') : undefined;
  const message = issue?.message ?? 'invalid input';
  throw new HttpError(
    400,
    'invalid_request',
    param ? `${param}: ${message}` : `request ${where}: ${message}`,
    param,
  );
}

/** JSON with object keys sorted, so a body's hash does not depend on key order or whitespace. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

const IdFilterSchema = z.object({ idempotency_key: z.string().min(1).optional() });

const nonEmpty = (max: number) => z.string().trim().min(1).max(max);

const TicketInputSchema = z.object({
  customer_id: nonEmpty(64),
  subject: nonEmpty(200),
  body: nonEmpty(20_000),
});
const CloseInputSchema = z.object({ reason: z.string().max(2_000).optional() });
const RefundInputSchema = z.object({
  order_id: nonEmpty(64),
  amount_cents: z.number().int().positive(),
  reason: nonEmpty(2_000),
});
const EmailInputSchema = z.object({
  to: z.email(),
  subject: nonEmpty(200),
  body: nonEmpty(100_000),
});
const CreditInputSchema = z.object({
  customer_id: nonEmpty(64),
  amount_cents: z.number().int().positive(),
  reason: nonEmpty(2_000),
});
const PlanInputSchema = z.object({ plan: PlanSchema });

/** One fault in force, with its counters. */
interface FaultState {
  spec: Omit<ActiveFault, 'matched' | 'remaining'>;
  matched: number;
  remaining: number | null;
}

/** What a fault does to one request. */
interface FaultDecision {
  latencyMs: number;
  /** Never answer. */
  hang: boolean;
  /** Answer with `status` instead of the real answer. */
  fail: boolean;
  status: number;
  endpoint: string;
  afterApply: boolean;
}

/** The fault table: one fault per endpoint prefix, the longest matching prefix applies. */
class Faults {
  private readonly byEndpoint = new Map<string, FaultState>();

  set(f: FaultSpec): ActiveFault {
    const onlyLatency = f.latency_ms !== undefined && f.status === undefined && f.hang !== true;
    const state: FaultState = {
      spec: {
        endpoint: f.endpoint,
        error_rate: f.error_rate ?? (onlyLatency ? 0 : 1),
        status: f.status ?? 503,
        times: f.times ?? null,
        latency_ms: f.latency_ms ?? 0,
        hang: f.hang ?? false,
        after_apply: f.after_apply ?? false,
      },
      matched: 0,
      remaining: f.times ?? null,
    };
    this.byEndpoint.set(f.endpoint, state);
    return this.view(state);
  }

  clear(): void {
    this.byEndpoint.clear();
  }

  list(): ActiveFault[] {
    return [...this.byEndpoint.values()].map((s) => this.view(s));
  }

  /** The fault decision for one request (counting it), or undefined when no fault matches. */
  take(method: string, path: string): FaultDecision | undefined {
    if (UNFAULTED_PATHS.some((p) => path === p || path.startsWith(`${p}/`))) return undefined;
    const target = `${method} ${path}`;
    let best: FaultState | undefined;
    for (const s of this.byEndpoint.values()) {
      const e = s.spec.endpoint;
      const hit = e.startsWith('/') ? path.startsWith(e) : target.startsWith(e);
      if (hit && (!best || e.length > best.spec.endpoint.length)) best = s;
    }
    if (!best) return undefined;
    const n = best.matched++;
    const rate = best.spec.error_rate;
    const drawn = Math.floor((n + 1) * rate) > Math.floor(n * rate);
    if (best.remaining !== null && --best.remaining <= 0) this.byEndpoint.delete(best.spec.endpoint);
    return {
      latencyMs: best.spec.latency_ms,
      hang: drawn && best.spec.hang,
      fail: drawn && !best.spec.hang,
      status: best.spec.status,
      endpoint: best.spec.endpoint,
      afterApply: best.spec.after_apply,
    };
  }

  private view(s: FaultState): ActiveFault {
    return { ...s.spec, matched: s.matched, remaining: s.remaining };
  }
}

/** Read a request body up to {@link MAX_BODY_BYTES}; `tooLarge` when it was bigger (the rest is drained). */
function readBody(req: IncomingMessage): Promise<{ body: Buffer; tooLarge: boolean }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_DRAIN_BYTES) {
        done = true;
        req.destroy();
        reject(new Error('request body far over the limit; connection dropped'));
      } else if (size <= MAX_BODY_BYTES) {
        chunks.push(chunk);
      }
    });
    req.on('end', () => {
      done = true;
      resolve({ body: Buffer.concat(chunks), tooLarge: size > MAX_BODY_BYTES });
    });
    req.on('error', (err) => {
      if (!done) reject(err);
      done = true;
    });
    req.on('close', () => {
      if (!done) reject(new Error('request closed before its body was complete'));
      done = true;
    });
  });
}

function send(res: ServerResponse, reply: Reply): void {
  if (res.destroyed || res.writableEnded) return;
  const text = JSON.stringify(reply.body);
  res.writeHead(reply.status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': String(Buffer.byteLength(text)),
    ...reply.headers,
  });
  res.end(text);
}

function errorReply(status: number, type: string, message: string, param?: string, headers?: Record<string, string>): Reply {
  return { status, body: { error: param ? { type, message, param } : { type, message } }, ...(headers ? { headers } : {}) };
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/**
 * Start the demo services on `host:port` with a ledger in `dbFile`.
 *
 * Endpoints (JSON in and out; errors are `{ error: { type, message, param? } }`):
 * `GET /healthz`; `GET /customers/:id`, `GET /customers?email=`; `GET /orders/:id`;
 * `GET /kb/search?q=&limit=3`; `POST /tickets`, `GET /tickets/:id`, `GET /tickets?idempotency_key=`,
 * `POST /tickets/:id/close`; `POST /refunds`, `GET /refunds?idempotency_key=&order_id=`;
 * `POST /emails`, `GET /emails?idempotency_key=`; `POST /credits`, `GET /credits/:id`,
 * `GET /credits?idempotency_key=`, `POST /credits/:id/revoke`; `POST /accounts/:customer_id/plan`;
 * `GET /ledger`; `GET|POST|DELETE /faults`. Every business POST honours `Idempotency-Key`.
 *
 * @param opts port (default 0 = a free port), host (default `127.0.0.1`), dbFile (default `':memory:'`).
 * @returns the base URL, the port, and `close()`.
 */
export async function startDemoServices(opts: DemoServicesOptions = {}): Promise<DemoServices> {
  const host = opts.host ?? '127.0.0.1';
  const ledger = new DemoLedger(opts.dbFile ?? ':memory:', opts.kbArticles);
  const faults = new Faults();
  /** Business requests received, by method and first path segment (`GET /orders`). */
  const stats = new Map<string, number>();
  const timers = new Set<NodeJS.Timeout>();
  let closed = false;

  const sleep = (ms: number): Promise<void> =>
    new Promise((resolve) => {
      const t = setTimeout(() => {
        timers.delete(t);
        resolve();
      }, ms);
      timers.add(t);
    });

  const list = <T>(name: string, rows: (f: { idempotency_key?: string }) => T[]) =>
    route('GET', `/${name}`, ({ query }) => ({
      status: 200,
      body: { [name]: rows(parse(IdFilterSchema, Object.fromEntries(query), 'query')) },
    }));

  const notFound = (what: string, id: string): never => {
    throw new HttpError(404, 'not_found', `${what} ${id} not found`);
  };

  const routes: Route[] = [
    route('GET', '/healthz', () => ({ status: 200, body: { ok: true } })),

    route('GET', '/customers/:id', ({ params }) => {
      const id = params.id ?? '';
      return { status: 200, body: ledger.getCustomer(id) ?? notFound('customer', id) };
    }),
    route('GET', '/customers', ({ query }) => {
      const { email } = parse(z.object({ email: z.string().trim().min(1) }), Object.fromEntries(query), 'query');
      return { status: 200, body: ledger.findCustomerByEmail(email) ?? notFound('customer with email', email) };
    }),
    route('GET', '/orders/:id', ({ params }) => {
      const id = params.id ?? '';
      return { status: 200, body: ledger.getOrder(id) ?? notFound('order', id) };
    }),
    route('GET', '/kb/search', ({ query }) => {
      const { q, limit } = parse(
        z.object({ q: z.string().trim().min(1), limit: z.coerce.number().int().min(1).max(20).default(3) }),
        Object.fromEntries(query),
        'query',
      );
      return { status: 200, body: { results: ledger.searchKb(q, limit) } };
    }),

    route(
      'POST',
      '/tickets',
      ({ body, meta }) => ({ status: 201, body: ledger.createTicket(parse(TicketInputSchema, body, 'body'), meta) }),
      true,
    ),
    list('tickets', (f) => ledger.listTickets(f)),
    route('GET', '/tickets/:id', ({ params }) => {
      const id = params.id ?? '';
      return { status: 200, body: ledger.getTicket(id) ?? notFound('ticket', id) };
    }),
    route(
      'POST',
      '/tickets/:id/close',
      ({ params, body }) => ({
        status: 200,
        body: ledger.closeTicket(params.id ?? '', parse(CloseInputSchema, body, 'body').reason),
      }),
      true,
    ),

    route(
      'POST',
      '/refunds',
      ({ body, meta }) => ({ status: 201, body: ledger.createRefund(parse(RefundInputSchema, body, 'body'), meta) }),
      true,
    ),
    route('GET', '/refunds', ({ query }) => {
      const f = parse(IdFilterSchema.extend({ order_id: z.string().min(1).optional() }), Object.fromEntries(query), 'query');
      return { status: 200, body: { refunds: ledger.listRefunds(f) } };
    }),

    route(
      'POST',
      '/emails',
      ({ body, meta }) => ({ status: 201, body: ledger.createEmail(parse(EmailInputSchema, body, 'body'), meta) }),
      true,
    ),
    list('emails', (f) => ledger.listEmails(f)),

    route(
      'POST',
      '/credits',
      ({ body, meta }) => ({ status: 201, body: ledger.createCredit(parse(CreditInputSchema, body, 'body'), meta) }),
      true,
    ),
    list('credits', (f) => ledger.listCredits(f)),
    route('GET', '/credits/:id', ({ params }) => {
      const id = params.id ?? '';
      return { status: 200, body: ledger.getCredit(id) ?? notFound('credit', id) };
    }),
    route('POST', '/credits/:id/revoke', ({ params }) => ({ status: 200, body: ledger.revokeCredit(params.id ?? '') }), true),

    route(
      'POST',
      '/accounts/:customer_id/plan',
      ({ params, body, meta }) => ({
        status: 200,
        body: ledger.setPlan(params.customer_id ?? '', parse(PlanInputSchema, body, 'body').plan, meta),
      }),
      true,
    ),

    route('GET', '/ledger', () => ({ status: 200, body: ledger.snapshot() })),
    route('GET', '/stats', () => ({ status: 200, body: { requests: Object.fromEntries(stats), total: [...stats.values()].reduce((a, b) => a + b, 0) } })),
    route('GET', '/faults', () => ({ status: 200, body: { faults: faults.list() } })),
    route('POST', '/faults', ({ body }) => ({ status: 201, body: faults.set(parse(FaultSpecSchema, body, 'body')) })),
    route('DELETE', '/faults', () => {
      faults.clear();
      return { status: 200, body: { faults: [] } };
    }),
  ];

  /** Route and run one request synchronously; every error becomes an error reply. */
  function processRequest(req: IncomingMessage, method: string, url: URL, raw: Buffer): Reply {
    try {
      const path = url.pathname;
      let allowed: string[] = [];
      let match: { r: Route; m: RegExpExecArray } | undefined;
      for (const r of routes) {
        const m = r.pattern.exec(path);
        if (!m) continue;
        if (r.method === method) {
          match = { r, m };
          break;
        }
        allowed.push(r.method);
      }
      if (!match) {
        allowed = [...new Set(allowed)];
        if (allowed.length > 0) {
          return errorReply(405, 'method_not_allowed', `${method} is not allowed on ${path}`, undefined, {
            allow: allowed.join(', '),
          });
        }
        throw new HttpError(404, 'not_found', `no endpoint ${method} ${path}`);
      }
      const { r, m } = match;
      const params: Record<string, string> = {};
      r.paramNames.forEach((name, i) => {
        params[name] = decodeURIComponent(m[i + 1] ?? '');
      });

      let body: unknown = {};
      if (method !== 'GET' && raw.length > 0) {
        try {
          body = JSON.parse(raw.toString('utf8'));
        } catch {
          throw new HttpError(400, 'invalid_json', 'request body is not valid JSON');
        }
      }

      const key = header(req, 'idempotency-key');
      if (key !== undefined && (key.length === 0 || key.length > MAX_KEY_LENGTH)) {
        throw new HttpError(400, 'invalid_request', `Idempotency-Key must be 1 to ${MAX_KEY_LENGTH} characters`, 'Idempotency-Key');
      }
      const traceparent = header(req, 'traceparent')?.slice(0, 512) ?? null;
      const ctx: RouteContext = {
        params,
        query: url.searchParams,
        body,
        meta: { idempotencyKey: r.write ? (key ?? null) : null, traceparent },
      };
      if (!r.write) return r.handler(ctx);
      return ledger.transaction(() => runWrite(r, ctx, method, path, key, body));
    } catch (err) {
      if (err instanceof HttpError) return errorReply(err.status, err.type, err.message, err.param);
      if (err instanceof LedgerError) return errorReply(err.status, err.type, err.message);
      if (err instanceof URIError) return errorReply(400, 'invalid_request', `malformed URL: ${err.message}`);
      return errorReply(500, 'internal_error', err instanceof Error ? err.message : String(err));
    }
  }

  /**
   * A business write under Stripe's idempotency rules; runs inside the ledger transaction, so the
   * effect and the key record commit together. Only successful answers are stored: a request that
   * failed applied nothing, so retrying it with the same key simply tries again.
   */
  function runWrite(r: Route, ctx: RouteContext, method: string, path: string, key: string | undefined, body: unknown): Reply {
    if (key === undefined) return r.handler(ctx);
    const bodyHash = createHash('sha256').update(canonicalJson(body)).digest('hex');
    const stored = ledger.getIdempotencyRecord(key);
    if (stored) {
      if (stored.method !== method || stored.path !== path || stored.body_hash !== bodyHash) {
        const what = stored.method !== method || stored.path !== path ? `${stored.method} ${stored.path}` : 'a different body';
        throw new HttpError(
          409,
          'idempotency_key_reused',
          `Idempotency-Key ${key} was already used with ${what}; use a new key for a different request`,
        );
      }
      return {
        status: stored.status,
        body: JSON.parse(stored.response_body) as unknown,
        headers: { 'idempotent-replayed': 'true', 'idempotency-key': key },
      };
    }
    const reply = r.handler(ctx);
    if (reply.status >= 200 && reply.status < 300) {
      ledger.saveIdempotencyRecord({
        key,
        method,
        path,
        body_hash: bodyHash,
        status: reply.status,
        response_body: JSON.stringify(reply.body),
      });
    }
    return { ...reply, headers: { ...reply.headers, 'idempotency-key': key } };
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const method = (req.method ?? 'GET').toUpperCase();
      const url = new URL(req.url ?? '/', 'http://demo.invalid');
      const { body, tooLarge } = await readBody(req);
      if (closed) return;
      if (tooLarge) {
        send(res, errorReply(413, 'payload_too_large', `request body exceeds ${MAX_BODY_BYTES} bytes`));
        return;
      }

      // Every business request counts, faulted or not: how hard a broken downstream was hit.
      if (!UNFAULTED_PATHS.includes(url.pathname)) {
        const key = `${method} /${url.pathname.split('/')[1] ?? ''}`;
        stats.set(key, (stats.get(key) ?? 0) + 1);
      }
      const fault = faults.take(method, url.pathname);
      const injected = fault && errorReply(fault.status, 'fault_injected', `injected fault on "${fault.endpoint}" (HTTP ${fault.status})`);
      if (fault && !fault.afterApply) {
        if (fault.latencyMs > 0) await sleep(fault.latencyMs);
        if (closed || fault.hang) return; // a hang: keep the socket open, never answer
        if (fault.fail && injected) return send(res, injected);
      }

      const reply = processRequest(req, method, url, body);

      if (fault?.afterApply) {
        if (fault.latencyMs > 0) await sleep(fault.latencyMs);
        if (closed || fault.hang) return;
        if (fault.fail && injected) return send(res, injected);
      }
      send(res, reply);
    } catch (err) {
      // Only transport trouble lands here (the client went away mid-body); there is nobody to answer.
      if (!res.destroyed && !res.headersSent) {
        send(res, errorReply(400, 'bad_request', err instanceof Error ? err.message : String(err)));
      }
    }
  }

  const server = createServer((req, res) => {
    void handle(req, res);
  });

  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(opts.port ?? 0, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (err) {
    ledger.close();
    throw err;
  }

  const port = (server.address() as AddressInfo).port;
  const urlHost = host.includes(':') ? `[${host}]` : host;

  return {
    url: `http://${urlHost}:${port}`,
    port,
    async close() {
      if (closed) return;
      closed = true;
      for (const t of timers) clearTimeout(t);
      timers.clear();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      ledger.close();
    },
  };
}
