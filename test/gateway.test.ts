/**
 * `keel serve`, driven the way an application and an approver would: only over HTTP and in a real
 * Chromium. Three processes, as in production: a `keel worker`, a `keel serve` gateway and this test as
 * the client, sharing Temporal and Keel's data dir (the stream bus). A session is started (twice, with the
 * same client-chosen id: one session), streamed over SSE (text arrives before the session ends, and the
 * text of a model attempt cut off by a 529 is retracted, never shown twice), parks on an approval, the
 * worker is SIGKILLed and replaced, and a person approves (or rejects) in the inbox page; the result comes
 * back through the gateway. Bad requests get the right status and a message naming what was wrong.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser } from 'playwright-core';
import { hasChromium, launchChromium } from './support/browser.js';
import { startHarness, type Harness } from './support/harness.js';
import { ROOT } from './support/paths.js';
import { freePort, killWorkers, runKeel, sigkill, spawnWorker, until } from './support/processes.js';

const TOKENS = {
  ada: 'tok-ada-0123456789abcdef',
  eve: 'tok-eve-0123456789abcdef',
  manager: 'tok-manager-0123456789ab',
  auditor: 'tok-auditor-0123456789ab',
};

let h: Harness;
let gateway: ChildProcess;
let base: string;
let browser: Browser | undefined;
const tmp = mkdtempSync(path.join(os.tmpdir(), 'keel-gateway-'));
const tokenFile = path.join(tmp, 'tokens.json');

/** Starts `keel serve` and resolves with its URL once it listens. */
async function startServe(env: Record<string, string>): Promise<{ child: ChildProcess; url: string }> {
  const port = await freePort();
  const child = spawn(process.execPath, [path.join(ROOT, 'bin', 'keel.js'), 'serve', '--tokens', tokenFile, '--port', String(port), '--json'], {
    env: { ...process.env, ...env, KEEL_LOG_FILE: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /"url":\s*"([^"]+)"/.exec(out);
      if (m) resolve(m[1]!);
    });
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    child.once('exit', (code) => reject(new Error(`keel serve exited (${code}): ${out}`)));
  });
  return { child, url };
}

beforeAll(async () => {
  writeFileSync(
    tokenFile,
    JSON.stringify({
      tokens: [
        { token: TOKENS.ada, user: 'ada', roles: ['support'] },
        { token: TOKENS.eve, user: 'eve', roles: ['support'] },
        // Stored as a digest: the file need not hold the secret.
        { sha256: (await import('node:crypto')).createHash('sha256').update(TOKENS.manager).digest('hex'), user: 'manager-1', roles: ['approver'] },
        { token: TOKENS.auditor, user: 'auditor', roles: ['viewer'] },
      ],
    }),
  );
  h = await startHarness('gateway');
  await spawnWorker(h.env);
  ({ child: gateway, url: base } = await startServe(h.env));
  if (hasChromium) browser = await launchChromium();
}, 120_000);

afterAll(async () => {
  await browser?.close();
  if (gateway) await sigkill(gateway);
  await killWorkers();
  await h?.close();
  rmSync(tmp, { recursive: true, force: true });
});

/** One call to the gateway, as `token`. */
async function call(method: string, route: string, token: string | undefined, body?: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`${base}${route}`, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
    ...(body !== undefined ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- a JSON answer, checked field by field
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, json, headers: res.headers };
}

interface Received {
  event: string;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- an event's JSON, checked field by field
  data: any;
  at: number;
}

/** Reads a session's SSE stream into `events` until it ends. */
async function readStream(sessionId: string, token: string, events: Received[]): Promise<void> {
  const res = await fetch(`${base}/v1/sessions/${sessionId}/stream`, { headers: { authorization: `Bearer ${token}` } });
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
  const decoder = new TextDecoder();
  let buffer = '';
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(chunk, { stream: true });
    let cut: number;
    while ((cut = buffer.indexOf('\n\n')) >= 0) {
      const frame = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const event = /^event: (.*)$/m.exec(frame)?.[1];
      const data = /^data: (.*)$/m.exec(frame)?.[1];
      if (event && data) events.push({ event, data: JSON.parse(data), at: Date.now() });
    }
  }
}

/** The text a client shows for each model turn: deltas, minus retracted attempts. */
function shownText(events: Received[]): Map<number, string> {
  const byAttempt = new Map<string, string>();
  for (const { event, data } of events) {
    const key = `${data.turn}:${data.attempt}`;
    if (event === 'text_delta') byAttempt.set(key, (byAttempt.get(key) ?? '') + data.text);
    if (event === 'retract') byAttempt.delete(key);
  }
  const shown = new Map<number, string>();
  for (const [key, text] of byAttempt) {
    const turn = Number(key.split(':')[0]);
    expect(shown.has(turn), `turn ${turn} shows text of two attempts`).toBe(false);
    shown.set(turn, text);
  }
  return shown;
}

/** Opens the inbox as `token` and decides the request for `tool` in `sessionId`. */
async function decideInInbox(sessionId: string, tool: string, token: string, decision: 'approve' | 'reject', reason: string) {
  const page = await browser!.newPage();
  try {
    await page.goto(`${base}/inbox`);
    await page.fill('#token', token);
    await page.click('#login button[type=submit]');
    const row = page.locator(`#rows tr[data-tool="${tool}"]`, { hasText: sessionId });
    await row.waitFor({ timeout: 30_000 });
    await expect(row.locator('td').nth(1).textContent()).resolves.toBe('irreversible');
    await expect(row.textContent()).resolves.toContain('ada');
    await row.locator('input[name=reason]').fill(reason);
    await row.locator(`button[name=${decision}]`).click();
    await page.locator('#message[data-kind=ok]').waitFor({ timeout: 15_000 });
    // The list updates by itself: the decided request leaves it.
    await row.waitFor({ state: 'detached', timeout: 15_000 });
  } finally {
    await page.close();
  }
}

describe.skipIf(!hasChromium)('keel serve: a session from start to result over HTTP, approved in the inbox', () => {
  it('starts once per client id, streams without duplicates across a 529, survives a worker restart, and is approved in Chromium', async () => {
    const sessionId = `gw-${randomUUID()}`;
    const start = { prompt: 'My keyboard arrived damaged (order ord_1001). Refund me.', model: 'scripted/gateway-stream', sessionId };
    const first = await call('POST', '/v1/sessions', TOKENS.ada, start);
    expect(first.status).toBe(201);
    expect(first.json).toMatchObject({ sessionId, created: true });
    // A retried request (the client did not see the answer): the same session, not a second one.
    const retry = await call('POST', '/v1/sessions', TOKENS.ada, start);
    expect(retry.status).toBe(200);
    expect(retry.json).toMatchObject({ sessionId, created: false });
    // Another user cannot take over the id.
    expect((await call('POST', '/v1/sessions', TOKENS.eve, start)).status).toBe(409);

    const events: Received[] = [];
    const streaming = readStream(sessionId, TOKENS.ada, events);
    await until(() => events.find((e) => e.event === 'approval_requested'), 'the refund to wait for a person', 60_000);

    // The worker dies while the session is parked; another takes over.
    await killWorkers();
    await spawnWorker(h.env);
    await decideInInbox(sessionId, 'issue_refund', TOKENS.manager, 'approve', 'damaged on arrival, photo attached');
    await streaming;

    const final = await call('GET', `/v1/sessions/${sessionId}/result`, TOKENS.ada);
    expect(final.status).toBe(200);
    expect(final.json.state).toBe('completed');
    const answer: string = final.json.result.answer;
    expect(answer).toContain('refunded the full 129.00 USD');

    // The first turn was cut off after two chunks once: that attempt's text was withdrawn.
    const retracts = events.filter((e) => e.event === 'retract');
    expect(retracts.length).toBe(1);
    const cut = retracts[0]!.data;
    expect(events.some((e) => e.event === 'text_delta' && e.data.turn === cut.turn && e.data.attempt === cut.attempt)).toBe(true);
    const shown = shownText(events);
    expect(shown.get(cut.turn)).toBe('The keyboard arrived damaged within the 30-day window, so it qualifies for a full refund. Refunding 129.00 USD now.');
    expect([...shown.values()].at(-1)).toBe(answer);

    // Text arrived while the session ran: the answer's first delta came before Temporal closed the session.
    const closeTime = (await h.client.session(sessionId).describe()).closeTime!.getTime();
    const answerTurn = Math.max(...shown.keys());
    const firstAnswerDelta = events.find((e) => e.event === 'text_delta' && e.data.turn === answerTurn)!;
    expect(firstAnswerDelta.at).toBeLessThan(closeTime);
    const order = events.map((e) => e.event);
    expect(order.indexOf('tool_started')).toBeGreaterThan(order.indexOf('approval_requested'));
    expect(events.find((e) => e.event === 'tool_finished')!.data).toMatchObject({ tool: 'issue_refund', outcome: 'ok' });
    expect(order.at(-1)).toBe('result');

    // The refund ran once, with the approver on record.
    const ledger = await h.demoApi.ledger();
    expect(ledger.refunds.filter((r) => r.idempotency_key?.startsWith(`${sessionId}:`))).toHaveLength(1);
    const status = await call('GET', `/v1/sessions/${sessionId}`, TOKENS.ada);
    expect(status.json.approvals[0]).toMatchObject({ status: 'approved', decidedBy: 'manager-1', decisionReason: 'damaged on arrival, photo attached' });
  }, 180_000);

  it('a rejection in the inbox reaches the model, which answers without the refund', async () => {
    const started = await call('POST', '/v1/sessions', TOKENS.ada, { prompt: 'Refund 5 USD on ord_1002.', model: 'scripted/gateway-reject' });
    expect(started.status).toBe(201);
    const sessionId: string = started.json.sessionId;
    expect(sessionId).toMatch(/^session-/);
    await decideInInbox(sessionId, 'issue_refund', TOKENS.manager, 'reject', 'not covered by policy');
    const final = await until(async () => {
      const r = await call('GET', `/v1/sessions/${sessionId}/result?wait=10`, TOKENS.ada);
      return r.status === 200 ? r : undefined;
    }, 'the session to end', 60_000);
    expect(final.json).toMatchObject({ state: 'completed', result: { answer: expect.stringContaining('declined the refund') } });
    const ledger = await h.demoApi.ledger();
    expect(ledger.refunds.filter((r) => r.idempotency_key?.startsWith(`${sessionId}:`))).toHaveLength(0);
  }, 120_000);
});

describe('keel serve: bad requests get the right status and say what was wrong', () => {
  it('authentication and roles', async () => {
    const none = await call('GET', '/v1/approvals', undefined);
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toBe('Bearer');
    expect(none.json.error.message).toMatch(/missing Authorization/);
    expect((await call('GET', '/v1/approvals', 'tok-not-a-real-token-000')).json.error.message).toMatch(/unknown or revoked token/);
    expect((await call('GET', '/v1/approvals', TOKENS.ada, undefined, { authorization: 'Basic abc' })).status).toBe(401);
    // The stored digest authenticates the manager.
    expect((await call('GET', '/v1/approvals', TOKENS.manager)).status).toBe(200);
    const viewer = await call('GET', '/v1/approvals', TOKENS.auditor);
    expect(viewer.status).toBe(403);
    expect(viewer.json.error.message).toMatch(/needs one of the roles approver, admin; auditor has viewer/);
  });

  it('bodies, routes and sessions', async () => {
    const malformed = await call('POST', '/v1/sessions', TOKENS.ada, '{"prompt": ');
    expect(malformed).toMatchObject({ status: 400, json: { error: { type: 'invalid_json' } } });
    const missing = await call('POST', '/v1/sessions', TOKENS.ada, { model: 'scripted/gateway-reject' });
    expect(missing.status).toBe(400);
    expect(missing.json.error.message).toMatch(/^prompt: /);
    // The user comes from the token, never from the body.
    const impersonating = await call('POST', '/v1/sessions', TOKENS.ada, { prompt: 'hi', user: { id: 'manager-1', roles: ['approver'] } });
    expect(impersonating.status).toBe(400);
    expect(impersonating.json.error.message).toMatch(/user/);
    expect((await call('POST', '/v1/sessions', TOKENS.ada, { prompt: 'hi', sessionId: '../etc' })).json.error.message).toMatch(/^sessionId: /);
    const plain = await call('POST', '/v1/sessions', TOKENS.ada, undefined, { 'content-type': 'text/plain' });
    expect(plain.status).toBe(415);
    const huge = await call('POST', '/v1/sessions', TOKENS.ada, { prompt: 'x'.repeat(1_100_000) });
    expect(huge.status).toBe(413);
    expect((await call('GET', '/v1/sessions/no-such-session', TOKENS.ada)).status).toBe(404);
    expect((await call('POST', '/v1/sessions/no-such-session/approvals/r1', TOKENS.manager, { decision: 'approve' })).status).toBe(404);
    expect((await call('GET', '/v1/nothing', TOKENS.ada)).status).toBe(404);
    const wrongMethod = await call('DELETE', '/v1/sessions', TOKENS.ada);
    expect(wrongMethod.status).toBe(405);
    expect(wrongMethod.headers.get('allow')).toBe('POST');
    expect((await call('GET', '/v1/sessions/x/result?wait=999', TOKENS.ada)).status).toBe(400);
  });

  it("another user's session is not found; a decision needs the approver's role", async () => {
    const started = await call('POST', '/v1/sessions', TOKENS.ada, { prompt: 'Refund 5 USD on ord_1002.', model: 'scripted/gateway-reject' });
    const sessionId: string = started.json.sessionId;
    for (const route of [`/v1/sessions/${sessionId}`, `/v1/sessions/${sessionId}/result`, `/v1/sessions/${sessionId}/stream`]) {
      expect((await call('GET', route, TOKENS.eve)).status, route).toBe(404);
    }
    expect((await call('POST', `/v1/sessions/${sessionId}/cancel`, TOKENS.eve)).status).toBe(404);
    const requestId = await until(async () => (await call('GET', `/v1/sessions/${sessionId}`, TOKENS.ada)).json.approvals?.[0]?.requestId as string | undefined, 'the approval request');
    // Ada asked for the refund and has no approver role: the session's policy refuses, and nothing changes.
    const self = await call('POST', `/v1/sessions/${sessionId}/approvals/${requestId}`, TOKENS.ada, { decision: 'approve' });
    expect(self.status).toBe(403);
    expect(self.json.error.type).toBe('not_allowed');
    const badDecision = await call('POST', `/v1/sessions/${sessionId}/approvals/${requestId}`, TOKENS.manager, { decision: 'maybe' });
    expect(badDecision.status).toBe(400);
    expect(badDecision.json.error.message).toMatch(/^decision: /);
    expect((await call('POST', `/v1/sessions/${sessionId}/approvals/nope`, TOKENS.manager, { decision: 'approve' })).status).toBe(404);
    // The owner cancels; a second cancel is a conflict.
    expect((await call('POST', `/v1/sessions/${sessionId}/cancel`, TOKENS.ada)).status).toBe(202);
    const ended = await until(async () => {
      const r = await call('GET', `/v1/sessions/${sessionId}/result?wait=5`, TOKENS.ada);
      return r.status === 200 ? r : undefined;
    }, 'the cancelled session to end');
    expect(ended.json.state).toBe('cancelled');
    expect((await call('POST', `/v1/sessions/${sessionId}/cancel`, TOKENS.ada)).status).toBe(409);
  }, 60_000);

  it('a conversation: follow-up messages over HTTP, then the end', async () => {
    const started = await call('POST', '/v1/sessions', TOKENS.ada, { prompt: 'What does order ord_1001 total?', model: 'scripted/follow-up', idleTimeout: '1m' });
    const sessionId: string = started.json.sessionId;
    await until(async () => ((await call('GET', `/v1/sessions/${sessionId}`, TOKENS.ada)).json.awaitingMessage === true ? true : undefined), 'the first answer');
    const next = await call('POST', `/v1/sessions/${sessionId}/messages`, TOKENS.ada, { text: 'What was in it?' });
    expect(next.status).toBe(200);
    expect(next.json).toMatchObject({ turn: 2, answer: 'It was one mechanical keyboard.' });
    expect((await call('POST', `/v1/sessions/${sessionId}/messages`, TOKENS.ada, { text: '' })).status).toBe(400);
    expect((await call('POST', `/v1/sessions/${sessionId}/end`, TOKENS.ada)).status).toBe(202);
    const ended = await until(async () => {
      const r = await call('GET', `/v1/sessions/${sessionId}/result?wait=5`, TOKENS.ada);
      return r.status === 200 ? r : undefined;
    }, 'the conversation to end');
    expect(ended.json).toMatchObject({ state: 'completed', result: { turns: 2 } });
    const late = await call('POST', `/v1/sessions/${sessionId}/messages`, TOKENS.ada, { text: 'One more thing' });
    expect(late.status).toBe(409);
    expect(late.json.error.message).toMatch(/ended/);
  }, 60_000);

  it('serves its OpenAPI document, generated from the schemas it validates with', async () => {
    const doc = await call('GET', '/openapi.json', undefined);
    expect(doc.status).toBe(200);
    const start = doc.json.paths['/v1/sessions'].post.requestBody.content['application/json'].schema;
    expect(start.required).toEqual(['prompt']);
    expect(Object.keys(start.properties)).not.toContain('user');
    expect(doc.json.paths['/v1/sessions/{sessionId}/approvals/{requestId}'].post.requestBody.content['application/json'].schema.properties.decision.enum).toEqual(['approve', 'reject']);
  });

  it('keel serve refuses to start without a valid token file', async () => {
    const missing = await runKeel(['serve'], h.env);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/needs --tokens <file>/);
    const bad = path.join(tmp, 'bad-tokens.json');
    writeFileSync(bad, JSON.stringify({ tokens: [{ token: 'short', user: 'x' }] }));
    const invalid = await runKeel(['serve', '--tokens', bad], h.env);
    expect(invalid.code).toBe(2);
    expect(invalid.stderr).toMatch(/tokens\.0\.token: a token must be at least 16 characters/);
  });
});
