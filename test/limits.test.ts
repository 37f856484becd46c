/**
 * Resource limits beside the budgets. A tool's `ctx.fetch` reaches only the hosts the tool declares
 * (`allowedHosts`): anything else, including a redirect to it, is refused before a byte is sent (a second
 * server on another port is the witness that nothing reached it). An agent's blocked actions are refused
 * in the workflow before anything runs: the model reads why, the audit trail records a refused
 * authorization, and the notice board gets no note. Bad definitions fail at registration, naming what is wrong.
 */
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { z } from 'zod';
import { guardedFetch, isAllowed } from '../src/activities/fetch.js';
import { AgentDefinitionError, AppDefinitionError, appFromModule, blockedBy, defineAgent, defineTool, ToolDefinitionError, ToolError } from '../src/workflow.js';
import { openStore } from '../src/store/index.js';
import { approveUntilDone, createTestEnv, type TestEnv } from '../src/testing/index.js';
import { startNotesBoard, type NotesBoard } from './support/notes-board.js';
import { ROOT } from './support/paths.js';

/** A request a test server received. */
interface Seen {
  path: string;
  method: string;
  headers: IncomingMessage['headers'];
  body: string;
}

/** A server on 127.0.0.1 that records every request and answers by route (an echo by default). */
async function startServer(routes: Record<string, (res: ServerResponse) => void> = {}) {
  const seen: Seen[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      const path = req.url ?? '/';
      seen.push({ path, method: req.method ?? '', headers: req.headers, body });
      const route = routes[path];
      if (route) route(res);
      else res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ path, method: req.method, body }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return { port, url: `http://127.0.0.1:${port}`, seen, close: () => new Promise<void>((r) => server.close(() => r())) };
}
type Server = Awaited<ReturnType<typeof startServer>>;

const redirect = (status: number, location: () => string) => (res: ServerResponse) => res.writeHead(status, { location: location() }).end();

let a: Server;
let b: Server;
beforeAll(async () => {
  b = await startServer();
  a = await startServer({
    '/to-b': redirect(302, () => `${b.url}/echo`),
    '/to-b-by-name': redirect(302, () => `http://localhost:${b.port}/echo`),
    '/post-307': redirect(307, () => '/echo'),
    '/post-303': redirect(303, () => '/echo'),
    '/loop': redirect(302, () => '/loop'),
  });
});
afterAll(async () => {
  await a?.close();
  await b?.close();
});

/** `ctx.fetch` as `invoke()` builds it, for a tool allowed `allowedHosts`. */
const fetchFor = (allowedHosts: string[] | undefined, more: { env?: Record<string, string>; signal?: AbortSignal; traceHeaders?: Record<string, string> } = {}) =>
  guardedFetch({ name: 'probe', ...(allowedHosts ? { allowedHosts } : {}) }, { env: more.env ?? {}, signal: more.signal ?? new AbortController().signal, traceHeaders: more.traceHeaders ?? {} });

/** Expects a refusal: a non-retryable ToolError whose message matches, and no request at B. */
async function refused(call: Promise<Response>, message: RegExp) {
  const before = b.seen.length;
  const err = await call.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ToolError);
  expect((err as ToolError).retryable).toBe(false);
  expect((err as ToolError).message).toMatch(message);
  expect(b.seen.length).toBe(before);
}

describe('ctx.fetch and allowedHosts', () => {
  it('reaches an allowed host:port and refuses another port of the same host, naming the host and the allowed hosts', async () => {
    const f = fetchFor([`127.0.0.1:${a.port}`]);
    expect(((await (await f(`${a.url}/echo`)).json()) as { path: string }).path).toBe('/echo');
    await refused(f(`${b.url}/echo`), new RegExp(`^probe may not fetch 127\\.0\\.0\\.1:${b.port}: its allowed hosts are 127\\.0\\.0\\.1:${a.port}\\. The request was not sent\\.$`));
  });

  it('allows any port of a host given without one', async () => {
    const f = fetchFor(['127.0.0.1']);
    expect((await f(`${a.url}/echo`)).ok).toBe(true);
    expect((await f(`${b.url}/echo`)).ok).toBe(true);
  });

  it('matches wildcards on subdomains only, at any depth, and never on look-alikes', async () => {
    const allowed = ['*.example.com'];
    const ok = (u: string) => isAllowed(new URL(u), allowed, {});
    expect(ok('https://api.example.com/x')).toBe(true);
    expect(ok('https://a.b.EXAMPLE.com/x')).toBe(true);
    expect(ok('https://example.com/x')).toBe(false);
    expect(ok('https://evilexample.com/x')).toBe(false);
    expect(ok('https://api.example.com.evil.test/x')).toBe(false);
    expect(isAllowed(new URL('https://api.example.com/'), ['*.example.com:8443'], {})).toBe(false);
    expect(isAllowed(new URL('https://api.example.com:8443/'), ['*.example.com:8443'], {})).toBe(true);
    expect(isAllowed(new URL('https://api.example.com/'), ['api.example.com:443'], {})).toBe(true);
    await refused(fetchFor(allowed)('https://api.example.com.evil.test/steal'), /^probe may not fetch api\.example\.com\.evil\.test: its allowed hosts are \*\.example\.com\./);
  });

  it('refuses schemes other than http and https, even without allowedHosts', async () => {
    for (const url of ['file:///etc/passwd', `ftp://127.0.0.1:${b.port}/`, 'data:text/plain,hello']) {
      await refused(fetchFor(undefined)(url), /^probe may fetch only http and https URLs/);
    }
  });

  it('checks the host fetch would connect to: userinfo, numeric and hex IPs', async () => {
    const f = fetchFor([`127.0.0.1:${a.port}`, 'allowed.example']);
    await refused(f(`http://allowed.example@127.0.0.1:${b.port}/echo`), new RegExp(`may not fetch 127\\.0\\.0\\.1:${b.port}`));
    await refused(f(`http://127.0.0.1:${a.port}@127.0.0.1:${b.port}/echo`), new RegExp(`may not fetch 127\\.0\\.0\\.1:${b.port}`));
    await refused(f(`http://0x7f.1:${b.port}/echo`), new RegExp(`may not fetch 127\\.0\\.0\\.1:${b.port}`));
    await refused(f(`http://[::1]:${b.port}/echo`), /may not fetch \[::1\]/);
    // 2130706433 is 127.0.0.1 written as one number: the same host, so allowed, and it reaches A.
    const before = a.seen.length;
    expect((await f(`http://2130706433:${a.port}/echo`)).ok).toBe(true);
    expect(a.seen.length).toBe(before + 1);
  });

  it('refuses a redirect to a host that is not allowed, before requesting it', async () => {
    const before = a.seen.length;
    await refused(fetchFor([`127.0.0.1:${a.port}`])(`${a.url}/to-b`), new RegExp(`^probe may not fetch 127\\.0\\.0\\.1:${b.port} \\(a redirect from 127\\.0\\.0\\.1:${a.port}\\)`));
    await refused(fetchFor(['127.0.0.1'])(`${a.url}/to-b-by-name`), new RegExp(`may not fetch localhost:${b.port} \\(a redirect from`));
    expect(a.seen.length).toBe(before + 2);
  });

  it("follows an allowed redirect by fetch's rules: credentials stay behind across origins, 303 turns into a GET, 307 keeps the body", async () => {
    const f = fetchFor(['127.0.0.1']);
    const res = await f(`${a.url}/to-b`, { headers: { authorization: 'Bearer s3cret', 'x-own': '1' } });
    expect(res.status).toBe(200);
    const atB = b.seen.at(-1)!;
    expect(atB.path).toBe('/echo');
    expect(atB.headers.authorization).toBeUndefined();
    expect(atB.headers['x-own']).toBe('1');

    expect(await (await f(`${a.url}/post-307`, { method: 'POST', body: '{"n":1}', headers: { 'content-type': 'application/json' } })).json()).toEqual({ path: '/echo', method: 'POST', body: '{"n":1}' });
    expect(await (await f(`${a.url}/post-303`, { method: 'POST', body: '{"n":1}', headers: { 'content-type': 'application/json' } })).json()).toEqual({ path: '/echo', method: 'GET', body: '' });
    expect(a.seen.at(-1)!.headers['content-type']).toBeUndefined();

    await expect(f(`${a.url}/loop`)).rejects.toThrow(/more than 20 redirects/);
  });

  it("gives a caller that asks for redirect: 'manual' the 3xx itself", async () => {
    const res = await fetchFor([`127.0.0.1:${a.port}`])(`${a.url}/to-b`, { redirect: 'manual' });
    expect(res.status).toBe(302);
    expect(res.headers.get('location')).toBe(`${b.url}/echo`);
  });

  it('adds the trace headers (the caller’s own win) and the activity’s abort signal when the caller gives none', async () => {
    const traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const f = fetchFor(undefined, { traceHeaders: { traceparent, 'x-trace-id': 'trace-1' } });
    await f(`${a.url}/echo`, { headers: { 'x-trace-id': 'mine' } });
    expect(a.seen.at(-1)!.headers).toMatchObject({ traceparent, 'x-trace-id': 'mine' });

    const cancelled = new AbortController();
    cancelled.abort();
    const g = fetchFor(undefined, { signal: cancelled.signal });
    await expect(g(`${a.url}/echo`)).rejects.toMatchObject({ name: 'AbortError' });
    expect((await g(`${a.url}/echo`, { signal: new AbortController().signal })).ok).toBe(true);
    await expect(g(new Request(`${a.url}/echo`))).rejects.toMatchObject({ name: 'AbortError' });
  });

  it("reads env: entries when called: the host and port of that variable's URL, nothing when unset", async () => {
    const f = fetchFor(['env:DOWNSTREAM_URL'], { env: { DOWNSTREAM_URL: `${a.url}/api` } });
    expect((await f(`${a.url}/echo`)).ok).toBe(true);
    await refused(f(`${b.url}/echo`), new RegExp(`its allowed hosts are env:DOWNSTREAM_URL \\(127\\.0\\.0\\.1:${a.port}\\)`));
    await refused(fetchFor(['env:DOWNSTREAM_URL'])(`${a.url}/echo`), /its allowed hosts are env:DOWNSTREAM_URL \(not set, or not a URL\)/);
    await refused(fetchFor([])(`${a.url}/echo`), /its allowed hosts are none/);
  });
});

describe('definitions', () => {
  const tool = (allowedHosts: unknown[]) =>
    defineTool({ name: 'probe', description: 'Probe.', input: z.object({}), risk: 'read', allowedHosts: allowedHosts as string[], run: async () => null });

  it('defineTool takes hosts, wildcards, ports, IPv6 and env: entries', () => {
    expect(tool(['api.example.com', '*.example.com:8443', '10.0.0.5:80', '[::1]:8080', 'env:KEEL_DEMO_URL']).allowedHosts).toHaveLength(5);
  });

  it('defineTool names the tool and the bad allowedHosts entry', () => {
    for (const bad of ['http://example.com', 'example.com/path', 'user@example.com', '*.com', '*', 'exa mple.com', 'env:1BAD']) {
      expect(() => tool([bad])).toThrow(ToolDefinitionError);
      expect(() => tool([bad])).toThrow(`tool 'probe': allowedHosts entry '${bad}' is not a host`);
    }
    expect(() => tool(['example.com:99999'])).toThrow("tool 'probe': allowedHosts entry 'example.com:99999' has port 99999: a port is 1 to 65535");
    expect(() => tool([42])).toThrow("tool 'probe': allowedHosts entry 42 is not a string");
  });

  const note = defineTool({ name: 'post_note', description: 'Post.', input: z.object({ text: z.string(), to: z.array(z.string()).optional() }), risk: 'irreversible', run: async () => null });
  const agent = (blocked: unknown) => defineAgent({ name: 'poster', system: 'Post.', blocked: blocked as [] });

  it('defineAgent names the agent and the pattern with a bad regex or flags', () => {
    expect(() => agent([{ tool: 'post_note', when: { text: { matches: '([a-z' } }, reason: 'r' }])).toThrow(AgentDefinitionError);
    expect(() => agent([{ tool: 'post_note', when: { text: { matches: '([a-z' } }, reason: 'r' }])).toThrow(/^agent 'poster': blocked\[0\] \(tool 'post_note'\), field 'text': '\(\[a-z' is not a valid regex/);
    expect(() => agent([{ tool: 'post_note', when: { text: { matches: 'x', flags: 'g' } }, reason: 'r' }])).toThrow(/^agent 'poster': blocked\[0\] \(tool 'post_note'\), field 'text': flags 'g' may use only i, m, s and u/);
    expect(() => agent([{ tool: 'post_note' }])).toThrow(/^agent 'poster': blocked\.0\.reason/);
  });

  it('the app names the agent and the tool (or field) of a pattern that could never match', () => {
    expect(() => appFromModule({ note, poster: agent([{ tool: 'send_email', reason: 'r' }]) })).toThrow(AppDefinitionError);
    expect(() => appFromModule({ note, poster: agent([{ tool: 'send_email', reason: 'r' }]) })).toThrow(
      "agent 'poster' blocks tool 'send_email', which the module does not export (tools: post_note)",
    );
    expect(() => appFromModule({ note, poster: agent([{ tool: 'post_note', when: { txt: 'x' }, reason: 'r' }]) })).toThrow(
      "agent 'poster' blocks 'post_note' when 'txt' matches, but 'post_note' has no input field 'txt' (fields: text, to)",
    );
  });

  it('a pattern blocks when every field it names matches: exact values, unanchored regexes, any item of an array', () => {
    const patterns = agent([
      { tool: 'send_email', when: { to: { matches: '@(?!example\\.com$)' } }, reason: 'email only our own domain' },
      { tool: 'post_note', when: { text: 'drop table', to: { matches: '^all$' } }, reason: 'no shouting' },
    ]).blocked;
    expect(blockedBy(patterns, 'send_email', { to: 'ann@example.com' })).toBeUndefined();
    expect(blockedBy(patterns, 'send_email', { to: 'ann@evil.test' })?.reason).toBe('email only our own domain');
    expect(blockedBy(patterns, 'send_email', { to: 'ann@example.com.evil.test' })).toBeDefined();
    expect(blockedBy(patterns, 'post_note', { text: 'drop table', to: ['ops', 'all'] })?.reason).toBe('no shouting');
    expect(blockedBy(patterns, 'post_note', { text: 'drop table', to: ['ops'] })).toBeUndefined();
    expect(blockedBy(patterns, 'post_note', { text: 'drop tables', to: ['all'] })).toBeUndefined();
    expect(blockedBy(undefined, 'post_note', { text: 'x' })).toBeUndefined();
  });
});

describe('a session whose agent blocks an action', () => {
  const LIMITS_TOOLS = path.join(ROOT, 'test', 'fixtures', 'limits-tools.ts');
  let env: TestEnv;
  let board: NotesBoard;
  beforeAll(async () => {
    board = await startNotesBoard();
    env = await createTestEnv({
      tools: LIMITS_TOOLS,
      temporalAddress: inject('temporalAddress'),
      scenarios: [
        {
          name: 'limits-password',
          description: 'Asks to post a password (blocked), reads why, then posts the harmless part.',
          turns: [
            { content: [{ type: 'tool_use', name: 'post_note', input: { text: 'The wifi Password is hunter2' } }], stop_reason: 'tool_use' },
            {
              content: [{ type: 'tool_use', name: 'post_note', input: { text: 'Ask IT for the wifi details' } }],
              stop_reason: 'tool_use',
              expect: { tool_results: [{ is_error: true, contains: 'post_note is blocked for this agent: never post credentials to the board' }] },
            },
            { content: [{ type: 'text', text: 'I could not post the password; I asked people to see IT.' }], stop_reason: 'end_turn' },
          ],
        },
      ],
      env: { NOTES_URL: board.url, KEEL_DATA_DIR: path.join(ROOT, '.keel', 'test', 'data', `limits-${randomUUID().slice(0, 8)}`) },
    });
  });
  afterAll(async () => {
    await env?.close();
    await board?.close();
  });

  it('refuses the matching call before it runs (the model reads why, the audit trail records it) and lets the next one through', async () => {
    const { sessionId, handle } = await env.client.startSession({ prompt: 'Post the wifi password', user: { id: 'u-limits' }, agent: 'guarded-notes', model: 'scripted/limits-password' });
    const result = await env.withWorker(async () => {
      await approveUntilDone(env.client, sessionId);
      return handle.result();
    });
    expect(result.toolCalls).toMatchObject([
      { name: 'post_note', outcome: 'rejected', error: expect.stringMatching(/^post_note is blocked for this agent: never post credentials to the board\. It did not run/) },
      { name: 'post_note', outcome: 'ok' },
    ]);
    expect(result.answer).toBe('I could not post the password; I asked people to see IT.');
    expect(board.notes.map((n) => n.text)).toEqual(['Ask IT for the wifi details']);

    const store = await openStore(env.config);
    try {
      const authz = (await store.auditTrail(sessionId)).filter((r) => r.kind === 'authorization').map((r) => r.data);
      expect(authz).toMatchObject([
        { tool: 'post_note', allowed: false, reason: 'blocked action: never post credentials to the board' },
        { tool: 'post_note', allowed: true },
      ]);
    } finally {
      await store.close();
    }
  });
});
