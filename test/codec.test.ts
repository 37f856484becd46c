/**
 * Payloads encrypted at rest. The codec: round trip, a fresh IV per payload, key rotation, an unknown key
 * named, failures encrypted, and configuration that refuses a key of the wrong length. A session run with
 * encryption on (canaries in its prompt, a tool's input and the model's answer): it works through the
 * client, its raw history read *without* the codec holds none of them (base64 payload data decoded and
 * searched too, with the codec as the positive control; the Web UI summaries are encrypted payloads too),
 * and `keel replay` of the exported history passes with the keys and says which key is missing without.
 * `keel codec-server` as its own process: 401 without or with a wrong token, 200 with it, CORS preflight for
 * the Web UI's origin only. Then a dev server of its own whose Web UI is started with `--ui-codec-endpoint`
 * pointing at that codec server, and Debian's headless chromium: the session page shows the decoded canary
 * and summary, `temporal workflow show` reads them through the codec server with the token and not without,
 * and the server's SQLite files on disk hold none of them.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdir, readFile, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { ApplicationFailure, type Payload } from '@temporalio/common';
import { loadDataConverter } from '@temporalio/common/lib/internal-non-workflow/index.js';
import { decodeFailure, encodeFailure } from '@temporalio/common/lib/internal-non-workflow/codec-helpers.js';
import { historyToJSON } from '@temporalio/common/lib/proto-utils.js';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startDemoServices, type DemoServices } from '../examples/support-desk/services/index.js';
import { AesGcmPayloadCodec, isEncrypted, keelDataConverter, parseCodecKeys, webUiCodecEndpoint, type CodecKeyring } from '../src/codec/index.js';
import { ConfigError, loadConfig } from '../src/config.js';
import { startDevServer, type DevServer } from '../src/devserver/index.js';
import { writeHistoryFile } from '../src/replay.js';
import { createTestEnv, type Scenario, type TestEnv } from '../src/testing/index.js';
import { hasChromium, launchChromium } from './support/browser.js';
import { decryptedText } from './support/decrypt.js';
import { APPROVER, approveUntilDone } from './support/harness.js';
import { EXAMPLE_TOOLS, ROOT } from './support/paths.js';
import { expectUsageError, freePort, runCommand, runKeel, until } from './support/processes.js';

const b64 = (bytes: Buffer) => bytes.toString('base64');
const OLD_KEY = randomBytes(32);
const NEW_KEY = randomBytes(32);
/** Rotated: `k2` encrypts, `k1` (the old key) still decrypts. */
const KEYS = `k2:${b64(NEW_KEY)},k1:${b64(OLD_KEY)}`;
const TOKEN = randomBytes(24).toString('hex');
const SHOT_DIR = path.join(ROOT, '.keel', 'test');

/** Strings that must never be readable in history: in the prompt, a tool's input, the model's answer. */
const CANARY = { prompt: 'canary-prompt-q7f3a9c2', tool: 'canary-tool-51be02d8', answer: 'canary-answer-c0d4e8f1' };
const PROMPT = `Please open a ticket for cust_001: ${CANARY.prompt}\nThey wrote in about a damaged keyboard.`;
const SCENARIO: Scenario = {
  name: 'codec-canary',
  description: 'Opens a ticket whose body carries a canary, then answers with another.',
  turns: [
    {
      content: [{ type: 'tool_use', name: 'create_ticket', input: { customer_id: 'cust_001', subject: 'Damaged keyboard', body: `Customer note: ${CANARY.tool}` } }],
      stop_reason: 'tool_use',
    },
    { content: [{ type: 'text', text: `Ticket opened. ${CANARY.answer}` }], stop_reason: 'end_turn' },
  ],
};
const USER = { id: 'codec-user', roles: ['support'] };

const keyring = (spec = KEYS): CodecKeyring => parseCodecKeys(spec);
const utf8 = (p: Payload) => new TextDecoder().decode(p.data ?? new Uint8Array());

/** Which canaries a text holds. */
function canariesIn(text: string): string[] {
  return Object.values(CANARY).filter((c) => text.includes(c));
}

/**
 * Canaries readable in a raw history: in its proto JSON, or in any string of it decoded from base64 (payload
 * data and metadata are base64 there).
 */
function plaintextCanaries(history: Parameters<typeof historyToJSON>[0]): string[] {
  const json = historyToJSON(history);
  const found = new Set(canariesIn(json));
  const walk = (v: unknown): void => {
    if (typeof v === 'string') canariesIn(Buffer.from(v, 'base64').toString('utf8')).forEach((c) => found.add(c));
    else if (v && typeof v === 'object') Object.values(v).forEach(walk);
  };
  walk(JSON.parse(json));
  return [...found];
}

/** A JSON text followed by each of its quoted strings decoded from base64 (payload data is base64 in JSON). */
function withBase64Decoded(text: string): string {
  return [text, ...[...text.matchAll(/"([A-Za-z0-9+/_-]{8,}={0,2})"/g)].map((m) => Buffer.from(m[1]!, 'base64').toString('utf8'))].join('\n');
}


/** Runs the canary session on `env` to completion; returns its id, answer and (queried) tool call count. */
async function runCanarySession(env: TestEnv): Promise<{ sessionId: string; answer: string; toolCalls: number }> {
  const sessionId = `session-codec-${Date.now()}-${randomBytes(3).toString('hex')}`;
  await env.client.startSession({ sessionId, prompt: PROMPT, user: USER, model: 'scripted/codec-canary' });
  return env.withWorker(async () => {
    const [result] = await Promise.all([env.client.result(sessionId), approveUntilDone(env.client, sessionId, APPROVER)]);
    return { sessionId, answer: result.answer, toolCalls: (await env.client.status(sessionId)).toolCalls };
  });
}

describe('the payload codec', () => {
  const payload = (text: string): Payload => ({ metadata: { encoding: Buffer.from('json/plain') }, data: Buffer.from(JSON.stringify(text)) });

  it('encrypts the whole payload with a fresh IV each time and decrypts it back', async () => {
    const codec = new AesGcmPayloadCodec(keyring());
    const [a, b] = await codec.encode([payload(CANARY.prompt), payload(CANARY.prompt)]);
    for (const p of [a!, b!]) {
      expect(new TextDecoder().decode(p.metadata!.encoding)).toBe('binary/encrypted');
      expect(new TextDecoder().decode(p.metadata!['encryption-key-id'])).toBe('k2');
      expect(Object.keys(p.metadata!)).toEqual(['encoding', 'encryption-key-id']); // json/plain went inside
      expect(Buffer.from(p.data!).toString('latin1')).not.toContain(CANARY.prompt);
    }
    expect(Buffer.from(a!.data!).subarray(0, 12).equals(Buffer.from(b!.data!).subarray(0, 12))).toBe(false);
    const [back] = await codec.decode([a!]);
    expect(new TextDecoder().decode(back!.metadata!.encoding)).toBe('json/plain');
    expect(JSON.parse(utf8(back!))).toBe(CANARY.prompt);
    // Payloads written before encryption was on pass through decoding untouched.
    const plain = payload('old');
    expect((await codec.decode([plain]))[0]).toBe(plain);
  });

  it('rotates: the first key encrypts, an old key still decrypts, and a key no longer configured is named', async () => {
    const before = new AesGcmPayloadCodec(keyring(`k1:${b64(OLD_KEY)}`));
    const [old] = await before.encode([payload('written before the rotation')]);
    const after = new AesGcmPayloadCodec(keyring());
    expect(after.activeKeyId).toBe('k2');
    expect(JSON.parse(utf8((await after.decode([old!]))[0]!))).toBe('written before the rotation');
    const [fresh] = await after.encode([payload('after')]);
    expect(new TextDecoder().decode(fresh!.metadata!['encryption-key-id'])).toBe('k2');

    const dropped = new AesGcmPayloadCodec(keyring(`k2:${b64(NEW_KEY)}`));
    await expect(dropped.decode([old!])).rejects.toThrow(/payload encrypted with key 'k1', which is not configured \(keys here: k2\)/);
    // The right id with the wrong key material: it does not authenticate, and says so.
    const impostor = new AesGcmPayloadCodec(keyring(`k1:${b64(randomBytes(32))}`));
    await expect(impostor.decode([old!])).rejects.toThrow(/key 'k1' does not authenticate/);
  });

  it('encrypts failure messages and stack traces too', async () => {
    const converter = loadDataConverter(keelDataConverter({ codecKeys: keyring() }));
    const failure = converter.failureConverter.errorToFailure(ApplicationFailure.create({ message: `refund refused: ${CANARY.tool}`, type: 'Refused' }), converter.payloadConverter);
    const encoded = await encodeFailure(converter.payloadCodecs, failure);
    expect(encoded.message).toBe('Encoded failure');
    expect(JSON.stringify(encoded)).not.toContain(CANARY.tool);
    expect(Buffer.from(encoded.encodedAttributes!.data!).toString('latin1')).not.toContain(CANARY.tool);
    const decoded = converter.failureConverter.failureToError(await decodeFailure(converter.payloadCodecs, encoded), converter.payloadConverter);
    expect(decoded.message).toBe(`refund refused: ${CANARY.tool}`);
  });
});

describe('codec configuration', () => {
  it.each([
    ['a 16-byte key', { KEEL_CODEC_KEYS: `k1:${b64(OLD_KEY)},k2:${b64(randomBytes(16))}` }, "KEEL_CODEC_KEYS: key 'k2' is 16 bytes; AES-256 needs 32"],
    ['a repeated key id', { KEEL_CODEC_KEYS: `k1:${b64(OLD_KEY)},k1:${b64(NEW_KEY)}` }, "KEEL_CODEC_KEYS: key id 'k1' appears twice"],
    ['a key without an id', { KEEL_CODEC_KEYS: b64(OLD_KEY) }, 'KEEL_CODEC_KEYS: entry 1 is not id:base64key'],
    ['a key that is not base64', { KEEL_CODEC_KEYS: 'k1:not base64!' }, "KEEL_CODEC_KEYS: key 'k1' is not base64"],
    ['keys set twice', { KEEL_CODEC_KEYS: KEYS, KEEL_CODEC_KEYS_FILE: '/nonexistent' }, 'KEEL_CODEC_KEYS_FILE: set KEEL_CODEC_KEYS or KEEL_CODEC_KEYS_FILE, not both'],
    ['a missing keys file', { KEEL_CODEC_KEYS_FILE: '/nonexistent/keys' }, 'KEEL_CODEC_KEYS_FILE: cannot read /nonexistent/keys (ENOENT)'],
    ['a short token', { KEEL_CODEC_KEYS: KEYS, KEEL_CODEC_TOKEN: 'short' }, 'KEEL_CODEC_TOKEN: expected at least 16 characters'],
  ])('refuses %s, naming the variable (and key id) and what was wrong, never the key', (_label, env, message) => {
    let error: unknown;
    try {
      loadConfig(env);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message).toContain(message);
    for (const key of [OLD_KEY, NEW_KEY]) expect((error as Error).message).not.toContain(b64(key));
  });

  it('reads keys from a file (comments allowed); without keys nothing is encrypted', () => {
    expect(loadConfig({}).codecKeys).toBeUndefined();
    expect(keelDataConverter(loadConfig({}))).toBeUndefined();
    expect([...keyring(`# rotated in March\nk2:${b64(NEW_KEY)}\nk1:${b64(OLD_KEY)} # old\n`).byId.keys()]).toEqual(['k2', 'k1']);
  });

  it('keel exits 2 on a key of the wrong length, naming the variable and the key id', async () => {
    const bad = b64(randomBytes(24));
    const r = await runKeel(['codec-server'], { KEEL_CODEC_KEYS: `short:${bad}`, KEEL_CODEC_TOKEN: TOKEN });
    expect(expectUsageError(r)).toBe("keel: KEEL_CODEC_KEYS: key 'short' is 24 bytes; AES-256 needs 32 (make one with: openssl rand -base64 32)");
    expect(r.stderr).not.toContain(bad);
  });

  it('keel codec-server exits 2 without a token, and on an --origin that is not an origin', async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'keel-codec-cli-')); // no token saved by keel dev here
    try {
      const [noToken, badOrigin] = await Promise.all([
        runKeel(['codec-server'], { KEEL_CODEC_KEYS: KEYS, KEEL_CODEC_TOKEN: '', KEEL_DATA_DIR: dataDir }),
        runKeel(['codec-server', '--origin', 'http://localhost:8233/ui'], { KEEL_CODEC_KEYS: KEYS, KEEL_CODEC_TOKEN: TOKEN }),
      ]);
      expect(expectUsageError(noToken)).toMatch(/^keel: KEEL_CODEC_TOKEN: not set .* needs a bearer token/);
      expect(expectUsageError(badOrigin)).toMatch(/^keel: --origin takes a Web UI origin: scheme, host and port, no path/);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

describe('a session with encryption on', () => {
  let demo: DemoServices | undefined;
  let env: TestEnv | undefined;
  let scratch: string | undefined;
  beforeAll(async () => {
    demo = await startDemoServices();
    scratch = await mkdtemp(path.join(os.tmpdir(), 'keel-codec-'));
    env = await createTestEnv({
      tools: EXAMPLE_TOOLS,
      scenarios: [SCENARIO],
      scenarioDirs: [],
      temporalAddress: inject('temporalAddress'),
      // Bundled here, with the codec keys set: the bundle then encrypts failures raised in workflow code.
      env: { KEEL_DEMO_URL: demo.url, KEEL_CODEC_KEYS: KEYS },
    });
  });
  afterAll(async () => {
    await env?.close();
    await demo?.close();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  it('works through the client, and its history holds no plaintext; keel replay needs the keys', { timeout: 60_000 }, async () => {
    const e = env!;
    const { sessionId, answer, toolCalls } = await runCanarySession(e);
    expect(answer).toContain(CANARY.answer);
    expect(toolCalls).toBe(1);

    // The history as Temporal stores it, read by a client without the codec.
    const connection = await Connection.connect({ address: inject('temporalAddress') });
    try {
      const history = await new Client({ connection }).workflow.getHandle(sessionId).fetchHistory();
      expect(plaintextCanaries(history)).toEqual([]);
      // The Web UI summaries (the session's: the prompt's first line; each activity's) are payloads too, encrypted.
      const summaries = (history.events ?? []).flatMap((ev) => (ev.userMetadata?.summary ? [ev.userMetadata.summary] : []));
      expect(summaries.length).toBeGreaterThan(1);
      expect(summaries.every((p) => isEncrypted(p))).toBe(true);
      // The positive control: the canaries are in there, encrypted.
      expect(canariesIn(decryptedText(history, new AesGcmPayloadCodec(keyring())))).toEqual(Object.values(CANARY));

      const file = path.join(scratch!, `${sessionId}.json`);
      await writeHistoryFile(file, history);
      const replayEnv = { KEEL_WORKFLOW_BUNDLE: inject('workflowBundlePath'), KEEL_TOOLS: '', TEMPORAL_ADDRESS: inject('temporalAddress') };
      const ok = await runKeel(['replay', '--file', file, '--json'], { ...replayEnv, KEEL_CODEC_KEYS: KEYS });
      expect(ok.code, ok.stderr).toBe(0);
      expect(JSON.parse(ok.stdout)).toMatchObject({ deterministic: true });
      const without = await runKeel(['replay', '--file', file], { ...replayEnv, KEEL_CODEC_KEYS: '' });
      expect(expectUsageError(without)).toMatch(/^keel: KEEL_CODEC_KEYS: .* holds payloads encrypted with key 'k2', and no codec keys are configured/);
    } finally {
      await connection.close();
    }
  });
});

describe('a failing chain with encryption on', () => {
  it('keeps the failure raised in workflow code encrypted in history, readable through the client', { timeout: 60_000 }, async () => {
    const demo = await startDemoServices();
    const env = await createTestEnv({ tools: EXAMPLE_TOOLS, scenarioDirs: [], temporalAddress: inject('temporalAddress'), env: { KEEL_DEMO_URL: demo.url, KEEL_CODEC_KEYS: KEYS } });
    const connection = await Connection.connect({ address: inject('temporalAddress') });
    try {
      const handle = await env.client.startChain({ user: USER, steps: [{ tool: 'get_order', input: { order_id: 'ord_9999' } }] });
      const err = await env.withWorker(() => handle.result().then(() => undefined, (e: unknown) => e as Error & { cause?: Error }));
      expect(err?.cause?.message).toMatch(/^step 0 \(get_order\) failed: .*404/);
      const history = await new Client({ connection }).workflow.getHandle(handle.workflowId).fetchHistory();
      const failed = history.events!.find((ev) => ev.workflowExecutionFailedEventAttributes)!.workflowExecutionFailedEventAttributes!;
      expect(failed.failure?.message).toBe('Encoded failure');
      expect(historyToJSON(history)).not.toContain('step 0 (get_order) failed');
    } finally {
      await connection.close();
      await env.close();
      await demo.close();
    }
  });
});

/** `keel codec-server` as a user runs it, ready once it printed its address. */
async function spawnCodecServer(args: string[], env: Record<string, string>): Promise<{ child: ChildProcess; output: () => string }> {
  const child = spawn(process.execPath, [path.join(ROOT, 'bin', 'keel.js'), 'codec-server', ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  await until(() => (out.includes('codec server: http') ? true : child.exitCode !== null ? Promise.reject(new Error(out)) : undefined), 'keel codec-server to listen', 20_000);
  return { child, output: () => out };
}

describe('keel codec-server and the Web UI', () => {
  let codecServer: { child: ChildProcess; output: () => string } | undefined;
  let server: DevServer | undefined;
  let env: TestEnv | undefined;
  let demo: DemoServices | undefined;
  let browser: Browser | undefined;
  let tmp: string | undefined;
  let codecUrl = '';
  let uiUrl = '';
  let uiEndpoint = '';

  beforeAll(async () => {
    const [uiPort, codecPort] = [await freePort(), await freePort()];
    uiUrl = `http://127.0.0.1:${uiPort}`;
    codecUrl = `http://127.0.0.1:${codecPort}`;
    uiEndpoint = webUiCodecEndpoint(codecUrl, TOKEN);
    codecServer = await spawnCodecServer(['--port', String(codecPort), '--origin', uiUrl], { KEEL_CODEC_KEYS: KEYS, KEEL_CODEC_TOKEN: TOKEN });
    tmp = await mkdtemp(path.join(os.tmpdir(), 'keel-codec-ui-'));
    server = await startDevServer({ cliPath: inject('temporalCliPath'), dataDir: tmp, port: 0, uiPort, uiCodecEndpoint: uiEndpoint });
    demo = await startDemoServices();
    env = await createTestEnv({
      tools: EXAMPLE_TOOLS,
      scenarios: [SCENARIO],
      scenarioDirs: [],
      temporalAddress: server.address,
      workflowBundle: { codePath: inject('workflowBundlePath') },
      env: { KEEL_DEMO_URL: demo.url, KEEL_CODEC_KEYS: KEYS },
    });
    if (hasChromium) browser = await launchChromium();
  });
  afterAll(async () => {
    await browser?.close();
    await env?.close();
    await demo?.close();
    await server?.stop();
    if (codecServer && codecServer.child.exitCode === null) {
      const exited = new Promise((r) => codecServer!.child.once('exit', r));
      codecServer.child.kill('SIGTERM');
      await exited;
    }
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  const post = (url: string, body: unknown, headers: Record<string, string> = {}) =>
    fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });

  it('wants the bearer token (401 without or with a wrong one), decodes with it, and answers the Web UI origin preflight', async () => {
    const codec = new AesGcmPayloadCodec(keyring());
    const [sealed] = await codec.encode([{ metadata: { encoding: Buffer.from('json/plain') }, data: Buffer.from(JSON.stringify(CANARY.prompt)) }]);
    const body = { payloads: [{ metadata: { encoding: b64(Buffer.from(sealed!.metadata!.encoding!)), 'encryption-key-id': b64(Buffer.from('k2')) }, data: b64(Buffer.from(sealed!.data!)) }] };

    const missing = await post(`${codecUrl}/decode`, body);
    expect(missing.status).toBe(401);
    expect(await missing.json()).toMatchObject({ error: expect.stringMatching(/missing bearer token/) });
    const wrong = await post(`${codecUrl}/decode`, body, { authorization: `Bearer ${TOKEN}x` });
    expect(wrong.status).toBe(401);
    expect(wrong.headers.get('www-authenticate')).toMatch(/^Bearer/);
    expect((await post(`${codecUrl}/web-ui/not-the-key/decode`, body)).status).toBe(401);

    const ok = await post(`${codecUrl}/decode`, body, { authorization: `Bearer ${TOKEN}`, 'x-namespace': 'default' });
    expect(ok.status).toBe(200);
    const [decoded] = ((await ok.json()) as { payloads: Array<{ metadata: Record<string, string>; data: string }> }).payloads;
    expect(Buffer.from(decoded!.metadata.encoding!, 'base64').toString()).toBe('json/plain');
    expect(JSON.parse(Buffer.from(decoded!.data, 'base64').toString())).toBe(CANARY.prompt);
    // The Web UI's endpoint carries its key in the path; encode goes through it too.
    const encoded = await post(`${uiEndpoint}/encode`, { payloads: [{ metadata: { encoding: b64(Buffer.from('json/plain')) }, data: b64(Buffer.from('"x"')) }] });
    expect(encoded.status).toBe(200);
    const [reencrypted] = ((await encoded.json()) as { payloads: Array<{ metadata: Record<string, string> }> }).payloads;
    expect(Buffer.from(reencrypted!.metadata['encryption-key-id']!, 'base64').toString()).toBe('k2');

    expect((await post(`${codecUrl}/decode`, { payloads: 'nope' }, { authorization: `Bearer ${TOKEN}` })).status).toBe(400);
    expect((await fetch(`${codecUrl}/decode`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` }, body: '{' })).status).toBe(400);
    expect((await post(`${codecUrl}/other`, body, { authorization: `Bearer ${TOKEN}` })).status).toBe(404);

    const preflight = (origin: string) =>
      fetch(`${uiEndpoint}/decode`, {
        method: 'OPTIONS',
        headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type,x-namespace' },
      });
    const allowed = await preflight(uiUrl);
    expect(allowed.status).toBe(204);
    expect(allowed.headers.get('access-control-allow-origin')).toBe(uiUrl);
    expect(allowed.headers.get('access-control-allow-headers')).toMatch(/X-Namespace/);
    expect(allowed.headers.get('access-control-allow-headers')).toMatch(/Authorization/);
    expect(allowed.headers.get('access-control-allow-credentials')).toBe('true');
    const other = await preflight('http://evil.example');
    expect(other.status).toBe(403);
    expect(other.headers.get('access-control-allow-origin')).toBeNull();

    // What the server printed names no secret.
    expect(codecServer!.output()).not.toContain(TOKEN);
    expect(codecServer!.output()).not.toContain(uiEndpoint.split('/').pop()!);
  });

  it.skipIf(!hasChromium)('shows the decoded session in the Web UI (Chromium), while history on disk holds none of it', { timeout: 90_000 }, async () => {
    const e = env!;
    const { sessionId } = await runCanarySession(e);
    const context = await browser!.newContext({ viewport: { width: 1600, height: 1200 } });
    const page: Page = await context.newPage();
    try {
      await page.goto(`${uiUrl}/namespaces/default/workflows/${encodeURIComponent(sessionId)}`);
      await page.getByRole('heading', { name: sessionId }).waitFor({ state: 'visible', timeout: 30_000 });
      // The input can only read as text if the Web UI decoded it through the codec server.
      await page.getByText(CANARY.prompt).first().waitFor({ state: 'visible', timeout: 30_000 });
      await page.screenshot({ path: path.join(SHOT_DIR, 'web-ui-codec.png'), fullPage: true });
      // So does the summary, the prompt's first line, under User Metadata.
      await page.getByRole('tab', { name: 'User Metadata' }).click();
      const summary = page.locator('iframe#user-metadata-summary').contentFrame();
      await summary.getByText(PROMPT.split('\n')[0]!, { exact: true }).waitFor({ state: 'visible', timeout: 30_000 });
    } catch (err) {
      await page.screenshot({ path: path.join(SHOT_DIR, 'web-ui-codec-failure.png'), fullPage: true }).catch(() => {});
      throw err;
    } finally {
      await context.close();
    }
    expect(codecServer!.output()).toMatch(/decode \(\d+ payloads?\) → 200 \(web-ui path\)/);

    // The temporal CLI reads it through the same server with the bearer token, and without it sees none of it.
    const show = (...codec: string[]) =>
      runCommand(inject('temporalCliPath'), ['workflow', 'show', '-w', sessionId, '--address', server!.address, '-o', 'json', ...codec], {});
    const decoded = await show('--codec-endpoint', codecUrl, '--codec-auth', `Bearer ${TOKEN}`);
    expect(decoded.code, decoded.stderr).toBe(0);
    expect(canariesIn(withBase64Decoded(decoded.stdout))).toEqual(Object.values(CANARY));
    const raw = await show();
    expect(raw.code, raw.stderr).toBe(0);
    expect(raw.stdout).toContain(sessionId);
    expect(canariesIn(withBase64Decoded(raw.stdout))).toEqual([]);

    // History on disk: the dev server's SQLite files (and their WAL) hold the session, but no canary.
    const files = (await readdir(tmp!)).filter((f) => f.startsWith('temporal.sqlite'));
    const disk = Buffer.concat(await Promise.all(files.map((f) => readFile(path.join(tmp!, f))))).toString('latin1');
    expect(disk).toContain(sessionId);
    expect(canariesIn(disk)).toEqual([]);
  });
});
