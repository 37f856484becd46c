/**
 * The gateway's OpenAPI 3.1 document, served at `/openapi.json`. Request bodies are generated from the
 * same zod schemas the gateway validates with, so the document cannot drift from what is accepted.
 */
import { z } from 'zod';
import { DecisionRequestSchema, MessageRequestSchema, StartRequestSchema } from './schemas.js';

const json = (schema: z.ZodType) => ({ 'application/json': { schema: z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) } });
const errorBody = { $ref: '#/components/schemas/Error' };
const errors = (...codes: number[]) =>
  Object.fromEntries(codes.map((code) => [String(code), { description: ERROR_TEXT[code] ?? 'error', content: { 'application/json': { schema: errorBody } } }]));
const ERROR_TEXT: Record<number, string> = {
  400: 'malformed or invalid body or parameter; the message names the field',
  401: 'no token, or an unknown one',
  403: 'the caller lacks the role',
  404: 'no such session (or not the caller’s), or no such approval request',
  409: 'the session cannot take this now (ended, already decided, id taken)',
  413: 'body larger than 1 MiB',
  415: 'body is not application/json',
};
const sessionId = { name: 'sessionId', in: 'path', required: true, schema: { type: 'string' } };
const object = { type: 'object', additionalProperties: true };

/** The document. */
export function openApiDocument(): Record<string, unknown> {
  return {
    openapi: '3.1.0',
    info: {
      title: 'Keel gateway',
      version: '1',
      description:
        'Start and follow durable agent sessions, stream them, and decide approvals. Every /v1 call needs `Authorization: Bearer <token>`; the caller is the session’s user and an approval’s approver.',
    },
    security: [{ bearer: [] }],
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
      schemas: {
        Error: {
          type: 'object',
          required: ['error'],
          properties: { error: { type: 'object', required: ['type', 'message'], properties: { type: { type: 'string' }, message: { type: 'string' } } } },
        },
      },
    },
    paths: {
      '/v1/sessions': {
        post: {
          summary: 'Start a session (a client-chosen sessionId makes a retried request return the same session)',
          requestBody: { required: true, content: json(StartRequestSchema) },
          responses: {
            '201': { description: 'started', content: { 'application/json': { schema: object } } },
            '200': { description: 'this sessionId was already started by the caller: the same session', content: { 'application/json': { schema: object } } },
            ...errors(400, 401, 409, 413, 415),
          },
        },
      },
      '/v1/sessions/{sessionId}': {
        get: { summary: 'Status: step, usage, events, approvals, compensations', parameters: [sessionId], responses: { '200': { description: 'status', content: { 'application/json': { schema: object } } }, ...errors(401, 404) } },
      },
      '/v1/sessions/{sessionId}/result': {
        get: {
          summary: 'The result; 202 while the session runs',
          parameters: [sessionId, { name: 'wait', in: 'query', schema: { type: 'number', minimum: 0, maximum: 60 }, description: 'seconds to wait for the end' }],
          responses: { '200': { description: 'ended: completed (with the result), failed, cancelled…' }, '202': { description: 'still running' }, ...errors(400, 401, 404) },
        },
      },
      '/v1/sessions/{sessionId}/stream': {
        get: {
          summary: 'Server-Sent Events: status, text_delta, retract, tool_started, tool_progress, tool_finished, approval_requested, approval_decided, then result or failed',
          description:
            'A text_delta carries the model turn and attempt; `retract` withdraws the text of a failed attempt, so a retried model call never shows text twice. The final answer is also in `result`, from durable history.',
          parameters: [sessionId],
          responses: { '200': { description: 'the stream', content: { 'text/event-stream': { schema: { type: 'string' } } } }, ...errors(401, 404) },
        },
      },
      '/v1/sessions/{sessionId}/messages': {
        post: {
          summary: 'Send a follow-up message and wait for its answer (conversations: sessions started with idleTimeout)',
          parameters: [sessionId],
          requestBody: { required: true, content: json(MessageRequestSchema) },
          responses: { '200': { description: 'the answer' }, ...errors(400, 401, 404, 409, 413, 415) },
        },
      },
      '/v1/sessions/{sessionId}/cancel': {
        post: { summary: 'Cancel: completed writes are undone', parameters: [sessionId], responses: { '202': { description: 'cancelling' }, ...errors(401, 404, 409) } },
      },
      '/v1/sessions/{sessionId}/end': {
        post: { summary: 'End a conversation: it completes after the turn in progress', parameters: [sessionId], responses: { '202': { description: 'ending' }, ...errors(401, 404, 409) } },
      },
      '/v1/sessions/{sessionId}/approvals/{requestId}': {
        post: {
          summary: 'Approve or reject a pending request, as the caller',
          parameters: [sessionId, { name: 'requestId', in: 'path', required: true, schema: { type: 'string' } }],
          requestBody: { required: true, content: json(DecisionRequestSchema) },
          responses: { '200': { description: 'applied' }, ...errors(400, 401, 403, 404, 409, 413, 415) },
        },
      },
      '/v1/approvals': {
        get: { summary: 'Pending approvals across sessions (approver roles)', responses: { '200': { description: 'pending requests' }, ...errors(401, 403) } },
      },
      '/inbox': { get: { summary: 'The approvals inbox page', security: [], responses: { '200': { description: 'HTML' } } } },
    },
  };
}
