/**
 * The gateway's HTTP plumbing: JSON bodies with a size limit, JSON answers, and errors that carry a
 * status and a message naming what was wrong (`{ "error": { "type", "message" } }`), so a bad request is
 * a 4xx a client can act on, never a 500 or a hang.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { z } from 'zod';
import { describeIssues } from '../workflows/types.js';

/** Largest request body accepted, in bytes (1 MiB: a prompt is at most 100,000 characters). */
export const MAX_BODY_BYTES = 1024 * 1024;

/** An error answered with its status: `type` is machine-readable, `message` says what to change. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

/** Reads a JSON body and validates it; a missing, oversized, malformed or invalid body is a 4xx. */
export async function readJson<S extends z.ZodType>(req: IncomingMessage, schema: S): Promise<z.infer<S>> {
  const type = req.headers['content-type'] ?? '';
  if (!/^application\/json\b/i.test(type)) throw new HttpError(415, 'unsupported_media_type', `expected Content-Type: application/json (got ${type || 'none'})`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) {
      req.resume(); // drain, so the client reads the answer
      throw new HttpError(413, 'payload_too_large', `request body is larger than ${MAX_BODY_BYTES} bytes`);
    }
    chunks.push(chunk);
  }
  let body: unknown;
  try {
    body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (err) {
    throw new HttpError(400, 'invalid_json', `request body is not valid JSON: ${err instanceof Error ? err.message : String(err)}`);
  }
  const parsed = schema.safeParse(body);
  if (!parsed.success) throw new HttpError(400, 'invalid_request', describeIssues(parsed.error, 'body'));
  return parsed.data;
}

/** Answers with a JSON document. */
export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', ...headers });
  res.end(text);
}

/** Answers with an error document. */
export function sendError(res: ServerResponse, err: HttpError): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  sendJson(res, err.status, { error: { type: err.type, message: err.message } }, err.headers);
}
