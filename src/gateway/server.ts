/**
 * `keel serve`: the HTTP gateway applications talk to. It starts sessions (with an optional client-chosen
 * id, so a retried request starts one session), sends follow-up messages, reads status and results,
 * cancels, lists and decides approvals, and streams a running session to the client as Server-Sent
 * Events: the model's text as it is generated (with retractions when a model attempt fails), tool
 * progress, approval requests, and finally the result. It keeps no state of its own: every answer comes
 * from Temporal (and the stream from the bus the workers publish on), so any number of gateways can run
 * behind a load balancer. Every `/v1` call needs a bearer token; the caller's identity is the session's
 * user and an approval's approver, never a field of the body. `GET /openapi.json` describes the API;
 * `GET /inbox` is the approvals page.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WorkflowNotFoundError } from '@temporalio/client';
import { failureMessage, SessionInputError, type KeelClient } from '../client.js';
import { subscribeSession, type SessionStreamEvent, type StreamBus } from '../stream/index.js';
import type { SessionStatus } from '../workflows/types.js';
import type { Authenticator, Principal } from './auth.js';
import { HttpError, readJson, sendError, sendJson } from './http.js';
import { INBOX_HTML, INBOX_SCRIPT } from './inbox.js';
import { openApiDocument } from './openapi.js';
import { DecisionRequestSchema, MessageRequestSchema, StartRequestSchema } from './schemas.js';

/** Options of {@link startGateway}. */
export interface GatewayOptions {
  client: KeelClient;
  auth: Authenticator;
  /** Where workers publish stream events; without one, streams carry status, approvals and the result only. */
  bus?: StreamBus;
  /** Interface to bind (`127.0.0.1`). */
  host?: string;
  /** Port (8080); 0 picks a free one. */
  port?: number;
  /** Roles that see every pending approval and may decide through the inbox (`approver`, `admin`). */
  approverRoles?: string[];
  /** Roles that may read and act on any session, not only their own (`admin`). */
  adminRoles?: string[];
  /** How often a stream re-reads the session's status for approvals and steps, in ms (1,000). */
  statusIntervalMs?: number;
  /** One line per request: method, route, status, user; never a token or a body. */
  log?: (line: string) => void;
}

/** A running gateway. */
export interface Gateway {
  /** Base URL, e.g. `http://127.0.0.1:8080`. */
  url: string;
  port: number;
  /** Ends open streams and stops listening. */
  close(): Promise<void>;
}

type Handler = (req: IncomingMessage, res: ServerResponse, who: Principal, params: string[], url: URL) => Promise<void>;

/** Starts the gateway. */
export async function startGateway(opts: GatewayOptions): Promise<Gateway> {
  const { client, auth } = opts;
  const approverRoles = opts.approverRoles ?? ['approver', 'admin'];
  const adminRoles = opts.adminRoles ?? ['admin'];
  const statusIntervalMs = opts.statusIntervalMs ?? 1_000;
  const streams = new Set<() => void>();
  const isAdmin = (who: Principal) => who.roles.some((r) => adminRoles.includes(r));

  /** The session, if the caller may see it; another user's session is "not found", so ids do not leak. */
  const ownSession = async (who: Principal, sessionId: string): Promise<void> => {
    let user: string | undefined;
    try {
      user = await client.sessionUser(sessionId);
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) throw new HttpError(404, 'not_found', `no session ${sessionId}`);
      throw err;
    }
    if (user !== who.user && !isAdmin(who)) throw new HttpError(404, 'not_found', `no session ${sessionId}`);
  };

  const startSession: Handler = async (req, res, who) => {
    const body = await readJson(req, StartRequestSchema);
    const { budget, ...rest } = body;
    let started;
    try {
      started = await client.startSession({
        ...rest,
        ...(budget ? { budget } : {}),
        user: { id: who.user, roles: who.roles },
        ...(body.sessionId ? { idempotent: true } : {}),
      } as Parameters<KeelClient['startSession']>[0]);
    } catch (err) {
      if (err instanceof SessionInputError) throw new HttpError(400, 'invalid_request', err.message);
      throw err;
    }
    if (started.existing) {
      // A retry of the same request: the same session, if it is the caller's.
      await ownSession(who, started.sessionId).catch(() => {
        throw new HttpError(409, 'conflict', `session id ${started.sessionId} is taken; choose another`);
      });
    }
    sendJson(res, started.existing ? 200 : 201, { sessionId: started.sessionId, created: !started.existing }, { location: `/v1/sessions/${encodeURIComponent(started.sessionId)}` });
  };

  const status: Handler = async (_req, res, who, [id]) => {
    await ownSession(who, id!);
    sendJson(res, 200, await sessionStatus(client, id!));
  };

  const result: Handler = async (_req, res, who, [id], url) => {
    const wait = url.searchParams.get('wait');
    const waitSeconds = wait === null ? 0 : Number(wait);
    if (!Number.isFinite(waitSeconds) || waitSeconds < 0 || waitSeconds > 60) {
      throw new HttpError(400, 'invalid_request', `wait: expected seconds between 0 and 60 (got '${wait}')`);
    }
    await ownSession(who, id!);
    const outcome = await sessionOutcome(client, id!, waitSeconds * 1000);
    sendJson(res, outcome.state === 'running' ? 202 : 200, outcome);
  };

  const message: Handler = async (req, res, who, [id]) => {
    const body = await readJson(req, MessageRequestSchema);
    await ownSession(who, id!);
    try {
      sendJson(res, 200, await client.sendMessage(id!, body.text));
    } catch (err) {
      if (err instanceof SessionInputError) throw new HttpError(409, 'conflict', err.message);
      throw err;
    }
  };

  const cancel: Handler = async (_req, res, who, [id]) => {
    await ownSession(who, id!);
    const { status: state } = await client.session(id!).describe();
    if (state.name !== 'RUNNING') throw new HttpError(409, 'conflict', `session ${id} has already ${state.name.toLowerCase()}`);
    await client.cancel(id!);
    sendJson(res, 202, { sessionId: id, cancelling: true });
  };

  const end: Handler = async (_req, res, who, [id]) => {
    await ownSession(who, id!);
    const { status: state } = await client.session(id!).describe();
    if (state.name !== 'RUNNING') throw new HttpError(409, 'conflict', `session ${id} has already ${state.name.toLowerCase()}`);
    await client.endConversation(id!);
    sendJson(res, 202, { sessionId: id, ending: true });
  };

  const approvals: Handler = async (_req, res, who) => {
    if (!who.roles.some((r) => approverRoles.includes(r))) {
      throw new HttpError(403, 'forbidden', `listing approvals needs one of the roles ${approverRoles.join(', ')}; ${who.user} has ${who.roles.join(', ') || 'none'}`);
    }
    const listing = await client.listPendingApprovals();
    sendJson(res, 200, { pending: listing.pending.filter((r) => r.status === 'pending'), unavailable: listing.unavailable });
  };

  const decide: Handler = async (req, res, who, [id, requestId]) => {
    const body = await readJson(req, DecisionRequestSchema);
    try {
      await client.session(id!).describe();
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) throw new HttpError(404, 'not_found', `no session ${id}`);
      throw err;
    }
    const outcome = await client.decide(id!, {
      requestId: requestId!,
      decision: body.decision,
      approver: { id: who.user, roles: who.roles },
      ...(body.reason ? { reason: body.reason } : {}),
    });
    if (outcome.accepted) {
      sendJson(res, 200, outcome);
      return;
    }
    const statusFor = { unknown_request: 404, already_decided: 409, not_allowed: 403, invalid: 400 } as const;
    throw new HttpError(statusFor[outcome.code], outcome.code, outcome.reason);
  };

  const stream: Handler = async (req, res, who, [id]) => {
    await ownSession(who, id!);
    await relay(req, res, id!);
  };

  /** Relays one session as Server-Sent Events until it ends or the client goes. */
  const relay = async (req: IncomingMessage, res: ServerResponse, sessionId: string): Promise<void> => {
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', connection: 'keep-alive', 'x-accel-buffering': 'no' });
    res.flushHeaders();
    let seq = 0;
    let open = true;
    const send = (event: string, data: unknown) => {
      if (open) res.write(`id: ${++seq}\nevent: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    };
    const unsubscribe = opts.bus ? await subscribeSession(opts.bus, sessionId, (e: SessionStreamEvent) => send(e.type, e)) : () => {};
    const seen = new Set<string>();
    let lastStep = '';
    const pollStatus = async () => {
      const s = await client.status(sessionId).catch(() => undefined);
      if (!s || !open) return;
      if (s.step !== lastStep) send('status', { state: s.state, step: s.step, iteration: s.iteration, toolCalls: s.toolCalls, usage: s.usage });
      lastStep = s.step;
      for (const a of s.approvals) {
        const key = `${a.requestId}:${a.status}`;
        if (seen.has(key)) continue;
        seen.add(key);
        send(a.status === 'pending' ? 'approval_requested' : 'approval_decided', a);
      }
    };
    const timer = setInterval(() => void pollStatus(), statusIntervalMs);
    const keepAlive = setInterval(() => open && res.write(': keep-alive\n\n'), 15_000);
    const stop = () => {
      if (!open) return;
      open = false;
      clearInterval(timer);
      clearInterval(keepAlive);
      unsubscribe();
      streams.delete(stop);
      res.end();
    };
    streams.add(stop);
    req.once('close', stop);
    await pollStatus();
    // The durable ending: the result from history, whichever worker ran the session.
    const ended = await sessionOutcome(client, sessionId, Infinity, () => !open);
    await pollStatus();
    send(ended.state === 'completed' ? 'result' : 'failed', ended);
    stop();
  };

  const routes: Array<[method: string, pattern: RegExp, handler: Handler]> = [
    ['POST', /^\/v1\/sessions$/, startSession],
    ['GET', /^\/v1\/sessions\/([^/]+)$/, status],
    ['GET', /^\/v1\/sessions\/([^/]+)\/result$/, result],
    ['GET', /^\/v1\/sessions\/([^/]+)\/stream$/, stream],
    ['POST', /^\/v1\/sessions\/([^/]+)\/messages$/, message],
    ['POST', /^\/v1\/sessions\/([^/]+)\/cancel$/, cancel],
    ['POST', /^\/v1\/sessions\/([^/]+)\/end$/, end],
    ['POST', /^\/v1\/sessions\/([^/]+)\/approvals\/([^/]+)$/, decide],
    ['GET', /^\/v1\/approvals$/, approvals],
  ];

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://gateway');
    let user = '-';
    try {
      if (req.method === 'GET' && url.pathname === '/healthz') return sendJson(res, 200, { ok: true });
      if (req.method === 'GET' && url.pathname === '/openapi.json') return sendJson(res, 200, openApiDocument());
      if (req.method === 'GET' && (url.pathname === '/inbox' || url.pathname === '/')) return sendPage(res, 'text/html', INBOX_HTML);
      if (req.method === 'GET' && url.pathname === '/inbox.js') return sendPage(res, 'text/javascript', INBOX_SCRIPT);
      const matches = routes.filter(([, pattern]) => pattern.test(url.pathname));
      if (matches.length === 0) throw new HttpError(404, 'not_found', `no route ${url.pathname} (see /openapi.json)`);
      const route = matches.find(([method]) => method === req.method);
      if (!route) throw new HttpError(405, 'method_not_allowed', `${req.method} is not allowed on ${url.pathname}; use ${matches.map(([m]) => m).join(', ')}`, { allow: matches.map(([m]) => m).join(', ') });
      const who = auth.authenticate(req.headers.authorization);
      if ('error' in who) throw new HttpError(401, 'unauthorized', who.error, { 'www-authenticate': 'Bearer' });
      user = who.user;
      const params = route[1].exec(url.pathname)!.slice(1).map(decodeURIComponent);
      await route[2](req, res, who, params, url);
    } catch (err) {
      const error = err instanceof HttpError ? err : new HttpError(502, 'upstream_error', `Temporal: ${failureMessage(err)}`);
      sendError(res, error);
    } finally {
      opts.log?.(`${req.method} ${url.pathname} ${res.statusCode} ${user}`);
    }
  };

  const server = http.createServer((req, res) => void handle(req, res));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 8080, opts.host ?? '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const host = opts.host ?? '127.0.0.1';
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}`,
    port,
    close: async () => {
      for (const stop of [...streams]) stop();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}

/** The status, from the session itself when a worker answers, else from Temporal's description. */
async function sessionStatus(client: KeelClient, sessionId: string): Promise<(SessionStatus | { state: string; step: string }) & { sessionId: string }> {
  try {
    const s = await client.temporal.withDeadline(Date.now() + 5_000, () => client.status(sessionId));
    return { sessionId, ...s };
  } catch {
    const { status } = await client.session(sessionId).describe();
    return { sessionId, state: status.name.toLowerCase(), step: 'no worker answered the status query' };
  }
}

/** The session's ending, waiting up to `waitMs` for it; `running` when it has not ended by then. */
async function sessionOutcome(client: KeelClient, sessionId: string, waitMs: number, abandoned?: () => boolean): Promise<Record<string, unknown> & { state: string }> {
  const handle = client.session(sessionId);
  const deadline = Date.now() + waitMs;
  for (;;) {
    const { status } = await handle.describe();
    if (status.name === 'COMPLETED') return { sessionId, state: 'completed', result: await handle.result() };
    if (status.name === 'CONTINUED_AS_NEW' || status.name === 'RUNNING') {
      if (Date.now() >= deadline || abandoned?.()) return { sessionId, state: 'running' };
      // Long-poll the result (it follows continue-as-new), in slices so an abandoned wait stops; then
      // describe again, which tells a failure from a cancellation.
      const slice = Math.min(deadline - Date.now(), 10_000);
      await client.temporal.withDeadline(Date.now() + slice, () => handle.result()).catch(() => undefined);
      continue;
    }
    const error = await handle.result().then(
      () => undefined,
      (err: unknown) => failureMessage(err),
    );
    return { sessionId, state: status.name === 'CANCELLED' ? 'cancelled' : status.name === 'TERMINATED' ? 'terminated' : status.name === 'TIMED_OUT' ? 'timed_out' : 'failed', ...(error ? { error } : {}) };
  }
}

function sendPage(res: ServerResponse, type: string, body: string): void {
  res.writeHead(200, {
    'content-type': `${type}; charset=utf-8`,
    'cache-control': 'no-store',
    // The page runs only its own script and talks only to this gateway.
    'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    'x-content-type-options': 'nosniff',
  });
  res.end(body);
}
