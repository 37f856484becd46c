// The scripted Messages API server: a local node:http server that answers `POST /v1/messages` the way
// the Anthropic Messages API does, playing scenario scripts (see ./scenario.ts) so the real
// `@anthropic-ai/sdk` code path runs in tests and in the demo without internet. It is stateless about
// conversations: the turn is the number of assistant messages in the request, a branching turn picks its
// choice from the tool results the request carries, and ids are derived from scenario, turn, choice and
// position, so worker crashes and retries replay the same answers. The only state it
// keeps is the per-(scenario, turn, choice, session) attempt counter that makes scripted faults (429, 529, …)
// happen on the first attempts and then stop. Requests are validated like the real API (tool_use /
// tool_result pairing, roles, …) and checked against a turn's `expect`, so a broken agent loop gets a
// precise 400 instead of a plausible answer.
//
// Model tiers and caching: `scripted/<name>@<variant>` plays scenario `<name>` too (the answer names the
// model as asked), so a session that sends routine turns to a cheaper model plays one script. A forced
// `tool_choice` must be honoured by the scripted turn (a 400 says so otherwise). `cache_control`
// breakpoints are accepted where the API takes them (system blocks, tools, message blocks; at most 4),
// and a scenario with `prompt_cache` estimates cache writes and reads as the API's prompt cache would,
// from a per-server cache of the prefixes written (5 minutes, as the API's). `received` keeps the last
// requests (model, system, tools, tool_choice, last message) for tests to inspect.
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  ScenarioLoader,
  ScenarioSchema,
  isBranchingTurn,
  scenarioDirs as defaultScenarioDirs,
  type Scenario,
  type ScenarioContentBlock,
  type ScenarioExpectedToolResult,
  type ScenarioTurn,
  type ScenarioTurnEntry,
} from './scenario.js';

/** Largest request body accepted, in bytes (32 MB, as the real API); larger bodies get a 413. */
export const MAX_REQUEST_BYTES = 32 * 1024 * 1024;

/** The prefix of model names the server answers: `scripted/<scenario name>`. */
export const SCRIPTED_MODEL_PREFIX = 'scripted/';

/** A pino-compatible logger (pino's `Logger` fits); the server logs faults, rejections and load errors. */
export interface ScriptedModelLogger {
  /** Routine events: a request answered. */
  debug(obj: object, msg?: string): void;
  /** A scripted fault was injected. */
  info(obj: object, msg?: string): void;
  /** A request was rejected, or a scenario file could not be loaded. */
  warn(obj: object, msg?: string): void;
}

/** Options of {@link startScriptedModel}. */
export interface ScriptedModelOptions {
  /** TCP port to listen on; default 0 (a random free port). */
  port?: number;
  /** Interface to bind; default `127.0.0.1`. */
  host?: string;
  /** Directories whose `*.json` files are scenarios; default {@link scenarioDirs}(). Re-read on each request. */
  scenarioDirs?: string[];
  /** In-memory scenarios, validated at start; they win over files of the same name. */
  scenarios?: Scenario[];
  /** Optional pino-compatible logger; nothing is logged without one. */
  logger?: ScriptedModelLogger;
  /** Called right after each streamed content delta is written (benchmarks time the stream from here). */
  onStreamChunk?: (note: StreamChunkNote) => void;
}

/** One streamed chunk, as {@link ScriptedModelOptions.onStreamChunk} reports it. */
export interface StreamChunkNote {
  /** The request's `metadata.user_id` (Keel sends the session's workflow ID), or empty. */
  session: string;
  scenario: string;
  /** The turn, 1-based. */
  turn: number;
  /** A `text_delta` or an `input_json_delta`. */
  kind: 'text' | 'tool_input';
  text: string;
  /** When it was written, ms since the epoch. */
  at: number;
}

/** A running scripted Messages API server. */
export interface ScriptedModelServer {
  /** Base URL, e.g. `http://127.0.0.1:54321`; usable as `ANTHROPIC_BASE_URL` or the SDK's `baseURL`. */
  readonly url: string;
  /** The port the server listens on. */
  readonly port: number;
  /** How many `POST /v1/messages` requests were received so far (all of them, including rejected ones). */
  readonly requests: number;
  /** The last {@link RECEIVED_KEPT} requests that passed validation, oldest first (what each call asked for). */
  readonly received: readonly ScriptedRequest[];
  /** Stops listening, drops open connections and pending delayed responses. */
  close(): Promise<void>;
}

/** Requests kept in {@link ScriptedModelServer.received}. */
export const RECEIVED_KEPT = 500;

/** One request as {@link ScriptedModelServer.received} keeps it. */
export interface ScriptedRequest {
  /** When it arrived, ms since the epoch. */
  at: number;
  /** The model named, e.g. `scripted/refund-demo` or `scripted/refund-demo@haiku`. */
  model: string;
  /** The request's `metadata.user_id` (Keel sends the session's workflow ID), or empty. */
  session: string;
  /** The turn played, 1-based (absent when the request was refused before one was chosen). */
  turn?: number;
  /** `system` as sent: a string or text blocks (with their `cache_control`). */
  system: unknown;
  /** `tools` as sent. */
  tools: unknown[] | undefined;
  /** `tool_choice` as sent. */
  toolChoice: unknown;
  /** How many messages the request carried. */
  messages: number;
  /** The last message as sent (where a conversation's cache breakpoint sits). */
  lastMessage: unknown;
}

/** A fault to raise mid-stream: the error, sent as an `error` event after `afterChunks` content deltas. */
interface MidStreamFault {
  error: ApiError;
  afterChunks: number;
}

/** An API error to answer with: status, Anthropic error type, message and extra headers. */
class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

/** Anthropic's error type for an HTTP status. */
function errorTypeFor(status: number): string {
  switch (status) {
    case 400:
      return 'invalid_request_error';
    case 401:
      return 'authentication_error';
    case 402:
      return 'billing_error';
    case 403:
      return 'permission_error';
    case 404:
      return 'not_found_error';
    case 413:
      return 'request_too_large';
    case 429:
      return 'rate_limit_error';
    case 504:
      return 'timeout_error';
    case 529:
      return 'overloaded_error';
    default:
      return status >= 500 ? 'api_error' : 'invalid_request_error';
  }
}

const invalid = (message: string): ApiError => new ApiError(400, 'invalid_request_error', message);

/** How long a simulated cache entry lives after it is written or read (the API's default, 5 minutes). */
const PROMPT_CACHE_TTL_MS = 5 * 60_000;
/** Simulated cache entries kept per server before expired ones are swept. */
const PROMPT_CACHE_MAX_ENTRIES = 10_000;

function sha256Hex(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/**
 * Which scripted answer is played: turn `turn` (0-based) of a scenario and, for a branching turn, the
 * index of the choice. Ids are derived from it.
 */
interface ScriptPosition {
  scenario: string;
  turn: number;
  choice?: number;
}

/**
 * The part of the id seed that names the answer. The choice index is in it so that two branches of one
 * turn, which answer differently, never share a message or tool_use id: an id names one scripted answer,
 * and the logs, traces and audit records that quote it must lead back to one place in the script. Ordinary
 * turns keep the seed they always had, so the ids of existing scenarios (and of the histories recorded
 * from them) do not change.
 */
function answerSeed(at: ScriptPosition): string {
  return at.choice === undefined ? `${at.scenario}:${at.turn}` : `${at.scenario}:${at.turn}/${at.choice}`;
}

/** The id of the `tool_use` block at `position` of a scripted answer. */
function toolUseId(at: ScriptPosition, position: number): string {
  return `toolu_${sha256Hex(`${answerSeed(at)}:${position}`).slice(0, 24)}`;
}

/** The id of the message of a scripted answer. */
function messageId(at: ScriptPosition): string {
  return `msg_${sha256Hex(answerSeed(at)).slice(0, 24)}`;
}

// ---------------------------------------------------------------------------------------------------
// Request validation (shape first, then the cross-message rules), with the real API's wording where
// it is known.

type Json = Record<string, unknown>;

interface RequestBlock extends Json {
  type: string;
}

interface RequestMessage {
  role: 'user' | 'assistant';
  content: string | RequestBlock[];
}

interface MessagesRequest {
  model: string;
  messages: RequestMessage[];
  system: unknown;
  tools: unknown[] | undefined;
  toolChoice: unknown;
  userId: string | undefined;
  stream: boolean;
}

function isRecord(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Checks a `cache_control` value where the API accepts one: absent, or `{ type: 'ephemeral', ttl? }`. */
function validateCacheControl(value: unknown, at: string): void {
  if (value === undefined || value === null) return;
  if (!isRecord(value)) throw invalid(`${at}.cache_control: Input should be a valid dictionary`);
  if (value['type'] !== 'ephemeral') throw invalid(`${at}.cache_control.type: Input should be 'ephemeral'`);
  const ttl = value['ttl'];
  if (ttl !== undefined && ttl !== '5m' && ttl !== '1h') throw invalid(`${at}.cache_control.ttl: Input should be '5m' or '1h'`);
}

/** The API's limit on `cache_control` breakpoints per request. */
const MAX_CACHE_BREAKPOINTS = 4;

function validateBlock(block: unknown, at: string, role: RequestMessage['role']): RequestBlock {
  if (!isRecord(block)) throw invalid(`${at}: Input should be a valid dictionary`);
  validateCacheControl(block['cache_control'], at);
  const type = block['type'];
  if (type === undefined) throw invalid(`${at}.type: Field required`);
  if (typeof type !== 'string') throw invalid(`${at}.type: Input should be a valid string`);
  const requireString = (key: string): void => {
    if (block[key] === undefined) throw invalid(`${at}.${key}: Field required`);
    if (typeof block[key] !== 'string') throw invalid(`${at}.${key}: Input should be a valid string`);
  };
  switch (type) {
    case 'text':
      requireString('text');
      break;
    case 'tool_use':
      if (role !== 'assistant') throw invalid(`${at}: tool_use blocks are only allowed in assistant messages`);
      requireString('id');
      requireString('name');
      if (!isRecord(block['input'])) throw invalid(`${at}.input: Input should be a valid dictionary`);
      break;
    case 'tool_result': {
      if (role !== 'user') throw invalid(`${at}: tool_result blocks are only allowed in user messages`);
      requireString('tool_use_id');
      const content = block['content'];
      if (content !== undefined && typeof content !== 'string') {
        if (!Array.isArray(content)) throw invalid(`${at}.content: Input should be a valid string or list of content blocks`);
        content.forEach((inner, j) => {
          if (!isRecord(inner) || typeof inner['type'] !== 'string') {
            throw invalid(`${at}.content.${j}: Input should be a valid content block`);
          }
          if (inner['type'] === 'text' && typeof inner['text'] !== 'string') {
            throw invalid(`${at}.content.${j}.text: Field required`);
          }
        });
      }
      const isError = block['is_error'];
      if (isError !== undefined && typeof isError !== 'boolean') throw invalid(`${at}.is_error: Input should be a valid boolean`);
      break;
    }
    default:
      // image, document, thinking, … : accepted without a deeper check; the script does not read them.
      break;
  }
  return block as RequestBlock;
}

function validateMessage(message: unknown, i: number, last: boolean): RequestMessage {
  const at = `messages.${i}`;
  if (!isRecord(message)) throw invalid(`${at}: Input should be a valid dictionary`);
  const role = message['role'];
  if (role === undefined) throw invalid(`${at}.role: Field required`);
  if (role !== 'user' && role !== 'assistant') throw invalid(`${at}.role: Input should be 'user' or 'assistant'`);
  const content = message['content'];
  if (content === undefined) throw invalid(`${at}.content: Field required`);
  const emptyError = (): ApiError =>
    invalid(`${at}: all messages must have non-empty content except for the optional final assistant message`);
  if (typeof content === 'string') {
    if (content.length === 0 && !(last && role === 'assistant')) throw emptyError();
    return { role, content };
  }
  if (!Array.isArray(content)) throw invalid(`${at}.content: Input should be a valid string or list of content blocks`);
  if (content.length === 0 && !(last && role === 'assistant')) throw emptyError();
  return { role, content: content.map((block, k) => validateBlock(block, `${at}.content.${k}`, role)) };
}

function validateTools(tools: unknown): unknown[] {
  if (!Array.isArray(tools)) throw invalid('tools: Input should be a valid list');
  const names = new Set<string>();
  tools.forEach((tool, k) => {
    const at = `tools.${k}`;
    if (!isRecord(tool)) throw invalid(`${at}: Input should be a valid dictionary`);
    const type = tool['type'];
    // Server tools (web_search_20250305, …) carry a `type` and no input_schema.
    if (type !== undefined && type !== 'custom') return;
    const name = tool['name'];
    if (name === undefined) throw invalid(`${at}.name: Field required`);
    if (typeof name !== 'string' || !/^[a-zA-Z0-9_-]{1,128}$/.test(name)) {
      throw invalid(`${at}.name: String should match pattern '^[a-zA-Z0-9_-]{1,128}$'`);
    }
    if (names.has(name)) throw invalid('tools: Tool names must be unique.');
    names.add(name);
    validateCacheControl(tool['cache_control'], at);
    if (tool['description'] !== undefined && typeof tool['description'] !== 'string') {
      throw invalid(`${at}.description: Input should be a valid string`);
    }
    const schema = tool['input_schema'];
    if (schema === undefined) throw invalid(`${at}.input_schema: Field required`);
    if (!isRecord(schema)) throw invalid(`${at}.input_schema: Input should be a valid dictionary`);
    if (schema['type'] !== 'object') throw invalid(`${at}.input_schema.type: Input should be 'object'`);
  });
  return tools;
}

function blocksOf(message: RequestMessage | undefined, type: string): RequestBlock[] {
  if (message === undefined || typeof message.content === 'string') return [];
  return message.content.filter((b) => b.type === type);
}

/** Checks tool_use / tool_result pairing across messages, in message order. */
function validatePairing(messages: RequestMessage[]): void {
  const seenToolUseIds = new Set<string>();
  messages.forEach((message, i) => {
    if (typeof message.content === 'string') return;
    if (message.role === 'assistant') {
      message.content.forEach((block, k) => {
        if (block.type !== 'tool_use') return;
        const id = block['id'] as string;
        if (seenToolUseIds.has(id)) throw invalid(`messages.${i}.content.${k}: tool_use ids must be unique`);
        seenToolUseIds.add(id);
      });
      const next = messages[i + 1];
      if (next === undefined) return;
      const answered = new Set(
        next.role === 'user' ? blocksOf(next, 'tool_result').map((b) => b['tool_use_id'] as string) : [],
      );
      const missing = blocksOf(message, 'tool_use')
        .map((b) => b['id'] as string)
        .filter((id) => !answered.has(id));
      if (missing.length > 0) {
        throw invalid(
          `messages.${i}: tool_use ids were found without tool_result blocks immediately after: ${missing.join(', ')}. ` +
            'Each tool_use block must have a corresponding tool_result block in the next message.',
        );
      }
    } else {
      const previous = messages[i - 1];
      const asked = new Set(
        previous?.role === 'assistant' ? blocksOf(previous, 'tool_use').map((b) => b['id'] as string) : [],
      );
      message.content.forEach((block, k) => {
        if (block.type !== 'tool_result') return;
        const id = block['tool_use_id'] as string;
        if (!asked.has(id)) {
          throw invalid(
            `messages.${i}.content.${k}: unexpected tool_use_id found in tool_result blocks: ${id}. ` +
              'Each tool_result block must have a corresponding tool_use block in the previous message.',
          );
        }
      });
    }
  });
}

/**
 * One piece of a request in the order the API renders it for its prompt cache (tools, then system, then
 * messages): a tool, a system block, or a message's block. `json` is the piece without its `cache_control`
 * (a string prompt or message stands for the one text block it is rendered as).
 */
interface CacheUnit {
  json: string;
  breakpoint: boolean;
}

function withoutCacheControl(value: Json): Json {
  const { cache_control: _ignored, ...rest } = value;
  return rest;
}

/** The request's pieces in the API's render order; see {@link CacheUnit}. */
function cacheUnits(messages: RequestMessage[], system: unknown, tools: unknown[] | undefined): CacheUnit[] {
  const unit = (block: unknown, prefix = ''): CacheUnit => {
    const b: Json = typeof block === 'string' ? { type: 'text', text: block } : isRecord(block) ? block : {};
    return { json: `${prefix}${JSON.stringify(withoutCacheControl(b))}`, breakpoint: isRecord(b['cache_control']) };
  };
  const units = (tools ?? []).map((tool) => unit(tool));
  if (typeof system === 'string') units.push(unit(system, 'system:'));
  if (Array.isArray(system)) system.forEach((block, k) => units.push(unit(block, k === 0 ? 'system:' : '')));
  for (const message of messages) {
    const content = typeof message.content === 'string' ? [message.content] : message.content;
    content.forEach((block, k) => units.push(unit(block, k === 0 ? `${message.role}:` : '')));
  }
  return units;
}

/**
 * The input tokens a request costs, estimated from its size (4 characters a token). A request with cache
 * breakpoints is measured without them (no `cache_control`, the system blocks as one string, a last
 * message of one marked text block as the string it was), so turning caching on does not change the count.
 */
function estimateInputTokens(request: MessagesRequest): number {
  const { messages, system, tools } = request;
  if (!cacheUnits(messages, system, tools).some((u) => u.breakpoint)) return Math.ceil(JSON.stringify({ messages, system, tools }).length / 4);
  const plain = messages.map((m, i): RequestMessage => {
    if (typeof m.content === 'string') return m;
    const blocks = m.content.map((b) => withoutCacheControl(b) as RequestBlock);
    const only = m.content.length === 1 ? m.content[0] : undefined;
    const wasString = i === messages.length - 1 && only?.type === 'text' && isRecord(only['cache_control']);
    return { role: m.role, content: wasString ? (only['text'] as string) : blocks };
  });
  const plainSystem = Array.isArray(system) ? system.map((b) => (b as Json)['text'] as string).join('') : system;
  const plainTools = tools?.map((t) => (isRecord(t) ? withoutCacheControl(t) : t));
  return Math.ceil(JSON.stringify({ messages: plain, system: plainSystem, tools: plainTools }).length / 4);
}

/** Validates a parsed body like the real API; throws an {@link ApiError} 400 naming the first problem. */
function validateRequest(body: unknown): MessagesRequest {
  if (!isRecord(body)) throw invalid('Input should be a valid dictionary');
  const model = body['model'];
  if (model === undefined) throw invalid('model: Field required');
  if (typeof model !== 'string') throw invalid('model: Input should be a valid string');
  const maxTokens = body['max_tokens'];
  if (maxTokens === undefined) throw invalid('max_tokens: Field required');
  if (typeof maxTokens !== 'number' || !Number.isInteger(maxTokens)) throw invalid('max_tokens: Input should be a valid integer');
  if (maxTokens < 1) throw invalid('max_tokens: Input should be greater than or equal to 1');
  const rawMessages = body['messages'];
  if (rawMessages === undefined) throw invalid('messages: Field required');
  if (!Array.isArray(rawMessages)) throw invalid('messages: Input should be a valid list');
  if (rawMessages.length === 0) throw invalid('messages: List should have at least 1 item after validation, not 0');
  const messages = rawMessages.map((m, i) => validateMessage(m, i, i === rawMessages.length - 1));
  if (messages[0]?.role !== 'user') throw invalid('messages: first message must use the "user" role');

  const system = body['system'];
  if (system !== undefined && typeof system !== 'string') {
    if (!Array.isArray(system)) throw invalid('system: Input should be a valid string or list of text blocks');
    system.forEach((block, k) => {
      if (!isRecord(block) || block['type'] !== 'text' || typeof block['text'] !== 'string') {
        throw invalid(`system.${k}: Input should be a text block ({"type": "text", "text": ...})`);
      }
      validateCacheControl(block['cache_control'], `system.${k}`);
    });
  }
  const tools = body['tools'] === undefined ? undefined : validateTools(body['tools']);
  const breakpoints = cacheUnits(messages, system, tools).filter((u) => u.breakpoint).length;
  if (breakpoints > MAX_CACHE_BREAKPOINTS) {
    throw invalid(`A maximum of ${MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. Found ${breakpoints}.`);
  }
  const toolChoice = body['tool_choice'];
  if (toolChoice !== undefined) {
    if (!isRecord(toolChoice)) throw invalid('tool_choice: Input should be a valid dictionary');
    const type = toolChoice['type'];
    if (type !== 'auto' && type !== 'any' && type !== 'tool' && type !== 'none') throw invalid("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'");
    if (type === 'tool') {
      const name = toolChoice['name'];
      if (typeof name !== 'string') throw invalid('tool_choice.name: Field required');
      if (!tools?.some((t) => isRecord(t) && t['name'] === name)) throw invalid(`tool_choice.name: '${name}' is not one of the request's tools`);
    }
  }
  const metadata = body['metadata'];
  let userId: string | undefined;
  if (metadata !== undefined && metadata !== null) {
    if (!isRecord(metadata)) throw invalid('metadata: Input should be a valid dictionary');
    const id = metadata['user_id'];
    if (id !== undefined && id !== null && typeof id !== 'string') throw invalid('metadata.user_id: Input should be a valid string');
    userId = typeof id === 'string' && id.length > 0 ? id : undefined;
  }
  const stream = body['stream'];
  if (stream !== undefined && typeof stream !== 'boolean') throw invalid('stream: Input should be a valid boolean');

  validatePairing(messages);
  return { model, messages, system, tools, toolChoice, userId, stream: stream === true };
}

// ---------------------------------------------------------------------------------------------------
// Playing a scenario.

function toolResultText(block: RequestBlock): string {
  const content = block['content'];
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  return content
    .filter((b): b is Json => isRecord(b) && b['type'] === 'text' && typeof b['text'] === 'string')
    .map((b) => b['text'] as string)
    .join('\n');
}

function preview(text: string): string {
  return JSON.stringify(text.length > 200 ? `${text.slice(0, 200)}…` : text);
}

/** A tool result of the request's last user message, with the name of the tool whose `tool_use` it answers. */
interface SentToolResult {
  block: RequestBlock;
  /** From the `tool_use` with the same id in the message before; undefined when there is none. */
  tool: string | undefined;
}

/** The tool results of the request's last user message, in order, each with the tool it answers. */
function sentToolResults(request: MessagesRequest): SentToolResult[] {
  const at = request.messages.map((m) => m.role).lastIndexOf('user');
  const toolOf = new Map(blocksOf(request.messages[at - 1], 'tool_use').map((b) => [b['id'] as string, b['name'] as string]));
  return blocksOf(request.messages[at], 'tool_result').map((block) => ({ block, tool: toolOf.get(block['tool_use_id'] as string) }));
}

/** A one-line summary of the tool results sent, for error messages. */
function describeSent(results: SentToolResult[]): string {
  if (results.length === 0) return 'no tool results';
  return results
    .map(({ block, tool }) => `${tool ?? '(unknown tool)'}${block['is_error'] === true ? ' is_error' : ''} ${preview(toolResultText(block))}`)
    .join(', ');
}

/**
 * Why the tool results sent do not match `wanted` (the same number of results; each entry against the
 * result at its index), or undefined when they match. Shared by `expect` and a choice's `when`.
 */
function toolResultsMismatch(wanted: ScenarioExpectedToolResult[], sent: SentToolResult[]): string | undefined {
  if (sent.length !== wanted.length) {
    return `expected ${wanted.length} tool_result block(s) in the last user message, got ${sent.length}`;
  }
  for (const [i, want] of wanted.entries()) {
    const { block, tool } = sent[i] as SentToolResult;
    const label = `tool_results[${i}] (${tool ?? '(unknown tool)'}, tool_use_id ${String(block['tool_use_id'])})`;
    if (want.tool !== undefined && want.tool !== tool) {
      return `${label}: expected a result for ${JSON.stringify(want.tool)}, got one for ${tool === undefined ? 'no tool_use' : JSON.stringify(tool)}`;
    }
    const isError = block['is_error'] === true;
    if (want.is_error !== undefined && want.is_error !== isError) return `${label}: expected is_error ${want.is_error}, got ${isError}`;
    const text = toolResultText(block);
    if (want.contains !== undefined && !text.includes(want.contains)) {
      return `${label}: expected the result text to contain ${JSON.stringify(want.contains)}, got ${preview(text)}`;
    }
  }
  return undefined;
}

/** How error messages name a scripted answer: `scenario "x", turn 2 of 5` (`, choice 1` for a branch). */
function describePosition(scenario: Scenario, at: ScriptPosition): string {
  return `scenario "${scenario.name}", turn ${at.turn + 1} of ${scenario.turns.length}${at.choice === undefined ? '' : `, choice ${at.choice}`}`;
}

/**
 * The answer to play for a turn entry: the turn itself, or the first choice whose `when` matches the tool
 * results sent (a choice without `when` always matches). When none does, a 400 lists each choice and why.
 */
function chooseTurn(scenario: Scenario, turnIndex: number, entry: ScenarioTurnEntry, sent: SentToolResult[]): { turn: ScenarioTurn; at: ScriptPosition } {
  if (!isBranchingTurn(entry)) return { turn: entry, at: { scenario: scenario.name, turn: turnIndex } };
  const reasons: string[] = [];
  for (const [choice, candidate] of entry.choices.entries()) {
    const why = candidate.when === undefined ? undefined : toolResultsMismatch(candidate.when.tool_results, sent);
    if (why === undefined) return { turn: candidate, at: { scenario: scenario.name, turn: turnIndex, choice } };
    reasons.push(`choice ${choice}: ${why}`);
  }
  throw invalid(
    `scripted turn has no matching choice: ${describePosition(scenario, { scenario: scenario.name, turn: turnIndex })}: ` +
      `the request sent ${describeSent(sent)}; ${reasons.join('; ')}`,
  );
}

/**
 * Checks the turn honours the request's `tool_choice`, as the API guarantees: `tool` (that tool is called),
 * `any` (some tool is), `none` (none is). A script that does not is wrong for this request: a 400.
 */
function checkToolChoice(scenario: Scenario, at: ScriptPosition, turn: ScenarioTurn, toolChoice: unknown): void {
  if (!isRecord(toolChoice)) return;
  const called = turn.content.flatMap((b) => (b.type === 'tool_use' ? [b.name] : []));
  const type = toolChoice['type'];
  const why =
    type === 'tool' && !called.includes(toolChoice['name'] as string)
      ? `the request forces tool ${JSON.stringify(toolChoice['name'])} (tool_choice) and the turn calls ${called.length ? called.join(', ') : 'no tool'}`
      : type === 'any' && called.length === 0
        ? 'the request asks for a tool call (tool_choice any) and the turn calls none'
        : type === 'none' && called.length > 0
          ? `the request allows no tool call (tool_choice none) and the turn calls ${called.join(', ')}`
          : undefined;
  if (why !== undefined) throw invalid(`scripted turn breaks tool_choice: ${describePosition(scenario, at)}: ${why}`);
}

/** Checks a turn's `expect.tool_results` against the tool results sent; a mismatch is a 400. */
function checkExpectations(scenario: Scenario, at: ScriptPosition, turn: ScenarioTurn, sent: SentToolResult[]): void {
  const expected = turn.expect?.tool_results;
  if (expected === undefined) return;
  const why = toolResultsMismatch(expected, sent);
  if (why !== undefined) throw invalid(`scripted expectation failed: ${describePosition(scenario, at)}: ${why}`);
}

/** The content blocks of a turn as the API returns them: `tool_use` blocks get their derived ids. */
type ResponseBlock = { type: 'text'; text: string } | { type: 'tool_use'; id: string; name: string; input: Json };

function responseContent(at: ScriptPosition, content: ScenarioContentBlock[]): ResponseBlock[] {
  return content.map((block, position) =>
    block.type === 'text'
      ? { type: 'text', text: block.text }
      : { type: 'tool_use', id: toolUseId(at, position), name: block.name, input: block.input },
  );
}

interface MessageBody {
  id: string;
  type: 'message';
  role: 'assistant';
  model: string;
  content: ResponseBlock[];
  stop_reason: string;
  stop_sequence: null;
  usage: { input_tokens: number; output_tokens: number; cache_creation_input_tokens?: number; cache_read_input_tokens?: number };
}

/** An estimated input split as the prompt cache would: tokens read, written, and left as plain input. */
type CacheSplit = Pick<MessageBody['usage'], 'input_tokens' | 'cache_creation_input_tokens' | 'cache_read_input_tokens'>;

/** `cache` splits the input (a scenario with `prompt_cache`); a turn's scripted `usage` wins over both. */
function buildMessage(at: ScriptPosition, turn: ScenarioTurn, request: MessagesRequest, cache?: () => CacheSplit): MessageBody {
  const content = responseContent(at, turn.content);
  const usage: MessageBody['usage'] = turn.usage ?? {
    ...(cache ? cache() : { input_tokens: estimateInputTokens(request) }),
    output_tokens: Math.ceil(JSON.stringify(content).length / 4),
  };
  return {
    id: messageId(at),
    type: 'message',
    role: 'assistant',
    model: request.model,
    content,
    stop_reason: turn.stop_reason,
    stop_sequence: null,
    usage,
  };
}

/** Splits a string into chunks of at most `size` characters (at least one chunk). */
function chunks(text: string, size: number): string[] {
  if (text.length === 0) return [''];
  const out: string[] = [];
  for (let i = 0; i < text.length; i += size) out.push(text.slice(i, i + size));
  return out;
}

/** The server-sent events of a streamed response, in the order the real API sends them. */
function streamEvents(message: MessageBody): Array<{ event: string; data: Json }> {
  const events: Array<{ event: string; data: Json }> = [
    {
      event: 'message_start',
      data: {
        type: 'message_start',
        message: {
          ...message,
          content: [],
          stop_reason: null,
          // The whole usage but output (as the real API): the streamed message then ends with the same usage.
          usage: { ...message.usage, output_tokens: 1 },
        },
      },
    },
  ];
  message.content.forEach((block, index) => {
    if (block.type === 'text') {
      events.push({ event: 'content_block_start', data: { type: 'content_block_start', index, content_block: { type: 'text', text: '' } } });
      for (const text of chunks(block.text, 24)) {
        events.push({ event: 'content_block_delta', data: { type: 'content_block_delta', index, delta: { type: 'text_delta', text } } });
      }
    } else {
      events.push({
        event: 'content_block_start',
        data: { type: 'content_block_start', index, content_block: { type: 'tool_use', id: block.id, name: block.name, input: {} } },
      });
      for (const partial_json of chunks(JSON.stringify(block.input), 24)) {
        events.push({
          event: 'content_block_delta',
          data: { type: 'content_block_delta', index, delta: { type: 'input_json_delta', partial_json } },
        });
      }
    }
    events.push({ event: 'content_block_stop', data: { type: 'content_block_stop', index } });
  });
  events.push({
    event: 'message_delta',
    data: {
      type: 'message_delta',
      delta: { stop_reason: message.stop_reason, stop_sequence: null },
      usage: { output_tokens: message.usage.output_tokens },
    },
  });
  events.push({ event: 'message_stop', data: { type: 'message_stop' } });
  return events;
}

// ---------------------------------------------------------------------------------------------------
// HTTP plumbing.

/** Reads the body; past {@link MAX_REQUEST_BYTES} it keeps draining (so the client reads the answer) and rejects. */
function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let size = 0;
    let tooLarge = Number(req.headers['content-length'] ?? 0) > MAX_REQUEST_BYTES;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_REQUEST_BYTES) tooLarge = true;
      if (!tooLarge) parts.push(chunk);
    });
    req.on('end', () => {
      if (tooLarge) {
        reject(new ApiError(413, 'request_too_large', `Request exceeds the maximum allowed number of bytes (${MAX_REQUEST_BYTES}).`));
      } else {
        resolve(Buffer.concat(parts));
      }
    });
    req.on('error', reject);
  });
}

function hostForUrl(host: string): string {
  if (host === '0.0.0.0') return '127.0.0.1';
  if (host === '::') return '[::1]';
  return host.includes(':') ? `[${host}]` : host;
}

/**
 * Starts the scripted Messages API server.
 *
 * Scenarios come from `opts.scenarioDirs` (default {@link scenarioDirs}(): `<repo>/scenarios` and
 * `KEEL_SCENARIOS_DIR`), re-read on every request with an mtime cache, so a file added while the server
 * runs is picked up; `opts.scenarios` are in-memory extras that win over files. A malformed file does
 * not stop the others from being served: it is logged, and named in the 404 for an unknown model.
 *
 * @example
 * ```ts
 * const server = await startScriptedModel({ scenarios: [myScenario] });
 * const client = new Anthropic({ baseURL: server.url, apiKey: 'test', maxRetries: 0 });
 * await client.messages.create({ model: 'scripted/my-scenario', max_tokens: 1024, messages });
 * await server.close();
 * ```
 * @throws Error when an in-memory scenario is invalid, or the port cannot be bound.
 */
export async function startScriptedModel(opts: ScriptedModelOptions = {}): Promise<ScriptedModelServer> {
  const host = opts.host ?? '127.0.0.1';
  const logger = opts.logger;
  const extras = (opts.scenarios ?? []).map((s, i) => {
    const parsed = ScenarioSchema.safeParse(s);
    if (!parsed.success) {
      const issues = parsed.error.issues.map((issue) => `${issue.path.map(String).join('.') || '(root)'}: ${issue.message}`);
      throw new Error(`in-memory scenario ${i} (${String((s as { name?: unknown }).name)}) is invalid: ${issues.join('; ')}`);
    }
    return parsed.data;
  });
  const loader = new ScenarioLoader(opts.scenarioDirs ?? defaultScenarioDirs(), extras);
  /** Attempts per (scenario, turn, choice, session) for turns with faults; lives as long as the server. */
  const attempts = new Map<string, number>();
  /** Cancels the pending delayed responses, so close() does not wait on them. */
  const pending = new Set<() => void>();
  const reportedLoadErrors = new Set<string>();
  let requests = 0;
  const received: ScriptedRequest[] = [];
  /** The simulated prompt cache: prefix key (model and content) → when it expires (ms since the epoch). */
  const promptCache = new Map<string, number>();

  /**
   * Estimates the input (4 characters a token, over the request's pieces in render order) and splits it
   * into cache reads, writes and plain input as the API's prompt cache would (see `prompt_cache` in
   * scenario.ts), recording the prefixes this request writes.
   */
  const simulateCache = (request: MessagesRequest, minTokens: number): CacheSplit => {
    const now = Date.now();
    const hash = createHash('sha256').update(request.model);
    let chars = 0;
    const ends = cacheUnits(request.messages, request.system, request.tools).map((u) => {
      hash.update(u.json);
      chars += u.json.length;
      return { ...u, tokens: Math.floor(chars / 4), key: hash.copy().digest('hex') };
    });
    const inputTokens = Math.ceil(chars / 4);
    const written = ends.flatMap((e, i) => (e.breakpoint && e.tokens >= minTokens ? [i] : []));
    const last = written.at(-1);
    if (last === undefined) return { input_tokens: inputTokens, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 };
    // The longest prefix already cached, at a breakpoint or any block before the last one (the API looks back).
    let hit = -1;
    for (let i = last; i >= 0 && hit < 0; i--) if ((promptCache.get(ends[i]!.key) ?? 0) > now) hit = i;
    const read = hit < 0 ? 0 : ends[hit]!.tokens;
    for (const i of [...written, ...(hit < 0 ? [] : [hit])]) promptCache.set(ends[i]!.key, now + PROMPT_CACHE_TTL_MS);
    if (promptCache.size > PROMPT_CACHE_MAX_ENTRIES) {
      for (const [key, expires] of promptCache) if (expires <= now || promptCache.size > PROMPT_CACHE_MAX_ENTRIES) promptCache.delete(key);
    }
    const upTo = ends[last]!.tokens;
    return { input_tokens: inputTokens - upTo, cache_creation_input_tokens: upTo - read, cache_read_input_tokens: read };
  };

  const send = (res: ServerResponse, requestId: string, status: number, body: unknown, headers: Record<string, string> = {}): void => {
    if (res.headersSent || res.destroyed) return;
    res.writeHead(status, { 'content-type': 'application/json', 'request-id': requestId, ...headers });
    res.end(JSON.stringify(body));
  };

  const sendError = (res: ServerResponse, requestId: string, error: ApiError): void => {
    send(res, requestId, error.status, { type: 'error', error: { type: error.type, message: error.message } }, error.headers);
  };

  /** Waits `ms`; resolves false if the client went away or the server closed meanwhile. */
  const delay = (ms: number, res: ServerResponse): Promise<boolean> =>
    new Promise((resolve) => {
      const finish = (sent: boolean): void => {
        clearTimeout(timer);
        res.off('close', onClose);
        pending.delete(cancel);
        resolve(sent);
      };
      const onClose = (): void => finish(false);
      const cancel = (): void => finish(false);
      const timer = setTimeout(() => finish(true), ms);
      res.once('close', onClose);
      pending.add(cancel);
    });

  const loadScenarios = (): { scenarios: Map<string, Scenario>; errors: string[] } => {
    const result = loader.load();
    for (const error of result.errors) {
      if (reportedLoadErrors.has(error)) continue;
      reportedLoadErrors.add(error);
      logger?.warn({ error }, 'scenario file could not be loaded');
    }
    return result;
  };

  const selectScenario = (model: string): Scenario => {
    const { scenarios, errors } = loadScenarios();
    const name = model.startsWith(SCRIPTED_MODEL_PREFIX) ? model.slice(SCRIPTED_MODEL_PREFIX.length) : undefined;
    // `scripted/<name>@<variant>` (a cheaper tier of the same script) plays `<name>`.
    const scenario = name === undefined ? undefined : (scenarios.get(name) ?? scenarios.get(name.split('@')[0]!));
    if (scenario !== undefined) return scenario;
    const known = [...scenarios.keys()].sort().join(', ') || 'none';
    const broken = errors.length > 0 ? `; scenario files that failed to load: ${errors.join(' | ')}` : '';
    const hint = name === undefined ? `this server serves only ${SCRIPTED_MODEL_PREFIX}<scenario>; ` : '';
    throw new ApiError(404, 'not_found_error', `model: ${model} not found (${hint}known scenarios: ${known})${broken}`);
  };

  /**
   * Applies a turn's faults: throws the scripted error for the first attempts, then lets it through. A
   * fault with `after_chunks` on a streamed request is returned instead, for the stream to fail mid-way.
   */
  const applyFaults = (scenario: Scenario, at: ScriptPosition, turn: ScenarioTurn, request: MessagesRequest): MidStreamFault | undefined => {
    const faults = turn.faults ?? [];
    if (faults.length === 0) return undefined;
    // Keel sends the workflow ID as metadata.user_id; without it, the first user message tells
    // conversations apart.
    const session = request.userId ?? sha256Hex(JSON.stringify(request.messages[0]));
    const key = JSON.stringify([scenario.name, at.turn, at.choice ?? null, session]);
    const attempt = (attempts.get(key) ?? 0) + 1;
    attempts.set(key, attempt);
    const total = faults.reduce((sum, f) => sum + f.times, 0);
    let upTo = 0;
    for (const fault of faults) {
      upTo += fault.times;
      if (attempt > upTo) continue;
      const headers: Record<string, string> = {};
      if (fault.retry_after_ms !== undefined) {
        headers['retry-after'] = String(Math.ceil(fault.retry_after_ms / 1000));
        headers['retry-after-ms'] = String(fault.retry_after_ms);
      }
      const afterChunks = request.stream ? fault.after_chunks : undefined;
      logger?.info({ scenario: scenario.name, turn: at.turn + 1, choice: at.choice, attempt, status: fault.status, session, afterChunks }, 'scripted fault');
      const error = new ApiError(
        fault.status,
        errorTypeFor(fault.status),
        `scripted fault ${fault.status} (${describePosition(scenario, at)}, attempt ${attempt}; ` +
          `the first ${total} attempt(s) of this turn fail${afterChunks === undefined ? '' : `, mid-stream after ${afterChunks} chunk(s)`})`,
        headers,
      );
      if (afterChunks !== undefined) return { error, afterChunks };
      throw error;
    }
    return undefined;
  };

  const handleMessages = async (req: IncomingMessage, res: ServerResponse, requestId: string): Promise<void> => {
    const apiKey = req.headers['x-api-key'];
    const authorization = req.headers['authorization'];
    const hasKey = typeof apiKey === 'string' && apiKey.length > 0;
    const hasBearer = typeof authorization === 'string' && /^Bearer\s+\S+/i.test(authorization);
    const bodyBuffer = await readBody(req);
    if (!hasKey && !hasBearer) {
      throw new ApiError(401, 'authentication_error', 'x-api-key header or Authorization: Bearer header is required');
    }
    let body: unknown;
    try {
      body = JSON.parse(bodyBuffer.toString('utf8'));
    } catch (err) {
      throw invalid(`There was an error parsing the body of your request: ${err instanceof Error ? err.message : String(err)}`);
    }
    const request = validateRequest(body);
    const seen: ScriptedRequest = {
      at: Date.now(),
      model: request.model,
      session: request.userId ?? '',
      system: request.system,
      tools: request.tools,
      toolChoice: request.toolChoice,
      messages: request.messages.length,
      lastMessage: request.messages.at(-1),
    };
    received.push(seen);
    if (received.length > RECEIVED_KEPT) received.shift();
    const scenario = selectScenario(request.model);
    const turnIndex = request.messages.filter((m) => m.role === 'assistant').length;
    const entry = scenario.turns[turnIndex];
    if (entry === undefined) {
      throw invalid(
        `scenario "${scenario.name}" has ${scenario.turns.length} turns and the request asked for turn ${turnIndex + 1} ` +
          `(it contains ${turnIndex} assistant messages): the agent loop did not stop when the script ended`,
      );
    }
    const sent = sentToolResults(request);
    const { turn, at } = chooseTurn(scenario, turnIndex, entry, sent);
    seen.turn = turnIndex + 1;
    checkExpectations(scenario, at, turn, sent);
    checkToolChoice(scenario, at, turn, request.toolChoice);
    const midStreamFault = applyFaults(scenario, at, turn, request);
    const cacheSettings = scenario.prompt_cache;
    const message = buildMessage(at, turn, request, cacheSettings ? () => simulateCache(request, cacheSettings.min_tokens) : undefined);
    if (turn.latency_ms !== undefined && turn.latency_ms > 0) {
      if (!(await delay(turn.latency_ms, res))) return; // client gone or server closing: drop it
    }
    if (res.headersSent || res.destroyed) return;
    logger?.debug({ scenario: scenario.name, turn: turnIndex + 1, choice: at.choice, stream: request.stream, requestId }, 'scripted turn answered');
    if (!request.stream) {
      send(res, requestId, 200, message);
      return;
    }
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'request-id': requestId });
    const write = (event: string, data: unknown) => res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    const chunkMs = turn.stream_chunk_ms ?? 0;
    let deltas = 0;
    for (const { event, data } of streamEvents(message)) {
      const isDelta = event === 'content_block_delta';
      // A mid-stream fault takes the place of the next event once its chunks are out (or of the message's end).
      const failNow = midStreamFault !== undefined && (deltas >= midStreamFault.afterChunks || event === 'message_delta');
      if ((isDelta || failNow) && chunkMs > 0 && !(await delay(chunkMs, res))) return; // client gone or server closing
      if (failNow && midStreamFault) {
        const { error } = midStreamFault;
        write('error', { type: 'error', error: { type: error.type, message: error.message } });
        res.end();
        return;
      }
      write(event, data);
      if (isDelta) {
        deltas += 1;
        const delta = (data as { delta: { type: string; text?: string; partial_json?: string } }).delta;
        opts.onStreamChunk?.({
          session: request.userId ?? '',
          scenario: scenario.name,
          turn: turnIndex + 1,
          kind: delta.type === 'text_delta' ? 'text' : 'tool_input',
          text: delta.text ?? delta.partial_json ?? '',
          at: Date.now(),
        });
      }
    }
    res.end();
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const requestId = `req_${randomBytes(12).toString('hex')}`;
    const pathname = (req.url ?? '/').split('?')[0];
    try {
      if (req.method === 'POST' && pathname === '/v1/messages') {
        requests += 1;
        await handleMessages(req, res, requestId);
      } else if (req.method === 'GET' && pathname === '/healthz') {
        send(res, requestId, 200, { ok: true });
      } else {
        throw new ApiError(404, 'not_found_error', `Not found: ${req.method ?? '?'} ${pathname ?? ''}`);
      }
    } catch (err) {
      const error = err instanceof ApiError ? err : new ApiError(500, 'api_error', `scripted server error: ${err instanceof Error ? err.message : String(err)}`);
      if (error.status !== 404 || pathname === '/v1/messages') {
        logger?.warn({ status: error.status, type: error.type, message: error.message, requestId }, 'scripted request rejected');
      }
      sendError(res, requestId, error);
    }
  };

  const server: Server = createServer((req, res) => {
    void handle(req, res);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const url = `http://${hostForUrl(host)}:${port}`;

  return {
    url,
    port,
    get requests() {
      return requests;
    },
    get received() {
      return received;
    },
    close: () =>
      new Promise<void>((resolve, reject) => {
        for (const cancel of [...pending]) cancel();
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      }),
  };
}
