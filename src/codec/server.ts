/**
 * `keel codec-server`: Temporal's codec-server protocol over HTTP, so the Web UI and the `temporal` CLI can
 * show encrypted sessions to the people allowed to read them. `POST …/encode` and `POST …/decode` take and
 * return `{ "payloads": [ { "metadata": { k: base64 }, "data": base64 } ] }` (protobuf JSON); only the last
 * path segment picks the endpoint, as the protocol asks. Every request needs the bearer token
 * (`Authorization: Bearer <KEEL_CODEC_TOKEN>`), except through the Web UI path: the Web UI started with
 * `--ui-codec-endpoint` sends no custom header (it can only pass its own OIDC login token, and only over
 * HTTPS), so its endpoint carries a key derived from the token in the path, `/web-ui/<HMAC(token)>`, and a
 * request under that path is authorised by it. Browsers are let in only from the configured Web UI origins
 * (CORS, preflight answered). Neither the token nor the derived key is ever logged.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Payload, PayloadCodec } from '@temporalio/common';
import { JSONToPayload, payloadToJSON } from '@temporalio/common/lib/proto-utils.js';
import { z } from 'zod';

/** Largest request body accepted, in bytes (a batch of payloads; Temporal's own limit is 2 MiB per payload). */
export const MAX_BODY_BYTES = 16 * 1024 * 1024;

/** Headers a browser may send: what the Web UI sends (`X-Namespace`) and what other callers need. */
const ALLOWED_HEADERS = 'Authorization, Content-Type, X-Namespace';

/** Options of {@link startCodecServer}. */
export interface CodecServerOptions {
  /** The codec the workers use (the same keys). */
  codec: PayloadCodec;
  /** The bearer token callers must send (KEEL_CODEC_TOKEN); also keys the Web UI path. */
  token: string;
  /** Origins of the Web UIs allowed to call from a browser, e.g. `http://localhost:8233`. */
  origins: string[];
  /** Interface to bind; default `127.0.0.1`. */
  host?: string;
  /** Port; default 8234 (beside the dev server's Web UI on 8233); 0 picks a free one. */
  port?: number;
  /** One line per request (method, endpoint, status, how it was authorised); never a secret. */
  log?: (line: string) => void;
}

/** A running codec server. */
export interface CodecServer {
  /** Base URL, e.g. `http://127.0.0.1:8234`: callers with the token use `<url>/decode`. */
  url: string;
  port: number;
  /** The endpoint to give the Web UI (`--ui-codec-endpoint`): the base URL plus the token-derived path. */
  webUiEndpoint: string;
  /** Stops listening and drops open connections. */
  close(): Promise<void>;
}

/** The path under which the Web UI is authorised without a header: `/web-ui/<HMAC-SHA256(token)>`. */
function webUiPath(token: string): string {
  return `/web-ui/${createHmac('sha256', token).update('keel codec-server: web ui').digest('base64url')}`;
}

/**
 * The codec endpoint for a Web UI, given the codec server's base URL and token. Start the Web UI with it
 * (`temporal server start-dev --ui-codec-endpoint <it>`, or the UI's `codec.endpoint` setting); it grants
 * what the token grants, so keep it as private as the Web UI itself.
 */
export function webUiCodecEndpoint(baseUrl: string, token: string): string {
  return `${baseUrl.replace(/\/+$/, '')}${webUiPath(token)}`;
}

/** Constant-time string comparison (by digest, so lengths may differ). */
function same(a: string, b: string): boolean {
  const digest = (s: string) => createHash('sha256').update(s).digest();
  return timingSafeEqual(digest(a), digest(b));
}

const Base64String = z.string().regex(/^[A-Za-z0-9+/_-]*={0,2}$/, 'expected base64');
/** A `Payloads` message as protobuf JSON; other fields of a payload are kept and handed to the converter. */
const PayloadsBodySchema = z.object({
  payloads: z.array(z.looseObject({ metadata: z.record(z.string(), Base64String).optional(), data: Base64String.optional() })),
});

/** A request the server refuses, with its status and a one-line reason. */
class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

/** Reads a request body up to {@link MAX_BODY_BYTES}. */
async function readBody(req: http.IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new HttpError(413, `body over ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** Parses and checks a `{ payloads: [...] }` body. */
function parsePayloads(text: string): Payload[] {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new HttpError(400, 'body is not JSON; expected {"payloads": [{"metadata": {...}, "data": "<base64>"}]}');
  }
  const parsed = PayloadsBodySchema.safeParse(json);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.map(String).join('.') || '(body)'}: ${i.message}`).join('; ');
    throw new HttpError(400, `expected {"payloads": [{"metadata": {...}, "data": "<base64>"}]}: ${issues}`);
  }
  return parsed.data.payloads.map((p) => JSONToPayload(p as Parameters<typeof JSONToPayload>[0]) as Payload);
}

/**
 * Starts the codec server.
 * @throws Error when the port is taken (naming it)
 */
export async function startCodecServer(opts: CodecServerOptions): Promise<CodecServer> {
  const host = opts.host ?? '127.0.0.1';
  const log = opts.log ?? (() => {});
  const uiPath = webUiPath(opts.token);
  const origins = new Set(opts.origins.map((o) => o.replace(/\/+$/, '')));

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<{ status: number; via?: string; endpoint?: string }> => {
    const origin = req.headers.origin;
    const cors: Record<string, string> = { vary: 'Origin' };
    if (origin !== undefined) {
      if (!origins.has(origin)) throw new HttpError(403, `origin ${origin} is not allowed (keel codec-server --origin <Web UI URL>)`);
      Object.assign(cors, { 'access-control-allow-origin': origin, 'access-control-allow-credentials': 'true' });
    }
    const send = (status: number, body?: unknown, headers: Record<string, string> = {}) => {
      const text = body === undefined ? '' : JSON.stringify(body);
      res.writeHead(status, { ...cors, ...headers, ...(body === undefined ? {} : { 'content-type': 'application/json' }) });
      res.end(text);
    };
    const { pathname } = new URL(req.url ?? '/', 'http://codec');
    const slash = pathname.replace(/\/+$/, '').lastIndexOf('/');
    const endpoint = pathname.replace(/\/+$/, '').slice(slash + 1);
    const prefix = pathname.slice(0, Math.max(slash, 0));

    if (req.method === 'OPTIONS') {
      // Preflight: browsers send no credentials with it, so it is answered before the token check.
      send(204, undefined, {
        'access-control-allow-methods': 'POST, OPTIONS',
        'access-control-allow-headers': ALLOWED_HEADERS,
        'access-control-max-age': '600',
        ...(req.headers['access-control-request-private-network'] === 'true' ? { 'access-control-allow-private-network': 'true' } : {}),
      });
      return { status: 204, endpoint: 'preflight' };
    }
    if (endpoint !== 'encode' && endpoint !== 'decode') throw new HttpError(404, 'not found: POST /encode or /decode');
    if (req.method !== 'POST') throw new HttpError(405, `${endpoint} takes POST`, { allow: 'POST, OPTIONS' });

    const auth = req.headers.authorization;
    const bearer = auth?.match(/^Bearer\s+(.+)$/i)?.[1]?.trim();
    const via = bearer !== undefined && same(bearer, opts.token) ? 'bearer token' : same(prefix, uiPath) ? 'web-ui path' : undefined;
    if (via === undefined) {
      throw new HttpError(401, auth === undefined ? 'missing bearer token (Authorization: Bearer <KEEL_CODEC_TOKEN>)' : 'wrong bearer token', {
        'www-authenticate': 'Bearer realm="keel codec-server"',
      });
    }
    const payloads = parsePayloads(await readBody(req));
    let converted: Payload[];
    try {
      converted = endpoint === 'encode' ? await opts.codec.encode(payloads) : await opts.codec.decode(payloads);
    } catch (err) {
      throw new HttpError(400, err instanceof Error ? err.message : String(err));
    }
    send(200, { payloads: converted.map((p) => payloadToJSON(p)) });
    return { status: 200, via, endpoint: `${endpoint} (${payloads.length} payload${payloads.length === 1 ? '' : 's'})` };
  };

  const server = http.createServer((req, res) => {
    handle(req, res).then(
      (r) => log(`codec-server: ${req.method} ${r.endpoint} → ${r.status}${r.via ? ` (${r.via})` : ''}`),
      (err: unknown) => {
        const e = err instanceof HttpError ? err : new HttpError(500, 'internal error');
        if (!(err instanceof HttpError)) log(`codec-server: ${req.method} → 500: ${err instanceof Error ? err.message : String(err)}`);
        else log(`codec-server: ${req.method} → ${e.status}: ${e.message}`);
        if (res.headersSent) return res.destroy();
        const origin = req.headers.origin;
        const cors = origin !== undefined && origins.has(origin) ? { 'access-control-allow-origin': origin, 'access-control-allow-credentials': 'true' } : {};
        res.writeHead(e.status, { vary: 'Origin', ...cors, ...e.headers, 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: e.message }));
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(err.code === 'EADDRINUSE' ? new Error(`codec server: port ${opts.port ?? 8234} on ${host} is already in use`) : err),
    );
    server.listen(opts.port ?? 8234, host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
  return {
    url,
    port,
    webUiEndpoint: webUiCodecEndpoint(url, opts.token),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
