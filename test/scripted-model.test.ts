// Specification of the scripted Messages API server, driven through the real `@anthropic-ai/sdk`
// client (maxRetries 0, as Keel's activities use it): scenario playback and deterministic ids, turn
// selection, scripted faults and the SDK error classes they surface as, request validation with the
// real API's messages, `expect` checks, turns that branch on the tool results sent (`choices`), latency,
// and loading scenario files from directories.
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Anthropic from '@anthropic-ai/sdk';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  loadScenarios,
  scenarioDirs,
  startScriptedModel,
  type Scenario,
  type ScriptedModelServer,
} from '../src/testing/scripted/index.js';

const tools: Anthropic.Tool[] = [
  {
    name: 'lookup_customer',
    description: 'Looks up a customer by id. Read-only.',
    input_schema: { type: 'object', properties: { id: { type: 'string' } }, required: ['id'] },
  },
];

const refund: Scenario = {
  name: 'refund',
  description: 'Looks a customer up, then answers.',
  turns: [
    {
      content: [
        { type: 'text', text: 'Let me look that up.' },
        { type: 'tool_use', name: 'lookup_customer', input: { id: 'c1' } },
        { type: 'tool_use', name: 'lookup_customer', input: { id: 'c2' } },
      ],
      stop_reason: 'tool_use',
    },
    {
      content: [{ type: 'text', text: 'Ada and Bob are both customers.' }],
      stop_reason: 'end_turn',
      usage: { input_tokens: 123, output_tokens: 45 },
      expect: { tool_results: [{ contains: 'Ada', is_error: false }, { contains: 'Bob' }] },
    },
  ],
};

const threeTurns: Scenario = {
  name: 'three-turns',
  description: 'Text only; each turn says which one it is.',
  turns: [1, 2, 3].map((n) => ({ content: [{ type: 'text' as const, text: `turn ${n}` }], stop_reason: 'end_turn' as const })),
};

const overloaded: Scenario = {
  name: 'overloaded',
  description: 'The first turn is overloaded twice.',
  turns: [{ content: [{ type: 'text', text: 'made it' }], stop_reason: 'end_turn', faults: [{ status: 529, times: 2 }] }],
};

const rateLimited: Scenario = {
  name: 'rate-limited',
  description: 'One 429 with a retry-after, then one 500, then success.',
  turns: [
    {
      content: [{ type: 'text', text: 'ok' }],
      stop_reason: 'end_turn',
      faults: [
        { status: 429, times: 1, retry_after_ms: 1500 },
        { status: 500, times: 1 },
      ],
    },
  ],
};

const slow: Scenario = {
  name: 'slow',
  description: 'Answers after 300 ms.',
  turns: [{ content: [{ type: 'text', text: 'finally' }], stop_reason: 'end_turn', latency_ms: 300 }],
};

/**
 * A refund a person may reject. Turn 2 branches on the refund's result: rejected → an answer (the script
 * ends after 2 turns); otherwise (the default) → an email. Turn 3, reached only on that branch, branches
 * on the email's result; its `expect`, `faults` and `usage` apply to the choice that is played.
 */
const reactive: Scenario = {
  name: 'reactive',
  description: 'Refund, then email; answers whichever way a person decides.',
  turns: [
    { content: [{ type: 'tool_use', name: 'issue_refund', input: { order_id: 'o1' } }], stop_reason: 'tool_use' },
    {
      choices: [
        {
          when: { tool_results: [{ tool: 'issue_refund', is_error: true, contains: 'was rejected by' }] },
          content: [{ type: 'text', text: 'A person declined the refund.' }],
          stop_reason: 'end_turn',
        },
        {
          content: [
            { type: 'text', text: 'Refunded; emailing.' },
            { type: 'tool_use', name: 'send_email', input: { to: 'ada@example.com' } },
          ],
          stop_reason: 'tool_use',
        },
      ],
    },
    {
      choices: [
        {
          when: { tool_results: [{ tool: 'send_email', is_error: true }] },
          content: [{ type: 'text', text: 'Refunded, but the email was declined.' }],
          stop_reason: 'end_turn',
        },
        {
          when: { tool_results: [{ tool: 'send_email', is_error: false }] },
          expect: { tool_results: [{ contains: 'queued' }] },
          faults: [{ status: 529, times: 1 }],
          usage: { input_tokens: 7, output_tokens: 3 },
          content: [{ type: 'text', text: 'Refunded and emailed.' }],
          stop_reason: 'end_turn',
        },
      ],
    },
  ],
};

const hello: Anthropic.MessageParam[] = [{ role: 'user', content: 'Hello' }];

let server: ScriptedModelServer;
let client: Anthropic;
let emptyDir: string;

beforeAll(async () => {
  // An empty directory: only the in-memory scenarios exist, whatever is in the repo's scenarios/.
  emptyDir = mkdtempSync(path.join(tmpdir(), 'keel-scripted-empty-'));
  server = await startScriptedModel({
    scenarioDirs: [emptyDir],
    scenarios: [refund, threeTurns, overloaded, rateLimited, slow, reactive],
  });
  client = new Anthropic({ baseURL: server.url, apiKey: 'test', maxRetries: 0 });
});

afterAll(async () => {
  await server.close();
  rmSync(emptyDir, { recursive: true, force: true });
});

/** Runs `fn`, expecting it to reject; returns the rejection. */
async function rejection(fn: () => Promise<unknown>): Promise<unknown> {
  try {
    await fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

/** A request the SDK's types would refuse, sent anyway, as a buggy agent loop might. */
function untyped(messages: unknown): Anthropic.MessageParam[] {
  return messages as Anthropic.MessageParam[];
}

function toolUseIds(message: Anthropic.Message): string[] {
  return message.content.filter((b): b is Anthropic.ToolUseBlock => b.type === 'tool_use').map((b) => b.id);
}

describe('scenario playback', () => {
  it('plays a two-turn tool_use scenario with ids that are the same on every attempt', async () => {
    const before = server.requests;
    const { data: first, response, request_id } = await client.messages
      .create({ model: 'scripted/refund', max_tokens: 1024, tools, messages: hello })
      .withResponse();
    expect(response.headers.get('content-type')).toContain('application/json');
    expect(request_id).toMatch(/^req_/);
    expect(first).toMatchObject({
      type: 'message',
      role: 'assistant',
      model: 'scripted/refund',
      stop_reason: 'tool_use',
      stop_sequence: null,
    });
    expect(first.id).toMatch(/^msg_[0-9a-f]{24}$/);
    expect(first.content[0]).toEqual({ type: 'text', text: 'Let me look that up.' });
    const ids = toolUseIds(first);
    expect(ids).toHaveLength(2);
    for (const id of ids) expect(id).toMatch(/^toolu_[0-9a-f]{24}$/);
    expect(ids[0]).not.toBe(ids[1]);
    // Usage is estimated when the turn does not script it.
    expect(first.usage.input_tokens).toBeGreaterThan(0);
    expect(first.usage.output_tokens).toBeGreaterThan(0);

    const again = await client.messages.create({ model: 'scripted/refund', max_tokens: 1024, tools, messages: hello });
    expect(again.id).toBe(first.id);
    expect(toolUseIds(again)).toEqual(ids);

    const second = await client.messages.create({
      model: 'scripted/refund',
      max_tokens: 1024,
      tools,
      messages: [
        ...hello,
        { role: 'assistant', content: first.content },
        {
          role: 'user',
          content: [
            { type: 'tool_result', tool_use_id: ids[0] as string, content: '{"name":"Ada"}' },
            { type: 'tool_result', tool_use_id: ids[1] as string, content: [{ type: 'text', text: '{"name":"Bob"}' }] },
          ],
        },
      ],
    });
    expect(second.stop_reason).toBe('end_turn');
    expect(second.content).toEqual([{ type: 'text', text: 'Ada and Bob are both customers.' }]);
    expect(second.usage).toMatchObject({ input_tokens: 123, output_tokens: 45 });
    expect(second.id).not.toBe(first.id);
    expect(server.requests - before).toBe(3);
  });

  it('chooses the turn by the number of assistant messages in the request', async () => {
    const reply = await client.messages.create({
      model: 'scripted/three-turns',
      max_tokens: 100,
      messages: [
        { role: 'user', content: 'one' },
        { role: 'assistant', content: 'whatever the client kept' },
        { role: 'user', content: 'two' },
        { role: 'assistant', content: [{ type: 'text', text: 'edited history' }] },
        { role: 'user', content: 'three' },
      ],
    });
    expect(reply.content).toEqual([{ type: 'text', text: 'turn 3' }]);
  });

  it('fails loudly with a 400 when the agent asks for a turn past the last', async () => {
    const err = await rejection(() =>
      client.messages.create({
        model: 'scripted/refund',
        max_tokens: 100,
        messages: [
          { role: 'user', content: 'a' },
          { role: 'assistant', content: 'b' },
          { role: 'user', content: 'c' },
          { role: 'assistant', content: 'd' },
          { role: 'user', content: 'e' },
        ],
      }),
    );
    expect(err).toBeInstanceOf(Anthropic.BadRequestError);
    const e = err as InstanceType<typeof Anthropic.BadRequestError>;
    expect(e.status).toBe(400);
    expect(e.type).toBe('invalid_request_error');
    expect(e.apiMessage).toContain('scenario "refund" has 2 turns and the request asked for turn 3');
  });

  it('streams the same message over SSE when stream is true', async () => {
    const plain = await client.messages.create({ model: 'scripted/refund', max_tokens: 1024, tools, messages: hello });
    const streamed = await client.messages
      .stream({ model: 'scripted/refund', max_tokens: 1024, tools, messages: hello })
      .finalMessage();
    expect(streamed.id).toBe(plain.id);
    expect(streamed.content).toEqual(plain.content);
    expect(streamed.stop_reason).toBe('tool_use');
    expect(streamed.usage.output_tokens).toBe(plain.usage.output_tokens);
  });
});

describe('scripted faults', () => {
  it('answers 529 twice, then succeeds; the SDK throws OverloadedError each time', async () => {
    const request = { model: 'scripted/overloaded', max_tokens: 100, messages: hello, metadata: { user_id: 'session-529' } };
    for (let attempt = 1; attempt <= 2; attempt++) {
      const err = await rejection(() => client.messages.create(request));
      expect(err).toBeInstanceOf(Anthropic.OverloadedError);
      expect(err).toBeInstanceOf(Anthropic.InternalServerError);
      expect(err).toBeInstanceOf(Anthropic.APIError);
      const e = err as InstanceType<typeof Anthropic.APIError>;
      expect(e.status).toBe(529);
      expect(e.type).toBe('overloaded_error');
      expect(e.requestID).toMatch(/^req_/);
    }
    expect((await client.messages.create(request)).content).toEqual([{ type: 'text', text: 'made it' }]);
    // Later attempts of the same turn keep succeeding.
    expect((await client.messages.create(request)).stop_reason).toBe('end_turn');
  });

  it('answers 429 with retry-after headers readable from RateLimitError, then the next fault in sequence', async () => {
    const request = { model: 'scripted/rate-limited', max_tokens: 100, messages: hello, metadata: { user_id: 'session-429' } };
    const err = await rejection(() => client.messages.create(request));
    expect(err).toBeInstanceOf(Anthropic.RateLimitError);
    const e = err as InstanceType<typeof Anthropic.RateLimitError>;
    expect(e.status).toBe(429);
    expect(e.type).toBe('rate_limit_error');
    expect(e.headers?.get('retry-after')).toBe('2');
    expect(e.headers?.get('retry-after-ms')).toBe('1500');

    const second = await rejection(() => client.messages.create(request));
    expect(second).toBeInstanceOf(Anthropic.InternalServerError);
    expect((second as InstanceType<typeof Anthropic.APIError>).status).toBe(500);
    expect((second as InstanceType<typeof Anthropic.APIError>).type).toBe('api_error');

    expect((await client.messages.create(request)).content).toEqual([{ type: 'text', text: 'ok' }]);
  });

  it('counts attempts separately per metadata.user_id (one count per workflow)', async () => {
    const a = { model: 'scripted/overloaded', max_tokens: 100, messages: hello, metadata: { user_id: 'wf-a' } };
    const b = { ...a, metadata: { user_id: 'wf-b' } };
    await expect(client.messages.create(a)).rejects.toBeInstanceOf(Anthropic.OverloadedError);
    await expect(client.messages.create(b)).rejects.toBeInstanceOf(Anthropic.OverloadedError);
    await expect(client.messages.create(a)).rejects.toBeInstanceOf(Anthropic.OverloadedError);
    await expect(client.messages.create(a)).resolves.toMatchObject({ stop_reason: 'end_turn' });
    await expect(client.messages.create(b)).rejects.toBeInstanceOf(Anthropic.OverloadedError);
    await expect(client.messages.create(b)).resolves.toMatchObject({ stop_reason: 'end_turn' });
  });

  it('without metadata, tells conversations apart by their first user message', async () => {
    const first = { model: 'scripted/overloaded', max_tokens: 100, messages: [{ role: 'user' as const, content: 'conversation one' }] };
    const other = { ...first, messages: [{ role: 'user' as const, content: 'conversation two' }] };
    await expect(client.messages.create(first)).rejects.toBeInstanceOf(Anthropic.OverloadedError);
    await expect(client.messages.create(first)).rejects.toBeInstanceOf(Anthropic.OverloadedError);
    await expect(client.messages.create(other)).rejects.toBeInstanceOf(Anthropic.OverloadedError);
    await expect(client.messages.create(first)).resolves.toMatchObject({ stop_reason: 'end_turn' });
  });

  it('validates before faults: an invalid request gets a 400 and does not use up a faulted attempt', async () => {
    const metadata = { user_id: 'session-validate-first' };
    const bad = await rejection(() =>
      client.messages.create({ model: 'scripted/overloaded', max_tokens: 0, messages: hello, metadata }),
    );
    expect(bad).toBeInstanceOf(Anthropic.BadRequestError);
    expect((bad as InstanceType<typeof Anthropic.APIError>).apiMessage).toBe('max_tokens: Input should be greater than or equal to 1');
    const request = { model: 'scripted/overloaded', max_tokens: 100, messages: hello, metadata };
    await expect(client.messages.create(request)).rejects.toBeInstanceOf(Anthropic.OverloadedError);
    await expect(client.messages.create(request)).rejects.toBeInstanceOf(Anthropic.OverloadedError);
    await expect(client.messages.create(request)).resolves.toMatchObject({ stop_reason: 'end_turn' });
  });
});

describe('request validation like the real API', () => {
  async function badRequest(messages: unknown, model = 'scripted/refund'): Promise<string> {
    const err = await rejection(() => client.messages.create({ model, max_tokens: 100, tools, messages: untyped(messages) }));
    expect(err).toBeInstanceOf(Anthropic.BadRequestError);
    const e = err as InstanceType<typeof Anthropic.BadRequestError>;
    expect(e.type).toBe('invalid_request_error');
    return e.apiMessage ?? '';
  }

  const toolTurn = {
    role: 'assistant',
    content: [{ type: 'tool_use', id: 'toolu_1', name: 'lookup_customer', input: { id: 'c1' } }],
  };

  it('rejects a tool_result whose tool_use_id is not in the previous assistant message', async () => {
    const message = await badRequest([
      { role: 'user', content: 'hi' },
      toolTurn,
      {
        role: 'user',
        content: [
          { type: 'tool_result', tool_use_id: 'toolu_1', content: 'ok' },
          { type: 'tool_result', tool_use_id: 'toolu_bogus', content: 'ok' },
        ],
      },
    ]);
    expect(message).toBe(
      'messages.2.content.1: unexpected tool_use_id found in tool_result blocks: toolu_bogus. ' +
        'Each tool_result block must have a corresponding tool_use block in the previous message.',
    );
  });

  it('rejects a tool_use with no tool_result in the next message', async () => {
    const message = await badRequest([
      { role: 'user', content: 'hi' },
      {
        role: 'assistant',
        content: [
          { type: 'tool_use', id: 'toolu_1', name: 'lookup_customer', input: { id: 'c1' } },
          { type: 'tool_use', id: 'toolu_2', name: 'lookup_customer', input: { id: 'c2' } },
        ],
      },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_2', content: 'ok' }] },
    ]);
    expect(message).toBe(
      'messages.1: tool_use ids were found without tool_result blocks immediately after: toolu_1. ' +
        'Each tool_use block must have a corresponding tool_result block in the next message.',
    );
  });

  it('rejects a role other than user or assistant, and a first message that is not the user', async () => {
    expect(
      await badRequest([
        { role: 'user', content: 'a' },
        { role: 'assistant', content: 'b' },
        { role: 'user', content: 'c' },
        { role: 'system', content: 'd' },
      ]),
    ).toBe("messages.3.role: Input should be 'user' or 'assistant'");
    expect(await badRequest([{ role: 'assistant', content: 'hi' }])).toBe('messages: first message must use the "user" role');
  });

  it('rejects empty messages, malformed blocks and malformed tools', async () => {
    expect(await badRequest([])).toBe('messages: List should have at least 1 item after validation, not 0');
    expect(await badRequest([{ role: 'user', content: '' }])).toContain('messages.0: all messages must have non-empty content');
    expect(await badRequest([{ role: 'user', content: [{ type: 'text' }] }])).toBe('messages.0.content.0.text: Field required');
    expect(await badRequest([{ role: 'user', content: 42 }])).toBe(
      'messages.0.content: Input should be a valid string or list of content blocks',
    );
    const err = await rejection(() =>
      client.messages.create({
        model: 'scripted/refund',
        max_tokens: 100,
        messages: hello,
        tools: [{ name: 'x', input_schema: { type: 'string' } } as unknown as Anthropic.Tool],
      }),
    );
    expect((err as InstanceType<typeof Anthropic.APIError>).apiMessage).toBe("tools.0.input_schema.type: Input should be 'object'");
  });

  it('rejects a body that is not JSON, and a request without an API key, like the real API', async () => {
    const notJson = await fetch(`${server.url}/v1/messages`, {
      method: 'POST',
      headers: { 'x-api-key': 'test', 'content-type': 'application/json' },
      body: '{"model":',
    });
    expect(notJson.status).toBe(400);
    expect(await notJson.json()).toMatchObject({ type: 'error', error: { type: 'invalid_request_error' } });

    const body = JSON.stringify({ model: 'scripted/three-turns', max_tokens: 10, messages: hello });
    const noKey = await fetch(`${server.url}/v1/messages`, { method: 'POST', body });
    expect(noKey.status).toBe(401);
    expect(await noKey.json()).toMatchObject({ type: 'error', error: { type: 'authentication_error' } });

    const withXApiKey = await fetch(`${server.url}/v1/messages`, { method: 'POST', headers: { 'x-api-key': 'k' }, body });
    expect(withXApiKey.status).toBe(200);
    expect(withXApiKey.headers.get('request-id')).toMatch(/^req_/);
  });

  it('answers a body over 32 MB with 413 request_too_large', async () => {
    const err = await rejection(() =>
      client.messages.create({
        model: 'scripted/three-turns',
        max_tokens: 10,
        messages: [{ role: 'user', content: 'x'.repeat(33 * 1024 * 1024) }],
      }),
    );
    expect(err).toBeInstanceOf(Anthropic.APIError);
    expect((err as InstanceType<typeof Anthropic.APIError>).status).toBe(413);
    expect((err as InstanceType<typeof Anthropic.APIError>).type).toBe('request_too_large');
  });
});

describe('expect: checks on the tool results the agent sent', () => {
  async function turnTwo(results: Anthropic.ToolResultBlockParam[]): Promise<string> {
    const first = await client.messages.create({ model: 'scripted/refund', max_tokens: 100, tools, messages: hello });
    const ids = toolUseIds(first);
    const err = await rejection(() =>
      client.messages.create({
        model: 'scripted/refund',
        max_tokens: 100,
        tools,
        messages: [
          ...hello,
          { role: 'assistant', content: first.content },
          { role: 'user', content: results.map((r, i) => ({ ...r, tool_use_id: ids[i] as string })) },
        ],
      }),
    );
    expect(err).toBeInstanceOf(Anthropic.BadRequestError);
    return (err as InstanceType<typeof Anthropic.BadRequestError>).apiMessage ?? '';
  }

  it('names the scenario, turn, index and the difference', async () => {
    const contains = await turnTwo([
      { type: 'tool_result', tool_use_id: '', content: '{"name":"Ada"}' },
      { type: 'tool_result', tool_use_id: '', content: '{"name":"Carol"}' },
    ]);
    expect(contains).toContain('scenario "refund", turn 2 of 2');
    expect(contains).toContain('tool_results[1]');
    expect(contains).toContain('expected the result text to contain "Bob", got "{\\"name\\":\\"Carol\\"}"');

    const isError = await turnTwo([
      { type: 'tool_result', tool_use_id: '', content: 'Ada: not found', is_error: true },
      { type: 'tool_result', tool_use_id: '', content: 'Bob' },
    ]);
    expect(isError).toContain('tool_results[0]');
    expect(isError).toContain('expected is_error false, got true');
  });

  it('requires the same number of tool results', async () => {
    const first = await client.messages.create({ model: 'scripted/refund', max_tokens: 100, tools, messages: hello });
    // An agent loop that dropped the tool calls (kept only the text) and sent no results.
    const err = await rejection(() =>
      client.messages.create({
        model: 'scripted/refund',
        max_tokens: 100,
        tools,
        messages: [
          ...hello,
          { role: 'assistant', content: [first.content[0] as Anthropic.TextBlock] },
          { role: 'user', content: 'I did not call any tool' },
        ],
      }),
    );
    expect((err as InstanceType<typeof Anthropic.APIError>).apiMessage).toContain(
      'expected 2 tool_result block(s) in the last user message, got 0',
    );
  });
});

describe('choices: turns that react to the tool results sent', () => {
  type Results = Array<{ content: string; is_error?: boolean }>;

  /**
   * Plays `scripted/reactive` from the start: after each reply, answers its tool_use blocks with the next
   * entry of `results` (in order) and asks for the next turn. Returns the last reply.
   */
  async function play(results: Results[], userId?: string): Promise<Anthropic.Message> {
    const request = { model: 'scripted/reactive', max_tokens: 100, tools, ...(userId ? { metadata: { user_id: userId } } : {}) };
    const messages: Anthropic.MessageParam[] = [...hello];
    let reply = await client.messages.create({ ...request, messages });
    for (const sent of results) {
      const content = toolUseIds(reply).map((id, i) => ({ type: 'tool_result' as const, tool_use_id: id, ...sent[i] }));
      messages.push({ role: 'assistant', content: reply.content }, { role: 'user', content });
      reply = await client.messages.create({ ...request, messages: [...messages] });
    }
    return reply;
  }

  const rejected = { content: 'issue_refund was rejected by alice: too large. It did not run; do not retry it. Tell the user.', is_error: true };
  const refunded = { content: '{"status":"succeeded"}' };

  it('plays the first choice whose when matches, and the default when none does', async () => {
    const declined = await play([[rejected]]);
    expect(declined.content).toEqual([{ type: 'text', text: 'A person declined the refund.' }]);
    expect(declined.stop_reason).toBe('end_turn');

    const emailing = await play([[refunded]]);
    expect(emailing.content[0]).toEqual({ type: 'text', text: 'Refunded; emailing.' });
    expect(emailing.stop_reason).toBe('tool_use');
    // An error that is not a rejection does not match choice 0 either: the default plays.
    expect((await play([[{ content: 'payments timed out', is_error: true }]])).stop_reason).toBe('tool_use');
  });

  it('gives each branch its own ids, the same on every attempt', async () => {
    const declined = await play([[rejected]]);
    const emailing = await play([[refunded]]);
    expect(declined.id).not.toBe(emailing.id);
    expect((await play([[rejected]])).id).toBe(declined.id);
    expect(toolUseIds(await play([[refunded]]))).toEqual(toolUseIds(emailing));
  });

  it('branches again in a later turn, so branches can have different lengths', async () => {
    // The declined refund ends the conversation at turn 2; the refund that went through goes on to turn 3,
    // which branches on the email's result.
    expect((await play([[rejected]])).stop_reason).toBe('end_turn');
    const emailDeclined = await play([[refunded], [{ content: 'send_email was rejected by bob. It did not run.', is_error: true }]]);
    expect(emailDeclined.content).toEqual([{ type: 'text', text: 'Refunded, but the email was declined.' }]);
  });

  it("applies the chosen choice's expect, faults and usage", async () => {
    const wrong = await rejection(() => play([[refunded], [{ content: '{"status":"bounced"}' }]]));
    expect(wrong).toBeInstanceOf(Anthropic.BadRequestError);
    expect((wrong as InstanceType<typeof Anthropic.BadRequestError>).apiMessage).toBe(
      'scripted expectation failed: scenario "reactive", turn 3 of 3, choice 1: tool_results[0] (send_email, tool_use_id ' +
        `${toolUseIds(await play([[refunded]]))[0]}): ` +
        'expected the result text to contain "queued", got "{\\"status\\":\\"bounced\\"}"',
    );

    const queued: Results[] = [[refunded], [{ content: '{"status":"queued"}' }]];
    const overloadedOnce = await rejection(() => play(queued, 'session-choice-faults'));
    expect(overloadedOnce).toBeInstanceOf(Anthropic.OverloadedError);
    expect((overloadedOnce as InstanceType<typeof Anthropic.APIError>).apiMessage).toContain('scenario "reactive", turn 3 of 3, choice 1, attempt 1');
    const done = await play(queued, 'session-choice-faults');
    expect(done.content).toEqual([{ type: 'text', text: 'Refunded and emailed.' }]);
    expect(done.usage).toMatchObject({ input_tokens: 7, output_tokens: 3 });
  });

  it('answers 400 naming what was sent and why each choice did not match', async () => {
    // A history the script did not write: turn 3 gets a result for issue_refund, not send_email.
    const err = await rejection(() =>
      client.messages.create({
        model: 'scripted/reactive',
        max_tokens: 100,
        tools,
        messages: [
          ...hello,
          { role: 'assistant', content: 'one' },
          { role: 'user', content: 'two' },
          { role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_x', name: 'issue_refund', input: {} }] },
          { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_x', content: 'ok' }] },
        ],
      }),
    );
    expect(err).toBeInstanceOf(Anthropic.BadRequestError);
    expect((err as InstanceType<typeof Anthropic.BadRequestError>).apiMessage).toBe(
      'scripted turn has no matching choice: scenario "reactive", turn 3 of 3: the request sent issue_refund "ok"; ' +
        'choice 0: tool_results[0] (issue_refund, tool_use_id toolu_x): expected a result for "send_email", got one for "issue_refund"; ' +
        'choice 1: tool_results[0] (issue_refund, tool_use_id toolu_x): expected a result for "send_email", got one for "issue_refund"',
    );

    const none = await rejection(() =>
      client.messages.create({
        model: 'scripted/reactive',
        max_tokens: 100,
        messages: [...hello, { role: 'assistant', content: 'one' }, { role: 'user', content: 'two' }, { role: 'assistant', content: 'three' }, { role: 'user', content: 'four' }],
      }),
    );
    expect((none as InstanceType<typeof Anthropic.BadRequestError>).apiMessage).toContain(
      'the request sent no tool results; choice 0: expected 1 tool_result block(s) in the last user message, got 0',
    );
  });
});

describe('models, routes and timing', () => {
  it('answers an unknown scenario and a non-scripted model with 404 naming the known scenarios', async () => {
    const err = await rejection(() => client.messages.create({ model: 'scripted/nope', max_tokens: 10, messages: hello }));
    expect(err).toBeInstanceOf(Anthropic.NotFoundError);
    const e = err as InstanceType<typeof Anthropic.NotFoundError>;
    expect(e.type).toBe('not_found_error');
    expect(e.apiMessage).toBe(
      'model: scripted/nope not found (known scenarios: overloaded, rate-limited, reactive, refund, slow, three-turns)',
    );
    const real = await rejection(() => client.messages.create({ model: 'some-real-model', max_tokens: 10, messages: hello }));
    expect(real).toBeInstanceOf(Anthropic.NotFoundError);
    expect((real as InstanceType<typeof Anthropic.NotFoundError>).apiMessage).toContain('model: some-real-model not found');
  });

  it('serves GET /healthz and answers other routes with a JSON 404', async () => {
    const health = await fetch(`${server.url}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ ok: true });
    const other = await fetch(`${server.url}/v1/complete`, { method: 'POST' });
    expect(other.status).toBe(404);
    expect(await other.json()).toMatchObject({ type: 'error', error: { type: 'not_found_error' } });
  });

  it('delays the response by latency_ms', async () => {
    const started = performance.now();
    const reply = await client.messages.create({ model: 'scripted/slow', max_tokens: 10, messages: hello });
    expect(performance.now() - started).toBeGreaterThanOrEqual(290); // timer granularity
    expect(reply.content).toEqual([{ type: 'text', text: 'finally' }]);
  });

  it('survives a client that disconnects while the response is delayed', async () => {
    const controller = new AbortController();
    const pending = client.messages.create({ model: 'scripted/slow', max_tokens: 10, messages: hello }, { signal: controller.signal });
    setTimeout(() => controller.abort(), 50);
    await expect(pending).rejects.toBeInstanceOf(Anthropic.APIUserAbortError);
    await new Promise((resolve) => setTimeout(resolve, 350)); // past the timer the server had set
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
    await expect(client.messages.create({ model: 'scripted/slow', max_tokens: 10, messages: hello })).resolves.toMatchObject({
      stop_reason: 'end_turn',
    });
  });
});

describe('scenario files', () => {
  let dir: string;

  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'keel-scenarios-'));
  });

  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  const fileScenario = (name: string, text: string): Scenario => ({
    name,
    description: 'from a file',
    turns: [{ content: [{ type: 'text', text }], stop_reason: 'end_turn' }],
  });

  it('loads every *.json file of each directory, later directories winning', () => {
    const a = path.join(dir, 'a');
    const b = path.join(dir, 'b');
    mkdirSync(a);
    mkdirSync(b);
    writeFileSync(path.join(a, 'greet.json'), JSON.stringify(fileScenario('greet', 'from a')));
    writeFileSync(path.join(a, 'notes.txt'), 'not a scenario');
    writeFileSync(path.join(b, 'greet.json'), JSON.stringify(fileScenario('greet', 'from b')));
    writeFileSync(path.join(b, 'other.json'), JSON.stringify(fileScenario('other', 'other')));
    const loaded = loadScenarios([a, b, path.join(dir, 'does-not-exist')]);
    expect([...loaded.keys()].sort()).toEqual(['greet', 'other']);
    expect(loaded.get('greet')?.turns[0]).toMatchObject({ content: [{ type: 'text', text: 'from b' }] });
  });

  it('names the file and the zod issue path of a malformed scenario', () => {
    const bad = path.join(dir, 'bad');
    mkdirSync(bad);
    const file = path.join(bad, 'broken.json');
    writeFileSync(
      file,
      JSON.stringify({
        name: 'broken',
        description: 'typo in the second turn',
        turns: [
          { content: [], stop_reason: 'end_turn' },
          { content: [{ type: 'text', text: 'x' }], stop_reason: 'finished' },
        ],
      }),
    );
    expect(() => loadScenarios([bad])).toThrow(file);
    expect(() => loadScenarios([bad])).toThrow(/turns\.1\.stop_reason/);

    writeFileSync(file, '{ "name": ');
    expect(() => loadScenarios([bad])).toThrow(`scenario file ${file} is not valid JSON`);
  });

  it('picks up a file added while the server runs, and names broken files in the 404', async () => {
    const live = path.join(dir, 'live');
    mkdirSync(live);
    const fileServer = await startScriptedModel({ scenarioDirs: [live] });
    try {
      const c = new Anthropic({ baseURL: fileServer.url, apiKey: 'test', maxRetries: 0 });
      await expect(c.messages.create({ model: 'scripted/late', max_tokens: 10, messages: hello })).rejects.toBeInstanceOf(
        Anthropic.NotFoundError,
      );
      writeFileSync(path.join(live, 'late.json'), JSON.stringify(fileScenario('late', 'I arrived')));
      writeFileSync(path.join(live, 'zz-broken.json'), '{}');
      const reply = await c.messages.create({ model: 'scripted/late', max_tokens: 10, messages: hello });
      expect(reply.content).toEqual([{ type: 'text', text: 'I arrived' }]);

      const err = await rejection(() => c.messages.create({ model: 'scripted/zz-broken', max_tokens: 10, messages: hello }));
      const message = (err as InstanceType<typeof Anthropic.NotFoundError>).apiMessage ?? '';
      expect(message).toContain('known scenarios: late)');
      expect(message).toContain(path.join(live, 'zz-broken.json'));
    } finally {
      await fileServer.close();
    }
  });

  it('reads the repository scenarios/ folder, then each KEEL_SCENARIOS_DIR entry', () => {
    const dirs = scenarioDirs({ KEEL_SCENARIOS_DIR: ['/tmp/one', '', '/tmp/two'].join(path.delimiter) });
    expect(dirs).toHaveLength(3);
    expect(dirs[0]).toBe(path.resolve(import.meta.dirname, '../scenarios'));
    expect(dirs.slice(1)).toEqual(['/tmp/one', '/tmp/two']);
    expect(scenarioDirs({})).toHaveLength(1);
  });

  it('names the JSON path of a malformed branching turn', () => {
    const bad = path.join(dir, 'bad-choices');
    mkdirSync(bad);
    const file = path.join(bad, 'branching.json');
    const answer = { content: [{ type: 'text', text: 'x' }], stop_reason: 'end_turn' };
    const write = (turns: unknown[]) => writeFileSync(file, JSON.stringify({ name: 'branching', description: 'broken choices', turns }));

    write([answer, { choices: [answer, { ...answer, when: { tool_results: [] } }] }]);
    expect(() => loadScenarios([bad])).toThrow(
      'turns.1.choices.0: choice 0 has no "when", so it matches every request and the choices after it could never be played: put the default last',
    );
    write([{ choices: [{ ...answer, when: { tool_result: [{ tool: 'x' }] } }] }]);
    expect(() => loadScenarios([bad])).toThrow(/turns\.0\.choices\.0\.when: Unrecognized key: "tool_result"/);
    write([{ choices: [{ ...answer, when: { tool_results: [{ tool: 'x', status: 'ok' }] } }] }]);
    expect(() => loadScenarios([bad])).toThrow(/turns\.0\.choices\.0\.when\.tool_results\.0: Unrecognized key: "status"/);
    write([{ choices: [{ ...answer, latency: 5 }] }]);
    expect(() => loadScenarios([bad])).toThrow(/turns\.0\.choices\.0: Unrecognized key: "latency"/);
    write([{ choices: [] }]);
    expect(() => loadScenarios([bad])).toThrow(/turns\.0\.choices: Too small/);
    // A turn is either ordinary or branching, not both.
    write([{ ...answer, choices: [answer] }]);
    expect(() => loadScenarios([bad])).toThrow(/turns\.0: Unrecognized keys?: "content", "stop_reason"/);
  });

  it('rejects an invalid in-memory scenario at start', async () => {
    await expect(
      startScriptedModel({ scenarioDirs: [], scenarios: [{ name: 'bad name', description: '', turns: [] }] }),
    ).rejects.toThrow(/in-memory scenario 0 \(bad name\) is invalid: name: .*turns: /);
  });
});
